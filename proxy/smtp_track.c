/* smtp_track.c - see smtp_track.h. The client-stream tracker: commands,
 * replies and BDAT lines; message text is in smtp_track_data.c. */
#include "proxy/smtp_track_int.h"

#include <string.h>
#include <strings.h>

#define REFUSED_LEN (sizeof(SMTP_TRACK_REFUSED) - 1)
/* output room one step may need beyond what it consumes: a held line start
 * and a replacement, or ".\r" held in message text */
#define STEP_ROOM (sizeof(((struct smtp_track *)0)->line) + REFUSED_LEN + 2)
#define BDAT_DIGITS_MAX 18

void smtp_track_init(struct smtp_track *t, bool chunking, enum smtp_track_bare bare)
{
	memset(t, 0, sizeof(*t));
	t->mode = M_CMD;
	t->chunking = chunking;
	t->bare = (uint8_t)bare;
}

bool smtp_track_holding(const struct smtp_track *t)
{
	return t->mode == M_HOLD || t->mode == M_QUIT;
}

bool smtp_track_in_text(const struct smtp_track *t)
{
	return t->mode == M_DATA || t->mode == M_BDAT;
}

const char *smtp_track_error(const struct smtp_track *t)
{
	return t->error;
}

bool smtp_track_bare(const struct smtp_track *t)
{
	return t->bare_failed;
}

unsigned smtp_track_refused(const struct smtp_track *t)
{
	return t->refused;
}

/* The separators a backend tokenizes a command on (Postfix: any blank). */
static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\v' || c == '\f';
}

/* A backend that cuts a long line (Postfix runs its first line_length_limit
 * octets as the command) may see any start of the verb as the verb: so a
 * verb is judged by how it starts (XCLIENTX is refused, DATAX held for
 * its reply, BDATX must be an exact BDAT line). */
static bool verb_starts(const struct smtp_track *t, const char *verb)
{
	size_t n = strlen(verb);

	return t->verb_len >= n && !strncasecmp(t->line, verb, n);
}

/* Count one more octet of the current command line; false (and the stream
 * failed) past SMTP_TRACK_LINE_MAX. */
static bool line_octet(struct smtp_track *t)
{
	if (t->line_bytes == SMTP_TRACK_LINE_MAX) {
		fail(t, "command line too long");
		return false;
	}
	t->line_bytes++;
	return true;
}

/* strict: the line ended in the client's own CRLF (not a bare LF or CR
 * normalized), which a "." line right after a DATA needs to end the data. */
static void end_line(struct smtp_track *t, bool strict)
{
	t->last_strict = strict;
	t->cmds_sent++;
	t->cstate = C_START;
	t->line_bytes = 0;
	t->verb_len = 0;
	if (t->line_kind != K_OTHER) {
		t->mode = M_HOLD;
		t->hold_kind = t->line_kind;
		t->hold_index = t->cmds_sent;
	}
	t->line_kind = K_OTHER;
}

/* The verb in line[0..verb_len) is complete: replace the line, or pass
 * what is held and the rest. */
static void decide(struct smtp_track *t, char *out, size_t *o, bool blanks_before)
{
	if (verb_starts(t, "XCLIENT") || verb_starts(t, "XFORWARD") || verb_starts(t, "STARTTLS")) {
		put(out, o, SMTP_TRACK_REFUSED, REFUSED_LEN);
		t->refused++;
		t->cmds_sent++;
		t->verb_len = 0;
		t->cstate = C_SKIP;
		return;
	}
	if (verb_starts(t, "BDAT")) {
		/* judged on the whole line; blanks before it are not exact */
		if (!t->chunking)
			fail(t, "BDAT without CHUNKING");
		else if (blanks_before)
			fail(t, "malformed BDAT command");
		else
			t->cstate = C_BDAT;
		return;
	}
	/* DATA with anything after it is held too: its reply decides */
	if (verb_starts(t, "DATA"))
		t->line_kind = K_DATA;
	else if (verb_starts(t, "EHLO"))
		t->line_kind = K_EHLO;
	put(out, o, t->line, t->verb_len);
	t->verb_len = 0;
	t->cstate = C_REST;
}

