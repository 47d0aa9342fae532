/*
 * test_sources_cli.c - the Azure CLI source (source_cli.c) and auto's
 * IMDS-or-CLI step (sources.c).
 *
 * Pure parts: az's JSON (expires_on, and the expiresOn local-time
 * fallback under a fixed TZ), refusals that never quote the token.
 * On a real loop, with a fake `az` (a shell script first on PATH): the
 * token and expiry come through, the argv is what the real CLI wants
 * (--resource without /.default, --tenant when set), stderr's first line
 * reaches the reason, a hung az is killed with its whole process group at
 * the timeout, a missing az is named, and `auto` runs az when nothing
 * listens at the IMDS address and logs that it picked azure_cli.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "auth/internal.h"
#include "tests/unit/tp_test.h"

#define SCOPE "https://ossrdbms-aad.database.windows.net/.default"
#define TOKEN "eyJ0eXAi.fake-token-from-az.sig"

static char dir[] = "/tmp/tp-test-cli-XXXXXX";
static char bin[300], argv_file[300], empty_dir[300];

/* ---- parsing ---- */

static void test_parse_epoch_and_string(void)
{
	auth_fetch_result_t res = {0};
	char why[128];
	const char *a = "{\"accessToken\":\"" TOKEN "\",\"expiresOn\":"
			"\"2026-11-21 23:00:00.000000\",\"expires_on\":"
			"1795298400,\"tokenType\":\"Bearer\"}";
	const char *b = "{\"accessToken\":\"" TOKEN "\",\"expires_on\":"
			"\"1795298400\"}";

	CHECK_EQ_INT(auth_parse_az_output(a, strlen(a), 1795290000, &res, why,
					  sizeof(why)),
		     0);
	CHECK_EQ_STR(res.token, TOKEN);
	CHECK(res.expires_on == 1795298400);
	free(res.token);
	memset(&res, 0, sizeof(res));
	CHECK_EQ_INT(auth_parse_az_output(b, strlen(b), 1795290000, &res, why,
					  sizeof(why)),
		     0);
	CHECK(res.expires_on == 1795298400);
	free(res.token);
}

/* Older az: only expiresOn, in the machine's local time. */
static void test_parse_expires_on_fallback_local_time(void)
{
	auth_fetch_result_t res = {0};
	char why[128];
	const char *a = "{\"accessToken\":\"" TOKEN "\",\"expiresOn\":"
			"\"2026-11-21 23:00:00.000000\"}";
	double v = 0;
	char *old = getenv("TZ") ? strdup(getenv("TZ")) : NULL;

	setenv("TZ", "UTC", 1);
	tzset();
	CHECK_EQ_INT(auth_parse_az_output(a, strlen(a), 1795290000, &res, why,
					  sizeof(why)),
		     0);
	CHECK(res.expires_on == 1795302000); /* 2026-11-21T23:00:00Z */
	free(res.token);
	/* POSIX TZ "XYZ-2" is two hours east of UTC; no tzdata needed. */
	setenv("TZ", "XYZ-2", 1);
	tzset();
	CHECK_EQ_INT(auth_parse_local_time("2026-11-21 23:00:00", &v), 0);
	CHECK(v == 1795302000 - 7200);
	CHECK_EQ_INT(auth_parse_local_time("2026-11-21 23:00:00.5", &v), 0);
	CHECK_EQ_INT(auth_parse_local_time("2026-11-21T23:00:00", &v),
		     TP_EINVAL);
	CHECK_EQ_INT(auth_parse_local_time("2026-02-30 23:00:00", &v),
		     TP_EINVAL);
	CHECK_EQ_INT(auth_parse_local_time("2026-11-21 23:00:00 junk", &v),
		     TP_EINVAL);
	if (old)
		setenv("TZ", old, 1);
	else
		unsetenv("TZ");
	tzset();
	free(old);
}

