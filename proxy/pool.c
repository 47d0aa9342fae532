/*
 * pool.c - server connections for one pool: who gets which server, when a
 * new one is opened (token, DNS, TCP, then the protocol's login), when one
 * goes back, gets reset, or is closed.
 *
 * Limits: `size` servers (connecting ones included), `max_clients`
 * clients, a FIFO of waiting clients bounded by `wait_timeout`, logins
 * bounded by `connect_timeout` (token wait included), `idle_timeout`,
 * `lifetime` and `min_idle` kept by a periodic janitor.
 *
 * A server is reused only when nothing about it is in doubt: not broken,
 * no request in flight, outside a transaction. Anything else is closed.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/socket.h>
#include <openssl/crypto.h>

#include "proxy/tp.h"

/* A token must still be valid when the server checks it, a few
 * milliseconds after we send it; the margin covers a slow login. A larger
 * one would throw away a still-valid token while refreshes are failing,
 * and would make short-lived tokens useless. */
#define TP_TOKEN_MIN_VALID 2.0

static double conf_ms(double seconds)
{
	return seconds * 1000.0;
}

int tp_pool_init(tp_pool_t *pool, tp_t *tp, const conf_t *conf,
		 const conf_pool_t *pc, char *err, size_t errlen)
{
	memset(pool, 0, sizeof(*pool));
	pool->tp = tp;
	pool->conf = pc;
	pool->identity = conf_pool_identity(conf, pc);
	pool->proto = tp_protocol_get(pc->protocol);
	if (!pool->proto) {
		snprintf(err, errlen,
			 "pool %s: protocol %s is not supported yet", pc->name,
			 conf_protocol_name(pc->protocol));
		return TP_ECONFIG;
	}
	tp_list_init(&pool->c_idle);
	tp_list_init(&pool->c_waiting);
	tp_list_init(&pool->c_active);
	tp_list_init(&pool->s_connecting);
	tp_list_init(&pool->s_idle);
	tp_list_init(&pool->s_active);
	tp_list_init(&pool->s_reset);
	pool->verifiers =
	    calloc(pc->nclients ? pc->nclients : 1, sizeof(*pool->verifiers));
	if (!pool->verifiers)
		return TP_ENOMEM;
	for (size_t i = 0; i < pc->nclients; i++) {
		if (auth_verifier_build(&pc->clients[i], &pool->verifiers[i])) {
			snprintf(err, errlen,
				 "pools[%s].clients[%zu]: unusable credential",
				 pc->name, i);
			return TP_ECONFIG;
		}
	}
	pool->server_ctx = tp_tls_client_ctx(&pc->server.tls, err, errlen);
	if (!pool->server_ctx)
		return TP_ECONFIG;
	return 0;
}

void tp_pool_destroy(tp_pool_t *pool)
{
	if (pool->prefetch)
		auth_wait_cancel(pool->prefetch);
	if (pool->verifiers) {
		OPENSSL_cleanse(
		    pool->verifiers,
		    sizeof(*pool->verifiers) *
			(pool->conf->nclients ? pool->conf->nclients : 1));
		free(pool->verifiers);
	}
	SSL_CTX_free(pool->server_ctx);
	free(pool->welcome);
	memset(pool, 0, sizeof(*pool));
}

static int nservers(tp_pool_t *pool)
{
	return pool->count[TP_S_CONNECTING] + pool->count[TP_S_IDLE] +
	       pool->count[TP_S_ACTIVE] + pool->count[TP_S_RESET];
}

/* ---- opening a server connection ---- */

static void server_timeout(tp_conn_t *s)
{
	/* Still waiting for its token (the wait's own timeout, a little
	 * earlier, lost the race on a starved loop): that is the reason. */
	if (!s->fail_msg && s->up->token_wait)
		tp_conn_fail(
		    s, TP_ETOKEN,
		    "no access token for %s within %g s (identity: %s)",
		    s->pool->conf->server.scope,
		    s->pool->conf->pool.connect_timeout,
		    tp_pool_identity_label(s->pool));
	if (!s->fail_msg)
		tp_conn_fail(s, TP_ETIMEOUT,
			     "server %s did not finish within %g s",
			     s->state == TP_S_RESET ? "reset" : "login",
			     s->pool->conf->pool.connect_timeout);
	tp_conn_close(s, tp_conn_reason(s, "failed"));
}

