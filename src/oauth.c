/*
 * oauth: request building and response classification for the token
 * endpoint. Everything a provider sends is treated as hostile: sizes are
 * capped, types checked, and error text reduced to printable ASCII before
 * it can reach a status file.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "config.h"
#include "jwt.h"
#include "oauth.h"
#include "plan.h"
#include "record.h"

#define MAX_EXPIRES_IN_S (366LL * 86400)
#define MAX_TOKEN_TYPE 64
#define MAX_SCOPES 256

const char *oauth_outcome_name(enum oauth_outcome o)
{
	switch (o) {
	case OAUTH_OK: return "ok";
	case OAUTH_TRANSIENT: return "transient";
	case OAUTH_RATE_LIMITED: return "rate_limited";
	case OAUTH_MALFORMED: return "malformed";
	case OAUTH_INVALID_GRANT: return "invalid_grant";
	case OAUTH_INVALID_CLIENT: return "invalid_client";
	case OAUTH_REJECTED: return "rejected";
	}
	return "unknown";
}

void oauth_sanitize(const char *in, size_t inlen, char *out, size_t n)
{
	size_t i, j = 0;

	if (!n)
		return;
	for (i = 0; i < inlen && j + 1 < n; i++) {
		unsigned char ch = (unsigned char)in[i];

		out[j++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
	}
	out[j] = '\0';
}

/* Append "&name=value", form-urlencoded (RFC 6749 appendix B). */
static int form_add(struct buf *b, const char *name, const char *value)
{
	char *enc = curl_easy_escape(NULL, value, 0);
	int r;

	if (!enc)
		return -ENOMEM;
	r = buf_printf(b, "%s%s=%s", b->len ? "&" : "", name, enc);
	OPENSSL_cleanse(enc, strlen(enc));
	curl_free(enc);
	return r;
}

/* @p's scope separator; ' ' for a provider that names none. */
static char scope_sep(const struct provider_conf *p)
{
	return p && p->scope_sep ? p->scope_sep : ' ';
}

static int scope_join(const struct cred_conf *cc, struct buf *out)
{
	char sep = scope_sep(cc->provider);
	size_t i;
	int r = 0;

	buf_init(out, 64 * 1024);
	for (i = 0; i < cc->n_scopes && r == 0; i++)
		r = buf_printf(out, "%.*s%s", i ? 1 : 0, &sep, cc->scopes[i]);
	if (r == 0)
		r = buf_append(out, "", 0);
	return r;
}

/* The client a request is made as: the one registered for the
 * credential (credfsctl register), else the provider's. */
struct client_view {
	const char *id, *secret;
	enum auth_method auth;
};

static struct client_view client_of(const struct provider_conf *p,
				    const struct record_client *reg)
{
	struct client_view v = {p->client_id, p->client_secret, p->auth};

	if (!reg || !reg->id)
		return v;
	v.id = reg->id;
	v.secret = reg->secret;
	if (!reg->secret || !reg->auth_method ||
	    !strcmp(reg->auth_method, "none"))
		v.auth = AUTH_NONE;
	else if (!strcmp(reg->auth_method, "client_secret_basic"))
		v.auth = AUTH_CLIENT_SECRET_BASIC;
	else
		v.auth = AUTH_CLIENT_SECRET_POST;
	return v;
}

/* RFC 6749 2.3.1: id and secret are form-urlencoded, then Basic. */
static int basic_header(const struct client_view *v, char **out)
{
	char *id = curl_easy_escape(NULL, v->id, 0);
	char *sec = curl_easy_escape(NULL, v->secret, 0);
	unsigned char *b64 = NULL;
	struct buf plain;
	int r = -ENOMEM, n;

	buf_init(&plain, 16 * 1024);
	if (!id || !sec)
		goto out;
	r = buf_printf(&plain, "%s:%s", id, sec);
	if (r < 0)
		goto out;
	b64 = malloc(4 * ((plain.len + 2) / 3) + 1);
	r = -ENOMEM;
	if (!b64)
		goto out;
	n = EVP_EncodeBlock(b64, (unsigned char *)plain.data, (int)plain.len);
	if (asprintf(out, "Authorization: Basic %.*s", n, b64) < 0)
		goto out;
	r = 0;
out:
	if (b64)
		freezero(b64, 4 * ((plain.len + 2) / 3) + 1);
	buf_free(&plain);
	if (sec) {
		OPENSSL_cleanse(sec, strlen(sec));
		curl_free(sec);
	}
	curl_free(id);
	return r;
}

