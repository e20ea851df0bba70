/* conn.h - one socket driven by the ring: multishot recv into provided
 * buffers, a queue of segments sent one at a time, connect with a linked
 * timeout, and a close that waits for every operation in flight.
 *
 * Lifetime: a conn is allocated by conn_new() and owned by its handler
 * until conn_close() or conn_close_after_flush(), which orphan it: from
 * then on no callback is called, and the conn frees itself (closing its
 * fd) once no operation on it is in flight. So an owner may free itself
 * right after closing its conns.
 *
 * Transport: what goes between the socket and the handler is a table of
 * functions (struct conn_xprt, HAProxy's xprt_ops): plain sockets here
 * (the default), TLS in tls/conn_tls.c. The handler sees plaintext and
 * never asks which it has.
 *
 * Calls: core/worker.c's dispatcher calls the entry points at the end;
 * this file calls core/buf.c and worker.h's inline ring helpers, never
 * worker.c; a transport calls the functions of "For transports" below.
 */
#ifndef MXLB_CONN_H
#define MXLB_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/worker.h"

/* Segments queued at most. 6, not 8: 32 octets less per conn (idle
 * memory), and with the relay pausing at half of them and receiving at
 * most CONN_RECV_CAP at a time, lock-step and bulk relaying measured the
 * same (bench/README.md, idle memory). */
#define CONN_SEGS 6

struct conn;
struct splice;

struct conn_handler {
	/* Bytes arrived in buffer bid. Return true to keep the buffer
	 * (release it later with conn_buf_release() or by queueing it with
	 * conn_send_buf()), false to have it released now. */
	bool (*data)(struct conn *c, char *p, size_t len, uint16_t bid);
	void (*eof)(struct conn *c);		    /* the peer shut its side */
	void (*error)(struct conn *c, int err);	    /* -errno, recv or send */
	void (*drained)(struct conn *c);	    /* the send queue became empty */
	void (*connected)(struct conn *c, int err); /* 0 or -errno (-ETIMEDOUT) */
	/* A transport with a handshake (TLS): it ended, 0 or -errno (the
	 * transport says why: conn_tls_error()) */
	void (*handshake)(struct conn *c, int err);
	/* Optional: receiving was paused and the last recv in flight has
	 * ended (its bytes, if any, went to data first). */
	void (*stopped)(struct conn *c);
};

/* A transport. Each function is called with the conn it was set on by
 * conn_set_xprt(); recv and send are required, the others may be NULL
 * (nothing to do). Buffers come and go as in the handler: a bid >= 0 is
 * a worker buffer, bid -1 a malloc'd block. */
struct conn_xprt {
	const char *name;
	/* Octets from the socket in buffer bid, which it now owns: hand
	 * what they carry to the handler (conn_deliver()) or keep it. */
	void (*recv)(struct conn *c, char *p, size_t len, uint16_t bid);
	/* Send p..p+len; the queue has room for a segment. 0: taken (queued
	 * with conn_queue_raw(), or used and released); -1: refused, p stays
	 * the caller's. */
	int (*send)(struct conn *c, char *p, size_t len, int32_t bid);
	/* A send ended, so the queue has room: what the transport could not
	 * queue before may go now. */
	void (*flush)(struct conn *c);
	/* The write side shuts once the queue is sent: last words first
	 * (close_notify). Not called once the conn failed or was shut. */
	void (*shutdown)(struct conn *c);
	/* Whether input is held back (received or decoded while paused):
	 * conn_recv_start() then hands it over through resume. */
	bool (*pending)(const struct conn *c);
	/* After the batch that conn_defer() was called in. */
	void (*resume)(struct conn *c);
	/* The conn is freed: free what the transport holds. */
	void (*close)(struct conn *c);
};

extern const struct conn_xprt conn_plain;

struct seg {
	char *p;
	uint32_t len;
	int32_t bid; /* provided buffer, or -1: p is malloc'd */
};

/* No holes, and no field an idle conn does not need: a session holds two
 * (the connect's timeout lives in the worker's table, conn.c). */
struct conn {
	int fd;
	uint16_t ops;	/* CONN_OP_* in flight */
	uint16_t flags; /* CONN_F_* */
	uint8_t seg_head, seg_count;
	uint8_t holds;	       /* conn_hold(): the fd stays open while held */
	uint32_t seg_off;      /* octets of the head segment already sent */
	uint32_t queued;       /* octets in the queue */
	uint32_t linger_until; /* low 32 bits of worker_now_ms() */
	struct seg segs[CONN_SEGS];
	const struct conn_handler *h;
	void *owner;
	struct worker *w;
	/* one link per list: a conn can be starved and lingering at once */
	struct conn *next_starved, *next_linger, *next_deferred;
	const struct conn_xprt *x; /* conn_plain unless set */
	void *xprt_ctx;		   /* the transport's own state */
	struct splice *splice;	   /* core/splice.h: aborted when the conn closes */
};

/* A new conn on an open socket (fd < 0: a socket is made by conn_connect). */
struct conn *conn_new(struct worker *w, int fd, const struct conn_handler *h, void *owner);

