/*
 * fuzz_tds_tokens.c - libFuzzer target for the TDS reply scanner and the
 * token writers.
 *
 * Input: one control byte (seeds the chunking), then a server reply's
 * payload (token stream, packet headers removed). Checked invariants (a
 * violation traps):
 * - the scanner consumes what it says and never more than it was given;
 *   it returns only event kinds, 0, TP_EPROTO or TP_ETOOBIG;
 * - every pointer in an event lies inside the scanner's capture buffer,
 *   with its length;
 * - fed whole or in pseudo-random chunks (down to one byte), the scanner
 *   reports the same events with the same contents, fails at the same
 *   place, and ends in the same state;
 * - an ERROR/INFO, DONE or ENVCHANGE (database) event written again by
 *   the matching writer scans back to the same fields.
 *
 * Not here: packets (fuzz_tds_packets.c), LOGIN7 (fuzz_tds_login7.c).
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

#define MAX_EVENTS 128

/* An event, with the bytes its pointers showed, copied out. */
typedef struct rec {
	tds_event_t ev;
	uint8_t bytes[2 * TDS_SCAN_CAP];
	size_t nbytes;
} rec_t;

typedef struct run {
	rec_t *ev;
	size_t n;
	int err;
	size_t consumed;
	bool idle, in_txn;
} run_t;

static void require_in_cap(const tds_scan_t *s, const uint8_t *p, size_t n)
{
	if (!p) {
		REQUIRE(n == 0);
		return;
	}
	REQUIRE(p >= s->cap && n <= TDS_SCAN_CAP &&
		p + n <= s->cap + TDS_SCAN_CAP);
}

static void add_bytes(rec_t *r, const uint8_t *p, size_t n)
{
	if (p && n && r->nbytes + n <= sizeof(r->bytes)) {
		memcpy(r->bytes + r->nbytes, p, n);
		r->nbytes += n;
	}
}

static void record(run_t *run, const tds_scan_t *s)
{
	const tds_event_t *e = &s->ev;
	rec_t *r;

	require_in_cap(s, e->env_new, e->env_new_len);
	require_in_cap(s, e->env_old, e->env_old_len);
	require_in_cap(s, e->route_host, e->route_host_len);
	require_in_cap(s, e->route_db, e->route_db_len);
	require_in_cap(s, e->msg, e->msg_len);
	require_in_cap(s, e->prog_name, e->prog_name_len);
	require_in_cap(s, e->feature_data, e->feature_len);
	if (run->n >= MAX_EVENTS)
		return;
	r = &run->ev[run->n++];
	memset(r, 0, sizeof(*r));
	memcpy(&r->ev, e, sizeof(*e));
	add_bytes(r, e->env_new, e->env_new_len);
	add_bytes(r, e->env_old, e->env_old_len);
	add_bytes(r, e->route_host, e->route_host_len);
	add_bytes(r, e->route_db, e->route_db_len);
	add_bytes(r, e->msg, e->msg_len);
	add_bytes(r, e->prog_name, e->prog_name_len);
	add_bytes(r, e->feature_data, e->feature_len);
	/* pointers differ between runs; contents must not */
	r->ev.env_new = r->ev.env_old = r->ev.route_host = r->ev.route_db =
	    r->ev.msg = r->ev.prog_name = r->ev.feature_data = NULL;
}

static uint32_t next_rand(uint32_t *state)
{
	*state = *state * 1103515245u + 12345u;
	return *state >> 16;
}

/* Scans buf in chunks (seed 0: whole). */
static void scan(const uint8_t *buf, size_t len, uint32_t seed, run_t *run,
		 rec_t *store, tds_scan_t *s)
{
	size_t pos = 0;

	memset(run, 0, sizeof(*run));
	run->ev = store;
	tds_scan_init(s);
	while (pos < len) {
		size_t chunk = seed ? 1 + next_rand(&seed) % 97 : len;
		size_t end = len - pos < chunk ? len : pos + chunk, used;

		while (pos < end) {
			int rc = tds_scan_feed(s, buf + pos, end - pos, &used);

			REQUIRE(used <= end - pos);
			pos += used;
			if (rc < 0) {
				REQUIRE(rc == TP_EPROTO || rc == TP_ETOOBIG);
				run->err = rc;
				run->consumed = pos;
				return;
			}
			if (rc == 0) {
				REQUIRE(pos == end);
				break;
			}
			REQUIRE(rc == s->ev.kind && rc <= TDS_EV_SESSIONSTATE);
			record(run, s);
		}
	}
	run->consumed = pos;
	run->idle = tds_scan_idle(s);
	run->in_txn = s->in_txn;
}

