/*
 * protocol.h - the contract between the engine and a wire protocol.
 *
 * A protocol module drives logins (client side and upstream side) from
 * bytes in to bytes out, tells the engine how long the next message is, and
 * classifies forwarded messages (forward, swallow, close, transaction
 * boundary). It never touches sockets, pools or tokens: the engine hands it
 * a connection handle and the few calls declared at the bottom of this file.
 *
 * Each protocol exports one const struct tp_protocol; the engine looks them
 * up with tp_protocol_get().
 */
#ifndef TP_PROTOCOL_H
#define TP_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "conf/conf.h"
#include "auth/auth.h"

typedef struct tp_conn tp_conn_t; /* owned by the engine */

/* What a login step asks the engine to do next. */
typedef enum {
	TP_STEP_MORE = 0, /* flush output, wait for more input */
	TP_STEP_TLS,	  /* flush output, then run a TLS handshake */
	TP_STEP_DONE,	  /* login finished */
	TP_STEP_CLOSE,	  /* flush output, then close (error sent, cancel) */
	TP_STEP_REDIRECT, /* server: tp_conn_redirect() named where to go;
			     reconnect there and call server_start again */
} tp_step_t;

/* What to do with one forwarded message (flags may be or'ed). */
enum {
	TP_MSG_FORWARD = 0,	 /* pass it to the peer */
	TP_MSG_DROP = 1 << 0,	 /* swallow it */
	TP_MSG_CLOSE = 1 << 1,	 /* client said goodbye: close, don't forward */
	TP_MSG_IDLE = 1 << 2,	 /* server: outside a transaction now */
	TP_MSG_PIN = 1 << 3,	 /* session state set: keep the server */
	TP_MSG_BROKEN = 1 << 4,	 /* server: unusable after this message */
	TP_MSG_REQUEST = 1 << 5, /* client: expects exactly one READY */
	TP_MSG_READY = 1 << 6,	 /* server: one request fully answered */
	TP_MSG_CANCEL = 1 << 7,	 /* client: cancels what its server runs;
				    without a server the engine drops it and
				    calls client_cancel() */
};

/* Everything a client login needs to know about its route. */
typedef struct tp_route {
	const conf_pool_t *pool;
	const conf_client_t *client;	 /* NULL: unknown user */
	const auth_verifier_t *verifier; /* NULL: unknown user */
} tp_route_t;

/* An upstream login request. */
typedef enum {
	TP_LOGIN_NORMAL,
	TP_LOGIN_CANCEL, /* open, send the cancel for cancel_key, close */
} tp_login_kind_t;

typedef struct tp_login {
	tp_login_kind_t kind;
	const conf_pool_t *pool;
	const char *user;
	const char *database;
	const char *secret; /* token or password; not NUL-terminated */
	size_t secret_len;
	bool tls; /* ask the server for TLS (always, unless tls.mode disable) */
	const uint8_t *cancel_key; /* TP_LOGIN_CANCEL: from cancel_key() */
	size_t cancel_key_len;
} tp_login_t;

typedef struct tp_protocol {
	const char *name;
	conf_protocol_t id;

	/* Per-connection protocol state: created at accept/connect, freed
	 * with the connection. */
	void *(*conn_new)(bool client_side);
	void (*conn_free)(void *state);

	/* ---- client side login ---- */
	/* Called once after accept: write a greeting if the protocol has one.
	 */
	tp_step_t (*client_start)(tp_conn_t *c);
	/* Consume login bytes; *consumed set to what was used. Returns a
	 * step; on TP_STEP_DONE tp_conn_route() has been set. */
	tp_step_t (*client_read)(tp_conn_t *c, const uint8_t *buf, size_t len,
				 size_t *consumed);
	/* Client authenticated and a server's greeting is known (params from
	 * server_params()): write the rest of the welcome. */
	void (*client_welcome)(tp_conn_t *c, const uint8_t *params,
			       size_t params_len);

	/* ---- server side login ---- */
	tp_step_t (*server_start)(tp_conn_t *s, const tp_login_t *login);
	tp_step_t (*server_tls_done)(tp_conn_t *s, const tp_login_t *login);
	tp_step_t (*server_read)(tp_conn_t *s, const tp_login_t *login,
				 const uint8_t *buf, size_t len,
				 size_t *consumed);
	/* After a login: what clients of this pool should be told about the
	 * server (PG: ParameterStatus messages). Points into the state. */
	void (*server_params)(tp_conn_t *s, const uint8_t **params,
			      size_t *len);
	/* The real key that cancels what runs on s (PG: pid + secret). */
	size_t (*cancel_key)(tp_conn_t *s, uint8_t *out, size_t cap);
	/* Whether a cancel is a full login (MySQL: log in, KILL QUERY) and
	 * the cancel link needs the secret too, not only the key (PG). */
	bool cancel_needs_login;

	/* ---- forwarding ---- */
	/* Length of the next message: 0 and *msg_len, TP_EAGAIN, or
	 * TP_EPROTO / TP_ETOOBIG. */
	int (*frame)(const uint8_t *buf, size_t len, size_t *msg_len);
	/* Classify a client message; have is min(len available, msg_len).
	 * Pure: the engine may ask twice about the same message. */
	int (*client_msg)(tp_conn_t *c, const uint8_t *msg, size_t have,
			  size_t msg_len);
	int (*server_msg)(tp_conn_t *s, const uint8_t *msg, size_t have,
			  size_t msg_len);

	/* ---- pooling ---- */
	/* Write what makes a server fit for the next client: end an open
	 * transaction, and with full (session mode, pinned clients) drop
	 * all session state. Returns TP_STEP_MORE when replies must be read
	 * through server_read (which returns TP_STEP_DONE when clean), or
	 * TP_STEP_DONE when nothing needed doing. */
	tp_step_t (*server_reset)(tp_conn_t *s, bool full);
	/* A server was just linked to client c: write what makes it match
	 * the client's session settings. TP_STEP_MORE when replies must be
	 * read through server_read first (TP_STEP_DONE when in sync). */
	tp_step_t (*server_sync)(tp_conn_t *s, tp_conn_t *c);
	/* doctor: write a trivial query whose answer server_read consumes,
	 * returning TP_STEP_DONE once it is complete. */
	tp_step_t (*server_probe)(tp_conn_t *s);

	/* ---- errors ---- */
	/* Write a protocol-native error for err (a TP_E* code) with msg. */
	void (*client_error)(tp_conn_t *c, int err, const char *msg);
	/* A TP_MSG_CANCEL message arrived while the client holds no server:
	 * write the answer a server would give (TDS: DONE with ATTN). May be
	 * NULL when the protocol never returns TP_MSG_CANCEL. */
	void (*client_cancel)(tp_conn_t *c);
} tp_protocol_t;

