/* test_config.c - the configuration loader: a full file, the defaults,
 * and one bad input per error class with its line and column.
 *
 * Paths are relative to the source tree's top: the test changes to
 * $MXLB_SRCDIR when it is set (the Makefile runs it from there already).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <cmocka.h>

#include "config/config.h"

/* A valid pools section, for cases about something else. */
#define POOL "pools: [{name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}]\n"
/* A valid listeners section using it. */
#define LISTENER "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p}]\n"

static struct config *load(const char *yaml, char *err)
{
	return config_load_buffer("t.yaml", yaml, strlen(yaml), err, CFG_ERR_MAX);
}

static void test_full_file(void **state)
{
	char err[CFG_ERR_MAX] = "";
	struct config *c = config_load("tests/unit/configs/full.yaml", err, sizeof(err));
	const struct cfg_listener *l;
	const struct cfg_pool *p;
	const struct cfg_backend *b;
	const struct sockaddr_in6 *sin6;

	(void)state;
	if (!c)
		fail_msg("%s", err);
	assert_string_equal(c->path, "tests/unit/configs/full.yaml");

	assert_string_equal(c->server.hostname, "mx.example.net");
	assert_int_equal(c->server.workers, 3);
	assert_string_equal(c->server.user, "nobody");
	assert_int_equal(c->server.max_sessions, 1234);
	assert_int_equal(c->server.shutdown_timeout, 45000);
	assert_int_equal(c->server.log_level, CFG_LOG_DEBUG);
	assert_int_equal(c->server.log_format, CFG_LOG_JSON);
	assert_true(c->server.has_admin);
	assert_string_equal(c->server.admin.text, "127.0.0.1:18025");
	assert_int_equal(ntohs(((struct sockaddr_in *)&c->server.admin.ss)->sin_port), 18025);
	assert_string_equal(c->server.admin_token, "full-yaml-token-0123456789");
	assert_int_equal(c->server.admin_line, 11);
	assert_int_equal(c->server.admin_column, 20);

	assert_int_equal(c->ntls, 2);
	assert_string_equal(c->tls[0].name, "to-backends");
	assert_string_equal(c->tls[0].ca, "tests/unit/configs/placeholder.pem");
	assert_false(c->tls[0].verify);
	assert_string_equal(c->tls[0].server_name, "backend.example.net");
	assert_int_equal(c->tls[0].ncerts, 0);
	assert_int_equal(c->tls[0].line, 14);
	assert_int_equal(c->tls[0].column, 3);
	assert_string_equal(c->tls[1].name, "public");
	assert_int_equal(c->tls[1].min_version, 0x0304);
	assert_int_equal(c->tls[1].ncerts, 2);
	assert_string_equal(c->tls[1].certs[1].key, "tests/unit/configs/placeholder.pem");
	assert_string_equal(c->tls[1].ciphers, "ECDHE+AESGCM");
	assert_false(c->tls[1].session_tickets);
	assert_null(c->tls[1].ca);

	assert_int_equal(c->nlisteners, 2);
	l = &c->listeners[0];
	assert_string_equal(l->name, "mx");
	assert_int_equal(l->nlisten, 2);
	assert_string_equal(l->listen[0].text, "127.0.0.1:2525");
	assert_int_equal(l->listen[0].ss.ss_family, AF_INET);
	assert_int_equal(l->listen[1].ss.ss_family, AF_INET6);
	assert_string_equal(l->listen[1].host, "::1");
	assert_int_equal(l->tls, CFG_TLS_NONE);
	assert_ptr_equal(l->tls_context, &c->tls[1]);
	assert_int_equal(l->tls_mode, CFG_TLS_TERMINATE);
	assert_true(l->require_tls);
	assert_true(l->accept_proxy);
	assert_string_equal(l->banner, "ESMTP ready");
	assert_ptr_equal(l->pool, &c->pools[0]);
	assert_int_equal(l->nroutes, 4);
	assert_string_equal(l->routes[0].ehlo, "*.partner.example");
	assert_false(l->routes[0].has_client);
	assert_null(l->routes[0].sni);
	assert_ptr_equal(l->routes[0].pool, &c->pools[1]);
	assert_true(l->routes[1].has_client);
	assert_null(l->routes[1].ehlo);
	assert_int_equal(l->routes[1].client.family, AF_INET);
	assert_int_equal(l->routes[1].client.prefix, 24);
	assert_int_equal(l->routes[1].client.addr[2], 2);
	assert_int_equal(l->routes[1].client.addr[3], 0); /* host bits masked */
	assert_string_equal(l->routes[2].sni, "submit.example.net");
	assert_ptr_equal(l->routes[2].pool, &c->pools[0]);
	assert_int_equal(l->routes[3].client.family, AF_INET6);
	assert_int_equal(l->routes[3].client.addr[15], 0);
	assert_string_equal(l->routes[3].sni, "x.example");
	assert_int_equal(l->max_sessions_per_client, 7);
	assert_int_equal(l->relay, CFG_RELAY_COPY);
	assert_int_equal(l->timeouts.proxy_header, 250);
	assert_int_equal(l->timeouts.tls_handshake, 11000);
	assert_int_equal(l->timeouts.command, 120000);
	assert_int_equal(l->timeouts.connect, 3000);
	assert_int_equal(l->timeouts.backend_reply, 60000);
	assert_int_equal(l->timeouts.idle, 3600000);
	l = &c->listeners[1];
	assert_int_equal(l->nlisten, 1); /* a single address, not a list */
	assert_string_equal(l->listen[0].text, "127.0.0.1:2526");
	assert_ptr_equal(l->pool, &c->pools[1]);

	assert_int_equal(c->npools, 2);
	p = &c->pools[0];
	assert_string_equal(p->name, "inbound");
	assert_int_equal(p->index, 0);
	assert_int_equal(p->balance, CFG_BAL_LEASTCONN);
	assert_int_equal(p->retries, 4);
	assert_int_equal(p->handoff, CFG_HANDOFF_PROXY_V2);
	assert_int_equal(p->health.check, CFG_CHECK_TCP);
	assert_int_equal(p->health.interval, 3000);
	assert_int_equal(p->health.timeout, 1000);
	assert_int_equal(p->health.rise, 4);
	assert_int_equal(p->health.fall, 5);
	assert_string_equal(p->health.ehlo, "checker.example.net");
	assert_int_equal(p->nbackends, 2);
	b = &p->backends[0];
	assert_string_equal(b->name, "mx1");
	assert_string_equal(b->address.text, "192.0.2.11:25");
	assert_int_equal(b->weight, 3);
	assert_int_equal(b->max_sessions, 100);
	assert_false(b->backup);
	assert_int_equal(b->tls, CFG_TLS_NONE);
	assert_ptr_equal(b->tls_context, &c->tls[0]);
	assert_int_equal(b->handoff, CFG_HANDOFF_PROXY_V2); /* the pool's */
	b = &p->backends[1];
	assert_true(b->backup);
	assert_int_equal(b->handoff, CFG_HANDOFF_XCLIENT); /* its own */
	assert_string_equal(b->address.host, "2001:db8::12");
	sin6 = (const struct sockaddr_in6 *)&b->address.ss;
	assert_int_equal(sin6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(sin6->sin6_port), 2525);
	assert_int_equal(b->address.len, sizeof(struct sockaddr_in6));
	p = &c->pools[1];
	assert_int_equal(p->index, 1);
	assert_int_equal(p->balance, CFG_BAL_EHLO);
	assert_int_equal(p->health.check, CFG_CHECK_NONE);
	assert_string_equal(p->health.ehlo, "mx.example.net"); /* "" = server.hostname */
	assert_string_equal(p->backends[0].address.host, "localhost");

	assert_true(c->alerts.enabled);
	assert_string_equal(c->alerts.smtp.text, "127.0.0.1:25");
	assert_string_equal(c->alerts.from, "mxlb@mx.example.net");
	assert_int_equal(c->alerts.nto, 2);
	assert_string_equal(c->alerts.to[1], "ops@example.net");
	assert_int_equal(c->alerts.events, CFG_EV_BACKEND_DOWN | CFG_EV_POOL_DOWN);
	config_free(c);
}

