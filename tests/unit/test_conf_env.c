/*
 * test_conf_env.c - zero config (conf/env.c): Service Connector variables
 * in this process's environment -> a validated snapshot. Covers each
 * database kind, split variables, identities, listen overrides, the TLS
 * settings that are ignored with a warning, TOKENPOOL_TLS_MODE, the
 * refusal without a client credential, and the exact one-line errors.
 *
 * Every test starts from an environment without AZURE_* and TOKENPOOL_*.
 * Not here: the string grammars (test_connstr.c), serving (integration).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "tests/unit/tp_test.h"

extern char **environ;

#define PG_STRING "AZURE_POSTGRESQL_CONNECTIONSTRING"
#define WEAK_WHY                                                      \
	"tokenpool verifies the server before it sends a token; set " \
	"TOKENPOOL_TLS_MODE to relax"

static void clean_env(void)
{
	char name[256];

	/* unsetenv changes environ: start over after each removal. */
	for (char **e = environ; e && *e;) {
		size_t n = strcspn(*e, "=");
		if ((strncmp(*e, "AZURE_", 6) == 0 ||
		     strncmp(*e, "TOKENPOOL_", 10) == 0) &&
		    n < sizeof(name)) {
			memcpy(name, *e, n);
			name[n] = '\0';
			unsetenv(name);
			e = environ;
		} else {
			e++;
		}
	}
	setenv("TOKENPOOL_CLIENT_USER", "app", 1);
	setenv("TOKENPOOL_CLIENT_PASSWORD", "local-Secret-9", 1);
}

static conf_t *load_ok(void)
{
	conf_t *c = NULL;
	char err[512] = "";
	int rc = conf_load_env(&c, err, sizeof(err));

	if (rc)
		fprintf(stderr, "unexpected error: %s\n", err);
	CHECK_EQ_INT(rc, 0);
	return c;
}

/* The error the environment fails with. */
#define CHECK_ENV_ERR(expected)                                   \
	do {                                                      \
		conf_t *c_ = NULL;                                \
		char err_[512] = "";                              \
		int rc_ = conf_load_env(&c_, err_, sizeof(err_)); \
		CHECK_EQ_INT(rc_, TP_ECONFIG);                    \
		CHECK(c_ == NULL);                                \
		CHECK_EQ_STR(err_, expected);                     \
		conf_free(c_);                                    \
	} while (0)

static bool has_warning(const conf_t *c, const char *w)
{
	for (size_t i = 0; i < c->nwarnings; i++) {
		if (strcmp(c->warnings[i], w) == 0)
			return true;
	}
	fprintf(stderr, "missing warning: %s\nwarnings:\n", w);
	for (size_t i = 0; i < c->nwarnings; i++)
		fprintf(stderr, "  %s\n", c->warnings[i]);
	return false;
}

static void test_postgres_libpq(void)
{
	clean_env();
	setenv(PG_STRING,
	       "host=orders.postgres.database.azure.com port=5432 "
	       "dbname=orders user=orders-app sslmode=require",
	       1);
	conf_t *c = load_ok();
	if (!c)
		return;
	CHECK(c->path == NULL);
	CHECK_EQ_INT(c->npools, 1);
	const conf_pool_t *p = &c->pools[0];
	CHECK_EQ_STR(p->name, "orders");
	CHECK_EQ_INT(p->protocol, CONF_PROTO_POSTGRES);
	CHECK_EQ_STR(p->listen, "127.0.0.1:5432");
	CHECK_EQ_STR(p->server.host, "orders.postgres.database.azure.com");
	CHECK_EQ_INT(p->server.port, 5432);
	CHECK_EQ_STR(p->server.database, "orders");
	CHECK_EQ_STR(p->server.user, "orders-app");
	CHECK_EQ_INT(p->server.auth, CONF_AUTH_TOKEN);
	CHECK_EQ_STR(p->server.scope,
		     "https://ossrdbms-aad.database.windows.net/.default");
	CHECK_EQ_INT(p->server.tls.mode, CONF_TLS_VERIFY_FULL);
	CHECK(p->server.tls.ca_file == NULL);
	CHECK(p->server.identity == NULL);
	CHECK_EQ_INT(p->nclients, 1);
	CHECK_EQ_STR(p->clients[0].user, "app");
	CHECK_EQ_STR(p->clients[0].password, "local-Secret-9");
	CHECK_EQ_STR(p->clients[0].password_env, "TOKENPOOL_CLIENT_PASSWORD");
	CHECK_EQ_INT(c->identity.source, CONF_SRC_AUTO);
	CHECK_EQ_INT(c->nwarnings, 1);
	CHECK(has_warning(c, "ignored sslmode=require from " PG_STRING
			     ": " WEAK_WHY));
	conf_free(c);
}

