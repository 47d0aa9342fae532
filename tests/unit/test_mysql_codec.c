/*
 * test_mysql_codec.c - unit tests for the MySQL wire codec: framing,
 * length-encoded values, login packets, OK / ERR / EOF, session tracking
 * data, COM_CHANGE_USER, KILL and the session-state SQL heuristic.
 *
 * The parsers get real packets, captured from MariaDB 10.11 and from the
 * mariadb CLI (libmariadb 3.3), PyMySQL 1.0.2 and node mysql2 3.x logging
 * in to it, plus malformed variants: every truncation of each real packet
 * must parse or fail cleanly. Writers are round-tripped through the
 * parsers and called with every cap below what they need, into a buffer
 * with a canary past cap.
 *
 * Not here: the response tracker (test_mysql_track.c), ops.c.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/mysql/mysql.h"
#include "tests/unit/tp_test.h"

/* Hex text to bytes; returns the length. */
static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
	size_t n = 0;

	while (h[0] && h[1] && n < cap) {
		unsigned v;

		sscanf(h, "%2x", &v);
		out[n++] = (uint8_t)v;
		h += 2;
	}
	return n;
}

static bool str_is(my_str_t s, const char *lit)
{
	return my_str_eq(s, lit);
}

/* MariaDB 10.11 greeting (whole packet, header included). */
static const char mariadb_greeting[] =
    "640000000a352e352e352d31302e31312e31392d4d6172696144422d302b64656231"
    "327531000500000"
    "03e2c61273a307e5000feff080200ff81150000000000001d00"
    "0000522b7c526525252c4c793f6d006d7973716c5f6e61746976655f70617373776f"
    "726400";

/* mariadb CLI 10.11: user nat, db appdb, attrs, MariaDB extended caps. */
static const char cli_login[] =
    "d50000018ca2bf000000100021000000000000000000000000000000000000001d00"
    "00006e61740014b833c470faf37401710605435e907042743866216170706462006d"
    "7973716c5f6e61746976655f70617373776f7264007f035f6f73054c696e75780c5f"
    "636c69656e745f6e616d650a6c69626d617269616462045f7069640531353335370f"
    "5f636c69656e745f76657273696f6e06332e332e3230095f706c6174666f726d0678"
    "38365f36340c70726f6772616d5f6e616d65056d7973716c0c5f7365727665725f68"
    "6f7374093132372e302e302e31";

/* PyMySQL 1.0.2 */
static const char pymysql_login[] =
    "8c0000010da23a00ffffff002d000000000000000000000000000000000000000000"
    "00006e61740014dabed4ed5bafe359be396160bf36921f9e4ec0606170706462006d"
    "7973716c5f6e61746976655f70617373776f726400360c5f636c69656e745f6e616d"
    "650770796d7973716c045f7069640531353336310f5f636c69656e745f7665727369"
    "6f6e05312e302e32";

/* node mysql2 3.x */
static const char mysql2_login[] =
    "87000001cef3ba0800000000e000000000000000000000000000000000000000080000"
    "006e617400142f406f49902603bb1ad573b13e39e40c7d091eca6170706462006d79"
    "73716c5f6e61746976655f70617373776f726400310c5f636c69656e745f6e616d65"
    "0c4e6f64652d4d7953514c2d320f5f636c69656e745f76657273696f6e06332e3234"
    "2e36";

/* What the greetings of ops.c offer; the layout of a login follows
 * caps & offered. */
#define OFFERED                                                             \
	(MY_CAP_LONG_PASSWORD | MY_CAP_LONG_FLAG | MY_CAP_CONNECT_WITH_DB | \
	 MY_CAP_LOCAL_FILES | MY_CAP_PROTOCOL_41 | MY_CAP_SSL |             \
	 MY_CAP_TRANSACTIONS | MY_CAP_SECURE_CONN | MY_CAP_MULTI_STMTS |    \
	 MY_CAP_MULTI_RESULTS | MY_CAP_PS_MULTI_RES | MY_CAP_PLUGIN_AUTH |  \
	 MY_CAP_CONNECT_ATTRS | MY_CAP_AUTH_LENENC | MY_CAP_SESSION_TRACK)

/* ---- framing ---- */

static void test_frame(void)
{
	uint8_t b[8] = {3, 0, 0, 0, 0x0e, 0, 0, 0};
	size_t n = 0;

	for (size_t len = 0; len < 5; len++)
		CHECK_EQ_INT(my_frame(b, len, &n), TP_EAGAIN);
	CHECK_EQ_INT(my_frame(b, 5, &n), 0);
	CHECK_EQ_INT(n, 7);
	/* an empty payload needs no first byte */
	memset(b, 0, 4);
	CHECK_EQ_INT(my_frame(b, 4, &n), 0);
	CHECK_EQ_INT(n, 4);
	b[0] = b[1] = b[2] = 0xff;
	b[3] = 7;
	CHECK_EQ_INT(my_frame(b, 5, &n), 0);
	CHECK_EQ_INT(n, 0xffffff + 4);
	CHECK_EQ_INT(my_payload_len(b), 0xffffff);
	my_put_header(b, 0x123456, 9);
	CHECK(b[0] == 0x56 && b[1] == 0x34 && b[2] == 0x12 && b[3] == 9);
}

