/*
 * test_connstr.c - the connection-string parser (conf/connstr.c) against a
 * table: every form Service Connector writes (libpq keywords and URIs,
 * ADO.NET, ODBC, JDBC for PostgreSQL, MySQL and SQL Server, the Go MySQL
 * DSN), with quoting, escapes, spacing, case, empty values, IPv6 hosts,
 * and malformed input with the exact one-line error a user sees.
 *
 * Not here: turning the result into a config (test_conf_env.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/internal.h"
#include "tests/unit/tp_test.h"

#define VAR "AZURE_POSTGRESQL_CONNECTIONSTRING"

typedef struct row {
	const char *in;
	const char *err; /* expected error after "VAR: "; NULL: parses */
	const char *form;
	int protocol; /* -1: the form does not say */
	const char *host;
	int port;
	const char *database;
	const char *user;
	const char *ca_file;
	const char *client_id;
	bool password;
	const char *weak; /* weak settings joined by '|'; NULL: none */
	bool stripped;
} row_t;

#define PG CONF_PROTO_POSTGRES
#define MY CONF_PROTO_MYSQL
#define MS CONF_PROTO_SQLSERVER

static const row_t rows[] = {
    /* ---- libpq keywords ---- */
    {.in = "host=h.postgres.database.azure.com port=5432 dbname=orders "
	   "user=app sslmode=require",
     .form = "libpq keywords",
     .protocol = -1,
     .host = "h.postgres.database.azure.com",
     .port = 5432,
     .database = "orders",
     .user = "app",
     .weak = "sslmode=require"},
    {.in = "  host = h   port=6432\tdbname = 'my db' user='o\\'brien' ",
     .form = "libpq keywords",
     .protocol = -1,
     .host = "h",
     .port = 6432,
     .database = "my db",
     .user = "o'brien"},
    {.in = "host=h dbname=a\\ b user=u sslrootcert='/etc/ssl/ca dir/ca.pem' "
	   "sslmode=verify-full",
     .form = "libpq keywords",
     .protocol = -1,
     .host = "h",
     .database = "a b",
     .user = "u",
     .ca_file = "/etc/ssl/ca dir/ca.pem"},
    {.in = "host=h dbname=d user=u password='p w;x' sslmode=verify-ca",
     .form = "libpq keywords",
     .protocol = -1,
     .host = "h",
     .database = "d",
     .user = "u",
     .password = true,
     .weak = "sslmode=verify-ca"},
    {.in = "host=h dbname='' user=u port=''",
     .form = "libpq keywords",
     .protocol = -1,
     .host = "h",
     .user = "u"},
    {.in = "host=::1 dbname=d user=u",
     .form = "libpq keywords",
     .protocol = -1,
     .host = "::1",
     .database = "d",
     .user = "u"},
    {.in = "host=srv.postgres.database.azure.com dbname=d user=app@srv",
     .form = "libpq keywords",
     .protocol = -1,
     .host = "srv.postgres.database.azure.com",
     .database = "d",
     .user = "app",
     .stripped = true},
    {.in = "host=srv.postgres.database.azure.com dbname=d "
	   "user=alice@contoso.com",
     .form = "libpq keywords",
     .protocol = -1,
     .host = "srv.postgres.database.azure.com",
     .database = "d",
     .user = "alice@contoso.com"},
    {.in = "host=h user=u host=h2", /* the last one wins */
     .form = "libpq keywords",
     .protocol = -1,
     .host = "h2",
     .user = "u"},
    {.in = "host='h", .err = "unterminated quote at position 6"},
    {.in = "host=h dbname='d\\'", .err = "unterminated quote at position 15"},
    {.in = "host=h oops", .err = "expected key=value at position 8"},
    {.in = "host=h my pass=x", .err = "expected key=value at position 8"},
    {.in = "host=h =x", .err = "expected key=value at position 8"},
    {.in = "host=h port=54x32", .err = "bad port \"54x32\": expected 1..65535"},
    {.in = "host=h port=70000", .err = "bad port \"70000\": expected 1..65535"},
    {.in = "host=h port=0", .err = "bad port \"0\": expected 1..65535"},
    {.in = "dbname=d user=u", .err = "missing host"},
    {.in = "host=/var/run/postgresql dbname=d",
     .err = "Unix-domain sockets are not supported: give a host name"},

    /* ---- libpq URIs ---- */
    {.in = "postgresql://app@h.postgres.database.azure.com:5432/orders"
	   "?sslmode=require",
     .form = "URI",
     .protocol = PG,
     .host = "h.postgres.database.azure.com",
     .port = 5432,
     .database = "orders",
     .user = "app",
     .weak = "sslmode=require"},
    {.in = "postgres://us%40er:se%3Acret@[2001:db8::1]:6432/my%20db"
	   "?sslrootcert=%2Fca.pem&&application_name=x&",
     .form = "URI",
     .protocol = PG,
     .host = "2001:db8::1",
     .port = 6432,
     .database = "my db",
     .user = "us@er",
     .ca_file = "/ca.pem",
     .password = true},
    {.in = "postgresql://h/d?user=u&port=5433&sslmode=verify-full",
     .form = "URI",
     .protocol = PG,
     .host = "h",
     .port = 5433,
     .database = "d",
     .user = "u"},
    {.in = "POSTGRESQL://h/d#fragment",
     .form = "URI",
     .protocol = PG,
     .host = "h",
     .database = "d"},
    {.in = "mysql://u@h:3306/d", /* not written by Service Connector */
     .form = "URI",
     .protocol = MY,
     .host = "h",
     .port = 3306,
     .database = "d",
     .user = "u"},
    {.in = "sqlserver://h:1433?database=d&fedauth="
	   "ActiveDirectoryManagedIdentity&user%20id=cid", /* go-mssqldb */
     .form = "URI",
     .protocol = MS,
     .host = "h",
     .port = 1433,
     .database = "d",
     .client_id = "cid"},
    {.in = "postgresql://h1:5432,h2:5432/d",
     .err = "several hosts are not supported: give one"},
    {.in = "postgresql:///d?user=u", .err = "missing host"},
    {.in = "postgresql://h/d?sslmode",
     .err = "expected key=value in the "
	    "query at position 18"},
    {.in = "postgresql://h/d%2", .err = "bad percent-encoding at position 17"},
    {.in = "postgresql://h/d%00x",
     .err = "bad percent-encoding at position 17"},
    {.in = "postgresql://[::1/d",
     .err = "missing ] after the IPv6 address of the host"},
    {.in = "postgresql://h:99999/d",
     .err = "bad port \"99999\": expected 1..65535"},
    {.in = "redis://h:6379",
     .err = "unknown scheme \"redis\": expected postgresql://, mysql://, "
	    "sqlserver://, jdbc:postgresql://, jdbc:mysql:// or "
	    "jdbc:sqlserver://"},

    /* ---- ADO.NET (Npgsql, MySqlConnector, SqlClient) ---- */
    {.in = "Server=h.postgres.database.azure.com;Database=orders;Port=5432;"
	   "User Id=app;Ssl Mode=Require;",
     .form = "ADO.NET",
     .protocol = -1,
     .host = "h.postgres.database.azure.com",
     .port = 5432,
     .database = "orders",
     .user = "app",
     .weak = "Ssl Mode=Require"},
    {.in = " server = h ; DATABASE = d ;  user id=u;;SSLMODE=VerifyFull ;",
     .form = "ADO.NET",
     .protocol = -1,
     .host = "h",
     .database = "d",
     .user = "u"},
    {.in = "Host=h:5433;Username=\"a;b\"\"c\";Password='x''y';"
	   "Root Certificate=/c a.pem",
     .form = "ADO.NET",
     .protocol = -1,
     .host = "h",
     .port = 5433,
     .user = "a;b\"c",
     .ca_file = "/c a.pem",
     .password = true},
    {.in = "Server=h;Database=;User Id=u;Odd==Key=1;Port=",
     .form = "ADO.NET",
     .protocol = -1,
     .host = "h",
     .user = "u"},
    {.in = "Server=[fe80::1%eth0],5432;User Id=u",
     .form = "ADO.NET",
     .protocol = -1,
     .host = "fe80::1%eth0",
     .port = 5432,
     .user = "u"},
    {.in = "host=h;port=5432;database=d;username=u", /* lower case */
     .form = "ADO.NET",
     .protocol = -1,
     .host = "h",
     .port = 5432,
     .database = "d",
     .user = "u"},
    {.in = "Server=h.mysql.database.azure.com;Database=d;Port=3306;"
	   "User Id=app@h;SslMode=Required;SslCa=/ca.pem",
     .form = "ADO.NET",
     .protocol = -1,
     .host = "h.mysql.database.azure.com",
     .port = 3306,
     .database = "d",
     .user = "app",
     .ca_file = "/ca.pem",
     .weak = "SslMode=Required",
     .stripped = true},
    /* Azure SQL: User Id is the client id with a managed identity */
    {.in = "Server=tcp:x.database.windows.net,1433;Database=db;"
	   "Authentication=Active Directory Default;"
	   "User Id=0c2e4a6b-8d1f-4b3a-9c5e-7f1a3b5d7e21;"
	   "TrustServerCertificate=True",
     .form = "ADO.NET",
     .protocol = -1,
     .host = "x.database.windows.net",
     .port = 1433,
     .database = "db",
     .client_id = "0c2e4a6b-8d1f-4b3a-9c5e-7f1a3b5d7e21",
     .weak = "TrustServerCertificate=True"},
    {.in = "Data Source=tcp:x.database.windows.net,1433;Initial Catalog=db;"
	   "Authentication=\"Active Directory Managed Identity\";"
	   "User Id=cid;Encrypt=False",
     .form = "ADO.NET",
     .protocol = -1,
     .host = "x.database.windows.net",
     .port = 1433,
     .database = "db",
     .client_id = "cid",
     .weak = "Encrypt=False"},
    {.in = "Server=x;Database=db;User Id=sa;Password=p;Encrypt=Strict",
     .form = "ADO.NET",
     .protocol = -1,
     .host = "x",
     .database = "db",
     .user = "sa",
     .password = true},
    {.in = "Server=h;User Id=\"unterminated",
     .err = "unterminated quote at position 18"},
    {.in = "Server=h;User Id='a'b;Database=d",
     .err = "expected ; after the closing quote at position 21"},
    {.in = "Server=h;Database", .err = "expected key=value at position 10"},
    {.in = "Server=h; =x", .err = "expected key=value at position 11"},
    {.in = "Server=h,i;Database=d",
     .err = "several hosts are not supported: give one"},
    {.in = "Server=tcp:h\\SQLEXPRESS;Database=d",
     .err = "named instances (host\\instance) are not supported: give the "
	    "port"},
    {.in = "Server=h;Port=abc", .err = "bad port \"abc\": expected 1..65535"},
    {.in = "Database=d;User Id=u", .err = "missing host"},

    /* ---- ODBC ---- */
    {.in = "Driver={ODBC Driver 18 for SQL Server};Server=tcp:x,1433;"
	   "Database=db;UID=cid;Authentication=ActiveDirectoryMsi;"
	   "Encrypt=yes;",
     .form = "ODBC",
     .protocol = -1,
     .host = "x",
     .port = 1433,
     .database = "db",
     .client_id = "cid"},
    {.in = "DRIVER={a}}b;c};SERVER=x;DATABASE={d}}b};UID=u;PWD={p;}}w}",
     .form = "ODBC",
     .protocol = -1,
     .host = "x",
     .database = "d}b",
     .user = "u",
     .password = true},
    {.in = "Driver={ODBC Driver 18;Server=x",
     .err = "unterminated brace at position 8"},

    /* ---- JDBC ---- */
    {.in = "jdbc:postgresql://h.postgres.database.azure.com:5432/orders"
	   "?sslmode=require&user=app",
     .form = "JDBC",
     .protocol = PG,
     .host = "h.postgres.database.azure.com",
     .port = 5432,
     .database = "orders",
     .user = "app",
     .weak = "sslmode=require"},
    {.in = "jdbc:postgresql://h/d?user=u&sslfactory=org.postgresql.ssl."
	   "NonValidatingFactory&ssl=true",
     .form = "JDBC",
     .protocol = PG,
     .host = "h",
     .database = "d",
     .user = "u",
     .weak = "sslfactory=org.postgresql.ssl.NonValidatingFactory"},
    {.in = "jdbc:mysql://h.mysql.database.azure.com:3306/d?sslmode=required"
	   "&user=app&serverSslCert=/ca.pem&defaultAuthenticationPlugin=x",
     .form = "JDBC",
     .protocol = MY,
     .host = "h.mysql.database.azure.com",
     .port = 3306,
     .database = "d",
     .user = "app",
     .ca_file = "/ca.pem",
     .weak = "sslmode=required"},
    {.in = "jdbc:mysql://h/d?useSSL=false&verifyServerCertificate=false",
     .form = "JDBC",
     .protocol = MY,
     .host = "h",
     .database = "d",
     .weak = "useSSL=false|verifyServerCertificate=false"},
    {.in = "jdbc:sqlserver://x.database.windows.net:1433;database=db;"
	   "authentication=ActiveDirectoryMSI;msiClientId=cid;"
	   "encrypt=true;trustServerCertificate=false;",
     .form = "JDBC",
     .protocol = MS,
     .host = "x.database.windows.net",
     .port = 1433,
     .database = "db",
     .client_id = "cid"},
    {.in = "jdbc:sqlserver://;serverName=x;portNumber=1444;"
	   "databaseName={a;b}",
     .form = "JDBC",
     .protocol = MS,
     .host = "x",
     .port = 1444,
     .database = "a;b"},
    {.in = "JDBC:PostgreSQL://h/d", /* scheme case */
     .form = "JDBC",
     .protocol = PG,
     .host = "h",
     .database = "d"},
    {.in = "jdbc:postgresql:orders",
     .err = "missing host: expected jdbc:postgresql://host:port/..."},
    {.in = "jdbc:oracle:thin:@h:1521:x",
     .err = "unknown scheme \"jdbc:oracle\": expected postgresql://, "
	    "mysql://, sqlserver://, jdbc:postgresql://, jdbc:mysql:// or "
	    "jdbc:sqlserver://"},
    {.in = "jdbc:sqlserver://h\\inst;database=d",
     .err = "named instances (host\\instance) are not supported: give the "
	    "port"},

    /* ---- Go MySQL driver ---- */
    {.in = "app@tcp(h.mysql.database.azure.com:3306)/d?tls=true"
	   "&allowCleartextPasswords=true",
     .form = "Go MySQL DSN",
     .protocol = MY,
     .host = "h.mysql.database.azure.com",
     .port = 3306,
     .database = "d",
     .user = "app"},
    {.in = "u:pw@tcp([::1]:3307)/d?tls=skip-verify",
     .form = "Go MySQL DSN",
     .protocol = MY,
     .host = "::1",
     .port = 3307,
     .database = "d",
     .user = "u",
     .password = true,
     .weak = "tls=skip-verify"},
    {.in = "u@tcp(h:3306", .err = "missing ) after tcp( at position 6"},
    {.in = "u@tcp(h:3306)d",
     .err = "expected / after tcp(...) at position "
	    "14"},

    /* ---- neither ---- */
    {.in = "", .err = "is empty"},
    {.in = "  \t ", .err = "is empty"},
    {.in = "just some words",
     .err = "not a connection string: expected key=value pairs or a URL"},
};

