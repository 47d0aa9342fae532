/*
 * env.c - zero config: a snapshot built from the variables Azure Service
 * Connector sets (CONTRACT.md "Environment alone").
 *
 * Each database kind present (PostgreSQL, MySQL, SQL) becomes one pool on
 * 127.0.0.1 at its usual port, from its connection string (any form
 * connstr.c reads) or its split variables; a split variable may fill what
 * the string leaves out but not contradict it. The pools are written as a
 * JSON config and handed to the normal loader, so they obey every rule a
 * config file does and `tokenpool check` prints them the same way.
 *
 * TLS from the environment never weakens verification: Service Connector
 * writes sslmode=require or TrustServerCertificate=True for drivers that
 * lack the CA, but tokenpool has the system store and it sends a token,
 * which is worth more than a password. Such settings are reported as
 * warnings; only TOKENPOOL_TLS_MODE relaxes. Likewise a password in the
 * string is ignored (the login is an Entra token) and a Single Server
 * "user@server" name is shortened, both with a warning.
 *
 * Not here: the connection string grammars (connstr.c), choosing between a
 * file and the environment (main.c), fetching tokens (auth/).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conf/internal.h"

extern char **environ;

#define VAR_MAX	 64
#define WARN_MAX 48

typedef struct env_db {
	const char *prefix;   /* "AZURE_POSTGRESQL" */
	const char *host_key; /* "HOST", or "SERVER" for SQL */
	const char *listen_var;
	conf_protocol_t protocol;
} env_db_t;

static const env_db_t dbs[] = {
    {"AZURE_POSTGRESQL", "HOST", "TOKENPOOL_POSTGRESQL_LISTEN",
     CONF_PROTO_POSTGRES},
    {"AZURE_MYSQL", "HOST", "TOKENPOOL_MYSQL_LISTEN", CONF_PROTO_MYSQL},
    {"AZURE_SQL", "SERVER", "TOKENPOOL_SQL_LISTEN", CONF_PROTO_SQLSERVER},
};

#define NDBS CONF__COUNT(dbs)

/* One database kind as the environment describes it. */
typedef struct env_pool {
	const env_db_t *db;
	bool have;
	char source[VAR_MAX]; /* the variable the pool came from */
	conf__connstr_t cs;   /* the string, completed by split variables */
	char listen[96];
} env_pool_t;

typedef struct env_ctx {
	char *err;
	size_t errlen;
	const char *tls_mode; /* TOKENPOOL_TLS_MODE; NULL: verify-full */
	int pool_size;	      /* TOKENPOOL_POOL_SIZE; 0: the default */
	int max_clients;      /* TOKENPOOL_MAX_CLIENTS; 0: the default */
	char *warn[WARN_MAX];
	size_t nwarn;
} env_ctx_t;

static const char weak_why[] =
    "tokenpool verifies the server before it sends a token; set "
    "TOKENPOOL_TLS_MODE to relax";

/* ---- small helpers ---- */

