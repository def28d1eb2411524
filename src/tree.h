/*
 * tree: the numbering that keeps what the kernel holds meaning the same
 * thing for a daemon's life, across reloads that add, remove and rename
 * tenants, providers and credentials, and across handoffs. Every tenant,
 * provider and credential gets a slot the first time its name appears;
 * the name keeps that slot from then on (removed and added back, it is
 * the same slot) and no other name ever gets it. Inode numbers are made
 * of slots (fs_node.c), the refresher's lanes are by provider slot, and a
 * state image carries the numbering to the next process.
 */
#ifndef CREDFS_TREE_H
#define CREDFS_TREE_H

#include <stddef.h>

struct config;
struct cred;
struct cred_table;
struct json_t;
struct tree_names;

/* An empty numbering, or the one in handoff image @image. 0 or -ENOMEM. */
int tree_names_new(const struct json_t *image, struct tree_names **out);
void tree_names_free(struct tree_names *n);
/* The numbering, for a state image. */
struct json_t *tree_names_export(struct tree_names *n);

/* Give @cfg's providers, tenants and credentials their slots (new names
 * the next ones), and fill in its slot tables. 0 or -ENOMEM. */
int tree_number(struct tree_names *n, struct config *cfg);

/* What a reload changed. */
struct tree_change {
	struct cred **added, **removed;
	size_t n_added, n_removed;
	size_t tenants_added, tenants_removed;
};

/*
 * A reload's structural part: make @t's configuration @cfg (valid, and
 * config_can_apply() to the running one). Numbers @cfg; the credentials
 * it adds get their slots and, from the store, their records, before
 * they are seen; then @cfg is published (the kernel told of every name
 * that came or went), the refresher takes the added ones on and lets the
 * removed ones go, and those lose their tokens (a file open on one keeps
 * its bytes). Unchanged credentials keep everything. Called with no
 * section of @t held, one reload at a time. 0 with @ch filled (free with
 * tree_change_clear()), or -ENOMEM with nothing changed.
 */
int tree_apply(struct cred_table *t, struct config *cfg,
	       struct tree_change *ch);
void tree_change_clear(struct tree_change *ch);

#endif
