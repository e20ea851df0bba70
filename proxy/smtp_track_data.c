/* smtp_track_data.c - the client-stream tracker's message text: DATA
 * passed, rejected or normalized (line ends, dot-stuffing, the end of
 * data), and BDAT chunks passed. See smtp_track.h. */
#include "proxy/smtp_track_int.h"

#include <string.h>

#define AMBIGUOUS_END "bare <LF> or <CR> at a \".\" line in message text"
#define BARE_LF_TEXT "bare <LF> in message text"
#define BARE_CR_TEXT "bare <CR> in message text"

/* The strict end of data was sent: commands again. */
static void end_data(struct smtp_track *t)
{
	t->mode = M_CMD;
	t->cstate = C_START;
	t->line_bytes = 0;
	t->cmds_sent++; /* the end of data is answered */
}

/* While out is being written: what is not yet flushed lies in
 * in[start..i). */
#define FLUSH()                                             \
	do {                                                \
		if (out)                                    \
			put(out, o, in + start, i - start); \
		start = i;                                  \
	} while (0)

/* Stop before in[i], the bare LF or CR that rejecting refuses; with out
 * NULL (smtp_track_pass()) only stop, so that the failure is
 * smtp_track_client()'s. */
#define REJECT_AT(why)               \
	do {                         \
		FLUSH();             \
		if (!out)            \
			return i;    \
		bare_fail(t, (why)); \
	} while (0)

/*
 * Message text over in[0..n), passing or rejecting bare LF and CR. With
 * out NULL, only what passes exactly as it is: it stops before a "." at a
 * line start (which is held, so the output would differ). Returns octets
 * consumed.
 */
size_t track_data_step(struct smtp_track *t, const char *in, size_t n, char *out, size_t *o)
{
	bool reject = t->bare == TRACK_BARE_REJECT;
	size_t i = 0, start = 0;

	while (i < n && t->mode == M_DATA) {
		char c = in[i];

		switch (t->dstate) {
		case D_MID: {
			/* only line ends matter: find the next LF, then any CR
			 * before it */
			const char *lf = memchr(in + i, '\n', n - i);
			size_t e = lf ? (size_t)(lf - in) : n;
			const char *cr = memchr(in + i, '\r', e - i);

			if (cr) {
				i = (size_t)(cr - in) + 1;
				t->dstate = D_CR;
			} else if (lf && reject) {
				i = e;
				REJECT_AT(BARE_LF_TEXT);
			} else if (lf) {
				i = e + 1;
				t->dstate = D_BOL_L;
			} else {
				i = n;
			}
			break;
		}
		case D_CR:
		case D_BOL_S:
		case D_BOL_L:
			if (reject && t->dstate == D_CR && c != '\n') {
				REJECT_AT(BARE_CR_TEXT);
			} else if (c == '.') {
				FLUSH();
				if (!out)
					return i;
				/* a "." after a bare CR starts a line for some */
				t->dstate = t->dstate == D_BOL_S ? D_DOT_S : D_DOT_L;
				start = ++i; /* held */
			} else if (c == '\n' && reject && t->dstate != D_CR) {
				REJECT_AT(BARE_LF_TEXT);
			} else if (c == '\n') {
				t->dstate = t->dstate == D_CR ? D_BOL_S : D_BOL_L;
				i++;
			} else if (c == '\r') {
				t->dstate = D_CR;
				i++;
			} else {
				t->dstate = D_MID;
			}
			break;
		case D_DOT_S:
		case D_DOT_L:
			if (c == '\n') {
				if (reject)
					bare_fail(t, BARE_LF_TEXT);
				else
					fail(t, AMBIGUOUS_END);
			} else if (c == '\r') {
				t->dstate = t->dstate == D_DOT_S ? D_DOTCR_S : D_DOTCR_L;
				start = ++i; /* held */
			} else {
				put(out, o, ".", 1); /* a dot-stuffed or plain line */
				t->dstate = D_MID;
			}
			break;
		case D_DOTCR_S:
			if (c != '\n') {
				if (reject)
					bare_fail(t, BARE_CR_TEXT);
				else
					fail(t, AMBIGUOUS_END);
				break;
			}
			put(out, o, ".\r\n", 3);
			start = ++i;
			end_data(t);
			break;
		case D_DOTCR_L:
			fail(t, AMBIGUOUS_END);
			break;
		}
	}
	if (t->mode == M_DATA || t->mode == M_CMD)
		FLUSH();
	return t->mode == M_FAIL ? start : i;
}

