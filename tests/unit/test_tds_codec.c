/*
 * test_tds_codec.c - unit tests for the TDS packet, PRELOGIN, LOGIN7 and
 * ALL_HEADERS codec.
 *
 * Real packets come from the examples in [MS-TDS] section 4 (a PRELOGIN
 * request, a TDS 7.2 LOGIN7, a SQLBatch with ALL_HEADERS); the rest is
 * built by the writers and read back by the parsers, then broken in every
 * way we could think of. The packer, unpacker and re-framer are driven
 * with every chunk size so stream boundaries land everywhere. Writers are
 * called with every cap below what they need, into a buffer whose bytes
 * past cap are a canary.
 *
 * Not here: the token stream (test_tds_tokens.c), ops.c.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/tds/tds.h"
#include "tests/unit/tp_test.h"

/* [MS-TDS] 4.1: PRELOGIN request. */
static const uint8_t spec_prelogin[] = {
    0x12, 0x01, 0x00, 0x2F, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x1A, 0x00,
    0x06, 0x01, 0x00, 0x20, 0x00, 0x01, 0x02, 0x00, 0x21, 0x00, 0x01, 0x03,
    0x00, 0x22, 0x00, 0x04, 0x04, 0x00, 0x26, 0x00, 0x01, 0xFF, 0x09, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0xB8, 0x0D, 0x00, 0x00, 0x01};

/* [MS-TDS] 4.2: LOGIN7 of a TDS 7.2 client (host skostov1, user sa, no
 * password, app OSQL-32, library ODBC). */
static const uint8_t spec_login7[] = {
    0x10, 0x01, 0x00, 0x90, 0x00, 0x00, 0x01, 0x00, 0x88, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x09, 0x72, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07,
    0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xE0, 0x03, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x09, 0x04, 0x00, 0x00, 0x5E, 0x00, 0x08, 0x00,
    0x6E, 0x00, 0x02, 0x00, 0x72, 0x00, 0x00, 0x00, 0x72, 0x00, 0x07, 0x00,
    0x80, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x80, 0x00, 0x04, 0x00,
    0x88, 0x00, 0x00, 0x00, 0x88, 0x00, 0x00, 0x00, 0x00, 0x50, 0x8B, 0xE2,
    0xB7, 0x8F, 0x88, 0x00, 0x00, 0x00, 0x88, 0x00, 0x00, 0x00, 0x88, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x73, 0x00, 0x6B, 0x00, 0x6F, 0x00,
    0x73, 0x00, 0x74, 0x00, 0x6F, 0x00, 0x76, 0x00, 0x31, 0x00, 0x73, 0x00,
    0x61, 0x00, 0x4F, 0x00, 0x53, 0x00, 0x51, 0x00, 0x4C, 0x00, 0x2D, 0x00,
    0x33, 0x00, 0x32, 0x00, 0x4F, 0x00, 0x44, 0x00, 0x42, 0x00, 0x43, 0x00};

/* [MS-TDS] 4.6: SQLBatch "select 'foo' as 'bar'" with ALL_HEADERS. */
static const uint8_t spec_batch[] = {
    0x01, 0x01, 0x00, 0x5C, 0x00, 0x00, 0x01, 0x00, 0x16, 0x00, 0x00, 0x00,
    0x12, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0A, 0x00, 0x73, 0x00, 0x65, 0x00,
    0x6C, 0x00, 0x65, 0x00, 0x63, 0x00, 0x74, 0x00, 0x20, 0x00, 0x27, 0x00,
    0x66, 0x00, 0x6F, 0x00, 0x6F, 0x00, 0x27, 0x00, 0x20, 0x00, 0x61, 0x00,
    0x73, 0x00, 0x20, 0x00, 0x27, 0x00, 0x62, 0x00, 0x61, 0x00, 0x72, 0x00,
    0x27, 0x00, 0x0A, 0x00, 0x20, 0x00, 0x20, 0x00, 0x20, 0x00, 0x20, 0x00,
    0x20, 0x00, 0x20, 0x00, 0x20, 0x00, 0x20, 0x00};

#define CANARY 0xCC

/* A buffer of cap bytes followed by a canary; true if the canary is
 * intact. */
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

static void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* ---- packets ---- */

static void test_header(void)
{
	tds_header_t h, g;
	uint8_t b[8];

	CHECK_EQ_INT(tds_header_parse(spec_prelogin, 7, &h), TP_EAGAIN);
	CHECK_EQ_INT(tds_header_parse(spec_prelogin, 8, &h), 0);
	CHECK_EQ_INT(h.type, TDS_PKT_PRELOGIN);
	CHECK_EQ_INT(h.status, TDS_ST_EOM);
	CHECK_EQ_INT(h.length, sizeof(spec_prelogin));
	CHECK_EQ_INT(h.spid, 0);
	CHECK_EQ_INT(h.packet_id, 1);
	tds_header_put(b, &h);
	CHECK(memcmp(b, spec_prelogin, 8) == 0);
	h.spid = 0x1234;
	h.length = 0xABCD;
	tds_header_put(b, &h);
	CHECK_EQ_INT(b[2], 0xAB); /* big-endian */
	CHECK_EQ_INT(b[4], 0x12);
	CHECK_EQ_INT(tds_header_parse(b, 8, &g), 0);
	CHECK_EQ_INT(g.spid, 0x1234);
	CHECK_EQ_INT(g.length, 0xABCD);
	for (uint16_t l = 0; l < 8; l++) {
		put_be16(b + 2, l);
		CHECK_EQ_INT(tds_header_parse(b, 8, &g), TP_EPROTO);
	}
}

static void test_frame(void)
{
	size_t n = 99;

	for (size_t len = 0; len < 8; len++)
		CHECK_EQ_INT(tds_frame(spec_login7, len, &n), TP_EAGAIN);
	CHECK_EQ_INT(n, 99);
	CHECK_EQ_INT(tds_frame(spec_login7, 8, &n), 0);
	CHECK_EQ_INT(n, sizeof(spec_login7));
}

/* Three packets of one message, payload "abcdefgh" split 3/3/2. */
static size_t three_packets(uint8_t *b, uint8_t type2)
{
	static const char pl[] = "abcdefgh";
	size_t pos = 0;

	for (int i = 0; i < 3; i++) {
		size_t n = i < 2 ? 3 : 2;
		tds_header_t h = {.type = i == 1 ? type2 : TDS_PKT_LOGIN7,
				  .status = i == 2 ? TDS_ST_EOM : 0,
				  .length = (uint16_t)(8 + n),
				  .packet_id = (uint8_t)(i + 1)};

		tds_header_put(b + pos, &h);
		memcpy(b + pos + 8, pl + 3 * i, n);
		pos += 8 + n;
	}
	return pos;
}

