/*
 * verify.c - local client credentials: randomness and constant-time
 * comparison, PostgreSQL md5, the MySQL scrambles, verifiers built once per
 * config load from a plain password or from `tokenpool hash` values, plain
 * password checks, and the `tokenpool hash` text. Also the small encoding
 * and digest helpers the rest of the credential code shares.
 *
 * Non-goals: I/O, logging, choosing which method a login uses (protocol
 * code does that from auth_verifier_t's has_* flags), and MySQL's RSA or
 * full-auth exchange (protocol code sends the password over TLS and calls
 * auth_check_plain).
 *
 * Which login methods each password_hash form can verify (a plain password
 * verifies all of them):
 *   SCRAM-SHA-256$...  PostgreSQL SCRAM-SHA-256; any password received in
 *                      clear (PostgreSQL cleartext, TDS LOGIN7, MySQL
 *                      clear text / caching_sha2 full auth over TLS) at the
 *                      cost of one PBKDF2 run per login.
 *   *<40 hex>          mysql_native_password; passwords received in clear.
 *   SHA256D$<64 hex>   caching_sha2_password fast path; passwords received
 *                      in clear.
 * None of them verifies PostgreSQL md5 (it needs md5(password || user)),
 * and a SCRAM hash cannot verify a MySQL scramble nor the reverse: those
 * need the plain password or the matching hash.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "auth/cred_internal.h"

#define SHA1_LEN   20
#define SHA256_LEN 32

static const char native_prefix[] = "*";
static const char sha2_prefix[] = "SHA256D$";
static const char scram_prefix[] = "SCRAM-SHA-256$";

/* ---- randomness, comparison ---- */

