/*
 * reload.c - a new config snapshot swapped in without dropping a client
 * (SIGHUP, POST /v1/reload).
 *
 * Two phases. Prepare does everything that can fail (load and validate,
 * verifiers, TLS contexts, binding new listeners) without touching the
 * running pools; any failure undoes what it made and leaves the running
 * config as it was. Commit cannot fail: pools are matched by name and
 * listen address; unchanged ones take the new limits and credentials and
 * keep their servers; ones whose server settings changed drain their old
 * servers as they come free; new ones start; removed ones take no new
 * clients and are freed once their last client has gone.
 */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#include "proxy/tp.h"

typedef struct {
	const conf_pool_t *pc;
	tp_pool_t *old;	  /* the running pool it replaces, or NULL */
	tp_pool_t *fresh; /* a new pool, or NULL */
	auth_verifier_t *verifiers;
	SSL_CTX *server_ctx;
	bool changed;
} plan_pool_t;

typedef struct {
	tp_listener_t *l; /* a running listener whose TLS setup changed */
	SSL_CTX *ctx;	  /* its new context (NULL: client TLS disabled) */
} plan_ctx_t;

typedef struct {
	conf_t *nc;
	plan_pool_t *pools;
	size_t npools;
	plan_ctx_t *ctxs;
	size_t nctxs;
	tp_listener_t **bound; /* listeners bound by this reload */
	size_t nbound;
} plan_t;

static const conf_pool_t *first_on(const conf_t *conf, const char *listen)
{
	for (size_t i = 0; i < conf->npools; i++)
		if (strcmp(conf->pools[i].listen, listen) == 0)
			return &conf->pools[i];
	return NULL;
}

static tp_listener_t *listener_at(tp_t *tp, const char *listen)
{
	for (size_t i = 0; i < tp->nlisteners; i++)
		if (strcmp(tp->listeners[i]->addr, listen) == 0)
			return tp->listeners[i];
	return NULL;
}

static void plan_undo(tp_t *tp, plan_t *p)
{
	for (size_t i = 0; i < p->npools; i++) {
		plan_pool_t *pp = &p->pools[i];

		if (pp->fresh) {
			tp_pool_destroy(pp->fresh);
			free(pp->fresh);
		}
		if (pp->verifiers) {
			OPENSSL_cleanse(
			    pp->verifiers,
			    sizeof(*pp->verifiers) *
				(pp->pc->nclients ? pp->pc->nclients : 1));
			free(pp->verifiers);
		}
		SSL_CTX_free(pp->server_ctx);
	}
	for (size_t i = 0; i < p->nctxs; i++)
		SSL_CTX_free(p->ctxs[i].ctx);
	for (size_t i = 0; i < p->nbound; i++)
		tp_listener_close(p->bound[i]);
	free(p->pools);
	free(p->ctxs);
	free(p->bound);
	conf_free(p->nc);
}

static int prepare_verifiers(plan_pool_t *pp, char *err, size_t errlen)
{
	const conf_pool_t *pc = pp->pc;

	pp->verifiers =
	    calloc(pc->nclients ? pc->nclients : 1, sizeof(*pp->verifiers));
	if (!pp->verifiers)
		return TP_ENOMEM;
	for (size_t i = 0; i < pc->nclients; i++) {
		if (auth_verifier_build(&pc->clients[i], &pp->verifiers[i])) {
			snprintf(err, errlen,
				 "pools[%s].clients[%zu]: unusable credential",
				 pc->name, i);
			return TP_ECONFIG;
		}
	}
	return 0;
}

