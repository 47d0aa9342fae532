/*
 * codec_sql.c - what a request leaves on a SQL Server session, from its
 * text: enough for a pooler to decide whether a client may move to another
 * server connection at its next transaction boundary.
 *
 * A small tokenizer over UTF-16LE (comments, strings, [quoted] names,
 * words, numbers, punctuation) feeds two judgements:
 * - the leading SET statements of a batch that replaying can move (the
 *   options drivers set right after login: tedious, FreeTDS and pymssql
 *   all send such a batch), normalized into lines a later replay runs;
 * - whether the rest leaves state behind that cannot move (a SET of a
 *   session option, CONTEXT_INFO, #temp tables, cursors, application
 *   roles, session context). Conservative: a false "pins" costs pooling
 *   efficiency, a false "does not pin" would hand one client's state to
 *   another.
 *
 * Not here: what the server reports (ENVCHANGE, SESSIONSTATE: ops.c),
 * full T-SQL grammar (an UPDATE ... SET nocount = 1 pins: harmless).
 * Pure: no I/O, no allocation.
 */
#include <string.h>

#include "protocols/tds/tds.h"
#include "protocols/tds/internal.h"

enum tok_kind {
	T_END,
	T_WORD,	 /* name or keyword, lower-cased */
	T_QWORD, /* [quoted] or "quoted" name */
	T_NUM,
	T_STR, /* '...' or N'...' */
	T_PUNCT,
};

#define TOK_MAX 48 /* longest word kept; longer ones match nothing */

typedef struct tok {
	int kind;
	char w[TOK_MAX]; /* words, numbers, strings (verbatim, quotes kept) */
	size_t wlen;
	bool cut;   /* longer than w */
	bool ascii; /* only ASCII: fit for a replayed statement */
	uint16_t ch;
} tok_t;

typedef struct lexer {
	const uint8_t *p;
	size_t n; /* code units */
	size_t i;
	bool rpc;
} lexer_t;

static int unit(const lexer_t *lx, size_t i)
{
	return i < lx->n ? tds_le16(lx->p + 2 * i) : -1;
}

static bool is_word_start(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
	       c == '@' || c == '#' || c >= 0x80;
}

static bool is_word_char(int c)
{
	return is_word_start(c) || (c >= '0' && c <= '9') || c == '$';
}

static void tok_put(tok_t *t, int c, bool lower)
{
	/* Control characters (DEL too) never go into a replayed line: the
	 * line list is printable text, one statement per line. */
	if (c >= 0x7F || c < 0x20)
		t->ascii = false;
	if (lower && c >= 'A' && c <= 'Z')
		c += 'a' - 'A';
	if (t->wlen + 1 >= TOK_MAX) {
		t->cut = true;
		return;
	}
	t->w[t->wlen++] = c < 0x80 ? (char)c : '?';
	t->w[t->wlen] = 0;
}

/* Whitespace and comments (nested block comments, as T-SQL has them). */
static void skip_space(lexer_t *lx)
{
	for (;;) {
		int c = unit(lx, lx->i), d = unit(lx, lx->i + 1);

		if (c >= 0 && c <= ' ') {
			lx->i++;
		} else if (c == '-' && d == '-') {
			while (lx->i < lx->n && unit(lx, lx->i) != '\n')
				lx->i++;
		} else if (c == '/' && d == '*') {
			int depth = 0;

			do {
				c = unit(lx, lx->i);
				d = unit(lx, lx->i + 1);
				if (c == '/' && d == '*') {
					depth++;
					lx->i += 2;
				} else if (c == '*' && d == '/') {
					depth--;
					lx->i += 2;
				} else {
					lx->i++;
				}
			} while (depth > 0 && lx->i < lx->n);
		} else {
			return;
		}
	}
}

/* A delimited token: 'string' (kept with its quotes) or a quoted name
 * (kept without); the closing character doubled stands for itself. */
