/*
 * http.c - the operator's endpoint on http.listen: /healthz, /readyz,
 * /metrics, /v1/pools, /v1/tokens, and the admin calls (POST /v1/reload,
 * POST /v1/pools/NAME/pause|resume).
 *
 * Requests are parsed by Debian's http-parser, on the same loop as the
 * proxy. One request per connection (answers say Connection: close):
 * probes and scrapers open a connection each time anyway, and it keeps the
 * state small. Everything is bounded: connections, header and body bytes,
 * and the time a request may take.
 */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#include <cjson/cJSON.h>
#include <http_parser.h>

#include "proxy/tp.h"

#define HTTP_MAX_CONNS	 64
#define HTTP_MAX_REQUEST (16u * 1024u) /* request line + headers */
#define HTTP_MAX_BODY	 (4u * 1024u)  /* nothing we serve takes a body */
#define HTTP_TIMEOUT_MS	 10000
#define HTTP_URL_MAX	 512
#define HTTP_AUTH_MAX	 1024

struct tp_http {
	tp_t *tp;
	uv_tcp_t tcp;
	tp_list_t conns;
	int nconns;
	bool closing;
};

typedef struct http_conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	int open_handles;
	tp_list_t node;
	tp_http_t *h;
	http_parser parser;
	size_t header_bytes, body_bytes;
	char url[HTTP_URL_MAX];
	size_t url_len;
	char field[32]; /* name of the header being read, lower case */
	size_t field_len;
	bool field_done;
	char auth[HTTP_AUTH_MAX]; /* the Authorization header */
	size_t auth_len;
	bool too_long; /* some piece did not fit: refuse */
	bool answered;
	uv_write_t wreq;
	char *reply;
} http_conn_t;

/* ---- connection lifetime ---- */

static void on_conn_closed(uv_handle_t *h)
{
	http_conn_t *hc = h->data;

	if (--hc->open_handles > 0)
		return;
	free(hc->reply);
	OPENSSL_cleanse(hc->auth, sizeof(hc->auth));
	free(hc);
}

static void conn_close(http_conn_t *hc)
{
	if (uv_is_closing((uv_handle_t *)&hc->tcp))
		return;
	tp_list_remove(&hc->node);
	hc->h->nconns--;
	uv_close((uv_handle_t *)&hc->timer, on_conn_closed);
	uv_close((uv_handle_t *)&hc->tcp, on_conn_closed);
}

static void on_written(uv_write_t *req, int status)
{
	(void)status;
	conn_close(req->data);
}

static void respond(http_conn_t *hc, int code, const char *ctype,
		    const char *body, size_t len)
{
	const char *reason = code == 200   ? "OK"
			     : code == 400 ? "Bad Request"
			     : code == 401 ? "Unauthorized"
			     : code == 404 ? "Not Found"
			     : code == 405 ? "Method Not Allowed"
			     : code == 408 ? "Request Timeout"
			     : code == 413 ? "Payload Too Large"
			     : code == 431 ? "Request Header Fields Too Large"
			     : code == 503 ? "Service Unavailable"
					   : "Internal Server Error";
	char head[256];
	int n;
	uv_buf_t buf;

	if (hc->answered)
		return;
	hc->answered = true;
	uv_read_stop((uv_stream_t *)&hc->tcp);
	n = snprintf(head, sizeof(head),
		     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
		     "Content-Length: %zu\r\nCache-Control: no-store\r\n"
		     "Connection: close\r\n\r\n",
		     code, reason, ctype, len);
	hc->reply = malloc((size_t)n + len);
	if (!hc->reply) {
		conn_close(hc);
		return;
	}
	memcpy(hc->reply, head, (size_t)n);
	memcpy(hc->reply + n, body, len);
	buf = uv_buf_init(hc->reply, (unsigned)((size_t)n + len));
	hc->wreq.data = hc;
	if (uv_write(&hc->wreq, (uv_stream_t *)&hc->tcp, &buf, 1, on_written) !=
	    0)
		conn_close(hc);
}

