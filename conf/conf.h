/*
 * conf.h - the configuration model and the project-wide basics.
 *
 * conf/ is the lowest layer: every other folder includes this header, so it
 * also carries what they all share, namely the error code list. It turns a
 * JSON file (cJSON) into one validated, immutable snapshot with every
 * default filled in and every secret resolved (environment variables and
 * files are read at load time, never later).
 *
 * Not here: sockets, the loop, tokens. A snapshot is never modified after
 * conf_load*() returns; a reload builds a new one.
 */
#ifndef TP_CONF_H
#define TP_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TP_MUST_CHECK __attribute__((warn_unused_result))

/*
 * Error codes: 0 is success, failures are negative TP_E* values. The name
 * says which side failed so a pool knows whether a server link is reusable.
 * One list generates the enum, the names and the messages.
 */
#define TP_ERRNO_MAP(X)                          \
	X(AGAIN, "more input needed")            \
	X(NOMEM, "out of memory")                \
	X(INVAL, "invalid argument")             \
	X(CONFIG, "invalid configuration")       \
	X(PROTO, "protocol violation")           \
	X(TOOBIG, "message too large")           \
	X(AUTH, "authentication failed")         \
	X(NODB, "unknown database")              \
	X(FULL, "too many clients")              \
	X(TIMEOUT, "timed out")                  \
	X(TOKEN, "no valid access token")        \
	X(TLS, "TLS failure")                    \
	X(CLIENT_READ, "client read failed")     \
	X(CLIENT_WRITE, "client write failed")   \
	X(SERVER_READ, "server read failed")     \
	X(SERVER_WRITE, "server write failed")   \
	X(CONNECT, "upstream unreachable")       \
	X(SERVER_LOGIN, "upstream login failed") \
	X(SHUTDOWN, "shutting down")             \
	X(IO, "I/O error")

enum tp_errno {
	TP_OK = 0,
#define TP_ERR_ENUM(name, msg) TP_E##name,
	TP_ERR_FIRST_ = -1000,
	TP_ERRNO_MAP(TP_ERR_ENUM)
#undef TP_ERR_ENUM
	    TP_ERR_LAST_
};

/* "TP_EPROTO" style name and a human message; never NULL. */
const char *tp_err_name(int err);
const char *tp_strerror(int err);

/* ---- enums for config values ---- */
typedef enum {
	CONF_PROTO_POSTGRES,
	CONF_PROTO_MYSQL,
	CONF_PROTO_SQLSERVER
} conf_protocol_t;

typedef enum {
	CONF_SRC_AUTO,
	CONF_SRC_IMDS,
	CONF_SRC_APP_SERVICE,
	CONF_SRC_WORKLOAD_IDENTITY,
	CONF_SRC_CLIENT_SECRET,
	CONF_SRC_CLIENT_CERTIFICATE,
	CONF_SRC_AZURE_CLI
} conf_source_t;

typedef enum { CONF_AUTH_TOKEN, CONF_AUTH_PASSWORD } conf_auth_t;

typedef enum {
	CONF_TLS_VERIFY_FULL,
	CONF_TLS_VERIFY_CA,
	CONF_TLS_REQUIRE,
	CONF_TLS_DISABLE
} conf_tls_mode_t;

typedef enum {
	CONF_CTLS_ALLOW,
	CONF_CTLS_REQUIRE,
	CONF_CTLS_DISABLE
} conf_client_tls_mode_t;

typedef enum { CONF_POOL_SESSION, CONF_POOL_TRANSACTION } conf_pool_mode_t;

typedef enum {
	CONF_LOG_DEBUG,
	CONF_LOG_INFO,
	CONF_LOG_WARN,
	CONF_LOG_ERROR
} conf_log_level_t;

/* ---- the snapshot ---- */
typedef struct conf_identity {
	conf_source_t source;
	char *client_id;	    /* NULL when unset */
	char *object_id;	    /* NULL when unset */
	char *resource_id;	    /* NULL when unset */
	char *tenant_id;	    /* NULL when unset */
	char *client_secret_env;    /* name of the variable, as configured */
	char *client_secret;	    /* resolved value; NULL when unset */
	char *certificate_file;	    /* NULL when unset */
	char *federated_token_file; /* NULL when unset */
	char *imds_endpoint;	    /* default "http://169.254.169.254" */
	char *authority; /* default "https://login.microsoftonline.com" */
} conf_identity_t;

typedef struct conf_client {
	char *user;
	/* Resolved plain password (from password, password_env or
	 * password_file); NULL when only hashes were given. */
	char *password;
	/* Where that password came from, as configured; both NULL for an
	 * inline password or hashes. Exactly one credential key is set. */
	char *password_env;
	char *password_file;
	/* password_hash values as given (a string or an array in JSON);
	 * formats are those auth_hash_print() writes. */
	char **hashes;
	size_t nhashes;
} conf_client_t;

typedef struct conf_server_tls {
	conf_tls_mode_t mode;
	char *ca_file;	   /* NULL: system trust store */
	char *server_name; /* NULL: use host */
} conf_server_tls_t;

