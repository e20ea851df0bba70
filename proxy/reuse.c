/* reuse.c - backend session reuse (SPEC §10): a relayed session whose
 * client ends with a clean QUIT is ended by mxlb (221 of its own), its
 * backend connection reset with RSET and parked; the next session routed
 * to that backend on this worker takes it instead of connecting
 * (smtp_back.c then sends XCLIENT or the client's EHLO, which reset the
 * backend's session).
 *
 * Safety: a parked connection must carry nothing of one client to the
 * next. So a connection is parked only when the tracker (smtp_track.h)
 * saw nothing but EHLO, HELO, MAIL, RCPT, DATA, BDAT, RSET, NOOP, VRFY
 * and HELP, stopped at a QUIT line at a command boundary, and every
 * command passed had its final reply; and only once the backend answered
 * RSET with 250 and said nothing more. Anything else, or any doubt, and
 * the connection is closed.
 *
 * Each worker keeps its own list (no locking); per backend at most
 * max_idle, newest first (taken first, so the oldest expire). A parked
 * connection holds a reference to its runtime: it is taken only by a
 * session of that same configuration, and all are closed at a reload.
 * Health is published by worker 0; each parked connection looks at its
 * backend's state every REUSE_CHECK_MS and is closed when the backend is
 * down, drained, disabled or weighted 0.
 */
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"
#include "proxy/smtp_parse.h"

/* How often a parked connection looks at its backend's health. */
#define REUSE_CHECK_MS 1000
/* The longest reply to RSET read. */
#define REUSE_REPLY_MAX 1024

struct reuse_idle {
	struct reuse_idle *next, *prev; /* on pw->idle */
	struct proxy_worker *pw;
	struct conn *c;
	struct runtime *rt; /* a reference: pool and backend stay valid */
	struct pool_rt *pool;
	int backend;
	uint32_t uses; /* client sessions carried */
	uint32_t reply_ms;
	uint8_t xclient_attrs;
	bool tls;
	bool parked; /* RSET answered: may be taken */
	uint64_t since_ms;
	struct timer timer;
	struct dbuf bin; /* the reply to RSET */
};

bool reuse_on(const struct session *s)
{
	return s->pool && s->pool->cfg->reuse.max_idle && !s->no_smtp;
}

void reuse_track(struct session *s)
{
	if (reuse_on(s))
		smtp_track_stop_at_quit(s->track);
}

static struct backend_rt *idle_backend(const struct reuse_idle *e)
{
	return e->pool->backends[e->backend].st;
}

static const char *idle_name(const struct reuse_idle *e)
{
	return e->pool->backends[e->backend].cfg->name;
}

static void idle_unlink(struct reuse_idle *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		e->pw->idle = e->next;
	if (e->next)
		e->next->prev = e->prev;
	e->next = e->prev = NULL;
	if (e->parked)
		atomic_fetch_sub(&idle_backend(e)->idle, 1);
	e->parked = false;
	timer_del(&e->timer);
}

static void idle_free(struct reuse_idle *e)
{
	dbuf_free(&e->bin);
	runtime_unref(e->rt);
	free(e);
}

/* Close a parked connection: with quit, a polite QUIT first (its reply is
 * not waited for). */
static void idle_drop(struct reuse_idle *e, bool quit, const char *why)
{
	struct conn *c = e->c;

	log_debug("reuse", "pool %s backend %s: connection closed (%s, %u uses)",
		  e->pool->cfg->name, idle_name(e), why, e->uses);
	idle_unlink(e);
	if (quit && conn_send_copy(c, "QUIT\r\n", 6) == 0)
		conn_close_after_flush(c, LINGER_MS);
	else
		conn_close(c);
	idle_free(e);
}

/* Whether new sessions could still go to the backend. */
static bool backend_usable(struct backend_rt *b)
{
	return atomic_load(&b->up) && atomic_load(&b->admin) == ADMIN_ENABLED &&
	       backend_weight(b) != 0;
}

static void idle_timer(struct timer *t)
{
	struct reuse_idle *e =
		(struct reuse_idle *)((char *)t - offsetof(struct reuse_idle, timer));
	uint64_t now = worker_now_ms(), age = now - e->since_ms;
	uint32_t limit = e->pool->cfg->reuse.idle_timeout;

	if (!e->parked) {
		idle_drop(e, false, "no reply to RSET");
		return;
	}
	if (age >= limit) {
		idle_drop(e, true, "idle_timeout");
		return;
	}
	if (!backend_usable(idle_backend(e))) {
		idle_drop(e, true, "backend not in service");
		return;
	}
	timer_set(&e->pw->w->wheel, &e->timer,
		  limit - age < REUSE_CHECK_MS ? (uint32_t)(limit - age) : REUSE_CHECK_MS,
		  idle_timer);
}

/* The reply to RSET: exactly one 250 reply, nothing after it. */
static void idle_reset_reply(struct reuse_idle *e)
{
	size_t used = 0;
	int code = 0;
	enum smtp_parse r = smtp_parse_reply(dbuf_data(&e->bin), dbuf_used(&e->bin), &code, &used);

	if (r == SMTP_AGAIN)
		return;
	if (r != SMTP_OK || code != 250 || used != dbuf_used(&e->bin)) {
		idle_drop(e, false, "RSET refused");
		return;
	}
	dbuf_free(&e->bin);
	e->parked = true;
	e->since_ms = worker_now_ms();
	atomic_fetch_add(&idle_backend(e)->idle, 1);
	idle_timer(&e->timer); /* arms the first check */
}

