/* screen.c - the front door's tests (SPEC §9), run by mxlb itself before
 * any backend sees the client, in the same session: the allow and deny
 * lists, the pregreet test (a "220-" teaser, `pregreet` of silence, then
 * the final greeting; a byte before it marks an early talker), DNSBL and
 * DNSWL scores from queries started with the teaser and answered while
 * the wait runs, the action on a failure, and the cache of clients that
 * passed, which spares them both tests (one per process, shared by the
 * workers).
 *
 * A screened session is in S_SCREEN from the teaser to the decision, which
 * waits for the pregreet wait and every answer, or dnsbl.timeout. What
 * the client sends meanwhile is kept for the command phase: under
 * `enforce` a client that failed gets smtp_commands.c's blocked table and
 * is never routed; under `ignore` it goes on as if it had passed.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "proxy/dns.h"
#include "proxy/proxy.h"

/* The pass cache: a fixed table (2 MiB), four ways per set, the oldest
 * entry of a set evicted, so a flood of new addresses costs retests and
 * never memory. */
#define PASS_SETS 16384 /* a power of two */
#define PASS_WAYS 4
/* "d.c.b.a." or 32 nibbles for IPv6, then a domain of up to 253 */
#define DNSBL_NAME_MAX 330

struct pass_entry {
	uint8_t addr[16];  /* v4 as v4-mapped v6 */
	uint32_t listener; /* hash of the listener's name; 0: empty */
	uint64_t at_ms;	   /* when the client passed (monotonic) */
};

static struct pass_entry pass_cache[PASS_SETS][PASS_WAYS];
static pthread_mutex_t pass_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t pass_seed; /* under pass_lock; 0 until the first use */

struct screen_site {
	struct screen *sc;
	struct dns_query *q; /* in flight; NULL once answered or given up */
	bool listed;	     /* an answer matched the site's filter */
};

struct screen {
	struct session *s;
	uint64_t t0;	  /* usec: the tests started */
	bool teaser;	  /* "220-" sent, the final line not yet */
	bool waited;	  /* the pregreet wait is over (or there is none) */
	bool early;	  /* a byte came before the final greeting */
	bool partial;	  /* a site gave no final answer: a pass is not cached */
	bool decided;	  /* s->screen holds the result */
	bool blocked;	  /* failed under enforce: each RCPT refused */
	int named;	  /* the site the RCPT reply names; -1: the pregreet test */
	unsigned pending; /* queries in flight */
	size_t nsites;
	struct screen_site sites[];
};

static const char *const result_names[SCREEN_COUNT] = {
	[SCREEN_PASS] = "pass", [SCREEN_CACHED] = "cached",	[SCREEN_ALLOW] = "allow",
	[SCREEN_DENY] = "deny", [SCREEN_PREGREET] = "pregreet", [SCREEN_DNSBL] = "dnsbl",
};

static const char *const action_names[] = {
	[CFG_SCREEN_ENFORCE] = "enforce",
	[CFG_SCREEN_DROP] = "drop",
	[CFG_SCREEN_IGNORE] = "ignore",
};

const char *screen_result_name(size_t r)
{
	return r < SCREEN_COUNT ? result_names[r] : NULL;
}

uint64_t screen_stats_count(const struct listener_stats *st, size_t r)
{
	return atomic_load(&st->screen[r]);
}

static void screen_result(struct session *s, enum screen_result r)
{
	s->screen = result_names[r];
	atomic_fetch_add(&listener_stats(s->rt, s->l)->screen[r], 1);
}

/* The client as DNSBLs and replies name it: a v4-mapped address (a
 * dual-stack socket) is the IPv4 one. */
static void client_addr(const union sockaddr_any *a, union sockaddr_any *out)
{
	if (a->sa.sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a->sin6.sin6_addr)) {
		memset(out, 0, sizeof(*out));
		out->sin.sin_family = AF_INET;
		out->sin.sin_port = a->sin6.sin6_port;
		memcpy(&out->sin.sin_addr, a->sin6.sin6_addr.s6_addr + 12, 4);
		return;
	}
	*out = *a;
}

static void client_host(const union sockaddr_any *peer, char *out, size_t len)
{
	union sockaddr_any a;

	client_addr(peer, &a);
	if (!inet_ntop(a.sa.sa_family,
		       a.sa.sa_family == AF_INET ? (const void *)&a.sin.sin_addr
						 : (const void *)&a.sin6.sin6_addr,
		       out, (socklen_t)len))
		snprintf(out, len, "unknown");
}

