/* session.c - the session object: creation, state, timers, the session
 * log line, and an idempotent close. A session is freed by session_close()
 * at once: its conns are orphaned and free themselves when nothing is in
 * flight on them (core/conn.h), so no completion ever sees a freed session.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "proxy/dns.h"
#include "proxy/proxy.h"

atomic_uint mxlb_sessions;
static atomic_ulong session_next_id;

void session_seed_ids(uint64_t seed)
{
	atomic_store(&session_next_id, seed);
}

static const char *const result_names[] = {
	[R_RELAYED] = "relayed", [R_REJECTED] = "rejected", [R_UNAVAILABLE] = "unavailable",
	[R_TIMEOUT] = "timeout", [R_ERROR] = "error",	    [R_CLIENT_QUIT] = "client_quit",
};

const char *session_result_name(enum session_result r)
{
	return result_names[r];
}

/* What each state's timer firing means. */
static void proxy_header_timeout(struct session *s)
{
	session_close(s, R_TIMEOUT, "proxy header timeout");
}

static void client_hello_timeout(struct session *s)
{
	session_close(s, R_TIMEOUT, "client hello timeout");
}

static void tls_timeout(struct session *s)
{
	atomic_fetch_add(&listener_stats(s->rt, s->l)->tls_failures, 1);
	session_close(s, R_TIMEOUT, "tls handshake timeout");
}

static void command_timeout(struct session *s)
{
	session_close_reply(s, R_TIMEOUT, "command timeout", "421 4.4.2 %s Error: timeout exceeded",
			    runtime_hostname(s->rt));
}

static void idle_timeout(struct session *s)
{
	session_close(s, R_TIMEOUT, "idle timeout");
}

/* The session's states: their names for the log, the phase each belongs
 * to (what the predicates below ask) and what its timer firing means. The
 * backend dialogue's own steps (what each sends, what it expects) are
 * smtp_back.c's table. */
static const struct {
	const char *name;
	enum session_phase phase;
	void (*timeout)(struct session *s);
} states[] = {
	[S_PROXY_HEADER] = { "proxy_header", PHASE_FRONT, proxy_header_timeout },
	[S_PEEK] = { "client_hello", PHASE_FRONT, client_hello_timeout },
	[S_TLS] = { "tls_handshake", PHASE_FRONT, tls_timeout },
	[S_SCREEN] = { "screen", PHASE_FRONT, screen_timeout },
	[S_COMMAND] = { "command", PHASE_FRONT, command_timeout },
	[S_CONNECT] = { "connect", PHASE_BACKEND, back_timeout },
	[S_B_GREETING] = { "backend_greeting", PHASE_BACKEND, back_timeout },
	[S_B_TLS] = { "backend_tls", PHASE_BACKEND, back_timeout },
	[S_B_TLS_EHLO] = { "backend_tls_ehlo", PHASE_BACKEND, back_timeout },
	[S_B_STARTTLS] = { "backend_starttls", PHASE_BACKEND, back_timeout },
	[S_B_HELO] = { "backend_helo", PHASE_BACKEND, back_timeout },
	[S_B_XCLIENT] = { "backend_xclient", PHASE_BACKEND, back_timeout },
	[S_B_EHLO] = { "backend_ehlo", PHASE_BACKEND, back_timeout },
	[S_RELAY] = { "relay", PHASE_RELAY, idle_timeout },
	[S_CLOSED] = { "closed", PHASE_CLOSED, NULL },
};

const char *session_state_name(enum session_state st)
{
	return states[st].name;
}

enum session_phase session_phase(const struct session *s)
{
	return states[s->state].phase;
}

uint32_t session_elapsed_us(const struct session *s)
{
	uint64_t us = clock_usec() - s->t_accept;

	return us < 1 ? 1 : us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

void session_set_state(struct session *s, enum session_state st)
{
	log_debug("state", "session %016llx: %s -> %s", (unsigned long long)s->id,
		  states[s->state].name, states[st].name);
	s->state = st;
}

static void on_timeout(struct timer *t)
{
	struct session *s = (struct session *)((char *)t - offsetof(struct session, timer));

	if (states[s->state].timeout)
		states[s->state].timeout(s);
}

void session_timeout(struct session *s, uint32_t ms)
{
	timer_set(&s->w->wheel, &s->timer, ms, on_timeout);
}

void session_reply(struct session *s, const char *fmt, ...)
{
	char line[SMTP_LINE_MAX_REPLY];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	line[n++] = '\r';
	line[n++] = '\n';
	s->bytes_out += (uint64_t)n;
	if (dbuf_append(&s->out, line, (size_t)n, SESSION_OUT_MAX) < 0)
		session_close(s, R_ERROR, "too many replies unread");
}

void session_flush(struct session *s)
{
	size_t n = dbuf_used(&s->out);

	if (!n || s->state == S_CLOSED)
		return;
	/* the replies of a whole batch of commands go in one segment */
	if (s->out.off == 0) {
		char *p = s->out.p;

		s->out = (struct dbuf){ 0 };
		if (conn_send_heap(s->client, p, n) < 0)
			session_close(s, R_ERROR, "client send queue full");
	} else {
		if (conn_send_copy(s->client, dbuf_data(&s->out), n) < 0)
			session_close(s, R_ERROR, "client send queue full");
		dbuf_free(&s->out);
	}
}

static void format_addr(const union sockaddr_any *a, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (a->sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &a->sin.sin_addr, host, sizeof(host));
		snprintf(out, cap, "%s:%u", host, ntohs(a->sin.sin_port));
	} else if (a->sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &a->sin6.sin6_addr, host, sizeof(host));
		snprintf(out, cap, "[%s]:%u", host, ntohs(a->sin6.sin6_port));
	} else {
		snprintf(out, cap, "-");
	}
}

