/*
 * test_jwt.c - claims from tokens built here (header and payload JSON,
 * base64url without padding, any signature), and malformed tokens.
 * Tokens are passed in exactly-sized heap buffers without a NUL so that
 * AddressSanitizer catches any read past the given length.
 */
#include <stdlib.h>
#include <string.h>

#include "auth/cred_internal.h"
#include "tests/unit/tp_test.h"

#define HEADER "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"abc\"}"

/* base64url without padding, appended to dst. */
static void b64url_cat(char *dst, const char *src, size_t len)
{
	char tmp[4096];
	size_t n;

	if (auth__b64_encode((const unsigned char *)src, len, tmp, sizeof(tmp),
			     &n) != 0) {
		CHECK(!"payload too big for the test buffer");
		return;
	}
	while (n > 0 && tmp[n - 1] == '=')
		tmp[--n] = '\0';
	for (size_t i = 0; i < n; i++)
		tmp[i] = tmp[i] == '+' ? '-' : tmp[i] == '/' ? '_' : tmp[i];
	strcat(dst, tmp);
}

static void make_token(char *dst, const char *payload, size_t len)
{
	dst[0] = '\0';
	b64url_cat(dst, HEADER, strlen(HEADER));
	strcat(dst, ".");
	b64url_cat(dst, payload, len);
	strcat(dst, ".c2lnbmF0dXJl");
}

/* Runs the decoder on an unterminated copy of token. */
static int claims(const char *token, size_t len, auth_jwt_info_t *out)
{
	char *copy = malloc(len ? len : 1);
	int rc;

	memcpy(copy, token, len);
	rc = auth_jwt_claims(copy, len, out);
	free(copy);
	return rc;
}

static int claims_of(const char *payload, auth_jwt_info_t *out)
{
	char tok[8192];

	make_token(tok, payload, strlen(payload));
	return claims(tok, strlen(tok), out);
}

static void test_full_claims(void)
{
	auth_jwt_info_t info;

	CHECK_EQ_INT(
	    claims_of("{\"aud\":\"https://ossrdbms-aad.database.windows.net\","
		      "\"iss\":\"https://sts.windows.net/t/\","
		      "\"iat\":1700000000,\"nbf\":1700000001,"
		      "\"exp\":1700086400.5,"
		      "\"oid\":\"11111111-2222-3333-4444-555555555555\","
		      "\"appid\":\"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\","
		      "\"azp\":\"ignored\",\"tid\":\"t\"}",
		      &info),
	    0);
	CHECK(info.exp == 1700086400.5);
	CHECK(info.nbf == 1700000001.0);
	CHECK(info.iat == 1700000000.0);
	CHECK_EQ_STR(info.oid, "11111111-2222-3333-4444-555555555555");
	CHECK_EQ_STR(info.appid, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee");
	CHECK_EQ_STR(info.aud, "https://ossrdbms-aad.database.windows.net");
}

static void test_optional_claims(void)
{
	auth_jwt_info_t info;

	/* v2 tokens: azp instead of appid; aud as an array */
	CHECK_EQ_INT(claims_of("{\"azp\":\"client-2\",\"aud\":[\"first\","
			       "\"second\"],\"exp\":42}",
			       &info),
		     0);
	CHECK_EQ_STR(info.appid, "client-2");
	CHECK_EQ_STR(info.aud, "first");
	CHECK(info.exp == 42.0);
	CHECK(info.iat == 0.0 && info.nbf == 0.0);
	CHECK_EQ_STR(info.oid, "");
	/* nothing at all is still a token */
	CHECK_EQ_INT(claims_of("{}", &info), 0);
	CHECK(info.exp == 0.0);
	CHECK_EQ_INT(claims_of(" { \"aud\" : [ ] } ", &info), 0);
	CHECK_EQ_STR(info.aud, "");
}

/* Payload lengths of every residue mod 3 exercise each padding count. */
static void test_padding(void)
{
	static const char *payloads[] = {
	    "{\"exp\":7}",    "{\"exp\":7 }",	 "{\"exp\":7  }",
	    "{\"exp\":7   }", "{\"exp\":7    }", "{\"exp\":7     }",
	};
	auth_jwt_info_t info;

	for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
		CHECK_EQ_INT(claims_of(payloads[i], &info), 0);
		CHECK(info.exp == 7.0);
	}
}

