/*
 * cred: credential state, token generations and the freshness rule (the
 * table they live in, and the configuration's lifetime, are
 * cred_table.c's).
 *
 * Lock order: a credential's lock may be held while the refresher's lock is
 * taken (through the kick callback), never the other way round.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "cred.h"
#include "cred_int.h"
#include "jwt.h"
#include "log.h"
#include "tree.h"
#include "store.h"
#include "plan.h"
#include "record.h"
#include "util.h"

const char *cred_state_name(enum cred_state s)
{
	switch (s) {
	case CRED_PENDING: return "pending";
	case CRED_VALID: return "valid";
	case CRED_REFRESHING: return "refreshing";
	case CRED_EXPIRED: return "expired";
	case CRED_ERROR: return "error";
	case CRED_REVOKED: return "revoked";
	case CRED_CLIENT_ERROR: return "client_error";
	case CRED_ABSENT: return "absent";
	case CRED_STATE_COUNT: break;
	}
	return "unknown";
}

struct token *token_ref(struct token *tok)
{
	if (tok)
		atomic_fetch_add_explicit(&tok->refs, 1, memory_order_relaxed);
	return tok;
}

void token_unref(struct token *tok)
{
	if (!tok ||
	    atomic_fetch_sub_explicit(&tok->refs, 1, memory_order_acq_rel) != 1)
		return;
	free(tok->type);
	free(tok->scopes);
	free(tok->over);
	for (size_t i = 0; i < tok->n_fields; i++)
		free(tok->fields[i]);
	free(tok->fields);
	freezero(tok, sizeof(*tok) + tok->len + 1);
}

uint32_t cred_index(const struct cred *c)
{
	return c->index;
}

struct rf_entry *cred_entry(const struct cred *c)
{
	return c->entry;
}

void cred_set_entry(struct cred *c, struct rf_entry *e)
{
	c->entry = e;
}

void cred_set_live(struct cred *c, bool live)
{
	atomic_store_explicit(&c->live, live, memory_order_release);
}

uint64_t cred_version(struct cred *c)
{
	uint64_t v;

	pthread_mutex_lock(&c->lock);
	v = c->version;
	pthread_mutex_unlock(&c->lock);
	return v;
}

void cred_count_open(struct cred *c, bool served)
{
	atomic_fetch_add(served ? &c->reads : &c->open_errors, 1);
}

/* Nothing to ask with until a record arrives: no record, revoked, or no
 * refresh token. With @c's lock held. */
static bool parked_locked(const struct cred *c)
{
	return !cred_present(c) || c->revoked ||
	       (c->uses_store && !c->refresh_token);
}

/* @c's plan, with its lock held. */
static void plan_of_locked(const struct cred *c, struct cred_plan *p)
{
	p->parked = parked_locked(c);
	p->next_refresh_ms = c->next_refresh_ms;
	p->gen = c->cur ? c->cur->gen : 0;
	p->deadline_ms = c->cur ? cred_token_deadline(c, c->cur) : INT64_MAX;
	p->unpersisted = c->record_gen > c->durable_gen;
}

void cred_with_plan(struct cred *c,
		    void (*fn)(void *arg, struct cred *c,
			       const struct cred_plan *p),
		    void *arg)
{
	struct cred_plan p;

	pthread_mutex_lock(&c->lock);
	plan_of_locked(c, &p);
	fn(arg, c, &p);
	pthread_mutex_unlock(&c->lock);
}

uint64_t cred_record_gen(struct cred *c)
{
	uint64_t g;

	pthread_mutex_lock(&c->lock);
	g = c->record_gen;
	pthread_mutex_unlock(&c->lock);
	return g;
}

bool cred_flight_voided(struct cred *c)
{
	bool v;

	pthread_mutex_lock(&c->lock);
	v = c->record_gen != c->flight_gen || !cred_present(c);
	pthread_mutex_unlock(&c->lock);
	return v;
}

void cred_store_state(struct cred *c, struct cred_store_state *s)
{
	pthread_mutex_lock(&c->lock);
	s->present = cred_present(c);
	s->has_refresh_token = c->refresh_token != NULL;
	s->revoked = c->revoked;
	s->record_gen = c->record_gen;
	s->durable_gen = c->durable_gen;
	pthread_mutex_unlock(&c->lock);
}

int cred_next_record(struct cred *c, const struct oauth_token *ot,
		     struct token **tok, struct record *r, uint64_t *expect)
{
	const char *new_rt = ot ? ot->refresh_token : NULL;
	int ret = 0;

