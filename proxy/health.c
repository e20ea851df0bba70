/* health.c - health checks (SPEC §5). They run on one worker's ring and
 * publish only: up/down and when it last changed, the capabilities a
 * backend advertised, counters, and why the last check failed in a few
 * words ("connect refused", "greeting answered 554", "timeout reading
 * greeting") for /status and the page.
 *
 * smtp: connect (a PROXY LOCAL/UNKNOWN header where the backend's handoff
 * needs one; the TLS handshake first for implicit TLS), expect 220, EHLO,
 * expect 250 (for STARTTLS: STARTTLS offered, 220, the handshake, EHLO
 * again) and record its capabilities, QUIT, expect 221. A certificate that
 * does not verify fails the check as it fails sessions. tcp: connect only. none: no checks, always up.
 * A check that fails after the greeting still says QUIT before closing, so
 * it never leaves a half-open session on the backend.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "proxy/proxy.h"
#include "proxy/proxy_proto.h"
#include "proxy/smtp_parse.h"
#include "tls/conn_tls.h"

enum hc_step { HC_IDLE, HC_CONNECT, HC_TLS, HC_GREETING, HC_EHLO, HC_STARTTLS, HC_QUIT };

struct hcheck {
	struct timer timer; /* next check, or this check's timeout */
	struct worker *w;
	struct runtime *rt;
	struct pool_rt *p;
	size_t i;
	struct conn *c;
	enum hc_step step;
	bool tls_on;
	struct dbuf in;
	unsigned ok_run, fail_run;
	unsigned caps;
	uint64_t size;
};

static struct hcheck **checks;
static size_t nchecks;

static const char *const step_names[] = {
	[HC_IDLE] = "idle",
	[HC_CONNECT] = "connecting",
	[HC_TLS] = "TLS handshake",
	[HC_GREETING] = "reading greeting",
	[HC_EHLO] = "reading EHLO reply",
	[HC_STARTTLS] = "reading STARTTLS reply",
	[HC_QUIT] = "reading QUIT reply",
};

static struct hcheck *hc_of_timer(struct timer *t)
{
	return (struct hcheck *)((char *)t - offsetof(struct hcheck, timer));
}

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void hc_timer(struct timer *t);

static void log_state(struct hcheck *hc, bool up, const char *why)
{
	struct logline ll;

	if (!log_begin(&ll, up ? LOG_INFO : LOG_WARN, "backend_state"))
		return;
	log_kv_str(&ll, "pool", hc->p->cfg->name);
	log_kv_str(&ll, "backend", hc->p->backends[hc->i].cfg->name);
	log_kv_str(&ll, "state", up ? "up" : "down");
	log_kv_str(&ll, "reason", why);
	log_end(&ll);
}

/* One check's outcome (and the real sessions' failures since the last).
 * A failure's why is kept for /status and the page: the admin server
 * reads it on this same worker. */
