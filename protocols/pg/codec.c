/*
 * codec.c - PostgreSQL v3 framing, parsing and message writers.
 *
 * Pure: bytes in, fields or bytes out. Parsers never read past len and
 * never trust a length field; strings returned point into the input and
 * are only returned when their NUL terminator lies inside the message.
 * Writers return 0 instead of writing past cap.
 */
#include <string.h>
#include <strings.h>

#include "protocols/pg/pg.h"

static uint32_t get32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	       ((uint32_t)p[2] << 8) | p[3];
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* A NUL-terminated string starting at *pos inside [0, end): returns it and
 * moves *pos past the NUL, or NULL when no terminator is in range. */
static const char *take_str(const uint8_t *buf, size_t *pos, size_t end)
{
	const uint8_t *nul;

	if (*pos >= end)
		return NULL;
	nul = memchr(buf + *pos, 0, end - *pos);
	if (!nul)
		return NULL;
	const char *s = (const char *)buf + *pos;
	*pos = (size_t)(nul - buf) + 1;
	return s;
}

int pg_startup_frame(const uint8_t *buf, size_t len, size_t *msg_len)
{
	uint32_t n;

	if (len < 4)
		return TP_EAGAIN;
	n = get32(buf);
	if (n < 8)
		return TP_EPROTO;
	if (n > PG_MAX_STARTUP)
		return TP_ETOOBIG;
	*msg_len = n;
	return 0;
}

static int parse_params(const uint8_t *buf, size_t len, pg_startup_t *out)
{
	size_t pos = 8;

	for (;;) {
		const char *k, *v;

		if (pos >= len)
			return TP_EPROTO; /* missing final NUL */
		if (buf[pos] == 0)
			return pos + 1 == len ? 0 : TP_EPROTO;
		k = take_str(buf, &pos, len);
		v = k ? take_str(buf, &pos, len) : NULL;
		if (!v)
			return TP_EPROTO;
		if (strcmp(k, "user") == 0) {
			out->user = v;
		} else if (strcmp(k, "database") == 0) {
			out->database = v;
		} else if (out->nparams < PG_MAX_PARAMS) {
			out->keys[out->nparams] = k;
			out->values[out->nparams] = v;
			out->nparams++;
		} else {
			return TP_ETOOBIG;
		}
	}
}

int pg_startup_parse(const uint8_t *buf, size_t len, pg_startup_t *out)
{
	memset(out, 0, sizeof(*out));
	if (len < 8 || get32(buf) != len)
		return TP_EPROTO;
	out->code = get32(buf + 4);
	switch (out->code) {
	case PG_CODE_SSL:
	case PG_CODE_GSSENC:
		return len == 8 ? 0 : TP_EPROTO;
	case PG_CODE_CANCEL:
		if (len != 16)
			return TP_EPROTO;
		memcpy(out->cancel_key, buf + 8, 8);
		return 0;
	case PG_PROTO_V3:
		return parse_params(buf, len, out);
	default:
		return TP_EPROTO; /* protocol 2 and unknown codes */
	}
}

int pg_frame(const uint8_t *buf, size_t len, size_t *msg_len)
{
	uint32_t n;

	if (len < 5)
		return TP_EAGAIN;
	n = get32(buf + 1);
	if (n < 4)
		return TP_EPROTO;
	if (n > PG_MAX_MSG)
		return TP_ETOOBIG;
	*msg_len = (size_t)n + 1;
	return 0;
}

int pg_parse_auth(const uint8_t *msg, size_t len, uint32_t *code,
		  const uint8_t **data, size_t *data_len)
{
	if (len < 9 || msg[0] != 'R' || get32(msg + 1) + 1 != len)
		return TP_EPROTO;
	*code = get32(msg + 5);
	*data = msg + 9;
	*data_len = len - 9;
	return 0;
}

int pg_parse_error(const uint8_t *msg, size_t len, pg_error_t *out)
{
	size_t pos = 5;

	memset(out, 0, sizeof(*out));
	if (len < 6 || (msg[0] != 'E' && msg[0] != 'N') ||
	    get32(msg + 1) + 1 != len)
		return TP_EPROTO;
	while (pos < len && msg[pos] != 0) {
		char field = (char)msg[pos++];
		const char *v = take_str(msg, &pos, len);

		if (!v)
			return TP_EPROTO;
		if (field == 'S')
			out->severity = v;
		else if (field == 'C')
			out->sqlstate = v;
		else if (field == 'M')
			out->message = v;
	}
	return pos + 1 == len ? 0 : TP_EPROTO;
}

int pg_parse_param(const uint8_t *msg, size_t len, const char **key,
		   const char **value)
{
	size_t pos = 5;

	if (len < 7 || msg[0] != 'S' || get32(msg + 1) + 1 != len)
		return TP_EPROTO;
	*key = take_str(msg, &pos, len);
	*value = *key ? take_str(msg, &pos, len) : NULL;
	return *value && pos == len ? 0 : TP_EPROTO;
}

