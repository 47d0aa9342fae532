/*
 * jwt.c - reads the claims of an Entra access token (a JWS in compact form)
 * so the token cache can schedule refreshes from exp/iat and logs can name
 * the identity (oid, appid) and audience instead of printing the token.
 *
 * Non-goals: signature or issuer validation (the database server does
 * that; we only hold the token), JWE (five parts: refused), and logging:
 * nothing here ever writes a token or a claim anywhere.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "auth/cred_internal.h"

/* Entra tokens are a few KB; far above that is not a token. */
#define JWT_MAX (1024 * 1024)

static bool b64url_char(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
	       (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
}

/*
 * base64url without padding (RFC 7515): map "-_" to "+/", add the '='s
 * the length implies, and let the strict decoder drop the padding bytes.
 * Returns a malloc'd NUL-terminated buffer in *out.
 */
static int b64url_decode(const char *in, size_t len, char **out, size_t *outlen)
{
	size_t pad = (4 - len % 4) % 4, n;
	char *b64;
	int rc = 0;

	*out = NULL;
	if (len == 0 || pad == 3) /* one leftover char holds 6 bits: no byte */
		return TP_EINVAL;
	for (size_t i = 0; i < len; i++)
		if (!b64url_char(in[i]))
			return TP_EINVAL;
	b64 = malloc(len + pad);
	*out = malloc(len / 4 * 3 + 3 + 1);
	if (!b64 || !*out) {
		free(b64);
		free(*out);
		*out = NULL;
		return TP_ENOMEM;
	}
	for (size_t i = 0; i < len; i++)
		b64[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	memset(b64 + len, '=', pad);
	if (auth__b64_decode(b64, len + pad, (unsigned char *)*out,
			     len / 4 * 3 + 3, &n) != 0)
		rc = TP_EINVAL;
	free(b64);
	if (rc) {
		free(*out);
		*out = NULL;
		return rc;
	}
	(*out)[n] = '\0';
	*outlen = n;
	return 0;
}

/* exp, nbf, iat: NumericDate, i.e. a JSON number. */
static int number_claim(const cJSON *root, const char *name, double *out)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, name);

	if (!it)
		return 0;
	if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
		return TP_EINVAL;
	*out = it->valuedouble;
	return 0;
}

/* Copies s into out[cap], cutting at a UTF-8 character boundary when it
 * does not fit, so a log line never gets half a character. */
static void copy_cut(char *out, size_t cap, const char *s)
{
	size_t n = strlen(s);

	if (n >= cap) {
		n = cap - 1;
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	}
	memcpy(out, s, n);
	out[n] = '\0';
}

/* A string claim; *found tells whether it was there. aud may also be an
 * array of strings (RFC 7519): the first is kept. */
static int string_claim(const cJSON *root, const char *name, char *out,
			size_t cap, bool *found)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, name);

	*found = false;
	if (!it)
		return 0;
	if (cJSON_IsArray(it) && strcmp(name, "aud") == 0) {
		it = cJSON_GetArrayItem(it, 0);
		if (!it)
			return 0;
	}
	if (!cJSON_IsString(it) || !it->valuestring)
		return TP_EINVAL;
	copy_cut(out, cap, it->valuestring);
	*found = true;
	return 0;
}

static int read_claims(const cJSON *root, auth_jwt_info_t *out)
{
	bool found;
	int rc;

	if (!cJSON_IsObject(root))
		return TP_EINVAL;
	rc = number_claim(root, "exp", &out->exp);
	if (!rc)
		rc = number_claim(root, "nbf", &out->nbf);
	if (!rc)
		rc = number_claim(root, "iat", &out->iat);
	if (!rc)
		rc = string_claim(root, "oid", out->oid, sizeof(out->oid),
				  &found);
	/* v1 tokens name the client in appid, v2 tokens in azp */
	if (!rc)
		rc = string_claim(root, "appid", out->appid, sizeof(out->appid),
				  &found);
	if (!rc && !found)
		rc = string_claim(root, "azp", out->appid, sizeof(out->appid),
				  &found);
	if (!rc)
		rc = string_claim(root, "aud", out->aud, sizeof(out->aud),
				  &found);
	return rc;
}

int auth_jwt_claims(const char *token, size_t len, auth_jwt_info_t *out)
{
	const char *dot1, *dot2, *payload, *end;
	cJSON *root = NULL;
	char *json;
	size_t n;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!token || len == 0 || len > JWT_MAX)
		return TP_EINVAL;
	end = token + len;
	dot1 = memchr(token, '.', len);
	payload = dot1 ? dot1 + 1 : NULL;
	dot2 = payload ? memchr(payload, '.', (size_t)(end - payload)) : NULL;
	/* exactly header.payload.signature, header and payload non-empty
	 * (the signature may be empty: an unsecured JWT) */
	if (!dot2 || dot1 == token || dot2 == payload ||
	    memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)))
		return TP_EINVAL;
	rc = b64url_decode(payload, (size_t)(dot2 - payload), &json, &n);
	if (rc)
		return rc;
	/* an embedded NUL would hide trailing bytes from the parser */
	if (memchr(json, '\0', n))
		rc = TP_EINVAL;
	if (!rc)
		root = cJSON_ParseWithLengthOpts(json, n + 1, NULL, 1);
	if (!rc)
		rc = root ? read_claims(root, out) : TP_EINVAL;
	cJSON_Delete(root);
	free(json);
	if (rc)
		memset(out, 0, sizeof(*out));
	return rc;
}
