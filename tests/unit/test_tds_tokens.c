/*
 * test_tds_tokens.c - unit tests for the TDS token writers and the reply
 * scanner.
 *
 * The scanner reads the replies printed in [MS-TDS] section 4 (a login
 * response, a SELECT, an RPC) and a result set built here with a column of
 * every type a server can send (fixed, BYTELEN, USHORTLEN, PLP with known
 * and unknown length, TEXT/NTEXT/IMAGE with text pointers, sql_variant,
 * XML with and without schema, UDT, the TDS 7.3 date/time types), in ROW
 * and NBCROW form. Every input is also fed in chunks of every size so that
 * each state boundary meets a chunk boundary; the events must not change.
 * Writers are checked byte for byte against the spec's login response and
 * called with every cap below what they need (canary past cap).
 *
 * Not here: packets, PRELOGIN, LOGIN7 (test_tds_codec.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/tds/tds.h"
#include "tests/unit/tp_test.h"

static const uint8_t spec_login_reply[] = {
    0x04, 0x01, 0x01, 0x61, 0x00, 0x00, 0x01, 0x00, 0xE3, 0x1B, 0x00, 0x01,
    0x06, 0x6D, 0x00, 0x61, 0x00, 0x73, 0x00, 0x74, 0x00, 0x65, 0x00, 0x72,
    0x00, 0x06, 0x6D, 0x00, 0x61, 0x00, 0x73, 0x00, 0x74, 0x00, 0x65, 0x00,
    0x72, 0x00, 0xAB, 0x58, 0x00, 0x45, 0x16, 0x00, 0x00, 0x02, 0x00, 0x25,
    0x00, 0x43, 0x00, 0x68, 0x00, 0x61, 0x00, 0x6E, 0x00, 0x67, 0x00, 0x65,
    0x00, 0x64, 0x00, 0x20, 0x00, 0x64, 0x00, 0x61, 0x00, 0x74, 0x00, 0x61,
    0x00, 0x62, 0x00, 0x61, 0x00, 0x73, 0x00, 0x65, 0x00, 0x20, 0x00, 0x63,
    0x00, 0x6F, 0x00, 0x6E, 0x00, 0x74, 0x00, 0x65, 0x00, 0x78, 0x00, 0x74,
    0x00, 0x20, 0x00, 0x74, 0x00, 0x6F, 0x00, 0x20, 0x00, 0x27, 0x00, 0x6D,
    0x00, 0x61, 0x00, 0x73, 0x00, 0x74, 0x00, 0x65, 0x00, 0x72, 0x00, 0x27,
    0x00, 0x2E, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xE3, 0x08, 0x00,
    0x07, 0x05, 0x09, 0x04, 0xD0, 0x00, 0x34, 0x00, 0xE3, 0x17, 0x00, 0x02,
    0x0A, 0x75, 0x00, 0x73, 0x00, 0x5F, 0x00, 0x65, 0x00, 0x6E, 0x00, 0x67,
    0x00, 0x6C, 0x00, 0x69, 0x00, 0x73, 0x00, 0x68, 0x00, 0x00, 0xE3, 0x13,
    0x00, 0x04, 0x04, 0x34, 0x00, 0x30, 0x00, 0x39, 0x00, 0x36, 0x00, 0x04,
    0x34, 0x00, 0x30, 0x00, 0x39, 0x00, 0x36, 0x00, 0xAB, 0x5C, 0x00, 0x47,
    0x16, 0x00, 0x00, 0x01, 0x00, 0x27, 0x00, 0x43, 0x00, 0x68, 0x00, 0x61,
    0x00, 0x6E, 0x00, 0x67, 0x00, 0x65, 0x00, 0x64, 0x00, 0x20, 0x00, 0x6C,
    0x00, 0x61, 0x00, 0x6E, 0x00, 0x67, 0x00, 0x75, 0x00, 0x61, 0x00, 0x67,
    0x00, 0x65, 0x00, 0x20, 0x00, 0x73, 0x00, 0x65, 0x00, 0x74, 0x00, 0x74,
    0x00, 0x69, 0x00, 0x6E, 0x00, 0x67, 0x00, 0x20, 0x00, 0x74, 0x00, 0x6F,
    0x00, 0x20, 0x00, 0x75, 0x00, 0x73, 0x00, 0x5F, 0x00, 0x65, 0x00, 0x6E,
    0x00, 0x67, 0x00, 0x6C, 0x00, 0x69, 0x00, 0x73, 0x00, 0x68, 0x00, 0x2E,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xAD, 0x36, 0x00, 0x01, 0x72,
    0x09, 0x00, 0x02, 0x16, 0x4D, 0x00, 0x69, 0x00, 0x63, 0x00, 0x72, 0x00,
    0x6F, 0x00, 0x73, 0x00, 0x6F, 0x00, 0x66, 0x00, 0x74, 0x00, 0x20, 0x00,
    0x53, 0x00, 0x51, 0x00, 0x4C, 0x00, 0x20, 0x00, 0x53, 0x00, 0x65, 0x00,
    0x72, 0x00, 0x76, 0x00, 0x65, 0x00, 0x72, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0xFD, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00,
};

static const uint8_t spec_select_reply[] = {
    0x04, 0x01, 0x00, 0x33, 0x00, 0x00, 0x01, 0x00, 0x81, 0x01, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0xA7, 0x03, 0x00, 0x09, 0x04,
    0xD0, 0x00, 0x34, 0x03, 0x62, 0x00, 0x61, 0x00, 0x72, 0x00, 0xD1,
    0x03, 0x00, 0x66, 0x6F, 0x6F, 0xFD, 0x10, 0x00, 0xC1, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};

static const uint8_t spec_rpc_reply[] = {
    0x04, 0x01, 0x00, 0x27, 0x00, 0x00, 0x01, 0x00, 0xFF, 0x11,
    0x00, 0xC1, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x79, 0x00, 0x00, 0x00, 0x00, 0xFE, 0x00, 0x00, 0xE0,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};

#define CANARY 0xCC

static uint8_t *canary_buf(size_t cap)
{
	uint8_t *b = malloc(cap + 32);

	memset(b, CANARY, cap + 32);
	return b;
}

static bool canary_ok(const uint8_t *b, size_t cap)
{
	for (size_t i = cap; i < cap + 32; i++)
		if (b[i] != CANARY)
			return false;
	return true;
}

/* ---- a byte builder for replies ---- */

