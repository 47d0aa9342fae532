/*
 * test_pg_codec.c - unit tests for the PostgreSQL wire codec.
 *
 * Feeds the parsers real packets (as psql and a PostgreSQL server put them
 * on the wire) and every malformed variant we could think of, and round
 * trips each writer's output through the matching parser. Every writer is
 * also called with every cap below what it needs, into a buffer whose
 * bytes past cap are a canary, to prove it returns 0 and writes nothing
 * past cap.
 *
 * Not here: what ops.c does with the messages, sockets, TLS.
 */
#include <stdint.h>
#include <string.h>

#include "protocols/pg/pg.h"
#include "tests/unit/tp_test.h"

/* A string literal with embedded NULs as bytes, without the literal's own
 * trailing NUL. */
#define LIT(s) ((const uint8_t *)(s)), (sizeof(s) - 1)

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/*
 * What psql 15 sends for `psql "host=... user=alice dbname=appdb"`:
 * application_name comes from psql's fallback_application_name and
 * client_encoding from "auto" resolved against a UTF-8 locale.
 */
static const char psql_startup[] = "\x00\x00\x00\x4e"
				   "\x00\x03\x00\x00"
				   "user\0alice\0"
				   "database\0appdb\0"
				   "application_name\0psql\0"
				   "client_encoding\0UTF8\0"
				   "\0";
#define PSQL_STARTUP_LEN (sizeof(psql_startup) - 1)

static const uint8_t ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
static const uint8_t gssenc_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30};
static const uint8_t cancel_request[16] = {
    0,	  0,	0,    16,   /* length */
    0x04, 0xd2, 0x16, 0x2e, /* 80877102 */
    0,	  0,	0x30, 0x39, /* backend pid 12345 */
    0xde, 0xad, 0xbe, 0xef, /* secret key */
};

/* ---- pg_startup_frame ---- */

static void test_startup_frame_need_more(void)
{
	size_t n = 12345;

	for (size_t len = 0; len < 4; len++) {
		CHECK_EQ_INT(
		    pg_startup_frame((const uint8_t *)psql_startup, len, &n),
		    TP_EAGAIN);
		CHECK_EQ_INT(n, 12345);
	}
	/* the header alone is enough to know the length */
	CHECK_EQ_INT(pg_startup_frame((const uint8_t *)psql_startup, 4, &n), 0);
	CHECK_EQ_INT(n, PSQL_STARTUP_LEN);
	CHECK_EQ_INT(pg_startup_frame(ssl_request, 8, &n), 0);
	CHECK_EQ_INT(n, 8);
	CHECK_EQ_INT(pg_startup_frame(cancel_request, 16, &n), 0);
	CHECK_EQ_INT(n, 16);
}

static void test_startup_frame_lengths(void)
{
	uint8_t b[4];
	size_t n = 0;

	for (uint32_t v = 0; v < 8; v++) {
		put_be32(b, v);
		CHECK_EQ_INT(pg_startup_frame(b, 4, &n), TP_EPROTO);
	}
	put_be32(b, 8);
	CHECK_EQ_INT(pg_startup_frame(b, 4, &n), 0);
	CHECK_EQ_INT(n, 8);
	put_be32(b, PG_MAX_STARTUP);
	CHECK_EQ_INT(pg_startup_frame(b, 4, &n), 0);
	CHECK_EQ_INT(n, PG_MAX_STARTUP);
	put_be32(b, PG_MAX_STARTUP + 1);
	CHECK_EQ_INT(pg_startup_frame(b, 4, &n), TP_ETOOBIG);
	put_be32(b, 0x80000000u); /* 2^31: negative as an int32 */
	CHECK_EQ_INT(pg_startup_frame(b, 4, &n), TP_ETOOBIG);
	put_be32(b, 0xffffffffu);
	CHECK_EQ_INT(pg_startup_frame(b, 4, &n), TP_ETOOBIG);
	/* a TLS ClientHello (PG 17 direct TLS) is not a startup packet */
	static const uint8_t hello[5] = {0x16, 0x03, 0x01, 0x02, 0x00};
	CHECK_EQ_INT(pg_startup_frame(hello, sizeof(hello), &n), TP_ETOOBIG);
}

/* ---- pg_startup_parse ---- */

static void test_startup_parse_psql(void)
{
	pg_startup_t s;

	CHECK_EQ_INT(PSQL_STARTUP_LEN, 78);
	CHECK_EQ_INT(pg_startup_parse((const uint8_t *)psql_startup,
				      PSQL_STARTUP_LEN, &s),
		     0);
	CHECK_EQ_INT(s.code, PG_PROTO_V3);
	CHECK_EQ_STR(s.user, "alice");
	CHECK_EQ_STR(s.database, "appdb");
	CHECK_EQ_INT(s.nparams, 2);
	CHECK_EQ_STR(s.keys[0], "application_name");
	CHECK_EQ_STR(s.values[0], "psql");
	CHECK_EQ_STR(s.keys[1], "client_encoding");
	CHECK_EQ_STR(s.values[1], "UTF8");
	/* strings point into the packet */
	CHECK(s.user == psql_startup + 13);
}

static void test_startup_parse_no_database(void)
{
	/* libpq omits database when it equals user; only the terminator */
	static const char only_user[] = "\x00\x00\x00\x12"
					"\x00\x03\x00\x00"
					"user\0bob\0"
					"\0";
	static const char empty[] = "\x00\x00\x00\x09"
				    "\x00\x03\x00\x00"
				    "\0";
	pg_startup_t s;

	CHECK_EQ_INT(pg_startup_parse(LIT(only_user), &s), 0);
	CHECK_EQ_STR(s.user, "bob");
	CHECK(s.database == NULL);
	CHECK_EQ_INT(s.nparams, 0);
	CHECK_EQ_INT(pg_startup_parse(LIT(empty), &s), 0);
	CHECK(s.user == NULL);
	CHECK_EQ_INT(s.nparams, 0);
}

static void test_startup_parse_special(void)
{
	pg_startup_t s;
	static const uint8_t key[8] = {0,    0,	   0x30, 0x39,
				       0xde, 0xad, 0xbe, 0xef};

	CHECK_EQ_INT(pg_startup_parse(ssl_request, 8, &s), 0);
	CHECK_EQ_INT(s.code, PG_CODE_SSL);
	CHECK(s.user == NULL);
	CHECK_EQ_INT(pg_startup_parse(gssenc_request, 8, &s), 0);
	CHECK_EQ_INT(s.code, PG_CODE_GSSENC);
	CHECK_EQ_INT(pg_startup_parse(cancel_request, 16, &s), 0);
	CHECK_EQ_INT(s.code, PG_CODE_CANCEL);
	CHECK(memcmp(s.cancel_key, key, 8) == 0);
}

