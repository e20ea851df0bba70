/* dns_wire.c - the resolver's pure parsers: answers read into entries,
 * names checked and keyed, an address's DNSBL (or reverse) name, and an
 * answer's lifetime. */
#include "proxy/dns_int.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void parse_addrs(struct dns_entry *e, const uint8_t *abuf, int alen)
{
	struct ares_addrttl a4[DNS_ADDRS_MAX];
	struct ares_addr6ttl a6[DNS_ADDRS_MAX];
	int n = DNS_ADDRS_MAX, rc;
	size_t sz = e->type == DNS_T_A ? 4 : 16;

	if (e->type == DNS_T_A)
		rc = ares_parse_a_reply(abuf, alen, NULL, a4, &n);
	else
		rc = ares_parse_aaaa_reply(abuf, alen, NULL, a6, &n);
	if (rc == ARES_ENODATA || (rc == ARES_SUCCESS && n <= 0)) {
		e->st = DNS_NOTFOUND;
		return;
	}
	if (rc != ARES_SUCCESS || !(e->data = malloc((size_t)n * sz)))
		return; /* DNS_TEMPFAIL */
	for (int i = 0; i < n; i++)
		memcpy(e->data + (size_t)i * sz,
		       e->type == DNS_T_A ? (const void *)&a4[i].ipaddr
					  : (const void *)&a6[i].ip6addr,
		       sz);
	e->n = (uint16_t)n;
	e->st = DNS_OK;
}

/* Lower case, without the final dot; false when it does not fit. */
bool name_key(const char *name, char *out, size_t cap)
{
	size_t len = strlen(name);

	if (len && name[len - 1] == '.')
		len--;
	if (!len || len > DNS_NAME_MAX || len >= cap)
		return false;
	for (size_t i = 0; i < len; i++)
		out[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
	out[len] = '\0';
	return true;
}

void parse_ptr(struct dns_entry *e, const uint8_t *abuf, int alen)
{
	static const uint8_t dummy[16];
	struct hostent *h = NULL;
	const char *names[DNS_PTR_MAX + 1];
	char key[DNS_NAME_MAX + 2];
	size_t n = 0, size = 0, off = 0;
	int rc = ares_parse_ptr_reply(abuf, alen, dummy, 4, AF_INET, &h);

	if (rc == ARES_ENODATA) {
		e->st = DNS_NOTFOUND;
		return;
	}
	if (rc != ARES_SUCCESS)
		return;
	/* c-ares lists every PTR name among the aliases (h_name is the last) */
	for (char **a = h->h_aliases; a && *a && n < DNS_PTR_MAX; a++)
		names[n++] = *a;
	if (!n && h->h_name)
		names[n++] = h->h_name;
	for (size_t i = 0; i < n; i++)
		size += strlen(names[i]) + 1;
	e->data = malloc(size ? size : 1);
	if (!e->data) {
		ares_free_hostent(h);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (!name_key(names[i], key, sizeof(key)))
			continue;
		memcpy(e->data + off, key, strlen(key) + 1);
		off += strlen(key) + 1;
		e->n++;
	}
	ares_free_hostent(h);
	e->st = e->n ? DNS_OK : DNS_NOTFOUND;
}

/* A name Postfix would take (its valid_hostname()): labels of letters,
 * digits, '-' and '_', no label starting or ending with '-', and not all
 * digits (which would pass for an address). */
bool valid_hostname(const char *s)
{
	size_t label = 0, len = strlen(s);
	bool alpha = false;

	if (!len || len > DNS_NAME_MAX)
		return false;
	for (size_t i = 0; i <= len; i++) {
		char c = s[i];

		if (c == '.' || c == '\0') {
			if (!label || label > 63 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (c == '-' && !label)
			return false;
		if (!(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') &&
		    c != '-' && c != '_')
			return false;
		if (!(c >= '0' && c <= '9'))
			alpha = true;
		label++;
	}
	return alpha;
}

int dns_dnsbl_name(const union sockaddr_any *a, const char *domain, char *out, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *b;
	int n;

	if (a->sa.sa_family == AF_INET ||
	    (a->sa.sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a->sin6.sin6_addr))) {
		b = a->sa.sa_family == AF_INET ? (const uint8_t *)&a->sin.sin_addr
					       : &a->sin6.sin6_addr.s6_addr[12];
		n = snprintf(out, len, "%u.%u.%u.%u.%s", b[3], b[2], b[1], b[0], domain);
		return n < 0 || (size_t)n >= len ? -1 : 0;
	}
	if (a->sa.sa_family != AF_INET6 || len < 64 + 1)
		return -1;
	b = a->sin6.sin6_addr.s6_addr;
	for (int i = 15, o = 0; i >= 0; i--, o += 4) {
		out[o] = hex[b[i] & 15];
		out[o + 1] = '.';
		out[o + 2] = hex[b[i] >> 4];
		out[o + 3] = '.';
	}
	n = snprintf(out + 64, len - 64, "%s", domain);
	return n < 0 || (size_t)n >= len - 64 ? -1 : 0;
}

/* ---- the answer's lifetime: a pure parser ---- */

/* Past the (possibly compressed) name at off; 0 when it does not parse. */
static size_t skip_name(const uint8_t *m, size_t len, size_t off)
{
	while (off < len) {
		uint8_t l = m[off];

		if (l == 0)
			return off + 1;
		if ((l & 0xC0) == 0xC0)
			return off + 2 <= len ? off + 2 : 0;
		if (l & 0xC0)
			return 0;
		off += 1 + (size_t)l;
	}
	return 0;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

long dns_answer_ttl(const uint8_t *m, size_t len)
{
	unsigned qd, an, ns;
	size_t off = 12;
	long best = -1, soa = -1;

	if (len < 12)
		return -1;
	qd = (unsigned)m[4] << 8 | m[5];
	an = (unsigned)m[6] << 8 | m[7];
	ns = (unsigned)m[8] << 8 | m[9];
	for (unsigned i = 0; i < qd; i++) {
		off = skip_name(m, len, off);
		if (!off || off + 4 > len)
			return -1;
		off += 4;
	}
	for (unsigned i = 0; i < an + ns; i++) {
		uint16_t type, rdlen;
		uint32_t ttl;

		off = skip_name(m, len, off);
		if (!off || off + 10 > len)
			return -1;
		type = (uint16_t)(m[off] << 8 | m[off + 1]);
		ttl = be32(m + off + 4);
		rdlen = (uint16_t)(m[off + 8] << 8 | m[off + 9]);
		off += 10;
		if (off + rdlen > len)
			return -1;
		/* RFC 2181 8: a TTL with the top bit set counts as 0 */
		if (ttl > 0x7fffffffu)
			ttl = 0;
		if (i < an) {
			if (best < 0 || (long)ttl < best)
				best = (long)ttl;
		} else if (type == DNS_T_SOA && rdlen >= 22 && soa < 0) {
			uint32_t min = be32(m + off + rdlen - 4);

			if (min > 0x7fffffffu)
				min = 0;
			soa = (long)(ttl < min ? ttl : min);
		}
		off += rdlen;
	}
	return an ? best : soa;
}
