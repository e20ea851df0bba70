/* dns_int.h - private to proxy/dns.c, proxy/dns_ring.c and
 * proxy/dns_wire.c: the resolver's objects, limits and lists, and the
 * functions the files share. See dns.h.
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
#ifndef MXLB_DNS_INT_H
#define MXLB_DNS_INT_H

#include "proxy/dns.h"

#include <ares.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

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

static inline void link_init(struct dns_link *l)
{
	l->prev = l->next = l;
}

static inline bool link_empty(const struct dns_link *l)
{
	return l->next == l;
}

/* Safe on a link that is on no list (linked to itself). */
static inline void link_del(struct dns_link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	link_init(l);
}

static inline void link_add_tail(struct dns_link *head, struct dns_link *l)
{
	l->prev = head->prev;
	l->next = head;
	head->prev->next = l;
	head->prev = l;
}

static inline void link_add_head(struct dns_link *head, struct dns_link *l)
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

extern _Thread_local struct dns_resolver *dns_self;

/* dns.c: the cache and the queries */
void settle(struct dns_resolver *r);
void on_kick(struct worker_cb *cb, struct io_uring_cqe *cqe);
void entry_uncache(struct dns_resolver *r, struct dns_entry *e);

/* dns_ring.c: c-ares on the worker's ring */
void chan_rearm(struct dns_chan *c);
void chans_tidy(struct dns_resolver *r);

/* dns_wire.c: the answers' parsers */
void parse_addrs(struct dns_entry *e, const uint8_t *abuf, int alen);
bool name_key(const char *name, char *out, size_t cap);
void parse_ptr(struct dns_entry *e, const uint8_t *abuf, int alen);
bool valid_hostname(const char *s);

#endif
