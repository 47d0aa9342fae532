/*
 * sources.c - where tokens come from: one small vtable per identity source.
 *
 * Here: IMDS (VMs, scale sets, AKS node pools), App Service (also
 * Functions and Container Apps: IDENTITY_ENDPOINT + IDENTITY_HEADER), the
 * last step of `auto` (IMDS, or the Azure CLI when IMDS is unreachable),
 * a misconfigured identity, and the helpers every HTTP source shares.
 * Elsewhere: the Entra token endpoint (source_entra.c), the Azure CLI
 * (source_cli.c), which source and with what (source_select.c).
 *
 * A source turns (identity, scope) into one request and the answer into
 * a token with its expiry, or into a one-line reason naming the source and
 * endpoint. Reasons never carry a token or a secret: from error answers we
 * quote only the error/error_description/message fields.
 *
 * auto and IMDS: the SDKs probe IMDS with a short timeout and move on to
 * the next credential when nothing answers. We do the same inside the
 * first real IMDS request: its connect phase gets AUTO_PROBE_CONNECT
 * seconds; any HTTP answer (even an error) means IMDS is there and is
 * kept; no answer at all (refused, unreachable, timed out) runs `az`
 * instead, which is kept once it works. Until one of them has worked,
 * every fetch tries IMDS first again (a VM whose IMDS was slow at boot
 * must not end up on the CLI for good).
 *
 * Not here: caching and retry timing (tokens.c), the HTTP machinery
 * (curl_uv.c), JWT decoding (jwt.c: the answer's own expiry fields are
 * enough, and every Azure token endpoint sends one).
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/crypto.h>

#include "auth/internal.h"

#define IMDS_PATH	   "/metadata/identity/oauth2/token"
#define IMDS_API	   "api-version=2018-02-01"
#define APP_SERVICE_API	   "api-version=2019-08-01"
#define DESC_MAX	   160 /* quoted error text from an answer */
#define AUTO_PROBE_CONNECT 1.0 /* s: auto's IMDS connect phase */

/* ---- a growing string ---- */

void auth__buf_addn(auth__buf_t *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 256;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = malloc(cap); /* not realloc: the old block is wiped */
		if (!p) {
			b->oom = true;
			return;
		}
		if (b->s) {
			memcpy(p, b->s, b->len);
			OPENSSL_clear_free(b->s, b->cap);
		}
		b->s = p;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

void auth__buf_add(auth__buf_t *b, const char *s)
{
	auth__buf_addn(b, s, strlen(s));
}

void auth__buf_param(auth__buf_t *b, const char *sep, const char *name,
		     const char *value)
{
	char *esc;

	if (!value)
		return;
	esc = curl_easy_escape(NULL, value, (int)strlen(value));
	if (!esc) {
		b->oom = true;
		return;
	}
	auth__buf_add(b, sep);
	auth__buf_add(b, name);
	auth__buf_add(b, "=");
	auth__buf_add(b, esc);
	OPENSSL_cleanse(esc, strlen(esc)); /* may be a secret */
	curl_free(esc);
}

void auth__buf_free(auth__buf_t *b)
{
	if (b->s)
		OPENSSL_clear_free(b->s, b->cap);
	memset(b, 0, sizeof(*b));
}

char *auth__scope_resource(const char *scope)
{
	static const char suffix[] = "/.default";
	size_t n = strlen(scope), k = sizeof(suffix) - 1;

	if (n > k && strcmp(scope + n - k, suffix) == 0)
		n -= k;
	return strndup(scope, n);
}

/* The v1 endpoints want a resource, not a scope. */
static void sb_resource(auth__buf_t *b, const char *scope)
{
	char *res = auth__scope_resource(scope);

	if (!res) {
		b->oom = true;
		return;
	}
	auth__buf_param(b, "&", "resource", res);
	free(res);
}

/* ---- reasons ---- */

/* Copies text as one printable line of at most cap - 1 bytes, marking a cut
 * with "...". */
void auth__one_line(char *out, size_t cap, const char *text)
{
	size_t i, n = strlen(text);

	for (i = 0; i < n && i + 1 < cap; i++) {
		unsigned char c = (unsigned char)text[i];

		out[i] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
	}
	out[i] = '\0';
	if (i < n && cap > 4)
		memcpy(out + cap - 4, "...", 4);
}

/* "imds http://169.254.169.254": the endpoint without a query string. */
void auth__set_where(auth_fetch_t *f, const char *source, const char *url)
{
	size_t n = strcspn(url, "?#");

	if (n > 200)
		n = 200;
	snprintf(f->where, sizeof(f->where), "%s %.*s", source, (int)n, url);
}

int auth__fail(auth_fetch_result_t *res, bool retryable, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(res->reason, sizeof(res->reason), fmt, ap);
	va_end(ap);
	res->err = TP_ETOKEN;
	res->retryable = retryable;
	return TP_ETOKEN;
}

/* The error text of a JSON error answer: error_description (IMDS, Entra),
 * message (App Service) or error, whichever comes first. "" if none. */
static void error_text(const char *body, size_t len, char *out, size_t cap)
{
	static const char *const keys[] = {"error_description", "message",
					   "Message", "error"};
	cJSON *root = cJSON_ParseWithLength(body, len);

	out[0] = '\0';
	for (size_t i = 0; root && i < sizeof(keys) / sizeof(keys[0]); i++) {
		cJSON *v = cJSON_GetObjectItemCaseSensitive(root, keys[i]);

		if (cJSON_IsObject(v)) /* {"error": {"code", "message"}} */
			v = cJSON_GetObjectItemCaseSensitive(v, "message");
		if (cJSON_IsString(v) && v->valuestring[0]) {
			auth__one_line(out, cap, v->valuestring);
			break;
		}
	}
	cJSON_Delete(root);
}

/* ---- answers ---- */

static bool parse_number(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end != '\0' || errno != 0 || !isfinite(v))
		return false;
	*out = v;
	return true;
}

