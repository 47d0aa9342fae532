/*
 * server.c - tokenpool's own logins to a MySQL / MariaDB server, and the
 * command batches it sends on a server connection between clients.
 *
 * Login: the server's greeting, SSLRequest and TLS (always, unless
 * tls.mode is disable), HandshakeResponse41 with the configured user and
 * database, then whatever the server asks:
 *   mysql_clear_password / dialog   the token (or password) and a NUL,
 *                                   only ever over TLS: this is how Azure
 *                                   and MariaDB's PAM take a token;
 *   mysql_native_password           the scramble (auth: password);
 *   caching_sha2_password           the fast-path scramble, and on "full
 *                                   authentication" the password over TLS
 *                                   or RSA-encrypted with the server's key.
 * After the OK: session_track_state_change is switched on where the server
 * tracks session state, so OK packets say when a client leaves state
 * behind. A cancel link logs in the same way, sends KILL QUERY for the
 * thread it was given, and closes.
 *
 * Batches (reset, sync, probe) are pipelined COM_* packets whose answers
 * the response tracker consumes; the tag of each says whether it may fail.
 *
 * Not here: forwarding (ops.c), client logins (client.c).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "protocols/mysql/internal.h"

static tp_step_t server_fail(tp_conn_t *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static tp_step_t server_fail(tp_conn_t *s, int err, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	tp_conn_fail(s, err, "%s", msg);
	return TP_STEP_CLOSE;
}

static tp_step_t batch_done(tp_conn_t *s);

/* ---- our own commands ---- */

void my_server_command(tp_conn_t *s, uint8_t cmd, const void *arg, size_t len,
		       uint8_t tag)
{
	my_server_t *st = my_server(s);
	uint8_t hdr[5];

	my_put_header(hdr, len + 1, 0);
	hdr[4] = cmd;
	tp_conn_out(s, hdr, sizeof(hdr));
	if (len)
		tp_conn_out(s, arg, len);
	if (my_track_push(&st->trk, my_command_reply(cmd), tag) != 0)
		tp_conn_debug(s, "too many commands in flight");
}

static void query(tp_conn_t *s, const char *sql, uint8_t tag)
{
	my_server_command(s, MY_COM_QUERY, sql, strlen(sql), tag);
}

void my_server_track_on(tp_conn_t *s, uint8_t tag)
{
	if (my_server(s)->trk.caps & MY_CAP_SESSION_TRACK)
		query(s, "SET SESSION session_track_state_change = 1", tag);
}

void my_server_set_charset(tp_conn_t *s, uint8_t cs, uint8_t tag)
{
	char sql[160];

	/* What the server does with a handshake's collation id, and what
	 * SET NAMES does, without knowing the collation's name: these
	 * variables accept an id. */
	snprintf(sql, sizeof(sql),
		 "SET character_set_client = %u, character_set_results = %u, "
		 "collation_connection = %u",
		 cs, cs, cs);
	query(s, sql, tag);
}

/* ---- login ---- */

tp_step_t my_server_start(tp_conn_t *s, const tp_login_t *login)
{
	my_server_t *st = my_server(s);

	free(st->database);
	st->database = strdup(login->database ? login->database : "");
	if (!st->database)
		return server_fail(s, TP_ENOMEM, "out of memory");
	st->cancel = login->kind == TP_LOGIN_CANCEL;
	if (st->cancel && (!login->secret || login->cancel_key_len != 4))
		return server_fail(s, TP_ESERVER_LOGIN,
				   "a MySQL cancel needs a login, and this "
				   "link has no credential");
	st->h.phase = MYS_GREETING;
	return TP_STEP_MORE; /* the server speaks first */
}

static tp_step_t on_server_error(tp_conn_t *s, const uint8_t *pl, size_t len)
{
	my_err_t e;

	if (my_parse_err(pl, len, &e) != 0)
		return server_fail(s, TP_EPROTO,
				   "bad error packet from server");
	return server_fail(s, TP_ESERVER_LOGIN,
			   "server said: ERROR %u (%s): %.*s", e.code,
			   e.sqlstate[0] ? e.sqlstate : "HY000",
			   (int)(e.message.len > 300 ? 300 : e.message.len),
			   (const char *)e.message.p);
}

