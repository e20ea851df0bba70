/* test_smtp_track.c - the client-stream tracker, driven by the reference
 * model of a backend (tests/fuzz/track_model.h): every case runs in each
 * framing a backend may use and cut into pieces of every size, and the
 * model aborts on a client-written XCLIENT it executes or a byte it frames
 * differently from the tracker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tests/fuzz/track_model.h"

#define ALL_354 0xffffffffu
#define R SMTP_TRACK_REFUSED

static struct track_run run;

/* Run in every framing and piece size; the output must be want (a C
 * string) and the failure, if any, fail_why (NULL: none). */
static void expect_n(const char *in, size_t len, bool chunking, uint32_t decisions,
		     const char *want, const char *fail_why)
{
	for (int fr = 0; fr < FR_COUNT; fr++) {
		for (uint8_t step = 0; step < 64 && step <= len; step++) {
			track_drive(&run, in, len, fr, chunking, decisions, &step, 1);
			if (fr == FR_LF || fail_why) {
				/* the strict reading of bare-LF lines differs by design */
				assert_int_equal(run.out_len, strlen(want));
				assert_memory_equal(run.out, want, run.out_len);
				if (fail_why)
					assert_string_equal(run.error, fail_why);
				else
					assert_null(run.error);
			}
			free(run.out);
		}
	}
}

static void expect(const char *in, bool chunking, uint32_t decisions, const char *want,
		   const char *fail_why)
{
	expect_n(in, strlen(in), chunking, decisions, want, fail_why);
}

static void test_refused_commands(void **state)
{
	(void)state;
	expect("XCLIENT ADDR=1.2.3.4\r\nNOOP\r\nxforward NAME=x\r\nStartTLS\r\nQUIT\r\n", true, 0,
	       R "NOOP\r\n" R R "QUIT\r\n", NULL);
	/* look-alikes pass; a verb that only starts with one is refused (a
	 * backend that cuts the line may see just its start) */
	expect("XCLIEN\r\nMAIL FROM:<XCLIENT@x>\r\nXCLIENTS a\r\n", true, 0,
	       "XCLIEN\r\nMAIL FROM:<XCLIENT@x>\r\n" R, NULL);
}

/* Postfix runs the first 2048 octets of a long line as the command: blanks
 * that push "XCLIENTX" across that point make its verb XCLIENT there. */
static void test_verb_cut_by_the_backend_refused(void **state)
{
	static char in[2200], want[2200];

	(void)state;
	memset(in, ' ', 2041);
	strcpy(in + 2041, "XCLIENTX ADDR=203.0.113.66\r\nNOOP\r\n");
	memset(want, ' ', 2041);
	strcpy(want + 2041, R "NOOP\r\n");
	for (int fr = 0; fr < FR_COUNT; fr++) {
		uint8_t step = 100;

		track_drive(&run, in, strlen(in), fr, true, 0, &step, 1);
		assert_null(run.error);
		assert_int_equal(run.out_len, strlen(want));
		assert_memory_equal(run.out, want, run.out_len);
		free(run.out);
	}
}

/* Leading blanks count towards the line limit too. */
static void test_blanks_over_the_limit_fail(void **state)
{
	size_t n = SMTP_TRACK_LINE_MAX + 10;
	char *in = malloc(n + 3);

	(void)state;
	memset(in, ' ', n);
	strcpy(in + n, "\r\n");
	for (int fr = 0; fr < FR_COUNT; fr++) {
		uint8_t step = 255;

		track_drive(&run, in, n + 2, fr, true, 0, &step, 1);
		assert_string_equal(run.error, "command line too long");
		assert_int_equal(run.out_len, SMTP_TRACK_LINE_MAX);
		free(run.out);
	}
	free(in);
}

/* Postfix tokenizes on any blank: leading blanks and other separators. */
static void test_refused_after_blanks(void **state)
{
	(void)state;
	expect(" XCLIENT ADDR=1\r\n\tXCLIENT ADDR=2\r\n\vxclient ADDR=3\r\n\fXFORWARD A=1\r\n"
	       "XCLIENT\tADDR=4\r\n  xclient   ADDR=5\r\nXCLIENT\vADDR=6\r\nNOOP\r\n",
	       true, 0, " " R "\t" R "\v" R "\f" R R "  " R R "NOOP\r\n", NULL);
	expect("XCLIENT\n", true, 0, R, NULL);
	expect("NOOP\r\nNOOP\nXCLIENT A=1\r\n", true, 0, "NOOP\r\nNOOP",
	       "bare <LF> in a command line");
}

static void test_bare_cr_in_command_fails(void **state)
{
	(void)state;
	expect("NOOP\r\n\rXCLIENT ADDR=1\r\n", true, 0, "NOOP\r\n", "bare <CR> in a command line");
	expect("NOOP\rXCLIENT ADDR=1\r\n", true, 0, "NOOP", "bare <CR> in a command line");
	expect("XCLIENT\rADDR=1\r\n", true, 0, R,
	       NULL); /* the rest of a replaced line is dropped */
}