static void lex_delimited(lexer_t *lx, tok_t *t, int close, bool keep)
{
	if (keep)
		tok_put(t, unit(lx, lx->i), false);
	lx->i++;
	while (lx->i < lx->n) {
		int c = unit(lx, lx->i++);

		if (c == close) {
			if (unit(lx, lx->i) != close) {
				if (keep)
					tok_put(t, c, false);
				return;
			}
			lx->i++;
			if (keep)
				tok_put(t, c, false);
		}
		tok_put(t, c, !keep);
	}
}

static void next_tok(lexer_t *lx, tok_t *t)
{
	int c, d;

	memset(t, 0, sizeof(*t));
	t->ascii = true;
	skip_space(lx);
	c = unit(lx, lx->i);
	d = unit(lx, lx->i + 1);
	if (c < 0) {
		t->kind = T_END;
	} else if ((c == 'N' || c == 'n') && d == '\'') {
		t->kind = T_STR;
		tok_put(t, 'N', false);
		lx->i++;
		lex_delimited(lx, t, '\'', true);
	} else if (c == '\'') {
		t->kind = T_STR;
		lex_delimited(lx, t, '\'', true);
	} else if (c == '[' || c == '"') {
		t->kind = T_QWORD;
		lex_delimited(lx, t, c == '[' ? ']' : '"', false);
	} else if (is_word_start(c)) {
		t->kind = T_WORD;
		while (lx->i < lx->n && is_word_char(unit(lx, lx->i)))
			tok_put(t, unit(lx, lx->i++), true);
	} else if (c >= '0' && c <= '9') {
		t->kind = T_NUM;
		while (lx->i < lx->n && (is_word_char(unit(lx, lx->i)) ||
					 unit(lx, lx->i) == '.'))
			tok_put(t, unit(lx, lx->i++), true);
	} else {
		t->kind = T_PUNCT;
		t->ch = (uint16_t)c;
		lx->i++;
	}
}

static bool is(const tok_t *t, const char *w)
{
	return t->kind == T_WORD && !t->cut && strcmp(t->w, w) == 0;
}

static bool in_list(const tok_t *t, const char *const *list)
{
	for (; *list; list++)
		if (is(t, *list))
			return true;
	return false;
}

/* SET options that take ON or OFF and that a replay can move. */
static const char *const onoff_opts[] = {
    "ansi_defaults",
    "ansi_null_dflt_off",
    "ansi_null_dflt_on",
    "ansi_nulls",
    "ansi_padding",
    "ansi_warnings",
    "arithabort",
    "arithignore",
    "concat_null_yields_null",
    "cursor_close_on_commit",
    "fmtonly",
    "forceplan",
    "implicit_transactions",
    "nocount",
    "noexec",
    "numeric_roundabort",
    "parseonly",
    "quoted_identifier",
    "remote_proc_transactions",
    "showplan_all",
    "showplan_text",
    "showplan_xml",
    "xact_abort",
    "statistics",
    NULL,
};

/* SET options that take one value and that a replay can move. */
static const char *const value_opts[] = {
    "textsize",	    "language",
    "dateformat",   "datefirst",
    "lock_timeout", "deadlock_priority",
    "rowcount",	    "query_governor_cost_limit",
    NULL,
};

/* Session options a replay cannot move (or that we do not know). */
static const char *const pin_opts[] = {
    "context_info",
    "identity_insert",
    "offsets",
    NULL,
};

static const char *const stats_kinds[] = {
    "io", "time", "profile", "xml", NULL,
};

static const char *const iso_words[] = {
    "read",	"uncommitted",	"committed", "repeatable",
    "snapshot", "serializable", NULL,
};

/* Appends a piece to a line being built; false when it does not fit. */
static bool line_put(char *line, size_t cap, size_t *n, const char *s,
		     size_t len)
{
	if (len >= cap - *n)
		return false;
	memcpy(line + *n, s, len);
	*n += len;
	line[*n] = 0;
	return true;
}

static bool line_tok(char *line, size_t cap, size_t *n, const tok_t *t)
{
	return t->ascii && !t->cut && line_put(line, cap, n, t->w, t->wlen);
}

enum set_verdict {
	SET_MOVABLE, /* the line is built */
	SET_PINS,    /* a session option we cannot move */
	SET_OTHER,   /* SET @variable: not a session option */
};