typedef struct bb {
	uint8_t d[16384];
	size_t n;
} bb_t;

static void b8(bb_t *b, uint8_t v)
{
	b->d[b->n++] = v;
}

static void b16(bb_t *b, uint16_t v)
{
	b8(b, (uint8_t)v);
	b8(b, (uint8_t)(v >> 8));
}

static void b32(bb_t *b, uint32_t v)
{
	b16(b, (uint16_t)v);
	b16(b, (uint16_t)(v >> 16));
}

static void b64(bb_t *b, uint64_t v)
{
	b32(b, (uint32_t)v);
	b32(b, (uint32_t)(v >> 32));
}

static void bfill(bb_t *b, uint8_t v, size_t n)
{
	memset(b->d + b->n, v, n);
	b->n += n;
}

static void bmem(bb_t *b, const void *p, size_t n)
{
	memcpy(b->d + b->n, p, n);
	b->n += n;
}

/* ASCII as UTF-16LE, without a length. */
static void bucs(bb_t *b, const char *s)
{
	for (; *s; s++)
		b16(b, (uint8_t)*s);
}

static void bvarchar(bb_t *b, const char *s)
{
	b8(b, (uint8_t)strlen(s));
	bucs(b, s);
}

static void usvarchar(bb_t *b, const char *s)
{
	b16(b, (uint16_t)strlen(s));
	bucs(b, s);
}

static const uint8_t coll[5] = {0x09, 0x04, 0xD0, 0x00, 0x34};

/* ---- running the scanner ---- */

/* What an event said, copied out before the next feed. */
typedef struct seen {
	int kind;
	uint8_t token;
	uint8_t env_type;
	int32_t number;
	uint16_t status;
	uint64_t rows;
	uint16_t port;
	uint8_t feature;
	bool truncated;
	bool recoverable;
	uint32_t seqno;
	uint32_t tds_version;
	size_t len;	/* env new value / message / feature data length */
	char text[600]; /* env new value, message, host, prog name (UTF-8) */
	char db[64];	/* ENVCHANGE 21 database */
} seen_t;

#define MAX_SEEN 64

typedef struct run {
	seen_t ev[MAX_SEEN];
	int n;
	int err;
	bool idle;
	tds_scan_t s;
} run_t;

static void text_of(const uint8_t *p, size_t n, char *out, size_t cap)
{
	out[0] = 0;
	if (p && tds_utf16_to_utf8(p, n, out, cap, NULL) != 0)
		strcpy(out, "<bad utf16>");
}

static void record(run_t *r, const tds_event_t *e)
{
	seen_t *v;

	if (r->n >= MAX_SEEN)
		return;
	v = &r->ev[r->n++];
	memset(v, 0, sizeof(*v));
	v->kind = e->kind;
	v->token = e->token;
	v->env_type = e->env_type;
	v->number = e->number;
	v->status = e->status;
	v->rows = e->rows;
	v->port = e->route_port;
	v->feature = e->feature_id;
	v->truncated = e->truncated;
	v->recoverable = e->recoverable;
	v->seqno = e->seqno;
	v->tds_version = e->tds_version;
	switch (e->kind) {
	case TDS_EV_ENVCHANGE:
		v->len = e->env_new_len;
		if (e->route_host) {
			text_of(e->route_host, e->route_host_len, v->text,
				sizeof(v->text));
			text_of(e->route_db, e->route_db_len, v->db,
				sizeof(v->db));
		} else if (e->env_type <= TDS_ENV_SORTFLAGS) {
			text_of(e->env_new, e->env_new_len, v->text,
				sizeof(v->text));
		}
		break;
	case TDS_EV_ERROR:
	case TDS_EV_INFO:
		v->len = e->msg_len;
		text_of(e->msg, e->msg_len, v->text, sizeof(v->text));
		break;
	case TDS_EV_LOGINACK:
		text_of(e->prog_name, e->prog_name_len, v->text,
			sizeof(v->text));
		break;
	case TDS_EV_FEATUREEXTACK:
		v->len = e->feature_len;
		break;
	}
}

/* Feeds len bytes in chunks of chunk; stops at the first error. */
static void scan(run_t *r, const uint8_t *buf, size_t len, size_t chunk)
{
	size_t pos = 0;

	memset(r, 0, sizeof(*r));
	tds_scan_init(&r->s);
	while (pos < len) {
		size_t end = len - pos < chunk ? len : pos + chunk, used;

		while (pos < end) {
			int rc =
			    tds_scan_feed(&r->s, buf + pos, end - pos, &used);

			CHECK(used <= end - pos);
			pos += used;
			if (rc < 0) {
				r->err = rc;
				return;
			}
			if (rc == 0) {
				CHECK_EQ_INT(pos, end);
				break;
			}
			CHECK_EQ_INT(rc, r->s.ev.kind);
			record(r, &r->s.ev);
		}
	}
	r->idle = tds_scan_idle(&r->s);
}

static bool same_runs(const run_t *a, const run_t *b)
{
	if (a->n != b->n || a->err != b->err || a->idle != b->idle)
		return false;
	for (int i = 0; i < a->n; i++)
		if (memcmp(&a->ev[i], &b->ev[i], sizeof(seen_t)) != 0)
			return false;
	return true;
}

/* The events whole must be the events in every chunk size. */
static void scan_every_chunk(const uint8_t *buf, size_t len, run_t *whole)
{
	static run_t r;

	scan(whole, buf, len, len ? len : 1);
	for (size_t chunk = 1; chunk < len; chunk++) {
		scan(&r, buf, len, chunk);
		if (!same_runs(whole, &r)) {
			CHECK(!"chunked scan differs");
			fprintf(stderr, "  at chunk size %zu\n", chunk);
			return;
		}
	}
}

/* ---- the spec's replies ---- */

