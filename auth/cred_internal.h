/*
 * cred_internal.h - what the credential half of auth/ (scram.c, verify.c,
 * jwt.c) shares with itself, its unit tests and its fuzz target.
 *
 * Not a public API: protocol code uses auth/auth.h. The token half of auth/
 * keeps its own internal.h; nothing here depends on it. Names follow the
 * libuv convention: auth__ is shared-internal.
 */
#ifndef TP_AUTH_CRED_INTERNAL_H
#define TP_AUTH_CRED_INTERNAL_H

#include <openssl/evp.h>

#include "auth/auth.h"

/* ---- encodings (verify.c) ---- */

/* Encoded length of n bytes in padded base64, without the NUL. */
#define AUTH__B64_LEN(n) ((((n) + 2) / 3) * 4)

/* Padded base64 of in, NUL-terminated. 0 or TP_ETOOBIG. */
int auth__b64_encode(const unsigned char *in, size_t len, char *out,
		     size_t outcap, size_t *outlen) TP_MUST_CHECK;

/*
 * Strict base64 (RFC 4648 alphabet, length a multiple of 4, at most two '='
 * and only at the end, no whitespace). Writes exactly the decoded bytes,
 * so out needs no slack for padding. 0, TP_EPROTO (not base64) or
 * TP_ETOOBIG (decoded length over outcap).
 */
int auth__b64_decode(const char *in, size_t len, unsigned char *out,
		     size_t outcap, size_t *outlen) TP_MUST_CHECK;

/* Lower or upper case hex of n bytes into out[2n]; no NUL. */
void auth__hex(const unsigned char *in, size_t n, char *out, bool upper);

/* Exactly 2n hex digits (either case) into out[n]. 0 or TP_EINVAL. */
int auth__unhex(const char *in, size_t len, unsigned char *out,
		size_t n) TP_MUST_CHECK;

/* ---- digests (verify.c) ---- */

/* md(a || b); b may be NULL with blen 0. 0 or TP_EIO. */
int auth__digest2(const EVP_MD *md, const void *a, size_t alen, const void *b,
		  size_t blen, unsigned char *out) TP_MUST_CHECK;

/* HMAC-SHA-256. 0 or TP_EIO. */
int auth__hmac256(const unsigned char *key, size_t keylen, const void *data,
		  size_t len, unsigned char out[32]) TP_MUST_CHECK;

/* ---- SCRAM (scram.c) ---- */

enum {
	AUTH__SCRAM_FAILED = -1, /* an error happened: every call fails */
	AUTH__SCRAM_INIT = 0,
	AUTH__SCRAM_SENT_FIRST = 1, /* server-first / client-first sent */
	AUTH__SCRAM_SENT_FINAL = 2, /* client side: client-final sent */
	AUTH__SCRAM_DONE = 3
};

/* Length of the server nonce part we generate: 18 random bytes, base64. */
#define AUTH__SCRAM_NONCE_RAW 18

/*
 * StoredKey and ServerKey for password with the given salt and iteration
 * count (one PBKDF2 run), written into out along with salt and iterations.
 * 0, TP_EINVAL (lengths or iterations out of range) or TP_EIO.
 */
int auth__scram_derive(const char *password, size_t len,
		       const unsigned char *salt, size_t salt_len,
		       int iterations, auth_scram_secret_t *out) TP_MUST_CHECK;

/* A parsed server-first-message (client side). nonce points into the
 * message. */
typedef struct auth__scram_sfirst {
	const char *nonce;
	size_t nonce_len;
	unsigned char salt[64];
	size_t salt_len;
	int iterations;
} auth__scram_sfirst_t;

/* Parses "r=<nonce>,s=<salt>,i=<iter>[,ext...]" and checks the nonce
 * extends cnonce. 0, TP_EPROTO or TP_ETOOBIG. Exposed for the fuzz target:
 * the full client step would run PBKDF2 on every input. */
int auth__scram_parse_server_first(const char *msg, size_t len,
				   const char *cnonce, size_t cnonce_len,
				   auth__scram_sfirst_t *out) TP_MUST_CHECK;

/* Test hooks: the public functions with the random parts injected.
 * snonce must be printable ASCII without ','; user (client side) is sent
 * in n= and must not contain ',' or '='. */
int auth__scram_server_first_with_nonce(auth_scram_server_t *st,
					const auth_scram_secret_t *secret,
					const char *client_first, size_t len,
					const char *snonce, char *out,
					size_t outcap,
					size_t *outlen) TP_MUST_CHECK;
int auth__scram_client_first_with_nonce(auth_scram_client_t *st,
					const char *user, const char *nonce,
					char *out, size_t outcap,
					size_t *outlen) TP_MUST_CHECK;

#endif
