/* pool.c - a pool at run time: its backends' counters and state, and
 * the balancer its configuration names. Nothing here knows sessions, so
 * the balancers are tested on their own (tests/unit/test_balance.c).
 */
#include <stdlib.h>

#include "proxy/proxy.h"

bool pool_eligible(struct pool_rt *p, size_t i, const struct pick_ctx *ctx)
{
	struct backend_rt *b = &p->backends[i];

	if (!atomic_load(&b->up) || atomic_load(&b->admin) != ADMIN_ENABLED ||
	    backend_weight(b) == 0)
		return false;
	for (unsigned t = 0; t < ctx->ntried; t++)
		if (ctx->tried[t] == i)
			return false;
	if (b->cfg->max_sessions && atomic_load(&b->active) >= b->cfg->max_sessions)
		return false;
	return true;
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

int pool_rt_init(struct pool_rt *p, const struct cfg_pool *cfg)
{
	p->cfg = cfg;
	p->nbackends = cfg->nbackends;
	p->backends = calloc(p->nbackends, sizeof(*p->backends));
	if (!p->backends)
		return -1;
	pthread_mutex_init(&p->lock, NULL);
	p->lb = lb_for(cfg->balance);
	for (size_t j = 0; j < p->nbackends; j++) {
		p->backends[j].cfg = &cfg->backends[j];
		atomic_store(&p->backends[j].weight, cfg->backends[j].weight);
		/* no health checks yet: every backend starts up */
		atomic_store(&p->backends[j].up, true);
	}
	return p->lb->init ? p->lb->init(p) : 0;
}

void pool_rt_fini(struct pool_rt *p)
{
	if (p->lb && p->lb->free)
		p->lb->free(p);
	free(p->backends);
	p->backends = NULL;
	pthread_mutex_destroy(&p->lock);
}

void pool_drop(struct pool_rt *p, int backend)
{
	atomic_fetch_sub(&p->backends[backend].active, 1);
}