static void test_startup_parse_special_bad_length(void)
{
	uint8_t b[20] = {0};
	pg_startup_t s;

	/* SSLRequest / GSSENCRequest carry nothing after the code */
	memcpy(b, ssl_request, 8);
	put_be32(b, 12);
	CHECK_EQ_INT(pg_startup_parse(b, 12, &s), TP_EPROTO);
	memcpy(b, gssenc_request, 8);
	put_be32(b, 9);
	CHECK_EQ_INT(pg_startup_parse(b, 9, &s), TP_EPROTO);
	/* CancelRequest is exactly 16 bytes */
	memcpy(b, cancel_request, 16);
	put_be32(b, 12);
	CHECK_EQ_INT(pg_startup_parse(b, 12, &s), TP_EPROTO);
	put_be32(b, 20);
	CHECK_EQ_INT(pg_startup_parse(b, 20, &s), TP_EPROTO);
	put_be32(b, 8);
	CHECK_EQ_INT(pg_startup_parse(b, 8, &s), TP_EPROTO);
}

static void test_startup_parse_malformed(void)
{
	pg_startup_t s;
	/* the psql packet without its final NUL, length fixed up */
	static const char no_final[] = "\x00\x00\x00\x4d"
				       "\x00\x03\x00\x00"
				       "user\0alice\0"
				       "database\0appdb\0"
				       "application_name\0psql\0"
				       "client_encoding\0UTF8\0";
	/* a value that runs to the end of the packet */
	static const char unterminated[] = "\x00\x00\x00\x0f"
					   "\x00\x03\x00\x00"
					   "user\0al";
	/* a key that runs to the end of the packet */
	static const char unterminated_key[] = "\x00\x00\x00\x0c"
					       "\x00\x03\x00\x00"
					       "user";
	/* a key with no value before the end */
	static const char no_value[] = "\x00\x00\x00\x0e"
				       "\x00\x03\x00\x00"
				       "user\0"
				       "\0";
	static const char no_value2[] = "\x00\x00\x00\x0d"
					"\x00\x03\x00\x00"
					"user\0";
	/* bytes after the final NUL */
	static const char trailing[] = "\x00\x00\x00\x0b"
				       "\x00\x03\x00\x00"
				       "\0xy";
	/* nothing at all after the version */
	static const char bare[] = "\x00\x00\x00\x08"
				   "\x00\x03\x00\x00";

	CHECK_EQ_INT(pg_startup_parse(LIT(no_final), &s), TP_EPROTO);
	CHECK_EQ_INT(pg_startup_parse(LIT(unterminated), &s), TP_EPROTO);
	CHECK_EQ_INT(pg_startup_parse(LIT(unterminated_key), &s), TP_EPROTO);
	CHECK_EQ_INT(pg_startup_parse(LIT(no_value), &s), TP_EPROTO);
	CHECK_EQ_INT(pg_startup_parse(LIT(no_value2), &s), TP_EPROTO);
	CHECK_EQ_INT(pg_startup_parse(LIT(trailing), &s), TP_EPROTO);
	CHECK_EQ_INT(pg_startup_parse(LIT(bare), &s), TP_EPROTO);
	CHECK_EQ_INT(pg_startup_parse((const uint8_t *)psql_startup, 7, &s),
		     TP_EPROTO);
	CHECK_EQ_INT(pg_startup_parse((const uint8_t *)psql_startup, 0, &s),
		     TP_EPROTO);
}

static void test_startup_parse_versions(void)
{
	uint8_t b[PSQL_STARTUP_LEN];
	pg_startup_t s;

	memcpy(b, psql_startup, sizeof(b));
	put_be32(b + 4, 0x00020000u); /* protocol 2.0 */
	CHECK_EQ_INT(pg_startup_parse(b, sizeof(b), &s), TP_EPROTO);
	put_be32(b + 4, 0x00040000u); /* 4.0 does not exist */
	CHECK_EQ_INT(pg_startup_parse(b, sizeof(b), &s), TP_EPROTO);
	put_be32(b + 4, 0);
	CHECK_EQ_INT(pg_startup_parse(b, sizeof(b), &s), TP_EPROTO);
	put_be32(b + 4, 80877105u); /* next to the special codes */
	CHECK_EQ_INT(pg_startup_parse(b, sizeof(b), &s), TP_EPROTO);
}

static void test_startup_parse_length_mismatch(void)
{
	uint8_t b[PSQL_STARTUP_LEN + 4];
	pg_startup_t s;

	memset(b, 0, sizeof(b));
	memcpy(b, psql_startup, PSQL_STARTUP_LEN);
	/* buffer longer than the length field */
	CHECK_EQ_INT(pg_startup_parse(b, PSQL_STARTUP_LEN + 1, &s), TP_EPROTO);
	CHECK_EQ_INT(pg_startup_parse(b, PSQL_STARTUP_LEN + 4, &s), TP_EPROTO);
	/* buffer shorter than the length field */
	CHECK_EQ_INT(pg_startup_parse(b, PSQL_STARTUP_LEN - 1, &s), TP_EPROTO);
	/* length field shorter than the packet */
	put_be32(b, PSQL_STARTUP_LEN - 1);
	CHECK_EQ_INT(pg_startup_parse(b, PSQL_STARTUP_LEN, &s), TP_EPROTO);
	/* length field longer than the packet */
	put_be32(b, PSQL_STARTUP_LEN + 1);
	CHECK_EQ_INT(pg_startup_parse(b, PSQL_STARTUP_LEN, &s), TP_EPROTO);
	put_be32(b, 0xffffffffu);
	CHECK_EQ_INT(pg_startup_parse(b, PSQL_STARTUP_LEN, &s), TP_EPROTO);
	memcpy(b, ssl_request, 8);
	put_be32(b, 16);
	CHECK_EQ_INT(pg_startup_parse(b, 8, &s), TP_EPROTO);
}

