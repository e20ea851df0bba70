/* track_model.h - a reference model of how an SMTP backend reads what the
 * tracker (proxy/smtp_track.c) lets through, for the differential fuzz
 * target and the unit tests. Written from the servers' side, not from the
 * tracker's: lines, tokens, DATA to a "." line, BDAT by length.
 *
 * Three framings: FR_CRLF (only CRLF ends a line, a strict server),
 * FR_LF (LF ends a line, a CR before it is dropped, a command is its
 * first 2048 octets: Postfix before 3.9), FR_ANY (CR, LF or CRLF end a
 * line, a command is its first 512 octets: the most lenient reading). The model
 * answers like a server and its replies go back to the tracker, so the
 * tracker is driven by the backend it guards.
 *
 * Every octet the tracker writes carries a tag: written while the tracker
 * was in message text or a chunk (TAG_TEXT), or in commands (TAG_CMD).
 * The model aborts when it takes an octet as a command that the tracker
 * wrote as text, or the reverse (they disagree on framing), and when it
 * executes XCLIENT, XFORWARD or STARTTLS. The driver also checks that what
 * the tracker writes as text is exactly what the client sent as text, or,
 * normalizing (bare_newline: normalize), exactly what model_normalize()
 * (the spec's reading, line by line) makes of it.
 *
 * Each model keeps the messages it took (DATA text dot-unstuffed, BDAT
 * chunks as they are), so that a caller can compare what a strict, a
 * Postfix-like and a lenient backend took from the same tracker output:
 * normalizing or rejecting, they must all take the same messages.
 */
#ifndef MXLB_TRACK_MODEL_H
#define MXLB_TRACK_MODEL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { FR_CRLF, FR_LF, FR_ANY, FR_COUNT };
enum { TAG_CMD, TAG_TEXT };
enum { MM_CMD, MM_DATA, MM_BDAT, MM_DONE };

#define MODEL_LINE_MAX 16384
#define MODEL_REPLY_MAX 65536
#define MODEL_MSG_MAX (256 * 1024)
#define MODEL_MSGS_MAX 8192

struct model {
	int framing;
	bool chunking;
	int mode;
	size_t cut; /* a command is its first cut octets; 0: all of it */
	char line[MODEL_LINE_MAX];
	size_t len;
	bool overflow;
	bool cr_last;  /* the last octet of the line so far was a CR */
	bool after_cr; /* FR_ANY: the last line ended at a CR */
	uint64_t bdat_left;
	uint32_t decisions; /* bit i: the i-th DATA gets 354 (else 554) */
	unsigned ndata;
	char reply[MODEL_REPLY_MAX];
	size_t rlen;
	unsigned messages;     /* data ends and chunks taken */
	uint64_t nreplies;     /* replies given: commands, data ends, chunks */
	bool unsafe_verb;      /* ran a verb outside the ten reuse allows */
	const char *violation; /* set instead of aborting when non-NULL wanted */
	/* the text of the messages taken, one after the other, and where
	 * each ends (the first MODEL_MSGS_MAX) */
	char msg[MODEL_MSG_MAX];
	size_t msg_len;
	bool msg_overflow;
	uint32_t msg_ends[MODEL_MSGS_MAX];
};

/* The command length each framing's server runs (Postfix cuts at its
 * line_length_limit, the most lenient reading at RFC 5321's 512). */
static inline size_t model_cut(int framing)
{
	return framing == FR_LF ? 2048 : framing == FR_ANY ? 512 : 0;
}

static inline void model_init(struct model *m, int framing, bool chunking, uint32_t decisions)
{
	/* not memset: the message buffer is large and only msg_len matters */
	m->framing = framing;
	m->chunking = chunking;
	m->mode = MM_CMD;
	m->cut = model_cut(framing);
	m->len = 0;
	m->overflow = m->cr_last = m->after_cr = false;
	m->bdat_left = 0;
	m->decisions = decisions;
	m->ndata = 0;
	m->rlen = 0;
	m->messages = 0;
	m->nreplies = 0;
	m->unsafe_verb = false;
	m->violation = NULL;
	m->msg_len = 0;
	m->msg_overflow = false;
}

