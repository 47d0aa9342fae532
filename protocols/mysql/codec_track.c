/*
 * codec_track.c - follows a MySQL server's answers to tell when a command
 * is fully answered and whether the connection is then outside a
 * transaction.
 *
 * Each command that expects an answer is queued with what answers it
 * (my_command_reply()); the server's packets are fed in order. The
 * answers it knows: a lone OK / EOF / ERR; result sets (column count,
 * column definitions, EOF unless DEPRECATE_EOF, rows, EOF or OK), chained
 * while the status says MORE_RESULTS; LOCAL INFILE (0xFB, then the
 * client's file packets up to an empty one, then OK or ERR); the
 * COM_STMT_PREPARE_OK with its parameter and column definitions;
 * COM_FIELD_LIST; COM_STMT_FETCH; COM_STATISTICS' plain text. Packets of
 * 16 MB and more come in 0xFFFFFF fragments: only the first says what the
 * packet is.
 *
 * The status flags of the last OK / EOF tell whether a transaction is
 * open; an ERR leaves them as they were (MySQL keeps a transaction open
 * after most errors), which errs towards "in a transaction". Session
 * state tracking data in OKs is summarised as "pin" and "schema" events.
 *
 * Pure: no I/O, no allocation. Not here: what to do about any of it.
 */
#include <string.h>

#include "protocols/mysql/mysql.h"

enum phase {
	P_FIRST,     /* the first packet of an answer */
	P_COLDEFS,   /* result set column definitions (left) */
	P_COLEOF,    /* the EOF after them */
	P_ROWS,	     /* rows up to EOF / OK / ERR */
	P_INFILE,    /* the client sends a file; then OK or ERR */
	P_PARAMS,    /* prepare: parameter definitions (left) */
	P_PARAM_EOF, /* the EOF after them */
	P_PCOLS,     /* prepare: column definitions (left) */
	P_PCOL_EOF,  /* the EOF after them */
	P_FIELDS,    /* COM_FIELD_LIST: definitions up to EOF */
	P_STREAM,    /* binlog: until ERR or EOF */
};

/* A result set never has more columns than this (MySQL: 4096). */
#define MY_MAX_COLUMNS 65535u

void my_track_init(my_track_t *t, uint64_t caps, uint16_t status)
{
	memset(t, 0, sizeof(*t));
	t->caps = caps;
	t->status = status;
}

int my_track_push(my_track_t *t, my_reply_t reply, uint8_t tag)
{
	if (reply == MY_REPLY_NONE || reply == MY_REPLY_CLOSE)
		return 0;
	if (t->count >= MY_TRACK_QUEUE) {
		t->broken = true;
		return TP_ETOOBIG;
	}
	t->queue[(t->head + t->count) % MY_TRACK_QUEUE] = (uint8_t)reply;
	t->tags[(t->head + t->count) % MY_TRACK_QUEUE] = tag;
	t->count++;
	return 0;
}

bool my_track_busy(const my_track_t *t)
{
	return t->count > 0 || t->infile || t->cont || t->client_cont;
}

static bool deprecate_eof(const my_track_t *t)
{
	return (t->caps & MY_CAP_DEPRECATE_EOF) != 0;
}

/* The oldest command is answered. */
static unsigned done(my_track_t *t)
{
	t->head = (uint8_t)((t->head + 1) % MY_TRACK_QUEUE);
	t->count--;
	t->phase = P_FIRST;
	t->left = 0;
	t->infile = false;
	/* Whatever came last, nothing more follows this answer. */
	t->status &= (uint16_t)~MY_ST_MORE_RESULTS;
	if (t->count == 0 && !t->broken && my_status_idle(t->status))
		return MY_EV_DONE | MY_EV_IDLE;
	return MY_EV_DONE;
}

static unsigned broken(my_track_t *t)
{
	t->broken = true;
	return MY_EV_BROKEN;
}

/* Session tracking data of an OK, as events. */
static unsigned session_events(const my_ok_t *ok)
{
	my_session_info_t si;
	unsigned ev = 0;

	if (!(ok->status & MY_ST_STATE_CHANGED) || !ok->session.p)
		return 0;
	if (my_parse_session(ok->session, &si) != 0)
		return MY_EV_PIN; /* unreadable: assume the worst */
	if (si.state_changed || si.sysvars_changed || si.schema_changed)
		ev |= MY_EV_PIN;
	if (si.schema_changed)
		ev |= MY_EV_SCHEMA;
	return ev;
}

/* An OK packet (0x00, or 0xFE with DEPRECATE_EOF): status and tracking.
 * Sets *more when another result follows. */
static unsigned take_ok(my_track_t *t, const uint8_t *pl, size_t avail,
			size_t plen, bool *more)
{
	my_ok_t ok;

	*more = false;
	if (avail < plen || my_parse_ok(pl, plen, t->caps, &ok) != 0)
		return broken(t) | MY_EV_OK;
	t->status = ok.status;
	*more = (ok.status & MY_ST_MORE_RESULTS) != 0;
	return MY_EV_OK | session_events(&ok);
}

