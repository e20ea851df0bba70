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
 * network only through the session's transport (struct sink_xprt: plain TCP or
 * TLS), so the SMTP code never asks whether TLS is on. A session reaches
 * TLS through CS_STARTTLS (the 220 goes out in clear text, input pipelined
 * after STARTTLS is dropped) or at once for --implicit-tls, and then
 * CS_TLS_ACCEPT until the handshake is done. One SSL_CTX serves all
 * threads.
 */
#include "bench/tool.h"
#include "config/config.h"
#include "proxy/proxy_proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define SINK_LINE_MAX 4096 /* a command line, CRLF included; longer gets 500 */
#define SINK_IN_CAP 16384  /* input buffer: several full command lines */
#define SINK_OUT_CAP 8192
#define SINK_REPLY_MAX 1024	/* the longest reply (EHLO); kept free before each step */
#define SINK_RCPT_MAX 1000	/* RFC 5321 4.5.3.1.8 asks for at least 100 */
#define SINK_RCPTS_OCTETS 65536 /* recorded recipient addresses per transaction */
#define SINK_NAME_MAX 255	/* --hostname, --banner */
#define SINK_LISTEN_MAX 16
#define SINK_THREADS_MAX 64
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
	int rcvbuf, mss; /* 0: the kernel's */
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

/* ---- types */

struct sink_worker;
struct sink_conn;

struct sink_listener {
	struct tool_source src;
	int fd;
	struct sink_worker *w;
};

struct sink_worker {
	int id;
	struct tool_loop loop;
	bool stop;    /* the main thread woke the loop: the sink is stopping */
	int spare_fd; /* given up to shed a connection when out of descriptors */
	bool emfile_logged;
	struct sink_listener listeners[SINK_LISTEN_MAX];
	pthread_t thread;
	struct tool_list conns;		      /* every session, so shutdown frees them */
	struct tool_tqueue delay_q, linger_q; /* --greeting-delay; SINK_LINGER_MS */
	uint64_t tmp_seq;
	/* written by this worker only, summed by the main thread */
	_Alignas(64) _Atomic uint64_t sessions;
	_Atomic uint64_t messages;
	_Atomic uint64_t bytes;
};

static struct sink_worker workers[SINK_THREADS_MAX];

enum conn_state {
	CS_PROXY,      /* waiting for the PROXY header */
	CS_GREET_WAIT, /* --greeting-delay running; input is buffered, not read */
	CS_CMD,
	CS_DATA,
	CS_BDAT,       /* reading bdat_left more chunk octets */
	CS_STARTTLS,   /* 220 queued in clear text; then the rest of the input is dropped */
	CS_TLS_ACCEPT, /* TLS handshake running; nothing is read as SMTP */
	CS_CLOSING,    /* last reply queued; shut down once it is sent */
	CS_LINGER,     /* write side shut; discard input until the client closes */
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
	bool active;	 /* MAIL accepted */
	char *mail_from; /* the path without angle brackets */
	char *mail_params;
	char *rcpts; /* addresses, each NUL-terminated */
	size_t rcpts_len, rcpts_cap;
	unsigned nrcpt;
	bool bdat;	 /* the body comes in BDAT chunks */
	uint64_t size;	 /* message octets so far */
	bool too_big;	 /* over --max-size: the rest is counted no more */
	bool failed;	 /* the temporary file could not be written */
	int fd;		 /* temporary .eml with --save-dir, else -1 */
	uint64_t tmp_id; /* names the temporary files; 0: none exist */
};

/* Where session bytes meet the socket. recv: n > 0 octets, 0 at the end of
 * the stream, or -1 with errno (EAGAIN: nothing more for now); *drained
 * says the transport holds no more input, so only a new epoll edge brings
 * some. send: as send(2). shut: before the write side is shut down. */
struct sink_xprt {
	ssize_t (*recv)(struct sink_conn *c, void *buf, size_t len, bool *drained);
	ssize_t (*send)(struct sink_conn *c, const void *buf, size_t len);
	void (*shut)(struct sink_conn *c);
};

