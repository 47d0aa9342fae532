/*
 * test_token_cache.c - the token cache end to end on a real libuv loop,
 * against a tiny HTTP server living in this file on the same loop. The
 * server answers like IMDS / App Service (a realistic 1.5 KB token,
 * expires_in/expires_on as strings), follows a script of canned answers
 * (500, 429 with Retry-After, 400, never answering) and counts requests, so
 * no Python and no network are needed.
 *
 * Proves: a cold peek starts one fetch; 50 waiters share one request and
 * all get the token; a 500 is retried; a failed refresh keeps a valid token;
 * a silent endpoint times a waiter out within its bound; request shape
 * (path, query, Metadata / X-IDENTITY-HEADER, no proxy); App Service date
 * expiries; configuration errors fail fast; close and cancel are clean.
 *
 * Not here: the pure timing rules (test_token_timing.c), the Python rig.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "auth/auth.h"
#include "tests/unit/tp_test.h"

#define SCOPE	  "https://ossrdbms-aad.database.windows.net/.default"
#define TOKEN_PAD 1500 /* real Entra tokens are 1-3 KB */

/* ====================================================================
 * The stand-in identity endpoint
 * ==================================================================== */

typedef struct canned {
	int status;	     /* 0: never answer */
	const char *headers; /* extra header lines, each ending "\r\n" */
	const char *body;    /* NULL: a token answer */
} canned_t;

typedef struct sconn sconn_t;

typedef struct server {
	uv_tcp_t tcp;
	int port;
	int requests;
	canned_t script[4]; /* answers for the next requests, in order */
	int nscript, next;
	canned_t dflt;	     /* then this */
	double lifetime;     /* of token answers, seconds */
	char expires_on[64]; /* when set: sent instead of expires_in */
	char target[2048];   /* of the last request */
	char head[8192];     /* header block of the last request */
	sconn_t *conns;
} server_t;

struct sconn {
	uv_tcp_t tcp;
	server_t *srv;
	char buf[8192];
	size_t len;
	bool answered;
	uv_write_t wr;
	char *out;
	sconn_t *prev, *next;
};

static double mono(void)
{
	return uv_hrtime() / 1e9;
}

static double wall(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The token the server hands out for request n. */
static void token_for(int n, char *out, size_t cap)
{
	snprintf(out, cap, "eyJ0eXAiOiJKV1QifQ.%0*d.c2ln", TOKEN_PAD, n);
}

static void on_conn_closed(uv_handle_t *h)
{
	sconn_t *c = h->data;

	if (c->prev)
		c->prev->next = c->next;
	else
		c->srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c->out);
	free(c);
}

