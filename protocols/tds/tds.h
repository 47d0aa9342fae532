/*
 * tds.h - TDS 7.x wire codec (SQL Server, Azure SQL): pure functions over
 * bytes.
 *
 * Packets and messages (framing, re-framing into another packet size as a
 * stream), PRELOGIN, LOGIN7 (both directions), ALL_HEADERS, the tokens a
 * proxy writes for its own login reply, and an incremental token-stream
 * scanner that finds what a pooling proxy must know in a server's reply
 * (ENVCHANGE, LOGINACK, ERROR, DONE, ...) while skipping result sets of any
 * size without buffering them.
 *
 * No I/O and no allocation: parsed fields point into the caller's buffer
 * (or, for the scanner, into the scanner), writers write into the caller's
 * buffer and return 0 when it is too small. Every length read from the wire
 * is checked against what is there and against the protocol's maximum.
 * Facts come from [MS-TDS] and from what real clients send.
 *
 * Not here: what to do with the messages (ops.c), TLS, sockets.
 */
#ifndef TP_TDS_H
#define TP_TDS_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "protocols/protocol.h"

/* ---- packets ---- */

/* Packet types (header byte 0). */
enum {
	TDS_PKT_SQLBATCH = 0x01,
	TDS_PKT_PRETDS7_LOGIN = 0x02,
	TDS_PKT_RPC = 0x03,
	TDS_PKT_REPLY = 0x04, /* tabular result: every server message */
	TDS_PKT_ATTENTION = 0x06,
	TDS_PKT_BULK = 0x07,
	TDS_PKT_FEDAUTH_TOKEN = 0x08,
	TDS_PKT_TRANSMGR = 0x0E,
	TDS_PKT_LOGIN7 = 0x10,
	TDS_PKT_SSPI = 0x11,
	TDS_PKT_PRELOGIN = 0x12, /* also carries TLS handshake records */
};

/* Packet status bits (header byte 1). */
#define TDS_ST_EOM		  0x01 /* last packet of a message */
#define TDS_ST_IGNORE		  0x02 /* with EOM: drop this message */
#define TDS_ST_RESETCONN	  0x08 /* first packet of a request only */
#define TDS_ST_RESETCONN_SKIPTRAN 0x10

#define TDS_HDR		   8u
#define TDS_MIN_PACKET	   512u
#define TDS_MAX_PACKET	   32767u /* largest negotiable packet size */
#define TDS_DEFAULT_PACKET 4096u  /* until LOGIN7 negotiates another */

typedef struct tds_header {
	uint8_t type;
	uint8_t status;
	uint16_t length; /* header included, big-endian on the wire */
	uint16_t spid;	 /* big-endian on the wire */
	uint8_t packet_id;
	uint8_t window;
} tds_header_t;

/* 0, TP_EAGAIN (fewer than 8 bytes) or TP_EPROTO (length < 8). */
int tds_header_parse(const uint8_t *buf, size_t len,
		     tds_header_t *h) TP_MUST_CHECK;
void tds_header_put(uint8_t out[8], const tds_header_t *h);

/* The engine's frame(): the next packet's length (a packet is the unit
 * forwarded; messages span packets until EOM). 0, TP_EAGAIN, TP_EPROTO. */
int tds_frame(const uint8_t *buf, size_t len, size_t *pkt_len) TP_MUST_CHECK;

/*
 * A whole message at buf: packets of one type up to and including the one
 * with EOM. On 0, *msg_len is its size on the wire and *payload_len the
 * sum of its packets' payloads. TP_EAGAIN while incomplete, TP_EPROTO when
 * the type changes inside the message or a packet claims more than
 * TDS_MAX_PACKET bytes, TP_ETOOBIG when the payload would exceed
 * max_payload (both checked as soon as the header is in, not at EOM).
 */
int tds_msg_frame(const uint8_t *buf, size_t len, size_t max_payload,
		  size_t *msg_len, size_t *payload_len) TP_MUST_CHECK;
