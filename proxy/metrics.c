/*
 * metrics.c - what the HTTP endpoint reports: Prometheus text for
 * /metrics, JSON for /v1/pools and /v1/tokens, and the /readyz verdict.
 *
 * Everything is read from the counters the engine keeps anyway (pool
 * state counts, tp_pool_stats_t, the token cache's entries); rendering
 * happens only when somebody asks, so the hot path pays a few increments.
 * No token, password or secret is ever part of the output.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "proxy/tp.h"

static const double hist_bounds[TP_HIST_N] = TP_HIST_BOUNDS;

void tp_hist_observe(tp_hist_t *h, double seconds)
{
	size_t i = 0;

	while (i < TP_HIST_N && seconds > hist_bounds[i])
		i++;
	h->bucket[i]++;
	h->count++;
	h->sum += seconds;
}

void tp_count_error(tp_t *tp, int err)
{
	if (err > TP_ERR_FIRST_ && err < TP_ERR_LAST_)
		tp->errors[err - TP_ERR_FIRST_]++;
}

/* ---- a growable text buffer ---- */

typedef struct {
	char *p;
	size_t len, cap;
	bool oom;
} sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		size_t room = b->cap - b->len;

		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 8192;

		while (cap - b->len <= (size_t)n)
			cap *= 2;
		char *grown = realloc(b->p, cap);

		if (!grown) {
			b->oom = true;
			return;
		}
		b->p = grown;
		b->cap = cap;
	}
}

/* Label values are names from the config or the token cache; escape what
 * the text format requires (backslash, quote, newline). */
static void sb_label(sbuf_t *b, const char *v)
{
	for (; v && *v; v++) {
		if (*v == '\\' || *v == '"')
			sb_printf(b, "\\%c", *v);
		else if (*v == '\n')
			sb_printf(b, "\\n");
		else
			sb_printf(b, "%c", *v);
	}
}

static void family(sbuf_t *b, const char *name, const char *type,
		   const char *help)
{
	sb_printf(b, "# HELP tokenpool_%s %s\n# TYPE tokenpool_%s %s\n", name,
		  help, name, type);
}

static void pool_sample(sbuf_t *b, const char *name, tp_pool_t *p,
			const char *extra, double v)
{
	sb_printf(b, "tokenpool_%s{pool=\"", name);
	sb_label(b, p->conf->name);
	sb_printf(b, "\"%s} %.17g\n", extra ? extra : "", v);
}

static void histogram(sbuf_t *b, const char *name, tp_pool_t *p,
		      const tp_hist_t *h)
{
	uint64_t cum = 0;

	for (size_t i = 0; i <= TP_HIST_N; i++) {
		cum += h->bucket[i];
		sb_printf(b, "tokenpool_%s_bucket{pool=\"", name);
		sb_label(b, p->conf->name);
		if (i < TP_HIST_N)
			sb_printf(b, "\",le=\"%g\"} %llu\n", hist_bounds[i],
				  (unsigned long long)cum);
		else
			sb_printf(b, "\",le=\"+Inf\"} %llu\n",
				  (unsigned long long)cum);
	}
	sb_printf(b, "tokenpool_%s_sum{pool=\"", name);
	sb_label(b, p->conf->name);
	sb_printf(b, "\"} %.17g\n", h->sum);
	sb_printf(b, "tokenpool_%s_count{pool=\"", name);
	sb_label(b, p->conf->name);
	sb_printf(b, "\"} %llu\n", (unsigned long long)h->count);
}

static const struct {
	const char *label;
	tp_conn_state_t st;
} client_states[] = {{"login", TP_C_LOGIN},
		     {"idle", TP_C_IDLE},
		     {"waiting", TP_C_WAITING},
		     {"active", TP_C_ACTIVE}},
  server_states[] = {{"connecting", TP_S_CONNECTING},
		     {"idle", TP_S_IDLE},
		     {"active", TP_S_ACTIVE},
		     {"resetting", TP_S_RESET}};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* One gauge per (pool, state). */