/* "11/21/2026 10:00:00 PM +00:00"; also 24-hour without AM/PM, and without
 * an offset (UTC). */
static int parse_date(const char *s, double *out)
{
	int mo, d, y, h, mi, sec, n = 0, oh = 0, om = 0, sign = 1;
	const char *p;
	struct tm tm = {0};
	time_t t;

	if (sscanf(s, "%2d/%2d/%4d %2d:%2d:%2d%n", &mo, &d, &y, &h, &mi, &sec,
		   &n) != 6)
		return TP_EINVAL;
	p = s + n;
	while (*p == ' ')
		p++;
	if (strncasecmp(p, "AM", 2) == 0 || strncasecmp(p, "PM", 2) == 0) {
		if (h < 1 || h > 12)
			return TP_EINVAL;
		h = h % 12 + (toupper((unsigned char)*p) == 'P' ? 12 : 0);
		p += 2;
		while (*p == ' ')
			p++;
	}
	if (*p == '+' || *p == '-') {
		sign = *p == '-' ? -1 : 1;
		n = 0;
		if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &n) != 2 || oh > 14 ||
		    om > 59 || oh < 0 || om < 0)
			return TP_EINVAL;
		p += 1 + n;
	} else if (*p == 'Z') {
		p++;
	}
	if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || y < 1970 ||
	    h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 60)
		return TP_EINVAL;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	if (t == (time_t)-1 || tm.tm_mday != d) /* 2/31 normalised away */
		return TP_EINVAL;
	*out = (double)t - sign * (oh * 3600.0 + om * 60.0);
	return 0;
}

int auth_parse_expires_on(const char *text, double *out)
{
	double v;

	if (!text || !out)
		return TP_EINVAL;
	if (parse_number(text, &v))
		return v > 0 ? (*out = v, 0) : TP_EINVAL;
	return parse_date(text, out);
}

/* A JSON string or number field as seconds; false when absent or bad. */
static bool field_seconds(cJSON *root, const char *key, bool absolute,
			  double *out)
{
	cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);

	if (cJSON_IsNumber(v) && isfinite(v->valuedouble) && v->valuedouble > 0)
		return (*out = v->valuedouble), true;
	if (!cJSON_IsString(v))
		return false;
	if (absolute)
		return auth_parse_expires_on(v->valuestring, out) == 0;
	return parse_number(v->valuestring, out) && *out > 0;
}

/* Tokens go into protocol fields verbatim: no spaces, no control bytes. */
bool auth__token_printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

