/*
 * bench: what the benchmark programs share. The bench token's check value
 * (FNV-1a 64, as tests/fake_provider.py computes it), and a loopback TCP
 * server with a thread per connection whose port goes to a file.
 */
#ifndef CREDFS_BENCH_H
#define CREDFS_BENCH_H

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

static inline uint64_t fnv64(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
	return h;
}

/*
 * Listen on an ephemeral port of 127.0.0.1, write the port to @port_file,
 * and serve each connection with @serve (its argument the socket, as an
 * intptr_t) on a thread of its own. Returns only on failure: 1.
 */
static inline int serve_loopback(const char *who, const char *port_file,
				 void *(*serve)(void *))
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);
	pthread_t t;
	FILE *pf;
	int s, c, one = 1;

	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	s = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(s, 256) < 0 ||
	    getsockname(s, (struct sockaddr *)&a, &alen) < 0) {
		perror(who);
		return 1;
	}
	pf = fopen(port_file, "w");
	if (!pf)
		return 1;
	fprintf(pf, "%d\n", ntohs(a.sin_port));
	fclose(pf);
	while ((c = accept(s, NULL, NULL)) >= 0) {
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		pthread_create(&t, NULL, serve, (void *)(intptr_t)c);
		pthread_detach(t);
	}
	return 1;
}

#endif
