/*
 * admin: requests from credfsctl. Everything here runs on the control
 * thread or the SIGHUP thread, never on a FUSE worker, so it may block
 * and may ask the kernel to drop cached names.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "audit.h"
#include "config.h"
#include "discovery.h"
#include "cred.h"
#include "credstore.h"
#include "log.h"
#include "render.h"
#include "tree.h"
#include "util.h"

#define MAX_WORDS 5

/* The table's credential tenant/provider, or NULL. */
static struct cred *find_cred(struct cred_table *t, const char *tenant,
			      const char *provider)
{
	const struct cred_conf *cc =
		config_find_cred(cred_table_config(t), tenant, provider);

	return cc ? cred_of(t, cc) : NULL;
}

/* "acme/google: valid, expires in 3599 s" and the like. */
static int state_line(struct cred *c, struct buf *out)
{
	int64_t now = time_real_ms();
	struct cred_view v;
	int r;

	cred_view(c, now, &v);
	r = buf_printf(out, "%s/%s: %s", cred_conf(c)->tenant,
		       cred_conf(c)->provider->name, cred_state_name(v.state));
	if (r == 0 && v.has_token)
		r = buf_printf(out, ", expires in %lld s",
			       (long long)((v.expires_ms - now) / 1000));
	if (r == 0 && v.last_error[0] &&
	    (!v.has_token || v.consecutive_failures))
		r = buf_printf(out, ", last error: %s", v.last_error);
	if (r == 0 && v.persist_error[0])
		r = buf_printf(out, ", store: %s", v.persist_error);
	if (r == 0)
		r = buf_printf(out, "\n");
	cred_view_clear(&v);
	return r;
}

/* A reload's outcome, for the metrics and the audit log. */
static void reload_outcome(struct admin *a, const char *refused)
{
	struct audit_rec rec = {
		.event = "config_reload",
		.outcome = refused ? "refused" : "ok",
		.detail = refused,
	};

	if (refused)
		atomic_fetch_add(&a->t->reload_failures, 1);
	atomic_store(&a->t->reload_refused, refused != NULL);
	atomic_fetch_add(&a->t->version, 1); /* the metrics file changed */
	audit_log(a->audit, &rec);
}

/* The configuration file again: applied when valid and applicable in
 * place (tree_apply(): tenants, providers and credentials may come and
 * go). Readers of the old one may still hold it: it is retired
 * (cred_table_retire()), freed once they are gone. Called with a->lock
 * held: the one writer of the table's cfg, which it reads as its own. */
static void reload_config(struct admin *a, struct buf *reply)
{
	struct config *cfg = NULL, *old = (struct config *)a->t->cfg;
	char err[1024], why[256];
	struct tree_change ch;
	int64_t deadline = 0;
	size_t i;
	int r;

	/* Discovery as at a start, from the process's cache: its documents
	 * past their age are fetched again first (those the running config
	 * names; one that cannot be stays in force), and only an issuer or
	 * MCP server new to this process is asked while the config loads,
	 * each request bounded by its provider's timeout_s. One that cannot
	 * be discovered refuses the reload, naming it. */
	discovery_refresh(old);
	if (config_load(a->config_path, &cfg, err, sizeof(err)) < 0 ||
	    config_set_read_path(cfg, a->cache_kernel, err, sizeof(err)) < 0) {
		log_error("reload: %s; the running configuration stays in "
			  "force",
			  err);
		if (reply)
			buf_printf(reply, "configuration not applied: %s\n",
				   err);
		reload_outcome(a, err);
		config_free(cfg);
		return;
	}
	if (!config_can_apply(old, cfg, why, sizeof(why))) {
		log_error("reload: %s: restart credfs to apply %s; the running "
			  "configuration stays in force",
			  why, a->config_path);
		if (reply)
			buf_printf(reply,
				   "configuration not applied: %s (restart "
				   "to apply)\n",
				   why);
		snprintf(err, sizeof(err), "%s (restart to apply)", why);
		reload_outcome(a, err);
		config_free(cfg);
		return;
	}
	cred_table_enter(a->t); /* what it calls reads the configuration */
	r = tree_apply(a->t, cfg, &ch);
	cred_table_exit(a->t);
	if (r < 0) {
		reload_outcome(a, "out of memory");
		config_free(cfg);
		return;
	}
	if (old != a->original) /* the caller frees that one */
		cred_table_retire(a->t, old);
	if (!a->debug)
		log_set_level((enum log_level)cfg->log_level);
	log_info("reload: %s applied: %zu credentials added, %zu removed; "
		 "%zu tenants added, %zu removed",
		 a->config_path, ch.n_added, ch.n_removed, ch.tenants_added,
		 ch.tenants_removed);
	reload_outcome(a, NULL);
	/* Like a start: ready once the added ones had their first answer
	 * (bounded by their open_wait_s and the provider's timeout). */
	cred_table_enter(a->t);
	for (i = 0; i < ch.n_added; i++) {
		const struct cred_conf *cc = cred_conf(ch.added[i]);
		int64_t wait = cc->timing.open_wait_ms + cc->provider->timeout_ms;

		if (deadline < time_mono_ms() + wait)
			deadline = time_mono_ms() + wait;
	}
	cred_table_exit(a->t);
	for (i = 0; i < ch.n_added; i++)
		cred_wait_answered(a->t, ch.added[i], deadline);
	tree_change_clear(&ch);
	if (reply)
		buf_printf(reply, "configuration applied\n");
}

