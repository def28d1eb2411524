/*
 * onboard: the flows behind credfsctl connect, device and remove --revoke.
 *
 * The loopback listener is a deliberately small HTTP/1.0 responder: it
 * reads one request head per connection, looks only at the request line,
 * answers with a short text/html page and closes. It listens on loopback
 * only.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "config.h"
#include "http.h"
#include "jwt.h"
#include "oauth.h"
#include "onboard.h"
#include "util.h"

#define MAX_HEAD 8192
#define DEVICE_POLL_DEFAULT_S 5

struct loopback {
	int fd;
	char *path;
	char *uri;
};

int onboard_random_b64url(size_t n, char **out)
{
	unsigned char b[64];

	*out = NULL;
	if (n > sizeof(b) || RAND_bytes(b, (int)n) != 1)
		return -EIO;
	return jwt_b64url(b, n, out);
}

int pkce_challenge(const char *verifier, char **challenge)
{
	unsigned char md[32];
	unsigned int n = 0;

	if (EVP_Digest(verifier, strlen(verifier), md, &n, EVP_sha256(),
		       NULL) != 1)
		return -EIO;
	return jwt_b64url(md, n, challenge);
}

int pkce_new(char **verifier, char **challenge)
{
	int r = onboard_random_b64url(32, verifier);

	*challenge = NULL;
	if (r == 0)
		r = pkce_challenge(*verifier, challenge);
	return r;
}

/* --- the loopback listener ------------------------------------------ */

int loopback_open(const char *redirect_uri, const char *default_path,
		  struct loopback **out, char *err, size_t errlen)
{
	struct loopback *lb = calloc(1, sizeof(*lb));
	char *host = NULL, *port = NULL, *path = NULL;
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
	struct sockaddr_in a4 = {.sin_family = AF_INET};
	socklen_t len = sizeof(a4);
	bool v6 = false;
	CURLU *u = NULL;
	char *end;
	long portnum;
	int r = 0, one = 1;

	*out = NULL;
	if (!lb)
		return -ENOMEM;
	lb->fd = -1;
	a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (redirect_uri) {
		u = curl_url();
		if (!u || curl_url_set(u, CURLUPART_URL, redirect_uri, 0) ||
		    curl_url_get(u, CURLUPART_HOST, &host, 0) ||
		    curl_url_get(u, CURLUPART_PORT, &port, 0) ||
		    curl_url_get(u, CURLUPART_PATH, &path, 0)) {
			snprintf(err, errlen, "redirect_uri %s: cannot parse",
				 redirect_uri);
			r = -EINVAL;
			goto out;
		}
		v6 = host[0] == '[';
		errno = 0;
		portnum = strtol(port, &end, 10);
		if (errno || *end || portnum <= 0 || portnum > 65535) {
			snprintf(err, errlen, "redirect_uri %s: bad port",
				 redirect_uri);
			r = -EINVAL;
			goto out;
		}
		a4.sin_port = a6.sin6_port = htons((uint16_t)portnum);
		lb->path = strdup(path);
		lb->uri = strdup(redirect_uri);
	} else {
		lb->path = strdup(default_path);
	}
	if (!lb->path) {
		r = -ENOMEM;
		goto out;
	}
	a6.sin6_addr = in6addr_loopback;
	lb->fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lb->fd < 0 ||
	    setsockopt(lb->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    (v6 ? bind(lb->fd, (struct sockaddr *)&a6, sizeof(a6))
		: bind(lb->fd, (struct sockaddr *)&a4, sizeof(a4))) < 0 ||
	    listen(lb->fd, 8) < 0) {
		r = -errno;
		snprintf(err, errlen,
			 "cannot listen for the redirect on loopback port "
			 "%s: %s",
			 port ? port : "(any)", strerror(-r));
		goto out;
	}
	if (!lb->uri) {
		getsockname(lb->fd, (struct sockaddr *)&a4, &len);
		if (asprintf(&lb->uri, "http://127.0.0.1:%d%s",
			     ntohs(a4.sin_port), lb->path) < 0)
			lb->uri = NULL;
		if (!lb->uri)
			r = -ENOMEM;
	}
out:
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	if (r < 0) {
		loopback_close(lb);
		return r;
	}
	*out = lb;
	return 0;
}

