/*
 * scram.c - SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it:
 * the server side local clients log in to, the client side for
 * `auth: password` upstreams, and PostgreSQL's stored-secret text format.
 *
 * Non-goals: SCRAM-SHA-256-PLUS (we never offer channel binding, so a
 * client asking for it with "p=" is refused), authorization identities
 * ("a="), the "m=" extension, SASLprep (passwords are used as bytes, which
 * is what SASLprep yields for ASCII and for NFKC-normalized UTF-8 without
 * mapped or prohibited characters), and any I/O: the protocol code moves
 * the bytes, this file only computes.
 *
 * Every message is untrusted and not NUL-terminated: parsers walk a cursor
 * bounded by the length they were given and never read at or past its end.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "auth/cred_internal.h"

/* c= carries base64(gs2-header); without channel binding the header is
 * "n,," (client cannot bind) or "y,," (client could, server did not offer
 * it), so these are the only two values a valid client-final can hold. */
#define CBIND_N	  "biws"
#define CBIND_Y	  "eSws"
#define CBIND_LEN 4

/* Longest combined nonce, either side: what auth_scram_server_t holds. */
#define NONCE_MAX (sizeof(((auth_scram_server_t *)0)->nonce) - 1)

static const char secret_prefix[] = "SCRAM-SHA-256$";

/* ---- message parsing ---- */

typedef struct cursor {
	const char *p;
	const char *end;
} cursor_t;

static size_t left(const cursor_t *c)
{
	return (size_t)(c->end - c->p);
}

/* Reads "<name>=<value>" up to the next ',' or the end, leaving the cursor
 * on that ',' (or the end). On mismatch the cursor does not move. */
static bool read_attr(cursor_t *c, char name, const char **val, size_t *vlen)
{
	const char *comma;

	if (left(c) < 2 || c->p[0] != name || c->p[1] != '=')
		return false;
	c->p += 2;
	comma = memchr(c->p, ',', left(c));
	*val = c->p;
	c->p = comma ? comma : c->end;
	*vlen = (size_t)(c->p - *val);
	return true;
}

static bool read_comma(cursor_t *c)
{
	if (left(c) < 1 || c->p[0] != ',')
		return false;
	c->p++;
	return true;
}

static bool is_alpha(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

/* One extension attribute (ALPHA "=" value); RFC 5802 lets either side
 * add them and says to ignore unknown ones. */
static bool skip_ext(cursor_t *c)
{
	const char *v;
	size_t n;

	if (left(c) < 2 || !is_alpha(c->p[0]))
		return false;
	return read_attr(c, c->p[0], &v, &n);
}

/* The tail of a message: nothing, or ",ext" repeated. */
static bool skip_exts(cursor_t *c)
{
	while (left(c) > 0)
		if (!read_comma(c) || !skip_ext(c))
			return false;
	return true;
}

/* RFC 5802 "printable" (%x21-2B / %x2D-7E): visible ASCII except ','. */
static bool printable(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 0x21 || ch > 0x7e || ch == ',')
			return false;
	}
	return true;
}

/* Size first (so oversize is TP_ETOOBIG, not a parse error), then reject
 * NUL: SCRAM messages are text and we keep parts as C strings. */
static int check_msg(const char *msg, size_t len)
{
	if (len > AUTH_SCRAM_MAX_MSG)
		return TP_ETOOBIG;
	if (len == 0 || !msg || memchr(msg, '\0', len))
		return TP_EPROTO;
	return 0;
}

/* Decimal 1..AUTH_SCRAM_MAX_ITERATIONS; no sign, no spaces. */
static bool parse_iterations(const char *s, size_t n, int *out)
{
	long v = 0;

	if (n == 0 || n > 9)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v < 1 || v > AUTH_SCRAM_MAX_ITERATIONS)
		return false;
	*out = (int)v;
	return true;
}

/* Exactly AUTH_SCRAM_KEY_LEN bytes of base64. */
static bool decode_key(const char *s, size_t n, unsigned char *key)
{
	size_t got;

	return auth__b64_decode(s, n, key, AUTH_SCRAM_KEY_LEN, &got) == 0 &&
	       got == AUTH_SCRAM_KEY_LEN;
}

