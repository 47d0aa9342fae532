/*
 * server.c - tokenpool's login to a SQL Server / Azure SQL server, and the
 * batches it sends there itself.
 *
 * Login: PRELOGIN (ENCRYPTION ON, FEDAUTHREQUIRED for token logins), TLS
 * inside PRELOGIN packets (verified by the engine against the pool's
 * settings), LOGIN7 with the token in the FEDAUTH feature extension
 * (SECURITYTOKEN, echo = the server's FEDAUTHREQUIRED) or with user and
 * password for `auth: password`, then the login reply: LOGINACK and the
 * ENVCHANGEs clients must be told (database, language, collation, packet
 * size), an ERROR that says why not, or an ENVCHANGE 20 that routes the
 * login elsewhere (Azure's gateway): followed, never shown to a client.
 *
 * Own batches: reset for the next client (RESETCONNECTION, which keeps the
 * isolation level, so the batch sets it back), rollback of a transaction
 * a client left open, replay of a client's SET options (sync), doctor's
 * probe. Their replies are read here and never reach a client.
 *
 * Not here: the client side (client.c), forwarding (ops.c), sockets, TLS
 * and tokens (the engine's).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "protocols/tds/internal.h"

#ifndef TP_VERSION
#define TP_VERSION "0"
#endif

static tp_step_t server_fail(tp_conn_t *s, int err, const char *msg)
{
	tp_conn_fail(s, err, "%s", msg);
	return TP_STEP_CLOSE;
}

/* The state a login starts from; again after a redirect. */
static void login_reset(tds_server_t *st)
{
	st->phase = TDSS_PRELOGIN;
	st->fedauth_echo = 0;
	st->has_nonce = false;
	st->loginack = false;
	st->attn = st->msg_attn = st->msg_pin = st->dirty = st->failed = false;
	st->req_open = st->up.on = st->down.on = false;
	st->due = 0;
	st->route_port = 0;
	free(st->route_host);
	st->route_host = NULL;
	free(st->sets);
	st->sets = NULL;
	st->errors[0] = 0;
	memset(&st->params, 0, sizeof(st->params));
	st->params.packet_size = TDS_DEFAULT_PACKET;
	st->params.tds_version = TDS_VER_74;
	strcpy(st->params.language, "us_english");
	tds_scan_init(&st->scan);
}

/* ---- PRELOGIN and TLS ---- */

static void put_version(uint8_t v[TDS_PL_VERSION_LEN])
{
	unsigned major = 0, minor = 0, patch = 0;

	memset(v, 0, TDS_PL_VERSION_LEN);
	if (sscanf(TP_VERSION, "%u.%u.%u", &major, &minor, &patch) >= 1) {
		v[0] = (uint8_t)major;
		v[1] = (uint8_t)minor;
		v[2] = (uint8_t)(patch >> 8);
		v[3] = (uint8_t)patch;
	}
}

tp_step_t tds_server_start(tp_conn_t *s, const tp_login_t *login)
{
	tds_server_t *st = tds_server(s);
	static const uint8_t zero[4] = {0}, one = 1;
	uint8_t version[TDS_PL_VERSION_LEN], enc, buf[128];
	tds_prelogin_t pl;
	size_t n;

	login_reset(st);
	/* A TDS cancel is an attention on the connection itself. */
	if (login->kind != TP_LOGIN_NORMAL)
		return TP_STEP_CLOSE;
	put_version(version);
	enc = login->tls ? TDS_ENCRYPT_ON : TDS_ENCRYPT_NOT_SUP;
	memset(&pl, 0, sizeof(pl));
	tds_prelogin_set(&pl, TDS_PL_VERSION, version, sizeof(version));
	tds_prelogin_set(&pl, TDS_PL_ENCRYPTION, &enc, 1);
	tds_prelogin_set(&pl, TDS_PL_INSTOPT, zero, 1);
	tds_prelogin_set(&pl, TDS_PL_THREADID, zero, 4);
	tds_prelogin_set(&pl, TDS_PL_MARS, zero, 1);
	if (login->pool->server.auth == CONF_AUTH_TOKEN)
		tds_prelogin_set(&pl, TDS_PL_FEDAUTHREQUIRED, &one, 1);
	n = tds_prelogin_build(buf, sizeof(buf), &pl);
	tds_send(s, TDS_PKT_PRELOGIN, 0, TDS_DEFAULT_PACKET, buf, n);
	return TP_STEP_MORE;
}

