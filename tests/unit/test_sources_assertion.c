/*
 * test_sources_assertion.c - the client assertion of the certificate flow
 * (source_assertion.c): base64url, the header (alg, typ, and x5t /
 * x5t#S256 checked against what `openssl x509 -fingerprint` says), the
 * payload (aud, iss = sub = client id, jti, nbf, iat, exp = +10 min), an
 * RS256 signature that verifies with the certificate's public key, and
 * the PEM loader's one-line refusals (missing file, EC key, a key that is
 * not the certificate's), none of which quotes the key.
 *
 * Keys and certificates are made with the openssl CLI in a temporary
 * directory, removed at the end.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "auth/internal.h"
#include "tests/unit/tp_test.h"

#define CLIENT "b3d5f7a9-1c3e-4a5b-8d7f-9b1d3f5a7c81"
#define AUD    "https://login.microsoftonline.com/t/oauth2/v2.0/token"
#define NOW    1795298400.0

static char dir[] = "/tmp/tp-test-assertion-XXXXXX";

static char *path_of(const char *name)
{
	static char buf[4][256];
	static int i;
	char *p = buf[i++ % 4];

	snprintf(p, 256, "%s/%s", dir, name);
	return p;
}

static void run(const char *cmd)
{
	int rc = system(cmd);

	CHECK_EQ_INT(rc, 0);
	if (rc != 0)
		fprintf(stderr, "  command failed: %s\n", cmd);
}

/* name.pem = certificate then key (key then certificate with key_first);
 * name.crt and name.key stay too. */
static void make_pem(const char *name, const char *newkey, bool key_first)
{
	char cmd[1024];
	const char *first = key_first ? "key" : "crt";
	const char *second = key_first ? "crt" : "key";

	snprintf(cmd, sizeof(cmd),
		 "cd %s && openssl req -x509 -new -newkey %s -nodes -sha256 "
		 "-days 2 -subj /CN=%s -keyout %s.key -out %s.crt "
		 ">/dev/null 2>&1 && cat %s.%s %s.%s > %s.pem",
		 dir, newkey, name, name, name, name, first, name, second,
		 name);
	run(cmd);
}

/* base64url decode (no padding) into a NUL-terminated malloc'd buffer. */
static char *b64url_decode(const char *in, size_t len, size_t *outlen)
{
	size_t pad = (4 - len % 4) % 4, n;
	char *b64 = malloc(len + pad + 1);
	unsigned char *out = malloc(len + 4);
	int got;

	for (size_t i = 0; i < len; i++)
		b64[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	memset(b64 + len, '=', pad);
	got = EVP_DecodeBlock(out, (unsigned char *)b64, (int)(len + pad));
	free(b64);
	if (got < 0) {
		free(out);
		return NULL;
	}
	n = (size_t)got - pad;
	out[n] = '\0';
	*outlen = n;
	return (char *)out;
}

/* "SHA256 Fingerprint=AB:CD:..." from the openssl CLI, as base64url. */
static char *cli_thumbprint(const char *pem, const char *md)
{
	char cmd[512], line[512], *eq;
	unsigned char bin[64];
	size_t n = 0;
	FILE *p;

	snprintf(cmd, sizeof(cmd),
		 "openssl x509 -in %s -noout -fingerprint -%s", pem, md);
	p = popen(cmd, "r");
	if (!p || !fgets(line, sizeof(line), p)) {
		if (p)
			pclose(p);
		return NULL;
	}
	pclose(p);
	eq = strchr(line, '=');
	for (char *s = eq ? eq + 1 : line; s[0] && s[1] && n < sizeof(bin);
	     s += 3)
		bin[n++] =
		    (unsigned char)strtol((char[]){s[0], s[1], 0}, NULL, 16);
	return auth_b64url(bin, n);
}

static void test_b64url(void)
{
	char *s;

	CHECK_EQ_STR(s = auth_b64url((const unsigned char *)"", 0), "");
	free(s);
	CHECK_EQ_STR(s = auth_b64url((const unsigned char *)"f", 1), "Zg");
	free(s);
	CHECK_EQ_STR(s = auth_b64url((const unsigned char *)"fo", 2), "Zm8");
	free(s);
	CHECK_EQ_STR(s = auth_b64url((const unsigned char *)"\xfb\xff", 2),
		     "-_8");
	free(s);
}

static cJSON *part_json(const char *start, size_t len)
{
	size_t n;
	char *text = b64url_decode(start, len, &n);
	cJSON *j = text ? cJSON_Parse(text) : NULL;

	free(text);
	return j;
}

static void check_header(cJSON *h, const char *pem)
{
	char *s1 = cli_thumbprint(pem, "sha1");
	char *s256 = cli_thumbprint(pem, "sha256");

	CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(h, "alg")),
		     "RS256");
	CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(h, "typ")),
		     "JWT");
	CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(h, "x5t")), s1);
	CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(h, "x5t#S256")),
		     s256);
	free(s1);
	free(s256);
}

static void check_payload(cJSON *p)
{
	const char *jti = cJSON_GetStringValue(cJSON_GetObjectItem(p, "jti"));

	CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(p, "aud")), AUD);
	CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(p, "iss")),
		     CLIENT);
	CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(p, "sub")),
		     CLIENT);
	CHECK_EQ_STR(jti, "jti-1");
	CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(p, "nbf")) == NOW);
	CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(p, "iat")) == NOW);
	CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(p, "exp")) == NOW + 600);
}

