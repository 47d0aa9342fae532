/*
 * ops.c - the TDS protocol for the engine: per-connection state,
 * forwarding (what each packet means to the pool) and the ops table.
 *
 * The unit forwarded is a TDS packet. A request (SQLBatch, RPC,
 * TransMgrReq, bulk load) counts once, at its EOM packet; the server's
 * reply is one message, so its EOM packet is READY, and the incremental
 * token scanner fed with every reply packet says whether a transaction is
 * open (ENVCHANGE 8/9/10/17) and sees session-state changes the text of a
 * request cannot tell (ENVCHANGE database, SESSIONSTATE).
 *
 * Attention: forwarded to the server the client holds, which answers
 * with DONE ATTN; until then the reply in progress is not READY, so the
 * server stays with the client. A client that holds no server gets the
 * DONE ATTN from client_cancel (client.c).
 *
 * Transaction mode: a client pins when its requests leave state that
 * cannot move (codec_sql.c); the SET options drivers send at login do
 * move: they are recorded per client and replayed, after a
 * RESETCONNECTION, on a server that has other ones (server_sync).
 *
 * Not here: logins (client.c, server.c), byte layouts (codec*.c).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "protocols/tds/internal.h"

static void *tds_conn_new(bool client_side)
{
	if (client_side)
		return calloc(1, sizeof(tds_client_t));
	tds_server_t *st = calloc(1, sizeof(tds_server_t));

	if (st) {
		st->phase = TDSS_PRELOGIN;
		tds_scan_init(&st->scan);
	}
	return st;
}

/* Both structs start with the phase: it says which one this is. */
static void tds_conn_free(void *p)
{
	uint8_t phase = p ? *(uint8_t *)p : 0;

	if (!p)
		return;
	if (phase <= TDSC_DONE) {
		tds_client_t *c = p;

		free(c->user);
		free(c->sets);
	} else {
		tds_server_t *s = p;

		free(s->route_host);
		free(s->host);
		free(s->sets);
		free(s->up.buf);
		free(s->down.buf);
	}
	free(p);
}

/* ---- sending ---- */

void tds_send(tp_conn_t *c, uint8_t type, uint8_t status, size_t size,
	      const uint8_t *payload, size_t len)
{
	uint8_t small[4096], *buf = small;
	size_t room = size - TDS_HDR;
	size_t cap = len + TDS_HDR * (len / room + 1), n;

	if (cap > sizeof(small) && !(buf = malloc(cap))) {
		tp_conn_fail(c, TP_ENOMEM, "out of memory");
		return;
	}
	n = tds_packetize(buf, cap, type, status, 0, size, payload, len);
	tp_conn_out(c, buf, n);
	OPENSSL_cleanse(buf, n);
	if (buf != small)
		free(buf);
}

void tds_send_flight(tp_conn_t *c)
{
	uint8_t chunk[16384], *all = NULL, *p;
	size_t len = 0, n;

	while ((n = tp_conn_tls_take(c, chunk, sizeof(chunk))) > 0) {
		p = realloc(all, len + n);
		if (!p) {
			free(all);
			tp_conn_fail(c, TP_ENOMEM, "out of memory");
			return;
		}
		all = p;
		memcpy(all + len, chunk, n);
		len += n;
	}
	if (len)
		tds_send(c, TDS_PKT_PRELOGIN, 0, TDS_DEFAULT_PACKET, all, len);
	free(all);
}

/* ---- re-framing ---- */

static void emit_out(void *arg, const void *buf, size_t len)
{
	tp_conn_out(arg, buf, len);
}

static bool reframer_setup(tds_reframer_t *r, bool on, size_t size)
{
	uint8_t *p;

	r->on = on;
	if (!on)
		return true;
	if (r->cap < size - TDS_HDR) {
		p = realloc(r->buf, size - TDS_HDR);
		if (!p)
			return false;
		r->buf = p;
		r->cap = size - TDS_HDR;
	}
	tds_unpacker_init(&r->u);
	return tds_packer_init(&r->p, r->buf, size, TDS_PKT_REPLY, 0) == 0;
}

