/* bench.c - mxlb-bench: an SMTP load generator (SPEC section 8; how to run
 * it and what `make bench` measures in bench/README.md).
 *
 * One worker thread per --threads, each with its own epoll instance and its
 * own share of --concurrency, so a session lives and dies on one thread and
 * nothing is shared but the read-only configuration, the prebuilt message,
 * the TLS context and a counter of sessions started. Sockets are
 * non-blocking and edge-triggered. A session is a client-side state
 * machine: sess_enter() performs each state's entry action (queueing the
 * command that state waits on the reply to), sess_reply() moves on.
 *
 * The message is built once (message_build()): a header block of a fixed
 * length whose Message-ID each message fills in, and a dot-stuffed body
 * shared by every session. Latencies go into log-linear histograms (1 us
 * resolution below 256 us, then under 0.8 % error up to 60 s), one per
 * thread, merged at the end; no sample is kept.
 *
 * The main thread waits for SIGINT/SIGTERM, prints the progress line, says
 * "held N" in --hold mode, and prints the summary once every worker is done.
 */
#include "bench/tool.h"
#include "config/config.h"
#include "proxy/smtp_parse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define BENCH_IN_CAP 8192  /* replies: a whole (multi-line) reply must fit */
#define BENCH_CMD_CAP 1536 /* queued commands: MAIL, RCPT and DATA together */
#define BENCH_HDR_CAP 1024 /* one message's header block */
#define BENCH_NAME_MAX 255 /* --ehlo, --from, --to, --sni */
#define BENCH_LINE_MAX 78  /* body lines, CRLF included (RFC 5322 2.1.1 asks <= 78 + CRLF) */
#define BENCH_SIZE_MAX (256ull << 20)
#define BENCH_THREADS_MAX 64
#define BENCH_TICK_MS 100	     /* the main thread's look at the workers */
#define BENCH_PROGRESS_AFTER_MS 2000 /* no progress line on shorter runs */
#define BENCH_ERRORS_SHOWN 5	     /* error lines on stderr, the rest only counted */
#define BENCH_DURATION_MAX_MS (7ull * 24 * 3600 * 1000)

/* ---- configuration: set by options_parse(), read-only once threads run */

enum tls_mode { TLS_NONE, TLS_STARTTLS, TLS_IMPLICIT };
static const char *const tls_mode_names[] = { "none", "starttls", "implicit" };

static struct {
	struct sockaddr_storage target;
	socklen_t target_len;
	const char *target_text;
	char target_host[256]; /* for certificate checks without --sni */
	uint64_t sessions;     /* 0: no limit (--duration bounds the run) */
	unsigned concurrency;
	uint64_t messages; /* per session */
	uint64_t size;
	enum tls_mode tls;
	bool pipelining;
	uint64_t duration_ms; /* 0: none */
	uint64_t timeout_ms;
	bool json;
	int threads;
	const char *ehlo, *from, *to;
	bool hold;
	bool hold_rcpt;	  /* --hold-after rcpt: MAIL and RCPT before holding */
	uint64_t hold_ms; /* 0: until a signal */
	bool quiet, progress, verbose;
	const char *tls_ca, *sni;
	bool resume;
} cfg = {
	.sessions = 1000,
	.concurrency = 10,
	.messages = 1,
	.size = 1024,
	.timeout_ms = 30000,
	.threads = 1,
	.ehlo = "bench.client.test",
	.from = "bench@client.test",
	.to = "rcpt@dest.test",
};

/* The message, built once: every message is hdr (with its own Message-ID)
 * followed by body, which is dot-stuffed and ends with the "." line. */
static struct {
	char subject[96];
	char date[64];
	uint32_t nonce; /* tells runs apart in Message-IDs */
	size_t hdr_len; /* the same for every message */
	char *body;
	size_t body_len;
} msg;

static SSL_CTX *tls_ctx;

/* ---- latency histograms */

/*
 * Log-linear buckets over microseconds: a value v with its highest set bit
 * at position b >= 8 lands in bucket (b - 7) * 128 + (v >> (b - 7)), so each
 * power of two is cut in 128 buckets (error under 1/128); values below 256
 * have a bucket each. HIST_BUCKETS covers everything up to 2^26 us (67 s);
 * longer values are clamped to HIST_MAX_US.
 */
#define HIST_SUB_BITS 7
#define HIST_MAX_US 60000000ull
#define HIST_BUCKETS 2560

struct bench_hist {
	uint64_t count;
	uint64_t max;
	uint64_t sum;
	uint64_t n[HIST_BUCKETS];
};

static unsigned hist_index(uint64_t v)
{
	unsigned msb, shift;

	if (v < (2u << HIST_SUB_BITS))
		return (unsigned)v;
	msb = 63u - (unsigned)__builtin_clzll(v);
	shift = msb - HIST_SUB_BITS;
	return (shift << HIST_SUB_BITS) + (unsigned)(v >> shift);
}

/* The highest value that lands in bucket i. */
static uint64_t hist_bucket_top(unsigned i)
{
	unsigned shift;
	uint64_t m;

	if (i < (2u << HIST_SUB_BITS))
		return i;
	shift = (i >> HIST_SUB_BITS) - 1;
	m = i - ((uint64_t)shift << HIST_SUB_BITS);
	return ((m + 1) << shift) - 1;
}

static void hist_record(struct bench_hist *h, uint64_t us)
{
	if (us > HIST_MAX_US)
		us = HIST_MAX_US;
	h->n[hist_index(us)]++;
	h->count++;
	h->sum += us;
	if (us > h->max)
		h->max = us;
}

static void hist_merge(struct bench_hist *into, const struct bench_hist *h)
{
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		into->n[i] += h->n[i];
	into->count += h->count;
	into->sum += h->sum;
	if (h->max > into->max)
		into->max = h->max;
}

/* The value below which pct percent of the samples lie (to the bucket's
 * precision, never above the largest sample); 0 when there are none. */
static uint64_t hist_percentile(const struct bench_hist *h, double pct)
{
	uint64_t rank, seen = 0;

	if (h->count == 0)
		return 0;
	rank = (uint64_t)ceil(pct / 100.0 * (double)h->count);
	if (rank < 1)
		rank = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->n[i];
		if (seen >= rank) {
			uint64_t top = hist_bucket_top(i);

			return top < h->max ? top : h->max;
		}
	}
	return h->max;
}

/* ---- counters */

enum err_kind { ERR_CONNECT, ERR_TIMEOUT, ERR_CLOSED, ERR_PROTOCOL, ERR_TLS, ERR_KINDS };
static const char *const err_kind_names[ERR_KINDS] = {
	"connect", "timeout", "closed", "protocol", "tls",
};

/* One thread's results. The atomics are read by the main thread for the
 * progress line and "held N"; the rest only after the thread has ended. */
struct stats {
	_Atomic uint64_t sessions_ok; /* ended by QUIT after their work */
	_Atomic uint64_t sessions_failed;
	_Atomic uint64_t messages_ok; /* 250 after the final dot */
	_Atomic uint64_t messages_failed;
	_Atomic uint64_t errors;
	_Atomic uint64_t established; /* --hold: sessions that reached HOLD */
	_Atomic uint64_t setup_done;  /* --hold: established or failed before */
	uint64_t sessions_aborted;    /* cut short by SIGINT/SIGTERM */
	uint64_t tls_resumed;
	uint64_t by_code[600];
	uint64_t by_kind[ERR_KINDS];
	struct bench_hist setup, message;
};

/* ---- the run, shared by all threads */

enum stop_level {
	STOP_NONE,
	STOP_QUIT,  /* --hold ends: held sessions say QUIT */
	STOP_ABORT, /* a signal: close everything now */
};

static struct {
	uint64_t t0;		  /* ns */
	uint64_t deadline;	  /* ns; 0: no --duration */
	_Atomic uint64_t started; /* sessions claimed by the workers */
	_Atomic int stop;	  /* enum stop_level */
	_Atomic unsigned errors_shown;
	_Atomic bool no_pipelining_said;
	_Atomic int workers_done;
} run;

/* ---- types */

struct bench_worker {
	int id;
	struct tool_loop loop;
	int stop_seen; /* the stop level acted on */
	pthread_t thread;
	unsigned slots; /* this thread's share of --concurrency */
	unsigned nsess;
	uint64_t opened;
	bool claimed_out;	   /* run_claim() said no: it will not say yes again */
	struct tool_list sessions; /* every open session */
	struct tool_tqueue tq;	   /* sessions waiting for a reply or a write (--timeout) */
	uint64_t msg_seq;	   /* Message-IDs */
	SSL_SESSION *resume;	   /* --resume: the last session ticket */
	uint64_t end;		   /* ns: when the last session ended */
	_Alignas(64) struct stats st;
};

