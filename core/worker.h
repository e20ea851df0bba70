/* worker.h - one io_uring ring per worker thread, and its dispatcher.
 *
 * Every submission carries user_data = object pointer | op kind (the low
 * three bits; objects are 8-aligned). worker_run() reaps completions and
 * switches on the kind; nothing else reads the completion queue.
 */
#ifndef MXLB_WORKER_H
#define MXLB_WORKER_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/slab.h"
#include "core/timer.h"

enum op_kind {
	OP_IGNORE = 0,     /* cancel requests and the like: result unused */
	OP_RECV,           /* struct conn: multishot recv */
	OP_SEND,           /* struct conn: the one send in flight */
	OP_CONNECT,        /* struct conn */
	OP_LINK_TIMEOUT,   /* struct conn: the connect's linked timeout */
	OP_ACCEPT,         /* struct lsock: multishot accept */
	OP_TICK,           /* struct worker: the timer wheel's multishot timeout */
	OP_WAKE,           /* struct worker: eventfd read (stop request) */
};
#define OP_MASK 7u

/* Provided-buffer rings, two per worker. The kernel takes buffers from a
 * ring in order and they come back at its end, so every buffer of a ring
 * is touched in turn: the large ring (multishot receives, many sessions
 * at once) cycles through 16 MB, which no cache holds. One-at-a-time
 * receives (the relay, TLS) use a small ring that stays in the CPU's
 * cache, and fall back to the large one when it is empty. */
#define BUF_SIZE 16384
#define BUF_COUNT 1024 /* the large ring: ids 0 .. BUF_COUNT-1; a power of two */
#define BUF_GROUP 0
#define BUF_HOT_COUNT 64 /* the small ring: ids BUF_COUNT ..; a power of two */
#define BUF_HOT_GROUP 1
/* Buffers of the same size the worker hands out itself (decrypted TLS
 * records): ids PLAIN_BASE and up, so that whoever receives a buffer
 * releases it the same way whatever filled it. */
#define PLAIN_BASE (BUF_COUNT + BUF_HOT_COUNT)
#define PLAIN_MAX 8192
#define PLAIN_KEEP 64 /* free ones kept allocated */
#define BID_NONE 0xffffu

struct conn;
struct lsock;
struct worker;

/* What the proxy does with a worker's events. */
struct worker_ops {
	void (*accepted)(struct worker *w, struct lsock *ls, int fd);
	void (*stopping)(struct worker *w); /* stop requested: refuse what is not relaying */
	unsigned (*active)(struct worker *w); /* sessions still open */
	void (*abort_all)(struct worker *w);  /* shutdown_timeout passed */
	void (*reap)(struct worker *w);       /* after each batch of completions */
	void (*started)(struct worker *w);    /* the ring runs: arm what the proxy needs */
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
	bool retired; /* closed by a reload; freed when its accept is reaped */
	bool probe;   /* after a pause: one accept at a time */
	struct timer backoff; /* armed while accepting pauses */
	uint32_t backoff_ms;  /* the last pause */
	uint32_t failures;    /* failed or refused accepts since the last log line */
	uint64_t resumed_ms;  /* when the last pause ended */
	struct worker *w;
	void *owner; /* the proxy's listener */
	struct lsock *next;
	struct sockaddr_storage addr; /* what it is bound to */
	socklen_t addrlen;
};

struct buf_ring {
	struct io_uring_buf_ring *br;
	char *bufs;
	unsigned count;
	uint16_t base; /* the id of its first buffer */
	uint16_t group;
};

struct worker {
	int id;
	struct io_uring ring;
	struct buf_ring rings[2]; /* BUF_GROUP, BUF_HOT_GROUP */
	struct wheel wheel;
	struct __kernel_timespec tick_ts;
	int wake_fd;
	uint64_t wake_val;
	struct lsock *lsocks;
	struct conn *starved; /* conns whose recv stopped for lack of buffers */
	struct conn *lingering; /* orphaned conns still flushing */
	struct conn *deferred; /* conns with work for after this batch */
	char **plain; /* PLAIN_MAX slots, NULL until allocated */
	uint16_t *plain_free; /* free slot indices */
	unsigned nplain, nplain_free, nplain_kept;
	struct slab conn_slab; /* struct conn */
	const struct worker_ops *ops;
	void *proxy; /* the proxy's per-worker state */
	unsigned nconns; /* conns alive, orphans included */
	int fd_high; /* fds at or above it are the reserve; see worker_fd_in_reserve() */
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
};

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
struct io_uring_sqe *worker_sqe(struct worker *w);

static inline uint64_t op_data(void *obj, enum op_kind kind)
{
	return (uint64_t)(uintptr_t)obj | kind;
}

void worker_buf_release(struct worker *w, uint16_t bid);
static inline char *worker_buf(struct worker *w, uint16_t bid)
{
	if (bid >= PLAIN_BASE)
		return w->plain[bid - PLAIN_BASE];
	if (bid >= BUF_COUNT)
		return w->rings[1].bufs + (size_t)(bid - BUF_COUNT) * BUF_SIZE;
	return w->rings[0].bufs + (size_t)bid * BUF_SIZE;
}
/* A buffer of BUF_SIZE the worker owns (id >= PLAIN_BASE), BID_NONE when
 * PLAIN_MAX are out; released with worker_buf_release(). */
uint16_t worker_plain_get(struct worker *w);

uint64_t worker_now_ms(void);

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
