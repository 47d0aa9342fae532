/*
 * fuzz_mysql_login.c - libFuzzer target for what MySQL clients send:
 * HandshakeResponse41 and SSLRequest, COM_CHANGE_USER, and the SQL text
 * of COM_QUERY (KILL translation, the session-state heuristic).
 *
 * The input is a packet stream walked with my_frame() as the proxy walks
 * a client's bytes; each packet, from a heap copy of exactly its size so
 * ASan sees any read past the end, goes to every parser. The first input
 * byte picks the capabilities a greeting offered. Checked invariants (a
 * violation traps):
 * - what a parser returns lies inside the packet;
 * - a login that parses, written again with the same capabilities,
 *   parses to the same fields; the writer refuses every cap too small
 *   without writing past it (exact-size heap buffers);
 * - a parsed KILL names a number that is in the text.
 *
 * Not here: server packets and the response tracker
 * (fuzz_mysql_server.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/mysql/mysql.h"

#define REQUIRE(c)                        \
	do {                              \
		if (!(c))                 \
			__builtin_trap(); \
	} while (0)

static uint8_t *copy(const uint8_t *p, size_t n)
{
	uint8_t *q = malloc(n ? n : 1);

	if (!q)
		abort();
	memcpy(q, p, n);
	return q;
}

static void require_in(my_str_t s, const uint8_t *buf, size_t len)
{
	if (!s.p)
		return;
	if (s.len == 0)
		return; /* an empty field may point at a static "" */
	REQUIRE(s.p >= buf && s.p <= buf + len && s.len <= len &&
		(size_t)(buf + len - s.p) >= s.len);
}

static bool same(my_str_t a, my_str_t b)
{
	if (!a.p || !b.p)
		return !a.p == !b.p || (a.len == 0 && b.len == 0);
	return a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
}

static bool has_nul(my_str_t s)
{
	return s.p && memchr(s.p, 0, s.len) != NULL;
}

/* Writes l back and parses it again: same fields. */
static void rewrite_login(const my_login_t *l, uint64_t offered)
{
	my_login_t in = *l, out;
	size_t cap = 64 + l->user.len + l->auth.len + l->database.len +
		     l->plugin.len + l->attrs.len;
	uint8_t *buf;
	size_t n;

	/* Only what the parser read can be written: its layout. */
	in.caps &= offered | 0xffffffff00000000ull;
	if (in.ssl_request || has_nul(in.user) || has_nul(in.database) ||
	    has_nul(in.plugin) ||
	    (!(in.caps & MY_CAP_AUTH_LENENC) && in.auth.len > 255) ||
	    !(in.caps & MY_CAP_SECURE_CONN))
		return;
	/* Fields the packet left out are written as empty. */
	buf = malloc(cap);
	n = my_write_login(buf, cap, 1, &in);
	REQUIRE(n > 36 && n <= cap);
	REQUIRE(my_parse_login(buf + 4, n - 4, offered, &out) == 0);
	REQUIRE(same(out.user, in.user) && same(out.auth, in.auth));
	REQUIRE(out.charset == in.charset);
	if (in.caps & MY_CAP_CONNECT_WITH_DB)
		REQUIRE(same(out.database, in.database));
	if (in.caps & MY_CAP_PLUGIN_AUTH)
		REQUIRE(same(out.plugin, in.plugin));
	if (in.caps & MY_CAP_CONNECT_ATTRS)
		REQUIRE(same(out.attrs, in.attrs));
	/* Every cap below n: 0, and nothing written past it. */
	for (size_t c = n > 48 ? n - 16 : 0; c < n; c++) {
		uint8_t *small = malloc(c ? c : 1);

		REQUIRE(my_write_login(small, c, 1, &in) == 0);
		free(small);
	}
	free(buf);
}

static void check_login(const uint8_t *pl, size_t len, uint64_t offered)
{
	my_login_t l;
	int rc = my_parse_login(pl, len, offered, &l);

	REQUIRE(rc == 0 || rc == TP_EPROTO);
	if (rc)
		return;
	REQUIRE(len >= 32);
	REQUIRE(l.ssl_request == (len == 32));
	require_in(l.user, pl, len);
	require_in(l.auth, pl, len);
	require_in(l.database, pl, len);
	require_in(l.plugin, pl, len);
	require_in(l.attrs, pl, len);
	rewrite_login(&l, offered);
}

static void check_change_user(const uint8_t *pl, size_t len, uint64_t caps)
{
	my_change_user_t cu;
	int rc = my_parse_change_user(pl, len, caps, &cu);

	REQUIRE(rc == 0 || rc == TP_EPROTO);
	if (rc)
		return;
	require_in(cu.user, pl, len);
	require_in(cu.auth, pl, len);
	require_in(cu.database, pl, len);
	require_in(cu.plugin, pl, len);
	require_in(cu.attrs, pl, len);
}

static void check_sql(const uint8_t *pl, size_t len)
{
	const char *sql = (const char *)pl + 1;
	bool q;
	uint64_t id = 0;
	int rc = my_parse_kill(sql, len - 1, &q, &id);

	REQUIRE(rc == 0 || rc == TP_EPROTO || rc == TP_EINVAL);
	if (rc == 0)
		REQUIRE(memchr(sql, '0' + (int)(id % 10), len - 1) != NULL);
	(void)my_sql_pins(sql, len - 1);
}

static void check_packet(const uint8_t *pkt, size_t n, uint64_t offered)
{
	uint8_t *p = copy(pkt + 4, n - 4);
	size_t len = n - 4;

	check_login(p, len, offered);
	if (len >= 1 && p[0] == MY_COM_CHANGE_USER)
		check_change_user(p, len, offered);
	if (len >= 1 && p[0] == MY_COM_QUERY)
		check_sql(p, len);
	free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t offers[4] = {
	    0xffffffffull,
	    MY_CAP_PROTOCOL_41 | MY_CAP_SECURE_CONN | MY_CAP_PLUGIN_AUTH |
		MY_CAP_CONNECT_WITH_DB,
	    MY_CAP_PROTOCOL_41 | MY_CAP_SECURE_CONN | MY_CAP_AUTH_LENENC |
		MY_CAP_CONNECT_ATTRS | MY_CAP_PLUGIN_AUTH |
		MY_CAP_CONNECT_WITH_DB | MY_CAP_SSL,
	    MY_CAP_PROTOCOL_41,
	};
	uint64_t offered;
	size_t pos = 1, n;

	if (size < 1)
		return 0;
	offered = offers[data[0] & 3];
	while (pos < size) {
		int rc = my_frame(data + pos, size - pos, &n);

		REQUIRE(rc == 0 || rc == TP_EAGAIN);
		if (rc || n > size - pos)
			break;
		REQUIRE(n >= 4 && n - 4 == my_payload_len(data + pos));
		check_packet(data + pos, n, offered);
		pos += n;
	}
	/* The whole input as one payload too. */
	{
		uint8_t *p = copy(data + 1, size - 1);

		check_login(p, size - 1, offered);
		free(p);
	}
	return 0;
}