static void respond_text(http_conn_t *hc, int code, const char *text)
{
	respond(hc, code, "text/plain; charset=utf-8", text, strlen(text));
}

/* Takes ownership of json (NULL: out of memory). */
static void respond_json(http_conn_t *hc, int code, char *json)
{
	if (!json) {
		respond_text(hc, 500, "out of memory\n");
		return;
	}
	respond(hc, code, "application/json", json, strlen(json));
	free(json);
}

static char *error_json(const char *key, bool ok, const char *msg)
{
	cJSON *o = cJSON_CreateObject();
	char *out;

	if (!o)
		return NULL;
	cJSON_AddBoolToObject(o, "ok", ok);
	if (msg)
		cJSON_AddStringToObject(o, key, msg);
	out = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return out;
}

/* ---- admin ---- */

/* With http.admin_token_env set, admin calls need that bearer token;
 * without it they are open (the endpoint is on loopback by default). */
static bool admin_allowed(http_conn_t *hc)
{
	const char *want = hc->h->tp->conf->admin_token;
	size_t wlen;

	if (!want)
		return true;
	wlen = strlen(want);
	if (hc->auth_len != 7 + wlen ||
	    strncasecmp(hc->auth, "Bearer ", 7) != 0)
		return false;
	return auth_equal(hc->auth + 7, want, wlen);
}

static void admin_pool(http_conn_t *hc, const char *rest)
{
	const char *slash = strrchr(rest, '/');
	char name[256];
	tp_pool_t *pool;

	if (!slash || slash == rest || (size_t)(slash - rest) >= sizeof(name) ||
	    (strcmp(slash, "/pause") != 0 && strcmp(slash, "/resume") != 0)) {
		respond_json(hc, 404, error_json("error", false, "not found"));
		return;
	}
	memcpy(name, rest, (size_t)(slash - rest));
	name[slash - rest] = 0;
	pool = tp_pool_find(hc->h->tp, name);
	if (!pool) {
		respond_json(hc, 404,
			     error_json("error", false, "no such pool"));
		return;
	}
	if (strcmp(slash, "/pause") == 0) {
		tp_pool_pause(pool);
		tp_log(TP_LOG_INFO, NULL, "pool %s paused (admin)", name);
	} else {
		tp_pool_resume(pool);
		tp_log(TP_LOG_INFO, NULL, "pool %s resumed (admin)", name);
	}
	respond_json(hc, 200, error_json("error", true, NULL));
}

static void admin(http_conn_t *hc, const char *path)
{
	char err[1024] = "";

	if (!admin_allowed(hc)) {
		tp_log(TP_LOG_WARN, NULL,
		       "http: admin call %s refused: bad or missing bearer "
		       "token",
		       path);
		respond_json(hc, 401,
			     error_json("error", false,
					"admin calls need Authorization: "
					"Bearer <admin token>"));
		return;
	}
	if (strcmp(path, "/v1/reload") == 0) {
		int rc = tp_reload(hc->h->tp, err, sizeof(err));

		respond_json(hc, rc ? 400 : 200,
			     error_json("error", rc == 0, rc ? err : NULL));
		return;
	}
	if (strncmp(path, "/v1/pools/", 10) == 0) {
		admin_pool(hc, path + 10);
		return;
	}
	respond_json(hc, 404, error_json("error", false, "not found"));
}

/* ---- routing ---- */

