/*
 * fuzz_mysql_server.c - libFuzzer target for what MySQL servers send:
 * HandshakeV10, OK / ERR / EOF, AuthSwitchRequest, session tracking data,
 * and the response tracker that follows result sets, multi-results,
 * LOCAL INFILE and prepared statements.
 *
 * Input: one byte of flags (negotiated capabilities), one byte n, n
 * command bytes, then a packet stream walked with my_frame(). Whenever
 * the tracker has nothing pending the next command (cycling) is pushed;
 * packets go to every parser from exact-size heap copies, and to the
 * tracker whole or, for the last truncated packet, as a prefix (as the
 * proxy streams large packets). Checked invariants (a violation traps):
 * - parsed strings lie inside the packet;
 * - a greeting, OK or ERR that parses, written again, parses to the same
 *   fields, and writers refuse caps too small without writing past them;
 * - the tracker: IDLE only with DONE and nothing pending, DONE only with
 *   something pending before, the queue bound holds, and a tracker that
 *   reported BROKEN never says IDLE again.
 *
 * Not here: client packets (fuzz_mysql_login.c).
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
	if (!s.p || s.len == 0)
		return;
	REQUIRE(s.p >= buf && s.p <= buf + len &&
		(size_t)(buf + len - s.p) >= s.len);
}

static bool same(my_str_t a, my_str_t b)
{
	if (!a.p || !b.p)
		return a.len == 0 && b.len == 0;
	return a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
}

static void check_greeting(const uint8_t *pl, size_t len)
{
	my_greeting_t g, g2;
	char version[256], plugin[256];
	uint8_t *buf;
	size_t n, cap;

	if (my_parse_greeting(pl, len, &g) != 0)
		return;
	require_in(g.version, pl, len);
	require_in(g.plugin, pl, len);
	REQUIRE(g.nonce_len <= MY_NONCE_MAX);
	/* Rewrite what our writer can express: a 20-byte nonce without NUL,
	 * 4.1 layout. */
	if (g.nonce_len != MY_NONCE_LEN || memchr(g.nonce, 0, MY_NONCE_LEN) ||
	    !(g.caps & MY_CAP_SECURE_CONN) || g.version.len >= 255 ||
	    g.plugin.len >= 255 ||
	    (g.plugin.p && memchr(g.plugin.p, 0, g.plugin.len)))
		return;
	memcpy(version, g.version.p, g.version.len);
	version[g.version.len] = 0;
	memcpy(plugin, g.plugin.p ? (const char *)g.plugin.p : "",
	       g.plugin.len);
	plugin[g.plugin.len] = 0;
	cap = 64 + g.version.len + g.plugin.len;
	buf = malloc(cap);
	n = my_write_greeting(buf, cap, 0, version, g.thread_id, g.nonce,
			      g.caps, g.charset, g.status, plugin);
	REQUIRE(n > 4);
	REQUIRE(my_parse_greeting(buf + 4, n - 4, &g2) == 0);
	REQUIRE(same(g.version, g2.version) && g2.thread_id == g.thread_id);
	REQUIRE(g2.nonce_len == MY_NONCE_LEN &&
		memcmp(g2.nonce, g.nonce, MY_NONCE_LEN) == 0);
	REQUIRE(g2.charset == g.charset && g2.status == g.status);
	REQUIRE((uint32_t)g2.caps == (uint32_t)g.caps);
	if (g.caps & MY_CAP_PLUGIN_AUTH)
		REQUIRE(same(g.plugin, g2.plugin));
	for (size_t c = n - 8; c < n; c++) {
		uint8_t *small = malloc(c);

		REQUIRE(my_write_greeting(small, c, 0, version, 1, g.nonce,
					  g.caps, 8, 2, plugin) == 0);
		free(small);
	}
	free(buf);
}

