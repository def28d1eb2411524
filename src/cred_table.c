/*
 * cred_table: the credential table. Credentials live in chunks by slot
 * that never move, so that anyone may hold a struct cred without a lock;
 * the table holds the configuration in force, published for readers in
 * sections (userspace RCU, liburcu-bp): a configuration a reload
 * replaced is freed once no section may still hold it (cred.h, struct
 * cred_table).
 */
#include <errno.h>
#ifdef CREDFS_CHECK_SECTIONS
#include <execinfo.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Small functions (rcu_dereference, rcu_assign_pointer) inline, as the
 * library's licence allows for them. */
#define URCU_INLINE_SMALL_FUNCTIONS
#include <urcu-bp.h>

#include "config.h"
#include "cred.h"
#include "cred_int.h"
#include "log.h"
#include "tree.h"
#include "util.h"

struct cred *cred_at(const struct cred_table *t, uint32_t slot)
{
	struct cred *chunk;

	if (slot >= atomic_load_explicit(&t->n_slots, memory_order_acquire))
		return NULL;
	chunk = atomic_load_explicit(
		&((struct cred_table *)t)->chunks[slot / CRED_CHUNK],
		memory_order_acquire);
	return chunk ? &chunk[slot % CRED_CHUNK] : NULL;
}

struct cred *cred_of(const struct cred_table *t, const struct cred_conf *cc)
{
	return cred_at(t, cc->slot);
}

size_t cred_table_count(struct cred_table *t)
{
	cred_table_enter(t);
	size_t n = cred_table_config(t)->n_creds;

	cred_table_exit(t);
	return n;
}

bool cred_live(const struct cred *c)
{
	return atomic_load_explicit(&c->live, memory_order_acquire);
}

struct cred *cred_slot_make(struct cred_table *t, uint32_t slot)
{
	struct cred *chunk, *c;
	pthread_condattr_t ca;
	size_t i;

	if (slot / CRED_CHUNK >= CRED_CHUNKS)
		return NULL;
	chunk = atomic_load(&t->chunks[slot / CRED_CHUNK]);
	if (!chunk) {
		chunk = calloc(CRED_CHUNK, sizeof(*chunk));
		if (!chunk)
			return NULL;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		for (i = 0; i < CRED_CHUNK; i++) {
			pthread_mutex_init(&chunk[i].lock, NULL);
			pthread_cond_init(&chunk[i].cond, &ca);
			chunk[i].index =
				(uint32_t)(slot / CRED_CHUNK * CRED_CHUNK + i);
			chunk[i].version = 1;
		}
		pthread_condattr_destroy(&ca);
		atomic_store(&t->chunks[slot / CRED_CHUNK], chunk);
	}
	c = &chunk[slot % CRED_CHUNK];
	if (slot >= atomic_load(&t->n_slots))
		atomic_store(&t->n_slots, slot + 1);
	return c;
}

void cred_slot_take(struct cred *c, const struct cred_conf *cc)
{
	c->conf = cc;
	c->uses_store = cc->provider->grant == GRANT_REFRESH_TOKEN;
	atomic_store(&c->present, !c->uses_store);
}

int cred_table_new(struct config *cfg, const struct json_t *image,
		   struct cred_table **out)
{
	struct cred_table *t;
	size_t i;

	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->cfg = cfg;
	atomic_init(&t->version, 1);
	if (tree_names_new(image, &t->names) < 0 ||
	    tree_number(t->names, cfg) < 0)
		goto fail;
	for (i = 0; i < cfg->n_creds; i++) {
		struct cred *c = cred_slot_make(t, cfg->creds[i].slot);

		if (!c)
			goto fail;
		cred_slot_take(c, &cfg->creds[i]);
		atomic_init(&c->live, true);
	}
	*out = t;
	return 0;
fail:
	cred_table_free(t);
	return -ENOMEM;
}

void cred_table_enter(const struct cred_table *t)
{
	(void)t;
	urcu_bp_read_lock();
}

void cred_table_exit(const struct cred_table *t)
{
	(void)t;
	urcu_bp_read_unlock();
}

/* In a section, or aborts (SANITIZE=1 builds: the ASan suite finds every
 * read of the configuration outside one). */
static void in_section(void)
{
#ifdef CREDFS_CHECK_SECTIONS
	if (!urcu_bp_read_ongoing()) {
		void *at[32];

		log_error("the configuration was read outside a section:");
		backtrace_symbols_fd(at, backtrace(at, 32), 2);
		abort();
	}
#endif
}

const struct config *cred_table_config(const struct cred_table *t)
{
	in_section();
	return rcu_dereference(((struct cred_table *)t)->cfg);
}

const struct cred_conf *cred_conf(const struct cred *c)
{
	in_section();
	return rcu_dereference(((struct cred *)c)->conf);
}

void cred_table_publish(struct cred_table *t, const struct config *cfg)
{
	rcu_assign_pointer(t->cfg, cfg);
}

void cred_publish_conf(struct cred *c, const struct cred_conf *cc)
{
	rcu_assign_pointer(c->conf, cc);
}

struct retired {
	struct rcu_head head;
	struct config *cfg;
	struct cred_table *t;
};

static void free_retired(struct rcu_head *head)
{
	struct retired *r = caa_container_of(head, struct retired, head);

	config_free(r->cfg);
	atomic_fetch_sub(&r->t->cfg_retained, 1);
	free(r);
}

void cred_table_retire(struct cred_table *t, struct config *cfg)
{
	struct retired *r = calloc(1, sizeof(*r));

	if (!r) {
		/* Kept, not freed: a leak beats a use after free. */
		log_error("out of memory: a replaced configuration stays");
		return;
	}
	r->cfg = cfg;
	r->t = t;
	atomic_fetch_add(&t->cfg_retained, 1);
	urcu_bp_call_rcu(&r->head, free_retired);
}

void cred_table_free(struct cred_table *t)
{
	size_t i, j;

	if (!t)
		return;
	urcu_bp_barrier(); /* every retired configuration freed */
	for (i = 0; i < CRED_CHUNKS; i++) {
		struct cred *chunk = atomic_load(&t->chunks[i]);

		for (j = 0; chunk && j < CRED_CHUNK; j++) {
			token_unref(chunk[j].cur);
			token_unref(chunk[j].prev);
			strfreezero(chunk[j].refresh_token);
			record_client_clear(&chunk[j].client);
			free(chunk[j].last_error);
			free(chunk[j].persist_error);
			pthread_mutex_destroy(&chunk[j].lock);
			pthread_cond_destroy(&chunk[j].cond);
		}
		free(chunk);
	}
	tree_names_free(t->names);
	free(t);
}