/*
 * A client keeps the packet size it negotiated, a server its own. From
 * TDS 7.3 every packet of a request but the last must be exactly the
 * server's size, so requests are re-framed whenever the sizes differ;
 * replies only when the server's packets are larger than the client's.
 */
bool tds_link(tp_conn_t *s, tp_conn_t *c)
{
	tds_server_t *ss = tds_server(s);
	size_t csize = tds_client(c)->packet_size,
	       ssize = ss->params.packet_size;

	tds_client(c)->in_msg = false;
	return reframer_setup(&ss->up, csize != ssize, ssize) &&
	       reframer_setup(&ss->down, ssize > csize, csize);
}

/* Passes a packet on through a re-framer: TP_MSG_DROP (the engine must
 * not forward the original), or TP_MSG_CLOSE when the stream is broken. */
static int reframe(tds_reframer_t *r, tp_conn_t *to, const uint8_t *pkt,
		   size_t len)
{
	if (tds_reframe(&r->u, &r->p, pkt, len, emit_out, to) < 0)
		return TP_MSG_CLOSE;
	return TP_MSG_DROP;
}

/* ---- forwarding: client to server ---- */

/* A SQLBatch packet: the request's first packet carries ALL_HEADERS. */
static const uint8_t *batch_text(const uint8_t *p, size_t n, bool first,
				 size_t *tlen)
{
	tds_all_headers_t ah;

	if (first && tds_all_headers_parse(p, n, &ah) == 0) {
		p += ah.total;
		n -= ah.total;
	}
	*tlen = n & ~(size_t)1;
	return p;
}

/* Records the client's SET lines (and its server's, which runs them).
 * False when they cannot be kept: the client then pins. */
static bool keep_sets(tp_conn_t *c, tp_conn_t *s, const char *lines)
{
	tds_client_t *cs = tds_client(c);
	tds_server_t *ss = tds_server(s);
	char list[TDS_SETS_MAX];
	char *copy, *copy2;

	snprintf(list, sizeof(list), "%s", cs->sets ? cs->sets : "");
	if (tds_sets_merge(list, sizeof(list), lines) != 0)
		return false;
	copy = strdup(list);
	copy2 = strdup(list);
	if (!copy || !copy2) {
		free(copy);
		free(copy2);
		return false;
	}
	free(cs->sets);
	cs->sets = copy;
	free(ss->sets);
	ss->sets = copy2;
	return true;
}

/* What a SQLBatch packet does to session state; records SETs when the
 * client holds server s (this is the one call for this packet then). */
static int on_batch(tp_conn_t *c, tp_conn_t *s, const uint8_t *pkt, size_t have)
{
	tds_client_t *cs = tds_client(c);
	bool first = !s || !cs->in_msg, single = first && (pkt[1] & TDS_ST_EOM);
	char sets[TDS_SETS_MAX];
	tds_sql_verdict_t v;
	const uint8_t *text;
	size_t tlen;

	text = batch_text(pkt + TDS_HDR, have - TDS_HDR, first, &tlen);
	if (tds_sql_classify(text, tlen, sets, sizeof(sets), &v) != 0 || v.pins)
		return TP_MSG_PIN;
	if (!v.sets_len)
		return 0;
	/* SETs in a batch of several packets: too much to judge. */
	if (!single)
		return TP_MSG_PIN;
	if (s && !keep_sets(c, s, sets))
		return TP_MSG_PIN;
	return 0;
}

/* TransMgrReq: begin, commit, rollback, save are tracked through the
 * server's ENVCHANGEs; anything else (DTC) binds the session. */
static int on_transmgr(const uint8_t *pkt, size_t have)
{
	tds_all_headers_t ah;
	const uint8_t *p = pkt + TDS_HDR;
	size_t n = have - TDS_HDR;
	uint16_t type;

	if (tds_all_headers_parse(p, n, &ah) != 0 || n - ah.total < 2)
		return TP_MSG_PIN;
	type = tds_le16(p + ah.total);
	return type >= 5 && type <= 9 && type != 6 ? 0 : TP_MSG_PIN;
}