/* After "set transaction": isolation level words. */
static int parse_isolation(lexer_t *lx, tok_t *t, char *line, size_t cap,
			   size_t *n)
{
	next_tok(lx, t);
	if (!is(t, "isolation"))
		return SET_PINS;
	next_tok(lx, t);
	if (!is(t, "level") ||
	    !line_put(line, cap, n, "transaction isolation level", 27))
		return SET_PINS;
	next_tok(lx, t);
	if (!in_list(t, iso_words))
		return SET_PINS;
	while (in_list(t, iso_words)) {
		if (!line_put(line, cap, n, " ", 1) ||
		    !line_tok(line, cap, n, t))
			return SET_PINS;
		next_tok(lx, t);
	}
	return SET_MOVABLE;
}

/* After "set <option>" of an ON/OFF option: more options, then ON|OFF. */
static int parse_onoff(lexer_t *lx, tok_t *t, char *line, size_t cap, size_t *n)
{
	for (;;) {
		bool stats = is(t, "statistics");

		if (!in_list(t, onoff_opts) || !line_tok(line, cap, n, t))
			return SET_PINS;
		next_tok(lx, t);
		if (stats) {
			if (!in_list(t, stats_kinds) ||
			    !line_put(line, cap, n, " ", 1) ||
			    !line_tok(line, cap, n, t))
				return SET_PINS;
			next_tok(lx, t);
		}
		if (t->kind != T_PUNCT || t->ch != ',')
			break;
		if (!line_put(line, cap, n, ",", 1))
			return SET_PINS;
		next_tok(lx, t);
	}
	if ((!is(t, "on") && !is(t, "off")) ||
	    !line_put(line, cap, n, " ", 1) || !line_tok(line, cap, n, t))
		return SET_PINS;
	next_tok(lx, t);
	return SET_MOVABLE;
}

/* After "set <option>" of a value option: one value (a sign allowed). */
static int parse_value(lexer_t *lx, tok_t *t, char *line, size_t cap, size_t *n)
{
	if (!line_tok(line, cap, n, t) || !line_put(line, cap, n, " ", 1))
		return SET_PINS;
	next_tok(lx, t);
	if (t->kind == T_PUNCT && t->ch == '-') {
		if (!line_put(line, cap, n, "-", 1))
			return SET_PINS;
		next_tok(lx, t);
		if (t->kind != T_NUM)
			return SET_PINS;
	}
	if ((t->kind != T_WORD && t->kind != T_NUM && t->kind != T_STR) ||
	    !line_tok(line, cap, n, t))
		return SET_PINS;
	next_tok(lx, t);
	return SET_MOVABLE;
}

/*
 * One SET statement, "set" already read: its normalized line in line
 * ("set <options> <value>"), the token after it in *t.
 */
static int parse_set(lexer_t *lx, tok_t *t, char *line, size_t cap)
{
	size_t n = 0;
	int v;

	line[0] = 0;
	next_tok(lx, t);
	if (t->kind == T_WORD && t->w[0] == '@')
		return SET_OTHER;
	if (!line_put(line, cap, &n, "set ", 4))
		return SET_PINS;
	if (is(t, "transaction"))
		v = parse_isolation(lx, t, line, cap, &n);
	else if (in_list(t, onoff_opts))
		v = parse_onoff(lx, t, line, cap, &n);
	else if (in_list(t, value_opts))
		v = parse_value(lx, t, line, cap, &n);
	else
		v = SET_PINS;
	if (v == SET_MOVABLE && t->kind == T_PUNCT && t->ch == ';')
		next_tok(lx, t);
	if (v == SET_MOVABLE && !line_put(line, cap, &n, "\n", 1))
		v = SET_PINS;
	return v;
}

/* Whether t names a session option (after a SET). */
static bool session_option(const tok_t *t)
{
	return in_list(t, onoff_opts) || in_list(t, value_opts) ||
	       in_list(t, pin_opts) || is(t, "transaction");
}

