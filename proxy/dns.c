/* dns.c - see dns.h. The cache (entries, their answers and lifetimes)
 * and the queries: the two steps of a client name lookup, the ready list
 * drained after each event, and the public lookup functions. */
#include "proxy/dns_int.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

_Thread_local struct dns_resolver *dns_self;

static void advance(struct dns_query *q);

/* ---- the cache ---- */

static void entry_put(struct dns_entry *e)
{
	if (!e)
		return;
	BUG_ON(!e->refs);
	if (--e->refs)
		return;
	free(e->data);
	free(e);
}

void entry_uncache(struct dns_resolver *r, struct dns_entry *e)
{
	struct dns_entry **pp = &r->slots[e->hash & (DNS_HASH_SLOTS - 1)];

	if (!e->cached)
		return;
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	e->hnext = NULL;
	link_del(&e->lru);
	e->cached = false;
	r->nentries--;
	entry_put(e);
}

static uint32_t key_hash(uint16_t type, const char *s)
{
	uint32_t h = 2166136261u ^ type;

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

/* The answer of a query that ended with c-ares status `status`. */
static void entry_fill(struct dns_entry *e, int status, const uint8_t *abuf, int alen)
{
	long ttl = -1;

	e->st = DNS_TEMPFAIL;
	if (status == ARES_SUCCESS) {
		if (e->type == DNS_T_PTR)
			parse_ptr(e, abuf, alen);
		else
			parse_addrs(e, abuf, alen);
		if (e->st == DNS_OK)
			ttl = dns_answer_ttl(abuf, (size_t)alen);
	} else if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
		e->st = DNS_NOTFOUND;
	}
	if (e->st == DNS_NOTFOUND && abuf && alen > 0)
		ttl = dns_answer_ttl(abuf, (size_t)alen);
	if (e->st == DNS_NOTFOUND && ttl < 0)
		ttl = DNS_NEG_TTL;
	if (ttl < 0)
		ttl = 0;
	if (ttl > DNS_TTL_MAX)
		ttl = DNS_TTL_MAX;
	e->expires_ms = worker_now_ms() + (uint64_t)ttl * 1000;
}

static void kick(struct dns_resolver *r)
{
	if (r->kicked)
		return;
	r->kicked = true;
	worker_post(r->w, &r->kick);
}

/* ares_query()'s callback: also from inside ares_query() (a query that
 * cannot start), ares_process_fd() and ares_destroy(). */
static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_entry *e = arg;
	struct dns_resolver *r = e->r;

	(void)timeouts;
	e->chan->queries--;
	e->chan = NULL;
	e->pending = false;
	entry_fill(e, status, abuf, alen);
	/* a failure is not kept: the next lookup asks again */
	if (e->st == DNS_TEMPFAIL)
		entry_uncache(r, e);
	while (!link_empty(&e->waiters)) {
		struct dns_link *l = e->waiters.next;

		link_del(l);
		link_add_tail(&r->ready, l);
	}
	kick(r);
	entry_put(e); /* c-ares' hold */
}

/* The entry for (type, name), held for the caller: from the cache, or new
 * with its query sent. NULL when name is not a name or out of memory. */
static struct dns_entry *entry_get(struct dns_resolver *r, uint16_t type, const char *name)
{
	char key[DNS_NAME_MAX + 2];
	struct dns_entry *e, **slot;
	struct dns_chan *c = r->chan;
	uint32_t h;
	size_t len;

	if (!c || !name_key(name, key, sizeof(key)))
		return NULL;
	h = key_hash(type, key);
	slot = &r->slots[h & (DNS_HASH_SLOTS - 1)];
	for (e = *slot; e; e = e->hnext)
		if (e->hash == h && e->type == type && !strcmp(e->name, key))
			break;
	if (e && !e->pending && worker_now_ms() >= e->expires_ms) {
		entry_uncache(r, e);
		e = NULL;
	}
	if (e) {
		link_del(&e->lru);
		link_add_head(&r->lru, &e->lru);
		e->refs++;
		return e;
	}
	len = strlen(key);
	e = calloc(1, sizeof(*e) + len + 1);
	if (!e)
		return NULL;
	memcpy(e->name, key, len + 1);
	e->r = r;
	e->type = type;
	e->hash = h;
	link_init(&e->waiters);
	e->refs = 3; /* the cache's, the caller's and c-ares' */
	e->cached = true;
	e->hnext = *slot;
	*slot = e;
	link_add_head(&r->lru, &e->lru);
	if (++r->nentries > DNS_CACHE_MAX)
		entry_uncache(r, LINK_OF(r->lru.prev, struct dns_entry, lru));
	e->pending = true;
	e->chan = c;
	c->queries++;
	ares_query(c->ch, e->name, DNS_C_IN, type, on_answer, e);
	chan_rearm(c);
	return e;
}

/* ---- queries ---- */

/* q's current step is e (held): wait for its answer, or read it now. */
static void query_wait(struct dns_query *q, struct dns_entry *e)
{
	q->e = e;
	if (e->pending) {
		link_add_tail(&e->waiters, &q->link);
		return;
	}
	link_add_tail(&q->r->ready, &q->link);
	kick(q->r);
}

/* The query ends: its callback runs. The answers it reads stay held
 * until the callback returns; the query itself is already gone. */
