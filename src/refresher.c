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
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <curl/curl.h>

#include "audit.h"
#include "config.h"
#include "cred.h"
#include "http.h"
#include "log.h"
#include "oauth.h"
#include "refresher.h"
#include "plan.h"
#include "util.h"

#define NOT_IN_HEAP SIZE_MAX
#define IDLE_WAIT_MS (60 * 1000)

struct lane {
	unsigned inflight;
	struct cred *head, *tail; /* waiting for a free slot */
};

struct refresher {
	struct cred_table *t;
	refresher_rotate_fn on_rotate;
	refresher_expire_fn on_expire;
	void *arg;
	CURLM *multi;
	struct lane *lanes; /* one per provider */
	uint64_t rng;
	bool started;

	pthread_t thread;
	pthread_mutex_t lock; /* heap and stop */
	struct cred **heap;
	size_t n;
	bool stop;
};

static bool due_before(const struct cred *a, const struct cred *b)
{
	return a->due_mono < b->due_mono;
}

static void heap_swap(struct refresher *rf, size_t i, size_t j)
{
	struct cred *c = rf->heap[i];

	rf->heap[i] = rf->heap[j];
	rf->heap[j] = c;
	rf->heap[i]->heap_idx = i;
	rf->heap[j]->heap_idx = j;
}

