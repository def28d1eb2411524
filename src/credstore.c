/*
 * credstore: loading records into credentials and writing them back.
 *
 * The store's generations order everything: a credential holds the
 * generation of its newest state (record_gen) and of the newest one known
 * to be on disk (durable_gen). A write of generation g+1 expects exactly
 * durable_gen on disk, so a record replaced behind the daemon's back
 * (credfsctl add or remove) is noticed instead of overwritten.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "cred.h"
#include "credstore.h"
#include "log.h"
#include "plan.h"
#include "record.h"
#include "store.h"
#include "util.h"

/* One reload at a time: the control socket, SIGHUP and the refresher may
 * all ask for one. */
static pthread_mutex_t reload_lock = PTHREAD_MUTEX_INITIALIZER;

/* Jitter for plans made here (not for secrets). */
static double jitter(void)
{
	static _Thread_local uint64_t state;

	if (!state)
		state = ((uint64_t)time_mono_ms() * 0x9e3779b97f4a7c15ULL) | 1;
	return plan_rand(&state);
}

static const char *name_of(const struct cred *c, char *out, size_t n)
{
	snprintf(out, n, "%s/%s", cred_conf(c)->tenant,
		 cred_conf(c)->provider->name);
	return out;
}

static enum credstore_change settle_loaded(struct cred_table *t, struct cred *c,
					   int ret, struct record *r, char *msg,
					   size_t msglen);
static void announce(struct cred_table *t, struct cred *c,
		     enum credstore_change ch, const char *msg, bool quiet);

/* Read @c's record and act on it; with @quiet, no log line for what is
 * routine (the start). */
static enum credstore_change reload(struct cred_table *t, struct cred *c,
				    char *msg, size_t msglen, bool quiet)
{
	enum credstore_change ch;
	struct record r;
	int ret;

	if (!t->store || !cred_uses_store(c)) {
		snprintf(msg, msglen, "%s/%s: not kept in the store",
			 cred_conf(c)->tenant, cred_conf(c)->provider->name);
		return CS_SAME;
	}
	/* Loaded under the lock: a reload that read an older record never
	 * acts after one that read a newer. */
	pthread_mutex_lock(&reload_lock);
	ret = store_load(t->store, cred_conf(c)->tenant,
			 cred_conf(c)->provider->name, 0, &r);
	ch = settle_loaded(t, c, ret, &r, msg, msglen);
	pthread_mutex_unlock(&reload_lock);
	record_clear(&r);
	announce(t, c, ch, msg, quiet);
	return ch;
}

enum credstore_change credstore_reload(struct cred_table *t, struct cred *c,
				       char *msg, size_t msglen)
{
	return reload(t, c, msg, msglen, false);
}

/* What @c's record, loaded with result @ret into @rec, means for @c,
 * and doing it; what it was in @msg. With the reload lock held. */