/* Builds a v3 startup packet with user, database and n "kNN=vNN" pairs. */
static size_t build_params(uint8_t *b, size_t cap, size_t n)
{
	size_t pos = 8;
	static const char head[] = "user\0u\0database\0d\0";

	memcpy(b + pos, head, sizeof(head) - 1);
	pos += sizeof(head) - 1;
	for (size_t i = 0; i < n && pos + 16 < cap; i++) {
		char kv[8] = {
		    'k', (char)('0' + i / 10), (char)('0' + i % 10), 0,
		    'v', (char)('0' + i / 10), (char)('0' + i % 10), 0};
		memcpy(b + pos, kv, sizeof(kv));
		pos += sizeof(kv);
	}
	b[pos++] = 0;
	put_be32(b, (uint32_t)pos);
	put_be32(b + 4, PG_PROTO_V3);
	return pos;
}

static void test_startup_parse_too_many_params(void)
{
	uint8_t b[1024];
	pg_startup_t s;
	size_t len;

	len = build_params(b, sizeof(b), PG_MAX_PARAMS);
	CHECK_EQ_INT(pg_startup_parse(b, len, &s), 0);
	CHECK_EQ_INT(s.nparams, PG_MAX_PARAMS);
	CHECK_EQ_STR(s.user, "u");
	CHECK_EQ_STR(s.database, "d");
	CHECK_EQ_STR(s.keys[PG_MAX_PARAMS - 1], "k31");
	CHECK_EQ_STR(s.values[PG_MAX_PARAMS - 1], "v31");
	len = build_params(b, sizeof(b), PG_MAX_PARAMS + 1);
	CHECK_EQ_INT(pg_startup_parse(b, len, &s), TP_ETOOBIG);
	len = build_params(b, sizeof(b), 99);
	CHECK_EQ_INT(pg_startup_parse(b, len, &s), TP_ETOOBIG);
}

/* ---- pg_frame ---- */

static void test_frame_need_more(void)
{
	static const uint8_t z[6] = {'Z', 0, 0, 0, 5, 'I'};
	size_t n = 777;

	for (size_t len = 0; len <= 4; len++) {
		CHECK_EQ_INT(pg_frame(z, len, &n), TP_EAGAIN);
		CHECK_EQ_INT(n, 777);
	}
	CHECK_EQ_INT(pg_frame(z, 5, &n), 0);
	CHECK_EQ_INT(n, 6);
	CHECK_EQ_INT(pg_frame(z, 6, &n), 0);
	CHECK_EQ_INT(n, 6);
}

static void test_frame_lengths(void)
{
	uint8_t b[5] = {'D'};
	size_t n = 0;

	for (uint32_t v = 0; v < 4; v++) {
		put_be32(b + 1, v);
		CHECK_EQ_INT(pg_frame(b, 5, &n), TP_EPROTO);
	}
	put_be32(b + 1, 4); /* empty body, e.g. Sync */
	CHECK_EQ_INT(pg_frame(b, 5, &n), 0);
	CHECK_EQ_INT(n, 5);
	put_be32(b + 1, 1000);
	CHECK_EQ_INT(pg_frame(b, 5, &n), 0);
	CHECK_EQ_INT(n, 1001);
	put_be32(b + 1, PG_MAX_MSG);
	CHECK_EQ_INT(pg_frame(b, 5, &n), 0);
	CHECK_EQ_INT(n, (size_t)PG_MAX_MSG + 1);
	put_be32(b + 1, PG_MAX_MSG + 1);
	CHECK_EQ_INT(pg_frame(b, 5, &n), TP_ETOOBIG);
	put_be32(b + 1, 0x80000000u);
	CHECK_EQ_INT(pg_frame(b, 5, &n), TP_ETOOBIG);
	put_be32(b + 1, 0xffffffffu);
	CHECK_EQ_INT(pg_frame(b, 5, &n), TP_ETOOBIG);
}

/* ---- pg_parse_auth ---- */

static void test_parse_auth(void)
{
	static const char ok[] = "R\x00\x00\x00\x08\x00\x00\x00\x00";
	static const char clear[] = "R\x00\x00\x00\x08\x00\x00\x00\x03";
	static const char md5[] = "R\x00\x00\x00\x0c\x00\x00\x00\x05"
				  "\x01\x02\x03\x04";
	static const char sasl[] = "R\x00\x00\x00\x17\x00\x00\x00\x0a"
				   "SCRAM-SHA-256\0\0";
	uint32_t code = 99;
	const uint8_t *data = NULL;
	size_t dlen = 99;

	CHECK_EQ_INT(pg_parse_auth(LIT(ok), &code, &data, &dlen), 0);
	CHECK_EQ_INT(code, 0);
	CHECK_EQ_INT(dlen, 0);
	CHECK_EQ_INT(pg_parse_auth(LIT(clear), &code, &data, &dlen), 0);
	CHECK_EQ_INT(code, 3);
	CHECK_EQ_INT(dlen, 0);
	CHECK_EQ_INT(pg_parse_auth(LIT(md5), &code, &data, &dlen), 0);
	CHECK_EQ_INT(code, 5);
	CHECK_EQ_INT(dlen, 4);
	CHECK(data == (const uint8_t *)md5 + 9);
	CHECK_EQ_INT(pg_parse_auth(LIT(sasl), &code, &data, &dlen), 0);
	CHECK_EQ_INT(code, 10);
	CHECK_EQ_INT(dlen, 15);
	CHECK_EQ_STR((const char *)data, "SCRAM-SHA-256");
	CHECK_EQ_INT(data[14], 0);
}

static void test_parse_auth_bad(void)
{
	static const char wrong_type[] = "E\x00\x00\x00\x08\x00\x00\x00\x00";
	static const char short_len[] = "R\x00\x00\x00\x07\x00\x00\x00\x00";
	static const char long_len[] = "R\x00\x00\x00\x09\x00\x00\x00\x00";
	static const char huge_len[] = "R\xff\xff\xff\xff\x00\x00\x00\x00";
	static const char too_short[] = "R\x00\x00\x00\x07\x00\x00\x00";
	uint32_t code;
	const uint8_t *data;
	size_t dlen;

	CHECK_EQ_INT(pg_parse_auth(LIT(wrong_type), &code, &data, &dlen),
		     TP_EPROTO);
	CHECK_EQ_INT(pg_parse_auth(LIT(short_len), &code, &data, &dlen),
		     TP_EPROTO);
	CHECK_EQ_INT(pg_parse_auth(LIT(long_len), &code, &data, &dlen),
		     TP_EPROTO);
	CHECK_EQ_INT(pg_parse_auth(LIT(huge_len), &code, &data, &dlen),
		     TP_EPROTO);
	CHECK_EQ_INT(pg_parse_auth(LIT(too_short), &code, &data, &dlen),
		     TP_EPROTO);
	CHECK_EQ_INT(
	    pg_parse_auth((const uint8_t *)"R", 0, &code, &data, &dlen),
	    TP_EPROTO);
}