static tp_step_t send_login7(tp_conn_t *s, const tp_login_t *login);

static tp_step_t on_prelogin_answer(tp_conn_t *s, const tp_login_t *login,
				    const uint8_t *p, size_t n)
{
	tds_server_t *st = tds_server(s);
	tds_prelogin_t pl;
	int enc;

	if (tds_prelogin_parse(p, n, &pl) != 0)
		return server_fail(s, TP_EPROTO,
				   "invalid PRELOGIN answer from server");
	enc = tds_prelogin_byte(&pl, TDS_PL_ENCRYPTION, TDS_ENCRYPT_NOT_SUP) &
	      ~TDS_ENCRYPT_CLIENT_CERT;
	st->fedauth_echo =
	    tds_prelogin_byte(&pl, TDS_PL_FEDAUTHREQUIRED, 0) == 1;
	if (pl.opt[TDS_PL_NONCEOPT]) {
		memcpy(st->nonce, pl.opt[TDS_PL_NONCEOPT], TDS_PL_NONCE_LEN);
		st->has_nonce = true;
	}
	if (!login->tls) {
		if (enc == TDS_ENCRYPT_REQ || enc == TDS_ENCRYPT_ON)
			return server_fail(s, TP_ETLS,
					   "server requires encryption but "
					   "server.tls.mode is disable");
		return send_login7(s, login);
	}
	if (enc != TDS_ENCRYPT_ON && enc != TDS_ENCRYPT_REQ)
		return server_fail(
		    s, TP_ETLS,
		    "server does not offer encryption of the "
		    "whole session (PRELOGIN ENCRYPTION answer)");
	if (tp_conn_tls_start_wrapped(s, NULL) != 0 ||
	    tp_conn_tls_feed(s, NULL, 0) < 0)
		return server_fail(s, TP_ETLS, "cannot start TLS");
	tds_send_flight(s); /* ClientHello */
	st->phase = TDSS_TLS;
	return TP_STEP_MORE;
}

static tp_step_t on_tls_flight(tp_conn_t *s, const uint8_t *p, size_t n)
{
	int rc = tp_conn_tls_feed(s, p, n);

	if (rc < 0) /* the engine recorded why (verification, ...) */
		return rc == TP_ETLS
			   ? TP_STEP_CLOSE
			   : server_fail(s, rc, "TLS handshake failed");
	tds_send_flight(s);
	if (rc == 1) {
		tp_conn_tls_unwrap(s); /* then server_tls_done() */
		tds_server(s)->phase = TDSS_TLS_DONE;
	}
	return TP_STEP_MORE;
}

/* ---- LOGIN7 ---- */

tp_step_t tds_server_tls_done(tp_conn_t *s, const tp_login_t *login)
{
	return send_login7(s, login);
}

static tp_step_t send_login7(tp_conn_t *s, const tp_login_t *login)
{
	tds_server_t *st = tds_server(s);
	const conf_server_t *srv = &login->pool->server;
	tds_login7_req_t r = {0};
	char *pw = NULL;
	uint8_t *buf;
	size_t cap, n;

	r.tds_version = TDS_VER_74;
	r.packet_size = TDS_DEFAULT_PACKET;
	r.client_prog_ver = 0x00000001;
	r.client_pid = (uint32_t)getpid();
	r.host = "tokenpool";
	r.app = "tokenpool";
	r.library = "tokenpool";
	r.server = st->host ? st->host : srv->host;
	r.database = login->database;
	r.utf8_support = true;
	if (srv->auth == CONF_AUTH_TOKEN) {
		r.token = login->secret;
		r.token_len = login->secret_len;
		r.fedauth_echo = st->fedauth_echo;
		r.nonce = st->has_nonce ? st->nonce : NULL;
	} else {
		pw = malloc(login->secret_len + 1);
		if (!pw)
			return server_fail(s, TP_ENOMEM, "out of memory");
		memcpy(pw, login->secret, login->secret_len);
		pw[login->secret_len] = 0;
		r.user = login->user;
		r.password = pw;
	}
	cap = tds_login7_bound(&r);
	buf = malloc(cap);
	n = buf ? tds_login7_build(buf, cap, &r) : 0;
	if (pw) {
		OPENSSL_cleanse(pw, login->secret_len);
		free(pw);
	}
	if (n)
		tds_send(s, TDS_PKT_LOGIN7, 0, TDS_DEFAULT_PACKET, buf, n);
	if (buf) {
		OPENSSL_cleanse(buf, cap);
		free(buf);
	}
	if (!n)
		return server_fail(s, TP_ESERVER_LOGIN,
				   "cannot build LOGIN7 (a name or the "
				   "secret is too long or not UTF-8)");
	st->phase = TDSS_LOGIN;
	return TP_STEP_MORE;
}

