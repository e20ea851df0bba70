/* listener.c - accepted connections become sessions (the server-wide
 * session limit is checked here); what a worker does at a reload and when
 * asked to stop.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proxy/dns.h"
#include "proxy/proxy.h"

/* ---- worker callbacks ---- */

/* A socket bound to one address gives its connections that local address:
 * XCLIENT DESTADDR and the PROXY header need no getsockname() per session.
 * A wildcard (0.0.0.0, ::) leaves it to be asked. */
static void local_from_bind(struct session *s, const struct lsock *ls)
{
	if ((ls->addr.ss_family == AF_INET || ls->addr.ss_family == AF_INET6) &&
	    !config_addr_wildcard(&ls->addr) && ls->addrlen <= sizeof(s->local))
		memcpy(&s->local, &ls->addr, ls->addrlen);
}

void listener_accept(struct lsock *ls, int fd)
{
	struct proxy_worker *pw = ls->w->proxy;
	const struct cfg_listener *l = ls->owner;
	struct session *s;
	unsigned n;

	n = atomic_fetch_add(&mxlb_sessions, 1) + 1;
	s = session_new(pw, l, fd, &front_handler);
	if (!s) {
		atomic_fetch_sub(&mxlb_sessions, 1);
		log_error("accept", "out of memory: connection dropped");
		close(fd);
		return;
	}
	local_from_bind(s, ls);
	if (n > mxlb_rt->cfg->server.max_sessions) {
		limit_reject_count(s, LIMIT_MAX_SESSIONS);
		/* a client that starts with TLS could not read a reply */
		if (l->tls == CFG_TLS_IMPLICIT)
			session_close(s, R_REJECTED, "max_sessions");
		else
			session_close_reply(s, R_REJECTED, "max_sessions",
					    "421 4.7.0 %s Too many connections, try again later",
					    runtime_hostname(s->rt));
		return;
	}
	front_start(s);
	/* behind a PROXY header the client is known only once it is read */
	if (!l->accept_proxy && s->state != S_CLOSED)
		back_lookup_name(s);
}

static void started(struct worker *w)
{
	struct proxy_worker *pw = w->proxy;

	/* without one, lookups fail at once: NAME=[TEMPUNAVAIL], DNSBLs 0 */
	dns_worker_start(w, &pw->rt->cfg->server);
	if (w->id == 0)
		services_start(w);
}

static void stopping(struct worker *w)
{
	struct proxy_worker *pw = w->proxy;
	struct session *s, *next;

	if (w->id == 0)
		services_stop();
	reuse_flush(pw);
	for (s = pw->sessions; s; s = next) {
		next = s->next;
		front_stop(s);
	}
}

/* The last session is gone: nothing can wait on a lookup any more. */
static void stopped(struct worker *w)
{
	dns_worker_stop(w);
}

static unsigned active(struct worker *w)
{
	struct proxy_worker *pw = w->proxy;

	return pw->nsessions;
}

static void abort_all(struct worker *w)
{
	struct proxy_worker *pw = w->proxy;

	while (pw->sessions)
		session_close(pw->sessions, R_ERROR, "shutdown timeout");
}

static bool same_addr(const struct lsock *ls, const struct cfg_addr *a)
{
	return ls->addrlen == a->len && !memcmp(&ls->addr, &a->ss, a->len);
}

/* Whether a socket this worker has stays in the new configuration (a mail
 * listener's then belongs to the new cfg_listener), or is closed. */
static bool keeps(const struct config *cfg, struct lsock *ls, int worker)
{
	if (ls->accepted == admin_accept)
		return worker == 0 && cfg->server.has_admin && same_addr(ls, &cfg->server.admin);
	for (size_t i = 0; i < cfg->nlisteners; i++)
		for (size_t j = 0; j < cfg->listeners[i].nlisten; j++)
			if (same_addr(ls, &cfg->listeners[i].listen[j])) {
				ls->owner = (void *)&cfg->listeners[i];
				return true;
			}
	return false;
}

/* On the worker's thread: switch to the new runtime. Sessions in progress
 * keep the one they started with. */
static void reload(struct worker *w, void *arg)
{
	struct reload_arg *ra = arg;
	struct proxy_worker *pw = w->proxy;
	struct runtime *old = pw->rt;
	struct lsock **pp = &w->lsocks, *ls, *next;

	while ((ls = *pp)) {
		if (keeps(ra->rt->cfg, ls, w->id)) {
			pp = &ls->next;
		} else {
			*pp = ls->next;
			worker_retire_lsock(w, ls);
		}
	}
	for (ls = ra->fresh; ls; ls = next) {
		next = ls->next;
		worker_add_lsock(w, ls);
	}
	runtime_ref(ra->rt);
	reuse_flush(pw); /* parked for the configuration going out */
	pw->rt = ra->rt;
	mxlb_rt = ra->rt;
	w->shutdown_timeout_ms = ra->rt->cfg->server.shutdown_timeout;
	dns_worker_reload(w, &ra->rt->cfg->server);
	if (w->id == 0)
		services_reload(w, ra->rt);
	runtime_unref(old);
}

static void reap(struct worker *w)
{
	session_reap(w->proxy);
}

const struct worker_ops proxy_worker_ops = {
	.reap = reap,
	.reload = reload,
	.started = started,
	.stopped = stopped,
	.stopping = stopping,
	.active = active,
	.abort_all = abort_all,
};
