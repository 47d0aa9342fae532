/*
 * codec.c - TDS packets, streaming re-framing, PRELOGIN, LOGIN7,
 * ALL_HEADERS and UTF-16 conversion.
 *
 * Pure: bytes in, fields or bytes out. Parsers never read past len and
 * never trust a length, offset or count from the wire; writers return 0
 * instead of writing past cap. The packer and unpacker keep their state in
 * caller-owned structs so a message of any size streams through them.
 *
 * Not here: the token stream (codec_tokens.c), what the messages mean to
 * the proxy (ops.c).
 */
#include <string.h>

#include <openssl/crypto.h>

#include "protocols/tds/tds.h"
#include "protocols/tds/internal.h"

/* ---- packets ---- */

int tds_header_parse(const uint8_t *buf, size_t len, tds_header_t *h)
{
	if (len < TDS_HDR)
		return TP_EAGAIN;
	h->type = buf[0];
	h->status = buf[1];
	h->length = tds_be16(buf + 2);
	h->spid = tds_be16(buf + 4);
	h->packet_id = buf[6];
	h->window = buf[7];
	return h->length < TDS_HDR ? TP_EPROTO : 0;
}

void tds_header_put(uint8_t out[8], const tds_header_t *h)
{
	out[0] = h->type;
	out[1] = h->status;
	tds_put_be16(out + 2, h->length);
	tds_put_be16(out + 4, h->spid);
	out[6] = h->packet_id;
	out[7] = h->window;
}

int tds_frame(const uint8_t *buf, size_t len, size_t *pkt_len)
{
	tds_header_t h;
	int err = tds_header_parse(buf, len, &h);

	if (err)
		return err;
	*pkt_len = h.length;
	return 0;
}

int tds_msg_frame(const uint8_t *buf, size_t len, size_t max_payload,
		  size_t *msg_len, size_t *payload_len)
{
	size_t pos = 0, payload = 0;
	uint8_t type = 0;
	tds_header_t h;
	int err;

	for (;;) {
		err = tds_header_parse(buf + pos, len - pos, &h);
		if (err)
			return err;
		if (pos == 0)
			type = h.type;
		else if (h.type != type)
			return TP_EPROTO;
		/* No packet is longer than the largest size a login can
		 * negotiate: a header claiming more is garbage, refused now
		 * rather than waited for (it would hold the connection until
		 * the login timeout). */
		if (h.length > TDS_MAX_PACKET)
			return TP_EPROTO;
		payload += h.length - TDS_HDR;
		if (payload > max_payload)
			return TP_ETOOBIG;
		if (h.length > len - pos)
			return TP_EAGAIN;
		pos += h.length;
		if (h.status & TDS_ST_EOM)
			break;
	}
	*msg_len = pos;
	*payload_len = payload;
	return 0;
}

size_t tds_msg_payload(const uint8_t *msg, size_t msg_len, uint8_t *out,
		       size_t cap)
{
	size_t pos = 0, n = 0;
	tds_header_t h;

	while (pos < msg_len) {
		if (tds_header_parse(msg + pos, msg_len - pos, &h) != 0 ||
		    h.length > msg_len - pos)
			return 0;
		if (h.length - TDS_HDR > cap - n)
			return 0;
		memcpy(out + n, msg + pos + TDS_HDR, h.length - TDS_HDR);
		n += h.length - TDS_HDR;
		pos += h.length;
	}
	return n;
}

bool tds_is_attention(const uint8_t *buf, size_t len)
{
	return len >= TDS_HDR && buf[0] == TDS_PKT_ATTENTION &&
	       (buf[1] & TDS_ST_EOM) && tds_be16(buf + 2) == TDS_HDR;
}

static void put_header(uint8_t *out, uint8_t type, uint8_t status,
		       size_t length, uint16_t spid, uint8_t id)
{
	tds_header_t h = {
	    .type = type,
	    .status = status,
	    .length = (uint16_t)length,
	    .spid = spid,
	    .packet_id = id,
	};

	tds_header_put(out, &h);
}