const char *loopback_uri(const struct loopback *lb)
{
	return lb->uri;
}

static void answer(int fd, int status, const char *title, const char *text)
{
	char page[1024], head[256];
	int n, h;

	n = snprintf(page, sizeof(page),
		     "<!doctype html><html><head><title>credfs</title></head>"
		     "<body><h1>%s</h1><p>%s</p></body></html>\n",
		     title, text);
	h = snprintf(head, sizeof(head),
		     "HTTP/1.0 %d %s\r\nContent-Type: text/html; "
		     "charset=utf-8\r\nContent-Length: %d\r\nCache-Control: "
		     "no-store\r\nConnection: close\r\n\r\n",
		     status, status == 200 ? "OK" : "Bad Request", n);
	(void)!send(fd, head, (size_t)h, MSG_NOSIGNAL);
	(void)!send(fd, page, (size_t)n, MSG_NOSIGNAL);
}

/* Read one request head (up to MAX_HEAD) within @timeout_ms. */
static int read_head(int fd, char *head, size_t size, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	size_t n = 0;

	while (n + 1 < size) {
		ssize_t r;

		if (poll(&p, 1, timeout_ms) <= 0)
			return -ETIMEDOUT;
		r = recv(fd, head + n, size - 1 - n, 0);
		if (r <= 0)
			return -EPROTO;
		n += (size_t)r;
		head[n] = '\0';
		if (strstr(head, "\r\n\r\n") || strstr(head, "\n\n"))
			return 0;
	}
	return -EMSGSIZE;
}

/* The decoded value of @name in the query string @q, or NULL. */
static char *query_get(const char *q, const char *name)
{
	size_t n = strlen(name);

	while (q && *q) {
		const char *amp = strchr(q, '&');
		size_t len = amp ? (size_t)(amp - q) : strlen(q);

		if (len > n && !strncmp(q, name, n) && q[n] == '=') {
			char *raw = strndup(q + n + 1, len - n - 1), *dec;
			char *p;

			if (!raw)
				return NULL;
			for (p = raw; *p; p++)
				if (*p == '+')
					*p = ' ';
			dec = curl_easy_unescape(NULL, raw, 0, NULL);
			free(raw);
			if (!dec)
				return NULL;
			raw = strdup(dec);
			curl_free(dec);
			return raw;
		}
		q = amp ? amp + 1 : NULL;
	}
	return NULL;
}

