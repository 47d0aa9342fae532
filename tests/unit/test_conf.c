/*
 * test_conf.c - unit tests for conf/: loading, defaults, every validation
 * message users see (asserted word for word), secret resolution and
 * masking, the error-code tables and host:port splitting.
 *
 * Configs are written with single quotes for readability; sq() turns them
 * into JSON. Not here: anything that needs a loop, a socket or a token.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "conf/conf.h"
#include "tests/unit/tp_test.h"

#define MINIMAL_POOL_BODY                                                   \
	"'protocol':'postgres','server':{'host':'h','database':'d','user':" \
	"'u'},'clients':[{'user':'app','password':'x'}]"
#define MINIMAL_POOL "{" MINIMAL_POOL_BODY "}"
/* The minimal config without its opening brace, to prepend keys. */
#define MINIMAL_TAIL "'pools':[" MINIMAL_POOL "]}"
#define MINIMAL	     "{" MINIMAL_TAIL

/* A pool with everything required, for tests that vary one section:
 * the three %s go into the pool, the server and the top level. */
#define POOL_FMT                                                               \
	"{%s 'pools':[{%s 'protocol':'postgres','server':{%s 'host':'h',"      \
	"'database':'d','user':'u'},'clients':[{'user':'app','password':'x'}]" \
	"}]}"

static char *sq(const char *text)
{
	char *s = strdup(text);

	for (char *p = s; *p; p++) {
		if (*p == '\'')
			*p = '"';
	}
	return s;
}

/* Loads a single-quoted config; returns the rc and leaves the error in
 * err. */
static int load_sq(const char *text, conf_t **c, char *err, size_t len)
{
	char *json = sq(text);
	int rc = conf_load_string(json, c, err, len);

	free(json);
	return rc;
}

static conf_t *load_ok(const char *text)
{
	conf_t *c = NULL;
	char err[512] = "";
	int rc = load_sq(text, &c, err, sizeof(err));

	if (rc)
		fprintf(stderr, "unexpected config error: %s\n", err);
	CHECK_EQ_INT(rc, 0);
	return c;
}

/* The error a config fails with ("" when it loads). */
static const char *load_err(const char *text, char *err, size_t len)
{
	conf_t *c = NULL;
	int rc = load_sq(text, &c, err, len);

	if (rc == 0) {
		snprintf(err, len, "(loaded without error)");
		conf_free(c);
	} else {
		CHECK_EQ_INT(rc, TP_ECONFIG);
		CHECK(c == NULL);
	}
	return err;
}

#define CHECK_ERR(text, expected)                                           \
	do {                                                                \
		char err_[512];                                             \
		CHECK_EQ_STR(load_err(text, err_, sizeof(err_)), expected); \
	} while (0)

/* Same, with POOL_FMT: top, pool and server insertions. */
#define CHECK_POOL_ERR(top, pool, server, expected)                          \
	do {                                                                 \
		char text_[2048];                                            \
		snprintf(text_, sizeof(text_), POOL_FMT, top, pool, server); \
		CHECK_ERR(text_, expected);                                  \
	} while (0)

static char *write_temp(const char *content, mode_t mode)
{
	char *path = strdup("/tmp/test_conf_XXXXXX");
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	CHECK_EQ_INT(write(fd, content, strlen(content)),
		     (long long)strlen(content));
	CHECK_EQ_INT(fchmod(fd, mode), 0);
	close(fd);
	return path;
}

static void drop_temp(char *path)
{
	unlink(path);
	free(path);
}

/* ---- error codes ---- */

static void test_error_names(void)
{
	CHECK_EQ_STR(tp_err_name(TP_EPROTO), "TP_EPROTO");
	CHECK_EQ_STR(tp_err_name(TP_EAGAIN), "TP_EAGAIN");
	CHECK_EQ_STR(tp_err_name(TP_EIO), "TP_EIO");
	CHECK_EQ_STR(tp_strerror(TP_ENOMEM), "out of memory");
	CHECK_EQ_STR(tp_strerror(TP_ECONFIG), "invalid configuration");
	CHECK_EQ_STR(tp_err_name(0), "TP_OK");
	CHECK_EQ_STR(tp_strerror(0), "success");
	CHECK_EQ_STR(tp_err_name(-1), "TP_EUNKNOWN");
	CHECK_EQ_STR(tp_strerror(TP_ERR_LAST_), "unknown error");
	CHECK_EQ_STR(tp_strerror(TP_ERR_FIRST_), "unknown error");
	for (int e = TP_ERR_FIRST_ + 1; e < TP_ERR_LAST_; e++) {
		CHECK(strncmp(tp_err_name(e), "TP_E", 4) == 0);
		CHECK(strcmp(tp_strerror(e), "unknown error") != 0);
	}
}

/* ---- host:port ---- */

static void check_split(const char *s, const char *host, int port)
{
	char *h = NULL;
	int p = 0;

	CHECK_EQ_INT(conf_split_hostport(s, &h, &p), 0);
	CHECK_EQ_STR(h, host);
	CHECK_EQ_INT(p, port);
	free(h);
}

static void check_split_bad(const char *s)
{
	char *h = NULL;
	int p = 0;
	int rc = conf_split_hostport(s, &h, &p);

	if (rc != TP_EINVAL)
		fprintf(stderr, "accepted \"%s\"\n", s ? s : "(null)");
	CHECK_EQ_INT(rc, TP_EINVAL);
	CHECK(h == NULL);
}

