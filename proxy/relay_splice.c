/* relay_splice.c - relay: splice and auto (SPEC §10): a direction of a
 * relayed session moved through a pipe (core/splice.h) instead of copied,
 * switched to once its bytes are nowhere else (relay.c says when), and
 * auto's choice of the directions that carry bulk text.
 */
#include <stdatomic.h>

#include "core/splice.h"
#include "proxy/proxy.h"

/* relay: auto splices a direction once this many octets came in a row of
 * receives none of which was short: bulk message text, not commands or
 * replies. Copying wins for 1 KB messages (by 1.6x CPU) and for 32 KB;
 * from about 100 KB splicing is even (fast backends) or ahead (slow
 * ones: 0.86x against Postfix's smtp-sink), and from 1 MB 0.64x; so a
 * message of 96 KB or more switches its session (bench/README.md,
 * "splice or copy"). */
#ifndef RELAY_AUTO_SPLICE_AFTER
#define RELAY_AUTO_SPLICE_AFTER (96 * 1024)
#endif
/* A receive shorter than this is a command or a reply, not bulk text. */
#define RELAY_AUTO_SHORT 1024

static atomic_ulong splice_bytes;

uint64_t relay_splice_bytes(void)
{
	return atomic_load(&splice_bytes);
}

/* Switch dir to splicing if its bytes are nowhere else now (see the top);
 * called again from each event that may make it so. */
void relay_splice_try(struct session *s, int dir)
{
	struct conn *dst = relay_dst(s, dir);

	if (s->state != S_RELAY || s->splice_st[dir] != RELAY_SWITCH)
		return;
	if (s->eof[dir]) {
		s->splice_st[dir] = RELAY_COPY; /* nothing more to move */
		return;
	}
	if (conn_recv_busy(relay_src(s, dir)) || dst->seg_count || dbuf_used(&s->stash[dir]) ||
	    (dir == 0 && dbuf_used(&s->in)))
		return;
	if (splice_start(s->splice, dir) < 0) {
		s->splice_st[dir] = RELAY_COPY; /* no pipe: copying works too */
		relay_resume(s, dir);
		return;
	}
	s->splice_st[dir] = RELAY_SPLICE;
}

static const struct splice_handler relay_splice_handler;

static void relay_splice_begin(struct session *s, int dir)
{
	if (s->splice_st[dir] != RELAY_COPY || s->eof[dir])
		return;
	if (!s->splice) {
		s->splice = splice_new(s->client, s->back, &relay_splice_handler, s);
		if (!s->splice)
			return;
	}
	s->splice_st[dir] = RELAY_SWITCH;
	conn_recv_pause(relay_src(s, dir));
	relay_splice_try(s, dir);
}

/* relay: auto, after len octets of dir were copied. */
void relay_auto(struct session *s, int dir, size_t len)
{
	if (s->l->relay != CFG_RELAY_AUTO || s->track || s->splice_st[dir] != RELAY_COPY)
		return;
	/* A command or a reply ends the run; a receive of message text may be
	 * short too (the rest of a buffer consumed incrementally, core/buf.h,
	 * or a burst's tail), and must not */
	if (len < RELAY_AUTO_SHORT) {
		s->bulk_run[dir] = 0;
		return;
	}
	s->bulk_run[dir] += (uint32_t)len;
	if (s->bulk_run[dir] >= RELAY_AUTO_SPLICE_AFTER && s->client->x == &conn_plain &&
	    s->back->x == &conn_plain)
		relay_splice_begin(s, dir);
}

/* Why relay: splice copies for this session, or NULL: said once per
 * process and reason in the log (a listener's TLS or a pool's handoff
 * may change with a reload, so --check cannot know every session). */
static const char *splice_refused(const struct session *s)
{
	if (s->client->x != &conn_plain || s->back->x != &conn_plain)
		return "TLS terminated by mxlb";
	if (s->track)
		return "the client-stream tracker (xclient handoff, bare_newline, reuse)";
	return NULL;
}

void relay_splice_init(struct session *s)
{
	static atomic_bool said_tls, said_track;
	const char *why;

	if (s->l->relay != CFG_RELAY_SPLICE)
		return;
	why = splice_refused(s);
	if (why) {
		atomic_bool *said =
			s->track && s->client->x == &conn_plain && s->back->x == &conn_plain
				? &said_track
				: &said_tls;

		if (!atomic_exchange(said, true))
			log_warn(
				"relay",
				"listener %s: relay: splice, but sessions with %s copy (said once)",
				s->l->name, why);
		return;
	}
	relay_splice_begin(s, 0);
	if (s->state == S_RELAY)
		relay_splice_begin(s, 1);
}

static void relay_spliced(void *owner, int dir, size_t n)
{
	struct session *s = owner;

	if (dir)
		s->bytes_out += n;
	else
		s->bytes_in += n;
	atomic_fetch_add_explicit(&splice_bytes, n, memory_order_relaxed);
	session_timeout(s, s->l->timeouts.idle);
}

/* As relay_client_eof() and relay_back_eof(), once the pipe is drained. */
static void relay_splice_eof(void *owner, int dir)
{
	struct session *s = owner;

	s->eof[dir] = true;
	if (dir) {
		session_close_flush(s, R_RELAYED, "backend closed");
		return;
	}
	conn_shutdown_wr(s->back);
	session_timeout(s, s->l->timeouts.backend_reply);
}

static void relay_splice_error(void *owner, int dir, bool src, int err)
{
	(void)err;
	session_close(owner, R_RELAYED,
		      src == (dir == 0) ? "client connection error" : "backend connection error");
}

static const struct splice_handler relay_splice_handler = {
	.moved = relay_spliced,
	.eof = relay_splice_eof,
	.error = relay_splice_error,
};
