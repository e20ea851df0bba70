/* timer.h - a hashed timer wheel, one per worker, driven by the ring's
 * multishot timeout. Session timeouts are coarse (TIMER_TICK_MS): a timer
 * fires between its deadline and one tick after it. Not thread-safe: each
 * wheel belongs to one worker.
 */
#ifndef MXLB_TIMER_H
#define MXLB_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#define TIMER_TICK_MS 50
#define TIMER_SLOTS 1024 /* a power of two */

struct timer;
typedef void timer_fn(struct timer *t);

struct timer {
	struct timer *next, **pprev; /* pprev == NULL: not armed */
	uint64_t expires;	     /* in ticks */
	timer_fn *fn;
};

struct wheel {
	struct timer *slots[TIMER_SLOTS];
	uint64_t now; /* the tick processed last */
	uint64_t start_ms;
};

void wheel_init(struct wheel *wh, uint64_t now_ms);
/* (Re)arm t to fire fn after ms milliseconds. */
void timer_set(struct wheel *wh, struct timer *t, uint32_t ms, timer_fn *fn);
void timer_del(struct timer *t);
static inline bool timer_armed(const struct timer *t)
{
	return t->pprev != 0;
}
/* Fire every timer whose deadline is at or before now_ms. */
void wheel_advance(struct wheel *wh, uint64_t now_ms);

#endif
