/*
 * refresher_store: the store I/O a refresh needs, on the store worker's
 * thread (worker.h), so that a slow disk or a database that stops
 * answering delays only the credentials that wait on it, never the
 * refresher's thread and every other request it drives. The refresher
 * submits rf_jobs (refresher_int.h) and takes what came of them back on
 * its own thread; "durable before published" holds as before: an answer
 * is published only once its job says it was stored. The first half of
 * this file runs on the worker, the second on the refresher's thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "credstore.h"
#include "log.h"
#include "plan.h"
#include "refresher_int.h"
#include "store.h"
#include "util.h"

/* Take the lease; if another daemon rotated the record meanwhile (or
 * removed it), give the lease back and load theirs instead. */
static void lease(struct cred_table *t, struct rf_job *j)
{
	struct cred *c = j->c;
	const char *tenant = cred_conf(c)->tenant,
		   *prov = cred_conf(c)->provider->name;
	char msg[512];

	j->words[0] = '\0';
	atomic_fetch_add(&t->lease_queries, 1);
	j->lease =
		store_lease(t->store, tenant, prov, j->lease_ms, &j->lease_gen);
	if (j->lease == -EIO)
		store_error_text(t->store, j->words, sizeof(j->words));
	if (j->lease == 0) {
		j->newer = j->lease_gen > cred_record_gen(c);
		if (j->newer)
			store_unlease(t->store, tenant, prov);
	}
	if (j->newer || j->lease == -ENOENT)
		credstore_reload(t, c, msg, sizeof(msg));
}

/* After invalid_grant, someone may have rotated it meanwhile. */
static void reload_refused(struct cred_table *t, struct rf_job *j)
{
	char msg[512];

	j->voided = credstore_reload(t, j->c, msg, sizeof(msg)) == CS_ADOPTED;
}

/* Whether @j writes a record: an answer with a token (a rotated refresh
 * token is durable before it counts), or a retry. */
static bool writes(const struct rf_job *j)
{
	return j->kind == RJ_RETRY || (j->kind == RJ_WRITE && j->tok);
}

/* The batch's writes, together (one sync on the file store). */
static void write_all(struct cred_table *t, struct work *batch, size_t n)
{
	struct credstore_write *w = calloc(n, sizeof(*w));
	struct work *it;
	size_t i = 0;

	for (it = batch; it; it = it->next) {
		struct rf_job *j = (struct rf_job *)it;

		if (!writes(j))
			continue;
		if (!w) { /* no memory for the group: one by one */
			j->ret = credstore_write(t, j->c, j->tok,
						 j->tok ? &j->res.tok : NULL,
						 &j->pr);
			continue;
		}
		w[i].c = j->c;
		w[i].tok = j->tok;
		w[i].ot = j->tok ? &j->res.tok : NULL;
		i++;
	}
	if (!w)
		return;
	credstore_write_many(t, w, n);
	for (it = batch, i = 0; it; it = it->next) {
		struct rf_job *j = (struct rf_job *)it;

		if (!writes(j))
			continue;
		j->ret = w[i].ret;
		j->pr = w[i].pr;
		j->voided = j->kind == RJ_WRITE && j->ret == -ECANCELED;
		i++;
	}
	free(w);
}

void rf_store_run(void *arg, struct work *batch)
{
	struct cred_table *t = arg;
	cred_table_enter(t);
	struct work *w;
	size_t n = 0;

	for (w = batch; w; w = w->next) {
		struct rf_job *j = (struct rf_job *)w;

		switch (j->kind) {
		case RJ_LEASE: lease(t, j); break;
		case RJ_WRITE:
			if (!j->tok && j->res.outcome == OAUTH_INVALID_GRANT)
				reload_refused(t, j);
			break;
		case RJ_RETRY: break;
		case RJ_UNLEASE:
			store_unlease(t->store, j->tenant, j->provider);
			break;
		}
		n += writes(j);
	}
	if (n)
		write_all(t, batch, n);
	cred_table_exit(t);
}

/* On the refresher's thread: submitting jobs, and what came of them. */

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
struct rf_job *rf_job_new(enum rf_job_kind kind, struct cred *c)
{
	struct rf_job *j = calloc(1, sizeof(*j));

	if (j) {
		j->kind = kind;
		j->c = c;
	}
	return j;
}
void rf_job_free(struct rf_job *j)
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
 * until it comes back (rf_jobs_done()). */