static void join_weak(const conf__connstr_t *cs, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < cs->nweak; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s",
					 i ? "|" : "", cs->weak[i]);
}

#define CHECK_OPT_STR(got, want)                     \
	do {                                         \
		if ((want) == NULL)                  \
			CHECK((got) == NULL);        \
		else                                 \
			CHECK_EQ_STR((got), (want)); \
	} while (0)

static void check_row(const row_t *r)
{
	conf__connstr_t cs;
	char err[512], want[512], weak[512];
	int rc = conf__connstr_parse(VAR, r->in, &cs, err, sizeof(err));

	if (r->err) {
		snprintf(want, sizeof(want), "%s: %s", VAR, r->err);
		CHECK_EQ_INT(rc, TP_ECONFIG);
		CHECK_EQ_STR(err, want);
		CHECK(cs.host == NULL && cs.nweak == 0);
		return;
	}
	if (rc)
		fprintf(stderr, "unexpected error: %s\n", err);
	CHECK_EQ_INT(rc, 0);
	CHECK_EQ_STR(cs.form, r->form);
	CHECK_EQ_INT(cs.protocol, r->protocol);
	CHECK_OPT_STR(cs.host, r->host);
	CHECK_EQ_INT(cs.port, r->port);
	CHECK_OPT_STR(cs.database, r->database);
	CHECK_OPT_STR(cs.user, r->user);
	CHECK_OPT_STR(cs.ca_file, r->ca_file);
	CHECK_OPT_STR(cs.client_id, r->client_id);
	CHECK_EQ_INT(cs.has_password, r->password);
	CHECK_EQ_INT(cs.user_stripped, r->stripped);
	join_weak(&cs, weak, sizeof(weak));
	CHECK_EQ_STR(weak, r->weak ? r->weak : "");
	conf__connstr_free(&cs);
}

