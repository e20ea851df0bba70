/* test_admin_http.c - the admin server's request parser and the field
 * values it reads (Host, Origin, Authorization). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "proxy/admin_http.h"

#define S(x) x, sizeof(x) - 1
#define SL(x) ((struct admin_http_slice){ x, sizeof(x) - 1 })

static struct admin_http_req req;
static size_t used;

static enum admin_http_parse parse(const char *p, size_t len)
{
	return admin_http_parse(p, len, &req, &used);
}

/* INVALID, and why. */
static enum admin_http_error refused(const char *p, size_t len)
{
	if (parse(p, len) != ADMIN_HTTP_INVALID)
		return ADMIN_HTTP_ERR_NONE;
	assert_int_equal(used, 0);
	return req.error;
}

static void assert_slice(struct admin_http_slice s, const char *want)
{
	assert_non_null(s.p);
	assert_int_equal(s.len, strlen(want));
	assert_memory_equal(s.p, want, s.len);
}

static void test_request(void **state)
{
	static const char r[] = "POST /backends/main/b0/weight?value=5 HTTP/1.1\r\n"
				"Host: localhost:8025\r\n"
				"Origin: http://localhost:8025\r\n"
				"authorization:  Bearer t0k \t\r\n"
				"X-Other: whatever\r\n"
				"CONTENT-LENGTH: 2\r\n"
				"\r\n"
				"ab"
				"GET / HTTP/1.1\r\n";

	(void)state;
	assert_int_equal(parse(r, sizeof(r) - 1), ADMIN_HTTP_OK);
	assert_int_equal(used, sizeof(r) - 1 - strlen("GET / HTTP/1.1\r\n"));
	assert_slice(req.method, "POST");
	assert_slice(req.target, "/backends/main/b0/weight?value=5");
	assert_slice(req.path, "/backends/main/b0/weight");
	assert_slice(req.query, "value=5");
	assert_int_equal(req.minor, 1);
	assert_slice(req.host, "localhost:8025");
	assert_slice(req.origin, "http://localhost:8025");
	assert_slice(req.authorization, "Bearer t0k");
	assert_slice(req.content_length, "2");
	assert_null(req.transfer_encoding.p);
	assert_slice(req.body, "ab");
	assert_int_equal(req.error, ADMIN_HTTP_ERR_NONE);

	/* the least request: no fields, no body, HTTP/1.0 */
	assert_int_equal(parse(S("GET /metrics HTTP/1.0\r\n\r\n")), ADMIN_HTTP_OK);
	assert_int_equal(used, 25);
	assert_slice(req.path, "/metrics");
	assert_null(req.query.p);
	assert_null(req.host.p);
	assert_int_equal(req.minor, 0);
	assert_int_equal(req.body.len, 0);
	/* a bare '?' is an empty query, not none */
	assert_int_equal(parse(S("GET /metrics? HTTP/1.1\r\n\r\n")), ADMIN_HTTP_OK);
	assert_slice(req.path, "/metrics");
	assert_slice(req.query, "");
	/* an empty value is present; tabs around a value go */
	assert_int_equal(parse(S("GET / HTTP/1.1\r\nHost:\r\nOrigin:\t x\t\r\n\r\n")),
			 ADMIN_HTTP_OK);
	assert_slice(req.host, "");
	assert_slice(req.origin, "x");
	/* what other fields hold is only checked for syntax */
	assert_int_equal(parse(S("GET / HTTP/1.1\r\nX-A: \xc3\xa9\r\nX-A: twice\r\n\r\n")),
			 ADMIN_HTTP_OK);
	/* the request line takes DEL and octets above 0x7f as they are */
	assert_int_equal(parse(S("GET /\x7f\xff HTTP/1.1\r\n\r\n")), ADMIN_HTTP_OK);
	assert_int_equal(parse(S("GET /a%20b HTTP/1.1\r\nContent-Length: 0001\r\n\r\nx")),
			 ADMIN_HTTP_OK);
	assert_int_equal(req.body.len, 1);
}