static void handle(http_conn_t *hc)
{
	tp_t *tp = hc->h->tp;
	enum http_method m = hc->parser.method;
	bool get = m == HTTP_GET;
	char *q = memchr(hc->url, '?', hc->url_len);
	const char *path = hc->url;

	if (q)
		*q = 0;
	if (strcmp(path, "/healthz") == 0 && get) {
		respond_text(hc, 200, "ok\n");
	} else if (strcmp(path, "/readyz") == 0 && get) {
		char *why = NULL;

		if (tp_ready(tp, &why)) {
			free(why);
			respond_text(hc, 200, "ready\n");
		} else {
			respond_json(hc, 503, why);
		}
	} else if (strcmp(path, "/metrics") == 0 && get) {
		size_t len = 0;
		char *text = tp_metrics_render(tp, &len);

		if (!text) {
			respond_text(hc, 500, "out of memory\n");
			return;
		}
		respond(hc, 200, "text/plain; version=0.0.4; charset=utf-8",
			text, len);
		free(text);
	} else if (strcmp(path, "/v1/pools") == 0 && get) {
		respond_json(hc, 200, tp_pools_json(tp));
	} else if (strcmp(path, "/v1/tokens") == 0 && get) {
		respond_json(hc, 200, tp_tokens_json(tp));
	} else if ((strcmp(path, "/v1/reload") == 0 ||
		    strncmp(path, "/v1/pools/", 10) == 0) &&
		   m == HTTP_POST) {
		admin(hc, path);
	} else if (strcmp(path, "/healthz") == 0 ||
		   strcmp(path, "/readyz") == 0 ||
		   strcmp(path, "/metrics") == 0 ||
		   strncmp(path, "/v1/", 4) == 0) {
		respond_json(hc, 405,
			     error_json("error", false, "method not allowed"));
	} else {
		respond_json(hc, 404, error_json("error", false, "not found"));
	}
}

/* ---- http-parser callbacks ---- */