static void test_table(void)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		int before = tp_test_failures;
		check_row(&rows[i]);
		if (tp_test_failures != before)
			fprintf(stderr, "  in row %zu: %s\n", i, rows[i].in);
	}
}

/* No error ever quotes a password, wherever it sits in a broken string. */
static void test_errors_never_echo_passwords(void)
{
	static const char *const bad[] = {
	    "host=h password=hunter2 secret x",
	    "host=h password=hunter2 'oops",
	    "Server=h;Password=hunter2;Database",
	    "Server=h;Password=\"hunter2",
	    "postgresql://u:hunter2@h/d?x",
	    "postgresql://u:hunter2@h:bad/d",
	    "jdbc:postgresql://h/d?password=hunter2&port=x",
	    "u:hunter2@tcp(h",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		conf__connstr_t cs;
		char err[512];
		int rc =
		    conf__connstr_parse(VAR, bad[i], &cs, err, sizeof(err));
		CHECK_EQ_INT(rc, TP_ECONFIG);
		CHECK(strstr(err, "hunter2") == NULL);
		CHECK(strchr(err, '\n') == NULL);
		if (strstr(err, "hunter2"))
			fprintf(stderr, "  leaked by: %s -> %s\n", bad[i], err);
	}
}

/* Regression (fuzz_connstr): a newline inside the input came back inside
 * the error, breaking the one-line error promise. */