static void try_connect(tp_conn_t *s);

static void on_retry_closed(uv_handle_t *h)
{
	tp_conn_t *s = h->data;

	s->reconnecting = false;
	if (s->closing) {
		tp_conn_handle_closed(h); /* closed meanwhile: finish that */
		return;
	}
	uv_tcp_init(s->tp->loop, &s->tcp);
	s->tcp.data = s;
	try_connect(s);
}

/* A server that vanishes without a FIN or RST (a failover, a dropped
 * route, a blackholed address) must not hold its client for the ~15
 * minutes TCP retransmits on its own: keepalive probes start after 60 s
 * without traffic and repeat every 10 s, and data or probes left
 * unacknowledged for TP_SERVER_USER_TIMEOUT_MS end the connection
 * (ETIMEDOUT), which its client hears as a lost server. A healthy server's
 * TCP acknowledges while a long query runs, so no slow query is cut. */
#define TP_SERVER_USER_TIMEOUT_MS 30000

static void server_socket_options(tp_conn_t *s)
{
	uv_os_fd_t fd;
	int intvl = 10, cnt = 3, user_ms = TP_SERVER_USER_TIMEOUT_MS;

	uv_tcp_nodelay(&s->tcp, 1);
	uv_tcp_keepalive(&s->tcp, 1, 60);
	if (uv_fileno((uv_handle_t *)&s->tcp, &fd) != 0)
		return;
	/* Best effort: a kernel without one of these keeps its default. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_ms,
			 sizeof(user_ms));
}

static void on_connected(uv_connect_t *req, int status)
{
	tp_conn_t *s = req->data;

	if (s->closing)
		return;
	if (status < 0) {
		tp_conn_fail(s, TP_ECONNECT, "cannot connect to %s:%d: %s",
			     tp_server_host(s), tp_server_port(s),
			     uv_strerror(status));
		if (s->up->addr_next) {
			/* Try the next address on a fresh socket. */
			s->reconnecting = true;
			uv_close((uv_handle_t *)&s->tcp, on_retry_closed);
			return;
		}
		tp_conn_close(s, tp_conn_reason(s, "failed"));
		return;
	}
	server_socket_options(s);
	tp_conn_start_read(s);
	tp_server_begin_login(s);
}

static void try_connect(tp_conn_t *s)
{
	struct addrinfo *ai = s->up->addr_next;
	int rc;

	s->up->addr_next = ai->ai_next;
	s->up->connect_req.data = s;
	rc = uv_tcp_connect(&s->up->connect_req, &s->tcp, ai->ai_addr,
			    on_connected);
	if (rc < 0) {
		tp_conn_fail(s, TP_ECONNECT, "cannot connect to %s: %s",
			     tp_server_host(s), uv_strerror(rc));
		tp_conn_close(s, tp_conn_reason(s, "failed"));
	}
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	tp_conn_t *s = req->data;

	if (s->closing) {
		if (res)
			uv_freeaddrinfo(res);
		return;
	}
	if (status < 0 || !res) {
		tp_conn_fail(s, TP_ECONNECT, "cannot resolve %s: %s",
			     tp_server_host(s), uv_strerror(status));
		tp_conn_close(s, tp_conn_reason(s, "failed"));
		return;
	}
	s->up->addrs = s->up->addr_next = res;
	try_connect(s);
}

const char *tp_server_host(tp_conn_t *s)
{
	return s->up->redirect_host ? s->up->redirect_host
				    : s->pool->conf->server.host;
}

const char *tp_server_tls_name(tp_conn_t *s)
{
	const conf_server_t *srv = &s->pool->conf->server;

	/* A redirect names the host the certificate must match. */
	if (s->up->redirect_host)
		return s->up->redirect_host;
	return srv->tls.server_name ? srv->tls.server_name : srv->host;
}

int tp_server_port(tp_conn_t *s)
{
	return s->up->redirect_host ? s->up->redirect_port
				    : s->pool->conf->server.port;
}

static void resolve(tp_conn_t *s)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM};
	char port[16];
	int rc;

	snprintf(port, sizeof(port), "%d", tp_server_port(s));
	s->up->gai.data = s;
	rc = uv_getaddrinfo(s->tp->loop, &s->up->gai, on_resolved,
			    tp_server_host(s), port, &hints);
	if (rc < 0) {
		tp_conn_fail(s, TP_ECONNECT, "cannot resolve %s: %s",
			     tp_server_host(s), uv_strerror(rc));
		tp_conn_close(s, tp_conn_reason(s, "failed"));
	}
}