static void conn_close(sconn_t *c)
{
	if (!uv_is_closing((uv_handle_t *)&c->tcp))
		uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_written(uv_write_t *wr, int status)
{
	conn_close(wr->data); /* Connection: close */
}

static char *token_body(server_t *s)
{
	char tok[TOKEN_PAD + 64], *body = NULL;
	double now = wall();
	int n;

	token_for(s->requests, tok, sizeof(tok));
	if (s->expires_on[0])
		n = asprintf(&body,
			     "{\"access_token\":\"%s\",\"expires_on\":\"%s\","
			     "\"resource\":\"r\",\"token_type\":\"Bearer\"}",
			     tok, s->expires_on);
	else
		n = asprintf(&body,
			     "{\"access_token\":\"%s\",\"client_id\":\"c\","
			     "\"expires_in\":\"%.0f\",\"expires_on\":\"%.0f\","
			     "\"ext_expires_in\":\"%.0f\",\"not_before\":"
			     "\"%.0f\",\"resource\":\"r\",\"token_type\":"
			     "\"Bearer\"}",
			     tok, s->lifetime, now + s->lifetime, s->lifetime,
			     now);
	return n < 0 ? NULL : body;
}

static void answer(sconn_t *c, const char *end)
{
	server_t *s = c->srv;
	const canned_t *a =
	    s->next < s->nscript ? &s->script[s->next++] : &s->dflt;
	char *body, *sp;
	uv_buf_t b;

	c->answered = true;
	s->requests++;
	snprintf(s->head, sizeof(s->head), "%.*s", (int)(end - c->buf + 2),
		 c->buf);
	sp = strchr(s->head, ' ');
	snprintf(s->target, sizeof(s->target), "%.*s",
		 sp ? (int)strcspn(sp + 1, " ") : 0, sp ? sp + 1 : "");
	if (a->status == 0)
		return; /* hang: keep the connection, say nothing */
	body = a->body ? strdup(a->body) : token_body(s);
	if (!body || asprintf(&c->out,
			      "HTTP/1.1 %d Canned\r\nContent-Type: "
			      "application/json\r\nContent-Length: %zu\r\n"
			      "Connection: close\r\n%s\r\n%s",
			      a->status, strlen(body),
			      a->headers ? a->headers : "", body) < 0)
		abort();
	free(body);
	b = uv_buf_init(c->out, (unsigned)strlen(c->out));
	c->wr.data = c;
	if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
		conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	sconn_t *c = h->data;
	static char scratch[64]; /* requests past our buffer are dropped */

	if (c->len + 1 < sizeof(c->buf))
		*buf = uv_buf_init(c->buf + c->len,
				   (unsigned)(sizeof(c->buf) - c->len - 1));
	else
		*buf = uv_buf_init(scratch, sizeof(scratch));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	sconn_t *c = st->data;
	char *end;

	if (n < 0) {
		conn_close(c);
		return;
	}
	if (buf->base != c->buf + c->len)
		return;
	c->len += (size_t)n;
	c->buf[c->len] = '\0';
	end = strstr(c->buf, "\r\n\r\n");
	if (end && !c->answered)
		answer(c, end);
}

static void on_connection(uv_stream_t *listener, int status)
{
	server_t *s = listener->data;
	sconn_t *c = calloc(1, sizeof(*c));

	if (!c || status < 0)
		abort();
	c->srv = s;
	uv_tcp_init(listener->loop, &c->tcp);
	c->tcp.data = c;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 ||
	    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
		conn_close(c);
}

static int server_start(uv_loop_t *loop, server_t *s)
{
	struct sockaddr_in addr;
	struct sockaddr_storage got;
	int len = sizeof(got);

	s->lifetime = 3600;
	s->dflt.status = 200;
	uv_ip4_addr("127.0.0.1", 0, &addr);
	if (uv_tcp_init(loop, &s->tcp) != 0 ||
	    uv_tcp_bind(&s->tcp, (struct sockaddr *)&addr, 0) != 0 ||
	    uv_listen((uv_stream_t *)&s->tcp, 128, on_connection) != 0 ||
	    uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&got, &len) != 0)
		return -1;
	s->tcp.data = s;
	s->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
	return 0;
}

static void server_stop(server_t *s)
{
	uv_close((uv_handle_t *)&s->tcp, NULL);
	for (sconn_t *c = s->conns; c; c = c->next)
		conn_close(c);
}

/* ====================================================================
 * Fixture: loop, server, cache, a ticking timer for run_until()
 * ==================================================================== */

typedef struct fx {
	uv_loop_t loop;
	uv_timer_t tick;
	server_t srv;
	auth_tokens_t *tokens;
	conf_identity_t id;
	char endpoint[64];
	int open;	/* handles other than tick, counted by uv_walk */
	int closed_err; /* what on_token_closes saw */
	int peek_after, wait_after;
} fx_t;

static void on_tick(uv_timer_t *t)
{
}

static fx_t *fx_new(void)
{
	fx_t *fx = calloc(1, sizeof(*fx));

	if (!fx || uv_loop_init(&fx->loop) != 0 ||
	    server_start(&fx->loop, &fx->srv) != 0)
		abort();
	uv_timer_init(&fx->loop, &fx->tick);
	uv_timer_start(&fx->tick, on_tick, 5, 5);
	snprintf(fx->endpoint, sizeof(fx->endpoint), "http://127.0.0.1:%d",
		 fx->srv.port);
	fx->id.source = CONF_SRC_IMDS;
	fx->id.imds_endpoint = fx->endpoint;
	fx->tokens = auth_tokens_new(&fx->loop);
	if (!fx->tokens)
		abort();
	return fx;
}

