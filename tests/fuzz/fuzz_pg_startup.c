/*
 * fuzz_pg_startup.c - libFuzzer target for the PostgreSQL startup phase.
 *
 * The input is what a client sends first: it goes through
 * pg_startup_frame(), the framed packet (and, separately, the whole input
 * as if it were one packet) through pg_startup_parse(), each from a heap
 * copy of exactly its size so ASan sees any read past the end. A packet
 * that parses is written again with pg_write_startup() and must parse to
 * the same fields; the writer must also refuse a cap one short of what it
 * needs without touching the byte after it. Broken invariants trap.
 *
 * Not here: later messages (fuzz_pg_messages.c).
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

/* A string that starts inside [buf, buf + len) and ends there too. */
static void require_str_in(const char *s, const uint8_t *buf, size_t len)
{
	const uint8_t *p = (const uint8_t *)s;

	REQUIRE(s != NULL);
	REQUIRE(p >= buf && p < buf + len);
	REQUIRE(memchr(p, 0, (size_t)(buf + len - p)) != NULL);
}

static uint8_t *copy(const uint8_t *data, size_t len)
{
	uint8_t *p = malloc(len ? len : 1);

	if (!p)
		abort();
	if (len)
		memcpy(p, data, len);
	return p;
}

/* Writes su back out and checks the result parses to the same fields. */
static void rewrite(const pg_startup_t *su, size_t len)
{
	size_t big = len + 64, n;
	uint8_t *out = malloc(big), *small;
	pg_startup_t again;

	if (!out)
		abort();
	n = pg_write_startup(out, big, su->user, su->database, su->keys,
			     su->values, su->nparams);
	REQUIRE(n > 0 && n <= len);
	REQUIRE(pg_startup_parse(out, n, &again) == 0);
	REQUIRE(again.code == PG_PROTO_V3);
	REQUIRE(strcmp(again.user, su->user) == 0);
	REQUIRE(strcmp(again.database, su->database) == 0);
	REQUIRE(again.nparams == su->nparams);
	for (size_t i = 0; i < su->nparams; i++) {
		REQUIRE(strcmp(again.keys[i], su->keys[i]) == 0);
		REQUIRE(strcmp(again.values[i], su->values[i]) == 0);
	}
	/* one byte short: must refuse, and never write at out[n - 1] */
	small = malloc(n);
	if (!small)
		abort();
	small[n - 1] = 0xa5;
	REQUIRE(pg_write_startup(small, n - 1, su->user, su->database, su->keys,
				 su->values, su->nparams) == 0);
	REQUIRE(small[n - 1] == 0xa5);
	free(small);
	free(out);
}

static void check_v3(const pg_startup_t *su, const uint8_t *buf, size_t len)
{
	REQUIRE(buf[len - 1] == 0);
	REQUIRE(su->nparams <= PG_MAX_PARAMS);
	if (su->user)
		require_str_in(su->user, buf, len);
	if (su->database)
		require_str_in(su->database, buf, len);
	for (size_t i = 0; i < su->nparams; i++) {
		require_str_in(su->keys[i], buf, len);
		require_str_in(su->values[i], buf, len);
		REQUIRE(su->keys[i][0] != 0);
		REQUIRE(strcmp(su->keys[i], "user") != 0);
		REQUIRE(strcmp(su->keys[i], "database") != 0);
	}
	if (su->user && su->database)
		rewrite(su, len);
}

/* Parses a heap copy of exactly len bytes and checks what comes back. */
static void parse(const uint8_t *data, size_t len)
{
	uint8_t *buf = copy(data, len);
	pg_startup_t su;
	int err = pg_startup_parse(buf, len, &su);

	REQUIRE(err == 0 || err == TP_EPROTO || err == TP_ETOOBIG);
	if (err != 0) {
		free(buf);
		return;
	}
	REQUIRE(len >= 8 && get32(buf) == len && su.code == get32(buf + 4));
	switch (su.code) {
	case PG_CODE_SSL:
	case PG_CODE_GSSENC:
		REQUIRE(len == 8);
		break;
	case PG_CODE_CANCEL:
		REQUIRE(len == 16);
		REQUIRE(memcmp(su.cancel_key, buf + 8, 8) == 0);
		break;
	case PG_PROTO_V3:
		check_v3(&su, buf, len);
		break;
	default:
		__builtin_trap();
	}
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t n = 0;
	int err = pg_startup_frame(data, size, &n);

	REQUIRE(err == 0 || err == TP_EAGAIN || err == TP_EPROTO ||
		err == TP_ETOOBIG);
	REQUIRE((err == TP_EAGAIN) == (size < 4));
	if (err == 0) {
		REQUIRE(n >= 8 && n <= PG_MAX_STARTUP && n == get32(data));
		if (n <= size)
			parse(data, n);
	}
	parse(data, size);
	return 0;
}
