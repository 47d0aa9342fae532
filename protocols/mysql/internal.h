/*
 * internal.h - what the MySQL ops files share: per-connection state and
 * the helpers that write packets through the engine.
 *
 * client.c drives a client's login, server.c an upstream login and the
 * command batches tokenpool itself sends (reset, sync, probe, cancel),
 * ops.c forwarding, pooling and the ops table.
 */
#ifndef TP_MYSQL_INTERNAL_H
#define TP_MYSQL_INTERNAL_H

#include "protocols/mysql/mysql.h"

#ifndef TP_VERSION
#define TP_VERSION "0"
#endif

/* The version clients see: MySQL 8 (so no client expects MariaDB's
 * extended capabilities from us), then who we are. */
#define MY_SERVER_VERSION "8.0.36-tokenpool-" TP_VERSION
/* utf8mb4_general_ci: known to MySQL 5.7+, 8 and every MariaDB. */
#define MY_CHARSET_DEFAULT 45
#define MY_PLUGIN_NATIVE   "mysql_native_password"
#define MY_PLUGIN_SHA2	   "caching_sha2_password"
#define MY_PLUGIN_CLEAR	   "mysql_clear_password"
#define MY_PLUGIN_DIALOG   "dialog"

/*
 * What tokenpool offers clients and asks of servers. Only what changes
 * nothing a pooled server connection would have to undo per client:
 * DEPRECATE_EOF, QUERY_ATTRIBUTES, optional metadata, compression and
 * MariaDB's extended capabilities change packet layouts and are never
 * negotiated; FOUND_ROWS, IGNORE_SPACE and INTERACTIVE are fixed per
 * server connection and are left at the server's defaults. The
 * differences that remain between a client and its server are smoothed
 * over by ops.c (SESSION_TRACK in OK packets, MULTI_STATEMENTS through
 * COM_SET_OPTION).
 */
#define MY_CAPS_COMMON                                                     \
	(MY_CAP_LONG_PASSWORD | MY_CAP_LONG_FLAG | MY_CAP_LOCAL_FILES |    \
	 MY_CAP_PROTOCOL_41 | MY_CAP_TRANSACTIONS | MY_CAP_SECURE_CONN |   \
	 MY_CAP_MULTI_STMTS | MY_CAP_MULTI_RESULTS | MY_CAP_PS_MULTI_RES | \
	 MY_CAP_PLUGIN_AUTH | MY_CAP_CONNECT_ATTRS | MY_CAP_AUTH_LENENC |  \
	 MY_CAP_SESSION_TRACK)
#define MY_CAPS_OFFER (MY_CAPS_COMMON | MY_CAP_CONNECT_WITH_DB)

/* Tags of commands in a server's tracker: what to do with the answer. */
enum {
	MY_TAG_PASS = 0, /* the client's: forward */
	MY_TAG_SWALLOW,	 /* ours, sent while forwarding: drop */
	MY_TAG_SUBST,	 /* ours in place of the client's: send sub_err */
	MY_TAG_RESET,	 /* the client's COM_RESET_CONNECTION: forward */
	MY_TAG_MUST,	 /* batch: must succeed or the server is closed */
	MY_TAG_MAY,	 /* batch: may fail */
	MY_TAG_TRACKING, /* batch: SET session_track_state_change */
};

enum my_phase {
	MYC_GREETED,   /* greeting sent: SSLRequest or login next */
	MYC_SWITCHED,  /* AuthSwitchRequest sent: the client's answer next */
	MYC_FULL_AUTH, /* caching_sha2 full auth: the password next */
	MYC_DONE,
	MYS_GREETING, /* the server's greeting next */
	MYS_AUTH,     /* login sent: switch, more data, OK or ERR next */
	MYS_BATCH,    /* our own commands: their answers next */
	MYS_READY,
};

enum my_method { MY_AUTH_NATIVE, MY_AUTH_SHA2 };

typedef struct my_common {
	uint8_t phase;
	uint8_t seq; /* last sequence id of the current exchange */
	bool client;
} my_common_t;

typedef struct my_client {
	my_common_t h;
	uint8_t method;	 /* enum my_method being verified */
	uint8_t charset; /* what the client asked for at login */
	bool multi;	 /* wants MULTI_STATEMENTS */
	bool key_sent;	 /* our RSA public key went out (full auth) */
	bool pinned;	 /* told the engine so: its SQL need not be read */
	uint64_t caps;	 /* the client's capabilities & what we offered */
	uint64_t offered;
	uint8_t nonce[MY_NONCE_LEN];
	char *user; /* during login, for messages; then for change-user */
} my_client_t;

typedef struct my_server {
	my_common_t h;
	uint8_t charset;   /* current collation id; 0 unknown */
	bool multi;	   /* MULTI_STATEMENTS on now */
	bool dirty;	   /* session state changed (server tracking) */
	bool schema_dirty; /* current schema may differ from database */
	bool tracking;	   /* session_track_state_change is on */
	bool cancel;	   /* a cancel link: close after the KILL */
	bool fail_done;	   /* close when the batch is answered */
	char plugin[32];   /* the server's auth plugin in use */
	uint8_t nonce[MY_NONCE_LEN];
	uint32_t thread_id;
	uint64_t server_caps;
	char *database;	   /* what the login asked for ("" none) */
	uint8_t params[2]; /* status after login, for client welcomes */
	my_track_t trk;
	/* the ERR sent instead of an answer tagged MY_TAG_SUBST */
	uint16_t sub_code;
	char sub_state[6];
	char sub_msg[200];
} my_server_t;

static inline my_client_t *my_client(tp_conn_t *c)
{
	return tp_conn_state(c);
}

static inline my_server_t *my_server(tp_conn_t *s)
{
	return tp_conn_state(s);
}

/* ---- client.c ---- */
tp_step_t my_client_start(tp_conn_t *c);
tp_step_t my_client_read(tp_conn_t *c, const uint8_t *buf, size_t len,
			 size_t *consumed);
void my_client_welcome(tp_conn_t *c, const uint8_t *params, size_t len);
void my_client_error(tp_conn_t *c, int err, const char *msg);
/* Writes an ERR to c with sequence id seq. */
void my_send_err(tp_conn_t *c, uint8_t seq, uint16_t code, const char *state,
		 const char *msg);
/* COM_CHANGE_USER's credentials against c's login: 0, TP_EAUTH, or
 * TP_EINVAL when they cannot be checked here (another user). */
int my_client_check_change_user(tp_conn_t *c, const my_change_user_t *cu);

/* ---- server.c ---- */
tp_step_t my_server_start(tp_conn_t *s, const tp_login_t *login);
tp_step_t my_server_tls_done(tp_conn_t *s, const tp_login_t *login);
tp_step_t my_server_read(tp_conn_t *s, const tp_login_t *login,
			 const uint8_t *buf, size_t len, size_t *consumed);
/* Queues one of our own commands (COM_* byte and argument) with tag. */
void my_server_command(tp_conn_t *s, uint8_t cmd, const void *arg, size_t len,
		       uint8_t tag);
/* Queues SET of the session-tracking switch, if the server tracks. */
void my_server_track_on(tp_conn_t *s, uint8_t tag);
/* Queues SET of the character set for collation id cs. */
void my_server_set_charset(tp_conn_t *s, uint8_t cs, uint8_t tag);

#endif
