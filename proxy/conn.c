/*
 * conn.c - one connection, client or server side: socket I/O, optional TLS,
 * buffers, the login steps the protocol asks for, and forwarding with
 * back-pressure.
 *
 * A connection is freed only in its handles' close callbacks, never inside
 * a callback of its own: tp_conn_close() marks it and closes the handles.
 * Every state change goes through tp_conn_set_state(), which keeps the
 * connection in exactly the list that matches its state.
 *
 * Not here: which server a client gets (pool.c), accept (listener.c).
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "proxy/tp.h"

/* Messages up to this size are buffered whole before they are classified;
 * larger ones are classified from their first bytes and streamed. */
#define TP_INLINE_MAX (64u * 1024u)
/* Bound on buffered input (login messages, a client waiting for a
 * server); reading stops at this size. */
#define TP_IN_MAX (1024u * 1024u)
/* Back-pressure: stop reading a side whose peer has this much unsent. */
#define TP_WQ_HIGH    (1024u * 1024u)
#define TP_WQ_LOW     (256u * 1024u)
#define TP_READ_CHUNK 4096u
/* How long a client may take to log in. */
#define TP_LOGIN_TIMEOUT_MS 60000

/* A write owns the block it sends; the block goes back to the cache (or is
 * freed) when the write completes. */
typedef struct tp_write {
	uv_write_t req;
	tp_conn_t *conn;
	tp_buf_t buf;
} tp_write_t;

static const char *const state_names[] = {
#define TP_STATE_NAME(name, desc) desc,
    TP_CONN_STATE_MAP(TP_STATE_NAME)
#undef TP_STATE_NAME
};

const char *tp_conn_state_name(tp_conn_state_t st)
{
	return st < TP_CONN_NSTATES ? state_names[st] : "?";
}

/* ---- buffers ----
 * Connections hold a buffer only while bytes are in it: an idle client
 * costs no buffer memory. Standard-size blocks are recycled through a
 * small cache on the context, so steady forwarding allocates nothing.
 * A block is wiped as far as it was ever filled before it is cached or
 * freed (logins pass through these buffers): wiping the whole capacity
 * would touch pages never used and leave them resident.
 */

static uint8_t *block_get(tp_t *tp)
{
	if (tp->nblocks)
		return tp->blocks[--tp->nblocks];
	return malloc(TP_BLOCK);
}

static inline void buf_grew(tp_buf_t *b)
{
	if (b->len > b->used)
		b->used = b->len;
}

/* Gives b's memory back (wiped) and leaves b empty. */
static void block_put(tp_t *tp, tp_buf_t *b)
{
	if (b->data) {
		buf_grew(b);
		OPENSSL_cleanse(b->data, b->used);
		if (b->cap == TP_BLOCK && tp->nblocks < TP_BLOCK_CACHE)
			tp->blocks[tp->nblocks++] = b->data;
		else
			free(b->data);
	}
	memset(b, 0, sizeof(*b));
}

static int buf_reserve(tp_t *tp, tp_buf_t *b, size_t extra, size_t max)
{
	size_t need = b->len + extra, cap = b->cap ? b->cap : TP_BLOCK;
	uint8_t *p;

	if (need <= b->cap)
		return 0;
	if (need > max)
		return TP_ETOOBIG;
	if (!b->cap && need <= TP_BLOCK) {
		b->data = block_get(tp);
		b->cap = b->data ? TP_BLOCK : 0;
		b->used = 0;
		return b->data ? 0 : TP_ENOMEM;
	}
	while (cap < need)
		cap *= 2;
	if (cap > max)
		cap = max;
	p = malloc(cap);
	if (!p)
		return TP_ENOMEM;
	if (b->len)
		memcpy(p, b->data, b->len);
	size_t len = b->len;
	block_put(tp, b);
	b->data = p;
	b->cap = cap;
	b->len = b->used = len;
	return 0;
}

