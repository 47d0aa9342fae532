/*
 * codec_tokens.c - TDS token stream: writers for the tokens tokenpool
 * originates (its own login reply, errors) and the incremental scanner for
 * server replies.
 *
 * The scanner is a byte-driven state machine. Each state names what it
 * needs next - a few bytes gathered (lengths, counts, small fixed fields),
 * a token body captured (at most TDS_SCAN_CAP bytes, the rest skipped), or
 * bytes skipped (row values, names) - and one step runs when that need is
 * met. So a reply is scanned in chunks of any size, across packet
 * boundaries, and a 1 GB row costs what a 1 byte row does. Every count
 * and length from the wire bounds what is gathered or skipped; none is
 * trusted to index memory.
 *
 * Not here: packets (codec.c), what the events mean (ops.c).
 */
#include <string.h>

#include "protocols/tds/tds.h"
#include "protocols/tds/internal.h"

/* ---- writers ---- */

/* B_VARCHAR (count in UTF-16 units, u8) or US_VARCHAR (u16) from UTF-8;
 * bytes written, or 0. */
static size_t put_varchar(uint8_t *out, size_t cap, const char *s, int lenlen)
{
	size_t units = 0, max = lenlen == 1 ? 0xFF : 0xFFFF;
	long n = 0;

	if (cap < (size_t)lenlen)
		return 0;
	if (s && *s) {
		n = tds_utf8_to_utf16(s, strlen(s), out + lenlen, cap - lenlen,
				      &units);
		if (n < 0 || units > max)
			return 0;
	}
	if (lenlen == 1)
		out[0] = (uint8_t)units;
	else
		tds_put_le16(out, (uint16_t)units);
	return (size_t)lenlen + (size_t)n;
}

static size_t put_varbyte(uint8_t *out, size_t cap, const uint8_t *v, size_t n)
{
	if (n > 0xFF || cap < 1 + n)
		return 0;
	out[0] = (uint8_t)n;
	if (n)
		memcpy(out + 1, v, n);
	return 1 + n;
}

/* Fills in the u16 length of a token whose body runs from 3 to end. */
static size_t finish_len16(uint8_t *out, size_t end)
{
	if (end - 3 > 0xFFFF)
		return 0;
	tds_put_le16(out + 1, (uint16_t)(end - 3));
	return end;
}

size_t tds_put_envchange(uint8_t *out, size_t cap, uint8_t type,
			 const char *newv, const char *oldv)
{
	size_t pos = 4, n;

	if (cap < pos)
		return 0;
	out[0] = TDS_TOK_ENVCHANGE;
	out[3] = type;
	if (!(n = put_varchar(out + pos, cap - pos, newv, 1)))
		return 0;
	pos += n;
	if (!(n = put_varchar(out + pos, cap - pos, oldv, 1)))
		return 0;
	return finish_len16(out, pos + n);
}

size_t tds_put_envchange_bytes(uint8_t *out, size_t cap, uint8_t type,
			       const uint8_t *newv, size_t nlen,
			       const uint8_t *oldv, size_t olen)
{
	size_t pos = 4, n;

	if (cap < pos)
		return 0;
	out[0] = TDS_TOK_ENVCHANGE;
	out[3] = type;
	if (!(n = put_varbyte(out + pos, cap - pos, newv, nlen)))
		return 0;
	pos += n;
	if (!(n = put_varbyte(out + pos, cap - pos, oldv, olen)))
		return 0;
	return finish_len16(out, pos + n);
}

size_t tds_put_envchange_routing(uint8_t *out, size_t cap, uint16_t port,
				 const char *host)
{
	size_t n;

	/* token, length, type, routing length, protocol, port */
	if (cap < 9 || port == 0)
		return 0;
	out[0] = TDS_TOK_ENVCHANGE;
	out[3] = TDS_ENV_ROUTING;
	out[6] = 0; /* TCP */
	tds_put_le16(out + 7, port);
	if (!(n = put_varchar(out + 9, cap - 9, host, 2)) || cap - 9 - n < 2)
		return 0;
	tds_put_le16(out + 4, (uint16_t)(3 + n));
	tds_put_le16(out + 9 + n, 0); /* old value: empty */
	return finish_len16(out, 9 + n + 2);
}