/* ---- the login reply ---- */

static void utf16_copy(char *out, size_t cap, const uint8_t *p, size_t n)
{
	if (tds_utf16_to_utf8(p, n, out, cap, NULL) != 0)
		snprintf(out, cap, "?");
}

static void note_error(tds_server_t *st, const tds_event_t *ev)
{
	char msg[512];
	size_t len = strlen(st->errors);

	utf16_copy(msg, sizeof(msg), ev->msg, ev->msg_len);
	snprintf(st->errors + len, sizeof(st->errors) - len, "%s%d: %s",
		 len ? "; " : "", (int)ev->number, msg);
}

static void on_login_env(tds_server_t *st, const tds_event_t *ev)
{
	tds_params_t *p = &st->params;
	char size[16];

	switch (ev->env_type) {
	case TDS_ENV_DATABASE:
		utf16_copy(p->database, sizeof(p->database), ev->env_new,
			   ev->env_new_len);
		break;
	case TDS_ENV_LANGUAGE:
		utf16_copy(p->language, sizeof(p->language), ev->env_new,
			   ev->env_new_len);
		break;
	case TDS_ENV_PACKETSIZE:
		utf16_copy(size, sizeof(size), ev->env_new, ev->env_new_len);
		p->packet_size = (uint32_t)strtoul(size, NULL, 10);
		if (p->packet_size < TDS_MIN_PACKET ||
		    p->packet_size > TDS_MAX_PACKET)
			p->packet_size = TDS_DEFAULT_PACKET;
		break;
	case TDS_ENV_COLLATION:
		p->collation_len =
		    ev->env_new_len <= 5 ? (uint8_t)ev->env_new_len : 5;
		memcpy(p->collation, ev->env_new, p->collation_len);
		break;
	case TDS_ENV_ROUTING:
	case TDS_ENV_ENHANCEDROUTING: {
		char host[TDS_NAME_MAX * 2];

		utf16_copy(host, sizeof(host), ev->route_host,
			   ev->route_host_len);
		free(st->route_host);
		st->route_host = strdup(host);
		st->route_port = ev->route_port;
		break;
	}
	}
}

static void on_login_event(tds_server_t *st, const tds_event_t *ev)
{
	switch (ev->kind) {
	case TDS_EV_ENVCHANGE:
		on_login_env(st, ev);
		break;
	case TDS_EV_LOGINACK:
		st->loginack = true;
		st->params.tds_version = ev->tds_version;
		utf16_copy(st->params.prog_name, sizeof(st->params.prog_name),
			   ev->prog_name, ev->prog_name_len);
		memcpy(st->params.prog_version, ev->prog_version, 4);
		break;
	case TDS_EV_FEATUREEXTACK:
		if (ev->feature_id == TDS_FEAT_UTF8_SUPPORT &&
		    ev->feature_len >= 1 && ev->feature_data[0] == 1)
			st->params.utf8 = true;
		break;
	case TDS_EV_ERROR:
		note_error(st, ev);
		break;
	}
}