/* ---- redirects (Azure SQL's gateway routes a login elsewhere) ---- */

static void on_redirect_closed(uv_handle_t *h)
{
	tp_conn_t *s = h->data;

	s->reconnecting = false;
	if (s->closing) {
		tp_conn_handle_closed(h); /* closed meanwhile: finish that */
		return;
	}
	uv_tcp_init(s->tp->loop, &s->tcp);
	s->tcp.data = s;
	resolve(s);
}

void tp_pool_redirect(tp_conn_t *s)
{
	if (!s->up->redirect_host || ++s->up->redirects > 3) {
		tp_conn_fail(s, TP_ESERVER_LOGIN,
			     s->up->redirect_host
				 ? "too many redirects (last to %s:%d)"
				 : "redirect without a target%s",
			     s->up->redirect_host ? s->up->redirect_host : "",
			     s->up->redirect_port);
		tp_conn_close(s, tp_conn_reason(s, "failed"));
		return;
	}
	tp_log(TP_LOG_DEBUG, s, "server redirects the login to %s:%d",
	       s->up->redirect_host, s->up->redirect_port);
	/* A new connection from scratch: socket, TLS, bytes; the protocol
	 * state stays (it knows it was redirected). The login deadline runs
	 * on. */
	tp_conn_stop_read(s);
	tp_tls_free(s->tls);
	s->tls = NULL;
	s->tls_wrapped = s->tls_unwrap = false;
	s->tls_eof = 0;
	s->in.len = 0;
	s->out.len = 0;
	s->fwd_left = 0;
	if (s->up->addrs)
		uv_freeaddrinfo(s->up->addrs);
	s->up->addrs = s->up->addr_next = NULL;
	s->reconnecting = true;
	uv_close((uv_handle_t *)&s->tcp, on_redirect_closed);
}

static int keep_secret(tp_conn_t *s, const char *secret, size_t len)
{
	s->up->secret = malloc(len + 1);
	if (!s->up->secret)
		return TP_ENOMEM;
	memcpy(s->up->secret, secret, len);
	s->up->secret[len] = 0;
	s->up->login.secret = s->up->secret;
	s->up->login.secret_len = len;
	return 0;
}

static void on_token(void *arg, int err, const char *token, size_t len,
		     const char *reason)
{
	tp_conn_t *s = arg;

	s->up->token_wait = NULL;
	if (s->closing)
		return;
	if (err) {
		tp_conn_fail(s, TP_ETOKEN, "no access token for %s: %s",
			     s->pool->conf->server.scope,
			     reason ? reason : tp_strerror(err));
		tp_conn_close(s, tp_conn_reason(s, "failed"));
		return;
	}
	if (keep_secret(s, token, len)) {
		tp_conn_close(s, "out of memory");
		return;
	}
	if (s->up->probe)
		s->up->probe(s->up->probe_arg, s, TP_PROBE_TOKEN, 0, NULL);
	resolve(s);
}

static void get_secret_then_connect(tp_conn_t *s)
{
	tp_pool_t *pool = s->pool;
	const conf_server_t *srv = &pool->conf->server;
	const char *tok;
	size_t len;
	int rc;

	if (s->up->login.kind == TP_LOGIN_CANCEL &&
	    !s->proto->cancel_needs_login) {
		resolve(s); /* a PG cancel carries no credential */
		return;
	}
	if (srv->auth == CONF_AUTH_PASSWORD) {
		rc = keep_secret(s, srv->password ? srv->password : "",
				 srv->password ? strlen(srv->password) : 0);
	} else if (auth_token_peek(s->tp->tokens, pool->identity, srv->scope,
				   TP_TOKEN_MIN_VALID, &tok, &len) == 0) {
		rc = keep_secret(s, tok, len);
		if (!rc && s->up->probe)
			s->up->probe(s->up->probe_arg, s, TP_PROBE_TOKEN, 0,
				     NULL);
	} else {
		/* A little under the login's own deadline, so a client hears
		 * the identity endpoint's failure rather than a bare timeout.
		 * Counted from the deadline itself: the wait's timer starts
		 * from the loop's fresh time, the deadline from its cached
		 * one, which a busy loop may have left behind. */
		double t = pool->conf->pool.connect_timeout - 0.1;

		if (s->due) {
			uv_update_time(s->tp->loop);
			t = ((double)s->due_ms - (double)tp_now_ms(s->tp)) /
				1000.0 -
			    0.1;
		}

		rc = auth_token_wait(s->tp->tokens, pool->identity, srv->scope,
				     t > 0.05 ? t : 0.05, on_token, s,
				     &s->up->token_wait);
		if (rc == 0)
			return;
	}
	if (rc) {
		tp_conn_close(s, "out of memory");
		return;
	}
	resolve(s);
}

