/* conn.h - one socket driven by the ring: multishot recv into provided
 * buffers, a queue of segments sent one at a time, connect with a linked
 * timeout, and a close that waits for every operation in flight.
 *
 * Lifetime: a conn is allocated by conn_new() and owned by its handler
 * until conn_close() or conn_close_after_flush(), which orphan it: from
 * then on no callback is called, and the conn frees itself (closing its
 * fd) once no operation on it is in flight. So an owner may free itself
 * right after closing its conns.
 */
#ifndef MXLB_CONN_H
#define MXLB_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/worker.h"

#define CONN_SEGS 8

struct conn;

struct conn_handler {
	/* Bytes arrived in provided buffer bid. Return true to keep the
	 * buffer (release it later with worker_buf_release() or by queueing
	 * it with conn_send_buf()), false to have it released now. */
	bool (*data)(struct conn *c, char *p, size_t len, uint16_t bid);
	void (*eof)(struct conn *c);          /* the peer shut its side */
	void (*error)(struct conn *c, int err); /* -errno, recv or send */
	void (*drained)(struct conn *c);      /* the send queue became empty */
	void (*connected)(struct conn *c, int err); /* 0 or -errno (-ETIMEDOUT) */
	/* TLS only: the handshake ended, 0 or -EPROTO (tls_io_error() says why) */
	void (*handshake)(struct conn *c, int err);
};

struct seg {
	char *p;
	uint32_t len;
	int32_t bid; /* provided buffer, or -1: p is malloc'd */
};

struct conn {
	int fd;
	uint16_t ops;   /* CONN_OP_* in flight */
	uint16_t flags; /* CONN_F_* */
	uint8_t seg_head, seg_count;
	uint32_t seg_off; /* octets of the head segment already sent */
	uint32_t queued;  /* octets in the queue */
	struct seg segs[CONN_SEGS];
	const struct conn_handler *h;
	void *owner;
	struct worker *w;
	/* one link per list: a conn can be starved and lingering at once */
	struct conn *next_starved, *next_linger, *next_deferred;
	uint32_t linger_until; /* low 32 bits of worker_now_ms() */
	uint32_t tls_left_len;
	struct __kernel_timespec connect_ts;
	struct tls_io *tls; /* NULL: plaintext */
	char *tls_left; /* ciphertext received but not read yet (paused) */
};

/* A new conn on an open socket (fd < 0: a socket is made by conn_connect). */
struct conn *conn_new(struct worker *w, int fd, const struct conn_handler *h, void *owner);

/* Start (or resume) receiving. Idempotent. */
void conn_recv_start(struct conn *c);
/* Stop receiving: data already on its way may still arrive. */
void conn_recv_pause(struct conn *c);
bool conn_recv_paused(const struct conn *c);
/* From the next arming on, receive one buffer per operation. A multishot
 * recv drains the whole socket buffer into provided buffers before a pause
 * can take effect (several MB); one at a time, a pause holds within one
 * buffer, which is what a relay's backpressure needs. */
void conn_recv_oneshot(struct conn *c);

/* Queue bytes. Each returns -1 when the queue is full (CONN_SEGS). */
int conn_send_copy(struct conn *c, const void *p, size_t len);
int conn_send_heap(struct conn *c, char *p, size_t len); /* takes p */
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

/* TLS from now on (STARTTLS, implicit TLS, TLS to a backend): bytes sent
 * after this are encrypted (sending before the handshake ends fails),
 * bytes received are decrypted before the handler sees them, and
 * h->handshake is called when the handshake ends. pre: ciphertext
 * already received (after a PROXY header). Takes t. A client side sends
 * its ClientHello at once. Receiving goes one buffer at a time. */
void conn_start_tls(struct conn *c, struct tls_io *t, const char *pre, size_t prelen);

/* Orphan and close now; queued data is dropped. Safe on NULL. */
void conn_close(struct conn *c);
/* Orphan; close once the queue is sent (bounded by linger_ms). */
void conn_close_after_flush(struct conn *c, uint32_t linger_ms);

/* Dispatcher entry points (core/worker.c). */
void conn_complete(struct conn *c, enum op_kind kind, struct io_uring_cqe *cqe);
void conn_resume_starved(struct worker *w);
void conn_expire_lingering(struct worker *w, uint64_t now_ms);
void conn_run_deferred(struct worker *w);

void sock_set_nodelay(int fd);

#endif