static void test_msg_frame(void)
{
	uint8_t b[64], out[16];
	size_t len = three_packets(b, TDS_PKT_LOGIN7), m = 0, p = 0;

	CHECK_EQ_INT(len, 32);
	CHECK_EQ_INT(tds_msg_frame(b, len, 100, &m, &p), 0);
	CHECK_EQ_INT(m, 32);
	CHECK_EQ_INT(p, 8);
	for (size_t l = 0; l < len; l++)
		CHECK_EQ_INT(tds_msg_frame(b, l, 100, &m, &p), TP_EAGAIN);
	CHECK_EQ_INT(tds_msg_payload(b, len, out, sizeof(out)), 8);
	CHECK(memcmp(out, "abcdefgh", 8) == 0);
	CHECK_EQ_INT(tds_msg_payload(b, len, out, 7), 0);
	/* too big is known from the headers, before the data is there */
	CHECK_EQ_INT(tds_msg_frame(b, 19, 5, &m, &p), TP_ETOOBIG);
	CHECK_EQ_INT(tds_msg_frame(b, len, 7, &m, &p), TP_ETOOBIG);
	CHECK_EQ_INT(tds_msg_frame(b, len, 8, &m, &p), 0);
	len = three_packets(b, TDS_PKT_SQLBATCH);
	CHECK_EQ_INT(tds_msg_frame(b, len, 100, &m, &p), TP_EPROTO);
	/* the message ends at EOM: what follows is the next one */
	len = three_packets(b, TDS_PKT_LOGIN7);
	memcpy(b + len, spec_prelogin, 8);
	CHECK_EQ_INT(tds_msg_frame(b, len + 8, 100, &m, &p), 0);
	CHECK_EQ_INT(m, 32);
}

/* A header claiming more than any negotiable packet size is refused as
 * soon as it is in, whatever the message may hold: garbage (or a client
 * that would stall the login) is not waited for. */
static void test_msg_frame_oversized_packet(void)
{
	uint8_t b[32] = {0};
	size_t m = 0, p = 0;
	tds_header_t h = {.type = TDS_PKT_LOGIN7, .status = TDS_ST_EOM};

	h.length = TDS_MAX_PACKET;
	tds_header_put(b, &h);
	CHECK_EQ_INT(tds_msg_frame(b, 8, 128 * 1024, &m, &p), TP_EAGAIN);
	h.length = TDS_MAX_PACKET + 1;
	tds_header_put(b, &h);
	CHECK_EQ_INT(tds_msg_frame(b, 8, 128 * 1024, &m, &p), TP_EPROTO);
	h.length = 0xFFFF;
	tds_header_put(b, &h);
	CHECK_EQ_INT(tds_msg_frame(b, 8, 128 * 1024, &m, &p), TP_EPROTO);
	CHECK_EQ_INT(tds_msg_frame(b, 8, 16, &m, &p), TP_EPROTO);
	/* ... also in a later packet of the message */
	h.length = 9;
	h.status = 0;
	tds_header_put(b, &h);
	h.length = 0xFFFF;
	tds_header_put(b + 9, &h);
	CHECK_EQ_INT(tds_msg_frame(b, 9, 128 * 1024, &m, &p), TP_EAGAIN);
	CHECK_EQ_INT(tds_msg_frame(b, 16, 128 * 1024, &m, &p), TP_EAGAIN);
	CHECK_EQ_INT(tds_msg_frame(b, 17, 128 * 1024, &m, &p), TP_EPROTO);
}

static void test_attention(void)
{
	uint8_t a[8] = {0x06, 0x01, 0x00, 0x08, 0, 0, 1, 0};

	CHECK(tds_is_attention(a, 8));
	CHECK(!tds_is_attention(a, 7));
	a[1] = 0;
	CHECK(!tds_is_attention(a, 8));
	a[1] = 1;
	a[3] = 9;
	CHECK(!tds_is_attention(a, 8));
	CHECK(!tds_is_attention(spec_prelogin, sizeof(spec_prelogin)));
}

/* Checks a packet stream: every packet of size except the last of each
 * message, EOM only there; returns the joined payload length. */
static size_t check_packets(const uint8_t *b, size_t len, size_t size,
			    uint8_t type, uint8_t *payload)
{
	size_t pos = 0, n = 0;
	uint8_t id = 1;

	while (pos < len) {
		tds_header_t h;

		CHECK_EQ_INT(tds_header_parse(b + pos, len - pos, &h), 0);
		CHECK(h.length <= len - pos);
		CHECK_EQ_INT(h.type, type);
		CHECK_EQ_INT(h.packet_id, id);
		id++;
		if (!(h.status & TDS_ST_EOM))
			CHECK_EQ_INT(h.length, size);
		else
			CHECK_EQ_INT(pos + h.length, len);
		memcpy(payload + n, b + pos + 8, h.length - 8u);
		n += h.length - 8u;
		pos += h.length;
	}
	return n;
}

static void test_packetize(void)
{
	uint8_t src[3000], *out, back[3000];
	size_t n, need;

	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (uint8_t)(i * 7);
	out = malloc(4096);
	n = tds_packetize(out, 4096, TDS_PKT_REPLY, TDS_ST_RESETCONN, 0x33, 512,
			  src, sizeof(src));
	/* 3000 = 5 * 504 + 480: six packets */
	CHECK_EQ_INT(n, 3000 + 6 * 8);
	CHECK_EQ_INT(out[1], TDS_ST_RESETCONN);
	CHECK_EQ_INT(out[512 + 1], 0);
	CHECK_EQ_INT(check_packets(out, n, 512, TDS_PKT_REPLY, back), 3000);
	CHECK(memcmp(back, src, 3000) == 0);
	need = n;
	for (size_t cap = 0; cap < need; cap += 97) {
		uint8_t *b = canary_buf(cap);

		CHECK_EQ_INT(tds_packetize(b, cap, TDS_PKT_REPLY, 0, 0, 512,
					   src, sizeof(src)),
			     0);
		CHECK(canary_ok(b, cap));
		free(b);
	}
	/* empty message: one header-only packet with EOM */
	n = tds_packetize(out, 4096, TDS_PKT_ATTENTION, 0, 0, 512, NULL, 0);
	CHECK_EQ_INT(n, 8);
	CHECK(tds_is_attention(out, n));
	CHECK_EQ_INT(tds_packetize(out, 4096, 1, 0, 0, 8, src, 10), 0);
	CHECK_EQ_INT(tds_packetize(out, 4096, 1, 0, 0, 65536, src, 10), 0);
	free(out);
}