static struct bench_worker workers[BENCH_THREADS_MAX];

/*
 * A session, from the client's side. Each state but CONNECT, TLS, HOLD and
 * DONE waits for one reply (PIPELINE for three); sess_enter() sends what
 * the state waits on.
 */
enum sess_state {
	S_CONNECT,
	S_TLS, /* handshake: at once (implicit) or after STARTTLS's 220 */
	S_GREETING,
	S_EHLO,
	S_STARTTLS,
	S_MAIL,
	S_RCPT,
	S_DATA,
	S_PIPELINE, /* MAIL, RCPT and DATA in one write: three replies due */
	S_BODY,	    /* the message, then its final reply */
	S_RSET,	    /* after a refused command */
	S_HOLD,	    /* --hold: established, idle until the run ends */
	S_QUIT,
	S_DONE, /* freed by sess_settle() */
};

/* Names for the summary, and what was going on for error lines. */
static const struct {
	const char *name;
	const char *action;
} sess_states[] = {
	[S_CONNECT] = { "CONNECT", "connecting" },
	[S_TLS] = { "TLS", "in the TLS handshake" },
	[S_GREETING] = { "GREETING", "waiting for the greeting" },
	[S_EHLO] = { "EHLO", "waiting for the EHLO reply" },
	[S_STARTTLS] = { "STARTTLS", "waiting for the STARTTLS reply" },
	[S_MAIL] = { "MAIL", "waiting for the MAIL reply" },
	[S_RCPT] = { "RCPT", "waiting for the RCPT reply" },
	[S_DATA] = { "DATA", "waiting for the DATA reply" },
	[S_PIPELINE] = { "PIPELINE", "waiting for the MAIL/RCPT/DATA replies" },
	[S_BODY] = { "BODY", "sending the message or waiting for its final reply" },
	[S_RSET] = { "RSET", "waiting for the RSET reply" },
	[S_HOLD] = { "HOLD", "holding the session" },
	[S_QUIT] = { "QUIT", "waiting for the QUIT reply" },
	[S_DONE] = { "DONE", "closing" },
};

struct xport;

struct sess {
	struct tool_source src;
	int fd;
	struct bench_worker *w;
	struct tool_link link;	 /* w->sessions */
	struct tool_timer timer; /* in w->tq */

	enum sess_state state;
	const struct xport *xp;
	SSL *ssl;
	bool tls_up;
	bool rd_ready;	 /* the socket may hold input: read until EAGAIN */
	bool rdhup;	 /* epoll saw the FIN: a short read is no proof of a drained socket */
	bool wr_blocked; /* the last send said EAGAIN: wait for EPOLLOUT */
	bool ext_pipelining, ext_starttls, ext_size; /* from the EHLO reply */
	bool established;			     /* setup latency recorded */
	bool quit_acked;			     /* 221 read: waiting for the server's FIN */

	uint64_t msgs_done; /* messages accepted or refused */
	bool in_msg;	    /* MAIL sent, final reply not read */
	bool msg_refused;   /* a command of the current message was refused */
	bool body_aborted;  /* DATA's 354 came after a refusal: "." alone sent */
	int pipe_replies;
	uint64_t t_start, t_msg; /* ns: connect, MAIL */

	/* output: cmd[cmd_off..cmd_len), then hdr[hdr_off..hdr_len), then
	 * body[body_off..body_len); the last two only in S_BODY */
	size_t cmd_off, cmd_len;
	size_t hdr_off, hdr_len;
	const char *body;
	size_t body_off, body_len;
	size_t in_len;
	char cmd[BENCH_CMD_CAP];
	char hdr[BENCH_HDR_CAP];
	char in[BENCH_IN_CAP];
};

/* The transport: plain sockets or TLS, so the session never branches on
 * which. Both return > 0 for octets moved, 0 at EOF (recv), or -1 with
 * errno (EAGAIN: wait for the socket). sendv may send only a prefix. */
struct xport {
	ssize_t (*recv)(struct sess *s, void *buf, size_t len);
	ssize_t (*sendv)(struct sess *s, const struct iovec *iov, int n);
};

static void sess_enter(struct sess *s, enum sess_state state);
static void sess_set_state(struct sess *s, enum sess_state state);
static void sess_run(struct sess *s);

/* ---- transports */

static ssize_t plain_recv(struct sess *s, void *buf, size_t len)
{
	return recv(s->fd, buf, len, 0);
}

static ssize_t plain_sendv(struct sess *s, const struct iovec *iov, int n)
{
	struct msghdr mh = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n };

	return sendmsg(s->fd, &mh, MSG_NOSIGNAL);
}

/* Maps an SSL_read/SSL_write/SSL_do_handshake result to the transport's
 * convention. */
static ssize_t tls_result(struct sess *s, int r)
{
	if (r > 0)
		return r;
	switch (SSL_get_error(s->ssl, r)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		if (errno == 0 || errno == EAGAIN)
			return 0; /* EOF without close_notify */
		return -1;
	default:
		errno = EPROTO;
		return -1;
	}
}

static ssize_t tls_recv(struct sess *s, void *buf, size_t len)
{
	int n = len > INT_MAX ? INT_MAX : (int)len;

	ERR_clear_error();
	errno = 0;
	return tls_result(s, SSL_read(s->ssl, buf, n));
}

/* One segment per call: SSL_write commits to its buffer until it succeeds,
 * and the segments stay put until they are sent. */
static ssize_t tls_sendv(struct sess *s, const struct iovec *iov, int n)
{
	size_t len = iov[0].iov_len > INT_MAX ? INT_MAX : iov[0].iov_len;

	(void)n;
	ERR_clear_error();
	errno = 0;
	return tls_result(s, SSL_write(s->ssl, iov[0].iov_base, (int)len));
}

static const struct xport xport_plain = { plain_recv, plain_sendv };
static const struct xport xport_tls = { tls_recv, tls_sendv };

/* --resume: keep the newest ticket of the thread for its next session. */
static int tls_new_session(SSL *ssl, SSL_SESSION *ticket)
{
	struct sess *s = SSL_get_app_data(ssl);

	SSL_SESSION_free(s->w->resume);
	s->w->resume = ticket;
	return 1;
}

