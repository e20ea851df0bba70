/* tls_int.h - private to tls/: what the engine (tls_io.c) needs of a
 * context (tls.c). */
#ifndef MXLB_TLS_INT_H
#define MXLB_TLS_INT_H

#include <openssl/ssl.h>

#include "tls/tls.h"

struct tls_cert;

struct tls_ctx {
	const struct cfg_tls *cfg;
	SSL_CTX *server; /* NULL without certificates */
	SSL_CTX *client;
	struct tls_cert *certs;
	size_t ncerts;
};

/* The engine's BIO method, made once per process. 0 or -1. */
int tls_io_init(void);
/* The reason of the last error on the thread's queue, which it clears. */
const char *tls_ssl_reason(void);

#endif