static void test_tls_mode_relaxes(void)
{
	clean_env();
	setenv(PG_STRING, "Server=h;Database=d;User Id=u;Ssl Mode=Require;", 1);
	setenv("TOKENPOOL_TLS_MODE", "require", 1);
	conf_t *c = load_ok();
	if (!c)
		return;
	CHECK_EQ_INT(c->pools[0].server.tls.mode, CONF_TLS_REQUIRE);
	/* The loader's own warning about require; none about ignoring. */
	CHECK_EQ_INT(c->nwarnings, 1);
	CHECK(has_warning(c, "pools[0].server.tls.mode: require encrypts but "
			     "does not verify the server certificate; use "
			     "verify-full"));
	conf_free(c);

	setenv("TOKENPOOL_TLS_MODE", "verify-ca", 1);
	c = load_ok();
	if (c)
		CHECK_EQ_INT(c->pools[0].server.tls.mode, CONF_TLS_VERIFY_CA);
	conf_free(c);

	setenv("TOKENPOOL_TLS_MODE", "disable", 1);
	CHECK_ENV_ERR("TOKENPOOL_TLS_MODE: expected verify-full, verify-ca or "
		      "require (disable is refused: a token never crosses the "
		      "network in clear), got \"disable\"");
	setenv("TOKENPOOL_TLS_MODE", "Verify-Full", 1);
	CHECK_ENV_ERR("TOKENPOOL_TLS_MODE: expected verify-full, verify-ca or "
		      "require (disable is refused: a token never crosses the "
		      "network in clear), got \"Verify-Full\"");
}

static void test_weak_settings_ignored(void)
{
	clean_env();
	setenv("AZURE_SQL_CONNECTIONSTRING",
	       "Server=tcp:x.database.windows.net,1433;Database=db;"
	       "Authentication=Active Directory Default;User Id=cid-1;"
	       "TrustServerCertificate=True;Encrypt=false",
	       1);
	conf_t *c = load_ok();
	if (!c)
		return;
	const conf_pool_t *p = &c->pools[0];
	CHECK_EQ_INT(p->server.tls.mode, CONF_TLS_VERIFY_FULL);
	CHECK(has_warning(c, "ignored TrustServerCertificate=True from "
			     "AZURE_SQL_CONNECTIONSTRING: " WEAK_WHY));
	CHECK(has_warning(c, "ignored Encrypt=false from "
			     "AZURE_SQL_CONNECTIONSTRING: " WEAK_WHY));
	CHECK_EQ_INT(c->nwarnings, 2);
	conf_free(c);
}

static void test_client_credential_required(void)
{
	static const char both[] =
	    "TOKENPOOL_CLIENT_USER and TOKENPOOL_CLIENT_PASSWORD are not set: "
	    "with no config file, tokenpool needs TOKENPOOL_CLIENT_USER and "
	    "TOKENPOOL_CLIENT_PASSWORD (the user and password your "
	    "application logs in with)";

	clean_env();
	setenv(PG_STRING, "host=h dbname=d user=u", 1);
	unsetenv("TOKENPOOL_CLIENT_USER");
	unsetenv("TOKENPOOL_CLIENT_PASSWORD");
	CHECK_ENV_ERR(both);
	setenv("TOKENPOOL_CLIENT_USER", "app", 1);
	setenv("TOKENPOOL_CLIENT_PASSWORD", "", 1); /* empty is unset */
	CHECK_ENV_ERR("TOKENPOOL_CLIENT_PASSWORD is not set: with no config "
		      "file, tokenpool needs TOKENPOOL_CLIENT_USER and "
		      "TOKENPOOL_CLIENT_PASSWORD (the user and password your "
		      "application logs in with)");
	/* Refused before the strings are even read. */
	setenv(PG_STRING, "host='broken", 1);
	unsetenv("TOKENPOOL_CLIENT_PASSWORD");
	unsetenv("TOKENPOOL_CLIENT_USER");
	CHECK_ENV_ERR(both);
}

