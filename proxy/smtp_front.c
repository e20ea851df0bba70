/* smtp_front.c - the client side before relaying: the PROXY header of
 * accept_proxy, the greeting, and the command phase up to the routing line
 * (EHLO/HELO), answered by mxlb itself; what each command does is
 * smtp_commands.c's table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"
#include "proxy/proxy_proto.h"
#include "proxy/smtp_parse.h"
#include "tls/clienthello.h"
#include "tls/conn_tls.h"

/* Client bytes we accept beyond FRONT_IN_MAX: what is already on its way
 * when we pause reading. */
#define FRONT_IN_SLACK (8 * BUF_SIZE)
/* Replies of mxlb's own not yet sent past which the command phase takes
 * no further command (and reads no further): a client that sends faster
 * than it reads waits until it has read, and gets every reply; one that
 * never reads runs into the command timeout. Well below SESSION_OUT_MAX,
 * so one batch of replies never overflows. */
#define FRONT_OUT_HIGH (32 * 1024)

/* Client bytes handled in the command phase; what is left in s->in when
 * relaying starts is counted by the relay. */
void front_consume(struct session *s, size_t n)
{
	s->bytes_in += n;
	dbuf_consume(&s->in, n);
}

/* Whether the client has enough of our replies to read for now. */
static bool front_backlogged(const struct session *s)
{
	const struct conn *c = s->client;

	return c->queued + dbuf_used(&s->out) >= FRONT_OUT_HIGH || c->seg_count >= FRONT_SEGS_HIGH;
}

/* A refused command: the reply, a log line, and the error budget. Returns
 * false when the session was closed. */
bool front_refuse(struct session *s, const char *what, const char *reply)
{
	client_error(s, what);
	if (++s->errors >= FRONT_MAX_ERRORS) {
		client_error(s, "too many errors");
		session_close_reply(s, R_REJECTED, "too many errors",
				    "421 4.7.0 %s Error: too many errors", runtime_hostname(s->rt));
		return false;
	}
	session_reply(s, "%s", reply);
	return s->state != S_CLOSED;
}

/* Handle the complete command lines in s->in until routed, closed, or
 * the client has replies enough to read (front_drained() goes on). */
static void front_process(struct session *s)
{
	bool held = false, handled = false;

	while (s->state == S_COMMAND && dbuf_used(&s->in)) {
		struct smtp_cmd cmd;
		size_t used;
		bool eol = false;
		enum smtp_parse r;

		if (front_backlogged(s)) {
			held = true;
			break;
		}
		handled = true;
		if (s->discarding) {
			if (smtp_skip_line(dbuf_data(&s->in), dbuf_used(&s->in), &used))
				s->discarding = false;
			front_consume(s, used);
			continue;
		}
		r = smtp_parse_command(dbuf_data(&s->in), dbuf_used(&s->in), &cmd, &used, &eol);
		if (r == SMTP_AGAIN)
			break;
		if (r == SMTP_INVALID) {
			front_consume(s, used);
			if (cmd.error == SMTP_CMD_ERR_TOO_LONG) {
				s->discarding = !eol;
				if (!front_refuse(s, "line too long",
						  "500 5.5.2 Error: line too long"))
					return;
			} else {
				if (!front_refuse(s, "bare LF",
						  "500 5.5.2 Error: bare <LF> received"))
					return;
			}
			continue;
		}
		if (!front_command(s, &cmd))
			return;
	}
	/* a client that reads none of its replies runs into the timeout */
	if (s->state == S_COMMAND && (handled || !held))
		session_timeout(s, s->l->timeouts.command);
}

void front_greeting(struct session *s)
{
	session_reply(s, "220 %s %s", runtime_hostname(s->rt), s->l->banner);
	s->greeting_us = session_elapsed_us(s);
}

void front_resume(struct session *s)
{
	session_set_state(s, S_COMMAND);
	session_timeout(s, s->l->timeouts.command);
	front_process(s);
	session_flush(s);
	if (s->state == S_COMMAND && !front_backlogged(s) && dbuf_used(&s->in) <= FRONT_IN_MAX)
		conn_recv_start(s->client);
}

/* The greeting point: screening (SPEC §9) greets a client it screens. */
static void front_greet(struct session *s)
{
	if (screen_start(s))
		return;
	front_greeting(s);
	session_set_state(s, S_COMMAND);
	session_timeout(s, s->l->timeouts.command);
}

