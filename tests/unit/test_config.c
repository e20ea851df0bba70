/* test_config.c - the configuration loader: a full file, the defaults,
 * and one bad input per error class with its line and column. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include "config/config.h"

static void test_full_file(void **state)
{
	char err[CFG_ERR_MAX] = "";
	struct config *c = config_load("tests/unit/configs/full.yaml", err, sizeof(err));
	const struct cfg_listener *l;
	const struct cfg_pool *p;

	(void)state;
	if (!c)
		fail_msg("%s", err);
	assert_string_equal(c->server.hostname, "mx.example.net");
	assert_int_equal(c->server.workers, 3);
	assert_int_equal(c->server.max_sessions, 1234);
	assert_int_equal(c->server.shutdown_timeout, 45000);
	assert_int_equal(c->server.log_level, CFG_LOG_DEBUG);
	assert_int_equal(c->server.log_format, CFG_LOG_JSON);
	assert_true(c->server.has_admin);
	assert_string_equal(c->server.admin.text, "127.0.0.1:18025");
	assert_int_equal(c->ntls, 2);
	assert_false(c->tls[0].verify);
	assert_string_equal(c->tls[0].server_name, "backend.example.net");
	assert_int_equal(c->tls[1].min_version, 0x0304);
	assert_int_equal(c->tls[1].ncerts, 1);
	assert_false(c->tls[1].session_tickets);
	l = &c->listeners[0];
	assert_int_equal(l->nlisten, 2);
	assert_int_equal(l->listen[1].ss.ss_family, AF_INET6);
	assert_true(l->require_tls);
	assert_true(l->accept_proxy);
	assert_string_equal(l->banner, "ESMTP ready");
	assert_int_equal(l->nroutes, 3);
	assert_string_equal(l->routes[0].ehlo, "*.partner.example");
	assert_ptr_equal(l->routes[0].pool, &c->pools[1]);
	assert_true(l->routes[1].has_client);
	assert_int_equal(l->routes[1].client.prefix, 24);
	assert_int_equal(l->routes[1].client.addr[3], 0); /* host bits masked */
	assert_string_equal(l->routes[2].sni, "submit.example.net");
	assert_int_equal(l->max_sessions_per_client, 7);
	assert_int_equal(l->relay, CFG_RELAY_COPY);
	assert_int_equal(l->timeouts.proxy_header, 250);
	assert_int_equal(l->timeouts.command, 120000);
	assert_int_equal(l->timeouts.idle, 3600000);
	p = &c->pools[0];
	assert_int_equal(p->balance, CFG_BAL_LEASTCONN);
	assert_int_equal(p->retries, 4);
	assert_int_equal(p->health.check, CFG_CHECK_TCP);
	assert_int_equal(p->health.interval, 3000);
	assert_int_equal(p->health.rise, 4);
	assert_string_equal(p->health.ehlo, "checker.example.net");
	assert_int_equal(p->backends[0].weight, 3);
	assert_int_equal(p->backends[0].handoff, CFG_HANDOFF_PROXY_V2); /* the pool's */
	assert_ptr_equal(p->backends[0].tls_context, &c->tls[0]);
	assert_true(p->backends[1].backup);
	assert_int_equal(p->backends[1].handoff, CFG_HANDOFF_XCLIENT);
	assert_string_equal(c->pools[1].health.ehlo, "mx.example.net"); /* server.hostname */
	config_free(c);
}

static void test_defaults(void **state)
{
	static const char y[] = "listeners: [{name: a, listen: \"127.0.0.1:25\", pool: p}]\n"
				"pools: [{name: p, backends: [{name: b, address: \"127.0.0.1:26\"}]}]\n";
	char err[CFG_ERR_MAX] = "";
	struct config *c = config_load_buffer("t.yaml", y, sizeof(y) - 1, err, sizeof(err));

	(void)state;
	if (!c)
		fail_msg("%s", err);
	assert_true(c->server.workers >= 1);
	assert_int_equal(c->server.max_sessions, 50000);
	assert_int_equal(c->server.shutdown_timeout, 30000);
	assert_true(c->server.has_admin);
	assert_string_equal(c->server.admin.text, "127.0.0.1:8025");
	assert_string_equal(c->listeners[0].banner, "ESMTP");
	assert_int_equal(c->listeners[0].timeouts.command, 300000);
	assert_int_equal(c->listeners[0].timeouts.connect, 5000);
	assert_int_equal(c->listeners[0].timeouts.backend_reply, 30000);
	assert_int_equal(c->listeners[0].timeouts.idle, 600000);
	assert_int_equal(c->pools[0].retries, 2);
	assert_int_equal(c->pools[0].balance, CFG_BAL_ROUNDROBIN);
	assert_int_equal(c->pools[0].health.check, CFG_CHECK_SMTP);
	assert_int_equal(c->pools[0].health.fall, 3);
	assert_int_equal(c->pools[0].backends[0].weight, 1);
	config_free(c);
}