size_t tds_put_message(uint8_t *out, size_t cap, uint8_t token, int32_t number,
		       uint8_t state, uint8_t cls, const char *msg,
		       const char *server, const char *proc, int32_t line)
{
	size_t pos = 9, n;

	if (cap < pos || (token != TDS_TOK_ERROR && token != TDS_TOK_INFO))
		return 0;
	out[0] = token;
	tds_put_le32(out + 3, (uint32_t)number);
	out[7] = state;
	out[8] = cls;
	if (!(n = put_varchar(out + pos, cap - pos, msg, 2)))
		return 0;
	pos += n;
	if (!(n = put_varchar(out + pos, cap - pos, server, 1)))
		return 0;
	pos += n;
	if (!(n = put_varchar(out + pos, cap - pos, proc, 1)))
		return 0;
	pos += n;
	if (cap - pos < 4)
		return 0;
	tds_put_le32(out + pos, (uint32_t)line);
	return finish_len16(out, pos + 4);
}

size_t tds_put_loginack(uint8_t *out, size_t cap, uint8_t interface,
			uint32_t tds_version, const char *prog_name,
			const uint8_t prog_version[4])
{
	size_t pos = 8, n;

	if (cap < pos)
		return 0;
	out[0] = TDS_TOK_LOGINACK;
	out[3] = interface;
	tds_put_be32(out + 4, tds_version);
	if (!(n = put_varchar(out + pos, cap - pos, prog_name, 1)))
		return 0;
	pos += n;
	if (cap - pos < 4)
		return 0;
	memcpy(out + pos, prog_version, 4);
	return finish_len16(out, pos + 4);
}

size_t tds_put_featureextack(uint8_t *out, size_t cap, const tds_feature_t *f,
			     size_t n)
{
	size_t pos = 1;

	if (cap < 2)
		return 0;
	out[0] = TDS_TOK_FEATUREEXTACK;
	for (size_t i = 0; i < n; i++) {
		if (f[i].id == TDS_FEAT_TERMINATOR || f[i].len > 0xFFFFFFFFu ||
		    cap - pos < 5 || f[i].len > cap - pos - 5)
			return 0;
		out[pos] = f[i].id;
		tds_put_le32(out + pos + 1, (uint32_t)f[i].len);
		if (f[i].len)
			memcpy(out + pos + 5, f[i].data, f[i].len);
		pos += 5 + f[i].len;
	}
	if (cap - pos < 1)
		return 0;
	out[pos++] = TDS_FEAT_TERMINATOR;
	return pos;
}

size_t tds_put_done(uint8_t *out, size_t cap, uint8_t token, uint16_t status,
		    uint16_t curcmd, uint64_t rows)
{
	if (cap < TDS_DONE_LEN ||
	    (token != TDS_TOK_DONE && token != TDS_TOK_DONEPROC &&
	     token != TDS_TOK_DONEINPROC))
		return 0;
	out[0] = token;
	tds_put_le16(out + 1, status);
	tds_put_le16(out + 3, curcmd);
	tds_put_le64(out + 5, rows);
	return TDS_DONE_LEN;
}

/* ---- the scanner ---- */

enum scan_state {
	S_TOKEN,	/* 1: token type */
	S_LEN16,	/* 2: length of a token we capture */
	S_LEN16_SKIP,	/* 2: length of a token we skip */
	S_LEN32_SKIP,	/* 4: length of a token we skip */
	S_CAPTURED,	/* the body (or its first TDS_SCAN_CAP bytes) */
	S_DONE,		/* 12: DONE* body */
	S_SS_LEN,	/* 4: SESSIONSTATE length */
	S_SS_BODY,	/* 5: sequence number, status */
	S_FA_ID,	/* 1: FEATUREEXTACK feature id */
	S_FA_LEN,	/* 4: its data length */
	S_FA_DATA,	/* its data (captured) */
	S_CMD_COUNT,	/* 2: COLMETADATA column count */
	S_COL_HEAD,	/* 6: user type, flags */
	S_TI_TYPE,	/* 1: TYPE_INFO type */
	S_TI_ARGS,	/* the type's length, collation, precision... */
	S_STRQ,		/* next name string to skip, if any */
	S_BV_LEN,	/* 1: B_VARCHAR length */
	S_US_LEN,	/* 2: US_VARCHAR length */
	S_TAB_PARTS,	/* 1: table name part count */
	S_TAB_PART,	/* next table name part, if any */
	S_TAB_PART_LEN, /* 2: its length */
	S_TI_END,	/* TYPE_INFO known */
	S_ROW_COL,	/* next column of a row */
	S_V_LEN1,	/* 1: BYTELEN value length */
	S_V_LEN2,	/* 2: USHORTLEN value length */
	S_V_LEN4,	/* 4: LONGLEN value length */
	S_V_TEXTPTR,	/* 1: text pointer length */
	S_V_TEXTLEN,	/* 4: TEXT/IMAGE data length */
	S_V_PLPLEN,	/* 8: PLP total length */
	S_V_PLPCHUNK,	/* 4: PLP chunk length */
	S_V_END,	/* value skipped */
	S_RV_ORD,	/* 2: RETURNVALUE ordinal */
	S_RV_NAME,	/* 1: its name length */
	S_RV_HEAD,	/* 7: status, user type, flags */
};

