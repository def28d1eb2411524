/*
 * credfsctl mcp-bridge: a stdio MCP server that is a remote one. Each
 * JSON-RPC message read on stdin (one a line, the stdio transport) is
 * POSTed to the server's URL over Streamable HTTP, each with its own
 * thread, and every message the server answers (a JSON body, or the events
 * of an SSE stream) is written to stdout as a line. The token is read from
 * the mount at each request and goes only into the Authorization header:
 * the client that launched the bridge never sees it. What fails comes back
 * as a JSON-RPC error naming the reason (docs/mcp.md).
 */
#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "ctl.h"
#include "http.h"
#include "oauth.h"
#include "util.h"

#define MAX_MESSAGE (16 * 1024 * 1024)
#define MAX_INFLIGHT 64
#define CONNECT_TIMEOUT_MS 10000L

/* JSON-RPC 2.0 error codes: -32000..-32099 are the server's own. */
#define ERR_PARSE (-32700)
#define ERR_TRANSPORT (-32000) /* the server could not be reached */
#define ERR_AUTH (-32001)      /* no token, or the server refused it */
#define ERR_HTTP (-32002)      /* the server answered with an error */

struct bridge {
	const char *mount, *tenant, *provider;
	pthread_mutex_t lock; /* all below, and stdout */
	pthread_cond_t idle;
	unsigned inflight;
	char *url;     /* the server's, from status.json; NULL till known */
	char *session; /* Mcp-Session-Id, once the server gave one */
	char *version; /* the negotiated MCP-Protocol-Version */
};

/* Write one message as a line on stdout, whole. */
static void emit(struct bridge *b, json_t *msg)
{
	char *text = json_dumps(msg, JSON_COMPACT);
	json_t *v;

	if (!text)
		return;
	pthread_mutex_lock(&b->lock);
	/* The initialize result says the version to send from now on. */
	v = json_object_get(json_object_get(msg, "result"), "protocolVersion");
	if (json_is_string(v)) {
		free(b->version);
		b->version = strdup(json_string_value(v));
	}
	fputs(text, stdout);
	fputc('\n', stdout);
	fflush(stdout);
	pthread_mutex_unlock(&b->lock);
	free(text);
}

/* A JSON-RPC error for request @id (none for a notification: said on
 * stderr only). */
