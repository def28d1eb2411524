/*
 * worker: slow work on a thread of its own. A caller that must not block
 * (the refresher's one thread drives every HTTP request) submits jobs;
 * the worker takes everything queued at once as one batch (so that the
 * run function may group what can be grouped, such as one fsync or one
 * transaction for several store writes), runs it, and hands the jobs back
 * in order through a done list, telling the caller with @wake.
 */
#ifndef CREDFS_WORKER_H
#define CREDFS_WORKER_H

#include <stdbool.h>

/* The first member of a job: the worker knows nothing else of it. */
struct work {
	struct work *next;
};

/* Run a batch (a list in submission order) on the worker's thread. */
typedef void (*worker_run_fn)(void *arg, struct work *batch);

struct worker;

/* A running worker that calls @run(@run_arg, batch) for batches and
 * @wake(@wake_arg) (from its thread, no lock held) when jobs are done.
 * 0 or -errno. */
int worker_new(worker_run_fn run, void *run_arg, void (*wake)(void *arg),
	       void *wake_arg, struct worker **out);

/* Queue @job. */
void worker_submit(struct worker *w, struct work *job);

/* The jobs done since the last call, in order, or NULL. */
struct work *worker_take_done(struct worker *w);

/* Whether @w's thread still takes jobs (false after worker_stop()). */
bool worker_running(struct worker *w);

/* Run what is queued, then end the thread. The done list stays for
 * worker_take_done(). NULL-safe; idempotent. */
void worker_stop(struct worker *w);

/* Stop and free; jobs still on the done list are the caller's to have
 * taken before. NULL-safe. */
void worker_free(struct worker *w);

#endif