/* ---- pg_parse_error ---- */

/* As PostgreSQL 15 sends a failed password login. */
static const char pg_fatal[] =
    "E\x00\x00\x00\x65"
    "SFATAL\0"
    "VFATAL\0"
    "C28P01\0"
    "Mpassword authentication failed for user \"alice\"\0"
    "Fauth.c\0"
    "L330\0"
    "Rauth_failed\0"
    "\0";

static void test_parse_error(void)
{
	pg_error_t e;

	CHECK_EQ_INT(sizeof(pg_fatal) - 1, 0x66);
	CHECK_EQ_INT(pg_parse_error(LIT(pg_fatal), &e), 0);
	CHECK_EQ_STR(e.severity, "FATAL");
	CHECK_EQ_STR(e.sqlstate, "28P01");
	CHECK_EQ_STR(e.message,
		     "password authentication failed for user \"alice\"");
}

static void test_parse_error_notice_and_empty(void)
{
	static const char notice[] = "N\x00\x00\x00\x18"
				     "SNOTICE\0"
				     "C00000\0"
				     "Mhi\0"
				     "\0";
	static const char empty[] = "E\x00\x00\x00\x05\0";
	static const char only_c[] = "E\x00\x00\x00\x0c"
				     "C57P01\0"
				     "\0";
	pg_error_t e;

	CHECK_EQ_INT(pg_parse_error(LIT(notice), &e), 0);
	CHECK_EQ_STR(e.severity, "NOTICE");
	CHECK_EQ_STR(e.sqlstate, "00000");
	CHECK_EQ_STR(e.message, "hi");
	CHECK_EQ_INT(pg_parse_error(LIT(empty), &e), 0);
	CHECK(e.severity == NULL && e.sqlstate == NULL && e.message == NULL);
	CHECK_EQ_INT(pg_parse_error(LIT(only_c), &e), 0);
	CHECK(e.severity == NULL && e.message == NULL);
	CHECK_EQ_STR(e.sqlstate, "57P01");
}

static void test_parse_error_bad(void)
{
	/* the last field's NUL is there, the final terminator is not */
	static const char no_term[] = "E\x00\x00\x00\x0b"
				      "C28P01\0";
	/* a field value that runs to the end */
	static const char open_value[] = "E\x00\x00\x00\x0a"
					 "C28P01";
	/* a field code with nothing after it */
	static const char lone_code[] = "E\x00\x00\x00\x05"
					"C";
	static const char wrong_type[] = "D\x00\x00\x00\x05\0";
	static const char len_short[] = "E\x00\x00\x00\x04\0";
	static const char len_long[] = "E\x00\x00\x00\x06\0";
	static const char too_short[] = "E\x00\x00\x00\x04";
	pg_error_t e;

	CHECK_EQ_INT(pg_parse_error(LIT(no_term), &e), TP_EPROTO);
	CHECK_EQ_INT(pg_parse_error(LIT(open_value), &e), TP_EPROTO);
	CHECK_EQ_INT(pg_parse_error(LIT(lone_code), &e), TP_EPROTO);
	CHECK_EQ_INT(pg_parse_error(LIT(wrong_type), &e), TP_EPROTO);
	CHECK_EQ_INT(pg_parse_error(LIT(len_short), &e), TP_EPROTO);
	CHECK_EQ_INT(pg_parse_error(LIT(len_long), &e), TP_EPROTO);
	CHECK_EQ_INT(pg_parse_error(LIT(too_short), &e), TP_EPROTO);
	/* the real one cut short, with and without fixing the length */
	CHECK_EQ_INT(pg_parse_error(LIT(pg_fatal) - 1, &e), TP_EPROTO);
	uint8_t b[sizeof(pg_fatal)];
	memcpy(b, pg_fatal, sizeof(b));
	put_be32(b + 1, 0x65 - 1);
	CHECK_EQ_INT(pg_parse_error(b, 0x65, &e), TP_EPROTO);
}

/* ---- pg_parse_sasl_initial ---- */

/* libpq's SASLInitialResponse for SCRAM-SHA-256 without channel binding. */
static const char sasl_first[] = "p\x00\x00\x00\x36"
				 "SCRAM-SHA-256\0"
				 "\x00\x00\x00\x20"
				 "n,,n=,r=rOprNGfwEbeRWgbNEkqO%hvY";

static void test_parse_sasl_initial(void)
{
	const char *mech = NULL;
	const uint8_t *data = NULL;
	size_t dlen = 0;

	CHECK_EQ_INT(sizeof(sasl_first) - 1, 0x37);
	CHECK_EQ_INT(
	    pg_parse_sasl_initial(LIT(sasl_first), &mech, &data, &dlen), 0);
	CHECK_EQ_STR(mech, "SCRAM-SHA-256");
	CHECK_EQ_INT(dlen, 32);
	CHECK(data == (const uint8_t *)sasl_first + 23);
	CHECK(dlen == 32 && memcmp(data, "n,,n=,r=", 8) == 0);
}