static inline void model_msg_add(struct model *m, const char *p, size_t n)
{
	if (m->msg_len + n > sizeof(m->msg)) {
		m->msg_overflow = true;
		return;
	}
	memcpy(m->msg + m->msg_len, p, n);
	m->msg_len += n;
}

/* A message (a DATA's text or a chunk) was taken whole. */
static inline void model_msg_end(struct model *m)
{
	if (m->messages < MODEL_MSGS_MAX)
		m->msg_ends[m->messages] = (uint32_t)m->msg_len;
	m->messages++;
}

static inline void model_violation(struct model *m, const char *why)
{
	m->violation = why;
	fprintf(stderr, "track model (framing %d): %s\n", m->framing, why);
	abort();
}

static inline void model_reply(struct model *m, const char *r)
{
	size_t n = strlen(r);

	m->nreplies++;
	if (m->rlen + n <= sizeof(m->reply)) {
		memcpy(m->reply + m->rlen, r, n);
		m->rlen += n;
	}
}

static inline bool model_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r';
}

/* The i-th token of line (blank separated, as Postfix splits commands). */
static inline size_t model_token(const char *line, size_t len, unsigned i, const char **tok)
{
	size_t p = 0;

	for (unsigned k = 0;; k++) {
		size_t s;

		while (p < len && model_blank(line[p]))
			p++;
		s = p;
		while (p < len && !model_blank(line[p]) && line[p] != '\0')
			p++;
		if (k == i) {
			*tok = line + s;
			return p - s;
		}
		if (p >= len)
			return *tok = line + len, 0;
		if (line[p] == '\0')
			return *tok = line + len, 0; /* C strings end at a NUL */
	}
}

static inline bool model_tok_is(const char *tok, size_t n, const char *word)
{
	return strlen(word) == n && !strncasecmp(tok, word, n);
}

static inline void model_command(struct model *m)
{
	const char *verb, *arg1, *arg2, *arg3;
	size_t vn, n1, n2, n3;

	(void)arg3;
	/* a server that cuts a long line runs its start as the command */
	if (m->cut && m->len > m->cut)
		m->len = m->cut;
	vn = model_token(m->line, m->len, 0, &verb);
	n1 = model_token(m->line, m->len, 1, &arg1);
	n2 = model_token(m->line, m->len, 2, &arg2);
	n3 = model_token(m->line, m->len, 3, &arg3);
	if (m->overflow && m->framing == FR_CRLF) {
		model_reply(m, "500 5.5.0 Error: line too long\r\n");
		return;
	}
	/* backend session reuse: anything but these ten (an empty line too)
	 * must keep the connection from being parked */
	{
		static const char *const ok[] = { "EHLO", "HELO", "MAIL", "RCPT", "DATA",
						  "BDAT", "RSET", "NOOP", "VRFY", "HELP" };
		bool safe = false;

		for (size_t k = 0; k < sizeof(ok) / sizeof(ok[0]); k++)
			safe = safe || model_tok_is(verb, vn, ok[k]);
		if (!safe || m->overflow)
			m->unsafe_verb = true;
	}
	if (model_tok_is(verb, vn, "XCLIENT") || model_tok_is(verb, vn, "XFORWARD") ||
	    model_tok_is(verb, vn, "STARTTLS"))
		model_violation(m, "a client-written XCLIENT/XFORWARD/STARTTLS was executed");
	if (!vn) {
		model_reply(m, "500 5.5.2 Error: bad syntax\r\n");
	} else if (model_tok_is(verb, vn, "DATA")) {
		if (n1) {
			model_reply(m, "501 5.5.4 Syntax: DATA\r\n");
		} else if (m->decisions >> (m->ndata++ % 32) & 1) {
			model_reply(m, "354 End data with <CR><LF>.<CR><LF>\r\n");
			m->mode = MM_DATA;
		} else {
			model_reply(m, "554 5.5.1 Error: no valid recipients\r\n");
		}
	} else if (model_tok_is(verb, vn, "BDAT")) {
		uint64_t size = 0;
		bool ok = n1 > 0 && n1 <= 18 && (n2 == 0 || model_tok_is(arg2, n2, "LAST")) && !n3;

		for (size_t i = 0; ok && i < n1; i++) {
			if (arg1[i] < '0' || arg1[i] > '9')
				ok = false;
			else
				size = size * 10 + (uint64_t)(arg1[i] - '0');
		}
		if (!m->chunking) {
			model_reply(m, "502 5.5.1 Error: command not implemented\r\n");
		} else if (!ok) {
			model_reply(m, "501 5.5.4 Syntax: BDAT count [LAST]\r\n");
		} else if (size) {
			m->bdat_left = size;
			m->mode = MM_BDAT;
		} else {
			model_msg_end(m);
			model_reply(m, "250 2.0.0 Ok: 0 octets\r\n");
		}
	} else if (model_tok_is(verb, vn, "EHLO")) {
		model_reply(m, "250-mx.test\r\n250-XCLIENT ADDR NAME\r\n250-CHUNKING\r\n"
			       "250 8BITMIME\r\n");
	} else if (model_tok_is(verb, vn, "QUIT")) {
		model_reply(m, "221 2.0.0 Bye\r\n");
		m->mode = MM_DONE;
	} else {
		model_reply(m, "250 2.0.0 Ok\r\n");
	}
}

