/* pool.c - a pool at run time: its backends' counters and state, and
 * the balancer its configuration names. Nothing here knows sessions, so
 * the balancers are tested on their own (tests/unit/test_balance.c).
 *
 * A backend's state outlives the configuration: every runtime's pool
 * refers to one struct backend_rt per pool name and backend name, kept in
 * the registry below while some runtime names it. Its lock is taken only
 * when a runtime is made, freed or comes into force, never per session.
 */
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"

struct backend_entry {
	struct backend_entry *next;
	char *pool, *name;
	unsigned refs; /* pool_backends naming it; under registry_lock */
	/* the address the health state is about, and the configured weight
	 * the weight follows until an admin sets another; written by
	 * pool_rt_adopt, under registry_lock */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	unsigned cfg_weight;
	struct backend_rt st;
};

static struct backend_entry *registry;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;

static struct backend_entry *entry_of(struct backend_rt *st)
{
	return (struct backend_entry *)((char *)st - offsetof(struct backend_entry, st));
}

static bool same_address(const struct backend_entry *e, const struct cfg_backend *c)
{
	return e->addrlen == c->address.len && !memcmp(&e->addr, &c->address.ss, e->addrlen);
}

/* Under registry_lock: the state of pool/backend c, with a new reference. */
static struct backend_rt *backend_get(const char *pool, const struct cfg_backend *c)
{
	struct backend_entry *e;

	for (e = registry; e; e = e->next)
		if (!strcmp(e->pool, pool) && !strcmp(e->name, c->name)) {
			e->refs++;
			return &e->st;
		}
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->pool = strdup(pool);
	e->name = strdup(c->name);
	if (!e->pool || !e->name) {
		free(e->pool);
		free(e->name);
		free(e);
		return NULL;
	}
	e->refs = 1;
	memcpy(&e->addr, &c->address.ss, c->address.len);
	e->addrlen = c->address.len;
	e->cfg_weight = c->weight;
	atomic_store(&e->st.weight, c->weight);
	/* no health checks yet: every backend starts up */
	atomic_store(&e->st.up, true);
	e->next = registry;
	registry = e;
	return &e->st;
}

/* Under registry_lock. */
static void backend_put(struct backend_rt *st)
{
	struct backend_entry *e = entry_of(st), **pp;

	if (--e->refs)
		return;
	for (pp = &registry; *pp != e; pp = &(*pp)->next)
		;
	*pp = e->next;
	BUG_ON(atomic_load(&st->active) != 0);
	free(e->pool);
	free(e->name);
	free(e);
}

bool pool_eligible(struct pool_rt *p, size_t i, const struct pick_ctx *ctx)
{
	struct backend_rt *b = p->backends[i].st;
	uint32_t max = p->backends[i].cfg->max_sessions;

	if (!atomic_load(&b->up) || atomic_load(&b->admin) != ADMIN_ENABLED ||
	    backend_weight(b) == 0)
		return false;
	for (unsigned t = 0; t < ctx->ntried; t++)
		if (ctx->tried[t] == i)
			return false;
	if (max && atomic_load(&b->active) >= max)
		return false;
	return true;
}

/* Count a session on b unless that makes more than max (0: no limit). */
static bool backend_take(struct backend_rt *b, uint32_t max)
{
	unsigned a = atomic_load(&b->active);

	do {
		if (max && a >= max)
			return false;
	} while (!atomic_compare_exchange_weak(&b->active, &a, a + 1));
	atomic_fetch_add(&b->total, 1);
	return true;
}

int pool_pick(struct pool_rt *p, const struct pick_ctx *ctx)
{
	int i = -1;

	pthread_mutex_lock(&p->lock);
	/* The lock orders this configuration's picks only: a session of the
	 * configuration before a reload (a retry) may fill the backend between
	 * the pick and the take. It is full then, so the next pick passes it. */
	for (size_t n = 0; n <= p->nbackends; n++) {
		i = p->lb->pick(p, ctx);
		if (i < 0 || backend_take(p->backends[i].st, p->backends[i].cfg->max_sessions))
			break;
		i = -1;
	}
	pthread_mutex_unlock(&p->lock);
	return i;
}

