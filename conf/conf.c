/*
 * conf.c - loading a config: file or string -> JSON -> validated snapshot.
 *
 * Reads the file, parses it with cJSON (syntax errors are reported by line
 * and column), reads the top-level sections (log, http, shutdown,
 * identity) and hands "pools" to pools.c, then runs the rules that span
 * pools. On any error the partial snapshot is freed and exactly one line
 * explains the first problem found. The parsed document is wiped before it
 * is freed, since it may hold inline passwords.
 *
 * Not here: the zero-config mode built from Service Connector variables,
 * choosing which file to load ($TOKENPOOL_CONFIG, ./tokenpool.json), and
 * logging the warnings (the caller logs conf_t.warnings).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "conf/internal.h"

static const char *const root_keys[] = {"log",	    "http",  "shutdown",
					"identity", "pools", NULL};
static const char *const log_keys[] = {"level", "format", NULL};
static const char *const http_keys[] = {"listen", "admin_token_env", NULL};
static const char *const shutdown_keys[] = {"timeout", NULL};

static int parse_log(conf__ctx_t *ctx, const cJSON *obj, conf_t *conf)
{
	int level = CONF_LOG_INFO, json = 0;
	int rc = conf__enum(ctx, obj, "level", conf__log_level_names,
			    CONF__COUNT(conf__log_level_names), CONF_LOG_INFO,
			    &level);

	if (rc == 0)
		rc = conf__enum(ctx, obj, "format", conf__log_format_names,
				CONF__COUNT(conf__log_format_names), 0, &json);
	conf->log_level = (conf_log_level_t)level;
	conf->log_json = json == 1;
	return rc;
}

static int parse_http(conf__ctx_t *ctx, const cJSON *obj, conf_t *conf)
{
	char *host = NULL;
	int port;
	/* "" turns the HTTP server off (null means the default, as for
	 * every other key). */
	int rc = conf__listen(ctx, obj, "listen", "127.0.0.1:9090",
			      CONF__EMPTY_OK, &conf->http_listen, &host, &port);

	free(host);
	if (rc)
		return rc;
	if (!*conf->http_listen) {
		free(conf->http_listen);
		conf->http_listen = NULL;
	}
	return conf__env_secret(ctx, obj, "admin_token_env",
				&conf->admin_token_env, &conf->admin_token);
}

static int parse_shutdown(conf__ctx_t *ctx, const cJSON *obj, conf_t *conf)
{
	return conf__seconds(ctx, obj, "timeout", 30, false,
			     &conf->shutdown_timeout);
}

static int parse_identity(conf__ctx_t *ctx, const cJSON *obj, conf_t *conf)
{
	return conf__parse_identity(ctx, obj, NULL, &conf->identity);
}

typedef int (*section_fn)(conf__ctx_t *ctx, const cJSON *obj, conf_t *conf);

static int parse_section(conf__ctx_t *ctx, const cJSON *root, const char *key,
			 const char *const *keys, section_fn fn, conf_t *conf)
{
	const cJSON *obj;
	int rc = conf__object(ctx, root, key, keys, &obj);

	if (rc)
		return rc;
	size_t mark = conf__push(ctx, key);
	rc = fn(ctx, obj, conf);
	conf__pop(ctx, mark);
	return rc;
}

static int parse_root(conf__ctx_t *ctx, const cJSON *root, conf_t *conf)
{
	int rc;

	if (!cJSON_IsObject(root))
		return conf__fail_expected(ctx, root, true,
					   "a JSON object at the top level");
	if ((rc = conf__check_keys(ctx, root, root_keys)) ||
	    (rc = parse_section(ctx, root, "log", log_keys, parse_log, conf)) ||
	    (rc = parse_section(ctx, root, "http", http_keys, parse_http,
				conf)) ||
	    (rc = parse_section(ctx, root, "shutdown", shutdown_keys,
				parse_shutdown, conf)) ||
	    (rc = parse_section(ctx, root, "identity", conf__identity_keys,
				parse_identity, conf)) ||
	    (rc = conf__parse_pools(ctx, root, conf)))
		return rc;
	return conf__check_pools(ctx, conf);
}

static bool is_close(char c)
{
	return c == '}' || c == ']';
}

static size_t skip_space_back(const char *text, size_t i)
{
	while (i > 0 && isspace((unsigned char)text[i - 1]))
		i--;
	return i;
}

/* cJSON stops after the bracket that follows a trailing comma; *pos moves
 * to the comma itself. */
static bool trailing_comma(const char *text, size_t len, size_t p, size_t *pos)
{
	size_t i = p < len && is_close(text[p]) ? p + 1 : p;

	i = skip_space_back(text, i);
	if (i == 0 || !is_close(text[i - 1]))
		return false;
	i = skip_space_back(text, i - 1);
	if (i == 0 || text[i - 1] != ',')
		return false;
	*pos = i - 1;
	return true;
}

/* Whether text[i] stands where an object key belongs. cJSON reports a
 * bad key one character after it. */
