/*
 * test_reload_compare.c - what reload treats as "the same upstream"
 * (conf_server_equal: unchanged pools keep their servers) and the metrics
 * histogram's bucketing.
 */
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "proxy/tp.h"
#include "tests/unit/tp_test.h"

static conf_t *load(const char *json)
{
	conf_t *c = NULL;
	char err[512];

	if (conf_load_string(json, &c, err, sizeof(err)) != 0) {
		fprintf(stderr, "load failed: %s\n", err);
		return NULL;
	}
	return c;
}

#define POOL(server_extra, pool_extra)                                         \
	"{\"identity\":{\"source\":\"imds\"},\"pools\":[{\"name\":\"orders\"," \
	"\"protocol\":\"postgres\",\"listen\":\"127.0.0.1:6432\",\"server\":{" \
	"\"host\":\"h\",\"database\":\"d\",\"user\":\"u\"" server_extra "},"   \
	"\"clients\":[{\"user\":\"app\",\"password\":\"x\"}]" pool_extra "}]}"

static bool same(const char *a, const char *b)
{
	conf_t *ca = load(a), *cb = load(b);
	bool r = false;

	CHECK(ca && cb);
	if (ca && cb)
		r = conf_server_equal(ca, &ca->pools[0], cb, &cb->pools[0]);
	conf_free(ca);
	conf_free(cb);
	return r;
}

static void test_limits_and_clients_are_not_server_changes(void)
{
	CHECK(same(POOL("", ""), POOL("", "")));
	CHECK(same(POOL("", ""), POOL("", ",\"pool\":{\"size\":3}")));
	CHECK(same(POOL("", ""),
		   POOL("", ",\"client_tls\":{\"mode\":\"disable\"}")));
}

static void test_server_settings_are_changes(void)
{
	CHECK(!same(POOL("", ""), POOL(",\"port\":5433", "")));
	CHECK(!same(POOL("", ""), POOL(",\"scope\":\"api://x/.default\"", "")));
	CHECK(!same(POOL("", ""),
		    POOL(",\"tls\":{\"server_name\":\"other\"}", "")));
	CHECK(!same(POOL("", ""), POOL(",\"identity\":{\"source\":\"imds\","
				       "\"client_id\":\"c1\"}",
				       "")));
	CHECK(!same(POOL(",\"identity\":{\"source\":\"imds\",\"client_id\":"
			 "\"c1\"}",
			 ""),
		    POOL(",\"identity\":{\"source\":\"imds\",\"client_id\":"
			 "\"c2\"}",
			 "")));
}

static void test_client_tls_equal(void)
{
	conf_client_tls_t a = {.mode = CONF_CTLS_ALLOW}, b = a;

	CHECK(conf_client_tls_equal(&a, &b));
	b.cert_file = "x.pem";
	CHECK(!conf_client_tls_equal(&a, &b));
	b = a;
	b.mode = CONF_CTLS_REQUIRE;
	CHECK(!conf_client_tls_equal(&a, &b));
}

static void test_histogram_buckets(void)
{
	tp_hist_t h;

	memset(&h, 0, sizeof(h));
	tp_hist_observe(&h, 0);	     /* first bucket (le 0.001) */
	tp_hist_observe(&h, 0.001);  /* on the bound: same bucket */
	tp_hist_observe(&h, 0.002);  /* le 0.005 */
	tp_hist_observe(&h, 1000.0); /* +Inf */
	CHECK_EQ_INT(h.bucket[0], 2);
	CHECK_EQ_INT(h.bucket[1], 1);
	CHECK_EQ_INT(h.bucket[TP_HIST_N], 1);
	CHECK_EQ_INT(h.count, 4);
	CHECK(h.sum > 1000.0 && h.sum < 1000.01);
}

TP_TEST_MAIN(TP_TEST(test_limits_and_clients_are_not_server_changes),
	     TP_TEST(test_server_settings_are_changes),
	     TP_TEST(test_client_tls_equal), TP_TEST(test_histogram_buckets))