void pool_drop(struct pool_rt *p, int backend)
{
	unsigned prev = atomic_fetch_sub(&p->backends[backend].st->active, 1);

	BUG_ON(prev == 0);
}

const struct lb_ops *lb_for(enum cfg_balance b)
{
	switch (b) {
	case CFG_BAL_LEASTCONN:
		return &lb_leastconn;
	case CFG_BAL_SOURCE:
		return &lb_source;
	case CFG_BAL_EHLO:
		return &lb_ehlo;
	case CFG_BAL_RANDOM:
		return &lb_random;
	case CFG_BAL_ROUNDROBIN:
		break;
	}
	return &lb_roundrobin;
}

static void release_backends(struct pool_rt *p, size_t n)
{
	pthread_mutex_lock(&registry_lock);
	for (size_t j = 0; j < n; j++)
		backend_put(p->backends[j].st);
	pthread_mutex_unlock(&registry_lock);
	free(p->backends);
	p->backends = NULL;
}

int pool_rt_init(struct pool_rt *p, const struct cfg_pool *cfg)
{
	size_t j;

	p->cfg = cfg;
	p->nbackends = cfg->nbackends;
	p->backends = calloc(p->nbackends ? p->nbackends : 1, sizeof(*p->backends));
	if (!p->backends)
		return -1;
	pthread_mutex_lock(&registry_lock);
	for (j = 0; j < p->nbackends; j++) {
		p->backends[j].cfg = &cfg->backends[j];
		p->backends[j].st = backend_get(cfg->name, &cfg->backends[j]);
		if (!p->backends[j].st)
			break;
	}
	pthread_mutex_unlock(&registry_lock);
	if (j < p->nbackends) {
		release_backends(p, j);
		return -1;
	}
	pthread_mutex_init(&p->lock, NULL);
	p->lb = lb_for(cfg->balance);
	if (p->lb->init && p->lb->init(p) < 0) {
		p->lb = NULL;
		pool_rt_fini(p);
		return -1;
	}
	return 0;
}

void pool_rt_fini(struct pool_rt *p)
{
	if (p->lb && p->lb->free)
		p->lb->free(p);
	release_backends(p, p->nbackends);
	pthread_mutex_destroy(&p->lock);
}

void pool_rt_adopt(struct pool_rt *p)
{
	pthread_mutex_lock(&registry_lock);
	for (size_t j = 0; j < p->nbackends; j++) {
		const struct cfg_backend *c = p->backends[j].cfg;
		struct backend_rt *b = p->backends[j].st;
		struct backend_entry *e = entry_of(b);
		unsigned w = e->cfg_weight;

		if (!same_address(e, c)) {
			/* another server under the same name: what was known of
			 * the old one does not apply; sessions still count */
			memcpy(&e->addr, &c->address.ss, c->address.len);
			e->addrlen = c->address.len;
			atomic_store(&b->up, true);
			atomic_store(&b->admin, ADMIN_ENABLED);
			atomic_store(&b->weight, c->weight);
			atomic_store(&b->passive_failures, 0);
			atomic_store(&b->caps, 0);
			atomic_store(&b->size_max, 0);
			atomic_store(&b->last_check_ms, 0);
			atomic_store(&b->last_check_ok, false);
			atomic_store(&b->last_failure_ms, 0);
			atomic_store(&b->state_change_ms, 0);
			b->last_failure[0] = '\0'; /* on worker 0, like health.c */
		} else {
			/* a weight set by an admin outlives the reload; the
			 * exchange keeps one set while this runs */
			atomic_compare_exchange_strong(&b->weight, &w, c->weight);
		}
		e->cfg_weight = c->weight;
		if (p->cfg->health.check == CFG_CHECK_NONE)
			atomic_store(&b->up, true);
	}
	pthread_mutex_unlock(&registry_lock);
}
