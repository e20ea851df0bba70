/* section_listeners.c - the listeners section: addresses (one owner each),
 * TLS, routes, limits and timeouts. Read after the pools and TLS contexts
 * it names.
 */
#include "config/config_int.h"

#include <stdlib.h>
#include <string.h>

#define CFG_BANNER_MAX 200

static const char *const tls_modes[] = { "terminate", "passthrough", NULL };
static const char *const relays[] = { "auto", "copy", "splice", NULL };
static const char *const bare_newlines[] = { "pass", "normalize", "reject", NULL };

static int timeout_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_timeouts *t = arg;
	static const struct {
		const char *name;
		size_t off;
	} keys[] = {
		{ "proxy_header", offsetof(struct cfg_timeouts, proxy_header) },
		{ "tls_handshake", offsetof(struct cfg_timeouts, tls_handshake) },
		{ "command", offsetof(struct cfg_timeouts, command) },
		{ "connect", offsetof(struct cfg_timeouts, connect) },
		{ "backend_reply", offsetof(struct cfg_timeouts, backend_reply) },
		{ "idle", offsetof(struct cfg_timeouts, idle) },
	};

	(void)k;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		uint32_t *ms = (uint32_t *)((char *)t + keys[i].off);

		if (strcmp(key, keys[i].name))
			continue;
		if (cfg_get_duration(c, v, key, ms) < 0)
			return -1;
		if (!*ms)
			return cfg_fail(c, v, "%s: a timeout must be more than 0", key);
		return 0;
	}
	return 1;
}

static int route_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_route *r = arg;

	(void)k;
	if (!strcmp(key, "ehlo"))
		return cfg_get_str(c, v, "route ehlo", &r->ehlo);
	if (!strcmp(key, "client")) {
		if (cfg_want(c, v, YAML_SCALAR_NODE, "route client") < 0)
			return -1;
		if (config_parse_cidr(cfg_scalar(v), &r->client) < 0)
			return cfg_fail(c, v, "route client: bad CIDR \"%s\"", cfg_scalar(v));
		r->has_client = true;
		return 0;
	}
	if (!strcmp(key, "sni"))
		return cfg_get_str(c, v, "route sni", &r->sni);
	if (!strcmp(key, "pool"))
		return cfg_pool_ref(c, v, "route pool", &r->pool);
	return 1;
}

static int parse_routes(struct ctx *c, struct cfg_listener *l, yaml_node_t *seq)
{
	static const char *const required[] = { "pool", NULL };
	size_t n;
	int r = 0;

	if (cfg_list(c, seq, "routes", &n) < 0 ||
	    !(l->routes = cfg_calloc(c, seq, n, sizeof(*l->routes))))
		return -1;
	for (size_t i = 0; i < n && !c->stopped; i++) {
		l->nroutes++;
		if (cfg_read_map(c, cfg_item(c, seq, i), "routes[]", "route", route_pair,
				 &l->routes[i], required) < 0)
			r = -1; /* the other routes are read for their errors too */
	}
	return r;
}

static bool same_addr(const struct cfg_addr *a, const struct cfg_addr *b)
{
	return a->len == b->len && !memcmp(&a->ss, &b->ss, a->len);
}

/* An address already taken by an earlier listener, or earlier in l's list
 * (l is the last of c->cfg->listeners). */
static const struct cfg_addr *listened(struct ctx *c, const struct cfg_listener *l,
				       const struct cfg_addr *a)
{
	for (size_t q = 0; q < c->cfg->nlisteners; q++) {
		const struct cfg_listener *o = &c->cfg->listeners[q];

		for (size_t i = 0; i < o->nlisten; i++)
			if (&o->listen[i] != a && same_addr(&o->listen[i], a))
				return &o->listen[i];
		if (o == l)
			break;
	}
	return NULL;
}

/* Address a of l, at node n: listened on once, and not the admin server's
 * (one owner per address, SPEC §11: sharing it would split connections
 * between the two). */
static int check_owner(struct ctx *c, yaml_node_t *n, const struct cfg_listener *l,
		       const struct cfg_addr *a)
{
	const struct cfg_server *s = &c->cfg->server;
	const struct cfg_addr *dup = listened(c, l, a);

	if (dup)
		return cfg_fail(c, n, "%s is listened on twice (as %s, at %s:%u:%u)", a->text,
				dup->text, c->file, dup->line, dup->column);
	if (s->has_admin && config_addr_overlap(a, &s->admin))
		return cfg_fail(c, n,
				"%s is taken by the admin server (server.admin.listen: %s); "
				"each needs an address of its own",
				a->text, s->admin.text);
	return 0;
}

