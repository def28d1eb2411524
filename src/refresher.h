/*
 * refresher: owns time. One thread, one schedule (a min-heap of due times)
 * for every credential, and one curl multi handle that drives every token
 * request, with a bounded number in flight per provider.
 */
#ifndef CREDFS_REFRESHER_H
#define CREDFS_REFRESHER_H

#include <stdint.h>

struct cred;
struct cred_table;
struct refresher;

/* Called on the refresher thread, with no lock held, after @c rotated. */
typedef void (*refresher_rotate_fn)(void *arg, struct cred *c);
/* Likewise, when generation @gen of @c expired with no successor. */
typedef void (*refresher_expire_fn)(void *arg, struct cred *c, uint64_t gen);

/* Create the refresher for @t; every credential is due at once. 0 or -errno. */
int refresher_new(struct cred_table *t, refresher_rotate_fn on_rotate,
		  refresher_expire_fn on_expire, void *arg,
		  struct refresher **out);

/* Before the start: call @beat(@arg) from the refresher's loop once a
 * round and at least every @every_ms (the watchdog's proof of life). */
void refresher_set_beat(struct refresher *rf, void (*beat)(void *arg),
			void *arg, int64_t every_ms);

/* Start the thread. 0 or -errno. */
int refresher_start(struct refresher *rf);

/*
 * Stop: no new requests go out; wait up to @drain_ms for the answers to
 * those in flight, store what they return (a rotated refresh token above
 * all), then end the thread. Returns once it has ended; a second call
 * (from any thread) waits for the first. NULL-safe.
 */
void refresher_stop(struct refresher *rf, int64_t drain_ms);

/* How long a stop waits for @t's requests in flight: the longest
 * provider timeout_s and the write of its answer. */
int64_t refresher_drain_ms(const struct cred_table *t);

/* Stop the thread (if started, without waiting for answers unless
 * refresher_stop() did), abort requests in flight, free. NULL-safe. */
void refresher_free(struct refresher *rf);

#endif