static void test_split_hostport(void)
{
	check_split("127.0.0.1:6432", "127.0.0.1", 6432);
	check_split("[::1]:6432", "::1", 6432);
	check_split("localhost:5432", "localhost", 5432);
	check_split("0.0.0.0:1", "0.0.0.0", 1);
	check_split("[fe80::1%eth0]:65535", "fe80::1%eth0", 65535);
	check_split("db-1.example.com:1433", "db-1.example.com", 1433);
	check_split_bad(NULL);
	check_split_bad("");
	check_split_bad("6432");
	check_split_bad(":6432");
	check_split_bad("localhost:");
	check_split_bad("localhost:0");
	check_split_bad("localhost:65536");
	check_split_bad("localhost:123456");
	check_split_bad("localhost:-1");
	check_split_bad("localhost:+80");
	check_split_bad("localhost:80 ");
	check_split_bad("::1:6432");
	check_split_bad("[::1]6432");
	check_split_bad("[::1:6432");
	check_split_bad("[]:6432");
	check_split_bad("[localhost]:6432");
	check_split_bad("a b:6432");
	check_split_bad("user@host:6432");
}

/* ---- defaults ---- */

static void test_minimal_defaults(void)
{
	conf_t *c = load_ok(MINIMAL);

	if (!c)
		return;
	CHECK(c->path == NULL);
	CHECK_EQ_INT(c->log_level, CONF_LOG_INFO);
	CHECK(!c->log_json);
	CHECK_EQ_STR(c->http_listen, "127.0.0.1:9090");
	CHECK(c->admin_token_env == NULL && c->admin_token == NULL);
	CHECK(c->shutdown_timeout == 30);
	CHECK_EQ_INT(c->identity.source, CONF_SRC_AUTO);
	CHECK(c->identity.client_id == NULL && c->identity.tenant_id == NULL);
	CHECK(c->identity.client_secret == NULL);
	CHECK_EQ_STR(c->identity.imds_endpoint, "http://169.254.169.254");
	CHECK_EQ_STR(c->identity.authority,
		     "https://login.microsoftonline.com");
	CHECK_EQ_INT(c->npools, 1);
	CHECK_EQ_INT(c->nwarnings, 0);

	conf_pool_t *p = &c->pools[0];
	CHECK_EQ_STR(p->name, "d");
	CHECK_EQ_INT(p->protocol, CONF_PROTO_POSTGRES);
	CHECK_EQ_STR(p->listen, "127.0.0.1:5432");
	CHECK_EQ_STR(p->listen_host, "127.0.0.1");
	CHECK_EQ_INT(p->listen_port, 5432);
	CHECK_EQ_STR(p->server.host, "h");
	CHECK_EQ_INT(p->server.port, 5432);
	CHECK_EQ_STR(p->server.database, "d");
	CHECK_EQ_STR(p->server.user, "u");
	CHECK_EQ_INT(p->server.auth, CONF_AUTH_TOKEN);
	CHECK_EQ_STR(p->server.scope,
		     "https://ossrdbms-aad.database.windows.net/.default");
	CHECK(p->server.identity == NULL);
	CHECK(conf_pool_identity(c, p) == &c->identity);
	CHECK(p->server.password == NULL && p->server.password_env == NULL);
	CHECK_EQ_INT(p->server.tls.mode, CONF_TLS_VERIFY_FULL);
	CHECK(p->server.tls.ca_file == NULL);
	CHECK(p->server.tls.server_name == NULL);
	CHECK_EQ_INT(p->nclients, 1);
	CHECK_EQ_STR(p->clients[0].user, "app");
	CHECK_EQ_STR(p->clients[0].password, "x");
	CHECK_EQ_INT(p->clients[0].nhashes, 0);
	CHECK_EQ_INT(p->client_tls.mode, CONF_CTLS_ALLOW);
	CHECK(p->client_tls.cert_file == NULL &&
	      p->client_tls.key_file == NULL);
	CHECK_EQ_INT(p->pool.mode, CONF_POOL_SESSION);
	CHECK_EQ_INT(p->pool.size, 20);
	CHECK_EQ_INT(p->pool.min_idle, 0);
	CHECK_EQ_INT(p->pool.max_clients, 1000);
	CHECK(p->pool.wait_timeout == 30);
	CHECK(p->pool.connect_timeout == 10);
	CHECK(p->pool.idle_timeout == 600);
	CHECK(p->pool.lifetime == 3600);
	conf_free(c);
}

static void test_protocol_defaults(void)
{
	conf_t *c = load_ok(
	    "{'pools':[{'protocol':'mysql','server':{'host':'m','user':"
	    "'u','database':'shop'},'clients':[{'user':'a','password':"
	    "'x'}]},{'protocol':'sqlserver','name':'crm','server':{'host':"
	    "'s','user':'u'},'clients':[{'user':'a','password':'x'}]}]}");

	if (!c)
		return;
	CHECK_EQ_STR(conf_protocol_name(c->pools[0].protocol), "mysql");
	CHECK_EQ_INT(c->pools[0].server.port, 3306);
	CHECK_EQ_STR(c->pools[0].listen, "127.0.0.1:3306");
	CHECK_EQ_STR(c->pools[0].server.scope,
		     "https://ossrdbms-aad.database.windows.net/.default");
	CHECK_EQ_STR(c->pools[0].name, "shop");
	CHECK_EQ_STR(conf_protocol_name(c->pools[1].protocol), "sqlserver");
	CHECK_EQ_INT(c->pools[1].server.port, 1433);
	CHECK_EQ_INT(c->pools[1].listen_port, 1433);
	CHECK_EQ_STR(c->pools[1].server.scope,
		     "https://database.windows.net/.default");
	/* No server.database: the pool name is the database. */
	CHECK_EQ_STR(c->pools[1].server.database, "crm");
	conf_free(c);
}

static void test_null_means_default(void)
{
	conf_t *c = load_ok(
	    "{'log':null,'http':{'listen':null,'admin_token_env':null},"
	    "'identity':{'client_id':null,'authority':null},'pools':[{"
	    "'name':null,'protocol':'postgres','listen':null,'server':{"
	    "'host':'h','port':null,'database':'d','user':'u','identity':"
	    "null,'tls':{'mode':null}},'clients':[{'user':'app',"
	    "'password':'x','password_env':null}],'pool':null}]}");

	if (!c)
		return;
	CHECK_EQ_STR(c->http_listen, "127.0.0.1:9090");
	CHECK_EQ_STR(c->identity.authority,
		     "https://login.microsoftonline.com");
	CHECK_EQ_STR(c->pools[0].name, "d");
	CHECK_EQ_INT(c->pools[0].server.port, 5432);
	CHECK_EQ_INT(c->pools[0].pool.size, 20);
	conf_free(c);
}

