/* test_screen.c - screening's pure parts: the DNSBL site parser
 * (postscreen's domain[=filter][*weight]) and the filter match, and the
 * EHLO filter removing PIPECONNECT. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config/config.h"
#include "proxy/smtp_parse.h"

#define S(x) x, sizeof(x) - 1

static void site_free(struct cfg_dnsbl_site *s)
{
	free(s->text);
	free(s->domain);
}

/* Whether the site, once parsed, lists answer a.b.c.d. */
static bool matches(const struct cfg_dnsbl_site *s, uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
	const uint8_t addr[4] = { a, b, c, d };

	return config_dnsbl_match(s, addr);
}

static void test_site_plain_and_weights(void **state)
{
	struct cfg_dnsbl_site s;

	(void)state;
	assert_int_equal(config_parse_dnsbl_site("zen.example", &s), 0);
	assert_string_equal(s.domain, "zen.example");
	assert_string_equal(s.text, "zen.example");
	assert_int_equal(s.weight, 1);
	assert_false(s.has_filter);
	/* no filter: any answer matches (screen.c narrows that to 127/8) */
	assert_true(matches(&s, 127, 0, 0, 2));
	assert_true(matches(&s, 10, 1, 2, 3));
	site_free(&s);

	assert_int_equal(config_parse_dnsbl_site("zen.example*3", &s), 0);
	assert_string_equal(s.domain, "zen.example");
	assert_string_equal(s.text, "zen.example*3");
	assert_int_equal(s.weight, 3);
	site_free(&s);

	/* an allow list: a negative weight */
	assert_int_equal(config_parse_dnsbl_site("wl.example*-2", &s), 0);
	assert_string_equal(s.domain, "wl.example");
	assert_int_equal(s.weight, -2);
	site_free(&s);

	assert_int_equal(config_parse_dnsbl_site("b_l-1.example*1000", &s), 0);
	assert_int_equal(s.weight, 1000);
	site_free(&s);
}

static void test_site_filters(void **state)
{
	struct cfg_dnsbl_site s;

	(void)state;
	assert_int_equal(config_parse_dnsbl_site("bl.example=127.0.0.[2..4]*2", &s), 0);
	assert_string_equal(s.domain, "bl.example");
	assert_string_equal(s.text, "bl.example=127.0.0.[2..4]*2");
	assert_int_equal(s.weight, 2);
	assert_true(s.has_filter);
	assert_false(matches(&s, 127, 0, 0, 1));
	assert_true(matches(&s, 127, 0, 0, 2));
	assert_true(matches(&s, 127, 0, 0, 3));
	assert_true(matches(&s, 127, 0, 0, 4));
	assert_false(matches(&s, 127, 0, 0, 5));
	assert_false(matches(&s, 127, 0, 1, 2));
	assert_false(matches(&s, 128, 0, 0, 2));
	site_free(&s);

	/* a list of values and ranges in one octet */
	assert_int_equal(config_parse_dnsbl_site("bl.example=127.0.0.[2;4;10..11]", &s), 0);
	assert_int_equal(s.weight, 1);
	assert_true(matches(&s, 127, 0, 0, 2));
	assert_false(matches(&s, 127, 0, 0, 3));
	assert_true(matches(&s, 127, 0, 0, 4));
	assert_true(matches(&s, 127, 0, 0, 10));
	assert_true(matches(&s, 127, 0, 0, 11));
	assert_false(matches(&s, 127, 0, 0, 12));
	site_free(&s);

	/* dnswl's trust levels: patterns in several octets, the ends of 0..255 */
	assert_int_equal(
		config_parse_dnsbl_site("list.dnswl.org=127.[0..255].[0..255].[2..3]*-4", &s), 0);
	assert_string_equal(s.domain, "list.dnswl.org");
	assert_int_equal(s.weight, -4);
	assert_true(matches(&s, 127, 0, 0, 2));
	assert_true(matches(&s, 127, 255, 255, 3));
	assert_true(matches(&s, 127, 17, 200, 2));
	assert_false(matches(&s, 127, 17, 200, 1));
	assert_false(matches(&s, 126, 17, 200, 2));
	site_free(&s);

	assert_int_equal(config_parse_dnsbl_site("one.example=127.0.0.2", &s), 0);
	assert_true(matches(&s, 127, 0, 0, 2));
	assert_false(matches(&s, 127, 0, 0, 3));
	site_free(&s);
}

static void test_site_malformed(void **state)
{
	static const char *const bad[] = {
		"",
		"*3",
		"=127.0.0.2",
		"zen.example*",
		"zen.example*0",
		"zen.example*x",
		"zen.example*3x",
		"zen.example*1001",
		"zen.example*-1001",
		".zen.example",
		"zen.example.",
		"zen example",
		"zen/example",
		"bl.example=",
		"bl.example=127.0.0",
		"bl.example=127.0.0.2.5",
		"bl.example=127.0.0.256",
		"bl.example=127.0.0.[4..2]",
		"bl.example=127.0.0.[2",
		"bl.example=127.0.0.[2..]",
		"bl.example=127.0.0.[]",
		"bl.example=127.0.0.[2,3]",
		"bl.example=127.0.0.x",
		"bl.example=127.0.0.2*",
	};
	struct cfg_dnsbl_site s;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = config_parse_dnsbl_site(bad[i], &s);

		if (r == 0) {
			print_error("accepted: \"%s\"\n", bad[i]);
			site_free(&s);
		}
		assert_int_equal(r, -1);
	}
}

static void test_ehlo_filter_pipeconnect(void **state)
{
	static const char in[] = "250-mx.example\r\n"
				 "250-PIPELINING\r\n"
				 "250-PIPECONNECT\r\n"
				 "250-X_PIPE_CONNECT\r\n"
				 "250 8BITMIME\r\n";
	static const char want[] = "250-mx.example\r\n"
				   "250-PIPELINING\r\n"
				   "250 8BITMIME\r\n";
	char out[sizeof(in)];
	size_t n;

	(void)state;
	assert_int_equal(smtp_ehlo_extensions(in, sizeof(in) - 1) & SMTP_EXT_PIPECONNECT,
			 SMTP_EXT_PIPECONNECT);
	n = smtp_ehlo_filter(in, sizeof(in) - 1, out, SMTP_EXT_PIPECONNECT);
	assert_int_equal(n, sizeof(want) - 1);
	assert_memory_equal(out, want, n);
	/* the last line removed: the one before becomes last */
	n = smtp_ehlo_filter(S("250-mx\r\n250-SIZE 10\r\n250 pipeconnect\r\n"), out,
			     SMTP_EXT_PIPECONNECT);
	assert_int_equal(n, sizeof("250-mx\r\n250 SIZE 10\r\n") - 1);
	assert_memory_equal(out, "250-mx\r\n250 SIZE 10\r\n", n);
	/* PIPELINING is not PIPECONNECT */
	n = smtp_ehlo_filter(S("250-mx\r\n250 PIPELINING\r\n"), out, SMTP_EXT_PIPECONNECT);
	assert_memory_equal(out, "250-mx\r\n250 PIPELINING\r\n", n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_site_plain_and_weights),
		cmocka_unit_test(test_site_filters),
		cmocka_unit_test(test_site_malformed),
		cmocka_unit_test(test_ehlo_filter_pipeconnect),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
