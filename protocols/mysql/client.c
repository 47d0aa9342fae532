/*
 * client.c - a MySQL client's login to tokenpool.
 *
 * Greeting (HandshakeV10 with a fresh scramble and a synthetic thread id
 * that doubles as the client's cancel key), optional SSLRequest and TLS
 * with the listener's certificate, HandshakeResponse41, routing by the
 * database the client names, then the password check against the
 * configured credential:
 *   mysql_native_password   SHA1(SHA1(p)) verifies the scramble;
 *   caching_sha2_password   fast path from SHA256(SHA256(p)) ("01 03"),
 *                           or full authentication ("01 04") when only a
 *                           plain-checkable credential (a SCRAM hash) is
 *                           configured: the password in clear over TLS,
 *                           or without TLS RSA-OAEP encrypted (XOR the
 *                           scramble) with tokenpool's public key, which a
 *                           client asks for with "02".
 * A client whose method cannot be checked is switched (AuthSwitchRequest)
 * to one that can. Unknown users go through the same exchange and fail
 * like a wrong password. The final OK is written by my_client_welcome(),
 * once a pooled server's status is known.
 *
 * The RSA key pair is made on the first request for it and kept for the
 * life of the process (one 2048-bit key generation, tens of milliseconds,
 * paid by the first client that needs it rather than by every start).
 *
 * Not here: the upstream login (server.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "protocols/mysql/internal.h"

/* ---- errors ---- */

typedef struct my_errmap {
	uint16_t code;
	const char *state;
} my_errmap_t;

static my_errmap_t errmap(int err)
{
	switch (err) {
	case TP_EAUTH:
	case TP_ECONFIG:
		return (my_errmap_t){1045, "28000"}; /* access denied */
	case TP_ENODB:
		return (my_errmap_t){1049, "42000"}; /* unknown database */
	case TP_EFULL:
	case TP_ETIMEOUT:
		return (my_errmap_t){1040, "08004"}; /* too many connections */
	case TP_ESHUTDOWN:
		return (my_errmap_t){1053, "08S01"}; /* server shutdown */
	case TP_EPROTO:
	case TP_ETOOBIG:
		return (my_errmap_t){1043, "08S01"}; /* bad handshake */
	case TP_ENOMEM:
		return (my_errmap_t){1041, "HY000"}; /* out of memory */
	default:
		/* token, TLS, connect, upstream login, I/O: the client-side
		 * "lost connection" code, with the reason in the message */
		return (my_errmap_t){2013, "HY000"};
	}
}

void my_send_err(tp_conn_t *c, uint8_t seq, uint16_t code, const char *state,
		 const char *msg)
{
	uint8_t buf[600];
	size_t n = my_write_err(buf, sizeof(buf), seq, code, state, msg);

	tp_conn_out(c, buf, n);
}

void my_client_error(tp_conn_t *c, int err, const char *msg)
{
	my_errmap_t m = errmap(err);
	my_client_t *st = my_client(c);

	my_send_err(c, (uint8_t)(st->h.seq + 1), m.code, m.state, msg);
}

static tp_step_t fail(tp_conn_t *c, int err, const char *msg)
{
	my_client_error(c, err, msg);
	tp_conn_fail(c, err, "%s", msg);
	return TP_STEP_CLOSE;
}

static tp_step_t fail_code(tp_conn_t *c, int err, uint16_t code,
			   const char *state, const char *msg)
{
	my_send_err(c, (uint8_t)(my_client(c)->h.seq + 1), code, state, msg);
	tp_conn_fail(c, err, "%s", msg);
	return TP_STEP_CLOSE;
}

static tp_step_t access_denied(tp_conn_t *c, bool password)
{
	my_client_t *st = my_client(c);
	char msg[192];

	snprintf(msg, sizeof(msg),
		 "Access denied for user '%s' (using password: %s)",
		 st->user ? st->user : "?", password ? "YES" : "NO");
	return fail(c, TP_EAUTH, msg);
}

static void send_packet(tp_conn_t *c, const uint8_t *buf, size_t n)
{
	tp_conn_out(c, buf, n);
}

/* ---- greeting ---- */

/* MySQL's scramble: 7-bit, never NUL (C clients cut there) nor '$'. */
static int make_nonce(uint8_t *nonce, size_t len)
{
	if (auth_random(nonce, len) != 0)
		return TP_EIO;
	for (size_t i = 0; i < len; i++) {
		nonce[i] &= 0x7f;
		if (nonce[i] == 0 || nonce[i] == '$')
			nonce[i]++;
	}
	return 0;
}