static void fail(struct bridge *b, json_t *id, int code, long http,
		 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void fail(struct bridge *b, json_t *id, int code, long http,
		 const char *fmt, ...)
{
	char text[1024];
	json_t *msg;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	fprintf(stderr, "credfsctl mcp-bridge: %s\n", text);
	if (!id)
		return;
	msg = json_pack("{s:s, s:O, s:{s:i, s:s, s:{s:s, s:s, s:s}}}",
			"jsonrpc", "2.0", "id", id, "error", "code", code,
			"message", text, "data", "tenant", b->tenant,
			"provider", b->provider, "source", "credfs");
	if (msg && http)
		json_object_set_new(
			json_object_get(json_object_get(msg, "error"), "data"),
			"http_status", json_integer(http));
	if (msg)
		emit(b, msg);
	json_decref(msg);
}

/* What credfs says of the credential: its state and last error, for a
 * message about a token that could not be had or was refused (and its
 * resource, learnt on the way). 0, or the -errno of reading its
 * status.json. */
static int credential_state(struct bridge *b, char *out, size_t n)
{
	char path[4096];
	const char *state, *err;
	struct buf st;
	json_t *o = NULL;
	int r;

	out[0] = '\0';
	snprintf(path, sizeof(path), "%s/tenants/%s/%s/status.json", b->mount,
		 b->tenant, b->provider);
	r = file_read_capped(path, MAX_TOKEN_FILE, false, &st);
	if (r == 0)
		o = json_loadb(st.data, st.len, 0, NULL);
	buf_free(&st);
	state = json_string_value(json_object_get(o, "state"));
	err = json_string_value(json_object_get(o, "last_error"));
	if (state)
		snprintf(out, n, "; credfs says the credential is %s%s%s",
			 state, err ? ", last error: " : "", err ? err : "");
	if (json_is_string(json_object_get(o, "resource"))) {
		pthread_mutex_lock(&b->lock);
		if (!b->url)
			b->url = strdup(json_string_value(
				json_object_get(o, "resource")));
		pthread_mutex_unlock(&b->lock);
	}
	json_decref(o);
	return r;
}

/* The server's URL: the credential's resource, from its status.json. */
static const char *server_url(struct bridge *b, char *why, size_t n)
{
	char state[512];
	const char *u;
	int r;

	pthread_mutex_lock(&b->lock);
	u = b->url;
	pthread_mutex_unlock(&b->lock);
	if (u)
		return u;
	r = credential_state(b, state, sizeof(state));
	pthread_mutex_lock(&b->lock);
	u = b->url;
	pthread_mutex_unlock(&b->lock);
	if (!u && r < 0)
		snprintf(why, n,
			 "cannot read %s/tenants/%s/%s/status.json (%s): is "
			 "credfs mounted on %s, and is %s/%s declared, "
			 "connected and readable by this user?",
			 b->mount, b->tenant, b->provider, strerror(-r),
			 b->mount, b->tenant, b->provider);
	else if (!u)
		snprintf(why, n,
			 "%s/%s names no resource: providers.%s is not an MCP "
			 "server (\"preset\": \"mcp\" with its URL as "
			 "\"resource\")",
			 b->tenant, b->provider, b->provider);
	return u;
}

/* "Authorization: Bearer ..." from the mount, into @hdr (wipe it); or
 * -errno with the reason in @why. */
static int bearer(struct bridge *b, struct buf *hdr, char *why, size_t n)
{
	char path[4096], state[512];
	struct buf tok;
	int r;

	snprintf(path, sizeof(path), "%s/tenants/%s/%s/access_token", b->mount,
		 b->tenant, b->provider);
	buf_init(hdr, MAX_TOKEN_FILE + 64);
	r = file_read_capped(path, MAX_TOKEN_FILE, false, &tok);
	while (r == 0 && tok.len &&
	       (tok.data[tok.len - 1] == '\n' || tok.data[tok.len - 1] == '\r'))
		tok.data[--tok.len] = '\0';
	if (r == 0 && (!tok.len || strlen(tok.data) != tok.len))
		r = -EPROTO;
	if (r == 0)
		r = buf_printf(hdr, "Authorization: Bearer %s", tok.data);
	buf_free(&tok);
	if (r < 0) {
		credential_state(b, state, sizeof(state));
		snprintf(why, n,
			 "credfs could not give the token of %s/%s: %s%s",
			 b->tenant, b->provider, strerror(-r), state);
		buf_free(hdr);
	}
	return r;
}

/* One POST and what it brings back. */
struct post {
	struct bridge *b;
	char *line;	  /* the message, as read */
	json_t *id;	  /* of a request; NULL for the rest */
	struct buf body;  /* a JSON answer, or the SSE bytes not yet split */
	struct buf event; /* the data lines of the event being read */
	bool sse, answered; /* the answer to @id came */
	CURL *easy;	    /* the POST under way, or the last one */
	bool headers_seen;
	char err[CURL_ERROR_SIZE];
};

/* Relay @m; note whether it answers the request. */
static void relay_one(struct post *p, json_t *m)
{
	if (p->id && json_equal(json_object_get(m, "id"), p->id) &&
	    !json_object_get(m, "method"))
		p->answered = true;
	emit(p->b, m);
}

/* The data of one SSE event, or a JSON body: a JSON-RPC message (or an
 * array of them), relayed a message a line. */
static void relay(struct post *p, const char *data, size_t len)
{
	json_t *msg = json_loadb(data, len, 0, NULL);
	size_t i;
	json_t *m;

	if (json_is_array(msg)) {
		json_array_foreach (msg, i, m)
			relay_one(p, m);
	} else if (json_is_object(msg)) {
		relay_one(p, msg);
	} else if (len) {
		fprintf(stderr,
			"credfsctl mcp-bridge: the server sent a message that "
			"is not JSON; dropped\n");
		json_decref(msg);
		return;
	}
	json_decref(msg);
}

/* SSE (the HTML standard's event stream): lines, "data:" ones gathered,
 * a blank line ends an event; comments, ids and retries are skipped. */
static void sse_lines(struct post *p)
{
	char *s = p->body.data, *nl;
	size_t used = 0, n;

	while (s && (nl = memchr(s + used, '\n', p->body.len - used))) {
		char *line = s + used;

		n = (size_t)(nl - line);
		if (n && line[n - 1] == '\r')
			n--;
		if (n == 0) {
			relay(p, p->event.data ? p->event.data : "",
			      p->event.len);
			buf_free(&p->event);
			buf_init(&p->event, MAX_MESSAGE);
		} else if (n >= 5 && !memcmp(line, "data:", 5)) {
			size_t skip = n > 5 && line[5] == ' ' ? 6 : 5;

			if (p->event.len)
				buf_append(&p->event, "\n", 1);
			buf_append(&p->event, line + skip, n - skip);
		}
		used = (size_t)(nl - s) + 1;
	}
	if (used) {
		memmove(s, s + used, p->body.len - used);
		p->body.len -= used;
		s[p->body.len] = '\0';
	}
}

/* What the answer's headers say, once they are all in (at its first
 * bytes, or its end): the session the server gives, and whether the body
 * is an SSE stream. */
static void take_headers(struct post *p)
{
	struct curl_header *h;
	char *ctype = NULL;

	if (p->headers_seen)
		return;
	p->headers_seen = true;
	curl_easy_getinfo(p->easy, CURLINFO_CONTENT_TYPE, &ctype);
	p->sse = ctype && !strncasecmp(ctype, "text/event-stream", 17);
	if (curl_easy_header(p->easy, "Mcp-Session-Id", 0, CURLH_HEADER, -1,
			     &h) == CURLHE_OK &&
	    h->value[0]) {
		pthread_mutex_lock(&p->b->lock);
		free(p->b->session);
		p->b->session = strdup(h->value);
		pthread_mutex_unlock(&p->b->lock);
	}
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct post *p = arg;

	take_headers(p);
	if (buf_append(&p->body, data, size * n) < 0)
		return 0; /* over MAX_MESSAGE: the transfer fails */
	if (p->sse)
		sse_lines(p);
	return size * n;
}

/* The error and error_description of the Bearer challenge of @e's
 * answer (RFC 6750 3), printable, into @out. */
static void challenge_text(CURL *e, char *out, size_t n)
{
	char part[2][256] = {"", ""}, text[2][256] = {"", ""};
	struct curl_header *h;

	if (curl_easy_header(e, "WWW-Authenticate", 0, CURLH_HEADER, -1, &h) ==
	    CURLHE_OK) {
		if (http_auth_param(h->value, "error", part[0],
				    sizeof(part[0])))
			oauth_sanitize(part[0], strlen(part[0]), text[0],
				       sizeof(text[0]));
		if (http_auth_param(h->value, "error_description", part[1],
				    sizeof(part[1])))
			oauth_sanitize(part[1], strlen(part[1]), text[1],
				       sizeof(text[1]));
	}
	snprintf(out, n, "%s%s%s", text[0],
		 text[0][0] && text[1][0] ? ": " : "", text[1]);
}

/* POST the message once; its handle stays in p->easy, for the answer's
 * headers. The HTTP status, or -errno (why in @why). */
static long post_once(struct post *p, const char *url, char *why, size_t n)
{
	struct curl_slist *h = NULL;
	char line[1024];
	struct buf auth;
	long status = 0;
	CURLcode code;
	CURL *e;
	int r;

	r = bearer(p->b, &auth, why, n);
	if (r < 0)
		return r;
	curl_easy_cleanup(p->easy); /* the try before, if any */
	p->easy = e = curl_easy_init();
	p->err[0] = '\0';
	h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, "Accept: application/json, text/event-stream");
	h = curl_slist_append(h, auth.data);
	pthread_mutex_lock(&p->b->lock);
	if (p->b->session) {
		snprintf(line, sizeof(line), "Mcp-Session-Id: %s",
			 p->b->session);
		h = curl_slist_append(h, line);
	}
	if (p->b->version) {
		snprintf(line, sizeof(line), "MCP-Protocol-Version: %s",
			 p->b->version);
		h = curl_slist_append(h, line);
	}
	pthread_mutex_unlock(&p->b->lock);
	buf_free(&auth);
	buf_free(&p->body);
	buf_init(&p->body, MAX_MESSAGE);
	buf_free(&p->event);
	buf_init(&p->event, MAX_MESSAGE);
	p->sse = p->headers_seen = false;
	if (!e || !h) {
		snprintf(why, n, "out of memory");
		status = -ENOMEM;
		goto out;
	}
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "credfs/" CREDFS_VERSION);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, p->line);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(p->line));
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, p);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, p->err);
	code = curl_easy_perform(e);
	if (code != CURLE_OK) {
		const char *what =
			p->err[0] ? p->err : curl_easy_strerror(code);

		oauth_sanitize(what, strlen(what), line, sizeof(line));
		snprintf(why, n, "cannot reach the MCP server at %s: %s", url,
			 line);
		status = -EIO;
		goto out;
	}
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	take_headers(p); /* an answer without a body */
	if (p->sse && p->body.len)
		sse_lines(p); /* a last line without its newline */