static void check_refused(const char *json, const char *part)
{
	auth_fetch_result_t res = {0};
	char why[128] = "";

	CHECK_EQ_INT(auth_parse_az_output(json, strlen(json), 1795290000, &res,
					  why, sizeof(why)),
		     TP_ETOKEN);
	CHECK(res.token == NULL);
	CHECK(strstr(why, part) != NULL);
	CHECK(strstr(why, "fake-token") == NULL);
	if (!strstr(why, part))
		fprintf(stderr, "  why: %s\n", why);
}

static void test_parse_refusals(void)
{
	check_refused("", "no JSON object");
	check_refused("[]", "no JSON object");
	check_refused("{\"expires_on\":1795298400}", "no accessToken");
	check_refused("{\"accessToken\":\"a b\",\"expires_on\":1795298400}",
		      "not printable");
	check_refused("{\"accessToken\":\"" TOKEN "\"}",
		      "no usable expires_on");
	check_refused("{\"accessToken\":\"" TOKEN "\",\"expiresOn\":\"soon\"}",
		      "no usable expires_on");
	check_refused("{\"accessToken\":\"" TOKEN "\",\"expires_on\":1000}",
		      "expired");
}

/* ---- on a loop, with a fake az ---- */

typedef struct got {
	int calls;
	int err;
	bool retryable;
	char token[128];
	double expires_on;
	char reason[AUTH_REASON_MAX];
	char log[1024];
} got_t;

static void on_done(auth_fetch_t *f, auth_fetch_result_t *res)
{
	got_t *g = f->arg;

	g->calls++;
	g->err = res->err;
	g->retryable = res->retryable;
	g->expires_on = res->expires_on;
	snprintf(g->token, sizeof(g->token), "%s",
		 res->token ? res->token : "");
	snprintf(g->reason, sizeof(g->reason), "%s", res->reason);
}

static void on_log(void *arg, conf_log_level_t level, const char *line)
{
	got_t *g = arg;

	snprintf(g->log, sizeof(g->log), "%s", line);
}

static bool run_until_called(uv_loop_t *loop, got_t *g, double seconds)
{
	uint64_t end = uv_hrtime() + (uint64_t)(seconds * 1e9);

	while (!g->calls && uv_hrtime() < end)
		uv_run(loop, UV_RUN_ONCE);
	return g->calls > 0;
}

/* Runs the loop until nothing is left on it (the run's handles closed and
 * freed): true when that happened within seconds. */
static bool drain(uv_loop_t *loop, double seconds)
{
	uint64_t end = uv_hrtime() + (uint64_t)(seconds * 1e9);

	while (uv_loop_alive(loop) && uv_hrtime() < end) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(2000);
	}
	return !uv_loop_alive(loop);
}

typedef struct fx {
	uv_loop_t loop;
	auth_http_t *http;
	conf_identity_t conf;
	auth_ident_t ident;
	auth_fetch_t f;
	got_t g;
} fx_t;

static void fx_start(fx_t *x, conf_source_t src, const char *tenant,
		     double timeout)
{
	auth_fetch_result_t res = {0};

	memset(x, 0, sizeof(*x));
	uv_loop_init(&x->loop);
	x->http = auth_http_new(&x->loop);
	x->conf.source = src;
	x->conf.tenant_id = (char *)tenant;
	x->conf.imds_endpoint = "http://127.0.0.1:1"; /* nobody listens */
	x->conf.authority = "https://login.microsoftonline.com";
	CHECK_EQ_INT(auth_ident_resolve(&x->conf, NULL, NULL, &x->ident), 0);
	x->f.loop = &x->loop;
	x->f.http = x->http;
	x->f.ident = &x->ident;
	x->f.scope = SCOPE;
	x->f.timeout = timeout;
	x->f.cb = on_done;
	x->f.arg = &x->g;
	x->f.log = on_log;
	x->f.log_arg = &x->g;
	if (auth_source_for(&x->ident)->start(&x->f, &res) != 0)
		on_done(&x->f, &res); /* failed at once */
}

static void fx_end(fx_t *x)
{
	auth_http_close(x->http);
	CHECK(drain(&x->loop, 3));
	CHECK_EQ_INT(uv_loop_close(&x->loop), 0);
	auth_ident_free(&x->ident);
}

