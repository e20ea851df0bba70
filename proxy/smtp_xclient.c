/* smtp_xclient.c - the XCLIENT handoff's command (SPEC §4, §9): the
 * attributes the backend's EHLO offers, the line with this client's ADDR,
 * PORT, HELO, PROTO and, where offered, NAME, DESTADDR and DESTPORT, in
 * xtext; and which listeners hand off by XCLIENT at all (their clients'
 * names are looked up at accept). smtp_back.c sends it in its dialogue.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "proxy/dns.h"
#include "proxy/proxy.h"
#include "proxy/smtp_parse.h"

/* XCLIENT attributes sent only where the backend's EHLO reply names them
 * (ADDR, PORT, HELO and PROTO always go). */
#define XA_NAME 0x1u
#define XA_DESTADDR 0x2u
#define XA_DESTPORT 0x4u

/* xtext (RFC 3461) for XCLIENT attribute values */
static size_t xtext(char *out, size_t cap, const char *in)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (; *in && n + 4 < cap; in++) {
		unsigned char c = (unsigned char)*in;

		if (c < 33 || c > 126 || c == '+' || c == '=') {
			out[n++] = '+';
			out[n++] = hex[c >> 4];
			out[n++] = hex[c & 15];
		} else {
			out[n++] = (char)c;
		}
	}
	out[n] = '\0';
	return n;
}

/* An address as XCLIENT writes it: IPv4 dotted, "IPV6:" and the IPv6
 * text, or [UNAVAILABLE]; *port 0 when unknown. */
static void xclient_addr(const union sockaddr_any *a, char *out, size_t cap, unsigned *port)
{
	snprintf(out, cap, "[UNAVAILABLE]");
	*port = 0;
	if (a->sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &a->sin.sin_addr, out, (socklen_t)cap);
		*port = ntohs(a->sin.sin_port);
	} else if (a->sa.sa_family == AF_INET6) {
		const struct in6_addr *a6 = &a->sin6.sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			inet_ntop(AF_INET, &a6->s6_addr[12], out, (socklen_t)cap);
		} else {
			memcpy(out, "IPV6:", 5);
			inet_ntop(AF_INET6, a6, out + 5, (socklen_t)(cap - 5));
		}
		*port = ntohs(a->sin6.sin6_port);
	}
}

/* Room for every attribute at its longest (a host name has at most 253
 * octets, the encoded EHLO name is cut at 255); Postfix reads command
 * lines of up to 2048 octets (line_length_limit). */
#define XCLIENT_LINE_MAX 1024

/* printf at the end of line (n used of XCLIENT_LINE_MAX); -1 in n from
 * the first part that does not fit. */
static void __attribute__((format(printf, 3, 4)))
xclient_put(char *line, int *n, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (*n < 0)
		return;
	va_start(ap, fmt);
	k = vsnprintf(line + *n, XCLIENT_LINE_MAX - (size_t)*n, fmt, ap);
	va_end(ap);
	*n = k < 0 || (size_t)k >= XCLIENT_LINE_MAX - (size_t)*n ? -1 : *n + k;
}

void xclient_send(struct session *s)
{
	char addr[INET6_ADDRSTRLEN + 8], daddr[INET6_ADDRSTRLEN + 8], helo[256], name[3 * 256];
	char line[XCLIENT_LINE_MAX];
	unsigned port, dport;
	int n = 0;

	if ((s->xclient_attrs & XA_NAME) && s->name_q) {
		/* the lookup's own deadline ends this wait (on_client_name) */
		s->name_wait = true;
		s->action = "waiting for the client's name";
		return;
	}
	xclient_addr(&s->peer, addr, sizeof(addr), &port);
	xtext(helo, sizeof(helo), s->ehlo_name);
	xclient_put(line, &n, "XCLIENT ADDR=%s PORT=%u HELO=%s PROTO=%s", addr, port, helo,
		    s->esmtp ? "ESMTP" : "SMTP");
	if (s->xclient_attrs & XA_NAME) {
		/* never asked would be our bug: say "try later", not "none" */
		enum dns_status st = s->name_known ? s->name_st : DNS_TEMPFAIL;

		if (st == DNS_OK)
			xtext(name, sizeof(name), s->client_name);
		xclient_put(line, &n, " NAME=%s",
			    st == DNS_OK	 ? name
			    : st == DNS_NOTFOUND ? "[UNAVAILABLE]"
						 : "[TEMPUNAVAIL]");
	}
	if (s->xclient_attrs & (XA_DESTADDR | XA_DESTPORT)) {
		socklen_t len = sizeof(s->local);

		/* behind a PROXY header, what it named; else this socket's */
		if (!s->local.sa.sa_family && s->client)
			getsockname(s->client->fd, &s->local.sa, &len);
		xclient_addr(&s->local, daddr, sizeof(daddr), &dport);
		if (s->xclient_attrs & XA_DESTADDR)
			xclient_put(line, &n, " DESTADDR=%s", daddr);
		if ((s->xclient_attrs & XA_DESTPORT) && dport)
			xclient_put(line, &n, " DESTPORT=%u", dport);
		else if (s->xclient_attrs & XA_DESTPORT)
			xclient_put(line, &n, " DESTPORT=[UNAVAILABLE]");
	}
	xclient_put(line, &n, "\r\n");
	if (n > 0 && conn_send_copy(s->back, line, (size_t)n) < 0)
		session_close(s, R_ERROR, "backend send queue full");
}

/* Whether any pool the listener routes to hands off by XCLIENT to one of
 * its backends. */
static bool pool_xclient(const struct cfg_pool *p)
{
	for (size_t i = 0; p && i < p->nbackends; i++)
		if (p->backends[i].handoff == CFG_HANDOFF_XCLIENT)
			return true;
	return false;
}

bool listener_xclient(const struct cfg_listener *l)
{
	if (pool_xclient(l->pool))
		return true;
	for (size_t i = 0; i < l->nroutes; i++)
		if (pool_xclient(l->routes[i].pool))
			return true;
	return false;
}

static bool xclient_line(void *arg, const struct smtp_ehlo_line *l)
{
	static const struct {
		const char *name;
		uint8_t bit;
	} attrs[] = { { "NAME", XA_NAME },
		      { "DESTADDR", XA_DESTADDR },
		      { "DESTPORT", XA_DESTPORT } };
	const char *p = l->text + 7, *end = l->text + l->text_len; /* after "XCLIENT" */
	uint8_t *mask = arg;

	if (l->ext != SMTP_EXT_XCLIENT)
		return true;
	while (p < end) {
		const char *w;

		while (p < end && *p == ' ')
			p++;
		for (w = p; p < end && *p != ' '; p++)
			;
		for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++)
			if ((size_t)(p - w) == strlen(attrs[i].name) &&
			    !strncasecmp(w, attrs[i].name, (size_t)(p - w)))
				*mask |= attrs[i].bit;
	}
	return false;
}

/* What the backend's XCLIENT line offers beyond ADDR, PORT, HELO, PROTO
 * ("250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT"): a
 * backend refuses an attribute it does not know (501). */
void xclient_note_attrs(struct session *s, const char *reply, size_t len)
{
	s->xclient_attrs = 0;
	smtp_ehlo_each(reply, len, xclient_line, &s->xclient_attrs);
}