static void test_defaults(void **state)
{
	char err[CFG_ERR_MAX] = "", host[256] = "";
	struct config *c = load(POOL LISTENER, err);
	const struct cfg_listener *l;
	const struct cfg_pool *p;
	const struct cfg_backend *b;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	(void)state;
	if (!c)
		fail_msg("%s", err);
	assert_int_equal(gethostname(host, sizeof(host) - 1), 0);
	assert_string_equal(c->server.hostname, host);
	assert_int_equal(c->server.workers, cpus > 64 ? 64 : cpus);
	assert_string_equal(c->server.user, "");
	assert_int_equal(c->server.max_sessions, 50000);
	assert_int_equal(c->server.shutdown_timeout, 30000);
	assert_int_equal(c->server.log_level, CFG_LOG_INFO);
	assert_int_equal(c->server.log_format, CFG_LOG_TEXT);
	assert_true(c->server.has_admin);
	assert_string_equal(c->server.admin.text, "127.0.0.1:8025");
	assert_string_equal(c->server.admin_token, "");
	assert_int_equal(c->server.admin_line, 0);
	assert_int_equal(c->ntls, 0);
	assert_false(c->alerts.enabled);

	l = &c->listeners[0];
	assert_int_equal(l->tls, CFG_TLS_NONE);
	assert_null(l->tls_context);
	assert_int_equal(l->tls_mode, CFG_TLS_TERMINATE);
	assert_false(l->require_tls);
	assert_false(l->accept_proxy);
	assert_string_equal(l->banner, "ESMTP");
	assert_int_equal(l->nroutes, 0);
	assert_int_equal(l->max_sessions_per_client, 0);
	assert_int_equal(l->relay, CFG_RELAY_AUTO);
	assert_int_equal(l->timeouts.proxy_header, 5000);
	assert_int_equal(l->timeouts.tls_handshake, 10000);
	assert_int_equal(l->timeouts.command, 300000);
	assert_int_equal(l->timeouts.connect, 5000);
	assert_int_equal(l->timeouts.backend_reply, 30000);
	assert_int_equal(l->timeouts.idle, 600000);

	p = &c->pools[0];
	assert_int_equal(p->balance, CFG_BAL_ROUNDROBIN);
	assert_int_equal(p->retries, 2);
	assert_int_equal(p->handoff, CFG_HANDOFF_NONE);
	assert_int_equal(p->health.check, CFG_CHECK_SMTP);
	assert_int_equal(p->health.interval, 2000);
	assert_int_equal(p->health.timeout, 2000);
	assert_int_equal(p->health.rise, 2);
	assert_int_equal(p->health.fall, 3);
	assert_string_equal(p->health.ehlo, host);
	b = &p->backends[0];
	assert_int_equal(b->weight, 1);
	assert_int_equal(b->max_sessions, 0);
	assert_false(b->backup);
	assert_int_equal(b->tls, CFG_TLS_NONE);
	assert_null(b->tls_context);
	assert_int_equal(b->handoff, CFG_HANDOFF_NONE);
	config_free(c);
}

/* What is not given inside sections that are: a TLS context, health with
 * only some keys, handoff inherited or overridden, admin off. */
static void test_partial_sections(void **state)
{
	static const char y[] =
		"server: {hostname: h.example, workers: 2, admin: {listen: \"\"}}\n"
		"tls: {t: {}}\n"
		"pools:\n"
		"  - name: p\n"
		"    handoff: xclient\n"
		"    health: {rise: 5}\n"
		"    backends:\n"
		"      - {name: a, address: \"1.2.3.4:25\"}\n"
		"      - {name: b, address: \"1.2.3.4:26\", handoff: none}\n"
		"      - {name: c, address: \"1.2.3.4:27\", handoff: proxy_v1}\n" LISTENER;
	char err[CFG_ERR_MAX] = "";
	struct config *c = load(y, err);
	const struct cfg_pool *p;

	(void)state;
	if (!c)
		fail_msg("%s", err);
	assert_string_equal(c->server.hostname, "h.example");
	assert_int_equal(c->server.workers, 2);
	assert_false(c->server.has_admin);
	assert_int_equal(c->ntls, 1);
	assert_int_equal(c->tls[0].ncerts, 0);
	assert_int_equal(c->tls[0].min_version, 0x0303);
	assert_string_equal(c->tls[0].ciphers, "");
	assert_true(c->tls[0].session_tickets);
	assert_null(c->tls[0].ca);
	assert_true(c->tls[0].verify);
	assert_string_equal(c->tls[0].server_name, "");
	p = &c->pools[0];
	assert_int_equal(p->health.check, CFG_CHECK_SMTP);
	assert_int_equal(p->health.rise, 5);
	assert_int_equal(p->health.fall, 3);
	assert_string_equal(p->health.ehlo, "h.example");
	assert_int_equal(p->backends[0].handoff, CFG_HANDOFF_XCLIENT);
	assert_int_equal(p->backends[1].handoff, CFG_HANDOFF_NONE);
	assert_int_equal(p->backends[2].handoff, CFG_HANDOFF_PROXY_V1);
	config_free(c);
}

/* 107 characters: with the leading "/", one more than sun_path holds */
#define LONG_PATH                                                                             \
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" \
	"aaaaaaaaaaaaaaaaaaaaaaaa"

/* The admin server on a unix socket, and addresses that share a port
 * without overlapping; what counts as reachable from this host only. */
static void test_admin_addresses(void **state)
{
	static const char unix_yaml[] =
		"server:\n  admin: {listen: \"unix:/run/mxlb/admin.sock\"}\n" POOL LISTENER;
	static const char shared_port[] =
		"server:\n  admin: {listen: \"127.0.0.2:25\"}\n" POOL
		"listeners: [{name: l, listen: [\"127.0.0.1:25\", \"[::]:25\"], pool: p}]\n";
	char err[CFG_ERR_MAX] = "";
	struct config *c = load(unix_yaml, err);
	const struct sockaddr_un *sun;
	struct cfg_addr a;

	(void)state;
	if (!c)
		fail_msg("%s", err);
	sun = (const struct sockaddr_un *)&c->server.admin.ss;
	assert_true(c->server.has_admin);
	assert_int_equal(sun->sun_family, AF_UNIX);
	assert_string_equal(sun->sun_path, "/run/mxlb/admin.sock");
	assert_int_equal(c->server.admin.len, offsetof(struct sockaddr_un, sun_path) +
						      strlen("/run/mxlb/admin.sock") + 1);
	assert_string_equal(c->server.admin.text, "unix:/run/mxlb/admin.sock");
	assert_string_equal(c->server.admin.host, "");
	assert_int_equal(c->server.admin_line, 2);
	assert_int_equal(c->server.admin_column, 19);
	assert_true(config_addr_is_local(&c->server.admin));
	config_free(c);

	c = load(shared_port, err);
	if (!c)
		fail_msg("%s", err);
	config_free(c);

	assert_int_equal(config_parse_addr("127.0.0.1:25", &a), 0);
	assert_true(config_addr_is_local(&a));
	assert_int_equal(config_parse_addr("127.1.2.3:25", &a), 0);
	assert_true(config_addr_is_local(&a));
	assert_int_equal(config_parse_addr("[::1]:25", &a), 0);
	assert_true(config_addr_is_local(&a));
	assert_int_equal(config_parse_addr("0.0.0.0:25", &a), 0);
	assert_false(config_addr_is_local(&a));
	assert_int_equal(config_parse_addr("[::]:25", &a), 0);
	assert_false(config_addr_is_local(&a));
	assert_int_equal(config_parse_addr("192.0.2.1:25", &a), 0);
	assert_false(config_addr_is_local(&a));
	assert_int_equal(config_parse_addr("[::ffff:127.0.0.1]:25", &a), 0);
	assert_false(config_addr_is_local(&a)); /* a V6ONLY socket cannot bind it anyway */
}

/* Each bad input: the text, and the "FILE:LINE:COLUMN:" and a word the
 * error must have. */
