/*
 * notify: the systemd notification protocol (sd_notify(3)) without
 * libsystemd: one datagram of "KEY=VALUE" lines to the Unix socket named
 * by $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace). A
 * no-op when the variable is unset, as outside Type=notify services.
 */
#ifndef CREDFS_NOTIFY_H
#define CREDFS_NOTIFY_H

#include <stdint.h>

/* Send the formatted lines. Returns 0, or -errno (ignored by callers:
 * notification is best effort). */
int notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The service manager's watchdog period in ms (WATCHDOG_USEC, when
 * WATCHDOG_PID is unset or this process), or 0 when none is asked for. */
int64_t notify_watchdog_ms(void);

#endif
