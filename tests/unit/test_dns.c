/* test_dns.c - the resolver (proxy/dns.c) on a real worker ring, against a
 * DNS server on loopback in a thread of this test that answers from a
 * table (and counts what it is asked); and its pure parts: the TTL of an
 * answer, DNSBL and reverse names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <cmocka.h>

#include "proxy/dns.h"
#include "proxy/proxy.h"

/* ---- the server ---- */

struct rec {
	const char *name;
	uint16_t type;
	uint8_t rcode;
	uint32_t ttl;
	const char *data[3]; /* A: dotted quads; PTR: names */
	bool silent;	     /* never answered */
	bool soa;	     /* a negative answer carries an SOA (MINIMUM 30) */
	atomic_int asked;
};

#define REC(n, t, rc, secs, ...)                                                        \
	{                                                                               \
		.name = n, .type = t, .rcode = rc, .ttl = secs, .data = { __VA_ARGS__ } \
	}

static struct rec recs[] = {
	REC("a.test", 1, 0, 300, "192.0.2.1", "192.0.2.2"),
	{ .name = "nx.test", .type = 1, .rcode = 3, .ttl = 600, .soa = true },
	REC("ttl0.test", 1, 0, 0, "192.0.2.3"),
	REC("fail.test", 1, 2, 0, NULL),
	{ .name = "silent.test", .type = 1, .silent = true },
	{ .name = "silent2.test", .type = 1, .silent = true },
	REC("9.0.0.127.in-addr.arpa", 12, 0, 300, "wrong.test", "host.test"),
	REC("wrong.test", 1, 0, 300, "192.0.2.9"),
	REC("host.test", 1, 0, 300, "127.0.0.9"),
	REC("10.0.0.127.in-addr.arpa", 12, 3, 0, NULL),
	REC("11.0.0.127.in-addr.arpa", 12, 0, 300, "nohost.test"),
	REC("nohost.test", 1, 3, 0, NULL),
	REC("12.0.0.127.in-addr.arpa", 12, 0, 300, "silent.test"),
	REC("13.0.0.127.in-addr.arpa", 12, 0, 300, "1.2.3.4", "-x.test", "host13.test"),
	REC("host13.test", 1, 0, 300, "127.0.0.13"),
	REC("14.0.0.127.in-addr.arpa", 12, 0, 300, "bad!name.test"),
};
#define NRECS (sizeof(recs) / sizeof(recs[0]))

static atomic_int unknown_asked; /* names not in recs[] */
static int srv_fd = -1;
static uint16_t srv_port;
static atomic_bool srv_stop;
static pthread_t srv_thread;

static struct rec *rec_find(const char *name, uint16_t type)
{
	for (size_t i = 0; i < NRECS; i++)
		if (recs[i].type == type && !strcasecmp(recs[i].name, name))
			return &recs[i];
	return NULL;
}

static int asked(const char *name, uint16_t type)
{
	return atomic_load(&rec_find(name, type)->asked);
}

static size_t put_name(uint8_t *p, const char *name)
{
	size_t o = 0;

	while (*name) {
		const char *dot = strchr(name, '.');
		size_t l = dot ? (size_t)(dot - name) : strlen(name);

		p[o++] = (uint8_t)l;
		memcpy(p + o, name, l);
		o += l;
		name += l + (dot ? 1 : 0);
	}
	p[o++] = 0;
	return o;
}

static size_t put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
	return 2;
}

static size_t put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v & 0xffff);
	return 4;
}