static void heap_up(struct refresher *rf, size_t i)
{
	while (i > 0 && due_before(rf->heap[i], rf->heap[(i - 1) / 2])) {
		heap_swap(rf, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void heap_down(struct refresher *rf, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < rf->n && due_before(rf->heap[l], rf->heap[m]))
			m = l;
		if (r < rf->n && due_before(rf->heap[r], rf->heap[m]))
			m = r;
		if (m == i)
			return;
		heap_swap(rf, i, m);
		i = m;
	}
}

/* Insert @c keyed by the earlier of its next request and its expiry. */
static void heap_push(struct refresher *rf, struct cred *c)
{
	int64_t due = c->attempt_mono < c->expiry_mono ? c->attempt_mono
						       : c->expiry_mono;

	c->due_mono = due;
	c->heap_idx = rf->n;
	rf->heap[rf->n++] = c;
	heap_up(rf, c->heap_idx);
}

static struct cred *heap_pop(struct refresher *rf)
{
	struct cred *c = rf->heap[0];

	rf->n--;
	if (rf->n) {
		rf->heap[0] = rf->heap[rf->n];
		rf->heap[0]->heap_idx = 0;
		heap_down(rf, 0);
	}
	c->heap_idx = NOT_IN_HEAP;
	return c;
}

/* Called from open() with the credential's lock held (cred -> refresher). */
static void kick(void *arg, struct cred *c)
{
	struct refresher *rf = arg;
	int64_t now = time_mono_ms();

	pthread_mutex_lock(&rf->lock);
	/* Not in the heap means it is queued or in flight already. */
	if (c->heap_idx != NOT_IN_HEAP && c->attempt_mono > now) {
		c->attempt_mono = now;
		c->due_mono = now;
		heap_up(rf, c->heap_idx);
	}
	pthread_mutex_unlock(&rf->lock);
	curl_multi_wakeup(rf->multi);
}

static size_t lane_of(struct refresher *rf, const struct cred *c)
{
	return (size_t)(c->conf->provider - rf->t->cfg->providers);
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

/* Plan the expiry event of @c's new token @tok (refresher thread). */
static void arm_expiry(struct cred *c, const struct token *tok)
{
	c->expiry_gen = tok->gen;
	c->expiry_mono =
		time_mono_ms() + (cred_token_deadline(c, tok) - time_real_ms());
}

/* The expiry of @c's token came before a new one: tell the filesystem. */
static void expired(struct refresher *rf, struct cred *c)
{
	struct token *tok = cred_current_token(c);

	if (tok && tok->gen == c->expiry_gen) {
		log_warn("%s/%s: token expired with no successor",
			 c->conf->tenant, c->conf->provider->name);
		if (rf->on_expire)
			rf->on_expire(rf->arg, c, tok->gen);
	}
	token_unref(tok);
}

static void complete(struct refresher *rf, struct cred *c,
		     struct oauth_result *res, int64_t sent_ms)
{
	struct token *tok = NULL;
	int64_t next, now;
	bool rotated;

	next = cred_finish_attempt(rf->t, c, res, sent_ms, plan_rand(&rf->rng),
				   &rotated);
	now = time_real_ms();
	if (rotated)
		log_debug("%s/%s: refreshed, expires in %llds, next refresh in "
			  "%llds",
			  c->conf->tenant, c->conf->provider->name,
			  (long long)(res->tok.expires_in_ms >= 0
					      ? res->tok.expires_in_ms / 1000
					      : -1),
			  (long long)((next - now) / 1000));
	else
		log_warn("%s/%s: refresh failed (%s): %s; retry in %.1fs",
			 c->conf->tenant, c->conf->provider->name,
			 oauth_outcome_name(res->outcome), res->error,
			 (double)(next - now) / 1000.0);
	if (rotated)
		tok = cred_current_token(c); /* only this thread publishes */
	audit_refresh(rf, c, res, tok);
	if (tok && rf->on_rotate)
		rf->on_rotate(rf->arg, c);
	if (tok)
		arm_expiry(c, tok);
	token_unref(tok);

	pthread_mutex_lock(&rf->lock);
	c->attempt_mono = time_mono_ms() + (next - now);
	heap_push(rf, c);
	pthread_mutex_unlock(&rf->lock);
}

/* Send @c's token request, or complete it as failed if it cannot be built. */
static void start(struct refresher *rf, struct cred *c)
{
	const struct provider_conf *p = c->conf->provider;
	struct oauth_result res = {.retry_after_ms = -1};
	struct http_req *req = NULL;
	char *auth = NULL;
	struct buf body;
	int r;

	if (!cred_begin_attempt(c))
		return;
	rf->lanes[lane_of(rf, c)].inflight++;
	r = oauth_build_request(c->conf, NULL, &body, &auth);
	if (r == 0)
		r = http_req_new(p->token_url, &body, auth, p->timeout_ms,
				 p->max_response_bytes, c, &req);
	if (r == 0) {
		c->sent_ms = time_real_ms();
		if (curl_multi_add_handle(rf->multi, http_req_easy(req)) ==
		    CURLM_OK) {
			c->req = req;
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

static void lane_push(struct lane *l, struct cred *c)
{
	c->wait_next = NULL;
	if (l->tail)
		l->tail->wait_next = c;
	else
		l->head = c;
	l->tail = c;
}

static void lane_drain(struct refresher *rf, struct lane *l,
		       const struct provider_conf *p)
{
	while (l->head && l->inflight < p->max_concurrency) {
		struct cred *c = l->head;

		l->head = c->wait_next;
		if (!l->head)
			l->tail = NULL;
		c->wait_next = NULL;
		start(rf, c);
	}
}

static void reap(struct refresher *rf)
{
	struct oauth_result res;
	struct http_req *req;
	struct cred *c;
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(rf->multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &req);
		http_req_finish(req, msg->data.result, time_real_ms(), &res);
		curl_multi_remove_handle(rf->multi, msg->easy_handle);
		c = http_req_user(req);
		c->req = NULL;
		http_req_free(req);
		rf->lanes[lane_of(rf, c)].inflight--;
		complete(rf, c, &res, c->sent_ms);
		oauth_result_clear(&res);
		lane_drain(rf, &rf->lanes[lane_of(rf, c)], c->conf->provider);
	}
}

static void *run(void *arg)
{
	struct refresher *rf = arg;
	const struct config *cfg = rf->t->cfg;
	int64_t wait_ms;
	int running;
	size_t i;

	pthread_mutex_lock(&rf->lock);
	while (!rf->stop) {
		struct cred *due = NULL, **tail = &due;
		int64_t now = time_mono_ms();

		while (rf->n && rf->heap[0]->due_mono <= now) {
			struct cred *c = heap_pop(rf);

			if (c->attempt_mono > now) {
				/* An expiry event, not a request. */
				c->expiry_mono = INT64_MAX;
				heap_push(rf, c);
				*tail = NULL;
				pthread_mutex_unlock(&rf->lock);
				expired(rf, c);
				pthread_mutex_lock(&rf->lock);
				continue;
			}
			*tail = c;
			tail = &c->wait_next;
		}
		*tail = NULL;
		pthread_mutex_unlock(&rf->lock);

		while (due) {
			struct cred *c = due;

			due = c->wait_next;
			lane_push(&rf->lanes[lane_of(rf, c)], c);
		}
		for (i = 0; i < cfg->n_providers; i++)
			lane_drain(rf, &rf->lanes[i], &cfg->providers[i]);
		curl_multi_perform(rf->multi, &running);
		reap(rf);

		pthread_mutex_lock(&rf->lock);
		wait_ms = rf->n ? rf->heap[0]->due_mono - time_mono_ms()
				: IDLE_WAIT_MS;
		if (wait_ms <= 0 || rf->stop)
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
	return NULL;
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
	rf->heap = calloc(t->n + 1, sizeof(*rf->heap));
	rf->lanes = calloc(t->cfg->n_providers + 1, sizeof(*rf->lanes));
	rf->multi = curl_multi_init();
	if (!rf->heap || !rf->lanes || !rf->multi) {
		refresher_free(rf);
		return -ENOMEM;
	}
	if (getrandom(&rf->rng, sizeof(rf->rng), 0) != sizeof(rf->rng) ||
	    !rf->rng)
		rf->rng = (uint64_t)now | 1;
	for (i = 0; i < t->n; i++) {
		t->creds[i].attempt_mono = now;
		t->creds[i].expiry_mono = INT64_MAX;
		heap_push(rf, &t->creds[i]);
	}
	t->kick = kick;
	t->kick_arg = rf;
	*out = rf;
	return 0;
}

int refresher_start(struct refresher *rf)
{
	int r = pthread_create(&rf->thread, NULL, run, rf);

	if (r)
		return -r;
	rf->started = true;
	return 0;
}

void refresher_free(struct refresher *rf)
{
	size_t i;

	if (!rf)
		return;
	if (rf->started) {
		pthread_mutex_lock(&rf->lock);
		rf->stop = true;
		pthread_mutex_unlock(&rf->lock);
		curl_multi_wakeup(rf->multi);
		pthread_join(rf->thread, NULL);
	}
	rf->t->kick = NULL;
	for (i = 0; rf->multi && i < rf->t->n; i++) {
		struct cred *c = &rf->t->creds[i];

		if (!c->req)
			continue;
		/* Abandoned mid-flight: openers still waiting time out. */
		curl_multi_remove_handle(rf->multi, http_req_easy(c->req));
		http_req_free(c->req);
		c->req = NULL;
	}
	if (rf->multi)
		curl_multi_cleanup(rf->multi);
	free(rf->heap);
	free(rf->lanes);
	pthread_mutex_destroy(&rf->lock);
	free(rf);
}