/* Copies the payloads of a message that tds_msg_frame() accepted; returns
 * the payload length, or 0 if cap is too small. */
size_t tds_msg_payload(const uint8_t *msg, size_t msg_len, uint8_t *out,
		       size_t cap);
/* An attention packet: type 0x06, header only, EOM. */
bool tds_is_attention(const uint8_t *buf, size_t len);

/*
 * Whole messages as packets of a given size: payload into out as packets
 * of at most size bytes (header included), the first carrying
 * first_status bits, the last EOM. Returns bytes written, or 0 if cap is
 * too small or size is out of range. For the small messages we originate.
 */
size_t tds_packetize(uint8_t *out, size_t cap, uint8_t type,
		     uint8_t first_status, uint16_t spid, size_t size,
		     const uint8_t *payload, size_t len);

/* ---- streaming re-framing ---- */

/* Where packed bytes go: header and payload pieces in wire order. */
typedef void (*tds_emit_fn)(void *arg, const void *buf, size_t len);

/*
 * Packs a payload stream into packets of exactly `size` bytes (all but
 * the last of a message). A full packet is held back until more payload
 * arrives or the message ends, because only then is it known whether it
 * is the last (EOM). Payload that fills whole packets while nothing is
 * buffered goes straight from the caller's buffer to emit(), uncopied.
 * buf is the caller's holding area of size - 8 bytes.
 */
typedef struct tds_packer {
	uint8_t *buf;
	size_t size; /* packet size, header included */
	size_t fill; /* payload bytes held in buf */
	uint8_t type;
	uint8_t first_status; /* extra status bits of a message's first */
	uint16_t spid;
	uint8_t next_id; /* packet id of the next packet */
	bool started;	 /* a packet of this message was emitted */
	bool open;	 /* a message is being packed */
} tds_packer_t;

/* TP_EINVAL unless 9 <= size <= 65535 (what a header can say); keeping
 * to the negotiable 512..32767 is the caller's business. */
int tds_packer_init(tds_packer_t *p, uint8_t *buf, size_t size, uint8_t type,
		    uint16_t spid) TP_MUST_CHECK;
/* Starts a new message of this type; first_status is or'ed into its
 * first packet's status (RESETCONNECTION). */
void tds_packer_begin(tds_packer_t *p, uint8_t type, uint8_t first_status);
void tds_packer_put(tds_packer_t *p, const void *data, size_t len,
		    tds_emit_fn emit, void *arg);
/* Ends the message: the last packet gets EOM | last_status (IGNORE). */
void tds_packer_end(tds_packer_t *p, uint8_t last_status, tds_emit_fn emit,
		    void *arg);

/*
 * Splits a packet stream into payload slices, fed chunk by chunk. Returns
 * TDS_UNPACK_DATA with a slice (*data, *dlen, pointing into in), or'ed
 * with TDS_UNPACK_EOM when that slice ends a message; TDS_UNPACK_EOM alone
 * (no slice) when a header-only packet ends one (attention); 0 when all
 * of in was used; TP_EPROTO on a bad header or a type change inside a
 * message (and stays failed). *used is what was consumed either way. cur
 * is the header of the packet being read; first_status the status of the
 * current message's first packet (RESETCONNECTION bits).
 */
#define TDS_UNPACK_DATA 1
#define TDS_UNPACK_EOM	2

typedef struct tds_unpacker {
	uint8_t hdr[TDS_HDR];
	uint8_t hdr_have;
	size_t left; /* payload bytes of cur still to come */
	tds_header_t cur;
	uint8_t first_status;
	bool in_msg;	/* a message is open (no EOM yet) */
	bool in_packet; /* cur's header is complete */
	bool failed;
} tds_unpacker_t;

void tds_unpacker_init(tds_unpacker_t *u);
int tds_unpack(tds_unpacker_t *u, const uint8_t *in, size_t len, size_t *used,
	       const uint8_t **data, size_t *dlen) TP_MUST_CHECK;