typedef bool (*pred_fn)(fx_t *fx, void *ctx);

/* Runs the loop until pred holds or seconds pass; returns pred. */
static bool run_until(fx_t *fx, pred_fn pred, void *ctx, double seconds)
{
	double deadline = mono() + seconds;

	while (!pred(fx, ctx) && mono() < deadline)
		uv_run(&fx->loop, UV_RUN_ONCE);
	return pred(fx, ctx);
}

static bool pred_never(fx_t *fx, void *ctx)
{
	return false;
}

static void count_handle(uv_handle_t *h, void *arg)
{
	fx_t *fx = arg;

	if (h != (uv_handle_t *)&fx->tick)
		fx->open++;
}

static bool pred_only_tick(fx_t *fx, void *ctx)
{
	fx->open = 0;
	uv_walk(&fx->loop, count_handle, fx);
	return fx->open == 0;
}

/* Closes everything and proves nothing was left open. */
static void fx_free(fx_t *fx)
{
	if (fx->tokens)
		auth_tokens_close(fx->tokens);
	server_stop(&fx->srv);
	CHECK(run_until(fx, pred_only_tick, NULL, 5));
	uv_close((uv_handle_t *)&fx->tick, NULL);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	CHECK_EQ_INT(uv_loop_close(&fx->loop), 0);
	free(fx);
}

/* ---- what callbacks and foreach report ---- */

typedef struct got {
	int calls;
	int err;
	char token[TOKEN_PAD + 64];
	size_t len;
	char reason[512];
	double at;
} got_t;

static void on_token(void *arg, int err, const char *token, size_t len,
		     const char *reason)
{
	got_t *g = arg;

	g->calls++;
	g->err = err;
	g->at = mono();
	if (token)
		snprintf(g->token, sizeof(g->token), "%.*s", (int)len, token);
	g->len = len;
	if (reason)
		snprintf(g->reason, sizeof(g->reason), "%s", reason);
}

static bool pred_called(fx_t *fx, void *ctx)
{
	return ((got_t *)ctx)->calls > 0;
}

typedef struct info {
	int entries;
	auth_token_info_t i; /* of the last entry seen */
	char identity[256], source[32], last_error[512];
} info_t;

static void on_info(void *arg, const auth_token_info_t *i)
{
	info_t *out = arg;

	out->entries++;
	out->i = *i;
	snprintf(out->identity, sizeof(out->identity), "%s", i->identity);
	snprintf(out->source, sizeof(out->source), "%s", i->source);
	snprintf(out->last_error, sizeof(out->last_error), "%s",
		 i->last_error ? i->last_error : "");
	out->i.identity = out->identity;
	out->i.source = out->source;
	out->i.last_error = i->last_error ? out->last_error : NULL;
}

/* Fills *out (its strings point into *out itself, so it is filled in
 * place, never returned by value). */
static void info_of(fx_t *fx, info_t *out)
{
	memset(out, 0, sizeof(*out));
	auth_tokens_foreach(fx->tokens, on_info, out);
}

static uint64_t info_count(fx_t *fx, int which)
{
	info_t in;

	info_of(fx, &in);
	return which == 0   ? in.i.fetch_ok
	       : which == 1 ? in.i.fetch_failed
			    : in.i.fetch_requests;
}

static bool pred_ok(fx_t *fx, void *ctx)
{
	return info_count(fx, 0) >= (uint64_t)(size_t)ctx;
}

static bool pred_failed(fx_t *fx, void *ctx)
{
	return info_count(fx, 1) >= (uint64_t)(size_t)ctx;
}

static bool pred_requests(fx_t *fx, void *ctx)
{
	return fx->srv.requests >= (int)(size_t)ctx;
}

static bool has(const char *hay, const char *needle)
{
	if (strstr(hay, needle))
		return true;
	fprintf(stderr, "  \"%s\" not in \"%.300s\"\n", needle, hay);
	return false;
}

/* ====================================================================
 * Tests
 * ==================================================================== */

