/*
 * refresher: the scheduler and the HTTP driver.
 *
 * Every credential sits in a min-heap keyed by the monotonic time of its next
 * request. The thread sleeps in curl_multi_poll() until the earliest one is
 * due or a transfer makes progress; an open() that needs a token now moves
 * its credential to the front and wakes the thread (curl_multi_wakeup).
 * Popped credentials wait in a per-provider FIFO while that provider already
 * has max_concurrency requests in flight. No thread per credential, no
 * polling loop. The heap is refresher_heap.c's, the store's I/O
 * refresher_store.c's (on a worker of its own), introspection
 * refresher_introspect.c's; refresher_int.h is what they share.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <curl/curl.h>

#include "audit.h"
#include "config.h"
#include "cred.h"
#include "credstore.h"
#include "store.h"
#include "http.h"
#include "log.h"
#include "oauth.h"
#include "record.h"
#include "refresher.h"
#include "refresher_int.h"
#include "plan.h"
#include "util.h"
#include "worker.h"

#define IDLE_WAIT_MS (60 * 1000)
/* Stopping: beyond the longest request, the time its answer's write takes. */
#define DRAIN_WRITE_MS 2000

/* Wall-clock @ms as monotonic; INT64_MAX stays. */
int64_t rf_mono_of(int64_t ms)
{
	if (ms == INT64_MAX)
		return INT64_MAX;
	return time_mono_ms() + (ms - time_real_ms());
}

/* Called from open() with the credential's lock held (cred -> refresher). */
static void kick(void *arg, struct cred *c)
{
	struct refresher *rf = arg;
	int64_t now = time_mono_ms();

	pthread_mutex_lock(&rf->lock);
	/* Not in the heap means it is queued or in flight already; no
	 * entry, that a reload took it away (or has yet to add it). */
	if (E(rf, c) && E(rf, c)->heap_idx != NOT_IN_HEAP &&
	    E(rf, c)->attempt_mono > now) {
		E(rf, c)->attempt_mono = now;
		rf_heap_fix(rf, c);
	} else if (E(rf, c) && E(rf, c)->at_store) {
		E(rf, c)->kicked = true;
	}
	pthread_mutex_unlock(&rf->lock);
	curl_multi_wakeup(rf->multi);
}

size_t rf_lane_of(struct refresher *rf, const struct cred *c)
{
	return cred_conf(c)->provider->slot;
}

/* Plan @c from its state @p: next request, expiry event, persist retry.
 * With @c's lock held (cred_with_plan()); the refresher's lock too. */
static void plan_locked(struct refresher *rf, struct cred *c,
			const struct cred_plan *p)
{
	struct rf_entry *e = E(rf, c);
	bool parked = p->parked;

	e->attempt_mono = parked || !p->next_refresh_ms
				  ? (parked ? INT64_MAX : time_mono_ms())
				  : rf_mono_of(p->next_refresh_ms);
	e->expiry_gen = p->gen;
	e->expiry_mono = p->gen ? rf_mono_of(p->deadline_ms) : INT64_MAX;
	if (p->unpersisted && e->persist_mono == INT64_MAX)
		e->persist_mono = time_mono_ms();
	if (parked || !p->gen ||
	    !cred_conf(c)->provider->introspection_interval_ms)
		e->introspect_mono = INT64_MAX;
	else if (e->introspect_mono == INT64_MAX && !e->ireq)
		e->introspect_mono =
			time_mono_ms() +
			cred_conf(c)->provider->introspection_interval_ms;
}

/* From outside the refresher, with @c's lock held (cred -> refresher). */
static void replan(void *arg, struct cred *c, const struct cred_plan *p)
{
	struct refresher *rf = arg;

	pthread_mutex_lock(&rf->lock);
	/* Not in the heap: queued or in flight; its completion plans it. */
	if (E(rf, c) && E(rf, c)->heap_idx != NOT_IN_HEAP) {
		plan_locked(rf, c, p);
		rf_heap_fix(rf, c);
	}
	pthread_mutex_unlock(&rf->lock);
	curl_multi_wakeup(rf->multi);
}

/* @tok: the new token after a rotation, NULL after a failure. */
static void audit_refresh(struct refresher *rf, struct cred *c,
			  const struct oauth_result *res,
			  const struct token *tok)
{
	struct audit_rec rec = {
		.event = tok ? "refresh_ok" : "refresh_failed",
		.tenant = cred_conf(c)->tenant,
		.provider = cred_conf(c)->provider->name,
		.outcome = oauth_outcome_name(res->outcome),
		.fp = tok ? tok->fp : NULL,
		.detail = tok ? NULL : res->error,
	};

	if (rf->t->audit)
		audit_log(rf->t->audit, &rec);
}