/* Each bad input: the text, and the "FILE:LINE:COLUMN:" and a word the
 * error must have. */
static const struct bad {
	const char *yaml;
	const char *where;
	const char *word;
} bads[] = {
	{ "listeners: [\n  {name: a\n", "t.yaml:3:1:", "" }, /* YAML syntax */
	{ "", "t.yaml:1:1:", "no configuration" },
	{ "server: {}\nnonsense: [\n", "t.yaml:", "" },
	{ "server: {}\n---\nserver: {}\n", "t.yaml:3:1:", "only one YAML document" },
	{ "- a\n", "t.yaml:1:1:", "mapping" },
	{ "server:\n  hostnam: x\n", "t.yaml:2:3:", "unknown key \"hostnam\"" },
	{ "server:\n  workers: many\n", "t.yaml:2:12:", "whole number" },
	{ "server:\n  workers: 1000\n", "t.yaml:2:12:", "out of range" },
	{ "server:\n  max_sessions: [1]\n", "t.yaml:2:17:", "expected a scalar" },
	{ "server:\n  shutdown_timeout: 5\n", "t.yaml:2:21:", "bad duration" },
	{ "server:\n  shutdown_timeout: 5x\n", "t.yaml:2:21:", "bad duration" },
	{ "server:\n  shutdown_timeout: 99999999h\n", "t.yaml:2:21:", "bad duration" },
	{ "server:\n  log: {level: loud}\n", "t.yaml:2:16:", "error, warn, info, debug" },
	{ "server:\n  admin: {listen: \"127.0.0.1:0\"}\n", "t.yaml:2:19:", "bad address" },
	{ "server:\n  hostname: a\n  hostname: b\n", "t.yaml:3:3:", "duplicate key" },
	{ "server:\n  user: no-such-user-here\n", "t.yaml:2:9:", "no user named" },
	{ "pools:\n  - name: p\n    backends:\n      - {name: b, address: \"300.1.1.1:25\"}\n",
	  "t.yaml:4:28:", "bad address" },
	{ "pools:\n  - name: p\n    backends: []\n", "t.yaml:3:15:", "no backends" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n"
	  "  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n",
	  "t.yaml:3:5:", "duplicate pool" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}, "
	  "{name: b, address: \"1.2.3.5:25\"}]}\n",
	  "t.yaml:2:60:", "duplicate backend" },
	{ "pools:\n  - {name: p, backends: [{name: b}]}\n", "t.yaml:2:26:", "\"address\"" },
	{ "pools:\n  - {name: p, balance: fastest, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n",
	  "t.yaml:2:24:", "roundrobin, leastconn" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\", tls: starttls, "
	  "tls_context: x}]}\n",
	  "t.yaml:2:64:", "not supported yet" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\", tls_context: x}]}\n",
	  "t.yaml:2:72:", "no tls context named \"x\"" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\", weight: -1}]}\n",
	  "t.yaml:2:67:", "whole number" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n"
	  "listeners:\n  - {name: l, listen: \"127.0.0.1:25\", pool: q}\n",
	  "t.yaml:4:45:", "no pool named \"q\"" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n"
	  "listeners:\n  - {name: l, listen: \"127.0.0.1:25\", pool: p, routes: [{client: "
	  "\"10.0.0.0/33\", pool: p}]}\n",
	  "t.yaml:4:66:", "bad CIDR" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n"
	  "listeners:\n  - {name: l, listen: \"127.0.0.1:25\", pool: p, tls: starttls, "
	  "tls_context: t}\n",
	  "t.yaml:4:53:", "not supported yet" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n"
	  "listeners:\n  - {name: l, listen: \"127.0.0.1:25\", pool: p}\n"
	  "  - {name: l, listen: \"127.0.0.1:26\", pool: p}\n",
	  "t.yaml:5:5:", "duplicate listener" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n"
	  "listeners:\n  - {name: l, listen: [\"127.0.0.1:25\", \"127.0.0.1:25\"], pool: p}\n",
	  "t.yaml:4:5:", "listened on twice" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n"
	  "listeners:\n  - {name: l, pool: p}\n",
	  "t.yaml:4:5:", "\"listen\"" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n"
	  "listeners:\n  - {name: l, listen: \"127.0.0.1:25\", pool: p, timeouts: {idle: 0s}}\n",
	  "t.yaml:4:65:", "more than 0" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n"
	  "listeners:\n  - {name: l, listen: \"127.0.0.1:25\", pool: p, relay: splice}\n",
	  "t.yaml:4:55:", "not supported yet" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n"
	  "listeners:\n  - {name: l, listen: \"127.0.0.1:25\", pool: p, require_tls: maybe}\n",
	  "t.yaml:4:61:", "true or false" },
	{ "tls:\n  t: {ca: /nonexistent/ca.pem}\n", "t.yaml:2:11:", "/nonexistent/ca.pem" },
	{ "tls:\n  t: {min_version: \"1.1\"}\n", "t.yaml:2:20:", "1.2, 1.3" },
	{ "a: &x {b: 1}\nc: *x\n", "t.yaml:1:1:", "" },
	{ "pools: &p [{name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}]\n"
	  "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p}]\nserver: *p\n",
	  "t.yaml:", "" },
	{ "pools: [{name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}]\n"
	  "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p}]\n"
	  "alerts: {smtp: \"127.0.0.1:25\", from: a@b, to: [\"c d@e\"]}\n", "t.yaml:3:48:",
	  "not a mail address" },
	{ "pools: [{name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}]\n"
	  "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p}]\n"
	  "alerts: {smtp: \"127.0.0.1:25\", from: a@b, to: [c@d], events: [boom]}\n",
	  "t.yaml:3:63:", "backend_down, backend_up, pool_down" },
	{ "pools: [{name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}]\n"
	  "listeners: [{name: l, listen: \"127.0.0.1:25\", pool: p}]\n"
	  "alerts: {from: a@b, to: [c@d]}\n", "t.yaml:3:9:", "\"smtp\"" },
	{ "pools:\n  - {name: p, backends: [{name: b, address: \"1.2.3.4:25\"}]}\n",
	  "t.yaml:1:1:", "\"listeners\"" },
};

