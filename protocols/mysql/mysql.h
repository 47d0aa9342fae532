/*
 * mysql.h - MySQL / MariaDB client-server protocol codec: pure functions
 * over bytes.
 *
 * Framing (3-byte length, sequence id, 0xFFFFFF continuations),
 * length-encoded integers and strings, the login packets of both sides
 * (HandshakeV10, SSLRequest, HandshakeResponse41, AuthSwitchRequest,
 * AuthMoreData), OK / ERR / EOF, session-state tracking data, command
 * classification, a response tracker that tells from a server's packet
 * stream when a command is fully answered and whether the connection is
 * outside a transaction, and a SQL heuristic for statements that leave
 * session state behind. No I/O, no allocation: parsed strings are
 * (pointer, length) pairs into the caller's buffer and are not
 * NUL-terminated. Every length read from the wire is checked against what
 * is there.
 *
 * Parsers take a packet's payload (after the 4-byte header) unless they
 * say otherwise; writers take the sequence id and write whole packets,
 * header included, returning the bytes written or 0 when cap is too small.
 *
 * Not here: what to do with the packets (ops.c), sockets, TLS, hashing.
 */
#ifndef TP_MYSQL_H
#define TP_MYSQL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "protocols/protocol.h"

/* ---- framing ---- */
#define MY_HDR	       4u
#define MY_MAX_PAYLOAD 0xffffffu /* a payload this long continues */
/* Login-phase packets are buffered whole; tokens travel in them, so leave
 * room (several KB and growing) but bound it. */
#define MY_MAX_LOGIN (256u * 1024u)
/* Scramble (nonce) sent in our greetings and switch requests. */
#define MY_NONCE_LEN 20u
/* Longest auth-plugin data a greeting can carry (8 + up to 247). */
#define MY_NONCE_MAX 256u

/* ---- capability flags (low 32 bits; MariaDB's extended ones above) ---- */
#define MY_CAP_LONG_PASSWORD   0x00000001ull /* MariaDB: CLIENT_MYSQL */
#define MY_CAP_FOUND_ROWS      0x00000002ull
#define MY_CAP_LONG_FLAG       0x00000004ull
#define MY_CAP_CONNECT_WITH_DB 0x00000008ull
#define MY_CAP_NO_SCHEMA       0x00000010ull
#define MY_CAP_COMPRESS	       0x00000020ull
#define MY_CAP_ODBC	       0x00000040ull
#define MY_CAP_LOCAL_FILES     0x00000080ull
#define MY_CAP_IGNORE_SPACE    0x00000100ull
#define MY_CAP_PROTOCOL_41     0x00000200ull
#define MY_CAP_INTERACTIVE     0x00000400ull
#define MY_CAP_SSL	       0x00000800ull
#define MY_CAP_IGNORE_SIGPIPE  0x00001000ull
#define MY_CAP_TRANSACTIONS    0x00002000ull
#define MY_CAP_RESERVED	       0x00004000ull
#define MY_CAP_SECURE_CONN     0x00008000ull
#define MY_CAP_MULTI_STMTS     0x00010000ull
#define MY_CAP_MULTI_RESULTS   0x00020000ull
#define MY_CAP_PS_MULTI_RES    0x00040000ull
#define MY_CAP_PLUGIN_AUTH     0x00080000ull
#define MY_CAP_CONNECT_ATTRS   0x00100000ull
#define MY_CAP_AUTH_LENENC     0x00200000ull
#define MY_CAP_EXPIRED_PASSWD  0x00400000ull
#define MY_CAP_SESSION_TRACK   0x00800000ull
#define MY_CAP_DEPRECATE_EOF   0x01000000ull
#define MY_CAP_OPTIONAL_META   0x02000000ull
#define MY_CAP_ZSTD	       0x04000000ull
#define MY_CAP_QUERY_ATTRS     0x08000000ull
#define MY_CAP_MFA	       0x10000000ull
/* MariaDB extended capabilities (sent in reserved bytes), shifted up. */
#define MY_CAP_MARIADB_PROGRESS	  (1ull << 32)
#define MY_CAP_MARIADB_COM_MULTI  (1ull << 33)
#define MY_CAP_MARIADB_BULK	  (1ull << 34)
#define MY_CAP_MARIADB_EXT_META	  (1ull << 35)
#define MY_CAP_MARIADB_CACHE_META (1ull << 36)

