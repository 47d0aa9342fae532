/*
 * curl_uv.c - libcurl's multi interface driven by a libuv loop.
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION: one
 * uv_poll_t per socket) and when to wake it up (CURLMOPT_TIMERFUNCTION: one
 * uv_timer_t); we tell curl what happened with curl_multi_socket_action()
 * and collect finished transfers with curl_multi_info_read(). Every handle
 * is closed with uv_close() and freed in its close callback.
 *
 * Requests are small and bounded: a body cap (AUTH_HTTP_BODY_MAX), a total
 * and a connect timeout, no redirects, http/https only, no signals, never
 * verbose (a token must not reach stderr). Bodies are wiped before they are
 * freed because they hold tokens.
 *
 * Not here: what to ask for or how to read the answer (sources.c), retries
 * (tokens.c). Name resolution is curl's: off the loop only when libcurl was
 * built with an asynchronous resolver (auth_tokens_async_dns()).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "auth/internal.h"

#ifndef TP_VERSION
#define TP_VERSION "dev"
#endif

typedef struct auth_http_sock auth_http_sock_t;

/* One socket curl asked us to watch. Lives from the first socket callback
 * for fd until CURL_POLL_REMOVE (or auth_http_close), then until its close
 * callback. */
struct auth_http_sock {
	uv_poll_t poll;
	auth_http_t *http;
	curl_socket_t fd;
	auth_http_sock_t *prev, *next;
};

struct auth_http_req {
	auth_http_t *http;
	CURL *easy;
	struct curl_slist *headers;
	char *post; /* our copy; curl reads it in place */
	size_t post_len;
	char *body;
	size_t len, cap;
	bool too_big;
	double timeout, connect_timeout;
	auth_http_cb cb;
	void *arg;
	auth_http_req_t *prev, *next;
	char errbuf[CURL_ERROR_SIZE];
};

struct auth_http {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer;
	auth_http_sock_t *socks;
	auth_http_req_t *reqs;
	int handles; /* open uv handles; free when closing and zero */
	bool closing;
};

static void check_done(auth_http_t *h);

/* ---- lists ---- */

#define LIST_LINK(head, x)                  \
	do {                                \
		(x)->prev = NULL;           \
		(x)->next = (head);         \
		if (head)                   \
			(head)->prev = (x); \
		(head) = (x);               \
	} while (0)

#define LIST_UNLINK(head, x)                         \
	do {                                         \
		if ((x)->prev)                       \
			(x)->prev->next = (x)->next; \
		else                                 \
			(head) = (x)->next;          \
		if ((x)->next)                       \
			(x)->next->prev = (x)->prev; \
		(x)->prev = (x)->next = NULL;        \
	} while (0)

/* ---- freeing ---- */

static void http_maybe_free(auth_http_t *h)
{
	if (h->closing && h->handles == 0) {
		free(h);
		curl_global_cleanup(); /* pairs with auth_http_new */
	}
}

static void on_handle_closed(uv_handle_t *handle)
{
	auth_http_t *h = handle->data;

	h->handles--;
	http_maybe_free(h);
}

static void on_sock_closed(uv_handle_t *handle)
{
	auth_http_sock_t *s = handle->data;
	auth_http_t *h = s->http;

	free(s);
	h->handles--;
	http_maybe_free(h);
}

static void sock_close(auth_http_sock_t *s)
{
	LIST_UNLINK(s->http->socks, s);
	uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

/* Wipes what may hold a secret: the body (a token), the POST data (a client
 * secret) and the header lines (X-IDENTITY-HEADER). */
static void req_free(auth_http_req_t *r)
{
	if (r->easy)
		curl_easy_cleanup(r->easy);
	for (struct curl_slist *l = r->headers; l; l = l->next)
		OPENSSL_cleanse(l->data, strlen(l->data));
	curl_slist_free_all(r->headers);
	if (r->post)
		OPENSSL_clear_free(r->post, r->post_len);
	if (r->body)
		OPENSSL_clear_free(r->body, r->cap);
	free(r);
}

/* ---- curl -> uv ---- */

static void on_poll(uv_poll_t *poll, int status, int events)
{
	auth_http_sock_t *s = poll->data;
	auth_http_t *h = s->http;
	int flags = 0, running = 0;

	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	/* s may be closed by the socket callback inside this call. */
	curl_multi_socket_action(h->multi, s->fd, flags, &running);
	check_done(h);
}

/* Returns the watcher for fd, creating it on first use. NULL on failure. */
static auth_http_sock_t *sock_get(auth_http_t *h, curl_socket_t fd,
				  auth_http_sock_t *s)
{
	if (s)
		return s;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	if (uv_poll_init_socket(h->loop, &s->poll, fd) != 0) {
		free(s);
		return NULL;
	}
	s->http = h;
	s->fd = fd;
	s->poll.data = s;
	h->handles++;
	LIST_LINK(h->socks, s);
	curl_multi_assign(h->multi, fd, s);
	return s;
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
			  void *socketp)
{
	auth_http_t *h = userp;
	auth_http_sock_t *s = socketp;
	int events = 0;

	if (what == CURL_POLL_REMOVE) {
		if (s) {
			sock_close(s);
			if (!h->closing)
				curl_multi_assign(h->multi, fd, NULL);
		}
		return 0;
	}
	s = sock_get(h, fd, s);
	if (!s)
		return -1; /* curl fails the transfers on this multi */
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	return uv_poll_start(&s->poll, events, on_poll) == 0 ? 0 : -1;
}

static void on_timer(uv_timer_t *timer)
{
	auth_http_t *h = timer->data;
	int running = 0;

	curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(h);
}

/* curl asks to be woken in timeout_ms (-1: never). A timeout of 0 becomes a
 * uv timer of 0, so curl is never re-entered from inside this callback. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
	auth_http_t *h = userp;

	/* Neither call can fail on an open timer with a callback. */
	if (uv_is_closing((uv_handle_t *)&h->timer))
		return 0;
	if (timeout_ms < 0)
		uv_timer_stop(&h->timer);
	else
		uv_timer_start(&h->timer, on_timer, (uint64_t)timeout_ms, 0);
	return 0;
}