int auth_random(void *buf, size_t len)
{
	unsigned char *p = buf;

	while (len > 0) {
		int n = len > INT_MAX ? INT_MAX : (int)len;

		if (RAND_bytes(p, n) != 1)
			return TP_EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

bool auth_equal(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

/* ---- encodings ---- */

int auth__b64_encode(const unsigned char *in, size_t len, char *out,
		     size_t outcap, size_t *outlen)
{
	*outlen = 0;
	if (len > INT_MAX / 2 || !out || AUTH__B64_LEN(len) >= outcap)
		return TP_ETOOBIG;
	*outlen = (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return 0;
}

static bool b64_char(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
	       (ch >= '0' && ch <= '9') || ch == '+' || ch == '/';
}

/*
 * EVP_DecodeBlock alone is too lenient for untrusted input (it skips
 * leading blanks, trims trailing junk and takes '=' anywhere as zero bits)
 * and writes padding bytes as if they were data; so validate first, then
 * decode all but the last group in place and the last through a 3-byte
 * buffer, keeping only its real bytes.
 */
int auth__b64_decode(const char *in, size_t len, unsigned char *out,
		     size_t outcap, size_t *outlen)
{
	unsigned char last[3];
	size_t pad = 0, full, n;

	*outlen = 0;
	if (len % 4 != 0)
		return TP_EPROTO;
	if (len == 0)
		return 0;
	if (len > INT_MAX)
		return TP_ETOOBIG;
	pad = (in[len - 1] == '=') + (in[len - 2] == '=');
	for (size_t i = 0; i < len - pad; i++)
		if (!b64_char(in[i]))
			return TP_EPROTO;
	n = len / 4 * 3 - pad;
	if (n > outcap)
		return TP_ETOOBIG;
	full = len - 4;
	if (full > 0 && EVP_DecodeBlock(out, (const unsigned char *)in,
					(int)full) != (int)(full / 4 * 3))
		return TP_EPROTO;
	if (EVP_DecodeBlock(last, (const unsigned char *)in + full, 4) != 3)
		return TP_EPROTO;
	memcpy(out + full / 4 * 3, last, 3 - pad);
	*outlen = n;
	return 0;
}

void auth__hex(const unsigned char *in, size_t n, char *out, bool upper)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0xf];
	}
}

static int nibble(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

int auth__unhex(const char *in, size_t len, unsigned char *out, size_t n)
{
	if (len != 2 * n)
		return TP_EINVAL;
	for (size_t i = 0; i < n; i++) {
		int hi = nibble(in[2 * i]), lo = nibble(in[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return TP_EINVAL;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

/* ---- digests ---- */

int auth__digest2(const EVP_MD *md, const void *a, size_t alen, const void *b,
		  size_t blen, unsigned char *out)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok;

	ok = ctx && EVP_DigestInit_ex(ctx, md, NULL) == 1 &&
	     (alen == 0 || EVP_DigestUpdate(ctx, a, alen) == 1) &&
	     (blen == 0 || EVP_DigestUpdate(ctx, b, blen) == 1) &&
	     EVP_DigestFinal_ex(ctx, out, NULL) == 1;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : TP_EIO;
}

int auth__hmac256(const unsigned char *key, size_t keylen, const void *data,
		  size_t len, unsigned char out[32])
{
	unsigned int n = 0;

	if (keylen > INT_MAX)
		return TP_EINVAL;
	if (!HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &n) ||
	    n != SHA256_LEN)
		return TP_EIO;
	return 0;
}

/* H(H(p)): what MySQL stores and what its scrambles are checked against. */
static int double_hash(const EVP_MD *md, size_t mdlen, const char *p,
		       size_t len, unsigned char *out)
{
	unsigned char once[EVP_MAX_MD_SIZE];
	int rc;

	rc = auth__digest2(md, p, len, NULL, 0, once);
	if (!rc)
		rc = auth__digest2(md, once, mdlen, NULL, 0, out);
	OPENSSL_cleanse(once, sizeof(once));
	return rc;
}

/* ---- PostgreSQL md5 ---- */

void auth_pg_md5(const char *user, const char *password,
		 const unsigned char salt[4], char out[36])
{
	unsigned char d[16];
	char inner[32];

	out[0] = '\0';
	if (auth__digest2(EVP_md5(), password, strlen(password), user,
			  strlen(user), d))
		return;
	auth__hex(d, sizeof(d), inner, false);
	if (auth__digest2(EVP_md5(), inner, sizeof(inner), salt, 4, d))
		return;
	memcpy(out, "md5", 3);
	auth__hex(d, sizeof(d), out + 3, false);
	out[35] = '\0';
	OPENSSL_cleanse(inner, sizeof(inner));
}

/* ---- MySQL scrambles ---- */

/* The per-login mask: H(nonce || stored) for native, H(stored || nonce)
 * for caching_sha2 (the two plugins concatenate in opposite orders). */
static int mask(const EVP_MD *md, size_t n, const unsigned char *stored,
		const unsigned char *nonce, size_t nonce_len, bool nonce_first,
		unsigned char *out)
{
	if (nonce_first)
		return auth__digest2(md, nonce, nonce_len, stored, n, out);
	return auth__digest2(md, stored, n, nonce, nonce_len, out);
}

/* H(p) XOR mask(H(H(p))). */
static void scramble(const EVP_MD *md, size_t n, const char *password,
		     const unsigned char *nonce, size_t nonce_len,
		     bool nonce_first, unsigned char *out)
{
	unsigned char once[SHA256_LEN], twice[SHA256_LEN], m[SHA256_LEN];
	size_t len = strlen(password);
	int rc;

	rc = auth__digest2(md, password, len, NULL, 0, once);
	if (!rc)
		rc = auth__digest2(md, once, n, NULL, 0, twice);
	if (!rc)
		rc = mask(md, n, twice, nonce, nonce_len, nonce_first, m);
	for (size_t i = 0; i < n; i++)
		out[i] = rc ? 0 : once[i] ^ m[i];
	OPENSSL_cleanse(once, sizeof(once));
	OPENSSL_cleanse(twice, sizeof(twice));
}

/* Recovers H(p) = scramble XOR mask(stored) and checks H(H(p)) == stored
 * in constant time. */
static bool scramble_ok(const EVP_MD *md, size_t n, const unsigned char *stored,
			const unsigned char *nonce, size_t nonce_len,
			bool nonce_first, const unsigned char *scr, size_t len)
{
	unsigned char m[SHA256_LEN], once[SHA256_LEN], twice[SHA256_LEN];
	bool ok;

	if (!stored || !scr || len != n ||
	    mask(md, n, stored, nonce, nonce_len, nonce_first, m))
		return false;
	for (size_t i = 0; i < n; i++)
		once[i] = scr[i] ^ m[i];
	ok = auth__digest2(md, once, n, NULL, 0, twice) == 0 &&
	     CRYPTO_memcmp(twice, stored, n) == 0;
	OPENSSL_cleanse(once, sizeof(once));
	return ok;
}

void auth_mysql_native_scramble(const char *password,
				const unsigned char *nonce, size_t nonce_len,
				unsigned char out[20])
{
	scramble(EVP_sha1(), SHA1_LEN, password, nonce, nonce_len, true, out);
}

bool auth_mysql_native_verify(const unsigned char double_sha1[20],
			      const unsigned char *nonce, size_t nonce_len,
			      const unsigned char *scramble, size_t len)
{
	return scramble_ok(EVP_sha1(), SHA1_LEN, double_sha1, nonce, nonce_len,
			   true, scramble, len);
}

void auth_mysql_sha2_scramble(const char *password, const unsigned char *nonce,
			      size_t nonce_len, unsigned char out[32])
{
	scramble(EVP_sha256(), SHA256_LEN, password, nonce, nonce_len, false,
		 out);
}

bool auth_mysql_sha2_verify(const unsigned char double_sha256[32],
			    const unsigned char *nonce, size_t nonce_len,
			    const unsigned char *scramble, size_t len)
{
	return scramble_ok(EVP_sha256(), SHA256_LEN, double_sha256, nonce,
			   nonce_len, false, scramble, len);
}

/* ---- verifiers ---- */

/* One password_hash value into the matching has_* of h (zeroed). */
static int parse_hash(const char *text, auth_verifier_t *h)
{
	size_t len = strnlen(text, AUTH_SCRAM_SECRET_MAX);
	size_t np = sizeof(native_prefix) - 1, sp = sizeof(sha2_prefix) - 1;

	if (strncmp(text, scram_prefix, sizeof(scram_prefix) - 1) == 0) {
		if (auth_scram_secret_parse(text, &h->scram))
			return TP_ECONFIG;
		h->has_scram = true;
	} else if (strncmp(text, native_prefix, np) == 0) {
		if (auth__unhex(text + np, len - np, h->mysql_native, SHA1_LEN))
			return TP_ECONFIG;
		h->has_mysql_native = true;
	} else if (strncmp(text, sha2_prefix, sp) == 0) {
		if (auth__unhex(text + sp, len - sp, h->mysql_sha2, SHA256_LEN))
			return TP_ECONFIG;
		h->has_mysql_sha2 = true;
	} else {
		return TP_ECONFIG;
	}
	return 0;
}

/* Every hash present in v must accept the password, and at least one must
 * be present: hashes that disagree lock the client out rather than let two
 * passwords in. */
static bool hashes_match(const auth_verifier_t *v, const char *pw, size_t len)
{
	unsigned char d[SHA256_LEN];
	auth_scram_secret_t s;
	bool any = false, ok = true;

	if (v->has_scram) {
		any = true;
		ok &= auth__scram_derive(pw, len, v->scram.salt,
					 v->scram.salt_len, v->scram.iterations,
					 &s) == 0 &&
		      CRYPTO_memcmp(s.stored_key, v->scram.stored_key,
				    sizeof(s.stored_key)) == 0;
		OPENSSL_cleanse(&s, sizeof(s));
	}
	if (v->has_mysql_native) {
		any = true;
		ok &= double_hash(EVP_sha1(), SHA1_LEN, pw, len, d) == 0 &&
		      CRYPTO_memcmp(d, v->mysql_native, SHA1_LEN) == 0;
	}
	if (v->has_mysql_sha2) {
		any = true;
		ok &= double_hash(EVP_sha256(), SHA256_LEN, pw, len, d) == 0 &&
		      CRYPTO_memcmp(d, v->mysql_sha2, SHA256_LEN) == 0;
	}
	return any && ok;
}

/* Everything from the plain password: one PBKDF2 run with a fresh salt. */
static int from_password(const char *pw, auth_verifier_t *v)
{
	size_t len = strnlen(pw, AUTH_PASSWORD_MAX + 1);
	int rc;

	/* PostgreSQL clients refuse to send an empty password, and one that
	 * long is a mistake; neither belongs in front of a database. */
	if (len == 0 || len > AUTH_PASSWORD_MAX)
		return TP_ECONFIG;
	rc = auth_scram_secret_from_password(pw, &v->scram);
	if (!rc)
		rc =
		    double_hash(EVP_sha1(), SHA1_LEN, pw, len, v->mysql_native);
	if (!rc)
		rc = double_hash(EVP_sha256(), SHA256_LEN, pw, len,
				 v->mysql_sha2);
	if (rc)
		return rc == TP_EINVAL ? TP_ECONFIG : rc;
	v->has_scram = v->has_mysql_native = v->has_mysql_sha2 = true;
	v->has_plain = true;
	return 0;
}

/* Adds one hash to v; beside a plain password it only has to agree. */
static int add_hash(auth_verifier_t *v, const char *pw, const char *text)
{
	auth_verifier_t h;
	int rc;

	memset(&h, 0, sizeof(h));
	rc = text ? parse_hash(text, &h) : TP_ECONFIG;
	if (!rc && pw && !hashes_match(&h, pw, strlen(pw)))
		rc = TP_ECONFIG;
	if (!rc && !pw) {
		if ((h.has_scram && v->has_scram) ||
		    (h.has_mysql_native && v->has_mysql_native) ||
		    (h.has_mysql_sha2 && v->has_mysql_sha2))
			rc = TP_ECONFIG; /* two hashes of one kind */
	}
	if (!rc && !pw) {
		if (h.has_scram) {
			v->scram = h.scram;
			v->has_scram = true;
		}
		if (h.has_mysql_native) {
			memcpy(v->mysql_native, h.mysql_native, SHA1_LEN);
			v->has_mysql_native = true;
		}
		if (h.has_mysql_sha2) {
			memcpy(v->mysql_sha2, h.mysql_sha2, SHA256_LEN);
			v->has_mysql_sha2 = true;
		}
	}
	OPENSSL_cleanse(&h, sizeof(h));
	return rc;
}

int auth_verifier_build(const conf_client_t *client, auth_verifier_t *out)
{
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (!client)
		return TP_ECONFIG;
	if (client->password)
		rc = from_password(client->password, out);
	for (size_t i = 0; !rc && i < client->nhashes; i++)
		rc = add_hash(out, client->password, client->hashes[i]);
	if (!rc && !out->has_plain && !out->has_scram &&
	    !out->has_mysql_native && !out->has_mysql_sha2)
		rc = TP_ECONFIG; /* no credential at all */
	if (rc)
		OPENSSL_cleanse(out, sizeof(*out));
	return rc;
}

static bool starts(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

const char *auth_hash_error(const char *text)
{
	auth_verifier_t h;
	const char *why;

	if (!text)
		return "missing value";
	memset(&h, 0, sizeof(h));
	if (parse_hash(text, &h) == 0)
		why = NULL;
	else if (starts(text, scram_prefix))
		why = "malformed SCRAM-SHA-256 secret (expected "
		      "SCRAM-SHA-256$<iterations 1..100000>:<salt>$"
		      "<StoredKey>:<ServerKey>, base64, salt up to 64 bytes)";
	else if (starts(text, native_prefix))
		why = "expected '*' and 40 hex digits (mysql_native_password)";
	else if (starts(text, sha2_prefix))
		why = "expected 'SHA256D$' and 64 hex digits "
		      "(caching_sha2_password)";
	else
		why = "unrecognized format (use a line of `tokenpool hash`)";
	OPENSSL_cleanse(&h, sizeof(h));
	return why;
}

/* Compares digests rather than the passwords so that neither the length
 * nor the first differing byte shows in the timing. */
static bool plain_equal(const char *want, const char *got, size_t len)
{
	unsigned char a[SHA256_LEN], b[SHA256_LEN];

	if (auth__digest2(EVP_sha256(), want, strlen(want), NULL, 0, a) ||
	    auth__digest2(EVP_sha256(), got, len, NULL, 0, b))
		return false;
	return CRYPTO_memcmp(a, b, sizeof(a)) == 0;
}

bool auth_check_plain(const conf_client_t *client, const auth_verifier_t *v,
		      const char *password, size_t len)
{
	if (!v || (len > 0 && !password) || len > AUTH_PASSWORD_MAX)
		return false;
	if (!password)
		password = "";
	if (v->has_plain)
		return client && client->password &&
		       plain_equal(client->password, password, len);
	return hashes_match(v, password, len);
}

/* ---- `tokenpool hash` ---- */

char *auth_hash_print(const char *password)
{
	char scram[AUTH_SCRAM_SECRET_MAX];
	char native[2 * SHA1_LEN + 1], sha2[2 * SHA256_LEN + 1];
	auth_verifier_t v;
	char *text = NULL;
	size_t cap;
	int rc;

	if (!password)
		return NULL;
	memset(&v, 0, sizeof(v));
	rc = from_password(password, &v);
	if (!rc)
		rc = auth_scram_secret_format(&v.scram, scram, sizeof(scram));
	if (!rc) {
		auth__hex(v.mysql_native, SHA1_LEN, native, true);
		native[2 * SHA1_LEN] = '\0';
		auth__hex(v.mysql_sha2, SHA256_LEN, sha2, false);
		sha2[2 * SHA256_LEN] = '\0';
		cap = strlen(scram) + sizeof(native) + sizeof(sha2) + 16;
		text = malloc(cap);
	}
	if (text)
		snprintf(text, cap, "%s\n%s%s\n%s%s\n", scram, native_prefix,
			 native, sha2_prefix, sha2);
	OPENSSL_cleanse(&v, sizeof(v));
	return text;
}