static void test_http_disabled(void)
{
	conf_t *c = load_ok(
	    "{'http':{'listen':''},'pools':[{'protocol':'postgres',"
	    "'server':{'host':'h','database':'d','user':'u'},'clients':[{"
	    "'user':'app','password':'x'}]}]}");

	if (!c)
		return;
	CHECK(c->http_listen == NULL);
	char *json = conf_to_json(c);
	conf_t *again = NULL;
	char err[256];
	CHECK_EQ_INT(conf_load_string(json, &again, err, sizeof(err)), 0);
	CHECK(again && again->http_listen == NULL);
	conf_free(again);
	free(json);
	conf_free(c);
}

/* ---- the documented example and conf_to_json ---- */

static const char contract_example[] =
    "{"
    "  'log':  { 'level': 'info', 'format': 'text' },"
    "  'http': { 'listen': '127.0.0.1:9090', 'admin_token_env': null },"
    "  'shutdown': { 'timeout': 30 },"
    "  'identity': {"
    "    'source': 'auto',"
    "    'client_id': null, 'object_id': null, 'resource_id': null,"
    "    'tenant_id': null,"
    "    'client_secret_env': null, 'certificate_file': null,"
    "    'federated_token_file': null,"
    "    'imds_endpoint': 'http://169.254.169.254',"
    "    'authority': 'https://login.microsoftonline.com'"
    "  },"
    "  'pools': ["
    "    {"
    "      'name': 'orders',"
    "      'protocol': 'postgres',"
    "      'listen': '127.0.0.1:6432',"
    "      'server': {"
    "        'host': 'orders.postgres.database.azure.com',"
    "        'port': 5432,"
    "        'database': 'orders',"
    "        'user': 'orders-app-identity',"
    "        'auth': 'token',"
    "        'scope': 'https://ossrdbms-aad.database.windows.net/.default',"
    "        'identity': null,"
    "        'password_env': null,"
    "        'tls': { 'mode': 'verify-full', 'ca_file': null, "
    "'server_name': null }"
    "      },"
    "      'clients': [ { 'user': 'app', 'password_env': "
    "'APP_DB_PASSWORD' } ],"
    "      'client_tls': { 'mode': 'allow', 'cert_file': null, "
    "'key_file': null },"
    "      'pool': {"
    "        'mode': 'session', 'size': 20, 'min_idle': 0, "
    "'max_clients': 1000,"
    "        'wait_timeout': 30, 'connect_timeout': 10,"
    "        'idle_timeout': 600, 'lifetime': 3600"
    "      }"
    "    }"
    "  ]"
    "}";

static void test_contract_example(void)
{
	setenv("APP_DB_PASSWORD", "s3cret-from-env", 1);
	conf_t *c = load_ok(contract_example);
	if (!c)
		return;
	conf_pool_t *p = &c->pools[0];
	CHECK_EQ_STR(p->name, "orders");
	CHECK_EQ_STR(p->listen_host, "127.0.0.1");
	CHECK_EQ_INT(p->listen_port, 6432);
	CHECK_EQ_STR(p->server.host, "orders.postgres.database.azure.com");
	CHECK_EQ_STR(p->server.user, "orders-app-identity");
	CHECK_EQ_STR(p->clients[0].password, "s3cret-from-env");
	CHECK_EQ_STR(p->clients[0].password_env, "APP_DB_PASSWORD");

	/* The output is a config meaning the same thing: loading it again
	 * gives the same output. */
	char *json = conf_to_json(c);
	CHECK(json != NULL);
	CHECK(strstr(json, "s3cret-from-env") == NULL);
	CHECK(strstr(json, "\"password_env\":\t\"APP_DB_PASSWORD\"") != NULL);
	conf_t *again = NULL;
	char err[512] = "";
	CHECK_EQ_INT(conf_load_string(json, &again, err, sizeof(err)), 0);
	char *json2 = again ? conf_to_json(again) : NULL;
	CHECK_EQ_STR(json2, json);

	/* Every key of the example is in the output. */
	cJSON *out = cJSON_Parse(json);
	cJSON *pool = cJSON_GetArrayItem(cJSON_GetObjectItem(out, "pools"), 0);
	cJSON *limits = cJSON_GetObjectItem(pool, "pool");
	cJSON *tls =
	    cJSON_GetObjectItem(cJSON_GetObjectItem(pool, "server"), "tls");
	CHECK_EQ_STR(cJSON_GetObjectItem(tls, "mode")->valuestring,
		     "verify-full");
	CHECK(cJSON_GetObjectItem(limits, "lifetime")->valuedouble == 3600);
	CHECK(cJSON_IsNull(cJSON_GetObjectItem(
	    cJSON_GetObjectItem(out, "identity"), "client_id")));
	cJSON_Delete(out);
	free(json2);
	conf_free(again);
	free(json);
	conf_free(c);
}

static const char secrets_config[] =
    "{'http':{'admin_token_env':'TEST_ADMIN_TOKEN'},"
    "'identity':{'source':'client_secret','tenant_id':'t','client_id':"
    "'c','client_secret_env':'TEST_CLIENT_SECRET'},"
    "'pools':[{'protocol':'postgres','server':{'host':'h','database':"
    "'d','user':'u','auth':'password','password_env':'TEST_SERVER_PW'},"
    "'clients':[{'user':'a','password':'inline-pw'},"
    "{'user':'b','password_hash':'SCRAM-SHA-256$4096:c2FsdA==$aGFzaDE=:"
    "aGFzaDI='},"
    "{'user':'c','password_hash':['hash-one','hash-two']},"
    "{'user':'d','password_env':'TEST_CLIENT_PW'}]}]}";