/* The secret as a C string for the scramble functions; NULL on a NUL
 * inside or no memory. Free with free_secret(). */
static char *secret_str(const tp_login_t *login)
{
	if (!login->secret || memchr(login->secret, 0, login->secret_len))
		return NULL;
	return strndup(login->secret, login->secret_len);
}

static void free_secret(char *pw, size_t len)
{
	if (pw)
		OPENSSL_cleanse(pw, len);
	free(pw);
}

/* The scramble for plugin (native or caching_sha2) into out[32]. */
static size_t scramble(const tp_login_t *login, const char *plugin,
		       const uint8_t *nonce, uint8_t out[32])
{
	char *pw = secret_str(login);
	size_t n;

	if (!pw)
		return 0;
	if (strcmp(plugin, MY_PLUGIN_SHA2) == 0) {
		auth_mysql_sha2_scramble(pw, nonce, MY_NONCE_LEN, out);
		n = 32;
	} else {
		auth_mysql_native_scramble(pw, nonce, MY_NONCE_LEN, out);
		n = 20;
	}
	free_secret(pw, login->secret_len);
	return n;
}

static tp_step_t send_login(tp_conn_t *s, const tp_login_t *login)
{
	static const char attrs[] = "\x0c_client_name\x09tokenpool";
	my_server_t *st = my_server(s);
	my_login_t l = {0};
	uint8_t auth[32], *buf;
	size_t cap, n;
	bool native = strcmp(st->plugin, MY_PLUGIN_SHA2) != 0;

	l.caps = (MY_CAPS_COMMON & st->server_caps) |
		 (tp_conn_tls(s) ? MY_CAP_SSL : 0) |
		 (st->database[0] ? MY_CAP_CONNECT_WITH_DB : 0);
	l.max_packet = 0x40000000;
	l.charset = MY_CHARSET_DEFAULT;
	l.user.p = (const uint8_t *)login->user;
	l.user.len = strlen(login->user);
	l.database.p = (const uint8_t *)st->database;
	l.database.len = strlen(st->database);
	/* Answer the server's default method as real clients do; a token
	 * account then switches us to mysql_clear_password. */
	l.plugin.p =
	    (const uint8_t *)(native ? MY_PLUGIN_NATIVE : MY_PLUGIN_SHA2);
	l.plugin.len = strlen((const char *)l.plugin.p);
	l.auth.p = auth;
	l.auth.len = scramble(login, native ? MY_PLUGIN_NATIVE : MY_PLUGIN_SHA2,
			      st->nonce, auth);
	if (!l.auth.len)
		return server_fail(s, TP_ETOKEN, "unusable secret");
	l.attrs.p = (const uint8_t *)attrs;
	l.attrs.len = sizeof(attrs) - 1;
	cap = 256 + l.user.len + l.database.len;
	buf = malloc(cap);
	if (!buf)
		return server_fail(s, TP_ENOMEM, "out of memory");
	n = my_write_login(buf, cap, (uint8_t)(st->h.seq + 1), &l);
	if (n)
		tp_conn_out(s, buf, n);
	free(buf);
	if (!n)
		return server_fail(s, TP_ECONFIG, "cannot write login packet");
	st->h.seq++;
	st->trk.caps = l.caps;
	st->h.phase = MYS_AUTH;
	return TP_STEP_MORE;
}

tp_step_t my_server_tls_done(tp_conn_t *s, const tp_login_t *login)
{
	return send_login(s, login);
}

