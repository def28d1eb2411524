/*
 * worker: a queue, a thread that runs it in batches, and a done list
 * (worker.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "worker.h"

struct worker {
	worker_run_fn run;
	void *run_arg;
	void (*wake)(void *arg);
	void *wake_arg;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct work *queue, **queue_tail;
	struct work *done, **done_tail;
	bool stop;
	bool running; /* the thread was started and not joined */
	pthread_t thread;
};

static void *loop(void *arg)
{
	struct worker *w = arg;
	struct work *batch, **tail;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		while (!w->queue && !w->stop)
			pthread_cond_wait(&w->cond, &w->lock);
		if (!w->queue)
			break;
		batch = w->queue;
		tail = w->queue_tail;
		w->queue = NULL;
		w->queue_tail = &w->queue;
		pthread_mutex_unlock(&w->lock);
		w->run(w->run_arg, batch);
		pthread_mutex_lock(&w->lock);
		*w->done_tail = batch;
		w->done_tail = tail;
		pthread_mutex_unlock(&w->lock);
		w->wake(w->wake_arg);
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

int worker_new(worker_run_fn run, void *run_arg, void (*wake)(void *arg),
	       void *wake_arg, struct worker **out)
{
	struct worker *w = calloc(1, sizeof(*w));
	int r;

	if (!w)
		return -ENOMEM;
	w->run = run;
	w->run_arg = run_arg;
	w->wake = wake;
	w->wake_arg = wake_arg;
	w->queue_tail = &w->queue;
	w->done_tail = &w->done;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	r = pthread_create(&w->thread, NULL, loop, w);
	if (r) {
		worker_free(w);
		return -r;
	}
	w->running = true;
	*out = w;
	return 0;
}

void worker_submit(struct worker *w, struct work *job)
{
	job->next = NULL;
	pthread_mutex_lock(&w->lock);
	*w->queue_tail = job;
	w->queue_tail = &job->next;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

struct work *worker_take_done(struct worker *w)
{
	struct work *list;

	pthread_mutex_lock(&w->lock);
	list = w->done;
	w->done = NULL;
	w->done_tail = &w->done;
	pthread_mutex_unlock(&w->lock);
	return list;
}

bool worker_running(struct worker *w)
{
	bool on;

	pthread_mutex_lock(&w->lock);
	on = !w->stop;
	pthread_mutex_unlock(&w->lock);
	return on;
}

void worker_stop(struct worker *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	if (w->running)
		pthread_join(w->thread, NULL);
	w->running = false;
}

void worker_free(struct worker *w)
{
	if (!w)
		return;
	worker_stop(w);
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
	free(w);
}