static void check_signature(const char *jwt, X509 *cert)
{
	const char *dot2 = strrchr(jwt, '.');
	size_t siglen;
	char *sig = b64url_decode(dot2 + 1, strlen(dot2 + 1), &siglen);
	EVP_PKEY *pub = X509_get0_pubkey(cert);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	CHECK(sig && siglen == 256); /* RSA 2048 */
	CHECK_EQ_INT(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub),
		     1);
	CHECK_EQ_INT(EVP_DigestVerify(ctx, (unsigned char *)sig, siglen,
				      (const unsigned char *)jwt,
				      (size_t)(dot2 - jwt)),
		     1);
	EVP_MD_CTX_free(ctx);
	free(sig);
}

static void build_and_check(const char *pem)
{
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	char why[256] = "", *jwt = NULL;
	const char *dot1, *dot2;
	cJSON *h, *p;

	CHECK_EQ_INT(auth_pem_load(pem, NULL, &cert, &key, why, sizeof(why)),
		     0);
	CHECK_EQ_INT(auth_assertion_build(cert, key, CLIENT, AUD, "jti-1",
					  NOW + 0.7, &jwt, why, sizeof(why)),
		     0);
	if (!jwt)
		goto out;
	CHECK(strcspn(jwt, "+/= ") == strlen(jwt)); /* base64url, no pad */
	dot1 = strchr(jwt, '.');
	dot2 = strrchr(jwt, '.');
	CHECK(dot1 && dot2 && dot1 != dot2);
	h = part_json(jwt, (size_t)(dot1 - jwt));
	p = part_json(dot1 + 1, (size_t)(dot2 - dot1 - 1));
	CHECK(h && p);
	check_header(h, pem);
	check_payload(p);
	check_signature(jwt, cert);
	cJSON_Delete(h);
	cJSON_Delete(p);
out:
	free(jwt);
	X509_free(cert);
	EVP_PKEY_free(key);
}

static void test_assertion_fields_and_signature(void)
{
	build_and_check(path_of("rsa.pem"));
	build_and_check(path_of("keyfirst.pem")); /* key before cert */
}

/* Refusals name the file, say what is wrong, never quote the key. */
static void check_refused(const char *pem, const char *part)
{
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	char why[320] = "";

	CHECK_EQ_INT(auth_pem_load(pem, NULL, &cert, &key, why, sizeof(why)),
		     TP_EINVAL);
	CHECK(cert == NULL && key == NULL);
	CHECK(strstr(why, pem) != NULL);
	CHECK(strstr(why, part) != NULL);
	CHECK(strstr(why, "BEGIN") == NULL && strstr(why, "MII") == NULL);
	if (!strstr(why, part))
		fprintf(stderr, "  why: %s\n", why);
}

static void test_pem_refusals(void)
{
	check_refused(path_of("missing.pem"), "cannot read certificate file");
	check_refused(path_of("missing.pem"), "No such file or directory");
	check_refused(path_of("ec.pem"), "the private key is EC, Entra client "
					 "assertions need RSA");
	check_refused(path_of("mismatch.pem"),
		      "the private key does not belong to the certificate");
	check_refused(path_of("rsa.crt"), "holds no readable PEM private key");
	check_refused(path_of("rsa.key"), "holds no PEM certificate");
	check_refused(dir, "not a regular file");
}

static void test_non_rsa_key_refused_by_builder(void)
{
	X509 *cert = NULL;
	EVP_PKEY *key = NULL, *ec = NULL;
	char why[256] = "", *jwt = NULL;
	FILE *f = fopen(path_of("ec.key"), "r");

	CHECK(f != NULL);
	if (f) {
		ec = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	}
	CHECK_EQ_INT(auth_pem_load(path_of("rsa.pem"), NULL, &cert, &key, why,
				   sizeof(why)),
		     0);
	CHECK_EQ_INT(auth_assertion_build(cert, ec, CLIENT, AUD, "j", NOW, &jwt,
					  why, sizeof(why)),
		     TP_EINVAL);
	CHECK(jwt == NULL);
	CHECK_EQ_STR(why, "the private key is not RSA");
	EVP_PKEY_free(ec);
	EVP_PKEY_free(key);
	X509_free(cert);
}

static void test_setup(void)
{
	char cmd[600];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		exit(1);
	}
	make_pem("rsa", "rsa:2048", false);
	make_pem("keyfirst", "rsa:2048", true);
	make_pem("other", "rsa:2048", false);
	snprintf(cmd, sizeof(cmd),
		 "openssl ecparam -name prime256v1 -out %s/p256", dir);
	run(cmd);
	snprintf(cmd, sizeof(cmd), "ec:%s/p256", dir);
	make_pem("ec", cmd, false);
	/* the certificate of one pair, the key of another */
	snprintf(cmd, sizeof(cmd),
		 "cd %s && cat rsa.crt other.key > "
		 "mismatch.pem",
		 dir);
	run(cmd);
}

static void test_teardown(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

TP_TEST_MAIN(TP_TEST(test_setup), TP_TEST(test_b64url),
	     TP_TEST(test_assertion_fields_and_signature),
	     TP_TEST(test_pem_refusals),
	     TP_TEST(test_non_rsa_key_refused_by_builder),
	     TP_TEST(test_teardown))