void rf_audit_persist(struct refresher *rf, struct cred *c,
		      const struct persist_result *pr)
{
	char detail[128];
	struct audit_rec rec = {
		.event = pr->err ? "persist_error" : "persist_ok",
		.tenant = cred_conf(c)->tenant,
		.provider = cred_conf(c)->provider->name,
		.outcome = pr->err ? "error" : "ok",
		.detail = detail,
	};

	snprintf(detail, sizeof(detail), "generation %llu%s%s",
		 (unsigned long long)pr->gen, pr->err ? ": " : "",
		 pr->err ? strerror(-pr->err) : "");
	if (rf->t->audit)
		audit_log(rf->t->audit, &rec);
}

/* The expiry of @c's token came before a new one: tell the filesystem. */
static void expired(struct refresher *rf, struct cred *c)
{
	struct token *tok = cred_current_token(c);

	if (tok && tok->gen == E(rf, c)->expiry_gen) {
		log_warn("%s/%s: token expired with no successor",
			 cred_conf(c)->tenant, cred_conf(c)->provider->name);
		if (rf->on_expire)
			rf->on_expire(rf->arg, c, tok->gen);
	}
	token_unref(tok);
}

static void push_planned(void *arg, struct cred *c, const struct cred_plan *p)
{
	struct refresher *rf = arg;

	pthread_mutex_lock(&rf->lock);
	plan_locked(rf, c, p);
	rf_heap_push(rf, c);
	pthread_mutex_unlock(&rf->lock);
}

/* Put @c back in the schedule after a request, planned from its state. */
void rf_reschedule(struct refresher *rf, struct cred *c)
{
	cred_with_plan(c, push_planned, rf);
}

/* What provider_client_error() does to another credential @c. */
struct client_error_move {
	struct refresher *rf;
	bool on;
	int64_t later;
};

static void client_error_move(void *arg, struct cred *c,
			      const struct cred_plan *p)
{
	struct client_error_move *m = arg;
	struct refresher *rf = m->rf;

	pthread_mutex_lock(&rf->lock);
	if (E(rf, c)->heap_idx != NOT_IN_HEAP) {
		/* Not before the refused one's retry; spread a little. */
		if (m->on && E(rf, c)->attempt_mono < m->later)
			E(rf, c)->attempt_mono = m->later;
		else if (!m->on && !p->gen)
			E(rf, c)->attempt_mono = time_mono_ms();
		rf_heap_fix(rf, c);
	}
	pthread_mutex_unlock(&rf->lock);
}

/*
 * invalid_client for @c: the whole provider's credentials are in
 * client_error, and none asks again before @c's retry (on) or its success
 * clears it for all (off), when those without a token ask at once.
 * @sent_ms: when the request that answered went out.
 */
static void provider_client_error(struct refresher *rf, struct cred *c, bool on,
				  int64_t next_ms, int64_t sent_ms)
{
	struct lane *l = &rf->lanes[rf_lane_of(rf, c)];
	const struct config *cfg = cred_table_config(rf->t);
	struct client_error_move m = {rf, on, 0};
	size_t i;

	if (on)
		l->refused_sent_ms = sent_ms;
	/* A success says the provider takes our client again only if its
	 * request went out after the refused one: an answer the store
	 * worker held comes back after a later refusal. */
	if (l->client_error == on || (!on && sent_ms <= l->refused_sent_ms))
		return;
	l->client_error = on;
	for (i = 0; i < cfg->n_creds; i++) {
		struct cred *o = cred_of(rf->t, &cfg->creds[i]);

		/* By slot: a reload may have given @c a newer conf. */
		if (cred_conf(o)->provider->slot !=
			    cred_conf(c)->provider->slot ||
		    !E(rf, o))
			continue;
		cred_set_client_error(rf->t, o, on);
		if (o == c)
			continue;
		m.later = next_ms == INT64_MAX
				  ? INT64_MAX
				  : rf_mono_of(next_ms) + (int64_t)i % 1000;
		cred_with_plan(o, client_error_move, &m);
	}
	log_warn("%s: %s", cred_conf(c)->provider->name,
		 on ? "the provider refuses our client credentials; every "
		      "credential of it is in client_error"
		    : "the provider accepts our client again");
}

static int64_t lane_drain(struct refresher *rf, struct lane *l,
			  const struct provider_conf *p);
static void answered_and_gone(struct refresher *rf, struct cred *c);

/* After @c's answer (and its store job): the lane may send the next, and
 * a credential a reload removed meanwhile goes now. */
void rf_after_answer(struct refresher *rf, struct cred *c)
{
	const struct provider_conf *p = cred_conf(c)->provider;

	rf->lane_at = rf_min64(
		rf->lane_at, lane_drain(rf, &rf->lanes[rf_lane_of(rf, c)], p));
	if (E(rf, c)->leaving && !E(rf, c)->req && !E(rf, c)->at_store)
		answered_and_gone(rf, c);
}

