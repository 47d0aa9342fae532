/*
 * compare.c - whether two snapshots describe the same upstream for a pool
 * (reload: an unchanged pool keeps its server connections; a changed one
 * drains them).
 */
#include <string.h>

#include "conf/conf.h"

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool same_identity(const conf_identity_t *a, const conf_identity_t *b)
{
	return a->source == b->source && same_str(a->client_id, b->client_id) &&
	       same_str(a->object_id, b->object_id) &&
	       same_str(a->resource_id, b->resource_id) &&
	       same_str(a->tenant_id, b->tenant_id) &&
	       same_str(a->client_secret, b->client_secret) &&
	       same_str(a->certificate_file, b->certificate_file) &&
	       same_str(a->federated_token_file, b->federated_token_file) &&
	       same_str(a->imds_endpoint, b->imds_endpoint) &&
	       same_str(a->authority, b->authority);
}

bool conf_server_equal(const conf_t *ca, const conf_pool_t *a, const conf_t *cb,
		       const conf_pool_t *b)
{
	const conf_server_t *sa = &a->server, *sb = &b->server;

	return a->protocol == b->protocol && same_str(sa->host, sb->host) &&
	       sa->port == sb->port && same_str(sa->database, sb->database) &&
	       same_str(sa->user, sb->user) && sa->auth == sb->auth &&
	       same_str(sa->scope, sb->scope) &&
	       same_str(sa->password, sb->password) &&
	       sa->tls.mode == sb->tls.mode &&
	       same_str(sa->tls.ca_file, sb->tls.ca_file) &&
	       same_str(sa->tls.server_name, sb->tls.server_name) &&
	       same_identity(conf_pool_identity(ca, a),
			     conf_pool_identity(cb, b));
}

bool conf_client_tls_equal(const conf_client_tls_t *a,
			   const conf_client_tls_t *b)
{
	return a->mode == b->mode && same_str(a->cert_file, b->cert_file) &&
	       same_str(a->key_file, b->key_file);
}
