/* conn.c - see conn.h. */
#include "core/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/splice.h"

#include "core/conn_int.h"

void sock_set_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int conn_worker_init(struct worker *w)
{
	w->conns = calloc(1, sizeof(*w->conns));
	if (!w->conns)
		return -ENOMEM;
	slab_init(&w->conns->slab, sizeof(struct conn));
	return 0;
}

void conn_worker_fini(struct worker *w)
{
	if (!w->conns)
		return;
	slab_destroy(&w->conns->slab);
	free(w->conns);
	w->conns = NULL;
}

unsigned conn_count(const struct worker *w)
{
	return w->conns->n;
}

bool conn_deferred_pending(const struct worker *w)
{
	return w->conns->deferred != NULL;
}

struct conn *conn_new(struct worker *w, int fd, const struct conn_handler *h, void *owner)
{
	struct conn *c = slab_alloc(&w->conns->slab);

	if (!c)
		return NULL;
	w->conns->n++;
	c->fd = fd;
	c->h = h;
	c->owner = owner;
	c->w = w;
	c->x = &conn_plain;
	return c;
}

void conn_set_xprt(struct conn *c, const struct conn_xprt *x, void *ctx)
{
	c->x = x;
	c->xprt_ctx = ctx;
}

static void cancel_op(struct conn *c, enum op_kind kind)
{
	struct io_uring_sqe *sqe = worker_sqe(c->w);

	io_uring_prep_cancel64(sqe, op_data(c, kind), 0);
	io_uring_sqe_set_data64(sqe, OP_IGNORE);
}

/* Cancel the recv in flight, once: its last completion clears the flag. */
void conn_cancel_recv(struct conn *c)
{
	if ((c->ops & CONN_OP_RECV) && !(c->flags & CONN_F_CANCELING)) {
		cancel_op(c, OP_RECV);
		c->flags |= CONN_F_CANCELING;
	}
}

static void resume_starved(struct worker *w);

void conn_buf_release(struct worker *w, uint16_t bid)
{
	if (buf_release(&w->bufs, bid) && w->conns->starved)
		resume_starved(w);
}

static void seg_release(struct conn *c, struct seg *sg)
{
	if (sg->bid >= 0)
		conn_buf_release(c->w, (uint16_t)sg->bid);
	else
		free(sg->p);
	sg->p = NULL;
}

/* Drop the queue, keeping the head while a send from it is in flight. */
static void drop_queue(struct conn *c)
{
	uint8_t keep = (c->ops & CONN_OP_SEND) && c->seg_count ? 1 : 0;

	while (c->seg_count > keep) {
		uint8_t i = (uint8_t)((c->seg_head + c->seg_count - 1) % CONN_SEGS);

		seg_release(c, &c->segs[i]);
		c->seg_count--;
	}
	if (keep) {
		c->queued = c->segs[c->seg_head].len - c->seg_off;
	} else {
		c->queued = 0;
		c->seg_off = 0;
	}
}

static void maybe_free(struct conn *c)
{
	if (!(c->flags & CONN_F_ORPHAN) || c->ops || c->holds ||
	    (c->flags & (CONN_F_IN_CB | CONN_F_STARVED | CONN_F_LINGER | CONN_F_DEFERRED)))
		return;
	drop_queue(c);
	if (c->x->close)
		c->x->close(c);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->w->conns->n--;
	slab_free(&c->w->conns->slab, c);
}

void conn_arm_recv(struct conn *c)
{
	struct io_uring_sqe *sqe = worker_sqe(c->w);

	if (c->flags & CONN_F_ONESHOT) {
		io_uring_prep_recv(sqe, c->fd, NULL, BUF_SIZE, 0);
	} else {
		io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
		/* sqe->optlen, the multishot's byte limit, in 2.3's layout */
		if (c->flags & CONN_F_CAPPED)
			sqe->file_index = CONN_RECV_CAP;
	}
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = c->flags & CONN_F_COLD ? BUF_GROUP : BUF_HOT_GROUP;
	io_uring_sqe_set_data64(sqe, op_data(c, OP_RECV));
	c->ops |= CONN_OP_RECV;
}

bool conn_may_recv(const struct conn *c)
{
	return c->fd >= 0 && (c->flags & CONN_F_WANT_RECV) &&
	       !(c->flags & (CONN_F_PAUSED | CONN_F_EOF | CONN_F_DEAD | CONN_F_STARVED)) &&
	       !(c->ops & (CONN_OP_RECV | CONN_OP_CONNECT));
}

void conn_defer(struct conn *c)
{
	if (c->flags & CONN_F_DEFERRED)
		return;
	c->flags |= CONN_F_DEFERRED;
	c->next_deferred = c->w->conns->deferred;
	c->w->conns->deferred = c;
}

