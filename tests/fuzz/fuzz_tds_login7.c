/*
 * fuzz_tds_login7.c - libFuzzer target for the LOGIN7 parser and builder
 * and the UTF-16 conversions.
 *
 * Input: a LOGIN7 payload as a client sends it (all packets' payloads
 * joined), in a heap block of exactly its size so ASan sees any read past
 * the end. Checked invariants (a violation traps):
 * - every field the parser returns lies inside the record (Length), and
 *   the feature block walks to its end without error;
 * - each string converts to UTF-8 into a buffer of exactly the size it
 *   needs, and refuses one byte less (exact heap blocks again);
 * - what parses, built again by tds_login7_build() from its decoded
 *   strings and FEDAUTH token, parses to the same strings, password,
 *   token and features; the builder refuses smaller caps;
 * - UTF-8 that converts to UTF-16 converts back to the same bytes.
 *
 * Not here: packets (fuzz_tds_packets.c), tokens (fuzz_tds_tokens.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/tds/tds.h"

#define REQUIRE(c)                        \
	do {                              \
		if (!(c))                 \
			__builtin_trap(); \
	} while (0)

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		abort();
	return p;
}

static void require_in(const tds_str_t *s, const uint8_t *p, size_t rec)
{
	if (s->len == 0)
		return;
	REQUIRE(s->p >= p && s->p + s->len <= p + rec);
}

/* A string as UTF-8 in a malloc'd block of exactly the size needed, or
 * NULL when it is not valid UTF-16 (or holds a NUL). */
static char *utf8_of(const tds_str_t *s)
{
	size_t cap = 3 * (s->len / 2) + 1, n;
	char *big = xmalloc(cap), *out;
	int rc = tds_utf16_to_utf8(s->p, s->len, big, cap, &n);

	if (rc != 0) {
		REQUIRE(rc == TP_EPROTO);
		free(big);
		return NULL;
	}
	REQUIRE(strlen(big) == n);
	out = xmalloc(n + 1);
	REQUIRE(tds_utf16_to_utf8(s->p, s->len, out, n + 1, NULL) == 0);
	REQUIRE(memcmp(out, big, n + 1) == 0);
	REQUIRE(tds_utf16_to_utf8(s->p, s->len, out, n, NULL) == TP_ETOOBIG);
	free(big);
	return out;
}

typedef struct decoded {
	char *s[8]; /* host user app server library language database pw */
	char *token;
	size_t token_len;
	bool echo, has_nonce, utf8;
	uint8_t nonce[32];
	bool ok;
} decoded_t;

/* The FEDAUTH SECURITYTOKEN feature, as tokenpool builds it: options,
 * u32 byte length, UTF-16LE token, optional 32-byte nonce. */
static void decode_fedauth(const tds_feature_t *f, decoded_t *d)
{
	uint32_t n;
	tds_str_t t;

	if (f->len < 5 || (f->data[0] >> 1) != TDS_FEDAUTH_LIB_SECURITYTOKEN)
		return;
	n = (uint32_t)f->data[1] | (uint32_t)f->data[2] << 8 |
	    (uint32_t)f->data[3] << 16 | (uint32_t)f->data[4] << 24;
	if (n == 0 || n > f->len - 5 ||
	    (f->len - 5 - n != 0 && f->len - 5 - n != 32))
		return;
	t.p = f->data + 5;
	t.len = n;
	d->token = utf8_of(&t);
	if (!d->token || !d->token[0]) {
		free(d->token);
		d->token = NULL;
		return;
	}
	d->token_len = strlen(d->token);
	d->echo = f->data[0] & 1;
	d->has_nonce = f->len - 5 - n == 32;
	if (d->has_nonce)
		memcpy(d->nonce, f->data + 5 + n, 32);
}

static void decode(const tds_login7_t *l, decoded_t *d)
{
	const tds_str_t *f[7] = {&l->host,    &l->user,	   &l->app,
				 &l->server,  &l->library, &l->language,
				 &l->database};
	tds_feature_t feat;
	size_t pwlen, pos = 0;
	char pw[3 * 128 + 1];
	int rc;

	memset(d, 0, sizeof(*d));
	d->ok = true;
	for (int i = 0; i < 7; i++) {
		d->s[i] = utf8_of(f[i]);
		d->ok = d->ok && d->s[i];
	}
	rc = tds_login7_password(l, pw, sizeof(pw), &pwlen);
	REQUIRE(rc == 0 || rc == TP_EPROTO);
	if (rc == 0) {
		REQUIRE(strlen(pw) == pwlen);
		d->s[7] = strdup(pw);
	}
	d->ok = d->ok && d->s[7];
	while ((rc = tds_feature_next(l->features, l->features_len, &pos,
				      &feat)) == 1) {
		REQUIRE(feat.data >= l->features &&
			feat.data + feat.len <= l->features + l->features_len);
		if (feat.id == TDS_FEAT_FEDAUTH && !d->token)
			decode_fedauth(&feat, d);
		if (feat.id == TDS_FEAT_UTF8_SUPPORT)
			d->utf8 = true;
	}
	REQUIRE(rc == 0 && pos == l->features_len);
}