/* Copies n bytes and a NUL to out if they fit. */
static int put(char *out, size_t outcap, size_t *outlen, const char *src,
	       size_t n)
{
	if (!out || n >= outcap)
		return TP_ETOOBIG;
	memcpy(out, src, n);
	out[n] = '\0';
	*outlen = n;
	return 0;
}

/* AuthMessage = client-first-bare "," server-first "," client-final
 * without proof. dst must hold alen + blen + clen + 2. */
static size_t join3(char *dst, const char *a, size_t alen, const char *b,
		    size_t blen, const char *c, size_t clen)
{
	memcpy(dst, a, alen);
	dst[alen] = ',';
	memcpy(dst + alen + 1, b, blen);
	dst[alen + 1 + blen] = ',';
	memcpy(dst + alen + blen + 2, c, clen);
	return alen + blen + clen + 2;
}

static void xor32(unsigned char *dst, const unsigned char *a,
		  const unsigned char *b)
{
	for (size_t i = 0; i < AUTH_SCRAM_KEY_LEN; i++)
		dst[i] = a[i] ^ b[i];
}

/* ---- keys ---- */

static bool secret_valid(const auth_scram_secret_t *s)
{
	return s && s->iterations >= 1 &&
	       s->iterations <= AUTH_SCRAM_MAX_ITERATIONS && s->salt_len >= 1 &&
	       s->salt_len <= sizeof(s->salt);
}

/* ClientKey = HMAC(SaltedPassword, "Client Key"), StoredKey =
 * H(ClientKey), ServerKey = HMAC(SaltedPassword, "Server Key"), with
 * SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations). */
static int derive_keys(const char *password, size_t len,
		       const unsigned char *salt, size_t salt_len,
		       int iterations, unsigned char client_key[32],
		       unsigned char stored_key[32],
		       unsigned char server_key[32])
{
	unsigned char salted[AUTH_SCRAM_KEY_LEN];
	int rc = 0;

	if (len > AUTH_PASSWORD_MAX || salt_len < 1 || salt_len > 64 ||
	    iterations < 1 || iterations > AUTH_SCRAM_MAX_ITERATIONS)
		return TP_EINVAL;
	if (PKCS5_PBKDF2_HMAC(len ? password : "", (int)len, salt,
			      (int)salt_len, iterations, EVP_sha256(),
			      (int)sizeof(salted), salted) != 1)
		rc = TP_EIO;
	if (!rc)
		rc = auth__hmac256(salted, sizeof(salted), "Client Key", 10,
				   client_key);
	if (!rc)
		rc = auth__digest2(EVP_sha256(), client_key, 32, NULL, 0,
				   stored_key);
	if (!rc)
		rc = auth__hmac256(salted, sizeof(salted), "Server Key", 10,
				   server_key);
	OPENSSL_cleanse(salted, sizeof(salted));
	return rc;
}

int auth__scram_derive(const char *password, size_t len,
		       const unsigned char *salt, size_t salt_len,
		       int iterations, auth_scram_secret_t *out)
{
	unsigned char client_key[AUTH_SCRAM_KEY_LEN];
	int rc;

	memset(out, 0, sizeof(*out));
	rc = derive_keys(password, len, salt, salt_len, iterations, client_key,
			 out->stored_key, out->server_key);
	OPENSSL_cleanse(client_key, sizeof(client_key));
	if (rc) {
		OPENSSL_cleanse(out, sizeof(*out));
		return rc;
	}
	out->iterations = iterations;
	memcpy(out->salt, salt, salt_len);
	out->salt_len = salt_len;
	return 0;
}

/* ---- secrets ---- */

int auth_scram_secret_from_password(const char *password,
				    auth_scram_secret_t *out)
{
	unsigned char salt[AUTH_SCRAM_SALT_LEN];

	memset(out, 0, sizeof(*out));
	if (!password)
		return TP_EINVAL;
	if (auth_random(salt, sizeof(salt)))
		return TP_EIO;
	return auth__scram_derive(
	    password, strnlen(password, AUTH_PASSWORD_MAX + 1), salt,
	    sizeof(salt), AUTH_SCRAM_ITERATIONS, out);
}