/* ---- packer / unpacker / re-framing ---- */

typedef struct sink {
	uint8_t *data;
	size_t len, cap;
	size_t calls;
	const uint8_t *last_ptr;
} sink_t;

static void sink_emit(void *arg, const void *buf, size_t len)
{
	sink_t *s = arg;

	if (s->len + len > s->cap) {
		s->cap = (s->len + len) * 2;
		s->data = realloc(s->data, s->cap);
	}
	memcpy(s->data + s->len, buf, len);
	s->len += len;
	s->calls++;
	s->last_ptr = buf;
}

static void test_packer_chunks(void)
{
	uint8_t src[5000], back[5000], hold[512];

	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (uint8_t)(i * 13 + 1);
	for (size_t chunk = 1; chunk <= 1300; chunk += chunk < 20 ? 1 : 97) {
		tds_packer_t p;
		sink_t s = {0};

		CHECK_EQ_INT(
		    tds_packer_init(&p, hold, 512, TDS_PKT_SQLBATCH, 0), 0);
		tds_packer_begin(&p, TDS_PKT_SQLBATCH, TDS_ST_RESETCONN);
		for (size_t pos = 0; pos < sizeof(src); pos += chunk) {
			size_t n = sizeof(src) - pos < chunk ? sizeof(src) - pos
							     : chunk;

			tds_packer_put(&p, src + pos, n, sink_emit, &s);
		}
		tds_packer_end(&p, 0, sink_emit, &s);
		CHECK_EQ_INT(
		    check_packets(s.data, s.len, 512, TDS_PKT_SQLBATCH, back),
		    sizeof(src));
		CHECK(memcmp(back, src, sizeof(src)) == 0);
		CHECK_EQ_INT(s.data[1], TDS_ST_RESETCONN);
		CHECK_EQ_INT(s.data[512 + 1], 0);
		free(s.data);
	}
}

static void test_packer_exact_and_zero_copy(void)
{
	uint8_t src[1008], hold[504];
	tds_packer_t p;
	sink_t s = {0};

	memset(src, 'x', sizeof(src));
	CHECK_EQ_INT(tds_packer_init(&p, hold, 7, 1, 0), TP_EINVAL);
	CHECK_EQ_INT(tds_packer_init(&p, hold, 8, 1, 0), TP_EINVAL);
	CHECK_EQ_INT(tds_packer_init(&p, hold, 65536, 1, 0), TP_EINVAL);
	CHECK_EQ_INT(tds_packer_init(&p, hold, 512, TDS_PKT_REPLY, 7), 0);
	/* exactly two packets' worth: the first goes out uncopied, the
	 * second waits for the end to learn it is the last */
	tds_packer_put(&p, src, sizeof(src), sink_emit, &s);
	CHECK_EQ_INT(s.len, 512);
	CHECK(s.last_ptr == src);
	tds_packer_end(&p, TDS_ST_IGNORE, sink_emit, &s);
	CHECK_EQ_INT(s.len, 1024);
	CHECK_EQ_INT(s.data[1], 0);
	CHECK_EQ_INT(s.data[512 + 1], TDS_ST_EOM | TDS_ST_IGNORE);
	CHECK_EQ_INT(s.data[5], 7);	  /* spid */
	CHECK_EQ_INT(s.data[512 + 6], 2); /* packet id */
	/* the next message numbers its packets from 1 again */
	s.len = 0;
	tds_packer_put(&p, src, 3, sink_emit, &s);
	tds_packer_end(&p, 0, sink_emit, &s);
	CHECK_EQ_INT(s.len, 11);
	CHECK_EQ_INT(s.data[6], 1);
	CHECK_EQ_INT(s.data[1], TDS_ST_EOM);
	free(s.data);
}

/* Feeds a packet stream to an unpacker chunk bytes at a time; appends the
 * payload and counts messages. */
static int unpack_all(const uint8_t *in, size_t len, size_t chunk,
		      uint8_t *payload, size_t *plen, int *eoms)
{
	tds_unpacker_t u;
	size_t pos = 0;

	tds_unpacker_init(&u);
	*plen = 0;
	*eoms = 0;
	while (pos < len) {
		size_t end = len - pos < chunk ? len : pos + chunk, used, dlen;
		const uint8_t *data;

		while (pos < end) {
			int rc = tds_unpack(&u, in + pos, end - pos, &used,
					    &data, &dlen);

			if (rc < 0)
				return rc;
			pos += used;
			if (dlen) {
				CHECK(data >= in && data + dlen <= in + len);
				memcpy(payload + *plen, data, dlen);
				*plen += dlen;
			}
			if (rc & TDS_UNPACK_EOM)
				(*eoms)++;
			if (rc == 0)
				break;
		}
	}
	return 0;
}

static void test_unpacker(void)
{
	uint8_t b[128], payload[64];
	uint8_t att[8] = {0x06, 0x01, 0x00, 0x08, 0, 0, 1, 0};
	size_t len = three_packets(b, TDS_PKT_LOGIN7), plen;
	int eoms;

	memcpy(b + len, att, 8);
	len += 8;
	for (size_t chunk = 1; chunk <= len; chunk++) {
		CHECK_EQ_INT(unpack_all(b, len, chunk, payload, &plen, &eoms),
			     0);
		CHECK_EQ_INT(plen, 8);
		CHECK_EQ_INT(eoms, 2);
		CHECK(memcmp(payload, "abcdefgh", 8) == 0);
	}
	len = three_packets(b, TDS_PKT_RPC);
	CHECK_EQ_INT(unpack_all(b, len, 5, payload, &plen, &eoms), TP_EPROTO);
	len = three_packets(b, TDS_PKT_LOGIN7);
	put_be16(b + 2, 7);
	CHECK_EQ_INT(unpack_all(b, len, 64, payload, &plen, &eoms), TP_EPROTO);
}

