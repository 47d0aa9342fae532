/*
 * connstr.c - reading the connection strings Azure Service Connector
 * writes into AZURE_<DB>_CONNECTIONSTRING: libpq keywords and URIs,
 * ADO.NET and ODBC "Key=Value;" lists, JDBC URLs and the Go MySQL DSN.
 *
 * The parser is pure: a string in, a conf__connstr_t out (host, port,
 * database, user, CA file, client id, and the settings that would weaken
 * server verification), nothing read from the environment or the disk and
 * nothing allocated beyond the result. Every input is untrusted: an error
 * is one line naming the variable and the problem, with a 1-based position
 * where one helps, and never quotes text that could be a password (a
 * misplaced space can turn half a password into a "key").
 *
 * Keys are matched case-insensitively with spaces, '-' and '_' ignored, so
 * "User Id", "UserID" and "user_id" are one key. Keys that do not matter
 * to tokenpool (Pooling, Connect Timeout, Driver, ...) are skipped: drivers
 * accept dozens and users add them. A repeated key: the last one wins, as
 * in libpq and ADO.NET. An empty value means "not given".
 *
 * Not here: what the values mean for a pool, and which settings tokenpool
 * refuses to obey (env.c decides and warns), DNS, reading the CA file.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/internal.h"

/* How the raw text of a key or value is unescaped. */
typedef enum {
	ESC_NONE,
	ESC_BACKSLASH, /* libpq: \x is x, quoted or not */
	ESC_DOUBLED,   /* ADO.NET: "" in "...", '' in '...', == in a key */
	ESC_BRACE,     /* ODBC and JDBC: }} in {...} */
	ESC_PERCENT,   /* URLs: %XX, checked by check_percent() first */
} esc_t;

/* A key or value in the input, quotes and braces excluded. */
typedef struct span {
	const char *p;
	size_t len;
	esc_t esc;
	char twice; /* the character that is doubled, for ESC_DOUBLED */
} span_t;

typedef enum {
	F_IGNORE,
	F_HOST,
	F_PORT,
	F_DATABASE,
	F_USER,
	F_PASSWORD,
	F_CA,
	F_CLIENT_ID,
	F_AUTH,
	F_DRIVER,
	/* TLS settings: only their weakening values matter */
	F_SSLMODE,
	F_ENCRYPT,
	F_TRUST,
	F_SSL_ON,
	F_FACTORY,
	F_GO_TLS,
} field_t;

/* Normalized key (lower case; no space, '-' or '_') -> field. The names
 * are those of libpq, Npgsql, SqlClient, ODBC Driver 18, pgjdbc,
 * Connector/J, MariaDB, mssql-jdbc, MySqlConnector and the Go drivers. */
static const struct {
	const char *key;
	field_t f;
} keys[] = {
    {"host", F_HOST},
    {"server", F_HOST},
    {"datasource", F_HOST},
    {"address", F_HOST},
    {"addr", F_HOST},
    {"networkaddress", F_HOST},
    {"servername", F_HOST},
    {"port", F_PORT},
    {"portnumber", F_PORT},
    {"database", F_DATABASE},
    {"dbname", F_DATABASE},
    {"initialcatalog", F_DATABASE},
    {"databasename", F_DATABASE},
    {"user", F_USER},
    {"userid", F_USER},
    {"uid", F_USER},
    {"username", F_USER},
    {"password", F_PASSWORD},
    {"pwd", F_PASSWORD},
    {"sslrootcert", F_CA},
    {"rootcertificate", F_CA},
    {"sslca", F_CA},
    {"serversslcert", F_CA},
    {"trustservercertificateca", F_CA},
    {"cacertificatefile", F_CA},
    {"msiclientid", F_CLIENT_ID},
    {"azure.clientid", F_CLIENT_ID},
    {"authentication", F_AUTH},
    {"fedauth", F_AUTH},
    {"driver", F_DRIVER},
    {"sslmode", F_SSLMODE},
    {"encrypt", F_ENCRYPT},
    {"trustservercertificate", F_TRUST},
    {"ssl", F_SSL_ON},
    {"usessl", F_SSL_ON},
    {"requiressl", F_SSL_ON},
    {"verifyservercertificate", F_SSL_ON},
    {"sslfactory", F_FACTORY},
    {"tls", F_GO_TLS},
};

