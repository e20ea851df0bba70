/* test_balance.c - the balancers' distributions (proxy/lb_*.c), and the
 * backend state that pools of successive configurations share (pool.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include "proxy/proxy.h"

#define MAXB 8

/* pool.c's BUG_ON logs before it aborts: fail the test instead. */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	(void)level;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fail_msg("%s: %s", event, msg);
}

struct fixture {
	struct cfg_pool cfg;
	struct cfg_backend backends[MAXB];
	char names[MAXB][24];
	char pool_name[24];
	struct pool_rt p;
};

/* A configuration's pool named pool (a fresh name per call when NULL, so
 * that a failed test leaves nothing shared with the next), backends b0..;
 * pool_fill leaves pool_rt_init to the caller. */
static void pool_fill(struct fixture *f, const char *pool, enum cfg_balance bal,
		      const uint32_t *weights, const bool *backup, size_t n)
{
	static unsigned seq;

	memset(f, 0, sizeof(*f));
	for (size_t i = 0; i < n; i++) {
		snprintf(f->names[i], sizeof(f->names[i]), "b%zu", i);
		f->backends[i].name = f->names[i];
		f->backends[i].weight = weights[i];
		f->backends[i].backup = backup ? backup[i] : false;
	}
	if (pool)
		snprintf(f->pool_name, sizeof(f->pool_name), "%s", pool);
	else
		snprintf(f->pool_name, sizeof(f->pool_name), "p%u", seq++);
	f->cfg.name = f->pool_name;
	f->cfg.balance = bal;
	f->cfg.backends = f->backends;
	f->cfg.nbackends = n;
}

static void pool_make_named(struct fixture *f, const char *pool, enum cfg_balance bal,
			    const uint32_t *weights, const bool *backup, size_t n)
{
	pool_fill(f, pool, bal, weights, backup, n);
	assert_int_equal(pool_rt_init(&f->p, &f->cfg), 0);
}

static void pool_make(struct fixture *f, enum cfg_balance bal, const uint32_t *weights,
		      const bool *backup, size_t n)
{
	pool_make_named(f, NULL, bal, weights, backup, n);
}

/* The end of a pool whose sessions the test made up: they end first. */
static void pool_done(struct fixture *f)
{
	for (size_t i = 0; i < f->p.nbackends; i++)
		atomic_store(&f->p.backends[i].st->active, 0);
	pool_rt_fini(&f->p);
}

static int pick(struct fixture *f, const struct pick_ctx *ctx)
{
	return f->p.lb->pick(&f->p, ctx);
}

static struct pick_ctx ctx_none(void)
{
	static const union sockaddr_any none;
	struct pick_ctx c = { .client = &none, .ehlo = "x" };

	return c;
}

static void test_roundrobin_weights_exact(void **state)
{
	static const uint32_t w[] = { 3, 1 };
	struct fixture f;
	struct pick_ctx c = ctx_none();
	int count[2] = { 0 };

	(void)state;
	pool_make(&f, CFG_BAL_ROUNDROBIN, w, NULL, 2);
	for (int i = 0; i < 4000; i++)
		count[pick(&f, &c)]++;
	/* smooth weighted round robin is exact over whole cycles */
	assert_int_equal(count[0], 3000);
	assert_int_equal(count[1], 1000);
	pool_done(&f);
}

static void test_roundrobin_smooth(void **state)
{
	static const uint32_t w[] = { 5, 1, 1 };
	static const int want[] = { 0, 0, 1, 0, 2, 0, 0 };
	struct fixture f;
	struct pick_ctx c = ctx_none();

	(void)state;
	pool_make(&f, CFG_BAL_ROUNDROBIN, w, NULL, 3);
	for (int i = 0; i < 7; i++)
		assert_int_equal(pick(&f, &c), want[i]);
	pool_done(&f);
}

