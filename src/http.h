/*
 * http: one token-endpoint POST as a curl easy handle, with the safety
 * settings every request needs (no redirects, TLS verification, size cap,
 * timeout) and the translation of curl's outcome into an oauth_result.
 */
#ifndef CREDFS_HTTP_H
#define CREDFS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

struct buf;
struct oauth_result;
struct provider_conf;
struct http_req;

/*
 * Prepare a POST of @body (form-encoded; the request takes it over), or
 * with @body NULL a GET, to @url, one of provider @p's endpoints, whose
 * timeout, response cap and CA file apply; @auth_header is added if not NULL
 * (taken over too; both are wiped). @user is handed back by http_req_user().
 * Returns 0 or -errno.
 */
int http_req_new(const struct provider_conf *p, const char *url,
		 struct buf *body, char *auth_header, void *user,
		 struct http_req **out);

/* The same, POSTing @body as JSON (RFC 7591 client registration). */
int http_req_new_json(const struct provider_conf *p, const char *url,
		      struct buf *body, struct http_req **out);

/* The easy handle, to add to a multi handle. */
CURL *http_req_easy(struct http_req *r);
void *http_req_user(struct http_req *r);

/* A small integer the caller may tag a request with (default 0). */
void http_req_set_tag(struct http_req *r, int tag);
int http_req_tag(struct http_req *r);

/*
 * The HTTP status and body (valid until http_req_free) of a transfer that
 * ended with @code: 0, or -errno with what went wrong in @err when no
 * answer arrived.
 */
int http_req_result(struct http_req *r, CURLcode code, long *status,
		    const char **body, size_t *len, char *err, size_t errlen);

/* Run the transfer here and now (credfsctl). */
CURLcode http_req_perform(struct http_req *r);

/* Classify a finished transfer to provider @p whose result was @code
 * into @res (see oauth_classify). */
void http_req_finish(struct http_req *r, const struct provider_conf *p,
		     CURLcode code, int64_t now_ms, struct oauth_result *res);

/* Free the request, wiping the body, headers and response. NULL is a no-op. */
void http_req_free(struct http_req *r);

/* The lower-cased host of @url (and its scheme into *@scheme unless NULL),
 * new strings to free; NULL for a URL that does not parse. */
char *http_url_host(const char *url, char **scheme);

/* @url is https, or http to a loopback host: the rule every configured
 * URL follows, for URLs a server hands us. */
bool http_url_safe(const char *url);

/* The value of the auth-param @name of a WWW-Authenticate challenge
 * (RFC 9110 11.2: a token or a quoted string), into @out; false when the
 * challenge has none, or one that does not fit. */
bool http_auth_param(const char *challenge, const char *name, char *out,
		     size_t n);

#endif