/* Publish the outcome of @c's request (@voided: its record changed under
 * it), stored as @pr says. Takes @tok. */
void rf_finish(struct refresher *rf, struct cred *c, struct oauth_result *res,
	       struct token *tok, bool voided, const struct persist_result *pr)
{
	struct rf_entry *e = E(rf, c);
	struct token *before = cred_current_token(c), *after;
	int64_t next, now;

	if (voided) {
		/* The record changed under the request: its result belongs
		 * to a refresh token that is no longer ours. */
		log_info("%s/%s: the stored record changed during the "
			 "request; asking again with the new one",
			 cred_conf(c)->tenant, cred_conf(c)->provider->name);
		token_unref(tok);
		rf_release_lease(rf, c, false);
		cred_abandon_attempt(rf->t, c);
		token_unref(before);
		rf_reschedule(rf, c);
		return;
	}

	rf_release_lease(rf, c, pr->gen && !pr->err);
	next = cred_finish_attempt(rf->t, c, res, token_ref(tok),
				   pr->gen ? pr : NULL, plan_rand(&rf->rng),
				   e->late);
	now = time_real_ms();
	if (tok)
		log_debug("%s/%s: refreshed, expires in %llds, next refresh in "
			  "%llds",
			  cred_conf(c)->tenant, cred_conf(c)->provider->name,
			  (long long)((tok->expires_ms - now) / 1000),
			  (long long)((next - now) / 1000));
	else if (next == INT64_MAX)
		log_error(
			"%s/%s: refresh token refused (%s): %s; revoked until "
			"a new one is added",
			cred_conf(c)->tenant, cred_conf(c)->provider->name,
			oauth_outcome_name(res->outcome), res->error);
	else
		log_warn("%s/%s: refresh failed (%s): %s; retry in %.1fs",
			 cred_conf(c)->tenant, cred_conf(c)->provider->name,
			 oauth_outcome_name(res->outcome), res->error,
			 (double)(next - now) / 1000.0);
	if (pr->gen && pr->err)
		log_error("%s/%s: cannot write generation %llu to the store: "
			  "%s; serving it from memory, retrying",
			  cred_conf(c)->tenant, cred_conf(c)->provider->name,
			  (unsigned long long)pr->gen, strerror(-pr->err));
	audit_refresh(rf, c, res, tok);
	if (pr->gen && pr->err)
		rf_audit_persist(rf, c, pr);
	if (tok && rf->on_rotate)
		rf->on_rotate(rf->arg, c);
	after = cred_current_token(c);
	if (before && !after && rf->on_expire)
		rf->on_expire(rf->arg, c, before->gen); /* revoked */
	token_unref(after);
	token_unref(before);
	if (tok || res->outcome == OAUTH_INVALID_CLIENT)
		provider_client_error(rf, c, !tok, next,
				      tok ? tok->issued_ms : E(rf, c)->sent_ms);
	token_unref(tok);
	if (pr->gen && pr->err) {
		e->persist_tries = 1;
		e->persist_mono = time_mono_ms() + PERSIST_RETRY_MIN_MS;
	} else if (pr->gen) {
		e->persist_tries = 0;
		e->persist_mono = INT64_MAX;
	}
	rf_reschedule(rf, c);
}

/* @c's answer @res to a request sent at @sent_ms. A store-backed one is
 * stored first, by the store worker (then rf_finish() runs when it comes
 * back, and this returns true); otherwise it is published now. */
static bool complete(struct refresher *rf, struct cred *c,
		     struct oauth_result *res, int64_t sent_ms)
{
	const struct persist_result none = {0};
	struct token *tok = NULL;
	struct rf_job *j;
	bool voided = false;

	if (res->outcome == OAUTH_OK) {
		tok = cred_token_new(c, &res->tok, sent_ms);
		if (!tok) {
			res->outcome = OAUTH_TRANSIENT;
			snprintf(res->error, sizeof(res->error),
				 "out of memory storing the token");
		}
	}
	if (cred_uses_store(c)) {
		voided = cred_flight_voided(c);
		j = voided || (!tok && res->outcome != OAUTH_INVALID_GRANT)
			    ? NULL
			    : rf_job_new(RJ_WRITE, c);
		if (j) {
			j->res = *res; /* the job's now */
			memset(res, 0, sizeof(*res));
			j->tok = tok;
			j->sent_ms = sent_ms;
			rf_submit(rf, j);
			return true;
		}
		if (!voided && tok) {
			/* No memory for the job: not published unstored. */
			token_unref(tok);
			tok = NULL;
			res->outcome = OAUTH_TRANSIENT;
			snprintf(res->error, sizeof(res->error),
				 "out of memory storing the token");
		}
	}
	rf_finish(rf, c, res, tok, voided, &none);
	return false;
}