static void test_errors_are_one_line(void)
{
	const char *in = "postgresql://@jdbc:sqlserb\x9b\n\n";
	conf__connstr_t cs;
	char err[256];

	CHECK(conf__connstr_parse("V", in, &cs, err, sizeof(err)) != 0);
	CHECK(err[0] != 0);
	CHECK(strchr(err, '\n') == NULL);
}

static void test_strip_server_suffix(void)
{
	char a[] = "app@srv", b[] = "app@other", c[] = "@srv", d[] = "x@SRV";

	CHECK(conf__strip_server_suffix(a, "srv.postgres.database.azure.com"));
	CHECK_EQ_STR(a, "app");
	CHECK(!conf__strip_server_suffix(b, "srv.postgres.database.azure.com"));
	CHECK(!conf__strip_server_suffix(c, "srv"));
	CHECK(conf__strip_server_suffix(d, "srv"));
	CHECK(!conf__strip_server_suffix(NULL, "srv"));
}

static void test_port(void)
{
	int p = 0;

	CHECK(conf__port_ok("1", &p) && p == 1);
	CHECK(conf__port_ok("65535", &p) && p == 65535);
	CHECK(!conf__port_ok("65536", &p));
	CHECK(!conf__port_ok("", &p));
	CHECK(!conf__port_ok("+5", &p));
	CHECK(!conf__port_ok("000005432", &p));
}

/* Truncated copies of every table row parse or fail cleanly (ASan). */
static void test_every_prefix(void)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		size_t n = strlen(rows[i].in);
		for (size_t k = 0; k <= n; k++) {
			char *s = strndup(rows[i].in, k);
			conf__connstr_t cs;
			char err[256];
			if (conf__connstr_parse(VAR, s, &cs, err,
						sizeof(err)) == 0)
				conf__connstr_free(&cs);
			else
				CHECK(err[0] != '\0');
			free(s);
		}
	}
}

TP_TEST_MAIN(TP_TEST(test_table), TP_TEST(test_errors_never_echo_passwords),
	     TP_TEST(test_errors_are_one_line),
	     TP_TEST(test_strip_server_suffix), TP_TEST(test_port),
	     TP_TEST(test_every_prefix))
