/*
 * source_assertion.c - client assertions for the certificate flow: a JWT
 * signed RS256 with the app's private key, which the Entra token endpoint
 * checks against the certificate registered for the app (RFC 7523, as
 * MSAL builds it: x5t and x5t#S256 name the certificate).
 *
 * Also reads the PEM file holding the certificate and key. The file is
 * read whole (it is small and local) at every fetch, so a renewed
 * certificate is picked up without a restart; the bytes are wiped after.
 *
 * Not here: posting the assertion (source_entra.c). Nothing here logs; the
 * error lines name the file, never its content.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "auth/internal.h"

#define PEM_MAX (1 << 20)

char *auth_b64url(const unsigned char *in, size_t len)
{
	size_t cap = 4 * ((len + 2) / 3) + 1, n;
	char *out = malloc(cap);

	if (!out)
		return NULL;
	n = (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (size_t i = 0; i < n; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
	return out;
}

/* base64url of a cJSON object printed compactly; NULL on failure. */
static char *b64url_json(cJSON *obj)
{
	char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
	char *out;

	if (!text)
		return NULL;
	out = auth_b64url((unsigned char *)text, strlen(text));
	cJSON_free(text);
	return out;
}

/* x5t / x5t#S256: base64url of the DER certificate's SHA-1 / SHA-256. */
static char *thumbprint(X509 *cert, const EVP_MD *md)
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (X509_digest(cert, md, d, &n) != 1)
		return NULL;
	return auth_b64url(d, n);
}

static char *header_part(X509 *cert)
{
	char *x5t = thumbprint(cert, EVP_sha1());
	char *x5t256 = thumbprint(cert, EVP_sha256());
	cJSON *h = cJSON_CreateObject();
	char *out = NULL;

	if (x5t && x5t256 && h && cJSON_AddStringToObject(h, "alg", "RS256") &&
	    cJSON_AddStringToObject(h, "typ", "JWT") &&
	    cJSON_AddStringToObject(h, "x5t", x5t) &&
	    cJSON_AddStringToObject(h, "x5t#S256", x5t256))
		out = b64url_json(h);
	cJSON_Delete(h);
	free(x5t);
	free(x5t256);
	return out;
}

static char *payload_part(const char *client_id, const char *aud,
			  const char *jti, double now)
{
	double t = (double)(long long)now; /* NumericDate: whole seconds */
	cJSON *p = cJSON_CreateObject();
	char *out = NULL;

	if (p && cJSON_AddStringToObject(p, "aud", aud) &&
	    cJSON_AddStringToObject(p, "iss", client_id) &&
	    cJSON_AddStringToObject(p, "sub", client_id) &&
	    cJSON_AddStringToObject(p, "jti", jti) &&
	    cJSON_AddNumberToObject(p, "nbf", t) &&
	    cJSON_AddNumberToObject(p, "iat", t) &&
	    cJSON_AddNumberToObject(p, "exp", t + AUTH_ASSERTION_LIFETIME))
		out = b64url_json(p);
	cJSON_Delete(p);
	return out;
}

/* RS256 (RSASSA-PKCS1-v1_5 with SHA-256) over input; base64url. */
static char *sign_rs256(EVP_PKEY *key, const char *input)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char *sig = NULL;
	size_t n = 0;
	char *out = NULL;

	if (ctx &&
	    EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
	    EVP_DigestSign(ctx, NULL, &n, (const unsigned char *)input,
			   strlen(input)) == 1 &&
	    (sig = malloc(n)) &&
	    EVP_DigestSign(ctx, sig, &n, (const unsigned char *)input,
			   strlen(input)) == 1)
		out = auth_b64url(sig, n);
	EVP_MD_CTX_free(ctx);
	free(sig);
	ERR_clear_error();
	return out;
}

int auth_assertion_build(X509 *cert, EVP_PKEY *key, const char *client_id,
			 const char *aud, const char *jti, double now,
			 char **out, char *why, size_t whylen)
{
	char *head = NULL, *body = NULL, *input = NULL, *sig = NULL;
	int rc = TP_ENOMEM;

	*out = NULL;
	if (!cert || !key || !client_id || !aud || !jti) {
		snprintf(why, whylen, "incomplete assertion arguments");
		return TP_EINVAL;
	}
	if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
		snprintf(why, whylen, "the private key is not RSA");
		return TP_EINVAL;
	}
	head = header_part(cert);
	body = payload_part(client_id, aud, jti, now);
	if (head && body && asprintf(&input, "%s.%s", head, body) < 0)
		input = NULL;
	if (input && !(sig = sign_rs256(key, input)))
		rc = TP_EIO;
	else if (sig && asprintf(out, "%s.%s", input, sig) >= 0)
		rc = 0;
	else
		*out = NULL;
	if (rc)
		snprintf(why, whylen, "%s",
			 rc == TP_EIO ? "signing the assertion failed"
				      : "out of memory");
	free(head);
	free(body);
	free(input);
	free(sig);
	return rc;
}