/* The rest of a batch (or procedure text), from t on: does it pin? */
static bool rest_pins(lexer_t *lx, tok_t *t)
{
	tok_t prev;

	memset(&prev, 0, sizeof(prev));
	while (t->kind != T_END) {
		if (is(t, "cursor") || is(t, "sp_setapprole") ||
		    is(t, "sp_set_session_context") ||
		    (is(t, "context_info") && is(&prev, "set")))
			return true;
		if (t->kind == T_WORD && t->w[0] == '#' &&
		    (!lx->rpc || t->w[1] == '#') &&
		    (is(&prev, "table") || is(&prev, "into") ||
		     is(&prev, "procedure") || is(&prev, "proc")))
			return true;
		if (!lx->rpc && is(&prev, "set") && session_option(t))
			return true;
		prev = *t;
		next_tok(lx, t);
	}
	return false;
}

int tds_sql_classify(const uint8_t *text, size_t len, char *sets, size_t cap,
		     tds_sql_verdict_t *v)
{
	lexer_t lx = {.p = text, .n = len / 2};
	char line[256];
	tok_t t;
	int rc = 0;

	memset(v, 0, sizeof(*v));
	if (cap)
		sets[0] = 0;
	next_tok(&lx, &t);
	while (is(&t, "set")) {
		lexer_t save = lx;
		int verdict = parse_set(&lx, &t, line, sizeof(line));
		size_t n = strlen(line);

		if (verdict == SET_OTHER) {
			/* SET @v = ...: an ordinary statement, judged with
			 * the rest. */
			lx = save;
			memset(&t, 0, sizeof(t));
			t.kind = T_WORD;
			strcpy(t.w, "set");
			t.wlen = 3;
			break;
		}
		if (verdict == SET_PINS) {
			v->pins = true;
			return 0;
		}
		if (n >= cap - v->sets_len) {
			rc = TP_ETOOBIG;
			v->pins = true;
			return rc;
		}
		memcpy(sets + v->sets_len, line, n + 1);
		v->sets_len += n;
	}
	v->pins = rest_pins(&lx, &t);
	return rc;
}

bool tds_sql_rpc_pins(const uint8_t *text, size_t len)
{
	lexer_t lx = {.p = text, .n = len / 2, .rpc = true};
	tok_t t;

	next_tok(&lx, &t);
	return rest_pins(&lx, &t);
}

/* ---- RPC ---- */

/* Procedures by id (ProcIDSwitch): the cursor family, sp_prepare,
 * sp_prepexec and sp_prepexecrpc leave handles on the server. */
static bool proc_id_pins(uint16_t id)
{
	return (id >= 1 && id <= 9) || id == 11 || id == 13 || id == 14;
}

static bool proc_name_pins(const char *name)
{
	static const char *const names[] = {
	    "sp_prepare",
	    "sp_prepexec",
	    "sp_prepexecrpc",
	    "sp_setapprole",
	    "sp_set_session_context",
	    NULL,
	};
	const char *n = strrchr(name, '.'); /* sys.sp_prepare, dbo... */

	n = n ? n + 1 : name;
	if (strncmp(n, "sp_cursor", 9) == 0)
		return true;
	for (size_t i = 0; names[i]; i++)
		if (strcmp(n, names[i]) == 0)
			return true;
	return false;
}

/* The first parameter's text when it is an NVARCHAR (the statement of
 * sp_executesql): pointer and bytes present in the buffer. */
static bool first_nvarchar(const uint8_t *p, size_t len, size_t pos,
			   const uint8_t **text, size_t *tlen)
{
	size_t n;

	/* name (B_VARCHAR), status flags, type */
	if (pos >= len)
		return false;
	n = 2 * (size_t)p[pos];
	if (len - pos < 1 + n + 2)
		return false;
	pos += 1 + n + 1;
	if (p[pos] != 0xE7 || len - pos < 1 + 2 + 5 + 2)
		return false;
	if (tds_le16(p + pos + 1) == 0xFFFF) {
		/* nvarchar(max): PLP total u64, then the first chunk */
		if (len - pos < 1 + 2 + 5 + 8 + 4)
			return false;
		pos += 1 + 2 + 5 + 8;
		n = tds_le32(p + pos);
		pos += 4;
	} else {
		n = tds_le16(p + pos + 1 + 2 + 5);
		pos += 1 + 2 + 5 + 2;
		if (n == 0xFFFF)
			return false;
	}
	if (pos > len)
		return false;
	*text = p + pos;
	*tlen = n < len - pos ? n : len - pos;
	return true;
}