static int fail(env_ctx_t *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(env_ctx_t *ctx, const char *fmt, ...)
{
	va_list ap;

	if (ctx->err && ctx->errlen) {
		va_start(ap, fmt);
		vsnprintf(ctx->err, ctx->errlen, fmt, ap);
		va_end(ap);
	}
	return TP_ECONFIG;
}

static int nomem(env_ctx_t *ctx)
{
	if (ctx->err && ctx->errlen)
		snprintf(ctx->err, ctx->errlen, "out of memory");
	return TP_ENOMEM;
}

static int add_warning(env_ctx_t *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int add_warning(env_ctx_t *ctx, const char *fmt, ...)
{
	va_list ap;
	char *line = NULL;

	if (ctx->nwarn == WARN_MAX)
		return 0;
	va_start(ap, fmt);
	int n = vasprintf(&line, fmt, ap);
	va_end(ap);
	if (n < 0)
		return nomem(ctx);
	ctx->warn[ctx->nwarn++] = line;
	return 0;
}

/* The value of a variable; unset and empty are alike ("X=" is how a
 * shell user clears one). */
static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

static const char *vname(char *buf, const env_db_t *db, const char *suffix)
{
	snprintf(buf, VAR_MAX, "%s_%s", db->prefix, suffix);
	return buf;
}

/* The first variable named "<prefix>_*", copied into buf; NULL if none. */
static const char *find_prefixed(const char *prefix, char *buf, size_t len)
{
	size_t n = strlen(prefix);

	for (char **e = environ; e && *e; e++) {
		if (strncmp(*e, prefix, n) != 0 || (*e)[n] != '_')
			continue;
		snprintf(buf, len, "%.*s", (int)strcspn(*e, "="), *e);
		return buf;
	}
	return NULL;
}

bool conf_env_present(void)
{
	char buf[VAR_MAX];

	for (size_t i = 0; i < NDBS; i++) {
		if (find_prefixed(dbs[i].prefix, buf, sizeof(buf)))
			return true;
	}
	return false;
}

/* ---- the variables of one database kind ---- */

/* Sets *field from a split variable, unless the string gave a different
 * value: then both are named. origin names where *field came from. */
static int merge_str(env_ctx_t *ctx, const env_pool_t *p, const char *suffix,
		     char **field, char *origin)
{
	char name[VAR_MAX];
	const char *v = env(vname(name, p->db, suffix));

	if (!v || (*field && strcmp(*field, v) == 0))
		return 0;
	if (*field)
		return fail(ctx,
			    "%s (\"%.60s\") and %s (\"%.60s\") disagree: "
			    "keep one",
			    origin, *field, name, v);
	if (!(*field = strdup(v)))
		return nomem(ctx);
	snprintf(origin, VAR_MAX, "%s", name);
	return 0;
}

static int merge_port(env_ctx_t *ctx, env_pool_t *p)
{
	char name[VAR_MAX];
	const char *v = env(vname(name, p->db, "PORT"));
	int port;

	if (!v)
		return 0;
	if (!conf__port_ok(v, &port))
		return fail(ctx, "%s: bad port \"%.16s\": expected 1..65535",
			    name, v);
	if (p->cs.port && p->cs.port != port)
		return fail(ctx, "%s (%d) and %s (%d) disagree: keep one",
			    p->source, p->cs.port, name, port);
	p->cs.port = port;
	return 0;
}

static int merge_split(env_ctx_t *ctx, env_pool_t *p)
{
	char host_from[VAR_MAX], db_from[VAR_MAX], user_from[VAR_MAX],
	    id_from[VAR_MAX];
	conf__connstr_t *cs = &p->cs;
	int rc;

	/* Whatever is set so far came from the connection string. */
	snprintf(host_from, VAR_MAX, "%s", p->source);
	memcpy(db_from, host_from, VAR_MAX);
	memcpy(user_from, host_from, VAR_MAX);
	memcpy(id_from, host_from, VAR_MAX);
	if ((rc = merge_str(ctx, p, p->db->host_key, &cs->host, host_from)) ||
	    (rc = merge_port(ctx, p)) ||
	    (rc = merge_str(ctx, p, "DATABASE", &cs->database, db_from)) ||
	    (rc = merge_str(ctx, p, "NAME", &cs->database, db_from)) ||
	    (rc = merge_str(ctx, p, "USER", &cs->user, user_from)) ||
	    (rc = merge_str(ctx, p, "CLIENTID", &cs->client_id, id_from)))
		return rc;
	if (conf__strip_server_suffix(cs->user, cs->host))
		cs->user_stripped = true;
	return 0;
}

/* Whatever the environment says that tokenpool will not do. */
static int split_warnings(env_ctx_t *ctx, const env_pool_t *p)
{
	static const char *const off[] = {"false",   "0",	 "no", "off",
					  "disable", "disabled", NULL};
	char name[VAR_MAX];
	const char *v = env(vname(name, p->db, "SSL"));
	int rc = 0;

	for (size_t i = 0; v && !ctx->tls_mode && off[i]; i++) {
		if (strcasecmp(v, off[i]) == 0) {
			rc = add_warning(ctx, "ignored %s=%.32s: %s", name, v,
					 weak_why);
			break;
		}
	}
	if (!rc && env(vname(name, p->db, "PASSWORD")))
		rc = add_warning(ctx,
				 "ignored %s: tokenpool logs in with an Entra "
				 "token",
				 name);
	return rc;
}

static int string_warnings(env_ctx_t *ctx, const env_pool_t *p)
{
	const conf__connstr_t *cs = &p->cs;
	int rc = 0;

	for (size_t i = 0; i < cs->nweak && !ctx->tls_mode && !rc; i++)
		rc = add_warning(ctx, "ignored %.80s from %s: %s", cs->weak[i],
				 p->source, weak_why);
	if (!rc && cs->has_password)
		rc =
		    add_warning(ctx,
				"ignored the password in %s: tokenpool logs in "
				"with an Entra token",
				p->source);
	if (!rc && cs->user_stripped)
		rc = add_warning(ctx,
				 "logging in to %s as \"%s\": the \"@%.*s\" "
				 "suffix is for Single Server, retired",
				 cs->host, cs->user,
				 (int)strcspn(cs->host, "."), cs->host);
	return rc ? rc : split_warnings(ctx, p);
}

/* "X: missing user (set it there or in AZURE_..._USER)", or without a
 * string "missing user: set AZURE_..._USER". */
static int missing(env_ctx_t *ctx, const env_pool_t *p, const char *what,
		   const char *suffix)
{
	char name[VAR_MAX];

	vname(name, p->db, suffix);
	if (!p->cs.form) /* no connection string */
		return fail(ctx, "missing %s: set %s", what, name);
	return fail(ctx, "%s: missing %s (set it there or in %s)", p->source,
		    what, name);
}

static int required(env_ctx_t *ctx, env_pool_t *p)
{
	conf__connstr_t *cs = &p->cs;

	if (!cs->database)
		return missing(ctx, p, "database", "DATABASE");
	if (cs->user)
		return 0;
	if (p->db->protocol != CONF_PROTO_SQLSERVER)
		return missing(ctx, p, "user", "USER");
	/* An Entra login to SQL Server carries no user name (the token
	 * names the principal); the config model wants one, so it names
	 * the identity. */
	cs->user = strdup(cs->client_id ? cs->client_id : "managed-identity");
	return cs->user ? 0 : nomem(ctx);
}

static int read_listen(env_ctx_t *ctx, env_pool_t *p)
{
	const char *v = env(p->db->listen_var);
	char *host = NULL;
	int port;

	if (!v) {
		snprintf(p->listen, sizeof(p->listen), "127.0.0.1:%d",
			 conf__protocol_ports[p->db->protocol]);
		return 0;
	}
	if (conf__port_ok(v, &port)) { /* a bare port: loopback */
		snprintf(p->listen, sizeof(p->listen), "127.0.0.1:%d", port);
		return 0;
	}
	int rc = strlen(v) < sizeof(p->listen)
		     ? conf_split_hostport(v, &host, &port)
		     : TP_EINVAL;
	free(host);
	if (rc == TP_ENOMEM)
		return nomem(ctx);
	if (rc)
		return fail(ctx,
			    "%s: expected \"host:port\" or a port, got "
			    "\"%.64s\"",
			    p->db->listen_var, v);
	snprintf(p->listen, sizeof(p->listen), "%s", v);
	return 0;
}

/* No string and no host: other variables of the kind are only noted
 * (one left over must not stop tokenpool serving the others). */
static int no_pool(env_ctx_t *ctx, const env_db_t *db)
{
	char found[VAR_MAX], name[VAR_MAX], host[VAR_MAX];

	if (!find_prefixed(db->prefix, found, sizeof(found)))
		return 0;
	return add_warning(ctx, "%s is set, but neither %s nor %s: no %s pool",
			   found, vname(name, db, "CONNECTIONSTRING"),
			   vname(host, db, db->host_key),
			   conf_protocol_name(db->protocol));
}

static int read_string(env_ctx_t *ctx, env_pool_t *p, const char *s)
{
	int rc =
	    conf__connstr_parse(p->source, s, &p->cs, ctx->err, ctx->errlen);

	if (rc || p->cs.protocol < 0 || p->cs.protocol == (int)p->db->protocol)
		return rc;
	return fail(ctx, "%s: a %s URL where a %s connection string belongs",
		    p->source, conf_protocol_name(p->cs.protocol),
		    conf_protocol_name(p->db->protocol));
}

static int read_pool(env_ctx_t *ctx, const env_db_t *db, env_pool_t *p)
{
	char cs_name[VAR_MAX], host_name[VAR_MAX];
	const char *s = env(vname(cs_name, db, "CONNECTIONSTRING"));
	int rc;

	p->db = db;
	p->cs.protocol = -1;
	if (!s && !env(vname(host_name, db, db->host_key)))
		return no_pool(ctx, db);
	p->have = true;
	snprintf(p->source, VAR_MAX, "%s", s ? cs_name : host_name);
	if ((s && (rc = read_string(ctx, p, s))) ||
	    (rc = merge_split(ctx, p)) || (rc = required(ctx, p)) ||
	    (rc = read_listen(ctx, p)))
		return rc;
	return string_warnings(ctx, p);
}

/* ---- variables for every pool ---- */

/* A whole number 1..max from a variable; 0 when unset. */
static int read_count(env_ctx_t *ctx, const char *name, int max, int *out)
{
	const char *v = env(name);
	char *end;
	long n;

	*out = 0;
	if (!v)
		return 0;
	n = strtol(v, &end, 10);
	if (*end || n < 1 || n > max)
		return fail(ctx,
			    "%s: expected a whole number 1..%d, got \"%.32s\"",
			    name, max, v);
	*out = (int)n;
	return 0;
}

static int read_globals(env_ctx_t *ctx)
{
	const char *mode = env("TOKENPOOL_TLS_MODE");
	int rc;
	bool user = env("TOKENPOOL_CLIENT_USER") != NULL;
	bool pw = env("TOKENPOOL_CLIENT_PASSWORD") != NULL;

	if (!user || !pw)
		return fail(
		    ctx,
		    "%s not set: with no config file, tokenpool needs "
		    "TOKENPOOL_CLIENT_USER and TOKENPOOL_CLIENT_PASSWORD "
		    "(the user and password your application logs in "
		    "with)",
		    !user && !pw ? "TOKENPOOL_CLIENT_USER and "
				   "TOKENPOOL_CLIENT_PASSWORD are"
		    : !user	 ? "TOKENPOOL_CLIENT_USER is"
				 : "TOKENPOOL_CLIENT_PASSWORD is");
	if ((rc = read_count(ctx, "TOKENPOOL_POOL_SIZE", 10000,
			     &ctx->pool_size)) ||
	    (rc = read_count(ctx, "TOKENPOOL_MAX_CLIENTS", 1000000,
			     &ctx->max_clients)))
		return rc;
	if (env("TOKENPOOL_POOL_MODE") &&
	    strcmp(env("TOKENPOOL_POOL_MODE"), "session") != 0 &&
	    strcmp(env("TOKENPOOL_POOL_MODE"), "transaction") != 0)
		return fail(ctx,
			    "TOKENPOOL_POOL_MODE: expected session or "
			    "transaction, got \"%.32s\"",
			    env("TOKENPOOL_POOL_MODE"));
	if (!mode)
		return 0;
	for (size_t i = 0; i < CONF__COUNT(conf__tls_mode_names); i++) {
		if (strcmp(mode, conf__tls_mode_names[i]) != 0)
			continue;
		if (i == CONF_TLS_DISABLE)
			break;
		ctx->tls_mode = conf__tls_mode_names[i];
		return 0;
	}
	return fail(ctx,
		    "TOKENPOOL_TLS_MODE: expected verify-full, verify-ca or "
		    "require (disable is refused: a token never crosses the "
		    "network in clear), got \"%.32s\"",
		    mode);
}

/* ---- the JSON document ---- */

/* Adds key: string (skipped when s is NULL); clears *ok on failure so a
 * chain of adds needs one check at the end. */
static void add_str(cJSON *o, const char *key, const char *s, bool *ok)
{
	if (s && !cJSON_AddStringToObject(o, key, s))
		*ok = false;
}

static cJSON *identity_json(env_ctx_t *ctx, const env_pool_t *p, int *rc)
{
	char secret[VAR_MAX], tenant_var[VAR_MAX], id_var[VAR_MAX];
	const char *tenant = env(vname(tenant_var, p->db, "TENANTID"));
	bool sp = env(vname(secret, p->db, "CLIENTSECRET")) != NULL;
	bool ok = true;

	vname(id_var, p->db, "CLIENTID");
	if (sp && (!tenant || !p->cs.client_id)) {
		*rc = fail(ctx,
			   "%s is set, so %s and %s are needed too (a "
			   "service principal)",
			   secret, tenant_var, id_var);
		return NULL;
	}
	if (!p->cs.client_id)
		return NULL; /* the top-level identity */
	cJSON *id = cJSON_CreateObject();
	if (sp)
		add_str(id, "source", "client_secret", &ok);
	add_str(id, "client_id", p->cs.client_id, &ok);
	add_str(id, "tenant_id", tenant, &ok);
	if (sp)
		add_str(id, "client_secret_env", secret, &ok);
	if (!id || !ok) {
		cJSON_Delete(id);
		*rc = nomem(ctx);
		return NULL;
	}
	return id;
}

static cJSON *server_json(env_ctx_t *ctx, const env_pool_t *p, int *rc)
{
	const conf__connstr_t *cs = &p->cs;
	cJSON *s = cJSON_CreateObject(), *tls = cJSON_CreateObject();
	bool ok = s && tls;
	/* libpq's sslrootcert=system is the system store: our default. */
	const char *ca =
	    cs->ca_file && strcmp(cs->ca_file, "system") ? cs->ca_file : NULL;

	add_str(s, "host", cs->host, &ok);
	if (cs->port && !cJSON_AddNumberToObject(s, "port", cs->port))
		ok = false;
	add_str(s, "database", cs->database, &ok);
	add_str(s, "user", cs->user, &ok);
	add_str(tls, "mode", ctx->tls_mode ? ctx->tls_mode : "verify-full",
		&ok);
	add_str(tls, "ca_file", ca, &ok);
	if (ok && !cJSON_AddItemToObject(s, "tls", tls))
		ok = false;
	else if (ok)
		tls = NULL;
	cJSON_Delete(tls);
	cJSON *id = ok ? identity_json(ctx, p, rc) : NULL;
	if (id && !cJSON_AddItemToObject(s, "identity", id)) {
		cJSON_Delete(id);
		ok = false;
	}
	if (!ok || *rc) {
		cJSON_Delete(s);
		*rc = *rc ? *rc : nomem(ctx);
		return NULL;
	}
	return s;
}

static cJSON *clients_json(void)
{
	cJSON *arr = cJSON_CreateArray(), *c = cJSON_CreateObject();
	bool ok = arr && c;

	/* By name: the password is resolved by the loader, never printed. */
	add_str(c, "user", getenv("TOKENPOOL_CLIENT_USER"), &ok);
	add_str(c, "password_env", "TOKENPOOL_CLIENT_PASSWORD", &ok);
	if (ok && cJSON_AddItemToArray(arr, c))
		return arr;
	cJSON_Delete(c);
	cJSON_Delete(arr);
	return NULL;
}

static cJSON *pool_json(env_ctx_t *ctx, const env_pool_t *p, int *rc)
{
	cJSON *pool = cJSON_CreateObject(), *clients = clients_json();
	cJSON *server = pool && clients ? server_json(ctx, p, rc) : NULL;
	bool ok = server != NULL;

	cJSON *limits = cJSON_CreateObject();

	ok = ok && limits;
	add_str(pool, "name", p->cs.database, &ok);
	add_str(pool, "protocol", conf_protocol_name(p->db->protocol), &ok);
	add_str(pool, "listen", p->listen, &ok);
	/* Pool limits a sidecar can only set here; the loader validates the
	 * mode like the file's pool.mode. */
	add_str(limits, "mode", env("TOKENPOOL_POOL_MODE"), &ok);
	if (ctx->pool_size &&
	    !cJSON_AddNumberToObject(limits, "size", ctx->pool_size))
		ok = false;
	if (ctx->max_clients &&
	    !cJSON_AddNumberToObject(limits, "max_clients", ctx->max_clients))
		ok = false;
	if (ok && cJSON_AddItemToObject(pool, "pool", limits))
		limits = NULL;
	else
		ok = false;
	cJSON_Delete(limits);
	if (ok && cJSON_AddItemToObject(pool, "server", server)) {
		server = NULL;
		if (cJSON_AddItemToObject(pool, "clients", clients))
			return pool;
	}
	cJSON_Delete(server);
	cJSON_Delete(clients);
	cJSON_Delete(pool);
	*rc = *rc ? *rc : nomem(ctx);
	return NULL;
}

/* Top level: where the identity endpoints are, for tests and sovereign
 * clouds (the names are those the Azure SDKs and our tests use); the HTTP
 * endpoint and logging, which a sidecar can only set this way (probes come
 * from the node, so TOKENPOOL_HTTP_LISTEN=0.0.0.0:9090 is common). */
static cJSON *root_json(env_ctx_t *ctx)
{
	cJSON *root = cJSON_CreateObject(), *id = cJSON_CreateObject();
	cJSON *http = cJSON_CreateObject(), *log = cJSON_CreateObject();
	bool ok = root && id && http && log;

	add_str(id, "imds_endpoint", env("TOKENPOOL_IMDS_ENDPOINT"), &ok);
	add_str(id, "authority", env("AZURE_AUTHORITY_HOST"), &ok);
	add_str(http, "listen", getenv("TOKENPOOL_HTTP_LISTEN"), &ok);
	if (env("TOKENPOOL_ADMIN_TOKEN"))
		add_str(http, "admin_token_env", "TOKENPOOL_ADMIN_TOKEN", &ok);
	add_str(log, "level", env("TOKENPOOL_LOG_LEVEL"), &ok);
	add_str(log, "format", env("TOKENPOOL_LOG_FORMAT"), &ok);
	if (ok && cJSON_AddItemToObject(root, "http", http)) {
		http = NULL;
		if (cJSON_AddItemToObject(root, "log", log)) {
			log = NULL;
			if (cJSON_AddItemToObject(root, "identity", id)) {
				if (cJSON_AddArrayToObject(root, "pools"))
					return root;
				id = NULL; /* root owns it */
			}
		}
	}
	cJSON_Delete(http);
	cJSON_Delete(log);
	cJSON_Delete(id);
	cJSON_Delete(root);
	return NULL;
}

static int build_doc(env_ctx_t *ctx, const env_pool_t *pools, cJSON **out)
{
	cJSON *root = root_json(ctx), *arr;
	int rc = root ? 0 : nomem(ctx);

	arr = root ? cJSON_GetObjectItem(root, "pools") : NULL;
	for (size_t i = 0; i < NDBS && !rc; i++) {
		if (!pools[i].have)
			continue;
		cJSON *pool = pool_json(ctx, &pools[i], &rc);
		if (pool && !cJSON_AddItemToArray(arr, pool)) {
			cJSON_Delete(pool);
			rc = nomem(ctx);
		}
	}
	if (rc) {
		cJSON_Delete(root);
		return rc;
	}
	*out = root;
	return 0;
}

/* ---- loading ---- */

/* A loader error names a key path; add the variable behind it. */
static void blame(env_ctx_t *ctx, const env_pool_t *pools)
{
	const char *src = NULL;
	size_t n = strlen(ctx->err), idx = 0;
	unsigned long want;

	if (strncmp(ctx->err, "identity.imds_endpoint", 22) == 0)
		src = "TOKENPOOL_IMDS_ENDPOINT";
	else if (strncmp(ctx->err, "identity.authority", 18) == 0)
		src = "AZURE_AUTHORITY_HOST";
	else if (strncmp(ctx->err, "pools[", 6) == 0) {
		want = strtoul(ctx->err + 6, NULL, 10);
		for (size_t i = 0; i < NDBS && !src; i++) {
			if (pools[i].have && idx++ == want)
				src = pools[i].source;
		}
	}
	if (src && n < ctx->errlen)
		snprintf(ctx->err + n, ctx->errlen - n, " (from %s)", src);
}

static int load_doc(env_ctx_t *ctx, const cJSON *doc, const env_pool_t *pools,
		    conf_t **out)
{
	char *text = cJSON_PrintUnformatted(doc);
	conf__ctx_t wctx = {0};
	int rc;

	if (!text)
		return nomem(ctx);
	rc = conf_load_string(text, out, ctx->err, ctx->errlen);
	free(text);
	if (rc == TP_ECONFIG && ctx->err && ctx->errlen)
		blame(ctx, pools);
	if (rc)
		return rc;
	wctx.conf = *out;
	wctx.err = ctx->err;
	wctx.errlen = ctx->errlen;
	for (size_t i = 0; i < ctx->nwarn && !rc; i++)
		rc = conf__warn(&wctx, "%s", ctx->warn[i]);
	if (rc) {
		conf_free(*out);
		*out = NULL;
	}
	return rc;
}

static int no_database(env_ctx_t *ctx)
{
	return fail(ctx, "no database in the environment: set "
			 "AZURE_POSTGRESQL_CONNECTIONSTRING, "
			 "AZURE_MYSQL_CONNECTIONSTRING or "
			 "AZURE_SQL_CONNECTIONSTRING (or their _HOST / "
			 "_SERVER variables)");
}

int conf_load_env(conf_t **out, char *err, size_t errlen)
{
	env_ctx_t ctx = {.err = err, .errlen = errlen};
	env_pool_t pools[NDBS];
	cJSON *doc = NULL;
	bool any = false;
	int rc;

	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	memset(pools, 0, sizeof(pools));
	rc = read_globals(&ctx);
	for (size_t i = 0; i < NDBS && !rc; i++) {
		rc = read_pool(&ctx, &dbs[i], &pools[i]);
		any = any || pools[i].have;
	}
	if (!rc && !any)
		rc = no_database(&ctx);
	if (!rc)
		rc = build_doc(&ctx, pools, &doc);
	if (!rc)
		rc = load_doc(&ctx, doc, pools, out);
	cJSON_Delete(doc);
	for (size_t i = 0; i < NDBS; i++)
		conf__connstr_free(&pools[i].cs);
	for (size_t i = 0; i < ctx.nwarn; i++)
		free(ctx.warn[i]);
	return rc;
}