static tp_step_t on_greeting(tp_conn_t *s, const tp_login_t *login,
			     const uint8_t *pl, size_t len)
{
	my_server_t *st = my_server(s);
	my_greeting_t g;
	my_login_t ssl = {0};
	uint8_t buf[40];

	if (len > 0 && pl[0] == 0xff)
		return on_server_error(s, pl, len);
	if (my_parse_greeting(pl, len, &g) != 0)
		return server_fail(s, TP_EPROTO, "bad greeting from server");
	if (!(g.caps & MY_CAP_PROTOCOL_41) || !(g.caps & MY_CAP_SECURE_CONN) ||
	    g.nonce_len < MY_NONCE_LEN)
		return server_fail(s, TP_ESERVER_LOGIN,
				   "server protocol older than MySQL 4.1");
	memcpy(st->nonce, g.nonce, MY_NONCE_LEN);
	st->thread_id = g.thread_id;
	st->server_caps = g.caps;
	snprintf(st->plugin, sizeof(st->plugin), "%.*s",
		 (int)(g.plugin.len < 31 ? g.plugin.len : 31),
		 g.plugin.p ? (const char *)g.plugin.p : "");
	if (!login->tls)
		return send_login(s, login);
	if (!(g.caps & MY_CAP_SSL))
		return server_fail(s, TP_ETLS, "server does not offer TLS");
	ssl.ssl_request = true;
	ssl.caps = (MY_CAPS_COMMON & g.caps) | MY_CAP_SSL |
		   (st->database[0] ? MY_CAP_CONNECT_WITH_DB : 0);
	ssl.max_packet = 0x40000000;
	ssl.charset = MY_CHARSET_DEFAULT;
	tp_conn_out(s, buf, my_write_login(buf, sizeof(buf), 1, &ssl));
	st->h.seq = 1;
	return TP_STEP_TLS;
}

/* The secret in clear and a NUL, in pieces so a token of any size needs
 * no buffer of its own. Never without TLS. */
static tp_step_t send_clear(tp_conn_t *s, const tp_login_t *login)
{
	my_server_t *st = my_server(s);
	uint8_t hdr[4];

	if (!tp_conn_tls(s))
		return server_fail(
		    s, TP_ETLS,
		    "server asks for the password in clear "
		    "text on a connection without TLS; not sent");
	if (!login->secret || memchr(login->secret, 0, login->secret_len) ||
	    login->secret_len + 1 >= MY_MAX_PAYLOAD)
		return server_fail(s, TP_ETOKEN, "unusable secret");
	my_put_header(hdr, login->secret_len + 1, (uint8_t)(st->h.seq + 1));
	tp_conn_out(s, hdr, sizeof(hdr));
	tp_conn_out(s, login->secret, login->secret_len);
	tp_conn_out(s, "", 1);
	st->h.seq++;
	return TP_STEP_MORE;
}

static tp_step_t send_scramble(tp_conn_t *s, const tp_login_t *login)
{
	my_server_t *st = my_server(s);
	uint8_t auth[32], buf[48];
	size_t n = scramble(login, st->plugin, st->nonce, auth);

	if (!n)
		return server_fail(s, TP_ETOKEN, "unusable secret");
	tp_conn_out(s, buf,
		    my_write_packet(buf, sizeof(buf), (uint8_t)(st->h.seq + 1),
				    auth, n));
	st->h.seq++;
	return TP_STEP_MORE;
}

static tp_step_t on_switch(tp_conn_t *s, const tp_login_t *login,
			   const uint8_t *pl, size_t len)
{
	my_server_t *st = my_server(s);
	my_str_t plugin, data;

	if (my_parse_auth_switch(pl, len, &plugin, &data) != 0 ||
	    plugin.len >= sizeof(st->plugin))
		return server_fail(s, TP_EPROTO,
				   "bad authentication switch from server");
	memcpy(st->plugin, plugin.p, plugin.len);
	st->plugin[plugin.len] = 0;
	if (data.len >= MY_NONCE_LEN)
		memcpy(st->nonce, data.p, MY_NONCE_LEN);
	if (strcmp(st->plugin, MY_PLUGIN_CLEAR) == 0 ||
	    strcmp(st->plugin, MY_PLUGIN_DIALOG) == 0)
		return send_clear(s, login);
	if (strcmp(st->plugin, MY_PLUGIN_NATIVE) == 0 ||
	    strcmp(st->plugin, MY_PLUGIN_SHA2) == 0) {
		if (data.len < MY_NONCE_LEN)
			return server_fail(s, TP_EPROTO,
					   "authentication switch without "
					   "a scramble");
		return send_scramble(s, login);
	}
	return server_fail(s, TP_ESERVER_LOGIN,
			   "server asks for unsupported authentication "
			   "plugin %s",
			   st->plugin);
}

