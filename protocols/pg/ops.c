/*
 * ops.c - PostgreSQL protocol operations for the engine.
 *
 * Client side: SSLRequest/GSSENCRequest, CancelRequest, StartupMessage,
 * SCRAM-SHA-256 (or a cleartext password when only a plain-checkable
 * credential exists), then a welcome built from a pooled server's
 * ParameterStatus messages and a synthetic BackendKeyData.
 * Upstream: SSLRequest, TLS, StartupMessage, the token (or password) as
 * cleartext, md5 or SCRAM, and the server's parameters and key.
 * Forwarding: ReadyForQuery status marks transaction boundaries;
 * Terminate closes the client without reaching the pooled server.
 *
 * Not here: sockets, TLS, pools, tokens (the engine's), byte layouts
 * (codec.c).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "protocols/pg/pg.h"

enum pg_phase {
	PGC_STARTUP,
	PGC_SASL_INITIAL,
	PGC_SASL_FINAL,
	PGC_PASSWORD,
	PGC_DONE,
	PGS_SSL,
	PGS_AUTH,
	PGS_READY,
	PGS_RESET,
	PGS_SYNC,  /* SET of the client's parameters before its first message */
	PGS_PROBE, /* doctor's trivial query */
};

typedef struct pg_state {
	enum pg_phase phase;
	char txn;	/* last ReadyForQuery status ('I', 'T', 'E') */
	char *user;	/* client, during login: for error messages */
	uint8_t key[8]; /* server side: the real BackendKeyData */
	auth_scram_server_t *scram;   /* client login only */
	auth_scram_client_t *scram_c; /* server login only */
	uint8_t *params;	      /* server side: ParameterStatus msgs */
	size_t params_len;
	int reset_pending;  /* ReadyForQuery messages still due */
	pg_vars_t vars;	    /* client: what it asked for; server: what it has */
	pg_vars_t *initial; /* server: its values at login (the defaults) */
} pg_state_t;

static void *pg_conn_new(bool client_side)
{
	pg_state_t *st = calloc(1, sizeof(*st));

	if (!st)
		return NULL;
	st->phase = client_side ? PGC_STARTUP : PGS_SSL;
	st->txn = 'I';
	/* Only servers need their defaults; an idle client stays small. */
	if (!client_side && !(st->initial = calloc(1, sizeof(*st->initial)))) {
		free(st);
		return NULL;
	}
	return st;
}

static void pg_conn_free(void *p)
{
	pg_state_t *st = p;

	if (!st)
		return;
	if (st->scram) {
		OPENSSL_cleanse(st->scram, sizeof(*st->scram));
		free(st->scram);
	}
	free(st->scram_c);
	free(st->params);
	pg_vars_free(&st->vars);
	if (st->initial)
		pg_vars_free(st->initial);
	free(st->initial);
	free(st->user);
	free(st);
}

static pg_state_t *state(tp_conn_t *c)
{
	return tp_conn_state(c);
}

/* ---- errors ---- */

static const char *sqlstate_for(int err)
{
	switch (err) {
	case TP_EAUTH:
		return "28P01";
	case TP_ENODB:
		return "3D000";
	case TP_EFULL:
	case TP_ETIMEOUT:
		return "53300";
	case TP_ESHUTDOWN:
		return "57P01";
	case TP_EPROTO:
	case TP_ETOOBIG:
		return "08P01";
	case TP_ECONFIG:
		return "28000";
	default: /* token, TLS, connect, upstream login */
		return "08006";
	}
}

static void pg_client_error(tp_conn_t *c, int err, const char *msg)
{
	uint8_t buf[1024];
	size_t n =
	    pg_write_error(buf, sizeof(buf), "FATAL", sqlstate_for(err), msg);

	if (!n) /* message too long for the buffer: send the code alone */
		n = pg_write_error(buf, sizeof(buf), "FATAL", sqlstate_for(err),
				   tp_strerror(err));
	tp_conn_out(c, buf, n);
}

/* ---- client login ---- */

static tp_step_t fail(tp_conn_t *c, int err, const char *msg)
{
	pg_client_error(c, err, msg);
	tp_conn_fail(c, err, "%s", msg);
	return TP_STEP_CLOSE;
}

