/*
 * auth.h - tokens and credentials.
 *
 * Two halves, both owned by auth/:
 *  1. Entra access tokens: sources (IMDS, App Service, ...), a cache with one
 *     entry per (identity, scope), single-flight fetches, proactive refresh
 *     and retry with backoff. HTTP is libcurl's multi interface driven by the
 *     caller's libuv loop: nothing here ever blocks the loop.
 *  2. Local credential verifiers: pure functions (no I/O, no loop) for
 *     SCRAM-SHA-256 (server and client side), PostgreSQL md5, MySQL
 *     native and caching_sha2 scrambles, plain password checks against
 *     configured hashes, the `tokenpool hash` output, and JWT claim decoding
 *     (expiry and identity for logs; no signature check: that is the
 *     server's job).
 *
 * Secrets handed out by this module (tokens, passwords) must never reach a
 * log line; log the identity by client id and the token by its expiry.
 */
#ifndef TP_AUTH_H
#define TP_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <uv.h>

#include "conf/conf.h"

/* ====================================================================
 * Part 1: tokens
 * ==================================================================== */

typedef struct auth_tokens auth_tokens_t; /* the cache; one per process */
typedef struct auth_wait auth_wait_t;	  /* one waiting request */

/* Seconds a token must have left for auth_token_wait() to hand it out from
 * the cache. A token fetched for the waiters is handed out as long as it has
 * not expired: it is as fresh as the endpoint makes them. */
#define AUTH_WAIT_MIN_VALID 30.0

/*
 * Called exactly once per auth_token_wait() unless cancelled first; never
 * from inside auth_token_wait() itself. On success err is 0 and token/len
 * point into the cache (valid until the callback returns: copy what you
 * keep). On failure err is TP_ETOKEN, TP_ETIMEOUT or TP_ESHUTDOWN and reason
 * is a one-line explanation fit for a client error message and the log,
 * e.g. "no token within 10 s: imds http://169.254.169.254: HTTP 500" (never
 * a secret). The auth_wait_t is freed by the module after the callback.
 *   TP_ETOKEN    the endpoint refused for a reason retrying will not fix
 *                soon (a configuration error, an unsupported source)
 *   TP_ETIMEOUT  no token within the wait's timeout; reason carries the
 *                last fetch error
 *   TP_ESHUTDOWN auth_tokens_close() was called
 */
typedef void (*auth_token_cb)(void *arg, int err, const char *token, size_t len,
			      const char *reason);

/* Creates the cache on loop. NULL on allocation failure. */
auth_tokens_t *auth_tokens_new(uv_loop_t *loop);

/* Stops timers and transfers, fails every waiter with TP_ESHUTDOWN (their
 * callbacks run inside this call), closes its libuv handles and frees itself
 * once they are closed (the loop must run afterwards for that to finish).
 * After this call no other auth_token* function may be called on tokens,
 * except from inside those callbacks, where peek and wait return
 * TP_ESHUTDOWN. */
void auth_tokens_close(auth_tokens_t *tokens);

/*
 * Where the cache's own log lines go: which source `auto` picked and why
 * the earlier ones were skipped (info), a fetch starting (debug). line is
 * one line without a newline and never holds a token or secret; it is
 * valid during the call only. Without a logger the lines are dropped.
 * Failures are not logged here: they reach waiters as reasons.
 */
typedef void (*auth_log_cb)(void *arg, conf_log_level_t level,
			    const char *line);
void auth_tokens_set_logger(auth_tokens_t *tokens, auth_log_cb cb, void *arg);

/* Timeout for one HTTP request to an identity endpoint (default 10 s; the
 * connect phase gets at most 5 s of it). For `doctor` and tests. */
void auth_tokens_set_http_timeout(auth_tokens_t *tokens, double seconds);

/* Whether libcurl resolves host names off the loop thread (threaded or
 * c-ares resolver). Without it a host name (not an IP literal or
 * "localhost") in an endpoint may block the loop while it resolves: worth a
 * warning at start. */
bool auth_tokens_async_dns(void);

/*
 * A valid cached token for (identity, scope) with more than min_valid
 * seconds left, without waiting: returns 0 and sets *token and *len (owned by
 * the cache; valid until control returns to the loop). Otherwise TP_EAGAIN,
 * and a fetch is started if none is in flight (single flight; at most one
 * demand fetch a second, and never inside a Retry-After). Also registers the
 * pair for background refresh. TP_ENOMEM, TP_EINVAL (NULL argument) and
 * TP_ESHUTDOWN (after auth_tokens_close) are possible too.
 */
int auth_token_peek(auth_tokens_t *tokens, const conf_identity_t *id,
		    const char *scope, double min_valid, const char **token,
		    size_t *len) TP_MUST_CHECK;

