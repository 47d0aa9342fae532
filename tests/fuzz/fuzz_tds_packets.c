/*
 * fuzz_tds_packets.c - libFuzzer target for TDS packet framing, streaming
 * re-framing, PRELOGIN and ALL_HEADERS.
 *
 * Input: two control bytes (chunk size, packet size for re-framing), then
 * a packet stream as a peer would send it. Checked invariants (a
 * violation traps):
 * - tds_frame() walks the stream as the proxy does; every complete packet
 *   re-parses and re-writes to the same header bytes;
 * - the unpacker gives the same payload bytes and message boundaries fed
 *   whole or in chunks, and its slices point inside the input;
 * - re-framing into another packet size keeps every message's payload,
 *   type and count, with every packet but a message's last exactly the new
 *   size and EOM only on the last;
 * - a PRELOGIN payload that parses builds to bytes that parse to the same
 *   options, and building again gives the same bytes; the builder refuses
 *   every smaller cap without writing past it;
 * - ALL_HEADERS that parse stay inside the payload.
 *
 * Not here: LOGIN7 (fuzz_tds_login7.c), tokens (fuzz_tds_tokens.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/tds/tds.h"

#define REQUIRE(c)                        \
	do {                              \
		if (!(c))                 \
			__builtin_trap(); \
	} while (0)

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		abort();
	return p;
}

typedef struct sink {
	uint8_t *d;
	size_t len, cap;
} sink_t;

static void sink_emit(void *arg, const void *buf, size_t len)
{
	sink_t *s = arg;

	if (s->len + len > s->cap) {
		s->cap = (s->len + len) * 2 + 64;
		s->d = realloc(s->d, s->cap);
		if (!s->d)
			abort();
	}
	memcpy(s->d + s->len, buf, len);
	s->len += len;
}

/* What an unpacker made of a stream: joined payload, message count, and
 * the payload offset where each message ended. */
typedef struct unpacked {
	sink_t payload;
	size_t ends[256];
	size_t nmsgs;
	uint8_t types[256];
	int err;
} unpacked_t;

static void unpack(const uint8_t *in, size_t len, size_t chunk, unpacked_t *out)
{
	tds_unpacker_t u;
	size_t pos = 0;

	memset(out, 0, sizeof(*out));
	tds_unpacker_init(&u);
	while (pos < len && !out->err) {
		size_t end = len - pos < chunk ? len : pos + chunk;

		while (pos < end) {
			const uint8_t *data;
			size_t used, dlen;
			int rc = tds_unpack(&u, in + pos, end - pos, &used,
					    &data, &dlen);

			REQUIRE(used <= end - pos);
			pos += used;
			if (rc < 0) {
				REQUIRE(rc == TP_EPROTO);
				out->err = rc;
				break;
			}
			if (dlen) {
				REQUIRE(data >= in && data + dlen <= in + len);
				sink_emit(&out->payload, data, dlen);
			}
			if ((rc & TDS_UNPACK_EOM) && out->nmsgs < 256) {
				out->types[out->nmsgs] = u.cur.type;
				out->ends[out->nmsgs++] = out->payload.len;
			}
			if (rc == 0) {
				REQUIRE(pos == end);
				break;
			}
		}
	}
}

static bool same_unpacked(const unpacked_t *a, const unpacked_t *b)
{
	return a->err == b->err && a->nmsgs == b->nmsgs &&
	       a->payload.len == b->payload.len &&
	       (a->payload.len == 0 ||
		memcmp(a->payload.d, b->payload.d, a->payload.len) == 0) &&
	       memcmp(a->ends, b->ends, sizeof(a->ends)) == 0 &&
	       memcmp(a->types, b->types, sizeof(a->types)) == 0;
}

/* Every packet of a re-framed stream: `size` long unless it ends a
 * message, EOM only there. */
static void check_framing(const uint8_t *d, size_t len, size_t size)
{
	size_t pos = 0;

	while (pos < len) {
		tds_header_t h;

		REQUIRE(tds_header_parse(d + pos, len - pos, &h) == 0);
		REQUIRE(h.length <= len - pos);
		if (!(h.status & TDS_ST_EOM))
			REQUIRE(h.length == size);
		else
			REQUIRE(h.length <= size);
		pos += h.length;
	}
}

static void check_reframe(const uint8_t *in, size_t len, size_t chunk,
			  size_t size, const unpacked_t *orig)
{
	uint8_t *hold = xmalloc(size - TDS_HDR);
	tds_unpacker_t u;
	tds_packer_t p;
	sink_t out = {0};
	unpacked_t *again = xmalloc(sizeof(*again));
	size_t pos = 0, msgs = 0;
	int rc = 0;

	tds_unpacker_init(&u);
	REQUIRE(tds_packer_init(&p, hold, size, TDS_PKT_REPLY, 0) == 0);
	while (pos < len) {
		size_t n = len - pos < chunk ? len - pos : chunk;

		rc = tds_reframe(&u, &p, in + pos, n, sink_emit, &out);
		if (rc < 0)
			break;
		msgs += (size_t)rc;
		pos += n;
	}
	if (rc >= 0 && !orig->err) {
		REQUIRE(msgs == orig->nmsgs || orig->nmsgs == 256);
		check_framing(out.d, out.len, size);
		unpack(out.d, out.len, out.len ? out.len : 1, again);
		REQUIRE(again->err == 0);
		REQUIRE(again->nmsgs == orig->nmsgs);
		REQUIRE(memcmp(again->types, orig->types,
			       sizeof(orig->types)) == 0);
		/* the payload of complete messages is kept exactly */
		size_t done = orig->nmsgs ? orig->ends[orig->nmsgs - 1] : 0;
		REQUIRE(again->payload.len >= done);
		REQUIRE(done == 0 ||
			memcmp(again->payload.d, orig->payload.d, done) == 0);
		free(again->payload.d);
	}
	free(again);
	free(out.d);
	free(hold);
}

