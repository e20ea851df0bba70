/* admin_http.c - see admin_http.h. */
#include "proxy/admin_http.h"

#include <string.h>
#include <strings.h>

/* The fields this server reads. A second of any is ambiguous (which one
 * would a proxy in front have checked?), so it is refused. */
static const struct {
	const char *name;
	size_t len;
	size_t off;
} fields[] = {
	{ "host", 4, offsetof(struct admin_http_req, host) },
	{ "origin", 6, offsetof(struct admin_http_req, origin) },
	{ "authorization", 13, offsetof(struct admin_http_req, authorization) },
	{ "content-length", 14, offsetof(struct admin_http_req, content_length) },
	{ "transfer-encoding", 17, offsetof(struct admin_http_req, transfer_encoding) },
};

static struct admin_http_slice *field_slot(struct admin_http_req *r, const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (len == fields[i].len && !strncasecmp(name, fields[i].name, len))
			return (struct admin_http_slice *)((char *)r + fields[i].off);
	return NULL;
}

/* A token character of a field name (RFC 9110 5.6.2). */
static bool tchar(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static const char *line_end(const char *p, const char *end)
{
	const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);

	return eol ? eol : end;
}

/* "METHOD SP target SP HTTP/1.x", one space each; p..eol. No octet below
 * 0x21 but those spaces (a bare CR or LF, a tab, a NUL). */
static enum admin_http_error request_line(const char *p, const char *eol, struct admin_http_req *r)
{
	const char *sp1, *sp2, *q;

	sp1 = memchr(p, ' ', (size_t)(eol - p));
	sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
	if (!sp2 || sp1 == p || sp2 == sp1 + 1 || eol - sp2 != 9 || memcmp(sp2 + 1, "HTTP/1.", 7) ||
	    (sp2[8] != '0' && sp2[8] != '1'))
		return ADMIN_HTTP_ERR_MALFORMED;
	r->method = (struct admin_http_slice){ p, (size_t)(sp1 - p) };
	r->target = (struct admin_http_slice){ sp1 + 1, (size_t)(sp2 - sp1 - 1) };
	r->minor = sp2[8] - '0';
	q = memchr(r->target.p, '?', r->target.len);
	r->path = (struct admin_http_slice){ r->target.p,
					     q ? (size_t)(q - r->target.p) : r->target.len };
	if (q)
		r->query = (struct admin_http_slice){ q + 1, r->target.len - r->path.len - 1 };
	for (q = p; q < eol; q++)
		if ((unsigned char)*q < 0x21 && *q != ' ')
			return ADMIN_HTTP_ERR_MALFORMED;
	return ADMIN_HTTP_ERR_NONE;
}

/* Digits only, at least one; *n is exact up to ADMIN_HTTP_BODY_MAX and
 * above it otherwise. */
static enum admin_http_error content_length(struct admin_http_slice v, size_t *n)
{
	*n = 0;
	if (!v.len)
		return ADMIN_HTTP_ERR_MALFORMED;
	for (size_t i = 0; i < v.len; i++) {
		if (v.p[i] < '0' || v.p[i] > '9')
			return ADMIN_HTTP_ERR_MALFORMED;
		if (*n <= ADMIN_HTTP_BODY_MAX)
			*n = *n * 10 + (size_t)(v.p[i] - '0');
	}
	return *n > ADMIN_HTTP_BODY_MAX ? ADMIN_HTTP_ERR_BODY_TOO_LARGE : ADMIN_HTTP_ERR_NONE;
}

