/*
 * tokend: a token endpoint fast enough not to be the bottleneck of the
 * refresh-at-scale benchmark. Answers every POST on 127.0.0.1 with a
 * self-checking bench token ("bench.<expires_ms>.<serial>.<fnv64>", as
 * tests/fake_provider.py --bench-tokens issues) living LIFETIME seconds,
 * keep-alive, a thread per connection. Counts answers per second; on
 * SIGTERM writes "<Unix second> <count>" lines to STATS-FILE and exits.
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

#define MAX_SECONDS 7200

static long lifetime_s;
static atomic_ullong serial;
static atomic_uint per_second[MAX_SECONDS];
static time_t started;

static uint64_t fnv64(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
	return h;
}

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
		     (long long)(wall_ms() + lifetime_s * 1000), s);
	snprintf(tok + n, sizeof(tok) - (size_t)n, ".%016llx",
		 (unsigned long long)fnv64(tok, (size_t)n));
	b = snprintf(body, sizeof(body),
		     "{\"access_token\":\"%s\",\"token_type\":\"Bearer\","
		     "\"expires_in\":%ld}",
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

static void *on_term(void *arg)
{
	sigset_t *set = arg;
	FILE *f;
	int sig, i, last = 0;

	sigwait(set, &sig);
	f = fopen(stats_file, "w");
	for (i = 0; f && i < MAX_SECONDS; i++)
		if (atomic_load(&per_second[i]))
			last = i;
	for (i = 0; f && i <= last; i++)
		fprintf(f, "%lld %u\n", (long long)started + i,
			atomic_load(&per_second[i]));
	if (f)
		fclose(f);
	_exit(0);
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);
	sigset_t set;
	pthread_t t;
	FILE *pf;
	int s, c, one = 1;

	if (argc != 4) {
		fprintf(stderr,
			"usage: tokend LIFETIME-S PORT-FILE STATS-FILE\n");
		return 2;
	}
	lifetime_s = atol(argv[1]);
	stats_file = argv[3];
	started = time(NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_create(&t, NULL, on_term, &set);
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	s = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(s, 256) < 0 ||
	    getsockname(s, (struct sockaddr *)&a, &alen) < 0) {
		perror("tokend");
		return 1;
	}
	pf = fopen(argv[2], "w");
	if (!pf)
		return 1;
	fprintf(pf, "%d\n", ntohs(a.sin_port));
	fclose(pf);
	while ((c = accept(s, NULL, NULL)) >= 0) {
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		pthread_create(&t, NULL, serve, (void *)(intptr_t)c);
		pthread_detach(t);
	}
	return 0;
}