static const struct bad {
	const char *yaml;
	const char *where;
	const char *word;
} bads[] = {
	/* YAML syntax, at libyaml's problem mark */
	{ "listeners: [\n  {name: a\n", "t.yaml:3:1:", "flow" },
	{ "server:\n  hostname: 'mx\n", "t.yaml:3:1:", "quoted scalar" },
	{ "server:\n\thostname: mx\n", "t.yaml:2:1:", "cannot start any token" },
	{ "server: {}\nnonsense: [\n", "t.yaml:3:1:", "flow" },
	/* the document */
	{ "", "t.yaml:1:1:", "no configuration" },
	{ "# nothing but a comment\n", "t.yaml:1:1:", "no configuration" },
	{ "~\n", "t.yaml:1:1:", "no configuration" },
	{ "server: {}\n---\nserver: {}\n", "t.yaml:2:1:", "only one YAML document" },
	{ "- a\n", "t.yaml:1:1:", "expected a mapping" },
	{ "just words\n", "t.yaml:1:1:", "expected a mapping" },
	{ POOL, "t.yaml:1:1:", "missing required key \"listeners\"" },
	{ LISTENER, "t.yaml:1:1:", "missing required key \"pools\"" },
	/* aliases, at the alias */
	{ POOL LISTENER "server: &s {hostname: a}\nalerts: *s\n", "t.yaml:4:9:", "aliases" },
	{ "pools: &p [*p]\n", "t.yaml:1:12:", "aliases" },
	/* unknown keys, naming the key and the section */
	{ "servers: {}\n", "t.yaml:1:1:", "unknown key \"servers\" in the top level" },
	{ "server:\n  hostnam: x\n", "t.yaml:2:3:", "unknown key \"hostnam\" in server" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, foo: 1}]\n",
	  "t.yaml:2:56:", "unknown key \"foo\" in listener" },
	{ "pools: [{name: p, backends: [{name: b, address: \"1.2.3.4:25\", port: 25}]}]\n",
	  "t.yaml:1:63:", "unknown key \"port\" in backend" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, timeouts: {data: 1s}}]\n",
	  "t.yaml:2:67:", "unknown key \"data\" in timeouts" },
	{ "tls: {t: {cert: x}}\n", "t.yaml:1:11:", "unknown key \"cert\" in tls context" },
	/* wrong types */
	{ "server:\n  max_sessions: [1]\n", "t.yaml:2:17:", "expected a scalar, found a list" },
	{ "server: [1]\n", "t.yaml:1:9:", "expected a mapping, found a list" },
	{ "server:\n  log: info\n", "t.yaml:2:8:", "expected a mapping, found a scalar" },
	{ POOL "listeners: {name: l}\n", "t.yaml:2:12:", "expected a list, found a mapping" },
	{ "pools: [{name: p, backends: {name: b}}]\n", "t.yaml:1:29:", "expected a list" },
	{ "server: {? [a] : b}\n", "t.yaml:1:12:", "expected a scalar" },
	{ "server:\n  hostname: \"mx\\0evil\"\n", "t.yaml:2:13:", "NUL" },
	{ "server:\n  \"hostname\\0\": mx\n", "t.yaml:2:3:", "NUL" },
	/* booleans */
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, require_tls: maybe}]\n",
	  "t.yaml:2:69:", "expected true or false" },
	{ "tls: {t: {verify: 1}}\n", "t.yaml:1:19:", "true or false" },
	/* integers */
	{ "server:\n  workers: many\n", "t.yaml:2:12:", "whole number" },
	{ "server:\n  workers: 0x10\n", "t.yaml:2:12:", "whole number" },
	{ "server:\n  workers: \" 2\"\n", "t.yaml:2:12:", "whole number" },
	{ "pools: [{name: p, backends: [{name: b, address: \"1.2.3.4:25\", weight: -1}]}]\n",
	  "t.yaml:1:71:", "whole number" },
	{ "server:\n  workers: 1000\n", "t.yaml:2:12:", "out of range" },
	{ "server:\n  max_sessions: 0\n", "t.yaml:2:17:", "out of range" },
	{ "server:\n  max_sessions: 99999999999999999999999\n", "t.yaml:2:17:", "out of range" },
	{ "pools: [{name: p, retries: 16, backends: [{name: b, address: \"1.2.3.4:25\"}]}]\n",
	  "t.yaml:1:28:", "out of range" },
	{ "pools: [{name: p, health: {fall: 0}, backends: [{name: b, address: \"1.2.3.4:25\"}]}]\n",
	  "t.yaml:1:34:", "out of range" },
	/* durations */
	{ "server:\n  shutdown_timeout: 5\n", "t.yaml:2:21:", "bad duration" },
	{ "server:\n  shutdown_timeout: -1s\n", "t.yaml:2:21:", "bad duration" },
	{ "server:\n  shutdown_timeout: 5x\n", "t.yaml:2:21:", "bad duration" },
	{ "server:\n  shutdown_timeout: 1.5s\n", "t.yaml:2:21:", "bad duration" },
	{ "server:\n  shutdown_timeout: 99999999h\n", "t.yaml:2:21:", "bad duration" },
	{ "server:\n  shutdown_timeout: 4294967296ms\n", "t.yaml:2:21:", "bad duration" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, timeouts: {idle: 0s}}]\n",
	  "t.yaml:2:73:", "more than 0" },
	/* addresses */
	{ "server:\n  admin: {listen: \"127.0.0.1:0\"}\n", "t.yaml:2:19:", "bad address" },
	{ "server:\n  admin: {listen: \"127.0.0.1:65536\"}\n", "t.yaml:2:19:", "bad address" },
	{ "server:\n  admin: {listen: \"127.0.0.1\"}\n", "t.yaml:2:19:", "bad address" },
	{ "server:\n  admin: {listen: \"127.0.0.1:+25\"}\n", "t.yaml:2:19:", "bad address" },
	{ "server:\n  admin: {listen: \"::1:25\"}\n", "t.yaml:2:19:", "bad address" },
	{ "server:\n  admin: {listen: \"[::1]25\"}\n", "t.yaml:2:19:", "bad address" },
	{ "server:\n  admin: {listen: \"[127.0.0.1]:25\"}\n", "t.yaml:2:19:", "bad address" },
	{ "server:\n  admin: {listen: \"[]:25\"}\n", "t.yaml:2:19:", "bad address" },
	{ "server:\n  admin: {listen: \"unix:run/admin.sock\"}\n",
	  "t.yaml:2:19:", "absolute path" },
	{ "server:\n  admin: {listen: \"unix:\"}\n", "t.yaml:2:19:", "absolute path" },
	{ "server:\n  admin: {listen: \"unix:/" LONG_PATH "\"}\n",
	  "t.yaml:2:19:", "at most 107 characters" },
	/* the admin token: long enough, and nothing that breaks a header */
	{ "server:\n  admin: {token: short}\n", "t.yaml:2:18:", "16 to 256 characters" },
	{ "server:\n  admin: {token: \"0123456789abcdef 0123\"}\n",
	  "t.yaml:2:18:", "printable ASCII" },
	{ "server:\n  admin: {token: \"0123456789abcdef\\r\\nX: y\"}\n",
	  "t.yaml:2:18:", "printable ASCII" },
	{ "server:\n  admin: {token: [a]}\n", "t.yaml:2:18:", "expected a scalar" },
	{ "server:\n  admin: {tokens: x}\n",
	  "t.yaml:2:11:", "unknown key \"tokens\" in server.admin" },
	/* one owner per address: the admin server and a listener, at the listener's */
	{ "server:\n  admin: {listen: \"127.0.0.1:25\"}\n" POOL LISTENER,
	  "t.yaml:4:31:", "taken by the admin server" },
	{ "server:\n  admin: {listen: \"0.0.0.0:25\"}\n" POOL LISTENER,
	  "t.yaml:4:31:", "taken by the admin server" },
	{ "server:\n  admin: {listen: \"127.0.0.1:26\"}\n" POOL
	  "listeners: [{name: l, listen: [\"127.0.0.1:25\", \"0.0.0.0:26\"], pool: p}]\n",
	  "t.yaml:4:48:", "taken by the admin server" },
	{ "server:\n  admin: {listen: \"[::1]:25\"}\n" POOL
	  "listeners: [{name: l, listen: \"[::]:25\", pool: p}]\n",
	  "t.yaml:4:31:", "taken by the admin server" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:8025\", pool: p}]\n",
	  "t.yaml:2:31:", "(server.admin.listen: 127.0.0.1:8025)" },
	{ "pools: [{name: p, backends: [{name: b, address: \"300.1.1.1:25\"}]}]\n",
	  "t.yaml:1:49:", "bad address" },
	{ "pools: [{name: p, backends: [{name: b, address: \"no-such-host.invalid:25\"}]}]\n",
	  "t.yaml:1:49:", "the host name \"no-such-host.invalid\" does not resolve" },
	/* CIDR */
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, routes: [{client: "
	       "\"10.0.0.0/33\", pool: p}]}]\n",
	  "t.yaml:2:74:", "bad CIDR" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, routes: [{client: "
	       "\"2001:db8::/129\", pool: p}]}]\n",
	  "t.yaml:2:74:", "bad CIDR" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, routes: [{client: "
	       "\"10.0.0/8\", pool: p}]}]\n",
	  "t.yaml:2:74:", "bad CIDR" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, routes: [{client: "
	       "\"10.0.0.0/8x\", pool: p}]}]\n",
	  "t.yaml:2:74:", "bad CIDR" },
	/* enumerations, listing what is allowed */
	{ "server:\n  log: {level: loud}\n", "t.yaml:2:16:", "error, warn, info, debug" },
	{ "server:\n  log: {format: xml}\n", "t.yaml:2:17:", "text, json" },
	{ "pools: [{name: p, balance: fastest, backends: [{name: b, address: \"1.2.3.4:25\"}]}]\n",
	  "t.yaml:1:28:", "roundrobin, leastconn, source, ehlo, random" },
	{ "pools: [{name: p, handoff: proxy_v3, backends: [{name: b, address: \"1.2.3.4:25\"}]}]\n",
	  "t.yaml:1:28:", "none, proxy_v1, proxy_v2, xclient" },
	{ "pools: [{name: p, health: {check: ping}, backends: [{name: b, address: "
	  "\"1.2.3.4:25\"}]}]\n",
	  "t.yaml:1:35:", "smtp, tcp, none" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, tls: ssl}]\n",
	  "t.yaml:2:61:", "none, starttls, implicit" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, relay: zerocopy}]\n",
	  "t.yaml:2:63:", "auto, copy, splice" },
	{ "tls:\n  t: {min_version: \"1.1\"}\n", "t.yaml:2:20:", "1.2, 1.3" },
	{ POOL LISTENER "alerts: {smtp: \"127.0.0.1:25\", from: a@b, to: [c@d], events: [boom]}\n",
	  "t.yaml:3:63:", "backend_down, backend_up, pool_down" },
	/* duplicates */
	{ "server:\n  hostname: a\n  hostname: b\n", "t.yaml:3:3:", "duplicate key \"hostname\"" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n"
	  "  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n",
	  "t.yaml:3:12:", "duplicate pool \"p\"" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}, "
	  "{name: b, address: \"1.2.3.5:25\"}]}\n",
	  "t.yaml:2:67:", "duplicate backend \"b\"" },
	{ POOL "listeners:\n  - {name: l, listen: \"127.0.0.1:25\", pool: p}\n"
	       "  - {name: l, listen: \"127.0.0.1:26\", pool: p}\n",
	  "t.yaml:4:12:", "duplicate listener \"l\"" },
	{ "tls:\n  t: {}\n  u: {}\n  t: {verify: false}\n", "t.yaml:4:3:", "duplicate" },
	/* references */
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: q}]\n",
	  "t.yaml:2:53:", "no pool named \"q\"" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, routes: [{pool: q}]}]\n",
	  "t.yaml:2:72:", "no pool named \"q\"" },
	{ "pools: [{name: p, backends: [{name: b, address: \"1.2.3.4:25\", tls_context: x}]}]\n",
	  "t.yaml:1:76:", "no tls context named \"x\"" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, tls_context: x}]\n",
	  "t.yaml:2:69:", "no tls context named \"x\"" },
	/* required keys, at the mapping that lacks them */
	{ POOL "listeners: [{listen: \"127.0.0.1:25\", pool: p}]\n",
	  "t.yaml:2:13:", "missing required key \"name\"" },
	{ POOL "listeners:\n  - {name: l, pool: p}\n",
	  "t.yaml:3:5:", "missing required key \"listen\"" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\"}]\n",
	  "t.yaml:2:13:", "missing required key \"pool\"" },
	{ "pools: [{backends: [{name: b, address: \"1.2.3.4:25\"}]}]\n",
	  "t.yaml:1:9:", "missing required key \"name\"" },
	{ "pools: [{name: p}]\n", "t.yaml:1:9:", "missing required key \"backends\"" },
	{ "pools: [{name: p, backends: [{address: \"1.2.3.4:25\"}]}]\n",
	  "t.yaml:1:30:", "missing required key \"name\"" },
	{ "pools:\n  - {name: p, backends: [{name: b}]}\n",
	  "t.yaml:2:26:", "missing required key \"address\"" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, routes: [{ehlo: x}]}]\n",
	  "t.yaml:2:65:", "missing required key \"pool\"" },
	{ "tls: {t: {certificates: [{cert: tests/unit/configs/placeholder.pem}]}}\n",
	  "t.yaml:1:26:", "missing required key \"key\"" },
	{ POOL LISTENER "alerts:\n  from: a@b\n  to: [c@d]\n",
	  "t.yaml:4:3:", "missing required key \"smtp\"" },
	{ POOL LISTENER "alerts: {smtp: \"127.0.0.1:25\", to: [c@d]}\n",
	  "t.yaml:3:9:", "missing required key \"from\"" },
	{ POOL LISTENER "alerts: {smtp: \"127.0.0.1:25\", from: a@b}\n",
	  "t.yaml:3:9:", "missing required key \"to\"" },
	/* empty lists */
	{ "pools:\n  - name: p\n    backends: []\n", "t.yaml:3:15:", "no backends" },
	{ POOL "listeners:\n  - {name: l, listen: [], pool: p}\n",
	  "t.yaml:3:23:", "at least one address" },
	{ POOL "listeners: []\n", "t.yaml:2:12:", "at least one listener" },
	{ POOL LISTENER "alerts: {smtp: \"127.0.0.1:25\", from: a@b, to: []}\n",
	  "t.yaml:3:9:", "at least one recipient" },
	/* TLS on a listener or backend needs a context */
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, tls: starttls}]\n",
	  "t.yaml:2:61:", "needs a tls_context" },
	{ POOL "listeners: [{name: l, tls: implicit, listen: \"127.0.0.1:465\", pool: p}]\n",
	  "t.yaml:2:28:", "needs a tls_context" },
	{ "pools: [{name: p, backends: [{name: b, address: \"1.2.3.4:25\", tls: starttls}]}]\n",
	  "t.yaml:1:68:", "needs a tls_context" },
	/* an address listened on twice, at the second one */
	{ POOL "listeners:\n  - {name: l, listen: [\"127.0.0.1:25\", \"127.0.0.1:25\"], pool: p}\n",
	  "t.yaml:3:40:", "listened on twice" },
	{ POOL "listeners:\n  - {name: l, listen: \"127.0.0.1:25\", pool: p}\n"
	       "  - {name: m, listen: [\"[::1]:25\", \"127.0.0.1:25\"], pool: p}\n",
	  "t.yaml:4:36:", "listened on twice" },
	/* names and values with characters that do not belong */
	{ "pools: [{name: \"a b\", backends: [{name: b, address: \"1.2.3.4:25\"}]}]\n",
	  "t.yaml:1:16:", "not allowed in names" },
	{ "server: {hostname: \"\"}\n", "t.yaml:1:20:", "1 to 128 characters" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, banner: \"a\\r\\nb\"}]\n",
	  "t.yaml:2:64:", "control characters" },
	{ POOL LISTENER "alerts: {smtp: \"127.0.0.1:25\", from: a@b, to: [\"c d@e\"]}\n",
	  "t.yaml:3:48:", "not a mail address" },
	{ "server:\n  user: no-such-user-here\n", "t.yaml:2:9:", "no user named" },
	/* files of TLS contexts */
	{ "tls:\n  t: {ca: /nonexistent/ca.pem}\n", "t.yaml:2:11:", "/nonexistent/ca.pem" },
	{ "tls:\n  t: {ca: tests/unit}\n", "t.yaml:2:11:", "not a regular file" },
	{ "tls:\n  t:\n    certificates:\n      - cert: tests/unit/configs/placeholder.pem\n"
	  "        key: /nonexistent/k.pem\n",
	  "t.yaml:5:14:", "/nonexistent/k.pem" },
	/* TLS that cannot work as written */
	{ "tls: {t: {}}\n" POOL
	  "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, tls: starttls, "
	  "tls_context: t}]\n",
	  "t.yaml:3:61:", "has no certificates to terminate TLS with" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:465\", pool: p, tls: implicit}]\n",
	  "t.yaml:2:62:", "tls: implicit needs a tls_context" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, tls_mode: passthrough}]\n",
	  "t.yaml:2:66:", "passthrough needs tls: starttls or implicit" },
	{ "pools: [{name: p, handoff: xclient, backends: [{name: b, address: \"1.2.3.4:25\"}]}]\n"
	  "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, tls: starttls, "
	  "tls_mode: passthrough}]\n",
	  "t.yaml:2:81:", "passthrough cannot guard XCLIENT" },
	{ "tls: {t: {}}\n"
	  "pools: [{name: p, backends: [{name: b, address: \"1.2.3.4:25\", tls: implicit, "
	  "tls_context: t}]}]\n"
	  "listeners: [{name: l, listen: \"127.0.0.1:465\", pool: p, tls: implicit, "
	  "tls_mode: passthrough}]\n",
	  "t.yaml:3:82:", "must have tls: none" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, tls: starttls, "
	       "tls_mode: passthrough, bare_newline: normalize}]\n",
	  "t.yaml:2:81:", "bare_newline: normalize reads the client's SMTP" },
	{ "tls: {t: {}}\n" POOL
	  "listeners: [{name: l, listen: \"127.0.0.1:465\", pool: p, tls: implicit, "
	  "tls_mode: passthrough, screen: {pregreet: 3s}}]\n",
	  "t.yaml:3:", "screen.pregreet and screen.dnsbl cannot run" },
	/* SPEC §9 values */
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, "
	       "screen: {dnsbl: {sites: [\"bl.example=127.0.0.[4..2]\"]}}}]\n",
	  "t.yaml:2:", "bad site \"bl.example=127.0.0.[4..2]\"" },
	{ POOL "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, "
	       "limits: {connection_rate: \"60\"}}]\n",
	  "t.yaml:2:", "is not COUNT/WINDOW" },
	{ "server: {resolver: \"dns.example\"}\n" POOL
	  "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p}]\n",
	  "t.yaml:1:20:", "server.resolver: bad address" },
	{ "pools: [{name: p, handoff: proxy_v2, reuse: {max_idle: 2}, "
	  "backends: [{name: b, address: \"1.2.3.4:25\"}]}]\n"
	  "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p}]\n",
	  "t.yaml:1:", "reuse cannot work with handoff proxy_v2" },
};

