/* splice.h - bytes moved between two plain conns without passing through
 * user space: splice(2) from one socket into a pipe, and from the pipe
 * into the other socket, one pipe per direction (HAProxy's splicing, with
 * io_uring's polls for readiness).
 *
 * The splices are plain syscalls made by the worker when a poll on the
 * ring says the socket is ready, not IORING_OP_SPLICE: that one always
 * runs in an io-wq thread, and the hand-off to it and back cost 1.5 times
 * the CPU per 1 MB message (bench/README.md, "splice or copy"). So no
 * splice here may ever wait: both sockets are made O_NONBLOCK, every
 * splice carries SPLICE_F_NONBLOCK, a splice out of a socket follows a
 * poll for input, and one into a socket that refused follows a poll for
 * room. Backpressure is the pipe: nothing is read from a direction's
 * source while its pipe is full. splice(2) into a socket takes no
 * MSG_NOSIGNAL: a program using this must block or ignore SIGPIPE (mxlb's
 * main.c blocks it before the workers start).
 *
 * Lifetime: splice_new() attaches the splice to both conns and holds
 * them (conn_hold()), so neither closes its fd while an operation names
 * it. Closing either conn (conn_close(), conn_close_after_flush()) calls
 * splice_abort(): the handler is never called again, the polls in flight
 * are cancelled, and once every completion is reaped the pipes go back to
 * the worker's pool (empty ones; a pipe with bytes left is closed), the
 * conns are let go and the splice frees itself.
 *
 * Before splice_start(s, dir) the caller makes sure that no byte of that
 * direction is elsewhere: the source's recv stopped (conn_recv_busy()),
 * the destination's send queue is empty; from then on the caller neither
 * receives on the source nor queues on the destination.
 */
#ifndef MXLB_SPLICE_H
#define MXLB_SPLICE_H

#include <stdbool.h>
#include <stddef.h>

struct conn;
struct splice;
struct worker;

/* Direction 0 moves a's bytes to b, 1 b's to a. Each callback may close
 * the conns (and so abort the splice). */
struct splice_handler {
	/* n octets came from dir's source (into the pipe) */
	void (*moved)(void *owner, int dir, size_t n);
	/* dir's source ended and every octet of it was sent on */
	void (*eof)(void *owner, int dir);
	/* an error on dir's source (src) or destination (-errno) */
	void (*error)(void *owner, int dir, bool src, int err);
};

/* A splice between two plain conns of the same worker, no direction
 * started; NULL when out of memory. */
struct splice *splice_new(struct conn *a, struct conn *b, const struct splice_handler *h,
			  void *owner);
/* Start moving dir's bytes. 0, or -errno when no pipe could be had (the
 * caller copies instead). */
int splice_start(struct splice *sp, int dir);
/* See the lifetime above; conn.c calls it. Idempotent. */
void splice_abort(struct splice *sp);

/* worker.c: close the pooled pipes of a worker that stopped. */
void splice_worker_fini(struct worker *w);

#endif