int loopback_parse(char *head, const char *path,
		   const struct callback_check *want, char **code,
		   const char *page[2], char *err, size_t errlen)
{
	char *target, *sp, *q, *got_state = NULL, *error = NULL, *desc = NULL;
	char *iss = NULL, text[64], d[121] = "", got[130], exp[130];
	int r;

	*code = NULL;
	err[0] = '\0';
	if (strncmp(head, "GET ", 4)) {
		page[0] = "Not a callback";
		page[1] = "Expected GET.";
		return 1;
	}
	target = head + 4;
	sp = strpbrk(target, " \r\n");
	if (sp)
		*sp = '\0';
	q = strchr(target, '?');
	if (q)
		*q++ = '\0';
	if (strcmp(target, path)) {
		page[0] = "Not found";
		page[1] = "This is not the callback path.";
		return 1;
	}
	got_state = query_get(q, "state");
	/* Nothing else is believed before the state matched: any local
	 * process, or a web page that knows the port, can send a callback,
	 * and it must not end (or speak for) the pending authorization. */
	if (!got_state || !want->state ||
	    strlen(got_state) != strlen(want->state) ||
	    CRYPTO_memcmp(got_state, want->state, strlen(want->state))) {
		snprintf(err, errlen,
			 "ignored a callback whose state does not match this "
			 "request (forged or stale); still waiting");
		page[0] = "State mismatch";
		page[1] = "This callback does not belong to the pending "
			  "authorization; nothing was stored.";
		r = 1;
		goto out;
	}
	iss = query_get(q, "iss");
	error = query_get(q, "error");
	desc = query_get(q, "error_description");
	*code = query_get(q, "code");
	if (iss && want->issuer && strcmp(iss, want->issuer)) {
		/* RFC 9207 section 2.4: the response came from another
		 * authorization server than the one asked (RFC 9700 4.4). */
		oauth_sanitize(iss, strlen(iss), got, sizeof(got));
		oauth_sanitize(want->issuer, strlen(want->issuer), exp,
			       sizeof(exp));
		snprintf(err, errlen,
			 "the callback's iss %s is not this provider's issuer "
			 "%s: a mix-up attack (RFC 9700 section 4.4) or a "
			 "misconfigured provider; the code was not sent "
			 "anywhere and nothing was stored",
			 got, exp);
		page[0] = "Issuer mismatch";
		page[1] = "The authorization came from another server than "
			  "the one asked; nothing was stored.";
		r = -EPERM;
	} else if (!iss && want->iss_required) {
		snprintf(
			err, errlen,
			"the callback has no iss, which this provider's "
			"metadata says it sends (RFC 9207): a mix-up attack or "
			"a misconfigured provider; the code was not sent "
			"anywhere and nothing was stored");
		page[0] = "Issuer missing";
		page[1] = "The authorization response did not name its "
			  "server; nothing was stored.";
		r = -EPERM;
	} else if (error) {
		/* Both come from the provider, through the browser: printable
		 * ASCII only, before they reach a terminal. */
		oauth_sanitize(error, strlen(error), text, sizeof(text));
		if (desc)
			oauth_sanitize(desc, strlen(desc), d, sizeof(d));
		snprintf(err, errlen, "the provider answered error=%s%s%s",
			 text, d[0] ? ": " : "", d);
		page[0] = "Authorization failed";
		page[1] = "The provider refused the authorization; nothing was "
			  "stored. See credfsctl's message.";
		r = -EACCES;
	} else if (!*code || !**code) {
		snprintf(err, errlen,
			 "the callback carried no authorization code");
		page[0] = "No code";
		page[1] = "The callback carried no code.";
		r = -EPROTO;
	} else {
		page[0] = "credfs: authorization received";
		page[1] = "You can close this window.";
		r = 0;
	}
out:
	if (r != 0) {
		strfreezero(*code);
		*code = NULL;
	}
	free(got_state);
	free(iss);
	free(error);
	free(desc);
	return r;
}

/* A connection to the listener, read without blocking the others. */
struct conn {
	int fd;
	int64_t deadline; /* monotonic: its whole request head by then */
	size_t len;
	char head[MAX_HEAD];
};

#define MAX_CONNS 16
#define HEAD_TIMEOUT_MS 5000

static void conn_close(struct conn *c)
{
	close(c->fd);
	c->fd = -1;
}

/* Read what @c has; 1: its head is complete, 0: not yet, -1: drop it. */
static int conn_read(struct conn *c)
{
	ssize_t n = recv(c->fd, c->head + c->len, sizeof(c->head) - 1 - c->len,
			 MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0)
		return -1;
	c->len += (size_t)n;
	c->head[c->len] = '\0';
	if (strstr(c->head, "\r\n\r\n") || strstr(c->head, "\n\n"))
		return 1;
	return c->len + 1 < sizeof(c->head) ? 0 : -1;
}

