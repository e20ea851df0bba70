/* relay.c - the symmetric relay. Bytes received into a provided buffer are
 * queued on the other side's conn as they are (no copy) and the buffer
 * returns to the ring when sent. When the other side's queue is long, the
 * receiving side pauses (backpressure); the few buffers still on their way
 * then go to a small per-direction stash, sent first when the queue drains.
 *
 * Direction 0 is client -> backend, 1 is backend -> client. With the
 * xclient handoff, and on a listener whose bare_newline is normalize or
 * reject, the client's bytes pass through the tracker (smtp_track.h):
 * message text still in its buffer, commands through a copy (and text
 * that normalizing rewrites: only from a bare LF or CR on); the backend's
 * replies are watched, and its replies to a client's EHLO filtered like
 * the first one. bytes_in counts what the client sent, not what the
 * backend got after normalizing.
 *
 * relay: splice (and auto, for a direction it picks) moves a direction's
 * bytes through a pipe instead (core/splice.h), where they pass untouched:
 * never with TLS terminated by mxlb on either side, never with the
 * tracker. A direction switches once its bytes are nowhere else: its
 * source's recv paused and ended, its destination's queue and stash empty
 * (and, for the client, no kept bytes). Until then it copies as above;
 * once spliced it stays so.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy/proxy.h"
#include "proxy/smtp_parse.h"

/* Stashed bytes beyond which the session is broken, not just slow. */
#define RELAY_STASH_MAX (16 * BUF_SIZE)
/* Message text the tracker passed that is copied to go in one send with
 * the tracker's output after it, rather than sent on by itself. */
#define RELAY_JOIN_MAX BUF_SIZE
/* The longest EHLO reply collected to be filtered. */
#define RELAY_EHLO_MAX (16 * 1024)
static bool relay_congested(struct session *s, int dir)
{
	struct conn *dst = relay_dst(s, dir);

	return dst->queued >= RELAY_HIGH || dst->seg_count >= RELAY_SEGS_HIGH ||
	       dbuf_used(&s->stash[dir]);
}

static void relay_backpressure(struct session *s, int dir)
{
	if (relay_congested(s, dir))
		conn_recv_pause(relay_src(s, dir));
}

/* Resume reading a side unless it ended, its peer is congested, or (the
 * client with the tracker) its kept bytes wait for a reply. */
void relay_resume(struct session *s, int dir)
{
	if (s->eof[dir] || s->splice_st[dir] != RELAY_COPY || relay_congested(s, dir) ||
	    (dir == 0 && dbuf_used(&s->in)))
		return;
	conn_recv_start(relay_src(s, dir));
}

/* Queue bytes for the other side. A buffer id >= 0 hands the provided
 * buffer over; returns whether it was taken. */
static bool relay_forward(struct session *s, int dir, char *p, size_t len, int bid)
{
	struct conn *dst = relay_dst(s, dir);
	bool taken = false;

	if (dbuf_used(&s->stash[dir]) || conn_queue_full(dst)) {
		if (dbuf_append(&s->stash[dir], p, len, RELAY_STASH_MAX) < 0)
			session_close(s, R_ERROR, "relay overflow");
	} else if (bid >= 0) {
		conn_send_buf(dst, p, len, (uint16_t)bid);
		taken = true;
	} else {
		conn_send_copy(dst, p, len);
	}
	if (s->state == S_RELAY)
		relay_backpressure(s, dir);
	return taken;
}

/*
 * The tracker refused the client stream (smtp_track.h): nothing more goes
 * to the backend, whose connection is reset rather than closed so that it
 * reads an error, not an end of input after a partial line (or a message
 * without its end of data); the client is told why, and the session line
 * says it too. The message in progress is never delivered.
 * bare_newline: reject answers as Postfix does for the same refusal.
 */
