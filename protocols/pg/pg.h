/*
 * pg.h - PostgreSQL v3 wire codec: pure functions over bytes.
 *
 * Framing, parsing of the few messages a pooling proxy must understand
 * (startup packets, authentication requests, errors, key data, ready for
 * query, SASL) and writers for the messages it originates. No I/O, no
 * allocation: parsed strings point into the caller's buffer. Every length
 * read from the wire is checked against what is there and a maximum.
 *
 * Not here: what to do with the messages (see ops.c).
 */
#ifndef TP_PG_H
#define TP_PG_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "protocols/protocol.h"

#define PG_CODE_SSL    80877103u
#define PG_CODE_GSSENC 80877104u
#define PG_CODE_CANCEL 80877102u
#define PG_PROTO_V3    196608u

/* PostgreSQL itself refuses startup packets over 10000 bytes. */
#define PG_MAX_STARTUP 10000u
/* Login messages (password = token, SASL) are buffered whole: tokens are
 * several KB and growing, so leave plenty of room, but bound it. */
#define PG_MAX_LOGIN_MSG (256u * 1024u)
/* Forwarded messages are streamed; the protocol allows up to 1 GB. */
#define PG_MAX_MSG 0x40000000u

/* Max parameters kept from a startup packet. */
#define PG_MAX_PARAMS 32

typedef struct pg_startup {
	uint32_t code; /* PG_PROTO_V3, PG_CODE_SSL, PG_CODE_GSSENC, ... */
	const char *user;
	const char *database;
	/* other parameters (application_name, client_encoding, ...) */
	size_t nparams;
	const char *keys[PG_MAX_PARAMS];
	const char *values[PG_MAX_PARAMS];
	uint8_t cancel_key[8]; /* CancelRequest: pid, secret */
} pg_startup_t;

/* First packet (no type byte): int32 length including itself. */
int pg_startup_frame(const uint8_t *buf, size_t len,
		     size_t *msg_len) TP_MUST_CHECK;
/* Parses a whole startup-phase packet. TP_EPROTO on anything malformed. */
int pg_startup_parse(const uint8_t *buf, size_t len,
		     pg_startup_t *out) TP_MUST_CHECK;

/* Regular message: type byte + int32 length. */
int pg_frame(const uint8_t *buf, size_t len, size_t *msg_len) TP_MUST_CHECK;

/* 'R': auth code and the bytes after it. */
int pg_parse_auth(const uint8_t *msg, size_t len, uint32_t *code,
		  const uint8_t **data, size_t *data_len) TP_MUST_CHECK;

/* 'E' or 'N': SQLSTATE and message fields (NUL-terminated in msg, or
 * NULL when absent). */
typedef struct pg_error {
	const char *severity;
	const char *sqlstate;
	const char *message;
} pg_error_t;
int pg_parse_error(const uint8_t *msg, size_t len,
		   pg_error_t *out) TP_MUST_CHECK;

/* 'p' as SASLInitialResponse: mechanism and initial data. */
int pg_parse_sasl_initial(const uint8_t *msg, size_t len, const char **mech,
			  const uint8_t **data, size_t *data_len) TP_MUST_CHECK;
/* 'p' as SASLResponse or PasswordMessage: the body. */
int pg_parse_body(const uint8_t *msg, size_t len, char type,
		  const uint8_t **data, size_t *data_len) TP_MUST_CHECK;
/* 'Z': transaction status 'I', 'T' or 'E'. */
int pg_parse_ready(const uint8_t *msg, size_t len, char *status) TP_MUST_CHECK;

/* 'S' ParameterStatus: name and value (NUL-terminated inside msg). */
int pg_parse_param(const uint8_t *msg, size_t len, const char **key,
		   const char **value) TP_MUST_CHECK;

/* ---- parameters that follow a client (params.c) ---- */
#define PG_NVARS   6
#define PG_VAR_MAX 256
typedef struct pg_vars {
	char *val[PG_NVARS]; /* NULL: not set / no preference */
} pg_vars_t;

/* Index of a tracked parameter (case-insensitive), or -1. */
int pg_var_index(const char *key);
const char *pg_var_name(int i);
/* Records key=value if key is tracked; 0, TP_ETOOBIG or TP_ENOMEM. */
int pg_vars_set(pg_vars_t *v, const char *key, const char *value);
void pg_vars_free(pg_vars_t *v);
/* "SET a TO 'x';SET b TO 'y';" for each parameter whose wanted value
 * (want's, or dflt's where want has none) have lacks or has differently;
 * NUL-terminated. Returns its length: 0 when in sync (or out of room). */
size_t pg_vars_sync_sql(const pg_vars_t *want, const pg_vars_t *dflt,
			const pg_vars_t *have, char *out, size_t cap);

/* Whether a SQL text starts with a statement that leaves session state on
 * the server (SET, LISTEN, PREPARE, temp tables, ...). */
bool pg_sql_pins(const char *sql, size_t len);

/* ---- writers: return bytes written, or 0 if cap is too small ---- */
void pg_put_header(uint8_t out[5], char type, size_t body_len);
size_t pg_write_error(uint8_t *out, size_t cap, const char *severity,
		      const char *sqlstate, const char *message);
size_t pg_write_auth(uint8_t *out, size_t cap, uint32_t code, const void *data,
		     size_t len);
size_t pg_write_ready(uint8_t *out, size_t cap, char status);
size_t pg_write_key_data(uint8_t *out, size_t cap, const uint8_t key[8]);
/* StartupMessage with user, database, and extra key/value pairs. */
size_t pg_write_startup(uint8_t *out, size_t cap, const char *user,
			const char *database, const char *const *keys,
			const char *const *values, size_t n);
size_t pg_write_ssl_request(uint8_t *out, size_t cap);
size_t pg_write_cancel(uint8_t *out, size_t cap, const uint8_t key[8]);
size_t pg_write_query(uint8_t *out, size_t cap, const char *sql);
/* SASLInitialResponse ('p', mechanism, int32 len, data). */
size_t pg_write_sasl_initial(uint8_t *out, size_t cap, const char *mech,
			     const void *data, size_t len);

/* The operations table. */
extern const tp_protocol_t tp_protocol_pg;

#endif