/*
 * Waits for a valid token (AUTH_WAIT_MIN_VALID), at most timeout seconds.
 * Starts a fetch if none is in flight. *wait (if not NULL) receives a handle
 * usable with auth_wait_cancel() until the callback runs. id and scope are
 * copied; they need not outlive the call. Returns 0, TP_ENOMEM, TP_EINVAL
 * or TP_ESHUTDOWN; on an error the callback will not run.
 */
int auth_token_wait(auth_tokens_t *tokens, const conf_identity_t *id,
		    const char *scope, double timeout, auth_token_cb cb,
		    void *arg, auth_wait_t **wait) TP_MUST_CHECK;

/* The callback will not run; frees the wait. A no-op when called from the
 * wait's own callback. Never call it after the callback has run. */
void auth_wait_cancel(auth_wait_t *wait);

/* State of one cache entry, for /v1/tokens, metrics, doctor and logs. */
typedef struct auth_token_info {
	const char *identity; /* "imds client_id=..." style, no secrets */
	const char *source;   /* "imds", "app_service", ... (auto resolved) */
	const char *scope;
	bool valid;	     /* a token that has not expired yet */
	bool fetching;	     /* a request is in flight */
	bool config_error;   /* the last failure will not fix itself */
	double expires_on;   /* unix seconds; 0 when none */
	double next_refresh; /* unix seconds; 0 when none scheduled */
	uint64_t fetch_ok, fetch_failed, fetch_requests;
	const char *last_error; /* NULL when the last fetch succeeded */
} auth_token_info_t;

/* Calls cb once per entry; info and its strings are valid during the call
 * only. cb must not call other auth_token* functions. */
typedef void (*auth_token_info_cb)(void *arg, const auth_token_info_t *info);
void auth_tokens_foreach(auth_tokens_t *tokens, auth_token_info_cb cb,
			 void *arg);

/* ---- timing decisions, pure so they can be unit-tested ---- */

/* Seconds from now until a token should be refreshed: at 5 minutes before
 * expires_on, or at half its lifetime (issued_at..expires_on) when that
 * lifetime is 2 h or more, whichever comes first. Never negative. */
double auth_refresh_delay(double now, double issued_at, double expires_on);

/* The delay the cache schedules right after a successful fetch (issued_at
 * is now): auth_refresh_delay(), but never sooner than half the remaining
 * lifetime or 60 s, whichever is less. A token that arrives with under
 * 5 minutes left (a short-lived test token, or an endpoint serving its own
 * cached token near its end) would otherwise be fetched in a tight loop. */
double auth_refresh_after_fetch(double now, double expires_on);

/* Seconds to wait before retry number attempt (1, 2, ...) after a failed
 * fetch: exponential from 1 s, capped at 60 s, minus up to 25 % jitter from
 * rnd01 in [0,1); a Retry-After (seconds, > 0) is honoured as a floor,
 * itself clamped to 300 s so one bad header cannot stall refresh for
 * hours. */
double auth_retry_delay(int attempt, double retry_after, double rnd01);

/* Whether a failed HTTP status is worth retrying (404, 408, 410, 429, 5xx;
 * 0 meaning a transport failure or timeout). Other 4xx are configuration
 * errors. */
bool auth_http_retryable(long status);

/* ====================================================================
 * Part 2: credentials (pure)
 * ==================================================================== */

/* Cryptographically random bytes (OpenSSL). Returns 0 or TP_EIO. */
int auth_random(void *buf, size_t len) TP_MUST_CHECK;

/* Constant-time comparison of equal-length buffers. */
bool auth_equal(const void *a, const void *b, size_t len);

/* Longest password (bytes) derived from or checked; longer ones fail. */
#define AUTH_PASSWORD_MAX 4096

/* ---- SCRAM-SHA-256 (RFC 5802/7677, as PostgreSQL uses it) ---- */
#define AUTH_SCRAM_KEY_LEN    32
#define AUTH_SCRAM_ITERATIONS 4096
#define AUTH_SCRAM_SALT_LEN   16 /* salt made by _from_password, as PG */
/*
 * Largest iteration count accepted from a server or a stored secret.
 * PBKDF2 runs on the loop thread (client side per new server connection,
 * auth_check_plain per cleartext login), and 100000 rounds cost tens of
 * milliseconds; more would let one server or config stall every client.
 * PostgreSQL's default is 4096.
 */
#define AUTH_SCRAM_MAX_ITERATIONS 100000
/* Largest SCRAM message accepted in either direction (TP_ETOOBIG beyond);
 * every message this module writes fits in this many bytes plus a NUL. */
#define AUTH_SCRAM_MAX_MSG 1024
/* Buffer size for auth_scram_secret_format(), NUL included. */
#define AUTH_SCRAM_SECRET_MAX 256