/* Every case runs, and each mismatch is printed, before the test fails. */
static void test_bad_inputs(void **state)
{
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		char err[CFG_ERR_MAX] = "";
		struct config *c = load(bads[i].yaml, err);

		if (c) {
			config_free(c);
			print_error("case %zu loaded: %s\n", i, bads[i].yaml);
			failed++;
		} else if (strncmp(err, bads[i].where, strlen(bads[i].where)) ||
			   !strstr(err, bads[i].word)) {
			print_error("case %zu: got \"%s\", want \"%s ... %s\"\n", i, err,
				    bads[i].where, bads[i].word);
			failed++;
		}
	}
	assert_int_equal(failed, 0);
}

/* Several independent mistakes: every one, in the order read (server,
 * tls, pools, listeners, alerts; in each, file order), one a line, each at
 * its own FILE:LINE:COLUMN. A single mistake is one line, as before. */
static void test_multiple_errors(void **state)
{
	static const char y[] = "server:\n"
				"  workers: many\n"
				"  hostnam: x\n"
				"pools:\n"
				"  - name: p\n"
				"    retries: 99\n"
				"    backends: [{name: b, address: \"1.2.3.4:0\"}]\n"
				"listeners:\n"
				"  - name: l\n"
				"    listen: \"127.0.0.1:25\"\n"
				"    pool: p\n"
				"    tls_mode: sideways\n"
				"    require_tls: maybe\n"
				"alerts: {smtp: \"127.0.0.1:25\", from: nobody, to: [a@b]}\n";
	static const char want[] =
		"t.yaml:2:12: server.workers: expected a whole number, found \"many\"\n"
		"t.yaml:3:3: unknown key \"hostnam\" in server\n"
		"t.yaml:6:14: retries: 99 is out of range (0 to 15)\n"
		"t.yaml:12:15: tls_mode: \"sideways\" is not one of terminate, passthrough\n"
		"t.yaml:13:18: require_tls: expected true or false, found \"maybe\"\n"
		"t.yaml:14:38: alerts.from: \"nobody\" is not a mail address";
	/* not yet the backend's port 0: a pool's backends are read once the
	 * pool's own keys are right (section_pools.c) */
	char err[CFG_ERR_MAX] = "";

	(void)state;
	assert_null(load(y, err));
	assert_string_equal(err, want);

	/* one mistake: one line, no newline */
	assert_null(load("server:\n  workers: two\n" POOL LISTENER, err));
	assert_string_equal(err, "t.yaml:2:12: server.workers: expected a whole number, found "
				 "\"two\"");
	/* every missing key of a mapping, and the sections still read */
	assert_null(load(POOL "listeners: [{listen: \"127.0.0.1:25\"}]\nalerts: {}\n", err));
	assert_string_equal(err, "t.yaml:2:13: listener: missing required key \"name\"\n"
				 "t.yaml:2:13: listener: missing required key \"pool\"\n"
				 "t.yaml:3:9: alerts: missing required key \"smtp\"\n"
				 "t.yaml:3:9: alerts: missing required key \"from\"\n"
				 "t.yaml:3:9: alerts: missing required key \"to\"");
	/* duplicate and unknown keys do not hide the next ones */
	assert_null(load("server: {workers: 1, workers: 2, x: 1, max_sessions: 0}\n" POOL LISTENER,
			 err));
	assert_string_equal(err, "t.yaml:1:22: duplicate key \"workers\" in server\n"
				 "t.yaml:1:34: unknown key \"x\" in server\n"
				 "t.yaml:1:54: server.max_sessions: 0 is out of range (1 to "
				 "10000000)");
}

