/* admin.c - the admin HTTP server (SPEC §6, §12): GET /metrics
 * (Prometheus text format), GET /status (JSON), and POST
 * /backends/<pool>/<backend>/{drain,disable,enable,weight?value=N}, on TCP
 * or a unix socket. It runs on worker 0's ring like any connection,
 * answers one request per connection and closes, so a slow or hostile
 * admin client costs one small buffer and a timer, never the mail path.
 * Who may do what: see "requests" below.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/proxy.h"
#include "proxy/smtp_parse.h"

#define ADMIN_HEAD_MAX 8192
#define ADMIN_BODY_MAX 1024
#define ADMIN_TIMEOUT_MS 5000

struct admin_client {
	struct admin_client *next, *prev;
	struct worker *w;
	struct conn *c;
	struct timer timer;
	struct dbuf in;
	bool local_unix;              /* reached over the unix socket */
	char peer[64];                /* who asked, for the log: "192.0.2.1:40000" */
	char local[INET6_ADDRSTRLEN]; /* the address they reached; "" over unix */
};

const char admin_listener[] = "admin";

static struct admin_client *clients;

/* ---- output ---- */

static void out(struct dbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out(struct dbuf *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		dbuf_append(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1,
			    64u << 20);
}

/* A label value or JSON string: backslash, quote and newline escaped. */
static void out_str(struct dbuf *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			out(b, "\\%c", *s);
		else if (*s == '\n')
			out(b, "\\n");
		else if ((unsigned char)*s < 0x20)
			out(b, "\\u%04x", (unsigned char)*s);
		else
			dbuf_append(b, s, 1, 64u << 20);
	}
}