/* TLS with the client from now on; pre: its bytes already received. */
void front_tls_start(struct session *s, const char *pre, size_t prelen)
{
	struct conn_tls *t = conn_tls_server(runtime_tls(s->rt, s->l->tls_context));

	if (!t) {
		session_close(s, R_ERROR, "out of memory");
		return;
	}
	session_set_state(s, S_TLS);
	session_timeout(s, s->l->timeouts.tls_handshake);
	conn_tls_start(s->client, t, pre, prelen);
	/* a pause for unread replies must not outlive the command phase */
	conn_recv_start(s->client);
}

/* Passthrough: the ClientHello's server name routes; nothing is parsed
 * past it and every byte goes to the backend as it came. */
static void front_peek(struct session *s)
{
	struct tls_hello_info hi;

	switch (tls_parse_client_hello((const uint8_t *)dbuf_data(&s->in), dbuf_used(&s->in),
				       &hi)) {
	case TLS_HELLO_AGAIN:
		return;
	case TLS_HELLO_INVALID:
		atomic_fetch_add(&listener_stats(s->rt, s->l)->tls_failures, 1);
		client_error(s, "not a TLS ClientHello");
		session_close(s, R_REJECTED, "bad client hello");
		return;
	case TLS_HELLO_OK:
		break;
	}
	if (hi.has_sni && !(s->sni = strndup(hi.sni, hi.sni_len))) {
		session_close(s, R_ERROR, "out of memory");
		return;
	}
	back_route(s);
}

/* After the accept and any PROXY header: the per-client limit, then TLS
 * (implicit) or the greeting. */
static void front_begin(struct session *s)
{
	bool implicit = s->l->tls == CFG_TLS_IMPLICIT;

	s->no_smtp = implicit && s->l->tls_mode == CFG_TLS_PASSTHROUGH;
	/* limits.c: connection_rate and max_sessions_per_client */
	if (!limits_admit(s))
		return;
	if (s->no_smtp) {
		/* mxlb reads no SMTP here: of screening, the lists alone */
		if (screen_start(s))
			return;
		session_set_state(s, S_PEEK);
		session_timeout(s, s->l->timeouts.tls_handshake);
		if (dbuf_used(&s->in))
			front_peek(s);
		return;
	}
	if (implicit) {
		front_tls_start(s, dbuf_data(&s->in), dbuf_used(&s->in));
		dbuf_free(&s->in);
		return;
	}
	front_greet(s);
}

static void front_proxy_header(struct session *s)
{
	struct proxy_info pi;
	size_t used;

	switch (proxy_parse((const uint8_t *)dbuf_data(&s->in), dbuf_used(&s->in), &pi, &used)) {
	case PROXY_AGAIN:
		if (dbuf_used(&s->in) <= PROXY_V2_MAX)
			return;
		/* fall through */
	case PROXY_INVALID:
		client_error(s, "bad PROXY header");
		session_close(s, R_REJECTED, "bad proxy header");
		return;
	case PROXY_OK:
		break;
	}
	if (!pi.local) {
		memcpy(&s->peer, &pi.src,
		       pi.src_len < sizeof(s->peer) ? pi.src_len : sizeof(s->peer));
		memcpy(&s->local, &pi.dst,
		       pi.dst_len < sizeof(s->local) ? pi.dst_len : sizeof(s->local));
	}
	back_lookup_name(s); /* the client's name for XCLIENT, now that it is known */
	front_consume(s, used);
	front_begin(s);
}

/* The accept took one of the file descriptors kept for backend connects
 * and health checks (core/worker.h), and the listener now backs off: the
 * client is turned away at once, and the fd is free again before any
 * health check or connect runs (no lingering close: the 421 goes out in
 * one send on a fresh socket). */
static void front_refuse_fd(struct session *s)
{
	char line[SMTP_LINE_MAX_REPLY];
	int n;

	/* a client that starts with TLS could not read a reply */
	if (s->l->tls != CFG_TLS_IMPLICIT) {
		n = snprintf(line, sizeof(line),
			     "421 4.3.2 %s Service not available, closing transmission channel\r\n",
			     runtime_hostname(s->rt));
		if (n > 0 && (size_t)n < sizeof(line) &&
		    conn_write_now(s->client, line, (size_t)n) == n)
			s->bytes_out += (uint64_t)n;
	}
	session_close(s, R_REJECTED, "out of file descriptors");
}