/* Start (or resume) receiving. Idempotent. */
void conn_recv_start(struct conn *c);
/* Stop receiving: data already on its way may still arrive. */
void conn_recv_pause(struct conn *c);
bool conn_recv_paused(const struct conn *c);
/* Whether the socket still held bytes after the receive being handled
 * (the kernel's IORING_CQE_F_SOCK_NONEMPTY): bytes that came in the same
 * write may arrive in two receives. Plain conns only (under TLS they may
 * be the TLS layer's own records): false otherwise. */
bool conn_recv_more(const struct conn *c);
/* Whether a recv is in flight (its bytes may still come). */
bool conn_recv_busy(const struct conn *c);
/* From the next arming on, receive one buffer per operation. A multishot
 * recv drains the whole socket buffer into provided buffers before a pause
 * can take effect (several MB); one at a time, a pause holds within one
 * buffer, which is what a relay's backpressure needs. */
void conn_recv_oneshot(struct conn *c);
/* From the next arming on, a multishot recv that ends after CONN_RECV_CAP
 * octets (and is armed again unless paused): a pause takes effect within
 * the cap plus one buffer, and a stream of small reads costs no arming
 * each. The kernel's cap is 6.17's; where the kernel refuses it, and on
 * a transport other than plain (TLS wants its records one at a time),
 * this is conn_recv_oneshot(). */
void conn_recv_capped(struct conn *c);

#define CONN_RECV_CAP (64 * 1024)

/* Queue bytes. Each returns -1 when the queue is full (CONN_SEGS). */
int conn_send_copy(struct conn *c, const void *p, size_t len);
int conn_send_heap(struct conn *c, char *p, size_t len);	      /* takes p */
int conn_send_buf(struct conn *c, char *p, size_t len, uint16_t bid); /* takes the buffer */
static inline bool conn_queue_full(const struct conn *c)
{
	return c->seg_count >= CONN_SEGS;
}

/* A best-effort send(2) now, without the ring: for a last word on a
 * plaintext conn nothing was queued on yet, right before conn_close()
 * (which then frees the fd at once). Returns octets sent or -errno. */
int conn_write_now(struct conn *c, const void *p, size_t len);

/* Shut the write side once the queue is empty. */
void conn_shutdown_wr(struct conn *c);

int conn_connect(struct conn *c, const struct sockaddr *sa, socklen_t len, uint32_t timeout_ms);

/* Orphan and close now; queued data is dropped. Safe on NULL. */
void conn_close(struct conn *c);
/* Orphan; close once the queue is sent (bounded by linger_ms). */
void conn_close_after_flush(struct conn *c, uint32_t linger_ms);

/* Give back a buffer a handler kept; a conn that starved for buffers
 * receives again. */
void conn_buf_release(struct worker *w, uint16_t bid);

/* ---- For core/splice.c ---- */

/* Keep c (and its fd) alive past its close until conn_unhold(), and
 * call splice_abort(sp) when its owner closes it. */
void conn_hold(struct conn *c, struct splice *sp);
void conn_unhold(struct conn *c);

/* ---- For transports ---- */

/* From now on x carries c's bytes, with ctx as c->xprt_ctx (freed by
 * x->close). Bytes already queued go out as they are. */
void conn_set_xprt(struct conn *c, const struct conn_xprt *x, void *ctx);
/* Whether a segment can be queued now (room, an open, sound socket). */
bool conn_queue_room(const struct conn *c);
/* Queue p as it is, after what is queued; only with conn_queue_room().
 * Takes p (bid as in struct seg). */
void conn_queue_raw(struct conn *c, char *p, size_t len, int32_t bid);
/* Whether the handler takes input now: not paused, closed, failed or
 * at its end. */
bool conn_input_wanted(const struct conn *c);
/* Whether input will never be wanted again (closed or failed). */
bool conn_input_dead(const struct conn *c);
bool conn_orphaned(const struct conn *c);
/* Input for the handler in buffer bid (released unless it keeps it). */
void conn_deliver(struct conn *c, char *p, size_t len, uint16_t bid);
/* The peer ended its side (TLS: close_notify): h->eof. */
void conn_peer_eof(struct conn *c);
/* No more I/O on c; h->error(err) unless orphaned. */
void conn_fail(struct conn *c, int err);
/* The handshake ended: h->handshake(err); err < 0 ends I/O as well. */
void conn_handshake_done(struct conn *c, int err);
/* Call x->resume after this batch of completions (and then receive). */
void conn_defer(struct conn *c);

/* ---- Entry points of core/worker.c ---- */

/* The worker's conns: their allocator and lists (0 or -errno). */
int conn_worker_init(struct worker *w);
void conn_worker_fini(struct worker *w);
/* Conns alive, orphans included. */
unsigned conn_count(const struct worker *w);
/* Whether conn_run_deferred() has work: do not sleep on the ring. */
bool conn_deferred_pending(const struct worker *w);
void conn_run_deferred(struct worker *w);
void conn_complete(struct conn *c, enum op_kind kind, struct io_uring_cqe *cqe);
void conn_expire_lingering(struct worker *w, uint64_t now_ms);

void sock_set_nodelay(int fd);

#endif
