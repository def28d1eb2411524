/*
 * reader: the read-path benchmark. N threads, each doing, for a fixed time,
 * open + read to EOF + close of a token file (or one HTTP GET of the token
 * over a kept-alive loopback connection, the metadata-server pattern).
 * Every read is checked: tokens made by the fake provider with
 * --bench-tokens carry their expiry and an FNV-1a check value, so a torn
 * token (bytes of two tokens), an expired one (past its expiry before the
 * open began: served dead), or one older than this thread already saw, is
 * counted as an error. One that expired while the open was under way or
 * right after it (the thread was preempted) is counted as late: the
 * token was valid when served, as far as the reader can tell, so that
 * says how long readers waited for a CPU, not what credfs served.
 *
 *   reader --threads N --seconds S (--file PATH | --http 127.0.0.1:PORT)
 *
 * Prints one line: ops/s, p50 and p99 latency (us), and error counts.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#define BUCKETS 20000 /* 1 us each, the last one is "20 ms or more" */

struct opts {
	int threads;
	double seconds;
	const char *file;
	struct sockaddr_in http;
	bool use_http;
};

struct worker {
	pthread_t thread;
	const struct opts *o;
	uint64_t ops, io_errors, torn, expired, late, backwards;
	int first_errno;    /* of the first failed read, to say */
	bool first_in_read; /* read(2) gave it, not open(2) */
	uint64_t hist[BUCKETS];
};

static atomic_bool stop;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Check "bench.<expires_ms>.<serial>.<fnv64 hex>". */
static void check(struct worker *w, const char *tok, size_t n, int64_t began_ms,
		  uint64_t *last_serial)
{
	unsigned long long exp, serial, mac;
	const char *dot;
	char copy[256];

	if (n == 0 || n >= sizeof(copy)) {
		w->torn++;
		return;
	}
	memcpy(copy, tok, n);
	copy[n] = '\0';
	dot = strrchr(copy, '.');
	if (strncmp(copy, "bench.", 6) || !dot ||
	    sscanf(copy, "bench.%llu.%llu.%llx", &exp, &serial, &mac) != 3 ||
	    fnv64(copy, (size_t)(dot - copy)) != mac) {
		w->torn++;
		return;
	}
	if ((int64_t)exp <= began_ms)
		w->expired++;
	else if ((int64_t)exp <= wall_ms())
		w->late++;
	if (serial < *last_serial)
		w->backwards++;
	else
		*last_serial = serial;
}

/* The file's bytes into @buf: their number, or -errno with *@in_read
 * saying whether read(2) gave it (else open(2)). */
static int read_file(const char *path, char *buf, size_t size, bool *in_read)
{
	size_t len = 0;
	ssize_t n;
	int fd = open(path, O_RDONLY);

	*in_read = false;
	if (fd < 0)
		return -errno;
	while ((n = read(fd, buf + len, size - len)) > 0 && len < size)
		len += (size_t)n;
	if (n < 0) {
		n = -errno;
		*in_read = true;
	}
	close(fd);
	return n < 0 ? (int)n : (int)len;
}

/* One GET on @fd; the body into @buf. Returns its length or -EIO. */
static int http_get(int fd, char *buf, size_t size)
{
	static const char req[] = "GET /token HTTP/1.1\r\nHost: x\r\n\r\n";
	char resp[1024], *body, *cl;
	size_t len = 0, want;
	ssize_t n;

	if (write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1)
		return -EIO;
	for (;;) {
		n = read(fd, resp + len, sizeof(resp) - 1 - len);
		if (n <= 0)
			return -EIO;
		len += (size_t)n;
		resp[len] = '\0';
		body = strstr(resp, "\r\n\r\n");
		cl = strcasestr(resp, "Content-Length:");
		if (!body || !cl)
			continue;
		want = strtoul(cl + 15, NULL, 10);
		body += 4;
		if ((size_t)(resp + len - body) < want)
			continue;
		if (want > size)
			return -EIO;
		memcpy(buf, body, want);
		return (int)want;
	}
}

