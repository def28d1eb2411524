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

#include "config.h"
#include "oauth.h"

struct config;
struct json_t;
struct record;
struct record_client;
struct store;
struct cred_conf;
struct provider_conf;

enum cred_state {
	CRED_PENDING,	   /* no token yet, first request not answered */
	CRED_VALID,	   /* a token that is not expired */
	CRED_REFRESHING,   /* valid, and a request is in flight */
	CRED_EXPIRED,	   /* the only token left has expired */
	CRED_ERROR,	   /* no token yet, and requests are failing */
	CRED_REVOKED,	   /* the provider refused the refresh token */
	CRED_CLIENT_ERROR, /* the provider refused our client credentials */
	CRED_ABSENT,	   /* refresh_token grant, and no record in the store */
	CRED_STATE_COUNT,
};

/* One token generation: immutable once published. */
struct token {
	atomic_uint refs;
	uint64_t gen;	    /* 1, 2, ...; 0 means "no token" */
	int64_t issued_ms;  /* wall clock, when the request was sent */
	int64_t expires_ms; /* wall clock */
	char *type;	    /* "Bearer" */
	char *scopes;	    /* granted scopes, sorted, one per line */
	char *over;    /* granted, not requested, space-separated; or NULL */
	char fp[9];    /* fingerprint: first 8 hex of SHA-256 */
	/* With a resource indicator: 1 when the token (a JWT) names it as
	 * its audience, 0 when it names another (aud_other), -1 unknown. */
	signed char aud_ok;
	char aud_other[80];
	int64_t floored_from_ms; /* the provider's expires_in when it was
				  * under min_lifetime_s (raised to it); 0 */
	char **fields; /* the provider's response_fields (NULL entries:
			* unknown); n_fields of them */
	size_t n_fields;
	size_t len;
	char value[]; /* len bytes, NUL-terminated, wiped on free */
};

struct rf_entry;
struct tree_names;

/* A credential: its state is cred.c's own (cred_int.h); everyone else
 * goes through the functions below. */
struct cred;

/* What the refresher plans a credential from, taken under its lock. */
struct cred_plan {
	bool parked;		 /* nothing to send until a record arrives */
	int64_t next_refresh_ms; /* wall clock; 0: at once */
	uint64_t gen;		 /* the current token's generation; 0: none */
	int64_t deadline_ms;	 /* when it counts as expired (wall clock) */
	bool unpersisted;	 /* the newest state is not in the store yet */
};

/* Credentials live in chunks that never move, by slot: 1M at most. */
#define CRED_CHUNK 256
#define CRED_CHUNKS 4096