static tp_conn_t *new_server(tp_pool_t *pool, tp_login_kind_t kind)
{
	tp_conn_t *s = tp_conn_new(pool->tp, TP_SIDE_SERVER, pool->proto);
	const conf_server_t *srv = &pool->conf->server;

	if (!s)
		return NULL;
	s->pool = pool;
	s->up->generation = pool->generation;
	s->up->login.kind = kind;
	s->up->login.pool = pool->conf;
	s->up->login.user = srv->user;
	s->up->login.database = srv->database;
	s->up->login.tls = srv->tls.mode != CONF_TLS_DISABLE;
	return s;
}

static void launch(tp_pool_t *pool)
{
	tp_conn_t *s = new_server(pool, TP_LOGIN_NORMAL);

	if (!s) {
		tp_pool_server_failed(pool, TP_ENOMEM, "out of memory");
		return;
	}
	tp_conn_set_state(s, TP_S_CONNECTING);
	tp_conn_deadline(s, server_timeout,
			 (uint64_t)conf_ms(pool->conf->pool.connect_timeout));
	tp_log(TP_LOG_DEBUG, s, "opening server connection");
	get_secret_then_connect(s);
}

int tp_pool_probe(tp_pool_t *pool, tp_probe_cb cb, void *arg)
{
	tp_conn_t *s = new_server(pool, TP_LOGIN_NORMAL);

	if (!s)
		return TP_ENOMEM;
	s->up->probe = cb;
	s->up->probe_arg = arg;
	tp_conn_set_state(s, TP_S_CONNECTING);
	tp_conn_deadline(s, server_timeout,
			 (uint64_t)conf_ms(pool->conf->pool.connect_timeout));
	get_secret_then_connect(s);
	return 0;
}

void tp_pool_cancel(tp_pool_t *pool, tp_conn_t *server)
{
	tp_conn_t *s;
	uint8_t key[16];
	size_t n = server->proto->cancel_key(server, key, sizeof(key));

	if (!n || n > sizeof(key))
		return;
	s = new_server(pool, TP_LOGIN_CANCEL);
	if (!s)
		return;
	tp_conn_set_state(s, TP_S_CANCEL);
	memcpy(s->up->cancel_key, key, n);
	s->up->login.cancel_key = s->up->cancel_key;
	s->up->login.cancel_key_len = n;
	tp_conn_deadline(s, server_timeout,
			 (uint64_t)conf_ms(pool->conf->pool.connect_timeout));
	get_secret_then_connect(s);
}

/* ---- linking clients and servers ---- */

static void wait_timeout(tp_conn_t *c)
{
	tp_pool_t *pool = c->pool;
	char msg[900];

	if (pool->last_fail[0])
		snprintf(msg, sizeof(msg),
			 "no server connection within %g s; last failure: %s",
			 pool->conf->pool.wait_timeout, pool->last_fail);
	else
		snprintf(msg, sizeof(msg),
			 "no server connection within %g s (pool size %d)",
			 pool->conf->pool.wait_timeout, pool->conf->pool.size);
	tp_conn_error_close(
	    c, pool->last_fail[0] ? pool->last_fail_err : TP_ETIMEOUT, msg);
}

