/*
 * tokend: a token endpoint fast enough not to be the bottleneck of the
 * refresh-at-scale benchmark. Answers every POST on 127.0.0.1 with a
 * self-checking bench token ("bench.<expires_ms>.<serial>.<fnv64>", as
 * tests/fake_provider.py --bench-tokens issues) living LIFETIME seconds,
 * keep-alive, a thread per connection. Counts answers per second; on
 * SIGUSR1 writes "<Unix second> <count>" lines to STATS-FILE, on SIGTERM
 * too and exits.
 *
 *   tokend LIFETIME-S PORT-FILE STATS-FILE
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#define MAX_SECONDS 7200

static double lifetime_s; /* may be a fraction: 0.2 */
static atomic_ullong serial;
static atomic_uint per_second[MAX_SECONDS];
static time_t started;

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One answer into @out; its length. */
static int answer(char *out, size_t size)
{
	char body[256], tok[160];
	int n, b;
	unsigned long long s = atomic_fetch_add(&serial, 1) + 1;
	time_t now = time(NULL);

	n = snprintf(tok, sizeof(tok), "bench.%lld.%llu",
		     (long long)(wall_ms() + (int64_t)(lifetime_s * 1000)), s);
	snprintf(tok + n, sizeof(tok) - (size_t)n, ".%016llx",
		 (unsigned long long)fnv64(tok, (size_t)n));
	b = snprintf(body, sizeof(body),
		     "{\"access_token\":\"%s\",\"token_type\":\"Bearer\","
		     "\"expires_in\":%g}",
		     tok, lifetime_s);
	if (now - started >= 0 && now - started < MAX_SECONDS)
		atomic_fetch_add(&per_second[now - started], 1);
	return snprintf(out, size,
			"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			"Cache-Control: no-store\r\nContent-Length: %d\r\n\r\n"
			"%s",
			b, body);
}

static void *serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char req[16384], resp[1024];
	size_t have = 0;

	for (;;) {
		char *end, *cl;
		size_t need;
		ssize_t n;
		int len;

		end = have ? memmem(req, have, "\r\n\r\n", 4) : NULL;
		if (end) {
			*end = '\0';
			cl = strcasestr(req, "\r\nContent-Length:");
			need = (size_t)(end + 4 - req) +
			       (cl ? strtoul(cl + 17, NULL, 10) : 0);
			*end = '\r';
			if (need <= have) {
				len = answer(resp, sizeof(resp));
				if (write(fd, resp, (size_t)len) != len)
					break;
				have -= need;
				memmove(req, req + need, have);
				continue;
			}
		}
		if (have == sizeof(req))
			break;
		n = read(fd, req + have, sizeof(req) - have);
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	close(fd);
	return NULL;
}

static const char *stats_file;

/* "<Unix second> <count>" lines so far, into the stats file (replaced
 * whole, so a reader never sees half of it). */
static void write_stats(void)
{
	char tmp[4096];
	FILE *f;
	int i, last = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", stats_file);
	f = fopen(tmp, "w");
	for (i = 0; f && i < MAX_SECONDS; i++)
		if (atomic_load(&per_second[i]))
			last = i;
	for (i = 0; f && i <= last; i++)
		fprintf(f, "%lld %u\n", (long long)started + i,
			atomic_load(&per_second[i]));
	if (f && fclose(f) == 0)
		rename(tmp, stats_file);
}

/* SIGUSR1: the stats so far; SIGTERM, SIGINT: the stats, then exit. */
static void *on_signal(void *arg)
{
	sigset_t *set = arg;
	int sig;

	for (;;) {
		sigwait(set, &sig);
		write_stats();
		if (sig != SIGUSR1)
			_exit(0);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	sigset_t set;
	pthread_t t;

	if (argc != 4) {
		fprintf(stderr,
			"usage: tokend LIFETIME-S PORT-FILE STATS-FILE\n");
		return 2;
	}
	lifetime_s = strtod(argv[1], NULL);
	stats_file = argv[3];
	started = time(NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_create(&t, NULL, on_signal, &set);
	return serve_loopback("tokend", argv[2], serve);
}
