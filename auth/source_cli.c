/*
 * source_cli.c - tokens from the Azure CLI, for laptops and CI runners
 * where a developer or pipeline ran `az login`:
 *
 *   az account get-access-token --resource <scope minus /.default>
 *      -o json [--tenant <tenant_id>]
 *
 * run through uv_spawn with stdout and stderr read through uv pipes, so
 * the loop never waits on it. az is a Python program that can take
 * seconds; a run gets the fetch timeout (10 s by default), after which
 * its whole process group is killed (az is a shell script that starts
 * Python: killing the script alone would leave Python holding the pipes).
 *
 * The answer is the JSON az prints: accessToken, and expires_on (epoch,
 * az 2.54+) or else expiresOn (a local-time date string). A failure
 * carries the first line of az's stderr ("ERROR: Please run 'az login' to
 * setup account."), which never holds a token.
 *
 * Not here: whether `auto` should use the CLI at all (sources.c decides,
 * after IMDS). A run outlives a cancel until the killed process has been
 * reaped, so no zombie is left; it is then freed from its last close
 * callback.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>

#include "auth/internal.h"

#define AZ_OUT_MAX  (256 * 1024) /* az prints ~2-4 KB */
#define AZ_ERR_KEEP 1024	 /* of stderr, for the first line */

typedef struct az_run {
	uv_process_t proc;
	uv_pipe_t out, err;
	uv_timer_t timer;
	auth_fetch_t *f; /* NULL once told (or cancelled) */
	int open;	 /* handles not closed yet */
	int pending;	 /* exit + two EOFs still to come */
	bool spawned, exited, closing;
	int64_t status;
	int term_signal;
	auth__buf_t printed; /* az's stdout: a token, so wiped on free */
	bool too_big;
	char ebuf[AZ_ERR_KEEP];
	size_t elen;
	char scratch[8192]; /* read buffer; one read at a time */
} az_run_t;

/* ---- parsing (pure) ---- */

int auth_parse_local_time(const char *text, double *out)
{
	int y, mo, d, h, mi, s, n = 0;
	struct tm tm = {0};
	const char *p;
	time_t t;

	if (!text || sscanf(text, "%4d-%2d-%2d %2d:%2d:%2d%n", &y, &mo, &d, &h,
			    &mi, &s, &n) != 6)
		return TP_EINVAL;
	p = text + n;
	if (*p == '.')
		for (p++; isdigit((unsigned char)*p); p++)
			;
	if (*p != '\0' || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 ||
	    h < 0 || h > 23 || mi < 0 || mi > 59 || s < 0 || s > 60)
		return TP_EINVAL;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = s;
	tm.tm_isdst = -1; /* whatever the local zone says for that day */
	t = mktime(&tm);
	if (t == (time_t)-1 || tm.tm_mday != d)
		return TP_EINVAL;
	*out = (double)t;
	return 0;
}

/* expires_on as a number or a numeric string; false when absent/bad. */
static bool epoch_field(cJSON *root, double *out)
{
	cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "expires_on");
	char *end;

	if (cJSON_IsNumber(v) && isfinite(v->valuedouble) && v->valuedouble > 0)
		return (*out = v->valuedouble), true;
	if (!cJSON_IsString(v))
		return false;
	errno = 0;
	*out = strtod(v->valuestring, &end);
	return end != v->valuestring && *end == '\0' && errno == 0 &&
	       isfinite(*out) && *out > 0;
}

int auth_parse_az_output(const char *out, size_t len, double now,
			 auth_fetch_result_t *res, char *why, size_t whylen)
{
	cJSON *root = cJSON_ParseWithLength(out, len), *tok, *on;
	double exp = 0;
	int rc = TP_ETOKEN;

	tok = cJSON_GetObjectItemCaseSensitive(root, "accessToken");
	on = cJSON_GetObjectItemCaseSensitive(root, "expiresOn");
	if (!cJSON_IsObject(root))
		snprintf(why, whylen, "az printed no JSON object");
	else if (!cJSON_IsString(tok) || !tok->valuestring[0])
		snprintf(why, whylen, "az printed no accessToken");
	else if (!auth__token_printable(tok->valuestring))
		snprintf(why, whylen,
			 "az printed an accessToken that is not "
			 "printable");
	else if (!epoch_field(root, &exp) &&
		 !(cJSON_IsString(on) &&
		   auth_parse_local_time(on->valuestring, &exp) == 0))
		snprintf(why, whylen,
			 "az printed no usable expires_on or "
			 "expiresOn");
	else if (exp <= now)
		snprintf(why, whylen,
			 "az printed a token that expired %.0f s ago",
			 now - exp);
	else
		rc = auth__keep_token(res, tok->valuestring, exp, why, whylen);
	auth__json_free_wiping(root, tok);
	return rc;
}