/* Re-frames a packet stream into packets of the packer's size: every
 * message keeps its type, its first packet's RESETCONNECTION bits and its
 * last packet's IGNORE bit. Consumes all of in; returns the number of
 * messages completed, or TP_EPROTO. */
int tds_reframe(tds_unpacker_t *u, tds_packer_t *p, const uint8_t *in,
		size_t len, tds_emit_fn emit, void *arg) TP_MUST_CHECK;

/* ---- PRELOGIN ---- */

enum {
	TDS_PL_VERSION = 0x00,
	TDS_PL_ENCRYPTION = 0x01,
	TDS_PL_INSTOPT = 0x02,
	TDS_PL_THREADID = 0x03,
	TDS_PL_MARS = 0x04,
	TDS_PL_TRACEID = 0x05,
	TDS_PL_FEDAUTHREQUIRED = 0x06,
	TDS_PL_NONCEOPT = 0x07,
	TDS_PL_NOPTS, /* options we know; others are skipped */
	TDS_PL_TERMINATOR = 0xFF,
};

/* ENCRYPTION values. CLIENT_CERT is a flag or'ed into OFF, ON or REQ. */
enum {
	TDS_ENCRYPT_OFF = 0x00, /* available, off: only LOGIN7 encrypted */
	TDS_ENCRYPT_ON = 0x01,
	TDS_ENCRYPT_NOT_SUP = 0x02,
	TDS_ENCRYPT_REQ = 0x03,
	TDS_ENCRYPT_STRICT = 0x04, /* TDS 8: TLS came first */
	TDS_ENCRYPT_CLIENT_CERT = 0x80,
};

/* Option data by token; opt[i] NULL when absent. Parsed options point
 * into the payload; for building, into the caller's memory. */
typedef struct tds_prelogin {
	const uint8_t *opt[TDS_PL_NOPTS];
	uint16_t len[TDS_PL_NOPTS];
} tds_prelogin_t;

/* Lengths the known options must have (THREADID may be empty: servers
 * send it so), checked by the parser and the builder. */
#define TDS_PL_VERSION_LEN 6
#define TDS_PL_TRACEID_LEN 36
#define TDS_PL_NONCE_LEN   32

/* A PRELOGIN payload (after the packet header). TP_EPROTO on a missing
 * terminator, an option outside the payload or overlapping the option
 * table, a duplicate, or a known option of the wrong length. */
int tds_prelogin_parse(const uint8_t *p, size_t len,
		       tds_prelogin_t *out) TP_MUST_CHECK;
/* Writes the options present, in token order. */
size_t tds_prelogin_build(uint8_t *out, size_t cap, const tds_prelogin_t *pl);
/* A one-byte option's value, or dflt when absent. */
int tds_prelogin_byte(const tds_prelogin_t *pl, int opt, int dflt);
void tds_prelogin_set(tds_prelogin_t *pl, int opt, const uint8_t *data,
		      uint16_t len);
/* Whether a PRELOGIN payload is a TLS record rather than options. */
bool tds_prelogin_is_tls(const uint8_t *p, size_t len);

/* ---- LOGIN7 ---- */

#define TDS_VER_71 0x71000001u
#define TDS_VER_72 0x72090002u
#define TDS_VER_73 0x730B0003u
#define TDS_VER_74 0x74000004u

#define TDS_LOGIN7_FIXED 94u
/* LOGIN7 with a FEDAUTH token spans packets; tokens are several KB. */
#define TDS_LOGIN7_MAX (128u * 1024u)

/* OptionFlags and TypeFlags bits. */
#define TDS_OF1_USE_DB	      0x20
#define TDS_OF1_INIT_DB_FATAL 0x40
#define TDS_OF1_SET_LANG      0x80
#define TDS_OF2_INIT_LANG     0x01
#define TDS_OF2_ODBC	      0x02
#define TDS_OF2_INT_SECURITY  0x80
#define TDS_TF_READONLY	      0x20
#define TDS_OF3_CHANGE_PW     0x01
#define TDS_OF3_UNKNOWN_COLL  0x08
#define TDS_OF3_EXTENSION     0x10