const tp_protocol_t *tp_protocol_get(conf_protocol_t id);

/* ---- what the engine gives a protocol ---- */

/* Append bytes to the connection's output (flushed by the engine). */
void tp_conn_out(tp_conn_t *c, const void *buf, size_t len);
/* The linked connection on the other side, or NULL. */
tp_conn_t *tp_conn_peer(tp_conn_t *c);
/* The protocol's per-connection state. */
void *tp_conn_state(tp_conn_t *c);
/* Connection id for logs. */
uint64_t tp_conn_id(tp_conn_t *c);
/* Whether the connection is encrypted right now. */
bool tp_conn_tls(tp_conn_t *c);
/* Pick the pool for (user, database) on this client's listener. Returns 0,
 * TP_ENODB. route->client and ->verifier are NULL for an unknown user. */
int tp_conn_route(tp_conn_t *c, const char *user, const char *database,
		  tp_route_t *route) TP_MUST_CHECK;
/* The route chosen for this client, or NULL before routing. */
const tp_route_t *tp_conn_get_route(tp_conn_t *c);
/* The route another user of this client's pool would have (a change of
 * user on a logged-in connection): route->client and ->verifier are NULL
 * when the pool has no such user. Changes nothing. */
void tp_conn_route_user(tp_conn_t *c, const char *user, tp_route_t *route);
/* Makes a route from tp_conn_route_user() this client's. */
void tp_conn_set_route(tp_conn_t *c, const tp_route_t *route);
/* The synthetic cancel key given to this client (8 bytes). */
const uint8_t *tp_conn_client_key(tp_conn_t *c);
/* A client asked to cancel whatever the client with this synthetic key
 * runs. false when no client has the key. */
bool tp_conn_cancel(tp_conn_t *c, const uint8_t *key, size_t len);
/* Closes the client with this synthetic key (MySQL `KILL <id>`), after
 * cancelling what its server runs. false when no client has the key. */
bool tp_conn_kill(tp_conn_t *c, const uint8_t *key, size_t len);
/* Record why a login failed (logged; sent to waiting clients). */
void tp_conn_fail(tp_conn_t *c, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Whether client TLS is on offer on this client's listener. */
bool tp_conn_tls_offered(tp_conn_t *c);
/* Whether every pool on the client's listener requires client TLS (a
 * protocol can refuse plaintext before the password is sent). */
bool tp_conn_tls_required(tp_conn_t *c);
/*
 * TLS carried inside the protocol's own packets during the handshake (TDS
 * wraps it in PRELOGIN packets). start_wrapped creates the TLS stream (a
 * server on a client connection with the listener's certificate; a client
 * on a server connection with the pool's verification, checking
 * server_name, NULL meaning server.tls.server_name or server.host), capped
 * at TLS 1.2, and from then on the engine passes socket bytes raw to
 * client_read/server_read and writes tp_conn_out() bytes raw. The protocol
 * unwraps handshake records and hands them to tls_feed (len 0 makes a TLS
 * client write its ClientHello): 0 while the handshake goes on, 1 when it
 * is done, TP_ETLS (reason recorded) or TP_ENOMEM. tls_take gives the
 * handshake bytes to wrap and send. Once done and the last flight is queued
 * with tp_conn_out(), tls_unwrap asks the engine, after the current
 * read call returns, to send what is queued raw, switch the stream to plain
 * TLS records (what follows in the input is ciphertext), and carry on as
 * after TP_STEP_TLS (server_tls_done() on the server side).
 */
int tp_conn_tls_start_wrapped(tp_conn_t *c, const char *server_name);
int tp_conn_tls_feed(tp_conn_t *c, const void *buf, size_t len);
size_t tp_conn_tls_take(tp_conn_t *c, void *buf, size_t cap);
void tp_conn_tls_unwrap(tp_conn_t *c);
/* Server side: where TP_STEP_REDIRECT goes (host is copied). At most 3
 * redirects per login; the TLS name for the new host is that host. */
int tp_conn_redirect(tp_conn_t *s, const char *host, uint16_t port);
/* Log at debug level, with the connection's prefix. */
void tp_conn_debug(tp_conn_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