static void test_split_variables(void)
{
	clean_env();
	setenv("AZURE_POSTGRESQL_HOST", "srv.postgres.database.azure.com", 1);
	setenv("AZURE_POSTGRESQL_PORT", "6543", 1);
	setenv("AZURE_POSTGRESQL_NAME", "inventory", 1);
	setenv("AZURE_POSTGRESQL_USER", "inv@srv", 1);
	setenv("AZURE_POSTGRESQL_SSL", "false", 1);
	setenv("AZURE_POSTGRESQL_PASSWORD", "db-Secret-1", 1);
	conf_t *c = load_ok();
	if (!c)
		return;
	const conf_pool_t *p = &c->pools[0];
	CHECK_EQ_STR(p->name, "inventory");
	CHECK_EQ_STR(p->server.host, "srv.postgres.database.azure.com");
	CHECK_EQ_INT(p->server.port, 6543);
	CHECK_EQ_STR(p->server.user, "inv");
	CHECK_EQ_INT(p->server.tls.mode, CONF_TLS_VERIFY_FULL);
	CHECK(has_warning(c, "ignored AZURE_POSTGRESQL_SSL=false: " WEAK_WHY));
	CHECK(has_warning(c, "ignored AZURE_POSTGRESQL_PASSWORD: tokenpool "
			     "logs in with an Entra token"));
	CHECK(has_warning(c, "logging in to srv.postgres.database.azure.com "
			     "as \"inv\": the \"@srv\" suffix is for Single "
			     "Server, retired"));
	for (size_t i = 0; i < c->nwarnings; i++)
		CHECK(strstr(c->warnings[i], "db-Secret-1") == NULL);
	conf_free(c);

	setenv("AZURE_POSTGRESQL_DATABASE", "orders", 1);
	CHECK_ENV_ERR("AZURE_POSTGRESQL_DATABASE (\"orders\") and "
		      "AZURE_POSTGRESQL_NAME (\"inventory\") disagree: keep "
		      "one");
	unsetenv("AZURE_POSTGRESQL_DATABASE");
	setenv("AZURE_POSTGRESQL_PORT", "x", 1);
	CHECK_ENV_ERR("AZURE_POSTGRESQL_PORT: bad port \"x\": expected "
		      "1..65535");
	setenv("AZURE_POSTGRESQL_PORT", "5432", 1);
	unsetenv("AZURE_POSTGRESQL_USER");
	CHECK_ENV_ERR("missing user: set AZURE_POSTGRESQL_USER");
}

static void test_string_and_split_together(void)
{
	clean_env();
	/* JDBC without user: the split variable fills it in. */
	setenv(PG_STRING, "jdbc:postgresql://h:5432/d?sslmode=verify-full", 1);
	setenv("AZURE_POSTGRESQL_USER", "u", 1);
	setenv("AZURE_POSTGRESQL_HOST", "h", 1); /* same: fine */
	conf_t *c = load_ok();
	if (c) {
		CHECK_EQ_STR(c->pools[0].server.user, "u");
		CHECK_EQ_INT(c->nwarnings, 0);
	}
	conf_free(c);
	setenv("AZURE_POSTGRESQL_HOST", "other", 1);
	CHECK_ENV_ERR(PG_STRING " (\"h\") and AZURE_POSTGRESQL_HOST "
				"(\"other\") disagree: keep one");
	unsetenv("AZURE_POSTGRESQL_HOST");
	setenv("AZURE_POSTGRESQL_PORT", "5433", 1);
	CHECK_ENV_ERR(PG_STRING " (5432) and AZURE_POSTGRESQL_PORT (5433) "
				"disagree: keep one");
}