int auth_scram_secret_mock(auth_scram_secret_t *out)
{
	memset(out, 0, sizeof(*out));
	out->iterations = AUTH_SCRAM_ITERATIONS;
	out->salt_len = AUTH_SCRAM_SALT_LEN;
	if (auth_random(out->salt, out->salt_len) ||
	    auth_random(out->stored_key, sizeof(out->stored_key)) ||
	    auth_random(out->server_key, sizeof(out->server_key)))
		return TP_EIO;
	return 0;
}

int auth_scram_secret_parse(const char *text, auth_scram_secret_t *out)
{
	const size_t plen = sizeof(secret_prefix) - 1;
	const char *p, *end, *colon, *dollar, *colon2;
	size_t len;

	memset(out, 0, sizeof(*out));
	if (!text)
		return TP_EINVAL;
	len = strnlen(text, AUTH_SCRAM_SECRET_MAX);
	if (len >= AUTH_SCRAM_SECRET_MAX || len < plen ||
	    memcmp(text, secret_prefix, plen) != 0)
		return TP_EINVAL;
	p = text + plen;
	end = text + len;
	/* base64 never holds ':' or '$', so the separators are unambiguous */
	colon = memchr(p, ':', (size_t)(end - p));
	dollar = colon ? memchr(colon, '$', (size_t)(end - colon)) : NULL;
	colon2 = dollar ? memchr(dollar, ':', (size_t)(end - dollar)) : NULL;
	if (!colon2 ||
	    !parse_iterations(p, (size_t)(colon - p), &out->iterations) ||
	    auth__b64_decode(colon + 1, (size_t)(dollar - colon - 1), out->salt,
			     sizeof(out->salt), &out->salt_len) != 0 ||
	    out->salt_len == 0 ||
	    !decode_key(dollar + 1, (size_t)(colon2 - dollar - 1),
			out->stored_key) ||
	    !decode_key(colon2 + 1, (size_t)(end - colon2 - 1),
			out->server_key)) {
		OPENSSL_cleanse(out, sizeof(*out));
		return TP_EINVAL;
	}
	return 0;
}

int auth_scram_secret_format(const auth_scram_secret_t *secret, char *out,
			     size_t outcap)
{
	char salt[AUTH__B64_LEN(sizeof(secret->salt)) + 1];
	char sk[AUTH__B64_LEN(AUTH_SCRAM_KEY_LEN) + 1];
	char vk[AUTH__B64_LEN(AUTH_SCRAM_KEY_LEN) + 1];
	size_t n;
	int w;

	if (out && outcap)
		out[0] = '\0';
	if (!secret_valid(secret))
		return TP_EINVAL;
	if (auth__b64_encode(secret->salt, secret->salt_len, salt, sizeof(salt),
			     &n) ||
	    auth__b64_encode(secret->stored_key, AUTH_SCRAM_KEY_LEN, sk,
			     sizeof(sk), &n) ||
	    auth__b64_encode(secret->server_key, AUTH_SCRAM_KEY_LEN, vk,
			     sizeof(vk), &n))
		return TP_EINVAL;
	if (!out || !outcap)
		return TP_ETOOBIG;
	w = snprintf(out, outcap, "%s%d:%s$%s:%s", secret_prefix,
		     secret->iterations, salt, sk, vk);
	if (w < 0 || (size_t)w >= outcap) {
		out[0] = '\0';
		return TP_ETOOBIG;
	}
	return 0;
}

/* ---- server side ---- */

typedef struct client_first {
	char cbind;
	const char *bare;
	size_t bare_len;
	const char *cnonce;
	size_t cnonce_len;
} client_first_t;

