/*
 * test_scram.c - SCRAM-SHA-256 server and client against RFC 7677's
 * example, each other, a verifier made by PostgreSQL 15, and malformed
 * input. Messages are copied into exactly-sized heap buffers so that
 * AddressSanitizer catches any read past the length we pass.
 */
#include <stdlib.h>
#include <string.h>

#include "auth/cred_internal.h"
#include "tests/unit/tp_test.h"

/* RFC 7677 section 3 */
#define RFC_CFIRST "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define RFC_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_SFIRST                                              \
	"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0," \
	"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CFINAL                                                     \
	"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0," \
	"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SFINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
/* The same secret in PostgreSQL's text format (computed with Python's
 * hashlib/hmac from the RFC's password and salt). */
#define RFC_SECRET                                      \
	"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"  \
	"WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:" \
	"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

/* From a PostgreSQL 15 server: CREATE ROLE app PASSWORD 'pencil';
 * SELECT rolpassword FROM pg_authid WHERE rolname = 'app'; */
#define PG_SECRET                                       \
	"SCRAM-SHA-256$4096:oi0JxnqFquaLgRHsQehrMQ==$"  \
	"NN9PtCyAT7/0WIPw0L/EO0fXs3VsGIuiSd+BqFCWU9A=:" \
	"gV6VWl+9QucX0/+Atf/jsBqp25g0AYktUiKep360c9w="

#define CAP (AUTH_SCRAM_MAX_MSG + 1)

static char *dup_exact(const char *s, size_t n)
{
	char *p = malloc(n ? n : 1);

	memcpy(p, s, n);
	return p;
}

static int server_first(auth_scram_server_t *st,
			const auth_scram_secret_t *secret, const char *msg,
			size_t len)
{
	char out[CAP];
	size_t n;
	char *m = dup_exact(msg, len);
	int rc = auth__scram_server_first_with_nonce(
	    st, secret, m, len, RFC_SNONCE, out, sizeof(out), &n);

	free(m);
	return rc;
}

static int server_final(auth_scram_server_t *st, const char *msg, size_t len)
{
	char out[CAP];
	size_t n;
	char *m = dup_exact(msg, len);
	int rc = auth_scram_server_final(st, m, len, out, sizeof(out), &n);

	free(m);
	return rc;
}

static void rfc_secret(auth_scram_secret_t *s)
{
	CHECK_EQ_INT(auth_scram_secret_parse(RFC_SECRET, s), 0);
}

static void test_rfc7677_derive(void)
{
	unsigned char salt[16];
	size_t n;
	auth_scram_secret_t s;
	char text[AUTH_SCRAM_SECRET_MAX];

	CHECK_EQ_INT(auth__b64_decode("W22ZaJ0SNY7soEsUEjb6gQ==", 24, salt,
				      sizeof(salt), &n),
		     0);
	CHECK_EQ_INT(n, 16);
	CHECK_EQ_INT(auth__scram_derive("pencil", 6, salt, n, 4096, &s), 0);
	CHECK_EQ_INT(auth_scram_secret_format(&s, text, sizeof(text)), 0);
	CHECK_EQ_STR(text, RFC_SECRET);
}

static void test_rfc7677_server(void)
{
	auth_scram_server_t st;
	auth_scram_secret_t s;
	char out[CAP];
	size_t n;

	rfc_secret(&s);
	CHECK_EQ_INT(auth__scram_server_first_with_nonce(
			 &st, &s, RFC_CFIRST, strlen(RFC_CFIRST), RFC_SNONCE,
			 out, sizeof(out), &n),
		     0);
	CHECK_EQ_STR(out, RFC_SFIRST);
	CHECK_EQ_INT(n, strlen(RFC_SFIRST));
	CHECK_EQ_INT(auth_scram_server_final(&st, RFC_CFINAL,
					     strlen(RFC_CFINAL), out,
					     sizeof(out), &n),
		     0);
	CHECK_EQ_STR(out, RFC_SFINAL);
	CHECK_EQ_INT(n, strlen(RFC_SFINAL));
	/* one exchange, one answer */
	CHECK_EQ_INT(auth_scram_server_final(&st, RFC_CFINAL,
					     strlen(RFC_CFINAL), out,
					     sizeof(out), &n),
		     TP_EPROTO);
}