static void metric_head(struct dbuf *b, const char *name, const char *type, const char *help)
{
	out(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void out_listener_label(struct dbuf *b, const char *metric, const struct cfg_listener *l)
{
	out(b, "%s{listener=\"", metric);
	out_str(b, l->name);
	out(b, "\"");
}

static void out_backend_label(struct dbuf *b, const char *metric, const struct pool_rt *p,
			      const struct pool_backend *be)
{
	out(b, "%s{pool=\"", metric);
	out_str(b, p->cfg->name);
	out(b, "\",backend=\"");
	out_str(b, be->cfg->name);
	out(b, "\"");
}

static void out_hist(struct dbuf *b, const char *metric, const struct cfg_listener *l,
		     const struct hist *h)
{
	char name[96];
	unsigned long cum = 0;

	snprintf(name, sizeof(name), "%s_bucket", metric);
	for (size_t i = 0; i <= HIST_BUCKETS; i++) {
		cum += atomic_load(&h->count[i]);
		out_listener_label(b, name, l);
		if (i < HIST_BUCKETS)
			out(b, ",le=\"%g\"} %lu\n", hist_bounds[i], cum);
		else
			out(b, ",le=\"+Inf\"} %lu\n", cum);
	}
	snprintf(name, sizeof(name), "%s_sum", metric);
	out_listener_label(b, name, l);
	out(b, "} %.6f\n", (double)atomic_load(&h->sum_usec) / 1e6);
	snprintf(name, sizeof(name), "%s_count", metric);
	out_listener_label(b, name, l);
	out(b, "} %lu\n", cum);
}

static void render_metrics(struct dbuf *b)
{
	const struct config *cfg = mxlb_rt->cfg;

	metric_head(b, "mxlb_sessions_total", "counter", "Sessions ended, by listener and result.");
	for (size_t i = 0; i < cfg->nlisteners; i++)
		for (int r = 0; r < R_COUNT; r++) {
			out_listener_label(b, "mxlb_sessions_total", &cfg->listeners[i]);
			out(b, ",result=\"%s\"} %lu\n", session_result_name((enum session_result)r),
			    atomic_load(&mxlb_rt->lstats[i]->sessions[r]));
		}
	metric_head(b, "mxlb_sessions_active", "gauge", "Sessions open now.");
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		out_listener_label(b, "mxlb_sessions_active", &cfg->listeners[i]);
		out(b, "} %u\n", atomic_load(&mxlb_rt->lstats[i]->active));
	}
	metric_head(b, "mxlb_bytes_total", "counter",
		    "Bytes relayed: in is client to backend, out is backend to client.");
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		out_listener_label(b, "mxlb_bytes_total", &cfg->listeners[i]);
		out(b, ",direction=\"in\"} %lu\n", atomic_load(&mxlb_rt->lstats[i]->bytes_in));
		out_listener_label(b, "mxlb_bytes_total", &cfg->listeners[i]);
		out(b, ",direction=\"out\"} %lu\n", atomic_load(&mxlb_rt->lstats[i]->bytes_out));
	}
	metric_head(b, "mxlb_tls_handshakes_total", "counter", "TLS handshakes, by version.");
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		out_listener_label(b, "mxlb_tls_handshakes_total", &cfg->listeners[i]);
		out(b, ",version=\"TLSv1.2\"} %lu\n", atomic_load(&mxlb_rt->lstats[i]->tls12));
		out_listener_label(b, "mxlb_tls_handshakes_total", &cfg->listeners[i]);
		out(b, ",version=\"TLSv1.3\"} %lu\n", atomic_load(&mxlb_rt->lstats[i]->tls13));
	}
	metric_head(b, "mxlb_tls_handshake_failures_total", "counter",
		    "Failed TLS handshakes (errors, timeouts, not a ClientHello).");
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		out_listener_label(b, "mxlb_tls_handshake_failures_total", &cfg->listeners[i]);
		out(b, "} %lu\n", atomic_load(&mxlb_rt->lstats[i]->tls_failures));
	}
	metric_head(b, "mxlb_starttls_discarded_bytes_total", "counter",
		    "Plaintext a client sent after STARTTLS, discarded.");
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		out_listener_label(b, "mxlb_starttls_discarded_bytes_total", &cfg->listeners[i]);
		out(b, "} %lu\n", atomic_load(&mxlb_rt->lstats[i]->starttls_discarded));
	}
	metric_head(b, "mxlb_session_duration_seconds", "histogram", "Session length.");
	for (size_t i = 0; i < cfg->nlisteners; i++)
		out_hist(b, "mxlb_session_duration_seconds", &cfg->listeners[i],
			 &mxlb_rt->lstats[i]->duration);
	metric_head(b, "mxlb_route_seconds", "histogram",
		    "From accept to relaying (greeting, EHLO, backend dialogue).");
	for (size_t i = 0; i < cfg->nlisteners; i++)
		out_hist(b, "mxlb_route_seconds", &cfg->listeners[i], &mxlb_rt->lstats[i]->route);

	metric_head(b, "mxlb_backend_up", "gauge", "1 when the backend is up.");
	for (size_t i = 0; i < cfg->npools; i++)
		for (size_t j = 0; j < mxlb_rt->pools[i].nbackends; j++) {
			const struct pool_backend *be = &mxlb_rt->pools[i].backends[j];

			out_backend_label(b, "mxlb_backend_up", &mxlb_rt->pools[i], be);
			out(b, "} %d\n", atomic_load(&be->st->up) ? 1 : 0);
		}
	metric_head(b, "mxlb_backend_sessions_active", "gauge", "Sessions open on the backend.");
	for (size_t i = 0; i < cfg->npools; i++)
		for (size_t j = 0; j < mxlb_rt->pools[i].nbackends; j++) {
			const struct pool_backend *be = &mxlb_rt->pools[i].backends[j];

			out_backend_label(b, "mxlb_backend_sessions_active", &mxlb_rt->pools[i], be);
			out(b, "} %u\n", atomic_load(&be->st->active));
		}
	metric_head(b, "mxlb_backend_sessions_total", "counter", "Sessions sent to the backend.");
	for (size_t i = 0; i < cfg->npools; i++)
		for (size_t j = 0; j < mxlb_rt->pools[i].nbackends; j++) {
			const struct pool_backend *be = &mxlb_rt->pools[i].backends[j];

			out_backend_label(b, "mxlb_backend_sessions_total", &mxlb_rt->pools[i], be);
			out(b, "} %lu\n", atomic_load(&be->st->total));
		}
	metric_head(b, "mxlb_backend_connect_failures_total", "counter",
		    "Backend attempts that failed before relaying.");
	for (size_t i = 0; i < cfg->npools; i++)
		for (size_t j = 0; j < mxlb_rt->pools[i].nbackends; j++) {
			const struct pool_backend *be = &mxlb_rt->pools[i].backends[j];

			out_backend_label(b, "mxlb_backend_connect_failures_total", &mxlb_rt->pools[i],
					  be);
			out(b, "} %lu\n", atomic_load(&be->st->connect_failures));
		}
	metric_head(b, "mxlb_health_checks_total", "counter", "Health checks, by result.");
	for (size_t i = 0; i < cfg->npools; i++)
		for (size_t j = 0; j < mxlb_rt->pools[i].nbackends; j++) {
			const struct pool_backend *be = &mxlb_rt->pools[i].backends[j];

			out_backend_label(b, "mxlb_health_checks_total", &mxlb_rt->pools[i], be);
			out(b, ",result=\"ok\"} %lu\n", atomic_load(&be->st->checks_ok));
			out_backend_label(b, "mxlb_health_checks_total", &mxlb_rt->pools[i], be);
			out(b, ",result=\"failed\"} %lu\n", atomic_load(&be->st->checks_failed));
		}
}

