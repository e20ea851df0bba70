/* test_log.c - the logger (core/log.c): UTF-8 kept, invalid bytes and
 * control characters escaped, missing values as JSON null or "-", lines
 * cut cleanly at LOG_LINE_MAX, and the sd-daemon <N> prefix exactly when
 * $JOURNAL_STREAM names stderr.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/log.h"

static int pipefd[2];

static int setup(void **state)
{
	(void)state;
	if (pipe(pipefd) < 0)
		return -1;
	unsetenv("JOURNAL_STREAM");
	log_set_fd(pipefd[1]);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	log_set_fd(-1);
	log_setup(LOG_INFO, false);
	close(pipefd[0]);
	close(pipefd[1]);
	return 0;
}

/* The one line written since the last call, without its newline. */
static char *read_line(void)
{
	static char buf[LOG_LINE_MAX + 16];
	ssize_t n = read(pipefd[0], buf, sizeof(buf) - 1);

	assert_true(n > 0);
	buf[n] = '\0';
	assert_int_equal(buf[n - 1], '\n');
	assert_null(memchr(buf, '\n', (size_t)n - 1)); /* one line */
	buf[n - 1] = '\0';
	return buf;
}

/* The line after its timestamp: text lines start "<ts> level=". */
static const char *after_ts(const char *line)
{
	const char *p = strchr(line, ' ');

	assert_non_null(p);
	return p + 1;
}

static void one_of_each(void)
{
	struct logline ll;

	assert_true(log_begin(&ll, LOG_INFO, "t"));
	log_kv_str(&ll, "name", "caf\xc3\xa9");
	log_kv_str(&ll, "emoji", "\xf0\x9f\x93\xa7");
	log_kv_str(&ll, "bad", "a\xc3(b");
	log_kv_str(&ll, "overlong", "\xc0\xaf");
	log_kv_str(&ll, "surrogate", "\xed\xa0\x80");
	log_kv_str(&ll, "cut", "\xe2\x82");
	log_kv_str(&ll, "ctl",
		   "a\x01"
		   "b\x7f");
	log_kv_str(&ll, "quote", "say \"hi\" \\o/");
	log_kv_str(&ll, "none", NULL);
	log_kv_null(&ll, "also_none");
	log_kv_str(&ll, "dash", "-");
	log_kv_i64(&ll, "neg", -3);
	log_end(&ll);
}

static void test_json(void **state)
{
	char *line;

	(void)state;
	log_setup(LOG_INFO, true);
	one_of_each();
	line = read_line();
	assert_int_equal(line[0], '{');
	assert_int_equal(line[strlen(line) - 1], '}');
	assert_non_null(strstr(line, ",\"level\":\"info\",\"event\":\"t\","));
	/* valid UTF-8 as it is */
	assert_non_null(strstr(line, "\"name\":\"caf\xc3\xa9\""));
	assert_non_null(strstr(line, "\"emoji\":\"\xf0\x9f\x93\xa7\""));
	/* a byte of no character: its value as text, never U+00C3 */
	assert_non_null(strstr(line, "\"bad\":\"a\\\\xc3(b\""));
	assert_null(strstr(line, "\\u00c3"));
	assert_non_null(strstr(line, "\"overlong\":\"\\\\xc0\\\\xaf\""));
	assert_non_null(strstr(line, "\"surrogate\":\"\\\\xed\\\\xa0\\\\x80\""));
	assert_non_null(strstr(line, "\"cut\":\"\\\\xe2\\\\x82\""));
	/* control characters are code points: JSON's escape */
	assert_non_null(strstr(line, "\"ctl\":\"a\\u0001b\\\\x7f\""));
	assert_non_null(strstr(line, "\"quote\":\"say \\\"hi\\\" \\\\o/\""));
	assert_non_null(strstr(line, "\"none\":null,\"also_none\":null,"));
	assert_non_null(strstr(line, "\"dash\":\"-\""));
	assert_non_null(strstr(line, "\"neg\":-3}"));
}

static void test_text(void **state)
{
	const char *line;

	(void)state;
	log_setup(LOG_INFO, false);
	one_of_each();
	line = after_ts(read_line());
	assert_true(!strncmp(line, "level=info event=t ", 19));
	assert_non_null(strstr(line, " name=caf\xc3\xa9 "));
	assert_non_null(strstr(line, " emoji=\xf0\x9f\x93\xa7 "));
	assert_non_null(strstr(line, " bad=a\\xc3(b "));
	assert_non_null(strstr(line, " ctl=\"a\\x01b\\x7f\" "));
	assert_non_null(strstr(line, " quote=\"say \\\"hi\\\" \\\\o/\" "));
	/* missing is a bare "-"; a value "-" is quoted */
	assert_non_null(strstr(line, " none=- also_none=- dash=\"-\" neg=-3"));
}

