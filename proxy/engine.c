/*
 * engine.c - the tp_t context: pools and listeners built from a config
 * snapshot, accept and routing, signals, the janitor, and shutdown.
 *
 * Not here: what a connection does with bytes (conn.c, flow.c), how a
 * pool hands out servers (pool.c), reload (reload.c) and the HTTP endpoint
 * (http.c).
 */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <signal.h>
#include <time.h>

#include "proxy/tp.h"

#define TP_JANITOR_MS	    1000
#define TP_TICK_MS	    100
#define TP_LOGIN_TIMEOUT_MS 60000
#define TP_BACKLOG	    4096

uint64_t tp_now_ms(tp_t *tp)
{
	return uv_now(tp->loop);
}

/* ---- routing ---- */

static void find_user(tp_pool_t *pool, const char *user, tp_route_t *route)
{
	memset(route, 0, sizeof(*route));
	route->pool = pool->conf;
	for (size_t i = 0; i < pool->conf->nclients; i++) {
		if (strcmp(pool->conf->clients[i].user, user) == 0) {
			route->client = &pool->conf->clients[i];
			route->verifier = &pool->verifiers[i];
			return;
		}
	}
}

void tp_conn_route_user(tp_conn_t *c, const char *user, tp_route_t *route)
{
	if (c->pool && user)
		find_user(c->pool, user, route);
	else
		memset(route, 0, sizeof(*route));
}

void tp_conn_set_route(tp_conn_t *c, const tp_route_t *route)
{
	if (c->pool && route->pool == c->pool->conf && route->client)
		c->route = *route;
}

int tp_conn_route(tp_conn_t *c, const char *user, const char *database,
		  tp_route_t *route)
{
	tp_listener_t *l = c->listener;
	tp_pool_t *pool = NULL;
	size_t i;

	memset(route, 0, sizeof(*route));
	if (l->npools == 0)
		return TP_ENODB; /* the listener is going away (reload) */
	for (i = 0; i < l->npools && database; i++) {
		if (strcmp(l->pools[i]->conf->name, database) == 0) {
			pool = l->pools[i];
			break;
		}
	}
	if (!database)
		pool = l->pools[0];
	if (!pool)
		return TP_ENODB;
	if (c->tp->stopping)
		return TP_ESHUTDOWN;
	if (pool->nclients >= pool->conf->pool.max_clients)
		return TP_EFULL;
	find_user(pool, user, route);
	c->route = *route;
	c->pool = pool;
	pool->count[c->state]++; /* counted from here on */
	pool->nclients++;
	pool->st.client_conns++;
	return 0;
}

tp_conn_t *tp_find_client_by_key(tp_t *tp, const uint8_t *key, size_t len)
{
	/* PG keys are 8 bytes; MySQL thread ids are their first 4. */
	if (len != 8 && len != 4)
		return NULL;
	for (size_t i = 0; i < tp->npools; i++) {
		tp_list_t *lists[] = {&tp->pools[i]->c_active,
				      &tp->pools[i]->c_idle,
				      &tp->pools[i]->c_waiting};

		for (size_t j = 0; j < 3; j++) {
			for (tp_list_t *n = lists[j]->next; n != lists[j];
			     n = n->next) {
				tp_conn_t *c =
				    tp_container_of(n, tp_conn_t, node);

				if (auth_equal(c->client_key, key, len))
					return c;
			}
		}
	}
	return NULL;
}

/* ---- accept ---- */

static void login_timeout(tp_conn_t *c)
{
	tp_conn_error_close(c, TP_ETIMEOUT, "login did not finish in time");
}