static void test_identities(void)
{
	clean_env();
	setenv(PG_STRING, "host=h dbname=d user=u", 1);
	setenv("AZURE_POSTGRESQL_CLIENTID", "cid-pg", 1);
	conf_t *c = load_ok();
	if (c) {
		const conf_identity_t *id = conf_pool_identity(c, &c->pools[0]);
		CHECK(c->pools[0].server.identity != NULL);
		CHECK_EQ_INT(id->source, CONF_SRC_AUTO);
		CHECK_EQ_STR(id->client_id, "cid-pg");
		CHECK(id->tenant_id == NULL);
	}
	conf_free(c);

	setenv("AZURE_POSTGRESQL_TENANTID", "tid", 1);
	setenv("AZURE_POSTGRESQL_CLIENTSECRET", "sp-Secret-2", 1);
	c = load_ok();
	if (c) {
		const conf_identity_t *id = conf_pool_identity(c, &c->pools[0]);
		CHECK_EQ_INT(id->source, CONF_SRC_CLIENT_SECRET);
		CHECK_EQ_STR(id->client_id, "cid-pg");
		CHECK_EQ_STR(id->tenant_id, "tid");
		CHECK_EQ_STR(id->client_secret_env,
			     "AZURE_POSTGRESQL_CLIENTSECRET");
		CHECK_EQ_STR(id->client_secret, "sp-Secret-2");
		char *json = conf_to_json(c);
		CHECK(json && !strstr(json, "sp-Secret-2") &&
		      !strstr(json, "local-Secret-9"));
		free(json);
	}
	conf_free(c);

	unsetenv("AZURE_POSTGRESQL_TENANTID");
	CHECK_ENV_ERR("AZURE_POSTGRESQL_CLIENTSECRET is set, so "
		      "AZURE_POSTGRESQL_TENANTID and AZURE_POSTGRESQL_CLIENTID "
		      "are needed too (a service principal)");
}

static void test_client_id_conflict(void)
{
	clean_env();
	setenv("AZURE_SQL_CONNECTIONSTRING",
	       "jdbc:sqlserver://x:1433;database=db;authentication="
	       "ActiveDirectoryMSI;msiClientId=cid-a",
	       1);
	setenv("AZURE_SQL_CLIENTID", "cid-b", 1);
	CHECK_ENV_ERR("AZURE_SQL_CONNECTIONSTRING (\"cid-a\") and "
		      "AZURE_SQL_CLIENTID (\"cid-b\") disagree: keep one");
}

static void test_three_kinds(void)
{
	clean_env();
	setenv(PG_STRING,
	       "postgresql://pgu@pg.postgres.database.azure.com/pgdb", 1);
	setenv("AZURE_MYSQL_CONNECTIONSTRING",
	       "jdbc:mysql://my.mysql.database.azure.com:3306/mydb"
	       "?sslmode=required&user=myu",
	       1);
	setenv("AZURE_SQL_CONNECTIONSTRING",
	       "Driver={ODBC Driver 18 for SQL Server};Server=tcp:"
	       "x.database.windows.net,1433;Database=sqldb;UID=cid-sql;"
	       "Authentication=ActiveDirectoryMsi;Encrypt=yes;",
	       1);
	setenv("TOKENPOOL_MYSQL_LISTEN", "13306", 1);
	setenv("TOKENPOOL_SQL_LISTEN", "[::1]:11433", 1);
	conf_t *c = load_ok();
	if (!c)
		return;
	CHECK_EQ_INT(c->npools, 3);
	CHECK_EQ_INT(c->pools[0].protocol, CONF_PROTO_POSTGRES);
	CHECK_EQ_STR(c->pools[0].listen, "127.0.0.1:5432");
	CHECK_EQ_INT(c->pools[0].server.port, 5432);
	CHECK_EQ_INT(c->pools[1].protocol, CONF_PROTO_MYSQL);
	CHECK_EQ_STR(c->pools[1].name, "mydb");
	CHECK_EQ_STR(c->pools[1].server.user, "myu");
	CHECK_EQ_STR(c->pools[1].listen, "127.0.0.1:13306");
	CHECK_EQ_INT(c->pools[2].protocol, CONF_PROTO_SQLSERVER);
	CHECK_EQ_STR(c->pools[2].listen, "[::1]:11433");
	CHECK_EQ_STR(c->pools[2].listen_host, "::1");
	CHECK_EQ_STR(c->pools[2].server.scope,
		     "https://database.windows.net/.default");
	/* A SQL Server token login has no user name; it names the
	 * identity. */
	CHECK_EQ_STR(c->pools[2].server.user, "cid-sql");
	CHECK_EQ_STR(conf_pool_identity(c, &c->pools[2])->client_id, "cid-sql");
	CHECK(has_warning(c, "ignored sslmode=required from "
			     "AZURE_MYSQL_CONNECTIONSTRING: " WEAK_WHY));
	conf_free(c);

	unsetenv("AZURE_SQL_CONNECTIONSTRING");
	setenv("AZURE_SQL_SERVER", "x.database.windows.net", 1);
	setenv("AZURE_SQL_DATABASE", "sqldb", 1);
	c = load_ok();
	if (c)
		CHECK_EQ_STR(c->pools[2].server.user, "managed-identity");
	conf_free(c);
}

