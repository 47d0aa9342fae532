/*
 * codec.c - MySQL packet framing, length-encoded values, login packets,
 * OK / ERR / EOF and session-state tracking data.
 *
 * Pure: bytes in, fields or bytes out. Parsers never read past len and
 * never trust a length field; strings come back as (pointer, length) into
 * the input. Writers return 0 instead of writing past cap.
 *
 * Not here: the response tracker (codec_track.c), SQL text heuristics
 * (codec_sql.c), what to do with any of it (ops.c).
 */
#include <string.h>

#include "protocols/mysql/mysql.h"

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

bool my_str_eq(my_str_t s, const char *lit)
{
	size_t n = strlen(lit);

	return s.p && s.len == n && memcmp(s.p, lit, n) == 0;
}

/* ---- framing ---- */

size_t my_payload_len(const uint8_t hdr[4])
{
	return (size_t)hdr[0] | ((size_t)hdr[1] << 8) | ((size_t)hdr[2] << 16);
}

void my_put_header(uint8_t out[4], size_t payload_len, uint8_t seq)
{
	out[0] = (uint8_t)payload_len;
	out[1] = (uint8_t)(payload_len >> 8);
	out[2] = (uint8_t)(payload_len >> 16);
	out[3] = seq;
}

int my_frame(const uint8_t *buf, size_t len, size_t *msg_len)
{
	size_t n;

	if (len < MY_HDR)
		return TP_EAGAIN;
	n = my_payload_len(buf);
	/* The first payload byte says what a packet is: classifiers get it
	 * even when a large packet is streamed from its first bytes. */
	if (n > 0 && len < MY_HDR + 1)
		return TP_EAGAIN;
	*msg_len = n + MY_HDR;
	return 0;
}

/* ---- length-encoded values ---- */

int my_get_lenenc(const uint8_t *p, size_t len, size_t *pos, uint64_t *v)
{
	size_t i = *pos, n;
	uint8_t b;

	if (i >= len)
		return TP_EPROTO;
	b = p[i];
	if (b < 0xfb) {
		*v = b;
		*pos = i + 1;
		return 0;
	}
	if (b == 0xfc)
		n = 2;
	else if (b == 0xfd)
		n = 3;
	else if (b == 0xfe)
		n = 8;
	else
		return TP_EPROTO; /* 0xfb NULL, 0xff error marker */
	if (len - i - 1 < n)
		return TP_EPROTO;
	*v = 0;
	for (size_t k = 0; k < n; k++)
		*v |= (uint64_t)p[i + 1 + k] << (8 * k);
	*pos = i + 1 + n;
	return 0;
}

int my_get_lenenc_str(const uint8_t *p, size_t len, size_t *pos, my_str_t *s)
{
	uint64_t n;
	size_t i = *pos;

	if (my_get_lenenc(p, len, &i, &n) != 0 || n > len - i)
		return TP_EPROTO;
	s->p = p + i;
	s->len = (size_t)n;
	*pos = i + (size_t)n;
	return 0;
}

size_t my_lenenc_size(uint64_t v)
{
	if (v < 0xfb)
		return 1;
	if (v <= 0xffff)
		return 3;
	if (v <= 0xffffff)
		return 4;
	return 9;
}

size_t my_put_lenenc(uint8_t *out, size_t cap, uint64_t v)
{
	size_t n = my_lenenc_size(v);

	if (cap < n)
		return 0;
	if (n == 1) {
		out[0] = (uint8_t)v;
		return 1;
	}
	out[0] = n == 3 ? 0xfc : n == 4 ? 0xfd : 0xfe;
	for (size_t k = 1; k < n; k++)
		out[k] = (uint8_t)(v >> (8 * (k - 1)));
	return n;
}

/* A NUL-terminated string at *pos inside [0, len): the bytes before the
 * NUL, *pos moved past it. TP_EPROTO when no NUL is in range. */
