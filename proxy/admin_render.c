/* admin_render.c - what the admin server answers GET /metrics (Prometheus
 * text format, one table row per metric family) and GET /status (JSON)
 * with: the current runtime's listeners, pools and backends, whose
 * counters live for the process (runtime.c).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"
#include "proxy/smtp_parse.h"

/* ---- output ---- */

void admin_out(struct dbuf *b, const char *fmt, ...)
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
			admin_out(b, "\\%c", *s);
		else if (*s == '\n')
			admin_out(b, "\\n");
		else if ((unsigned char)*s < 0x20)
			admin_out(b, "\\u%04x", (unsigned char)*s);
		else
			dbuf_append(b, s, 1, 64u << 20);
	}
}

/* ---- /metrics: one row per metric family ---- */

/*
 * A family's samples are one per listener or one per pool backend (which
 * getter is set says which), times its variants: the values of `label`
 * that variant(i) gives for i = 0, 1, ... until NULL. A family without a
 * label has one sample each. Families, listeners and backends come out in
 * table and configuration order.
 */
struct metric {
	const char *name, *type, *help;
	const char *label;
	const char *(*variant)(size_t i);
	uint64_t (*of_listener)(const struct listener_stats *st, size_t variant);
	uint64_t (*of_backend)(const struct backend_rt *st, size_t variant);
	const struct hist *(*histogram)(const struct listener_stats *st);
};

static const char *by_result(size_t i)
{
	return i < R_COUNT ? session_result_name((enum session_result)i) : NULL;
}

static const char *by_direction(size_t i)
{
	return i == 0 ? "in" : i == 1 ? "out" : NULL;
}

static const char *by_tls_version(size_t i)
{
	return i == 0 ? "TLSv1.2" : i == 1 ? "TLSv1.3" : NULL;
}

static const char *by_check_result(size_t i)
{
	return i == 0 ? "ok" : i == 1 ? "failed" : NULL;
}

static uint64_t l_sessions(const struct listener_stats *st, size_t v)
{
	return atomic_load(&st->sessions[v]);
}

static uint64_t l_active(const struct listener_stats *st, size_t v)
{
	(void)v;
	return atomic_load(&st->active);
}

static uint64_t l_bytes(const struct listener_stats *st, size_t v)
{
	return atomic_load(v ? &st->bytes_out : &st->bytes_in);
}

static uint64_t l_tls(const struct listener_stats *st, size_t v)
{
	return atomic_load(v ? &st->tls13 : &st->tls12);
}

static uint64_t l_tls_failures(const struct listener_stats *st, size_t v)
{
	(void)v;
	return atomic_load(&st->tls_failures);
}

static uint64_t l_discarded(const struct listener_stats *st, size_t v)
{
	(void)v;
	return atomic_load(&st->starttls_discarded);
}

static const struct hist *l_duration(const struct listener_stats *st)
{
	return &st->duration;
}

static const struct hist *l_route(const struct listener_stats *st)
{
	return &st->route;
}

static uint64_t b_up(const struct backend_rt *st, size_t v)
{
	(void)v;
	return atomic_load(&st->up) ? 1 : 0;
}

static uint64_t b_active(const struct backend_rt *st, size_t v)
{
	(void)v;
	return atomic_load(&st->active);
}

static uint64_t b_total(const struct backend_rt *st, size_t v)
{
	(void)v;
	return atomic_load(&st->total);
}

static uint64_t b_connect_failures(const struct backend_rt *st, size_t v)
{
	(void)v;
	return atomic_load(&st->connect_failures);
}

static uint64_t b_checks(const struct backend_rt *st, size_t v)
{
	return atomic_load(v ? &st->checks_failed : &st->checks_ok);
}

static const struct metric metrics[] = {
	{ "mxlb_sessions_total", "counter", "Sessions ended, by listener and result.", "result",
	  by_result, .of_listener = l_sessions },
	{ "mxlb_sessions_active", "gauge", "Sessions open now.", .of_listener = l_active },
	{ "mxlb_bytes_total", "counter",
	  "Bytes relayed: in is client to backend, out is backend to client.", "direction",
	  by_direction, .of_listener = l_bytes },
	{ "mxlb_tls_handshakes_total", "counter", "TLS handshakes, by version.", "version",
	  by_tls_version, .of_listener = l_tls },
	{ "mxlb_tls_handshake_failures_total", "counter",
	  "Failed TLS handshakes (errors, timeouts, not a ClientHello).",
	  .of_listener = l_tls_failures },
	{ "mxlb_starttls_discarded_bytes_total", "counter",
	  "Plaintext a client sent after STARTTLS, discarded.", .of_listener = l_discarded },
	{ "mxlb_session_duration_seconds", "histogram", "Session length.",
	  .histogram = l_duration },
	{ "mxlb_route_seconds", "histogram",
	  "From accept to relaying (greeting, EHLO, backend dialogue).", .histogram = l_route },
	{ "mxlb_backend_up", "gauge", "1 when the backend is up.", .of_backend = b_up },
	{ "mxlb_backend_sessions_active", "gauge", "Sessions open on the backend.",
	  .of_backend = b_active },
	{ "mxlb_backend_sessions_total", "counter", "Sessions sent to the backend.",
	  .of_backend = b_total },
	{ "mxlb_backend_connect_failures_total", "counter",
	  "Backend attempts that failed before relaying.", .of_backend = b_connect_failures },
	{ "mxlb_health_checks_total", "counter", "Health checks, by result.", "result",
	  by_check_result, .of_backend = b_checks },
};

