/*
 * params.c - startup parameters that must follow a client from server to
 * server: client_encoding, DateStyle, IntervalStyle, TimeZone,
 * standard_conforming_strings, application_name.
 *
 * All six are reported by PostgreSQL (ParameterStatus) whenever they
 * change, so the proxy always knows a server's values. When a client gets
 * a server whose values differ from what the client asked for, the ops
 * send one SET statement list before the client's first message; the
 * server's answer (canonical spellings such as "UTF8" for "utf8") is then
 * recorded on both sides, so the next comparison matches.
 *
 * Not here: other startup parameters (ignored, as PgBouncer's
 * ignore_startup_parameters would), `options` (not supported).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "protocols/pg/pg.h"

static const char *const var_names[PG_NVARS] = {
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "application_name",
};

int pg_var_index(const char *key)
{
	for (int i = 0; i < PG_NVARS; i++)
		if (strcasecmp(key, var_names[i]) == 0)
			return i;
	return -1;
}

const char *pg_var_name(int i)
{
	return i >= 0 && i < PG_NVARS ? var_names[i] : NULL;
}

int pg_vars_set(pg_vars_t *v, const char *key, const char *value)
{
	int i = pg_var_index(key);
	char *copy;

	if (i < 0)
		return 0;
	if (strlen(value) > PG_VAR_MAX)
		return TP_ETOOBIG;
	if (v->val[i] && strcmp(v->val[i], value) == 0)
		return 0;
	copy = strdup(value);
	if (!copy)
		return TP_ENOMEM;
	free(v->val[i]);
	v->val[i] = copy;
	return 0;
}

void pg_vars_free(pg_vars_t *v)
{
	for (int i = 0; i < PG_NVARS; i++) {
		free(v->val[i]);
		v->val[i] = NULL;
	}
}

/* Appends s to out at *pos, doubling single quotes; false if no room. */
static bool put_quoted(char *out, size_t cap, size_t *pos, const char *s)
{
	for (; *s; s++) {
		size_t need = *s == '\'' ? 2 : 1;

		if (cap - *pos <= need)
			return false;
		if (*s == '\'')
			out[(*pos)++] = '\'';
		out[(*pos)++] = *s;
	}
	return true;
}

static bool put_raw(char *out, size_t cap, size_t *pos, const char *s)
{
	size_t n = strlen(s);

	if (cap - *pos <= n)
		return false;
	memcpy(out + *pos, s, n);
	*pos += n;
	return true;
}

size_t pg_vars_sync_sql(const pg_vars_t *want, const pg_vars_t *dflt,
			const pg_vars_t *have, char *out, size_t cap)
{
	size_t pos = 0;

	if (!cap)
		return 0;
	for (int i = 0; i < PG_NVARS; i++) {
		/* No preference means the server's default. */
		const char *w = want->val[i] ? want->val[i] : dflt->val[i];

		if (!w || (have->val[i] && strcmp(w, have->val[i]) == 0))
			continue;
		/* Names come from our table, values are quoted literals. */
		if (!put_raw(out, cap, &pos, "SET ") ||
		    !put_raw(out, cap, &pos, var_names[i]) ||
		    !put_raw(out, cap, &pos, " TO '") ||
		    !put_quoted(out, cap, &pos, w) ||
		    !put_raw(out, cap, &pos, "';"))
			return 0;
	}
	out[pos] = 0;
	return pos;
}