size_t tds_packetize(uint8_t *out, size_t cap, uint8_t type,
		     uint8_t first_status, uint16_t spid, size_t size,
		     const uint8_t *payload, size_t len)
{
	size_t room, npkts, pos = 0, done = 0;
	uint8_t id = 1;

	if (size <= TDS_HDR || size > 0xFFFF)
		return 0;
	room = size - TDS_HDR;
	npkts = len ? (len + room - 1) / room : 1;
	if (npkts > (SIZE_MAX - len) / TDS_HDR || len + npkts * TDS_HDR > cap)
		return 0;
	for (size_t i = 0; i < npkts; i++) {
		size_t n = len - done < room ? len - done : room;
		uint8_t st = (i == 0 ? first_status : 0) |
			     (i + 1 == npkts ? TDS_ST_EOM : 0);

		put_header(out + pos, type, st, n + TDS_HDR, spid, id++);
		if (n)
			memcpy(out + pos + TDS_HDR, payload + done, n);
		pos += n + TDS_HDR;
		done += n;
	}
	return pos;
}

/* ---- packer ---- */

int tds_packer_init(tds_packer_t *p, uint8_t *buf, size_t size, uint8_t type,
		    uint16_t spid)
{
	if (size <= TDS_HDR || size > 0xFFFF)
		return TP_EINVAL;
	memset(p, 0, sizeof(*p));
	p->buf = buf;
	p->size = size;
	p->type = type;
	p->spid = spid;
	p->next_id = 1;
	return 0;
}

void tds_packer_begin(tds_packer_t *p, uint8_t type, uint8_t first_status)
{
	p->type = type;
	p->first_status = first_status;
	p->fill = 0;
	p->next_id = 1;
	p->started = false;
	p->open = true;
}

static void emit_packet(tds_packer_t *p, const uint8_t *payload, size_t n,
			uint8_t status, tds_emit_fn emit, void *arg)
{
	uint8_t hdr[TDS_HDR];

	if (!p->started)
		status |= p->first_status;
	put_header(hdr, p->type, status, n + TDS_HDR, p->spid, p->next_id++);
	emit(arg, hdr, sizeof(hdr));
	if (n)
		emit(arg, payload, n);
	p->started = true;
}

void tds_packer_put(tds_packer_t *p, const void *data, size_t len,
		    tds_emit_fn emit, void *arg)
{
	const uint8_t *d = data;
	size_t room = p->size - TDS_HDR;

	if (!p->open)
		tds_packer_begin(p, p->type, 0);
	while (len) {
		size_t n;

		/* More payload follows a held full packet: it is not the
		 * last one, so it can go. */
		if (p->fill == room) {
			emit_packet(p, p->buf, room, 0, emit, arg);
			p->fill = 0;
		}
		/* Whole packets straight from the caller, keeping back the
		 * last full one (it might end the message). */
		if (p->fill == 0 && len > room) {
			emit_packet(p, d, room, 0, emit, arg);
			d += room;
			len -= room;
			continue;
		}
		n = room - p->fill < len ? room - p->fill : len;
		memcpy(p->buf + p->fill, d, n);
		p->fill += n;
		d += n;
		len -= n;
	}
}

void tds_packer_end(tds_packer_t *p, uint8_t last_status, tds_emit_fn emit,
		    void *arg)
{
	if (!p->open)
		tds_packer_begin(p, p->type, 0);
	emit_packet(p, p->buf, p->fill, TDS_ST_EOM | last_status, emit, arg);
	p->fill = 0;
	p->open = false;
	p->started = false;
	p->next_id = 1;
}

/* ---- unpacker ---- */

void tds_unpacker_init(tds_unpacker_t *u)
{
	memset(u, 0, sizeof(*u));
}

/* A header is complete in u->hdr: check it against the open message. */
static int unpack_header(tds_unpacker_t *u)
{
	tds_header_t h;

	if (tds_header_parse(u->hdr, TDS_HDR, &h) != 0)
		return TP_EPROTO;
	if (u->in_msg && h.type != u->cur.type)
		return TP_EPROTO;
	if (!u->in_msg)
		u->first_status = h.status;
	u->in_msg = true;
	u->cur = h;
	u->left = h.length - TDS_HDR;
	u->in_packet = true;
	u->hdr_have = 0;
	return 0;
}

/* The current packet has been read: close it, and its message on EOM. */
static int unpack_packet_done(tds_unpacker_t *u)
{
	u->in_packet = false;
	if (!(u->cur.status & TDS_ST_EOM))
		return 0;
	u->in_msg = false;
	return TDS_UNPACK_EOM;
}

