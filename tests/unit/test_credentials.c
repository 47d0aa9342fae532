/*
 * test_credentials.c - PostgreSQL md5, the MySQL scrambles, verifiers from
 * plain passwords and from each password_hash form, plain checks and the
 * `tokenpool hash` text. Expected values were computed independently with
 * Python's hashlib (see each constant).
 */
#include <stdlib.h>
#include <string.h>

#include "auth/cred_internal.h"
#include "tests/unit/tp_test.h"

/* PostgreSQL 15: CREATE ROLE app PASSWORD 'pencil' (rolpassword). */
#define PG_SECRET                                       \
	"SCRAM-SHA-256$4096:oi0JxnqFquaLgRHsQehrMQ==$"  \
	"NN9PtCyAT7/0WIPw0L/EO0fXs3VsGIuiSd+BqFCWU9A=:" \
	"gV6VWl+9QucX0/+Atf/jsBqp25g0AYktUiKep360c9w="
/* "*" + SHA1(SHA1("secret")) upper hex, as MySQL's PASSWORD() shows it */
#define NATIVE_SECRET "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"
/* SHA256(SHA256("secret")) */
#define SHA2_SECRET \
	"SHA256D$"  \
	"3881219d087dd9c634373fd33dfa33a2cb6bfc6c520b64b8bb60ef2ceb534ae7"

static const unsigned char nonce20[20] = {
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};

static conf_client_t client(const char *password, char **hashes, size_t n)
{
	conf_client_t c;

	memset(&c, 0, sizeof(c));
	c.user = (char *)"app";
	c.password = (char *)password;
	c.hashes = hashes;
	c.nhashes = n;
	return c;
}

static bool check(const conf_client_t *c, const auth_verifier_t *v,
		  const char *pw)
{
	size_t n = strlen(pw);
	char *copy = malloc(n ? n : 1); /* not NUL-terminated, like the wire */
	bool ok;

	memcpy(copy, pw, n);
	ok = auth_check_plain(c, v, copy, n);
	free(copy);
	return ok;
}

static void test_random_equal(void)
{
	unsigned char a[32], b[32];

	CHECK_EQ_INT(auth_random(a, sizeof(a)), 0);
	CHECK_EQ_INT(auth_random(b, sizeof(b)), 0);
	CHECK(!auth_equal(a, b, sizeof(a)));
	memcpy(b, a, sizeof(a));
	CHECK(auth_equal(a, b, sizeof(a)));
	b[31] ^= 1;
	CHECK(!auth_equal(a, b, sizeof(a)));
	CHECK(auth_equal(a, b, 0));
}

static void test_pg_md5(void)
{
	static const unsigned char salt[4] = {1, 2, 3, 4};
	char out[36];

	/* "md5" + md5(md5("pencil" "app").hexdigest() + b"\1\2\3\4") */
	auth_pg_md5("app", "pencil", salt, out);
	CHECK_EQ_STR(out, "md54bfca4ca571b8df74c2fc2247888d96f");
	auth_pg_md5("app", "pencil2", salt, out);
	CHECK(strcmp(out, "md54bfca4ca571b8df74c2fc2247888d96f") != 0);
	CHECK_EQ_INT(strlen(out), 35);
}

static void test_mysql_native(void)
{
	unsigned char scr[20], stored[20], other[20];
	unsigned char want[20];

	/* SHA1(p) XOR SHA1(nonce + SHA1(SHA1(p))) for p = "secret" */
	CHECK_EQ_INT(auth__unhex("b32bb3a583e1340c0a1108d58b1be49781ad8c2f", 40,
				 want, 20),
		     0);
	auth_mysql_native_scramble("secret", nonce20, 20, scr);
	CHECK(memcmp(scr, want, 20) == 0);
	CHECK_EQ_INT(auth__unhex(&NATIVE_SECRET[1], 40, stored, 20), 0);
	CHECK(auth_mysql_native_verify(stored, nonce20, 20, scr, 20));
	CHECK(!auth_mysql_native_verify(stored, nonce20, 20, scr, 19));
	CHECK(!auth_mysql_native_verify(stored, nonce20, 19, scr, 20));
	CHECK(!auth_mysql_native_verify(stored, nonce20, 20, NULL, 0));
	auth_mysql_native_scramble("Secret", nonce20, 20, other);
	CHECK(!auth_mysql_native_verify(stored, nonce20, 20, other, 20));
	scr[0] ^= 0x80;
	CHECK(!auth_mysql_native_verify(stored, nonce20, 20, scr, 20));
}