static void test_cold_peek_starts_one_fetch(void)
{
	fx_t *fx = fx_new();
	const char *tok = NULL;
	size_t len = 0;
	char want[TOKEN_PAD + 64];
	info_t in;

	CHECK_EQ_INT(auth_token_peek(fx->tokens, &fx->id, SCOPE, 0, &tok, &len),
		     TP_EAGAIN);
	CHECK_EQ_INT(auth_token_peek(fx->tokens, &fx->id, SCOPE, 0, &tok, &len),
		     TP_EAGAIN);
	CHECK(run_until(fx, pred_ok, (void *)1, 5));
	CHECK_EQ_INT(fx->srv.requests, 1);
	CHECK_EQ_INT(
	    auth_token_peek(fx->tokens, &fx->id, SCOPE, 60, &tok, &len), 0);
	token_for(1, want, sizeof(want));
	CHECK_EQ_INT(len, strlen(want));
	CHECK(tok && len == strlen(want) && memcmp(tok, want, len) == 0);
	info_of(fx, &in);
	CHECK_EQ_INT(in.entries, 1);
	CHECK_EQ_STR(in.i.source, "imds");
	CHECK_EQ_STR(in.i.identity, "imds system-assigned");
	CHECK_EQ_STR(in.i.scope, SCOPE);
	CHECK(in.i.valid && !in.i.fetching && !in.i.config_error);
	CHECK(in.i.last_error == NULL);
	CHECK_EQ_INT(in.i.fetch_requests, 1);
	CHECK_EQ_INT(in.i.fetch_ok, 1);
	CHECK_EQ_INT(in.i.fetch_failed, 0);
	/* A 1 h token refreshes 55 min from now. */
	CHECK(in.i.next_refresh > wall() + 3290 &&
	      in.i.next_refresh < wall() + 3301);
	CHECK(in.i.expires_on > wall() + 3590);
	fx_free(fx);
}

static bool pred_all_called(fx_t *fx, void *ctx)
{
	got_t *g = ctx;

	for (int i = 0; i < 50; i++)
		if (g[i].calls == 0)
			return false;
	return true;
}

static void test_fifty_waiters_one_request(void)
{
	fx_t *fx = fx_new();
	got_t *g = calloc(51, sizeof(*g));
	char want[TOKEN_PAD + 64];
	int calls = 0;

	for (int i = 0; i < 50; i++)
		CHECK_EQ_INT(auth_token_wait(fx->tokens, &fx->id, SCOPE, 5,
					     on_token, &g[i], NULL),
			     0);
	for (int i = 0; i < 50; i++)
		calls += g[i].calls;
	CHECK_EQ_INT(calls, 0); /* never from inside auth_token_wait */
	CHECK(run_until(fx, pred_all_called, g, 5));
	CHECK_EQ_INT(fx->srv.requests, 1);
	token_for(1, want, sizeof(want));
	for (int i = 0; i < 50; i++) {
		CHECK_EQ_INT(g[i].calls, 1);
		CHECK_EQ_INT(g[i].err, 0);
		CHECK_EQ_STR(g[i].token, want);
	}
	/* Cached now: served from the loop, still no new request. */
	CHECK_EQ_INT(auth_token_wait(fx->tokens, &fx->id, SCOPE, 5, on_token,
				     &g[50], NULL),
		     0);
	CHECK_EQ_INT(g[50].calls, 0);
	CHECK(run_until(fx, pred_called, &g[50], 2));
	CHECK_EQ_INT(g[50].err, 0);
	CHECK_EQ_STR(g[50].token, want);
	CHECK_EQ_INT(fx->srv.requests, 1);
	CHECK_EQ_INT(info_count(fx, 2), 1);
	free(g);
	fx_free(fx);
}

