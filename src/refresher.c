/*
 * refresher: the scheduler and the HTTP driver.
 *
 * Every credential sits in a min-heap keyed by the monotonic time of its next
 * request. The thread sleeps in curl_multi_poll() until the earliest one is
 * due or a transfer makes progress; an open() that needs a token now moves
 * its credential to the front and wakes the thread (curl_multi_wakeup).
 * Popped credentials wait in a per-provider FIFO while that provider already
 * has max_concurrency requests in flight. No thread per credential, no
 * polling loop.
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
#include "refresher.h"
#include "refresher_int.h"
#include "plan.h"
#include "util.h"
#include "worker.h"

#define NOT_IN_HEAP SIZE_MAX
#define IDLE_WAIT_MS (60 * 1000)
#define PERSIST_RETRY_MIN_MS 500
#define PERSIST_RETRY_MAX_MS (10 * 1000)
#define TAG_INTROSPECT 1
/* Stopping: beyond the longest request, the time its answer's write takes. */
#define DRAIN_WRITE_MS 2000

struct lane {
	unsigned inflight;
	struct cred *head, *tail; /* waiting for a free slot */
	bool client_error;	  /* the provider refuses our client */
	int64_t hold_mono;	  /* rate limited: nothing before this */
	double budget;		  /* max_requests_per_s: requests in hand */
	int64_t budget_mono;	  /* when budget was last topped up */
};

/*
 * What the refresher keeps of each credential: its schedule and its
 * requests. Private to this file (struct cred holds only the pointer,
 * set and cleared under the refresher's lock).
 */
struct rf_entry {
	int64_t due_mono;     /* heap key: min(attempt, expiry, persist) */
	int64_t attempt_mono; /* next request */
	int64_t expiry_mono;  /* when the current token expires; INT64_MAX */
	uint64_t expiry_gen;
	int64_t persist_mono; /* next try to persist; INT64_MAX: none due */
	unsigned persist_tries;
	int64_t introspect_mono; /* next introspection; INT64_MAX: none */
	uint64_t introspect_gen; /* the generation being introspected */
	struct http_req *ireq;	 /* the introspection in flight */
	size_t heap_idx;
	struct cred *wait_next; /* in its lane's FIFO */
	struct http_req *req;	/* the request in flight */
	int64_t sent_ms;
	bool leased; /* holds its refresh lease in a shared store */
	/* A job of its is with the store worker (refresher_store.c): out
	 * of the heap until it comes back; kicked, an open asked for a
	 * refresh meanwhile. */
	bool at_store;
	bool kicked;
	/* A reload removed it while its request was in flight: the answer
	 * is waited for and stored (a rotated refresh token in it), then
	 * the entry goes, and this change is told. */
	struct change *leaving;
};

/* @c's entry in @rf. */
#define E(rf, c) ((void)(rf), (c)->entry)

/* Credentials a reload added and removed, for the refresher to take on
 * and let go (t->apply, apply()). */
struct change {
	struct change *next;
	struct cred **added, **removed;
	size_t n_added, n_removed;
	size_t leaving; /* removed ones whose answer is still awaited */
	bool done;
};

struct refresher {
	struct cred_table *t;
	refresher_rotate_fn on_rotate;
	refresher_expire_fn on_expire;
	void *arg;
	CURLM *multi;
	struct lane *lanes; /* one per provider slot (tree.h) */
	size_t n_lanes;	    /* only the refresher thread grows it */
	int64_t lane_at;    /* the earliest a held-back lane may send */
	uint64_t rng;
	bool started;
	struct worker *store;	  /* the store's I/O (refresher_store.c) */
	unsigned jobs;		  /* rf_jobs out, but unleases */
	struct work *inline_done; /* run here, no worker: for jobs_done() */

	pthread_t thread;
	pthread_mutex_t lock; /* heap, stop and done */
	pthread_cond_t done_cond;
	struct cred **heap;
	size_t n, heap_cap;
	struct change *changes; /* a reload's, to take on */
	pthread_cond_t change_cond;
	atomic_bool stop;    /* no new requests from now on */
	int64_t drain_until; /* monotonic: the last wait for those in flight */
	bool done;	     /* the thread has left its loop */
	/* Proof of life, once a round and at least every beat_every_ms. */
	void (*beat)(void *arg);
	void *beat_arg;
	int64_t beat_every_ms;
};

static bool due_before(const struct refresher *rf, const struct cred *a,
		       const struct cred *b)
{
	return E(rf, a)->due_mono < E(rf, b)->due_mono;
}