static void test_rfc7677_client(void)
{
	auth_scram_client_t st;
	char out[CAP];
	size_t n;

	CHECK_EQ_INT(auth__scram_client_first_with_nonce(
			 &st, "user", RFC_CNONCE, out, sizeof(out), &n),
		     0);
	CHECK_EQ_STR(out, RFC_CFIRST);
	CHECK_EQ_INT(auth_scram_client_final(&st, "pencil", RFC_SFIRST,
					     strlen(RFC_SFIRST), out,
					     sizeof(out), &n),
		     0);
	CHECK_EQ_STR(out, RFC_CFINAL);
	CHECK_EQ_INT(n, strlen(RFC_CFINAL));
	CHECK_EQ_INT(
	    auth_scram_client_verify(&st, RFC_SFINAL, strlen(RFC_SFINAL)), 0);
}

/* Public entry points end to end, with random salt and nonces. */
static int round_trip(const auth_scram_secret_t *secret, const char *password,
		      int *client_verify)
{
	auth_scram_client_t c;
	auth_scram_server_t s;
	char m1[CAP], m2[CAP], m3[CAP], m4[CAP];
	size_t n1, n2, n3, n4;
	int rc;

	*client_verify = 1;
	if (auth_scram_client_first(&c, m1, sizeof(m1), &n1) ||
	    strncmp(m1, "n,,n=,r=", 8) != 0 || n1 != 8 + 24)
		return -1;
	if (auth_scram_server_first(&s, secret, m1, n1, m2, sizeof(m2), &n2))
		return -2;
	if (auth_scram_client_final(&c, password, m2, n2, m3, sizeof(m3), &n3))
		return -3;
	rc = auth_scram_server_final(&s, m3, n3, m4, sizeof(m4), &n4);
	if (rc == 0)
		*client_verify = auth_scram_client_verify(&c, m4, n4);
	return rc;
}

static void test_round_trip(void)
{
	auth_scram_secret_t s;
	int cv;

	CHECK_EQ_INT(auth_scram_secret_from_password("s3cret pass", &s), 0);
	CHECK_EQ_INT(s.iterations, AUTH_SCRAM_ITERATIONS);
	CHECK_EQ_INT(s.salt_len, AUTH_SCRAM_SALT_LEN);
	CHECK_EQ_INT(round_trip(&s, "s3cret pass", &cv), 0);
	CHECK_EQ_INT(cv, 0);
	CHECK_EQ_INT(round_trip(&s, "s3cret pasS", &cv), TP_EAUTH);
	CHECK_EQ_INT(round_trip(&s, "", &cv), TP_EAUTH);
}

static void test_mock_secret(void)
{
	auth_scram_secret_t s;
	int cv;

	CHECK_EQ_INT(auth_scram_secret_mock(&s), 0);
	CHECK_EQ_INT(round_trip(&s, "anything", &cv), TP_EAUTH);
}

/* A real PostgreSQL verifier parses, matches its password and formats
 * back to the same text. */
static void test_pg_secret(void)
{
	auth_scram_secret_t s, d;
	char text[AUTH_SCRAM_SECRET_MAX];
	int cv;

	CHECK_EQ_INT(auth_scram_secret_parse(PG_SECRET, &s), 0);
	CHECK_EQ_INT(s.iterations, 4096);
	CHECK_EQ_INT(s.salt_len, 16);
	CHECK_EQ_INT(auth__scram_derive("pencil", 6, s.salt, s.salt_len,
					s.iterations, &d),
		     0);
	CHECK(auth_equal(d.stored_key, s.stored_key, 32));
	CHECK(auth_equal(d.server_key, s.server_key, 32));
	CHECK_EQ_INT(auth_scram_secret_format(&s, text, sizeof(text)), 0);
	CHECK_EQ_STR(text, PG_SECRET);
	CHECK_EQ_INT(round_trip(&s, "pencil", &cv), 0);
	CHECK_EQ_INT(cv, 0);
	CHECK_EQ_INT(auth_scram_secret_format(&s, text, 20), TP_ETOOBIG);
	CHECK_EQ_STR(text, "");
}

