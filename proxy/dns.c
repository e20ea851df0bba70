/* dns.c - see dns.h. c-ares speaks the protocol; this file gives it the
 * worker's ring (its sockets are polled with IORING_OP_POLL_ADD) and wheel
 * (ares_timeout()), keeps the cache, and runs the two steps of a client
 * name lookup.
 *
 * What holds what:
 * - struct dns_entry: one name and type, its answer and when that
 *   expires. Held by the cache while it is in it, by c-ares while its
 *   query is in flight, and by each dns_query that waits for it or reads
 *   it; freed with the last hold. Evicting an entry, or finding it
 *   expired, only drops the cache's hold.
 * - struct dns_query: what a caller holds (dns.h). It waits on its
 *   entry's list until the answer, then on the ready list, which drain()
 *   empties after each event (a socket, a timer, the kick); so a callback
 *   never runs inside the call that started the query. Freed just before
 *   its callback runs, or by dns_cancel().
 * - struct dns_sock: a socket c-ares opened, polled on the ring; it lives
 *   until its last poll completes, also after c-ares closed it.
 * - struct dns_chan: a c-ares channel; a reload retires one, freed once
 *   the queries it carries are answered.
 */
#include "proxy/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "proxy/proxy.h"

#define DNS_CACHE_MAX 4096  /* entries per worker; the least recently used go first */
#define DNS_HASH_SLOTS 4096 /* a power of two */
#define DNS_TTL_MAX 86400   /* seconds: nothing is kept longer than a day */
#define DNS_NEG_TTL 60	    /* seconds, for a "no" without an SOA saying how long */
/* c-ares' own bound on a query: DNS_TRY_MS for the first try, doubled for
 * the next round over the servers. The callers' timeout_ms (a timer of
 * each query) usually ends the wait first; a query c-ares still carries
 * then goes on and fills the cache. */
#define DNS_TRY_MS 800
#define DNS_TRIES 2
#define DNS_ADDRS_MAX 32 /* addresses kept per answer */
#define DNS_PTR_MAX 8	 /* PTR names of a client looked up forward */
#define DNS_NAME_MAX 253

enum { DNS_C_IN = 1, DNS_T_A = 1, DNS_T_SOA = 6, DNS_T_PTR = 12, DNS_T_AAAA = 28 };

/* ---- intrusive lists ---- */

struct dns_link {
	struct dns_link *prev, *next;
};

#define LINK_OF(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

static void link_init(struct dns_link *l)
{
	l->prev = l->next = l;
}

static bool link_empty(const struct dns_link *l)
{
	return l->next == l;
}

/* Safe on a link that is on no list (linked to itself). */
static void link_del(struct dns_link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	link_init(l);
}

static void link_add_tail(struct dns_link *head, struct dns_link *l)
{
	l->prev = head->prev;
	l->next = head;
	head->prev->next = l;
	head->prev = l;
}

static void link_add_head(struct dns_link *head, struct dns_link *l)
{
	link_add_tail(head->next, l);
}

/* ---- objects ---- */

struct dns_resolver;

struct dns_chan {
	struct dns_resolver *r;
	ares_channel ch;
	struct timer timer;    /* ares_timeout() */
	unsigned queries;      /* in flight on it */
	struct dns_link socks; /* the sockets it has open */
	struct dns_chan *next; /* on the retired list */
};

struct dns_sock {
	struct worker_cb cb; /* first: the completions of its polls */
	struct dns_resolver *r;
	struct dns_chan *chan; /* NULL once c-ares closed the socket */
	struct dns_link link;  /* on chan->socks, then on r->socks_closed */
	int fd;
	unsigned short want;  /* POLLIN/POLLOUT, as c-ares asked */
	unsigned short armed; /* the events of the poll in flight; 0: none */
	bool removing;	      /* a POLL_REMOVE for it is in flight */
	bool busy;	      /* in ares_process_fd() for it */
};

