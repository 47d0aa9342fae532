/*
 * net.c - the address-shaped values of the config: "host:port" listeners
 * and the http(s) URLs of the identity endpoints.
 *
 * Syntax only: nothing is resolved or bound here (that would block, and
 * the proxy does it on its loop). The one semantic check is the rule that
 * a URL a client secret may travel to is https:// unless it stays on this
 * machine (a loopback host).
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/internal.h"

static bool host_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

/* An IPv6 literal, optionally with a "%zone" suffix. */
static bool ipv6_ok(const char *h, size_t len)
{
	char buf[64];
	struct in6_addr a;

	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, h, len);
	buf[len] = '\0';
	char *zone = strchr(buf, '%');
	if (zone) {
		*zone++ = '\0';
		for (const char *z = zone; *z; z++) {
			if (!host_char_ok(*z))
				return false;
		}
		if (!*zone)
			return false;
	}
	return inet_pton(AF_INET6, buf, &a) == 1;
}

static bool port_ok(const char *s, int *port)
{
	int v = 0;
	size_t n = strlen(s);

	if (n == 0 || n > 5)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v < 1 || v > 65535)
		return false;
	*port = v;
	return true;
}

int conf_split_hostport(const char *s, char **host, int *port)
{
	const char *h, *colon;
	size_t hlen;
	bool ok;

	*host = NULL;
	if (!s)
		return TP_EINVAL;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return TP_EINVAL;
		h = s + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
		ok = ipv6_ok(h, hlen);
	} else {
		/* A bare IPv6 address is ambiguous: it needs brackets. */
		if (!(colon = strchr(s, ':')))
			return TP_EINVAL;
		h = s;
		hlen = (size_t)(colon - s);
		ok = hlen > 0;
		for (size_t i = 0; ok && i < hlen; i++)
			ok = host_char_ok(h[i]);
	}
	if (!ok || !port_ok(colon + 1, port))
		return TP_EINVAL;
	*host = strndup(h, hlen);
	return *host ? 0 : TP_ENOMEM;
}

bool conf__host_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return memcmp(&a6, &in6addr_loopback, sizeof(a6)) == 0;
	return false;
}

/* Copies the host of an http(s) URL (after "://") into buf; "" when the
 * URL has none or carries credentials ("user:pw@host"). */
static void url_host(const char *rest, char *buf, size_t len)
{
	size_t n = strcspn(rest, "/?#");

	buf[0] = '\0';
	if (memchr(rest, '@', n))
		return;
	if (rest[0] == '[') {
		const char *close = memchr(rest, ']', n);
		n = close ? (size_t)(close - rest - 1) : 0;
		rest++;
	} else {
		const char *colon = memchr(rest, ':', n);
		n = colon ? (size_t)(colon - rest) : n;
	}
	if (n < len) {
		memcpy(buf, rest, n);
		buf[n] = '\0';
	}
}

static int check_url(conf__ctx_t *ctx, const char *url, bool https_only)
{
	char host[256];
	bool https = strncasecmp(url, "https://", 8) == 0;
	bool http = strncasecmp(url, "http://", 7) == 0;

	if (https || http)
		url_host(url + (https ? 8 : 7), host, sizeof(host));
	if ((!https && !http) || !host[0])
		return conf__fail(ctx,
				  "expected an http:// or https:// URL with a "
				  "host and no user:password@, got \"%s\"",
				  url);
	if (https_only && !https && !conf__host_is_loopback(host))
		return conf__fail(ctx,
				  "must be https:// unless its host is a "
				  "loopback address (127.0.0.0/8, ::1, "
				  "localhost), got \"%s\"",
				  url);
	return 0;
}

int conf__url(conf__ctx_t *ctx, const cJSON *obj, const char *key,
	      const char *def, bool https_only, char **out)
{
	int rc = conf__string(ctx, obj, key, def, 0, out);

	if (rc || !*out)
		return rc;
	/* Callers append paths ("/<tenant>/oauth2/v2.0/token"). */
	size_t n = strlen(*out);
	while (n > 0 && (*out)[n - 1] == '/')
		(*out)[--n] = '\0';
	size_t mark = conf__push(ctx, key);
	rc = check_url(ctx, *out, https_only);
	conf__pop(ctx, mark);
	return rc;
}

int conf__listen(conf__ctx_t *ctx, const cJSON *obj, const char *key,
		 const char *def, unsigned flags, char **out, char **host,
		 int *port)
{
	int rc = conf__string(ctx, obj, key, def, flags, out);

	*host = NULL;
	*port = 0;
	if (rc || !*out || !**out)
		return rc;
	rc = conf_split_hostport(*out, host, port);
	if (rc == TP_ENOMEM)
		return conf__nomem(ctx);
	if (rc)
		return conf__fail_at(ctx, key,
				     "expected \"host:port\" with a port in "
				     "1..65535, got \"%s\"",
				     *out);
	return 0;
}
