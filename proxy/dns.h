/* dns.h - asynchronous DNS on a worker's ring (c-ares; SPEC §9): the
 * DNSBL queries of screening and the client name XCLIENT NAME= carries.
 *
 * Each worker thread has its own resolver (dns_worker_start() from the
 * worker's thread), its sockets polled through the worker's io_uring, and
 * its own cache honouring TTLs (negative answers by the SOA minimum). A
 * lookup never blocks: the callback runs later, on the same thread, from
 * the worker's completion loop — never from inside the call that started
 * it. A query ends exactly once: its callback runs, or dns_cancel() was
 * called first and the callback never runs.
 */
#ifndef MXLB_DNS_H
#define MXLB_DNS_H

#include <stddef.h>
#include <stdint.h>

struct worker;
struct cfg_server;
union sockaddr_any;

enum dns_status {
	DNS_OK,	      /* answers follow */
	DNS_NOTFOUND, /* NXDOMAIN or no record of the type: a final "no" */
	DNS_TEMPFAIL, /* timeout, SERVFAIL, refused, no resolver: try later */
};

struct dns_query;

/* The A records of a name (a DNSBL query: "2.0.0.127.zen.example").
 * addrs: n IPv4 addresses in network order, valid during the call. */
typedef void dns_a_cb(void *arg, enum dns_status st, const uint8_t (*addrs)[4], size_t n);

/* The client's confirmed host name: the PTR names of a, each looked up
 * forward (A or AAAA by a's family) until one gives a back (what Postfix
 * calls the verified name). DNS_OK with the name; DNS_NOTFOUND (no PTR, or
 * none confirmed: XCLIENT NAME=[UNAVAILABLE]); DNS_TEMPFAIL (a lookup
 * failed temporarily: NAME=[TEMPUNAVAIL]). name is valid during the call. */
typedef void dns_name_cb(void *arg, enum dns_status st, const char *name);

/* Start and stop the resolver of the calling worker thread: server.resolver
 * (has_resolver) or /etc/resolv.conf. 0, or -1 with the reason logged.
 * Stop once the worker's loop has ended (worker_ops.stopped): queries not
 * cancelled by then are dropped without their callbacks. */
int dns_worker_start(struct worker *w, const struct cfg_server *s);
void dns_worker_stop(struct worker *w);
/* A reload, on the worker's thread: new lookups go to the resolver s names
 * (and /etc/resolv.conf is read again); lookups in flight finish where
 * they started. The cache is emptied when the resolver changed. */
void dns_worker_reload(struct worker *w, const struct cfg_server *s);

/* NULL when the query could not start (out of memory, no resolver): the
 * callback never runs then, and the caller treats it as DNS_TEMPFAIL.
 * timeout_ms bounds the whole lookup, retries included. */
struct dns_query *dns_lookup_a(const char *name, uint32_t timeout_ms, dns_a_cb *cb, void *arg);
struct dns_query *dns_client_name(const union sockaddr_any *a, uint32_t timeout_ms, dns_name_cb *cb,
				  void *arg);
/* The DNSBL query name of IPv4 or IPv6 address a at domain ("d.c.b.a.domain",
 * nibbles for IPv6) into out; -1 when it does not fit. */
int dns_dnsbl_name(const union sockaddr_any *a, const char *domain, char *out, size_t len);
/* The callback will not run. q may be NULL. */
void dns_cancel(struct dns_query *q);

/* For the cache (and its tests), a pure parser: how long the DNS answer
 * msg[0..len) may be kept, in seconds. An answer with records: the
 * smallest TTL among them; without (NXDOMAIN, no data): the smaller of
 * its SOA's TTL and MINIMUM (RFC 2308). -1 when it has neither or does
 * not parse. */
long dns_answer_ttl(const uint8_t *msg, size_t len);

#endif
