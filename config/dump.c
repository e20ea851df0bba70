/* dump.c - config_dump(): a loaded configuration written back as YAML,
 * every default filled in (mxlb --dump). What it prints loads again to the
 * same configuration (tests/integration/test_cli.py checks the round
 * trip), with two exceptions that keep the output safe to show:
 * server.admin.token is replaced by a placeholder that still passes the
 * check, and what this build does not support yet is printed as comments.
 * A key with no value (a TLS context not named, no CA) is a comment too.
 */
#include "config/config_int.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* 16 printable characters: the shortest token the check accepts */
#define TOKEN_SHOWN "<redacted-token>"

static const char *const levels[] = { "error", "warn", "info", "debug" };
static const char *const formats[] = { "text", "json" };
static const char *const tls_modes[] = { "terminate", "passthrough" };
static const char *const relays[] = { "auto", "copy", "splice" };
static const char *const bare_newlines[] = { "pass", "normalize", "reject" };
static const char *const balances[] = { "roundrobin", "leastconn", "source", "ehlo", "random" };
static const char *const checks[] = { "smtp", "tcp", "none" };
static const char *const actions[] = { "enforce", "drop", "ignore" };

struct dump {
	FILE *f;
	bool comment; /* the lines printed now are comments */
};

/* The indentation of a line, and "# " when it is a comment. */
static void begin(struct dump *d, int depth)
{
	fprintf(d->f, "%*s%s", depth * 2, "", d->comment ? "# " : "");
}

/* One line at depth levels of two spaces: "key: value" as fmt makes it. */
static void __attribute__((format(printf, 3, 4)))
line(struct dump *d, int depth, const char *fmt, ...)
{
	va_list ap;

	begin(d, depth);
	va_start(ap, fmt);
	vfprintf(d->f, fmt, ap);
	va_end(ap);
	fputc('\n', d->f);
}

/* s as a YAML double-quoted scalar (UTF-8 as it is: the file was UTF-8),
 * however long. */