static const char *backend_state(struct backend_rt *be)
{
	switch (atomic_load(&be->admin)) {
	case ADMIN_DRAIN:
		return "drain";
	case ADMIN_DISABLED:
		return "disabled";
	default:
		return atomic_load(&be->up) ? "up" : "down";
	}
}

static void render_status(struct dbuf *b)
{
	static const struct {
		unsigned bit;
		const char *name;
	} caps[] = {
		{ SMTP_EXT_STARTTLS, "STARTTLS" }, { SMTP_EXT_XCLIENT, "XCLIENT" },
		{ SMTP_EXT_XFORWARD, "XFORWARD" }, { SMTP_EXT_PIPELINING, "PIPELINING" },
		{ SMTP_EXT_CHUNKING, "CHUNKING" }, { SMTP_EXT_AUTH, "AUTH" },
	};
	const struct config *cfg = mxlb_rt->cfg;

	out(b, "{\"hostname\":\"");
	out_str(b, cfg->server.hostname);
	out(b, "\",\"sessions\":%u,\"pools\":[", atomic_load(&mxlb_sessions));
	for (size_t i = 0; i < cfg->npools; i++) {
		struct pool_rt *p = &mxlb_rt->pools[i];

		out(b, "%s{\"name\":\"", i ? "," : "");
		out_str(b, p->cfg->name);
		out(b, "\",\"balance\":\"%s\",\"backends\":[", p->lb->name);
		for (size_t j = 0; j < p->nbackends; j++) {
			struct backend_rt *be = p->backends[j].st;
			unsigned c = atomic_load(&be->caps);
			bool first = true;

			out(b, "%s{\"name\":\"", j ? "," : "");
			out_str(b, p->backends[j].cfg->name);
			out(b, "\",\"address\":\"");
			out_str(b, p->backends[j].cfg->address.text);
			out(b, "\",\"state\":\"%s\",\"weight\":%u,\"active\":%u,\"sessions\":%lu,"
			       "\"connect_failures\":%lu,",
			    backend_state(be), backend_weight(be), atomic_load(&be->active),
			    atomic_load(&be->total), atomic_load(&be->connect_failures));
			if (atomic_load(&be->last_check_ms))
				out(b, "\"last_check\":{\"ok\":%s,\"time_ms\":%lu},",
				    atomic_load(&be->last_check_ok) ? "true" : "false",
				    atomic_load(&be->last_check_ms));
			else
				out(b, "\"last_check\":null,");
			out(b, "\"capabilities\":[");
			for (size_t k = 0; k < sizeof(caps) / sizeof(caps[0]); k++)
				if (c & caps[k].bit) {
					out(b, "%s\"%s\"", first ? "" : ",", caps[k].name);
					first = false;
				}
			out(b, "],\"size\":%lu}", atomic_load(&be->size_max));
		}
		out(b, "]}");
	}
	out(b, "]}\n");
}

