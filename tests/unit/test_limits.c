/* test_limits.c - the per-client limit table of proxy/limits.c: the client
 * key (prefixes, v4-mapped addresses, one listener's counters apart from
 * another's), the sliding window of connection_rate, the session counts of
 * max_sessions_per_client, and a table that stays within its fixed size
 * while the sessions it counts survive any number of other clients. Time
 * is given (ms); each test counts on a scope of its own. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "proxy/proxy.h"

static const struct cfg_limits default_prefixes = { .ipv4_prefix = 32, .ipv6_prefix = 64 };

static union sockaddr_any addr(const char *text)
{
	union sockaddr_any a;

	memset(&a, 0, sizeof(a));
	if (inet_pton(AF_INET, text, &a.sin.sin_addr) == 1) {
		a.sin.sin_family = AF_INET;
	} else {
		assert_int_equal(inet_pton(AF_INET6, text, &a.sin6.sin6_addr), 1);
		a.sin6.sin6_family = AF_INET6;
	}
	return a;
}

static struct client_key key(const void *scope, const char *text, const struct cfg_limits *l)
{
	union sockaddr_any a = addr(text);
	struct client_key k;

	client_key_make(&k, scope, &a, l ? l : &default_prefixes);
	return k;
}

static bool same(const struct client_key *a, const struct client_key *b)
{
	return a->scope == b->scope && a->bits == b->bits && !memcmp(a->addr, b->addr, 16);
}

/* A session of text at now: admitted (counted) or the limit that refused. */
static enum limit_kind take(const void *scope, const char *text, uint32_t count, uint32_t window,
			    uint32_t max, uint64_t now)
{
	struct client_key k = key(scope, text, NULL);
	bool counted;

	return client_limit_take(&k, count, window, max, now, &counted);
}

static void test_key_masks_to_the_prefix(void **state)
{
	static const int scope, other;
	struct cfg_limits l24 = { .ipv4_prefix = 24, .ipv6_prefix = 48 };
	struct client_key a, b;

	(void)state;
	a = key(&scope, "192.0.2.1", &l24);
	b = key(&scope, "192.0.2.200", &l24);
	assert_true(same(&a, &b));
	b = key(&scope, "192.0.3.1", &l24);
	assert_false(same(&a, &b));
	/* a dual-stack socket's v4-mapped address is the IPv4 client */
	b = key(&scope, "::ffff:192.0.2.77", &l24);
	assert_true(same(&a, &b));
	a = key(&scope, "192.0.2.1", NULL);
	b = key(&scope, "192.0.2.2", NULL);
	assert_false(same(&a, &b));
	a = key(&scope, "2001:db8:1:2::1", NULL);
	b = key(&scope, "2001:db8:1:2:ffff::9", NULL);
	assert_true(same(&a, &b));
	b = key(&scope, "2001:db8:1:3::1", NULL);
	assert_false(same(&a, &b));
	b = key(&scope, "2001:db8:1:3::1", &l24);
	a = key(&scope, "2001:db8:1:ff::1", &l24);
	assert_true(same(&a, &b));
	/* another listener counts apart */
	a = key(&scope, "192.0.2.1", NULL);
	b = key(&other, "192.0.2.1", NULL);
	assert_false(same(&a, &b));
	/* odd prefixes mask inside an octet */
	l24.ipv4_prefix = 20;
	a = key(&scope, "10.1.16.1", &l24);
	b = key(&scope, "10.1.31.254", &l24);
	assert_true(same(&a, &b));
	b = key(&scope, "10.1.32.1", &l24);
	assert_false(same(&a, &b));
}

static void test_rate_sliding_window(void **state)
{
	static const int scope;

	(void)state;
	/* 3 per second, from t = 10 s */
	for (int i = 0; i < 3; i++)
		assert_int_equal(take(&scope, "198.51.100.1", 3, 1000, 0, 10000 + i), LIMIT_NONE);
	assert_int_equal(take(&scope, "198.51.100.1", 3, 1000, 0, 10500), LIMIT_CONNECTION_RATE);
	/* refused attempts do not count; another address is another key */
	for (int i = 0; i < 10; i++)
		assert_int_equal(take(&scope, "198.51.100.1", 3, 1000, 0, 10600),
				 LIMIT_CONNECTION_RATE);
	assert_int_equal(take(&scope, "198.51.100.2", 3, 1000, 0, 10600), LIMIT_NONE);
	/* the next window starts: the one before still counts in full */
	assert_int_equal(take(&scope, "198.51.100.1", 3, 1000, 0, 11000), LIMIT_CONNECTION_RATE);
	assert_int_equal(take(&scope, "198.51.100.1", 3, 1000, 0, 11200), LIMIT_CONNECTION_RATE);
	/* half of it: 3 * 0.5 rounds up to 2, so one more */
	assert_int_equal(take(&scope, "198.51.100.1", 3, 1000, 0, 11500), LIMIT_NONE);
	assert_int_equal(take(&scope, "198.51.100.1", 3, 1000, 0, 11500), LIMIT_CONNECTION_RATE);
	/* 11.9 s: ceil(3 * 0.1) + 1 = 2, one more */
	assert_int_equal(take(&scope, "198.51.100.1", 3, 1000, 0, 11900), LIMIT_NONE);
	assert_int_equal(take(&scope, "198.51.100.1", 3, 1000, 0, 11900), LIMIT_CONNECTION_RATE);
	/* two windows on, nothing is left */
	for (int i = 0; i < 3; i++)
		assert_int_equal(take(&scope, "198.51.100.1", 3, 1000, 0, 14000), LIMIT_NONE);
	assert_int_equal(take(&scope, "198.51.100.1", 3, 1000, 0, 14000), LIMIT_CONNECTION_RATE);
	/* a new window length (a reload) starts over */
	assert_int_equal(take(&scope, "198.51.100.1", 3, 2000, 0, 14001), LIMIT_NONE);
}