static bool same_prelogin(const tds_prelogin_t *a, const tds_prelogin_t *b)
{
	for (int i = 0; i < TDS_PL_NOPTS; i++) {
		if (!a->opt[i] != !b->opt[i] || a->len[i] != b->len[i])
			return false;
		if (a->len[i] && memcmp(a->opt[i], b->opt[i], a->len[i]))
			return false;
	}
	return true;
}

static void check_prelogin(const uint8_t *p, size_t len)
{
	tds_prelogin_t pl, back;
	size_t n, n2, cap;
	uint8_t *out, *out2, *small;

	if (tds_prelogin_parse(p, len, &pl) != 0)
		return;
	for (int i = 0; i < TDS_PL_NOPTS; i++)
		if (pl.opt[i])
			REQUIRE(pl.opt[i] >= p &&
				pl.opt[i] + pl.len[i] <= p + len);
	REQUIRE(pl.opt[TDS_PL_VERSION] != NULL);
	out = xmalloc(len + 64);
	n = tds_prelogin_build(out, len + 64, &pl);
	REQUIRE(n > 0 && n <= len + 64);
	REQUIRE(tds_prelogin_parse(out, n, &back) == 0);
	REQUIRE(same_prelogin(&pl, &back));
	out2 = xmalloc(n);
	n2 = tds_prelogin_build(out2, n, &back);
	REQUIRE(n2 == n && memcmp(out, out2, n) == 0);
	cap = (p[0] ^ p[len - 1]) % n;
	small = xmalloc(cap);
	REQUIRE(tds_prelogin_build(small, cap, &pl) == 0);
	free(small);
	free(out2);
	free(out);
}

static void check_all_headers(const uint8_t *p, size_t len)
{
	tds_all_headers_t h;
	int rc = tds_all_headers_parse(p, len, &h);

	REQUIRE(rc == 0 || rc == TP_EAGAIN || rc == TP_EPROTO);
	if (rc != 0)
		return;
	REQUIRE(h.total >= 10 && h.total <= len);
	if (h.has_txn)
		REQUIRE(h.txn_offset + 12 <= h.total &&
			memcmp(p + h.txn_offset, h.txn, 8) == 0);
}

/* The proxy's walk: frame, then look at each complete packet. */
static void walk_packets(const uint8_t *in, size_t len)
{
	size_t pos = 0;

	while (pos < len) {
		size_t n = 0;
		int err = tds_frame(in + pos, len - pos, &n);
		tds_header_t h;
		uint8_t hdr[8], *pkt;

		REQUIRE(err == 0 || err == TP_EAGAIN || err == TP_EPROTO);
		if (err)
			break;
		REQUIRE(n >= TDS_HDR && n <= 0xFFFF);
		if (n > len - pos)
			break;
		pkt = xmalloc(n);
		memcpy(pkt, in + pos, n);
		REQUIRE(tds_header_parse(pkt, n, &h) == 0 && h.length == n);
		tds_header_put(hdr, &h);
		REQUIRE(memcmp(hdr, pkt, 8) == 0);
		REQUIRE(tds_is_attention(pkt, n) ==
			(h.type == TDS_PKT_ATTENTION && n == 8 &&
			 (h.status & TDS_ST_EOM)));
		if (n > TDS_HDR) {
			uint8_t *pl = xmalloc(n - TDS_HDR);

			memcpy(pl, pkt + TDS_HDR, n - TDS_HDR);
			check_prelogin(pl, n - TDS_HDR);
			check_all_headers(pl, n - TDS_HDR);
			(void)tds_prelogin_is_tls(pl, n - TDS_HDR);
			free(pl);
		}
		free(pkt);
		pos += n;
	}
}

static void check_msg_frame(const uint8_t *in, size_t len, size_t max)
{
	size_t m = 0, p = 0, got;
	int err = tds_msg_frame(in, len, max, &m, &p);
	uint8_t *out;

	REQUIRE(err == 0 || err == TP_EAGAIN || err == TP_EPROTO ||
		err == TP_ETOOBIG);
	if (err)
		return;
	REQUIRE(m <= len && p <= max && p + TDS_HDR <= m);
	out = xmalloc(p);
	got = tds_msg_payload(in, m, out, p);
	REQUIRE(got == p);
	if (p)
		REQUIRE(tds_msg_payload(in, m, out, p - 1) == 0);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unpacked_t *whole, *chunked;
	size_t chunk, psize;

	if (size < 2)
		return 0;
	chunk = 1 + data[0] % 64;
	psize = 9 + (size_t)data[1] * 3;
	data += 2;
	size -= 2;
	walk_packets(data, size);
	check_msg_frame(data, size, 1 + (size_t)chunk * 512);
	whole = xmalloc(sizeof(*whole));
	chunked = xmalloc(sizeof(*chunked));
	unpack(data, size, size ? size : 1, whole);
	unpack(data, size, chunk, chunked);
	REQUIRE(same_unpacked(whole, chunked));
	check_reframe(data, size, chunk, psize, whole);
	free(whole->payload.d);
	free(chunked->payload.d);
	free(whole);
	free(chunked);
	return 0;
}