static void link_pair(tp_pool_t *pool, tp_conn_t *c, tp_conn_t *s)
{
	tp_step_t sync;

	if (c->state == TP_C_WAITING) {
		/* The wait's deadline says when it began: no field for it. */
		double wait_ms = conf_ms(pool->conf->pool.wait_timeout);
		double began = (double)c->due_ms - wait_ms;
		double now = (double)tp_now_ms(pool->tp);

		tp_hist_observe(&pool->st.wait,
				now > began ? (now - began) / 1000.0 : 0);
	} else {
		tp_hist_observe(&pool->st.wait, 0);
	}
	tp_conn_deadline_stop(c);
	c->peer = s;
	s->peer = c;
	s->pending = 0;
	s->last_used_ms = tp_now_ms(pool->tp);
	tp_conn_set_state(c, TP_C_ACTIVE);
	tp_conn_set_state(s, TP_S_ACTIVE);
	tp_conn_start_read(c);
	if (c->needs_welcome) {
		c->needs_welcome = false;
		c->proto->client_welcome(c, pool->welcome, pool->welcome_len);
		tp_conn_flush(c);
		if (c->in.len == 0 &&
		    pool->conf->pool.mode == CONF_POOL_TRANSACTION) {
			tp_pool_release(pool, c);
			return;
		}
	}
	sync =
	    c->proto->server_sync ? c->proto->server_sync(s, c) : TP_STEP_DONE;
	if (sync == TP_STEP_CLOSE) {
		/* This server cannot take the client's settings: drop it and
		 * find the client another. */
		c->peer = NULL;
		s->peer = NULL;
		s->broken = true;
		tp_conn_set_state(c, TP_C_IDLE);
		tp_conn_close(s, "server cannot take the client's settings");
		tp_pool_acquire(pool, c);
		return;
	}
	if (sync == TP_STEP_MORE) {
		/* The client's bytes wait until the server is in step. */
		s->syncing = true;
		tp_conn_deadline(
		    s, server_timeout,
		    (uint64_t)conf_ms(pool->conf->pool.connect_timeout));
		tp_conn_flush(s);
		return;
	}
	if (c->in.len)
		tp_conn_process(c);
}

void tp_pool_acquire(tp_pool_t *pool, tp_conn_t *c)
{
	if (c->closing)
		return;
	if (!tp_list_empty(&pool->s_idle) && !pool->paused) {
		/* LIFO: the warmest server, and idle ones can age out. */
		tp_conn_t *s =
		    tp_container_of(pool->s_idle.prev, tp_conn_t, node);
		link_pair(pool, c, s);
		return;
	}
	tp_conn_set_state(c, TP_C_WAITING);
	tp_conn_deadline(c, wait_timeout,
			 (uint64_t)conf_ms(pool->conf->pool.wait_timeout));
	if (pool->count[TP_C_WAITING] > pool->count[TP_S_CONNECTING] &&
	    nservers(pool) < pool->conf->pool.size && !pool->paused)
		launch(pool);
}

static bool expired(tp_pool_t *pool, tp_conn_t *s)
{
	double lifetime = pool->conf->pool.lifetime;

	return lifetime > 0 &&
	       tp_now_ms(pool->tp) - s->created_ms >= conf_ms(lifetime);
}

/* A doctor's link: report the step, then query, then close. */
static void probe_ready(tp_conn_t *s)
{
	tp_probe_event_t ev =
	    s->state == TP_S_CONNECTING ? TP_PROBE_LOGIN : TP_PROBE_QUERY;
	tp_probe_cb cb = s->up->probe;

	cb(s->up->probe_arg, s, ev, 0, NULL);
	if (ev == TP_PROBE_LOGIN && s->proto->server_probe) {
		tp_conn_set_state(s, TP_S_RESET); /* replies via server_read */
		tp_conn_deadline(
		    s, server_timeout,
		    (uint64_t)conf_ms(s->pool->conf->pool.connect_timeout));
		if (s->proto->server_probe(s) != TP_STEP_DONE) {
			tp_conn_flush(s);
			return;
		}
		cb(s->up->probe_arg, s, TP_PROBE_QUERY, 0, NULL);
	} else if (ev == TP_PROBE_LOGIN) { /* no probe query in this protocol */
		cb(s->up->probe_arg, s, TP_PROBE_QUERY, 0, NULL);
	}
	s->up->probe = NULL; /* nothing more to report */
	tp_conn_close(s, "doctor is done");
}