/* What only follows from an earlier mistake is not reported: a pool
 * section that could not name every pool leaves the listeners unread
 * (they would name pools it never named); a missing section the same.
 * Every pool is read, so a bad pool before another stops nothing. */
static void test_no_follow_on_errors(void **state)
{
	static const char stopped[] =
		"pools: {q: {backends: [{name: b, address: \"1.2.3.4:25\"}]}}\n"
		"listeners: [{name: l, listen: \"127.0.0.1:25\", pool: q, banner: \"\\x01\"}]\n";
	static const char first_bad[] =
		"pools:\n"
		"  - {name: p, retries: 99, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n"
		"  - {name: q, backends: [{name: b, address: \"1.2.3.4:25\"}, "
		"{name: c, address: \"1.2.3.4:0\"}]}\n"
		"listeners: [{name: l, listen: \"127.0.0.1:25\", pool: q, banner: \"\\x01\"}]\n";
	static const char named[] =
		"pools:\n"
		"  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n"
		"  - {name: q, retries: 99, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n"
		"listeners: [{name: l, listen: \"127.0.0.1:25\", pool: q, banner: \"\\x01\"}]\n";
	char err[CFG_ERR_MAX] = "";

	(void)state;
	assert_null(load(stopped, err));
	assert_string_equal(err, "t.yaml:1:8: pools: expected a list, found a mapping");
	/* a bad pool, a bad backend of the next pool, a bad listener: all three */
	assert_null(load(first_bad, err));
	assert_string_equal(err,
			    "t.yaml:2:24: retries: 99 is out of range (0 to 15)\n"
			    "t.yaml:3:79: backend address: bad address \"1.2.3.4:0\": the port "
			    "must be a number from 1 to 65535\n"
			    "t.yaml:4:64: banner: control characters are not allowed");
	/* the pool that failed is the last and has its name: listeners are read */
	assert_null(load(named, err));
	assert_string_equal(err, "t.yaml:3:24: retries: 99 is out of range (0 to 15)\n"
				 "t.yaml:4:64: banner: control characters are not allowed");
	assert_null(load("listeners: [{name: l, listen: \"127.0.0.1:25\", pool: q}]\n", err));
	assert_string_equal(err, "t.yaml:1:1: missing required key \"pools\"");
	/* no TLS context could be read: nothing that names one is */
	assert_null(load("tls: t\n"
			 "pools: [{name: p, backends: [{name: b, address: \"1.2.3.4:25\", "
			 "tls_context: t}]}]\n" LISTENER "alerts: {smtp: x}\n",
			 err));
	assert_string_equal(err, "t.yaml:1:6: tls: expected a mapping, found a scalar\n"
				 "t.yaml:4:16: alerts.smtp: bad address \"x\" (host:port or "
				 "[v6]:port, with a port of 1 to 65535)\n"
				 "t.yaml:4:9: alerts: missing required key \"from\"\n"
				 "t.yaml:4:9: alerts: missing required key \"to\"");
}