void tp_buf_consume(tp_buf_t *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

/* Gives an empty buffer's memory back. */
static void buf_release(tp_t *tp, tp_buf_t *b)
{
	if (!b->len)
		block_put(tp, b);
}

/* ---- what the protocols may call ---- */

void tp_conn_out(tp_conn_t *c, const void *buf, size_t len)
{
	if (c->closing || !len)
		return;
	/* Output is bounded by the peer's input bound plus what a protocol
	 * writes itself; failure to grow is fatal for this connection. */
	if (buf_reserve(c->tp, &c->out, len, SIZE_MAX / 2) != 0) {
		tp_conn_close(c, "out of memory");
		return;
	}
	memcpy(c->out.data + c->out.len, buf, len);
	c->out.len += len;
	buf_grew(&c->out);
}

const char *tp_conn_reason(tp_conn_t *c, const char *dflt)
{
	return c->fail_msg && c->fail_msg[0] ? c->fail_msg : dflt;
}

tp_conn_t *tp_conn_peer(tp_conn_t *c)
{
	return c->peer;
}

void *tp_conn_state(tp_conn_t *c)
{
	return c->pstate;
}

uint64_t tp_conn_id(tp_conn_t *c)
{
	return c->id;
}

bool tp_conn_tls(tp_conn_t *c)
{
	return c->tls != NULL;
}

const tp_route_t *tp_conn_get_route(tp_conn_t *c)
{
	return c->route.pool ? &c->route : NULL;
}

const uint8_t *tp_conn_client_key(tp_conn_t *c)
{
	return c->client_key;
}

bool tp_conn_tls_offered(tp_conn_t *c)
{
	return c->listener && c->listener->client_ctx;
}

bool tp_conn_tls_required(tp_conn_t *c)
{
	tp_listener_t *l = c->listener;

	if (!l || !l->client_ctx || l->npools == 0)
		return false;
	for (size_t i = 0; i < l->npools; i++)
		if (l->pools[i]->conf->client_tls.mode != CONF_CTLS_REQUIRE)
			return false;
	return true;
}

void tp_conn_fail(tp_conn_t *c, int err, const char *fmt, ...)
{
	va_list ap;

	c->fail_err = err;
	va_start(ap, fmt);
	if (!c->fail_msg && !(c->fail_msg = malloc(TP_FAIL_MAX))) {
		va_end(ap);
		return;
	}
	vsnprintf(c->fail_msg, TP_FAIL_MAX, fmt, ap);
	va_end(ap);
}

void tp_conn_debug(tp_conn_t *c, const char *fmt, ...)
{
	va_list ap;

	if (!tp_log_enabled(TP_LOG_DEBUG))
		return;
	va_start(ap, fmt);
	tp_logv(TP_LOG_DEBUG, c, fmt, ap);
	va_end(ap);
}

/* The client a cancel or kill from c aims at. A 4-byte key (a MySQL
 * thread id) can be guessed, so like MySQL's own rule it reaches only
 * connections of the same user (here: same pool, same client user); an
 * 8-byte PostgreSQL key is a secret and reaches any client. */
static tp_conn_t *target_of(tp_conn_t *c, const uint8_t *key, size_t len)
{
	tp_conn_t *t = tp_find_client_by_key(c->tp, key, len);

	if (!t || len >= 8)
		return t;
	if (t->pool != c->pool || !t->route.client || !c->route.client ||
	    strcmp(t->route.client->user, c->route.client->user) != 0)
		return NULL;
	return t;
}

bool tp_conn_cancel(tp_conn_t *c, const uint8_t *key, size_t len)
{
	tp_conn_t *target = target_of(c, key, len);

	if (!target) {
		tp_log(TP_LOG_DEBUG, c, "cancel request matches no client");
		return false;
	}
	if (!target->peer) {
		tp_log(TP_LOG_DEBUG, c, "cancel request matches no query");
		return true;
	}
	tp_log(TP_LOG_INFO, target, "cancel requested");
	tp_pool_cancel(target->pool, target->peer);
	return true;
}

bool tp_conn_kill(tp_conn_t *c, const uint8_t *key, size_t len)
{
	tp_conn_t *target = target_of(c, key, len);

	if (!target)
		return false;
	tp_log(TP_LOG_INFO, target, "killed by client %llu",
	       (unsigned long long)c->id);
	if (target->peer) /* stop what runs for it, too */
		tp_pool_cancel(target->pool, target->peer);
	tp_conn_error_close(target, TP_ESHUTDOWN, "Connection was killed");
	return true;
}

/* ---- states ---- */

static tp_list_t *state_list(tp_conn_t *c, tp_conn_state_t st)
{
	tp_pool_t *p = c->pool;

	switch (st) {
	case TP_C_LOGIN:
		return &c->tp->logins;
	case TP_S_CANCEL:
		return &c->tp->cancels;
	case TP_C_IDLE:
		return &p->c_idle;
	case TP_C_WAITING:
		return &p->c_waiting;
	case TP_C_ACTIVE:
		return &p->c_active;
	case TP_S_CONNECTING:
		return &p->s_connecting;
	case TP_S_IDLE:
		return &p->s_idle;
	case TP_S_ACTIVE:
		return &p->s_active;
	case TP_S_RESET:
		return &p->s_reset;
	case TP_CLOSING:
		return NULL;
	default:
		abort(); /* a state without a list is a bug */
	}
}

void tp_conn_set_state(tp_conn_t *c, tp_conn_state_t st)
{
	tp_list_t *l = state_list(c, st);

	tp_list_remove(&c->node);
	if (c->pool && c->state != TP_CLOSING)
		c->pool->count[c->state]--;
	c->state = st;
	if (c->pool && st != TP_CLOSING)
		c->pool->count[st]++;
	if (l)
		tp_list_append(l, &c->node);
}

/* ---- deadlines ---- */

void tp_conn_deadline(tp_conn_t *c, void (*cb)(tp_conn_t *c), uint64_t ms)
{
	tp_list_remove(&c->timed_node);
	c->due_ms = tp_now_ms(c->tp) + ms;
	c->due = cb;
	tp_list_append(&c->tp->timed, &c->timed_node);
}

void tp_conn_deadline_stop(tp_conn_t *c)
{
	tp_list_remove(&c->timed_node);
	c->due = NULL;
}

void tp_deadlines_sweep(tp_t *tp)
{
	uint64_t now = tp_now_ms(tp);
	tp_list_t due, *n, *next;

	/* Due ones move to a list of their own first: a callback may close
	 * other connections, which unlinks them from wherever they are. */
	tp_list_init(&due);
	for (n = tp->timed.next; n != &tp->timed; n = next) {
		next = n->next;
		if (tp_container_of(n, tp_conn_t, timed_node)->due_ms <= now) {
			tp_list_remove(n);
			tp_list_append(&due, n);
		}
	}
	while (!tp_list_empty(&due)) {
		tp_conn_t *c = tp_container_of(due.next, tp_conn_t, timed_node);
		void (*cb)(tp_conn_t *) = c->due;

		tp_conn_deadline_stop(c);
		if (cb && !c->closing)
			cb(c);
	}
}

/* ---- life cycle ---- */

void tp_conn_handle_closed(uv_handle_t *h)
{
	tp_conn_t *c = h->data;

	if (--c->open_handles > 0)
		return;
	if (c->proto && c->pstate)
		c->proto->conn_free(c->pstate);
	tp_tls_free(c->tls);
	c->in.len = c->out.len = 0;
	block_put(c->tp, &c->in);
	block_put(c->tp, &c->out);
	if (c->up && c->up->secret) {
		OPENSSL_cleanse(c->up->secret, c->up->login.secret_len);
		free(c->up->secret);
	}
	if (c->up && c->up->addrs)
		uv_freeaddrinfo(c->up->addrs);
	if (c->up)
		free(c->up->redirect_host);
	free(c->up);
	free(c->fail_msg);
	free(c);
}

tp_conn_t *tp_conn_new(tp_t *tp, tp_side_t side, const tp_protocol_t *proto)
{
	tp_conn_t *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->pstate = proto->conn_new(side == TP_SIDE_CLIENT);
	if (side == TP_SIDE_SERVER)
		c->up = calloc(1, sizeof(*c->up));
	if (!c->pstate || (side == TP_SIDE_SERVER && !c->up)) {
		if (c->pstate)
			proto->conn_free(c->pstate);
		free(c->up);
		free(c);
		return NULL;
	}
	c->tp = tp;
	c->id = ++tp->next_id;
	c->side = side;
	c->proto = proto;
	c->state = TP_CLOSING; /* no list until the first real state */
	tp_list_init(&c->node);
	uv_tcp_init(tp->loop, &c->tcp);
	tp_list_init(&c->timed_node);
	tp_list_init(&c->kick_node);
	c->tcp.data = c;
	c->open_handles = 1;
	c->created_ms = c->last_used_ms = tp_now_ms(tp);
	return c;
}

void tp_conn_close(tp_conn_t *c, const char *reason)
{
	if (c->closing)
		return;
	c->closing = true;
	if (tp_log_enabled(TP_LOG_INFO))
		tp_log(TP_LOG_INFO, c,
		       "%s closed after %.3f s, %llu bytes in, %llu out (%s): "
		       "%s",
		       c->side == TP_SIDE_CLIENT ? "client" : "server",
		       (double)(tp_now_ms(c->tp) - c->created_ms) / 1000.0,
		       (unsigned long long)c->bytes_in,
		       (unsigned long long)c->bytes_out,
		       tp_conn_state_name(c->state), reason);
	if (c->up && c->up->token_wait) {
		auth_wait_cancel(c->up->token_wait);
		c->up->token_wait = NULL;
	}
	if (c->side == TP_SIDE_CLIENT) {
		/* What the client was told it failed with (metrics). */
		if (c->fail_err)
			tp_count_error(c->tp, c->fail_err);
		if (c->pool)
			tp_pool_client_gone(c->pool, c);
	} else if (c->pool) {
		tp_pool_server_gone(c->pool, c, reason);
	}
	tp_conn_set_state(c, TP_CLOSING);
	tp_conn_deadline_stop(c);
	tp_list_remove(&c->kick_node);
	if (!c->reconnecting) /* else the retry's close callback frees */
		uv_close((uv_handle_t *)&c->tcp, tp_conn_handle_closed);
}

static void on_close_timeout(tp_conn_t *c)
{
	tp_conn_close(c, "peer did not read the final message");
}

void tp_conn_error_close(tp_conn_t *c, int err, const char *msg)
{
	if (c->closing || c->close_after_flush)
		return;
	tp_log(TP_LOG_INFO, c, "refusing: %s", msg);
	if (c->side == TP_SIDE_CLIENT && !c->fail_err)
		c->fail_err = err; /* counted at close */
	if (c->side == TP_SIDE_CLIENT)
		c->proto->client_error(c, err, msg);
	/* Out of the wait queue: nobody may hand it a server now. */
	if (c->state == TP_C_WAITING)
		tp_conn_set_state(c, TP_C_IDLE);
	c->close_after_flush = true;
	tp_conn_stop_read(c);
	tp_conn_deadline(c, on_close_timeout, 5000);
	tp_conn_flush(c);
	if (!c->closing && c->write_queued == 0)
		tp_conn_close(c, msg);
}

/* ---- writing ---- */

static void on_written(uv_write_t *req, int status)
{
	tp_write_t *w = (tp_write_t *)req;
	tp_conn_t *c = w->conn;

	c->write_queued -= w->buf.len;
	block_put(c->tp, &w->buf);
	free(w);
	if (c->closing || (status == UV_ECANCELED && c->reconnecting))
		return;
	if (status < 0) {
		tp_conn_close(c, uv_strerror(status));
		return;
	}
	if (c->close_after_flush && c->write_queued == 0) {
		tp_conn_close(c, tp_conn_reason(c, "done"));
		return;
	}
	/* Back-pressure released: the peer may read again. */
	if (c->write_queued < TP_WQ_LOW && c->peer && !c->peer->reading &&
	    !c->peer->close_after_flush)
		tp_conn_start_read(c->peer);
}

/* Sends b, taking ownership of its memory. */
static int submit(tp_conn_t *c, tp_buf_t *b)
{
	tp_write_t *w;
	uv_buf_t ub = uv_buf_init((char *)b->data, (unsigned)b->len);
	int rc;

	c->bytes_out += b->len;
	if (c->pool) {
		if (c->side == TP_SIDE_CLIENT)
			c->pool->st.client_out += b->len;
		else
			c->pool->st.server_out += b->len;
	}
	/* Nothing queued: write now. When the socket takes it all (the
	 * usual case) no request is queued and libuv does not arm and
	 * disarm write interest: a syscall less per message. */
	if (c->write_queued == 0) {
		rc = uv_try_write((uv_stream_t *)&c->tcp, &ub, 1);
		if (rc == (int)b->len) {
			block_put(c->tp, b);
			return 0;
		}
		if (rc > 0) {
			memmove(b->data, b->data + rc, b->len - (size_t)rc);
			b->len -= (size_t)rc;
			ub = uv_buf_init((char *)b->data, (unsigned)b->len);
		} else if (rc != UV_EAGAIN && rc != UV_ENOSYS) {
			block_put(c->tp, b);
			tp_conn_close(c, uv_strerror(rc));
			return rc;
		}
	}
	w = malloc(sizeof(*w));
	if (!w) {
		block_put(c->tp, b);
		tp_conn_close(c, "out of memory");
		return TP_ENOMEM;
	}
	w->conn = c;
	w->buf = *b;
	memset(b, 0, sizeof(*b));
	c->write_queued += w->buf.len;
	rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, on_written);
	if (rc < 0) {
		c->write_queued -= w->buf.len;
		block_put(c->tp, &w->buf);
		free(w);
		tp_conn_close(c, uv_strerror(rc));
	}
	return rc;
}

