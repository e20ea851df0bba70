/* smtp_back.c - the backend side until relaying: connect, greeting,
 * handoff (PROXY header or XCLIENT), the client's EHLO and its reply,
 * filtered. Any failure before the client has seen a byte from the backend
 * tries the next backend, invisibly, up to the pool's retries.
 *
 * The entry action of each state lives in back_set_state() (OpenSMTPD's
 * mta_enter_state): entering a state sends what that state waits on.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"
#include "proxy/proxy_proto.h"
#include "proxy/smtp_parse.h"

static void back_try(struct session *s);

static enum cfg_handoff back_handoff(const struct session *s)
{
	return s->pool->backends[s->backend].cfg->handoff;
}

static const char *back_name(const struct session *s)
{
	return s->pool->backends[s->backend].cfg->name;
}

static void back_send(struct session *s, const char *p, size_t len)
{
	if (conn_send_copy(s->back, p, len) < 0)
		session_close(s, R_ERROR, "backend send queue full");
}

/* xtext (RFC 3461) for XCLIENT attribute values */
static size_t xtext(char *out, size_t cap, const char *in)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (; *in && n + 4 < cap; in++) {
		unsigned char c = (unsigned char)*in;

		if (c < 33 || c > 126 || c == '+' || c == '=') {
			out[n++] = '+';
			out[n++] = hex[c >> 4];
			out[n++] = hex[c & 15];
		} else {
			out[n++] = (char)c;
		}
	}
	out[n] = '\0';
	return n;
}

static void send_xclient(struct session *s)
{
	char addr[INET6_ADDRSTRLEN + 8] = "[UNAVAILABLE]", helo[256], line[SMTP_LINE_MAX];
	unsigned port = 0;
	int n;

	if (s->peer.sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &s->peer.sin.sin_addr, addr, sizeof(addr));
		port = ntohs(s->peer.sin.sin_port);
	} else if (s->peer.sa.sa_family == AF_INET6) {
		const struct in6_addr *a6 = &s->peer.sin6.sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			inet_ntop(AF_INET, &a6->s6_addr[12], addr, sizeof(addr));
		} else {
			memcpy(addr, "IPV6:", 5);
			inet_ntop(AF_INET6, a6, addr + 5, sizeof(addr) - 5);
		}
		port = ntohs(s->peer.sin6.sin6_port);
	}
	xtext(helo, sizeof(helo), s->ehlo_name);
	n = snprintf(line, sizeof(line), "XCLIENT ADDR=%s PORT=%u HELO=%s PROTO=%s\r\n", addr, port,
		     helo, s->esmtp ? "ESMTP" : "SMTP");
	if (n > 0 && (size_t)n < sizeof(line))
		back_send(s, line, (size_t)n);
}

static void back_set_state(struct session *s, enum session_state st)
{
	char line[SMTP_LINE_MAX];
	int n;

	session_set_state(s, st);
	switch (st) {
	case S_CONNECT:
		s->action = "connecting to backend";
		break;
	case S_B_GREETING:
		s->action = "reading backend greeting";
		break;
	case S_B_HELO:
		s->action = "sending EHLO for XCLIENT";
		n = snprintf(line, sizeof(line), "EHLO %s\r\n", session_hostname());
		if (n > 0 && (size_t)n < sizeof(line))
			back_send(s, line, (size_t)n);
		break;
	case S_B_XCLIENT:
		s->action = "sending XCLIENT";
		send_xclient(s);
		break;
	case S_B_EHLO:
		s->action = "sending the client's EHLO";
		back_send(s, s->ehlo_line, s->ehlo_line_len);
		break;
	default:
		BUG_ON(1);
	}
	if (s->state != S_CLOSED && st != S_CONNECT)
		session_timeout(s, s->l->timeouts.backend_reply);
}

/* This backend failed before the client saw anything: try the next. */
static void back_fail(struct session *s, const char *why)
{
	struct logline ll;
	char id[20];

	atomic_fetch_add(&s->pool->backends[s->backend].connect_failures, 1);
	/* a refused connect or a bad greeting is what a check would see */
	if (s->state == S_CONNECT || s->state == S_B_GREETING)
		health_passive_failure(s->pool, s->backend);
	if (log_begin(&ll, LOG_WARN, "backend_error")) {
		snprintf(id, sizeof(id), "%016llx", (unsigned long long)s->id);
		log_kv_str(&ll, "id", id);
		log_kv_str(&ll, "pool", s->pool->cfg->name);
		log_kv_str(&ll, "backend", back_name(s));
		log_kv_str(&ll, "action", s->action);
		log_kv_str(&ll, "error", why);
		log_end(&ll);
	}
	back_try(s);
}

void back_timeout(struct session *s)
{
	back_fail(s, "timeout");
}

static void send_handoff_header(struct session *s)
{
	uint8_t hdr[PROXY_V2_MAX];
	size_t n = 0;

	switch (back_handoff(s)) {
	case CFG_HANDOFF_PROXY_V1:
		n = proxy_v1_encode((char *)hdr, sizeof(hdr), &s->peer.sa, &s->local.sa);
		break;
	case CFG_HANDOFF_PROXY_V2:
		n = proxy_v2_encode(hdr, sizeof(hdr), &s->peer.sa, &s->local.sa, NULL);
		break;
	default:
		return;
	}
	if (n)
		back_send(s, (const char *)hdr, n);
}