/* Where gathered bytes go. */
enum { G_NUM, G_CAP, G_BITMAP };

/* TYPE_INFO inside COLMETADATA or RETURNVALUE (no table name there). */
enum { CTX_COL, CTX_RV };

/* How a value is laid out. 0..8: fixed size. */
enum {
	K_BYTELEN = 0x10, /* u8 length, 0 = NULL */
	K_USHORT,	  /* u16 length, 0xFFFF = NULL */
	K_LONG,		  /* u32 length (sql_variant), 0 = NULL */
	K_TEXT,		  /* text pointer, timestamp, u32 length */
	K_PLP,		  /* u64 length, u32-length chunks, 0 ends */
};

/* fEncrypted in column flags: crypto metadata follows (never negotiated
 * by tokenpool, so never skippable). */
#define COL_ENCRYPTED 0x0800

static void go(tds_scan_t *s, uint8_t st, uint8_t target, size_t n)
{
	s->st = st;
	s->target = target;
	s->gwant = n;
	s->ghave = 0;
}

static void go_next(tds_scan_t *s, uint8_t st)
{
	go(s, st, G_NUM, 0);
}

void tds_scan_init(tds_scan_t *s)
{
	memset(s, 0, sizeof(*s));
	go(s, S_TOKEN, G_NUM, 1);
}

bool tds_scan_idle(const tds_scan_t *s)
{
	return !s->failed && s->st == S_TOKEN && s->ghave == 0 && !s->skip;
}

bool tds_done_final(const tds_event_t *ev)
{
	return ev->kind == TDS_EV_DONE && ev->token != TDS_TOK_DONEINPROC &&
	       !(ev->status & TDS_DONE_MORE);
}

static void new_event(tds_scan_t *s, int kind)
{
	memset(&s->ev, 0, sizeof(s->ev));
	s->ev.kind = kind;
	s->ev.token = s->token;
}

/* Captures a body of n bytes: the first TDS_SCAN_CAP go to s->cap, the
 * rest is skipped after the event. */
static void capture(tds_scan_t *s, uint8_t st, uint64_t n)
{
	size_t c = n < TDS_SCAN_CAP ? (size_t)n : TDS_SCAN_CAP;

	s->cap_len = c;
	s->body_left = n - c;
	go(s, st, G_CAP, c);
}

/* The skip of a captured body's tail, after its event is out. */
static void skip_tail(tds_scan_t *s)
{
	s->skip += s->body_left;
	s->body_left = 0;
}

/* ---- ENVCHANGE ---- */

/* A B_VARCHAR (chars) or B_VARBYTE (bytes) at *pos in the capture. */
static int take_b(tds_scan_t *s, size_t *pos, size_t unit, const uint8_t **v,
		  size_t *n)
{
	size_t len;

	if (*pos >= s->cap_len)
		return TP_EPROTO;
	len = s->cap[*pos] * unit;
	if (len > s->cap_len - *pos - 1)
		return TP_EPROTO;
	*v = s->cap + *pos + 1;
	*n = len;
	*pos += 1 + len;
	return 0;
}

/* A US_VARCHAR at *pos, inside [*pos, end). */
static int take_us(tds_scan_t *s, size_t *pos, size_t end, const uint8_t **v,
		   size_t *n)
{
	size_t len;

	if (end - *pos < 2)
		return TP_EPROTO;
	len = 2 * (size_t)tds_le16(s->cap + *pos);
	if (len > end - *pos - 2)
		return TP_EPROTO;
	*v = s->cap + *pos + 2;
	*n = len;
	*pos += 2 + len;
	return 0;
}

/* ENVCHANGE 20/21: u16 length, protocol 0 (TCP), port, host (, db). */
static int env_routing(tds_scan_t *s, tds_event_t *ev)
{
	size_t pos = 1, end;

	if (s->cap_len - pos < 2)
		return TP_EPROTO;
	end = pos + 2 + tds_le16(s->cap + pos);
	pos += 2;
	if (end > s->cap_len || end - pos < 3 || s->cap[pos] != 0)
		return TP_EPROTO;
	ev->route_port = tds_le16(s->cap + pos + 1);
	pos += 3;
	if (ev->route_port == 0 ||
	    take_us(s, &pos, end, &ev->route_host, &ev->route_host_len))
		return TP_EPROTO;
	if (ev->env_type == TDS_ENV_ENHANCEDROUTING &&
	    take_us(s, &pos, end, &ev->route_db, &ev->route_db_len))
		return TP_EPROTO;
	return 0;
}