static void test_secret_parse_bad(void)
{
	static const char *bad[] = {
	    "",
	    "SCRAM-SHA-256$",
	    "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
	    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
	    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	    "scram-sha-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
	    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
	    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	    "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$"
	    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
	    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	    "SCRAM-SHA-256$100001:W22ZaJ0SNY7soEsUEjb6gQ==$"
	    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
	    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	    "SCRAM-SHA-256$-1:W22ZaJ0SNY7soEsUEjb6gQ==$"
	    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
	    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	    "SCRAM-SHA-256$4096:$"
	    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
	    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=$"
	    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
	    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	    /* StoredKey one byte short */
	    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
	    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4g==:"
	    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	    /* missing ServerKey */
	    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
	    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
	    /* trailing junk */
	    RFC_SECRET ":x",
	    RFC_SECRET " ",
	    /* '=' in the middle of base64 */
	    "SCRAM-SHA-256$4096:W22Z=J0SNY7soEsUEjb6gQ==$"
	    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
	    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	    /* a salt over 64 bytes */
	    "SCRAM-SHA-256$4096:"
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAA$"
	    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
	    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	};
	auth_scram_secret_t s;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = auth_scram_secret_parse(bad[i], &s);

		CHECK_EQ_INT(rc, TP_EINVAL);
		if (rc != TP_EINVAL)
			fprintf(stderr, "  accepted: %s\n", bad[i]);
	}
	CHECK_EQ_INT(auth_scram_secret_parse(NULL, &s), TP_EINVAL);
}

static void test_client_first_malformed(void)
{
	static const struct {
		const char *msg;
		int rc;
	} cases[] = {
	    {"", TP_EPROTO},
	    {"n", TP_EPROTO},
	    {"n,", TP_EPROTO},
	    {"n,,", TP_EPROTO},
	    {"n,,n=", TP_EPROTO},
	    {"n,,n=,", TP_EPROTO},
	    {"n,,n=,r", TP_EPROTO},
	    {"n,,n=,r=", TP_EPROTO},
	    {"n,,r=abc", TP_EPROTO},
	    {"x,,n=,r=abc", TP_EPROTO},
	    {"p=tls-server-end-point,,n=,r=abc", TP_EPROTO},
	    {"p,,n=,r=abc", TP_EPROTO},
	    {"n,a=admin,n=,r=abc", TP_EPROTO},
	    {"n,,m=ext,n=,r=abc", TP_EPROTO},
	    {"n,,n=,r=ab c", TP_EPROTO},
	    {"n,,n=,r=abc\x7f", TP_EPROTO},
	    {"n,,n=,r=abc,", TP_EPROTO},
	    {"n,,n=,r=abc,1=x", TP_EPROTO},
	    {"n,,n=,r=abc,x", TP_EPROTO},
	    {"n;,n=,r=abc", TP_EPROTO},
	    /* accepted forms */
	    {"n,,n=,r=abc", 0},
	    {"y,,n=,r=abc", 0},
	    {"n,,n=someone,r=abc", 0},
	    {"n,,n=,r=abc,x=ext,y=", 0},
	};
	auth_scram_server_t st;
	auth_scram_secret_t s;

	rfc_secret(&s);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc =
		    server_first(&st, &s, cases[i].msg, strlen(cases[i].msg));

		CHECK_EQ_INT(rc, cases[i].rc);
		if (rc != cases[i].rc)
			fprintf(stderr, "  case: %s\n", cases[i].msg);
	}
	/* an embedded NUL */
	CHECK_EQ_INT(server_first(&st, &s, "n,,n=,r=a\0c", 11), TP_EPROTO);
}