/* Start @c's turn: a store other daemons share is asked for its lease
 * first (by the store worker); then the request goes out. Its lane's
 * slot is taken from here on. */
static void start(struct refresher *rf, struct cred *c)
{
	const struct provider_conf *p = cred_conf(c)->provider;
	struct rf_job *j;

	rf->lanes[rf_lane_of(rf, c)].inflight++;
	E(rf, c)->leased = false;
	E(rf, c)->late = time_mono_ms() - E(rf, c)->attempt_mono >= LATE_MS;
	if (cred_uses_store(c) && store_shared(rf->t->store)) {
		j = rf_job_new(RJ_LEASE, c);
		if (j) {
			j->lease_ms = p->timeout_ms + LEASE_EXTRA_MS;
			rf_submit(rf, j);
			return;
		}
		rf->lanes[rf_lane_of(rf, c)].inflight--;
		cred_defer(rf->t, c, STORE_DOWN_RETRY_MS);
		rf_reschedule(rf, c);
		return;
	}
	rf_send_request(rf, c);
}

/* Send @c's token request (its lane's slot taken), or complete it as
 * failed if it cannot be built. */
void rf_send_request(struct refresher *rf, struct cred *c)
{
	const struct provider_conf *p = cred_conf(c)->provider;
	struct oauth_result res = {.retry_after_ms = -1};
	struct http_req *req = NULL;
	char *auth = NULL, *rt = NULL;
	struct record_client client;
	enum cred_begin b;
	struct buf body;
	int r;

	b = cred_begin_attempt(c, &rt, &client);
	if (b != CRED_BEGIN_OK) {
		rf_release_lease(rf, c, false);
		rf->lanes[rf_lane_of(rf, c)].inflight--;
	}
	if (b == CRED_BEGIN_BUSY)
		return;
	if (b == CRED_BEGIN_PARK) {
		rf_reschedule(rf, c); /* nothing to ask with: parked */
		return;
	}
	r = cred_uses_store(c) && !rt ? -ENOMEM : 0;
	if (r == 0)
		r = oauth_build_request(cred_conf(c), &client, rt, &body,
					&auth);
	strfreezero(rt);
	record_client_clear(&client);
	if (r == 0)
		r = http_req_new(p, p->token_url, &body, auth, c, &req);
	if (r == 0) {
		E(rf, c)->sent_ms = time_real_ms();
		if (curl_multi_add_handle(rf->multi, http_req_easy(req)) ==
		    CURLM_OK) {
			E(rf, c)->req = req;
			return;
		}
		r = -ENOMEM;
	}
	http_req_free(req);
	rf->lanes[rf_lane_of(rf, c)].inflight--;
	res.outcome = OAUTH_TRANSIENT;
	snprintf(res.error, sizeof(res.error), "cannot build request: %s",
		 strerror(-r));
	complete(rf, c, &res, time_real_ms());
}

/* Token requests in flight, every lane. */
static unsigned in_flight(const struct refresher *rf)
{
	unsigned n = 0;
	size_t i;

	for (i = 0; i < rf->n_lanes; i++)
		n += rf->lanes[i].inflight;
	return n;
}

static void lane_push(struct refresher *rf, struct lane *l, struct cred *c)
{
	E(rf, c)->wait_next = NULL;
	if (l->tail)
		E(rf, l->tail)->wait_next = c;
	else
		l->head = c;
	l->tail = c;
}

/*
 * Whether the provider of lane @l may be sent one more request at @now:
 * not while it asked us to wait (429, Retry-After: every credential of the
 * provider waits, not just the one told), and with max_requests_per_s no
 * more than that, evenly spaced (no bursts: a second never sees more than
 * the rate and one). Takes the request from the budget. Otherwise false,
 * and when to look again in *@at.
 */
static bool lane_may_send(struct lane *l, const struct provider_conf *p,
			  int64_t now, int64_t *at)
{
	const double burst = 1;

	if (now < l->hold_mono) {
		*at = l->hold_mono;
		return false;
	}
	if (p->max_rate <= 0)
		return true;
	l->budget += (double)(now - l->budget_mono) * p->max_rate / 1000.0;
	if (l->budget > burst || l->budget_mono == 0)
		l->budget = burst;
	l->budget_mono = now;
	if (l->budget < 1) {
		*at = now + 1 +
		      (int64_t)((1 - l->budget) * 1000.0 / p->max_rate);
		return false;
	}
	l->budget -= 1;
	return true;
}

/* Start what lane @l may start; returns when to try again (INT64_MAX:
 * when a request completes or a credential arrives). */
