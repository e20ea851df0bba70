/* test_smtp_guard.c - the XCLIENT/XFORWARD guard of the relay. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proxy/smtp_guard.h"

#define OUT_MAX 8192

/* Feed the client bytes in pieces of at most `step`, with the server's
 * replies given after the client byte at which each becomes due. */
struct script {
	const char *client;
	const char *server; /* fed once the client is held, or at the end */
};

/* With pass, each piece goes first through smtp_guard_pass() (what passes
 * as it is, as the relay sends it without a copy), the rest through
 * smtp_guard_client(): the output must be the same. */
static bool no_chunking; /* the backend of the next runs offers no CHUNKING */

static size_t run(const char *client, const char *server, size_t step, char *out, bool pass)
{
	struct smtp_guard g;
	size_t len = strlen(client), off = 0, o = 0, served = 0, slen = strlen(server);
	char *buf = malloc(len + SMTP_GUARD_SLACK + OUT_MAX);

	smtp_guard_init(&g);
	if (no_chunking)
		smtp_guard_no_chunking(&g);
	assert_non_null(buf);
	while (off < len) {
		size_t n = len - off < step ? len - off : step, outlen = 0, used = 0;
		size_t passed = pass ? smtp_guard_pass(&g, client + off, n) : 0;

		assert_true(passed <= n);
		memcpy(out + o, client + off, passed);
		o += passed;
		off += passed;
		n -= passed;
		if (!n)
			continue;
		smtp_guard_client(&g, client + off, n, buf, &outlen, &used);
		assert_true(outlen <= n + SMTP_GUARD_SLACK);
		memcpy(out + o, buf, outlen);
		o += outlen;
		off += used;
		if (used < n || smtp_guard_holding(&g)) {
			/* held: the backend answers, one byte at a time */
			if (served < slen) {
				smtp_guard_server(&g, server + served, 1);
				served++;
			} else if (used == 0) {
				break; /* held with no reply left */
			}
		}
	}
	if (served < slen)
		smtp_guard_server(&g, server + served, slen - served);
	free(buf);
	out[o] = '\0';
	return o;
}

static void expect_all_steps(const char *client, const char *server, const char *want)
{
	char out[OUT_MAX];

	for (size_t step = 1; step <= strlen(client) + 1; step++) {
		run(client, server, step, out, false);
		assert_string_equal(out, want);
		run(client, server, step, out, true);
		assert_string_equal(out, want);
	}
}

static void test_refused_commands(void **state)
{
	(void)state;
	expect_all_steps("XCLIENT ADDR=1.2.3.4\r\nNOOP\r\nxforward NAME=x\r\nStartTLS\r\nQUIT\r\n",
			 "", SMTP_GUARD_REFUSED "NOOP\r\n" SMTP_GUARD_REFUSED SMTP_GUARD_REFUSED
			 "QUIT\r\n");
	/* look-alikes pass */
	expect_all_steps("XCLIENTS a\r\nXCLIEN\r\nMAIL FROM:<XCLIENT@x>\r\n", "",
			 "XCLIENTS a\r\nXCLIEN\r\nMAIL FROM:<XCLIENT@x>\r\n");
}

static void test_data_accepted_passes_body(void **state)
{
	(void)state;
	expect_all_steps("MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nXCLIENT ADDR=6.6.6.6\r\n.\r\n"
			 "XCLIENT ADDR=7.7.7.7\r\n",
			 "250 ok\r\n250 ok\r\n354 go\r\n",
			 "MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nXCLIENT ADDR=6.6.6.6\r\n.\r\n"
			 SMTP_GUARD_REFUSED);
}

static void test_data_refused_keeps_watching(void **state)
{
	(void)state;
	/* 554 to DATA: what follows is commands, not text */
	expect_all_steps("MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nXCLIENT ADDR=6.6.6.6\r\n",
			 "250 ok\r\n550 no\r\n554-no valid\r\n554 recipients\r\n",
			 "MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n" SMTP_GUARD_REFUSED);
}

static void test_bare_lf_dot_ends_data(void **state)
{
	(void)state;
	expect_all_steps("DATA\r\nhello\n.\nXCLIENT ADDR=1\r\n", "354 go\r\n",
			 "DATA\r\nhello\n.\n" SMTP_GUARD_REFUSED);
}

static void test_bdat_chunk_passes(void **state)
{
	(void)state;
	expect_all_steps("BDAT 24\r\n\r\nXCLIENT ADDR=9.9.9.9\r\n\r\nBDAT 0 LAST\r\nXFORWARD A=1\r\n", "",
			 "BDAT 24\r\n\r\nXCLIENT ADDR=9.9.9.9\r\n\r\nBDAT 0 LAST\r\n"
			 SMTP_GUARD_REFUSED);
}

/* A backend without CHUNKING reads a "chunk" as commands: so does the guard. */
static void test_bdat_without_chunking_is_not_skipped(void **state)
{
	(void)state;
	no_chunking = true;
	expect_all_steps("BDAT 24\r\nXCLIENT ADDR=9.9.9.9\r\nNOOP\r\n", "502 no\r\n",
			 "BDAT 24\r\n" SMTP_GUARD_REFUSED "NOOP\r\n");
	no_chunking = false;
}

static void test_long_lines_pass(void **state)
{
	char *line = malloc(5000), *want = malloc(5000);

	(void)state;
	memset(line, 'a', 4000);
	memcpy(line, "NOOP ", 5);
	strcpy(line + 4000, "\r\nXCLIENT A=1\r\n");
	memcpy(want, line, 4002);
	strcpy(want + 4002, SMTP_GUARD_REFUSED);
	expect_all_steps(line, "", want);
	free(line);
	free(want);
}

static void test_many_refusals_bounded_output(void **state)
{
	char in[2000] = "", out[OUT_MAX];
	size_t n;

	(void)state;
	for (int i = 0; i < 200; i++)
		strcat(in, "XCLIENT\n");
	n = run(in, "", sizeof(in), out, false);
	assert_int_equal(n, 200 * strlen(SMTP_GUARD_REFUSED));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refused_commands),
		cmocka_unit_test(test_data_accepted_passes_body),
		cmocka_unit_test(test_data_refused_keeps_watching),
		cmocka_unit_test(test_bare_lf_dot_ends_data),
		cmocka_unit_test(test_bdat_chunk_passes),
		cmocka_unit_test(test_bdat_without_chunking_is_not_skipped),
		cmocka_unit_test(test_long_lines_pass),
		cmocka_unit_test(test_many_refusals_bounded_output),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
