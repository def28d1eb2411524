/*
 * http: curl easy handles for token requests. The policy lives here so that
 * no request can be sent without it: no redirects (a token request must not
 * be replayed to another host), only http/https, certificate and host
 * verification always on, a per-request timeout and a response size cap.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "config.h"
#include "confparse.h"
#include "http.h"
#include "oauth.h"
#include "util.h"

struct http_req {
	CURL *easy;
	struct curl_slist *headers;
	struct buf body;
	struct buf resp;
	bool too_big;
	int tag;
	void *user;
	char errbuf[CURL_ERROR_SIZE];
};

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
	struct http_req *r = arg;

	if (buf_append(&r->resp, p, size * n) < 0) {
		r->too_big = true;
		return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
	}
	return size * n;
}

static int req_new(const struct provider_conf *p, const char *url,
		   struct buf *body, const char *ctype, char *auth_header,
		   void *user, struct http_req **out)
{
	long timeout_ms = (long)p->timeout_ms;
	struct curl_slist *h;
	struct http_req *r;
	bool ok;
	CURL *e;

	r = calloc(1, sizeof(*r));
	if (!r)
		goto out_fail;
	if (body) {
		r->body = *body;
		buf_init(body, 0);
	}
	buf_init(&r->resp, p->max_response_bytes);
	r->user = user;
	r->easy = e = curl_easy_init();
	if (!e)
		goto out_fail;
	h = curl_slist_append(NULL, "Accept: application/json");
	if (h)
		r->headers = h;
	if (h && body)
		h = curl_slist_append(h, ctype);
	if (h && auth_header)
		h = curl_slist_append(h, auth_header);
	if (!h)
		goto out_fail;
	strfreezero(auth_header);
	auth_header = NULL;

	/* Every option is checked: a request without the protocol and TLS
	 * policy is never sent. */
	ok = curl_easy_setopt(e, CURLOPT_URL, url) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") ==
		     CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK &&
	     (!p->ca_file ||
	      curl_easy_setopt(e, CURLOPT_CAINFO, p->ca_file) == CURLE_OK) &&
	     curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms) ==
		     CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
			      (curl_off_t)p->max_response_bytes) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_USERAGENT, "credfs/" CREDFS_VERSION) ==
		     CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers) == CURLE_OK;
	if (ok && body)
		ok = curl_easy_setopt(e, CURLOPT_POST, 1L) == CURLE_OK &&
		     curl_easy_setopt(e, CURLOPT_POSTFIELDS,
				      r->body.data ? r->body.data : "") ==
			     CURLE_OK &&
		     curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE,
				      (long)r->body.len) == CURLE_OK;
	else if (ok)
		ok = curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) == CURLE_OK;
	ok = ok &&
	     curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_WRITEDATA, r) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_PRIVATE, r) == CURLE_OK;
	if (!ok) {
		http_req_free(r);
		return -EPROTONOSUPPORT;
	}
	*out = r;
	return 0;
out_fail:
	strfreezero(auth_header);
	http_req_free(r);
	return -ENOMEM;
}

int http_req_new(const struct provider_conf *p, const char *url,
		 struct buf *body, char *auth_header, void *user,
		 struct http_req **out)
{
	return req_new(p, url, body,
		       "Content-Type: application/x-www-form-urlencoded",
		       auth_header, user, out);
}

int http_req_new_json(const struct provider_conf *p, const char *url,
		      struct buf *body, struct http_req **out)
{
	return req_new(p, url, body, "Content-Type: application/json", NULL,
		       NULL, out);
}

CURL *http_req_easy(struct http_req *r)
{
	return r->easy;
}

void *http_req_user(struct http_req *r)
{
	return r->user;
}

void http_req_set_tag(struct http_req *r, int tag)
{
	r->tag = tag;
}

int http_req_tag(struct http_req *r)
{
	return r->tag;
}