/* line[0..verb_len) is a whole BDAT line ending in LF: exactly
 * "BDAT" SP digits [SP "LAST"] CRLF, or -1. */
static int64_t bdat_size(const struct smtp_track *t)
{
	const char *p = t->line + 4, *end = t->line + t->verb_len - 2;
	int64_t n = 0;
	size_t digits = 0;

	if (t->verb_len < 8 || end[0] != '\r' || end[1] != '\n' || *p++ != ' ')
		return -1;
	for (; p < end && *p >= '0' && *p <= '9'; p++) {
		if (++digits > BDAT_DIGITS_MAX)
			return -1;
		n = n * 10 + (*p - '0');
	}
	if (!digits)
		return -1;
	if (p == end)
		return n;
	if (end - p == 5 && !strncasecmp(p, " LAST", 5))
		return n;
	return -1;
}

/* line[0..verb_len) is a whole BDAT line ending in CRLF: pass it and
 * start its chunk. */
static void bdat_line(struct smtp_track *t, char *out, size_t *o, bool strict)
{
	int64_t size = bdat_size(t);

	if (size < 0) {
		fail(t, "malformed BDAT command");
		return;
	}
	put(out, o, t->line, t->verb_len);
	end_line(t, strict);
	t->bdat_left = (uint64_t)size;
	if (size)
		t->mode = M_BDAT;
}

/* A BDAT line octet by octet. Normalizing, a bare LF or CR ends the line
 * as CRLF would (after a CR, the octet that shows it bare is not taken);
 * rejecting, it fails; passing, the line is judged as it is, exactly. */
static size_t bdat_step(struct smtp_track *t, char c, char *out, size_t *o)
{
	bool after_cr = t->verb_len && t->line[t->verb_len - 1] == '\r';

	if (c == '\0' || (size_t)t->verb_len + 2 > sizeof(t->line)) {
		fail(t, "malformed BDAT command");
		return 0;
	}
	if (t->bare != TRACK_BARE_PASS && after_cr && c != '\n') {
		if (!normalizing(t)) {
			bare_fail(t, "bare <CR> in a command line");
			return 0;
		}
		t->line[t->verb_len++] = '\n';
		bdat_line(t, out, o, false);
		return 0;
	}
	if (t->bare != TRACK_BARE_PASS && c == '\n' && !after_cr) {
		if (!normalizing(t)) {
			bare_fail(t, "bare <LF> in a command line");
			return 0;
		}
		t->line[t->verb_len++] = '\r';
	}
	t->line[t->verb_len++] = c;
	if (c == '\n')
		bdat_line(t, out, o, after_cr);
	return 1;
}

/* Backend session reuse: the verbs after which RSET and then XCLIENT or
 * EHLO leave the backend session holding nothing of its client's (no
 * SASL login, no XCLIENT attributes of its own, no TLS state). */
static const char *const reusable_verbs[] = { "EHLO", "HELO", "MAIL", "RCPT", "DATA",
					      "BDAT", "RSET", "NOOP", "VRFY", "HELP" };

static bool verb_is(const struct smtp_track *t, const char *verb)
{
	size_t n = strlen(verb);

	return t->verb_len == n && !strncasecmp(t->line, verb, n);
}

/* The verb in line[0..verb_len) is complete and in[0..n) follows it: true
 * (M_QUIT, its CRLF left unconsumed) at the clean QUIT reuse stops at;
 * else the verb is judged for reuse, exactly (a backend runs the verb it
 * reads, not a start of it). */
static bool reuse_verb(struct smtp_track *t, const char *in, size_t n, bool blanks_before)
{
	bool ok = false;

	if (!t->unsafe && !blanks_before && verb_is(t, "QUIT") && n >= 2 && in[0] == '\r' &&
	    in[1] == '\n') {
		t->mode = M_QUIT;
		return true;
	}
	for (size_t k = 0; k < sizeof(reusable_verbs) / sizeof(reusable_verbs[0]); k++)
		ok = ok || verb_is(t, reusable_verbs[k]);
	if (!ok)
		t->unsafe = true;
	return false;
}