/* How a TLS stream ended, kept so that every later read says the same. */
enum tls_end { TLS_OPEN, TLS_EOF, TLS_BROKEN };

struct sink_conn {
	struct tool_source src;
	int fd;
	struct sink_worker *w;
	const struct sink_xprt *xprt;
	struct tool_link link;	 /* w->conns */
	struct tool_timer timer; /* in w->delay_q or w->linger_q */

	enum conn_state state;
	bool rd_ready;	 /* the socket may hold input: read until EAGAIN */
	bool eof;	 /* the client's FIN was read: read no more */
	bool rdhup;	 /* epoll reported the FIN (or an error): read until EOF */
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
	STEP_GO,      /* progress made: go on */
	STEP_MORE,    /* the input holds nothing more to act on yet */
	STEP_OUTFULL, /* replies wait to be sent before more commands are read */
	STEP_CLOSE,   /* close without a word (bad PROXY header) */
};

static void conn_run(struct sink_conn *c);
static void conn_close(struct sink_conn *c);

/* ---- replies */

/* Callers keep SINK_REPLY_MAX octets free before each step, and no reply
 * is longer: truncation here is a bug guard, never a path taken. */
static void reply(struct sink_conn *c, const char *s, size_t n)
{
	size_t room = SINK_OUT_CAP - c->out_len;

	if (n > room)
		n = room;
	memcpy(c->out + c->out_len, s, n);
	c->out_len += n;
}

#define REPLY(c, lit) reply((c), lit "\r\n", sizeof(lit "\r\n") - 1)

static void reply_canned(struct sink_conn *c, const struct canned *r)
{
	reply(c, r->text, r->len);
}

static void replyf(struct sink_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void replyf(struct sink_conn *c, const char *fmt, ...)
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
static void session_client(const struct sink_conn *c, char *addr, size_t cap, unsigned *port)
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

static void session_set_helo(struct sink_conn *c, const char *name)
{
	free(c->helo);
	c->helo = name ? tool_xstrdup(name) : NULL;
}

/* ---- transactions and saved messages */

static void tmp_path(char *buf, size_t cap, const struct sink_conn *c, const char *ext)
{
	snprintf(buf, cap, "%s/.tmp-%d-%d-%" PRIu64 ".%s", cfg.save_dir, (int)sink_pid, c->w->id,
		 c->txn.tmp_id, ext);
}

/* Ends the transaction, removing any temporary file. */
static void txn_reset(struct sink_conn *c)
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
static bool txn_open(struct sink_conn *c)
{
	struct txn *t = &c->txn;
	char path[PATH_MAX];

	if (!cfg.save_dir || t->fd >= 0)
		return true;
	t->tmp_id = ++c->w->tmp_seq;
	tmp_path(path, sizeof(path), c, "eml");
	t->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (t->fd < 0) {
		tool_log("%s: %s", path, strerror(errno));
		t->failed = true;
		return false;
	}
	return true;
}

/* Message octets, in order. Past --max-size they are dropped, not stored. */
static void txn_write(struct sink_conn *c, const char *p, size_t n)
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
			tool_log("writing a message: %s", strerror(errno));
			t->failed = true;
			break;
		}
		p += w;
		n -= (size_t)w;
	}
}

static void txn_json(FILE *f, const struct sink_conn *c, const char *id)
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
static bool txn_save(struct sink_conn *c, const char *id)
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
static void txn_finish(struct sink_conn *c)
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
			tool_log("saving message %s: %s", id, strerror(errno));
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

