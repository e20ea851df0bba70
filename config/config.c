/* config.c - config_load() and config_free() of config.h: the file, the
 * top level and its sections. Sections are read in dependency order
 * (server, tls, pools, listeners, alerts) whatever their order in the file,
 * so references resolve as they are read. The parts are listed in
 * config_int.h.
 */
#include "config/config_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CFG_FILE_MAX (4 << 20)

enum { SEC_SERVER, SEC_TLS, SEC_POOLS, SEC_LISTENERS, SEC_ALERTS };

/* The top-level keys, in the order they are read. A section that names
 * another's objects (needs) is not read when that one failed in a way that
 * leaves names unknown: its references would be errors that only follow
 * from the first. */
static const struct section {
	const char *key;
	bool required;
	unsigned needs;							/* 1 << SEC_* */
	int (*parse)(struct ctx *c, yaml_node_t *n, yaml_node_t *root); /* n NULL: absent */
	void (*free)(struct config *cfg);
} sections[] = {
	[SEC_SERVER] = { "server", false, 0, cfg_server_parse, cfg_server_free },
	[SEC_TLS] = { "tls", false, 0, cfg_tls_parse, cfg_tls_free },
	[SEC_POOLS] = { "pools", true, 1u << SEC_TLS, cfg_pools_parse, cfg_pools_free },
	[SEC_LISTENERS] = { "listeners", true, 1u << SEC_TLS | 1u << SEC_POOLS, cfg_listeners_parse,
			    cfg_listeners_free },
	[SEC_ALERTS] = { "alerts", false, 0, cfg_alerts_parse, cfg_alerts_free },
};

#define NSECTIONS (sizeof(sections) / sizeof(sections[0]))

/* arg: the nodes of the sections, in the order of sections[]. */
static int top_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	yaml_node_t **nodes = arg;

	(void)c;
	(void)k;
	for (size_t i = 0; i < NSECTIONS; i++) {
		if (!strcmp(key, sections[i].key)) {
			nodes[i] = v;
			return 0;
		}
	}
	return 1;
}

/* An empty document, or one that is only a null. */
static bool is_empty(const yaml_node_t *root)
{
	return !root || (root->type == YAML_SCALAR_NODE &&
			 root->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
			 (!strcmp(cfg_scalar(root), "") || !strcmp(cfg_scalar(root), "~") ||
			  !strcasecmp(cfg_scalar(root), "null")));
}