static void test_unpacker_first_status(void)
{
	uint8_t b[64];
	tds_unpacker_t u;
	size_t len = three_packets(b, TDS_PKT_LOGIN7), used, dlen;
	const uint8_t *data;

	b[1] = TDS_ST_RESETCONN;
	tds_unpacker_init(&u);
	CHECK_EQ_INT(tds_unpack(&u, b, len, &used, &data, &dlen),
		     TDS_UNPACK_DATA);
	CHECK_EQ_INT(used, 11);
	CHECK_EQ_INT(dlen, 3);
	CHECK_EQ_INT(u.first_status, TDS_ST_RESETCONN);
	CHECK_EQ_INT(tds_unpack(&u, b + 11, len - 11, &used, &data, &dlen),
		     TDS_UNPACK_DATA);
	CHECK_EQ_INT(u.first_status, TDS_ST_RESETCONN);
	CHECK_EQ_INT(tds_unpack(&u, b + 22, len - 22, &used, &data, &dlen),
		     TDS_UNPACK_DATA | TDS_UNPACK_EOM);
	CHECK_EQ_INT(used, 10);
	CHECK(!u.in_msg);
}

/* Two messages (a 9000-byte reply with RESETCONNECTION on its first
 * packet, then an attention) packed at from, re-framed to `to` in chunks
 * of chunk bytes. */
static void reframe_case(size_t from, size_t to, size_t chunk)
{
	static uint8_t src[9000], back[9000];
	uint8_t hold_a[32768], att[8] = {0x06, 0x01, 0, 8, 0, 0, 1, 0};
	tds_unpacker_t u;
	tds_packer_t p;
	sink_t in = {0}, out = {0};
	int msgs = 0, rc;
	size_t n, pos = 0;

	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (uint8_t)(i ^ (i >> 8));
	in.cap = 20000;
	in.data = malloc(in.cap);
	in.len = tds_packetize(in.data, in.cap, TDS_PKT_REPLY, TDS_ST_RESETCONN,
			       0, from, src, sizeof(src));
	CHECK(in.len > 0);
	memcpy(in.data + in.len, att, 8);
	in.len += 8;
	tds_unpacker_init(&u);
	CHECK_EQ_INT(tds_packer_init(&p, hold_a, to, TDS_PKT_REPLY, 0), 0);
	while (pos < in.len) {
		n = in.len - pos < chunk ? in.len - pos : chunk;
		rc = tds_reframe(&u, &p, in.data + pos, n, sink_emit, &out);
		CHECK(rc >= 0);
		msgs += rc;
		pos += n;
	}
	CHECK_EQ_INT(msgs, 2);
	/* the reply: packets of `to`, RESETCONNECTION on the first only */
	n = 0;
	pos = 0;
	while (pos < out.len && out.data[pos] == TDS_PKT_REPLY) {
		tds_header_t h;

		CHECK_EQ_INT(
		    tds_header_parse(out.data + pos, out.len - pos, &h), 0);
		CHECK_EQ_INT(h.status & TDS_ST_RESETCONN,
			     pos == 0 ? TDS_ST_RESETCONN : 0);
		if (!(h.status & TDS_ST_EOM))
			CHECK_EQ_INT(h.length, to);
		memcpy(back + n, out.data + pos + 8, h.length - 8u);
		n += h.length - 8u;
		pos += h.length;
	}
	CHECK_EQ_INT(n, sizeof(src));
	CHECK(memcmp(back, src, sizeof(src)) == 0);
	CHECK_EQ_INT(out.len - pos, 8);
	CHECK(tds_is_attention(out.data + pos, 8));
	free(in.data);
	free(out.data);
}

static void test_reframe(void)
{
	static const size_t sizes[][2] = {
	    {4096, 512},  {512, 4096},	{4096, 32767}, {32767, 4096},
	    {512, 32767}, {32767, 512}, {4096, 4096},  {100, 9}};

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		reframe_case(sizes[i][0], sizes[i][1], 1 << 20);
		reframe_case(sizes[i][0], sizes[i][1], 1);
		reframe_case(sizes[i][0], sizes[i][1], 4095);
	}
}

/* ---- PRELOGIN ---- */

static void test_prelogin_spec(void)
{
	tds_prelogin_t pl;
	const uint8_t *p = spec_prelogin + 8;
	size_t len = sizeof(spec_prelogin) - 8;
	static const uint8_t ver[6] = {9, 0, 0, 0, 0, 0};
	static const uint8_t tid[4] = {0xB8, 0x0D, 0, 0};

	CHECK_EQ_INT(tds_prelogin_parse(p, len, &pl), 0);
	CHECK(pl.opt[TDS_PL_VERSION] && memcmp(pl.opt[0], ver, 6) == 0);
	CHECK_EQ_INT(tds_prelogin_byte(&pl, TDS_PL_ENCRYPTION, -1), 1);
	CHECK_EQ_INT(pl.len[TDS_PL_INSTOPT], 1);
	CHECK_EQ_INT(pl.opt[TDS_PL_INSTOPT][0], 0);
	CHECK(pl.len[TDS_PL_THREADID] == 4 &&
	      memcmp(pl.opt[TDS_PL_THREADID], tid, 4) == 0);
	CHECK_EQ_INT(tds_prelogin_byte(&pl, TDS_PL_MARS, -1), 1);
	CHECK(pl.opt[TDS_PL_TRACEID] == NULL);
	CHECK_EQ_INT(tds_prelogin_byte(&pl, TDS_PL_FEDAUTHREQUIRED, -1), -1);
	CHECK(!tds_prelogin_is_tls(p, len));
	/* built again from the parse: the same bytes */
	uint8_t out[64];
	CHECK_EQ_INT(tds_prelogin_build(out, sizeof(out), &pl), len);
	CHECK(memcmp(out, p, len) == 0);
}

/* A server reply as tokenpool sends one: version, encryption REQ, instopt
 * 0, empty threadid, MARS off, FEDAUTHREQUIRED, nonce. */
