/*
 * flow.c - what happens to bytes once they are in a connection's buffer:
 * login steps (handed to the protocol), TLS starts, and forwarding between
 * a linked client and server with transaction-boundary detection.
 *
 * Forwarding never parses more than the protocol's frame() needs: small
 * messages are classified whole, large ones from their first bytes and
 * then streamed, so a 1 GB row costs no more memory than a 1 KB one.
 */
#include <stdlib.h>
#include <string.h>

#include "proxy/tp.h"

#define TP_INLINE_MAX (64u * 1024u)
#define TP_WQ_HIGH    (1024u * 1024u)

static void consume(tp_conn_t *c, size_t n)
{
	tp_buf_consume(&c->in, n);
}

static void close_after_flush(tp_conn_t *c)
{
	c->close_after_flush = true;
	tp_conn_stop_read(c);
	tp_conn_flush(c);
	if (!c->closing && c->write_queued == 0)
		tp_conn_close(c, tp_conn_reason(c, "done"));
}

/* ---- client login ---- */

static void client_start_tls(tp_conn_t *c)
{
	tp_conn_flush(c); /* the protocol's "go ahead" goes in clear */
	c->tls = tp_tls_new(c->listener->client_ctx, false, NULL);
	if (!c->tls) {
		tp_conn_close(c, "cannot start TLS");
		return;
	}
	/* Whatever followed the request is already the ClientHello: run the
	 * handshake on it now (MySQL clients send it right behind the
	 * SSLRequest, and nothing else would arrive to start it). */
	(void)tp_conn_tls_input_pending(c);
}

static void client_authenticated(tp_conn_t *c)
{
	tp_pool_t *pool = c->pool;

	tp_conn_deadline_stop(c);
	tp_log(TP_LOG_INFO, c, "client logged in as %s%s",
	       c->route.client ? c->route.client->user : "?",
	       c->tls ? " over TLS" : "");
	if (pool->welcome) {
		c->proto->client_welcome(c, pool->welcome, pool->welcome_len);
		tp_conn_set_state(c, TP_C_IDLE);
		tp_conn_flush(c);
		if (c->in.len && !c->closing)
			tp_pool_acquire(pool, c);
		return;
	}
	/* The first client of a pool waits for a server's parameters. */
	c->needs_welcome = true;
	tp_pool_acquire(pool, c);
}

static void client_step(tp_conn_t *c, tp_step_t step)
{
	switch (step) {
	case TP_STEP_MORE:
		tp_conn_flush(c);
		break;
	case TP_STEP_TLS:
		client_start_tls(c);
		break;
	case TP_STEP_DONE:
		tp_conn_flush(c);
		if (!c->closing)
			client_authenticated(c);
		break;
	case TP_STEP_CLOSE:
		close_after_flush(c);
		break;
	case TP_STEP_REDIRECT: /* a server-side step only */
		tp_conn_close(c, "protocol error: redirect on a client");
		break;
	}
}

static void process_client_login(tp_conn_t *c)
{
	size_t used = 0;
	tp_step_t step;

	if (c->tls && !c->tls->done && !c->tls_wrapped)
		return;
	step = c->proto->client_read(c, c->in.data, c->in.len, &used);
	consume(c, used);
	if (c->tls_unwrap && !c->closing) {
		/* The protocol's wrapped handshake is over; what follows in
		 * c->in, once decrypted, is more login. */
		if (!tp_conn_tls_finish_unwrap(c))
			return;
		client_step(c, step);
		if (!c->closing && c->in.len && c->state == TP_C_LOGIN)
			process_client_login(c);
		return;
	}
	client_step(c, step);
}

/* ---- server login ---- */

static void server_start_tls(tp_conn_t *s)
{
	const char *name = tp_server_tls_name(s);
	char err[256];
	int rc;

	tp_conn_flush(s);
	s->tls = tp_tls_new(s->pool->server_ctx, true, name);
	if (!s->tls) {
		tp_conn_fail(s, TP_ETLS, "cannot start TLS");
		tp_conn_close(s, tp_conn_reason(s, "failed"));
		return;
	}
	rc = tp_tls_handshake(s->tls, err, sizeof(err));
	if (rc != TP_EAGAIN) {
		tp_conn_fail(s, TP_ETLS, "TLS start failed: %s", err);
		tp_conn_close(s, tp_conn_reason(s, "failed"));
		return;
	}
	tp_conn_flush(s); /* ClientHello */
}