static bool in_list(const struct cfg_cidr *list, size_t n, const union sockaddr_any *a)
{
	for (size_t i = 0; i < n; i++)
		if (config_cidr_match(&list[i], &a->sa))
			return true;
	return false;
}

bool screen_allowed(const struct cfg_listener *l, const union sockaddr_any *a)
{
	return l->screen.enabled && in_list(l->screen.allow, l->screen.nallow, a);
}

/* ---- the pass cache ---- */

static void pass_key(const union sockaddr_any *a, uint8_t key[16])
{
	memset(key, 0, 16);
	if (a->sa.sa_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &a->sin.sin_addr, 4);
	} else if (a->sa.sa_family == AF_INET6) {
		memcpy(key, &a->sin6.sin6_addr, 16);
	}
}

static uint32_t fnv(uint32_t h, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n--)
		h = (h ^ *b++) * 16777619u;
	return h;
}

/* A pass on one listener says nothing of another's tests, nor of the
 * tests a reload gives the same listener (a DNSBL site added, a
 * threshold lowered, pregreet turned on): the tests are in the key.
 * Never 0. */
static uint32_t listener_hash(const struct cfg_listener *l)
{
	const struct cfg_screen *cs = &l->screen;
	uint32_t h = fnv(2166136261u, l->name, strlen(l->name) + 1);

	h = fnv(h, &cs->pregreet, sizeof(cs->pregreet));
	h = fnv(h, &cs->threshold, sizeof(cs->threshold));
	for (size_t i = 0; i < cs->nsites; i++)
		h = fnv(h, cs->sites[i].text, strlen(cs->sites[i].text) + 1);
	return h | 1;
}

/* The set of a key; pass_lock held. Seeded, so that nobody can aim
 * addresses at one set to evict a client from it. */
static struct pass_entry *pass_set(const uint8_t key[16], uint32_t lh)
{
	uint64_t h, w;

	while (!pass_seed)
		if (getrandom(&pass_seed, sizeof(pass_seed), GRND_NONBLOCK) != sizeof(pass_seed))
			pass_seed = clock_usec() * 0x9e3779b97f4a7c15ull;
	h = pass_seed ^ lh;
	for (int i = 0; i < 16; i += 8) {
		memcpy(&w, key + i, 8);
		h = (h ^ w) * 0x9e3779b97f4a7c15ull;
		h ^= h >> 31;
	}
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 29;
	return pass_cache[h & (PASS_SETS - 1)];
}

static bool pass_cached(const struct session *s)
{
	uint32_t lh = listener_hash(s->l);
	uint64_t now = worker_now_ms();
	struct pass_entry *set;
	uint8_t key[16];
	bool hit = false;

	pass_key(&s->peer, key);
	pthread_mutex_lock(&pass_lock);
	set = pass_set(key, lh);
	for (int i = 0; i < PASS_WAYS; i++)
		if (set[i].listener == lh && !memcmp(set[i].addr, key, 16)) {
			hit = now - set[i].at_ms < s->l->screen.cache;
			break;
		}
	pthread_mutex_unlock(&pass_lock);
	return hit;
}

static void pass_put(const struct session *s)
{
	uint32_t lh = listener_hash(s->l);
	struct pass_entry *set, *e = NULL;
	uint8_t key[16];

	pass_key(&s->peer, key);
	pthread_mutex_lock(&pass_lock);
	set = pass_set(key, lh);
	for (int i = 0; i < PASS_WAYS && !e; i++)
		if (set[i].listener == lh && !memcmp(set[i].addr, key, 16))
			e = &set[i];
	for (int i = 0; i < PASS_WAYS && !e; i++)
		if (!set[i].listener)
			e = &set[i];
	if (!e) {
		e = &set[0];
		for (int i = 1; i < PASS_WAYS; i++)
			if (set[i].at_ms < e->at_ms)
				e = &set[i];
	}
	memcpy(e->addr, key, 16);
	e->listener = lh;
	e->at_ms = worker_now_ms();
	pthread_mutex_unlock(&pass_lock);
}

/* ---- DNSBL ---- */

/* Whether an answer of the site lists the client. Without a filter, only
 * an answer in 127.0.0.0/8 does, as every DNSBL answers: a resolver that
 * rewrites NXDOMAIN into an address of its own must not list every
 * client, nor must the 127.255.255.0/24 error codes lists answer with to
 * queries they refuse (an open resolver, a quota). */
static bool site_lists(const struct cfg_dnsbl_site *site, const uint8_t a[4])
{
	if (site->has_filter)
		return config_dnsbl_match(site, a);
	return a[0] == 127 && !(a[1] == 255 && a[2] == 255);
}

