/* sink.c - mxlb-sink: a fast SMTP server for mxlb's tests, `make run` and
 * benchmarks (SPEC section 8; options and outputs in bench/SINK.md).
 *
 * One worker thread per --threads, each with its own epoll instance and its
 * own listening sockets (SO_REUSEPORT when there are several threads), so a
 * session lives and dies on one thread and nothing is shared but the
 * read-only configuration, the message sequence and per-thread counters.
 * Sockets are non-blocking and edge-triggered: a session reads until EAGAIN
 * (or until its input buffer is full), answers every complete command it
 * holds, and sends the replies of the whole batch with one send().
 *
 * Memory per session is bounded: a fixed struct with its input and output
 * buffers, plus the envelope of the current transaction (SINK_RCPT_MAX,
 * SINK_RCPTS_OCTETS). Message bodies are never held: they are counted, and
 * with --save-dir written to a temporary file as they arrive.
 *
 * The main thread waits for SIGTERM/SIGINT and rewrites --stats-file.
 *
 * TLS (--tls-cert/--tls-key: STARTTLS; --implicit-tls) is BoringSSL over
 * the socket through a small BIO, non-blocking. Session bytes meet the
 * network only through the session's transport (struct xprt: plain TCP or
 * TLS), so the SMTP code never asks whether TLS is on. A session reaches
 * TLS through CS_STARTTLS (the 220 goes out in clear text, input pipelined
 * after STARTTLS is dropped) or at once for --implicit-tls, and then
 * CS_TLS_ACCEPT until the handshake is done. One SSL_CTX serves all
 * threads.
 */
#include "config/config.h"
#include "proxy/proxy_proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define SINK_LINE_MAX 4096 /* a command line, CRLF included; longer gets 500 */
#define SINK_IN_CAP 16384 /* input buffer: several full command lines */
#define SINK_OUT_CAP 8192
#define SINK_REPLY_MAX 1024 /* the longest reply (EHLO); kept free before each step */
#define SINK_RCPT_MAX 1000 /* RFC 5321 4.5.3.1.8 asks for at least 100 */
#define SINK_RCPTS_OCTETS 65536 /* recorded recipient addresses per transaction */
#define SINK_NAME_MAX 255 /* --hostname, --banner */
#define SINK_LISTEN_MAX 16
#define SINK_THREADS_MAX 64
#define SINK_EVENTS 256
#define SINK_ACCEPT_BATCH 64 /* accepts per wakeup, so a storm does not starve sessions */
#define SINK_BACKLOG 4096
#define SINK_LINGER_MS 2000 /* after the last reply, wait this long for the client's FIN */
#define SINK_STATS_MS 200
#define SINK_ADDR_TEXT 64 /* "[v6]:port" */
#define SINK_DELAY_MAX_MS (24u * 3600 * 1000)

/* ---- configuration: set by options_parse(), read-only once threads run */

struct listen_addr {
	struct sockaddr_storage sa;
	socklen_t len;
};

static struct {
	struct listen_addr listen[SINK_LISTEN_MAX];
	int nlisten;
	const char *hostname;
	const char *banner;
	int threads;
	bool accept_proxy;
	bool xclient;
	const char *save_dir;
	const char *stats_file;
	uint64_t greeting_delay_ms;
	int fail_greeting; /* 0: greet normally */
	uint64_t max_size; /* 0: no limit */
	const char *tls_cert, *tls_key;
	bool implicit_tls;
} cfg = { .hostname = "sink.local", .banner = "ESMTP", .threads = 1 };

/* Replies fixed by the configuration, built once by canned_build(). */
struct canned {
	char *text;
	size_t len;
};
static struct canned canned_greeting, canned_fail, canned_ehlo, canned_ehlo_starttls, canned_helo;

/* Set once by tls_init() when --tls-cert/--tls-key are given, shared by the
 * workers (SSL_CTX is thread-safe for SSL_new). */
static SSL_CTX *tls_ctx;
static BIO_METHOD *conn_bio_method;

