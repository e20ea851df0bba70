/* test_reuse.c - what backend session reuse (proxy/reuse.c) asks of the
 * client-stream tracker: it stops at a clean QUIT only, never after a
 * verb outside the reusable set, never inside message text, and says
 * when every command passed has had its final reply. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proxy/smtp_track.h"

static char out[4096];
static size_t outlen;

/* Feed all of in (calling again while the tracker takes input); returns
 * octets consumed, the output in out[0..outlen). */
static size_t feed(struct smtp_track *t, const char *in)
{
	size_t len = strlen(in), used_all = 0;

	outlen = 0;
	while (used_all < len) {
		size_t o = 0, used = 0;
		enum smtp_track_result r = smtp_track_client(t, in + used_all, len - used_all,
							     out + outlen, &o, &used);

		outlen += o;
		used_all += used;
		assert_int_not_equal(r, TRACK_FAIL);
		if (!used && !o)
			break;
	}
	out[outlen] = '\0';
	return used_all;
}

static void reply(struct smtp_track *t, const char *r)
{
	size_t off = 0, len = strlen(r);

	while (off < len) {
		bool cap, end;

		off += smtp_track_server(t, r + off, len - off, &cap, &end);
	}
}

static void start(struct smtp_track *t)
{
	smtp_track_init(t, true, TRACK_BARE_PASS);
	smtp_track_stop_at_quit(t);
}

static void stops_at_clean_quit(void **state)
{
	static const char in[] = "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nQUIT\r\n";
	struct smtp_track t;

	(void)state;
	start(&t);
	/* the CRLF is left: the relay keeps it and holds the client */
	assert_int_equal(feed(&t, in), strlen(in) - 2);
	assert_string_equal(out, "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n");
	assert_true(smtp_track_quit(&t));
	assert_true(smtp_track_holding(&t));
	assert_false(smtp_track_answered(&t));
	reply(&t, "250 2.1.0 Ok\r\n250-2.1.5");
	assert_false(smtp_track_answered(&t));
	reply(&t, " Ok\r\n");
	assert_false(smtp_track_answered(&t)); /* "250-" is not final */
	reply(&t, "250 2.1.5 Ok\r\n");
	assert_true(smtp_track_answered(&t));
}

static void data_then_quit(void **state)
{
	struct smtp_track t;

	(void)state;
	start(&t);
	feed(&t, "DATA\r\n");
	assert_true(smtp_track_holding(&t) && !smtp_track_quit(&t));
	reply(&t, "354 go\r\n");
	/* a QUIT line in message text is text */
	feed(&t, "QUIT\r\n.\r\nQUIT\r\n");
	assert_string_equal(out, "QUIT\r\n.\r\n");
	assert_true(smtp_track_quit(&t));
	assert_false(smtp_track_answered(&t));
	reply(&t, "250 2.0.0 queued\r\n");
	assert_true(smtp_track_answered(&t));
}

static void bdat_counts_each_chunk(void **state)
{
	struct smtp_track t;

	(void)state;
	start(&t);
	feed(&t, "BDAT 6\r\nQUIT\r\nBDAT 0 LAST\r\nQUIT\r\n");
	assert_string_equal(out, "BDAT 6\r\nQUIT\r\nBDAT 0 LAST\r\n");
	assert_true(smtp_track_quit(&t));
	reply(&t, "250 2.0.0 6 octets\r\n");
	assert_false(smtp_track_answered(&t));
	reply(&t, "250 2.0.0 queued\r\n");
	assert_true(smtp_track_answered(&t));
}

/* Each is passed on, QUIT included, and the stream never stops. */
static void never_after(const char *before)
{
	struct smtp_track t;
	char in[256];

	start(&t);
	snprintf(in, sizeof(in), "%sQUIT\r\n", before);
	assert_int_equal(feed(&t, in), strlen(in));
	assert_false(smtp_track_quit(&t));
}

static void unsafe_verbs_pass_quit(void **state)
{
	(void)state;
	never_after("AUTH PLAIN AHVzZXIAc2VjcmV0\r\n");
	never_after("auth login\r\n");
	never_after("FOOBAR\r\n");
	never_after("MAILX FROM:<a@x>\r\n");
	never_after("STARTTLS\r\n");
	never_after("XCLIENT ADDR=192.0.2.1\r\n");
	never_after("XFORWARD ADDR=192.0.2.1\r\n");
	never_after("ETRN x\r\n");
	/* the QUIT itself is not clean */
	{
		struct smtp_track t;

		start(&t);
		feed(&t, "QUIT now\r\n QUIT\r\n\tQUIT\r\nQUIT\r\n");
		assert_false(smtp_track_quit(&t));
	}
}

static void reusable_verbs_stop(void **state)
{
	struct smtp_track t;

	(void)state;
	start(&t);
	feed(&t, "ehlo a\r\n"); /* held for its reply */
	reply(&t, "250 ok\r\n");
	feed(&t, "HELO b\r\nRSET\r\nNOOP\r\nVRFY x\r\nHELP\r\nquit\r\n");
	assert_true(smtp_track_quit(&t));
}

static void split_quit_fails_safe(void **state)
{
	struct smtp_track t;

	(void)state;
	start(&t);
	feed(&t, "QUI");
	feed(&t, "T\r");
	/* its LF not seen with it: passed on, as without reuse */
	assert_false(smtp_track_quit(&t));
	feed(&t, "\n");
	assert_false(smtp_track_quit(&t));
}

static void off_without_reuse(void **state)
{
	struct smtp_track t;

	(void)state;
	smtp_track_init(&t, true, TRACK_BARE_PASS);
	assert_int_equal(feed(&t, "QUIT\r\n"), 6);
	assert_string_equal(out, "QUIT\r\n");
	assert_false(smtp_track_quit(&t));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(stops_at_clean_quit),	  cmocka_unit_test(data_then_quit),
		cmocka_unit_test(bdat_counts_each_chunk), cmocka_unit_test(unsafe_verbs_pass_quit),
		cmocka_unit_test(reusable_verbs_stop),	  cmocka_unit_test(split_quit_fails_safe),
		cmocka_unit_test(off_without_reuse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