/* Feature extension ids. */
enum {
	TDS_FEAT_SESSIONRECOVERY = 0x01,
	TDS_FEAT_FEDAUTH = 0x02,
	TDS_FEAT_COLUMNENCRYPTION = 0x04,
	TDS_FEAT_GLOBALTRANSACTIONS = 0x05,
	TDS_FEAT_AZURESQLSUPPORT = 0x08,
	TDS_FEAT_DATACLASSIFICATION = 0x09,
	TDS_FEAT_UTF8_SUPPORT = 0x0A,
	TDS_FEAT_AZURESQLDNSCACHING = 0x0B,
	TDS_FEAT_JSONSUPPORT = 0x0D,
	TDS_FEAT_VECTORSUPPORT = 0x0E,
	TDS_FEAT_ENHANCEDROUTING = 0x0F,
	TDS_FEAT_TERMINATOR = 0xFF,
};

/* FEDAUTH options byte: library << 1 | echo of FEDAUTHREQUIRED. */
#define TDS_FEDAUTH_LIB_SECURITYTOKEN 0x01
#define TDS_FEDAUTH_LIB_MSAL	      0x02

/* A string field: UTF-16LE bytes inside the message (password still
 * obfuscated). len 0 for an absent field. */
typedef struct tds_str {
	const uint8_t *p;
	size_t len;
} tds_str_t;

typedef struct tds_feature {
	uint8_t id;
	const uint8_t *data;
	size_t len;
} tds_feature_t;

typedef struct tds_login7 {
	uint32_t length;
	uint32_t tds_version; /* TDS_VER_74, ... */
	uint32_t packet_size;
	uint32_t client_prog_ver;
	uint32_t client_pid;
	uint32_t connection_id;
	uint8_t flags1, flags2, type_flags, flags3;
	int32_t timezone;
	uint32_t lcid;
	uint8_t client_id[6];
	tds_str_t host, user, password, app, server, library, language,
	    database, attach_db, change_password;
	tds_str_t sspi; /* bytes, not UTF-16 */
	/* FeatureExt options, terminator excluded (fExtension only) */
	const uint8_t *features;
	size_t features_len;
} tds_login7_t;

/*
 * A LOGIN7 payload (all packets' payloads joined). Checks the fixed part,
 * every offset/length pair against the record (with the spec's limits:
 * 128 characters, 260 for the attach file), and the feature block up to
 * its terminator. TP_EPROTO on anything malformed.
 */
int tds_login7_parse(const uint8_t *p, size_t len,
		     tds_login7_t *out) TP_MUST_CHECK;
/* Walks a feature block: 1 with *f set, 0 at the end, TP_EPROTO. */
int tds_feature_next(const uint8_t *block, size_t len, size_t *pos,
		     tds_feature_t *f) TP_MUST_CHECK;
/* Finds a feature of the login by id: true with *f set. */
bool tds_login7_feature(const tds_login7_t *l, uint8_t id, tds_feature_t *f);
/* A string field as UTF-8 (NUL-terminated in out): 0, TP_ETOOBIG when
 * out is too small, TP_EPROTO for invalid UTF-16 or a NUL inside. */
int tds_login7_string(const tds_str_t *s, char *out, size_t cap) TP_MUST_CHECK;
/* The password, de-obfuscated, as UTF-8 in out (*outlen bytes, plus a
 * NUL). The caller wipes out after use. Same errors as above. */
int tds_login7_password(const tds_login7_t *l, char *out, size_t cap,
			size_t *outlen) TP_MUST_CHECK;

/* Password bytes on the wire: obfuscate swaps the nibbles of each byte
 * and XORs 0xA5; deobfuscate XORs 0xA5 and then swaps. In place. */
void tds_password_obfuscate(uint8_t *buf, size_t n);
void tds_password_deobfuscate(uint8_t *buf, size_t n);