static void heap_swap(struct refresher *rf, size_t i, size_t j)
{
	struct cred *c = rf->heap[i];

	rf->heap[i] = rf->heap[j];
	rf->heap[j] = c;
	E(rf, rf->heap[i])->heap_idx = i;
	E(rf, rf->heap[j])->heap_idx = j;
}

static void heap_up(struct refresher *rf, size_t i)
{
	while (i > 0 && due_before(rf, rf->heap[i], rf->heap[(i - 1) / 2])) {
		heap_swap(rf, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void heap_down(struct refresher *rf, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < rf->n && due_before(rf, rf->heap[l], rf->heap[m]))
			m = l;
		if (r < rf->n && due_before(rf, rf->heap[r], rf->heap[m]))
			m = r;
		if (m == i)
			return;
		heap_swap(rf, i, m);
		i = m;
	}
}

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/* The earliest of @c's next request, expiry event, persist retry and
 * introspection. */
static int64_t due_of(const struct refresher *rf, const struct cred *c)
{
	struct rf_entry *e = E(rf, c);

	return min64(min64(e->attempt_mono, e->expiry_mono),
		     min64(e->persist_mono, e->introspect_mono));
}

static void heap_push(struct refresher *rf, struct cred *c)
{
	struct rf_entry *e = E(rf, c);

	e->due_mono = due_of(rf, c);
	e->heap_idx = rf->n;
	rf->heap[rf->n++] = c;
	heap_up(rf, e->heap_idx);
}

/* @c's key changed while in the heap. */
static void heap_fix(struct refresher *rf, struct cred *c)
{
	struct rf_entry *e = E(rf, c);

	e->due_mono = due_of(rf, c);
	heap_up(rf, e->heap_idx);
	heap_down(rf, e->heap_idx);
}

/* Wall-clock @ms as monotonic; INT64_MAX stays. */
static int64_t mono_of(int64_t ms)
{
	if (ms == INT64_MAX)
		return INT64_MAX;
	return time_mono_ms() + (ms - time_real_ms());
}

static struct cred *heap_pop(struct refresher *rf)
{
	struct cred *c = rf->heap[0];

	rf->n--;
	if (rf->n) {
		rf->heap[0] = rf->heap[rf->n];
		E(rf, rf->heap[0])->heap_idx = 0;
		heap_down(rf, 0);
	}
	E(rf, c)->heap_idx = NOT_IN_HEAP;
	return c;
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
		E(rf, c)->due_mono = now;
		heap_up(rf, E(rf, c)->heap_idx);
	} else if (E(rf, c) && E(rf, c)->at_store) {
		E(rf, c)->kicked = true;
	}
	pthread_mutex_unlock(&rf->lock);
	curl_multi_wakeup(rf->multi);
}

static size_t lane_of(struct refresher *rf, const struct cred *c)
{
	return c->conf->provider->slot;
}

/* Plan @c from its state: next request, expiry event, persist retry. With
 * @c's lock held; the refresher's lock too. */
static void plan_locked(struct refresher *rf, struct cred *c)
{
	struct rf_entry *e = E(rf, c);
	bool parked = !cred_present(c) || c->revoked ||
		      (cred_uses_store(c) && !c->refresh_token);

	e->attempt_mono = parked || !c->next_refresh_ms
				  ? (parked ? INT64_MAX : time_mono_ms())
				  : mono_of(c->next_refresh_ms);
	e->expiry_gen = c->cur ? c->cur->gen : 0;
	e->expiry_mono =
		c->cur ? mono_of(cred_token_deadline(c, c->cur)) : INT64_MAX;
	if (c->record_gen > c->durable_gen && e->persist_mono == INT64_MAX)
		e->persist_mono = time_mono_ms();
	if (parked || !c->cur || !c->conf->provider->introspection_interval_ms)
		e->introspect_mono = INT64_MAX;
	else if (e->introspect_mono == INT64_MAX && !e->ireq)
		e->introspect_mono =
			time_mono_ms() +
			c->conf->provider->introspection_interval_ms;
}

/* From outside the refresher, with @c's lock held (cred -> refresher). */
static void replan(void *arg, struct cred *c)
{
	struct refresher *rf = arg;

	pthread_mutex_lock(&rf->lock);
	/* Not in the heap: queued or in flight; its completion plans it. */
	if (E(rf, c) && E(rf, c)->heap_idx != NOT_IN_HEAP) {
		plan_locked(rf, c);
		heap_fix(rf, c);
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
		.tenant = c->conf->tenant,
		.provider = c->conf->provider->name,
		.outcome = oauth_outcome_name(res->outcome),
		.fp = tok ? tok->fp : NULL,
		.detail = tok ? NULL : res->error,
	};

	if (rf->t->audit)
		audit_log(rf->t->audit, &rec);
}

