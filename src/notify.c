/*
 * notify: see notify.h. The address rules are those of sd_notify(3):
 * an absolute path, or an abstract name written with a leading '@'.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"

int notify(const char *fmt, ...)
{
	const char *where = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char msg[512];
	va_list ap;
	size_t len;
	ssize_t n;
	int fd;

	if (!where || !where[0])
		return 0;
	len = strlen(where);
	if ((where[0] != '/' && where[0] != '@') || len >= sizeof(sa.sun_path))
		return -EINVAL;
	memcpy(sa.sun_path, where, len);
	if (where[0] == '@')
		sa.sun_path[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	n = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
	close(fd);
	return n < 0 ? -errno : 0;
}

int64_t notify_watchdog_ms(void)
{
	const char *usec = getenv("WATCHDOG_USEC"),
		   *pid = getenv("WATCHDOG_PID");
	char *end;
	long long v;

	if (!usec || !usec[0])
		return 0;
	if (pid && pid[0] && strtoll(pid, NULL, 10) != (long long)getpid())
		return 0; /* meant for another process */
	errno = 0;
	v = strtoll(usec, &end, 10);
	if (errno || *end || v <= 0)
		return 0;
	return v / 1000 > 0 ? v / 1000 : 1;
}