static int take_cstr(const uint8_t *p, size_t len, size_t *pos, my_str_t *s)
{
	const uint8_t *nul;

	if (*pos >= len)
		return TP_EPROTO;
	nul = memchr(p + *pos, 0, len - *pos);
	if (!nul)
		return TP_EPROTO;
	s->p = p + *pos;
	s->len = (size_t)(nul - s->p);
	*pos += s->len + 1;
	return 0;
}

/* A NUL-terminated string, or the rest of the packet when the NUL is
 * missing (servers and clients disagree on the last field). */
static void take_cstr_or_rest(const uint8_t *p, size_t len, size_t *pos,
			      my_str_t *s)
{
	if (take_cstr(p, len, pos, s) == 0)
		return;
	s->p = p + *pos;
	s->len = len - *pos;
	*pos = len;
}

/* ---- writer helpers: every one returns the new position or 0 ---- */

static size_t put_bytes(uint8_t *out, size_t cap, size_t pos, const void *b,
			size_t n)
{
	if (pos == 0 || pos > cap || n > cap - pos)
		return 0;
	if (n)
		memcpy(out + pos, b, n);
	return pos + n;
}

static size_t put_byte(uint8_t *out, size_t cap, size_t pos, uint8_t b)
{
	return put_bytes(out, cap, pos, &b, 1);
}

static size_t put_cstr(uint8_t *out, size_t cap, size_t pos, const char *s)
{
	return put_bytes(out, cap, pos, s, strlen(s) + 1);
}

static size_t put_lenenc_at(uint8_t *out, size_t cap, size_t pos, uint64_t v)
{
	size_t n;

	if (pos == 0 || pos > cap)
		return 0;
	n = my_put_lenenc(out + pos, cap - pos, v);
	return n ? pos + n : 0;
}

static size_t put_lenenc_str(uint8_t *out, size_t cap, size_t pos,
			     const uint8_t *s, size_t n)
{
	pos = put_lenenc_at(out, cap, pos, n);
	return put_bytes(out, cap, pos, s, n);
}

/* Fills in the header of a packet whose payload ends at pos. */
static size_t finish(uint8_t *out, size_t pos, uint8_t seq)
{
	if (pos < MY_HDR || pos - MY_HDR >= MY_MAX_PAYLOAD)
		return 0;
	my_put_header(out, pos - MY_HDR, seq);
	return pos;
}

size_t my_write_packet(uint8_t *out, size_t cap, uint8_t seq,
		       const uint8_t *data, size_t len)
{
	if (cap < MY_HDR)
		return 0;
	return finish(out, put_bytes(out, cap, MY_HDR, data, len), seq);
}

/* ---- HandshakeV10 ---- */

/* charset, status, caps high, auth data length, reserved: the part of a
 * greeting after the low capability bits. */
static int parse_greeting_tail(const uint8_t *pl, size_t len, size_t *pos,
			       my_greeting_t *out, size_t *auth_len)
{
	size_t i = *pos;

	if (len - i < 16)
		return TP_EPROTO;
	out->charset = pl[i];
	out->status = get16(pl + i + 1);
	out->caps |= (uint64_t)get16(pl + i + 3) << 16;
	*auth_len = pl[i + 5];
	/* MariaDB: 6 zero bytes then its extended capabilities, when the
	 * CLIENT_MYSQL bit says this is not a MySQL server. */
	if (!(out->caps & MY_CAP_LONG_PASSWORD))
		out->caps |= (uint64_t)get32(pl + i + 12) << 32;
	*pos = i + 16;
	return 0;
}

