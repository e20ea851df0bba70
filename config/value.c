/* value.c - the value parsers of config.h: durations, sizes, addresses and
 * CIDRs from C strings, and the address predicates. Pure but for
 * config_parse_addr()'s name lookups; no YAML, so the bench tools link this
 * file alone.
 */
#include "config/config_int.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const cfg_tls_kinds[] = { "none", "starttls", "implicit", NULL };
const char *const cfg_handoffs[] = { "none", "proxy_v1", "proxy_v2", "xclient", NULL };

static bool resolver_offline;

void config_set_resolver_offline(bool offline)
{
	resolver_offline = offline;
}

const char *config_handoff_name(enum cfg_handoff h)
{
	return (unsigned)h <= CFG_HANDOFF_XCLIENT ? cfg_handoffs[h] : "?";
}

bool cfg_all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* "250ms", "5s", "10m", "1h": digits then exactly one unit; the result
 * must fit in 32 bits of milliseconds (about 49 days). */
int config_parse_duration(const char *s, uint32_t *ms)
{
	unsigned long long v = 0, mul;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	while (*p >= '0' && *p <= '9') {
		v = v * 10 + (unsigned long long)(*p++ - '0');
		if (v > UINT32_MAX)
			return -1;
	}
	if (!strcmp(p, "ms"))
		mul = 1;
	else if (!strcmp(p, "s"))
		mul = 1000;
	else if (!strcmp(p, "m"))
		mul = 60000;
	else if (!strcmp(p, "h"))
		mul = 3600000;
	else
		return -1;
	if (v * mul > UINT32_MAX)
		return -1;
	*ms = (uint32_t)(v * mul);
	return 0;
}

/* "512", "64k" (or "64K"), "10M", "1G": powers of 1024. */
int config_parse_size(const char *s, uint64_t *bytes)
{
	unsigned long long v = 0, mul = 1;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	while (*p >= '0' && *p <= '9') {
		unsigned d = (unsigned)(*p++ - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	if (*p == 'k' || *p == 'K')
		mul = 1024;
	else if (*p == 'M')
		mul = 1024 * 1024;
	else if (*p == 'G')
		mul = 1024ull * 1024 * 1024;
	else if (*p)
		return -1;
	if (*p && p[1])
		return -1;
	if (v > UINT64_MAX / mul)
		return -1;
	*bytes = v * mul;
	return 0;
}

/* Splits "host:port" or "[v6]:port"; host gets the host without brackets.
 * Pure: no resolution. */
static int split_addr(const char *s, char host[256], const char **port)
{
	const char *end;
	size_t hlen;

	if (s[0] == '[') {
		end = strchr(s, ']');
		if (!end || end[1] != ':')
			return -1;
		hlen = (size_t)(end - s - 1);
		s++;
	} else {
		end = strchr(s, ':');
		if (!end || strchr(end + 1, ':'))
			return -1; /* a bare v6 address needs brackets */
		hlen = (size_t)(end - s);
	}
	if (hlen == 0 || hlen >= 256)
		return -1;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	*port = strchr(end, ':') + 1;
	return 0;
}

enum cfg_addr_err cfg_parse_addr(const char *s, struct cfg_addr *out, int *gai)
{
	char host[256];
	const char *port;
	struct addrinfo hints, *res = NULL;
	unsigned long p;
	int r;

	memset(out, 0, sizeof(*out));
	if (strlen(s) >= sizeof(out->text) || split_addr(s, host, &port) < 0)
		return CFG_ADDR_SYNTAX;
	/* for the message, also when the name does not resolve */
	snprintf(out->host, sizeof(out->host), "%s", host);
	if (!cfg_all_digits(port) || strlen(port) > 5 || (p = strtoul(port, NULL, 10)) == 0 ||
	    p > 65535)
		return CFG_ADDR_PORT;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	hints.ai_family = s[0] == '[' ? AF_INET6 : AF_UNSPEC;
	if (getaddrinfo(host, port, &hints, &res) != 0) {
		/* a name: never in brackets, and not looked up when offline */
		if (s[0] == '[')
			return CFG_ADDR_BRACKETS;
		if (resolver_offline && strcmp(host, "localhost"))
			return CFG_ADDR_OFFLINE;
		hints.ai_flags = AI_NUMERICSERV;
		r = getaddrinfo(host, port, &hints, &res);
		if (r != 0) {
			*gai = r;
			return CFG_ADDR_RESOLVE;
		}
	}
	if (res->ai_addrlen > sizeof(out->ss)) {
		freeaddrinfo(res);
		return CFG_ADDR_SYNTAX;
	}
	memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	freeaddrinfo(res);
	snprintf(out->text, sizeof(out->text), "%s", s);
	return CFG_ADDR_OK;
}

int config_parse_addr(const char *s, struct cfg_addr *out)
{
	int gai;

	return cfg_parse_addr(s, out, &gai) == CFG_ADDR_OK ? 0 : -1;
}

/* The bits of a 16-byte address that prefix keeps, byte i of them. */
static uint8_t prefix_mask(unsigned prefix, unsigned i)
{
	unsigned keep = prefix > i * 8 ? (prefix - i * 8 >= 8 ? 8 : prefix - i * 8) : 0;

	return (uint8_t)(0xff00u >> keep);
}

int config_parse_cidr(const char *s, struct cfg_cidr *out)
{
	char addr[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	unsigned long prefix;

	memset(out, 0, sizeof(*out));
	if (alen == 0 || alen >= sizeof(addr))
		return -1;
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET, addr, out->addr) == 1) {
		out->family = AF_INET;
		prefix = 32;
	} else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
		out->family = AF_INET6;
		prefix = 128;
	} else {
		return -1;
	}
	if (slash) {
		unsigned long max = prefix;

		if (!cfg_all_digits(slash + 1) || strlen(slash + 1) > 3)
			return -1;
		prefix = strtoul(slash + 1, NULL, 10);
		if (prefix > max)
			return -1;
	}
	out->prefix = (unsigned)prefix;
	for (unsigned i = 0; i < 16; i++) /* mask the host bits */
		out->addr[i] &= prefix_mask(out->prefix, i);
	return 0;
}