/* A whole line (without its ending) is in m->line. */
static inline void model_line(struct model *m)
{
	if (m->mode == MM_DATA) {
		if (m->len == 1 && m->line[0] == '.') {
			m->mode = MM_CMD;
			model_msg_end(m);
			model_reply(m, "250 2.0.0 Ok: queued\r\n");
		} else {
			/* dot-unstuffed (RFC 5321 4.5.2), lines in CRLF */
			size_t dot = m->len && m->line[0] == '.';

			model_msg_add(m, m->line + dot, m->len - dot);
			model_msg_add(m, "\r\n", 2);
		}
	} else {
		model_command(m);
	}
	m->len = 0;
	m->overflow = false;
	m->cr_last = false;
}

static inline void model_feed(struct model *m, const char *p, const uint8_t *tags, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];

		if (m->mode == MM_DONE)
			return;
		if (m->framing == FR_ANY && m->after_cr) {
			m->after_cr = false;
			if (c == '\n')
				continue; /* the LF of a CRLF ending */
		}
		if ((m->mode == MM_CMD) != (tags[i] == TAG_CMD))
			model_violation(m, m->mode == MM_CMD ? "the backend reads as commands what "
							       "the tracker passed as text"
							     : "the backend reads as text what the "
							       "tracker passed as commands");
		if (m->mode == MM_BDAT) {
			model_msg_add(m, &c, 1);
			if (!--m->bdat_left) {
				m->mode = MM_CMD;
				model_msg_end(m);
				model_reply(m, "250 2.0.0 Ok: chunk\r\n");
			}
			continue;
		}
		/* (a line past MODEL_LINE_MAX kept its start only, but its last
		 * octet still decides whether an LF ends it) */
		if (c == '\n' && m->framing == FR_LF) {
			if (m->cr_last && !m->overflow)
				m->len--;
			model_line(m);
			continue;
		}
		if (c == '\n' && m->framing == FR_CRLF && m->cr_last) {
			if (!m->overflow)
				m->len--;
			model_line(m);
			continue;
		}
		if ((c == '\n' || c == '\r') && m->framing == FR_ANY) {
			m->after_cr = c == '\r';
			model_line(m);
			continue;
		}
		if (m->len < sizeof(m->line))
			m->line[m->len++] = c;
		else
			m->overflow = true;
		m->cr_last = c == '\r';
	}
}

/* The messages two models took are the same (the count, and the text of
 * each that both recorded). */
static inline bool model_same_messages(const struct model *a, const struct model *b)
{
	unsigned n = a->messages < MODEL_MSGS_MAX ? a->messages : MODEL_MSGS_MAX;
	size_t len = n ? a->msg_ends[n - 1] : 0;

	if (a->messages != b->messages)
		return false;
	if (a->msg_overflow || b->msg_overflow)
		return true; /* the count only */
	return (!n || !memcmp(a->msg_ends, b->msg_ends, n * sizeof(a->msg_ends[0]))) &&
	       !memcmp(a->msg, b->msg, len);
}

