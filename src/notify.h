/*
 * notify: the systemd notification protocol (sd_notify(3)) without
 * libsystemd: one datagram of "KEY=VALUE" lines to the Unix socket named
 * by $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace). A
 * no-op when the variable is unset, as outside Type=notify services.
 */
#ifndef CREDFS_NOTIFY_H
#define CREDFS_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Send the formatted lines. Returns 0, or -errno (ignored by callers:
 * notification is best effort). */
int notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* At most this many fds in one notification. */
#define NOTIFY_MAX_FDS 8
/* sd_listen_fds(3): passed fds start here. */
#define NOTIFY_LISTEN_FDS_START 3

/* Likewise with @n fds attached (SCM_RIGHTS), as FDSTORE=1 needs. */
int notify_with_fds(const int *fds, size_t n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Whether $NOTIFY_SOCKET names a service manager to tell. */
bool notify_available(void);

/* One fd passed to this process, and its name (LISTEN_FDNAMES). */
struct listen_fd {
	int fd;
	char name[64];
};

/*
 * The fds passed by the service manager (sd_listen_fds(3): when
 * LISTEN_PID is this process, LISTEN_FDS of them from fd 3, named by
 * LISTEN_FDNAMES) into @out, at most @max, made close-on-exec; the
 * variables are unset so that no child sees them. Returns how many.
 */
size_t notify_listen_fds(struct listen_fd *out, size_t max);

/* The service manager's watchdog period in ms (WATCHDOG_USEC, when
 * WATCHDOG_PID is unset or this process), or 0 when none is asked for. */
int64_t notify_watchdog_ms(void);

#endif