static void test_prelogin_roundtrip(void)
{
	static const uint8_t ver[6] = {16, 0, 0x10, 0x30, 0, 0};
	static const uint8_t zero = 0, req = TDS_ENCRYPT_REQ, one = 1;
	uint8_t nonce[32], out[128], *b;
	tds_prelogin_t pl = {0}, back;
	size_t n;

	memset(nonce, 0x5A, sizeof(nonce));
	tds_prelogin_set(&pl, TDS_PL_VERSION, ver, 6);
	tds_prelogin_set(&pl, TDS_PL_ENCRYPTION, &req, 1);
	tds_prelogin_set(&pl, TDS_PL_INSTOPT, &zero, 1);
	tds_prelogin_set(&pl, TDS_PL_THREADID, &zero, 0);
	tds_prelogin_set(&pl, TDS_PL_MARS, &zero, 1);
	tds_prelogin_set(&pl, TDS_PL_FEDAUTHREQUIRED, &one, 1);
	tds_prelogin_set(&pl, TDS_PL_NONCEOPT, nonce, 32);
	tds_prelogin_set(&pl, 99, nonce, 1); /* ignored */
	n = tds_prelogin_build(out, sizeof(out), &pl);
	CHECK_EQ_INT(n, 7 * 5 + 1 + 6 + 1 + 1 + 0 + 1 + 1 + 32);
	CHECK_EQ_INT(out[0], TDS_PL_VERSION);
	CHECK_EQ_INT(out[35], TDS_PL_TERMINATOR);
	CHECK_EQ_INT(tds_prelogin_parse(out, n, &back), 0);
	CHECK_EQ_INT(tds_prelogin_byte(&back, TDS_PL_ENCRYPTION, -1), 3);
	CHECK_EQ_INT(back.len[TDS_PL_THREADID], 0);
	CHECK(back.opt[TDS_PL_THREADID] != NULL);
	CHECK_EQ_INT(tds_prelogin_byte(&back, TDS_PL_FEDAUTHREQUIRED, -1), 1);
	CHECK(memcmp(back.opt[TDS_PL_NONCEOPT], nonce, 32) == 0);
	CHECK(memcmp(back.opt[TDS_PL_VERSION], ver, 6) == 0);
	for (size_t cap = 0; cap < n; cap++) {
		b = canary_buf(cap);
		CHECK_EQ_INT(tds_prelogin_build(b, cap, &pl), 0);
		CHECK(canary_ok(b, cap));
		free(b);
	}
	/* a known option of the wrong length is refused */
	tds_prelogin_set(&pl, TDS_PL_MARS, nonce, 2);
	CHECK_EQ_INT(tds_prelogin_build(out, sizeof(out), &pl), 0);
}

static void test_prelogin_malformed(void)
{
	uint8_t b[64];
	const uint8_t *p = spec_prelogin + 8;
	size_t len = sizeof(spec_prelogin) - 8;
	tds_prelogin_t pl;

	/* every truncation: the data or the terminator is missing */
	for (size_t l = 0; l < len; l++)
		CHECK_EQ_INT(tds_prelogin_parse(p, l, &pl), TP_EPROTO);
	/* offset past the end */
	memcpy(b, p, len);
	put_be16(b + 6, (uint16_t)len);
	CHECK_EQ_INT(tds_prelogin_parse(b, len, &pl), TP_EPROTO);
	/* data inside the option table */
	memcpy(b, p, len);
	put_be16(b + 6, 3);
	CHECK_EQ_INT(tds_prelogin_parse(b, len, &pl), TP_EPROTO);
	/* length running past the end */
	memcpy(b, p, len);
	put_be16(b + 3, 0xFFFF);
	CHECK_EQ_INT(tds_prelogin_parse(b, len, &pl), TP_EPROTO);
	/* VERSION of 5 bytes */
	memcpy(b, p, len);
	put_be16(b + 3, 5);
	CHECK_EQ_INT(tds_prelogin_parse(b, len, &pl), TP_EPROTO);
	/* a duplicate (MARS token turned into ENCRYPTION) */
	memcpy(b, p, len);
	b[20] = TDS_PL_ENCRYPTION;
	CHECK_EQ_INT(tds_prelogin_parse(b, len, &pl), TP_EPROTO);
	/* no VERSION (turned into an unknown option) */
	memcpy(b, p, len);
	b[0] = 0x42;
	CHECK_EQ_INT(tds_prelogin_parse(b, len, &pl), TP_EPROTO);
	/* an unknown option is skipped */
	memcpy(b, p, len);
	b[10] = 0x42; /* INSTOPT */
	CHECK_EQ_INT(tds_prelogin_parse(b, len, &pl), 0);
	CHECK(pl.opt[TDS_PL_INSTOPT] == NULL);
}

static void test_prelogin_is_tls(void)
{
	static const uint8_t hello[] = {0x16, 0x03, 0x01, 0x00, 0x4E};
	static const uint8_t alert[] = {0x15, 0x03, 0x03, 0x00, 0x02};

	CHECK(tds_prelogin_is_tls(hello, sizeof(hello)));
	CHECK(tds_prelogin_is_tls(alert, sizeof(alert)));
	CHECK(!tds_prelogin_is_tls(hello, 1));
	CHECK(!tds_prelogin_is_tls(spec_prelogin + 8, 5));
}

/* ---- LOGIN7 ---- */

static void test_login7_spec(void)
{
	tds_login7_t l;
	char s[64];
	size_t n = 99;

	CHECK_EQ_INT(
	    tds_login7_parse(spec_login7 + 8, sizeof(spec_login7) - 8, &l), 0);
	CHECK_EQ_INT(l.length, 0x88);
	CHECK_EQ_INT(l.tds_version, TDS_VER_72);
	CHECK_EQ_INT(l.packet_size, 4096);
	CHECK_EQ_INT(l.flags1, 0xE0);
	CHECK_EQ_INT(l.flags2, 0x03);
	CHECK_EQ_INT(l.flags3, 0);
	CHECK_EQ_INT(l.lcid, 0x409);
	CHECK_EQ_INT(tds_login7_string(&l.host, s, sizeof(s)), 0);
	CHECK_EQ_STR(s, "skostov1");
	CHECK_EQ_INT(tds_login7_string(&l.user, s, sizeof(s)), 0);
	CHECK_EQ_STR(s, "sa");
	CHECK_EQ_INT(tds_login7_string(&l.app, s, sizeof(s)), 0);
	CHECK_EQ_STR(s, "OSQL-32");
	CHECK_EQ_INT(tds_login7_string(&l.library, s, sizeof(s)), 0);
	CHECK_EQ_STR(s, "ODBC");
	CHECK_EQ_INT(tds_login7_string(&l.database, s, sizeof(s)), 0);
	CHECK_EQ_STR(s, "");
	CHECK_EQ_INT(tds_login7_password(&l, s, sizeof(s), &n), 0);
	CHECK_EQ_INT(n, 0);
	CHECK_EQ_STR(s, "");
	CHECK(l.features == NULL);
	CHECK_EQ_INT(l.client_id[0], 0x00);
	CHECK_EQ_INT(l.client_id[5], 0x8F);
	/* the user name does not fit 2 bytes plus the NUL */
	CHECK_EQ_INT(tds_login7_string(&l.user, s, 2), TP_ETOOBIG);
}