static void hc_result(struct hcheck *hc, bool ok, const char *why)
{
	const struct cfg_backend *c = hc->p->backends[hc->i].cfg;
	struct backend_rt *b = hc->p->backends[hc->i].st;
	const struct cfg_health *h = &hc->p->cfg->health;
	unsigned passive = atomic_exchange(&b->passive_failures, 0);
	bool up = atomic_load(&b->up);
	uint64_t now = wall_ms();

	atomic_fetch_add(ok ? &b->checks_ok : &b->checks_failed, 1);
	atomic_store(&b->last_check_ms, now);
	atomic_store(&b->last_check_ok, ok);
	if (!ok) {
		snprintf(b->last_failure, sizeof(b->last_failure), "%s", why);
		atomic_store(&b->last_failure_ms, now);
	}
	if (passive) {
		hc->fail_run += passive;
		hc->ok_run = 0;
	}
	if (ok) {
		hc->ok_run++;
		hc->fail_run = 0;
		atomic_store(&b->caps, hc->caps);
		atomic_store(&b->size_max, hc->size);
	} else {
		hc->fail_run++;
		hc->ok_run = 0;
	}
	if (up && hc->fail_run >= h->fall) {
		const char *reason = ok ? "failed sessions" : why;
		bool any_up = false;

		atomic_store(&b->up, false);
		atomic_store(&b->state_change_ms, now);
		if (ok) { /* the sessions failed, not this check: say so */
			snprintf(b->last_failure, sizeof(b->last_failure), "%s", reason);
			atomic_store(&b->last_failure_ms, now);
		}
		log_state(hc, false, reason);
		alerts_event(CFG_EV_BACKEND_DOWN, hc->p->cfg->name, c->name, reason);
		for (size_t i = 0; i < hc->p->nbackends; i++)
			any_up |= atomic_load(&hc->p->backends[i].st->up);
		if (!any_up) {
			log_warn("pool_down", "pool %s: no backend is up", hc->p->cfg->name);
			alerts_event(CFG_EV_POOL_DOWN, hc->p->cfg->name, NULL,
				     "every backend is down");
		}
	} else if (!up && hc->ok_run >= h->rise) {
		atomic_store(&b->up, true);
		atomic_store(&b->state_change_ms, now);
		log_state(hc, true, "checks passed");
		alerts_event(CFG_EV_BACKEND_UP, hc->p->cfg->name, c->name, "checks passed");
	}
	if (!ok)
		log_debug("health", "%s/%s: %s: %s", hc->p->cfg->name, c->name,
			  step_names[hc->step], why);
}

/* End the check in progress and schedule the next one. */
/* In the SMTP dialogue of a check (past connect and TLS). */
static bool hc_talking(const struct hcheck *hc)
{
	return hc->step == HC_GREETING || hc->step == HC_EHLO || hc->step == HC_STARTTLS ||
	       hc->step == HC_QUIT;
}

static void hc_finish(struct hcheck *hc, bool ok, const char *why)
{
	if (hc->c) {
		if (!ok && hc_talking(hc) && hc->step != HC_QUIT) {
			conn_send_copy(hc->c, "QUIT\r\n", 6);
			conn_close_after_flush(hc->c, hc->p->cfg->health.timeout);
		} else {
			conn_close(hc->c);
		}
		hc->c = NULL;
	}
	hc_result(hc, ok, why);
	dbuf_free(&hc->in);
	hc->step = HC_IDLE;
	timer_set(&hc->w->wheel, &hc->timer, hc->p->cfg->health.interval, hc_timer);
}

static void hc_send(struct hcheck *hc, const char *line)
{
	conn_send_copy(hc->c, line, strlen(line));
}

static void hc_start_tls(struct hcheck *hc)
{
	const struct cfg_backend *b = hc->p->backends[hc->i].cfg;
	struct conn_tls *t = conn_tls_client(runtime_tls(hc->rt, b->tls_context), b->address.host);

	if (!t) {
		hc_finish(hc, false, "out of memory");
		return;
	}
	hc->step = HC_TLS;
	conn_tls_start(hc->c, t, NULL, 0);
}

static void hc_ehlo(struct hcheck *hc)
{
	char line[300];

	snprintf(line, sizeof(line), "EHLO %s\r\n", hc->p->cfg->health.ehlo);
	hc_send(hc, line);
	hc->step = HC_EHLO;
}

/* What the reply to the step in progress must be. */
static const struct smtp_expect *hc_expect(const struct hcheck *hc, const struct cfg_backend *b)
{
	switch (hc->step) {
	case HC_GREETING:
		return &smtp_expect_greeting;
	case HC_EHLO:
		return b->tls == CFG_TLS_STARTTLS && !hc->tls_on ? &smtp_expect_ehlo_starttls
								 : &smtp_expect_ehlo;
	case HC_STARTTLS:
		return &smtp_expect_starttls;
	default:
		return &smtp_expect_quit;
	}
}

