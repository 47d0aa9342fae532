/*
 * pam_jwt.c - test-rig PAM module: the password is an HS256 JWT from the
 * rig's identity provider (idp.py), checked the way Azure checks an Entra
 * token presented as a database password.
 *
 *   auth    required /path/pam_jwt.so key=/path/idp.key aud=https://... log=/path/pam.log
 *   account required pam_permit.so
 *
 * Arguments:
 *   key=PATH         HMAC key: the file's text, surrounding whitespace stripped
 *   aud=URI          accepted audience (may be repeated, up to 8)
 *   log=PATH         one line appended per decision (never the token)
 *   iss=URI          if given, the iss claim must equal it
 *   user_claim=NAME  claim holding the database user (default db_user)
 *   skew=SECONDS     clock skew allowed on exp/nbf (default 1)
 *
 * Checks, in order: header alg is HS256, signature, exp (required), nbf (if
 * present), aud, iss (if configured), and user claim == PAM_USER.
 *
 * Not pam_exec: it cuts the password at 511 bytes and real tokens are 1-3 KB.
 * Build: cc -shared -fPIC -O2 -Wall -o pam_jwt.so pam_jwt.c -lpam -lcrypto
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAM_SM_AUTH
#define PAM_SM_ACCOUNT
#include <security/pam_ext.h>
#include <security/pam_modules.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define MAX_TOKEN 16384   /* longest password we consider a token */
#define MAX_KEY 4096      /* longest key file */
#define MAX_AUDS 8
#define MAX_STR 1024      /* longest string claim we keep */
#define MAX_DEPTH 32      /* JSON nesting we skip over */

/* ------------------------------------------------------------ arguments */

struct jwt_args {
	const char *key_path;
	const char *auds[MAX_AUDS];
	int naud;
	const char *log_path;
	const char *iss;
	const char *user_claim;
	long skew;
};

/* Returns NULL on success, else what is wrong. */
static const char *parse_args(int argc, const char **argv, struct jwt_args *a)
{
	memset(a, 0, sizeof(*a));
	a->user_claim = "db_user";
	a->skew = 1;
	for (int i = 0; i < argc; i++) {
		const char *v = argv[i];
		if (strncmp(v, "key=", 4) == 0) {
			a->key_path = v + 4;
		} else if (strncmp(v, "aud=", 4) == 0) {
			if (a->naud == MAX_AUDS)
				return "too_many_aud_args";
			a->auds[a->naud++] = v + 4;
		} else if (strncmp(v, "log=", 4) == 0) {
			a->log_path = v + 4;
		} else if (strncmp(v, "iss=", 4) == 0) {
			a->iss = v + 4;
		} else if (strncmp(v, "user_claim=", 11) == 0) {
			a->user_claim = v + 11;
		} else if (strncmp(v, "skew=", 5) == 0) {
			char *end;
			errno = 0;
			a->skew = strtol(v + 5, &end, 10);
			if (errno || *end || a->skew < 0 || a->skew > 3600)
				return "bad_skew_arg";
		} else {
			return "unknown_arg";
		}
	}
	if (!a->key_path || !*a->key_path)
		return "no_key_arg";
	if (a->naud == 0)
		return "no_aud_arg";
	return NULL;
}

/* ------------------------------------------------------------ logging */

/* Copy src into dst (cap >= 2) keeping only characters that cannot break the
 * key=value line format; others become '?'. Truncates at cap-1. */
static void sanitize(char *dst, size_t cap, const char *src)
{
	size_t n = 0;
	if (!src)
		src = "-";
	for (; *src && n + 1 < cap; src++) {
		unsigned char c = (unsigned char)*src;
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			 (c >= '0' && c <= '9') || strchr("._:/@+=-~", c);
		dst[n++] = ok ? (char)c : '?';
	}
	dst[n] = '\0';
}