static void test_scan_spec_login(void)
{
	static run_t r;

	scan_every_chunk(spec_login_reply + 8, sizeof(spec_login_reply) - 8,
			 &r);
	CHECK_EQ_INT(r.err, 0);
	CHECK(r.idle);
	CHECK_EQ_INT(r.n, 8);
	CHECK_EQ_INT(r.ev[0].kind, TDS_EV_ENVCHANGE);
	CHECK_EQ_INT(r.ev[0].env_type, TDS_ENV_DATABASE);
	CHECK_EQ_STR(r.ev[0].text, "master");
	CHECK_EQ_INT(r.ev[1].kind, TDS_EV_INFO);
	CHECK_EQ_INT(r.ev[1].number, 5701);
	CHECK_EQ_STR(r.ev[1].text, "Changed database context to 'master'.");
	CHECK_EQ_INT(r.ev[2].env_type, TDS_ENV_COLLATION);
	CHECK_EQ_INT(r.ev[2].len, 5);
	CHECK_EQ_INT(r.ev[3].env_type, TDS_ENV_LANGUAGE);
	CHECK_EQ_STR(r.ev[3].text, "us_english");
	CHECK_EQ_INT(r.ev[4].env_type, TDS_ENV_PACKETSIZE);
	CHECK_EQ_STR(r.ev[4].text, "4096");
	CHECK_EQ_INT(r.ev[5].number, 5703);
	CHECK_EQ_INT(r.ev[6].kind, TDS_EV_LOGINACK);
	CHECK_EQ_INT(r.ev[6].tds_version, TDS_VER_72);
	CHECK_EQ_STR(r.ev[6].text, "Microsoft SQL Server");
	CHECK_EQ_INT(r.ev[7].kind, TDS_EV_DONE);
	CHECK_EQ_INT(r.ev[7].status, 0);
	CHECK(!r.s.in_txn);
}

static void test_scan_spec_select_and_rpc(void)
{
	static run_t r;
	/* PROTOCOLS.md: the reply to SELECT 1 */
	static const uint8_t select1[] = {
	    0x81, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x38,
	    0x00, 0xD1, 0x01, 0x00, 0x00, 0x00, 0xFD, 0x10, 0x00, 0xC1,
	    0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};

	scan_every_chunk(spec_select_reply + 8, sizeof(spec_select_reply) - 8,
			 &r);
	CHECK_EQ_INT(r.err, 0);
	CHECK(r.idle);
	CHECK_EQ_INT(r.n, 1);
	CHECK_EQ_INT(r.ev[0].status, TDS_DONE_COUNT);
	CHECK_EQ_INT(r.ev[0].rows, 1);
	CHECK_EQ_INT(r.s.ncols, 1);

	scan_every_chunk(select1, sizeof(select1), &r);
	CHECK_EQ_INT(r.err, 0);
	CHECK(r.idle);
	CHECK_EQ_INT(r.n, 1);
	CHECK_EQ_INT(r.ev[0].rows, 1);

	scan_every_chunk(spec_rpc_reply + 8, sizeof(spec_rpc_reply) - 8, &r);
	CHECK_EQ_INT(r.err, 0);
	CHECK(r.idle);
	CHECK_EQ_INT(r.n, 2);
	CHECK_EQ_INT(r.ev[0].token, TDS_TOK_DONEINPROC);
	CHECK_EQ_INT(r.ev[0].status, TDS_DONE_MORE | TDS_DONE_COUNT);
	CHECK_EQ_INT(r.ev[1].token, TDS_TOK_DONEPROC);
	CHECK_EQ_INT(r.ev[1].status, 0);
}

/* ---- a result set with every type ---- */

static void col(bb_t *b, uint16_t flags, uint8_t type)
{
	b32(b, 0);
	b16(b, flags);
	b8(b, type);
}

/* COLMETADATA for 37 columns; see rich_row() for the values. */
static uint16_t rich_metadata(bb_t *b)
{
	static const uint8_t fixed[] = {0x3C, 0x3D, 0x3E, 0x7F, 0x32, 0x30,
					0x34, 0x3A, 0x3B, 0x7A, 0x1F};
	uint16_t n = 0;
	size_t count_at;

	b8(b, TDS_TOK_COLMETADATA);
	count_at = b->n;
	b16(b, 0);
	col(b, 0, 0x38); /* int */
	bvarchar(b, "i4"), n++;
	col(b, 1, 0x26), b8(b, 8); /* bigint null */
	bvarchar(b, "in"), n++;
	col(b, 1, 0x68), b8(b, 1); /* bit null */
	bvarchar(b, "bn"), n++;
	col(b, 1, 0x6D), b8(b, 8); /* float */
	bvarchar(b, "fn"), n++;
	col(b, 1, 0x6E), b8(b, 8); /* money */
	bvarchar(b, "mn"), n++;
	col(b, 1, 0x6F), b8(b, 8); /* datetime */
	bvarchar(b, "dn"), n++;
	col(b, 1, 0x6A), b8(b, 17), b8(b, 38), b8(b, 2); /* decimal(38,2) */
	bvarchar(b, "dec"), n++;
	col(b, 1, 0x6C), b8(b, 5), b8(b, 9), b8(b, 0); /* numeric(9) */
	bvarchar(b, "num"), n++;
	col(b, 1, 0x24), b8(b, 16); /* uniqueidentifier */
	bvarchar(b, "g"), n++;
	col(b, 1, 0x28); /* date */
	bvarchar(b, "d"), n++;
	col(b, 1, 0x29), b8(b, 7); /* time(7) */
	bvarchar(b, "t"), n++;
	col(b, 1, 0x2A), b8(b, 3); /* datetime2(3) */
	bvarchar(b, "dt2"), n++;
	col(b, 1, 0x2B), b8(b, 0); /* datetimeoffset(0) */
	bvarchar(b, "dto"), n++;
	col(b, 1, 0xA7), b16(b, 50), bmem(b, coll, 5); /* varchar(50) */
	bvarchar(b, "vc"), n++;
	col(b, 1, 0xE7), b16(b, 0xFFFF), bmem(b, coll, 5); /* nvarchar(max) */
	bvarchar(b, "nvm"), n++;
	col(b, 1, 0xA5), b16(b, 0xFFFF); /* varbinary(max) */
	bvarchar(b, "vbm"), n++;
	col(b, 1, 0xAD), b16(b, 4); /* binary(4) */
	bvarchar(b, "bin"), n++;
	col(b, 1, 0xEF), b16(b, 4), bmem(b, coll, 5); /* nchar(2) */
	bvarchar(b, "nc"), n++;
	col(b, 1, 0x23), b32(b, 0x7FFFFFFF), bmem(b, coll, 5); /* text */
	b8(b, 2), usvarchar(b, "dbo"), usvarchar(b, "tbl");
	bvarchar(b, "txt"), n++;
	col(b, 1, 0x63), b32(b, 0x7FFFFFFE), bmem(b, coll, 5); /* ntext */
	b8(b, 1), usvarchar(b, "tbl");
	bvarchar(b, "ntxt"), n++;
	col(b, 1, 0x22), b32(b, 0x7FFFFFFF); /* image */
	b8(b, 3), usvarchar(b, "db"), usvarchar(b, "dbo"), usvarchar(b, "t");
	bvarchar(b, "img"), n++;
	col(b, 1, 0x62), b32(b, 8009); /* sql_variant */
	bvarchar(b, "var"), n++;
	col(b, 1, 0xF1), b8(b, 0); /* xml */
	bvarchar(b, "x"), n++;
	col(b, 1, 0xF1), b8(b, 1); /* xml(schema) */
	bvarchar(b, "db"), bvarchar(b, "dbo"), usvarchar(b, "coll");
	bvarchar(b, "xs"), n++;
	col(b, 1, 0xF0), b16(b, 892); /* hierarchyid */
	bvarchar(b, "db"), bvarchar(b, "sys"), bvarchar(b, "hierarchyid");
	usvarchar(b, "Microsoft.SqlServer.Types.SqlHierarchyId");
	bvarchar(b, "udt"), n++;
	for (size_t i = 0; i < sizeof(fixed); i++) {
		col(b, 0, fixed[i]);
		bvarchar(b, "f"), n++;
	}
	col(b, 1, 0x27), b8(b, 20); /* legacy varchar(20) */
	bvarchar(b, "lvc"), n++;
	b->d[count_at] = (uint8_t)n;
	b->d[count_at + 1] = (uint8_t)(n >> 8);
	return n;
}