static void back_try(struct session *s)
{
	const struct cfg_backend *b;
	int i, err;

	conn_close(s->back);
	s->back = NULL;
	dbuf_free(&s->bin);
	if (s->backend >= 0) {
		pool_drop(s->pool, s->backend);
		s->backend = -1;
	}
	i = s->ntried <= s->pool->cfg->retries ? pool_take(s->pool, s) : -1;
	if (i < 0) {
		session_close_reply(s, R_UNAVAILABLE, "no backend available",
				    "421 4.3.2 %s Service not available, closing transmission channel",
				    session_hostname());
		return;
	}
	s->backend = i;
	b = s->pool->backends[i].cfg;
	s->back = conn_new(s->w, -1, &back_handler, s);
	if (!s->back) {
		session_close(s, R_ERROR, "out of memory");
		return;
	}
	back_set_state(s, S_CONNECT);
	err = conn_connect(s->back, (const struct sockaddr *)&b->address.ss, b->address.len,
			   s->l->timeouts.connect);
	if (err < 0) {
		back_fail(s, strerror(-err));
		return;
	}
	/* the linked timeout bounds the connect; this is a safety net */
	session_timeout(s, s->l->timeouts.connect + 1000);
	conn_recv_start(s->back);
	send_handoff_header(s);
}

void back_route(struct session *s)
{
	s->pool = route_pick_pool(s);
	back_try(s);
}

static void back_connected(struct conn *c, int err)
{
	struct session *s = c->owner;

	if (err < 0) {
		back_fail(s, strerror(-err));
		return;
	}
	back_set_state(s, S_B_GREETING);
}

/* The backend's EHLO reply, filtered, goes to the client; relaying starts. */
static void back_ehlo_reply(struct session *s, int code, size_t len)
{
	unsigned drop = SMTP_EXT_XCLIENT | SMTP_EXT_XFORWARD;
	char *out;
	size_t n;

	/* With XCLIENT the backend trusts what comes from mxlb: a client's
	 * STARTTLS would hide its later commands from the guard. */
	if (back_handoff(s) == CFG_HANDOFF_XCLIENT)
		drop |= SMTP_EXT_STARTTLS;
	out = malloc(len);
	if (!out) {
		session_close(s, R_ERROR, "out of memory");
		return;
	}
	n = code == 250 ? smtp_ehlo_filter(dbuf_data(&s->bin), len, out, drop) : len;
	if (code != 250)
		memcpy(out, dbuf_data(&s->bin), len);
	dbuf_consume(&s->bin, len);
	s->bytes_out += n;
	session_flush(s);
	if (s->state == S_CLOSED) {
		free(out);
		return;
	}
	if (conn_send_heap(s->client, out, n) < 0) {
		session_close(s, R_ERROR, "client send queue full");
		return;
	}
	relay_start(s);
}

static void back_process(struct session *s)
{
	while (s->state >= S_B_GREETING && s->state <= S_B_EHLO && dbuf_used(&s->bin)) {
		char why[64];
		size_t len;
		int code;
		enum smtp_parse r = smtp_parse_reply(dbuf_data(&s->bin), dbuf_used(&s->bin), &code,
						     &len);

		if (r == SMTP_AGAIN)
			return;
		if (r == SMTP_INVALID) {
			back_fail(s, "malformed reply");
			return;
		}
		switch (s->state) {
		case S_B_GREETING:
			if (code / 100 != 2) {
				snprintf(why, sizeof(why), "greeting %d", code);
				back_fail(s, why);
				return;
			}
			dbuf_consume(&s->bin, len);
			back_set_state(s, back_handoff(s) == CFG_HANDOFF_XCLIENT ? S_B_HELO : S_B_EHLO);
			break;
		case S_B_HELO:
			if (code != 250 ||
			    !(smtp_ehlo_extensions(dbuf_data(&s->bin), len) & SMTP_EXT_XCLIENT)) {
				back_fail(s, "XCLIENT not offered");
				return;
			}
			dbuf_consume(&s->bin, len);
			back_set_state(s, S_B_XCLIENT);
			break;
		case S_B_XCLIENT:
			if (code != 220) {
				snprintf(why, sizeof(why), "XCLIENT answered %d", code);
				back_fail(s, why);
				return;
			}
			dbuf_consume(&s->bin, len);
			back_set_state(s, S_B_EHLO);
			break;
		case S_B_EHLO:
			back_ehlo_reply(s, code, len);
			return;
		default:
			BUG_ON(1);
		}
	}
}

static bool back_data(struct conn *c, char *p, size_t len, uint16_t bid)
{
	struct session *s = c->owner;

	(void)bid;
	if (dbuf_append(&s->bin, p, len, BACK_IN_MAX) < 0) {
		back_fail(s, "reply too long");
		return false;
	}
	back_process(s);
	return false;
}

static void back_eof(struct conn *c)
{
	back_fail(c->owner, "connection closed");
}

static void back_error(struct conn *c, int err)
{
	back_fail(c->owner, strerror(-err));
}

const struct conn_handler back_handler = {
	.data = back_data,
	.eof = back_eof,
	.error = back_error,
	.connected = back_connected,
};
