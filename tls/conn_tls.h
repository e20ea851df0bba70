/* conn_tls.h - TLS as a conn's transport (struct conn_xprt, core/conn.h),
 * over the memory engine of tls/tls.h: ciphertext from the ring's buffers
 * is fed to the engine, each record is decrypted into a worker buffer the
 * handler may keep (as it keeps a received one), and the engine's output
 * is queued as it is. Plaintext sent is encrypted at once and its buffer
 * released.
 *
 * STARTTLS, implicit TLS and TLS to a backend all start one with
 * conn_tls_start(); from then on the handler sees plaintext, and
 * h->handshake is called when the handshake ends.
 */
#ifndef MXLB_CONN_TLS_H
#define MXLB_CONN_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/conn.h"

struct conn_tls;
struct tls_ctx;

/* A transport not started yet, NULL when out of memory. Server side: ctx
 * needs certificates. Client side: host is the name to send as SNI and,
 * with verify, to check (the context's server_name wins when set). */
struct conn_tls *conn_tls_server(struct tls_ctx *ctx);
struct conn_tls *conn_tls_client(struct tls_ctx *ctx, const char *host);

/* TLS on c from now on; takes t. Bytes sent after this are encrypted
 * (sending before the handshake ends fails), bytes received are
 * decrypted before the handler sees them. pre: ciphertext already
 * received (after a PROXY header). A client side sends its ClientHello
 * at once (and a failure to may call h->handshake before this returns).
 * Receiving goes one buffer at a time. */
void conn_tls_start(struct conn *c, struct conn_tls *t, const char *pre, size_t prelen);

/* Whether c is TLS (conn_tls_start() was called on it). */
bool conn_is_tls(const struct conn *c);

/* After the handshake, NULL or 0 on a plain conn: "TLSv1.3", its number
 * (0x0304), the cipher's standard name, the SNI (server side: what the
 * client sent; NULL when none), resumed or not. The strings live as long
 * as c. */
const char *conn_tls_version(const struct conn *c);
uint16_t conn_tls_version_num(const struct conn *c);
const char *conn_tls_cipher(const struct conn *c);
const char *conn_tls_sni(const struct conn *c);
bool conn_tls_resumed(const struct conn *c);
/* Why the handshake failed, for the log (static or per-thread text). */
const char *conn_tls_error(const struct conn *c);

#endif
