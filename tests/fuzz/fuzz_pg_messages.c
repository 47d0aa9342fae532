/*
 * fuzz_pg_messages.c - libFuzzer target for PostgreSQL regular messages.
 *
 * Walks the input with pg_frame() as the proxy walks a stream, and hands
 * each complete message, from a heap copy of exactly its size so ASan sees
 * any read past the end, to every parser: auth, error, SASL initial
 * response, body, ready, and pg_sql_pins() for queries. Checked invariants
 * (a violation traps):
 * - a parser that returns 0 returns pointers inside the message, and its
 *   strings are NUL-terminated inside the message;
 * - lengths returned add up to the message length;
 * - what parses, written again by the matching writer, gives the same
 *   bytes (or the same fields for errors), and that writer refuses every
 *   cap too small for it without writing past cap (the output buffer is a
 *   heap block of exactly cap bytes).
 *
 * Not here: the startup packet (fuzz_pg_startup.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/pg/pg.h"

#define REQUIRE(c)                        \
	do {                              \
		if (!(c))                 \
			__builtin_trap(); \
	} while (0)

static uint32_t get32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	       ((uint32_t)p[2] << 8) | p[3];
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		abort();
	return p;
}

static bool in_msg(const void *p, const uint8_t *msg, size_t len)
{
	const uint8_t *q = p;

	return q >= msg && q <= msg + len;
}

/* A string that starts inside the message and ends there too. */
static void require_str_in(const char *s, const uint8_t *msg, size_t len)
{
	const uint8_t *p = (const uint8_t *)s;

	REQUIRE(s != NULL);
	REQUIRE(p >= msg && p < msg + len);
	REQUIRE(memchr(p, 0, (size_t)(msg + len - p)) != NULL);
}

/* A cap below need, picked from the message so the fuzzer can steer it. */
static size_t small_cap(const uint8_t *msg, size_t len, size_t need)
{
	return need ? (msg[len - 1] ^ msg[len / 2]) % need : 0;
}

/* An output buffer of exactly cap bytes: a write past cap is an ASan
 * report. */
static uint8_t *out_buf(size_t cap)
{
	return xmalloc(cap);
}

static void check_auth(const uint8_t *msg, size_t len)
{
	uint32_t code;
	const uint8_t *data;
	size_t dlen, cap;
	uint8_t *out;

	if (pg_parse_auth(msg, len, &code, &data, &dlen) != 0)
		return;
	REQUIRE(msg[0] == 'R' && len >= 9 && code == get32(msg + 5));
	REQUIRE(data == msg + 9 && dlen == len - 9);
	out = out_buf(len);
	REQUIRE(pg_write_auth(out, len, code, data, dlen) == len);
	REQUIRE(memcmp(out, msg, len) == 0);
	free(out);
	cap = small_cap(msg, len, len);
	out = out_buf(cap);
	REQUIRE(pg_write_auth(out, cap, code, data, dlen) == 0);
	free(out);
}

static void check_error(const uint8_t *msg, size_t len)
{
	pg_error_t e, again;
	size_t big, n, cap;
	uint8_t *out;

	if (pg_parse_error(msg, len, &e) != 0)
		return;
	REQUIRE((msg[0] == 'E' || msg[0] == 'N') && len >= 6);
	if (e.severity)
		require_str_in(e.severity, msg, len);
	if (e.sqlstate)
		require_str_in(e.sqlstate, msg, len);
	if (e.message)
		require_str_in(e.message, msg, len);
	if (!e.severity || !e.sqlstate || !e.message)
		return;
	/* S and V both carry the severity: at most twice the input */
	big = 2 * len + 16;
	out = out_buf(big);
	n = pg_write_error(out, big, e.severity, e.sqlstate, e.message);
	REQUIRE(n > 0 && n <= big);
	REQUIRE(pg_parse_error(out, n, &again) == 0);
	REQUIRE(strcmp(again.severity, e.severity) == 0);
	REQUIRE(strcmp(again.sqlstate, e.sqlstate) == 0);
	REQUIRE(strcmp(again.message, e.message) == 0);
	free(out);
	cap = small_cap(msg, len, n);
	out = out_buf(cap);
	REQUIRE(pg_write_error(out, cap, e.severity, e.sqlstate, e.message) ==
		0);
	free(out);
}