int auth__keep_token(auth_fetch_result_t *res, const char *token, double exp,
		     char *why, size_t whylen)
{
	if (!(res->token = strdup(token))) {
		snprintf(why, whylen, "out of memory");
		return TP_ETOKEN;
	}
	res->len = strlen(res->token);
	res->expires_on = exp;
	res->err = 0;
	return 0;
}

void auth__json_free_wiping(struct cJSON *root, struct cJSON *tok)
{
	if (cJSON_IsString(tok)) /* cJSON frees without wiping */
		OPENSSL_cleanse(tok->valuestring, strlen(tok->valuestring));
	cJSON_Delete(root);
}

int auth_parse_token_response(const char *body, size_t len, double now,
			      auth_fetch_result_t *res, char *why,
			      size_t whylen)
{
	cJSON *root = cJSON_ParseWithLength(body, len), *tok;
	double exp = 0, in = 0;
	int rc = TP_ETOKEN;

	tok = cJSON_GetObjectItemCaseSensitive(root, "access_token");
	if (!cJSON_IsObject(root))
		snprintf(why, whylen, "response is not a JSON object");
	else if (!cJSON_IsString(tok) || !tok->valuestring[0])
		snprintf(why, whylen, "response has no access_token");
	else if (!auth__token_printable(tok->valuestring))
		snprintf(why, whylen, "response access_token is not printable");
	else if (!field_seconds(root, "expires_on", true, &exp) &&
		 !field_seconds(root, "expires_in", false, &in))
		snprintf(why, whylen,
			 "response has no usable expires_on or expires_in");
	else if ((exp = exp > 0 ? exp : now + in) <= now)
		snprintf(why, whylen,
			 "response token expired %.0f s ago (clock skew?)",
			 now - exp);
	else
		rc = auth__keep_token(res, tok->valuestring, exp, why, whylen);
	auth__json_free_wiping(root, tok);
	return rc;
}

/* ---- the HTTP part every HTTP source shares ---- */

double auth__now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void http_failed(auth_fetch_t *f, const auth_http_result_t *r,
			auth_fetch_result_t *res)
{
	char desc[DESC_MAX];
	bool retry = auth_http_retryable(r->status);

	error_text(r->body, r->len, desc, sizeof(desc));
	auth__fail(res, retry, "%s: HTTP %ld%s%s%s", f->where, r->status,
		   desc[0] ? ": " : "", desc,
		   retry ? "" : " (configuration error)");
	res->retry_after = r->retry_after;
}

static void on_http_done(void *arg, const auth_http_result_t *r)
{
	auth_fetch_t *f = arg;
	auth_fetch_result_t res = {0};
	char why[AUTH_REASON_MAX / 2];

	f->req = NULL;
	if (r->error && !r->permanent && f->probe && f->unreachable) {
		f->unreachable(f, r->error); /* auto: nobody answered */
		return;
	}
	if (r->error)
		auth__fail(&res, !r->permanent, "%s: %s%s", f->where, r->error,
			   r->permanent ? " (configuration error)" : "");
	else if (r->status < 200 || r->status > 299)
		http_failed(f, r, &res);
	else if (auth_parse_token_response(r->body, r->len, auth__now(), &res,
					   why, sizeof(why)) != 0)
		/* A 2xx we cannot read is most likely a passing fault. */
		auth__fail(&res, true, "%s: %s", f->where, why);
	f->cb(f, &res); /* may free f's owner: touch nothing after */
	if (res.token)
		OPENSSL_clear_free(res.token, res.len);
}

int auth__http_start(auth_fetch_t *f, const char *url, const char *const *hdrs,
		     const char *post, size_t post_len, bool no_proxy,
		     auth_fetch_result_t *res)
{
	auth_http_spec_t spec = {
	    .url = url,
	    .headers = hdrs,
	    .post = post,
	    .post_len = post_len,
	    .timeout = f->timeout > 0 ? f->timeout : AUTH_HTTP_TIMEOUT,
	    .no_proxy = no_proxy,
	};
	int rc;

	if (!url)
		return auth__fail(res, true, "%s: out of memory", f->where);
	spec.connect_timeout = spec.timeout < AUTH_HTTP_CONNECT_TIMEOUT
				   ? spec.timeout
				   : AUTH_HTTP_CONNECT_TIMEOUT;
	if (f->probe && spec.connect_timeout > AUTO_PROBE_CONNECT)
		spec.connect_timeout = AUTO_PROBE_CONNECT;
	rc = auth_http_request(f->http, &spec, on_http_done, f, &f->req);
	if (rc == TP_ENOMEM)
		return auth__fail(res, true, "%s: out of memory", f->where);
	if (rc != 0)
		return auth__fail(res, false, "%s: bad endpoint URL", f->where);
	return 0;
}

