/*
 * control: a Unix stream socket. One thread accepts; each client is served
 * on a thread of its own (at most MAX_CLIENTS at once), with one deadline
 * for its request line, so a client that stalls holds only itself. The
 * socket's path is reached through /proc/self/fd/N of the store
 * directory, so that a long store path never hits sun_path's 108 bytes.
 *
 * Wire format: the request is one line of text. The reply is a status
 * line ("0" for success, or credfsctl's exit status), then the text to
 * print.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "log.h"
#include "util.h"

#define IO_TIMEOUT_MS 10000
#define REQUEST_TIMEOUT_MS 2000 /* the whole request line */
#define MAX_CLIENTS 8

struct control {
	int dirfd;
	int listen_fd;
	int stop[2]; /* a pipe: writing to it ends the thread */
	control_fn fn;
	void *arg;
	pthread_t thread;
	bool started;
	pthread_mutex_t lock; /* clients */
	pthread_cond_t idle;
	unsigned clients; /* served now, each on its own thread */
};

struct client {
	struct control *c;
	int fd;
};

/* The address of the socket: CONTROL_SOCKET in directory @dirfd, or the
 * abstract @where ("@NAME") when @dirfd is -1. Its length. */
static socklen_t socket_path(const char *where, int dirfd,
			     struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (dirfd >= 0) {
		snprintf(sa->sun_path, sizeof(sa->sun_path),
			 "/proc/self/fd/%d/%s", dirfd, CONTROL_SOCKET);
		return sizeof(*sa);
	}
	/* sun_path[0] stays NUL: the abstract namespace, no file. */
	snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1, "%s", where + 1);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
			   strlen(sa->sun_path + 1));
}

void control_name(const char *mountpoint, char *out, size_t size)
{
	char fp[9];

	if (strlen(mountpoint) + sizeof("@credfs-control:") <= 100) {
		snprintf(out, size, "@credfs-control:%s", mountpoint);
		return;
	}
	util_fingerprint(mountpoint, strlen(mountpoint), fp);
	snprintf(out, size, "@credfs-control:#%s", fp);
}

/* The directory @where names, opened; -1 for an abstract socket. */
static int open_where(const char *where)
{
	if (where[0] == '@')
		return -1;
	return open(where, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
}

static void set_timeouts(int fd, int64_t ms)
{
	struct timeval tv = {.tv_sec = ms / 1000,
			     .tv_usec = (ms % 1000) * 1000};

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Read one line of at most CONTROL_MAX_REQUEST bytes into @line, all of
 * it within REQUEST_TIMEOUT_MS. */
static int read_line(int fd, char *line, size_t size)
{
	int64_t deadline = time_mono_ms() + REQUEST_TIMEOUT_MS;
	size_t n = 0;

	while (n + 1 < size) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int64_t left = deadline - time_mono_ms();
		ssize_t r;

		if (left <= 0 || poll(&p, 1, (int)left) == 0)
			return -ETIMEDOUT;
		r = recv(fd, line + n, 1, MSG_DONTWAIT);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -EPROTO;
		if (line[n] == '\n') {
			line[n] = '\0';
			return 0;
		}
		n++;
	}
	return -EMSGSIZE;
}

static void serve_one(struct control *c, int fd)
{
	char line[CONTROL_MAX_REQUEST + 1], head[16];
	struct ucred peer = {.uid = (uid_t)-1};
	socklen_t len = sizeof(peer);
	struct buf reply;
	int status;

	set_timeouts(fd, IO_TIMEOUT_MS);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) < 0 ||
	    (peer.uid != 0 && peer.uid != geteuid())) {
		log_warn("control: refused a connection from uid %d",
			 (int)peer.uid);
		return;
	}
	if (read_line(fd, line, sizeof(line)) < 0)
		return;
	buf_init(&reply, 16 * 1024 * 1024);
	status = c->fn(c->arg, line, &reply);
	snprintf(head, sizeof(head), "%d\n", status);
	if (write_all(fd, head, strlen(head)) == 0 && reply.len)
		write_all(fd, reply.data, reply.len);
	buf_free(&reply);
}

