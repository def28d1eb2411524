/*
 * refresher_int.h: what refresher.c hands its store worker
 * (refresher_store.c). Private to those two files.
 */
#ifndef CREDFS_REFRESHER_INT_H
#define CREDFS_REFRESHER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "cred.h"
#include "oauth.h"
#include "worker.h"

enum rf_job_kind {
	RJ_LEASE,   /* take the refresh lease before a request */
	RJ_WRITE,   /* store an answer before it is published */
	RJ_RETRY,   /* write again a state whose write failed */
	RJ_UNLEASE, /* give a lease back (nothing comes back of it) */
};

/* One piece of store I/O for one credential, and what came of it. The
 * refresher has at most one outstanding per credential (but unleases). */
struct rf_job {
	struct work w; /* first */
	enum rf_job_kind kind;
	struct cred *c;
	/* RJ_LEASE: in, the lease's length; out, store_lease()'s answer,
	 * the record's generation, whether another daemon wrote a newer
	 * one (then loaded, and the lease given back), and the store's
	 * words for a failure. */
	int64_t lease_ms;
	int lease;
	uint64_t lease_gen;
	bool newer;
	char words[256];
	/* RJ_WRITE: the answer (the job owns it) and its token; out,
	 * whether the record changed under the request. */
	struct oauth_result res;
	struct token *tok;
	int64_t sent_ms;
	bool voided;
	/* RJ_WRITE, RJ_RETRY: credstore_write()'s answer. */
	int ret;
	struct persist_result pr;
	/* RJ_UNLEASE: the names (the credential may be gone by then). */
	char *tenant, *provider;
};

/* The worker's run function for a batch of rf_jobs (@arg: the table). */
void rf_store_run(void *arg, struct work *batch);

#endif
