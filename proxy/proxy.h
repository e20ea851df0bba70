/* proxy.h - the proxy's private header. The banners below name the file
 * that implements what follows; after the services of worker 0 they follow
 * a session's life: sockets -> listener -> session -> smtp_front -> route
 * -> smtp_back -> relay.
 *
 * Calls go down that list, with the callbacks that truly go both ways:
 * session.c hands a state's timer to the phase that owns it
 * (back_timeout), and the phases end the session through session.c; the
 * listener's and admin server's sockets accept through the handler each
 * was made with (sockets.c sets it). services.c starts, stops and reloads
 * health, alerts and admin, which reach sessions only through runtime.c's
 * shared state.
 */
#ifndef MXLB_PROXY_H
#define MXLB_PROXY_H

#include <netinet/in.h>
#include <sys/un.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "core/conn.h"
#include "core/dbuf.h"
#include "core/log.h"
#include "core/timer.h"
#include "core/worker.h"
#include "proxy/smtp_track.h"

#define BUG_ON(cond)                                                              \
	do {                                                                      \
		if (cond) {                                                       \
			log_error("bug", "%s:%d: %s", __FILE__, __LINE__, #cond); \
			abort();                                                  \
		}                                                                 \
	} while (0)

/* Client bytes kept before relaying (the command line being read plus
 * pipelined commands after the routing point). Past it we stop reading. */
#define FRONT_IN_MAX (64 * 1024)
/* Backend reply bytes kept while mxlb talks to the backend itself. */
#define BACK_IN_MAX (64 * 1024)
/* mxlb's own replies not yet sent (a client that sends without reading). */
#define SESSION_OUT_MAX (64 * 1024)
/* Client send segments past which the command phase stops reading. */
#define FRONT_SEGS_HIGH 4
/* Relay backpressure: stop reading one side when the other side's send
 * queue holds this much. */
#define RELAY_HIGH (128 * 1024)
#define RELAY_SEGS_HIGH (CONN_SEGS / 2)
#define FRONT_MAX_ERRORS 10
#define MAX_TRIES 16
/* How long a closing connection may take to flush its last reply. */
#define LINGER_MS 5000
/* The longest reply line mxlb writes itself. */
#define SMTP_LINE_MAX_REPLY 512

union sockaddr_any {
	struct sockaddr sa;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
};

/* ---- pool.c (balancers: lb_*.c): pools at run time ---- */

enum { ADMIN_ENABLED, ADMIN_DRAIN, ADMIN_DISABLED };

/* A backend's state for the life of the process, one per pool name and
 * backend name, shared by every configuration that names that backend: a
 * session counts where it was taken, whichever configuration later reads
 * it, so max_sessions, the balancers, /status and /metrics see the
 * sessions that started before a reload. Each runtime holds a reference
 * (pool_rt_init); it is freed with the last runtime that names it, that
 * is once no session can still drop on it. A backend whose address
 * changes keeps its counters but starts its health state (up, admin,
 * weight, what the checks learned) fresh (pool_rt_adopt). */
struct backend_rt {
	atomic_uint active;
	atomic_ulong total;
	atomic_ulong connect_failures;
	atomic_uint idle;    /* parked connections, all workers (reuse.c) */
	atomic_ulong reused; /* sessions handed a parked connection */
	atomic_bool up;
	atomic_int admin;   /* ADMIN_*: set by POST /backends/... */
	atomic_uint weight; /* the configured weight until an admin sets one */
	/* published by health.c for sessions, /status and /metrics */
	atomic_uint passive_failures; /* real sessions' failures not yet counted */
	atomic_ulong checks_ok, checks_failed;
	atomic_uint caps;	    /* SMTP_EXT_* seen in the last good check */
	atomic_ulong size_max;	    /* its SIZE, 0 when none */
	atomic_ulong last_check_ms; /* wall clock */
	atomic_bool last_check_ok;
	atomic_ulong last_failure_ms; /* wall clock of the last failed check, 0 none */
	atomic_ulong state_change_ms; /* wall clock of the last up <-> down, 0 none */
	char last_failure[64];	      /* why it failed; worker 0 only (health, admin) */
};

/* A backend as one configuration's pool has it. */
struct pool_backend {
	const struct cfg_backend *cfg;
	struct backend_rt *st; /* a reference, released by pool_rt_fini */
	int cur_weight;	       /* smooth round robin state; under the pool's lock */
};

struct pool_rt;

/* A balancer: a table of functions, one file each (lb_*.c). */
struct pick_ctx {
	const union sockaddr_any *client;
	const char *ehlo;
	const uint16_t *tried;
	unsigned ntried;
};

struct lb_ops {
	const char *name;
	/* Build p->lb_state, or leave it NULL; 0 or -1 (out of memory). */
	int (*init)(struct pool_rt *p);
	/* The index of the backend to use, or -1. Called under the pool's lock. */
	int (*pick)(struct pool_rt *p, const struct pick_ctx *ctx);
	void (*free)(struct pool_rt *p);
};

struct pool_rt {
	const struct cfg_pool *cfg;
	struct pool_backend *backends; /* parallel to cfg->backends */
	size_t nbackends;
	pthread_mutex_t lock;
	const struct lb_ops *lb;
	void *lb_state;
	uint64_t rand_state; /* lb_random */
};

extern const struct lb_ops lb_roundrobin, lb_leastconn, lb_source, lb_ehlo, lb_random;

/* The balancer named by a pool's `balance`. */
const struct lb_ops *lb_for(enum cfg_balance b);
/* Set up the run-time state of a pool: its balancer, and a reference to
 * each backend's process-lifetime state, found by pool and backend name or
 * made (up, enabled, the configured weight). Nothing that exists changes
 * until pool_rt_adopt, so a reload that fails after this leaves no trace.
 * 0, or -1 when out of memory. */
int pool_rt_init(struct pool_rt *p, const struct cfg_pool *cfg);
/* Release the pool's references; a backend state no runtime names any
 * more is freed. Any thread. */
void pool_rt_fini(struct pool_rt *p);
/* The pool's configuration is now the one in force (a reload switches;
 * health checks are stopped): a backend whose address changed starts its
 * health state fresh, a weight follows the file unless an admin set one,
 * and a pool without health checks has every backend up. */
void pool_rt_adopt(struct pool_rt *p);

/* Whether backend i may take a new session (up, enabled, weighted, not
 * tried, not full). */
bool pool_eligible(struct pool_rt *p, size_t i, const struct pick_ctx *ctx);
/* Pick a backend with the pool's balancer and take it (active and total
 * counted); -1 when none is eligible. max_sessions holds across
 * configurations: a backend filled between the pick and the take by a
 * session of another configuration is not taken. */
int pool_pick(struct pool_rt *p, const struct pick_ctx *ctx);
static inline unsigned backend_weight(struct backend_rt *b)
{
	return atomic_load_explicit(&b->weight, memory_order_relaxed);
}

/* ---- health.c: checks publish up/down; nothing else ---- */

/* Start checking every backend of every pool on this worker's ring. */
void health_start(struct worker *w);
/* Stop (server stopping): close checks in progress. */
void health_stop(void);
/* A real session's connect or greeting failed on this backend. */
void health_passive_failure(struct pool_rt *p, int backend);

/* ---- alerts.c: mail on backend state changes ---- */

void alerts_start(struct worker *w);
/* event is one CFG_EV_*; backend is NULL for pool_down. */
void alerts_event(unsigned event, const char *pool, const char *backend, const char *reason);
void alerts_stop(void);

/* ---- admin.c ---- */

/* The admin socket's accept handler (lsock->accepted): it is told from
 * mail listeners by it. */
void admin_accept(struct lsock *ls, int fd);
void admin_stop(void);

/* ---- admin_render.c: the admin server's answers ---- */

/* printf into b (no limit but memory). */
void admin_out(struct dbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void admin_render_metrics(struct dbuf *b);
/* What the one asking may do: act on backends (a token is set, or it came
 * over the unix socket, where none is needed then), and whether it must
 * give the token. Never the token itself. */
struct admin_access {
	bool actions, token;
};
void admin_render_status(struct dbuf *b, const struct admin_access *acc);
/* "up", "down", "drain" or "disabled", for /status and the log. */
const char *admin_backend_state(struct backend_rt *be);
/* The SMTP_EXT_* capabilities /status and the page name, in order. */
struct admin_cap {
	unsigned bit;
	const char *name;
};
extern const struct admin_cap admin_caps[];
extern const size_t admin_ncaps;

/* ---- admin_page.c: the status page (GET /, /status.html) ---- */

/* The page, its script allowed by nonce (the Content-Security-Policy
 * admin.c sends names it). */
void admin_render_page(struct dbuf *b, const struct admin_access *acc, const char *nonce);

/* ---- services.c: health, alerts and admin, on worker 0 ---- */

struct runtime;
void services_start(struct worker *w);
void services_stop(void);
/* rt comes into force: services that write backend state pause around
 * runtime_adopt(rt). */
void services_reload(struct worker *w, struct runtime *rt);

/* ---- runtime.c: a configuration at run time ---- */

/* A configuration with its run-time state. A reload makes a new one; the
 * old one lives on while sessions that started with it do: each session,
 * each worker and the main thread hold a reference. What must outlive a
 * configuration (backend states, listener stats) it only references. */
struct tls_ctx;

struct runtime {
	struct config *cfg;
	struct tls_ctx **tls;		/* parallel to cfg->tls */
	struct pool_rt *pools;		/* parallel to cfg->pools */
	struct listener_stats **lstats; /* parallel to cfg->listeners; references */
	atomic_uint refs;
};

/* The runtime new sessions of this thread use (per thread: a worker
 * switches at a reload, on its own thread). */
extern _Thread_local struct runtime *mxlb_rt;
extern atomic_uint mxlb_sessions; /* open sessions, all workers */

/* NULL and err set when a certificate does not load (cfg stays the
 * caller's then). */
struct runtime *runtime_new(struct config *cfg, char *err, size_t errlen);
struct tls_ctx *runtime_tls(const struct runtime *rt, const struct cfg_tls *t);
/* server.hostname of that configuration: a session uses its own runtime's,
 * so it answers with the name it greeted with. */
const char *runtime_hostname(const struct runtime *rt);
void runtime_ref(struct runtime *rt);
void runtime_unref(struct runtime *rt);
/* rt comes into force: pool_rt_adopt on each of its pools. Once per
 * reload, on worker 0 (before the others switch), its checks stopped. */
void runtime_adopt(struct runtime *rt);

/* ---- notify.c: systemd's readiness protocol (sd_notify) ---- */

/* Each sends one datagram to $NOTIFY_SOCKET, or nothing when it is unset;
 * main thread only. READY=1 with a STATUS= line naming what (e.g.
 * "started", "reloaded") and what cfg serves; RELOADING=1 with
 * MONOTONIC_USEC; STOPPING=1. */
void notify_ready(const struct config *cfg, const char *what);
void notify_reloading(void);
void notify_stopping(uint32_t timeout_ms);

/* ---- version.c: mxlb --version and the io_uring probe ---- */

/* The versions of mxlb, liburing, BoringSSL, libyaml and the kernel, and
 * what the kernel's io_uring offers of what mxlb uses; 0 when mxlb can
 * run here. */
int version_print(FILE *f);
/* 0 when a ring like a worker's can be set up; else -errno and why. */
int io_uring_check(char *why, size_t cap);

/* ---- sockets.c: listening sockets ---- */

/* A unix socket file this process made: removed when the process stops
 * using it, unless the path has become another file since. */
struct sock_file {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	dev_t dev;
	ino_t ino;
};

/* Whether cfg's listeners listen on exactly a. */
bool sock_listened_on(const struct config *cfg, const struct cfg_addr *a);
/* Whether old's listeners hold a or an address that overlaps it. */
bool sock_held(const struct config *old, const struct cfg_addr *a);
/* Every mail address of cfg that old (NULL at start) does not hold is
 * free (one owner per address), else -1 and err says which is not. */
int sock_probe_new(const struct config *cfg, const struct config *old, char *err, size_t len);
/* A listening socket on a for w: listener l's, or with l NULL the admin
 * server's (a unix socket file it makes goes in made); -1 and err. */
int sock_add(struct worker *w, const struct cfg_addr *a, const struct cfg_listener *l,
	     const char *user, struct sock_file *made, char *err, size_t len);
/* Every socket of cfg for w (the admin server's on worker 0 only). */
int sock_worker_listen(struct worker *w, const struct config *cfg, struct sock_file *admin_file,
		       char *err, size_t len);
void sock_free_all(struct lsock *ls);
/* Remove the socket file f made, unless its path is another file now. */
void sock_file_remove(struct sock_file *f);

/* ---- listener.c ---- */

struct proxy_worker {
	struct worker *w;
	struct runtime *rt;	  /* holds a reference */
	struct session *sessions; /* every open session of this worker */
	unsigned nsessions;
	struct session *dead; /* closed in this batch; freed by reap */
	struct slab session_slab;
	struct reuse_idle *idle; /* parked backend connections (reuse.c) */
};

extern const struct worker_ops proxy_worker_ops;
/* A mail listener's accept handler (lsock->accepted; lsock->owner is its
 * cfg_listener): the fd becomes a session. */
void listener_accept(struct lsock *ls, int fd);

/* What a worker gets at a reload: the new runtime (it takes its own
 * reference) and sockets for addresses the old configuration did not
 * listen on. Sockets on addresses both listen on are kept as they are. */
struct reload_arg {
	struct runtime *rt;
	struct lsock *fresh;
};

/* ---- limits.c: per-client limits (connection_rate, max_sessions_per_client) ---- */

/* The limits mxlb_limit_rejects_total{limit} counts (LIMIT_MAX_SESSIONS,
 * server.max_sessions, is listener.c's). */
enum limit_kind {
	LIMIT_CONNECTION_RATE,
	LIMIT_PER_CLIENT,
	LIMIT_MAX_SESSIONS,
	LIMIT_KINDS,
	LIMIT_NONE = LIMIT_KINDS, /* admitted */
};

/* A client as the limits count it: on a listener's counters (scope), its
 * address masked to the listener's prefix. */
struct client_key {
	const void *scope;
	uint8_t addr[16]; /* IPv4 as v4-mapped IPv6 */
	uint8_t bits;
};

void client_key_make(struct client_key *k, const void *scope, const union sockaddr_any *a,
		     const struct cfg_limits *lim);
/* A new session of k at now_ms (monotonic): LIMIT_CONNECTION_RATE when
 * rate_count were admitted in the last rate_window ms (0: no rate),
 * LIMIT_PER_CLIENT when max_sessions are open (0: no limit), else
 * LIMIT_NONE, counted; *counted when it holds a session slot, to be
 * given back with client_limit_drop(). Any worker. */
enum limit_kind client_limit_take(const struct client_key *k, uint32_t rate_count,
				  uint32_t rate_window, uint32_t max_sessions, uint64_t now_ms,
				  bool *counted);
void client_limit_drop(const struct client_key *k);
/* Entries in use, and how many there can be (the table is fixed). */
size_t client_limit_entries(void);
size_t client_limit_capacity(void);

struct session;
/* At accept, once the client address is known (after a PROXY header):
 * the listener's per-client limits; false when s was refused (421 4.7.0,
 * or a close on implicit TLS) and closed. An allow-listed client
 * (screen.allow) is not limited. */
bool limits_admit(struct session *s);
/* At the session's end: its max_sessions_per_client slot, if it holds one. */
void limits_release(struct session *s);
/* Count a refusal of a limit on s's listener; for the metric table
 * (admin_render.c), the label of each limit and a listener's count. */
void limit_reject_count(const struct session *s, enum limit_kind kind);
const char *limit_kind_name(size_t i);
struct listener_stats;
uint64_t limit_rejects_of(const struct listener_stats *st, size_t kind);

/* ---- screen.c: the front door's tests (SPEC §9) ---- */

/* What screening made of a client: the session line's screen= and the
 * result label of mxlb_screen_total. */
enum screen_result {
	SCREEN_PASS,	 /* passed the tests */
	SCREEN_CACHED,	 /* passed before: tests skipped */
	SCREEN_ALLOW,	 /* in screen.allow: never screened or limited */
	SCREEN_DENY,	 /* in screen.deny: 554 and closed */
	SCREEN_PREGREET, /* talked before the final greeting */
	SCREEN_DNSBL,	 /* DNSBL score at or over the threshold */
	SCREEN_COUNT
};

struct session;
struct listener_stats;
/* The name of result r; NULL from SCREEN_COUNT on (the metric's variants). */
const char *screen_result_name(size_t r);
/* mxlb_screen_total of a listener, result r. */
uint64_t screen_stats_count(const struct listener_stats *st, size_t r);
/* Whether a is in the listener's screen.allow: such a client is never
 * screened (screen=allow) and never limited. Pure; any thread. */
bool screen_allowed(const struct cfg_listener *l, const union sockaddr_any *a);
/* At the greeting point (implicit-TLS passthrough: before the
 * ClientHello, where only the lists apply): false when the client is to
 * be greeted at once (no screening, allow-listed, cached, nothing to
 * test); else screening took the session over (S_SCREEN, or closed:
 * denied) and greets it itself, then goes on with front_resume(). */
bool screen_start(struct session *s);
/* S_SCREEN: client bytes arrived (kept in s->in for the command phase). */
void screen_input(struct session *s);
/* S_SCREEN's timer: the pregreet wait is over, or dnsbl.timeout. */
void screen_timeout(struct session *s);
/* From session_close(): queries cancelled, the state freed. */
void screen_end(struct session *s);
/* Whether the client failed under `action: enforce`: mxlb answers it with
 * the blocked table (smtp_commands.c), refuses each RCPT with
 * screen_rcpt_reply() and never routes it. */
bool screen_blocked(const struct session *s);
/* The 550 naming the site that listed the client (or the protocol error);
 * valid until the next call on this thread. */
const char *screen_rcpt_reply(const struct session *s);

/* A session's life, from its states to the relay: session.h. */
#include "proxy/session.h"

#endif