	pthread_mutex_lock(&c->lock);
	if (!cred_present(c) || (!c->refresh_token && !new_rt && !c->revoked)) {
		ret = -ECANCELED;
		goto out;
	}
	r->generation = c->record_gen + 1;
	*expect = c->durable_gen;
	if (c->revoked && !new_rt) {
		/* Kept so that no daemon presents the dead token again; the
		 * registered client stays, for the next connect. */
		r->revoked =
			strdup(c->last_error ? c->last_error : "invalid_grant");
		ret = r->revoked ? record_client_copy(&r->client, &c->client)
				 : -ENOMEM;
		goto out;
	}
	if (!*tok)
		*tok = token_ref(c->cur);
	r->refresh_token = strdup(new_rt ? new_rt : c->refresh_token);
	if (r->refresh_token &&
	    record_client_copy(&r->client, &c->client) < 0) {
		strfreezero(r->refresh_token);
		r->refresh_token = NULL;
	}
	r->rt_expires_ms =
		ot && *tok ? cred_rt_expiry(cred_conf(c)->provider, ot,
					    (*tok)->issued_ms, c->rt_expires_ms)
			   : c->rt_expires_ms;
	if (!r->refresh_token)
		ret = -ENOMEM;
out:
	pthread_mutex_unlock(&c->lock);
	return ret;
}

int cred_client(struct cred *c, struct record_client *client)
{
	int r;

	pthread_mutex_lock(&c->lock);
	r = record_client_copy(client, &c->client);
	pthread_mutex_unlock(&c->lock);
	return r;
}

bool cred_present(const struct cred *c)
{
	return atomic_load_explicit(&c->present, memory_order_acquire);
}

bool cred_uses_store(const struct cred *c)
{
	return c->uses_store;
}

static bool wait_until(struct cred *c, int64_t deadline);

/* @c changed in a way an opener may wait for: wake the blocked ones and
 * tell the filesystem's waiting opens. With @c's lock held. */
static void wake_locked(struct cred_table *t, struct cred *c)
{
	pthread_cond_broadcast(&c->cond);
	if (t->wake)
		t->wake(t->wake_arg);
}

/* Nothing more to wait for: an answer, a token, or nothing to ask with. */
static bool answered_locked(const struct cred *c)
{
	return c->attempts || c->cur || parked_locked(c);
}

bool cred_wait_answered(struct cred_table *t, struct cred *c, int64_t deadline)
{
	bool done;

	pthread_mutex_lock(&c->lock);
	while (!answered_locked(c) && !atomic_load(&t->stopping) &&
	       wait_until(c, deadline))
		;
	done = answered_locked(c);
	pthread_mutex_unlock(&c->lock);
	return done;
}

uint64_t cred_refresh_now(struct cred_table *t, struct cred *c)
{
	uint64_t target;

	pthread_mutex_lock(&c->lock);
	/* One in flight went out before the operator's fix: its answer,
	 * then one of our own (cred_refresh_wait() sends it). */
	target = c->attempts + (c->in_flight ? 2 : 1);
	if (!c->in_flight && !parked_locked(c) && t->kick)
		t->kick(t->kick_arg, c);
	pthread_mutex_unlock(&c->lock);
	return target;
}

int cred_refresh_wait(struct cred_table *t, struct cred *c, uint64_t target,
		      int64_t deadline)
{
	int r = 0;

	pthread_mutex_lock(&c->lock);
	while (c->attempts < target && !parked_locked(c) &&
	       !atomic_load(&t->stopping)) {
		if (!c->in_flight && t->kick)
			t->kick(t->kick_arg, c);
		if (!wait_until(c, deadline))
			break;
	}
	if (parked_locked(c))
		r = -ENOKEY;
	else if (c->attempts < target)
		r = -ETIMEDOUT;
	pthread_mutex_unlock(&c->lock);
	return r;
}

bool cred_wait_token(struct cred_table *t, struct cred *c, int64_t deadline)
{
	uint64_t seen;
	bool have;

	pthread_mutex_lock(&c->lock);
	seen = c->attempts;
	if (!c->cur && t->kick)
		t->kick(t->kick_arg, c);
	while (!c->cur && c->attempts == seen && cred_present(c) &&
	       !c->revoked && !atomic_load(&t->stopping) &&
	       wait_until(c, deadline))
		;
	have = c->cur != NULL;
	pthread_mutex_unlock(&c->lock);
	return have;
}

size_t cred_table_wait_answered(struct cred_table *t, int64_t deadline)
{
	uint32_t i, n = atomic_load(&t->n_slots);
	size_t pending = 0;

	/* No section held while waiting: only the live flag and the grant
	 * (a slot's, for good) are read, never the configuration. */
	for (i = 0; i < n; i++) {
		struct cred *c = cred_at(t, i);

		if (c && cred_live(c))
			pending += !cred_wait_answered(t, c, deadline);
	}
	return pending;
}

void cred_table_stop_waits(struct cred_table *t)
{
	uint32_t i, n = atomic_load(&t->n_slots);

	atomic_store(&t->stopping, true);
	for (i = 0; i < n; i++) {
		struct cred *c = cred_at(t, i);

		if (!c)
			continue;
		pthread_mutex_lock(&c->lock);
		pthread_cond_broadcast(&c->cond);
		pthread_mutex_unlock(&c->lock);
	}
}