/* listen: one address or a list of them. */
static int parse_listen(struct ctx *c, struct cfg_listener *l, yaml_node_t *v)
{
	bool list = v->type == YAML_SEQUENCE_NODE;
	size_t n = 1;

	if (list && cfg_list(c, v, "listen", &n) == 0 && !n)
		return cfg_fail(c, v, "listen: at least one address is needed");
	if (!(l->listen = cfg_calloc(c, v, n, sizeof(*l->listen))))
		return -1;
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *a = list ? cfg_item(c, v, i) : v;

		if (cfg_get_addr(c, a, "listen", &l->listen[i]) < 0)
			return -1;
		l->nlisten++;
		if (check_owner(c, a, l, &l->listen[i]) < 0)
			return -1;
	}
	return 0;
}

struct listener_arg {
	struct cfg_listener *l;
	yaml_node_t *name_node, *tls_node, *mode_node;
};

/* A pool a listener can send sessions to: its own and its routes'. */
static int check_passthrough_pool(struct ctx *c, yaml_node_t *n, const struct cfg_listener *l,
				  const struct cfg_pool *p)
{
	for (size_t i = 0; i < p->nbackends; i++) {
		const struct cfg_backend *b = &p->backends[i];

		if (b->handoff == CFG_HANDOFF_XCLIENT)
			return cfg_fail(c, n,
					"listener \"%s\": passthrough cannot guard XCLIENT inside "
					"the client's TLS (pool \"%s\", backend \"%s\"); use "
					"proxy_v1 or proxy_v2",
					l->name, p->name, b->name);
		if (l->tls == CFG_TLS_IMPLICIT && b->tls != CFG_TLS_NONE)
			return cfg_fail(
				c, n,
				"listener \"%s\": passthrough forwards the client's TLS as "
				"it is, so backend \"%s\" of pool \"%s\" must have tls: none",
				l->name, b->name, p->name);
	}
	return 0;
}

static int check_listener_tls(struct ctx *c, struct listener_arg *la, yaml_node_t *item)
{
	const struct cfg_listener *l = la->l;
	yaml_node_t *n = la->mode_node ? la->mode_node : item;

	if (l->tls != CFG_TLS_NONE && l->tls_mode == CFG_TLS_TERMINATE && !l->tls_context)
		return cfg_fail(c, la->tls_node, "listener \"%s\": tls: %s needs a tls_context",
				l->name, cfg_scalar(la->tls_node));
	if (l->tls_mode == CFG_TLS_PASSTHROUGH) {
		if (l->tls == CFG_TLS_NONE)
			return cfg_fail(c, n,
					"listener \"%s\": tls_mode: passthrough needs tls: "
					"starttls or implicit",
					l->name);
		if (l->tls == CFG_TLS_IMPLICIT && (l->screen.pregreet || l->screen.nsites))
			return cfg_fail(
				c, n,
				"listener \"%s\": implicit TLS passthrough has no greeting "
				"to wait before and no SMTP to answer in, so screen.pregreet "
				"and screen.dnsbl cannot run (allow and deny can)",
				l->name);
		if (l->bare_newline != CFG_BARE_PASS)
			return cfg_fail(
				c, n,
				"listener \"%s\": bare_newline: %s reads the client's SMTP, "
				"which passthrough leaves inside TLS; use tls_mode: "
				"terminate or bare_newline: pass",
				l->name,
				l->bare_newline == CFG_BARE_REJECT ? "reject" : "normalize");
		if (check_passthrough_pool(c, n, l, l->pool) < 0)
			return -1;
		for (size_t i = 0; i < l->nroutes; i++)
			if (check_passthrough_pool(c, n, l, l->routes[i].pool) < 0)
				return -1;
		return 0;
	}
	if (l->tls != CFG_TLS_NONE && l->tls_context->ncerts == 0)
		return cfg_fail(c, la->tls_node,
				"listener \"%s\": tls_context \"%s\" has no certificates to "
				"terminate TLS with",
				l->name, l->tls_context->name);
	return 0;
}

