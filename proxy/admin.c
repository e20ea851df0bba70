/* admin.c - the admin HTTP server (SPEC §6): GET /metrics (Prometheus
 * text format), GET /status (JSON), and POST /backends/<pool>/<backend>/
 * {drain,disable,enable,weight?value=N}. It runs on worker 0's ring like
 * any connection, answers one request per connection and closes, so a
 * slow or hostile admin client costs one small buffer and a timer, never
 * the mail path.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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
			      const struct backend_rt *be)
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
			    atomic_load(&mxlb_rt->lstats[i].sessions[r]));
		}
	metric_head(b, "mxlb_sessions_active", "gauge", "Sessions open now.");
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		out_listener_label(b, "mxlb_sessions_active", &cfg->listeners[i]);
		out(b, "} %u\n", atomic_load(&mxlb_rt->lstats[i].active));
	}
	metric_head(b, "mxlb_bytes_total", "counter",
		    "Bytes relayed: in is client to backend, out is backend to client.");
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		out_listener_label(b, "mxlb_bytes_total", &cfg->listeners[i]);
		out(b, ",direction=\"in\"} %lu\n", atomic_load(&mxlb_rt->lstats[i].bytes_in));
		out_listener_label(b, "mxlb_bytes_total", &cfg->listeners[i]);
		out(b, ",direction=\"out\"} %lu\n", atomic_load(&mxlb_rt->lstats[i].bytes_out));
	}
	metric_head(b, "mxlb_tls_handshakes_total", "counter", "TLS handshakes, by version.");
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		out_listener_label(b, "mxlb_tls_handshakes_total", &cfg->listeners[i]);
		out(b, ",version=\"TLSv1.2\"} %lu\n", atomic_load(&mxlb_rt->lstats[i].tls12));
		out_listener_label(b, "mxlb_tls_handshakes_total", &cfg->listeners[i]);
		out(b, ",version=\"TLSv1.3\"} %lu\n", atomic_load(&mxlb_rt->lstats[i].tls13));
	}
	metric_head(b, "mxlb_tls_handshake_failures_total", "counter",
		    "Failed TLS handshakes (errors, timeouts, not a ClientHello).");
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		out_listener_label(b, "mxlb_tls_handshake_failures_total", &cfg->listeners[i]);
		out(b, "} %lu\n", atomic_load(&mxlb_rt->lstats[i].tls_failures));
	}
	metric_head(b, "mxlb_starttls_discarded_bytes_total", "counter",
		    "Plaintext a client sent after STARTTLS, discarded.");
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		out_listener_label(b, "mxlb_starttls_discarded_bytes_total", &cfg->listeners[i]);
		out(b, "} %lu\n", atomic_load(&mxlb_rt->lstats[i].starttls_discarded));
	}
	metric_head(b, "mxlb_session_duration_seconds", "histogram", "Session length.");
	for (size_t i = 0; i < cfg->nlisteners; i++)
		out_hist(b, "mxlb_session_duration_seconds", &cfg->listeners[i],
			 &mxlb_rt->lstats[i].duration);
	metric_head(b, "mxlb_route_seconds", "histogram",
		    "From accept to relaying (greeting, EHLO, backend dialogue).");
	for (size_t i = 0; i < cfg->nlisteners; i++)
		out_hist(b, "mxlb_route_seconds", &cfg->listeners[i], &mxlb_rt->lstats[i].route);

	metric_head(b, "mxlb_backend_up", "gauge", "1 when the backend is up.");
	for (size_t i = 0; i < cfg->npools; i++)
		for (size_t j = 0; j < mxlb_rt->pools[i].nbackends; j++) {
			struct backend_rt *be = &mxlb_rt->pools[i].backends[j];

			out_backend_label(b, "mxlb_backend_up", &mxlb_rt->pools[i], be);
			out(b, "} %d\n", atomic_load(&be->up) ? 1 : 0);
		}
	metric_head(b, "mxlb_backend_sessions_active", "gauge", "Sessions open on the backend.");
	for (size_t i = 0; i < cfg->npools; i++)
		for (size_t j = 0; j < mxlb_rt->pools[i].nbackends; j++) {
			struct backend_rt *be = &mxlb_rt->pools[i].backends[j];

			out_backend_label(b, "mxlb_backend_sessions_active", &mxlb_rt->pools[i], be);
			out(b, "} %u\n", atomic_load(&be->active));
		}
	metric_head(b, "mxlb_backend_sessions_total", "counter", "Sessions sent to the backend.");
	for (size_t i = 0; i < cfg->npools; i++)
		for (size_t j = 0; j < mxlb_rt->pools[i].nbackends; j++) {
			struct backend_rt *be = &mxlb_rt->pools[i].backends[j];

			out_backend_label(b, "mxlb_backend_sessions_total", &mxlb_rt->pools[i], be);
			out(b, "} %lu\n", atomic_load(&be->total));
		}
	metric_head(b, "mxlb_backend_connect_failures_total", "counter",
		    "Backend attempts that failed before relaying.");
	for (size_t i = 0; i < cfg->npools; i++)
		for (size_t j = 0; j < mxlb_rt->pools[i].nbackends; j++) {
			struct backend_rt *be = &mxlb_rt->pools[i].backends[j];

			out_backend_label(b, "mxlb_backend_connect_failures_total", &mxlb_rt->pools[i],
					  be);
			out(b, "} %lu\n", atomic_load(&be->connect_failures));
		}
	metric_head(b, "mxlb_health_checks_total", "counter", "Health checks, by result.");
	for (size_t i = 0; i < cfg->npools; i++)
		for (size_t j = 0; j < mxlb_rt->pools[i].nbackends; j++) {
			struct backend_rt *be = &mxlb_rt->pools[i].backends[j];

			out_backend_label(b, "mxlb_health_checks_total", &mxlb_rt->pools[i], be);
			out(b, ",result=\"ok\"} %lu\n", atomic_load(&be->checks_ok));
			out_backend_label(b, "mxlb_health_checks_total", &mxlb_rt->pools[i], be);
			out(b, ",result=\"failed\"} %lu\n", atomic_load(&be->checks_failed));
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
			struct backend_rt *be = &p->backends[j];
			unsigned c = atomic_load(&be->caps);
			bool first = true;

			out(b, "%s{\"name\":\"", j ? "," : "");
			out_str(b, be->cfg->name);
			out(b, "\",\"address\":\"");
			out_str(b, be->cfg->address.text);
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

static void respond(struct admin_client *a, int code, const char *reason, const char *type,
		    struct dbuf *body)
{
	struct dbuf r = { 0 };
	size_t len = body ? dbuf_used(body) : 0;

	out(&r, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		"Connection: close\r\n\r\n",
	    code, reason, type, len);
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

static void respond_text(struct admin_client *a, int code, const char *reason, const char *msg)
{
	struct dbuf b = { 0 };

	out(&b, "%s\n", msg);
	respond(a, code, reason, "text/plain; charset=utf-8", &b);
	dbuf_free(&b);
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
				return &p->backends[j];
	}
	return NULL;
}

/* POST /backends/<pool>/<backend>/<action>[?value=N] */
static void backend_action(struct admin_client *a, const char *path, size_t len)
{
	const char *pool = path + strlen("/backends/"), *end = path + len, *name, *act, *q;
	struct backend_rt *be;
	char msg[160];

	name = memchr(pool, '/', (size_t)(end - pool));
	act = name ? memchr(name + 1, '/', (size_t)(end - name - 1)) : NULL;
	if (!name || !act) {
		respond_text(a, 404, "Not Found", "no such backend");
		return;
	}
	name++;
	act++;
	be = find_backend(pool, (size_t)(name - 1 - pool), name, (size_t)(act - 1 - name));
	if (!be) {
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
			respond_text(a, 400, "Bad Request", "weight needs ?value=N");
			return;
		}
		memcpy(num, q + 7, (size_t)(end - q - 7));
		num[end - q - 7] = '\0';
		v = strtoul(num, &e, 10);
		if (*e || !*num || v > 1000000) {
			respond_text(a, 400, "Bad Request", "weight must be 0..1000000");
			return;
		}
		atomic_store(&be->weight, (unsigned)v);
	} else {
		respond_text(a, 404, "Not Found", "actions: drain, disable, enable, weight?value=N");
		return;
	}
	snprintf(msg, sizeof(msg), "%.*s", (int)(q - path), path);
	log_info("admin", "%s (weight %u, state %s)", msg, backend_weight(be), backend_state(be));
	respond_text(a, 200, "OK", "ok");
}