static void test_500_then_success_after_retry(void)
{
	fx_t *fx = fx_new();
	got_t g = {0};
	char want[TOKEN_PAD + 64], prefix[128];
	double t0 = mono();
	info_t in;

	fx->srv.script[0] = (canned_t){500, NULL,
				       "{\"error\":\"server_error\","
				       "\"error_description\":\"boom\"}"};
	fx->srv.nscript = 1;
	CHECK_EQ_INT(
	    auth_token_wait(fx->tokens, &fx->id, SCOPE, 5, on_token, &g, NULL),
	    0);
	CHECK(run_until(fx, pred_failed, (void *)1, 5));
	info_of(fx, &in);
	snprintf(prefix, sizeof(prefix), "imds http://127.0.0.1:%d: HTTP 500",
		 fx->srv.port);
	CHECK(in.i.last_error && has(in.i.last_error, prefix));
	CHECK(in.i.last_error && has(in.i.last_error, "HTTP 500: boom"));
	CHECK(!in.i.config_error && in.i.next_refresh > 0);
	CHECK_EQ_INT(g.calls, 0); /* still waiting through the retry */
	CHECK(run_until(fx, pred_called, &g, 5));
	CHECK_EQ_INT(g.err, 0);
	token_for(2, want, sizeof(want));
	CHECK_EQ_STR(g.token, want);
	CHECK_EQ_INT(fx->srv.requests, 2);
	CHECK(g.at - t0 >= 0.7); /* backed off about a second */
	info_of(fx, &in);
	CHECK_EQ_INT(in.i.fetch_failed, 1);
	CHECK_EQ_INT(in.i.fetch_ok, 1);
	CHECK_EQ_INT(in.i.fetch_requests, 2);
	CHECK(in.i.last_error == NULL);
	fx_free(fx);
}

static void test_429_retry_after_is_honoured(void)
{
	fx_t *fx = fx_new();
	got_t g = {0};
	double t0 = mono();

	fx->srv.script[0] = (canned_t){429, "Retry-After: 2\r\n",
				       "{\"error\":\"too many requests\"}"};
	fx->srv.nscript = 1;
	CHECK_EQ_INT(
	    auth_token_wait(fx->tokens, &fx->id, SCOPE, 6, on_token, &g, NULL),
	    0);
	CHECK(run_until(fx, pred_called, &g, 6));
	CHECK_EQ_INT(g.err, 0);
	CHECK_EQ_INT(fx->srv.requests, 2);
	CHECK(g.at - t0 >= 1.9);
	fx_free(fx);
}

static void test_failed_refresh_keeps_token(void)
{
	fx_t *fx = fx_new();
	got_t g = {0};
	char want[TOKEN_PAD + 64];
	const char *tok = NULL;
	size_t len = 0;
	info_t in;

	/* A 4 s token refreshes 2 s after it arrives. */
	fx->srv.lifetime = 4;
	CHECK_EQ_INT(
	    auth_token_wait(fx->tokens, &fx->id, SCOPE, 5, on_token, &g, NULL),
	    0);
	CHECK(run_until(fx, pred_called, &g, 5));
	CHECK_EQ_INT(g.err, 0);
	fx->srv.dflt = (canned_t){500, NULL, "{}"};
	CHECK(run_until(fx, pred_failed, (void *)1, 5));
	CHECK_EQ_INT(fx->srv.requests, 2);
	CHECK_EQ_INT(
	    auth_token_peek(fx->tokens, &fx->id, SCOPE, 0.5, &tok, &len), 0);
	token_for(1, want, sizeof(want));
	CHECK(tok && len == strlen(want) && memcmp(tok, want, len) == 0);
	info_of(fx, &in);
	CHECK(in.i.valid);
	CHECK(!in.i.config_error);
	CHECK(in.i.last_error && has(in.i.last_error, ": HTTP 500"));
	CHECK_EQ_INT(in.i.fetch_ok, 1);
	fx_free(fx);
}

static void test_silent_endpoint_times_waiter_out(void)
{
	fx_t *fx = fx_new();
	got_t quick = {0}, slow = {0};
	char want[160];
	double t0 = mono();

	fx->srv.dflt.status = 0; /* accept, read, never answer */
	auth_tokens_set_http_timeout(fx->tokens, 0.3);
	CHECK_EQ_INT(auth_token_wait(fx->tokens, &fx->id, SCOPE, 0.2, on_token,
				     &quick, NULL),
		     0);
	CHECK_EQ_INT(auth_token_wait(fx->tokens, &fx->id, SCOPE, 1.0, on_token,
				     &slow, NULL),
		     0);
	CHECK(run_until(fx, pred_called, &quick, 3));
	CHECK_EQ_INT(quick.err, TP_ETIMEOUT);
	CHECK(quick.at - t0 >= 0.19 && quick.at - t0 < 0.7);
	snprintf(want, sizeof(want),
		 "no token within 0.2 s: imds http://127.0.0.1:%d: no answer "
		 "yet",
		 fx->srv.port);
	CHECK_EQ_STR(quick.reason, want);

	CHECK(run_until(fx, pred_called, &slow, 3));
	CHECK_EQ_INT(slow.err, TP_ETIMEOUT);
	CHECK(slow.at - t0 >= 0.99 && slow.at - t0 < 1.6);
	snprintf(want, sizeof(want),
		 "no token within 1 s: imds http://127.0.0.1:%d: timed out "
		 "after 0.3 s (identity: imds system-assigned)",
		 fx->srv.port);
	CHECK_EQ_STR(slow.reason, want);
	fx_free(fx);
}

