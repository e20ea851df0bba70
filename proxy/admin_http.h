/* admin_http.h - the admin server's HTTP/1.x request parser (SPEC §6,
 * §12), and the values of the fields it reads.
 *
 * Bytes in; OK / AGAIN / INVALID out, with (pointer, length) slices into
 * the caller's buffer. No I/O, no allocation. Strict where leniency could
 * let two readers see different requests (a proxy or a browser in front
 * of the admin port): CRLF only, no obsolete line folding, no control
 * characters, no field this server reads given twice, no
 * Transfer-Encoding.
 */
#ifndef MXLB_ADMIN_HTTP_H
#define MXLB_ADMIN_HTTP_H

#include <stdbool.h>
#include <stddef.h>

/* The request line and its fields, without the blank line that ends them. */
#define ADMIN_HTTP_HEAD_MAX 8192
/* The largest Content-Length accepted; the actions need no body at all. */
#define ADMIN_HTTP_BODY_MAX 1024

enum admin_http_parse { ADMIN_HTTP_OK, ADMIN_HTTP_AGAIN, ADMIN_HTTP_INVALID };

/* Why a request is INVALID, and the status that answers it. */
enum admin_http_error {
	ADMIN_HTTP_ERR_NONE,
	ADMIN_HTTP_ERR_MALFORMED,	/* 400: bad syntax, or a field given twice */
	ADMIN_HTTP_ERR_HEAD_TOO_LARGE,	/* 431: no end of head within the limit */
	ADMIN_HTTP_ERR_LENGTH_REQUIRED, /* 411: Transfer-Encoding (a body not delimited by length) */
	ADMIN_HTTP_ERR_BODY_TOO_LARGE,	/* 413: Content-Length over ADMIN_HTTP_BODY_MAX */
};

/* A slice of the caller's buffer; p is NULL when the part is absent. */
struct admin_http_slice {
	const char *p;
	size_t len;
};

struct admin_http_req {
	struct admin_http_slice method; /* not checked against a list */
	struct admin_http_slice target; /* the request-target as sent */
	struct admin_http_slice path;	/* target up to its first '?' */
	struct admin_http_slice query;	/* after that '?': p NULL without one, len 0 for "x?" */
	int minor;			/* HTTP/1.<minor>: 0 or 1 */
	/* The fields read, values without the spaces and tabs around them
	 * (possibly empty; p NULL when the field is absent). */
	struct admin_http_slice host, origin, authorization;
	struct admin_http_slice content_length, transfer_encoding;
	struct admin_http_slice body; /* on OK: Content-Length octets after the head (0 without) */
	enum admin_http_error error;  /* on INVALID */
};

/*
 * Parse the request at the start of buf[0..len).
 * - OK: head and body are in; *consumed is their length (head, blank
 *   line, body). Octets after it are not looked at.
 * - AGAIN: the blank line that ends the head is not in yet and len is at
 *   most ADMIN_HTTP_HEAD_MAX; or the head is valid and its body is not
 *   all in yet. Nothing is judged until the head is complete, so a prefix
 *   of a malformed head is AGAIN too.
 * - INVALID: req->error says why. The head is read line by line and the
 *   first fault found decides (a Transfer-Encoding before a second Host
 *   is 411, after it 400); fields read up to it are set.
 * Fields other than the five above are checked for syntax and skipped.
 */
enum admin_http_parse admin_http_parse(const char *buf, size_t len, struct admin_http_req *req,
				       size_t *consumed);

/* A Host value or an Origin's authority: "name", "name:port", "[v6]" or
 * "[v6]:port", a port being 1 to 5 digits. True with *name set (the
 * brackets of a v6 address not included; possibly empty), false when
 * malformed. The name's characters are not checked: the caller compares
 * it with the names it goes by. */
bool admin_http_authority(struct admin_http_slice value, struct admin_http_slice *name);

/* An Origin that is "http://" or "https://" (case-insensitive), then a
 * non-empty authority with no '/': true with *authority set. "null" and
 * everything else: false. */
bool admin_http_origin(struct admin_http_slice origin, struct admin_http_slice *authority);

/* An Authorization value "Bearer TOKEN" (scheme case-insensitive, then
 * one space and any more): true with *token set (possibly empty), false
 * for any other scheme. */
bool admin_http_bearer(struct admin_http_slice auth, struct admin_http_slice *token);

#endif