void tp_pool_server_ready(tp_pool_t *pool, tp_conn_t *s)
{
	bool fresh = s->state == TP_S_CONNECTING;

	tp_conn_deadline_stop(s);
	if (s->up->probe) {
		probe_ready(s);
		return;
	}
	if (fresh) {
		const uint8_t *params;
		size_t len;

		uint64_t took = tp_now_ms(pool->tp) - s->created_ms;

		pool->st.logins_ok++;
		pool->reached = true;
		tp_hist_observe(&pool->st.connect, (double)took / 1000.0);
		pool->last_fail[0] = 0;
		pool->warmup_backoff_ms = 0;
		tp_log(TP_LOG_INFO, s,
		       "server login ok in %llu ms as %s (%s)%s%s",
		       (unsigned long long)took, s->up->login.user,
		       tp_pool_identity_label(pool), s->tls ? " over " : "",
		       s->tls ? tp_tls_version(s->tls) : "");
		s->proto->server_params(s, &params, &len);
		if (!pool->welcome && (pool->welcome = malloc(len + 1))) {
			memcpy(pool->welcome, params, len);
			pool->welcome_len = len;
		}
	}
	if (s->up->secret) { /* the token is not needed after login */
		OPENSSL_cleanse(s->up->secret, s->up->login.secret_len);
		free(s->up->secret);
		s->up->secret = NULL;
		s->up->login.secret = NULL;
	}
	s->peer = NULL;
	/* The login is over: from here a close is not a failed login (which
	 * would refuse the waiting clients) but a server going away. */
	if (fresh)
		tp_conn_set_state(s, TP_S_IDLE);
	/* A fresh server serves one client even if its login took longer
	 * than the lifetime: else a slow server could never serve anyone. */
	if ((expired(pool, s) && !fresh) || s->broken) {
		tp_conn_close(s, s->broken ? "server is broken"
					   : "server reached its lifetime");
		return;
	}
	if (s->up->generation != pool->generation) {
		tp_conn_close(s, "server settings changed (reload)");
		return;
	}
	if (nservers(pool) > pool->conf->pool.size) {
		tp_conn_close(s, "pool size reduced (reload)");
		return;
	}
	if (pool->tp->stopping && tp_list_empty(&pool->c_waiting)) {
		tp_conn_close(s, "shutting down");
		return;
	}
	if (!tp_list_empty(&pool->c_waiting) && !pool->paused) {
		tp_conn_t *c =
		    tp_container_of(pool->c_waiting.next, tp_conn_t, node);
		link_pair(pool, c, s);
		return;
	}
	if (pool->removed && pool->nclients == 0) {
		tp_conn_close(s, "pool removed (reload)");
		return;
	}
	s->last_used_ms = tp_now_ms(pool->tp);
	tp_conn_set_state(s, TP_S_IDLE);
}

void tp_pool_release(tp_pool_t *pool, tp_conn_t *c)
{
	tp_conn_t *s = c->peer;

	c->peer = NULL;
	tp_conn_set_state(c, TP_C_IDLE);
	if (s)
		tp_pool_server_ready(pool, s);
	if (pool->tp->stopping) { /* draining: this was its last transaction */
		tp_conn_error_close(c, TP_ESHUTDOWN,
				    "the proxy is shutting down");
		return;
	}
	if (c->in.len && !c->closing)
		tp_pool_acquire(pool, c);
}

/* Whether a server whose client left can be cleaned and reused: nothing
 * in flight either way (an open transaction is rolled back by the reset). */
static bool reusable(tp_conn_t *s, tp_conn_t *c)
{
	return !s->broken && !s->syncing && s->pending == 0 &&
	       s->fwd_left == 0 && c->fwd_left == 0 && s->in.len == 0;
}

void tp_pool_client_gone(tp_pool_t *pool, tp_conn_t *c)
{
	tp_conn_t *s = c->peer;
	tp_step_t reset;
	bool full;

	pool->nclients--;
	if (!s)
		return;
	c->peer = NULL;
	s->peer = NULL;
	if (!reusable(s, c)) {
		tp_conn_close(s, "client left in the middle of a request");
		return;
	}
	full = pool->conf->pool.mode == CONF_POOL_SESSION || c->pinned;
	tp_conn_set_state(s, TP_S_RESET);
	reset = s->proto->server_reset(s, full);
	if (reset == TP_STEP_CLOSE) {
		tp_conn_close(s, "server cannot be reset");
		return;
	}
	if (reset == TP_STEP_DONE) {
		tp_pool_server_ready(pool, s);
		return;
	}
	tp_conn_deadline(s, server_timeout,
			 (uint64_t)conf_ms(pool->conf->pool.connect_timeout));
	tp_conn_flush(s);
}