static void test_sessions_per_client(void **state)
{
	static const int scope;
	struct client_key k = key(&scope, "203.0.113.9", NULL);
	bool counted;

	(void)state;
	assert_int_equal(client_limit_take(&k, 0, 0, 2, 1, &counted), LIMIT_NONE);
	assert_true(counted);
	assert_int_equal(client_limit_take(&k, 0, 0, 2, 2, &counted), LIMIT_NONE);
	assert_int_equal(client_limit_take(&k, 0, 0, 2, 3, &counted), LIMIT_PER_CLIENT);
	assert_false(counted);
	client_limit_drop(&k);
	assert_int_equal(client_limit_take(&k, 0, 0, 2, 4, &counted), LIMIT_NONE);
	assert_true(counted);
	/* with a rate too: a session refused for the count does not use up
	 * the rate */
	assert_int_equal(client_limit_take(&k, 3, 60000, 2, 5, &counted), LIMIT_PER_CLIENT);
	client_limit_drop(&k);
	client_limit_drop(&k);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(client_limit_take(&k, 3, 60000, 5, 6, &counted), LIMIT_NONE);
		client_limit_drop(&k);
	}
	assert_int_equal(client_limit_take(&k, 3, 60000, 5, 7, &counted), LIMIT_CONNECTION_RATE);
	/* no limit at all: nothing counted, nothing kept */
	assert_int_equal(client_limit_take(&k, 0, 0, 0, 8, &counted), LIMIT_NONE);
	assert_false(counted);
}

/* Far more clients than the table holds: it stays within its size; a
 * client with an open session keeps its count whatever comes after; and
 * the others' places are taken by the least recent. */
static void test_table_bounded(void **state)
{
	static const int scope, pinned_scope;
	struct client_key pinned = key(&pinned_scope, "192.0.2.1", NULL);
	/* each set sees about 48 clients after it: the first one's place is
	 * taken for certain (fewer than 8 later ones in its set is as good
	 * as impossible) */
	size_t cap = client_limit_capacity(), n = 6 * cap;
	struct client_key first, last;
	bool counted;

	(void)state;
	assert_int_equal(client_limit_take(&pinned, 0, 0, 1, 1, &counted), LIMIT_NONE);
	assert_true(counted);
	for (size_t i = 0; i < n; i++) {
		union sockaddr_any a;
		struct client_key k;

		memset(&a, 0, sizeof(a));
		a.sin6.sin6_family = AF_INET6;
		a.sin6.sin6_addr.s6_addr[0] = 0x20;
		a.sin6.sin6_addr.s6_addr[1] = 0x01;
		memcpy(&a.sin6.sin6_addr.s6_addr[4], &i, sizeof(uint32_t));
		client_key_make(&k, &scope, &a, &default_prefixes);
		assert_int_equal(client_limit_take(&k, 1, 3600000, 0, 10 + i, &counted),
				 LIMIT_NONE);
		if (i == 0)
			first = k;
		last = k;
		assert_true(i % 4096 || client_limit_entries() <= cap);
	}
	assert_true(client_limit_entries() <= cap);
	assert_true(client_limit_entries() > cap / 2);
	/* the most recent is still there (1 an hour: refused), the least
	 * recent evicted (so admitted again) */
	assert_int_equal(client_limit_take(&last, 1, 3600000, 0, 10 + n, &counted),
			 LIMIT_CONNECTION_RATE);
	assert_int_equal(client_limit_take(&first, 1, 3600000, 0, 10 + n, &counted), LIMIT_NONE);
	/* still counted: its one session is open */
	assert_int_equal(client_limit_take(&pinned, 0, 0, 1, 20, &counted), LIMIT_PER_CLIENT);
	client_limit_drop(&pinned);
	assert_int_equal(client_limit_take(&pinned, 0, 0, 1, 21, &counted), LIMIT_NONE);
	client_limit_drop(&pinned);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_masks_to_the_prefix),
		cmocka_unit_test(test_rate_sliding_window),
		cmocka_unit_test(test_sessions_per_client),
		cmocka_unit_test(test_table_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