static void test_mysql_sha2(void)
{
	unsigned char scr[32], stored[32], other[32];
	unsigned char want[32];

	/* SHA256(p) XOR SHA256(SHA256(SHA256(p)) + nonce) for "secret" */
	CHECK_EQ_INT(auth__unhex("746ebe205d56a0707acb3e796e834e0d"
				 "d7b1d61743b26bd5202c7a623230c7c9",
				 64, want, 32),
		     0);
	auth_mysql_sha2_scramble("secret", nonce20, 20, scr);
	CHECK(memcmp(scr, want, 32) == 0);
	CHECK_EQ_INT(auth__unhex(&SHA2_SECRET[8], 64, stored, 32), 0);
	CHECK(auth_mysql_sha2_verify(stored, nonce20, 20, scr, 32));
	CHECK(!auth_mysql_sha2_verify(stored, nonce20, 20, scr, 31));
	CHECK(!auth_mysql_sha2_verify(stored, nonce20 + 1, 19, scr, 32));
	auth_mysql_sha2_scramble("secreT", nonce20, 20, other);
	CHECK(!auth_mysql_sha2_verify(stored, nonce20, 20, other, 32));
	/* a native scramble is not a sha2 one */
	auth_mysql_native_scramble("secret", nonce20, 20, other);
	CHECK(!auth_mysql_sha2_verify(stored, nonce20, 20, other, 20));
}

static void test_verifier_from_password(void)
{
	conf_client_t c = client("secret", NULL, 0);
	unsigned char stored[20], scr[32];
	auth_verifier_t v;

	CHECK_EQ_INT(auth_verifier_build(&c, &v), 0);
	CHECK(v.has_plain && v.has_scram && v.has_mysql_native &&
	      v.has_mysql_sha2);
	CHECK_EQ_INT(v.scram.iterations, AUTH_SCRAM_ITERATIONS);
	CHECK_EQ_INT(auth__unhex(&NATIVE_SECRET[1], 40, stored, 20), 0);
	CHECK(memcmp(v.mysql_native, stored, 20) == 0);
	auth_mysql_native_scramble("secret", nonce20, 20, scr);
	CHECK(auth_mysql_native_verify(v.mysql_native, nonce20, 20, scr, 20));
	auth_mysql_sha2_scramble("secret", nonce20, 20, scr);
	CHECK(auth_mysql_sha2_verify(v.mysql_sha2, nonce20, 20, scr, 32));
	CHECK(check(&c, &v, "secret"));
	CHECK(!check(&c, &v, "secre"));
	CHECK(!check(&c, &v, "secret "));
	CHECK(!check(&c, &v, ""));
	CHECK(!auth_check_plain(&c, &v, NULL, 3));
	CHECK(!auth_check_plain(&c, NULL, "secret", 6));
	/* the wire length wins over a NUL inside */
	CHECK(!auth_check_plain(&c, &v, "secret\0", 7));
}

