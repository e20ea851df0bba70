/* conn.c - see conn.h. */
#include "core/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "tls/tls.h"

/* operations in flight (c->ops) */
#define CONN_OP_RECV 0x1u
#define CONN_OP_SEND 0x2u
#define CONN_OP_CONNECT 0x4u
#define CONN_OP_LTIMEOUT 0x8u

/* state (c->flags) */
#define CONN_F_ORPHAN 0x1u      /* closed by its owner: no more callbacks */
#define CONN_F_WANT_RECV 0x2u   /* the owner started receiving */
#define CONN_F_PAUSED 0x4u      /* the owner paused receiving */
#define CONN_F_CANCELING 0x8u   /* a cancel of the recv is on its way */
#define CONN_F_EOF 0x10u        /* the peer shut its side */
#define CONN_F_DEAD 0x20u       /* an error: no more I/O */
#define CONN_F_SHUT_WR 0x40u    /* shut the write side when drained */
#define CONN_F_FLUSH 0x80u      /* orphan: close once drained and the peer is done */
#define CONN_F_STARVED 0x100u   /* on the worker's starved list */
#define CONN_F_LINGER 0x200u    /* on the worker's lingering list */
#define CONN_F_IN_CB 0x400u     /* a completion is being handled: do not free */
#define CONN_F_ONESHOT 0x800u   /* one recv at a time instead of multishot */
#define CONN_F_TLS_HS 0x1000u   /* TLS handshake in progress */
#define CONN_F_DEFERRED 0x2000u /* on the worker's deferred list */
#define CONN_F_COLD 0x4000u     /* the small ring was empty: use the large one */

void sock_set_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

struct conn *conn_new(struct worker *w, int fd, const struct conn_handler *h, void *owner)
{
	struct conn *c = slab_alloc(&w->conn_slab);

	if (!c)
		return NULL;
	w->nconns++;
	c->fd = fd;
	c->h = h;
	c->owner = owner;
	c->w = w;
	return c;
}

static void cancel_op(struct conn *c, enum op_kind kind)
{
	struct io_uring_sqe *sqe = worker_sqe(c->w);

	io_uring_prep_cancel64(sqe, op_data(c, kind), 0);
	io_uring_sqe_set_data64(sqe, OP_IGNORE);
}

static void seg_release(struct conn *c, struct seg *sg)
{
	if (sg->bid >= 0)
		worker_buf_release(c->w, (uint16_t)sg->bid);
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
	if (!(c->flags & CONN_F_ORPHAN) || c->ops ||
	    (c->flags & (CONN_F_IN_CB | CONN_F_STARVED | CONN_F_LINGER | CONN_F_DEFERRED)))
		return;
	drop_queue(c);
	tls_io_free(c->tls);
	free(c->tls_left);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->w->nconns--;
	slab_free(&c->w->conn_slab, c);
}

static void arm_recv(struct conn *c)
{
	struct io_uring_sqe *sqe = worker_sqe(c->w);

	if (c->flags & CONN_F_ONESHOT)
		io_uring_prep_recv(sqe, c->fd, NULL, BUF_SIZE, 0);
	else
		io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = (c->flags & CONN_F_ONESHOT) && !(c->flags & CONN_F_COLD) ? BUF_HOT_GROUP
										 : BUF_GROUP;
	io_uring_sqe_set_data64(sqe, op_data(c, OP_RECV));
	c->ops |= CONN_OP_RECV;
}

static bool may_recv(const struct conn *c)
{
	return c->fd >= 0 && (c->flags & CONN_F_WANT_RECV) &&
	       !(c->flags & (CONN_F_PAUSED | CONN_F_EOF | CONN_F_DEAD | CONN_F_STARVED)) &&
	       !(c->ops & (CONN_OP_RECV | CONN_OP_CONNECT));
}

static void defer(struct conn *c)
{
	if (c->flags & CONN_F_DEFERRED)
		return;
	c->flags |= CONN_F_DEFERRED;
	c->next_deferred = c->w->deferred;
	c->w->deferred = c;
}

void conn_recv_start(struct conn *c)
{
	c->flags |= CONN_F_WANT_RECV;
	c->flags &= (uint16_t)~CONN_F_PAUSED;
	/* TLS: what was received or decrypted while paused is handed over
	 * after this batch, not from inside the caller */
	if (c->tls && (c->tls_left || tls_io_pending(c->tls)) && !(c->flags & CONN_F_ORPHAN)) {
		defer(c);
		return;
	}
	if (may_recv(c))
		arm_recv(c);
}

