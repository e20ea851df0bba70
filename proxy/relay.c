/* relay.c - the symmetric relay. Bytes received into a provided buffer are
 * queued on the other side's conn as they are (no copy) and the buffer
 * returns to the ring when sent. When the other side's queue is long, the
 * receiving side pauses (backpressure); the few buffers still on their way
 * then go to a small per-direction stash, sent first when the queue drains.
 *
 * Direction 0 is client -> backend, 1 is backend -> client. With the
 * xclient handoff the client's bytes pass through the guard (a copy).
 */
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"

/* Stashed bytes beyond which the session is broken, not just slow. */
#define RELAY_STASH_MAX (16 * BUF_SIZE)

static struct conn *dst_of(struct session *s, int dir)
{
	return dir ? s->client : s->back;
}

static struct conn *src_of(struct session *s, int dir)
{
	return dir ? s->back : s->client;
}

static bool relay_congested(struct session *s, int dir)
{
	struct conn *dst = dst_of(s, dir);

	return dst->queued >= RELAY_HIGH || dst->seg_count >= RELAY_SEGS_HIGH ||
	       dbuf_used(&s->stash[dir]);
}

static void relay_backpressure(struct session *s, int dir)
{
	if (relay_congested(s, dir))
		conn_recv_pause(src_of(s, dir));
}

/* Resume reading a side unless it ended, its peer is congested, or (the
 * client with the guard) its kept bytes wait for a DATA reply. */
static void relay_resume(struct session *s, int dir)
{
	if (s->eof[dir] || relay_congested(s, dir) || (dir == 0 && dbuf_used(&s->in)))
		return;
	conn_recv_start(src_of(s, dir));
}

/* Queue bytes for the other side. A buffer id >= 0 hands the provided
 * buffer over; returns whether it was taken. */