/* The libpq keywords a keyword string may start with (libpq is case
 * sensitive, so "Host=" is not one: that is Npgsql). */
static const char *const libpq_keys[] = {
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "connect_timeout",
    "options",
    "service",
    "application_name",
    "client_encoding",
    "gssencmode",
    "channel_binding",
    "requiressl",
    "target_session_attrs",
    NULL,
};

#define SCHEME_CHARS                 \
	"abcdefghijklmnopqrstuvwxyz" \
	"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-"

typedef struct cs {
	const char *name; /* the variable: first word of every error */
	const char *base; /* the whole input: positions count from here */
	conf__connstr_t *out;
	char *err;
	size_t errlen;
	int host_port; /* given with the host: "h:5432", "tcp:h,1433" */
	int key_port;  /* given as its own key */
	bool user_is_client_id;
} cs_t;

static int parse_ado_pairs(cs_t *cs, const char *s);

/* ---- errors ---- */

static int fail(cs_t *cs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(cs_t *cs, const char *fmt, ...)
{
	va_list ap;

	if (!cs->err || !cs->errlen)
		return TP_ECONFIG;
	int n = snprintf(cs->err, cs->errlen, "%s: ", cs->name);
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < cs->errlen)
		vsnprintf(cs->err + n, cs->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return TP_ECONFIG;
}

static int nomem(cs_t *cs)
{
	if (cs->err && cs->errlen)
		snprintf(cs->err, cs->errlen, "%s: out of memory", cs->name);
	return TP_ENOMEM;
}

/* 1-based position of p in the input, for messages. */
static size_t pos(const cs_t *cs, const char *p)
{
	return (size_t)(p - cs->base) + 1;
}

/* ---- spans ---- */

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
	       c == '\v';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Writes the unescaped span and a NUL to dst, which has room for
 * s->len + 1 bytes (unescaping never lengthens); returns the length. */
static size_t unescape(const span_t *s, char *dst)
{
	size_t n = 0;

	for (size_t i = 0; i < s->len; i++) {
		char c = s->p[i];
		bool more = i + 1 < s->len;

		if (s->esc == ESC_BACKSLASH && c == '\\' && more)
			c = s->p[++i];
		else if (s->esc == ESC_DOUBLED && c == s->twice && more)
			i++;
		else if (s->esc == ESC_BRACE && c == '}' && more)
			i++;
		else if (s->esc == ESC_PERCENT && c == '%' && i + 2 < s->len) {
			c = (char)(hexval(s->p[i + 1]) * 16 +
				   hexval(s->p[i + 2]));
			i += 2;
		}
		dst[n++] = c;
	}
	dst[n] = '\0';
	return n;
}

static char *span_dup(const span_t *s)
{
	char *d = malloc(s->len + 1);

	if (d)
		unescape(s, d);
	return d;
}

/* Into a small buffer; false when it does not fit. */
static bool span_buf(const span_t *s, char *buf, size_t cap)
{
	if (s->len >= cap)
		return false;
	unescape(s, buf);
	return true;
}

/* Lower case without ' ', '\t', '-' and '_': how keys and the values of
 * TLS settings are compared ("Verify-Full" is "verifyfull"). */
static void normalize(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (*s != ' ' && *s != '\t' && *s != '-' && *s != '_')
			*w++ = (char)tolower((unsigned char)*s);
	}
	*w = '\0';
}