static void audit_persist(struct refresher *rf, struct cred *c,
			  const struct persist_result *pr)
{
	char detail[128];
	struct audit_rec rec = {
		.event = pr->err ? "persist_error" : "persist_ok",
		.tenant = c->conf->tenant,
		.provider = c->conf->provider->name,
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
			 c->conf->tenant, c->conf->provider->name);
		if (rf->on_expire)
			rf->on_expire(rf->arg, c, tok->gen);
	}
	token_unref(tok);
}

/* Put @c back in the schedule after a request, planned from its state. */
static void reschedule(struct refresher *rf, struct cred *c)
{
	pthread_mutex_lock(&c->lock);
	pthread_mutex_lock(&rf->lock);
	plan_locked(rf, c);
	heap_push(rf, c);
	pthread_mutex_unlock(&rf->lock);
	pthread_mutex_unlock(&c->lock);
}

/*
 * invalid_client for @c: the whole provider's credentials are in
 * client_error, and none asks again before @c's retry (on) or its success
 * clears it for all (off), when those without a token ask at once.
 */
static void provider_client_error(struct refresher *rf, struct cred *c, bool on,
				  int64_t next_ms)
{
	struct lane *l = &rf->lanes[lane_of(rf, c)];
	const struct config *cfg = rf->t->cfg;
	size_t i;

	if (l->client_error == on)
		return;
	l->client_error = on;
	for (i = 0; i < cfg->n_creds; i++) {
		struct cred *o = cred_of(rf->t, &cfg->creds[i]);

		/* By slot: a reload may have given @c a newer conf. */
		if (o->conf->provider->slot != c->conf->provider->slot ||
		    !E(rf, o))
			continue;
		cred_set_client_error(rf->t, o, on);
		if (o == c)
			continue;
		pthread_mutex_lock(&o->lock);
		pthread_mutex_lock(&rf->lock);
		if (E(rf, o)->heap_idx != NOT_IN_HEAP) {
			int64_t later =
				next_ms == INT64_MAX
					? INT64_MAX
					: mono_of(next_ms) + (int64_t)i % 1000;

			/* Not before the refused one's retry; spread a little.
			 */
			if (on && E(rf, o)->attempt_mono < later)
				E(rf, o)->attempt_mono = later;
			else if (!on && !o->cur)
				E(rf, o)->attempt_mono = time_mono_ms();
			heap_fix(rf, o);
		}
		pthread_mutex_unlock(&rf->lock);
		pthread_mutex_unlock(&o->lock);
	}
	log_warn("%s: %s", c->conf->provider->name,
		 on ? "the provider refuses our client credentials; every "
		      "credential of it is in client_error"
		    : "the provider accepts our client again");
}

/* @list with @more (a list, or NULL) after it. */
static struct work *list_append(struct work *list, struct work *more)
{
	struct work **p = &list;

	while (*p)
		p = &(*p)->next;
	*p = more;
	return list;
}

/* A job for the store worker about @c (NULL without memory). */
static struct rf_job *job_new(enum rf_job_kind kind, struct cred *c)
{
	struct rf_job *j = calloc(1, sizeof(*j));

	if (j) {
		j->kind = kind;
		j->c = c;
	}
	return j;
}

static void job_free(struct rf_job *j)
{
	if (!j)
		return;
	oauth_result_clear(&j->res);
	token_unref(j->tok);
	free(j->tenant);
	free(j->provider);
	free(j);
}

/* Hand @j to the store worker, or run it here when none runs (before the
 * start, or after the stop). With @j of @c's entry, @c leaves the heap
 * until it comes back (jobs_done()). */
static void submit(struct refresher *rf, struct rf_job *j)
{
	if (j->kind != RJ_UNLEASE) {
		E(rf, j->c)->at_store = true;
		rf->jobs++;
	}
	if (rf->store && worker_running(rf->store)) {
		worker_submit(rf->store, &j->w);
		return;
	}
	j->w.next = NULL;
	rf_store_run(rf->t, &j->w);
	if (j->kind == RJ_UNLEASE)
		job_free(j);
	else
		rf->inline_done = list_append(rf->inline_done, &j->w);
}

/* Try again to write @c's state, whose last write failed. */
static void persist_retry(struct refresher *rf, struct cred *c)
{
	struct rf_job *j = job_new(RJ_RETRY, c);

	if (j) {
		submit(rf, j);
		return;
	}
	pthread_mutex_lock(&rf->lock);
	E(rf, c)->persist_mono = time_mono_ms() + PERSIST_RETRY_MIN_MS;
	heap_push(rf, c);
	pthread_mutex_unlock(&rf->lock);
}

