/* runtime.c - a configuration with its run-time state, reference counted
 * so a reload never pulls a configuration from under a session. What must
 * outlive the configuration (backend states, listener stats) is found by
 * name when the runtime is made and only referenced from it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"
#include "tls/tls.h"

static void runtime_release(struct runtime *rt, size_t npools)
{
	for (size_t i = 0; i < npools; i++)
		pool_rt_fini(&rt->pools[i]);
	for (size_t i = 0; rt->lstats && i < rt->cfg->nlisteners; i++)
		listener_stats_put(rt->lstats[i]);
	for (size_t i = 0; rt->tls && i < rt->cfg->ntls; i++)
		tls_ctx_free(rt->tls[i]);
	free(rt->tls);
	free(rt->pools);
	free(rt->lstats);
	free(rt);
}

static bool tls_used_by_backends(const struct config *cfg, const struct cfg_tls *t)
{
	for (size_t i = 0; i < cfg->npools; i++)
		for (size_t j = 0; j < cfg->pools[i].nbackends; j++)
			if (cfg->pools[i].backends[j].tls_context == t)
				return true;
	return false;
}

struct runtime *runtime_new(struct config *cfg, char *err, size_t errlen)
{
	struct runtime *rt = calloc(1, sizeof(*rt));
	size_t i;

	snprintf(err, errlen, "out of memory");
	if (!rt)
		return NULL;
	rt->cfg = cfg;
	atomic_store(&rt->refs, 1);
	rt->pools = calloc(cfg->npools ? cfg->npools : 1, sizeof(*rt->pools));
	rt->lstats = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*rt->lstats));
	rt->tls = calloc(cfg->ntls ? cfg->ntls : 1, sizeof(*rt->tls));
	if (!rt->pools || !rt->lstats || !rt->tls) {
		runtime_release(rt, 0);
		return NULL;
	}
	for (i = 0; i < cfg->nlisteners; i++) {
		rt->lstats[i] = listener_stats_get(cfg->listeners[i].name);
		if (!rt->lstats[i]) {
			runtime_release(rt, 0);
			return NULL;
		}
	}
	/* certificates are read here, at start and at each reload */
	for (i = 0; i < cfg->ntls; i++) {
		rt->tls[i] = tls_ctx_new(cfg, &cfg->tls[i], tls_used_by_backends(cfg, &cfg->tls[i]),
					 err, errlen);
		if (!rt->tls[i]) {
			runtime_release(rt, 0);
			return NULL;
		}
	}
	for (i = 0; i < cfg->npools; i++) {
		if (pool_rt_init(&rt->pools[i], &cfg->pools[i]) < 0) {
			runtime_release(rt, i);
			return NULL;
		}
	}
	return rt;
}

static void runtime_free(struct runtime *rt)
{
	struct config *cfg = rt->cfg;

	runtime_release(rt, cfg->npools);
	config_free(cfg);
}

struct tls_ctx *runtime_tls(const struct runtime *rt, const struct cfg_tls *t)
{
	return t ? rt->tls[t - rt->cfg->tls] : NULL;
}

_Thread_local struct runtime *mxlb_rt;

const char *runtime_hostname(const struct runtime *rt)
{
	return rt->cfg->server.hostname;
}

void runtime_ref(struct runtime *rt)
{
	atomic_fetch_add(&rt->refs, 1);
}

void runtime_unref(struct runtime *rt)
{
	if (rt && atomic_fetch_sub(&rt->refs, 1) == 1)
		runtime_free(rt);
}

void runtime_adopt(struct runtime *rt)
{
	for (size_t i = 0; i < rt->cfg->npools; i++)
		pool_rt_adopt(&rt->pools[i]);
}