static int get_banner(struct ctx *c, yaml_node_t *v, struct cfg_listener *l)
{
	if (cfg_get_str(c, v, "banner", &l->banner) < 0)
		return -1;
	for (const char *p = l->banner; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return cfg_fail(c, v, "banner: control characters are not allowed");
	if (strlen(l->banner) > CFG_BANNER_MAX)
		return cfg_fail(c, v, "banner: at most %d characters", CFG_BANNER_MAX);
	return 0;
}

/* The keys that name an enum value, and the nodes later checks report at. */
static int listener_enum(struct ctx *c, const char *key, yaml_node_t *v, struct listener_arg *la)
{
	struct cfg_listener *l = la->l;
	int i;

	if (!strcmp(key, "tls")) {
		if (cfg_get_enum(c, v, "listener tls", cfg_tls_kinds, &i) < 0)
			return -1;
		l->tls = (enum cfg_tls_kind)i;
		la->tls_node = v; /* checked once tls_context is known */
		return 0;
	}
	if (!strcmp(key, "tls_mode")) {
		if (cfg_get_enum(c, v, "tls_mode", tls_modes, &i) < 0)
			return -1;
		l->tls_mode = (enum cfg_tls_mode)i;
		la->mode_node = v;
		return 0;
	}
	if (!strcmp(key, "relay")) {
		if (cfg_get_enum(c, v, "relay", relays, &i) < 0)
			return -1;
		l->relay = (enum cfg_relay)i;
		return cfg_refuse_unbuilt(c, v, "relay");
	}
	if (!strcmp(key, "bare_newline")) {
		if (cfg_get_enum(c, v, "bare_newline", bare_newlines, &i) < 0)
			return -1;
		l->bare_newline = (enum cfg_bare_newline)i;
		return cfg_refuse_unbuilt(c, v, "bare_newline");
	}
	return 1;
}

static int listener_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct listener_arg *la = arg;
	struct cfg_listener *l = la->l;

	(void)k;
	if (!strcmp(key, "name")) {
		la->name_node = v;
		return cfg_get_name(c, v, "listener name", &l->name);
	}
	if (!strcmp(key, "listen"))
		return parse_listen(c, l, v);
	if (!strcmp(key, "tls_context"))
		return cfg_tls_ref(c, v, "listener tls_context", &l->tls_context);
	if (!strcmp(key, "require_tls"))
		return cfg_get_bool(c, v, "require_tls", &l->require_tls);
	if (!strcmp(key, "accept_proxy"))
		return cfg_get_bool(c, v, "accept_proxy", &l->accept_proxy);
	if (!strcmp(key, "banner"))
		return get_banner(c, v, l);
	if (!strcmp(key, "pool"))
		return cfg_pool_ref(c, v, "listener pool", &l->pool);
	if (!strcmp(key, "routes"))
		return parse_routes(c, l, v);
	if (!strcmp(key, "max_sessions_per_client"))
		return cfg_get_u32(c, v, "max_sessions_per_client", 0, 10000000,
				   &l->max_sessions_per_client);
	if (!strcmp(key, "timeouts"))
		return cfg_read_map(c, v, "timeouts", "timeouts", timeout_pair, &l->timeouts, NULL);
	if (!strcmp(key, "screen"))
		return cfg_screen_parse(c, v, &l->screen);
	if (!strcmp(key, "limits"))
		return cfg_limits_parse(c, v, &l->limits);
	return listener_enum(c, key, v, la);
}

/* Listener i of the configuration, from the mapping item. */
static int parse_listener(struct ctx *c, size_t i, yaml_node_t *item)
{
	static const char *const required[] = { "name", "listen", "pool", NULL };
	struct cfg_listener *l = &c->cfg->listeners[i];
	struct listener_arg la = { .l = l };

	l->timeouts = (struct cfg_timeouts){
		.proxy_header = 5000,
		.tls_handshake = 10000,
		.command = 300000,
		.connect = 5000,
		.backend_reply = 30000,
		.idle = 600000,
	};
	cfg_screen_defaults(&l->screen, &l->limits);
	if (cfg_read_map(c, item, "listeners[]", "listener", listener_pair, &la, required) < 0)
		return -1;
	if (!l->banner && !(l->banner = strdup("ESMTP")))
		return cfg_fail(c, item, "out of memory");
	if (check_listener_tls(c, &la, item) < 0)
		return -1;
	for (size_t q = 0; q < i; q++)
		if (c->cfg->listeners[q].name && !strcmp(c->cfg->listeners[q].name, l->name))
			return cfg_fail(c, la.name_node, "duplicate listener \"%s\"", l->name);
	return 0;
}

int cfg_listeners_parse(struct ctx *c, yaml_node_t *seq, yaml_node_t *root)
{
	struct config *cfg = c->cfg;
	size_t n;
	int r = 0;

	(void)root;
	if (cfg_list(c, seq, "listeners", &n) < 0)
		return -1;
	if (!n)
		return cfg_fail(c, seq, "listeners: at least one listener is needed");
	if (!(cfg->listeners = cfg_calloc(c, seq, n, sizeof(*cfg->listeners))))
		return -1;
	for (size_t i = 0; i < n && !c->stopped; i++) {
		cfg->nlisteners++;
		if (parse_listener(c, i, cfg_item(c, seq, i)) < 0)
			r = -1; /* the other listeners are read for their errors too */
	}
	return r;
}

void cfg_listeners_free(struct config *cfg)
{
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		struct cfg_listener *l = &cfg->listeners[i];

		free(l->name);
		free(l->listen);
		free(l->banner);
		for (size_t j = 0; j < l->nroutes; j++) {
			free(l->routes[j].ehlo);
			free(l->routes[j].sni);
		}
		free(l->routes);
		cfg_screen_free(&l->screen);
	}
	free(cfg->listeners);
}