static void test_parse_sasl_initial_bad(void)
{
	static const char minus_one[] = "p\x00\x00\x00\x16"
					"SCRAM-SHA-256\0"
					"\xff\xff\xff\xff";
	static const char empty_ok[] = "p\x00\x00\x00\x16"
				       "SCRAM-SHA-256\0"
				       "\x00\x00\x00\x00";
	static const char no_len[] = "p\x00\x00\x00\x14"
				     "SCRAM-SHA-256\0"
				     "\x00\x00";
	static const char open_mech[] = "p\x00\x00\x00\x11"
					"SCRAM-SHA-256";
	static const char wrong_type[] = "Q\x00\x00\x00\x16"
					 "SCRAM-SHA-256\0"
					 "\x00\x00\x00\x00";
	const char *mech;
	const uint8_t *data;
	size_t dlen;
	uint8_t b[sizeof(sasl_first)];

	CHECK_EQ_INT(pg_parse_sasl_initial(LIT(minus_one), &mech, &data, &dlen),
		     TP_EPROTO);
	CHECK_EQ_INT(pg_parse_sasl_initial(LIT(empty_ok), &mech, &data, &dlen),
		     0);
	CHECK_EQ_INT(dlen, 0);
	CHECK_EQ_INT(pg_parse_sasl_initial(LIT(no_len), &mech, &data, &dlen),
		     TP_EPROTO);
	CHECK_EQ_INT(pg_parse_sasl_initial(LIT(open_mech), &mech, &data, &dlen),
		     TP_EPROTO);
	CHECK_EQ_INT(
	    pg_parse_sasl_initial(LIT(wrong_type), &mech, &data, &dlen),
	    TP_EPROTO);
	/* data length one more, one less than what is there */
	memcpy(b, sasl_first, sizeof(b));
	put_be32(b + 19, 33);
	CHECK_EQ_INT(
	    pg_parse_sasl_initial(b, sizeof(b) - 1, &mech, &data, &dlen),
	    TP_EPROTO);
	put_be32(b + 19, 31);
	CHECK_EQ_INT(
	    pg_parse_sasl_initial(b, sizeof(b) - 1, &mech, &data, &dlen),
	    TP_EPROTO);
	put_be32(b + 19, 0x7fffffffu);
	CHECK_EQ_INT(
	    pg_parse_sasl_initial(b, sizeof(b) - 1, &mech, &data, &dlen),
	    TP_EPROTO);
	/* message length field disagreeing with the buffer */
	memcpy(b, sasl_first, sizeof(b));
	CHECK_EQ_INT(
	    pg_parse_sasl_initial(b, sizeof(b) - 2, &mech, &data, &dlen),
	    TP_EPROTO);
	put_be32(b + 1, 0x37);
	CHECK_EQ_INT(
	    pg_parse_sasl_initial(b, sizeof(b) - 1, &mech, &data, &dlen),
	    TP_EPROTO);
	CHECK_EQ_INT(pg_parse_sasl_initial(b, 4, &mech, &data, &dlen),
		     TP_EPROTO);
	CHECK_EQ_INT(pg_parse_sasl_initial(b, 0, &mech, &data, &dlen),
		     TP_EPROTO);
}

/* ---- pg_parse_body ---- */

static void test_parse_body(void)
{
	/* PasswordMessage carrying a (shortened) Entra access token */
	static const char pw[] = "p\x00\x00\x00\x19"
				 "eyJ0eXAiOiJKV1QiLCJh\0";
	static const char sync[] = "S\x00\x00\x00\x04";
	const uint8_t *data = NULL;
	size_t dlen = 0;

	CHECK_EQ_INT(pg_parse_body(LIT(pw), 'p', &data, &dlen), 0);
	CHECK(data == (const uint8_t *)pw + 5);
	CHECK_EQ_INT(dlen, 21);
	CHECK_EQ_STR((const char *)data, "eyJ0eXAiOiJKV1QiLCJh");
	CHECK_EQ_INT(pg_parse_body(LIT(sync), 'S', &data, &dlen), 0);
	CHECK_EQ_INT(dlen, 0);
	CHECK_EQ_INT(pg_parse_body(LIT(pw), 'Q', &data, &dlen), TP_EPROTO);
	CHECK_EQ_INT(pg_parse_body(LIT(pw) - 1, 'p', &data, &dlen), TP_EPROTO);
	CHECK_EQ_INT(pg_parse_body(LIT(sync) - 1, 'S', &data, &dlen),
		     TP_EPROTO);
	CHECK_EQ_INT(pg_parse_body((const uint8_t *)sync, 0, 'S', &data, &dlen),
		     TP_EPROTO);
	uint8_t b[sizeof(pw)];
	memcpy(b, pw, sizeof(b));
	put_be32(b + 1, 0xffffffffu);
	CHECK_EQ_INT(pg_parse_body(b, sizeof(b) - 1, 'p', &data, &dlen),
		     TP_EPROTO);
}

/* ---- pg_parse_ready ---- */

static void test_parse_ready(void)
{
	static const char st[] = "ITE";
	uint8_t z[7] = {'Z', 0, 0, 0, 5, 'I', 0};
	char status = 0;

	for (int i = 0; i < 3; i++) {
		z[5] = (uint8_t)st[i];
		status = 0;
		CHECK_EQ_INT(pg_parse_ready(z, 6, &status), 0);
		CHECK_EQ_INT(status, st[i]);
	}
	z[5] = 'X';
	CHECK_EQ_INT(pg_parse_ready(z, 6, &status), TP_EPROTO);
	z[5] = 0;
	CHECK_EQ_INT(pg_parse_ready(z, 6, &status), TP_EPROTO);
	z[5] = 'i';
	CHECK_EQ_INT(pg_parse_ready(z, 6, &status), TP_EPROTO);
	z[5] = 'I';
	CHECK_EQ_INT(pg_parse_ready(z, 5, &status), TP_EPROTO);
	CHECK_EQ_INT(pg_parse_ready(z, 7, &status), TP_EPROTO);
	z[4] = 6;
	CHECK_EQ_INT(pg_parse_ready(z, 6, &status), TP_EPROTO);
	z[4] = 5;
	z[0] = 'z';
	CHECK_EQ_INT(pg_parse_ready(z, 6, &status), TP_EPROTO);
}

/* ---- writers: round trips ---- */

static void test_write_startup_roundtrip(void)
{
	static const char *const keys[] = {"application_name",
					   "client_encoding"};
	static const char *const values[] = {"psql", "UTF8"};
	uint8_t b[256];
	pg_startup_t s;
	size_t n;

	n = pg_write_startup(b, sizeof(b), "alice", "appdb", keys, values, 2);
	/* same fields in the same order as psql: the very same bytes */
	CHECK_EQ_INT(n, PSQL_STARTUP_LEN);
	CHECK(n == PSQL_STARTUP_LEN && memcmp(b, psql_startup, n) == 0);
	CHECK_EQ_INT(pg_startup_parse(b, n, &s), 0);
	CHECK_EQ_INT(s.code, PG_PROTO_V3);
	CHECK_EQ_STR(s.user, "alice");
	CHECK_EQ_STR(s.database, "appdb");
	CHECK_EQ_INT(s.nparams, 2);
	CHECK_EQ_STR(s.keys[1], "client_encoding");
	CHECK_EQ_STR(s.values[1], "UTF8");

	n = pg_write_startup(b, sizeof(b), "", "", NULL, NULL, 0);
	CHECK_EQ_INT(n, 8 + 5 + 1 + 9 + 1 + 1);
	CHECK_EQ_INT(pg_startup_parse(b, n, &s), 0);
	CHECK_EQ_STR(s.user, "");
	CHECK_EQ_STR(s.database, "");
	CHECK_EQ_INT(s.nparams, 0);
}

