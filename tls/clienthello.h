/* clienthello.h - read the server name (SNI) from a TLS ClientHello
 * without decrypting anything: what implicit-TLS passthrough routes on.
 * Pure: bytes in, a slice of them out; no I/O, no allocation.
 */
#ifndef MXLB_CLIENTHELLO_H
#define MXLB_CLIENTHELLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 8446 5.1: a record's plaintext is at most 2^14 octets. */
#define TLS_RECORD_MAX 16384
#define TLS_SNI_MAX 255

enum tls_hello { TLS_HELLO_OK, TLS_HELLO_AGAIN, TLS_HELLO_INVALID };

struct tls_hello_info {
	uint16_t version; /* legacy_version of the ClientHello (0x0303 for 1.2 and 1.3) */
	bool has_sni;
	const char *sni; /* host_name, not NUL-terminated; a slice of the input */
	size_t sni_len;
	size_t record_len; /* octets of the first record, header included */
};

/*
 * Parse the ClientHello at the start of buf[0..len).
 * - OK: *info filled; the client's bytes are to be forwarded untouched.
 * - AGAIN: the first record is not complete yet (at most TLS_RECORD_MAX + 5
 *   octets are ever needed).
 * - INVALID: not a TLS handshake record holding a well-formed ClientHello
 *   (a ClientHello split over several records is refused too: clients do
 *   not do that), or a server name that is not a host name.
 */
enum tls_hello tls_parse_client_hello(const uint8_t *buf, size_t len, struct tls_hello_info *info);

#endif