int pg_parse_sasl_initial(const uint8_t *msg, size_t len, const char **mech,
			  const uint8_t **data, size_t *data_len)
{
	size_t pos = 5;
	uint32_t n;

	if (len < 5 || msg[0] != 'p' || get32(msg + 1) + 1 != len)
		return TP_EPROTO;
	*mech = take_str(msg, &pos, len);
	if (!*mech || len - pos < 4)
		return TP_EPROTO;
	n = get32(msg + pos);
	pos += 4;
	/* -1 means "no initial response"; SCRAM always sends one. */
	if (n == 0xffffffffu || n != len - pos)
		return TP_EPROTO;
	*data = msg + pos;
	*data_len = n;
	return 0;
}

int pg_parse_body(const uint8_t *msg, size_t len, char type,
		  const uint8_t **data, size_t *data_len)
{
	if (len < 5 || msg[0] != (uint8_t)type || get32(msg + 1) + 1 != len)
		return TP_EPROTO;
	*data = msg + 5;
	*data_len = len - 5;
	return 0;
}

int pg_parse_ready(const uint8_t *msg, size_t len, char *status)
{
	if (len != 6 || msg[0] != 'Z' || get32(msg + 1) != 5)
		return TP_EPROTO;
	if (msg[5] != 'I' && msg[5] != 'T' && msg[5] != 'E')
		return TP_EPROTO;
	*status = (char)msg[5];
	return 0;
}

void pg_put_header(uint8_t out[5], char type, size_t body_len)
{
	out[0] = (uint8_t)type;
	put32(out + 1, (uint32_t)(body_len + 4));
}

/* Appends a NUL-terminated string; returns the new position or 0. */
static size_t put_str(uint8_t *out, size_t cap, size_t pos, const char *s)
{
	size_t n = strlen(s) + 1;

	if (pos == 0 || pos > cap || n > cap - pos)
		return 0;
	memcpy(out + pos, s, n);
	return pos + n;
}

size_t pg_write_error(uint8_t *out, size_t cap, const char *severity,
		      const char *sqlstate, const char *message)
{
	const char *fields[] = {"S", severity, "V", severity,
				"C", sqlstate, "M", message};
	size_t pos = 5;

	if (cap < 6)
		return 0;
	for (size_t i = 0; i < 8 && pos; i += 2) {
		if (pos >= cap)
			return 0;
		out[pos++] = (uint8_t)fields[i][0];
		pos = put_str(out, cap, pos, fields[i + 1]);
	}
	if (!pos || pos >= cap)
		return 0;
	out[pos++] = 0;
	pg_put_header(out, 'E', pos - 5);
	return pos;
}

size_t pg_write_auth(uint8_t *out, size_t cap, uint32_t code, const void *data,
		     size_t len)
{
	if (cap < 9 || len > cap - 9)
		return 0;
	pg_put_header(out, 'R', 4 + len);
	put32(out + 5, code);
	if (len)
		memcpy(out + 9, data, len);
	return 9 + len;
}

size_t pg_write_ready(uint8_t *out, size_t cap, char status)
{
	if (cap < 6)
		return 0;
	pg_put_header(out, 'Z', 1);
	out[5] = (uint8_t)status;
	return 6;
}

size_t pg_write_key_data(uint8_t *out, size_t cap, const uint8_t key[8])
{
	if (cap < 13)
		return 0;
	pg_put_header(out, 'K', 8);
	memcpy(out + 5, key, 8);
	return 13;
}

size_t pg_write_startup(uint8_t *out, size_t cap, const char *user,
			const char *database, const char *const *keys,
			const char *const *values, size_t n)
{
	size_t pos = 8;

	if (cap < 9)
		return 0;
	pos = put_str(out, cap, pos, "user");
	pos = put_str(out, cap, pos, user);
	pos = put_str(out, cap, pos, "database");
	pos = put_str(out, cap, pos, database);
	for (size_t i = 0; i < n && pos; i++) {
		pos = put_str(out, cap, pos, keys[i]);
		pos = put_str(out, cap, pos, values[i]);
	}
	if (!pos || pos >= cap)
		return 0;
	out[pos++] = 0;
	put32(out, (uint32_t)pos);
	put32(out + 4, PG_PROTO_V3);
	return pos;
}

size_t pg_write_ssl_request(uint8_t *out, size_t cap)
{
	if (cap < 8)
		return 0;
	put32(out, 8);
	put32(out + 4, PG_CODE_SSL);
	return 8;
}

size_t pg_write_cancel(uint8_t *out, size_t cap, const uint8_t key[8])
{
	if (cap < 16)
		return 0;
	put32(out, 16);
	put32(out + 4, PG_CODE_CANCEL);
	memcpy(out + 8, key, 8);
	return 16;
}

