/*
 * refresher_introspect: RFC 7662 token introspection on the refresher's
 * thread: with introspection_interval_s, each current token is asked
 * about that often, and "active": false before its expiry revokes it.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "audit.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "oauth.h"
#include "record.h"
#include "refresher_int.h"
#include "util.h"

/* Ask the provider whether @c's current token is still active. */
void rf_introspect(struct refresher *rf, struct cred *c)
{
	struct rf_entry *e = E(rf, c);
	const struct provider_conf *p = cred_conf(c)->provider;
	struct token *tok = cred_current_token(c);
	struct record_client client = {0};
	struct http_req *req = NULL;
	char *auth = NULL;
	struct buf body;
	int r = -ENOENT;

	e->introspect_mono = INT64_MAX;
	if (tok && !e->ireq && cred_client(c, &client) == 0) {
		const char *pairs[] = {"token", tok->value, "token_type_hint",
				       "access_token", NULL};

		e->introspect_gen = tok->gen;
		r = oauth_build_form(p, &client, p->introspection_url, pairs,
				     false, &body, &auth);
		record_client_clear(&client);
		if (r == 0)
			r = http_req_new(p, p->introspection_url, &body, auth,
					 c, &req);
	}
	token_unref(tok);
	if (r == 0) {
		http_req_set_tag(req, TAG_INTROSPECT);
		if (curl_multi_add_handle(rf->multi, http_req_easy(req)) ==
		    CURLM_OK) {
			e->ireq = req;
			return;
		}
	}
	http_req_free(req);
}
/* The next introspection of @c, one interval on, while there is a token. */
static void next_introspection(void *arg, struct cred *c,
			       const struct cred_plan *p)
{
	struct refresher *rf = arg;
	struct rf_entry *e = E(rf, c);

	pthread_mutex_lock(&rf->lock);
	if (e->heap_idx != NOT_IN_HEAP && e->introspect_mono == INT64_MAX &&
	    p->gen) {
		e->introspect_mono =
			time_mono_ms() +
			cred_conf(c)->provider->introspection_interval_ms;
		rf_heap_fix(rf, c);
	}
	pthread_mutex_unlock(&rf->lock);
}
/* An introspection answer: "active": false revokes; anything else wrong
 * is the endpoint's problem, not the token's. */
void rf_introspected(struct refresher *rf, struct cred *c, struct http_req *req,
		     CURLcode code)
{
	struct rf_entry *e = E(rf, c);
	struct token *before = cred_current_token(c);
	char err[OAUTH_ERROR_TEXT], why[OAUTH_ERROR_TEXT];
	const char *body;
	bool active = true;
	size_t len;
	long status;
	int r;

	r = http_req_result(req, code, &status, &body, &len, err, sizeof(err));
	if (r == 0)
		r = oauth_parse_introspection(status, body, len, &active, err,
					      sizeof(err));
	if (r < 0) {
		log_warn("%s/%s: introspection failed (%s); the token is "
			 "still served",
			 cred_conf(c)->tenant, cred_conf(c)->provider->name,
			 err);
	} else if (!active && before && before->gen == e->introspect_gen &&
		   time_real_ms() < before->expires_ms) {
		struct audit_rec rec = {
			.event = "revoked",
			.tenant = cred_conf(c)->tenant,
			.provider = cred_conf(c)->provider->name,
			.outcome = "inactive",
			.fp = before->fp,
			.detail = "introspection: the token is not active "
				  "before its expiry",
		};

		snprintf(why, sizeof(why),
			 "introspection: token not active before its expiry "
			 "(revoked at the provider)");
		if (cred_revoked_by_provider(rf->t, c, before->gen, why)) {
			log_error("%s/%s: %s", cred_conf(c)->tenant,
				  cred_conf(c)->provider->name, why);
			if (rf->t->audit)
				audit_log(rf->t->audit, &rec);
			if (rf->on_expire)
				rf->on_expire(rf->arg, c, before->gen);
		}
	}
	token_unref(before);
	cred_with_plan(c, next_introspection, rf);
}