void smtp_track_stop_at_quit(struct smtp_track *t)
{
	t->quit_stop = true;
}

bool smtp_track_quit(const struct smtp_track *t)
{
	return t->mode == M_QUIT;
}

bool smtp_track_answered(const struct smtp_track *t)
{
	return t->replies_seen == t->cmds_sent && !t->reply_mid;
}

/* One step in command mode over in[0..n): returns octets consumed. */
static size_t cmd_step(struct smtp_track *t, const char *in, size_t n, char *out, size_t *o,
		       size_t room)
{
	size_t i = 0;
	char c = in[0];

	switch (t->cstate) {
	case C_START:
		if (is_blank(c)) {
			if (!line_octet(t))
				return 0;
			put(out, o, &c, 1);
			return 1;
		}
		if (c == '\0') {
			fail(t, "NUL in a command line");
			return 0;
		}
		if (c == '\r' || c == '\n') {
			t->cstate = C_REST; /* an empty line: its end follows */
			t->unsafe = true;   /* no verb reuse allows */
			return 0;
		}
		t->cstate = C_VERB;
		return 0;
	case C_VERB:
		if (is_blank(c) || c == '\r' || c == '\n' || t->verb_len == sizeof(t->line)) {
			if (t->quit_stop && reuse_verb(t, in, n, t->line_bytes > t->verb_len))
				return 0;
			decide(t, out, o, t->line_bytes > t->verb_len);
			return 0;
		}
		if (c == '\0') {
			fail(t, "NUL in a command line");
			return 0;
		}
		if (!line_octet(t))
			return 0;
		t->line[t->verb_len++] = c;
		return 1;
	case C_BDAT:
		return bdat_step(t, c, out, o);
	case C_REST: {
		/* line_bytes never exceeds the limit: the octet that would is
		 * not sent */
		size_t allowed = SMTP_TRACK_LINE_MAX - t->line_bytes;

		if (n > room)
			n = room;
		while (i < n && in[i] != '\r' && in[i] != '\n' && in[i] != '\0' && i < allowed)
			i++;
		put(out, o, in, i);
		t->line_bytes += (uint32_t)i;
		if (i == n)
			return i;
		if (i == allowed && in[i] != '\r' && in[i] != '\n' && in[i] != '\0') {
			fail(t, "command line too long");
			return i;
		}
		if (in[i] == '\0') {
			fail(t, "NUL in a command line");
		} else if (in[i] == '\r') {
			/* held until we know it ends the line: a line ended
			 * by a bare CR is held for a reply like any other */
			t->cstate = C_CR;
			i++;
		} else if (normalizing(t)) {
			put(out, o, "\r\n", 2);
			end_line(t, false);
			i++;
		} else {
			/* a strict backend would read on: the line ends
			 * differ */
			bare_fail(t, "bare <LF> in a command line");
		}
		return i;
	}
	case C_CR:
		if (c == '\n') {
			put(out, o, "\r\n", 2);
			end_line(t, true);
			return 1;
		}
		if (normalizing(t)) {
			/* the bare CR ended the line; c starts the next */
			put(out, o, "\r\n", 2);
			end_line(t, false);
			return 0;
		}
		bare_fail(t, "bare <CR> in a command line");
		return 0;
	case C_SKIP: {
		const char *lf = memchr(in, '\n', n);
		size_t e = lf ? (size_t)(lf - in) : n;
		const char *cr = normalizing(t) ? memchr(in, '\r', e) : NULL;

		/* normalizing, a bare CR ends the replaced line too, as it
		 * ends it for the backend once it is CRLF */
		if (cr) {
			t->cstate = C_SKIP_CR;
			return (size_t)(cr - in) + 1;
		}
		if (!lf)
			return n;
		t->cstate = C_START;
		t->line_bytes = 0;
		return e + 1;
	}
	case C_SKIP_CR:
		t->cstate = C_START;
		t->line_bytes = 0;
		return c == '\n';
	}
	return 0;
}

