/* stats.c - the counters behind /metrics. Each is one atomic, updated by
 * any worker without a lock; a histogram is a row of cumulative-free bucket
 * counts (made cumulative when printed).
 *
 * A listener's stats outlive the configuration: runtimes refer to one
 * struct listener_stats per listener name, kept below while some runtime
 * names it (its lock is taken when a runtime is made or freed only).
 *
 * The process's own: its start, reloads, and the refusals mxlb answers
 * itself (by the reason a session was closed with, see below).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/proxy.h"
#include "proxy/smtp_track.h"

const double hist_bounds[HIST_BUCKETS] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120, 600,
};

struct lstats_entry {
	struct lstats_entry *next;
	char *name;
	unsigned refs; /* under lstats_lock */
	struct listener_stats st;
};

static struct lstats_entry *lstats_all;
static pthread_mutex_t lstats_lock = PTHREAD_MUTEX_INITIALIZER;

void hist_observe(struct hist *h, uint64_t usec)
{
	double s = (double)usec / 1e6;
	size_t i = 0;

	while (i < HIST_BUCKETS && s > hist_bounds[i])
		i++;
	atomic_fetch_add(&h->count[i], 1);
	atomic_fetch_add(&h->sum_usec, usec);
}

struct listener_stats *listener_stats(const struct runtime *rt, const struct cfg_listener *l)
{
	return rt->lstats[l - rt->cfg->listeners];
}

struct listener_stats *listener_stats_get(const char *name)
{
	struct lstats_entry *e;

	pthread_mutex_lock(&lstats_lock);
	for (e = lstats_all; e; e = e->next)
		if (!strcmp(e->name, name))
			break;
	if (e) {
		e->refs++;
	} else if ((e = calloc(1, sizeof(*e))) && (e->name = strdup(name))) {
		e->refs = 1;
		e->next = lstats_all;
		lstats_all = e;
	} else {
		free(e);
		e = NULL;
	}
	pthread_mutex_unlock(&lstats_lock);
	return e ? &e->st : NULL;
}

void listener_stats_put(struct listener_stats *st)
{
	struct lstats_entry *e, **pp;

	if (!st)
		return;
	e = (struct lstats_entry *)((char *)st - offsetof(struct lstats_entry, st));
	pthread_mutex_lock(&lstats_lock);
	if (--e->refs == 0) {
		for (pp = &lstats_all; *pp != e; pp = &(*pp)->next)
			;
		*pp = e->next;
		/* the last runtime naming it is going: no session holds it */
		BUG_ON(atomic_load(&st->active) != 0);
		free(e->name);
		free(e);
	}
	pthread_mutex_unlock(&lstats_lock);
}

uint64_t listener_stats_total(const struct listener_stats *st)
{
	uint64_t n = atomic_load(&st->active);

	for (size_t r = 0; r < R_COUNT; r++)
		n += atomic_load(&st->sessions[r]);
	return n;
}

uint64_t listener_stats_refused(const struct listener_stats *st)
{
	uint64_t n = 0;

	for (size_t r = 0; r < REJ_COUNT; r++)
		n += atomic_load(&st->rejections[r]);
	return n;
}

/* ---- refusals ---- */

static const char *const reject_names[REJ_COUNT] = {
	[REJ_MAX_SESSIONS] = "max_sessions",
	[REJ_CLIENT_LIMIT] = "max_sessions_per_client",
	[REJ_CONNECTION_RATE] = "connection_rate",
	[REJ_FD_RESERVE] = "fd_reserve",
	[REJ_REQUIRE_TLS] = "require_tls",
	[REJ_TRACKER] = "tracker",
	[REJ_NO_BACKEND] = "no_backend",
	[REJ_BACKEND_FD] = "backend_fd",
	[REJ_TOO_MANY_ERRORS] = "too_many_errors",
	[REJ_BAD_PROXY_HEADER] = "bad_proxy_header",
	[REJ_BAD_CLIENT_HELLO] = "bad_client_hello",
	[REJ_SHUTDOWN] = "shutting_down",
	[REJ_SCREEN] = "screen",
};