int tds_unpack(tds_unpacker_t *u, const uint8_t *in, size_t len, size_t *used,
	       const uint8_t **data, size_t *dlen)
{
	size_t pos = 0, n;
	int rc;

	*data = NULL;
	*dlen = 0;
	*used = 0;
	if (u->failed)
		return TP_EPROTO;
	while (pos < len) {
		if (!u->in_packet) {
			n = TDS_HDR - u->hdr_have;
			n = n < len - pos ? n : len - pos;
			memcpy(u->hdr + u->hdr_have, in + pos, n);
			u->hdr_have += (uint8_t)n;
			pos += n;
			if (u->hdr_have < TDS_HDR)
				break;
			if (unpack_header(u) != 0) {
				u->failed = true;
				*used = pos;
				return TP_EPROTO;
			}
			if (u->left == 0 && (rc = unpack_packet_done(u))) {
				*used = pos;
				return rc;
			}
			continue;
		}
		n = u->left < len - pos ? u->left : len - pos;
		*data = in + pos;
		*dlen = n;
		pos += n;
		u->left -= n;
		rc = TDS_UNPACK_DATA;
		if (u->left == 0)
			rc |= unpack_packet_done(u);
		*used = pos;
		return rc;
	}
	*used = pos;
	return 0;
}

int tds_reframe(tds_unpacker_t *u, tds_packer_t *p, const uint8_t *in,
		size_t len, tds_emit_fn emit, void *arg)
{
	const uint8_t reset = TDS_ST_RESETCONN | TDS_ST_RESETCONN_SKIPTRAN;
	size_t pos = 0, used, dlen;
	const uint8_t *data;
	int rc, msgs = 0;

	while (pos < len) {
		rc = tds_unpack(u, in + pos, len - pos, &used, &data, &dlen);
		if (rc < 0)
			return rc;
		pos += used;
		if (rc == 0)
			break;
		if (!p->open)
			tds_packer_begin(p, u->cur.type,
					 u->first_status & reset);
		if (dlen)
			tds_packer_put(p, data, dlen, emit, arg);
		if (rc & TDS_UNPACK_EOM) {
			tds_packer_end(p, u->cur.status & TDS_ST_IGNORE, emit,
				       arg);
			msgs++;
		}
	}
	return msgs;
}

/* ---- UTF-16 ---- */

/* Appends code point c as UTF-8; false when it does not fit (with room
 * for the final NUL). */