static void test_client_final_malformed(void)
{
#define N "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define P "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	static const struct {
		const char *msg;
		int rc;
	} cases[] = {
	    {"", TP_EPROTO},
	    {"c=biws", TP_EPROTO},
	    {"c=biws,r=" N, TP_EPROTO},
	    {"c=biws,r=" N ",", TP_EPROTO},
	    {"c=biws,r=" N ",p=", TP_EPROTO},
	    {"c=biws,r=" N ",p=dHzb", TP_EPROTO},
	    {"c=biws,r=" N ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",
	     TP_EPROTO},
	    {"c=biws,r=" N ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ==",
	     TP_EPROTO},
	    {"c=biws,r=" N ",p=dHzbZapWIk4jUhN*Ute9ytag9zjfMHgsqmmiz7AndVQ=",
	     TP_EPROTO},
	    {"c=biws,r=" N "," P ",x=1", TP_EPROTO},
	    {"c=biws,r=" N "x," P, TP_EPROTO},
	    {"c=biws,r=rOprNGfwEbeRWgbNEkqO," P, TP_EPROTO},
	    {"c=eSws,r=" N "," P, TP_EPROTO},
	    {"c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=" N "," P, TP_EPROTO},
	    {"c=biws,," P, TP_EPROTO},
	    {"r=" N ",c=biws," P, TP_EPROTO},
	    {"c=biws,r=" N ",1=x," P, TP_EPROTO},
	    /* an extension before the proof is allowed but is part of
	     * AuthMessage, so the RFC's proof no longer matches */
	    {"c=biws,r=" N ",x=1," P, TP_EAUTH},
	    {"c=biws,r=" N ",p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	     TP_EAUTH},
	    {"c=biws,r=" N "," P, 0},
	};
	auth_scram_server_t st;
	auth_scram_secret_t s;

	rfc_secret(&s);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc;

		CHECK_EQ_INT(
		    server_first(&st, &s, RFC_CFIRST, strlen(RFC_CFIRST)), 0);
		rc = server_final(&st, cases[i].msg, strlen(cases[i].msg));
		CHECK_EQ_INT(rc, cases[i].rc);
		if (rc != cases[i].rc)
			fprintf(stderr, "  case: %s\n", cases[i].msg);
	}
#undef N
#undef P
}

/* gs2 flag 'y' (client could bind, we offered no -PLUS) needs c=eSws. */
static void test_y_flag(void)
{
	auth_scram_server_t st;
	auth_scram_secret_t s;

	rfc_secret(&s);
	CHECK_EQ_INT(server_first(&st, &s, "y,,n=,r=abc", 11), 0);
	CHECK_EQ_INT(
	    server_final(&st,
			 "c=biws,r=abc" RFC_SNONCE
			 ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
			 strlen("c=biws,r=abc" RFC_SNONCE) + 47),
	    TP_EPROTO);
	CHECK_EQ_INT(server_first(&st, &s, "y,,n=,r=abc", 11), 0);
	CHECK_EQ_INT(
	    server_final(&st,
			 "c=eSws,r=abc" RFC_SNONCE
			 ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
			 strlen("c=eSws,r=abc" RFC_SNONCE) + 47),
	    TP_EAUTH);
}

/* Every prefix of valid messages: never a crash or an over-read, and
 * never accepted unless the prefix is itself a valid message. */