static void test_verifier_from_hashes(void)
{
	char *scram[] = {(char *)PG_SECRET};
	char *native[] = {(char *)NATIVE_SECRET};
	char *lower[] = {(char *)"*14e65567abdb5135d0cfd9a70b3032c179a49ee7"};
	char *sha2[] = {(char *)SHA2_SECRET};
	char *both[] = {(char *)NATIVE_SECRET, (char *)SHA2_SECRET};
	conf_client_t c;
	auth_verifier_t v;

	c = client(NULL, scram, 1);
	CHECK_EQ_INT(auth_verifier_build(&c, &v), 0);
	CHECK(v.has_scram && !v.has_plain && !v.has_mysql_native &&
	      !v.has_mysql_sha2);
	CHECK(check(&c, &v, "pencil"));
	CHECK(!check(&c, &v, "pencil2"));

	c = client(NULL, native, 1);
	CHECK_EQ_INT(auth_verifier_build(&c, &v), 0);
	CHECK(v.has_mysql_native && !v.has_scram && !v.has_plain);
	CHECK(check(&c, &v, "secret"));
	CHECK(!check(&c, &v, "pencil"));

	c = client(NULL, lower, 1);
	CHECK_EQ_INT(auth_verifier_build(&c, &v), 0);
	CHECK(check(&c, &v, "secret"));

	c = client(NULL, sha2, 1);
	CHECK_EQ_INT(auth_verifier_build(&c, &v), 0);
	CHECK(v.has_mysql_sha2 && !v.has_mysql_native && !v.has_plain);
	CHECK(check(&c, &v, "secret"));
	CHECK(!check(&c, &v, "Secret"));

	c = client(NULL, both, 2);
	CHECK_EQ_INT(auth_verifier_build(&c, &v), 0);
	CHECK(v.has_mysql_sha2 && v.has_mysql_native);
	CHECK(check(&c, &v, "secret"));
	CHECK(!check(&c, &v, ""));
}

/* Hashes of two different passwords lock the client out rather than let
 * either password in. */
static void test_hashes_disagree(void)
{
	char *mixed[] = {(char *)PG_SECRET, (char *)NATIVE_SECRET};
	conf_client_t c = client(NULL, mixed, 2);
	auth_verifier_t v;

	CHECK_EQ_INT(auth_verifier_build(&c, &v), 0);
	CHECK(!check(&c, &v, "pencil"));
	CHECK(!check(&c, &v, "secret"));
}

static void test_verifier_bad(void)
{
	static const char *bad[] = {
	    "",
	    "secret",
	    "md5a3556571e93b0d20722ba62be61e8c2d",
	    "*14E65567ABDB5135D0CFD9A70B3032C179A49EE",
	    "*14E65567ABDB5135D0CFD9A70B3032C179A49EE77",
	    "*14E65567ABDB5135D0CFD9A70B3032C179A49EEG",
	    " *14E65567ABDB5135D0CFD9A70B3032C179A49EE7",
	    "SHA256D$3881219d087dd9c634373fd33dfa33a2cb6bfc6c520b64b8bb60ef2c"
	    "eb534ae",
	    "SHA256D$",
	    "sha256d$3881219d087dd9c634373fd33dfa33a2cb6bfc6c520b64b8bb60ef2c"
	    "eb534ae7",
	    "SCRAM-SHA-256$4096:oi0JxnqFquaLgRHsQehrMQ==$",
	};
	char *dup[] = {(char *)NATIVE_SECRET, (char *)NATIVE_SECRET};
	char *null_hash[] = {NULL};
	char *good[] = {(char *)NATIVE_SECRET};
	char *one[1];
	conf_client_t c;
	auth_verifier_t v;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		one[0] = (char *)bad[i];
		c = client(NULL, one, 1);
		CHECK_EQ_INT(auth_verifier_build(&c, &v), TP_ECONFIG);
		CHECK(!v.has_plain && !v.has_scram && !v.has_mysql_native);
	}
	c = client(NULL, dup, 2);
	CHECK_EQ_INT(auth_verifier_build(&c, &v), TP_ECONFIG);
	c = client(NULL, null_hash, 1);
	CHECK_EQ_INT(auth_verifier_build(&c, &v), TP_ECONFIG);
	c = client(NULL, NULL, 0);
	CHECK_EQ_INT(auth_verifier_build(&c, &v), TP_ECONFIG);
	c = client("", NULL, 0);
	CHECK_EQ_INT(auth_verifier_build(&c, &v), TP_ECONFIG);
	CHECK_EQ_INT(auth_verifier_build(NULL, &v), TP_ECONFIG);
	/* a hash beside a password must agree with it */
	c = client("pencil", good, 1);
	CHECK_EQ_INT(auth_verifier_build(&c, &v), TP_ECONFIG);
	c = client("secret", good, 1);
	CHECK_EQ_INT(auth_verifier_build(&c, &v), 0);
	CHECK(v.has_plain);
	CHECK(check(&c, &v, "secret"));
}

