/*
 * internal.h - what the files of protocols/tds/ share: byte helpers for
 * the codec files, and the per-connection state of the ops files
 * (client.c drives a client's login, server.c an upstream login and the
 * batches tokenpool sends itself, ops.c forwarding and the ops table).
 * Not a public interface: only protocols/tds/ includes it.
 */
#ifndef TP_TDS_INTERNAL_H
#define TP_TDS_INTERNAL_H

#include <stdint.h>

#include "protocols/tds/tds.h"

static inline uint16_t tds_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t tds_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static inline uint64_t tds_le64(const uint8_t *p)
{
	return (uint64_t)tds_le32(p) | ((uint64_t)tds_le32(p + 4) << 32);
}

static inline uint16_t tds_be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t tds_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	       ((uint32_t)p[2] << 8) | p[3];
}

static inline void tds_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void tds_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline void tds_put_le64(uint8_t *p, uint64_t v)
{
	tds_put_le32(p, (uint32_t)v);
	tds_put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline void tds_put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void tds_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* ---- ops state ---- */

/* Bounds on login-phase messages: a PRELOGIN options message, one TLS
 * flight wrapped in PRELOGIN packets. LOGIN7 is TDS_LOGIN7_MAX. */
#define TDS_PRELOGIN_MAX  4096u
#define TDS_HANDSHAKE_MAX (64u * 1024u)
#define TDS_NAME_MAX	  (128u * 3u + 1u) /* 128 UTF-16 units as UTF-8 */

enum tds_phase {
	TDSC_PRELOGIN, /* the client's PRELOGIN next */
	TDSC_TLS,      /* TLS handshake inside PRELOGIN packets */
	TDSC_TLS_RAW,  /* TDS 8: TLS handshake first, in raw records */
	TDSC_LOGIN,    /* LOGIN7 next */
	TDSC_DONE,
	TDSS_PRELOGIN, /* our PRELOGIN sent: the server's answer next */
	TDSS_TLS,      /* TLS handshake inside PRELOGIN packets */
	TDSS_TLS_DONE, /* handshake over: LOGIN7 goes out in TLS */
	TDSS_LOGIN,    /* LOGIN7 sent: the login reply next */
	TDSS_READY,    /* forwarding */
	TDSS_BATCH,    /* our own batch (reset, sync, probe): its reply next */
};

/*
 * What clients of a pool are told about its servers, from the first
 * server's login reply (server_params; the engine copies the bytes).
 * Strings are UTF-8.
 */
typedef struct tds_params {
	uint32_t tds_version;
	uint32_t packet_size;
	uint8_t collation[5];
	uint8_t collation_len;
	bool utf8; /* the server acknowledged UTF8_SUPPORT */
	uint8_t prog_version[4];
	char database[TDS_NAME_MAX];
	char language[TDS_NAME_MAX];
	char prog_name[TDS_NAME_MAX];
} tds_params_t;

/* A client connection: kept small, idle clients are many. */
typedef struct tds_client {
	uint8_t phase;
	bool utf8;   /* asked for UTF8_SUPPORT */
	bool in_msg; /* forwarding: a request's first packet has passed */
	bool pin;    /* its server reported state that cannot move */
	uint32_t packet_size; /* negotiated: what it asked for, clamped */
	char *user;	      /* during login, for error messages */
	char *sets;	      /* replayable SET lines it ran (NULL: none), see
				 tds_sets_merge() */
} tds_client_t;

/* Re-framing one direction of a client/server pair whose packet sizes
 * differ (allocated on first need, kept for the next client). */
typedef struct tds_reframer {
	bool on;
	tds_unpacker_t u;
	tds_packer_t p;
	uint8_t *buf; /* the packer's holding area */
	size_t cap;
} tds_reframer_t;

/* A server connection. */
typedef struct tds_server {
	uint8_t phase;
	uint8_t fedauth_echo; /* the server's FEDAUTHREQUIRED */
	bool has_nonce;
	bool loginack;
	bool attn;     /* attention forwarded, its DONE with ATTN due */
	bool msg_attn; /* the reply message being read holds it */
	bool msg_pin;  /* ... reports state that cannot move */
	bool dirty;    /* holds such state: only a full reset cleans it */
	bool failed;   /* the reply stream could not be followed */
	bool req_open; /* a client's request is partly sent (no EOM yet) */
	uint8_t req_type;
	uint8_t due; /* reply messages due to our own batch (+ attention) */
	uint8_t nonce[TDS_PL_NONCE_LEN];
	uint16_t route_port; /* ENVCHANGE 20 in the login reply */
	char *route_host;
	char *host;	  /* where a redirect sent us (LOGIN7 ServerName) */
	char *sets;	  /* SET lines run since the last reset (NULL: none) */
	char errors[512]; /* the server's ERROR tokens during login */
	tds_params_t params;
	tds_reframer_t up, down; /* client to server, server to client */
	tds_scan_t scan;
} tds_server_t;

static inline tds_client_t *tds_client(tp_conn_t *c)
{
	return tp_conn_state(c);
}

static inline tds_server_t *tds_server(tp_conn_t *s)
{
	return tp_conn_state(s);
}

/* The packet size a client negotiated at login (LOGIN7's request, 0
 * meaning the default, clamped to what TDS allows). */
static inline uint32_t tds_packet_size(uint32_t asked)
{
	if (asked == 0)
		return TDS_DEFAULT_PACKET;
	if (asked < TDS_MIN_PACKET)
		return TDS_MIN_PACKET;
	return asked > TDS_MAX_PACKET ? TDS_MAX_PACKET : asked;
}

/* Packs payload into packets of size bytes (type, first packet's status
 * bits, EOM on the last) and queues them on c. Wipes its copy: LOGIN7
 * carries a password or token. */
void tds_send(tp_conn_t *c, uint8_t type, uint8_t status, size_t size,
	      const uint8_t *payload, size_t len);
/* Whatever the TLS stream has to send, as one PRELOGIN message. */
void tds_send_flight(tp_conn_t *c);

/* client.c */
tp_step_t tds_client_start(tp_conn_t *c);
tp_step_t tds_client_read(tp_conn_t *c, const uint8_t *buf, size_t len,
			  size_t *consumed);
void tds_client_welcome(tp_conn_t *c, const uint8_t *params, size_t len);
void tds_client_error(tp_conn_t *c, int err, const char *msg);
void tds_client_cancel(tp_conn_t *c);

/* server.c */
tp_step_t tds_server_start(tp_conn_t *s, const tp_login_t *login);
tp_step_t tds_server_tls_done(tp_conn_t *s, const tp_login_t *login);
tp_step_t tds_server_read(tp_conn_t *s, const tp_login_t *login,
			  const uint8_t *buf, size_t len, size_t *consumed);
void tds_server_params(tp_conn_t *s, const uint8_t **params, size_t *len);
tp_step_t tds_server_reset(tp_conn_t *s, bool full);
tp_step_t tds_server_sync(tp_conn_t *s, tp_conn_t *c);
tp_step_t tds_server_probe(tp_conn_t *s);
/* Sets up re-framing between server s and the client c it was just
 * linked to; false when out of memory. */
bool tds_link(tp_conn_t *s, tp_conn_t *c);
/* One event of a server's reply while forwarding or reading our own
 * batch's reply: attention and state bookkeeping. */
void tds_server_event(tp_conn_t *s, const tds_event_t *ev);

#endif
