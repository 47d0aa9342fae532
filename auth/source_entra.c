/*
 * source_entra.c - the Microsoft Entra token endpoint,
 * POST {authority}/{tenant}/oauth2/v2.0/token with
 * grant_type=client_credentials, for three sources that differ only in
 * the credential they present:
 *   client_secret       client_secret=<secret>
 *   client_certificate  client_assertion=<JWT signed with the app's key>
 *   workload_identity   client_assertion=<the Kubernetes service account
 *                       token from the federated token file>
 * Both assertion kinds are read at every fetch: Kubernetes rotates the
 * token file (about hourly) and a certificate may be renewed in place.
 *
 * The form body carries the secret or assertion: it is built in a buffer
 * that is wiped (auth__buf_t), copied once by curl_uv.c and wiped there
 * too. Reasons name the endpoint and quote Entra's error_description,
 * which never echoes a credential.
 *
 * Not here: which of these a configured identity uses and where its
 * tenant and client id come from (source_select.c); the assertion itself
 * (source_assertion.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "auth/internal.h"

#define TOKEN_PATH     "/oauth2/v2.0/token"
#define ASSERTION_TYPE "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#define FEDERATED_MAX  (64 * 1024) /* service account tokens are ~1 KB */

/* {authority}/{tenant}/oauth2/v2.0/token; NULL when out of memory. */
static char *token_url(const auth_ident_t *id)
{
	char *url = NULL;

	if (asprintf(&url, "%s/%s" TOKEN_PATH, id->authority, id->tenant_id) <
	    0)
		return NULL;
	return url;
}

/*
 * Posts the client-credentials form with one credential: client_secret
 * (assertion false) or client_assertion. The caller set f->where and
 * keeps ownership of value (and wipes it).
 */
static int entra_post(auth_fetch_t *f, const char *url, bool assertion,
		      const char *value, auth_fetch_result_t *res)
{
	static const char *const hdrs[] = {
	    "Content-Type: application/x-www-form-urlencoded",
	    "Accept: application/json", NULL};
	const auth_ident_t *id = f->ident;
	auth__buf_t body = {0};
	int rc;

	auth__buf_add(&body, "grant_type=client_credentials");
	auth__buf_param(&body, "&", "client_id", id->client_id);
	auth__buf_param(&body, "&", "scope", f->scope);
	if (assertion) {
		auth__buf_param(&body, "&", "client_assertion_type",
				ASSERTION_TYPE);
		auth__buf_param(&body, "&", "client_assertion", value);
	} else {
		auth__buf_param(&body, "&", "client_secret", value);
	}
	if (body.oom)
		rc = auth__fail(res, true, "%s: out of memory", f->where);
	else /* proxies as the environment says, like the SDKs */
		rc = auth__http_start(f, url, hdrs, body.s, body.len, false,
				      res);
	auth__buf_free(&body);
	return rc;
}

/* ---- client secret ---- */

static int secret_start(auth_fetch_t *f, auth_fetch_result_t *res)
{
	char *url = token_url(f->ident);
	int rc;

	if (!url)
		return auth__fail(res, true, "client_secret: out of memory");
	auth__set_where(f, "client_secret", url);
	rc = entra_post(f, url, false, f->ident->client_secret, res);
	free(url);
	return rc;
}

const auth_source_t auth__client_secret_source = {
    .name = "client_secret",
    .start = secret_start,
    .cancel = auth__http_cancel,
};

/* ---- client certificate ---- */

/* 128 random bits as a UUID-shaped string, as MSAL sends. */
static int random_jti(char out[37])
{
	unsigned char b[16];

	if (RAND_bytes(b, sizeof(b)) != 1)
		return TP_EIO;
	b[6] = (b[6] & 0x0f) | 0x40; /* version 4 */
	b[8] = (b[8] & 0x3f) | 0x80; /* variant 1 */
	snprintf(out, 37,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
		 "%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
		 b[10], b[11], b[12], b[13], b[14], b[15]);
	return 0;
}

