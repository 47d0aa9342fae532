/*
 * log.c - one line per event on stderr, text or JSON.
 *
 * Lines carry a timestamp, level and, for connection events, the
 * connection id, side and peer. The level and format are set once at
 * start (the only process-wide settings; they are not per-connection
 * state). Secrets never reach here: callers log identities by client id
 * and tokens by expiry.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <sys/time.h>

#include "proxy/tp.h"

static struct {
	tp_log_level_t level;
	bool json;
} log_cfg = {TP_LOG_INFO, false};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void tp_log_setup(conf_log_level_t level, bool json)
{
	log_cfg.level = (tp_log_level_t)level;
	log_cfg.json = json;
}

bool tp_log_enabled(tp_log_level_t level)
{
	return level >= log_cfg.level;
}

static void timestamp(char *out, size_t cap)
{
	struct timeval tv;
	struct tm tm;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);

	snprintf(out + n, cap - n, ".%03dZ", (int)(tv.tv_usec / 1000) % 1000);
}

/* JSON string escaping for the message field. */
static void json_escape(const char *in, char *out, size_t cap)
{
	size_t o = 0;

	for (; *in && o + 7 < cap; in++) {
		unsigned char ch = (unsigned char)*in;

		if (ch == '"' || ch == '\\') {
			out[o++] = '\\';
			out[o++] = (char)ch;
		} else if (ch < 0x20) {
			o += (size_t)snprintf(out + o, cap - o, "\\u%04x", ch);
		} else {
			out[o++] = (char)ch;
		}
	}
	out[o] = 0;
}

/* "10.0.0.5:41234" for clients, the server's host:port for servers;
 * formatted here so connections need not carry the text. */
static void peer_name(tp_conn_t *c, char *out, size_t cap)
{
	char ip[INET6_ADDRSTRLEN];

	out[0] = 0;
	if (c->side == TP_SIDE_SERVER && c->pool) {
		snprintf(out, cap, "%s:%d", c->pool->conf->server.host,
			 c->pool->conf->server.port);
	} else if (c->peer_family &&
		   inet_ntop(c->peer_family, c->peer_ip, ip, sizeof(ip))) {
		snprintf(out, cap,
			 c->peer_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip,
			 c->peer_port);
	}
}

void tp_logv(tp_log_level_t level, tp_conn_t *conn, const char *fmt, va_list ap)
{
	char ts[40], msg[1024], prefix[256] = "";

	if (!tp_log_enabled(level))
		return;
	timestamp(ts, sizeof(ts));
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (conn) {
		char peer[INET6_ADDRSTRLEN + 80];

		peer_name(conn, peer, sizeof(peer));
		snprintf(prefix, sizeof(prefix), "%c-%llu %s%s%s",
			 conn->side == TP_SIDE_CLIENT ? 'C' : 'S',
			 (unsigned long long)conn->id,
			 conn->pool ? conn->pool->conf->name : "-",
			 peer[0] ? " " : "", peer);
	}
	if (log_cfg.json) {
		char emsg[2048], epre[256];

		json_escape(msg, emsg, sizeof(emsg));
		json_escape(prefix, epre, sizeof(epre));
		fprintf(stderr,
			"{\"ts\":\"%s\",\"level\":\"%s\",\"conn\":\"%s\","
			"\"msg\":\"%s\"}\n",
			ts, level_names[level], epre, emsg);
	} else {
		fprintf(stderr, "%s %-5s %s%s%s\n", ts, level_names[level],
			prefix, prefix[0] ? ": " : "", msg);
	}
}

void tp_log(tp_log_level_t level, tp_conn_t *conn, const char *fmt, ...)
{
	va_list ap;

	if (!tp_log_enabled(level))
		return;
	va_start(ap, fmt);
	tp_logv(level, conn, fmt, ap);
	va_end(ap);
}