static void check_masked(const char *json)
{
	static const char *const secrets[] = {
	    "admin-token-value", "client-secret-value",
	    "server-pw-value",	 "client-pw-value",
	    "inline-pw",	 "SCRAM-SHA-256",
	    "hash-one",		 "hash-two",
	};

	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
		if (strstr(json, secrets[i]))
			fprintf(stderr, "leaked %s\n", secrets[i]);
		CHECK(strstr(json, secrets[i]) == NULL);
	}
}

static void test_secrets_masked(void)
{
	setenv("TEST_ADMIN_TOKEN", "admin-token-value", 1);
	setenv("TEST_CLIENT_SECRET", "client-secret-value", 1);
	setenv("TEST_SERVER_PW", "server-pw-value", 1);
	setenv("TEST_CLIENT_PW", "client-pw-value", 1);
	conf_t *c = load_ok(secrets_config);
	if (!c)
		return;
	CHECK_EQ_STR(c->admin_token, "admin-token-value");
	CHECK_EQ_STR(c->identity.client_secret, "client-secret-value");
	CHECK_EQ_STR(c->pools[0].server.password, "server-pw-value");
	CHECK_EQ_STR(c->pools[0].clients[3].password, "client-pw-value");

	char *json = conf_to_json(c);
	CHECK(json != NULL);
	check_masked(json);
	cJSON *out = cJSON_Parse(json);
	cJSON *http = cJSON_GetObjectItem(out, "http");
	CHECK_EQ_STR(cJSON_GetObjectItem(http, "admin_token_env")->valuestring,
		     "TEST_ADMIN_TOKEN");
	cJSON *clients = cJSON_GetObjectItem(
	    cJSON_GetArrayItem(cJSON_GetObjectItem(out, "pools"), 0),
	    "clients");
	cJSON *a = cJSON_GetArrayItem(clients, 0);
	cJSON *b = cJSON_GetArrayItem(clients, 1);
	cJSON *hashes = cJSON_GetObjectItem(cJSON_GetArrayItem(clients, 2),
					    "password_hash");
	CHECK_EQ_STR(cJSON_GetObjectItem(a, "password")->valuestring, "***");
	CHECK_EQ_STR(cJSON_GetObjectItem(b, "password_hash")->valuestring,
		     "***");
	CHECK_EQ_INT(cJSON_GetArraySize(hashes), 2);
	CHECK_EQ_STR(cJSON_GetArrayItem(hashes, 1)->valuestring, "***");
	cJSON_Delete(out);
	free(json);
	conf_free(c);
}

/* ---- secrets from the environment and from files ---- */

static void test_password_env(void)
{
	setenv("APP_DB_PASSWORD", "from-env", 1);
	conf_t *c =
	    load_ok("{'pools':[{'protocol':'postgres','server':{'host':'h',"
		    "'database':'d','user':'u'},'clients':[{'user':'app',"
		    "'password_env':'APP_DB_PASSWORD'}]}]}");
	if (c)
		CHECK_EQ_STR(c->pools[0].clients[0].password, "from-env");
	conf_free(c);

	unsetenv("APP_DB_PASSWORD");
	CHECK_ERR("{'pools':[{'protocol':'postgres','server':{'host':'h',"
		  "'database':'d','user':'u'},'clients':[{'user':'app',"
		  "'password_env':'APP_DB_PASSWORD'}]}]}",
		  "pools[0].clients[0].password_env: environment variable "
		  "APP_DB_PASSWORD is not set");
	setenv("APP_DB_PASSWORD", "", 1);
	CHECK_ERR("{'pools':[{'protocol':'postgres','server':{'host':'h',"
		  "'database':'d','user':'u'},'clients':[{'user':'app',"
		  "'password_env':'APP_DB_PASSWORD'}]}]}",
		  "pools[0].clients[0].password_env: environment variable "
		  "APP_DB_PASSWORD is empty");
	/* A password pasted where a variable name belongs is not echoed. */
	CHECK_ERR("{'pools':[{'protocol':'postgres','server':{'host':'h',"
		  "'database':'d','user':'u'},'clients':[{'user':'app',"
		  "'password_env':'hunter2!'}]}]}",
		  "pools[0].clients[0].password_env: expected the name of an "
		  "environment variable (letters, digits, _)");
	setenv("APP_DB_PASSWORD", "s3cret-from-env", 1);

	unsetenv("TEST_NO_ADMIN");
	CHECK_ERR("{'http':{'admin_token_env':'TEST_NO_ADMIN'}," MINIMAL_TAIL,
		  "http.admin_token_env: environment variable TEST_NO_ADMIN "
		  "is not set");
	CHECK_ERR(
	    "{'identity':{'client_secret_env':'TEST_NO_ADMIN'}," MINIMAL_TAIL,
	    "identity.client_secret_env: environment variable "
	    "TEST_NO_ADMIN is not set");
}

static conf_t *load_password_file(const char *path, char *err, size_t len)
{
	char text[1024];
	conf_t *c = NULL;

	snprintf(text, sizeof(text),
		 "{'pools':[{'protocol':'postgres','server':{'host':'h',"
		 "'database':'d','user':'u'},'clients':[{'user':'app',"
		 "'password_file':'%s'}]}]}",
		 path);
	if (load_sq(text, &c, err, len))
		return NULL;
	return c;
}

static void check_password_file(const char *content, const char *expected)
{
	char *path = write_temp(content, 0600);
	char err[512] = "";
	conf_t *c = load_password_file(path, err, sizeof(err));

	CHECK(c != NULL);
	if (c) {
		CHECK_EQ_STR(c->pools[0].clients[0].password, expected);
		CHECK_EQ_STR(c->pools[0].clients[0].password_file, path);
	}
	conf_free(c);
	drop_temp(path);
}