int my_parse_greeting(const uint8_t *pl, size_t len, my_greeting_t *out)
{
	size_t pos = 1, auth_len = 0, part2;
	my_str_t ver;

	memset(out, 0, sizeof(*out));
	if (len < 1 || pl[0] != 10)
		return TP_EPROTO;
	out->protocol = 10;
	if (take_cstr(pl, len, &pos, &ver) != 0 || len - pos < 4 + 8 + 1 + 2)
		return TP_EPROTO;
	out->version = ver;
	out->thread_id = get32(pl + pos);
	memcpy(out->nonce, pl + pos + 4, 8);
	out->nonce_len = 8;
	out->caps = get16(pl + pos + 13);
	pos += 15;
	if (pos == len)
		return 0; /* a very old server: nothing more */
	if (parse_greeting_tail(pl, len, &pos, out, &auth_len) != 0)
		return TP_EPROTO;
	if (out->caps & MY_CAP_SECURE_CONN) {
		part2 = auth_len > 8 + 13 ? auth_len - 8 : 13;
		if (len - pos < part2)
			return TP_EPROTO;
		/* The second part ends with a NUL that is not nonce. */
		memcpy(out->nonce + 8, pl + pos,
		       pl[pos + part2 - 1] == 0 ? part2 - 1 : part2);
		out->nonce_len += pl[pos + part2 - 1] == 0 ? part2 - 1 : part2;
		pos += part2;
	}
	if ((out->caps & MY_CAP_PLUGIN_AUTH) && pos < len)
		take_cstr_or_rest(pl, len, &pos, &out->plugin);
	return 0;
}

size_t my_write_greeting(uint8_t *out, size_t cap, uint8_t seq,
			 const char *version, uint32_t thread_id,
			 const uint8_t *nonce, uint64_t caps, uint8_t charset,
			 uint16_t status, const char *plugin)
{
	uint8_t mid[31];
	size_t pos;

	if (cap < MY_HDR)
		return 0;
	/* A nonce with a NUL would be cut short by C clients. */
	if (memchr(nonce, 0, MY_NONCE_LEN))
		return 0;
	pos = put_byte(out, cap, MY_HDR, 10);
	pos = put_cstr(out, cap, pos, version);
	put32(mid, thread_id);
	memcpy(mid + 4, nonce, 8);
	mid[12] = 0;
	put16(mid + 13, (uint16_t)caps);
	mid[15] = charset;
	put16(mid + 16, status);
	put16(mid + 18, (uint16_t)(caps >> 16));
	mid[20] = (caps & MY_CAP_PLUGIN_AUTH) ? MY_NONCE_LEN + 1 : 0;
	memset(mid + 21, 0, 10);
	if (!(caps & MY_CAP_LONG_PASSWORD))
		put32(mid + 27, (uint32_t)(caps >> 32));
	pos = put_bytes(out, cap, pos, mid, sizeof(mid));
	if (caps & MY_CAP_SECURE_CONN) {
		pos = put_bytes(out, cap, pos, nonce + 8, MY_NONCE_LEN - 8);
		pos = put_byte(out, cap, pos, 0);
	}
	if (caps & MY_CAP_PLUGIN_AUTH)
		pos = put_cstr(out, cap, pos, plugin);
	return finish(out, pos, seq);
}

/* ---- HandshakeResponse41 / SSLRequest ---- */

static int parse_login_auth(const uint8_t *pl, size_t len, size_t *pos,
			    uint64_t eff, my_str_t *auth)
{
	static const uint8_t none[1];

	if (*pos >= len) { /* announced, then left out: empty */
		auth->p = none;
		auth->len = 0;
		return 0;
	}
	if (eff & MY_CAP_AUTH_LENENC)
		return my_get_lenenc_str(pl, len, pos, auth);
	if (eff & MY_CAP_SECURE_CONN) {
		size_t n = pl[*pos];

		if (n > len - *pos - 1)
			return TP_EPROTO;
		auth->p = pl + *pos + 1;
		auth->len = n;
		*pos += n + 1;
		return 0;
	}
	return take_cstr(pl, len, pos, auth);
}

