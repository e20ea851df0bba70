/* log.c - see log.h. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level log_level_max = LOG_INFO;
static bool log_json;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void log_setup(enum log_level level, bool json)
{
	log_level_max = level;
	log_json = json;
}

bool log_enabled(enum log_level level)
{
	return level <= log_level_max;
}

uint64_t clock_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void put(struct logline *ll, const char *s, size_t n)
{
	/* keep room for the closing brace and newline */
	size_t room = sizeof(ll->buf) - 3 - ll->len;

	if (n > room)
		n = room;
	memcpy(ll->buf + ll->len, s, n);
	ll->len += n;
}

static void put_escaped(struct logline *ll, const char *s, size_t n, bool quote)
{
	static const char hex[] = "0123456789abcdef";

	if (quote)
		put(ll, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[6];

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			put(ll, esc, 2);
		} else if (c < 0x20 || c >= 0x7f) {
			esc[0] = '\\';
			esc[1] = 'x';
			esc[2] = hex[c >> 4];
			esc[3] = hex[c & 15];
			if (ll->json) {
				esc[1] = 'u';
				memcpy(esc + 2, "00", 2);
				esc[4] = hex[c >> 4];
				esc[5] = hex[c & 15];
				put(ll, esc, 6);
			} else {
				put(ll, esc, 4);
			}
		} else {
			put(ll, (const char *)&c, 1);
		}
	}
	if (quote)
		put(ll, "\"", 1);
}

static void put_key(struct logline *ll, const char *key)
{
	if (ll->json) {
		put(ll, ",\"", 2);
		put(ll, key, strlen(key));
		put(ll, "\":", 2);
	} else {
		put(ll, " ", 1);
		put(ll, key, strlen(key));
		put(ll, "=", 1);
	}
}

bool log_begin(struct logline *ll, enum log_level level, const char *event)
{
	struct timespec ts;
	struct tm tm;
	char when[96];

	if (!log_enabled(level))
		return false;
	ll->len = 0;
	ll->json = log_json;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
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
	bool quote = ll->json || len == 0;

	put_key(ll, key);
	for (size_t i = 0; !quote && i < len; i++)
		if (val[i] == ' ' || val[i] == '"' || val[i] == '=' ||
		    (unsigned char)val[i] < 0x21 || (unsigned char)val[i] >= 0x7f)
			quote = true;
	put_escaped(ll, val, len, quote);
}

void log_kv_str(struct logline *ll, const char *key, const char *val)
{
	if (!val)
		val = "-";
	log_kv_strn(ll, key, val, strlen(val));
}

void log_kv_u64(struct logline *ll, const char *key, uint64_t val)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)val);

	put_key(ll, key);
	put(ll, num, (size_t)n);
}

void log_kv_ms(struct logline *ll, const char *key, uint64_t usec)
{
	char num[32];
	int n = snprintf(num, sizeof(num), "%llu.%03llu", (unsigned long long)(usec / 1000),
			 (unsigned long long)(usec % 1000));

	put_key(ll, key);
	put(ll, num, (size_t)n);
}

void log_end(struct logline *ll)
{
	if (ll->json)
		ll->buf[ll->len++] = '}';
	ll->buf[ll->len++] = '\n';
	/* one write: lines of different workers never interleave */
	ssize_t r = write(STDERR_FILENO, ll->buf, ll->len);
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