static pid_t sink_pid;
static _Atomic uint64_t msg_seq; /* numbers accepted messages: <pid>-<seq> */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("mxlb-sink: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

/* Allocation failure in a test tool is fatal rather than a reply code. */
static char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		die("out of memory");
	return p;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- types */

/* What an epoll event points at: the first member of each source. */
enum src_kind { SRC_LISTENER, SRC_WAKE, SRC_CONN };

struct listener {
	enum src_kind kind;
	int fd;
};

struct conn;

/* Sessions waiting for one kind of deadline. All waits in a queue have the
 * same length, so appending keeps it sorted. */
struct tqueue {
	struct conn *head, *tail;
	uint64_t ms;
	void (*expire)(struct conn *c);
};

struct worker {
	int id;
	int epfd;
	enum src_kind wake_kind; /* the eventfd's epoll cookie */
	int wakefd;
	int spare_fd; /* given up to shed a connection when out of descriptors */
	bool emfile_logged;
	struct listener listeners[SINK_LISTEN_MAX];
	pthread_t thread;
	struct conn *conns; /* every session, so shutdown frees them */
	struct tqueue delay_q, linger_q;
	uint64_t tmp_seq;
	/* written by this worker only, summed by the main thread */
	_Alignas(64) _Atomic uint64_t sessions;
	_Atomic uint64_t messages;
	_Atomic uint64_t bytes;
};

static struct worker workers[SINK_THREADS_MAX];

enum conn_state {
	CS_PROXY, /* waiting for the PROXY header */
	CS_GREET_WAIT, /* --greeting-delay running; input is buffered, not read */
	CS_CMD,
	CS_DATA,
	CS_BDAT, /* reading bdat_left more chunk octets */
	CS_STARTTLS, /* 220 queued in clear text; then the rest of the input is dropped */
	CS_TLS_ACCEPT, /* TLS handshake running; nothing is read as SMTP */
	CS_CLOSING, /* last reply queued; shut down once it is sent */
	CS_LINGER, /* write side shut; discard input until the client closes */
};

/* Where DATA scanning stands: at a line start, inside a line, after a CR. */
enum data_state { DS_BOL, DS_MID, DS_CR };

enum xclient_attr {
	XA_NAME,
	XA_ADDR,
	XA_PORT,
	XA_PROTO,
	XA_HELO,
	XA_LOGIN,
	XA_DESTADDR,
	XA_DESTPORT,
	XA_COUNT
};

static const char *const xclient_names[XA_COUNT] = {
	"NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT",
};

/* One mail transaction, from MAIL to the end of the message or RSET. */
struct txn {
	bool active; /* MAIL accepted */
	char *mail_from; /* the path without angle brackets */
	char *mail_params;
	char *rcpts; /* addresses, each NUL-terminated */
	size_t rcpts_len, rcpts_cap;
	unsigned nrcpt;
	bool bdat; /* the body comes in BDAT chunks */
	uint64_t size; /* message octets so far */
	bool too_big; /* over --max-size: the rest is counted no more */
	bool failed; /* the temporary file could not be written */
	int fd; /* temporary .eml with --save-dir, else -1 */
	uint64_t tmp_id; /* names the temporary files; 0: none exist */
};

/* Where session bytes meet the socket. recv: n > 0 octets, 0 at the end of
 * the stream, or -1 with errno (EAGAIN: nothing more for now); *drained
 * says the transport holds no more input, so only a new epoll edge brings
 * some. send: as send(2). shut: before the write side is shut down. */
struct xprt {
	ssize_t (*recv)(struct conn *c, void *buf, size_t len, bool *drained);
	ssize_t (*send)(struct conn *c, const void *buf, size_t len);
	void (*shut)(struct conn *c);
};

/* How a TLS stream ended, kept so that every later read says the same. */
enum tls_end { TLS_OPEN, TLS_EOF, TLS_BROKEN };

struct conn {
	enum src_kind kind;
	int fd;
	struct worker *w;
	const struct xprt *xprt;
	struct conn *prev, *next; /* w->conns */
	struct conn *tprev, *tnext; /* in tq, when tq is set */
	struct tqueue *tq;
	uint64_t deadline;

	enum conn_state state;
	bool rd_ready; /* the socket may hold input: read until EAGAIN */
	bool eof; /* the client's FIN was read: read no more */
	bool rdhup; /* epoll reported the FIN (or an error): read until EOF */
	bool wr_blocked; /* send() said EAGAIN: wait for EPOLLOUT */
	/* TLS may need the other direction: a read that must first write (a
	 * KeyUpdate answer) waits for EPOLLOUT, and the converse */
	bool rd_needs_wr, wr_needs_rd;
	bool skipping; /* discarding the rest of an overlong line */
	enum data_state ds;
	uint64_t bdat_left, bdat_size;
	bool bdat_last;
	const char *bdat_error; /* reply for the current chunk, once read */

	struct sockaddr_storage peer;
	bool has_proxy;
	struct proxy_info proxy;
	char *helo;
	bool has_xclient;
	char *xclient[XA_COUNT];
	struct txn txn;

	SSL *ssl; /* from the start of the handshake to the close */
	enum tls_end tls_end;
	/* input read before the handshake that belongs to it (a ClientHello
	 * that came with the PROXY header): the BIO reads it first */
	char *carry;
	size_t carry_off, carry_len;

	size_t in_start, in_len, out_off, out_len;
	char out[SINK_OUT_CAP];
	char in[SINK_IN_CAP];
};

/* What a processing step left to do. */
enum step {
	STEP_GO, /* progress made: go on */
	STEP_MORE, /* the input holds nothing more to act on yet */
	STEP_OUTFULL, /* replies wait to be sent before more commands are read */
	STEP_CLOSE, /* close without a word (bad PROXY header) */
};

static void conn_run(struct conn *c);
static void conn_close(struct conn *c);

/* ---- timer queues */

static void tq_arm(struct tqueue *q, struct conn *c)
{
	c->deadline = now_ms() + q->ms;
	c->tq = q;
	c->tnext = NULL;
	c->tprev = q->tail;
	if (q->tail)
		q->tail->tnext = c;
	else
		q->head = c;
	q->tail = c;
}

static void tq_disarm(struct conn *c)
{
	struct tqueue *q = c->tq;

	if (!q)
		return;
	if (c->tprev)
		c->tprev->tnext = c->tnext;
	else
		q->head = c->tnext;
	if (c->tnext)
		c->tnext->tprev = c->tprev;
	else
		q->tail = c->tprev;
	c->tq = NULL;
	c->tprev = c->tnext = NULL;
}

/* The epoll_wait timeout (ms, -1 for none) for the earliest deadline. */
static int tq_timeout(const struct tqueue *q, uint64_t now, int timeout)
{
	uint64_t left;

	if (!q->head)
		return timeout;
	left = q->head->deadline > now ? q->head->deadline - now : 0;
	if (timeout < 0 || left < (uint64_t)timeout)
		return (int)left;
	return timeout;
}

/* Expiry callbacks may close the session; they are called unlinked. */
static void tq_expire(struct tqueue *q, uint64_t now)
{
	while (q->head && q->head->deadline <= now) {
		struct conn *c = q->head;

		tq_disarm(c);
		q->expire(c);
	}
}

/* ---- replies */

/* Callers keep SINK_REPLY_MAX octets free before each step, and no reply
 * is longer: truncation here is a bug guard, never a path taken. */
static void reply(struct conn *c, const char *s, size_t n)
{
	size_t room = SINK_OUT_CAP - c->out_len;

	if (n > room)
		n = room;
	memcpy(c->out + c->out_len, s, n);
	c->out_len += n;
}

#define REPLY(c, lit) reply((c), lit "\r\n", sizeof(lit "\r\n") - 1)

static void reply_canned(struct conn *c, const struct canned *r)
{
	reply(c, r->text, r->len);
}

static void replyf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void replyf(struct conn *c, const char *fmt, ...)
{
	size_t room = SINK_OUT_CAP - c->out_len;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(c->out + c->out_len, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		c->out_len += (size_t)n < room ? (size_t)n : room - 1;
}

/* ---- addresses and JSON */

/* Formats an AF_INET/AF_INET6 address without port ("unknown" otherwise). */
static void addr_format(const struct sockaddr_storage *ss, char *buf, size_t cap, unsigned *port)
{
	const struct sockaddr_in *in4 = (const struct sockaddr_in *)ss;
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

	*port = 0;
	if (ss->ss_family == AF_INET && inet_ntop(AF_INET, &in4->sin_addr, buf, cap)) {
		*port = ntohs(in4->sin_port);
	} else if (ss->ss_family == AF_INET6 && inet_ntop(AF_INET6, &in6->sin6_addr, buf, cap)) {
		*port = ntohs(in6->sin6_port);
	} else {
		snprintf(buf, cap, "unknown");
	}
}

/* "127.0.0.1:25" or "[::1]:25". */
static void addr_format_port(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
	char host[INET6_ADDRSTRLEN];
	unsigned port;

	addr_format(ss, host, sizeof(host), &port);
	snprintf(buf, cap, ss->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
}

/* The length of the valid UTF-8 sequence at s[0..n), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* A JSON string. Valid UTF-8 passes as is; other octets become \u00XX, so
 * the file always parses (such octets read back as Latin-1). */
static void json_str(FILE *f, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n = strlen(str);

	fputc('"', f);
	for (size_t i = 0; i < n;) {
		size_t len = s[i] >= 0x80 ? utf8_seq(s + i, n - i) : 1;

		if (s[i] == '"' || s[i] == '\\') {
			fputc('\\', f);
			fputc(s[i], f);
		} else if (s[i] < 0x20 || s[i] == 0x7f || len == 0) {
			fprintf(f, "\\u%04x", s[i]);
		} else {
			fwrite(s + i, 1, len, f);
			i += len;
			continue;
		}
		i++;
	}
	fputc('"', f);
}

static void json_str_or_null(FILE *f, const char *s)
{
	if (s)
		json_str(f, s);
	else
		fputs("null", f);
}

/* ---- the session's identity */

/* The client as the session knows it: the TCP peer, replaced by the PROXY
 * header's source, replaced by XCLIENT ADDR/PORT where those carry real
 * values (not "[UNAVAILABLE]"). */
static void session_client(const struct conn *c, char *addr, size_t cap, unsigned *port)
{
	const char *xa = c->xclient[XA_ADDR];
	const char *xp = c->xclient[XA_PORT];

	if (c->has_proxy && !c->proxy.local)
		addr_format(&c->proxy.src, addr, cap, port);
	else
		addr_format(&c->peer, addr, cap, port);
	if (xa && xa[0] && xa[0] != '[') {
		if (strncasecmp(xa, "IPV6:", 5) == 0)
			xa += 5;
		snprintf(addr, cap, "%s", xa);
	}
	if (xp && xp[0] && strlen(xp) <= 5 && strspn(xp, "0123456789") == strlen(xp) &&
	    atoi(xp) <= 65535)
		*port = (unsigned)atoi(xp);
}

static void session_set_helo(struct conn *c, const char *name)
{
	free(c->helo);
	c->helo = name ? xstrdup(name) : NULL;
}

/* ---- transactions and saved messages */

static void tmp_path(char *buf, size_t cap, const struct conn *c, const char *ext)
{
	snprintf(buf, cap, "%s/.tmp-%d-%d-%" PRIu64 ".%s", cfg.save_dir, (int)sink_pid, c->w->id,
		 c->txn.tmp_id, ext);
}

/* Ends the transaction, removing any temporary file. */
static void txn_reset(struct conn *c)
{
	struct txn *t = &c->txn;

	if (t->fd >= 0)
		close(t->fd);
	if (t->tmp_id) {
		char path[PATH_MAX];

		tmp_path(path, sizeof(path), c, "eml");
		unlink(path);
		tmp_path(path, sizeof(path), c, "json");
		unlink(path);
	}
	free(t->mail_from);
	free(t->mail_params);
	free(t->rcpts);
	memset(t, 0, sizeof(*t));
	t->fd = -1;
}

/* Opens the temporary message file when saving and not yet open. False
 * when it cannot be created. */
static bool txn_open(struct conn *c)
{
	struct txn *t = &c->txn;
	char path[PATH_MAX];

	if (!cfg.save_dir || t->fd >= 0)
		return true;
	t->tmp_id = ++c->w->tmp_seq;
	tmp_path(path, sizeof(path), c, "eml");
	t->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (t->fd < 0) {
		fprintf(stderr, "mxlb-sink: %s: %s\n", path, strerror(errno));
		t->failed = true;
		return false;
	}
	return true;
}

/* Message octets, in order. Past --max-size they are dropped, not stored. */
static void txn_write(struct conn *c, const char *p, size_t n)
{
	struct txn *t = &c->txn;

	if (t->too_big || n == 0)
		return;
	t->size += n;
	if (cfg.max_size && t->size > cfg.max_size) {
		t->too_big = true;
		return;
	}
	while (t->fd >= 0 && !t->failed && n > 0) {
		ssize_t w = write(t->fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			fprintf(stderr, "mxlb-sink: writing a message: %s\n", strerror(errno));
			t->failed = true;
			break;
		}
		p += w;
		n -= (size_t)w;
	}
}

static void txn_json(FILE *f, const struct conn *c, const char *id)
{
	const struct txn *t = &c->txn;
	char addr[INET6_ADDRSTRLEN + 8];
	unsigned port;

	fprintf(f, "{\"id\":\"%s\",\"helo\":", id);
	json_str_or_null(f, c->helo);
	fputs(",\"mail_from\":", f);
	json_str(f, t->mail_from);
	fputs(",\"mail_params\":", f);
	json_str(f, t->mail_params);
	fputs(",\"rcpt_to\":[", f);
	for (size_t off = 0, i = 0; off < t->rcpts_len; i++) {
		if (i)
			fputc(',', f);
		json_str(f, t->rcpts + off);
		off += strlen(t->rcpts + off) + 1;
	}
	session_client(c, addr, sizeof(addr), &port);
	fputs("],\"client_addr\":", f);
	json_str(f, addr);
	fprintf(f, ",\"client_port\":%u", port);
	addr_format(&c->peer, addr, sizeof(addr), &port);
	fputs(",\"peer_addr\":", f);
	json_str(f, addr);
	fprintf(f, ",\"peer_port\":%u,\"proxy\":", port);
	if (c->has_proxy) {
		fprintf(f, "{\"version\":%d,\"local\":%s", c->proxy.version,
			c->proxy.local ? "true" : "false");
		if (!c->proxy.local) {
			addr_format(&c->proxy.src, addr, sizeof(addr), &port);
			fputs(",\"src_addr\":", f);
			json_str(f, addr);
			fprintf(f, ",\"src_port\":%u", port);
			addr_format(&c->proxy.dst, addr, sizeof(addr), &port);
			fputs(",\"dst_addr\":", f);
			json_str(f, addr);
			fprintf(f, ",\"dst_port\":%u", port);
		}
		fputc('}', f);
	} else {
		fputs("null", f);
	}
	fputs(",\"xclient\":", f);
	if (c->has_xclient) {
		bool first = true;

		fputc('{', f);
		for (int i = 0; i < XA_COUNT; i++) {
			if (!c->xclient[i])
				continue;
			fprintf(f, "%s\"%s\":", first ? "" : ",", xclient_names[i]);
			json_str(f, c->xclient[i]);
			first = false;
		}
		fputc('}', f);
	} else {
		fputs("null", f);
	}
	/* messages are only taken once a handshake is done: ssl means TLS */
	fputs(",\"tls\":", f);
	json_str_or_null(f, c->ssl ? SSL_get_version(c->ssl) : NULL);
	fputs(",\"cipher\":", f);
	json_str_or_null(f, c->ssl ? SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl)) : NULL);
	fputs(",\"sni\":", f);
	json_str_or_null(f, c->ssl ? SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name) : NULL);
	fprintf(f, ",\"size\":%" PRIu64 ",\"body\":\"%s\"}\n", t->size, t->bdat ? "bdat" : "data");
}