static field_t field_of(const span_t *k)
{
	char key[48];

	if (!span_buf(k, key, sizeof(key)))
		return F_IGNORE; /* longer than any key we know */
	normalize(key);
	for (size_t i = 0; i < CONF__COUNT(keys); i++) {
		if (strcmp(key, keys[i].key) == 0)
			return keys[i].f;
	}
	return F_IGNORE;
}

static int check_percent(cs_t *cs, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '%')
			continue;
		/* %00 would cut the value short where C strings see it. */
		if (i + 2 >= len || hexval(s[i + 1]) < 0 ||
		    hexval(s[i + 2]) < 0 ||
		    (s[i + 1] == '0' && s[i + 2] == '0'))
			return fail(cs, "bad percent-encoding at position %zu",
				    pos(cs, s + i));
	}
	return 0;
}

/* ---- values ---- */

bool conf__port_ok(const char *s, int *port)
{
	size_t n = strlen(s);
	int v = 0;

	if (n == 0 || n > 5 || strspn(s, "0123456789") != n)
		return false;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (s[i] - '0');
	if (v < 1 || v > 65535)
		return false;
	*port = v;
	return true;
}

static int set_port(cs_t *cs, int *dst, const char *s)
{
	*dst = 0;
	if (!*s)
		return 0;
	if (!conf__port_ok(s, dst))
		return fail(cs, "bad port \"%.16s\": expected 1..65535", s);
	return 0;
}

static int set_port_span(cs_t *cs, int *dst, const span_t *v)
{
	char buf[16];

	if (!span_buf(v, buf, sizeof(buf)))
		return fail(cs, "bad port \"%.*s...\": expected 1..65535", 8,
			    v->p);
	return set_port(cs, dst, buf);
}

static int set_str(cs_t *cs, char **field, const span_t *v)
{
	char *s = span_dup(v);

	if (!s)
		return nomem(cs);
	free(*field);
	*field = NULL;
	if (*s)
		*field = s;
	else
		free(s);
	return 0;
}

/* Splits h (in place) into host and port text: "[v6]", "[v6]:p", a bare
 * IPv6 address (two colons or more), "h:p" and SQL Server's "h,p". */
static int split_host(cs_t *cs, char **h, char **port)
{
	char *p = *h;

	*port = NULL;
	if (*p == '[') {
		char *close = strchr(p, ']');
		if (!close)
			return fail(cs, "missing ] after the IPv6 address of "
					"the host");
		*close = '\0';
		if (close[1] == ':' || close[1] == ',')
			*port = close + 2;
		else if (close[1])
			return fail(cs, "unexpected text after ] in the host");
		*h = p + 1;
		return 0;
	}
	if ((*port = strchr(p, ','))) {
		*(*port)++ = '\0';
		if (strspn(*port, "0123456789") != strlen(*port))
			return fail(cs, "several hosts are not supported: give "
					"one");
	} else if ((*port = strchr(p, ':')) && strchr(*port + 1, ':')) {
		*port = NULL; /* a bare IPv6 address */
	} else if (*port) {
		*(*port)++ = '\0';
	}
	return 0;
}

static int set_host(cs_t *cs, const span_t *v)
{
	char *buf = span_dup(v), *h, *port;
	int rc;

	if (!buf)
		return nomem(cs);
	h = buf + (strncasecmp(buf, "tcp:", 4) == 0 ? 4 : 0);
	rc = split_host(cs, &h, &port);
	if (!rc && strchr(h, '\\'))
		rc = fail(cs, "named instances (host\\instance) are not "
			      "supported: give the port");
	if (!rc && h[0] == '/')
		rc = fail(cs, "Unix-domain sockets are not supported: give a "
			      "host name");
	if (!rc && port)
		rc = set_port(cs, &cs->host_port, port);
	if (rc) {
		free(buf);
		return rc;
	}
	memmove(buf, h, strlen(h) + 1);
	free(cs->out->host);
	cs->out->host = *buf ? buf : NULL;
	if (!*buf)
		free(buf);
	return 0;
}