/* ---- length-encoded values ---- */

static void test_lenenc_round_trip(void)
{
	static const uint64_t vals[] = {
	    0, 1, 250, 251, 0xffff, 0x10000, 0xffffff, 0x1000000, UINT64_MAX};
	static const size_t sizes[] = {1, 1, 1, 3, 3, 4, 4, 9, 9};

	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		uint8_t buf[16];
		uint64_t v = 1;
		size_t n = my_put_lenenc(buf, sizeof(buf), vals[i]), pos = 0;

		CHECK_EQ_INT(n, sizes[i]);
		CHECK_EQ_INT(my_lenenc_size(vals[i]), sizes[i]);
		CHECK_EQ_INT(my_get_lenenc(buf, n, &pos, &v), 0);
		CHECK(v == vals[i]);
		CHECK_EQ_INT(pos, n);
		/* every truncation fails, and a cap too small writes 0 */
		for (size_t cut = 0; cut < n; cut++) {
			pos = 0;
			CHECK_EQ_INT(my_get_lenenc(buf, cut, &pos, &v),
				     TP_EPROTO);
			CHECK_EQ_INT(pos, 0);
			CHECK_EQ_INT(my_put_lenenc(buf, cut, vals[i]), 0);
		}
	}
}

static void test_lenenc_markers(void)
{
	uint8_t nul[1] = {0xfb}, err[1] = {0xff};
	uint8_t s[4] = {3, 'a', 'b', 'c'};
	size_t pos = 0;
	uint64_t v;
	my_str_t str;

	CHECK_EQ_INT(my_get_lenenc(nul, 1, &pos, &v), TP_EPROTO);
	CHECK_EQ_INT(my_get_lenenc(err, 1, &pos, &v), TP_EPROTO);
	CHECK_EQ_INT(my_get_lenenc_str(s, 4, &pos, &str), 0);
	CHECK(str_is(str, "abc"));
	CHECK_EQ_INT(pos, 4);
	pos = 0;
	CHECK_EQ_INT(my_get_lenenc_str(s, 3, &pos, &str), TP_EPROTO);
	/* a length near 2^64 must not wrap the bounds check */
	{
		uint8_t big[12] = {0xfe, 0xff, 0xff, 0xff, 0xff,
				   0xff, 0xff, 0xff, 0xff, 'x'};
		pos = 0;
		CHECK_EQ_INT(my_get_lenenc_str(big, 10, &pos, &str), TP_EPROTO);
	}
}

/* ---- HandshakeV10 ---- */

static void test_greeting_parse_mariadb(void)
{
	uint8_t b[256];
	size_t n = unhex(mariadb_greeting, b, sizeof(b));
	my_greeting_t g;

	CHECK_EQ_INT(my_payload_len(b), n - 4);
	CHECK_EQ_INT(my_parse_greeting(b + 4, n - 4, &g), 0);
	CHECK(str_is(g.version, "5.5.5-10.11.19-MariaDB-0+deb12u1"));
	CHECK_EQ_INT(g.thread_id, 5);
	CHECK_EQ_INT(g.nonce_len, 20);
	CHECK(memcmp(g.nonce, ">,a':0~P", 8) == 0);
	CHECK(memcmp(g.nonce + 8, "R+|Re%%,Ly?m", 12) == 0);
	CHECK_EQ_INT(g.charset, 8);
	CHECK_EQ_INT(g.status, MY_ST_AUTOCOMMIT);
	CHECK(!(g.caps & MY_CAP_LONG_PASSWORD)); /* MariaDB */
	CHECK(g.caps & MY_CAP_PROTOCOL_41);
	CHECK(g.caps & MY_CAP_SSL);
	CHECK(g.caps & MY_CAP_SESSION_TRACK);
	CHECK(g.caps & MY_CAP_DEPRECATE_EOF);
	CHECK_EQ_INT(g.caps >> 32, 0x1d);
	CHECK(str_is(g.plugin, "mysql_native_password"));
}

static void test_greeting_truncated(void)
{
	uint8_t b[256];
	size_t n = unhex(mariadb_greeting, b, sizeof(b)) - 4;

	for (size_t cut = 0; cut < n; cut++) {
		uint8_t *copy = malloc(cut ? cut : 1);
		my_greeting_t g;
		int rc;

		memcpy(copy, b + 4, cut);
		rc = my_parse_greeting(copy, cut, &g);
		/* 48 bytes: an old server's greeting ends after the low
		 * capabilities (49 bytes here); from the plugin name on, a
		 * missing NUL is tolerated (some servers leave it out). */
		CHECK(rc == TP_EPROTO || cut == 49 || cut >= 78);
		free(copy);
	}
}