struct cred_table {
	const struct config *cfg;
	struct audit *audit; /* refresh outcomes; its health in status */
	struct store *store; /* NULL without one */
	/* By slot (cred_at()): a reload adds chunks, never moves one. */
	struct cred *_Atomic chunks[CRED_CHUNKS];
	atomic_uint n_slots;	      /* slots below this may be in use */
	struct tree_names *names;     /* the slots' names (tree.h) */
	atomic_uint_fast64_t version; /* bumped on any credential change */
	/*
	 * Whoever reads cfg or a credential's conf (FUSE operations, the
	 * refresher's rounds, control requests, the store worker) does so
	 * between cred_table_enter() and cred_table_exit(): a read-side
	 * section of userspace RCU (liburcu-bp), through
	 * cred_table_config() and cred_conf(). A reload publishes the new
	 * configuration and hands the old one to cred_table_retire(),
	 * which frees it once every section that may have seen it ended
	 * (call_rcu: the reload waits for no one, and a section that is
	 * long holds back only that free). Built with SANITIZE=1 (the
	 * ASan suite), a read outside a section aborts.
	 */
	atomic_uint cfg_retained; /* replaced, not yet freed (metrics) */
	/* Configuration reloads refused, and whether the last one was. */
	atomic_uint_fast64_t reload_failures;
	atomic_bool reload_refused;
	atomic_bool store_down; /* a shared store could not be reached */
	atomic_uint_fast64_t lease_queries; /* refresh leases asked for */
	atomic_bool stopping;	/* cred_table_stop_waits() was called */
	/* Asks the refresher to refresh @c now (single-flight). */
	void (*kick)(void *arg, struct cred *c);
	/* Tells the refresher that @c's plan changed outside it (a record was
	 * adopted or removed): @p is its state now. Called with @c's lock
	 * held. */
	void (*replan)(void *arg, struct cred *c, const struct cred_plan *p);
	void *kick_arg;
	/* Tells the filesystem that a credential changed in a way that a
	 * waiting open may have waited for. Called with that credential's
	 * lock held: it may only signal. */
	void (*wake)(void *arg);
	void *wake_arg;
	/* Tells the filesystem that @c's directory appeared, went or changed
	 * its tokens outside a refresh. No lock held. */
	void (*notify)(void *arg, struct cred *c);
	void *notify_arg;
	/* Tells the refresher that credentials came (@added, live now) and
	 * went (@removed, not live any more) with a reload; returns once it
	 * has taken them on and let them go. */
	void (*apply)(void *arg, struct cred **added, size_t n_added,
		      struct cred **removed, size_t n_removed);
	/* Tells the filesystem that the tree changed from @old to @cfg. */
	void (*tree_changed)(void *arg, const struct config *old,
			     const struct config *cfg);
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
	signed char aud_ok; /* see struct token */
	char aud_other[80];
	int64_t floored_from_ms; /* see struct token */
	char *scopes; /* owned by the view: free with cred_view_clear */
	char *over;   /* likewise: over-privileged scopes, or NULL */
	uint64_t refresh_count, failure_count, reads, open_errors;
	unsigned consecutive_failures;
	int64_t last_refresh_ms, next_refresh_ms, last_error_ms;
	char last_error[OAUTH_ERROR_TEXT];
	uint64_t record_gen, durable_gen, persist_failures;
	int64_t persist_error_ms;
	int64_t rt_expires_ms; /* when the refresh token stops working, as
				* far as the provider's profile tells; 0 */
	char *fields[MAX_RESPONSE_FIELDS]; /* the current token's response
					    * fields, owned by the view */
	char persist_error[OAUTH_ERROR_TEXT];
	uint64_t version;
};

/* Build the table for @cfg (which must outlive it), numbering its tree
 * (tree_number()) as the handoff image @image did, if given. 0 or
 * -ENOMEM. */
int cred_table_new(struct config *cfg, const struct json_t *image,
		   struct cred_table **out);

/* @c's slot (tree.h). */
uint32_t cred_index(const struct cred *c);
/* The refresher's entry for @c (NULL: not scheduled), and setting it
 * (under the refresher's lock: cred.c keeps it, never reads it). */
struct rf_entry *cred_entry(const struct cred *c);
void cred_set_entry(struct cred *c, struct rf_entry *e);
/* A reload takes @c into the configuration (@live) or out of it. */
void cred_set_live(struct cred *c, bool live);
/* Bumped on every change of @c's state (rendered files follow it). */
uint64_t cred_version(struct cred *c);
/* Count an open of @c's token: served, or refused. Lock-free. */
void cred_count_open(struct cred *c, bool served);
/* Call @fn with @c's plan, @c's lock held throughout: what the
 * refresher does with it (@fn may take the refresher's lock, which
 * comes after a credential's) cannot cross a change of it. */
void cred_with_plan(struct cred *c,
		    void (*fn)(void *arg, struct cred *c,
			       const struct cred_plan *p),
		    void *arg);
/* The record generation of @c's newest state. */
uint64_t cred_record_gen(struct cred *c);
/* Whether the request in flight is void: the record was replaced or
 * removed since it began. */
bool cred_flight_voided(struct cred *c);

/* What credstore reads of @c's stored state (no secret). */
struct cred_store_state {
	bool present, has_refresh_token, revoked;
	uint64_t record_gen, durable_gen;
};
void cred_store_state(struct cred *c, struct cred_store_state *s);

