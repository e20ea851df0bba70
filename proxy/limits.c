/* limits.c - a listener's per-client limits (SPEC §9): limits.connection_rate
 * and max_sessions_per_client, both counted per client key: the address
 * masked to limits.ipv4_prefix or ipv6_prefix (a v4-mapped IPv6 address
 * counts as IPv4), on the listener's own counters (per listener name, so a
 * reload goes on counting).
 *
 * One table shared by the workers, of a fixed size: LIMIT_SETS sets of
 * LIMIT_WAYS entries, a key hashed (with a seed of the process, so that
 * clients cannot aim at one set) to one set, a lock per stripe of sets. A
 * key new to a full set takes the place of the entry used least recently
 * among those that hold no session (an entry that does is never evicted,
 * or its sessions would be dropped from a count they were never taken
 * from). When every entry of the set holds sessions, the client is let in
 * uncounted: the table is then as full as the server is, and refusing
 * mail for lack of a slot would be worse than a limit not applied.
 *
 * The rate is a sliding window of two buckets: sessions admitted in the
 * current window and in the one before, the latter weighted by how much
 * of it the sliding window still covers (rounded up, so that a burst at a
 * window's end is not forgotten at the next one's start). Only admitted
 * sessions count: a client that keeps trying gets in at the rate, no
 * faster and no slower.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "proxy/proxy.h"

#define LIMIT_SETS 8192
#define LIMIT_WAYS 8
#define LIMIT_STRIPES 256

struct limit_entry {
	const void *scope;  /* the listener's stats; NULL: a free entry */
	uint8_t addr[16];   /* masked */
	uint8_t bits;	    /* the mask's length over addr */
	uint32_t sessions;  /* open sessions counted (max_sessions_per_client) */
	uint32_t cur, prev; /* admitted in window `win` and in the one before */
	uint32_t window;    /* its length, ms: a reload may change it */
	uint64_t win;	    /* the current window's number (now / window) */
	uint64_t used;	    /* ms, last taken: the least recent is evicted */
};

static struct limit_entry (*table)[LIMIT_WAYS];
static pthread_mutex_t stripes[LIMIT_STRIPES];
static uint64_t seed;
static pthread_once_t table_once = PTHREAD_ONCE_INIT;
static bool table_ok;

static void table_init(void)
{
	/* calloc: the pages are touched only as sets are used */
	table = calloc(LIMIT_SETS, sizeof(*table));
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
		seed = clock_usec() ^ (uint64_t)(uintptr_t)&seed;
	for (size_t i = 0; i < LIMIT_STRIPES; i++)
		pthread_mutex_init(&stripes[i], NULL);
	table_ok = table != NULL;
}

void client_key_make(struct client_key *k, const void *scope, const union sockaddr_any *a,
		     const struct cfg_limits *lim)
{
	unsigned bits = lim->ipv6_prefix;

	memset(k, 0, sizeof(*k));
	k->scope = scope;
	if (a->sa.sa_family == AF_INET) {
		k->addr[10] = k->addr[11] = 0xff;
		memcpy(k->addr + 12, &a->sin.sin_addr, 4);
		bits = 96 + lim->ipv4_prefix;
	} else if (a->sa.sa_family == AF_INET6) {
		memcpy(k->addr, &a->sin6.sin6_addr, 16);
		if (IN6_IS_ADDR_V4MAPPED(&a->sin6.sin6_addr))
			bits = 96 + lim->ipv4_prefix;
	}
	for (unsigned i = 0; i < 16; i++) {
		unsigned keep = bits >= 8 * (i + 1) ? 8 : bits > 8 * i ? bits - 8 * i : 0;

		k->addr[i] &= (uint8_t)(0xff00u >> keep);
	}
	k->bits = (uint8_t)bits;
}

static uint64_t mix(uint64_t h, uint64_t v)
{
	h ^= v;
	h *= 0x9e3779b97f4a7c15ull;
	return h ^ (h >> 29);
}

static size_t key_set(const struct client_key *k)
{
	uint64_t a, b, h = seed;

	memcpy(&a, k->addr, 8);
	memcpy(&b, k->addr + 8, 8);
	h = mix(h, a);
	h = mix(h, b);
	h = mix(h, (uint64_t)(uintptr_t)k->scope ^ (uint64_t)k->bits << 56);
	return (size_t)(mix(h, seed) % LIMIT_SETS);
}

static bool key_is(const struct limit_entry *e, const struct client_key *k)
{
	return e->scope == k->scope && e->bits == k->bits && !memcmp(e->addr, k->addr, 16);
}

/* The entry of k in its set, made (in place of the least recent one that
 * holds no session) when missing; NULL when every one holds sessions. */
static struct limit_entry *entry_of(struct limit_entry *set, const struct client_key *k)
{
	struct limit_entry *victim = NULL;

	for (size_t i = 0; i < LIMIT_WAYS; i++) {
		struct limit_entry *e = &set[i];

		if (e->scope && key_is(e, k))
			return e;
		if (e->sessions)
			continue;
		if (!victim || !e->scope || (victim->scope && e->used < victim->used))
			victim = e;
	}
	if (victim) {
		*victim = (struct limit_entry){ .scope = k->scope, .bits = k->bits };
		memcpy(victim->addr, k->addr, 16);
	}
	return victim;
}

/* Sessions admitted in the sliding window that ends now. */
static uint64_t rate_now(struct limit_entry *e, uint32_t window, uint64_t now)
{
	uint64_t w = now / window, left;

	if (e->window != window || w > e->win + 1 || w < e->win) {
		e->window = window;
		e->win = w;
		e->cur = e->prev = 0;
	} else if (w == e->win + 1) {
		e->prev = e->cur;
		e->cur = 0;
		e->win = w;
	}
	left = window - (now - w * window); /* of the window before, still covered */
	return e->cur + ((uint64_t)e->prev * left + window - 1) / window;
}