static void *run(void *arg)
{
	struct worker *w = arg;
	uint64_t last_serial = 0;
	char buf[4096];
	int fd = -1, n;

	if (w->o->use_http) {
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0 || connect(fd, (const struct sockaddr *)&w->o->http,
				      sizeof(w->o->http)) < 0) {
			w->first_errno = errno;
			w->io_errors++;
			return NULL;
		}
	}
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		uint64_t t0 = now_ns(), us;
		int64_t began_ms = wall_ms();
		bool in_read = false;

		n = fd >= 0 ? http_get(fd, buf, sizeof(buf))
			    : read_file(w->o->file, buf, sizeof(buf), &in_read);
		us = (now_ns() - t0) / 1000;
		w->hist[us < BUCKETS ? us : BUCKETS - 1]++;
		if (n < 0) {
			if (!w->io_errors++) {
				w->first_errno = -n;
				w->first_in_read = in_read;
			}
			continue;
		}
		check(w, buf, (size_t)n, began_ms, &last_serial);
		w->ops++;
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

static double percentile(const uint64_t *hist, uint64_t total, double p)
{
	uint64_t want = (uint64_t)(p * (double)total), seen = 0;
	int i;

	for (i = 0; i < BUCKETS; i++) {
		seen += hist[i];
		if (seen > want)
			return i + 0.5;
	}
	return BUCKETS;
}

int main(int argc, char **argv)
{
	struct opts o = {.threads = 1, .seconds = 5};
	static uint64_t hist[BUCKETS];
	uint64_t ops = 0, io = 0, torn = 0, expired = 0, back = 0, late = 0;
	struct worker *w;
	uint64_t t0;
	double secs;
	int i, j;

	for (i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--threads"))
			o.threads = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--seconds"))
			o.seconds = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--file"))
			o.file = argv[i + 1];
		else if (!strcmp(argv[i], "--http")) {
			char host[64];
			int port;

			if (sscanf(argv[i + 1], "%63[^:]:%d", host, &port) != 2)
				goto usage;
			o.http.sin_family = AF_INET;
			o.http.sin_port = htons((uint16_t)port);
			inet_pton(AF_INET, host, &o.http.sin_addr);
			o.use_http = true;
		} else
			goto usage;
	}
	if (i != argc || o.threads < 1 || o.seconds <= 0 ||
	    (!o.file && !o.use_http))
		goto usage;
	w = calloc((size_t)o.threads, sizeof(*w));
	if (!w)
		return 1;
	t0 = now_ns();
	for (i = 0; i < o.threads; i++) {
		w[i].o = &o;
		pthread_create(&w[i].thread, NULL, run, &w[i]);
	}
	usleep((useconds_t)(o.seconds * 1e6));
	atomic_store(&stop, true);
	for (i = 0; i < o.threads; i++) {
		pthread_join(w[i].thread, NULL);
		ops += w[i].ops;
		io += w[i].io_errors;
		if (w[i].io_errors)
			fprintf(stderr,
				"reader: thread %d: %" PRIu64
				" failed reads, the first: %s: %s\n",
				i, w[i].io_errors,
				w[i].first_in_read ? "read" : "open",
				strerror(w[i].first_errno));
		torn += w[i].torn;
		expired += w[i].expired;
		late += w[i].late;
		back += w[i].backwards;
		for (j = 0; j < BUCKETS; j++)
			hist[j] += w[i].hist[j];
	}
	secs = (double)(now_ns() - t0) / 1e9;
	printf("ops_per_s=%.0f p50_us=%.1f p99_us=%.1f ops=%" PRIu64
	       " io_errors=%" PRIu64 " torn=%" PRIu64 " expired=%" PRIu64
	       " backwards=%" PRIu64 " late=%" PRIu64 "\n",
	       (double)ops / secs, percentile(hist, ops + io, 0.50),
	       percentile(hist, ops + io, 0.99), ops, io, torn, expired, back,
	       late);
	free(w);
	return io || torn || expired || back ? 3 : 0;
usage:
	fprintf(stderr, "usage: reader --threads N --seconds S "
			"(--file PATH | --http 127.0.0.1:PORT)\n");
	return 2;
}