int loopback_wait(struct loopback *lb, const struct callback_check *want,
		  int64_t timeout_ms, char **code, char *err, size_t errlen)
{
	int64_t deadline = time_mono_ms() + timeout_ms;
	struct conn *conns = calloc(MAX_CONNS, sizeof(*conns));
	struct pollfd p[MAX_CONNS + 1];
	int i, r = 1;

	*code = NULL;
	if (!conns)
		return -ENOMEM;
	for (i = 0; i < MAX_CONNS; i++)
		conns[i].fd = -1;
	/* One deadline for the wait, one per connection for its request:
	 * a slow sender holds only its own connection. */
	while (r == 1) {
		int64_t now = time_mono_ms(), next = deadline;
		nfds_t n = 1;

		if (now >= deadline) {
			snprintf(
				err, errlen,
				"no callback within %lld s; nothing was stored",
				(long long)(timeout_ms / 1000));
			r = -ETIMEDOUT;
			break;
		}
		p[0] = (struct pollfd){.fd = lb->fd, .events = POLLIN};
		for (i = 0; i < MAX_CONNS; i++) {
			if (conns[i].fd >= 0 && conns[i].deadline <= now)
				conn_close(&conns[i]); /* too slow */
			p[i + 1] = (struct pollfd){.fd = conns[i].fd,
						   .events = POLLIN};
			if (conns[i].fd >= 0 && conns[i].deadline < next)
				next = conns[i].deadline;
			if (conns[i].fd >= 0)
				n = (nfds_t)i + 2;
		}
		if (poll(p, n, (int)(next - now)) <= 0)
			continue;
		if (p[0].revents & POLLIN) {
			int fd = accept4(lb->fd, NULL, NULL, SOCK_CLOEXEC);
			int slot = 0;

			/* A free place, else the oldest one's: a crowd of
			 * slow senders cannot keep a new one out. */
			for (i = 0; i < MAX_CONNS; i++)
				if (conns[i].fd < 0 ||
				    (conns[slot].fd >= 0 &&
				     conns[i].deadline < conns[slot].deadline))
					slot = i;
			if (fd >= 0) {
				if (conns[slot].fd >= 0)
					conn_close(&conns[slot]);
				conns[slot].fd = fd;
				conns[slot].len = 0;
				conns[slot].deadline =
					time_mono_ms() + HEAD_TIMEOUT_MS;
			}
		}
		for (i = 0; r == 1 && i < MAX_CONNS; i++) {
			const char *page[2];
			int got;

			if (conns[i].fd < 0 || (nfds_t)i + 1 >= n ||
			    !p[i + 1].revents)
				continue;
			got = conn_read(&conns[i]);
			if (got < 0)
				conn_close(&conns[i]);
			if (got <= 0)
				continue;
			r = loopback_parse(conns[i].head, lb->path, want, code,
					   page, err, errlen);
			answer(conns[i].fd, r == 0 ? 200 : 400, page[0],
			       page[1]);
			conn_close(&conns[i]);
			if (r == 1 && err[0]) {
				fprintf(stderr, "credfsctl connect: %s\n", err);
				err[0] = '\0';
			}
		}
	}
	for (i = 0; i < MAX_CONNS; i++) {
		if (conns[i].fd >= 0)
			conn_close(&conns[i]);
		OPENSSL_cleanse(conns[i].head, sizeof(conns[i].head));
	}
	free(conns);
	return r;
}

void loopback_close(struct loopback *lb)
{
	struct pollfd p;
	char head[MAX_HEAD];

	if (!lb)
		return;
	p.fd = lb->fd;
	p.events = POLLIN;
	/* Whatever came after the first callback is told so. */
	while (lb->fd >= 0 && poll(&p, 1, 0) > 0) {
		int fd = accept4(lb->fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0)
			break;
		if (read_head(fd, head, sizeof(head), 1000) == 0)
			answer(fd, 400, "Already completed",
			       "This authorization was already completed; a "
			       "second callback is refused.");
		close(fd);
	}
	if (lb->fd >= 0)
		close(lb->fd);
	free(lb->path);
	free(lb->uri);
	free(lb);
}

/* --- requests -------------------------------------------------------- */

static int query_add(struct buf *b, const char *name, const char *value)
{
	char *enc = curl_easy_escape(NULL, value, 0);
	int r;

	if (!enc)
		return -ENOMEM;
	r = buf_printf(b, "&%s=%s", name, enc);
	curl_free(enc);
	return r;
}