struct dns_entry {
	struct dns_entry *hnext; /* hash chain */
	struct dns_link lru;	 /* the cache, most recently used first */
	struct dns_link waiters; /* queries until the answer */
	struct dns_resolver *r;
	struct dns_chan *chan; /* while pending: the channel carrying it */
	uint64_t expires_ms;
	unsigned refs;
	uint32_t hash;
	uint16_t type;
	uint16_t n; /* answers in data */
	bool pending, cached;
	uint8_t st;    /* enum dns_status, once answered */
	uint8_t *data; /* n addresses (4 or 16 octets) or n NUL-terminated names */
	char name[];   /* lower case, no final dot */
};

struct dns_query {
	struct dns_link link; /* on its entry's waiters, or the ready list */
	struct dns_resolver *r;
	struct dns_entry *e; /* what the current step waits for or reads; held */
	struct timer deadline;
	dns_a_cb *a_cb; /* dns_lookup_a, or */
	dns_name_cb *name_cb;
	void *arg;
	/* dns_client_name */
	int family; /* AF_INET (also for an IPv4-mapped address) or AF_INET6 */
	uint8_t addr[16];
	struct dns_entry *ptr; /* the PTR answer, held, while its names are tried */
	uint16_t next_name;    /* the PTR name looked up forward next */
	bool tempfail;	       /* a forward lookup failed temporarily */
};

struct dns_resolver {
	struct worker_cb kick; /* a NOP whose completion runs settle() */
	struct worker *w;
	bool kicked;
	struct dns_chan *chan;	  /* where new queries go; NULL: none could be made */
	struct dns_chan *retired; /* older channels still carrying queries */
	bool has_server;	  /* the server.resolver the channels were made for */
	struct sockaddr_storage server;
	struct dns_link ready;	      /* queries whose step has its answer */
	struct dns_link lru;	      /* the cache */
	struct dns_link socks_closed; /* closed by c-ares, a poll still in flight */
	unsigned nentries;	      /* in the cache */
	struct dns_entry *slots[DNS_HASH_SLOTS];
};

static _Thread_local struct dns_resolver *dns_self;

static void settle(struct dns_resolver *r);
static void advance(struct dns_query *q);

/* ---- sockets on the ring ---- */

static void on_poll(struct worker_cb *cb, struct io_uring_cqe *cqe);

/* Bring the poll in flight in line with what c-ares wants: arm one, or
 * take back one that asks for the wrong events (its completion re-arms),
 * or free a socket c-ares closed once its poll is back. */
static void sock_sync(struct dns_sock *k)
{
	struct io_uring_sqe *sqe;

	if (k->busy)
		return; /* on_poll() syncs once c-ares is done */
	if (k->armed) {
		if ((!k->chan || k->armed != k->want) && !k->removing) {
			sqe = worker_sqe(k->r->w);
			io_uring_prep_poll_remove(sqe, op_data(k, OP_CALLBACK));
			io_uring_sqe_set_data64(sqe, OP_IGNORE);
			k->removing = true;
		}
		return;
	}
	if (!k->chan) {
		link_del(&k->link);
		free(k);
		return;
	}
	sqe = worker_sqe(k->r->w);
	io_uring_prep_poll_add(sqe, k->fd, k->want);
	io_uring_sqe_set_data64(sqe, op_data(k, OP_CALLBACK));
	k->armed = k->want;
}

/* c-ares' ARES_OPT_SOCK_STATE_CB: what it wants to hear about fd; both
 * 0 right before it closes fd. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns_chan *c = data;
	unsigned short want = (readable ? POLLIN : 0) | (writable ? POLLOUT : 0);
	struct dns_sock *k = NULL;

	for (struct dns_link *l = c->socks.next; l != &c->socks; l = l->next) {
		if (LINK_OF(l, struct dns_sock, link)->fd == fd) {
			k = LINK_OF(l, struct dns_sock, link);
			break;
		}
	}
	if (!k) {
		if (!want)
			return;
		k = calloc(1, sizeof(*k));
		if (!k) {
			/* its queries end at their timeouts */
			log_warn("dns", "out of memory: a resolver socket is not polled");
			return;
		}
		k->cb.fn = on_poll;
		k->r = c->r;
		k->chan = c;
		k->fd = fd;
		link_add_tail(&c->socks, &k->link);
	}
	k->want = want;
	if (!want) {
		/* the fd number may come back for another socket at once */
		k->chan = NULL;
		link_del(&k->link);
		link_add_tail(&c->r->socks_closed, &k->link);
	}
	sock_sync(k);
}

