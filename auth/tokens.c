/*
 * tokens.c - the token cache: one entry per (identity, scope), one fetch in
 * flight per entry (single flight), waiters with their own deadlines, and a
 * background refresh that keeps every entry ever asked for fresh.
 *
 * Entry life: created by the first peek or wait, then forever cycles
 * fetch -> (success: refresh timer | failure: retry timer) -> fetch.
 * A failed refresh keeps the token it had. Retryable failures back off
 * (auth_retry_delay, honouring Retry-After); configuration errors retry
 * every 60 s and fail waiters at once with the reason, since waiting will
 * not help them.
 *
 * Waiters are never called back from inside auth_token_wait(): each has a
 * uv timer that is first its deadline and, once a result is known, is
 * restarted at 0 to deliver it from the loop. auth_tokens_close() is the
 * one place that calls waiters directly (TP_ESHUTDOWN).
 *
 * Times: expiries are wall clock (they come from the endpoint as unix
 * seconds); delays become uv timers.
 *
 * Not here: how a source talks to its endpoint (source*.c), HTTP
 * (curl_uv.c). No eviction: a process has a handful of (identity, scope)
 * pairs and every one of them is kept fresh until close.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "auth/internal.h"

#define REFRESH_BEFORE	300.0	      /* s before expires_on */
#define HALF_LIFE_FROM	7200.0	      /* lifetimes from 2 h refresh at half */
#define RETRY_CAP	60.0	      /* s, backoff ceiling */
#define RETRY_AFTER_CAP 300.0	      /* s, longest Retry-After we honour */
#define CONFIG_RETRY	60.0	      /* s between tries after a config error */
#define DEMAND_GAP	1.0	      /* s between fetches callers can force */
#define MAX_DELAY	(7 * 86400.0) /* s, longest timer we arm */

typedef struct auth_entry auth_entry_t;

enum wait_state {
	WAIT_PENDING,	 /* timer is the deadline */
	WAIT_READY,	 /* result known; timer at 0 delivers it */
	WAIT_DELIVERING, /* inside the callback */
	WAIT_CLOSED	 /* timer closing; freed in its close callback */
};

struct auth_wait {
	auth_wait_t *prev, *next; /* tokens->waits until delivered */
	auth_tokens_t *tokens;
	auth_entry_t *entry;
	uv_timer_t timer;
	auth_token_cb cb;
	void *arg;
	double timeout;
	enum wait_state state;
	int err;
	char reason[AUTH_REASON_MAX * 2 + 48];
};

struct auth_entry {
	auth_entry_t *next;
	auth_tokens_t *tokens;
	char *key; /* source, selectors, endpoints, scope */
	char *scope;
	char *desc; /* "imds client_id=...": no secrets */
	const char *source_name;
	auth_ident_t ident;
	const auth_source_t *src;
	uv_timer_t timer; /* next refresh or retry */
	double due;	  /* wall clock the timer fires; 0 when not armed */
	auth_fetch_t fetch;
	bool fetching;
	char *token; /* owned; wiped on replace and free */
	size_t len;
	double expires_on;
	int failures; /* consecutive */
	bool config_error;
	double last_end;    /* wall clock the last fetch ended; 0 never */
	double retry_after; /* of the last failure, clamped */
	bool has_error;
	char last_error[AUTH_REASON_MAX * 2]; /* reason + identity */
	uint64_t requests, ok, failed;
};

struct auth_tokens {
	uv_loop_t *loop;
	auth_http_t *http;
	auth_entry_t *entries;
	auth_wait_t *waits, *waits_tail; /* undelivered, oldest first */
	double http_timeout;
	auth_log_cb log; /* may be NULL */
	void *log_arg;
	unsigned handles; /* our open uv handles; free at zero once closing */
	bool closing;
};

/* ---- small helpers ---- */