static void test_truncations(void)
{
	auth_scram_server_t st;
	auth_scram_secret_t s;
	size_t len = strlen(RFC_CFINAL);

	rfc_secret(&s);
	for (size_t i = 0; i < strlen(RFC_CFIRST); i++) {
		int rc = server_first(&st, &s, RFC_CFIRST, i);

		/* "n,,n=user,r=r" and longer are valid with a shorter nonce */
		CHECK(rc == TP_EPROTO || (rc == 0 && i >= 13));
	}
	for (size_t i = 0; i < len; i++) {
		CHECK_EQ_INT(
		    server_first(&st, &s, RFC_CFIRST, strlen(RFC_CFIRST)), 0);
		CHECK_EQ_INT(server_final(&st, RFC_CFINAL, i), TP_EPROTO);
	}
	for (size_t i = 0; i < strlen(RFC_SFIRST); i++) {
		auth_scram_client_t c;
		char out[CAP];
		size_t n;
		char *m = dup_exact(RFC_SFIRST, i);

		CHECK_EQ_INT(auth__scram_client_first_with_nonce(
				 &c, "user", RFC_CNONCE, out, sizeof(out), &n),
			     0);
		/* "...,i=4" is valid with fewer iterations: only that one
		 * may pass */
		if (i < strlen(RFC_SFIRST) - 3)
			CHECK_EQ_INT(auth_scram_client_final(&c, "pencil", m, i,
							     out, sizeof(out),
							     &n),
				     TP_EPROTO);
		free(m);
	}
}

static void test_oversize(void)
{
	char big[AUTH_SCRAM_MAX_MSG + 64];
	auth_scram_server_t st;
	auth_scram_secret_t s;
	char out[CAP];
	size_t n;

	rfc_secret(&s);
	/* the whole message */
	memset(big, 'a', sizeof(big));
	memcpy(big, "n,,n=,r=", 8);
	CHECK_EQ_INT(server_first(&st, &s, big, AUTH_SCRAM_MAX_MSG + 1),
		     TP_ETOOBIG);
	/* a nonce too long for the state, in a message of legal size */
	CHECK_EQ_INT(server_first(&st, &s, big, 8 + 240), TP_ETOOBIG);
	CHECK_EQ_INT(server_first(&st, &s, big, 8 + 200), 0);
	/* a user name too long for client_first_bare */
	memset(big, 'a', sizeof(big));
	memcpy(big, "n,,n=", 5);
	memcpy(big + 600, ",r=abc", 6);
	CHECK_EQ_INT(server_first(&st, &s, big, 606), TP_ETOOBIG);
	/* a client-final over the limit */
	CHECK_EQ_INT(server_first(&st, &s, RFC_CFIRST, strlen(RFC_CFIRST)), 0);
	memset(big, 'a', sizeof(big));
	CHECK_EQ_INT(server_final(&st, big, AUTH_SCRAM_MAX_MSG + 1),
		     TP_ETOOBIG);
	/* outputs that do not fit the caller's buffer */
	CHECK_EQ_INT(auth__scram_server_first_with_nonce(
			 &st, &s, RFC_CFIRST, strlen(RFC_CFIRST), RFC_SNONCE,
			 out, strlen(RFC_SFIRST), &n),
		     TP_ETOOBIG);
	CHECK_EQ_INT(auth__scram_server_first_with_nonce(
			 &st, &s, RFC_CFIRST, strlen(RFC_CFIRST), RFC_SNONCE,
			 out, sizeof(out), &n),
		     0);
	CHECK_EQ_INT(auth_scram_server_final(&st, RFC_CFINAL,
					     strlen(RFC_CFINAL), out,
					     strlen(RFC_SFINAL), &n),
		     TP_ETOOBIG);
}

static int client_against(const char *sfirst)
{
	auth_scram_client_t c;
	char out[CAP];
	size_t n;
	char *m = dup_exact(sfirst, strlen(sfirst));
	int rc = auth__scram_client_first_with_nonce(&c, "", "abc", out,
						     sizeof(out), &n);

	if (!rc)
		rc = auth_scram_client_final(&c, "pw", m, strlen(sfirst), out,
					     sizeof(out), &n);
	free(m);
	return rc;
}