static void *srv_main(void *arg)
{
	uint8_t q[512], r[1024];

	(void)arg;
	while (!atomic_load(&srv_stop)) {
		struct sockaddr_storage from;
		socklen_t flen = sizeof(from);
		ssize_t n = recvfrom(srv_fd, q, sizeof(q), 0, (struct sockaddr *)&from, &flen);
		char name[256];
		size_t o = 12, no = 0, an = 0;
		uint16_t type;
		struct rec *rec;

		if (n < 17)
			continue;
		while (o < (size_t)n && q[o]) {
			if (no)
				name[no++] = '.';
			memcpy(name + no, q + o + 1, q[o]);
			no += q[o];
			o += 1 + q[o];
		}
		name[no] = '\0';
		o++;
		type = (uint16_t)(q[o] << 8 | q[o + 1]);
		o += 4; /* end of the question */
		rec = rec_find(name, type);
		atomic_fetch_add(rec ? &rec->asked : &unknown_asked, 1);
		if (rec && rec->silent)
			continue;
		memcpy(r, q, o);
		r[2] = 0x81; /* QR, RD */
		r[3] = (uint8_t)(0x80 | (rec ? rec->rcode : 3));
		memset(r + 6, 0, 6);
		for (int i = 0; rec && !rec->rcode && i < 3 && rec->data[i]; i++, an++) {
			o += put16(r + o, 0xc00c);
			o += put16(r + o, type);
			o += put16(r + o, 1);
			o += put32(r + o, rec->ttl);
			if (type == 1) {
				o += put16(r + o, 4);
				inet_pton(AF_INET, rec->data[i], r + o);
				o += 4;
			} else {
				size_t l = put_name(r + o + 2, rec->data[i]);

				o += put16(r + o, (unsigned)l) + l;
			}
		}
		put16(r + 6, (unsigned)an);
		if (rec && rec->soa && rec->rcode) {
			put16(r + 8, 1);
			o += put16(r + o, 0xc00c);
			o += put16(r + o, 6);
			o += put16(r + o, 1);
			o += put32(r + o, rec->ttl);
			o += put16(r + o, 22);
			r[o++] = 0;
			r[o++] = 0;
			o += put32(r + o, 1);
			o += put32(r + o, 3600);
			o += put32(r + o, 600);
			o += put32(r + o, 86400);
			o += put32(r + o, 30);
		}
		sendto(srv_fd, r, o, 0, (struct sockaddr *)&from, flen);
	}
	return NULL;
}

