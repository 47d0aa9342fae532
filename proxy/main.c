/*
 * main.c - the verbs: run, check, hash, --version, --help.
 *
 * Exit codes (CONTRACT.md): 0 clean, 1 runtime failure, 2 bad config.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/crypto.h>

#include "proxy/tp.h"

static const char usage[] =
    "usage: tokenpool [run|check|doctor|hash] [-c FILE]\n"
    "       tokenpool --version | --help\n"
    "\n"
    "  run     run the proxy in the foreground (the default)\n"
    "  check   validate the config and print it as JSON, secrets masked\n"
    "  doctor  per pool: get a token, connect with TLS, log in, query;\n"
    "          one PASS/FAIL line per step with a hint\n"
    "  hash    read a password on stdin, print password_hash values\n"
    "\n"
    "Config: -c FILE, else $TOKENPOOL_CONFIG, else ./tokenpool.json, else\n"
    "the environment alone (Service Connector's AZURE_POSTGRESQL_*,\n"
    "AZURE_MYSQL_*, AZURE_SQL_* with TOKENPOOL_CLIENT_USER/_PASSWORD).\n";

/* -c, then $TOKENPOOL_CONFIG, then ./tokenpool.json; NULL when there is no
 * file (the environment alone may still describe the pools). */
static const char *config_path(const char *given)
{
	const char *env = getenv("TOKENPOOL_CONFIG");

	if (given)
		return given;
	if (env && env[0])
		return env;
	if (access("tokenpool.json", F_OK) == 0)
		return "tokenpool.json";
	return NULL;
}

/* Zero config: pools from the variables Service Connector sets. */
static conf_t *load_env(void)
{
	char err[512];
	conf_t *conf = NULL;

	if (conf_load_env(&conf, err, sizeof(err)) != 0) {
		fprintf(stderr, "tokenpool: %s\n", err);
		return NULL;
	}
	return conf;
}

static conf_t *load(const char *given)
{
	const char *path = config_path(given);
	char err[512];
	conf_t *conf = NULL;

	if (!path && conf_env_present())
		return load_env();
	if (!path) {
		fprintf(
		    stderr,
		    "tokenpool: no config: pass -c FILE, set "
		    "TOKENPOOL_CONFIG, create ./tokenpool.json, or set "
		    "Service Connector's variables "
		    "(AZURE_POSTGRESQL_CONNECTIONSTRING, ...) with "
		    "TOKENPOOL_CLIENT_USER and TOKENPOOL_CLIENT_PASSWORD\n");
		return NULL;
	}
	if (conf_load_file(path, &conf, err, sizeof(err)) != 0) {
		fprintf(stderr, "tokenpool: %s: %s\n", path, err);
		return NULL;
	}
	return conf;
}

/* conf/ has no logger: it hands its load-time warnings over. */
static void log_warnings(const conf_t *conf)
{
	for (size_t i = 0; i < conf->nwarnings; i++)
		tp_log(TP_LOG_WARN, NULL, "%s", conf->warnings[i]);
}

/* Reload reads from where the running config came from: the same file,
 * or the environment. */
static int reload_loader(void *arg, conf_t **out, char *err, size_t errlen)
{
	const char *path = arg;

	return path ? conf_load_file(path, out, err, errlen)
		    : conf_load_env(out, err, errlen);
}

static int cmd_run(const char *path)
{
	conf_t *conf = load(path);
	tp_t *tp;
	char err[512] = "";
	int rc;

	if (!conf)
		return 2;
	tp_log_setup(conf->log_level, conf->log_json);
	log_warnings(conf);
	tp = calloc(1, sizeof(*tp));
	if (!tp)
		return 1;
	rc = tp_init(tp, uv_default_loop(), conf, true, err, sizeof(err));
	if (rc) {
		tp_log(TP_LOG_ERROR, NULL, "cannot start: %s",
		       err[0] ? err : tp_strerror(rc));
		uv_loop_close(uv_default_loop());
		free(tp);
		conf_free(conf);
		return rc == TP_ECONFIG ? 2 : 1;
	}
	tp->loader = reload_loader;
	tp->loader_arg = conf->path;
	tp_log(TP_LOG_INFO, NULL, "tokenpool %s started", TP_VERSION);
	rc = tp_run(tp);
	uv_loop_close(uv_default_loop());
	free(tp);
	conf_free(conf);
	tp_log(TP_LOG_INFO, NULL, "stopped");
	return rc;
}

static int cmd_doctor(const char *path)
{
	conf_t *conf = load(path);
	int rc;

	if (!conf)
		return 2;
	/* The report is on stdout; the log only says what the report
	 * cannot (debug when asked for). */
	tp_log_setup(conf->log_level == CONF_LOG_DEBUG ? CONF_LOG_DEBUG
						       : CONF_LOG_ERROR,
		     conf->log_json);
	rc = tp_doctor(conf);
	conf_free(conf);
	return rc;
}

static int cmd_check(const char *path)
{
	conf_t *conf = load(path);
	char *json;

	if (!conf)
		return 2;
	/* The warnings `run` would log, on stderr so stdout stays JSON. */
	for (size_t i = 0; i < conf->nwarnings; i++)
		fprintf(stderr, "tokenpool: warning: %s\n", conf->warnings[i]);
	json = conf_to_json(conf);
	if (!json) {
		conf_free(conf);
		return 1;
	}
	printf("%s\n", json);
	free(json);
	conf_free(conf);
	return 0;
}

static int cmd_hash(void)
{
	char line[4096];
	char *out;
	size_t n;

	if (isatty(STDIN_FILENO))
		fprintf(stderr, "password: ");
	if (!fgets(line, sizeof(line), stdin)) {
		fprintf(stderr, "tokenpool: no password on stdin\n");
		return 2;
	}
	n = strcspn(line, "\r\n");
	line[n] = 0;
	out = auth_hash_print(line);
	OPENSSL_cleanse(line, sizeof(line));
	if (!out)
		return 1;
	printf("%s", out);
	free(out);
	return 0;
}

int main(int argc, char **argv)
{
	const char *verb = "run", *path = NULL;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--version")) {
			printf("tokenpool %s\n", TP_VERSION);
			return 0;
		} else if (!strcmp(argv[i], "--help") ||
			   !strcmp(argv[i], "-h")) {
			fputs(usage, stdout);
			return 0;
		} else if (!strcmp(argv[i], "-c") && i + 1 < argc) {
			path = argv[++i];
		} else if (i == 1 && argv[i][0] != '-') {
			verb = argv[i];
		} else {
			fprintf(stderr, "tokenpool: unexpected argument %s\n%s",
				argv[i], usage);
			return 2;
		}
	}
	if (!strcmp(verb, "run"))
		return cmd_run(path);
	if (!strcmp(verb, "check"))
		return cmd_check(path);
	if (!strcmp(verb, "doctor"))
		return cmd_doctor(path);
	if (!strcmp(verb, "hash"))
		return cmd_hash();
	fprintf(stderr, "tokenpool: unknown verb %s\n%s", verb, usage);
	return 2;
}
