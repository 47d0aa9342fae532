/*
 * tls.c - the TLS stream (OpenSSL over memory BIOs) and the contexts.
 *
 * The stream never touches a socket: ciphertext comes in through
 * tp_tls_feed() and leaves through tp_tls_take(), so the same code serves
 * PostgreSQL and MySQL (records straight on the socket) and TDS (records
 * inside PRELOGIN packets during the handshake).
 *
 * Upstream contexts verify by default (chain and host name); a token is
 * never sent to an unverified peer unless the config says tls.mode
 * "require". Local contexts use the configured certificate or a
 * self-signed one generated at start.
 */
#include <string.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <openssl/evp.h>
#include <arpa/inet.h>

#include "proxy/tp.h"

tp_tls_t *tp_tls_new(SSL_CTX *ctx, bool client, const char *server_name)
{
	tp_tls_t *tls = calloc(1, sizeof(*tls));

	if (!tls)
		return NULL;
	tls->ssl = SSL_new(ctx);
	tls->rbio = BIO_new(BIO_s_mem());
	tls->wbio = BIO_new(BIO_s_mem());
	if (!tls->ssl || !tls->rbio || !tls->wbio)
		goto fail;
	/* Idle connections (most of them) then hold no ~16 KB read and
	 * write buffers each inside OpenSSL; they come back on use. */
	SSL_set_mode(tls->ssl, SSL_MODE_RELEASE_BUFFERS);
	/* An empty read BIO means "try again", not end of file. */
	BIO_set_mem_eof_return(tls->rbio, -1);
	BIO_set_mem_eof_return(tls->wbio, -1);
	SSL_set_bio(tls->ssl, tls->rbio, tls->wbio);
	tls->client = client;
	if (client) {
		SSL_set_connect_state(tls->ssl);
		if (server_name) {
			struct in6_addr a6;
			struct in_addr a4;
			bool is_ip =
			    inet_pton(AF_INET, server_name, &a4) == 1 ||
			    inet_pton(AF_INET6, server_name, &a6) == 1;
			X509_VERIFY_PARAM *vp = SSL_get0_param(tls->ssl);

			/* SNI only for names; verification for both. */
			if (!is_ip)
				SSL_set_tlsext_host_name(tls->ssl, server_name);
			if (SSL_get_verify_mode(tls->ssl) & SSL_VERIFY_PEER &&
			    SSL_CTX_get_app_data(ctx) == NULL) {
				if (is_ip)
					X509_VERIFY_PARAM_set1_ip_asc(
					    vp, server_name);
				else
					X509_VERIFY_PARAM_set1_host(
					    vp, server_name, 0);
			}
		}
	} else {
		SSL_set_accept_state(tls->ssl);
	}
	return tls;
fail:
	if (tls->ssl) {
		SSL_free(tls->ssl);
	} else {
		BIO_free(tls->rbio);
		BIO_free(tls->wbio);
	}
	free(tls);
	return NULL;
}

void tp_tls_free(tp_tls_t *tls)
{
	if (!tls)
		return;
	SSL_free(tls->ssl); /* frees both BIOs */
	free(tls);
}

int tp_tls_feed(tp_tls_t *tls, const void *buf, size_t len)
{
	if (len && BIO_write(tls->rbio, buf, (int)len) != (int)len)
		return TP_ENOMEM;
	return 0;
}

static void tls_error(tp_tls_t *tls, char *err, size_t errlen)
{
	long vr = SSL_get_verify_result(tls->ssl);
	unsigned long e = ERR_get_error();

	if (tls->client && vr != X509_V_OK) {
		snprintf(err, errlen, "certificate verify failed: %s",
			 X509_verify_cert_error_string(vr));
	} else if (e) {
		ERR_error_string_n(e, err, errlen);
	} else {
		snprintf(err, errlen, "TLS handshake failed");
	}
	ERR_clear_error();
}

int tp_tls_handshake(tp_tls_t *tls, char *err, size_t errlen)
{
	int rc, e;

	if (tls->done)
		return 0;
	ERR_clear_error();
	rc = SSL_do_handshake(tls->ssl);
	if (rc == 1) {
		tls->done = true;
		return 0;
	}
	e = SSL_get_error(tls->ssl, rc);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return TP_EAGAIN;
	tls_error(tls, err, errlen);
	return TP_ETLS;
}