static void check_sasl_initial(const uint8_t *msg, size_t len)
{
	const char *mech;
	const uint8_t *data;
	size_t dlen, cap;
	uint8_t *out;

	if (pg_parse_sasl_initial(msg, len, &mech, &data, &dlen) != 0)
		return;
	REQUIRE(msg[0] == 'p');
	require_str_in(mech, msg, len);
	REQUIRE((const uint8_t *)mech == msg + 5);
	REQUIRE(data == (const uint8_t *)mech + strlen(mech) + 1 + 4);
	REQUIRE(in_msg(data, msg, len) && dlen == (size_t)(msg + len - data));
	REQUIRE(get32(data - 4) == dlen);
	out = out_buf(len);
	REQUIRE(pg_write_sasl_initial(out, len, mech, data, dlen) == len);
	REQUIRE(memcmp(out, msg, len) == 0);
	free(out);
	cap = small_cap(msg, len, len);
	out = out_buf(cap);
	REQUIRE(pg_write_sasl_initial(out, cap, mech, data, dlen) == 0);
	free(out);
}

static void check_body(const uint8_t *msg, size_t len)
{
	const uint8_t *data;
	size_t dlen;
	char other = msg[0] == 'p' ? 'Q' : 'p';

	/* pg_frame framed it, so the length field always agrees */
	REQUIRE(pg_parse_body(msg, len, (char)msg[0], &data, &dlen) == 0);
	REQUIRE(data == msg + 5 && dlen == len - 5);
	REQUIRE(pg_parse_body(msg, len, other, &data, &dlen) == TP_EPROTO);
	if (msg[0] == 'Q') {
		/* as the proxy calls it: the body, NUL included */
		(void)pg_sql_pins((const char *)msg + 5, len - 5);
		/* a query with exactly one NUL, at the end, writes back */
		if (len > 5 && memchr(msg + 5, 0, len - 5) == msg + len - 1) {
			uint8_t *out = out_buf(len);

			REQUIRE(pg_write_query(out, len,
					       (const char *)msg + 5) == len);
			REQUIRE(memcmp(out, msg, len) == 0);
			free(out);
			size_t cap = small_cap(msg, len, len);
			out = out_buf(cap);
			REQUIRE(pg_write_query(out, cap,
					       (const char *)msg + 5) == 0);
			free(out);
		}
	}
	if (msg[0] == 'K' && len == 13) {
		uint8_t *out = out_buf(13);

		REQUIRE(pg_write_key_data(out, 13, msg + 5) == 13);
		REQUIRE(memcmp(out, msg, 13) == 0);
		free(out);
	}
}

static void check_ready(const uint8_t *msg, size_t len)
{
	char status = 0;
	uint8_t out[6];

	if (pg_parse_ready(msg, len, &status) != 0)
		return;
	REQUIRE(len == 6 && msg[0] == 'Z' && status == (char)msg[5]);
	REQUIRE(status == 'I' || status == 'T' || status == 'E');
	REQUIRE(pg_write_ready(out, sizeof(out), status) == 6);
	REQUIRE(memcmp(out, msg, 6) == 0);
}

/* ParameterStatus: both strings end inside the message; a tracked name
 * records and syncs into a SET list that never overruns its buffer. */
static void check_param(const uint8_t *msg, size_t len)
{
	const char *k, *v;
	pg_vars_t want = {0}, have = {0};
	char sql[64];

	if (pg_parse_param(msg, len, &k, &v) != 0)
		return;
	REQUIRE(k >= (const char *)msg + 5 && v > k &&
		v < (const char *)msg + len && msg[len - 1] == 0);
	if (pg_vars_set(&want, k, v) == 0)
		(void)pg_vars_sync_sql(&want, &have, &have, sql, sizeof(sql));
	pg_vars_free(&want);
}

/* Every parser on one complete message of exactly len bytes. */
static void check_message(const uint8_t *msg, size_t len)
{
	check_param(msg, len);
	check_auth(msg, len);
	check_error(msg, len);
	check_sasl_initial(msg, len);
	check_body(msg, len);
	check_ready(msg, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t pos = 0;

	while (pos < size) {
		size_t n = 0, left = size - pos;
		int err = pg_frame(data + pos, left, &n);
		uint8_t *msg;

		REQUIRE(err == 0 || err == TP_EAGAIN || err == TP_EPROTO ||
			err == TP_ETOOBIG);
		REQUIRE((err == TP_EAGAIN) == (left < 5));
		if (err != 0)
			break;
		REQUIRE(n >= 5 && n <= (size_t)PG_MAX_MSG + 1);
		REQUIRE(n == (size_t)get32(data + pos + 1) + 1);
		if (n > left)
			break; /* the proxy would wait for more */
		msg = xmalloc(n);
		memcpy(msg, data + pos, n);
		check_message(msg, n);
		free(msg);
		pos += n;
	}
	return 0;
}
