/*
 * audit: the audit log. A line is put together in memory (JSON written
 * here, not built with jansson: this is on every audited open) by the
 * thread that has something to say (an open, a refresh) and queued; a
 * writer thread of the log's own appends what is queued, so that a slow
 * audit disk holds no open, no lock of the read path, and no other
 * thread. Nothing is dropped: past AUDIT_QUEUE_MAX bytes queued, the
 * thread with a line to queue waits for room (an open is not answered
 * before its line is queued). The writer, woken by a first line, waits
 * up to AUDIT_GATHER_MS for more before it writes, so a busy log costs
 * one wake-up and one write per batch instead of per line. A clean stop,
 * a reopen and an upgrade write every line queued; a crash loses those
 * not yet written: at most AUDIT_GATHER_MS of lines, plus the write
 * under way. To a regular file the writer appends many lines per
 * writev(2) on an O_APPEND descriptor; to stderr (shared with the
 * daemon's log) one write(2) per line, so that lines never interleave.
 * Reopening hands the writer a new descriptor, which it takes before its
 * next write.
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
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "policy.h"
#include "util.h"

/* Bytes of lines queued at most before a writer of lines waits. */
#define AUDIT_QUEUE_MAX (4u << 20)
/* Lines per writev(2). */
#define AUDIT_BATCH 256
/* How long the writer, woken by a line, waits for more before it writes
 * (the most a crash can lose), and the bytes queued that end the wait. */
#define AUDIT_GATHER_MS 5
#define AUDIT_WRITE_NOW (64u << 10)

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
	bool sleeping; /* the writer waits for a first line */
	unsigned flushing; /* audit_flush()es waiting: no gathering */
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

/* Under a->lock, with lines queued: wait up to AUDIT_GATHER_MS for
 * more, so that a busy log costs a wake-up and a write per batch, not
 * per line; not when stopping, reopening, flushing or well filled. */
static void gather(struct audit *a)
{
	struct timespec until;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_nsec += AUDIT_GATHER_MS * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	while (a->head && !a->stop && a->new_fd < 0 && !a->flushing &&
	       a->queued < AUDIT_WRITE_NOW)
		if (pthread_cond_timedwait(&a->work, &a->lock, &until) ==
		    ETIMEDOUT)
			break;
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
		while (!a->head && !a->stop && a->new_fd < 0) {
			a->sleeping = true;
			pthread_cond_wait(&a->work, &a->lock);
		}
		a->sleeping = false;
		gather(a);
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
	pthread_condattr_t ca;
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
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&a->work, &ca);
	pthread_condattr_destroy(&ca);
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
	a->flushing++;
	pthread_cond_signal(&a->work);
	while ((a->head || a->writing) && a->started)
		pthread_cond_wait(&a->room, &a->lock);
	a->flushing--;
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

/* A line being put together: bytes go to p (NULL: only counted). */
struct out {
	char *p;
	size_t n;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->p)
		memcpy(o->p + o->n, s, n);
	o->n += n;
}

static void put_s(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

/* Bytes in the UTF-8 sequence at @s (as jansson takes it: no overlong
 * forms, no surrogates, nothing past U+10FFFF), 0 if it is none. */
static size_t utf8_len(const unsigned char *s)
{
	size_t n, i;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] < 0xc2 || s[0] > 0xf4)
		return 0;
	n = s[0] < 0xe0 ? 2 : s[0] < 0xf0 ? 3 : 4;
	cp = s[0] & (0x7f >> n);
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

static bool utf8_valid(const char *v)
{
	const unsigned char *s = (const unsigned char *)v;
	size_t n;

	while (*s) {
		n = utf8_len(s);
		if (!n)
			return false;
		s += n;
	}
	return true;
}

/* @v as a JSON string, or null, written as jansson dumps one (UTF-8 as
 * it is, the mandatory escapes only). Text from outside (a process
 * name, a cgroup path) need not be UTF-8: when it is not, its ASCII is
 * kept and every other byte written as \xNN, so a field is never
 * dropped. */
