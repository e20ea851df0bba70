/* worker.h - one io_uring ring per worker thread, and its dispatcher.
 *
 * Every submission carries user_data = object pointer | op kind (the low
 * four bits, OP_MASK; so every object named in user_data is 16-aligned:
 * conns come from a slab of 16-octet multiples, lsocks from malloc, and
 * struct worker and struct worker_cb say so). worker_run() reaps
 * completions and switches on the kind; nothing else reads the completion
 * queue. What lives outside core (the resolver's sockets, say) completes
 * through OP_CALLBACK: its object starts with a struct worker_cb.
 *
 * Calls go one way: worker.c (the loop, its dispatcher, the listening
 * sockets) calls core/conn.c (conn_complete() and the conns' lists, which
 * conn.c keeps to itself), and both call core/buf.c (the buffers) and the
 * inline ring helpers below; conn.c never calls worker.c, buf.c neither.
 */
#ifndef MXLB_WORKER_H
#define MXLB_WORKER_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/slab.h"
#include "core/timer.h"

enum op_kind {
	OP_IGNORE = 0,	 /* cancel requests and the like: result unused */
	OP_RECV,	 /* struct conn: multishot recv */
	OP_SEND,	 /* struct conn: the one send in flight */
	OP_CONNECT,	 /* struct conn */
	OP_LINK_TIMEOUT, /* struct conn: the connect's linked timeout */
	OP_ACCEPT,	 /* struct lsock: multishot accept */
	OP_TICK,	 /* struct worker: the timer wheel's multishot timeout */
	OP_WAKE,	 /* struct worker: eventfd read (stop request) */
	OP_CALLBACK,	 /* struct worker_cb: its fn gets the completion */
};
#define OP_MASK 15u

/* The head of an object that submits its own operations (OP_CALLBACK):
 * fn runs from the dispatcher with each of their completions. The object
 * must outlive every operation in flight that names it. */
struct worker_cb {
	void (*fn)(struct worker_cb *cb, struct io_uring_cqe *cqe);
} __attribute__((aligned(16)));

struct conns;
struct splice_pool;
struct lsock;
struct worker;

/* What the proxy does with a worker's events. */
struct worker_ops {
	void (*stopping)(struct worker *w);   /* stop requested: refuse what is not relaying */
	unsigned (*active)(struct worker *w); /* sessions still open */
	void (*abort_all)(struct worker *w);  /* shutdown_timeout passed */
	void (*reap)(struct worker *w);	      /* after each batch of completions */
	void (*started)(struct worker *w);    /* the ring runs: arm what the proxy needs */
	/* the loop ended (no session, no conn left), on the worker's thread:
	 * release what started armed; no completion is dispatched any more */
	void (*stopped)(struct worker *w);
	void (*reload)(struct worker *w, void *arg); /* worker_request_reload()'s arg */
};

/* A listening socket owned by one worker.
 *
 * Accepting backs off when it fails (EMFILE, ENFILE, ENOBUFS, ...; not
 * for errors of one connection) or hands out a file descriptor from the
 * reserve (worker_fd_in_reserve()): no accept for ACCEPT_BACKOFF_MIN_MS,
 * doubling up to ACCEPT_BACKOFF_MAX_MS, one log line per pause. After a
 * pause a single accept probes; multishot accepting resumes once a probe
 * gets an fd below the reserve, and the next pause starts over at the
 * minimum once ACCEPT_BACKOFF_RESET_MS passed without a failure. */
struct lsock {
	int fd;
	bool accepting;
	bool retired;	      /* closed by a reload; freed when its accept is reaped */
	bool probe;	      /* after a pause: one accept at a time */
	struct timer backoff; /* armed while accepting pauses */
	uint32_t backoff_ms;  /* the last pause */
	uint32_t failures;    /* failed or refused accepts since the last log line */
	uint64_t resumed_ms;  /* when the last pause ended */
	struct worker *w;
	/* what becomes of an accepted fd: each socket has its own handler
	 * (a mail listener's, the admin server's), which owns the fd */
	void (*accepted)(struct lsock *ls, int fd);
	void *owner; /* the handler's: the proxy's listener */
	struct lsock *next;
	struct sockaddr_storage addr; /* what it is bound to */
	socklen_t addrlen;
} __attribute__((aligned(16)));