/* A v4 CIDR also matches v4-mapped v6 addresses (clients of a "[::]"
 * listener), and a v6 CIDR matches v4 addresses in their mapped form. */
bool config_cidr_match(const struct cfg_cidr *c, const struct sockaddr *sa)
{
	const uint8_t *a;
	uint8_t mapped[16];

	if (sa->sa_family == AF_INET && c->family == AF_INET) {
		a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		if (c->family == AF_INET) {
			if (!IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a))
				return false;
			a += 12;
		}
	} else if (sa->sa_family == AF_INET && c->family == AF_INET6) {
		memset(mapped, 0, 10);
		mapped[10] = mapped[11] = 0xff;
		memcpy(mapped + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		a = mapped;
	} else {
		return false;
	}
	for (unsigned i = 0; i < 16 && i * 8 < c->prefix; i++)
		if ((a[i] & prefix_mask(c->prefix, i)) != c->addr[i])
			return false;
	return true;
}

/* v6 sockets are V6ONLY, so "[::]" does not cover v4. */
bool config_addr_overlap(const struct cfg_addr *a, const struct cfg_addr *b)
{
	if (a->ss.ss_family != b->ss.ss_family)
		return false;
	if (a->ss.ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;

		return x->sin_port == y->sin_port && (x->sin_addr.s_addr == y->sin_addr.s_addr ||
						      x->sin_addr.s_addr == htonl(INADDR_ANY) ||
						      y->sin_addr.s_addr == htonl(INADDR_ANY));
	}
	if (a->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;

		return x->sin6_port == y->sin6_port &&
		       (IN6_ARE_ADDR_EQUAL(&x->sin6_addr, &y->sin6_addr) ||
			IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) ||
			IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr));
	}
	return false;
}

bool config_addr_is_local(const struct cfg_addr *a)
{
	if (a->ss.ss_family == AF_UNIX)
		return true;
	if (a->ss.ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr) >> 24) == 127;
	if (a->ss.ss_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
	return false;
}
