/*
 * metrics_http: the metrics file over HTTP, for scrapers that cannot read
 * files (metrics_listen). A loopback TCP address or a Unix socket, one
 * thread, one connection at a time: a scrape is one small GET, and a
 * client that stalls holds the thread for at most REQUEST_TIMEOUT_MS.
 * HTTP/1.0-style: every answer closes its connection.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cred.h"
#include "log.h"
#include "metrics_http.h"
#include "render.h"
#include "util.h"

#define REQUEST_TIMEOUT_MS 2000
#define SEND_TIMEOUT_MS 10000
#define MAX_REQUEST 8192

struct metrics_http {
	struct cred_table *t;
	int listen_fd;
	int stop[2];
	char *unix_path; /* removed at stop */
	pthread_t thread;
	bool started;
};

int metrics_listen_parse(const char *spec, struct sockaddr_storage *sa,
			 socklen_t *len, char *err, size_t errlen)
{
	struct sockaddr_in *in4 = (struct sockaddr_in *)sa;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
	struct sockaddr_un *un = (struct sockaddr_un *)sa;
	const char *start = spec, *stop, *port;
	char host[64];
	char *end;
	long p;

	memset(sa, 0, sizeof(*sa));
	if (spec[0] == '/') {
		if (strlen(spec) >= sizeof(un->sun_path)) {
			snprintf(err, errlen,
				 "a socket path of at most %zu bytes",
				 sizeof(un->sun_path) - 1);
			return -EINVAL;
		}
		un->sun_family = AF_UNIX;
		snprintf(un->sun_path, sizeof(un->sun_path), "%s", spec);
		*len = sizeof(*un);
		return 0;
	}
	/* HOST:PORT, or [HOST]:PORT for IPv6. */
	if (spec[0] == '[') {
		start = spec + 1;
		stop = strstr(spec, "]:");
		port = stop ? stop + 2 : NULL;
	} else {
		stop = strrchr(spec, ':');
		port = stop ? stop + 1 : NULL;
	}
	if (!stop || (size_t)(stop - start) >= sizeof(host)) {
		snprintf(err, errlen,
			 "use 127.0.0.1:PORT, [::1]:PORT or an absolute Unix "
			 "socket path");
		return -EINVAL;
	}
	snprintf(host, sizeof(host), "%.*s", (int)(stop - start), start);
	errno = 0;
	p = strtol(port, &end, 10);
	if (errno || *end || !*port || p < 1 || p > 65535) {
		snprintf(err, errlen, "port '%s': use 1 to 65535", port);
		return -EINVAL;
	}
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)p);
		*len = sizeof(*in4);
		if ((ntohl(in4->sin_addr.s_addr) >> 24) == 127)
			return 0;
	} else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)p);
		*len = sizeof(*in6);
		if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
			return 0;
	} else {
		snprintf(err, errlen,
			 "'%s' is not an IP address (no names are looked "
			 "up): use 127.0.0.1 or ::1",
			 host);
		return -EINVAL;
	}
	snprintf(err, errlen,
		 "%s is not a loopback address: metrics name every tenant "
		 "and credential, so they are served on loopback or a Unix "
		 "socket only (put a proxy in front to expose them)",
		 host);
	return -EINVAL;
}