void conn_recv_pause(struct conn *c)
{
	c->flags |= CONN_F_PAUSED;
	if ((c->ops & CONN_OP_RECV) && !(c->flags & CONN_F_CANCELING)) {
		cancel_op(c, OP_RECV);
		c->flags |= CONN_F_CANCELING;
	}
}

void conn_recv_oneshot(struct conn *c)
{
	if (c->flags & CONN_F_ONESHOT)
		return;
	c->flags |= CONN_F_ONESHOT;
	/* a multishot recv in flight is replaced once its cancel lands */
	if ((c->ops & CONN_OP_RECV) && !(c->flags & CONN_F_CANCELING)) {
		cancel_op(c, OP_RECV);
		c->flags |= CONN_F_CANCELING;
	}
}

bool conn_recv_paused(const struct conn *c)
{
	return c->flags & CONN_F_PAUSED;
}

static void submit_send(struct conn *c)
{
	struct seg *sg = &c->segs[c->seg_head];
	struct io_uring_sqe *sqe = worker_sqe(c->w);

	io_uring_prep_send(sqe, c->fd, sg->p + c->seg_off, sg->len - c->seg_off, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, op_data(c, OP_SEND));
	c->ops |= CONN_OP_SEND;
}

static void enqueue(struct conn *c, char *p, size_t len, int32_t bid)
{
	struct seg *sg = &c->segs[(c->seg_head + c->seg_count) % CONN_SEGS];

	sg->p = p;
	sg->len = (uint32_t)len;
	sg->bid = bid;
	c->seg_count++;
	c->queued += (uint32_t)len;
	if (!(c->ops & (CONN_OP_SEND | CONN_OP_CONNECT)))
		submit_send(c);
}

/* The TLS engine's output goes out as it is, after what is queued. When
 * the queue is full it waits in the engine for the next send to end. */
static void tls_flush(struct conn *c)
{
	char *p;
	size_t len;

	if (!tls_io_has_output(c->tls) || c->seg_count >= CONN_SEGS || c->fd < 0 ||
	    (c->flags & CONN_F_DEAD))
		return;
	p = tls_io_take_output(c->tls, &len);
	enqueue(c, p, len, -1);
}

/* Queue p; with TLS, encrypt it and release p at once. -1 leaves p to
 * the caller. */
static int push(struct conn *c, char *p, size_t len, int32_t bid)
{
	if (c->seg_count >= CONN_SEGS || (c->flags & (CONN_F_DEAD | CONN_F_SHUT_WR)) ||
	    c->fd < 0)
		return -1;
	if (!c->tls) {
		enqueue(c, p, len, bid);
		return 0;
	}
	if (!tls_io_established(c->tls) || tls_io_write(c->tls, p, len) < 0)
		return -1;
	if (bid >= 0)
		worker_buf_release(c->w, (uint16_t)bid);
	else
		free(p);
	tls_flush(c);
	return 0;
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
		worker_buf_release(c->w, bid);
		return -1;
	}
	return 0;
}