static double now_wall(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Jitter needs no secrecy, but RAND_bytes is what we have that is not a
 * process-global rand() state. */
static double rnd01(void)
{
	unsigned char b[4];

	if (RAND_bytes(b, sizeof(b)) != 1)
		return 0.5;
	return ((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
		(uint32_t)b[2] << 8 | b[3]) /
	       4294967296.0;
}

static uint64_t ms_of(double seconds)
{
	if (!(seconds > 0))
		return 0;
	if (seconds > MAX_DELAY)
		seconds = MAX_DELAY;
	return (uint64_t)(seconds * 1000.0 + 0.999);
}

static void tokens_maybe_free(auth_tokens_t *t)
{
	if (t->closing && t->handles == 0)
		free(t);
}

/* ---- timing decisions (pure) ---- */

double auth_refresh_delay(double now, double issued_at, double expires_on)
{
	double at = expires_on - REFRESH_BEFORE;
	double life = expires_on - issued_at;

	if (life >= HALF_LIFE_FROM && issued_at + life / 2 < at)
		at = issued_at + life / 2;
	return at > now ? at - now : 0;
}

double auth_refresh_after_fetch(double now, double expires_on)
{
	double d = auth_refresh_delay(now, now, expires_on);
	/* Short tokens (under ~5 min) would be due at once: refresh them at
	 * three quarters of their remaining life instead, which keeps one
	 * fetch per lifetime and a margin before logins stop using it. */
	double floor = (expires_on - now) * 0.75;

	if (floor > RETRY_CAP)
		floor = RETRY_CAP;
	if (d < floor)
		d = floor;
	return d > 0 ? d : 0;
}

double auth_retry_delay(int attempt, double retry_after, double rnd01)
{
	double d = 1;

	for (int i = 1; i < attempt && d < RETRY_CAP; i++)
		d *= 2;
	if (d > RETRY_CAP)
		d = RETRY_CAP;
	if (!(rnd01 >= 0 && rnd01 < 1))
		rnd01 = 0;
	d *= 1 - 0.25 * rnd01; /* spread retries of many processes */
	if (retry_after > RETRY_AFTER_CAP)
		retry_after = RETRY_AFTER_CAP;
	if (retry_after > d)
		d = retry_after;
	return d;
}

bool auth_http_retryable(long status)
{
	return status == 0 || status == 404 || status == 408 || status == 410 ||
	       status == 429 || (status >= 500 && status <= 599);
}

/* ---- identities and keys ---- */

/* The process environment, for auth_ident_resolve(). */
static const char *process_getenv(void *arg, const char *name)
{
	return getenv(name);
}

/* Everything that makes two identities fetch different tokens. Equal
 * values from two config snapshots give the same entry, so a reload keeps
 * its tokens. Fields are joined with 0x1f (unit separator). */
static char *key_build(const conf_identity_t *id, const char *scope)
{
	char *key = NULL;
	int n =
	    asprintf(&key,
		     "%d\x1f%s\x1f%s\x1f%s\x1f%s\x1f%s\x1f%s\x1f%s"
		     "\x1f%s\x1f%s\x1f%s",
		     (int)id->source, id->client_id ? id->client_id : "",
		     id->object_id ? id->object_id : "",
		     id->resource_id ? id->resource_id : "",
		     id->tenant_id ? id->tenant_id : "",
		     id->imds_endpoint ? id->imds_endpoint : "",
		     id->authority ? id->authority : "",
		     id->federated_token_file ? id->federated_token_file : "",
		     id->certificate_file ? id->certificate_file : "",
		     id->client_secret_env ? id->client_secret_env : "", scope);

	return n < 0 ? NULL : key;
}

/* "imds client_id=...", "app_service system-assigned", "azure_cli (az
 * login)": for logs. */
static char *describe(const char *source, const auth_ident_t *id)
{
	const char *what = "system-assigned", *val = "";
	char *s = NULL;

	if (id->source == CONF_SRC_AZURE_CLI && !id->config_error)
		what = "(az login)"; /* whoever is logged in */
	else if (id->client_id)
		what = "client_id=", val = id->client_id;
	else if (id->object_id)
		what = "object_id=", val = id->object_id;
	else if (id->resource_id)
		what = "resource_id=", val = id->resource_id;
	if (asprintf(&s, "%s %s%s%s%s", source, what, val,
		     id->tenant_id ? " tenant_id=" : "",
		     id->tenant_id ? id->tenant_id : "") < 0)
		return NULL;
	return s;
}

/* ---- entries ---- */

static void on_entry_timer(uv_timer_t *timer);

static void on_entry_closed(uv_handle_t *handle)
{
	auth_entry_t *e = handle->data;
	auth_tokens_t *t = e->tokens;

	if (e->token)
		OPENSSL_clear_free(e->token, e->len);
	auth_ident_free(&e->ident);
	free(e->key);
	free(e->scope);
	free(e->desc);
	free(e);
	t->handles--;
	tokens_maybe_free(t);
}

static void entry_free_unarmed(auth_entry_t *e)
{
	auth_ident_free(&e->ident);
	free(e->key);
	free(e->scope);
	free(e->desc);
	free(e);
}

static void tokens_log(auth_tokens_t *t, conf_log_level_t level,
		       const char *line)
{
	if (t->log)
		t->log(t->log_arg, level, line);
}

/* Resolves the identity against the environment (once: the environment
 * of a process does not change) and picks its source. */
static int entry_setup(auth_entry_t *e, const conf_identity_t *id)
{
	if (auth_ident_resolve(id, process_getenv, NULL, &e->ident) != 0)
		return TP_ENOMEM;
	e->src = auth_source_for(&e->ident);
	e->source_name =
	    e->src->name ? e->src->name : conf_source_name(e->ident.source);
	e->desc = describe(e->source_name, &e->ident);
	return e->desc ? 0 : TP_ENOMEM;
}

/* Takes ownership of key. */
static auth_entry_t *entry_new(auth_tokens_t *t, const conf_identity_t *id,
			       const char *scope, char *key)
{
	auth_entry_t *e = calloc(1, sizeof(*e));

	if (!e) {
		free(key);
		return NULL;
	}
	e->tokens = t;
	e->key = key;
	e->scope = strdup(scope);
	if (!e->scope || entry_setup(e, id) != 0 ||
	    uv_timer_init(t->loop, &e->timer) != 0) {
		entry_free_unarmed(e);
		return NULL;
	}
	e->timer.data = e;
	t->handles++;
	e->next = t->entries;
	t->entries = e;
	/* auto's IMDS-or-CLI pick is logged when the first fetch makes it;
	 * a misconfiguration reaches the waiters as their reason. */
	if (e->ident.note && !e->ident.cli_fallback && !e->ident.config_error)
		tokens_log(t, CONF_LOG_INFO, e->ident.note);
	return e;
}

static int entry_get(auth_tokens_t *t, const conf_identity_t *id,
		     const char *scope, auth_entry_t **out)
{
	char *key = key_build(id, scope);

	if (!key)
		return TP_ENOMEM;
	for (auth_entry_t *e = t->entries; e; e = e->next) {
		if (strcmp(e->key, key) == 0) {
			free(key);
			*out = e;
			return 0;
		}
	}
	*out = entry_new(t, id, scope, key);
	return *out ? 0 : TP_ENOMEM;
}

static bool entry_valid(const auth_entry_t *e, double now, double min_valid)
{
	return e->token && e->expires_on - now > min_valid;
}

static void entry_arm(auth_entry_t *e, double delay)
{
	uv_update_time(e->tokens->loop);
	uv_timer_start(&e->timer, on_entry_timer, ms_of(delay), 0);
	e->due = now_wall() + (delay > 0 ? delay : 0);
}

/* What a waiter that gives up is told: the last error, else what the
 * fetch in flight is waiting for. */
static void entry_status(const auth_entry_t *e, char *out, size_t cap)
{
	if (e->has_error)
		snprintf(out, cap, "%s", e->last_error);
	else if (e->fetching)
		snprintf(out, cap, "%s: no answer yet", e->fetch.where);
	else
		snprintf(out, cap, "%s: no request made yet", e->desc);
}

/* ---- waiters ---- */

static void on_wait_timer(uv_timer_t *timer);

static void on_wait_closed(uv_handle_t *handle)
{
	auth_wait_t *w = handle->data;
	auth_tokens_t *t = w->tokens;

	free(w);
	t->handles--;
	tokens_maybe_free(t);
}

static void wait_unlink(auth_wait_t *w)
{
	auth_tokens_t *t = w->tokens;

	if (w->prev)
		w->prev->next = w->next;
	else
		t->waits = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		t->waits_tail = w->prev;
	w->prev = w->next = NULL;
}

static void wait_link(auth_wait_t *w)
{
	auth_tokens_t *t = w->tokens;

	w->prev = t->waits_tail;
	w->next = NULL;
	if (t->waits_tail)
		t->waits_tail->next = w;
	else
		t->waits = w;
	t->waits_tail = w;
}

/* Records the result and schedules its delivery from the loop. */
static void wait_ready(auth_wait_t *w, int err, const char *reason)
{
	w->state = WAIT_READY;
	w->err = err;
	snprintf(w->reason, sizeof(w->reason), "%s", reason ? reason : "");
	uv_timer_start(&w->timer, on_wait_timer, 0, 0);
}

/* Resolves every pending waiter of e. */
static void entry_resolve(auth_entry_t *e, int err, const char *reason)
{
	for (auth_wait_t *w = e->tokens->waits; w; w = w->next)
		if (w->entry == e && w->state == WAIT_PENDING)
			wait_ready(w, err, reason);
}

/* Calls the callback once, then closes the wait. The wait is off the list
 * first, so the callback may wait, cancel others or close the cache. */
static void wait_deliver(auth_wait_t *w, int err, const char *reason)
{
	const auth_entry_t *e = w->entry;

	wait_unlink(w);
	w->state = WAIT_DELIVERING;
	if (err == 0 && e->token)
		w->cb(w->arg, 0, e->token, e->len, NULL);
	else
		w->cb(w->arg, err ? err : TP_ETOKEN, NULL, 0,
		      reason[0] ? reason : "no token");
	w->state = WAIT_CLOSED;
	uv_close((uv_handle_t *)&w->timer, on_wait_closed);
}

static void on_wait_timer(uv_timer_t *timer)
{
	auth_wait_t *w = timer->data;

	if (w->state == WAIT_PENDING) {
		char status[AUTH_REASON_MAX * 2];

		entry_status(w->entry, status, sizeof(status));
		w->err = TP_ETIMEOUT;
		snprintf(w->reason, sizeof(w->reason),
			 "no token within %g s: %s", w->timeout, status);
	}
	wait_deliver(w, w->err, w->reason);
}

void auth_wait_cancel(auth_wait_t *w)
{
	if (!w || w->state == WAIT_DELIVERING || w->state == WAIT_CLOSED)
		return;
	wait_unlink(w);
	w->state = WAIT_CLOSED;
	uv_close((uv_handle_t *)&w->timer, on_wait_closed);
}

/* ---- fetching ---- */

static void entry_fetch(auth_entry_t *e);

static void entry_store(auth_entry_t *e, auth_fetch_result_t *res, double now)
{
	if (e->token)
		OPENSSL_clear_free(e->token, e->len);
	e->token = res->token; /* taken over */
	e->len = res->len;
	res->token = NULL;
	e->expires_on = res->expires_on;
	e->ok++;
	e->failures = 0;
	e->config_error = false;
	e->has_error = false;
	e->retry_after = 0;
	entry_arm(e, auth_refresh_after_fetch(now, e->expires_on));
	if (e->tokens->log) {
		char line[AUTH_REASON_MAX * 2];

		/* The token is named by its expiry, never shown. */
		snprintf(line, sizeof(line),
			 "identity %s: token for %s from %s ok, expires in "
			 "%.0f s, next refresh in %.0f s",
			 e->desc, e->scope, e->source_name, e->expires_on - now,
			 auth_refresh_after_fetch(now, e->expires_on));
		tokens_log(e->tokens, CONF_LOG_INFO, line);
	}
	entry_resolve(e, 0, NULL);
}

/* Keeps whatever token e has; retries later. Waiters keep waiting through
 * retryable failures (their deadlines bound them) and are told at once
 * about a configuration error. */
static void entry_fail(auth_entry_t *e, const auth_fetch_result_t *res)
{
	char line[AUTH_REASON_MAX * 3];
	auth_tokens_t *t = e->tokens;
	conf_log_level_t level;
	double delay;

	e->failed++;
	e->failures++;
	e->has_error = true;
	/* Name the identity: "which client_id?" is the first question. */
	snprintf(e->last_error, sizeof(e->last_error), "%s (identity: %s)",
		 res->reason, e->desc);
	e->config_error = !res->retryable;
	e->retry_after = res->retry_after > RETRY_AFTER_CAP ? RETRY_AFTER_CAP
							    : res->retry_after;
	delay = e->config_error
		    ? CONFIG_RETRY
		    : auth_retry_delay(e->failures, e->retry_after, rnd01());
	snprintf(line, sizeof(line),
		 "token for %s from %s failed: %s; %s, next try in %.0f s",
		 e->scope, e->source_name, e->last_error,
		 e->expires_on > now_wall() ? "keeping the valid token"
					    : "no valid token",
		 delay);
	/* A configuration error reaches the log through the pools and
	 * clients that wait for the token, naming the fix; this line comes
	 * after theirs. */
	level = e->config_error ? CONF_LOG_DEBUG : CONF_LOG_WARN;
	entry_arm(e, delay);
	if (e->config_error)
		entry_resolve(e, TP_ETOKEN, e->last_error);
	tokens_log(t, level, line);
}
static void on_fetch_result(auth_entry_t *e, auth_fetch_result_t *res)
{
	double now = now_wall();

	e->last_end = now;
	if (res->err == 0 && res->token)
		entry_store(e, res, now);
	else
		entry_fail(e, res);
}

static void on_fetch_done(auth_fetch_t *f, auth_fetch_result_t *res)
{
	auth_entry_t *e = f->arg;

	e->fetching = false;
	on_fetch_result(e, res);
}

static void log_fetch(auth_entry_t *e)
{
	char line[AUTH_REASON_MAX * 2];

	if (!e->tokens->log)
		return;
	snprintf(line, sizeof(line),
		 "identity %s: fetching a token for %s (%s)", e->desc, e->scope,
		 e->fetch.where);
	tokens_log(e->tokens, CONF_LOG_DEBUG, line);
}

/* Starts the one fetch of e; a source that fails at once is handled like
 * one that failed later (its waiters still hear from the loop). */
static void entry_fetch(auth_entry_t *e)
{
	auth_tokens_t *t = e->tokens;
	auth_fetch_result_t res = {0};

	if (e->fetching || t->closing)
		return;
	uv_timer_stop(&e->timer);
	e->due = 0;
	memset(&e->fetch, 0, sizeof(e->fetch));
	e->fetch.loop = t->loop;
	e->fetch.http = t->http;
	e->fetch.ident = &e->ident;
	e->fetch.scope = e->scope;
	e->fetch.timeout = t->http_timeout;
	e->fetch.cb = on_fetch_done;
	e->fetch.arg = e;
	e->fetch.log = t->log;
	e->fetch.log_arg = t->log_arg;
	e->requests++;
	if (e->src->start(&e->fetch, &res) == 0) {
		e->fetching = true;
		log_fetch(e);
		return;
	}
	res.err = res.err ? res.err : TP_ETOKEN;
	on_fetch_result(e, &res);
}

static void on_entry_timer(uv_timer_t *timer)
{
	auth_entry_t *e = timer->data;

	e->due = 0;
	entry_fetch(e);
}

/*
 * A caller wants a token e does not have. Fetch now unless one is in
 * flight, a configuration error is waiting out its slow retry, or the last
 * fetch ended under DEMAND_GAP (or its Retry-After) ago; in the last case
 * bring the scheduled retry forward to that moment. Bounds what a crowd of
 * callers can ask of the endpoint to one request a second.
 */
static void entry_demand(auth_entry_t *e, double now)
{
	double gap = DEMAND_GAP, earliest;

	if (e->fetching || (e->config_error && e->due > 0))
		return;
	if (e->failures && e->retry_after > gap)
		gap = e->retry_after;
	earliest = e->last_end > 0 ? e->last_end + gap : now;
	if (earliest <= now)
		entry_fetch(e);
	else if (e->due == 0 || e->due > earliest)
		entry_arm(e, earliest - now);
}

/* ---- public ---- */

auth_tokens_t *auth_tokens_new(uv_loop_t *loop)
{
	auth_tokens_t *t;

	if (!loop)
		return NULL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->loop = loop;
	t->http_timeout = AUTH_HTTP_TIMEOUT;
	t->http = auth_http_new(loop);
	if (!t->http) {
		free(t);
		return NULL;
	}
	return t;
}

void auth_tokens_set_http_timeout(auth_tokens_t *t, double seconds)
{
	if (t)
		t->http_timeout = seconds > 0 ? seconds : AUTH_HTTP_TIMEOUT;
}

void auth_tokens_set_logger(auth_tokens_t *t, auth_log_cb cb, void *arg)
{
	if (!t)
		return;
	t->log = cb;
	t->log_arg = arg;
}

int auth_token_peek(auth_tokens_t *t, const conf_identity_t *id,
		    const char *scope, double min_valid, const char **token,
		    size_t *len)
{
	auth_entry_t *e;
	double now;
	int rc;

	if (!t || !id || !scope || !token || !len)
		return TP_EINVAL;
	if (t->closing)
		return TP_ESHUTDOWN;
	rc = entry_get(t, id, scope, &e);
	if (rc != 0)
		return rc;
	now = now_wall();
	if (entry_valid(e, now, min_valid)) {
		*token = e->token;
		*len = e->len;
		return 0;
	}
	entry_demand(e, now);
	return TP_EAGAIN;
}

static auth_wait_t *wait_new(auth_tokens_t *t, auth_entry_t *e, double timeout,
			     auth_token_cb cb, void *arg)
{
	auth_wait_t *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	if (uv_timer_init(t->loop, &w->timer) != 0) {
		free(w);
		return NULL;
	}
	w->timer.data = w;
	w->tokens = t;
	w->entry = e;
	w->cb = cb;
	w->arg = arg;
	w->timeout = timeout > 0 ? timeout : 0;
	w->state = WAIT_PENDING;
	t->handles++;
	wait_link(w);
	return w;
}

int auth_token_wait(auth_tokens_t *t, const conf_identity_t *id,
		    const char *scope, double timeout, auth_token_cb cb,
		    void *arg, auth_wait_t **wait)
{
	auth_entry_t *e;
	auth_wait_t *w;
	double now;
	int rc;

	if (!t || !id || !scope || !cb)
		return TP_EINVAL;
	if (t->closing)
		return TP_ESHUTDOWN;
	rc = entry_get(t, id, scope, &e);
	if (rc != 0)
		return rc;
	w = wait_new(t, e, timeout, cb, arg);
	if (!w)
		return TP_ENOMEM;
	if (wait)
		*wait = w;
	now = now_wall();
	if (entry_valid(e, now, AUTH_WAIT_MIN_VALID)) {
		wait_ready(w, 0, NULL);
	} else if (e->config_error && !e->fetching) {
		wait_ready(w, TP_ETOKEN, e->last_error);
	} else {
		uv_update_time(t->loop); /* the deadline counts from now */
		uv_timer_start(&w->timer, on_wait_timer, ms_of(w->timeout), 0);
		entry_demand(e, now);
	}
	return 0;
}

/* auto's last step reports what it picked once it has. */
static const char *entry_source(const auth_entry_t *e)
{
	if (e->ident.cli_fallback && e->ident.picked != CONF_SRC_AUTO)
		return conf_source_name(e->ident.picked);
	return e->source_name;
}

void auth_tokens_foreach(auth_tokens_t *t, auth_token_info_cb cb, void *arg)
{
	double now = now_wall();

	if (!t || !cb)
		return;
	for (const auth_entry_t *e = t->entries; e; e = e->next) {
		auth_token_info_t info = {
		    .identity = e->desc,
		    .source = entry_source(e),
		    .scope = e->scope,
		    .valid = entry_valid(e, now, 0),
		    .fetching = e->fetching,
		    .config_error = e->config_error,
		    .expires_on = e->token ? e->expires_on : 0,
		    .next_refresh = e->due,
		    .fetch_ok = e->ok,
		    .fetch_failed = e->failed,
		    .fetch_requests = e->requests,
		    .last_error = e->has_error ? e->last_error : NULL,
		};
		cb(arg, &info);
	}
}

/* Waiters first (their callbacks may still look at nothing of ours but
 * their arguments), then fetches, timers and curl. */
void auth_tokens_close(auth_tokens_t *t)
{
	auth_entry_t *e, *next;

	if (!t || t->closing)
		return;
	t->closing = true;
	while (t->waits)
		wait_deliver(t->waits, TP_ESHUTDOWN,
			     "token cache shutting down");
	for (e = t->entries, t->entries = NULL; e; e = next) {
		next = e->next;
		if (e->fetching)
			e->src->cancel(&e->fetch);
		e->fetching = false;
		uv_close((uv_handle_t *)&e->timer, on_entry_closed);
	}
	auth_http_close(t->http);
	t->http = NULL;
	tokens_maybe_free(t);
}
