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

/* Start the thread. 0 or -errno. */
int refresher_start(struct refresher *rf);

/* Stop the thread (if started), abort requests in flight, free. NULL-safe. */
void refresher_free(struct refresher *rf);

#endif