static void server_step(tp_conn_t *s, tp_step_t step)
{
	switch (step) {
	case TP_STEP_MORE:
		tp_conn_flush(s);
		break;
	case TP_STEP_TLS:
		server_start_tls(s);
		break;
	case TP_STEP_DONE:
		tp_conn_flush(s);
		if (s->closing)
			break;
		if (s->syncing) { /* in step with its client: go on */
			s->syncing = false;
			tp_conn_deadline_stop(s);
			if (!s->peer)
				break;
			/* What the client sent meanwhile may have filled its
			 * buffer and stopped reading (nothing else restarts
			 * it): read again; forwarding applies back-pressure. */
			if (!s->peer->close_after_flush)
				tp_conn_start_read(s->peer);
			if (s->peer->in.len)
				tp_conn_process(s->peer);
			break;
		}
		tp_pool_server_ready(s->pool, s);
		break;
	case TP_STEP_REDIRECT:
		tp_pool_redirect(s);
		break;
	case TP_STEP_CLOSE:
		if (s->state == TP_S_CANCEL) {
			close_after_flush(s);
			break;
		}
		if (!s->fail_msg)
			tp_conn_fail(s, TP_ESERVER_LOGIN,
				     "server login failed");
		tp_conn_close(s, tp_conn_reason(s, "failed"));
		break;
	}
}

void tp_server_begin_login(tp_conn_t *s)
{
	server_step(s, s->proto->server_start(s, &s->up->login));
}

void tp_conn_tls_ready(tp_conn_t *c)
{
	if (c->side == TP_SIDE_CLIENT) {
		tp_log(TP_LOG_DEBUG, c, "client TLS %s",
		       tp_tls_version(c->tls));
		return;
	}
	tp_log(TP_LOG_DEBUG, c, "server TLS %s, certificate verified: %s",
	       tp_tls_version(c->tls),
	       c->pool->conf->server.tls.mode <= CONF_TLS_VERIFY_CA ? "yes"
								    : "no");
	if (c->up->probe)
		c->up->probe(c->up->probe_arg, c, TP_PROBE_TLS, 0, NULL);
	if (!c->closing)
		server_step(c, c->proto->server_tls_done(c, &c->up->login));
}

static void process_server_login(tp_conn_t *s)
{
	size_t used = 0;
	tp_step_t step;

	if (s->tls && !s->tls->done && !s->tls_wrapped)
		return;
	step = s->proto->server_read(s, &s->up->login, s->in.data, s->in.len,
				     &used);
	consume(s, used);
	if (s->tls_unwrap && !s->closing) {
		/* Switches to TLS records and calls server_tls_done(). */
		if (!tp_conn_tls_finish_unwrap(s))
			return;
		server_step(s, step);
		if (!s->closing && s->in.len &&
		    (s->state == TP_S_CONNECTING || s->state == TP_S_CANCEL))
			process_server_login(s);
		return;
	}
	server_step(s, step);
}

/* ---- forwarding ---- */

static void forward_failed(tp_conn_t *src, int err)
{
	tp_conn_t *client = src->side == TP_SIDE_CLIENT ? src : src->peer;
	tp_conn_t *server = src->side == TP_SIDE_SERVER ? src : src->peer;

	if (server)
		server->broken = true;
	if (src->side == TP_SIDE_CLIENT) {
		tp_conn_error_close(client, err, "malformed message");
		return;
	}
	tp_conn_close(server, "malformed message from server");
}

/* Applies one classified message. Returns false when forwarding stops
 * (the client left, or the server went back to the pool). */
static bool apply(tp_conn_t *src, tp_conn_t *dst, int action)
{
	if (src->side == TP_SIDE_CLIENT) {
		if (action & TP_MSG_REQUEST) {
			dst->pending++;
			src->pool->st.queries++;
		}
		if (action & TP_MSG_PIN)
			src->pinned = true;
		return true;
	}
	if (action & TP_MSG_BROKEN)
		src->broken = true;
	if (action & TP_MSG_PIN) /* the server says session state was set */
		dst->pinned = true;
	if ((action & TP_MSG_READY) && src->pending > 0)
		src->pending--;
	if ((action & (TP_MSG_READY | TP_MSG_IDLE)) ==
	    (TP_MSG_READY | TP_MSG_IDLE))
		src->pool->st.transactions++;
	if ((action & TP_MSG_IDLE) && src->pending == 0 && src->fwd_left == 0 &&
	    dst->fwd_left == 0 && dst->in.len == 0 &&
	    src->pool->conf->pool.mode == CONF_POOL_TRANSACTION && !dst->pinned)
		return false; /* boundary: caller releases after the flush */
	return true;
}