/* What tokenpool sends upstream. Strings are UTF-8 (NULL means empty). */
typedef struct tds_login7_req {
	uint32_t tds_version; /* 0: TDS_VER_74 */
	uint32_t packet_size; /* 0: TDS_DEFAULT_PACKET */
	uint32_t client_prog_ver;
	uint32_t client_pid;
	uint32_t lcid; /* 0: 0x0409 */
	bool read_only_intent;
	const char *host, *user, *password, *app, *server, *library, *language,
	    *database;
	/* FEDAUTH SECURITYTOKEN: the access token (a JWT, ASCII), sent as
	 * UTF-16LE; NULL for SQL authentication with user/password. */
	const char *token;
	size_t token_len;
	bool fedauth_echo;    /* the server's FEDAUTHREQUIRED was 1 */
	const uint8_t *nonce; /* the server's NONCEOPT (32 bytes) or NULL */
	bool utf8_support;    /* ask for UTF8_SUPPORT */
} tds_login7_req_t;

/* An upper bound of what tds_login7_build() writes for r. */
size_t tds_login7_bound(const tds_login7_req_t *r);
/* Writes the LOGIN7 payload (no packet header): OptionFlags as ODBC-style
 * clients set them (USE_DB, INIT_DB_FATAL, SET_LANG; INIT_LANG_FATAL,
 * ODBC), fExtension when a feature is asked for. Returns its length, or 0
 * when cap is too small, a string is invalid UTF-8, or a field is over
 * the spec's 128-character limit. The caller wipes out (it holds the
 * obfuscated password or the token). */
size_t tds_login7_build(uint8_t *out, size_t cap, const tds_login7_req_t *r);

/* ---- ALL_HEADERS (SQLBatch, RPC, TransMgrReq payloads) ---- */

#define TDS_AH_QUERY_NOTIFY 0x0001
#define TDS_AH_TXN	    0x0002
#define TDS_AH_TRACE	    0x0003
#define TDS_AH_TXN_LEN	    22u /* TotalLength + one descriptor header */

typedef struct tds_all_headers {
	size_t total; /* bytes they take; the request body follows */
	bool has_txn;
	uint8_t txn[8];	      /* transaction descriptor (0 = none) */
	uint32_t outstanding; /* outstanding request count */
	size_t txn_offset;    /* where the descriptor sits in the payload */
	bool has_notify, has_trace;
} tds_all_headers_t;

/* TP_EAGAIN when the headers run past len (they are in the first packet
 * of a request, so give at least that), TP_EPROTO when malformed. */
int tds_all_headers_parse(const uint8_t *p, size_t len,
			  tds_all_headers_t *h) TP_MUST_CHECK;
/* ALL_HEADERS with one transaction descriptor header. */
size_t tds_all_headers_build(uint8_t *out, size_t cap, const uint8_t txn[8],
			     uint32_t outstanding);

/* ---- UTF-16 ---- */

/* UTF-16LE to UTF-8, NUL-terminated. Trailing U+0000 code units are
 * dropped (servers pad names with them); one inside is TP_EPROTO, as are
 * an odd byte count and unpaired surrogates. TP_ETOOBIG if out is small. */
int tds_utf16_to_utf8(const uint8_t *in, size_t nbytes, char *out, size_t cap,
		      size_t *outlen) TP_MUST_CHECK;
/* UTF-8 to UTF-16LE; returns bytes written (0 for empty input), or -1 on
 * invalid UTF-8 or when cap is too small. *units gets the code units. */
long tds_utf8_to_utf16(const char *in, size_t len, uint8_t *out, size_t cap,
		       size_t *units);

/* ---- tokens ---- */

