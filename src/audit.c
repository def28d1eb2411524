/*
 * audit: the audit log. A line is built in memory with jansson by the
 * thread that has something to say (an open, a refresh) and queued; a
 * writer thread of the log's own appends what is queued, so that a slow
 * audit disk holds no open, no lock of the read path, and no other
 * thread. Nothing is dropped: past AUDIT_QUEUE_MAX bytes queued, the
 * thread with a line to queue waits for room (an open is not answered
 * before its line is queued). A clean stop writes every line queued; a
 * crash loses those not yet written (the writer is at most one write
 * behind). To a regular file the writer appends many lines per writev(2)
 * on an O_APPEND descriptor; to stderr (shared with the daemon's log)
 * one write(2) per line, so that lines never interleave. Reopening hands
 * the writer a new descriptor, which it takes before its next write.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <jansson.h>

#include "audit.h"
#include "policy.h"
#include "util.h"

/* Bytes of lines queued at most before a writer of lines waits. */
#define AUDIT_QUEUE_MAX (4u << 20)
/* Lines per writev(2). */
#define AUDIT_BATCH 256

struct line {
	struct line *next;
	size_t len;
	char text[]; /* len bytes, ending in '\n' */
};

struct audit {
	pthread_mutex_t lock;
	pthread_cond_t work; /* lines queued, or stop */
	pthread_cond_t room; /* the queue shrank, or the writer went idle */
	char *path;	     /* NULL: stderr */
	int fd;		     /* the writer's */
	int new_fd;	     /* from audit_reopen(), for the writer; -1 */
	bool regular;	     /* fd is a regular file: batched writes */
	struct line *head, **tail;
	size_t queued; /* bytes in the queue */
	bool writing;  /* the writer holds a batch */
	bool stop;
	bool started;
	pthread_t writer;
	uint64_t failures;
	char last_error[128];
};
static int open_log(const char *path)
{
	int fd = open(path,
		      O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
			      O_NOCTTY,
		      0600);

	return fd < 0 ? -errno : fd;
}

static bool is_regular(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

/* Under a->lock: a failure of the writer, said in status. */
static void failed_locked(struct audit *a, uint64_t lines, const char *what,
			  const char *why)
{
	a->failures += lines;
	snprintf(a->last_error, sizeof(a->last_error), "%s: %s", what, why);
}

/* Write @n lines from @first to @fd: 0; 1 for a short write, or -errno,
 * with the lines not (wholly) written counted in *@lost. */
static int write_lines(int fd, bool batch, struct line *first, size_t n,
		       uint64_t *lost)
{
	struct iovec iov[AUDIT_BATCH];
	struct line *l = first;
	size_t i, k, total;
	ssize_t w;

	while (n) {
		k = batch ? (n < AUDIT_BATCH ? n : AUDIT_BATCH) : 1;
		total = 0;
		for (i = 0; i < k; i++, l = l->next) {
			iov[i].iov_base = l->text;
			iov[i].iov_len = l->len;
			total += l->len;
		}
		do
			w = writev(fd, iov, (int)k);
		while (w < 0 && errno == EINTR);
		if (w != (ssize_t)total) {
			*lost += n; /* this one, and the rest after it */
			return w < 0 ? -errno : 1;
		}
		n -= k;
	}
	return 0;
}

static void *writer(void *arg)
{
	struct audit *a = arg;
	struct line *batch, *l;
	uint64_t lost;
	size_t n, bytes;
	int r, fd, old;

	pthread_mutex_lock(&a->lock);
	for (;;) {
		while (!a->head && !a->stop && a->new_fd < 0)
			pthread_cond_wait(&a->work, &a->lock);
		old = -1;
		if (a->new_fd >= 0) {
			old = a->fd;
			a->fd = a->new_fd;
			a->regular = is_regular(a->fd);
			a->new_fd = -1;
		}
		if (!a->head && a->stop)
			break;
		batch = a->head;
		a->head = NULL;
		a->tail = &a->head;
		a->writing = batch != NULL;
		fd = a->fd;
		pthread_mutex_unlock(&a->lock);
		if (old >= 0)
			close(old);
		for (n = 0, bytes = 0, l = batch; l; l = l->next, n++)
			bytes += l->len;
		lost = 0;
		r = n ? write_lines(fd, a->regular, batch, n, &lost) : 0;
		while ((l = batch)) {
			batch = l->next;
			free(l);
		}
		pthread_mutex_lock(&a->lock);
		if (r)
			failed_locked(a, lost, "write",
				      r > 0 ? "short write" : strerror(-r));
		a->queued -= bytes;
		a->writing = false;
		pthread_cond_broadcast(&a->room);
	}
	pthread_mutex_unlock(&a->lock);
	if (old >= 0)
		close(old);
	return NULL;
}

int audit_open(const char *path, struct audit **out)
{
	struct audit *a = calloc(1, sizeof(*a));
	int fd = STDERR_FILENO, r;

	if (!a)
		return -ENOMEM;
	if (path) {
		fd = open_log(path);
		a->path = strdup(path);
		if (fd < 0 || !a->path) {
			if (fd >= 0)
				close(fd);
			free(a->path);
			free(a);
			return fd < 0 ? fd : -ENOMEM;
		}
	}
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->work, NULL);
	pthread_cond_init(&a->room, NULL);
	a->fd = fd;
	a->new_fd = -1;
	a->regular = is_regular(fd);
	a->tail = &a->head;
	r = pthread_create(&a->writer, NULL, writer, a);
	if (r) {
		audit_free(a);
		return -r;
	}
	a->started = true;
	*out = a;
	return 0;
}

