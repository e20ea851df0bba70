/* conn_xprt.c - what a transport (conn.h's conn_xprt) calls back into a
 * conn: input handed on, the peer's end, errors, the handshake's end; and
 * the plain transport, which passes bytes as they are (TLS is tls/'s). */
#include "core/conn_int.h"

bool conn_input_wanted(const struct conn *c)
{
	return !(c->flags & (CONN_F_ORPHAN | CONN_F_PAUSED | CONN_F_DEAD | CONN_F_EOF));
}

bool conn_input_dead(const struct conn *c)
{
	return c->flags & (CONN_F_ORPHAN | CONN_F_DEAD);
}

bool conn_orphaned(const struct conn *c)
{
	return c->flags & CONN_F_ORPHAN;
}

void conn_deliver(struct conn *c, char *p, size_t len, uint16_t bid)
{
	if (!c->h->data(c, p, len, bid))
		conn_buf_release(c->w, bid);
}

void conn_peer_eof(struct conn *c)
{
	c->flags |= CONN_F_EOF;
	if (!(c->flags & CONN_F_ORPHAN))
		c->h->eof(c);
}

void conn_fail(struct conn *c, int err)
{
	c->flags |= CONN_F_DEAD;
	if (!(c->flags & CONN_F_ORPHAN))
		c->h->error(c, err);
}

void conn_handshake_done(struct conn *c, int err)
{
	if (err < 0)
		c->flags |= CONN_F_DEAD;
	if (!(c->flags & CONN_F_ORPHAN))
		c->h->handshake(c, err);
}

/* ---- plain sockets: the bytes as they are ---- */

static int plain_send(struct conn *c, char *p, size_t len, int32_t bid)
{
	conn_queue_raw(c, p, len, bid);
	return 0;
}

const struct conn_xprt conn_plain = {
	.name = "plain",
	.recv = conn_deliver,
	.send = plain_send,
};