/* Read the request head within REQUEST_TIMEOUT_MS; its length, or -1. */
static ssize_t read_head(int fd, char *req, size_t size)
{
	int64_t deadline = time_mono_ms() + REQUEST_TIMEOUT_MS;
	size_t have = 0;

	while (have + 1 < size) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int64_t left = deadline - time_mono_ms();
		ssize_t n;

		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return -1;
		n = recv(fd, req + have, size - 1 - have, MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			return -1;
		have += (size_t)n;
		req[have] = '\0';
		if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
			return (ssize_t)have;
	}
	return -1;
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

static void answer(int fd, const char *status, const char *extra,
		   const char *type, const char *body, size_t len, bool head)
{
	char hdr[512];
	int n = snprintf(hdr, sizeof(hdr),
			 "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: "
			 "%zu\r\nConnection: close\r\n%s\r\n",
			 status, type, len, extra);

	send_all(fd, hdr, (size_t)n);
	if (!head)
		send_all(fd, body, len);
}

static void serve_one(struct metrics_http *m, int fd)
{
	static const char plain[] = "text/plain; charset=utf-8";
	char req[MAX_REQUEST], *sp, *path, *q;
	struct timeval tv = {.tv_sec = SEND_TIMEOUT_MS / 1000};
	struct buf body;
	bool head;

	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (read_head(fd, req, sizeof(req)) < 0)
		return;
	sp = strchr(req, ' ');
	path = sp ? sp + 1 : NULL;
	q = path ? strpbrk(path, " ?") : NULL;
	if (!sp || !q) {
		answer(fd, "400 Bad Request", "", plain, "bad request\n", 12,
		       false);
		return;
	}
	*sp = '\0';
	*q = '\0';
	head = !strcmp(req, "HEAD");
	if (strcmp(req, "GET") && !head) {
		answer(fd, "405 Method Not Allowed", "Allow: GET, HEAD\r\n",
		       plain, "GET /metrics\n", 13, false);
		return;
	}
	if (strcmp(path, "/metrics")) {
		answer(fd, "404 Not Found", "", plain, "GET /metrics\n", 13,
		       head);
		return;
	}
	buf_init(&body, 256 * 1024 * 1024);
	cred_table_enter(m->t);
	if (render_metrics(m->t, NULL, time_real_ms(), &body) < 0) {
		cred_table_exit(m->t);
		answer(fd, "500 Internal Server Error", "", plain,
		       "cannot render the metrics\n", 26, head);
		buf_free(&body);
		return;
	}
	cred_table_exit(m->t);
	answer(fd, "200 OK", "", "text/plain; version=0.0.4; charset=utf-8",
	       body.data ? body.data : "", body.len, head);
	buf_free(&body);
}

static void *serve(void *arg)
{
	struct metrics_http *m = arg;

	for (;;) {
		struct pollfd p[2] = {{.fd = m->listen_fd, .events = POLLIN},
				      {.fd = m->stop[0], .events = POLLIN}};
		int fd;

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		fd = accept4(m->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		serve_one(m, fd);
		close(fd);
	}
	return NULL;
}

int metrics_http_start(const char *spec, struct cred_table *t,
		       struct metrics_http **out, char *err, size_t errlen)
{
	struct metrics_http *m;
	struct sockaddr_storage sa;
	char why[256];
	socklen_t len;
	int one = 1, r;

	*out = NULL;
	if (metrics_listen_parse(spec, &sa, &len, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "metrics_listen %s: %s", spec, why);
		return -EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->t = t;
	m->stop[0] = m->stop[1] = -1;
	m->listen_fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (m->listen_fd < 0 || pipe2(m->stop, O_CLOEXEC) < 0) {
		r = -errno;
		goto fail;
	}
	if (sa.ss_family == AF_UNIX) {
		/* A socket left by a daemon that is gone; the mount point
		 * refused a second daemon already. */
		m->unix_path = strdup(((struct sockaddr_un *)&sa)->sun_path);
		if (!m->unix_path) {
			r = -ENOMEM;
			goto fail;
		}
		unlink(m->unix_path);
	} else {
		setsockopt(m->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one,
			   sizeof(one));
	}
	if (bind(m->listen_fd, (struct sockaddr *)&sa, len) < 0 ||
	    listen(m->listen_fd, 16) < 0) {
		r = -errno;
		goto fail;
	}
	r = -pthread_create(&m->thread, NULL, serve, m);
	if (r < 0)
		goto fail;
	m->started = true;
	*out = m;
	return 0;
fail:
	snprintf(err, errlen, "metrics_listen %s: %s", spec, strerror(-r));
	metrics_http_stop(m);
	return r;
}

void metrics_http_stop(struct metrics_http *m)
{
	if (!m)
		return;
	if (m->started) {
		(void)!write(m->stop[1], "x", 1);
		pthread_join(m->thread, NULL);
	}
	if (m->listen_fd >= 0)
		close(m->listen_fd);
	if (m->unix_path) {
		unlink(m->unix_path);
		free(m->unix_path);
	}
	if (m->stop[0] >= 0)
		close(m->stop[0]);
	if (m->stop[1] >= 0)
		close(m->stop[1]);
	free(m);
}
