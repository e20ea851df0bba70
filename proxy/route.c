/* route.c - routes pick a pool; the pool's balancer picks a backend. */
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"

static bool route_matches(const struct cfg_route *r, const struct session *s)
{
	if (r->ehlo && (!s->ehlo_name || fnmatch(r->ehlo, s->ehlo_name, FNM_CASEFOLD) != 0))
		return false;
	if (r->has_client && !config_cidr_match(&r->client, &s->peer.sa))
		return false;
	if (r->sni && (!s->sni || fnmatch(r->sni, s->sni, FNM_CASEFOLD) != 0))
		return false;
	return true;
}

struct pool_rt *route_pick_pool(const struct session *s)
{
	const struct cfg_pool *p = s->l->pool;

	for (size_t i = 0; i < s->l->nroutes; i++) {
		if (route_matches(&s->l->routes[i], s)) {
			p = s->l->routes[i].pool;
			break;
		}
	}
	return &s->rt->pools[p->index];
}

int pool_take(struct pool_rt *p, struct session *s)
{
	struct pick_ctx ctx = {
		.client = &s->peer,
		.ehlo = s->ehlo_name,
		.tried = s->tried,
		.ntried = s->ntried,
	};
	int i;

	if (s->ntried >= MAX_TRIES)
		return -1;
	i = pool_pick(p, &ctx);
	if (i >= 0)
		s->tried[s->ntried++] = (uint16_t)i;
	return i;
}