static void track_txn(tds_scan_t *s, const tds_event_t *ev)
{
	switch (ev->env_type) {
	case TDS_ENV_BEGINTRAN:
	case TDS_ENV_ENLISTDTC:
		s->in_txn = true;
		if (ev->env_new_len == TDS_TXN_LEN)
			memcpy(s->txn, ev->env_new, TDS_TXN_LEN);
		else if (ev->env_old_len == TDS_TXN_LEN)
			memcpy(s->txn, ev->env_old, TDS_TXN_LEN);
		break;
	case TDS_ENV_COMMITTRAN:
	case TDS_ENV_ROLLBACKTRAN:
	case TDS_ENV_TRANENDED:
	case TDS_ENV_DEFECTTRAN:
		s->in_txn = false;
		memset(s->txn, 0, TDS_TXN_LEN);
		break;
	}
}

/* ENVCHANGE types whose values are B_VARCHARs (2 bytes a unit) or
 * B_VARBYTEs (1); 0 for the others. */
static size_t env_unit(uint8_t type)
{
	switch (type) {
	case TDS_ENV_DATABASE:
	case TDS_ENV_LANGUAGE:
	case TDS_ENV_CHARSET:
	case TDS_ENV_PACKETSIZE:
	case TDS_ENV_SORTLOCALE:
	case TDS_ENV_SORTFLAGS:
	case TDS_ENV_MIRRORPARTNER:
	case TDS_ENV_USERINSTANCE:
		return 2;
	case TDS_ENV_COLLATION:
	case TDS_ENV_BEGINTRAN:
	case TDS_ENV_COMMITTRAN:
	case TDS_ENV_ROLLBACKTRAN:
	case TDS_ENV_ENLISTDTC:
	case TDS_ENV_DEFECTTRAN:
	case TDS_ENV_TRANMGRADDR:
	case TDS_ENV_TRANENDED:
	case TDS_ENV_RESETACK:
		return 1;
	default:
		return 0;
	}
}

static int on_envchange(tds_scan_t *s)
{
	tds_event_t *ev = &s->ev;
	size_t pos = 1, unit;
	int err = 0;

	new_event(s, TDS_EV_ENVCHANGE);
	if (s->cap_len < 1)
		return TP_EPROTO;
	ev->env_type = s->cap[0];
	ev->truncated = s->body_left > 0;
	unit = env_unit(ev->env_type);
	if (unit) {
		err = take_b(s, &pos, unit, &ev->env_new, &ev->env_new_len);
		if (!err)
			err = take_b(s, &pos, unit, &ev->env_old,
				     &ev->env_old_len);
	} else if (ev->env_type == TDS_ENV_ROUTING ||
		   ev->env_type == TDS_ENV_ENHANCEDROUTING) {
		err = env_routing(s, ev);
	} else if (ev->env_type == TDS_ENV_PROMOTETRAN) {
		/* Its length covers the type byte only; the DTC token
		 * follows outside it. Never asked for by tokenpool. */
		err = TP_EPROTO;
	} else { /* unknown: the raw body */
		ev->env_new = s->cap + 1;
		ev->env_new_len = s->cap_len - 1;
	}
	if (err)
		return err;
	track_txn(s, ev);
	skip_tail(s);
	return TDS_EV_ENVCHANGE;
}

/* ERROR / INFO: number, state, class, message, server, procedure, line.
 * A message longer than the capture is reported cut short. */
static int on_message(tds_scan_t *s)
{
	tds_event_t *ev = &s->ev;
	size_t pos, n;
	const uint8_t *v;

	new_event(s, s->token == TDS_TOK_ERROR ? TDS_EV_ERROR : TDS_EV_INFO);
	if (s->cap_len < 8)
		return TP_EPROTO;
	ev->number = (int32_t)tds_le32(s->cap);
	ev->state = s->cap[4];
	ev->cls = s->cap[5];
	n = 2 * (size_t)tds_le16(s->cap + 6);
	ev->msg = s->cap + 8;
	if (n > s->cap_len - 8) {
		if (!s->body_left)
			return TP_EPROTO;
		ev->msg_len = (s->cap_len - 8) & ~(size_t)1;
		ev->truncated = true;
		skip_tail(s);
		return ev->kind;
	}
	ev->msg_len = n;
	pos = 8 + n;
	if (take_b(s, &pos, 2, &v, &n) || take_b(s, &pos, 2, &v, &n) ||
	    s->cap_len - pos < 4) {
		if (!s->body_left)
			return TP_EPROTO;
		ev->truncated = true;
	} else {
		ev->line = (int32_t)tds_le32(s->cap + pos);
	}
	skip_tail(s);
	return ev->kind;
}

