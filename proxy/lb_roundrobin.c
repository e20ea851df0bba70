/* lb_roundrobin.c - smooth weighted round robin (as nginx does it): each
 * pick adds every eligible backend's weight to its current weight, takes
 * the largest, and subtracts the total from it. Weights 5:1:1 give
 * a a b a c a a, not a a a a a b c. Backups are used only when no primary
 * backend is eligible.
 */
#include "proxy/proxy.h"

static int rr_pass(struct pool_rt *p, const struct pick_ctx *ctx, bool backup)
{
	int best = -1, total = 0;

	for (size_t i = 0; i < p->nbackends; i++) {
		struct pool_backend *b = &p->backends[i];
		unsigned w = backend_weight(b->st);

		if (b->cfg->backup != backup || !pool_eligible(p, i, ctx))
			continue;
		b->cur_weight += (int)w;
		total += (int)w;
		if (best < 0 || b->cur_weight > p->backends[best].cur_weight)
			best = (int)i;
	}
	if (best >= 0)
		p->backends[best].cur_weight -= total;
	return best;
}

static int rr_pick(struct pool_rt *p, const struct pick_ctx *ctx)
{
	int i = rr_pass(p, ctx, false);

	return i >= 0 ? i : rr_pass(p, ctx, true);
}

const struct lb_ops lb_roundrobin = {
	.name = "roundrobin",
	.pick = rr_pick,
};