/*
 * Message text over in[0..n), normalizing: bare LF and bare CR become
 * CRLF (a CR is sent at once, and the LF after it is the client's or
 * added), and a "." line that a bare line end starts or ends is sent
 * "..", so only the client's strict CRLF "." CRLF ends the data. With out
 * NULL, only what passes exactly as it is (it stops where an octet is
 * added or rewritten, and before a "." at a line start). Writes at most
 * 2 * n + 4 octets. Returns octets consumed.
 */
size_t track_norm_step(struct smtp_track *t, const char *in, size_t n, char *out, size_t *o)
{
	size_t i = 0, start = 0;

	while (i < n && t->mode == M_DATA) {
		char c = in[i];
		bool strict = t->dstate == D_DOT_S || t->dstate == D_DOTCR_S;

		switch (t->dstate) {
		case D_MID: {
			const char *lf = memchr(in + i, '\n', n - i);
			size_t e = lf ? (size_t)(lf - in) : n;
			const char *cr = memchr(in + i, '\r', e - i);

			if (cr) {
				i = (size_t)(cr - in) + 1;
				t->dstate = D_CR;
			} else if (lf) {
				i = e;
				FLUSH();
				if (!out)
					return i;
				put(out, o, "\r\n", 2);
				start = ++i;
				t->dstate = D_BOL_L;
			} else {
				i = n;
			}
			break;
		}
		case D_CR:
			if (c == '\n') {
				i++;
				t->dstate = D_BOL_S;
				break;
			}
			/* the CR was bare: its LF is added, c starts a line */
			FLUSH();
			if (!out)
				return i;
			put(out, o, "\n", 1);
			t->dstate = D_BOL_L;
			break;
		case D_BOL_S:
		case D_BOL_L:
			if (c == '.' || c == '\n') {
				FLUSH();
				if (!out)
					return i;
			}
			if (c == '.') {
				t->dstate = t->dstate == D_BOL_S ? D_DOT_S : D_DOT_L;
				start = ++i; /* held */
			} else if (c == '\n') {
				put(out, o, "\r\n", 2);
				start = ++i;
				t->dstate = D_BOL_L;
			} else if (c == '\r') {
				i++;
				t->dstate = D_CR;
			} else {
				t->dstate = D_MID;
			}
			break;
		case D_DOT_S:
		case D_DOT_L:
			if (c == '\r') {
				t->dstate = strict ? D_DOTCR_S : D_DOTCR_L;
				start = ++i; /* held */
			} else if (c == '\n') {
				put(out, o, "..\r\n", 4); /* text, not the end */
				start = ++i;
				t->dstate = D_BOL_L;
			} else {
				put(out, o, ".", 1); /* a dot-stuffed or plain line */
				t->dstate = D_MID;
			}
			break;
		case D_DOTCR_S:
		case D_DOTCR_L:
			if (c == '\n' && strict) {
				put(out, o, ".\r\n", 3);
				start = ++i;
				end_data(t);
				break;
			}
			/* a "." line, but not the client's strict CRLF.CRLF */
			put(out, o, "..\r\n", 4);
			if (c == '\n')
				start = ++i;
			t->dstate = c == '\n' ? D_BOL_S : D_BOL_L;
			break;
		}
	}
	if (t->mode == M_DATA || t->mode == M_CMD)
		FLUSH();
	return i;
}

#undef REJECT_AT
#undef FLUSH

/* A "." or ".\r" is held: what is written next differs from the input. */
static bool dot_held(const struct smtp_track *t)
{
	return t->dstate == D_DOT_S || t->dstate == D_DOT_L || t->dstate == D_DOTCR_S ||
	       t->dstate == D_DOTCR_L;
}

size_t smtp_track_pass(struct smtp_track *t, const char *in, size_t len)
{
	if (t->mode == M_BDAT) {
		size_t n = len < t->bdat_left ? len : (size_t)t->bdat_left;

		t->bdat_left -= n;
		if (!t->bdat_left)
			t->mode = M_CMD;
		return n;
	}
	if (t->mode == M_DATA && !dot_held(t))
		return normalizing(t) ? track_norm_step(t, in, len, NULL, NULL)
				      : track_data_step(t, in, len, NULL, NULL);
	return 0;
}