/* The upstream's server-first is untrusted too, iterations above all. */
static void test_server_first_malformed(void)
{
	static const struct {
		const char *msg;
		int rc;
	} cases[] = {
	    {"r=abcd,s=c2FsdA==,i=0", TP_EPROTO},
	    {"r=abcd,s=c2FsdA==,i=100001", TP_EPROTO},
	    {"r=abcd,s=c2FsdA==,i=4294967297", TP_EPROTO},
	    {"r=abcd,s=c2FsdA==,i=-1", TP_EPROTO},
	    {"r=abcd,s=c2FsdA==,i=", TP_EPROTO},
	    {"r=abcd,s=c2FsdA==", TP_EPROTO},
	    {"r=abcd,i=4096", TP_EPROTO},
	    {"r=abc,s=c2FsdA==,i=4096", TP_EPROTO},  /* not extended */
	    {"r=xbcd,s=c2FsdA==,i=4096", TP_EPROTO}, /* not ours */
	    {"r=abcd,s=c2FsdA=,i=4096", TP_EPROTO},
	    {"r=abcd,s=,i=4096", TP_EPROTO},
	    {"m=x,r=abcd,s=c2FsdA==,i=4096", TP_EPROTO},
	    {"r=abc d,s=c2FsdA==,i=4096", TP_EPROTO},
	    {"r=abcd,s=c2FsdA==,i=4096,", TP_EPROTO},
	    {"e=other-error", TP_EPROTO},
	    {"r=abcd,s=c2FsdA==,i=4096", 0},
	    {"r=abcd,s=c2FsdA==,i=1,x=ext", 0},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = client_against(cases[i].msg);

		CHECK_EQ_INT(rc, cases[i].rc);
		if (rc != cases[i].rc)
			fprintf(stderr, "  case: %s\n", cases[i].msg);
	}
}

static void test_server_first_oversize(void)
{
	char msg[AUTH_SCRAM_MAX_MSG + 2];
	auth__scram_sfirst_t sf;

	/* a nonce longer than we keep, in a message of legal size */
	memset(msg, 'a', sizeof(msg));
	memcpy(msg, "r=", 2);
	memcpy(msg + 300, ",s=c2FsdA==,i=1", 15);
	CHECK_EQ_INT(auth__scram_parse_server_first(msg, 315, "a", 1, &sf),
		     TP_ETOOBIG);
	/* a salt over 64 bytes */
	memcpy(msg, "r=ab,s=", 7);
	memset(msg + 7, 'A', 96);
	memcpy(msg + 103, ",i=1", 4);
	CHECK_EQ_INT(auth__scram_parse_server_first(msg, 107, "a", 1, &sf),
		     TP_ETOOBIG);
	memset(msg, 'a', sizeof(msg));
	CHECK_EQ_INT(auth__scram_parse_server_first(msg, AUTH_SCRAM_MAX_MSG + 1,
						    "a", 1, &sf),
		     TP_ETOOBIG);
}

static void test_client_verify(void)
{
	static const struct {
		const char *msg;
		int rc;
	} cases[] = {
	    {RFC_SFINAL, 0},
	    {"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjm95G4=", TP_EAUTH},
	    {"e=invalid-proof", TP_EAUTH},
	    {"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4", TP_EPROTO},
	    {"v=", TP_EPROTO},
	    {"x=1", TP_EPROTO},
	    {"", TP_EPROTO},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		auth_scram_client_t c;
		char out[CAP];
		size_t n;
		size_t len = strlen(cases[i].msg);
		char *m = dup_exact(cases[i].msg, len);

		CHECK_EQ_INT(auth__scram_client_first_with_nonce(
				 &c, "user", RFC_CNONCE, out, sizeof(out), &n),
			     0);
		CHECK_EQ_INT(auth_scram_client_final(&c, "pencil", RFC_SFIRST,
						     strlen(RFC_SFIRST), out,
						     sizeof(out), &n),
			     0);
		CHECK_EQ_INT(auth_scram_client_verify(&c, m, len), cases[i].rc);
		/* the state is spent either way */
		CHECK_EQ_INT(auth_scram_client_verify(&c, RFC_SFINAL,
						      strlen(RFC_SFINAL)),
			     TP_EPROTO);
		free(m);
	}
}