/* The session line (SPEC §7). A value the session never had (no TLS, no
 * EHLO, never routed) is missing: JSON null, "-" in text (core/log.h). */
static void log_session(struct session *s)
{
	const struct cfg_backend *b =
		s->pool && s->backend >= 0 ? s->pool->backends[s->backend].cfg : NULL;
	struct logline ll;
	char addr[INET6_ADDRSTRLEN + 10], baddr[INET6_ADDRSTRLEN + 10], id[20];
	uint64_t now = clock_usec();

	if (!log_begin(&ll, LOG_INFO, "session"))
		return;
	snprintf(id, sizeof(id), "%016llx", (unsigned long long)s->id);
	format_addr(&s->peer, addr, sizeof(addr));
	log_kv_str(&ll, "id", id);
	log_kv_str(&ll, "client", addr);
	log_kv_str(&ll, "listener", s->l->name);
	log_kv_str(&ll, "tls", s->tls_version);
	log_kv_str(&ll, "tls_cipher", s->tls_cipher);
	log_kv_str(&ll, "sni", s->sni);
	log_kv_str(&ll, "ehlo", s->ehlo_name);
	/* on a screening listener always (null: closed before a verdict) */
	if (s->screen || s->l->screen.enabled) {
		log_kv_str(&ll, "screen", s->screen);
		if (s->screen_scored)
			log_kv_i64(&ll, "score", s->screen_score);
		else
			log_kv_null(&ll, "score");
	}
	log_kv_str(&ll, "pool", s->pool ? s->pool->cfg->name : NULL);
	log_kv_str(&ll, "backend", b ? b->name : NULL);
	/* the address connected to: a name in the file is resolved at load */
	if (b)
		format_addr((const union sockaddr_any *)&b->address.ss, baddr, sizeof(baddr));
	log_kv_str(&ll, "backend_addr", b ? baddr : NULL);
	/* backends connected to, the last included: 2 is one retry */
	log_kv_u64(&ll, "tries", s->ntried);
	log_kv_str(&ll, "result", result_names[s->result]);
	log_kv_str(&ll, "reason", s->reason);
	log_kv_u64(&ll, "bytes_in", s->bytes_in);
	log_kv_u64(&ll, "bytes_out", s->bytes_out);
	if (s->greeting_us)
		log_kv_ms(&ll, "greeting_ms", s->greeting_us);
	else
		log_kv_null(&ll, "greeting_ms");
	if (s->routed_us)
		log_kv_ms(&ll, "routed_ms", s->routed_us);
	else
		log_kv_null(&ll, "routed_ms");
	log_kv_ms(&ll, "total_ms", now - s->t_accept);
	log_end(&ll);
}

/*
 * A client's protocol errors, at info: on port 25 they are the internet's
 * noise, not mxlb's trouble. At most CLIENT_ERR_PER_SEC lines a second per
 * worker; the next line after a second with more says how many were left
 * out (suppressed=K), so counts still add up. Per worker (thread-local):
 * no lock on the path a flood takes.
 */
#define CLIENT_ERR_PER_SEC 10

static _Thread_local struct {
	uint64_t second;     /* the monotonic second counted */
	unsigned n;	     /* lines logged in it */
	uint64_t suppressed; /* left out since the last line logged */
} client_errs;

void client_error(struct session *s, const char *what)
{
	uint64_t second = clock_usec() / 1000000u;
	struct logline ll;
	char addr[INET6_ADDRSTRLEN + 10], id[20];

	if (!log_enabled(LOG_INFO))
		return;
	if (second != client_errs.second) {
		client_errs.second = second;
		client_errs.n = 0;
	}
	if (client_errs.n >= CLIENT_ERR_PER_SEC) {
		client_errs.suppressed++;
		return;
	}
	client_errs.n++;
	if (!log_begin(&ll, LOG_INFO, "client_error"))
		return;
	snprintf(id, sizeof(id), "%016llx", (unsigned long long)s->id);
	format_addr(&s->peer, addr, sizeof(addr));
	log_kv_str(&ll, "id", id);
	log_kv_str(&ll, "client", addr);
	log_kv_str(&ll, "listener", s->l->name);
	log_kv_str(&ll, "state", session_state_name(s->state));
	log_kv_str(&ll, "error", what);
	if (client_errs.suppressed) {
		log_kv_u64(&ll, "suppressed", client_errs.suppressed);
		client_errs.suppressed = 0;
	}
	log_end(&ll);
}

