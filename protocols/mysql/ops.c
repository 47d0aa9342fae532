/*
 * ops.c - MySQL / MariaDB protocol operations for the engine: forwarding,
 * pooling and the ops table (logins are in client.c and server.c).
 *
 * Forwarding: every command a client sends is queued in its server's
 * response tracker, which says when the answer is complete (READY) and
 * whether the server is then outside a transaction (IDLE: no IN_TRANS,
 * autocommit on, no more results). A client pins its server when it
 * leaves session state behind: from the SQL text (SET, user variables,
 * temporary tables, LOCK TABLES, GET_LOCK, PREPARE, USE, ...), from
 * COM_STMT_PREPARE and COM_INIT_DB, and - preferred, since it sees what
 * text cannot (a procedure that sets a variable) - from the server's own
 * session-state tracking in OK packets. A server so marked is never
 * released mid-session and gets COM_RESET_CONNECTION when its client
 * leaves.
 *
 * Intercepted: COM_QUIT (closes the client only), KILL [QUERY] <id> and
 * COM_PROCESS_KILL (ids are the synthetic ones of our greetings, turned
 * into a cancel of whatever that client's server runs), COM_CHANGE_USER
 * (checked here, then COM_RESET_CONNECTION upstream), and the client's
 * own COM_RESET_CONNECTION (session tracking and character set put back
 * after it). What we send in a client's place is queued with a tag, and
 * its answer is dropped or replaced (see MY_TAG_*).
 *
 * Differences between a client's capabilities and its server's are
 * smoothed over: OK packets are rewritten for clients that did not ask
 * for SESSION_TRACK; MULTI_STATEMENTS and the character set follow the
 * client through COM_SET_OPTION and SET before its first command.
 *
 * Not here: sockets, TLS, pools (the engine's), byte layouts (codec*.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/mysql/internal.h"

static void *my_conn_new(bool client_side)
{
	my_common_t *h;

	if (client_side) {
		my_client_t *c = calloc(1, sizeof(*c));

		h = c ? &c->h : NULL;
		if (h)
			h->phase = MYC_GREETED;
	} else {
		my_server_t *s = calloc(1, sizeof(*s));

		h = s ? &s->h : NULL;
		if (h)
			h->phase = MYS_GREETING;
	}
	if (h)
		h->client = client_side;
	return h;
}

static void my_conn_free(void *p)
{
	my_common_t *h = p;

	if (!h)
		return;
	if (h->client)
		free(((my_client_t *)p)->user);
	else
		free(((my_server_t *)p)->database);
	free(p);
}

/* ---- commands tokenpool answers or rewrites ---- */

/* The client's command is dropped; a COM_PING takes its place upstream
 * (so the link keeps its request/answer rhythm) and the ping's answer is
 * replaced by this error. */
