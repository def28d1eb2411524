/*
 * watchdog: see watchdog.h. The probe is a lookup of a name that never
 * exists in the mount's root: the daemon answers ENOENT and the kernel
 * caches nothing (an error reply, not a negative entry), so every probe
 * reaches a FUSE worker.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"
#include "notify.h"
#include "util.h"
#include "watchdog.h"

#define PROBE_NAME ".credfs-watchdog-probe"

struct watchdog {
	char *probe; /* MOUNTPOINT/PROBE_NAME */
	int64_t period_ms;
	atomic_int_fast64_t answered; /* monotonic ms of the last probe back */
	int64_t pinged;		      /* refresher thread only */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	pthread_t thread;
};

static void *probe_main(void *arg)
{
	struct watchdog *wd = arg;
	struct stat st;

	pthread_mutex_lock(&wd->lock);
	while (!wd->stop) {
		int64_t next = time_mono_ms() + watchdog_every_ms(wd);
		struct timespec ts = {.tv_sec = next / 1000,
				      .tv_nsec = (next % 1000) * 1000000};

		pthread_mutex_unlock(&wd->lock);
		(void)stat(wd->probe, &st); /* blocks while the mount hangs */
		atomic_store(&wd->answered, time_mono_ms());
		pthread_mutex_lock(&wd->lock);
		while (!wd->stop &&
		       pthread_cond_timedwait(&wd->cond, &wd->lock, &ts) == 0)
			;
	}
	pthread_mutex_unlock(&wd->lock);
	return NULL;
}

int64_t watchdog_every_ms(const struct watchdog *wd)
{
	return wd->period_ms / 4 > 0 ? wd->period_ms / 4 : 1;
}

int watchdog_start(const char *mountpoint, int64_t period_ms,
		   struct watchdog **out)
{
	struct watchdog *wd = calloc(1, sizeof(*wd));
	pthread_condattr_t ca;
	int r;

	if (!wd || asprintf(&wd->probe, "%s/%s", mountpoint, PROBE_NAME) < 0) {
		free(wd);
		return -ENOMEM;
	}
	wd->period_ms = period_ms;
	atomic_init(&wd->answered, time_mono_ms());
	pthread_mutex_init(&wd->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&wd->cond, &ca);
	pthread_condattr_destroy(&ca);
	r = -pthread_create(&wd->thread, NULL, probe_main, wd);
	if (r < 0) {
		pthread_cond_destroy(&wd->cond);
		pthread_mutex_destroy(&wd->lock);
		free(wd->probe);
		free(wd);
		return r;
	}
	*out = wd;
	return 0;
}

void watchdog_beat(void *arg)
{
	struct watchdog *wd = arg;
	int64_t now = time_mono_ms();

	if (!wd || now - wd->pinged < watchdog_every_ms(wd))
		return;
	if (now - atomic_load(&wd->answered) > wd->period_ms / 2) {
		log_debug("watchdog: the mount has not answered a probe for "
			  "%lld ms; no ping",
			  (long long)(now - atomic_load(&wd->answered)));
		return;
	}
	wd->pinged = now;
	notify("WATCHDOG=1");
}

void watchdog_stop(struct watchdog *wd)
{
	if (!wd)
		return;
	pthread_mutex_lock(&wd->lock);
	wd->stop = true;
	pthread_cond_signal(&wd->cond);
	pthread_mutex_unlock(&wd->lock);
	pthread_join(wd->thread, NULL);
	pthread_cond_destroy(&wd->cond);
	pthread_mutex_destroy(&wd->lock);
	free(wd->probe);
	free(wd);
}