/*
 * The spec's normalize (SPEC §9), written line by line and independently
 * of the tracker's octet machine: the client's message text T[0..n), from
 * the first octet after the DATA line to its end of data. A line ends at
 * CRLF, a bare LF or a bare CR, and goes on as its content and CRLF; a
 * line that is "." is the end only when the client's own CRLF ended the
 * line before it (strict: the DATA line, first) and it, and is "..",
 * text, otherwise. Writes at most 2 * n + 4 octets to out, and sets *ended
 * when the end was found at the very end of T, and *tail to where the
 * last line, not ended yet, starts (n when none).
 */
static inline size_t model_normalize(const char *T, size_t n, bool strict, char *out, bool *ended,
				     size_t *tail)
{
	size_t o = 0, p = 0;

	*ended = false;
	*tail = n;
	while (p < n) {
		size_t start = p, end;
		bool crlf, dot;

		while (p < n && T[p] != '\r' && T[p] != '\n')
			p++;
		end = p;
		if (p == n || (T[p] == '\r' && p + 1 == n)) {
			*tail = start; /* its end is not known yet */
			break;
		}
		crlf = T[p] == '\r' && T[p + 1] == '\n';
		p += crlf ? 2 : 1;
		dot = end - start == 1 && T[start] == '.';
		if (dot && strict && crlf) {
			memcpy(out + o, ".\r\n", 3);
			*ended = p == n;
			return o + 3;
		}
		if (dot)
			out[o++] = '.';
		memcpy(out + o, T + start, end - start);
		o += end - start;
		memcpy(out + o, "\r\n", 2);
		o += 2;
		strict = crlf;
	}
	return o;
}

/* ---- the driver: tracker and model together ---- */

#include "proxy/smtp_track.h"

struct track_run {
	struct model m;
	enum smtp_track_result last;
	char *out;     /* what the tracker let through */
	uint8_t *tags; /* each octet of out: TAG_CMD or TAG_TEXT */
	size_t out_len;
	size_t consumed; /* client octets taken */
	bool stalled;	 /* held for a reply the backend will not send */
	const char *error;
	bool bare_failed; /* smtp_track_bare() */
};

/* Length of the first reply (up to its final line) in p[0..n), or 0. */
static inline size_t model_one_reply(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		const char *lf = memchr(p + i, '\n', n - i);

		if (!lf)
			return 0;
		if (lf - (p + i) < 4 || p[i + 3] != '-')
			return (size_t)(lf - p) + 1;
		i = (size_t)(lf - p) + 1;
	}
	return 0;
}

/* Replies one at a time while the tracker holds; false when it holds and
 * none is left. */
static inline bool model_answer(struct smtp_track *t, const char *rep, size_t rlen, size_t *fed)
{
	while (smtp_track_holding(t)) {
		size_t n = model_one_reply(rep + *fed, rlen - *fed);

		if (!n)
			return false;
		for (size_t k = 0; k < n;) {
			bool cap, end;

			k += smtp_track_server(t, rep + *fed + k, n - k, &cap, &end);
		}
		*fed += n;
	}
	return true;
}

/* What a run is: the backend's framing and offer, its DATA decisions
 * (bit i: the i-th DATA gets 354, else 554), the listener's bare_newline,
 * and the command length the backend runs (0: the framing's own). */
struct track_opts {
	int framing;
	bool chunking;
	uint32_t decisions;
	enum smtp_track_bare bare;
	size_t cut;
};

/* One stretch of message text the tracker took, checked once complete
 * (complete) or when the run ends in it: a chunk passes as it is, a DATA's
 * text as model_normalize() has it. */
static inline void track_check_text(const char *in, size_t n, const char *out, size_t on,
				    bool chunk, bool strict, bool complete)
{
	char *want;
	size_t wn, tail;
	bool ended;

	if (chunk) {
		if (on != n || memcmp(out, in, n)) {
			fprintf(stderr, "track: a chunk was altered\n");
			abort();
		}
		return;
	}
	want = malloc(2 * n + 8);
	if (!want)
		abort();
	wn = model_normalize(in, n, strict, want, &ended, &tail);
	if (complete ? !ended || on != wn || memcmp(out, want, wn)
		     : on < wn || memcmp(out, want, wn) || on - wn > n - tail ||
			       memcmp(out + wn, in + tail, on - wn)) {
		fprintf(stderr,
			"track: normalized text is not the spec's (%zu octets in, %zu "
			"out, %zu wanted%s)\n",
			n, on, wn, complete ? "" : ", unfinished");
		abort();
	}
	free(want);
}