/* The SIZE=N MAIL parameter, if any and well-formed. */
static bool mail_param_size(const char *params, uint64_t *size)
{
	while (*params) {
		size_t len = strcspn(params, " ");

		if (len > 5 && strncasecmp(params, "SIZE=", 5) == 0)
			return tool_parse_u64(params + 5, len - 5, size);
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

	if (!tool_parse_u64(arg, len, size))
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

static const char *check_helo(const struct sink_conn *c)
{
	return c->helo ? NULL : "503 5.5.1 Error: send HELO/EHLO first\r\n";
}

static const char *check_no_mail(const struct sink_conn *c)
{
	const char *err = check_helo(c);

	if (err)
		return err;
	return c->txn.active ? "503 5.5.1 Error: nested MAIL command\r\n" : NULL;
}

static const char *check_mail(const struct sink_conn *c)
{
	const char *err = check_helo(c);

	if (err)
		return err;
	return c->txn.active ? NULL : "503 5.5.1 Error: need MAIL command\r\n";
}

static const char *check_rcpt(const struct sink_conn *c)
{
	const char *err = check_mail(c);

	if (err)
		return err;
	return c->txn.nrcpt ? NULL : "503 5.5.1 Error: need RCPT command\r\n";
}

static const char *check_data(const struct sink_conn *c)
{
	const char *err = check_rcpt(c);

	if (err)
		return err;
	return c->txn.bdat ? "503 5.5.1 Error: DATA after BDAT\r\n" : NULL;
}

static void cmd_ehlo(struct sink_conn *c, char *arg)
{
	if (!*arg) {
		REPLY(c, "501 5.5.4 Syntax: EHLO hostname");
		return;
	}
	txn_reset(c);
	session_set_helo(c, arg);
	reply_canned(c, tls_ctx && !c->ssl ? &canned_ehlo_starttls : &canned_ehlo);
}

static void cmd_helo(struct sink_conn *c, char *arg)
{
	if (!*arg) {
		REPLY(c, "501 5.5.4 Syntax: HELO hostname");
		return;
	}
	txn_reset(c);
	session_set_helo(c, arg);
	reply_canned(c, &canned_helo);
}

static void cmd_mail(struct sink_conn *c, char *arg)
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
	c->txn.mail_from = tool_xstrdup(addr);
	c->txn.mail_params = tool_xstrdup(params);
	REPLY(c, "250 2.1.0 Ok");
}

static void cmd_rcpt(struct sink_conn *c, char *arg)
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
			tool_die("out of memory");
		t->rcpts = p;
		t->rcpts_cap = cap;
	}
	memcpy(t->rcpts + t->rcpts_len, addr, n);
	t->rcpts_len += n;
	t->nrcpt++;
	REPLY(c, "250 2.1.5 Ok");
}

static void cmd_data(struct sink_conn *c, char *arg)
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
static void bdat_done(struct sink_conn *c)
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
static void cmd_bdat(struct sink_conn *c, char *arg)
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

static void cmd_rset(struct sink_conn *c, char *arg)
{
	(void)arg;
	txn_reset(c);
	REPLY(c, "250 2.0.0 Ok");
}

static void cmd_noop(struct sink_conn *c, char *arg)
{
	(void)arg;
	REPLY(c, "250 2.0.0 Ok");
}

static void cmd_help(struct sink_conn *c, char *arg)
{
	(void)arg;
	REPLY(c, "214 2.0.0 mxlb-sink: see RFC 5321");
}

static void cmd_quit(struct sink_conn *c, char *arg)
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
static void cmd_starttls(struct sink_conn *c, char *arg)
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
static void cmd_xclient(struct sink_conn *c, char *arg)
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
			c->xclient[i] = tool_xstrdup(vals[i]);
		}
	}
	c->has_xclient = true;
	txn_reset(c);
	session_set_helo(c, NULL);
	reply_canned(c, &canned_greeting);
}

static const struct command {
	const char *verb;
	const char *(*check)(const struct sink_conn *c); /* NULL or the error reply */
	void (*proceed)(struct sink_conn *c, char *arg);
} commands[] = {
	{ "EHLO", NULL, cmd_ehlo },	     { "HELO", NULL, cmd_helo },
	{ "MAIL", check_no_mail, cmd_mail }, { "RCPT", check_mail, cmd_rcpt },
	{ "DATA", check_data, cmd_data },    { "BDAT", NULL, cmd_bdat },
	{ "RSET", NULL, cmd_rset },	     { "NOOP", NULL, cmd_noop },
	{ "QUIT", NULL, cmd_quit },	     { "HELP", NULL, cmd_help },
	{ "STARTTLS", NULL, cmd_starttls },  { "XCLIENT", NULL, cmd_xclient },
};