/* Ciphertext the TLS stream produced goes to the socket. */
static void flush_cipher(tp_conn_t *c)
{
	while (!c->closing && tp_tls_pending(c->tls) > 0) {
		tp_buf_t b = {0};

		if (buf_reserve(c->tp, &b, TP_BLOCK, TP_BLOCK)) {
			tp_conn_close(c, "out of memory");
			return;
		}
		b.len = tp_tls_take(c->tls, b.data, b.cap);
		buf_grew(&b);
		if (submit(c, &b) < 0)
			return;
	}
}

void tp_conn_flush(tp_conn_t *c)
{
	if (c->closing)
		return;
	if (c->tls && !c->tls_wrapped) {
		if (c->out.len && c->tls->done) {
			if (tp_tls_write(c->tls, c->out.data, c->out.len)) {
				tp_conn_close(c, "TLS write failed");
				return;
			}
			c->out.len = 0;
			buf_release(c->tp, &c->out);
		}
		flush_cipher(c);
		return;
	}
	if (c->out.len)
		submit(c, &c->out);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	tp_conn_t *c = h->data;

	if (c->tls && !c->tls_wrapped) {
		/* Ciphertext lands in the shared scratch buffer and is fed
		 * to OpenSSL before the next read can happen. */
		*buf =
		    uv_buf_init((char *)c->tp->scratch, sizeof(c->tp->scratch));
		return;
	}
	if (buf_reserve(c->tp, &c->in, TP_READ_CHUNK,
			TP_IN_MAX + TP_READ_CHUNK)) {
		*buf = uv_buf_init(NULL, 0);
		return;
	}
	*buf = uv_buf_init((char *)c->in.data + c->in.len,
			   (unsigned)(c->in.cap - c->in.len));
}