enum {
	TDS_TOK_TVP_ROW = 0x01,
	TDS_TOK_OFFSET = 0x78,
	TDS_TOK_RETURNSTATUS = 0x79,
	TDS_TOK_COLMETADATA = 0x81,
	TDS_TOK_ALTMETADATA = 0x88,
	TDS_TOK_DATACLASSIFICATION = 0xA3,
	TDS_TOK_TABNAME = 0xA4,
	TDS_TOK_COLINFO = 0xA5,
	TDS_TOK_ORDER = 0xA9,
	TDS_TOK_ERROR = 0xAA,
	TDS_TOK_INFO = 0xAB,
	TDS_TOK_RETURNVALUE = 0xAC,
	TDS_TOK_LOGINACK = 0xAD,
	TDS_TOK_FEATUREEXTACK = 0xAE,
	TDS_TOK_ROW = 0xD1,
	TDS_TOK_NBCROW = 0xD2,
	TDS_TOK_ALTROW = 0xD3,
	TDS_TOK_ENVCHANGE = 0xE3,
	TDS_TOK_SESSIONSTATE = 0xE4,
	TDS_TOK_SSPI = 0xED,
	TDS_TOK_FEDAUTHINFO = 0xEE,
	TDS_TOK_DONE = 0xFD,
	TDS_TOK_DONEPROC = 0xFE,
	TDS_TOK_DONEINPROC = 0xFF,
};

/* ENVCHANGE types. */
enum {
	TDS_ENV_DATABASE = 1,
	TDS_ENV_LANGUAGE = 2,
	TDS_ENV_CHARSET = 3,
	TDS_ENV_PACKETSIZE = 4,
	TDS_ENV_SORTLOCALE = 5,
	TDS_ENV_SORTFLAGS = 6,
	TDS_ENV_COLLATION = 7,
	TDS_ENV_BEGINTRAN = 8,
	TDS_ENV_COMMITTRAN = 9,
	TDS_ENV_ROLLBACKTRAN = 10,
	TDS_ENV_ENLISTDTC = 11,
	TDS_ENV_DEFECTTRAN = 12,
	TDS_ENV_MIRRORPARTNER = 13,
	TDS_ENV_PROMOTETRAN = 15,
	TDS_ENV_TRANMGRADDR = 16,
	TDS_ENV_TRANENDED = 17,
	TDS_ENV_RESETACK = 18,
	TDS_ENV_USERINSTANCE = 19,
	TDS_ENV_ROUTING = 20,
	TDS_ENV_ENHANCEDROUTING = 21,
};

/* DONE status bits. */
#define TDS_DONE_MORE	  0x0001
#define TDS_DONE_ERROR	  0x0002
#define TDS_DONE_INXACT	  0x0004
#define TDS_DONE_COUNT	  0x0010
#define TDS_DONE_ATTN	  0x0020
#define TDS_DONE_SRVERROR 0x0100

#define TDS_DONE_LEN 13u /* token + status + curcmd + u64 row count */

/* ---- writers: bytes written, or 0 when cap is too small ---- */

/* ENVCHANGE with B_VARCHAR values (database, language, packet size, ...);
 * strings are UTF-8, NULL means empty. */
size_t tds_put_envchange(uint8_t *out, size_t cap, uint8_t type,
			 const char *newv, const char *oldv);
/* ENVCHANGE with B_VARBYTE values (collation, transactions, reset ack). */
size_t tds_put_envchange_bytes(uint8_t *out, size_t cap, uint8_t type,
			       const uint8_t *newv, size_t nlen,
			       const uint8_t *oldv, size_t olen);
/* ENVCHANGE 20: TCP routing to host:port. */
size_t tds_put_envchange_routing(uint8_t *out, size_t cap, uint16_t port,
				 const char *host);
/* ERROR (0xAA) or INFO (0xAB). */
size_t tds_put_message(uint8_t *out, size_t cap, uint8_t token, int32_t number,
		       uint8_t state, uint8_t cls, const char *msg,
		       const char *server, const char *proc, int32_t line);
/* LOGINACK: interface 1 (T-SQL), tds_version as the server negotiated. */
size_t tds_put_loginack(uint8_t *out, size_t cap, uint8_t interface,
			uint32_t tds_version, const char *prog_name,
			const uint8_t prog_version[4]);