static void same_runs(const run_t *a, const run_t *b)
{
	REQUIRE(a->n == b->n && a->err == b->err);
	REQUIRE(a->idle == b->idle && a->in_txn == b->in_txn);
	/* an error is found at the same byte however the input arrives */
	REQUIRE(a->consumed == b->consumed);
	for (size_t i = 0; i < a->n; i++) {
		REQUIRE(memcmp(&a->ev[i].ev, &b->ev[i].ev,
			       sizeof(tds_event_t)) == 0);
		REQUIRE(a->ev[i].nbytes == b->ev[i].nbytes);
		REQUIRE(memcmp(a->ev[i].bytes, b->ev[i].bytes,
			       a->ev[i].nbytes) == 0);
	}
}

/* One token written by a writer must scan as exactly that event, and
 * all of it (a long one's tail is skipped after the event). */
static void rescan_one(const uint8_t *tok, size_t n, tds_scan_t *s,
		       tds_event_t *out)
{
	size_t used, rest;
	int rc;

	REQUIRE(n > 0);
	tds_scan_init(s);
	rc = tds_scan_feed(s, tok, n, &used);
	REQUIRE(rc > 0 && used <= n);
	*out = s->ev;
	rc = tds_scan_feed(s, tok + used, n - used, &rest);
	REQUIRE(rc == 0 && used + rest == n && tds_scan_idle(s));
}

static void check_writers(const rec_t *r, tds_scan_t *s)
{
	const tds_event_t *e = &r->ev;
	uint8_t out[4 * TDS_SCAN_CAP];
	char text[3 * TDS_SCAN_CAP];
	tds_event_t back;
	size_t n;

	switch (e->kind) {
	case TDS_EV_DONE:
		n = tds_put_done(out, sizeof(out), e->token, e->status,
				 e->curcmd, e->rows);
		rescan_one(out, n, s, &back);
		REQUIRE(back.status == e->status && back.rows == e->rows &&
			back.curcmd == e->curcmd && back.token == e->token);
		break;
	case TDS_EV_ERROR:
	case TDS_EV_INFO:
		if (tds_utf16_to_utf8(r->bytes, e->msg_len, text, sizeof(text),
				      NULL) != 0)
			break;
		n = tds_put_message(out, sizeof(out), e->token, e->number,
				    e->state, e->cls, text, "s", "p", e->line);
		if (!n)
			break; /* longer than a token can say */
		rescan_one(out, n, s, &back);
		REQUIRE(back.number == e->number && back.cls == e->cls &&
			back.state == e->state);
		break;
	case TDS_EV_ENVCHANGE:
		if (e->env_type != TDS_ENV_DATABASE ||
		    tds_utf16_to_utf8(r->bytes, e->env_new_len, text,
				      sizeof(text), NULL) != 0)
			break;
		n = tds_put_envchange(out, sizeof(out), TDS_ENV_DATABASE, text,
				      NULL);
		if (!n)
			break;
		rescan_one(out, n, s, &back);
		REQUIRE(back.env_type == TDS_ENV_DATABASE &&
			back.env_old_len == 0);
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static tds_scan_t s1, s2;
	static rec_t store1[MAX_EVENTS], store2[MAX_EVENTS];
	run_t whole, chunked;
	uint32_t seed;

	if (size < 1)
		return 0;
	seed = 1u + data[0];
	data++;
	size--;
	scan(data, size, 0, &whole, store1, &s1);
	scan(data, size, seed, &chunked, store2, &s2);
	same_runs(&whole, &chunked);
	for (size_t i = 0; i < whole.n && i < 16; i++)
		check_writers(&whole.ev[i], &s2);
	return 0;
}