void conn_hold(struct conn *c, struct splice *sp)
{
	c->holds++;
	c->splice = sp;
}

void conn_unhold(struct conn *c)
{
	c->holds--;
	maybe_free(c);
}

static void submit_send(struct conn *c)
{
	struct seg *sg = &c->segs[c->seg_head];
	struct io_uring_sqe *sqe = worker_sqe(c->w);

	io_uring_prep_send(sqe, c->fd, sg->p + c->seg_off, sg->len - c->seg_off, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, op_data(c, OP_SEND));
	c->ops |= CONN_OP_SEND;
}

/* A slice of a buffer whose kind runs short (buf_low()), from octet
 * `from` on, to the heap and its buffer released; false when it is on the
 * heap already, its kind is not short or memory is (it stays as it was). */
static bool seg_unpin(struct conn *c, struct seg *sg, uint32_t from)
{
	char *copy;

	if (sg->bid < 0 || !buf_low(&c->w->bufs, (uint16_t)sg->bid))
		return false;
	copy = malloc(sg->len - from);
	if (!copy)
		return false;
	memcpy(copy, sg->p + from, sg->len - from);
	conn_buf_release(c->w, (uint16_t)sg->bid);
	sg->p = copy;
	sg->len -= from;
	sg->bid = -1;
	return true;
}

/* The peer stopped reading (a short send): what waits in the queue in
 * buffers that run short moves to the heap, so that a session stuck
 * behind a peer that does not read holds none of them (buf.h, buf_low).
 * No send is in flight. */
static void unpin_queue(struct conn *c)
{
	if (seg_unpin(c, &c->segs[c->seg_head], c->seg_off))
		c->seg_off = 0;
	for (uint8_t k = 1; k < c->seg_count; k++)
		seg_unpin(c, &c->segs[(c->seg_head + k) % CONN_SEGS], 0);
}

void conn_queue_raw(struct conn *c, char *p, size_t len, int32_t bid)
{
	struct seg *sg = &c->segs[(c->seg_head + c->seg_count) % CONN_SEGS];

	sg->p = p;
	sg->len = (uint32_t)len;
	sg->bid = bid;
	/* a send to a peer that stopped reading may never come back, with or
	 * without one in flight before it: under pressure, none holds a
	 * buffer that runs short */
	seg_unpin(c, sg, 0);
	c->seg_count++;
	c->queued += (uint32_t)len;
	if (!(c->ops & (CONN_OP_SEND | CONN_OP_CONNECT)))
		submit_send(c);
}

bool conn_queue_room(const struct conn *c)
{
	return c->seg_count < CONN_SEGS && c->fd >= 0 && !(c->flags & CONN_F_DEAD);
}

/* Hand p to the transport; -1 leaves p to the caller. */
static int push(struct conn *c, char *p, size_t len, int32_t bid)
{
	if (c->seg_count >= CONN_SEGS || (c->flags & (CONN_F_DEAD | CONN_F_SHUT_WR)) || c->fd < 0)
		return -1;
	return c->x->send(c, p, len, bid);
}

int conn_send_heap(struct conn *c, char *p, size_t len)
{
	if (len == 0 || push(c, p, len, -1) < 0) {
		free(p);
		return len == 0 ? 0 : -1;
	}
	return 0;
}

int conn_send_copy(struct conn *c, const void *p, size_t len)
{
	char *copy;

	if (len == 0)
		return 0;
	if (conn_queue_full(c))
		return -1;
	copy = malloc(len);
	if (!copy)
		return -1;
	memcpy(copy, p, len);
	return conn_send_heap(c, copy, len);
}

int conn_send_buf(struct conn *c, char *p, size_t len, uint16_t bid)
{
	if (push(c, p, len, bid) < 0) {
		conn_buf_release(c->w, bid);
		return -1;
	}
	return 0;
}

int conn_write_now(struct conn *c, const void *p, size_t len)
{
	ssize_t n;

	if (c->x != &conn_plain || c->seg_count || c->fd < 0 ||
	    (c->flags & (CONN_F_DEAD | CONN_F_SHUT_WR)))
		return -EINVAL;
	n = send(c->fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	return n < 0 ? -errno : (int)n;
}

/* A plain syscall: IORING_OP_SHUTDOWN always goes to an io-wq thread. */
static void do_shutdown_wr(struct conn *c)
{
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_WR);
}

/* The transport's last words (TLS: a close_notify) go before the FIN. */
static void xprt_shutdown(struct conn *c)
{
	if (!c->x->shutdown || (c->flags & (CONN_F_SHUT_WR | CONN_F_DEAD)))
		return;
	c->x->shutdown(c);
}

