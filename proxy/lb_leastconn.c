/* lb_leastconn.c - the eligible backend with the fewest active sessions
 * per unit of weight; ties go round robin, so that an idle pool still
 * spreads its sessions. Backups only when no primary is eligible.
 */
#include "proxy/proxy.h"

static int lc_pass(struct pool_rt *p, const struct pick_ctx *ctx, bool backup)
{
	int best = -1;
	uint64_t best_load = 0;

	for (size_t k = 0; k < p->nbackends; k++) {
		/* start after the last pick to rotate among equals */
		size_t i = (k + p->rand_state + 1) % p->nbackends;
		struct backend_rt *b = p->backends[i].st;
		uint64_t load;

		if (p->backends[i].cfg->backup != backup || !pool_eligible(p, i, ctx))
			continue;
		/* active/weight compared without division: scale by a constant */
		load = (uint64_t)atomic_load(&b->active) * 1000000u / backend_weight(b);
		if (best < 0 || load < best_load) {
			best = (int)i;
			best_load = load;
		}
	}
	if (best >= 0)
		p->rand_state = (uint64_t)best;
	return best;
}

static int lc_pick(struct pool_rt *p, const struct pick_ctx *ctx)
{
	int i = lc_pass(p, ctx, false);

	return i >= 0 ? i : lc_pass(p, ctx, true);
}

const struct lb_ops lb_leastconn = {
	.name = "leastconn",
	.pick = lc_pick,
};
