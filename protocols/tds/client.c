/*
 * client.c - a SQL Server client's login to tokenpool: PRELOGIN with the
 * encryption answer, TLS inside PRELOGIN packets (or TDS 8 TLS first),
 * LOGIN7 checked against the pool's static credentials, and our own login
 * reply built from what the pool's server said (database, collation,
 * language, packet size, TDS version). Also the errors and attention
 * answers tokenpool writes to clients itself.
 *
 * Encryption: a client that can do TLS (ENCRYPTION OFF, ON or REQ) is
 * answered REQ while client TLS is on offer, so the whole session is
 * encrypted (never login-only: FreeTDS's default OFF and tedious's ON both
 * go to full TLS); a client that cannot (NOT_SUP) is answered NOT_SUP and
 * goes on in clear, refused at LOGIN7 when its pool says client_tls
 * require. MARS is always answered 00 (off).
 *
 * Packet size: a client gets the size it asked for (clamped to 512..32767);
 * where the server's differs, ops.c re-frames the packets.
 *
 * Not here: upstream login (server.c), forwarding (ops.c), TLS itself
 * (the engine).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "protocols/tds/internal.h"

/* What PRELOGIN says we are: 12.0.2000, as Azure SQL Database does. */
static const uint8_t our_version[TDS_PL_VERSION_LEN] = {12,   0, 0x07,
							0xD0, 0, 0};

/* ---- errors ---- */

typedef struct err_map {
	int32_t number;
	uint8_t cls;
} err_map_t;

/*
 * Error numbers as SQL Server or Azure SQL use them, so clients' retry
 * logic does the right thing: 18456 login failed; 4060 cannot open
 * database; 6005 shutting down; 10928 a resource limit (transient);
 * 40613 database not available (transient: token, TLS, upstream); 4002
 * malformed TDS.
 */
static err_map_t map_error(int err)
{
	switch (err) {
	case TP_EAUTH:
	case TP_ECONFIG:
		return (err_map_t){18456, 14};
	case TP_ENODB:
		return (err_map_t){4060, 11};
	case TP_ESHUTDOWN:
		return (err_map_t){6005, 14};
	case TP_EFULL:
	case TP_ETIMEOUT:
		return (err_map_t){10928, 16};
	case TP_EPROTO:
	case TP_ETOOBIG:
		return (err_map_t){4002, 16};
	default: /* token, TLS, connect, upstream login */
		return (err_map_t){40613, 17};
	}
}

/* Packets to a client: the default size until its login is done. */
static size_t reply_size(const tds_client_t *st)
{
	return st->phase == TDSC_DONE ? st->packet_size : TDS_DEFAULT_PACKET;
}

static size_t put_error(uint8_t *out, size_t cap, int32_t number, uint8_t cls,
			const char *msg)
{
	return tds_put_message(out, cap, TDS_TOK_ERROR, number, 1, cls, msg,
			       "tokenpool", NULL, 1);
}

void tds_client_error(tp_conn_t *c, int err, const char *msg)
{
	tds_client_t *st = tds_client(c);
	err_map_t m = map_error(err);
	uint8_t buf[4096];
	char login[TDS_NAME_MAX + 40];
	size_t n = 0, k;

	if (st->phase == TDSC_TLS || st->phase == TDSC_TLS_RAW)
		return; /* in the middle of a TLS handshake: nothing to say */
	/* After login a failure ends the session: class 20 says so. */
	if (st->phase == TDSC_DONE && err != TP_ESHUTDOWN)
		m.cls = 20;
	k = put_error(buf, sizeof(buf) - 64, m.number, m.cls, msg);
	if (!k) /* too long for the buffer: the code's own text */
		k = put_error(buf, sizeof(buf) - 64, m.number, m.cls,
			      tp_strerror(err));
	n += k;
	if (err == TP_ENODB && st->phase != TDSC_DONE) {
		/* As SQL Server: 4060, then the login failure itself. */
		snprintf(login, sizeof(login), "Login failed for user '%s'.",
			 st->user ? st->user : "");
		n += put_error(buf + n, sizeof(buf) - n, 18456, 14, login);
	}
	n += tds_put_done(buf + n, sizeof(buf) - n, TDS_TOK_DONE,
			  TDS_DONE_ERROR, 0, 0);
	tds_send(c, TDS_PKT_REPLY, 0, reply_size(st), buf, n);
}

