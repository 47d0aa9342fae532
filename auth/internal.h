/*
 * internal.h - declarations shared between the files of auth/ and nowhere
 * else (the unit tests may include it to reach pure helpers).
 *
 * One section per half of the module, each kept by its owner:
 *  - tokens: curl_uv.c (libcurl multi on the loop), source_select.c (which
 *    source, from config and environment), sources.c (the HTTP sources
 *    and their shared helpers), source_entra.c (the Entra token
 *    endpoint), source_assertion.c (signed client assertions),
 *    source_cli.c (az through uv_spawn), tokens.c (the cache);
 *  - credentials: the verifiers keep their own cred_internal.h; the last
 *    section is for anything both halves come to share.
 */
#ifndef TP_AUTH_INTERNAL_H
#define TP_AUTH_INTERNAL_H

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "auth/auth.h"

/* ====================================================================
 * Tokens: curl_uv.c, source*.c, tokens.c
 * ==================================================================== */

#define AUTH_REASON_MAX		  320	    /* one reason line, NUL included */
#define AUTH_HTTP_BODY_MAX	  (1 << 20) /* larger answers are refused */
#define AUTH_HTTP_TIMEOUT	  10.0	    /* seconds, whole request */
#define AUTH_HTTP_CONNECT_TIMEOUT 5.0	    /* seconds, at most */
#define AUTH_IMDS_DEFAULT	  "http://169.254.169.254"

/* ---- curl_uv.c: HTTP requests on the loop ---- */

typedef struct auth_http auth_http_t;	      /* one curl multi */
typedef struct auth_http_req auth_http_req_t; /* one request in flight */

typedef struct auth_http_spec {
	const char *url;
	/* "Name: value" lines, NULL-terminated, or NULL. Copied. */
	const char *const *headers;
	/* POST body, or NULL for a GET. Copied, and wiped when the request
	 * ends (it may carry a client secret). */
	const char *post;
	size_t post_len;
	double timeout;		/* seconds for the whole request */
	double connect_timeout; /* seconds for the connect phase */
	bool no_proxy;		/* never go through a proxy (IMDS, local) */
} auth_http_spec_t;

typedef struct auth_http_result {
	long status;	  /* HTTP status; 0 when no response arrived */
	const char *body; /* NUL-terminated, "" when empty */
	size_t len;
	double retry_after; /* seconds from Retry-After; 0 when absent */
	/* NULL when a response arrived; otherwise one line such as
	 * "connection refused" or "timed out after 10 s" (no URL). */
	const char *error;
	/* With error: the request cannot work as given (a malformed URL, a
	 * scheme other than http/https); retrying will not help. */
	bool permanent;
} auth_http_result_t;

/* Called once per request, from the loop, unless cancelled. res and its
 * strings are valid during the call only (the body is wiped after). */
typedef void (*auth_http_cb)(void *arg, const auth_http_result_t *res);

/* NULL on allocation failure. */
auth_http_t *auth_http_new(uv_loop_t *loop);

/* Drops every request without calling back, closes the libuv handles and
 * frees http from the last close callback. */
void auth_http_close(auth_http_t *http);

/* Starts one request. *req (if not NULL) can cancel it until cb runs.
 * 0, TP_ENOMEM or TP_EINVAL (curl refused an option). */
int auth_http_request(auth_http_t *http, const auth_http_spec_t *spec,
		      auth_http_cb cb, void *arg,
		      auth_http_req_t **req) TP_MUST_CHECK;

/* cb will not run; frees the request. Not from inside its own cb. */
void auth_http_cancel(auth_http_req_t *req);

/* ---- source_select.c: which source, with what (pure) ---- */

/* getenv() or a stand-in (unit tests). NULL or "" both mean unset. */
typedef const char *(*auth_getenv_fn)(void *arg, const char *name);

/*
 * The cache's own copy of an identity, resolved against the environment
 * once, when its cache entry is made (a config snapshot may be freed by a
 * reload while the entry lives on). Secrets (client_secret,
 * certificate_password, identity_header) are wiped on free.
 */
typedef struct auth_ident {
	conf_source_t configured; /* as in the config, AUTO included */
	conf_source_t source;	  /* what fetches use; never AUTO */
	/* auto found no service principal, workload identity or App
	 * Service: IMDS, or the Azure CLI when IMDS is unreachable (decided
	 * by the first fetch, kept in picked: IMDS, AZURE_CLI or AUTO for
	 * "not yet"). */
	bool cli_fallback;
	conf_source_t picked;
	char *client_id;
	char *object_id;
	char *resource_id;
	char *tenant_id;
	char *imds_endpoint;
	char *authority; /* no trailing '/' */
	char *federated_token_file;
	char *certificate_file;
	char *client_secret;
	char *certificate_password; /* AZURE_CLIENT_CERTIFICATE_PASSWORD */
	char *identity_endpoint;    /* App Service IDENTITY_ENDPOINT */
	char *identity_header;	    /* App Service IDENTITY_HEADER */
	/* A misconfiguration found while resolving: the one line naming
	 * what to fix; every fetch fails with it. NULL when fine. */
	char *config_error;
	/* auto: which source it picked and why the earlier ones were
	 * skipped, for the log. NULL for an explicit source. */
	char *note;
} auth_ident_t;