static enum credstore_change settle_loaded(struct cred_table *t, struct cred *c,
					   int ret, struct record *rec,
					   char *msg, size_t msglen)
{
	enum credstore_change ch = CS_SAME;
	struct cred_store_state st;
	uint64_t have, durable;
	bool present, has_rt, revoked, registered;
	char name[160], why[OAUTH_ERROR_TEXT];
	struct record r = *rec;

	name_of(c, name, sizeof(name));
	cred_store_state(c, &st);
	present = st.present;
	has_rt = st.has_refresh_token;
	revoked = st.revoked;
	have = st.record_gen;
	durable = st.durable_gen;

	/* A client registered (credfsctl register) and no grant yet: as
	 * good as no record, for now. */
	registered = ret == 0 && !r.revoked &&
		     (!r.refresh_token || !r.refresh_token[0]) && r.client.id;
	if (registered) {
		record_clear(&r);
		ret = -ENOENT;
	}
	if (ret == 0 && !r.revoked && (!r.refresh_token || !r.refresh_token[0]))
		ret = -EPROTO;
	if (ret == -ENOENT) {
		if (present) {
			cred_forget(t, c);
			ch = CS_REMOVED;
		}
		snprintf(msg, msglen, "%s: %s%s", name,
			 registered ? "a client is registered, no grant yet "
				      "(credfsctl connect)"
				    : "no record",
			 present ? "; removed" : "");
	} else if (ret < 0) {
		snprintf(why, sizeof(why), "the stored record is unusable: %s",
			 ret == -EBADMSG  ? "not authentic (tampered with, "
					    "moved from elsewhere, or sealed "
					    "with another key)"
			 : ret == -EPROTO ? "damaged"
					  : strerror(-ret));
		if (has_rt) {
			cred_store_behind(t, c, why);
			ch = CS_KEPT;
		} else {
			cred_record_unusable(t, c, why);
			ch = CS_UNUSABLE;
		}
		snprintf(msg, msglen, "%s: %s%s", name, why,
			 has_rt ? "; writing the state in memory again" : "");
	} else if (!present || r.generation > have || (!has_rt && !revoked)) {
		bool valid = cred_adopt_record(t, c, &r, jitter());

		ch = CS_ADOPTED;
		snprintf(msg, msglen, "%s: record generation %llu loaded%s",
			 name, (unsigned long long)r.generation,
			 valid	     ? " with a valid access token"
			 : r.revoked ? "; revoked: the provider refused its "
				       "refresh token (add a new grant)"
				     : "");
	} else if (r.generation < durable) {
		snprintf(why, sizeof(why),
			 "the store holds generation %llu, older than %llu: "
			 "rolled back; writing the state in memory again",
			 (unsigned long long)r.generation,
			 (unsigned long long)durable);
		cred_store_behind(t, c, why);
		ch = CS_KEPT;
		snprintf(msg, msglen, "%s: %s", name, why);
	} else {
		snprintf(msg, msglen, "%s: unchanged (generation %llu)", name,
			 (unsigned long long)have);
	}
	*rec = r; /* what adoption left (the caller clears it) */
	return ch;
}

/* Say what settle_loaded() did (with @quiet, routine news at debug
 * level only), and tell the table's hook, after the reload lock. */
static void announce(struct cred_table *t, struct cred *c,
		     enum credstore_change ch, const char *msg, bool quiet)
{
	if (ch == CS_KEPT || ch == CS_UNUSABLE)
		log_error("%s", msg);
	else if (ch != CS_SAME && !quiet)
		log_info("%s", msg);
	else if (ch != CS_SAME)
		log_debug("%s", msg);
	if (ch != CS_SAME && ch != CS_KEPT && t->notify)
		t->notify(t->notify_arg, c);
}

/* Records loaded together (store_load_many()). */
#define LOAD_CHUNK 4096

static bool news(struct cred *c, uint64_t gen);

/*
 * Reread the records of @n store-backed credentials @cs, a chunk at a
 * time with store_load_many(), and settle each (with @quiet, routine
 * news at debug level; what changed also a line each to @reply, if not
 * NULL). Loaded outside the reload lock: one whose state changed
 * meanwhile (a reload or a refresh) is settled only if the record is
 * still news to it. How many were adopted.
 */
