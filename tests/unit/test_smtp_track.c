/* test_smtp_track.c - the client-stream tracker, driven by the reference
 * model of a backend (tests/fuzz/track_model.h): every case runs in each
 * framing a backend may use and cut into pieces of every size, and the
 * model aborts on a client-written XCLIENT it executes or a byte it frames
 * differently from the tracker. bare_newline normalize and reject: the
 * output is the same for every framing, and a strict, a Postfix-like and
 * a lenient backend take the same messages from it. */
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
			track_drive(&run, in, len,
				    &(struct track_opts){ .framing = fr,
							  .chunking = chunking,
							  .decisions = decisions },
				    &step, 1);
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

/* Normalizing or rejecting: the same output (want) whatever the backend's
 * framing and however the input is cut, the failure fail_why (NULL:
 * none), and the same messages taken by every framing. */
static void expect_bare_n(const char *in, size_t len, bool chunking, uint32_t decisions,
			  enum smtp_track_bare bare, const char *want, const char *fail_why)
{
	static struct track_run runs[FR_COUNT];
	bool bare_failed = fail_why && bare == TRACK_BARE_REJECT && !strncmp(fail_why, "bare", 4);
	struct track_opts o = { .chunking = chunking, .decisions = decisions, .bare = bare };

	for (int fr = 0; fr < FR_COUNT; fr++) {
		for (uint8_t step = 0; step < 64 && step <= len; step++) {
			o.framing = fr;
			track_drive(&run, in, len, &o, &step, 1);
			assert_int_equal(run.out_len, strlen(want));
			assert_memory_equal(run.out, want, run.out_len);
			if (fail_why)
				assert_string_equal(run.error, fail_why);
			else
				assert_null(run.error);
			assert_int_equal(run.bare_failed, bare_failed);
			free(run.out);
		}
	}
	for (uint8_t step = 0; step < 8; step++)
		track_drive_all(runs, in, len, &o, &step, 1);
}

static void expect_bare(const char *in, bool chunking, uint32_t decisions,
			enum smtp_track_bare bare, const char *want, const char *fail_why)
{
	expect_bare_n(in, strlen(in), chunking, decisions, bare, want, fail_why);
}

#define NORMALIZE TRACK_BARE_NORMALIZE
#define REJECT TRACK_BARE_REJECT

/* The messages a strict backend takes after normalizing: n of them, their
 * text (dot-unstuffed, lines in CRLF) one after the other. */
static void expect_messages(const char *in, enum smtp_track_bare bare, unsigned n, const char *text)
{
	struct track_opts o = {
		.framing = FR_CRLF, .chunking = true, .decisions = ALL_354, .bare = bare
	};
	uint8_t step = 255;

	track_drive(&run, in, strlen(in), &o, &step, 1);
	assert_int_equal(run.m.messages, n);
	assert_int_equal(run.m.msg_len, strlen(text));
	assert_memory_equal(run.m.msg, text, run.m.msg_len);
	free(run.out);
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

		track_drive(&run, in, strlen(in),
			    &(struct track_opts){ .framing = fr, .chunking = true, .decisions = 0 },
			    &step, 1);
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

		track_drive(&run, in, n + 2,
			    &(struct track_opts){ .framing = fr, .chunking = true, .decisions = 0 },
			    &step, 1);
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

		track_drive(&run, line, strlen(line),
			    &(struct track_opts){ .framing = fr, .chunking = true, .decisions = 0 },
			    &step, 1);
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
	smtp_track_init(&t, true, TRACK_BARE_PASS);
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
	smtp_track_init(&t, true, TRACK_BARE_PASS);
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
	smtp_track_init(&t, true, TRACK_BARE_PASS);
	while (off < len) {
		smtp_track_client(&t, in + off, len - off, out, &outlen, &used);
		assert_true(outlen <= len - off + SMTP_TRACK_SLACK);
		assert_true(used > 0);
		total += outlen;
		off += used;
	}
	assert_int_equal(total, 200 * strlen(R));
}

/* ---- bare_newline: normalize ---- */

