/*
 * cred: the credential table. Each credential owns its lock, its current
 * and previous token generation, and its refresh bookkeeping. Token
 * generations are immutable and reference-counted, so a reader that opened
 * one keeps exactly those bytes however often the token rotates.
 */
#ifndef CREDFS_CRED_H
#define CREDFS_CRED_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "oauth.h"

struct config;
struct cred_conf;
struct http_req;

enum cred_state {
	CRED_PENDING,	 /* no token yet, first request not answered */
	CRED_VALID,	 /* a token that is not expired */
	CRED_REFRESHING, /* valid, and a request is in flight */
	CRED_EXPIRED,	 /* the only token left has expired */
	CRED_ERROR,	 /* no token yet, and requests are failing */
};

/* One token generation: immutable once published. */
struct token {
	atomic_uint refs;
	uint64_t gen;	    /* 1, 2, ...; 0 means "no token" */
	int64_t issued_ms;  /* wall clock, when the request was sent */
	int64_t expires_ms; /* wall clock */
	char *type;	    /* "Bearer" */
	char *scopes;	    /* granted scopes, sorted, one per line */
	char *over; /* granted, not requested, space-separated; or NULL */
	char fp[9]; /* fingerprint: first 8 hex of SHA-256 */
	size_t len;
	char value[]; /* len bytes, NUL-terminated, wiped on free */
};

struct cred {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* broadcast after every completed attempt */
	const struct cred_conf *conf;
	uint32_t index;

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
	int64_t last_error_ms;	 /* wall clock of the last failure, 0 never */
	char last_error[OAUTH_ERROR_TEXT];
	uint64_t version; /* bumped on every change above */

	/* Lock-free counters. */
	atomic_uint_fast64_t reads;
	atomic_uint_fast64_t open_errors;

	/* Owned by the refresher thread and its lock. */
	int64_t due_mono;     /* heap key: min(attempt_mono, expiry_mono) */
	int64_t attempt_mono; /* next request */
	int64_t expiry_mono;  /* when the current token expires; INT64_MAX */
	uint64_t expiry_gen;
	size_t heap_idx;
	struct cred *wait_next;
	struct http_req *req; /* the request in flight */
	int64_t sent_ms;
};

struct cred_table {
	const struct config *cfg;
	struct audit *audit; /* refresh outcomes; its health in status */
	struct cred *creds;  /* same order as cfg->creds */
	size_t n;
	atomic_uint_fast64_t version; /* bumped on any credential change */
	/* Asks the refresher to refresh @c now (single-flight). */
	void (*kick)(void *arg, struct cred *c);
	void *kick_arg;
};

/* A copy of a credential's non-secret state, for rendering. */
struct cred_view {
	enum cred_state state;
	bool has_token;
	uint64_t gen;
	int64_t issued_ms, expires_ms;
	size_t token_len;
	char token_type[65];
	char fp[9];
	char *scopes; /* owned by the view: free with cred_view_clear */
	char *over;   /* likewise: over-privileged scopes, or NULL */
	uint64_t refresh_count, failure_count, reads, open_errors;
	unsigned consecutive_failures;
	int64_t last_refresh_ms, next_refresh_ms, last_error_ms;
	char last_error[OAUTH_ERROR_TEXT];
	uint64_t version;
};

/* Build the table for @cfg (which must outlive it). 0 or -ENOMEM. */
int cred_table_new(const struct config *cfg, struct cred_table **out);
/* Free the table and every token it holds. NULL is a no-op. */
void cred_table_free(struct cred_table *t);

/* Wait until every credential's first request was answered, or until
 * @deadline (monotonic ms). Returns how many are still unanswered. */
size_t cred_table_wait_answered(struct cred_table *t, int64_t deadline);

/* Wall-clock ms from which @tok counts as expired for @c: its expiry less
 * the clock-skew margin. The one definition every path uses. */
int64_t cred_token_deadline(const struct cred *c, const struct token *tok);

/* Take another reference to @tok (NULL-safe); returns @tok. */
struct token *token_ref(struct token *tok);
/* Drop a reference, wiping and freeing at zero. NULL is a no-op. */
void token_unref(struct token *tok);

/* Name of @s: "pending", "valid", ... */
const char *cred_state_name(enum cred_state s);

/* Copy @c's state at @now_ms into @v. */
void cred_view(struct cred *c, int64_t now_ms, struct cred_view *v);
void cred_view_clear(struct cred_view *v);

/* The current token, referenced, or NULL when none was obtained yet. */
struct token *cred_current_token(struct cred *c);

/*
 * Generation @gen32 (low 32 bits, as in inode numbers) of @c: 0 with a
 * referenced token in *@out (NULL for generation 0, "no token yet"), or
 * -ESTALE when that generation is no longer held.
 */
int cred_token_of_gen(struct cred *c, uint32_t gen32, struct token **out);

/*
 * The open() rule for generation @gen (low 32 bits) of @c (DESIGN.md,
 * Freshness): return
 * a referenced token in *@out, waiting up to open_wait for a refresh when the
 * token is too close to expiry. Returns 0, -ESTALE when @gen is no longer
 * served (the caller looks up again), -EKEYEXPIRED, or -EAGAIN
 * when no token was ever obtained.
 */
int cred_open_token(struct cred_table *t, struct cred *c, uint32_t gen,
		    struct token **out);

/* Refresher: mark a request as started. Returns false if one already is. */
bool cred_begin_attempt(struct cred *c);

/*
 * Refresher: record the outcome of a request sent at @sent_ms, publish a
 * new generation on success (*@rotated), wake waiting openers, and plan the
 * next request with jitter @u in [0, 1). Returns its wall-clock time in ms.
 */
int64_t cred_finish_attempt(struct cred_table *t, struct cred *c,
			    struct oauth_result *res, int64_t sent_ms, double u,
			    bool *rotated);

#endif