static void handle(struct admin_client *a, const char *head, size_t head_len, size_t body_len)
{
	const char *sp1 = memchr(head, ' ', head_len), *sp2, *path;
	size_t mlen, plen;
	struct dbuf b = { 0 };

	(void)body_len;
	if (!sp1)
		goto bad;
	sp2 = memchr(sp1 + 1, ' ', head_len - (size_t)(sp1 + 1 - head));
	if (!sp2 || (size_t)(head + head_len - sp2) < 9 || memcmp(sp2 + 1, "HTTP/1.", 7))
		goto bad;
	mlen = (size_t)(sp1 - head);
	path = sp1 + 1;
	plen = (size_t)(sp2 - path);
	if (plen == 8 && !memcmp(path, "/metrics", 8)) {
		if (mlen != 3 || memcmp(head, "GET", 3))
			goto method;
		render_metrics(&b);
		respond(a, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", &b);
	} else if (plen == 7 && !memcmp(path, "/status", 7)) {
		if (mlen != 3 || memcmp(head, "GET", 3))
			goto method;
		render_status(&b);
		respond(a, 200, "OK", "application/json", &b);
	} else if (plen > 10 && !memcmp(path, "/backends/", 10)) {
		if (mlen != 4 || memcmp(head, "POST", 4))
			goto method;
		backend_action(a, path, plen);
	} else {
		respond_text(a, 404, "Not Found", "try /metrics or /status");
	}
	dbuf_free(&b);
	return;
method:
	respond_text(a, 405, "Method Not Allowed", "method not allowed");
	return;
bad:
	respond_text(a, 400, "Bad Request", "bad request");
}

/* Parse what has arrived: the head, then Content-Length octets of body. */
static void admin_process(struct admin_client *a)
{
	const char *p = dbuf_data(&a->in), *end;
	size_t len = dbuf_used(&a->in), head_len, body_len = 0;
	const char *cl;

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
	if (memmem(p, head_len, "\r\nTransfer-Encoding:", 20) ||
	    memmem(p, head_len, "\r\ntransfer-encoding:", 20)) {
		respond_text(a, 411, "Length Required", "send Content-Length");
		return;
	}
	cl = memmem(p, head_len, "\r\nContent-Length:", 17);
	if (!cl)
		cl = memmem(p, head_len, "\r\ncontent-length:", 17);
	if (cl) {
		char *e;

		body_len = strtoul(cl + 17, &e, 10);
		if (e == cl + 17 || (*e != '\r' && *e != ' ')) {
			respond_text(a, 400, "Bad Request", "bad Content-Length");
			return;
		}
		if (body_len > ADMIN_BODY_MAX) {
			respond_text(a, 413, "Content Too Large", "body too large");
			return;
		}
	}
	if (len < head_len + 4 + body_len)
		return;
	handle(a, p, head_len, body_len);
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

void admin_accept(struct worker *w, int fd)
{
	struct admin_client *a = calloc(1, sizeof(*a));

	if (!a || !(a->c = conn_new(w, fd, &admin_handler, a))) {
		free(a);
		close(fd);
		return;
	}
	a->w = w;
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