static void fake_az(const char *mode)
{
	setenv("FAKE_AZ_MODE", mode, 1);
}

static void test_cli_token(void)
{
	fx_t x;
	char args[512] = "";
	FILE *f;

	fake_az("ok");
	fx_start(&x, CONF_SRC_AZURE_CLI, "contoso.onmicrosoft.com", 5);
	CHECK(run_until_called(&x.loop, &x.g, 5));
	CHECK_EQ_INT(x.g.err, 0);
	CHECK_EQ_STR(x.g.token, TOKEN);
	CHECK(x.g.expires_on > time(NULL) + 3000);
	f = fopen(argv_file, "r");
	if (f) {
		if (!fgets(args, sizeof(args), f))
			args[0] = '\0';
		fclose(f);
	}
	CHECK_EQ_STR(args, "account get-access-token --resource "
			   "https://ossrdbms-aad.database.windows.net -o json "
			   "--tenant contoso.onmicrosoft.com\n");
	fx_end(&x);
}

static void test_cli_old_az_expires_on_string(void)
{
	fx_t x;

	fake_az("old");
	fx_start(&x, CONF_SRC_AZURE_CLI, NULL, 5);
	CHECK(run_until_called(&x.loop, &x.g, 5));
	CHECK_EQ_INT(x.g.err, 0);
	CHECK(x.g.expires_on > time(NULL) + 3000 &&
	      x.g.expires_on < time(NULL) + 3700);
	fx_end(&x);
}

static void test_cli_not_logged_in(void)
{
	fx_t x;

	fake_az("login");
	fx_start(&x, CONF_SRC_AZURE_CLI, NULL, 5);
	CHECK(run_until_called(&x.loop, &x.g, 5));
	CHECK_EQ_INT(x.g.err, TP_ETOKEN);
	CHECK(!x.g.retryable);
	CHECK_EQ_STR(x.g.reason, "azure_cli: az exited with 1: ERROR: Please "
				 "run 'az login' to setup account.");
	fx_end(&x);
}

/* The script and its background child share a process group: both die
 * at the timeout, so the pipes close and the run is freed at once. */
static void test_cli_hung_az_killed(void)
{
	fx_t x;
	uint64_t t0 = uv_hrtime();

	fake_az("hang");
	fx_start(&x, CONF_SRC_AZURE_CLI, NULL, 0.5);
	CHECK(run_until_called(&x.loop, &x.g, 5));
	CHECK((uv_hrtime() - t0) / 1e9 < 2);
	CHECK_EQ_INT(x.g.err, TP_ETOKEN);
	CHECK(x.g.retryable);
	CHECK_EQ_STR(x.g.reason, "azure_cli: az did not finish within 0.5 s");
	fx_end(&x); /* drains within 3 s, not 30: the grandchild died too */
}

static void test_cli_missing(void)
{
	fx_t x;
	char *path = strdup(getenv("PATH"));

	setenv("PATH", empty_dir, 1);
	fx_start(&x, CONF_SRC_AZURE_CLI, NULL, 5);
	setenv("PATH", path, 1);
	free(path);
	CHECK_EQ_INT(x.g.calls, 1);
	CHECK(!x.g.retryable);
	CHECK(strstr(x.g.reason, "azure_cli: az not found on PATH") != NULL);
	fx_end(&x);
}

static void test_cli_cancel(void)
{
	fx_t x;

	fake_az("hang");
	fx_start(&x, CONF_SRC_AZURE_CLI, NULL, 30);
	for (int i = 0; i < 5; i++)
		uv_run(&x.loop, UV_RUN_NOWAIT);
	auth_source_for(&x.ident)->cancel(&x.f);
	CHECK(x.f.proc == NULL);
	fx_end(&x); /* drains: the killed group is reaped, nothing leaks */
	CHECK_EQ_INT(x.g.calls, 0);
}

/* ---- auto: IMDS unreachable, then az ---- */

