/*
 * notify: see notify.h. The address rules are those of sd_notify(3):
 * an absolute path, or an abstract name written with a leading '@'.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"

/* Send @msg with @n fds attached to $NOTIFY_SOCKET. */
static int send_notify(const char *msg, const int *fds, size_t n)
{
	const char *where = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * NOTIFY_MAX_FDS)];
	} ctl;
	struct iovec iov = {.iov_base = (void *)msg, .iov_len = strlen(msg)};
	struct msghdr mh = {.msg_name = &sa, .msg_iov = &iov, .msg_iovlen = 1};
	struct cmsghdr *cm;
	size_t len;
	ssize_t r;
	int fd;

	if (!where || !where[0])
		return 0;
	len = strlen(where);
	if ((where[0] != '/' && where[0] != '@') ||
	    len >= sizeof(sa.sun_path) || n > NOTIFY_MAX_FDS)
		return -EINVAL;
	memcpy(sa.sun_path, where, len);
	if (where[0] == '@')
		sa.sun_path[0] = '\0';
	mh.msg_namelen =
		(socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	if (n) {
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * n);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * n);
	}
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	r = sendmsg(fd, &mh, MSG_NOSIGNAL);
	close(fd);
	return r < 0 ? -errno : 0;
}

int notify(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return send_notify(msg, NULL, 0);
}

int notify_with_fds(const int *fds, size_t n, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return send_notify(msg, fds, n);
}

bool notify_available(void)
{
	const char *where = getenv("NOTIFY_SOCKET");

	return where && where[0];
}

size_t notify_listen_fds(struct listen_fd *out, size_t max)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS"),
		   *names = getenv("LISTEN_FDNAMES");
	long long n = 0;
	char *end;
	size_t i;

	if (pid && fds && strtoll(pid, &end, 10) == (long long)getpid() &&
	    !*end) {
		n = strtoll(fds, &end, 10);
		if (*end || n < 0)
			n = 0;
	}
	for (i = 0; i < (size_t)n && i < max; i++) {
		size_t len = names ? strcspn(names, ":") : 0;

		out[i].fd = NOTIFY_LISTEN_FDS_START + (int)i;
		snprintf(out[i].name, sizeof(out[i].name), "%.*s", (int)len,
			 names ? names : "");
		if (names)
			names = names[len] ? names + len + 1 : NULL;
		fcntl(out[i].fd, F_SETFD, FD_CLOEXEC);
	}
	/* Not for what this process starts. */
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return i;
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