/* Obfuscation by the rule (swap nibbles, then XOR 0xA5), worked by hand:
 * 'A' 0x41 -> 0x14 -> 0xB1, NUL -> 0xA5, 'b' 0x62 -> 0x26 -> 0x83,
 * '1' 0x31 -> 0x13 -> 0xB6. */
static void test_password_vector(void)
{
	static const uint8_t clear[] = {0x41, 0x00, 0x62, 0x00, 0x31, 0x00};
	static const uint8_t wire[] = {0xB1, 0xA5, 0x83, 0xA5, 0xB6, 0xA5};
	uint8_t b[6];

	memcpy(b, clear, 6);
	tds_password_obfuscate(b, 6);
	CHECK(memcmp(b, wire, 6) == 0);
	tds_password_deobfuscate(b, 6);
	CHECK(memcmp(b, clear, 6) == 0);
	/* the order matters: swap-then-XOR does not undo it */
	b[0] = 0xB1;
	b[0] = (uint8_t)(((b[0] << 4) | (b[0] >> 4)) ^ 0xA5);
	CHECK(b[0] != 0x41);
	for (int v = 0; v < 256; v++) {
		uint8_t x = (uint8_t)v;

		tds_password_obfuscate(&x, 1);
		tds_password_deobfuscate(&x, 1);
		CHECK_EQ_INT(x, v);
	}
}

static size_t build_sql_login(uint8_t *out, size_t cap, const char *pw)
{
	tds_login7_req_t r = {
	    .packet_size = 8192,
	    .client_pid = 4242,
	    .host = "app-host",
	    .user = "alice",
	    .password = pw,
	    .app = "tokenpool",
	    .server = "db.example.com",
	    .library = "tokenpool",
	    .database = "appdb",
	    .utf8_support = true,
	};

	return tds_login7_build(out, cap, &r);
}

static void test_login7_sql_auth_roundtrip(void)
{
	uint8_t out[1024];
	tds_login7_t l;
	tds_feature_t f;
	char s[300];
	size_t n = build_sql_login(out, sizeof(out), "Ab1"), pwlen;

	CHECK(n > TDS_LOGIN7_FIXED);
	CHECK_EQ_INT(tds_login7_parse(out, n, &l), 0);
	CHECK_EQ_INT(l.length, n);
	CHECK_EQ_INT(l.tds_version, TDS_VER_74);
	CHECK(memcmp(out + 4, "\x04\x00\x00\x74", 4) == 0);
	CHECK_EQ_INT(l.packet_size, 8192);
	CHECK_EQ_INT(l.client_pid, 4242);
	CHECK_EQ_INT(l.flags1, 0xE0);
	CHECK_EQ_INT(l.flags2, 0x03);
	CHECK_EQ_INT(l.flags3, TDS_OF3_EXTENSION);
	CHECK_EQ_INT(l.lcid, 0x409);
	CHECK_EQ_INT(tds_login7_string(&l.user, s, sizeof(s)), 0);
	CHECK_EQ_STR(s, "alice");
	CHECK_EQ_INT(tds_login7_string(&l.database, s, sizeof(s)), 0);
	CHECK_EQ_STR(s, "appdb");
	CHECK_EQ_INT(tds_login7_string(&l.server, s, sizeof(s)), 0);
	CHECK_EQ_STR(s, "db.example.com");
	/* on the wire: the hand-worked obfuscated bytes */
	CHECK_EQ_INT(l.password.len, 6);
	CHECK(memcmp(l.password.p, "\xB1\xA5\x83\xA5\xB6\xA5", 6) == 0);
	CHECK_EQ_INT(tds_login7_password(&l, s, sizeof(s), &pwlen), 0);
	CHECK_EQ_INT(pwlen, 3);
	CHECK_EQ_STR(s, "Ab1");
	CHECK(tds_login7_feature(&l, TDS_FEAT_UTF8_SUPPORT, &f));
	CHECK(f.len == 1 && f.data[0] == 1);
	CHECK(!tds_login7_feature(&l, TDS_FEAT_FEDAUTH, &f));
	/* a password outside ASCII, and the 128-character limit */
	n = build_sql_login(out, sizeof(out), "p\xC3\xA4ss\xF0\x9F\x94\x91");
	CHECK_EQ_INT(tds_login7_parse(out, n, &l), 0);
	CHECK_EQ_INT(tds_login7_password(&l, s, sizeof(s), &pwlen), 0);
	CHECK_EQ_STR(s, "p\xC3\xA4ss\xF0\x9F\x94\x91");
	memset(s, 'x', 128);
	s[128] = 0;
	CHECK(build_sql_login(out, sizeof(out), s) > 0);
	s[128] = 'x';
	s[129] = 0;
	CHECK_EQ_INT(build_sql_login(out, sizeof(out), s), 0);
	CHECK_EQ_INT(build_sql_login(out, sizeof(out), "bad\xC3"), 0);
}

static void test_login7_fedauth_roundtrip(void)
{
	static const char token[] = "eyJ0eXAiOiJKV1QifQ.eyJvaWQiOiJ4In0.sig";
	uint8_t nonce[32], *out, *b;
	tds_login7_req_t r = {
	    .host = "h",
	    .app = "tokenpool",
	    .server = "srv.database.windows.net",
	    .database = "appdb",
	    .token = token,
	    .token_len = sizeof(token) - 1,
	    .fedauth_echo = true,
	    .nonce = nonce,
	};
	size_t n, bound = tds_login7_bound(&r), tl = 2 * (sizeof(token) - 1);
	tds_login7_t l;
	tds_feature_t f;

	memset(nonce, 0x77, 32);
	out = malloc(bound);
	n = tds_login7_build(out, bound, &r);
	CHECK(n > 0 && n <= bound);
	CHECK_EQ_INT(tds_login7_parse(out, n, &l), 0);
	CHECK_EQ_INT(l.user.len, 0);
	CHECK_EQ_INT(l.password.len, 0);
	CHECK_EQ_INT(l.flags3 & TDS_OF3_EXTENSION, TDS_OF3_EXTENSION);
	CHECK_EQ_INT(l.flags2 & TDS_OF2_INT_SECURITY, 0);
	CHECK(tds_login7_feature(&l, TDS_FEAT_FEDAUTH, &f));
	CHECK_EQ_INT(f.len, 1 + 4 + tl + 32);
	CHECK_EQ_INT(f.data[0], 0x03); /* SECURITYTOKEN << 1 | echo */
	CHECK_EQ_INT(f.data[1] | f.data[2] << 8, tl);
	CHECK(f.data[5] == 'e' && f.data[6] == 0 && f.data[7] == 'y');
	CHECK(memcmp(f.data + 5 + tl, nonce, 32) == 0);
	/* the feature block ends the record with its terminator */
	CHECK_EQ_INT(out[n - 1], TDS_FEAT_TERMINATOR);
	CHECK(l.features + l.features_len == out + n - 1);
	/* no echo, no nonce */
	r.fedauth_echo = false;
	r.nonce = NULL;
	n = tds_login7_build(out, bound, &r);
	CHECK_EQ_INT(tds_login7_parse(out, n, &l), 0);
	CHECK(tds_login7_feature(&l, TDS_FEAT_FEDAUTH, &f));
	CHECK_EQ_INT(f.data[0], 0x02);
	CHECK_EQ_INT(f.len, 1 + 4 + tl);
	for (size_t cap = 0; cap < n; cap += 7) {
		b = canary_buf(cap);
		CHECK_EQ_INT(tds_login7_build(b, cap, &r), 0);
		CHECK(canary_ok(b, cap));
		free(b);
	}
	r.token_len = 0;
	CHECK_EQ_INT(tds_login7_build(out, bound, &r), 0);
	free(out);
}