static bool put_utf8(char *out, size_t cap, size_t *o, uint32_t c)
{
	uint8_t b[4];
	size_t n;

	if (c < 0x80) {
		b[0] = (uint8_t)c;
		n = 1;
	} else if (c < 0x800) {
		b[0] = (uint8_t)(0xC0 | (c >> 6));
		b[1] = (uint8_t)(0x80 | (c & 0x3F));
		n = 2;
	} else if (c < 0x10000) {
		b[0] = (uint8_t)(0xE0 | (c >> 12));
		b[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
		b[2] = (uint8_t)(0x80 | (c & 0x3F));
		n = 3;
	} else {
		b[0] = (uint8_t)(0xF0 | (c >> 18));
		b[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
		b[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
		b[3] = (uint8_t)(0x80 | (c & 0x3F));
		n = 4;
	}
	if (cap - *o <= n)
		return false;
	memcpy(out + *o, b, n);
	*o += n;
	return true;
}

int tds_utf16_to_utf8(const uint8_t *in, size_t nbytes, char *out, size_t cap,
		      size_t *outlen)
{
	size_t n = nbytes / 2, o = 0;

	if (nbytes & 1)
		return TP_EPROTO;
	if (cap == 0)
		return TP_ETOOBIG;
	while (n && tds_le16(in + 2 * (n - 1)) == 0)
		n--;
	for (size_t i = 0; i < n; i++) {
		uint32_t c = tds_le16(in + 2 * i), c2;

		if (c == 0 || (c >= 0xDC00 && c <= 0xDFFF))
			return TP_EPROTO;
		if (c >= 0xD800 && c <= 0xDBFF) {
			if (i + 1 >= n)
				return TP_EPROTO;
			c2 = tds_le16(in + 2 * (i + 1));
			if (c2 < 0xDC00 || c2 > 0xDFFF)
				return TP_EPROTO;
			c = 0x10000 + ((c - 0xD800) << 10) + (c2 - 0xDC00);
			i++;
		}
		if (!put_utf8(out, cap, &o, c))
			return TP_ETOOBIG;
	}
	out[o] = 0;
	if (outlen)
		*outlen = o;
	return 0;
}

/* One code point from UTF-8 at s[*i..len): the value, or -1 when invalid
 * (overlong forms, surrogates, beyond U+10FFFF, truncated). */
static long next_utf8(const uint8_t *s, size_t len, size_t *i)
{
	static const uint32_t min[4] = {0, 0x80, 0x800, 0x10000};
	uint32_t c = s[*i];
	size_t n;

	if (c < 0x80) {
		(*i)++;
		return c;
	}
	if ((c & 0xE0) == 0xC0) {
		n = 1;
		c &= 0x1F;
	} else if ((c & 0xF0) == 0xE0) {
		n = 2;
		c &= 0x0F;
	} else if ((c & 0xF8) == 0xF0) {
		n = 3;
		c &= 0x07;
	} else {
		return -1;
	}
	if (len - *i <= n)
		return -1;
	for (size_t k = 1; k <= n; k++) {
		if ((s[*i + k] & 0xC0) != 0x80)
			return -1;
		c = (c << 6) | (s[*i + k] & 0x3F);
	}
	if (c < min[n] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
		return -1;
	*i += n + 1;
	return (long)c;
}

long tds_utf8_to_utf16(const char *in, size_t len, uint8_t *out, size_t cap,
		       size_t *units)
{
	const uint8_t *s = (const uint8_t *)in;
	size_t i = 0, o = 0;

	while (i < len) {
		long c = next_utf8(s, len, &i);

		if (c < 0)
			return -1;
		if (c >= 0x10000) {
			if (cap - o < 4)
				return -1;
			c -= 0x10000;
			tds_put_le16(out + o, (uint16_t)(0xD800 + (c >> 10)));
			tds_put_le16(out + o + 2,
				     (uint16_t)(0xDC00 + (c & 0x3FF)));
			o += 4;
		} else {
			if (cap - o < 2)
				return -1;
			tds_put_le16(out + o, (uint16_t)c);
			o += 2;
		}
	}
	if (units)
		*units = o / 2;
	return (long)o;
}

/* ---- PRELOGIN ---- */

static bool prelogin_len_ok(int opt, size_t n)
{
	switch (opt) {
	case TDS_PL_VERSION:
		return n == TDS_PL_VERSION_LEN;
	case TDS_PL_ENCRYPTION:
	case TDS_PL_MARS:
	case TDS_PL_FEDAUTHREQUIRED:
		return n == 1;
	case TDS_PL_THREADID:
		return n == 0 || n == 4;
	case TDS_PL_TRACEID:
		return n == TDS_PL_TRACEID_LEN;
	case TDS_PL_NONCEOPT:
		return n == TDS_PL_NONCE_LEN;
	default: /* INSTOPT: a name, or one status byte from servers */
		return true;
	}
}

int tds_prelogin_parse(const uint8_t *p, size_t len, tds_prelogin_t *out)
{
	size_t pos, table_end;

	memset(out, 0, sizeof(*out));
	for (pos = 0;; pos += 5) {
		if (pos >= len)
			return TP_EPROTO; /* no terminator */
		if (p[pos] == TDS_PL_TERMINATOR)
			break;
		if (len - pos < 5)
			return TP_EPROTO;
	}
	table_end = pos + 1;
	for (pos = 0; p[pos] != TDS_PL_TERMINATOR; pos += 5) {
		uint8_t opt = p[pos];
		size_t off = tds_be16(p + pos + 1), n = tds_be16(p + pos + 3);

		if (n && (off < table_end || off > len || n > len - off))
			return TP_EPROTO;
		if (opt >= TDS_PL_NOPTS)
			continue; /* newer options: not ours to judge */
		if (out->opt[opt] || !prelogin_len_ok(opt, n))
			return TP_EPROTO;
		out->opt[opt] = n ? p + off : p + table_end - 1;
		out->len[opt] = (uint16_t)n;
	}
	return out->opt[TDS_PL_VERSION] ? 0 : TP_EPROTO;
}

size_t tds_prelogin_build(uint8_t *out, size_t cap, const tds_prelogin_t *pl)
{
	size_t k = 0, pos, data;

	for (int i = 0; i < TDS_PL_NOPTS; i++) {
		if (!pl->opt[i])
			continue;
		if (!prelogin_len_ok(i, pl->len[i]))
			return 0;
		k++;
	}
	data = 5 * k + 1;
	if (cap < data)
		return 0;
	pos = 0;
	for (int i = 0; i < TDS_PL_NOPTS; i++) {
		if (!pl->opt[i])
			continue;
		if (data + pl->len[i] > cap || data + pl->len[i] > 0xFFFF)
			return 0;
		out[pos] = (uint8_t)i;
		tds_put_be16(out + pos + 1, (uint16_t)data);
		tds_put_be16(out + pos + 3, pl->len[i]);
		if (pl->len[i])
			memcpy(out + data, pl->opt[i], pl->len[i]);
		data += pl->len[i];
		pos += 5;
	}
	out[pos] = TDS_PL_TERMINATOR;
	return data;
}

int tds_prelogin_byte(const tds_prelogin_t *pl, int opt, int dflt)
{
	if (opt < 0 || opt >= TDS_PL_NOPTS || !pl->opt[opt] || pl->len[opt] < 1)
		return dflt;
	return pl->opt[opt][0];
}

void tds_prelogin_set(tds_prelogin_t *pl, int opt, const uint8_t *data,
		      uint16_t len)
{
	if (opt < 0 || opt >= TDS_PL_NOPTS)
		return;
	pl->opt[opt] = data;
	pl->len[opt] = len;
}

bool tds_prelogin_is_tls(const uint8_t *p, size_t len)
{
	/* A TLS record: content type 20..23, then major version 3. An
	 * options table starts with VERSION (0). */
	return len >= 2 && p[0] >= 0x14 && p[0] <= 0x17 && p[1] == 0x03;
}

/* ---- LOGIN7 ---- */

/* Offset/length pairs of the fixed part, in wire order. */
enum {
	L7_HOST = 36,
	L7_USER = 40,
	L7_PASSWORD = 44,
	L7_APP = 48,
	L7_SERVER = 52,
	L7_EXTENSION = 56,
	L7_LIBRARY = 60,
	L7_LANGUAGE = 64,
	L7_DATABASE = 68,
	L7_CLIENTID = 72,
	L7_SSPI = 78,
	L7_ATTACH = 82,
	L7_CHANGEPW = 86,
	L7_SSPILONG = 90,
};

#define L7_MAX_CHARS	 128u
#define L7_MAX_ATTACH	 260u
#define L7_MAX_EXTENSION 255u

/* A field of nbytes at offset ib inside a record of rec bytes. A zero
 * length means absent, whatever the offset says. */
static int take_field(const uint8_t *p, size_t rec, size_t ib, size_t nbytes,
		      tds_str_t *out)
{
	out->p = NULL;
	out->len = 0;
	if (nbytes == 0)
		return 0;
	if (ib < TDS_LOGIN7_FIXED || ib > rec || nbytes > rec - ib)
		return TP_EPROTO;
	out->p = p + ib;
	out->len = nbytes;
	return 0;
}

static int take_chars(const uint8_t *p, size_t rec, int at, size_t max,
		      tds_str_t *out)
{
	size_t cch = tds_le16(p + at + 2);

	if (cch > max)
		return TP_EPROTO;
	return take_field(p, rec, tds_le16(p + at), 2 * cch, out);
}

int tds_feature_next(const uint8_t *block, size_t len, size_t *pos,
		     tds_feature_t *f)
{
	size_t n;

	if (*pos >= len || block[*pos] == TDS_FEAT_TERMINATOR)
		return 0;
	if (len - *pos < 5)
		return TP_EPROTO;
	n = tds_le32(block + *pos + 1);
	if (n > len - *pos - 5)
		return TP_EPROTO;
	f->id = block[*pos];
	f->data = block + *pos + 5;
	f->len = n;
	*pos += 5 + n;
	return 1;
}

/* The FeatureExt block the extension DWORD points at, up to (not
 * including) its terminator, which must lie inside the record. */
static int take_features(const uint8_t *p, size_t rec, tds_login7_t *out)
{
	size_t ib = tds_le16(p + L7_EXTENSION),
	       cb = tds_le16(p + L7_EXTENSION + 2), fe, pos = 0;
	tds_feature_t f;
	int rc;

	if (cb == 0)
		return 0;
	if (cb < 4 || cb > L7_MAX_EXTENSION || ib < TDS_LOGIN7_FIXED ||
	    ib > rec || cb > rec - ib)
		return TP_EPROTO;
	fe = tds_le32(p + ib);
	if (fe == 0)
		return 0;
	if (fe < TDS_LOGIN7_FIXED || fe >= rec)
		return TP_EPROTO;
	while ((rc = tds_feature_next(p + fe, rec - fe, &pos, &f)) == 1)
		;
	if (rc < 0 || pos >= rec - fe)
		return TP_EPROTO; /* bad feature or no terminator */
	out->features = p + fe;
	out->features_len = pos;
	return 0;
}

static int take_strings(const uint8_t *p, size_t rec, tds_login7_t *out)
{
	size_t sspi = tds_le16(p + L7_SSPI + 2);

	if (take_chars(p, rec, L7_HOST, L7_MAX_CHARS, &out->host) ||
	    take_chars(p, rec, L7_USER, L7_MAX_CHARS, &out->user) ||
	    take_chars(p, rec, L7_PASSWORD, L7_MAX_CHARS, &out->password) ||
	    take_chars(p, rec, L7_APP, L7_MAX_CHARS, &out->app) ||
	    take_chars(p, rec, L7_SERVER, L7_MAX_CHARS, &out->server) ||
	    take_chars(p, rec, L7_LIBRARY, L7_MAX_CHARS, &out->library) ||
	    take_chars(p, rec, L7_LANGUAGE, L7_MAX_CHARS, &out->language) ||
	    take_chars(p, rec, L7_DATABASE, L7_MAX_CHARS, &out->database) ||
	    take_chars(p, rec, L7_ATTACH, L7_MAX_ATTACH, &out->attach_db) ||
	    take_chars(p, rec, L7_CHANGEPW, L7_MAX_CHARS,
		       &out->change_password))
		return TP_EPROTO;
	/* cbSSPI 0xFFFF defers to cbSSPILong when that is non-zero. */
	if (sspi == 0xFFFF && tds_le32(p + L7_SSPILONG))
		sspi = tds_le32(p + L7_SSPILONG);
	return take_field(p, rec, tds_le16(p + L7_SSPI), sspi, &out->sspi);
}

int tds_login7_parse(const uint8_t *p, size_t len, tds_login7_t *out)
{
	size_t rec;

	memset(out, 0, sizeof(*out));
	if (len < TDS_LOGIN7_FIXED)
		return TP_EPROTO;
	out->length = tds_le32(p);
	rec = out->length;
	if (rec < TDS_LOGIN7_FIXED || rec > len || rec > TDS_LOGIN7_MAX)
		return TP_EPROTO;
	out->tds_version = tds_le32(p + 4);
	out->packet_size = tds_le32(p + 8);
	out->client_prog_ver = tds_le32(p + 12);
	out->client_pid = tds_le32(p + 16);
	out->connection_id = tds_le32(p + 20);
	out->flags1 = p[24];
	out->flags2 = p[25];
	out->type_flags = p[26];
	out->flags3 = p[27];
	out->timezone = (int32_t)tds_le32(p + 28);
	out->lcid = tds_le32(p + 32);
	memcpy(out->client_id, p + L7_CLIENTID, 6);
	if (take_strings(p, rec, out))
		return TP_EPROTO;
	if ((out->flags3 & TDS_OF3_EXTENSION) && take_features(p, rec, out))
		return TP_EPROTO;
	return 0;
}

bool tds_login7_feature(const tds_login7_t *l, uint8_t id, tds_feature_t *f)
{
	size_t pos = 0;

	while (tds_feature_next(l->features, l->features_len, &pos, f) == 1)
		if (f->id == id)
			return true;
	return false;
}

int tds_login7_string(const tds_str_t *s, char *out, size_t cap)
{
	return tds_utf16_to_utf8(s->p, s->len, out, cap, NULL);
}

void tds_password_obfuscate(uint8_t *buf, size_t n)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)(((buf[i] << 4) | (buf[i] >> 4)) ^ 0xA5);
}

void tds_password_deobfuscate(uint8_t *buf, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t b = buf[i] ^ 0xA5;

		buf[i] = (uint8_t)((b << 4) | (b >> 4));
	}
}

int tds_login7_password(const tds_login7_t *l, char *out, size_t cap,
			size_t *outlen)
{
	uint8_t tmp[2 * L7_MAX_CHARS];
	int rc;

	if (l->password.len > sizeof(tmp))
		return TP_EPROTO;
	if (l->password.len)
		memcpy(tmp, l->password.p, l->password.len);
	tds_password_deobfuscate(tmp, l->password.len);
	rc = tds_utf16_to_utf8(tmp, l->password.len, out, cap, outlen);
	OPENSSL_cleanse(tmp, sizeof(tmp));
	return rc;
}

static size_t slen(const char *s)
{
	return s ? strlen(s) : 0;
}

size_t tds_login7_bound(const tds_login7_req_t *r)
{
	const char *s[] = {r->host,   r->user,	  r->password, r->app,
			   r->server, r->library, r->language, r->database};
	size_t n = TDS_LOGIN7_FIXED + 4 + 1;

	for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++)
		n += 2 * slen(s[i]);
	if (r->token)
		n += 1 + 4 + 1 + 4 + 2 * r->token_len + TDS_PL_NONCE_LEN;
	if (r->utf8_support)
		n += 1 + 4 + 1;
	return n;
}