/* Whose sample it is: a listener, or a pool's backend. */
struct metric_of {
	const struct cfg_listener *l;
	const struct pool_rt *p;
	const struct pool_backend *be;
};

/* "name[suffix]{listener=\"L\"" or "...{pool=\"P\",backend=\"B\"": the
 * caller adds any further label and the closing brace. */
static void out_labels(struct dbuf *b, const char *name, const char *suffix,
		       const struct metric_of *of)
{
	admin_out(b, "%s%s{", name, suffix);
	if (of->l) {
		admin_out(b, "listener=\"");
		out_str(b, of->l->name);
	} else {
		admin_out(b, "pool=\"");
		out_str(b, of->p->cfg->name);
		admin_out(b, "\",backend=\"");
		out_str(b, of->be->cfg->name);
	}
	admin_out(b, "\"");
}

static void out_hist(struct dbuf *b, const char *name, const struct metric_of *of,
		     const struct hist *h)
{
	unsigned long cum = 0;

	for (size_t i = 0; i <= HIST_BUCKETS; i++) {
		cum += atomic_load(&h->count[i]);
		out_labels(b, name, "_bucket", of);
		if (i < HIST_BUCKETS)
			admin_out(b, ",le=\"%g\"} %lu\n", hist_bounds[i], cum);
		else
			admin_out(b, ",le=\"+Inf\"} %lu\n", cum);
	}
	out_labels(b, name, "_sum", of);
	admin_out(b, "} %.6f\n", (double)atomic_load(&h->sum_usec) / 1e6);
	out_labels(b, name, "_count", of);
	admin_out(b, "} %lu\n", cum);
}

static size_t variants(const struct metric *m)
{
	size_t n = 0;

	if (!m->variant)
		return 1;
	while (m->variant(n))
		n++;
	return n;
}

/* Every sample of family m for one listener (st) or backend (bst). */
static void out_samples(struct dbuf *b, const struct metric *m, const struct metric_of *of,
			const struct listener_stats *st, const struct backend_rt *bst)
{
	if (m->histogram) {
		out_hist(b, m->name, of, m->histogram(st));
		return;
	}
	for (size_t v = 0, n = variants(m); v < n; v++) {
		out_labels(b, m->name, "", of);
		if (m->variant)
			admin_out(b, ",%s=\"%s\"", m->label, m->variant(v));
		admin_out(b, "} %" PRIu64 "\n", st ? m->of_listener(st, v) : m->of_backend(bst, v));
	}
}

void admin_render_metrics(struct dbuf *b)
{
	const struct runtime *rt = mxlb_rt;

	for (const struct metric *m = metrics; m < metrics + sizeof(metrics) / sizeof(metrics[0]);
	     m++) {
		admin_out(b, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, m->type);
		if (m->of_backend) {
			for (size_t i = 0; i < rt->cfg->npools; i++)
				for (size_t j = 0; j < rt->pools[i].nbackends; j++) {
					const struct pool_backend *be = &rt->pools[i].backends[j];
					struct metric_of of = { .p = &rt->pools[i], .be = be };

					out_samples(b, m, &of, NULL, be->st);
				}
			continue;
		}
		for (size_t i = 0; i < rt->cfg->nlisteners; i++) {
			struct metric_of of = { .l = &rt->cfg->listeners[i] };

			out_samples(b, m, &of, rt->lstats[i], NULL);
		}
	}
}

const char *admin_backend_state(struct backend_rt *be)
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

void admin_render_status(struct dbuf *b)
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

	admin_out(b, "{\"hostname\":\"");
	out_str(b, cfg->server.hostname);
	admin_out(b, "\",\"sessions\":%u,\"pools\":[", atomic_load(&mxlb_sessions));
	for (size_t i = 0; i < cfg->npools; i++) {
		struct pool_rt *p = &mxlb_rt->pools[i];

		admin_out(b, "%s{\"name\":\"", i ? "," : "");
		out_str(b, p->cfg->name);
		admin_out(b, "\",\"balance\":\"%s\",\"backends\":[", p->lb->name);
		for (size_t j = 0; j < p->nbackends; j++) {
			struct backend_rt *be = p->backends[j].st;
			unsigned c = atomic_load(&be->caps);
			bool first = true;

			admin_out(b, "%s{\"name\":\"", j ? "," : "");
			out_str(b, p->backends[j].cfg->name);
			admin_out(b, "\",\"address\":\"");
			out_str(b, p->backends[j].cfg->address.text);
			admin_out(
				b,
				"\",\"state\":\"%s\",\"weight\":%u,\"active\":%u,\"sessions\":%lu,"
				"\"connect_failures\":%lu,",
				admin_backend_state(be), backend_weight(be),
				atomic_load(&be->active), atomic_load(&be->total),
				atomic_load(&be->connect_failures));
			if (atomic_load(&be->last_check_ms))
				admin_out(b, "\"last_check\":{\"ok\":%s,\"time_ms\":%lu},",
					  atomic_load(&be->last_check_ok) ? "true" : "false",
					  atomic_load(&be->last_check_ms));
			else
				admin_out(b, "\"last_check\":null,");
			admin_out(b, "\"capabilities\":[");
			for (size_t k = 0; k < sizeof(caps) / sizeof(caps[0]); k++)
				if (c & caps[k].bit) {
					admin_out(b, "%s\"%s\"", first ? "" : ",", caps[k].name);
					first = false;
				}
			admin_out(b, "],\"size\":%lu}", atomic_load(&be->size_max));
		}
		admin_out(b, "]}");
	}
	admin_out(b, "]}\n");
}
