/* conn_int.h - the private state of a conn, shared by conn.c (operations,
 * lifetime), conn_xprt.c (what transports call back), conn_recv.c and
 * conn_connect.c. Nothing else includes it. */
#ifndef MXLB_CONN_INT_H
#define MXLB_CONN_INT_H

#include "core/conn.h"
#include "core/slab.h"

/* operations in flight (c->ops) */
#define CONN_OP_RECV 0x1u
#define CONN_OP_SEND 0x2u
#define CONN_OP_CONNECT 0x4u
#define CONN_OP_LTIMEOUT 0x8u

/* state (c->flags) */
#define CONN_F_ORPHAN 0x1u	/* closed by its owner: no more callbacks */
#define CONN_F_WANT_RECV 0x2u	/* the owner started receiving */
#define CONN_F_PAUSED 0x4u	/* the owner paused receiving */
#define CONN_F_CANCELING 0x8u	/* a cancel of the recv is on its way */
#define CONN_F_EOF 0x10u	/* the peer shut its side */
#define CONN_F_DEAD 0x20u	/* an error: no more I/O */
#define CONN_F_SHUT_WR 0x40u	/* shut the write side when drained */
#define CONN_F_FLUSH 0x80u	/* orphan: close once drained and the peer is done */
#define CONN_F_STARVED 0x100u	/* on the worker's starved list */
#define CONN_F_LINGER 0x200u	/* on the worker's lingering list */
#define CONN_F_IN_CB 0x400u	/* a completion is being handled: do not free */
#define CONN_F_ONESHOT 0x800u	/* one recv at a time instead of multishot */
#define CONN_F_CAPPED 0x1000u	/* multishot, ending after CONN_RECV_CAP octets */
#define CONN_F_DEFERRED 0x2000u /* on the worker's deferred list */
#define CONN_F_COLD 0x4000u	/* the small ring was empty: use the large one */
#define CONN_F_INQ 0x8000u	/* the last recv left bytes in the socket */

/* The conns of one worker (w->conns). */
#define CONN_TIMEOUTS 8

struct conns {
	struct slab slab;	/* struct conn */
	struct conn *starved;	/* recv stopped for lack of buffers */
	struct conn *lingering; /* orphaned, still flushing */
	struct conn *deferred;	/* work for after this batch */
	unsigned n;		/* alive, orphans included */
	bool no_cap;		/* the kernel refused a capped multishot recv */
	/* the connects' timeouts, one per value: the kernel reads a linked
	 * timeout's timespec when the SQE is submitted, so an entry is never
	 * changed, and the table is emptied only right after a submit */
	struct __kernel_timespec connect_ts[CONN_TIMEOUTS];
	uint32_t connect_ms[CONN_TIMEOUTS];
	unsigned nconnect_ts;
};

/* conn.c's, for conn_recv.c */
void conn_cancel_recv(struct conn *c); /* the recv in flight, if not already */
void conn_arm_recv(struct conn *c); /* the recv the flags ask for */
bool conn_may_recv(const struct conn *c);

#endif