static int on_loginack(tds_scan_t *s)
{
	tds_event_t *ev = &s->ev;
	size_t pos = 5;

	new_event(s, TDS_EV_LOGINACK);
	if (s->body_left || s->cap_len < 10)
		return TP_EPROTO;
	ev->interface = s->cap[0];
	ev->tds_version = tds_be32(s->cap + 1);
	if (take_b(s, &pos, 2, &ev->prog_name, &ev->prog_name_len) ||
	    s->cap_len - pos < 4)
		return TP_EPROTO;
	memcpy(ev->prog_version, s->cap + pos, 4);
	return TDS_EV_LOGINACK;
}

static int on_captured(tds_scan_t *s)
{
	go(s, S_TOKEN, G_NUM, 1);
	switch (s->token) {
	case TDS_TOK_ENVCHANGE:
		return on_envchange(s);
	case TDS_TOK_ERROR:
	case TDS_TOK_INFO:
		return on_message(s);
	default:
		return on_loginack(s);
	}
}

/* ---- token dispatch ---- */

static int on_token(tds_scan_t *s)
{
	s->token = s->num[0];
	switch (s->token) {
	case TDS_TOK_ENVCHANGE:
	case TDS_TOK_ERROR:
	case TDS_TOK_INFO:
	case TDS_TOK_LOGINACK:
		go(s, S_LEN16, G_NUM, 2);
		return 0;
	case TDS_TOK_TABNAME:
	case TDS_TOK_COLINFO:
	case TDS_TOK_ORDER:
	case TDS_TOK_SSPI:
		go(s, S_LEN16_SKIP, G_NUM, 2);
		return 0;
	case TDS_TOK_FEDAUTHINFO:
		go(s, S_LEN32_SKIP, G_NUM, 4);
		return 0;
	case TDS_TOK_SESSIONSTATE:
		go(s, S_SS_LEN, G_NUM, 4);
		return 0;
	case TDS_TOK_RETURNSTATUS:
	case TDS_TOK_OFFSET:
		s->skip = 4;
		go(s, S_TOKEN, G_NUM, 1);
		return 0;
	case TDS_TOK_DONE:
	case TDS_TOK_DONEPROC:
	case TDS_TOK_DONEINPROC:
		go(s, S_DONE, G_NUM, 12);
		return 0;
	case TDS_TOK_FEATUREEXTACK:
		go(s, S_FA_ID, G_NUM, 1);
		return 0;
	case TDS_TOK_COLMETADATA:
		go(s, S_CMD_COUNT, G_NUM, 2);
		return 0;
	case TDS_TOK_ROW:
	case TDS_TOK_NBCROW:
		if (!s->md_valid)
			return TP_EPROTO;
		s->nbc = s->token == TDS_TOK_NBCROW;
		s->col = 0;
		if (s->nbc && s->ncols)
			go(s, S_ROW_COL, G_BITMAP, (s->ncols + 7u) / 8u);
		else
			go_next(s, S_ROW_COL);
		return 0;
	case TDS_TOK_RETURNVALUE:
		go(s, S_RV_ORD, G_NUM, 2);
		return 0;
	default: /* ALTMETADATA, ALTROW, DATACLASSIFICATION, garbage */
		return TP_EPROTO;
	}
}

static int on_done(tds_scan_t *s)
{
	new_event(s, TDS_EV_DONE);
	s->ev.status = tds_le16(s->num);
	s->ev.curcmd = tds_le16(s->num + 2);
	s->ev.rows = tds_le64(s->num + 4);
	go(s, S_TOKEN, G_NUM, 1);
	return TDS_EV_DONE;
}

static int on_sessionstate(tds_scan_t *s)
{
	new_event(s, TDS_EV_SESSIONSTATE);
	s->ev.seqno = tds_le32(s->cap);
	s->ev.recoverable = s->cap[4] & 1;
	skip_tail(s);
	go(s, S_TOKEN, G_NUM, 1);
	return TDS_EV_SESSIONSTATE;
}

static int on_feature_ack(tds_scan_t *s)
{
	new_event(s, TDS_EV_FEATUREEXTACK);
	s->ev.feature_id = s->feat_id;
	s->ev.feature_data = s->cap;
	s->ev.feature_len = s->cap_len;
	s->ev.truncated = s->body_left > 0;
	skip_tail(s);
	go(s, S_FA_ID, G_NUM, 1);
	return TDS_EV_FEATUREEXTACK;
}

/* ---- COLMETADATA and TYPE_INFO ---- */