bool tds_rpc_pins(const uint8_t *p, size_t len)
{
	tds_all_headers_t ah;
	size_t pos = 0, nchars;
	const uint8_t *text;
	size_t tlen;
	char name[TOK_MAX];

	if (tds_all_headers_parse(p, len, &ah) == 0)
		pos = ah.total;
	if (len - pos < 2)
		return false;
	nchars = tds_le16(p + pos);
	pos += 2;
	if (nchars == 0xFFFF) {
		if (len - pos < 2)
			return false;
		if (proc_id_pins(tds_le16(p + pos)))
			return true;
		pos += 2;
	} else {
		size_t k = 0;

		if (2 * nchars > len - pos)
			return false;
		for (size_t i = 0; i < nchars && k + 1 < sizeof(name); i++) {
			uint16_t c = tds_le16(p + pos + 2 * i);

			name[k++] = c >= 'A' && c <= 'Z' ? (char)(c + 32)
				    : c < 0x80		 ? (char)c
							 : '?';
		}
		name[k] = 0;
		if (proc_name_pins(name))
			return true;
		pos += 2 * nchars;
	}
	pos += 2; /* option flags */
	if (first_nvarchar(p, len, pos, &text, &tlen))
		return tds_sql_rpc_pins(text, tlen);
	return false;
}

/* ---- SET lists ---- */

/* How much of a SET line names its option: "set transaction isolation
 * level " or "set <options> " (options joined by commas, no spaces). */
static size_t line_key(const char *line, size_t len)
{
	static const char iso[] = "set transaction isolation level ";
	const char *sp;

	if (len >= sizeof(iso) - 1 && memcmp(line, iso, sizeof(iso) - 1) == 0)
		return sizeof(iso) - 1;
	if (len < 4)
		return len;
	sp = memchr(line + 4, ' ', len - 4);
	/* "set statistics io on": two words */
	if (sp && len >= 15 && memcmp(line, "set statistics ", 15) == 0)
		sp = memchr(line + 15, ' ', len - 15);
	return sp ? (size_t)(sp - line) + 1 : len;
}

/* Removes from list the line whose key matches; list length adjusted. */
static void drop_key(char *list, size_t *llen, const char *key, size_t klen)
{
	size_t pos = 0;

	while (pos < *llen) {
		char *nl = memchr(list + pos, '\n', *llen - pos);
		size_t n = nl ? (size_t)(nl - (list + pos)) + 1 : *llen - pos;

		if (n >= klen && line_key(list + pos, n) == klen &&
		    memcmp(list + pos, key, klen) == 0) {
			memmove(list + pos, list + pos + n, *llen - pos - n);
			*llen -= n;
			list[*llen] = 0;
			continue;
		}
		pos += n;
	}
}

int tds_sets_merge(char *list, size_t cap, const char *lines)
{
	char tmp[TDS_SETS_MAX];
	size_t lim = cap < sizeof(tmp) ? cap : sizeof(tmp);
	size_t llen = strlen(list), pos = 0, total = strlen(lines);

	if (llen >= lim)
		return TP_ETOOBIG;
	memcpy(tmp, list, llen + 1);
	while (pos < total) {
		const char *nl = memchr(lines + pos, '\n', total - pos);
		size_t n = nl ? (size_t)(nl - (lines + pos)) + 1 : total - pos;
		size_t klen = line_key(lines + pos, n);

		drop_key(tmp, &llen, lines + pos, klen);
		if (n >= lim - llen)
			return TP_ETOOBIG;
		memcpy(tmp + llen, lines + pos, n);
		llen += n;
		tmp[llen] = 0;
		pos += n;
	}
	memcpy(list, tmp, llen + 1);
	return 0;
}
