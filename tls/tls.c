/* tls.c - the contexts of tls.h: certificates, picking one per
 * handshake, session tickets. The engine is tls_io.c. */
#include "tls/tls_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/pool.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define DEFAULT_CA "/etc/ssl/certs/ca-certificates.crt"
#define CHAIN_MAX 16

struct tls_cert {
	CRYPTO_BUFFER *chain[CHAIN_MAX];
	size_t nchain;
	EVP_PKEY *key;
	bool ecdsa;
	char **names; /* DNS names (subjectAltName, else CN), lower case */
	size_t nnames;
};

/* ---- session tickets: process-wide keys, rotated ---- */

struct ticket_key {
	uint8_t name[16], aes[16], hmac[32];
	time_t born; /* 0: unset */
};

static pthread_mutex_t ticket_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ticket_key ticket_keys[2]; /* current, previous */

static void ticket_rotate_locked(time_t now)
{
	if (ticket_keys[0].born && now - ticket_keys[0].born < TLS_TICKET_ROTATE_S)
		return;
	ticket_keys[1] = ticket_keys[0];
	RAND_bytes(ticket_keys[0].name, sizeof(ticket_keys[0].name));
	RAND_bytes(ticket_keys[0].aes, sizeof(ticket_keys[0].aes));
	RAND_bytes(ticket_keys[0].hmac, sizeof(ticket_keys[0].hmac));
	ticket_keys[0].born = now;
}

static int ticket_cb(SSL *ssl, uint8_t *name, uint8_t *iv, EVP_CIPHER_CTX *ectx, HMAC_CTX *hctx,
		     int enc)
{
	struct ticket_key k;
	int found = -1;

	(void)ssl;
	pthread_mutex_lock(&ticket_lock);
	ticket_rotate_locked(time(NULL));
	if (enc) {
		k = ticket_keys[0];
		found = 0;
	} else {
		for (int i = 0; i < 2; i++) {
			if (ticket_keys[i].born && !memcmp(ticket_keys[i].name, name, 16)) {
				k = ticket_keys[i];
				found = i;
				break;
			}
		}
	}
	pthread_mutex_unlock(&ticket_lock);
	if (found < 0)
		return 0; /* unknown key: a full handshake */
	if (enc) {
		memcpy(name, k.name, 16);
		RAND_bytes(iv, 16); /* AES-128-CBC */
		if (!EVP_EncryptInit_ex(ectx, EVP_aes_128_cbc(), NULL, k.aes, iv))
			return -1;
	} else if (!EVP_DecryptInit_ex(ectx, EVP_aes_128_cbc(), NULL, k.aes, iv)) {
		return -1;
	}
	if (!HMAC_Init_ex(hctx, k.hmac, sizeof(k.hmac), EVP_sha256(), NULL))
		return -1;
	return found == 1 ? 2 : 1; /* 2: decrypted with the old key, renew */
}

int tls_init(void)
{
	static bool done;

	if (done)
		return 0;
	if (tls_io_init() < 0)
		return -1;
	pthread_mutex_lock(&ticket_lock);
	ticket_rotate_locked(time(NULL));
	pthread_mutex_unlock(&ticket_lock);
	done = true;
	return 0;
}

/* ---- certificates ---- */

const char *tls_ssl_reason(void)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	ERR_clear_error();
	return r ? r : "unknown error";
}

static int add_name(struct tls_cert *c, const char *name, size_t len)
{
	char **names = realloc(c->names, (c->nnames + 1) * sizeof(*names));
	char *s;

	if (!names)
		return -1;
	c->names = names;
	s = strndup(name, len);
	if (!s)
		return -1;
	for (char *p = s; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	c->names[c->nnames++] = s;
	return 0;
}

static int cert_names(struct tls_cert *c, X509 *x)
{
	GENERAL_NAMES *san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	int rc = 0;

	if (san) {
		for (size_t i = 0; i < sk_GENERAL_NAME_num(san) && rc == 0; i++) {
			const GENERAL_NAME *g = sk_GENERAL_NAME_value(san, i);

			if (g->type == GEN_DNS)
				rc = add_name(c, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
					      (size_t)ASN1_STRING_length(g->d.dNSName));
		}
		GENERAL_NAMES_free(san);
	}
	if (rc == 0 && c->nnames == 0) {
		char cn[256];
		int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
						  sizeof(cn));

		if (n > 0)
			rc = add_name(c, cn, (size_t)n);
	}
	return rc;
}

static void cert_free(struct tls_cert *c)
{
	for (size_t i = 0; i < c->nchain; i++)
		CRYPTO_BUFFER_free(c->chain[i]);
	EVP_PKEY_free(c->key);
	for (size_t i = 0; i < c->nnames; i++)
		free(c->names[i]);
	free(c->names);
}