static void finish(struct dns_query *q, enum dns_status st, const char *name)
{
	struct dns_entry *e = q->e, *ptr = q->ptr;
	dns_a_cb *a_cb = q->a_cb;
	dns_name_cb *name_cb = q->name_cb;
	void *arg = q->arg;

	link_del(&q->link);
	timer_del(&q->deadline);
	free(q);
	if (a_cb) {
		bool ok = st == DNS_OK && e && e->st == DNS_OK;

		a_cb(arg, ok ? DNS_OK : st, ok ? (const uint8_t(*)[4])e->data : NULL,
		     ok ? e->n : 0);
	} else {
		name_cb(arg, st, name);
	}
	entry_put(e);
	entry_put(ptr);
}

static void on_deadline(struct timer *t)
{
	finish(LINK_OF(t, struct dns_query, deadline), DNS_TEMPFAIL, NULL);
}

/* Settle the ready queries; a callback may start or cancel others. */
static void drain(struct dns_resolver *r)
{
	while (!link_empty(&r->ready)) {
		struct dns_query *q = LINK_OF(r->ready.next, struct dns_query, link);

		link_del(&q->link);
		advance(q);
	}
}

void settle(struct dns_resolver *r)
{
	drain(r);
	chans_tidy(r);
}

void on_kick(struct worker_cb *cb, struct io_uring_cqe *cqe)
{
	struct dns_resolver *r = LINK_OF(cb, struct dns_resolver, kick);

	(void)cqe;
	r->kicked = false;
	settle(r);
}

static const char *ptr_name(const struct dns_entry *ptr, unsigned i)
{
	const char *p = (const char *)ptr->data;

	while (i--)
		p += strlen(p) + 1;
	return p;
}

static bool entry_has(const struct dns_entry *e, const uint8_t *addr)
{
	size_t sz = e->type == DNS_T_A ? 4 : 16;

	for (unsigned i = 0; i < e->n; i++)
		if (!memcmp(e->data + i * sz, addr, sz))
			return true;
	return false;
}

/* dns_client_name: look the next PTR name up forward, or end. */
static void next_forward(struct dns_query *q)
{
	while (q->next_name < q->ptr->n) {
		const char *name = ptr_name(q->ptr, q->next_name++);
		struct dns_entry *e;

		if (!valid_hostname(name))
			continue;
		e = entry_get(q->r, q->family == AF_INET ? DNS_T_A : DNS_T_AAAA, name);
		if (!e) {
			q->tempfail = true; /* out of memory */
			continue;
		}
		query_wait(q, e);
		return;
	}
	finish(q, q->tempfail ? DNS_TEMPFAIL : DNS_NOTFOUND, NULL);
}

/* q's current step has its answer in q->e. */
static void advance(struct dns_query *q)
{
	struct dns_entry *e = q->e;

	if (q->a_cb) {
		finish(q, (enum dns_status)e->st, NULL);
		return;
	}
	if (!q->ptr) {
		if (e->st != DNS_OK) {
			finish(q, (enum dns_status)e->st, NULL);
			return;
		}
		q->ptr = e;
	} else {
		if (e->st == DNS_OK && entry_has(e, q->addr)) {
			finish(q, DNS_OK, ptr_name(q->ptr, q->next_name - 1u));
			return;
		}
		if (e->st == DNS_TEMPFAIL)
			q->tempfail = true;
		entry_put(e);
	}
	q->e = NULL;
	next_forward(q);
}

static struct dns_query *query_new(struct dns_resolver *r, void *arg)
{
	struct dns_query *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	q->r = r;
	q->arg = arg;
	link_init(&q->link);
	return q;
}

struct dns_query *dns_lookup_a(const char *name, uint32_t timeout_ms, dns_a_cb *cb, void *arg)
{
	struct dns_resolver *r = dns_self;
	struct dns_query *q;
	struct dns_entry *e;

	if (!r || !r->chan || !(q = query_new(r, arg)))
		return NULL;
	q->a_cb = cb;
	e = entry_get(r, DNS_T_A, name);
	if (!e) {
		free(q);
		return NULL;
	}
	timer_set(&r->w->wheel, &q->deadline, timeout_ms, on_deadline);
	query_wait(q, e);
	return q;
}

struct dns_query *dns_client_name(const union sockaddr_any *a, uint32_t timeout_ms, dns_name_cb *cb,
				  void *arg)
{
	struct dns_resolver *r = dns_self;
	bool v6 = a->sa.sa_family == AF_INET6 && !IN6_IS_ADDR_V4MAPPED(&a->sin6.sin6_addr);
	char rev[80];
	struct dns_query *q;
	struct dns_entry *e;

	if (!r || !r->chan || dns_dnsbl_name(a, v6 ? "ip6.arpa" : "in-addr.arpa", rev, sizeof(rev)))
		return NULL;
	q = query_new(r, arg);
	if (!q)
		return NULL;
	q->name_cb = cb;
	if (a->sa.sa_family == AF_INET) {
		q->family = AF_INET;
		memcpy(q->addr, &a->sin.sin_addr, 4);
	} else if (IN6_IS_ADDR_V4MAPPED(&a->sin6.sin6_addr)) {
		q->family = AF_INET;
		memcpy(q->addr, &a->sin6.sin6_addr.s6_addr[12], 4);
	} else {
		q->family = AF_INET6;
		memcpy(q->addr, &a->sin6.sin6_addr, 16);
	}
	e = entry_get(r, DNS_T_PTR, rev);
	if (!e) {
		free(q);
		return NULL;
	}
	timer_set(&r->w->wheel, &q->deadline, timeout_ms, on_deadline);
	query_wait(q, e);
	return q;
}

void dns_cancel(struct dns_query *q)
{
	if (!q)
		return;
	link_del(&q->link);
	timer_del(&q->deadline);
	entry_put(q->e);
	entry_put(q->ptr);
	free(q);
}