static size_t reload_many(struct cred_table *t, struct cred **cs, size_t n,
			  bool quiet, struct buf *reply)
{
	/* As big as the work: a reload of a hundred is not a chunk's worth
	 * (and a chunk's arrays, freed, can leave the heap grown). */
	size_t chunk = n < LOAD_CHUNK ? (n ? n : 1) : LOAD_CHUNK;
	struct store_load *l = calloc(chunk, sizeof(*l));
	struct record *r = calloc(chunk, sizeof(*r));
	struct cred_store_state *before = calloc(chunk, sizeof(*before));
	struct cred_store_state now;
	size_t i, k, j, adopted = 0;
	char msg[512];

	for (i = 0; l && r && before && i < n; i += k) {
		k = n - i < chunk ? n - i : chunk;
		for (j = 0; j < k; j++) {
			l[j] = (struct store_load){
				.tenant = cred_conf(cs[i + j])->tenant,
				.provider =
					cred_conf(cs[i + j])->provider->name,
				.r = &r[j],
			};
			cred_store_state(cs[i + j], &before[j]);
		}
		store_load_many(t->store, l, k);
		for (j = 0; j < k; j++) {
			struct cred *c = cs[i + j];
			enum credstore_change ch = CS_SAME;

			/* Unchanged since the load: as if loaded under the
			 * lock (a rollback is one). Changed: only news. */
			pthread_mutex_lock(&reload_lock);
			cred_store_state(c, &now);
			if ((now.record_gen == before[j].record_gen &&
			     now.durable_gen == before[j].durable_gen &&
			     now.present == before[j].present) ||
			    l[j].ret != 0 || news(c, r[j].generation))
				ch = settle_loaded(t, c, l[j].ret, &r[j], msg,
						   sizeof(msg));
			pthread_mutex_unlock(&reload_lock);
			record_clear(&r[j]);
			announce(t, c, ch, msg, quiet);
			adopted += ch == CS_ADOPTED;
			if (ch != CS_SAME && reply)
				buf_printf(reply, "%s\n", msg);
		}
	}
	/* Without memory for the chunks: one by one. */
	for (i = l && r && before ? n : 0; i < n; i++) {
		enum credstore_change ch =
			reload(t, cs[i], msg, sizeof(msg), quiet);

		adopted += ch == CS_ADOPTED;
		if (ch != CS_SAME && reply)
			buf_printf(reply, "%s\n", msg);
	}
	free(l);
	free(r);
	free(before);
	return adopted;
}

/* Every store-backed credential's record, reread; @quiet and @reply as
 * for reload_many(). */
static size_t reload_all(struct cred_table *t, bool quiet, struct buf *reply)
{
	const struct config *cfg;
	struct cred **cs;
	size_t i, k = 0, n = 0;

	cred_table_enter(t);
	cfg = cred_table_config(t);
	cs = calloc(cfg->n_creds + 1, sizeof(*cs));
	for (i = 0; t->store && i < cfg->n_creds; i++) {
		struct cred *c = cred_of(t, &cfg->creds[i]);

		if (!cred_uses_store(c))
			continue;
		if (cs)
			cs[k++] = c;
		else /* no memory for the list: one by one */
			n += reload_many(t, &c, 1, quiet, reply);
	}
	if (cs)
		n = reload_many(t, cs, k, quiet, reply);
	cred_table_exit(t);
	free(cs);
	return n;
}

size_t credstore_load_all(struct cred_table *t)
{
	return reload_all(t, true, NULL);
}

void credstore_reload_all(struct cred_table *t, struct buf *reply)
{
	reload_all(t, false, reply);
}

/* Whether a record of generation @gen (0: removed) is news to @c. */
static bool news(struct cred *c, uint64_t gen)
{
	struct cred_store_state st;

	cred_store_state(c, &st);
	return gen ? !st.present || gen > st.record_gen : st.present;
}

/* Reread tenant/provider's record if it is one of ours and news (or,
 * given @r, that record of generation @gen, which came with the news);
 * with the table's section held. Whether it was news. */
static bool reread(struct cred_table *t, const struct cred_conf *cc,
		   uint64_t gen, struct record *r)
{
	struct cred *c = cc ? cred_of(t, cc) : NULL;
	struct cred_store_state st;
	enum credstore_change ch;
	char msg[512];

	if (!c || !cred_uses_store(c) || !news(c, gen))
		return false;
	if (!r) {
		credstore_reload(t, c, msg, sizeof(msg));
		return true;
	}
	/* News still under the lock: never an older record than one a
	 * reload meanwhile adopted (which would look like a rollback). */
	pthread_mutex_lock(&reload_lock);
	cred_store_state(c, &st);
	ch = news(c, gen) ? settle_loaded(t, c, 0, r, msg, sizeof(msg))
			  : CS_SAME;
	pthread_mutex_unlock(&reload_lock);
	/* Another daemon's rotation is routine: said at debug level. */
	announce(t, c, ch, msg, st.present && st.has_refresh_token);
	return ch != CS_SAME;
}

