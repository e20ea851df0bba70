/* test_balance.c - the balancers' distributions (proxy/lb_*.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include "proxy/proxy.h"

#define MAXB 8

struct fixture {
	struct cfg_pool cfg;
	struct cfg_backend backends[MAXB];
	char names[MAXB][24];
	struct pool_rt p;
};

static void pool_make(struct fixture *f, enum cfg_balance bal, const uint32_t *weights,
		      const bool *backup, size_t n)
{
	memset(f, 0, sizeof(*f));
	for (size_t i = 0; i < n; i++) {
		snprintf(f->names[i], sizeof(f->names[i]), "b%zu", i);
		f->backends[i].name = f->names[i];
		f->backends[i].weight = weights[i];
		f->backends[i].backup = backup ? backup[i] : false;
	}
	f->cfg.name = "p";
	f->cfg.balance = bal;
	f->cfg.backends = f->backends;
	f->cfg.nbackends = n;
	assert_int_equal(pool_rt_init(&f->p, &f->cfg), 0);
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
	pool_rt_fini(&f.p);
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
	pool_rt_fini(&f.p);
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
		atomic_store(&f.p.backends[0].up, false);
		for (int i = 0; i < 100; i++)
			assert_int_equal(pick(&f, &c), 1);
		atomic_store(&f.p.backends[1].up, false);
		for (int i = 0; i < 100; i++)
			assert_int_equal(pick(&f, &c), 2);
		atomic_store(&f.p.backends[2].up, false);
		assert_int_equal(pick(&f, &c), -1);
		pool_rt_fini(&f.p);
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
	atomic_store(&f.p.backends[1].active, 2);
	c.tried = tried;
	c.ntried = 1;
	for (int i = 0; i < 50; i++)
		assert_int_equal(pick(&f, &c), 2);
	pool_rt_fini(&f.p);
}

static void test_leastconn(void **state)
{
	static const uint32_t w[] = { 1, 1, 2 };
	struct fixture f;
	struct pick_ctx c = ctx_none();
	int seen[3] = { 0 };

	(void)state;
	pool_make(&f, CFG_BAL_LEASTCONN, w, NULL, 3);
	atomic_store(&f.p.backends[0].active, 5);
	atomic_store(&f.p.backends[1].active, 3);
	atomic_store(&f.p.backends[2].active, 8); /* 4 per unit of weight */
	assert_int_equal(pick(&f, &c), 1);
	/* all idle: ties rotate over every backend */
	for (int i = 0; i < 3; i++)
		atomic_store(&f.p.backends[i].active, 0);
	for (int i = 0; i < 30; i++)
		seen[pick(&f, &c)]++;
	assert_true(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
	pool_rt_fini(&f.p);
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
	atomic_store(&f.p.backends[0].active, 10);
	count[0] = count[1] = 0;
	for (int i = 0; i < 10000; i++)
		count[pick(&f, &c)]++;
	assert_in_range(count[0], 2000, 3000);
	pool_rt_fini(&f.p);
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
	atomic_store(&f.p.backends[2].up, false);
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
	pool_rt_fini(&f.p);
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