/* The signed assertion for url, or a failure in res. */
static int make_assertion(auth_fetch_t *f, const char *url, char **out,
			  auth_fetch_result_t *res)
{
	const auth_ident_t *id = f->ident;
	char why[AUTH_REASON_MAX - 32], jti[37];
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	int rc;

	rc = auth_pem_load(id->certificate_file, id->certificate_password,
			   &cert, &key, why, sizeof(why));
	if (rc == 0 && (rc = random_jti(jti)) != 0)
		snprintf(why, sizeof(why), "no random bytes for the jti");
	if (rc == 0)
		rc = auth_assertion_build(cert, key, id->client_id, url, jti,
					  auth__now(), out, why, sizeof(why));
	X509_free(cert);
	EVP_PKEY_free(key);
	if (rc == 0)
		return 0;
	/* An unreadable or unusable file will not fix itself soon. */
	return auth__fail(res, rc == TP_ENOMEM || rc == TP_EIO,
			  "client_certificate: %s", why);
}

static int cert_start(auth_fetch_t *f, auth_fetch_result_t *res)
{
	char *url = token_url(f->ident), *assertion = NULL;
	int rc;

	if (!url)
		return auth__fail(res, true,
				  "client_certificate: out of memory");
	auth__set_where(f, "client_certificate", url);
	rc = make_assertion(f, url, &assertion, res);
	if (rc == 0)
		rc = entra_post(f, url, true, assertion, res);
	if (assertion)
		OPENSSL_clear_free(assertion, strlen(assertion));
	free(url);
	return rc;
}

const auth_source_t auth__client_cert_source = {
    .name = "client_certificate",
    .start = cert_start,
    .cancel = auth__http_cancel,
};

/* ---- workload identity ---- */

/* The service account token, trimmed; malloc'd. 0 or an errno value
 * (EFBIG: too large, EINVAL: not a regular file, ENODATA: empty,
 * EILSEQ: not a token). Small and local: read on the loop. */
static int read_federated(const char *path, char **out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY), err = 0;
	struct stat st;
	char *buf = NULL;
	ssize_t n = 0;
	size_t a = 0, b;

	*out = NULL;
	if (fd < 0)
		return errno;
	if (fstat(fd, &st) != 0)
		err = errno;
	else if (!S_ISREG(st.st_mode) || st.st_size > FEDERATED_MAX)
		err = S_ISREG(st.st_mode) ? EFBIG : EINVAL;
	else if (!(buf = malloc((size_t)st.st_size + 1)))
		err = ENOMEM;
	else if ((n = read(fd, buf, (size_t)st.st_size)) < 0)
		err = errno;
	close(fd);
	b = err ? 0 : (size_t)n;
	while (a < b && (buf[a] == ' ' || buf[a] == '\n' || buf[a] == '\r' ||
			 buf[a] == '\t'))
		a++;
	while (b > a && (buf[b - 1] == ' ' || buf[b - 1] == '\n' ||
			 buf[b - 1] == '\r' || buf[b - 1] == '\t'))
		b--;
	for (size_t i = a; !err && i < b; i++)
		if ((unsigned char)buf[i] <= 0x20 ||
		    (unsigned char)buf[i] >= 0x7f)
			err = EILSEQ;
	if (!err && a == b)
		err = ENODATA;
	if (err) {
		if (buf)
			OPENSSL_clear_free(buf, (size_t)st.st_size + 1);
		return err;
	}
	memmove(buf, buf + a, b - a);
	buf[b - a] = '\0';
	*out = buf;
	return 0;
}

static const char *federated_error(int err)
{
	switch (err) {
	case EFBIG:
		return "larger than 64 KiB, not a service account token";
	case EINVAL:
		return "not a regular file";
	case ENODATA:
		return "empty";
	case EILSEQ:
		return "holds something other than one token";
	default:
		return strerror(err);
	}
}

static int workload_start(auth_fetch_t *f, auth_fetch_result_t *res)
{
	const char *path = f->ident->federated_token_file;
	char *url = token_url(f->ident), *assertion = NULL;
	int rc, err;

	if (!url)
		return auth__fail(res, true,
				  "workload_identity: out of memory");
	auth__set_where(f, "workload_identity", url);
	err = read_federated(path, &assertion);
	if (err)
		rc = auth__fail(res, err == ENOMEM,
				"workload_identity: federated token file %s: "
				"%s",
				path, federated_error(err));
	else
		rc = entra_post(f, url, true, assertion, res);
	if (assertion)
		OPENSSL_clear_free(assertion, strlen(assertion));
	free(url);
	return rc;
}

const auth_source_t auth__workload_source = {
    .name = "workload_identity",
    .start = workload_start,
    .cancel = auth__http_cancel,
};