typedef struct conf_server {
	char *host;
	int port;
	char *database;
	char *user;
	conf_auth_t auth;
	char *scope;
	/* The pool's own identity, or NULL to use conf_t.identity. Use
	 * conf_pool_identity() rather than reading this. A pool's identity
	 * does not inherit who it is (source, ids, secret, files) from the
	 * top-level one; only imds_endpoint and authority, when it omits
	 * them, come from the top-level identity. */
	conf_identity_t *identity;
	char *password_env;  /* as configured; NULL when unset */
	char *password_file; /* as configured; NULL when unset */
	char *password;	     /* resolved (auth: password); NULL otherwise */
	conf_server_tls_t tls;
} conf_server_t;

typedef struct conf_client_tls {
	conf_client_tls_mode_t mode;
	char *cert_file; /* NULL: self-signed generated at start */
	char *key_file;
} conf_client_tls_t;

typedef struct conf_pool_limits {
	conf_pool_mode_t mode;
	int size;
	int min_idle;
	int max_clients;
	double wait_timeout;	/* seconds */
	double connect_timeout; /* seconds */
	double idle_timeout;	/* seconds; 0 disables */
	double lifetime;	/* seconds; 0 disables */
} conf_pool_limits_t;

typedef struct conf_pool {
	char *name;
	conf_protocol_t protocol;
	char *listen;	   /* as given, "127.0.0.1:6432" */
	char *listen_host; /* "127.0.0.1", "::1", "0.0.0.0" */
	int listen_port;
	conf_server_t server;
	conf_client_t *clients;
	size_t nclients;
	conf_client_tls_t client_tls;
	conf_pool_limits_t pool;
} conf_pool_t;

typedef struct conf {
	char *path; /* file it came from; NULL for environment or string */
	conf_log_level_t log_level;
	bool log_json;	   /* "format": "json" */
	char *http_listen; /* "127.0.0.1:9090"; NULL: disabled (set "") */
	char *admin_token_env;
	char *admin_token; /* resolved; NULL when unset */
	double shutdown_timeout;
	conf_identity_t identity;
	conf_pool_t *pools;
	size_t npools;
	/* Load-time warnings, one line each, no secrets (an inline password
	 * in a file others can read, tls.mode "require"): the caller logs
	 * them. */
	char **warnings;
	size_t nwarnings;
} conf_t;

/*
 * Load and validate. On failure returns TP_ECONFIG (or TP_ENOMEM) and writes
 * one line to err naming the key path and the problem, e.g.
 *   pools[0].server.port: expected 1..65535, got "abc"
 *   line 3, column 5: invalid JSON (trailing comma)
 * A JSON null is the same as an absent key (the default applies); unknown
 * and repeated keys are errors. On success *out owns everything; free with
 * conf_free().
 */
int conf_load_file(const char *path, conf_t **out, char *err,
		   size_t errlen) TP_MUST_CHECK;
int conf_load_string(const char *json, conf_t **out, char *err,
		     size_t errlen) TP_MUST_CHECK;
void conf_free(conf_t *conf);

/*
 * Zero config (CONTRACT.md "Environment alone"): a snapshot built from the
 * variables Azure Service Connector sets. AZURE_POSTGRESQL_*,
 * AZURE_MYSQL_* and AZURE_SQL_* (a connection string in any form, or the
 * split variables) each become one pool on 127.0.0.1 at the protocol's
 * port (TOKENPOOL_<DB>_LISTEN overrides); the local client is
 * TOKENPOOL_CLIENT_USER / TOKENPOOL_CLIENT_PASSWORD. The result passes the
 * same validation as a config file; conf->path is NULL. TLS settings in
 * the environment that would weaken verification are not obeyed but
 * reported in conf->warnings (only TOKENPOOL_TLS_MODE relaxes). Errors
 * are one line naming the variable, as conf_load_file's name the key.
 */
int conf_load_env(conf_t **out, char *err, size_t errlen) TP_MUST_CHECK;
/* Whether any AZURE_POSTGRESQL_*, AZURE_MYSQL_* or AZURE_SQL_* variable is
 * set: the caller's cue to try conf_load_env() when there is no file. */
bool conf_env_present(void);

/*
 * The effective config as pretty JSON (every key, defaults included), with
 * every secret value (passwords, hashes, client secrets, admin token)
 * replaced by "***". Caller frees with free(). NULL on allocation failure.
 */
char *conf_to_json(const conf_t *conf);

/* The identity a pool logs in with (its own or the top-level one). */
/* Reload: whether pool a (of snapshot ca) and b (of cb) reach the same
 * server the same way (protocol, server settings, resolved identity,
 * secrets included); and whether two client_tls settings match. */
bool conf_server_equal(const conf_t *ca, const conf_pool_t *a, const conf_t *cb,
		       const conf_pool_t *b);
bool conf_client_tls_equal(const conf_client_tls_t *a,
			   const conf_client_tls_t *b);
const conf_identity_t *conf_pool_identity(const conf_t *conf,
					  const conf_pool_t *pool);

const char *conf_protocol_name(conf_protocol_t p);
const char *conf_source_name(conf_source_t s);

/* Split "host:port" or "[v6]:port" (port 1..65535; a bare IPv6 address
 * needs brackets). Returns 0, TP_EINVAL or TP_ENOMEM. host gets a malloc'd
 * copy without brackets; NULL on failure. */
int conf_split_hostport(const char *s, char **host, int *port) TP_MUST_CHECK;

#endif