/* caching_sha2 full authentication without TLS: the password (with its
 * NUL) XOR the scramble, RSA-OAEP encrypted with the server's key. */
static tp_step_t send_rsa(tp_conn_t *s, const tp_login_t *login,
			  const uint8_t *pem, size_t pem_len)
{
	my_server_t *st = my_server(s);
	BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
	EVP_PKEY *key = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
	EVP_PKEY_CTX *ctx = key ? EVP_PKEY_CTX_new(key, NULL) : NULL;
	uint8_t plain[512], out[1024 + 4];
	size_t n = login->secret_len + 1, outlen = sizeof(out) - 4;
	bool ok = false;

	if (ctx && n <= sizeof(plain) && login->secret) {
		memcpy(plain, login->secret, n - 1);
		plain[n - 1] = 0;
		for (size_t i = 0; i < n; i++)
			plain[i] ^= st->nonce[i % MY_NONCE_LEN];
		ok = EVP_PKEY_encrypt_init(ctx) > 0 &&
		     EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) >
			 0 &&
		     EVP_PKEY_encrypt(ctx, out + 4, &outlen, plain, n) > 0;
		OPENSSL_cleanse(plain, sizeof(plain));
	}
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(key);
	BIO_free(bio);
	if (!ok)
		return server_fail(s, TP_ESERVER_LOGIN,
				   "cannot encrypt the password with the "
				   "server's RSA key");
	my_put_header(out, outlen, (uint8_t)(st->h.seq + 1));
	tp_conn_out(s, out, outlen + 4);
	st->h.seq++;
	return TP_STEP_MORE;
}

static tp_step_t on_more_data(tp_conn_t *s, const tp_login_t *login,
			      const uint8_t *pl, size_t len)
{
	my_server_t *st = my_server(s);
	uint8_t buf[8];

	if (strcmp(st->plugin, MY_PLUGIN_SHA2) != 0 || len < 2)
		return server_fail(s, TP_EPROTO, "unexpected AuthMoreData");
	if (len == 2 && pl[1] == 0x03) /* fast authentication: OK follows */
		return TP_STEP_MORE;
	if (len == 2 && pl[1] == 0x04) { /* full authentication */
		if (tp_conn_tls(s))
			return send_clear(s, login);
		tp_conn_out(s, buf,
			    my_write_packet(buf, sizeof(buf),
					    (uint8_t)(st->h.seq + 1),
					    (const uint8_t *)"\x02", 1));
		st->h.seq++;
		return TP_STEP_MORE;
	}
	return send_rsa(s, login, pl + 1, len - 1); /* the PEM key */
}

/* The server's OK: logged in. Session tracking goes on first. */
static tp_step_t logged_in(tp_conn_t *s, const tp_login_t *login,
			   const uint8_t *pl, size_t len)
{
	my_server_t *st = my_server(s);
	my_ok_t ok;
	char sql[64];

	if (my_parse_ok(pl, len, st->trk.caps, &ok) != 0)
		return server_fail(s, TP_EPROTO, "bad OK packet from server");
	my_track_init(&st->trk, st->trk.caps, ok.status);
	st->charset = MY_CHARSET_DEFAULT;
	st->multi = (st->trk.caps & MY_CAP_MULTI_STMTS) != 0;
	if (!st->cancel)
		my_server_track_on(s, MY_TAG_TRACKING);
	if (st->cancel) {
		const uint8_t *k = login->cancel_key;

		snprintf(sql, sizeof(sql), "KILL QUERY %u",
			 (unsigned)k[0] | ((unsigned)k[1] << 8) |
			     ((unsigned)k[2] << 16) | ((unsigned)k[3] << 24));
		query(s, sql, MY_TAG_MAY);
	}
	st->h.phase = MYS_BATCH;
	return my_track_busy(&st->trk) ? TP_STEP_MORE : batch_done(s);
}