/* Writes s as UTF-16LE at *pos and fills the offset/length pair at `at`;
 * false when it does not fit or is over the limit. */
static bool put_field(uint8_t *out, size_t cap, size_t *pos, int at,
		      const char *s)
{
	size_t units = 0;
	long n = 0;

	if (*pos > 0xFFFF)
		return false;
	if (s && *s) {
		n = tds_utf8_to_utf16(s, strlen(s), out + *pos, cap - *pos,
				      &units);
		if (n < 0 || units > L7_MAX_CHARS)
			return false;
	}
	tds_put_le16(out + at, (uint16_t)*pos);
	tds_put_le16(out + at + 2, (uint16_t)units);
	*pos += (size_t)n;
	return true;
}

/* FEDAUTH (SECURITYTOKEN) and UTF8_SUPPORT, then the terminator. */
static size_t put_features(uint8_t *out, size_t cap, size_t pos,
			   const tds_login7_req_t *r)
{
	if (r->token) {
		size_t nonce = r->nonce ? TDS_PL_NONCE_LEN : 0, tlen;
		long n;

		if (cap - pos < 10 + nonce)
			return 0;
		n = tds_utf8_to_utf16(r->token, r->token_len, out + pos + 10,
				      cap - pos - 10 - nonce, NULL);
		if (n <= 0)
			return 0;
		tlen = (size_t)n;
		out[pos] = TDS_FEAT_FEDAUTH;
		tds_put_le32(out + pos + 1, (uint32_t)(1 + 4 + tlen + nonce));
		out[pos + 5] = (uint8_t)(TDS_FEDAUTH_LIB_SECURITYTOKEN << 1 |
					 (r->fedauth_echo ? 1 : 0));
		tds_put_le32(out + pos + 6, (uint32_t)tlen);
		if (nonce)
			memcpy(out + pos + 10 + tlen, r->nonce, nonce);
		pos += 10 + tlen + nonce;
	}
	if (r->utf8_support) {
		if (cap - pos < 6)
			return 0;
		out[pos] = TDS_FEAT_UTF8_SUPPORT;
		tds_put_le32(out + pos + 1, 1);
		out[pos + 5] = 1;
		pos += 6;
	}
	if (cap - pos < 1)
		return 0;
	out[pos++] = TDS_FEAT_TERMINATOR;
	return pos;
}

