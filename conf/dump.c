/*
 * dump.c - the effective config as JSON, for `tokenpool check`.
 *
 * Every key is printed, defaults included, in the order of the documented
 * example, so the output is itself a valid config meaning the same thing
 * (secrets aside). Secret values (inline passwords, password hashes) are
 * printed as "***"; resolved secrets (client secrets, the admin token,
 * passwords read from variables or files) are not printed at all, only the
 * name of the variable or file they came from.
 *
 * Not here: validation (the snapshot is valid by construction).
 */
#include <stdlib.h>

#include "conf/internal.h"

#define MASK "***"

/* Adds v under key; on any failure frees v and clears *ok, so a chain of
 * put() calls needs one check at the end. */
static void put(cJSON *obj, const char *key, cJSON *v, bool *ok)
{
	if (!v || !obj || !cJSON_AddItemToObject(obj, key, v)) {
		cJSON_Delete(v);
		*ok = false;
	}
}

static cJSON *str(const char *s)
{
	return s ? cJSON_CreateString(s) : cJSON_CreateNull();
}

static cJSON *finish(cJSON *obj, bool ok)
{
	if (ok)
		return obj;
	cJSON_Delete(obj);
	return NULL;
}

static cJSON *dump_identity(const conf_identity_t *id)
{
	cJSON *o = cJSON_CreateObject();
	bool ok = true;

	put(o, "source", str(conf_source_name(id->source)), &ok);
	put(o, "client_id", str(id->client_id), &ok);
	put(o, "object_id", str(id->object_id), &ok);
	put(o, "resource_id", str(id->resource_id), &ok);
	put(o, "tenant_id", str(id->tenant_id), &ok);
	put(o, "client_secret_env", str(id->client_secret_env), &ok);
	put(o, "certificate_file", str(id->certificate_file), &ok);
	put(o, "federated_token_file", str(id->federated_token_file), &ok);
	put(o, "imds_endpoint", str(id->imds_endpoint), &ok);
	put(o, "authority", str(id->authority), &ok);
	return finish(o, ok);
}

static cJSON *dump_server(const conf_server_t *s)
{
	cJSON *o = cJSON_CreateObject(), *tls = cJSON_CreateObject();
	bool ok = true;

	put(o, "host", str(s->host), &ok);
	put(o, "port", cJSON_CreateNumber(s->port), &ok);
	put(o, "database", str(s->database), &ok);
	put(o, "user", str(s->user), &ok);
	put(o, "auth", str(conf__auth_names[s->auth]), &ok);
	put(o, "scope", str(s->scope), &ok);
	put(o, "identity",
	    s->identity ? dump_identity(s->identity) : cJSON_CreateNull(), &ok);
	put(o, "password_env", str(s->password_env), &ok);
	put(o, "password_file", str(s->password_file), &ok);
	put(tls, "mode", str(conf__tls_mode_names[s->tls.mode]), &ok);
	put(tls, "ca_file", str(s->tls.ca_file), &ok);
	put(tls, "server_name", str(s->tls.server_name), &ok);
	put(o, "tls", tls, &ok);
	return finish(o, ok);
}

static cJSON *dump_hashes(const conf_client_t *c)
{
	if (c->nhashes == 1)
		return cJSON_CreateString(MASK);
	cJSON *a = cJSON_CreateArray();
	bool ok = a != NULL;
	for (size_t i = 0; ok && i < c->nhashes; i++) {
		cJSON *v = cJSON_CreateString(MASK);
		if (!v || !cJSON_AddItemToArray(a, v)) {
			cJSON_Delete(v);
			ok = false;
		}
	}
	return finish(a, ok);
}

static cJSON *dump_client(const conf_client_t *c)
{
	cJSON *o = cJSON_CreateObject();
	bool ok = true;

	put(o, "user", str(c->user), &ok);
	if (c->password_env)
		put(o, "password_env", str(c->password_env), &ok);
	else if (c->password_file)
		put(o, "password_file", str(c->password_file), &ok);
	else if (c->password)
		put(o, "password", str(MASK), &ok);
	else
		put(o, "password_hash", dump_hashes(c), &ok);
	return finish(o, ok);
}

