/* config.c - config_load() and config_free() of config.h: the file, the
 * top level and its sections. Sections are read in dependency order
 * (server, tls, pools, listeners, alerts) whatever their order in the file,
 * so references resolve as they are read. The parts are listed in
 * config_int.h.
 */
#include "config/config_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CFG_FILE_MAX (4 << 20)

/* The top-level keys, in the order they are read. */
static const struct section {
	const char *key;
	bool required;
	int (*parse)(struct ctx *c, yaml_node_t *n, yaml_node_t *root); /* n NULL: absent */
	void (*free)(struct config *cfg);
} sections[] = {
	{ "server", false, cfg_server_parse, cfg_server_free },
	{ "tls", false, cfg_tls_parse, cfg_tls_free },
	{ "pools", true, cfg_pools_parse, cfg_pools_free },
	{ "listeners", true, cfg_listeners_parse, cfg_listeners_free },
	{ "alerts", false, cfg_alerts_parse, cfg_alerts_free },
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

static int load_doc(struct ctx *c, yaml_node_t *root)
{
	yaml_node_t *nodes[NSECTIONS] = { 0 };

	if (is_empty(root))
		return cfg_fail(c, root, "no configuration");
	if (cfg_read_map(c, root, "configuration", "the top level", top_pair, nodes, NULL) < 0)
		return -1;
	for (size_t i = 0; i < NSECTIONS; i++) {
		if (!nodes[i] && sections[i].required)
			return cfg_fail(c, root, "missing required key \"%s\"", sections[i].key);
		if (sections[i].parse(c, nodes[i], root) < 0)
			return -1;
	}
	return 0;
}

struct config *config_load_buffer(const char *name, const char *text, size_t len, char *err,
				  size_t errlen)
{
	struct ctx c = { .file = name, .err = err, .errlen = errlen };
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
	free(cfg);
}