static tp_step_t auth_failed(tp_conn_t *c)
{
	char msg[128];

	snprintf(msg, sizeof(msg),
		 "password authentication failed for user \"%s\"",
		 state(c)->user ? state(c)->user : "?");
	return fail(c, TP_EAUTH, msg);
}

static void send_auth(tp_conn_t *c, uint32_t code, const void *data, size_t len)
{
	uint8_t buf[600];
	size_t n = pg_write_auth(buf, sizeof(buf), code, data, len);

	tp_conn_out(c, buf, n);
}

/* Starts SCRAM when the credential allows it, else asks for a cleartext
 * password (a hash that only a plain password can be checked against).
 * Unknown users get SCRAM with a throwaway secret, so a wrong user name
 * fails exactly like a wrong password. */
static tp_step_t begin_auth(tp_conn_t *c, const tp_route_t *r)
{
	pg_state_t *st = state(c);
	static const char mechs[] = "SCRAM-SHA-256\0";

	if (r->verifier && !r->verifier->has_scram) {
		st->phase = PGC_PASSWORD;
		send_auth(c, 3, NULL, 0);
		return TP_STEP_MORE;
	}
	st->scram = calloc(1, sizeof(*st->scram));
	if (!st->scram)
		return fail(c, TP_ENOMEM, "out of memory");
	st->phase = PGC_SASL_INITIAL;
	send_auth(c, 10, mechs, sizeof(mechs));
	return TP_STEP_MORE;
}

static tp_step_t on_startup(tp_conn_t *c, const pg_startup_t *su)
{
	tp_route_t r;
	const char *db;
	char msg[256];
	int err;

	if (!su->user || !su->user[0])
		return fail(c, TP_EPROTO, "no user name in startup packet");
	free(state(c)->user);
	state(c)->user = strndup(su->user, 63);
	if (!state(c)->user)
		return fail(c, TP_ENOMEM, "out of memory");
	db = su->database && su->database[0] ? su->database : NULL;
	err = tp_conn_route(c, su->user, db, &r);
	if (err == TP_ENODB) {
		snprintf(msg, sizeof(msg), "database \"%s\" does not exist",
			 db ? db : su->user);
		return fail(c, TP_ENODB, msg);
	}
	if (err)
		return fail(c, err, tp_strerror(err));
	if (r.pool->client_tls.mode == CONF_CTLS_REQUIRE && !tp_conn_tls(c))
		return fail(c, TP_ECONFIG, "SSL connection is required");
	for (size_t i = 0; i < su->nparams; i++)
		if (pg_vars_set(&state(c)->vars, su->keys[i], su->values[i]))
			return fail(c, TP_EPROTO, "startup parameter too long");
	return begin_auth(c, &r);
}

static tp_step_t on_first_packet(tp_conn_t *c, const uint8_t *buf, size_t n)
{
	pg_startup_t su;

	if (pg_startup_parse(buf, n, &su) != 0)
		return fail(c, TP_EPROTO, "invalid startup packet");
	switch (su.code) {
	case PG_CODE_SSL:
		if (tp_conn_tls_offered(c) && !tp_conn_tls(c)) {
			tp_conn_out(c, "S", 1);
			return TP_STEP_TLS;
		}
		tp_conn_out(c, "N", 1);
		return TP_STEP_MORE;
	case PG_CODE_GSSENC:
		tp_conn_out(c, "N", 1);
		return TP_STEP_MORE;
	case PG_CODE_CANCEL:
		tp_conn_cancel(c, su.cancel_key, sizeof(su.cancel_key));
		return TP_STEP_CLOSE;
	default:
		return on_startup(c, &su);
	}
}

