/*
 * test_sources_select.c - which source an identity uses, given its config
 * and an environment (auth_ident_resolve, pure): the `auto` order of
 * CONTRACT.md (DefaultAzureCredential's), environment fallbacks for
 * explicit sources, AZURE_AUTHORITY_HOST, and the one-line
 * misconfiguration messages, which must name what to set and never quote
 * a secret.
 *
 * The environment is a table handed in through the getenv-like callback;
 * nothing here reads the process environment or touches a file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/internal.h"
#include "tests/unit/tp_test.h"

#define SECRET	 "s3cr3t~value-that-must-not-leak"
#define TENANT	 "72f988bf-86f1-41af-91ab-2d7cd011db47"
#define CLIENT	 "8d1f3b5a-7c9e-4d1b-a3f5-9c1e3a5d7f61"
#define DEF_AUTH "https://login.microsoftonline.com"

/* NULL-terminated name, value pairs. */
static const char *table_getenv(void *arg, const char *name)
{
	const char *const *kv = arg;

	for (; kv && kv[0]; kv += 2)
		if (strcmp(kv[0], name) == 0)
			return kv[1];
	return NULL;
}

static conf_identity_t conf_of(conf_source_t src)
{
	conf_identity_t c = {0};

	c.source = src;
	c.imds_endpoint = "http://169.254.169.254";
	c.authority = DEF_AUTH;
	return c;
}

/* Resolves; the caller frees with auth_ident_free(). */
static auth_ident_t resolve(const conf_identity_t *c, const char *const *env)
{
	auth_ident_t id;

	CHECK_EQ_INT(auth_ident_resolve(c, table_getenv, (void *)env, &id), 0);
	return id;
}

static bool has(const char *s, const char *part)
{
	bool ok = s && strstr(s, part);

	if (!ok)
		fprintf(stderr, "  \"%s\" lacks \"%s\"\n", s ? s : "(null)",
			part);
	return ok;
}

static bool no_secret(const auth_ident_t *id)
{
	return (!id->note || !strstr(id->note, SECRET)) &&
	       (!id->config_error || !strstr(id->config_error, SECRET));
}

/* ---- auto ---- */

static void test_auto_nothing_set_is_imds_then_cli(void)
{
	conf_identity_t c = conf_of(CONF_SRC_AUTO);
	auth_ident_t id = resolve(&c, NULL);

	CHECK_EQ_INT(id.source, CONF_SRC_IMDS);
	CHECK(id.cli_fallback);
	CHECK_EQ_INT(id.picked, CONF_SRC_AUTO);
	CHECK(id.config_error == NULL);
	CHECK(has(id.note, "no AZURE_CLIENT_SECRET or "
			   "AZURE_CLIENT_CERTIFICATE_PATH"));
	CHECK(has(id.note, "no AZURE_FEDERATED_TOKEN_FILE"));
	CHECK(has(id.note, "no IDENTITY_ENDPOINT"));
	CHECK(id.client_id == NULL);
	CHECK(auth_source_for(&id) != &auth__imds_source); /* the chain */
	CHECK_EQ_STR(auth_source_for(&id)->name, "auto");
	auth_ident_free(&id);
}

static void test_auto_env_client_secret(void)
{
	static const char *const env[] = {
	    "AZURE_TENANT_ID", TENANT, "AZURE_CLIENT_ID", CLIENT,
	    "AZURE_CLIENT_SECRET", SECRET,
	    /* lower in the order: must not win */
	    "AZURE_FEDERATED_TOKEN_FILE", "/var/run/token", "IDENTITY_ENDPOINT",
	    "http://127.0.0.1:1/msi/token", "IDENTITY_HEADER", "h", NULL};
	conf_identity_t c = conf_of(CONF_SRC_AUTO);
	auth_ident_t id = resolve(&c, env);

	CHECK_EQ_INT(id.source, CONF_SRC_CLIENT_SECRET);
	CHECK(!id.cli_fallback);
	CHECK_EQ_STR(id.client_secret, SECRET);
	CHECK_EQ_STR(id.tenant_id, TENANT);
	CHECK_EQ_STR(id.client_id, CLIENT);
	CHECK_EQ_STR(id.authority, DEF_AUTH);
	CHECK(id.config_error == NULL);
	CHECK(has(id.note, "identity auto: picked client_secret "
			   "(AZURE_CLIENT_SECRET"));
	CHECK(no_secret(&id));
	CHECK(auth_source_for(&id) == &auth__client_secret_source);
	auth_ident_free(&id);
}