bool tp_conn_tls_input(tp_conn_t *c, const uint8_t *data, size_t n)
{
	char err[256];
	int rc;

	if (tp_tls_feed(c->tls, data, n)) {
		tp_conn_close(c, "out of memory");
		return false;
	}
	if (!c->tls->done) {
		rc = tp_tls_handshake(c->tls, err, sizeof(err));
		flush_cipher(c);
		if (rc == TP_EAGAIN || c->closing)
			return !c->closing;
		if (rc) {
			tp_conn_fail(
			    c, TP_ETLS, "TLS handshake with %s failed: %s",
			    c->side == TP_SIDE_SERVER ? "server" : "client",
			    err);
			tp_conn_close(c, tp_conn_reason(c, "failed"));
			return false;
		}
		tp_conn_tls_ready(c);
		if (c->closing)
			return false;
	}
	for (;;) {
		if (buf_reserve(c->tp, &c->in, TP_READ_CHUNK,
				TP_IN_MAX + TP_READ_CHUNK)) {
			/* Full: leave the rest inside OpenSSL. */
			tp_conn_stop_read(c);
			return true;
		}
		rc = tp_tls_read(c->tls, c->in.data + c->in.len,
				 c->in.cap - c->in.len);
		if (rc == 0)
			break;
		if (rc < 0) {
			/* What arrived before the close is still processed
			 * (a server's last error message, typically). */
			c->tls_eof = rc == TP_EIO ? 1 : 2;
			break;
		}
		c->in.len += (size_t)rc;
		buf_grew(&c->in);
	}
	flush_cipher(c); /* key updates, alerts */
	return !c->closing;
}