out:
	for (struct curl_slist *s = h; s; s = s->next)
		OPENSSL_cleanse(s->data, strlen(s->data));
	curl_slist_free_all(h);
	return status;
}

static void *forward(void *arg)
{
	struct post *p = arg;
	struct bridge *b = p->b;
	char why[1024], what[600];
	const char *url;
	long status = -1;
	int tries;

	url = server_url(b, why, sizeof(why));
	if (!url) {
		fail(b, p->id, ERR_TRANSPORT, 0, "%s", why);
		goto out;
	}
	/* A 401 may be a token that rotated after it was read: read it
	 * again, once. */
	for (tries = 0; tries < 2; tries++) {
		status = post_once(p, url, why, sizeof(why));
		if (status != 401)
			break;
	}
	if (status < 0) {
		fail(b, p->id, status == -EIO ? ERR_TRANSPORT : ERR_AUTH, 0,
		     "%s", why);
	} else if (status == 401 || status == 403) {
		char state[512];

		challenge_text(p->easy, what, sizeof(what));
		credential_state(b, state, sizeof(state));
		fail(b, p->id, ERR_AUTH, status,
		     "the MCP server %s refused the token of %s/%s (HTTP "
		     "%ld%s%s)%s",
		     url, b->tenant, b->provider, status, what[0] ? ": " : "",
		     what, state);
	} else if (status >= 200 && status < 300) {
		if (!p->sse && p->body.len)
			relay(p, p->body.data, p->body.len);
		if (p->id && !p->answered)
			fail(b, p->id, ERR_HTTP, status,
			     "the MCP server %s answered HTTP %ld but sent no "
			     "answer to the request%s",
			     url, status,
			     p->sse ? " before it ended the stream" : "");
	} else {
		/* A JSON-RPC error in the body is the server's own answer. */
		json_t *o = p->body.len ? json_loadb(p->body.data, p->body.len,
						     0, NULL)
					: NULL;

		if (json_is_object(o) && json_object_get(o, "jsonrpc") &&
		    json_object_get(o, "error") && p->id) {
			json_object_set(o, "id", p->id);
			emit(b, o);
		} else {
			oauth_sanitize(p->body.data ? p->body.data : "",
				       p->body.len < 200 ? p->body.len : 200,
				       what, sizeof(what));
			fail(b, p->id, ERR_HTTP, status,
			     "the MCP server %s answered HTTP %ld%s%s%s", url,
			     status, what[0] ? " (" : "", what,
			     what[0] ? ")" : "");
		}
		json_decref(o);
		if (status == 404) {
			pthread_mutex_lock(&b->lock);
			if (b->session) /* it ended the session */
				fprintf(stderr,
					"credfsctl mcp-bridge: the server "
					"ended session; the client must "
					"initialize again\n");
			free(b->session);
			b->session = NULL;
			pthread_mutex_unlock(&b->lock);
		}
	}
out:
	json_decref(p->id);
	free(p->line);
	curl_easy_cleanup(p->easy);
	buf_free(&p->body);
	buf_free(&p->event);
	free(p);
	pthread_mutex_lock(&b->lock);
	b->inflight--;
	pthread_cond_broadcast(&b->idle);
	pthread_mutex_unlock(&b->lock);
	return NULL;
}