/* One command line, its line end cut off and NUL-terminated. */
static void command_run(struct sink_conn *c, char *line, size_t len)
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

static void greet_now(struct sink_conn *c)
{
	if (cfg.fail_greeting) {
		reply_canned(c, &canned_fail);
		c->state = CS_CLOSING;
	} else {
		reply_canned(c, &canned_greeting);
		c->state = CS_CMD;
	}
}

static void greet(struct sink_conn *c)
{
	if (cfg.greeting_delay_ms) {
		c->state = CS_GREET_WAIT;
		tool_timer_arm(&c->w->delay_q, &c->timer);
	} else {
		greet_now(c);
	}
}

static void greet_delay_expired(struct tool_timer *t)
{
	struct sink_conn *c = TOOL_CONTAINER(t, struct sink_conn, timer);

	greet_now(c);
	conn_run(c);
}

static enum step step_proxy(struct sink_conn *c, char *p, size_t avail, size_t *used)
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

static enum step step_command(struct sink_conn *c, char *p, size_t avail, size_t *used)
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

static enum step step_data(struct sink_conn *c, char *p, size_t avail, size_t *used)
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

static enum step step_bdat(struct sink_conn *c, char *p, size_t avail, size_t *used)
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
static enum step conn_process(struct sink_conn *c)
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

static ssize_t tcp_recv(struct sink_conn *c, void *buf, size_t len, bool *drained)
{
	ssize_t n = recv(c->fd, buf, len, 0);

	/* a short read emptied the socket: new input brings a new edge */
	*drained = n >= 0 && (size_t)n < len;
	return n;
}

static ssize_t tcp_send(struct sink_conn *c, const void *buf, size_t len)
{
	return send(c->fd, buf, len, MSG_NOSIGNAL);
}

static void tcp_shut(struct sink_conn *c)
{
	(void)c;
}

static const struct sink_xprt xprt_tcp = { tcp_recv, tcp_send, tcp_shut };

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

static void tls_log(const struct sink_conn *c, const char *what)
{
	char peer[SINK_ADDR_TEXT];

	addr_format_port(&c->peer, peer, sizeof(peer));
	tool_log("TLS %s with %s: %s", what, peer, tls_error());
}

/* SSL_read() until len octets or until the socket has nothing more.
 * BoringSSL keeps whole records it has read, so a short SSL_read() says
 * nothing about the socket: only WANT_READ tells an edge-triggered reader
 * that it may wait. The end of the stream is remembered (tls_end) and
 * reported after the octets that preceded it. */
static ssize_t tls_recv(struct sink_conn *c, void *buf, size_t len, bool *drained)
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
static ssize_t tls_send(struct sink_conn *c, const void *buf, size_t len)
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
static void tls_shut(struct sink_conn *c)
{
	SSL_shutdown(c->ssl);
	ERR_clear_error();
	c->xprt = &xprt_tcp;
}

static const struct sink_xprt xprt_tls = { tls_recv, tls_send, tls_shut };

/* The BIO under each SSL: the session's socket, read after the carry (see
 * struct sink_conn). EAGAIN becomes a retry, which SSL reports as WANT_*. */