static void conn_family(sbuf_t *b, tp_t *tp, const char *name, const char *help,
			bool clients)
{
	size_t n = clients ? NELEM(client_states) : NELEM(server_states);

	family(b, name, "gauge", help);
	for (size_t i = 0; i < tp->npools; i++) {
		tp_pool_t *p = tp->pools[i];

		for (size_t j = 0; j < n; j++) {
			char extra[96];
			const char *label = clients ? client_states[j].label
						    : server_states[j].label;
			tp_conn_state_t st =
			    clients ? client_states[j].st : server_states[j].st;

			snprintf(extra, sizeof(extra),
				 ",protocol=\"%s\",state=\"%s\"",
				 p->proto->name, label);
			pool_sample(b, name, p, extra, p->count[st]);
		}
	}
}

/* A per-pool family of one value each. */
#define POOL_FAMILY(b, tp, name, type, help, expr)                     \
	do {                                                           \
		family(b, name, type, help);                           \
		for (size_t i_ = 0; i_ < (tp)->npools; i_++) {         \
			tp_pool_t *p = (tp)->pools[i_];                \
			pool_sample(b, name, p, NULL, (double)(expr)); \
		}                                                      \
	} while (0)

/* Two samples per pool, side client and server. */
static void bytes_family(sbuf_t *b, tp_t *tp, const char *name,
			 const char *help, bool in)
{
	family(b, name, "counter", help);
	for (size_t i = 0; i < tp->npools; i++) {
		tp_pool_t *p = tp->pools[i];

		pool_sample(b, name, p, ",side=\"client\"",
			    (double)(in ? p->st.client_in : p->st.client_out));
		pool_sample(b, name, p, ",side=\"server\"",
			    (double)(in ? p->st.server_in : p->st.server_out));
	}
}

typedef struct {
	sbuf_t *b;
	int pass; /* 0 expiry, 1 refreshes ok, 2 refreshes failed */
} token_walk_t;

static void token_labels(sbuf_t *b, const auth_token_info_t *info)
{
	sb_printf(b, "identity=\"");
	sb_label(b, info->identity);
	sb_printf(b, "\",scope=\"");
	sb_label(b, info->scope);
	sb_printf(b, "\"");
}

static void on_token_info(void *arg, const auth_token_info_t *info)
{
	token_walk_t *w = arg;
	double left =
	    info->expires_on > 0 ? info->expires_on - (double)time(NULL) : 0;

	if (w->pass == 0) {
		sb_printf(w->b, "tokenpool_token_expiry_seconds{");
		token_labels(w->b, info);
		sb_printf(w->b, "} %.0f\n", left > 0 ? left : 0);
		return;
	}
	sb_printf(w->b, "tokenpool_token_refreshes_total{");
	token_labels(w->b, info);
	sb_printf(w->b, ",outcome=\"%s\"} %llu\n",
		  w->pass == 1 ? "ok" : "failed",
		  (unsigned long long)(w->pass == 1 ? info->fetch_ok
						    : info->fetch_failed));
}

static void error_family(sbuf_t *b, tp_t *tp)
{
	family(b, "errors_total", "counter",
	       "Errors clients were refused or disconnected with, by kind.");
	for (int e = TP_ERR_FIRST_ + 1; e < TP_ERR_LAST_; e++) {
		/* "TP_EAUTH" -> "auth" */
		const char *name = tp_err_name(e);
		char kind[32];
		size_t k = 0;

		if (e == TP_EAGAIN)
			continue;
		name += strncmp(name, "TP_E", 4) == 0 ? 4 : 0;
		for (; *name && k + 1 < sizeof(kind); name++)
			kind[k++] = (char)(*name >= 'A' && *name <= 'Z'
					       ? *name - 'A' + 'a'
					       : *name);
		kind[k] = 0;
		sb_printf(b, "tokenpool_errors_total{kind=\"%s\"} %llu\n", kind,
			  (unsigned long long)tp->errors[e - TP_ERR_FIRST_]);
	}
}