/* Load one cert/key pair; on failure a message naming the file in why. */
static int cert_load(struct tls_cert *c, const struct cfg_tls_cert *cfg, char *why, size_t n)
{
	BIO *b = BIO_new_file(cfg->cert, "r");
	X509 *x, *leaf = NULL;
	int rc = -1;

	if (!b) {
		snprintf(why, n, "cannot read certificate %s: %s", cfg->cert, tls_ssl_reason());
		return -1;
	}
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
		uint8_t *der = NULL;
		int len = i2d_X509(x, &der);

		if (len <= 0 || c->nchain == CHAIN_MAX) {
			OPENSSL_free(der);
			X509_free(x);
			snprintf(why, n, "certificate %s: chain too long or unreadable", cfg->cert);
			goto out;
		}
		c->chain[c->nchain++] = CRYPTO_BUFFER_new(der, (size_t)len, NULL);
		OPENSSL_free(der);
		if (!leaf)
			leaf = x;
		else
			X509_free(x);
	}
	ERR_clear_error(); /* the end of the file reads as an error */
	BIO_free(b);
	b = NULL;
	if (!leaf) {
		snprintf(why, n, "no PEM certificate in %s", cfg->cert);
		goto out;
	}
	b = BIO_new_file(cfg->key, "r");
	c->key = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
	if (!c->key) {
		snprintf(why, n, "cannot load private key %s: %s", cfg->key, tls_ssl_reason());
		goto out;
	}
	if (!X509_check_private_key(leaf, c->key)) {
		ERR_clear_error();
		snprintf(why, n, "private key %s does not match certificate %s", cfg->key,
			 cfg->cert);
		goto out;
	}
	switch (EVP_PKEY_id(c->key)) {
	case EVP_PKEY_EC:
		c->ecdsa = true;
		break;
	case EVP_PKEY_RSA:
		break;
	default:
		snprintf(why, n, "private key %s: only RSA and ECDSA keys are supported", cfg->key);
		goto out;
	}
	if (cert_names(c, leaf) < 0) {
		snprintf(why, n, "out of memory");
		goto out;
	}
	rc = 0;
out:
	if (b)
		BIO_free(b);
	X509_free(leaf);
	return rc;
}

/* ---- picking a certificate ---- */

static bool name_matches(const char *pattern, const char *sni)
{
	if (!strcasecmp(pattern, sni))
		return true;
	if (pattern[0] == '*' && pattern[1] == '.') {
		const char *dot = strchr(sni, '.');

		return dot && dot != sni && !strcasecmp(pattern + 1, dot);
	}
	return false;
}

static bool u16_list_has(CBS *list, uint16_t want)
{
	uint16_t v;

	while (CBS_len(list) >= 2) {
		if (!CBS_get_u16(list, &v))
			return false;
		if (v == want)
			return true;
	}
	return false;
}

/* Whether the client can verify an ECDSA P-256 certificate: it signs with
 * ecdsa_secp256r1_sha256, and in TLS 1.2 offers an ECDHE-ECDSA suite. */
static bool client_takes_ecdsa(const SSL_CLIENT_HELLO *ch)
{
	static const uint16_t ecdsa_suites[] = { 0xc02b, 0xc02c, 0xcca9, 0xc009, 0xc00a };
	const uint8_t *d;
	size_t len;
	CBS cbs, list;
	bool tls13 = false;

	if (!SSL_early_callback_ctx_extension_get(ch, TLSEXT_TYPE_signature_algorithms, &d, &len))
		return false;
	CBS_init(&cbs, d, len);
	if (!CBS_get_u16_length_prefixed(&cbs, &list) || !u16_list_has(&list, 0x0403))
		return false;
	if (SSL_early_callback_ctx_extension_get(ch, TLSEXT_TYPE_supported_versions, &d, &len)) {
		CBS_init(&cbs, d, len);
		tls13 = CBS_get_u8_length_prefixed(&cbs, &list) && u16_list_has(&list, 0x0304);
	}
	if (tls13)
		return true;
	for (size_t i = 0; i < sizeof(ecdsa_suites) / sizeof(ecdsa_suites[0]); i++) {
		CBS_init(&list, ch->cipher_suites, ch->cipher_suites_len);
		if (u16_list_has(&list, ecdsa_suites[i]))
			return true;
	}
	return false;
}

static bool cert_matches(const struct tls_cert *c, const char *sni)
{
	for (size_t i = 0; i < c->nnames; i++)
		if (name_matches(c->names[i], sni))
			return true;
	return false;
}

static enum ssl_select_cert_result_t select_cert(const SSL_CLIENT_HELLO *ch)
{
	SSL *ssl = ch->ssl;
	struct tls_ctx *tc = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	bool ecdsa = client_takes_ecdsa(ch), by_name = false;
	struct tls_cert *pick = NULL;