/* What came of persist_retry(). */
static void retried(struct refresher *rf, struct rf_job *j)
{
	struct cred *c = j->c;
	struct rf_entry *e = E(rf, c);
	struct persist_result *pr = &j->pr;
	int r = j->ret;

	if (r != -ECANCELED) {
		cred_note_persist(rf->t, c, pr->gen, pr->err);
		if (pr->err == 0 || e->persist_tries == 0)
			audit_persist(rf, c, pr);
	}
	if (r == 0 || r == -ECANCELED) {
		if (r == 0)
			log_info("%s/%s: generation %llu written to the store",
				 c->conf->tenant, c->conf->provider->name,
				 (unsigned long long)pr->gen);
		e->persist_tries = 0;
		e->persist_mono = INT64_MAX;
	} else {
		e->persist_tries++;
		e->persist_mono =
			time_mono_ms() +
			plan_backoff_ms(PERSIST_RETRY_MIN_MS,
					PERSIST_RETRY_MAX_MS, e->persist_tries,
					0.5 + plan_rand(&rf->rng) / 2);
	}
	pthread_mutex_lock(&rf->lock);
	if (e->kicked && e->attempt_mono > time_mono_ms())
		e->attempt_mono = time_mono_ms();
	heap_push(rf, c);
	pthread_mutex_unlock(&rf->lock);
}

/* Ask the provider whether @c's current token is still active. */
static void introspect(struct refresher *rf, struct cred *c)
{
	struct rf_entry *e = E(rf, c);
	const struct provider_conf *p = c->conf->provider;
	struct token *tok = cred_current_token(c);
	struct http_req *req = NULL;
	char *auth = NULL;
	struct buf body;
	int r = -ENOENT;

	e->introspect_mono = INT64_MAX;
	if (tok && !e->ireq) {
		const char *pairs[] = {"token", tok->value, "token_type_hint",
				       "access_token", NULL};

		e->introspect_gen = tok->gen;
		r = oauth_build_form(p, p->introspection_url, pairs, false,
				     &body, &auth);
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

/* An introspection answer: "active": false revokes; anything else wrong
 * is the endpoint's problem, not the token's. */
static void introspected(struct refresher *rf, struct cred *c,
			 struct http_req *req, CURLcode code)
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
			 c->conf->tenant, c->conf->provider->name, err);
	} else if (!active && before && before->gen == e->introspect_gen &&
		   time_real_ms() < before->expires_ms) {
		struct audit_rec rec = {
			.event = "revoked",
			.tenant = c->conf->tenant,
			.provider = c->conf->provider->name,
			.outcome = "inactive",
			.fp = before->fp,
			.detail = "introspection: the token is not active "
				  "before its expiry",
		};

		snprintf(why, sizeof(why),
			 "introspection: token not active before its expiry "
			 "(revoked at the provider)");
		if (cred_revoked_by_provider(rf->t, c, before->gen, why)) {
			log_error("%s/%s: %s", c->conf->tenant,
				  c->conf->provider->name, why);
			if (rf->t->audit)
				audit_log(rf->t->audit, &rec);
			if (rf->on_expire)
				rf->on_expire(rf->arg, c, before->gen);
		}
	}
	token_unref(before);
	/* The next one, one interval on, while there is a token. */
	pthread_mutex_lock(&c->lock);
	pthread_mutex_lock(&rf->lock);
	if (e->heap_idx != NOT_IN_HEAP && e->introspect_mono == INT64_MAX &&
	    c->cur) {
		e->introspect_mono =
			time_mono_ms() +
			c->conf->provider->introspection_interval_ms;
		heap_fix(rf, c);
	}
	pthread_mutex_unlock(&rf->lock);
	pthread_mutex_unlock(&c->lock);
}

/* End @c's refresh lease, unless a save of the record (@saved) did. */
static void release_lease(struct refresher *rf, struct cred *c, bool saved)
{
	struct rf_job *j;

	if (E(rf, c)->leased && !saved) {
		j = job_new(RJ_UNLEASE, c);
		if (j) {
			j->tenant = strdup(c->conf->tenant);
			j->provider = strdup(c->conf->provider->name);
		}
		if (j && j->tenant && j->provider)
			submit(rf, j);
		else
			job_free(j); /* it runs out (LEASE_EXTRA_MS) */
	}
	E(rf, c)->leased = false;
}

static int64_t lane_drain(struct refresher *rf, struct lane *l,
			  const struct provider_conf *p);
static void answered_and_gone(struct refresher *rf, struct cred *c);