/*
 * The next record of @c to write, after a response @ot (NULL: the state
 * held): its refresh token (@ot's rotated one, or the one held, copied),
 * generation, the refresh token's expiry, and in *@expect the generation
 * the store must hold now. *@tok, when NULL, gets the current token,
 * referenced (the caller unrefs it). 0; -ECANCELED with no record or no
 * refresh token (nothing to write); -ENOMEM.
 */
int cred_next_record(struct cred *c, const struct oauth_token *ot,
		     struct token **tok, struct record *r, uint64_t *expect);

/* How many credentials the configuration has now. */
size_t cred_table_count(struct cred_table *t);
/* The credential in slot @slot, or NULL (never used). Lock-free. */
struct cred *cred_at(const struct cred_table *t, uint32_t slot);
/* The credential of @cc (of the configuration that is or was @t's). */
struct cred *cred_of(const struct cred_table *t, const struct cred_conf *cc);
/* Whether @c is in the configuration now. Lock-free. */
bool cred_live(const struct cred *c);
/* A slot's credential, made (not live yet) if it was never used: for a
 * reload that adds it. NULL without memory. */
struct cred *cred_slot_make(struct cred_table *t, uint32_t slot);
/* A new slot's credential takes on @cc (before it is live). */
void cred_slot_take(struct cred *c, const struct cred_conf *cc);
/* Free the table and every token it holds. NULL is a no-op. */
void cred_table_free(struct cred_table *t);

/* Enter and leave a section that reads the configuration (an RCU
 * read-side section: lock-free, nests, any thread). */
void cred_table_enter(const struct cred_table *t);
void cred_table_exit(const struct cred_table *t);

/* The configuration now, in a section (see struct cred_table). */
const struct config *cred_table_config(const struct cred_table *t);

/* @c's configuration now, in a section. */
const struct cred_conf *cred_conf(const struct cred *c);

/* A reload (the one writer) publishes @cfg as the table's, and @cc as
 * @c's conf, for the sections that begin from then on. */
void cred_table_publish(struct cred_table *t, const struct config *cfg);
void cred_publish_conf(struct cred *c, const struct cred_conf *cc);

/* A reload replaced @cfg (not the one the table was made with, which its
 * maker frees): freed once no section may still hold it. */
void cred_table_retire(struct cred_table *t, struct config *cfg);

/* Wait until every credential's first request was answered (or it has a
 * token, or nothing to ask for), or until @deadline (monotonic ms).
 * Returns how many are still unanswered. */
size_t cred_table_wait_answered(struct cred_table *t, int64_t deadline);

/* Likewise for one credential; true once answered. */
bool cred_wait_answered(struct cred_table *t, struct cred *c, int64_t deadline);

/*
 * An operator's "refresh now": a request at once, whatever the backoff
 * (or the provider's client_error) says. One in flight is answered
 * first, then one more goes out. Returns what cred_refresh_wait() waits
 * for; that one waits until @deadline (monotonic ms): 0 once answered
 * (the outcome is @c's state), -ENOKEY when there is nothing to send (no
 * record, revoked), -ETIMEDOUT.
 */
uint64_t cred_refresh_now(struct cred_table *t, struct cred *c);
int cred_refresh_wait(struct cred_table *t, struct cred *c, uint64_t target,
		      int64_t deadline);

/* The daemon stops: every thread waiting in cred_wait_answered() or
 * cred_wait_token() stops waiting now, and none waits from now on, so
 * that nothing holds the exit for open_wait_s. */
void cred_table_stop_waits(struct cred_table *t);

/* Without a token, ask for one now and wait for the answer until
 * @deadline (monotonic ms). True if a token is held. */
bool cred_wait_token(struct cred_table *t, struct cred *c, int64_t deadline);

/*
 * The refresh token's absolute expiry after a response @ot from @p to a
 * request sent at @sent_ms, when it was @before: what the response says
 * (refresh_token_expires_in), else for a new refresh token the profile's
 * refresh_token_lifetime_s (0: unknown), else unchanged.
 */
int64_t cred_rt_expiry(const struct provider_conf *p,
		       const struct oauth_token *ot, int64_t sent_ms,
		       int64_t before);

/* Wall-clock ms from which @tok counts as expired for @c: its expiry less
 * the clock-skew margin. The one definition every path uses. */
