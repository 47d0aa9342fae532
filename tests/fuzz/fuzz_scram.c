/*
 * fuzz_scram.c - libFuzzer target for the SCRAM parsers: arbitrary bytes
 * as client-first and client-final into the server state machine, as
 * server-first and server-final into the client side, and as a stored
 * secret. Every message is copied into an exactly-sized heap buffer so any
 * read past its length is an ASan report.
 *
 * Input: one selector byte (mod 3: server, client, secret text), then the
 * message(s); for two-message modes the first '\n' separates them (no valid
 * SCRAM message holds one, so the separator costs no coverage).
 *
 * The server nonce is fixed (test hook) so that a client-final can echo it
 * and reach proof verification; the secret is the RFC 7677 example, so the
 * RFC's exchange makes a good seed: byte 0, its client-first, '\n', its
 * client-final (see RFC_CFIRST and RFC_CFINAL in tests/unit/test_scram.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/cred_internal.h"

#define SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define SECRET                                          \
	"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"  \
	"WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:" \
	"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

static char *dup_exact(const uint8_t *p, size_t n)
{
	char *d = malloc(n ? n : 1);

	if (d && n)
		memcpy(d, p, n);
	return d;
}

static void server(const auth_scram_secret_t *secret, const uint8_t *a,
		   size_t alen, const uint8_t *b, size_t blen)
{
	char out[AUTH_SCRAM_MAX_MSG + 1];
	auth_scram_server_t st;
	char *m1 = dup_exact(a, alen), *m2 = dup_exact(b, blen);
	size_t n;

	if (m1 && m2 &&
	    auth__scram_server_first_with_nonce(&st, secret, m1, alen, SNONCE,
						out, sizeof(out), &n) == 0) {
		if (n > AUTH_SCRAM_MAX_MSG || strlen(out) != n)
			abort();
		if (auth_scram_server_final(&st, m2, blen, out, sizeof(out),
					    &n) == 0 &&
		    strncmp(out, "v=", 2) != 0)
			abort();
	}
	free(m1);
	free(m2);
}

/* The client side without PBKDF2 (it would dominate every run): the
 * server-first parser, then server-final against a state made ready by
 * hand. */
static void client(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	char out[AUTH_SCRAM_MAX_MSG + 1];
	auth__scram_sfirst_t sf;
	auth_scram_client_t c;
	char *m1 = dup_exact(a, alen), *m2 = dup_exact(b, blen);
	size_t n;

	if (m1 &&
	    auth__scram_parse_server_first(m1, alen, "abc", 3, &sf) == 0) {
		if (sf.nonce_len <= 3 || sf.salt_len == 0 ||
		    sf.iterations < 1 ||
		    sf.iterations > AUTH_SCRAM_MAX_ITERATIONS)
			abort();
	}
	if (m2 && auth__scram_client_first_with_nonce(&c, "", "abc", out,
						      sizeof(out), &n) == 0) {
		c.step = AUTH__SCRAM_SENT_FINAL;
		(void)!auth_scram_client_verify(&c, m2, blen);
	}
	free(m1);
	free(m2);
}

/* What parses must format and parse back to the same secret (the text
 * may differ: leading zeros, non-canonical base64). */
static void secret_text(const uint8_t *a, size_t alen)
{
	char text[AUTH_SCRAM_SECRET_MAX];
	auth_scram_secret_t s, again;
	char *t = malloc(alen + 1);

	if (!t)
		return;
	memcpy(t, a, alen);
	t[alen] = '\0';
	if (auth_scram_secret_parse(t, &s) == 0 &&
	    (auth_scram_secret_format(&s, text, sizeof(text)) != 0 ||
	     auth_scram_secret_parse(text, &again) != 0 ||
	     memcmp(&s, &again, sizeof(s)) != 0))
		abort();
	free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static auth_scram_secret_t secret;
	static bool ready;
	const uint8_t *sep, *b;
	size_t alen, blen;

	if (!ready) {
		if (auth_scram_secret_parse(SECRET, &secret) != 0)
			abort();
		ready = true;
	}
	if (size < 1)
		return 0;
	sep = memchr(data + 1, '\n', size - 1);
	alen = sep ? (size_t)(sep - data - 1) : size - 1;
	b = sep ? sep + 1 : data + size;
	blen = (size_t)(data + size - b);
	switch (data[0] % 3) {
	case 0:
		server(&secret, data + 1, alen, b, blen);
		break;
	case 1:
		client(data + 1, alen, b, blen);
		break;
	default:
		secret_text(data + 1, size - 1);
		break;
	}
	return 0;
}