void admin_free(struct admin *a)
{
	if (a->t && a->t->cfg != a->original)
		config_free((struct config *)a->t->cfg);
}

int admin_reload(struct admin *a, struct buf *reply)
{
	struct cred_table *t = a->t;
	int r;

	pthread_mutex_lock(&a->lock);
	if (a->config_path)
		reload_config(a, reply);
	r = audit_reopen(a->audit);
	if (r < 0)
		log_error("reload: cannot reopen the audit log %s: %s; lines "
			  "still go to the file it had open",
			  a->original->audit_log,
			  r == -ELOOP ? "it is a symbolic link, which is not "
					"followed"
				      : strerror(-r));
	credstore_reload_all(t, reply);
	pthread_mutex_unlock(&a->lock);
	return r;
}

static int reload_one(struct admin *a, const char *tenant, const char *provider,
		      struct buf *reply)
{
	struct cred *c = find_cred(a->t, tenant, provider);
	enum credstore_change ch;
	char msg[512];

	if (!c) {
		buf_printf(reply, "%s/%s: not in the daemon's configuration\n",
			   tenant, provider);
		return 1;
	}
	ch = credstore_reload(a->t, c, msg, sizeof(msg));
	if (ch == CS_ADOPTED)
		cred_wait_token(a->t, c,
				time_mono_ms() +
					cred_conf(c)->timing.open_wait_ms +
					cred_conf(c)->provider->timeout_ms);
	if (ch == CS_REMOVED)
		return buf_printf(reply, "%s\n", msg) < 0;
	return state_line(c, reply) < 0 || ch == CS_UNUSABLE;
}

static int status(struct admin *a, bool json, const char *tenant,
		  const char *provider, struct buf *reply)
{
	struct cred_table *t = a->t;
	const struct config *cfg = cred_table_config(t);
	int64_t now = time_real_ms();
	size_t i, n = 0;
	int r = 0;

	if (!tenant && !json)
		return render_root_status(t, NULL, now, reply) < 0;
	if (json)
		r = buf_printf(reply, "[\n");
	for (i = 0; i < cfg->n_creds && r == 0; i++) {
		struct cred *c = cred_of(t, &cfg->creds[i]);

		if ((tenant && strcmp(cred_conf(c)->tenant, tenant)) ||
		    (provider &&
		     strcmp(cred_conf(c)->provider->name, provider)))
			continue;
		if (n++)
			r = buf_printf(reply, json ? ",\n" : "\n");
		if (r == 0)
			r = render_cred_file(t,
					     json ? CF_STATUS_JSON : CF_STATUS,
					     c, now, reply);
	}
	if (json && r == 0)
		r = buf_printf(reply, "]\n");
	if (r == 0 && tenant && !n) {
		reply->len = 0;
		buf_printf(reply, "%s%s%s: not in the daemon's configuration\n",
			   tenant, provider ? "/" : "",
			   provider ? provider : "");
		return 1;
	}
	return r < 0;
}

/* Whether credfsctl refresh names @cc (@tenant NULL: --all). */
static bool refresh_matches(const struct cred_conf *cc, const char *tenant,
			    const char *provider)
{
	return !tenant || (!strcmp(cc->tenant, tenant) &&
			   !strcmp(cc->provider->name, provider));
}

/*
 * credfsctl refresh: a request now for @tenant/@provider (NULL: every
 * credential), whatever its backoff, and each outcome: all the requests
 * go out first, then each is waited for. 0 when every one is valid and
 * healthy afterwards, 1 otherwise.
 */
