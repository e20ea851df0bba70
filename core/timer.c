/* timer.c - see timer.h. */
#include "core/timer.h"

#include <string.h>

void wheel_init(struct wheel *wh, uint64_t now_ms)
{
	memset(wh, 0, sizeof(*wh));
	wh->start_ms = now_ms;
}

void timer_del(struct timer *t)
{
	if (!t->pprev)
		return;
	*t->pprev = t->next;
	if (t->next)
		t->next->pprev = t->pprev;
	t->next = NULL;
	t->pprev = NULL;
}

void timer_set(struct wheel *wh, struct timer *t, uint32_t ms, timer_fn *fn)
{
	uint64_t ticks = (ms + TIMER_TICK_MS - 1) / TIMER_TICK_MS;
	struct timer **slot;

	timer_del(t);
	t->fn = fn;
	t->expires = wh->now + (ticks ? ticks : 1);
	slot = &wh->slots[t->expires & (TIMER_SLOTS - 1)];
	t->next = *slot;
	if (t->next)
		t->next->pprev = &t->next;
	t->pprev = slot;
	*slot = t;
}

void wheel_advance(struct wheel *wh, uint64_t now_ms)
{
	uint64_t target = (now_ms - wh->start_ms) / TIMER_TICK_MS;

	while (wh->now < target) {
		struct timer **slot;
		struct timer *t, *next;

		wh->now++;
		slot = &wh->slots[wh->now & (TIMER_SLOTS - 1)];
		/* a callback may arm or delete other timers in this slot, so
		 * restart from the head after each one fires */
		for (t = *slot; t; t = next) {
			next = t->next;
			if (t->expires <= wh->now) {
				timer_del(t);
				t->fn(t);
				next = *slot;
			}
		}
	}
}