/* Publishes the message as <id>.eml then <id>.json, each by rename(), so a
 * reader that sees the .json finds the .eml complete. */
static bool txn_save(struct conn *c, const char *id)
{
	struct txn *t = &c->txn;
	char tmp[PATH_MAX], path[PATH_MAX];
	FILE *f;
	int rc;

	rc = close(t->fd);
	t->fd = -1;
	if (rc < 0)
		return false;
	tmp_path(tmp, sizeof(tmp), c, "eml");
	snprintf(path, sizeof(path), "%s/%s.eml", cfg.save_dir, id);
	if (rename(tmp, path) < 0)
		return false;
	tmp_path(tmp, sizeof(tmp), c, "json");
	f = fopen(tmp, "we");
	if (!f)
		return false;
	txn_json(f, c, id);
	rc = ferror(f);
	if (fclose(f) != 0 || rc)
		return false;
	snprintf(path, sizeof(path), "%s/%s.json", cfg.save_dir, id);
	return rename(tmp, path) == 0;
}

/* The end of a message: the final reply, then a fresh transaction. */
static void txn_finish(struct conn *c)
{
	struct txn *t = &c->txn;

	if (t->too_big) {
		REPLY(c, "552 5.3.4 Message size exceeds fixed limit");
	} else if (t->failed) {
		REPLY(c, "451 4.3.0 Error: could not save the message");
	} else {
		char id[48];

		snprintf(id, sizeof(id), "%d-%" PRIu64, (int)sink_pid,
			 atomic_fetch_add_explicit(&msg_seq, 1, memory_order_relaxed) + 1);
		if (cfg.save_dir && !txn_save(c, id)) {
			fprintf(stderr, "mxlb-sink: saving message %s: %s\n", id, strerror(errno));
			REPLY(c, "451 4.3.0 Error: could not save the message");
		} else {
			atomic_fetch_add_explicit(&c->w->messages, 1, memory_order_relaxed);
			atomic_fetch_add_explicit(&c->w->bytes, t->size, memory_order_relaxed);
			replyf(c, "250 2.0.0 Ok: queued as %s\r\n", id);
		}
	}
	txn_reset(c);
}

/* ---- parsers (pure) */

/*
 * Scans DATA octets buf[0..len) from *ds: only CRLF ends a line (a bare CR
 * or LF is content), CRLF "." CRLF ends the message, and a line-leading dot
 * is removed (RFC 5321 4.5.2). With copy, the message octets are moved to
 * buf[0..*msg_len) in place; without, only counted. Returns the octets
 * consumed, *end set when the terminator was among them. A line-leading
 * "." or ".\r" at the end of buf is not consumed: the caller offers it again
 * with what follows.
 */
static size_t data_scan(enum data_state *ds, char *buf, size_t len, bool copy, size_t *msg_len,
			bool *end)
{
	enum data_state st = *ds;
	size_t r = 0, w = 0;

	*end = false;
	while (r < len) {
		if (st == DS_BOL && buf[r] == '.') {
			if (r + 1 == len || (buf[r + 1] == '\r' && r + 2 == len))
				break;
			if (buf[r + 1] == '\r' && buf[r + 2] == '\n') {
				r += 3;
				*end = true;
				break;
			}
			r++;
			st = DS_MID;
			continue;
		}
		if (st == DS_CR) {
			char ch = buf[r++];

			if (copy)
				buf[w] = ch;
			w++;
			st = ch == '\n' ? DS_BOL : ch == '\r' ? DS_CR : DS_MID;
			continue;
		}
		const char *cr = memchr(buf + r, '\r', len - r);
		size_t n = cr ? (size_t)(cr - (buf + r)) + 1 : len - r;

		if (copy && w != r)
			memmove(buf + w, buf + r, n);
		w += n;
		r += n;
		st = cr ? DS_CR : DS_MID;
	}
	*ds = st;
	*msg_len = w;
	return r;
}

/*
 * Splits "FROM:<path> params" (prefix "FROM:" or "TO:", any case, spaces
 * allowed after the colon) in place: *addr is the path without its angle
 * brackets, *params what follows. A path without brackets runs to the next
 * space, as Postfix accepts it. False for anything else.
 */
static bool parse_path(char *arg, const char *prefix, char **addr, char **params)
{
	size_t plen = strlen(prefix);
	char *s, *e;

	if (strncasecmp(arg, prefix, plen) != 0)
		return false;
	s = arg + plen;
	while (*s == ' ')
		s++;
	if (*s == '<') {
		bool quoted = false;

		for (e = ++s; *e && (quoted || *e != '>'); e++) {
			if (*e == '\\' && e[1])
				e++;
			else if (*e == '"')
				quoted = !quoted;
		}
		if (*e != '>')
			return false;
		*e++ = '\0';
		if (*e && *e != ' ')
			return false;
	} else {
		e = s + strcspn(s, " ");
		if (e == s)
			return false;
		if (*e)
			*e++ = '\0';
	}
	while (*e == ' ')
		e++;
	*addr = s;
	*params = e;
	return true;
}

/* Decimal without sign or overflow (values up to 2^62). */
static bool parse_u64(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 18)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return true;
}

/* The SIZE=N MAIL parameter, if any and well-formed. */
static bool mail_param_size(const char *params, uint64_t *size)
{
	while (*params) {
		size_t len = strcspn(params, " ");

		if (len > 5 && strncasecmp(params, "SIZE=", 5) == 0)
			return parse_u64(params + 5, len - 5, size);
		params += len;
		while (*params == ' ')
			params++;
	}
	return false;
}

/* "N" or "N LAST" (RFC 3030). */
static bool parse_bdat(const char *arg, uint64_t *size, bool *last)
{
	size_t len = strcspn(arg, " ");
	const char *rest = arg + len;

	if (!parse_u64(arg, len, size))
		return false;
	while (*rest == ' ')
		rest++;
	*last = strcasecmp(rest, "LAST") == 0;
	return *last || *rest == '\0';
}