int my_parse_login(const uint8_t *pl, size_t len, uint64_t offered,
		   my_login_t *out)
{
	size_t pos = 32;
	uint64_t eff;

	memset(out, 0, sizeof(*out));
	if (len < 4)
		return TP_EPROTO;
	out->caps = get32(pl);
	if (!(out->caps & MY_CAP_PROTOCOL_41) || len < 32)
		return TP_EPROTO; /* HandshakeResponse320: not supported */
	out->max_packet = get32(pl + 4);
	out->charset = pl[8];
	if (!(out->caps & MY_CAP_LONG_PASSWORD))
		out->caps |= (uint64_t)get32(pl + 28) << 32;
	if (len == 32) {
		out->ssl_request = (out->caps & MY_CAP_SSL) != 0;
		return out->ssl_request ? 0 : TP_EPROTO;
	}
	eff = out->caps & offered;
	if (take_cstr(pl, len, &pos, &out->user) != 0 ||
	    parse_login_auth(pl, len, &pos, eff, &out->auth) != 0)
		return TP_EPROTO;
	if ((eff & MY_CAP_CONNECT_WITH_DB) && pos < len &&
	    take_cstr(pl, len, &pos, &out->database) != 0)
		return TP_EPROTO;
	if ((eff & MY_CAP_PLUGIN_AUTH) && pos < len)
		take_cstr_or_rest(pl, len, &pos, &out->plugin);
	if ((eff & MY_CAP_CONNECT_ATTRS) && pos < len &&
	    my_get_lenenc_str(pl, len, &pos, &out->attrs) != 0)
		return TP_EPROTO;
	return 0;
}

static size_t put_login_auth(uint8_t *out, size_t cap, size_t pos,
			     const my_login_t *in)
{
	const uint8_t *a = in->auth.p ? in->auth.p : (const uint8_t *)"";

	if (in->caps & MY_CAP_AUTH_LENENC)
		return put_lenenc_str(out, cap, pos, a, in->auth.len);
	if (in->caps & MY_CAP_SECURE_CONN) {
		if (in->auth.len > 255)
			return 0;
		pos = put_byte(out, cap, pos, (uint8_t)in->auth.len);
		return put_bytes(out, cap, pos, a, in->auth.len);
	}
	if (memchr(a, 0, in->auth.len))
		return 0;
	pos = put_bytes(out, cap, pos, a, in->auth.len);
	return put_byte(out, cap, pos, 0);
}

/* A string field written NUL-terminated; refuses one holding a NUL. */
static size_t put_str_nul(uint8_t *out, size_t cap, size_t pos, my_str_t s)
{
	const uint8_t *p = s.p ? s.p : (const uint8_t *)"";

	if (memchr(p, 0, s.len))
		return 0;
	pos = put_bytes(out, cap, pos, p, s.len);
	return put_byte(out, cap, pos, 0);
}

size_t my_write_login(uint8_t *out, size_t cap, uint8_t seq,
		      const my_login_t *in)
{
	uint8_t head[32];
	size_t pos;

	if (cap < MY_HDR)
		return 0;
	memset(head, 0, sizeof(head));
	put32(head, (uint32_t)in->caps);
	put32(head + 4, in->max_packet);
	head[8] = in->charset;
	if (!(in->caps & MY_CAP_LONG_PASSWORD))
		put32(head + 28, (uint32_t)(in->caps >> 32));
	pos = put_bytes(out, cap, MY_HDR, head, sizeof(head));
	if (in->ssl_request)
		return finish(out, pos, seq);
	pos = put_str_nul(out, cap, pos, in->user);
	pos = put_login_auth(out, cap, pos, in);
	if (in->caps & MY_CAP_CONNECT_WITH_DB)
		pos = put_str_nul(out, cap, pos, in->database);
	if (in->caps & MY_CAP_PLUGIN_AUTH)
		pos = put_str_nul(out, cap, pos, in->plugin);
	if (in->caps & MY_CAP_CONNECT_ATTRS)
		pos = put_lenenc_str(out, cap, pos,
				     in->attrs.p ? in->attrs.p
						 : (const uint8_t *)"",
				     in->attrs.len);
	return finish(out, pos, seq);
}