static void test_write_startup_too_many(void)
{
	const char *keys[PG_MAX_PARAMS + 1], *values[PG_MAX_PARAMS + 1];
	uint8_t b[1024];
	pg_startup_t s;
	size_t n;

	for (size_t i = 0; i <= PG_MAX_PARAMS; i++) {
		keys[i] = "k";
		values[i] = "v";
	}
	n = pg_write_startup(b, sizeof(b), "u", "d", keys, values,
			     PG_MAX_PARAMS);
	CHECK(n > 0);
	CHECK_EQ_INT(pg_startup_parse(b, n, &s), 0);
	CHECK_EQ_INT(s.nparams, PG_MAX_PARAMS);
	n = pg_write_startup(b, sizeof(b), "u", "d", keys, values,
			     PG_MAX_PARAMS + 1);
	CHECK(n > 0);
	CHECK_EQ_INT(pg_startup_parse(b, n, &s), TP_ETOOBIG);
}

static void test_write_error_roundtrip(void)
{
	uint8_t b[256];
	pg_error_t e;
	size_t n, m = 0;

	n = pg_write_error(b, sizeof(b), "FATAL", "28000",
			   "no pool for user \"alice\"");
	CHECK(n > 0);
	CHECK_EQ_INT(b[0], 'E');
	CHECK_EQ_INT(pg_frame(b, n, &m), 0);
	CHECK_EQ_INT(m, n);
	CHECK_EQ_INT(pg_parse_error(b, n, &e), 0);
	CHECK_EQ_STR(e.severity, "FATAL");
	CHECK_EQ_STR(e.sqlstate, "28000");
	CHECK_EQ_STR(e.message, "no pool for user \"alice\"");
	/* empty strings are still fields */
	n = pg_write_error(b, sizeof(b), "", "", "");
	CHECK_EQ_INT(n, 5 + 4 * 2 + 1);
	CHECK_EQ_INT(pg_parse_error(b, n, &e), 0);
	CHECK_EQ_STR(e.severity, "");
	CHECK_EQ_STR(e.sqlstate, "");
	CHECK_EQ_STR(e.message, "");
}

static void test_write_auth_roundtrip(void)
{
	static const char mechs[] = "SCRAM-SHA-256\0";
	uint8_t b[64];
	uint32_t code = 0;
	const uint8_t *data;
	size_t dlen, n;

	n = pg_write_auth(b, sizeof(b), 10, mechs, sizeof(mechs));
	CHECK_EQ_INT(n, 9 + 15);
	CHECK_EQ_INT(pg_parse_auth(b, n, &code, &data, &dlen), 0);
	CHECK_EQ_INT(code, 10);
	CHECK_EQ_INT(dlen, 15);
	CHECK(dlen == 15 && memcmp(data, mechs, 15) == 0);

	n = pg_write_auth(b, sizeof(b), 0, NULL, 0);
	CHECK_EQ_INT(n, 9);
	CHECK(memcmp(b, "R\x00\x00\x00\x08\x00\x00\x00\x00", 9) == 0);
	CHECK_EQ_INT(pg_parse_auth(b, n, &code, &data, &dlen), 0);
	CHECK_EQ_INT(code, 0);
	CHECK_EQ_INT(dlen, 0);
}

static void test_write_ready_roundtrip(void)
{
	uint8_t b[8];
	char status = 0;

	CHECK_EQ_INT(pg_write_ready(b, sizeof(b), 'T'), 6);
	CHECK(memcmp(b, "Z\x00\x00\x00\x05T", 6) == 0);
	CHECK_EQ_INT(pg_parse_ready(b, 6, &status), 0);
	CHECK_EQ_INT(status, 'T');
	CHECK_EQ_INT(pg_write_ready(b, sizeof(b), 'I'), 6);
	CHECK_EQ_INT(pg_parse_ready(b, 6, &status), 0);
	CHECK_EQ_INT(status, 'I');
}

static void test_write_key_data(void)
{
	static const uint8_t key[8] = {0, 0, 0x30, 0x39, 1, 2, 3, 4};
	static const uint8_t want[13] = {'K',  0,    0, 0, 12, 0, 0,
					 0x30, 0x39, 1, 2, 3,  4};
	uint8_t b[16];
	const uint8_t *data;
	size_t n, m = 0, dlen;

	n = pg_write_key_data(b, sizeof(b), key);
	CHECK_EQ_INT(n, 13);
	CHECK(memcmp(b, want, 13) == 0);
	CHECK_EQ_INT(pg_frame(b, n, &m), 0);
	CHECK_EQ_INT(m, 13);
	CHECK_EQ_INT(pg_parse_body(b, n, 'K', &data, &dlen), 0);
	CHECK(dlen == 8 && memcmp(data, key, 8) == 0);
}

static void test_write_cancel_roundtrip(void)
{
	static const uint8_t key[8] = {0,    0,	   0x30, 0x39,
				       0xde, 0xad, 0xbe, 0xef};
	uint8_t b[32];
	pg_startup_t s;
	size_t n, m = 0;

	n = pg_write_cancel(b, sizeof(b), key);
	CHECK_EQ_INT(n, 16);
	CHECK(memcmp(b, cancel_request, 16) == 0);
	CHECK_EQ_INT(pg_startup_frame(b, n, &m), 0);
	CHECK_EQ_INT(m, 16);
	CHECK_EQ_INT(pg_startup_parse(b, n, &s), 0);
	CHECK_EQ_INT(s.code, PG_CODE_CANCEL);
	CHECK(memcmp(s.cancel_key, key, 8) == 0);
}

static void test_write_ssl_request_roundtrip(void)
{
	uint8_t b[8];
	pg_startup_t s;
	size_t n;

	n = pg_write_ssl_request(b, sizeof(b));
	CHECK_EQ_INT(n, 8);
	CHECK(memcmp(b, ssl_request, 8) == 0);
	CHECK_EQ_INT(pg_startup_parse(b, n, &s), 0);
	CHECK_EQ_INT(s.code, PG_CODE_SSL);
}

