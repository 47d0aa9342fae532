/*
 * codec_sql.c - the little SQL a MySQL pooler must read: KILL statements
 * (to translate thread ids) and statements that leave session state on a
 * server connection (to pin the client in transaction mode).
 *
 * Pure and conservative: a pinned client only costs pooling efficiency, a
 * missed pin leaks one client's session into another's, so doubt pins.
 * Comments are skipped, except MySQL's executable comments (slash, star,
 * bang, version: mysqldump writes SET NAMES that way), whose body is code.
 *
 * Not here: the server's own session-state tracking (codec_track.c), which
 * ops.c prefers whenever the server sends it.
 */
#include <string.h>
#include <strings.h>

#include "protocols/mysql/mysql.h"

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
	       c == '\v';
}

static bool is_ident(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '_' || c == '$' ||
	       (unsigned char)c >= 0x80;
}

/* Skips white space, comments, '(' and the markers around executable
 * comments; returns the new position. */
static size_t skip_blank(const char *s, size_t len, size_t i)
{
	while (i < len) {
		if (is_space(s[i]) || s[i] == '(') {
			i++;
		} else if (s[i] == '#' ||
			   (s[i] == '-' && i + 2 <= len && s[i + 1] == '-' &&
			    (i + 2 == len || is_space(s[i + 2])))) {
			while (i < len && s[i] != '\n')
				i++;
		} else if (s[i] == '/' && i + 1 < len && s[i + 1] == '*') {
			if (i + 2 < len &&
			    (s[i + 2] == '!' || s[i + 2] == 'M')) {
				/* executable: skip the marker and version */
				i += 2;
				while (i < len && (s[i] == '!' || s[i] == 'M'))
					i++;
				while (i < len && s[i] >= '0' && s[i] <= '9')
					i++;
				continue;
			}
			i += 2;
			while (i + 1 < len && !(s[i] == '*' && s[i + 1] == '/'))
				i++;
			i = i + 2 > len ? len
					: i + 2; /* unterminated: to end */
		} else if (s[i] == '*' && i + 1 < len && s[i + 1] == '/') {
			i += 2; /* end of an executable comment */
		} else {
			break;
		}
	}
	return i;
}

/* Whether the word at s[i..] is kw (case-insensitive, whole word). */
static bool word_is(const char *s, size_t len, size_t i, const char *kw)
{
	size_t n = strlen(kw);

	if (i > len || len - i < n || strncasecmp(s + i, kw, n) != 0)
		return false;
	return i + n == len || !is_ident(s[i + n]);
}

/* The position of the word after the one at i. */
static size_t next_word(const char *s, size_t len, size_t i)
{
	while (i < len && is_ident(s[i]))
		i++;
	return skip_blank(s, len, i);
}

/* ---- KILL ---- */

int my_parse_kill(const char *sql, size_t len, bool *query_only, uint64_t *id)
{
	size_t i = skip_blank(sql, len, 0);
	uint64_t v = 0;
	size_t digits = 0;

	if (!word_is(sql, len, i, "KILL"))
		return TP_EINVAL;
	*query_only = false;
	i = next_word(sql, len, i);
	/* MariaDB: KILL [HARD | SOFT] [CONNECTION | QUERY] */
	if (word_is(sql, len, i, "HARD") || word_is(sql, len, i, "SOFT"))
		i = next_word(sql, len, i);
	if (word_is(sql, len, i, "QUERY")) {
		*query_only = true;
		i = next_word(sql, len, i);
	} else if (word_is(sql, len, i, "CONNECTION")) {
		i = next_word(sql, len, i);
	}
	while (i < len && sql[i] >= '0' && sql[i] <= '9') {
		if (v > (UINT64_MAX - 9) / 10)
			return TP_EPROTO;
		v = v * 10 + (uint64_t)(sql[i++] - '0');
		digits++;
	}
	while (i < len && (is_space(sql[i]) || sql[i] == ';' || sql[i] == ')'))
		i++;
	/* A KILL we cannot translate (KILL USER, KILL QUERY ID, an
	 * expression) is still a KILL: the caller must not pass it on. */
	if (!digits || i != len)
		return TP_EPROTO;
	*id = v;
	return 0;
}

/* ---- session state ---- */

/* Case-insensitive search for needle (lower case) in s[0..len). */
static bool contains_ci(const char *s, size_t len, const char *needle)
{
	size_t n = strlen(needle);
	char first = needle[0];

	for (size_t i = 0; n <= len && i <= len - n; i++)
		if ((s[i] | 0x20) == first &&
		    strncasecmp(s + i + 1, needle + 1, n - 1) == 0)
			return true;
	return false;
}

/* A user variable assignment anywhere: `@x :=` or `INTO @x`. Reading a
 * user variable does not pin (it was set by a pinned statement). */
static bool assigns_user_var(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		size_t j;

		if (s[i] == '@' && (i == 0 || s[i - 1] != '@') && i + 1 < len &&
		    s[i + 1] != '@') {
			j = i + 1;
			if (j < len &&
			    (s[j] == '`' || s[j] == '\'' || s[j] == '"')) {
				char q = s[j++];

				while (j < len && s[j] != q)
					j++;
				j++;
			} else {
				while (j < len && is_ident(s[j]))
					j++;
			}
			while (j < len && is_space(s[j]))
				j++;
			if (j + 1 < len && s[j] == ':' && s[j + 1] == '=')
				return true;
		}
		if ((s[i] | 0x20) == 'i' && (i == 0 || !is_ident(s[i - 1])) &&
		    word_is(s, len, i, "INTO")) {
			j = skip_blank(s, len, i + 4);
			if (j < len && s[j] == '@')
				return true;
		}
	}
	return false;
}

/* One statement starting at sql[i..]: does it set session state? */
static bool statement_pins(const char *sql, size_t len, size_t i)
{
	size_t j;

	i = skip_blank(sql, len, i);
	if (word_is(sql, len, i, "SET")) {
		/* SET TRANSACTION covers the next transaction only; SET
		 * STATEMENT ... FOR one statement; GLOBAL is not session. */
		j = next_word(sql, len, i);
		return !word_is(sql, len, j, "TRANSACTION") &&
		       !word_is(sql, len, j, "STATEMENT") &&
		       !word_is(sql, len, j, "GLOBAL");
	}
	if (word_is(sql, len, i, "USE") || word_is(sql, len, i, "PREPARE") ||
	    word_is(sql, len, i, "LOCK") || word_is(sql, len, i, "HANDLER") ||
	    word_is(sql, len, i, "XA") || word_is(sql, len, i, "BACKUP"))
		return true;
	if (word_is(sql, len, i, "CREATE")) {
		j = next_word(sql, len, i);
		if (word_is(sql, len, j, "OR")) { /* MariaDB OR REPLACE */
			j = next_word(sql, len, j);
			j = next_word(sql, len, j);
		}
		return word_is(sql, len, j, "TEMPORARY");
	}
	return false;
}

bool my_sql_pins(const char *sql, size_t len)
{
	const char *semi;
	size_t i = 0;

	if (contains_ci(sql, len, "get_lock") ||
	    contains_ci(sql, len, "read lock") ||
	    contains_ci(sql, len, "sql_calc_found_rows") ||
	    assigns_user_var(sql, len))
		return true;
	for (;;) {
		if (statement_pins(sql, len, i))
			return true;
		semi = memchr(sql + i, ';', len - i);
		if (!semi)
			return false;
		i = (size_t)(semi - sql) + 1;
	}
}
