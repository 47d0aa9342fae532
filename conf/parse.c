/*
 * parse.c - reading typed values out of cJSON objects, with key paths.
 *
 * Every getter treats an absent key and a JSON null alike ("use the
 * default"), checks the type and range strictly (a quoted number is not a
 * number) and on failure writes one line naming the key path, what was
 * expected and what was found. Values of secret keys are never echoed.
 *
 * Not here: what the keys mean or which defaults apply (the section
 * parsers decide), and any I/O.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/internal.h"

/* ---- key path ---- */

static bool is_plain_key(const char *key)
{
	if (!*key)
		return false;
	for (const char *p = key; *p; p++) {
		if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') &&
		    !(*p >= '0' && *p <= '9') && *p != '_' && *p != '-')
			return false;
	}
	return true;
}

static size_t path_append(conf__ctx_t *ctx, const char *fmt, const char *s)
{
	size_t mark = ctx->pathlen;
	size_t room = sizeof(ctx->path) - ctx->pathlen;
	int n = snprintf(ctx->path + ctx->pathlen, room, fmt, s);

	/* Only an absurdly long user-supplied key gets here; the path is
	 * used for error messages alone, so mark the cut visibly. */
	if (n < 0 || (size_t)n >= room) {
		memcpy(ctx->path + sizeof(ctx->path) - 4, "...", 4);
		ctx->pathlen = sizeof(ctx->path) - 1;
	} else {
		ctx->pathlen += (size_t)n;
	}
	return mark;
}

size_t conf__push(conf__ctx_t *ctx, const char *key)
{
	if (is_plain_key(key))
		return path_append(ctx, ctx->pathlen ? ".%s" : "%s", key);

	/* Odd keys are shown JSON-quoted so that the message stays one
	 * line whatever bytes the key holds. */
	cJSON *s = cJSON_CreateString(key);
	char *quoted = s ? cJSON_PrintUnformatted(s) : NULL;
	size_t mark = path_append(ctx, "[%s]", quoted ? quoted : "\"?\"");

	free(quoted);
	cJSON_Delete(s);
	return mark;
}

size_t conf__push_index(conf__ctx_t *ctx, size_t i)
{
	char num[32];

	snprintf(num, sizeof(num), "%zu", i);
	return path_append(ctx, "[%s]", num);
}

void conf__pop(conf__ctx_t *ctx, size_t mark)
{
	ctx->pathlen = mark;
	ctx->path[mark] = '\0';
}

/* ---- errors and warnings ---- */

static void vfail(conf__ctx_t *ctx, const char *fmt, va_list ap)
{
	if (!ctx->err || !ctx->errlen)
		return;
	int n = 0;
	if (ctx->pathlen)
		n = snprintf(ctx->err, ctx->errlen, "%s: ", ctx->path);
	if (n >= 0 && (size_t)n < ctx->errlen)
		vsnprintf(ctx->err + n, ctx->errlen - (size_t)n, fmt, ap);
}

int conf__fail(conf__ctx_t *ctx, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfail(ctx, fmt, ap);
	va_end(ap);
	return TP_ECONFIG;
}

int conf__fail_at(conf__ctx_t *ctx, const char *key, const char *fmt, ...)
{
	va_list ap;
	size_t mark = conf__push(ctx, key);

	va_start(ap, fmt);
	vfail(ctx, fmt, ap);
	va_end(ap);
	conf__pop(ctx, mark);
	return TP_ECONFIG;
}

int conf__nomem(conf__ctx_t *ctx)
{
	if (ctx->err && ctx->errlen)
		snprintf(ctx->err, ctx->errlen, "out of memory");
	return TP_ENOMEM;
}

static const char *type_name(const cJSON *v)
{
	if (cJSON_IsString(v))
		return "a string";
	if (cJSON_IsNumber(v))
		return "a number";
	if (cJSON_IsBool(v))
		return "a boolean";
	if (cJSON_IsArray(v))
		return "an array";
	if (cJSON_IsObject(v))
		return "an object";
	return "null";
}

int conf__fail_expected(conf__ctx_t *ctx, const cJSON *got, bool secret,
			const char *what)
{
	/* Only scalars are echoed: a container may hold inline secrets,
	 * and its type says enough. */
	bool echo = !secret && !cJSON_IsArray(got) && !cJSON_IsObject(got);
	char *text = echo ? cJSON_PrintUnformatted(got) : NULL;

	if (!text)
		return conf__fail(ctx, "expected %s, got %s", what,
				  type_name(got));
	/* A long value is cut: the message must stay one readable line. */
	int rc = strlen(text) > 60
		     ? conf__fail(ctx, "expected %s, got %.57s...", what, text)
		     : conf__fail(ctx, "expected %s, got %s", what, text);
	free(text);
	return rc;
}

int conf__warn(conf__ctx_t *ctx, const char *fmt, ...)
{
	conf_t *c = ctx->conf;
	char line[512];
	int n = 0;
	va_list ap;

	if (ctx->pathlen)
		n = snprintf(line, sizeof(line), "%s: ", ctx->path);
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < sizeof(line))
		vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);

	char **w = realloc(c->warnings, (c->nwarnings + 1) * sizeof(*w));
	if (!w)
		return conf__nomem(ctx);
	c->warnings = w;
	if (!(w[c->nwarnings] = strdup(line)))
		return conf__nomem(ctx);
	c->nwarnings++;
	return 0;
}

int conf__strdup(conf__ctx_t *ctx, const char *s, char **out)
{
	*out = NULL;
	if (!s)
		return 0;
	*out = strdup(s);
	return *out ? 0 : conf__nomem(ctx);
}
