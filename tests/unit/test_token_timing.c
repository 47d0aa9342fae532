/*
 * test_token_timing.c - the token cache's pure timing decisions: when to
 * refresh, how long to back off, which failures are worth a retry, and how
 * expiry fields are read. No loop, no network.
 *
 * Not here: the cache itself on a real loop (test_token_cache.c).
 */
#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "auth/auth.h"
#include "auth/internal.h"
#include "tests/unit/tp_test.h"

#define NEAR(a, b) (fabs((a) - (b)) < 1e-6)

static const double T0 = 1795000000.0; /* an arbitrary "now" */

static void test_refresh_one_hour_token_at_55_min(void)
{
	CHECK(NEAR(auth_refresh_delay(T0, T0, T0 + 3600), 55 * 60));
	/* Asked again 10 minutes in: 45 minutes to go. */
	CHECK(NEAR(auth_refresh_delay(T0 + 600, T0, T0 + 3600), 45 * 60));
}

static void test_refresh_day_token_at_half_life(void)
{
	CHECK(NEAR(auth_refresh_delay(T0, T0, T0 + 86400), 12 * 3600));
	/* IMDS often serves 24 h tokens; half life wins over 5 min before. */
	CHECK(NEAR(auth_refresh_delay(T0 + 3600, T0, T0 + 86400), 11 * 3600));
}

static void test_refresh_two_hour_boundary(void)
{
	/* Exactly 2 h: half life (1 h) beats 5 minutes before (1 h 55). */
	CHECK(NEAR(auth_refresh_delay(T0, T0, T0 + 7200), 3600));
	/* Just under 2 h: 5 minutes before expiry. */
	CHECK(NEAR(auth_refresh_delay(T0, T0, T0 + 7199), 7199 - 300));
}

static void test_refresh_nearly_expired_now(void)
{
	CHECK(NEAR(auth_refresh_delay(T0, T0 - 3500, T0 + 100), 0));
	CHECK(NEAR(auth_refresh_delay(T0, T0 - 3600, T0 - 5), 0));
	CHECK(NEAR(auth_refresh_delay(T0, T0, T0 + 300), 0));
	CHECK(NEAR(auth_refresh_delay(T0, T0, NAN), 0)); /* never negative */
}

static void test_refresh_after_fetch_floor(void)
{
	/* Normal tokens: the rule above, unchanged. */
	CHECK(NEAR(auth_refresh_after_fetch(T0, T0 + 3600), 3300));
	CHECK(NEAR(auth_refresh_after_fetch(T0, T0 + 86400), 43200));
	/* Short tokens: not a tight loop. */
	CHECK(NEAR(auth_refresh_after_fetch(T0, T0 + 240), 60));
	CHECK(NEAR(auth_refresh_after_fetch(T0, T0 + 60), 45));
	CHECK(NEAR(auth_refresh_after_fetch(T0, T0 + 4), 3));
	CHECK(NEAR(auth_refresh_after_fetch(T0, T0 + 10), 7.5));
	CHECK(NEAR(auth_refresh_after_fetch(T0, T0 - 1), 0));
}

static void test_backoff_grows_and_caps(void)
{
	CHECK(NEAR(auth_retry_delay(1, 0, 0), 1));
	CHECK(NEAR(auth_retry_delay(2, 0, 0), 2));
	CHECK(NEAR(auth_retry_delay(3, 0, 0), 4));
	CHECK(NEAR(auth_retry_delay(6, 0, 0), 32));
	CHECK(NEAR(auth_retry_delay(7, 0, 0), 60));
	CHECK(NEAR(auth_retry_delay(1000, 0, 0), 60));
	CHECK(NEAR(auth_retry_delay(0, 0, 0), 1));
	CHECK(NEAR(auth_retry_delay(-3, 0, 0), 1));
	for (int a = 1; a < 12; a++)
		CHECK(auth_retry_delay(a + 1, 0, 0) >=
		      auth_retry_delay(a, 0, 0));
}