/*
 * Resolves conf against an environment, as DefaultAzureCredential would
 * for `auto` (CONTRACT.md's order) and filling what an explicit source
 * leaves unset from the same variables (AZURE_TENANT_ID, AZURE_CLIENT_ID,
 * AZURE_CLIENT_SECRET when client_secret_env is not configured,
 * AZURE_CLIENT_CERTIFICATE_PATH, AZURE_FEDERATED_TOKEN_FILE,
 * AZURE_AUTHORITY_HOST when authority is the default). Pure: reads
 * nothing but conf and env. A misconfiguration is not an error here: it
 * lands in out->config_error. 0 or TP_ENOMEM (out is then empty).
 */
int auth_ident_resolve(const conf_identity_t *conf, auth_getenv_fn env,
		       void *arg, auth_ident_t *out) TP_MUST_CHECK;

/* Wipes the secrets, frees every field, zeroes id. */
void auth_ident_free(auth_ident_t *id);

/* ---- sources.c: where tokens come from ---- */

typedef struct auth_fetch_result {
	int err; /* 0 or TP_ETOKEN */
	/* On success: malloc'd token; whoever takes it sets this to NULL,
	 * otherwise the source wipes and frees it after the callback. */
	char *token;
	size_t len;
	double expires_on;  /* unix seconds */
	bool retryable;	    /* on failure: auth_http_retryable() & co. */
	double retry_after; /* on failure: seconds from Retry-After, or 0 */
	char reason[AUTH_REASON_MAX]; /* on failure; never a secret */
} auth_fetch_result_t;

typedef struct auth_fetch auth_fetch_t;
typedef void (*auth_fetch_cb)(auth_fetch_t *f, auth_fetch_result_t *res);

/* One fetch, embedded in its cache entry. The cache fills the first block;
 * the source owns the rest while the fetch is in flight. */
struct auth_fetch {
	uv_loop_t *loop;
	auth_http_t *http;
	auth_ident_t *ident; /* a source may record auto's pick in it */
	const char *scope;
	double timeout; /* seconds per HTTP request or az run */
	auth_fetch_cb cb;
	void *arg;
	auth_log_cb log; /* may be NULL */
	void *log_arg;

	auth_http_req_t *req;
	void *proc;	     /* source_cli.c: the az run in flight */
	auth_fetch_cb outer; /* sources.c: the cache's cb while auto probes */
	/* With probe set, an IMDS request that gets no answer at all calls
	 * unreachable(f, why) instead of failing (auto, see sources.c). */
	bool probe;
	void (*unreachable)(auth_fetch_t *f, const char *why);
	char probe_why[96]; /* why IMDS was unreachable, for the log */
	char where[256];    /* "imds http://169.254.169.254", for reasons */
};

/*
 * A source. start() either returns 0 and later calls f->cb exactly once
 * (never from inside start) unless cancel() is called first, or returns
 * TP_ETOKEN with *res filled in and never calls back.
 */
typedef struct auth_source {
	const char *name;
	int (*start)(auth_fetch_t *f, auth_fetch_result_t *res);
	void (*cancel)(auth_fetch_t *f);
} auth_source_t;

/* The source for a resolved identity: the misconfiguration source when
 * id->config_error is set, auto's IMDS-or-CLI step for cli_fallback.
 * Never NULL. */
const auth_source_t *auth_source_for(const auth_ident_t *id);

/* "1795298400" or "11/21/2026 10:00:00 PM +00:00" (App Service) to unix
 * seconds. 0 or TP_EINVAL. */
int auth_parse_expires_on(const char *text, double *out) TP_MUST_CHECK;

/* A token endpoint's JSON answer (access_token, expires_on or expires_in,
 * as strings or numbers) into res->token/len/expires_on. On failure
 * returns TP_ETOKEN and writes why (no endpoint prefix, never the token). */
int auth_parse_token_response(const char *body, size_t len, double now,
			      auth_fetch_result_t *res, char *why,
			      size_t whylen) TP_MUST_CHECK;

/* ---- helpers sources.c shares with the source_*.c files ---- */

/* A growing string. Growth copies and wipes (never realloc), since form
 * bodies carry secrets; free with auth__buf_free(). */
typedef struct auth__buf {
	char *s;
	size_t len, cap;
	bool oom;
} auth__buf_t;