static bool one_of(const char *v, const char *const *list)
{
	for (; *list; list++) {
		if (strcmp(v, *list) == 0)
			return true;
	}
	return false;
}

static const char *const is_false[] = {"false", "no", "0", NULL};

/* v is normalized; whether the setting asks for less than verifying the
 * server's certificate chain and name. */
static bool weakens(field_t f, const char *v)
{
	static const char *const full[] = {"verifyfull", "verifyidentity",
					   NULL};
	static const char *const enc[] = {"false", "no", "0", "optional", NULL};
	static const char *const trust[] = {"true", "yes", "1", NULL};
	static const char *const go[] = {"false", "skipverify", "preferred",
					 NULL};

	switch (f) {
	case F_SSLMODE: /* require, prefer, verify-ca, disable... */
		return !one_of(v, full);
	case F_ENCRYPT:
		return one_of(v, enc);
	case F_TRUST:
		return one_of(v, trust);
	case F_SSL_ON:
		return one_of(v, is_false);
	case F_FACTORY: /* pgjdbc's NonValidatingFactory */
		return strstr(v, "nonvalidating") != NULL;
	case F_GO_TLS:
		return one_of(v, go);
	default:
		return false;
	}
}

/* Records "key=value" as written, for env.c's warning. */
static int add_weak(cs_t *cs, const span_t *k, const span_t *v)
{
	conf__connstr_t *o = cs->out;

	if (o->nweak == CONF__CS_WEAK_MAX)
		return 0; /* the warnings already make the point */
	char *s = malloc(k->len + v->len + 2);
	if (!s)
		return nomem(cs);
	size_t n = unescape(k, s);
	s[n++] = '=';
	unescape(v, s + n);
	o->weak[o->nweak++] = s;
	return 0;
}

/* With these, SqlClient, ODBC and go-mssqldb read "User Id" as the
 * client id of a user-assigned identity (or of DefaultAzureCredential). */
static bool auth_names_client_id(const char *v)
{
	static const char *const msi[] = {
	    "activedirectorymanagedidentity", "activedirectorymsi",
	    "activedirectorydefault", "activedirectoryworkloadidentity", NULL};
	return one_of(v, msi);
}

static int apply(cs_t *cs, const span_t *k, const span_t *v)
{
	conf__connstr_t *o = cs->out;
	field_t f = field_of(k);
	char val[64] = "";

	switch (f) {
	case F_IGNORE:
		return 0;
	case F_HOST:
		return set_host(cs, v);
	case F_PORT:
		return set_port_span(cs, &cs->key_port, v);
	case F_DATABASE:
		return set_str(cs, &o->database, v);
	case F_USER:
		return set_str(cs, &o->user, v);
	case F_CA:
		return set_str(cs, &o->ca_file, v);
	case F_CLIENT_ID:
		return set_str(cs, &o->client_id, v);
	case F_PASSWORD:
		o->has_password = v->len > 0;
		return 0;
	case F_DRIVER:
		o->form = "ODBC";
		return 0;
	default:
		break;
	}
	/* A value too long for val is no value we know: for sslmode that
	 * means "not verify-full", for the others "not weakening". */
	if (span_buf(v, val, sizeof(val)))
		normalize(val);
	if (f == F_AUTH) {
		cs->user_is_client_id = auth_names_client_id(val);
		return 0;
	}
	if (v->len == 0 || !weakens(f, val))
		return 0;
	return add_weak(cs, k, v);
}

/* ---- libpq keywords: host=h port=5432 dbname='my db' ---- */