static void test_backup_only_when_primaries_down(void **state)
{
	static const uint32_t w[] = { 1, 1, 1 };
	static const bool bk[] = { false, false, true };
	enum cfg_balance bals[] = { CFG_BAL_ROUNDROBIN, CFG_BAL_LEASTCONN, CFG_BAL_SOURCE,
				    CFG_BAL_EHLO, CFG_BAL_RANDOM };

	(void)state;
	for (size_t b = 0; b < sizeof(bals) / sizeof(bals[0]); b++) {
		struct fixture f;
		struct pick_ctx c = ctx_none();

		pool_make(&f, bals[b], w, bk, 3);
		for (int i = 0; i < 100; i++)
			assert_int_not_equal(pick(&f, &c), 2);
		atomic_store(&f.p.backends[0].st->up, false);
		for (int i = 0; i < 100; i++)
			assert_int_equal(pick(&f, &c), 1);
		atomic_store(&f.p.backends[1].st->up, false);
		for (int i = 0; i < 100; i++)
			assert_int_equal(pick(&f, &c), 2);
		atomic_store(&f.p.backends[2].st->up, false);
		assert_int_equal(pick(&f, &c), -1);
		pool_done(&f);
	}
}

static void test_tried_and_full_are_skipped(void **state)
{
	static const uint32_t w[] = { 1, 1, 1 };
	struct fixture f;
	struct pick_ctx c = ctx_none();
	uint16_t tried[] = { 0 };

	(void)state;
	pool_make(&f, CFG_BAL_ROUNDROBIN, w, NULL, 3);
	f.backends[1].max_sessions = 2;
	atomic_store(&f.p.backends[1].st->active, 2);
	c.tried = tried;
	c.ntried = 1;
	for (int i = 0; i < 50; i++)
		assert_int_equal(pick(&f, &c), 2);
	pool_done(&f);
}