static void relay_refuse(struct session *s, const char *why)
{
	static const struct linger reset = { .l_onoff = 1, .l_linger = 0 };

	if (s->back)
		setsockopt(s->back->fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
	if (smtp_track_bare(s->track))
		session_close_reply(s, R_REJECTED, why, "550 5.5.2 Error: bare <LF> received");
	else
		session_close_reply(s, R_REJECTED, why,
				    "554 5.7.1 %s Error: %s; closing connection",
				    runtime_hostname(s->rt), why);
}

static enum smtp_track_bare track_bare(enum cfg_bare_newline b)
{
	switch (b) {
	case CFG_BARE_NORMALIZE:
		return TRACK_BARE_NORMALIZE;
	case CFG_BARE_REJECT:
		return TRACK_BARE_REJECT;
	case CFG_BARE_PASS:
		break;
	}
	return TRACK_BARE_PASS;
}

/* Run the client's kept bytes (s->in) through the tracker; pre[0..prelen)
 * (message text the tracker passed, see relay_client_data()) goes first,
 * in the same send as the first of its output, or alone when the tracker
 * cannot be fed now (congested, holding). */
static void track_feed_after(struct session *s, char *pre, size_t prelen)
{
	while (s->state == S_RELAY && dbuf_used(&s->in) && !smtp_track_holding(s->track) &&
	       !relay_congested(s, 0)) {
		size_t len = dbuf_used(&s->in), outlen = 0, used = 0;
		char *out = malloc(prelen + len + SMTP_TRACK_SLACK);
		enum smtp_track_result r;

		if (!out) {
			session_close(s, R_ERROR, "out of memory");
			return;
		}
		if (prelen)
			memcpy(out, pre, prelen);
		r = smtp_track_client(s->track, dbuf_data(&s->in), len, out + prelen, &outlen,
				      &used);
		dbuf_consume(&s->in, used);
		if (r == TRACK_FAIL) {
			/* what came before the failure is harmless, but the
			 * backend gets nothing more at all (pre included: it is
			 * reset, the message never delivered) */
			free(out);
			relay_refuse(s, smtp_track_error(s->track));
			return;
		}
		outlen += prelen;
		prelen = 0;
		if (!outlen) {
			free(out);
		} else if (conn_send_heap(s->back, out, outlen) < 0) {
			/* it freed out; with the congestion check above, a full
			 * queue here means the backend side is dead */
			session_close(s, R_ERROR, "backend send failed");
			return;
		}
		if (!used && !outlen)
			break;
	}
	if (prelen && s->state != S_CLOSED) /* as relay_forward() of the text would */
		relay_forward(s, 0, pre, prelen, -1);
	if (s->state == S_RELAY && dbuf_used(&s->in))
		conn_recv_pause(s->client); /* held: a reply, or room to send */
	reuse_check(s);
}

static void track_feed(struct session *s)
{
	track_feed_after(s, NULL, 0);
}

static void relay_shutdown_if_done(struct session *s, int dir)
{
	if (s->eof[dir] && !dbuf_used(&s->stash[dir]) && (dir || !dbuf_used(&s->in)))
		conn_shutdown_wr(relay_dst(s, dir));
}

/* ---- copying ---- */

static bool relay_client_data(struct conn *c, char *p, size_t len, uint16_t bid)
{
	struct session *s = c->owner;
	size_t pass;
	bool taken;

	s->bytes_in += len;
	session_timeout(s, s->l->timeouts.idle);
	if (!s->track) {
		taken = relay_forward(s, 0, p, len, bid);
		relay_auto(s, 0, len);
		return taken;
	}
	/* message text goes on in its buffer; the tracker reads the commands */
	pass = dbuf_used(&s->in) ? 0 : smtp_track_pass(s->track, p, len);
	if (pass == len)
		return relay_forward(s, 0, p, len, bid);
	if (pass) {
		if (dbuf_append(&s->in, p + pass, len - pass, RELAY_STASH_MAX) < 0) {
			session_close(s, R_ERROR, "relay overflow");
			return false;
		}
		/* a short text and what follows it (the end of the message, as
		 * often as not) in one send: one segment, not two, and the
		 * backend's ACK rides on its reply (bench/README.md) */
		if (pass <= RELAY_JOIN_MAX) {
			track_feed_after(s, p, pass);
			if (s->state == S_RELAY)
				relay_backpressure(s, 0);
			return false;
		}
		taken = relay_forward(s, 0, p, pass, bid);
		if (s->state == S_RELAY)
			track_feed(s);
		return taken;
	}
	if (dbuf_append(&s->in, p, len, RELAY_STASH_MAX) < 0) {
		session_close(s, R_ERROR, "relay overflow");
		return false;
	}
	track_feed(s);
	return false;
}

/* A piece of the backend's reply to a client's EHLO: collected, and once
 * whole sent on filtered like the first (smtp_back.c). */
static void relay_ehlo_reply(struct session *s, const char *p, size_t len, bool end)
{
	size_t n, used = 0;
	int code = 0;
	char *out;

	if (dbuf_append(&s->bin, p, len, RELAY_EHLO_MAX) < 0) {
		session_close_reply(s, R_ERROR, "backend EHLO reply too long",
				    "421 4.3.0 %s Error: backend reply too long",
				    runtime_hostname(s->rt));
		return;
	}
	if (!end)
		return;
	n = dbuf_used(&s->bin);
	out = malloc(n);
	if (!out) {
		session_close(s, R_ERROR, "out of memory");
		return;
	}
	if (smtp_parse_reply(dbuf_data(&s->bin), n, &code, &used) == SMTP_OK && code == 250 &&
	    used == n)
		n = smtp_ehlo_filter(dbuf_data(&s->bin), n, out, s->ehlo_drop);
	else
		memcpy(out, dbuf_data(&s->bin), n);
	dbuf_free(&s->bin);
	relay_forward(s, 1, out, n, -1);
	free(out);
}

/* Backend bytes to the client, through the tracker where there is one;
 * bid as relay_forward(). */
static bool relay_back_bytes(struct session *s, char *p, size_t len, int bid)
{
	bool taken = false;
	size_t off = 0;

	if (!s->track)
		return relay_forward(s, 1, p, len, bid);
	while (off < len && s->state == S_RELAY) {
		bool capture, end;
		size_t n = smtp_track_server(s->track, p + off, len - off, &capture, &end);

		if (capture)
			relay_ehlo_reply(s, p + off, n, end);
		else if (off == 0 && n == len)
			taken = relay_forward(s, 1, p, len, bid);
		else
			relay_forward(s, 1, p + off, n, -1);
		off += n;
	}
	if (s->state != S_RELAY)
		return taken;
	if (smtp_track_error(s->track)) {
		relay_refuse(s, smtp_track_error(s->track));
		return taken;
	}
	if (dbuf_used(&s->in) && !smtp_track_holding(s->track)) {
		track_feed(s);
		if (s->state == S_RELAY)
			relay_resume(s, 0);
	}
	reuse_check(s);
	return taken;
}

static bool relay_back_data(struct conn *c, char *p, size_t len, uint16_t bid)
{
	struct session *s = c->owner;
	bool taken;

	s->bytes_out += len;
	session_timeout(s, s->l->timeouts.idle);
	taken = relay_back_bytes(s, p, len, bid);
	if (s->state == S_RELAY)
		relay_auto(s, 1, len);
	return taken;
}

/* The other side's queue emptied: the stash goes first, then reading
 * resumes. */
static void relay_drained(struct session *s, int dir)
{
	struct dbuf *st = &s->stash[dir];

	if (dbuf_used(st)) {
		conn_send_copy(relay_dst(s, dir), dbuf_data(st), dbuf_used(st));
		dbuf_free(st);
		return; /* resume when this is sent */
	}
	if (s->splice_st[dir] == RELAY_SWITCH) {
		relay_splice_try(s, dir);
		if (s->splice_st[dir] != RELAY_COPY)
			return;
	}
	if (dir == 1 && s->eof[1]) {
		session_close_flush(s, R_RELAYED, "backend closed");
		return;
	}
	if (dir == 0 && s->track) {
		track_feed(s);
		if (s->state != S_RELAY)
			return;
	}
	if (reuse_check(s))
		return;
	relay_shutdown_if_done(s, dir);
	relay_resume(s, dir);
}

static void relay_client_drained(struct conn *c)
{
	relay_drained(c->owner, 1);
}

static void relay_back_drained(struct conn *c)
{
	relay_drained(c->owner, 0);
}

static void relay_client_eof(struct conn *c)
{
	struct session *s = c->owner;

	s->eof[0] = true;
	relay_shutdown_if_done(s, 0);
	/* the backend answers what it has and closes; do not wait a full
	 * idle period for it */
	session_timeout(s, s->l->timeouts.backend_reply);
}

static void relay_back_eof(struct conn *c)
{
	struct session *s = c->owner;

	s->eof[1] = true;
	if (!dbuf_used(&s->stash[1]))
		session_close_flush(s, R_RELAYED, "backend closed");
}

/* The recv in flight when a switch to splicing paused it has ended. */
static void relay_client_stopped(struct conn *c)
{
	relay_splice_try(c->owner, 0);
}

static void relay_back_stopped(struct conn *c)
{
	relay_splice_try(c->owner, 1);
}

static void relay_client_error(struct conn *c, int err)
{
	(void)err;
	session_close(c->owner, R_RELAYED, "client connection error");
}

static void relay_back_error(struct conn *c, int err)
{
	(void)err;
	session_close(c->owner, R_RELAYED, "backend connection error");
}

const struct conn_handler relay_client_handler = {
	.data = relay_client_data,
	.eof = relay_client_eof,
	.error = relay_client_error,
	.drained = relay_client_drained,
	.stopped = relay_client_stopped,
};

const struct conn_handler relay_back_handler = {
	.data = relay_back_data,
	.eof = relay_back_eof,
	.error = relay_back_error,
	.drained = relay_back_drained,
	.stopped = relay_back_stopped,
};

/* Whether the client's stream goes through the tracker: with the xclient
 * handoff (the backend trusts mxlb's XCLIENT), and for bare_newline. Never
 * without SMTP to read (implicit-TLS passthrough). */
bool relay_tracked(const struct session *s)
{
	if (s->no_smtp)
		return false;
	return s->pool->backends[s->backend].cfg->handoff == CFG_HANDOFF_XCLIENT ||
	       s->l->bare_newline != CFG_BARE_PASS || reuse_on(s);
}

void relay_start(struct session *s)
{
	/* no more retries: the routing line is not needed again */
	free(s->ehlo_line);
	s->ehlo_line = NULL;
	session_set_state(s, S_RELAY);
	s->action = "relaying";
	s->routed_us = session_elapsed_us(s);
	session_timeout(s, s->l->timeouts.idle);
	s->client->h = &relay_client_handler;
	s->back->h = &relay_back_handler;
	/* a capped multishot recv: no arming per command, and backpressure
	 * within the cap (the stash takes what comes after a pause) */
	conn_recv_capped(s->client);
	conn_recv_capped(s->back);
	if (relay_tracked(s)) {
		s->track = malloc(sizeof(*s->track));
		if (!s->track) {
			session_close(s, R_ERROR, "out of memory");
			return;
		}
		smtp_track_init(s->track, s->back_chunking, track_bare(s->l->bare_newline));
		reuse_track(s);
	}
	/* backend bytes that came after its EHLO reply: nothing the client
	 * asked for yet, so nothing to filter; s->bin is free for the
	 * replies to later EHLOs */
	if (dbuf_used(&s->bin)) {
		struct dbuf extra = s->bin;

		s->bin = (struct dbuf){ 0 };
		s->bytes_out += dbuf_used(&extra);
		relay_back_bytes(s, dbuf_data(&extra), dbuf_used(&extra), -1);
		dbuf_free(&extra);
	}
	/* client bytes pipelined after the routing line, in order */
	if (s->state == S_RELAY && dbuf_used(&s->in)) {
		s->bytes_in += dbuf_used(&s->in);
		if (s->track) {
			track_feed(s);
		} else {
			relay_forward(s, 0, dbuf_data(&s->in), dbuf_used(&s->in), -1);
			dbuf_free(&s->in);
		}
	}
	if (s->state != S_RELAY)
		return;
	if (s->eof[0])
		relay_shutdown_if_done(s, 0);
	relay_splice_init(s);
	if (s->state == S_RELAY)
		relay_resume(s, 0);
}