static void test_normalize_commands(void **state)
{
	(void)state;
	expect_bare("EHLO x\nMAIL FROM:<a>\nRCPT TO:<b>\r\nNOOP\rRSET\r\rQUIT\r\n", true, 0,
		    NORMALIZE,
		    "EHLO x\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\nNOOP\r\nRSET\r\n\r\nQUIT\r\n", NULL);
	/* a bare LF or CR ends a line for the backend once it is CRLF: what
	 * follows is a command of its own, and refused as one */
	expect_bare("NOOP\rXCLIENT ADDR=1\r\nNOOP\nXFORWARD A=1\n", true, 0, NORMALIZE,
		    "NOOP\r\n" R "NOOP\r\n" R, NULL);
	/* and a refused line ends there too */
	expect_bare("XCLIENT A=1\rNOOP\r\nXCLIENT A=2\r\nNOOP\r\n", true, 0, NORMALIZE,
		    R "NOOP\r\n" R "NOOP\r\n", NULL);
	/* what normalizing does not touch still fails */
	expect_bare_n("NOOP\nNO\0OP\r\n", 12, true, 0, NORMALIZE, "NOOP\r\n",
		      "NUL in a command line");
}

static void test_normalize_text(void **state)
{
	(void)state;
	expect_bare("DATA\r\nfoo\nbar\rbaz\r\r\n\n\r\n.\r\nNOOP\r\n", true, ALL_354, NORMALIZE,
		    "DATA\r\nfoo\r\nbar\r\nbaz\r\n\r\n\r\n\r\n.\r\nNOOP\r\n", NULL);
	/* dot-stuffed lines stay as the client stuffed them, whatever ended
	 * the line before */
	expect_bare("DATA\r\n..\r\n.x\r\n\n..\n.y\n.\r\nNOOP\r\n", true, ALL_354, NORMALIZE,
		    "DATA\r\n..\r\n.x\r\n\r\n..\r\n.y\r\n..\r\nNOOP\r\n", NULL);
	/* a refused DATA: what follows is commands, normalized as such */
	expect_bare("DATA\r\nfoo\nXCLIENT A=1\n.\n", true, 0, NORMALIZE,
		    "DATA\r\nfoo\r\n" R ".\r\n", NULL);
}

/* Every framing that pass fails closed on: normalized, the "." line is
 * text, and only the client's own CRLF.CRLF ends the message. */