static int64_t lifetime_of(const struct token *tok)
{
	return tok->expires_ms - tok->issued_ms;
}

int64_t cred_token_deadline(const struct cred *c, const struct token *tok)
{
	return tok->expires_ms -
	       plan_skew_ms(&cred_conf(c)->timing, lifetime_of(tok));
}

static bool token_expired(const struct cred *c, const struct token *tok,
			  int64_t now)
{
	return now >= cred_token_deadline(c, tok);
}

int64_t cred_token_fresh_until(const struct cred *c, const struct token *tok)
{
	/* Fresh: unexpired, with at least the effective min_ttl left. */
	int64_t deadline = cred_token_deadline(c, tok),
		fresh = tok->expires_ms + 1 -
			plan_min_ttl_ms(&cred_conf(c)->timing,
					lifetime_of(tok));

	return fresh < deadline ? fresh : deadline;
}

static bool token_fresh(const struct cred *c, const struct token *tok,
			int64_t now)
{
	return now < cred_token_fresh_until(c, tok);
}

static enum cred_state state_locked(const struct cred *c, int64_t now)
{
	if (!cred_present(c))
		return CRED_ABSENT;
	if (c->revoked)
		return CRED_REVOKED;
	if (c->client_error)
		return CRED_CLIENT_ERROR;
	if (!c->cur)
		return c->consecutive_failures ? CRED_ERROR : CRED_PENDING;
	if (token_expired(c, c->cur, now))
		return CRED_EXPIRED;
	return c->in_flight ? CRED_REFRESHING : CRED_VALID;
}

/* When @c's refresh token stops working, as far as is known: the known
 * expiry, or an idle limit counted from the last refresh. 0: unknown. */
static int64_t rt_expiry_locked(const struct cred *c)
{
	const struct provider_conf *p = cred_conf(c)->provider;
	int64_t e = c->rt_expires_ms, idle;

	if (!cred_uses_store(c))
		return 0;
	idle = p->rt_idle_ms && c->last_refresh_ms
		       ? c->last_refresh_ms + p->rt_idle_ms
		       : 0;
	return !e || (idle && idle < e) ? idle : e;
}

void cred_view(struct cred *c, int64_t now_ms, struct cred_view *v)
{
	memset(v, 0, sizeof(*v));
	pthread_mutex_lock(&c->lock);
	v->state = state_locked(c, now_ms);
	if (c->cur) {
		v->has_token = true;
		v->gen = c->cur->gen;
		v->issued_ms = c->cur->issued_ms;
		v->expires_ms = c->cur->expires_ms;
		v->token_len = c->cur->len;
		snprintf(v->token_type, sizeof(v->token_type), "%s",
			 c->cur->type);
		memcpy(v->fp, c->cur->fp, sizeof(v->fp));
		v->aud_ok = c->cur->aud_ok;
		memcpy(v->aud_other, c->cur->aud_other, sizeof(v->aud_other));
		v->floored_from_ms = c->cur->floored_from_ms;
		v->scopes = strdup(c->cur->scopes);
		v->over = c->cur->over ? strdup(c->cur->over) : NULL;
		for (size_t i = 0;
		     i < c->cur->n_fields && i < MAX_RESPONSE_FIELDS; i++)
			if (c->cur->fields[i])
				v->fields[i] = strdup(c->cur->fields[i]);
	}
	v->refresh_count = c->refresh_count;
	v->failure_count = c->failure_count;
	v->consecutive_failures = c->consecutive_failures;
	v->last_refresh_ms = c->last_refresh_ms;
	v->next_refresh_ms = c->next_refresh_ms;
	v->last_error_ms = c->last_error_ms;
	snprintf(v->last_error, sizeof(v->last_error), "%s",
		 text_of(c->last_error));
	v->record_gen = c->record_gen;
	v->durable_gen = c->durable_gen;
	v->persist_failures = c->persist_failures;
	v->persist_error_ms = c->persist_error_ms;
	snprintf(v->persist_error, sizeof(v->persist_error), "%s",
		 text_of(c->persist_error));
	v->rt_expires_ms = rt_expiry_locked(c);
	v->version = c->version;
	pthread_mutex_unlock(&c->lock);
	v->reads = atomic_load_explicit(&c->reads, memory_order_relaxed);
	v->open_errors =
		atomic_load_explicit(&c->open_errors, memory_order_relaxed);
}

void cred_view_clear(struct cred_view *v)
{
	free(v->scopes);
	free(v->over);
	v->scopes = NULL;
	v->over = NULL;
	for (size_t i = 0; i < MAX_RESPONSE_FIELDS; i++) {
		free(v->fields[i]);
		v->fields[i] = NULL;
	}
}

struct token *cred_current_token(struct cred *c)
{
	struct token *tok;

	pthread_mutex_lock(&c->lock);
	tok = token_ref(c->cur);
	pthread_mutex_unlock(&c->lock);
	return tok;
}