static int64_t lane_drain(struct refresher *rf, struct lane *l,
			  const struct provider_conf *p)
{
	int64_t at = INT64_MAX;

	if (atomic_load(&rf->stop))
		return INT64_MAX; /* stopping: nothing new goes out */
	while (l->head && l->inflight < p->max_concurrency &&
	       lane_may_send(l, p, time_mono_ms(), &at)) {
		struct cred *c = l->head;

		l->head = E(rf, c)->wait_next;
		if (!l->head)
			l->tail = NULL;
		E(rf, c)->wait_next = NULL;
		start(rf, c);
	}
	return l->head ? at : INT64_MAX;
}

static void let_go(struct refresher *rf, struct cred *c);

/* A removed credential's answer is in (and stored): now it goes. */
static void answered_and_gone(struct refresher *rf, struct cred *c)
{
	struct change *ch = E(rf, c)->leaving;

	let_go(rf, c);
	pthread_mutex_lock(&rf->lock);
	if (--ch->leaving == 0) {
		ch->done = true;
		pthread_cond_broadcast(&rf->change_cond);
	}
	pthread_mutex_unlock(&rf->lock);
}

static void reap(struct refresher *rf)
{
	struct oauth_result res;
	struct lane *l;
	struct http_req *req;
	struct cred *c;
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(rf->multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &req);
		curl_multi_remove_handle(rf->multi, msg->easy_handle);
		c = http_req_user(req);
		if (http_req_tag(req) == TAG_INTROSPECT) {
			E(rf, c)->ireq = NULL;
			rf_introspected(rf, c, req, msg->data.result);
			http_req_free(req);
			continue;
		}
		http_req_finish(req, cred_conf(c)->provider, msg->data.result,
				time_real_ms(), &res);
		E(rf, c)->req = NULL;
		http_req_free(req);
		l = &rf->lanes[rf_lane_of(rf, c)];
		l->inflight--;
		if (res.outcome == OAUTH_RATE_LIMITED) {
			/* The provider's limit is the client's, not the
			 * credential's: hold them all. */
			int64_t hold = time_mono_ms() +
				       (res.retry_after_ms >= 0
						? res.retry_after_ms
						: cred_conf(c)
							  ->provider
							  ->backoff_initial_ms);

			if (hold > l->hold_mono)
				l->hold_mono = hold;
		}
		if (!complete(rf, c, &res, E(rf, c)->sent_ms))
			rf_after_answer(rf, c);
		oauth_result_clear(&res);
	}
}

/* Requests in flight and store jobs out: what a stop waits for. */
static unsigned busy(const struct refresher *rf)
{
	return in_flight(rf) + rf->jobs;
}

/* Stopping: what the requests in flight left unwritten gets one more
 * try, and whatever did not come back is said. */

static void finish_stop(struct refresher *rf, int64_t since)
{
	cred_table_enter(rf->t);
	const struct config *cfg = cred_table_config(rf->t);
	size_t i;

	/* What the store worker has left, then the retries, here. */
	worker_stop(rf->store);
	rf_jobs_done(rf);
	for (i = 0; i < cfg->n_creds; i++) {
		struct cred *c = cred_of(rf->t, &cfg->creds[i]);

		if (E(rf, c) && E(rf, c)->persist_mono != INT64_MAX &&
		    E(rf, c)->heap_idx != NOT_IN_HEAP) {
			pthread_mutex_lock(&rf->lock);
			rf_heap_remove(rf, c);
			pthread_mutex_unlock(&rf->lock);
			rf_persist_retry(rf, c);
		}
	}
	rf_jobs_done(rf);
	cred_table_exit(rf->t);
	if (in_flight(rf))
		log_error("stopping: %u token requests still unanswered after "
			  "%.1fs; a provider that rotates refresh tokens may "
			  "see the next refresh as a reuse",
			  in_flight(rf), (double)(time_mono_ms() - since) / 1e3);
	else if (since)
		log_info("stopping: every answer in flight is in (%.1fs)",
			 (double)(time_mono_ms() - since) / 1e3);
}

/* Lanes for every provider slot below @n (the refresher thread's, or
 * before it runs). */
static int lanes_room(struct refresher *rf, size_t n)
{
	struct lane *l;

	if (n <= rf->n_lanes)
		return 0;
	l = realloc(rf->lanes, n * sizeof(*l));
	if (!l)
		return -ENOMEM;
	memset(l + rf->n_lanes, 0, (n - rf->n_lanes) * sizeof(*l));
	rf->lanes = l;
	rf->n_lanes = n;
	return 0;
}

