/* stats.c - the counters behind /metrics. Each is one atomic, updated by
 * any worker without a lock; a histogram is a row of cumulative-free bucket
 * counts (made cumulative when printed).
 *
 * A listener's stats outlive the configuration: runtimes refer to one
 * struct listener_stats per listener name, kept below while some runtime
 * names it (its lock is taken when a runtime is made or freed only).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"

const double hist_bounds[HIST_BUCKETS] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120, 600,
};

struct lstats_entry {
	struct lstats_entry *next;
	char *name;
	unsigned refs; /* under lstats_lock */
	struct listener_stats st;
};

static struct lstats_entry *lstats_all;
static pthread_mutex_t lstats_lock = PTHREAD_MUTEX_INITIALIZER;

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
	return rt->lstats[l - rt->cfg->listeners];
}

struct listener_stats *listener_stats_get(const char *name)
{
	struct lstats_entry *e;

	pthread_mutex_lock(&lstats_lock);
	for (e = lstats_all; e; e = e->next)
		if (!strcmp(e->name, name))
			break;
	if (e) {
		e->refs++;
	} else if ((e = calloc(1, sizeof(*e))) && (e->name = strdup(name))) {
		e->refs = 1;
		e->next = lstats_all;
		lstats_all = e;
	} else {
		free(e);
		e = NULL;
	}
	pthread_mutex_unlock(&lstats_lock);
	return e ? &e->st : NULL;
}

void listener_stats_put(struct listener_stats *st)
{
	struct lstats_entry *e, **pp;

	if (!st)
		return;
	e = (struct lstats_entry *)((char *)st - offsetof(struct lstats_entry, st));
	pthread_mutex_lock(&lstats_lock);
	if (--e->refs == 0) {
		for (pp = &lstats_all; *pp != e; pp = &(*pp)->next)
			;
		*pp = e->next;
		/* the last runtime naming it is going: no session holds it */
		BUG_ON(atomic_load(&st->active) != 0);
		free(e->name);
		free(e);
	}
	pthread_mutex_unlock(&lstats_lock);
}