static void test_listen(void)
{
	clean_env();
	setenv(PG_STRING, "host=h dbname=d user=u", 1);
	setenv("TOKENPOOL_POSTGRESQL_LISTEN", "0.0.0.0:6432", 1);
	conf_t *c = load_ok();
	if (c)
		CHECK_EQ_STR(c->pools[0].listen, "0.0.0.0:6432");
	conf_free(c);
	setenv("TOKENPOOL_POSTGRESQL_LISTEN", "localhost", 1);
	CHECK_ENV_ERR("TOKENPOOL_POSTGRESQL_LISTEN: expected \"host:port\" or "
		      "a port, got \"localhost\"");
	setenv("TOKENPOOL_POSTGRESQL_LISTEN", "70000", 1);
	CHECK_ENV_ERR("TOKENPOOL_POSTGRESQL_LISTEN: expected \"host:port\" or "
		      "a port, got \"70000\"");
}

static void test_ca_file(void)
{
	char path[] = "/tmp/test_conf_env_XXXXXX";
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	close(fd);
	clean_env();
	char s[256];
	snprintf(s, sizeof(s),
		 "Server=h;Database=d;User Id=u;"
		 "Root Certificate=%s",
		 path);
	setenv(PG_STRING, s, 1);
	conf_t *c = load_ok();
	if (c)
		CHECK_EQ_STR(c->pools[0].server.tls.ca_file, path);
	conf_free(c);
	unlink(path);
	char want[512];
	snprintf(want, sizeof(want),
		 "pools[0].server.tls.ca_file: cannot read %s: No such file "
		 "or directory (from " PG_STRING ")",
		 path);
	CHECK_ENV_ERR(want);
	/* libpq's "system" means the system store, our default. */
	setenv(PG_STRING, "host=h dbname=d user=u sslrootcert=system", 1);
	c = load_ok();
	if (c)
		CHECK(c->pools[0].server.tls.ca_file == NULL);
	conf_free(c);
}

static void test_bad_strings(void)
{
	clean_env();
	setenv(PG_STRING, "host=h dbname='d", 1);
	CHECK_ENV_ERR(PG_STRING ": unterminated quote at position 15");
	setenv(PG_STRING, "jdbc:mysql://h/d?user=u", 1);
	CHECK_ENV_ERR(PG_STRING ": a mysql URL where a postgres connection "
				"string belongs");
	setenv(PG_STRING, "Server=h;User Id=u", 1);
	CHECK_ENV_ERR(PG_STRING ": missing database (set it there or in "
				"AZURE_POSTGRESQL_DATABASE)");
	setenv(PG_STRING, "host=h dbname=d user=u password=pw-Secret-3", 1);
	conf_t *c = load_ok();
	if (c) {
		CHECK(has_warning(c, "ignored the password in " PG_STRING
				     ": tokenpool logs in with an Entra "
				     "token"));
		for (size_t i = 0; i < c->nwarnings; i++)
			CHECK(strstr(c->warnings[i], "pw-Secret-3") == NULL);
	}
	conf_free(c);
	setenv(PG_STRING, "host=h\nx dbname=d user=u", 1);
	CHECK_ENV_ERR(PG_STRING ": expected key=value at position 8");
	setenv(PG_STRING, "host=h dbname='d\nx' user=u", 1);
	CHECK_ENV_ERR("pools[0].server.database: contains a control "
		      "character (from " PG_STRING ")");
}

