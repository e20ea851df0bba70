/* lb_random.c - the power of two random choices: two backends drawn at
 * random in proportion to their weights; the one with fewer active
 * sessions per weight wins. Backups only when no primary is eligible.
 */
#include "proxy/proxy.h"

/* xorshift64*: fast, and good enough to pick backends */
static uint64_t next_rand(struct pool_rt *p)
{
	uint64_t x = p->rand_state ? p->rand_state : 0x9e3779b97f4a7c15ull;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	p->rand_state = x;
	return x * 0x2545f4914f6cdd1dull;
}

static int draw(struct pool_rt *p, const struct pick_ctx *ctx, bool backup, uint64_t total)
{
	uint64_t r = next_rand(p) % total;

	for (size_t i = 0; i < p->nbackends; i++) {
		struct backend_rt *b = p->backends[i].st;

		if (p->backends[i].cfg->backup != backup || !pool_eligible(p, i, ctx))
			continue;
		if (r < backend_weight(b))
			return (int)i;
		r -= backend_weight(b);
	}
	return -1;
}

static int rnd_pass(struct pool_rt *p, const struct pick_ctx *ctx, bool backup)
{
	uint64_t total = 0;
	struct backend_rt *sa, *sb;
	int a, b;

	for (size_t i = 0; i < p->nbackends; i++)
		if (p->backends[i].cfg->backup == backup && pool_eligible(p, i, ctx))
			total += backend_weight(p->backends[i].st);
	if (!total)
		return -1;
	a = draw(p, ctx, backup, total);
	b = draw(p, ctx, backup, total);
	if (a < 0 || b < 0)
		return a < 0 ? b : a;
	sa = p->backends[a].st;
	sb = p->backends[b].st;
	return (uint64_t)atomic_load(&sb->active) * backend_weight(sa) <
			       (uint64_t)atomic_load(&sa->active) * backend_weight(sb)
		       ? b
		       : a;
}

static int rnd_pick(struct pool_rt *p, const struct pick_ctx *ctx)
{
	int i = rnd_pass(p, ctx, false);

	return i >= 0 ? i : rnd_pass(p, ctx, true);
}

const struct lb_ops lb_random = {
	.name = "random",
	.pick = rnd_pick,
};