static void test_auto_falls_back_to_cli(void)
{
	fx_t x;

	fake_az("ok");
	fx_start(&x, CONF_SRC_AUTO, NULL, 5);
	CHECK(run_until_called(&x.loop, &x.g, 5));
	CHECK_EQ_INT(x.g.err, 0);
	CHECK_EQ_STR(x.g.token, TOKEN);
	CHECK_EQ_INT(x.ident.picked, CONF_SRC_AZURE_CLI);
	CHECK(strstr(x.g.log, "identity auto: picked azure_cli (imds "
			      "http://127.0.0.1:1 unreachable: connection "
			      "refused); skipped ") != NULL);
	fx_end(&x);
}

static void test_auto_both_fail(void)
{
	fx_t x;

	fake_az("login");
	fx_start(&x, CONF_SRC_AUTO, NULL, 5);
	CHECK(run_until_called(&x.loop, &x.g, 5));
	CHECK_EQ_INT(x.g.err, TP_ETOKEN);
	CHECK_EQ_INT(x.ident.picked, CONF_SRC_AUTO); /* next time: IMDS first */
	CHECK_EQ_STR(x.g.reason,
		     "auto: imds http://127.0.0.1:1 unreachable (connection "
		     "refused); azure_cli: az exited with 1: ERROR: Please run "
		     "'az login' to setup account.");
	CHECK_EQ_STR(x.g.log, "");
	fx_end(&x);
}

/* ---- setup ---- */

static const char script[] =
    "#!/bin/sh\n"
    "echo \"$@\" > \"$FAKE_AZ_ARGV\"\n"
    "now=$(date +%%s); exp=$((now + 3600))\n"
    "case \"$FAKE_AZ_MODE\" in\n"
    "ok) printf '{\\n  \"accessToken\": \"%s\",\\n  \"expiresOn\": "
    "\"2020-01-01 00:00:00.000000\",\\n  \"expires_on\": %%s,\\n  "
    "\"tokenType\": \"Bearer\"\\n}\\n' \"$exp\";;\n"
    "old) printf '{\"accessToken\": \"%s\", \"expiresOn\": \"%%s\"}\\n' "
    "\"$(date -d @$exp '+%%Y-%%m-%%d %%H:%%M:%%S.000000')\";;\n"
    "login) echo \"ERROR: Please run 'az login' to setup account.\" >&2; "
    "exit 1;;\n"
    "hang) sleep 30 & sleep 30;;\n"
    "esac\n";

static void test_setup(void)
{
	char path[400], *p;
	FILE *f;

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(bin, sizeof(bin), "%s/bin", dir);
	snprintf(empty_dir, sizeof(empty_dir), "%s/empty", dir);
	snprintf(argv_file, sizeof(argv_file), "%s/argv", dir);
	mkdir(bin, 0755);
	mkdir(empty_dir, 0755);
	snprintf(path, sizeof(path), "%s/az", bin);
	f = fopen(path, "w");
	CHECK(f != NULL);
	if (!f)
		return;
	fprintf(f, script, TOKEN, TOKEN);
	fclose(f);
	chmod(path, 0755);
	setenv("FAKE_AZ_ARGV", argv_file, 1);
	if (asprintf(&p, "%s:/usr/bin:/bin", bin) > 0) {
		setenv("PATH", p, 1);
		free(p);
	}
	signal(SIGPIPE, SIG_IGN);
}

static void test_teardown(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

TP_TEST_MAIN(TP_TEST(test_parse_epoch_and_string),
	     TP_TEST(test_parse_expires_on_fallback_local_time),
	     TP_TEST(test_parse_refusals), TP_TEST(test_setup),
	     TP_TEST(test_cli_token),
	     TP_TEST(test_cli_old_az_expires_on_string),
	     TP_TEST(test_cli_not_logged_in), TP_TEST(test_cli_hung_az_killed),
	     TP_TEST(test_cli_missing), TP_TEST(test_cli_cancel),
	     TP_TEST(test_auto_falls_back_to_cli), TP_TEST(test_auto_both_fail),
	     TP_TEST(test_teardown))