/* A large token: LOGIN7 past one packet, FeatureExt offset past 64 KB of
 * token is fine (it is a DWORD); only string offsets are 16-bit. */
static void test_login7_big_token(void)
{
	size_t tlen = 40000, n, bound;
	char *tok = malloc(tlen);
	uint8_t *out;
	tds_login7_t l;
	tds_feature_t f;
	tds_login7_req_t r = {.database = "d", .token = tok, .token_len = tlen};

	memset(tok, 'A', tlen);
	bound = tds_login7_bound(&r);
	out = malloc(bound);
	n = tds_login7_build(out, bound, &r);
	CHECK(n > 80000);
	CHECK_EQ_INT(tds_login7_parse(out, n, &l), 0);
	CHECK(tds_login7_feature(&l, TDS_FEAT_FEDAUTH, &f));
	CHECK_EQ_INT(f.len, 5 + 2 * tlen);
	free(out);
	free(tok);
}

static void test_login7_malformed(void)
{
	const uint8_t *p = spec_login7 + 8;
	size_t len = sizeof(spec_login7) - 8;
	uint8_t b[512];
	tds_login7_t l;

	for (size_t n = 0; n < TDS_LOGIN7_FIXED; n++)
		CHECK_EQ_INT(tds_login7_parse(p, n, &l), TP_EPROTO);
	/* Length says more than is there */
	CHECK_EQ_INT(tds_login7_parse(p, len - 1, &l), TP_EPROTO);
	/* Length below the fixed part */
	memcpy(b, p, len);
	b[0] = 93;
	CHECK_EQ_INT(tds_login7_parse(b, len, &l), TP_EPROTO);
	/* user name running past the record */
	memcpy(b, p, len);
	b[42] = 0x20;
	CHECK_EQ_INT(tds_login7_parse(b, len, &l), TP_EPROTO);
	/* offset inside the fixed part */
	memcpy(b, p, len);
	b[40] = 0x10;
	CHECK_EQ_INT(tds_login7_parse(b, len, &l), TP_EPROTO);
	/* offset 0xFFFF */
	memcpy(b, p, len);
	b[40] = 0xFF;
	b[41] = 0xFF;
	CHECK_EQ_INT(tds_login7_parse(b, len, &l), TP_EPROTO);
	/* zero length: the offset is ignored whatever it says */
	memcpy(b, p, len);
	b[44] = 0xFF;
	b[45] = 0xFF;
	CHECK_EQ_INT(tds_login7_parse(b, len, &l), 0);
	/* over 128 characters */
	memcpy(b, p, len);
	b[38] = 129;
	CHECK_EQ_INT(tds_login7_parse(b, len, &l), TP_EPROTO);
	/* SSPI past the record */
	memcpy(b, p, len);
	b[80] = 0x40;
	CHECK_EQ_INT(tds_login7_parse(b, len, &l), TP_EPROTO);
	/* fExtension with a 2-byte extension field */
	memcpy(b, p, len);
	b[27] = TDS_OF3_EXTENSION;
	b[56] = 0x5E;
	b[58] = 2;
	CHECK_EQ_INT(tds_login7_parse(b, len, &l), TP_EPROTO);
	/* fExtension with an empty extension field: no features */
	b[58] = 0;
	CHECK_EQ_INT(tds_login7_parse(b, len, &l), 0);
	CHECK(l.features == NULL);
}

/* Feature blocks that lie: built from a good FEDAUTH login. */
static void test_login7_bad_features(void)
{
	static const char token[] = "abc";
	uint8_t out[512];
	tds_login7_req_t r = {.token = token, .token_len = 3};
	tds_login7_t l;
	size_t n = tds_login7_build(out, sizeof(out), &r), fe, ext;

	CHECK_EQ_INT(tds_login7_parse(out, n, &l), 0);
	ext = out[56] | out[57] << 8;
	fe = out[ext] | out[ext + 1] << 8;
	/* feature data length past the record */
	out[fe + 1] = 0xFF;
	CHECK_EQ_INT(tds_login7_parse(out, n, &l), TP_EPROTO);
	out[fe + 1] = (uint8_t)(1 + 4 + 6);
	CHECK_EQ_INT(tds_login7_parse(out, n, &l), 0);
	/* no terminator */
	out[n - 1] = 0x42;
	CHECK_EQ_INT(tds_login7_parse(out, n, &l), TP_EPROTO);
	out[n - 1] = TDS_FEAT_TERMINATOR;
	/* FeatureExt offset at the end of the record, or inside the
	 * fixed part */
	out[ext] = (uint8_t)n;
	out[ext + 1] = (uint8_t)(n >> 8);
	CHECK_EQ_INT(tds_login7_parse(out, n, &l), TP_EPROTO);
	out[ext] = 10;
	out[ext + 1] = 0;
	CHECK_EQ_INT(tds_login7_parse(out, n, &l), TP_EPROTO);
	/* offset 0: no block */
	out[ext] = 0;
	CHECK_EQ_INT(tds_login7_parse(out, n, &l), 0);
	CHECK(l.features == NULL);
}

/* ---- UTF-16 ---- */

