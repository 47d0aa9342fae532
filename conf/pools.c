/*
 * pools.c - the "pools" array: one pool per upstream database, with its
 * local listener, client TLS and sizing, and the rules that span pools.
 *
 * Defaults that depend on other keys live here: the listener defaults to
 * 127.0.0.1 on the protocol's usual port, the pool name to
 * server.database and server.database to the pool name (one of the two is
 * required). Rules across pools: at least one pool, unique names, and a
 * listener shared only by pools of one protocol (clients pick the pool by
 * database name, so the protocol must be known before that).
 *
 * Not here: the server and clients objects (server.c, clients.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/internal.h"

static const char *const pool_keys[] = {
    "name",    "protocol",   "listen", "server",
    "clients", "client_tls", "pool",   NULL,
};

static const char *const client_tls_keys[] = {"mode", "cert_file", "key_file",
					      NULL};

static const char *const limits_keys[] = {
    "mode",	    "size",	    "min_idle",
    "max_clients",  "wait_timeout", "connect_timeout",
    "idle_timeout", "lifetime",	    NULL,
};

static int client_tls_fields(conf__ctx_t *ctx, const cJSON *obj,
			     conf_client_tls_t *t)
{
	int mode = CONF_CTLS_ALLOW;
	int rc = conf__enum(ctx, obj, "mode", conf__client_tls_mode_names,
			    CONF__COUNT(conf__client_tls_mode_names),
			    CONF_CTLS_ALLOW, &mode);

	t->mode = (conf_client_tls_mode_t)mode;
	if (rc ||
	    (rc = conf__readable_file(ctx, obj, "cert_file", &t->cert_file)) ||
	    (rc = conf__readable_file(ctx, obj, "key_file", &t->key_file)))
		return rc;
	if (t->cert_file && !t->key_file)
		return conf__fail_at(ctx, "key_file",
				     "is required when cert_file is set");
	if (t->key_file && !t->cert_file)
		return conf__fail_at(ctx, "cert_file",
				     "is required when key_file is set");
	return 0;
}

static int limits_fields(conf__ctx_t *ctx, const cJSON *obj,
			 conf_pool_limits_t *l)
{
	int mode = CONF_POOL_SESSION;
	int rc = conf__enum(ctx, obj, "mode", conf__pool_mode_names,
			    CONF__COUNT(conf__pool_mode_names),
			    CONF_POOL_SESSION, &mode);

	l->mode = (conf_pool_mode_t)mode;
	if (rc ||
	    (rc = conf__int(ctx, obj, "size", 20, 1, CONF__COUNT_MAX,
			    &l->size)) ||
	    (rc = conf__int(ctx, obj, "min_idle", 0, 0, CONF__COUNT_MAX,
			    &l->min_idle)) ||
	    (rc = conf__int(ctx, obj, "max_clients", 1000, 1, CONF__COUNT_MAX,
			    &l->max_clients)) ||
	    (rc = conf__seconds(ctx, obj, "wait_timeout", 30, false,
				&l->wait_timeout)) ||
	    (rc = conf__seconds(ctx, obj, "connect_timeout", 10, true,
				&l->connect_timeout)) ||
	    (rc = conf__seconds(ctx, obj, "idle_timeout", 600, false,
				&l->idle_timeout)) ||
	    (rc = conf__seconds(ctx, obj, "lifetime", 3600, false,
				&l->lifetime)))
		return rc;
	if (l->min_idle > l->size)
		return conf__fail_at(ctx, "min_idle",
				     "must not exceed pool.size (%d), got %d",
				     l->size, l->min_idle);
	return 0;
}

static int parse_client_tls(conf__ctx_t *ctx, const cJSON *pool, conf_pool_t *p)
{
	const cJSON *obj;
	int rc = conf__object(ctx, pool, "client_tls", client_tls_keys, &obj);

	if (rc)
		return rc;
	size_t mark = conf__push(ctx, "client_tls");
	rc = client_tls_fields(ctx, obj, &p->client_tls);
	conf__pop(ctx, mark);
	return rc;
}

static int parse_limits(conf__ctx_t *ctx, const cJSON *pool, conf_pool_t *p)
{
	const cJSON *obj;
	int rc = conf__object(ctx, pool, "pool", limits_keys, &obj);

	if (rc)
		return rc;
	size_t mark = conf__push(ctx, "pool");
	rc = limits_fields(ctx, obj, &p->pool);
	conf__pop(ctx, mark);
	return rc;
}

static int parse_names(conf__ctx_t *ctx, const cJSON *obj, conf_pool_t *p)
{
	int rc =
	    conf__string(ctx, obj, "name", p->server.database, 0, &p->name);

	if (rc)
		return rc;
	if (!p->name)
		return conf__fail(ctx,
				  "one of name, server.database is required");
	if (!p->server.database)
		return conf__strdup(ctx, p->name, &p->server.database);
	return 0;
}

static int parse_pool(conf__ctx_t *ctx, const cJSON *item, const conf_t *conf,
		      conf_pool_t *p)
{
	int proto, rc;
	char listen[32];

	if (!cJSON_IsObject(item))
		return conf__fail_expected(ctx, item, true, "an object");
	if ((rc = conf__check_keys(ctx, item, pool_keys)) ||
	    (rc = conf__enum(ctx, item, "protocol", conf__protocol_names,
			     CONF__COUNT(conf__protocol_names), -1, &proto)))
		return rc;
	p->protocol = (conf_protocol_t)proto;
	if ((rc = conf__parse_server(ctx, item, conf, p)) ||
	    (rc = parse_names(ctx, item, p)))
		return rc;
	snprintf(listen, sizeof(listen), "127.0.0.1:%d",
		 conf__protocol_ports[proto]);
	if ((rc = conf__listen(ctx, item, "listen", listen, 0, &p->listen,
			       &p->listen_host, &p->listen_port)) ||
	    (rc = conf__parse_clients(ctx, item, p)) ||
	    (rc = parse_client_tls(ctx, item, p)))
		return rc;
	return parse_limits(ctx, item, p);
}

static int pool_list(conf__ctx_t *ctx, const cJSON *arr, conf_t *conf)
{
	int n = cJSON_GetArraySize(arr);
	int rc = 0;

	if (n <= 0)
		return conf__fail(ctx, "at least one pool is required");
	if (!(conf->pools = calloc((size_t)n, sizeof(*conf->pools))))
		return conf__nomem(ctx);
	conf->npools = (size_t)n;
	const cJSON *item = arr->child;
	for (size_t i = 0; item && !rc; item = item->next, i++) {
		size_t mark = conf__push_index(ctx, i);
		rc = parse_pool(ctx, item, conf, &conf->pools[i]);
		conf__pop(ctx, mark);
	}
	return rc;
}

int conf__parse_pools(conf__ctx_t *ctx, const cJSON *root, conf_t *conf)
{
	const cJSON *arr = conf__item(root, "pools");
	int rc;

	size_t mark = conf__push(ctx, "pools");
	if (!arr)
		rc = conf__fail(ctx, "at least one pool is required");
	else if (!cJSON_IsArray(arr))
		rc = conf__fail_expected(ctx, arr, true, "an array");
	else
		rc = pool_list(ctx, arr, conf);
	conf__pop(ctx, mark);
	return rc;
}

static bool same_listener(const char *host_a, int port_a, const char *host_b,
			  int port_b)
{
	return port_a == port_b && strcasecmp(host_a, host_b) == 0;
}

/* Pool i against the pools before it. */
static int check_pool(conf__ctx_t *ctx, const conf_t *conf, size_t i)
{
	const conf_pool_t *p = &conf->pools[i];

	for (size_t j = 0; j < i; j++) {
		const conf_pool_t *q = &conf->pools[j];

		if (strcmp(p->name, q->name) == 0)
			return conf__fail_at(ctx, "name",
					     "duplicate pool name \"%s\" "
					     "(also pools[%zu])",
					     p->name, j);
		if (same_listener(p->listen_host, p->listen_port,
				  q->listen_host, q->listen_port) &&
		    p->protocol != q->protocol)
			return conf__fail_at(
			    ctx, "listen",
			    "%s is also the listener of pools[%zu] (%s); "
			    "pools may share a listener only if they "
			    "share protocol, got %s",
			    p->listen, j, conf_protocol_name(q->protocol),
			    conf_protocol_name(p->protocol));
	}
	return 0;
}