static void hc_process(struct hcheck *hc)
{
	const struct cfg_backend *b = hc->p->backends[hc->i].cfg;
	char why[64];
	size_t len;
	int code;

	while (hc_talking(hc) && dbuf_used(&hc->in)) {
		switch (smtp_parse_reply(dbuf_data(&hc->in), dbuf_used(&hc->in), &code, &len)) {
		case SMTP_AGAIN:
			return;
		case SMTP_INVALID:
			hc_finish(hc, false, "malformed reply");
			return;
		case SMTP_OK:
			break;
		}
		/* the steps a session's backend dialogue has too (smtp_parse.h) */
		if (smtp_expect_check(hc_expect(hc, b), code, dbuf_data(&hc->in), len, why,
				      sizeof(why))) {
			hc_finish(hc, false, why);
			return;
		}
		switch (hc->step) {
		case HC_GREETING:
			hc_ehlo(hc);
			break;
		case HC_EHLO:
			if (b->tls == CFG_TLS_STARTTLS && !hc->tls_on) {
				hc_send(hc, "STARTTLS\r\n");
				hc->step = HC_STARTTLS;
				break;
			}
			hc->caps = smtp_ehlo_extensions(dbuf_data(&hc->in), len);
			hc->size = smtp_ehlo_size(dbuf_data(&hc->in), len);
			hc_send(hc, "QUIT\r\n");
			hc->step = HC_QUIT;
			break;
		case HC_STARTTLS:
			dbuf_consume(&hc->in, len);
			if (dbuf_used(&hc->in)) {
				hc_finish(hc, false, "bytes after the STARTTLS reply");
				return;
			}
			hc_start_tls(hc);
			return;
		case HC_QUIT:
			hc_finish(hc, true, "ok");
			return;
		default:
			return;
		}
		dbuf_consume(&hc->in, len);
	}
}

static bool hc_data(struct conn *c, char *p, size_t len, uint16_t bid)
{
	struct hcheck *hc = c->owner;

	(void)bid;
	if (dbuf_append(&hc->in, p, len, BACK_IN_MAX) < 0)
		hc_finish(hc, false, "reply too long");
	else
		hc_process(hc);
	return false;
}

static void hc_eof(struct conn *c)
{
	struct hcheck *hc = c->owner;
	char why[64];

	snprintf(why, sizeof(why), "closed %s", step_names[hc->step]);
	hc_finish(hc, false, why);
}

static void hc_error(struct conn *c, int err)
{
	struct hcheck *hc = c->owner;
	char why[64];

	snprintf(why, sizeof(why), "%s %s", err < 0 ? strerror(-err) : "error",
		 step_names[hc->step]);
	hc_finish(hc, false, why);
}

/* A failed connect in the few words /status shows: "connect refused". */
static void connect_reason(int err, char *why, size_t len)
{
	switch (-err) {
	case ECONNREFUSED:
		snprintf(why, len, "connect refused");
		break;
	case ETIMEDOUT:
	case ECANCELED: /* the linked timeout cancelled it */
		snprintf(why, len, "connect timeout");
		break;
	case EHOSTUNREACH:
	case ENETUNREACH:
		snprintf(why, len, "connect: unreachable");
		break;
	default:
		snprintf(why, len, "connect: %s", strerror(-err));
		break;
	}
}

static void hc_connected(struct conn *c, int err)
{
	struct hcheck *hc = c->owner;
	char why[64];

	if (err < 0) {
		connect_reason(err, why, sizeof(why));
		hc_finish(hc, false, why);
		return;
	}
	if (hc->p->cfg->health.check == CFG_CHECK_TCP) {
		hc_finish(hc, true, "ok");
		return;
	}
	if (hc->p->backends[hc->i].cfg->tls == CFG_TLS_IMPLICIT) {
		hc_start_tls(hc);
		return;
	}
	hc->step = HC_GREETING;
}

static void hc_handshake(struct conn *c, int err)
{
	struct hcheck *hc = c->owner;
	char why[160];

	if (err < 0) {
		snprintf(why, sizeof(why), "TLS: %s", conn_tls_error(c));
		hc_finish(hc, false, why);
		return;
	}
	hc->tls_on = true;
	if (hc->p->backends[hc->i].cfg->tls == CFG_TLS_IMPLICIT)
		hc->step = HC_GREETING;
	else
		hc_ehlo(hc);
}

static const struct conn_handler hc_handler = {
	.data = hc_data,
	.eof = hc_eof,
	.error = hc_error,
	.connected = hc_connected,
	.handshake = hc_handshake,
};