/* xtext (RFC 3461 4): "+XX" is the octet XX. Decodes in place. */
static bool xtext_decode(char *s)
{
	char *w = s;

	for (const char *r = s; *r; r++) {
		if (*r == '+') {
			char hex[3] = { r[1], r[1] ? r[2] : '\0', '\0' };
			char *end;
			long v;

			if (!hex[0] || !hex[1] || !strchr("0123456789abcdefABCDEF", hex[0]) ||
			    !strchr("0123456789abcdefABCDEF", hex[1]))
				return false;
			v = strtol(hex, &end, 16);
			*w++ = (char)v;
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
	return true;
}

/* ---- commands: check validates against the session state, proceed acts */

static const char *check_helo(const struct conn *c)
{
	return c->helo ? NULL : "503 5.5.1 Error: send HELO/EHLO first\r\n";
}

static const char *check_no_mail(const struct conn *c)
{
	const char *err = check_helo(c);

	if (err)
		return err;
	return c->txn.active ? "503 5.5.1 Error: nested MAIL command\r\n" : NULL;
}

static const char *check_mail(const struct conn *c)
{
	const char *err = check_helo(c);

	if (err)
		return err;
	return c->txn.active ? NULL : "503 5.5.1 Error: need MAIL command\r\n";
}

static const char *check_rcpt(const struct conn *c)
{
	const char *err = check_mail(c);

	if (err)
		return err;
	return c->txn.nrcpt ? NULL : "503 5.5.1 Error: need RCPT command\r\n";
}

static const char *check_data(const struct conn *c)
{
	const char *err = check_rcpt(c);

	if (err)
		return err;
	return c->txn.bdat ? "503 5.5.1 Error: DATA after BDAT\r\n" : NULL;
}

static void cmd_ehlo(struct conn *c, char *arg)
{
	if (!*arg) {
		REPLY(c, "501 5.5.4 Syntax: EHLO hostname");
		return;
	}
	txn_reset(c);
	session_set_helo(c, arg);
	reply_canned(c, tls_ctx && !c->ssl ? &canned_ehlo_starttls : &canned_ehlo);
}

static void cmd_helo(struct conn *c, char *arg)
{
	if (!*arg) {
		REPLY(c, "501 5.5.4 Syntax: HELO hostname");
		return;
	}
	txn_reset(c);
	session_set_helo(c, arg);
	reply_canned(c, &canned_helo);
}

static void cmd_mail(struct conn *c, char *arg)
{
	char *addr, *params;
	uint64_t size;

	if (!parse_path(arg, "FROM:", &addr, &params)) {
		REPLY(c, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	if (cfg.max_size && mail_param_size(params, &size) && size > cfg.max_size) {
		REPLY(c, "552 5.3.4 Message size exceeds fixed limit");
		return;
	}
	c->txn.active = true;
	c->txn.mail_from = xstrdup(addr);
	c->txn.mail_params = xstrdup(params);
	REPLY(c, "250 2.1.0 Ok");
}

static void cmd_rcpt(struct conn *c, char *arg)
{
	struct txn *t = &c->txn;
	char *addr, *params;
	size_t n;

	if (!parse_path(arg, "TO:", &addr, &params)) {
		REPLY(c, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	if (!*addr) {
		REPLY(c, "501 5.1.3 Bad recipient address syntax");
		return;
	}
	n = strlen(addr) + 1;
	if (t->nrcpt >= SINK_RCPT_MAX || t->rcpts_len + n > SINK_RCPTS_OCTETS) {
		REPLY(c, "452 4.5.3 Error: too many recipients");
		return;
	}
	if (t->rcpts_len + n > t->rcpts_cap) {
		size_t cap = t->rcpts_cap ? t->rcpts_cap : 256;
		char *p;

		while (cap < t->rcpts_len + n)
			cap *= 2;
		p = realloc(t->rcpts, cap);
		if (!p)
			die("out of memory");
		t->rcpts = p;
		t->rcpts_cap = cap;
	}
	memcpy(t->rcpts + t->rcpts_len, addr, n);
	t->rcpts_len += n;
	t->nrcpt++;
	REPLY(c, "250 2.1.5 Ok");
}

static void cmd_data(struct conn *c, char *arg)
{
	if (*arg) {
		REPLY(c, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (!txn_open(c)) {
		txn_reset(c);
		REPLY(c, "451 4.3.0 Error: could not save the message");
		return;
	}
	c->state = CS_DATA;
	c->ds = DS_BOL;
	REPLY(c, "354 End data with <CR><LF>.<CR><LF>");
}

/* A BDAT chunk has been read in full: its reply. */
static void bdat_done(struct conn *c)
{
	c->state = CS_CMD;
	if (c->bdat_error) {
		reply(c, c->bdat_error, strlen(c->bdat_error));
	} else if (c->txn.too_big) {
		REPLY(c, "552 5.3.4 Message size exceeds fixed limit");
		txn_reset(c);
	} else if (c->bdat_last) {
		txn_finish(c);
	} else {
		replyf(c, "250 2.0.0 Ok: %" PRIu64 " octets received\r\n", c->bdat_size);
	}
}

/* The chunk is read whatever the reply (RFC 3030 2), so a sequencing error
 * is only noted here and given once the octets are consumed. */
static void cmd_bdat(struct conn *c, char *arg)
{
	if (!parse_bdat(arg, &c->bdat_size, &c->bdat_last)) {
		REPLY(c, "501 5.5.4 Syntax: BDAT count [LAST]");
		return;
	}
	c->bdat_left = c->bdat_size;
	c->bdat_error = check_rcpt(c);
	if (!c->bdat_error) {
		c->txn.bdat = true;
		txn_open(c);
	}
	if (c->bdat_left)
		c->state = CS_BDAT;
	else
		bdat_done(c);
}

static void cmd_rset(struct conn *c, char *arg)
{
	(void)arg;
	txn_reset(c);
	REPLY(c, "250 2.0.0 Ok");
}

static void cmd_noop(struct conn *c, char *arg)
{
	(void)arg;
	REPLY(c, "250 2.0.0 Ok");
}

static void cmd_help(struct conn *c, char *arg)
{
	(void)arg;
	REPLY(c, "214 2.0.0 mxlb-sink: see RFC 5321");
}

static void cmd_quit(struct conn *c, char *arg)
{
	(void)arg;
	REPLY(c, "221 2.0.0 Bye");
	c->state = CS_CLOSING;
}

/* RFC 3207 4.2: the session starts over under TLS, so the client's HELO is
 * forgotten (there is no transaction: STARTTLS is refused inside one).
 * XCLIENT and PROXY facts come from the proxy, not the client, and stay,
 * as in Postfix. What the client pipelined after STARTTLS is dropped
 * before the handshake (conn_tls_step()). */
static void cmd_starttls(struct conn *c, char *arg)
{
	if (!tls_ctx) {
		REPLY(c, "502 5.5.1 Error: command not implemented");
		return;
	}
	if (c->ssl) {
		REPLY(c, "554 5.5.1 Error: TLS already active");
		return;
	}
	if (*arg) {
		REPLY(c, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (c->txn.active) {
		REPLY(c, "503 5.5.1 Error: MAIL transaction in progress");
		return;
	}
	session_set_helo(c, NULL);
	REPLY(c, "220 2.0.0 Ready to start TLS");
	c->state = CS_STARTTLS;
}

/* Postfix's XCLIENT_README: attributes are xtext, may come over several
 * commands (each updates only those it names), and success resets the
 * session to a fresh greeting. */
static void cmd_xclient(struct conn *c, char *arg)
{
	char *vals[XA_COUNT] = { 0 };
	char *tok, *save = NULL;

	if (!cfg.xclient) {
		REPLY(c, "550 5.7.0 Error: insufficient authorization");
		return;
	}
	if (c->txn.active) {
		REPLY(c, "503 5.5.1 Error: MAIL transaction in progress");
		return;
	}
	if (!*arg) {
		REPLY(c, "501 5.5.4 Syntax: XCLIENT attribute=value...");
		return;
	}
	for (tok = strtok_r(arg, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		char *eq = strchr(tok, '=');
		int i;

		if (!eq || eq == tok) {
			REPLY(c, "501 5.5.4 Syntax: XCLIENT attribute=value...");
			return;
		}
		*eq = '\0';
		for (i = 0; i < XA_COUNT && strcasecmp(tok, xclient_names[i]) != 0; i++)
			;
		if (i == XA_COUNT) {
			replyf(c, "501 5.5.4 Bad XCLIENT attribute name: %.64s\r\n", tok);
			return;
		}
		if (!xtext_decode(eq + 1)) {
			replyf(c, "501 5.5.4 Bad XCLIENT attribute value: %.64s\r\n", tok);
			return;
		}
		vals[i] = eq + 1;
	}
	for (int i = 0; i < XA_COUNT; i++) {
		if (vals[i]) {
			free(c->xclient[i]);
			c->xclient[i] = xstrdup(vals[i]);
		}
	}
	c->has_xclient = true;
	txn_reset(c);
	session_set_helo(c, NULL);
	reply_canned(c, &canned_greeting);
}

static const struct command {
	const char *verb;
	const char *(*check)(const struct conn *c); /* NULL or the error reply */
	void (*proceed)(struct conn *c, char *arg);
} commands[] = {
	{ "EHLO", NULL, cmd_ehlo },
	{ "HELO", NULL, cmd_helo },
	{ "MAIL", check_no_mail, cmd_mail },
	{ "RCPT", check_mail, cmd_rcpt },
	{ "DATA", check_data, cmd_data },
	{ "BDAT", NULL, cmd_bdat },
	{ "RSET", NULL, cmd_rset },
	{ "NOOP", NULL, cmd_noop },
	{ "QUIT", NULL, cmd_quit },
	{ "HELP", NULL, cmd_help },
	{ "STARTTLS", NULL, cmd_starttls },
	{ "XCLIENT", NULL, cmd_xclient },
};

/* One command line, its line end cut off and NUL-terminated. */
static void command_run(struct conn *c, char *line, size_t len)
{
	size_t verb_len;
	char *arg, *end;

	if (memchr(line, '\0', len)) {
		REPLY(c, "500 5.5.2 Error: bad syntax");
		return;
	}
	verb_len = strcspn(line, " ");
	if (verb_len == 0) {
		REPLY(c, "500 5.5.2 Error: bad syntax");
		return;
	}
	arg = line + verb_len;
	while (*arg == ' ')
		arg++;
	end = line + len;
	while (end > arg && end[-1] == ' ')
		end--;
	*end = '\0';
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		const struct command *cmd = &commands[i];
		const char *err;

		if (strlen(cmd->verb) != verb_len || strncasecmp(line, cmd->verb, verb_len) != 0)
			continue;
		err = cmd->check ? cmd->check(c) : NULL;
		if (err)
			reply(c, err, strlen(err));
		else
			cmd->proceed(c, arg);
		return;
	}
	REPLY(c, "502 5.5.2 Error: command not recognized");
}

/* ---- the session's steps: each consumes input at p[0..avail) */

static void greet_now(struct conn *c)
{
	if (cfg.fail_greeting) {
		reply_canned(c, &canned_fail);
		c->state = CS_CLOSING;
	} else {
		reply_canned(c, &canned_greeting);
		c->state = CS_CMD;
	}
}

static void greet(struct conn *c)
{
	if (cfg.greeting_delay_ms) {
		c->state = CS_GREET_WAIT;
		tq_arm(&c->w->delay_q, c);
	} else {
		greet_now(c);
	}
}

static void greet_delay_expired(struct conn *c)
{
	greet_now(c);
	conn_run(c);
}

static enum step step_proxy(struct conn *c, char *p, size_t avail, size_t *used)
{
	struct proxy_info pi;

	switch (proxy_parse((const uint8_t *)p, avail, &pi, used)) {
	case PROXY_OK:
		c->proxy = pi;
		c->has_proxy = true;
		if (cfg.implicit_tls)
			c->state = CS_TLS_ACCEPT;
		else
			greet(c);
		return STEP_GO;
	case PROXY_AGAIN:
		return STEP_MORE;
	case PROXY_INVALID:
		break;
	}
	return STEP_CLOSE;
}

static enum step step_command(struct conn *c, char *p, size_t avail, size_t *used)
{
	size_t scan = avail < SINK_LINE_MAX ? avail : SINK_LINE_MAX;
	char *lf;
	size_t len;

	if (c->skipping) {
		lf = memchr(p, '\n', avail);
		*used = lf ? (size_t)(lf - p) + 1 : avail;
		c->skipping = !lf;
		return STEP_GO;
	}
	lf = memchr(p, '\n', scan);
	if (!lf) {
		if (avail < SINK_LINE_MAX)
			return STEP_MORE;
		REPLY(c, "500 5.5.2 Error: line too long");
		c->skipping = true;
		*used = scan;
		return STEP_GO;
	}
	*used = (size_t)(lf - p) + 1;
	len = (size_t)(lf - p);
	if (len > 0 && p[len - 1] == '\r')
		len--;
	p[len] = '\0';
	command_run(c, p, len);
	return STEP_GO;
}

static enum step step_data(struct conn *c, char *p, size_t avail, size_t *used)
{
	bool copy = c->txn.fd >= 0 && !c->txn.too_big && !c->txn.failed;
	size_t msg_len;
	bool end;

	*used = data_scan(&c->ds, p, avail, copy, &msg_len, &end);
	txn_write(c, p, msg_len);
	if (end) {
		c->state = CS_CMD;
		txn_finish(c);
		return STEP_GO;
	}
	return *used == avail ? STEP_GO : STEP_MORE;
}

static enum step step_bdat(struct conn *c, char *p, size_t avail, size_t *used)
{
	size_t n = avail < c->bdat_left ? avail : (size_t)c->bdat_left;

	if (!c->bdat_error)
		txn_write(c, p, n);
	*used = n;
	c->bdat_left -= n;
	if (c->bdat_left == 0)
		bdat_done(c);
	return STEP_GO;
}

/* Acts on the buffered input until it runs out, replies need sending
 * first, or the session must close. */
static enum step conn_process(struct conn *c)
{
	enum step st = STEP_MORE;

	while (c->in_start < c->in_len) {
		char *p = c->in + c->in_start;
		size_t avail = c->in_len - c->in_start;
		size_t used = 0;

		if (SINK_OUT_CAP - c->out_len < SINK_REPLY_MAX) {
			st = STEP_OUTFULL;
			break;
		}
		switch (c->state) {
		case CS_PROXY:
			st = step_proxy(c, p, avail, &used);
			break;
		case CS_GREET_WAIT:
		case CS_STARTTLS: /* conn_run() drops the input or hands it to TLS */
		case CS_TLS_ACCEPT:
			st = STEP_MORE;
			break;
		case CS_CMD:
			st = step_command(c, p, avail, &used);
			break;
		case CS_DATA:
			st = step_data(c, p, avail, &used);
			break;
		case CS_BDAT:
			st = step_bdat(c, p, avail, &used);
			break;
		case CS_CLOSING:
		case CS_LINGER:
			used = avail;
			st = STEP_GO;
			break;
		}
		c->in_start += used;
		if (st != STEP_GO)
			break;
		st = STEP_MORE;
	}
	if (c->in_start == c->in_len)
		c->in_start = c->in_len = 0;
	return st;
}

/* ---- transports: plain TCP and TLS */

static ssize_t tcp_recv(struct conn *c, void *buf, size_t len, bool *drained)
{
	ssize_t n = recv(c->fd, buf, len, 0);

	/* a short read emptied the socket: new input brings a new edge */
	*drained = n >= 0 && (size_t)n < len;
	return n;
}

static ssize_t tcp_send(struct conn *c, const void *buf, size_t len)
{
	return send(c->fd, buf, len, MSG_NOSIGNAL);
}

static void tcp_shut(struct conn *c)
{
	(void)c;
}

static const struct xprt xprt_tcp = { tcp_recv, tcp_send, tcp_shut };

/* The reason for the oldest queued TLS error ("WRONG_VERSION_NUMBER"); the
 * thread's queue is left empty, so no stale error misleads SSL_get_error()
 * on the next session. */
static const char *tls_error(void)
{
	uint32_t e = ERR_get_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	ERR_clear_error();
	return r ? r : "unknown error";
}

static void tls_log(const struct conn *c, const char *what)
{
	char peer[SINK_ADDR_TEXT];

	addr_format_port(&c->peer, peer, sizeof(peer));
	fprintf(stderr, "mxlb-sink: TLS %s with %s: %s\n", what, peer, tls_error());
}

/* SSL_read() until len octets or until the socket has nothing more.
 * BoringSSL keeps whole records it has read, so a short SSL_read() says
 * nothing about the socket: only WANT_READ tells an edge-triggered reader
 * that it may wait. The end of the stream is remembered (tls_end) and
 * reported after the octets that preceded it. */
static ssize_t tls_recv(struct conn *c, void *buf, size_t len, bool *drained)
{
	size_t got = 0;

	*drained = false;
	while (got < len && c->tls_end == TLS_OPEN) {
		size_t want = len - got < INT_MAX ? len - got : INT_MAX;
		int n = SSL_read(c->ssl, (char *)buf + got, (int)want);

		if (n > 0) {
			got += (size_t)n;
			continue;
		}
		switch (SSL_get_error(c->ssl, n)) {
		case SSL_ERROR_WANT_WRITE:
			c->rd_needs_wr = true;
			/* fall through */
		case SSL_ERROR_WANT_READ:
			*drained = true;
			if (got)
				return (ssize_t)got;
			errno = EAGAIN;
			return -1;
		case SSL_ERROR_ZERO_RETURN:
			c->tls_end = TLS_EOF;
			break;
		case SSL_ERROR_SYSCALL:
			/* 0: TCP ended without close_notify, which a sink takes as the end */
			c->tls_end = n == 0 ? TLS_EOF : TLS_BROKEN;
			ERR_clear_error();
			break;
		default:
			tls_log(c, "read");
			c->tls_end = TLS_BROKEN;
			break;
		}
	}
	if (got)
		return (ssize_t)got;
	if (c->tls_end == TLS_EOF)
		return 0;
	errno = ECONNRESET;
	return -1;
}

/* SSL_MODE_ENABLE_PARTIAL_WRITE: a record at a time, like send(2);
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER: conn_flush() may compact c->out
 * between a WANT_WRITE and the retry, which only appends to it. */
static ssize_t tls_send(struct conn *c, const void *buf, size_t len)
{
	int n = SSL_write(c->ssl, buf, len < INT_MAX ? (int)len : INT_MAX);

	if (n > 0)
		return n;
	switch (SSL_get_error(c->ssl, n)) {
	case SSL_ERROR_WANT_READ:
		c->wr_needs_rd = true;
		/* fall through */
	case SSL_ERROR_WANT_WRITE:
		errno = EAGAIN;
		return -1;
	default:
		ERR_clear_error();
		errno = EPIPE;
		return -1;
	}
}

/* close_notify as a courtesy: nothing waits for it to be sent. What the
 * client sends after it is only waited out and dropped (CS_LINGER), so
 * the session reads raw TCP from here on. */
static void tls_shut(struct conn *c)
{
	SSL_shutdown(c->ssl);
	ERR_clear_error();
	c->xprt = &xprt_tcp;
}

static const struct xprt xprt_tls = { tls_recv, tls_send, tls_shut };

/* The BIO under each SSL: the session's socket, read after the carry (see
 * struct conn). EAGAIN becomes a retry, which SSL reports as WANT_*. */
static int conn_bio_read(BIO *b, char *out, int len)
{
	struct conn *c = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (c->carry) {
		size_t k = c->carry_len - c->carry_off;

		if (k > (size_t)len)
			k = (size_t)len;
		memcpy(out, c->carry + c->carry_off, k);
		c->carry_off += k;
		if (c->carry_off == c->carry_len) {
			free(c->carry);
			c->carry = NULL;
			c->carry_off = c->carry_len = 0;
		}
		return (int)k;
	}
	do
		n = recv(c->fd, out, (size_t)len, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_read(b);
	return n < 0 ? -1 : (int)n;
}

static int conn_bio_write(BIO *b, const char *in, int len)
{
	struct conn *c = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	do
		n = send(c->fd, in, (size_t)len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_write(b);
	return n < 0 ? -1 : (int)n;
}

static long conn_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH; /* writes go straight to the socket */
}

/* Gives the session its SSL. Input already read belongs to the handshake
 * (a ClientHello that came with the PROXY header): it moves to the carry.
 * False when out of memory. */
static bool tls_start(struct conn *c)
{
	size_t left = c->in_len - c->in_start;
	BIO *bio;

	c->ssl = SSL_new(tls_ctx);
	bio = BIO_new(conn_bio_method);
	if (!c->ssl || !bio) {
		BIO_free(bio);
		return false;
	}
	BIO_set_data(bio, c);
	BIO_set_init(bio, 1);
	SSL_set_bio(c->ssl, bio, bio);
	SSL_set_accept_state(c->ssl);
	if (left) {
		c->carry = malloc(left);
		if (!c->carry)
			return false;
		memcpy(c->carry, c->in + c->in_start, left);
		c->carry_len = left;
	}
	c->in_start = c->in_len = 0;
	return true;
}

/* ---- the session's socket */

/* Sends what it can of the pending replies. False when the socket failed. */
static bool conn_flush(struct conn *c)
{
	while (c->out_off < c->out_len && !c->wr_blocked) {
		ssize_t n = c->xprt->send(c, c->out + c->out_off, c->out_len - c->out_off);

		if (n > 0)
			c->out_off += (size_t)n;
		else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			c->wr_blocked = true;
		else if (!(n < 0 && errno == EINTR))
			return false;
	}
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
	} else if (c->out_off > 0) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	return true;
}

/* From STARTTLS (or the accept, or the PROXY header, with --implicit-tls)
 * to the end of the handshake: GO once TLS carries the session, MORE while
 * it waits on the socket, CLOSE when it failed. */
static enum step conn_tls_step(struct conn *c)
{
	int rc;

	if (c->state == CS_STARTTLS) {
		if (!conn_flush(c))
			return STEP_CLOSE;
		if (c->out_len)
			return STEP_MORE;
		/* RFC 2920 3.1: STARTTLS ends a pipelined group. What came after
		 * it is dropped, never executed under TLS (CVE-2011-0411). */
		c->in_start = c->in_len = 0;
		c->state = CS_TLS_ACCEPT;
	}
	if (!c->ssl && !tls_start(c))
		return STEP_CLOSE;
	rc = SSL_do_handshake(c->ssl);
	if (rc == 1) {
		c->xprt = &xprt_tls;
		/* the client's first records may have come with its Finished,
		 * their epoll edge already spent */
		c->rd_ready = true;
		c->wr_blocked = false;
		if (cfg.implicit_tls)
			greet(c);
		else
			c->state = CS_CMD;
		return STEP_GO;
	}
	switch (SSL_get_error(c->ssl, rc)) {
	case SSL_ERROR_WANT_READ:
		return STEP_MORE;
	case SSL_ERROR_WANT_WRITE:
		c->wr_blocked = true;
		return STEP_MORE;
	case SSL_ERROR_SYSCALL: /* the client went away: not worth a line */
		ERR_clear_error();
		return STEP_CLOSE;
	default:
		tls_log(c, "handshake");
		return STEP_CLOSE;
	}
}

static bool conn_tls_pending(const struct conn *c)
{
	return c->state == CS_STARTTLS || c->state == CS_TLS_ACCEPT;
}

/* Reads, acts and replies until the session waits on the network or a
 * timer, or is closed (after which c is gone). After the client's FIN the
 * input already read is still acted on and answered before the close. */
static void conn_run(struct conn *c)
{
	for (;;) {
		enum step st;

		if (conn_tls_pending(c)) {
			st = conn_tls_step(c);
			if (st == STEP_CLOSE) {
				conn_close(c);
				return;
			}
			if (st != STEP_GO)
				return;
		}
		st = conn_process(c);
		if (st == STEP_CLOSE) {
			conn_close(c);
			return;
		}
		if (conn_tls_pending(c))
			continue; /* the transport changes before anything more is read */
		if (c->rd_ready) {
			if (c->in_start > 0) {
				memmove(c->in, c->in + c->in_start, c->in_len - c->in_start);
				c->in_len -= c->in_start;
				c->in_start = 0;
			}
			if (c->in_len < SINK_IN_CAP) {
				size_t room = SINK_IN_CAP - c->in_len;
				bool drained;
				ssize_t n = c->xprt->recv(c, c->in + c->in_len, room, &drained);

				/* skip the read that would say EAGAIN, unless the FIN
				 * is already in (it brings no edge) */
				if (n > 0) {
					c->in_len += (size_t)n;
					if (drained && !c->rdhup)
						c->rd_ready = false;
					continue;
				}
				if (n < 0 && errno == EINTR)
					continue;
				if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
					conn_close(c);
					return;
				}
				c->eof = n == 0;
				c->rd_ready = false;
			}
		}
		if (!conn_flush(c)) {
			conn_close(c);
			return;
		}
		if (c->state == CS_CLOSING && c->out_len == 0) {
			if (c->eof) {
				conn_close(c);
				return;
			}
			c->xprt->shut(c);
			shutdown(c->fd, SHUT_WR);
			c->state = CS_LINGER;
			tq_arm(&c->w->linger_q, c);
			continue;
		}
		if (st == STEP_OUTFULL && SINK_OUT_CAP - c->out_len >= SINK_REPLY_MAX)
			continue;
		if (c->eof && c->out_len == 0 && st != STEP_OUTFULL) {
			conn_close(c);
			return;
		}
		return;
	}
}

static void conn_event(struct conn *c, uint32_t events)
{
	if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && !c->eof)
		c->rd_ready = true;
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		c->rdhup = true;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		c->wr_blocked = false;
	if (c->rd_needs_wr && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))) {
		c->rd_needs_wr = false;
		if (!c->eof)
			c->rd_ready = true;
	}
	if (c->wr_needs_rd && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
		c->wr_needs_rd = false;
		c->wr_blocked = false;
	}
	conn_run(c);
}

static void conn_close(struct conn *c)
{
	struct worker *w = c->w;

	tq_disarm(c);
	txn_reset(c);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	SSL_free(c->ssl);
	free(c->carry);
	close(c->fd);
	free(c->helo);
	for (int i = 0; i < XA_COUNT; i++)
		free(c->xclient[i]);
	free(c);
}

static void conn_new(struct worker *w, int fd, const struct sockaddr_storage *peer)
{
	static const int one = 1;
	struct epoll_event ev;
	struct conn *c;

	/* the buffers need no clearing: only [0..len) is ever read */
	c = malloc(sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	memset(c, 0, offsetof(struct conn, out));
	c->kind = SRC_CONN;
	c->fd = fd;
	c->w = w;
	c->xprt = &xprt_tcp;
	c->peer = *peer;
	c->txn.fd = -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
	ev.data.ptr = c;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		close(fd);
		free(c);
		return;
	}
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	atomic_fetch_add_explicit(&w->sessions, 1, memory_order_relaxed);
	if (cfg.accept_proxy)
		c->state = CS_PROXY; /* then greet() or, with --implicit-tls, the handshake */
	else if (cfg.implicit_tls)
		c->state = CS_TLS_ACCEPT;
	else
		greet(c);
	conn_run(c);
}

/* ---- workers */

static void listener_accept(struct worker *w, struct listener *l)
{
	for (int i = 0; i < SINK_ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd >= 0) {
			conn_new(w, fd, &ss);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if ((errno == EMFILE || errno == ENFILE) && w->spare_fd >= 0) {
			/* refuse one client, or the level-triggered listener spins */
			if (!w->emfile_logged)
				fprintf(stderr, "mxlb-sink: accept: %s\n", strerror(errno));
			w->emfile_logged = true;
			close(w->spare_fd);
			fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				close(fd);
			w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		}
		return;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event ev[SINK_EVENTS];
	bool stop = false;

	while (!stop) {
		uint64_t now = now_ms();
		int timeout = tq_timeout(&w->linger_q, now, tq_timeout(&w->delay_q, now, -1));
		int n = epoll_wait(w->epfd, ev, SINK_EVENTS, timeout);

		if (n < 0 && errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (int i = 0; i < n; i++) {
			enum src_kind *k = ev[i].data.ptr;

			switch (*k) {
			case SRC_LISTENER:
				listener_accept(w, (struct listener *)k);
				break;
			case SRC_WAKE:
				stop = true;
				break;
			case SRC_CONN:
				conn_event((struct conn *)k, ev[i].events);
				break;
			}
		}
		now = now_ms();
		tq_expire(&w->delay_q, now);
		tq_expire(&w->linger_q, now);
	}
	while (w->conns)
		conn_close(w->conns);
	for (int i = 0; i < cfg.nlisten; i++)
		close(w->listeners[i].fd);
	close(w->epfd);
	if (w->spare_fd >= 0)
		close(w->spare_fd);
	return NULL;
}

static int listener_open(const struct listen_addr *a)
{
	int one = 1;
	int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* One thread needs no port sharing, and without it a second sink on
	 * the same port is an error rather than a silent split of the load. */
	if (cfg.threads > 1 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto fail;
	if (a->sa.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->sa, a->len) < 0 || listen(fd, SINK_BACKLOG) < 0)
		goto fail;
	return fd;
fail:;
	int err = errno;

	close(fd);
	errno = err;
	return -1;
}

/* Opens the worker's epoll, wake-up eventfd and listeners. The first worker
 * resolves port 0 so that the others share the port it got. */
static void worker_setup(struct worker *w, int id)
{
	struct epoll_event ev;

	w->id = id;
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->epfd < 0 || w->wakefd < 0)
		die("epoll/eventfd: %s", strerror(errno));
	w->wake_kind = SRC_WAKE;
	ev.events = EPOLLIN;
	ev.data.ptr = &w->wake_kind;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wakefd, &ev) < 0)
		die("epoll_ctl: %s", strerror(errno));
	w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	w->delay_q = (struct tqueue){ .ms = cfg.greeting_delay_ms, .expire = greet_delay_expired };
	w->linger_q = (struct tqueue){ .ms = SINK_LINGER_MS, .expire = conn_close };
	for (int i = 0; i < cfg.nlisten; i++) {
		struct listen_addr *a = &cfg.listen[i];
		struct listener *l = &w->listeners[i];
		char text[SINK_ADDR_TEXT];

		l->kind = SRC_LISTENER;
		l->fd = listener_open(a);
		if (l->fd < 0) {
			addr_format_port(&a->sa, text, sizeof(text));
			die("listen on %s: %s", text, strerror(errno));
		}
		if (id == 0) {
			a->len = sizeof(a->sa);
			getsockname(l->fd, (struct sockaddr *)&a->sa, &a->len);
		}
		ev.events = EPOLLIN;
		ev.data.ptr = l;
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, l->fd, &ev) < 0)
			die("epoll_ctl: %s", strerror(errno));
	}
}

/* ---- counters */

struct totals {
	uint64_t sessions, messages, bytes;
};

static struct totals totals_sum(void)
{
	struct totals t = { 0, 0, 0 };

	for (int i = 0; i < cfg.threads; i++) {
		t.sessions += atomic_load_explicit(&workers[i].sessions, memory_order_relaxed);
		t.messages += atomic_load_explicit(&workers[i].messages, memory_order_relaxed);
		t.bytes += atomic_load_explicit(&workers[i].bytes, memory_order_relaxed);
	}
	return t;
}

/* Replaces --stats-file whole, so a reader never sees a partial line. */
static void stats_write(const struct totals *t)
{
	char tmp[PATH_MAX];
	FILE *f;
	int err;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", cfg.stats_file, (int)sink_pid);
	f = fopen(tmp, "we");
	if (!f) {
		fprintf(stderr, "mxlb-sink: %s: %s\n", tmp, strerror(errno));
		return;
	}
	fprintf(f, "sessions=%" PRIu64 " messages=%" PRIu64 " bytes=%" PRIu64 "\n", t->sessions,
		t->messages, t->bytes);
	err = ferror(f);
	if (fclose(f) != 0 || err || rename(tmp, cfg.stats_file) != 0) {
		fprintf(stderr, "mxlb-sink: %s: %s\n", cfg.stats_file, strerror(errno));
		unlink(tmp);
	}
}

/* ---- options */

static void usage(FILE *f)
{
	fputs("usage: mxlb-sink [options]\n"
	      "  --listen ADDR          127.0.0.1:2526 or [::1]:2526 (port 0: any free port);\n"
	      "                         repeatable; default 127.0.0.1:2526\n"
	      "  --hostname NAME        name in the greeting and EHLO reply (default sink.local)\n"
	      "  --banner TEXT          greeting text after the name (default ESMTP)\n"
	      "  --threads N            worker threads (default 1)\n"
	      "  --accept-proxy         require a PROXY v1 or v2 header first\n"
	      "  --xclient              advertise and accept XCLIENT\n"
	      "  --save-dir DIR         save each message as DIR/<pid>-<seq>.eml and .json\n"
	      "  --stats-file FILE      keep 'sessions=N messages=N bytes=N' in FILE\n"
	      "  --greeting-delay DUR   wait DUR (250ms, 2s, 1m) before the greeting\n"
	      "  --fail-greeting CODE   greet with CODE (400-599) and close\n"
	      "  --max-size BYTES       largest message (512, 64k, 10M); 0: no limit (default)\n"
	      "  --tls-cert FILE        certificate chain (PEM) for STARTTLS, with --tls-key\n"
	      "  --tls-key FILE         its private key (PEM)\n"
	      "  --implicit-tls         TLS from the first octet (port 465), no STARTTLS;\n"
	      "                         after the PROXY header with --accept-proxy\n",
	      f);
}

/* "127.0.0.1:2526" or "[::1]:2526", as in the configuration; port 0
 * (the kernel picks one, reported in the log) is allowed here too. */
static bool addr_parse(const char *s, struct listen_addr *a)
{
	char buf[300];
	size_t n = strlen(s);
	bool any_port = n >= 2 && n < sizeof(buf) && !strcmp(s + n - 2, ":0");
	struct cfg_addr ca;

	snprintf(buf, sizeof(buf), "%s", s);
	if (any_port)
		buf[n - 1] = '1';
	if (config_parse_addr(buf, &ca) < 0)
		return false;
	if (any_port)
		((struct sockaddr_in *)&ca.ss)->sin_port = 0; /* same place in sockaddr_in6 */
	memcpy(&a->sa, &ca.ss, ca.len);
	a->len = ca.len;
	return true;
}

/* Durations and sizes are written as in the configuration (config.h). */
static uint64_t opt_duration_ms(const char *s)
{
	uint32_t ms;

	if (strcmp(s, "0") == 0)
		return 0;
	if (config_parse_duration(s, &ms) < 0 || ms > SINK_DELAY_MAX_MS)
		die("bad duration '%s' (like 250ms, 2s, 1m)", s);
	return ms;
}

static uint64_t opt_size(const char *s)
{
	uint64_t v;

	if (config_parse_size(s, &v) < 0)
		die("bad size '%s' (like 512, 64k, 10M)", s);
	return v;
}

static int opt_int(const char *s, int min, int max, const char *what)
{
	uint64_t v;

	if (!parse_u64(s, strlen(s), &v) || v < (uint64_t)min || v > (uint64_t)max)
		die("bad %s '%s' (%d to %d)", what, s, min, max);
	return (int)v;
}

static const char *opt_text(const char *s, const char *what, bool spaces)
{
	if (!*s || strlen(s) > SINK_NAME_MAX || strpbrk(s, spaces ? "\r\n" : " \t\r\n"))
		die("bad %s '%s'", what, s);
	return s;
}

enum {
	OPT_LISTEN = 256,
	OPT_HOSTNAME,
	OPT_BANNER,
	OPT_THREADS,
	OPT_ACCEPT_PROXY,
	OPT_XCLIENT,
	OPT_SAVE_DIR,
	OPT_STATS_FILE,
	OPT_GREETING_DELAY,
	OPT_FAIL_GREETING,
	OPT_MAX_SIZE,
	OPT_TLS_CERT,
	OPT_TLS_KEY,
	OPT_IMPLICIT_TLS,
	OPT_HELP,
};

static void options_parse(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, OPT_LISTEN },
		{ "hostname", required_argument, NULL, OPT_HOSTNAME },
		{ "banner", required_argument, NULL, OPT_BANNER },
		{ "threads", required_argument, NULL, OPT_THREADS },
		{ "accept-proxy", no_argument, NULL, OPT_ACCEPT_PROXY },
		{ "xclient", no_argument, NULL, OPT_XCLIENT },
		{ "save-dir", required_argument, NULL, OPT_SAVE_DIR },
		{ "stats-file", required_argument, NULL, OPT_STATS_FILE },
		{ "greeting-delay", required_argument, NULL, OPT_GREETING_DELAY },
		{ "fail-greeting", required_argument, NULL, OPT_FAIL_GREETING },
		{ "max-size", required_argument, NULL, OPT_MAX_SIZE },
		{ "tls-cert", required_argument, NULL, OPT_TLS_CERT },
		{ "tls-key", required_argument, NULL, OPT_TLS_KEY },
		{ "implicit-tls", no_argument, NULL, OPT_IMPLICIT_TLS },
		{ "help", no_argument, NULL, OPT_HELP },
		{ NULL, 0, NULL, 0 },
	};
	int o;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case OPT_LISTEN:
			if (cfg.nlisten == SINK_LISTEN_MAX)
				die("at most %d --listen", SINK_LISTEN_MAX);
			if (!addr_parse(optarg, &cfg.listen[cfg.nlisten++]))
				die("bad --listen '%s' (like 127.0.0.1:2526 or [::1]:2526)", optarg);
			break;
		case OPT_HOSTNAME:
			cfg.hostname = opt_text(optarg, "--hostname", false);
			break;
		case OPT_BANNER:
			cfg.banner = opt_text(optarg, "--banner", true);
			break;
		case OPT_THREADS:
			cfg.threads = opt_int(optarg, 1, SINK_THREADS_MAX, "--threads");
			break;
		case OPT_ACCEPT_PROXY:
			cfg.accept_proxy = true;
			break;
		case OPT_XCLIENT:
			cfg.xclient = true;
			break;
		case OPT_SAVE_DIR:
			cfg.save_dir = optarg;
			break;
		case OPT_STATS_FILE:
			cfg.stats_file = optarg;
			break;
		case OPT_GREETING_DELAY:
			cfg.greeting_delay_ms = opt_duration_ms(optarg);
			break;
		case OPT_FAIL_GREETING:
			cfg.fail_greeting = opt_int(optarg, 400, 599, "--fail-greeting");
			break;
		case OPT_MAX_SIZE:
			cfg.max_size = opt_size(optarg);
			break;
		case OPT_TLS_CERT:
			cfg.tls_cert = optarg;
			break;
		case OPT_TLS_KEY:
			cfg.tls_key = optarg;
			break;
		case OPT_IMPLICIT_TLS:
			cfg.implicit_tls = true;
			break;
		case OPT_HELP:
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind < argc)
		die("unexpected argument '%s'", argv[optind]);
	if (cfg.nlisten == 0 && !addr_parse("127.0.0.1:2526", &cfg.listen[cfg.nlisten++]))
		die("bad default address");
	if (!cfg.tls_cert != !cfg.tls_key)
		die("--tls-cert and --tls-key go together");
	if (cfg.implicit_tls && !cfg.tls_cert)
		die("--implicit-tls needs --tls-cert and --tls-key");
	if (cfg.save_dir) {
		struct stat st;

		if (mkdir(cfg.save_dir, 0755) < 0 && errno != EEXIST)
			die("--save-dir %s: %s", cfg.save_dir, strerror(errno));
		if (stat(cfg.save_dir, &st) < 0 || !S_ISDIR(st.st_mode) ||
		    access(cfg.save_dir, W_OK) < 0)
			die("--save-dir %s: not a writable directory", cfg.save_dir);
	}
}