static void test_auto_secret_wins_over_certificate(void)
{
	static const char *const env[] = {"AZURE_TENANT_ID",
					  TENANT,
					  "AZURE_CLIENT_ID",
					  CLIENT,
					  "AZURE_CLIENT_SECRET",
					  SECRET,
					  "AZURE_CLIENT_CERTIFICATE_PATH",
					  "/etc/app.pem",
					  NULL};
	conf_identity_t c = conf_of(CONF_SRC_AUTO);
	auth_ident_t id = resolve(&c, env);

	CHECK_EQ_INT(id.source, CONF_SRC_CLIENT_SECRET);
	auth_ident_free(&id);
}

static void test_auto_env_certificate(void)
{
	static const char *const env[] = {"AZURE_TENANT_ID",
					  TENANT,
					  "AZURE_CLIENT_ID",
					  CLIENT,
					  "AZURE_CLIENT_CERTIFICATE_PATH",
					  "/etc/app.pem",
					  "AZURE_CLIENT_CERTIFICATE_PASSWORD",
					  SECRET,
					  NULL};
	conf_identity_t c = conf_of(CONF_SRC_AUTO);
	auth_ident_t id = resolve(&c, env);

	CHECK_EQ_INT(id.source, CONF_SRC_CLIENT_CERTIFICATE);
	CHECK_EQ_STR(id.certificate_file, "/etc/app.pem");
	CHECK_EQ_STR(id.certificate_password, SECRET);
	CHECK(has(id.note, "picked client_certificate "
			   "(AZURE_CLIENT_CERTIFICATE_PATH"));
	CHECK(no_secret(&id));
	CHECK(auth_source_for(&id) == &auth__client_cert_source);
	auth_ident_free(&id);
}

static void test_auto_service_principal_without_tenant(void)
{
	static const char *const env[] = {"AZURE_CLIENT_ID", CLIENT,
					  "AZURE_CLIENT_SECRET", SECRET, NULL};
	conf_identity_t c = conf_of(CONF_SRC_AUTO);
	auth_ident_t id = resolve(&c, env);

	CHECK_EQ_STR(id.config_error,
		     "auto: AZURE_CLIENT_SECRET is set (service principal): no "
		     "tenant: set identity.tenant_id or AZURE_TENANT_ID to the "
		     "app's directory (tenant) id");
	CHECK(no_secret(&id));
	CHECK(auth_source_for(&id)->name == NULL); /* misconfigured */
	auth_ident_free(&id);
}

static void test_auto_workload_identity(void)
{
	static const char *const env[] = {"AZURE_TENANT_ID",
					  TENANT,
					  "AZURE_CLIENT_ID",
					  CLIENT,
					  "AZURE_FEDERATED_TOKEN_FILE",
					  "/var/run/secrets/azure/tokens/t",
					  "AZURE_AUTHORITY_HOST",
					  "https://login.microsoftonline.us/",
					  "IDENTITY_ENDPOINT",
					  "http://127.0.0.1:1/msi/token",
					  "IDENTITY_HEADER",
					  "h",
					  NULL};
	conf_identity_t c = conf_of(CONF_SRC_AUTO);
	auth_ident_t id = resolve(&c, env);

	CHECK_EQ_INT(id.source, CONF_SRC_WORKLOAD_IDENTITY);
	CHECK_EQ_STR(id.federated_token_file,
		     "/var/run/secrets/azure/tokens/t");
	CHECK_EQ_STR(id.authority, "https://login.microsoftonline.us");
	CHECK(has(id.note, "identity auto: picked workload_identity "
			   "(AZURE_FEDERATED_TOKEN_FILE is set); skipped "
			   "client_secret/client_certificate: no "
			   "AZURE_CLIENT_SECRET"));
	CHECK(auth_source_for(&id) == &auth__workload_source);
	auth_ident_free(&id);
}

static void test_auto_workload_identity_without_client_id(void)
{
	static const char *const env[] = {"AZURE_TENANT_ID", TENANT,
					  "AZURE_FEDERATED_TOKEN_FILE", "/t",
					  NULL};
	conf_identity_t c = conf_of(CONF_SRC_AUTO);
	auth_ident_t id = resolve(&c, env);

	CHECK(has(id.config_error, "auto: AZURE_FEDERATED_TOKEN_FILE is set "
				   "(workload identity): no client id: set "
				   "identity.client_id or AZURE_CLIENT_ID"));
	auth_ident_free(&id);
}

