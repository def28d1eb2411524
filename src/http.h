/*
 * http: one token-endpoint POST as a curl easy handle, with the safety
 * settings every request needs (no redirects, TLS verification, size cap,
 * timeout) and the translation of curl's outcome into an oauth_result.
 */
#ifndef CREDFS_HTTP_H
#define CREDFS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

struct buf;
struct oauth_result;
struct http_req;

/*
 * Prepare a POST of @body (form-encoded; the request takes it over) to
 * @url, adding @auth_header if not NULL (taken over too; both are wiped).
 * @user is handed back by http_req_user(). Returns 0 or -errno.
 */
int http_req_new(const char *url, struct buf *body, char *auth_header,
		 int64_t timeout_ms, size_t max_response, void *user,
		 struct http_req **out);

/* The easy handle, to add to a multi handle. */
CURL *http_req_easy(struct http_req *r);
void *http_req_user(struct http_req *r);

/* Classify a finished transfer whose result was @code into @res. */
void http_req_finish(struct http_req *r, CURLcode code, int64_t now_ms,
		     struct oauth_result *res);

/* Free the request, wiping the body, headers and response. NULL is a no-op. */
void http_req_free(struct http_req *r);

#endif