static tp_step_t on_sasl(tp_conn_t *c, const uint8_t *msg, size_t n)
{
	pg_state_t *st = state(c);
	const tp_route_t *r = tp_conn_get_route(c);
	char out[512];
	size_t outlen;
	const uint8_t *data;
	size_t dlen;
	const char *mech;
	int err;

	if (st->phase == PGC_SASL_INITIAL) {
		auth_scram_secret_t dummy;

		if (pg_parse_sasl_initial(msg, n, &mech, &data, &dlen) != 0)
			return fail(c, TP_EPROTO, "invalid SASL message");
		if (strcmp(mech, "SCRAM-SHA-256") != 0)
			return fail(c, TP_EPROTO, "unsupported SASL mechanism");
		if (!r->verifier && auth_scram_secret_mock(&dummy) != 0)
			return fail(c, TP_ENOMEM, "out of memory");
		err = auth_scram_server_first(
		    st->scram, r->verifier ? &r->verifier->scram : &dummy,
		    (const char *)data, dlen, out, sizeof(out), &outlen);
		if (err)
			return fail(c, TP_EPROTO, "invalid SCRAM message");
		st->phase = PGC_SASL_FINAL;
		send_auth(c, 11, out, outlen);
		return TP_STEP_MORE;
	}
	if (pg_parse_body(msg, n, 'p', &data, &dlen) != 0)
		return fail(c, TP_EPROTO, "invalid SASL message");
	err = auth_scram_server_final(st->scram, (const char *)data, dlen, out,
				      sizeof(out), &outlen);
	OPENSSL_cleanse(st->scram, sizeof(*st->scram));
	free(st->scram);
	st->scram = NULL;
	if (err == TP_EAUTH || (!err && !r->verifier))
		return auth_failed(c);
	if (err)
		return fail(c, TP_EPROTO, "invalid SCRAM message");
	send_auth(c, 12, out, outlen);
	st->phase = PGC_DONE;
	free(st->user); /* only error messages during login needed it */
	st->user = NULL;
	return TP_STEP_DONE;
}

static tp_step_t on_password(tp_conn_t *c, const uint8_t *msg, size_t n)
{
	const tp_route_t *r = tp_conn_get_route(c);
	const uint8_t *data;
	size_t dlen;

	if (pg_parse_body(msg, n, 'p', &data, &dlen) != 0 || dlen == 0 ||
	    data[dlen - 1] != 0)
		return fail(c, TP_EPROTO, "invalid password message");
	if (!r->client || !auth_check_plain(r->client, r->verifier,
					    (const char *)data, dlen - 1))
		return auth_failed(c);
	state(c)->phase = PGC_DONE;
	free(state(c)->user);
	state(c)->user = NULL;
	return TP_STEP_DONE;
}

static tp_step_t pg_client_read(tp_conn_t *c, const uint8_t *buf, size_t len,
				size_t *consumed)
{
	pg_state_t *st = state(c);
	size_t n;
	int err;
	tp_step_t step = TP_STEP_MORE;

	*consumed = 0;
	while (step == TP_STEP_MORE && st->phase != PGC_DONE) {
		const uint8_t *p = buf + *consumed;
		size_t avail = len - *consumed;

		if (st->phase == PGC_STARTUP)
			err = pg_startup_frame(p, avail, &n);
		else
			err = pg_frame(p, avail, &n);
		if (err == TP_EAGAIN)
			return TP_STEP_MORE;
		if (err || (st->phase != PGC_STARTUP && n > PG_MAX_LOGIN_MSG))
			return fail(c, TP_EPROTO, "invalid login packet");
		if (n > avail)
			return TP_STEP_MORE;
		*consumed += n;
		if (st->phase == PGC_STARTUP)
			step = on_first_packet(c, p, n);
		else if (p[0] != 'p')
			step = fail(c, TP_EPROTO, "expected a password");
		else if (st->phase == PGC_PASSWORD)
			step = on_password(c, p, n);
		else
			step = on_sasl(c, p, n);
	}
	return step;
}

static tp_step_t pg_client_start(tp_conn_t *c)
{
	return TP_STEP_MORE; /* the client speaks first */
}

static void send_param(tp_conn_t *c, const char *key, const char *value)
{
	uint8_t hdr[5];
	size_t k = strlen(key) + 1, v = strlen(value) + 1;

	pg_put_header(hdr, 'S', k + v);
	tp_conn_out(c, hdr, sizeof(hdr));
	tp_conn_out(c, key, k);
	tp_conn_out(c, value, v);
}