static void test_greeting_write(void)
{
	uint8_t nonce[20], buf[128], small[128];
	uint64_t caps = OFFERED;
	my_greeting_t g;
	size_t n;

	for (int i = 0; i < 20; i++)
		nonce[i] = (uint8_t)('A' + i);
	n = my_write_greeting(buf, sizeof(buf), 0, "8.0.36-tokenpool",
			      0xdeadbeef, nonce, caps, 45, MY_ST_AUTOCOMMIT,
			      "mysql_native_password");
	CHECK(n > 4);
	CHECK_EQ_INT(my_payload_len(buf), n - 4);
	CHECK_EQ_INT(buf[3], 0);
	CHECK_EQ_INT(my_parse_greeting(buf + 4, n - 4, &g), 0);
	CHECK(str_is(g.version, "8.0.36-tokenpool"));
	CHECK(g.thread_id == 0xdeadbeef);
	CHECK_EQ_INT(g.nonce_len, 20);
	CHECK(memcmp(g.nonce, nonce, 20) == 0);
	CHECK(g.caps == caps);
	CHECK_EQ_INT(g.charset, 45);
	CHECK_EQ_INT(g.status, MY_ST_AUTOCOMMIT);
	CHECK(str_is(g.plugin, "mysql_native_password"));
	for (size_t cap = 0; cap < n; cap++) {
		memset(small, 0xa5, sizeof(small));
		CHECK_EQ_INT(my_write_greeting(
				 small, cap, 0, "8.0.36-tokenpool", 1, nonce,
				 caps, 45, 2, "mysql_native_password"),
			     0);
		CHECK(small[cap] == 0xa5);
	}
	/* MariaDB style: extended capabilities in the reserved bytes */
	caps = (OFFERED & ~MY_CAP_LONG_PASSWORD) | MY_CAP_MARIADB_BULK;
	n = my_write_greeting(buf, sizeof(buf), 0, "5.5.5-10.11.0-MariaDB", 7,
			      nonce, caps, 8, 2, "mysql_native_password");
	CHECK_EQ_INT(my_parse_greeting(buf + 4, n - 4, &g), 0);
	CHECK(g.caps == caps);
	/* a NUL inside the nonce would cut it short in C clients */
	nonce[3] = 0;
	CHECK_EQ_INT(my_write_greeting(buf, sizeof(buf), 0, "x", 1, nonce, caps,
				       8, 2, "p"),
		     0);
}

/* ---- HandshakeResponse41 ---- */

static void test_login_parse_cli(void)
{
	uint8_t b[512];
	size_t n = unhex(cli_login, b, sizeof(b));
	my_login_t l;

	CHECK_EQ_INT(b[3], 1);
	CHECK_EQ_INT(my_parse_login(b + 4, n - 4, OFFERED, &l), 0);
	CHECK(!l.ssl_request);
	CHECK(str_is(l.user, "nat"));
	CHECK_EQ_INT(l.auth.len, 20);
	CHECK(str_is(l.database, "appdb"));
	CHECK(str_is(l.plugin, "mysql_native_password"));
	CHECK_EQ_INT(l.attrs.len, 0x7f);
	CHECK_EQ_INT(l.charset, 33);
	CHECK(l.caps & MY_CAP_SESSION_TRACK);
	CHECK(l.caps & MY_CAP_MULTI_STMTS);
	CHECK(!(l.caps & MY_CAP_LONG_PASSWORD));
	CHECK_EQ_INT(l.caps >> 32, 0x1d); /* MariaDB extended caps */
	CHECK_EQ_INT(l.max_packet, 0x100000);
}

static void test_login_parse_pymysql_mysql2(void)
{
	uint8_t b[512];
	size_t n = unhex(pymysql_login, b, sizeof(b));
	my_login_t l;

	CHECK_EQ_INT(my_parse_login(b + 4, n - 4, OFFERED, &l), 0);
	CHECK(str_is(l.user, "nat"));
	CHECK_EQ_INT(l.auth.len, 20);
	CHECK(str_is(l.database, "appdb"));
	CHECK(str_is(l.plugin, "mysql_native_password"));
	CHECK_EQ_INT(l.charset, 45);
	CHECK(!(l.caps & MY_CAP_SESSION_TRACK));
	CHECK(!(l.caps & MY_CAP_MULTI_STMTS));
	CHECK_EQ_INT(l.caps >> 32, 0);

	n = unhex(mysql2_login, b, sizeof(b));
	CHECK_EQ_INT(my_parse_login(b + 4, n - 4, OFFERED, &l), 0);
	CHECK(str_is(l.user, "nat"));
	CHECK_EQ_INT(l.auth.len, 20);
	CHECK(str_is(l.database, "appdb"));
	CHECK_EQ_INT(l.charset, 224);
	CHECK_EQ_INT(l.attrs.len, 0x31);
}

static void test_login_truncated(void)
{
	const char *const logins[] = {cli_login, pymysql_login, mysql2_login};

	for (size_t k = 0; k < 3; k++) {
		uint8_t b[512];
		size_t n = unhex(logins[k], b, sizeof(b)) - 4;

		for (size_t cut = 0; cut < n; cut++) {
			uint8_t *copy = malloc(cut ? cut : 1);
			my_login_t l;
			int rc;

			memcpy(copy, b + 4, cut);
			rc = my_parse_login(copy, cut, OFFERED, &l);
			CHECK(rc == 0 || rc == TP_EPROTO);
			if (rc == 0 && !l.ssl_request) {
				CHECK(l.user.p >= copy &&
				      l.user.p + l.user.len <= copy + cut);
				CHECK(!l.auth.len ||
				      (l.auth.p >= copy &&
				       l.auth.p + l.auth.len <= copy + cut));
			}
			free(copy);
		}
	}
}