/* ---- the PEM file ---- */

/* Reads a small regular file whole; *buf is malloc'd and NUL-terminated.
 * 0 or an errno value. */
static int read_small(const char *path, char **buf, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY), err = 0;
	struct stat st;
	ssize_t n = 0;

	*buf = NULL;
	if (fd < 0)
		return errno;
	if (fstat(fd, &st) != 0)
		err = errno;
	else if (!S_ISREG(st.st_mode) || st.st_size > PEM_MAX)
		err = S_ISREG(st.st_mode) ? EFBIG : EINVAL;
	else if (!(*buf = malloc((size_t)st.st_size + 1)))
		err = ENOMEM;
	else if ((n = read(fd, *buf, (size_t)st.st_size)) < 0)
		err = errno;
	close(fd);
	if (err) {
		free(*buf);
		*buf = NULL;
		return err;
	}
	(*buf)[n] = '\0';
	*len = (size_t)n;
	return 0;
}

/* Never prompts on a terminal: no password means "no password". */
static int pem_password(char *buf, int size, int rwflag, void *u)
{
	const char *pw = u;
	size_t n = pw ? strlen(pw) : 0;

	if (!pw || n > (size_t)size)
		return 0;
	memcpy(buf, pw, n);
	return (int)n;
}

static int pem_parse(const char *path, const char *text, size_t len,
		     const char *password, X509 **cert, EVP_PKEY **key,
		     char *why, size_t whylen)
{
	BIO *b = BIO_new_mem_buf(text, (int)len);

	if (!b) {
		snprintf(why, whylen, "out of memory");
		return TP_ENOMEM;
	}
	*cert = PEM_read_bio_X509(b, NULL, pem_password, NULL);
	if (BIO_reset(b) == 1)
		*key = PEM_read_bio_PrivateKey(b, NULL, pem_password,
					       (void *)password);
	BIO_free(b);
	ERR_clear_error(); /* the engine's TLS reads the same queue */
	if (!*cert)
		snprintf(why, whylen,
			 "certificate file %s holds no PEM "
			 "certificate",
			 path);
	else if (!*key)
		snprintf(why, whylen,
			 "certificate file %s holds no readable "
			 "PEM private key%s",
			 path,
			 password
			     ? " (wrong AZURE_CLIENT_CERTIFICATE_PASSWORD?)"
			     : " (an encrypted key needs "
			       "AZURE_CLIENT_CERTIFICATE_PASSWORD)");
	else if (EVP_PKEY_get_base_id(*key) != EVP_PKEY_RSA)
		snprintf(why, whylen,
			 "certificate file %s: the private key "
			 "is %s, Entra client assertions need RSA",
			 path,
			 EVP_PKEY_get0_type_name(*key)
			     ? EVP_PKEY_get0_type_name(*key)
			     : "not RSA");
	else if (X509_check_private_key(*cert, *key) != 1)
		snprintf(why, whylen,
			 "certificate file %s: the private key "
			 "does not belong to the certificate",
			 path);
	else
		return 0;
	ERR_clear_error();
	return TP_EINVAL;
}

int auth_pem_load(const char *path, const char *password, X509 **cert,
		  EVP_PKEY **key, char *why, size_t whylen)
{
	char *text = NULL;
	size_t len = 0;
	int err, rc;

	*cert = NULL;
	*key = NULL;
	err = read_small(path, &text, &len);
	if (err) {
		snprintf(why, whylen, "cannot read certificate file %s: %s",
			 path,
			 err == EFBIG	 ? "larger than 1 MiB"
			 : err == EINVAL ? "not a regular file"
					 : strerror(err));
		return err == ENOMEM ? TP_ENOMEM : TP_EINVAL;
	}
	rc = pem_parse(path, text, len, password, cert, key, why, whylen);
	OPENSSL_clear_free(text, len + 1);
	if (rc) {
		X509_free(*cert);
		EVP_PKEY_free(*key);
		*cert = NULL;
		*key = NULL;
	}
	return rc;
}