/* ---- authentication exchange ---- */

int my_parse_auth_switch(const uint8_t *pl, size_t len, my_str_t *plugin,
			 my_str_t *data)
{
	size_t pos = 1;

	/* A lone 0xFE is the pre-4.1 "use old password" request. */
	if (len < 2 || pl[0] != 0xfe)
		return TP_EPROTO;
	take_cstr_or_rest(pl, len, &pos, plugin);
	if (plugin->len == 0)
		return TP_EPROTO;
	data->p = pl + pos;
	data->len = len - pos;
	return 0;
}

size_t my_write_auth_switch(uint8_t *out, size_t cap, uint8_t seq,
			    const char *plugin, const uint8_t *data, size_t len)
{
	size_t pos;

	if (cap < MY_HDR)
		return 0;
	pos = put_byte(out, cap, MY_HDR, 0xfe);
	pos = put_cstr(out, cap, pos, plugin);
	pos = put_bytes(out, cap, pos, data, len);
	return finish(out, pos, seq);
}

size_t my_write_more_data(uint8_t *out, size_t cap, uint8_t seq,
			  const uint8_t *data, size_t len)
{
	size_t pos;

	if (cap < MY_HDR)
		return 0;
	pos = put_byte(out, cap, MY_HDR, 0x01);
	pos = put_bytes(out, cap, pos, data, len);
	return finish(out, pos, seq);
}

/* ---- OK, ERR, EOF ---- */

int my_parse_ok(const uint8_t *pl, size_t len, uint64_t caps, my_ok_t *out)
{
	size_t pos = 1;

	memset(out, 0, sizeof(*out));
	if (len < 1 || (pl[0] != 0x00 && pl[0] != 0xfe))
		return TP_EPROTO;
	if (my_get_lenenc(pl, len, &pos, &out->affected_rows) != 0 ||
	    my_get_lenenc(pl, len, &pos, &out->last_insert_id) != 0)
		return TP_EPROTO;
	if (caps & MY_CAP_PROTOCOL_41) {
		if (len - pos < 4)
			return TP_EPROTO;
		out->status = get16(pl + pos);
		out->warnings = get16(pl + pos + 2);
		pos += 4;
	} else if (caps & MY_CAP_TRANSACTIONS) {
		if (len - pos < 2)
			return TP_EPROTO;
		out->status = get16(pl + pos);
		pos += 2;
	}
	if (!(caps & MY_CAP_SESSION_TRACK)) {
		out->info.p = pl + pos;
		out->info.len = len - pos;
		return 0;
	}
	if (pos < len && my_get_lenenc_str(pl, len, &pos, &out->info) != 0)
		return TP_EPROTO;
	if ((out->status & MY_ST_STATE_CHANGED) && pos < len &&
	    my_get_lenenc_str(pl, len, &pos, &out->session) != 0)
		return TP_EPROTO;
	return 0;
}

size_t my_write_ok(uint8_t *out, size_t cap, uint8_t seq, uint64_t caps,
		   const my_ok_t *ok)
{
	const uint8_t *info = ok->info.p ? ok->info.p : (const uint8_t *)"";
	bool state = (caps & MY_CAP_SESSION_TRACK) &&
		     (ok->status & MY_ST_STATE_CHANGED) && ok->session.p;
	uint8_t st[4];
	size_t pos;

	if (cap < MY_HDR)
		return 0;
	pos = put_byte(out, cap, MY_HDR, 0x00);
	pos = put_lenenc_at(out, cap, pos, ok->affected_rows);
	pos = put_lenenc_at(out, cap, pos, ok->last_insert_id);
	put16(st, ok->status);
	put16(st + 2, ok->warnings);
	pos = put_bytes(out, cap, pos, st, 4);
	if (!(caps & MY_CAP_SESSION_TRACK)) {
		pos = put_bytes(out, cap, pos, info, ok->info.len);
	} else if (ok->info.len || state) {
		pos = put_lenenc_str(out, cap, pos, info, ok->info.len);
		if (state)
			pos = put_lenenc_str(out, cap, pos, ok->session.p,
					     ok->session.len);
	}
	return finish(out, pos, seq);
}

