/* admin_render.c - what the admin server answers GET /metrics (Prometheus
 * text format, one table row per metric family) and GET /status (JSON)
 * with: the process, the current runtime's listeners, pools and backends,
 * whose counters live for the process (runtime.c). The HTML page is
 * admin_page.c's.
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
 * A family's samples are one per listener, one per pool backend or one
 * for the process (which getter is set says which), times its variants:
 * the values of `label` that variant(i) gives for i = 0, 1, ... until
 * NULL. A family without a label has one sample each. Families,
 * listeners and backends come out in table and configuration order.
 */
struct metric {
	const char *name, *type, *help;
	const char *label;
	const char *(*variant)(size_t i);
	uint64_t (*of_listener)(const struct listener_stats *st, size_t variant);
	uint64_t (*of_backend)(const struct backend_rt *st, size_t variant);
	const struct hist *(*histogram)(const struct listener_stats *st);
	uint64_t (*of_process)(size_t variant);
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

static const char *by_reject_reason(size_t i)
{
	return i < REJ_COUNT ? reject_reason_name((enum reject_reason)i) : NULL;
}

/* ADMIN_* in order */
static const char *by_admin_state(size_t i)
{
	static const char *const names[] = { "enabled", "drain", "disabled" };

	return i < 3 ? names[i] : NULL;
}

static const char *by_version(size_t i)
{
	return i == 0 ? MXLB_VERSION : NULL;
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

static uint64_t l_rejections(const struct listener_stats *st, size_t v)
{
	return atomic_load(&st->rejections[v]);
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

static uint64_t b_reused(const struct backend_rt *st, size_t v)
{
	(void)v;
	return atomic_load(&st->reused);
}

static uint64_t b_idle(const struct backend_rt *st, size_t v)
{
	(void)v;
	return atomic_load(&st->idle);
}

static uint64_t b_checks(const struct backend_rt *st, size_t v)
{
	return atomic_load(v ? &st->checks_failed : &st->checks_ok);
}

static uint64_t b_weight(const struct backend_rt *st, size_t v)
{
	(void)v;
	return atomic_load(&st->weight);
}

static uint64_t b_admin_state(const struct backend_rt *st, size_t v)
{
	return (size_t)atomic_load(&st->admin) == v;
}

static uint64_t p_build_info(size_t v)
{
	(void)v;
	return 1;
}

static uint64_t p_reloads(size_t v)
{
	return stats_reloads(v == 0);
}

static uint64_t p_config_loaded(size_t v)
{
	(void)v;
	return stats_config_loaded_ms() / 1000;
}

static uint64_t p_splice_bytes(size_t v)
{
	(void)v;
	return relay_splice_bytes();
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
	{ "mxlb_limit_rejects_total", "counter",
	  "Clients turned away by a limit: connection_rate, max_sessions_per_client, max_sessions.",
	  "limit", limit_kind_name, .of_listener = limit_rejects_of },
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
	{ "mxlb_backend_reused_total", "counter",
	  "Sessions relayed over a parked backend connection instead of a new one (reuse).",
	  .of_backend = b_reused },
	{ "mxlb_backend_idle", "gauge", "Parked backend connections, all workers (reuse).",
	  .of_backend = b_idle },
	{ "mxlb_health_checks_total", "counter", "Health checks, by result.", "result",
	  by_check_result, .of_backend = b_checks },
	{ "mxlb_backend_weight", "gauge", "The backend's weight now (an admin may have set it).",
	  .of_backend = b_weight },
	{ "mxlb_backend_admin_state", "gauge",
	  "1 for the admin state the backend is in (enabled, drain, disabled).", "state",
	  by_admin_state, .of_backend = b_admin_state },
	{ "mxlb_rejections_total", "counter",
	  "Clients mxlb refused itself, by reason (require_tls counts commands).", "reason",
	  by_reject_reason, .of_listener = l_rejections },
	{ "mxlb_screen_total", "counter",
	  "Clients screened (listeners[].screen), by result: pass, cached, allow, deny, pregreet, "
	  "dnsbl.",
	  "result", screen_result_name, .of_listener = screen_stats_count },
	{ "mxlb_relay_splice_bytes_total", "counter",
	  "Bytes of mxlb_bytes_total that moved by splice (relay: splice), both directions.",
	  .of_process = p_splice_bytes },
	{ "mxlb_build_info", "gauge", "Always 1; the version in a label.", "version", by_version,
	  .of_process = p_build_info },
	{ "mxlb_reloads_total", "counter", "Configuration reloads (SIGHUP), by result.", "result",
	  by_check_result, .of_process = p_reloads },
	{ "mxlb_config_last_reload_success_timestamp_seconds", "gauge",
	  "When the configuration in force was loaded (the start until a reload succeeds).",
	  .of_process = p_config_loaded },
};

/* Whose sample it is: a listener, a pool's backend, or (neither) the
 * process. */
struct metric_of {
	const struct cfg_listener *l;
	const struct pool_rt *p;
	const struct pool_backend *be;
};

/* "name[suffix]{listener=\"L\"", "...{pool=\"P\",backend=\"B\"", then
 * label="value" when label is set, the closing brace and a space; a
 * process sample without a label is "name[suffix] ". The caller adds the
 * value. */
static void out_series(struct dbuf *b, const char *name, const char *suffix,
		       const struct metric_of *of, const char *label, const char *value)
{
	const char *sep = "";

	admin_out(b, "%s%s", name, suffix);
	if (!of->l && !of->p && !label) {
		admin_out(b, " ");
		return;
	}
	admin_out(b, "{");
	if (of->l) {
		admin_out(b, "listener=\"");
		out_str(b, of->l->name);
		admin_out(b, "\"");
		sep = ",";
	} else if (of->p) {
		admin_out(b, "pool=\"");
		out_str(b, of->p->cfg->name);
		admin_out(b, "\",backend=\"");
		out_str(b, of->be->cfg->name);
		admin_out(b, "\"");
		sep = ",";
	}
	if (label) {
		admin_out(b, "%s%s=\"", sep, label);
		out_str(b, value);
		admin_out(b, "\"");
	}
	admin_out(b, "} ");
}

static void out_hist(struct dbuf *b, const char *name, const struct metric_of *of,
		     const struct hist *h)
{
	unsigned long cum = 0;
	char le[32];

	for (size_t i = 0; i <= HIST_BUCKETS; i++) {
		cum += atomic_load(&h->count[i]);
		if (i < HIST_BUCKETS)
			snprintf(le, sizeof(le), "%g", hist_bounds[i]);
		else
			snprintf(le, sizeof(le), "+Inf");
		out_series(b, name, "_bucket", of, "le", le);
		admin_out(b, "%lu\n", cum);
	}
	out_series(b, name, "_sum", of, NULL, NULL);
	admin_out(b, "%.6f\n", (double)atomic_load(&h->sum_usec) / 1e6);
	out_series(b, name, "_count", of, NULL, NULL);
	admin_out(b, "%lu\n", cum);
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

/* Every sample of family m for one listener (st), backend (bst) or,
 * with neither, the process. */
static void out_samples(struct dbuf *b, const struct metric *m, const struct metric_of *of,
			const struct listener_stats *st, const struct backend_rt *bst)
{
	if (m->histogram) {
		out_hist(b, m->name, of, m->histogram(st));
		return;
	}
	for (size_t v = 0, n = variants(m); v < n; v++) {
		out_series(b, m->name, "", of, m->variant ? m->label : NULL,
			   m->variant ? m->variant(v) : NULL);
		admin_out(b, "%" PRIu64 "\n",
			  st	? m->of_listener(st, v)
			  : bst ? m->of_backend(bst, v)
				: m->of_process(v));
	}
}

void admin_render_metrics(struct dbuf *b)
{
	const struct runtime *rt = mxlb_rt;

	for (const struct metric *m = metrics; m < metrics + sizeof(metrics) / sizeof(metrics[0]);
	     m++) {
		admin_out(b, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, m->type);
		if (m->of_process) {
			struct metric_of of = { 0 };

			out_samples(b, m, &of, NULL, NULL);
			continue;
		}
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

const struct admin_cap admin_caps[] = {
	{ SMTP_EXT_STARTTLS, "STARTTLS" }, { SMTP_EXT_XCLIENT, "XCLIENT" },
	{ SMTP_EXT_XFORWARD, "XFORWARD" }, { SMTP_EXT_PIPELINING, "PIPELINING" },
	{ SMTP_EXT_CHUNKING, "CHUNKING" }, { SMTP_EXT_AUTH, "AUTH" },
	{ SMTP_EXT_8BITMIME, "8BITMIME" }, { SMTP_EXT_ENHANCEDSTATUSCODES, "ENHANCEDSTATUSCODES" },
	{ SMTP_EXT_SMTPUTF8, "SMTPUTF8" }, { SMTP_EXT_SIZE, "SIZE" },
};
const size_t admin_ncaps = sizeof(admin_caps) / sizeof(admin_caps[0]);

/* ---- /status ---- */

static void json_str(struct dbuf *b, const char *key, const char *v)
{
	admin_out(b, "\"%s\":\"", key);
	out_str(b, v);
	admin_out(b, "\"");
}

/* A wall-clock time in ms, or null for 0 (never). */
static void json_time(struct dbuf *b, const char *key, uint64_t ms)
{
	if (ms)
		admin_out(b, "\"%s\":%" PRIu64, key, ms);
	else
		admin_out(b, "\"%s\":null", key);
}

static void status_listener(struct dbuf *b, const struct cfg_listener *l,
			    const struct listener_stats *st)
{
	admin_out(b, "{");
	json_str(b, "name", l->name);
	admin_out(b, ",\"addresses\":[");
	for (size_t k = 0; k < l->nlisten; k++) {
		admin_out(b, "%s\"", k ? "," : "");
		out_str(b, l->listen[k].text);
		admin_out(b, "\"");
	}
	admin_out(b, "],");
	json_str(b, "pool", l->pool->name);
	admin_out(b, ",\"active\":%u,\"total\":%" PRIu64 ",\"refused\":%" PRIu64 "}",
		  atomic_load(&st->active), listener_stats_total(st), listener_stats_refused(st));
}

/* last_check is kept as it was ({ok, time_ms}, or null before the first);
 * its reason is null when it passed. last_failure stays after checks
 * pass again, so an operator can see why a backend that is up now went
 * down. */
static void status_checks(struct dbuf *b, struct backend_rt *be)
{
	bool ok = atomic_load(&be->last_check_ok);

	if (atomic_load(&be->last_check_ms)) {
		admin_out(b, "\"last_check\":{\"ok\":%s,\"time_ms\":%lu,", ok ? "true" : "false",
			  atomic_load(&be->last_check_ms));
		if (ok)
			admin_out(b, "\"reason\":null},");
		else {
			json_str(b, "reason", be->last_failure);
			admin_out(b, "},");
		}
	} else {
		admin_out(b, "\"last_check\":null,");
	}
	if (atomic_load(&be->last_failure_ms)) {
		admin_out(b, "\"last_failure\":{");
		json_str(b, "reason", be->last_failure);
		admin_out(b, ",\"time_ms\":%lu},", atomic_load(&be->last_failure_ms));
	} else {
		admin_out(b, "\"last_failure\":null,");
	}
	json_time(b, "state_changed_ms", atomic_load(&be->state_change_ms));
	admin_out(b, ",");
}

/* "sessions" is the total and "active" the open ones, as they always
 * were; sessions_total and sessions_active say so by name. */
static void status_backend(struct dbuf *b, const struct pool_backend *pb)
{
	static const char *const admin_names[] = { "enabled", "drain", "disabled" };
	struct backend_rt *be = pb->st;
	unsigned c = atomic_load(&be->caps), active = atomic_load(&be->active);
	unsigned long total = atomic_load(&be->total);
	int admin = atomic_load(&be->admin);
	bool first = true;

	admin_out(b, "{");
	json_str(b, "name", pb->cfg->name);
	admin_out(b, ",");
	json_str(b, "address", pb->cfg->address.text);
	admin_out(b,
		  ",\"state\":\"%s\",\"up\":%s,\"admin\":\"%s\",\"weight\":%u,\"active\":%u,"
		  "\"sessions\":%lu,\"sessions_active\":%u,\"sessions_total\":%lu,\"idle\":%u,"
		  "\"connect_failures\":%lu,",
		  admin_backend_state(be), atomic_load(&be->up) ? "true" : "false",
		  admin >= 0 && admin <= ADMIN_DISABLED ? admin_names[admin] : "?",
		  backend_weight(be), active, total, active, total, atomic_load(&be->idle),
		  atomic_load(&be->connect_failures));
	status_checks(b, be);
	admin_out(b, "\"capabilities\":[");
	for (size_t k = 0; k < admin_ncaps; k++)
		if (c & admin_caps[k].bit) {
			admin_out(b, "%s\"%s\"", first ? "" : ",", admin_caps[k].name);
			first = false;
		}
	admin_out(b, "],\"size\":%lu}", atomic_load(&be->size_max));
}

static const char *check_name(enum cfg_check c)
{
	switch (c) {
	case CFG_CHECK_SMTP:
		return "smtp";
	case CFG_CHECK_TCP:
		return "tcp";
	case CFG_CHECK_NONE:
		break;
	}
	return "none";
}

void admin_render_status(struct dbuf *b, const struct admin_access *acc)
{
	const struct runtime *rt = mxlb_rt;
	const struct config *cfg = rt->cfg;
	unsigned active = atomic_load(&mxlb_sessions);

	/* "sessions" (open now) is kept for the scripts that read it */
	admin_out(b, "{");
	json_str(b, "hostname", cfg->server.hostname);
	admin_out(b, ",");
	json_str(b, "version", MXLB_VERSION);
	admin_out(b,
		  ",\"start_time_ms\":%" PRIu64 ",\"uptime_seconds\":%" PRIu64
		  ",\"config_loaded_ms\":%" PRIu64 ",\"reloads\":{\"ok\":%" PRIu64
		  ",\"failed\":%" PRIu64 "},\"sessions\":%u,\"sessions_active\":%u,"
		  "\"actions\":%s,\"token_required\":%s,\"listeners\":[",
		  stats_start_ms(), stats_uptime_ms() / 1000, stats_config_loaded_ms(),
		  stats_reloads(true), stats_reloads(false), active, active,
		  acc->actions ? "true" : "false", acc->token ? "true" : "false");
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		if (i)
			admin_out(b, ",");
		status_listener(b, &cfg->listeners[i], rt->lstats[i]);
	}
	admin_out(b, "],\"pools\":[");
	for (size_t i = 0; i < cfg->npools; i++) {
		struct pool_rt *p = &rt->pools[i];

		admin_out(b, "%s{", i ? "," : "");
		json_str(b, "name", p->cfg->name);
		admin_out(b, ",\"balance\":\"%s\",\"check\":\"%s\",\"backends\":[", p->lb->name,
			  check_name(p->cfg->health.check));
		for (size_t j = 0; j < p->nbackends; j++) {
			if (j)
				admin_out(b, ",");
			status_backend(b, &p->backends[j]);
		}
		admin_out(b, "]}");
	}
	admin_out(b, "]}\n");
}
