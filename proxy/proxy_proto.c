/* proxy_proto.c - see proxy_proto.h. */
#include "proxy/proxy_proto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const uint8_t v2_sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				    0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

#define V2_HDR 16
#define PP2_TYPE_AUTHORITY 0x02
#define PP2_TYPE_SSL 0x20
#define PP2_SUBTYPE_SSL_VERSION 0x21
#define PP2_SUBTYPE_SSL_CIPHER 0x23
#define PP2_CLIENT_SSL 0x01

/* A decimal port, 0..65535, without sign or leading zeros. */
static int parse_port(const char *s, size_t n, uint16_t *port)
{
	unsigned v = 0;

	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

static int set_addr(int family, const char *s, size_t n, struct sockaddr_storage *ss,
		    socklen_t *len)
{
	char text[INET6_ADDRSTRLEN];

	if (n == 0 || n >= sizeof(text))
		return -1;
	memcpy(text, s, n);
	text[n] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		*len = sizeof(*sin);
		return inet_pton(AF_INET, text, &sin->sin_addr) == 1 ? 0 : -1;
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	sin6->sin6_family = AF_INET6;
	*len = sizeof(*sin6);
	return inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1 ? 0 : -1;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

/* "PROXY TCP4 1.2.3.4 5.6.7.8 1234 25\r\n": single spaces, CRLF. */
static enum proxy_parse parse_v1(const uint8_t *buf, size_t len, struct proxy_info *pi,
				 size_t *consumed)
{
	size_t limit = len < PROXY_V1_MAX ? len : PROXY_V1_MAX;
	const char *p = (const char *)buf, *field[6];
	size_t flen[6], nf = 0, i = 0, end;
	const uint8_t *lf = memchr(buf, '\n', limit);
	uint16_t sport, dport;
	int family;

	if (!lf)
		return len < PROXY_V1_MAX ? PROXY_AGAIN : PROXY_INVALID;
	end = (size_t)(lf - buf);
	if (end < 1 || p[end - 1] != '\r')
		return PROXY_INVALID;
	end--;
	/* split on single spaces */
	while (i <= end && nf < 6) {
		size_t start = i;

		while (i < end && p[i] != ' ')
			i++;
		field[nf] = p + start;
		flen[nf++] = i - start;
		if (i == end)
			break;
		i++;
	}
	pi->version = 1;
	*consumed = end + 2;
	if (nf >= 2 && flen[1] == 7 && !memcmp(field[1], "UNKNOWN", 7)) {
		pi->local = true;
		return PROXY_OK;
	}
	if (nf != 6 || i != end || flen[0] != 5 || memcmp(field[0], "PROXY", 5) || flen[1] != 4)
		return PROXY_INVALID;
	if (!memcmp(field[1], "TCP4", 4))
		family = AF_INET;
	else if (!memcmp(field[1], "TCP6", 4))
		family = AF_INET6;
	else
		return PROXY_INVALID;
	if (set_addr(family, field[2], flen[2], &pi->src, &pi->src_len) < 0 ||
	    set_addr(family, field[3], flen[3], &pi->dst, &pi->dst_len) < 0 ||
	    parse_port(field[4], flen[4], &sport) < 0 || parse_port(field[5], flen[5], &dport) < 0)
		return PROXY_INVALID;
	set_port(&pi->src, sport);
	set_port(&pi->dst, dport);
	return PROXY_OK;
}

static enum proxy_parse parse_v2(const uint8_t *buf, size_t len, struct proxy_info *pi,
				 size_t *consumed)
{
	size_t body, need;
	uint8_t cmd, fam;

	if (len < V2_HDR)
		return PROXY_AGAIN;
	if ((buf[12] >> 4) != 2)
		return PROXY_INVALID;
	cmd = buf[12] & 0x0f;
	fam = buf[13];
	body = (size_t)buf[14] << 8 | buf[15];
	if (cmd > 1 || V2_HDR + body > PROXY_V2_MAX)
		return PROXY_INVALID;
	if (len < V2_HDR + body)
		return PROXY_AGAIN;
	pi->version = 2;
	*consumed = V2_HDR + body;
	if (cmd == 0) { /* LOCAL: the connection's own addresses */
		pi->local = true;
		return PROXY_OK;
	}
	switch (fam) {
	case 0x11: { /* TCP over IPv4 */
		struct sockaddr_in *s = (struct sockaddr_in *)&pi->src;
		struct sockaddr_in *d = (struct sockaddr_in *)&pi->dst;

		need = 12;
		if (body < need)
			return PROXY_INVALID;
		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, buf + 16, 4);
		memcpy(&d->sin_addr, buf + 20, 4);
		memcpy(&s->sin_port, buf + 24, 2);
		memcpy(&d->sin_port, buf + 26, 2);
		pi->src_len = pi->dst_len = sizeof(*s);
		return PROXY_OK;
	}
	case 0x21: { /* TCP over IPv6 */
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&pi->src;
		struct sockaddr_in6 *d = (struct sockaddr_in6 *)&pi->dst;

		need = 36;
		if (body < need)
			return PROXY_INVALID;
		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, buf + 16, 16);
		memcpy(&d->sin6_addr, buf + 32, 16);
		memcpy(&s->sin6_port, buf + 48, 2);
		memcpy(&d->sin6_port, buf + 50, 2);
		pi->src_len = pi->dst_len = sizeof(*s);
		return PROXY_OK;
	}
	case 0x00: /* UNSPEC */
	case 0x31: /* UNIX stream */
		pi->local = true;
		return PROXY_OK;
	default:
		return PROXY_INVALID;
	}
}

