/* lb_chash.c - consistent hashing for `source` (the client address) and
 * `ehlo` (the lower-cased EHLO name). Each backend owns points on a ring,
 * in proportion to its weight; a key goes to the first eligible backend at
 * or after its hash. A backend that goes down hands only its own keys to
 * its ring neighbours; every other key stays where it was.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"

#define CHASH_POINTS_PER_WEIGHT 160
#define CHASH_POINTS_MAX 16000 /* per backend */

struct chash_point {
	uint64_t hash;
	uint32_t backend;
};

struct chash {
	struct chash_point *pts;
	size_t n;
};

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t fnv64(const uint8_t *p, size_t n, bool fold_case)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (fold_case ? (uint8_t)tolower(p[i]) : p[i])) * 0x100000001b3ull;
	return mix64(h);
}

static int point_cmp(const void *a, const void *b)
{
	const struct chash_point *x = a, *y = b;

	return x->hash < y->hash ? -1 : x->hash > y->hash;
}

static size_t points_of(const struct cfg_backend *b)
{
	uint64_t n = (uint64_t)b->weight * CHASH_POINTS_PER_WEIGHT;

	return n > CHASH_POINTS_MAX ? CHASH_POINTS_MAX : (size_t)n;
}

static int chash_init(struct pool_rt *p)
{
	struct chash *ch = calloc(1, sizeof(*ch));
	size_t total = 0, k = 0;

	if (!ch)
		return -1;
	for (size_t i = 0; i < p->nbackends; i++)
		total += points_of(p->backends[i].cfg);
	ch->pts = calloc(total ? total : 1, sizeof(*ch->pts));
	if (!ch->pts) {
		free(ch);
		return -1;
	}
	for (size_t i = 0; i < p->nbackends; i++) {
		const struct cfg_backend *b = p->backends[i].cfg;
		/* points follow the backend's name, not its position, so that
		 * adding or removing a backend in the file moves only its keys */
		uint64_t base = fnv64((const uint8_t *)b->name, strlen(b->name), false);

		for (size_t j = 0; j < points_of(b); j++) {
			ch->pts[k].hash = mix64(base + j * 0x9e3779b97f4a7c15ull);
			ch->pts[k].backend = (uint32_t)i;
			k++;
		}
	}
	ch->n = k;
	qsort(ch->pts, ch->n, sizeof(*ch->pts), point_cmp);
	p->lb_state = ch;
	return 0;
}

static void chash_free(struct pool_rt *p)
{
	struct chash *ch = p->lb_state;

	if (ch)
		free(ch->pts);
	free(ch);
	p->lb_state = NULL;
}

static int chash_lookup(struct pool_rt *p, const struct pick_ctx *ctx, uint64_t h, bool backup)
{
	struct chash *ch = p->lb_state;
	size_t lo = 0, hi = ch->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (ch->pts[mid].hash < h)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t k = 0; k < ch->n; k++) {
		uint32_t i = ch->pts[(lo + k) % ch->n].backend;

		if (p->backends[i].cfg->backup == backup && pool_eligible(p, i, ctx))
			return (int)i;
	}
	return -1;
}

static int chash_pick_key(struct pool_rt *p, const struct pick_ctx *ctx, uint64_t h)
{
	int i = chash_lookup(p, ctx, h, false);

	return i >= 0 ? i : chash_lookup(p, ctx, h, true);
}

static int source_pick(struct pool_rt *p, const struct pick_ctx *ctx)
{
	uint8_t key[16] = { 0 };

	/* v4 and v4-mapped v6 hash alike */
	if (ctx->client->sa.sa_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &ctx->client->sin.sin_addr, 4);
	} else if (ctx->client->sa.sa_family == AF_INET6) {
		memcpy(key, &ctx->client->sin6.sin6_addr, 16);
	}
	return chash_pick_key(p, ctx, fnv64(key, sizeof(key), false));
}

static int ehlo_pick(struct pool_rt *p, const struct pick_ctx *ctx)
{
	const char *name = ctx->ehlo ? ctx->ehlo : "";

	return chash_pick_key(p, ctx, fnv64((const uint8_t *)name, strlen(name), true));
}

const struct lb_ops lb_source = {
	.name = "source",
	.init = chash_init,
	.pick = source_pick,
	.free = chash_free,
};

const struct lb_ops lb_ehlo = {
	.name = "ehlo",
	.init = chash_init,
	.pick = ehlo_pick,
	.free = chash_free,
};
