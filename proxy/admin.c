/* admin.c - the admin HTTP server (SPEC §6, §12): GET /metrics
 * (Prometheus text format), GET /status (JSON), GET / and /status.html
 * (the status page), and POST
 * /backends/<pool>/<backend>/{drain,disable,enable,weight?value=N}, on TCP
 * or a unix socket. It runs on worker 0's ring like any connection,
 * answers one request per connection and closes, so a slow or hostile
 * admin client costs one small buffer and a timer, never the mail path.
 * Who may do what: see "requests" below. Requests are parsed by
 * admin_http.c (pure, unit-tested and fuzzed), answers rendered by
 * admin_render.c; this file does the I/O, access control and actions.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/admin_http.h"
#include "proxy/proxy.h"
#include "proxy/smtp_parse.h"

#define ADMIN_TIMEOUT_MS 5000
/* Longer than any name the configuration accepts (config/node.c). */
#define NAME_MAX_DECODED 256
/* What a client may have sent before it is answered: a whole request at
 * its limits (admin_http.h) with its blank line, and a little more. */
#define ADMIN_IN_MAX (ADMIN_HTTP_HEAD_MAX + ADMIN_HTTP_BODY_MAX + 8)

struct admin_client {
	struct admin_client *next, *prev;
	struct worker *w;
	struct conn *c;
	struct timer timer;
	struct dbuf in;
	bool local_unix;	      /* reached over the unix socket */
	char peer[64];		      /* who asked, for the log: "192.0.2.1:40000" */
	char local[INET6_ADDRSTRLEN]; /* the address they reached; "" over unix */
};

static struct admin_client *clients;

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

	admin_out(&r,
		  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
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

	admin_out(&b, "%s\n", msg);
	respond(a, code, reason, "text/plain; charset=utf-8", &b);
	dbuf_free(&b);
}

static bool slice_is(struct admin_http_slice s, const char *lit)
{
	return s.p && s.len == strlen(lit) && !memcmp(s.p, lit, s.len);
}

static bool slice_casecmp(const char *p, size_t len, const char *s)
{
	return *s && len == strlen(s) && !strncasecmp(p, s, len);
}

/* One line per action and per refusal: who asked, what, and the answer. */
static void admin_log(const struct admin_client *a, const struct admin_http_req *r, int code,
		      const char *why, const struct backend_rt *be)
{
	struct logline ll;
	const struct admin_http_slice *path = &r->target;

	if (!log_begin(&ll, code >= 400 ? LOG_WARN : LOG_INFO, "admin"))
		return;
	log_kv_str(&ll, "client", a->peer);
	log_kv_strn(&ll, "method", r->method.p ? r->method.p : "", r->method.len);
	log_kv_strn(&ll, "path", path->p ? path->p : "", path->len);
	log_kv_u64(&ll, "status", (uint64_t)code);
	if (why)
		log_kv_str(&ll, "reason", why);
	if (be) {
		log_kv_str(&ll, "state", admin_backend_state((struct backend_rt *)be));
		log_kv_u64(&ll, "weight", backend_weight((struct backend_rt *)be));
	}
	log_end(&ll);
}

static void refuse(struct admin_client *a, const struct admin_http_req *r, int code,
		   const char *reason, const char *why)
{
	admin_log(a, r, code, why, NULL);
	if (code == 401)
		respond_with(a, code, reason, "text/plain; charset=utf-8",
			     "WWW-Authenticate: Bearer realm=\"mxlb admin\"\r\n", NULL);
	else
		respond_text(a, code, reason, why);
}

/* A Host value, or an Origin's authority (admin_http_authority()): true
 * when the name is one the admin server goes by: localhost, the host its
 * address is written with, the address this client reached (so a wildcard
 * address works by any of the host's addresses), or server.hostname. The
 * port is not compared: a tunnel or a port forward may change it, and a
 * foreign page cannot change the name. */
static bool host_ok(const struct admin_client *a, struct admin_http_slice value)
{
	const struct cfg_server *srv = &mxlb_rt->cfg->server;
	struct admin_http_slice n;

	if (!admin_http_authority(value, &n))
		return false;
	return slice_casecmp(n.p, n.len, "localhost") ||
	       slice_casecmp(n.p, n.len, srv->has_admin ? srv->admin.host : "") ||
	       slice_casecmp(n.p, n.len, a->local) || slice_casecmp(n.p, n.len, srv->hostname);
}