static int request(tp_conn_t *c, tp_conn_t *s, const uint8_t *pkt, size_t have)
{
	tds_client_t *cs = tds_client(c);
	bool eom = pkt[1] & TDS_ST_EOM, first = !s || !cs->in_msg;
	int act = eom ? TP_MSG_REQUEST : 0;

	if (s && first && (pkt[1] & TDS_ST_RESETCONN)) {
		/* The client resets its own session (any request may say
		 * so): options go back to the login's on both sides. */
		free(cs->sets);
		free(tds_server(s)->sets);
		cs->sets = tds_server(s)->sets = NULL;
	}
	switch (pkt[0]) {
	case TDS_PKT_SQLBATCH:
		act |= on_batch(c, s, pkt, have);
		break;
	case TDS_PKT_RPC:
		if (first && tds_rpc_pins(pkt + TDS_HDR, have - TDS_HDR))
			act |= TP_MSG_PIN;
		break;
	case TDS_PKT_TRANSMGR:
		if (first)
			act |= on_transmgr(pkt, have);
		break;
	}
	if (s) /* forwarding: the one call for this packet */
		cs->in_msg = !eom;
	if (cs->pin)
		act |= TP_MSG_PIN;
	return act;
}

static int classify(tp_conn_t *c, tp_conn_t *s, const uint8_t *msg, size_t have)
{
	switch (msg[0]) {
	case TDS_PKT_SQLBATCH:
	case TDS_PKT_RPC:
	case TDS_PKT_TRANSMGR:
	case TDS_PKT_BULK:
		if (s) {
			tds_server(s)->req_open = !(msg[1] & TDS_ST_EOM);
			tds_server(s)->req_type = msg[0];
		}
		return request(c, s, msg, have);
	case TDS_PKT_ATTENTION:
		if (s)
			tds_server(s)->attn = true;
		return TP_MSG_CANCEL;
	default:
		/* A login message again, MARS (SMP), anything else: not
		 * something a pooled session can take. */
		tp_conn_debug(c, "unexpected TDS packet type 0x%02x: closing",
			      msg[0]);
		return TP_MSG_CLOSE;
	}
}

static int tds_client_msg(tp_conn_t *c, const uint8_t *msg, size_t have,
			  size_t msg_len)
{
	tp_conn_t *s = tp_conn_peer(c);
	int act;

	if (have < TDS_HDR || have != msg_len)
		return TP_MSG_CLOSE; /* packets are small: always whole */
	act = classify(c, s, msg, have);
	if (s && !(act & TP_MSG_CLOSE) && tds_server(s)->up.on)
		act |= reframe(&tds_server(s)->up, s, msg, have);
	return act;
}

/* ---- forwarding: server to client ---- */

void tds_server_event(tp_conn_t *s, const tds_event_t *ev)
{
	tds_server_t *st = tds_server(s);
	char db[TDS_NAME_MAX];

	switch (ev->kind) {
	case TDS_EV_DONE:
		if (ev->status & TDS_DONE_ATTN)
			st->msg_attn = true;
		break;
	case TDS_EV_ENVCHANGE:
		/* USE: the session is in another database now. Not while
		 * our own reset puts it back. */
		if (ev->env_type != TDS_ENV_DATABASE || st->phase != TDSS_READY)
			break;
		if (tds_utf16_to_utf8(ev->env_new, ev->env_new_len, db,
				      sizeof(db), NULL) != 0 ||
		    strcmp(db, st->params.database) != 0)
			st->msg_pin = true;
		break;
	case TDS_EV_SESSIONSTATE:
		if (st->phase == TDSS_READY)
			st->msg_pin = true;
		break;
	}
}

/* Feeds a reply packet's payload to the scanner; false when the stream
 * cannot be followed any more. */
static bool scan_packet(tp_conn_t *s, const uint8_t *p, size_t n, bool eom)
{
	tds_server_t *st = tds_server(s);
	size_t pos = 0, used;
	int rc;

	while ((rc = tds_scan_feed(&st->scan, p + pos, n - pos, &used)) > 0) {
		pos += used;
		tds_server_event(s, &st->scan.ev);
	}
	return rc == 0 && (!eom || tds_scan_idle(&st->scan));
}