static int refuse(tp_conn_t *s, uint16_t code, const char *state,
		  const char *msg)
{
	my_server_t *ss = my_server(s);

	ss->sub_code = code;
	snprintf(ss->sub_state, sizeof(ss->sub_state), "%s", state);
	snprintf(ss->sub_msg, sizeof(ss->sub_msg), "%s", msg);
	my_server_command(s, MY_COM_PING, NULL, 0, MY_TAG_SUBST);
	return TP_MSG_DROP | TP_MSG_REQUEST;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

/* KILL [QUERY] <id>: the id is one of our synthetic thread ids. */
static int on_kill(tp_conn_t *c, tp_conn_t *s, uint64_t id, bool query_only)
{
	uint8_t key[4];
	char msg[64];
	bool found = false;

	for (int i = 0; i < 4; i++)
		key[i] = (uint8_t)(id >> (8 * i));
	if (!query_only && id == get32(tp_conn_client_key(c)))
		return TP_MSG_CLOSE; /* the client kills itself */
	if (id <= UINT32_MAX)
		found = query_only ? tp_conn_cancel(c, key, sizeof(key))
				   : tp_conn_kill(c, key, sizeof(key));
	if (!found) {
		snprintf(msg, sizeof(msg), "Unknown thread id: %llu",
			 (unsigned long long)id);
		return refuse(s, 1094, "HY000", msg);
	}
	/* The ping's OK is the KILL's answer. */
	my_server_command(s, MY_COM_PING, NULL, 0, MY_TAG_PASS);
	return TP_MSG_DROP | TP_MSG_REQUEST;
}

/* Whether this client's SQL text must be read for session state: only in
 * transaction mode (a session-mode client keeps its server anyway) and
 * only until it is pinned (the engine keeps a pin until the client
 * leaves), so most queries are never scanned. */
static bool scan_sql(tp_conn_t *c)
{
	const tp_route_t *r = tp_conn_get_route(c);

	return !my_client(c)->pinned && r &&
	       r->pool->pool.mode == CONF_POOL_TRANSACTION;
}

static int on_query(tp_conn_t *c, tp_conn_t *s, const uint8_t *msg, size_t have,
		    size_t msg_len)
{
	const char *sql = (const char *)msg + MY_HDR + 1;
	size_t n = have - MY_HDR - 1;
	uint64_t id;
	bool q;
	int rc = my_parse_kill(sql, n, &q, &id);

	if (rc != TP_EINVAL) {
		/* Never pass a KILL on: real thread ids belong to other
		 * clients' (or nobody's) pooled connections. */
		if (have < msg_len)
			return TP_MSG_CLOSE;
		if (rc == 0)
			return on_kill(c, s, id, q);
		return refuse(s, 1235, "42000",
			      "only KILL [QUERY] <thread id> is supported "
			      "through tokenpool");
	}
	if (my_track_push(&my_server(s)->trk, MY_REPLY_RESULT, MY_TAG_PASS))
		return TP_MSG_REQUEST | TP_MSG_PIN;
	return TP_MSG_REQUEST |
	       (scan_sql(c) && my_sql_pins(sql, n) ? TP_MSG_PIN : 0);
}

/* The session as the client expects it right after a reset: tracking
 * on, its character set. Queued after a COM_RESET_CONNECTION. */
static void after_reset(tp_conn_t *c, tp_conn_t *s)
{
	my_server_t *ss = my_server(s);

	my_server_track_on(s, MY_TAG_SWALLOW);
	my_server_set_charset(s, my_client(c)->charset, MY_TAG_SWALLOW);
	ss->charset = my_client(c)->charset;
}

static int on_reset_connection(tp_conn_t *c, tp_conn_t *s)
{
	my_server_command(s, MY_COM_RESET_CONNECTION, NULL, 0, MY_TAG_RESET);
	after_reset(c, s);
	return TP_MSG_DROP | TP_MSG_REQUEST;
}

static bool db_matches(my_str_t db, const char *name)
{
	return name && my_str_eq(db, name);
}

static int on_change_user(tp_conn_t *c, tp_conn_t *s, const uint8_t *msg,
			  size_t have, size_t msg_len)
{
	my_client_t *cs = my_client(c);
	my_server_t *ss = my_server(s);
	const tp_route_t *r = tp_conn_get_route(c);
	my_change_user_t cu;
	char text[200];
	int rc;

	if (have < msg_len ||
	    my_parse_change_user(msg + MY_HDR, have - MY_HDR, cs->caps, &cu))
		return refuse(s, 1043, "08S01", "Bad COM_CHANGE_USER packet");
	rc = my_client_check_change_user(c, &cu);
	if (rc == TP_ENOMEM)
		return refuse(s, 1041, "HY000", "Out of memory");
	if (rc) {
		snprintf(text, sizeof(text),
			 "Access denied for user '%.*s' (using password: %s)",
			 (int)(cu.user.len > 64 ? 64 : cu.user.len),
			 cu.user.p ? (const char *)cu.user.p : "",
			 cu.auth.len ? "YES" : "NO");
		return refuse(s, 1045, "28000", text);
	}
	if (cu.database.len && !db_matches(cu.database, r->pool->name) &&
	    !db_matches(cu.database, ss->database))
		return refuse(s, 1049, "42000",
			      "Unknown database: a connection through "
			      "tokenpool keeps the database it logged in to");
	if (cu.charset && cu.charset < 256)
		cs->charset = (uint8_t)cu.charset;
	return on_reset_connection(c, s);
}

static int on_set_option(tp_conn_t *c, tp_conn_t *s, const uint8_t *msg,
			 size_t have)
{
	if (have >= MY_HDR + 3) {
		bool on = (msg[5] | (msg[6] << 8)) == MY_OPTION_MULTI_STMTS_ON;

		my_client(c)->multi = on;
		my_server(s)->multi = on;
	}
	if (my_track_push(&my_server(s)->trk, MY_REPLY_OK, MY_TAG_PASS))
		return TP_MSG_REQUEST | TP_MSG_PIN;
	return TP_MSG_REQUEST;
}

/* ---- forwarding ---- */

static int push(tp_conn_t *s, uint8_t cmd, int flags)
{
	/* A full queue breaks the tracker: it will never say idle, so the
	 * server stays with this client and is closed after it. */
	if (my_track_push(&my_server(s)->trk, my_command_reply(cmd),
			  MY_TAG_PASS) != 0)
		flags |= TP_MSG_PIN;
	return flags;
}

/* One packet of client c, which holds server s. */
static int classify(tp_conn_t *c, tp_conn_t *s, const uint8_t *msg, size_t have,
		    size_t msg_len)
{
	my_server_t *ss;
	uint8_t cmd;

	ss = my_server(s);
	if (my_track_client(&ss->trk, msg, have, msg_len))
		return TP_MSG_FORWARD; /* continuation, LOCAL INFILE data */
	my_client(c)->h.seq = msg[3];
	if (msg_len == MY_HDR) /* an empty command: the server refuses */
		return push(s, MY_COM_SLEEP, TP_MSG_REQUEST);
	cmd = msg[MY_HDR];
	switch (cmd) {
	case MY_COM_QUIT:
		return TP_MSG_CLOSE;
	case MY_COM_QUERY:
		return on_query(c, s, msg, have, msg_len);
	case MY_COM_STMT_PREPARE: /* statements live on this server */
		return push(s, cmd, TP_MSG_REQUEST | TP_MSG_PIN);
	case MY_COM_INIT_DB:
		ss->schema_dirty = true;
		return push(s, cmd, TP_MSG_REQUEST | TP_MSG_PIN);
	case MY_COM_CHANGE_USER:
		return on_change_user(c, s, msg, have, msg_len);
	case MY_COM_PROCESS_KILL:
		if (have < MY_HDR + 5)
			return refuse(s, 1043, "08S01", "Bad COM_PROCESS_KILL");
		return on_kill(c, s, get32(msg + MY_HDR + 1), false);
	case MY_COM_SET_OPTION:
		return on_set_option(c, s, msg, have);
	case MY_COM_RESET_CONNECTION:
		return on_reset_connection(c, s);
	case MY_COM_STMT_CLOSE:
	case MY_COM_STMT_SEND_LONG_DATA:
		return TP_MSG_FORWARD; /* no answer */
	case MY_COM_BINLOG_DUMP:
	case MY_COM_BINLOG_DUMP_GTID:
	case MY_COM_REGISTER_SLAVE:
	case MY_COM_TABLE_DUMP:
	case MY_COM_CLONE:
		return push(s, cmd, TP_MSG_REQUEST | TP_MSG_PIN);
	default:
		return push(s, cmd, TP_MSG_REQUEST);
	}
}

static int my_client_msg(tp_conn_t *c, const uint8_t *msg, size_t have,
			 size_t msg_len)
{
	tp_conn_t *s = tp_conn_peer(c);
	int act;

	if (!s) /* no server yet: only goodbyes matter */
		return have > MY_HDR && msg[MY_HDR] == MY_COM_QUIT
			   ? TP_MSG_CLOSE
			   : TP_MSG_REQUEST;
	act = classify(c, s, msg, have, msg_len);
	if (act & TP_MSG_PIN)
		my_client(c)->pinned = true;
	return act;
}

/* An OK for a client whose SESSION_TRACK setting differs from its
 * server's: the same OK in the layout the client parses. */
static bool rewrite_ok(tp_conn_t *c, tp_conn_t *s, const uint8_t *msg,
		       size_t len)
{
	my_server_t *ss = my_server(s);
	uint64_t ccaps = my_client(c)->caps;
	uint8_t buf[1024];
	my_ok_t ok;
	size_t n;

	if (!((ss->trk.caps ^ ccaps) & MY_CAP_SESSION_TRACK) || msg[4] != 0 ||
	    my_parse_ok(msg + MY_HDR, len - MY_HDR, ss->trk.caps, &ok) != 0)
		return false;
	if (!(ccaps & MY_CAP_SESSION_TRACK)) {
		ok.status &= (uint16_t)~MY_ST_STATE_CHANGED;
		ok.session.p = NULL;
		ok.session.len = 0;
	}
	n = my_write_ok(buf, sizeof(buf), msg[3], ccaps, &ok);
	if (!n)
		return false;
	tp_conn_out(c, buf, n);
	return true;
}

static int my_server_msg(tp_conn_t *s, const uint8_t *msg, size_t have,
			 size_t msg_len)
{
	my_server_t *ss = my_server(s);
	tp_conn_t *c;
	uint8_t tag;
	unsigned ev = my_track_server(&ss->trk, msg, have, msg_len, &tag);
	int act = 0;

	/* Most packets (rows, definitions) are the middle of a client's
	 * answer: nothing to decide. */
	if (!ev && tag != MY_TAG_SWALLOW && tag != MY_TAG_SUBST)
		return TP_MSG_FORWARD;
	c = tp_conn_peer(s);
	if (ev & MY_EV_BROKEN)
		act |= TP_MSG_BROKEN;
	if (tag != MY_TAG_SWALLOW && (ev & MY_EV_PIN))
		ss->dirty = true;
	if (tag != MY_TAG_SWALLOW && (ev & MY_EV_SCHEMA))
		ss->schema_dirty = true;
	switch (tag) {
	case MY_TAG_SWALLOW:
		act |= TP_MSG_DROP;
		break;
	case MY_TAG_SUBST:
		act |= TP_MSG_DROP;
		if ((ev & MY_EV_DONE) && c) {
			my_send_err(c, msg[3], ss->sub_code, ss->sub_state,
				    ss->sub_msg);
			act |= TP_MSG_READY;
		}
		break;
	case MY_TAG_RESET:
		if ((ev & MY_EV_DONE) && !(ev & MY_EV_ERR))
			ss->dirty = false; /* the client cleaned up itself */
					   /* fall through */
	default:
		if (ev & MY_EV_DONE)
			act |= TP_MSG_READY;
		if ((ev & MY_EV_OK) && c && have == msg_len &&
		    rewrite_ok(c, s, msg, have))
			act |= TP_MSG_DROP;
		break;
	}
	/* Session state the server reported keeps the server with this
	 * client: never idle again until a reset. */
	if ((ev & MY_EV_IDLE) && !ss->dirty)
		act |= TP_MSG_IDLE;
	return act;
}

/* ---- pooling ---- */

static tp_step_t my_server_reset(tp_conn_t *s, bool full)
{
	my_server_t *ss = my_server(s);

	ss->fail_done = false;
	/* Autocommit switched off is session state too. */
	full = full || ss->dirty || !(ss->trk.status & MY_ST_AUTOCOMMIT);
	if (full) {
		my_server_command(s, MY_COM_RESET_CONNECTION, NULL, 0,
				  MY_TAG_MUST);
		my_server_track_on(s, MY_TAG_TRACKING);
		/* The reset keeps the current schema. */
		if (ss->schema_dirty && ss->database[0])
			my_server_command(s, MY_COM_INIT_DB, ss->database,
					  strlen(ss->database), MY_TAG_MUST);
		else if (ss->schema_dirty)
			ss->fail_done = true; /* no way back to "none" */
		ss->dirty = ss->schema_dirty = false;
		ss->charset = 0; /* the global default now: unknown */
	} else if (ss->trk.status & MY_ST_IN_TRANS) {
		/* A client that left inside a transaction. */
		my_server_command(s, MY_COM_QUERY, "ROLLBACK", 8, MY_TAG_MUST);
	} else {
		return TP_STEP_DONE;
	}
	ss->h.phase = MYS_BATCH;
	return TP_STEP_MORE;
}

static tp_step_t my_server_sync(tp_conn_t *s, tp_conn_t *c)
{
	my_server_t *ss = my_server(s);
	my_client_t *cs = my_client(c);
	bool sent = false;

	if (ss->charset != cs->charset) {
		/* An id the server does not know fails: that is what a
		 * direct login would have got too (the default). */
		my_server_set_charset(s, cs->charset, MY_TAG_MAY);
		ss->charset = cs->charset;
		sent = true;
	}
	if (ss->multi != cs->multi) {
		uint8_t opt[2] = {cs->multi ? MY_OPTION_MULTI_STMTS_ON
					    : MY_OPTION_MULTI_STMTS_OFF,
				  0};

		my_server_command(s, MY_COM_SET_OPTION, opt, 2, MY_TAG_MAY);
		ss->multi = cs->multi;
		sent = true;
	}
	if (!sent)
		return TP_STEP_DONE;
	ss->h.phase = MYS_BATCH;
	return TP_STEP_MORE;
}

static tp_step_t my_server_probe(tp_conn_t *s)
{
	my_server_command(s, MY_COM_QUERY, "SELECT 1", 8, MY_TAG_MUST);
	my_server(s)->h.phase = MYS_BATCH;
	return TP_STEP_MORE;
}

static void my_server_params(tp_conn_t *s, const uint8_t **params, size_t *len)
{
	*params = my_server(s)->params;
	*len = sizeof(my_server(s)->params);
}

static size_t my_cancel_key(tp_conn_t *s, uint8_t *out, size_t cap)
{
	uint32_t id = my_server(s)->thread_id;

	if (cap < 4)
		return 0;
	for (int i = 0; i < 4; i++)
		out[i] = (uint8_t)(id >> (8 * i));
	return 4;
}

const tp_protocol_t tp_protocol_mysql = {
    .name = "mysql",
    .id = CONF_PROTO_MYSQL,
    .conn_new = my_conn_new,
    .conn_free = my_conn_free,
    .client_start = my_client_start,
    .client_read = my_client_read,
    .client_welcome = my_client_welcome,
    .server_start = my_server_start,
    .server_tls_done = my_server_tls_done,
    .server_read = my_server_read,
    .server_params = my_server_params,
    .cancel_key = my_cancel_key,
    .cancel_needs_login = true,
    .frame = my_frame,
    .client_msg = my_client_msg,
    .server_msg = my_server_msg,
    .server_reset = my_server_reset,
    .server_sync = my_server_sync,
    .server_probe = my_server_probe,
    .client_error = my_client_error,
};