static void test_password_file(void)
{
	char err[512], expected[512];

	check_password_file("pw", "pw");
	check_password_file("pw\n", "pw");
	check_password_file("pw\r\n", "pw");
	check_password_file("pw\n\n", "pw\n");
	check_password_file(" spaced pw \n", " spaced pw ");

	CHECK(load_password_file("/nonexistent/pw", err, sizeof(err)) == NULL);
	CHECK_EQ_STR(err, "pools[0].clients[0].password_file: cannot read "
			  "/nonexistent/pw: No such file or directory");

	char *path = write_temp("\n", 0600);
	CHECK(load_password_file(path, err, sizeof(err)) == NULL);
	snprintf(expected, sizeof(expected),
		 "pools[0].clients[0].password_file: %s is empty", path);
	CHECK_EQ_STR(err, expected);
	drop_temp(path);
}

static void test_server_password(void)
{
	setenv("TEST_SERVER_PW", "server-pw-value", 1);
	conf_t *c = load_ok(
	    "{'pools':[{'protocol':'mysql','server':{'host':'h','database':"
	    "'d','user':'u','auth':'password','password_env':"
	    "'TEST_SERVER_PW','tls':{'mode':'disable'}},'clients':[{'user':"
	    "'app','password':'x'}]}]}");
	if (c) {
		CHECK_EQ_INT(c->pools[0].server.auth, CONF_AUTH_PASSWORD);
		CHECK_EQ_STR(c->pools[0].server.password, "server-pw-value");
		CHECK_EQ_INT(c->pools[0].server.tls.mode, CONF_TLS_DISABLE);
	}
	conf_free(c);

	char *path = write_temp("file-pw\n", 0600);
	char server[256], text[2048];
	snprintf(server, sizeof(server),
		 "'auth':'password','password_file':'%s',", path);
	snprintf(text, sizeof(text), POOL_FMT, "", "", server);
	c = load_ok(text);
	if (c)
		CHECK_EQ_STR(c->pools[0].server.password, "file-pw");
	conf_free(c);
	drop_temp(path);
}

static void test_password_hash(void)
{
	conf_t *c =
	    load_ok("{'pools':[{'protocol':'postgres','server':{'host':'h',"
		    "'database':'d','user':'u'},'clients':[{'user':'a',"
		    "'password_hash':'single'},{'user':'b','password_hash':["
		    "'SCRAM-SHA-256$4096:abc$def:ghi','md5abc']}]}]}");
	if (!c)
		return;
	conf_client_t *a = &c->pools[0].clients[0];
	conf_client_t *b = &c->pools[0].clients[1];
	CHECK(a->password == NULL);
	CHECK_EQ_INT(a->nhashes, 1);
	CHECK_EQ_STR(a->hashes[0], "single");
	CHECK(b->password == NULL);
	CHECK_EQ_INT(b->nhashes, 2);
	CHECK_EQ_STR(b->hashes[0], "SCRAM-SHA-256$4096:abc$def:ghi");
	CHECK_EQ_STR(b->hashes[1], "md5abc");
	conf_free(c);

	CHECK_ERR("{'pools':[{'protocol':'postgres','server':{'host':'h',"
		  "'database':'d','user':'u'},'clients':[{'user':'a',"
		  "'password_hash':[]}]}]}",
		  "pools[0].clients[0].password_hash: expected a string or a "
		  "non-empty array of strings, got []");
	CHECK_ERR("{'pools':[{'protocol':'postgres','server':{'host':'h',"
		  "'database':'d','user':'u'},'clients':[{'user':'a',"
		  "'password_hash':['ok',7]}]}]}",
		  "pools[0].clients[0].password_hash[1]: expected a non-empty "
		  "string, got a number");
}

/* ---- validation messages ---- */

static void test_errors_contract(void)
{
	CHECK_POOL_ERR("", "", "'port':'abc',",
		       "pools[0].server.port: expected 1..65535, got \"abc\"");
	CHECK_POOL_ERR("", "", "'port':70000,",
		       "pools[0].server.port: expected 1..65535, got 70000");
	CHECK_POOL_ERR("", "", "'port':5432.5,",
		       "pools[0].server.port: expected 1..65535, got 5432.5");
	CHECK_ERR("{'pools':[{'name':'a','protocol':'postgres','server':{"
		  "'host':'h','user':'u'},'clients':[{'user':'app','password':"
		  "'x'}]},{'name':'b','protocol':'oracle'}]}",
		  "pools[1].protocol: expected one of postgres, mysql, "
		  "sqlserver, got \"oracle\"");
	CHECK_ERR("{'pools':[{'server':{'host':'h'}}]}",
		  "pools[0].protocol: is required: one of postgres, mysql, "
		  "sqlserver");
	CHECK_ERR("{'pools':[{'protocol':'postgres','server':{'host':'h',"
		  "'database':'d','user':'u'},'clients':[{'user':'app'}]}]}",
		  "pools[0].clients[0]: one of password, password_env, "
		  "password_file, password_hash is required");
	CHECK_ERR("{'pools':[{'protocol':'postgres','server':{'host':'h',"
		  "'database':'d','user':'u'},'clients':[{'user':'app',"
		  "'password':'x','password_hash':'y'}]}]}",
		  "pools[0].clients[0]: give only one of password, "
		  "password_env, password_file, password_hash (found password "
		  "and password_hash)");
	CHECK_POOL_ERR("", "'pool':{'sise':10},", "",
		       "pools[0].pool.sise: unknown key");
	CHECK_POOL_ERR("'pool':{},", "", "", "pool: unknown key");
	CHECK_ERR("{'Pools':[]}", "Pools: unknown key");
	CHECK_POOL_ERR("", "", "'tls':{'mode':'disable'},",
		       "pools[0].server.tls.mode: disable is refused when "
		       "server.auth is token (a token never crosses the "
		       "network in clear)");
	CHECK_POOL_ERR("", "", "'auth':'password',",
		       "pools[0].server: one of password_env, password_file "
		       "is required when auth is password");
	CHECK_POOL_ERR("", "", "'password_env':'X',",
		       "pools[0].server.password_env: is only used when auth "
		       "is password (set \"auth\": \"password\" or remove it)");
}

