/*
 * refresher_store: the store I/O a refresh needs, on the store worker's
 * thread (worker.h), so that a slow disk or a database that stops
 * answering delays only the credentials that wait on it, never the
 * refresher's thread and every other request it drives. The refresher
 * submits rf_jobs (refresher_int.h) and takes what came of them back on
 * its own thread; "durable before published" holds as before: an answer
 * is published only once its job says it was stored.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "credstore.h"
#include "refresher_int.h"
#include "store.h"

/* Take the lease; if another daemon rotated the record meanwhile (or
 * removed it), give the lease back and load theirs instead. */
static void lease(struct cred_table *t, struct rf_job *j)
{
	struct cred *c = j->c;
	const char *tenant = c->conf->tenant, *prov = c->conf->provider->name;
	char msg[512];
	uint64_t have;

	j->words[0] = '\0';
	j->lease =
		store_lease(t->store, tenant, prov, j->lease_ms, &j->lease_gen);
	if (j->lease == -EIO)
		store_error_text(t->store, j->words, sizeof(j->words));
	if (j->lease == 0) {
		pthread_mutex_lock(&c->lock);
		have = c->record_gen;
		pthread_mutex_unlock(&c->lock);
		j->newer = j->lease_gen > have;
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
	unsigned slot = cred_table_enter(t);
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
	cred_table_exit(t, slot);
}