int onboard_authorization_url(const struct cred_conf *cc,
			      const struct record_client *reg,
			      const char *redirect_uri, const char *state,
			      const char *challenge, char **out)
{
	const struct provider_conf *p = cc->provider;
	struct buf b, scope;
	size_t i;
	int r;

	*out = NULL;
	buf_init(&b, 64 * 1024);
	r = oauth_scope_text(cc, true, &scope);
	if (r == 0)
		r = buf_printf(&b, "%s%cresponse_type=code",
			       p->authorization_url,
			       strchr(p->authorization_url, '?') ? '&' : '?');
	if (r == 0)
		r = query_add(&b, "client_id", oauth_client_id(p, reg));
	if (r == 0)
		r = query_add(&b, "redirect_uri", redirect_uri);
	if (r == 0 && scope.len)
		r = query_add(&b, "scope", scope.data);
	if (r == 0)
		r = query_add(&b, "state", state);
	if (r == 0)
		r = query_add(&b, "code_challenge", challenge);
	if (r == 0)
		r = query_add(&b, "code_challenge_method", "S256");
	if (r == 0 && p->resource) /* RFC 8707 */
		r = query_add(&b, "resource", p->resource);
	for (i = 0; r == 0 && i < p->n_auth_params; i++)
		r = query_add(&b, p->auth_params[i].name,
			      p->auth_params[i].value);
	buf_free(&scope);
	if (r < 0) {
		buf_free(&b);
		return r;
	}
	*out = b.data;
	return 0;
}

/* POST a form to @url synchronously; the request to read the answer. */
static int post(const struct provider_conf *p, const struct record_client *reg,
		const char *url, const char *const *pairs, bool token_params,
		struct http_req **req, CURLcode *code)
{
	char *auth = NULL;
	struct buf body;
	int r;

	*req = NULL;
	r = oauth_build_form(p, reg, url, pairs, token_params, &body, &auth);
	if (r == 0)
		r = http_req_new(p, url, &body, auth, NULL, req);
	if (r == 0)
		*code = http_req_perform(*req);
	return r;
}

void token_request(const struct cred_conf *cc, const struct record_client *reg,
		   const char *const *pairs, struct oauth_result *res)
{
	struct http_req *req;
	CURLcode code;
	int r;

	r = post(cc->provider, reg, cc->provider->token_url, pairs, true, &req,
		 &code);
	if (r == 0) {
		http_req_finish(req, cc->provider, code, time_real_ms(), res);
	} else {
		memset(res, 0, sizeof(*res));
		res->outcome = OAUTH_TRANSIENT;
		snprintf(res->error, sizeof(res->error),
			 "cannot build the request: %s", strerror(-r));
	}
	http_req_free(req);
}

/* RFC 8628 3.2, as the provider sent it. */
/* A string member of at most 4 KiB; with @shown, printable ASCII only,
 * since it is printed to the operator's terminal. */
static char *json_str(json_t *o, const char *key, bool shown)
{
	json_t *v = json_object_get(o, key);
	const char *p;

	if (!json_is_string(v) || !json_string_length(v) ||
	    json_string_length(v) > 4096)
		return NULL;
	for (p = json_string_value(v); shown && *p; p++)
		if (*p < 0x21 || *p > 0x7e)
			return NULL;
	return strdup(json_string_value(v));
}