/* One field line "name: value", name..eol. */
static enum admin_http_error field_line(const char *name, const char *eol, struct admin_http_req *r,
					size_t *body_len)
{
	const char *colon = memchr(name, ':', (size_t)(eol - name)), *v, *ve;
	struct admin_http_slice *f;

	/* obsolete line folding starts with a space or tab: not a tchar */
	if (!colon || colon == name)
		return ADMIN_HTTP_ERR_MALFORMED;
	for (const char *q = name; q < colon; q++)
		if (!tchar(*q))
			return ADMIN_HTTP_ERR_MALFORMED;
	for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
		;
	for (ve = eol; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
		;
	for (const char *q = v; q < ve; q++)
		if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
			return ADMIN_HTTP_ERR_MALFORMED;
	f = field_slot(r, name, (size_t)(colon - name));
	if (!f)
		return ADMIN_HTTP_ERR_NONE;
	if (f->p)
		return ADMIN_HTTP_ERR_MALFORMED;
	*f = (struct admin_http_slice){ v, (size_t)(ve - v) };
	if (f == &r->transfer_encoding)
		return ADMIN_HTTP_ERR_LENGTH_REQUIRED;
	if (f == &r->content_length)
		return content_length(*f, body_len);
	return ADMIN_HTTP_ERR_NONE;
}

/* The head p[0..len), the blank line not included. */
static enum admin_http_error head(const char *p, size_t len, struct admin_http_req *r,
				  size_t *body_len)
{
	const char *end = p + len, *eol = line_end(p, end);
	enum admin_http_error e = request_line(p, eol, r);

	while (!e && eol < end) {
		const char *name = eol + 2;

		eol = line_end(name, end);
		e = field_line(name, eol, r, body_len);
	}
	return e;
}

/* Whether the blank line that ends the head may be arriving within the
 * limit: the last one to three octets begin it at or before the limit. */
static bool blank_may_follow(const char *buf, size_t len)
{
	for (size_t k = 3; k >= 1; k--)
		if (len >= k && len - k <= ADMIN_HTTP_HEAD_MAX && !memcmp(buf + len - k, "\r\n\r\n", k))
			return true;
	return false;
}

enum admin_http_parse admin_http_parse(const char *buf, size_t len, struct admin_http_req *req,
				       size_t *consumed)
{
	const char *blank;
	size_t head_len, body_len = 0;

	memset(req, 0, sizeof(*req));
	*consumed = 0;
	blank = memmem(buf, len, "\r\n\r\n", 4);
	if (!blank && (len <= ADMIN_HTTP_HEAD_MAX || blank_may_follow(buf, len)))
		return ADMIN_HTTP_AGAIN;
	head_len = blank ? (size_t)(blank - buf) : len;
	if (head_len > ADMIN_HTTP_HEAD_MAX)
		req->error = ADMIN_HTTP_ERR_HEAD_TOO_LARGE;
	else
		req->error = head(buf, head_len, req, &body_len);
	if (req->error)
		return ADMIN_HTTP_INVALID;
	if (len - head_len - 4 < body_len)
		return ADMIN_HTTP_AGAIN;
	req->body = (struct admin_http_slice){ blank + 4, body_len };
	*consumed = head_len + 4 + body_len;
	return ADMIN_HTTP_OK;
}

bool admin_http_authority(struct admin_http_slice value, struct admin_http_slice *name)
{
	const char *h = value.p, *end = value.p + value.len, *port = NULL;

	if (value.len && h[0] == '[') {
		const char *rb = memchr(h, ']', value.len);

		if (!rb)
			return false;
		*name = (struct admin_http_slice){ h + 1, (size_t)(rb - h - 1) };
		if (rb + 1 < end) {
			if (rb[1] != ':')
				return false;
			port = rb + 2;
		}
	} else {
		const char *colon = memchr(h, ':', value.len);

		*name = (struct admin_http_slice){ h, colon ? (size_t)(colon - h) : value.len };
		if (colon)
			port = colon + 1;
	}
	if (port) {
		if (port == end || end - port > 5)
			return false;
		for (const char *q = port; q < end; q++)
			if (*q < '0' || *q > '9')
				return false;
	}
	return true;
}

bool admin_http_origin(struct admin_http_slice origin, struct admin_http_slice *authority)
{
	size_t skip;

	if (origin.len > 7 && !strncasecmp(origin.p, "http://", 7))
		skip = 7;
	else if (origin.len > 8 && !strncasecmp(origin.p, "https://", 8))
		skip = 8;
	else
		return false;
	*authority = (struct admin_http_slice){ origin.p + skip, origin.len - skip };
	return !memchr(authority->p, '/', authority->len);
}

bool admin_http_bearer(struct admin_http_slice auth, struct admin_http_slice *token)
{
	const char *p = auth.p;
	size_t n = auth.len;

	if (n < 7 || strncasecmp(p, "Bearer ", 7))
		return false;
	for (p += 7, n -= 7; n && *p == ' '; p++, n--)
		;
	*token = (struct admin_http_slice){ p, n };
	return true;
}