/* The pool's ParameterStatus messages, with the client's own values for
 * the parameters it set at startup (its server gets them too before the
 * client's first query runs: see pg_server_sync). The values sent become
 * what the client expects of every server it gets. */
static void send_params(tp_conn_t *c, const uint8_t *params, size_t len)
{
	pg_vars_t *want = &state(c)->vars;
	bool sent[PG_NVARS] = {false};
	size_t pos = 0, n;
	const char *k, *v;
	int i;

	while (pos < len && pg_frame(params + pos, len - pos, &n) == 0 &&
	       n <= len - pos) {
		if (pg_parse_param(params + pos, n, &k, &v) == 0 &&
		    (i = pg_var_index(k)) >= 0) {
			/* No preference means the server's default (see
			 * pg_server_sync), never what the last client left. */
			send_param(c, k, want->val[i] ? want->val[i] : v);
			sent[i] = true;
		} else {
			tp_conn_out(c, params + pos, n);
		}
		pos += n;
	}
	for (i = 0; i < PG_NVARS; i++)
		if (want->val[i] && !sent[i])
			send_param(c, pg_var_name(i), want->val[i]);
}

static void pg_client_welcome(tp_conn_t *c, const uint8_t *params,
			      size_t params_len)
{
	uint8_t buf[32];
	size_t n;

	n = pg_write_auth(buf, sizeof(buf), 0, NULL, 0);
	tp_conn_out(c, buf, n);
	send_params(c, params, params_len);
	n = pg_write_key_data(buf, sizeof(buf), tp_conn_client_key(c));
	tp_conn_out(c, buf, n);
	n = pg_write_ready(buf, sizeof(buf), 'I');
	tp_conn_out(c, buf, n);
}

/* ---- upstream login ---- */

static tp_step_t server_fail(tp_conn_t *s, int err, const char *msg)
{
	tp_conn_fail(s, err, "%s", msg);
	return TP_STEP_CLOSE;
}

static void send_startup_or_cancel(tp_conn_t *s, const tp_login_t *login)
{
	static const char *const keys[] = {"application_name"};
	static const char *const values[] = {"tokenpool"};
	uint8_t buf[1024];
	size_t n;

	if (login->kind == TP_LOGIN_CANCEL) {
		n = login->cancel_key_len == 8
			? pg_write_cancel(buf, sizeof(buf), login->cancel_key)
			: 0;
	} else {
		n = pg_write_startup(buf, sizeof(buf), login->user,
				     login->database, keys, values, 1);
	}
	tp_conn_out(s, buf, n);
	state(s)->phase = PGS_AUTH;
}

static tp_step_t pg_server_tls_done(tp_conn_t *s, const tp_login_t *login)
{
	send_startup_or_cancel(s, login);
	/* A cancel gets no answer: the server reads it and hangs up. */
	return login->kind == TP_LOGIN_CANCEL ? TP_STEP_CLOSE : TP_STEP_MORE;
}

static tp_step_t pg_server_start(tp_conn_t *s, const tp_login_t *login)
{
	uint8_t buf[8];

	if (!login->tls)
		return pg_server_tls_done(s, login);
	tp_conn_out(s, buf, pg_write_ssl_request(buf, sizeof(buf)));
	state(s)->phase = PGS_SSL;
	return TP_STEP_MORE;
}

/* The secret as a PasswordMessage: header, bytes, NUL. Sent in pieces so a
 * token of any size needs no buffer of its own. */
static tp_step_t send_password(tp_conn_t *s, const tp_login_t *login)
{
	uint8_t hdr[5];

	if (memchr(login->secret, 0, login->secret_len))
		return server_fail(s, TP_ETOKEN, "secret contains a NUL byte");
	pg_put_header(hdr, 'p', login->secret_len + 1);
	tp_conn_out(s, hdr, sizeof(hdr));
	tp_conn_out(s, login->secret, login->secret_len);
	tp_conn_out(s, "", 1);
	return TP_STEP_MORE;
}

