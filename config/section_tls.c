/* section_tls.c - the tls section: named TLS contexts, their certificates
 * and the settings for clients and backends; found by name from listeners
 * and backends (cfg_tls_ref()).
 */
#include "config/config_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The files are only opened here; reading certificates and keys is the
 * TLS layer's work. O_NONBLOCK: a FIFO named by mistake must not hang. */
static int check_file(struct ctx *c, yaml_node_t *n, const char *what, const char *path)
{
	struct stat st;
	int fd;

	if (stat(path, &st) < 0)
		return cfg_fail(c, n, "%s: cannot read %s: %s", what, path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return cfg_fail(c, n, "%s: %s is not a regular file", what, path);
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return cfg_fail(c, n, "%s: cannot read %s: %s", what, path, strerror(errno));
	close(fd);
	return 0;
}

static int get_file(struct ctx *c, yaml_node_t *n, const char *what, char **out)
{
	if (cfg_get_str(c, n, what, out) < 0)
		return -1;
	return check_file(c, n, what, *out);
}

static int cert_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_tls_cert *tc = arg;

	(void)k;
	if (!strcmp(key, "cert"))
		return get_file(c, v, "certificates[].cert", &tc->cert);
	if (!strcmp(key, "key"))
		return get_file(c, v, "certificates[].key", &tc->key);
	return 1;
}

static int parse_certs(struct ctx *c, struct cfg_tls *t, yaml_node_t *seq)
{
	static const char *const required[] = { "cert", "key", NULL };
	size_t n;

	if (cfg_list(c, seq, "certificates", &n) < 0 ||
	    !(t->certs = cfg_calloc(c, seq, n, sizeof(*t->certs))))
		return -1;
	for (size_t i = 0; i < n; i++) {
		t->ncerts++;
		if (cfg_read_map(c, cfg_item(c, seq, i), "certificates[]", "certificates[]",
				 cert_pair, &t->certs[i], required) < 0)
			return -1;
	}
	return 0;
}

static int tls_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_tls *t = arg;
	static const char *const versions[] = { "1.2", "1.3", NULL };
	int i;

	(void)k;
	if (!strcmp(key, "certificates"))
		return parse_certs(c, t, v);
	if (!strcmp(key, "min_version")) {
		if (cfg_get_enum(c, v, "min_version", versions, &i) < 0)
			return -1;
		t->min_version = i ? 0x0304 : 0x0303;
		return 0;
	}
	if (!strcmp(key, "ciphers"))
		return cfg_get_str(c, v, "ciphers", &t->ciphers);
	if (!strcmp(key, "session_tickets"))
		return cfg_get_bool(c, v, "session_tickets", &t->session_tickets);
	if (!strcmp(key, "ca"))
		return get_file(c, v, "ca", &t->ca);
	if (!strcmp(key, "verify"))
		return cfg_get_bool(c, v, "verify", &t->verify);
	if (!strcmp(key, "server_name"))
		return cfg_get_str(c, v, "server_name", &t->server_name);
	return 1;
}

/* The context named by key k, t being cfg->tls[i]: names are unique. */
static int parse_context(struct ctx *c, struct cfg_tls *t, size_t i, yaml_node_t *k, yaml_node_t *v)
{
	if (cfg_get_name(c, k, "tls context name", &t->name) < 0)
		return -1;
	for (size_t j = 0; j < i; j++)
		if (c->cfg->tls[j].name && !strcmp(c->cfg->tls[j].name, t->name))
			return cfg_fail(c, k, "duplicate tls context \"%s\"", t->name);
	t->min_version = 0x0303;
	t->session_tickets = true;
	t->verify = true;
	t->ciphers = strdup("");
	t->server_name = strdup("");
	t->line = (int)k->start_mark.line + 1;
	t->column = (int)k->start_mark.column + 1;
	if (!t->ciphers || !t->server_name)
		return cfg_fail(c, k, "out of memory");
	return cfg_read_map(c, v, "tls context", "tls context", tls_pair, t, NULL);
}

int cfg_tls_parse(struct ctx *c, yaml_node_t *map, yaml_node_t *root)
{
	struct config *cfg = c->cfg;
	size_t n;
	int r = 0;

	(void)root;
	if (!map)
		return 0;
	if (cfg_want(c, map, YAML_MAPPING_NODE, "tls") < 0)
		return -1;
	n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
	if (!(cfg->tls = cfg_calloc(c, map, n, sizeof(*cfg->tls))))
		return -1;
	for (size_t i = 0; i < n && !c->stopped; i++) {
		yaml_node_pair_t *p = &map->data.mapping.pairs.start[i];

		cfg->ntls++;
		if (parse_context(c, &cfg->tls[i], i, cfg_node(c, p->key), cfg_node(c, p->value)) <
		    0)
			r = -1; /* the other contexts are read for their errors too */
	}
	return r;
}

int cfg_tls_ref(struct ctx *c, yaml_node_t *v, const char *what, struct cfg_tls **out)
{
	if (cfg_want(c, v, YAML_SCALAR_NODE, what) < 0)
		return -1;
	for (size_t i = 0; i < c->cfg->ntls; i++) {
		if (c->cfg->tls[i].name && !strcmp(c->cfg->tls[i].name, cfg_scalar(v))) {
			*out = &c->cfg->tls[i];
			return 0;
		}
	}
	*out = NULL;
	return cfg_fail(c, v, "%s: no tls context named \"%s\"", what, cfg_scalar(v));
}

void cfg_tls_free(struct config *cfg)
{
	for (size_t i = 0; i < cfg->ntls; i++) {
		struct cfg_tls *t = &cfg->tls[i];

		for (size_t j = 0; j < t->ncerts; j++) {
			free(t->certs[j].cert);
			free(t->certs[j].key);
		}
		free(t->certs);
		free(t->name);
		free(t->ciphers);
		free(t->ca);
		free(t->server_name);
	}
	free(cfg->tls);
}