static void screen_decide(struct session *s);

static void screen_answer(void *arg, enum dns_status st, const uint8_t (*addrs)[4], size_t n)
{
	struct screen_site *q = arg;
	struct screen *sc = q->sc;
	struct session *s = sc->s;
	const struct cfg_dnsbl_site *site = &s->l->screen.sites[q - sc->sites];

	q->q = NULL;
	sc->pending--;
	if (st == DNS_TEMPFAIL)
		sc->partial = true;
	for (size_t i = 0; st == DNS_OK && i < n; i++)
		if (site_lists(site, addrs[i]))
			q->listed = true;
	if (s->state == S_SCREEN && sc->waited && !sc->pending)
		screen_decide(s);
}

/* Every site's query, at once; a query that cannot start counts 0. */
static void screen_dnsbl_start(struct session *s, struct screen *sc)
{
	const struct cfg_screen *cs = &s->l->screen;
	char name[DNSBL_NAME_MAX];
	union sockaddr_any a;

	client_addr(&s->peer, &a);
	s->screen_scored = cs->nsites > 0;
	for (size_t i = 0; i < cs->nsites; i++) {
		struct screen_site *q = &sc->sites[i];

		q->sc = sc;
		if (dns_dnsbl_name(&a, cs->sites[i].domain, name, sizeof(name)) < 0 ||
		    !(q->q = dns_lookup_a(name, cs->dnsbl_timeout, screen_answer, q))) {
			sc->partial = true;
			continue;
		}
		sc->pending++;
	}
}

static void screen_cancel(struct screen *sc)
{
	for (size_t i = 0; i < sc->nsites; i++)
		if (sc->sites[i].q) {
			dns_cancel(sc->sites[i].q);
			sc->sites[i].q = NULL;
			sc->partial = true;
		}
	sc->pending = 0;
}

/* ---- the decision ---- */

/* One line per failed client, naming what failed it: the session line
 * that follows (at its end) has the result and score, not the site. */
static void screen_log(struct session *s, const struct screen *sc, enum screen_result r)
{
	const struct cfg_screen *cs = &s->l->screen;
	char id[20], host[INET6_ADDRSTRLEN];
	struct logline ll;

	if (!log_begin(&ll, LOG_INFO, "screen"))
		return;
	snprintf(id, sizeof(id), "%016llx", (unsigned long long)s->id);
	client_host(&s->peer, host, sizeof(host));
	log_kv_str(&ll, "id", id);
	log_kv_str(&ll, "listener", s->l->name);
	log_kv_str(&ll, "client", host);
	log_kv_str(&ll, "result", result_names[r]);
	log_kv_str(&ll, "action", action_names[cs->action]);
	if (s->screen_scored) {
		log_kv_i64(&ll, "score", s->screen_score);
		log_kv_str(&ll, "site", sc->named >= 0 ? cs->sites[sc->named].domain : NULL);
	}
	log_kv_ms(&ll, "after_ms", clock_usec() - sc->t0);
	log_end(&ll);
}

static void screen_final_greeting(struct session *s, struct screen *sc)
{
	sc->teaser = false;
	front_greeting(s);
}

/* The score of the answers in (a site not answered counts 0), the
 * result, and the action: the command phase goes on, or the client is
 * dropped. The site named is the listing one of the highest weight, the
 * first of them on a tie (postscreen's choice). */
static void screen_decide(struct session *s)
{
	struct screen *sc = s->scr;
	const struct cfg_screen *cs = &s->l->screen;
	enum screen_result r = SCREEN_PASS;
	int score = 0;

	screen_cancel(sc);
	sc->named = -1;
	for (size_t i = 0; i < sc->nsites; i++) {
		if (!sc->sites[i].listed)
			continue;
		score += cs->sites[i].weight;
		if (cs->sites[i].weight > 0 &&
		    (sc->named < 0 || cs->sites[i].weight > cs->sites[sc->named].weight))
			sc->named = (int)i;
	}
	s->screen_score = score;
	if (sc->nsites && score >= cs->threshold)
		r = SCREEN_DNSBL;
	else if (sc->early)
		r = SCREEN_PREGREET;
	if (r != SCREEN_DNSBL)
		sc->named = -1;
	sc->decided = true;
	screen_result(s, r);
	if (r == SCREEN_PASS) {
		if (cs->cache && !sc->partial)
			pass_put(s);
	} else {
		screen_log(s, sc, r);
		if (cs->action == CFG_SCREEN_DROP) {
			session_close_reply(
				s, R_REJECTED,
				r == SCREEN_DNSBL ? "screen: dnsbl" : "screen: pregreet",
				"521 5.7.1 %s Service unavailable", runtime_hostname(s->rt));
			return;
		}
		sc->blocked = cs->action == CFG_SCREEN_ENFORCE;
	}
	if (sc->teaser)
		screen_final_greeting(s, sc);
	front_resume(s);
}