void tds_client_cancel(tp_conn_t *c)
{
	uint8_t buf[TDS_DONE_LEN];
	size_t n =
	    tds_put_done(buf, sizeof(buf), TDS_TOK_DONE, TDS_DONE_ATTN, 0, 0);

	tds_send(c, TDS_PKT_REPLY, 0, reply_size(tds_client(c)), buf, n);
}

static tp_step_t fail(tp_conn_t *c, int err, const char *msg)
{
	tds_client_error(c, err, msg);
	tp_conn_fail(c, err, "%s", msg);
	return TP_STEP_CLOSE;
}

/* Closes without a word: the peer is not speaking TDS 7 (or is inside a
 * TLS handshake), so a TDS error would be noise to it. */
static tp_step_t drop(tp_conn_t *c, int err, const char *why)
{
	tp_conn_fail(c, err, "%s", why);
	return TP_STEP_CLOSE;
}

/* ---- PRELOGIN ---- */

/* The ENCRYPTION answer (see the file header). */
static int encryption_answer(tp_conn_t *c, int asked)
{
	if (tp_conn_tls(c)) /* TDS 8: TLS came first */
		return asked == TDS_ENCRYPT_STRICT ? TDS_ENCRYPT_STRICT
						   : TDS_ENCRYPT_NOT_SUP;
	if (asked == TDS_ENCRYPT_NOT_SUP || !tp_conn_tls_offered(c))
		return TDS_ENCRYPT_NOT_SUP;
	return TDS_ENCRYPT_REQ;
}

static tp_step_t on_prelogin(tp_conn_t *c, const uint8_t *p, size_t n)
{
	static const uint8_t zero = 0;
	tds_client_t *st = tds_client(c);
	tds_prelogin_t in, out;
	uint8_t enc, buf[128];
	int asked;

	if (tds_prelogin_parse(p, n, &in) != 0)
		return fail(c, TP_EPROTO, "invalid PRELOGIN message");
	asked = tds_prelogin_byte(&in, TDS_PL_ENCRYPTION, TDS_ENCRYPT_NOT_SUP) &
		~TDS_ENCRYPT_CLIENT_CERT;
	if (asked == TDS_ENCRYPT_STRICT && !tp_conn_tls(c))
		return fail(c, TP_EPROTO, "ENCRYPT_STRICT before TLS");
	enc = (uint8_t)encryption_answer(c, asked);
	if (tds_prelogin_byte(&in, TDS_PL_MARS, 0) == 1)
		tp_conn_debug(c, "client asks for MARS: answered off");
	memset(&out, 0, sizeof(out));
	tds_prelogin_set(&out, TDS_PL_VERSION, our_version,
			 sizeof(our_version));
	tds_prelogin_set(&out, TDS_PL_ENCRYPTION, &enc, 1);
	tds_prelogin_set(&out, TDS_PL_INSTOPT, &zero, 1);
	tds_prelogin_set(&out, TDS_PL_THREADID, &zero, 0);
	tds_prelogin_set(&out, TDS_PL_MARS, &zero, 1); /* no MARS */
	if (in.opt[TDS_PL_FEDAUTHREQUIRED]) /* we take SQL logins only */
		tds_prelogin_set(&out, TDS_PL_FEDAUTHREQUIRED, &zero, 1);
	n = tds_prelogin_build(buf, sizeof(buf), &out);
	/* FreeTDS takes the answer only in a tabular result packet. */
	tds_send(c, TDS_PKT_REPLY, 0, TDS_DEFAULT_PACKET, buf, n);
	if (enc != TDS_ENCRYPT_REQ) {
		st->phase = TDSC_LOGIN;
		return TP_STEP_MORE;
	}
	if (tp_conn_tls_start_wrapped(c, NULL) != 0)
		return drop(c, TP_ETLS, "cannot start TLS");
	st->phase = TDSC_TLS;
	return TP_STEP_MORE;
}

/* One client flight of the TLS handshake; ours goes back the same way. */
static tp_step_t on_tls_flight(tp_conn_t *c, const uint8_t *p, size_t n)
{
	int rc = tp_conn_tls_feed(c, p, n);

	tds_send_flight(c); /* our flight, or the alert that ends it */
	if (rc < 0)	    /* the engine recorded why */
		return rc == TP_ETLS ? TP_STEP_CLOSE
				     : drop(c, rc, "TLS handshake failed");
	if (rc == 1) {
		tp_conn_tls_unwrap(c);
		tds_client(c)->phase = TDSC_LOGIN;
	}
	return TP_STEP_MORE;
}