/* Values of the columns above; with nbc, every odd column is NULL and
 * left out. */
static void rich_row(bb_t *b, bool nbc, uint16_t ncols)
{
	int c = 0;

#define COL if (!nbc || (c++ & 1) == 0)
	b8(b, nbc ? TDS_TOK_NBCROW : TDS_TOK_ROW);
	if (nbc)
		for (int i = 0; i < (ncols + 7) / 8; i++)
			b8(b, 0xAA); /* odd columns NULL */
	COL b32(b, 7);
	COL b8(b, 8), b64(b, 1);
	COL b8(b, 1), b8(b, 1);
	COL b8(b, 8), b64(b, 0x4000000000000000ull);
	COL b8(b, 0); /* money NULL */
	COL b8(b, 8), b64(b, 0);
	COL b8(b, 17), bfill(b, 1, 17);
	COL b8(b, 5), bfill(b, 2, 5);
	COL b8(b, 16), bfill(b, 3, 16);
	COL b8(b, 3), bfill(b, 4, 3);
	COL b8(b, 5), bfill(b, 5, 5);
	COL b8(b, 7), bfill(b, 6, 7);
	COL b8(b, 8), bfill(b, 7, 8);
	COL b16(b, 5), bmem(b, "hello", 5);
	COL
	{
		b64(b, 10); /* nvarchar(max) in two chunks */
		b32(b, 4), bfill(b, 0xD1, 4);
		b32(b, 6), bfill(b, 0xFD, 6);
		b32(b, 0);
	}
	COL
	{
		b64(b, 0xFFFFFFFFFFFFFFFEull); /* unknown length */
		b32(b, 3), bfill(b, 0xFF, 3);
		b32(b, 0);
	}
	COL b16(b, 4), bfill(b, 0xE3, 4);
	COL b16(b, 0xFFFF); /* nchar NULL */
	COL
	{
		b8(b, 16), bfill(b, 0x81, 16), bfill(b, 0, 8); /* text */
		b32(b, 5), bmem(b, "abcde", 5);
	}
	COL b8(b, 0); /* ntext NULL */
	COL
	{
		b8(b, 16), bfill(b, 0x88, 16), bfill(b, 0, 8); /* image */
		b32(b, 0);
	}
	COL b32(b, 6), b8(b, 0x38), b8(b, 0), b32(b, 42); /* variant int */
	COL b64(b, 0xFFFFFFFFFFFFFFFFull);		  /* xml NULL */
	COL b64(b, 3), b32(b, 3), bmem(b, "<a/", 3), b32(b, 0);
	COL b64(b, 2), b32(b, 2), bfill(b, 0x58, 2), b32(b, 0);
	COL b64(b, 5);
	COL b64(b, 6);
	COL b64(b, 7);
	COL b64(b, 8);
	COL b8(b, 1);
	COL b8(b, 2);
	COL b16(b, 3);
	COL b32(b, 4);
	COL b32(b, 5);
	COL b32(b, 6);
	COL
	{
	} /* NULLTYPE: nothing */
	COL b8(b, 3), bmem(b, "abc", 3);
#undef COL
}

static void done(bb_t *b, uint8_t tok, uint16_t status, uint64_t rows)
{
	b->n += tds_put_done(b->d + b->n, sizeof(b->d) - b->n, tok, status,
			     0xC1, rows);
}