static int prepare_pool(tp_t *tp, plan_t *p, const conf_pool_t *pc, char *err,
			size_t errlen)
{
	plan_pool_t *pp = &p->pools[p->npools++];
	const tp_protocol_t *proto = tp_protocol_get(pc->protocol);
	tp_listener_t *l = listener_at(tp, pc->listen);
	tp_pool_t *old = tp_pool_find(tp, pc->name);
	int rc;

	pp->pc = pc;
	if (!proto) {
		snprintf(err, errlen, "pool %s: protocol %s is not supported",
			 pc->name, conf_protocol_name(pc->protocol));
		return TP_ECONFIG;
	}
	if (l && l->proto != proto) {
		snprintf(err, errlen,
			 "pool %s: %s serves %s; changing a listener's "
			 "protocol needs a restart",
			 pc->name, pc->listen, l->proto->name);
		return TP_ECONFIG;
	}
	if (old && strcmp(old->conf->listen, pc->listen) != 0)
		old = NULL; /* moved: the old one drains, a new one starts */
	if (!old) {
		pp->fresh = calloc(1, sizeof(*pp->fresh));
		if (!pp->fresh)
			return TP_ENOMEM;
		rc = tp_pool_init(pp->fresh, tp, p->nc, pc, err, errlen);
		if (rc)
			return rc;
	} else {
		pp->old = old;
		pp->changed =
		    !conf_server_equal(tp->conf, old->conf, p->nc, pc);
		rc = prepare_verifiers(pp, err, errlen);
		if (rc)
			return rc;
		pp->server_ctx =
		    tp_tls_client_ctx(&pc->server.tls, err, errlen);
		if (!pp->server_ctx)
			return TP_ECONFIG;
	}
	if (!l) { /* a new address: bind it now, so a busy port fails here */
		tp_listener_t **grown =
		    realloc(p->bound, (p->nbound + 1) * sizeof(*p->bound));

		if (!grown)
			return TP_ENOMEM;
		p->bound = grown;
		l = tp_listener_for(tp, pc, proto, err, errlen);
		if (!l)
			return TP_EIO;
		p->bound[p->nbound++] = l;
	}
	return 0;
}

/* Running listeners whose client TLS settings changed (or name files,
 * which may have been rotated) get a new context. */
static int prepare_ctxs(tp_t *tp, plan_t *p, char *err, size_t errlen)
{
	p->ctxs = calloc(tp->nlisteners ? tp->nlisteners : 1, sizeof(*p->ctxs));
	if (!p->ctxs)
		return TP_ENOMEM;
	for (size_t i = 0; i < tp->nlisteners; i++) {
		tp_listener_t *l = tp->listeners[i];
		const conf_pool_t *was = first_on(tp->conf, l->addr);
		const conf_pool_t *now = first_on(p->nc, l->addr);
		plan_ctx_t *pc;

		if (!now || !was)
			continue; /* closing, or bound by this reload */
		if (conf_client_tls_equal(&was->client_tls, &now->client_tls) &&
		    !now->client_tls.cert_file)
			continue;
		pc = &p->ctxs[p->nctxs++];
		pc->l = l;
		if (now->client_tls.mode == CONF_CTLS_DISABLE)
			continue;
		pc->ctx = tp_tls_server_ctx(&now->client_tls, err, errlen);
		if (!pc->ctx)
			return TP_ECONFIG;
	}
	return 0;
}

static int prepare(tp_t *tp, plan_t *p, char *err, size_t errlen)
{
	int rc;

	p->pools = calloc(p->nc->npools ? p->nc->npools : 1, sizeof(*p->pools));
	if (!p->pools)
		return TP_ENOMEM;
	for (size_t i = 0; i < p->nc->npools; i++) {
		rc = prepare_pool(tp, p, &p->nc->pools[i], err, errlen);
		if (rc)
			return rc;
	}
	rc = prepare_ctxs(tp, p, err, errlen);
	if (rc)
		return rc;
	/* Room for the new pools, so commit cannot fail. */
	tp_pool_t **grown = realloc(tp->pools, (tp->npools + p->npools + 1) *
						   sizeof(*tp->pools));
	if (!grown)
		return TP_ENOMEM;
	tp->pools = grown;
	return 0;
}