/* ---- requests ---- */

/*
 * Who may do what (SPEC §12). Every request must name the admin server in
 * its Host (a page of another site that rebinds its DNS name to this
 * address still sends its own name) and carry no Origin but its own (a
 * form another site posts here). GETs need nothing more: /metrics is for
 * scrapers. POST actions over TCP need server.admin.token as a bearer
 * token and are refused while none is set; over the unix socket, whose
 * file mode (0660) is the access control, they need the token only when
 * one is set. Every action, done or refused, is logged with who asked.
 */

/* A (pointer, length) slice of the request; p is NULL when absent. */
struct slice {
	const char *p;
	size_t len;
};

struct admin_req {
	struct slice method, path;
	struct slice host, origin, auth;
	size_t body_len;
};

static void admin_close(struct admin_client *a)
{
	timer_del(&a->timer);
	dbuf_free(&a->in);
	if (a->prev)
		a->prev->next = a->next;
	else
		clients = a->next;
	if (a->next)
		a->next->prev = a->prev;
	free(a);
}

static void respond_with(struct admin_client *a, int code, const char *reason, const char *type,
			 const char *extra, struct dbuf *body)
{
	struct dbuf r = { 0 };
	size_t len = body ? dbuf_used(body) : 0;

	out(&r, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
		"Connection: close\r\n\r\n",
	    code, reason, type, len, extra);
	if (len)
		dbuf_append(&r, dbuf_data(body), len, 64u << 20);
	if (dbuf_used(&r) && r.off == 0) {
		conn_send_heap(a->c, r.p, dbuf_used(&r));
		r.p = NULL;
	}
	dbuf_free(&r);
	conn_close_after_flush(a->c, ADMIN_TIMEOUT_MS);
	a->c = NULL;
	admin_close(a);
}

static void respond(struct admin_client *a, int code, const char *reason, const char *type,
		    struct dbuf *body)
{
	respond_with(a, code, reason, type, "", body);
}

static void respond_text(struct admin_client *a, int code, const char *reason, const char *msg)
{
	struct dbuf b = { 0 };

	out(&b, "%s\n", msg);
	respond(a, code, reason, "text/plain; charset=utf-8", &b);
	dbuf_free(&b);
}

static bool slice_is(struct slice s, const char *lit)
{
	return s.p && s.len == strlen(lit) && !memcmp(s.p, lit, s.len);
}

static bool slice_casecmp(const char *p, size_t len, const char *s)
{
	return *s && len == strlen(s) && !strncasecmp(p, s, len);
}

/* One line per action and per refusal: who asked, what, and the answer. */
static void admin_log(const struct admin_client *a, const struct admin_req *r, int code,
		      const char *why, const struct backend_rt *be)
{
	struct logline ll;
	const struct slice *path = &r->path;

	if (!log_begin(&ll, code >= 400 ? LOG_WARN : LOG_INFO, "admin"))
		return;
	log_kv_str(&ll, "client", a->peer);
	log_kv_strn(&ll, "method", r->method.p ? r->method.p : "", r->method.len);
	log_kv_strn(&ll, "path", path->p ? path->p : "", path->len);
	log_kv_u64(&ll, "status", (uint64_t)code);
	if (why)
		log_kv_str(&ll, "reason", why);
	if (be) {
		log_kv_str(&ll, "state", backend_state((struct backend_rt *)be));
		log_kv_u64(&ll, "weight", backend_weight((struct backend_rt *)be));
	}
	log_end(&ll);
}