static void peer_closed(tp_conn_t *c, const char *why)
{
	if (c->state == TP_S_CONNECTING && !c->fail_msg)
		tp_conn_fail(c, TP_ECONNECT,
			     "server closed the connection during login");
	tp_conn_close(c, why);
}

/* What follows new input, whether from the socket or from OpenSSL. */
static void after_input(tp_conn_t *c)
{
	tp_conn_process(c);
	if (c->tls_eof && !c->closing)
		peer_closed(c, c->tls_eof == 1 ? "peer closed TLS"
					       : "TLS read failed");
	if (!c->closing)
		buf_release(c->tp, &c->in);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	tp_conn_t *c = s->data;

	if (c->closing)
		return;
	if (n == UV_ENOBUFS) {
		tp_conn_stop_read(c);
		return;
	}
	if (n < 0) {
		peer_closed(c, n == UV_EOF ? "peer closed the connection"
					   : uv_strerror((int)n));
		return;
	}
	if (n == 0)
		return;
	c->bytes_in += (uint64_t)n;
	if (c->pool) {
		if (c->side == TP_SIDE_CLIENT)
			c->pool->st.client_in += (uint64_t)n;
		else
			c->pool->st.server_in += (uint64_t)n;
	}
	if (c->tls && !c->tls_wrapped) {
		if (!tp_conn_tls_input(c, (const uint8_t *)buf->base,
				       (size_t)n))
			return;
	} else {
		c->in.len += (size_t)n;
		buf_grew(&c->in);
	}
	after_input(c);
}