/* ---- the session's side ---- */

bool screen_start(struct session *s)
{
	const struct cfg_screen *cs = &s->l->screen;
	struct screen *sc;

	if (!cs->enabled)
		return false;
	if (screen_allowed(s->l, &s->peer)) {
		screen_result(s, SCREEN_ALLOW);
		return false;
	}
	if (in_list(cs->deny, cs->ndeny, &s->peer)) {
		screen_result(s, SCREEN_DENY);
		/* out of S_TLS (implicit TLS: the handshake is done), so the
		 * reply goes out inside it */
		session_set_state(s, S_SCREEN);
		session_close_reply(s, R_REJECTED, "screen: deny", "554 5.7.1 %s Access denied",
				    runtime_hostname(s->rt));
		return true;
	}
	/* implicit-TLS passthrough: no greeting to hold back, no RCPT to
	 * refuse; only the lists apply (a denied client is closed silently:
	 * it speaks TLS first) */
	if (s->no_smtp || (!cs->pregreet && !cs->nsites)) {
		screen_result(s, SCREEN_PASS);
		return false;
	}
	if (cs->cache && pass_cached(s)) {
		screen_result(s, SCREEN_CACHED);
		return false;
	}
	sc = calloc(1, sizeof(*sc) + cs->nsites * sizeof(sc->sites[0]));
	if (!sc) {
		session_close(s, R_ERROR, "out of memory");
		return true;
	}
	s->scr = sc;
	sc->s = s;
	sc->t0 = clock_usec();
	sc->nsites = cs->nsites;
	sc->named = -1;
	session_set_state(s, S_SCREEN);
	if (cs->pregreet) {
		session_reply(s, "220-%s ESMTP", runtime_hostname(s->rt));
		sc->teaser = true;
		session_timeout(s, cs->pregreet);
	} else {
		/* DNSBL alone: the greeting at once, the decision before the
		 * first command, so the lookups overlap the client's turn */
		sc->waited = true;
		front_greeting(s);
		session_timeout(s, cs->dnsbl_timeout);
	}
	screen_dnsbl_start(s, sc);
	if (dbuf_used(&s->in)) /* pipelined behind a PROXY header */
		screen_input(s);
	if (s->state == S_SCREEN && sc->waited && !sc->pending)
		screen_decide(s);
	return true;
}

void screen_input(struct session *s)
{
	struct screen *sc = s->scr;

	if (sc->teaser && !sc->early) {
		sc->early = true;
		/* nothing the rest of the tests find can make it pass */
		if (s->l->screen.action == CFG_SCREEN_DROP) {
			screen_decide(s);
			return;
		}
	}
	if (dbuf_used(&s->in) > FRONT_IN_MAX)
		conn_recv_pause(s->client);
}

void screen_timeout(struct session *s)
{
	struct screen *sc = s->scr;
	uint32_t limit = s->l->screen.dnsbl_timeout;
	uint64_t ms = (clock_usec() - sc->t0) / 1000;

	if (!sc->waited) {
		sc->waited = true;
		screen_final_greeting(s, sc);
		if (sc->pending && ms < limit) {
			session_timeout(s, (uint32_t)(limit - ms));
			session_flush(s);
			return;
		}
	}
	screen_decide(s);
}

void screen_end(struct session *s)
{
	struct screen *sc = s->scr;

	if (!sc)
		return;
	/* gone before the decision: an early talker failed all the same */
	if (!sc->decided && sc->early)
		screen_result(s, SCREEN_PREGREET);
	screen_cancel(sc);
	free(sc);
	s->scr = NULL;
}

bool screen_blocked(const struct session *s)
{
	return s->scr && s->scr->blocked;
}

const char *screen_rcpt_reply(const struct session *s)
{
	static _Thread_local char line[SMTP_LINE_MAX_REPLY];
	const struct screen *sc = s->scr;
	char host[INET6_ADDRSTRLEN];

	client_host(&s->peer, host, sizeof(host));
	if (sc && sc->named >= 0)
		snprintf(line, sizeof(line),
			 "550 5.7.1 Service unavailable; client [%s] blocked using %s", host,
			 s->l->screen.sites[sc->named].domain);
	else
		snprintf(line, sizeof(line),
			 "550 5.7.1 Service unavailable; client [%s] protocol error", host);
	return line;
}