static void test_nul_fails(void **state)
{
	(void)state;
	expect_n("NOOP\r\nNO\0OP\r\n", 12, true, 0, "NOOP\r\n", "NUL in a command line");
	expect_n("\0XCLIENT A=1\r\n", 14, true, 0, "", "NUL in a command line");
}

static void test_data_accepted_passes_body(void **state)
{
	(void)state;
	expect("MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nXCLIENT ADDR=6.6.6.6\r\n..\r\n.x\r\n.\r\n"
	       "XCLIENT ADDR=7.7.7.7\r\n",
	       true, ALL_354,
	       "MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nXCLIENT "
	       "ADDR=6.6.6.6\r\n..\r\n.x\r\n.\r\n" R,
	       NULL);
	/* a bare LF or CR that frames nothing passes untouched */
	expect("DATA\r\nfoo\nbar\rbaz\r\r\n\n\r\n.\r\nNOOP\r\n", true, ALL_354,
	       "DATA\r\nfoo\nbar\rbaz\r\r\n\n\r\n.\r\nNOOP\r\n", NULL);
	/* the "." line right after the 354 */
	expect("DATA\r\n.\r\nNOOP\r\n", true, ALL_354, "DATA\r\n.\r\nNOOP\r\n", NULL);
}

static void test_data_refused_keeps_watching(void **state)
{
	(void)state;
	/* no 354: what follows DATA is commands, not text */
	expect("MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nXCLIENT ADDR=6.6.6.6\r\n.\r\n", true, 0,
	       "MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n" R ".\r\n", NULL);
	/* a DATA with arguments is held too; its 501 keeps commands */
	expect("DATA x\r\nXCLIENT A=1\r\n", true, ALL_354, "DATA x\r\n" R, NULL);
}

/* Where a lenient and a strict backend would end the message in different
 * places, the stream fails before the difference. */
static void test_ambiguous_end_of_data_fails(void **state)
{
	static const char *const bodies[] = {
		"line\n.\nXCLIENT ADDR=1\r\n.\r\n", "line\r\n.\nMAIL FROM:<x>\r\n.\r\n",
		"line\n.\r\nRSET\r\n.\r\n",	    "line\r.\rQUIT\r\n.\r\n",
		"line\r\n.\rQUIT\r\n.\r\n",	    "line\r.\r\nQUIT\r\n.\r\n",
		".\nXCLIENT A=1\r\n.\r\n",	    "x\r\n.\r\r\nQUIT\r\n.\r\n",
	};
	static const char *const kept[] = {
		"line\n", "line\r\n", "line\n", "line\r", "line\r\n", "line\r", "", "x\r\n",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		char in[256], want[256];

		snprintf(in, sizeof(in), "DATA\r\n%s", bodies[i]);
		snprintf(want, sizeof(want), "DATA\r\n%s", kept[i]);
		expect(in, true, ALL_354, want,
		       "bare <LF> or <CR> at a \".\" line in message text");
	}
}

static void test_bdat_chunk_passes(void **state)
{
	(void)state;
	expect("BDAT 24\r\n\r\nXCLIENT ADDR=9.9.9.9\r\n\r\nBDAT 0 LAST\r\nXFORWARD A=1\r\n", true,
	       0, "BDAT 24\r\n\r\nXCLIENT ADDR=9.9.9.9\r\n\r\nBDAT 0 LAST\r\n" R, NULL);
	expect("bdat 5 last\r\nhelloNOOP\r\n", true, 0, "bdat 5 last\r\nhelloNOOP\r\n", NULL);
}

static void test_malformed_bdat_fails(void **state)
{
	static const char *const lines[] = {
		"BDAT 38 X\r\n",     "BDAT 38x\r\n",
		"BDAT 38\tLAST\r\n", "BDAT 38 LAST LAST\r\n",
		" BDAT 38\r\n",	     "BDAT  38\r\n",
		"BDAT 38\n",	     "BDAT\r\n",
		"BDAT -1\r\n",	     "BDAT 1234567890123456789\r\n",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		char in[128], want[128];
		size_t lead = lines[i][0] == ' ';

		snprintf(in, sizeof(in), "NOOP\r\n%sXCLIENT ADDR=203.0.113.66 LOGIN=admin\r\n",
			 lines[i]);
		snprintf(want, sizeof(want), "NOOP\r\n%s", lead ? " " : "");
		expect(in, true, 0, want, "malformed BDAT command");
	}
}

/* A backend without CHUNKING would read a "chunk" as commands. */
static void test_bdat_without_chunking_fails(void **state)
{
	(void)state;
	expect("NOOP\r\nBDAT 24\r\nXCLIENT ADDR=9.9.9.9\r\nNOOP\r\n", false, 0, "NOOP\r\n",
	       "BDAT without CHUNKING");
}

