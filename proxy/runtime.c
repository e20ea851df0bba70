/* runtime.c - a configuration with its run-time state, reference counted
 * so a reload never pulls a configuration from under a session. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"
#include "tls/tls.h"

static void runtime_release(struct runtime *rt, size_t npools)
{
	for (size_t i = 0; i < npools; i++)
		pool_rt_fini(&rt->pools[i]);
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

void runtime_ref(struct runtime *rt)
{
	atomic_fetch_add(&rt->refs, 1);
}

void runtime_unref(struct runtime *rt)
{
	if (rt && atomic_fetch_sub(&rt->refs, 1) == 1)
		runtime_free(rt);
}

static const struct pool_rt *find_pool(const struct runtime *rt, const char *name)
{
	for (size_t i = 0; i < rt->cfg->npools; i++)
		if (!strcmp(rt->pools[i].cfg->name, name))
			return &rt->pools[i];
	return NULL;
}

void runtime_carry(struct runtime *to, const struct runtime *from)
{
	for (size_t i = 0; i < to->cfg->npools; i++) {
		struct pool_rt *np = &to->pools[i];
		const struct pool_rt *op = find_pool(from, np->cfg->name);

		for (size_t j = 0; op && j < np->nbackends; j++) {
			struct backend_rt *nb = &np->backends[j];

			for (size_t k = 0; k < op->nbackends; k++) {
				const struct backend_rt *ob = &op->backends[k];
				const struct cfg_backend *oc = ob->cfg, *nc = nb->cfg;

				if (strcmp(oc->name, nc->name) || oc->address.len != nc->address.len ||
				    memcmp(&oc->address.ss, &nc->address.ss, oc->address.len))
					continue;
				atomic_store(&nb->up, atomic_load(&ob->up));
				atomic_store(&nb->admin, atomic_load(&ob->admin));
				/* a weight set by an admin outlives the reload */
				if (atomic_load(&ob->weight) != oc->weight)
					atomic_store(&nb->weight, atomic_load(&ob->weight));
				atomic_store(&nb->caps, atomic_load(&ob->caps));
				atomic_store(&nb->size_max, atomic_load(&ob->size_max));
				atomic_store(&nb->last_check_ms, atomic_load(&ob->last_check_ms));
				atomic_store(&nb->last_check_ok, atomic_load(&ob->last_check_ok));
				break;
			}
		}
	}
}