static void canned_set(struct canned *r, char *text)
{
	if (!text)
		die("out of memory");
	r->text = text;
	r->len = strlen(text);
}

static void canned_build(void)
{
	static const char xclient[] =
		"250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT\r\n";
	char *s, size[32] = "";

	if (asprintf(&s, "220 %s %s\r\n", cfg.hostname, cfg.banner) < 0)
		s = NULL;
	canned_set(&canned_greeting, s);
	if (asprintf(&s, "%d %s failing on purpose\r\n", cfg.fail_greeting, cfg.hostname) < 0)
		s = NULL;
	canned_set(&canned_fail, s);
	if (asprintf(&s, "250 %s\r\n", cfg.hostname) < 0)
		s = NULL;
	canned_set(&canned_helo, s);
	if (cfg.max_size)
		snprintf(size, sizeof(size), " %" PRIu64, cfg.max_size);
	/* with STARTTLS until the session is TLS, then without (RFC 3207 4.2) */
	for (int starttls = 0; starttls <= 1; starttls++) {
		if (asprintf(&s,
			     "250-%s\r\n250-PIPELINING\r\n250-SIZE%s\r\n%s%s"
			     "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-CHUNKING\r\n"
			     "250 SMTPUTF8\r\n",
			     cfg.hostname, size, cfg.xclient ? xclient : "",
			     starttls ? "250-STARTTLS\r\n" : "") < 0)
			s = NULL;
		canned_set(starttls ? &canned_ehlo_starttls : &canned_ehlo, s);
	}
}

