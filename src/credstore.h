/*
 * credstore: the credential table's side of the store. It loads records
 * into credentials (at start, on reload) and writes a credential's state as
 * the next record generation. Every refresh token the daemon writes goes
 * through credstore_write(); the refresher is its only caller, so one
 * credential is never written by two threads.
 */
#ifndef CREDFS_CREDSTORE_H
#define CREDFS_CREDSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "cred.h"
#include "record.h"
#include "store.h"

struct cred;
struct oauth_token;
struct provider_conf;
struct record;
struct cred_table;
struct persist_result;
struct token;

enum credstore_change {
	CS_SAME,     /* nothing new in the store */
	CS_ADOPTED,  /* a newer record (or the first) is now served */
	CS_REMOVED,  /* the record is gone: so is the directory */
	CS_UNUSABLE, /* the record cannot be used: state error */
	CS_KEPT,     /* the store is behind (rolled back or damaged): the
		      * newer state in memory stays and is written again */
};

/* Load every refresh_token credential's record, a few thousand at a
 * time with store_load_many(). Before the refresher and the control
 * socket start (no other reload may run). Returns how many records were
 * loaded. */
size_t credstore_load_all(struct cred_table *t);

/* SIGHUP: reread every store-backed credential's record (a few thousand
 * to a store_load_many()); what changed goes to the log, and to @reply
 * (a line each) if not NULL. */
void credstore_reload_all(struct cred_table *t, struct buf *reply);

/*
 * Hear of the records other daemons change (a shared store: see
 * store_watch()) and reread each one that is news, within a moment of
 * the change: a rotation, an add (a revoked credential comes back), a
 * removal, a revocation. After a lost connection every record's
 * generation is compared again. 0 also for a store that has no such
 * thing (said in the log when it could and does not); -errno.
 */
int credstore_watch(struct cred_table *t);
void credstore_unwatch(struct cred_table *t);

/*
 * Read @c's record again (credfsctl add or remove, SIGHUP, invalid_grant)
 * and act on it. A description fit for logs goes into @msg. Calls the
 * table's notify hook when the directory appears or goes.
 */
enum credstore_change credstore_reload(struct cred_table *t, struct cred *c,
				       char *msg, size_t msglen);

/*
 * Refresher: write @c's state as the next generation: @tok (or the current
 * token when NULL) with the response @ot's rotated refresh token and its
 * expiry (@ot NULL, or without one: the refresh token held).
 * Fills @pr. Returns 0; -ECANCELED when the record was replaced or removed
 * by someone else meanwhile (the result must be dropped); or another
 * -errno with the write's error in @pr (serve from memory, retry later).
 */
int credstore_write(struct cred_table *t, struct cred *c,
		    const struct token *tok, const struct oauth_token *ot,
		    struct persist_result *pr);

/* One of several credstore_write()s done together. */
struct credstore_write {
	/* In: as credstore_write()'s arguments. */
	struct cred *c;
	const struct token *tok;
	const struct oauth_token *ot;
	/* Out: credstore_write()'s answer, and @pr. */
	int ret;
	struct persist_result pr;
	/* The rest is credstore_write_many()'s own. */
	struct record r;
	struct store_write sw;
	struct token *cur;
};

/* credstore_write() for each of @w (each of its own credential), with
 * the store's writes grouped (store_save_many(): one sync for them all
 * on the file store). */
void credstore_write_many(struct cred_table *t, struct credstore_write *w,
			  size_t n);

/* Fill @r's fields from @n @values of @p's response_fields (NULL entries
 * left out). 0 or -ENOMEM. */
int credstore_fields(const struct provider_conf *p, char *const *values,
		     size_t n, struct record *r);

#endif