char *tp_metrics_render(tp_t *tp, size_t *len)
{
	sbuf_t b = {0};
	token_walk_t w = {.b = &b};
	char *why = NULL;
	bool ready = tp_ready(tp, &why);

	free(why);
	family(&b, "build_info", "gauge", "Version of this tokenpool.");
	sb_printf(&b, "tokenpool_build_info{version=\"%s\"} 1\n", TP_VERSION);
	family(&b, "ready", "gauge", "1 when /readyz answers 200.");
	sb_printf(&b, "tokenpool_ready %d\n", ready ? 1 : 0);
	conn_family(&b, tp, "clients", "Client connections by pool and state.",
		    true);
	conn_family(&b, tp, "servers", "Server connections by pool and state.",
		    false);
	POOL_FAMILY(&b, tp, "clients_waiting", "gauge",
		    "Clients waiting for a server connection.",
		    p->count[TP_C_WAITING]);
	POOL_FAMILY(&b, tp, "pool_size", "gauge",
		    "Configured maximum of server connections.",
		    p->conf->pool.size);
	POOL_FAMILY(&b, tp, "pool_paused", "gauge",
		    "1 while the pool is paused by an admin.", p->paused);
	POOL_FAMILY(&b, tp, "client_connections_total", "counter",
		    "Clients routed to the pool.", p->st.client_conns);
	family(&b, "server_logins_total", "counter",
	       "Server logins by outcome.");
	for (size_t i = 0; i < tp->npools; i++) {
		tp_pool_t *p = tp->pools[i];

		pool_sample(&b, "server_logins_total", p, ",outcome=\"ok\"",
			    (double)p->st.logins_ok);
		pool_sample(&b, "server_logins_total", p, ",outcome=\"failed\"",
			    (double)p->st.logins_failed);
	}
	POOL_FAMILY(&b, tp, "transactions_total", "counter",
		    "Transactions (requests answered outside a transaction).",
		    p->st.transactions);
	POOL_FAMILY(&b, tp, "queries_total", "counter",
		    "Client requests forwarded to a server.", p->st.queries);
	bytes_family(&b, tp, "bytes_received_total",
		     "Bytes read from clients and servers.", true);
	bytes_family(&b, tp, "bytes_sent_total",
		     "Bytes written to clients and servers.", false);
	family(&b, "client_wait_seconds", "histogram",
	       "Time a client waited for a server connection.");
	for (size_t i = 0; i < tp->npools; i++)
		histogram(&b, "client_wait_seconds", tp->pools[i],
			  &tp->pools[i]->st.wait);
	family(&b, "server_connect_seconds", "histogram",
	       "Time to open a server connection: token, DNS, TCP, TLS, "
	       "login.");
	for (size_t i = 0; i < tp->npools; i++)
		histogram(&b, "server_connect_seconds", tp->pools[i],
			  &tp->pools[i]->st.connect);
	family(&b, "token_expiry_seconds", "gauge",
	       "Seconds until the cached access token expires.");
	if (tp->tokens)
		auth_tokens_foreach(tp->tokens, on_token_info, &w);
	family(&b, "token_refreshes_total", "counter",
	       "Token fetches by outcome.");
	for (w.pass = 1; w.pass <= 2 && tp->tokens; w.pass++)
		auth_tokens_foreach(tp->tokens, on_token_info, &w);
	error_family(&b, tp);
	family(&b, "reloads_total", "counter", "Config reloads by outcome.");
	sb_printf(&b, "tokenpool_reloads_total{outcome=\"ok\"} %llu\n",
		  (unsigned long long)tp->reloads_ok);
	sb_printf(&b, "tokenpool_reloads_total{outcome=\"failed\"} %llu\n",
		  (unsigned long long)tp->reloads_failed);
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	*len = b.len;
	return b.p;
}

/* ---- JSON ---- */

static char *json_out(cJSON *root)
{
	char *out = root ? cJSON_PrintUnformatted(root) : NULL;

	cJSON_Delete(root);
	return out;
}

static cJSON *states_json(tp_pool_t *p, bool clients)
{
	cJSON *o = cJSON_CreateObject();
	size_t n = clients ? NELEM(client_states) : NELEM(server_states);

	for (size_t j = 0; j < n && o; j++)
		cJSON_AddNumberToObject(
		    o,
		    clients ? client_states[j].label : server_states[j].label,
		    p->count[clients ? client_states[j].st
				     : server_states[j].st]);
	return o;
}