void auth__http_cancel(auth_fetch_t *f)
{
	if (f->req)
		auth_http_cancel(f->req);
	f->req = NULL;
}

/* ---- IMDS ---- */

static int imds_start(auth_fetch_t *f, auth_fetch_result_t *res)
{
	const auth_ident_t *id = f->ident;
	const char *base = id->imds_endpoint && id->imds_endpoint[0]
			       ? id->imds_endpoint
			       : AUTH_IMDS_DEFAULT;
	static const char *const hdrs[] = {"Metadata: true", NULL};
	size_t n = strlen(base);
	auth__buf_t url = {0};
	int rc;

	auth__set_where(f, "imds", base);
	while (n > 0 && base[n - 1] == '/')
		n--;
	auth__buf_addn(&url, base, n);
	auth__buf_add(&url, IMDS_PATH "?" IMDS_API);
	sb_resource(&url, f->scope);
	auth__buf_param(&url, "&", "client_id", id->client_id);
	auth__buf_param(&url, "&", "object_id", id->object_id);
	auth__buf_param(&url, "&", "msi_res_id", id->resource_id);
	/* no proxy: as the Azure SDKs do for IMDS */
	rc = auth__http_start(f, url.oom ? NULL : url.s, hdrs, NULL, 0, true,
			      res);
	auth__buf_free(&url);
	return rc;
}

const auth_source_t auth__imds_source = {
    .name = "imds",
    .start = imds_start,
    .cancel = auth__http_cancel,
};

/* ---- App Service, Functions, Container Apps ---- */

static int app_service_start(auth_fetch_t *f, auth_fetch_result_t *res)
{
	const auth_ident_t *id = f->ident;
	const char *ep = id->identity_endpoint;
	const char *secret = id->identity_header;
	const char *hdrs[2] = {NULL, NULL};
	char *line = NULL;
	auth__buf_t url = {0};
	int rc;

	auth__set_where(f, "app_service", ep ? ep : "(no endpoint)");
	if (!ep || !secret) /* source_select.c reports this first */
		return auth__fail(res, false,
				  "%s: IDENTITY_ENDPOINT and IDENTITY_HEADER "
				  "must both be set",
				  f->where);
	if (strpbrk(secret, "\r\n"))
		return auth__fail(res, false,
				  "%s: IDENTITY_HEADER has a line break",
				  f->where);
	if (asprintf(&line, "X-IDENTITY-HEADER: %s", secret) < 0)
		return auth__fail(res, true, "%s: out of memory", f->where);
	hdrs[0] = line;
	auth__buf_add(&url, ep);
	auth__buf_add(&url, strchr(ep, '?') ? "&" APP_SERVICE_API
					    : "?" APP_SERVICE_API);
	sb_resource(&url, f->scope);
	auth__buf_param(&url, "&", "client_id", id->client_id);
	auth__buf_param(&url, "&", "principal_id", id->object_id);
	auth__buf_param(&url, "&", "mi_res_id", id->resource_id);
	/* the header is copied */
	rc = auth__http_start(f, url.oom ? NULL : url.s, hdrs, NULL, 0, true,
			      res);
	OPENSSL_clear_free(line, strlen(line));
	auth__buf_free(&url);
	return rc;
}

static const auth_source_t app_service_source = {
    .name = "app_service",
    .start = app_service_start,
    .cancel = auth__http_cancel,
};

/* ---- auto's last step: IMDS, or the Azure CLI when IMDS is unreachable */