/* After @c's answer (and its store job): the lane may send the next, and
 * a credential a reload removed meanwhile goes now. */
static void after_answer(struct refresher *rf, struct cred *c)
{
	const struct provider_conf *p = c->conf->provider;

	rf->lane_at = min64(rf->lane_at,
			    lane_drain(rf, &rf->lanes[lane_of(rf, c)], p));
	if (E(rf, c)->leaving && !E(rf, c)->req && !E(rf, c)->at_store)
		answered_and_gone(rf, c);
}

/* Publish the outcome of @c's request (@voided: its record changed under
 * it), stored as @pr says. Takes @tok. */
static void finish(struct refresher *rf, struct cred *c,
		   struct oauth_result *res, struct token *tok, bool voided,
		   const struct persist_result *pr)
{
	struct rf_entry *e = E(rf, c);
	struct token *before = cred_current_token(c), *after;
	int64_t next, now;

	if (voided) {
		/* The record changed under the request: its result belongs
		 * to a refresh token that is no longer ours. */
		log_info("%s/%s: the stored record changed during the "
			 "request; asking again with the new one",
			 c->conf->tenant, c->conf->provider->name);
		token_unref(tok);
		release_lease(rf, c, false);
		cred_abandon_attempt(rf->t, c);
		token_unref(before);
		reschedule(rf, c);
		return;
	}

	release_lease(rf, c, pr->gen && !pr->err);
	next = cred_finish_attempt(rf->t, c, res, token_ref(tok),
				   pr->gen ? pr : NULL, plan_rand(&rf->rng));
	now = time_real_ms();
	if (tok)
		log_debug("%s/%s: refreshed, expires in %llds, next refresh in "
			  "%llds",
			  c->conf->tenant, c->conf->provider->name,
			  (long long)((tok->expires_ms - now) / 1000),
			  (long long)((next - now) / 1000));
	else if (next == INT64_MAX)
		log_error(
			"%s/%s: refresh token refused (%s): %s; revoked until "
			"a new one is added",
			c->conf->tenant, c->conf->provider->name,
			oauth_outcome_name(res->outcome), res->error);
	else
		log_warn("%s/%s: refresh failed (%s): %s; retry in %.1fs",
			 c->conf->tenant, c->conf->provider->name,
			 oauth_outcome_name(res->outcome), res->error,
			 (double)(next - now) / 1000.0);
	if (pr->gen && pr->err)
		log_error("%s/%s: cannot write generation %llu to the store: "
			  "%s; serving it from memory, retrying",
			  c->conf->tenant, c->conf->provider->name,
			  (unsigned long long)pr->gen, strerror(-pr->err));
	audit_refresh(rf, c, res, tok);
	if (pr->gen && pr->err)
		audit_persist(rf, c, pr);
	if (tok && rf->on_rotate)
		rf->on_rotate(rf->arg, c);
	after = cred_current_token(c);
	if (before && !after && rf->on_expire)
		rf->on_expire(rf->arg, c, before->gen); /* revoked */
	token_unref(after);
	token_unref(before);
	if (tok || res->outcome == OAUTH_INVALID_CLIENT)
		provider_client_error(rf, c, !tok, next);
	token_unref(tok);
	if (pr->gen && pr->err) {
		e->persist_tries = 1;
		e->persist_mono = time_mono_ms() + PERSIST_RETRY_MIN_MS;
	} else if (pr->gen) {
		e->persist_tries = 0;
		e->persist_mono = INT64_MAX;
	}
	reschedule(rf, c);
}

/* @c's answer @res to a request sent at @sent_ms. A store-backed one is
 * stored first, by the store worker (then finish() runs when it comes
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
		pthread_mutex_lock(&c->lock);
		voided = c->record_gen != c->flight_gen || !cred_present(c);
		pthread_mutex_unlock(&c->lock);
		j = voided || (!tok && res->outcome != OAUTH_INVALID_GRANT)
			    ? NULL
			    : job_new(RJ_WRITE, c);
		if (j) {
			j->res = *res; /* the job's now */
			memset(res, 0, sizeof(*res));
			j->tok = tok;
			j->sent_ms = sent_ms;
			submit(rf, j);
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
	finish(rf, c, res, tok, voided, &none);
	return false;
}

/* A lease outlives the request (timeout_s) and the write after it. */
#define LEASE_EXTRA_MS 10000
#define LEASE_BUSY_RETRY_MS 1000
#define STORE_DOWN_RETRY_MS 2000

static void send_request(struct refresher *rf, struct cred *c);

/*
 * What came of @c's lease (a store other daemons share): go on with the
 * request holding it; or, when another daemon rotated the record
 * meanwhile (now loaded), it is busy refreshing it, or the store cannot
 * be reached, put @c back for later.
 */