/* Hand one line to a thread of its own. */
static void dispatch(struct bridge *b, const char *line, size_t len)
{
	json_t *msg = json_loadb(line, len, 0, NULL);
	struct post *p;
	pthread_attr_t attr;
	pthread_t t;

	if (!json_is_object(msg)) {
		json_decref(msg);
		fail(b, json_null(), ERR_PARSE, 0,
		     "a line on stdin is not a JSON-RPC message object");
		return;
	}
	p = calloc(1, sizeof(*p));
	if (p)
		p->line = strndup(line, len);
	if (!p || !p->line) {
		free(p);
		json_decref(msg);
		return;
	}
	p->b = b;
	/* A request has a method and an id; it is owed an answer. */
	if (json_object_get(msg, "method") && json_object_get(msg, "id"))
		p->id = json_incref(json_object_get(msg, "id"));
	json_decref(msg);
	buf_init(&p->body, MAX_MESSAGE);
	buf_init(&p->event, MAX_MESSAGE);
	pthread_mutex_lock(&b->lock);
	while (b->inflight >= MAX_INFLIGHT)
		pthread_cond_wait(&b->idle, &b->lock);
	b->inflight++;
	pthread_mutex_unlock(&b->lock);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, forward, p) != 0)
		forward(p); /* here, then */
	pthread_attr_destroy(&attr);
}