/* ---- finished transfers ---- */

/* One line for a transport failure, without the URL. */
static void describe(auth_http_req_t *r, CURLcode code, char *out, size_t cap)
{
	long oserr = 0;
	curl_off_t connect_us = 0;

	curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &oserr);
	curl_easy_getinfo(r->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
	switch (code) {
	case CURLE_OPERATION_TIMEDOUT:
		if (connect_us == 0)
			snprintf(out, cap, "connect timed out after %g s",
				 r->connect_timeout);
		else
			snprintf(out, cap, "timed out after %g s", r->timeout);
		break;
	case CURLE_COULDNT_CONNECT:
		if (oserr == ECONNREFUSED)
			snprintf(out, cap, "connection refused");
		else
			snprintf(out, cap, "could not connect: %s",
				 oserr ? strerror((int)oserr) : "unknown");
		break;
	case CURLE_COULDNT_RESOLVE_HOST:
		snprintf(out, cap, "could not resolve host");
		break;
	case CURLE_WRITE_ERROR:
		if (r->too_big) {
			snprintf(out, cap, "response larger than %d bytes",
				 AUTH_HTTP_BODY_MAX);
			break;
		}
		/* fall through */
	default:
		if (oserr == ECONNRESET)
			snprintf(out, cap, "connection reset");
		else
			snprintf(out, cap, "%s", curl_easy_strerror(code));
		break;
	}
}

/* Hands the result to the owner and frees the request. The request is off
 * the multi and off our list before cb runs, so cb may start requests,
 * cancel others or even close http. */
static void finish(auth_http_t *h, auth_http_req_t *r, CURLcode code)
{
	auth_http_result_t res = {.body = ""};
	char why[160];
	curl_off_t retry_after = 0;

	curl_multi_remove_handle(h->multi, r->easy);
	LIST_UNLINK(h->reqs, r);
	if (code == CURLE_OK) {
		curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
		if (curl_easy_getinfo(r->easy, CURLINFO_RETRY_AFTER,
				      &retry_after) == CURLE_OK &&
		    retry_after > 0)
			res.retry_after = (double)retry_after;
		if (r->body) {
			res.body = r->body;
			res.len = r->len;
		}
	} else {
		describe(r, code, why, sizeof(why));
		res.error = why;
		res.permanent = code == CURLE_URL_MALFORMAT ||
				code == CURLE_UNSUPPORTED_PROTOCOL;
	}
	r->cb(r->arg, &res);
	req_free(r);
}

static void check_done(auth_http_t *h)
{
	CURLMsg *msg;
	int left;

	/* closing: a callback closed http; the multi is gone. */
	while (!h->closing && (msg = curl_multi_info_read(h->multi, &left))) {
		auth_http_req_t *r = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &r);
		/* msg is invalid once the handle leaves the multi. */
		finish(h, r, msg->data.result);
	}
}

/* ---- requests ---- */

static size_t on_body(char *data, size_t size, size_t n, void *userp)
{
	auth_http_req_t *r = userp;
	size_t add = size * n;

	if (add > (size_t)AUTH_HTTP_BODY_MAX - r->len) {
		r->too_big = true;
		return 0; /* curl aborts with CURLE_WRITE_ERROR */
	}
	if (r->len + add + 1 > r->cap) {
		/* Grow by copy so the old block can be wiped, not realloc. */
		size_t cap = r->cap ? r->cap : 4096;
		char *body;

		while (cap < r->len + add + 1)
			cap *= 2;
		body = malloc(cap);
		if (!body)
			return 0;
		if (r->body) {
			memcpy(body, r->body, r->len);
			OPENSSL_clear_free(r->body, r->cap);
		}
		r->body = body;
		r->cap = cap;
	}
	memcpy(r->body + r->len, data, add);
	r->len += add;
	r->body[r->len] = '\0';
	return add;
}