void conn_shutdown_wr(struct conn *c)
{
	if (c->flags & CONN_F_SHUT_WR)
		return;
	xprt_shutdown(c);
	c->flags |= CONN_F_SHUT_WR;
	if (!c->seg_count)
		do_shutdown_wr(c);
}

static void linger_add(struct conn *c, uint32_t linger_ms)
{
	if (c->flags & CONN_F_LINGER)
		return;
	c->flags |= CONN_F_LINGER;
	c->linger_until = (uint32_t)(worker_now_ms() + linger_ms);
	c->next_linger = c->w->conns->lingering;
	c->w->conns->lingering = c;
}

/* Drop the queue and cancel whatever is in flight; the completions free. */
static void abort_io(struct conn *c)
{
	c->flags |= CONN_F_DEAD;
	drop_queue(c);
	conn_cancel_recv(c);
	if (c->ops & CONN_OP_SEND)
		cancel_op(c, OP_SEND);
	if (c->ops & CONN_OP_CONNECT)
		cancel_op(c, OP_CONNECT);
}

void conn_close(struct conn *c)
{
	if (!c || (c->flags & CONN_F_ORPHAN))
		return;
	c->flags |= CONN_F_ORPHAN;
	/* it holds c: c is not freed from inside */
	splice_abort(c->splice);
	abort_io(c);
	maybe_free(c);
}

void conn_close_after_flush(struct conn *c, uint32_t linger_ms)
{
	if (!c || (c->flags & CONN_F_ORPHAN))
		return;
	splice_abort(c->splice);
	if (c->fd < 0 || (c->flags & CONN_F_DEAD) || (c->ops & CONN_OP_CONNECT)) {
		conn_close(c);
		return;
	}
	/* Like nginx's lingering close: send what is queued, shut the write
	 * side, and read (discarding) until the peer closes, so that unread
	 * input does not turn our last reply into a reset. */
	xprt_shutdown(c);
	c->flags |= CONN_F_ORPHAN | CONN_F_FLUSH | CONN_F_SHUT_WR | CONN_F_WANT_RECV;
	c->flags &= (uint16_t)~CONN_F_PAUSED;
	if (!c->seg_count)
		do_shutdown_wr(c);
	if (conn_may_recv(c))
		conn_arm_recv(c);
	linger_add(c, linger_ms);
}

/* A lingering conn is done when its queue is sent and the peer closed,
 * or, when the worker stops, as soon as its queue is sent. */
static bool linger_done(const struct conn *c)
{
	return c->seg_count == 0 && ((c->flags & (CONN_F_EOF | CONN_F_DEAD)) || c->w->stopping);
}

void conn_expire_lingering(struct worker *w, uint64_t now_ms)
{
	struct conn **pp = &w->conns->lingering;

	while (*pp) {
		struct conn *c = *pp;

		if (!linger_done(c) && (int32_t)((uint32_t)now_ms - c->linger_until) < 0) {
			pp = &c->next_linger;
			continue;
		}
		*pp = c->next_linger;
		c->flags &= (uint16_t) ~(CONN_F_LINGER | CONN_F_FLUSH);
		abort_io(c);
		maybe_free(c);
	}
}

static void resume_starved(struct worker *w)
{
	struct conn *c = w->conns->starved;

	if (!c)
		return;
	w->conns->starved = c->next_starved;
	c->flags &= (uint16_t)~CONN_F_STARVED;
	if (conn_may_recv(c))
		conn_arm_recv(c);
	maybe_free(c);
}

static void starve(struct conn *c)
{
	if (c->flags & CONN_F_STARVED)
		return;
	c->flags |= CONN_F_STARVED;
	c->next_starved = c->w->conns->starved;
	c->w->conns->starved = c;
}

/* ---- entry points of the worker ---- */

void conn_run_deferred(struct worker *w)
{
	struct conn *c = w->conns->deferred;

	w->conns->deferred = NULL;
	while (c) {
		struct conn *next = c->next_deferred;

		c->flags &= (uint16_t)~CONN_F_DEFERRED;
		c->flags |= CONN_F_IN_CB;
		if (c->x->resume)
			c->x->resume(c);
		if (conn_may_recv(c))
			conn_arm_recv(c);
		c->flags &= (uint16_t)~CONN_F_IN_CB;
		maybe_free(c);
		c = next;
	}
}

