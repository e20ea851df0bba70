/* listener.c - accepted connections become sessions; the server-wide and
 * per-client session limits; what a worker does when asked to stop.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proxy/proxy.h"

/* ---- per-client counts, shared by all workers ---- */

#define CLIENT_BUCKETS 4096

struct client_count {
	struct client_count *next;
	uint8_t addr[16];
	uint32_t n;
};

static struct client_count *client_table[CLIENT_BUCKETS];
static pthread_mutex_t client_lock = PTHREAD_MUTEX_INITIALIZER;

/* The address as 16 octets (v4 as v4-mapped v6), so both families key alike. */
static void client_key(const union sockaddr_any *a, uint8_t key[16])
{
	memset(key, 0, 16);
	if (a->sa.sa_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &a->sin.sin_addr, 4);
	} else if (a->sa.sa_family == AF_INET6) {
		memcpy(key, &a->sin6.sin6_addr, 16);
	}
}

static unsigned client_hash(const uint8_t key[16])
{
	uint32_t h = 2166136261u;

	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 16777619u;
	return h % CLIENT_BUCKETS;
}

bool client_limit_take(const union sockaddr_any *a, uint32_t limit)
{
	uint8_t key[16];
	struct client_count *cc;
	bool ok = true;

	client_key(a, key);
	pthread_mutex_lock(&client_lock);
	for (cc = client_table[client_hash(key)]; cc; cc = cc->next)
		if (!memcmp(cc->addr, key, 16))
			break;
	if (!cc) {
		cc = calloc(1, sizeof(*cc));
		if (cc) {
			memcpy(cc->addr, key, 16);
			cc->next = client_table[client_hash(key)];
			client_table[client_hash(key)] = cc;
		}
	}
	if (!cc || cc->n >= limit)
		ok = false;
	else
		cc->n++;
	pthread_mutex_unlock(&client_lock);
	return ok;
}

void client_limit_drop(const union sockaddr_any *a)
{
	uint8_t key[16];
	struct client_count **pp, *cc;

	client_key(a, key);
	pthread_mutex_lock(&client_lock);
	for (pp = &client_table[client_hash(key)]; (cc = *pp); pp = &cc->next) {
		if (memcmp(cc->addr, key, 16))
			continue;
		if (--cc->n == 0) {
			*pp = cc->next;
			free(cc);
		}
		break;
	}
	pthread_mutex_unlock(&client_lock);
}

/* ---- worker callbacks ---- */

static void accepted(struct worker *w, struct lsock *ls, int fd)
{
	struct proxy_worker *pw = w->proxy;
	const struct cfg_listener *l = ls->owner;
	struct session *s;
	unsigned n;

	if (ls->owner == admin_listener) {
		admin_accept(w, fd);
		return;
	}
	n = atomic_fetch_add(&mxlb_sessions, 1) + 1;
	s = session_new(pw, l, fd);
	if (!s) {
		atomic_fetch_sub(&mxlb_sessions, 1);
		log_error("accept", "out of memory: connection dropped");
		close(fd);
		return;
	}
	if (n > mxlb_rt->cfg->server.max_sessions) {
		/* a client that starts with TLS could not read a reply */
		if (l->tls == CFG_TLS_IMPLICIT)
			session_close(s, R_REJECTED, "max_sessions");
		else
			session_close_reply(s, R_REJECTED, "max_sessions",
					    "421 4.7.0 %s Too many connections, try again later",
					    session_hostname(s));
		return;
	}
	front_start(s);
}

static void started(struct worker *w)
{
	if (w->id == 0) {
		health_start(w);
		alerts_start(w);
	}
}

static void stopping(struct worker *w)
{
	struct proxy_worker *pw = w->proxy;
	struct session *s, *next;

	if (w->id == 0) {
		health_stop();
		admin_stop();
		alerts_stop();
	}
	for (s = pw->sessions; s; s = next) {
		next = s->next;
		front_stop(s);
	}
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

/* What a socket this worker has becomes in the new configuration: its
 * listener, the admin marker, or NULL (it is closed). */
static const void *new_owner(const struct config *cfg, const struct lsock *ls, int worker)
{
	if (ls->owner == admin_listener)
		return worker == 0 && cfg->server.has_admin && same_addr(ls, &cfg->server.admin)
			       ? admin_listener
			       : NULL;
	for (size_t i = 0; i < cfg->nlisteners; i++)
		for (size_t j = 0; j < cfg->listeners[i].nlisten; j++)
			if (same_addr(ls, &cfg->listeners[i].listen[j]))
				return &cfg->listeners[i];
	return NULL;
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
		const void *owner = new_owner(ra->rt->cfg, ls, w->id);

		if (owner) {
			ls->owner = (void *)owner;
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
	pw->rt = ra->rt;
	mxlb_rt = ra->rt;
	w->shutdown_timeout_ms = ra->rt->cfg->server.shutdown_timeout;
	if (w->id == 0) {
		health_stop();
		runtime_adopt(ra->rt);
		health_start(w);
	}
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
	.accepted = accepted,
	.stopping = stopping,
	.active = active,
	.abort_all = abort_all,
};