static void test_endpoints(void)
{
	clean_env();
	setenv(PG_STRING, "host=h dbname=d user=u", 1);
	setenv("TOKENPOOL_IMDS_ENDPOINT", "http://127.0.0.1:8080/", 1);
	setenv("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/", 1);
	setenv("AZURE_POSTGRESQL_CLIENTID", "cid", 1);
	conf_t *c = load_ok();
	if (c) {
		CHECK_EQ_STR(c->identity.imds_endpoint,
			     "http://127.0.0.1:8080");
		CHECK_EQ_STR(c->identity.authority,
			     "https://login.microsoftonline.us");
		/* The pool's own identity inherits where the endpoints are. */
		const conf_identity_t *id = conf_pool_identity(c, &c->pools[0]);
		CHECK_EQ_STR(id->imds_endpoint, "http://127.0.0.1:8080");
		CHECK_EQ_STR(id->authority, "https://login.microsoftonline.us");
	}
	conf_free(c);
	setenv("AZURE_AUTHORITY_HOST", "http://login.example.com", 1);
	CHECK_ENV_ERR(
	    "identity.authority: must be https:// unless its host is "
	    "a loopback address (127.0.0.0/8, ::1, localhost), got "
	    "\"http://login.example.com\" (from AZURE_AUTHORITY_HOST)");
}

static void test_presence_and_leftovers(void)
{
	clean_env();
	CHECK(!conf_env_present());
	setenv("AZURE_SQLX", "not ours", 1); /* no '_' after the prefix */
	setenv("AZURE_CLIENT_ID", "not ours either", 1);
	CHECK(!conf_env_present());
	setenv("AZURE_MYSQL_CLIENTID", "cid", 1);
	CHECK(conf_env_present());
	CHECK_ENV_ERR("no database in the environment: set "
		      "AZURE_POSTGRESQL_CONNECTIONSTRING, "
		      "AZURE_MYSQL_CONNECTIONSTRING or "
		      "AZURE_SQL_CONNECTIONSTRING (or their _HOST / _SERVER "
		      "variables)");
	setenv(PG_STRING, "host=h dbname=d user=u", 1);
	conf_t *c = load_ok();
	if (c) {
		CHECK_EQ_INT(c->npools, 1);
		CHECK(has_warning(c, "AZURE_MYSQL_CLIENTID is set, but neither "
				     "AZURE_MYSQL_CONNECTIONSTRING nor "
				     "AZURE_MYSQL_HOST: no mysql pool"));
	}
	conf_free(c);
	unsetenv("AZURE_SQLX");
	unsetenv("AZURE_CLIENT_ID");
}

static void test_same_database_name_twice(void)
{
	clean_env();
	setenv(PG_STRING, "host=h dbname=app user=u", 1);
	setenv("AZURE_MYSQL_HOST", "m", 1);
	setenv("AZURE_MYSQL_DATABASE", "app", 1);
	setenv("AZURE_MYSQL_USER", "u", 1);
	CHECK_ENV_ERR("pools[1].name: duplicate pool name \"app\" (also "
		      "pools[0]) (from AZURE_MYSQL_HOST)");
}

TP_TEST_MAIN(TP_TEST(test_postgres_libpq), TP_TEST(test_tls_mode_relaxes),
	     TP_TEST(test_weak_settings_ignored),
	     TP_TEST(test_client_credential_required),
	     TP_TEST(test_split_variables),
	     TP_TEST(test_string_and_split_together), TP_TEST(test_identities),
	     TP_TEST(test_client_id_conflict), TP_TEST(test_three_kinds),
	     TP_TEST(test_listen), TP_TEST(test_ca_file),
	     TP_TEST(test_bad_strings), TP_TEST(test_endpoints),
	     TP_TEST(test_presence_and_leftovers),
	     TP_TEST(test_same_database_name_twice))