struct worker {
	int id;
	struct io_uring ring;
	struct bufs bufs;
	struct wheel wheel;
	struct __kernel_timespec tick_ts;
	int wake_fd;
	uint64_t wake_val;
	struct lsock *lsocks;
	struct conns *conns;	   /* core/conn.c's: its allocator and lists */
	struct splice_pool *pipes; /* core/splice.c's: empty pipes, made on first use */
	const struct worker_ops *ops;
	void *proxy;  /* the proxy's per-worker state */
	int fd_high;  /* fds at or above it are the reserve; see worker_fd_in_reserve() */
	int fd_limit; /* RLIMIT_NOFILE as last read */
	bool stopping;
	uint64_t stop_deadline_ms;
	uint32_t shutdown_timeout_ms;
	pthread_t thread;
	int init_err;
	/* requests from the main thread, under msg_lock */
	pthread_mutex_t msg_lock;
	pthread_cond_t msg_done;
	bool stop_req;
	bool reload_req;
	void *reload_arg;
	struct lsock *retired; /* lsocks whose accept is still being cancelled */
} __attribute__((aligned(16)));

/* Locks and fields a worker needs before its thread starts. */
void worker_setup(struct worker *w);
/* Create the ring and buffer ring; call from the worker's own thread. */
int worker_init(struct worker *w);
/* Run until stopped and every session is gone. */
void worker_run(struct worker *w);
void worker_fini(struct worker *w);

/* Ask a worker (from any thread) to stop. */
void worker_request_stop(struct worker *w);
/* Run ops->reload(w, arg) on the worker's thread; returns when it ran. */
void worker_reload(struct worker *w, void *arg);
/* From ops->reload: stop accepting on ls and free it once reaped. */
void worker_retire_lsock(struct worker *w, struct lsock *ls);
/* From ops->reload: start accepting on a new socket. */
void worker_add_lsock(struct worker *w, struct lsock *ls);

/* An SQE, submitting first when the queue is full. Never NULL. */
static inline struct io_uring_sqe *worker_sqe(struct worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

	while (!sqe) {
		io_uring_submit(&w->ring);
		sqe = io_uring_get_sqe(&w->ring);
	}
	return sqe;
}

static inline uint64_t op_data(void *obj, enum op_kind kind)
{
	/* a misaligned object would complete as another kind */
	if ((uintptr_t)obj & OP_MASK) {
		log_error("bug", "op_data: object %p is not 16-aligned", obj);
		abort();
	}
	return (uint64_t)(uintptr_t)obj | kind;
}

/* cb->fn runs once, from the dispatcher, with the completion of a NOP:
 * after what runs now, without waiting for any other event. */
static inline void worker_post(struct worker *w, struct worker_cb *cb)
{
	struct io_uring_sqe *sqe = worker_sqe(w);

	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data64(sqe, op_data(cb, OP_CALLBACK));
}

static inline uint64_t worker_now_ms(void)
{
	return clock_usec() / 1000;
}

/* Accept back-off (struct lsock). */
#define ACCEPT_BACKOFF_MIN_MS 100
#define ACCEPT_BACKOFF_MAX_MS 1000
#define ACCEPT_BACKOFF_RESET_MS 2000

/* The last file descriptors below RLIMIT_NOFILE are kept for what the
 * process opens itself (backend connects, health checks, alerts): an
 * accept that hands out one of them makes its socket back off, and the
 * proxy turns that client away at once (worker_fd_in_reserve()). The
 * reserve is RLIMIT_NOFILE / FD_RESERVE_DIV, at least FD_RESERVE_MIN
 * and at most FD_RESERVE_MAX, never more than a quarter of the limit. */
#define FD_RESERVE_DIV 64
#define FD_RESERVE_MIN 32
#define FD_RESERVE_MAX 1024
/* Whether an accepted fd is one of the reserve: the kernel hands out the
 * lowest free number, so every fd below it is taken. */
static inline bool worker_fd_in_reserve(const struct worker *w, int fd)
{
	return fd >= w->fd_high;
}

#endif