int64_t cred_token_deadline(const struct cred *c, const struct token *tok);
/* Wall clock (ms) from which @tok no longer opens at once: less than the
 * effective min_ttl left, or past its deadline, whichever comes first. */
int64_t cred_token_fresh_until(const struct cred *c, const struct token *tok);

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

/* Openers that may wait for one credential's refresh at once; more get
 * -EAGAIN at once. */
#define CRED_MAX_WAITING 256

/* An open waiting for a refresh, without a thread: see cred_open_begin. */
struct cred_wait {
	struct token *tok; /* the generation it waits to see answered */
	uint64_t seen;	   /* attempts when it began */
	int64_t deadline;  /* monotonic ms: open_wait from the open */
	bool active;
};

/*
 * The open() rule for generation @gen (low 32 bits) of @c (DESIGN.md,
 * Freshness), without blocking: a referenced token in *@out, or
 * -EINPROGRESS when the token is too close to expiry and the open has to
 * wait for a refresh (which it has started if none was in flight). Then
 * @w holds the wait: call cred_open_resume() whenever the credential woke
 * (cred_table.wake) or the deadline (open_wait) passed, or
 * cred_wait_cancel(). The answers: 0, -ESTALE when @gen is no longer
 * served (the caller looks up again), -EKEYEXPIRED, -EAGAIN when no token
 * was ever obtained (or CRED_MAX_WAITING openers wait already),
 * -EKEYREVOKED after invalid_grant, -EKEYREJECTED when the provider
 * refuses our client and no token is left, or -ENOENT when the credential
 * has no record.
 */
int cred_open_begin(struct cred_table *t, struct cred *c, uint32_t gen,
		    struct token **out, struct cred_wait *w);

/* -EINPROGRESS while @w still waits (no answer, deadline not passed);
 * otherwise the open's answer, as cred_open_begin() gives, and @w ends. */
int cred_open_resume(struct cred *c, struct cred_wait *w, struct token **out);

/* End @w without an answer. Safe on an ended wait. */
void cred_wait_cancel(struct cred *c, struct cred_wait *w);

/* Whether @c has a directory: false for a refresh_token credential with
 * no record in the store. Lock-free. */
bool cred_present(const struct cred *c);

/* Whether @c uses the refresh_token grant (and so the store). */
bool cred_uses_store(const struct cred *c);

enum cred_begin {
	CRED_BEGIN_OK,	 /* a request may go out */
	CRED_BEGIN_BUSY, /* one is in flight already */
	CRED_BEGIN_PARK, /* nothing to send until a record arrives */
};

/*
 * Refresher: mark a request as started. For the refresh_token grant,
 * *@refresh_token gets a copy of the refresh token to send (wipe it with
 * strfreezero) and @client a copy of the client registered for it (ids
 * NULL when none: record_client_clear() it); otherwise NULL.
 */
enum cred_begin cred_begin_attempt(struct cred *c, char **refresh_token,
				   struct record_client *client);

/* A copy of the client registered for @c (all NULL when none). 0 or
 * -ENOMEM. */
int cred_client(struct cred *c, struct record_client *client);

/*
 * A token generation built from a successful response to a request sent at
 * @sent_ms, not yet published. NULL without memory.
 */
struct token *cred_token_new(struct cred *c, struct oauth_token *ot,
			     int64_t sent_ms);

/* What became of persisting a refresh's result. */
struct persist_result {
	int err;      /* 0, or -errno of store_save() */
	uint64_t gen; /* the generation the result was given (0: not saved) */
};

/*
 * Refresher: record the outcome of a request sent at @sent_ms, publish
 * @tok (built by cred_token_new(), taken over; NULL after a failure), take
 * over a rotated refresh token from @res, note @persist, wake waiting
 * openers, and plan the next request with jitter @u in [0, 1). A request
 * that went out @late (queued behind others: a burst) has its next one
 * spread over the refresh period (plan_spread_at()), once in
 * SPREAD_EVERY periods at most, so that a backlog that stays does not
 * feed itself with early refreshes. After invalid_grant on the
 * refresh_token grant the credential is revoked. Returns the next
 * request's wall-clock time in ms, or INT64_MAX for none.
 */