typedef struct auth_scram_secret {
	int iterations;
	unsigned char salt[64];
	size_t salt_len;
	unsigned char stored_key[AUTH_SCRAM_KEY_LEN];
	unsigned char server_key[AUTH_SCRAM_KEY_LEN];
} auth_scram_secret_t;

/* Derives a verifier with a fresh random 16-byte salt (one PBKDF2 run).
 * 0, TP_EINVAL (password longer than AUTH_PASSWORD_MAX) or TP_EIO. */
int auth_scram_secret_from_password(const char *password,
				    auth_scram_secret_t *out) TP_MUST_CHECK;

/* Parses PostgreSQL's format (also what pg_authid.rolpassword holds)
 * "SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>".
 * 0 or TP_EINVAL (malformed, salt over 64 bytes, iterations outside
 * 1..AUTH_SCRAM_MAX_ITERATIONS). */
int auth_scram_secret_parse(const char *text,
			    auth_scram_secret_t *out) TP_MUST_CHECK;

/* The inverse of auth_scram_secret_parse(), NUL-terminated in out.
 * 0 or TP_ETOOBIG; outcap = AUTH_SCRAM_SECRET_MAX always suffices. */
int auth_scram_secret_format(const auth_scram_secret_t *secret, char *out,
			     size_t outcap) TP_MUST_CHECK;

/* A secret no password matches (random salt and keys, no PBKDF2), for an
 * unknown user: run the exchange to the end so it fails like a wrong
 * password instead of telling the client the user does not exist. */
int auth_scram_secret_mock(auth_scram_secret_t *out) TP_MUST_CHECK;

/* Server side of one exchange. Fixed-size state, no allocation. The
 * functions below set every field; callers only embed it. */
typedef struct auth_scram_server {
	int step;
	char cbind; /* gs2 flag the client sent: 'n' or 'y' */
	auth_scram_secret_t secret;
	char client_first_bare[512];
	char server_first[512];
	char nonce[256]; /* client nonce + server nonce */
} auth_scram_server_t;

/*
 * client_first is the SASLInitialResponse data ("n,,n=,r=<cnonce>"); the
 * user name in n= is ignored (PostgreSQL clients send an empty one).
 * Writes server-first-message ("r=...,s=...,i=...") to out, NUL-terminated
 * (outcap counts the NUL; AUTH_SCRAM_MAX_MSG + 1 always suffices), length
 * in *outlen. TP_EPROTO on malformed input (including channel binding
 * "p=...", an authzid "a=..." or an "m=" extension), TP_ETOOBIG if the
 * message or a field exceeds the limits, TP_EINVAL for a bad secret, TP_EIO
 * if the random source fails.
 */
int auth_scram_server_first(auth_scram_server_t *st,
			    const auth_scram_secret_t *secret,
			    const char *client_first, size_t len, char *out,
			    size_t outcap, size_t *outlen) TP_MUST_CHECK;

/* client_final is "c=biws,r=...,p=<proof>". Verifies the proof; on success
 * writes "v=<ServerSignature b64>" to out (NUL-terminated) and returns 0;
 * TP_EAUTH on a wrong password, TP_EPROTO on malformed input, a channel
 * binding that does not match the gs2 header, a nonce mismatch or a call
 * out of order, TP_ETOOBIG on oversize input. One attempt per exchange:
 * after it the state only fails. */
int auth_scram_server_final(auth_scram_server_t *st, const char *client_final,
			    size_t len, char *out, size_t outcap,
			    size_t *outlen) TP_MUST_CHECK;

/* Client side, for `auth: password` PostgreSQL upstreams. */
typedef struct auth_scram_client {
	int step;
	char nonce[64];
	char client_first_bare[128];
	/* Expected "v=" from the server, computed with the proof. */
	unsigned char server_signature[AUTH_SCRAM_KEY_LEN];
} auth_scram_client_t;

/* Writes "n,,n=,r=<nonce>" (NUL-terminated). 0, TP_ETOOBIG or TP_EIO. */
int auth_scram_client_first(auth_scram_client_t *st, char *out, size_t outcap,
			    size_t *outlen) TP_MUST_CHECK;
/* Consumes server-first, writes client-final with proof (NUL-terminated;
 * AUTH_SCRAM_MAX_MSG + 1 bytes always suffice). TP_EPROTO on a malformed
 * server-first, a nonce that does not extend ours, or iterations outside
 * 1..AUTH_SCRAM_MAX_ITERATIONS; TP_ETOOBIG on oversize; TP_EINVAL for a
 * password over AUTH_PASSWORD_MAX. The password is used as bytes (no
 * SASLprep; identical for ASCII and NFKC-normalized UTF-8). */
int auth_scram_client_final(auth_scram_client_t *st, const char *password,
			    const char *server_first, size_t len, char *out,
			    size_t outcap, size_t *outlen) TP_MUST_CHECK;