static tp_step_t send_md5(tp_conn_t *s, const tp_login_t *login,
			  const uint8_t *salt, size_t len)
{
	uint8_t buf[64];
	char hash[36];
	char *pw;

	if (len != 4)
		return server_fail(s, TP_EPROTO, "bad md5 salt");
	pw = strndup(login->secret, login->secret_len);
	if (!pw)
		return server_fail(s, TP_ENOMEM, "out of memory");
	auth_pg_md5(login->user, pw, salt, hash);
	OPENSSL_cleanse(pw, login->secret_len);
	free(pw);
	pg_put_header(buf, 'p', 36);
	memcpy(buf + 5, hash, 36);
	tp_conn_out(s, buf, 41);
	return TP_STEP_MORE;
}

static tp_step_t scram_step(tp_conn_t *s, const tp_login_t *login,
			    uint32_t code, const uint8_t *data, size_t len)
{
	pg_state_t *st = state(s);
	uint8_t buf[1024];
	char out[900];
	size_t n;

	if (code == 10) {
		if (!memmem(data, len, "SCRAM-SHA-256\0", 14))
			return server_fail(s, TP_ESERVER_LOGIN,
					   "server offers no SCRAM-SHA-256");
		st->scram_c = calloc(1, sizeof(*st->scram_c));
		if (!st->scram_c ||
		    auth_scram_client_first(st->scram_c, out, sizeof(out), &n))
			return server_fail(s, TP_ENOMEM, "SCRAM start failed");
		n = pg_write_sasl_initial(buf, sizeof(buf), "SCRAM-SHA-256",
					  out, n);
	} else if (code == 11 && st->scram_c) {
		char *pw = strndup(login->secret, login->secret_len);
		int err = pw ? auth_scram_client_final(st->scram_c, pw,
						       (const char *)data, len,
						       out, sizeof(out), &n)
			     : TP_ENOMEM;

		if (pw)
			OPENSSL_cleanse(pw, login->secret_len);
		free(pw);
		if (err || n + 5 > sizeof(buf))
			return server_fail(s, TP_ESERVER_LOGIN,
					   "bad SCRAM challenge from server");
		pg_put_header(buf, 'p', n);
		memcpy(buf + 5, out, n);
		n += 5;
	} else if (code == 12 && st->scram_c) {
		if (auth_scram_client_verify(st->scram_c, (const char *)data,
					     len))
			return server_fail(s, TP_ESERVER_LOGIN,
					   "server SCRAM signature is wrong");
		return TP_STEP_MORE;
	} else {
		return server_fail(s, TP_EPROTO, "unexpected SASL message");
	}
	tp_conn_out(s, buf, n);
	return TP_STEP_MORE;
}

static tp_step_t on_server_auth(tp_conn_t *s, const tp_login_t *login,
				const uint8_t *msg, size_t n)
{
	uint32_t code;
	const uint8_t *data;
	size_t dlen;
	char why[64];

	if (pg_parse_auth(msg, n, &code, &data, &dlen) != 0)
		return server_fail(s, TP_EPROTO, "bad authentication message");
	switch (code) {
	case 0:
		state(s)->phase = PGS_READY;
		return TP_STEP_MORE;
	case 3:
		return send_password(s, login);
	case 5:
		return send_md5(s, login, data, dlen);
	case 10:
	case 11:
	case 12:
		return scram_step(s, login, code, data, dlen);
	default:
		snprintf(why, sizeof(why),
			 "server asks for unsupported auth method %u", code);
		return server_fail(s, TP_ESERVER_LOGIN, why);
	}
}

static tp_step_t on_server_error(tp_conn_t *s, const uint8_t *msg, size_t n)
{
	pg_error_t e;

	if (pg_parse_error(msg, n, &e) != 0)
		return server_fail(s, TP_EPROTO, "bad error message");
	tp_conn_fail(s, TP_ESERVER_LOGIN, "server said: %s %s: %s",
		     e.severity ? e.severity : "ERROR",
		     e.sqlstate ? e.sqlstate : "?????",
		     e.message ? e.message : "(no message)");
	return TP_STEP_CLOSE;
}

static tp_step_t keep_param(tp_conn_t *s, const uint8_t *msg, size_t n)
{
	pg_state_t *st = state(s);
	uint8_t *p;

	if (st->params_len + n > 64 * 1024)
		return server_fail(s, TP_ETOOBIG, "too many server parameters");
	p = realloc(st->params, st->params_len + n);
	if (!p)
		return server_fail(s, TP_ENOMEM, "out of memory");
	memcpy(p + st->params_len, msg, n);
	st->params = p;
	st->params_len += n;
	return TP_STEP_MORE;
}