static long ms(double seconds)
{
	if (!(seconds > 0.001))
		return 1;
	if (seconds > 86400)
		return 86400L * 1000;
	return (long)(seconds * 1000.0 + 0.5);
}

/* Sets everything but the URL-independent callbacks; false when curl
 * refused an option (out of memory, or an option this build lacks). */
static bool req_setup(auth_http_req_t *r, const auth_http_spec_t *spec)
{
	CURL *e = r->easy;
	bool ok = true;

	for (const char *const *hl = spec->headers; hl && *hl; hl++) {
		struct curl_slist *l = curl_slist_append(r->headers, *hl);

		if (!l)
			return false;
		r->headers = l;
	}
	ok = ok && curl_easy_setopt(e, CURLOPT_URL, spec->url) == CURLE_OK;
	ok = ok &&
	     curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers) == CURLE_OK;
	ok = ok && curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") ==
		       CURLE_OK;
	ok = ok && curl_easy_setopt(e, CURLOPT_USERAGENT,
				    "tokenpool/" TP_VERSION) == CURLE_OK;
	ok = ok && (!spec->no_proxy ||
		    curl_easy_setopt(e, CURLOPT_NOPROXY, "*") == CURLE_OK);
	if (ok && spec->post) {
		ok = curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE,
				      (long)r->post_len) == CURLE_OK &&
		     curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->post) ==
			 CURLE_OK;
	}
	/* These cannot fail for a valid handle; curl copies nothing. */
	curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_VERBOSE, 0L);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, ms(r->timeout));
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ms(r->connect_timeout));
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
	return ok;
}

int auth_http_request(auth_http_t *h, const auth_http_spec_t *spec,
		      auth_http_cb cb, void *arg, auth_http_req_t **out)
{
	auth_http_req_t *r;

	if (!h || h->closing || !spec || !spec->url || !cb)
		return TP_EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return TP_ENOMEM;
	r->http = h;
	r->cb = cb;
	r->arg = arg;
	r->timeout = spec->timeout > 0 ? spec->timeout : AUTH_HTTP_TIMEOUT;
	r->connect_timeout =
	    spec->connect_timeout > 0 ? spec->connect_timeout : r->timeout;
	if (spec->post) {
		r->post_len = spec->post_len;
		r->post = malloc(r->post_len + 1);
		if (r->post) {
			memcpy(r->post, spec->post, r->post_len);
			r->post[r->post_len] = '\0';
		}
	}
	r->easy = curl_easy_init();
	if (!r->easy || (spec->post && !r->post)) {
		req_free(r);
		return TP_ENOMEM;
	}
	if (!req_setup(r, spec) ||
	    curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) {
		req_free(r);
		return TP_EINVAL;
	}
	LIST_LINK(h->reqs, r);
	if (out)
		*out = r;
	return 0;
}

void auth_http_cancel(auth_http_req_t *r)
{
	auth_http_t *h;

	if (!r)
		return;
	h = r->http;
	curl_multi_remove_handle(h->multi, r->easy);
	LIST_UNLINK(h->reqs, r);
	req_free(r);
}

/* ---- lifetime ---- */

auth_http_t *auth_http_new(uv_loop_t *loop)
{
	auth_http_t *h;

	/* Reference counted by libcurl; paired in http_maybe_free. */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return NULL;
	h = calloc(1, sizeof(*h));
	if (!h)
		goto fail;
	h->loop = loop;
	h->multi = curl_multi_init();
	if (!h->multi || uv_timer_init(loop, &h->timer) != 0)
		goto fail;
	h->timer.data = h;
	h->handles = 1;
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
	return h;
fail:
	if (h && h->multi)
		curl_multi_cleanup(h->multi);
	free(h);
	curl_global_cleanup();
	return NULL;
}

void auth_http_close(auth_http_t *h)
{
	if (!h || h->closing)
		return;
	h->closing = true;
	while (h->reqs) {
		auth_http_req_t *r = h->reqs;

		curl_multi_remove_handle(h->multi, r->easy);
		LIST_UNLINK(h->reqs, r);
		req_free(r);
	}
	/* Closing cached connections may call on_curl_socket(REMOVE). */
	curl_multi_cleanup(h->multi);
	h->multi = NULL;
	while (h->socks)
		sock_close(h->socks);
	uv_close((uv_handle_t *)&h->timer, on_handle_closed);
}

bool auth_tokens_async_dns(void)
{
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);

	return v && (v->features & CURL_VERSION_ASYNCHDNS);
}