#define SPREAD_EVERY 4

int64_t cred_finish_attempt(struct cred_table *t, struct cred *c,
			    struct oauth_result *res, struct token *tok,
			    const struct persist_result *persist, double u,
			    bool late);

/*
 * Refresher: the request in flight is void because the record was
 * replaced meanwhile (credfsctl add, or another writer): wake waiters and
 * try again at once with the new one. Returns the next request's time.
 */
int64_t cred_abandon_attempt(struct cred_table *t, struct cred *c);

/*
 * Adopt record @r as @c's state: its refresh token (taken over from @r),
 * generation and, if still valid, its access token as a new generation;
 * clears errors, and revoked unless @r is a revoked record (then nothing
 * is served or asked for until a newer record comes). Plans the next
 * refresh with jitter @u.
 * Returns true if a valid token is now served.
 */
bool cred_adopt_record(struct cred_table *t, struct cred *c, struct record *r,
		       double u);

/* The record is gone: no token, no refresh token, no directory. */
void cred_forget(struct cred_table *t, struct cred *c);

/* A reload removed @c (not live any more): nothing of its state stays
 * but its generation count (so that its inode numbers are not used again
 * if it comes back), and openers waiting on it get -ENOENT. */
void cred_retire(struct cred_table *t, struct cred *c);

/* The record could not be used (@why): state error, nothing to refresh. */
void cred_record_unusable(struct cred_table *t, struct cred *c,
			  const char *why);

/* The store holds less than memory (rolled back, damaged: @why): write
 * the state again, whatever is on disk now. */
void cred_store_behind(struct cred_table *t, struct cred *c, const char *why);

/* Note the outcome of persisting generation @gen (which becomes the
 * newest state's generation). */
void cred_note_persist(struct cred_table *t, struct cred *c, uint64_t gen,
		       int err);

/*
 * Introspection says generation @gen is no longer active (RFC 7662): for
 * the refresh_token grant the grant was revoked (state revoked, as after
 * invalid_grant); a client-credentials token is dropped and a new one
 * asked for. False if @gen is no longer current (nothing done).
 */
bool cred_revoked_by_provider(struct cred_table *t, struct cred *c,
			      uint64_t gen, const char *why);

/*
 * A shared store was (@up) or was not reachable when @c was due: while it
 * is not, status says so (health store_failing) with @why; once it is
 * again and nothing waits to be written, that clears. True when @why is
 * new for @c (worth a log line).
 */
bool cred_store_reachable(struct cred_table *t, struct cred *c, bool up,
			  const char *why);

/* Refresher: @c's request waits @delay_ms (another daemon refreshes it,
 * or the store is down). */
void cred_defer(struct cred_table *t, struct cred *c, int64_t delay_ms);

/* Set or clear client_error (the provider refused our client). */
void cred_set_client_error(struct cred_table *t, struct cred *c, bool on);

/*
 * The state a handoff carries (cred_state.c, handoff.h): @tok, or @c's
 * token generations with their bytes, counters and schedule, as JSON
 * (NULL without memory). A refresh token is never in it: it lives in the
 * store. token_import() gives a token of one reference, or NULL for
 * anything malformed.
 */
struct json_t *token_export(const struct token *tok);
struct token *token_import(const struct json_t *j);
struct json_t *cred_export(struct cred *c);
/* Whether image @j is of @c (the same tenant and provider names). */
bool cred_export_matches(const struct cred *c, const struct json_t *j);
/* Before anything is published: number @c's next generations above
 * @floor and well above any that image @j (NULL: none) names, so that no
 * inode the kernel may hold is used again. */
void cred_import_floor(struct cred *c, const struct json_t *j, uint64_t floor);
/* After the store was read: serve @j's tokens (with their generations,
 * so that the kernel's inodes stay valid) and take its counters and
 * schedule, where they are still @c's state: the token is not expired,
 * and a store-backed credential's record is the one it described. True
 * if taken. */
bool cred_import(struct cred_table *t, struct cred *c, const struct json_t *j);

#endif
