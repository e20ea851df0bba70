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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/dns.h"
#include "proxy/proxy.h"
#include "proxy/proxy_proto.h"
#include "proxy/smtp_parse.h"
#include "tls/conn_tls.h"

static void back_try(struct session *s);
static void back_start(struct session *s);
static void back_fail(struct session *s, const char *why);

/* How long the client's name may take, from the start of its lookup (at
 * accept, usually long done by the XCLIENT): a dead resolver delays a
 * session by this much at most, and its NAME is then [TEMPUNAVAIL]. */
#define XCLIENT_NAME_MS 2000

static enum cfg_handoff back_handoff(const struct session *s)
{
	return s->pool->backends[s->backend].cfg->handoff;
}

static const char *back_name(const struct session *s)
{
	return s->pool->backends[s->backend].cfg->name;
}

static const struct cfg_backend *back_cfg(const struct session *s)
{
	return s->pool->backends[s->backend].cfg;
}

static void back_send(struct session *s, const char *p, size_t len)
{
	if (conn_send_copy(s->back, p, len) < 0)
		session_close(s, R_ERROR, "backend send queue full");
}

static void back_set_state(struct session *s, enum session_state st);

static void on_client_name(void *arg, enum dns_status st, const char *name)
{
	struct session *s = arg;

	s->name_q = NULL;
	s->name_known = true;
	s->name_st = (uint8_t)st;
	if (st == DNS_OK && !(s->client_name = strdup(name)))
		s->name_st = DNS_TEMPFAIL;
	log_debug("dns", "session %016llx: client name %s", (unsigned long long)s->id,
		  st == DNS_OK	       ? name
		  : st == DNS_NOTFOUND ? "[UNAVAILABLE]"
				       : "[TEMPUNAVAIL]");
	if (!s->name_wait)
		return;
	s->name_wait = false;
	/* nothing was asked: a backend that spoke meanwhile is out of step */
	if (dbuf_used(&s->bin)) {
		back_fail(s, "reply before XCLIENT");
		return;
	}
	back_set_state(s, S_B_XCLIENT);
}

void back_lookup_name(struct session *s)
{
	if (s->name_asked || !listener_xclient(s->l))
		return;
	s->name_asked = true;
	s->name_q = dns_client_name(&s->peer, XCLIENT_NAME_MS, on_client_name, s);
	if (!s->name_q) { /* no resolver, or out of memory */
		s->name_known = true;
		s->name_st = DNS_TEMPFAIL;
	}
}

/* Enter a step of the dialogue: steps[] below says what it sends. */
static void back_set_state(struct session *s, enum session_state st);

/* A parked connection that fails when taken (the backend closed it, or
 * answers out of step) is the backend's normal housekeeping, not a
 * failure of the backend: the same backend is tried again, with the next
 * parked connection or a new one, and the try is not counted. */
static void back_reused_fail(struct session *s, const char *why)
{
	log_debug("reuse", "session %016llx: parked connection failed (%s, %s): dropped",
		  (unsigned long long)s->id, s->action, why);
	conn_close(s->back);
	s->back = NULL;
	s->back_tls = false;
	s->name_wait = false;
	dbuf_free(&s->bin);
	back_start(s);
}

