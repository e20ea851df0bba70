/* fuzz_admin_http.c - the admin request parser over arbitrary input: the
 * verdict is one of three and consistent, every slice lies in the input
 * (fields in the head, the body right after it), a request is judged by
 * its own octets only, and a prefix of a good request waits for more. The
 * field value helpers run on what the parser found. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/admin_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)              \
	do {                     \
		if (!(cond))     \
			abort(); \
	} while (0)

static void within(struct admin_http_slice s, const char *lo, const char *hi)
{
	if (s.p)
		CHECK(s.p >= lo && s.p <= hi && s.len <= (size_t)(hi - s.p));
	else
		CHECK(s.len == 0);
}

/* No CR, LF, NUL or other control but tab; no DEL. */
static void clean_value(struct admin_http_slice s)
{
	for (size_t i = 0; i < s.len; i++)
		CHECK(((unsigned char)s.p[i] >= 0x20 || s.p[i] == '\t') && s.p[i] != 0x7f);
	if (s.len)
		CHECK(s.p[0] != ' ' && s.p[0] != '\t' && s.p[s.len - 1] != ' ' &&
		      s.p[s.len - 1] != '\t');
}

static bool same_slice(struct admin_http_slice a, struct admin_http_slice b)
{
	return a.p == b.p && a.len == b.len;
}

static bool same(const struct admin_http_req *a, const struct admin_http_req *b)
{
	return same_slice(a->method, b->method) && same_slice(a->target, b->target) &&
	       same_slice(a->path, b->path) && same_slice(a->query, b->query) &&
	       a->minor == b->minor && same_slice(a->host, b->host) &&
	       same_slice(a->origin, b->origin) && same_slice(a->authorization, b->authorization) &&
	       same_slice(a->content_length, b->content_length) &&
	       same_slice(a->transfer_encoding, b->transfer_encoding) &&
	       same_slice(a->body, b->body) && a->error == b->error;
}

static void helpers(const struct admin_http_req *r)
{
	struct admin_http_slice out;

	if (r->host.p && admin_http_authority(r->host, &out))
		within(out, r->host.p, r->host.p + r->host.len);
	if (r->origin.p && admin_http_origin(r->origin, &out)) {
		within(out, r->origin.p, r->origin.p + r->origin.len);
		CHECK(out.len && !memchr(out.p, '/', out.len));
		if (admin_http_authority(out, &out))
			within(out, r->origin.p, r->origin.p + r->origin.len);
	}
	if (r->authorization.p && admin_http_bearer(r->authorization, &out))
		within(out, r->authorization.p, r->authorization.p + r->authorization.len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *head_end;
	struct admin_http_req r, again;
	enum admin_http_parse v;
	size_t used, used2;

	v = admin_http_parse(p, size, &r, &used);
	CHECK(v == ADMIN_HTTP_OK || v == ADMIN_HTTP_AGAIN || v == ADMIN_HTTP_INVALID);
	CHECK((v == ADMIN_HTTP_INVALID) == (r.error != ADMIN_HTTP_ERR_NONE));
	CHECK(v == ADMIN_HTTP_OK ? used > 0 && used <= size : used == 0);
	CHECK(r.error <= ADMIN_HTTP_ERR_BODY_TOO_LARGE);
	if (v == ADMIN_HTTP_AGAIN)
		return 0;
	if (r.error == ADMIN_HTTP_ERR_HEAD_TOO_LARGE) {
		head_end = memmem(p, size, "\r\n\r\n", 4);
		CHECK(head_end ? head_end - p > ADMIN_HTTP_HEAD_MAX : size > ADMIN_HTTP_HEAD_MAX);
		return 0;
	}
	head_end = memmem(p, size, "\r\n\r\n", 4);
	CHECK(head_end && head_end - p <= ADMIN_HTTP_HEAD_MAX);
	within(r.method, p, head_end);
	within(r.target, p, head_end);
	within(r.path, p, head_end);
	within(r.query, p, head_end);
	within(r.host, p, head_end);
	within(r.origin, p, head_end);
	within(r.authorization, p, head_end);
	within(r.content_length, p, head_end);
	within(r.transfer_encoding, p, head_end);
	clean_value(r.host);
	clean_value(r.origin);
	clean_value(r.authorization);
	clean_value(r.content_length);
	clean_value(r.transfer_encoding);
	helpers(&r);
	CHECK(r.error != ADMIN_HTTP_ERR_LENGTH_REQUIRED || r.transfer_encoding.p);
	CHECK(r.error != ADMIN_HTTP_ERR_BODY_TOO_LARGE || r.content_length.p);
	if (v == ADMIN_HTTP_INVALID)
		return 0;

	/* a good request */
	CHECK(r.method.len && r.target.len && r.minor >= 0 && r.minor <= 1);
	CHECK(r.method.p == p && r.target.p == r.method.p + r.method.len + 1);
	CHECK(r.path.p == r.target.p);
	if (r.query.p)
		CHECK(r.query.p == r.path.p + r.path.len + 1 &&
		      r.path.len + 1 + r.query.len == r.target.len && r.path.p[r.path.len] == '?');
	else
		CHECK(r.path.len == r.target.len);
	CHECK(!memchr(r.path.p, '?', r.path.len));
	for (const char *q = p; q < r.target.p + r.target.len + 9; q++)
		CHECK((unsigned char)*q >= 0x21 || *q == ' ');
	CHECK(!r.transfer_encoding.p);
	CHECK(r.body.p == head_end + 4 && r.body.len <= ADMIN_HTTP_BODY_MAX);
	CHECK(used == (size_t)(head_end + 4 - p) + r.body.len);
	CHECK(r.content_length.p || !r.body.len);

	/* the octets after the request change nothing */
	CHECK(admin_http_parse(p, used, &again, &used2) == ADMIN_HTTP_OK && used2 == used);
	CHECK(same(&again, &r));
	/* a prefix waits, except that a head at the limit whose blank line is
	 * cut is over the limit as it stands */
	for (size_t n = used - 1, k = 0; k < 3; n /= 2, k++) {
		v = admin_http_parse(p, n, &again, &used2);
		CHECK(v == ADMIN_HTTP_AGAIN ||
		      (v == ADMIN_HTTP_INVALID && again.error == ADMIN_HTTP_ERR_HEAD_TOO_LARGE &&
		       n > ADMIN_HTTP_HEAD_MAX && n < (size_t)(head_end + 4 - p)));
		if (!n)
			break;
	}
	return 0;
}
