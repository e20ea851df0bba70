/* session.h - the second half of proxy.h, included by it alone: a
 * session's life in the order of its files (session.c, stats.c, smtp_front.c,
 * route.c, smtp_back.c, reuse.c, relay.c). Include proxy/proxy.h, never
 * this file.
 */
#ifndef MXLB_SESSION_H
#define MXLB_SESSION_H
#ifndef MXLB_PROXY_H
#error "include proxy/proxy.h"
#endif

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

/* Fields are grouped by size, largest first, so that the struct has no
 * holes: an idle session costs what its fields need (bench/README.md,
 * idle memory). */
struct session {
	struct session *next, *prev; /* on the worker's list */
	struct proxy_worker *pw;
	struct worker *w;
	struct runtime *rt; /* the configuration it started with; a reference */
	uint64_t id;
	const struct cfg_listener *l;
	struct conn *client, *back;
	const char *action; /* what was happening, for error lines */
	const char *reason;
	struct timer timer;
	enum session_state state;
	enum session_result result;
	union sockaddr_any peer, local; /* the client, after any PROXY header */

	struct dbuf in;	 /* client bytes not yet handled or relayed */
	struct dbuf out; /* replies of mxlb's own, sent by session_flush() */
	struct dbuf bin; /* backend replies during the backend dialogue */

	char *ehlo_line; /* the routing line as the client wrote it */
	char *ehlo_name;
	const char *tls_version, *tls_cipher; /* static strings of the library */
	char *sni;
	struct pool_rt *pool;
	struct smtp_track *track; /* the client-stream tracker (xclient handoff) */

	/* relaying (relay.c, relay_splice.c) */
	struct dbuf stash[2];  /* relay overflow per direction (0: to backend) */
	struct splice *splice; /* the pipes, once a direction splices */
	uint32_t bulk_run[2];  /* relay: auto: octets in full buffers in a row */

	/* screening (screen.c, SPEC §9): the session line's screen= and
	 * score=; screen is NULL on a listener without screening */
	const char *screen;
	struct screen *scr; /* screen.c's, from the tests to the session's end */
	int screen_score;

	/* XCLIENT NAME= (smtp_back.c): the client's verified name, looked up
	 * from accept where a pool of the listener hands off by XCLIENT */
	struct dns_query *name_q; /* in flight; cancelled by session_close() */
	char *client_name;	  /* name_st DNS_OK: the name */

	uint64_t bytes_in, bytes_out; /* client -> backend, backend -> client */
	uint64_t t_accept;
	uint32_t greeting_us, routed_us; /* since t_accept; 0: not yet */

	int backend;		/* index in pool, -1 none */
	uint32_t back_uses;	/* client sessions s->back carried before */
	unsigned ehlo_drop;	/* SMTP_EXT_* removed from the backend's EHLO replies */
	uint16_t tried[MAX_TRIES];
	uint16_t ehlo_line_len;
	uint8_t ntried;
	uint8_t errors;
	uint8_t splice_st[2]; /* relay.c: copying, switching or splicing, per direction */
	uint8_t name_st;      /* enum dns_status, once name_known */
	uint8_t xclient_attrs; /* XA_*: what the backend's XCLIENT offers */

	bool counted_client; /* holds a max_sessions_per_client slot (limits.c) */
	bool discarding;     /* skipping the rest of an over-long line */
	bool esmtp;
	bool tls_done;	    /* the client side is TLS, terminated by mxlb */
	bool replay_mail;   /* routed at MAIL without STARTTLS: replay it */
	bool no_smtp;	    /* implicit-TLS passthrough: bytes only */
	bool back_tls;	    /* the backend side is TLS */
	bool back_chunking; /* the backend's EHLO reply offers CHUNKING */
	bool back_reused;   /* s->back was a parked connection (reuse.c) */
	bool eof[2];	    /* 0: client shut its side, 1: backend did */
	bool screen_scored; /* DNSBL sites were asked: score= is logged */
	bool screen_mail;   /* a blocked client's MAIL was answered */
	bool name_asked, name_known;
	bool name_wait; /* the XCLIENT waits for the name */
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
/* Microseconds since the session's accept, at least 1 and at most
 * UINT32_MAX (71 minutes): for greeting_us and routed_us. */
uint32_t session_elapsed_us(const struct session *s);
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

/* ---- smtp_xclient.c: the XCLIENT command ---- */

/* Send XCLIENT for s's client, or, while its name is still being looked
 * up, wait for it (s->name_wait). */
void xclient_send(struct session *s);
/* What the backend's EHLO reply offers of NAME, DESTADDR, DESTPORT. */
void xclient_note_attrs(struct session *s, const char *reply, size_t len);
/* Whether a pool the listener routes to hands off by XCLIENT. */
bool listener_xclient(const struct cfg_listener *l);

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
/* The conns of direction dir (0: client -> backend). */
static inline struct conn *relay_dst(struct session *s, int dir)
{
	return dir ? s->client : s->back;
}
static inline struct conn *relay_src(struct session *s, int dir)
{
	return dir ? s->back : s->client;
}
/* Receive dir again unless it is at its end, spliced or congested. */
void relay_resume(struct session *s, int dir);

/* ---- relay_splice.c: relay: splice and auto ---- */

enum { RELAY_COPY, RELAY_SWITCH, RELAY_SPLICE }; /* s->splice_st[] */

/* Switch dir to splicing if its bytes are nowhere else now; called again
 * from each event that may make it so. */
void relay_splice_try(struct session *s, int dir);
/* relay: auto, after len octets of dir were copied. */
void relay_auto(struct session *s, int dir, size_t len);
/* At relaying's start: relay: splice begins both directions (or says once
 * why this session copies). */
void relay_splice_init(struct session *s);
/* Octets relayed by splice (relay: splice or auto), all workers. */
uint64_t relay_splice_bytes(void);

#endif