/* At most CFG_ERRORS_MAX lines, then one that says there were more. */
static void test_error_limit(void **state)
{
	char y[4096] = "server:\n", err[CFG_ERR_MAX] = "", *line;
	int lines = 0;

	(void)state;
	for (int i = 0; i < 30; i++)
		sprintf(y + strlen(y), "  bad%d: 1\n", i);
	strcat(y, POOL LISTENER);
	assert_null(load(y, err));
	for (line = err; line; line = strchr(line, '\n')) {
		line += *line == '\n';
		lines++;
		if (lines <= 20)
			assert_true(!strncmp(line, "t.yaml:", 7));
	}
	assert_int_equal(lines, 21);
	assert_non_null(strstr(err, "t.yaml:21:3: unknown key \"bad19\" in server\n"
				    "t.yaml: more errors not shown (at most 20 are reported)"));
	assert_null(strstr(err, "bad20"));

	/* an err too small for all: whole lines only, then the same note */
	assert_null(config_load_buffer("t.yaml", y, strlen(y), err, 200));
	assert_true(strlen(err) < 200);
	assert_non_null(strstr(err, "t.yaml:2:3: unknown key \"bad0\" in server\n"));
	assert_int_equal(err[strlen(err) - 1], ')');
}

/* The hints libyaml's messages lack, and which part of an address is
 * wrong. */
static void test_hints(void **state)
{
	static const struct {
		const char *yaml, *want;
	} cases[] = {
		{ "server:\n\thostname: mx\n",
		  "t.yaml:2:1: found character that cannot start any token while scanning for "
		  "the next token (YAML does not allow tabs for indentation)" },
		{ "server:\n  a: 1\n\t\n", "(YAML does not allow tabs for indentation)" },
		{ POOL "listeners: [{name: l, listen: [::1]:25, pool: p}]\n",
		  "t.yaml:2:32: did not find expected node content while parsing a flow node "
		  "(quote IPv6 addresses: \"[::1]:25\")" },
		{ POOL "listeners:\n  - name: l\n    listen: [::]:2525\n    pool: p\n",
		  "(quote IPv6 addresses: \"[::]:2525\")" },
		{ "pools:\n  - name: p\n    backends:\n      - name: b\n"
		  "        address: [2001:db8::1]:25\n" LISTENER,
		  "(quote IPv6 addresses: \"[2001:db8::1]:25\")" },
		{ "pools: [{name: p, backends: [{name: b, address: "
		  "\"no-such-host.invalid:25\"}]}]\n",
		  "t.yaml:1:49: backend address: bad address \"no-such-host.invalid:25\": the host "
		  "name \"no-such-host.invalid\" does not resolve (" },
		{ "pools: [{name: p, backends: [{name: b, address: \"localhost:99999\"}]}]\n",
		  "t.yaml:1:49: backend address: bad address \"localhost:99999\": the port must be "
		  "a number from 1 to 65535" },
		{ "pools: [{name: p, backends: [{name: b, address: "
		  "\"no-such-host.invalid:0\"}]}]\n",
		  "the port must be a number from 1 to 65535" },
		{ "pools: [{name: p, backends: [{name: b, address: \"[127.0.0.1]:25\"}]}]\n",
		  "brackets are for IPv6 addresses only" },
		{ "pools: [{name: p, backends: [{name: b, address: \"::1:25\"}]}]\n",
		  "t.yaml:1:49: backend address: bad address \"::1:25\" (host:port or [v6]:port, "
		  "with a port of 1 to 65535)" },
	};
	char err[CFG_ERR_MAX] = "";
	int failed = 0;

	(void)state;
	/* no hint where the address is quoted already */
	assert_null(load(POOL "listeners: [{name: l, listen: [\"[::1]:25\", pool: p}]\n", err));
	assert_null(strstr(err, "quote"));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *c = load(cases[i].yaml, err);

		if (c) {
			config_free(c);
			print_error("case %zu loaded\n", i);
			failed++;
		} else if (!strstr(err, cases[i].want)) {
			print_error("case %zu: got \"%s\", want \"%s\"\n", i, err, cases[i].want);
			failed++;
		}
	}
	assert_int_equal(failed, 0);
}

/* A duplicate address names both places. */
static void test_duplicate_places(void **state)
{
	char err[CFG_ERR_MAX] = "";

	(void)state;
	assert_null(load(POOL "listeners:\n  - {name: l, listen: \"127.0.0.1:25\", pool: p}\n"
			      "  - {name: m, listen: [\"[::1]:25\", \"127.0.0.1:25\"], pool: p}\n",
			 err));
	assert_string_equal(err, "t.yaml:4:36: 127.0.0.1:25 is listened on twice (as "
				 "127.0.0.1:25, at t.yaml:3:23)");
}

/* Valid but likely wrong: a pool that can take no session, a backend that
 * is mxlb itself; and what is not such a loop. */
static void test_warnings(void **state)
{
	static const char zero[] = "pools:\n"
				   "  - name: p\n"
				   "    backends:\n"
				   "      - {name: a, address: \"127.0.0.1:2600\", weight: 0}\n"
				   "      - {name: b, address: \"127.0.0.1:2601\", weight: 0}\n"
				   "  - name: q\n"
				   "    backends:\n"
				   "      - {name: a, address: \"127.0.0.1:2600\", weight: 0}\n"
				   "      - {name: b, address: \"127.0.0.1:2601\"}\n" LISTENER;
	static const char loop[] =
		"pools:\n"
		"  - name: p\n"
		"    backends:\n"
		"      - {name: self, address: \"127.0.0.1:2525\"}\n"
		"      - {name: other, address: \"127.0.0.1:2526\"}\n"
		"      - {name: wild, address: \"127.0.0.2:2527\"}\n"
		"      - {name: far, address: \"192.0.2.1:2527\"}\n"
		"listeners:\n"
		"  - {name: mx, listen: [\"127.0.0.1:2525\"], pool: p}\n"
		"  - {name: all, listen: [\"[::1]:2600\", \"0.0.0.0:2527\"], pool: p}\n";
	char err[CFG_ERR_MAX] = "";
	struct config *c;

	(void)state;
	c = load(POOL LISTENER, err);
	if (!c)
		fail_msg("%s", err);
	assert_string_equal(c->warnings, "");
	config_free(c);

	c = load(zero, err);
	if (!c)
		fail_msg("%s", err);
	assert_string_equal(c->warnings, "t.yaml:2:5: warning: pool \"p\": every backend has "
					 "weight 0, so it takes no session (its clients get 421) "
					 "until an admin sets a weight\n");
	config_free(c);

	c = load(loop, err);
	if (!c)
		fail_msg("%s", err);
	assert_string_equal(c->warnings,
			    "t.yaml:4:31: warning: backend \"self\" of pool \"p\": 127.0.0.1:2525 "
			    "is mxlb's own listener \"mx\" (127.0.0.1:2525 at t.yaml:9:25): its "
			    "sessions would loop back into mxlb\n"
			    "t.yaml:6:31: warning: backend \"wild\" of pool \"p\": 127.0.0.2:2527 "
			    "is mxlb's own listener \"all\" (0.0.0.0:2527 at t.yaml:10:40): its "
			    "sessions would loop back into mxlb\n");
	config_free(c);
}

/* --dump's YAML loads again to the same configuration: dumping that gives
 * the same text; the token is never in it. */