/* Catching up: the store's generations against ours. */
struct catch_up {
	struct cred_table *t;
	const struct config *cfg;
	bool *seen;	    /* by position in cfg->creds */
	struct cred **news; /* to reread */
	size_t changed;
};

static int caught(void *arg, const char *tenant, const char *provider,
		  uint64_t gen)
{
	struct catch_up *x = arg;
	const struct cred_conf *cc = config_find_cred(x->cfg, tenant, provider);
	struct cred *c = cc ? cred_of(x->t, cc) : NULL;

	if (!c || !cred_uses_store(c))
		return 0;
	x->seen[cc - x->cfg->creds] = true;
	if (news(c, gen))
		x->news[x->changed++] = c;
	return 0;
}

static void catch_up(struct cred_table *t)
{
	struct catch_up x = {.t = t};
	size_t i;
	int r;

	cred_table_enter(t);
	x.cfg = cred_table_config(t);
	x.seen = calloc(x.cfg->n_creds + 1, sizeof(*x.seen));
	x.news = calloc(x.cfg->n_creds + 1, sizeof(*x.news));
	r = x.seen && x.news ? store_generations(t->store, caught, &x)
			     : -ENOMEM;
	/* What the store no longer has is gone. */
	for (i = 0; r == 0 && i < x.cfg->n_creds; i++) {
		struct cred *c = cred_of(t, &x.cfg->creds[i]);

		if (!x.seen[i] && cred_uses_store(c) && news(c, 0))
			x.news[x.changed++] = c;
	}
	if (r == 0)
		reload_many(t, x.news, x.changed, false, NULL);
	cred_table_exit(t);
	free(x.seen);
	free(x.news);
	if (r < 0) {
		char words[256] = "";

		if (r == -EIO) /* the backend's own words, when it has them */
			store_error_text(t->store, words, sizeof(words));
		log_warn("store: cannot compare the records with the store's "
			 "(%s); changes made meanwhile are seen at the next "
			 "refresh or SIGHUP",
			 words[0] ? words : strerror(-r));
	} else if (x.changed)
		log_info("store: %zu records changed while nobody listened; "
			 "reread",
			 x.changed);
}

/* store_watch()'s callback, on the store's thread. */
static void heard(void *arg, const char *tenant, const char *provider,
		  uint64_t gen, struct record *r)
{
	struct cred_table *t = arg;

	if (!tenant) {
		catch_up(t);
		return;
	}
	cred_table_enter(t);
	reread(t, config_find_cred(cred_table_config(t), tenant, provider), gen,
	       r);
	cred_table_exit(t);
}

int credstore_watch(struct cred_table *t)
{
	int r = t->store ? store_watch(t->store, heard, t) : -EOPNOTSUPP;

	if (r == -EOPNOTSUPP)
		return 0;
	if (r == -EPROTO) {
		log_warn("store: the database's schema predates change "
			 "notifications: changes other daemons make are seen "
			 "at the next refresh or SIGHUP; run credfsctl init "
			 "to migrate it");
		return 0;
	}
	if (r < 0)
		log_error("store: cannot watch for changes: %s", strerror(-r));
	return r;
}

void credstore_unwatch(struct cred_table *t)
{
	if (t && t->store)
		store_unwatch(t->store);
}

/* "a\nb\n" -> "a b" (newly allocated), or NULL. */
static char *scope_line(const char *lines)
{
	char *s, *p;
	size_t n;

	if (!lines || !lines[0])
		return NULL;
	s = strdup(lines);
	if (!s)
		return NULL;
	for (p = s; *p; p++)
		if (*p == '\n')
			*p = ' ';
	n = strlen(s);
	while (n && s[n - 1] == ' ')
		s[--n] = '\0';
	return s;
}