static void test_scan_every_type(void)
{
	static bb_t b;
	static run_t r, part;
	uint16_t n;

	b.n = 0;
	n = rich_metadata(&b);
	CHECK_EQ_INT(n, 37);
	rich_row(&b, false, n);
	rich_row(&b, true, n);
	rich_row(&b, false, n);
	done(&b, TDS_TOK_DONE, TDS_DONE_COUNT, 3);
	scan_every_chunk(b.d, b.n, &r);
	CHECK_EQ_INT(r.err, 0);
	CHECK(r.idle);
	CHECK_EQ_INT(r.n, 1);
	CHECK_EQ_INT(r.ev[0].kind, TDS_EV_DONE);
	CHECK_EQ_INT(r.ev[0].rows, 3);
	CHECK_EQ_INT(r.s.ncols, 37);
	/* cut anywhere before the end: no DONE, and no error */
	for (size_t cut = 0; cut < b.n; cut++) {
		scan(&part, b.d, cut, cut ? cut : 1);
		CHECK_EQ_INT(part.err, 0);
		CHECK_EQ_INT(part.n, 0);
	}
}

/* The same result set with one byte changed must never crash, and a
 * length that grows past the end leaves the scanner mid-token. */
static void test_scan_every_type_mutated(void)
{
	static bb_t b;
	static run_t r;
	uint16_t n;

	b.n = 0;
	n = rich_metadata(&b);
	rich_row(&b, true, n);
	done(&b, TDS_TOK_DONE, 0, 1);
	for (size_t i = 0; i < b.n; i++) {
		uint8_t keep = b.d[i];

		b.d[i] ^= 0x5A;
		scan(&r, b.d, b.n, 1 + i % 97);
		CHECK(r.err == 0 || r.err == TP_EPROTO || r.err == TP_ETOOBIG);
		b.d[i] = keep;
	}
}

/* ---- ENVCHANGE: transactions, reset, routing ---- */

static void test_scan_transactions(void)
{
	static const uint8_t desc[8] = {0x21, 0, 0, 0, 0x10, 0, 0, 0};
	static bb_t b;
	static run_t r;
	uint8_t *p;

	b.n = 0;
	p = b.d;
	b.n += tds_put_envchange_bytes(p + b.n, 200, TDS_ENV_BEGINTRAN, desc, 8,
				       NULL, 0);
	done(&b, TDS_TOK_DONE, TDS_DONE_INXACT, 0);
	scan_every_chunk(b.d, b.n, &r);
	CHECK_EQ_INT(r.err, 0);
	CHECK_EQ_INT(r.n, 2);
	CHECK_EQ_INT(r.ev[0].env_type, TDS_ENV_BEGINTRAN);
	CHECK_EQ_INT(r.ev[0].len, 8);
	CHECK(r.s.in_txn);
	CHECK(memcmp(r.s.txn, desc, 8) == 0);

	static const uint8_t ends[] = {TDS_ENV_COMMITTRAN, TDS_ENV_ROLLBACKTRAN,
				       TDS_ENV_TRANENDED, TDS_ENV_DEFECTTRAN};
	for (size_t i = 0; i < sizeof(ends); i++) {
		size_t begin;

		b.n = tds_put_envchange_bytes(p, 200, TDS_ENV_BEGINTRAN, desc,
					      8, NULL, 0);
		begin = b.n;
		b.n += tds_put_envchange_bytes(p + b.n, 200, ends[i], NULL, 0,
					       desc, 8);
		done(&b, TDS_TOK_DONE, 0, 0);
		CHECK(b.n > begin);
		scan(&r, b.d, b.n, 3);
		CHECK_EQ_INT(r.err, 0);
		CHECK_EQ_INT(r.n, 3);
		CHECK_EQ_INT(r.ev[1].env_type, ends[i]);
		CHECK(!r.s.in_txn);
		CHECK_EQ_INT(r.s.txn[0], 0);
	}
	/* reset acknowledgement: empty values */
	b.n =
	    tds_put_envchange_bytes(p, 200, TDS_ENV_RESETACK, NULL, 0, NULL, 0);
	CHECK(memcmp(b.d, "\xE3\x03\x00\x12\x00\x00", 6) == 0);
	done(&b, TDS_TOK_DONE, 0, 0);
	scan(&r, b.d, b.n, 1);
	CHECK_EQ_INT(r.n, 2);
	CHECK_EQ_INT(r.ev[0].env_type, TDS_ENV_RESETACK);
}

static void test_scan_routing(void)
{
	static bb_t b;
	static run_t r;
	size_t len_at;

	b.n = tds_put_envchange_routing(b.d, sizeof(b.d), 11042,
					"w1.tr7.westeurope1-a.worker.database."
					"windows.net");
	CHECK(b.n > 0);
	done(&b, TDS_TOK_DONE, 0, 0);
	scan_every_chunk(b.d, b.n, &r);
	CHECK_EQ_INT(r.err, 0);
	CHECK_EQ_INT(r.n, 2);
	CHECK_EQ_INT(r.ev[0].env_type, TDS_ENV_ROUTING);
	CHECK_EQ_INT(r.ev[0].port, 11042);
	CHECK_EQ_STR(r.ev[0].text,
		     "w1.tr7.westeurope1-a.worker.database.windows.net");
	/* enhanced routing, built by hand: host and database */
	b.n = 0;
	b8(&b, TDS_TOK_ENVCHANGE);
	len_at = b.n;
	b16(&b, 0);
	b8(&b, TDS_ENV_ENHANCEDROUTING);
	b16(&b, 3 + 2 + 8 + 2 + 4);
	b8(&b, 0), b16(&b, 1433), usvarchar(&b, "host"), usvarchar(&b, "db");
	b16(&b, 0);
	b.d[len_at] = (uint8_t)(b.n - 3);
	scan(&r, b.d, b.n, 2);
	CHECK_EQ_INT(r.err, 0);
	CHECK_EQ_INT(r.n, 1);
	CHECK_EQ_INT(r.ev[0].port, 1433);
	CHECK_EQ_STR(r.ev[0].text, "host");
	CHECK_EQ_STR(r.ev[0].db, "db");
	/* protocol other than TCP, port 0, host past the routing data */
	b.d[len_at + 5] = 1;
	scan(&r, b.d, b.n, 64);
	CHECK_EQ_INT(r.err, TP_EPROTO);
	b.d[len_at + 5] = 0;
	b.d[len_at + 6] = 0;
	b.d[len_at + 7] = 0;
	scan(&r, b.d, b.n, 64);
	CHECK_EQ_INT(r.err, TP_EPROTO);
	b.d[len_at + 6] = 1;
	b.d[len_at + 3] = 10;
	scan(&r, b.d, b.n, 64);
	CHECK_EQ_INT(r.err, TP_EPROTO);
}