/* "n,,n=<user>,r=<cnonce>[,ext...]" (or "y,,..."). */
static int parse_client_first(const char *msg, size_t len, client_first_t *cf)
{
	cursor_t c;
	const char *user;
	size_t user_len;
	int rc = check_msg(msg, len);

	if (rc)
		return rc;
	/* "p=<name>" asks for channel binding, i.e. SCRAM-SHA-256-PLUS,
	 * which we never offer: PostgreSQL refuses it the same way. */
	if (msg[0] != 'n' && msg[0] != 'y')
		return TP_EPROTO;
	cf->cbind = msg[0];
	c.p = msg + 1;
	c.end = msg + len;
	/* Anything between these two commas is an authzid ("a="): a request
	 * to act as another role, which PostgreSQL does not support. */
	if (!read_comma(&c) || !read_comma(&c))
		return TP_EPROTO;
	cf->bare = c.p;
	cf->bare_len = left(&c);
	/* The user comes from the startup packet; n= is read and ignored.
	 * A leading "m=" (mandatory extension) fails here as well. */
	if (!read_attr(&c, 'n', &user, &user_len) || !read_comma(&c))
		return TP_EPROTO;
	if (!read_attr(&c, 'r', &cf->cnonce, &cf->cnonce_len) ||
	    !printable(cf->cnonce, cf->cnonce_len))
		return TP_EPROTO;
	return skip_exts(&c) ? 0 : TP_EPROTO;
}

int auth__scram_server_first_with_nonce(auth_scram_server_t *st,
					const auth_scram_secret_t *secret,
					const char *client_first, size_t len,
					const char *snonce, char *out,
					size_t outcap, size_t *outlen)
{
	char salt[AUTH__B64_LEN(sizeof(secret->salt)) + 1];
	size_t snonce_len = strlen(snonce), slen;
	client_first_t cf;
	int rc, n;

	memset(st, 0, sizeof(*st));
	st->step = AUTH__SCRAM_FAILED;
	*outlen = 0;
	if (!secret_valid(secret) || !printable(snonce, snonce_len))
		return TP_EINVAL;
	rc = parse_client_first(client_first, len, &cf);
	if (rc)
		return rc;
	if (cf.bare_len >= sizeof(st->client_first_bare) ||
	    cf.cnonce_len + snonce_len > NONCE_MAX)
		return TP_ETOOBIG;
	memcpy(st->client_first_bare, cf.bare, cf.bare_len);
	memcpy(st->nonce, cf.cnonce, cf.cnonce_len);
	memcpy(st->nonce + cf.cnonce_len, snonce, snonce_len);
	rc = auth__b64_encode(secret->salt, secret->salt_len, salt,
			      sizeof(salt), &slen);
	if (rc)
		return rc;
	n = snprintf(st->server_first, sizeof(st->server_first),
		     "r=%s,s=%s,i=%d", st->nonce, salt, secret->iterations);
	if (n < 0 || (size_t)n >= sizeof(st->server_first))
		return TP_ETOOBIG;
	rc = put(out, outcap, outlen, st->server_first, (size_t)n);
	if (rc)
		return rc;
	st->secret = *secret;
	st->cbind = cf.cbind;
	st->step = AUTH__SCRAM_SENT_FIRST;
	return 0;
}

int auth_scram_server_first(auth_scram_server_t *st,
			    const auth_scram_secret_t *secret,
			    const char *client_first, size_t len, char *out,
			    size_t outcap, size_t *outlen)
{
	unsigned char raw[AUTH__SCRAM_NONCE_RAW];
	char snonce[AUTH__B64_LEN(AUTH__SCRAM_NONCE_RAW) + 1];
	size_t n;

	st->step = AUTH__SCRAM_FAILED;
	*outlen = 0;
	if (auth_random(raw, sizeof(raw)) ||
	    auth__b64_encode(raw, sizeof(raw), snonce, sizeof(snonce), &n))
		return TP_EIO;
	return auth__scram_server_first_with_nonce(
	    st, secret, client_first, len, snonce, out, outcap, outlen);
}

typedef struct client_final {
	const char *cb;
	size_t cb_len;
	const char *nonce;
	size_t nonce_len;
	size_t without_proof; /* length of the message before ",p=" */
	const char *proof;
	size_t proof_len;
} client_final_t;