/*
 * TDS 8 (strict): the connection starts with a TLS handshake, PRELOGIN
 * comes inside it. The handshake goes through the wrapped-TLS calls with
 * nothing around the records: what arrives is fed as it is, what TLS
 * writes goes out as it is.
 */
static tp_step_t on_raw_tls(tp_conn_t *c, const uint8_t *buf, size_t len,
			    size_t *consumed)
{
	tds_client_t *st = tds_client(c);
	uint8_t chunk[16384];
	size_t n;
	int rc;

	if (st->phase == TDSC_PRELOGIN) {
		if (!tp_conn_tls_offered(c))
			return drop(c, TP_ETLS, "TLS is not offered");
		if (tp_conn_tls_start_wrapped(c, NULL) != 0)
			return drop(c, TP_ETLS, "cannot start TLS");
		st->phase = TDSC_TLS_RAW;
	}
	rc = tp_conn_tls_feed(c, buf, len);
	*consumed = len;
	while ((n = tp_conn_tls_take(c, chunk, sizeof(chunk))) > 0)
		tp_conn_out(c, chunk, n);
	if (rc < 0) /* the engine recorded why */
		return rc == TP_ETLS ? TP_STEP_CLOSE
				     : drop(c, rc, "TLS handshake failed");
	if (rc == 1) {
		tp_conn_tls_unwrap(c);
		st->phase = TDSC_PRELOGIN; /* now inside TLS */
	}
	return TP_STEP_MORE;
}

/* ---- LOGIN7 ---- */

static bool version_ok(uint32_t v)
{
	/* 7.2 (SQL Server 2005) to 7.4, and TDS 8 (strict). Earlier ones
	 * encode replies differently from what the pooled server sends. */
	return (v >= TDS_VER_72 && (v >> 24) <= 0x74) || v == 0x08000000u;
}

static tp_step_t login_failed(tp_conn_t *c, const char *user)
{
	char msg[TDS_NAME_MAX + 40];

	snprintf(msg, sizeof(msg), "Login failed for user '%s'.", user);
	return fail(c, TP_EAUTH, msg);
}

/* What the LOGIN7 asks for that tokenpool does not do; NULL if fine. */
static const char *unsupported(const tds_login7_t *l)
{
	tds_feature_t f;

	if (!version_ok(l->tds_version))
		return "Login failed: TDS 7.2 or later is required.";
	if (l->sspi.len || (l->flags2 & TDS_OF2_INT_SECURITY))
		return "Login failed: integrated authentication is not "
		       "supported; log in with a user name and password.";
	if (tds_login7_feature(l, TDS_FEAT_FEDAUTH, &f))
		return "Login failed: tokenpool takes SQL logins (user name "
		       "and password); it logs in to the server with its own "
		       "token.";
	if (l->change_password.len || (l->flags3 & TDS_OF3_CHANGE_PW))
		return "Login failed: changing the password is not supported.";
	return NULL;
}

static tp_step_t route(tp_conn_t *c, const char *user, const char *db,
		       tp_route_t *r)
{
	char msg[TDS_NAME_MAX + 96];
	int err = tp_conn_route(c, user, db[0] ? db : NULL, r);

	switch (err) {
	case 0:
		return TP_STEP_DONE;
	case TP_ENODB:
		snprintf(msg, sizeof(msg),
			 "Cannot open database \"%s\" requested by the login. "
			 "The login failed.",
			 db);
		return fail(c, TP_ENODB, msg);
	case TP_EFULL:
		return fail(c, err,
			    "Too many clients: the tokenpool pool has reached "
			    "max_clients.");
	case TP_ESHUTDOWN:
		return fail(c, err, "The proxy is shutting down.");
	default:
		return fail(c, err, tp_strerror(err));
	}
}

static tp_step_t check_password(tp_conn_t *c, const tds_login7_t *l,
				const tp_route_t *r, const char *user)
{
	char pw[TDS_NAME_MAX];
	size_t pwlen = 0;
	bool ok;

	if (tds_login7_password(l, pw, sizeof(pw), &pwlen) != 0) {
		OPENSSL_cleanse(pw, sizeof(pw));
		return fail(c, TP_EPROTO, "invalid password field in LOGIN7");
	}
	ok = r->client && auth_check_plain(r->client, r->verifier, pw, pwlen);
	OPENSSL_cleanse(pw, sizeof(pw));
	return ok ? TP_STEP_DONE : login_failed(c, user);
}