int credstore_fields(const struct provider_conf *p, char *const *values,
		     size_t n, struct record *r)
{
	size_t i;

	if (!n || !values)
		return 0;
	r->fields = calloc(n, sizeof(*r->fields));
	if (!r->fields)
		return -ENOMEM;
	for (i = 0; i < n && i < p->n_response_fields; i++) {
		struct record_field *f = &r->fields[r->n_fields];

		if (!values[i])
			continue;
		f->name = strdup(p->response_fields[i]);
		f->value = strdup(values[i]);
		r->n_fields++;
		if (!f->name || !f->value)
			return -ENOMEM;
	}
	return 0;
}

/* @w's record from its credential's state: 0, -ECANCELED (nothing to
 * write: no record, or no refresh token), -ENOMEM. */
static int prepare(struct credstore_write *w)
{
	struct cred *c = w->c;
	struct token *tok = (struct token *)w->tok;
	struct record *r = &w->r;
	int ret = cred_next_record(c, w->ot, &tok, r, &w->sw.expect);

	if (!w->tok)
		w->cur = tok; /* ours to unref */
	if (ret < 0)
		return ret;
	if (tok) {
		r->access_token = (char *)tok->value;
		r->token_type = tok->type;
		r->scope = scope_line(tok->scopes);
		r->issued_ms = tok->issued_ms;
		r->expires_ms = tok->expires_ms;
		if (credstore_fields(cred_conf(c)->provider, tok->fields,
				     tok->n_fields, r) < 0)
			return -ENOMEM;
	}
	w->sw.tenant = cred_conf(c)->tenant;
	w->sw.provider = cred_conf(c)->provider->name;
	w->sw.r = r;
	return 0;
}

/* After store_save_many(): someone else wrote it (-ESTALE)? Theirs wins
 * if it is newer (credfsctl add) or gone (remove); otherwise the store
 * fell behind, and ours goes in whatever is there. */
static int settle(struct cred_table *t, struct credstore_write *w, int ret)
{
	char msg[512];

	if (ret != -ESTALE)
		return ret;
	switch (credstore_reload(t, w->c, msg, sizeof(msg))) {
	case CS_ADOPTED:
	case CS_REMOVED:
	case CS_UNUSABLE: return -ECANCELED;
	default:
		ret = store_save(t->store, w->sw.tenant, w->sw.provider, &w->r,
				 STORE_ANY_GEN);
		return ret == -ESTALE ? -ECANCELED : ret;
	}
}

void credstore_write_many(struct cred_table *t, struct credstore_write *w,
			  size_t n)
{
	struct store_write **sw = calloc(n ? n : 1, sizeof(*sw));
	size_t i, k = 0;

	for (i = 0; i < n; i++) {
		w[i].pr.err = 0;
		w[i].pr.gen = 0;
		w[i].sw.r = NULL;
		w[i].ret = prepare(&w[i]);
		if (w[i].ret < 0)
			w[i].sw.r = NULL;
		else if (sw)
			sw[k++] = &w[i].sw;
		else
			w[i].ret = store_save(t->store, w[i].sw.tenant,
					      w[i].sw.provider, &w[i].r,
					      w[i].sw.expect);
	}
	if (sw)
		store_save_many(t->store, sw, k);
	for (i = 0; i < n; i++) {
		struct credstore_write *x = &w[i];

		if (x->sw.r) { /* prepared: the store was asked */
			if (sw)
				x->ret = x->sw.ret;
			x->ret = settle(t, x, x->ret);
			if (x->ret != -ECANCELED) {
				x->pr.err = x->ret;
				x->pr.gen = x->r.generation;
			}
		}
		x->r.access_token = NULL; /* borrowed */
		x->r.token_type = NULL;
		record_clear(&x->r);
		token_unref(x->cur);
		x->cur = NULL;
	}
	free(sw);
}

int credstore_write(struct cred_table *t, struct cred *c,
		    const struct token *tok, const struct oauth_token *ot,
		    struct persist_result *pr)
{
	struct credstore_write w = {.c = c, .tok = tok, .ot = ot};

	credstore_write_many(t, &w, 1);
	*pr = w.pr;
	return w.ret;
}