/* A ParameterStatus from a server: its value now (and, while syncing or
 * forwarding, the linked client's too, in the server's spelling). */
static void record_param(tp_conn_t *s, const uint8_t *msg, size_t n)
{
	tp_conn_t *c = tp_conn_peer(s);
	const char *k, *v;

	if (pg_parse_param(msg, n, &k, &v) != 0)
		return;
	if (pg_vars_set(&state(s)->vars, k, v) != 0 || !c)
		return;
	if (pg_vars_set(&state(c)->vars, k, v) != 0)
		tp_conn_debug(c, "cannot record parameter %s", k);
}

static void record_initial(tp_conn_t *s, const uint8_t *msg, size_t n)
{
	const char *k, *v;

	if (pg_parse_param(msg, n, &k, &v) == 0 &&
	    pg_vars_set(state(s)->initial, k, v) != 0)
		tp_conn_debug(s, "cannot record parameter %s", k);
}

/* One message during login, reset or sync. */
static tp_step_t server_login_msg(tp_conn_t *s, const tp_login_t *login,
				  const uint8_t *msg, size_t n)
{
	pg_state_t *st = state(s);
	char status;

	switch (msg[0]) {
	case 'R':
		if (st->phase != PGS_AUTH)
			break;
		return on_server_auth(s, login, msg, n);
	case 'E':
		return on_server_error(s, msg, n);
	case 'S':
		record_param(s, msg, n);
		if (st->phase == PGS_READY) /* at login: the defaults */
			record_initial(s, msg, n);
		return st->phase == PGS_READY ? keep_param(s, msg, n)
					      : TP_STEP_MORE;
	case 'K':
		if (st->phase != PGS_READY || n != 13)
			break;
		memcpy(st->key, msg + 5, 8);
		return TP_STEP_MORE;
	case 'Z':
		if (pg_parse_ready(msg, n, &status) != 0)
			break;
		st->txn = status;
		if ((st->phase == PGS_RESET || st->phase == PGS_SYNC) &&
		    --st->reset_pending > 0)
			return TP_STEP_MORE;
		if (st->phase != PGS_READY && st->phase != PGS_RESET &&
		    st->phase != PGS_SYNC && st->phase != PGS_PROBE)
			break;
		st->phase = PGS_READY;
		return TP_STEP_DONE;
	case 'T': /* the probe's row */
	case 'D':
		if (st->phase != PGS_PROBE)
			break;
		return TP_STEP_MORE;
	case 'N': /* notices during login or reset */
	case 'C': /* DISCARD ALL's CommandComplete */
		return TP_STEP_MORE;
	}
	return server_fail(s, TP_EPROTO, "unexpected message from server");
}

static tp_step_t pg_server_read(tp_conn_t *s, const tp_login_t *login,
				const uint8_t *buf, size_t len,
				size_t *consumed)
{
	pg_state_t *st = state(s);
	tp_step_t step = TP_STEP_MORE;
	size_t n;
	int err;

	*consumed = 0;
	if (st->phase == PGS_SSL) {
		if (len < 1)
			return TP_STEP_MORE;
		*consumed = 1;
		if (buf[0] == 'S')
			return TP_STEP_TLS;
		return server_fail(s, TP_ETLS, "server refused TLS");
	}
	while (step == TP_STEP_MORE) {
		err = pg_frame(buf + *consumed, len - *consumed, &n);
		if (err == TP_EAGAIN || (!err && n > len - *consumed))
			return step;
		if (err || n > PG_MAX_LOGIN_MSG)
			return server_fail(s, TP_EPROTO, "bad server message");
		step = server_login_msg(s, login, buf + *consumed, n);
		*consumed += n;
	}
	return step;
}

static void pg_server_params(tp_conn_t *s, const uint8_t **params, size_t *len)
{
	*params = state(s)->params;
	*len = state(s)->params_len;
}

