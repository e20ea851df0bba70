/* clienthello.c - see clienthello.h. RFC 8446 4.1.2 and RFC 6066 3. */
#include "tls/clienthello.h"

#include <string.h>

#define REC_HANDSHAKE 22
#define HS_CLIENT_HELLO 1
#define EXT_SERVER_NAME 0
#define SNI_HOST_NAME 0

/* A bounded reader: every take checks the length first. */
struct rd {
	const uint8_t *p;
	size_t n;
};

static bool take(struct rd *r, size_t k, const uint8_t **out)
{
	if (r->n < k)
		return false;
	if (out)
		*out = r->p;
	r->p += k;
	r->n -= k;
	return true;
}

static bool u8(struct rd *r, unsigned *v)
{
	const uint8_t *p;

	if (!take(r, 1, &p))
		return false;
	*v = p[0];
	return true;
}

static bool u16(struct rd *r, unsigned *v)
{
	const uint8_t *p;

	if (!take(r, 2, &p))
		return false;
	*v = (unsigned)p[0] << 8 | p[1];
	return true;
}

/* A sub-reader over the next len-prefixed block (prefix of `width` octets). */
static bool block(struct rd *r, int width, struct rd *sub)
{
	unsigned n;

	if (!(width == 1 ? u8(r, &n) : u16(r, &n)))
		return false;
	sub->p = r->p;
	sub->n = n;
	return take(r, n, NULL);
}

static bool host_name_ok(const uint8_t *s, size_t n)
{
	if (n == 0 || n > TLS_SNI_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.' || c == '_'))
			return false;
	}
	return true;
}

static bool server_name(struct rd ext, struct tls_hello_info *info)
{
	struct rd list;

	if (!block(&ext, 2, &list) || ext.n)
		return false;
	while (list.n) {
		unsigned type;
		struct rd name;

		if (!u8(&list, &type) || !block(&list, 2, &name))
			return false;
		if (type == SNI_HOST_NAME && !info->has_sni) {
			if (!host_name_ok(name.p, name.n))
				return false;
			info->has_sni = true;
			info->sni = (const char *)name.p;
			info->sni_len = name.n;
		}
	}
	return true;
}

enum tls_hello tls_parse_client_hello(const uint8_t *buf, size_t len, struct tls_hello_info *info)
{
	struct rd r = { buf, len }, rec, body, skip, exts;
	unsigned v, hs_type, ext_type;
	size_t rec_len, hs_len;
	const uint8_t *p;

	memset(info, 0, sizeof(*info));
	/* the record header: what arrives first can be refused at once */
	if (len >= 1 && buf[0] != REC_HANDSHAKE)
		return TLS_HELLO_INVALID;
	if (len >= 2 && buf[1] != 3)
		return TLS_HELLO_INVALID;
	if (len < 5)
		return TLS_HELLO_AGAIN;
	rec_len = (size_t)buf[3] << 8 | buf[4];
	if (rec_len == 0 || rec_len > TLS_RECORD_MAX)
		return TLS_HELLO_INVALID;
	if (len < 5 + rec_len)
		return TLS_HELLO_AGAIN;
	take(&r, 5, NULL);
	rec.p = r.p;
	rec.n = rec_len;
	info->record_len = 5 + rec_len;
	/* the handshake message, whole in this record */
	if (!u8(&rec, &hs_type) || hs_type != HS_CLIENT_HELLO || !take(&rec, 3, &p))
		return TLS_HELLO_INVALID;
	hs_len = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
	if (hs_len != rec.n)
		return TLS_HELLO_INVALID;
	body = rec;
	if (!u16(&body, &v) || (v >> 8) != 3)
		return TLS_HELLO_INVALID;
	info->version = (uint16_t)v;
	if (!take(&body, 32, NULL)) /* random */
		return TLS_HELLO_INVALID;
	if (!block(&body, 1, &skip) || skip.n > 32) /* session id */
		return TLS_HELLO_INVALID;
	if (!block(&body, 2, &skip) || skip.n < 2 || skip.n % 2) /* cipher suites */
		return TLS_HELLO_INVALID;
	if (!block(&body, 1, &skip) || skip.n < 1) /* compression */
		return TLS_HELLO_INVALID;
	if (!body.n)
		return TLS_HELLO_OK; /* no extensions at all */
	if (!block(&body, 2, &exts) || body.n)
		return TLS_HELLO_INVALID;
	while (exts.n) {
		struct rd ext;

		if (!u16(&exts, &ext_type) || !block(&exts, 2, &ext))
			return TLS_HELLO_INVALID;
		if (ext_type == EXT_SERVER_NAME) {
			if (info->has_sni || !server_name(ext, info))
				return TLS_HELLO_INVALID; /* twice, or malformed */
		}
	}
	return TLS_HELLO_OK;
}