static uint32_t thread_id_of(tp_conn_t *c)
{
	const uint8_t *k = tp_conn_client_key(c);

	return (uint32_t)k[0] | ((uint32_t)k[1] << 8) | ((uint32_t)k[2] << 16) |
	       ((uint32_t)k[3] << 24);
}

tp_step_t my_client_start(tp_conn_t *c)
{
	my_client_t *st = my_client(c);
	uint8_t buf[160];
	size_t n;

	if (make_nonce(st->nonce, sizeof(st->nonce)) != 0)
		return TP_STEP_CLOSE;
	st->offered = MY_CAPS_OFFER | (tp_conn_tls_offered(c) ? MY_CAP_SSL : 0);
	n = my_write_greeting(buf, sizeof(buf), 0, MY_SERVER_VERSION,
			      thread_id_of(c), st->nonce, st->offered,
			      MY_CHARSET_DEFAULT, MY_ST_AUTOCOMMIT,
			      MY_PLUGIN_NATIVE);
	if (!n)
		return TP_STEP_CLOSE;
	send_packet(c, buf, n);
	st->h.phase = MYC_GREETED;
	st->h.seq = 0;
	return TP_STEP_MORE;
}

/* ---- the password check ---- */

static tp_step_t authenticated(tp_conn_t *c)
{
	my_client_t *st = my_client(c);

	st->h.phase = MYC_DONE;
	return TP_STEP_DONE;
}

/* Asks the client to answer with method m's scramble instead. */
static tp_step_t switch_to(tp_conn_t *c, enum my_method m)
{
	my_client_t *st = my_client(c);
	uint8_t data[MY_NONCE_LEN + 1], buf[80];
	size_t n;

	if (st->h.phase == MYC_SWITCHED || !(st->caps & MY_CAP_PLUGIN_AUTH))
		return access_denied(c, true);
	memcpy(data, st->nonce, MY_NONCE_LEN);
	data[MY_NONCE_LEN] = 0;
	n = my_write_auth_switch(buf, sizeof(buf), (uint8_t)(st->h.seq + 1),
				 m == MY_AUTH_NATIVE ? MY_PLUGIN_NATIVE
						     : MY_PLUGIN_SHA2,
				 data, sizeof(data));
	send_packet(c, buf, n);
	st->h.seq++;
	st->method = (uint8_t)m;
	st->h.phase = MYC_SWITCHED;
	return TP_STEP_MORE;
}

/* caching_sha2_password "perform full authentication": the password in
 * clear over TLS, RSA-encrypted without (on_full_auth). */
static tp_step_t full_auth(tp_conn_t *c)
{
	my_client_t *st = my_client(c);
	uint8_t buf[8];

	send_packet(c, buf,
		    my_write_more_data(buf, sizeof(buf),
				       (uint8_t)(st->h.seq + 1),
				       (const uint8_t *)"\x04", 1));
	st->h.seq++;
	st->h.phase = MYC_FULL_AUTH;
	return TP_STEP_MORE;
}

/* Whether a password in clear can be checked: a plain password, or a
 * SCRAM hash (auth_check_plain runs PBKDF2 against it). */
static bool can_full_auth(const auth_verifier_t *v)
{
	return v->has_plain || v->has_scram;
}

/* wanted if v can check it, else the other method if v can, else
 * wanted (which then fails like a wrong password). */
static enum my_method checkable(const auth_verifier_t *v, uint8_t wanted)
{
	bool native = v && v->has_mysql_native;
	bool sha2 = v && (v->has_mysql_sha2 || can_full_auth(v));

	if (wanted == MY_AUTH_NATIVE)
		return native || !sha2 ? MY_AUTH_NATIVE : MY_AUTH_SHA2;
	return sha2 || !native ? MY_AUTH_SHA2 : MY_AUTH_NATIVE;
}

static tp_step_t check_native(tp_conn_t *c, const auth_verifier_t *v,
			      my_str_t data)
{
	my_client_t *st = my_client(c);

	if (v && v->has_mysql_native)
		return auth_mysql_native_verify(v->mysql_native, st->nonce,
						MY_NONCE_LEN, data.p, data.len)
			   ? authenticated(c)
			   : access_denied(c, data.len > 0);
	if (v && (v->has_mysql_sha2 || can_full_auth(v)))
		return switch_to(c, MY_AUTH_SHA2);
	return access_denied(c, data.len > 0);
}