static void test_errors_authority(void)
{
	CHECK_POOL_ERR("'identity':{'authority':'http://login.example.com'},",
		       "", "",
		       "identity.authority: must be https:// unless its host "
		       "is a loopback address (127.0.0.0/8, ::1, localhost), "
		       "got \"http://login.example.com\"");
	CHECK_POOL_ERR(
	    "", "", "'identity':{'authority':'http://10.0.0.1:8080'},",
	    "pools[0].server.identity.authority: must be https:// unless "
	    "its host is a loopback address (127.0.0.0/8, ::1, "
	    "localhost), got \"http://10.0.0.1:8080\"");
	CHECK_POOL_ERR("'identity':{'authority':'http://127.0.0.1@evil.com'},",
		       "", "",
		       "identity.authority: expected an http:// or https:// "
		       "URL with a host and no user:password@, got "
		       "\"http://127.0.0.1@evil.com\"");
	CHECK_POOL_ERR("'identity':{'authority':'http://localhost.evil.com'},",
		       "", "",
		       "identity.authority: must be https:// unless its host "
		       "is a loopback address (127.0.0.0/8, ::1, localhost), "
		       "got \"http://localhost.evil.com\"");
	CHECK_POOL_ERR("'identity':{'imds_endpoint':'169.254.169.254'},", "",
		       "",
		       "identity.imds_endpoint: expected an http:// or "
		       "https:// URL with a host and no user:password@, got "
		       "\"169.254.169.254\"");

	static const char *const loopback[] = {
	    "http://127.0.0.1:8080", "http://127.1.2.3/tenant",
	    "http://[::1]:8080/",    "http://localhost:8080",
	    "HTTP://LOCALHOST",	     "https://login.chinacloudapi.cn",
	};
	for (size_t i = 0; i < sizeof(loopback) / sizeof(loopback[0]); i++) {
		char top[256], text[2048];
		snprintf(top, sizeof(top), "'identity':{'authority':'%s'},",
			 loopback[i]);
		snprintf(text, sizeof(text), POOL_FMT, top, "", "");
		conf_free(load_ok(text));
	}
}

static void test_errors_pools(void)
{
	CHECK_ERR("{}", "pools: at least one pool is required");
	CHECK_ERR("{'pools':[]}", "pools: at least one pool is required");
	CHECK_ERR("{'pools':{}}", "pools: expected an array, got an object");
	CHECK_ERR("{'pools':[{'protocol':'postgres','server':{'host':'h',"
		  "'database':'d','user':'u'}}]}",
		  "pools[0].clients: at least one client is required");
	CHECK_ERR("{'pools':[{'protocol':'postgres','server':{'host':'h',"
		  "'database':'d','user':'u'},'clients':[]}]}",
		  "pools[0].clients: at least one client is required");
	CHECK_ERR("{'pools':[{'protocol':'postgres','server':{'host':'h',"
		  "'database':'d','user':'u'},'clients':[{'user':'app',"
		  "'password':'x'},{'user':'app','password':'y'}]}]}",
		  "pools[0].clients[1].user: duplicate user \"app\" (also "
		  "clients[0])");
	CHECK_ERR("{'pools':[" MINIMAL_POOL "," MINIMAL_POOL "]}",
		  "pools[1].name: duplicate pool name \"d\" (also pools[0])");
	CHECK_ERR("{'pools':[{'name':'a'," MINIMAL_POOL_BODY ",'listen':"
		  "'127.0.0.1:6432'},{'name':'b','protocol':'mysql','server':{"
		  "'host':'h','user':'u'},'clients':[{'user':'app','password':"
		  "'x'}],'listen':'127.0.0.1:6432'}]}",
		  "pools[1].listen: 127.0.0.1:6432 is also the listener of "
		  "pools[0] (postgres); pools may share a listener only if "
		  "they share protocol, got mysql");
	/* Same protocol: one listener, routed by database name. */
	conf_free(load_ok("{'pools':[{'name':'a'," MINIMAL_POOL_BODY
			  "},{'name':'b'," MINIMAL_POOL_BODY "}]}"));
	CHECK_ERR("{'http':{'listen':'127.0.0.1:5432'},'pools':[" MINIMAL_POOL
		  "]}",
		  "http.listen: 127.0.0.1:5432 is also the listener of "
		  "pools[0]");
	CHECK_ERR("{'pools':[{'protocol':'postgres','server':{'host':'h',"
		  "'user':'u'},'clients':[{'user':'app','password':'x'}]}]}",
		  "pools[0]: one of name, server.database is required");
	CHECK_POOL_ERR("", "'listen':'6432',", "",
		       "pools[0].listen: expected \"host:port\" with a port in "
		       "1..65535, got \"6432\"");
}

static void test_errors_limits(void)
{
	CHECK_POOL_ERR("", "'pool':{'size':0},", "",
		       "pools[0].pool.size: expected 1..1000000, got 0");
	CHECK_POOL_ERR("", "'pool':{'size':5,'min_idle':6},", "",
		       "pools[0].pool.min_idle: must not exceed pool.size "
		       "(5), got 6");
	CHECK_POOL_ERR("", "'pool':{'max_clients':0},", "",
		       "pools[0].pool.max_clients: expected 1..1000000, got 0");
	CHECK_POOL_ERR("", "'pool':{'size':20,'size':30},", "",
		       "pools[0].pool.size: duplicate key");
	CHECK_POOL_ERR("", "'pool':{'wait_timeout':-1},", "",
		       "pools[0].pool.wait_timeout: expected a number of "
		       "seconds in 0..31536000, got -1");
	CHECK_POOL_ERR("'shutdown':{'timeout':'30s'},", "", "",
		       "shutdown.timeout: expected a number of seconds in "
		       "0..31536000, got \"30s\"");
	CHECK_POOL_ERR("", "'pool':{'connect_timeout':0},", "",
		       "pools[0].pool.connect_timeout: expected a number of "
		       "seconds > 0 and <= 31536000, got 0");
	CHECK_POOL_ERR("", "'pool':{'mode':'statement'},", "",
		       "pools[0].pool.mode: expected one of session, "
		       "transaction, got \"statement\"");

	conf_t *c = load_ok(
	    "{'shutdown':{'timeout':0.5},'pools':[{'protocol':'postgres',"
	    "'server':{'host':'h','database':'d','user':'u'},'clients':[{"
	    "'user':'app','password':'x'}],'pool':{'mode':'transaction',"
	    "'size':5,'min_idle':5,'max_clients':1,'idle_timeout':0,"
	    "'lifetime':0,'wait_timeout':0}}]}");
	if (c) {
		CHECK(c->shutdown_timeout == 0.5);
		CHECK_EQ_INT(c->pools[0].pool.mode, CONF_POOL_TRANSACTION);
		CHECK_EQ_INT(c->pools[0].pool.min_idle, 5);
		CHECK(c->pools[0].pool.lifetime == 0);
	}
	conf_free(c);
}

