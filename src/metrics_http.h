/*
 * metrics_http: the root metrics file over HTTP (GET /metrics), on a
 * loopback address or a Unix socket (metrics_listen). It shows every
 * credential, as the file shows root: loopback or a socket's mode bits
 * decide who may scrape.
 */
#ifndef CREDFS_METRICS_HTTP_H
#define CREDFS_METRICS_HTTP_H

#include <stddef.h>
#include <sys/socket.h>

struct cred_table;
struct metrics_http;

/* "127.0.0.1:PORT", "[::1]:PORT" (any loopback address) or an absolute
 * Unix socket path, into @sa: 0, or -EINVAL with why in @err. */
int metrics_listen_parse(const char *spec, struct sockaddr_storage *sa,
			 socklen_t *len, char *err, size_t errlen);

/* Listen on @spec and serve @t's metrics on a thread of its own. 0 or
 * -errno with a message in @err. */
int metrics_http_start(const char *spec, struct cred_table *t,
		       struct metrics_http **out, char *err, size_t errlen);

/* Stop serving (and remove a Unix socket). NULL is a no-op. */
void metrics_http_stop(struct metrics_http *m);

#endif