/* The login reply is complete: logged in, redirected or refused. */
static tp_step_t login_done(tp_conn_t *s)
{
	tds_server_t *st = tds_server(s);
	char msg[600];

	if (st->route_host && !st->errors[0]) {
		free(st->host);
		st->host = strdup(st->route_host);
		if (!st->host ||
		    tp_conn_redirect(s, st->route_host, st->route_port) != 0)
			return server_fail(s, TP_ESERVER_LOGIN,
					   "cannot follow the server's "
					   "routing redirect");
		return TP_STEP_REDIRECT;
	}
	if (st->loginack && !st->errors[0]) {
		st->phase = TDSS_READY;
		return TP_STEP_DONE;
	}
	snprintf(msg, sizeof(msg), "server refused the login: %s",
		 st->errors[0] ? st->errors : "no LOGINACK");
	return server_fail(s, TP_ESERVER_LOGIN, msg);
}

/* ---- our own batches ---- */

/* Sends text (ASCII) as a SQLBatch with the transaction descriptor the
 * server gave us, in packets of the negotiated size; the reply is read by
 * server_read. */
static bool send_batch(tp_conn_t *s, const char *text, uint8_t status)
{
	tds_server_t *st = tds_server(s);
	size_t len = strlen(text), cap = TDS_AH_TXN_LEN + 2 * len, n;
	uint8_t *buf = malloc(cap ? cap : 1);
	long u;

	if (!buf)
		return false;
	n = tds_all_headers_build(buf, cap, st->scan.txn, 1);
	u = tds_utf8_to_utf16(text, len, buf + n, cap - n, NULL);
	if (u < 0) {
		free(buf);
		return false;
	}
	tds_send(s, TDS_PKT_SQLBATCH, status, st->params.packet_size, buf,
		 n + (size_t)u);
	free(buf);
	st->phase = TDSS_BATCH;
	st->due++;
	return true;
}

/* Where RESETCONNECTION leaves a session, plus the isolation level it
 * keeps (back to the login's). */
#define RESET_SQL "SET TRANSACTION ISOLATION LEVEL READ COMMITTED\n"

tp_step_t tds_server_reset(tp_conn_t *s, bool full)
{
	tds_server_t *st = tds_server(s);

	/* The client left in the middle of sending a request: whatever we
	 * send now would continue it. Not reusable. */
	if (st->req_open)
		return TP_STEP_CLOSE;

	st->due = st->attn ? 1 : 0; /* the attention's DONE comes first */
	if (full || st->dirty) {
		if (!send_batch(s, RESET_SQL, TDS_ST_RESETCONN))
			return TP_STEP_CLOSE;
		free(st->sets);
		st->sets = NULL;
		st->dirty = false;
	} else if (st->scan.in_txn) {
		if (!send_batch(s, "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION",
				0))
			return TP_STEP_CLOSE;
	}
	if (!st->due)
		return TP_STEP_DONE;
	st->phase = TDSS_BATCH;
	return TP_STEP_MORE;
}