static void leased(struct refresher *rf, struct rf_job *j)
{
	struct cred *c = j->c;
	const struct provider_conf *p = c->conf->provider;
	char why[OAUTH_ERROR_TEXT];
	bool may_rotate, go;
	int r = j->lease;

	/* Unless the profile says the refresh token does not rotate, a
	 * refresh now could split its family with another daemon's. */
	may_rotate = p->rotates || !p->rotates_set;
	snprintf(why, sizeof(why), "the store cannot be reached (%s)%s",
		 j->words[0] ? j->words : "no answer",
		 may_rotate ? ": not refreshing, since the refresh token may "
			      "rotate and another daemon may be refreshing it"
			    : "");
	if (cred_store_reachable(rf->t, c, r != -EIO, why))
		log_warn("%s/%s: %s", c->conf->tenant, p->name, why);
	E(rf, c)->leased = r == 0 && !j->newer;
	/* With the store down, refreshing cannot split a token family that
	 * does not rotate. */
	go = E(rf, c)->leased || (r == -EIO && !may_rotate);
	if (go && !atomic_load(&rf->stop) && !E(rf, c)->leaving) {
		send_request(rf, c);
		return;
	}
	release_lease(rf, c, false);
	rf->lanes[lane_of(rf, c)].inflight--;
	if (j->newer || r == -ENOENT)
		log_debug("%s/%s: generation %llu in the store: %s",
			  c->conf->tenant, p->name,
			  (unsigned long long)j->lease_gen,
			  r ? "removed" : "another daemon refreshed it");
	else if (!go)
		/* -EBUSY: another daemon is refreshing it now. */
		cred_defer(rf->t, c,
			   r == -EBUSY ? LEASE_BUSY_RETRY_MS
				       : STORE_DOWN_RETRY_MS);
	reschedule(rf, c);
}

/* Start @c's turn: a store other daemons share is asked for its lease
 * first (by the store worker); then the request goes out. Its lane's
 * slot is taken from here on. */
static void start(struct refresher *rf, struct cred *c)
{
	const struct provider_conf *p = c->conf->provider;
	struct rf_job *j;

	rf->lanes[lane_of(rf, c)].inflight++;
	E(rf, c)->leased = false;
	if (cred_uses_store(c) && store_shared(rf->t->store)) {
		j = job_new(RJ_LEASE, c);
		if (j) {
			j->lease_ms = p->timeout_ms + LEASE_EXTRA_MS;
			submit(rf, j);
			return;
		}
		rf->lanes[lane_of(rf, c)].inflight--;
		cred_defer(rf->t, c, STORE_DOWN_RETRY_MS);
		reschedule(rf, c);
		return;
	}
	send_request(rf, c);
}

/* Send @c's token request (its lane's slot taken), or complete it as
 * failed if it cannot be built. */
static void send_request(struct refresher *rf, struct cred *c)
{
	const struct provider_conf *p = c->conf->provider;
	struct oauth_result res = {.retry_after_ms = -1};
	struct http_req *req = NULL;
	char *auth = NULL, *rt = NULL;
	enum cred_begin b;
	struct buf body;
	int r;

	b = cred_begin_attempt(c, &rt);
	if (b != CRED_BEGIN_OK) {
		release_lease(rf, c, false);
		rf->lanes[lane_of(rf, c)].inflight--;
	}
	if (b == CRED_BEGIN_BUSY)
		return;
	if (b == CRED_BEGIN_PARK) {
		reschedule(rf, c); /* nothing to ask with: parked */
		return;
	}
	r = cred_uses_store(c) && !rt ? -ENOMEM : 0;
	if (r == 0)
		r = oauth_build_request(c->conf, rt, &body, &auth);
	strfreezero(rt);
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
	rf->lanes[lane_of(rf, c)].inflight--;
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
			introspected(rf, c, req, msg->data.result);
			http_req_free(req);
			continue;
		}
		http_req_finish(req, c->conf->provider, msg->data.result,
				time_real_ms(), &res);
		E(rf, c)->req = NULL;
		http_req_free(req);
		l = &rf->lanes[lane_of(rf, c)];
		l->inflight--;
		if (res.outcome == OAUTH_RATE_LIMITED) {
			/* The provider's limit is the client's, not the
			 * credential's: hold them all. */
			int64_t hold = time_mono_ms() +
				       (res.retry_after_ms >= 0
						? res.retry_after_ms
						: c->conf->provider
							  ->backoff_initial_ms);

			if (hold > l->hold_mono)
				l->hold_mono = hold;
		}
		if (!complete(rf, c, &res, E(rf, c)->sent_ms))
			after_answer(rf, c);
		oauth_result_clear(&res);
	}
}