static void dump_twice(const char *path, const char *yaml)
{
	char err[CFG_ERR_MAX] = "", *one = NULL, *two = NULL;
	size_t n1 = 0, n2 = 0;
	struct config *c = path ? config_load(path, err, sizeof(err)) : load(yaml, err);
	FILE *f;

	if (!c)
		fail_msg("%s", err);
	f = open_memstream(&one, &n1);
	config_dump(f, c);
	fclose(f);
	config_free(c);
	assert_null(strstr(one, "full-yaml-token"));
	c = config_load_buffer("dump.yaml", one, n1, err, sizeof(err));
	if (!c)
		fail_msg("%s\n%s", err, one);
	f = open_memstream(&two, &n2);
	config_dump(f, c);
	fclose(f);
	config_free(c);
	/* the first line names the file */
	assert_string_equal(strchr(one, '\n'), strchr(two, '\n'));
	free(one);
	free(two);
}

static void test_dump_round_trip(void **state)
{
	(void)state;
	dump_twice("tests/unit/configs/full.yaml", NULL);
	dump_twice(NULL, POOL LISTENER);
	dump_twice(NULL,
		   "server: {admin: {listen: \"unix:/run/x.sock\", token: "
		   "\"0123456789abcdef0123\"}}\n"
		   "tls: {t: {}}\n" POOL
		   "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p, banner: "
		   "\"caf\xc3\xa9 \\\"q\\\" \\\\\", timeouts: {idle: 1500ms}, routes: [{ehlo: "
		   "\"*.x\", client: \"10.0.0.0/8\", sni: s.x, pool: p}]}]\n");
}

