/*
 * internal.h - declarations shared between the files of auth/ and nowhere
 * else (the unit tests may include it to reach pure helpers).
 *
 * One section per half of the module, each kept by its owner:
 *  - tokens: curl_uv.c (libcurl multi on the loop), sources.c (identity
 *    endpoints), tokens.c (the cache);
 *  - credentials: the verifiers keep their own cred_internal.h; the last
 *    section is for anything both halves come to share.
 */
#ifndef TP_AUTH_INTERNAL_H
#define TP_AUTH_INTERNAL_H

#include "auth/auth.h"

/* ====================================================================
 * Tokens: curl_uv.c, sources.c, tokens.c
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

/* ---- sources.c: where tokens come from ---- */

/* The cache's own copy of the identity fields a source may need (a config
 * snapshot may be freed by a reload while the entry lives on). Sources that
 * need a secret (client_secret) will add it here, wiped on free. */
typedef struct auth_ident {
	conf_source_t source; /* as configured; CONF_SRC_AUTO stays AUTO */
	char *client_id;
	char *object_id;
	char *resource_id;
	char *tenant_id;
	char *imds_endpoint;
	char *authority;
	char *federated_token_file;
	char *certificate_file;
} auth_ident_t;

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
	auth_http_t *http;
	const auth_ident_t *ident;
	const char *scope;
	double timeout; /* seconds per HTTP request */
	auth_fetch_cb cb;
	void *arg;

	auth_http_req_t *req;
	char where[256]; /* "imds http://169.254.169.254", for reasons */
};

/*
 * A source. start() either returns 0 and later calls f->cb exactly once
 * (never from inside start) unless cancel() is called first, or returns
 * TP_ETOKEN with *res filled in and never calls back. New sources
 * (workload identity, client secret/certificate, Azure CLI through
 * uv_spawn) are one more of these.
 */
typedef struct auth_source {
	const char *name; /* NULL for "not supported yet" */
	int (*start)(auth_fetch_t *f, auth_fetch_result_t *res);
	void (*cancel)(auth_fetch_t *f);
} auth_source_t;

/* The source for a configured one; `auto` is resolved here, from the
 * environment (App Service when IDENTITY_ENDPOINT and IDENTITY_HEADER are
 * both set, else IMDS). Never NULL. */
const auth_source_t *auth_source_resolve(conf_source_t configured);

/* "1795298400" or "11/21/2026 10:00:00 PM +00:00" (App Service) to unix
 * seconds. 0 or TP_EINVAL. */
int auth_parse_expires_on(const char *text, double *out) TP_MUST_CHECK;

/* A token endpoint's JSON answer (access_token, expires_on or expires_in,
 * as strings or numbers) into res->token/len/expires_on. On failure
 * returns TP_ETOKEN and writes why (no endpoint prefix, never the token). */
int auth_parse_token_response(const char *body, size_t len, double now,
			      auth_fetch_result_t *res, char *why,
			      size_t whylen) TP_MUST_CHECK;

/* ====================================================================
 * Credentials: scram.c, verify.c, jwt.c (kept by the credentials half;
 * their private declarations are in cred_internal.h)
 * ==================================================================== */

#endif