/* FEATUREEXTACK with n features and the terminator. */
size_t tds_put_featureextack(uint8_t *out, size_t cap, const tds_feature_t *f,
			     size_t n);
/* DONE, DONEPROC or DONEINPROC. */
size_t tds_put_done(uint8_t *out, size_t cap, uint8_t token, uint16_t status,
		    uint16_t curcmd, uint64_t rows);

/* ---- the reply scanner ---- */

/*
 * Fed a server's reply payload (packet headers already removed) in chunks
 * of any size, it walks the token stream, reports the tokens a proxy acts
 * on as events and skips the rest, result sets included: COLMETADATA is
 * decoded just enough to know how to skip each ROW / NBCROW value (fixed
 * types, byte/ushort/long lengths, PLP chunks, TEXT/IMAGE text pointers,
 * sql_variant, XML, UDT, the TDS 7.3 date and time types). Memory is the
 * struct itself (a few KB: one byte per column), whatever the reply size.
 *
 * Assumes TDS 7.2 or later (what tokenpool negotiates): 8-byte DONE row
 * counts, 4-byte ERROR line numbers and COLMETADATA user types. Not
 * supported (TP_EPROTO): ALTMETADATA/ALTROW (COMPUTE BY, gone since SQL
 * Server 2012), column encryption, DATACLASSIFICATION, JSON and vector
 * types (each needs a feature tokenpool never asks for), ENVCHANGE 15.
 */
enum tds_event_kind {
	TDS_EV_NONE = 0,
	TDS_EV_ENVCHANGE,
	TDS_EV_ERROR,
	TDS_EV_INFO,
	TDS_EV_LOGINACK,
	TDS_EV_FEATUREEXTACK, /* one event per acknowledged feature */
	TDS_EV_DONE,	      /* DONE, DONEPROC or DONEINPROC */
	TDS_EV_SESSIONSTATE,
};

#define TDS_SCAN_CAP 1024u /* bytes of a token body kept for an event */
#define TDS_MAX_COLS 4096u /* SQL Server's limit on columns in a result */
#define TDS_TXN_LEN  8u

/* What one event carries. Pointers point into the scanner and stay valid
 * until the next tds_scan_feed(). Strings are UTF-16LE. */
typedef struct tds_event {
	int kind;
	uint8_t token;
	bool truncated; /* the body was longer than TDS_SCAN_CAP */
	/* ENVCHANGE: raw new and old values (B_VARCHAR / B_VARBYTE data);
	 * routing (20, 21): port, host and (21) database */
	uint8_t env_type;
	const uint8_t *env_new, *env_old;
	size_t env_new_len, env_old_len;
	uint16_t route_port;
	const uint8_t *route_host, *route_db;
	size_t route_host_len, route_db_len;
	/* ERROR, INFO */
	int32_t number;
	uint8_t state, cls;
	const uint8_t *msg;
	size_t msg_len;
	int32_t line;
	/* LOGINACK */
	uint8_t interface;
	uint32_t tds_version;
	const uint8_t *prog_name;
	size_t prog_name_len;
	uint8_t prog_version[4];
	/* FEATUREEXTACK */
	uint8_t feature_id;
	const uint8_t *feature_data;
	size_t feature_len;
	/* DONE* */
	uint16_t status, curcmd;
	uint64_t rows;
	/* SESSIONSTATE */
	uint32_t seqno;
	bool recoverable;
} tds_event_t;

