/*
 * source_select.c - which identity source a configured identity uses, and
 * with what: the config's own values, filled in from the environment the
 * way the Azure SDKs' DefaultAzureCredential reads it.
 *
 * `auto` follows CONTRACT.md's order:
 *   1. service principal: a client secret or certificate (config, or
 *      AZURE_CLIENT_SECRET / AZURE_CLIENT_CERTIFICATE_PATH) with a tenant
 *      and client id (config, or AZURE_TENANT_ID / AZURE_CLIENT_ID); the
 *      secret wins over the certificate, as in the SDKs;
 *   2. workload identity: a federated token file (config, or
 *      AZURE_FEDERATED_TOKEN_FILE) with a tenant and client id;
 *   3. App Service / Container Apps: IDENTITY_ENDPOINT + IDENTITY_HEADER;
 *   4. IMDS, or the Azure CLI when IMDS is unreachable: that needs the
 *      network, so the first fetch decides it (sources.c).
 * AZURE_CLIENT_ID also selects a user-assigned managed identity in 3 and 4
 * when the config names none, as in the SDKs.
 *
 * Where the SDKs quietly skip a half-configured credential (a client secret
 * without a tenant, IDENTITY_ENDPOINT without its header) we stop with one
 * line naming what to set: falling through to IMDS would only fail later
 * with a reason that points away from the real mistake.
 *
 * Pure: no I/O; the environment comes through a getenv-like callback so
 * unit tests can hand in a table. Files named here are read at fetch time.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "auth/internal.h"

#define DEFAULT_AUTHORITY "https://login.microsoftonline.com"
#define TENANT_MAX	  256

#define SP_SKIPPED                                                     \
	"client_secret/client_certificate: no AZURE_CLIENT_SECRET or " \
	"AZURE_CLIENT_CERTIFICATE_PATH"
#define WI_SKIPPED "workload_identity: no AZURE_FEDERATED_TOKEN_FILE"
#define AS_SKIPPED "app_service: no IDENTITY_ENDPOINT"

typedef struct sel {
	const conf_identity_t *conf;
	auth_getenv_fn env;
	void *arg;
	auth_ident_t *out;
	bool oom;
} sel_t;

static const char *env_get(sel_t *s, const char *name)
{
	const char *v = s->env ? s->env(s->arg, name) : NULL;

	return v && v[0] ? v : NULL;
}

/* *dst = copy of v, unless *dst is already set or v is NULL. */
static void fill(sel_t *s, char **dst, const char *v)
{
	if (*dst || !v)
		return;
	*dst = strdup(v);
	if (!*dst)
		s->oom = true;
}

static void fill_env(sel_t *s, char **dst, const char *name)
{
	fill(s, dst, env_get(s, name));
}

