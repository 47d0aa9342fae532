/*
 * identity.c - the "identity" object: which Entra identity tokens are
 * fetched as, and where the identity endpoints are.
 *
 * The same parser reads the top-level "identity" and a pool's
 * "server.identity". A pool's identity is complete on its own for the keys
 * that say WHO logs in (source, the ids, the secret and file settings):
 * none of those is inherited, so a pool never ends up mixing another
 * identity's client id with its own secret. The two keys that say WHERE
 * the endpoints are (imds_endpoint, authority) describe the environment
 * rather than the identity, so a pool that omits them inherits the
 * top-level values (a sovereign cloud or a test stand-in is set once).
 *
 * Not here: fetching tokens, or reading AZURE_* variables for "auto"
 * (auth/ does both at run time).
 */
#include <stdlib.h>

#include "conf/internal.h"

const char *const conf__identity_keys[] = {
    "source",
    "client_id",
    "object_id",
    "resource_id",
    "tenant_id",
    "client_secret_env",
    "certificate_file",
    "federated_token_file",
    "imds_endpoint",
    "authority",
    NULL,
};

static int parse_ids(conf__ctx_t *ctx, const cJSON *obj, conf_identity_t *id)
{
	int rc, n;

	if ((rc = conf__string(ctx, obj, "client_id", NULL, 0,
			       &id->client_id)) ||
	    (rc = conf__string(ctx, obj, "object_id", NULL, 0,
			       &id->object_id)) ||
	    (rc = conf__string(ctx, obj, "resource_id", NULL, 0,
			       &id->resource_id)) ||
	    (rc = conf__string(ctx, obj, "tenant_id", NULL, 0, &id->tenant_id)))
		return rc;
	/* Managed identity endpoints accept one selector; a second one is
	 * a mistake that would surface only as an HTTP 400 later. */
	n = !!id->client_id + !!id->object_id + !!id->resource_id;
	if (n > 1)
		return conf__fail(ctx, "give at most one of client_id, "
				       "object_id, resource_id");
	return 0;
}

int conf__parse_identity(conf__ctx_t *ctx, const cJSON *obj,
			 const conf_identity_t *inherit, conf_identity_t *out)
{
	int src = CONF_SRC_AUTO;
	int rc =
	    conf__enum(ctx, obj, "source", conf__source_names,
		       CONF__COUNT(conf__source_names), CONF_SRC_AUTO, &src);

	out->source = (conf_source_t)src;
	if (rc || (rc = parse_ids(ctx, obj, out)))
		return rc;
	if ((rc = conf__env_secret(ctx, obj, "client_secret_env",
				   &out->client_secret_env,
				   &out->client_secret)) ||
	    (rc = conf__readable_file(ctx, obj, "certificate_file",
				      &out->certificate_file)) ||
	    (rc = conf__string(ctx, obj, "federated_token_file", NULL, 0,
			       &out->federated_token_file)))
		return rc;
	rc = conf__url(ctx, obj, "imds_endpoint",
		       inherit ? inherit->imds_endpoint
			       : "http://169.254.169.254",
		       false, &out->imds_endpoint);
	if (rc)
		return rc;
	return conf__url(ctx, obj, "authority",
			 inherit ? inherit->authority
				 : "https://login.microsoftonline.com",
			 true, &out->authority);
}

void conf__free_identity(conf_identity_t *id)
{
	if (!id)
		return;
	free(id->client_id);
	free(id->object_id);
	free(id->resource_id);
	free(id->tenant_id);
	free(id->client_secret_env);
	conf__free_secret(id->client_secret);
	free(id->certificate_file);
	free(id->federated_token_file);
	free(id->imds_endpoint);
	free(id->authority);
}