/* Reading stops when a connection's input is full with ciphertext still
 * inside OpenSSL (tp_conn_tls_input). The socket will not report those
 * bytes again: when reading starts again they are decrypted on the next
 * turn of the loop -- not at once, since reading is started from the
 * middle of other connections' processing. */
static void on_kick(uv_idle_t *h)
{
	tp_t *tp = h->data;

	while (!tp_list_empty(&tp->kicks)) {
		tp_conn_t *c =
		    tp_container_of(tp->kicks.next, tp_conn_t, kick_node);

		tp_list_remove(&c->kick_node);
		if (c->closing || !c->reading || !c->tls || c->tls_wrapped)
			continue;
		if (tp_conn_tls_input(c, NULL, 0))
			after_input(c);
	}
	uv_idle_stop(h);
}

void tp_conn_start_read(tp_conn_t *c)
{
	if (c->reading || c->closing)
		return;
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
		return;
	c->reading = true;
	if (c->tls && !c->tls_wrapped && tp_tls_has_input(c->tls) &&
	    tp_list_empty(&c->kick_node)) {
		tp_list_append(&c->tp->kicks, &c->kick_node);
		uv_idle_start(&c->tp->kick, on_kick);
	}
}

void tp_conn_stop_read(tp_conn_t *c)
{
	if (!c->reading || c->closing)
		return;
	uv_read_stop((uv_stream_t *)&c->tcp);
	c->reading = false;
	tp_list_remove(&c->kick_node);
}