static void test_backoff_jitter_bounds(void)
{
	for (int a = 1; a <= 10; a++) {
		double hi = auth_retry_delay(a, 0, 0);

		for (double r = 0; r < 1; r += 0.125) {
			double d = auth_retry_delay(a, 0, r);

			CHECK(d <= hi && d > 0.75 * hi - 1e-9);
		}
		CHECK(auth_retry_delay(a, 0, 0.999999) <= 60);
	}
	CHECK(NEAR(auth_retry_delay(3, 0, 0.5), 4 * 0.875));
	/* Out-of-range randomness is treated as none. */
	CHECK(NEAR(auth_retry_delay(3, 0, 1.5), 4));
	CHECK(NEAR(auth_retry_delay(3, 0, NAN), 4));
}

static void test_backoff_retry_after_floor(void)
{
	CHECK(NEAR(auth_retry_delay(1, 30, 0.5), 30));
	CHECK(NEAR(auth_retry_delay(7, 120, 0), 120)); /* above the cap */
	CHECK(NEAR(auth_retry_delay(3, 0.5, 0), 4));   /* a floor only */
	CHECK(NEAR(auth_retry_delay(1, 1e9, 0), 300)); /* clamped */
	CHECK(NEAR(auth_retry_delay(1, -5, 0), 1));
}

static void test_retryable_status_table(void)
{
	static const long yes[] = {0,	404, 408, 410, 429,
				   500, 502, 503, 504, 599};
	static const long no[] = {400, 401, 403, 405, 409, 411,
				  422, 499, 600, 301, 200};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		CHECK(auth_http_retryable(yes[i]));
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		CHECK(!auth_http_retryable(no[i]));
}

static double utc(int y, int mo, int d, int h, int mi, int s)
{
	struct tm tm = {.tm_year = y - 1900,
			.tm_mon = mo - 1,
			.tm_mday = d,
			.tm_hour = h,
			.tm_min = mi,
			.tm_sec = s};

	return (double)timegm(&tm);
}

static void test_expires_on_formats(void)
{
	double v = 0;

	CHECK_EQ_INT(auth_parse_expires_on("1795298400", &v), 0);
	CHECK(NEAR(v, 1795298400));
	CHECK_EQ_INT(auth_parse_expires_on("11/21/2026 10:00:00 PM +00:00", &v),
		     0);
	CHECK(NEAR(v, utc(2026, 11, 21, 22, 0, 0)));
	CHECK_EQ_INT(auth_parse_expires_on("1/2/2026 12:05:09 AM +00:00", &v),
		     0);
	CHECK(NEAR(v, utc(2026, 1, 2, 0, 5, 9)));
	CHECK_EQ_INT(auth_parse_expires_on("1/2/2026 12:05:09 PM +02:00", &v),
		     0);
	CHECK(NEAR(v, utc(2026, 1, 2, 10, 5, 9)));
	CHECK_EQ_INT(auth_parse_expires_on("6/30/2026 11:00:00 pm -05:30", &v),
		     0);
	CHECK(NEAR(v, utc(2026, 7, 1, 4, 30, 0)));
	CHECK_EQ_INT(auth_parse_expires_on("06/30/2026 23:00:00", &v), 0);
	CHECK(NEAR(v, utc(2026, 6, 30, 23, 0, 0)));

	CHECK_EQ_INT(auth_parse_expires_on("", &v), TP_EINVAL);
	CHECK_EQ_INT(auth_parse_expires_on("-5", &v), TP_EINVAL);
	CHECK_EQ_INT(auth_parse_expires_on("soon", &v), TP_EINVAL);
	CHECK_EQ_INT(auth_parse_expires_on("2/31/2026 10:00:00 PM", &v),
		     TP_EINVAL);
	CHECK_EQ_INT(auth_parse_expires_on("13/1/2026 10:00:00 PM", &v),
		     TP_EINVAL);
	CHECK_EQ_INT(auth_parse_expires_on("1/1/2026 13:00:00 PM", &v),
		     TP_EINVAL);
	CHECK_EQ_INT(auth_parse_expires_on("1/1/2026 10:00:00 PM +0", &v),
		     TP_EINVAL);
	CHECK_EQ_INT(auth_parse_expires_on("1/1/2026 10:00:00 PM junk", &v),
		     TP_EINVAL);
}

