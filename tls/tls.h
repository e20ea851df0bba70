/* tls.h - BoringSSL for mxlb: contexts built from the configuration's tls:
 * section (tls.c), and a TLS engine driven over memory (tls_io.c):
 * ciphertext is fed in from the ring's buffers and taken out as heap
 * blocks to send, so the engine never touches a socket and holds no buffer
 * between records. tls/conn_tls.h makes the engine a conn's transport.
 *
 * Contexts: one per cfg_tls, with a server side when it has certificates
 * (picked per handshake by SNI, then by what the client can verify: ECDSA
 * when it offers ecdsa_secp256r1_sha256, else RSA) and a client side for
 * backends (ca, verify, server_name). Session tickets use keys shared by
 * every context and worker of the process, rotated every TLS_TICKET_ROTATE_S
 * seconds; the previous key still decrypts (and the ticket is renewed), so
 * resumption survives rotations and reloads.
 */
#ifndef MXLB_TLS_H
#define MXLB_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

#define TLS_TICKET_ROTATE_S (12 * 3600)

struct tls_ctx;
struct tls_io;

/* Build the context of cfg, loading its certificates and keys, and with
 * client, the client side (its CA file). NULL and "FILE:LINE:COLUMN:
 * message" (the context's position, the file named) in err on failure. */
struct tls_ctx *tls_ctx_new(const struct config *cfg, const struct cfg_tls *t, bool client,
			    char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *ctx);
bool tls_ctx_has_certs(const struct tls_ctx *ctx);

/* One connection's engine. Server side: ctx needs certificates. Client
 * side: host is the name to send as SNI and, with verify, to check (the
 * context's server_name wins when set). */
struct tls_io *tls_io_server(struct tls_ctx *ctx);
struct tls_io *tls_io_client(struct tls_ctx *ctx, const char *host);
void tls_io_free(struct tls_io *t);

/* Ciphertext received: the engine reads from p..p+len until it needs more.
 * Bytes it has not read yet stay there: tls_io_input_left(). */
void tls_io_input(struct tls_io *t, const char *p, size_t len);
size_t tls_io_input_left(const struct tls_io *t);
const char *tls_io_input_left_ptr(const struct tls_io *t);

enum tls_res {
	TLS_OK = 1,	 /* done: the handshake completed, or bytes were read */
	TLS_WANT = 0,	 /* needs more input */
	TLS_ERROR = -1,	 /* fatal: alert sent (take the output), connection done */
	TLS_CLOSED = -2, /* the peer sent close_notify */
};

/* Drive the handshake. TLS_ERROR: tls_io_error() says why. */
enum tls_res tls_io_handshake(struct tls_io *t);
bool tls_io_established(const struct tls_io *t);
/* Plaintext into buf; *n set on TLS_OK. */
enum tls_res tls_io_read(struct tls_io *t, char *buf, size_t cap, size_t *n);
/* Encrypt all of p (after the handshake); 0 or -1. */
int tls_io_write(struct tls_io *t, const char *p, size_t len);
/* Queue a close_notify (once). */
void tls_io_close_notify(struct tls_io *t);
/* Whether SSL holds decrypted bytes not read yet. */
bool tls_io_pending(const struct tls_io *t);

/* The ciphertext produced so far (malloc'd, the caller frees), or NULL. */
char *tls_io_take_output(struct tls_io *t, size_t *len);
bool tls_io_has_output(const struct tls_io *t);

/* After the handshake: "TLSv1.3", the cipher's standard name, the SNI
 * (server side: what the client sent; NULL when none), resumed or not. */
const char *tls_io_version(const struct tls_io *t);
uint16_t tls_io_version_num(const struct tls_io *t);
const char *tls_io_cipher(const struct tls_io *t);
const char *tls_io_sni(const struct tls_io *t);
bool tls_io_resumed(const struct tls_io *t);
/* Why the handshake failed, for the log (static or per-thread text). */
const char *tls_io_error(const struct tls_io *t);

/* Process-wide setup (the BIO method, ticket keys). 0 or -1. */
int tls_init(void);

#endif