static void test_again(void **state)
{
	static const char r[] = "POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";

	(void)state;
	/* every prefix of a good request waits for more */
	for (size_t n = 0; n < sizeof(r) - 1; n++) {
		assert_int_equal(parse(r, n), ADMIN_HTTP_AGAIN);
		assert_int_equal(used, 0);
	}
	assert_int_equal(parse(r, sizeof(r) - 1), ADMIN_HTTP_OK);
	/* nothing is judged before the blank line */
	assert_int_equal(parse(S("garbage\r\n")), ADMIN_HTTP_AGAIN);
	assert_int_equal(parse(S("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n")), ADMIN_HTTP_AGAIN);
}

static void test_request_line(void **state)
{
	(void)state;
	assert_int_equal(refused(S("garbage\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("\r\nGET / HTTP/1.1\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / HTTP/1.2\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / HTTP/2.0\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / http/1.1\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / HTTP/1.1 \r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET  / HTTP/1.1\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S(" GET / HTTP/1.1\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET /a b HTTP/1.1\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET HTTP/1.1\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	/* controls: a tab, a NUL, a bare CR or LF */
	assert_int_equal(refused(S("GET /a\tb HTTP/1.1\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET /\0 HTTP/1.1\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET /\r HTTP/1.1\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / HTTP/1.1\nHost: x\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	/* the method and target are kept for what a refusal logs */
	assert_int_equal(refused(S("GET /a\tb HTTP/1.1\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_slice(req.method, "GET");
}

static void test_fields(void **state)
{
	(void)state;
	/* folded lines, a space before the colon, no name, no colon */
	assert_int_equal(refused(S("GET / HTTP/1.1\r\n folded: x\r\n\r\n")),
			 ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n")),
			 ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / HTTP/1.1\r\nX : a\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / HTTP/1.1\r\n: a\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / HTTP/1.1\r\nHost\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / HTTP/1.1\r\nHo(st: x\r\n\r\n")),
			 ADMIN_HTTP_ERR_MALFORMED);
	/* a CR that ends no line: "\r\r\n\r\n" leaves a line of one CR */
	assert_int_equal(refused(S("GET / HTTP/1.1\r\n\r\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	/* controls in a value, in any field: bare LF and CR, NUL, DEL */
	assert_int_equal(refused(S("GET / HTTP/1.1\r\nHost: x\ny: z\r\n\r\n")),
			 ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / HTTP/1.1\r\nX: a\x01\r\n\r\n")),
			 ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n")),
			 ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / HTTP/1.1\r\nX: a\0\r\n\r\n")), ADMIN_HTTP_ERR_MALFORMED);
	/* a tab inside a value is allowed */
	assert_int_equal(parse(S("GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n")), ADMIN_HTTP_OK);
	assert_slice(req.host, "a\tb");
}

static void test_duplicates(void **state)
{
	(void)state;
	assert_int_equal(refused(S("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")),
			 ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / HTTP/1.1\r\nHost: a\r\nhOST: a\r\n\r\n")),
			 ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / HTTP/1.1\r\nHost:\r\nHost: a\r\n\r\n")),
			 ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("GET / HTTP/1.1\r\nOrigin: a\r\nOrigin: a\r\n\r\n")),
			 ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(
		refused(S("GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: a\r\n\r\n")),
		ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("POST / HTTP/1.1\r\nCONTENT-LENGTH: 1\r\ncontent-length: 1\r\n"
				   "\r\nx")),
			 ADMIN_HTTP_ERR_MALFORMED);
}

static void test_body(void **state)
{
	char big[ADMIN_HTTP_BODY_MAX + 64];
	int n;

	(void)state;
	assert_int_equal(refused(S("POST / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n")),
			 ADMIN_HTTP_ERR_BODY_TOO_LARGE);
	assert_int_equal(refused(S("POST / HTTP/1.1\r\nContent-Length: 1025\r\n\r\n")),
			 ADMIN_HTTP_ERR_BODY_TOO_LARGE);
	assert_int_equal(refused(S("POST / HTTP/1.1\r\nContent-Length: "
				   "99999999999999999999999999999\r\n\r\n")),
			 ADMIN_HTTP_ERR_BODY_TOO_LARGE);
	assert_int_equal(refused(S("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n")),
			 ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n")),
			 ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n")),
			 ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n")),
			 ADMIN_HTTP_ERR_MALFORMED);
	/* exactly the limit is fine */
	n = snprintf(big, sizeof(big), "POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n",
		     ADMIN_HTTP_BODY_MAX);
	memset(big + n, 'x', ADMIN_HTTP_BODY_MAX);
	assert_int_equal(parse(big, (size_t)n + ADMIN_HTTP_BODY_MAX - 1), ADMIN_HTTP_AGAIN);
	assert_int_equal(parse(big, (size_t)n + ADMIN_HTTP_BODY_MAX), ADMIN_HTTP_OK);
	assert_int_equal(req.body.len, ADMIN_HTTP_BODY_MAX);
	/* any Transfer-Encoding: a body this server cannot delimit */
	assert_int_equal(refused(S("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")),
			 ADMIN_HTTP_ERR_LENGTH_REQUIRED);
	assert_slice(req.transfer_encoding, "chunked");
	assert_int_equal(refused(S("POST / HTTP/1.1\r\nContent-Length: 0\r\n"
				   "transfer-encoding: identity\r\n\r\n")),
			 ADMIN_HTTP_ERR_LENGTH_REQUIRED);
	assert_slice(req.content_length, "0");
}

/* The first fault in line order decides. */
static void test_first_fault(void **state)
{
	(void)state;
	assert_int_equal(
		refused(S("POST / HTTP/1.1\r\nTransfer-Encoding: x\r\nHost: a\r\nHost: b\r\n"
			  "\r\n")),
		ADMIN_HTTP_ERR_LENGTH_REQUIRED);
	assert_int_equal(
		refused(S("POST / HTTP/1.1\r\nHost: a\r\nHost: b\r\nTransfer-Encoding: x\r\n"
			  "\r\n")),
		ADMIN_HTTP_ERR_MALFORMED);
	assert_int_equal(refused(S("POST / HTTP/1.1\r\nContent-Length: 5000\r\n folded\r\n\r\n")),
			 ADMIN_HTTP_ERR_BODY_TOO_LARGE);
	assert_int_equal(refused(S("POST / HTTP/1.1\r\n folded\r\nContent-Length: 5000\r\n\r\n")),
			 ADMIN_HTTP_ERR_MALFORMED);
	/* the request line comes first of all */
	assert_int_equal(refused(S("GET /\t HTTP/1.1\r\nTransfer-Encoding: x\r\n\r\n")),
			 ADMIN_HTTP_ERR_MALFORMED);
}

static void test_head_limit(void **state)
{
	static char r[ADMIN_HTTP_HEAD_MAX + 64];
	size_t head;

	(void)state;
	/* a head of exactly ADMIN_HTTP_HEAD_MAX octets, then its blank line */
	memset(r, 'a', sizeof(r));
	memcpy(r, "GET /", 5);
	head = ADMIN_HTTP_HEAD_MAX;
	memcpy(r + head - 9, " HTTP/1.1\r\n\r\n", 13);
	assert_int_equal(parse(r, head + 4), ADMIN_HTTP_OK);
	assert_int_equal(req.target.len, head - 13);
	/* one octet more */
	memset(r, 'a', sizeof(r));
	memcpy(r, "GET /", 5);
	head = ADMIN_HTTP_HEAD_MAX + 1;
	memcpy(r + head - 9, " HTTP/1.1\r\n\r\n", 13);
	assert_int_equal(refused(r, head + 4), ADMIN_HTTP_ERR_HEAD_TOO_LARGE);
	/* no blank line within the limit: refused before it arrives */
	memset(r, 'a', sizeof(r));
	assert_int_equal(parse(r, ADMIN_HTTP_HEAD_MAX), ADMIN_HTTP_AGAIN);
	assert_int_equal(refused(r, ADMIN_HTTP_HEAD_MAX + 1), ADMIN_HTTP_ERR_HEAD_TOO_LARGE);
	/* a head within the limit whose blank line comes in pieces past it:
	 * waited for, octet by octet, then accepted */
	for (head = ADMIN_HTTP_HEAD_MAX - 2; head <= ADMIN_HTTP_HEAD_MAX; head++) {
		memset(r, 'a', sizeof(r));
		memcpy(r, "GET /", 5);
		memcpy(r + head - 9, " HTTP/1.1\r\n\r\n", 13);
		for (size_t len = ADMIN_HTTP_HEAD_MAX + 1; len < head + 4; len++)
			assert_int_equal(parse(r, len), ADMIN_HTTP_AGAIN);
		assert_int_equal(parse(r, head + 4), ADMIN_HTTP_OK);
	}
	/* past the limit, only the start of a blank line is waited for: a
	 * line break at the limit, then more of the head */
	memset(r, 'a', sizeof(r));
	memcpy(r + ADMIN_HTTP_HEAD_MAX, "\r\n", 2);
	assert_int_equal(parse(r, ADMIN_HTTP_HEAD_MAX + 2), ADMIN_HTTP_AGAIN);
	assert_int_equal(refused(r, ADMIN_HTTP_HEAD_MAX + 3), ADMIN_HTTP_ERR_HEAD_TOO_LARGE);
}

static void test_authority(void **state)
{
	struct admin_http_slice n;

	(void)state;
	assert_true(admin_http_authority(SL("localhost"), &n));
	assert_slice(n, "localhost");
	assert_true(admin_http_authority(SL("LocalHost:8025"), &n));
	assert_slice(n, "LocalHost");
	assert_true(admin_http_authority(SL("[::1]"), &n));
	assert_slice(n, "::1");
	assert_true(admin_http_authority(SL("[::1]:65535"), &n));
	assert_slice(n, "::1");
	assert_true(admin_http_authority(SL("127.0.0.1:99999"), &n)); /* five digits */
	assert_true(admin_http_authority(SL(""), &n));
	assert_int_equal(n.len, 0);
	assert_true(admin_http_authority(SL(":1"), &n));
	assert_int_equal(n.len, 0);
	assert_false(admin_http_authority(SL("localhost:"), &n));
	assert_false(admin_http_authority(SL("localhost:123456"), &n));
	assert_false(admin_http_authority(SL("localhost:8o"), &n));
	assert_false(admin_http_authority(SL("a:1:2"), &n));
	assert_false(admin_http_authority(SL("[::1"), &n));
	assert_false(admin_http_authority(SL("[::1]x"), &n));
	assert_false(admin_http_authority(SL("[::1]:"), &n));
	assert_false(admin_http_authority(SL("[::1]:+1"), &n));
}

static void test_origin(void **state)
{
	struct admin_http_slice a;

	(void)state;
	assert_true(admin_http_origin(SL("http://localhost:8025"), &a));
	assert_slice(a, "localhost:8025");
	assert_true(admin_http_origin(SL("HTTPS://[::1]"), &a));
	assert_slice(a, "[::1]");
	assert_false(admin_http_origin(SL("null"), &a));
	assert_false(admin_http_origin(SL("http://"), &a));
	assert_false(admin_http_origin(SL("https://"), &a));
	assert_false(admin_http_origin(SL("http://a/"), &a));
	assert_false(admin_http_origin(SL("ftp://a"), &a));
	assert_false(admin_http_origin(SL("http:/a"), &a));
}

static void test_bearer(void **state)
{
	struct admin_http_slice t;

	(void)state;
	assert_true(admin_http_bearer(SL("Bearer abc"), &t));
	assert_slice(t, "abc");
	assert_true(admin_http_bearer(SL("bEARER    abc def"), &t));
	assert_slice(t, "abc def");
	assert_true(admin_http_bearer(SL("Bearer "), &t));
	assert_int_equal(t.len, 0);
	assert_false(admin_http_bearer(SL("Bearer"), &t));
	assert_false(admin_http_bearer(SL("Bearer\tabc"), &t));
	assert_false(admin_http_bearer(SL("Basic YTpi"), &t));
	assert_false(admin_http_bearer(SL(""), &t));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request),	     cmocka_unit_test(test_again),
		cmocka_unit_test(test_request_line), cmocka_unit_test(test_fields),
		cmocka_unit_test(test_duplicates),   cmocka_unit_test(test_body),
		cmocka_unit_test(test_first_fault),  cmocka_unit_test(test_head_limit),
		cmocka_unit_test(test_authority),    cmocka_unit_test(test_origin),
		cmocka_unit_test(test_bearer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
