/* log.h - one line per event on stderr, as text key=value or JSON.
 *
 * A line is built with log_begin(), fields added with log_kv_*(), and
 * written at once with log_end(), so lines from several workers never
 * interleave. Values are escaped; nothing here allocates.
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
};

void log_setup(enum log_level level, bool json);
bool log_enabled(enum log_level level);

/* Returns false (and the line is to be dropped) when level is not logged. */
bool log_begin(struct logline *ll, enum log_level level, const char *event);
void log_kv_str(struct logline *ll, const char *key, const char *val);
void log_kv_strn(struct logline *ll, const char *key, const char *val, size_t len);
void log_kv_u64(struct logline *ll, const char *key, uint64_t val);
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

/* Monotonic time in microseconds. */
uint64_t clock_usec(void);

#endif