/* Checks "v=..." from the server. 0, TP_EAUTH (wrong signature, or an
 * "e=" server error) or TP_EPROTO. */
int auth_scram_client_verify(auth_scram_client_t *st, const char *server_final,
			     size_t len) TP_MUST_CHECK;

/* PostgreSQL md5: "md5" + hex(md5(hex(md5(password + user)) + salt)),
 * NUL-terminated in out[36]. If the digest fails (e.g. MD5 disabled by a
 * FIPS provider) out is "", which matches no client response. */
void auth_pg_md5(const char *user, const char *password,
		 const unsigned char salt[4], char out[36]);

/* ---- MySQL scrambles ---- */
/* The nonce is the server's 20 random bytes (without the trailing NUL of
 * the handshake). An empty password is sent as an empty response by MySQL
 * clients, never as a scramble; these functions do not special-case it. On
 * a digest failure the scramble functions write zeros and the verify
 * functions return false. */
/* mysql_native_password: SHA1(p) XOR SHA1(nonce || SHA1(SHA1(p))). */
void auth_mysql_native_scramble(const char *password,
				const unsigned char *nonce, size_t nonce_len,
				unsigned char out[20]);
/* Verify a client's native scramble given SHA1(SHA1(p)). */
bool auth_mysql_native_verify(const unsigned char double_sha1[20],
			      const unsigned char *nonce, size_t nonce_len,
			      const unsigned char *scramble, size_t len);
/* caching_sha2_password fast path:
 * SHA256(p) XOR SHA256(SHA256(SHA256(p)) || nonce). */
void auth_mysql_sha2_scramble(const char *password, const unsigned char *nonce,
			      size_t nonce_len, unsigned char out[32]);
/* Verify given SHA256(SHA256(p)). */
bool auth_mysql_sha2_verify(const unsigned char double_sha256[32],
			    const unsigned char *nonce, size_t nonce_len,
			    const unsigned char *scramble, size_t len);

/* ---- static client credentials ---- */

/*
 * Verifiers derived once per config load for one client entry, so no
 * PBKDF2 runs per login. Each has_* says whether that method can be
 * verified (from the plain password or from a matching password_hash).
 */
typedef struct auth_verifier {
	bool has_scram;
	auth_scram_secret_t scram;
	bool has_mysql_native;
	unsigned char mysql_native[20]; /* SHA1(SHA1(p)) */
	bool has_mysql_sha2;
	unsigned char mysql_sha2[32]; /* SHA256(SHA256(p)) */
	bool has_plain;		      /* plain password known */
} auth_verifier_t;

/*
 * From client->password everything is derived (one PBKDF2 run); each of
 * client->hashes must be a format auth_hash_print() writes. When both are
 * given, every hash must match the password. TP_ECONFIG for an empty
 * password, an unrecognized or malformed hash, two hashes of one kind, a
 * hash that contradicts the password, or no credential at all; TP_EIO if
 * OpenSSL fails.
 */
int auth_verifier_build(const conf_client_t *client,
			auth_verifier_t *out) TP_MUST_CHECK;

/* Why one password_hash value is unusable, as a static string fit for a
 * config error after its key path (never quoting the value), or NULL when
 * it parses. Lets config checks name the exact entry auth_verifier_build()
 * would refuse. */
const char *auth_hash_error(const char *text);

/* Checks a password received in clear (PG cleartext, TDS LOGIN7, MySQL
 * clear text) against the plain password, or else against every
 * configured hash (all must match; a SCRAM hash costs one PBKDF2 run).
 * client must be the entry v was built from. Constant time where it can. */
bool auth_check_plain(const conf_client_t *client, const auth_verifier_t *v,
		      const char *password, size_t len);

/*
 * `tokenpool hash`: the password_hash values the config accepts for a
 * password, as a malloc'd text (one value per line, each ending in '\n'):
 *   SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>
 *   *<40 upper hex>           mysql_native_password, SHA1(SHA1(p))
 *   SHA256D$<64 lower hex>    caching_sha2_password, SHA256(SHA256(p))
 * NULL for an empty or over-long password or on failure.
 */
char *auth_hash_print(const char *password);

/* ---- JWT claims (no signature check) ---- */
typedef struct auth_jwt_info {
	double exp, nbf, iat; /* 0 when absent */
	char oid[64];
	char appid[64]; /* appid (v1 tokens) or azp (v2) */
	char aud[256];	/* first element when aud is an array */
} auth_jwt_info_t;

/* Decodes the payload of "header.payload.signature" (base64url, no
 * padding). Strings too long for their field are cut at a UTF-8 character
 * boundary. 0, TP_EINVAL (malformed, or over 1 MiB) or TP_ENOMEM. */
int auth_jwt_claims(const char *token, size_t len,
		    auth_jwt_info_t *out) TP_MUST_CHECK;

#endif