static int refresh(struct admin *a, const char *tenant, const char *provider,
		   struct buf *reply)
{
	struct cred_table *t = a->t;
	const struct config *cfg = cred_table_config(t);
	uint64_t *target =
		calloc(cfg->n_creds ? cfg->n_creds : 1, sizeof(*target));
	int64_t deadline = 0;
	size_t i, n = 0;
	int status = 0;

	if (!target) {
		buf_printf(reply, "out of memory\n");
		return 1;
	}
	for (i = 0; i < cfg->n_creds; i++) {
		const struct cred_conf *cc = &cfg->creds[i];
		int64_t wait = cc->provider->timeout_ms + 5000;

		if (!refresh_matches(cc, tenant, provider))
			continue;
		target[i] = cred_refresh_now(t, cred_of(t, cc));
		if (deadline < time_mono_ms() + wait)
			deadline = time_mono_ms() + wait;
		n++;
	}
	for (i = 0; i < cfg->n_creds; i++) {
		const struct cred_conf *cc = &cfg->creds[i];
		struct cred *c = cred_of(t, cc);
		struct cred_view v;
		int r;

		if (!refresh_matches(cc, tenant, provider))
			continue;
		r = cred_refresh_wait(t, c, target[i], deadline);
		if (r == -ENOKEY && !cred_present(c))
			continue; /* refresh_token grant, nothing stored */
		state_line(c, reply);
		if (r == -ENOKEY)
			buf_printf(reply,
				   "  nothing to send: connect it again "
				   "(credfsctl connect, device or add)\n");
		else if (r == -ETIMEDOUT)
			buf_printf(reply,
				   "  no answer yet from the provider\n");
		cred_view(c, time_real_ms(), &v);
		if ((v.state != CRED_VALID && v.state != CRED_REFRESHING) ||
		    v.consecutive_failures)
			status = 1;
		cred_view_clear(&v);
	}
	free(target);
	if (!n) {
		buf_printf(reply, "%s/%s: not in the daemon's configuration\n",
			   tenant, provider);
		return 1;
	}
	return status;
}

int admin_parse(const char *request, struct admin_req *req)
{
	char *w[MAX_WORDS], *save = NULL, *p;
	size_t n = 0, first = 1;

	memset(req, 0, sizeof(*req));
	if (strlen(request) >= sizeof(req->copy))
		return -EINVAL;
	memcpy(req->copy, request, strlen(request) + 1);
	for (p = strtok_r(req->copy, " ", &save); p && n < MAX_WORDS;
	     p = strtok_r(NULL, " ", &save))
		w[n++] = p;
	if (n == 1 && !strcmp(w[0], "reload")) {
		req->verb = ADMIN_RELOAD;
		return 0;
	}
	if (n == 2 && !strcmp(w[0], "refresh") && !strcmp(w[1], "--all")) {
		req->verb = ADMIN_REFRESH;
		return 0;
	}
	if (n == 3 && !strcmp(w[0], "refresh")) {
		req->verb = ADMIN_REFRESH;
		req->tenant = w[1];
		req->provider = w[2];
		return 0;
	}
	if (n == 3 && !strcmp(w[0], "reload")) {
		req->verb = ADMIN_RELOAD_ONE;
		req->tenant = w[1];
		req->provider = w[2];
		return 0;
	}
	if (n == 0 || strcmp(w[0], "status"))
		return -EINVAL;
	req->verb = ADMIN_STATUS;
	if (n > 1 && !strcmp(w[1], "--json")) {
		req->json = true;
		first = 2;
	}
	if (n - first > 2)
		return -EINVAL;
	req->tenant = n > first ? w[first] : NULL;
	req->provider = n > first + 1 ? w[first + 1] : NULL;
	return 0;
}

int admin_request(void *arg, const char *request, struct buf *reply)
{
	struct admin *a = arg;
	struct admin_req req;
	int r;

	if (admin_parse(request, &req) < 0) {
		buf_printf(reply, "unknown request\n");
		return 2;
	}
	if (req.verb == ADMIN_RELOAD) {
		admin_reload(a, reply);
		return buf_printf(reply, "reloaded\n") < 0;
	}
	cred_table_enter(a->t);
	if (req.verb == ADMIN_RELOAD_ONE)
		r = reload_one(a, req.tenant, req.provider, reply);
	else if (req.verb == ADMIN_REFRESH)
		r = refresh(a, req.tenant, req.provider, reply);
	else
		r = status(a, req.json, req.tenant, req.provider, reply);
	cred_table_exit(a->t);
	return r;
}