static tp_step_t check_sha2(tp_conn_t *c, const auth_verifier_t *v,
			    my_str_t data)
{
	my_client_t *st = my_client(c);
	uint8_t buf[8];

	if (v && v->has_mysql_sha2) {
		if (!auth_mysql_sha2_verify(v->mysql_sha2, st->nonce,
					    MY_NONCE_LEN, data.p, data.len))
			return access_denied(c, data.len > 0);
		/* fast authentication success, then (welcome) the OK */
		send_packet(c, buf,
			    my_write_more_data(buf, sizeof(buf),
					       (uint8_t)(st->h.seq + 1),
					       (const uint8_t *)"\x03", 1));
		st->h.seq++;
		return authenticated(c);
	}
	if (v && v->has_mysql_native)
		return switch_to(c, MY_AUTH_NATIVE);
	if (v && can_full_auth(v) && data.len > 0)
		return full_auth(c);
	return access_denied(c, data.len > 0);
}

/* The client's answer with the method st->method. */
static tp_step_t check_scramble(tp_conn_t *c, my_str_t data)
{
	const tp_route_t *r = tp_conn_get_route(c);
	const auth_verifier_t *v = r && r->client ? r->verifier : NULL;

	/* libmariadb answers a greeting that named another method with an
	 * empty response and waits to be switched: to one we can check. */
	if (data.len == 0 && my_client(c)->h.phase == MYC_GREETED &&
	    (my_client(c)->caps & MY_CAP_PLUGIN_AUTH))
		return switch_to(c, checkable(v, my_client(c)->method));
	if (my_client(c)->method == MY_AUTH_NATIVE)
		return check_native(c, v, data);
	return check_sha2(c, v, data);
}

/* ---- RSA key exchange (full authentication without TLS) ---- */

#define MY_RSA_BITS 2048

/* The process's key pair and its public half as PEM (SubjectPublicKeyInfo,
 * what MySQL servers send). Made once; reachable until exit. */
static EVP_PKEY *rsa_key;
static char *rsa_pem;
static size_t rsa_pem_len;

static int rsa_ready(void)
{
	EVP_PKEY *key;
	BIO *bio;
	char *data;
	long n;

	if (rsa_key)
		return 0;
	key = EVP_RSA_gen(MY_RSA_BITS);
	bio = key ? BIO_new(BIO_s_mem()) : NULL;
	if (!bio || PEM_write_bio_PUBKEY(bio, key) != 1 ||
	    (n = BIO_get_mem_data(bio, &data)) <= 0 ||
	    !(rsa_pem = malloc((size_t)n))) {
		BIO_free(bio);
		EVP_PKEY_free(key);
		return TP_ENOMEM;
	}
	memcpy(rsa_pem, data, (size_t)n);
	rsa_pem_len = (size_t)n;
	BIO_free(bio);
	rsa_key = key;
	return 0;
}

/* RSA-OAEP (SHA-1, as MySQL uses) decryption of in with the process key
 * into out (cap bytes); the plaintext's length, or 0 on any failure. */
static size_t rsa_decrypt(const uint8_t *in, size_t len, uint8_t *out,
			  size_t cap)
{
	EVP_PKEY_CTX *ctx;
	size_t n = cap;
	bool ok;

	if (!rsa_key || len != (size_t)EVP_PKEY_get_size(rsa_key))
		return 0;
	ctx = EVP_PKEY_CTX_new(rsa_key, NULL);
	ok = ctx && EVP_PKEY_decrypt_init(ctx) > 0 &&
	     EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) > 0 &&
	     EVP_PKEY_decrypt(ctx, out, &n, in, len) > 0;
	EVP_PKEY_CTX_free(ctx);
	return ok ? n : 0;
}

/* AuthMoreData with the PEM public key: the answer to "02". */
static tp_step_t send_public_key(tp_conn_t *c)
{
	my_client_t *st = my_client(c);
	uint8_t *buf;
	size_t n;

	if (st->key_sent) /* asked twice: not a client we understand */
		return fail(c, TP_EPROTO, "Bad handshake");
	if (rsa_ready() != 0)
		return fail(c, TP_ENOMEM, "cannot make an RSA key");
	buf = malloc(rsa_pem_len + 8);
	if (!buf)
		return fail(c, TP_ENOMEM, "out of memory");
	n = my_write_more_data(buf, rsa_pem_len + 8, (uint8_t)(st->h.seq + 1),
			       (const uint8_t *)rsa_pem, rsa_pem_len);
	send_packet(c, buf, n);
	free(buf);
	st->h.seq++;
	st->key_sent = true;
	return TP_STEP_MORE;
}