static void auto_log(auth_fetch_t *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void auto_log(auth_fetch_t *f, const char *fmt, ...)
{
	char line[AUTH_REASON_MAX * 2];
	va_list ap;

	if (!f->log)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	f->log(f->log_arg, CONF_LOG_INFO, line);
}

/* IMDS gave an HTTP answer, whatever it said: it is there, and stays
 * auto's pick. */
static void auto_imds_done(auth_fetch_t *f, auth_fetch_result_t *res)
{
	auth_ident_t *id = f->ident;

	f->cb = f->outer;
	f->probe = false;
	if (id->picked != CONF_SRC_IMDS) {
		id->picked = CONF_SRC_IMDS;
		auto_log(f,
			 "identity auto: picked imds (it answered at %s); %s",
			 f->where + strlen("imds "), id->note ? id->note : "");
	}
	f->cb(f, res);
}

static void auto_cli_done(auth_fetch_t *f, auth_fetch_result_t *res)
{
	auth_ident_t *id = f->ident;
	char why[AUTH_REASON_MAX];

	f->cb = f->outer;
	if (res->err == 0 && id->picked != CONF_SRC_AZURE_CLI) {
		id->picked = CONF_SRC_AZURE_CLI;
		auto_log(f,
			 "identity auto: picked azure_cli (imds %s "
			 "unreachable: %s); %s",
			 id->imds_endpoint ? id->imds_endpoint
					   : AUTH_IMDS_DEFAULT,
			 f->probe_why, id->note ? id->note : "");
	} else if (res->err != 0) {
		snprintf(why, sizeof(why), "%s", res->reason);
		/* Bounded so both halves fit in a reason. */
		snprintf(res->reason, sizeof(res->reason),
			 "auto: imds %.60s unreachable (%.60s); %.170s",
			 id->imds_endpoint ? id->imds_endpoint
					   : AUTH_IMDS_DEFAULT,
			 f->probe_why, why);
	}
	f->cb(f, res);
}

/* Nobody answered at the IMDS address: try az. Runs from the HTTP
 * callback, so calling back at once is allowed. */
static void auto_unreachable(auth_fetch_t *f, const char *why)
{
	auth_fetch_result_t res = {0};

	snprintf(f->probe_why, sizeof(f->probe_why), "%s", why);
	f->probe = false;
	f->cb = auto_cli_done;
	if (auth__azure_cli_source.start(f, &res) != 0) {
		auto_cli_done(f, &res);
		if (res.token)
			OPENSSL_clear_free(res.token, res.len);
	}
}

static int auto_start(auth_fetch_t *f, auth_fetch_result_t *res)
{
	int rc;

	if (f->ident->picked == CONF_SRC_AZURE_CLI)
		return auth__azure_cli_source.start(f, res);
	if (f->ident->picked == CONF_SRC_IMDS)
		return auth__imds_source.start(f, res);
	f->outer = f->cb;
	f->cb = auto_imds_done;
	f->probe = true;
	f->unreachable = auto_unreachable;
	rc = auth__imds_source.start(f, res);
	if (rc != 0) {
		f->cb = f->outer;
		f->probe = false;
	}
	return rc;
}

static void auto_cancel(auth_fetch_t *f)
{
	auth__http_cancel(f);
	auth__azure_cli_source.cancel(f);
}

static const auth_source_t auto_source = {
    .name = "auto",
    .start = auto_start,
    .cancel = auto_cancel,
};

/* ---- a misconfigured identity ---- */

static int misconfigured_start(auth_fetch_t *f, auth_fetch_result_t *res)
{
	snprintf(f->where, sizeof(f->where), "%s",
		 conf_source_name(f->ident->source));
	return auth__fail(res, false, "%s", f->ident->config_error);
}

static void misconfigured_cancel(auth_fetch_t *f)
{
}

static const auth_source_t misconfigured_source = {
    .name = NULL, /* the resolved source's name stands */
    .start = misconfigured_start,
    .cancel = misconfigured_cancel,
};

const auth_source_t *auth_source_for(const auth_ident_t *id)
{
	if (id->config_error)
		return &misconfigured_source;
	if (id->cli_fallback)
		return &auto_source;
	switch (id->source) {
	case CONF_SRC_APP_SERVICE:
		return &app_service_source;
	case CONF_SRC_WORKLOAD_IDENTITY:
		return &auth__workload_source;
	case CONF_SRC_CLIENT_SECRET:
		return &auth__client_secret_source;
	case CONF_SRC_CLIENT_CERTIFICATE:
		return &auth__client_cert_source;
	case CONF_SRC_AZURE_CLI:
		return &auth__azure_cli_source;
	case CONF_SRC_IMDS:
	case CONF_SRC_AUTO: /* never: resolving leaves no AUTO */
	default:
		return &auth__imds_source;
	}
}