/* This backend failed before the client saw anything: try the next. */
static void back_fail(struct session *s, const char *why)
{
	struct logline ll;
	char id[20];

	if (s->back_reused) {
		back_reused_fail(s, why);
		return;
	}
	atomic_fetch_add(&s->pool->backends[s->backend].st->connect_failures, 1);
	/* a refused connect, a bad greeting or a certificate that does not
	 * verify is what a check would see */
	if (s->state == S_CONNECT || s->state == S_B_GREETING || s->state == S_B_TLS)
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
	socklen_t len = sizeof(s->local);

	if (!s->local.sa.sa_family && s->client && back_handoff(s) != CFG_HANDOFF_NONE &&
	    back_handoff(s) != CFG_HANDOFF_XCLIENT)
		getsockname(s->client->fd, &s->local.sa, &len);
	switch (back_handoff(s)) {
	case CFG_HANDOFF_PROXY_V1:
		n = proxy_v1_encode((char *)hdr, sizeof(hdr), &s->peer.sa, &s->local.sa);
		break;
	case CFG_HANDOFF_PROXY_V2: {
		struct proxy_tls_info ti = { s->tls_version, s->tls_cipher, s->sni };

		n = proxy_v2_encode(hdr, sizeof(hdr), &s->peer.sa, &s->local.sa,
				    s->tls_done ? &ti : NULL);
		break;
	}
	default:
		return;
	}
	if (n)
		back_send(s, (const char *)hdr, n);
}

static void back_try(struct session *s)
{
	int i;

	conn_close(s->back);
	s->back = NULL;
	s->back_tls = false;
	s->name_wait = false;
	dbuf_free(&s->bin);
	if (s->backend >= 0) {
		pool_drop(s->pool, s->backend);
		s->backend = -1;
	}
	i = s->ntried <= s->pool->cfg->retries ? pool_take(s->pool, s) : -1;
	if (i < 0) {
		session_close_reply(
			s, R_UNAVAILABLE, "no backend available",
			"421 4.3.2 %s Service not available, closing transmission channel",
			runtime_hostname(s->rt));
		return;
	}
	s->backend = i;
	back_start(s);
}

/* s->backend is picked: a parked connection to it (reuse.c), which goes
 * straight to the handoff, or a new connect. */
static void back_start(struct session *s)
{
	const struct cfg_backend *b = back_cfg(s);
	int err;

	s->back_reused = false;
	s->back_uses = 0;
	s->back = reuse_take(s);
	if (s->back) {
		back_set_state(s, back_handoff(s) == CFG_HANDOFF_XCLIENT ? S_B_XCLIENT : S_B_EHLO);
		return;
	}
	s->back = conn_new(s->w, -1, &back_handler, s);
	if (!s->back) {
		session_close(s, R_ERROR, "out of memory");
		return;
	}
	back_set_state(s, S_CONNECT);
	err = conn_connect(s->back, (const struct sockaddr *)&b->address.ss, b->address.len,
			   s->l->timeouts.connect);
	if (err == -EMFILE || err == -ENFILE || err == -ENOBUFS || err == -ENOMEM) {
		/* our own shortage: no backend is to blame, none would do
		 * better now */
		session_close_reply(
			s, R_UNAVAILABLE, "out of file descriptors",
			"421 4.3.2 %s Service not available, closing transmission channel",
			runtime_hostname(s->rt));
		return;
	}
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
	back_lookup_name(s); /* not started at accept behind a PROXY header */
	back_try(s);
}

/* TLS with the backend: at once (implicit) or after its 220 to STARTTLS. */
static void back_start_tls(struct session *s)
{
	const struct cfg_backend *b = back_cfg(s);
	struct conn_tls *t = conn_tls_client(runtime_tls(s->rt, b->tls_context), b->address.host);

	if (!t) {
		session_close(s, R_ERROR, "out of memory");
		return;
	}
	back_set_state(s, S_B_TLS);
	conn_tls_start(s->back, t, NULL, 0);
}

/* The greeting (and any STARTTLS) done: the handoff, then the EHLO. */
static void back_greeted(struct session *s)
{
	back_set_state(s, back_handoff(s) == CFG_HANDOFF_XCLIENT ? S_B_HELO : S_B_EHLO);
}

static void back_connected(struct conn *c, int err)
{
	struct session *s = c->owner;

	if (err < 0) {
		back_fail(s, strerror(-err));
		return;
	}
	if (s->no_smtp) { /* passthrough: the client's TLS bytes, as they are */
		relay_start(s);
		return;
	}
	if (back_cfg(s)->tls == CFG_TLS_IMPLICIT) {
		back_start_tls(s);
		return;
	}
	back_set_state(s, S_B_GREETING);
}