static void on_poll(struct worker_cb *cb, struct io_uring_cqe *cqe)
{
	struct dns_sock *k = (struct dns_sock *)cb;
	struct dns_resolver *r = k->r;
	int res = cqe->res;

	k->armed = 0;
	k->removing = false;
	if (k->chan && res != -ECANCELED) {
		/* an error of the poll itself: c-ares finds out on the socket */
		unsigned ev = res < 0 ? POLLIN | POLLOUT : (unsigned)res;

		k->busy = true;
		ares_process_fd(k->chan->ch,
				ev & (POLLIN | POLLERR | POLLHUP) ? k->fd : ARES_SOCKET_BAD,
				ev & (POLLOUT | POLLERR | POLLHUP) ? k->fd : ARES_SOCKET_BAD);
		k->busy = false;
	}
	sock_sync(k);
	settle(r);
}

/* ---- channels ---- */

static void on_chan_timer(struct timer *t)
{
	struct dns_chan *c = LINK_OF(t, struct dns_chan, timer);

	ares_process_fd(c->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	settle(c->r);
}

/* The wheel fires when c-ares' next timeout is due. */
static void chan_rearm(struct dns_chan *c)
{
	struct timeval tv, *tvp = ares_timeout(c->ch, NULL, &tv);
	uint64_t ms;

	if (!tvp) {
		timer_del(&c->timer);
		return;
	}
	ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
	timer_set(&c->r->w->wheel, &c->timer, ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms,
		  on_chan_timer);
}

static struct dns_chan *chan_new(struct dns_resolver *r, const struct cfg_server *s)
{
	struct dns_chan *c = calloc(1, sizeof(*c));
	struct ares_options o;
	int rc;

	if (!c) {
		log_error("dns", "worker %d: out of memory for the resolver", r->w->id);
		return NULL;
	}
	c->r = r;
	link_init(&c->socks);
	memset(&o, 0, sizeof(o));
	o.flags = ARES_FLAG_NOALIASES; /* no HOSTALIASES from the environment */
	o.timeout = DNS_TRY_MS;
	o.tries = DNS_TRIES;
	o.sock_state_cb = on_sock_state;
	o.sock_state_cb_data = c;
	rc = ares_init_options(&c->ch, &o,
			       ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
				       ARES_OPT_SOCK_STATE_CB);
	if (rc != ARES_SUCCESS) {
		log_error("dns", "worker %d: resolver: %s", r->w->id, ares_strerror(rc));
		free(c);
		return NULL;
	}
	if (s->has_resolver) {
		const struct sockaddr_in *a4 = (const struct sockaddr_in *)&s->resolver.ss;
		const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&s->resolver.ss;
		struct ares_addr_port_node n;

		memset(&n, 0, sizeof(n));
		n.family = s->resolver.ss.ss_family;
		if (n.family == AF_INET) {
			memcpy(&n.addr.addr4, &a4->sin_addr, 4);
			n.udp_port = n.tcp_port = ntohs(a4->sin_port);
		} else {
			memcpy(&n.addr.addr6, &a6->sin6_addr, 16);
			n.udp_port = n.tcp_port = ntohs(a6->sin6_port);
		}
		rc = ares_set_servers_ports(c->ch, &n);
		if (rc != ARES_SUCCESS) {
			log_error("dns", "worker %d: resolver %s: %s", r->w->id, s->resolver.text,
				  ares_strerror(rc));
			ares_destroy(c->ch);
			free(c);
			return NULL;
		}
	}
	return c;
}

/* Not from inside a c-ares callback. Queries still in flight end with
 * their callbacks (ARES_EDESTRUCTION); sockets it closes wait for their
 * polls on r->socks_closed. */
static void chan_free(struct dns_chan *c)
{
	ares_destroy(c->ch);
	timer_del(&c->timer);
	while (!link_empty(&c->socks)) {
		struct dns_sock *k = LINK_OF(c->socks.next, struct dns_sock, link);

		k->chan = NULL;
		link_del(&k->link);
		link_add_tail(&c->r->socks_closed, &k->link);
		sock_sync(k);
	}
	free(c);
}

/* After an event: timers follow c-ares, idle retired channels go. */
static void chans_tidy(struct dns_resolver *r)
{
	for (struct dns_chan **pp = &r->retired; *pp;) {
		struct dns_chan *c = *pp;

		if (c->queries) {
			chan_rearm(c);
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		chan_free(c);
	}
	if (r->chan)
		chan_rearm(r->chan);
}

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

static void entry_uncache(struct dns_resolver *r, struct dns_entry *e)
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

static void parse_addrs(struct dns_entry *e, const uint8_t *abuf, int alen)
{
	struct ares_addrttl a4[DNS_ADDRS_MAX];
	struct ares_addr6ttl a6[DNS_ADDRS_MAX];
	int n = DNS_ADDRS_MAX, rc;
	size_t sz = e->type == DNS_T_A ? 4 : 16;

	if (e->type == DNS_T_A)
		rc = ares_parse_a_reply(abuf, alen, NULL, a4, &n);
	else
		rc = ares_parse_aaaa_reply(abuf, alen, NULL, a6, &n);
	if (rc == ARES_ENODATA || (rc == ARES_SUCCESS && n <= 0)) {
		e->st = DNS_NOTFOUND;
		return;
	}
	if (rc != ARES_SUCCESS || !(e->data = malloc((size_t)n * sz)))
		return; /* DNS_TEMPFAIL */
	for (int i = 0; i < n; i++)
		memcpy(e->data + (size_t)i * sz,
		       e->type == DNS_T_A ? (const void *)&a4[i].ipaddr
					  : (const void *)&a6[i].ip6addr,
		       sz);
	e->n = (uint16_t)n;
	e->st = DNS_OK;
}

/* Lower case, without the final dot; false when it does not fit. */
static bool name_key(const char *name, char *out, size_t cap)
{
	size_t len = strlen(name);

	if (len && name[len - 1] == '.')
		len--;
	if (!len || len > DNS_NAME_MAX || len >= cap)
		return false;
	for (size_t i = 0; i < len; i++)
		out[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
	out[len] = '\0';
	return true;
}

static void parse_ptr(struct dns_entry *e, const uint8_t *abuf, int alen)
{
	static const uint8_t dummy[16];
	struct hostent *h = NULL;
	const char *names[DNS_PTR_MAX + 1];
	char key[DNS_NAME_MAX + 2];
	size_t n = 0, size = 0, off = 0;
	int rc = ares_parse_ptr_reply(abuf, alen, dummy, 4, AF_INET, &h);

	if (rc == ARES_ENODATA) {
		e->st = DNS_NOTFOUND;
		return;
	}
	if (rc != ARES_SUCCESS)
		return;
	/* c-ares lists every PTR name among the aliases (h_name is the last) */
	for (char **a = h->h_aliases; a && *a && n < DNS_PTR_MAX; a++)
		names[n++] = *a;
	if (!n && h->h_name)
		names[n++] = h->h_name;
	for (size_t i = 0; i < n; i++)
		size += strlen(names[i]) + 1;
	e->data = malloc(size ? size : 1);
	if (!e->data) {
		ares_free_hostent(h);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (!name_key(names[i], key, sizeof(key)))
			continue;
		memcpy(e->data + off, key, strlen(key) + 1);
		off += strlen(key) + 1;
		e->n++;
	}
	ares_free_hostent(h);
	e->st = e->n ? DNS_OK : DNS_NOTFOUND;
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

static void settle(struct dns_resolver *r)
{
	drain(r);
	chans_tidy(r);
}

static void on_kick(struct worker_cb *cb, struct io_uring_cqe *cqe)
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

/* A name Postfix would take (its valid_hostname()): labels of letters,
 * digits, '-' and '_', no label starting or ending with '-', and not all
 * digits (which would pass for an address). */
static bool valid_hostname(const char *s)
{
	size_t label = 0, len = strlen(s);
	bool alpha = false;

	if (!len || len > DNS_NAME_MAX)
		return false;
	for (size_t i = 0; i <= len; i++) {
		char c = s[i];

		if (c == '.' || c == '\0') {
			if (!label || label > 63 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (c == '-' && !label)
			return false;
		if (!(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') &&
		    c != '-' && c != '_')
			return false;
		if (!(c >= '0' && c <= '9'))
			alpha = true;
		label++;
	}
	return alpha;
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

int dns_dnsbl_name(const union sockaddr_any *a, const char *domain, char *out, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *b;
	int n;

	if (a->sa.sa_family == AF_INET ||
	    (a->sa.sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a->sin6.sin6_addr))) {
		b = a->sa.sa_family == AF_INET ? (const uint8_t *)&a->sin.sin_addr
					       : &a->sin6.sin6_addr.s6_addr[12];
		n = snprintf(out, len, "%u.%u.%u.%u.%s", b[3], b[2], b[1], b[0], domain);
		return n < 0 || (size_t)n >= len ? -1 : 0;
	}
	if (a->sa.sa_family != AF_INET6 || len < 64 + 1)
		return -1;
	b = a->sin6.sin6_addr.s6_addr;
	for (int i = 15, o = 0; i >= 0; i--, o += 4) {
		out[o] = hex[b[i] & 15];
		out[o + 1] = '.';
		out[o + 2] = hex[b[i] >> 4];
		out[o + 3] = '.';
	}
	n = snprintf(out + 64, len - 64, "%s", domain);
	return n < 0 || (size_t)n >= len - 64 ? -1 : 0;
}

/* ---- the answer's lifetime: a pure parser ---- */

/* Past the (possibly compressed) name at off; 0 when it does not parse. */
static size_t skip_name(const uint8_t *m, size_t len, size_t off)
{
	while (off < len) {
		uint8_t l = m[off];

		if (l == 0)
			return off + 1;
		if ((l & 0xC0) == 0xC0)
			return off + 2 <= len ? off + 2 : 0;
		if (l & 0xC0)
			return 0;
		off += 1 + (size_t)l;
	}
	return 0;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

long dns_answer_ttl(const uint8_t *m, size_t len)
{
	unsigned qd, an, ns;
	size_t off = 12;
	long best = -1, soa = -1;

	if (len < 12)
		return -1;
	qd = (unsigned)m[4] << 8 | m[5];
	an = (unsigned)m[6] << 8 | m[7];
	ns = (unsigned)m[8] << 8 | m[9];
	for (unsigned i = 0; i < qd; i++) {
		off = skip_name(m, len, off);
		if (!off || off + 4 > len)
			return -1;
		off += 4;
	}
	for (unsigned i = 0; i < an + ns; i++) {
		uint16_t type, rdlen;
		uint32_t ttl;

		off = skip_name(m, len, off);
		if (!off || off + 10 > len)
			return -1;
		type = (uint16_t)(m[off] << 8 | m[off + 1]);
		ttl = be32(m + off + 4);
		rdlen = (uint16_t)(m[off + 8] << 8 | m[off + 9]);
		off += 10;
		if (off + rdlen > len)
			return -1;
		/* RFC 2181 8: a TTL with the top bit set counts as 0 */
		if (ttl > 0x7fffffffu)
			ttl = 0;
		if (i < an) {
			if (best < 0 || (long)ttl < best)
				best = (long)ttl;
		} else if (type == DNS_T_SOA && rdlen >= 22 && soa < 0) {
			uint32_t min = be32(m + off + rdlen - 4);

			if (min > 0x7fffffffu)
				min = 0;
			soa = (long)(ttl < min ? ttl : min);
		}
		off += rdlen;
	}
	return an ? best : soa;
}

/* ---- a worker's resolver ---- */

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_rc;

static void ares_lib_init(void)
{
	ares_init_rc = ares_library_init(ARES_LIB_INIT_ALL);
}

static void server_note(struct dns_resolver *r, const struct cfg_server *s)
{
	r->has_server = s->has_resolver;
	memset(&r->server, 0, sizeof(r->server));
	if (s->has_resolver)
		memcpy(&r->server, &s->resolver.ss, s->resolver.len);
}

static bool server_same(const struct dns_resolver *r, const struct cfg_server *s)
{
	if (r->has_server != s->has_resolver)
		return false;
	return !s->has_resolver || !memcmp(&r->server, &s->resolver.ss, s->resolver.len);
}

int dns_worker_start(struct worker *w, const struct cfg_server *s)
{
	struct dns_resolver *r;

	pthread_once(&ares_once, ares_lib_init);
	if (ares_init_rc != ARES_SUCCESS) {
		log_error("dns", "c-ares: %s", ares_strerror(ares_init_rc));
		return -1;
	}
	if (dns_self)
		return 0;
	r = calloc(1, sizeof(*r));
	if (!r) {
		log_error("dns", "worker %d: out of memory for the resolver", w->id);
		return -1;
	}
	r->w = w;
	r->kick.fn = on_kick;
	link_init(&r->ready);
	link_init(&r->lru);
	link_init(&r->socks_closed);
	server_note(r, s);
	dns_self = r;
	r->chan = chan_new(r, s);
	return r->chan ? 0 : -1;
}

void dns_worker_reload(struct worker *w, const struct cfg_server *s)
{
	struct dns_resolver *r = dns_self;
	bool same;
	struct dns_chan *c;

	(void)w;
	if (!r)
		return;
	same = server_same(r, s);
	/* without server.resolver a reload reads /etc/resolv.conf again */
	if (same && s->has_resolver && r->chan)
		return;
	c = chan_new(r, s);
	if (!c)
		return; /* logged; lookups go on as they did */
	if (r->chan) {
		r->chan->next = r->retired;
		r->retired = r->chan;
	}
	r->chan = c;
	server_note(r, s);
	if (!same)
		while (!link_empty(&r->lru))
			entry_uncache(r, LINK_OF(r->lru.next, struct dns_entry, lru));
	chans_tidy(r);
}

void dns_worker_stop(struct worker *w)
{
	struct dns_resolver *r = dns_self;

	(void)w;
	if (!r)
		return;
	/* every session is gone, so no query should be left; those that are
	 * go without their callbacks */
	while (!link_empty(&r->ready))
		dns_cancel(LINK_OF(r->ready.next, struct dns_query, link));
	if (r->chan) {
		r->chan->next = r->retired;
		r->retired = r->chan;
		r->chan = NULL;
	}
	while (r->retired) {
		struct dns_chan *c = r->retired;

		r->retired = c->next;
		chan_free(c); /* its pending entries are answered, their waiters ready */
	}
	while (!link_empty(&r->ready))
		dns_cancel(LINK_OF(r->ready.next, struct dns_query, link));
	while (!link_empty(&r->lru))
		entry_uncache(r, LINK_OF(r->lru.next, struct dns_entry, lru));
	/* their polls are never reaped now: the ring goes with worker_fini() */
	while (!link_empty(&r->socks_closed)) {
		struct dns_sock *k = LINK_OF(r->socks_closed.next, struct dns_sock, link);

		link_del(&k->link);
		free(k);
	}
	free(r);
	dns_self = NULL;
}