/* Long strings are cut to the field, never mid UTF-8 character. */
static void test_truncation(void)
{
	char payload[1024], want[256];
	auth_jwt_info_t info;

	/* 254 ASCII bytes then "é" (2 bytes): 256 bytes do not fit in 255 */
	strcpy(payload, "{\"aud\":\"");
	memset(payload + 8, 'a', 254);
	strcpy(payload + 8 + 254, "\xc3\xa9zz\"}");
	CHECK_EQ_INT(claims_of(payload, &info), 0);
	memset(want, 'a', 254);
	want[254] = '\0';
	CHECK_EQ_STR(info.aud, want);
	/* an oid far too long fills its field exactly */
	strcpy(payload, "{\"oid\":\"");
	memset(payload + 8, 'b', 300);
	strcpy(payload + 308, "\"}");
	CHECK_EQ_INT(claims_of(payload, &info), 0);
	CHECK_EQ_INT(strlen(info.oid), sizeof(info.oid) - 1);
}

static void test_shapes(void)
{
	auth_jwt_info_t info;
	char tok[512];

	/* an empty signature (unsecured JWT) is still three parts */
	strcpy(tok, "eyJhbGciOiJub25lIn0.eyJleHAiOjF9.");
	CHECK_EQ_INT(claims(tok, strlen(tok), &info), 0);
	CHECK(info.exp == 1.0);
	/* only len counts: what follows is not read */
	strcpy(tok, "eyJhbGciOiJub25lIn0.eyJleHAiOjF9.sig.more");
	CHECK_EQ_INT(claims(tok, strlen(tok) - 5, &info), 0);
	CHECK_EQ_INT(claims(tok, strlen(tok), &info), TP_EINVAL);
}

static void test_malformed(void)
{
	static const char *bad[] = {
	    "",
	    "abc",
	    "eyJhbGciOiJub25lIn0",
	    "eyJhbGciOiJub25lIn0.eyJleHAiOjF9",
	    "eyJhbGciOiJub25lIn0..sig",
	    ".eyJleHAiOjF9.sig",
	    "a.eyJleHAiOjF9.b.c.d",
	    "eyJhbGciOiJub25lIn0.eyJleHAiOjF9=.sig", /* padding */
	    "eyJhbGciOiJub25lIn0.eyJleHAiOjF9A.sig", /* len % 4 == 1 */
	    "eyJhbGciOiJub25lIn0.eyJle+AiOjF9.sig",  /* not base64url */
	    "eyJhbGciOiJub25lIn0.eyJle HAiOjF9.sig",
	    "eyJhbGciOiJub25lIn0.bm90IGpzb24.sig",	/* "not json" */
	    "eyJhbGciOiJub25lIn0.WzFd.sig",		/* [1] */
	    "eyJhbGciOiJub25lIn0.eyJleHAiOiIxMjMifQ.s", /* exp "123" */
	    "eyJhbGciOiJub25lIn0.eyJvaWQiOjV9.s",	/* oid 5 */
	    "eyJhbGciOiJub25lIn0.e30x.s",		/* {}1 */
	    "eyJhbGciOiJub25lIn0.e30A.s",		/* {}\0 */
	    "eyJhbGciOiJub25lIn0.eyJleHAiOjFlOTk5fQ.s", /* exp 1e999 */
	    "eyJhbGciOiJub25lIn0.eyJhdWQiOlsxXX0.s",	/* aud [1] */
	    "eyJhbGciOiJub25lIn0.eyJleHAiOjF.s",	/* truncated */
	};
	auth_jwt_info_t info;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = claims(bad[i], strlen(bad[i]), &info);

		CHECK_EQ_INT(rc, TP_EINVAL);
		if (rc != TP_EINVAL)
			fprintf(stderr, "  accepted: %s\n", bad[i]);
		CHECK(info.exp == 0.0 && info.oid[0] == '\0');
	}
	CHECK_EQ_INT(auth_jwt_claims(NULL, 10, &info), TP_EINVAL);
}

/* Every prefix of a real-looking token: no crash, no over-read. */
static void test_prefixes(void)
{
	static const char payload[] =
	    "{\"exp\":1700000000,\"oid\":\"o\",\"appid\":\"a\"}";
	auth_jwt_info_t info;
	char tok[1024];
	size_t len, sig;

	make_token(tok, payload, strlen(payload));
	len = strlen(tok);
	sig = (size_t)(strrchr(tok, '.') - tok);
	CHECK_EQ_INT(claims(tok, len, &info), 0);
	CHECK_EQ_STR(info.oid, "o");
	for (size_t i = 0; i < len; i++) {
		int rc = claims(tok, i, &info);

		/* only prefixes that cut the signature still parse */
		CHECK_EQ_INT(rc, i > sig ? 0 : TP_EINVAL);
	}
}

TP_TEST_MAIN(TP_TEST(test_full_claims), TP_TEST(test_optional_claims),
	     TP_TEST(test_padding), TP_TEST(test_truncation),
	     TP_TEST(test_shapes), TP_TEST(test_malformed),
	     TP_TEST(test_prefixes))
