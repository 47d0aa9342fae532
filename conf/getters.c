/*
 * getters.c - one typed value out of a cJSON object: string, enum, integer
 * in a range, duration in seconds, nested object with a fixed key set.
 *
 * Absent and null both mean "take the default". Types are strict: "5432"
 * is not a port and 30 is not a string. Unknown and repeated keys are
 * errors, because a typo that silently falls back to a default is the
 * worst kind of config bug.
 *
 * Not here: defaults and cross-key rules (the section parsers own them).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "conf/internal.h"

const cJSON *conf__item(const cJSON *obj, const char *key)
{
	const cJSON *v =
	    obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;

	return v && !cJSON_IsNull(v) ? v : NULL;
}

static bool in_list(const char *const *list, const char *s)
{
	for (; *list; list++) {
		if (strcmp(*list, s) == 0)
			return true;
	}
	return false;
}

int conf__check_keys(conf__ctx_t *ctx, const cJSON *obj,
		     const char *const *allowed)
{
	for (const cJSON *c = obj->child; c; c = c->next) {
		const char *key = c->string ? c->string : "";

		if (!in_list(allowed, key))
			return conf__fail_at(ctx, key, "unknown key");
		/* cJSON keeps both copies of a repeated key and lookups
		 * find the first: refuse rather than guess. Only allowed
		 * keys get here, so this loop stays short. */
		for (const cJSON *p = obj->child; p != c; p = p->next) {
			if (p->string && strcmp(p->string, key) == 0)
				return conf__fail_at(ctx, key, "duplicate key");
		}
	}
	return 0;
}

int conf__object(conf__ctx_t *ctx, const cJSON *obj, const char *key,
		 const char *const *allowed, const cJSON **out)
{
	const cJSON *v = conf__item(obj, key);
	int rc;

	*out = NULL;
	if (!v)
		return 0;
	size_t mark = conf__push(ctx, key);
	if (cJSON_IsObject(v))
		rc = conf__check_keys(ctx, v, allowed);
	else
		rc = conf__fail_expected(ctx, v, false, "an object");
	conf__pop(ctx, mark);
	if (rc == 0)
		*out = v;
	return rc;
}

static bool has_control(const char *s)
{
	for (; *s; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	}
	return false;
}

static int check_string(conf__ctx_t *ctx, const cJSON *v, unsigned flags)
{
	bool secret = flags & CONF__SECRET;

	if (!cJSON_IsString(v) || !v->valuestring)
		return conf__fail_expected(ctx, v, secret, "a string");
	if (!*v->valuestring && !(flags & CONF__EMPTY_OK))
		return conf__fail(ctx, "must not be empty");
	/* Names, hosts and paths end up in log lines: no line breaks or
	 * terminal escapes. Secrets may hold any byte. */
	if (!secret && has_control(v->valuestring))
		return conf__fail(ctx, "contains a control character");
	return 0;
}

int conf__string(conf__ctx_t *ctx, const cJSON *obj, const char *key,
		 const char *def, unsigned flags, char **out)
{
	const cJSON *v = conf__item(obj, key);

	*out = NULL;
	if (!v) {
		if (flags & CONF__REQUIRED)
			return conf__fail_at(ctx, key, "is required");
		return conf__strdup(ctx, def, out);
	}
	size_t mark = conf__push(ctx, key);
	int rc = check_string(ctx, v, flags);
	conf__pop(ctx, mark);
	if (rc)
		return rc;
	return conf__strdup(ctx, v->valuestring, out);
}

static void join_names(const char *const *names, size_t n, char *buf,
		       size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n && used < len; i++) {
		int w = snprintf(buf + used, len - used, "%s%s", i ? ", " : "",
				 names[i]);
		if (w < 0)
			break;
		used += (size_t)w;
	}
}

int conf__enum(conf__ctx_t *ctx, const cJSON *obj, const char *key,
	       const char *const *names, size_t n, int def, int *out)
{
	const cJSON *v = conf__item(obj, key);
	char what[256];

	if (v && cJSON_IsString(v)) {
		for (size_t i = 0; i < n; i++) {
			if (strcmp(names[i], v->valuestring) == 0) {
				*out = (int)i;
				return 0;
			}
		}
	}
	if (!v && def >= 0) {
		*out = def;
		return 0;
	}
	memcpy(what, "one of ", 8);
	join_names(names, n, what + 7, sizeof(what) - 7);
	if (!v)
		return conf__fail_at(ctx, key, "is required: %s", what);
	size_t mark = conf__push(ctx, key);
	int rc = conf__fail_expected(ctx, v, false, what);
	conf__pop(ctx, mark);
	return rc;
}

int conf__int(conf__ctx_t *ctx, const cJSON *obj, const char *key, int def,
	      int min, int max, int *out)
{
	const cJSON *v = conf__item(obj, key);
	char what[64];

	if (!v) {
		*out = def;
		return 0;
	}
	double d = v->valuedouble;
	/* Range first: only then is the conversion to int defined. */
	if (cJSON_IsNumber(v) && d >= min && d <= max && d == (double)(int)d) {
		*out = (int)d;
		return 0;
	}
	snprintf(what, sizeof(what), "%d..%d", min, max);
	size_t mark = conf__push(ctx, key);
	int rc = conf__fail_expected(ctx, v, false, what);
	conf__pop(ctx, mark);
	return rc;
}

int conf__seconds(conf__ctx_t *ctx, const cJSON *obj, const char *key,
		  double def, bool positive, double *out)
{
	const cJSON *v = conf__item(obj, key);
	char what[96];

	if (!v) {
		*out = def;
		return 0;
	}
	double d = v->valuedouble;
	if (cJSON_IsNumber(v) && isfinite(d) && d >= 0 &&
	    d <= CONF__SECONDS_MAX && !(positive && d == 0)) {
		*out = d;
		return 0;
	}
	snprintf(what, sizeof(what),
		 positive ? "a number of seconds > 0 and <= %.0f"
			  : "a number of seconds in 0..%.0f",
		 CONF__SECONDS_MAX);
	size_t mark = conf__push(ctx, key);
	int rc = conf__fail_expected(ctx, v, false, what);
	conf__pop(ctx, mark);
	return rc;
}