static void test_login_ssl_request(void)
{
	uint8_t pl[32] = {0};
	my_login_t l;

	pl[0] = 0x00;
	pl[1] = 0x0a; /* PROTOCOL_41 | SSL */
	pl[8] = 45;
	CHECK_EQ_INT(my_parse_login(pl, 32, OFFERED, &l), 0);
	CHECK(l.ssl_request);
	/* 32 bytes without the SSL bit: a response without a user */
	pl[1] = 0x02;
	CHECK_EQ_INT(my_parse_login(pl, 32, OFFERED, &l), TP_EPROTO);
	/* pre-4.1 */
	pl[1] = 0x08;
	CHECK_EQ_INT(my_parse_login(pl, 32, OFFERED, &l), TP_EPROTO);
}

static void test_login_malformed(void)
{
	uint8_t pl[64] = {0};
	my_login_t l;

	/* caps: PROTOCOL_41, SECURE_CONNECTION, CONNECT_WITH_DB */
	pl[0] = 0x08;
	pl[1] = 0x82;
	memcpy(pl + 32, "bob\0", 4);
	pl[36] = 20; /* auth length beyond the end */
	CHECK_EQ_INT(my_parse_login(pl, 40, OFFERED, &l), TP_EPROTO);
	pl[36] = 3;
	memcpy(pl + 37, "abc", 3);
	memcpy(pl + 40, "db", 2); /* database without its NUL */
	CHECK_EQ_INT(my_parse_login(pl, 42, OFFERED, &l), TP_EPROTO);
	pl[42] = 0;
	CHECK_EQ_INT(my_parse_login(pl, 43, OFFERED, &l), 0);
	CHECK(str_is(l.database, "db"));
	CHECK(str_is(l.auth, "abc"));
	/* the user without a NUL */
	memset(pl + 32, 'x', 32);
	CHECK_EQ_INT(my_parse_login(pl, 64, OFFERED, &l), TP_EPROTO);
}

static void test_login_write_round_trip(void)
{
	static uint8_t token[3000];
	uint8_t *buf = malloc(4096), *small = malloc(4096);
	my_login_t in = {0}, out;
	size_t n;

	memset(token, 'T', sizeof(token));
	in.caps = OFFERED;
	in.max_packet = 1 << 24;
	in.charset = 45;
	in.user.p = (const uint8_t *)"orders-app";
	in.user.len = 10;
	in.auth.p = token;
	in.auth.len = sizeof(token);
	in.database.p = (const uint8_t *)"orders";
	in.database.len = 6;
	in.plugin.p = (const uint8_t *)"mysql_clear_password";
	in.plugin.len = 20;
	in.attrs.p = (const uint8_t *)"\x0c_client_name\x09tokenpool";
	in.attrs.len = 23;
	n = my_write_login(buf, 4096, 2, &in);
	CHECK(n > 3000);
	CHECK_EQ_INT(buf[3], 2);
	CHECK_EQ_INT(my_parse_login(buf + 4, n - 4, OFFERED, &out), 0);
	CHECK(out.caps == in.caps);
	CHECK_EQ_INT(out.charset, 45);
	CHECK(str_is(out.user, "orders-app"));
	CHECK_EQ_INT(out.auth.len, sizeof(token));
	CHECK(memcmp(out.auth.p, token, sizeof(token)) == 0);
	CHECK(str_is(out.database, "orders"));
	CHECK(str_is(out.plugin, "mysql_clear_password"));
	CHECK_EQ_INT(out.attrs.len, 23);
	for (size_t cap = 0; cap < n; cap += (cap < 64 ? 1 : 97)) {
		memset(small, 0xa5, 4096);
		CHECK_EQ_INT(my_write_login(small, cap, 2, &in), 0);
		CHECK(small[cap] == 0xa5);
	}
	/* without lenenc auth data a long secret cannot be written */
	in.caps &= ~MY_CAP_AUTH_LENENC;
	CHECK_EQ_INT(my_write_login(buf, 4096, 2, &in), 0);
	in.auth.len = 20;
	n = my_write_login(buf, 4096, 2, &in);
	CHECK_EQ_INT(my_parse_login(buf + 4, n - 4, OFFERED, &out), 0);
	CHECK_EQ_INT(out.auth.len, 20);
	/* SSLRequest: the 32-byte prefix */
	in.caps |= MY_CAP_SSL;
	in.ssl_request = true;
	n = my_write_login(buf, 4096, 1, &in);
	CHECK_EQ_INT(n, 36);
	CHECK_EQ_INT(my_parse_login(buf + 4, 32, OFFERED, &out), 0);
	CHECK(out.ssl_request);
	free(buf);
	free(small);
}

/* ---- auth switch, more data ---- */