static bool same_sets(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

tp_step_t tds_server_sync(tp_conn_t *s, tp_conn_t *c)
{
	tds_server_t *st = tds_server(s);
	const char *want = tds_client(c)->sets;
	char *sql, *copy = NULL;
	size_t n;

	if (!tds_link(s, c))
		return TP_STEP_CLOSE;
	if (same_sets(want, st->sets))
		return TP_STEP_DONE;
	/* Another client's options are on it: back to the login state,
	 * then this client's. */
	n = sizeof(RESET_SQL) + (want ? strlen(want) : 0);
	sql = malloc(n);
	if (!sql || (want && !(copy = strdup(want)))) {
		free(sql);
		return TP_STEP_CLOSE;
	}
	snprintf(sql, n, "%s%s", RESET_SQL, want ? want : "");
	st->due = 0;
	if (!send_batch(s, sql, TDS_ST_RESETCONN)) {
		free(sql);
		free(copy);
		return TP_STEP_CLOSE;
	}
	free(sql);
	free(st->sets);
	st->sets = copy;
	return TP_STEP_MORE;
}

tp_step_t tds_server_probe(tp_conn_t *s)
{
	tds_server(s)->due = 0;
	return send_batch(s, "SELECT 1", 0) ? TP_STEP_MORE : TP_STEP_CLOSE;
}

/* ---- reading replies ---- */

/* One reply packet's payload, fed to the scanner; the message ended
 * when eom. */
static tp_step_t on_packet(tp_conn_t *s, const uint8_t *p, size_t n, bool eom)
{
	tds_server_t *st = tds_server(s);
	size_t pos = 0, used;
	int rc;

	while ((rc = tds_scan_feed(&st->scan, p + pos, n - pos, &used)) > 0) {
		pos += used;
		if (st->phase == TDSS_LOGIN)
			on_login_event(st, &st->scan.ev);
		else
			tds_server_event(s, &st->scan.ev);
	}
	if (rc < 0 || (eom && !tds_scan_idle(&st->scan)))
		return server_fail(s, TP_EPROTO, "malformed reply from server");
	if (!eom)
		return TP_STEP_MORE;
	if (st->phase == TDSS_LOGIN)
		return login_done(s);
	st->msg_attn = st->msg_pin = false;
	if (st->due > 0 && --st->due > 0)
		return TP_STEP_MORE;
	st->attn = false;
	st->phase = TDSS_READY;
	return TP_STEP_DONE;
}

/* Whole messages (PRELOGIN answer, TLS flights) during login. */
static tp_step_t on_login_message(tp_conn_t *s, const tp_login_t *login,
				  const uint8_t *msg, size_t mlen, size_t plen)
{
	tds_server_t *st = tds_server(s);
	uint8_t *p = malloc(plen ? plen : 1);
	tp_step_t step;

	if (!p)
		return server_fail(s, TP_ENOMEM, "out of memory");
	plen = tds_msg_payload(msg, mlen, p, plen);
	if (st->phase == TDSS_PRELOGIN)
		step = on_prelogin_answer(s, login, p, plen);
	else
		step = on_tls_flight(s, p, plen);
	free(p);
	return step;
}

static tp_step_t read_handshake(tp_conn_t *s, const tp_login_t *login,
				const uint8_t *buf, size_t len,
				size_t *consumed)
{
	tds_server_t *st = tds_server(s);
	size_t mlen, plen;
	int err = tds_msg_frame(buf, len, TDS_HANDSHAKE_MAX, &mlen, &plen);

	if (err == TP_EAGAIN)
		return TP_STEP_MORE;
	if (err)
		return server_fail(s, TP_EPROTO,
				   "invalid PRELOGIN packet from server");
	if (st->phase == TDSS_PRELOGIN && buf[0] != TDS_PKT_REPLY)
		return server_fail(s, TP_EPROTO,
				   "server did not answer PRELOGIN");
	*consumed = mlen;
	return on_login_message(s, login, buf, mlen, plen);
}

tp_step_t tds_server_read(tp_conn_t *s, const tp_login_t *login,
			  const uint8_t *buf, size_t len, size_t *consumed)
{
	tds_server_t *st = tds_server(s);
	tp_step_t step = TP_STEP_MORE;
	size_t n;
	int err;

	*consumed = 0;
	if (st->phase == TDSS_PRELOGIN || st->phase == TDSS_TLS) {
		while (step == TP_STEP_MORE && *consumed < len &&
		       (st->phase == TDSS_PRELOGIN || st->phase == TDSS_TLS)) {
			size_t used = 0;

			step = read_handshake(s, login, buf + *consumed,
					      len - *consumed, &used);
			if (!used)
				break;
			*consumed += used;
		}
		return step;
	}
	if (st->phase != TDSS_LOGIN && st->phase != TDSS_BATCH)
		return len ? server_fail(s, TP_EPROTO,
					 "unexpected data from server")
			   : TP_STEP_MORE;
	while (step == TP_STEP_MORE && *consumed < len) {
		const uint8_t *p = buf + *consumed;

		err = tds_frame(p, len - *consumed, &n);
		if (err == TP_EAGAIN || (!err && n > len - *consumed))
			break;
		if (err || p[0] != TDS_PKT_REPLY)
			return server_fail(s, TP_EPROTO,
					   "unexpected packet from server");
		*consumed += n;
		step =
		    on_packet(s, p + TDS_HDR, n - TDS_HDR, p[1] & TDS_ST_EOM);
	}
	return step;
}

void tds_server_params(tp_conn_t *s, const uint8_t **params, size_t *len)
{
	*params = (const uint8_t *)&tds_server(s)->params;
	*len = sizeof(tds_server(s)->params);
}