/* Return once every line queued before the call is written (or failed). */
static void audit_flush(struct audit *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	while ((a->head || a->writing) && a->started)
		pthread_cond_wait(&a->room, &a->lock);
	pthread_mutex_unlock(&a->lock);
}

int audit_reopen(struct audit *a)
{
	int fd;

	if (!a->path)
		return 0;
	fd = open_log(a->path);
	audit_flush(a); /* what came before goes to the old file */
	pthread_mutex_lock(&a->lock);
	if (fd < 0) {
		failed_locked(a, 1, "reopen", strerror(-fd));
		pthread_mutex_unlock(&a->lock);
		return fd;
	}
	if (a->new_fd >= 0)
		close(a->new_fd); /* two reopens before one write */
	a->new_fd = fd;
	pthread_cond_signal(&a->work);
	pthread_mutex_unlock(&a->lock);
	return 0;
}

static void set_str(json_t *o, const char *key, const char *v)
{
	json_object_set_new(o, key, v ? json_string(v) : json_null());
}

/* Text from outside (a process name, a cgroup path) that need not be
 * UTF-8: kept as it is when it is, else with every byte over 0x7f written
 * as \xNN, so the field is never dropped. */
static void set_outside(json_t *o, const char *key, const char *v)
{
	char out[4 * 512 + 1];
	json_t *s;
	size_t i, n = 0;

	if (!v) {
		set_str(o, key, NULL);
		return;
	}
	s = json_string(v);
	if (!s) {
		for (i = 0; v[i] && n + 5 < sizeof(out); i++) {
			unsigned char ch = (unsigned char)v[i];

			if (ch < 0x80)
				out[n++] = (char)ch;
			else
				n += (size_t)snprintf(out + n, sizeof(out) - n,
						      "\\x%02x", ch);
		}
		out[n] = '\0';
		s = json_string(out);
	}
	json_object_set_new(o, key, s ? s : json_null());
}

void audit_log(struct audit *a, const struct audit_rec *rec)
{
	char when[32], ms[8];
	json_t *o = json_object();
	char *line = NULL;
	struct line *q;
	size_t len;
	int64_t now = time_real_ms();

	if (!o)
		goto out_fail;
	time_rfc3339(now, when);
	/* "...:SSZ" -> "...:SS.mmmZ" */
	snprintf(ms, sizeof(ms), ".%03dZ", (int)(now % 1000));
	when[strlen(when) - 1] = '\0';
	strncat(when, ms, sizeof(when) - strlen(when) - 1);
	set_str(o, "time", when);
	set_str(o, "event", rec->event);
	set_str(o, "tenant", rec->tenant);
	set_str(o, "provider", rec->provider);
	if (rec->who) {
		json_object_set_new(o, "uid", json_integer(rec->who->uid));
		json_object_set_new(o, "gid", json_integer(rec->who->gid));
		json_object_set_new(o, "pid", json_integer(rec->who->pid));
		set_outside(o, "comm", caller_comm(rec->who));
		set_outside(o, "cgroup", caller_audit_cgroup(rec->who));
	} else {
		set_str(o, "uid", NULL);
		set_str(o, "gid", NULL);
		set_str(o, "pid", NULL);
		set_str(o, "comm", NULL);
		set_str(o, "cgroup", NULL);
	}
	set_str(o, "outcome", rec->outcome);
	set_str(o, "fingerprint", rec->fp);
	if (rec->detail)
		set_str(o, "detail", rec->detail);
	line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (!line)
		goto out_fail;
	len = strlen(line);
	q = malloc(sizeof(*q) + len + 1);
	if (!q)
		goto out_fail;
	memcpy(q->text, line, len);
	q->text[len] = '\n';
	q->len = len + 1;
	q->next = NULL;
	free(line);
	pthread_mutex_lock(&a->lock);
	/* Never dropped: wait for room (the writer empties the queue). */
	while (a->queued && a->queued + q->len > AUDIT_QUEUE_MAX &&
	       a->started && !a->stop)
		pthread_cond_wait(&a->room, &a->lock);
	*a->tail = q;
	a->tail = &q->next;
	a->queued += q->len;
	pthread_cond_signal(&a->work);
	pthread_mutex_unlock(&a->lock);
	return;
out_fail:
	free(line);
	pthread_mutex_lock(&a->lock);
	failed_locked(a, 1, "queue", "out of memory");
	pthread_mutex_unlock(&a->lock);
}

uint64_t audit_failures(struct audit *a, char *last, size_t n)
{
	uint64_t f;

	pthread_mutex_lock(&a->lock);
	f = a->failures;
	if (last && n)
		snprintf(last, n, "%s", a->last_error);
	pthread_mutex_unlock(&a->lock);
	return f;
}

void audit_free(struct audit *a)
{
	if (!a)
		return;
	if (a->started) {
		pthread_mutex_lock(&a->lock);
		a->stop = true; /* after what is queued */
		pthread_cond_signal(&a->work);
		pthread_mutex_unlock(&a->lock);
		pthread_join(a->writer, NULL);
	}
	if (a->path)
		close(a->fd);
	if (a->new_fd >= 0)
		close(a->new_fd);
	pthread_cond_destroy(&a->work);
	pthread_cond_destroy(&a->room);
	pthread_mutex_destroy(&a->lock);
	free(a->path);
	free(a);
}
