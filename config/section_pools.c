/* section_pools.c - the pools section: balance, retries, handoff, health
 * checks and the backends; found by name from listeners and routes
 * (cfg_pool_ref()).
 */
#include "config/config_int.h"

#include <stdlib.h>
#include <string.h>

static const char *const balances[] = {
	"roundrobin", "leastconn", "source", "ehlo", "random", NULL
};
static const char *const checks[] = { "smtp", "tcp", "none", NULL };

static int health_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_health *h = arg;
	int i;

	(void)k;
	if (!strcmp(key, "check")) {
		if (cfg_get_enum(c, v, "health.check", checks, &i) < 0)
			return -1;
		h->check = (enum cfg_check)i;
		return 0;
	}
	if (!strcmp(key, "interval"))
		return cfg_get_duration(c, v, "health.interval", &h->interval);
	if (!strcmp(key, "timeout"))
		return cfg_get_duration(c, v, "health.timeout", &h->timeout);
	if (!strcmp(key, "rise"))
		return cfg_get_u32(c, v, "health.rise", 1, 1000, &h->rise);
	if (!strcmp(key, "fall"))
		return cfg_get_u32(c, v, "health.fall", 1, 1000, &h->fall);
	if (!strcmp(key, "ehlo"))
		return cfg_get_str(c, v, "health.ehlo", &h->ehlo);
	return 1;
}

static int reuse_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_reuse *r = arg;

	(void)k;
	if (!strcmp(key, "max_idle"))
		return cfg_get_u32(c, v, "reuse.max_idle", 0, 10000, &r->max_idle);
	if (!strcmp(key, "idle_timeout")) {
		if (cfg_get_duration(c, v, "reuse.idle_timeout", &r->idle_timeout) < 0)
			return -1;
		return r->idle_timeout ? 0 : cfg_fail(c, v, "reuse.idle_timeout: more than 0");
	}
	if (!strcmp(key, "max_uses"))
		return cfg_get_u32(c, v, "reuse.max_uses", 1, 1000000, &r->max_uses);
	return 1;
}

struct backend_arg {
	struct cfg_backend *b;
	bool handoff_set;
	yaml_node_t *name_node, *tls_node;
};

static int backend_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct backend_arg *ba = arg;
	struct cfg_backend *b = ba->b;
	int i;

	(void)k;
	if (!strcmp(key, "name")) {
		ba->name_node = v;
		return cfg_get_name(c, v, "backend name", &b->name);
	}
	if (!strcmp(key, "address"))
		return cfg_get_addr(c, v, "backend address", &b->address);
	if (!strcmp(key, "weight"))
		return cfg_get_u32(c, v, "backend weight", 0, 1000000, &b->weight);
	if (!strcmp(key, "max_sessions"))
		return cfg_get_u32(c, v, "backend max_sessions", 0, 10000000, &b->max_sessions);
	if (!strcmp(key, "backup"))
		return cfg_get_bool(c, v, "backend backup", &b->backup);
	if (!strcmp(key, "tls")) {
		if (cfg_get_enum(c, v, "backend tls", cfg_tls_kinds, &i) < 0)
			return -1;
		b->tls = (enum cfg_tls_kind)i;
		ba->tls_node = v; /* checked once tls_context is known */
		return 0;
	}
	if (!strcmp(key, "tls_context"))
		return cfg_tls_ref(c, v, "backend tls_context", &b->tls_context);
	if (!strcmp(key, "handoff")) {
		if (cfg_get_enum(c, v, "backend handoff", cfg_handoffs, &i) < 0)
			return -1;
		b->handoff = (enum cfg_handoff)i;
		ba->handoff_set = true;
		return 0;
	}
	return 1;
}

/* Backend j of pool p, from the mapping item. */
static int parse_backend(struct ctx *c, struct cfg_pool *p, size_t j, yaml_node_t *item)
{
	static const char *const required[] = { "name", "address", NULL };
	struct backend_arg ba = { .b = &p->backends[j] };

	ba.b->weight = 1;
	if (cfg_read_map(c, item, "backends[]", "backend", backend_pair, &ba, required) < 0)
		return -1;
	if (!ba.handoff_set)
		ba.b->handoff = p->handoff;
	if (ba.b->tls != CFG_TLS_NONE && !ba.b->tls_context)
		return cfg_fail(c, ba.tls_node, "backend \"%s\": tls: %s needs a tls_context",
				ba.b->name, cfg_scalar(ba.tls_node));
	if (ba.tls_node && cfg_refuse_unbuilt(c, ba.tls_node, "backend tls") < 0)
		return -1;
	for (size_t q = 0; q < j; q++)
		if (p->backends[q].name && !strcmp(p->backends[q].name, ba.b->name))
			return cfg_fail(c, ba.name_node, "duplicate backend \"%s\" in pool \"%s\"",
					ba.b->name, p->name);
	return 0;
}

static int parse_backends(struct ctx *c, struct cfg_pool *p, yaml_node_t *seq)
{
	size_t n;
	int r = 0;

	if (cfg_list(c, seq, "backends", &n) < 0)
		return -1;
	if (!n)
		return cfg_fail(c, seq, "pool \"%s\" has no backends", p->name);
	if (!(p->backends = cfg_calloc(c, seq, n, sizeof(*p->backends))))
		return -1;
	for (size_t j = 0; j < n && !c->stopped; j++) {
		p->nbackends++;
		if (parse_backend(c, p, j, cfg_item(c, seq, j)) < 0)
			r = -1; /* the other backends are read for their errors too */
	}
	return r;
}