void tp_pool_server_failed(tp_pool_t *pool, int err, const char *msg)
{
	tp_list_t *n, *next;

	pool->st.logins_failed++;
	pool->last_fail_err = err;
	snprintf(pool->last_fail, sizeof(pool->last_fail), "%s", msg);
	tp_log(TP_LOG_WARN, NULL, "pool %s: server login failed: %s",
	       pool->conf->name, msg);
	/* Clients wait only while someone may still serve them. */
	if (pool->count[TP_S_CONNECTING] > 0 || pool->count[TP_S_ACTIVE] > 0 ||
	    pool->count[TP_S_RESET] > 0)
		return;
	for (n = pool->c_waiting.next; n != &pool->c_waiting; n = next) {
		next = n->next;
		tp_conn_error_close(tp_container_of(n, tp_conn_t, node), err,
				    msg);
	}
}

void tp_pool_server_gone(tp_pool_t *pool, tp_conn_t *s, const char *reason)
{
	tp_conn_t *c = s->peer;
	tp_conn_state_t was = s->state;
	char msg[900];

	s->peer = NULL;
	if (was == TP_S_CANCEL)
		return;
	if (s->up->probe) {
		tp_probe_cb cb = s->up->probe;

		s->up->probe = NULL;
		tp_conn_set_state(s, TP_CLOSING);
		cb(s->up->probe_arg, s, TP_PROBE_FAILED,
		   s->fail_err ? s->fail_err : TP_ECONNECT,
		   tp_conn_reason(s, "server closed the connection"));
		return;
	}
	if (c) {
		c->peer = NULL;
		/* Why, as the close said it ("connection timed out", "peer
		 * closed the connection"), unless a failure said more. */
		snprintf(msg, sizeof(msg), "server connection lost: %s",
			 tp_conn_reason(s, reason ? reason : "closed"));
		tp_conn_error_close(c, TP_ECONNECT, msg);
	}
	tp_conn_set_state(s, TP_CLOSING); /* not counted from here on */
	if (was == TP_S_CONNECTING)
		tp_pool_server_failed(pool,
				      s->fail_err ? s->fail_err : TP_ECONNECT,
				      tp_conn_reason(s, "server login failed"));
	if (pool->count[TP_C_WAITING] > pool->count[TP_S_CONNECTING] &&
	    nservers(pool) < pool->conf->pool.size && !pool->tp->stopping &&
	    was != TP_S_CONNECTING)
		launch(pool);
}

void tp_pool_janitor(tp_pool_t *pool)
{
	uint64_t now = tp_now_ms(pool->tp);
	double idle = pool->conf->pool.idle_timeout;
	tp_list_t *n, *next;

	for (n = pool->s_idle.next; n != &pool->s_idle; n = next) {
		tp_conn_t *s = tp_container_of(n, tp_conn_t, node);

		next = n->next;
		if (expired(pool, s))
			tp_conn_close(s, "server reached its lifetime");
		else if (idle > 0 && now - s->last_used_ms >= conf_ms(idle))
			tp_conn_close(s, "server idle too long");
	}
	if (pool->removed)
		return;
	while (!pool->tp->stopping &&
	       pool->count[TP_S_IDLE] + pool->count[TP_S_CONNECTING] <
		   pool->conf->pool.min_idle &&
	       nservers(pool) < pool->conf->pool.size && !pool->last_fail[0])
		launch(pool);
	if (pool->warmup_due_ms && now >= pool->warmup_due_ms)
		tp_pool_warmup(pool);
}

/* ---- readiness, warm-up, pause, reload ---- */

const char *tp_pool_identity_label(tp_pool_t *pool)
{
	const conf_identity_t *id = pool->identity;

	if (pool->conf->server.auth != CONF_AUTH_TOKEN)
		return "password";
	if (id->client_id)
		return id->client_id;
	if (id->object_id)
		return id->object_id;
	if (id->resource_id)
		return id->resource_id;
	return conf_source_name(id->source);
}

/* Whether a server of the current settings is up or has logged in. */
static bool reached(tp_pool_t *pool)
{
	return pool->count[TP_S_IDLE] + pool->count[TP_S_ACTIVE] +
		       pool->count[TP_S_RESET] >
		   0 ||
	       pool->reached;
}

