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

/* ---- session.c: states and results ---- */

enum session_state {
	S_PROXY_HEADER, /* reading the PROXY header of accept_proxy */
	S_PEEK,		/* passthrough: reading the ClientHello for its SNI */
	S_TLS,		/* the client's TLS handshake (implicit or STARTTLS) */
	S_SCREEN,	/* screening: the pregreet wait, DNSBL answers (screen.c) */
	S_COMMAND,	/* mxlb answers the client */
	S_CONNECT,	/* connecting a backend */
	S_B_GREETING,	/* reading the backend's greeting */
	S_B_TLS,	/* the backend's TLS handshake */
	S_B_TLS_EHLO,	/* STARTTLS to the backend: mxlb's EHLO before it */
	S_B_STARTTLS,	/* STARTTLS to the backend: waiting for its 220 */
	S_B_HELO,	/* xclient: mxlb's own EHLO to the backend */
	S_B_XCLIENT,	/* xclient: waiting for the new greeting */
	S_B_EHLO,	/* the client's EHLO sent, waiting for the reply */
	S_RELAY,
	S_CLOSED,
};

enum session_result {
	R_RELAYED,
	R_REJECTED,
	R_UNAVAILABLE,
	R_TIMEOUT,
	R_ERROR,
	R_CLIENT_QUIT,
	R_COUNT
};

const char *session_result_name(enum session_result r);

/* ---- stats.c: counters for /metrics, shared by workers ---- */

#define HIST_BUCKETS 14
extern const double hist_bounds[HIST_BUCKETS]; /* seconds; +Inf follows */

struct hist {
	atomic_ulong count[HIST_BUCKETS + 1];
	atomic_ulong sum_usec;
};

/* Why mxlb turned a client away itself (mxlb_rejections_total{reason}):
 * a session refused or ended with a refusal, or (require_tls) a command. */
enum reject_reason {
	REJ_MAX_SESSIONS,     /* server.max_sessions */
	REJ_CLIENT_LIMIT,     /* max_sessions_per_client */
	REJ_CONNECTION_RATE,  /* limits.connection_rate (SPEC §9) */
	REJ_FD_RESERVE,	      /* accepted into the descriptors kept for backends */
	REJ_REQUIRE_TLS,      /* a command before STARTTLS: one per command */
	REJ_TRACKER,	      /* the client-stream tracker failed closed (554 5.7.1) */
	REJ_NO_BACKEND,	      /* no backend left to try (421 4.3.2) */
	REJ_BACKEND_FD,	      /* no descriptor for a backend connect */
	REJ_TOO_MANY_ERRORS,  /* FRONT_MAX_ERRORS refused commands */
	REJ_BAD_PROXY_HEADER, /* accept_proxy: not a PROXY header */
	REJ_BAD_CLIENT_HELLO, /* passthrough: not a TLS ClientHello */
	REJ_SHUTDOWN,	      /* stopping: 421 before relaying */
	REJ_SCREEN,	      /* the front door's screening (SPEC §9): deny, DNSBL, pregreet */
	REJ_COUNT
};

/* The label value of r. */
const char *reject_reason_name(enum reject_reason r);

/* Kept per listener name for the life of the process, like backend
 * states: a session counts on the stats it was counted on at accept, so
 * nothing resets or goes negative at a reload. */
struct listener_stats {
	atomic_ulong sessions[R_COUNT];
	atomic_ulong rejections[REJ_COUNT];
	atomic_ulong screen[SCREEN_COUNT];	 /* mxlb_screen_total */
	atomic_ulong limit_rejects[LIMIT_KINDS]; /* mxlb_limit_rejects_total */
	atomic_ulong tls12, tls13, tls_failures, starttls_discarded;
	atomic_uint active;
	atomic_ulong bytes_in, bytes_out; /* client -> backend, backend -> client */
	struct hist duration, route;
};

void hist_observe(struct hist *h, uint64_t usec);
struct listener_stats *listener_stats(const struct runtime *rt, const struct cfg_listener *l);
/* The stats of the listener named so, made (zero) when no runtime has
 * them; a reference. NULL when out of memory. Any thread. */
struct listener_stats *listener_stats_get(const char *name);
/* Release a reference; the last frees the stats. NULL is ignored. */
void listener_stats_put(struct listener_stats *st);
/* Sessions accepted on the listener: ended (any result) and open. */
uint64_t listener_stats_total(const struct listener_stats *st);
/* Refusals of mxlb's own on the listener, every reason. */
uint64_t listener_stats_refused(const struct listener_stats *st);

struct session;
/* Count a refusal of mxlb's own on s's listener. Any worker. */
void stats_reject(const struct session *s, enum reject_reason r);
/* At a session's end (session.c's account()): a session mxlb refused
 * (rejected or unavailable) counts under the reason it was closed with. */