/* "c=<cb>,r=<nonce>[,ext...],p=<proof>": the proof is always last. */
static int parse_client_final(const char *msg, size_t len, client_final_t *cf)
{
	cursor_t c;
	int rc = check_msg(msg, len);

	if (rc)
		return rc;
	c.p = msg;
	c.end = msg + len;
	if (!read_attr(&c, 'c', &cf->cb, &cf->cb_len) || !read_comma(&c) ||
	    !read_attr(&c, 'r', &cf->nonce, &cf->nonce_len))
		return TP_EPROTO;
	for (;;) {
		const char *mark = c.p;

		if (!read_comma(&c))
			return TP_EPROTO; /* ended without a proof */
		if (read_attr(&c, 'p', &cf->proof, &cf->proof_len)) {
			cf->without_proof = (size_t)(mark - msg);
			return left(&c) == 0 ? 0 : TP_EPROTO;
		}
		if (!skip_ext(&c))
			return TP_EPROTO;
	}
}

/* c= must be base64 of the gs2 header the client sent first, so that a
 * downgrade of the cbind flag in between is caught. */
static int check_binding(char cbind, const client_final_t *cf)
{
	const char *want = cbind == 'y' ? CBIND_Y : CBIND_N;

	if (cf->cb_len != CBIND_LEN || memcmp(cf->cb, want, CBIND_LEN) != 0)
		return TP_EPROTO;
	return 0;
}

/* Recovers ClientKey = proof XOR HMAC(StoredKey, AuthMessage) and checks
 * H(ClientKey) == StoredKey in constant time; on success sig receives
 * ServerSignature = HMAC(ServerKey, AuthMessage). */
static int check_proof(const auth_scram_server_t *st, const char *msg,
		       const client_final_t *cf, unsigned char sig[32])
{
	char am[sizeof(st->client_first_bare) + sizeof(st->server_first) +
		AUTH_SCRAM_MAX_MSG + 2];
	unsigned char proof[AUTH_SCRAM_KEY_LEN], csig[AUTH_SCRAM_KEY_LEN];
	unsigned char key[AUTH_SCRAM_KEY_LEN], stored[AUTH_SCRAM_KEY_LEN];
	size_t n;
	int rc;

	if (!decode_key(cf->proof, cf->proof_len, proof))
		return TP_EPROTO;
	n = join3(am, st->client_first_bare, strlen(st->client_first_bare),
		  st->server_first, strlen(st->server_first), msg,
		  cf->without_proof);
	rc = auth__hmac256(st->secret.stored_key, AUTH_SCRAM_KEY_LEN, am, n,
			   csig);
	if (!rc) {
		xor32(key, proof, csig);
		rc = auth__digest2(EVP_sha256(), key, sizeof(key), NULL, 0,
				   stored);
	}
	if (!rc && CRYPTO_memcmp(stored, st->secret.stored_key,
				 AUTH_SCRAM_KEY_LEN) != 0)
		rc = TP_EAUTH;
	if (!rc)
		rc = auth__hmac256(st->secret.server_key, AUTH_SCRAM_KEY_LEN,
				   am, n, sig);
	OPENSSL_cleanse(key, sizeof(key));
	return rc;
}

int auth_scram_server_final(auth_scram_server_t *st, const char *client_final,
			    size_t len, char *out, size_t outcap,
			    size_t *outlen)
{
	char v[2 + AUTH__B64_LEN(AUTH_SCRAM_KEY_LEN) + 1] = "v=";
	unsigned char sig[AUTH_SCRAM_KEY_LEN];
	client_final_t cf;
	size_t n;
	int rc;

	*outlen = 0;
	if (st->step != AUTH__SCRAM_SENT_FIRST)
		return TP_EPROTO;
	st->step = AUTH__SCRAM_FAILED; /* one attempt per exchange */
	rc = parse_client_final(client_final, len, &cf);
	if (!rc)
		rc = check_binding(st->cbind, &cf);
	if (!rc && (cf.nonce_len != strlen(st->nonce) ||
		    memcmp(cf.nonce, st->nonce, cf.nonce_len) != 0))
		rc = TP_EPROTO;
	if (!rc)
		rc = check_proof(st, client_final, &cf, sig);
	if (!rc)
		rc = auth__b64_encode(sig, sizeof(sig), v + 2, sizeof(v) - 2,
				      &n);
	if (!rc)
		rc = put(out, outcap, outlen, v, n + 2);
	if (!rc)
		st->step = AUTH__SCRAM_DONE;
	OPENSSL_cleanse(&st->secret, sizeof(st->secret));
	return rc;
}