enum proxy_parse proxy_parse(const uint8_t *buf, size_t len, struct proxy_info *pi,
			     size_t *consumed)
{
	size_t n;

	memset(pi, 0, sizeof(*pi));
	if (len == 0)
		return PROXY_AGAIN;
	if (buf[0] == 'P') {
		n = len < 6 ? len : 6;
		if (memcmp(buf, "PROXY ", n))
			return PROXY_INVALID;
		return len < 6 ? PROXY_AGAIN : parse_v1(buf, len, pi, consumed);
	}
	n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
	if (memcmp(buf, v2_sig, n))
		return PROXY_INVALID;
	return len < sizeof(v2_sig) ? PROXY_AGAIN : parse_v2(buf, len, pi, consumed);
}

size_t proxy_v1_encode(char *out, size_t cap, const struct sockaddr *src,
		       const struct sockaddr *dst)
{
	char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
	int n;

	if (!src || !dst || src->sa_family != dst->sa_family ||
	    (src->sa_family != AF_INET && src->sa_family != AF_INET6)) {
		n = snprintf(out, cap, "PROXY UNKNOWN\r\n");
	} else if (src->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)src, *d = (const void *)dst;

		inet_ntop(AF_INET, &s->sin_addr, a, sizeof(a));
		inet_ntop(AF_INET, &d->sin_addr, b, sizeof(b));
		n = snprintf(out, cap, "PROXY TCP4 %s %s %u %u\r\n", a, b, ntohs(s->sin_port),
			     ntohs(d->sin_port));
	} else {
		const struct sockaddr_in6 *s = (const void *)src, *d = (const void *)dst;

		inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof(a));
		inet_ntop(AF_INET6, &d->sin6_addr, b, sizeof(b));
		n = snprintf(out, cap, "PROXY TCP6 %s %s %u %u\r\n", a, b, ntohs(s->sin6_port),
			     ntohs(d->sin6_port));
	}
	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static size_t put_tlv(uint8_t *out, size_t off, size_t cap, uint8_t type, const void *v, size_t n)
{
	if (off + 3 + n > cap || n > 0xffff)
		return 0;
	out[off] = type;
	out[off + 1] = (uint8_t)(n >> 8);
	out[off + 2] = (uint8_t)n;
	memcpy(out + off + 3, v, n);
	return off + 3 + n;
}

size_t proxy_v2_encode(uint8_t *out, size_t cap, const struct sockaddr *src,
		       const struct sockaddr *dst, const struct proxy_tls_info *tls)
{
	size_t off = V2_HDR;

	if (cap < V2_HDR + 36)
		return 0;
	memcpy(out, v2_sig, sizeof(v2_sig));
	if (!src || !dst || src->sa_family != dst->sa_family) {
		out[12] = 0x20; /* LOCAL */
		out[13] = 0x00;
	} else if (src->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)src, *d = (const void *)dst;

		out[12] = 0x21;
		out[13] = 0x11;
		memcpy(out + 16, &s->sin_addr, 4);
		memcpy(out + 20, &d->sin_addr, 4);
		memcpy(out + 24, &s->sin_port, 2);
		memcpy(out + 26, &d->sin_port, 2);
		off += 12;
	} else if (src->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const void *)src, *d = (const void *)dst;

		out[12] = 0x21;
		out[13] = 0x21;
		memcpy(out + 16, &s->sin6_addr, 16);
		memcpy(out + 32, &d->sin6_addr, 16);
		memcpy(out + 48, &s->sin6_port, 2);
		memcpy(out + 50, &d->sin6_port, 2);
		off += 36;
	} else {
		out[12] = 0x20;
		out[13] = 0x00;
	}
	if (tls && out[12] == 0x21) {
		uint8_t ssl[256];
		size_t n = 5;

		if (tls->sni &&
		    !(off = put_tlv(out, off, cap, PP2_TYPE_AUTHORITY, tls->sni, strlen(tls->sni))))
			return 0;
		/* client flags, then verify (0: no client certificate checked) */
		ssl[0] = PP2_CLIENT_SSL;
		memset(ssl + 1, 0, 4);
		if (tls->version && !(n = put_tlv(ssl, n, sizeof(ssl), PP2_SUBTYPE_SSL_VERSION,
						  tls->version, strlen(tls->version))))
			return 0;
		if (tls->cipher && !(n = put_tlv(ssl, n, sizeof(ssl), PP2_SUBTYPE_SSL_CIPHER,
						 tls->cipher, strlen(tls->cipher))))
			return 0;
		if (!(off = put_tlv(out, off, cap, PP2_TYPE_SSL, ssl, n)))
			return 0;
	}
	out[14] = (uint8_t)((off - V2_HDR) >> 8);
	out[15] = (uint8_t)(off - V2_HDR);
	return off;
}