static void test_normalize_ambiguous_end_of_data(void **state)
{
	static const char *const bodies[][2] = {
		{ "line\n.\nXCLIENT ADDR=1\r\n.\r\n", "line\r\n..\r\nXCLIENT ADDR=1\r\n.\r\n" },
		{ "line\r\n.\nMAIL FROM:<x>\r\n.\r\n", "line\r\n..\r\nMAIL FROM:<x>\r\n.\r\n" },
		{ "line\n.\r\nRSET\r\n.\r\n", "line\r\n..\r\nRSET\r\n.\r\n" },
		{ "line\r.\rQUIT\r\n.\r\n", "line\r\n..\r\nQUIT\r\n.\r\n" },
		{ "line\r\n.\rQUIT\r\n.\r\n", "line\r\n..\r\nQUIT\r\n.\r\n" },
		{ "line\r.\r\nQUIT\r\n.\r\n", "line\r\n..\r\nQUIT\r\n.\r\n" },
		{ ".\nXCLIENT A=1\r\n.\r\n", "..\r\nXCLIENT A=1\r\n.\r\n" },
		{ "x\r\n.\r\r\nQUIT\r\n.\r\n", "x\r\n..\r\n\r\nQUIT\r\n.\r\n" },
		{ "x\n\n.\n\n.\r\n.\r\n", "x\r\n\r\n..\r\n\r\n..\r\n.\r\n" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		char in[256], want[256];

		snprintf(in, sizeof(in), "DATA\r\n%sNOOP\r\n", bodies[i][0]);
		snprintf(want, sizeof(want), "DATA\r\n%sNOOP\r\n", bodies[i][1]);
		expect_bare(in, true, ALL_354, NORMALIZE, want, NULL);
	}
}

/* The smuggling attempt of CVE-2023-51764: one message, the smuggled
 * commands in its text. */
static void test_normalize_smuggling(void **state)
{
	static const char in[] = "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"
				 "Subject: one\r\n\r\nbody\n.\nMAIL FROM:<evil@x>\r\n"
				 "RCPT TO:<b@y>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"
				 ".\r\nQUIT\r\n";

	(void)state;
	expect_bare(in, true, ALL_354, NORMALIZE,
		    "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nSubject: one\r\n\r\nbody\r\n"
		    "..\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"
		    "Subject: smuggled\r\n\r\nsmuggled\r\n.\r\nQUIT\r\n",
		    NULL);
	expect_messages(in, NORMALIZE, 1,
			"Subject: one\r\n\r\nbody\r\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<b@y>\r\n"
			"DATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n");
}

/* A DATA line that a bare LF or CR ended: the "." right after it is not
 * the client's CRLF.CRLF. */
static void test_normalize_data_line_bare(void **state)
{
	(void)state;
	expect_bare("DATA\n.\r\nQUIT\r\n.\r\nNOOP\r\n", true, ALL_354, NORMALIZE,
		    "DATA\r\n..\r\nQUIT\r\n.\r\nNOOP\r\n", NULL);
	expect_bare("DATA\r.\r\nQUIT\r\n.\r\nNOOP\r\n", true, ALL_354, NORMALIZE,
		    "DATA\r\n..\r\nQUIT\r\n.\r\nNOOP\r\n", NULL);
	expect_bare("DATA\r\n.\r\nNOOP\r\n", true, ALL_354, NORMALIZE, "DATA\r\n.\r\nNOOP\r\n",
		    NULL);
}

/* BDAT lines are normalized; chunks pass as they are (their framing is
 * their length). */
static void test_normalize_bdat(void **state)
{
	(void)state;
	expect_bare("BDAT 4\nab\n\rBDAT 3 LAST\rx\ryNOOP\n", true, 0, NORMALIZE,
		    "BDAT 4\r\nab\n\rBDAT 3 LAST\r\nx\ryNOOP\r\n", NULL);
	expect_bare("BDAT 2\r\r\nXCLIENT A=1\r\n", true, 0, NORMALIZE, "BDAT 2\r\n\r\n" R, NULL);
	expect_bare("NOOP\nBDAT 1 X\nXCLIENT A=1\r\n", true, 0, NORMALIZE, "NOOP\r\n",
		    "malformed BDAT command");
	expect_bare("NOOP\nBDAT 1\nXCLIENT A=1\r\n", false, 0, NORMALIZE, "NOOP\r\n",
		    "BDAT without CHUNKING");
}

static void text_mode(struct smtp_track *t, enum smtp_track_bare bare)
{
	size_t outlen, used;
	char out[64];
	bool cap, end;

	smtp_track_init(t, true, bare);
	assert_int_equal(smtp_track_client(t, "DATA\r\n", 6, out, &outlen, &used), TRACK_HOLD);
	smtp_track_server(t, "354 go\r\n", 8, &cap, &end);
	assert_true(smtp_track_in_text(t));
}

/* Clean text still goes without a copy (smtp_track_pass()); normalizing
 * stops it only where it rewrites. */
static void test_normalize_pass_clean_text(void **state)
{
	static const char clean[] = "Subject: x\r\n\r\nhello\r\nworld\r\n";
	struct smtp_track t;

	(void)state;
	text_mode(&t, NORMALIZE);
	assert_int_equal(smtp_track_pass(&t, clean, strlen(clean)), strlen(clean));
	/* a CR at the end of a buffer goes too; the LF that completes it in
	 * the next one as well */
	assert_int_equal(smtp_track_pass(&t, "abc\r", 4), 4);
	assert_int_equal(smtp_track_pass(&t, "\ndef\r\n", 7), 7);
	/* it stops at a bare LF, a bare CR and a "." line start */
	assert_int_equal(smtp_track_pass(&t, "abc\ndef\r\n", 10), 3);
	text_mode(&t, NORMALIZE);
	assert_int_equal(smtp_track_pass(&t, "ab\rcd\r\n", 8), 3);
	assert_int_equal(smtp_track_pass(&t, "cd\r\n", 4), 0);
	text_mode(&t, NORMALIZE);
	assert_int_equal(smtp_track_pass(&t, "ab\r\n.\r\n", 8), 4);
	text_mode(&t, REJECT);
	assert_int_equal(smtp_track_pass(&t, clean, strlen(clean)), strlen(clean));
	assert_int_equal(smtp_track_pass(&t, "abc\ndef\r\n", 10), 3);
	assert_null(smtp_track_error(&t));
}

/* Normalizing may double the text: the output stays within len + SLACK,
 * and all of it is taken in a few calls. */
static void test_normalize_bounded_output(void **state)
{
	static char in[4000], out[sizeof(in) + SMTP_TRACK_SLACK];
	size_t total = 0, off = 0, outlen, used;
	struct smtp_track t;

	(void)state;
	for (size_t i = 0; i < sizeof(in); i += 2)
		memcpy(in + i, i % 4 ? "\n." : "\r.", 2);
	text_mode(&t, NORMALIZE);
	while (off < sizeof(in)) {
		smtp_track_client(&t, in + off, sizeof(in) - off, out, &outlen, &used);
		assert_true(outlen <= sizeof(in) - off + SMTP_TRACK_SLACK);
		assert_true(used > 0);
		total += outlen;
		off += used;
	}
	/* every line is "." after a bare line end: "..\r\n", but the last,
	 * held */
	assert_int_equal(total, (sizeof(in) / 2 - 1) * 4 + 2);
}

/* ---- bare_newline: reject ---- */

static void test_reject_text(void **state)
{
	(void)state;
	expect_bare("DATA\r\nfoo\nbar\r\n.\r\n", true, ALL_354, REJECT, "DATA\r\nfoo",
		    "bare <LF> in message text");
	expect_bare("DATA\r\nfoo\rbar\r\n.\r\n", true, ALL_354, REJECT, "DATA\r\nfoo\r",
		    "bare <CR> in message text");
	expect_bare("DATA\r\nx\n.\nMAIL FROM:<x>\r\n.\r\n", true, ALL_354, REJECT, "DATA\r\nx",
		    "bare <LF> in message text");
	expect_bare("DATA\r\nx\r\n.\nMAIL FROM:<x>\r\n", true, ALL_354, REJECT, "DATA\r\nx\r\n",
		    "bare <LF> in message text");
	expect_bare("DATA\r\nx\r\n.\rMAIL FROM:<x>\r\n", true, ALL_354, REJECT, "DATA\r\nx\r\n",
		    "bare <CR> in message text");
	expect_bare("DATA\r\n\n.\r\n", true, ALL_354, REJECT, "DATA\r\n",
		    "bare <LF> in message text");
	/* clean text passes as it is */
	expect_bare("DATA\r\nhello\r\n..\r\n\r\n.\r\nQUIT\r\n", true, ALL_354, REJECT,
		    "DATA\r\nhello\r\n..\r\n\r\n.\r\nQUIT\r\n", NULL);
	expect_messages("DATA\r\nhello\r\n..\r\n.\r\nQUIT\r\n", REJECT, 1, "hello\r\n.\r\n");
}

static void test_reject_commands_and_bdat(void **state)
{
	(void)state;
	expect_bare("NOOP\nQUIT\r\n", true, 0, REJECT, "NOOP", "bare <LF> in a command line");
	expect_bare("NOOP\rQUIT\r\n", true, 0, REJECT, "NOOP", "bare <CR> in a command line");
	expect_bare("NOOP\r\nBDAT 3\nabc", true, 0, REJECT, "NOOP\r\n",
		    "bare <LF> in a command line");
	/* chunk octets are not lines */
	expect_bare("BDAT 3\r\na\nbNOOP\r\n", true, 0, REJECT, "BDAT 3\r\na\nbNOOP\r\n", NULL);
	/* the tracker's own refusals stay what they are */
	expect_bare("NOOP\r\nBDAT 1 X\r\n", true, 0, REJECT, "NOOP\r\n", "malformed BDAT command");
}

/* Passing (the xclient handoff alone), a bare LF is the tracker's
 * refusal, not a rejection of the bare LF. */
static void test_pass_is_not_reject(void **state)
{
	struct track_opts o = { .framing = FR_CRLF, .chunking = true };
	uint8_t step = 255;

	(void)state;
	track_drive(&run, "NOOP\nQUIT\r\n", 12, &o, &step, 1);
	assert_string_equal(run.error, "bare <LF> in a command line");
	assert_false(run.bare_failed);
	free(run.out);
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
		cmocka_unit_test(test_normalize_commands),
		cmocka_unit_test(test_normalize_text),
		cmocka_unit_test(test_normalize_ambiguous_end_of_data),
		cmocka_unit_test(test_normalize_smuggling),
		cmocka_unit_test(test_normalize_data_line_bare),
		cmocka_unit_test(test_normalize_bdat),
		cmocka_unit_test(test_normalize_pass_clean_text),
		cmocka_unit_test(test_normalize_bounded_output),
		cmocka_unit_test(test_reject_text),
		cmocka_unit_test(test_reject_commands_and_bdat),
		cmocka_unit_test(test_pass_is_not_reject),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