/*
 * The reasons the refusing paths close a session with (listener.c,
 * limits.c, smtp_front.c, smtp_back.c), and what each is. Matched on result and
 * reason together: "out of file descriptors" is the reserve at accept
 * when rejected and a backend connect when unavailable. A refusal not
 * listed here is not counted; tests/integration/test_admin_fields.py
 * provokes the ones a test can.
 */
static const struct {
	enum session_result result;
	const char *reason;
	enum reject_reason r;
} session_refusals[] = {
	{ R_REJECTED, "max_sessions", REJ_MAX_SESSIONS },
	{ R_REJECTED, "max_sessions_per_client", REJ_CLIENT_LIMIT },
	{ R_REJECTED, "connection_rate", REJ_CONNECTION_RATE },
	{ R_REJECTED, "out of file descriptors", REJ_FD_RESERVE },
	{ R_REJECTED, "too many errors", REJ_TOO_MANY_ERRORS },
	{ R_REJECTED, "bad proxy header", REJ_BAD_PROXY_HEADER },
	{ R_REJECTED, "bad client hello", REJ_BAD_CLIENT_HELLO },
	{ R_REJECTED, "shutting down", REJ_SHUTDOWN },
	{ R_UNAVAILABLE, "no backend available", REJ_NO_BACKEND },
	{ R_UNAVAILABLE, "out of file descriptors", REJ_BACKEND_FD },
};

const char *reject_reason_name(enum reject_reason r)
{
	return r < REJ_COUNT ? reject_names[r] : NULL;
}

void stats_reject(const struct session *s, enum reject_reason r)
{
	BUG_ON(r >= REJ_COUNT);
	atomic_fetch_add(&listener_stats(s->rt, s->l)->rejections[r], 1);
}

void stats_session_rejected(const struct session *s)
{
	if (s->result != R_REJECTED && s->result != R_UNAVAILABLE)
		return;
	/* the tracker's reasons are its own words: it says it failed */
	if (s->result == R_REJECTED && s->track && smtp_track_error(s->track)) {
		stats_reject(s, REJ_TRACKER);
		return;
	}
	/* screen.c's are "screen: <why>"; mxlb_screen_total has the why */
	if (s->result == R_REJECTED && s->reason && !strncmp(s->reason, "screen: ", 8)) {
		stats_reject(s, REJ_SCREEN);
		return;
	}
	for (size_t i = 0; s->reason && i < sizeof(session_refusals) / sizeof(session_refusals[0]);
	     i++)
		if (session_refusals[i].result == s->result &&
		    !strcmp(session_refusals[i].reason, s->reason)) {
			stats_reject(s, session_refusals[i].r);
			return;
		}
}

/* ---- the process ---- */

static uint64_t start_wall_ms, start_mono_ms;
static atomic_ulong reloads_ok, reloads_failed, config_loaded_ms;

static uint64_t clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Before main(): the start is the process's, whoever asks first. */
__attribute__((constructor)) static void stats_process_start(void)
{
	start_wall_ms = clock_ms(CLOCK_REALTIME);
	start_mono_ms = clock_ms(CLOCK_MONOTONIC);
	atomic_store(&config_loaded_ms, start_wall_ms);
}

void stats_reload_done(bool ok)
{
	if (ok)
		atomic_store(&config_loaded_ms, clock_ms(CLOCK_REALTIME));
	atomic_fetch_add(ok ? &reloads_ok : &reloads_failed, 1);
}

uint64_t stats_reloads(bool ok)
{
	return atomic_load(ok ? &reloads_ok : &reloads_failed);
}

uint64_t stats_start_ms(void)
{
	return start_wall_ms;
}

uint64_t stats_config_loaded_ms(void)
{
	return atomic_load(&config_loaded_ms);
}

uint64_t stats_uptime_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC) - start_mono_ms;
}

uint64_t stats_wall_ms(void)
{
	return clock_ms(CLOCK_REALTIME);
}