void stats_session_rejected(const struct session *s);
/* A reload (SIGHUP) was applied (ok) or refused: main.c's reload(). */
void stats_reload_done(bool ok);
uint64_t stats_reloads(bool ok);
/* Wall clock, ms: the process's start, the last configuration loaded
 * (the start until a reload succeeds). */
uint64_t stats_start_ms(void);
uint64_t stats_config_loaded_ms(void);
uint64_t stats_uptime_ms(void);
uint64_t stats_wall_ms(void);

/* The one version string (/metrics, /status, the page); a -D wins. */
#ifndef MXLB_VERSION
#define MXLB_VERSION "0.1.0"
#endif

/* ---- session.c: the session object ---- */

struct session {
	struct session *next, *prev; /* on the worker's list */
	struct proxy_worker *pw;
	struct worker *w;
	struct runtime *rt; /* the configuration it started with; a reference */
	uint64_t id;
	const struct cfg_listener *l;
	struct conn *client, *back;
	enum session_state state;
	const char *action; /* what was happening, for error lines */
	struct timer timer;

	union sockaddr_any peer, local; /* the client, after any PROXY header */
	bool counted_client;		/* holds a max_sessions_per_client slot (limits.c) */

	struct dbuf in;	 /* client bytes not yet handled or relayed */
	struct dbuf out; /* replies of mxlb's own, sent by session_flush() */
	struct dbuf bin; /* backend replies during the backend dialogue */
	bool discarding; /* skipping the rest of an over-long line */
	uint8_t errors;

	char *ehlo_line; /* the routing line as the client wrote it */
	uint16_t ehlo_line_len;
	char *ehlo_name;
	bool esmtp;
	bool tls_done;			      /* the client side is TLS, terminated by mxlb */
	bool replay_mail;		      /* routed at MAIL without STARTTLS: replay it */
	bool no_smtp;			      /* implicit-TLS passthrough: bytes only */
	bool back_tls;			      /* the backend side is TLS */
	bool back_chunking;		      /* the backend's EHLO reply offers CHUNKING */
	bool back_reused;		      /* s->back was a parked connection (reuse.c) */
	uint32_t back_uses;		      /* client sessions s->back carried before */
	const char *tls_version, *tls_cipher; /* static strings of the library */
	char *sni;

	struct pool_rt *pool;
	int backend; /* index in pool, -1 none */
	uint16_t tried[MAX_TRIES];
	uint8_t ntried;

	struct smtp_track *track; /* the client-stream tracker (xclient handoff) */
	unsigned ehlo_drop;	  /* SMTP_EXT_* removed from the backend's EHLO replies */
	struct dbuf stash[2];	  /* relay overflow per direction (0: to backend) */
	bool eof[2];		  /* 0: client shut its side, 1: backend did */
	struct splice *splice;	  /* relay.c: the pipes, once a direction splices */
	uint8_t splice_st[2];	  /* relay.c: copying, switching or splicing, per direction */
	uint32_t bulk_run[2];	  /* relay.c, relay: auto: octets in full buffers in a row */

	/* screening (screen.c, SPEC §9): the session line's screen= and
	 * score=; screen is NULL on a listener without screening */
	const char *screen;
	int screen_score;
	bool screen_scored; /* DNSBL sites were asked: score= is logged */
	struct screen *scr; /* screen.c's, from the tests to the session's end */
	bool screen_mail;   /* a blocked client's MAIL was answered */

	/* XCLIENT NAME= (smtp_back.c): the client's verified name, looked up
	 * from accept where a pool of the listener hands off by XCLIENT */
	struct dns_query *name_q; /* in flight; cancelled by session_close() */
	char *client_name;	  /* name_st DNS_OK: the name */
	uint8_t name_st;	  /* enum dns_status, once name_known */
	bool name_asked, name_known;
	bool name_wait;	       /* the XCLIENT waits for the name */
	uint8_t xclient_attrs; /* XA_*: what the backend's XCLIENT offers */

	enum session_result result;
	const char *reason;
	uint64_t bytes_in, bytes_out; /* client -> backend, backend -> client */
	uint64_t t_accept, t_greeting, t_routed;
};

/* A session for accepted fd, its client conn first handled by h. */
struct session *session_new(struct proxy_worker *pw, const struct cfg_listener *l, int fd,
			    const struct conn_handler *h);
void session_set_state(struct session *s, enum session_state st);
void session_reap(struct proxy_worker *pw);
void session_seed_ids(uint64_t seed);
const char *session_state_name(enum session_state st);

/* Where a session is in its life; ask these, never the order of the
 * states. */