/* ---- client side ---- */

int auth__scram_client_first_with_nonce(auth_scram_client_t *st,
					const char *user, const char *nonce,
					char *out, size_t outcap,
					size_t *outlen)
{
	size_t nlen = strlen(nonce);
	int n, rc;

	memset(st, 0, sizeof(*st));
	st->step = AUTH__SCRAM_FAILED;
	*outlen = 0;
	if (!printable(nonce, nlen) || nlen >= sizeof(st->nonce) ||
	    strpbrk(user, ",="))
		return TP_EINVAL;
	n = snprintf(st->client_first_bare, sizeof(st->client_first_bare),
		     "n=%s,r=%s", user, nonce);
	if (n < 0 || (size_t)n >= sizeof(st->client_first_bare))
		return TP_ETOOBIG;
	if (!out || (size_t)n + 3 >= outcap)
		return TP_ETOOBIG;
	memcpy(out, "n,,", 3);
	rc = put(out + 3, outcap - 3, outlen, st->client_first_bare, (size_t)n);
	if (rc)
		return rc;
	*outlen += 3;
	memcpy(st->nonce, nonce, nlen);
	st->step = AUTH__SCRAM_SENT_FIRST;
	return 0;
}

int auth_scram_client_first(auth_scram_client_t *st, char *out, size_t outcap,
			    size_t *outlen)
{
	unsigned char raw[AUTH__SCRAM_NONCE_RAW];
	char nonce[AUTH__B64_LEN(AUTH__SCRAM_NONCE_RAW) + 1];
	size_t n;

	st->step = AUTH__SCRAM_FAILED;
	*outlen = 0;
	if (auth_random(raw, sizeof(raw)) ||
	    auth__b64_encode(raw, sizeof(raw), nonce, sizeof(nonce), &n))
		return TP_EIO;
	/* n= left empty, as libpq does: the user is in the startup packet */
	return auth__scram_client_first_with_nonce(st, "", nonce, out, outcap,
						   outlen);
}

int auth__scram_parse_server_first(const char *msg, size_t len,
				   const char *cnonce, size_t cnonce_len,
				   auth__scram_sfirst_t *out)
{
	const char *v;
	size_t vlen;
	cursor_t c;
	int rc = check_msg(msg, len);

	memset(out, 0, sizeof(*out));
	if (rc)
		return rc;
	c.p = msg;
	c.end = msg + len;
	/* a leading "m=" (mandatory extension) fails the r= read */
	if (!read_attr(&c, 'r', &out->nonce, &out->nonce_len) ||
	    !read_comma(&c))
		return TP_EPROTO;
	if (out->nonce_len > NONCE_MAX)
		return TP_ETOOBIG;
	/* the server must extend our nonce, not replace it */
	if (out->nonce_len <= cnonce_len ||
	    memcmp(out->nonce, cnonce, cnonce_len) != 0 ||
	    !printable(out->nonce, out->nonce_len))
		return TP_EPROTO;
	if (!read_attr(&c, 's', &v, &vlen) || !read_comma(&c))
		return TP_EPROTO;
	rc = auth__b64_decode(v, vlen, out->salt, sizeof(out->salt),
			      &out->salt_len);
	if (rc)
		return rc;
	if (out->salt_len == 0 || !read_attr(&c, 'i', &v, &vlen) ||
	    !parse_iterations(v, vlen, &out->iterations) || !skip_exts(&c))
		return TP_EPROTO;
	return 0;
}

