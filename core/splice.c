/* splice.c - see splice.h. */
#include "core/splice.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/conn.h"
#include "core/worker.h"

/* Asked of F_SETPIPE_SZ for each pipe (bench/README.md, "splice or
 * copy"); the kernel may give less (pipe-user-pages-soft). */
#ifndef SPLICE_PIPE_SIZE
#define SPLICE_PIPE_SIZE (256 * 1024)
#endif
/* Empty pipes kept per worker for the next session. */
#define SPLICE_POOL_MAX 64

struct splice_pool {
	unsigned n;
	int fds[SPLICE_POOL_MAX][2];
};

enum { SOP_IN_POLL, SOP_OUT_POLL, SOP_N };

struct splice_op {
	struct worker_cb cb; /* first: the completion names it */
	struct splice_dir *d;
	uint8_t kind; /* SOP_* */
} __attribute__((aligned(16)));

struct splice_dir {
	struct splice_op op[SOP_N];
	struct splice *sp;
	int dir;
	int pfd[2];	 /* the pipe, -1 without */
	uint32_t cap;	 /* its size */
	uint32_t n;	 /* octets in it */
	bool on;	 /* splice_start() ran */
	bool in_busy;	 /* a poll for the source's input in flight */
	bool out_busy;	 /* a poll for room at the destination in flight */
	bool out_poll;	 /* the destination refused: poll for room first */
	bool in_blocked; /* the pipe refused more: wait for a splice out */
	bool eof, done;	 /* the source ended; h->eof was called */
	bool failed;	 /* h->error was called */
};

struct splice {
	struct splice_dir d[2];
	struct worker_cb free_cb; /* the NOP that frees a splice with nothing in flight */
	struct conn *c[2];	  /* dir 0: c[0] -> c[1] */
	struct worker *w;
	const struct splice_handler *h;
	void *owner;
	unsigned inflight; /* operations whose completion is still to come */
	bool orphan;
	bool nonblock; /* the sockets are O_NONBLOCK */
};

static struct splice_pool *pool_of(struct worker *w)
{
	if (!w->pipes)
		w->pipes = calloc(1, sizeof(*w->pipes));
	return w->pipes;
}

static void pipe_close(int pfd[2])
{
	if (pfd[0] >= 0)
		close(pfd[0]);
	if (pfd[1] >= 0)
		close(pfd[1]);
	pfd[0] = pfd[1] = -1;
}

/* A pipe from the pool, or a new one; its size in *cap. */
static int pipe_get(struct worker *w, int pfd[2], uint32_t *cap)
{
	struct splice_pool *pl = pool_of(w);
	int sz;

	if (pl && pl->n) {
		pl->n--;
		pfd[0] = pl->fds[pl->n][0];
		pfd[1] = pl->fds[pl->n][1];
	} else {
		if (pipe2(pfd, O_CLOEXEC | O_NONBLOCK) < 0)
			return -errno;
		/* the pipe must not take what the fd reserve keeps for
		 * backend connects: copying works without it */
		if (worker_fd_in_reserve(w, pfd[0]) || worker_fd_in_reserve(w, pfd[1])) {
			pipe_close(pfd);
			return -EMFILE;
		}
		fcntl(pfd[1], F_SETPIPE_SZ, SPLICE_PIPE_SIZE);
	}
	sz = fcntl(pfd[1], F_GETPIPE_SZ);
	if (sz <= 0) {
		pipe_close(pfd);
		return -EIO;
	}
	*cap = (uint32_t)sz;
	return 0;
}

/* An empty pipe goes back to the pool; one with bytes left (a session
 * that ended mid-transfer) could hand them to the next: closed. */
static void pipe_put(struct worker *w, int pfd[2], bool clean)
{
	struct splice_pool *pl = pool_of(w);
	int left = -1;

	if (pfd[0] < 0)
		return;
	if (clean && pl && pl->n < SPLICE_POOL_MAX && ioctl(pfd[0], FIONREAD, &left) == 0 &&
	    left == 0) {
		pl->fds[pl->n][0] = pfd[0];
		pl->fds[pl->n][1] = pfd[1];
		pl->n++;
		pfd[0] = pfd[1] = -1;
		return;
	}
	pipe_close(pfd);
}