static void hc_begin(struct hcheck *hc)
{
	const struct cfg_backend *b = hc->p->backends[hc->i].cfg;
	const struct cfg_health *h = &hc->p->cfg->health;
	uint8_t hdr[PROXY_V2_MAX];
	size_t n = 0;
	int err;

	hc->c = conn_new(hc->w, -1, &hc_handler, hc);
	if (!hc->c) {
		timer_set(&hc->w->wheel, &hc->timer, h->interval, hc_timer);
		return;
	}
	hc->step = HC_CONNECT;
	hc->tls_on = false;
	hc->caps = 0;
	hc->size = 0;
	/* the check's whole budget, connect included */
	timer_set(&hc->w->wheel, &hc->timer, h->timeout, hc_timer);
	err = conn_connect(hc->c, (const struct sockaddr *)&b->address.ss, b->address.len,
			   h->timeout);
	if (err == -EMFILE || err == -ENFILE || err == -ENOBUFS || err == -ENOMEM) {
		/* our own shortage says nothing about the backend: no result,
		 * the next check in an interval */
		conn_close(hc->c);
		hc->c = NULL;
		hc->step = HC_IDLE;
		timer_set(&hc->w->wheel, &hc->timer, h->interval, hc_timer);
		return;
	}
	if (err < 0) {
		hc_finish(hc, false, "socket failed");
		return;
	}
	conn_recv_start(hc->c);
	/* a backend that expects a PROXY header gets one saying "no client" */
	if (b->handoff == CFG_HANDOFF_PROXY_V1)
		n = proxy_v1_encode((char *)hdr, sizeof(hdr), NULL, NULL);
	else if (b->handoff == CFG_HANDOFF_PROXY_V2)
		n = proxy_v2_encode(hdr, sizeof(hdr), NULL, NULL, NULL);
	if (n)
		conn_send_copy(hc->c, hdr, n);
}

static void hc_timer(struct timer *t)
{
	struct hcheck *hc = hc_of_timer(t);
	char why[64];

	if (hc->step == HC_IDLE) {
		hc_begin(hc);
		return;
	}
	if (hc->step == HC_CONNECT)
		snprintf(why, sizeof(why), "connect timeout");
	else
		snprintf(why, sizeof(why), "timeout %s", step_names[hc->step]);
	hc_finish(hc, false, why);
}

void health_start(struct worker *w)
{
	const struct config *cfg = mxlb_rt->cfg;
	size_t n = 0;

	for (size_t i = 0; i < cfg->npools; i++)
		if (cfg->pools[i].health.check != CFG_CHECK_NONE)
			n += cfg->pools[i].nbackends;
	if (!n)
		return;
	checks = calloc(n, sizeof(*checks));
	if (!checks) {
		log_error("health", "out of memory: no health checks");
		return;
	}
	for (size_t i = 0; i < cfg->npools; i++) {
		struct pool_rt *p = &mxlb_rt->pools[i];

		if (p->cfg->health.check == CFG_CHECK_NONE)
			continue;
		for (size_t j = 0; j < p->nbackends; j++) {
			struct hcheck *hc = calloc(1, sizeof(*hc));

			if (!hc)
				continue;
			hc->w = w;
			hc->rt = mxlb_rt;
			hc->p = p;
			hc->i = j;
			checks[nchecks++] = hc;
			/* spread the first checks over a short while */
			timer_set(&w->wheel, &hc->timer, (uint32_t)(1 + (nchecks * 7) % 20) * 10,
				  hc_timer);
		}
	}
}

void health_stop(void)
{
	for (size_t i = 0; i < nchecks; i++) {
		struct hcheck *hc = checks[i];

		timer_del(&hc->timer);
		conn_close(hc->c);
		hc->c = NULL;
		dbuf_free(&hc->in);
		free(hc);
	}
	free(checks);
	checks = NULL;
	nchecks = 0;
}

void health_passive_failure(struct pool_rt *p, int backend)
{
	if (p->cfg->health.check != CFG_CHECK_NONE)
		atomic_fetch_add(&p->backends[backend].st->passive_failures, 1);
}