struct pool_arg {
	struct cfg_pool *p;
	yaml_node_t *backends, *name_node, *reuse_node;
};

static int pool_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct pool_arg *pa = arg;
	struct cfg_pool *p = pa->p;
	int i;

	(void)k;
	if (!strcmp(key, "name")) {
		pa->name_node = v;
		return cfg_get_name(c, v, "pool name", &p->name);
	}
	if (!strcmp(key, "balance")) {
		if (cfg_get_enum(c, v, "balance", balances, &i) < 0)
			return -1;
		p->balance = (enum cfg_balance)i;
		return 0;
	}
	if (!strcmp(key, "retries"))
		return cfg_get_u32(c, v, "retries", 0, 15, &p->retries);
	if (!strcmp(key, "handoff")) {
		if (cfg_get_enum(c, v, "handoff", cfg_handoffs, &i) < 0)
			return -1;
		p->handoff = (enum cfg_handoff)i;
		return 0;
	}
	if (!strcmp(key, "health"))
		return cfg_read_map(c, v, "health", "health", health_pair, &p->health, NULL);
	if (!strcmp(key, "reuse")) {
		pa->reuse_node = v;
		return cfg_read_map(c, v, "reuse", "reuse", reuse_pair, &p->reuse, NULL);
	}
	if (!strcmp(key, "backends")) {
		pa->backends = v; /* read after the pool's own keys: handoff applies */
		return 0;
	}
	return 1;
}

/* A PROXY header is sent once per connection: a parked connection would
 * carry its first client's address to every later one (SPEC §10). */
static int check_reuse(struct ctx *c, const struct cfg_pool *p, yaml_node_t *n)
{
	if (!p->reuse.max_idle)
		return 0;
	for (size_t j = 0; j < p->nbackends; j++) {
		const struct cfg_backend *b = &p->backends[j];

		if (b->handoff == CFG_HANDOFF_PROXY_V1 || b->handoff == CFG_HANDOFF_PROXY_V2)
			return cfg_fail(c, n,
					"pool \"%s\": reuse cannot work with handoff %s (backend "
					"\"%s\"): a PROXY header names one client per connection; "
					"use xclient or none",
					p->name, config_handoff_name(b->handoff), b->name);
	}
	return cfg_refuse_unbuilt(c, n, "reuse");
}

/* Pool i of the configuration, from the mapping item. */
static int parse_pool(struct ctx *c, size_t i, yaml_node_t *item)
{
	static const char *const required[] = { "name", "backends", NULL };
	struct cfg_pool *p = &c->cfg->pools[i];
	struct pool_arg pa = { .p = p };

	p->index = i;
	p->retries = 2;
	p->health = (struct cfg_health){
		.check = CFG_CHECK_SMTP,
		.interval = 2000,
		.timeout = 2000,
		.rise = 2,
		.fall = 3,
	};
	p->reuse = (struct cfg_reuse){ .idle_timeout = 30000, .max_uses = 100 };
	if (cfg_read_map(c, item, "pools[]", "pool", pool_pair, &pa, required) < 0)
		return -1;
	for (size_t q = 0; q < i; q++)
		if (c->cfg->pools[q].name && !strcmp(c->cfg->pools[q].name, p->name))
			return cfg_fail(c, pa.name_node, "duplicate pool \"%s\"", p->name);
	if (parse_backends(c, p, pa.backends) < 0 || check_reuse(c, p, pa.reuse_node) < 0)
		return -1;
	if (!p->health.ehlo || !*p->health.ehlo) {
		free(p->health.ehlo);
		p->health.ehlo = strdup(c->cfg->server.hostname);
		if (!p->health.ehlo)
			return cfg_fail(c, item, "out of memory");
	}
	return 0;
}

int cfg_pools_parse(struct ctx *c, yaml_node_t *seq, yaml_node_t *root)
{
	struct config *cfg = c->cfg;
	size_t n;
	int r = 0;

	(void)root;
	if (cfg_list(c, seq, "pools", &n) < 0 ||
	    !(cfg->pools = cfg_calloc(c, seq, n, sizeof(*cfg->pools))))
		return -1;
	for (size_t i = 0; i < n && !c->stopped; i++) {
		cfg->npools++;
		if (parse_pool(c, i, cfg_item(c, seq, i)) < 0)
			r = -1; /* the other pools are read for their errors too */
	}
	return r;
}

int cfg_pool_ref(struct ctx *c, yaml_node_t *v, const char *what, struct cfg_pool **out)
{
	if (cfg_want(c, v, YAML_SCALAR_NODE, what) < 0)
		return -1;
	for (size_t i = 0; i < c->cfg->npools; i++) {
		if (c->cfg->pools[i].name && !strcmp(c->cfg->pools[i].name, cfg_scalar(v))) {
			*out = &c->cfg->pools[i];
			return 0;
		}
	}
	*out = NULL;
	return cfg_fail(c, v, "%s: no pool named \"%s\"", what, cfg_scalar(v));
}

void cfg_pools_free(struct config *cfg)
{
	for (size_t i = 0; i < cfg->npools; i++) {
		struct cfg_pool *p = &cfg->pools[i];

		free(p->name);
		free(p->health.ehlo);
		for (size_t j = 0; j < p->nbackends; j++)
			free(p->backends[j].name);
		free(p->backends);
	}
	free(cfg->pools);
}
