/*
 * secrets.c - resolving secrets at load time: environment variables and
 * secret files, plus the file reading the loader itself uses.
 *
 * Everything is read once, while the snapshot is built, so a running proxy
 * never depends on its environment or on files that may have changed;
 * a reload reads them again. Buffers that held a secret are wiped before
 * they are freed. Error messages name the variable or the file, never the
 * value.
 *
 * Not here: password hash formats (auth/ parses them) and certificates
 * (only checked to be readable; the TLS code loads them).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/internal.h"

void conf__free_secret(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

void conf__wipe_json(cJSON *item)
{
	for (; item; item = item->next) {
		if (cJSON_IsString(item) && item->valuestring)
			explicit_bzero(item->valuestring,
				       strlen(item->valuestring));
		conf__wipe_json(item->child);
	}
}

/* Grows *buf to cap bytes without leaving a copy of the old content in
 * freed memory (realloc may move it). */
static int grow(char **buf, size_t len, size_t cap)
{
	char *n = malloc(cap);

	if (!n)
		return ENOMEM;
	if (*buf) {
		memcpy(n, *buf, len);
		explicit_bzero(*buf, len);
		free(*buf);
	}
	*buf = n;
	return 0;
}

static int read_all(int fd, size_t cap, size_t max, char **buf, size_t *len)
{
	int rc = grow(buf, 0, cap);

	while (rc == 0) {
		if (*len + 1 >= cap) {
			if (cap > max) {
				rc = EFBIG;
				break;
			}
			cap = cap * 2 > max + 2 ? max + 2 : cap * 2;
			if ((rc = grow(buf, *len, cap)))
				break;
		}
		ssize_t n = read(fd, *buf + *len, cap - *len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			rc = errno;
		else if (n == 0)
			break;
		else
			*len += (size_t)n;
	}
	if (rc == 0 && *len > max)
		rc = EFBIG;
	return rc;
}

int conf__read_file(const char *path, size_t max, char **buf, size_t *len,
		    unsigned *mode)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	*buf = NULL;
	*len = 0;
	if (fd < 0)
		return errno;
	int e = fstat(fd, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
	if (e) {
		close(fd);
		return e;
	}
	if (mode)
		*mode = (unsigned)st.st_mode;
	size_t cap = 4096;
	if (S_ISREG(st.st_mode) && st.st_size >= 0)
		cap =
		    (size_t)st.st_size < max ? (size_t)st.st_size + 2 : max + 2;
	int rc = read_all(fd, cap, max, buf, len);
	close(fd);
	if (rc) {
		if (*buf)
			explicit_bzero(*buf, *len);
		free(*buf);
		*buf = NULL;
		return rc;
	}
	(*buf)[*len] = '\0';
	return 0;
}

/* Portable names only: it also catches a password pasted where the name of
 * its variable belongs, without echoing it. */
static bool env_name_ok(const char *s)
{
	if (!*s || (*s >= '0' && *s <= '9'))
		return false;
	for (; *s; s++) {
		if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') &&
		    !(*s >= '0' && *s <= '9') && *s != '_')
			return false;
	}
	return true;
}

static int resolve_env(conf__ctx_t *ctx, const char *name, char **value)
{
	if (!env_name_ok(name))
		return conf__fail(ctx, "expected the name of an environment "
				       "variable (letters, digits, _)");
	const char *v = getenv(name);
	if (!v)
		return conf__fail(ctx, "environment variable %s is not set",
				  name);
	if (!*v)
		return conf__fail(ctx, "environment variable %s is empty",
				  name);
	return conf__strdup(ctx, v, value);
}

int conf__env_secret(conf__ctx_t *ctx, const cJSON *obj, const char *key,
		     char **name, char **value)
{
	int rc = conf__string(ctx, obj, key, NULL, CONF__SECRET, name);

	*value = NULL;
	if (rc || !*name)
		return rc;
	size_t mark = conf__push(ctx, key);
	rc = resolve_env(ctx, *name, value);
	conf__pop(ctx, mark);
	return rc;
}

static int read_secret(conf__ctx_t *ctx, const char *file, char **value)
{
	char *buf;
	size_t len;
	int e = conf__read_file(file, CONF__SECRET_FILE_MAX, &buf, &len, NULL);

	if (e == EFBIG)
		return conf__fail(ctx, "%s is larger than %u bytes", file,
				  CONF__SECRET_FILE_MAX);
	if (e == ENOMEM)
		return conf__nomem(ctx);
	if (e)
		return conf__fail(ctx, "cannot read %s: %s", file, strerror(e));
	/* One trailing newline (LF or CRLF) is what editors and
	 * `echo secret > file` add; anything else is part of the secret. */
	if (len && buf[len - 1] == '\n')
		len--;
	if (len && buf[len - 1] == '\r')
		len--;
	e = memchr(buf, '\0', len) ? 1 : len == 0 ? 2 : 0;
	buf[len] = '\0';
	if (e) {
		conf__free_secret(buf);
		return conf__fail(ctx, "%s %s", file,
				  e == 1 ? "contains a NUL byte" : "is empty");
	}
	*value = buf;
	return 0;
}

int conf__file_secret(conf__ctx_t *ctx, const cJSON *obj, const char *key,
		      char **file, char **value)
{
	int rc = conf__string(ctx, obj, key, NULL, 0, file);

	*value = NULL;
	if (rc || !*file)
		return rc;
	size_t mark = conf__push(ctx, key);
	rc = read_secret(ctx, *file, value);
	conf__pop(ctx, mark);
	return rc;
}

int conf__readable_file(conf__ctx_t *ctx, const cJSON *obj, const char *key,
			char **out)
{
	struct stat st;
	int rc = conf__string(ctx, obj, key, NULL, 0, out);

	if (rc || !*out)
		return rc;
	int fd = open(*out, O_RDONLY | O_CLOEXEC);
	int e = fd < 0 ? errno : fstat(fd, &st) ? errno : 0;
	if (e == 0 && S_ISDIR(st.st_mode))
		e = EISDIR;
	if (fd >= 0)
		close(fd);
	if (e)
		return conf__fail_at(ctx, key, "cannot read %s: %s", *out,
				     strerror(e));
	return 0;
}