static void srv_start(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	struct timeval tv = { 0, 100000 };

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	srv_fd = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(srv_fd >= 0);
	assert_int_equal(bind(srv_fd, (struct sockaddr *)&a, sizeof(a)), 0);
	getsockname(srv_fd, (struct sockaddr *)&a, &len);
	srv_port = ntohs(a.sin_port);
	setsockopt(srv_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(pthread_create(&srv_thread, NULL, srv_main, NULL), 0);
}

static void srv_end(void)
{
	atomic_store(&srv_stop, true);
	pthread_join(srv_thread, NULL);
	close(srv_fd);
}

/* ---- the pure parts ---- */

static size_t answer(uint8_t *m, unsigned rcode, const uint32_t *ttls, unsigned an, bool soa,
		     uint32_t soa_ttl, uint32_t minimum)
{
	size_t o = 0;

	o += put16(m + o, 0x1234);
	o += put16(m + o, 0x8180 | rcode);
	o += put16(m + o, 1);
	o += put16(m + o, an);
	o += put16(m + o, soa);
	o += put16(m + o, 0);
	o += put_name(m + o, "x.example");
	o += put16(m + o, 1);
	o += put16(m + o, 1);
	for (unsigned i = 0; i < an; i++) {
		o += i ? put_name(m + o, "y.example") : put16(m + o, 0xc00c);
		o += put16(m + o, 1);
		o += put16(m + o, 1);
		o += put32(m + o, ttls[i]);
		o += put16(m + o, 4);
		o += put32(m + o, 0x7f000001);
	}
	if (soa) {
		o += put16(m + o, 0xc00c);
		o += put16(m + o, 6);
		o += put16(m + o, 1);
		o += put32(m + o, soa_ttl);
		o += put16(m + o, 2 + 11 + 20);
		o += put16(m + o, 0xc00c);	   /* mname: compressed */
		o += put_name(m + o, "h.example"); /* rname */
		o += put32(m + o, 1);
		o += put32(m + o, 2);
		o += put32(m + o, 3);
		o += put32(m + o, 4);
		o += put32(m + o, minimum);
	}
	return o;
}

static void test_answer_ttl(void **state)
{
	uint8_t m[512];
	uint32_t ttls[] = { 300, 100, 0x80000000u };
	size_t n;

	(void)state;
	n = answer(m, 0, ttls, 2, false, 0, 0);
	assert_int_equal(dns_answer_ttl(m, n), 100);
	/* RFC 2181: the top bit set counts as 0 */
	n = answer(m, 0, ttls, 3, false, 0, 0);
	assert_int_equal(dns_answer_ttl(m, n), 0);
	/* negative: the smaller of the SOA's TTL and MINIMUM (RFC 2308) */
	n = answer(m, 3, NULL, 0, true, 3600, 30);
	assert_int_equal(dns_answer_ttl(m, n), 30);
	n = answer(m, 3, NULL, 0, true, 20, 300);
	assert_int_equal(dns_answer_ttl(m, n), 20);
	n = answer(m, 3, NULL, 0, false, 0, 0);
	assert_int_equal(dns_answer_ttl(m, n), -1);
	/* cut anywhere: never read past the end */
	n = answer(m, 0, ttls, 2, true, 5, 5);
	for (size_t cut = 0; cut < n; cut++)
		assert_true(dns_answer_ttl(m, cut) == -1 || cut >= n - 40);
	assert_int_equal(dns_answer_ttl(m, 5), -1);
	/* a label pointing nowhere */
	m[12] = 0x80;
	assert_int_equal(dns_answer_ttl(m, n), -1);
}

static void test_dnsbl_name(void **state)
{
	union sockaddr_any a = { 0 };
	char out[128];

	(void)state;
	a.sin.sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.1", &a.sin.sin_addr);
	assert_int_equal(dns_dnsbl_name(&a, "zen.example", out, sizeof(out)), 0);
	assert_string_equal(out, "1.2.0.192.zen.example");
	assert_int_equal(dns_dnsbl_name(&a, "zen.example", out, 21), -1);
	assert_int_equal(dns_dnsbl_name(&a, "zen.example", out, 22), 0);
	memset(&a, 0, sizeof(a));
	a.sin6.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "::ffff:192.0.2.1", &a.sin6.sin6_addr);
	assert_int_equal(dns_dnsbl_name(&a, "in-addr.arpa", out, sizeof(out)), 0);
	assert_string_equal(out, "1.2.0.192.in-addr.arpa");
	inet_pton(AF_INET6, "2001:db8::567:89ab", &a.sin6.sin6_addr);
	assert_int_equal(dns_dnsbl_name(&a, "ip6.arpa", out, sizeof(out)), 0);
	assert_string_equal(
		out, "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
	assert_int_equal(dns_dnsbl_name(&a, "ip6.arpa", out, 64), -1);
}

/* Without a resolver on this thread nothing starts (callers count it as
 * DNS_TEMPFAIL), and cancelling NULL is fine. */
static void test_no_resolver(void **state)
{
	union sockaddr_any a = { 0 };

	(void)state;
	a.sin.sin_family = AF_INET;
	assert_null(dns_lookup_a("a.test", 100, NULL, NULL));
	assert_null(dns_client_name(&a, 100, NULL, NULL));
	dns_cancel(NULL);
}

/* ---- lookups on a ring: a script of steps ---- */

static struct worker w;
static bool in_start; /* inside a dns_* call that starts a query */
static int pending;   /* callbacks the current step waits for */
static unsigned step;
static struct timer step_timer;
static uint64_t t0;
static int fail_asked;
static int batch; /* of the eviction step */
#define BATCH 256
#define BATCHES 17 /* 4352 names: more than the cache holds (4096) */

struct res {
	bool done;
	enum dns_status st;
	size_t n;
	uint8_t a[4][4];
	char name[64];
	uint64_t ms;
};
static struct res res[8];

static void next_step(struct timer *t);

static void step_after(uint32_t ms)
{
	timer_set(&w.wheel, &step_timer, ms, next_step);
}

static void got(struct res *r)
{
	assert_false(in_start); /* never inside the call that started it */
	assert_false(r->done);	/* once */
	r->done = true;
	r->ms = worker_now_ms() - t0;
	if (--pending == 0)
		step_after(1);
}

static void on_a(void *arg, enum dns_status st, const uint8_t (*addrs)[4], size_t n)
{
	struct res *r = arg;

	r->st = st;
	r->n = n;
	for (size_t i = 0; i < n && i < 4; i++)
		memcpy(r->a[i], addrs[i], 4);
	got(r);
}

static void on_name(void *arg, enum dns_status st, const char *name)
{
	struct res *r = arg;

	r->st = st;
	snprintf(r->name, sizeof(r->name), "%s", name ? name : "");
	got(r);
}

static int unknown_before;

/* The eviction step's lookups: NXDOMAIN each, no result kept. */
static void on_any(void *arg, enum dns_status st, const uint8_t (*addrs)[4], size_t n)
{
	(void)arg;
	(void)addrs;
	assert_false(in_start);
	assert_int_equal(st, DNS_NOTFOUND);
	assert_int_equal(n, 0);
	if (--pending == 0)
		step_after(1);
}

static struct dns_query *lookup(const char *name, uint32_t ms, int i)
{
	struct dns_query *q;

	memset(&res[i], 0, sizeof(res[i]));
	in_start = true;
	q = dns_lookup_a(name, ms, on_a, &res[i]);
	in_start = false;
	assert_non_null(q);
	pending++;
	return q;
}

static void client(const char *addr, uint32_t ms, int i)
{
	union sockaddr_any a = { 0 };

	a.sin.sin_family = AF_INET;
	inet_pton(AF_INET, addr, &a.sin.sin_addr);
	memset(&res[i], 0, sizeof(res[i]));
	in_start = true;
	assert_non_null(dns_client_name(&a, ms, on_name, &res[i]));
	in_start = false;
	pending++;
}

static void check_a(int i, const char *a1, const char *a2)
{
	uint8_t b[4];

	assert_true(res[i].done);
	assert_int_equal(res[i].st, DNS_OK);
	assert_int_equal(res[i].n, a2 ? 2 : 1);
	inet_pton(AF_INET, a1, b);
	assert_memory_equal(res[i].a[0], b, 4);
	if (a2) {
		inet_pton(AF_INET, a2, b);
		assert_memory_equal(res[i].a[1], b, 4);
	}
}

static void check_name(int i, enum dns_status st, const char *name)
{
	assert_true(res[i].done);
	assert_int_equal(res[i].st, st);
	assert_string_equal(res[i].name, name);
}

static void next_step(struct timer *t)
{
	struct dns_query *q;

	(void)t;
	t0 = worker_now_ms();
	switch (step++) {
	case 0: /* an answer; two lookups of one name share one query */
		lookup("a.test", 2000, 0);
		lookup("A.Test.", 2000, 1);
		break;
	case 1:
		check_a(0, "192.0.2.1", "192.0.2.2");
		check_a(1, "192.0.2.1", "192.0.2.2");
		assert_int_equal(asked("a.test", 1), 1);
		/* from the cache, still not inside the call */
		lookup("a.test", 2000, 0);
		break;
	case 2:
		check_a(0, "192.0.2.1", "192.0.2.2");
		assert_int_equal(asked("a.test", 1), 1);
		lookup("nx.test", 2000, 0);
		lookup("fail.test", 2000, 1);
		lookup("ttl0.test", 2000, 2);
		break;
	case 3:
		assert_int_equal(res[0].st, DNS_NOTFOUND);
		assert_int_equal(res[0].n, 0);
		assert_int_equal(res[1].st, DNS_TEMPFAIL);
		check_a(2, "192.0.2.3", NULL);
		fail_asked = asked("fail.test", 1);
		lookup("nx.test", 2000, 0);
		lookup("fail.test", 2000, 1);
		lookup("ttl0.test", 2000, 2);
		break;
	case 4:
		/* a "no" is kept (its SOA says 30 s); a failure and a TTL of 0
		 * are not */
		assert_int_equal(res[0].st, DNS_NOTFOUND);
		assert_int_equal(asked("nx.test", 1), 1);
		assert_int_equal(res[1].st, DNS_TEMPFAIL);
		assert_true(asked("fail.test", 1) > fail_asked);
		check_a(2, "192.0.2.3", NULL);
		assert_int_equal(asked("ttl0.test", 1), 2);
		/* a server that never answers costs the timeout */
		lookup("silent.test", 300, 0);
		break;
	case 5:
		assert_int_equal(res[0].st, DNS_TEMPFAIL);
		assert_true(res[0].ms >= 250 && res[0].ms < 1500);
		/* cancelled in flight, and cancelled with its answer at hand:
		 * neither callback runs */
		q = lookup("silent2.test", 300, 0);
		dns_cancel(q);
		q = lookup("a.test", 300, 1);
		dns_cancel(q);
		pending = 0;
		step_after(600);
		break;
	case 6:
		assert_false(res[0].done);
		assert_false(res[1].done);
		/* the verified name: PTR, then A of each PTR name until one
		 * gives the address back */
		client("127.0.0.9", 2000, 0);
		client("127.0.0.10", 2000, 1);
		client("127.0.0.11", 2000, 2);
		client("127.0.0.12", 300, 3);
		client("127.0.0.13", 2000, 4);
		client("127.0.0.14", 2000, 5);
		break;
	case 7:
		check_name(0, DNS_OK, "host.test");
		check_name(1, DNS_NOTFOUND, "");
		check_name(2, DNS_NOTFOUND, "");
		check_name(3, DNS_TEMPFAIL, "");
		/* names that are no host names are skipped ... */
		check_name(4, DNS_OK, "host13.test");
		/* ... but an answer c-ares refuses (CVE-2021-3672) is a failure */
		check_name(5, DNS_TEMPFAIL, "");
		assert_int_equal(asked("wrong.test", 1), 1);
		assert_int_equal(asked("host.test", 1), 1);
		/* again: all from the cache */
		client("127.0.0.9", 2000, 0);
		break;
	case 8:
		check_name(0, DNS_OK, "host.test");
		assert_int_equal(asked("9.0.0.127.in-addr.arpa", 12), 1);
		assert_int_equal(asked("host.test", 1), 1);
		step_after(1);
		break;
	case 9: /* the cache is bounded: fill it past its size, a batch a step */
		if (batch < BATCHES) {
			for (int i = 0; i < BATCH; i++) {
				char name[32];

				snprintf(name, sizeof(name), "n%d.test", batch * BATCH + i);
				memset(&res[0], 0, sizeof(res[0]));
				in_start = true;
				assert_non_null(dns_lookup_a(name, 5000, on_any, NULL));
				in_start = false;
				pending++;
			}
			batch++;
			step--; /* this step again once the batch is in */
			break;
		}
		unknown_before = atomic_load(&unknown_asked);
		/* the first entries went (a.test: asked again), the last stay */
		lookup("a.test", 2000, 0);
		lookup("n4351.test", 2000, 1);
		break;
	case 10:
		check_a(0, "192.0.2.1", "192.0.2.2");
		assert_int_equal(asked("a.test", 1), 2);
		assert_int_equal(res[1].st, DNS_NOTFOUND);
		assert_int_equal(atomic_load(&unknown_asked), unknown_before);
		/* a query left in flight when the worker stops is dropped
		 * without its callback, and frees what it holds */
		memset(&res[0], 0, sizeof(res[0]));
		in_start = true;
		assert_non_null(dns_lookup_a("silent.test", 5000, on_a, &res[0]));
		in_start = false;
		worker_request_stop(&w);
		break;
	}
}

static void op_started(struct worker *wk)
{
	struct cfg_server s = { 0 };
	char text[64];

	snprintf(text, sizeof(text), "127.0.0.1:%u", srv_port);
	s.has_resolver = true;
	assert_int_equal(config_parse_addr(text, &s.resolver), 0);
	assert_int_equal(dns_worker_start(wk, &s), 0);
	step_after(1);
}

static void op_stopping(struct worker *wk)
{
	(void)wk;
}

static unsigned op_active(struct worker *wk)
{
	(void)wk;
	return 0;
}

static void op_none(struct worker *wk)
{
	(void)wk;
}

static void op_reload(struct worker *wk, void *arg)
{
	(void)wk;
	(void)arg;
}

static void op_stopped(struct worker *wk)
{
	dns_worker_stop(wk);
}

static const struct worker_ops ops = {
	.started = op_started,
	.stopping = op_stopping,
	.active = op_active,
	.abort_all = op_none,
	.reap = op_none,
	.reload = op_reload,
	.stopped = op_stopped,
};

static void test_lookups(void **state)
{
	(void)state;
	srv_start();
	worker_setup(&w);
	w.ops = &ops;
	w.shutdown_timeout_ms = 1000;
	assert_int_equal(worker_init(&w), 0);
	worker_run(&w);
	assert_int_equal(step, 11);
	assert_false(res[0].done);
	worker_fini(&w);
	srv_end();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_answer_ttl),
		cmocka_unit_test(test_dnsbl_name),
		cmocka_unit_test(test_no_resolver),
		cmocka_unit_test(test_lookups),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