/* Room for @cfg's providers and @n credentials, before the start. */
static int grow(struct refresher *rf, const struct config *cfg, size_t n)
{
	if (lanes_room(rf, cfg->n_provider_slots) < 0)
		return -ENOMEM;
	rf->heap = calloc(n + 1, sizeof(*rf->heap));
	rf->heap_cap = n + 1;
	return rf->heap ? 0 : -ENOMEM;
}

/* Schedule @c (live, or about to be): its entry, planned from its state. */
static int take_on(struct refresher *rf, struct cred *c)
{
	struct rf_entry *e = calloc(1, sizeof(*e));
	int r;

	if (!e || lanes_room(rf, rf_lane_of(rf, c) + 1) < 0) {
		free(e);
		return -ENOMEM;
	}
	e->persist_mono = INT64_MAX;
	e->introspect_mono = INT64_MAX;
	e->heap_idx = NOT_IN_HEAP;
	pthread_mutex_lock(&rf->lock);
	r = rf_heap_room(rf);
	if (r == 0)
		cred_set_entry(c, e);
	pthread_mutex_unlock(&rf->lock);
	if (r < 0) {
		free(e);
		return r;
	}
	rf_reschedule(rf, c);
	return 0;
}

/* Let @c go: out of the heap and its lane, its requests abandoned, its
 * entry freed. The refresher thread's (or before or after it runs). */
static void let_go(struct refresher *rf, struct cred *c)
{
	struct lane *l = &rf->lanes[rf_lane_of(rf, c)];
	struct rf_entry *e = E(rf, c);
	struct cred **p, *prev = NULL;

	pthread_mutex_lock(&rf->lock);
	rf_heap_remove(rf, c);
	pthread_mutex_unlock(&rf->lock);
	for (p = &l->head; *p; prev = *p, p = &E(rf, *p)->wait_next)
		if (*p == c) {
			*p = e->wait_next;
			if (l->tail == c)
				l->tail = prev;
			break;
		}
	if (e->req) {
		curl_multi_remove_handle(rf->multi, http_req_easy(e->req));
		http_req_free(e->req);
		l->inflight--;
		/* Its answer is lost: the next refresher asks again. */
		cred_abandon_attempt(rf->t, c);
	}
	if (e->ireq) {
		curl_multi_remove_handle(rf->multi, http_req_easy(e->ireq));
		http_req_free(e->ireq);
	}
	rf_release_lease(rf, c, false);
	pthread_mutex_lock(&rf->lock);
	cred_set_entry(c, NULL);
	pthread_mutex_unlock(&rf->lock);
	free(e);
}

/* @can_wait: the thread runs, and answers in flight may be waited for. */
static void change_run(struct refresher *rf, struct change *ch, bool can_wait)
{
	size_t i;

	for (i = 0; i < ch->n_removed; i++) {
		struct cred *c = ch->removed[i];

		if (!E(rf, c) || E(rf, c)->leaving)
			continue;
		if (can_wait && (E(rf, c)->req || E(rf, c)->at_store)) {
			/* Its answer may carry a rotated refresh token: not
			 * dropped, stored (reap()), then it goes. */
			E(rf, c)->leaving = ch;
			ch->leaving++;
			continue;
		}
		let_go(rf, c);
	}
	for (i = 0; i < ch->n_added; i++)
		if (!E(rf, ch->added[i]) && take_on(rf, ch->added[i]) < 0)
			log_error("%s/%s: out of memory: not refreshed until "
				  "the next reload",
				  cred_conf(ch->added[i])->tenant,
				  cred_conf(ch->added[i])->provider->name);
}

/* The refresher thread, with rf->lock held (dropped meanwhile): take on
 * and let go what reloads asked for. */
static void take_changes(struct refresher *rf)
{
	struct change *list = rf->changes, *ch;

	rf->changes = NULL;
	pthread_mutex_unlock(&rf->lock);
	cred_table_enter(rf->t);
	for (ch = list; ch; ch = ch->next)
		change_run(rf, ch, true);
	cred_table_exit(rf->t);
	pthread_mutex_lock(&rf->lock);
	for (ch = list; ch; ch = ch->next)
		ch->done = ch->leaving == 0;
	pthread_cond_broadcast(&rf->change_cond);
}

/* t->apply: from a reload (no lock held). */
static void apply(void *arg, struct cred **added, size_t n_added,
		  struct cred **removed, size_t n_removed)
{
	struct refresher *rf = arg;
	struct change ch = {NULL, added, removed, n_added, n_removed, 0, false};
	struct change **p;

