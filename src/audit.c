/*
 * audit: the audit log. A line is built in memory with jansson and written
 * with a single write(2) on an O_APPEND descriptor; reopening swaps the
 * descriptor under a lock so a line is never written to a closed file.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "audit.h"
#include "policy.h"
#include "util.h"

struct audit {
	pthread_mutex_t lock;
	char *path; /* NULL: stderr */
	int fd;
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

int audit_open(const char *path, struct audit **out)
{
	struct audit *a = calloc(1, sizeof(*a));
	int fd = STDERR_FILENO;

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
	a->fd = fd;
	*out = a;
	return 0;
}

int audit_reopen(struct audit *a)
{
	int fd, old;

	if (!a->path)
		return 0;
	fd = open_log(a->path);
	pthread_mutex_lock(&a->lock);
	if (fd < 0) {
		a->failures++;
		snprintf(a->last_error, sizeof(a->last_error), "reopen: %s",
			 strerror(-fd));
		pthread_mutex_unlock(&a->lock);
		return fd;
	}
	old = a->fd;
	a->fd = fd;
	pthread_mutex_unlock(&a->lock);
	close(old);
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
	size_t len;
	ssize_t n;
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
	line[len] = '\n'; /* json_dumps leaves room: replace the NUL */
	pthread_mutex_lock(&a->lock);
	n = write(a->fd, line, len + 1);
	if (n != (ssize_t)(len + 1)) {
		a->failures++;
		snprintf(a->last_error, sizeof(a->last_error), "write: %s",
			 n < 0 ? strerror(errno) : "short write");
	}
	pthread_mutex_unlock(&a->lock);
	free(line);
	return;
out_fail:
	pthread_mutex_lock(&a->lock);
	a->failures++;
	snprintf(a->last_error, sizeof(a->last_error), "out of memory");
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
	if (a->path)
		close(a->fd);
	pthread_mutex_destroy(&a->lock);
	free(a->path);
	free(a);
}