static void put_str(struct out *o, const char *v)
{
	static const char upper[] = "0123456789ABCDEF",
			  lower[] = "0123456789abcdef";
	bool utf8;
	char esc[7];
	unsigned char ch;

	if (!v) {
		put_s(o, "null");
		return;
	}
	utf8 = utf8_valid(v);
	put(o, "\"", 1);
	for (; *v; v++) {
		ch = (unsigned char)*v;
		if (ch >= 0x80 && !utf8) {
			esc[0] = esc[1] = '\\';
			esc[2] = 'x';
			esc[3] = lower[ch >> 4];
			esc[4] = lower[ch & 15];
			put(o, esc, 5);
		} else if (ch == '"' || ch == '\\') {
			esc[0] = '\\';
			esc[1] = (char)ch;
			put(o, esc, 2);
		} else if (ch < 0x20) {
			const char *s = ch == '\b'   ? "\\b"
					: ch == '\f' ? "\\f"
					: ch == '\n' ? "\\n"
					: ch == '\r' ? "\\r"
					: ch == '\t' ? "\\t"
						     : NULL;

			if (s) {
				put_s(o, s);
			} else {
				memcpy(esc, "\\u00", 4);
				esc[4] = upper[ch >> 4];
				esc[5] = upper[ch & 15];
				put(o, esc, 6);
			}
		} else {
			put(o, v, 1);
		}
	}
	put(o, "\"", 1);
}

static void put_field(struct out *o, const char *key, const char *v)
{
	put(o, ",\"", 2);
	put_s(o, key);
	put(o, "\":", 2);
	put_str(o, v);
}

static void put_num(struct out *o, const char *key, unsigned long long v)
{
	char num[24];
	size_t i = sizeof(num);

	do
		num[--i] = (char)('0' + v % 10);
	while (v /= 10);
	put(o, ",\"", 2);
	put_s(o, key);
	put(o, "\":", 2);
	put(o, num + i, sizeof(num) - i);
}

/* The line of @rec at @when, without its newline: one JSON object, its
 * keys in this order. */
static void put_line(struct out *o, const struct audit_rec *rec,
		     const char *when)
{
	put_s(o, "{\"time\":");
	put_str(o, when);
	put_field(o, "event", rec->event);
	put_field(o, "tenant", rec->tenant);
	put_field(o, "provider", rec->provider);
	if (rec->who) {
		put_num(o, "uid", rec->who->uid);
		put_num(o, "gid", rec->who->gid);
		put_num(o, "pid", rec->who->pid);
		put_field(o, "comm", caller_comm(rec->who));
		put_field(o, "cgroup", caller_audit_cgroup(rec->who));
	} else {
		put_field(o, "uid", NULL);
		put_field(o, "gid", NULL);
		put_field(o, "pid", NULL);
		put_field(o, "comm", NULL);
		put_field(o, "cgroup", NULL);
	}
	put_field(o, "outcome", rec->outcome);
	put_field(o, "fingerprint", rec->fp);
	if (rec->detail)
		put_field(o, "detail", rec->detail);
	put(o, "}", 1);
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" for @ms; the seconds' text is kept per
 * thread, since a busy thread logs many lines a second. */
static void when_text(int64_t ms, char out[32])
{
	static __thread int64_t sec = -1;
	static __thread char text[32];
	size_t n;

	if (ms / 1000 != sec) {
		sec = ms / 1000;
		time_rfc3339(sec * 1000, text);
		text[strlen(text) - 1] = '\0'; /* the 'Z' */
	}
	n = strlen(text);
	memcpy(out, text, n);
	out[n] = '.';
	out[n + 1] = (char)('0' + ms % 1000 / 100);
	out[n + 2] = (char)('0' + ms % 100 / 10);
	out[n + 3] = (char)('0' + ms % 10);
	memcpy(out + n + 4, "Z", 2);
}

void audit_log(struct audit *a, const struct audit_rec *rec)
{
	struct out count = {NULL, 0}, w;
	char when[32];
	struct line *q;

	when_text(time_real_ms(), when);
	put_line(&count, rec, when);
	q = malloc(sizeof(*q) + count.n + 1);
	if (!q) {
		pthread_mutex_lock(&a->lock);
		failed_locked(a, 1, "queue", "out of memory");
		pthread_mutex_unlock(&a->lock);
		return;
	}
	w.p = q->text;
	w.n = 0;
	put_line(&w, rec, when);
	q->text[w.n] = '\n';
	q->len = w.n + 1;
	q->next = NULL;
	pthread_mutex_lock(&a->lock);
	/* Never dropped: wait for room (the writer empties the queue). */
	while (a->queued && a->queued + q->len > AUDIT_QUEUE_MAX &&
	       a->started && !a->stop)
		pthread_cond_wait(&a->room, &a->lock);
	*a->tail = q;
	a->tail = &q->next;
	a->queued += q->len;
	/* The writer gathers lines for AUDIT_GATHER_MS once woken: wake it
	 * only from its sleep, or when enough waits to write at once. */
	if (a->sleeping || a->queued >= AUDIT_WRITE_NOW)
		pthread_cond_signal(&a->work);
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
