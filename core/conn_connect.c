/* conn_connect.c - a conn's connect: a socket of its own, the connect
 * and its timeout linked in one submission. The completion is conn.c's
 * (on_connect()). */
#include <errno.h>

#include "core/conn_int.h"

/* The timespec for a linked timeout of ms, valid until it is submitted. */
static struct __kernel_timespec *connect_ts(struct worker *w, uint32_t ms)
{
	struct conns *cs = w->conns;
	struct __kernel_timespec *ts;

	for (unsigned i = 0; i < cs->nconnect_ts; i++)
		if (cs->connect_ms[i] == ms)
			return &cs->connect_ts[i];
	if (cs->nconnect_ts == CONN_TIMEOUTS) {
		io_uring_submit(&w->ring); /* the kernel has read them all */
		cs->nconnect_ts = 0;
	}
	ts = &cs->connect_ts[cs->nconnect_ts];
	cs->connect_ms[cs->nconnect_ts++] = ms;
	ts->tv_sec = ms / 1000;
	ts->tv_nsec = (long long)(ms % 1000) * 1000000;
	return ts;
}

int conn_connect(struct conn *c, const struct sockaddr *sa, socklen_t len, uint32_t timeout_ms)
{
	struct io_uring_sqe *sqe;
	struct __kernel_timespec *ts;

	c->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	sock_set_nodelay(c->fd);
	ts = connect_ts(c->w, timeout_ms);
	/* the connect and its timeout must go in one submission */
	if (io_uring_sq_space_left(&c->w->ring) < 2)
		io_uring_submit(&c->w->ring);
	sqe = worker_sqe(c->w);
	io_uring_prep_connect(sqe, c->fd, sa, len);
	sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data64(sqe, op_data(c, OP_CONNECT));
	sqe = worker_sqe(c->w);
	io_uring_prep_link_timeout(sqe, ts, 0);
	io_uring_sqe_set_data64(sqe, op_data(c, OP_LINK_TIMEOUT));
	c->ops |= CONN_OP_CONNECT | CONN_OP_LTIMEOUT;
	return 0;
}