static void test_errors_types(void)
{
	CHECK_POOL_ERR("'log':{'level':'verbose'},", "", "",
		       "log.level: expected one of debug, info, warn, error, "
		       "got \"verbose\"");
	CHECK_POOL_ERR("'log':{'format':'xml'},", "", "",
		       "log.format: expected one of text, json, got \"xml\"");
	CHECK_POOL_ERR("'identity':{'source':'msi'},", "", "",
		       "identity.source: expected one of auto, imds, "
		       "app_service, workload_identity, client_secret, "
		       "client_certificate, azure_cli, got \"msi\"");
	CHECK_POOL_ERR("", "'client_tls':{'mode':'prefer'},", "",
		       "pools[0].client_tls.mode: expected one of allow, "
		       "require, disable, got \"prefer\"");
	CHECK_POOL_ERR("", "", "'auth':'aad',",
		       "pools[0].server.auth: expected one of token, password, "
		       "got \"aad\"");
	CHECK_ERR("{'pools':[{'protocol':'postgres','server':{'database':"
		  "'d','user':'u'},'clients':[{'user':'a','password':'x'}]}]}",
		  "pools[0].server.host: is required");
	CHECK_ERR("{'pools':[{'protocol':'postgres','server':'h'}]}",
		  "pools[0].server: expected an object, got \"h\"");
	CHECK_ERR("{'pools':[{'protocol':'postgres','server':{'host':'h',"
		  "'database':'d','user':'u'},'clients':[{'user':'app',"
		  "'password':12345}]}]}",
		  "pools[0].clients[0].password: expected a string, got a "
		  "number");
	CHECK_ERR("{'pools':[{'protocol':'postgres','server':{'host':'h',"
		  "'database':'d','user':'u'},'clients':[{'user':'app',"
		  "'password':''}]}]}",
		  "pools[0].clients[0].password: must not be empty");
	CHECK_ERR("[1]", "expected a JSON object at the top level, got an "
			 "array");
	CHECK_ERR("{'pools':[{'protocol':'postgres','server':{'host':'h\\n',"
		  "'database':'d','user':'u'},'clients':[{'user':'a',"
		  "'password':'x'}]}]}",
		  "pools[0].server.host: contains a control character");
	CHECK_ERR("{'a b':1}", "[\"a b\"]: unknown key");
	CHECK_POOL_ERR("'identity':{'client_id':'a','object_id':'b'},", "", "",
		       "identity: give at most one of client_id, object_id, "
		       "resource_id");
	CHECK_POOL_ERR("", "", "'tls':{'ca_file':'/nonexistent/ca.pem'},",
		       "pools[0].server.tls.ca_file: cannot read "
		       "/nonexistent/ca.pem: No such file or directory");
}

static void test_client_tls_files(void)
{
	char *cert = write_temp("cert", 0600);
	char pool[512], text[2048];

	snprintf(pool, sizeof(pool), "'client_tls':{'cert_file':'%s'},", cert);
	CHECK_POOL_ERR("", pool, "",
		       "pools[0].client_tls.key_file: is required when "
		       "cert_file is set");
	snprintf(pool, sizeof(pool),
		 "'client_tls':{'mode':'require','cert_file':'%s','key_file':"
		 "'%s'},",
		 cert, cert);
	snprintf(text, sizeof(text), POOL_FMT, "", pool, "");
	conf_t *c = load_ok(text);
	if (c) {
		CHECK_EQ_INT(c->pools[0].client_tls.mode, CONF_CTLS_REQUIRE);
		CHECK_EQ_STR(c->pools[0].client_tls.key_file, cert);
	}
	conf_free(c);
	drop_temp(cert);
}

static void test_syntax_errors(void)
{
	CHECK_ERR("{\n  'pools': [],\n}\n",
		  "line 2, column 14: invalid JSON (trailing comma)");
	CHECK_ERR("{\n  'pools': [1,\n 2,]\n}",
		  "line 3, column 3: invalid JSON (trailing comma)");
	CHECK_ERR("{\n  'pools': [\n", "line 3, column 1: invalid JSON "
				       "(unexpected end of input)");
	CHECK_ERR("{\n  // pools\n}",
		  "line 2, column 3: invalid JSON (JSON has no comments)");
	CHECK_ERR("{} x", "line 1, column 4: invalid JSON");
	CHECK_ERR("{'a' 1}", "line 1, column 6: invalid JSON");
	CHECK_ERR("{pools: []}",
		  "line 1, column 2: invalid JSON (keys need double quotes)");
	CHECK_ERR("{'a':1, # c\n}",
		  "line 1, column 9: invalid JSON (JSON has no comments)");
	CHECK_ERR("[1, x]", "line 1, column 5: invalid JSON");
	CHECK_ERR("", "the config is empty");
	CHECK_ERR("  \n ", "the config is empty");

	conf_t *c = NULL;
	char err[256];
	CHECK_EQ_INT(conf_load_string("{\n 'pools': 1}", &c, err, sizeof(err)),
		     TP_ECONFIG);
	CHECK_EQ_STR(err,
		     "line 2, column 2: invalid JSON (JSON strings use double "
		     "quotes)");
	CHECK_EQ_INT(conf_load_string(NULL, &c, err, sizeof(err)), TP_ECONFIG);
	/* Columns count characters, not bytes. */
	CHECK_ERR("{'name':'\xc3\xa9t\xc3\xa9' x}",
		  "line 1, column 15: invalid JSON");
}