size_t pg_write_query(uint8_t *out, size_t cap, const char *sql)
{
	size_t n = strlen(sql) + 1;

	if (cap < 5 || n > cap - 5)
		return 0;
	pg_put_header(out, 'Q', n);
	memcpy(out + 5, sql, n);
	return 5 + n;
}

size_t pg_write_sasl_initial(uint8_t *out, size_t cap, const char *mech,
			     const void *data, size_t len)
{
	size_t pos;

	if (cap < 5)
		return 0;
	pos = put_str(out, cap, 5, mech);
	if (!pos || cap - pos < 4 || len > cap - pos - 4)
		return 0;
	put32(out + pos, (uint32_t)len);
	if (len)
		memcpy(out + pos + 4, data, len);
	pos += 4 + len;
	pg_put_header(out, 'p', pos - 5);
	return pos;
}

/* ---- session state detection ---- */

/* Skips white space and SQL comments; returns the new position. */
static size_t skip_blank(const char *s, size_t len, size_t i)
{
	while (i < len) {
		if (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' ||
		    s[i] == '\r' || s[i] == '(') {
			i++;
		} else if (s[i] == '-' && i + 1 < len && s[i + 1] == '-') {
			while (i < len && s[i] != '\n')
				i++;
		} else if (s[i] == '/' && i + 1 < len && s[i + 1] == '*') {
			i += 2;
			while (i + 1 < len && !(s[i] == '*' && s[i + 1] == '/'))
				i++;
			/* An unterminated comment runs to the end. */
			i = i + 2 > len ? len : i + 2;
		} else {
			break;
		}
	}
	return i;
}

/* Whether the word at s[i..] is kw (case-insensitive, whole word). */
static bool word_is(const char *s, size_t len, size_t i, const char *kw)
{
	size_t n = strlen(kw);

	if (len - i < n || strncasecmp(s + i, kw, n) != 0)
		return false;
	return i + n == len ||
	       !((s[i + n] >= 'a' && s[i + n] <= 'z') ||
		 (s[i + n] >= 'A' && s[i + n] <= 'Z') || s[i + n] == '_');
}

static size_t next_word(const char *s, size_t len, size_t i)
{
	while (i < len && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' &&
	       s[i] != '\r' && s[i] != '(')
		i++;
	return skip_blank(s, len, i);
}

/* Case-insensitive search for needle (lower case) in s[0..len). Runs on
 * every query in transaction mode: compare the first byte inline before
 * paying for a call. */
static bool contains_ci(const char *s, size_t len, const char *needle)
{
	size_t n = strlen(needle);
	char first = needle[0];

	for (size_t i = 0; n <= len && i <= len - n; i++)
		if ((s[i] | 0x20) == first &&
		    strncasecmp(s + i + 1, needle + 1, n - 1) == 0)
			return true;
	return false;
}

/* One statement starting at s[i..]: does it set session state? */
static bool statement_pins(const char *sql, size_t len, size_t i)
{
	size_t j;

	i = skip_blank(sql, len, i);
	if (word_is(sql, len, i, "SET") || word_is(sql, len, i, "RESET")) {
		j = next_word(sql, len, i);
		return !word_is(sql, len, j, "LOCAL") &&
		       !word_is(sql, len, j, "TRANSACTION");
	}
	if (word_is(sql, len, i, "LISTEN") || word_is(sql, len, i, "PREPARE") ||
	    word_is(sql, len, i, "LOAD"))
		return true;
	if (word_is(sql, len, i, "CREATE")) {
		j = next_word(sql, len, i);
		return word_is(sql, len, j, "TEMP") ||
		       word_is(sql, len, j, "TEMPORARY");
	}
	return false;
}

/*
 * Whether SQL text leaves state on the server connection that the next
 * transaction's client must not inherit, or that this client needs again:
 * session SET (not SET LOCAL / SET TRANSACTION) in any statement of the
 * text, LISTEN, PREPARE, temporary tables, LOAD, cursors WITH HOLD,
 * set_config() and session-level advisory locks (the _xact_ variants
 * end with the transaction). A heuristic that errs towards pinning: a
 * pinned client only costs pooling efficiency, a missed one leaks state.
 * Statements are split at every ';', even one inside a string literal,
 * for the same reason.
 */
bool pg_sql_pins(const char *sql, size_t len)
{
	const char *semi;
	size_t i = 0;

	if (contains_ci(sql, len, "set_config") ||
	    contains_ci(sql, len, "advisory_lock") ||
	    (contains_ci(sql, len, "declare") &&
	     contains_ci(sql, len, "with hold")))
		return true;
	for (;;) {
		if (statement_pins(sql, len, i))
			return true;
		semi = memchr(sql + i, ';', len - i);
		if (!semi)
			return false;
		i = (size_t)(semi - sql) + 1;
	}
}