/* ---- server status flags ---- */
#define MY_ST_IN_TRANS	    0x0001u
#define MY_ST_AUTOCOMMIT    0x0002u
#define MY_ST_MORE_RESULTS  0x0008u
#define MY_ST_CURSOR_EXISTS 0x0040u
#define MY_ST_LAST_ROW_SENT 0x0080u
#define MY_ST_IN_TRANS_RO   0x2000u
#define MY_ST_STATE_CHANGED 0x4000u

/* ---- commands ---- */
enum {
	MY_COM_SLEEP = 0x00,
	MY_COM_QUIT = 0x01,
	MY_COM_INIT_DB = 0x02,
	MY_COM_QUERY = 0x03,
	MY_COM_FIELD_LIST = 0x04,
	MY_COM_CREATE_DB = 0x05,
	MY_COM_DROP_DB = 0x06,
	MY_COM_REFRESH = 0x07,
	MY_COM_SHUTDOWN = 0x08,
	MY_COM_STATISTICS = 0x09,
	MY_COM_PROCESS_INFO = 0x0a,
	MY_COM_CONNECT = 0x0b,
	MY_COM_PROCESS_KILL = 0x0c,
	MY_COM_DEBUG = 0x0d,
	MY_COM_PING = 0x0e,
	MY_COM_TIME = 0x0f,
	MY_COM_DELAYED_INSERT = 0x10,
	MY_COM_CHANGE_USER = 0x11,
	MY_COM_BINLOG_DUMP = 0x12,
	MY_COM_TABLE_DUMP = 0x13,
	MY_COM_CONNECT_OUT = 0x14,
	MY_COM_REGISTER_SLAVE = 0x15,
	MY_COM_STMT_PREPARE = 0x16,
	MY_COM_STMT_EXECUTE = 0x17,
	MY_COM_STMT_SEND_LONG_DATA = 0x18,
	MY_COM_STMT_CLOSE = 0x19,
	MY_COM_STMT_RESET = 0x1a,
	MY_COM_SET_OPTION = 0x1b,
	MY_COM_STMT_FETCH = 0x1c,
	MY_COM_DAEMON = 0x1d,
	MY_COM_BINLOG_DUMP_GTID = 0x1e,
	MY_COM_RESET_CONNECTION = 0x1f,
	MY_COM_CLONE = 0x20,
	MY_COM_STMT_BULK_EXECUTE = 0xfa, /* MariaDB */
};

/* COM_SET_OPTION values */
#define MY_OPTION_MULTI_STMTS_ON  0
#define MY_OPTION_MULTI_STMTS_OFF 1

/* What answers a command. */
typedef enum {
	MY_REPLY_NONE,	  /* nothing (STMT_CLOSE, SEND_LONG_DATA) */
	MY_REPLY_CLOSE,	  /* COM_QUIT: the server just hangs up */
	MY_REPLY_OK,	  /* one OK, EOF or ERR */
	MY_REPLY_RESULT,  /* OK | ERR | LOCAL INFILE | result sets, chained */
	MY_REPLY_FIELDS,  /* COM_FIELD_LIST: column definitions, EOF */
	MY_REPLY_PREPARE, /* COM_STMT_PREPARE_OK, params, columns */
	MY_REPLY_FETCH,	  /* COM_STMT_FETCH: rows, EOF */
	MY_REPLY_TEXT,	  /* COM_STATISTICS: one plain text packet */
	MY_REPLY_STREAM,  /* binlog dump and friends: never ends */
} my_reply_t;