/* ---- identities ---- */

static void test_pool_identity(void)
{
	setenv("TEST_CLIENT_SECRET", "client-secret-value", 1);
	conf_t *c = load_ok(
	    "{'identity':{'imds_endpoint':'http://127.0.0.1:8081/',"
	    "'authority':'http://127.0.0.1:8082','client_id':'top'},"
	    "'pools':[{'protocol':'postgres','server':{'host':'h',"
	    "'database':'a','user':'u','identity':{'source':"
	    "'client_secret','tenant_id':'t','client_id':'own',"
	    "'client_secret_env':'TEST_CLIENT_SECRET'}},'clients':[{'user':"
	    "'app','password':'x'}]},{'protocol':'postgres','server':{"
	    "'host':'h','database':'b','user':'u','identity':{"
	    "'authority':'https://login.microsoftonline.us'}},'clients':[{"
	    "'user':'app','password':'x'}]}]}");
	if (!c)
		return;
	const conf_identity_t *a = conf_pool_identity(c, &c->pools[0]);
	const conf_identity_t *b = conf_pool_identity(c, &c->pools[1]);
	CHECK(a == c->pools[0].server.identity);
	CHECK_EQ_STR(c->identity.imds_endpoint, "http://127.0.0.1:8081");
	CHECK_EQ_INT(a->source, CONF_SRC_CLIENT_SECRET);
	CHECK_EQ_STR(conf_source_name(a->source), "client_secret");
	CHECK_EQ_STR(a->client_id, "own");
	CHECK_EQ_STR(a->client_secret, "client-secret-value");
	/* Endpoints are inherited, who the pool is is not. */
	CHECK_EQ_STR(a->imds_endpoint, "http://127.0.0.1:8081");
	CHECK_EQ_STR(a->authority, "http://127.0.0.1:8082");
	CHECK_EQ_INT(b->source, CONF_SRC_AUTO);
	CHECK(b->client_id == NULL);
	CHECK_EQ_STR(b->imds_endpoint, "http://127.0.0.1:8081");
	CHECK_EQ_STR(b->authority, "https://login.microsoftonline.us");

	char *json = conf_to_json(c);
	CHECK(json && !strstr(json, "client-secret-value"));
	conf_t *again = NULL;
	char err[256];
	CHECK_EQ_INT(conf_load_string(json, &again, err, sizeof(err)), 0);
	conf_free(again);
	free(json);
	conf_free(c);
}

/* ---- files and warnings ---- */

static void test_load_file(void)
{
	char *json = sq(MINIMAL);
	char *open_file = write_temp(json, 0644);
	char *private_file = write_temp(json, 0600);
	conf_t *c = NULL;
	char err[512];

	CHECK_EQ_INT(conf_load_file(open_file, &c, err, sizeof(err)), 0);
	if (c) {
		CHECK_EQ_STR(c->path, open_file);
		CHECK_EQ_INT(c->nwarnings, 1);
		CHECK(c->nwarnings == 1 &&
		      strstr(c->warnings[0], open_file) != NULL);
		CHECK(c->nwarnings == 1 &&
		      strncmp(c->warnings[0],
			      "pools[0].clients[0].password: ", 30) == 0);
	}
	conf_free(c);
	CHECK_EQ_INT(conf_load_file(private_file, &c, err, sizeof(err)), 0);
	if (c)
		CHECK_EQ_INT(c->nwarnings, 0);
	conf_free(c);

	CHECK_EQ_INT(
	    conf_load_file("/nonexistent/tokenpool.json", &c, err, sizeof(err)),
	    TP_ECONFIG);
	CHECK(c == NULL);
	CHECK_EQ_STR(err, "cannot read /nonexistent/tokenpool.json: No such "
			  "file or directory");
	CHECK_EQ_INT(conf_load_file("/tmp", &c, err, sizeof(err)), TP_ECONFIG);
	CHECK_EQ_STR(err, "cannot read /tmp: Is a directory");
	drop_temp(open_file);
	drop_temp(private_file);
	free(json);
}

static void test_tls_require_warns(void)
{
	char text[2048];

	snprintf(text, sizeof(text), POOL_FMT, "", "",
		 "'tls':{'mode':'require'},");
	conf_t *c = load_ok(text);
	if (!c)
		return;
	CHECK_EQ_INT(c->nwarnings, 1);
	if (c->nwarnings == 1)
		CHECK_EQ_STR(c->warnings[0],
			     "pools[0].server.tls.mode: require encrypts but "
			     "does not verify the server certificate; use "
			     "verify-full");
	conf_free(c);
}

TP_TEST_MAIN(TP_TEST(test_error_names), TP_TEST(test_split_hostport),
	     TP_TEST(test_minimal_defaults), TP_TEST(test_protocol_defaults),
	     TP_TEST(test_null_means_default), TP_TEST(test_http_disabled),
	     TP_TEST(test_contract_example), TP_TEST(test_secrets_masked),
	     TP_TEST(test_password_env), TP_TEST(test_password_file),
	     TP_TEST(test_server_password), TP_TEST(test_password_hash),
	     TP_TEST(test_errors_contract), TP_TEST(test_errors_authority),
	     TP_TEST(test_errors_pools), TP_TEST(test_errors_limits),
	     TP_TEST(test_errors_types), TP_TEST(test_client_tls_files),
	     TP_TEST(test_syntax_errors), TP_TEST(test_pool_identity),
	     TP_TEST(test_load_file), TP_TEST(test_tls_require_warns))
