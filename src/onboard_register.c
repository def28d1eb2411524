/*
 * onboard_register: how an MCP server's credential gets a client when the
 * configuration names none: dynamic client registration (RFC 7591), and
 * the client ID metadata document an operator hosts when its client_id is
 * an https URL (docs/mcp.md).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config.h"
#include "http.h"
#include "oauth.h"
#include "onboard.h"
#include "record.h"
#include "util.h"

#define CLIENT_NAME "credfs"

/* The metadata credfs asks for, and hosts: a public client using the
 * authorization code (and, where offered, the device) grant, PKCE, and
 * refresh tokens. */
static json_t *client_metadata(const struct provider_conf *p,
			       const char *client_name,
			       const char *redirect_uri)
{
	json_t *m = json_pack("{s:s, s:[s], s:[ss], s:[s], s:s}", "client_name",
			      client_name, "redirect_uris", redirect_uri,
			      "grant_types", "authorization_code",
			      "refresh_token", "response_types", "code",
			      "token_endpoint_auth_method", "none");

	if (m && p->device_authorization_url)
		json_array_append_new(
			json_object_get(m, "grant_types"),
			json_string("urn:ietf:params:oauth:grant-type:"
				    "device_code"));
	return m;
}

char *client_metadata_document(const struct provider_conf *p,
			       const char *redirect_uri)
{
	json_t *m = client_metadata(p, CLIENT_NAME, redirect_uri);
	char *text;

	if (!m || json_object_set_new(m, "client_id",
				      json_string(p->client_id)) < 0) {
		json_decref(m);
		return NULL;
	}
	text = json_dumps(m, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(m);
	return text;
}

/* A string member of the registration answer, or NULL. */
static const char *member(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static bool printable(const char *s)
{
	for (; *s; s++)
		if (*s < 0x21 || *s > 0x7e)
			return false;
	return true;
}

/* RFC 7591 3.2.1: the answer, taken into @out. 0, or -EPROTO with why. */
static int parse_registration(long status, const char *body, size_t len,
			      const char *redirect_uri,
			      struct record_client *out, char *err,
			      size_t errlen)
{
	json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
	const char *id = member(o, "client_id");
	const char *secret = member(o, "client_secret");
	const char *method = member(o, "token_endpoint_auth_method");
	char text[OAUTH_ERROR_TEXT];
	int r = -EPROTO;

	if (status != 201 && status != 200) {
		/* 3.2.2: error and error_description, shown sanitized. */
		const char *why = member(o, "error_description");

		if (!why)
			why = member(o, "error") ? member(o, "error") : "";
		oauth_sanitize(why, strlen(why), text, sizeof(text));
		snprintf(err, errlen,
			 "the registration endpoint refused (HTTP %ld%s%s)",
			 status, text[0] ? ": " : "", text);
	} else if (!id || !id[0] || strlen(id) > 1024) {
		snprintf(err, errlen,
			 "the registration answer has no client_id");
	} else if (!printable(id)) {
		/* It is printed to the operator's terminal. */
		snprintf(err, errlen,
			 "the registration answer's client_id is not printable "
			 "ASCII; refused");
	} else if (method && strcmp(method, "none") &&
		   strcmp(method, "client_secret_post") &&
		   strcmp(method, "client_secret_basic")) {
		oauth_sanitize(method, strlen(method), text, sizeof(text));
		snprintf(err, errlen,
			 "the authorization server registered the client "
			 "with token_endpoint_auth_method %s, which credfs "
			 "does not speak",
			 text);
	} else if (method && strcmp(method, "none") && !secret) {
		snprintf(err, errlen,
			 "the client was registered with %s but the answer "
			 "holds no client_secret",
			 method); /* one of the two above */
	} else {
		r = 0;
		out->id = strdup(id);
		out->secret = secret ? strdup(secret) : NULL;
		out->auth_method = strdup(method   ? method
					  : secret ? "client_secret_basic"
						   : "none");
		out->redirect_uri = strdup(redirect_uri);
		if (!out->id || (secret && !out->secret) || !out->auth_method ||
		    !out->redirect_uri)
			r = -ENOMEM;
	}
	json_decref(o);
	if (r < 0)
		record_client_clear(out);
	return r;
}

int register_client(const struct cred_conf *cc, const char *redirect_uri,
		    struct record_client *out, char *err, size_t errlen)
{
	const struct provider_conf *p = cc->provider;
	char name[256], *text = NULL;
	struct http_req *req = NULL;
	const char *body;
	struct buf b;
	size_t len;
	long status;
	json_t *m;
	int r;

	memset(out, 0, sizeof(*out));
	if (!p->registration_url) {
		snprintf(err, errlen,
			 "providers.%s: the authorization server offers no "
			 "dynamic client registration (no "
			 "registration_endpoint in its metadata); register a "
			 "client there and set client_id",
			 p->name);
		return -EOPNOTSUPP;
	}
	snprintf(name, sizeof(name), CLIENT_NAME " (%s)", cc->tenant);
	m = client_metadata(p, name, redirect_uri);
	if (m && cc->n_scopes) {
		struct buf scope;

		if (oauth_scope_text(cc, false, &scope) == 0)
			json_object_set_new(m, "scope",
					    json_string(scope.data));
		buf_free(&scope);
	}
	text = m ? json_dumps(m, JSON_COMPACT) : NULL;
	json_decref(m);
	buf_init(&b, 64 * 1024);
	r = text ? buf_append(&b, text, strlen(text)) : -ENOMEM;
	free(text);
	if (r == 0)
		r = http_req_new_json(p, p->registration_url, &b, &req);
	buf_free(&b);
	if (r == 0) {
		char why[OAUTH_ERROR_TEXT];

		r = http_req_result(req, http_req_perform(req), &status, &body,
				    &len, why, sizeof(why));
		if (r < 0)
			snprintf(err, errlen, "%s: no answer (%s)",
				 p->registration_url, why);
	} else {
		snprintf(err, errlen, "%s", strerror(-r));
	}
	if (r == 0)
		r = parse_registration(status, body, len, redirect_uri, out,
				       err, errlen);
	http_req_free(req);
	return r;
}
