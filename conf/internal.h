/*
 * internal.h - helpers shared by the files of conf/ and by nothing else.
 *
 * A conf__ctx_t travels through one load: it knows the key path being
 * looked at ("pools[0].server.port"), writes the one-line error and collects
 * warnings. The typed getters below read one key of a cJSON object, apply
 * the default when the key is absent or null, check the type and range, and
 * fail with "<path>: expected ..., got ..." otherwise.
 *
 * Not here: anything another folder may call (that is conf.h).
 */
#ifndef TP_CONF_INTERNAL_H
#define TP_CONF_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "conf/conf.h"

/* Largest duration accepted (one year): keeps every later seconds-to-
 * milliseconds conversion far away from overflow. */
#define CONF__SECONDS_MAX 31536000.0
/* Largest count accepted for sizes and client limits. */
#define CONF__COUNT_MAX 1000000
/* Largest config file and secret file read. */
#define CONF__FILE_MAX	      (4u << 20)
#define CONF__SECRET_FILE_MAX (64u << 10)

typedef struct conf__ctx {
	char path[256]; /* key path of the value being read */
	size_t pathlen;
	char *err; /* caller's buffer for the one-line error */
	size_t errlen;
	conf_t *conf;	   /* snapshot being built; receives warnings */
	const char *file;  /* config file name; NULL for a string */
	bool file_exposed; /* that file is readable by group or others */
	bool warned_exposed;
} conf__ctx_t;

/* Flags for conf__string(). */
enum {
	CONF__REQUIRED = 1 << 0, /* absent or null is an error */
	CONF__SECRET = 1 << 1,	 /* never echo the value in an error */
	CONF__EMPTY_OK = 1 << 2, /* "" is a valid value */
};

/* ---- enum names (names.c), indexed by the conf.h enums ---- */
extern const char *const conf__protocol_names[3];
extern const int conf__protocol_ports[3];
extern const char *const conf__protocol_scopes[3];
extern const char *const conf__source_names[7];
extern const char *const conf__auth_names[2];
extern const char *const conf__tls_mode_names[4];
extern const char *const conf__client_tls_mode_names[3];
extern const char *const conf__pool_mode_names[2];
extern const char *const conf__log_level_names[4];
extern const char *const conf__log_format_names[2];
#define CONF__COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- key path and errors (parse.c) ---- */
/* Append ".key" (or "[i]") to the path; returns the mark for conf__pop. */
size_t conf__push(conf__ctx_t *ctx, const char *key);
size_t conf__push_index(conf__ctx_t *ctx, size_t i);
void conf__pop(conf__ctx_t *ctx, size_t mark);