/*
 * Run client bytes in[0..len) through a tracker one octet at a time (so
 * each output octet's tag is exact), the output into the model, and the
 * model's replies back into the tracker whenever it holds. Then run them
 * through a second tracker in pieces of steps[k % nsteps] + 1 octets,
 * through smtp_track_pass() first as the relay does, given the same
 * replies: its output must be the same. r->out is malloc'ed.
 */
static inline void track_drive(struct track_run *r, const char *in, size_t len,
			       const struct track_opts *opt, const uint8_t *steps, size_t nsteps)
{
	struct smtp_track t;
	char out[1 + SMTP_TRACK_SLACK];
	uint8_t tags[sizeof(out)];
	size_t cap = 4 * len + 256, off = 0, fed = 0, o2 = 0, tin = 0, tout = 0;
	size_t seg_in = 0, seg_out = 0;
	bool norm = opt->bare == TRACK_BARE_NORMALIZE, seg = false, seg_chunk = false;
	bool seg_strict = false;
	char *out2, *text_in, *text_out;

	model_init(&r->m, opt->framing, opt->chunking, opt->decisions);
	if (opt->cut)
		r->m.cut = opt->cut;
	smtp_track_init(&t, opt->chunking, opt->bare);
	r->out = malloc(cap);
	free(r->tags);
	r->tags = malloc(cap);
	out2 = malloc(cap);
	text_in = malloc(len + 1);
	text_out = malloc(cap);
	if (!r->out || !r->tags || !out2 || !text_in || !text_out)
		abort();
	r->out_len = 0;
	r->stalled = false;
	r->last = TRACK_MORE;
	while (off < len && r->last != TRACK_FAIL && r->m.mode != MM_DONE) {
		size_t outlen = 0, used = 0;
		uint8_t tag = smtp_track_in_text(&t) ? TAG_TEXT : TAG_CMD;

		if (tag == TAG_TEXT && !seg) {
			/* a DATA's text starts after the DATA line's end:
			 * the client's CRLF, or a bare LF or CR */
			seg = true;
			seg_in = off;
			seg_out = r->out_len;
			seg_chunk = r->m.mode == MM_BDAT;
			seg_strict = off >= 2 && in[off - 1] == '\n' && in[off - 2] == '\r';
		}
		r->last = smtp_track_client(&t, in + off, 1, out, &outlen, &used);
		if (outlen > 1 + SMTP_TRACK_SLACK || used > 1 || r->out_len + outlen > cap)
			abort();
		memset(tags, tag, outlen);
		/* text out is text in, octet for octet (held octets come
		 * later); normalizing, it is checked by the stretch */
		if (tag == TAG_TEXT && !norm) {
			memcpy(text_in + tin, in + off, used);
			tin += used;
			memcpy(text_out + tout, out, outlen);
			tout += outlen;
			if (tout > tin || memcmp(text_out, text_in, tout)) {
				fprintf(stderr, "track: message text altered\n");
				abort();
			}
		}
		memcpy(r->out + r->out_len, out, outlen);
		memcpy(r->tags + r->out_len, tags, outlen);
		r->out_len += outlen;
		model_feed(&r->m, out, tags, outlen);
		off += used;
		if (seg && norm && !smtp_track_in_text(&t)) {
			track_check_text(in + seg_in, off - seg_in, r->out + seg_out,
					 r->out_len - seg_out, seg_chunk, seg_strict, true);
			seg = false;
		} else if (seg && !smtp_track_in_text(&t)) {
			seg = false;
		}
		if (!model_answer(&t, r->m.reply, r->m.rlen, &fed)) {
			r->stalled = true;
			break;
		}
		if (smtp_track_error(&t))
			r->last = TRACK_FAIL;
	}
	if (seg && norm)
		track_check_text(in + seg_in, off - seg_in, r->out + seg_out, r->out_len - seg_out,
				 seg_chunk, seg_strict, false);
	r->consumed = off;
	r->error = smtp_track_error(&t);
	r->bare_failed = smtp_track_bare(&t);

	/* the same bytes in pieces, the same replies */
	smtp_track_init(&t, opt->chunking, opt->bare);
	off = 0;
	fed = 0;
	for (size_t k = 0; off < len && !smtp_track_error(&t); k++) {
		size_t n = nsteps ? (size_t)steps[k % nsteps] + 1 : len, p, outlen = 0, used = 0;
		char *buf;

		if (n > len - off)
			n = len - off;
		p = smtp_track_pass(&t, in + off, n);
		if (o2 + p > cap)
			abort();
		memcpy(out2 + o2, in + off, p);
		o2 += p;
		off += p;
		n -= p;
		if (!n)
			continue;
		buf = malloc(n + SMTP_TRACK_SLACK);
		if (!buf)
			abort();
		smtp_track_client(&t, in + off, n, buf, &outlen, &used);
		if (outlen > n + SMTP_TRACK_SLACK || used > n || o2 + outlen > cap)
			abort();
		memcpy(out2 + o2, buf, outlen);
		free(buf);
		o2 += outlen;
		off += used;
		if (!model_answer(&t, r->m.reply, r->m.rlen, &fed))
			break;
	}
	/* where the backend quit or stalled, the one-at-a-time run stopped
	 * there: only what both wrote compares */
	if (memcmp(out2, r->out, o2 < r->out_len ? o2 : r->out_len) ||
	    (!r->stalled && r->m.mode != MM_DONE &&
	     (o2 != r->out_len || !smtp_track_error(&t) != !r->error))) {
		fprintf(stderr, "track: pieces wrote %zu octets, one at a time %zu\n", o2,
			r->out_len);
		abort();
	}
	free(out2);
	free(text_in);
	free(text_out);
}

