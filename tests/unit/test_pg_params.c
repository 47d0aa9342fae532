/*
 * test_pg_params.c - the parameters that follow a client (params.c): which
 * names are tracked, and the SET list that brings a server in line.
 */
#include <stdlib.h>
#include <string.h>

#include "protocols/pg/pg.h"
#include "tp_test.h"

static void test_tracked_names_are_case_insensitive(void)
{
	CHECK(pg_var_index("TimeZone") >= 0);
	CHECK_EQ_INT(pg_var_index("timezone"), pg_var_index("TimeZone"));
	CHECK_EQ_INT(pg_var_index("DATESTYLE"), pg_var_index("DateStyle"));
	CHECK_EQ_INT(pg_var_index("search_path"), -1);
	CHECK_EQ_INT(pg_var_index(""), -1);
	CHECK(pg_var_name(PG_NVARS) == NULL);
}

static void test_in_sync_needs_nothing(void)
{
	pg_vars_t want = {0}, have = {0}, none = {0};
	char sql[256];

	CHECK_EQ_INT(pg_vars_sync_sql(&want, &none, &have, sql, sizeof(sql)),
		     0);
	CHECK_EQ_INT(pg_vars_set(&want, "TimeZone", "UTC"), 0);
	CHECK_EQ_INT(pg_vars_set(&have, "timezone", "UTC"), 0);
	CHECK_EQ_INT(pg_vars_sync_sql(&want, &none, &have, sql, sizeof(sql)),
		     0);
	/* What the server has and the client does not care about: nothing. */
	CHECK_EQ_INT(pg_vars_set(&have, "application_name", "x"), 0);
	CHECK_EQ_INT(pg_vars_sync_sql(&want, &none, &have, sql, sizeof(sql)),
		     0);
	pg_vars_free(&want);
	pg_vars_free(&have);
}

static void test_differences_become_quoted_sets(void)
{
	pg_vars_t want = {0}, have = {0}, none = {0};
	char sql[256];
	size_t n;

	CHECK_EQ_INT(pg_vars_set(&want, "application_name", "it's; DROP"), 0);
	CHECK_EQ_INT(pg_vars_set(&want, "TimeZone", "Europe/Berlin"), 0);
	CHECK_EQ_INT(pg_vars_set(&have, "TimeZone", "UTC"), 0);
	CHECK_EQ_INT(pg_vars_set(&want, "not_tracked", "ignored"), 0);
	n = pg_vars_sync_sql(&want, &none, &have, sql, sizeof(sql));
	CHECK_EQ_STR(sql, "SET TimeZone TO 'Europe/Berlin';"
			  "SET application_name TO 'it''s; DROP';");
	CHECK_EQ_INT(n, strlen(sql));
	/* No room: nothing half-written is reported as a statement. */
	CHECK_EQ_INT(pg_vars_sync_sql(&want, &none, &have, sql, 20), 0);
	CHECK_EQ_INT(pg_vars_sync_sql(&want, &none, &have, sql, n), 0);
	CHECK_EQ_INT(pg_vars_sync_sql(&want, &none, &have, sql, n + 1), n);
	pg_vars_free(&want);
	pg_vars_free(&have);
}

/* A client without a preference gets the server's default back, not the
 * value the previous client left (regression: TimeZone leaked). */
static void test_no_preference_means_default(void)
{
	pg_vars_t want = {0}, dflt = {0}, have = {0};
	char sql[256];

	CHECK_EQ_INT(pg_vars_set(&dflt, "TimeZone", "Etc/UTC"), 0);
	CHECK_EQ_INT(pg_vars_set(&have, "TimeZone", "Europe/Berlin"), 0);
	CHECK(pg_vars_sync_sql(&want, &dflt, &have, sql, sizeof(sql)) > 0);
	CHECK_EQ_STR(sql, "SET TimeZone TO 'Etc/UTC';");
	CHECK_EQ_INT(pg_vars_set(&have, "TimeZone", "Etc/UTC"), 0);
	CHECK_EQ_INT(pg_vars_sync_sql(&want, &dflt, &have, sql, sizeof(sql)),
		     0);
	pg_vars_free(&dflt);
	pg_vars_free(&have);
}

static void test_values_are_bounded(void)
{
	pg_vars_t v = {0};
	char *big = malloc(PG_VAR_MAX + 2);

	memset(big, 'a', PG_VAR_MAX + 1);
	big[PG_VAR_MAX + 1] = 0;
	CHECK_EQ_INT(pg_vars_set(&v, "TimeZone", big), TP_ETOOBIG);
	big[PG_VAR_MAX] = 0;
	CHECK_EQ_INT(pg_vars_set(&v, "TimeZone", big), 0);
	free(big);
	pg_vars_free(&v);
}

static void test_parse_param(void)
{
	const uint8_t msg[] = {'S', 0,	 0,   0,   17, 'T', 'i', 'm', 'e',
			       'Z', 'o', 'n', 'e', 0,  'U', 'T', 'C', 0};
	const char *k, *v;

	CHECK_EQ_INT(pg_parse_param(msg, sizeof(msg), &k, &v), 0);
	CHECK_EQ_STR(k, "TimeZone");
	CHECK_EQ_STR(v, "UTC");
	CHECK_EQ_INT(pg_parse_param(msg, sizeof(msg) - 1, &k, &v), TP_EPROTO);
}

TP_TEST_MAIN(TP_TEST(test_tracked_names_are_case_insensitive),
	     TP_TEST(test_in_sync_needs_nothing),
	     TP_TEST(test_differences_become_quoted_sets),
	     TP_TEST(test_no_preference_means_default),
	     TP_TEST(test_values_are_bounded), TP_TEST(test_parse_param))
