/*
 * cred_int.h: a credential's state, for the files that own it (cred.c,
 * and cred_state.c for what a handoff carries). Everyone else reaches it
 * through cred.h.
 */
#ifndef CREDFS_CRED_INT_H
#define CREDFS_CRED_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cred.h"
#include "record.h"

struct cred {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* broadcast after every completed attempt */
	const struct cred_conf *conf;
	uint32_t index;		/* its slot: stable, see tree.h */
	atomic_bool live;	/* in the configuration now (a reload may
				 * remove it: the slot stays, unused) */
	struct rf_entry *entry; /* the refresher's, under its lock */
	bool uses_store;	/* the refresh_token grant: for good, as a
				 * slot keeps its provider and its grant */

	/* Under lock. */
	struct token *cur;
	struct token *prev;
	uint64_t last_gen;
	bool in_flight;
	uint64_t attempts; /* completed requests */
	unsigned consecutive_failures;
	uint64_t refresh_count; /* successful requests */
	uint64_t failure_count;
	int64_t last_refresh_ms; /* wall clock of the last success, 0 never */
	int64_t next_refresh_ms; /* wall clock of the next planned request */
	int64_t spread_ms; /* when a late refresh's next was last spread */
	int64_t last_error_ms;	 /* wall clock of the last failure, 0 never */
	char *last_error;	 /* text_set(): NULL for none */
	uint64_t version; /* bumped on every change above */

	/* The refresh_token grant and the store, under lock. */
	bool revoked;	       /* invalid_grant, confirmed against the store */
	bool client_error;     /* the provider refused our client */
	char *refresh_token;   /* NULL: none (no record, or an unusable one) */
	struct record_client client; /* registered for it alone, or none */
	uint64_t record_gen;   /* generation of the newest state, in memory */
	uint64_t durable_gen;  /* newest generation known to be in the store */
	uint64_t flight_gen;   /* record_gen when the request in flight began */
	int64_t rt_expires_ms; /* the refresh token's known expiry; 0 */
	uint64_t persist_failures;
	int64_t persist_error_ms; /* 0: the newest state is durable */
	char *persist_error;	  /* text_set(): NULL for none */
	atomic_bool present; /* false: no record, so no directory */

	unsigned waiting; /* openers waiting for a refresh, under lock */

	/* Lock-free counters. */
	atomic_uint_fast64_t reads;
	atomic_uint_fast64_t open_errors;
	/* Its schedule and requests are the refresher's own (struct entry
	 * in refresher.c), not here. */
};

#endif
