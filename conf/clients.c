/*
 * clients.c - a pool's "clients": the local users and the static
 * credentials they log in to tokenpool with.
 *
 * Each client has exactly one credential key: password (inline),
 * password_env, password_file or password_hash (a string or an array of
 * strings, e.g. during a rotation). Plain passwords are resolved now;
 * hashes are kept as given. A user appears once per pool (compared
 * byte for byte, as PostgreSQL and MySQL do).
 *
 * Not here: hash formats and verification (auth/).
 */
#include <stdlib.h>
#include <string.h>

#include "conf/internal.h"

static const char *const client_keys[] = {
    "user", "password", "password_env", "password_file", "password_hash", NULL,
};

static const char *const credential_keys[] = {
    "password",
    "password_env",
    "password_file",
    "password_hash",
};

static int hash_at(conf__ctx_t *ctx, const cJSON *v, char **out)
{
	if (!cJSON_IsString(v) || !v->valuestring || !*v->valuestring)
		return conf__fail_expected(ctx, v, true, "a non-empty string");
	return conf__strdup(ctx, v->valuestring, out);
}

static int hash_list(conf__ctx_t *ctx, const cJSON *v, conf_client_t *c)
{
	int n = cJSON_GetArraySize(v);
	int rc = 0;

	if (n <= 0)
		return conf__fail(ctx, "expected a string or a non-empty array "
				       "of strings, got []");
	if (!(c->hashes = calloc((size_t)n, sizeof(*c->hashes))))
		return conf__nomem(ctx);
	c->nhashes = (size_t)n;
	const cJSON *item = v->child;
	for (size_t i = 0; item && !rc; item = item->next, i++) {
		size_t mark = conf__push_index(ctx, i);
		rc = hash_at(ctx, item, &c->hashes[i]);
		conf__pop(ctx, mark);
	}
	return rc;
}

static int parse_hashes(conf__ctx_t *ctx, const cJSON *obj, conf_client_t *c)
{
	const cJSON *v = conf__item(obj, "password_hash");
	int rc;

	if (!v)
		return 0;
	size_t mark = conf__push(ctx, "password_hash");
	if (cJSON_IsArray(v)) {
		rc = hash_list(ctx, v, c);
	} else if (cJSON_IsString(v)) {
		if (!(c->hashes = calloc(1, sizeof(*c->hashes)))) {
			rc = conf__nomem(ctx);
		} else {
			c->nhashes = 1;
			rc = hash_at(ctx, v, &c->hashes[0]);
		}
	} else {
		rc = conf__fail_expected(ctx, v, true,
					 "a string or an array of strings");
	}
	conf__pop(ctx, mark);
	return rc;
}

static int inline_password(conf__ctx_t *ctx, const cJSON *obj, conf_client_t *c)
{
	int rc = conf__string(ctx, obj, "password", NULL, CONF__SECRET,
			      &c->password);

	if (rc || !ctx->file_exposed || ctx->warned_exposed)
		return rc;
	ctx->warned_exposed = true;
	size_t mark = conf__push(ctx, "password");
	rc = conf__warn(ctx,
			"inline password in %s, which group or others can "
			"read: chmod 600 it, or use password_env or "
			"password_file",
			ctx->file);
	conf__pop(ctx, mark);
	return rc;
}

static int parse_credential(conf__ctx_t *ctx, const cJSON *obj,
			    conf_client_t *c)
{
	const char *given[2] = {NULL, NULL};
	size_t n = 0;

	for (size_t i = 0; i < CONF__COUNT(credential_keys); i++) {
		if (!conf__item(obj, credential_keys[i]))
			continue;
		if (n < 2)
			given[n] = credential_keys[i];
		n++;
	}
	if (n == 0)
		return conf__fail(ctx, "one of password, password_env, "
				       "password_file, password_hash is "
				       "required");
	if (n > 1)
		return conf__fail(ctx,
				  "give only one of password, password_env, "
				  "password_file, password_hash (found %s and "
				  "%s)",
				  given[0], given[1]);
	if (given[0] == credential_keys[0])
		return inline_password(ctx, obj, c);
	if (given[0] == credential_keys[1])
		return conf__env_secret(ctx, obj, "password_env",
					&c->password_env, &c->password);
	if (given[0] == credential_keys[2])
		return conf__file_secret(ctx, obj, "password_file",
					 &c->password_file, &c->password);
	return parse_hashes(ctx, obj, c);
}

static int parse_client(conf__ctx_t *ctx, const cJSON *item, conf_client_t *c)
{
	int rc;

	if (!cJSON_IsObject(item))
		return conf__fail_expected(ctx, item, true, "an object");
	if ((rc = conf__check_keys(ctx, item, client_keys)) ||
	    (rc = conf__string(ctx, item, "user", NULL, CONF__REQUIRED,
			       &c->user)))
		return rc;
	return parse_credential(ctx, item, c);
}

static int unique_user(conf__ctx_t *ctx, const conf_pool_t *p, size_t i)
{
	for (size_t j = 0; j < i; j++) {
		if (strcmp(p->clients[j].user, p->clients[i].user) == 0)
			return conf__fail_at(ctx, "user",
					     "duplicate user \"%s\" (also "
					     "clients[%zu])",
					     p->clients[i].user, j);
	}
	return 0;
}

static int client_list(conf__ctx_t *ctx, const cJSON *arr, conf_pool_t *p)
{
	int n = cJSON_GetArraySize(arr);
	int rc = 0;

	if (n <= 0)
		return conf__fail(ctx, "at least one client is required");
	if (!(p->clients = calloc((size_t)n, sizeof(*p->clients))))
		return conf__nomem(ctx);
	p->nclients = (size_t)n;
	const cJSON *item = arr->child;
	for (size_t i = 0; item && !rc; item = item->next, i++) {
		size_t mark = conf__push_index(ctx, i);
		rc = parse_client(ctx, item, &p->clients[i]);
		if (!rc)
			rc = unique_user(ctx, p, i);
		conf__pop(ctx, mark);
	}
	return rc;
}

int conf__parse_clients(conf__ctx_t *ctx, const cJSON *pool, conf_pool_t *p)
{
	const cJSON *arr = conf__item(pool, "clients");
	int rc;

	size_t mark = conf__push(ctx, "clients");
	if (!arr)
		rc = conf__fail(ctx, "at least one client is required");
	else if (!cJSON_IsArray(arr))
		rc = conf__fail_expected(ctx, arr, true, "an array");
	else
		rc = client_list(ctx, arr, p);
	conf__pop(ctx, mark);
	return rc;
}

void conf__free_client(conf_client_t *c)
{
	free(c->user);
	conf__free_secret(c->password);
	free(c->password_env);
	free(c->password_file);
	for (size_t i = 0; i < c->nhashes; i++)
		conf__free_secret(c->hashes[i]);
	free(c->hashes);
}