static void test_imds_request_shape(void)
{
	fx_t *fx = fx_new();
	got_t g = {0};
	info_t in;

	/* NOPROXY "*": a proxy in the environment must not be used. */
	setenv("http_proxy", "http://127.0.0.1:9", 1);
	fx->id.client_id = "0c6a1b2e-1111-2222-3333-444455556666";
	CHECK_EQ_INT(
	    auth_token_wait(fx->tokens, &fx->id, SCOPE, 5, on_token, &g, NULL),
	    0);
	CHECK(run_until(fx, pred_called, &g, 5));
	CHECK_EQ_INT(g.err, 0);
	CHECK_EQ_STR(fx->srv.target,
		     "/metadata/identity/oauth2/token?api-version=2018-02-01"
		     "&resource=https%3A%2F%2Fossrdbms-aad.database.windows.net"
		     "&client_id=0c6a1b2e-1111-2222-3333-444455556666");
	CHECK(has(fx->srv.head, "\r\nMetadata: true\r\n"));
	CHECK(strncmp(fx->srv.head, "GET ", 4) == 0);
	info_of(fx, &in);
	CHECK_EQ_STR(in.i.identity,
		     "imds client_id=0c6a1b2e-1111-2222-3333-444455556666");

	/* Another identity is another entry and another request. */
	memset(&g, 0, sizeof(g));
	fx->id.client_id = NULL;
	fx->id.resource_id =
	    "/subscriptions/s/resourceGroups/g/providers/"
	    "Microsoft.ManagedIdentity/userAssignedIdentities/n";
	CHECK_EQ_INT(auth_token_wait(fx->tokens, &fx->id,
				     "https://database.windows.net/.default", 5,
				     on_token, &g, NULL),
		     0);
	CHECK(run_until(fx, pred_called, &g, 5));
	CHECK_EQ_INT(g.err, 0);
	CHECK_EQ_STR(fx->srv.target,
		     "/metadata/identity/oauth2/token?api-version=2018-02-01"
		     "&resource=https%3A%2F%2Fdatabase.windows.net"
		     "&msi_res_id=%2Fsubscriptions%2Fs%2FresourceGroups%2Fg%2F"
		     "providers%2FMicrosoft.ManagedIdentity%2F"
		     "userAssignedIdentities%2Fn");
	CHECK_EQ_INT(fx->srv.requests, 2);
	{
		info_t in;

		info_of(fx, &in);
		CHECK_EQ_INT(in.entries, 2);
	}
	unsetenv("http_proxy");
	fx_free(fx);
}