my_reply_t my_command_reply(uint8_t cmd);

/* ---- strings ---- */
typedef struct my_str {
	const uint8_t *p; /* NULL: absent */
	size_t len;
} my_str_t;

/* Whether s equals the C string lit (same length, same bytes). */
bool my_str_eq(my_str_t s, const char *lit);

/* ---- packets ---- */
/* Length of the next packet (header included) in *msg_len, or TP_EAGAIN.
 * Waits for the payload's first byte too, so a classifier always sees it. */
int my_frame(const uint8_t *buf, size_t len, size_t *msg_len) TP_MUST_CHECK;
size_t my_payload_len(const uint8_t hdr[4]);
void my_put_header(uint8_t out[4], size_t payload_len, uint8_t seq);

/* ---- length-encoded integers and strings ---- */
/* Reads one at *pos (advanced) inside [0, len). TP_EPROTO for a
 * truncated value or the 0xFB (NULL) / 0xFF markers. */
int my_get_lenenc(const uint8_t *p, size_t len, size_t *pos,
		  uint64_t *v) TP_MUST_CHECK;
int my_get_lenenc_str(const uint8_t *p, size_t len, size_t *pos,
		      my_str_t *s) TP_MUST_CHECK;
/* Bytes my_put_lenenc() writes for v. */
size_t my_lenenc_size(uint64_t v);
/* Returns bytes written or 0 if cap is too small. */
size_t my_put_lenenc(uint8_t *out, size_t cap, uint64_t v);

/* ---- HandshakeV10 (the server's greeting) ---- */
typedef struct my_greeting {
	uint8_t protocol; /* 10 */
	my_str_t version;
	uint32_t thread_id;
	uint8_t nonce[MY_NONCE_MAX]; /* auth plugin data, trailing NUL cut */
	size_t nonce_len;
	uint64_t caps; /* MariaDB extended ones in the high half */
	uint8_t charset;
	uint16_t status;
	my_str_t plugin; /* absent without PLUGIN_AUTH */
} my_greeting_t;

int my_parse_greeting(const uint8_t *pl, size_t len,
		      my_greeting_t *out) TP_MUST_CHECK;
/* nonce is MY_NONCE_LEN bytes without NUL; caps' high half goes into the
 * reserved bytes (MariaDB style) only when LONG_PASSWORD is clear. */
size_t my_write_greeting(uint8_t *out, size_t cap, uint8_t seq,
			 const char *version, uint32_t thread_id,
			 const uint8_t *nonce, uint64_t caps, uint8_t charset,
			 uint16_t status, const char *plugin);

/* ---- HandshakeResponse41 and SSLRequest ---- */
typedef struct my_login {
	uint64_t caps; /* as sent; MariaDB extended ones in the high half */
	uint32_t max_packet;
	uint8_t charset;
	bool ssl_request; /* only the 32-byte prefix: TLS comes next */
	my_str_t user;
	my_str_t auth;
	my_str_t database; /* absent without CONNECT_WITH_DB */
	my_str_t plugin;   /* absent without PLUGIN_AUTH */
	my_str_t attrs;	   /* raw key/value block, absent without attrs */
} my_login_t;

/* offered: the capabilities of the greeting this answers; the layout
 * follows caps & offered (what both sides agreed on). Fields that a
 * client announces but leaves out at the end of the packet are absent.
 * TP_EPROTO on anything malformed or a pre-4.1 client. */
int my_parse_login(const uint8_t *pl, size_t len, uint64_t offered,
		   my_login_t *out) TP_MUST_CHECK;
/* Writes in->caps' layout; ssl_request writes the 32-byte SSLRequest. */
size_t my_write_login(uint8_t *out, size_t cap, uint8_t seq,
		      const my_login_t *in);

/* ---- authentication exchange ---- */
/* 0xFE plugin NUL data: data is the rest of the payload. */
int my_parse_auth_switch(const uint8_t *pl, size_t len, my_str_t *plugin,
			 my_str_t *data) TP_MUST_CHECK;