static void test_leastconn(void **state)
{
	static const uint32_t w[] = { 1, 1, 2 };
	struct fixture f;
	struct pick_ctx c = ctx_none();
	int seen[3] = { 0 };

	(void)state;
	pool_make(&f, CFG_BAL_LEASTCONN, w, NULL, 3);
	atomic_store(&f.p.backends[0].st->active, 5);
	atomic_store(&f.p.backends[1].st->active, 3);
	atomic_store(&f.p.backends[2].st->active, 8); /* 4 per unit of weight */
	assert_int_equal(pick(&f, &c), 1);
	/* all idle: ties rotate over every backend */
	for (int i = 0; i < 3; i++)
		atomic_store(&f.p.backends[i].st->active, 0);
	for (int i = 0; i < 30; i++)
		seen[pick(&f, &c)]++;
	assert_true(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
	pool_done(&f);
}

static void test_random_two_choices(void **state)
{
	static const uint32_t w[] = { 1, 1 };
	struct fixture f;
	struct pick_ctx c = ctx_none();
	int count[2] = { 0 };

	(void)state;
	pool_make(&f, CFG_BAL_RANDOM, w, NULL, 2);
	for (int i = 0; i < 10000; i++)
		count[pick(&f, &c)]++;
	assert_in_range(count[0], 4500, 5500);
	/* a loaded backend wins only when both draws land on it (1/4) */
	atomic_store(&f.p.backends[0].st->active, 10);
	count[0] = count[1] = 0;
	for (int i = 0; i < 10000; i++)
		count[pick(&f, &c)]++;
	assert_in_range(count[0], 2000, 3000);
	pool_done(&f);
}

/* Consistent hashing: shares near even, and a backend going down moves
 * only its own keys. */
static void chash_check(enum cfg_balance bal)
{
	static const uint32_t w[] = { 1, 1, 1, 1 };
	enum { KEYS = 8000 };
	static int before[KEYS];
	struct fixture f;
	int count[4] = { 0 };

	pool_make(&f, bal, w, NULL, 4);
	for (int k = 0; k < KEYS; k++) {
		union sockaddr_any a = { 0 };
		char name[32];
		struct pick_ctx c = { .client = &a, .ehlo = name };

		a.sin.sin_family = AF_INET;
		a.sin.sin_addr.s_addr = htonl(0x0a000000u + (uint32_t)k * 7919u);
		snprintf(name, sizeof(name), "MX%d.Example.NET", k);
		before[k] = pick(&f, &c);
		count[before[k]]++;
		/* the EHLO name hashes case-insensitively */
		if (bal == CFG_BAL_EHLO) {
			snprintf(name, sizeof(name), "mx%d.example.net", k);
			assert_int_equal(pick(&f, &c), before[k]);
		}
	}
	for (int i = 0; i < 4; i++)
		assert_in_range(count[i], KEYS / 4 * 7 / 10, KEYS / 4 * 13 / 10);
	atomic_store(&f.p.backends[2].st->up, false);
	for (int k = 0; k < KEYS; k++) {
		union sockaddr_any a = { 0 };
		char name[32];
		struct pick_ctx c = { .client = &a, .ehlo = name };
		int now;

		a.sin.sin_family = AF_INET;
		a.sin.sin_addr.s_addr = htonl(0x0a000000u + (uint32_t)k * 7919u);
		snprintf(name, sizeof(name), "MX%d.Example.NET", k);
		now = pick(&f, &c);
		assert_int_not_equal(now, 2);
		if (before[k] != 2)
			assert_int_equal(now, before[k]);
	}
	pool_done(&f);
}

static void test_source_consistent(void **state)
{
	(void)state;
	chash_check(CFG_BAL_SOURCE);
}

static void test_ehlo_consistent(void **state)
{
	(void)state;
	chash_check(CFG_BAL_EHLO);
}

static unsigned active(const struct fixture *f, size_t i)
{
	return atomic_load(&f->p.backends[i].st->active);
}

/* A reload: the pool of the new configuration (other balancer, backends
 * in another order) shares its backends' states with the old one, so the
 * old sessions count for max_sessions and leastconn, and end on it. */
static void test_state_outlives_a_configuration(void **state)
{
	static const uint32_t w[] = { 1, 1 };
	struct fixture a, b;
	struct pick_ctx c = ctx_none(), only_b0 = c, only_first = c;
	uint16_t second[] = { 1 }, first[] = { 0 };

	(void)state;
	only_b0.tried = second;
	only_b0.ntried = 1;
	only_first.tried = first;
	only_first.ntried = 1;
	pool_make_named(&a, "shared", CFG_BAL_ROUNDROBIN, w, NULL, 2);
	a.backends[0].max_sessions = 2;
	assert_int_equal(pool_pick(&a.p, &only_b0), 0);
	assert_int_equal(pool_pick(&a.p, &only_b0), 0);
	assert_int_equal(pool_pick(&a.p, &only_b0), -1);

	pool_fill(&b, "shared", CFG_BAL_LEASTCONN, w, NULL, 2);
	b.backends[0].name = "b1";
	b.backends[1].name = "b0";
	b.backends[1].max_sessions = 2;
	assert_int_equal(pool_rt_init(&b.p, &b.cfg), 0);
	assert_ptr_equal(b.p.backends[1].st, a.p.backends[0].st);
	assert_ptr_equal(b.p.backends[0].st, a.p.backends[1].st);
	assert_int_equal(active(&b, 1), 2);
	/* b0 is full with the old configuration's sessions */
	assert_int_equal(pool_pick(&b.p, &only_first), -1);
	/* leastconn counts them: b1 until it has as many */
	assert_int_equal(pool_pick(&b.p, &c), 0);
	assert_int_equal(pool_pick(&b.p, &c), 0);
	assert_int_equal(active(&b, 0), 2);
	assert_int_equal(atomic_load(&b.p.backends[1].st->total), 2);

	/* the old sessions end under the new configuration; the old goes */
	pool_drop(&a.p, 0);
	pool_drop(&a.p, 0);
	assert_int_equal(active(&b, 1), 0);
	pool_rt_fini(&a.p);
	assert_int_equal(atomic_load(&b.p.backends[1].st->total), 2);
	assert_int_equal(pool_pick(&b.p, &only_first), 1);
	pool_drop(&b.p, 1);
	pool_drop(&b.p, 0);
	pool_drop(&b.p, 0);
	assert_int_equal(active(&b, 0), 0);
	pool_rt_fini(&b.p);

	/* nobody names the pool any more: its states went with the last */
	pool_make_named(&a, "shared", CFG_BAL_ROUNDROBIN, w, NULL, 2);
	assert_int_equal(atomic_load(&a.p.backends[0].st->total), 0);
	assert_int_equal(atomic_load(&a.p.backends[1].st->total), 0);
	pool_done(&a);
}

static void test_random_counts_other_configurations(void **state)
{
	static const uint32_t w[] = { 1, 1 };
	struct fixture a, b;
	struct pick_ctx c = ctx_none();
	int count[2] = { 0 };

	(void)state;
	pool_make_named(&a, "rshared", CFG_BAL_RANDOM, w, NULL, 2);
	atomic_store(&a.p.backends[0].st->active, 10);
	pool_make_named(&b, "rshared", CFG_BAL_RANDOM, w, NULL, 2);
	for (int i = 0; i < 10000; i++)
		count[pick(&b, &c)]++;
	assert_in_range(count[0], 2000, 3000);
	pool_done(&b);
	pool_done(&a);
}

static void set_address(struct fixture *f, size_t i, uint16_t port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&f->backends[i].address.ss;

	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	f->backends[i].address.len = sizeof(*sin);
}

/* What a configuration coming into force does to the states it shares. */
static void test_adopt(void **state)
{
	static const uint32_t w1[] = { 1 }, w3[] = { 3 };
	struct fixture a, b, c, d, e;
	struct backend_rt *st;

	(void)state;
	pool_fill(&a, "adopt", CFG_BAL_ROUNDROBIN, w1, NULL, 1);
	set_address(&a, 0, 25);
	assert_int_equal(pool_rt_init(&a.p, &a.cfg), 0);
	st = a.p.backends[0].st;
	atomic_store(&st->up, false);
	atomic_store(&st->admin, ADMIN_DRAIN);
	atomic_store(&st->weight, 7); /* an admin's */
	atomic_store(&st->caps, 5);
	atomic_store(&st->last_check_ms, 123);
	atomic_store(&st->active, 1);

	/* same address, weight 3 in the file: made, nothing changed yet */
	pool_fill(&b, "adopt", CFG_BAL_ROUNDROBIN, w3, NULL, 1);
	set_address(&b, 0, 25);
	assert_int_equal(pool_rt_init(&b.p, &b.cfg), 0);
	assert_ptr_equal(b.p.backends[0].st, st);
	assert_int_equal(atomic_load(&st->weight), 7);
	pool_rt_adopt(&b.p);
	/* in force: the admin's weight and drain and the checks' verdict stay */
	assert_int_equal(atomic_load(&st->weight), 7);
	assert_int_equal(atomic_load(&st->admin), ADMIN_DRAIN);
	assert_false(atomic_load(&st->up));
	assert_int_equal(atomic_load(&st->caps), 5);

	/* a weight nobody set follows the file */
	atomic_store(&st->weight, 3);
	pool_fill(&c, "adopt", CFG_BAL_ROUNDROBIN, w1, NULL, 1);
	set_address(&c, 0, 25);
	assert_int_equal(pool_rt_init(&c.p, &c.cfg), 0);
	pool_rt_adopt(&c.p);
	assert_int_equal(atomic_load(&st->weight), 1);

	/* another address: health state fresh, the session still counted */
	pool_fill(&d, "adopt", CFG_BAL_ROUNDROBIN, w3, NULL, 1);
	set_address(&d, 0, 26);
	assert_int_equal(pool_rt_init(&d.p, &d.cfg), 0);
	pool_rt_adopt(&d.p);
	assert_true(atomic_load(&st->up));
	assert_int_equal(atomic_load(&st->admin), ADMIN_ENABLED);
	assert_int_equal(atomic_load(&st->weight), 3);
	assert_int_equal(atomic_load(&st->caps), 0);
	assert_int_equal(atomic_load(&st->last_check_ms), 0);
	assert_int_equal(atomic_load(&st->active), 1);

	/* a pool without checks has its backends up */
	atomic_store(&st->up, false);
	pool_fill(&e, "adopt", CFG_BAL_ROUNDROBIN, w3, NULL, 1);
	set_address(&e, 0, 26);
	e.cfg.health.check = CFG_CHECK_NONE;
	assert_int_equal(pool_rt_init(&e.p, &e.cfg), 0);
	pool_rt_adopt(&e.p);
	assert_true(atomic_load(&st->up));

	pool_done(&a);
	pool_rt_fini(&b.p);
	pool_rt_fini(&c.p);
	pool_rt_fini(&d.p);
	pool_rt_fini(&e.p);
}

/* Two configurations' pools, each under its own lock, take one backend
 * with max_sessions 1 at once: never two sessions on it. */
struct race {
	struct fixture *f;
	atomic_uint *over;
	atomic_uint *taken;
};

static void *race_run(void *arg)
{
	struct race *r = arg;
	struct pick_ctx c = ctx_none();

	for (int n = 0; n < 50000; n++) {
		int i = pool_pick(&r->f->p, &c);

		if (i < 0)
			continue;
		atomic_fetch_add(r->taken, 1);
		if (atomic_load(&r->f->p.backends[i].st->active) > 1)
			atomic_fetch_add(r->over, 1);
		pool_drop(&r->f->p, i);
	}
	return NULL;
}

static void test_max_sessions_across_configurations(void **state)
{
	static const uint32_t w[] = { 1 };
	struct fixture a, b;
	atomic_uint over = 0, taken = 0;
	struct race ra = { &a, &over, &taken }, rb = { &b, &over, &taken };
	pthread_t ta, tb;

	(void)state;
	pool_fill(&a, "race", CFG_BAL_LEASTCONN, w, NULL, 1);
	a.backends[0].max_sessions = 1;
	assert_int_equal(pool_rt_init(&a.p, &a.cfg), 0);
	pool_fill(&b, "race", CFG_BAL_ROUNDROBIN, w, NULL, 1);
	b.backends[0].max_sessions = 1;
	assert_int_equal(pool_rt_init(&b.p, &b.cfg), 0);
	assert_int_equal(pthread_create(&ta, NULL, race_run, &ra), 0);
	assert_int_equal(pthread_create(&tb, NULL, race_run, &rb), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	assert_true(atomic_load(&taken) > 0);
	assert_int_equal(atomic_load(&over), 0);
	assert_int_equal(active(&a, 0), 0);
	pool_rt_fini(&a.p);
	pool_rt_fini(&b.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundrobin_weights_exact),
		cmocka_unit_test(test_roundrobin_smooth),
		cmocka_unit_test(test_backup_only_when_primaries_down),
		cmocka_unit_test(test_tried_and_full_are_skipped),
		cmocka_unit_test(test_leastconn),
		cmocka_unit_test(test_random_two_choices),
		cmocka_unit_test(test_source_consistent),
		cmocka_unit_test(test_ehlo_consistent),
		cmocka_unit_test(test_state_outlives_a_configuration),
		cmocka_unit_test(test_random_counts_other_configurations),
		cmocka_unit_test(test_adopt),
		cmocka_unit_test(test_max_sessions_across_configurations),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