	pthread_mutex_lock(&rf->lock);
	if (rf->started && !rf->done) {
		ch.next = rf->changes;
		rf->changes = &ch;
		curl_multi_wakeup(rf->multi);
		while (!ch.done && !rf->done)
			pthread_cond_wait(&rf->change_cond, &rf->lock);
		for (p = &rf->changes; *p; p = &(*p)->next)
			if (*p == &ch) {
				*p = ch.next; /* the thread ended first */
				break;
			}
	}
	pthread_mutex_unlock(&rf->lock);
	if (!ch.done) {
		cred_table_enter(rf->t);
		change_run(rf, &ch, false); /* no thread runs: ours to do */
		cred_table_exit(rf->t);
	}
}

static void *run(void *arg)
{
	struct refresher *rf = arg;
	const struct config *cfg;
	int64_t wait_ms, stop_seen = 0;
	int running;
	size_t i;

	pthread_mutex_lock(&rf->lock);
	while (!atomic_load(&rf->stop) ||
	       (busy(rf) && time_mono_ms() < rf->drain_until)) {
		struct cred *due = NULL, **tail = &due;
		int64_t now = time_mono_ms();
		bool stopping = atomic_load(&rf->stop);

		if (rf->changes) {
			take_changes(rf); /* drops the lock meanwhile */
			continue;
		}
		if (stopping && !stop_seen) {
			stop_seen = now;
			if (busy(rf))
				log_info("stopping: waiting up to %.1fs for %u "
					 "token requests in flight (and %u "
					 "store writes)",
					 (double)(rf->drain_until - now) / 1e3,
					 in_flight(rf), rf->jobs);
		}
		/* A round reads the configuration; between rounds nothing
		 * here holds on to any of it. */
		cred_table_enter(rf->t);
		while (!stopping && rf->n && E(rf, rf->heap[0])->due_mono <= now) {
			struct cred *c = rf_heap_pop(rf);

			if (E(rf, c)->persist_mono <= now) {
				pthread_mutex_unlock(&rf->lock);
				rf_persist_retry(rf,
						 c); /* back from the store */
				pthread_mutex_lock(&rf->lock);
				continue;
			}
			if (E(rf, c)->introspect_mono <= now) {
				pthread_mutex_unlock(&rf->lock);
				rf_introspect(rf, c);
				pthread_mutex_lock(&rf->lock);
				rf_heap_push(rf, c);
				continue;
			}
			if (E(rf, c)->attempt_mono > now) {
				/* An expiry event, not a request. */
				E(rf, c)->expiry_mono = INT64_MAX;
				rf_heap_push(rf, c);
				*tail = NULL;
				pthread_mutex_unlock(&rf->lock);
				expired(rf, c);
				pthread_mutex_lock(&rf->lock);
				continue;
			}
			*tail = c;
			tail = &E(rf, c)->wait_next;
		}
		*tail = NULL;
		pthread_mutex_unlock(&rf->lock);

		while (due) {
			struct cred *c = due;

			due = E(rf, c)->wait_next;
			lane_push(rf, &rf->lanes[rf_lane_of(rf, c)], c);
		}
		cfg = cred_table_config(
			rf->t); /* a reload may have replaced it */
		rf->lane_at = INT64_MAX;
		for (i = 0; i < cfg->n_providers; i++)
			if (cfg->providers[i].slot < rf->n_lanes)
				rf->lane_at = rf_min64(
					rf->lane_at,
					lane_drain(rf,
						   &rf->lanes[cfg->providers[i]
								      .slot],
						   &cfg->providers[i]));
		curl_multi_perform(rf->multi, &running);
		reap(rf);
		rf_jobs_done(rf);
		if (rf->beat)
			rf->beat(rf->beat_arg);

		cred_table_exit(rf->t);
		pthread_mutex_lock(&rf->lock);
		if (stopping)
			wait_ms = rf->drain_until - time_mono_ms();
		else
			wait_ms = rf->n ? E(rf, rf->heap[0])->due_mono - time_mono_ms()
					: IDLE_WAIT_MS;
		if (rf->beat && wait_ms > rf->beat_every_ms)
			wait_ms = rf->beat_every_ms;
		/* A lane held back by its provider's limits. */
		if (rf->lane_at != INT64_MAX &&
		    rf->lane_at - time_mono_ms() < wait_ms)
			wait_ms = rf->lane_at - time_mono_ms();
		if (wait_ms <= 0 || (atomic_load(&rf->stop) && !stopping) ||
		    (stopping && !busy(rf)))
			continue;
		pthread_mutex_unlock(&rf->lock);
		/* Returns early for socket activity or curl_multi_wakeup(). */
		curl_multi_poll(
			rf->multi, NULL, 0,
			(int)(wait_ms < IDLE_WAIT_MS ? wait_ms : IDLE_WAIT_MS),
			NULL);
		pthread_mutex_lock(&rf->lock);
	}
	pthread_mutex_unlock(&rf->lock);
	finish_stop(rf, stop_seen);
	pthread_mutex_lock(&rf->lock);
	rf->done = true;
	pthread_cond_broadcast(&rf->done_cond);
	pthread_cond_broadcast(&rf->change_cond);
	pthread_mutex_unlock(&rf->lock);
	return NULL;
}