static void on_accept(uv_stream_t *server, int status)
{
	tp_listener_t *l = server->data;
	tp_conn_t *c;
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	if (status < 0 || l->closing)
		return;
	c = tp_conn_new(l->tp, TP_SIDE_CLIENT, l->proto);
	if (!c)
		return;
	c->listener = l;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
	    auth_random(c->client_key, sizeof(c->client_key)) != 0) {
		tp_conn_close(c, "accept failed");
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;

			memcpy(c->peer_ip, &a->sin_addr, 4);
			c->peer_port = ntohs(a->sin_port);
			c->peer_family = AF_INET;
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

			memcpy(c->peer_ip, &a->sin6_addr, 16);
			c->peer_port = ntohs(a->sin6_port);
			c->peer_family = AF_INET6;
		}
	}
	tp_conn_set_state(c, TP_C_LOGIN);
	tp_conn_deadline(c, login_timeout, TP_LOGIN_TIMEOUT_MS);
	tp_log(TP_LOG_INFO, c, "client connected");
	tp_conn_start_read(c);
	if (!c->closing) {
		tp_step_t step = c->proto->client_start(c);

		if (step == TP_STEP_CLOSE)
			tp_conn_error_close(c, TP_EPROTO, "cannot start");
		else
			tp_conn_flush(c);
	}
}

static void on_listener_closed(uv_handle_t *h)
{
	tp_listener_t *l = h->data;

	SSL_CTX_free(l->client_ctx);
	free(l->pools);
	free(l->addr);
	free(l);
}

/* Closes the socket now; the listener is freed in the close callback.
 * Clients it accepted keep running (they point at it only for its TLS
 * context, which they have already used or no longer need). */
void tp_listener_close(tp_listener_t *l)
{
	tp_t *tp = l->tp;

	for (size_t i = 0; i < tp->nlisteners; i++) {
		if (tp->listeners[i] == l) {
			tp->listeners[i] = tp->listeners[--tp->nlisteners];
			break;
		}
	}
	l->closing = true;
	l->npools = 0;
	uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
}

