/*
 * names.c - the spelling of every config enum value, and the per-protocol
 * defaults, as tables indexed by the conf.h enums.
 *
 * Parsing (JSON string -> enum) and printing (enum -> JSON string) both use
 * these tables, so a value cannot be accepted under one name and printed
 * under another. Not here: validation rules.
 */
#include "conf/internal.h"

const char *const conf__protocol_names[3] = {
    [CONF_PROTO_POSTGRES] = "postgres",
    [CONF_PROTO_MYSQL] = "mysql",
    [CONF_PROTO_SQLSERVER] = "sqlserver",
};

const int conf__protocol_ports[3] = {
    [CONF_PROTO_POSTGRES] = 5432,
    [CONF_PROTO_MYSQL] = 3306,
    [CONF_PROTO_SQLSERVER] = 1433,
};

/* Azure Database for PostgreSQL and for MySQL share one audience. */
const char *const conf__protocol_scopes[3] = {
    [CONF_PROTO_POSTGRES] =
	"https://ossrdbms-aad.database.windows.net/.default",
    [CONF_PROTO_MYSQL] = "https://ossrdbms-aad.database.windows.net/.default",
    [CONF_PROTO_SQLSERVER] = "https://database.windows.net/.default",
};

const char *const conf__source_names[7] = {
    [CONF_SRC_AUTO] = "auto",
    [CONF_SRC_IMDS] = "imds",
    [CONF_SRC_APP_SERVICE] = "app_service",
    [CONF_SRC_WORKLOAD_IDENTITY] = "workload_identity",
    [CONF_SRC_CLIENT_SECRET] = "client_secret",
    [CONF_SRC_CLIENT_CERTIFICATE] = "client_certificate",
    [CONF_SRC_AZURE_CLI] = "azure_cli",
};

const char *const conf__auth_names[2] = {
    [CONF_AUTH_TOKEN] = "token",
    [CONF_AUTH_PASSWORD] = "password",
};

const char *const conf__tls_mode_names[4] = {
    [CONF_TLS_VERIFY_FULL] = "verify-full",
    [CONF_TLS_VERIFY_CA] = "verify-ca",
    [CONF_TLS_REQUIRE] = "require",
    [CONF_TLS_DISABLE] = "disable",
};

const char *const conf__client_tls_mode_names[3] = {
    [CONF_CTLS_ALLOW] = "allow",
    [CONF_CTLS_REQUIRE] = "require",
    [CONF_CTLS_DISABLE] = "disable",
};

const char *const conf__pool_mode_names[2] = {
    [CONF_POOL_SESSION] = "session",
    [CONF_POOL_TRANSACTION] = "transaction",
};

const char *const conf__log_level_names[4] = {
    [CONF_LOG_DEBUG] = "debug",
    [CONF_LOG_INFO] = "info",
    [CONF_LOG_WARN] = "warn",
    [CONF_LOG_ERROR] = "error",
};

/* conf_t.log_json is false for index 0, true for index 1. */
const char *const conf__log_format_names[2] = {"text", "json"};

static const char *name_of(const char *const *names, size_t n, int v)
{
	return v >= 0 && (size_t)v < n ? names[v] : "unknown";
}

const char *conf_protocol_name(conf_protocol_t p)
{
	return name_of(conf__protocol_names, CONF__COUNT(conf__protocol_names),
		       (int)p);
}

const char *conf_source_name(conf_source_t s)
{
	return name_of(conf__source_names, CONF__COUNT(conf__source_names),
		       (int)s);
}
