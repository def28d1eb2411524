/*
 * tree: see tree.h. The numbering is three sorted tables of names and
 * their slots (credentials named "tenant/provider": '/' is in no name),
 * touched only by whoever numbers a configuration: the start, and the
 * reload that holds the admin lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config.h"
#include "cred.h"
#include "credstore.h"
#include "log.h"
#include "tree.h"
#include "util.h"

struct name_slot {
	char *key;
	uint32_t slot;
};

struct name_map {
	struct name_slot *v; /* sorted by key */
	size_t n;
	uint32_t next; /* the slot a new name gets */
};

struct tree_names {
	pthread_mutex_t lock; /* a reload numbers, the keeper exports */
	struct name_map providers, tenants, creds;
};

static int cmp_key(const void *a, const void *b)
{
	return strcmp(((const struct name_slot *)a)->key,
		      ((const struct name_slot *)b)->key);
}

static struct name_slot *find(const struct name_map *m, const char *key)
{
	struct name_slot k = {(char *)key, 0};

	return m->n ? bsearch(&k, m->v, m->n, sizeof(k), cmp_key) : NULL;
}

/* Add @n new names (not in @m) with the next slots, in their order. */
static int add_all(struct name_map *m, char **keys, size_t n, uint32_t *slots)
{
	struct name_slot *v;
	size_t i;

	if (!n)
		return 0;
	v = realloc(m->v, (m->n + n) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	m->v = v;
	for (i = 0; i < n; i++) {
		slots[i] = m->next++;
		v[m->n++] = (struct name_slot){keys[i], slots[i]};
		keys[i] = NULL; /* the map's now */
	}
	qsort(m->v, m->n, sizeof(*v), cmp_key);
	return 0;
}

/* Number @n names (@keys, owned by the caller) into @slots. */
static int number(struct name_map *m, char **keys, size_t n, uint32_t *slots)
{
	size_t i, n_new = 0, *where = calloc(n + 1, sizeof(size_t));
	char **fresh = calloc(n + 1, sizeof(char *));
	uint32_t *got = calloc(n + 1, sizeof(uint32_t));
	int r = -ENOMEM;

	if (!where || !fresh || !got)
		goto out;
	for (i = 0; i < n; i++) {
		struct name_slot *f = find(m, keys[i]);

		if (f) {
			slots[i] = f->slot;
			continue;
		}
		fresh[n_new] = strdup(keys[i]);
		if (!fresh[n_new])
			goto out;
		where[n_new++] = i;
	}
	r = add_all(m, fresh, n_new, got);
	for (i = 0; r == 0 && i < n_new; i++)
		slots[where[i]] = got[i];
out:
	for (i = 0; fresh && i < n_new; i++)
		free(fresh[i]);
	free(where);
	free(fresh);
	free(got);
	return r;
}

static void map_free(struct name_map *m)
{
	while (m->n)
		free(m->v[--m->n].key);
	free(m->v);
}

void tree_names_free(struct tree_names *n)
{
	if (!n)
		return;
	map_free(&n->providers);
	map_free(&n->tenants);
	map_free(&n->creds);
	pthread_mutex_destroy(&n->lock);
	free(n);
}

/* @m from an image's {"name": slot, ...}; the next slot above them all. */
static int seed(struct name_map *m, const json_t *obj)
{
	const char *key;
	json_t *v;

	json_object_foreach ((json_t *)obj, key, v) {
		json_int_t slot = json_integer_value(v);
		struct name_slot *nv;

		if (!json_is_integer(v) || slot < 0 || slot >= INT32_MAX ||
		    find(m, key))
			continue;
		nv = realloc(m->v, (m->n + 1) * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		m->v = nv;
		m->v[m->n].key = strdup(key);
		if (!m->v[m->n].key)
			return -ENOMEM;
		m->v[m->n++].slot = (uint32_t)slot;
		qsort(m->v, m->n, sizeof(*nv), cmp_key);
		if ((uint32_t)slot >= m->next)
			m->next = (uint32_t)slot + 1;
	}
	return 0;
}

int tree_names_new(const json_t *image, struct tree_names **out)
{
	struct tree_names *n = calloc(1, sizeof(*n));
	const json_t *names = json_object_get(image, "names");

	if (!n)
		return -ENOMEM;
	pthread_mutex_init(&n->lock, NULL);
	if (seed(&n->providers, json_object_get(names, "providers")) < 0 ||
	    seed(&n->tenants, json_object_get(names, "tenants")) < 0 ||
	    seed(&n->creds, json_object_get(names, "creds")) < 0) {
		tree_names_free(n);
		return -ENOMEM;
	}
	*out = n;
	return 0;
}

static json_t *map_export(const struct name_map *m)
{
	json_t *j = json_object();
	size_t i;

	for (i = 0; j && i < m->n; i++)
		json_object_set_new(j, m->v[i].key, json_integer(m->v[i].slot));
	return j;
}

json_t *tree_names_export(struct tree_names *n)
{
	json_t *j;

	pthread_mutex_lock(&n->lock);
	j = json_pack("{s:o,s:o,s:o}", "providers", map_export(&n->providers),
		      "tenants", map_export(&n->tenants), "creds",
		      map_export(&n->creds));
	pthread_mutex_unlock(&n->lock);
	return j;
}

static int number_all(struct tree_names *n, struct config *cfg);

int tree_number(struct tree_names *n, struct config *cfg)
{
	int r;

	pthread_mutex_lock(&n->lock);
	r = number_all(n, cfg);
	pthread_mutex_unlock(&n->lock);
	return r;
}

static int number_all(struct tree_names *n, struct config *cfg)
{
	size_t i, most = cfg->n_creds > cfg->n_tenants ? cfg->n_creds
						       : cfg->n_tenants;
	char **keys = calloc(most + cfg->n_providers + 1, sizeof(char *));
	uint32_t *slots = calloc(most + cfg->n_providers + 1, sizeof(uint32_t));
	int32_t *of_slot = NULL;
	bool owned = false; /* keys[] are ours (credentials') */
	int r = -ENOMEM;

	if (!keys || !slots)
		goto out;
	for (i = 0; i < cfg->n_providers; i++)
		keys[i] = cfg->providers[i].name;
	if (number(&n->providers, keys, cfg->n_providers, slots) < 0)
		goto out;
	for (i = 0; i < cfg->n_providers; i++)
		cfg->providers[i].slot = slots[i];
	for (i = 0; i < cfg->n_tenants; i++)
		keys[i] = cfg->tenants[i].name;
	if (number(&n->tenants, keys, cfg->n_tenants, slots) < 0)
		goto out;
	for (i = 0; i < cfg->n_tenants; i++)
		cfg->tenants[i].slot = slots[i];
	memset(keys, 0, (most + 1) * sizeof(char *));
	owned = true;
	for (i = 0; i < cfg->n_creds; i++)
		if (asprintf(&keys[i], "%s/%s", cfg->creds[i].tenant,
			     cfg->creds[i].provider->name) < 0) {
			keys[i] = NULL;
			goto out;
		}
	if (number(&n->creds, keys, cfg->n_creds, slots) < 0)
		goto out;
	for (i = 0; i < cfg->n_creds; i++)
		cfg->creds[i].slot = slots[i];
	of_slot = malloc((n->tenants.next + 1) * sizeof(int32_t));
	if (!of_slot)
		goto out;
	for (i = 0; i < n->tenants.next; i++)
		of_slot[i] = -1;
	for (i = 0; i < cfg->n_tenants; i++)
		of_slot[cfg->tenants[i].slot] = (int32_t)i;
	free(cfg->tenant_of_slot);
	cfg->tenant_of_slot = of_slot;
	cfg->n_provider_slots = n->providers.next;
	cfg->n_tenant_slots = n->tenants.next;
	cfg->n_cred_slots = n->creds.next;
	r = 0;
out:
	for (i = 0; owned && i < cfg->n_creds; i++)
		free(keys[i]);
	free(keys);
	free(slots);
	return r;
}

void tree_change_clear(struct tree_change *ch)
{
	free(ch->added);
	free(ch->removed);
	memset(ch, 0, sizeof(*ch));
}

/* Tenants of @a whose slot has none in @b. */
static size_t tenants_gone(const struct config *a, const struct config *b)
{
	size_t i, n = 0;

	for (i = 0; i < a->n_tenants; i++)
		n += a->tenants[i].slot >= b->n_tenant_slots ||
		     b->tenant_of_slot[a->tenants[i].slot] < 0;
	return n;
}

int tree_apply(struct cred_table *t, struct config *cfg, struct tree_change *ch)
{
	const struct config *old = t->cfg; /* ours: the one writer */
	bool *keep = NULL;
	char msg[512];
	size_t i;

	memset(ch, 0, sizeof(*ch));
	if (tree_number(t->names, cfg) < 0)
		return -ENOMEM;
	keep = calloc(cfg->n_cred_slots + 1, sizeof(bool));
	ch->added = calloc(cfg->n_creds + 1, sizeof(*ch->added));
	ch->removed = calloc(old->n_creds + 1, sizeof(*ch->removed));
	if (!keep || !ch->added || !ch->removed)
		goto fail;
	/* The added ones: their slots and records, unseen yet. */
	for (i = 0; i < cfg->n_creds; i++) {
		struct cred *c = cred_at(t, cfg->creds[i].slot);

		keep[cfg->creds[i].slot] = true;
		if (c && cred_live(c))
			continue;
		c = cred_slot_make(t, cfg->creds[i].slot);
		if (!c)
			goto fail;
		cred_slot_take(c, &cfg->creds[i]);
		ch->added[ch->n_added++] = c;
	}
	for (i = 0; i < ch->n_added; i++)
		if (cred_uses_store(ch->added[i]))
			credstore_reload(t, ch->added[i], msg, sizeof(msg));
	/* Published: a section that reads @cfg finds every credential of it
	 * live and with its conf. */
	for (i = 0; i < cfg->n_creds; i++)
		cred_publish_conf(cred_of(t, &cfg->creds[i]), &cfg->creds[i]);
	for (i = 0; i < ch->n_added; i++)
		cred_set_live(ch->added[i], true);
	cred_table_publish(t, cfg);
	for (i = 0; i < old->n_creds; i++) {
		struct cred *c = cred_of(t, &old->creds[i]);

		if (!keep[cred_index(c)]) {
			cred_set_live(c, false);
			ch->removed[ch->n_removed++] = c;
		}
	}
	ch->tenants_added = tenants_gone(cfg, old);
	ch->tenants_removed = tenants_gone(old, cfg);
	atomic_fetch_add(&t->version, 1);
	free(keep);
	if (t->apply)
		t->apply(t->kick_arg, ch->added, ch->n_added, ch->removed,
			 ch->n_removed);
	for (i = 0; i < ch->n_removed; i++)
		cred_retire(t, ch->removed[i]);
	if (t->tree_changed)
		t->tree_changed(t->notify_arg, old, cfg);
	for (i = 0; i < ch->n_added && t->notify; i++)
		t->notify(t->notify_arg, ch->added[i]);
	return 0;
fail:
	free(keep);
	tree_change_clear(ch);
	return -ENOMEM;
}