static void put_fixed(uint8_t *out, const tds_login7_req_t *r, bool ext)
{
	memset(out, 0, TDS_LOGIN7_FIXED);
	tds_put_le32(out + 4, r->tds_version ? r->tds_version : TDS_VER_74);
	tds_put_le32(out + 8,
		     r->packet_size ? r->packet_size : TDS_DEFAULT_PACKET);
	tds_put_le32(out + 12, r->client_prog_ver);
	tds_put_le32(out + 16, r->client_pid);
	out[24] = TDS_OF1_USE_DB | TDS_OF1_INIT_DB_FATAL | TDS_OF1_SET_LANG;
	out[25] = TDS_OF2_INIT_LANG | TDS_OF2_ODBC;
	out[26] = r->read_only_intent ? TDS_TF_READONLY : 0;
	out[27] = ext ? TDS_OF3_EXTENSION : 0;
	tds_put_le32(out + 32, r->lcid ? r->lcid : 0x0409);
}

size_t tds_login7_build(uint8_t *out, size_t cap, const tds_login7_req_t *r)
{
	bool ext = r->token || r->utf8_support;
	size_t pos = TDS_LOGIN7_FIXED, pw, ext_at = 0;

	if (cap < TDS_LOGIN7_FIXED || (r->token && !r->token_len))
		return 0;
	put_fixed(out, r, ext);
	if (!put_field(out, cap, &pos, L7_HOST, r->host) ||
	    !put_field(out, cap, &pos, L7_USER, r->user))
		return 0;
	pw = pos;
	if (!put_field(out, cap, &pos, L7_PASSWORD, r->password))
		return 0;
	tds_password_obfuscate(out + pw, pos - pw);
	if (!put_field(out, cap, &pos, L7_APP, r->app) ||
	    !put_field(out, cap, &pos, L7_SERVER, r->server))
		return 0;
	if (ext) {
		/* The extension field holds the FeatureExt offset, filled
		 * in once the strings before the block are placed. */
		if (cap - pos < 4 || pos > 0xFFFF)
			return 0;
		ext_at = pos;
		tds_put_le16(out + L7_EXTENSION, (uint16_t)pos);
		tds_put_le16(out + L7_EXTENSION + 2, 4);
		pos += 4;
	}
	if (!put_field(out, cap, &pos, L7_LIBRARY, r->library) ||
	    !put_field(out, cap, &pos, L7_LANGUAGE, r->language) ||
	    !put_field(out, cap, &pos, L7_DATABASE, r->database) ||
	    !put_field(out, cap, &pos, L7_SSPI, NULL) ||
	    !put_field(out, cap, &pos, L7_ATTACH, NULL) ||
	    !put_field(out, cap, &pos, L7_CHANGEPW, NULL))
		return 0;
	if (ext) {
		tds_put_le32(out + ext_at, (uint32_t)pos);
		pos = put_features(out, cap, pos, r);
		if (!pos)
			return 0;
	}
	tds_put_le32(out, (uint32_t)pos);
	return pos;
}