static void *client_main(void *arg)
{
	struct client *cl = arg;
	struct control *c = cl->c;

	serve_one(c, cl->fd);
	close(cl->fd);
	free(cl);
	pthread_mutex_lock(&c->lock);
	if (--c->clients == 0)
		pthread_cond_broadcast(&c->idle);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* Serve @fd on a thread of its own; closed at once when MAX_CLIENTS are
 * being served (credfsctl says the daemon did not answer). */
static void start_client(struct control *c, int fd)
{
	struct client *cl = calloc(1, sizeof(*cl));
	pthread_attr_t attr;
	pthread_t th;
	bool ok = false;

	pthread_mutex_lock(&c->lock);
	if (cl && c->clients < MAX_CLIENTS) {
		cl->c = c;
		cl->fd = fd;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		ok = pthread_create(&th, &attr, client_main, cl) == 0;
		pthread_attr_destroy(&attr);
		c->clients += ok;
	}
	pthread_mutex_unlock(&c->lock);
	if (!ok) {
		log_warn("control: %u clients are being served; refused one",
			 (unsigned)MAX_CLIENTS);
		free(cl);
		close(fd);
	}
}

static void *serve(void *arg)
{
	struct control *c = arg;
	struct pollfd p[2] = {{.fd = c->listen_fd, .events = POLLIN},
			      {.fd = c->stop[0], .events = POLLIN}};

	for (;;) {
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			start_client(c, fd);
	}
	/* Whoever is being served is answered before the daemon goes on
	 * to stop what the answers read. */
	pthread_mutex_lock(&c->lock);
	while (c->clients)
		pthread_cond_wait(&c->idle, &c->lock);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

int control_start(const char *dir, control_fn fn, void *arg,
		  struct control **out, char *err, size_t errlen)
{
	struct control *c = calloc(1, sizeof(*c));
	struct sockaddr_un sa;
	socklen_t len;
	int r;

	*out = NULL;
	if (!c)
		return -ENOMEM;
	c->fn = fn;
	c->arg = arg;
	c->listen_fd = c->stop[0] = c->stop[1] = -1;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->idle, NULL);
	c->dirfd = open_where(dir);
	if ((c->dirfd < 0 && dir[0] != '@') || pipe2(c->stop, O_CLOEXEC) < 0) {
		r = -errno;
		goto fail;
	}
	c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->listen_fd < 0) {
		r = -errno;
		goto fail;
	}
	/* We hold the store's daemon lock: a socket left there is stale. */
	if (c->dirfd >= 0)
		unlinkat(c->dirfd, CONTROL_SOCKET, 0);
	len = socket_path(dir, c->dirfd, &sa);
	if (bind(c->listen_fd, (struct sockaddr *)&sa, len) < 0 ||
	    (c->dirfd >= 0 &&
	     fchmodat(c->dirfd, CONTROL_SOCKET, 0600, 0) < 0) ||
	    listen(c->listen_fd, 16) < 0) {
		r = -errno;
		goto fail;
	}
	r = -pthread_create(&c->thread, NULL, serve, c);
	if (r < 0)
		goto fail;
	c->started = true;
	*out = c;
	return 0;
fail:
	if (dir[0] == '@')
		snprintf(err, errlen, "control socket %s: %s", dir,
			 strerror(-r));
	else
		snprintf(err, errlen, "control socket %s/%s: %s", dir,
			 CONTROL_SOCKET, strerror(-r));
	control_stop(c);
	return r;
}

void control_stop(struct control *c)
{
	if (!c)
		return;
	if (c->started) {
		(void)!write(c->stop[1], "x", 1);
		pthread_join(c->thread, NULL);
	}
	if (c->listen_fd >= 0) {
		close(c->listen_fd);
		if (c->dirfd >= 0)
			unlinkat(c->dirfd, CONTROL_SOCKET, 0);
	}
	if (c->stop[0] >= 0)
		close(c->stop[0]);
	if (c->stop[1] >= 0)
		close(c->stop[1]);
	if (c->dirfd >= 0)
		close(c->dirfd);
	pthread_cond_destroy(&c->idle);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

int control_call(const char *dir, const char *request, int64_t timeout_ms,
		 struct buf *reply, int *status)
{
	int64_t deadline = time_mono_ms() + timeout_ms;
	struct sockaddr_un sa;
	char chunk[4096], *nl;
	int dirfd, fd, r = 0;
	socklen_t len;
	ssize_t n;

	*status = 1;
	dirfd = open_where(dir);
	if (dirfd < 0 && dir[0] != '@')
		return -errno;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		if (dirfd >= 0)
			close(dirfd);
		return r;
	}
	len = socket_path(dir, dirfd, &sa);
	set_timeouts(fd, timeout_ms);
	if (connect(fd, (struct sockaddr *)&sa, len) < 0)
		r = -errno;
	if (r == 0 && dirfd < 0) {
		/* Anyone may bind an abstract name: only root's (or our own
		 * uid's) daemon is believed. */
		struct ucred peer = {.uid = (uid_t)-1};
		socklen_t plen = sizeof(peer);

		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &plen) < 0 ||
		    (peer.uid != 0 && peer.uid != geteuid()))
			r = -EPERM;
	}
	if (dirfd >= 0)
		close(dirfd);
	if (r == 0)
		r = write_all(fd, request, strlen(request));
	if (r == 0)
		r = write_all(fd, "\n", 1);
	/* One deadline for the whole answer, however it trickles in. */
	while (r == 0) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int64_t left = deadline - time_mono_ms();

		if (left <= 0 || poll(&pfd, 1, (int)left) == 0) {
			r = -ETIMEDOUT;
			break;
		}
		n = recv(fd, chunk, sizeof(chunk), MSG_DONTWAIT);
		if (n == 0)
			break;
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		r = n < 0 ? -errno : buf_append(reply, chunk, (size_t)n);
	}
	close(fd);
	if (r == -EAGAIN || r == -EWOULDBLOCK)
		r = -ETIMEDOUT; /* a send that timed out */
	if (r < 0)
		return r;
	nl = reply->data ? memchr(reply->data, '\n', reply->len) : NULL;
	if (!nl)
		return -EPROTO;
	*status = (int)strtol(reply->data, NULL, 10);
	reply->len -= (size_t)(nl + 1 - reply->data);
	memmove(reply->data, nl + 1, reply->len);
	reply->data[reply->len] = '\0';
	return 0;
}