static int on_colmd_count(tds_scan_t *s)
{
	uint16_t n = tds_le16(s->num);

	if (n == 0xFFFF) { /* NoMetaData: the previous columns stand */
		go(s, S_TOKEN, G_NUM, 1);
		return 0;
	}
	if (n > TDS_MAX_COLS)
		return TP_ETOOBIG;
	s->ncols = n;
	s->col = 0;
	s->md_valid = n == 0;
	if (n == 0)
		go(s, S_TOKEN, G_NUM, 1);
	else
		go(s, S_COL_HEAD, G_NUM, 6);
	return 0;
}

/* Fixed-size types: their size, or -1. */
static int fixed_size(uint8_t type)
{
	switch (type) {
	case 0x1F: /* NULLTYPE */
		return 0;
	case 0x30: /* INT1 */
	case 0x32: /* BIT */
		return 1;
	case 0x34: /* INT2 */
		return 2;
	case 0x38: /* INT4 */
	case 0x3A: /* DATETIM4 */
	case 0x3B: /* FLT4 */
	case 0x7A: /* MONEY4 */
		return 4;
	case 0x3C: /* MONEY */
	case 0x3D: /* DATETIME */
	case 0x3E: /* FLT8 */
	case 0x7F: /* INT8 */
		return 8;
	default:
		return -1;
	}
}

/* Bytes of TYPE_INFO after the type byte (length, collation, precision,
 * scale, schema flag), or -1 for a type we cannot skip. */
static int type_args(uint8_t type)
{
	if (fixed_size(type) >= 0)
		return 0;
	switch (type) {
	case 0x24: /* GUID */
	case 0x26: /* INTN */
	case 0x68: /* BITN */
	case 0x6D: /* FLTN */
	case 0x6E: /* MONEYN */
	case 0x6F: /* DATETIMN */
	case 0x2F: /* CHAR (legacy) */
	case 0x27: /* VARCHAR (legacy) */
	case 0x2D: /* BINARY (legacy) */
	case 0x25: /* VARBINARY (legacy) */
	case 0x29: /* TIMEN: scale */
	case 0x2A: /* DATETIME2N: scale */
	case 0x2B: /* DATETIMEOFFSETN: scale */
	case 0xF1: /* XML: schema present */
		return 1;
	case 0x28: /* DATEN */
		return 0;
	case 0x37: /* DECIMAL, NUMERIC (legacy) and the N forms */
	case 0x3F:
	case 0x6A:
	case 0x6C:
		return 3; /* length, precision, scale */
	case 0xA5:	  /* BIGVARBINARY */
	case 0xAD:	  /* BIGBINARY */
	case 0xF0:	  /* UDT: max byte size */
		return 2;
	case 0xA7:	      /* BIGVARCHAR */
	case 0xAF:	      /* BIGCHAR */
	case 0xE7:	      /* NVARCHAR */
	case 0xEF:	      /* NCHAR */
		return 2 + 5; /* max length, collation */
	case 0x22:	      /* IMAGE */
	case 0x62:	      /* SSVARIANT */
		return 4;
	case 0x23: /* TEXT */
	case 0x63: /* NTEXT */
		return 4 + 5;
	default: /* TVP, JSON, VECTOR (never negotiated), garbage */
		return -1;
	}
}

static void push_str(tds_scan_t *s, uint8_t kind)
{
	s->strq[s->strq_n++] = kind;
}

/* TYPE_INFO complete: how its values are laid out, and which name
 * strings follow (XML schema, UDT names, table name, column name). */
static int on_type_args(tds_scan_t *s)
{
	uint8_t t = s->ti_type;
	int fixed = fixed_size(t);
	uint16_t max;

	s->strq_n = s->strq_i = 0;
	if (fixed >= 0) {
		s->vkind = (uint8_t)fixed;
	} else if (t == 0xA5 || t == 0xAD || t == 0xA7 || t == 0xAF ||
		   t == 0xE7 || t == 0xEF) {
		max = tds_le16(s->num);
		s->vkind =
		    max == 0xFFFF && (t == 0xA5 || t == 0xA7 || t == 0xE7)
			? K_PLP
			: K_USHORT;
	} else if (t == 0x22 || t == 0x23 || t == 0x63) {
		s->vkind = K_TEXT;
		if (s->ctx == CTX_COL)
			push_str(s, 'T');
	} else if (t == 0x62) {
		s->vkind = K_LONG;
	} else if (t == 0xF1) {
		if (s->num[0] > 1)
			return TP_EPROTO;
		s->vkind = K_PLP;
		if (s->num[0]) {
			push_str(s, 'B');
			push_str(s, 'B');
			push_str(s, 'U');
		}
	} else if (t == 0xF0) {
		s->vkind = K_PLP;
		push_str(s, 'B');
		push_str(s, 'B');
		push_str(s, 'B');
		push_str(s, 'U');
	} else {
		if ((t == 0x29 || t == 0x2A || t == 0x2B) && s->num[0] > 7)
			return TP_EPROTO; /* scale */
		s->vkind = K_BYTELEN;
	}
	if (s->ctx == CTX_COL)
		push_str(s, 'B'); /* column name */
	go_next(s, S_STRQ);
	return 0;
}