static void test_write_query_roundtrip(void)
{
	uint8_t b[32];
	const uint8_t *data;
	size_t n, m = 0, dlen;

	n = pg_write_query(b, sizeof(b), "DISCARD ALL");
	CHECK_EQ_INT(n, 5 + 12);
	CHECK(memcmp(b, "Q\x00\x00\x00\x10", 5) == 0);
	CHECK_EQ_INT(pg_frame(b, n, &m), 0);
	CHECK_EQ_INT(m, n);
	CHECK_EQ_INT(pg_parse_body(b, n, 'Q', &data, &dlen), 0);
	CHECK_EQ_INT(dlen, 12);
	CHECK_EQ_STR((const char *)data, "DISCARD ALL");
}

static void test_write_sasl_initial_roundtrip(void)
{
	static const char first[] = "n,,n=,r=rOprNGfwEbeRWgbNEkqO%hvY";
	uint8_t b[128];
	const char *mech;
	const uint8_t *data;
	size_t n, dlen;

	n = pg_write_sasl_initial(b, sizeof(b), "SCRAM-SHA-256", first,
				  sizeof(first) - 1);
	CHECK_EQ_INT(n, sizeof(sasl_first) - 1);
	CHECK(memcmp(b, sasl_first, sizeof(sasl_first) - 1) == 0);
	CHECK_EQ_INT(pg_parse_sasl_initial(b, n, &mech, &data, &dlen), 0);
	CHECK_EQ_STR(mech, "SCRAM-SHA-256");
	CHECK_EQ_INT(dlen, sizeof(first) - 1);
	CHECK(memcmp(data, first, sizeof(first) - 1) == 0);
}

/* ---- writers: every cap below what they need ---- */

static const uint8_t wkey[8] = {1, 2, 3, 4, 5, 6, 7, 8};

static size_t w_error(uint8_t *o, size_t c)
{
	return pg_write_error(o, c, "FATAL", "28000", "no such user");
}
static size_t w_auth(uint8_t *o, size_t c)
{
	return pg_write_auth(o, c, 10, "SCRAM-SHA-256\0", 15);
}
static size_t w_auth_ok(uint8_t *o, size_t c)
{
	return pg_write_auth(o, c, 0, NULL, 0);
}
static size_t w_ready(uint8_t *o, size_t c)
{
	return pg_write_ready(o, c, 'I');
}
static size_t w_key_data(uint8_t *o, size_t c)
{
	return pg_write_key_data(o, c, wkey);
}
static size_t w_startup(uint8_t *o, size_t c)
{
	static const char *const k[] = {"application_name"};
	static const char *const v[] = {"tokenpool"};

	return pg_write_startup(o, c, "alice", "appdb", k, v, 1);
}
static size_t w_ssl_request(uint8_t *o, size_t c)
{
	return pg_write_ssl_request(o, c);
}
static size_t w_cancel(uint8_t *o, size_t c)
{
	return pg_write_cancel(o, c, wkey);
}
static size_t w_query(uint8_t *o, size_t c)
{
	return pg_write_query(o, c, "DISCARD ALL");
}
static size_t w_sasl_initial(uint8_t *o, size_t c)
{
	return pg_write_sasl_initial(o, c, "SCRAM-SHA-256", "n,,n=,r=abc", 11);
}

#define CANARY 0xa5
#define WBUF   256

/* Calls w with every cap from 0 to exactly enough; below enough it must
 * return 0 and leave every byte from cap on untouched. */
static void check_caps(const char *name, size_t (*w)(uint8_t *, size_t))
{
	uint8_t ref[WBUF], b[WBUF];
	size_t need = w(ref, sizeof(ref));

	CHECK(need > 0 && need < WBUF - 32);
	if (need == 0 || need >= WBUF - 32)
		return;
	for (size_t cap = 0; cap <= need; cap++) {
		size_t got, bad = 0;

		memset(b, CANARY, sizeof(b));
		got = w(b, cap);
		for (size_t i = cap; i < sizeof(b); i++)
			bad += b[i] != CANARY;
		if (cap < need && (got != 0 || bad != 0))
			fprintf(stderr,
				"%s: cap %zu (need %zu): returned %zu, "
				"%zu bytes written past cap\n",
				name, cap, need, got, bad);
		if (cap < need) {
			CHECK_EQ_INT(got, 0);
			CHECK_EQ_INT(bad, 0);
		} else {
			CHECK_EQ_INT(got, need);
			CHECK_EQ_INT(bad, 0);
			CHECK(memcmp(b, ref, need) == 0);
		}
	}
}

static void test_writers_cap_exact_minus_one(void)
{
	static const struct {
		const char *name;
		size_t (*w)(uint8_t *, size_t);
	} ws[] = {
	    {"pg_write_error", w_error},
	    {"pg_write_auth", w_auth},
	    {"pg_write_auth(no data)", w_auth_ok},
	    {"pg_write_ready", w_ready},
	    {"pg_write_key_data", w_key_data},
	    {"pg_write_startup", w_startup},
	    {"pg_write_ssl_request", w_ssl_request},
	    {"pg_write_cancel", w_cancel},
	    {"pg_write_query", w_query},
	    {"pg_write_sasl_initial", w_sasl_initial},
	};
	uint8_t ref[WBUF], b[WBUF];

	/* the case the brief names: one byte short, canary right after */
	for (size_t i = 0; i < sizeof(ws) / sizeof(ws[0]); i++) {
		size_t need = ws[i].w(ref, sizeof(ref));

		CHECK(need > 0);
		if (need == 0)
			continue;
		memset(b, CANARY, sizeof(b));
		CHECK_EQ_INT(ws[i].w(b, need - 1), 0);
		CHECK_EQ_INT(b[need - 1], CANARY);
	}
}

static void test_writers_every_small_cap(void)
{
	check_caps("pg_write_error", w_error);
	check_caps("pg_write_auth", w_auth);
	check_caps("pg_write_auth(no data)", w_auth_ok);
	check_caps("pg_write_ready", w_ready);
	check_caps("pg_write_key_data", w_key_data);
	check_caps("pg_write_startup", w_startup);
	check_caps("pg_write_ssl_request", w_ssl_request);
	check_caps("pg_write_cancel", w_cancel);
	check_caps("pg_write_query", w_query);
}