static int conn_bio_read(BIO *b, char *out, int len)
{
	struct sink_conn *c = BIO_get_data(b);
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
	struct sink_conn *c = BIO_get_data(b);
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
static bool tls_start(struct sink_conn *c)
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
static bool conn_flush(struct sink_conn *c)
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
static enum step conn_tls_step(struct sink_conn *c)
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

static bool conn_tls_pending(const struct sink_conn *c)
{
	return c->state == CS_STARTTLS || c->state == CS_TLS_ACCEPT;
}

/* Reads, acts and replies until the session waits on the network or a
 * timer, or is closed (after which c is gone). After the client's FIN the
 * input already read is still acted on and answered before the close. */
static void conn_run(struct sink_conn *c)
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
			tool_timer_arm(&c->w->linger_q, &c->timer);
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

static void conn_event(struct tool_source *src, uint32_t events)
{
	struct sink_conn *c = TOOL_CONTAINER(src, struct sink_conn, src);

	if (tool_ev_readable(events) && !c->eof)
		c->rd_ready = true;
	if (tool_ev_ended(events))
		c->rdhup = true;
	if (tool_ev_writable(events))
		c->wr_blocked = false;
	if (c->rd_needs_wr && tool_ev_writable(events)) {
		c->rd_needs_wr = false;
		if (!c->eof)
			c->rd_ready = true;
	}
	if (c->wr_needs_rd && tool_ev_readable(events)) {
		c->wr_needs_rd = false;
		c->wr_blocked = false;
	}
	conn_run(c);
}

static void conn_close(struct sink_conn *c)
{
	tool_timer_disarm(&c->timer);
	txn_reset(c);
	tool_list_remove(&c->w->conns, &c->link);
	SSL_free(c->ssl);
	free(c->carry);
	close(c->fd);
	free(c->helo);
	for (int i = 0; i < XA_COUNT; i++)
		free(c->xclient[i]);
	free(c);
}

/* The linger after the last reply is over. */
static void conn_linger_expired(struct tool_timer *t)
{
	conn_close(TOOL_CONTAINER(t, struct sink_conn, timer));
}

static void conn_new(struct sink_worker *w, int fd, const struct sockaddr_storage *peer)
{
	struct sink_conn *c;

	/* the buffers need no clearing: only [0..len) is ever read */
	c = malloc(sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	memset(c, 0, offsetof(struct sink_conn, out));
	c->src.event = conn_event;
	c->fd = fd;
	c->w = w;
	c->xprt = &xprt_tcp;
	c->peer = *peer;
	c->txn.fd = -1;
	if (tool_loop_add_stream(&w->loop, fd, &c->src) < 0) {
		close(fd);
		free(c);
		return;
	}
	tool_list_push(&w->conns, &c->link);
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

static void listener_accept(struct tool_source *src, uint32_t events)
{
	struct sink_listener *l = TOOL_CONTAINER(src, struct sink_listener, src);
	struct sink_worker *w = l->w;

	(void)events;
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
				tool_log("accept: %s", strerror(errno));
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

static void worker_woken(struct tool_loop *l)
{
	TOOL_CONTAINER(l, struct sink_worker, loop)->stop = true;
}

static void *worker_main(void *arg)
{
	struct sink_worker *w = arg;

	while (!w->stop)
		tool_loop_poll(&w->loop);
	while (w->conns.head)
		conn_close(TOOL_CONTAINER(w->conns.head, struct sink_conn, link));
	for (int i = 0; i < cfg.nlisten; i++)
		close(w->listeners[i].fd);
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
	/* set before listen(), so that accepted connections start with them:
	 * the window and MSS are agreed in the handshake */
	if (cfg.rcvbuf &&
	    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &cfg.rcvbuf, sizeof(cfg.rcvbuf)) < 0)
		goto fail;
	if (cfg.mss && setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &cfg.mss, sizeof(cfg.mss)) < 0)
		goto fail;
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
static void worker_setup(struct sink_worker *w, int id)
{
	w->id = id;
	tool_loop_init(&w->loop, worker_woken);
	w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	tool_tq_init(&w->loop, &w->delay_q, cfg.greeting_delay_ms * 1000000u, greet_delay_expired);
	tool_tq_init(&w->loop, &w->linger_q, SINK_LINGER_MS * 1000000ull, conn_linger_expired);
	for (int i = 0; i < cfg.nlisten; i++) {
		struct listen_addr *a = &cfg.listen[i];
		struct sink_listener *l = &w->listeners[i];
		char text[SINK_ADDR_TEXT];

		l->src.event = listener_accept;
		l->w = w;
		l->fd = listener_open(a);
		if (l->fd < 0) {
			addr_format_port(&a->sa, text, sizeof(text));
			tool_die("listen on %s: %s", text, strerror(errno));
		}
		if (id == 0) {
			a->len = sizeof(a->sa);
			getsockname(l->fd, (struct sockaddr *)&a->sa, &a->len);
		}
		if (tool_loop_add(&w->loop, l->fd, EPOLLIN, &l->src) < 0)
			tool_die("epoll_ctl: %s", strerror(errno));
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
		tool_log("%s: %s", tmp, strerror(errno));
		return;
	}
	fprintf(f, "sessions=%" PRIu64 " messages=%" PRIu64 " bytes=%" PRIu64 "\n", t->sessions,
		t->messages, t->bytes);
	err = ferror(f);
	if (fclose(f) != 0 || err || rename(tmp, cfg.stats_file) != 0) {
		tool_log("%s: %s", cfg.stats_file, strerror(errno));
		unlink(tmp);
	}
}

/* ---- options */

static const char usage[] =
	"usage: mxlb-sink [options]\n"
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
	"                         after the PROXY header with --accept-proxy\n"
	"  --rcvbuf BYTES         SO_RCVBUF of every connection (a small window)\n"
	"  --mss BYTES            TCP_MAXSEG of every connection (88 to 32767)\n";

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

static const char *opt_text(const char *s, const char *what, bool spaces)
{
	if (!*s || strlen(s) > SINK_NAME_MAX || strpbrk(s, spaces ? "\r\n" : " \t\r\n"))
		tool_die("bad %s '%s'", what, s);
	return s;
}

enum {
	OPT_LISTEN = TOOL_OPT_FIRST,
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
	OPT_RCVBUF,
	OPT_MSS,
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
		{ "rcvbuf", required_argument, NULL, OPT_RCVBUF },
		{ "mss", required_argument, NULL, OPT_MSS },
		{ "help", no_argument, NULL, TOOL_OPT_HELP },
		{ NULL, 0, NULL, 0 },
	};
	int o;

	while ((o = tool_getopt(argc, argv, opts, usage)) != -1) {
		switch (o) {
		case OPT_LISTEN:
			if (cfg.nlisten == SINK_LISTEN_MAX)
				tool_die("at most %d --listen", SINK_LISTEN_MAX);
			if (!addr_parse(optarg, &cfg.listen[cfg.nlisten++]))
				tool_die("bad --listen '%s' (like 127.0.0.1:2526 or [::1]:2526)",
					 optarg);
			break;
		case OPT_HOSTNAME:
			cfg.hostname = opt_text(optarg, "--hostname", false);
			break;
		case OPT_BANNER:
			cfg.banner = opt_text(optarg, "--banner", true);
			break;
		case OPT_THREADS:
			cfg.threads = (int)tool_opt_u64(optarg, 1, SINK_THREADS_MAX, "--threads");
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
			cfg.greeting_delay_ms = tool_opt_duration_ms(
				optarg, "duration", "250ms, 2s, 1m", SINK_DELAY_MAX_MS);
			break;
		case OPT_FAIL_GREETING:
			cfg.fail_greeting = (int)tool_opt_u64(optarg, 400, 599, "--fail-greeting");
			break;
		case OPT_MAX_SIZE:
			cfg.max_size = tool_opt_size(optarg, "size", "512, 64k, 10M", UINT64_MAX);
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
		case OPT_RCVBUF:
			cfg.rcvbuf = (int)tool_opt_size(optarg, "--rcvbuf", "4k, 64k", 1 << 30);
			break;
		case OPT_MSS:
			/* Linux refuses more than 32767 (MAX_TCP_WINDOW) */
			cfg.mss = (int)tool_opt_u64(optarg, 88, 32767, "--mss");
			break;
		}
	}
	if (cfg.nlisten == 0 && !addr_parse("127.0.0.1:2526", &cfg.listen[cfg.nlisten++]))
		tool_die("bad default address");
	if (!cfg.tls_cert != !cfg.tls_key)
		tool_die("--tls-cert and --tls-key go together");
	if (cfg.implicit_tls && !cfg.tls_cert)
		tool_die("--implicit-tls needs --tls-cert and --tls-key");
	if (cfg.save_dir) {
		struct stat st;

		if (mkdir(cfg.save_dir, 0755) < 0 && errno != EEXIST)
			tool_die("--save-dir %s: %s", cfg.save_dir, strerror(errno));
		if (stat(cfg.save_dir, &st) < 0 || !S_ISDIR(st.st_mode) ||
		    access(cfg.save_dir, W_OK) < 0)
			tool_die("--save-dir %s: not a writable directory", cfg.save_dir);
	}
}

static void canned_set(struct canned *r, char *text)
{
	if (!text)
		tool_die("out of memory");
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
		tool_die("TLS setup: %s", tls_error());
	conn_bio_method = m;
	SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(tls_ctx,
			 SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* no server-side session cache to lock across threads; tickets still
	 * let clients resume */
	SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
	if (!SSL_CTX_use_certificate_chain_file(tls_ctx, cfg.tls_cert))
		tool_die("--tls-cert %s: cannot load the certificate: %s", cfg.tls_cert,
			 tls_error());
	if (!SSL_CTX_use_PrivateKey_file(tls_ctx, cfg.tls_key, SSL_FILETYPE_PEM)) {
		e = ERR_peek_error();
		if (ERR_GET_LIB(e) == ERR_LIB_X509 &&
		    ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
			tool_die("--tls-key %s does not match --tls-cert %s", cfg.tls_key,
				 cfg.tls_cert);
		tool_die("--tls-key %s: cannot load the private key: %s", cfg.tls_key, tls_error());
	}
	if (!SSL_CTX_check_private_key(tls_ctx))
		tool_die("--tls-key %s does not match --tls-cert %s", cfg.tls_key, cfg.tls_cert);
}

int main(int argc, char **argv)
{
	struct totals last = { UINT64_MAX, 0, 0 }, now;
	char line[SINK_LISTEN_MAX * (SINK_ADDR_TEXT + 1) + 64];
	size_t off;
	sigset_t sigs;

	tool_init("mxlb-sink");
	options_parse(argc, argv);
	tls_init();
	canned_build();
	sink_pid = getpid();
	tool_nofile_raise(); /* benchmarks open many sessions */
	tool_signals_block(&sigs);

	for (int i = 0; i < cfg.threads; i++)
		worker_setup(&workers[i], i);
	off = (size_t)snprintf(line, sizeof(line), "mxlb-sink listening on");
	for (int i = 0; i < cfg.nlisten; i++) {
		char text[SINK_ADDR_TEXT];

		addr_format_port(&cfg.listen[i].sa, text, sizeof(text));
		off += (size_t)snprintf(line + off, sizeof(line) - off, " %s", text);
	}
	fprintf(stderr, "%s\n", line);
	for (int i = 0; i < cfg.threads; i++)
		tool_thread_start(&workers[i].thread, worker_main, &workers[i]);
	if (cfg.stats_file) {
		last = totals_sum();
		stats_write(&last);
	}

	while (!tool_signal_wait(&sigs, SINK_STATS_MS)) {
		if (!cfg.stats_file)
			continue;
		now = totals_sum();
		if (memcmp(&now, &last, sizeof(now)) != 0) {
			stats_write(&now);
			last = now;
		}
	}

	for (int i = 0; i < cfg.threads; i++)
		tool_loop_wake(&workers[i].loop);
	for (int i = 0; i < cfg.threads; i++) {
		pthread_join(workers[i].thread, NULL);
		tool_loop_close(&workers[i].loop);
	}
	now = totals_sum();
	if (cfg.stats_file)
		stats_write(&now);
	printf("sink: sessions=%" PRIu64 " messages=%" PRIu64 " bytes=%" PRIu64 "\n", now.sessions,
	       now.messages, now.bytes);
	return fflush(stdout) == 0 ? 0 : 2;
}