static int libpq_value(cs_t *cs, const char **pp, span_t *v)
{
	const char *p = *pp;

	*v = (span_t){.esc = ESC_BACKSLASH};
	if (*p == '\'') {
		const char *open = p++;
		v->p = p;
		while (*p && *p != '\'')
			p += (*p == '\\' && p[1]) ? 2 : 1;
		if (!*p)
			return fail(cs, "unterminated quote at position %zu",
				    pos(cs, open));
		v->len = (size_t)(p - v->p);
		p++;
	} else {
		v->p = p;
		while (*p && !is_space(*p))
			p += (*p == '\\' && p[1]) ? 2 : 1;
		v->len = (size_t)(p - v->p);
	}
	*pp = p;
	return 0;
}

static int libpq_pair(cs_t *cs, const char **pp)
{
	const char *p = *pp, *k = p;
	span_t key, val;
	int rc;

	while (*p && !is_space(*p) && *p != '=')
		p++;
	key = (span_t){k, (size_t)(p - k), ESC_NONE, 0};
	while (is_space(*p))
		p++;
	if (*p != '=' || key.len == 0)
		return fail(cs, "expected key=value at position %zu",
			    pos(cs, k));
	p++;
	while (is_space(*p))
		p++;
	if ((rc = libpq_value(cs, &p, &val)))
		return rc;
	*pp = p;
	return apply(cs, &key, &val);
}

static int parse_libpq(cs_t *cs, const char *s)
{
	int rc = 0;

	cs->out->form = "libpq keywords";
	while (!rc) {
		while (is_space(*s))
			s++;
		if (!*s)
			break;
		rc = libpq_pair(cs, &s);
	}
	return rc;
}

/* Keyword form if it starts with a libpq keyword and its first value has
 * no ';' ("host=a;port=5" is ADO.NET written in lower case). */
static bool is_libpq(const char *s)
{
	size_t n = strcspn(s, " \t\n\r\f\v=");
	size_t i;

	for (i = 0; libpq_keys[i]; i++) {
		if (strlen(libpq_keys[i]) == n &&
		    strncmp(s, libpq_keys[i], n) == 0)
			break;
	}
	if (!libpq_keys[i])
		return false;
	s += n;
	s += strspn(s, " \t\n\r\f\v");
	if (*s++ != '=')
		return false;
	s += strspn(s, " \t\n\r\f\v");
	if (*s == '\'')
		return true;
	return memchr(s, ';', strcspn(s, " \t\n\r\f\v")) == NULL;
}

/* ---- ADO.NET and ODBC: Server=h;User Id="a;b";Driver={x}}y} ---- */

/* A value in "...", '...' (the quote doubled inside) or {...} (}}). */
static int ado_quoted(cs_t *cs, const char **pp, span_t *v)
{
	const char *open = *pp, *p = open + 1;
	char close = *open == '{' ? '}' : *open;

	for (;; p++) {
		if (!*p)
			return fail(cs, "unterminated %s at position %zu",
				    *open == '{' ? "brace" : "quote",
				    pos(cs, open));
		if (*p == close && p[1] == close)
			p++;
		else if (*p == close)
			break;
	}
	*v = (span_t){open + 1, (size_t)(p - open - 1),
		      *open == '{' ? ESC_BRACE : ESC_DOUBLED, close};
	p++;
	while (is_space(*p))
		p++;
	if (*p && *p != ';')
		return fail(cs,
			    "expected ; after the closing %s at position "
			    "%zu",
			    *open == '{' ? "brace" : "quote", pos(cs, p));
	*pp = p;
	return 0;
}

/* The key runs to the first single '=' ("==" is a literal '='). */
static int ado_key(cs_t *cs, const char **pp, span_t *key)
{
	const char *k = *pp, *p = k, *end;

	for (;; p++) {
		if (!*p || *p == ';')
			return fail(cs, "expected key=value at position %zu",
				    pos(cs, k));
		if (*p == '=' && p[1] == '=')
			p++;
		else if (*p == '=')
			break;
	}
	end = p;
	while (end > k && is_space(end[-1]))
		end--;
	if (end == k)
		return fail(cs, "expected key=value at position %zu",
			    pos(cs, k));
	*key = (span_t){k, (size_t)(end - k), ESC_DOUBLED, '='};
	*pp = p + 1;
	return 0;
}