static void test_bad_inputs(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		char err[CFG_ERR_MAX] = "";
		struct config *c =
			config_load_buffer("t.yaml", bads[i].yaml, strlen(bads[i].yaml), err, sizeof(err));

		if (c) {
			config_free(c);
			fail_msg("case %zu loaded: %s", i, bads[i].yaml);
		}
		if (strncmp(err, bads[i].where, strlen(bads[i].where)) || !strstr(err, bads[i].word))
			fail_msg("case %zu: got \"%s\", want \"%s ... %s\"", i, err, bads[i].where,
				 bads[i].word);
	}
}

static void test_file_errors(void **state)
{
	char err[CFG_ERR_MAX] = "";

	(void)state;
	assert_null(config_load("/nonexistent/mxlb.yaml", err, sizeof(err)));
	assert_non_null(strstr(err, "/nonexistent/mxlb.yaml:1:1:"));
}

static void test_value_parsers(void **state)
{
	uint32_t ms;
	uint64_t sz;
	struct cfg_cidr c;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };

	(void)state;
	assert_int_equal(config_parse_duration("250ms", &ms), 0);
	assert_int_equal(ms, 250);
	assert_int_equal(config_parse_duration("10m", &ms), 0);
	assert_int_equal(ms, 600000);
	assert_int_equal(config_parse_duration("-1s", &ms), -1);
	assert_int_equal(config_parse_duration("1d", &ms), -1);
	assert_int_equal(config_parse_size("64k", &sz), 0);
	assert_int_equal(sz, 65536);
	assert_int_equal(config_parse_size("10M", &sz), 0);
	assert_int_equal(sz, 10485760);
	assert_int_equal(config_parse_size("10MB", &sz), -1);
	assert_int_equal(config_parse_cidr("192.0.2.0/24", &c), 0);
	inet_pton(AF_INET, "192.0.2.200", &sin.sin_addr);
	assert_true(config_cidr_match(&c, (struct sockaddr *)&sin));
	inet_pton(AF_INET6, "::ffff:192.0.2.9", &sin6.sin6_addr);
	assert_true(config_cidr_match(&c, (struct sockaddr *)&sin6));
	inet_pton(AF_INET, "192.0.3.1", &sin.sin_addr);
	assert_false(config_cidr_match(&c, (struct sockaddr *)&sin));
	assert_int_equal(config_parse_cidr("2001:db8::/32", &c), 0);
	inet_pton(AF_INET6, "2001:db8:1::1", &sin6.sin6_addr);
	assert_true(config_cidr_match(&c, (struct sockaddr *)&sin6));
	assert_int_equal(config_parse_cidr("2001:db8::/129", &c), -1);
	assert_int_equal(config_parse_cidr("10.0.0.0/", &c), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_file),   cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_bad_inputs),  cmocka_unit_test(test_file_errors),
		cmocka_unit_test(test_value_parsers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