static tp_step_t on_login7(tp_conn_t *c, const uint8_t *p, size_t n)
{
	tds_client_t *st = tds_client(c);
	char user[TDS_NAME_MAX], db[TDS_NAME_MAX];
	const char *why;
	tds_login7_t l;
	tds_feature_t f;
	tp_route_t r;
	tp_step_t step;

	if (tds_login7_parse(p, n, &l) != 0 ||
	    tds_login7_string(&l.user, user, sizeof(user)) != 0 ||
	    tds_login7_string(&l.database, db, sizeof(db)) != 0)
		return fail(c, TP_EPROTO, "invalid LOGIN7 message");
	free(st->user);
	st->user = strdup(user);
	if (!st->user)
		return fail(c, TP_ENOMEM, "out of memory");
	if ((why = unsupported(&l)))
		return fail(c, TP_EAUTH, why);
	if ((step = route(c, user, db, &r)) != TP_STEP_DONE)
		return step;
	if (r.pool->client_tls.mode == CONF_CTLS_REQUIRE && !tp_conn_tls(c))
		return fail(c, TP_ECONFIG,
			    "Login failed: this server requires encryption; "
			    "connect with encryption (TLS) on.");
	if ((step = check_password(c, &l, &r, user)) != TP_STEP_DONE)
		return step;
	st->utf8 = tds_login7_feature(&l, TDS_FEAT_UTF8_SUPPORT, &f);
	st->packet_size = tds_packet_size(l.packet_size);
	st->phase = TDSC_DONE;
	free(st->user); /* only error messages during login needed it */
	st->user = NULL;
	return TP_STEP_DONE;
}

/* ---- the login loop ---- */

/* Whether a first byte can start a TDS 7 login at all: PRELOGIN, a
 * LOGIN7 without one (refused below), a TLS record (TDS 8). */
static bool plausible_first(uint8_t b)
{
	return b == TDS_PKT_PRELOGIN || b == TDS_PKT_LOGIN7 || b == 0x16;
}

static tp_step_t on_message(tp_conn_t *c, const uint8_t *msg, size_t mlen,
			    size_t plen)
{
	tds_client_t *st = tds_client(c);
	uint8_t type = msg[0], *p;
	tp_step_t step;

	if (st->phase == TDSC_LOGIN && type != TDS_PKT_LOGIN7)
		return fail(c, TP_EPROTO, "expected LOGIN7");
	if (st->phase == TDSC_PRELOGIN && type != TDS_PKT_PRELOGIN)
		return fail(c, TP_EPROTO,
			    "expected PRELOGIN: TDS 7.2 or later is required");
	if (st->phase == TDSC_TLS && type != TDS_PKT_PRELOGIN)
		return drop(c, TP_EPROTO, "expected the TLS handshake");
	p = malloc(plen ? plen : 1);
	if (!p)
		return fail(c, TP_ENOMEM, "out of memory");
	plen = tds_msg_payload(msg, mlen, p, plen);
	if (st->phase == TDSC_PRELOGIN)
		step = on_prelogin(c, p, plen);
	else if (st->phase == TDSC_TLS)
		step = on_tls_flight(c, p, plen);
	else
		step = on_login7(c, p, plen);
	OPENSSL_cleanse(p, plen); /* LOGIN7 holds the password */
	free(p);
	return step;
}