/* ---- ALL_HEADERS ---- */

int tds_all_headers_parse(const uint8_t *p, size_t len, tds_all_headers_t *h)
{
	size_t total, pos = 4;

	memset(h, 0, sizeof(*h));
	if (len < 4)
		return TP_EAGAIN;
	total = tds_le32(p);
	if (total < 4 + 6 || total > TDS_MAX_PACKET)
		return TP_EPROTO;
	if (total > len)
		return TP_EAGAIN;
	while (pos < total) {
		size_t hl;
		uint16_t type;

		if (total - pos < 6)
			return TP_EPROTO;
		hl = tds_le32(p + pos);
		type = tds_le16(p + pos + 4);
		if (hl < 6 || hl > total - pos)
			return TP_EPROTO;
		if (type == TDS_AH_TXN) {
			if (hl != 18 || h->has_txn)
				return TP_EPROTO;
			h->has_txn = true;
			memcpy(h->txn, p + pos + 6, 8);
			h->outstanding = tds_le32(p + pos + 14);
			h->txn_offset = pos + 6;
		} else if (type == TDS_AH_QUERY_NOTIFY && !h->has_notify) {
			h->has_notify = true;
		} else if (type == TDS_AH_TRACE && !h->has_trace && hl == 26) {
			h->has_trace = true;
		} else {
			return TP_EPROTO;
		}
		pos += hl;
	}
	h->total = total;
	return 0;
}

size_t tds_all_headers_build(uint8_t *out, size_t cap, const uint8_t txn[8],
			     uint32_t outstanding)
{
	if (cap < TDS_AH_TXN_LEN)
		return 0;
	tds_put_le32(out, TDS_AH_TXN_LEN);
	tds_put_le32(out + 4, 18);
	tds_put_le16(out + 8, TDS_AH_TXN);
	memcpy(out + 10, txn, 8);
	tds_put_le32(out + 18, outstanding);
	return TDS_AH_TXN_LEN;
}