int device_auth_parse(long status, const char *body, size_t len,
		      struct device_auth *d, char *err, size_t errlen)
{
	json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL), *v;
	char text[64] = "";
	int r = 0;

	memset(d, 0, sizeof(*d));
	if (status != 200 || !json_is_object(o)) {
		v = json_is_object(o) ? json_object_get(o, "error") : NULL;
		if (json_is_string(v))
			oauth_sanitize(json_string_value(v),
				       json_string_length(v), text,
				       sizeof(text));
		snprintf(err, errlen,
			 "the device authorization endpoint answered HTTP "
			 "%ld%s%s",
			 status, text[0] ? ": " : "", text);
		json_decref(o);
		return -EPROTO;
	}
	d->device_code = json_str(o, "device_code", false);
	d->user_code = json_str(o, "user_code", true);
	/* Google says verification_url. */
	d->uri = json_str(o, "verification_uri", true);
	if (!d->uri)
		d->uri = json_str(o, "verification_url", true);
	d->uri_complete = json_str(o, "verification_uri_complete", true);
	v = json_object_get(o, "expires_in");
	d->expires_in_s = json_is_integer(v) ? json_integer_value(v) : 0;
	v = json_object_get(o, "interval");
	d->interval_s = json_is_integer(v) ? json_integer_value(v)
					   : DEVICE_POLL_DEFAULT_S;
	if (!d->device_code || !d->user_code || !d->uri ||
	    d->expires_in_s <= 0 || d->expires_in_s > 86400 ||
	    d->interval_s < 0 || d->interval_s > 3600) {
		snprintf(err, errlen,
			 "the device authorization answer lacks device_code, "
			 "user_code (printable), verification_uri (printable) "
			 "or an expires_in of 1 s to 1 day");
		device_auth_clear(d);
		r = -EPROTO;
	}
	json_decref(o);
	return r;
}

void device_auth_clear(struct device_auth *d)
{
	strfreezero(d->device_code);
	free(d->user_code);
	free(d->uri);
	free(d->uri_complete);
	memset(d, 0, sizeof(*d));
}

static int device_authorize(const struct cred_conf *cc,
			    const struct record_client *reg,
			    struct device_auth *d, char *err, size_t errlen)
{
	const struct provider_conf *p = cc->provider;
	struct http_req *req = NULL;
	struct buf scope;
	const char *body;
	CURLcode code;
	size_t len;
	long status;
	int r;

	r = oauth_scope_text(cc, true, &scope);
	if (r == 0) {
		const char *pairs[] = {"scope", scope.len ? scope.data : NULL,
				       "resource", p->resource, NULL};

		r = post(p, reg, p->device_authorization_url, pairs, false,
			 &req, &code);
	}
	buf_free(&scope);
	if (r == 0)
		r = http_req_result(req, code, &status, &body, &len, err,
				    errlen);
	if (r == 0)
		r = device_auth_parse(status, body, len, d, err, errlen);
	http_req_free(req);
	return r;
}

/*
 * The verification URI the user is sent to, said to be the provider's:
 * https (http only on loopback), and a warning naming its host when it is
 * not the device authorization endpoint's. 0, or -EPROTO with @err.
 */
static int check_verification_uri(const struct provider_conf *p,
				  const char *uri, FILE *out, char *err,
				  size_t errlen)
{
	char *host = http_url_host(uri, NULL);
	char *as = http_url_host(p->device_authorization_url, NULL);
	int r = 0;

	if (!host || !http_url_safe(uri)) {
		snprintf(
			err, errlen,
			"the device authorization answer sends the user to %s, "
			"which is not an https:// URL; refused",
			uri);
		r = -EPROTO;
	} else if (as && strcmp(host, as)) {
		fprintf(out,
			"warning: the verification page is on %s, not on the "
			"authorization server %s: check that it is %s's before "
			"entering the code\n",
			host, as, p->name);
	}
	free(host);
	free(as);
	return r;
}