tp_step_t tds_client_read(tp_conn_t *c, const uint8_t *buf, size_t len,
			  size_t *consumed)
{
	tds_client_t *st = tds_client(c);
	tp_step_t step = TP_STEP_MORE;
	size_t mlen, plen, max;
	int err;

	*consumed = 0;
	if (st->phase == TDSC_TLS_RAW || (st->phase == TDSC_PRELOGIN && len &&
					  buf[0] == 0x16 && !tp_conn_tls(c)))
		return on_raw_tls(c, buf, len, consumed);
	while (step == TP_STEP_MORE && *consumed < len &&
	       st->phase != TDSC_DONE) {
		const uint8_t *p = buf + *consumed;
		size_t avail = len - *consumed;
		uint8_t phase = st->phase;

		if (phase == TDSC_PRELOGIN && !plausible_first(p[0]))
			return drop(c, TP_EPROTO, "not a TDS client");
		max = phase == TDSC_LOGIN ? TDS_LOGIN7_MAX
		      : phase == TDSC_TLS ? TDS_HANDSHAKE_MAX
					  : TDS_PRELOGIN_MAX;
		err = tds_msg_frame(p, avail, max, &mlen, &plen);
		if (err == TP_EAGAIN)
			break;
		if (err)
			return phase == TDSC_TLS
				   ? drop(c, err, "invalid TLS packet")
				   : fail(c, err, "invalid login packet");
		*consumed += mlen;
		step = on_message(c, p, mlen, plen);
		if (phase == TDSC_TLS && st->phase != TDSC_TLS)
			break; /* what follows is TLS records: the engine's */
	}
	return step;
}

tp_step_t tds_client_start(tp_conn_t *c)
{
	return TP_STEP_MORE; /* the client speaks first */
}

/* ---- the login reply ---- */

static void default_params(tds_params_t *p)
{
	static const uint8_t latin1_ci_as[5] = {0x09, 0x04, 0xD0, 0x00, 0x34};

	memset(p, 0, sizeof(*p));
	p->tds_version = TDS_VER_74;
	p->packet_size = TDS_DEFAULT_PACKET;
	memcpy(p->collation, latin1_ci_as, 5);
	p->collation_len = 5;
	strcpy(p->database, "master");
	strcpy(p->language, "us_english");
	strcpy(p->prog_name, "Microsoft SQL Server");
	p->prog_version[0] = 12;
}

/* ENVCHANGEs and INFOs SQL Server sends before its LOGINACK. */
static size_t put_env(uint8_t *b, size_t cap, const tds_params_t *p)
{
	char msg[TDS_NAME_MAX + 64];
	size_t n = 0;

	n += tds_put_envchange(b + n, cap - n, TDS_ENV_DATABASE, p->database,
			       "master");
	snprintf(msg, sizeof(msg), "Changed database context to '%s'.",
		 p->database);
	n += tds_put_message(b + n, cap - n, TDS_TOK_INFO, 5701, 2, 0, msg,
			     "tokenpool", NULL, 1);
	n += tds_put_envchange_bytes(b + n, cap - n, TDS_ENV_COLLATION,
				     p->collation, p->collation_len, NULL, 0);
	n += tds_put_envchange(b + n, cap - n, TDS_ENV_LANGUAGE, p->language,
			       NULL);
	snprintf(msg, sizeof(msg), "Changed language setting to %s.",
		 p->language);
	n += tds_put_message(b + n, cap - n, TDS_TOK_INFO, 5703, 1, 0, msg,
			     "tokenpool", NULL, 1);
	return n;
}

void tds_client_welcome(tp_conn_t *c, const uint8_t *params, size_t len)
{
	tds_client_t *st = tds_client(c);
	uint8_t buf[4096], one = 1;
	char newsz[16], oldsz[16];
	tds_feature_t utf8 = {TDS_FEAT_UTF8_SUPPORT, &one, 1};
	tds_params_t p;
	size_t n;

	if (params && len == sizeof(p))
		memcpy(&p, params, sizeof(p));
	else
		default_params(&p);
	n = put_env(buf, sizeof(buf), &p);
	n += tds_put_loginack(buf + n, sizeof(buf) - n, 1, p.tds_version,
			      p.prog_name, p.prog_version);
	/* tedious refuses an empty FEATUREEXTACK: only when there is one. */
	if (st->utf8 && p.utf8)
		n += tds_put_featureextack(buf + n, sizeof(buf) - n, &utf8, 1);
	/* The client keeps the size it asked for: packets are re-framed
	 * when the server's differs (ops.c). */
	snprintf(newsz, sizeof(newsz), "%u", (unsigned)st->packet_size);
	snprintf(oldsz, sizeof(oldsz), "%u", TDS_DEFAULT_PACKET);
	n += tds_put_envchange(buf + n, sizeof(buf) - n, TDS_ENV_PACKETSIZE,
			       newsz, oldsz);
	n += tds_put_done(buf + n, sizeof(buf) - n, TDS_TOK_DONE, 0, 0, 0);
	tds_send(c, TDS_PKT_REPLY, 0, TDS_DEFAULT_PACKET, buf, n);
}