void front_start(struct session *s)
{
	if (worker_fd_in_reserve(s->w, s->client->fd)) {
		front_refuse_fd(s);
		return;
	}
	/* one buffer per receive: a pause (unread replies, input held)
	 * takes effect within one buffer, not a socket buffer's worth */
	conn_recv_oneshot(s->client);
	if (s->l->accept_proxy) {
		session_set_state(s, S_PROXY_HEADER);
		session_timeout(s, s->l->timeouts.proxy_header);
	} else {
		front_begin(s);
		session_flush(s);
	}
	if (s->state != S_CLOSED)
		conn_recv_start(s->client);
}

void front_stop(struct session *s)
{
	if (s->state == S_PROXY_HEADER)
		session_close(s, R_REJECTED, "shutting down");
	else if (session_phase(s) == PHASE_FRONT || session_phase(s) == PHASE_BACKEND)
		session_close_reply(s, R_REJECTED, "shutting down",
				    "421 4.3.2 %s Service shutting down", runtime_hostname(s->rt));
}

static bool front_data(struct conn *c, char *p, size_t len, uint16_t bid)
{
	struct session *s = c->owner;

	(void)bid;
	if (dbuf_append(&s->in, p, len, FRONT_IN_MAX + FRONT_IN_SLACK) < 0) {
		client_error(s, "too much input before relaying");
		session_close(s, R_ERROR, "input overflow");
		return false;
	}
	switch (s->state) {
	case S_PROXY_HEADER:
		front_proxy_header(s);
		if (s->state == S_COMMAND)
			front_process(s);
		break;
	case S_PEEK:
		front_peek(s);
		break;
	case S_COMMAND:
		front_process(s);
		break;
	case S_SCREEN:
		screen_input(s);
		break;
	default:
		/* routed: keep pipelined bytes for the relay */
		if (dbuf_used(&s->in) > FRONT_IN_MAX)
			conn_recv_pause(c);
		break;
	}
	session_flush(s);
	/* a client that does not read its replies is not read either */
	if (s->state == S_COMMAND && (front_backlogged(s) || dbuf_used(&s->in) > FRONT_IN_MAX))
		conn_recv_pause(s->client);
	return false;
}

/* The client read what we sent: go on with the commands held, and read
 * again once they are handled and their replies are few enough. */
static void front_drained(struct conn *c)
{
	struct session *s = c->owner;

	if (s->state != S_COMMAND)
		return;
	front_process(s);
	session_flush(s);
	if (s->state == S_COMMAND && !front_backlogged(s) && dbuf_used(&s->in) <= FRONT_IN_MAX)
		conn_recv_start(c);
}

static void front_eof(struct conn *c)
{
	struct session *s = c->owner;

	if (s->state == S_TLS || s->state == S_PEEK)
		atomic_fetch_add(&listener_stats(s->rt, s->l)->tls_failures, 1);
	if (!session_routed(s)) {
		session_close(s, R_CLIENT_QUIT, "client disconnected");
		return;
	}
	/* routed: the client may have half-closed after pipelining QUIT;
	 * the relay shuts the backend's side once the kept bytes are sent */
	s->eof[0] = true;
}

static void front_error(struct conn *c, int err)
{
	struct session *s = c->owner;

	(void)err;
	session_close(s, R_CLIENT_QUIT, "client connection error");
}

static void front_handshake(struct conn *c, int err)
{
	struct session *s = c->owner;
	struct listener_stats *st = listener_stats(s->rt, s->l);
	char why[160];

	if (err < 0) {
		atomic_fetch_add(&st->tls_failures, 1);
		snprintf(why, sizeof(why), "TLS handshake failed: %s", conn_tls_error(c));
		client_error(s, why);
		session_close(s, R_ERROR, "tls handshake failed");
		return;
	}
	s->tls_done = true;
	s->tls_version = conn_tls_version(c);
	s->tls_cipher = conn_tls_cipher(c);
	if (!s->sni && conn_tls_sni(c))
		s->sni = strdup(conn_tls_sni(c));
	atomic_fetch_add(conn_tls_version_num(c) >= 0x0304 ? &st->tls13 : &st->tls12, 1);
	if (s->l->tls == CFG_TLS_IMPLICIT) {
		front_greet(s);
		session_flush(s);
		return;
	}
	/* after STARTTLS the client starts over (RFC 3207 4.2) */
	free(s->ehlo_name);
	s->ehlo_name = NULL;
	s->esmtp = false;
	session_set_state(s, S_COMMAND);
	session_timeout(s, s->l->timeouts.command);
}

const struct conn_handler front_handler = {
	.data = front_data,
	.eof = front_eof,
	.error = front_error,
	.drained = front_drained,
	.handshake = front_handshake,
};