/* The store worker has jobs done. */
static void wake(void *arg)
{
	struct refresher *rf = arg;

	curl_multi_wakeup(rf->multi);
}

int refresher_new(struct cred_table *t, refresher_rotate_fn on_rotate,
		  refresher_expire_fn on_expire, void *arg,
		  struct refresher **out)
{
	const struct config *cfg;
	struct refresher *rf;
	int64_t now = time_mono_ms();
	size_t i;

	rf = calloc(1, sizeof(*rf));
	if (!rf)
		return -ENOMEM;
	rf->t = t;
	rf->on_rotate = on_rotate;
	rf->on_expire = on_expire;
	rf->arg = arg;
	pthread_mutex_init(&rf->lock, NULL);
	pthread_cond_init(&rf->done_cond, NULL);
	pthread_cond_init(&rf->change_cond, NULL);
	rf->multi = curl_multi_init();
	cred_table_enter(t);
	cfg = cred_table_config(t);
	if (!rf->multi || grow(rf, cfg, cfg->n_creds) < 0 ||
	    (t->store && worker_new(rf_store_run, t, wake, rf, &rf->store) < 0))
		goto out_free;
	if (getrandom(&rf->rng, sizeof(rf->rng), 0) != sizeof(rf->rng) ||
	    !rf->rng)
		rf->rng = (uint64_t)now | 1;
	for (i = 0; i < cfg->n_creds; i++)
		if (take_on(rf, cred_of(t, &cfg->creds[i])) < 0)
			goto out_free;
	cred_table_exit(t);
	t->kick = kick;
	t->replan = replan;
	t->apply = apply;
	t->kick_arg = rf;
	*out = rf;
	return 0;
out_free:
	cred_table_exit(t);
	refresher_free(rf);
	return -ENOMEM;
}

void refresher_set_beat(struct refresher *rf, void (*beat)(void *arg),
			void *arg, int64_t every_ms)
{
	rf->beat = beat;
	rf->beat_arg = arg;
	rf->beat_every_ms = every_ms;
}

int refresher_start(struct refresher *rf)
{
	int r = pthread_create(&rf->thread, NULL, run, rf);

	if (r)
		return -r;
	rf->started = true;
	return 0;
}

void refresher_stop(struct refresher *rf, int64_t drain_ms)
{
	if (!rf || !rf->started)
		return;
	pthread_mutex_lock(&rf->lock);
	if (!atomic_load(&rf->stop)) {
		rf->drain_until = time_mono_ms() + drain_ms;
		atomic_store(&rf->stop, true);
	}
	curl_multi_wakeup(rf->multi);
	while (!rf->done)
		pthread_cond_wait(&rf->done_cond, &rf->lock);
	pthread_mutex_unlock(&rf->lock);
}

int64_t refresher_drain_ms(const struct cred_table *t)
{
	const struct config *cfg;
	int64_t ms = 0;
	size_t i;

	cred_table_enter(t);
	cfg = cred_table_config(t);
	for (i = 0; i < cfg->n_providers; i++)
		if (cfg->providers[i].timeout_ms > ms)
			ms = cfg->providers[i].timeout_ms;
	cred_table_exit(t);
	return ms + DRAIN_WRITE_MS;
}

void refresher_free(struct refresher *rf)
{
	uint32_t i, n;

	if (!rf)
		return;
	if (rf->started) {
		refresher_stop(rf, 0);
		pthread_join(rf->thread, NULL);
	}
	worker_stop(rf->store);
	cred_table_enter(rf->t); /* what is left reads the configuration */
	rf_jobs_done(rf);
	rf->t->kick = NULL;
	rf->t->replan = NULL;
	rf->t->apply = NULL;
	/* Everyone goes: the lanes at once, not each out of its lane (a
	 * backlog of 100,000 made that quadratic: 90 s). */
	for (i = 0; i < rf->n_lanes; i++)
		rf->lanes[i].head = rf->lanes[i].tail = NULL;
	n = atomic_load(&rf->t->n_slots);
	for (i = 0; i < n; i++) {
		struct cred *c = cred_at(rf->t, i);

		if (c && E(rf, c))
			let_go(rf, c);
	}
	cred_table_exit(rf->t);
	if (rf->multi)
		curl_multi_cleanup(rf->multi);
	worker_free(rf->store);
	free(rf->heap);
	free(rf->lanes);
	pthread_cond_destroy(&rf->done_cond);
	pthread_cond_destroy(&rf->change_cond);
	pthread_mutex_destroy(&rf->lock);
	free(rf);
}