/*
 * Normalizing or rejecting, the framings no longer matter: run in[0..len)
 * against a strict, a Postfix-like and a lenient backend, all running the
 * same command length (so that only their line ends differ), and abort
 * unless all three took the same messages. runs[FR_COUNT]; each out is
 * freed.
 */
static inline void track_drive_all(struct track_run *runs, const char *in, size_t len,
				   const struct track_opts *opt, const uint8_t *steps,
				   size_t nsteps)
{
	for (int fr = 0; fr < FR_COUNT; fr++) {
		struct track_opts o = *opt;

		o.framing = fr;
		o.cut = 2048;
		track_drive(&runs[fr], in, len, &o, steps, nsteps);
		free(runs[fr].out);
		runs[fr].out = NULL;
		if (fr && !model_same_messages(&runs[0].m, &runs[fr].m)) {
			fprintf(stderr,
				"track: framing %d took %u messages, framing 0 %u, or "
				"other text\n",
				fr, runs[fr].m.messages, runs[0].m.messages);
			abort();
		}
	}
}

/*
 * Backend session reuse (smtp_track_stop_at_quit()). r is the run
 * track_drive() made of in[0..len) without the QUIT stop (its output
 * tagged, its model's replies). Run in[0..len) again in pieces of
 * steps[k % nsteps] + 1 octets with the stop on, given the same replies
 * while the tracker holds. Where it stops at a clean QUIT (the relay then
 * parks the backend connection), feed what it wrote into a strict, a
 * Postfix-like and a lenient backend and abort unless (a) each is at a
 * command boundary, outside DATA and BDAT, no line begun; (b) the tracker
 * took nothing from the QUIT line's CRLF on (and writes nothing more,
 * however called), having written nothing of the QUIT line; (c) none ran a
 * verb other than the ten reuse allows; (d) each answered as many
 * commands as the tracker counts, and once given those replies, the
 * tracker says all were answered.
 */