/* The SSL_CTX all sessions share, from --tls-cert and --tls-key; a file
 * that does not load is fatal, named in the message. */
static void tls_init(void)
{
	BIO_METHOD *m;
	uint32_t e;

	if (!cfg.tls_cert)
		return;
	tls_ctx = SSL_CTX_new(TLS_method());
	m = BIO_meth_new(BIO_TYPE_SOURCE_SINK | BIO_get_new_index(), "mxlb-sink conn");
	if (!tls_ctx || !m || !BIO_meth_set_read(m, conn_bio_read) ||
	    !BIO_meth_set_write(m, conn_bio_write) || !BIO_meth_set_ctrl(m, conn_bio_ctrl))
		die("TLS setup: %s", tls_error());
	conn_bio_method = m;
	SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(tls_ctx,
			 SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* no server-side session cache to lock across threads; tickets still
	 * let clients resume */
	SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
	if (!SSL_CTX_use_certificate_chain_file(tls_ctx, cfg.tls_cert))
		die("--tls-cert %s: cannot load the certificate: %s", cfg.tls_cert, tls_error());
	if (!SSL_CTX_use_PrivateKey_file(tls_ctx, cfg.tls_key, SSL_FILETYPE_PEM)) {
		e = ERR_peek_error();
		if (ERR_GET_LIB(e) == ERR_LIB_X509 &&
		    ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
			die("--tls-key %s does not match --tls-cert %s", cfg.tls_key, cfg.tls_cert);
		die("--tls-key %s: cannot load the private key: %s", cfg.tls_key, tls_error());
	}
	if (!SSL_CTX_check_private_key(tls_ctx))
		die("--tls-key %s does not match --tls-cert %s", cfg.tls_key, cfg.tls_cert);
}

/* Benchmarks open many sessions: take the hard limit on descriptors. */
static void nofile_raise(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	struct timespec tick = { 0, SINK_STATS_MS * 1000000L };
	struct totals last = { UINT64_MAX, 0, 0 }, now;
	char line[SINK_LISTEN_MAX * (SINK_ADDR_TEXT + 1) + 64];
	size_t off;
	sigset_t sigs;

	options_parse(argc, argv);
	tls_init();
	canned_build();
	sink_pid = getpid();
	nofile_raise();
	signal(SIGPIPE, SIG_IGN);
	/* workers inherit the mask: only the main thread takes these */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	for (int i = 0; i < cfg.threads; i++)
		worker_setup(&workers[i], i);
	off = (size_t)snprintf(line, sizeof(line), "mxlb-sink listening on");
	for (int i = 0; i < cfg.nlisten; i++) {
		char text[SINK_ADDR_TEXT];

		addr_format_port(&cfg.listen[i].sa, text, sizeof(text));
		off += (size_t)snprintf(line + off, sizeof(line) - off, " %s", text);
	}
	fprintf(stderr, "%s\n", line);
	for (int i = 0; i < cfg.threads; i++) {
		int err = pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);

		if (err)
			die("pthread_create: %s", strerror(err));
	}
	if (cfg.stats_file) {
		last = totals_sum();
		stats_write(&last);
	}

	for (;;) {
		int sig = sigtimedwait(&sigs, NULL, &tick);

		if (sig == SIGINT || sig == SIGTERM)
			break;
		if (!cfg.stats_file)
			continue;
		now = totals_sum();
		if (memcmp(&now, &last, sizeof(now)) != 0) {
			stats_write(&now);
			last = now;
		}
	}

	for (int i = 0; i < cfg.threads; i++) {
		uint64_t one = 1;

		if (write(workers[i].wakefd, &one, sizeof(one)) < 0)
			die("eventfd: %s", strerror(errno));
	}
	for (int i = 0; i < cfg.threads; i++) {
		pthread_join(workers[i].thread, NULL);
		close(workers[i].wakefd);
	}
	now = totals_sum();
	if (cfg.stats_file)
		stats_write(&now);
	printf("sink: sessions=%" PRIu64 " messages=%" PRIu64 " bytes=%" PRIu64 "\n", now.sessions,
	       now.messages, now.bytes);
	return fflush(stdout) == 0 ? 0 : 2;
}