/* A line too long is cut between fields or characters, and stays one
 * well-formed line: a JSON string is closed, no UTF-8 sequence is split. */
static void test_long_lines(void **state)
{
	static char big[3 * LOG_LINE_MAX];
	struct logline ll;
	char *line;
	size_t n;

	(void)state;
	for (size_t i = 0; i + 2 < sizeof(big); i += 2)
		memcpy(big + i, "\xc3\xa9", 2);
	big[sizeof(big) - 1] = '\0';
	log_setup(LOG_INFO, true);
	assert_true(log_begin(&ll, LOG_WARN, "long"));
	log_kv_str(&ll, "a", "x");
	log_kv_str(&ll, "big", big);
	log_kv_u64(&ll, "after", 1);
	log_end(&ll);
	line = read_line();
	n = strlen(line);
	assert_true(n < LOG_LINE_MAX);
	assert_string_equal(line + n - 2, "\"}");
	assert_non_null(strstr(line, "\"a\":\"x\",\"big\":\"\xc3\xa9"));
	assert_null(strstr(line, "\"after\""));
	assert_true(((unsigned char)line[n - 3] == 0xa9));

	log_setup(LOG_INFO, false);
	assert_true(log_begin(&ll, LOG_WARN, "long"));
	log_kv_str(&ll, "big", big);
	log_end(&ll);
	line = read_line();
	n = strlen(line);
	assert_true(n < LOG_LINE_MAX);
	assert_true(((unsigned char)line[n - 1] == 0xa9));
}

static void test_levels(void **state)
{
	struct logline ll;

	(void)state;
	log_setup(LOG_WARN, false);
	assert_false(log_begin(&ll, LOG_INFO, "quiet"));
	assert_false(log_enabled(LOG_DEBUG));
	assert_true(log_enabled(LOG_ERROR));
	log_msg(LOG_ERROR, "loud", "%d %s", 42, "x");
	assert_non_null(strstr(read_line(), " level=error event=loud msg=\"42 x\""));
}

static void set_journal(unsigned long long dev, unsigned long long ino, const char *tail)
{
	char v[80];

	snprintf(v, sizeof(v), "%llu:%llu%s", dev, ino, tail);
	setenv("JOURNAL_STREAM", v, 1);
}

/* <N> only when $JOURNAL_STREAM is stderr's device and inode. */
static void test_journal_prefix(void **state)
{
	static const struct {
		enum log_level level;
		const char *prefix;
	} want[] = {
		{ LOG_ERROR, "<3>" }, { LOG_WARN, "<4>" }, { LOG_INFO, "<6>" }, { LOG_DEBUG, "<7>" }
	};
	struct stat st;
	char *line;

	(void)state;
	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	set_journal((unsigned long long)st.st_dev, (unsigned long long)st.st_ino, "");
	for (int json = 0; json < 2; json++) {
		log_setup(LOG_DEBUG, json);
		for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
			log_msg(want[i].level, "j", "m");
			line = read_line();
			assert_true(!strncmp(line, want[i].prefix, 3));
			assert_int_equal(line[3], json ? '{' : '2'); /* then the line itself */
		}
	}
	/* another stream (stderr redirected since systemd set it): none */
	set_journal((unsigned long long)st.st_dev, (unsigned long long)st.st_ino + 1, "");
	log_setup(LOG_INFO, false);
	log_msg(LOG_ERROR, "j", "m");
	assert_int_equal(read_line()[0], '2');
	set_journal((unsigned long long)st.st_dev, (unsigned long long)st.st_ino, "x");
	log_setup(LOG_INFO, false);
	log_msg(LOG_ERROR, "j", "m");
	assert_int_equal(read_line()[0], '2');
	unsetenv("JOURNAL_STREAM");
	log_setup(LOG_INFO, true);
	log_msg(LOG_ERROR, "j", "m");
	assert_int_equal(read_line()[0], '{');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_json, setup, teardown),
		cmocka_unit_test_setup_teardown(test_text, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_levels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_prefix, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
