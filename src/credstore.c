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

static enum credstore_change reload(struct cred_table *t, struct cred *c,
				    char *msg, size_t msglen, bool quiet);

enum credstore_change credstore_reload(struct cred_table *t, struct cred *c,
				       char *msg, size_t msglen)
{
	return reload(t, c, msg, msglen, false);
}

static enum credstore_change reload(struct cred_table *t, struct cred *c,
				    char *msg, size_t msglen, bool quiet)
{
	enum credstore_change ch = CS_SAME;
	struct cred_store_state st;
	uint64_t have, durable;
	bool present, has_rt, revoked;
	char name[160], why[OAUTH_ERROR_TEXT];
	struct record r;
	int ret;

	name_of(c, name, sizeof(name));
	if (!t->store || !cred_uses_store(c)) {
		snprintf(msg, msglen, "%s: not kept in the store", name);
		return CS_SAME;
	}
	pthread_mutex_lock(&reload_lock);
	cred_store_state(c, &st);
	present = st.present;
	has_rt = st.has_refresh_token;
	revoked = st.revoked;
	have = st.record_gen;
	durable = st.durable_gen;

	ret = store_load(t->store, cred_conf(c)->tenant,
			 cred_conf(c)->provider->name, 0, &r);
	if (ret == 0 && !r.revoked && (!r.refresh_token || !r.refresh_token[0]))
		ret = -EPROTO;
	if (ret == -ENOENT) {
		if (present) {
			cred_forget(t, c);
			ch = CS_REMOVED;
		}
		snprintf(msg, msglen, "%s: no record%s", name,
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
	record_clear(&r);
	pthread_mutex_unlock(&reload_lock);
	if (ch == CS_KEPT || ch == CS_UNUSABLE)
		log_error("%s", msg);
	else if (ch != CS_SAME && !quiet)
		log_info("%s", msg);
	else if (ch != CS_SAME)
		log_debug("%s", msg);
	if (ch != CS_SAME && ch != CS_KEPT && t->notify)
		t->notify(t->notify_arg, c);
	return ch;
}

size_t credstore_load_all(struct cred_table *t)
{
	const struct config *cfg;
	char msg[512];
	size_t i, n = 0;

	cred_table_enter(t);
	cfg = cred_table_config(t);
	for (i = 0; i < cfg->n_creds; i++) {
		struct cred *c = cred_of(t, &cfg->creds[i]);

		if (cred_uses_store(c))
			n += reload(t, c, msg, sizeof(msg), true) == CS_ADOPTED;
	}
	cred_table_exit(t);
	return n;
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