static void back_handshake(struct conn *c, int err)
{
	struct session *s = c->owner;
	char why[160];

	if (err < 0) {
		snprintf(why, sizeof(why), "TLS: %s", conn_tls_error(c));
		back_fail(s, why);
		return;
	}
	s->back_tls = true;
	if (back_cfg(s)->tls == CFG_TLS_IMPLICIT)
		back_set_state(s, S_B_GREETING);
	else
		back_greeted(s);
}

/* The backend's EHLO reply, filtered, goes to the client; relaying starts. */
static void back_ehlo_reply(struct session *s, int code, size_t len)
{
	unsigned drop = SMTP_EXT_XCLIENT | SMTP_EXT_XFORWARD;
	char *out;
	size_t n;

	/* a parked connection the backend is closing: another one, unseen */
	if (s->back_reused && code == 421) {
		back_fail(s, "EHLO answered 421");
		return;
	}
	/* nothing asked for comes after it: on a parked connection, a reply
	 * of the last client's still on its way */
	if (s->back_reused && (dbuf_used(&s->bin) > len || conn_recv_more(s->back))) {
		back_fail(s, "bytes after the EHLO reply");
		return;
	}
	if (s->back_reused)
		atomic_fetch_add(&s->pool->backends[s->backend].st->reused, 1);

	/* Where the tracker reads the client's stream (XCLIENT, which the
	 * backend trusts from mxlb; bare_newline), a client's STARTTLS would
	 * hide its later commands from it. Where mxlb terminates TLS, the
	 * client has it (or chose to go without). */
	if (relay_tracked(s) || s->tls_done || listener_starttls(s->l) || s->back_tls)
		drop |= SMTP_EXT_STARTTLS;
	if (s->l->screen.pregreet) /* mxlb owns the greeting (SPEC §4.6) */
		drop |= SMTP_EXT_PIPECONNECT;
	s->ehlo_drop = drop; /* for the replies to the client's later EHLOs */
	s->back_chunking =
		code == 250 && (smtp_ehlo_extensions(dbuf_data(&s->bin), len) & SMTP_EXT_CHUNKING);
	if (s->replay_mail) {
		/* the client saw mxlb's EHLO reply: this one goes unseen, and
		 * the client's MAIL follows */
		if (code != 250) {
			back_fail(s, "EHLO refused");
			return;
		}
		dbuf_consume(&s->bin, len);
		relay_start(s);
		return;
	}
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

/* ---- the backend dialogue as a table ---- */

static void send_own_ehlo(struct session *s)
{
	char line[SMTP_LINE_MAX];
	int n = snprintf(line, sizeof(line), "EHLO %s\r\n", runtime_hostname(s->rt));

	if (n > 0 && (size_t)n < sizeof(line))
		back_send(s, line, (size_t)n);
}

static void send_starttls(struct session *s)
{
	back_send(s, "STARTTLS\r\n", 10);
}

static void send_client_ehlo(struct session *s)
{
	back_send(s, s->ehlo_line, s->ehlo_line_len);
}

static void after_greeting(struct session *s, int code, size_t len)
{
	(void)code;
	(void)len;
	if (back_cfg(s)->tls == CFG_TLS_STARTTLS && !s->back_tls)
		back_set_state(s, S_B_TLS_EHLO);
	else
		back_greeted(s);
}

static void after_tls_ehlo(struct session *s, int code, size_t len)
{
	(void)code;
	(void)len;
	back_set_state(s, S_B_STARTTLS);
}

static void after_starttls(struct session *s, int code, size_t len)
{
	(void)code;
	(void)len;
	if (dbuf_used(&s->bin)) { /* injected before the handshake */
		back_fail(s, "bytes after the STARTTLS reply");
		return;
	}
	back_start_tls(s);
}

static void after_helo(struct session *s, int code, size_t len)
{
	(void)code;
	(void)len;
	back_set_state(s, S_B_XCLIENT);
}

static void after_xclient(struct session *s, int code, size_t len)
{
	(void)code;
	(void)len;
	/* it would be read as the EHLO reply */
	if (dbuf_used(&s->bin) || conn_recv_more(s->back)) {
		back_fail(s, "bytes after the XCLIENT reply");
		return;
	}
	back_set_state(s, S_B_EHLO);
}

/*
 * Each step of the backend dialogue: what it is doing (for error lines),
 * what entering it sends, what its reply must be (consumed when it is),
 * what it learns from that reply, and what follows a reply that meets it.
 * A step without `next` reads nothing in the clear (connecting, a TLS
 * handshake).
 */
static const struct back_step {
	const char *action;
	void (*enter)(struct session *s);
	const struct smtp_expect *expect; /* NULL: any reply, `next` takes it */
	void (*next)(struct session *s, int code, size_t len);
	/* with expect: the reply that met it, before it is consumed */
	void (*seen)(struct session *s, const char *reply, size_t len);
} steps[S_RELAY] = {
	[S_CONNECT] = { "connecting to backend", NULL, NULL, NULL, NULL },
	[S_B_GREETING] = { "reading backend greeting", NULL, &smtp_expect_greeting, after_greeting,
			   NULL },
	[S_B_TLS] = { "TLS handshake with backend", NULL, NULL, NULL, NULL },
	[S_B_TLS_EHLO] = { "sending EHLO for STARTTLS", send_own_ehlo, &smtp_expect_ehlo_starttls,
			   after_tls_ehlo, NULL },
	[S_B_STARTTLS] = { "sending STARTTLS", send_starttls, &smtp_expect_starttls, after_starttls,
			   NULL },
	[S_B_HELO] = { "sending EHLO for XCLIENT", send_own_ehlo, &smtp_expect_ehlo_xclient,
		       after_helo, xclient_note_attrs },
	[S_B_XCLIENT] = { "sending XCLIENT", xclient_send, &smtp_expect_xclient, after_xclient,
			  NULL },
	[S_B_EHLO] = { "sending the client's EHLO", send_client_ehlo, NULL, back_ehlo_reply, NULL },
};

static void back_set_state(struct session *s, enum session_state st)
{
	const struct back_step *step = &steps[st];

	BUG_ON(st >= S_RELAY || !step->action);
	session_set_state(s, st);
	s->action = step->action;
	if (step->enter)
		step->enter(s);
	/* waiting for the name, the lookup's deadline comes first; the
	 * timer only backs it up */
	if (s->state != S_CLOSED && st != S_CONNECT)
		session_timeout(s, s->name_wait ? XCLIENT_NAME_MS + 1000
						: s->l->timeouts.backend_reply);
}

static void back_process(struct session *s)
{
	/* while the XCLIENT waits for the name, whatever comes stays in bin:
	 * on_client_name() fails a backend that spoke out of turn */
	while (session_phase(s) == PHASE_BACKEND && steps[s->state].next && dbuf_used(&s->bin) &&
	       !s->name_wait) {
		const struct back_step *step = &steps[s->state];
		char why[64];
		size_t len;
		int code;
		enum smtp_parse r =
			smtp_parse_reply(dbuf_data(&s->bin), dbuf_used(&s->bin), &code, &len);

		if (r == SMTP_AGAIN)
			return;
		if (r == SMTP_INVALID) {
			back_fail(s, "malformed reply");
			return;
		}
		if (step->expect) {
			if (smtp_expect_check(step->expect, code, dbuf_data(&s->bin), len, why,
					      sizeof(why))) {
				back_fail(s, why);
				return;
			}
			if (step->seen)
				step->seen(s, dbuf_data(&s->bin), len);
			dbuf_consume(&s->bin, len);
		}
		step->next(s, code, len);
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
	.handshake = back_handshake,
};
