/*
 * tp.h - the engine: one libuv loop, listeners, connections, pools, the TLS
 * stream and logging.
 *
 * The engine knows nothing of wire protocols: it moves bytes, asks the
 * protocol ops (protocols/protocol.h) what they mean, and keeps the pools.
 * Everything hangs off one tp_t; there are no mutable globals.
 */
#ifndef TP_TP_H
#define TP_TP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include <openssl/ssl.h>

#include "conf/conf.h"
#include "auth/auth.h"
#include "protocols/protocol.h"

/* ---- intrusive doubly linked list ---- */
typedef struct tp_list {
	struct tp_list *prev, *next;
} tp_list_t;

#define tp_container_of(ptr, type, member) \
	((type *)((char *)(ptr)-offsetof(type, member)))

static inline void tp_list_init(tp_list_t *l)
{
	l->prev = l->next = l;
}
static inline bool tp_list_empty(const tp_list_t *l)
{
	return l->next == l;
}
static inline void tp_list_append(tp_list_t *l, tp_list_t *n)
{
	n->prev = l->prev;
	n->next = l;
	l->prev->next = n;
	l->prev = n;
}
static inline void tp_list_remove(tp_list_t *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

/* ---- logging ---- */
typedef enum {
	TP_LOG_DEBUG = CONF_LOG_DEBUG,
	TP_LOG_INFO = CONF_LOG_INFO,
	TP_LOG_WARN = CONF_LOG_WARN,
	TP_LOG_ERROR = CONF_LOG_ERROR
} tp_log_level_t;

void tp_log_setup(conf_log_level_t level, bool json);
bool tp_log_enabled(tp_log_level_t level);
/* conn may be NULL. Never pass a secret to the format. */
void tp_log(tp_log_level_t level, tp_conn_t *conn, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void tp_logv(tp_log_level_t level, tp_conn_t *conn, const char *fmt,
	     va_list ap);

/* ---- TLS stream over memory BIOs ---- */
/*
 * Whoever carries the ciphertext (the socket directly, or a protocol that
 * wraps TLS records in its own packets) feeds what arrives with
 * tp_tls_feed() and sends what tp_tls_pending() reports. Plaintext goes in
 * with tp_tls_write() and comes out of tp_tls_read().
 */
typedef struct tp_tls {
	SSL *ssl;
	BIO *rbio; /* network -> SSL */
	BIO *wbio; /* SSL -> network */
	bool done; /* handshake finished */
	bool client;
} tp_tls_t;

tp_tls_t *tp_tls_new(SSL_CTX *ctx, bool client, const char *server_name);
void tp_tls_free(tp_tls_t *tls);
int tp_tls_feed(tp_tls_t *tls, const void *buf, size_t len) TP_MUST_CHECK;
/* 0 when the handshake is done, TP_EAGAIN while it needs more, TP_ETLS. */
int tp_tls_handshake(tp_tls_t *tls, char *err, size_t errlen) TP_MUST_CHECK;
/* Plaintext out: bytes read (> 0), 0 when nothing is ready, or TP_ETLS /
 * TP_EIO (peer closed). */
int tp_tls_read(tp_tls_t *tls, void *buf, size_t cap) TP_MUST_CHECK;
int tp_tls_write(tp_tls_t *tls, const void *buf, size_t len) TP_MUST_CHECK;
/* Ciphertext waiting to be sent. */
size_t tp_tls_pending(tp_tls_t *tls);
/* Received bytes still inside OpenSSL: ciphertext not yet decrypted, or
 * plaintext of a record not yet read out. */
bool tp_tls_has_input(tp_tls_t *tls);
size_t tp_tls_take(tp_tls_t *tls, void *buf, size_t cap);
const char *tp_tls_version(tp_tls_t *tls);

/* Upstream context for one pool's server.tls settings. */
SSL_CTX *tp_tls_client_ctx(const conf_server_tls_t *tls, char *err,
			   size_t errlen);
/* Local context: configured certificate or a self-signed one. */
SSL_CTX *tp_tls_server_ctx(const conf_client_tls_t *tls, char *err,
			   size_t errlen);

/* ---- connections ---- */
typedef enum {
	TP_SIDE_CLIENT,
	TP_SIDE_SERVER,
} tp_side_t;

#define TP_CONN_STATE_MAP(X)                 \
	X(C_LOGIN, "client login")           \
	X(C_IDLE, "client idle")             \
	X(C_WAITING, "client waiting")       \
	X(C_ACTIVE, "client active")         \
	X(S_CONNECTING, "server connecting") \
	X(S_IDLE, "server idle")             \
	X(S_ACTIVE, "server active")         \
	X(S_RESET, "server resetting")       \
	X(S_CANCEL, "server cancel link")    \
	X(CLOSING, "closing")

typedef enum {
#define TP_STATE_ENUM(name, desc) TP_##name,
	TP_CONN_STATE_MAP(TP_STATE_ENUM)
#undef TP_STATE_ENUM
	    TP_CONN_NSTATES
} tp_conn_state_t;

const char *tp_conn_state_name(tp_conn_state_t st);

/* Buffers come in blocks of this size (larger only for large messages). */
#define TP_BLOCK       (64u * 1024u)
#define TP_BLOCK_CACHE 32

typedef struct tp_buf {
	uint8_t *data;
	size_t len, cap;
	size_t used; /* high-water of len: what is wiped when data goes */
} tp_buf_t;

typedef struct tp_t tp_t;
typedef struct tp_pool tp_pool_t;
typedef struct tp_listener tp_listener_t;

/* ---- probes (doctor) ---- */
typedef enum {
	TP_PROBE_TOKEN,	 /* a token is in hand (token auth only) */
	TP_PROBE_TLS,	 /* the TLS handshake with the server succeeded */
	TP_PROBE_LOGIN,	 /* the server accepted the login */
	TP_PROBE_QUERY,	 /* the trivial query answered: done */
	TP_PROBE_FAILED, /* err and msg say why; the link is closing */
} tp_probe_event_t;

typedef void (*tp_probe_cb)(void *arg, tp_conn_t *s, tp_probe_event_t ev,
			    int err, const char *msg);

/* What only a server connection needs, kept apart so a client (the many
 * idle ones above all) does not carry it. */
typedef struct tp_upstream {
	tp_login_t login;
	char *secret;		/* copy of the token or password during login */
	uint8_t cancel_key[16]; /* TP_LOGIN_CANCEL: the server's real key */
	uv_getaddrinfo_t gai;
	struct addrinfo *addrs, *addr_next; /* resolved, to try in order */
	uv_connect_t connect_req;
	auth_wait_t *token_wait;
	tp_probe_cb probe; /* a doctor's link, not a pooled one */
	void *probe_arg;
	uint32_t generation; /* the pool's server settings it logged in with */
	char *redirect_host; /* TP_STEP_REDIRECT target; NULL: the config's */
	uint16_t redirect_port;
	uint8_t redirects;
} tp_upstream_t;

#define TP_FAIL_MAX 768

struct tp_conn {
	uv_tcp_t tcp;
	/* One deadline at a time (login, wait, connect, close), swept by the
	 * context's tick: cheaper than a libuv timer in every connection. */
	tp_list_t timed_node;
	tp_list_t kick_node; /* in tp->kicks: TLS input left to decrypt */
	uint64_t due_ms;
	void (*due)(tp_conn_t *c);
	tp_t *tp;
	uint64_t id;
	tp_side_t side;
	tp_conn_state_t state;
	tp_list_t node; /* in exactly one list matching state */
	tp_pool_t *pool;
	tp_listener_t *listener; /* clients */
	tp_conn_t *peer;
	const tp_protocol_t *proto;
	void *pstate;
	tp_tls_t *tls;
	bool tls_pending; /* handshake running */
	bool tls_wrapped; /* handshake inside protocol packets (TDS) */
	bool tls_unwrap;  /* switch to plain TLS records after this read */
	tp_buf_t in;	  /* plaintext received, not yet consumed */
	tp_buf_t out;	  /* plaintext to send at the next flush */
	size_t fwd_left;  /* bytes of the current message still to pass */
	int pending;	  /* server: requests sent, replies not finished */
	size_t write_queued;
	bool reading;
	bool reconnecting; /* socket closing to try the next address */
	uint8_t tls_eof;   /* 1: peer sent close_notify, 2: TLS broke */
	bool closing;
	bool close_after_flush;
	bool pinned;	    /* client keeps its server (session state) */
	bool broken;	    /* server: never reuse */
	bool needs_welcome; /* client: send welcome when a server is linked */
	bool syncing;	    /* server: bringing settings in line with client */
	int open_handles;
	tp_route_t route;      /* clients */
	uint8_t client_key[8]; /* clients: synthetic cancel key */
	tp_upstream_t *up;     /* servers only: what a login needs */
	uint64_t created_ms, last_used_ms;
	uint64_t bytes_in, bytes_out; /* on the wire, for the close line */
	int fail_err;
	char *fail_msg; /* why it failed or closes; NULL when nothing failed */
	/* clients: the peer's address, formatted only when a line is logged */
	uint8_t peer_ip[16];
	uint16_t peer_port;
	uint8_t peer_family; /* AF_INET, AF_INET6, or 0 when unknown */
};

/* Calls cb(c) about ms from now (within the tick, 100 ms), unless stopped
 * or re-armed first. One deadline per connection. */
void tp_conn_deadline(tp_conn_t *c, void (*cb)(tp_conn_t *c), uint64_t ms);
void tp_conn_deadline_stop(tp_conn_t *c);
/* The context's tick: fires the deadlines that are due. */
void tp_deadlines_sweep(tp_t *tp);

/* Moves c to a new state and the matching list; the one place that does. */
void tp_conn_set_state(tp_conn_t *c, tp_conn_state_t st);
/* Closes now (if not already closing); reason is logged. Frees in the
 * close callbacks, never inside the caller's stack. */
void tp_conn_close(tp_conn_t *c, const char *reason);
/* Sends a protocol error, then closes after the flush. */
void tp_conn_error_close(tp_conn_t *c, int err, const char *msg);
void tp_conn_flush(tp_conn_t *c);
/* The recorded failure, or dflt when none was recorded. */
const char *tp_conn_reason(tp_conn_t *c, const char *dflt);
void tp_conn_start_read(tp_conn_t *c);
void tp_conn_stop_read(tp_conn_t *c);
tp_conn_t *tp_conn_new(tp_t *tp, tp_side_t side, const tp_protocol_t *proto);
/* Handles whatever is in c->in according to its state. */
void tp_conn_process(tp_conn_t *c);
/* Close callback of a connection's handles; frees after the last. */
void tp_conn_handle_closed(uv_handle_t *h);
/* Drops the first n bytes of a buffer. */
void tp_buf_consume(tp_buf_t *b, size_t n);
/* A TLS handshake on c just finished. */
void tp_conn_tls_ready(tp_conn_t *c);
/* Server side: start the protocol login once TCP is up. */
void tp_server_begin_login(tp_conn_t *s);
/* Decrypts ciphertext into c->in (handshake first if needed). Returns
 * false if c was closed. */
bool tp_conn_tls_input(tp_conn_t *c, const uint8_t *data, size_t n);
/* The same for what is already in c->in (bytes that arrived before TLS
 * started). Returns false if c was closed. */
bool tp_conn_tls_input_pending(tp_conn_t *c);
/* After a wrapped handshake: send what is queued raw, switch to TLS
 * records, decrypt what followed. Returns false if c was closed. */
bool tp_conn_tls_finish_unwrap(tp_conn_t *c);
/* Server side: reconnect to s->up->redirect_host (TP_STEP_REDIRECT). */
void tp_pool_redirect(tp_conn_t *s);
/* The host a server connection dials: a redirect target or the config's. */
const char *tp_server_host(tp_conn_t *s);
/* The name its certificate must match: a redirect target, tls.server_name
 * or the host. */
const char *tp_server_tls_name(tp_conn_t *s);
int tp_server_port(tp_conn_t *s);

/* ---- statistics (metrics, /v1/pools) ---- */

/* Upper bounds in seconds; one more bucket (+Inf) is implied. */
#define TP_HIST_BOUNDS                                                      \
	{                                                                   \
		0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, \
		    10, 30                                                  \
	}
#define TP_HIST_N 13

typedef struct tp_hist {
	uint64_t bucket[TP_HIST_N + 1]; /* not cumulative; last is +Inf */
	uint64_t count;
	double sum;
} tp_hist_t;

void tp_hist_observe(tp_hist_t *h, double seconds);

typedef struct tp_pool_stats {
	uint64_t client_conns; /* clients routed here */
	uint64_t logins_ok, logins_failed;
	uint64_t transactions, queries;
	uint64_t client_in, client_out, server_in, server_out; /* bytes */
	tp_hist_t wait;	   /* client wait for a server */
	tp_hist_t connect; /* server connect + TLS + login */
} tp_pool_stats_t;

/* ---- pools ---- */
struct tp_pool {
	tp_t *tp;
	const conf_pool_t *conf;
	const conf_identity_t *identity;
	const tp_protocol_t *proto;
	SSL_CTX *server_ctx;
	auth_verifier_t *verifiers; /* one per conf->clients[i] */
	uint8_t *welcome;	    /* server parameters for client welcomes */
	size_t welcome_len;
	/* one list per state */
	tp_list_t c_idle, c_waiting, c_active;
	tp_list_t s_connecting, s_idle, s_active, s_reset;
	int count[TP_CONN_NSTATES]; /* connections per state */
	int nclients; /* every client routed here, logins included */
	int last_fail_err;
	char last_fail[768];
	tp_pool_stats_t st;
	/* Bumped when a reload changes the server settings: servers of an
	 * older generation close as they come free. */
	uint32_t generation;
	bool paused;  /* admin pause: clients queue, no server is linked */
	bool removed; /* gone from the config: drains, then is freed */
	bool reached; /* a login with the current settings has worked */
	uint64_t warmup_due_ms; /* next attempt to reach the server */
	uint64_t warmup_backoff_ms;
	auth_wait_t *prefetch; /* the first token, asked for at start */
};

int tp_pool_init(tp_pool_t *pool, tp_t *tp, const conf_t *conf,
		 const conf_pool_t *pc, char *err, size_t errlen) TP_MUST_CHECK;
void tp_pool_destroy(tp_pool_t *pool);
/* The client needs a server: link one now or queue it. */
void tp_pool_acquire(tp_pool_t *pool, tp_conn_t *client);
/* The client is done with its server (boundary or disconnect). */
void tp_pool_release(tp_pool_t *pool, tp_conn_t *client);
/* A server has finished login or reset and can serve. */
void tp_pool_server_ready(tp_pool_t *pool, tp_conn_t *server);
/* A server login failed: tell the waiting clients if nobody can serve
 * them. */
void tp_pool_server_failed(tp_pool_t *pool, int err, const char *msg);
/* A client left: unlink, count, free its place. */
void tp_pool_client_gone(tp_pool_t *pool, tp_conn_t *client);
void tp_pool_server_gone(tp_pool_t *pool, tp_conn_t *server,
			 const char *reason);
/* Periodic: idle_timeout, lifetime, min_idle. */
void tp_pool_janitor(tp_pool_t *pool);
/* Asks for the pool's token ahead of the first client (logs the outcome). */
void tp_pool_prefetch(tp_pool_t *pool);
/* Opens one server connection so the pool proves it can reach its server
 * before a client asks (readiness); retried with backoff until it works. */
void tp_pool_warmup(tp_pool_t *pool);
/* Who the pool logs in as, for logs and metrics: the client id (or
 * other selector) of its identity, the source, or "password". */
const char *tp_pool_identity_label(tp_pool_t *pool);
/* Whether the pool has a valid token (token auth) and has reached its
 * server; otherwise writes why to reason. */
bool tp_pool_ready(tp_pool_t *pool, char *reason, size_t len);
/* Admin pause / resume: a paused pool links no client to a server; its
 * clients queue (bounded by wait_timeout) until it resumes. */
void tp_pool_pause(tp_pool_t *pool);
void tp_pool_resume(tp_pool_t *pool);
/* Reload: the pool now has new settings; servers of the old ones close as
 * they come free when server_changed. */
void tp_pool_reconfigure(tp_pool_t *pool, const conf_t *conf,
			 const conf_pool_t *pc, auth_verifier_t *verifiers,
			 SSL_CTX *server_ctx, bool server_changed);
/* Whether a removed pool has nothing left and can be freed. */
bool tp_pool_drained(tp_pool_t *pool);
/* Closes every idle server (shutdown, reload of changed settings). */
void tp_pool_close_idle(tp_pool_t *pool, const char *why);
/* Opens one server link that reports each step to cb and runs the
 * protocol's trivial query instead of serving clients (doctor). */
int tp_pool_probe(tp_pool_t *pool, tp_probe_cb cb, void *arg) TP_MUST_CHECK;
/* Opens a connection to send a cancel for what server runs. */
void tp_pool_cancel(tp_pool_t *pool, tp_conn_t *server);

/* ---- listeners ---- */
struct tp_listener {
	uv_tcp_t tcp;
	tp_t *tp;
	char *addr; /* "host:port" */
	const tp_protocol_t *proto;
	tp_pool_t **pools; /* pools on this address, config order */
	size_t npools;
	SSL_CTX *client_ctx; /* NULL when client TLS is disabled */
	bool closing;
};

/* ---- the HTTP endpoint (http.c): probes, metrics, admin ---- */
typedef struct tp_http tp_http_t;
int tp_http_start(tp_t *tp, const char *listen, char *err,
		  size_t errlen) TP_MUST_CHECK;
/* Closes the listener and every open request. */
void tp_http_stop(tp_t *tp);
/* Prometheus text of every family (metrics.c); malloc'ed, NULL on OOM. */
char *tp_metrics_render(tp_t *tp, size_t *len);
/* JSON for /v1/pools and /v1/tokens; malloc'ed. */
char *tp_pools_json(tp_t *tp);
char *tp_tokens_json(tp_t *tp);
/* Whether /readyz says 200; otherwise a JSON array of reasons in *why
 * (malloc'ed). */
bool tp_ready(tp_t *tp, char **why);
/* Counts a client-visible error by kind (TP_E*). */
void tp_count_error(tp_t *tp, int err);

/* Reload reads the config again from where the first one came from. */
typedef int (*tp_conf_loader)(void *arg, conf_t **out, char *err,
			      size_t errlen);

/* ---- the context ---- */
struct tp_t {
	uv_loop_t *loop;
	conf_t *conf;
	conf_t *conf_initial; /* the caller's; freed by the caller */
	/* Earlier snapshots (and verifier arrays) stay until exit: logins in
	 * flight and draining pools still point into them. */
	struct tp_retired {
		void *p;
		size_t cleanse; /* bytes to wipe first (0: a conf_t) */
	} * retired;
	size_t nretired;
	tp_conf_loader loader;
	void *loader_arg;
	auth_tokens_t *tokens;
	tp_pool_t **pools; /* each allocated alone: reload adds and frees */
	size_t npools;
	tp_listener_t **listeners;
	size_t nlisteners;
	tp_http_t *http;
	uint64_t errors[TP_ERR_LAST_ - TP_ERR_FIRST_];
	uint64_t reloads_ok, reloads_failed;
	uv_signal_t sighup;
	tp_list_t logins;  /* clients before routing */
	tp_list_t cancels; /* links sending a cancel upstream */
	uv_signal_t sigterm, sigint;
	uv_timer_t janitor;
	uv_timer_t tick;	 /* sweeps connection deadlines */
	tp_list_t timed;	 /* connections with a deadline armed */
	tp_list_t kicks;	 /* reading again with input inside OpenSSL */
	uv_idle_t kick;		 /* runs while kicks is not empty */
	uv_timer_t drain_timer;	 /* shutdown: checks whether clients are gone */
	uint64_t drain_deadline; /* loop ms when shutdown.timeout runs out */
	bool drain_forced;
	uint64_t next_id;
	bool stopping;
	int exit_code;
	uint8_t scratch[64 * 1024];	 /* ciphertext read buffer */
	uint8_t *blocks[TP_BLOCK_CACHE]; /* free TP_BLOCK buffers */
	size_t nblocks;
};

/* serve: bind the listeners and prefetch tokens (false for doctor). */
int tp_init(tp_t *tp, uv_loop_t *loop, conf_t *conf, bool serve, char *err,
	    size_t errlen) TP_MUST_CHECK;
int tp_run(tp_t *tp);
void tp_stop(tp_t *tp, int exit_code);
/* Reloads the config (SIGHUP, POST /v1/reload). On failure the running
 * config is untouched, err says why, and the error is logged. */
int tp_reload(tp_t *tp, char *err, size_t errlen);
/* Keeps p until exit (reload): a conf_t when cleanse is 0, else a block
 * whose first cleanse bytes are wiped before it is freed. */
void tp_retire(tp_t *tp, void *p, size_t cleanse);
/* Finds a live (not removed) pool by name. */
tp_pool_t *tp_pool_find(tp_t *tp, const char *name);
/* Binds a listener for pc's address, or returns the existing one. */
tp_listener_t *tp_listener_for(tp_t *tp, const conf_pool_t *pc,
			       const tp_protocol_t *proto, char *err,
			       size_t errlen);
void tp_listener_close(tp_listener_t *l);
/* Routing lists rebuilt from the live pools; empty listeners close. */
int tp_listeners_rebuild(tp_t *tp);
uint64_t tp_now_ms(tp_t *tp);
/* `tokenpool doctor`: checks every pool step by step, prints one PASS or
 * FAIL line per step; returns the exit code (0 all pass, 1 otherwise). */
int tp_doctor(conf_t *conf);
/* Finds the client holding this synthetic key (cancel requests). */
tp_conn_t *tp_find_client_by_key(tp_t *tp, const uint8_t *key, size_t len);

#endif