static int on_url(http_parser *p, const char *at, size_t len)
{
	http_conn_t *hc = p->data;

	if (hc->url_len + len >= sizeof(hc->url)) {
		hc->too_long = true;
		return 1;
	}
	memcpy(hc->url + hc->url_len, at, len);
	hc->url_len += len;
	hc->url[hc->url_len] = 0;
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	http_conn_t *hc = p->data;

	if (hc->field_done) { /* a new header begins */
		hc->field_len = 0;
		hc->field_done = false;
	}
	for (size_t i = 0; i < len; i++) {
		char ch = at[i];

		if (hc->field_len + 1 >= sizeof(hc->field))
			return 0; /* a long name: not one we read */
		hc->field[hc->field_len++] =
		    (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
	}
	hc->field[hc->field_len] = 0;
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	http_conn_t *hc = p->data;

	hc->field_done = true;
	if (strcmp(hc->field, "authorization") != 0)
		return 0;
	if (hc->auth_len + len >= sizeof(hc->auth)) {
		hc->too_long = true;
		return 1;
	}
	memcpy(hc->auth + hc->auth_len, at, len);
	hc->auth_len += len;
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	http_conn_t *hc = p->data;

	(void)at;
	hc->body_bytes += len;
	if (hc->body_bytes > HTTP_MAX_BODY) {
		hc->too_long = true;
		return 1;
	}
	return 0;
}

static int on_message_complete(http_parser *p)
{
	handle(p->data);
	return 1; /* one request per connection: stop parsing */
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- socket I/O ---- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	static char scratch[8192]; /* one loop, one read at a time */

	(void)h;
	(void)hint;
	*buf = uv_buf_init(scratch, sizeof(scratch));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	http_conn_t *hc = s->data;
	size_t done;

	if (n < 0) {
		conn_close(hc);
		return;
	}
	if (n == 0 || hc->answered)
		return;
	hc->header_bytes += (size_t)n;
	if (hc->header_bytes > HTTP_MAX_REQUEST + HTTP_MAX_BODY) {
		respond_text(hc, 431, "request too large\n");
		return;
	}
	done =
	    http_parser_execute(&hc->parser, &settings, buf->base, (size_t)n);
	if (hc->answered)
		return;
	if (hc->too_long) {
		respond_text(hc, hc->body_bytes > HTTP_MAX_BODY ? 413 : 431,
			     "request too large\n");
		return;
	}
	if (done != (size_t)n || HTTP_PARSER_ERRNO(&hc->parser) != HPE_OK) {
		respond_text(hc, 400, "bad request\n");
		return;
	}
}

static void on_timeout(uv_timer_t *t)
{
	http_conn_t *hc = t->data;

	if (hc->answered)
		conn_close(hc);
	else
		respond_text(hc, 408, "request timeout\n");
}

static void on_connection(uv_stream_t *server, int status)
{
	tp_http_t *h = server->data;
	http_conn_t *hc;

	if (status < 0 || h->closing)
		return;
	hc = calloc(1, sizeof(*hc));
	if (!hc)
		return;
	hc->h = h;
	uv_tcp_init(h->tp->loop, &hc->tcp);
	uv_timer_init(h->tp->loop, &hc->timer);
	hc->tcp.data = hc->timer.data = hc;
	hc->open_handles = 2;
	tp_list_append(&h->conns, &hc->node);
	h->nconns++;
	if (uv_accept(server, (uv_stream_t *)&hc->tcp) != 0) {
		conn_close(hc);
		return;
	}
	if (h->nconns > HTTP_MAX_CONNS) {
		tp_log(TP_LOG_WARN, NULL,
		       "http: more than %d connections, refusing one",
		       HTTP_MAX_CONNS);
		conn_close(hc);
		return;
	}
	http_parser_init(&hc->parser, HTTP_REQUEST);
	hc->parser.data = hc;
	uv_timer_start(&hc->timer, on_timeout, HTTP_TIMEOUT_MS, 0);
	uv_read_start((uv_stream_t *)&hc->tcp, on_alloc, on_read);
}

static void on_listener_closed(uv_handle_t *handle)
{
	free(handle->data);
}

int tp_http_start(tp_t *tp, const char *listen, char *err, size_t errlen)
{
	tp_http_t *h = calloc(1, sizeof(*h));
	char host[256];
	const char *colon = strrchr(listen, ':');
	struct sockaddr_storage ss;
	size_t hl;
	int rc;

	if (!h)
		return TP_ENOMEM;
	if (!colon || (hl = (size_t)(colon - listen)) >= sizeof(host)) {
		free(h);
		snprintf(err, errlen, "http.listen: expected host:port");
		return TP_ECONFIG;
	}
	memcpy(host, listen, hl);
	host[hl] = 0;
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = 0;
	}
	if (uv_ip4_addr(host, atoi(colon + 1), (struct sockaddr_in *)&ss) &&
	    uv_ip6_addr(host, atoi(colon + 1), (struct sockaddr_in6 *)&ss)) {
		free(h);
		snprintf(err, errlen, "http.listen %s: host must be an IP",
			 listen);
		return TP_ECONFIG;
	}
	h->tp = tp;
	tp_list_init(&h->conns);
	uv_tcp_init(tp->loop, &h->tcp);
	h->tcp.data = h;
	rc = uv_tcp_bind(&h->tcp, (struct sockaddr *)&ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&h->tcp, 128, on_connection);
	if (rc) {
		snprintf(err, errlen, "cannot listen on %s (http): %s", listen,
			 uv_strerror(rc));
		uv_close((uv_handle_t *)&h->tcp, on_listener_closed);
		return TP_EIO;
	}
	tp->http = h;
	tp_log(TP_LOG_INFO, NULL, "http endpoint on %s", listen);
	return 0;
}

void tp_http_stop(tp_t *tp)
{
	tp_http_t *h = tp->http;

	if (!h)
		return;
	tp->http = NULL;
	h->closing = true;
	while (!tp_list_empty(&h->conns))
		conn_close(tp_container_of(h->conns.next, http_conn_t, node));
	uv_close((uv_handle_t *)&h->tcp, on_listener_closed);
}