static void check_ok(const uint8_t *pl, size_t len, uint64_t caps)
{
	my_ok_t ok, ok2;
	my_session_info_t si;
	uint8_t *buf;
	size_t n, cap;

	if (my_parse_ok(pl, len, caps, &ok) != 0)
		return;
	require_in(ok.info, pl, len);
	require_in(ok.session, pl, len);
	if (ok.session.p && my_parse_session(ok.session, &si) == 0)
		require_in(si.schema, pl, len);
	cap = 40 + ok.info.len + ok.session.len;
	buf = malloc(cap);
	n = my_write_ok(buf, cap, 1, caps, &ok);
	REQUIRE(n > 4 && n <= cap);
	REQUIRE(my_parse_ok(buf + 4, n - 4, caps, &ok2) == 0);
	REQUIRE(ok2.affected_rows == ok.affected_rows &&
		ok2.last_insert_id == ok.last_insert_id);
	if (caps & MY_CAP_PROTOCOL_41)
		REQUIRE(ok2.status == ok.status && ok2.warnings == ok.warnings);
	REQUIRE(same(ok.info, ok2.info));
	if (caps & MY_CAP_SESSION_TRACK)
		REQUIRE(same(ok.session, ok2.session));
	for (size_t c = n > 8 ? n - 8 : 0; c < n; c++) {
		uint8_t *small = malloc(c ? c : 1);

		REQUIRE(my_write_ok(small, c, 1, caps, &ok) == 0);
		free(small);
	}
	free(buf);
}

static void check_err(const uint8_t *pl, size_t len)
{
	my_err_t e;
	my_str_t plugin, data;
	uint16_t w, s;

	if (my_parse_err(pl, len, &e) == 0) {
		require_in(e.message, pl, len);
		REQUIRE(strlen(e.sqlstate) == 0 || strlen(e.sqlstate) == 5);
	}
	if (my_parse_auth_switch(pl, len, &plugin, &data) == 0) {
		require_in(plugin, pl, len);
		require_in(data, pl, len);
		REQUIRE(plugin.len > 0);
	}
	if (my_parse_eof(pl, len, &w, &s) == 0)
		REQUIRE(len < 9);
}

static void check_tracker(my_track_t *t, const uint8_t *pkt, size_t have,
			  size_t pkt_len, bool *was_broken)
{
	uint8_t before = t->count, tag;
	unsigned ev = my_track_server(t, pkt, have, pkt_len, &tag);

	REQUIRE(t->count <= MY_TRACK_QUEUE);
	if (ev & MY_EV_IDLE)
		REQUIRE((ev & MY_EV_DONE) && t->count == 0 && !*was_broken);
	if (ev & MY_EV_DONE)
		REQUIRE(before > 0 && t->count == before - 1);
	else
		REQUIRE(t->count == before);
	if (ev & MY_EV_BROKEN)
		*was_broken = true;
	/* While the server waits for a file, the client sends it. */
	if (t->infile) {
		uint8_t hdr[5] = {3, 0, 0, 2, 'a'};

		REQUIRE(my_track_client(t, hdr, 5, 7) & MY_EV_DATA);
		memset(hdr, 0, 4);
		REQUIRE(my_track_client(t, hdr, 4, 4) & MY_EV_DATA_END);
		REQUIRE(!t->infile);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t caps = MY_CAP_PROTOCOL_41 | MY_CAP_TRANSACTIONS;
	const uint8_t *cmds;
	size_t ncmds, next = 0, pos, n;
	bool was_broken = false;
	my_track_t t;

	if (size < 2)
		return 0;
	if (data[0] & 1)
		caps |= MY_CAP_SESSION_TRACK;
	if (data[0] & 2)
		caps |= MY_CAP_DEPRECATE_EOF;
	ncmds = data[1];
	if (ncmds == 0 || ncmds > size - 2)
		return 0;
	cmds = data + 2;
	pos = 2 + ncmds;
	my_track_init(&t, caps, MY_ST_AUTOCOMMIT);
	while (pos < size) {
		size_t have;
		uint8_t *p;

		if (my_frame(data + pos, size - pos, &n) != 0)
			break;
		have = n < size - pos ? n : size - pos;
		if (t.count == 0 && !t.cont) {
			uint8_t cmd = cmds[next % ncmds];

			next++;
			if (my_track_push(&t, my_command_reply(cmd),
					  (uint8_t)next) != 0)
				was_broken = true;
		}
		p = copy(data + pos, have);
		if (have == n) {
			check_greeting(p + 4, n - 4);
			check_ok(p + 4, n - 4, caps);
			check_err(p + 4, n - 4);
		}
		check_tracker(&t, p, have, n, &was_broken);
		free(p);
		pos += have;
	}
	return 0;
}