/* Wait on @c->cond until @deadline (monotonic ms); false on timeout. */
static bool wait_until(struct cred *c, int64_t deadline)
{
	struct timespec ts = {
		.tv_sec = deadline / 1000,
		.tv_nsec = (deadline % 1000) * 1000000,
	};

	return pthread_cond_timedwait(&c->cond, &c->lock, &ts) != ETIMEDOUT;
}

static uint32_t gen_of(const struct token *tok)
{
	return tok ? (uint32_t)tok->gen : 0;
}

int cred_token_of_gen(struct cred *c, uint32_t gen32, struct token **out)
{
	int r = 0;

	*out = NULL;
	pthread_mutex_lock(&c->lock);
	if (c->cur && gen_of(c->cur) == gen32)
		*out = token_ref(c->cur);
	else if (c->prev && gen_of(c->prev) == gen32)
		*out = token_ref(c->prev);
	else if (gen32 != 0)
		r = -ESTALE;
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* The open rule's answer for @c's current token @tok at @now, once no
 * wait is due (any more). With @c's lock held. */
static int open_answer_locked(struct cred *c, struct token *tok, int64_t now,
			      struct token **out)
{
	if (tok && !token_expired(c, tok, now)) {
		*out = token_ref(tok);
		return 0;
	}
	if (c->revoked || !cred_present(c))
		return c->revoked ? -EKEYREVOKED : -ENOENT; /* while waiting */
	if (c->client_error)
		return -EKEYREJECTED;
	return tok ? -EKEYEXPIRED : -EAGAIN;
}

int cred_open_begin(struct cred_table *t, struct cred *c, uint32_t gen,
		    struct token **out, struct cred_wait *w)
{
	struct token *tok;
	int64_t now;
	bool usable;
	int r = 0;

	*out = NULL;
	memset(w, 0, sizeof(*w));
	pthread_mutex_lock(&c->lock);
	if (!cred_present(c) || c->revoked) {
		r = c->revoked ? -EKEYREVOKED : -ENOENT;
		goto out;
	}
	now = time_real_ms();
	tok = c->cur;
	if (gen_of(tok) != gen) {
		/* Opened through a name looked up before a rotation. */
		if (c->prev && gen_of(c->prev) == gen &&
		    token_fresh(c, c->prev, now))
			*out = token_ref(c->prev);
		else
			r = -ESTALE;
		goto out;
	}
	if (tok && token_fresh(c, tok, now)) {
		*out = token_ref(tok);
		goto out;
	}

	/*
	 * Too close to expiry, or no token. While the provider is healthy,
	 * wait for the one refresh (starting it if none is in flight); while
	 * it fails, wait only if nothing usable is left and a retry is
	 * already in flight. Either way reads never add requests of their own
	 * beyond that single flight.
	 */
	usable = tok && !token_expired(c, tok, now);
	if (c->consecutive_failures == 0 || (c->in_flight && !usable)) {
		if (c->waiting >= CRED_MAX_WAITING) {
			r = -EAGAIN; /* enough openers wait for this one */
			goto out;
		}
		c->waiting++;
		w->tok = token_ref(tok);
		w->seen = c->attempts;
		w->deadline =
			time_mono_ms() + cred_conf(c)->timing.open_wait_ms;
		w->active = true;
		if (!c->in_flight && t->kick)
			t->kick(t->kick_arg, c);
		r = -EINPROGRESS;
		goto out;
	}
	r = open_answer_locked(c, tok, now, out);
out:
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* Whether @w has seen what it waits for: an answer, a new generation, the
 * credential gone. With @c's lock held. */
static bool wait_over_locked(const struct cred *c, const struct cred_wait *w)
{
	return c->attempts != w->seen || c->cur != w->tok || !cred_present(c);
}

int cred_open_resume(struct cred *c, struct cred_wait *w, struct token **out)
{
	int r;

	*out = NULL;
	pthread_mutex_lock(&c->lock);
	if (!wait_over_locked(c, w) && time_mono_ms() < w->deadline) {
		pthread_mutex_unlock(&c->lock);
		return -EINPROGRESS;
	}
	if (c->cur != w->tok)
		r = -ESTALE; /* a new generation: look it up */
	else
		r = open_answer_locked(c, w->tok, time_real_ms(), out);
	c->waiting--;
	w->active = false;
	pthread_mutex_unlock(&c->lock);
	token_unref(w->tok);
	w->tok = NULL;
	return r;
}

void cred_wait_cancel(struct cred *c, struct cred_wait *w)
{
	if (!w->active)
		return;
	pthread_mutex_lock(&c->lock);
	c->waiting--;
	w->active = false;
	pthread_mutex_unlock(&c->lock);
	token_unref(w->tok);
	w->tok = NULL;
}

enum cred_begin cred_begin_attempt(struct cred *c, char **refresh_token,
				   struct record_client *client)
{
	enum cred_begin b = CRED_BEGIN_OK;

	*refresh_token = NULL;
	memset(client, 0, sizeof(*client));
	pthread_mutex_lock(&c->lock);
	if (c->in_flight) {
		b = CRED_BEGIN_BUSY;
	} else if (parked_locked(c)) {
		b = CRED_BEGIN_PARK;
	} else {
		if (cred_uses_store(c) &&
		    record_client_copy(client, &c->client) == 0)
			*refresh_token = strdup(c->refresh_token);
		c->in_flight = true;
		c->flight_gen = c->record_gen;
		c->version++;
	}
	pthread_mutex_unlock(&c->lock);
	return b;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* "a\nb\n" from the granted scopes, or the requested ones when the
 * response did not list any (RFC 6749 5.1). */
static char *scopes_text(const struct cred_conf *cc,
			 const struct oauth_token *ot)
{
	char **list = ot->scopes;
	size_t n = ot->n_scopes, i;
	char **sorted = NULL;
	struct buf b;

	if (!list) {
		sorted = calloc(cc->n_scopes + 1, sizeof(char *));
		if (!sorted)
			return NULL;
		memcpy(sorted, cc->scopes, cc->n_scopes * sizeof(char *));
		qsort(sorted, cc->n_scopes, sizeof(char *), cmp_str);
		list = sorted;
		n = cc->n_scopes;
	}
	buf_init(&b, 1024 * 1024);
	for (i = 0; i < n; i++)
		if (buf_printf(&b, "%s\n", list[i]) < 0)
			break;
	free(sorted);
	if (!b.data)
		return strdup("");
	return b.data;
}

/* Granted scopes that were not requested, space-separated, or NULL. */
static char *over_privileged(const struct cred_conf *cc,
			     const struct oauth_token *ot)
{
	char **asked;
	struct buf b;
	size_t i;

	if (!ot->n_scopes)
		return NULL;
	/* Sorted, then searched: a credential may ask for thousands. */
	asked = calloc(cc->n_scopes + 1, sizeof(char *));
	if (!asked)
		return NULL;
	memcpy(asked, cc->scopes, cc->n_scopes * sizeof(char *));
	qsort(asked, cc->n_scopes, sizeof(char *), cmp_str);
	buf_init(&b, 64 * 1024);
	for (i = 0; i < ot->n_scopes; i++)
		if (!bsearch(&ot->scopes[i], asked, cc->n_scopes,
			     sizeof(char *), cmp_str) &&
		    buf_printf(&b, "%s%s", b.len ? " " : "", ot->scopes[i]) < 0)
			break;
	free(asked);
	return b.data;
}

/*
 * The provider's response_fields for @tok: those of the response, and
 * where it has none, the current token's (Salesforce sends instance_url
 * with every token, other providers only with the first).
 */
static int take_fields(struct cred *c, struct token *tok,
		       const struct oauth_token *ot)
{
	size_t i, n = cred_conf(c)->provider->n_response_fields;

	if (!n)
		return 0;
	tok->fields = calloc(n, sizeof(char *));
	if (!tok->fields)
		return -ENOMEM;
	tok->n_fields = n;
	pthread_mutex_lock(&c->lock);
	for (i = 0; i < n; i++) {
		const char *v = i < ot->n_fields ? ot->fields[i] : NULL;

		if (!v && c->cur && i < c->cur->n_fields)
			v = c->cur->fields[i];
		if (v && !(tok->fields[i] = strdup(v)))
			break;
	}
	pthread_mutex_unlock(&c->lock);
	return i == n ? 0 : -ENOMEM;
}

struct token *cred_token_new(struct cred *c, struct oauth_token *ot,
			     int64_t sent_ms)
{
	const struct provider_conf *p = cred_conf(c)->provider;
	struct token *tok;
	int64_t lifetime;

	tok = calloc(1, sizeof(*tok) + ot->len + 1);
	if (!tok)
		return NULL;
	atomic_init(&tok->refs, 1);
	tok->len = ot->len;
	memcpy(tok->value, ot->access_token, ot->len);
	tok->type = strdup(ot->token_type);
	tok->scopes = scopes_text(cred_conf(c), ot);
	tok->over = over_privileged(cred_conf(c), ot);
	if (!tok->type || !tok->scopes) {
		token_unref(tok);
		return NULL;
	}
	lifetime = ot->expires_in_ms >= 0 ? ot->expires_in_ms
					  : p->default_lifetime_ms;
	if (lifetime < p->min_lifetime_ms) {
		/* A provider that says 0.5 s would have us refresh four times
		 * a second, forever. */
		tok->floored_from_ms = lifetime;
		lifetime = p->min_lifetime_ms;
	}
	tok->issued_ms = sent_ms;
	tok->expires_ms = sent_ms + lifetime;
	util_fingerprint(tok->value, tok->len, tok->fp);
	tok->aud_ok = p->resource
			      ? (signed char)jwt_audience_has(
					tok->value, tok->len, p->resource,
					tok->aud_other, sizeof(tok->aud_other))
			      : -1;
	if (take_fields(c, tok, ot) < 0) {
		token_unref(tok);
		return NULL;
	}
	return tok;
}

int64_t cred_rt_expiry(const struct provider_conf *p,
		       const struct oauth_token *ot, int64_t sent_ms,
		       int64_t before)
{
	if (ot->refresh_expires_in_ms >= 0)
		return sent_ms + ot->refresh_expires_in_ms;
	if (ot->refresh_token)
		return p->rt_lifetime_ms ? sent_ms + p->rt_lifetime_ms : 0;
	return before;
}

/* Note a persist outcome for generation @gen; @c's lock held. */
static void note_persist_locked(struct cred_table *t, struct cred *c,
				uint64_t gen, int err)
{
	char words[256];

	if (err == 0) {
		if (gen > c->durable_gen)
			c->durable_gen = gen;
		if (c->durable_gen >= c->record_gen) {
			c->persist_error_ms = 0;
			text_clear(&c->persist_error);
		}
		return;
	}
	c->persist_failures++;
	c->persist_error_ms = time_real_ms();
	store_error_text(t->store, words, sizeof(words));
	text_set(&c->persist_error,
		 "cannot write generation %llu to the store: %s",
		 (unsigned long long)gen, words[0] ? words : strerror(-err));
}

void cred_note_persist(struct cred_table *t, struct cred *c, uint64_t gen,
		       int err)
{
	pthread_mutex_lock(&c->lock);
	if (gen > c->record_gen)
		c->record_gen = gen;
	note_persist_locked(t, c, gen, err);
	c->version++;
	atomic_fetch_add(&t->version, 1);
	pthread_mutex_unlock(&c->lock);
}

/* Make @tok (may be NULL) the only generation held; the caller unrefs the
 * two returned in @old after unlocking. */
static void replace_tokens_locked(struct cred *c, struct token *tok,
				  struct token *old[2])
{
	old[0] = c->cur;
	old[1] = c->prev;
	if (tok)
		tok->gen = ++c->last_gen;
	c->cur = tok;
	c->prev = NULL;
}

/* Publish a change made outside the refresher, and tell the refresher. */
static void changed_locked(struct cred_table *t, struct cred *c)
{
	c->version++;
	atomic_fetch_add(&t->version, 1);
	wake_locked(t, c);
	if (t->replan) {
		struct cred_plan p;

		plan_of_locked(c, &p);
		t->replan(t->kick_arg, c, &p);
	}
}

int64_t cred_finish_attempt(struct cred_table *t, struct cred *c,
			    struct oauth_result *res, struct token *tok,
			    const struct persist_result *persist, double u,
			    bool late)
{
	const struct provider_conf *p = cred_conf(c)->provider;
	struct token *old[2] = {NULL, NULL};
	int64_t now = time_real_ms(), next;

	pthread_mutex_lock(&c->lock);
	c->in_flight = false;
	c->attempts++;
	if (tok) {
		tok->gen = ++c->last_gen;
		old[1] = c->prev;
		c->prev = c->cur;
		c->cur = tok;
		c->refresh_count++;
		c->consecutive_failures = 0;
		c->last_refresh_ms = now;
		c->revoked = false; /* the grant works after all */
		c->rt_expires_ms = cred_rt_expiry(p, &res->tok, tok->issued_ms,
						  c->rt_expires_ms);
		if (res->tok.refresh_token) {
			/* Rotated: the new one is what we hold from now on. */
			strfreezero(c->refresh_token);
			c->refresh_token = res->tok.refresh_token;
			res->tok.refresh_token = NULL;
		}
		if (persist && persist->gen) {
			c->record_gen = persist->gen;
			note_persist_locked(t, c, persist->gen, persist->err);
		}
		next = plan_refresh_at(&cred_conf(c)->timing, tok->issued_ms,
				       tok->expires_ms, u);
		if (late && now - c->spread_ms >
				    SPREAD_EVERY * (next - tok->issued_ms)) {
			next = plan_spread_at(&cred_conf(c)->timing,
					      tok->issued_ms, tok->expires_ms,
					      u);
			c->spread_ms = now;
		}
	} else {
		int64_t delay;

		c->failure_count++;
		c->consecutive_failures++;
		c->last_error_ms = now;
		text_set(&c->last_error, "%s", res->error);
		if (res->outcome == OAUTH_INVALID_GRANT && cred_uses_store(c)) {
			/* The refresh token is dead: nothing to serve, nothing
			 * to retry until a new one is added. */
			c->revoked = true;
			c->record_gen++; /* a state to store (plan: persist) */
			replace_tokens_locked(c, NULL, old);
			strfreezero(c->refresh_token);
			c->refresh_token = NULL;
			delay = INT64_MAX;
		} else if (res->retry_after_ms >= 0) {
			delay = res->retry_after_ms;
		} else if (res->outcome == OAUTH_TRANSIENT ||
			   res->outcome == OAUTH_MALFORMED) {
			delay = plan_backoff_ms(p->backoff_initial_ms,
						p->backoff_max_ms,
						c->consecutive_failures, u);
		} else {
			/* refused: the provider will not change its mind soon
			 */
			delay = p->backoff_max_ms / 2 +
				(int64_t)(u * (double)(p->backoff_max_ms / 2));
		}
		next = delay == INT64_MAX ? INT64_MAX : now + delay;
	}
	c->next_refresh_ms = next == INT64_MAX ? 0 : next;
	c->version++;
	atomic_fetch_add(&t->version, 1);
	wake_locked(t, c);
	pthread_mutex_unlock(&c->lock);
	token_unref(old[0]);
	token_unref(old[1]);
	return next;
}

int64_t cred_abandon_attempt(struct cred_table *t, struct cred *c)
{
	int64_t now = time_real_ms();

	pthread_mutex_lock(&c->lock);
	c->in_flight = false;
	c->next_refresh_ms = now;
	c->version++;
	atomic_fetch_add(&t->version, 1);
	wake_locked(t, c);
	pthread_mutex_unlock(&c->lock);
	return now;
}

/* The stored access token of @r as a generation, if it is still valid. */
static struct token *token_of_record(struct cred *c, const struct record *r)
{
	struct oauth_token ot = {0};
	struct token *tok = NULL;

	if (!r->access_token || !r->access_token[0] ||
	    r->expires_ms <= r->issued_ms)
		return NULL;
	ot.access_token = r->access_token;
	ot.len = strlen(r->access_token);
	ot.token_type = r->token_type ? r->token_type : "Bearer";
	ot.expires_in_ms = r->expires_ms - r->issued_ms;
	if (r->scope && oauth_split_scopes(r->scope, ' ', &ot) < 0)
		goto out;
	/* The record's fields, in the order the provider names them. */
	ot.n_fields = cred_conf(c)->provider->n_response_fields;
	ot.fields = ot.n_fields ? calloc(ot.n_fields, sizeof(char *)) : NULL;
	for (size_t i = 0; ot.fields && i < ot.n_fields; i++)
		for (size_t j = 0; j < r->n_fields; j++)
			if (!strcmp(r->fields[j].name,
				    cred_conf(c)->provider->response_fields[i]))
				ot.fields[i] = r->fields[j].value;
	if (ot.n_fields && !ot.fields)
		goto out;
	tok = cred_token_new(c, &ot, r->issued_ms);
	if (tok && token_expired(c, tok, time_real_ms())) {
		token_unref(tok);
		tok = NULL;
	}
out:
	while (ot.n_scopes)
		free(ot.scopes[--ot.n_scopes]);
	free(ot.scopes);
	free(ot.fields); /* borrowed from @r */
	return tok;
}

bool cred_adopt_record(struct cred_table *t, struct cred *c, struct record *r,
		       double u)
{
	struct token *tok = r->revoked ? NULL : token_of_record(c, r), *old[2];
	bool valid = tok != NULL;

	pthread_mutex_lock(&c->lock);
	replace_tokens_locked(c, tok, old);
	strfreezero(c->refresh_token);
	c->refresh_token = r->refresh_token;
	r->refresh_token = NULL;
	record_client_clear(&c->client);
	c->client = r->client;
	memset(&r->client, 0, sizeof(r->client));
	c->record_gen = c->durable_gen = r->generation;
	c->rt_expires_ms = r->rt_expires_ms;
	c->revoked = r->revoked != NULL;
	c->consecutive_failures = 0;
	c->persist_error_ms = 0;
	text_clear(&c->persist_error);
	if (r->revoked) {
		/* Refused before (here or by another daemon): not again. */
		text_set(&c->last_error, "%s", r->revoked);
		if (!c->last_error_ms)
			c->last_error_ms = time_real_ms();
	}
	atomic_store_explicit(&c->present, true, memory_order_release);
	c->next_refresh_ms =
		tok ? plan_refresh_at(&cred_conf(c)->timing, tok->issued_ms,
				      tok->expires_ms, u)
		: r->revoked ? 0
			     : time_real_ms();
	changed_locked(t, c);
	pthread_mutex_unlock(&c->lock);
	token_unref(old[0]);
	token_unref(old[1]);
	return valid;
}

/* Nothing to serve, nothing to refresh with. */
static void drop_all_locked(struct cred *c, struct token *old[2])
{
	replace_tokens_locked(c, NULL, old);
	strfreezero(c->refresh_token);
	c->refresh_token = NULL;
	record_client_clear(&c->client);
	c->record_gen = c->durable_gen = 0;
	c->next_refresh_ms = 0;
}

void cred_retire(struct cred_table *t, struct cred *c)
{
	struct token *old[2];

	pthread_mutex_lock(&c->lock);
	if (c->record_gen > c->durable_gen)
		log_error("%s/%s: removed with generation %llu not in the "
			  "store: its refresh token is lost",
			  cred_conf(c)->tenant, cred_conf(c)->provider->name,
			  (unsigned long long)c->record_gen);
	drop_all_locked(c, old);
	c->in_flight = false;
	c->revoked = c->client_error = false;
	c->attempts = c->refresh_count = c->failure_count = 0;
	c->consecutive_failures = 0;
	c->last_refresh_ms = c->last_error_ms = 0;
	text_clear(&c->last_error);
	c->rt_expires_ms = 0;
	c->persist_error_ms = 0;
	text_clear(&c->persist_error);
	atomic_store_explicit(&c->present, false, memory_order_release);
	changed_locked(t, c); /* the refresher let it go: no replan */
	pthread_mutex_unlock(&c->lock);
	token_unref(old[0]);
	token_unref(old[1]);
	if (t->notify)
		t->notify(t->notify_arg, c);
}

void cred_forget(struct cred_table *t, struct cred *c)
{
	struct token *old[2];

	pthread_mutex_lock(&c->lock);
	drop_all_locked(c, old);
	c->revoked = false;
	c->consecutive_failures = 0;
	text_clear(&c->last_error);
	c->last_error_ms = 0;
	c->persist_error_ms = 0;
	text_clear(&c->persist_error);
	atomic_store_explicit(&c->present, false, memory_order_release);
	changed_locked(t, c);
	pthread_mutex_unlock(&c->lock);
	token_unref(old[0]);
	token_unref(old[1]);
}

void cred_record_unusable(struct cred_table *t, struct cred *c, const char *why)
{
	struct token *old[2];

	pthread_mutex_lock(&c->lock);
	drop_all_locked(c, old);
	c->failure_count++;
	c->consecutive_failures++;
	c->last_error_ms = time_real_ms();
	text_set(&c->last_error, "%s", why);
	atomic_store_explicit(&c->present, true, memory_order_release);
	changed_locked(t, c);
	pthread_mutex_unlock(&c->lock);
	token_unref(old[0]);
	token_unref(old[1]);
}

bool cred_revoked_by_provider(struct cred_table *t, struct cred *c,
			      uint64_t gen, const char *why)
{
	struct token *old[2] = {NULL, NULL};
	bool done = false;

	pthread_mutex_lock(&c->lock);
	if (c->cur && c->cur->gen == gen && !c->revoked) {
		replace_tokens_locked(c, NULL, old);
		c->failure_count++;
		c->consecutive_failures++;
		c->last_error_ms = time_real_ms();
		text_set(&c->last_error, "%s", why);
		if (cred_uses_store(c)) {
			c->revoked = true;
			c->record_gen++; /* a state to store */
			strfreezero(c->refresh_token);
			c->refresh_token = NULL;
			c->next_refresh_ms = 0;
		} else {
			c->next_refresh_ms = time_real_ms();
		}
		changed_locked(t, c);
		done = true;
	}
	pthread_mutex_unlock(&c->lock);
	token_unref(old[0]);
	token_unref(old[1]);
	return done;
}

void cred_store_behind(struct cred_table *t, struct cred *c, const char *why)
{
	pthread_mutex_lock(&c->lock);
	c->durable_gen = 0;
	c->persist_error_ms = time_real_ms();
	text_set(&c->persist_error, "%s", why);
	changed_locked(t, c);
	pthread_mutex_unlock(&c->lock);
}

bool cred_store_reachable(struct cred_table *t, struct cred *c, bool up,
			  const char *why)
{
	bool said = false;

	atomic_store(&t->store_down, !up);
	pthread_mutex_lock(&c->lock);
	if (!up && strcmp(text_of(c->persist_error), why)) {
		c->persist_error_ms = time_real_ms();
		text_set(&c->persist_error, "%s", why);
		c->version++;
		atomic_fetch_add(&t->version, 1);
		said = true;
	} else if (up && c->persist_error_ms &&
		   c->durable_gen >= c->record_gen) {
		c->persist_error_ms = 0;
		text_clear(&c->persist_error);
		c->version++;
		atomic_fetch_add(&t->version, 1);
	}
	pthread_mutex_unlock(&c->lock);
	return said;
}

void cred_defer(struct cred_table *t, struct cred *c, int64_t delay_ms)
{
	pthread_mutex_lock(&c->lock);
	c->next_refresh_ms = time_real_ms() + delay_ms;
	c->version++;
	atomic_fetch_add(&t->version, 1);
	pthread_mutex_unlock(&c->lock);
}

void cred_set_client_error(struct cred_table *t, struct cred *c, bool on)
{
	pthread_mutex_lock(&c->lock);
	if (c->client_error != on) {
		c->client_error = on;
		c->version++;
		atomic_fetch_add(&t->version, 1);
		wake_locked(t, c);
	}
	pthread_mutex_unlock(&c->lock);
}