static void test_hash_error(void)
{
	CHECK(auth_hash_error(PG_SECRET) == NULL);
	CHECK(auth_hash_error(NATIVE_SECRET) == NULL);
	CHECK(auth_hash_error(SHA2_SECRET) == NULL);
	CHECK(strstr(auth_hash_error("SCRAM-SHA-256$1:x$y:z"), "SCRAM"));
	CHECK(strstr(auth_hash_error("*00"), "40 hex"));
	CHECK(strstr(auth_hash_error("SHA256D$00"), "64 hex"));
	CHECK(strstr(auth_hash_error("md5abc"), "unrecognized"));
	CHECK(strstr(auth_hash_error(""), "unrecognized"));
	CHECK(auth_hash_error(NULL) != NULL);
}

static void test_hash_print(void)
{
	char *text = auth_hash_print("correct horse");
	char *lines[3], *save = NULL, *tok;
	size_t n = 0;
	conf_client_t c;
	auth_verifier_t v;

	CHECK(text != NULL);
	if (!text)
		return;
	CHECK_EQ_INT(text[strlen(text) - 1], '\n');
	for (tok = strtok_r(text, "\n", &save); tok && n < 3;
	     tok = strtok_r(NULL, "\n", &save))
		lines[n++] = tok;
	CHECK_EQ_INT(n, 3);
	CHECK(tok == NULL);
	if (n == 3) {
		CHECK_EQ_INT(strncmp(lines[0], "SCRAM-SHA-256$4096:", 19), 0);
		CHECK_EQ_INT(strlen(lines[1]), 41);
		CHECK_EQ_INT(lines[1][0], '*');
		CHECK_EQ_INT(strspn(lines[1] + 1, "0123456789ABCDEF"), 40);
		CHECK_EQ_INT(strncmp(lines[2], "SHA256D$", 8), 0);
		CHECK_EQ_INT(strspn(lines[2] + 8, "0123456789abcdef"), 64);
		CHECK_EQ_INT(strlen(lines[2]), 72);
		/* each line alone, then all three together */
		for (size_t i = 0; i < 3; i++) {
			c = client(NULL, &lines[i], 1);
			CHECK_EQ_INT(auth_verifier_build(&c, &v), 0);
			CHECK(check(&c, &v, "correct horse"));
			CHECK(!check(&c, &v, "correct horse "));
		}
		c = client(NULL, lines, 3);
		CHECK_EQ_INT(auth_verifier_build(&c, &v), 0);
		CHECK(v.has_scram && v.has_mysql_native && v.has_mysql_sha2);
		CHECK(check(&c, &v, "correct horse"));
		CHECK(!check(&c, &v, "Correct horse"));
		c = client("correct horse", lines, 3);
		CHECK_EQ_INT(auth_verifier_build(&c, &v), 0);
	}
	free(text);
	CHECK(auth_hash_print("") == NULL);
	CHECK(auth_hash_print(NULL) == NULL);
}

static void test_hex(void)
{
	static const unsigned char in[3] = {0x00, 0xab, 0xff};
	unsigned char out[3];
	char hex[7] = {0};

	auth__hex(in, 3, hex, false);
	CHECK_EQ_STR(hex, "00abff");
	auth__hex(in, 3, hex, true);
	CHECK_EQ_STR(hex, "00ABFF");
	CHECK_EQ_INT(auth__unhex("00aBfF", 6, out, 3), 0);
	CHECK(memcmp(in, out, 3) == 0);
	CHECK_EQ_INT(auth__unhex("00aBf", 5, out, 3), TP_EINVAL);
	CHECK_EQ_INT(auth__unhex("00aBfx", 6, out, 3), TP_EINVAL);
}

TP_TEST_MAIN(TP_TEST(test_random_equal), TP_TEST(test_pg_md5),
	     TP_TEST(test_mysql_native), TP_TEST(test_mysql_sha2),
	     TP_TEST(test_verifier_from_password),
	     TP_TEST(test_verifier_from_hashes), TP_TEST(test_hashes_disagree),
	     TP_TEST(test_verifier_bad), TP_TEST(test_hash_error),
	     TP_TEST(test_hash_print), TP_TEST(test_hex))