/* Client authentication (RFC 6749 2.3.1, RFC 7523 2.2; none: RFC 6749
 * 2.1 public clients send only their id). */
static int client_auth(const struct provider_conf *p,
		       const struct record_client *reg, const char *url,
		       struct buf *body, char **auth_header)
{
	struct client_view v = client_of(p, reg);
	char *jwt = NULL;
	int r = 0;

	switch (v.auth) {
	case AUTH_CLIENT_SECRET_BASIC: return basic_header(&v, auth_header);
	case AUTH_CLIENT_SECRET_POST:
		r = form_add(body, "client_id", v.id);
		if (r == 0)
			r = form_add(body, "client_secret", v.secret);
		return r;
	case AUTH_NONE: return form_add(body, "client_id", v.id);
	case AUTH_PRIVATE_KEY_JWT:
		r = jwt_client_assertion(p, url, time_real_ms() / 1000, &jwt);
		if (r == 0)
			r = form_add(body, "client_id", v.id);
		if (r == 0)
			r = form_add(body, "client_assertion_type",
				     "urn:ietf:params:oauth:client-assertion-"
				     "type:jwt-bearer");
		if (r == 0)
			r = form_add(body, "client_assertion", jwt);
		strfreezero(jwt);
		return r;
	}
	return -EINVAL;
}

const char *oauth_client_id(const struct provider_conf *p,
			    const struct record_client *reg)
{
	return client_of(p, reg).id;
}

int oauth_build_form(const struct provider_conf *p,
		     const struct record_client *reg, const char *url,
		     const char *const *pairs, bool token_params,
		     struct buf *body, char **auth_header)
{
	size_t i;
	int r = 0;

	*auth_header = NULL;
	buf_init(body, 64 * 1024);
	for (i = 0; r == 0 && pairs[i]; i += 2)
		if (pairs[i + 1])
			r = form_add(body, pairs[i], pairs[i + 1]);
	for (i = 0; r == 0 && token_params && i < p->n_params; i++)
		r = form_add(body, p->params[i].name, p->params[i].value);
	if (r == 0 && token_params && p->resource) /* RFC 8707 2.2 */
		r = form_add(body, "resource", p->resource);
	if (r == 0)
		r = client_auth(p, reg, url, body, auth_header);
	if (r < 0) {
		buf_free(body);
		strfreezero(*auth_header);
		*auth_header = NULL;
	}
	return r;
}

int oauth_scope_text(const struct cred_conf *cc, bool authorization,
		     struct buf *out)
{
	const struct provider_conf *p = cc->provider;
	char sep = scope_sep(p);
	size_t i;
	int r;

	r = scope_join(cc, out);
	for (i = 0; r == 0 && authorization && i < p->n_auth_scopes; i++)
		r = buf_printf(out, "%.*s%s", out->len ? 1 : 0, &sep,
			       p->auth_scopes[i]);
	return r;
}