static void on_recv(struct conn *c, struct io_uring_cqe *cqe)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	int res = cqe->res;

	if (!more) {
		c->ops &= (uint16_t)~CONN_OP_RECV;
		c->flags &= (uint16_t)~CONN_F_CANCELING;
	}
	if (res <= 0 && (cqe->flags & IORING_CQE_F_BUFFER))
		/* no data, but the kernel may have used the buffer up */
		buf_recv(&c->w->bufs, (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT), res,
			 cqe->flags);
	if (res > 0) {
		uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		char *p = buf_recv(&c->w->bufs, bid, res, cqe->flags);

		c->flags &= (uint16_t)~CONN_F_INQ;
		/* bulk stays on the large ring; a short receive (a command, a
		 * reply) goes back to the small one */
		if (res < BUF_SIZE / 4)
			c->flags &= (uint16_t)~CONN_F_COLD;
		if (cqe->flags & IORING_CQE_F_SOCK_NONEMPTY)
			c->flags |= CONN_F_INQ;
		if (c->flags & CONN_F_ORPHAN)
			conn_buf_release(c->w, bid);
		else
			c->x->recv(c, p, (size_t)res, bid);
	} else if (res == 0) {
		c->flags |= CONN_F_EOF;
		if (!(c->flags & CONN_F_ORPHAN))
			c->h->eof(c);
	} else if (res == -ENOBUFS && !(c->flags & CONN_F_COLD)) {
		c->flags |= CONN_F_COLD; /* at once, from the large ring */
	} else if (res == -ENOBUFS) {
		c->flags &= (uint16_t)~CONN_F_COLD;
		starve(c);
	} else if (res == -EINVAL && (c->flags & CONN_F_CAPPED)) {
		/* before 6.17: no byte limit; one recv at a time, from now on
		 * for every conn of the worker */
		c->w->conns->no_cap = true;
		c->flags &= (uint16_t)~CONN_F_CAPPED;
		c->flags |= CONN_F_ONESHOT;
	} else if (res != -ECANCELED) {
		c->flags |= CONN_F_DEAD;
		if (!(c->flags & CONN_F_ORPHAN))
			c->h->error(c, res);
	}
	if (!more && conn_may_recv(c))
		conn_arm_recv(c);
	else if (!more && (c->flags & CONN_F_PAUSED) && !(c->ops & CONN_OP_RECV) &&
		 !(c->flags & CONN_F_ORPHAN) && c->h->stopped)
		c->h->stopped(c);
}

static void on_send(struct conn *c, int res)
{
	c->ops &= (uint16_t)~CONN_OP_SEND;
	if (res < 0) {
		c->flags |= CONN_F_DEAD;
		drop_queue(c); /* all of it: no send is in flight now */
		if (!(c->flags & CONN_F_ORPHAN))
			c->h->error(c, res);
		return;
	}
	c->seg_off += (uint32_t)res;
	c->queued -= (uint32_t)res;
	if (c->seg_off >= c->segs[c->seg_head].len) {
		seg_release(c, &c->segs[c->seg_head]);
		c->seg_head = (uint8_t)((c->seg_head + 1) % CONN_SEGS);
		c->seg_count--;
		c->seg_off = 0;
	} else {
		unpin_queue(c); /* short: the peer's window is full */
	}
	if ((c->flags & CONN_F_ORPHAN) && !(c->flags & CONN_F_FLUSH))
		drop_queue(c);
	else if (c->x->flush)
		c->x->flush(c);
	if (c->seg_count) {
		if (!(c->flags & CONN_F_DEAD))
			submit_send(c);
		return;
	}
	if (c->flags & CONN_F_SHUT_WR)
		do_shutdown_wr(c);
	if (!(c->flags & CONN_F_ORPHAN) && c->h->drained)
		c->h->drained(c);
}

static void on_connect(struct conn *c, int res)
{
	c->ops &= (uint16_t)~CONN_OP_CONNECT;
	if (res == -ECANCELED)
		res = -ETIMEDOUT;
	if (res < 0)
		c->flags |= CONN_F_DEAD;
	if (c->flags & CONN_F_ORPHAN)
		return;
	if (res == 0) {
		if (c->seg_count && !(c->ops & CONN_OP_SEND))
			submit_send(c);
		if (conn_may_recv(c))
			conn_arm_recv(c);
	}
	c->h->connected(c, res);
}

void conn_complete(struct conn *c, enum op_kind kind, struct io_uring_cqe *cqe)
{
	c->flags |= CONN_F_IN_CB;
	switch (kind) {
	case OP_RECV:
		on_recv(c, cqe);
		break;
	case OP_SEND:
		on_send(c, cqe->res);
		break;
	case OP_CONNECT:
		on_connect(c, cqe->res);
		break;
	case OP_LINK_TIMEOUT:
		c->ops &= (uint16_t)~CONN_OP_LTIMEOUT;
		break;
	default:
		break;
	}
	c->flags &= (uint16_t)~CONN_F_IN_CB;
	maybe_free(c);
}