/* ---- ERROR, INFO ---- */

static void test_scan_error(void)
{
	static bb_t b;
	static run_t r;
	char big[701];

	b.n = tds_put_message(b.d, sizeof(b.d), TDS_TOK_ERROR, 18456, 1, 14,
			      "Login failed for user 'alice'.", "tokenpool", "",
			      1);
	done(&b, TDS_TOK_DONE, TDS_DONE_ERROR, 0);
	scan_every_chunk(b.d, b.n, &r);
	CHECK_EQ_INT(r.err, 0);
	CHECK_EQ_INT(r.n, 2);
	CHECK_EQ_INT(r.ev[0].kind, TDS_EV_ERROR);
	CHECK_EQ_INT(r.ev[0].number, 18456);
	CHECK_EQ_STR(r.ev[0].text, "Login failed for user 'alice'.");
	CHECK(!r.ev[0].truncated);
	CHECK_EQ_INT(r.ev[1].status, TDS_DONE_ERROR);
	/* a message longer than the capture: cut short, stream intact */
	memset(big, 'm', 700);
	big[700] = 0;
	b.n = tds_put_message(b.d, sizeof(b.d), TDS_TOK_ERROR, 50000, 1, 16,
			      big, "s", "p", 3);
	CHECK(b.n > TDS_SCAN_CAP);
	done(&b, TDS_TOK_DONE, TDS_DONE_ERROR, 0);
	scan_every_chunk(b.d, b.n, &r);
	CHECK_EQ_INT(r.err, 0);
	CHECK_EQ_INT(r.n, 2);
	CHECK(r.ev[0].truncated);
	CHECK_EQ_INT(r.ev[0].number, 50000);
	CHECK_EQ_INT(r.ev[0].len, TDS_SCAN_CAP - 8);
	CHECK_EQ_INT(r.ev[1].kind, TDS_EV_DONE);
	/* a message longer than its token */
	b.n = tds_put_message(b.d, sizeof(b.d), TDS_TOK_INFO, 1, 1, 0, "abc",
			      "", "", 0);
	b.d[9] = 40;
	scan(&r, b.d, b.n, 5);
	CHECK_EQ_INT(r.err, TP_EPROTO);
}

/* ---- FEATUREEXTACK, SESSIONSTATE, LOGINACK ---- */

static void test_scan_featureextack(void)
{
	static const uint8_t one = 1;
	uint8_t big[2000];
	tds_feature_t f[3] = {{TDS_FEAT_FEDAUTH, NULL, 0},
			      {TDS_FEAT_UTF8_SUPPORT, &one, 1},
			      {0x42, big, sizeof(big)}};
	static bb_t b;
	static run_t r;

	memset(big, 7, sizeof(big));
	b.n = tds_put_featureextack(b.d, sizeof(b.d), f, 3);
	done(&b, TDS_TOK_DONE, 0, 0);
	scan_every_chunk(b.d, b.n, &r);
	CHECK_EQ_INT(r.err, 0);
	CHECK_EQ_INT(r.n, 4);
	CHECK_EQ_INT(r.ev[0].feature, TDS_FEAT_FEDAUTH);
	CHECK_EQ_INT(r.ev[0].len, 0);
	CHECK_EQ_INT(r.ev[1].feature, TDS_FEAT_UTF8_SUPPORT);
	CHECK_EQ_INT(r.ev[1].len, 1);
	CHECK_EQ_INT(r.ev[2].feature, 0x42);
	CHECK(r.ev[2].truncated);
	CHECK_EQ_INT(r.ev[2].len, TDS_SCAN_CAP);
	CHECK_EQ_INT(r.ev[3].kind, TDS_EV_DONE);
}

static void test_scan_sessionstate(void)
{
	static bb_t b;
	static run_t r;

	b.n = 0;
	b8(&b, TDS_TOK_SESSIONSTATE);
	b32(&b, 4 + 1 + 1 + 1 + 3);
	b32(&b, 7), b8(&b, 1), b8(&b, 0), b8(&b, 3), bfill(&b, 9, 3);
	done(&b, TDS_TOK_DONE, 0, 0);
	scan_every_chunk(b.d, b.n, &r);
	CHECK_EQ_INT(r.err, 0);
	CHECK_EQ_INT(r.n, 2);
	CHECK_EQ_INT(r.ev[0].kind, TDS_EV_SESSIONSTATE);
	CHECK_EQ_INT(r.ev[0].seqno, 7);
	CHECK(r.ev[0].recoverable);
	b.d[1] = 4;
	scan(&r, b.d, b.n, 64);
	CHECK_EQ_INT(r.err, TP_EPROTO);
}

static void test_scan_loginack_and_more(void)
{
	static const uint8_t ver[4] = {16, 0, 0x10, 0x30};
	static bb_t b;
	static run_t r;

	b.n = tds_put_loginack(b.d, sizeof(b.d), 1, TDS_VER_74,
			       "Microsoft SQL Server", ver);
	CHECK(memcmp(b.d + 3, "\x01\x74\x00\x00\x04", 5) == 0);
	b8(&b, TDS_TOK_RETURNSTATUS), b32(&b, 0);
	b8(&b, TDS_TOK_ORDER), b16(&b, 2), b16(&b, 1);
	b8(&b, TDS_TOK_FEDAUTHINFO), b32(&b, 4), b32(&b, 0);
	/* RETURNVALUE: @out nvarchar(max) = N'x', then int = 5 */
	b8(&b, TDS_TOK_RETURNVALUE), b16(&b, 1), bvarchar(&b, "@out");
	b8(&b, 1), b32(&b, 0), b16(&b, 1);
	b8(&b, 0xE7), b16(&b, 0xFFFF), bmem(&b, coll, 5);
	b64(&b, 2), b32(&b, 2), b16(&b, 'x'), b32(&b, 0);
	b8(&b, TDS_TOK_RETURNVALUE), b16(&b, 2), bvarchar(&b, "@n");
	b8(&b, 1), b32(&b, 0), b16(&b, 1);
	b8(&b, 0x26), b8(&b, 4), b8(&b, 4), b32(&b, 5);
	/* a text return value has no table name */
	b8(&b, TDS_TOK_RETURNVALUE), b16(&b, 3), bvarchar(&b, "@t");
	b8(&b, 1), b32(&b, 0), b16(&b, 1);
	b8(&b, 0x23), b32(&b, 100), bmem(&b, coll, 5);
	b8(&b, 0);
	done(&b, TDS_TOK_DONEPROC, 0, 0);
	scan_every_chunk(b.d, b.n, &r);
	CHECK_EQ_INT(r.err, 0);
	CHECK(r.idle);
	CHECK_EQ_INT(r.n, 2);
	CHECK_EQ_INT(r.ev[0].kind, TDS_EV_LOGINACK);
	CHECK_EQ_INT(r.ev[0].tds_version, TDS_VER_74);
	CHECK_EQ_STR(r.ev[0].text, "Microsoft SQL Server");
	CHECK_EQ_INT(r.ev[1].token, TDS_TOK_DONEPROC);
}