int http_req_result(struct http_req *r, CURLcode code, long *status,
		    const char **body, size_t *len, char *err, size_t errlen)
{
	const char *why;

	*status = 0;
	*body = NULL;
	*len = 0;
	if (code != CURLE_OK) {
		if (r->too_big || code == CURLE_FILESIZE_EXCEEDED) {
			snprintf(err, errlen,
				 "response body over the %zu byte limit",
				 r->resp.cap);
			return -EFBIG;
		}
		why = r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
		oauth_sanitize(why, strlen(why), err, errlen);
		return -EIO;
	}
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, status);
	*body = r->resp.data ? r->resp.data : "";
	*len = r->resp.len;
	return 0;
}

CURLcode http_req_perform(struct http_req *r)
{
	return curl_easy_perform(r->easy);
}

void http_req_finish(struct http_req *r, const struct provider_conf *p,
		     CURLcode code, int64_t now_ms, struct oauth_result *res)
{
	struct curl_header *ra = NULL;
	const char *why;
	char *ctype = NULL;
	long status = 0;

	if (code != CURLE_OK) {
		memset(res, 0, sizeof(*res));
		res->retry_after_ms = -1;
		if (r->too_big || code == CURLE_FILESIZE_EXCEEDED) {
			res->outcome = OAUTH_MALFORMED;
			snprintf(res->error, sizeof(res->error),
				 "response body over the %zu byte limit",
				 r->resp.cap);
			return;
		}
		res->outcome = OAUTH_TRANSIENT;
		why = r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
		oauth_sanitize(why, strlen(why), res->error,
			       sizeof(res->error));
		return;
	}
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	if (curl_easy_header(r->easy, "Retry-After", 0, CURLH_HEADER, -1,
			     &ra) != CURLHE_OK)
		ra = NULL;
	curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ctype);
	oauth_classify(p, status, ctype, r->resp.data, r->resp.len,
		       ra ? ra->value : NULL, now_ms, res);
}

void http_req_free(struct http_req *r)
{
	struct curl_slist *h;

	if (!r)
		return;
	for (h = r->headers; h; h = h->next)
		OPENSSL_cleanse(h->data, strlen(h->data));
	curl_slist_free_all(r->headers);
	if (r->easy)
		curl_easy_cleanup(r->easy);
	buf_free(&r->body);
	buf_free(&r->resp);
	free(r);
}

char *http_url_host(const char *url, char **scheme)
{
	CURLU *u = curl_url();
	char *h = NULL, *s = NULL, *out = NULL;

	if (u && !curl_url_set(u, CURLUPART_URL, url, 0) &&
	    !curl_url_get(u, CURLUPART_HOST, &h, 0) &&
	    !curl_url_get(u, CURLUPART_SCHEME, &s, 0)) {
		out = strdup(h);
		for (char *p = out; p && *p; p++)
			*p = (char)tolower((unsigned char)*p);
		if (scheme)
			*scheme = strdup(s);
	}
	curl_free(h);
	curl_free(s);
	curl_url_cleanup(u);
	return out;
}

bool http_url_safe(const char *url)
{
	char *scheme = NULL, *host = http_url_host(url, &scheme);
	bool ok = host && scheme &&
		  (!strcmp(scheme, "https") ||
		   (!strcmp(scheme, "http") && conf_host_is_loopback(host)));

	free(host);
	free(scheme);
	return ok;
}

bool http_auth_param(const char *challenge, const char *name, char *out,
		     size_t n)
{
	size_t len = strlen(name);
	const char *k, *v, *e;

	for (k = challenge; k && (k = strstr(k, name)); k += len) {
		/* A whole name: not the tail of another (error in
		 * error_description), and followed by "=". */
		if ((k == challenge || k[-1] == ' ' || k[-1] == ',') &&
		    k[len] == '=')
			break;
	}
	if (!k)
		return false;
	v = k + len + 1;
	if (*v == '"')
		e = strchr(++v, '"');
	else
		e = v + strcspn(v, ", ");
	if (!e || e == v || (size_t)(e - v) >= n)
		return false;
	snprintf(out, n, "%.*s", (int)(e - v), v);
	return true;
}