/* Proof and expected server signature for one client-final. */
static int client_proof(auth_scram_client_t *st, const char *password,
			const auth__scram_sfirst_t *sf, const char *am,
			size_t am_len, unsigned char proof[32])
{
	unsigned char ckey[32], stored[32], skey[32], csig[32];
	int rc;

	rc = derive_keys(password, strnlen(password, AUTH_PASSWORD_MAX + 1),
			 sf->salt, sf->salt_len, sf->iterations, ckey, stored,
			 skey);
	if (!rc)
		rc = auth__hmac256(stored, sizeof(stored), am, am_len, csig);
	if (!rc)
		rc = auth__hmac256(skey, sizeof(skey), am, am_len,
				   st->server_signature);
	if (!rc)
		xor32(proof, ckey, csig);
	OPENSSL_cleanse(ckey, sizeof(ckey));
	OPENSSL_cleanse(skey, sizeof(skey));
	return rc;
}

int auth_scram_client_final(auth_scram_client_t *st, const char *password,
			    const char *server_first, size_t len, char *out,
			    size_t outcap, size_t *outlen)
{
	char am[sizeof(st->client_first_bare) + 2 * AUTH_SCRAM_MAX_MSG + 2];
	char fin[AUTH_SCRAM_MAX_MSG + 1];
	unsigned char proof[AUTH_SCRAM_KEY_LEN];
	auth__scram_sfirst_t sf;
	size_t am_len, n;
	int rc, w;

	*outlen = 0;
	if (st->step != AUTH__SCRAM_SENT_FIRST)
		return TP_EPROTO;
	st->step = AUTH__SCRAM_FAILED;
	if (!password)
		return TP_EINVAL;
	rc = auth__scram_parse_server_first(server_first, len, st->nonce,
					    strlen(st->nonce), &sf);
	if (rc)
		return rc;
	/* nonce_len <= NONCE_MAX, so this fits */
	w = snprintf(fin, sizeof(fin), "c=" CBIND_N ",r=%.*s",
		     (int)sf.nonce_len, sf.nonce);
	if (w < 0 || (size_t)w >= sizeof(fin))
		return TP_ETOOBIG;
	am_len = join3(am, st->client_first_bare, strlen(st->client_first_bare),
		       server_first, len, fin, (size_t)w);
	rc = client_proof(st, password, &sf, am, am_len, proof);
	if (!rc && (size_t)w + 3 + AUTH__B64_LEN(sizeof(proof)) >= sizeof(fin))
		rc = TP_ETOOBIG;
	if (!rc) {
		memcpy(fin + w, ",p=", 3);
		rc = auth__b64_encode(proof, sizeof(proof), fin + w + 3,
				      sizeof(fin) - (size_t)w - 3, &n);
	}
	if (!rc)
		rc = put(out, outcap, outlen, fin, (size_t)w + 3 + n);
	OPENSSL_cleanse(proof, sizeof(proof));
	if (!rc)
		st->step = AUTH__SCRAM_SENT_FINAL;
	return rc;
}

int auth_scram_client_verify(auth_scram_client_t *st, const char *server_final,
			     size_t len)
{
	unsigned char sig[AUTH_SCRAM_KEY_LEN];
	const char *v;
	size_t vlen;
	cursor_t c;
	int rc;

	if (st->step != AUTH__SCRAM_SENT_FINAL)
		return TP_EPROTO;
	st->step = AUTH__SCRAM_FAILED;
	rc = check_msg(server_final, len);
	if (!rc) {
		c.p = server_final;
		c.end = server_final + len;
		/* "e=invalid-proof" and friends: the server refused us */
		if (read_attr(&c, 'e', &v, &vlen))
			rc = TP_EAUTH;
		else if (!read_attr(&c, 'v', &v, &vlen) || !skip_exts(&c) ||
			 !decode_key(v, vlen, sig))
			rc = TP_EPROTO;
		else if (CRYPTO_memcmp(sig, st->server_signature,
				       sizeof(sig)) != 0)
			rc = TP_EAUTH; /* the server does not know the secret */
	}
	OPENSSL_cleanse(st->server_signature, sizeof(st->server_signature));
	if (!rc)
		st->step = AUTH__SCRAM_DONE;
	return rc;
}