static int ado_pair(cs_t *cs, const char **pp)
{
	const char *p = *pp;
	span_t key, val;
	int rc = ado_key(cs, &p, &key);

	if (rc)
		return rc;
	while (is_space(*p))
		p++;
	if (*p == '"' || *p == '\'' || *p == '{') {
		if ((rc = ado_quoted(cs, &p, &val)))
			return rc;
	} else {
		const char *v = p, *end;
		p += strcspn(p, ";");
		end = p;
		while (end > v && is_space(end[-1]))
			end--;
		val = (span_t){v, (size_t)(end - v), ESC_NONE, 0};
	}
	*pp = p;
	return apply(cs, &key, &val);
}

static int parse_ado_pairs(cs_t *cs, const char *s)
{
	int rc = 0;

	while (!rc) {
		while (is_space(*s) || *s == ';')
			s++;
		if (!*s)
			break;
		rc = ado_pair(cs, &s);
	}
	return rc;
}

/* ---- URLs: scheme://[user[:password]@]host[:port][/path][?k=v&...] ---- */

static int url_query(cs_t *cs, const char *p, const char *end)
{
	int rc = 0;

	while (!rc && p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *e = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(e - p));

		if (e == p) { /* "&&" or a trailing '&' */
			p = e + 1;
			continue;
		}
		if (!eq || eq == p)
			return fail(cs,
				    "expected key=value in the query at "
				    "position %zu",
				    pos(cs, p));
		span_t k = {p, (size_t)(eq - p), ESC_PERCENT, 0};
		span_t v = {eq + 1, (size_t)(e - eq - 1), ESC_PERCENT, 0};
		rc = apply(cs, &k, &v);
		p = e + 1;
	}
	return rc;
}

static int url_userinfo(cs_t *cs, const char *s, const char *at)
{
	const char *colon = memchr(s, ':', (size_t)(at - s));
	span_t user = {s, (size_t)((colon ? colon : at) - s), ESC_PERCENT, 0};

	if (colon && at - colon > 1)
		cs->out->has_password = true;
	return set_str(cs, &cs->out->user, &user);
}

/* s follows "://". The path is the database, except for sqlserver://
 * (go-mssqldb) where it names an instance. */
static int parse_url(cs_t *cs, const char *s, bool path_is_db)
{
	size_t len = strcspn(s, "#"); /* a fragment means nothing here */
	size_t alen = strcspn(s, "/?#");
	const char *at = NULL, *p;
	int rc = check_percent(cs, s, len);

	for (size_t i = 0; i < alen; i++) {
		if (s[i] == '@')
			at = s + i; /* the last one: '@' may be in a user */
	}
	if (!rc && at)
		rc = url_userinfo(cs, s, at);
	p = at ? at + 1 : s;
	span_t host = {p, (size_t)(s + alen - p), ESC_PERCENT, 0};
	if (!rc && host.len)
		rc = set_host(cs, &host);
	p = s + alen;
	if (!rc && *p == '/') {
		size_t n = strcspn(++p, "?#");
		span_t path = {p, n, ESC_PERCENT, 0};
		if (path_is_db)
			rc = set_str(cs, &cs->out->database, &path);
		else if (n)
			rc = fail(cs, "named instances (host/instance) are not "
				      "supported: give the port");
		p += n;
	}
	if (!rc && *p == '?')
		rc = url_query(cs, p + 1, s + len);
	return rc;
}

static int unknown_scheme(cs_t *cs, const char *prefix, const char *s)
{
	size_t n = strspn(s, SCHEME_CHARS);

	return fail(cs,
		    "unknown scheme \"%s%.*s\": expected postgresql://, "
		    "mysql://, sqlserver://, jdbc:postgresql://, jdbc:mysql:// "
		    "or jdbc:sqlserver://",
		    prefix, (int)(n > 24 ? 24 : n), s);
}