/* The password in clear (len bytes, no NUL) against the credential. */
static tp_step_t check_password(tp_conn_t *c, const char *pw, size_t len)
{
	const tp_route_t *r = tp_conn_get_route(c);

	if (!r || !r->client ||
	    !auth_check_plain(r->client, r->verifier, pw, len))
		return access_denied(c, true);
	return authenticated(c);
}

/* Without TLS: "02" asks for the public key; anything else is the
 * password and its NUL, XOR the scramble, RSA-encrypted with that key.
 * A password in clear is never taken here (it would fail to decrypt). */
static tp_step_t on_rsa(tp_conn_t *c, const uint8_t *pl, size_t len)
{
	my_client_t *st = my_client(c);
	uint8_t plain[MY_RSA_BITS / 8];
	size_t n;
	tp_step_t step;

	if (len == 1 && pl[0] == 0x02)
		return send_public_key(c);
	n = rsa_decrypt(pl, len, plain, sizeof(plain));
	for (size_t i = 0; i < n; i++)
		plain[i] ^= st->nonce[i % MY_NONCE_LEN];
	if (n == 0 || plain[n - 1] != 0)
		step = access_denied(c, true);
	else
		step = check_password(c, (const char *)plain, n - 1);
	OPENSSL_cleanse(plain, sizeof(plain));
	return step;
}

static tp_step_t on_full_auth(tp_conn_t *c, const uint8_t *pl, size_t len)
{
	if (!tp_conn_tls(c))
		return on_rsa(c, pl, len);
	if (len == 0 || pl[len - 1] != 0)
		return fail(c, TP_EPROTO, "Bad handshake");
	return check_password(c, (const char *)pl, len - 1);
}

/* ---- HandshakeResponse41 ---- */

/* Copies s into a NUL-terminated buffer; false when it does not fit or
 * holds a NUL. */
static bool to_cstr(my_str_t s, char *out, size_t cap)
{
	if (!s.p || s.len >= cap || memchr(s.p, 0, s.len))
		return false;
	memcpy(out, s.p, s.len);
	out[s.len] = 0;
	return true;
}

static tp_step_t route(tp_conn_t *c, const my_login_t *l)
{
	my_client_t *st = my_client(c);
	char db[256], msg[320];
	const char *dbp = NULL;
	tp_route_t r;
	int err;

	if (l->database.p && l->database.len) {
		if (!to_cstr(l->database, db, sizeof(db)))
			return fail(c, TP_ENODB, "Unknown database");
		dbp = db;
	}
	err = tp_conn_route(c, st->user, dbp, &r);
	if (err == TP_ENODB) {
		snprintf(msg, sizeof(msg), "Unknown database '%s'",
			 dbp ? dbp : "");
		return fail(c, TP_ENODB, msg);
	}
	if (err == TP_EFULL)
		return fail(c, err, "Too many connections");
	if (err)
		return fail(c, err, tp_strerror(err));
	if (r.pool->client_tls.mode == CONF_CTLS_REQUIRE && !tp_conn_tls(c))
		return fail_code(c, TP_ECONFIG, 3159, "HY000",
				 "Connections using insecure transport are "
				 "prohibited: connect with TLS");
	return TP_STEP_MORE;
}

static tp_step_t on_login(tp_conn_t *c, const uint8_t *pl, size_t len)
{
	my_client_t *st = my_client(c);
	my_login_t l;
	char user[256];
	tp_step_t step;

	if (my_parse_login(pl, len, st->offered, &l) != 0)
		return fail(c, TP_EPROTO, "Bad handshake");
	if (l.ssl_request) {
		if (!(st->offered & MY_CAP_SSL) || tp_conn_tls(c))
			return fail(c, TP_EPROTO, "Bad handshake");
		return TP_STEP_TLS;
	}
	st->caps = l.caps & st->offered;
	st->charset = l.charset ? l.charset : MY_CHARSET_DEFAULT;
	st->multi = (st->caps & MY_CAP_MULTI_STMTS) != 0;
	if (!to_cstr(l.user, user, 128) || !user[0])
		return fail(c, TP_EAUTH, "Access denied: bad user name");
	free(st->user);
	st->user = strdup(user);
	if (!st->user)
		return fail(c, TP_ENOMEM, "out of memory");
	step = route(c, &l);
	if (step != TP_STEP_MORE)
		return step;
	/* The method the client answered with; without PLUGIN_AUTH, the
	 * scramble of a 4.1 client is native. */
	if (my_str_eq(l.plugin, MY_PLUGIN_SHA2)) {
		st->method = MY_AUTH_SHA2;
	} else if (!l.plugin.p || l.plugin.len == 0 ||
		   my_str_eq(l.plugin, MY_PLUGIN_NATIVE)) {
		st->method = MY_AUTH_NATIVE;
	} else { /* ed25519, sha256_password, ...: ask for one we check */
		const tp_route_t *r = tp_conn_get_route(c);

		return switch_to(c,
				 checkable(r && r->client ? r->verifier : NULL,
					   MY_AUTH_NATIVE));
	}
	return check_scramble(c, l.auth);
}