/* ---- what must be refused ---- */

static int scan_err(const uint8_t *p, size_t n)
{
	static run_t r;

	scan(&r, p, n, n);
	return r.err;
}

static void test_scan_refused(void)
{
	static bb_t b;
	tds_scan_t s;
	size_t used;

	/* unknown token; the scanner stays failed */
	tds_scan_init(&s);
	CHECK_EQ_INT(tds_scan_feed(&s, (const uint8_t *)"\x42", 1, &used),
		     TP_EPROTO);
	CHECK_EQ_INT(tds_scan_feed(&s, spec_select_reply + 8, 10, &used),
		     TP_EPROTO);
	CHECK(!tds_scan_idle(&s));
	/* a row with no metadata */
	CHECK_EQ_INT(scan_err((const uint8_t *)"\xD1\x01", 2), TP_EPROTO);
	CHECK_EQ_INT(scan_err((const uint8_t *)"\xD2\x01", 2), TP_EPROTO);
	/* COMPUTE BY, data classification */
	CHECK_EQ_INT(scan_err((const uint8_t *)"\x88\x01\x00", 3), TP_EPROTO);
	CHECK_EQ_INT(scan_err((const uint8_t *)"\xD3\x01\x00", 3), TP_EPROTO);
	CHECK_EQ_INT(scan_err((const uint8_t *)"\xA3\x00\x00", 3), TP_EPROTO);
	/* too many columns */
	CHECK_EQ_INT(scan_err((const uint8_t *)"\x81\x01\x10", 3), TP_ETOOBIG);
	/* an encrypted column */
	b.n = 0;
	b8(&b, 0x81), b16(&b, 1), col(&b, 0x0800, 0x38), bvarchar(&b, "c");
	CHECK_EQ_INT(scan_err(b.d, b.n), TP_EPROTO);
	/* JSON, vector, TVP types */
	b.d[9] = 0xF4;
	CHECK_EQ_INT(scan_err(b.d, 10), TP_EPROTO);
	b.d[9] = 0xF5;
	CHECK_EQ_INT(scan_err(b.d, 10), TP_EPROTO);
	b.d[9] = 0xF3;
	CHECK_EQ_INT(scan_err(b.d, 10), TP_EPROTO);
	/* XML schema flag 2, time scale 8 */
	b.n = 0;
	b8(&b, 0x81), b16(&b, 1), col(&b, 0, 0xF1), b8(&b, 2);
	CHECK_EQ_INT(scan_err(b.d, b.n), TP_EPROTO);
	b.d[9] = 0x29;
	b.d[10] = 8;
	CHECK_EQ_INT(scan_err(b.d, b.n), TP_EPROTO);
	/* ENVCHANGE 15 (its length lies), an empty ENVCHANGE, a database
	 * name longer than its token */
	CHECK_EQ_INT(scan_err((const uint8_t *)"\xE3\x01\x00\x0F", 4),
		     TP_EPROTO);
	CHECK_EQ_INT(scan_err((const uint8_t *)"\xE3\x00\x00", 3), TP_EPROTO);
	CHECK_EQ_INT(scan_err((const uint8_t *)"\xE3\x03\x00\x01\x05\x00", 6),
		     TP_EPROTO);
	/* LOGINACK too short or with a name past its end */
	CHECK_EQ_INT(scan_err((const uint8_t *)"\xAD\x02\x00\x01\x74", 5),
		     TP_EPROTO);
	b.n = tds_put_loginack(b.d, sizeof(b.d), 1, TDS_VER_74, "x",
			       (const uint8_t *)"\0\0\0\0");
	b.d[8] = 9;
	CHECK_EQ_INT(scan_err(b.d, b.n), TP_EPROTO);
	/* a LOGINACK bigger than the capture is not a LOGINACK */
	b.n = 0;
	b8(&b, TDS_TOK_LOGINACK), b16(&b, 2000), bfill(&b, 0, 2000);
	CHECK_EQ_INT(scan_err(b.d, b.n), TP_EPROTO);
}

static void test_scan_idle_and_final(void)
{
	tds_scan_t s;
	tds_event_t e = {.kind = TDS_EV_DONE, .token = TDS_TOK_DONE};
	size_t used;

	tds_scan_init(&s);
	CHECK(tds_scan_idle(&s));
	CHECK_EQ_INT(tds_scan_feed(&s, spec_select_reply + 8, 5, &used), 0);
	CHECK_EQ_INT(used, 5);
	CHECK(!tds_scan_idle(&s));
	CHECK(tds_done_final(&e));
	e.status = TDS_DONE_ATTN;
	CHECK(tds_done_final(&e));
	e.status = TDS_DONE_MORE | TDS_DONE_COUNT;
	CHECK(!tds_done_final(&e));
	e.status = 0;
	e.token = TDS_TOK_DONEINPROC;
	CHECK(!tds_done_final(&e));
	e.token = TDS_TOK_DONEPROC;
	CHECK(tds_done_final(&e));
	e.kind = TDS_EV_ENVCHANGE;
	CHECK(!tds_done_final(&e));
}