/* s is "scheme://..." with n scheme characters. */
static int parse_uri(cs_t *cs, const char *s, size_t n)
{
	static const struct {
		const char *scheme;
		conf_protocol_t proto;
	} schemes[] = {
	    {"postgresql", CONF_PROTO_POSTGRES},
	    {"postgres", CONF_PROTO_POSTGRES},
	    {"mysql", CONF_PROTO_MYSQL},
	    {"mariadb", CONF_PROTO_MYSQL},
	    {"sqlserver", CONF_PROTO_SQLSERVER},
	};

	cs->out->form = "URI";
	for (size_t i = 0; i < CONF__COUNT(schemes); i++) {
		if (strlen(schemes[i].scheme) != n ||
		    strncasecmp(s, schemes[i].scheme, n) != 0)
			continue;
		cs->out->protocol = (int)schemes[i].proto;
		return parse_url(cs, s + n + 3,
				 schemes[i].proto != CONF_PROTO_SQLSERVER);
	}
	return unknown_scheme(cs, "", s);
}

/* ---- JDBC ---- */

/* jdbc:sqlserver://host[:port][;key=value]* with {} quoting. */
static int parse_jdbc_sqlserver(cs_t *cs, const char *s)
{
	size_t n = strcspn(s, ";");
	span_t host = {s, n, ESC_NONE, 0};
	int rc = n ? set_host(cs, &host) : 0;

	return rc ? rc : parse_ado_pairs(cs, s + n);
}

static int parse_jdbc(cs_t *cs, const char *s)
{
	static const struct {
		const char *sub;
		conf_protocol_t proto;
	} subs[] = {
	    {"postgresql", CONF_PROTO_POSTGRES},
	    {"mysql", CONF_PROTO_MYSQL},
	    {"mariadb", CONF_PROTO_MYSQL},
	    {"sqlserver", CONF_PROTO_SQLSERVER},
	};
	size_t n = strspn(s, SCHEME_CHARS);

	cs->out->form = "JDBC";
	for (size_t i = 0; i < CONF__COUNT(subs); i++) {
		if (strlen(subs[i].sub) != n ||
		    strncasecmp(s, subs[i].sub, n) != 0)
			continue;
		cs->out->protocol = (int)subs[i].proto;
		if (strncmp(s + n, "://", 3) != 0)
			return fail(cs,
				    "missing host: expected jdbc:%s://"
				    "host:port/...",
				    subs[i].sub);
		if (subs[i].proto == CONF_PROTO_SQLSERVER)
			return parse_jdbc_sqlserver(cs, s + n + 3);
		return parse_url(cs, s + n + 3, true);
	}
	return unknown_scheme(cs, "jdbc:", s);
}

/* ---- Go MySQL driver: [user[:password]@]tcp(host:port)/db[?k=v&...] ---- */

static const char *go_dsn_tcp(const char *s)
{
	const char *tcp = strncmp(s, "tcp(", 4) == 0 ? s : strstr(s, "@tcp(");
	const char *q = strchr(s, '?'), *eq = strchr(s, '=');

	if (!tcp)
		return NULL;
	/* key=value forms have '=' before any '?' */
	if (eq && (!q || eq < q))
		return NULL;
	return tcp == s ? s : tcp + 1;
}