static void tls_init(void)
{
	tls_ctx = SSL_CTX_new(TLS_client_method());
	if (!tls_ctx)
		tool_die("SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(tls_ctx,
			 SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (cfg.resume) {
		SSL_CTX_set_session_cache_mode(tls_ctx,
					       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
		SSL_CTX_sess_set_new_cb(tls_ctx, tls_new_session);
	} else {
		/* handshake-heavy cases must measure full handshakes */
		SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_options(tls_ctx, SSL_OP_NO_TICKET);
	}
	if (cfg.tls_ca) {
		if (SSL_CTX_load_verify_locations(tls_ctx, cfg.tls_ca, NULL) != 1)
			tool_die("--tls-ca %s: cannot load it", cfg.tls_ca);
		SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
	}
}

/* Sets up the session's TLS client on its socket. False on failure. */
static bool tls_attach(struct sess *s)
{
	s->ssl = SSL_new(tls_ctx);
	if (!s->ssl || SSL_set_fd(s->ssl, s->fd) != 1)
		return false;
	SSL_set_app_data(s->ssl, s);
	SSL_set_connect_state(s->ssl);
	if (cfg.sni && SSL_set_tlsext_host_name(s->ssl, cfg.sni) != 1)
		return false;
	if (cfg.tls_ca) {
		const char *name = cfg.sni ? cfg.sni : cfg.target_host;
		X509_VERIFY_PARAM *p = SSL_get0_param(s->ssl);
		struct in6_addr a;
		int ok;

		if (inet_pton(AF_INET, name, &a) == 1 || inet_pton(AF_INET6, name, &a) == 1)
			ok = X509_VERIFY_PARAM_set1_ip_asc(p, name);
		else
			ok = X509_VERIFY_PARAM_set1_host(p, name, strlen(name));
		if (ok != 1)
			return false;
	}
	if (cfg.resume && s->w->resume)
		SSL_set_session(s->ssl, s->w->resume);
	return true;
}

/* ---- errors and results */

/* The length of the first line of p[0..len), without its line end; p
 * need not be NUL-terminated. */
static size_t first_line(const char *p, size_t len)
{
	size_t n = 0;

	while (n < len && p[n] != '\r' && p[n] != '\n' && p[n] != '\0')
		n++;
	return n;
}

static void error_show(struct sess *s, const char *what, const char *text, size_t len)
	__attribute__((nonnull(1, 2, 3)));

/* The first few errors of the run go to stderr, saying what was going on
 * (nginx's s->action); all of them are counted. */
static void error_show(struct sess *s, const char *what, const char *text, size_t len)
{
	unsigned n = atomic_fetch_add_explicit(&run.errors_shown, 1, memory_order_relaxed);

	if (n >= BENCH_ERRORS_SHOWN && !cfg.verbose)
		return;
	len = first_line(text, len);
	if (len > 200)
		len = 200;
	tool_log("%s %s%s%.*s", what, sess_states[s->state].action, len ? ": " : "", (int)len,
		 text);
	if (n + 1 == BENCH_ERRORS_SHOWN && !cfg.verbose)
		tool_log("further errors are only counted");
}

static void error_count(struct sess *s, int code, enum err_kind kind)
{
	if (code >= 100 && code < 600)
		s->w->st.by_code[code]++;
	else
		s->w->st.by_kind[kind]++;
	atomic_fetch_add_explicit(&s->w->st.errors, 1, memory_order_relaxed);
}

/*
 * The session ends in failure: by a reply code (kind ignored) or by a kind
 * (code 0). The messages it had yet to deliver, the one in flight
 * included, count as failed.
 */
static void sess_fail(struct sess *s, int code, enum err_kind kind, const char *text, size_t len)
{
	struct stats *st = &s->w->st;
	char what[32];

	if (s->state == S_DONE)
		return;
	error_count(s, code, kind);
	if (code)
		snprintf(what, sizeof(what), "%d", code);
	else
		snprintf(what, sizeof(what), "%s error", err_kind_names[kind]);
	error_show(s, what, text ? text : "", text ? len : 0);
	atomic_fetch_add_explicit(&st->sessions_failed, 1, memory_order_relaxed);
	if (cfg.hold) {
		if (!s->established)
			atomic_fetch_add_explicit(&st->setup_done, 1, memory_order_relaxed);
	} else if (s->msgs_done < cfg.messages) {
		atomic_fetch_add_explicit(&st->messages_failed, cfg.messages - s->msgs_done,
					  memory_order_relaxed);
	}
	sess_set_state(s, S_DONE);
}

/* A message was refused; the session goes on. */
static void msg_refused(struct sess *s, int code, const char *text, size_t len)
{
	char what[16];

	error_count(s, code, ERR_PROTOCOL);
	snprintf(what, sizeof(what), "%d", code);
	error_show(s, what, text, len);
	atomic_fetch_add_explicit(&s->w->st.messages_failed, 1, memory_order_relaxed);
	s->msgs_done++;
	s->in_msg = false;
}

/* ---- output */

static void cmd_queue(struct sess *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends a command. Commands are short and at most three are queued at
 * once, so BENCH_CMD_CAP always holds them; truncation is a bug guard. */
static void cmd_queue(struct sess *s, const char *fmt, ...)
{
	size_t room;
	va_list ap;
	int n;

	if (s->cmd_off == s->cmd_len)
		s->cmd_off = s->cmd_len = 0;
	room = BENCH_CMD_CAP - s->cmd_len;
	va_start(ap, fmt);
	n = vsnprintf(s->cmd + s->cmd_len, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		s->cmd_len += (size_t)n < room ? (size_t)n : room - 1;
}

static bool out_pending(const struct sess *s)
{
	return s->cmd_off < s->cmd_len || s->hdr_off < s->hdr_len || s->body_off < s->body_len;
}

/* Consumes n sent octets from the front of the output. */
static void out_advance(struct sess *s, size_t n)
{
	size_t k;

	k = s->cmd_len - s->cmd_off < n ? s->cmd_len - s->cmd_off : n;
	s->cmd_off += k;
	n -= k;
	k = s->hdr_len - s->hdr_off < n ? s->hdr_len - s->hdr_off : n;
	s->hdr_off += k;
	n -= k;
	s->body_off += n;
}

/* Sends what it can. False when the connection failed (errno set). */
static bool sess_flush(struct sess *s, bool *progress)
{
	while (out_pending(s) && !s->wr_blocked) {
		struct iovec iov[3];
		int n = 0;
		ssize_t r;

		if (s->cmd_off < s->cmd_len)
			iov[n++] = (struct iovec){ s->cmd + s->cmd_off, s->cmd_len - s->cmd_off };
		if (s->hdr_off < s->hdr_len)
			iov[n++] = (struct iovec){ s->hdr + s->hdr_off, s->hdr_len - s->hdr_off };
		if (s->body_off < s->body_len)
			iov[n++] = (struct iovec){ (char *)s->body + s->body_off,
						   s->body_len - s->body_off };
		r = s->xp->sendv(s, iov, n);
		if (r > 0) {
			out_advance(s, (size_t)r);
			*progress = true;
		} else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			s->wr_blocked = true;
		} else if (!(r < 0 && errno == EINTR)) {
			if (r == 0)
				errno = EPIPE;
			return false;
		}
	}
	return true;
}

/* ---- the message */

/* The header block of message number id; always msg.hdr_len octets. */
static size_t message_header(char *buf, size_t cap, unsigned thread, uint64_t id)
{
	int n = snprintf(buf, cap,
			 "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n"
			 "Message-ID: <%08" PRIx32 ".%02x.%012" PRIx64 ".mxlb-bench@%s>\r\n"
			 "Date: %s\r\nMIME-Version: 1.0\r\n\r\n",
			 cfg.from, cfg.to, msg.subject, msg.nonce, thread & 0xffu,
			 id & UINT64_C(0xffffffffffff), cfg.ehlo, msg.date);

	return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* The body's text: lines of 2 to BENCH_LINE_MAX octets with their CRLF,
 * filling exactly len octets (len is never 1). Some lines start with a dot,
 * so the transparency procedure is always exercised. */
static void body_text(char *p, size_t len)
{
	static const char words[] = "The quick brown fox jumps over the lazy dog, "
				    "0123456789 pack my box with five dozen liquor jugs. ";
	size_t wl = sizeof(words) - 1;

	for (size_t line = 0; len > 0; line++) {
		size_t n = len < BENCH_LINE_MAX ? len : BENCH_LINE_MAX;

		if (len - n == 1)
			n--; /* a 1-octet line cannot end in CRLF */
		for (size_t i = 0; i + 2 < n; i++)
			p[i] = words[(line * 7 + i) % wl];
		if (n > 2 && line % 20 == 5)
			p[0] = '.';
		p[n - 2] = '\r';
		p[n - 1] = '\n';
		p += n;
		len -= n;
	}
}

/* Copies text (whole CRLF lines) with a dot added before each line-leading
 * dot (RFC 5321 4.5.2); out needs room for 2 * len octets. */
static size_t dot_stuff(char *out, const char *text, size_t len)
{
	size_t w = 0;
	bool bol = true;

	for (size_t i = 0; i < len; i++) {
		if (bol && text[i] == '.')
			out[w++] = '.';
		out[w++] = text[i];
		bol = text[i] == '\n';
	}
	return w;
}

/* Builds the shared body so that header block + body (unstuffed) is
 * exactly --size octets. */
static void message_build(void)
{
	char probe[BENCH_HDR_CAP];
	time_t t = time(NULL);
	struct tm tm;
	size_t text_len;
	char *text;

	msg.nonce = (uint32_t)t ^ ((uint32_t)getpid() << 16);
	localtime_r(&t, &tm);
	strftime(msg.date, sizeof(msg.date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	/* the size is not in it: the header's length must not depend on it */
	snprintf(msg.subject, sizeof(msg.subject), "mxlb-bench message");
	msg.hdr_len = message_header(probe, sizeof(probe), 0, 0);
	if (cfg.size == msg.hdr_len + 1) {
		/* no body can be one octet long: the header takes it */
		strcat(msg.subject, ".");
		msg.hdr_len++;
	}
	if (cfg.size < msg.hdr_len)
		tool_die("--size %" PRIu64 " is below the %zu octets of the header block", cfg.size,
			 msg.hdr_len);
	text_len = cfg.size - msg.hdr_len;
	text = tool_xmalloc(text_len);
	msg.body = tool_xmalloc(2 * text_len + 3);
	body_text(text, text_len);
	msg.body_len = dot_stuff(msg.body, text, text_len);
	memcpy(msg.body + msg.body_len, ".\r\n", 3);
	msg.body_len += 3;
	free(text);
}

/* ---- replies */

/* The extensions the bench cares about, from a complete EHLO reply. */
static void ehlo_parse(struct sess *s, const char *p, size_t len)
{
	struct smtp_reply_line rl;
	size_t used;
	bool first = true;

	s->ext_pipelining = s->ext_starttls = s->ext_size = false;
	while (len > 0 && smtp_parse_reply_line(p, len, &rl, &used) == SMTP_OK) {
		size_t kw = 0;

		while (kw < rl.text_len && rl.text[kw] != ' ')
			kw++;
		if (!first) {
			if (kw == 10 && strncasecmp(rl.text, "PIPELINING", 10) == 0)
				s->ext_pipelining = true;
			else if (kw == 8 && strncasecmp(rl.text, "STARTTLS", 8) == 0)
				s->ext_starttls = true;
			else if (kw == 4 && strncasecmp(rl.text, "SIZE", 4) == 0)
				s->ext_size = true;
		}
		first = false;
		p += used;
		len -= used;
	}
}

/* The next message, or QUIT when the session's work is done. */
static void sess_next(struct sess *s)
{
	if (s->msgs_done < cfg.messages)
		sess_enter(s, cfg.pipelining && s->ext_pipelining ? S_PIPELINE : S_MAIL);
	else
		sess_enter(s, S_QUIT);
}

/* EHLO was answered 250 for the last time: the session is set up. */
static void sess_established(struct sess *s)
{
	struct stats *st = &s->w->st;

	hist_record(&st->setup, (tool_now_ns() - s->t_start) / 1000);
	s->established = true;
	if (s->ssl && SSL_session_reused(s->ssl))
		st->tls_resumed++;
	if (cfg.pipelining && !s->ext_pipelining &&
	    !atomic_exchange_explicit(&run.no_pipelining_said, true, memory_order_relaxed))
		tool_log("the server does not advertise PIPELINING: commands go one by one");
	if (cfg.hold && cfg.hold_rcpt)
		sess_enter(s, S_MAIL); /* held in a transaction, as a slow sender */
	else if (cfg.hold)
		sess_enter(s, S_HOLD);
	else
		sess_next(s);
}

/* The final reply to a message. */
static void msg_done(struct sess *s, int code, const char *text, size_t len)
{
	struct stats *st = &s->w->st;

	if (s->body_aborted) {
		/* counted when the command was refused; this reply means nothing */
	} else if (code == 250) {
		hist_record(&st->message, (tool_now_ns() - s->t_msg) / 1000);
		atomic_fetch_add_explicit(&st->messages_ok, 1, memory_order_relaxed);
		s->msgs_done++;
		s->in_msg = false;
	} else {
		msg_refused(s, code, text, len);
	}
	sess_next(s);
}

/* A command of the message was refused: the transaction is reset (RSET)
 * and the session goes on with the next message. */
static void msg_command_refused(struct sess *s, int code, const char *text, size_t len)
{
	msg_refused(s, code, text, len);
	sess_enter(s, S_RSET);
}

/* One complete reply (all its lines in p[0..len)) in the current state. */
static void sess_reply(struct sess *s, int code, const char *p, size_t len)
{
	if (cfg.verbose)
		tool_log("[%d.%p] <- %.*s", s->w->id, (void *)s, (int)first_line(p, len), p);
	if (code == 421 && s->state != S_QUIT) {
		/* the server is closing the channel, whatever it was asked */
		sess_fail(s, code, ERR_PROTOCOL, p, len);
		return;
	}
	switch (s->state) {
	case S_GREETING:
		if (code != 220)
			sess_fail(s, code, ERR_PROTOCOL, p, len);
		else
			sess_enter(s, S_EHLO);
		break;
	case S_EHLO:
		if (code != 250) {
			sess_fail(s, code, ERR_PROTOCOL, p, len);
			break;
		}
		ehlo_parse(s, p, len);
		if (cfg.tls == TLS_STARTTLS && !s->tls_up) {
			if (s->ext_starttls)
				sess_enter(s, S_STARTTLS);
			else
				sess_fail(s, 0, ERR_TLS, "STARTTLS not advertised", 23);
			break;
		}
		sess_established(s);
		break;
	case S_STARTTLS:
		if (code != 220)
			sess_fail(s, code, ERR_PROTOCOL, p, len);
		else if (s->in_len > len)
			/* bytes after the 220 would be read as if sent under TLS */
			sess_fail(s, 0, ERR_PROTOCOL, "data after the STARTTLS reply", 29);
		else
			sess_enter(s, S_TLS);
		break;
	case S_MAIL:
		if (code != 250 && cfg.hold)
			sess_fail(s, code, ERR_PROTOCOL, p, len); /* not set up */
		else if (code != 250)
			msg_command_refused(s, code, p, len);
		else
			sess_enter(s, S_RCPT);
		break;
	case S_RCPT:
		if (code != 250 && code != 251 && cfg.hold)
			sess_fail(s, code, ERR_PROTOCOL, p, len);
		else if (code != 250 && code != 251)
			msg_command_refused(s, code, p, len);
		else
			sess_enter(s, cfg.hold ? S_HOLD : S_DATA);
		break;
	case S_DATA:
		if (code != 354)
			msg_command_refused(s, code, p, len);
		else
			sess_enter(s, S_BODY);
		break;
	case S_PIPELINE: {
		bool ok = s->pipe_replies == 0	 ? code == 250
			  : s->pipe_replies == 1 ? code == 250 || code == 251
						 : code == 354;

		if (!ok && !s->msg_refused) {
			msg_refused(s, code, p, len);
			s->msg_refused = true;
		}
		if (++s->pipe_replies < 3)
			break;
		if (code == 354) {
			/* a refusal earlier in the batch: RFC 2920 3.1 says send "." */
			s->body_aborted = s->msg_refused;
			sess_enter(s, S_BODY);
		} else if (s->msg_refused) {
			sess_enter(s, S_RSET);
		}
		break;
	}
	case S_BODY:
		if (out_pending(s))
			sess_fail(s, code, ERR_PROTOCOL, p, len); /* before the whole message */
		else
			msg_done(s, code, p, len);
		break;
	case S_RSET:
		if (code != 250)
			sess_fail(s, code, ERR_PROTOCOL, p, len);
		else
			sess_next(s);
		break;
	case S_HOLD:
		sess_fail(s, code, ERR_PROTOCOL, p, len);
		break;
	case S_QUIT:
		s->quit_acked = true;
		break;
	case S_CONNECT:
	case S_TLS:
	case S_DONE:
		sess_fail(s, 0, ERR_PROTOCOL, "unexpected reply", 16);
		break;
	}
}

/* Acts on every complete reply in the input. Each is handed over at the
 * start of s->in, so S_STARTTLS can tell whether anything follows it. */
static void sess_replies(struct sess *s)
{
	while (s->in_len > 0 && s->state != S_DONE && s->state != S_TLS) {
		int code;
		size_t used;
		enum smtp_parse r = smtp_parse_reply(s->in, s->in_len, &code, &used);

		if (r == SMTP_AGAIN) {
			if (s->in_len == BENCH_IN_CAP)
				sess_fail(s, 0, ERR_PROTOCOL, "reply too long", 14);
			break;
		}
		if (r == SMTP_INVALID) {
			sess_fail(s, 0, ERR_PROTOCOL, s->in, s->in_len);
			break;
		}
		sess_reply(s, code, s->in, used);
		memmove(s->in, s->in + used, s->in_len - used);
		s->in_len -= used;
	}
}

/* ---- states */

static const char *sess_state_name(enum sess_state state)
{
	return sess_states[state].name;
}

/* The one place a session changes state; --verbose traces it. */
static void sess_set_state(struct sess *s, enum sess_state state)
{
	if (cfg.verbose)
		tool_log("[%d.%p] %s -> %s", s->w->id, (void *)s, sess_state_name(s->state),
			 sess_state_name(state));
	s->state = state;
}

/* Enters a state and performs its entry action: the command it waits on
 * the reply to, or the handshake it drives. */
static void sess_enter(struct sess *s, enum sess_state state)
{
	struct bench_worker *w = s->w;

	sess_set_state(s, state);
	switch (state) {
	case S_CONNECT:
	case S_GREETING:
	case S_DONE:
		break;
	case S_TLS:
		if (!tls_attach(s)) {
			sess_fail(s, 0, ERR_TLS, "cannot set up TLS", 17);
			break;
		}
		s->xp = &xport_tls;
		break;
	case S_EHLO:
		cmd_queue(s, "EHLO %s\r\n", cfg.ehlo);
		break;
	case S_STARTTLS:
		cmd_queue(s, "STARTTLS\r\n");
		break;
	case S_MAIL:
	case S_PIPELINE:
		s->t_msg = tool_now_ns();
		s->in_msg = true;
		s->msg_refused = s->body_aborted = false;
		s->pipe_replies = 0;
		if (s->ext_size)
			cmd_queue(s, "MAIL FROM:<%s> SIZE=%" PRIu64 "\r\n", cfg.from, cfg.size);
		else
			cmd_queue(s, "MAIL FROM:<%s>\r\n", cfg.from);
		if (state == S_PIPELINE)
			cmd_queue(s, "RCPT TO:<%s>\r\nDATA\r\n", cfg.to);
		break;
	case S_RCPT:
		cmd_queue(s, "RCPT TO:<%s>\r\n", cfg.to);
		break;
	case S_DATA:
		cmd_queue(s, "DATA\r\n");
		break;
	case S_BODY:
		if (s->body_aborted) {
			cmd_queue(s, ".\r\n");
			break;
		}
		s->hdr_off = 0;
		s->hdr_len = message_header(s->hdr, sizeof(s->hdr), (unsigned)w->id, ++w->msg_seq);
		s->body = msg.body;
		s->body_off = 0;
		s->body_len = msg.body_len;
		break;
	case S_RSET:
		cmd_queue(s, "RSET\r\n");
		break;
	case S_HOLD:
		tool_timer_disarm(&s->timer);
		atomic_fetch_add_explicit(&w->st.established, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&w->st.setup_done, 1, memory_order_relaxed);
		if (atomic_load_explicit(&run.stop, memory_order_relaxed) >= STOP_QUIT)
			sess_enter(s, S_QUIT);
		break;
	case S_QUIT:
		if (!tool_timer_armed(&s->timer))
			tool_timer_arm(&w->tq, &s->timer);
		cmd_queue(s, "QUIT\r\n");
		break;
	}
}

/* ---- the session's life */

static void sess_free(struct sess *s)
{
	struct bench_worker *w = s->w;

	tool_timer_disarm(&s->timer);
	tool_list_remove(&w->sessions, &s->link);
	w->nsess--;
	w->end = tool_now_ns();
	SSL_free(s->ssl);
	s->ssl = NULL;
	if (s->fd >= 0)
		close(s->fd);
	free(s);
}

/* Frees a session that has ended; false when it did. */
static bool sess_settle(struct sess *s)
{
	if (s->state != S_DONE)
		return true;
	sess_free(s);
	return false;
}

/* The session ended well: QUIT answered, or the server's FIN after it. */
static void sess_ok(struct sess *s)
{
	atomic_fetch_add_explicit(&s->w->st.sessions_ok, 1, memory_order_relaxed);
	sess_set_state(s, S_DONE);
}

/* SIGINT/SIGTERM: a message in flight is lost, the rest never started. */
static void sess_abort(struct sess *s)
{
	struct stats *st = &s->w->st;

	if (s->state == S_DONE)
		return;
	if (s->in_msg)
		atomic_fetch_add_explicit(&st->messages_failed, 1, memory_order_relaxed);
	if (cfg.hold && !s->established)
		atomic_fetch_add_explicit(&st->setup_done, 1, memory_order_relaxed);
	st->sessions_aborted++;
	sess_set_state(s, S_DONE);
}

static void sess_timeout(struct sess *s)
{
	if (s->state == S_QUIT && s->quit_acked)
		sess_ok(s);
	else
		sess_fail(s, 0, ERR_TIMEOUT, NULL, 0);
}

/* Drives the handshake; false while it waits for the socket. */
static bool sess_handshake(struct sess *s)
{
	ssize_t r;

	ERR_clear_error();
	errno = 0;
	r = tls_result(s, SSL_do_handshake(s->ssl));
	if (r < 0 && errno == EAGAIN)
		return false;
	if (r <= 0) {
		char text[160];
		unsigned long e = ERR_peek_error();

		if (e)
			ERR_error_string_n(e, text, sizeof(text));
		else
			snprintf(text, sizeof(text), "%s",
				 r == 0 ? "connection closed" : strerror(errno));
		sess_fail(s, 0, ERR_TLS, text, strlen(text));
		return true;
	}
	s->tls_up = true;
	s->rd_ready = true; /* the library may hold records already read */
	/* implicit TLS: the greeting comes under TLS; STARTTLS: EHLO again */
	sess_enter(s, cfg.tls == TLS_IMPLICIT ? S_GREETING : S_EHLO);
	return true;
}

/* Reads, acts and writes until the session waits on the network or a
 * timer, or has ended (S_DONE; the caller frees it). */
static void sess_run(struct sess *s)
{
	bool progress = false;

	while (s->state != S_DONE) {
		ssize_t n;
		size_t room;

		if (s->state == S_TLS) {
			if (!sess_handshake(s))
				break;
			continue;
		}
		if (!sess_flush(s, &progress)) {
			sess_fail(s, 0, ERR_CLOSED, strerror(errno), strlen(strerror(errno)));
			break;
		}
		if (!s->rd_ready)
			break;
		room = BENCH_IN_CAP - s->in_len;
		n = s->xp->recv(s, s->in + s->in_len, room);
		if (n > 0) {
			progress = true;
			s->in_len += (size_t)n;
			/* a short plain read drained the socket, unless the FIN is in */
			if ((size_t)n < room && !s->ssl && !s->rdhup)
				s->rd_ready = false;
			sess_replies(s);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			s->rd_ready = false;
			continue; /* the flush above may still have work */
		}
		if (n == 0 && s->state == S_QUIT)
			sess_ok(s);
		else if (n == 0)
			sess_fail(s, 0, ERR_CLOSED, "connection closed by the server", 31);
		else
			sess_fail(s, 0, s->ssl ? ERR_TLS : ERR_CLOSED, strerror(errno),
				  strlen(strerror(errno)));
	}
	if (progress && tool_timer_armed(&s->timer))
		tool_timer_arm(&s->w->tq, &s->timer); /* progress: the wait starts again */
}

static void sess_connected(struct sess *s)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		sess_fail(s, 0, ERR_CONNECT, strerror(err), strlen(strerror(err)));
		return;
	}
	sess_enter(s, cfg.tls == TLS_IMPLICIT ? S_TLS : S_GREETING);
}

static void sess_event(struct tool_source *src, uint32_t events)
{
	struct sess *s = TOOL_CONTAINER(src, struct sess, src);

	if (tool_ev_readable(events))
		s->rd_ready = true;
	if (tool_ev_ended(events))
		s->rdhup = true;
	if (tool_ev_writable(events))
		s->wr_blocked = false;
	if (s->state == S_CONNECT) {
		if (!tool_ev_writable(events))
			return;
		sess_connected(s);
	}
	sess_run(s);
	sess_settle(s);
}

/* Opens a session: socket, connect, timer. Connect failures are counted
 * like any other. */
static void sess_new(struct bench_worker *w)
{
	struct sess *s;
	int fd;

	/* the buffers need no clearing: only [0..len) is ever read */
	s = tool_xmalloc(sizeof(*s));
	memset(s, 0, offsetof(struct sess, cmd));
	s->src.event = sess_event;
	s->w = w;
	s->xp = &xport_plain;
	s->t_start = tool_now_ns();
	s->state = S_CONNECT;
	s->fd = -1;
	tool_list_push(&w->sessions, &s->link);
	w->nsess++;
	fd = socket(cfg.target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	s->fd = fd;
	if (fd < 0) {
		sess_fail(s, 0, ERR_CONNECT, strerror(errno), strlen(strerror(errno)));
		sess_settle(s);
		return;
	}
	tool_timer_arm(&w->tq, &s->timer);
	if (tool_loop_add_stream(&w->loop, fd, &s->src) < 0)
		tool_die("epoll_ctl: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&cfg.target, cfg.target_len) < 0 &&
	    errno != EINPROGRESS) {
		sess_fail(s, 0, ERR_CONNECT, strerror(errno), strlen(strerror(errno)));
		sess_settle(s);
		return;
	}
	/* EPOLLOUT reports the connect's end, even when it is already over */
}

/* ---- workers */

/* Takes one session from the run's budget; false once there is none left,
 * --duration has passed, or the run is stopping. */
static bool run_claim(void)
{
	if (atomic_load_explicit(&run.stop, memory_order_relaxed) != STOP_NONE)
		return false;
	if (run.deadline && tool_now_ns() >= run.deadline)
		return false;
	if (cfg.sessions == 0)
		return true;
	return atomic_fetch_add_explicit(&run.started, 1, memory_order_relaxed) < cfg.sessions;
}

/* Keeps the thread's share of --concurrency busy. In --hold mode each slot
 * is used once. */
static void worker_fill(struct bench_worker *w)
{
	while (!w->claimed_out && (cfg.hold ? w->opened : w->nsess) < w->slots) {
		if (!run_claim()) {
			w->claimed_out = true;
			break;
		}
		w->opened++;
		sess_new(w);
	}
}

/* Acts on a stop level the main thread raised. */
static void worker_stop(struct bench_worker *w)
{
	int level = atomic_load_explicit(&run.stop, memory_order_relaxed);
	struct tool_link *l, *next;

	if (level == w->stop_seen)
		return;
	w->stop_seen = level;
	for (l = w->sessions.head; l; l = next) {
		struct sess *s = TOOL_CONTAINER(l, struct sess, link);

		next = l->next;
		if (level == STOP_ABORT) {
			sess_abort(s);
		} else if (s->state == S_HOLD) {
			sess_enter(s, S_QUIT);
			sess_run(s);
		}
		sess_settle(s);
	}
}

static void worker_woken(struct tool_loop *l)
{
	worker_stop(TOOL_CONTAINER(l, struct bench_worker, loop));
}

/* The session waited --timeout for the server. */
static void sess_expired(struct tool_timer *t)
{
	struct sess *s = TOOL_CONTAINER(t, struct sess, timer);

	sess_timeout(s);
	sess_settle(s);
}

static void *worker_main(void *arg)
{
	struct bench_worker *w = arg;

	worker_fill(w);
	while (w->nsess > 0) {
		tool_loop_poll(&w->loop);
		worker_fill(w);
	}
	if (!w->end)
		w->end = tool_now_ns();
	atomic_fetch_add_explicit(&run.workers_done, 1, memory_order_release);
	return NULL;
}

static void worker_setup(struct bench_worker *w, int id)
{
	w->id = id;
	tool_loop_init(&w->loop, worker_woken);
	tool_tq_init(&w->loop, &w->tq, cfg.timeout_ms * 1000000u, sess_expired);
	w->slots = cfg.concurrency / (unsigned)cfg.threads +
		   ((unsigned)id < cfg.concurrency % (unsigned)cfg.threads);
}

/* ---- results */

struct totals {
	uint64_t sessions_ok, sessions_failed, sessions_aborted;
	uint64_t messages_ok, messages_failed, errors, established, setup_done;
	uint64_t tls_resumed;
	uint64_t by_code[600];
	uint64_t by_kind[ERR_KINDS];
	struct bench_hist setup, message;
};

/* The counters the main thread may read while the workers run. */
static void totals_live(struct totals *t)
{
	memset(t, 0, offsetof(struct totals, by_code));
	for (int i = 0; i < cfg.threads; i++) {
		struct stats *st = &workers[i].st;

		t->sessions_ok += atomic_load_explicit(&st->sessions_ok, memory_order_relaxed);
		t->sessions_failed +=
			atomic_load_explicit(&st->sessions_failed, memory_order_relaxed);
		t->messages_ok += atomic_load_explicit(&st->messages_ok, memory_order_relaxed);
		t->messages_failed +=
			atomic_load_explicit(&st->messages_failed, memory_order_relaxed);
		t->errors += atomic_load_explicit(&st->errors, memory_order_relaxed);
		t->established += atomic_load_explicit(&st->established, memory_order_relaxed);
		t->setup_done += atomic_load_explicit(&st->setup_done, memory_order_relaxed);
	}
}

/* Everything, once the workers have been joined. */
static void totals_final(struct totals *t)
{
	totals_live(t);
	memset(t->by_code, 0, sizeof(*t) - offsetof(struct totals, by_code));
	for (int i = 0; i < cfg.threads; i++) {
		const struct stats *st = &workers[i].st;

		t->sessions_aborted += st->sessions_aborted;
		t->tls_resumed += st->tls_resumed;
		for (int c = 0; c < 600; c++)
			t->by_code[c] += st->by_code[c];
		for (int k = 0; k < ERR_KINDS; k++)
			t->by_kind[k] += st->by_kind[k];
		hist_merge(&t->setup, &st->setup);
		hist_merge(&t->message, &st->message);
	}
}

static const struct {
	const char *key;
	double pct;
} percentiles[] = { { "p50", 50 }, { "p90", 90 }, { "p99", 99 }, { "p999", 99.9 } };

/* A latency for the table: "87us", "1.25ms", "2.50s"; "-" without samples. */
static const char *us_text(char *buf, size_t cap, const struct bench_hist *h, uint64_t us)
{
	if (h->count == 0)
		snprintf(buf, cap, "-");
	else if (us < 10000)
		snprintf(buf, cap, "%" PRIu64 "us", us);
	else if (us < 10000000)
		snprintf(buf, cap, "%.2fms", (double)us / 1e3);
	else
		snprintf(buf, cap, "%.2fs", (double)us / 1e6);
	return buf;
}

static void table_latency(const char *name, const struct bench_hist *h)
{
	char b[5][24];

	printf("  %-13s %10s %10s %10s %10s %10s  (%" PRIu64 " samples)\n", name,
	       us_text(b[0], sizeof(b[0]), h, hist_percentile(h, 50)),
	       us_text(b[1], sizeof(b[1]), h, hist_percentile(h, 90)),
	       us_text(b[2], sizeof(b[2]), h, hist_percentile(h, 99)),
	       us_text(b[3], sizeof(b[3]), h, hist_percentile(h, 99.9)),
	       us_text(b[4], sizeof(b[4]), h, h->max), h->count);
}

static void table_errors(const struct totals *t)
{
	bool any = false;

	printf("%-16s", "errors");
	for (int c = 0; c < 600; c++) {
		if (t->by_code[c]) {
			printf("%s%d: %" PRIu64, any ? ", " : "", c, t->by_code[c]);
			any = true;
		}
	}
	for (int k = 0; k < ERR_KINDS; k++) {
		if (t->by_kind[k]) {
			printf("%s%s: %" PRIu64, any ? ", " : "", err_kind_names[k], t->by_kind[k]);
			any = true;
		}
	}
	printf("%s\n", any ? "" : "none");
}

/* The generator's own CPU time (all threads), so a reader can tell whether
 * it, rather than the server, was the bottleneck. */
static double cpu_seconds(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void report_table(const struct totals *t, double elapsed, bool interrupted)
{
	double mb = (double)t->messages_ok * (double)cfg.size / 1e6;

	printf("%-16s%s (tls %s%s, %u concurrent, %d thread%s)\n", "target", cfg.target_text,
	       tls_mode_names[cfg.tls], cfg.resume ? " with resumption" : "", cfg.concurrency,
	       cfg.threads, cfg.threads > 1 ? "s" : "");
	if (cfg.hold) {
		printf("%-16s%" PRIu64 " sessions established, %" PRIu64 " failed\n", "held",
		       t->established, t->sessions_failed);
	} else {
		char count[64];

		snprintf(count, sizeof(count), "%" PRIu64 " ok, %" PRIu64 " failed", t->sessions_ok,
			 t->sessions_failed);
		printf("%-16s%-32s%12.1f/s\n", "sessions", count,
		       elapsed > 0 ? t->sessions_ok / elapsed : 0);
		snprintf(count, sizeof(count), "%" PRIu64 " accepted, %" PRIu64 " failed",
			 t->messages_ok, t->messages_failed);
		printf("%-16s%-32s%12.1f/s\n", "messages", count,
		       elapsed > 0 ? t->messages_ok / elapsed : 0);
		printf("%-16s%.2f MB/s (%" PRIu64 "-octet messages, %" PRIu64 " per session%s)\n",
		       "throughput", elapsed > 0 ? mb / elapsed : 0, cfg.size, cfg.messages,
		       cfg.pipelining ? ", pipelined" : "");
	}
	if (cfg.tls != TLS_NONE && cfg.resume)
		printf("%-16s%" PRIu64 "\n", "tls resumed", t->tls_resumed);
	printf("%-16s%.3f s%s, mxlb-bench CPU %.2f s\n", "elapsed", elapsed,
	       interrupted ? " (interrupted)" : "", cpu_seconds());
	printf("latency         %10s %10s %10s %10s %10s\n", "p50", "p90", "p99", "p99.9", "max");
	table_latency("setup", &t->setup);
	if (!cfg.hold)
		table_latency("message", &t->message);
	table_errors(t);
	if (t->sessions_aborted)
		printf("%-16s%" PRIu64 " sessions cut short\n", "interrupted", t->sessions_aborted);
}

static void json_latency(const char *key, const struct bench_hist *h)
{
	printf(",\"%s\":{", key);
	for (size_t i = 0; i < sizeof(percentiles) / sizeof(percentiles[0]); i++) {
		if (h->count)
			printf("%s\"%s\":%" PRIu64, i ? "," : "", percentiles[i].key,
			       hist_percentile(h, percentiles[i].pct));
		else
			printf("%s\"%s\":null", i ? "," : "", percentiles[i].key);
	}
	if (h->count)
		printf(",\"max\":%" PRIu64 ",\"mean\":%.1f,\"count\":%" PRIu64 "}", h->max,
		       (double)h->sum / (double)h->count, h->count);
	else
		printf(",\"max\":null,\"mean\":null,\"count\":0}");
}

static void report_json(const struct totals *t, double elapsed, bool interrupted)
{
	double mb = (double)t->messages_ok * (double)cfg.size / 1e6;
	bool any = false;

	/* target_text is checked at parse time to need no escaping */
	printf("{\"mode\":\"%s\",\"target\":\"%s\",\"tls\":\"%s\",\"concurrency\":%u,"
	       "\"threads\":%d,\"size\":%" PRIu64 ",\"messages_per_session\":%" PRIu64
	       ",\"pipelining\":%s",
	       cfg.hold ? "hold" : "load", cfg.target_text, tls_mode_names[cfg.tls],
	       cfg.concurrency, cfg.threads, cfg.size, cfg.messages,
	       cfg.pipelining ? "true" : "false");
	printf(",\"sessions\":%" PRIu64 ",\"sessions_failed\":%" PRIu64
	       ",\"sessions_aborted\":%" PRIu64,
	       t->sessions_ok, t->sessions_failed, t->sessions_aborted);
	if (cfg.hold)
		printf(",\"held\":%" PRIu64, t->established);
	printf(",\"messages\":%" PRIu64 ",\"failed_messages\":%" PRIu64 ",\"elapsed_s\":%.3f"
	       ",\"sessions_per_s\":%.1f,\"messages_per_s\":%.1f,\"mb_per_s\":%.3f",
	       t->messages_ok, t->messages_failed, elapsed,
	       elapsed > 0 ? t->sessions_ok / elapsed : 0,
	       elapsed > 0 ? t->messages_ok / elapsed : 0, elapsed > 0 ? mb / elapsed : 0);
	if (cfg.tls != TLS_NONE)
		printf(",\"tls_resumed\":%" PRIu64, t->tls_resumed);
	printf(",\"cpu_s\":%.3f", cpu_seconds());
	json_latency("setup_us", &t->setup);
	json_latency("message_us", &t->message);
	printf(",\"errors\":{");
	for (int c = 0; c < 600; c++) {
		if (t->by_code[c]) {
			printf("%s\"%d\":%" PRIu64, any ? "," : "", c, t->by_code[c]);
			any = true;
		}
	}
	for (int k = 0; k < ERR_KINDS; k++) {
		if (t->by_kind[k]) {
			printf("%s\"%s\":%" PRIu64, any ? "," : "", err_kind_names[k],
			       t->by_kind[k]);
			any = true;
		}
	}
	printf("},\"interrupted\":%s}\n", interrupted ? "true" : "false");
}

/* ---- progress */

static struct {
	bool on, tty, shown;
	uint64_t last_ns;
	struct totals last;
} progress;

static void progress_tick(uint64_t now)
{
	struct totals t;
	double dt, el;

	if (!progress.on || now - run.t0 < (uint64_t)BENCH_PROGRESS_AFTER_MS * 1000000u)
		return;
	if (progress.last_ns && now - progress.last_ns < 1000000000u)
		return;
	totals_live(&t);
	if (!progress.last_ns) {
		progress.last_ns = run.t0;
		memset(&progress.last, 0, sizeof(progress.last));
	}
	dt = (double)(now - progress.last_ns) / 1e9;
	el = (double)(now - run.t0) / 1e9;
	if (cfg.hold)
		fprintf(stderr, "%s%6.1fs  established %" PRIu64 "  failed %" PRIu64 "%s",
			progress.tty ? "\r" : "", el, t.established, t.sessions_failed,
			progress.tty ? "\033[K" : "\n");
	else
		fprintf(stderr,
			"%s%6.1fs  sessions %" PRIu64 " (%.0f/s)  messages %" PRIu64
			" (%.0f/s)  failed %" PRIu64 "  errors %" PRIu64 "%s",
			progress.tty ? "\r" : "", el, t.sessions_ok,
			(double)(t.sessions_ok - progress.last.sessions_ok) / dt, t.messages_ok,
			(double)(t.messages_ok - progress.last.messages_ok) / dt, t.messages_failed,
			t.errors, progress.tty ? "\033[K" : "\n");
	progress.shown = true;
	progress.last = t;
	progress.last_ns = now;
}

static void progress_clear(void)
{
	if (progress.shown && progress.tty)
		fputs("\r\033[K", stderr);
}

/* ---- options */

static const char usage[] =
	"usage: mxlb-bench --target ADDR [options]\n"
	"  --target ADDR          host:port or [v6]:port of the SMTP server\n"
	"  --sessions N           sessions in all (default 1000; 0: no limit, needs --duration)\n"
	"  --concurrency C        sessions open at once (default 10)\n"
	"  --messages M           messages per session (default 1; 0: EHLO and QUIT only)\n"
	"  --size BYTES           message size with headers: 512, 1k, 100k, 1M (default 1k)\n"
	"  --tls MODE             none | starttls | implicit (default none)\n"
	"  --pipelining           MAIL, RCPT and DATA in one write when PIPELINING is offered\n"
	"  --duration D           start no session after D (30s, 2m); with --sessions both bound "
	"the run\n"
	"  --timeout D            longest wait for the server in a session (default 30s)\n"
	"  --threads T            event loops (default 1)\n"
	"  --ehlo NAME            EHLO name (default bench.client.test)\n"
	"  --from ADDR, --to ADDR envelope and header addresses\n"
	"  --hold                 open C sessions, EHLO (and TLS), hold them until SIGINT/SIGTERM\n"
	"                         or --hold-time; prints 'held N' once all are set up\n"
	"  --hold-time D          how long --hold holds after 'held N'\n"
	"  --hold-after STAGE     ehlo (default) or rcpt: hold after MAIL and RCPT were accepted\n"
	"  --tls-ca FILE          verify the server's certificate against FILE\n"
	"  --sni NAME             server name sent in the TLS handshake (and verified)\n"
	"  --resume               resume TLS sessions (default: full handshakes only)\n"
	"  --json                 print one JSON object instead of the table\n"
	"  --progress             a progress line each second even when stderr is no terminal\n"
	"  --quiet                no progress line\n"
	"  --verbose              trace every state change and reply, show every error\n"
	"exit status: 0 every message accepted, 1 not, 2 usage error\n";

/* Durations are written as in the configuration (config.h). */
static uint64_t opt_duration(const char *s, const char *what)
{
	return tool_opt_duration_ms(s, what, "500ms, 30s, 2m", BENCH_DURATION_MAX_MS);
}

/* Names go into commands and headers: no spaces, controls or brackets. */
static const char *opt_name(const char *s, const char *what)
{
	if (!*s || strlen(s) > BENCH_NAME_MAX)
		tool_die("bad %s '%s'", what, s);
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f || strchr("<>\"\\", *p))
			tool_die("bad %s '%s'", what, s);
	return s;
}

/* host:port or [v6]:port; a host name is resolved once, here. */
static void target_parse(const char *s)
{
	struct cfg_addr a;

	if (strpbrk(s, "\"\\ \t\r\n") || config_parse_addr(s, &a) < 0)
		tool_die("bad --target '%s' (like 127.0.0.1:2525, [::1]:2525 or localhost:2525)",
			 s);
	memcpy(&cfg.target, &a.ss, a.len);
	cfg.target_len = a.len;
	snprintf(cfg.target_host, sizeof(cfg.target_host), "%s", a.host);
	cfg.target_text = s;
}

enum {
	OPT_TARGET = TOOL_OPT_FIRST,
	OPT_SESSIONS,
	OPT_CONCURRENCY,
	OPT_MESSAGES,
	OPT_SIZE,
	OPT_TLS,
	OPT_PIPELINING,
	OPT_DURATION,
	OPT_TIMEOUT,
	OPT_JSON,
	OPT_THREADS,
	OPT_EHLO,
	OPT_FROM,
	OPT_TO,
	OPT_HOLD,
	OPT_HOLD_TIME,
	OPT_HOLD_AFTER,
	OPT_QUIET,
	OPT_PROGRESS,
	OPT_TLS_CA,
	OPT_SNI,
	OPT_RESUME,
	OPT_VERBOSE,
};

static void options_parse(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "target", required_argument, NULL, OPT_TARGET },
		{ "sessions", required_argument, NULL, OPT_SESSIONS },
		{ "concurrency", required_argument, NULL, OPT_CONCURRENCY },
		{ "messages", required_argument, NULL, OPT_MESSAGES },
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "tls", required_argument, NULL, OPT_TLS },
		{ "pipelining", no_argument, NULL, OPT_PIPELINING },
		{ "duration", required_argument, NULL, OPT_DURATION },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "threads", required_argument, NULL, OPT_THREADS },
		{ "ehlo", required_argument, NULL, OPT_EHLO },
		{ "from", required_argument, NULL, OPT_FROM },
		{ "to", required_argument, NULL, OPT_TO },
		{ "hold", no_argument, NULL, OPT_HOLD },
		{ "hold-time", required_argument, NULL, OPT_HOLD_TIME },
		{ "hold-after", required_argument, NULL, OPT_HOLD_AFTER },
		{ "quiet", no_argument, NULL, OPT_QUIET },
		{ "progress", no_argument, NULL, OPT_PROGRESS },
		{ "tls-ca", required_argument, NULL, OPT_TLS_CA },
		{ "sni", required_argument, NULL, OPT_SNI },
		{ "resume", no_argument, NULL, OPT_RESUME },
		{ "verbose", no_argument, NULL, OPT_VERBOSE },
		{ "help", no_argument, NULL, TOOL_OPT_HELP },
		{ NULL, 0, NULL, 0 },
	};
	bool sessions_set = false;
	int o;

	while ((o = tool_getopt(argc, argv, opts, usage)) != -1) {
		switch (o) {
		case OPT_TARGET:
			target_parse(optarg);
			break;
		case OPT_SESSIONS:
			cfg.sessions = tool_opt_u64(optarg, 0, UINT64_MAX / 4, "--sessions");
			sessions_set = true;
			break;
		case OPT_CONCURRENCY:
			cfg.concurrency =
				(unsigned)tool_opt_u64(optarg, 1, 1000000, "--concurrency");
			break;
		case OPT_MESSAGES:
			cfg.messages = tool_opt_u64(optarg, 0, 1000000000, "--messages");
			break;
		case OPT_SIZE:
			cfg.size = tool_opt_size(optarg, "--size",
						 "512, 1k, 100k, 1M; at most 256M", BENCH_SIZE_MAX);
			break;
		case OPT_TLS:
			if (strcmp(optarg, "none") == 0)
				cfg.tls = TLS_NONE;
			else if (strcmp(optarg, "starttls") == 0)
				cfg.tls = TLS_STARTTLS;
			else if (strcmp(optarg, "implicit") == 0)
				cfg.tls = TLS_IMPLICIT;
			else
				tool_die("bad --tls '%s' (none, starttls or implicit)", optarg);
			break;
		case OPT_PIPELINING:
			cfg.pipelining = true;
			break;
		case OPT_DURATION:
			cfg.duration_ms = opt_duration(optarg, "--duration");
			break;
		case OPT_TIMEOUT:
			cfg.timeout_ms = opt_duration(optarg, "--timeout");
			if (cfg.timeout_ms == 0)
				tool_die("--timeout must be above 0");
			break;
		case OPT_JSON:
			cfg.json = true;
			break;
		case OPT_THREADS:
			cfg.threads = (int)tool_opt_u64(optarg, 1, BENCH_THREADS_MAX, "--threads");
			break;
		case OPT_EHLO:
			cfg.ehlo = opt_name(optarg, "--ehlo");
			break;
		case OPT_FROM:
			cfg.from = opt_name(optarg, "--from");
			break;
		case OPT_TO:
			cfg.to = opt_name(optarg, "--to");
			break;
		case OPT_HOLD:
			cfg.hold = true;
			break;
		case OPT_HOLD_TIME:
			cfg.hold_ms = opt_duration(optarg, "--hold-time");
			break;
		case OPT_HOLD_AFTER:
			if (strcmp(optarg, "rcpt") == 0)
				cfg.hold_rcpt = true;
			else if (strcmp(optarg, "ehlo") == 0)
				cfg.hold_rcpt = false;
			else
				tool_die("--hold-after: ehlo or rcpt, not '%s'", optarg);
			break;
		case OPT_QUIET:
			cfg.quiet = true;
			break;
		case OPT_PROGRESS:
			cfg.progress = true;
			break;
		case OPT_TLS_CA:
			cfg.tls_ca = optarg;
			break;
		case OPT_SNI:
			cfg.sni = opt_name(optarg, "--sni");
			break;
		case OPT_RESUME:
			cfg.resume = true;
			break;
		case OPT_VERBOSE:
			cfg.verbose = true;
			break;
		}
	}
	if (!cfg.target_text)
		tool_die("--target is required (like --target 127.0.0.1:2525)");
	if (cfg.hold) {
		cfg.sessions = cfg.concurrency;
		cfg.duration_ms = 0;
	} else if (cfg.hold_ms || cfg.hold_rcpt) {
		tool_die("--hold-time and --hold-after need --hold");
	} else if (cfg.sessions == 0 && !cfg.duration_ms) {
		tool_die("--sessions 0 (no limit) needs --duration");
	} else if (!sessions_set && cfg.duration_ms) {
		cfg.sessions = 0; /* --duration alone bounds the run */
	}
	if (cfg.sessions && cfg.concurrency > cfg.sessions)
		cfg.concurrency = (unsigned)cfg.sessions;
	if ((unsigned)cfg.threads > cfg.concurrency)
		cfg.threads = (int)cfg.concurrency;
	if ((cfg.tls_ca || cfg.sni || cfg.resume) && cfg.tls == TLS_NONE)
		tool_die("--tls-ca, --sni and --resume need --tls starttls or implicit");
}

/* Many sessions need many descriptors: the hard limit, and a warning
 * when even that is too few. */
static void nofile_raise(void)
{
	uint64_t limit = tool_nofile_raise();

	if (limit < (uint64_t)cfg.concurrency + 64)
		tool_log("%u sessions need more descriptors than the %" PRIu64 " allowed",
			 cfg.concurrency, limit);
}

static void stop_raise(int level)
{
	if (atomic_load(&run.stop) >= level)
		return;
	atomic_store(&run.stop, level);
	for (int i = 0; i < cfg.threads; i++)
		tool_loop_wake(&workers[i].loop);
}

int main(int argc, char **argv)
{
	uint64_t held_at = 0, end = 0;
	bool interrupted = false;
	struct totals *t;
	double elapsed;
	sigset_t sigs;
	int status;

	tool_init("mxlb-bench");
	options_parse(argc, argv);
	message_build();
	if (cfg.tls != TLS_NONE)
		tls_init();
	nofile_raise();
	tool_signals_block(&sigs);
	progress.tty = isatty(STDERR_FILENO);
	progress.on = !cfg.quiet && (progress.tty || cfg.progress);

	for (int i = 0; i < cfg.threads; i++)
		worker_setup(&workers[i], i);
	run.t0 = tool_now_ns();
	if (cfg.duration_ms)
		run.deadline = run.t0 + cfg.duration_ms * 1000000u;
	for (int i = 0; i < cfg.threads; i++)
		tool_thread_start(&workers[i].thread, worker_main, &workers[i]);

	while (atomic_load_explicit(&run.workers_done, memory_order_acquire) < cfg.threads) {
		bool sig = tool_signal_wait(&sigs, BENCH_TICK_MS);
		uint64_t now = tool_now_ns();

		if (sig) {
			/* --hold ends politely first; a second signal, or any in a
			 * load run, cuts every session short */
			if (cfg.hold && atomic_load(&run.stop) == STOP_NONE) {
				stop_raise(STOP_QUIT);
			} else {
				interrupted = !cfg.hold;
				stop_raise(STOP_ABORT);
			}
		}
		if (cfg.hold && !held_at) {
			struct totals live;

			totals_live(&live);
			if (live.setup_done >= cfg.sessions) {
				held_at = now;
				progress_clear();
				printf("held %" PRIu64 "\n", live.established);
				fflush(stdout);
			}
		}
		if (cfg.hold && held_at && cfg.hold_ms && now - held_at >= cfg.hold_ms * 1000000u)
			stop_raise(STOP_QUIT);
		progress_tick(now);
	}
	for (int i = 0; i < cfg.threads; i++) {
		pthread_join(workers[i].thread, NULL);
		tool_loop_close(&workers[i].loop);
		if (workers[i].end > end)
			end = workers[i].end;
	}
	progress_clear();
	t = tool_xmalloc(sizeof(*t));
	memset(t, 0, sizeof(*t));
	totals_final(t);
	if (cfg.hold && !held_at)
		printf("held %" PRIu64 "\n", t->established);
	elapsed = (double)((end > run.t0 ? end : tool_now_ns()) - run.t0) / 1e9;
	if (cfg.json)
		report_json(t, elapsed, interrupted);
	else
		report_table(t, elapsed, interrupted);
	/* an interrupted load run did not deliver everything it was asked to */
	status = t->messages_failed || t->sessions_failed || interrupted ? 1 : 0;
	free(t);
	if (fflush(stdout) != 0)
		return 2;
	return status;
}