enum smtp_track_result smtp_track_client(struct smtp_track *t, const char *in, size_t len,
					 char *out, size_t *outlen, size_t *consumed)
{
	size_t i = 0, o = 0, cap = len + SMTP_TRACK_SLACK;

	while (i < len && t->mode != M_HOLD && t->mode != M_FAIL && t->mode != M_QUIT &&
	       cap - o > STEP_ROOM) {
		size_t room = cap - o - STEP_ROOM, n = len - i;
		bool text = smtp_track_in_text(t);

		if (n > room)
			n = room;
		if (t->mode == M_BDAT) {
			size_t k = smtp_track_pass(t, in + i, n);

			put(out, &o, in + i, k);
			i += k;
		} else if (t->mode == M_DATA && normalizing(t)) {
			/* an octet may become two, and a held ".\r" four */
			if (n > room / 2)
				n = room / 2 ? room / 2 : 1;
			i += track_norm_step(t, in + i, n, out, &o);
		} else if (t->mode == M_DATA) {
			i += track_data_step(t, in + i, n, out, &o);
		} else {
			i += cmd_step(t, in + i, n, out, &o, n);
		}
		/* what one call writes is commands, or text from its start:
		 * a chunk that a bare CR's next octet starts waits for the
		 * next call */
		if (!text && o && smtp_track_in_text(t))
			break;
	}
	*outlen = o;
	*consumed = i;
	if (t->mode == M_FAIL)
		return TRACK_FAIL;
	return smtp_track_holding(t) ? TRACK_HOLD : TRACK_MORE;
}

/* A final reply line was seen. */
static void on_reply(struct smtp_track *t)
{
	bool is354 = !memcmp(t->reply_code, "354", 3);

	t->replies_seen++;
	if (t->replies_seen > t->cmds_sent) {
		/* a reply nothing asked for: the count no longer shows
		 * what is answered, so no reuse; a QUIT stopped at goes on */
		t->unsafe = true;
		if (t->mode == M_QUIT)
			t->mode = M_CMD;
	}
	if (t->mode == M_HOLD && t->replies_seen == t->hold_index) {
		if (t->hold_kind == K_DATA && is354) {
			/* normalizing, a DATA line that a bare LF or CR ended
			 * does not make a "." line right after it an end */
			t->mode = M_DATA;
			t->dstate = normalizing(t) && !t->last_strict ? D_BOL_L : D_BOL_S;
		} else {
			t->mode = M_CMD;
			t->cstate = C_START;
		}
		return;
	}
	if (is354 && t->mode != M_FAIL)
		fail(t, "354 reply out of turn");
}

size_t smtp_track_server(struct smtp_track *t, const char *in, size_t len, bool *capture, bool *end)
{
	bool seg = t->capturing;
	size_t i;

	*end = false;
	for (i = 0; i < len; i++) {
		char c = in[i];

		if (!t->reply_mid) {
			bool cap = t->mode == M_HOLD && t->hold_kind == K_EHLO &&
				   t->replies_seen + 1 == t->hold_index;

			if (i == 0)
				seg = cap;
			else if (cap != seg)
				break;
			t->capturing = cap;
			t->reply_mid = true;
		}
		if (c == '\n') {
			/* "DDD " or a bare "DDD" ends a reply; "DDD-" does not */
			bool final =
				t->reply_pos == 3 || (t->reply_pos == 4 && t->reply_sep != '-');

			t->reply_pos = 0;
			t->reply_mid = false;
			if (!final)
				continue;
			on_reply(t);
			if (t->capturing) {
				t->capturing = false;
				*end = true;
				i++;
				break;
			}
			continue;
		}
		if (t->reply_pos < 3)
			t->reply_code[t->reply_pos] = c;
		else if (t->reply_pos == 3)
			t->reply_sep = c == '\r' ? ' ' : c;
		if (t->reply_pos < 4)
			t->reply_pos++;
	}
	*capture = seg;
	return i;
}