static void account(struct session *s)
{
	struct listener_stats *ls = listener_stats(s->rt, s->l);

	atomic_fetch_sub(&ls->active, 1);
	atomic_fetch_add(&ls->sessions[s->result], 1);
	stats_session_rejected(s);
	atomic_fetch_add(&ls->bytes_in, s->bytes_in);
	atomic_fetch_add(&ls->bytes_out, s->bytes_out);
	hist_observe(&ls->duration, clock_usec() - s->t_accept);
	if (s->routed_us)
		hist_observe(&ls->route, s->routed_us);
}

struct session *session_new(struct proxy_worker *pw, const struct cfg_listener *l, int fd,
			    const struct conn_handler *h)
{
	struct session *s = slab_alloc(&pw->session_slab);
	socklen_t len;

	if (!s)
		return NULL;
	s->client = conn_new(pw->w, fd, h, s);
	if (!s->client) {
		slab_free(&pw->session_slab, s);
		return NULL;
	}
	s->pw = pw;
	s->w = pw->w;
	s->l = l;
	s->rt = pw->rt;
	runtime_ref(s->rt);
	s->id = atomic_fetch_add(&session_next_id, 1);
	s->backend = -1;
	s->t_accept = clock_usec();
	len = sizeof(s->peer);
	getpeername(fd, &s->peer.sa, &len);
	/* s->local: listener_accept() sets it where the bind tells it, else
	 * it is asked when XCLIENT or a PROXY header needs it */
	atomic_fetch_add(&listener_stats(s->rt, l)->active, 1);
	s->next = pw->sessions;
	if (s->next)
		s->next->prev = s;
	pw->sessions = s;
	pw->nsessions++;
	return s;
}

void session_close(struct session *s, enum session_result r, const char *reason)
{
	if (s->state == S_CLOSED)
		return;
	s->result = r;
	if (!s->reason)
		s->reason = reason;
	session_set_state(s, S_CLOSED);
	timer_del(&s->timer);
	screen_end(s); /* before the line, which shows its result */
	/* limits first: once the line is logged, the slot is free */
	if (s->pool && s->backend >= 0)
		pool_drop(s->pool, s->backend);
	limits_release(s);
	dns_cancel(s->name_q);
	s->name_q = NULL;
	atomic_fetch_sub(&mxlb_sessions, 1);
	account(s);
	log_session(s);
	conn_close(s->client);
	conn_close(s->back);
	s->client = s->back = NULL;
	if (s->prev)
		s->prev->next = s->next;
	else
		s->pw->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->pw->nsessions--;
	dbuf_free(&s->in);
	dbuf_free(&s->out);
	dbuf_free(&s->bin);
	dbuf_free(&s->stash[0]);
	dbuf_free(&s->stash[1]);
	/* freed after this batch of completions, so that callers up the
	 * stack may still test s->state == S_CLOSED */
	s->next = s->pw->dead;
	s->pw->dead = s;
}

void session_reap(struct proxy_worker *pw)
{
	while (pw->dead) {
		struct session *s = pw->dead;

		pw->dead = s->next;
		free(s->ehlo_line);
		free(s->ehlo_name);
		free(s->sni);
		free(s->track);
		free(s->client_name);
		runtime_unref(s->rt);
		slab_free(&pw->session_slab, s);
	}
}

void session_close_reply(struct session *s, enum session_result r, const char *reason,
			 const char *fmt, ...)
{
	char line[SMTP_LINE_MAX_REPLY];
	struct conn *c = s->client;
	va_list ap;
	int n;

	if (s->state == S_CLOSED)
		return;
	/* no plaintext reply into a TLS handshake or a passthrough stream */
	if (s->no_smtp || s->state == S_TLS) {
		session_close(s, r, reason);
		return;
	}
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	session_flush(s);
	if (n > 0) {
		line[n++] = '\r';
		line[n++] = '\n';
		s->bytes_out += (uint64_t)n;
		conn_send_copy(c, line, (size_t)n);
	}
	/* keep the client conn out of session_close's hands: it flushes
	 * the reply and closes by itself */
	s->client = NULL;
	conn_close_after_flush(c, LINGER_MS);
	session_close(s, r, reason);
}

void session_close_flush(struct session *s, enum session_result r, const char *reason)
{
	struct conn *c = s->client;

	if (s->state == S_CLOSED)
		return;
	s->client = NULL;
	conn_close_after_flush(c, LINGER_MS);
	session_close(s, r, reason);
}
