/*
 * doctor.c - `tokenpool doctor`: for each pool, the path a real login takes,
 * one step at a time, with one PASS or FAIL line per step and a hint that
 * names the setting to fix:
 *   token   the identity source answers (source, client id, audience,
 *           expiry are printed; the token never is)
 *   connect TCP, then TLS: the server's certificate verifies (version,
 *           subject)
 *   login   the server accepts the token (or password) for server.user
 *   query   a trivial query answers
 *
 * It uses the engine's own code path (pool.c's probe link), so what passes
 * here is what the proxy does. It never binds the listeners: it can run
 * next to a running tokenpool.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/x509.h>

#include "proxy/tp.h"

typedef enum { STEP_TOKEN, STEP_TLS, STEP_LOGIN, STEP_QUERY } step_t;

static const char *const step_names[] = {"token", "connect", "login", "query"};

typedef struct doctor {
	tp_t *tp;
	size_t next_pool;
	step_t next_step; /* the step not yet passed in the current pool */
	int failures;
} doctor_t;

static void run_next_pool(doctor_t *d);

static void line(bool ok, step_t step, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void line(bool ok, step_t step, const char *fmt, ...)
{
	va_list ap;

	printf("  %s %-7s ", ok ? "PASS" : "FAIL", step_names[step]);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

typedef struct source_lookup {
	const char *scope;
	char desc[256];
} source_lookup_t;

static void find_source(void *arg, const auth_token_info_t *info)
{
	source_lookup_t *l = arg;

	if (info->valid && strcmp(info->scope, l->scope) == 0)
		snprintf(l->desc, sizeof(l->desc), "%s", info->identity);
}

static void report_token(doctor_t *d, tp_conn_t *s)
{
	source_lookup_t src = {.scope = s->pool->conf->server.scope};
	auth_jwt_info_t jwt;
	double left;

	auth_tokens_foreach(d->tp->tokens, find_source, &src);
	if (auth_jwt_claims(s->up->login.secret, s->up->login.secret_len,
			    &jwt) != 0) {
		line(true, STEP_TOKEN, "%s (not a JWT: cannot show its claims)",
		     src.desc[0] ? src.desc : "token received");
		return;
	}
	left = jwt.exp - (double)time(NULL);
	line(true, STEP_TOKEN,
	     "source %s, client id %s, audience %s, expires in %.0f min",
	     src.desc[0] ? src.desc : "?", jwt.appid[0] ? jwt.appid : "?",
	     jwt.aud[0] ? jwt.aud : "?", left / 60);
}

static void report_tls(tp_conn_t *s)
{
	const conf_server_tls_t *t = &s->pool->conf->server.tls;
	X509 *peer = SSL_get1_peer_certificate(s->tls->ssl);
	char subject[256] = "?";

	if (peer) {
		X509_NAME_oneline(X509_get_subject_name(peer), subject,
				  sizeof(subject));
		X509_free(peer);
	}
	line(true, STEP_TLS, "%s, peer %s, %s", tp_tls_version(s->tls), subject,
	     t->mode == CONF_TLS_VERIFY_FULL ? "chain and host name verified"
	     : t->mode == CONF_TLS_VERIFY_CA
		 ? "chain verified (verify-ca)"
		 : "NOT verified (tls.mode require)");
}

static const char *hint(step_t step, int err)
{
	switch (step) {
	case STEP_TOKEN:
		return "check identity.source and its settings (client_id, "
		       "tenant_id, imds_endpoint, ...) and server.scope; the "
		       "reason above is what the identity endpoint said";
	case STEP_TLS:
		if (err == TP_ETLS)
			return "the server's certificate did not verify: set "
			       "server.tls.ca_file to the CA that signed it, "
			       "or server.tls.server_name to the name in it";
		return "cannot reach the server: check server.host and "
		       "server.port, DNS, and the server's firewall rules";
	case STEP_LOGIN:
		return "the server refused the login: check server.user is "
		       "the role made for this identity, server.database "
		       "exists, and server.scope is the server's audience";
	case STEP_QUERY:
		return "logged in but a trivial query failed: check the "
		       "role's privileges";
	}
	return "";
}

static void on_probe(void *arg, tp_conn_t *s, tp_probe_event_t ev, int err,
		     const char *msg)
{
	doctor_t *d = arg;

	switch (ev) {
	case TP_PROBE_TOKEN:
		report_token(d, s);
		d->next_step = STEP_TLS;
		return;
	case TP_PROBE_TLS:
		report_tls(s);
		d->next_step = STEP_LOGIN;
		return;
	case TP_PROBE_LOGIN:
		line(true, STEP_LOGIN, "as %s to database %s",
		     s->pool->conf->server.user,
		     s->pool->conf->server.database);
		d->next_step = STEP_QUERY;
		return;
	case TP_PROBE_QUERY:
		line(true, STEP_QUERY, "the server answered");
		break;
	case TP_PROBE_FAILED:
		/* A token failure surfaces as a token error whatever step
		 * the link thought it was in. */
		if (err == TP_ETOKEN)
			d->next_step = STEP_TOKEN;
		line(false, d->next_step, "%s", msg);
		printf("       hint: %s\n", hint(d->next_step, err));
		d->failures++;
		break;
	}
	d->next_pool++;
	run_next_pool(d);
}

static void run_next_pool(doctor_t *d)
{
	tp_t *tp = d->tp;
	tp_pool_t *pool;

	if (d->next_pool >= tp->npools) {
		tp_stop(tp, d->failures ? 1 : 0);
		return;
	}
	pool = tp->pools[d->next_pool];
	printf("pool %s (%s, %s:%d, tls %s)\n", pool->conf->name,
	       pool->proto->name, pool->conf->server.host,
	       pool->conf->server.port,
	       pool->conf->server.tls.mode == CONF_TLS_DISABLE ? "off" : "on");
	d->next_step = STEP_TOKEN;
	if (pool->conf->server.auth == CONF_AUTH_PASSWORD) {
		printf("  SKIP token   server.auth is password\n");
		d->next_step = STEP_TLS;
	}
	if (pool->conf->server.tls.mode == CONF_TLS_DISABLE)
		printf("  SKIP tls     server.tls.mode is disable (connect has "
		       "no TLS)\n");
	if (tp_pool_probe(pool, on_probe, d) != 0) {
		line(false, d->next_step, "out of memory");
		d->failures++;
		d->next_pool++;
		run_next_pool(d);
	}
}

int tp_doctor(conf_t *conf)
{
	tp_t *tp = calloc(1, sizeof(*tp));
	doctor_t d = {.tp = tp};
	char err[512] = "";
	int rc;

	if (!tp)
		return 1;
	rc = tp_init(tp, uv_default_loop(), conf, false, err, sizeof(err));
	if (rc) {
		printf("FAIL config: %s\n", err[0] ? err : tp_strerror(rc));
		free(tp);
		return 1;
	}
	run_next_pool(&d);
	rc = tp_run(tp);
	uv_loop_close(uv_default_loop());
	free(tp);
	printf("%s\n", d.failures ? "doctor: some checks failed"
				  : "doctor: all checks passed");
	return d.failures ? 1 : rc;
}