/* ---- TLS inside protocol packets (TDS PRELOGIN) ---- */

int tp_conn_tls_start_wrapped(tp_conn_t *c, const char *server_name)
{
	SSL_CTX *ctx;
	const char *name = server_name;

	if (c->tls)
		return TP_EINVAL;
	if (c->side == TP_SIDE_CLIENT) {
		ctx = c->listener ? c->listener->client_ctx : NULL;
	} else {
		ctx = c->pool->server_ctx;
		if (!name)
			name = tp_server_tls_name(c);
	}
	if (!ctx)
		return TP_ETLS;
	c->tls = tp_tls_new(ctx, c->side == TP_SIDE_SERVER, name);
	if (!c->tls)
		return TP_ENOMEM;
	/* TLS inside PRELOGIN is a TLS 1.2 affair for every client seen. */
	SSL_set_max_proto_version(c->tls->ssl, TLS1_2_VERSION);
	c->tls_wrapped = true;
	return 0;
}

int tp_conn_tls_feed(tp_conn_t *c, const void *buf, size_t len)
{
	char err[256];
	int rc;

	if (!c->tls || !c->tls_wrapped)
		return TP_EINVAL;
	if (len && tp_tls_feed(c->tls, buf, len))
		return TP_ENOMEM;
	if (c->tls->done)
		return 1;
	rc = tp_tls_handshake(c->tls, err, sizeof(err));
	if (rc == TP_EAGAIN)
		return 0;
	if (rc) {
		tp_conn_fail(c, TP_ETLS, "TLS handshake with %s failed: %s",
			     c->side == TP_SIDE_SERVER ? "server" : "client",
			     err);
		return TP_ETLS;
	}
	return 1;
}

size_t tp_conn_tls_take(tp_conn_t *c, void *buf, size_t cap)
{
	return c->tls ? tp_tls_take(c->tls, buf, cap) : 0;
}

void tp_conn_tls_unwrap(tp_conn_t *c)
{
	if (c->tls && c->tls_wrapped)
		c->tls_unwrap = true;
}

bool tp_conn_tls_input_pending(tp_conn_t *c)
{
	size_t n = c->in.len;
	uint8_t *rest;
	bool ok;

	if (!n)
		return !c->closing;
	/* Decryption writes into c->in: take the ciphertext out first. */
	rest = malloc(n);
	if (!rest) {
		tp_conn_close(c, "out of memory");
		return false;
	}
	memcpy(rest, c->in.data, n);
	c->in.len = 0;
	ok = tp_conn_tls_input(c, rest, n);
	free(rest);
	return ok && !c->closing;
}

bool tp_conn_tls_finish_unwrap(tp_conn_t *c)
{
	c->tls_unwrap = false;
	tp_conn_flush(c); /* the last wrapped flight, raw */
	if (c->closing)
		return false;
	c->tls_wrapped = false;
	tp_conn_tls_ready(c);
	/* What followed the last wrapped packet is already TLS records. */
	return !c->closing && tp_conn_tls_input_pending(c);
}

int tp_conn_redirect(tp_conn_t *s, const char *host, uint16_t port)
{
	char *copy;

	if (!s->up || !host || !*host || port == 0)
		return TP_EINVAL;
	copy = strdup(host);
	if (!copy)
		return TP_ENOMEM;
	free(s->up->redirect_host);
	s->up->redirect_host = copy;
	s->up->redirect_port = port;
	return 0;
}