/* A terminating 0xFE: EOF, or an OK with DEPRECATE_EOF. */
static unsigned take_end(my_track_t *t, const uint8_t *pl, size_t avail,
			 size_t plen, bool *more)
{
	uint16_t warnings, status;

	/* With DEPRECATE_EOF every EOF is sent as an OK with this header. */
	if (deprecate_eof(t))
		return take_ok(t, pl, avail, plen, more);
	*more = false;
	if (avail < plen || my_parse_eof(pl, plen, &warnings, &status) != 0)
		return broken(t) | MY_EV_EOF;
	t->status = status;
	*more = (status & MY_ST_MORE_RESULTS) != 0;
	return MY_EV_EOF;
}

/* Whether a 0xFE packet ends rows or definitions (rather than being a row
 * whose first value has an 8-byte length). */
static bool is_end(const my_track_t *t, const uint8_t *pl, size_t plen)
{
	if (pl[0] != 0xfe)
		return false;
	return deprecate_eof(t) ? plen < MY_MAX_PAYLOAD : plen < 9;
}

/* The end of rows (or of one result): chained or finished. */
static unsigned end_of_result(my_track_t *t, unsigned ev, bool more)
{
	if (ev & MY_EV_BROKEN)
		return ev | done(t);
	if (more) {
		t->phase = P_FIRST; /* the next result of the same command */
		return ev;
	}
	return ev | done(t);
}

static unsigned first_result(my_track_t *t, const uint8_t *pl, size_t avail,
			     size_t plen)
{
	uint64_t n;
	size_t pos = 0;
	bool more;
	unsigned ev;

	switch (pl[0]) {
	case 0x00:
		ev = take_ok(t, pl, avail, plen, &more);
		return end_of_result(t, ev, more);
	case 0xfb:
		t->phase = P_INFILE;
		t->infile = true;
		return MY_EV_INFILE;
	case 0xfe: /* no result starts with this */
		return broken(t) | done(t);
	}
	if (my_get_lenenc(pl, avail < plen ? avail : plen, &pos, &n) != 0 ||
	    n == 0 || n > MY_MAX_COLUMNS)
		return broken(t) | done(t);
	t->phase = P_COLDEFS;
	t->left = (uint32_t)n;
	return 0;
}

static unsigned first_prepare(my_track_t *t, const uint8_t *pl, size_t avail,
			      size_t plen)
{
	uint16_t cols, params;

	if (pl[0] != 0x00 || avail < 9 || plen < 9)
		return broken(t) | done(t);
	cols = (uint16_t)(pl[5] | (pl[6] << 8));
	params = (uint16_t)(pl[7] | (pl[8] << 8));
	t->columns = cols;
	if (params) {
		t->phase = P_PARAMS;
		t->left = params;
		return 0;
	}
	if (cols) {
		t->phase = P_PCOLS;
		t->left = cols;
		return 0;
	}
	return done(t);
}

static unsigned rows(my_track_t *t, const uint8_t *pl, size_t avail,
		     size_t plen)
{
	bool more;
	unsigned ev;

	if (!is_end(t, pl, plen))
		return 0; /* a row */
	ev = take_end(t, pl, avail, plen, &more);
	return end_of_result(t, ev, more);
}

/* The first packet of an answer, by what the command expects. */
static unsigned first(my_track_t *t, my_reply_t kind, const uint8_t *pl,
		      size_t avail, size_t plen)
{
	bool more;
	unsigned ev;

	switch (kind) {
	case MY_REPLY_TEXT:
		return done(t);
	case MY_REPLY_OK:
		if (pl[0] == 0x00)
			ev = take_ok(t, pl, avail, plen, &more);
		else if (pl[0] == 0xfe)
			ev = take_end(t, pl, avail, plen, &more);
		else
			ev = broken(t);
		return ev | done(t);
	case MY_REPLY_RESULT:
		return first_result(t, pl, avail, plen);
	case MY_REPLY_PREPARE:
		return first_prepare(t, pl, avail, plen);
	case MY_REPLY_FETCH:
		t->phase = P_ROWS;
		return rows(t, pl, avail, plen);
	case MY_REPLY_FIELDS:
		t->phase = P_FIELDS;
		if (!is_end(t, pl, plen))
			return 0;
		ev = take_end(t, pl, avail, plen, &more);
		return ev | done(t);
	case MY_REPLY_STREAM:
		t->phase = P_STREAM;
		return 0;
	default:
		return broken(t) | done(t);
	}
}

/* The EOF that ends a block of definitions (not sent with
 * DEPRECATE_EOF). */
static unsigned defs_eof(my_track_t *t, const uint8_t *pl, size_t avail,
			 size_t plen, bool *ok)
{
	bool more;

	*ok = my_is_eof(pl, plen);
	if (!*ok)
		return broken(t) | done(t);
	return take_end(t, pl, avail, plen, &more);
}