/* Take back what the store worker did, on the refresher's thread. */
static void jobs_done(struct refresher *rf)
{
	struct work *w, *list;

	list = rf->store ? worker_take_done(rf->store) : NULL;
	list = list_append(list, rf->inline_done);
	rf->inline_done = NULL;
	while ((w = list)) {
		struct rf_job *j = (struct rf_job *)w;
		struct cred *c = j->c;

		list = w->next;
		if (j->kind == RJ_UNLEASE) {
			job_free(j);
			continue;
		}
		rf->jobs--;
		if (!E(rf, c)) {
			/* Let go meanwhile (refresher_free()): what was
			 * written stays in the store, for the next one. */
			job_free(j);
			continue;
		}
		E(rf, c)->at_store = false;
		switch (j->kind) {
		case RJ_LEASE: leased(rf, j); break;
		case RJ_RETRY: retried(rf, j); break;
		default:
			finish(rf, c, &j->res, j->tok, j->voided, &j->pr);
			j->tok = NULL; /* taken */
			break;
		}
		E(rf, c)->kicked = false;
		job_free(j);
		after_answer(rf, c);
	}
}

/* Requests in flight and store jobs out: what a stop waits for. */
static unsigned busy(const struct refresher *rf)
{
	return in_flight(rf) + rf->jobs;
}

/* Stopping: what the requests in flight left unwritten gets one more
 * try, and whatever did not come back is said. */
static void heap_remove(struct refresher *rf, struct cred *c);

static void finish_stop(struct refresher *rf, int64_t since)
{
	unsigned slot = cred_table_enter(rf->t);
	const struct config *cfg = rf->t->cfg;
	size_t i;

	/* What the store worker has left, then the retries, here. */
	worker_stop(rf->store);
	jobs_done(rf);
	for (i = 0; i < cfg->n_creds; i++) {
		struct cred *c = cred_of(rf->t, &cfg->creds[i]);

		if (E(rf, c) && E(rf, c)->persist_mono != INT64_MAX &&
		    E(rf, c)->heap_idx != NOT_IN_HEAP) {
			pthread_mutex_lock(&rf->lock);
			heap_remove(rf, c);
			pthread_mutex_unlock(&rf->lock);
			persist_retry(rf, c);
		}
	}
	jobs_done(rf);
	cred_table_exit(rf->t, slot);
	if (in_flight(rf))
		log_error("stopping: %u token requests still unanswered after "
			  "%.1fs; a provider that rotates refresh tokens may "
			  "see the next refresh as a reuse",
			  in_flight(rf), (double)(time_mono_ms() - since) / 1e3);
	else if (since)
		log_info("stopping: every answer in flight is in (%.1fs)",
			 (double)(time_mono_ms() - since) / 1e3);
}

/* Room for one more in the heap. Under rf->lock. */
static int heap_room(struct refresher *rf)
{
	struct cred **h;
	size_t cap;

	if (rf->n < rf->heap_cap)
		return 0;
	cap = rf->heap_cap ? 2 * rf->heap_cap : 64;
	h = realloc(rf->heap, cap * sizeof(*h));
	if (!h)
		return -ENOMEM;
	rf->heap = h;
	rf->heap_cap = cap;
	return 0;
}

/* Take @c out of the heap. Under rf->lock. */
static void heap_remove(struct refresher *rf, struct cred *c)
{
	size_t i = E(rf, c)->heap_idx;

	E(rf, c)->heap_idx = NOT_IN_HEAP;
	if (i == NOT_IN_HEAP)
		return;
	if (i != --rf->n) {
		rf->heap[i] = rf->heap[rf->n];
		E(rf, rf->heap[i])->heap_idx = i;
		heap_fix(rf, rf->heap[i]);
	}
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

	if (!e || lanes_room(rf, lane_of(rf, c) + 1) < 0) {
		free(e);
		return -ENOMEM;
	}
	e->persist_mono = INT64_MAX;
	e->introspect_mono = INT64_MAX;
	e->heap_idx = NOT_IN_HEAP;
	pthread_mutex_lock(&c->lock);
	pthread_mutex_lock(&rf->lock);
	r = heap_room(rf);
	if (r == 0) {
		c->entry = e;
		plan_locked(rf, c);
		heap_push(rf, c);
	}
	pthread_mutex_unlock(&rf->lock);
	pthread_mutex_unlock(&c->lock);
	if (r < 0)
		free(e);
	return r;
}

