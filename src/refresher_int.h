/*
 * refresher_int.h: the refresher's own state and the functions its
 * files share: refresher.c (the loop, lanes, requests, answers, reloads),
 * refresher_heap.c (the schedule), refresher_store.c (the store's I/O,
 * on the store worker, and what comes of it) and refresher_introspect.c
 * (RFC 7662). Private to those files.
 */
#ifndef CREDFS_REFRESHER_INT_H
#define CREDFS_REFRESHER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "cred.h"
#include "oauth.h"
#include "refresher.h"
#include "worker.h"

#define NOT_IN_HEAP SIZE_MAX
#define PERSIST_RETRY_MIN_MS 500
#define PERSIST_RETRY_MAX_MS (10 * 1000)
#define TAG_INTROSPECT 1 /* an http_req's tag: an introspection */

struct lane {
	unsigned inflight;
	struct cred *head, *tail; /* waiting for a free slot */
	bool client_error;	  /* the provider refuses our client */
	int64_t refused_sent_ms;  /* when the refused request went out */
	int64_t hold_mono;	  /* rate limited: nothing before this */
	double budget;		  /* max_requests_per_s: requests in hand */
	int64_t budget_mono;	  /* when budget was last topped up */
};

/*
 * What the refresher keeps of each credential: its schedule and its
 * requests. Private to the refresher's files (struct cred holds only the
 * pointer, set and cleared under the refresher's lock).
 */
struct rf_entry {
	int64_t due_mono;     /* heap key: min(attempt, expiry, persist) */
	int64_t attempt_mono; /* next request */
	int64_t expiry_mono;  /* when the current token expires; INT64_MAX */
	uint64_t expiry_gen;
	int64_t persist_mono; /* next try to persist; INT64_MAX: none due */
	unsigned persist_tries;
	int64_t introspect_mono; /* next introspection; INT64_MAX: none */
	uint64_t introspect_gen; /* the generation being introspected */
	struct http_req *ireq;	 /* the introspection in flight */
	size_t heap_idx;
	struct cred *wait_next; /* in its lane's FIFO */
	struct http_req *req;	/* the request in flight */
	int64_t sent_ms;
	bool leased; /* holds its refresh lease in a shared store */
	bool late;   /* its request went out LATE_MS or more after due */
	/* A job of its is with the store worker (refresher_store.c): out
	 * of the heap until it comes back; kicked, an open asked for a
	 * refresh meanwhile. */
	bool at_store;
	bool kicked;
	/* A reload removed it while its request was in flight: the answer
	 * is waited for and stored (a rotated refresh token in it), then
	 * the entry goes, and this change is told. */
	struct change *leaving;
};

/* A request that waits this long in its lane (behind others, as in a
 * burst) is late: see cred_finish_attempt(). */
#define LATE_MS 1000

/* @c's entry in @rf. */
#define E(rf, c) ((void)(rf), cred_entry(c))

/* Credentials a reload added and removed, for the refresher to take on
 * and let go (t->apply, apply()). */
struct change {
	struct change *next;
	struct cred **added, **removed;
	size_t n_added, n_removed;
	size_t leaving; /* removed ones whose answer is still awaited */
	bool done;
};

struct refresher {
	struct cred_table *t;
	refresher_rotate_fn on_rotate;
	refresher_expire_fn on_expire;
	void *arg;
	CURLM *multi;
	struct lane *lanes; /* one per provider slot (tree.h) */
	size_t n_lanes;	    /* only the refresher thread grows it */
	int64_t lane_at;    /* the earliest a held-back lane may send */
	uint64_t rng;
	bool started;
	struct worker *store;	  /* the store's I/O (refresher_store.c) */
	unsigned jobs;		  /* rf_jobs out, but unleases */
	struct work *inline_done; /* run here, no worker: for rf_jobs_done() */

	pthread_t thread;
	pthread_mutex_t lock; /* heap, stop and done */
	pthread_cond_t done_cond;
	struct cred **heap;
	size_t n, heap_cap;
	struct change *changes; /* a reload's, to take on */
	pthread_cond_t change_cond;
	atomic_bool stop;    /* no new requests from now on */
	int64_t drain_until; /* monotonic: the last wait for those in flight */
	bool done;	     /* the thread has left its loop */
	/* Proof of life, once a round and at least every beat_every_ms. */
	void (*beat)(void *arg);
	void *beat_arg;
	int64_t beat_every_ms;
};

/* A lease outlives the request (timeout_s) and the write after it. */
#define LEASE_EXTRA_MS 10000
#define LEASE_BUSY_RETRY_MS 1000
#define STORE_DOWN_RETRY_MS 2000

static inline int64_t rf_min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

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

/* refresher_heap.c: the schedule, a min-heap keyed by each entry's
 * earliest due time. Under rf->lock. */
void rf_heap_push(struct refresher *rf, struct cred *c);
void rf_heap_fix(struct refresher *rf, struct cred *c);
struct cred *rf_heap_pop(struct refresher *rf);
int rf_heap_room(struct refresher *rf);
void rf_heap_remove(struct refresher *rf, struct cred *c);

/* refresher_store.c, on the refresher's thread. */
struct rf_job *rf_job_new(enum rf_job_kind kind, struct cred *c);
void rf_job_free(struct rf_job *j);
/* Hand @j to the store worker (or run it here when none runs). */
void rf_submit(struct refresher *rf, struct rf_job *j);
/* Write again @c's state, whose last write failed (out of the heap). */
void rf_persist_retry(struct refresher *rf, struct cred *c);
/* End @c's refresh lease, unless a save of the record (@saved) did. */
void rf_release_lease(struct refresher *rf, struct cred *c, bool saved);
/* Take back what the store worker did. */
void rf_jobs_done(struct refresher *rf);

/* refresher_introspect.c. */
void rf_introspect(struct refresher *rf, struct cred *c);
void rf_introspected(struct refresher *rf, struct cred *c, struct http_req *req,
		     CURLcode code);

/* refresher.c, for the others. */
size_t rf_lane_of(struct refresher *rf, const struct cred *c);
int64_t rf_mono_of(int64_t ms);
void rf_reschedule(struct refresher *rf, struct cred *c);
void rf_send_request(struct refresher *rf, struct cred *c);
void rf_after_answer(struct refresher *rf, struct cred *c);
void rf_finish(struct refresher *rf, struct cred *c, struct oauth_result *res,
	       struct token *tok, bool voided, const struct persist_result *pr);
void rf_audit_persist(struct refresher *rf, struct cred *c,
		      const struct persist_result *pr);

#endif
