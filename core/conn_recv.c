/* conn_recv.c - how a conn receives: started, paused, one buffer at a
 * time, or a multishot recv capped by the kernel (6.17+); and what the
 * last receive left in the socket. The arming itself is conn.c's. */
#include "core/conn_int.h"

void conn_recv_start(struct conn *c)
{
	c->flags |= CONN_F_WANT_RECV;
	c->flags &= (uint16_t)~CONN_F_PAUSED;
	/* what the transport held back while paused is handed over after
	 * this batch, not from inside the caller */
	if (c->x->pending && c->x->pending(c) && !(c->flags & CONN_F_ORPHAN)) {
		conn_defer(c);
		return;
	}
	if (conn_may_recv(c))
		conn_arm_recv(c);
}

void conn_recv_pause(struct conn *c)
{
	c->flags |= CONN_F_PAUSED;
	conn_cancel_recv(c);
}

void conn_recv_oneshot(struct conn *c)
{
	if (c->flags & CONN_F_ONESHOT)
		return;
	c->flags &= (uint16_t)~CONN_F_CAPPED;
	c->flags |= CONN_F_ONESHOT;
	/* a multishot recv in flight is replaced once its cancel lands */
	conn_cancel_recv(c);
}

void conn_recv_capped(struct conn *c)
{
	if (c->x != &conn_plain || c->w->conns->no_cap) {
		conn_recv_oneshot(c);
		return;
	}
	/* a one-shot recv in flight just ends; a multishot one without the
	 * cap is replaced once its cancel lands */
	if (!(c->flags & (CONN_F_ONESHOT | CONN_F_CAPPED)))
		conn_cancel_recv(c);
	c->flags &= (uint16_t)~(CONN_F_ONESHOT | CONN_F_COLD);
	c->flags |= CONN_F_CAPPED;
}

bool conn_recv_more(const struct conn *c)
{
	return c->x == &conn_plain && (c->flags & CONN_F_INQ);
}

bool conn_recv_paused(const struct conn *c)
{
	return c->flags & CONN_F_PAUSED;
}

bool conn_recv_busy(const struct conn *c)
{
	return c->ops & CONN_OP_RECV;
}
