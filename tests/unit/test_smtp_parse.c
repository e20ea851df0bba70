/* test_smtp_parse.c - the command and reply parsers and the EHLO filter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "proxy/smtp_parse.h"

#define S(x) x, sizeof(x) - 1

static void test_command_basic(void **state)
{
	struct smtp_cmd c;
	size_t used;
	bool eol;

	(void)state;
	assert_int_equal(smtp_parse_command(S("MAIL FROM:<a@b>  \r\nRCPT"), &c, &used, &eol),
			 SMTP_OK);
	assert_int_equal(c.verb, SMTP_V_MAIL);
	assert_int_equal(used, 19);
	assert_int_equal(c.arg_len, 10);
	assert_memory_equal(c.arg, "FROM:<a@b>", 10);
	assert_int_equal(smtp_parse_command(S("ehlo   client.example\r\n"), &c, &used, &eol),
			 SMTP_OK);
	assert_int_equal(c.verb, SMTP_V_EHLO);
	assert_memory_equal(c.arg, "client.example", c.arg_len);
	assert_int_equal(smtp_parse_command(S("StartTLS\r\n"), &c, &used, &eol), SMTP_OK);
	assert_int_equal(c.verb, SMTP_V_STARTTLS);
	assert_int_equal(c.arg_len, 0);
	assert_int_equal(smtp_parse_command(S("\r\n"), &c, &used, &eol), SMTP_OK);
	assert_int_equal(c.verb, SMTP_V_UNKNOWN);
	assert_int_equal(c.verb_len, 0);
	assert_int_equal(smtp_parse_command(S("MAILX\r\n"), &c, &used, &eol), SMTP_OK);
	assert_int_equal(c.verb, SMTP_V_UNKNOWN);
	assert_int_equal(smtp_parse_command(S("X\0Y\r\n"), &c, &used, &eol), SMTP_OK);
	assert_int_equal(c.verb, SMTP_V_UNKNOWN);
}

static void test_command_again_and_errors(void **state)
{
	char line[SMTP_LINE_MAX + 10];
	struct smtp_cmd c;
	size_t used;
	bool eol;

	(void)state;
	assert_int_equal(smtp_parse_command(S("NOOP"), &c, &used, &eol), SMTP_AGAIN);
	assert_int_equal(smtp_parse_command(S("NOOP\r"), &c, &used, &eol), SMTP_AGAIN);
	assert_int_equal(smtp_parse_command(S("NOOP\nQUIT\r\n"), &c, &used, &eol), SMTP_INVALID);
	assert_int_equal(c.error, SMTP_CMD_ERR_BARE_LF);
	assert_int_equal(used, 5);
	/* exactly SMTP_LINE_MAX with CRLF is fine, one more is not */
	memset(line, 'A', sizeof(line));
	memcpy(line + SMTP_LINE_MAX - 2, "\r\n", 2);
	assert_int_equal(smtp_parse_command(line, SMTP_LINE_MAX, &c, &used, &eol), SMTP_OK);
	memset(line, 'A', sizeof(line));
	memcpy(line + SMTP_LINE_MAX - 1, "\r\n", 2);
	assert_int_equal(smtp_parse_command(line, SMTP_LINE_MAX + 1, &c, &used, &eol),
			 SMTP_INVALID);
	assert_int_equal(c.error, SMTP_CMD_ERR_TOO_LONG);
	assert_true(eol);
	assert_int_equal(used, SMTP_LINE_MAX + 1);
	memset(line, 'A', sizeof(line));
	assert_int_equal(smtp_parse_command(line, sizeof(line), &c, &used, &eol), SMTP_INVALID);
	assert_false(eol);
	assert_int_equal(used, sizeof(line));
	assert_false(smtp_skip_line(S("xxxx"), &used));
	assert_int_equal(used, 4);
	assert_true(smtp_skip_line(S("xx\nNOOP"), &used));
	assert_int_equal(used, 3);
}