static void test_auth_switch(void)
{
	uint8_t buf[64], small[64];
	my_str_t plugin, data;
	size_t n = my_write_auth_switch(buf, sizeof(buf), 3,
					"mysql_clear_password", NULL, 0);

	CHECK_EQ_INT(n, 4 + 1 + 21);
	CHECK_EQ_INT(my_parse_auth_switch(buf + 4, n - 4, &plugin, &data), 0);
	CHECK(str_is(plugin, "mysql_clear_password"));
	CHECK_EQ_INT(data.len, 0);
	n = my_write_auth_switch(buf, sizeof(buf), 3, "mysql_native_password",
				 (const uint8_t *)"01234567890123456789", 21);
	CHECK_EQ_INT(my_parse_auth_switch(buf + 4, n - 4, &plugin, &data), 0);
	CHECK(str_is(plugin, "mysql_native_password"));
	CHECK_EQ_INT(data.len, 21);
	CHECK_EQ_INT(data.p[20], 0);
	n = my_write_auth_switch(buf, sizeof(buf), 3, "x",
				 (const uint8_t *)"ab", 2);
	CHECK_EQ_INT(n, 4 + 1 + 2 + 2);
	for (size_t cap = 0; cap < n; cap++) {
		memset(small, 0xa5, sizeof(small));
		CHECK_EQ_INT(my_write_auth_switch(small, cap, 3, "x",
						  (const uint8_t *)"ab", 2),
			     0);
		CHECK(small[cap] == 0xa5);
	}
	/* the pre-4.1 lone 0xFE, an empty plugin name, a wrong header */
	CHECK_EQ_INT(
	    my_parse_auth_switch((const uint8_t *)"\xfe", 1, &plugin, &data),
	    TP_EPROTO);
	CHECK_EQ_INT(
	    my_parse_auth_switch((const uint8_t *)"\xfe\0x", 3, &plugin, &data),
	    TP_EPROTO);
	CHECK_EQ_INT(
	    my_parse_auth_switch((const uint8_t *)"\x01x\0", 3, &plugin, &data),
	    TP_EPROTO);
	n = my_write_more_data(buf, sizeof(buf), 4, (const uint8_t *)"\x03", 1);
	CHECK_EQ_INT(n, 6);
	CHECK(memcmp(buf, "\x02\x00\x00\x04\x01\x03", 6) == 0);
}

/* ---- OK, ERR, EOF ---- */

static void test_ok_parse_real(void)
{
	uint8_t b[64];
	size_t n = unhex("0000000240000000080106056170706462", b, sizeof(b));
	my_ok_t ok;
	my_session_info_t si;

	CHECK_EQ_INT(my_parse_ok(b, n, OFFERED, &ok), 0);
	CHECK_EQ_INT(ok.status, MY_ST_AUTOCOMMIT | MY_ST_STATE_CHANGED);
	CHECK_EQ_INT(ok.info.len, 0);
	CHECK_EQ_INT(ok.session.len, 8);
	CHECK_EQ_INT(my_parse_session(ok.session, &si), 0);
	CHECK(si.schema_changed);
	CHECK(str_is(si.schema, "appdb"));
	CHECK(!si.state_changed && !si.sysvars_changed);
	/* read without SESSION_TRACK: the rest is info */
	CHECK_EQ_INT(my_parse_ok(b, n, MY_CAP_PROTOCOL_41, &ok), 0);
	CHECK_EQ_INT(ok.info.len, 10);
	CHECK(!ok.session.p);
	/* every truncation fails or parses inside the buffer */
	for (size_t cut = 0; cut < n; cut++) {
		int rc = my_parse_ok(b, cut, OFFERED, &ok);

		CHECK(rc == 0 || rc == TP_EPROTO);
		CHECK(rc != 0 || cut >= 7);
	}
}

static void test_ok_write(void)
{
	uint8_t buf[128], small[128];
	my_ok_t in = {0}, out;
	size_t n;

	in.affected_rows = 300;
	in.last_insert_id = 70000;
	in.status = MY_ST_AUTOCOMMIT | MY_ST_STATE_CHANGED;
	in.warnings = 2;
	in.info.p = (const uint8_t *)"Rows matched: 1";
	in.info.len = 15;
	in.session.p = (const uint8_t *)"\x02\x02\x01\x31";
	in.session.len = 4;
	n = my_write_ok(buf, sizeof(buf), 1, OFFERED, &in);
	CHECK(n > 4);
	CHECK_EQ_INT(my_parse_ok(buf + 4, n - 4, OFFERED, &out), 0);
	CHECK(out.affected_rows == 300 && out.last_insert_id == 70000);
	CHECK_EQ_INT(out.status, in.status);
	CHECK_EQ_INT(out.warnings, 2);
	CHECK(str_is(out.info, "Rows matched: 1"));
	CHECK_EQ_INT(out.session.len, 4);
	for (size_t cap = 0; cap < n; cap++) {
		memset(small, 0xa5, sizeof(small));
		CHECK_EQ_INT(my_write_ok(small, cap, 1, OFFERED, &in), 0);
		CHECK(small[cap] == 0xa5);
	}
	/* without SESSION_TRACK: info as the rest, no session block */
	n = my_write_ok(buf, sizeof(buf), 1, MY_CAP_PROTOCOL_41, &in);
	CHECK_EQ_INT(my_parse_ok(buf + 4, n - 4, MY_CAP_PROTOCOL_41, &out), 0);
	CHECK(str_is(out.info, "Rows matched: 1"));
	/* the smallest OK: 7 bytes of payload */
	memset(&in, 0, sizeof(in));
	in.status = MY_ST_AUTOCOMMIT;
	n = my_write_ok(buf, sizeof(buf), 2, OFFERED, &in);
	CHECK_EQ_INT(n, 11);
	CHECK(memcmp(buf, "\x07\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00", 11) ==
	      0);
	/* an OK with the 0xFE header (DEPRECATE_EOF) */
	buf[4] = 0xfe;
	CHECK_EQ_INT(my_parse_ok(buf + 4, 7, OFFERED, &out), 0);
}