static tp_step_t on_auth_packet(tp_conn_t *s, const tp_login_t *login,
				const uint8_t *pl, size_t len)
{
	my_server_t *st = my_server(s);

	if (len == 0)
		return server_fail(s, TP_EPROTO, "empty packet from server");
	switch (pl[0]) {
	case 0x00:
		return logged_in(s, login, pl, len);
	case 0xff:
		return on_server_error(s, pl, len);
	case 0xfe:
		return on_switch(s, login, pl, len);
	case 0x01:
		return on_more_data(s, login, pl, len);
	default:
		/* MariaDB's dialog plugin asks again (PAM conversations
		 * with several prompts): the same answer. */
		if (strcmp(st->plugin, MY_PLUGIN_DIALOG) == 0 && pl[0] >= 2 &&
		    pl[0] <= 5)
			return send_clear(s, login);
		return server_fail(s, TP_EPROTO,
				   "unexpected packet during login");
	}
}

/* One answer packet of a batch of our own commands. */
static tp_step_t on_batch_packet(tp_conn_t *s, const uint8_t *pkt, size_t n)
{
	my_server_t *st = my_server(s);
	uint8_t tag;
	unsigned ev = my_track_server(&st->trk, pkt, n, n, &tag);
	my_err_t e;

	if (ev & MY_EV_BROKEN)
		return server_fail(s, TP_EPROTO,
				   "unexpected answer from server");
	if ((ev & MY_EV_ERR) && tag == MY_TAG_MUST &&
	    my_parse_err(pkt + MY_HDR, n - MY_HDR, &e) == 0)
		return server_fail(
		    s, TP_ESERVER_LOGIN,
		    "server refused a reset: ERROR %u: %.*s", e.code,
		    (int)(e.message.len > 200 ? 200 : e.message.len),
		    (const char *)e.message.p);
	if ((ev & MY_EV_DONE) && tag == MY_TAG_TRACKING)
		st->tracking = !(ev & MY_EV_ERR);
	if (my_track_busy(&st->trk))
		return TP_STEP_MORE;
	return batch_done(s);
}

/* Every answer of a batch is in. */
static tp_step_t batch_done(tp_conn_t *s)
{
	my_server_t *st = my_server(s);

	if (st->fail_done)
		return server_fail(s, TP_ESERVER_LOGIN,
				   "server cannot be reset for another client");
	if (st->cancel)
		return TP_STEP_CLOSE;
	st->h.phase = MYS_READY;
	st->params[0] = (uint8_t)st->trk.status;
	st->params[1] = (uint8_t)(st->trk.status >> 8);
	return TP_STEP_DONE;
}

tp_step_t my_server_read(tp_conn_t *s, const tp_login_t *login,
			 const uint8_t *buf, size_t len, size_t *consumed)
{
	my_server_t *st = my_server(s);
	tp_step_t step = TP_STEP_MORE;
	size_t n;
	int err;

	*consumed = 0;
	while (step == TP_STEP_MORE) {
		const uint8_t *p = buf + *consumed;

		if (len - *consumed >= MY_HDR &&
		    my_payload_len(p) > MY_MAX_LOGIN)
			return server_fail(s, TP_EPROTO,
					   "packet too large during login");
		err = my_frame(p, len - *consumed, &n);
		if (err == TP_EAGAIN || (!err && n > len - *consumed))
			return step;
		if (err || n - MY_HDR > MY_MAX_LOGIN)
			return server_fail(s, TP_EPROTO,
					   "packet too large during login");
		*consumed += n;
		st->h.seq = p[3];
		switch (st->h.phase) {
		case MYS_GREETING:
			step = on_greeting(s, login, p + MY_HDR, n - MY_HDR);
			break;
		case MYS_AUTH:
			step = on_auth_packet(s, login, p + MY_HDR, n - MY_HDR);
			break;
		case MYS_BATCH:
			step = on_batch_packet(s, p, n);
			break;
		default:
			step = server_fail(s, TP_EPROTO,
					   "unexpected packet from server");
		}
	}
	return step;
}