static void log_decision(pam_handle_t *pamh, const struct jwt_args *a, const char *user,
			 int allow, const char *reason, const char *appid, size_t toklen)
{
	if (!a->log_path || !*a->log_path)
		return;
	const void *svc = NULL;
	if (pam_get_item(pamh, PAM_SERVICE, &svc) != PAM_SUCCESS)
		svc = NULL;
	char s_user[130], s_svc[130], s_app[130], ts[32], line[600];
	sanitize(s_user, sizeof(s_user), user);
	sanitize(s_svc, sizeof(s_svc), svc);
	sanitize(s_app, sizeof(s_app), appid);
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	int n = snprintf(line, sizeof(line),
			 "%s pam_jwt service=%s user=%s result=%s reason=%s appid=%s len=%zu pid=%ld\n",
			 ts, s_svc, s_user, allow ? "allow" : "deny", reason, s_app, toklen,
			 (long)getpid());
	if (n <= 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	int fd = open(a->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		pam_syslog(pamh, 3 /* LOG_ERR */, "pam_jwt: cannot open log %s: %s", a->log_path,
			   strerror(errno));
		return;
	}
	/* One write() with O_APPEND: lines from concurrent logins do not interleave. */
	ssize_t w = write(fd, line, (size_t)n);
	(void)w;
	close(fd);
}

/* ------------------------------------------------------------ key file */

/* Reads the key into buf; returns its length or -1. */
static int read_key(const char *path, unsigned char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t len = 0;
	for (;;) {
		if (len == cap) { /* key file larger than we accept */
			close(fd);
			return -1;
		}
		ssize_t r = read(fd, buf + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	size_t start = 0;
	while (start < len && strchr(" \t\r\n", buf[start]))
		start++;
	while (len > start && strchr(" \t\r\n", buf[len - 1]))
		len--;
	memmove(buf, buf + start, len - start);
	len -= start;
	return len >= 32 ? (int)len : -1;
}

/* ------------------------------------------------------------ base64url */

/* Decodes unpadded base64url; out must hold 3 * ceil(inlen / 4) bytes.
 * Returns the decoded length or -1. */
static long b64url_decode(const char *in, size_t inlen, unsigned char *out, size_t outcap)
{
	if (inlen % 4 == 1 || inlen > MAX_TOKEN)
		return -1;
	size_t padded = (inlen + 3) / 4 * 4;
	if (padded / 4 * 3 > outcap)
		return -1;
	char *tmp = malloc(padded + 1);
	if (!tmp)
		return -1;
	for (size_t i = 0; i < inlen; i++) {
		char c = in[i];
		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) {
			free(tmp);
			return -1; /* also rejects '+', '/', '=' and whitespace */
		}
		tmp[i] = c;
	}
	size_t pad = padded - inlen;
	/* Canonical encoding only: the unused low bits of the last character
	 * must be zero, so no two spellings of a token decode the same. */
	if (pad && inlen > 0) {
		const char *alphabet =
			"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
		unsigned v = (unsigned)(strchr(alphabet, tmp[inlen - 1]) - alphabet);
		if (v & (pad == 1 ? 0x3u : 0xFu)) {
			free(tmp);
			return -1;
		}
	}
	memset(tmp + inlen, '=', pad);
	tmp[padded] = '\0';
	int n = padded ? EVP_DecodeBlock(out, (const unsigned char *)tmp, (int)padded) : 0;
	free(tmp);
	if (n < 0 || (size_t)n < pad)
		return -1;
	/* EVP_DecodeBlock counts the bytes the '=' stand for; drop them. */
	return (long)((size_t)n - pad);
}

/* ------------------------------------------------------------ JSON claims */

/* A tiny reader for one flat JSON object: it extracts the string and number
 * members asked for and skips (validating) everything else. */

enum claim_type { CLAIM_STR, CLAIM_NUM };

struct claim {
	const char *name;
	enum claim_type type;
	int seen;       /* present with the expected type */
	int wrong_type; /* present with another type */
	char str[MAX_STR];
	double num;
};

struct cur {
	const char *p, *end;
};

static void skip_ws(struct cur *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

static int read_hex4(struct cur *c, unsigned *out)
{
	if (c->end - c->p < 4)
		return -1;
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(c->p[i]);
		if (h < 0)
			return -1;
		v = v << 4 | (unsigned)h;
	}
	c->p += 4;
	*out = v;
	return 0;
}

/* Appends one byte if there is room; sets *overflow otherwise. */
static void put(char *out, size_t cap, size_t *n, int *overflow, unsigned char b)
{
	if (!out)
		return;
	if (*n + 1 < cap)
		out[(*n)++] = (char)b;
	else
		*overflow = 1;
}

/* Parses a JSON string at c->p (which must be '"'). With out, stores it
 * decoded as UTF-8 and NUL-terminated; *overflow is set if it did not fit.
 * Returns 0, or -1 on a syntax error or an embedded NUL. */
static int parse_string(struct cur *c, char *out, size_t cap, int *overflow)
{
	size_t n = 0;
	int ovf = 0;
	if (c->p >= c->end || *c->p != '"')
		return -1;
	c->p++;
	for (;;) {
		if (c->p >= c->end)
			return -1;
		unsigned char ch = (unsigned char)*c->p++;
		if (ch == '"')
			break;
		if (ch < 0x20)
			return -1;
		if (ch != '\\') {
			put(out, cap, &n, &ovf, ch);
			continue;
		}
		if (c->p >= c->end)
			return -1;
		char e = *c->p++;
		switch (e) {
		case '"': put(out, cap, &n, &ovf, '"'); break;
		case '\\': put(out, cap, &n, &ovf, '\\'); break;
		case '/': put(out, cap, &n, &ovf, '/'); break;
		case 'b': put(out, cap, &n, &ovf, '\b'); break;
		case 'f': put(out, cap, &n, &ovf, '\f'); break;
		case 'n': put(out, cap, &n, &ovf, '\n'); break;
		case 'r': put(out, cap, &n, &ovf, '\r'); break;
		case 't': put(out, cap, &n, &ovf, '\t'); break;
		case 'u': {
			unsigned cp;
			if (read_hex4(c, &cp))
				return -1;
			if (cp >= 0xD800 && cp <= 0xDBFF) { /* surrogate pair */
				unsigned lo;
				if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u')
					return -1;
				c->p += 2;
				if (read_hex4(c, &lo) || lo < 0xDC00 || lo > 0xDFFF)
					return -1;
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
			} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
				return -1;
			}
			if (cp == 0)
				return -1; /* would truncate a C string: refuse */
			if (cp < 0x80) {
				put(out, cap, &n, &ovf, (unsigned char)cp);
			} else if (cp < 0x800) {
				put(out, cap, &n, &ovf, (unsigned char)(0xC0 | cp >> 6));
				put(out, cap, &n, &ovf, (unsigned char)(0x80 | (cp & 0x3F)));
			} else if (cp < 0x10000) {
				put(out, cap, &n, &ovf, (unsigned char)(0xE0 | cp >> 12));
				put(out, cap, &n, &ovf, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
				put(out, cap, &n, &ovf, (unsigned char)(0x80 | (cp & 0x3F)));
			} else {
				put(out, cap, &n, &ovf, (unsigned char)(0xF0 | cp >> 18));
				put(out, cap, &n, &ovf, (unsigned char)(0x80 | ((cp >> 12) & 0x3F)));
				put(out, cap, &n, &ovf, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
				put(out, cap, &n, &ovf, (unsigned char)(0x80 | (cp & 0x3F)));
			}
			break;
		}
		default:
			return -1;
		}
	}
	if (out)
		out[n] = '\0';
	if (overflow)
		*overflow = ovf;
	return 0;
}

/* Parses a JSON number; stores its value in *out if out is not NULL. */
static int parse_number(struct cur *c, double *out)
{
	const char *s = c->p;
	const char *q = s;
	if (q < c->end && *q == '-')
		q++;
	if (q >= c->end)
		return -1;
	if (*q == '0') {
		q++;
	} else if (*q >= '1' && *q <= '9') {
		while (q < c->end && *q >= '0' && *q <= '9')
			q++;
	} else {
		return -1;
	}
	if (q < c->end && *q == '.') {
		q++;
		if (q >= c->end || *q < '0' || *q > '9')
			return -1;
		while (q < c->end && *q >= '0' && *q <= '9')
			q++;
	}
	if (q < c->end && (*q == 'e' || *q == 'E')) {
		q++;
		if (q < c->end && (*q == '+' || *q == '-'))
			q++;
		if (q >= c->end || *q < '0' || *q > '9')
			return -1;
		while (q < c->end && *q >= '0' && *q <= '9')
			q++;
	}
	size_t len = (size_t)(q - s);
	if (out) {
		char buf[64];
		if (len >= sizeof(buf))
			return -1;
		memcpy(buf, s, len);
		buf[len] = '\0';
		*out = strtod(buf, NULL);
	}
	c->p = q;
	return 0;
}

static int skip_value(struct cur *c, int depth);

static int skip_container(struct cur *c, int depth, char open, char close)
{
	if (depth > MAX_DEPTH)
		return -1;
	c->p++; /* the opening bracket */
	skip_ws(c);
	if (c->p < c->end && *c->p == close) {
		c->p++;
		return 0;
	}
	for (;;) {
		if (open == '{') {
			skip_ws(c);
			if (parse_string(c, NULL, 0, NULL))
				return -1;
			skip_ws(c);
			if (c->p >= c->end || *c->p != ':')
				return -1;
			c->p++;
		}
		if (skip_value(c, depth + 1))
			return -1;
		skip_ws(c);
		if (c->p >= c->end)
			return -1;
		if (*c->p == ',') {
			c->p++;
			continue;
		}
		if (*c->p == close) {
			c->p++;
			return 0;
		}
		return -1;
	}
}

static int skip_literal(struct cur *c, const char *lit)
{
	size_t n = strlen(lit);
	if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0)
		return -1;
	c->p += n;
	return 0;
}

static int skip_value(struct cur *c, int depth)
{
	skip_ws(c);
	if (c->p >= c->end)
		return -1;
	switch (*c->p) {
	case '"': return parse_string(c, NULL, 0, NULL);
	case '{': return skip_container(c, depth, '{', '}');
	case '[': return skip_container(c, depth, '[', ']');
	case 't': return skip_literal(c, "true");
	case 'f': return skip_literal(c, "false");
	case 'n': return skip_literal(c, "null");
	default: return parse_number(c, NULL);
	}
}

/* Reads a top-level JSON object, filling the claims asked for. A member
 * named twice is an error (the two readers of a token must not disagree on
 * which one counts). Returns NULL or a reason. */
static const char *read_claims(const char *json, size_t len, struct claim *claims, int nclaims)
{
	struct cur c = {json, json + len};
	skip_ws(&c);
	if (c.p >= c.end || *c.p != '{')
		return "not_an_object";
	c.p++;
	skip_ws(&c);
	if (c.p < c.end && *c.p == '}') {
		c.p++;
		goto tail;
	}
	for (;;) {
		char key[128];
		int key_ovf = 0;
		skip_ws(&c);
		if (parse_string(&c, key, sizeof(key), &key_ovf))
			return "bad_json";
		skip_ws(&c);
		if (c.p >= c.end || *c.p != ':')
			return "bad_json";
		c.p++;
		skip_ws(&c);
		struct claim *cl = NULL;
		for (int i = 0; i < nclaims && !key_ovf; i++)
			if (strcmp(claims[i].name, key) == 0)
				cl = &claims[i];
		if (cl) {
			if (cl->seen || cl->wrong_type)
				return "duplicate_claim";
			if (cl->type == CLAIM_STR && c.p < c.end && *c.p == '"') {
				int ovf = 0;
				if (parse_string(&c, cl->str, sizeof(cl->str), &ovf))
					return "bad_json";
				if (ovf)
					return "claim_too_long";
				cl->seen = 1;
			} else if (cl->type == CLAIM_NUM && c.p < c.end &&
				   (*c.p == '-' || (*c.p >= '0' && *c.p <= '9'))) {
				if (parse_number(&c, &cl->num))
					return "bad_json";
				cl->seen = 1;
			} else {
				cl->wrong_type = 1;
				if (skip_value(&c, 1))
					return "bad_json";
			}
		} else if (skip_value(&c, 1)) {
			return "bad_json";
		}
		skip_ws(&c);
		if (c.p >= c.end)
			return "bad_json";
		if (*c.p == ',') {
			c.p++;
			continue;
		}
		if (*c.p == '}') {
			c.p++;
			break;
		}
		return "bad_json";
	}
tail:
	skip_ws(&c);
	return c.p == c.end ? NULL : "bad_json";
}

/* ------------------------------------------------------------ the check */

enum { C_EXP, C_NBF, C_AUD, C_ISS, C_USER, C_APPID, C_COUNT };

/* Validates token for user. Returns NULL (allow) or the reason to deny.
 * appid receives the token's appid claim when it got that far. */
static const char *check_token(const struct jwt_args *a, const char *token, size_t toklen,
			       const char *user, char *appid, size_t appid_cap)
{
	const char *reason = NULL;
	unsigned char key[MAX_KEY];
	unsigned char *buf = NULL;
	struct claim *claims = NULL;

	int keylen = read_key(a->key_path, key, sizeof(key));
	if (keylen < 0)
		return "key_unreadable";

	const char *dot1 = memchr(token, '.', toklen);
	const char *dot2 = dot1 ? memchr(dot1 + 1, '.', toklen - (size_t)(dot1 + 1 - token)) : NULL;
	if (!dot1 || !dot2 || memchr(dot2 + 1, '.', toklen - (size_t)(dot2 + 1 - token))) {
		reason = "malformed";
		goto out;
	}
	size_t hlen = (size_t)(dot1 - token);
	size_t plen = (size_t)(dot2 - dot1 - 1);
	size_t slen = toklen - (size_t)(dot2 + 1 - token);

	size_t cap = toklen / 4 * 3 + 3;
	buf = malloc(cap + 1);
	claims = calloc(C_COUNT, sizeof(*claims));
	if (!buf || !claims) {
		reason = "out_of_memory";
		goto out;
	}

	/* Header: HS256 only (no "none", no algorithm confusion). */
	long n = b64url_decode(token, hlen, buf, cap);
	if (n < 0) {
		reason = "malformed";
		goto out;
	}
	struct claim alg = {.name = "alg", .type = CLAIM_STR};
	if (read_claims((const char *)buf, (size_t)n, &alg, 1)) {
		reason = "bad_header";
		goto out;
	}
	if (!alg.seen || strcmp(alg.str, "HS256") != 0) {
		reason = "alg_not_hs256";
		goto out;
	}

	/* Signature over "header.payload", compared in constant time. */
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	if (!HMAC(EVP_sha256(), key, keylen, (const unsigned char *)token, hlen + 1 + plen, mac,
		  &maclen)) {
		reason = "hmac_failed";
		goto out;
	}
	n = b64url_decode(dot2 + 1, slen, buf, cap);
	if (n != (long)maclen || CRYPTO_memcmp(buf, mac, maclen) != 0) {
		reason = "bad_signature";
		goto out;
	}

	/* Claims. */
	n = b64url_decode(dot1 + 1, plen, buf, cap);
	if (n < 0) {
		reason = "malformed";
		goto out;
	}
	claims[C_EXP] = (struct claim){.name = "exp", .type = CLAIM_NUM};
	claims[C_NBF] = (struct claim){.name = "nbf", .type = CLAIM_NUM};
	claims[C_AUD] = (struct claim){.name = "aud", .type = CLAIM_STR};
	claims[C_ISS] = (struct claim){.name = "iss", .type = CLAIM_STR};
	claims[C_USER] = (struct claim){.name = a->user_claim, .type = CLAIM_STR};
	claims[C_APPID] = (struct claim){.name = "appid", .type = CLAIM_STR};
	reason = read_claims((const char *)buf, (size_t)n, claims, C_COUNT);
	if (reason)
		goto out;
	if (claims[C_APPID].seen)
		snprintf(appid, appid_cap, "%s", claims[C_APPID].str);

	double now = (double)time(NULL);
	if (!claims[C_EXP].seen) {
		reason = "no_exp";
		goto out;
	}
	if (now >= claims[C_EXP].num + (double)a->skew) {
		reason = "expired";
		goto out;
	}
	if (claims[C_NBF].wrong_type) {
		reason = "bad_nbf";
		goto out;
	}
	if (claims[C_NBF].seen && now < claims[C_NBF].num - (double)a->skew) {
		reason = "not_yet_valid";
		goto out;
	}
	if (!claims[C_AUD].seen) {
		reason = "no_aud";
		goto out;
	}
	int aud_ok = 0;
	for (int i = 0; i < a->naud; i++)
		if (strcmp(claims[C_AUD].str, a->auds[i]) == 0)
			aud_ok = 1;
	if (!aud_ok) {
		reason = "wrong_aud";
		goto out;
	}
	if (a->iss && (!claims[C_ISS].seen || strcmp(claims[C_ISS].str, a->iss) != 0)) {
		reason = "wrong_iss";
		goto out;
	}
	if (!claims[C_USER].seen) {
		reason = "no_user_claim";
		goto out;
	}
	if (strcmp(claims[C_USER].str, user) != 0) {
		reason = "user_mismatch";
		goto out;
	}
	reason = NULL;
out:
	OPENSSL_cleanse(key, sizeof(key));
	if (buf) {
		OPENSSL_cleanse(buf, cap);
		free(buf);
	}
	free(claims);
	return reason;
}

/* ------------------------------------------------------------ PAM entry points */

PAM_EXTERN int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	struct jwt_args a;
	const char *user = NULL;
	const char *tok = NULL;
	char appid[MAX_STR] = "-";
	(void)flags;
	const char *bad_arg = parse_args(argc, argv, &a);

	if (pam_get_user(pamh, &user, NULL) != PAM_SUCCESS || !user) {
		log_decision(pamh, &a, NULL, 0, "no_user", NULL, 0);
		return PAM_USER_UNKNOWN;
	}
	if (bad_arg) {
		pam_syslog(pamh, 3 /* LOG_ERR */, "pam_jwt: bad module arguments: %s", bad_arg);
		log_decision(pamh, &a, user, 0, bad_arg, NULL, 0);
		return PAM_SERVICE_ERR;
	}
	int rc = pam_get_authtok(pamh, PAM_AUTHTOK, &tok, NULL);
	if (rc != PAM_SUCCESS || !tok || !*tok) {
		log_decision(pamh, &a, user, 0, "no_token", NULL, 0);
		return rc == PAM_SUCCESS ? PAM_AUTH_ERR : rc;
	}
	size_t toklen = strnlen(tok, MAX_TOKEN + 1);
	if (toklen > MAX_TOKEN) {
		log_decision(pamh, &a, user, 0, "token_too_long", NULL, toklen);
		return PAM_AUTH_ERR;
	}
	const char *reason = check_token(&a, tok, toklen, user, appid, sizeof(appid));
	if (reason && strcmp(reason, "key_unreadable") == 0) {
		pam_syslog(pamh, 3 /* LOG_ERR */, "pam_jwt: cannot read key file %s", a.key_path);
		log_decision(pamh, &a, user, 0, reason, NULL, toklen);
		return PAM_AUTHINFO_UNAVAIL;
	}
	log_decision(pamh, &a, user, reason == NULL, reason ? reason : "ok", appid, toklen);
	return reason ? PAM_AUTH_ERR : PAM_SUCCESS;
}

PAM_EXTERN int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	(void)pamh, (void)flags, (void)argc, (void)argv;
	return PAM_SUCCESS;
}

PAM_EXTERN int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	(void)pamh, (void)flags, (void)argc, (void)argv;
	return PAM_SUCCESS;
}