/* An Origin, when there is one, is this server itself: http(s)://, then
 * exactly the Host the request names (same origin), or an acceptable
 * host when it names none. "null" and other sites' pages are foreign. */
static bool origin_ok(const struct admin_client *a, const struct admin_http_req *r)
{
	struct admin_http_slice o;

	if (!admin_http_origin(r->origin, &o))
		return false;
	if (r->host.p)
		return o.len == r->host.len && !strncasecmp(o.p, r->host.p, o.len);
	return host_ok(a, o);
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
static int authorize(const struct admin_client *a, const struct admin_http_req *r, const char **why)
{
	const char *token = mxlb_rt->cfg->server.admin_token;
	struct admin_http_slice t;

	if (!*token) {
		if (a->local_unix)
			return 0;
		*why = "admin actions over TCP need server.admin.token";
		return 403;
	}
	if (!r->authorization.p) {
		*why = "Authorization: Bearer TOKEN is needed";
		return 401;
	}
	if (!admin_http_bearer(r->authorization, &t) || !token_equal(t.p, t.len, token)) {
		*why = "wrong credentials";
		return 403;
	}
	return 0;
}

static struct backend_rt *find_backend_named(const char *pool, size_t plen, const char *name,
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

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)(c | 0x20);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* %XX decoded into out (NAME_MAX_DECODED bytes): its length, or -1 when
 * malformed or too long for any name. */
static long pct_decode(const char *p, size_t n, char *out)
{
	size_t len = 0;

	for (size_t i = 0; i < n; i++, len++) {
		int hi, lo;

		if (len >= NAME_MAX_DECODED)
			return -1;
		if (p[i] != '%') {
			out[len] = p[i];
			continue;
		}
		if (i + 2 >= n)
			return -1;
		hi = hex_digit(p[i + 1]);
		lo = hex_digit(p[i + 2]);
		if (hi < 0 || lo < 0)
			return -1;
		out[len] = (char)(hi << 4 | lo);
		i += 2;
	}
	return (long)len;
}

/* The backend named so, as written, or else percent-decoded: the page
 * encodes names (a '#' or a non-ASCII byte could not go in a path raw),
 * while scripts send them raw, and a name may hold a '%'. */
static struct backend_rt *find_backend(const char *pool, size_t plen, const char *name, size_t nlen)
{
	struct backend_rt *be = find_backend_named(pool, plen, name, nlen);
	char dp[NAME_MAX_DECODED], dn[NAME_MAX_DECODED];
	long dplen, dnlen;

	if (be || (!memchr(pool, '%', plen) && !memchr(name, '%', nlen)))
		return be;
	dplen = pct_decode(pool, plen, dp);
	dnlen = pct_decode(name, nlen, dn);
	if (dplen < 0 || dnlen < 0)
		return NULL;
	return find_backend_named(dp, (size_t)dplen, dn, (size_t)dnlen);
}

/* POST /backends/<pool>/<backend>/<action>[?value=N], authorized. Split
 * on the whole target, not on r->path: names may hold a '?'. */
static void backend_action(struct admin_client *a, const struct admin_http_req *r)
{
	const char *path = r->target.p, *end = path + r->target.len;
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
		respond_text(a, 404, "Not Found",
			     "actions: drain, disable, enable, weight?value=N");
		return;
	}
	admin_log(a, r, 200, NULL, be);
	respond_text(a, 200, "OK", "ok");
}

static struct admin_access access_of(const struct admin_client *a)
{
	bool token = *mxlb_rt->cfg->server.admin_token;

	return (struct admin_access){ .actions = token || a->local_unix, .token = token };
}

/*
 * The status page. Its policy lets it load nothing from anywhere (SPEC
 * §12: self-contained), run only its own script and style (the nonce,
 * new each time, so names on the page could not add any even if
 * escaping failed), fetch only from here, and be framed by no one (its
 * buttons act).
 */