/* Let @c go: out of the heap and its lane, its requests abandoned, its
 * entry freed. The refresher thread's (or before or after it runs). */
static void let_go(struct refresher *rf, struct cred *c)
{
	struct lane *l = &rf->lanes[lane_of(rf, c)];
	struct rf_entry *e = E(rf, c);
	struct cred **p;

	pthread_mutex_lock(&rf->lock);
	heap_remove(rf, c);
	pthread_mutex_unlock(&rf->lock);
	for (p = &l->head; *p; p = &E(rf, *p)->wait_next)
		if (*p == c) {
			*p = e->wait_next;
			break;
		}
	for (l->tail = l->head; l->tail && E(rf, l->tail)->wait_next;
	     l->tail = E(rf, l->tail)->wait_next)
		;
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
	release_lease(rf, c, false);
	pthread_mutex_lock(&rf->lock);
	c->entry = NULL;
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
				  ch->added[i]->conf->tenant,
				  ch->added[i]->conf->provider->name);
}

/* The refresher thread, with rf->lock held (dropped meanwhile): take on
 * and let go what reloads asked for. */
static void take_changes(struct refresher *rf)
{
	struct change *list = rf->changes, *ch;

	rf->changes = NULL;
	pthread_mutex_unlock(&rf->lock);
	for (ch = list; ch; ch = ch->next)
		change_run(rf, ch, true);
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
	if (!ch.done)
		change_run(rf, &ch, false); /* no thread runs: ours to do */
}

static void *run(void *arg)
{
	struct refresher *rf = arg;
	const struct config *cfg;
	int64_t wait_ms, stop_seen = 0;
	unsigned slot;
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
		slot = cred_table_enter(rf->t);
		while (!stopping && rf->n && E(rf, rf->heap[0])->due_mono <= now) {
			struct cred *c = heap_pop(rf);

			if (E(rf, c)->persist_mono <= now) {
				pthread_mutex_unlock(&rf->lock);
				persist_retry(rf, c); /* back from the store */
				pthread_mutex_lock(&rf->lock);
				continue;
			}
			if (E(rf, c)->introspect_mono <= now) {
				pthread_mutex_unlock(&rf->lock);
				introspect(rf, c);
				pthread_mutex_lock(&rf->lock);
				heap_push(rf, c);
				continue;
			}
			if (E(rf, c)->attempt_mono > now) {
				/* An expiry event, not a request. */
				E(rf, c)->expiry_mono = INT64_MAX;
				heap_push(rf, c);
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
			lane_push(rf, &rf->lanes[lane_of(rf, c)], c);
		}
		cfg = rf->t->cfg; /* a reload may have replaced it */
		rf->lane_at = INT64_MAX;
		for (i = 0; i < cfg->n_providers; i++)
			if (cfg->providers[i].slot < rf->n_lanes)
				rf->lane_at = min64(
					rf->lane_at,
					lane_drain(rf,
						   &rf->lanes[cfg->providers[i]
								      .slot],
						   &cfg->providers[i]));
		curl_multi_perform(rf->multi, &running);
		reap(rf);
		jobs_done(rf);
		if (rf->beat)
			rf->beat(rf->beat_arg);

		cred_table_exit(rf->t, slot);
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
	if (!rf->multi || grow(rf, t->cfg, t->cfg->n_creds) < 0 ||
	    (t->store &&
	     worker_new(rf_store_run, t, wake, rf, &rf->store) < 0)) {
		refresher_free(rf);
		return -ENOMEM;
	}
	if (getrandom(&rf->rng, sizeof(rf->rng), 0) != sizeof(rf->rng) ||
	    !rf->rng)
		rf->rng = (uint64_t)now | 1;
	for (i = 0; i < t->cfg->n_creds; i++) {
		if (take_on(rf, cred_of(t, &t->cfg->creds[i])) < 0) {
			refresher_free(rf);
			return -ENOMEM;
		}
	}
	t->kick = kick;
	t->replan = replan;
	t->apply = apply;
	t->kick_arg = rf;
	*out = rf;
	return 0;
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
	int64_t ms = 0;
	size_t i;

	for (i = 0; i < t->cfg->n_providers; i++)
		if (t->cfg->providers[i].timeout_ms > ms)
			ms = t->cfg->providers[i].timeout_ms;
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
	jobs_done(rf);
	rf->t->kick = NULL;
	rf->t->replan = NULL;
	rf->t->apply = NULL;
	n = atomic_load(&rf->t->n_slots);
	for (i = 0; i < n; i++) {
		struct cred *c = cred_at(rf->t, i);

		if (c && E(rf, c))
			let_go(rf, c);
	}
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