/* Five characters of [0-9A-Z]: what a SQLSTATE is made of. */
static bool is_sqlstate(const uint8_t *p)
{
	for (int i = 0; i < 5; i++)
		if (!((p[i] >= '0' && p[i] <= '9') ||
		      (p[i] >= 'A' && p[i] <= 'Z')))
			return false;
	return true;
}

int my_parse_err(const uint8_t *pl, size_t len, my_err_t *out)
{
	size_t pos = 3;

	memset(out, 0, sizeof(*out));
	if (len < 3 || pl[0] != 0xff)
		return TP_EPROTO;
	out->code = get16(pl + 1);
	/* Errors sent before the client's capabilities are known (e.g. too
	 * many connections) carry no SQLSTATE. */
	if (len >= 9 && pl[3] == '#' && is_sqlstate(pl + 4)) {
		memcpy(out->sqlstate, pl + 4, 5);
		out->sqlstate[5] = 0;
		pos = 9;
	}
	out->message.p = pl + pos;
	out->message.len = len - pos;
	return 0;
}

#define MY_ERR_MSG_MAX 512

size_t my_write_err(uint8_t *out, size_t cap, uint8_t seq, uint16_t code,
		    const char *sqlstate, const char *message)
{
	uint8_t head[9];
	size_t n = strlen(message), pos;

	if (cap < MY_HDR || strlen(sqlstate) != 5)
		return 0;
	if (n > MY_ERR_MSG_MAX)
		n = MY_ERR_MSG_MAX;
	head[0] = 0xff;
	put16(head + 1, code);
	head[3] = '#';
	memcpy(head + 4, sqlstate, 5);
	pos = put_bytes(out, cap, MY_HDR, head, sizeof(head));
	pos = put_bytes(out, cap, pos, message, n);
	return finish(out, pos, seq);
}

bool my_is_eof(const uint8_t *pl, size_t len)
{
	return len >= 1 && len < 9 && pl[0] == 0xfe;
}

int my_parse_eof(const uint8_t *pl, size_t len, uint16_t *warnings,
		 uint16_t *status)
{
	if (!my_is_eof(pl, len))
		return TP_EPROTO;
	if (len == 1) { /* pre-4.1 */
		*warnings = 0;
		*status = 0;
		return 0;
	}
	if (len < 5)
		return TP_EPROTO;
	*warnings = get16(pl + 1);
	*status = get16(pl + 3);
	return 0;
}

size_t my_write_eof(uint8_t *out, size_t cap, uint8_t seq, uint16_t warnings,
		    uint16_t status)
{
	uint8_t pl[5];

	pl[0] = 0xfe;
	put16(pl + 1, warnings);
	put16(pl + 3, status);
	return my_write_packet(out, cap, seq, pl, sizeof(pl));
}

bool my_status_idle(uint16_t status)
{
	return !(status & (MY_ST_IN_TRANS | MY_ST_MORE_RESULTS)) &&
	       (status & MY_ST_AUTOCOMMIT);
}

/* ---- session state tracking ---- */

int my_session_next(my_str_t block, size_t *pos, uint8_t *type, my_str_t *data)
{
	size_t i = *pos;

	if (!block.p || i >= block.len)
		return TP_EAGAIN;
	*type = block.p[i++];
	if (my_get_lenenc_str(block.p, block.len, &i, data) != 0)
		return TP_EPROTO;
	*pos = i;
	return 0;
}