static void refuse(struct admin_client *a, const struct admin_req *r, int code,
		   const char *reason, const char *why)
{
	admin_log(a, r, code, why, NULL);
	if (code == 401)
		respond_with(a, code, reason, "text/plain; charset=utf-8",
			     "WWW-Authenticate: Bearer realm=\"mxlb admin\"\r\n", NULL);
	else
		respond_text(a, code, reason, why);
}

/* A token character of a field name (RFC 9110). */
static bool tchar(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* The head (request line and fields, without the blank line that ends it)
 * into r: slices into p. Pure. 0, or the status that refuses it: 400 for
 * what is malformed or ambiguous (a field this server reads given twice),
 * 411 for a body it cannot delimit, 413 for one too large. */
static int parse_head(const char *p, size_t len, struct admin_req *r)
{
	const char *end = p + len, *eol, *sp1, *sp2;
	bool has_length = false;

	memset(r, 0, sizeof(*r));
	eol = memmem(p, len, "\r\n", 2);
	if (!eol)
		eol = end;
	sp1 = memchr(p, ' ', (size_t)(eol - p));
	sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
	if (!sp2 || sp1 == p || sp2 == sp1 + 1 || eol - sp2 != 9 || memcmp(sp2 + 1, "HTTP/1.", 7) ||
	    (sp2[8] != '0' && sp2[8] != '1'))
		return 400;
	r->method = (struct slice){ p, (size_t)(sp1 - p) };
	r->path = (struct slice){ sp1 + 1, (size_t)(sp2 - sp1 - 1) };
	for (const char *q = p; q < eol; q++)
		if ((unsigned char)*q < 0x21 && *q != ' ')
			return 400;
	while (eol < end) {
		const char *name = eol + 2, *colon, *v, *ve;
		struct slice *f = NULL;

		eol = memmem(name, (size_t)(end - name), "\r\n", 2);
		if (!eol)
			eol = end;
		colon = memchr(name, ':', (size_t)(eol - name));
		if (!colon || colon == name)
			return 400; /* obsolete line folding starts with a space: not a tchar */
		for (const char *q = name; q < colon; q++)
			if (!tchar(*q))
				return 400;
		for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
			;
		for (ve = eol; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
			;
		for (const char *q = v; q < ve; q++)
			if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
				return 400;
		if (slice_casecmp(name, (size_t)(colon - name), "host"))
			f = &r->host;
		else if (slice_casecmp(name, (size_t)(colon - name), "origin"))
			f = &r->origin;
		else if (slice_casecmp(name, (size_t)(colon - name), "authorization"))
			f = &r->auth;
		else if (slice_casecmp(name, (size_t)(colon - name), "transfer-encoding"))
			return 411;
		else if (slice_casecmp(name, (size_t)(colon - name), "content-length")) {
			size_t n = 0;

			if (v == ve || has_length)
				return 400;
			for (const char *q = v; q < ve; q++) {
				if (*q < '0' || *q > '9')
					return 400;
				if (n <= ADMIN_BODY_MAX)
					n = n * 10 + (size_t)(*q - '0');
			}
			if (n > ADMIN_BODY_MAX)
				return 413;
			r->body_len = n;
			has_length = true;
			continue;
		}
		if (!f)
			continue;
		if (f->p)
			return 400;
		*f = (struct slice){ v, (size_t)(ve - v) };
	}
	return 0;
}

/* A Host value, or an Origin's authority: "name", "name:port", "[v6]" or
 * "[v6]:port". True when the name is one the admin server goes by:
 * localhost, the host its address is written with, the address this
 * client reached (so a wildcard address works by any of the host's
 * addresses), or server.hostname. The port is not compared: a tunnel or a
 * port forward may change it, and a foreign page cannot change the name. */
static bool host_ok(const struct admin_client *a, const char *h, size_t n)
{
	const struct cfg_server *srv = &mxlb_rt->cfg->server;
	const char *name = h, *port = NULL, *end = h + n;
	size_t nlen;

	if (n && h[0] == '[') {
		const char *rb = memchr(h, ']', n);

		if (!rb)
			return false;
		name = h + 1;
		nlen = (size_t)(rb - name);
		if (rb + 1 < end) {
			if (rb[1] != ':')
				return false;
			port = rb + 2;
		}
	} else {
		const char *colon = memchr(h, ':', n);

		nlen = colon ? (size_t)(colon - h) : n;
		if (colon)
			port = colon + 1;
	}
	if (port) {
		if (port == end || end - port > 5)
			return false;
		for (const char *q = port; q < end; q++)
			if (*q < '0' || *q > '9')
				return false;
	}
	return slice_casecmp(name, nlen, "localhost") ||
	       slice_casecmp(name, nlen, srv->has_admin ? srv->admin.host : "") ||
	       slice_casecmp(name, nlen, a->local) || slice_casecmp(name, nlen, srv->hostname);
}

/* An Origin, when there is one, is this server itself: http(s)://, then
 * exactly the Host the request names (same origin), or an acceptable
 * host when it names none. "null" and other sites' pages are foreign. */
static bool origin_ok(const struct admin_client *a, const struct admin_req *r)
{
	const char *o = r->origin.p;
	size_t n = r->origin.len, skip;

	if (n > 7 && !strncasecmp(o, "http://", 7))
		skip = 7;
	else if (n > 8 && !strncasecmp(o, "https://", 8))
		skip = 8;
	else
		return false;
	o += skip;
	n -= skip;
	if (memchr(o, '/', n))
		return false;
	if (r->host.p)
		return n == r->host.len && !strncasecmp(o, r->host.p, n);
	return host_ok(a, o, n);
}

/* Equal in time that does not depend on where they differ. */
static bool token_equal(const char *p, size_t n, const char *token)
{
	size_t tlen = strlen(token);
	unsigned char diff = n != tlen;

	for (size_t i = 0; i < tlen; i++)
		diff |= (unsigned char)(token[i] ^ (i < n ? p[i] : 0));
	return diff == 0;
}

/* May this client act? 0, or the status that refuses it, with why. */
static int authorize(const struct admin_client *a, const struct admin_req *r, const char **why)
{
	const char *token = mxlb_rt->cfg->server.admin_token, *p;
	size_t n;

	if (!*token) {
		if (a->local_unix)
			return 0;
		*why = "admin actions over TCP need server.admin.token";
		return 403;
	}
	if (!r->auth.p) {
		*why = "Authorization: Bearer TOKEN is needed";
		return 401;
	}
	p = r->auth.p;
	n = r->auth.len;
	if (n < 7 || strncasecmp(p, "Bearer ", 7)) {
		*why = "wrong credentials";
		return 403;
	}
	for (p += 7, n -= 7; n && *p == ' '; p++, n--)
		;
	if (!token_equal(p, n, token)) {
		*why = "wrong credentials";
		return 403;
	}
	return 0;
}

static struct backend_rt *find_backend(const char *pool, size_t plen, const char *name,
				       size_t nlen)
{
	for (size_t i = 0; i < mxlb_rt->cfg->npools; i++) {
		struct pool_rt *p = &mxlb_rt->pools[i];

		if (strlen(p->cfg->name) != plen || memcmp(p->cfg->name, pool, plen))
			continue;
		for (size_t j = 0; j < p->nbackends; j++)
			if (strlen(p->backends[j].cfg->name) == nlen &&
			    !memcmp(p->backends[j].cfg->name, name, nlen))
				return p->backends[j].st;
	}
	return NULL;
}

/* POST /backends/<pool>/<backend>/<action>[?value=N], authorized. */
static void backend_action(struct admin_client *a, const struct admin_req *r)
{
	const char *path = r->path.p, *end = path + r->path.len;
	const char *pool = path + strlen("/backends/"), *name, *act, *q;
	struct backend_rt *be;

	name = memchr(pool, '/', (size_t)(end - pool));
	act = name ? memchr(name + 1, '/', (size_t)(end - name - 1)) : NULL;
	if (!name || !act) {
		admin_log(a, r, 404, "no such backend", NULL);
		respond_text(a, 404, "Not Found", "no such backend");
		return;
	}
	name++;
	act++;
	be = find_backend(pool, (size_t)(name - 1 - pool), name, (size_t)(act - 1 - name));
	if (!be) {
		admin_log(a, r, 404, "no such backend", NULL);
		respond_text(a, 404, "Not Found", "no such backend");
		return;
	}
	q = memchr(act, '?', (size_t)(end - act));
	if (!q)
		q = end;
	if (q - act == 5 && !memcmp(act, "drain", 5)) {
		atomic_store(&be->admin, ADMIN_DRAIN);
	} else if (q - act == 7 && !memcmp(act, "disable", 7)) {
		atomic_store(&be->admin, ADMIN_DISABLED);
	} else if (q - act == 6 && !memcmp(act, "enable", 6)) {
		atomic_store(&be->admin, ADMIN_ENABLED);
	} else if (q - act == 6 && !memcmp(act, "weight", 6)) {
		char num[16];
		char *e;
		unsigned long v;

		if (end - q < 8 || memcmp(q, "?value=", 7) || end - q - 7 >= (long)sizeof(num)) {
			admin_log(a, r, 400, "weight needs ?value=N", NULL);
			respond_text(a, 400, "Bad Request", "weight needs ?value=N");
			return;
		}
		memcpy(num, q + 7, (size_t)(end - q - 7));
		num[end - q - 7] = '\0';
		v = strtoul(num, &e, 10);
		if (*e || !*num || *num < '0' || *num > '9' || v > 1000000) {
			admin_log(a, r, 400, "weight must be 0..1000000", NULL);
			respond_text(a, 400, "Bad Request", "weight must be 0..1000000");
			return;
		}
		atomic_store(&be->weight, (unsigned)v);
	} else {
		admin_log(a, r, 404, "no such action", NULL);
		respond_text(a, 404, "Not Found", "actions: drain, disable, enable, weight?value=N");
		return;
	}
	admin_log(a, r, 200, NULL, be);
	respond_text(a, 200, "OK", "ok");
}

static void handle(struct admin_client *a, const struct admin_req *r)
{
	const char *why = NULL;
	bool get = slice_is(r->method, "GET"), post = slice_is(r->method, "POST");
	struct dbuf b = { 0 };
	int code;

	/* no Host at all is no browser: HTTP/1.0 scripts may omit it */
	if (r->host.p && !host_ok(a, r->host.p, r->host.len)) {
		refuse(a, r, 403, "Forbidden", "Host is not this admin server");
		return;
	}
	if (r->origin.p && !origin_ok(a, r)) {
		refuse(a, r, 403, "Forbidden", "cross-origin requests are refused");
		return;
	}
	if (slice_is(r->path, "/metrics")) {
		if (!get)
			goto method;
		render_metrics(&b);
		respond(a, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", &b);
	} else if (slice_is(r->path, "/status")) {
		if (!get)
			goto method;
		render_status(&b);
		respond(a, 200, "OK", "application/json", &b);
	} else if (r->path.len > 10 && !memcmp(r->path.p, "/backends/", 10)) {
		if (!post)
			goto method;
		code = authorize(a, r, &why);
		if (code == 401)
			refuse(a, r, 401, "Unauthorized", why);
		else if (code)
			refuse(a, r, 403, "Forbidden", why);
		else
			backend_action(a, r);
	} else {
		respond_text(a, 404, "Not Found", "try /metrics or /status");
	}
	dbuf_free(&b);
	return;
method:
	if (post)
		admin_log(a, r, 405, "method not allowed", NULL);
	respond_text(a, 405, "Method Not Allowed", "method not allowed");
}

/* Parse what has arrived: the head, then Content-Length octets of body. */
static void admin_process(struct admin_client *a)
{
	const char *p = dbuf_data(&a->in), *end;
	size_t len = dbuf_used(&a->in), head_len;
	struct admin_req r;
	int code;

	end = memmem(p, len, "\r\n\r\n", 4);
	if (!end) {
		if (len > ADMIN_HEAD_MAX)
			respond_text(a, 431, "Request Header Fields Too Large", "headers too large");
		return;
	}
	head_len = (size_t)(end - p);
	if (head_len > ADMIN_HEAD_MAX) {
		respond_text(a, 431, "Request Header Fields Too Large", "headers too large");
		return;
	}
	code = parse_head(p, head_len, &r);
	if (code == 411) {
		respond_text(a, 411, "Length Required", "send Content-Length");
		return;
	}
	if (code == 413) {
		respond_text(a, 413, "Content Too Large", "body too large");
		return;
	}
	if (code) {
		respond_text(a, 400, "Bad Request", "bad request");
		return;
	}
	if (len < head_len + 4 + r.body_len)
		return;
	handle(a, &r);
}

static void admin_timeout(struct timer *t)
{
	struct admin_client *a =
		(struct admin_client *)((char *)t - offsetof(struct admin_client, timer));

	respond_text(a, 408, "Request Timeout", "request timeout");
}

static bool admin_data(struct conn *c, char *p, size_t len, uint16_t bid)
{
	struct admin_client *a = c->owner;

	(void)bid;
	if (dbuf_append(&a->in, p, len, ADMIN_HEAD_MAX + ADMIN_BODY_MAX + 8) < 0) {
		respond_text(a, 431, "Request Header Fields Too Large", "request too large");
		return false;
	}
	admin_process(a);
	return false;
}

static void admin_gone(struct conn *c)
{
	struct admin_client *a = c->owner;

	conn_close(a->c);
	a->c = NULL;
	admin_close(a);
}

static void admin_error(struct conn *c, int err)
{
	(void)err;
	admin_gone(c);
}

static const struct conn_handler admin_handler = {
	.data = admin_data,
	.eof = admin_gone,
	.error = admin_error,
};

/* Who is asking (for the log) and what address they reached (for Host). */
static void admin_who(struct admin_client *a, int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";

	if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == AF_UNIX) {
		struct ucred cr;
		socklen_t crlen = sizeof(cr);

		a->local_unix = true;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == 0)
			snprintf(a->peer, sizeof(a->peer), "unix:uid=%u,pid=%d", (unsigned)cr.uid,
				 (int)cr.pid);
		else
			snprintf(a->peer, sizeof(a->peer), "unix");
		return;
	}
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, a->local,
			  sizeof(a->local));
	else if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, a->local,
			  sizeof(a->local));
	len = sizeof(ss);
	snprintf(a->peer, sizeof(a->peer), "?");
	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return;
	if (ss.ss_family == AF_INET) {
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
		snprintf(a->peer, sizeof(a->peer), "%s:%u", host,
			 ntohs(((struct sockaddr_in *)&ss)->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
		snprintf(a->peer, sizeof(a->peer), "[%s]:%u", host,
			 ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
	}
}

void admin_accept(struct worker *w, int fd)
{
	struct admin_client *a = calloc(1, sizeof(*a));

	if (!a || !(a->c = conn_new(w, fd, &admin_handler, a))) {
		free(a);
		close(fd);
		return;
	}
	a->w = w;
	admin_who(a, fd);
	a->next = clients;
	if (clients)
		clients->prev = a;
	clients = a;
	timer_set(&w->wheel, &a->timer, ADMIN_TIMEOUT_MS, admin_timeout);
	conn_recv_start(a->c);
}

void admin_stop(void)
{
	while (clients) {
		conn_close(clients->c);
		clients->c = NULL;
		admin_close(clients);
	}
}
