/* proxy_proto.h - the PROXY protocol, v1 (text) and v2 (binary), as
 * specified by HAProxy's proxy-protocol.txt. Pure: no I/O, no allocation.
 */
#ifndef MXLB_PROXY_PROTO_H
#define MXLB_PROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXY_V1_MAX 107  /* the longest v1 line, CRLF included */
#define PROXY_V2_MAX 1024 /* the largest v2 header we accept or build */

enum proxy_parse { PROXY_OK, PROXY_AGAIN, PROXY_INVALID };

struct proxy_info {
	int version; /* 1 or 2 */
	/* true for v2 LOCAL and v1 UNKNOWN (and v2 AF_UNSPEC/AF_UNIX): the
	 * connection's own addresses apply and src/dst are not set */
	bool local;
	struct sockaddr_storage src, dst;
	socklen_t src_len, dst_len;
};

/*
 * Parse a PROXY header at the start of buf[0..len): v1 ("PROXY TCP4 ...")
 * or v2 (the 12-octet signature). OK with *consumed = header length;
 * AGAIN while the header may still be incomplete (no more than needed:
 * a prefix that already cannot be a header is INVALID at once); INVALID
 * for anything malformed, including v1 lines over PROXY_V1_MAX, bad
 * addresses or ports, and v2 headers over PROXY_V2_MAX. v2 TLVs are
 * skipped.
 */
enum proxy_parse proxy_parse(const uint8_t *buf, size_t len, struct proxy_info *pi,
			     size_t *consumed);

/* TLS facts carried as v2 TLVs (PP2_TYPE_SSL with VERSION and CIPHER
 * sub-TLVs, and PP2_TYPE_AUTHORITY for the SNI). NULL fields are left out. */
struct proxy_tls_info {
	const char *version; /* "TLSv1.3" */
	const char *cipher;
	const char *sni;
};

/* Build a v1 header for src -> dst (both AF_INET or both AF_INET6; mixed
 * families or src == NULL give "PROXY UNKNOWN"). Returns its length, or 0
 * when cap is too small. */
size_t proxy_v1_encode(char *out, size_t cap, const struct sockaddr *src,
		       const struct sockaddr *dst);

/* Build a v2 header: PROXY command for src -> dst with optional TLS TLVs,
 * or LOCAL when src == NULL. Returns its length, or 0 when cap is too
 * small. */
size_t proxy_v2_encode(uint8_t *out, size_t cap, const struct sockaddr *src,
		       const struct sockaddr *dst, const struct proxy_tls_info *tls);

#endif