/* One definition of a counted block; what comes after the last. */
static unsigned definition(my_track_t *t, enum phase eof_phase,
			   enum phase after)
{
	if (--t->left > 0)
		return 0;
	if (!deprecate_eof(t)) {
		t->phase = eof_phase;
		return 0;
	}
	t->phase = after;
	return 0;
}

/* After a prepare's parameters: its columns, or the end. */
static unsigned prepare_columns(my_track_t *t)
{
	if (!t->columns)
		return done(t);
	t->phase = P_PCOLS;
	t->left = t->columns;
	return 0;
}

static unsigned middle(my_track_t *t, my_reply_t kind, const uint8_t *pl,
		       size_t avail, size_t plen)
{
	unsigned ev;
	bool ok, more;

	switch (t->phase) {
	case P_COLDEFS:
		return definition(t, P_COLEOF, P_ROWS);
	case P_COLEOF:
		ev = defs_eof(t, pl, avail, plen, &ok);
		if (!ok)
			return ev;
		/* A cursor was opened: rows come with COM_STMT_FETCH. */
		if (t->status & MY_ST_CURSOR_EXISTS)
			return ev | done(t);
		t->phase = P_ROWS;
		return ev;
	case P_ROWS:
		return rows(t, pl, avail, plen);
	case P_INFILE: /* the answer to the file the client sent */
		t->infile = false;
		t->phase = P_FIRST;
		return first_result(t, pl, avail, plen);
	case P_PARAMS:
		ev = definition(t, P_PARAM_EOF, P_PCOLS);
		if (t->phase == P_PCOLS)
			return ev | prepare_columns(t);
		return ev;
	case P_PARAM_EOF:
		ev = defs_eof(t, pl, avail, plen, &ok);
		return ok ? ev | prepare_columns(t) : ev;
	case P_PCOLS:
		if (--t->left > 0)
			return 0;
		if (deprecate_eof(t))
			return done(t);
		t->phase = P_PCOL_EOF;
		return 0;
	case P_PCOL_EOF:
		ev = defs_eof(t, pl, avail, plen, &ok);
		return ok ? ev | done(t) : ev;
	case P_FIELDS:
		if (!is_end(t, pl, plen))
			return 0;
		return take_end(t, pl, avail, plen, &more) | done(t);
	case P_STREAM:
		if (!my_is_eof(pl, plen))
			return 0;
		return take_end(t, pl, avail, plen, &more) | done(t);
	default:
		(void)kind;
		return broken(t) | done(t);
	}
}

unsigned my_track_server(my_track_t *t, const uint8_t *pkt, size_t have,
			 size_t pkt_len, uint8_t *tag)
{
	const uint8_t *pl = pkt + MY_HDR;
	size_t plen, avail;
	my_reply_t kind;

	*tag = 0;
	if (have < MY_HDR || pkt_len < MY_HDR || have > pkt_len)
		return broken(t);
	plen = pkt_len - MY_HDR;
	/* Most packets are rows: neither an end (0xFE) nor an error. */
	if (t->phase == P_ROWS && !t->cont && have > MY_HDR && t->count &&
	    pkt[MY_HDR] != 0xfe && pkt[MY_HDR] != 0xff) {
		t->cont = plen == MY_MAX_PAYLOAD;
		*tag = t->tags[t->head];
		return 0;
	}
	avail = have - MY_HDR;
	if (t->cont) {
		t->cont = plen == MY_MAX_PAYLOAD;
		return MY_EV_CONT;
	}
	t->cont = plen == MY_MAX_PAYLOAD;
	if (t->count == 0)
		return broken(t); /* unsolicited: an error before a close */
	*tag = t->tags[t->head];
	kind = (my_reply_t)t->queue[t->head];
	if (plen == 0 || avail == 0)
		return kind == MY_REPLY_TEXT ? done(t) : broken(t) | done(t);
	/* An ERR ends any answer, wherever it comes. A row never starts
	 * with 0xFF (no length-encoded value does), nor does a binlog
	 * event (0x00) or COM_STATISTICS' text. */
	if (pl[0] == 0xff)
		return MY_EV_ERR | done(t);
	if (t->phase == P_FIRST)
		return first(t, kind, pl, avail, plen);
	return middle(t, kind, pl, avail, plen);
}

unsigned my_track_client(my_track_t *t, const uint8_t *pkt, size_t have,
			 size_t pkt_len)
{
	size_t plen;

	if (have < MY_HDR || pkt_len < MY_HDR)
		return 0;
	plen = pkt_len - MY_HDR;
	if (t->client_cont) {
		t->client_cont = plen == MY_MAX_PAYLOAD;
		return MY_EV_CONT;
	}
	t->client_cont = plen == MY_MAX_PAYLOAD;
	if (!t->infile)
		return 0;
	if (plen == 0) {
		t->infile = false; /* the server answers next */
		return MY_EV_DATA_END;
	}
	return MY_EV_DATA;
}
