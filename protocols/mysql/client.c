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
 *                           or full authentication ("01 04", the password
 *                           in clear) over TLS when only a plain-checkable
 *                           credential (a SCRAM hash) is configured.
 * A client whose method cannot be checked is switched (AuthSwitchRequest)
 * to one that can. Unknown users go through the same exchange and fail
 * like a wrong password. The final OK is written by my_client_welcome(),
 * once a pooled server's status is known.
 *
 * Not here: RSA key exchange for caching_sha2 full authentication without
 * TLS (clients get a clear error), the upstream login (server.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
 * clear, which only TLS makes acceptable. */
static tp_step_t full_auth(tp_conn_t *c)
{
	my_client_t *st = my_client(c);
	uint8_t buf[8];

	if (!tp_conn_tls(c))
		return fail_code(c, TP_EAUTH, 1045, "28000",
				 "caching_sha2_password full authentication "
				 "requires a TLS connection");
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

static tp_step_t on_full_auth(tp_conn_t *c, const uint8_t *pl, size_t len)
{
	const tp_route_t *r = tp_conn_get_route(c);

	if (len == 1 && pl[0] == 0x02) /* asks for our RSA public key */
		return fail_code(c, TP_EAUTH, 1045, "28000",
				 "caching_sha2_password over RSA is not "
				 "supported: connect with TLS");
	if (len == 0 || pl[len - 1] != 0)
		return fail(c, TP_EPROTO, "Bad handshake");
	if (!r || !r->client ||
	    !auth_check_plain(r->client, r->verifier, (const char *)pl,
			      len - 1))
		return access_denied(c, true);
	return authenticated(c);
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
		err = my_frame(buf + *consumed, len - *consumed, &n);
		if (err == TP_EAGAIN)
			return TP_STEP_MORE;
		if (err || n - MY_HDR > MY_MAX_LOGIN)
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

int my_client_check_change_user(tp_conn_t *c, const my_change_user_t *cu)
{
	my_client_t *st = my_client(c);
	const tp_route_t *r = tp_conn_get_route(c);
	const auth_verifier_t *v;
	char user[128];

	if (!r || !r->client || !st->user || !to_cstr(cu->user, user, 128) ||
	    strcmp(user, st->user) != 0)
		return TP_EINVAL;
	v = r->verifier;
	if (my_str_eq(cu->plugin, MY_PLUGIN_SHA2))
		return v->has_mysql_sha2 &&
			       auth_mysql_sha2_verify(v->mysql_sha2, st->nonce,
						      MY_NONCE_LEN, cu->auth.p,
						      cu->auth.len)
			   ? 0
			   : TP_EAUTH;
	return v->has_mysql_native &&
		       auth_mysql_native_verify(v->mysql_native, st->nonce,
						MY_NONCE_LEN, cu->auth.p,
						cu->auth.len)
		   ? 0
		   : TP_EAUTH;
}