enum limit_kind client_limit_take(const struct client_key *k, uint32_t rate_count,
				  uint32_t rate_window, uint32_t max_sessions, uint64_t now_ms,
				  bool *counted)
{
	enum limit_kind verdict = LIMIT_NONE;
	struct limit_entry *e;
	size_t set;

	*counted = false;
	pthread_once(&table_once, table_init);
	if (!table_ok || (!rate_window && !max_sessions))
		return LIMIT_NONE;
	set = key_set(k);
	pthread_mutex_lock(&stripes[set % LIMIT_STRIPES]);
	e = entry_of(table[set], k);
	if (!e)
		goto out;
	e->used = now_ms;
	if (rate_window && rate_now(e, rate_window, now_ms) >= rate_count)
		verdict = LIMIT_CONNECTION_RATE;
	else if (max_sessions && e->sessions >= max_sessions)
		verdict = LIMIT_PER_CLIENT;
	if (verdict != LIMIT_NONE)
		goto out;
	if (rate_window)
		e->cur++;
	if (max_sessions) {
		e->sessions++;
		*counted = true;
	}
out:
	pthread_mutex_unlock(&stripes[set % LIMIT_STRIPES]);
	return verdict;
}

void client_limit_drop(const struct client_key *k)
{
	size_t set = key_set(k);

	pthread_mutex_lock(&stripes[set % LIMIT_STRIPES]);
	for (size_t i = 0; i < LIMIT_WAYS; i++) {
		struct limit_entry *e = &table[set][i];

		if (e->scope && key_is(e, k)) {
			BUG_ON(!e->sessions);
			e->sessions--;
			break;
		}
	}
	pthread_mutex_unlock(&stripes[set % LIMIT_STRIPES]);
}

size_t client_limit_entries(void)
{
	size_t n = 0;

	pthread_once(&table_once, table_init);
	for (size_t set = 0; table_ok && set < LIMIT_SETS; set++) {
		pthread_mutex_lock(&stripes[set % LIMIT_STRIPES]);
		for (size_t i = 0; i < LIMIT_WAYS; i++)
			n += table[set][i].scope != NULL;
		pthread_mutex_unlock(&stripes[set % LIMIT_STRIPES]);
	}
	return n;
}

size_t client_limit_capacity(void)
{
	return (size_t)LIMIT_SETS * LIMIT_WAYS;
}

/* ---- the session's side ---- */

static const char *const limit_names[LIMIT_KINDS] = {
	[LIMIT_CONNECTION_RATE] = "connection_rate",
	[LIMIT_PER_CLIENT] = "max_sessions_per_client",
	[LIMIT_MAX_SESSIONS] = "max_sessions",
};

const char *limit_kind_name(size_t i)
{
	return i < LIMIT_KINDS ? limit_names[i] : NULL;
}

uint64_t limit_rejects_of(const struct listener_stats *st, size_t kind)
{
	return atomic_load(&st->limit_rejects[kind]);
}

void limit_reject_count(const struct session *s, enum limit_kind kind)
{
	BUG_ON(kind >= LIMIT_KINDS);
	atomic_fetch_add(&listener_stats(s->rt, s->l)->limit_rejects[kind], 1);
}

/* screen.allow: "never screened or limited" (SPEC §9). */
static bool allow_listed(const struct cfg_listener *l, const union sockaddr_any *a)
{
	for (size_t i = 0; i < l->screen.nallow; i++)
		if (config_cidr_match(&l->screen.allow[i], &a->sa))
			return true;
	return false;
}

static void client_key_of(const struct session *s, struct client_key *k)
{
	client_key_make(k, listener_stats(s->rt, s->l), &s->peer, &s->l->limits);
}

bool limits_admit(struct session *s)
{
	const struct cfg_listener *l = s->l;
	char addr[INET6_ADDRSTRLEN];
	struct client_key k;
	enum limit_kind kind;
	const void *ip;

	if (!l->limits.rate_window && !l->max_sessions_per_client)
		return true;
	if (allow_listed(l, &s->peer))
		return true;
	client_key_of(s, &k);
	kind = client_limit_take(&k, l->limits.rate_count, l->limits.rate_window,
				 l->max_sessions_per_client, clock_usec() / 1000,
				 &s->counted_client);
	if (kind == LIMIT_NONE)
		return true;
	limit_reject_count(s, kind);
	client_error(s, kind == LIMIT_CONNECTION_RATE ? "connection rate over the limit"
						      : "too many sessions from this client");
	/* a client that starts with TLS could not read a reply */
	if (l->tls == CFG_TLS_IMPLICIT) {
		session_close(s, R_REJECTED, limit_names[kind]);
		return false;
	}
	ip = s->peer.sa.sa_family == AF_INET6 ? (const void *)&s->peer.sin6.sin6_addr
					      : (const void *)&s->peer.sin.sin_addr;
	if (!inet_ntop(s->peer.sa.sa_family, ip, addr, sizeof(addr)))
		strcpy(addr, "unknown");
	session_close_reply(s, R_REJECTED, limit_names[kind],
			    "421 4.7.0 %s Error: too many %s from %s, try again later",
			    runtime_hostname(s->rt),
			    kind == LIMIT_CONNECTION_RATE ? "connections" : "sessions", addr);
	return false;
}

void limits_release(struct session *s)
{
	struct client_key k;

	if (!s->counted_client)
		return;
	s->counted_client = false;
	client_key_of(s, &k);
	client_limit_drop(&k);
}