void tp_pool_warmup(tp_pool_t *pool)
{
	uint64_t now = tp_now_ms(pool->tp);

	pool->warmup_due_ms = 0;
	if (pool->tp->stopping || pool->removed || pool->conf->pool.size < 1)
		return;
	if (reached(pool) && !pool->last_fail[0])
		return;
	/* Retried from the janitor until a login works: 1 s, doubling, at
	 * most 30 s apart. */
	pool->warmup_backoff_ms =
	    pool->warmup_backoff_ms ? pool->warmup_backoff_ms * 2 : 1000;
	if (pool->warmup_backoff_ms > 30000)
		pool->warmup_backoff_ms = 30000;
	pool->warmup_due_ms = now + pool->warmup_backoff_ms;
	if (pool->count[TP_S_CONNECTING] == 0 &&
	    nservers(pool) < pool->conf->pool.size)
		launch(pool);
}

bool tp_pool_ready(tp_pool_t *pool, char *reason, size_t len)
{
	const char *token;
	size_t tlen;

	if (pool->conf->server.auth == CONF_AUTH_TOKEN &&
	    auth_token_peek(pool->tp->tokens, pool->identity,
			    pool->conf->server.scope, 0, &token, &tlen) != 0) {
		snprintf(reason, len, "pool %s: no valid access token%s%s",
			 pool->conf->name, pool->last_fail[0] ? ": " : "",
			 pool->last_fail);
		return false;
	}
	if (pool->count[TP_S_IDLE] + pool->count[TP_S_ACTIVE] +
		pool->count[TP_S_RESET] >
	    0)
		return true;
	if (pool->last_fail[0]) {
		snprintf(reason, len, "pool %s: server login failing: %s",
			 pool->conf->name, pool->last_fail);
		return false;
	}
	if (!pool->reached) {
		snprintf(reason, len, "pool %s: server not reached yet",
			 pool->conf->name);
		return false;
	}
	return true;
}

void tp_pool_pause(tp_pool_t *pool)
{
	pool->paused = true;
}

void tp_pool_resume(tp_pool_t *pool)
{
	if (!pool->paused)
		return;
	pool->paused = false;
	while (!tp_list_empty(&pool->c_waiting) &&
	       !tp_list_empty(&pool->s_idle)) {
		tp_conn_t *c =
		    tp_container_of(pool->c_waiting.next, tp_conn_t, node);
		tp_conn_t *s =
		    tp_container_of(pool->s_idle.prev, tp_conn_t, node);

		link_pair(pool, c, s);
	}
	while (pool->count[TP_C_WAITING] > pool->count[TP_S_CONNECTING] &&
	       nservers(pool) < pool->conf->pool.size)
		launch(pool);
}

void tp_pool_close_idle(tp_pool_t *pool, const char *why)
{
	while (!tp_list_empty(&pool->s_idle))
		tp_conn_close(
		    tp_container_of(pool->s_idle.next, tp_conn_t, node), why);
}

void tp_pool_reconfigure(tp_pool_t *pool, const conf_t *conf,
			 const conf_pool_t *pc, auth_verifier_t *verifiers,
			 SSL_CTX *server_ctx, bool server_changed)
{
	tp_t *tp = pool->tp;

	tp_retire(tp, pool->verifiers,
		  sizeof(*pool->verifiers) *
		      (pool->conf->nclients ? pool->conf->nclients : 1));
	pool->verifiers = verifiers;
	SSL_CTX_free(pool->server_ctx); /* live TLS sessions hold a ref */
	pool->server_ctx = server_ctx;
	pool->conf = pc;
	pool->identity = conf_pool_identity(conf, pc);
	if (!server_changed)
		return;
	pool->generation++;
	free(pool->welcome); /* the new server may say other things */
	pool->welcome = NULL;
	pool->welcome_len = 0;
	pool->last_fail[0] = 0;
	pool->reached = false; /* readiness: reach the new server first */
	pool->warmup_backoff_ms = 0;
	tp_pool_close_idle(pool, "server settings changed (reload)");
}

bool tp_pool_drained(tp_pool_t *pool)
{
	if (pool->nclients > 0)
		return false;
	tp_pool_close_idle(pool, "pool removed (reload)");
	return nservers(pool) == 0 && pool->count[TP_S_CANCEL] == 0 &&
	       !pool->prefetch;
}