void splice_worker_fini(struct worker *w)
{
	struct splice_pool *pl = w->pipes;

	if (!pl)
		return;
	while (pl->n) {
		pl->n--;
		pipe_close(pl->fds[pl->n]);
	}
	free(pl);
	w->pipes = NULL;
}

static void sp_free(struct splice *sp)
{
	for (int i = 0; i < 2; i++) {
		struct splice_dir *d = &sp->d[i];

		pipe_put(sp->w, d->pfd, !d->failed && !d->n && !d->in_busy && !d->out_busy);
	}
	conn_unhold(sp->c[0]);
	conn_unhold(sp->c[1]);
	free(sp);
}

static void on_op(struct worker_cb *cb, struct io_uring_cqe *cqe);

static void on_free(struct worker_cb *cb, struct io_uring_cqe *cqe)
{
	struct splice *sp = (struct splice *)((char *)cb - offsetof(struct splice, free_cb));

	(void)cqe;
	if (--sp->inflight == 0)
		sp_free(sp);
}

struct splice *splice_new(struct conn *a, struct conn *b, const struct splice_handler *h,
			  void *owner)
{
	struct splice *sp = aligned_alloc(16, (sizeof(*sp) + 15) & ~(size_t)15);

	if (!sp)
		return NULL;
	*sp = (struct splice){ .w = a->w, .h = h, .owner = owner, .c = { a, b } };
	sp->free_cb.fn = on_free;
	for (int i = 0; i < 2; i++) {
		struct splice_dir *d = &sp->d[i];

		d->sp = sp;
		d->dir = i;
		d->pfd[0] = d->pfd[1] = -1;
		for (int k = 0; k < SOP_N; k++) {
			d->op[k].cb.fn = on_op;
			d->op[k].d = d;
			d->op[k].kind = (uint8_t)k;
		}
	}
	conn_hold(a, sp);
	conn_hold(b, sp);
	return sp;
}

static int src_fd(const struct splice_dir *d)
{
	return d->sp->c[d->dir]->fd;
}

static int dst_fd(const struct splice_dir *d)
{
	return d->sp->c[!d->dir]->fd;
}

static void poll_arm(struct splice_dir *d, int kind, int fd, unsigned mask)
{
	struct io_uring_sqe *sqe = worker_sqe(d->sp->w);

	io_uring_prep_poll_add(sqe, fd, mask);
	io_uring_sqe_set_data64(sqe, op_data(&d->op[kind], OP_CALLBACK));
	d->sp->inflight++;
}

static void in_arm(struct splice_dir *d)
{
	if (d->sp->orphan || !d->on || d->eof || d->failed || d->in_busy || d->in_blocked ||
	    d->n >= d->cap)
		return;
	poll_arm(d, SOP_IN_POLL, src_fd(d), POLLIN);
	d->in_busy = true;
}

static void fail(struct splice_dir *d, bool src, int err)
{
	d->failed = true;
	d->sp->h->error(d->sp->owner, d->dir, src, err);
}

static void check_done(struct splice_dir *d)
{
	if (d->eof && !d->n && !d->out_busy && !d->done && !d->failed && !d->sp->orphan) {
		d->done = true;
		d->sp->h->eof(d->sp->owner, d->dir);
	}
}

/* What the pipe holds to the destination, as much as it takes now; when
 * it refuses, a poll for room. Then the source may go on. */
static void out_move(struct splice_dir *d)
{
	while (!d->sp->orphan && !d->failed && !d->out_busy && d->n) {
		ssize_t r;

		if (d->out_poll) {
			poll_arm(d, SOP_OUT_POLL, dst_fd(d), POLLOUT);
			d->out_busy = true;
			return;
		}
		r = splice(d->pfd[0], NULL, dst_fd(d), NULL, d->n, SPLICE_F_NONBLOCK);
		if (r > 0) {
			d->n -= (uint32_t)r;
			d->in_blocked = false;
		} else if (r < 0 && errno == EAGAIN) {
			d->out_poll = true;
		} else {
			/* 0 cannot be: the pipe has bytes and its writer */
			fail(d, false, r < 0 ? -errno : -EIO);
			return;
		}
	}
	in_arm(d);
	check_done(d);
}