/* Moves complete (or streamed) messages from src->in to its peer's out. */
static void forward(tp_conn_t *src)
{
	tp_conn_t *dst = src->peer;
	size_t pos = 0, msg_len, have;
	bool go_on = true, boundary = false;
	int rc, action;

	while (go_on && pos < src->in.len) {
		const uint8_t *p = src->in.data + pos;
		size_t avail = src->in.len - pos;

		if (src->fwd_left) {
			have = avail < src->fwd_left ? avail : src->fwd_left;
			tp_conn_out(dst, p, have);
			src->fwd_left -= have;
			pos += have;
			continue;
		}
		rc = src->proto->frame(p, avail, &msg_len);
		if (rc == TP_EAGAIN)
			break;
		if (rc) {
			forward_failed(src, rc);
			return;
		}
		if (msg_len > avail && msg_len <= TP_INLINE_MAX)
			break; /* wait for the whole message */
		have = msg_len < avail ? msg_len : avail;
		action = src->side == TP_SIDE_CLIENT
			     ? src->proto->client_msg(src, p, have, msg_len)
			     : src->proto->server_msg(src, p, have, msg_len);
		if (action & TP_MSG_CLOSE) {
			consume(src, pos);
			tp_conn_flush(dst);
			tp_conn_close(src, "client said goodbye");
			return;
		}
		pos += have;
		if (!(action & TP_MSG_DROP) || have < msg_len) {
			tp_conn_out(dst, p, have);
			src->fwd_left = msg_len - have;
		}
		go_on = apply(src, dst, action);
		boundary = !go_on;
	}
	consume(src, pos);
	tp_conn_flush(dst);
	if (boundary && !src->closing && !dst->closing) {
		tp_pool_release(src->pool, dst);
		return;
	}
	/* Back-pressure: let the slow side catch up before reading more. */
	if (!dst->closing && dst->write_queued > TP_WQ_HIGH)
		tp_conn_stop_read(src);
}

/*
 * A client without a server sent a message. Two need no server: a goodbye
 * (closed here instead of queueing for a server) and a cancel that has
 * nothing to cancel (answered here, as a server would). Returns true when
 * the message was dealt with (or the client closed).
 */
static bool idle_client_message(tp_conn_t *c)
{
	size_t n;
	int flags;

	if (c->proto->frame(c->in.data, c->in.len, &n) != 0 || n > c->in.len)
		return false;
	flags = c->proto->client_msg(c, c->in.data, n, n);
	if (flags & TP_MSG_CLOSE) {
		tp_conn_close(c, "client said goodbye");
		return true;
	}
	if (!(flags & TP_MSG_CANCEL) || !c->proto->client_cancel)
		return false;
	consume(c, n);
	c->proto->client_cancel(c);
	tp_conn_flush(c);
	return true;
}

void tp_conn_process(tp_conn_t *c)
{
	if (c->closing || c->close_after_flush)
		return;
	switch (c->state) {
	case TP_C_LOGIN:
		process_client_login(c);
		break;
	case TP_C_IDLE:
		while (c->in.len && !c->closing && idle_client_message(c))
			;
		if (c->in.len && !c->closing)
			tp_pool_acquire(c->pool, c);
		break;
	case TP_C_WAITING:
		break; /* buffered until a server is linked */
	case TP_C_ACTIVE:
		if (!c->peer->syncing)
			forward(c);
		break;
	case TP_S_ACTIVE:
		if (c->syncing)
			process_server_login(c);
		else
			forward(c);
		break;
	case TP_S_CONNECTING:
	case TP_S_RESET:
		process_server_login(c);
		break;
	case TP_S_IDLE:
		tp_conn_close(c, "unexpected data from an idle server");
		break;
	case TP_S_CANCEL: /* TLS answer, then nothing: the cancel is sent */
		process_server_login(c);
		break;
	case TP_CLOSING:
	case TP_CONN_NSTATES:
		break;
	}
}