int oauth_build_request(const struct cred_conf *cc,
			const struct record_client *reg,
			const char *refresh_token, struct buf *body,
			char **auth_header)
{
	struct buf scope = {0};
	int r = 0;

	if (cc->n_scopes)
		r = scope_join(cc, &scope);
	if (r == 0) {
		const char *pairs[] = {
			"grant_type",
			refresh_token ? "refresh_token" : "client_credentials",
			"refresh_token",
			refresh_token,
			"scope",
			scope.data,
			NULL,
		};

		r = oauth_build_form(cc->provider, reg, cc->provider->token_url,
				     pairs, true, body, auth_header);
	}
	buf_free(&scope);
	return r;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int oauth_split_scopes(const char *s, char sep, struct oauth_token *t)
{
	char *copy = strdup(s), *p, *save = NULL;
	char delim[3] = {' ', sep == ',' ? ',' : '\0', '\0'};
	size_t i, n = 0;

	if (!copy)
		return -ENOMEM;
	t->scopes = calloc(MAX_SCOPES + 1, sizeof(char *));
	if (!t->scopes) {
		free(copy);
		return -ENOMEM;
	}
	for (p = strtok_r(copy, delim, &save); p && n < MAX_SCOPES;
	     p = strtok_r(NULL, delim, &save)) {
		t->scopes[n] = strdup(p);
		if (!t->scopes[n])
			break;
		n++;
	}
	free(copy);
	qsort(t->scopes, n, sizeof(char *), cmp_str);
	t->n_scopes = 0;
	for (i = 0; i < n; i++) {
		if (t->n_scopes &&
		    !strcmp(t->scopes[t->n_scopes - 1], t->scopes[i])) {
			free(t->scopes[i]);
			continue;
		}
		t->scopes[t->n_scopes++] = t->scopes[i];
	}
	return 0;
}

static bool token_chars_ok(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

static void malformed(struct oauth_result *res, const char *what)
{
	res->outcome = OAUTH_MALFORMED;
	snprintf(res->error, sizeof(res->error), "malformed token response: %s",
		 what);
}

/* A positive number of seconds up to @max (@maxname), as JSON has it. */
static int seconds_of(json_t *v, double max, const char *maxname, int64_t *ms,
		      const char **why)
{
	double d;

	if (!json_is_number(v)) {
		*why = "is not a number";
		return -1;
	}
	d = json_number_value(v);
	if (!isfinite(d) || d <= 0) {
		*why = "is not positive";
		return -1;
	}
	if (d > max) {
		*why = maxname;
		return -1;
	}
	*ms = (int64_t)(d * 1000.0);
	return 0;
}

/* The provider's response_fields: short printable strings or numbers,
 * never a token (the config refuses those names). */
static int take_fields(const struct provider_conf *p, json_t *root,
		       struct oauth_token *t)
{
	size_t i;

	if (!p || !p->n_response_fields)
		return 0;
	t->fields = calloc(p->n_response_fields, sizeof(char *));
	if (!t->fields)
		return -ENOMEM;
	t->n_fields = p->n_response_fields;
	for (i = 0; i < p->n_response_fields; i++) {
		json_t *v = json_object_get(root, p->response_fields[i]);
		char text[OAUTH_MAX_FIELD_BYTES + 1];

		if (json_is_string(v) &&
		    json_string_length(v) <= OAUTH_MAX_FIELD_BYTES)
			oauth_sanitize(json_string_value(v),
				       json_string_length(v), text,
				       sizeof(text));
		else if (json_is_integer(v))
			snprintf(text, sizeof(text), "%lld",
				 (long long)json_integer_value(v));
		else
			continue; /* absent, or not a plain value */
		t->fields[i] = strdup(text);
		if (!t->fields[i])
			return -ENOMEM;
	}
	return 0;
}

/* RFC 6749 5.1. Fills res->tok or classifies the body as malformed. */
static void parse_success(const struct provider_conf *p, json_t *root,
			  struct oauth_result *res)
{
	json_t *at = json_object_get(root, "access_token");
	json_t *tt = json_object_get(root, "token_type");
	json_t *ei = json_object_get(root, "expires_in");
	json_t *sc = json_object_get(root, "scope");
	json_t *rt = json_object_get(root, "refresh_token");
	json_t *rei = json_object_get(root, "refresh_token_expires_in");
	struct oauth_token *t = &res->tok;
	const char *why;
	char what[128];

	if (!json_is_string(at) || json_string_length(at) == 0)
		return malformed(res, "no access_token string");
	if (json_string_length(at) > OAUTH_MAX_TOKEN_BYTES) {
		snprintf(what, sizeof(what),
			 "access_token is %zu bytes, over "
			 "the %d byte limit",
			 json_string_length(at), OAUTH_MAX_TOKEN_BYTES);
		return malformed(res, what);
	}
	if (!token_chars_ok(json_string_value(at), json_string_length(at)))
		return malformed(res, "access_token holds whitespace or "
				      "non-ASCII bytes");
	if (tt &&
	    (!json_is_string(tt) || json_string_length(tt) == 0 ||
	     json_string_length(tt) > MAX_TOKEN_TYPE ||
	     !token_chars_ok(json_string_value(tt), json_string_length(tt))))
		return malformed(res, "token_type is not a short word");
	t->expires_in_ms = -1;
	t->refresh_expires_in_ms = -1;
	if (ei && seconds_of(ei, (double)MAX_EXPIRES_IN_S, "is over one year",
			     &t->expires_in_ms, &why) < 0) {
		snprintf(what, sizeof(what), "expires_in %s", why);
		return malformed(res, what);
	}
	if (rei && seconds_of(rei, 10.0 * MAX_EXPIRES_IN_S, "is over ten years",
			      &t->refresh_expires_in_ms, &why) < 0) {
		snprintf(what, sizeof(what), "refresh_token_expires_in %s",
			 why);
		return malformed(res, what);
	}
	if (sc && !json_is_string(sc))
		return malformed(res, "scope is not a string");
	if (rt &&
	    (!json_is_string(rt) || json_string_length(rt) == 0 ||
	     json_string_length(rt) > OAUTH_MAX_TOKEN_BYTES ||
	     !token_chars_ok(json_string_value(rt), json_string_length(rt))))
		return malformed(res, "refresh_token is not a usable string");

	t->len = json_string_length(at);
	t->access_token = malloc(t->len + 1);
	t->token_type = strdup(tt ? json_string_value(tt) : "Bearer");
	if (rt)
		t->refresh_token = strdup(json_string_value(rt));
	if (!t->access_token || !t->token_type || (rt && !t->refresh_token) ||
	    (sc &&
	     oauth_split_scopes(json_string_value(sc), scope_sep(p), t) < 0) ||
	    take_fields(p, root, t) < 0) {
		oauth_result_clear(res);
		res->outcome = OAUTH_TRANSIENT;
		snprintf(res->error, sizeof(res->error), "out of memory");
		return;
	}
	memcpy(t->access_token, json_string_value(at), t->len + 1);
	res->outcome = OAUTH_OK;
}

bool oauth_outcome_from_name(const char *name, enum oauth_outcome *o)
{
	static const enum oauth_outcome all[] = {
		OAUTH_INVALID_GRANT, OAUTH_INVALID_CLIENT, OAUTH_REJECTED,
		OAUTH_TRANSIENT,     OAUTH_RATE_LIMITED,
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(all); i++)
		if (!strcmp(oauth_outcome_name(all[i]), name)) {
			*o = all[i];
			return true;
		}
	return false;
}

/* Map an error code to an outcome: the provider's own codes first, then
 * RFC 6749 5.2's, then the HTTP status. */
static enum oauth_outcome error_outcome(const struct provider_conf *p,
					const char *code, long status)
{
	static const struct {
		const char *code;
		enum oauth_outcome outcome;
	} map[] = {
		{"invalid_grant", OAUTH_INVALID_GRANT},
		{"invalid_client", OAUTH_INVALID_CLIENT},
		{"unauthorized_client", OAUTH_INVALID_CLIENT},
		{"invalid_scope", OAUTH_REJECTED},
		{"invalid_request", OAUTH_REJECTED},
		{"unsupported_grant_type", OAUTH_REJECTED},
		{"access_denied", OAUTH_REJECTED},
		{"temporarily_unavailable", OAUTH_TRANSIENT},
		{"server_error", OAUTH_TRANSIENT},
		{"slow_down", OAUTH_RATE_LIMITED},
	};
	enum oauth_outcome o;
	size_t i;

	for (i = 0; p && code[0] && i < p->n_error_codes; i++)
		if (!strcmp(p->error_codes[i].name, code) &&
		    oauth_outcome_from_name(p->error_codes[i].value, &o))
			return o;
	for (i = 0; i < ARRAY_SIZE(map); i++)
		if (!strcmp(map[i].code, code))
			return map[i].outcome;
	if (status == 429)
		return OAUTH_RATE_LIMITED;
	if (status >= 500 || status == 408)
		return OAUTH_TRANSIENT;
	return status == 401 ? OAUTH_INVALID_CLIENT : OAUTH_REJECTED;
}

/* The error code of @root: the profile's error field, else "error". */
static json_t *error_code_of(const struct provider_conf *p, json_t *root)
{
	json_t *v = NULL;

	if (p && p->error_field)
		v = json_object_get(root, p->error_field);
	if (!json_is_string(v))
		v = json_object_get(root, "error");
	return json_is_string(v) ? v : NULL;
}

static void classify_error(const struct provider_conf *p, long status,
			   json_t *root, struct oauth_result *res)
{
	json_t *code = error_code_of(p, root);
	json_t *desc = json_object_get(root, "error_description");
	char c[64] = "", d[160] = "";

	if (!json_is_string(desc))
		desc = json_object_get(root, "message");
	if (json_is_string(code))
		oauth_sanitize(json_string_value(code),
			       json_string_length(code), c, sizeof(c));
	if (json_is_string(desc))
		oauth_sanitize(json_string_value(desc),
			       json_string_length(desc), d, sizeof(d));
	res->outcome = error_outcome(p, c, status);
	memcpy(res->error_code, c, sizeof(res->error_code));
	snprintf(res->error, sizeof(res->error), "%s%s%s (HTTP %ld)",
		 c[0] ? c : "error", d[0] ? ": " : "", d, status);
}

/* Whether Content-Type @ctype is application/x-www-form-urlencoded. */
static bool is_form(const char *ctype)
{
	static const char form[] = "application/x-www-form-urlencoded";

	return ctype && !strncasecmp(ctype, form, sizeof(form) - 1) &&
	       (!ctype[sizeof(form) - 1] || ctype[sizeof(form) - 1] == ';' ||
		ctype[sizeof(form) - 1] == ' ');
}

/* @n bytes of form text decoded (application/x-www-form-urlencoded: '+'
 * is a space, then %XX), in *@out (curl_free it, wiped) of *@outlen. */
static int form_decode(const char *s, size_t n, char **out, int *outlen)
{
	char *raw = malloc(n + 1);
	size_t i;

	*out = NULL;
	if (!raw)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		raw[i] = s[i] == '+' ? ' ' : s[i];
	raw[n] = '\0'; /* a length of 0 makes curl take strlen() */
	*out = curl_easy_unescape(NULL, raw, (int)n, outlen);
	OPENSSL_cleanse(raw, n);
	free(raw);
	return *out ? 0 : -ENOMEM;
}

/* A form value as JSON: the lifetimes are numbers when they are digits
 * (a form has no types), everything else a string. */
static json_t *form_value(const char *key, const char *v, int vn)
{
	if ((!strcmp(key, "expires_in") ||
	     !strcmp(key, "refresh_token_expires_in")) &&
	    vn > 0 && vn < 12 && strspn(v, "0123456789") == (size_t)vn)
		return json_integer(strtoll(v, NULL, 10));
	return json_stringn(v, (size_t)vn);
}

/*
 * A form-encoded body (GitHub answers so unless asked for JSON) as the
 * JSON object it stands for. NULL when it is not a form, or names a key
 * twice.
 */
static json_t *form_to_json(const char *body, size_t len)
{
	json_t *o = json_object();
	size_t i = 0;

	if (!o || !len || memchr(body, '\0', len))
		goto fail;
	while (i <= len) {
		const char *pair = body + i, *end = memchr(pair, '&', len - i);
		size_t n = end ? (size_t)(end - pair) : len - i;
		const char *eq = memchr(pair, '=', n);
		char *k = NULL, *v = NULL;
		json_t *jv = NULL;
		int kn = 0, vn = 0;
		bool ok;

		i += n + 1;
		if (!n)
			continue;
		ok = eq &&
		     form_decode(pair, (size_t)(eq - pair), &k, &kn) == 0 &&
		     form_decode(eq + 1, n - (size_t)(eq - pair) - 1, &v,
				 &vn) == 0 &&
		     (size_t)kn == strlen(k) && !json_object_get(o, k);
		if (ok)
			jv = form_value(k, v, vn);
		/* set_new takes jv over, also when it fails */
		ok = jv && json_object_set_new(o, k, jv) == 0;
		if (v)
			OPENSSL_cleanse(v, (size_t)vn);
		curl_free(k);
		curl_free(v);
		if (!ok)
			goto fail;
	}
	return o;
fail:
	json_decref(o);
	return NULL;
}

void oauth_classify(const struct provider_conf *p, long status,
		    const char *ctype, const char *body, size_t len,
		    const char *retry_after, int64_t now_ms,
		    struct oauth_result *res)
{
	bool form = is_form(ctype);
	json_t *root = NULL;

	memset(res, 0, sizeof(*res));
	res->retry_after_ms = plan_retry_after_ms(retry_after, now_ms);
	if (len)
		root = form ? form_to_json(body, len)
			    : json_loadb(body, len, JSON_REJECT_DUPLICATES,
					 NULL);
	if (root && !json_is_object(root)) {
		json_decref(root);
		root = NULL;
	}

	if (status >= 200 && status < 300) {
		/* An error in a 200 (Slack's "ok": false, GitHub's forms) is
		 * still an error. */
		if (!root)
			malformed(res, !len   ? "empty body"
				       : form ? "body is not a valid form"
					      : "body is not a JSON object");
		else if (error_code_of(p, root))
			classify_error(p, status, root, res);
		else
			parse_success(p, root, res);
	} else if (root && error_code_of(p, root)) {
		classify_error(p, status, root, res);
	} else {
		res->outcome = error_outcome(p, "", status);
		snprintf(res->error, sizeof(res->error), "HTTP %ld%s", status,
			 status >= 300 && status < 400
				 ? " (redirects are not followed)"
				 : "");
	}
	if (res->outcome == OAUTH_TRANSIENT && res->retry_after_ms >= 0 &&
	    status == 503)
		res->outcome = OAUTH_RATE_LIMITED;
	json_decref(root);
}

int oauth_parse_introspection(long status, const char *body, size_t len,
			      bool *active, char *err, size_t errlen)
{
	json_t *root = NULL, *a;
	int r = -EPROTO;

	if (status < 200 || status > 299) {
		snprintf(err, errlen, "introspection: HTTP %ld", status);
		return r;
	}
	if (len)
		root = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
	a = json_is_object(root) ? json_object_get(root, "active") : NULL;
	if (json_is_boolean(a)) {
		*active = json_is_true(a);
		r = 0;
	} else {
		snprintf(err, errlen, "introspection: %s",
			 json_is_object(root) ? "no boolean \"active\""
					      : "body is not a JSON object");
	}
	json_decref(root);
	return r;
}

void oauth_result_clear(struct oauth_result *res)
{
	size_t i;

	if (res->tok.access_token)
		freezero(res->tok.access_token, res->tok.len);
	strfreezero(res->tok.refresh_token);
	free(res->tok.token_type);
	for (i = 0; i < res->tok.n_scopes; i++)
		free(res->tok.scopes[i]);
	free(res->tok.scopes);
	for (i = 0; i < res->tok.n_fields; i++)
		free(res->tok.fields[i]);
	free(res->tok.fields);
	memset(&res->tok, 0, sizeof(res->tok));
}