static void test_app_service_date_expires_on(void)
{
	fx_t *fx = fx_new();
	got_t g = {0};
	char ep[96], when[64];
	time_t exp = time(NULL) + 3 * 3600;
	struct tm tm;
	info_t in;

	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d/msi/token", fx->srv.port);
	setenv("IDENTITY_ENDPOINT", ep, 1);
	setenv("IDENTITY_HEADER", "hdr-secret-123", 1);
	gmtime_r(&exp, &tm);
	strftime(when, sizeof(when), "%m/%d/%Y %I:%M:%S %p +00:00", &tm);
	snprintf(fx->srv.expires_on, sizeof(fx->srv.expires_on), "%s", when);
	fx->id.source = CONF_SRC_AUTO; /* both variables set: App Service */
	fx->id.client_id = "cid";
	CHECK_EQ_INT(auth_token_wait(fx->tokens, &fx->id,
				     "https://database.windows.net/.default", 5,
				     on_token, &g, NULL),
		     0);
	CHECK(run_until(fx, pred_called, &g, 5));
	CHECK_EQ_INT(g.err, 0);
	CHECK_EQ_STR(fx->srv.target,
		     "/msi/token?api-version=2019-08-01"
		     "&resource=https%3A%2F%2Fdatabase.windows.net"
		     "&client_id=cid");
	CHECK(has(fx->srv.head, "\r\nX-IDENTITY-HEADER: hdr-secret-123\r\n"));
	CHECK(strstr(fx->srv.head, "Metadata:") == NULL);
	info_of(fx, &in);
	CHECK_EQ_STR(in.i.source, "app_service");
	CHECK_EQ_INT((long long)in.i.expires_on, (long long)exp);
	unsetenv("IDENTITY_ENDPOINT");
	unsetenv("IDENTITY_HEADER");
	fx_free(fx);
}

static void test_configuration_error_fails_fast(void)
{
	fx_t *fx = fx_new();
	got_t g = {0}, again = {0};
	double t0 = mono();
	info_t in;

	fx->srv.dflt = (canned_t){400, NULL,
				  "{\"error\":\"invalid_request\","
				  "\"error_description\":\"Identity not "
				  "found\"}"};
	fx->id.client_id = "nope";
	CHECK_EQ_INT(
	    auth_token_wait(fx->tokens, &fx->id, SCOPE, 5, on_token, &g, NULL),
	    0);
	CHECK(run_until(fx, pred_called, &g, 5));
	CHECK(g.at - t0 < 1);
	CHECK_EQ_INT(g.err, TP_ETOKEN);
	CHECK(has(g.reason,
		  "HTTP 400: Identity not found (configuration error)"));
	/* The next caller hears the same at once, without a request. */
	CHECK_EQ_INT(auth_token_wait(fx->tokens, &fx->id, SCOPE, 5, on_token,
				     &again, NULL),
		     0);
	CHECK_EQ_INT(again.calls, 0);
	CHECK(run_until(fx, pred_called, &again, 2));
	CHECK_EQ_INT(again.err, TP_ETOKEN);
	CHECK_EQ_STR(again.reason, g.reason);
	CHECK_EQ_INT(fx->srv.requests, 1);
	info_of(fx, &in);
	CHECK(in.i.config_error && !in.i.valid);
	/* Retried slowly, not hammered. */
	CHECK(in.i.next_refresh > wall() + 55);

	/* An endpoint curl cannot use as written is one too. */
	memset(&g, 0, sizeof(g));
	fx->id.imds_endpoint = "ftp://127.0.0.1:1";
	CHECK_EQ_INT(
	    auth_token_wait(fx->tokens, &fx->id, SCOPE, 5, on_token, &g, NULL),
	    0);
	CHECK(run_until(fx, pred_called, &g, 5));
	CHECK_EQ_INT(g.err, TP_ETOKEN);
	CHECK(has(g.reason, "imds ftp://127.0.0.1:1: "));
	CHECK(has(g.reason, "(configuration error)"));
	fx_free(fx);
}

/* A source missing what it needs fails at once with the line naming the
 * fix, and never makes a request. */
static void test_misconfigured_source(void)
{
	fx_t *fx = fx_new();
	got_t g = {0};
	const char *tok;
	size_t len;

	fx->id.source = CONF_SRC_WORKLOAD_IDENTITY;
	CHECK_EQ_INT(
	    auth_token_wait(fx->tokens, &fx->id, SCOPE, 5, on_token, &g, NULL),
	    0);
	CHECK_EQ_INT(g.calls, 0);
	CHECK(run_until(fx, pred_called, &g, 2));
	CHECK_EQ_INT(g.err, TP_ETOKEN);
	CHECK_EQ_STR(g.reason,
		     "workload_identity: no tenant: set identity.tenant_id or "
		     "AZURE_TENANT_ID to the app's directory (tenant) id "
		     "(identity: workload_identity system-assigned)");
	CHECK_EQ_INT(auth_token_peek(fx->tokens, &fx->id, SCOPE, 0, &tok, &len),
		     TP_EAGAIN);
	CHECK_EQ_INT(fx->srv.requests, 0);
	fx_free(fx);
}

