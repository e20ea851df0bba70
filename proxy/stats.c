/* stats.c - the counters behind /metrics. Each is one atomic, updated by
 * any worker without a lock; a histogram is a row of cumulative-free bucket
 * counts (made cumulative when printed).
 */
#include "proxy/proxy.h"

const double hist_bounds[HIST_BUCKETS] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120, 600,
};

void hist_observe(struct hist *h, uint64_t usec)
{
	double s = (double)usec / 1e6;
	size_t i = 0;

	while (i < HIST_BUCKETS && s > hist_bounds[i])
		i++;
	atomic_fetch_add(&h->count[i], 1);
	atomic_fetch_add(&h->sum_usec, usec);
}

struct listener_stats *listener_stats(const struct runtime *rt, const struct cfg_listener *l)
{
	return &rt->lstats[l - rt->cfg->listeners];
}