static void test_out_of_order(void)
{
	auth_scram_server_t st;
	auth_scram_client_t c;
	char out[CAP];
	size_t n;

	memset(&st, 0, sizeof(st));
	CHECK_EQ_INT(auth_scram_server_final(&st, RFC_CFINAL,
					     strlen(RFC_CFINAL), out,
					     sizeof(out), &n),
		     TP_EPROTO);
	memset(&c, 0, sizeof(c));
	CHECK_EQ_INT(auth_scram_client_final(&c, "pencil", RFC_SFIRST,
					     strlen(RFC_SFIRST), out,
					     sizeof(out), &n),
		     TP_EPROTO);
	CHECK_EQ_INT(
	    auth_scram_client_verify(&c, RFC_SFINAL, strlen(RFC_SFINAL)),
	    TP_EPROTO);
	/* a failed first step leaves a state that only fails */
	CHECK_EQ_INT(server_first(&st, NULL, RFC_CFIRST, strlen(RFC_CFIRST)),
		     TP_EINVAL);
	CHECK_EQ_INT(server_final(&st, RFC_CFINAL, strlen(RFC_CFINAL)),
		     TP_EPROTO);
}

static void test_base64(void)
{
	unsigned char out[8];
	char enc[16];
	size_t n;

	CHECK_EQ_INT(auth__b64_decode("YQ==", 4, out, 1, &n), 0);
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_INT(out[0], 'a');
	CHECK_EQ_INT(auth__b64_decode("YWI=", 4, out, 2, &n), 0);
	CHECK_EQ_INT(n, 2);
	CHECK_EQ_INT(auth__b64_decode("YWJj", 4, out, 3, &n), 0);
	CHECK_EQ_INT(n, 3);
	CHECK_EQ_INT(auth__b64_decode("YWJjZA==", 8, out, 3, &n), TP_ETOOBIG);
	CHECK_EQ_INT(auth__b64_decode("YWJjZA==", 8, out, 4, &n), 0);
	CHECK_EQ_INT(memcmp(out, "abcd", 4), 0);
	CHECK_EQ_INT(auth__b64_decode("", 0, out, 0, &n), 0);
	CHECK_EQ_INT(n, 0);
	CHECK_EQ_INT(auth__b64_decode("YQ=", 3, out, 8, &n), TP_EPROTO);
	CHECK_EQ_INT(auth__b64_decode("Y===", 4, out, 8, &n), TP_EPROTO);
	CHECK_EQ_INT(auth__b64_decode("Y=Q=", 4, out, 8, &n), TP_EPROTO);
	CHECK_EQ_INT(auth__b64_decode(" YQ=", 4, out, 8, &n), TP_EPROTO);
	CHECK_EQ_INT(auth__b64_decode("YQ==YQ==", 8, out, 8, &n), TP_EPROTO);
	CHECK_EQ_INT(auth__b64_decode("YW-_", 4, out, 8, &n), TP_EPROTO);
	CHECK_EQ_INT(auth__b64_encode((const unsigned char *)"abcd", 4, enc,
				      sizeof(enc), &n),
		     0);
	CHECK_EQ_STR(enc, "YWJjZA==");
	CHECK_EQ_INT(n, 8);
	CHECK_EQ_INT(
	    auth__b64_encode((const unsigned char *)"abcd", 4, enc, 8, &n),
	    TP_ETOOBIG);
}

TP_TEST_MAIN(TP_TEST(test_rfc7677_derive), TP_TEST(test_rfc7677_server),
	     TP_TEST(test_rfc7677_client), TP_TEST(test_round_trip),
	     TP_TEST(test_mock_secret), TP_TEST(test_pg_secret),
	     TP_TEST(test_secret_parse_bad),
	     TP_TEST(test_client_first_malformed),
	     TP_TEST(test_client_final_malformed), TP_TEST(test_y_flag),
	     TP_TEST(test_truncations), TP_TEST(test_oversize),
	     TP_TEST(test_server_first_malformed),
	     TP_TEST(test_server_first_oversize), TP_TEST(test_client_verify),
	     TP_TEST(test_out_of_order), TP_TEST(test_base64))