int device_flow(const struct cred_conf *cc, const struct record_client *reg,
		int64_t timeout_ms, FILE *out, struct oauth_result *res,
		int64_t *sent_ms, char *err, size_t errlen)
{
	const struct provider_conf *p = cc->provider;
	struct device_auth d = {0};
	int64_t deadline, interval_ms;
	bool by_timeout;
	int r;

	memset(res, 0, sizeof(*res));
	r = device_authorize(cc, reg, &d, err, errlen);
	if (r == 0)
		r = check_verification_uri(p, d.uri, out, err, errlen);
	if (r == 0 && d.uri_complete)
		r = check_verification_uri(p, d.uri_complete, out, err, errlen);
	if (r < 0)
		goto out;
	fprintf(out, "To connect %s/%s, open %s and enter the code: %s\n",
		cc->tenant, cc->provider->name, d.uri, d.user_code);
	if (d.uri_complete)
		fprintf(out, "Or open: %s\n", d.uri_complete);
	fprintf(out, "Waiting up to %lld s for the approval...\n",
		(long long)(d.expires_in_s < timeout_ms / 1000
				    ? d.expires_in_s
				    : timeout_ms / 1000));
	fflush(out);
	by_timeout = timeout_ms <= d.expires_in_s * 1000;
	deadline = time_mono_ms() +
		   (by_timeout ? timeout_ms : d.expires_in_s * 1000);
	/* RFC 8628 3.2: 5 s unless the provider asks for more; an interval
	 * of 0 would poll as fast as the network goes. */
	interval_ms = d.interval_s * 1000;
	if (interval_ms < p->device_min_interval_ms)
		interval_ms = p->device_min_interval_ms;
	for (;;) {
		const char *pairs[] = {
			"grant_type",
			"urn:ietf:params:oauth:grant-type:device_code",
			"device_code",
			d.device_code,
			NULL,
		};

		if (time_mono_ms() + interval_ms > deadline) {
			if (by_timeout)
				snprintf(err, errlen,
					 "--timeout (%lld s) ended the wait "
					 "before the code was approved; run "
					 "credfsctl device again",
					 (long long)(timeout_ms / 1000));
			else
				snprintf(err, errlen,
					 "the device code expired (after its "
					 "%lld s) before it was approved; run "
					 "credfsctl device again",
					 (long long)d.expires_in_s);
			r = -ETIMEDOUT;
			break;
		}
		nanosleep(&(struct timespec){interval_ms / 1000,
					     (interval_ms % 1000) * 1000000},
			  NULL);
		oauth_result_clear(res);
		*sent_ms = time_real_ms();
		token_request(cc, reg, pairs, res);
		if (res->outcome == OAUTH_OK)
			break;
		if (!strcmp(res->error_code, "authorization_pending"))
			continue;
		if (!strcmp(res->error_code, "slow_down")) {
			interval_ms += 5000; /* RFC 8628 3.5 */
			continue;
		}
		if (res->outcome == OAUTH_TRANSIENT ||
		    res->outcome == OAUTH_RATE_LIMITED) {
			/* A 503 or a dropped connection: the code is still
			 * good; ask again at the next interval. */
			fprintf(out,
				"(the token endpoint failed: %s; asking "
				"again)\n",
				res->error);
			fflush(out);
			continue;
		}
		if (!strcmp(res->error_code, "access_denied"))
			snprintf(err, errlen,
				 "the user denied the authorization; nothing "
				 "was stored");
		else if (!strcmp(res->error_code, "expired_token"))
			snprintf(err, errlen,
				 "the device code expired before it was "
				 "approved; run credfsctl device again");
		else
			snprintf(err, errlen, "the token endpoint answered %s",
				 res->error);
		r = -EACCES;
		break;
	}
out:
	device_auth_clear(&d);
	return r;
}

int revoke_token(const struct provider_conf *p, const struct record_client *reg,
		 const char *token, const char *hint, char *msg, size_t msglen)
{
	const char *pairs[] = {"token", token, "token_type_hint", hint, NULL};
	struct http_req *req = NULL;
	char err[OAUTH_ERROR_TEXT];
	const char *body;
	CURLcode code;
	size_t len;
	long status;
	int r;

	r = post(p, reg, p->revocation_url, pairs, false, &req, &code);
	if (r == 0)
		r = http_req_result(req, code, &status, &body, &len, err,
				    sizeof(err));
	if (r < 0)
		snprintf(msg, msglen, "%s: no answer from the provider (%s)",
			 hint, r == -ENOMEM ? "out of memory" : err);
	else if (status == 200)
		snprintf(msg, msglen, "%s revoked (HTTP 200)", hint);
	else
		snprintf(msg, msglen, "%s: the provider answered HTTP %ld",
			 hint, status);
	if (r == 0 && status != 200)
		r = -EPROTO;
	http_req_free(req);
	return r;
}