/* ---- the run ---- */

static void on_run_closed(uv_handle_t *h)
{
	az_run_t *r = h->data;

	if (--r->open > 0)
		return;
	auth__buf_free(&r->printed);
	OPENSSL_cleanse(r->scratch, sizeof(r->scratch));
	free(r);
}

static void run_close(az_run_t *r)
{
	uv_handle_t *hs[] = {(uv_handle_t *)&r->proc, (uv_handle_t *)&r->out,
			     (uv_handle_t *)&r->err, (uv_handle_t *)&r->timer};

	if (r->closing)
		return;
	r->closing = true;
	for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
		uv_close(hs[i], on_run_closed);
}

/* The whole process group: az is a script that runs Python. */
static void run_kill(az_run_t *r)
{
	if (r->spawned && !r->exited && r->proc.pid > 0)
		uv_kill(-r->proc.pid, SIGKILL);
}

/* The first non-empty line of stderr, as one printable line. */
static void first_line(const az_run_t *r, char *out, size_t cap)
{
	const char *p = r->ebuf, *end = r->ebuf + r->elen;
	char line[AZ_ERR_KEEP + 1];
	size_t n;

	while (p < end && (*p == '\n' || *p == '\r' || *p == ' '))
		p++;
	n = 0;
	while (p + n < end && p[n] != '\n' && p[n] != '\r')
		n++;
	memcpy(line, p, n);
	line[n] = '\0';
	auth__one_line(out, cap, line);
}

static void run_result(az_run_t *r, auth_fetch_result_t *res)
{
	char why[AUTH_REASON_MAX / 2], line[200];

	if (r->term_signal)
		auth__fail(res, true, "azure_cli: az was killed by signal %d",
			   r->term_signal);
	else if (r->status != 0) {
		/* Mostly "run az login": a person has to act. */
		first_line(r, line, sizeof(line));
		auth__fail(res, false, "azure_cli: az exited with %lld%s%s",
			   (long long)r->status, line[0] ? ": " : "", line);
	} else if (r->too_big || r->printed.oom)
		auth__fail(res, true, "azure_cli: az printed over %d bytes",
			   AZ_OUT_MAX);
	else if (auth_parse_az_output(r->printed.s ? r->printed.s : "",
				      r->printed.len, auth__now(), res, why,
				      sizeof(why)) != 0)
		auth__fail(res, true, "azure_cli: %s", why);
}

/* Tells the fetch (once) and closes the run unless the process still has
 * to be reaped. */
static void run_finish(az_run_t *r, auth_fetch_result_t *res)
{
	auth_fetch_t *f = r->f;

	r->f = NULL;
	if (r->pending == 0)
		run_close(r);
	if (!f)
		return;
	f->proc = NULL;
	f->cb(f, res); /* may free f's owner */
}

static void run_step(az_run_t *r)
{
	auth_fetch_result_t res = {0};

	if (--r->pending > 0)
		return;
	if (!r->f) { /* told already (timeout, cancel): only reaping left */
		run_close(r);
		return;
	}
	uv_timer_stop(&r->timer);
	run_result(r, &res);
	run_finish(r, &res);
	if (res.token)
		OPENSSL_clear_free(res.token, res.len);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int term_signal)
{
	az_run_t *r = p->data;

	r->exited = true;
	r->status = status;
	r->term_signal = term_signal;
	run_step(r);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	az_run_t *r = h->data;

	*buf = uv_buf_init(r->scratch, sizeof(r->scratch));
}