static void test_reply(void **state)
{
	struct smtp_reply_line r;
	size_t used;
	int code;

	(void)state;
	assert_int_equal(smtp_parse_reply_line(S("250-PIPELINING\r\n"), &r, &used), SMTP_OK);
	assert_int_equal(r.code, 250);
	assert_false(r.last);
	assert_int_equal(smtp_parse_reply_line(S("221\r\n"), &r, &used), SMTP_OK);
	assert_true(r.last);
	assert_int_equal(smtp_parse_reply_line(S("220 ok\n"), &r, &used), SMTP_OK);
	assert_int_equal(smtp_parse_reply_line(S("2x0 no\r\n"), &r, &used), SMTP_INVALID);
	assert_int_equal(smtp_parse_reply_line(S("650 no\r\n"), &r, &used), SMTP_INVALID);
	assert_int_equal(smtp_parse_reply_line(S("250x\r\n"), &r, &used), SMTP_INVALID);
	assert_int_equal(smtp_parse_reply_line(S("25\r\n"), &r, &used), SMTP_INVALID);
	assert_int_equal(smtp_parse_reply_line(S("250 partial"), &r, &used), SMTP_AGAIN);
	assert_int_equal(smtp_parse_reply(S("250-a\r\n250-b\r\n250 c\r\nX"), &code, &used),
			 SMTP_OK);
	assert_int_equal(code, 250);
	assert_int_equal(used, 21);
	assert_int_equal(smtp_parse_reply(S("250-a\r\n250-b\r\n"), &code, &used), SMTP_AGAIN);
	assert_int_equal(smtp_parse_reply(S("250-a\r\n251 b\r\n"), &code, &used), SMTP_INVALID);
}

static void test_ehlo_filter(void **state)
{
	static const char in[] = "250-mx.example\r\n250-PIPELINING\r\n250-XCLIENT NAME ADDR\r\n"
				 "250-STARTTLS\r\n250-AUTH=LOGIN\r\n250 XFORWARD NAME\r\n";
	static const char want[] = "250-mx.example\r\n250-PIPELINING\r\n250 AUTH=LOGIN\r\n";
	static const char want2[] = "250-mx.example\r\n250 PIPELINING\r\n";
	char out[sizeof(in)];
	size_t n;

	(void)state;
	n = smtp_ehlo_filter(in, sizeof(in) - 1, out,
			     SMTP_EXT_XCLIENT | SMTP_EXT_XFORWARD | SMTP_EXT_STARTTLS);
	assert_int_equal(n, sizeof(want) - 1);
	assert_memory_equal(out, want, n);
	n = smtp_ehlo_filter(in, sizeof(in) - 1, out,
			     SMTP_EXT_XCLIENT | SMTP_EXT_XFORWARD | SMTP_EXT_STARTTLS |
				     SMTP_EXT_AUTH);
	assert_int_equal(n, sizeof(want2) - 1);
	assert_memory_equal(out, want2, n);
	/* the first line stays even when it is all there is */
	n = smtp_ehlo_filter(S("250 mx.example\r\n"), out, SMTP_EXT_XCLIENT);
	assert_memory_equal(out, "250 mx.example\r\n", n);
	n = smtp_ehlo_filter(S("250-mx\r\n250 XCLIENT ADDR\r\n"), out, SMTP_EXT_XCLIENT);
	assert_int_equal(n, 8);
	assert_memory_equal(out, "250 mx\r\n", n);
	assert_int_equal(smtp_ehlo_extensions(in, sizeof(in) - 1),
			 SMTP_EXT_PIPELINING | SMTP_EXT_XCLIENT | SMTP_EXT_STARTTLS |
				 SMTP_EXT_AUTH | SMTP_EXT_XFORWARD);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_command_basic),
		cmocka_unit_test(test_command_again_and_errors),
		cmocka_unit_test(test_reply),
		cmocka_unit_test(test_ehlo_filter),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