/* ---- writers ---- */

static void test_writers_match_spec(void)
{
	const uint8_t *p = spec_login_reply + 8;
	static const uint8_t collation[5] = {0x09, 0x04, 0xD0, 0x00, 0x34};
	uint8_t out[256];

	CHECK_EQ_INT(tds_put_envchange(out, sizeof(out), TDS_ENV_DATABASE,
				       "master", "master"),
		     30);
	CHECK(memcmp(out, p, 30) == 0);
	p += 30;
	CHECK_EQ_INT(tds_put_message(out, sizeof(out), TDS_TOK_INFO, 5701, 2, 0,
				     "Changed database context to "
				     "'master'.",
				     "", "", 0),
		     91);
	CHECK(memcmp(out, p, 91) == 0);
	p += 91;
	CHECK_EQ_INT(tds_put_envchange_bytes(out, sizeof(out),
					     TDS_ENV_COLLATION, collation, 5,
					     NULL, 0),
		     11);
	CHECK(memcmp(out, p, 11) == 0);
	p += 11;
	CHECK_EQ_INT(tds_put_envchange(out, sizeof(out), TDS_ENV_LANGUAGE,
				       "us_english", NULL),
		     26);
	CHECK(memcmp(out, p, 26) == 0);
	p += 26;
	CHECK_EQ_INT(tds_put_envchange(out, sizeof(out), TDS_ENV_PACKETSIZE,
				       "4096", "4096"),
		     22);
	CHECK(memcmp(out, p, 22) == 0);
	p += 22;
	CHECK_EQ_INT(tds_put_message(out, sizeof(out), TDS_TOK_INFO, 5703, 1, 0,
				     "Changed language setting to "
				     "us_english.",
				     "", "", 0),
		     95);
	CHECK(memcmp(out, p, 95) == 0);
	/* LOGINACK (57 bytes, its name padded with two NULs) and DONE end
	 * the reply */
	p += 95 + 57;
	CHECK_EQ_INT(tds_put_done(out, sizeof(out), TDS_TOK_DONE, 0, 0, 0),
		     TDS_DONE_LEN);
	CHECK(memcmp(out, p, TDS_DONE_LEN) == 0);
	CHECK(p + TDS_DONE_LEN == spec_login_reply + sizeof(spec_login_reply));
}

typedef size_t (*writer_fn)(uint8_t *out, size_t cap);

static size_t w_env(uint8_t *o, size_t c)
{
	return tds_put_envchange(o, c, TDS_ENV_DATABASE, "appdb", "master");
}
static size_t w_envb(uint8_t *o, size_t c)
{
	return tds_put_envchange_bytes(o, c, TDS_ENV_BEGINTRAN,
				       (const uint8_t *)"12345678", 8, NULL, 0);
}
static size_t w_route(uint8_t *o, size_t c)
{
	return tds_put_envchange_routing(o, c, 11000, "h.example");
}
static size_t w_msg(uint8_t *o, size_t c)
{
	return tds_put_message(o, c, TDS_TOK_ERROR, 4060, 1, 11,
			       "Cannot open database", "srv", "proc", 1);
}
static size_t w_ack(uint8_t *o, size_t c)
{
	return tds_put_loginack(o, c, 1, TDS_VER_74, "tokenpool",
				(const uint8_t *)"\x10\0\0\0");
}
static size_t w_feat(uint8_t *o, size_t c)
{
	tds_feature_t f = {TDS_FEAT_UTF8_SUPPORT, (const uint8_t *)"\1", 1};

	return tds_put_featureextack(o, c, &f, 1);
}
static size_t w_done(uint8_t *o, size_t c)
{
	return tds_put_done(o, c, TDS_TOK_DONE, TDS_DONE_ATTN, 0, 0);
}

static void test_writers_caps(void)
{
	static const writer_fn w[] = {w_env, w_envb, w_route, w_msg,
				      w_ack, w_feat, w_done};
	uint8_t full[512];

	for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
		size_t need = w[i](full, sizeof(full));
		run_t *r = malloc(sizeof(*r));

		CHECK(need > 0);
		for (size_t cap = 0; cap < need; cap++) {
			uint8_t *b = canary_buf(cap);

			CHECK_EQ_INT(w[i](b, cap), 0);
			CHECK(canary_ok(b, cap));
			free(b);
		}
		/* and what each writes scans as one clean token */
		scan(r, full, need, 1);
		CHECK_EQ_INT(r->err, 0);
		CHECK(r->idle);
		CHECK_EQ_INT(r->n, 1);
		free(r);
	}
	/* refusals: bad token kinds, names over 255 characters, port 0 */
	char longname[300];

	memset(longname, 'a', 299);
	longname[299] = 0;
	CHECK_EQ_INT(tds_put_done(full, 64, 0x42, 0, 0, 0), 0);
	CHECK_EQ_INT(
	    tds_put_message(full, 512, TDS_TOK_DONE, 1, 1, 1, "", "", "", 0),
	    0);
	CHECK_EQ_INT(tds_put_envchange(full, 512, 1, longname, NULL), 0);
	CHECK_EQ_INT(tds_put_envchange_routing(full, 512, 0, "h"), 0);
	CHECK_EQ_INT(tds_put_envchange(full, 512, 1, "bad\xFF", NULL), 0);
}

TP_TEST_MAIN(TP_TEST(test_scan_spec_login),
	     TP_TEST(test_scan_spec_select_and_rpc),
	     TP_TEST(test_scan_every_type),
	     TP_TEST(test_scan_every_type_mutated),
	     TP_TEST(test_scan_transactions), TP_TEST(test_scan_routing),
	     TP_TEST(test_scan_error), TP_TEST(test_scan_featureextack),
	     TP_TEST(test_scan_sessionstate),
	     TP_TEST(test_scan_loginack_and_more), TP_TEST(test_scan_refused),
	     TP_TEST(test_scan_idle_and_final),
	     TP_TEST(test_writers_match_spec), TP_TEST(test_writers_caps))