char *tp_pools_json(tp_t *tp)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *arr = root ? cJSON_AddArrayToObject(root, "pools") : NULL;

	for (size_t i = 0; i < tp->npools && arr; i++) {
		tp_pool_t *p = tp->pools[i];
		const conf_pool_t *c = p->conf;
		cJSON *o = cJSON_CreateObject();
		char reason[1024] = "";

		if (!o)
			break;
		cJSON_AddItemToArray(arr, o);
		cJSON_AddStringToObject(o, "name", c->name);
		cJSON_AddStringToObject(o, "protocol", p->proto->name);
		cJSON_AddStringToObject(o, "listen", c->listen);
		cJSON_AddStringToObject(o, "server", c->server.host);
		cJSON_AddNumberToObject(o, "port", c->server.port);
		cJSON_AddStringToObject(o, "database", c->server.database);
		cJSON_AddStringToObject(o, "user", c->server.user);
		cJSON_AddStringToObject(o, "identity",
					tp_pool_identity_label(p));
		cJSON_AddStringToObject(o, "mode",
					c->pool.mode == CONF_POOL_TRANSACTION
					    ? "transaction"
					    : "session");
		cJSON_AddNumberToObject(o, "size", c->pool.size);
		cJSON_AddNumberToObject(o, "max_clients", c->pool.max_clients);
		cJSON_AddBoolToObject(o, "paused", p->paused);
		cJSON_AddBoolToObject(o, "removed", p->removed);
		cJSON_AddBoolToObject(o, "ready",
				      tp_pool_ready(p, reason, sizeof(reason)));
		if (reason[0])
			cJSON_AddStringToObject(o, "not_ready", reason);
		cJSON_AddItemToObject(o, "clients", states_json(p, true));
		cJSON_AddItemToObject(o, "servers", states_json(p, false));
		cJSON_AddNumberToObject(o, "server_logins_ok",
					(double)p->st.logins_ok);
		cJSON_AddNumberToObject(o, "server_logins_failed",
					(double)p->st.logins_failed);
		cJSON_AddNumberToObject(o, "transactions",
					(double)p->st.transactions);
		cJSON_AddNumberToObject(o, "queries", (double)p->st.queries);
		if (p->last_fail[0])
			cJSON_AddStringToObject(o, "last_failure",
						p->last_fail);
	}
	return json_out(root);
}

static void on_token_json(void *arg, const auth_token_info_t *info)
{
	cJSON *o = cJSON_CreateObject();

	if (!o || !cJSON_AddItemToArray(arg, o)) {
		cJSON_Delete(o);
		return;
	}
	cJSON_AddStringToObject(o, "identity", info->identity);
	cJSON_AddStringToObject(o, "source", info->source);
	cJSON_AddStringToObject(o, "scope", info->scope);
	cJSON_AddBoolToObject(o, "valid", info->valid);
	cJSON_AddBoolToObject(o, "fetching", info->fetching);
	cJSON_AddNumberToObject(o, "expires_on", info->expires_on);
	cJSON_AddNumberToObject(
	    o, "expires_in",
	    info->expires_on > 0 ? info->expires_on - (double)time(NULL) : 0);
	cJSON_AddNumberToObject(o, "next_refresh", info->next_refresh);
	cJSON_AddNumberToObject(o, "fetch_ok", (double)info->fetch_ok);
	cJSON_AddNumberToObject(o, "fetch_failed", (double)info->fetch_failed);
	if (info->last_error)
		cJSON_AddStringToObject(o, "last_error", info->last_error);
}

char *tp_tokens_json(tp_t *tp)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *arr = root ? cJSON_AddArrayToObject(root, "tokens") : NULL;

	if (arr && tp->tokens)
		auth_tokens_foreach(tp->tokens, on_token_json, arr);
	return json_out(root);
}

bool tp_ready(tp_t *tp, char **why)
{
	cJSON *reasons = cJSON_CreateArray();
	bool ready = true;
	char reason[1024];

	*why = NULL;
	if (tp->stopping) {
		ready = false;
		cJSON_AddItemToArray(reasons,
				     cJSON_CreateString("shutting down"));
	}
	for (size_t i = 0; i < tp->npools && !tp->stopping; i++) {
		if (tp->pools[i]->removed)
			continue;
		reason[0] = 0;
		if (!tp_pool_ready(tp->pools[i], reason, sizeof(reason))) {
			ready = false;
			cJSON_AddItemToArray(reasons,
					     cJSON_CreateString(reason));
		}
	}
	if (!ready) {
		cJSON *root = cJSON_CreateObject();

		if (root && reasons) {
			cJSON_AddItemToObject(root, "reasons", reasons);
			reasons = NULL;
		}
		*why = json_out(root);
	}
	cJSON_Delete(reasons);
	return ready;
}