static void set_line(sel_t *s, char **dst, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The first line set wins: one misconfiguration is reported, the first. */
static void set_line(sel_t *s, char **dst, const char *fmt, ...)
{
	va_list ap;

	if (*dst)
		return;
	va_start(ap, fmt);
	if (vasprintf(dst, fmt, ap) < 0) {
		*dst = NULL;
		s->oom = true;
	}
	va_end(ap);
}

#define MISCONFIGURED(s, ...) \
	set_line((s), &(s)->out->config_error, __VA_ARGS__)

/* ---- values ---- */

static bool host_is_loopback(const char *url)
{
	const char *h = strstr(url, "://");
	char host[256];
	size_t n;
	struct in_addr a4;
	struct in6_addr a6;

	if (!h)
		return false;
	h += 3;
	if (*h == '[') {
		n = strcspn(++h, "]");
	} else {
		n = strcspn(h, ":/?#");
	}
	if (n == 0 || n >= sizeof(host) || memchr(h, '@', strcspn(h, "/")))
		return false;
	memcpy(host, h, n);
	host[n] = '\0';
	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return inet_pton(AF_INET6, host, &a6) == 1 &&
	       memcmp(&a6, &in6addr_loopback, sizeof(a6)) == 0;
}

/*
 * The config's authority unless it is the default (the config cannot tell
 * "unset" from the default), then AZURE_AUTHORITY_HOST (AKS workload
 * identity sets it), then the default. The variable gets the config's
 * rule: https://, or a loopback host (a secret never crosses a network in
 * clear).
 */
static void resolve_authority(sel_t *s)
{
	const char *c = s->conf->authority,
		   *e = env_get(s, "AZURE_AUTHORITY_HOST");
	auth_ident_t *o = s->out;
	size_t n;

	if (c && strcmp(c, DEFAULT_AUTHORITY) != 0)
		fill(s, &o->authority, c);
	else if (e && strncasecmp(e, "https://", 8) != 0 &&
		 !(strncasecmp(e, "http://", 7) == 0 && host_is_loopback(e)))
		MISCONFIGURED(
		    s,
		    "AZURE_AUTHORITY_HOST must be https:// unless its "
		    "host is a loopback address, got \"%.100s\"",
		    e);
	else
		fill(s, &o->authority, e ? e : DEFAULT_AUTHORITY);
	n = o->authority ? strlen(o->authority) : 0;
	while (n > 0 && o->authority[n - 1] == '/')
		o->authority[--n] = '\0';
}

static bool uses_entra(conf_source_t src)
{
	return src == CONF_SRC_CLIENT_SECRET ||
	       src == CONF_SRC_CLIENT_CERTIFICATE ||
	       src == CONF_SRC_WORKLOAD_IDENTITY;
}

/* Tenants are GUIDs or domain names; anything else would change the token
 * URL's path. */
static bool tenant_ok(const char *t)
{
	size_t n = strlen(t);

	if (n == 0 || n > TENANT_MAX)
		return false;
	for (; *t; t++)
		if (!(('a' <= *t && *t <= 'z') || ('A' <= *t && *t <= 'Z') ||
		      ('0' <= *t && *t <= '9') || *t == '-' || *t == '.' ||
		      *t == '_'))
			return false;
	return true;
}

static void copy_conf(sel_t *s)
{
	const conf_identity_t *c = s->conf;
	auth_ident_t *o = s->out;

	fill(s, &o->client_id, c->client_id);
	fill(s, &o->object_id, c->object_id);
	fill(s, &o->resource_id, c->resource_id);
	fill(s, &o->tenant_id, c->tenant_id);
	fill(s, &o->imds_endpoint, c->imds_endpoint);
	fill(s, &o->federated_token_file, c->federated_token_file);
	fill(s, &o->certificate_file, c->certificate_file);
	fill(s, &o->client_secret, c->client_secret);
}

/* ---- Entra sources: tenant and client id ---- */

/* Tenant and client id for the token endpoint; what names them in a
 * message is `what` ("client_secret", "auto: AZURE_CLIENT_SECRET is set
 * but"). */
static void need_app(sel_t *s, const char *what)
{
	auth_ident_t *o = s->out;

	fill_env(s, &o->tenant_id, "AZURE_TENANT_ID");
	fill_env(s, &o->client_id, "AZURE_CLIENT_ID");
	if (!o->tenant_id)
		MISCONFIGURED(s,
			      "%s: no tenant: set identity.tenant_id or "
			      "AZURE_TENANT_ID to the app's directory (tenant) "
			      "id",
			      what);
	else if (!tenant_ok(o->tenant_id))
		MISCONFIGURED(s,
			      "%s: tenant \"%.80s\" is not a tenant id or "
			      "domain: fix identity.tenant_id or "
			      "AZURE_TENANT_ID",
			      what, o->tenant_id);
	if (!o->client_id)
		MISCONFIGURED(s,
			      "%s: no client id: set identity.client_id or "
			      "AZURE_CLIENT_ID to the app's client id",
			      what);
}

static void fill_secret(sel_t *s)
{
	/* A configured variable name is what the user asked for; the
	 * SDK's variable only stands in when none is configured. */
	if (!s->conf->client_secret_env)
		fill_env(s, &s->out->client_secret, "AZURE_CLIENT_SECRET");
}

static void fill_certificate(sel_t *s)
{
	fill_env(s, &s->out->certificate_file, "AZURE_CLIENT_CERTIFICATE_PATH");
	fill_env(s, &s->out->certificate_password,
		 "AZURE_CLIENT_CERTIFICATE_PASSWORD");
}

static void explicit_client_secret(sel_t *s)
{
	fill_secret(s);
	need_app(s, "client_secret");
	if (!s->out->client_secret)
		MISCONFIGURED(s, "client_secret: no secret: set "
				 "identity.client_secret_env to the name of a "
				 "variable holding it, or AZURE_CLIENT_SECRET");
}

static void explicit_certificate(sel_t *s)
{
	fill_certificate(s);
	need_app(s, "client_certificate");
	if (!s->out->certificate_file)
		MISCONFIGURED(s, "client_certificate: no certificate: set "
				 "identity.certificate_file or "
				 "AZURE_CLIENT_CERTIFICATE_PATH to a PEM file "
				 "with the certificate and its private key");
}

static void explicit_workload(sel_t *s)
{
	fill_env(s, &s->out->federated_token_file,
		 "AZURE_FEDERATED_TOKEN_FILE");
	need_app(s, "workload_identity");
	if (!s->out->federated_token_file)
		MISCONFIGURED(s, "workload_identity: no federated token file: "
				 "set identity.federated_token_file or "
				 "AZURE_FEDERATED_TOKEN_FILE (AKS sets it when "
				 "the pod's service account is federated)");
}

/* ---- managed identity endpoints ---- */

/* AZURE_CLIENT_ID picks a user-assigned identity when the config names
 * none (auto only, as DefaultAzureCredential does). */
static void fill_mi_selector(sel_t *s)
{
	auth_ident_t *o = s->out;

	if (!o->client_id && !o->object_id && !o->resource_id)
		fill_env(s, &o->client_id, "AZURE_CLIENT_ID");
}

/* IDENTITY_ENDPOINT and IDENTITY_HEADER; who names them in a message is
 * `what`. */
static void need_app_service(sel_t *s, const char *what)
{
	const char *ep = env_get(s, "IDENTITY_ENDPOINT");
	const char *hdr = env_get(s, "IDENTITY_HEADER");

	if (!ep)
		MISCONFIGURED(s,
			      "%s: IDENTITY_ENDPOINT is not set: enable a "
			      "managed identity on the app (App Service, "
			      "Functions, Container Apps set it), or pick "
			      "another identity.source",
			      what);
	else if (!hdr)
		MISCONFIGURED(
		    s,
		    "%s: IDENTITY_ENDPOINT is set but IDENTITY_HEADER "
		    "is not: set both (the platform sets them "
		    "together; Azure Arc's IMDS_ENDPOINT flow is not "
		    "supported)",
		    what);
	fill(s, &s->out->identity_endpoint, ep);
	fill(s, &s->out->identity_header, hdr);
}

/* ---- auto ---- */

static void auto_service_principal(sel_t *s)
{
	auth_ident_t *o = s->out;
	bool secret = o->client_secret != NULL;
	const char *from =
	    secret
		? (s->conf->client_secret ? "identity.client_secret_env"
					  : "AZURE_CLIENT_SECRET")
		: (s->conf->certificate_file ? "identity.certificate_file"
					     : "AZURE_CLIENT_CERTIFICATE_PATH");
	char what[96];

	o->source =
	    secret ? CONF_SRC_CLIENT_SECRET : CONF_SRC_CLIENT_CERTIFICATE;
	snprintf(what, sizeof(what), "auto: %s is set (service principal)",
		 from);
	need_app(s, what);
	set_line(s, &o->note,
		 "identity auto: picked %s (%s, a tenant and a client id are "
		 "set)",
		 conf_source_name(o->source), from);
}

static void auto_workload(sel_t *s)
{
	auth_ident_t *o = s->out;
	const char *from = s->conf->federated_token_file
			       ? "identity.federated_token_file"
			       : "AZURE_FEDERATED_TOKEN_FILE";
	char what[96];

	o->source = CONF_SRC_WORKLOAD_IDENTITY;
	snprintf(what, sizeof(what), "auto: %s is set (workload identity)",
		 from);
	need_app(s, what);
	set_line(s, &o->note,
		 "identity auto: picked workload_identity (%s is set); "
		 "skipped " SP_SKIPPED,
		 from);
}

static void pick_auto(sel_t *s)
{
	auth_ident_t *o = s->out;

	fill_secret(s);
	fill_certificate(s);
	if (o->client_secret || o->certificate_file)
		return auto_service_principal(s);
	fill_env(s, &o->federated_token_file, "AZURE_FEDERATED_TOKEN_FILE");
	if (o->federated_token_file)
		return auto_workload(s);
	fill_mi_selector(s);
	if (env_get(s, "IDENTITY_ENDPOINT") || env_get(s, "IDENTITY_HEADER")) {
		o->source = CONF_SRC_APP_SERVICE;
		need_app_service(s, "auto");
		set_line(s, &o->note,
			 "identity auto: picked app_service (IDENTITY_ENDPOINT "
			 "and IDENTITY_HEADER are set); skipped " SP_SKIPPED
			 "; " WI_SKIPPED);
		return;
	}
	/* The rest needs the network: sources.c decides at the first fetch
	 * and logs the pick with this. */
	o->source = CONF_SRC_IMDS;
	o->cli_fallback = true;
	set_line(s, &o->note,
		 "skipped " SP_SKIPPED "; " WI_SKIPPED "; " AS_SKIPPED);
}

/* ---- public ---- */

int auth_ident_resolve(const conf_identity_t *conf, auth_getenv_fn env,
		       void *arg, auth_ident_t *out)
{
	sel_t s = {.conf = conf, .env = env, .arg = arg, .out = out};

	memset(out, 0, sizeof(*out));
	out->configured = out->source = conf->source;
	out->picked = CONF_SRC_AUTO;
	copy_conf(&s);
	switch (conf->source) {
	case CONF_SRC_AUTO:
		pick_auto(&s);
		break;
	case CONF_SRC_APP_SERVICE:
		need_app_service(&s, "app_service");
		break;
	case CONF_SRC_WORKLOAD_IDENTITY:
		explicit_workload(&s);
		break;
	case CONF_SRC_CLIENT_SECRET:
		explicit_client_secret(&s);
		break;
	case CONF_SRC_CLIENT_CERTIFICATE:
		explicit_certificate(&s);
		break;
	case CONF_SRC_IMDS:
	case CONF_SRC_AZURE_CLI:
		break;
	}
	if (uses_entra(out->source))
		resolve_authority(&s);
	else
		fill(&s, &out->authority,
		     conf->authority ? conf->authority : DEFAULT_AUTHORITY);
	if (s.oom) {
		auth_ident_free(out);
		return TP_ENOMEM;
	}
	return 0;
}

static void free_secret(char *s)
{
	if (s)
		OPENSSL_clear_free(s, strlen(s));
}

void auth_ident_free(auth_ident_t *id)
{
	free(id->client_id);
	free(id->object_id);
	free(id->resource_id);
	free(id->tenant_id);
	free(id->imds_endpoint);
	free(id->authority);
	free(id->federated_token_file);
	free(id->certificate_file);
	free_secret(id->client_secret);
	free_secret(id->certificate_password);
	free(id->identity_endpoint);
	free_secret(id->identity_header);
	free(id->config_error);
	free(id->note);
	memset(id, 0, sizeof(*id));
}