typedef struct tds_scan {
	uint8_t st;	/* state (codec_tokens.c) */
	uint8_t token;	/* token being read */
	uint8_t target; /* where gathered bytes go */
	uint8_t ctx;	/* TYPE_INFO for a column or a return value */
	bool nbc;	/* the row being read is an NBCROW */
	bool md_valid;	/* a COLMETADATA was seen */
	bool failed;
	size_t gwant, ghave; /* bytes to gather, gathered */
	uint64_t skip;	     /* bytes to skip before the next step */
	uint64_t body_left;  /* of a captured token beyond the capture */
	uint8_t num[16];     /* small fields */
	uint16_t ncols, col;
	uint16_t parts;	 /* table name parts still to skip */
	uint8_t ti_type; /* TYPE_INFO's type byte */
	uint8_t feat_id; /* FEATUREEXTACK feature being read */
	uint8_t vkind;	 /* kind of the value being skipped */
	uint8_t strq[6]; /* name strings still to skip */
	uint8_t strq_n, strq_i;
	uint8_t cap[TDS_SCAN_CAP];
	size_t cap_len;
	uint8_t kind[TDS_MAX_COLS];
	uint8_t bitmap[TDS_MAX_COLS / 8];
	/* transaction state from ENVCHANGE 8, 9, 10, 11, 12, 17 */
	bool in_txn;
	uint8_t txn[TDS_TXN_LEN];
	tds_event_t ev;
} tds_scan_t;

void tds_scan_init(tds_scan_t *s);
/*
 * Consumes up to len bytes and stops after each event. Returns a
 * TDS_EV_* kind (> 0) with s->ev filled, 0 when all of buf was consumed
 * without an event, or TP_EPROTO / TP_ETOOBIG (and stays failed). *used
 * is what was consumed.
 */
int tds_scan_feed(tds_scan_t *s, const uint8_t *buf, size_t len,
		  size_t *used) TP_MUST_CHECK;
/* Between tokens: where a reply message must end. */
bool tds_scan_idle(const tds_scan_t *s);
/* A DONE event that ends a request: DONE or DONEPROC without MORE. */
bool tds_done_final(const tds_event_t *ev);

/* ---- session state in requests (codec_sql.c) ---- */

/*
 * What a request leaves on the session, judged the way a pooler must:
 * conservatively, from the text, without a T-SQL parser. The tokenizer
 * knows comments, strings, [quoted] names and nothing of grammar beyond
 * SET statements.
 *
 * A batch's leading SET statements of options that can be replayed on
 * another server (ANSI_NULLS, NOCOUNT, TEXTSIZE, LANGUAGE, TRANSACTION
 * ISOLATION LEVEL, ...) come out as normalized lines ("set nocount on\n")
 * in sets; what follows them pins when it leaves state a pooled server
 * connection cannot move: a SET of a session option, CONTEXT_INFO, a
 * #temp table, a cursor, an application role, session context.
 */
#define TDS_SETS_MAX 4096u /* bytes of replayable SET lines per client */

typedef struct tds_sql_verdict {
	bool pins;
	size_t sets_len; /* bytes written to sets (NUL not counted) */
} tds_sql_verdict_t;

/* Batch text (UTF-16LE, may be cut anywhere). TP_ETOOBIG when the SET
 * lines do not fit in cap (the caller pins instead). */
int tds_sql_classify(const uint8_t *text, size_t len, char *sets, size_t cap,
		     tds_sql_verdict_t *v) TP_MUST_CHECK;
/* Whether text run by sp_executesql or another procedure leaves state
 * behind: only what outlives the call (CONTEXT_INFO, session context, an
 * application role, a ##global table, a global cursor). */
bool tds_sql_rpc_pins(const uint8_t *text, size_t len);
/* An RPC request's payload (ALL_HEADERS onwards, possibly the first
 * packet only): whether it pins (prepared statements and cursors live on
 * one server; sp_executesql text as above). */
bool tds_rpc_pins(const uint8_t *payload, size_t len);
/*
 * Merges SET lines into a list of them (both NUL-terminated), a later
 * line for an option replacing the earlier one and moving to the end, so
 * replaying the list in order leaves the same values. 0, or TP_ETOOBIG
 * when the result would not fit in cap (list unchanged).
 */
int tds_sets_merge(char *list, size_t cap, const char *lines) TP_MUST_CHECK;

/* ---- the engine's ops (ops.c) ---- */

extern const tp_protocol_t tp_protocol_tds;

#endif
