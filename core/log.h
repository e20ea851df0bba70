/* log.h - one line per event on stderr, as text key=value or JSON.
 *
 * A line is built with log_begin(), fields added with log_kv_*(), and
 * written at once with log_end(), so lines from several workers never
 * interleave. Values are escaped; nothing here allocates.
 *
 * Values pass through as UTF-8 when they are valid UTF-8; every byte that
 * is not part of a valid sequence, and every control character, becomes
 * the four characters \xHH in both formats (JSON's \u00HH would name the
 * character U+00HH instead, turning one invalid byte into a different,
 * valid letter). A missing value (NULL, log_kv_null()) is JSON null, and
 * "-" in text, where a value that is "-" itself is written quoted.
 *
 * When stderr is the journal ($JOURNAL_STREAM names stderr's device and
 * inode, systemd.exec(5)), every line, text or JSON, starts with its
 * sd-daemon(3) priority: <3> error, <4> warn, <6> info, <7> debug.
 * journald strips it, so the stored message is the bare line.
 */
#ifndef MXLB_LOG_H
#define MXLB_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

#define LOG_LINE_MAX 2048

struct logline {
	char buf[LOG_LINE_MAX];
	size_t len;
	bool json;
	bool full; /* a field did not fit: the line is cut there, still well formed */
};

/* The level, the format, and whether stderr is the journal (read again at
 * each call). Before the first call: info, text, no prefix. Any thread,
 * also while others log (a reload). */
void log_setup(enum log_level level, bool json);
bool log_enabled(enum log_level level);
bool log_is_json(void);

/* Returns false (and the line is to be dropped) when level is not logged. */
bool log_begin(struct logline *ll, enum log_level level, const char *event);
/* val NULL: a missing value, as log_kv_null(). */
void log_kv_str(struct logline *ll, const char *key, const char *val);
void log_kv_strn(struct logline *ll, const char *key, const char *val, size_t len);
void log_kv_null(struct logline *ll, const char *key);
void log_kv_u64(struct logline *ll, const char *key, uint64_t val);
void log_kv_i64(struct logline *ll, const char *key, int64_t val);
void log_kv_ms(struct logline *ll, const char *key, uint64_t usec);
void log_end(struct logline *ll);

/* A whole line with one "msg" field, printf-style. */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_error(ev, ...) log_msg(LOG_ERROR, ev, __VA_ARGS__)
#define log_warn(ev, ...) log_msg(LOG_WARN, ev, __VA_ARGS__)
#define log_info(ev, ...) log_msg(LOG_INFO, ev, __VA_ARGS__)
#define log_debug(ev, ...)                                   \
	do {                                                 \
		if (log_enabled(LOG_DEBUG))                  \
			log_msg(LOG_DEBUG, ev, __VA_ARGS__); \
	} while (0)

/* Where the lines go: stderr unless a test says otherwise (fd; -1 for
 * stderr again). */
void log_set_fd(int fd);

/* Monotonic time in microseconds. */
uint64_t clock_usec(void);

#endif