static void test_auto_app_service(void)
{
	static const char *const env[] = {"IDENTITY_ENDPOINT",
					  "http://127.0.0.1:41234/msi/token",
					  "IDENTITY_HEADER",
					  SECRET,
					  "AZURE_CLIENT_ID",
					  CLIENT,
					  NULL};
	conf_identity_t c = conf_of(CONF_SRC_AUTO);
	auth_ident_t id = resolve(&c, env);

	CHECK_EQ_INT(id.source, CONF_SRC_APP_SERVICE);
	CHECK_EQ_STR(id.identity_endpoint, "http://127.0.0.1:41234/msi/token");
	CHECK_EQ_STR(id.identity_header, SECRET);
	/* AZURE_CLIENT_ID selects a user-assigned identity, as in the SDKs */
	CHECK_EQ_STR(id.client_id, CLIENT);
	CHECK(has(id.note, "picked app_service (IDENTITY_ENDPOINT and "
			   "IDENTITY_HEADER are set); skipped "));
	CHECK(has(id.note, "workload_identity: no AZURE_FEDERATED_TOKEN_FILE"));
	CHECK(no_secret(&id));
	auth_ident_free(&id);
}

static void test_auto_identity_endpoint_without_header(void)
{
	static const char *const env[] = {
	    "IDENTITY_ENDPOINT", "http://127.0.0.1:41234/msi/token", NULL};
	conf_identity_t c = conf_of(CONF_SRC_AUTO);
	auth_ident_t id = resolve(&c, env);

	CHECK(has(id.config_error, "auto: IDENTITY_ENDPOINT is set but "
				   "IDENTITY_HEADER is not: set both"));
	auth_ident_free(&id);
}

static void test_auto_managed_identity_selectors(void)
{
	static const char *const env[] = {"AZURE_CLIENT_ID", CLIENT, NULL};
	conf_identity_t c = conf_of(CONF_SRC_AUTO);
	auth_ident_t id = resolve(&c, env);

	CHECK_EQ_INT(id.source, CONF_SRC_IMDS);
	CHECK(id.cli_fallback);
	CHECK_EQ_STR(id.client_id, CLIENT);
	auth_ident_free(&id);

	/* The config's own selector stands; no second one is added. */
	c.object_id = "9a4c2e6f-1b3d-4f5a-8c7e-2d4f6a8c0e11";
	id = resolve(&c, env);
	CHECK(id.client_id == NULL);
	CHECK_EQ_STR(id.object_id, c.object_id);
	auth_ident_free(&id);
}

/* Config values count for auto too: a configured certificate means a
 * certificate credential. */
static void test_auto_config_values(void)
{
	conf_identity_t c = conf_of(CONF_SRC_AUTO);
	auth_ident_t id;

	c.certificate_file = "/etc/app.pem";
	c.tenant_id = TENANT;
	c.client_id = CLIENT;
	id = resolve(&c, NULL);
	CHECK_EQ_INT(id.source, CONF_SRC_CLIENT_CERTIFICATE);
	CHECK(has(id.note, "(identity.certificate_file, a tenant"));
	auth_ident_free(&id);
}

/* ---- explicit sources ---- */

static void test_explicit_client_secret(void)
{
	static const char *const env[] = {
	    "AZURE_TENANT_ID", TENANT, "AZURE_CLIENT_SECRET", "from-env", NULL};
	conf_identity_t c = conf_of(CONF_SRC_CLIENT_SECRET);
	auth_ident_t id;

	c.client_id = CLIENT;
	c.client_secret_env = "MY_SECRET";
	c.client_secret = SECRET;
	id = resolve(&c, env);
	CHECK(id.config_error == NULL);
	CHECK_EQ_STR(id.client_secret, SECRET); /* the configured one */
	CHECK_EQ_STR(id.tenant_id, TENANT);	/* filled from the env */
	CHECK(id.note == NULL);
	auth_ident_free(&id);

	/* No client_secret_env: AZURE_CLIENT_SECRET stands in. */
	c.client_secret_env = NULL;
	c.client_secret = NULL;
	id = resolve(&c, env);
	CHECK_EQ_STR(id.client_secret, "from-env");
	auth_ident_free(&id);

	id = resolve(&c, NULL);
	CHECK_EQ_STR(id.config_error,
		     "client_secret: no tenant: set identity.tenant_id or "
		     "AZURE_TENANT_ID to the app's directory (tenant) id");
	auth_ident_free(&id);

	c.tenant_id = TENANT;
	id = resolve(&c, NULL);
	CHECK(has(id.config_error, "client_secret: no secret: set "
				   "identity.client_secret_env"));
	auth_ident_free(&id);
}

static void test_explicit_certificate_and_workload(void)
{
	conf_identity_t c = conf_of(CONF_SRC_CLIENT_CERTIFICATE);
	static const char *const env[] = {"AZURE_FEDERATED_TOKEN_FILE", "/t",
					  NULL};
	auth_ident_t id;

	c.tenant_id = TENANT;
	c.client_id = CLIENT;
	id = resolve(&c, NULL);
	CHECK(has(id.config_error, "client_certificate: no certificate: set "
				   "identity.certificate_file or "
				   "AZURE_CLIENT_CERTIFICATE_PATH"));
	auth_ident_free(&id);

	c.source = CONF_SRC_WORKLOAD_IDENTITY;
	id = resolve(&c, NULL);
	CHECK(has(id.config_error, "workload_identity: no federated token "
				   "file: set identity.federated_token_file "
				   "or AZURE_FEDERATED_TOKEN_FILE"));
	auth_ident_free(&id);
	id = resolve(&c, env);
	CHECK(id.config_error == NULL);
	CHECK_EQ_STR(id.federated_token_file, "/t");
	auth_ident_free(&id);
}