static size_t pg_cancel_key(tp_conn_t *s, uint8_t *out, size_t cap)
{
	if (cap < 8)
		return 0;
	memcpy(out, state(s)->key, 8);
	return 8;
}

/* ---- forwarding ---- */

static int pg_client_msg(tp_conn_t *c, const uint8_t *msg, size_t have,
			 size_t msg_len)
{
	switch (msg[0]) {
	case 'X':
		return TP_MSG_CLOSE;
	case 'Q': /* simple query, Sync and FunctionCall: one ReadyForQuery */
		return TP_MSG_REQUEST |
		       (pg_sql_pins((const char *)msg + 5, have - 5)
			    ? TP_MSG_PIN
			    : 0);
	case 'S':
	case 'F':
		return TP_MSG_REQUEST;
	case 'P': /* Parse of a named statement: it lives on this server */
		return have > 5 && msg[5] != 0 ? TP_MSG_PIN : TP_MSG_FORWARD;
	default:
		return TP_MSG_FORWARD;
	}
}

static int pg_server_msg(tp_conn_t *s, const uint8_t *msg, size_t have,
			 size_t msg_len)
{
	char status;

	if (msg[0] == 'S' && have == msg_len)
		record_param(s, msg, have);
	if (msg[0] != 'Z')
		return TP_MSG_FORWARD;
	if (pg_parse_ready(msg, have, &status) != 0)
		return TP_MSG_BROKEN;
	state(s)->txn = status;
	return TP_MSG_READY | (status == 'I' ? TP_MSG_IDLE : 0);
}

/* ---- pooling ---- */

static tp_step_t pg_server_reset(tp_conn_t *s, bool full)
{
	uint8_t buf[64];
	pg_state_t *st = state(s);

	st->reset_pending = 0;
	/* A client that left inside a transaction: roll it back rather than
	 * throw the server away. DISCARD ALL cannot run inside one. */
	if (st->txn != 'I') {
		tp_conn_out(s, buf,
			    pg_write_query(buf, sizeof(buf), "ROLLBACK"));
		st->reset_pending++;
	}
	if (full) {
		tp_conn_out(s, buf,
			    pg_write_query(buf, sizeof(buf), "DISCARD ALL"));
		st->reset_pending++;
	}
	if (!st->reset_pending)
		return TP_STEP_DONE;
	st->phase = PGS_RESET;
	return TP_STEP_MORE;
}

static tp_step_t pg_server_sync(tp_conn_t *s, tp_conn_t *c)
{
	pg_state_t *st = state(s);
	char sql[PG_NVARS * (PG_VAR_MAX * 2 + 64)];
	uint8_t hdr[5];
	size_t n = pg_vars_sync_sql(&state(c)->vars, st->initial, &st->vars,
				    sql, sizeof(sql));

	if (!n)
		return TP_STEP_DONE;
	pg_put_header(hdr, 'Q', n + 1);
	tp_conn_out(s, hdr, sizeof(hdr));
	tp_conn_out(s, sql, n + 1);
	st->phase = PGS_SYNC;
	st->reset_pending = 1;
	return TP_STEP_MORE;
}

static tp_step_t pg_server_probe(tp_conn_t *s)
{
	uint8_t buf[32];

	tp_conn_out(s, buf, pg_write_query(buf, sizeof(buf), "SELECT 1"));
	state(s)->phase = PGS_PROBE;
	return TP_STEP_MORE;
}

const tp_protocol_t tp_protocol_pg = {
    .name = "postgres",
    .id = CONF_PROTO_POSTGRES,
    .conn_new = pg_conn_new,
    .conn_free = pg_conn_free,
    .client_start = pg_client_start,
    .client_read = pg_client_read,
    .client_welcome = pg_client_welcome,
    .server_start = pg_server_start,
    .server_tls_done = pg_server_tls_done,
    .server_read = pg_server_read,
    .server_params = pg_server_params,
    .cancel_key = pg_cancel_key,
    .frame = pg_frame,
    .client_msg = pg_client_msg,
    .server_msg = pg_server_msg,
    .server_reset = pg_server_reset,
    .server_sync = pg_server_sync,
    .server_probe = pg_server_probe,
    .client_error = pg_client_error,
};