void rf_submit(struct refresher *rf, struct rf_job *j)
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
		rf_job_free(j);
	else
		rf->inline_done = list_append(rf->inline_done, &j->w);
}
/* Try again to write @c's state, whose last write failed. */
void rf_persist_retry(struct refresher *rf, struct cred *c)
{
	struct rf_job *j = rf_job_new(RJ_RETRY, c);

	if (j) {
		rf_submit(rf, j);
		return;
	}
	pthread_mutex_lock(&rf->lock);
	E(rf, c)->persist_mono = time_mono_ms() + PERSIST_RETRY_MIN_MS;
	rf_heap_push(rf, c);
	pthread_mutex_unlock(&rf->lock);
}
/* What came of rf_persist_retry(). */
static void retried(struct refresher *rf, struct rf_job *j)
{
	struct cred *c = j->c;
	struct rf_entry *e = E(rf, c);
	struct persist_result *pr = &j->pr;
	int r = j->ret;

	if (r != -ECANCELED) {
		cred_note_persist(rf->t, c, pr->gen, pr->err);
		if (pr->err == 0 || e->persist_tries == 0)
			rf_audit_persist(rf, c, pr);
	}
	if (r == 0 || r == -ECANCELED) {
		if (r == 0)
			log_info("%s/%s: generation %llu written to the store",
				 cred_conf(c)->tenant,
				 cred_conf(c)->provider->name,
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
	rf_heap_push(rf, c);
	pthread_mutex_unlock(&rf->lock);
}
/* End @c's refresh lease, unless a save of the record (@saved) did. */
void rf_release_lease(struct refresher *rf, struct cred *c, bool saved)
{
	struct rf_job *j;

	if (E(rf, c)->leased && !saved) {
		j = rf_job_new(RJ_UNLEASE, c);
		if (j) {
			j->tenant = strdup(cred_conf(c)->tenant);
			j->provider = strdup(cred_conf(c)->provider->name);
		}
		if (j && j->tenant && j->provider)
			rf_submit(rf, j);
		else
			rf_job_free(j); /* it runs out (LEASE_EXTRA_MS) */
	}
	E(rf, c)->leased = false;
}
/*
 * What came of @c's lease (a store other daemons share): go on with the
 * request holding it; or, when another daemon rotated the record
 * meanwhile (now loaded), it is busy refreshing it, or the store cannot
 * be reached, put @c back for later.
 */
static void leased(struct refresher *rf, struct rf_job *j)
{
	struct cred *c = j->c;
	const struct provider_conf *p = cred_conf(c)->provider;
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
		log_warn("%s/%s: %s", cred_conf(c)->tenant, p->name, why);
	E(rf, c)->leased = r == 0 && !j->newer;
	/* With the store down, refreshing cannot split a token family that
	 * does not rotate. */
	go = E(rf, c)->leased || (r == -EIO && !may_rotate);
	if (go && !atomic_load(&rf->stop) && !E(rf, c)->leaving) {
		rf_send_request(rf, c);
		return;
	}
	rf_release_lease(rf, c, false);
	rf->lanes[rf_lane_of(rf, c)].inflight--;
	if (j->newer || r == -ENOENT)
		log_debug("%s/%s: generation %llu in the store: %s",
			  cred_conf(c)->tenant, p->name,
			  (unsigned long long)j->lease_gen,
			  r ? "removed" : "another daemon refreshed it");
	else if (!go)
		/* -EBUSY: another daemon is refreshing it now. */
		cred_defer(rf->t, c,
			   r == -EBUSY ? LEASE_BUSY_RETRY_MS
				       : STORE_DOWN_RETRY_MS);
	rf_reschedule(rf, c);
}
/* Take back what the store worker did, on the refresher's thread. */
void rf_jobs_done(struct refresher *rf)
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
			rf_job_free(j);
			continue;
		}
		rf->jobs--;
		if (!E(rf, c)) {
			/* Let go meanwhile (refresher_free()): what was
			 * written stays in the store, for the next one. */
			rf_job_free(j);
			continue;
		}
		E(rf, c)->at_store = false;
		switch (j->kind) {
		case RJ_LEASE: leased(rf, j); break;
		case RJ_RETRY: retried(rf, j); break;
		default:
			rf_finish(rf, c, &j->res, j->tok, j->voided, &j->pr);
			j->tok = NULL; /* taken */
			break;
		}
		E(rf, c)->kicked = false;
		rf_job_free(j);
		rf_after_answer(rf, c);
	}
}