static bool relay_forward(struct session *s, int dir, char *p, size_t len, int bid)
{
	struct conn *dst = dst_of(s, dir);
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

/* Run the client's kept bytes (s->in) through the guard. */
static void guard_feed(struct session *s)
{
	while (s->state == S_RELAY && dbuf_used(&s->in) && !smtp_guard_holding(s->guard) &&
	       !relay_congested(s, 0)) {
		size_t len = dbuf_used(&s->in), outlen = 0, used = 0;
		char *out = malloc(len + SMTP_GUARD_SLACK);

		if (!out) {
			session_close(s, R_ERROR, "out of memory");
			return;
		}
		smtp_guard_client(s->guard, dbuf_data(&s->in), len, out, &outlen, &used);
		dbuf_consume(&s->in, used);
		if (!outlen) {
			free(out);
		} else if (conn_send_heap(s->back, out, outlen) < 0) {
			/* it freed out; with the congestion check above, a full
			 * queue here means the backend side is dead */
			session_close(s, R_ERROR, "backend send failed");
			return;
		}
		if (!used)
			break;
	}
	if (s->state == S_RELAY && dbuf_used(&s->in))
		conn_recv_pause(s->client); /* held: a DATA reply, or room to send */
}

static void relay_shutdown_if_done(struct session *s, int dir)
{
	if (s->eof[dir] && !dbuf_used(&s->stash[dir]) && (dir || !dbuf_used(&s->in)))
		conn_shutdown_wr(dst_of(s, dir));
}

static bool relay_client_data(struct conn *c, char *p, size_t len, uint16_t bid)
{
	struct session *s = c->owner;
	size_t pass;
	bool taken;

	s->bytes_in += len;
	session_timeout(s, s->l->timeouts.idle);
	if (!s->guard)
		return relay_forward(s, 0, p, len, bid);
	/* message text goes on in its buffer; the guard reads the commands */
	pass = dbuf_used(&s->in) ? 0 : smtp_guard_pass(s->guard, p, len);
	if (pass == len)
		return relay_forward(s, 0, p, len, bid);
	if (pass) {
		if (dbuf_append(&s->in, p + pass, len - pass, RELAY_STASH_MAX) < 0) {
			session_close(s, R_ERROR, "relay overflow");
			return false;
		}
		taken = relay_forward(s, 0, p, pass, bid);
		if (s->state == S_RELAY)
			guard_feed(s);
		return taken;
	}
	if (dbuf_append(&s->in, p, len, RELAY_STASH_MAX) < 0) {
		session_close(s, R_ERROR, "relay overflow");
		return false;
	}
	guard_feed(s);
	return false;
}

static bool relay_back_data(struct conn *c, char *p, size_t len, uint16_t bid)
{
	struct session *s = c->owner;
	bool taken;

	s->bytes_out += len;
	session_timeout(s, s->l->timeouts.idle);
	if (s->guard)
		smtp_guard_server(s->guard, p, len);
	taken = relay_forward(s, 1, p, len, bid);
	if (s->state == S_RELAY && s->guard && dbuf_used(&s->in) &&
	    !smtp_guard_holding(s->guard)) {
		guard_feed(s);
		if (s->state == S_RELAY)
			relay_resume(s, 0);
	}
	return taken;
}

/* The other side's queue emptied: the stash goes first, then reading
 * resumes. */
static void relay_drained(struct session *s, int dir)
{
	struct dbuf *st = &s->stash[dir];

	if (dbuf_used(st)) {
		conn_send_copy(dst_of(s, dir), dbuf_data(st), dbuf_used(st));
		dbuf_free(st);
		return; /* resume when this is sent */
	}
	if (dir == 1 && s->eof[1]) {
		session_close_flush(s, R_RELAYED, "backend closed");
		return;
	}
	if (dir == 0 && s->guard) {
		guard_feed(s);
		if (s->state != S_RELAY)
			return;
	}
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
};

const struct conn_handler relay_back_handler = {
	.data = relay_back_data,
	.eof = relay_back_eof,
	.error = relay_back_error,
	.drained = relay_back_drained,
};

void relay_start(struct session *s)
{
	/* no more retries: the routing line is not needed again */
	free(s->ehlo_line);
	s->ehlo_line = NULL;
	session_set_state(s, S_RELAY);
	s->action = "relaying";
	s->t_routed = clock_usec();
	session_timeout(s, s->l->timeouts.idle);
	s->client->h = &relay_client_handler;
	s->back->h = &relay_back_handler;
	conn_recv_oneshot(s->client);
	conn_recv_oneshot(s->back);
	if (s->pool->backends[s->backend].cfg->handoff == CFG_HANDOFF_XCLIENT) {
		s->guard = malloc(sizeof(*s->guard));
		if (!s->guard) {
			session_close(s, R_ERROR, "out of memory");
			return;
		}
		smtp_guard_init(s->guard);
		if (!s->back_chunking)
			smtp_guard_no_chunking(s->guard);
	}
	/* backend bytes that came after its EHLO reply */
	if (dbuf_used(&s->bin)) {
		if (s->guard)
			smtp_guard_server(s->guard, dbuf_data(&s->bin), dbuf_used(&s->bin));
		s->bytes_out += dbuf_used(&s->bin);
		relay_forward(s, 1, dbuf_data(&s->bin), dbuf_used(&s->bin), -1);
		dbuf_free(&s->bin);
	}
	/* client bytes pipelined after the routing line, in order */
	if (s->state == S_RELAY && dbuf_used(&s->in)) {
		s->bytes_in += dbuf_used(&s->in);
		if (s->guard) {
			guard_feed(s);
		} else {
			relay_forward(s, 0, dbuf_data(&s->in), dbuf_used(&s->in), -1);
			dbuf_free(&s->in);
		}
	}
	if (s->state != S_RELAY)
		return;
	if (s->eof[0])
		relay_shutdown_if_done(s, 0);
	relay_resume(s, 0);
}