int tp_tls_read(tp_tls_t *tls, void *buf, size_t cap)
{
	int rc, e;

	ERR_clear_error();
	rc = SSL_read(tls->ssl, buf, (int)(cap > INT32_MAX ? INT32_MAX : cap));
	if (rc > 0)
		return rc;
	e = SSL_get_error(tls->ssl, rc);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return 0;
	ERR_clear_error();
	return e == SSL_ERROR_ZERO_RETURN ? TP_EIO : TP_ETLS;
}

int tp_tls_write(tp_tls_t *tls, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	/* Memory BIOs grow, so SSL_write completes unless the session
	 * broke. */
	while (len) {
		int chunk = len > 1 << 30 ? 1 << 30 : (int)len;
		int rc = SSL_write(tls->ssl, p, chunk);

		if (rc <= 0) {
			ERR_clear_error();
			return TP_ETLS;
		}
		p += rc;
		len -= (size_t)rc;
	}
	return 0;
}

size_t tp_tls_pending(tp_tls_t *tls)
{
	return BIO_ctrl_pending(tls->wbio);
}

bool tp_tls_has_input(tp_tls_t *tls)
{
	return SSL_pending(tls->ssl) > 0 || BIO_ctrl_pending(tls->rbio) > 0;
}

size_t tp_tls_take(tp_tls_t *tls, void *buf, size_t cap)
{
	int n =
	    BIO_read(tls->wbio, buf, (int)(cap > INT32_MAX ? INT32_MAX : cap));
	return n > 0 ? (size_t)n : 0;
}

const char *tp_tls_version(tp_tls_t *tls)
{
	return SSL_get_version(tls->ssl);
}

static void openssl_error(const char *what, char *err, size_t errlen)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "";

	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, errlen, "%s%s%s", what, buf[0] ? ": " : "", buf);
	ERR_clear_error();
}

SSL_CTX *tp_tls_client_ctx(const conf_server_tls_t *tls, char *err,
			   size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx) {
		openssl_error("SSL_CTX_new", err, errlen);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (tls->mode == CONF_TLS_REQUIRE || tls->mode == CONF_TLS_DISABLE) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return ctx;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (tls->ca_file) {
		if (SSL_CTX_load_verify_locations(ctx, tls->ca_file, NULL) !=
		    1) {
			char what[512];

			snprintf(what, sizeof(what), "cannot load ca_file %s",
				 tls->ca_file);
			openssl_error(what, err, errlen);
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		openssl_error("cannot load the system CA store", err, errlen);
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* verify-ca: chain only. The app data flag tells tp_tls_new() not
	 * to pin the host name. */
	if (tls->mode == CONF_TLS_VERIFY_CA)
		SSL_CTX_set_app_data(ctx, (void *)1);
	return ctx;
}

/* A fresh P-256 key and a self-signed certificate for CN=localhost. */
static int self_signed(SSL_CTX *ctx, char *err, size_t errlen)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *name;
	int ok = 0;

	if (!key || !x)
		goto out;
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)time(NULL));
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 3650L * 24 * 3600);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
				   (const unsigned char *)"localhost", -1, -1,
				   0);
	X509_set_issuer_name(x, name);
	ok = X509_sign(x, key, EVP_sha256()) > 0 &&
	     SSL_CTX_use_certificate(ctx, x) == 1 &&
	     SSL_CTX_use_PrivateKey(ctx, key) == 1;
out:
	if (!ok)
		openssl_error("cannot make a self-signed certificate", err,
			      errlen);
	X509_free(x);
	EVP_PKEY_free(key);
	return ok ? 0 : TP_ETLS;
}

SSL_CTX *tp_tls_server_ctx(const conf_client_tls_t *tls, char *err,
			   size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx) {
		openssl_error("SSL_CTX_new", err, errlen);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (!tls->cert_file) {
		if (self_signed(ctx, err, errlen) == 0)
			return ctx;
	} else if (SSL_CTX_use_certificate_chain_file(ctx, tls->cert_file) ==
		       1 &&
		   SSL_CTX_use_PrivateKey_file(ctx, tls->key_file,
					       SSL_FILETYPE_PEM) == 1) {
		return ctx;
	} else {
		openssl_error("cannot load client_tls cert_file/key_file", err,
			      errlen);
	}
	SSL_CTX_free(ctx);
	return NULL;
}