static int check_http(conf__ctx_t *ctx, const conf_t *conf)
{
	char *host;
	int port, rc = 0;

	if (!conf->http_listen)
		return 0;
	if (conf_split_hostport(conf->http_listen, &host, &port))
		return conf__nomem(ctx); /* validated at parse time */
	for (size_t i = 0; i < conf->npools && !rc; i++) {
		const conf_pool_t *p = &conf->pools[i];
		if (same_listener(host, port, p->listen_host, p->listen_port))
			rc = conf__fail(ctx,
					"http.listen: %s is also the listener "
					"of pools[%zu]",
					conf->http_listen, i);
	}
	free(host);
	return rc;
}

int conf__check_pools(conf__ctx_t *ctx, const conf_t *conf)
{
	int rc = 0;

	for (size_t i = 1; i < conf->npools && !rc; i++) {
		size_t mark = conf__push(ctx, "pools");
		conf__push_index(ctx, i);
		rc = check_pool(ctx, conf, i);
		conf__pop(ctx, mark);
	}
	return rc ? rc : check_http(ctx, conf);
}

void conf__free_pool(conf_pool_t *p)
{
	free(p->name);
	free(p->listen);
	free(p->listen_host);
	conf__free_server(&p->server);
	for (size_t i = 0; i < p->nclients; i++)
		conf__free_client(&p->clients[i]);
	free(p->clients);
	free(p->client_tls.cert_file);
	free(p->client_tls.key_file);
}
