/* conn_tls.c - see conn_tls.h. */
#include "tls/conn_tls.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tls/tls.h"

struct conn_tls {
	struct tls_io *io;
	char *left; /* ciphertext received but not read yet (paused) */
	uint32_t left_len;
	bool handshaking;
};

static struct conn_tls *conn_tls_new(struct tls_io *io)
{
	struct conn_tls *t;

	if (!io)
		return NULL;
	t = calloc(1, sizeof(*t));
	if (!t) {
		tls_io_free(io);
		return NULL;
	}
	t->io = io;
	return t;
}

struct conn_tls *conn_tls_server(struct tls_ctx *ctx)
{
	return conn_tls_new(tls_io_server(ctx));
}

struct conn_tls *conn_tls_client(struct tls_ctx *ctx, const char *host)
{
	return conn_tls_new(tls_io_client(ctx, host));
}

/* The engine's output goes out as it is, after what is queued. When the
 * queue is full it waits in the engine for the next send to end. */
static void tls_flush(struct conn *c)
{
	struct conn_tls *t = c->xprt_ctx;
	char *p;
	size_t len;

	if (!tls_io_has_output(t->io) || !conn_queue_room(c))
		return;
	p = tls_io_take_output(t->io, &len);
	conn_queue_raw(c, p, len, -1);
}

/* Run the engine on its input: the handshake, then records, each read
 * into a worker buffer the handler may keep. Stops when the input is
 * used up or the owner paused or closed. */
static void tls_pump(struct conn *c)
{
	struct conn_tls *t = c->xprt_ctx;

	if (t->handshaking) {
		enum tls_res r = tls_io_handshake(t->io);

		tls_flush(c);
		if (r == TLS_WANT || conn_orphaned(c))
			return;
		t->handshaking = false;
		conn_handshake_done(c, r == TLS_OK ? 0 : -EPROTO);
		if (r != TLS_OK)
			return;
	}
	while (conn_input_wanted(c)) {
		uint16_t pb = buf_plain_get(&c->w->bufs);
		enum tls_res r;
		size_t n = 0;

		if (pb == BID_NONE) {
			conn_fail(c, -ENOBUFS);
			return;
		}
		r = tls_io_read(t->io, buf_ptr(&c->w->bufs, pb), BUF_SIZE, &n);
		tls_flush(c);
		if (r == TLS_OK) {
			conn_deliver(c, buf_ptr(&c->w->bufs, pb), n, pb);
			continue;
		}
		conn_buf_release(c->w, pb);
		if (r == TLS_WANT)
			return;
		if (r == TLS_CLOSED)
			conn_peer_eof(c);
		else
			conn_fail(c, -EPROTO);
		return;
	}
}

/* Keep what the engine did not read (the owner paused) in t->left. */
static void tls_keep_left(struct conn *c)
{
	struct conn_tls *t = c->xprt_ctx;
	size_t left = tls_io_input_left(t->io);
	char *p;

	if (!left || conn_input_dead(c)) {
		free(t->left);
		t->left = NULL;
		t->left_len = 0;
		tls_io_input(t->io, NULL, 0);
		return;
	}
	p = malloc(left);
	if (p)
		memcpy(p, tls_io_input_left_ptr(t->io), left);
	free(t->left);
	t->left = p;
	t->left_len = p ? (uint32_t)left : 0;
	tls_io_input(t->io, NULL, 0);
}

static void tls_run(struct conn *c, const char *p, size_t len)
{
	struct conn_tls *t = c->xprt_ctx;

	tls_io_input(t->io, p, len);
	tls_pump(c);
	tls_keep_left(c);
}

/* ---- the transport ---- */

static void tls_recv(struct conn *c, char *p, size_t len, uint16_t bid)
{
	struct conn_tls *t = c->xprt_ctx;

	if (t->left) {
		/* behind bytes kept while paused: append, keep the order */
		char *np = realloc(t->left, t->left_len + len);

		if (np) {
			memcpy(np + t->left_len, p, len);
			t->left = np;
			t->left_len += (uint32_t)len;
		}
		conn_buf_release(c->w, bid);
		if (!np) {
			conn_fail(c, -ENOMEM);
			return;
		}
		if (conn_input_wanted(c))
			tls_run(c, t->left, t->left_len);
		return;
	}
	tls_run(c, p, len);
	conn_buf_release(c->w, bid);
}

/* Encrypt p and release it at once. */
static int tls_send(struct conn *c, char *p, size_t len, int32_t bid)
{
	struct conn_tls *t = c->xprt_ctx;

	if (!tls_io_established(t->io) || tls_io_write(t->io, p, len) < 0)
		return -1;
	if (bid >= 0)
		conn_buf_release(c->w, (uint16_t)bid);
	else
		free(p);
	tls_flush(c);
	return 0;
}

/* A close_notify goes before the FIN. */
static void tls_shutdown(struct conn *c)
{
	struct conn_tls *t = c->xprt_ctx;

	tls_io_close_notify(t->io);
	tls_flush(c);
}

static bool tls_pending(const struct conn *c)
{
	const struct conn_tls *t = c->xprt_ctx;

	return t->left || tls_io_pending(t->io);
}

static void tls_resume(struct conn *c)
{
	struct conn_tls *t = c->xprt_ctx;

	if (!conn_input_wanted(c))
		return;
	if (t->left)
		tls_run(c, t->left, t->left_len);
	else
		tls_pump(c);
}

static void tls_close(struct conn *c)
{
	struct conn_tls *t = c->xprt_ctx;

	tls_io_free(t->io);
	free(t->left);
	free(t);
	conn_set_xprt(c, &conn_plain, NULL);
}

static const struct conn_xprt tls_xprt = {
	.name = "tls",
	.recv = tls_recv,
	.send = tls_send,
	.flush = tls_flush,
	.shutdown = tls_shutdown,
	.pending = tls_pending,
	.resume = tls_resume,
	.close = tls_close,
};

void conn_tls_start(struct conn *c, struct conn_tls *t, const char *pre, size_t prelen)
{
	conn_set_xprt(c, &tls_xprt, t);
	t->handshaking = true;
	conn_recv_oneshot(c);
	if (prelen) {
		t->left = malloc(prelen);
		if (t->left) {
			memcpy(t->left, pre, prelen);
			t->left_len = (uint32_t)prelen;
		}
		conn_defer(c);
		return;
	}
	/* a client speaks first */
	tls_pump(c);
}

/* ---- what the session reads ---- */

bool conn_is_tls(const struct conn *c)
{
	return c->x == &tls_xprt;
}

static const struct tls_io *io_of(const struct conn *c)
{
	return conn_is_tls(c) ? ((const struct conn_tls *)c->xprt_ctx)->io : NULL;
}

const char *conn_tls_version(const struct conn *c)
{
	return io_of(c) ? tls_io_version(io_of(c)) : NULL;
}

uint16_t conn_tls_version_num(const struct conn *c)
{
	return io_of(c) ? tls_io_version_num(io_of(c)) : 0;
}

const char *conn_tls_cipher(const struct conn *c)
{
	return io_of(c) ? tls_io_cipher(io_of(c)) : NULL;
}

const char *conn_tls_sni(const struct conn *c)
{
	return io_of(c) ? tls_io_sni(io_of(c)) : NULL;
}

bool conn_tls_resumed(const struct conn *c)
{
	return io_of(c) && tls_io_resumed(io_of(c));
}

const char *conn_tls_error(const struct conn *c)
{
	return io_of(c) ? tls_io_error(io_of(c)) : "not TLS";
}