/* data is written as given (a nonce is usually followed by a NUL). */
size_t my_write_auth_switch(uint8_t *out, size_t cap, uint8_t seq,
			    const char *plugin, const uint8_t *data,
			    size_t len);
/* 0x01 data (AuthMoreData). */
size_t my_write_more_data(uint8_t *out, size_t cap, uint8_t seq,
			  const uint8_t *data, size_t len);
/* A packet whose payload is exactly data. */
size_t my_write_packet(uint8_t *out, size_t cap, uint8_t seq,
		       const uint8_t *data, size_t len);

/* ---- OK, ERR, EOF ---- */
typedef struct my_ok {
	uint64_t affected_rows;
	uint64_t last_insert_id;
	uint16_t status;
	uint16_t warnings;
	my_str_t info;
	my_str_t session; /* session state changes, without its length */
} my_ok_t;

/* Header 0x00, or 0xFE (an OK in place of EOF with DEPRECATE_EOF).
 * caps: PROTOCOL_41 and SESSION_TRACK decide the layout. */
int my_parse_ok(const uint8_t *pl, size_t len, uint64_t caps,
		my_ok_t *out) TP_MUST_CHECK;
size_t my_write_ok(uint8_t *out, size_t cap, uint8_t seq, uint64_t caps,
		   const my_ok_t *ok);

typedef struct my_err {
	uint16_t code;
	char sqlstate[6]; /* "" when the packet carries none */
	my_str_t message;
} my_err_t;

int my_parse_err(const uint8_t *pl, size_t len, my_err_t *out) TP_MUST_CHECK;
/* sqlstate must be 5 characters; message is cut to fit 512 bytes. */
size_t my_write_err(uint8_t *out, size_t cap, uint8_t seq, uint16_t code,
		    const char *sqlstate, const char *message);

bool my_is_eof(const uint8_t *pl, size_t len);
int my_parse_eof(const uint8_t *pl, size_t len, uint16_t *warnings,
		 uint16_t *status) TP_MUST_CHECK;
size_t my_write_eof(uint8_t *out, size_t cap, uint8_t seq, uint16_t warnings,
		    uint16_t status);

/* Whether status says "outside a transaction, autocommit on, nothing
 * more to come": the point where a server can serve another client. */
bool my_status_idle(uint16_t status);

/* ---- session state tracking (the session block of an OK) ---- */
enum {
	MY_SESSION_SYSVARS = 0,
	MY_SESSION_SCHEMA = 1,
	MY_SESSION_STATE_CHANGE = 2,
	MY_SESSION_GTIDS = 3,
	MY_SESSION_TRX_CHARACTERISTICS = 4,
	MY_SESSION_TRX_STATE = 5,
};

/* One entry at *pos (advanced): type and its data. 0, TP_EAGAIN at the
 * end, TP_EPROTO when malformed. */
int my_session_next(my_str_t block, size_t *pos, uint8_t *type,
		    my_str_t *data) TP_MUST_CHECK;

typedef struct my_session_info {
	bool state_changed;  /* STATE_CHANGE "1" */
	bool schema_changed; /* SCHEMA entry; schema holds the name */
	my_str_t schema;
	bool sysvars_changed; /* any SYSVARS entry */
} my_session_info_t;

int my_parse_session(my_str_t block, my_session_info_t *out) TP_MUST_CHECK;

/* ---- COM_CHANGE_USER ---- */
typedef struct my_change_user {
	my_str_t user;
	my_str_t auth;
	my_str_t database;
	uint16_t charset; /* 0: not sent */
	my_str_t plugin;
	my_str_t attrs;
} my_change_user_t;

/* pl starts with the command byte; caps are the connection's. */
int my_parse_change_user(const uint8_t *pl, size_t len, uint64_t caps,
			 my_change_user_t *out) TP_MUST_CHECK;