int conn_write_now(struct conn *c, const void *p, size_t len)
{
	ssize_t n;

	if (c->tls || c->seg_count || c->fd < 0 || (c->flags & (CONN_F_DEAD | CONN_F_SHUT_WR)))
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

/* TLS: a close_notify goes before the FIN. */
static void tls_notify(struct conn *c)
{
	if (!c->tls || (c->flags & (CONN_F_SHUT_WR | CONN_F_DEAD)))
		return;
	tls_io_close_notify(c->tls);
	tls_flush(c);
}

void conn_shutdown_wr(struct conn *c)
{
	if (c->flags & CONN_F_SHUT_WR)
		return;
	tls_notify(c);
	c->flags |= CONN_F_SHUT_WR;
	if (!c->seg_count)
		do_shutdown_wr(c);
}

int conn_connect(struct conn *c, const struct sockaddr *sa, socklen_t len, uint32_t timeout_ms)
{
	struct io_uring_sqe *sqe;

	c->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	sock_set_nodelay(c->fd);
	/* the connect and its timeout must go in one submission */
	if (io_uring_sq_space_left(&c->w->ring) < 2)
		io_uring_submit(&c->w->ring);
	sqe = worker_sqe(c->w);
	io_uring_prep_connect(sqe, c->fd, sa, len);
	sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data64(sqe, op_data(c, OP_CONNECT));
	c->connect_ts.tv_sec = timeout_ms / 1000;
	c->connect_ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
	sqe = worker_sqe(c->w);
	io_uring_prep_link_timeout(sqe, &c->connect_ts, 0);
	io_uring_sqe_set_data64(sqe, op_data(c, OP_LINK_TIMEOUT));
	c->ops |= CONN_OP_CONNECT | CONN_OP_LTIMEOUT;
	return 0;
}

static void linger_add(struct conn *c, uint32_t linger_ms)
{
	if (c->flags & CONN_F_LINGER)
		return;
	c->flags |= CONN_F_LINGER;
	c->linger_until = (uint32_t)(worker_now_ms() + linger_ms);
	c->next_linger = c->w->lingering;
	c->w->lingering = c;
}

/* Drop the queue and cancel whatever is in flight; the completions free. */
static void abort_io(struct conn *c)
{
	c->flags |= CONN_F_DEAD;
	drop_queue(c);
	if ((c->ops & CONN_OP_RECV) && !(c->flags & CONN_F_CANCELING)) {
		cancel_op(c, OP_RECV);
		c->flags |= CONN_F_CANCELING;
	}
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
	abort_io(c);
	maybe_free(c);
}

void conn_close_after_flush(struct conn *c, uint32_t linger_ms)
{
	if (!c || (c->flags & CONN_F_ORPHAN))
		return;
	if (c->fd < 0 || (c->flags & CONN_F_DEAD) || (c->ops & CONN_OP_CONNECT)) {
		conn_close(c);
		return;
	}
	/* Like nginx's lingering close: send what is queued, shut the write
	 * side, and read (discarding) until the peer closes, so that unread
	 * input does not turn our last reply into a reset. */
	tls_notify(c);
	c->flags |= CONN_F_ORPHAN | CONN_F_FLUSH | CONN_F_SHUT_WR | CONN_F_WANT_RECV;
	c->flags &= (uint16_t)~CONN_F_PAUSED;
	if (!c->seg_count)
		do_shutdown_wr(c);
	if (may_recv(c))
		arm_recv(c);
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
	struct conn **pp = &w->lingering;

	while (*pp) {
		struct conn *c = *pp;

		if (!linger_done(c) && (int32_t)((uint32_t)now_ms - c->linger_until) < 0) {
			pp = &c->next_linger;
			continue;
		}
		*pp = c->next_linger;
		c->flags &= (uint16_t)~(CONN_F_LINGER | CONN_F_FLUSH);
		abort_io(c);
		maybe_free(c);
	}
}

void conn_resume_starved(struct worker *w)
{
	struct conn *c = w->starved;

	if (!c)
		return;
	w->starved = c->next_starved;
	c->flags &= (uint16_t)~CONN_F_STARVED;
	if (may_recv(c))
		arm_recv(c);
	maybe_free(c);
}

static void starve(struct conn *c)
{
	if (c->flags & CONN_F_STARVED)
		return;
	c->flags |= CONN_F_STARVED;
	c->next_starved = c->w->starved;
	c->w->starved = c;
}

/* ---- TLS: ciphertext in, plaintext to the handler ---- */

static bool tls_stopped(const struct conn *c)
{
	return c->flags & (CONN_F_ORPHAN | CONN_F_PAUSED | CONN_F_DEAD | CONN_F_EOF);
}

/* Run the engine on its input: the handshake, then records, each read
 * into a worker buffer the handler may keep. Stops when the input is
 * used up or the owner paused or closed. */
static void tls_pump(struct conn *c)
{
	struct tls_io *t = c->tls;

	if (c->flags & CONN_F_TLS_HS) {
		enum tls_res r = tls_io_handshake(t);

		tls_flush(c);
		if (r == TLS_WANT || (c->flags & CONN_F_ORPHAN))
			return;
		c->flags &= (uint16_t)~CONN_F_TLS_HS;
		if (r != TLS_OK) {
			c->flags |= CONN_F_DEAD;
			c->h->handshake(c, -EPROTO);
			return;
		}
		c->h->handshake(c, 0);
	}
	while (!tls_stopped(c)) {
		uint16_t pb = worker_plain_get(c->w);
		enum tls_res r;
		size_t n = 0;

		if (pb == BID_NONE) {
			c->flags |= CONN_F_DEAD;
			c->h->error(c, -ENOBUFS);
			return;
		}
		r = tls_io_read(t, worker_buf(c->w, pb), BUF_SIZE, &n);
		tls_flush(c);
		if (r == TLS_OK) {
			if (!c->h->data(c, worker_buf(c->w, pb), n, pb))
				worker_buf_release(c->w, pb);
			continue;
		}
		worker_buf_release(c->w, pb);
		if (r == TLS_WANT)
			return;
		if (r == TLS_CLOSED) {
			c->flags |= CONN_F_EOF;
			c->h->eof(c);
		} else {
			c->flags |= CONN_F_DEAD;
			c->h->error(c, -EPROTO);
		}
		return;
	}
}

/* Keep what the engine did not read (the owner paused) in tls_left. */
static void tls_keep_left(struct conn *c)
{
	size_t left = tls_io_input_left(c->tls);
	char *p;

	if (!left || (c->flags & (CONN_F_ORPHAN | CONN_F_DEAD))) {
		free(c->tls_left);
		c->tls_left = NULL;
		c->tls_left_len = 0;
		tls_io_input(c->tls, NULL, 0);
		return;
	}
	p = malloc(left);
	if (p)
		memcpy(p, tls_io_input_left_ptr(c->tls), left);
	free(c->tls_left);
	c->tls_left = p;
	c->tls_left_len = p ? (uint32_t)left : 0;
	tls_io_input(c->tls, NULL, 0);
}

static void tls_run(struct conn *c, const char *p, size_t len)
{
	tls_io_input(c->tls, p, len);
	tls_pump(c);
	tls_keep_left(c);
}

static void tls_recv(struct conn *c, char *p, size_t len, uint16_t bid)
{
	if (c->tls_left) {
		/* behind bytes kept while paused: append, keep the order */
		char *np = realloc(c->tls_left, c->tls_left_len + len);

		if (np) {
			memcpy(np + c->tls_left_len, p, len);
			c->tls_left = np;
			c->tls_left_len += (uint32_t)len;
		}
		worker_buf_release(c->w, bid);
		if (!np) {
			c->flags |= CONN_F_DEAD;
			c->h->error(c, -ENOMEM);
			return;
		}
		if (!tls_stopped(c))
			tls_run(c, c->tls_left, c->tls_left_len);
		return;
	}
	tls_run(c, p, len);
	worker_buf_release(c->w, bid);
}

void conn_run_deferred(struct worker *w)
{
	struct conn *c = w->deferred;

	w->deferred = NULL;
	while (c) {
		struct conn *next = c->next_deferred;

		c->flags &= (uint16_t)~CONN_F_DEFERRED;
		c->flags |= CONN_F_IN_CB;
		if (!tls_stopped(c)) {
			if (c->tls_left)
				tls_run(c, c->tls_left, c->tls_left_len);
			else
				tls_pump(c);
		}
		if (may_recv(c))
			arm_recv(c);
		c->flags &= (uint16_t)~CONN_F_IN_CB;
		maybe_free(c);
		c = next;
	}
}

void conn_start_tls(struct conn *c, struct tls_io *t, const char *pre, size_t prelen)
{
	c->tls = t;
	c->flags |= CONN_F_TLS_HS;
	conn_recv_oneshot(c);
	if (prelen) {
		c->tls_left = malloc(prelen);
		if (c->tls_left) {
			memcpy(c->tls_left, pre, prelen);
			c->tls_left_len = (uint32_t)prelen;
		}
		defer(c);
		return;
	}
	/* a client speaks first */
	tls_pump(c);
}

static void on_recv(struct conn *c, struct io_uring_cqe *cqe)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	int res = cqe->res;

	if (!more) {
		c->ops &= (uint16_t)~CONN_OP_RECV;
		c->flags &= (uint16_t)~CONN_F_CANCELING;
	}
	if (res > 0) {
		uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		char *p = worker_buf(c->w, bid);

		c->flags &= (uint16_t)~CONN_F_COLD;
		if (c->flags & CONN_F_ORPHAN)
			worker_buf_release(c->w, bid);
		else if (c->tls)
			tls_recv(c, p, (size_t)res, bid);
		else if (!c->h->data(c, p, (size_t)res, bid))
			worker_buf_release(c->w, bid);
	} else if (res == 0) {
		c->flags |= CONN_F_EOF;
		if (!(c->flags & CONN_F_ORPHAN))
			c->h->eof(c);
	} else if (res == -ENOBUFS && (c->flags & CONN_F_ONESHOT) && !(c->flags & CONN_F_COLD)) {
		c->flags |= CONN_F_COLD; /* at once, from the large ring */
	} else if (res == -ENOBUFS) {
		c->flags &= (uint16_t)~CONN_F_COLD;
		starve(c);
	} else if (res != -ECANCELED) {
		c->flags |= CONN_F_DEAD;
		if (!(c->flags & CONN_F_ORPHAN))
			c->h->error(c, res);
	}
	if (!more && may_recv(c))
		arm_recv(c);
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
	}
	if ((c->flags & CONN_F_ORPHAN) && !(c->flags & CONN_F_FLUSH))
		drop_queue(c);
	else if (c->tls)
		tls_flush(c);
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
		if (may_recv(c))
			arm_recv(c);
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