static cJSON *dump_clients(const conf_pool_t *p)
{
	cJSON *a = cJSON_CreateArray();
	bool ok = a != NULL;

	for (size_t i = 0; ok && i < p->nclients; i++) {
		cJSON *v = dump_client(&p->clients[i]);
		if (!v || !cJSON_AddItemToArray(a, v)) {
			cJSON_Delete(v);
			ok = false;
		}
	}
	return finish(a, ok);
}

static cJSON *dump_limits(const conf_pool_limits_t *l)
{
	cJSON *o = cJSON_CreateObject();
	bool ok = true;

	put(o, "mode", str(conf__pool_mode_names[l->mode]), &ok);
	put(o, "size", cJSON_CreateNumber(l->size), &ok);
	put(o, "min_idle", cJSON_CreateNumber(l->min_idle), &ok);
	put(o, "max_clients", cJSON_CreateNumber(l->max_clients), &ok);
	put(o, "wait_timeout", cJSON_CreateNumber(l->wait_timeout), &ok);
	put(o, "connect_timeout", cJSON_CreateNumber(l->connect_timeout), &ok);
	put(o, "idle_timeout", cJSON_CreateNumber(l->idle_timeout), &ok);
	put(o, "lifetime", cJSON_CreateNumber(l->lifetime), &ok);
	return finish(o, ok);
}

static cJSON *dump_pool(const conf_pool_t *p)
{
	cJSON *o = cJSON_CreateObject(), *ctls = cJSON_CreateObject();
	bool ok = true;

	put(o, "name", str(p->name), &ok);
	put(o, "protocol", str(conf_protocol_name(p->protocol)), &ok);
	put(o, "listen", str(p->listen), &ok);
	put(o, "server", dump_server(&p->server), &ok);
	put(o, "clients", dump_clients(p), &ok);
	put(ctls, "mode", str(conf__client_tls_mode_names[p->client_tls.mode]),
	    &ok);
	put(ctls, "cert_file", str(p->client_tls.cert_file), &ok);
	put(ctls, "key_file", str(p->client_tls.key_file), &ok);
	put(o, "client_tls", ctls, &ok);
	put(o, "pool", dump_limits(&p->pool), &ok);
	return finish(o, ok);
}

static cJSON *dump_pools(const conf_t *conf)
{
	cJSON *a = cJSON_CreateArray();
	bool ok = a != NULL;

	for (size_t i = 0; ok && i < conf->npools; i++) {
		cJSON *v = dump_pool(&conf->pools[i]);
		if (!v || !cJSON_AddItemToArray(a, v)) {
			cJSON_Delete(v);
			ok = false;
		}
	}
	return finish(a, ok);
}

static cJSON *dump(const conf_t *conf)
{
	cJSON *o = cJSON_CreateObject(), *log = cJSON_CreateObject(),
	      *http = cJSON_CreateObject(), *sd = cJSON_CreateObject();
	bool ok = true;

	put(log, "level", str(conf__log_level_names[conf->log_level]), &ok);
	put(log, "format", str(conf__log_format_names[conf->log_json]), &ok);
	put(o, "log", log, &ok);
	/* "" (not null, which would mean the default) keeps it disabled
	 * when the output is loaded again. */
	put(http, "listen", str(conf->http_listen ? conf->http_listen : ""),
	    &ok);
	put(http, "admin_token_env", str(conf->admin_token_env), &ok);
	put(o, "http", http, &ok);
	put(sd, "timeout", cJSON_CreateNumber(conf->shutdown_timeout), &ok);
	put(o, "shutdown", sd, &ok);
	put(o, "identity", dump_identity(&conf->identity), &ok);
	put(o, "pools", dump_pools(conf), &ok);
	return finish(o, ok);
}

char *conf_to_json(const conf_t *conf)
{
	cJSON *root = conf ? dump(conf) : NULL;
	char *text = root ? cJSON_Print(root) : NULL;

	cJSON_Delete(root);
	return text;
}