static int parse_go_mysql(cs_t *cs, const char *s, const char *tcp)
{
	const char *close = strchr(tcp, ')'), *p;
	int rc = 0;

	cs->out->form = "Go MySQL DSN";
	cs->out->protocol = CONF_PROTO_MYSQL;
	if (tcp > s) {
		const char *colon = memchr(s, ':', (size_t)(tcp - 1 - s));
		span_t user = {s, (size_t)((colon ? colon : tcp - 1) - s),
			       ESC_NONE, 0};
		cs->out->has_password = colon && tcp - 1 - colon > 1;
		rc = set_str(cs, &cs->out->user, &user);
	}
	if (!close)
		return rc ? rc
			  : fail(cs,
				 "missing ) after tcp( at position "
				 "%zu",
				 pos(cs, tcp + 3));
	span_t host = {tcp + 4, (size_t)(close - tcp - 4), ESC_NONE, 0};
	if (rc || (host.len && (rc = set_host(cs, &host))))
		return rc;
	p = close + 1;
	if (*p != '/')
		return fail(cs, "expected / after tcp(...) at position %zu",
			    pos(cs, p));
	span_t db = {p + 1, strcspn(p + 1, "?"), ESC_NONE, 0};
	if ((rc = set_str(cs, &cs->out->database, &db)))
		return rc;
	p = db.p + db.len;
	if (*p != '?')
		return 0;
	if ((rc = check_percent(cs, p + 1, strlen(p + 1))))
		return rc;
	return url_query(cs, p + 1, p + 1 + strlen(p + 1));
}

/* ---- entry points ---- */

static int parse_any(cs_t *cs, const char *s)
{
	size_t n;
	const char *tcp;

	while (is_space(*s))
		s++;
	if (!*s)
		return fail(cs, "is empty");
	if (strncasecmp(s, "jdbc:", 5) == 0)
		return parse_jdbc(cs, s + 5);
	n = strspn(s, SCHEME_CHARS);
	if (n && strncmp(s + n, "://", 3) == 0)
		return parse_uri(cs, s, n);
	if ((tcp = go_dsn_tcp(s)))
		return parse_go_mysql(cs, s, tcp);
	if (!strchr(s, '='))
		return fail(cs, "not a connection string: expected key=value "
				"pairs or a URL");
	if (is_libpq(s))
		return parse_libpq(cs, s);
	cs->out->form = "ADO.NET";
	return parse_ado_pairs(cs, s);
}

bool conf__strip_server_suffix(char *user, const char *host)
{
	char *at = user ? strrchr(user, '@') : NULL;
	size_t label = host ? strcspn(host, ".") : 0;

	/* Only "@<first label of the host>": Entra user names such as
	 * alice@contoso.com are role names on Flexible Server. */
	if (!at || at == user || label == 0 || strlen(at + 1) != label ||
	    strncasecmp(at + 1, host, label) != 0)
		return false;
	*at = '\0';
	return true;
}

static int finish(cs_t *cs)
{
	conf__connstr_t *o = cs->out;

	if (!o->host)
		return fail(cs, "missing host");
	o->port = cs->host_port ? cs->host_port : cs->key_port;
	if (cs->user_is_client_id && o->user) {
		if (!o->client_id)
			o->client_id = o->user;
		else
			free(o->user);
		o->user = NULL;
	}
	o->user_stripped = conf__strip_server_suffix(o->user, o->host);
	return 0;
}

int conf__connstr_parse(const char *name, const char *s, conf__connstr_t *out,
			char *err, size_t errlen)
{
	cs_t cs = {.name = name ? name : "connection string",
		   .base = s,
		   .out = out,
		   .err = err,
		   .errlen = errlen};
	int rc;

	memset(out, 0, sizeof(*out));
	out->protocol = -1;
	if (err && errlen)
		err[0] = '\0';
	if (!s)
		return fail(&cs, "is not set");
	rc = parse_any(&cs, s);
	if (!rc)
		rc = finish(&cs);
	if (rc) {
		conf__connstr_free(out);
		/* One line, whatever bytes of the input the message quotes. */
		for (char *p = err; p && *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = '?';
	}
	return rc;
}

void conf__connstr_free(conf__connstr_t *cs)
{
	free(cs->host);
	free(cs->database);
	free(cs->user);
	free(cs->ca_file);
	free(cs->client_id);
	for (size_t i = 0; i < cs->nweak; i++)
		free(cs->weak[i]);
	memset(cs, 0, sizeof(*cs));
	cs->protocol = -1;
}
