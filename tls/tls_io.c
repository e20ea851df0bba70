/* tls_io.c - the engine of tls.h: one SSL over a memory BIO that reads
 * the ciphertext fed in and appends what it writes to a heap block. */
#include "tls/tls_int.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#define OUT_MIN 4096

struct tls_io {
	SSL *ssl;
	const char *in;
	size_t in_len;
	char *out;
	size_t out_len, out_cap;
	bool established, notified;
	const char *err;
};

static BIO_METHOD *io_method;

/* ---- the memory BIO: reads from the fed buffer, appends to out ---- */

static int io_read(BIO *b, char *buf, int len)
{
	struct tls_io *t = BIO_get_data(b);
	size_t n;

	BIO_clear_retry_flags(b);
	if (!t->in_len) {
		BIO_set_retry_read(b);
		return -1;
	}
	n = t->in_len < (size_t)len ? t->in_len : (size_t)len;
	memcpy(buf, t->in, n);
	t->in += n;
	t->in_len -= n;
	return (int)n;
}

static int io_write(BIO *b, const char *buf, int len)
{
	struct tls_io *t = BIO_get_data(b);
	size_t need = t->out_len + (size_t)len;

	BIO_clear_retry_flags(b);
	if (need > t->out_cap) {
		size_t cap = t->out_cap ? t->out_cap : OUT_MIN;
		char *p;

		while (cap < need)
			cap *= 2;
		p = realloc(t->out, cap);
		if (!p)
			return -1;
		t->out = p;
		t->out_cap = cap;
	}
	memcpy(t->out + t->out_len, buf, (size_t)len);
	t->out_len = need;
	return len;
}

static long io_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

int tls_io_init(void)
{
	if (io_method)
		return 0;
	io_method = BIO_meth_new(BIO_TYPE_SOURCE_SINK | 0x80, "mxlb");
	if (!io_method || !BIO_meth_set_read(io_method, io_read) ||
	    !BIO_meth_set_write(io_method, io_write) || !BIO_meth_set_ctrl(io_method, io_ctrl))
		return -1;
	return 0;
}

/* ---- one connection ---- */

static struct tls_io *io_new(SSL_CTX *ctx)
{
	struct tls_io *t = calloc(1, sizeof(*t));
	BIO *b;

	if (!t)
		return NULL;
	t->ssl = SSL_new(ctx);
	b = BIO_new(io_method);
	if (!t->ssl || !b) {
		BIO_free(b);
		tls_io_free(t);
		return NULL;
	}
	BIO_set_data(b, t);
	BIO_set_init(b, 1);
	SSL_set_bio(t->ssl, b, b);
	return t;
}

struct tls_io *tls_io_server(struct tls_ctx *tc)
{
	struct tls_io *t = io_new(tc->server);

	if (!t)
		return NULL;
	SSL_set_accept_state(t->ssl);
	/* the handshake's configuration is freed once it is done */
	SSL_set_shed_handshake_config(t->ssl, 1);
	return t;
}

static bool is_ip(const char *s)
{
	struct in6_addr a;

	return inet_pton(AF_INET, s, &a) == 1 || inet_pton(AF_INET6, s, &a) == 1;
}

struct tls_io *tls_io_client(struct tls_ctx *tc, const char *host)
{
	struct tls_io *t = io_new(tc->client);
	const char *name = tc->cfg->server_name[0] ? tc->cfg->server_name : host;

	if (!t)
		return NULL;
	SSL_set_connect_state(t->ssl);
	if (name && name[0] && !is_ip(name)) {
		SSL_set_tlsext_host_name(t->ssl, name);
		if (tc->cfg->verify)
			SSL_set1_host(t->ssl, name);
	} else if (name && name[0] && tc->cfg->verify) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), name);
	}
	return t;
}

void tls_io_free(struct tls_io *t)
{
	if (!t)
		return;
	SSL_free(t->ssl);
	free(t->out);
	free(t);
}

void tls_io_input(struct tls_io *t, const char *p, size_t len)
{
	t->in = p;
	t->in_len = len;
}

size_t tls_io_input_left(const struct tls_io *t)
{
	return t->in_len;
}

const char *tls_io_input_left_ptr(const struct tls_io *t)
{
	return t->in;
}

static enum tls_res io_result(struct tls_io *t, int ret)
{
	switch (SSL_get_error(t->ssl, ret)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return TLS_WANT;
	case SSL_ERROR_ZERO_RETURN:
		return TLS_CLOSED;
	case SSL_ERROR_SSL: {
		long v = SSL_get_verify_result(t->ssl);

		t->err = v != X509_V_OK ? X509_verify_cert_error_string(v) : tls_ssl_reason();
		ERR_clear_error();
		return TLS_ERROR;
	}
	default:
		t->err = "connection error";
		ERR_clear_error();
		return TLS_ERROR;
	}
}

enum tls_res tls_io_handshake(struct tls_io *t)
{
	int ret;

	if (t->established)
		return TLS_OK;
	ret = SSL_do_handshake(t->ssl);
	if (ret == 1) {
		t->established = true;
		return TLS_OK;
	}
	return io_result(t, ret);
}

bool tls_io_established(const struct tls_io *t)
{
	return t->established;
}

enum tls_res tls_io_read(struct tls_io *t, char *buf, size_t cap, size_t *n)
{
	int ret = SSL_read(t->ssl, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);

	if (ret > 0) {
		*n = (size_t)ret;
		return TLS_OK;
	}
	return io_result(t, ret);
}

int tls_io_write(struct tls_io *t, const char *p, size_t len)
{
	while (len) {
		int chunk = len > 16384 ? 16384 : (int)len;
		int ret = SSL_write(t->ssl, p, chunk);

		if (ret <= 0) {
			io_result(t, ret);
			return -1;
		}
		p += ret;
		len -= (size_t)ret;
	}
	return 0;
}

void tls_io_close_notify(struct tls_io *t)
{
	if (t->notified || !t->established)
		return;
	t->notified = true;
	SSL_shutdown(t->ssl);
	ERR_clear_error();
}

bool tls_io_pending(const struct tls_io *t)
{
	return SSL_pending(t->ssl) > 0;
}

char *tls_io_take_output(struct tls_io *t, size_t *len)
{
	char *p = t->out;

	if (!t->out_len)
		return NULL;
	*len = t->out_len;
	t->out = NULL;
	t->out_len = t->out_cap = 0;
	return p;
}

bool tls_io_has_output(const struct tls_io *t)
{
	return t->out_len > 0;
}

const char *tls_io_version(const struct tls_io *t)
{
	return SSL_get_version(t->ssl);
}

uint16_t tls_io_version_num(const struct tls_io *t)
{
	return SSL_version(t->ssl);
}

const char *tls_io_cipher(const struct tls_io *t)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);

	return c ? SSL_CIPHER_get_name(c) : NULL;
}

const char *tls_io_sni(const struct tls_io *t)
{
	return SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
}

bool tls_io_resumed(const struct tls_io *t)
{
	return SSL_session_reused(t->ssl);
}

const char *tls_io_error(const struct tls_io *t)
{
	return t->err ? t->err : "handshake failed";
}