/* Bad files on disk: the path is the FILE of the message. */
static void test_bad_files(void **state)
{
	static const struct {
		const char *path, *want, *word;
	} files[] = {
		{ "tests/unit/configs/bad_unknown_key.yaml",
		  "tests/unit/configs/bad_unknown_key.yaml:9:5:",
		  "unknown key \"listn\" in listener" },
		{ "tests/unit/configs/bad_syntax.yaml",
		  "tests/unit/configs/bad_syntax.yaml:5:1:", "" },
		{ "tests/unit/configs/bad_duration.yaml",
		  "tests/unit/configs/bad_duration.yaml:8:17:", "bad duration \"5\"" },
		{ "/nonexistent/mxlb.yaml", "/nonexistent/mxlb.yaml:1:1:", "cannot open" },
		{ "tests/unit/configs", "tests/unit/configs:1:1:", "cannot read" },
		{ "/dev/null", "/dev/null:1:1:", "no configuration" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char err[CFG_ERR_MAX] = "";
		struct config *c = config_load(files[i].path, err, sizeof(err));

		if (c) {
			config_free(c);
			fail_msg("%s loaded", files[i].path);
		}
		if (strncmp(err, files[i].want, strlen(files[i].want)) ||
		    !strstr(err, files[i].word))
			fail_msg("%s: got \"%s\", want \"%s ... %s\"", files[i].path, err,
				 files[i].want, files[i].word);
	}
}

/* Inputs a fuzzer would try: raw NUL bytes, deep nesting, huge scalars. */
static void test_hostile_inputs(void **state)
{
	static const char nul[] = "server:\n  hostname: a\0b\n";
	size_t depth = 100000, big = 1 << 20;
	char err[CFG_ERR_MAX] = "";
	char *text = malloc(2 * depth + big + 64);
	struct config *c;

	(void)state;
	assert_non_null(text);
	c = config_load_buffer("t.yaml", nul, sizeof(nul) - 1, err, sizeof(err));
	assert_null(c);
	assert_non_null(strstr(err, "t.yaml:2:"));

	memset(text, '[', depth);
	memset(text + depth, ']', depth);
	c = config_load_buffer("t.yaml", text, 2 * depth, err, sizeof(err));
	assert_null(c);
	assert_non_null(strstr(err, "t.yaml:1:65: nested more than 64 levels"));
	text[0] = '\0'; /* block mappings, each line one deeper */
	for (int i = 0; i < 100; i++)
		sprintf(text + strlen(text), "%*sa:\n", i, "");
	c = config_load_buffer("t.yaml", text, strlen(text), err, sizeof(err));
	assert_null(c);
	assert_non_null(strstr(err, "t.yaml:65:65: nested more than 64 levels"));

	strcpy(text, "server: {hostname: ");
	memset(text + strlen(text), 'a', big);
	strcpy(text + strlen("server: {hostname: ") + big, "}\n");
	c = config_load_buffer("t.yaml", text, strlen(text), err, sizeof(err));
	assert_null(c);
	assert_non_null(strstr(err, "t.yaml:1:20: server.hostname: a name of 1 to"));
	free(text);
}

/* Offline (the fuzz target): numeric hosts and localhost only. */
static void test_resolver_offline(void **state)
{
	static const char y[] =
		"pools: [{name: p, backends: [{name: b, address: \"mail.example.com:25\"}]}]\n";
	char err[CFG_ERR_MAX] = "";
	struct cfg_addr a;

	(void)state;
	config_set_resolver_offline(true);
	assert_null(load(y, err));
	assert_non_null(strstr(err, "t.yaml:1:49: backend address: bad address"));
	assert_int_equal(config_parse_addr("localhost:25", &a), 0);
	assert_int_equal(config_parse_addr("192.0.2.1:25", &a), 0);
	assert_int_equal(config_parse_addr("[2001:db8::1]:25", &a), 0);
	assert_int_equal(config_parse_addr("example.com:25", &a), -1);
	config_set_resolver_offline(false);
}

static void test_parse_duration_size(void **state)
{
	static const struct {
		const char *s;
		int rc;
		uint32_t ms;
	} durs[] = {
		{ "250ms", 0, 250 },
		{ "5s", 0, 5000 },
		{ "10m", 0, 600000 },
		{ "1h", 0, 3600000 },
		{ "0s", 0, 0 },
		{ "4294967295ms", 0, UINT32_MAX },
		{ "1193h", 0, 4294800000u },
		{ "1194h", -1, 0 },
		{ "4294967296ms", -1, 0 },
		{ "5", -1, 0 },
		{ "-1s", -1, 0 },
		{ "5x", -1, 0 },
		{ "1.5s", -1, 0 },
		{ "", -1, 0 },
		{ "s", -1, 0 },
		{ " 5s", -1, 0 },
		{ "5s ", -1, 0 },
		{ "5S", -1, 0 },
		{ "1d", -1, 0 },
		{ "99999999999999999999s", -1, 0 },
	};
	static const struct {
		const char *s;
		int rc;
		uint64_t bytes;
	} sizes[] = {
		{ "512", 0, 512 },
		{ "64k", 0, 65536 },
		{ "64K", 0, 65536 },
		{ "10M", 0, 10485760 },
		{ "1G", 0, 1073741824 },
		{ "0", 0, 0 },
		{ "18446744073709551615", 0, UINT64_MAX },
		{ "18446744073709551616", -1, 0 },
		{ "17179869184G", -1, 0 },
		{ "10MB", -1, 0 },
		{ "k", -1, 0 },
		{ "", -1, 0 },
		{ "-1", -1, 0 },
		{ "1.5M", -1, 0 },
		{ "1T", -1, 0 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(durs) / sizeof(durs[0]); i++) {
		uint32_t ms = 12345;
		int rc = config_parse_duration(durs[i].s, &ms);

		if (rc != durs[i].rc || (rc == 0 && ms != durs[i].ms))
			fail_msg("duration \"%s\": rc %d ms %u", durs[i].s, rc, ms);
	}
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t b = 12345;
		int rc = config_parse_size(sizes[i].s, &b);

		if (rc != sizes[i].rc || (rc == 0 && b != sizes[i].bytes))
			fail_msg("size \"%s\": rc %d bytes %llu", sizes[i].s, rc,
				 (unsigned long long)b);
	}
}

static void test_parse_addr(void **state)
{
	struct cfg_addr a;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&a.ss;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a.ss;
	char text[300];

	(void)state;
	assert_int_equal(config_parse_addr("192.0.2.1:25", &a), 0);
	assert_string_equal(a.text, "192.0.2.1:25");
	assert_string_equal(a.host, "192.0.2.1");
	assert_int_equal(sin->sin_family, AF_INET);
	assert_int_equal(ntohs(sin->sin_port), 25);
	assert_int_equal(ntohl(sin->sin_addr.s_addr), 0xc0000201);
	assert_int_equal(a.len, sizeof(struct sockaddr_in));

	assert_int_equal(config_parse_addr("[2001:db8::1]:65535", &a), 0);
	assert_string_equal(a.text, "[2001:db8::1]:65535");
	assert_string_equal(a.host, "2001:db8::1");
	assert_int_equal(sin6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(sin6->sin6_port), 65535);
	assert_int_equal(sin6->sin6_addr.s6_addr[3], 0xb8);
	assert_int_equal(sin6->sin6_addr.s6_addr[15], 1);
	assert_int_equal(a.len, sizeof(struct sockaddr_in6));

	assert_int_equal(config_parse_addr("[::]:25", &a), 0);
	assert_string_equal(a.host, "::");
	assert_int_equal(config_parse_addr("localhost:2525", &a), 0);
	assert_string_equal(a.host, "localhost");
	assert_int_equal(ntohs(sin->sin_port), 2525);

	assert_int_equal(config_parse_addr("192.0.2.1", &a), -1);
	assert_int_equal(config_parse_addr("192.0.2.1:", &a), -1);
	assert_int_equal(config_parse_addr(":25", &a), -1);
	assert_int_equal(config_parse_addr("192.0.2.1:0", &a), -1);
	assert_int_equal(config_parse_addr("192.0.2.1:65536", &a), -1);
	assert_int_equal(config_parse_addr("192.0.2.1:000025", &a), -1);
	assert_int_equal(config_parse_addr("192.0.2.1:-25", &a), -1);
	assert_int_equal(config_parse_addr("192.0.2.1: 25", &a), -1);
	assert_int_equal(config_parse_addr("2001:db8::1:25", &a), -1);
	assert_int_equal(config_parse_addr("[2001:db8::1]", &a), -1);
	assert_int_equal(config_parse_addr("[2001:db8::1:25", &a), -1);
	assert_int_equal(config_parse_addr("[192.0.2.1]:25", &a), -1);
	assert_int_equal(config_parse_addr("[localhost]:25", &a), -1);
	assert_int_equal(config_parse_addr("no-such-host.invalid:25", &a), -1);
	memset(text, 'a', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	assert_int_equal(config_parse_addr(text, &a), -1);
	memcpy(text + 257, ":25", 4);
	assert_int_equal(config_parse_addr(text, &a), -1);
}

static void test_cidr(void **state)
{
	struct cfg_cidr c;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
	struct sockaddr_un_like {
		sa_family_t family;
	} other = { AF_UNIX };

	(void)state;
	assert_int_equal(config_parse_cidr("192.0.2.77/24", &c), 0);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 24);
	assert_memory_equal(c.addr, "\xc0\x00\x02\x00", 4);
	inet_pton(AF_INET, "192.0.2.200", &sin.sin_addr);
	assert_true(config_cidr_match(&c, (struct sockaddr *)&sin));
	inet_pton(AF_INET, "192.0.3.1", &sin.sin_addr);
	assert_false(config_cidr_match(&c, (struct sockaddr *)&sin));
	inet_pton(AF_INET6, "::ffff:192.0.2.9", &sin6.sin6_addr); /* v4-mapped */
	assert_true(config_cidr_match(&c, (struct sockaddr *)&sin6));
	inet_pton(AF_INET6, "::ffff:192.0.3.9", &sin6.sin6_addr);
	assert_false(config_cidr_match(&c, (struct sockaddr *)&sin6));
	inet_pton(AF_INET6, "::c000:209", &sin6.sin6_addr); /* v4-compatible is not mapped */
	assert_false(config_cidr_match(&c, (struct sockaddr *)&sin6));
	assert_false(config_cidr_match(&c, (struct sockaddr *)&other));

	assert_int_equal(config_parse_cidr("10.1.2.3/13", &c), 0);
	assert_memory_equal(c.addr, "\x0a\x00\x00\x00", 4);
	inet_pton(AF_INET, "10.7.255.255", &sin.sin_addr);
	assert_true(config_cidr_match(&c, (struct sockaddr *)&sin));
	inet_pton(AF_INET, "10.8.0.0", &sin.sin_addr);
	assert_false(config_cidr_match(&c, (struct sockaddr *)&sin));

	assert_int_equal(config_parse_cidr("192.0.2.1", &c), 0); /* one host */
	assert_int_equal(c.prefix, 32);
	inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
	assert_true(config_cidr_match(&c, (struct sockaddr *)&sin));
	inet_pton(AF_INET, "192.0.2.2", &sin.sin_addr);
	assert_false(config_cidr_match(&c, (struct sockaddr *)&sin));

	assert_int_equal(config_parse_cidr("0.0.0.0/0", &c), 0); /* every v4 client */
	assert_true(config_cidr_match(&c, (struct sockaddr *)&sin));
	inet_pton(AF_INET6, "2001:db8::1", &sin6.sin6_addr);
	assert_false(config_cidr_match(&c, (struct sockaddr *)&sin6));

	assert_int_equal(config_parse_cidr("2001:db8:ffff::1/33", &c), 0);
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.prefix, 33);
	assert_memory_equal(c.addr, "\x20\x01\x0d\xb8\x80\0\0\0\0\0\0\0\0\0\0\0", 16);
	inet_pton(AF_INET6, "2001:db8:8000::5", &sin6.sin6_addr);
	assert_true(config_cidr_match(&c, (struct sockaddr *)&sin6));
	inet_pton(AF_INET6, "2001:db8:7fff::5", &sin6.sin6_addr);
	assert_false(config_cidr_match(&c, (struct sockaddr *)&sin6));
	inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
	assert_false(config_cidr_match(&c, (struct sockaddr *)&sin));

	assert_int_equal(config_parse_cidr("::ffff:0:0/96", &c), 0); /* every v4 client */
	assert_true(config_cidr_match(&c, (struct sockaddr *)&sin));

	assert_int_equal(config_parse_cidr("2001:db8::/129", &c), -1);
	assert_int_equal(config_parse_cidr("10.0.0.0/33", &c), -1);
	assert_int_equal(config_parse_cidr("10.0.0.0/", &c), -1);
	assert_int_equal(config_parse_cidr("10.0.0.0/-1", &c), -1);
	assert_int_equal(config_parse_cidr("10.0.0.0/ 8", &c), -1);
	assert_int_equal(config_parse_cidr("10.0.0/8", &c), -1);
	assert_int_equal(config_parse_cidr("/8", &c), -1);
	assert_int_equal(config_parse_cidr("", &c), -1);
	assert_int_equal(config_parse_cidr("example.com/8", &c), -1);
}

static void test_handoff_name(void **state)
{
	(void)state;
	assert_string_equal(config_handoff_name(CFG_HANDOFF_NONE), "none");
	assert_string_equal(config_handoff_name(CFG_HANDOFF_PROXY_V1), "proxy_v1");
	assert_string_equal(config_handoff_name(CFG_HANDOFF_PROXY_V2), "proxy_v2");
	assert_string_equal(config_handoff_name(CFG_HANDOFF_XCLIENT), "xclient");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_file),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_partial_sections),
		cmocka_unit_test(test_admin_addresses),
		cmocka_unit_test(test_bad_inputs),
		cmocka_unit_test(test_multiple_errors),
		cmocka_unit_test(test_no_follow_on_errors),
		cmocka_unit_test(test_error_limit),
		cmocka_unit_test(test_hints),
		cmocka_unit_test(test_duplicate_places),
		cmocka_unit_test(test_warnings),
		cmocka_unit_test(test_dump_round_trip),
		cmocka_unit_test(test_bad_files),
		cmocka_unit_test(test_hostile_inputs),
		cmocka_unit_test(test_resolver_offline),
		cmocka_unit_test(test_parse_duration_size),
		cmocka_unit_test(test_parse_addr),
		cmocka_unit_test(test_cidr),
		cmocka_unit_test(test_handoff_name),
	};
	const char *srcdir = getenv("MXLB_SRCDIR");

	if (srcdir && *srcdir && chdir(srcdir) < 0) {
		perror(srcdir);
		return 1;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