	/* by name first: when no certificate has the name, all are candidates */
	if (sni)
		for (size_t i = 0; i < tc->ncerts && !by_name; i++)
			by_name = cert_matches(&tc->certs[i], sni);
	for (size_t i = 0; i < tc->ncerts; i++) {
		struct tls_cert *c = &tc->certs[i];

		if (by_name && !cert_matches(c, sni))
			continue;
		if (!pick || (c->ecdsa == ecdsa && pick->ecdsa != ecdsa))
			pick = c;
	}
	if (!pick || !SSL_set_chain_and_key(ssl, pick->chain, pick->nchain, pick->key, NULL))
		return ssl_select_cert_error;
	return ssl_select_cert_success;
}

/* ---- contexts ---- */

static int ctx_err(char *err, size_t errlen, const struct config *cfg, const struct cfg_tls *t,
		   const char *why)
{
	snprintf(err, errlen, "%s:%d:%d: tls context \"%s\": %s", cfg->path ? cfg->path : "-",
		 t->line, t->column, t->name, why);
	return -1;
}

static SSL_CTX *ctx_common(const struct cfg_tls *t, char *why, size_t n)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());

	if (!ctx) {
		snprintf(why, n, "out of memory");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, (uint16_t)t->min_version);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	if (t->ciphers[0] && !SSL_CTX_set_strict_cipher_list(ctx, t->ciphers)) {
		snprintf(why, n, "ciphers: \"%s\": %s", t->ciphers, tls_ssl_reason());
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

struct tls_ctx *tls_ctx_new(const struct config *cfg, const struct cfg_tls *t, bool client,
			    char *err, size_t errlen)
{
	struct tls_ctx *tc = calloc(1, sizeof(*tc));
	char why[CFG_ERR_MAX];

	if (!tc || tls_init() < 0) {
		free(tc);
		ctx_err(err, errlen, cfg, t, "out of memory");
		return NULL;
	}
	tc->cfg = t;
	if (t->ncerts) {
		tc->certs = calloc(t->ncerts, sizeof(*tc->certs));
		if (!tc->certs) {
			snprintf(why, sizeof(why), "out of memory");
			goto fail;
		}
		for (size_t i = 0; i < t->ncerts; i++) {
			tc->ncerts++;
			if (cert_load(&tc->certs[i], &t->certs[i], why, sizeof(why)) < 0)
				goto fail;
		}
		tc->server = ctx_common(t, why, sizeof(why));
		if (!tc->server)
			goto fail;
		SSL_CTX_set_app_data(tc->server, tc);
		SSL_CTX_set_select_certificate_cb(tc->server, select_cert);
		/* sessions resume only in the context that made them */
		uint8_t sid_ctx[SHA256_DIGEST_LENGTH];

		SHA256((const uint8_t *)t->name, strlen(t->name), sid_ctx);
		SSL_CTX_set_session_id_context(tc->server, sid_ctx, sizeof(sid_ctx));
		if (t->session_tickets) {
			SSL_CTX_set_session_cache_mode(tc->server, SSL_SESS_CACHE_OFF);
			SSL_CTX_set_tlsext_ticket_key_cb(tc->server, ticket_cb);
		} else {
			SSL_CTX_set_options(tc->server, SSL_OP_NO_TICKET);
			SSL_CTX_set_session_cache_mode(tc->server, SSL_SESS_CACHE_SERVER);
			SSL_CTX_sess_set_cache_size(tc->server, 20000);
		}
	}
	if (!client)
		return tc;
	tc->client = ctx_common(t, why, sizeof(why));
	if (!tc->client)
		goto fail;
	SSL_CTX_set_session_cache_mode(tc->client, SSL_SESS_CACHE_OFF);
	if (t->verify) {
		const char *ca = t->ca ? t->ca : DEFAULT_CA;

		SSL_CTX_set_verify(tc->client, SSL_VERIFY_PEER, NULL);
		if (!SSL_CTX_load_verify_locations(tc->client, ca, NULL)) {
			snprintf(why, sizeof(why), "cannot load CA file %s: %s", ca,
				 tls_ssl_reason());
			goto fail;
		}
	}
	return tc;
fail:
	ctx_err(err, errlen, cfg, t, why);
	tls_ctx_free(tc);
	return NULL;
}

void tls_ctx_free(struct tls_ctx *tc)
{
	if (!tc)
		return;
	SSL_CTX_free(tc->server);
	SSL_CTX_free(tc->client);
	for (size_t i = 0; i < tc->ncerts; i++)
		cert_free(&tc->certs[i]);
	free(tc->certs);
	free(tc);
}

bool tls_ctx_has_certs(const struct tls_ctx *tc)
{
	return tc->server != NULL;
}
