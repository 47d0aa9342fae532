/*
 * server.c - a pool's "server" object: the upstream database, how
 * tokenpool logs in to it and how the link is protected.
 *
 * Rules enforced here: a token never crosses the network in clear
 * (tls.mode "disable" is refused with auth "token"); auth "password" needs
 * exactly one of password_env, password_file; password settings with auth
 * "token" are refused rather than ignored, since they mean the user
 * expected a password login.
 *
 * Not here: defaults that depend on the pool's name (pools.c), connecting.
 */
#include <stdlib.h>

#include "conf/internal.h"

static const char *const server_keys[] = {
    "host",	"port",		"database",	 "user", "auth", "scope",
    "identity", "password_env", "password_file", "tls",	 NULL,
};

static const char *const tls_keys[] = {"mode", "ca_file", "server_name", NULL};

static int tls_fields(conf__ctx_t *ctx, const cJSON *obj, conf_server_t *s)
{
	int mode = CONF_TLS_VERIFY_FULL;
	int rc = conf__enum(ctx, obj, "mode", conf__tls_mode_names,
			    CONF__COUNT(conf__tls_mode_names),
			    CONF_TLS_VERIFY_FULL, &mode);

	s->tls.mode = (conf_tls_mode_t)mode;
	if (rc ||
	    (rc = conf__readable_file(ctx, obj, "ca_file", &s->tls.ca_file)) ||
	    (rc = conf__string(ctx, obj, "server_name", NULL, 0,
			       &s->tls.server_name)))
		return rc;
	if (mode == CONF_TLS_DISABLE && s->auth == CONF_AUTH_TOKEN)
		return conf__fail_at(ctx, "mode",
				     "disable is refused when server.auth is "
				     "token (a token never crosses the network "
				     "in clear)");
	if (mode != CONF_TLS_REQUIRE)
		return 0;
	size_t mark = conf__push(ctx, "mode");
	rc = conf__warn(ctx, "require encrypts but does not verify the "
			     "server certificate; use verify-full");
	conf__pop(ctx, mark);
	return rc;
}

static int parse_tls(conf__ctx_t *ctx, const cJSON *server, conf_server_t *s)
{
	const cJSON *obj;
	int rc = conf__object(ctx, server, "tls", tls_keys, &obj);

	if (rc)
		return rc;
	size_t mark = conf__push(ctx, "tls");
	rc = tls_fields(ctx, obj, s);
	conf__pop(ctx, mark);
	return rc;
}

static int parse_password(conf__ctx_t *ctx, const cJSON *obj, conf_server_t *s)
{
	bool env = conf__item(obj, "password_env") != NULL;
	bool file = conf__item(obj, "password_file") != NULL;

	if (s->auth == CONF_AUTH_TOKEN) {
		if (env || file)
			return conf__fail_at(
			    ctx, env ? "password_env" : "password_file",
			    "is only used when auth is password (set "
			    "\"auth\": \"password\" or remove it)");
		return 0;
	}
	if (!env && !file)
		return conf__fail(ctx, "one of password_env, password_file is "
				       "required when auth is password");
	if (env && file)
		return conf__fail(ctx, "give only one of password_env, "
				       "password_file");
	if (env)
		return conf__env_secret(ctx, obj, "password_env",
					&s->password_env, &s->password);
	return conf__file_secret(ctx, obj, "password_file", &s->password_file,
				 &s->password);
}

static int parse_identity(conf__ctx_t *ctx, const cJSON *server,
			  const conf_t *conf, conf_server_t *s)
{
	const cJSON *obj;
	int rc =
	    conf__object(ctx, server, "identity", conf__identity_keys, &obj);

	/* Absent or null: the pool uses the top-level identity. */
	if (rc || !obj)
		return rc;
	if (!(s->identity = calloc(1, sizeof(*s->identity))))
		return conf__nomem(ctx);
	size_t mark = conf__push(ctx, "identity");
	rc = conf__parse_identity(ctx, obj, &conf->identity, s->identity);
	conf__pop(ctx, mark);
	return rc;
}

static int server_fields(conf__ctx_t *ctx, const cJSON *obj, const conf_t *conf,
			 conf_pool_t *p)
{
	conf_server_t *s = &p->server;
	int auth = CONF_AUTH_TOKEN;
	int rc;

	if ((rc = conf__string(ctx, obj, "host", NULL, CONF__REQUIRED,
			       &s->host)) ||
	    (rc = conf__int(ctx, obj, "port", conf__protocol_ports[p->protocol],
			    1, 65535, &s->port)) ||
	    (rc = conf__string(ctx, obj, "database", NULL, 0, &s->database)) ||
	    (rc = conf__string(ctx, obj, "user", NULL, CONF__REQUIRED,
			       &s->user)) ||
	    (rc = conf__enum(ctx, obj, "auth", conf__auth_names,
			     CONF__COUNT(conf__auth_names), CONF_AUTH_TOKEN,
			     &auth)))
		return rc;
	s->auth = (conf_auth_t)auth;
	if ((rc = conf__string(ctx, obj, "scope",
			       conf__protocol_scopes[p->protocol], 0,
			       &s->scope)) ||
	    (rc = parse_identity(ctx, obj, conf, s)) ||
	    (rc = parse_password(ctx, obj, s)))
		return rc;
	return parse_tls(ctx, obj, s);
}

int conf__parse_server(conf__ctx_t *ctx, const cJSON *pool, const conf_t *conf,
		       conf_pool_t *p)
{
	const cJSON *obj;
	int rc = conf__object(ctx, pool, "server", server_keys, &obj);

	if (rc)
		return rc;
	if (!obj)
		return conf__fail_at(ctx, "server", "is required");
	size_t mark = conf__push(ctx, "server");
	rc = server_fields(ctx, obj, conf, p);
	conf__pop(ctx, mark);
	return rc;
}

void conf__free_server(conf_server_t *s)
{
	free(s->host);
	free(s->database);
	free(s->user);
	free(s->scope);
	conf__free_identity(s->identity);
	free(s->identity);
	free(s->password_env);
	free(s->password_file);
	conf__free_secret(s->password);
	free(s->tls.ca_file);
	free(s->tls.server_name);
}