static inline void track_drive_quit(const struct track_run *r, const char *in, size_t len,
				    const struct track_opts *opt, const uint8_t *steps,
				    size_t nsteps)
{
	static struct model ms[FR_COUNT];
	struct smtp_track t;
	size_t cap = 4 * len + 256, off = 0, fed = 0, o2 = 0;
	char *out2 = malloc(cap);

	if (!out2)
		abort();
	smtp_track_init(&t, opt->chunking, opt->bare);
	smtp_track_stop_at_quit(&t);
	for (size_t k = 0; off < len && !smtp_track_error(&t) && !smtp_track_quit(&t); k++) {
		size_t n = nsteps ? (size_t)steps[k % nsteps] + 1 : len, p, outlen = 0, used = 0;
		char *buf;

		if (n > len - off)
			n = len - off;
		p = smtp_track_pass(&t, in + off, n);
		if (o2 + p > cap)
			abort();
		memcpy(out2 + o2, in + off, p);
		o2 += p;
		off += p;
		n -= p;
		if (!n)
			continue;
		buf = malloc(n + SMTP_TRACK_SLACK);
		if (!buf)
			abort();
		smtp_track_client(&t, in + off, n, buf, &outlen, &used);
		if (outlen > n + SMTP_TRACK_SLACK || used > n || o2 + outlen > cap)
			abort();
		memcpy(out2 + o2, buf, outlen);
		free(buf);
		o2 += outlen;
		off += used;
		/* replies while it holds for one (not at the QUIT: those
		 * come below, one by one) */
		while (smtp_track_holding(&t) && !smtp_track_quit(&t)) {
			size_t m = model_one_reply(r->m.reply + fed, r->m.rlen - fed);

			if (!m)
				break;
			for (size_t j = 0; j < m;) {
				bool cap_, end;

				j += smtp_track_server(&t, r->m.reply + fed + j, m - j, &cap_,
						       &end);
			}
			fed += m;
		}
		if (smtp_track_holding(&t) && !smtp_track_quit(&t))
			break; /* stalled, as the run without the stop */
		if (o2 > r->out_len)
			break; /* past where the backend quit: no tags */
	}
	if (!smtp_track_quit(&t) || o2 > r->out_len) {
		free(out2);
		return;
	}
	/* the output is the run without the stop's, up to the stop */
	if (memcmp(out2, r->out, o2)) {
		fprintf(stderr, "track quit: output differs from the run without the stop\n");
		abort();
	}
	/* (b) stopped right after "QUIT", its CRLF not taken */
	if (off < 4 || off + 2 > len || strncasecmp(in + off - 4, "QUIT", 4) || in[off] != '\r' ||
	    in[off + 1] != '\n') {
		fprintf(stderr, "track quit: stopped at %zu, not before a QUIT line's CRLF\n", off);
		abort();
	}
	{
		char buf[2 + SMTP_TRACK_SLACK];
		size_t outlen = 1, used = 1;

		if (smtp_track_pass(&t, in + off, len - off) ||
		    smtp_track_client(&t, in + off, 2, buf, &outlen, &used) != TRACK_HOLD ||
		    outlen || used || !smtp_track_holding(&t)) {
			fprintf(stderr, "track quit: more passed after the stop\n");
			abort();
		}
	}
	for (int fr = 0; fr < FR_COUNT; fr++) {
		struct model *m = &ms[fr];

		model_init(m, fr, opt->chunking, opt->decisions);
		m->cut = 2048;
		model_feed(m, out2, r->tags, o2);
		/* (a) a command boundary */
		if (m->mode != MM_CMD || m->len || m->overflow || m->cr_last) {
			fprintf(stderr,
				"track quit: framing %d not at a command boundary (mode %d, "
				"%zu octets of a line)\n",
				fr, m->mode, m->len);
			abort();
		}
		/* (c) only the ten verbs */
		if (m->unsafe_verb) {
			fprintf(stderr, "track quit: framing %d ran a verb reuse does not allow\n",
				fr);
			abort();
		}
		/* (d) the tracker counts what the backend answers */
		if (m->nreplies != t.cmds_sent) {
			fprintf(stderr,
				"track quit: framing %d answered %llu commands, the tracker "
				"counts %llu\n",
				fr, (unsigned long long)m->nreplies,
				(unsigned long long)t.cmds_sent);
			abort();
		}
	}
	/* the replies still due, one by one: answered exactly at the last */
	while (t.replies_seen < t.cmds_sent) {
		size_t m = model_one_reply(r->m.reply + fed, r->m.rlen - fed);

		if (!m || smtp_track_answered(&t)) {
			fprintf(stderr, "track quit: answered with replies still due\n");
			abort();
		}
		for (size_t j = 0; j < m;) {
			bool cap_, end;

			j += smtp_track_server(&t, r->m.reply + fed + j, m - j, &cap_, &end);
		}
		fed += m;
	}
	if (!smtp_track_answered(&t) || !smtp_track_quit(&t)) {
		fprintf(stderr, "track quit: not answered with every reply given\n");
		abort();
	}
	free(out2);
}

#endif
