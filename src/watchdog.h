/*
 * watchdog: systemd's WatchdogSec= (sd_watchdog_enabled(3)). WATCHDOG=1
 * goes out only while the parts readers depend on make progress: the
 * refresher sends it from its own loop (a hung refresher sends nothing),
 * and only while a probe through the mount (a lookup a FUSE worker must
 * answer) came back recently (hung FUSE workers stop it too). A timer
 * thread that pinged on its own would keep a hung daemon alive.
 */
#ifndef CREDFS_WATCHDOG_H
#define CREDFS_WATCHDOG_H

#include <stdint.h>

struct watchdog;

/* Watch the mount at @mountpoint with the service manager's period
 * @period_ms: starts the probe thread. 0 or -errno. */
int watchdog_start(const char *mountpoint, int64_t period_ms,
		   struct watchdog **out);

/* How often watchdog_beat() must be called: a quarter of the period. */
int64_t watchdog_every_ms(const struct watchdog *wd);

/* From the refresher's loop: WATCHDOG=1 if the mount answered recently
 * and the last one went out a quarter period ago. NULL-safe. */
void watchdog_beat(void *wd);

/* Stop the probe thread and free. NULL-safe. */
void watchdog_stop(struct watchdog *wd);

#endif