static void test_oversized_answer_refused(void)
{
	fx_t *fx = fx_new();
	got_t g = {0};
	size_t n = 2 << 20;
	char *big = malloc(n + 1);

	memset(big, ' ', n);
	big[n] = '\0';
	fx->srv.script[0] = (canned_t){200, NULL, big};
	fx->srv.nscript = 1;
	CHECK_EQ_INT(auth_token_wait(fx->tokens, &fx->id, SCOPE, 0.6, on_token,
				     &g, NULL),
		     0);
	CHECK(run_until(fx, pred_called, &g, 3));
	CHECK_EQ_INT(g.err, TP_ETIMEOUT);
	CHECK(has(g.reason, ": response larger than 1048576 bytes"));
	fx_free(fx);
	free(big);
}

/* Closes the cache from inside a waiter's callback, then checks that the
 * cache refuses more work. */
static void on_token_closes(void *arg, int err, const char *token, size_t len,
			    const char *reason)
{
	fx_t *fx = arg;
	const char *t2;
	size_t l2;
	got_t never = {0};

	fx->closed_err = err;
	auth_tokens_close(fx->tokens);
	fx->peek_after =
	    auth_token_peek(fx->tokens, &fx->id, SCOPE, 0, &t2, &l2);
	fx->wait_after = auth_token_wait(fx->tokens, &fx->id, SCOPE, 1,
					 on_token, &never, NULL);
	fx->tokens = NULL;
}

static void test_close_and_cancel(void)
{
	fx_t *fx = fx_new();
	got_t g = {0}, cancelled = {0};
	auth_wait_t *w = NULL;

	fx->srv.dflt.status = 0;
	CHECK_EQ_INT(auth_token_wait(fx->tokens, &fx->id, SCOPE, 10, on_token,
				     &cancelled, &w),
		     0);
	CHECK(w != NULL);
	auth_wait_cancel(w);
	CHECK_EQ_INT(
	    auth_token_wait(fx->tokens, &fx->id, SCOPE, 10, on_token, &g, NULL),
	    0);
	CHECK(run_until(fx, pred_requests, (void *)1, 5));
	run_until(fx, pred_never, NULL, 0.05);
	CHECK_EQ_INT(g.calls, 0);
	auth_tokens_close(fx->tokens); /* request in flight, one waiter */
	CHECK_EQ_INT(g.calls, 1);
	CHECK_EQ_INT(g.err, TP_ESHUTDOWN);
	CHECK_EQ_INT(cancelled.calls, 0);
	fx->tokens = NULL;
	fx_free(fx);

	/* Closing from inside a waiter's callback, with a token cached. */
	fx = fx_new();
	CHECK_EQ_INT(auth_token_wait(fx->tokens, &fx->id, SCOPE, 5,
				     on_token_closes, fx, NULL),
		     0);
	fx->closed_err = -1;
	CHECK(run_until(fx, pred_requests, (void *)1, 5));
	run_until(fx, pred_never, NULL, 0.1);
	CHECK(fx->tokens == NULL);
	CHECK_EQ_INT(fx->closed_err, 0);
	CHECK_EQ_INT(fx->peek_after, TP_ESHUTDOWN);
	CHECK_EQ_INT(fx->wait_after, TP_ESHUTDOWN);
	fx_free(fx);
}

TP_TEST_MAIN(TP_TEST(test_cold_peek_starts_one_fetch),
	     TP_TEST(test_fifty_waiters_one_request),
	     TP_TEST(test_500_then_success_after_retry),
	     TP_TEST(test_429_retry_after_is_honoured),
	     TP_TEST(test_failed_refresh_keeps_token),
	     TP_TEST(test_silent_endpoint_times_waiter_out),
	     TP_TEST(test_imds_request_shape),
	     TP_TEST(test_app_service_date_expires_on),
	     TP_TEST(test_configuration_error_fails_fast),
	     TP_TEST(test_misconfigured_source),
	     TP_TEST(test_oversized_answer_refused),
	     TP_TEST(test_close_and_cancel))