static int on_type(tds_scan_t *s)
{
	int n;

	s->ti_type = s->num[0];
	n = type_args(s->ti_type);
	if (n < 0)
		return TP_EPROTO;
	if (n == 0)
		return on_type_args(s);
	go(s, S_TI_ARGS, G_NUM, (size_t)n);
	return 0;
}

static int next_str(tds_scan_t *s)
{
	if (s->strq_i == s->strq_n) {
		go_next(s, S_TI_END);
		return 0;
	}
	switch (s->strq[s->strq_i++]) {
	case 'B':
		go(s, S_BV_LEN, G_NUM, 1);
		break;
	case 'U':
		go(s, S_US_LEN, G_NUM, 2);
		break;
	default: /* 'T': table name, NumParts then that many parts */
		go(s, S_TAB_PARTS, G_NUM, 1);
		break;
	}
	return 0;
}

static int next_part(tds_scan_t *s)
{
	if (s->parts == 0)
		go_next(s, S_STRQ);
	else
		go(s, S_TAB_PART_LEN, G_NUM, 2);
	return 0;
}

/* ---- values ---- */

static void start_value(tds_scan_t *s, uint8_t kind)
{
	s->vkind = kind;
	switch (kind) {
	case K_BYTELEN:
		go(s, S_V_LEN1, G_NUM, 1);
		break;
	case K_USHORT:
		go(s, S_V_LEN2, G_NUM, 2);
		break;
	case K_LONG:
		go(s, S_V_LEN4, G_NUM, 4);
		break;
	case K_TEXT:
		go(s, S_V_TEXTPTR, G_NUM, 1);
		break;
	case K_PLP:
		go(s, S_V_PLPLEN, G_NUM, 8);
		break;
	default: /* fixed size */
		s->skip += kind;
		go_next(s, S_V_END);
		break;
	}
}

static int on_type_end(tds_scan_t *s)
{
	if (s->ctx == CTX_RV) {
		start_value(s, s->vkind);
		return 0;
	}
	s->kind[s->col++] = s->vkind;
	if (s->col < s->ncols) {
		go(s, S_COL_HEAD, G_NUM, 6);
		return 0;
	}
	s->md_valid = true;
	go(s, S_TOKEN, G_NUM, 1);
	return 0;
}

static int next_column(tds_scan_t *s)
{
	while (s->col < s->ncols) {
		uint16_t c = s->col++;

		if (s->nbc && (s->bitmap[c >> 3] & (1u << (c & 7))))
			continue; /* NULL: not in the row */
		start_value(s, s->kind[c]);
		return 0;
	}
	go(s, S_TOKEN, G_NUM, 1);
	return 0;
}

static int on_value_len(tds_scan_t *s)
{
	uint32_t n;

	switch (s->st) {
	case S_V_LEN1:
		s->skip += s->num[0];
		break;
	case S_V_LEN2:
		n = tds_le16(s->num);
		s->skip += n == 0xFFFF ? 0 : n;
		break;
	case S_V_LEN4: /* sql_variant: 0 is NULL */
	case S_V_TEXTLEN:
		n = tds_le32(s->num);
		s->skip += n == 0xFFFFFFFFu ? 0 : n;
		break;
	case S_V_TEXTPTR:
		if (s->num[0] == 0)
			break; /* NULL: no pointer, timestamp or data */
		s->skip += s->num[0] + 8u;
		go(s, S_V_TEXTLEN, G_NUM, 4);
		return 0;
	case S_V_PLPLEN:
		if (tds_le64(s->num) == UINT64_MAX)
			break; /* PLP NULL */
		go(s, S_V_PLPCHUNK, G_NUM, 4);
		return 0;
	case S_V_PLPCHUNK:
		n = tds_le32(s->num);
		if (n == 0)
			break; /* terminator */
		s->skip += n;
		go(s, S_V_PLPCHUNK, G_NUM, 4);
		return 0;
	}
	go_next(s, S_V_END);
	return 0;
}

static int on_value_end(tds_scan_t *s)
{
	if (s->token == TDS_TOK_RETURNVALUE) {
		go(s, S_TOKEN, G_NUM, 1);
		return 0;
	}
	return next_column(s);
}

/* ---- the step ---- */