static void test_err(void)
{
	uint8_t buf[1024], small[64];
	my_err_t e;
	char big[700];
	size_t n = my_write_err(buf, sizeof(buf), 2, 1045, "28000",
				"Access denied for user 'x'");

	CHECK_EQ_INT(my_parse_err(buf + 4, n - 4, &e), 0);
	CHECK_EQ_INT(e.code, 1045);
	CHECK_EQ_STR(e.sqlstate, "28000");
	CHECK(str_is(e.message, "Access denied for user 'x'"));
	for (size_t cap = 0; cap < 13; cap++) {
		memset(small, 0xa5, sizeof(small));
		CHECK_EQ_INT(my_write_err(small, cap, 2, 1, "HY000", "m"), 0);
		CHECK(small[cap] == 0xa5);
	}
	/* before the handshake (MySQL's "Too many connections"): no state */
	CHECK_EQ_INT(
	    my_parse_err((const uint8_t *)"\xff\x10\x04Too many", 11, &e), 0);
	CHECK_EQ_INT(e.code, 1040);
	CHECK_EQ_STR(e.sqlstate, "");
	CHECK(str_is(e.message, "Too many"));
	CHECK_EQ_INT(my_parse_err((const uint8_t *)"\xff\x10", 2, &e),
		     TP_EPROTO);
	/* long messages are cut, a bad SQLSTATE refused */
	memset(big, 'm', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	n = my_write_err(buf, sizeof(buf), 2, 2013, "HY000", big);
	CHECK_EQ_INT(n, 4 + 9 + 512);
	CHECK_EQ_INT(my_write_err(buf, sizeof(buf), 2, 1, "HY00", "m"), 0);
}

static void test_eof(void)
{
	uint8_t buf[16];
	uint16_t w = 1, s = 1;
	size_t n = my_write_eof(buf, sizeof(buf), 5, 3, MY_ST_MORE_RESULTS);

	CHECK_EQ_INT(n, 9);
	CHECK(my_is_eof(buf + 4, 5));
	CHECK_EQ_INT(my_parse_eof(buf + 4, 5, &w, &s), 0);
	CHECK_EQ_INT(w, 3);
	CHECK_EQ_INT(s, MY_ST_MORE_RESULTS);
	CHECK_EQ_INT(my_parse_eof(buf + 4, 1, &w, &s), 0);
	CHECK_EQ_INT(s, 0);
	CHECK_EQ_INT(my_parse_eof(buf + 4, 3, &w, &s), TP_EPROTO);
	/* nine bytes or more starting with 0xFE is a row, not an EOF */
	memset(buf, 0xfe, 9);
	CHECK(!my_is_eof(buf, 9));
	CHECK(my_is_eof(buf, 8));
	CHECK_EQ_INT(my_write_eof(buf, 8, 5, 0, 0), 0);
}

static void test_status_idle(void)
{
	CHECK(my_status_idle(MY_ST_AUTOCOMMIT));
	CHECK(my_status_idle(MY_ST_AUTOCOMMIT | MY_ST_STATE_CHANGED));
	CHECK(!my_status_idle(MY_ST_AUTOCOMMIT | MY_ST_IN_TRANS));
	CHECK(!my_status_idle(MY_ST_AUTOCOMMIT | MY_ST_MORE_RESULTS));
	CHECK(!my_status_idle(0)); /* autocommit off */
}

/* ---- session tracking ---- */

static void test_session(void)
{
	/* sysvar autocommit=OFF, state change "1" (the flag without an inner
	 * length, as MariaDB and MySQL send it), GTIDs */
	static const uint8_t blk[] = {0x00, 0x0f, 0x0a, 'a',  'u',  't',
				      'o',  'c',  'o',	'm',  'm',  'i',
				      't',  0x03, 'O',	'F',  'F',  0x02,
				      0x01, '1',  0x03, 0x02, 0x00, 0x00};
	my_str_t b = {blk, sizeof(blk)}, data;
	my_session_info_t si;
	size_t pos = 0;
	uint8_t type;

	CHECK_EQ_INT(my_session_next(b, &pos, &type, &data), 0);
	CHECK_EQ_INT(type, MY_SESSION_SYSVARS);
	CHECK_EQ_INT(data.len, 15);
	CHECK_EQ_INT(my_parse_session(b, &si), 0);
	CHECK(si.sysvars_changed && si.state_changed && !si.schema_changed);
	b.len = sizeof(blk) - 1;
	CHECK_EQ_INT(my_parse_session(b, &si), TP_EPROTO);
	/* state change "0" is not a change; a schema entry whose inner
	 * length runs past it fails */
	{
		static const uint8_t zero[] = {0x02, 0x01, '0'};
		static const uint8_t bad[] = {0x01, 0x02, 0x05, 'x'};
		my_str_t z = {zero, sizeof(zero)}, x = {bad, sizeof(bad)};

		CHECK_EQ_INT(my_parse_session(z, &si), 0);
		CHECK(!si.state_changed);
		CHECK_EQ_INT(my_parse_session(x, &si), TP_EPROTO);
	}
}

/* MariaDB's OK for `USE otherdb` with session_track_state_change on:
 * the schema entry (a name with its own length) and the state flag. */
static void test_ok_session_real(void)
{
	uint8_t b[128];
	size_t n =
	    unhex("00000002400000000d0108076f746865726462020131", b, sizeof(b));
	my_ok_t ok;
	my_session_info_t si;

	CHECK_EQ_INT(my_parse_ok(b, n, OFFERED, &ok), 0);
	CHECK_EQ_INT(my_parse_session(ok.session, &si), 0);
	CHECK(si.schema_changed && si.state_changed && !si.sysvars_changed);
	CHECK(str_is(si.schema, "otherdb"));
	/* its OK for SET character_set_client = 45, ... */
	n = unhex("000000024000000042001d146368617261637465725f7365745f636c69"
		  "656e7407757466386d6234001e156368617261637465725f7365745f72"
		  "6573756c747307757466386d6234020131",
		  b, sizeof(b));
	CHECK_EQ_INT(my_parse_ok(b, n, OFFERED, &ok), 0);
	CHECK_EQ_INT(my_parse_session(ok.session, &si), 0);
	CHECK(si.sysvars_changed && si.state_changed && !si.schema_changed);
}

/* ---- COM_CHANGE_USER ---- */

static void test_change_user(void)
{
	uint8_t pl[128];
	size_t n = 0;
	my_change_user_t cu;

	pl[n++] = MY_COM_CHANGE_USER;
	memcpy(pl + n, "app\0", 4);
	n += 4;
	pl[n++] = 20;
	memset(pl + n, 0x11, 20);
	n += 20;
	memcpy(pl + n, "orders\0", 7);
	n += 7;
	pl[n++] = 45;
	pl[n++] = 0;
	memcpy(pl + n, "mysql_native_password\0", 22);
	n += 22;
	CHECK_EQ_INT(my_parse_change_user(pl, n, OFFERED, &cu), 0);
	CHECK(str_is(cu.user, "app"));
	CHECK_EQ_INT(cu.auth.len, 20);
	CHECK(str_is(cu.database, "orders"));
	CHECK_EQ_INT(cu.charset, 45);
	CHECK(str_is(cu.plugin, "mysql_native_password"));
	for (size_t cut = 0; cut < n; cut++) {
		int rc = my_parse_change_user(pl, cut, OFFERED, &cu);

		CHECK(rc == 0 || rc == TP_EPROTO);
	}
	pl[5] = 200; /* auth length past the end */
	CHECK_EQ_INT(my_parse_change_user(pl, n, OFFERED, &cu), TP_EPROTO);
}

static void test_command_reply(void)
{
	CHECK_EQ_INT(my_command_reply(MY_COM_QUIT), MY_REPLY_CLOSE);
	CHECK_EQ_INT(my_command_reply(MY_COM_QUERY), MY_REPLY_RESULT);
	CHECK_EQ_INT(my_command_reply(MY_COM_STMT_EXECUTE), MY_REPLY_RESULT);
	CHECK_EQ_INT(my_command_reply(MY_COM_STMT_PREPARE), MY_REPLY_PREPARE);
	CHECK_EQ_INT(my_command_reply(MY_COM_STMT_CLOSE), MY_REPLY_NONE);
	CHECK_EQ_INT(my_command_reply(MY_COM_STMT_SEND_LONG_DATA),
		     MY_REPLY_NONE);
	CHECK_EQ_INT(my_command_reply(MY_COM_PING), MY_REPLY_OK);
	CHECK_EQ_INT(my_command_reply(MY_COM_SET_OPTION), MY_REPLY_OK);
	CHECK_EQ_INT(my_command_reply(MY_COM_RESET_CONNECTION), MY_REPLY_OK);
	CHECK_EQ_INT(my_command_reply(MY_COM_FIELD_LIST), MY_REPLY_FIELDS);
	CHECK_EQ_INT(my_command_reply(MY_COM_STATISTICS), MY_REPLY_TEXT);
	CHECK_EQ_INT(my_command_reply(MY_COM_STMT_FETCH), MY_REPLY_FETCH);
	CHECK_EQ_INT(my_command_reply(MY_COM_BINLOG_DUMP), MY_REPLY_STREAM);
	CHECK_EQ_INT(my_command_reply(0x99), MY_REPLY_OK);
}

/* ---- SQL ---- */

static int kill_of(const char *sql, bool *q, uint64_t *id)
{
	return my_parse_kill(sql, strlen(sql), q, id);
}

static void test_kill(void)
{
	bool q;
	uint64_t id = 0;

	CHECK_EQ_INT(kill_of("KILL QUERY 42", &q, &id), 0);
	CHECK(q && id == 42);
	CHECK_EQ_INT(kill_of("  kill 4294967295 ;", &q, &id), 0);
	CHECK(!q && id == 4294967295u);
	CHECK_EQ_INT(kill_of("/* x */ KILL CONNECTION 7", &q, &id), 0);
	CHECK(!q && id == 7);
	CHECK_EQ_INT(kill_of("KILL HARD QUERY 9", &q, &id), 0);
	CHECK(q && id == 9);
	CHECK_EQ_INT(kill_of("KILL USER app", &q, &id), TP_EPROTO);
	CHECK_EQ_INT(kill_of("KILL QUERY ID 5", &q, &id), TP_EPROTO);
	CHECK_EQ_INT(kill_of("KILL 5 6", &q, &id), TP_EPROTO);
	CHECK_EQ_INT(kill_of("KILL 99999999999999999999999", &q, &id),
		     TP_EPROTO);
	CHECK_EQ_INT(kill_of("SELECT 1", &q, &id), TP_EINVAL);
	CHECK_EQ_INT(kill_of("KILLER 5", &q, &id), TP_EINVAL);
	CHECK_EQ_INT(kill_of("", &q, &id), TP_EINVAL);
}

static bool pins(const char *sql)
{
	return my_sql_pins(sql, strlen(sql));
}

static void test_sql_pins(void)
{
	CHECK(pins("SET @x = 1"));
	CHECK(pins("set session sql_mode=''"));
	CHECK(pins("SET NAMES utf8mb4"));
	CHECK(pins("SET autocommit=0"));
	CHECK(pins("SELECT @a := 5"));
	CHECK(pins("select 1 into @v"));
	CHECK(pins("SELECT x INTO\n @`my var` FROM t"));
	CHECK(pins("CREATE TEMPORARY TABLE t (a int)"));
	CHECK(pins("create or replace temporary table t (a int)"));
	CHECK(pins("LOCK TABLES t WRITE"));
	CHECK(pins("SELECT GET_LOCK('a', 10)"));
	CHECK(pins("FLUSH TABLES WITH READ LOCK"));
	CHECK(pins("PREPARE s FROM 'SELECT 1'"));
	CHECK(pins("USE orders"));
	CHECK(pins("HANDLER t OPEN"));
	CHECK(pins("XA START 'x'"));
	CHECK(pins("SELECT SQL_CALC_FOUND_ROWS * FROM t"));
	CHECK(pins("SELECT 1; SET @x = 2"));
	CHECK(pins("/* c */ SET @x = 1"));
	CHECK(pins("# c\nSET @x = 1"));
	CHECK(pins("-- c\nSET @x = 1"));
	CHECK(pins("/*!40101 SET NAMES utf8 */"));
	CHECK(pins("/*M!100101 SET sql_mode='' */"));
	CHECK(!pins("SELECT 1"));
	CHECK(!pins("SELECT @x"));
	CHECK(!pins("SELECT @@session.autocommit"));
	CHECK(!pins("SET TRANSACTION ISOLATION LEVEL READ COMMITTED"));
	CHECK(!pins("SET GLOBAL max_connections = 10"));
	CHECK(!pins("SET STATEMENT max_statement_time=1 FOR SELECT 1"));
	CHECK(!pins("BEGIN"));
	CHECK(!pins("START TRANSACTION"));
	CHECK(!pins("INSERT INTO settings VALUES (1)"));
	CHECK(!pins("SELECT RELEASE_LOCK('a')"));
	CHECK(!pins("UPDATE t SET a = 1"));
	CHECK(!pins("CREATE TABLE t (a int)"));
	CHECK(!pins("SELECT 'a@b.c' AS mail"));
	CHECK(!pins(""));
	CHECK(!pins("/* unterminated SET @x = 1"));
}

TP_TEST_MAIN(TP_TEST(test_frame), TP_TEST(test_lenenc_round_trip),
	     TP_TEST(test_lenenc_markers), TP_TEST(test_greeting_parse_mariadb),
	     TP_TEST(test_greeting_truncated), TP_TEST(test_greeting_write),
	     TP_TEST(test_login_parse_cli),
	     TP_TEST(test_login_parse_pymysql_mysql2),
	     TP_TEST(test_login_truncated), TP_TEST(test_login_ssl_request),
	     TP_TEST(test_login_malformed),
	     TP_TEST(test_login_write_round_trip), TP_TEST(test_auth_switch),
	     TP_TEST(test_ok_parse_real), TP_TEST(test_ok_write),
	     TP_TEST(test_err), TP_TEST(test_eof), TP_TEST(test_status_idle),
	     TP_TEST(test_session), TP_TEST(test_ok_session_real),
	     TP_TEST(test_change_user), TP_TEST(test_command_reply),
	     TP_TEST(test_kill), TP_TEST(test_sql_pins))