static void test_utf16(void)
{
	/* "aé€😀" then two padding NULs */
	static const uint8_t u[] = {'a',  0,	0xE9, 0, 0xAC, 0x20, 0x3D,
				    0xD8, 0x00, 0xDE, 0, 0,    0,    0};
	uint8_t back[32];
	char s[32];
	size_t n, units;

	CHECK_EQ_INT(tds_utf16_to_utf8(u, sizeof(u), s, sizeof(s), &n), 0);
	CHECK_EQ_STR(s, "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
	CHECK_EQ_INT(n, 10);
	CHECK_EQ_INT(tds_utf8_to_utf16(s, n, back, sizeof(back), &units), 10);
	CHECK_EQ_INT(units, 5);
	CHECK(memcmp(back, u, 10) == 0);
	CHECK_EQ_INT(tds_utf16_to_utf8(u, sizeof(u), s, 10, &n), TP_ETOOBIG);
	CHECK_EQ_INT(tds_utf16_to_utf8(u, sizeof(u), s, 11, &n), 0);
	CHECK_EQ_INT(tds_utf16_to_utf8(u, 0, s, 0, &n), TP_ETOOBIG);
	CHECK_EQ_INT(tds_utf16_to_utf8(u, 3, s, sizeof(s), &n), TP_EPROTO);
	/* unpaired surrogates */
	CHECK_EQ_INT(tds_utf16_to_utf8(u + 6, 2, s, sizeof(s), &n), TP_EPROTO);
	CHECK_EQ_INT(tds_utf16_to_utf8(u + 8, 2, s, sizeof(s), &n), TP_EPROTO);
	CHECK_EQ_INT(tds_utf16_to_utf8((const uint8_t *)"\x3D\xD8\x41\x00", 4,
				       s, sizeof(s), &n),
		     TP_EPROTO);
	/* a NUL inside */
	CHECK_EQ_INT(tds_utf16_to_utf8((const uint8_t *)"a\0\0\0b\0", 6, s,
				       sizeof(s), &n),
		     TP_EPROTO);
	/* bad UTF-8: overlong, surrogate, past U+10FFFF, truncated, stray
	 * continuation */
	CHECK_EQ_INT(tds_utf8_to_utf16("\xC0\x80", 2, back, 32, &units), -1);
	CHECK_EQ_INT(tds_utf8_to_utf16("\xED\xA0\x80", 3, back, 32, &units),
		     -1);
	CHECK_EQ_INT(tds_utf8_to_utf16("\xF4\x90\x80\x80", 4, back, 32, &units),
		     -1);
	CHECK_EQ_INT(tds_utf8_to_utf16("\xE2\x82", 2, back, 32, &units), -1);
	CHECK_EQ_INT(tds_utf8_to_utf16("\x80", 1, back, 32, &units), -1);
	CHECK_EQ_INT(tds_utf8_to_utf16("ab", 2, back, 3, &units), -1);
	CHECK_EQ_INT(tds_utf8_to_utf16("", 0, back, 0, &units), 0);
}

/* ---- ALL_HEADERS ---- */

static void test_all_headers(void)
{
	const uint8_t *p = spec_batch + 8;
	size_t len = sizeof(spec_batch) - 8;
	static const uint8_t txn[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	uint8_t out[64];
	tds_all_headers_t h;

	CHECK_EQ_INT(tds_all_headers_parse(p, len, &h), 0);
	CHECK_EQ_INT(h.total, 0x16);
	CHECK(h.has_txn && !h.has_notify && !h.has_trace);
	CHECK_EQ_INT(h.outstanding, 1);
	for (int i = 0; i < 8; i++)
		CHECK_EQ_INT(h.txn[i], 0);
	CHECK_EQ_INT(h.txn_offset, 10);
	CHECK_EQ_INT(p[h.total], 0x0A); /* the SQL text follows */
	for (size_t l = 0; l < 0x16; l++)
		CHECK(tds_all_headers_parse(p, l, &h) == TP_EAGAIN);
	CHECK_EQ_INT(tds_all_headers_build(out, sizeof(out), txn, 1),
		     TDS_AH_TXN_LEN);
	CHECK(memcmp(out, p, 10) == 0);
	CHECK_EQ_INT(tds_all_headers_parse(out, TDS_AH_TXN_LEN, &h), 0);
	CHECK(memcmp(h.txn, txn, 8) == 0);
	CHECK_EQ_INT(tds_all_headers_build(out, TDS_AH_TXN_LEN - 1, txn, 1), 0);
	/* header length past the total, below its own size, two of a kind,
	 * unknown type, total too small */
	memcpy(out, p, 22);
	out[4] = 0x13;
	CHECK_EQ_INT(tds_all_headers_parse(out, 22, &h), TP_EPROTO);
	out[4] = 0x05;
	CHECK_EQ_INT(tds_all_headers_parse(out, 22, &h), TP_EPROTO);
	memcpy(out, p, 22);
	memcpy(out + 22, p + 4, 18);
	out[0] = 40;
	CHECK_EQ_INT(tds_all_headers_parse(out, 40, &h), TP_EPROTO);
	memcpy(out, p, 22);
	out[8] = 9;
	CHECK_EQ_INT(tds_all_headers_parse(out, 22, &h), TP_EPROTO);
	out[0] = 4;
	CHECK_EQ_INT(tds_all_headers_parse(out, 22, &h), TP_EPROTO);
}

TP_TEST_MAIN(TP_TEST(test_header), TP_TEST(test_frame), TP_TEST(test_msg_frame),
	     TP_TEST(test_msg_frame_oversized_packet), TP_TEST(test_attention),
	     TP_TEST(test_packetize), TP_TEST(test_packer_chunks),
	     TP_TEST(test_packer_exact_and_zero_copy), TP_TEST(test_unpacker),
	     TP_TEST(test_unpacker_first_status), TP_TEST(test_reframe),
	     TP_TEST(test_prelogin_spec), TP_TEST(test_prelogin_roundtrip),
	     TP_TEST(test_prelogin_malformed), TP_TEST(test_prelogin_is_tls),
	     TP_TEST(test_login7_spec), TP_TEST(test_password_vector),
	     TP_TEST(test_login7_sql_auth_roundtrip),
	     TP_TEST(test_login7_fedauth_roundtrip),
	     TP_TEST(test_login7_big_token), TP_TEST(test_login7_malformed),
	     TP_TEST(test_login7_bad_features), TP_TEST(test_utf16),
	     TP_TEST(test_all_headers))