static void test_explicit_app_service_needs_both(void)
{
	static const char *const only_header[] = {"IDENTITY_HEADER", "h", NULL};
	conf_identity_t c = conf_of(CONF_SRC_APP_SERVICE);
	auth_ident_t id = resolve(&c, only_header);

	CHECK(has(id.config_error, "app_service: IDENTITY_ENDPOINT is not "
				   "set"));
	auth_ident_free(&id);
}

static void test_bad_tenant(void)
{
	conf_identity_t c = conf_of(CONF_SRC_CLIENT_SECRET);
	auth_ident_t id;

	c.tenant_id = "contoso/../x";
	c.client_id = CLIENT;
	c.client_secret = SECRET;
	c.client_secret_env = "X";
	id = resolve(&c, NULL);
	CHECK(has(id.config_error, "tenant \"contoso/../x\" is not a tenant "
				   "id or domain"));
	auth_ident_free(&id);
	c.tenant_id = "contoso.onmicrosoft.com";
	id = resolve(&c, NULL);
	CHECK(id.config_error == NULL);
	auth_ident_free(&id);
}

/* ---- authority ---- */

static void test_authority_host(void)
{
	static const char *const plain[] = {"AZURE_AUTHORITY_HOST",
					    "http://login.example.com", NULL};
	static const char *const loop[] = {"AZURE_AUTHORITY_HOST",
					   "http://127.0.0.1:8080/", NULL};
	conf_identity_t c = conf_of(CONF_SRC_CLIENT_SECRET);
	auth_ident_t id;

	c.tenant_id = TENANT;
	c.client_id = CLIENT;
	c.client_secret = SECRET;
	c.client_secret_env = "X";
	id = resolve(&c, plain);
	CHECK_EQ_STR(id.config_error,
		     "AZURE_AUTHORITY_HOST must be https:// unless its host is "
		     "a loopback address, got \"http://login.example.com\"");
	auth_ident_free(&id);
	id = resolve(&c, loop);
	CHECK(id.config_error == NULL);
	CHECK_EQ_STR(id.authority, "http://127.0.0.1:8080");
	auth_ident_free(&id);
	/* A configured authority other than the default wins. */
	c.authority = "https://login.chinacloudapi.cn";
	id = resolve(&c, loop);
	CHECK_EQ_STR(id.authority, "https://login.chinacloudapi.cn");
	auth_ident_free(&id);
	/* Sources that never talk to Entra do not care. */
	c = conf_of(CONF_SRC_IMDS);
	id = resolve(&c, plain);
	CHECK(id.config_error == NULL);
	auth_ident_free(&id);
}

static void test_explicit_sources_pick_their_vtable(void)
{
	conf_identity_t c = conf_of(CONF_SRC_AZURE_CLI);
	auth_ident_t id = resolve(&c, NULL);

	CHECK(auth_source_for(&id) == &auth__azure_cli_source);
	CHECK(!id.cli_fallback);
	auth_ident_free(&id);
	c.source = CONF_SRC_IMDS;
	id = resolve(&c, NULL);
	CHECK(auth_source_for(&id) == &auth__imds_source);
	auth_ident_free(&id);
}

TP_TEST_MAIN(TP_TEST(test_auto_nothing_set_is_imds_then_cli),
	     TP_TEST(test_auto_env_client_secret),
	     TP_TEST(test_auto_secret_wins_over_certificate),
	     TP_TEST(test_auto_env_certificate),
	     TP_TEST(test_auto_service_principal_without_tenant),
	     TP_TEST(test_auto_workload_identity),
	     TP_TEST(test_auto_workload_identity_without_client_id),
	     TP_TEST(test_auto_app_service),
	     TP_TEST(test_auto_identity_endpoint_without_header),
	     TP_TEST(test_auto_managed_identity_selectors),
	     TP_TEST(test_auto_config_values),
	     TP_TEST(test_explicit_client_secret),
	     TP_TEST(test_explicit_certificate_and_workload),
	     TP_TEST(test_explicit_app_service_needs_both),
	     TP_TEST(test_bad_tenant), TP_TEST(test_authority_host),
	     TP_TEST(test_explicit_sources_pick_their_vtable))