static void test_long_line_fails(void **state)
{
	size_t n = SMTP_TRACK_LINE_MAX + 100;
	char *line = malloc(n + 32), *want = malloc(n + 32);

	(void)state;
	memset(line, 'a', n);
	memcpy(line, "NOOP ", 5);
	strcpy(line + n, "\r\nXCLIENT A=1\r\n");
	memcpy(want, line, SMTP_TRACK_LINE_MAX);
	want[SMTP_TRACK_LINE_MAX] = '\0';
	for (int fr = 0; fr < FR_COUNT; fr++) {
		uint8_t step = 200;

		track_drive(&run, line, strlen(line), fr, true, 0, &step, 1);
		assert_string_equal(run.error, "command line too long");
		assert_int_equal(run.out_len, SMTP_TRACK_LINE_MAX);
		assert_memory_equal(run.out, want, SMTP_TRACK_LINE_MAX);
		free(run.out);
	}
	/* one just under the limit passes */
	memset(line, 'a', 4000);
	memcpy(line, "NOOP ", 5);
	strcpy(line + 4000, "\r\nXCLIENT A=1\r\n");
	memcpy(want, line, 4002);
	strcpy(want + 4002, R);
	expect(line, true, 0, want, NULL);
	free(line);
	free(want);
}

/* A second EHLO in the relay: the client waits for its reply, which the
 * relay collects to filter. */
static void test_ehlo_reply_captured(void **state)
{
	struct smtp_track t;
	const char *rep = "250 ok\r\n250-mx\r\n250-XCLIENT ADDR\r\n250 8BITMIME\r\n250 after\r\n";
	size_t outlen, used, off = 0, n;
	char out[256];
	bool cap, end;

	(void)state;
	smtp_track_init(&t, true);
	assert_int_equal(
		smtp_track_client(&t, "RSET\r\nEHLO b\r\nNOOP\r\n", 19, out, &outlen, &used),
		TRACK_HOLD);
	assert_int_equal(used, 14);
	n = smtp_track_server(&t, rep, strlen(rep), &cap, &end);
	assert_false(cap);
	assert_int_equal(n, 8); /* the RSET's reply passes */
	off += n;
	n = smtp_track_server(&t, rep + off, strlen(rep) - off, &cap, &end);
	assert_true(cap);
	assert_true(end);
	assert_int_equal(n, strlen("250-mx\r\n250-XCLIENT ADDR\r\n250 8BITMIME\r\n"));
	assert_false(smtp_track_holding(&t));
	off += n;
	n = smtp_track_server(&t, rep + off, strlen(rep) - off, &cap, &end);
	assert_false(cap);
	assert_int_equal(off + n, strlen(rep));
}

static void test_354_out_of_turn_fails(void **state)
{
	struct smtp_track t;
	size_t outlen, used;
	char out[256];
	bool cap, end;

	(void)state;
	smtp_track_init(&t, true);
	smtp_track_client(&t, "NOOP\r\n", 6, out, &outlen, &used);
	smtp_track_server(&t, "354 go\r\n", 8, &cap, &end);
	assert_string_equal(smtp_track_error(&t), "354 reply out of turn");
	assert_int_equal(smtp_track_client(&t, "x\r\n", 3, out, &outlen, &used), TRACK_FAIL);
	assert_int_equal(outlen, 0);
}

static void test_many_refusals_bounded_output(void **state)
{
	char in[2000] = "", out[2000 + SMTP_TRACK_SLACK];
	size_t total = 0, off = 0, len, outlen, used;
	struct smtp_track t;

	(void)state;
	for (int i = 0; i < 200; i++)
		strcat(in, "XCLIENT\n");
	len = strlen(in);
	smtp_track_init(&t, true);
	while (off < len) {
		smtp_track_client(&t, in + off, len - off, out, &outlen, &used);
		assert_true(outlen <= len - off + SMTP_TRACK_SLACK);
		assert_true(used > 0);
		total += outlen;
		off += used;
	}
	assert_int_equal(total, 200 * strlen(R));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refused_commands),
		cmocka_unit_test(test_refused_after_blanks),
		cmocka_unit_test(test_verb_cut_by_the_backend_refused),
		cmocka_unit_test(test_blanks_over_the_limit_fail),
		cmocka_unit_test(test_bare_cr_in_command_fails),
		cmocka_unit_test(test_nul_fails),
		cmocka_unit_test(test_data_accepted_passes_body),
		cmocka_unit_test(test_data_refused_keeps_watching),
		cmocka_unit_test(test_ambiguous_end_of_data_fails),
		cmocka_unit_test(test_bdat_chunk_passes),
		cmocka_unit_test(test_malformed_bdat_fails),
		cmocka_unit_test(test_bdat_without_chunking_fails),
		cmocka_unit_test(test_long_line_fails),
		cmocka_unit_test(test_ehlo_reply_captured),
		cmocka_unit_test(test_354_out_of_turn_fails),
		cmocka_unit_test(test_many_refusals_bounded_output),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