static void keep_out(az_run_t *r, const char *data, size_t n)
{
	if (r->too_big || n > AZ_OUT_MAX - r->printed.len) {
		r->too_big = true; /* keep draining so az is not blocked */
		return;
	}
	auth__buf_addn(&r->printed, data, n);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	az_run_t *r = s->data;

	if (n > 0 && s == (uv_stream_t *)&r->out) {
		keep_out(r, buf->base, (size_t)n);
	} else if (n > 0) {
		size_t k = sizeof(r->ebuf) - r->elen;

		k = (size_t)n < k ? (size_t)n : k;
		memcpy(r->ebuf + r->elen, buf->base, k);
		r->elen += k;
	}
	if (n > 0)
		OPENSSL_cleanse(buf->base, (size_t)n);
	if (n < 0) { /* EOF or an error: this pipe is done */
		uv_read_stop(s);
		run_step(r);
	}
}

static void on_timeout(uv_timer_t *t)
{
	az_run_t *r = t->data;
	auth_fetch_result_t res = {0};

	run_kill(r);
	auth__fail(&res, true, "azure_cli: az did not finish within %g s",
		   r->f ? r->f->timeout : AUTH_HTTP_TIMEOUT);
	run_finish(r, &res);
}

/* ---- the source ---- */

static int run_spawn(auth_fetch_t *f, az_run_t *r, char **args)
{
	uv_stdio_container_t stdio[3] = {
	    {.flags = UV_IGNORE},
	    {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
	     .data.stream = (uv_stream_t *)&r->out},
	    {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
	     .data.stream = (uv_stream_t *)&r->err},
	};
	uv_process_options_t o = {
	    .exit_cb = on_exit_cb,
	    .file = args[0],
	    .args = args,
	    .flags = UV_PROCESS_DETACHED, /* own group, killed as one */
	    .stdio_count = 3,
	    .stdio = stdio,
	};
	int rc;

	uv_pipe_init(f->loop, &r->out, 0);
	uv_pipe_init(f->loop, &r->err, 0);
	uv_timer_init(f->loop, &r->timer);
	r->out.data = r->err.data = r->timer.data = r->proc.data = r;
	r->open = 4;
	rc = uv_spawn(f->loop, &r->proc, &o);
	if (rc != 0)
		return rc;
	r->spawned = true;
	r->pending = 3;
	uv_read_start((uv_stream_t *)&r->out, on_alloc, on_read);
	uv_read_start((uv_stream_t *)&r->err, on_alloc, on_read);
	uv_timer_start(
	    &r->timer, on_timeout,
	    (uint64_t)((f->timeout > 0 ? f->timeout : AUTH_HTTP_TIMEOUT) *
		       1000),
	    0);
	return 0;
}

static int cli_start(auth_fetch_t *f, auth_fetch_result_t *res)
{
	char *resource = auth__scope_resource(f->scope);
	char *args[] = {"az",	      "account", "get-access-token",
			"--resource", resource,	 "-o",
			"json",	      NULL,	 NULL,
			NULL};
	az_run_t *r = calloc(1, sizeof(*r));
	int rc;

	snprintf(f->where, sizeof(f->where), "azure_cli");
	if (f->ident->tenant_id) {
		args[7] = "--tenant";
		args[8] = f->ident->tenant_id;
	}
	if (!r || !resource) {
		free(r);
		free(resource);
		return auth__fail(res, true, "azure_cli: out of memory");
	}
	r->f = f;
	rc = run_spawn(f, r, args);
	free(resource);
	if (rc == 0) {
		f->proc = r;
		return 0;
	}
	run_close(r);
	if (rc == UV_ENOENT)
		return auth__fail(res, false,
				  "azure_cli: az not found on PATH (install "
				  "the Azure CLI and run 'az login', or pick "
				  "another identity.source)");
	return auth__fail(res, rc != UV_EACCES, "azure_cli: cannot run az: %s",
			  uv_strerror(rc));
}

static void cli_cancel(auth_fetch_t *f)
{
	az_run_t *r = f->proc;

	if (!r)
		return;
	f->proc = NULL;
	r->f = NULL;
	uv_timer_stop(&r->timer);
	run_kill(r);
	if (r->pending == 0)
		run_close(r);
}

const auth_source_t auth__azure_cli_source = {
    .name = "azure_cli",
    .start = cli_start,
    .cancel = cli_cancel,
};