static void free_decoded(decoded_t *d)
{
	for (int i = 0; i < 8; i++)
		free(d->s[i]);
	free(d->token);
}

static bool same_str(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

/* Build from what was decoded; parse and decode again; compare. */
static void rebuild(const tds_login7_t *l, const decoded_t *d)
{
	tds_login7_req_t r = {
	    .tds_version = l->tds_version,
	    .packet_size = l->packet_size,
	    .client_prog_ver = l->client_prog_ver,
	    .client_pid = l->client_pid,
	    .lcid = l->lcid,
	    .host = d->s[0],
	    .user = d->s[1],
	    .app = d->s[2],
	    .server = d->s[3],
	    .library = d->s[4],
	    .language = d->s[5],
	    .database = d->s[6],
	    .password = d->s[7],
	    .token = d->token,
	    .token_len = d->token_len,
	    .fedauth_echo = d->echo,
	    .nonce = d->has_nonce ? d->nonce : NULL,
	    .utf8_support = d->utf8,
	};
	size_t bound = tds_login7_bound(&r), n, cap;
	uint8_t *out = xmalloc(bound), *small;
	tds_login7_t l2;
	decoded_t d2;

	n = tds_login7_build(out, bound, &r);
	REQUIRE(n > 0 && n <= bound);
	REQUIRE(tds_login7_parse(out, n, &l2) == 0);
	REQUIRE(l2.length == n);
	decode(&l2, &d2);
	REQUIRE(d2.ok);
	for (int i = 0; i < 8; i++)
		REQUIRE(same_str(d->s[i], d2.s[i]));
	REQUIRE(same_str(d->token, d2.token) && d->echo == d2.echo);
	REQUIRE(d->has_nonce == d2.has_nonce);
	REQUIRE(!d->has_nonce || memcmp(d->nonce, d2.nonce, 32) == 0);
	REQUIRE(d->utf8 == d2.utf8);
	cap = n ? (n * 7) / 8 : 0;
	small = xmalloc(cap);
	REQUIRE(tds_login7_build(small, cap, &r) == 0);
	free(small);
	free_decoded(&d2);
	free(out);
}

static void check_utf8(const uint8_t *data, size_t size)
{
	size_t units, n;
	uint8_t *u16;
	char *back;
	long w;

	if (memchr(data, 0, size))
		return; /* NUL is valid UTF-8 but not in a name */
	u16 = xmalloc(4 * size);
	w = tds_utf8_to_utf16((const char *)data, size, u16, 4 * size, &units);
	if (w >= 0) {
		REQUIRE((size_t)w == 2 * units && (size_t)w <= 2 * size);
		back = xmalloc(size + 1);
		REQUIRE(tds_utf16_to_utf8(u16, (size_t)w, back, size + 1, &n) ==
			0);
		REQUIRE(n == size && memcmp(back, data, size) == 0);
		free(back);
	}
	free(u16);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *p = xmalloc(size);
	tds_login7_t l;
	decoded_t d;

	memcpy(p, data, size);
	check_utf8(p, size);
	if (tds_login7_parse(p, size, &l) == 0) {
		size_t rec = l.length;
		tds_feature_t f;

		REQUIRE(rec >= TDS_LOGIN7_FIXED && rec <= size);
		require_in(&l.host, p, rec);
		require_in(&l.user, p, rec);
		require_in(&l.password, p, rec);
		require_in(&l.app, p, rec);
		require_in(&l.server, p, rec);
		require_in(&l.library, p, rec);
		require_in(&l.language, p, rec);
		require_in(&l.database, p, rec);
		require_in(&l.attach_db, p, rec);
		require_in(&l.change_password, p, rec);
		require_in(&l.sspi, p, rec);
		if (l.features_len)
			REQUIRE(l.features >= p &&
				l.features + l.features_len < p + rec);
		(void)tds_login7_feature(&l, TDS_FEAT_FEDAUTH, &f);
		decode(&l, &d);
		if (d.ok)
			rebuild(&l, &d);
		free_decoded(&d);
	}
	free(p);
	return 0;
}