/* Writes "<path>: <message>" to the error buffer; returns TP_ECONFIG. */
int conf__fail(conf__ctx_t *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Same, for the child key of the current path. */
int conf__fail_at(conf__ctx_t *ctx, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "<path>: expected <what>, got <value>"; a secret value is described by
 * its type only. */
int conf__fail_expected(conf__ctx_t *ctx, const cJSON *got, bool secret,
			const char *what);
int conf__nomem(conf__ctx_t *ctx);

/* Appends one warning line "<path>: <message>" to the snapshot. */
int conf__warn(conf__ctx_t *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- typed getters (getters.c); absent and null mean "use default" ---- */
const cJSON *conf__item(const cJSON *obj, const char *key);

/* The object at obj[key] (NULL when absent or null), after checking that
 * it holds only the keys listed in allowed (NULL-terminated) and none
 * twice. */
int conf__object(conf__ctx_t *ctx, const cJSON *obj, const char *key,
		 const char *const *allowed, const cJSON **out);
int conf__check_keys(conf__ctx_t *ctx, const cJSON *obj,
		     const char *const *allowed);

/* *out receives a malloc'd copy, or of def (NULL allowed). */
int conf__string(conf__ctx_t *ctx, const cJSON *obj, const char *key,
		 const char *def, unsigned flags, char **out);
/* def < 0 means required. */
int conf__enum(conf__ctx_t *ctx, const cJSON *obj, const char *key,
	       const char *const *names, size_t n, int def, int *out);
int conf__int(conf__ctx_t *ctx, const cJSON *obj, const char *key, int def,
	      int min, int max, int *out);
/* A duration in seconds, 0..CONF__SECONDS_MAX; positive refuses 0. */
int conf__seconds(conf__ctx_t *ctx, const cJSON *obj, const char *key,
		  double def, bool positive, double *out);

/* *out = copy of s (NULL stays NULL); fails with "out of memory". */
int conf__strdup(conf__ctx_t *ctx, const char *s, char **out);

/* ---- secrets and files (secrets.c) ---- */
/* Reads a whole file (at most max bytes) into a NUL-terminated buffer.
 * Returns 0 or an errno value (EFBIG when larger than max). */
int conf__read_file(const char *path, size_t max, char **buf, size_t *len,
		    unsigned *mode);
/* The value of the environment variable named by obj[key] (when given):
 * *name gets the name as configured, *value the resolved value. */
int conf__env_secret(conf__ctx_t *ctx, const cJSON *obj, const char *key,
		     char **name, char **value);
/* The content of the file named by obj[key], one trailing newline
 * stripped: *file gets the path, *value the content. */
int conf__file_secret(conf__ctx_t *ctx, const cJSON *obj, const char *key,
		      char **file, char **value);
/* A file name at obj[key] that must be readable now. */
int conf__readable_file(conf__ctx_t *ctx, const cJSON *obj, const char *key,
			char **out);
/* Wipes then frees a secret string; NULL is fine. */
void conf__free_secret(char *s);
/* Wipes every string value of a parsed document (inline secrets). */
void conf__wipe_json(cJSON *item);

/* ---- addresses and URLs (net.c) ---- */
bool conf__host_is_loopback(const char *host);
/* Checks an http(s) URL at obj[key]; with https_only, http:// is only
 * accepted for a loopback host. Strips trailing slashes. */
int conf__url(conf__ctx_t *ctx, const cJSON *obj, const char *key,
	      const char *def, bool https_only, char **out);
/* A "host:port" at obj[key] (def when absent), split into *host and
 * *port; with CONF__EMPTY_OK, "" is accepted and leaves *host NULL. */
int conf__listen(conf__ctx_t *ctx, const cJSON *obj, const char *key,
		 const char *def, unsigned flags, char **out, char **host,
		 int *port);

/* ---- sections ---- */
extern const char *const conf__identity_keys[];
/* Reads an identity object (NULL: all defaults); endpoints missing from it
 * come from inherit when given. */
int conf__parse_identity(conf__ctx_t *ctx, const cJSON *obj,
			 const conf_identity_t *inherit, conf_identity_t *out);
void conf__free_identity(conf_identity_t *id);
int conf__parse_pools(conf__ctx_t *ctx, const cJSON *root, conf_t *conf);
int conf__parse_server(conf__ctx_t *ctx, const cJSON *pool, const conf_t *conf,
		       conf_pool_t *p);
int conf__parse_clients(conf__ctx_t *ctx, const cJSON *pool, conf_pool_t *p);
void conf__free_server(conf_server_t *s);
void conf__free_client(conf_client_t *c);
int conf__check_pools(conf__ctx_t *ctx, const conf_t *conf);
void conf__free_pool(conf_pool_t *pool);

/* ---- connection strings (connstr.c) ---- */
#define CONF__CS_WEAK_MAX 8

/* What a connection string says, in any form Service Connector writes.
 * Strings are malloc'd, NULL when not given (an empty value is "not
 * given"); free with conf__connstr_free(). */
typedef struct conf__connstr {
	const char *form; /* "libpq keywords", "URI", "ADO.NET", "ODBC",
			     "JDBC", "Go MySQL DSN" (static) */
	int protocol;	  /* CONF_PROTO_* a URL scheme names; -1 if none */
	char *host;	  /* without "tcp:", brackets or port */
	int port;	  /* 0 when not given */
	char *database;
	char *user;	    /* the "@server" Single Server suffix removed */
	bool user_stripped; /* ... and it was there */
	char *ca_file;	    /* sslrootcert, Root Certificate, sslca, ... */
	/* A user-assigned identity: msiClientId, or User Id/UID when
	 * Authentication names a managed identity or DefaultAzureCredential
	 * (then user is NULL). */
	char *client_id;
	bool has_password; /* the value itself is never kept */
	/* Settings that would weaken server verification, "key=value" as
	 * written (sslmode=require, TrustServerCertificate=True, ...). */
	char *weak[CONF__CS_WEAK_MAX];
	size_t nweak;
} conf__connstr_t;

/* Parses s. On failure returns TP_ECONFIG (or TP_ENOMEM) with one line in
 * err that starts with name ("AZURE_POSTGRESQL_CONNECTIONSTRING:
 * unterminated quote at position 12") and never quotes a password; *out
 * is then empty. */
int conf__connstr_parse(const char *name, const char *s, conf__connstr_t *out,
			char *err, size_t errlen) TP_MUST_CHECK;
void conf__connstr_free(conf__connstr_t *cs);
/* "app@myserver" with host "myserver.postgres.database.azure.com" becomes
 * "app" (in place; Single Server's user@server form); true if it did. */
bool conf__strip_server_suffix(char *user, const char *host);
/* A decimal port 1..65535, nothing else. */
bool conf__port_ok(const char *s, int *port);

#endif