int my_parse_session(my_str_t block, my_session_info_t *out)
{
	size_t pos = 0, in;
	uint8_t type;
	my_str_t data, v;
	int rc;

	memset(out, 0, sizeof(*out));
	while ((rc = my_session_next(block, &pos, &type, &data)) == 0) {
		in = 0;
		switch (type) {
		case MY_SESSION_SYSVARS:
			out->sysvars_changed = true;
			break;
		case MY_SESSION_SCHEMA:
			if (my_get_lenenc_str(data.p, data.len, &in, &v) != 0)
				return TP_EPROTO;
			out->schema_changed = true;
			out->schema = v;
			break;
		case MY_SESSION_STATE_CHANGE:
			/* The flag itself, no inner length: `02 01 31`. */
			if (data.len >= 1 && data.p[0] == '1')
				out->state_changed = true;
			break;
		default: /* GTIDs, transaction info: not session state */
			break;
		}
	}
	return rc == TP_EAGAIN ? 0 : rc;
}

/* ---- COM_CHANGE_USER ---- */

int my_parse_change_user(const uint8_t *pl, size_t len, uint64_t caps,
			 my_change_user_t *out)
{
	size_t pos = 1;

	memset(out, 0, sizeof(*out));
	if (len < 2 || pl[0] != MY_COM_CHANGE_USER ||
	    take_cstr(pl, len, &pos, &out->user) != 0)
		return TP_EPROTO;
	if (caps & MY_CAP_SECURE_CONN) {
		size_t n;

		if (pos >= len || (n = pl[pos]) > len - pos - 1)
			return TP_EPROTO;
		out->auth.p = pl + pos + 1;
		out->auth.len = n;
		pos += n + 1;
	} else if (take_cstr(pl, len, &pos, &out->auth) != 0) {
		return TP_EPROTO;
	}
	if (pos < len && take_cstr(pl, len, &pos, &out->database) != 0)
		return TP_EPROTO;
	if (pos < len) {
		if (len - pos < 2)
			return TP_EPROTO;
		out->charset = get16(pl + pos);
		pos += 2;
	}
	if ((caps & MY_CAP_PLUGIN_AUTH) && pos < len)
		take_cstr_or_rest(pl, len, &pos, &out->plugin);
	if ((caps & MY_CAP_CONNECT_ATTRS) && pos < len &&
	    my_get_lenenc_str(pl, len, &pos, &out->attrs) != 0)
		return TP_EPROTO;
	return 0;
}

my_reply_t my_command_reply(uint8_t cmd)
{
	switch (cmd) {
	case MY_COM_QUIT:
		return MY_REPLY_CLOSE;
	case MY_COM_STMT_SEND_LONG_DATA:
	case MY_COM_STMT_CLOSE:
		return MY_REPLY_NONE;
	case MY_COM_QUERY:
	case MY_COM_STMT_EXECUTE:
	case MY_COM_PROCESS_INFO:
	case MY_COM_STMT_BULK_EXECUTE:
		return MY_REPLY_RESULT;
	case MY_COM_FIELD_LIST:
		return MY_REPLY_FIELDS;
	case MY_COM_STMT_PREPARE:
		return MY_REPLY_PREPARE;
	case MY_COM_STMT_FETCH:
		return MY_REPLY_FETCH;
	case MY_COM_STATISTICS:
		return MY_REPLY_TEXT;
	case MY_COM_BINLOG_DUMP:
	case MY_COM_BINLOG_DUMP_GTID:
	case MY_COM_TABLE_DUMP:
	case MY_COM_CLONE:
		return MY_REPLY_STREAM;
	default:
		/* INIT_DB, PING, RESET_CONNECTION, SET_OPTION, STMT_RESET,
		 * REFRESH, SHUTDOWN, DEBUG, CHANGE_USER and unknown ones:
		 * one OK, EOF or ERR. */
		return MY_REPLY_OK;
	}
}