enum session_phase {
	PHASE_FRONT,   /* mxlb answers the client (before routing) */
	PHASE_BACKEND, /* routed: the backend dialogue, the client waits */
	PHASE_RELAY,
	PHASE_CLOSED,
};
enum session_phase session_phase(const struct session *s);
static inline bool session_routed(const struct session *s)
{
	return session_phase(s) != PHASE_FRONT;
}
/* End the session: close both sides at once; logs the session line.
 * Idempotent. */
void session_close(struct session *s, enum session_result r, const char *reason);
/* End after sending the client one last reply (e.g. "421 ..."). */
void session_close_reply(struct session *s, enum session_result r, const char *reason,
			 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* End after the client's queued bytes are sent. */
void session_close_flush(struct session *s, enum session_result r, const char *reason);
void session_timeout(struct session *s, uint32_t ms);
/* Queue a reply to the client, printf-style, CRLF added; session_flush()
 * sends what is queued (once per batch of commands). */
void session_reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void session_flush(struct session *s);

/* ---- smtp_front.c: the client side before relaying ---- */

extern const struct conn_handler front_handler;
/* Whether mxlb terminates STARTTLS on this listener. */
static inline bool listener_starttls(const struct cfg_listener *l)
{
	return l->tls == CFG_TLS_STARTTLS && l->tls_mode == CFG_TLS_TERMINATE;
}
void front_start(struct session *s); /* after accept (and PROXY header) */
/* For screen.c: the final "220 <hostname> <banner>" (queued); the command
 * phase, once screening decided, with the bytes the client sent meanwhile. */
void front_greeting(struct session *s);
void front_resume(struct session *s);
void front_stop(struct session *s); /* server stopping: 421 unless relaying */
/* Between smtp_front.c and smtp_commands.c: a command line handled (its
 * octets counted and dropped); a refused command's reply, log line and
 * error budget (false: the session closed); the client's TLS handshake
 * (STARTTLS: pre is what came with it); one command line. */
void front_consume(struct session *s, size_t n);
/* A client's misbehaviour (session.c): one info line with the session's
 * id and the client's address, at most a few a second per worker. */
void client_error(struct session *s, const char *what);
bool front_refuse(struct session *s, const char *what, const char *reply);
void front_tls_start(struct session *s, const char *pre, size_t prelen);
struct smtp_cmd;
bool front_command(struct session *s, const struct smtp_cmd *c);

/* ---- route.c: routes -> pool -> backend ---- */

struct pool_rt *route_pick_pool(const struct session *s);
/* Pick and take a backend not tried yet (pool_pick); -1 when none is left. */
int pool_take(struct pool_rt *p, struct session *s);
void pool_drop(struct pool_rt *p, int backend);

/* ---- smtp_back.c: the backend side until relaying ---- */

extern const struct conn_handler back_handler;
/* Route the session at its routing line and start the first backend. */
void back_route(struct session *s);
/* The session timer fired during the backend dialogue. */
void back_timeout(struct session *s);
/* The client's address is known (at accept, or after the PROXY header):
 * where a pool of the listener hands off by XCLIENT, start the lookup of
 * the client's name for NAME=. Idempotent; back_route() calls it too. */
void back_lookup_name(struct session *s);

/* ---- reuse.c: parked backend connections (SPEC §10) ---- */

/* Whether the session's pool reuses backend connections (the tracker
 * then reads the client's stream, whatever the handoff). */
bool reuse_on(const struct session *s);
/* relay.c, once the tracker is made: stop it at a clean QUIT. */
void reuse_track(struct session *s);
/* relay.c, whenever a reply, a client line or a drained queue may have
 * completed a clean QUIT: mxlb answers 221 itself, the backend connection
 * is reset and parked (or QUIT), the session ends. True when it ended. */
bool reuse_check(struct session *s);
/* smtp_back.c, the backend picked: a parked connection to it, now the
 * session's (s->back_reused, s->back_tls, s->back_uses, s->xclient_attrs
 * set), or NULL. */
struct conn *reuse_take(struct session *s);
/* Close every parked connection of the worker (QUIT): at stop and reload. */
void reuse_flush(struct proxy_worker *pw);

/* ---- relay.c ---- */

extern const struct conn_handler relay_client_handler, relay_back_handler;
/* Start relaying; `extra` are backend bytes after the EHLO reply. */
void relay_start(struct session *s);
/* Whether relaying will read the client's stream with the tracker
 * (smtp_track.h): then the client must not get STARTTLS to the backend. */
bool relay_tracked(const struct session *s);
/* Octets relayed by splice (relay: splice or auto), all workers. */
uint64_t relay_splice_bytes(void);

#endif