static void respond_page(struct admin_client *a)
{
	struct admin_access acc = access_of(a);
	unsigned char rnd[16];
	char nonce[2 * sizeof(rnd) + 1], extra[512];
	struct dbuf b = { 0 };

	if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
		respond_text(a, 503, "Service Unavailable", "no randomness for the page");
		return;
	}
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(nonce + 2 * i, 3, "%02x", rnd[i]);
	snprintf(extra, sizeof(extra),
		 "Content-Security-Policy: default-src 'none'; script-src 'nonce-%s'; "
		 "style-src 'nonce-%s'; connect-src 'self'; img-src data:; base-uri 'none'; "
		 "form-action 'none'; frame-ancestors 'none'\r\n"
		 "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"
		 "Cache-Control: no-store\r\n",
		 nonce, nonce);
	admin_render_page(&b, &acc, nonce);
	respond_with(a, 200, "OK", "text/html; charset=utf-8", extra, &b);
	dbuf_free(&b);
}

static void handle(struct admin_client *a, const struct admin_http_req *r)
{
	struct admin_access acc = access_of(a);
	const char *why = NULL;
	bool get = slice_is(r->method, "GET"), post = slice_is(r->method, "POST");
	struct dbuf b = { 0 };
	int code;

	/* no Host at all is no browser: HTTP/1.0 scripts may omit it */
	if (r->host.p && !host_ok(a, r->host)) {
		refuse(a, r, 403, "Forbidden", "Host is not this admin server");
		return;
	}
	if (r->origin.p && !origin_ok(a, r)) {
		refuse(a, r, 403, "Forbidden", "cross-origin requests are refused");
		return;
	}
	/* whole targets: a query is not ignored */
	if (slice_is(r->target, "/metrics")) {
		if (!get)
			goto method;
		admin_render_metrics(&b);
		respond(a, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", &b);
	} else if (slice_is(r->target, "/status")) {
		if (!get)
			goto method;
		admin_render_status(&b, &acc);
		respond(a, 200, "OK", "application/json", &b);
	} else if (slice_is(r->target, "/") || slice_is(r->target, "/status.html")) {
		if (!get)
			goto method;
		respond_page(a);
	} else if (r->target.len > 10 && !memcmp(r->target.p, "/backends/", 10)) {
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
		respond_text(a, 404, "Not Found", "try /, /metrics or /status");
	}
	dbuf_free(&b);
	return;
method:
	if (post)
		admin_log(a, r, 405, "method not allowed", NULL);
	respond_text(a, 405, "Method Not Allowed", "method not allowed");
}

/* How a request admin_http_parse() finds INVALID is answered. */
static const struct {
	int code;
	const char *reason, *text;
} parse_refusals[] = {
	[ADMIN_HTTP_ERR_MALFORMED] = { 400, "Bad Request", "bad request" },
	[ADMIN_HTTP_ERR_HEAD_TOO_LARGE] = { 431, "Request Header Fields Too Large",
					    "headers too large" },
	[ADMIN_HTTP_ERR_LENGTH_REQUIRED] = { 411, "Length Required", "send Content-Length" },
	[ADMIN_HTTP_ERR_BODY_TOO_LARGE] = { 413, "Content Too Large", "body too large" },
};

/* Answer the request once it has all arrived; a bad one at once. */
static void admin_process(struct admin_client *a)
{
	struct admin_http_req r;
	size_t used;

	switch (admin_http_parse(dbuf_data(&a->in), dbuf_used(&a->in), &r, &used)) {
	case ADMIN_HTTP_AGAIN:
		return;
	case ADMIN_HTTP_INVALID:
		BUG_ON(!r.error || r.error >= sizeof(parse_refusals) / sizeof(parse_refusals[0]));
		respond_text(a, parse_refusals[r.error].code, parse_refusals[r.error].reason,
			     parse_refusals[r.error].text);
		return;
	case ADMIN_HTTP_OK:
		handle(a, &r);
		return;
	}
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
	if (dbuf_append(&a->in, p, len, ADMIN_IN_MAX) < 0) {
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

void admin_accept(struct lsock *ls, int fd)
{
	struct worker *w = ls->w;
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