/* At the end of stdin, tell the server the session is over (DELETE, as
 * the transport says a client should), best effort. */
static void end_session(struct bridge *b)
{
	struct curl_slist *h = NULL;
	char line[1024], why[256];
	struct buf auth;
	CURL *e;

	if (!b->session || !b->url || bearer(b, &auth, why, sizeof(why)) < 0)
		return;
	snprintf(line, sizeof(line), "Mcp-Session-Id: %s", b->session);
	e = curl_easy_init();
	h = curl_slist_append(h, line);
	h = curl_slist_append(h, auth.data);
	if (e && h) {
		curl_easy_setopt(e, CURLOPT_URL, b->url);
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE");
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
		curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 2000L);
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
		curl_easy_perform(e);
	}
	for (struct curl_slist *s = h; s; s = s->next)
		OPENSSL_cleanse(s->data, strlen(s->data));
	curl_slist_free_all(h);
	curl_easy_cleanup(e);
	buf_free(&auth);
}

int mcp_bridge_main(int argc, char **argv)
{
	struct bridge b = {0};
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	struct args a;
	int r;

	r = parse_args(argc, argv, "mcp-bridge",
		       "TENANT PROVIDER [--mount DIR]",
		       "A stdio MCP server for a client that can only launch "
		       "local ones: every\nJSON-RPC message on stdin goes to "
		       "the remote MCP server of TENANT's\ncredential at "
		       "PROVIDER (a \"preset\": \"mcp\" provider) over "
		       "Streamable HTTP,\nwith the token from the mount "
		       "(default " DEFAULT_MOUNT ") in the\nAuthorization "
		       "header; its answers come back on stdout. The client "
		       "never\nsees the token. Failures come back as JSON-RPC "
		       "errors naming the reason.\n",
		       OPT_MOUNT | OPT_NO_CONFIG, 2, 2, &a);
	if (r)
		return r == 1 ? 0 : r;
	b.mount = a.mount ? a.mount : DEFAULT_MOUNT;
	b.tenant = a.pos[0];
	b.provider = a.pos[1];
	pthread_mutex_init(&b.lock, NULL);
	pthread_cond_init(&b.idle, NULL);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	while ((n = getline(&line, &cap, stdin)) >= 0) {
		while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n == 0)
			continue;
		if (n > MAX_MESSAGE) {
			fail(&b, json_null(), ERR_PARSE, 0,
			     "a message of over %d bytes; dropped",
			     MAX_MESSAGE);
			continue;
		}
		dispatch(&b, line, (size_t)n);
	}
	free(line);
	pthread_mutex_lock(&b.lock);
	while (b.inflight)
		pthread_cond_wait(&b.idle, &b.lock);
	pthread_mutex_unlock(&b.lock);
	end_session(&b);
	free(b.url);
	free(b.session);
	free(b.version);
	curl_global_cleanup();
	return 0;
}