static bool at_key(const char *text, size_t i)
{
	if (!text[i] || strchr("{[,:\" \t\r\n", text[i]))
		return false;
	i = skip_space_back(text, i);
	return i > 0 && (text[i - 1] == '{' || text[i - 1] == ',');
}

/* A hint for the mistakes people make most when writing JSON by hand;
 * may move *pos to the real culprit. */
static const char *syntax_hint(const char *text, size_t len, size_t *pos)
{
	size_t p = *pos < len ? *pos : len;
	bool key = p > 0 && at_key(text, p - 1);

	if (p < len && !text[p])
		return " (NUL byte)";
	if (trailing_comma(text, len, p, pos))
		return " (trailing comma)";
	if (key)
		*pos = --p;
	if (p < len && (text[p] == '/' || text[p] == '#'))
		return " (JSON has no comments)";
	if (p < len && text[p] == '\'')
		return " (JSON strings use double quotes)";
	if (key)
		return " (keys need double quotes)";
	while (p < len && isspace((unsigned char)text[p]))
		p++;
	return p >= len ? " (unexpected end of input)" : "";
}

static int syntax_error(conf__ctx_t *ctx, const char *text, size_t len,
			size_t pos)
{
	size_t i = strspn(text, " \t\r\n");

	if (i >= len)
		return conf__fail(ctx, "the config is empty");
	const char *hint = syntax_hint(text, len, &pos);
	size_t line = 1, col = 1;
	for (i = 0; i < pos && i < len; i++) {
		if (text[i] == '\n') {
			line++;
			col = 1;
		} else if (((unsigned char)text[i] & 0xc0) != 0x80) {
			col++; /* count characters, not UTF-8 bytes */
		}
	}
	return conf__fail(ctx, "line %zu, column %zu: invalid JSON%s", line,
			  col, hint);
}

static int parse_json(conf__ctx_t *ctx, const char *text, size_t len,
		      cJSON **root)
{
	const char *end = NULL;

	*root = NULL;
	if (strlen(text) != len) /* a NUL inside a file */
		return syntax_error(ctx, text, len, strlen(text));
	/* No NUL inside, so the terminator ends the text and trailing
	 * garbage is an error. */
	*root = cJSON_ParseWithOpts(text, &end, 1);
	if (*root)
		return 0;
	size_t pos = end && end >= text ? (size_t)(end - text) : 0;
	return syntax_error(ctx, text, len, pos);
}

static int load(const char *text, size_t len, const char *path, bool exposed,
		conf_t **out, char *err, size_t errlen)
{
	conf__ctx_t ctx = {.err = err,
			   .errlen = errlen,
			   .file = path,
			   .file_exposed = exposed};
	cJSON *root;
	int rc = parse_json(&ctx, text, len, &root);

	if (rc)
		return rc;
	ctx.conf = calloc(1, sizeof(*ctx.conf));
	if (!ctx.conf)
		rc = conf__nomem(&ctx);
	else if (!(rc = conf__strdup(&ctx, path, &ctx.conf->path)))
		rc = parse_root(&ctx, root, ctx.conf);
	conf__wipe_json(root);
	cJSON_Delete(root);
	if (rc) {
		conf_free(ctx.conf);
		return rc;
	}
	*out = ctx.conf;
	return 0;
}

int conf_load_string(const char *json, conf_t **out, char *err, size_t errlen)
{
	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	if (!json) {
		if (err && errlen)
			snprintf(err, errlen, "no config given");
		return TP_ECONFIG;
	}
	return load(json, strlen(json), NULL, false, out, err, errlen);
}

int conf_load_file(const char *path, conf_t **out, char *err, size_t errlen)
{
	char *text;
	size_t len;
	unsigned mode = 0;

	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	int e = conf__read_file(path, CONF__FILE_MAX, &text, &len, &mode);
	if (e) {
		if (err && errlen)
			snprintf(err, errlen, "cannot read %s: %s", path,
				 e == EFBIG ? "larger than 4 MiB"
					    : strerror(e));
		return e == ENOMEM ? TP_ENOMEM : TP_ECONFIG;
	}
	bool exposed = (mode & (S_IRGRP | S_IROTH)) != 0;
	int rc = load(text, len, path, exposed, out, err, errlen);
	explicit_bzero(text, len);
	free(text);
	return rc;
}

void conf_free(conf_t *conf)
{
	if (!conf)
		return;
	free(conf->path);
	free(conf->http_listen);
	free(conf->admin_token_env);
	conf__free_secret(conf->admin_token);
	conf__free_identity(&conf->identity);
	for (size_t i = 0; i < conf->npools; i++)
		conf__free_pool(&conf->pools[i]);
	free(conf->pools);
	for (size_t i = 0; i < conf->nwarnings; i++)
		free(conf->warnings[i]);
	free(conf->warnings);
	free(conf);
}

const conf_identity_t *conf_pool_identity(const conf_t *conf,
					  const conf_pool_t *pool)
{
	return pool->server.identity ? pool->server.identity : &conf->identity;
}