static size_t node_items(const yaml_node_t *n)
{
	if (n->type == YAML_SEQUENCE_NODE)
		return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (n->type == YAML_MAPPING_NODE)
		return (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
	return 0;
}

/* After section i failed at node n: whether every object it has was read
 * as far as its name (the sections stop at the first bad object), so that
 * what refers to them by name can still be checked. */
static bool names_complete(const struct config *cfg, size_t i, const yaml_node_t *n)
{
	if (i == SEC_TLS) {
		if (n->type != YAML_MAPPING_NODE || cfg->ntls != node_items(n))
			return false;
		for (size_t j = 0; j < cfg->ntls; j++)
			if (!cfg->tls[j].name)
				return false;
		return true;
	}
	if (i == SEC_POOLS) {
		if (n->type != YAML_SEQUENCE_NODE || cfg->npools != node_items(n))
			return false;
		for (size_t j = 0; j < cfg->npools; j++)
			if (!cfg->pools[j].name)
				return false;
		return true;
	}
	return true;
}

/* ---- warnings: valid, but most likely not what was meant ---- */

/* Whether a (an IP address) is one of this host's: loopback, or on an
 * interface. */
static bool addr_is_ours(const struct cfg_addr *a, struct ifaddrs *ifs)
{
	if (config_addr_is_local(a))
		return true;
	for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
		if (!i->ifa_addr || i->ifa_addr->sa_family != a->ss.ss_family)
			continue;
		if (a->ss.ss_family == AF_INET &&
		    ((const struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr ==
			    ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr)
			return true;
		if (a->ss.ss_family == AF_INET6 &&
		    IN6_ARE_ADDR_EQUAL(&((const struct sockaddr_in6 *)i->ifa_addr)->sin6_addr,
				       &((const struct sockaddr_in6 *)&a->ss)->sin6_addr))
			return true;
	}
	return false;
}

bool config_addr_wildcard(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
	return ss->ss_family == AF_INET6 &&
	       IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

/* A connect to backend address b reaches listener address l: the same
 * port, and the same address, or l the wildcard and b one of ours. */
static bool reaches(const struct cfg_addr *b, const struct cfg_addr *l, struct ifaddrs *ifs)
{
	if (!config_addr_overlap(b, l) || config_addr_wildcard(&b->ss))
		return false;
	return !config_addr_wildcard(&l->ss) || addr_is_ours(b, ifs);
}

static void warn_loops(struct ctx *c, FILE *w, const struct cfg_pool *p)
{
	const struct config *cfg = c->cfg;
	struct ifaddrs *ifs = NULL;

	if (getifaddrs(&ifs) < 0)
		ifs = NULL;
	for (size_t j = 0; j < p->nbackends; j++) {
		const struct cfg_backend *b = &p->backends[j];

		for (size_t i = 0; i < cfg->nlisteners; i++) {
			const struct cfg_listener *l = &cfg->listeners[i];
			size_t k = 0;

			while (k < l->nlisten && !reaches(&b->address, &l->listen[k], ifs))
				k++;
			if (k == l->nlisten)
				continue;
			fprintf(w,
				"%s:%u:%u: warning: backend \"%s\" of pool \"%s\": %s is mxlb's "
				"own listener \"%s\" (%s at %s:%u:%u): its sessions would loop "
				"back into mxlb\n",
				c->file, b->address.line, b->address.column, b->name, p->name,
				b->address.text, l->name, l->listen[k].text, c->file,
				l->listen[k].line, l->listen[k].column);
			break;
		}
	}
	if (ifs)
		freeifaddrs(ifs);
}

/* cfg->warnings, for a configuration that loaded; pools is its node. */
static int find_warnings(struct ctx *c, yaml_node_t *pools)
{
	struct config *cfg = c->cfg;
	size_t size = 0;
	FILE *w = open_memstream(&cfg->warnings, &size);

	if (!w) {
		cfg_fail(c, pools, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < cfg->npools; i++) {
		const struct cfg_pool *p = &cfg->pools[i];
		const yaml_node_t *n = cfg_item(c, pools, i);
		size_t j = 0;

		while (j < p->nbackends && !p->backends[j].weight)
			j++;
		if (j == p->nbackends)
			fprintf(w,
				"%s:%zu:%zu: warning: pool \"%s\": every backend has weight 0, so "
				"it takes no session (its clients get 421) until an admin sets a "
				"weight\n",
				c->file, n->start_mark.line + 1, n->start_mark.column + 1, p->name);
		warn_loops(c, w, p);
	}
	if (fclose(w) != 0 || !cfg->warnings) {
		cfg_fail(c, pools, "out of memory");
		return -1;
	}
	return 0;
}

/* Every section that can be read is, past errors in others; the result is
 * -1 when any had one. */
static int load_doc(struct ctx *c, yaml_node_t *root)
{
	yaml_node_t *nodes[NSECTIONS] = { 0 };
	unsigned broken = 0;
	int ret;

	if (is_empty(root))
		return cfg_fail(c, root, "no configuration");
	if (cfg_want(c, root, YAML_MAPPING_NODE, "configuration") < 0)
		return -1;
	ret = cfg_each_pair(c, root, "the top level", top_pair, nodes);
	for (size_t i = 0; i < NSECTIONS && !c->stopped; i++) {
		if (!nodes[i] && sections[i].required) {
			ret = cfg_fail(c, root, "missing required key \"%s\"", sections[i].key);
			broken |= 1u << i;
			continue;
		}
		if (sections[i].needs & broken)
			continue;
		if (sections[i].parse(c, nodes[i], root) < 0) {
			ret = -1;
			if (!nodes[i] || !names_complete(c->cfg, i, nodes[i]))
				broken |= 1u << i;
		}
		/* a server section that failed still gives the later ones the
		 * host name they default to */
		if (i == SEC_SERVER && !c->cfg->server.hostname &&
		    !(c->cfg->server.hostname = strdup("localhost")))
			return cfg_fail(c, root, "out of memory");
	}
	if (ret < 0 || c->stopped)
		return -1;
	return find_warnings(c, nodes[SEC_POOLS]);
}

struct config *config_load_buffer(const char *name, const char *text, size_t len, char *err,
				  size_t errlen)
{
	struct ctx c = { .file = name, .text = text, .len = len, .err = err, .errlen = errlen };
	int r;

	c.cfg = calloc(1, sizeof(*c.cfg));
	if (!c.cfg || !(c.cfg->path = strdup(name))) {
		snprintf(err, errlen, "%s: out of memory", name);
		config_free(c.cfg);
		return NULL;
	}
	if (cfg_doc_load(&c, text, len) < 0) {
		config_free(c.cfg);
		return NULL;
	}
	r = load_doc(&c, yaml_document_get_root_node(&c.doc));
	cfg_doc_free(&c);
	if (r < 0) {
		config_free(c.cfg);
		return NULL;
	}
	return c.cfg;
}

/* Read to the end rather than trusting st_size, so pipes work too
 * (mxlb -c <(...)). */
struct config *config_load(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	struct config *cfg = NULL;
	char *text;
	size_t n;

	if (!f) {
		snprintf(err, errlen, "%s:1:1: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	text = malloc(CFG_FILE_MAX + 1);
	if (!text) {
		snprintf(err, errlen, "%s: out of memory", path);
		fclose(f);
		return NULL;
	}
	n = fread(text, 1, CFG_FILE_MAX + 1, f);
	if (ferror(f))
		snprintf(err, errlen, "%s:1:1: cannot read: %s", path, strerror(errno));
	else if (n > CFG_FILE_MAX)
		snprintf(err, errlen, "%s:1:1: larger than %d bytes", path, CFG_FILE_MAX);
	else
		cfg = config_load_buffer(path, text, n, err, errlen);
	fclose(f);
	free(text);
	return cfg;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < NSECTIONS; i++)
		sections[i].free(cfg);
	free(cfg->path);
	free(cfg->warnings);
	free(cfg);
}
