/* log.c - see log.h. */
#include "core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Kept free at the end of every line: a JSON string's closing quote, the
 * closing brace and the newline. */
#define LOG_TAIL 3
/* What a key needs beyond its name to be written at all: its punctuation
 * and the longest number or null, so that a key is never left without
 * its value. */
#define LOG_KEY_SLACK 32

/* Set by the main thread (start, reload), read by every worker: atomic,
 * so a reload may change them under running workers. A line keeps the
 * format it began with (ll->json). */
static atomic_int log_level_max = LOG_INFO;
static atomic_bool log_json;
static atomic_bool log_journal;
static atomic_int log_fd = STDERR_FILENO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };
/* sd-daemon(3) priorities, by enum log_level */
static const char *const level_prefix[] = { "<3>", "<4>", "<6>", "<7>" };

/* systemd.exec(5): $JOURNAL_STREAM is "DEVICE:INODE" of the stream it
 * connected; only when that is still our stderr (not redirected since) do
 * the lines go to journald. */
static bool stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	int used = 0;

	if (!js || sscanf(js, "%llu:%llu%n", &dev, &ino, &used) != 2 || js[used])
		return false;
	return fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

void log_setup(enum log_level level, bool json)
{
	atomic_store(&log_level_max, (int)level);
	atomic_store(&log_json, json);
	atomic_store(&log_journal, stderr_is_journal());
}

void log_set_fd(int fd)
{
	atomic_store(&log_fd, fd < 0 ? STDERR_FILENO : fd);
}

bool log_enabled(enum log_level level)
{
	return (int)level <= atomic_load_explicit(&log_level_max, memory_order_relaxed);
}

bool log_is_json(void)
{
	return atomic_load_explicit(&log_json, memory_order_relaxed);
}

uint64_t clock_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Room left for fields, the tail kept aside. */
static size_t room(const struct logline *ll)
{
	return ll->len + LOG_TAIL < sizeof(ll->buf) ? sizeof(ll->buf) - LOG_TAIL - ll->len : 0;
}

/* All of s or nothing, so a line is cut between units, never inside an
 * escape or a UTF-8 sequence. */
static bool put(struct logline *ll, const char *s, size_t n)
{
	if (ll->full || n > room(ll)) {
		ll->full = true;
		return false;
	}
	memcpy(ll->buf + ll->len, s, n);
	ll->len += n;
	return true;
}

/* The length of the valid UTF-8 sequence (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF) at s, or 0 when s[0] does not start
 * one. Only called for bytes >= 0x80. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t len;

	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

/* The value, escaped; the closing quote always fits (LOG_TAIL). */
static void put_escaped(struct logline *ll, const char *s, size_t n, bool quote)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;

	if (quote && !put(ll, "\"", 1))
		return;
	for (size_t i = 0; i < n && !ll->full;) {
		unsigned char c = u[i];
		char esc[7];
		size_t len;

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			put(ll, esc, 2);
			i++;
		} else if (c >= 0x20 && c < 0x7f) {
			put(ll, (const char *)&c, 1);
			i++;
		} else if (c >= 0x80 && (len = utf8_len(u + i, n - i))) {
			put(ll, s + i, len);
			i += len;
		} else if (ll->json && c < 0x20) {
			/* a control character is that code point: JSON's own escape */
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			put(ll, esc, 6);
			i++;
		} else {
			/* DEL, or a byte of no character: its value as text (in JSON
			 * the backslash itself escaped) */
			size_t k = 0;

			esc[k++] = '\\';
			if (ll->json)
				esc[k++] = '\\';
			esc[k++] = 'x';
			esc[k++] = hex[c >> 4];
			esc[k++] = hex[c & 15];
			put(ll, esc, k);
			i++;
		}
	}
	if (quote) {
		/* the tail keeps room for it */
		ll->buf[ll->len++] = '"';
	}
}

/* false when the key does not fit with a value: the field is left out. */
static bool put_key(struct logline *ll, const char *key)
{
	size_t klen = strlen(key);

	if (ll->full || klen + LOG_KEY_SLACK > room(ll)) {
		ll->full = true;
		return false;
	}
	if (ll->json) {
		put(ll, ",\"", 2);
		put(ll, key, klen);
		put(ll, "\":", 2);
	} else {
		put(ll, " ", 1);
		put(ll, key, klen);
		put(ll, "=", 1);
	}
	return true;
}

bool log_begin(struct logline *ll, enum log_level level, const char *event)
{
	struct timespec ts;
	struct tm tm;
	char when[96];

	if (!log_enabled(level))
		return false;
	ll->len = 0;
	ll->full = false;
	ll->json = atomic_load_explicit(&log_json, memory_order_relaxed);
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
	if (atomic_load_explicit(&log_journal, memory_order_relaxed))
		put(ll, level_prefix[level], 3);
	if (ll->json) {
		put(ll, "{\"ts\":\"", 7);
		put(ll, when, strlen(when));
		put(ll, "\"", 1);
	} else {
		put(ll, when, strlen(when));
	}
	log_kv_str(ll, "level", level_names[level]);
	log_kv_str(ll, "event", event);
	return true;
}

void log_kv_strn(struct logline *ll, const char *key, const char *val, size_t len)
{
	/* text: a bare "-" means no value, so a value "-" is quoted */
	bool quote = ll->json || len == 0 || (len == 1 && val[0] == '-');

	for (size_t i = 0; !quote && i < len; i++)
		if (val[i] == ' ' || val[i] == '"' || val[i] == '=' || val[i] == '\\' ||
		    (unsigned char)val[i] < 0x21 || val[i] == 0x7f)
			quote = true;
	if (put_key(ll, key))
		put_escaped(ll, val, len, quote);
}

void log_kv_null(struct logline *ll, const char *key)
{
	if (put_key(ll, key))
		put(ll, ll->json ? "null" : "-", ll->json ? 4 : 1);
}

void log_kv_str(struct logline *ll, const char *key, const char *val)
{
	if (!val)
		log_kv_null(ll, key);
	else
		log_kv_strn(ll, key, val, strlen(val));
}

void log_kv_u64(struct logline *ll, const char *key, uint64_t val)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)val);

	if (put_key(ll, key))
		put(ll, num, (size_t)n);
}

void log_kv_i64(struct logline *ll, const char *key, int64_t val)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%lld", (long long)val);

	if (put_key(ll, key))
		put(ll, num, (size_t)n);
}

void log_kv_ms(struct logline *ll, const char *key, uint64_t usec)
{
	char num[32];
	int n = snprintf(num, sizeof(num), "%llu.%03llu", (unsigned long long)(usec / 1000),
			 (unsigned long long)(usec % 1000));

	if (put_key(ll, key))
		put(ll, num, (size_t)n);
}

void log_end(struct logline *ll)
{
	ssize_t r;

	if (ll->json)
		ll->buf[ll->len++] = '}';
	ll->buf[ll->len++] = '\n';
	/* one write: lines of different workers never interleave */
	r = write(atomic_load_explicit(&log_fd, memory_order_relaxed), ll->buf, ll->len);
	(void)r;
}

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
	struct logline ll;
	char msg[1024];
	va_list ap;

	if (!log_begin(&ll, level, event))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_kv_str(&ll, "msg", msg);
	log_end(&ll);
}
