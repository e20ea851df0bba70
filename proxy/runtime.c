/* runtime.c - a configuration with its run-time state, reference counted
 * so a reload never pulls a configuration from under a session. */
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"

struct runtime *runtime_new(struct config *cfg)
{
	struct runtime *rt = calloc(1, sizeof(*rt));

	if (!rt)
		return NULL;
	rt->cfg = cfg;
	atomic_store(&rt->refs, 1);
	rt->pools = calloc(cfg->npools ? cfg->npools : 1, sizeof(*rt->pools));
	rt->lstats = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*rt->lstats));
	if (!rt->pools || !rt->lstats) {
		free(rt->pools);
		free(rt->lstats);
		free(rt);
		return NULL;
	}
	for (size_t i = 0; i < cfg->npools; i++) {
		if (pool_rt_init(&rt->pools[i], &cfg->pools[i]) < 0) {
			for (size_t j = 0; j < i; j++)
				pool_rt_fini(&rt->pools[j]);
			free(rt->pools);
			free(rt->lstats);
			free(rt);
			return NULL;
		}
	}
	return rt;
}

static void runtime_free(struct runtime *rt)
{
	for (size_t i = 0; i < rt->cfg->npools; i++)
		pool_rt_fini(&rt->pools[i]);
	free(rt->pools);
	free(rt->lstats);
	config_free(rt->cfg);
	free(rt);
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
