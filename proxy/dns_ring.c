/* dns_ring.c - c-ares on a worker's ring: its sockets polled with
 * IORING_OP_POLL_ADD, its channels and their timers on the wheel
 * (ares_timeout()), and a worker's resolver started, reloaded, stopped. */
#include "proxy/dns_int.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

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
void chan_rearm(struct dns_chan *c)
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
void chans_tidy(struct dns_resolver *r)
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