/* ---- SQL text ---- */
/* `KILL [QUERY | CONNECTION] <id>`: 0 and the fields, or TP_EINVAL when
 * the text is not such a statement. */
int my_parse_kill(const char *sql, size_t len, bool *query_only,
		  uint64_t *id) TP_MUST_CHECK;
/* Whether SQL text leaves session state on the server (SET, user
 * variables, temporary tables, LOCK TABLES, GET_LOCK, PREPARE, USE, ...).
 * Errs towards pinning. */
bool my_sql_pins(const char *sql, size_t len);

/* ---- response tracking ----
 * One tracker per server connection. Each command that expects an answer
 * is pushed (with a tag the caller picks: ops.c uses it to swallow or
 * replace answers); each server packet is fed in order and the tracker
 * says where in the answer it is. Packets are fed whole or as a prefix
 * (have >= 1 payload byte unless the payload is empty); continuation
 * packets of a 16 MB+ message are recognised and passed over.
 */
#define MY_TRACK_QUEUE 32

/* Events from my_track_server() / my_track_client(). */
enum {
	MY_EV_DONE = 1 << 0,	  /* the oldest pending command is answered */
	MY_EV_IDLE = 1 << 1,	  /* DONE, nothing pending, status idle */
	MY_EV_OK = 1 << 2,	  /* the packet is an OK packet */
	MY_EV_ERR = 1 << 3,	  /* the packet is an ERR packet */
	MY_EV_EOF = 1 << 4,	  /* the packet is an EOF packet */
	MY_EV_INFILE = 1 << 5,	  /* server asks the client for a file */
	MY_EV_PIN = 1 << 6,	  /* session state changed (tracking data) */
	MY_EV_SCHEMA = 1 << 7,	  /* current schema changed */
	MY_EV_BROKEN = 1 << 8,	  /* unexpected packet: tracking is lost */
	MY_EV_CONT = 1 << 9,	  /* a continuation packet */
	MY_EV_DATA = 1 << 10,	  /* client: LOCAL INFILE data */
	MY_EV_DATA_END = 1 << 11, /* client: the empty packet ending it */
};

typedef struct my_track {
	uint64_t caps;		       /* negotiated with the server */
	uint16_t status;	       /* last status flags seen */
	uint8_t queue[MY_TRACK_QUEUE]; /* my_reply_t per pending command */
	uint8_t tags[MY_TRACK_QUEUE];
	uint8_t head, count;
	uint8_t phase;	  /* where in the oldest answer */
	uint32_t left;	  /* definitions left in this phase */
	uint16_t columns; /* prepare: columns after the params */
	bool cont;	  /* server: next packet continues this one */
	bool client_cont; /* client: likewise */
	bool infile;	  /* the client is sending a LOCAL INFILE */
	bool broken;
} my_track_t;

void my_track_init(my_track_t *t, uint64_t caps, uint16_t status);
/* A command was sent. TP_ETOOBIG when too many are pending (the tracker
 * is then broken). MY_REPLY_NONE and MY_REPLY_CLOSE are not queued. */
int my_track_push(my_track_t *t, my_reply_t reply, uint8_t tag) TP_MUST_CHECK;
/* Whether commands are pending (an answer is outstanding). */
bool my_track_busy(const my_track_t *t);
/* One server packet (header included; have bytes of pkt_len present).
 * Returns MY_EV_* flags; *tag is the tag of the command it answers. */
unsigned my_track_server(my_track_t *t, const uint8_t *pkt, size_t have,
			 size_t pkt_len, uint8_t *tag);
/* One client packet: MY_EV_CONT for a continuation, MY_EV_DATA /
 * MY_EV_DATA_END during a LOCAL INFILE, else 0 (a command). */
unsigned my_track_client(my_track_t *t, const uint8_t *pkt, size_t have,
			 size_t pkt_len);

/* The operations table. */
extern const tp_protocol_t tp_protocol_mysql;

#endif