/* The end of a reply message: READY unless an attention is still to be
 * answered (tedious wants the interrupted reply, then the DONE ATTN). */
static int reply_done(tp_conn_t *s)
{
	tds_server_t *st = tds_server(s);
	tp_conn_t *c = tp_conn_peer(s);
	int act = 0;
	bool ready = !st->attn || st->msg_attn;

	if (st->msg_attn)
		st->attn = false;
	if (st->msg_pin) {
		st->dirty = true;
		if (c)
			tds_client(c)->pin = true;
	}
	if (ready) {
		act |= TP_MSG_READY;
		if (!st->scan.in_txn && !st->failed && !st->dirty)
			act |= TP_MSG_IDLE;
	}
	st->msg_attn = st->msg_pin = false;
	return act;
}

static int tds_server_msg(tp_conn_t *s, const uint8_t *msg, size_t have,
			  size_t msg_len)
{
	tds_server_t *st = tds_server(s);
	bool eom = have >= TDS_HDR && (msg[1] & TDS_ST_EOM);
	int act = TP_MSG_FORWARD;

	if (have < TDS_HDR || have != msg_len || msg[0] != TDS_PKT_REPLY) {
		st->failed = true;
		return TP_MSG_BROKEN;
	}
	if (!st->failed &&
	    !scan_packet(s, msg + TDS_HDR, have - TDS_HDR, eom)) {
		/* From here on replies end at EOM, transactions are
		 * unknown: the client keeps the server, which is closed
		 * after it. */
		tp_conn_debug(s, "cannot follow the server's reply stream");
		st->failed = true;
	}
	if (st->failed)
		act |= TP_MSG_BROKEN;
	if (st->down.on && tp_conn_peer(s)) {
		st->down.p.spid = tds_be16(msg + 4); /* the session's SPID */
		if (reframe(&st->down, tp_conn_peer(s), msg, have) !=
		    TP_MSG_DROP)
			return TP_MSG_BROKEN;
		act |= TP_MSG_DROP;
	}
	if (eom)
		act |= reply_done(s);
	return act;
}

/* The engine's frame(): one packet, of a type that may follow a login
 * (requests, attention, replies). Anything else (a login message again,
 * MARS's SMP, garbage) is a protocol error at once, not after a wait for
 * a length that garbage claims. */
static int tds_frame_op(const uint8_t *buf, size_t len, size_t *pkt_len)
{
	if (len >= 1) {
		switch (buf[0]) {
		case TDS_PKT_SQLBATCH:
		case TDS_PKT_RPC:
		case TDS_PKT_REPLY:
		case TDS_PKT_ATTENTION:
		case TDS_PKT_BULK:
		case TDS_PKT_TRANSMGR:
			break;
		default:
			return TP_EPROTO;
		}
	}
	return tds_frame(buf, len, pkt_len);
}

/* A TDS cancel is an attention on the client's own connection, never a
 * second connection: there is no key. */
static size_t tds_cancel_key(tp_conn_t *s, uint8_t *out, size_t cap)
{
	return 0;
}

const tp_protocol_t tp_protocol_tds = {
    .name = "sqlserver",
    .id = CONF_PROTO_SQLSERVER,
    .conn_new = tds_conn_new,
    .conn_free = tds_conn_free,
    .client_start = tds_client_start,
    .client_read = tds_client_read,
    .client_welcome = tds_client_welcome,
    .server_start = tds_server_start,
    .server_tls_done = tds_server_tls_done,
    .server_read = tds_server_read,
    .server_params = tds_server_params,
    .cancel_key = tds_cancel_key,
    .frame = tds_frame_op,
    .client_msg = tds_client_msg,
    .server_msg = tds_server_msg,
    .server_reset = tds_server_reset,
    .server_sync = tds_server_sync,
    .server_probe = tds_server_probe,
    .client_error = tds_client_error,
    .client_cancel = tds_client_cancel,
};