static tp_step_t on_packet(tp_conn_t *c, const uint8_t *pkt, size_t n)
{
	my_client_t *st = my_client(c);
	my_str_t data = {pkt + MY_HDR, n - MY_HDR};

	st->h.seq = pkt[3];
	switch (st->h.phase) {
	case MYC_GREETED:
		return on_login(c, pkt + MY_HDR, n - MY_HDR);
	case MYC_SWITCHED:
		return check_scramble(c, data);
	case MYC_FULL_AUTH:
		return on_full_auth(c, pkt + MY_HDR, n - MY_HDR);
	default:
		return fail(c, TP_EPROTO, "Bad handshake");
	}
}

tp_step_t my_client_read(tp_conn_t *c, const uint8_t *buf, size_t len,
			 size_t *consumed)
{
	my_client_t *st = my_client(c);
	tp_step_t step = TP_STEP_MORE;
	size_t n;
	int err;

	*consumed = 0;
	while (step == TP_STEP_MORE && st->h.phase != MYC_DONE) {
		/* A length no login packet has is refused on the header:
		 * nothing waits for (or buffers) what a client only claims. */
		if (len - *consumed >= MY_HDR &&
		    my_payload_len(buf + *consumed) > MY_MAX_LOGIN)
			return fail(c, TP_EPROTO, "Bad handshake");
		err = my_frame(buf + *consumed, len - *consumed, &n);
		if (err == TP_EAGAIN)
			return TP_STEP_MORE;
		if (err)
			return fail(c, TP_EPROTO, "Bad handshake");
		if (n > len - *consumed)
			return TP_STEP_MORE;
		step = on_packet(c, buf + *consumed, n);
		*consumed += n;
	}
	return step;
}

void my_client_welcome(tp_conn_t *c, const uint8_t *params, size_t len)
{
	my_client_t *st = my_client(c);
	my_ok_t ok = {0};
	uint8_t buf[32];
	size_t n;

	ok.status = len >= 2 ? (uint16_t)(params[0] | (params[1] << 8))
			     : MY_ST_AUTOCOMMIT;
	ok.status &= MY_ST_AUTOCOMMIT; /* a fresh session: nothing open */
	n = my_write_ok(buf, sizeof(buf), (uint8_t)(st->h.seq + 1), st->caps,
			&ok);
	send_packet(c, buf, n);
	/* Command phase: an error we send unasked is read as the answer to
	 * the client's next command (sequence 0), so it carries 1. */
	st->h.seq = 0;
}

/* ---- COM_CHANGE_USER ---- */

static bool change_user_auth_ok(const my_client_t *st, const auth_verifier_t *v,
				const my_change_user_t *cu)
{
	if (my_str_eq(cu->plugin, MY_PLUGIN_SHA2))
		return v->has_mysql_sha2 &&
		       auth_mysql_sha2_verify(v->mysql_sha2, st->nonce,
					      MY_NONCE_LEN, cu->auth.p,
					      cu->auth.len);
	return v->has_mysql_native &&
	       auth_mysql_native_verify(v->mysql_native, st->nonce,
					MY_NONCE_LEN, cu->auth.p, cu->auth.len);
}

/* Another user is any client of the same pool (they share the server's
 * identity, so only the local credentials change); an unknown user is
 * refused like a wrong password. */
int my_client_check_change_user(tp_conn_t *c, const my_change_user_t *cu)
{
	my_client_t *st = my_client(c);
	const tp_route_t *r = tp_conn_get_route(c);
	tp_route_t other;
	char user[128], *copy;

	if (!r || !r->client || !st->user || !to_cstr(cu->user, user, 128))
		return TP_EINVAL;
	if (strcmp(user, st->user) == 0)
		return change_user_auth_ok(st, r->verifier, cu) ? 0 : TP_EAUTH;
	tp_conn_route_user(c, user, &other);
	if (!other.client || !change_user_auth_ok(st, other.verifier, cu))
		return TP_EAUTH;
	copy = strdup(user);
	if (!copy)
		return TP_ENOMEM;
	free(st->user);
	st->user = copy;
	tp_conn_set_route(c, &other);
	return 0;
}