void auth__buf_addn(auth__buf_t *b, const char *s, size_t n);
void auth__buf_add(auth__buf_t *b, const char *s);
/* Appends sep, name, '=' and the URL-encoded value; nothing when value
 * is NULL. */
void auth__buf_param(auth__buf_t *b, const char *sep, const char *name,
		     const char *value);
void auth__buf_free(auth__buf_t *b); /* wipes */

/* scope without a trailing "/.default" (the v1 endpoints and az want a
 * resource). malloc'd; NULL when out of memory. */
char *auth__scope_resource(const char *scope);

/* Fills res->reason (printf), err = TP_ETOKEN; returns TP_ETOKEN. */
int auth__fail(auth_fetch_result_t *res, bool retryable, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* f->where = "<source> <url without query>". */
void auth__set_where(auth_fetch_t *f, const char *source, const char *url);

/* Copies text as one printable line of at most cap - 1 bytes. */
void auth__one_line(char *out, size_t cap, const char *text);

/* Starts an HTTP request whose 2xx answer is a token response; f->cb gets
 * the outcome. post may be NULL (GET). 0 or TP_ETOKEN with res set. */
int auth__http_start(auth_fetch_t *f, const char *url, const char *const *hdrs,
		     const char *post, size_t post_len, bool no_proxy,
		     auth_fetch_result_t *res) TP_MUST_CHECK;
void auth__http_cancel(auth_fetch_t *f);

/* Wall clock, seconds. */
double auth__now(void);
struct cJSON;
/* Whether a token can go into protocol fields verbatim (no spaces, no
 * control bytes). */
bool auth__token_printable(const char *s);
/* A copy of token becomes res's token with its expiry: 0, or TP_ETOKEN
 * with why filled in. */
int auth__keep_token(auth_fetch_result_t *res, const char *token, double exp,
		     char *why, size_t whylen) TP_MUST_CHECK;
/* Wipes tok's string (it may be a token) and frees root. */
void auth__json_free_wiping(struct cJSON *root, struct cJSON *tok);

/* The sources in the other files. */
extern const auth_source_t auth__imds_source;
extern const auth_source_t auth__client_secret_source; /* source_entra.c */
extern const auth_source_t auth__client_cert_source;   /* source_entra.c */
extern const auth_source_t auth__workload_source;      /* source_entra.c */
extern const auth_source_t auth__azure_cli_source;     /* source_cli.c */

/* ---- source_assertion.c: signed client assertions ---- */

#define AUTH_ASSERTION_LIFETIME 600.0 /* s, as MSAL */

/*
 * A client assertion (RFC 7523) for the certificate flow: a compact JWS,
 * RS256, header {alg, typ, x5t (base64url SHA-1 of the DER certificate),
 * x5t#S256 (base64url SHA-256)}, payload {aud, iss = sub = client_id, jti,
 * nbf = iat = now, exp = now + AUTH_ASSERTION_LIFETIME}. key must be an
 * RSA key. jti is taken as given (callers pass random text). Pure given
 * its arguments. On success *out is malloc'd (the caller wipes and frees
 * it); on failure TP_EINVAL / TP_ENOMEM / TP_EIO and why says what.
 */
int auth_assertion_build(X509 *cert, EVP_PKEY *key, const char *client_id,
			 const char *aud, const char *jti, double now,
			 char **out, char *why, size_t whylen) TP_MUST_CHECK;

/*
 * Reads a PEM file holding a certificate and its private key (either
 * order; the first certificate is the one used; an encrypted key needs
 * password). Refuses a file over 1 MiB, a missing certificate or key, a
 * key that is not RSA and a key that does not match the certificate, with
 * one line naming the file in why. 0 or TP_EINVAL / TP_ENOMEM.
 */
int auth_pem_load(const char *path, const char *password, X509 **cert,
		  EVP_PKEY **key, char *why, size_t whylen) TP_MUST_CHECK;

/* base64url without padding of len bytes, NUL-terminated, malloc'd. */
char *auth_b64url(const unsigned char *in, size_t len);

/* ---- source_cli.c: the Azure CLI ---- */

/*
 * The JSON `az account get-access-token -o json` prints: accessToken, and
 * expires_on (epoch seconds, az 2.54+) or else expiresOn ("2026-11-21
 * 23:00:00.000000", local time of the machine). Into res like
 * auth_parse_token_response(); why never quotes the token.
 */
int auth_parse_az_output(const char *out, size_t len, double now,
			 auth_fetch_result_t *res, char *why,
			 size_t whylen) TP_MUST_CHECK;

/* "2026-11-21 23:00:00.000000" (fraction optional) as local time. 0 or
 * TP_EINVAL. */
int auth_parse_local_time(const char *text, double *out) TP_MUST_CHECK;

/* ====================================================================
 * Credentials: scram.c, verify.c, jwt.c (kept by the credentials half;
 * their private declarations are in cred_internal.h)
 * ==================================================================== */

#endif