/*
 * Kept apart so a failure names it: with cap < 5, put_str() computes
 * cap - 5, which wraps, so the mechanism, length and data are written
 * past cap and a non-zero length is returned.
 */
static void test_write_sasl_initial_small_cap(void)
{
	check_caps("pg_write_sasl_initial", w_sasl_initial);
}

/* ---- pg_sql_pins ---- */

static bool pins(const char *sql)
{
	return pg_sql_pins(sql, strlen(sql));
}

static void test_sql_pins(void)
{
	CHECK(pins("SET search_path = app"));
	CHECK(pins("set statement_timeout to 0"));
	CHECK(pins("RESET ALL"));
	CHECK(!pins("SET LOCAL search_path = app"));
	CHECK(!pins("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"));
	CHECK(pins("  /* hint */ LISTEN jobs"));
	CHECK(pins("-- prepared\nPREPARE q AS SELECT 1"));
	CHECK(pins("CREATE TEMP TABLE t (a int)"));
	CHECK(pins("create temporary table t (a int)"));
	CHECK(!pins("CREATE TABLE t (a int)"));
	CHECK(pins("DECLARE c CURSOR WITH HOLD FOR SELECT 1"));
	CHECK(!pins("DECLARE c CURSOR FOR SELECT 1"));
	CHECK(pins("SELECT pg_advisory_lock(42)"));
	CHECK(!pins("SELECT 1"));
	CHECK(!pins("SETTINGS"));
	CHECK(!pins(""));
	CHECK(!pins("/**/"));
	/* len is the limit, not the NUL: "SET" past len is not looked at */
	CHECK(!pg_sql_pins("SELECT 1; SET x = 1", 9));
}

/*
 * Kept apart so a failure names it: an unterminated comment at the end of
 * the text makes skip_blank() return len + 1 or len + 2, and word_is()
 * then computes len - i, which wraps, and compares bytes past len. Here the
 * bytes past len spell SET, so the answer depends on memory that is not
 * part of the query (a heap over-read in the proxy, where the query is a
 * partially buffered 'Q' message).
 */
/* Regression: state set by a later statement, by set_config() or by a
 * try-lock was missed, and leaked to other clients in transaction mode. */
static void test_sql_pins_any_statement_and_functions(void)
{
	const char *pins[] = {
	    "SELECT 1; SET search_path TO s, public",
	    "select set_config('search_path', 'x', false)",
	    "SELECT pg_try_advisory_lock(4343)",
	    "SELECT pg_advisory_lock_shared(1)",
	    "BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT 1; COMMIT",
	    "SELECT 1;\n  create temporary table t (a int)",
	};
	const char *free_[] = {
	    "SELECT pg_advisory_xact_lock(1)",
	    "SELECT pg_try_advisory_xact_lock(1)",
	    "BEGIN; SET LOCAL search_path TO x; SELECT 1; COMMIT",
	    "SELECT 'no state here'; SELECT 2",
	    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
	};

	for (size_t i = 0; i < sizeof(pins) / sizeof(pins[0]); i++) {
		if (!pg_sql_pins(pins[i], strlen(pins[i])))
			fprintf(stderr, "should pin: %s\n", pins[i]);
		CHECK(pg_sql_pins(pins[i], strlen(pins[i])));
	}
	for (size_t i = 0; i < sizeof(free_) / sizeof(free_[0]); i++) {
		if (pg_sql_pins(free_[i], strlen(free_[i])))
			fprintf(stderr, "should not pin: %s\n", free_[i]);
		CHECK(!pg_sql_pins(free_[i], strlen(free_[i])));
	}
}

static void test_sql_pins_unterminated_comment(void)
{
	static const char after[] = "/*\0\0SET";

	CHECK(!pg_sql_pins(after, 2));
	CHECK(!pg_sql_pins("/*x\0SET", 3));
	/* the plain case reads 1 to 11 bytes past len: padded with NULs here
	 * so the test does not crash under ASan */
	CHECK(!pg_sql_pins("/* never closed\0\0\0\0\0\0\0\0\0\0\0\0", 15));
}

static void test_pg_put_header(void)
{
	uint8_t h[5];

	pg_put_header(h, 'D', 0);
	CHECK(memcmp(h, "D\x00\x00\x00\x04", 5) == 0);
	pg_put_header(h, 'D', 0x01020300);
	CHECK(memcmp(h, "D\x01\x02\x03\x04", 5) == 0);
}

TP_TEST_MAIN(
    TP_TEST(test_startup_frame_need_more), TP_TEST(test_startup_frame_lengths),
    TP_TEST(test_startup_parse_psql), TP_TEST(test_startup_parse_no_database),
    TP_TEST(test_startup_parse_special),
    TP_TEST(test_startup_parse_special_bad_length),
    TP_TEST(test_startup_parse_malformed), TP_TEST(test_startup_parse_versions),
    TP_TEST(test_startup_parse_length_mismatch),
    TP_TEST(test_startup_parse_too_many_params), TP_TEST(test_frame_need_more),
    TP_TEST(test_frame_lengths), TP_TEST(test_parse_auth),
    TP_TEST(test_parse_auth_bad), TP_TEST(test_parse_error),
    TP_TEST(test_parse_error_notice_and_empty), TP_TEST(test_parse_error_bad),
    TP_TEST(test_parse_sasl_initial), TP_TEST(test_parse_sasl_initial_bad),
    TP_TEST(test_parse_body), TP_TEST(test_parse_ready),
    TP_TEST(test_write_startup_roundtrip), TP_TEST(test_write_startup_too_many),
    TP_TEST(test_write_error_roundtrip), TP_TEST(test_write_auth_roundtrip),
    TP_TEST(test_write_ready_roundtrip), TP_TEST(test_write_key_data),
    TP_TEST(test_write_cancel_roundtrip),
    TP_TEST(test_write_ssl_request_roundtrip),
    TP_TEST(test_write_query_roundtrip),
    TP_TEST(test_write_sasl_initial_roundtrip),
    TP_TEST(test_writers_cap_exact_minus_one),
    TP_TEST(test_writers_every_small_cap),
    TP_TEST(test_write_sasl_initial_small_cap), TP_TEST(test_sql_pins),
    TP_TEST(test_sql_pins_unterminated_comment),
    TP_TEST(test_sql_pins_any_statement_and_functions),
    TP_TEST(test_pg_put_header))