static int listener_bind(tp_listener_t *l, const conf_pool_t *pc, char *err,
			 size_t errlen)
{
	struct sockaddr_storage ss;
	int rc;

	if (uv_ip4_addr(pc->listen_host, pc->listen_port,
			(struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(pc->listen_host, pc->listen_port,
			(struct sockaddr_in6 *)&ss) != 0) {
		snprintf(err, errlen, "%s: listen address must be an IP",
			 pc->listen);
		return TP_ECONFIG;
	}
	rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&l->tcp, TP_BACKLOG, on_accept);
	if (rc) {
		snprintf(err, errlen, "cannot listen on %s: %s", pc->listen,
			 uv_strerror(rc));
		return TP_EIO;
	}
	tp_log(TP_LOG_INFO, NULL, "listening on %s (%s)", pc->listen,
	       l->proto->name);
	return 0;
}

/* The listener for pc's address: the bound one, or a new one. Pools that
 * share an address share its listener (conf/ checked they share the
 * protocol; reload checks it against the running ones). */
tp_listener_t *tp_listener_for(tp_t *tp, const conf_pool_t *pc,
			       const tp_protocol_t *proto, char *err,
			       size_t errlen)
{
	tp_listener_t *l, **grown;
	int rc;

	for (size_t i = 0; i < tp->nlisteners; i++)
		if (strcmp(tp->listeners[i]->addr, pc->listen) == 0)
			return tp->listeners[i];
	grown = realloc(tp->listeners,
			(tp->nlisteners + 1) * sizeof(*tp->listeners));
	l = calloc(1, sizeof(*l));
	if (grown)
		tp->listeners = grown;
	if (!grown || !l || !(l->addr = strdup(pc->listen))) {
		free(l);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	l->tp = tp;
	l->proto = proto;
	if (pc->client_tls.mode != CONF_CTLS_DISABLE) {
		l->client_ctx = tp_tls_server_ctx(&pc->client_tls, err, errlen);
		if (!l->client_ctx) {
			free(l->addr);
			free(l);
			return NULL;
		}
	}
	uv_tcp_init(tp->loop, &l->tcp);
	l->tcp.data = l;
	tp->listeners[tp->nlisteners++] = l;
	rc = listener_bind(l, pc, err, errlen);
	if (rc) {
		tp_listener_close(l);
		return NULL;
	}
	return l;
}

/* Adds pool to its listener's routing list (config order). */
static int listener_add_pool(tp_listener_t *l, tp_pool_t *pool)
{
	tp_pool_t **grown =
	    realloc(l->pools, (l->npools + 1) * sizeof(*l->pools));

	if (!grown)
		return TP_ENOMEM;
	l->pools = grown;
	l->pools[l->npools++] = pool;
	return 0;
}

static int build_listeners(tp_t *tp, char *err, size_t errlen)
{
	for (size_t i = 0; i < tp->npools; i++) {
		tp_pool_t *pool = tp->pools[i];
		tp_listener_t *l =
		    tp_listener_for(tp, pool->conf, pool->proto, err, errlen);

		if (!l)
			return TP_EIO;
		if (listener_add_pool(l, pool))
			return TP_ENOMEM;
	}
	return 0;
}

/* Routing lists of every listener rebuilt from the live pools, in config
 * order; listeners left without a pool close (reload). */
int tp_listeners_rebuild(tp_t *tp)
{
	for (size_t i = 0; i < tp->nlisteners; i++)
		tp->listeners[i]->npools = 0;
	for (size_t i = 0; i < tp->npools; i++) {
		tp_pool_t *pool = tp->pools[i];

		if (pool->removed)
			continue;
		for (size_t j = 0; j < tp->nlisteners; j++) {
			tp_listener_t *l = tp->listeners[j];

			if (strcmp(l->addr, pool->conf->listen) == 0 &&
			    listener_add_pool(l, pool))
				return TP_ENOMEM;
		}
	}
	for (size_t j = tp->nlisteners; j-- > 0;) {
		if (tp->listeners[j]->npools == 0) {
			tp_log(TP_LOG_INFO, NULL, "no longer listening on %s",
			       tp->listeners[j]->addr);
			tp_listener_close(tp->listeners[j]);
		}
	}
	return 0;
}

tp_pool_t *tp_pool_find(tp_t *tp, const char *name)
{
	for (size_t i = 0; i < tp->npools; i++)
		if (!tp->pools[i]->removed &&
		    strcmp(tp->pools[i]->conf->name, name) == 0)
			return tp->pools[i];
	return NULL;
}

void tp_retire(tp_t *tp, void *p, size_t cleanse)
{
	struct tp_retired *grown;

	if (!p)
		return;
	grown = realloc(tp->retired, (tp->nretired + 1) * sizeof(*grown));
	if (!grown) {
		/* Freeing it could pull memory from under a login: keep it. */
		tp_log(TP_LOG_WARN, NULL,
		       "out of memory keeping an old config");
		return;
	}
	tp->retired = grown;
	tp->retired[tp->nretired].p = p;
	tp->retired[tp->nretired++].cleanse = cleanse;
}

/* ---- periodic work and signals ---- */

static void on_tick(uv_timer_t *t)
{
	tp_deadlines_sweep(t->data);
}

static void on_janitor(uv_timer_t *t)
{
	tp_t *tp = t->data;

	for (size_t i = tp->npools; i-- > 0;) {
		tp_pool_t *pool = tp->pools[i];

		if (pool->removed && tp_pool_drained(pool)) {
			tp_log(TP_LOG_INFO, NULL, "pool %s removed",
			       pool->conf->name);
			tp_pool_destroy(pool);
			free(pool);
			memmove(&tp->pools[i], &tp->pools[i + 1],
				(tp->npools - i - 1) * sizeof(*tp->pools));
			tp->npools--;
			continue;
		}
		tp_pool_janitor(pool);
	}
}

static void on_signal(uv_signal_t *h, int signum)
{
	tp_t *tp = h->data;

	if (tp->stopping) {
		tp_log(TP_LOG_WARN, NULL, "second signal: exiting now");
		exit(tp->exit_code);
	}
	tp_log(TP_LOG_INFO, NULL, "%s received: shutting down",
	       signum == SIGTERM ? "SIGTERM" : "SIGINT");
	tp_stop(tp, 0);
}

static void on_sighup(uv_signal_t *h, int signum)
{
	tp_t *tp = h->data;
	char err[512];

	(void)signum;
	if (tp->stopping)
		return;
	tp_log(TP_LOG_INFO, NULL, "SIGHUP received: reloading the config");
	(void)tp_reload(tp, err, sizeof(err)); /* logs either way */
}

/* The token cache's own lines: which source `auto` picked, fetches. */
static void on_auth_log(void *arg, conf_log_level_t level, const char *line)
{
	tp_log((tp_log_level_t)level, NULL, "%s", line);
}

static void on_first_token(void *arg, int err, const char *token, size_t len,
			   const char *reason)
{
	tp_pool_t *pool = arg;
	auth_jwt_info_t jwt;

	pool->prefetch = NULL;
	if (err == TP_ESHUTDOWN)
		return;
	if (err) {
		tp_log(TP_LOG_WARN, NULL, "pool %s: no access token yet: %s",
		       pool->conf->name, reason ? reason : tp_strerror(err));
		return;
	}
	if (auth_jwt_claims(token, len, &jwt) == 0 && jwt.exp > 0)
		tp_log(TP_LOG_INFO, NULL,
		       "pool %s: access token ready (appid %s), expires in "
		       "%.0f min",
		       pool->conf->name, jwt.appid[0] ? jwt.appid : "?",
		       (jwt.exp - (double)time(NULL)) / 60);
	else
		tp_log(TP_LOG_INFO, NULL, "pool %s: access token ready",
		       pool->conf->name);
}

/* Starts fetching a pool's token now, so the first client does not pay
 * for it and a broken identity shows in the log at once. */
void tp_pool_prefetch(tp_pool_t *pool)
{
	if (pool->conf->server.auth != CONF_AUTH_TOKEN || pool->prefetch)
		return;
	if (auth_token_wait(pool->tp->tokens, pool->identity,
			    pool->conf->server.scope,
			    pool->conf->pool.connect_timeout, on_first_token,
			    pool, &pool->prefetch) != 0)
		tp_log(TP_LOG_WARN, NULL, "pool %s: cannot ask for a token",
		       pool->conf->name);
}

/* A start that failed half way: close what was opened (listeners, the
 * token cache), let the loop finish the closes, free the pools. The
 * caller owns conf and tp. */
static int init_failed(tp_t *tp, int rc)
{
	while (tp->nlisteners)
		tp_listener_close(tp->listeners[0]);
	if (tp->tokens)
		auth_tokens_close(tp->tokens);
	tp->tokens = NULL;
	uv_run(tp->loop, UV_RUN_DEFAULT);
	for (size_t i = 0; i < tp->npools; i++) {
		tp_pool_destroy(tp->pools[i]);
		free(tp->pools[i]);
	}
	free(tp->pools);
	free(tp->listeners);
	tp->pools = NULL;
	tp->listeners = NULL;
	tp->npools = 0;
	return rc;
}

int tp_init(tp_t *tp, uv_loop_t *loop, conf_t *conf, bool serve, char *err,
	    size_t errlen)
{
	int rc;

	memset(tp, 0, sizeof(*tp));
	tp->loop = loop;
	tp->conf = tp->conf_initial = conf;
	tp_list_init(&tp->logins);
	tp_list_init(&tp->cancels);
	tp_list_init(&tp->timed);
	tp->tokens = auth_tokens_new(loop);
	tp->pools = calloc(conf->npools ? conf->npools : 1, sizeof(*tp->pools));
	if (!tp->tokens || !tp->pools)
		return init_failed(tp, TP_ENOMEM);
	auth_tokens_set_logger(tp->tokens, on_auth_log, tp);
	for (size_t i = 0; i < conf->npools; i++) {
		tp_pool_t *pool = calloc(1, sizeof(*pool));

		if (!pool)
			return init_failed(tp, TP_ENOMEM);
		rc = tp_pool_init(pool, tp, conf, &conf->pools[i], err, errlen);
		if (rc) {
			tp_pool_destroy(pool);
			free(pool);
			return init_failed(tp, rc);
		}
		tp->pools[tp->npools++] = pool;
	}
	/* doctor (serve false) must not take the ports of a running proxy */
	rc = serve ? build_listeners(tp, err, errlen) : 0;
	if (rc == 0 && serve && conf->http_listen)
		rc = tp_http_start(tp, conf->http_listen, err, errlen);
	if (rc)
		return init_failed(tp, rc);
	uv_timer_init(loop, &tp->janitor);
	tp->janitor.data = tp;
	uv_timer_start(&tp->janitor, on_janitor, TP_JANITOR_MS, TP_JANITOR_MS);
	uv_timer_init(loop, &tp->tick);
	tp->tick.data = tp;
	uv_timer_start(&tp->tick, on_tick, TP_TICK_MS, TP_TICK_MS);
	uv_timer_init(loop, &tp->drain_timer);
	tp->drain_timer.data = tp;
	tp_list_init(&tp->kicks);
	uv_idle_init(loop, &tp->kick);
	tp->kick.data = tp;
	uv_signal_init(loop, &tp->sigterm);
	uv_signal_init(loop, &tp->sigint);
	uv_signal_init(loop, &tp->sighup);
	tp->sigterm.data = tp->sigint.data = tp->sighup.data = tp;
	uv_signal_start(&tp->sigterm, on_signal, SIGTERM);
	uv_signal_start(&tp->sigint, on_signal, SIGINT);
	signal(SIGPIPE, SIG_IGN);
	if (!serve)
		return 0;
	uv_signal_start(&tp->sighup, on_sighup, SIGHUP);
	for (size_t i = 0; i < tp->npools; i++) {
		tp_pool_prefetch(tp->pools[i]);
		tp_pool_warmup(tp->pools[i]);
	}
	return 0;
}

static void close_list(tp_list_t *l, const char *why)
{
	while (!tp_list_empty(l))
		tp_conn_close(tp_container_of(l->next, tp_conn_t, node), why);
}

/* Sends the protocol's "shutting down" error to every client on l. */
static void refuse_list(tp_list_t *l)
{
	tp_list_t *n, *next;

	for (n = l->next; n != l; n = next) {
		next = n->next;
		tp_conn_error_close(tp_container_of(n, tp_conn_t, node),
				    TP_ESHUTDOWN, "the proxy is shutting down");
	}
}

static int remaining_clients(tp_t *tp)
{
	int n = 0;

	for (size_t i = 0; i < tp->npools; i++)
		n += tp->pools[i]->nclients;
	return n;
}

/* The last step: every connection is gone or closing; close the
 * process-wide handles so the loop ends. */
static void finish(tp_t *tp)
{
	for (size_t i = 0; i < tp->npools; i++) {
		tp_pool_t *p = tp->pools[i];
		tp_list_t *lists[] = {&p->s_connecting, &p->s_idle,
				      &p->s_active, &p->s_reset};

		for (size_t j = 0; j < sizeof(lists) / sizeof(lists[0]); j++)
			close_list(lists[j], "shutting down");
	}
	close_list(&tp->logins, "shutting down");
	close_list(&tp->cancels, "shutting down");
	while (tp->nlisteners)
		tp_listener_close(tp->listeners[0]);
	uv_close((uv_handle_t *)&tp->janitor, NULL);
	uv_close((uv_handle_t *)&tp->tick, NULL);
	uv_close((uv_handle_t *)&tp->drain_timer, NULL);
	uv_close((uv_handle_t *)&tp->kick, NULL);
	uv_close((uv_handle_t *)&tp->sigterm, NULL);
	uv_close((uv_handle_t *)&tp->sigint, NULL);
	uv_close((uv_handle_t *)&tp->sighup, NULL);
	tp_http_stop(tp);
	auth_tokens_close(tp->tokens);
	tp->tokens = NULL;
}

/* Ticks during a drain: done when no client is left. When
 * shutdown.timeout has passed, the rest get the shutdown error and a
 * second to read it, then are closed. */
static void on_drain_tick(uv_timer_t *t)
{
	tp_t *tp = t->data;
	int left = remaining_clients(tp);

	if (left > 0 && tp_now_ms(tp) < tp->drain_deadline)
		return;
	if (left > 0 && !tp->drain_forced) {
		tp_log(TP_LOG_WARN, NULL,
		       "shutdown timeout: refusing %d remaining clients", left);
		for (size_t i = 0; i < tp->npools; i++) {
			refuse_list(&tp->pools[i]->c_active);
			refuse_list(&tp->pools[i]->c_idle);
			refuse_list(&tp->pools[i]->c_waiting);
		}
		tp->drain_forced = true;
		tp->drain_deadline = tp_now_ms(tp) + 1000;
		return;
	}
	for (size_t i = 0; i < tp->npools && left > 0; i++) {
		close_list(&tp->pools[i]->c_active, "shutdown timeout");
		close_list(&tp->pools[i]->c_idle, "shutdown timeout");
		close_list(&tp->pools[i]->c_waiting, "shutdown timeout");
	}
	uv_timer_stop(t);
	finish(tp);
}

/*
 * Graceful stop: /readyz turns 503; listeners stay open only to answer
 * new clients with the protocol's shutdown error (routing refuses them),
 * which tells an app more than a refused connection; clients that are
 * logging in,
 * waiting, or (in transaction mode) between transactions get the
 * protocol's shutdown error; clients holding a server finish (session:
 * until they disconnect; transaction: at their next boundary, see
 * tp_pool_release). After shutdown.timeout the rest are refused.
 */
void tp_stop(tp_t *tp, int exit_code)
{
	if (tp->stopping)
		return;
	tp->stopping = true;
	tp->exit_code = exit_code;
	refuse_list(&tp->logins);
	for (size_t i = 0; i < tp->npools; i++) {
		tp_pool_t *p = tp->pools[i];

		refuse_list(&p->c_waiting);
		if (p->conf->pool.mode == CONF_POOL_TRANSACTION)
			refuse_list(&p->c_idle);
		close_list(&p->s_idle, "shutting down");
	}
	tp->drain_deadline =
	    tp_now_ms(tp) + (uint64_t)(tp->conf->shutdown_timeout * 1000);
	uv_timer_start(&tp->drain_timer, on_drain_tick, 0, 50);
}

int tp_run(tp_t *tp)
{
	uv_run(tp->loop, UV_RUN_DEFAULT);
	for (size_t i = 0; i < tp->npools; i++) {
		tp_pool_destroy(tp->pools[i]);
		free(tp->pools[i]);
	}
	free(tp->listeners);
	free(tp->pools);
	for (size_t i = 0; i < tp->nretired; i++) {
		struct tp_retired *r = &tp->retired[i];

		if (r->cleanse) {
			OPENSSL_cleanse(r->p, r->cleanse);
			free(r->p);
		} else if (r->p != tp->conf_initial) {
			conf_free(r->p);
		}
	}
	free(tp->retired);
	if (tp->conf != tp->conf_initial)
		conf_free(tp->conf);
	while (tp->nblocks)
		free(tp->blocks[--tp->nblocks]);
	return tp->exit_code;
}