/* One step: what the current state needed is there. Returns an event
 * kind, 0, or an error. */
static int step(tds_scan_t *s)
{
	uint32_t n;

	switch (s->st) {
	case S_TOKEN:
		return on_token(s);
	case S_LEN16:
		capture(s, S_CAPTURED, tds_le16(s->num));
		return 0;
	case S_LEN16_SKIP:
		s->skip += tds_le16(s->num);
		go(s, S_TOKEN, G_NUM, 1);
		return 0;
	case S_LEN32_SKIP:
		s->skip += tds_le32(s->num);
		go(s, S_TOKEN, G_NUM, 1);
		return 0;
	case S_CAPTURED:
		return on_captured(s);
	case S_DONE:
		return on_done(s);
	case S_SS_LEN:
		n = tds_le32(s->num);
		if (n < 5)
			return TP_EPROTO;
		capture(s, S_SS_BODY, 5);
		s->body_left = n - 5;
		return 0;
	case S_SS_BODY:
		return on_sessionstate(s);
	case S_FA_ID:
		if (s->num[0] == TDS_FEAT_TERMINATOR) {
			go(s, S_TOKEN, G_NUM, 1);
			return 0;
		}
		s->feat_id = s->num[0];
		go(s, S_FA_LEN, G_NUM, 4);
		return 0;
	case S_FA_LEN:
		capture(s, S_FA_DATA, tds_le32(s->num));
		return 0;
	case S_FA_DATA:
		return on_feature_ack(s);
	case S_CMD_COUNT:
		return on_colmd_count(s);
	case S_COL_HEAD:
		if (tds_le16(s->num + 4) & COL_ENCRYPTED)
			return TP_EPROTO;
		s->ctx = CTX_COL;
		go(s, S_TI_TYPE, G_NUM, 1);
		return 0;
	case S_TI_TYPE:
		return on_type(s);
	case S_TI_ARGS:
		return on_type_args(s);
	case S_STRQ:
		return next_str(s);
	case S_BV_LEN:
		s->skip += 2u * s->num[0];
		go_next(s, S_STRQ);
		return 0;
	case S_US_LEN:
		s->skip += 2u * tds_le16(s->num);
		go_next(s, S_STRQ);
		return 0;
	case S_TAB_PARTS:
		s->parts = s->num[0];
		return next_part(s);
	case S_TAB_PART:
		return next_part(s);
	case S_TAB_PART_LEN:
		s->skip += 2u * tds_le16(s->num);
		s->parts--;
		go_next(s, S_TAB_PART);
		return 0;
	case S_TI_END:
		return on_type_end(s);
	case S_ROW_COL:
		return next_column(s);
	case S_V_LEN1:
	case S_V_LEN2:
	case S_V_LEN4:
	case S_V_TEXTPTR:
	case S_V_TEXTLEN:
	case S_V_PLPLEN:
	case S_V_PLPCHUNK:
		return on_value_len(s);
	case S_V_END:
		return on_value_end(s);
	case S_RV_ORD:
		go(s, S_RV_NAME, G_NUM, 1);
		return 0;
	case S_RV_NAME:
		s->skip += 2u * s->num[0];
		go(s, S_RV_HEAD, G_NUM, 7);
		return 0;
	case S_RV_HEAD:
		if (tds_le16(s->num + 5) & COL_ENCRYPTED)
			return TP_EPROTO;
		s->ctx = CTX_RV;
		go(s, S_TI_TYPE, G_NUM, 1);
		return 0;
	default:
		return TP_EPROTO;
	}
}

static uint8_t *gather_buf(tds_scan_t *s)
{
	switch (s->target) {
	case G_CAP:
		return s->cap;
	case G_BITMAP:
		return s->bitmap;
	default:
		return s->num;
	}
}

int tds_scan_feed(tds_scan_t *s, const uint8_t *buf, size_t len, size_t *used)
{
	size_t pos = 0, n;
	int rc;

	*used = 0;
	if (s->failed)
		return TP_EPROTO;
	for (;;) {
		if (s->skip) {
			n = s->skip < len - pos ? (size_t)s->skip : len - pos;
			pos += n;
			s->skip -= n;
			if (s->skip)
				break;
		}
		if (s->ghave < s->gwant) {
			n = s->gwant - s->ghave;
			n = n < len - pos ? n : len - pos;
			memcpy(gather_buf(s) + s->ghave, buf + pos, n);
			s->ghave += n;
			pos += n;
			if (s->ghave < s->gwant)
				break;
		}
		rc = step(s);
		if (rc < 0)
			s->failed = true;
		if (rc != 0) {
			*used = pos;
			return rc;
		}
	}
	*used = pos;
	return 0;
}
