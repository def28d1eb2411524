/*
 * httpd: the metadata-server baseline. Serves the token in FILE to every
 * "GET" on 127.0.0.1:PORT with keep-alive, a thread per connection, the
 * token re-read from FILE on each request (a rotating credential).
 *
 *   httpd FILE PORT-FILE    (writes the chosen port to PORT-FILE)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"
static const char *token_file;

static void *serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char req[2048], tok[4096], resp[4400];
	size_t have = 0;
	ssize_t n;

	for (;;) {
		char *end;
		int tf, len, hl;

		n = read(fd, req + have, sizeof(req) - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
		req[have] = '\0';
		end = strstr(req, "\r\n\r\n");
		if (!end)
			continue;
		tf = open(token_file, O_RDONLY);
		len = tf < 0 ? -1 : (int)read(tf, tok, sizeof(tok));
		if (tf >= 0)
			close(tf);
		if (len < 0)
			len = 0;
		hl = snprintf(resp, sizeof(resp),
			      "HTTP/1.1 200 OK\r\n"
			      "Content-Type: text/plain\r\n"
			      "Content-Length: %d\r\n\r\n",
			      len);
		memcpy(resp + hl, tok, (size_t)len);
		if (write(fd, resp, (size_t)(hl + len)) != hl + len)
			break;
		have -= (size_t)(end + 4 - req);
		memmove(req, end + 4, have);
	}
	close(fd);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: httpd TOKEN-FILE PORT-FILE\n");
		return 2;
	}
	token_file = argv[1];
	return serve_loopback("httpd", argv[2], serve);
}