/* r octets came into the pipe (0: the source ended). */
static void in_moved(struct splice_dir *d, ssize_t r)
{
	struct splice *sp = d->sp;

	if (r == 0) {
		d->eof = true;
		check_done(d);
		return;
	}
	d->n += (uint32_t)r;
	sp->h->moved(sp->owner, d->dir, (size_t)r);
	out_move(d);
}

/* The poll said input, the pipe is empty, yet splice took nothing. TCP's
 * splice stops at urgent data (tcp_read_sock() does not read past the
 * mark, and poll keeps saying POLLIN: a client's one MSG_OOB byte would
 * spin the worker), while recv() steps over the urgent byte, as copying
 * does. So a few octets go through user space, then splicing goes on. */
static void in_unstick(struct splice_dir *d)
{
	char tmp[PIPE_BUF];
	ssize_t r = recv(src_fd(d), tmp, sizeof(tmp), MSG_DONTWAIT);

	if (r < 0 && errno == EAGAIN) {
		in_arm(d); /* there was nothing after all */
	} else if (r < 0) {
		fail(d, true, -errno);
	} else if (r > 0 && write(d->pfd[1], tmp, (size_t)r) != r) {
		/* an empty pipe takes PIPE_BUF octets at once */
		fail(d, true, -EIO);
	} else {
		in_moved(d, r);
	}
}

/* The source has input (or an error or its end): into the pipe. */
static void in_move(struct splice_dir *d)
{
	ssize_t r = splice(src_fd(d), NULL, d->pfd[1], NULL, d->cap - d->n, SPLICE_F_NONBLOCK);

	if (r >= 0)
		in_moved(d, r);
	else if (errno != EAGAIN)
		fail(d, true, -errno);
	else if (d->n)
		d->in_blocked = true; /* the pipe is full (its slots, not its octets) */
	else
		in_unstick(d);
}

static void on_op(struct worker_cb *cb, struct io_uring_cqe *cqe)
{
	struct splice_op *o = (struct splice_op *)cb;
	struct splice_dir *d = o->d;
	struct splice *sp = d->sp;
	bool in = o->kind == SOP_IN_POLL;

	sp->inflight--;
	if (in)
		d->in_busy = false;
	else
		d->out_busy = false;
	if (sp->orphan || d->failed || cqe->res == -ECANCELED) {
		/* aborted, or the other end of this direction failed */
	} else if (cqe->res < 0) {
		fail(d, in, cqe->res);
	} else if (in) {
		in_move(d); /* POLLERR and POLLHUP too: the splice tells */
	} else {
		d->out_poll = false;
		out_move(d);
	}
	if (sp->orphan && !sp->inflight)
		sp_free(sp);
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

int splice_start(struct splice *sp, int dir)
{
	struct splice_dir *d = &sp->d[dir];
	int ret;

	if (sp->orphan)
		return -EINVAL;
	if (d->on)
		return 0;
	if (!sp->nonblock) {
		/* a splice must never sleep in the worker (splice.h) */
		if ((ret = set_nonblock(sp->c[0]->fd)) < 0 ||
		    (ret = set_nonblock(sp->c[1]->fd)) < 0)
			return ret;
		sp->nonblock = true;
	}
	ret = pipe_get(sp->w, d->pfd, &d->cap);
	if (ret < 0)
		return ret;
	d->on = true;
	in_arm(d);
	return 0;
}

static void cancel(struct splice *sp, struct splice_op *o)
{
	struct io_uring_sqe *sqe = worker_sqe(sp->w);

	io_uring_prep_cancel64(sqe, op_data(o, OP_CALLBACK), 0);
	io_uring_sqe_set_data64(sqe, OP_IGNORE);
}

void splice_abort(struct splice *sp)
{
	if (!sp || sp->orphan)
		return;
	sp->orphan = true;
	sp->c[0]->splice = sp->c[1]->splice = NULL;
	for (int i = 0; i < 2; i++) {
		struct splice_dir *d = &sp->d[i];

		/* the splices themselves run inline: only polls wait */
		if (d->in_busy)
			cancel(sp, &d->op[SOP_IN_POLL]);
		if (d->out_busy)
			cancel(sp, &d->op[SOP_OUT_POLL]);
	}
	/* freed from the dispatcher, never from inside a conn's close */
	if (!sp->inflight) {
		sp->inflight = 1;
		worker_post(sp->w, &sp->free_cb);
	}
}