static void test_token_response_fields(void)
{
	const double now = T0;
	auth_fetch_result_t res = {0};
	char why[128];
	static const char imds[] =
	    "{\"access_token\":\"a.b.c\",\"expires_in\":\"3599\","
	    "\"expires_on\":\"1795003599\",\"token_type\":\"Bearer\"}";
	static const char entra[] =
	    "{\"token_type\":\"Bearer\",\"expires_in\":3599,"
	    "\"access_token\":\"x.y.z\"}";

	CHECK_EQ_INT(auth_parse_token_response(imds, sizeof(imds) - 1, now,
					       &res, why, sizeof(why)),
		     0);
	CHECK_EQ_STR(res.token, "a.b.c");
	CHECK_EQ_INT(res.len, 5);
	CHECK(NEAR(res.expires_on, 1795003599));
	free(res.token);

	memset(&res, 0, sizeof(res));
	CHECK_EQ_INT(auth_parse_token_response(entra, sizeof(entra) - 1, now,
					       &res, why, sizeof(why)),
		     0);
	CHECK(NEAR(res.expires_on, now + 3599));
	free(res.token);
}

static void check_bad_response(const char *body, const char *why_part)
{
	auth_fetch_result_t res = {0};
	char why[128] = "";

	CHECK_EQ_INT(auth_parse_token_response(body, strlen(body), T0, &res,
					       why, sizeof(why)),
		     TP_ETOKEN);
	CHECK(res.token == NULL);
	CHECK(strstr(why, why_part) != NULL);
	if (!strstr(why, why_part))
		fprintf(stderr, "  why: %s\n", why);
}

static void test_token_response_errors(void)
{
	check_bad_response("", "not a JSON object");
	check_bad_response("[1]", "not a JSON object");
	check_bad_response("{\"expires_in\":\"60\"}", "no access_token");
	check_bad_response("{\"access_token\":\"\",\"expires_in\":\"60\"}",
			   "no access_token");
	check_bad_response("{\"access_token\":\"a b\",\"expires_in\":\"60\"}",
			   "not printable");
	check_bad_response("{\"access_token\":\"secret-tok\"}",
			   "no usable expires_on");
	check_bad_response("{\"access_token\":\"secret-tok\","
			   "\"expires_on\":\"1000\"}",
			   "expired");
	/* The token itself never appears in a reason. */
	{
		auth_fetch_result_t res = {0};
		char why[128] = "";
		const char *b = "{\"access_token\":\"secret-tok\","
				"\"expires_in\":\"0\"}";

		CHECK(auth_parse_token_response(b, strlen(b), T0, &res, why,
						sizeof(why)) != 0);
		CHECK(strstr(why, "secret-tok") == NULL);
	}
}

TP_TEST_MAIN(TP_TEST(test_refresh_one_hour_token_at_55_min),
	     TP_TEST(test_refresh_day_token_at_half_life),
	     TP_TEST(test_refresh_two_hour_boundary),
	     TP_TEST(test_refresh_nearly_expired_now),
	     TP_TEST(test_refresh_after_fetch_floor),
	     TP_TEST(test_backoff_grows_and_caps),
	     TP_TEST(test_backoff_jitter_bounds),
	     TP_TEST(test_backoff_retry_after_floor),
	     TP_TEST(test_retryable_status_table),
	     TP_TEST(test_expires_on_formats),
	     TP_TEST(test_token_response_fields),
	     TP_TEST(test_token_response_errors))