static bool idle_data(struct conn *c, char *p, size_t len, uint16_t bid)
{
	struct reuse_idle *e = c->owner;

	(void)bid;
	/* a parked backend speaks only to say it is leaving (421) */
	if (e->parked) {
		idle_drop(e, false, "backend spoke while idle");
		return false;
	}
	if (dbuf_append(&e->bin, p, len, REUSE_REPLY_MAX) < 0) {
		idle_drop(e, false, "RSET reply too long");
		return false;
	}
	idle_reset_reply(e);
	return false;
}

static void idle_eof(struct conn *c)
{
	idle_drop(c->owner, false, "closed by the backend");
}

static void idle_error(struct conn *c, int err)
{
	(void)err;
	idle_drop(c->owner, false, "connection error");
}

static const struct conn_handler idle_handler = {
	.data = idle_data,
	.eof = idle_eof,
	.error = idle_error,
};

static unsigned idle_count(const struct proxy_worker *pw, const struct session *s)
{
	unsigned n = 0;

	for (const struct reuse_idle *e = pw->idle; e; e = e->next)
		if (e->rt == s->rt && e->pool == s->pool && e->backend == s->backend)
			n++;
	return n;
}

/* Why c may not be parked, or NULL. */
static const char *park_refusal(const struct session *s)
{
	const struct cfg_reuse *r = &s->pool->cfg->reuse;

	if (s->back_uses + 1 >= r->max_uses)
		return "max_uses";
	if (s->w->stopping)
		return "stopping";
	if (s->rt != s->pw->rt)
		return "configuration reloaded";
	if (!backend_usable(s->pool->backends[s->backend].st))
		return "backend not in service";
	if (idle_count(s->pw, s) >= r->max_idle)
		return "max_idle";
	return NULL;
}

/* Hand c to a new parked entry and reset it; false when it could not be
 * (out of memory: c is the caller's still). */
static bool park(struct session *s, struct conn *c)
{
	struct reuse_idle *e = calloc(1, sizeof(*e));

	if (!e)
		return false;
	e->pw = s->pw;
	e->c = c;
	e->rt = s->rt;
	runtime_ref(e->rt);
	e->pool = s->pool;
	e->backend = s->backend;
	e->uses = s->back_uses + 1;
	e->reply_ms = s->l->timeouts.backend_reply;
	e->xclient_attrs = s->xclient_attrs;
	e->tls = s->back_tls;
	if (conn_send_copy(c, "RSET\r\n", 6) < 0) {
		idle_free(e);
		return false;
	}
	c->h = &idle_handler;
	c->owner = e;
	e->next = s->pw->idle;
	if (e->next)
		e->next->prev = e;
	s->pw->idle = e;
	/* until the 250, the timer bounds the wait for it */
	timer_set(&s->w->wheel, &e->timer, e->reply_ms, idle_timer);
	conn_recv_start(c);
	return true;
}

bool reuse_check(struct session *s)
{
	const char *refusal;
	struct conn *c;

	if (s->state != S_RELAY || !s->track || !smtp_track_quit(s->track))
		return false;
	/* a reply still to come or still to be sent on, a reply to an EHLO
	 * being collected: the 221 would come before it */
	if (!smtp_track_answered(s->track) || dbuf_used(&s->stash[0]) || dbuf_used(&s->stash[1]) ||
	    dbuf_used(&s->bin) || s->eof[1])
		return false;
	c = s->back;
	s->back = NULL;
	refusal = park_refusal(s);
	if (!refusal && park(s, c)) {
		session_close_reply(s, R_RELAYED, "client quit, backend parked", "221 2.0.0 Bye");
		return true;
	}
	log_debug("reuse", "session %016llx: backend connection not parked (%s)",
		  (unsigned long long)s->id, refusal ? refusal : "out of memory");
	/* the backend is told as the client would have told it */
	if (conn_send_copy(c, "QUIT\r\n", 6) == 0)
		conn_close_after_flush(c, LINGER_MS);
	else
		conn_close(c);
	session_close_reply(s, R_RELAYED, "client quit", "221 2.0.0 Bye");
	return true;
}

struct conn *reuse_take(struct session *s)
{
	struct reuse_idle *e;
	struct conn *c;

	if (!reuse_on(s))
		return NULL;
	for (e = s->pw->idle; e; e = e->next)
		if (e->parked && e->rt == s->rt && e->pool == s->pool && e->backend == s->backend)
			break;
	if (!e)
		return NULL;
	c = e->c;
	idle_unlink(e);
	s->back_reused = true;
	s->back_uses = e->uses;
	s->back_tls = e->tls;
	s->xclient_attrs = e->xclient_attrs;
	idle_free(e);
	c->h = &back_handler;
	c->owner = s;
	conn_recv_start(c);
	return c;
}

void reuse_flush(struct proxy_worker *pw)
{
	while (pw->idle)
		idle_drop(pw->idle, true, "stop or reload");
}