static void commit(tp_t *tp, plan_t *p)
{
	size_t kept = 0, changed = 0, added = 0, removed = 0;
	size_t nold = tp->npools;

	for (size_t i = 0; i < nold; i++) {
		tp_pool_t *pool = tp->pools[i];
		bool matched = false;

		for (size_t j = 0; j < p->npools && !matched; j++)
			matched = p->pools[j].old == pool;
		if (matched || pool->removed)
			continue;
		pool->removed = true;
		removed++;
		tp_log(TP_LOG_INFO, NULL,
		       "pool %s: removed from the config; it takes no new "
		       "clients and closes when its %d clients are gone",
		       pool->conf->name, pool->nclients);
	}
	for (size_t j = 0; j < p->npools; j++) {
		plan_pool_t *pp = &p->pools[j];

		if (pp->fresh) {
			tp->pools[tp->npools++] = pp->fresh;
			pp->fresh = NULL;
			added++;
			continue;
		}
		tp_pool_reconfigure(pp->old, p->nc, pp->pc, pp->verifiers,
				    pp->server_ctx, pp->changed);
		pp->verifiers = NULL;
		pp->server_ctx = NULL;
		if (pp->changed) {
			changed++;
			tp_log(TP_LOG_INFO, NULL,
			       "pool %s: server settings changed; its "
			       "servers are replaced as they come free",
			       pp->pc->name);
		} else {
			kept++;
		}
	}
	for (size_t i = 0; i < p->nctxs; i++) {
		SSL_CTX_free(p->ctxs[i].l->client_ctx); /* sessions hold refs */
		p->ctxs[i].l->client_ctx = p->ctxs[i].ctx;
		p->ctxs[i].ctx = NULL;
	}
	p->nbound = 0; /* they stay */
	if (tp->conf->http_listen && p->nc->http_listen &&
	    strcmp(tp->conf->http_listen, p->nc->http_listen) != 0)
		tp_log(TP_LOG_WARN, NULL,
		       "http.listen changed: it takes effect at the next "
		       "restart");
	tp_retire(tp, tp->conf, 0);
	tp->conf = p->nc;
	p->nc = NULL;
	(void)tp_listeners_rebuild(tp); /* room reserved: cannot fail */
	tp_log_setup(tp->conf->log_level, tp->conf->log_json);
	for (size_t i = 0; i < tp->conf->nwarnings; i++)
		tp_log(TP_LOG_WARN, NULL, "%s", tp->conf->warnings[i]);
	for (size_t i = 0; i < tp->npools; i++) {
		tp_pool_t *pool = tp->pools[i];

		if (pool->removed) {
			if (pool->nclients == 0)
				tp_pool_close_idle(pool,
						   "pool removed (reload)");
			continue;
		}
		if (!pool->reached) {
			tp_pool_prefetch(pool);
			tp_pool_warmup(pool);
		}
	}
	tp_log(TP_LOG_INFO, NULL,
	       "config reloaded: %zu pools unchanged, %zu changed, %zu added, "
	       "%zu removed",
	       kept, changed, added, removed);
}

int tp_reload(tp_t *tp, char *err, size_t errlen)
{
	plan_t p = {0};
	int rc;

	err[0] = 0;
	if (tp->stopping) {
		snprintf(err, errlen, "shutting down");
		return TP_ESHUTDOWN;
	}
	if (!tp->loader) {
		snprintf(err, errlen, "this process cannot reload");
		return TP_ECONFIG;
	}
	rc = tp->loader(tp->loader_arg, &p.nc, err, errlen);
	if (rc == 0)
		rc = prepare(tp, &p, err, errlen);
	if (rc) {
		if (!err[0])
			snprintf(err, errlen, "%s", tp_strerror(rc));
		plan_undo(tp, &p);
		tp->reloads_failed++;
		tp_log(TP_LOG_ERROR, NULL,
		       "reload failed, the running config stays: %s", err);
		return rc;
	}
	commit(tp, &p);
	plan_undo(tp, &p); /* frees what commit did not take */
	tp->reloads_ok++;
	return 0;
}