static void put_q(struct dump *d, const char *s)
{
	fputc('"', d->f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(d->f, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			fprintf(d->f, "\\x%02x", c);
		else
			fputc(c, d->f);
	}
	fputc('"', d->f);
}

/* "key: "s"" (key may carry the "- " of a list item) */
static void kvq(struct dump *d, int depth, const char *key, const char *s)
{
	begin(d, depth);
	fprintf(d->f, "%s: ", key);
	put_q(d, s);
	fputc('\n', d->f);
}

/* "- "s"" */
static void itemq(struct dump *d, int depth, const char *s)
{
	begin(d, depth);
	fputs("- ", d->f);
	put_q(d, s);
	fputc('\n', d->f);
}

/* The largest unit that writes ms exactly. */
static const char *dur(char *buf, size_t cap, uint32_t ms)
{
	if (ms && ms % 3600000 == 0)
		snprintf(buf, cap, "%uh", ms / 3600000);
	else if (ms && ms % 60000 == 0)
		snprintf(buf, cap, "%um", ms / 60000);
	else if (ms % 1000 == 0)
		snprintf(buf, cap, "%us", ms / 1000);
	else
		snprintf(buf, cap, "%ums", ms);
	return buf;
}

static const char *cidr(char *buf, size_t cap, const struct cfg_cidr *c)
{
	char a[INET6_ADDRSTRLEN] = "?";

	inet_ntop(c->family, c->addr, a, sizeof(a));
	snprintf(buf, cap, "\"%s/%u\"", a, c->prefix);
	return buf;
}

static const char *tf(bool b)
{
	return b ? "true" : "false";
}

static void dump_server(struct dump *d, const struct config *cfg)
{
	const struct cfg_server *s = &cfg->server;
	char b[64];

	line(d, 0, "server:");
	kvq(d, 1, "hostname", s->hostname);
	line(d, 1, "workers: %u", s->workers);
	kvq(d, 1, "user", s->user);
	line(d, 1, "max_sessions: %u", s->max_sessions);
	line(d, 1, "shutdown_timeout: %s", dur(b, sizeof(b), s->shutdown_timeout));
	line(d, 1, "log:");
	line(d, 2, "level: %s", levels[s->log_level]);
	line(d, 2, "format: %s", formats[s->log_format]);
	line(d, 1, "admin:");
	kvq(d, 2, "listen", s->has_admin ? s->admin.text : "");
	if (*s->admin_token)
		line(d, 2, "token: \"%s\"  # set in the file; not shown", TOKEN_SHOWN);
	else
		line(d, 2, "token: \"\"");
	kvq(d, 1, "resolver", s->has_resolver ? s->resolver.text : "");
}

static void dump_tls(struct dump *d, const struct config *cfg)
{
	if (!cfg->ntls) {
		line(d, 0, "tls: {}");
		return;
	}
	line(d, 0, "tls:");
	for (size_t i = 0; i < cfg->ntls; i++) {
		const struct cfg_tls *t = &cfg->tls[i];

		begin(d, 1);
		put_q(d, t->name);
		fputs(":\n", d->f);
		if (!t->ncerts)
			line(d, 2, "certificates: []");
		else
			line(d, 2, "certificates:");
		for (size_t j = 0; j < t->ncerts; j++) {
			kvq(d, 3, "- cert", t->certs[j].cert);
			kvq(d, 3, "  key", t->certs[j].key);
		}
		line(d, 2, "min_version: \"%s\"", t->min_version >= 0x0304 ? "1.3" : "1.2");
		kvq(d, 2, "ciphers", t->ciphers);
		line(d, 2, "session_tickets: %s", tf(t->session_tickets));
		if (t->ca)
			kvq(d, 2, "ca", t->ca);
		else
			line(d, 2, "# ca: not set");
		line(d, 2, "verify: %s", tf(t->verify));
		kvq(d, 2, "server_name", t->server_name);
	}
}

static void dump_backend(struct dump *d, const struct cfg_backend *b)
{
	kvq(d, 3, "- name", b->name);
	kvq(d, 3, "  address", b->address.text);
	line(d, 3, "  weight: %u", b->weight);
	line(d, 3, "  max_sessions: %u", b->max_sessions);
	line(d, 3, "  backup: %s", tf(b->backup));
	line(d, 3, "  tls: %s", cfg_tls_kinds[b->tls]);
	if (b->tls_context)
		kvq(d, 3, "  tls_context", b->tls_context->name);
	else
		line(d, 3, "  # tls_context: not set");
	line(d, 3, "  handoff: %s", cfg_handoffs[b->handoff]);
}

static void dump_pools(struct dump *d, const struct config *cfg)
{
	char b[64];

	line(d, 0, "pools:");
	for (size_t i = 0; i < cfg->npools; i++) {
		const struct cfg_pool *p = &cfg->pools[i];

		kvq(d, 1, "- name", p->name);
		line(d, 1, "  balance: %s", balances[p->balance]);
		line(d, 1, "  retries: %u", p->retries);
		line(d, 1, "  handoff: %s", cfg_handoffs[p->handoff]);
		line(d, 1, "  health:");
		line(d, 3, "check: %s", checks[p->health.check]);
		line(d, 3, "interval: %s", dur(b, sizeof(b), p->health.interval));
		line(d, 3, "timeout: %s", dur(b, sizeof(b), p->health.timeout));
		line(d, 3, "rise: %u", p->health.rise);
		line(d, 3, "fall: %u", p->health.fall);
		kvq(d, 3, "ehlo", p->health.ehlo);
		line(d, 1, "  reuse:");
		line(d, 3, "max_idle: %u", p->reuse.max_idle);
		line(d, 3, "idle_timeout: %s", dur(b, sizeof(b), p->reuse.idle_timeout));
		line(d, 3, "max_uses: %u", p->reuse.max_uses);
		line(d, 1, "  backends:");
		for (size_t j = 0; j < p->nbackends; j++)
			dump_backend(d, &p->backends[j]);
	}
}

static void dump_cidrs(struct dump *d, int depth, const char *key, const struct cfg_cidr *c,
		       size_t n)
{
	char a[80];

	if (!n) {
		line(d, depth, "%s: []", key);
		return;
	}
	line(d, depth, "%s:", key);
	for (size_t i = 0; i < n; i++)
		line(d, depth + 1, "- %s", cidr(a, sizeof(a), &c[i]));
}

/* Commented out while this build refuses the key (config/node.c). */
static void dump_screen(struct dump *d, const struct cfg_screen *s)
{
	bool was = d->comment;
	char b[64];

	d->comment = cfg_unbuilt("screen", NULL);
	line(d, 2, "screen:%s", d->comment ? "  (not supported by this build yet)" : "");
	dump_cidrs(d, 3, "allow", s->allow, s->nallow);
	dump_cidrs(d, 3, "deny", s->deny, s->ndeny);
	line(d, 3, "pregreet: %s", dur(b, sizeof(b), s->pregreet));
	line(d, 3, "dnsbl:");
	if (!s->nsites)
		line(d, 4, "sites: []");
	else
		line(d, 4, "sites:");
	for (size_t i = 0; i < s->nsites; i++)
		itemq(d, 5, s->sites[i].text);
	line(d, 4, "threshold: %d", s->threshold);
	line(d, 4, "timeout: %s", dur(b, sizeof(b), s->dnsbl_timeout));
	line(d, 3, "action: %s", actions[s->action]);
	line(d, 3, "cache: %s", dur(b, sizeof(b), s->cache));
	d->comment = was;
}

static void dump_limits(struct dump *d, const struct cfg_limits *l)
{
	char b[64];

	line(d, 2, "limits:");
	if (l->rate_window)
		line(d, 3, "connection_rate: \"%u/%s\"", l->rate_count,
		     dur(b, sizeof(b), l->rate_window));
	else
		line(d, 3, "connection_rate: \"0\"");
	line(d, 3, "ipv4_prefix: %u", l->ipv4_prefix);
	line(d, 3, "ipv6_prefix: %u", l->ipv6_prefix);
}

static void dump_routes(struct dump *d, const struct cfg_listener *l)
{
	char b[80];

	if (!l->nroutes) {
		line(d, 2, "routes: []");
		return;
	}
	line(d, 2, "routes:");
	for (size_t i = 0; i < l->nroutes; i++) {
		const struct cfg_route *r = &l->routes[i];

		kvq(d, 3, "- pool", r->pool->name);
		if (r->ehlo)
			kvq(d, 3, "  ehlo", r->ehlo);
		if (r->has_client)
			line(d, 3, "  client: %s", cidr(b, sizeof(b), &r->client));
		if (r->sni)
			kvq(d, 3, "  sni", r->sni);
	}
}

static void dump_listener(struct dump *d, const struct cfg_listener *l)
{
	const struct cfg_timeouts *t = &l->timeouts;
	char b[64];

	kvq(d, 1, "- name", l->name);
	line(d, 2, "listen:");
	for (size_t j = 0; j < l->nlisten; j++)
		itemq(d, 3, l->listen[j].text);
	line(d, 2, "tls: %s", cfg_tls_kinds[l->tls]);
	if (l->tls_context)
		kvq(d, 2, "tls_context", l->tls_context->name);
	else
		line(d, 2, "# tls_context: not set");
	line(d, 2, "tls_mode: %s", tls_modes[l->tls_mode]);
	line(d, 2, "require_tls: %s", tf(l->require_tls));
	line(d, 2, "accept_proxy: %s", tf(l->accept_proxy));
	kvq(d, 2, "banner", l->banner);
	kvq(d, 2, "pool", l->pool->name);
	dump_routes(d, l);
	line(d, 2, "max_sessions_per_client: %u", l->max_sessions_per_client);
	line(d, 2, "relay: %s", relays[l->relay]);
	line(d, 2, "timeouts:");
	line(d, 3, "proxy_header: %s", dur(b, sizeof(b), t->proxy_header));
	line(d, 3, "tls_handshake: %s", dur(b, sizeof(b), t->tls_handshake));
	line(d, 3, "command: %s", dur(b, sizeof(b), t->command));
	line(d, 3, "connect: %s", dur(b, sizeof(b), t->connect));
	line(d, 3, "backend_reply: %s", dur(b, sizeof(b), t->backend_reply));
	line(d, 3, "idle: %s", dur(b, sizeof(b), t->idle));
	dump_screen(d, &l->screen);
	dump_limits(d, &l->limits);
	line(d, 2, "bare_newline: %s", bare_newlines[l->bare_newline]);
}

static void dump_alerts(struct dump *d, const struct cfg_alerts *al)
{
	static const char *const events[] = { "backend_down", "backend_up", "pool_down" };
	if (!al->enabled) {
		line(d, 0, "# alerts: not set (no mail on backend state changes)");
		return;
	}
	line(d, 0, "alerts:");
	kvq(d, 1, "smtp", al->smtp.text);
	kvq(d, 1, "from", al->from);
	line(d, 1, "to:");
	for (size_t i = 0; i < al->nto; i++)
		itemq(d, 2, al->to[i]);
	line(d, 1, "events:");
	for (unsigned i = 0; i < 3; i++)
		if (al->events & (1u << i))
			line(d, 2, "- %s", events[i]);
}

void config_dump(FILE *f, const struct config *cfg)
{
	struct dump d = { .f = f };

	fprintf(f, "# mxlb --dump of %s: the effective configuration, every default filled in\n",
		cfg->path);
	dump_server(&d, cfg);
	dump_tls(&d, cfg);
	dump_pools(&d, cfg);
	line(&d, 0, "listeners:");
	for (size_t i = 0; i < cfg->nlisteners; i++)
		dump_listener(&d, &cfg->listeners[i]);
	dump_alerts(&d, &cfg->alerts);
}
