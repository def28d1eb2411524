/*
 * provider: parsing one provider of the configuration, the RFC 9700
 * guardrails that refuse what the OAuth Security BCP forbids, and loading
 * its client secret or private key.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "config.h"
#include "confparse.h"
#include "discovery.h"
#include "http.h"
#include "oauth.h"
#include "util.h"

/* https:// anywhere; http:// only to a loopback address. */
static int check_url(struct ctx *c, const char *path, const char *url,
		     char **host_out)
{
	char *scheme = NULL, *host = NULL;
	CURLU *u = curl_url();
	int r = 0;

	if (!u)
		return -ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		r = conf_fail(c, path, "\"%s\" is not a valid absolute URL",
			      url);
		goto out;
	}
	if (!strcmp(scheme, "https"))
		goto out;
	if (!strcmp(scheme, "http")) {
		if (!conf_host_is_loopback(host))
			r = conf_fail(c, path,
				      "http:// is allowed only for loopback "
				      "hosts; use https:// for %s",
				      host);
		goto out;
	}
	r = conf_fail(c, path, "scheme \"%s\" is not allowed; use https://",
		      scheme);
out:
	if (r == 0 && host_out)
		*host_out = strdup(host);
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return r;
}

/* An optional endpoint URL, checked like token_url. */
static int get_url(struct ctx *c, const json_t *obj, const char *path,
		   const char *key, bool required, char **out)
{
	char sub[MAX_PATH_TEXT];
	int r = conf_get_string(c, obj, path, key, required, out);

	if (r < 0 || !*out)
		return r;
	conf_join(sub, path, key);
	return check_url(c, sub, *out, NULL);
}

/*
 * RFC 9700 section 2.1: redirect URIs are compared exactly, so none may
 * hold a wildcard, and http:// is for loopback only. credfsctl connect
 * receives the redirect itself (RFC 8252 section 7.3), so it must be a
 * loopback http:// URI with an explicit port.
 */
static int check_redirect_uri(struct ctx *c, const char *path, const char *v)
{
	char *host = NULL, *port = NULL, *frag = NULL, *scheme = NULL;
	CURLU *u;
	int r = 0;

	if (strchr(v, '*'))
		return conf_fail(c, path,
				 "\"%s\": redirect URIs must be exact, no "
				 "wildcards (RFC 9700 section 2.1)",
				 v);
	u = curl_url();
	if (!u)
		return -ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, v, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		r = conf_fail(c, path, "\"%s\" is not a valid absolute URL", v);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0) == CURLUE_OK) {
		r = conf_fail(c, path, "\"%s\": a redirect URI has no fragment",
			      v);
		goto out;
	}
	if (!strcmp(scheme, "http") && !conf_host_is_loopback(host)) {
		r = conf_fail(
			c, path,
			"\"%s\": http:// redirect URIs are allowed only for "
			"loopback hosts (RFC 9700 section 2.1)",
			v);
		goto out;
	}
	if (!strcasecmp(host, "localhost")) {
		/* credfsctl listens on one address; where localhost names
		 * ::1 first, another local user could take the port there. */
		r = conf_fail(
			c, path,
			"\"%s\": use 127.0.0.1 (or [::1]) instead of "
			"localhost (RFC 8252 section 8.3): the browser may "
			"reach another address than the one credfsctl listens "
			"on",
			v);
		goto out;
	}
	if (strcmp(scheme, "http") ||
	    curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
		r = conf_fail(
			c, path,
			"\"%s\": credfsctl connect receives the redirect on "
			"a loopback listener (RFC 8252 section 7.3): use "
			"http://127.0.0.1:PORT/PATH",
			v);
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(frag);
	curl_url_cleanup(u);
	return r;
}

/* An object of string parameters under @key, none of them @reserved. */
static int parse_params(struct ctx *c, const json_t *obj, const char *path,
			const char *key, const char *const *reserved,
			struct param **out, size_t *n)
{
	char sub[MAX_PATH_TEXT];
	const char *name;
	json_t *params, *v;
	size_t i = 0;
	int r;

	r = conf_get_object(c, obj, path, key, false, &params);
	if (r < 0 || !params)
		return r;
	*out = calloc(json_object_size(params) + 1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	json_object_foreach (params, name, v) {
		const char *const *res;

		snprintf(sub, sizeof(sub), "%s.%s.%s", path, key, name);
		for (res = reserved; *res; res++)
			if (!strcmp(*res, name))
				return conf_fail(c, sub,
						 "is set by credfs itself");
		if (!json_is_string(v))
			return conf_fail(c, sub, "expected a string, got %s",
					 conf_json_kind(v));
		(*out)[i].name = strdup(name);
		(*out)[i].value = strdup(json_string_value(v));
		if (!(*out)[i].name || !(*out)[i].value)
			return -ENOMEM;
		*n = ++i;
	}
	return 0;
}

static const struct {
	const char *name;
	enum auth_method m;
} methods[] = {
	{"client_secret_basic", AUTH_CLIENT_SECRET_BASIC},
	{"client_secret_post", AUTH_CLIENT_SECRET_POST},
	{"private_key_jwt", AUTH_PRIVATE_KEY_JWT},
	{"none", AUTH_NONE},
};

static bool auth_method_valid(const char *s)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(methods); i++)
		if (!strcmp(s, methods[i].name))
			return true;
	return false;
}

static const char *auth_method_name(enum auth_method m)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(methods); i++)
		if (methods[i].m == m)
			return methods[i].name;
	return "?";
}

static int parse_auth(struct ctx *c, const json_t *obj, const char *path,
		      struct provider_conf *p)
{
	char sub[MAX_PATH_TEXT];
	char *auth = NULL;
	size_t i;
	int r;

	r = conf_get_string(c, obj, path, "auth_method", false, &auth);
	conf_join(sub, path, "auth_method");
	for (i = 0; r == 0 && auth && i < ARRAY_SIZE(methods); i++)
		if (!strcmp(auth, methods[i].name))
			break;
	if (r == 0 && auth && i == ARRAY_SIZE(methods))
		r = conf_fail(c, sub,
			      "\"%s\" is not one of client_secret_basic, "
			      "client_secret_post, private_key_jwt, none",
			      auth);
	if (r == 0 && auth)
		p->auth = methods[i].m;
	free(auth);
	if (r == 0)
		r = conf_get_path(c, obj, path, "client_secret_file", false,
				  &p->client_secret_file);
	if (r == 0)
		r = conf_get_path(c, obj, path, "private_key_file", false,
				  &p->private_key_file);
	if (r == 0)
		r = conf_get_string(c, obj, path, "key_id", false, &p->key_id);
	if (r == 0)
		r = conf_get_string(c, obj, path, "jwt_audience", false,
				    &p->jwt_audience);
	if (r < 0)
		return r;
	switch (p->auth) {
	case AUTH_CLIENT_SECRET_BASIC:
	case AUTH_CLIENT_SECRET_POST:
		conf_join(sub, path, "client_secret_file");
		if (!p->client_secret_file)
			return conf_fail(c, sub, "missing");
		break;
	case AUTH_PRIVATE_KEY_JWT:
		conf_join(sub, path, "private_key_file");
		if (!p->private_key_file)
			return conf_fail(
				c, sub,
				"missing (private_key_jwt signs with it)");
		break;
	case AUTH_NONE:
		conf_join(sub, path, "auth_method");
		if (p->grant == GRANT_CLIENT_CREDENTIALS)
			return conf_fail(c, sub,
					 "\"none\" is a public client, and the "
					 "client_credentials grant needs a "
					 "confidential one");
		break;
	}
	if (p->auth != AUTH_PRIVATE_KEY_JWT && p->private_key_file) {
		conf_join(sub, path, "private_key_file");
		return conf_fail(c, sub,
				 "only for auth_method private_key_jwt");
	}
	if ((p->auth == AUTH_PRIVATE_KEY_JWT || p->auth == AUTH_NONE) &&
	    p->client_secret_file) {
		conf_join(sub, path, "client_secret_file");
		return conf_fail(
			c, sub, "not used with auth_method %s; remove it",
			p->auth == AUTH_NONE ? "none" : "private_key_jwt");
	}
	return 0;
}

static int parse_grant(struct ctx *c, const json_t *obj, const char *path,
		       struct provider_conf *p)
{
	char sub[MAX_PATH_TEXT];
	char *grant = NULL;
	int r;

	r = conf_get_string(c, obj, path, "grant", false, &grant);
	conf_join(sub, path, "grant");
	if (r < 0 || !grant)
		return r;
	if (!strcmp(grant, "refresh_token"))
		p->grant = GRANT_REFRESH_TOKEN;
	else if (!strcmp(grant, "implicit"))
		r = conf_fail(c, sub,
			      "\"implicit\" is forbidden by RFC 9700 (section "
			      "2.1.2: tokens in the front channel leak); use "
			      "\"refresh_token\" with credfsctl connect "
			      "(authorization code with PKCE)");
	else if (!strcmp(grant, "password"))
		r = conf_fail(
			c, sub,
			"\"password\" is forbidden by RFC 9700 (section 2.4: "
			"the client must not see the user's password); use "
			"\"refresh_token\" with credfsctl connect or "
			"credfsctl device");
	else if (strcmp(grant, "client_credentials"))
		r = conf_fail(c, sub,
			      "\"%s\" is not one of client_credentials, "
			      "refresh_token",
			      grant);
	free(grant);
	return r;
}

static int parse_onboarding(struct ctx *c, const json_t *obj, const char *path,
			    struct provider_conf *p)
{
	static const char *const reserved[] = {
		"response_type",
		"client_id",
		"redirect_uri",
		"scope",
		"state",
		"code_challenge",
		"code_challenge_method",
		"resource",
		NULL,
	};
	char sub[MAX_PATH_TEXT];
	int r;

	r = get_url(c, obj, path, "authorization_url", false,
		    &p->authorization_url);
	if (r == 0)
		r = conf_get_string(c, obj, path, "redirect_uri", false,
				    &p->redirect_uri);
	if (r == 0 && p->redirect_uri) {
		conf_join(sub, path, "redirect_uri");
		r = check_redirect_uri(c, sub, p->redirect_uri);
	}
	if (r == 0)
		r = get_url(c, obj, path, "device_authorization_url", false,
			    &p->device_authorization_url);
	if (r == 0)
		r = get_url(c, obj, path, "revocation_url", false,
			    &p->revocation_url);
	if (r == 0)
		r = get_url(c, obj, path, "introspection_url", false,
			    &p->introspection_url);
	if (r == 0)
		r = conf_get_seconds(c, obj, path, "introspection_interval_s",
				     1, 86400, &p->introspection_interval_ms);
	if (r == 0 && p->introspection_interval_ms && !p->introspection_url) {
		conf_join(sub, path, "introspection_interval_s");
		r = conf_fail(c, sub, "needs introspection_url");
	}
	if (r == 0)
		r = parse_params(c, obj, path, "authorization_params", reserved,
				 &p->auth_params, &p->n_auth_params);
	if (r == 0)
		r = conf_get_strings(c, obj, path, "authorization_scopes",
				     conf_scope_valid, "a scope",
				     &p->auth_scopes, &p->n_auth_scopes);
	return r;
}

/* A name fit to be a file next to access_token, and not one of its own. */
static bool field_valid(const char *s)
{
	static const char *const taken[] = {
		"access_token",	 "token_type", "expires_at",
		"scopes",	 "status",     "status.json",
		"refresh_token", "id_token",   "client_secret",
		"code",		 NULL,
	};
	const char *p;

	for (p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
		      *p == '_' || (p > s && (*p == '.' || *p == '-'))))
			return false;
	if (p == s || p - s > 64)
		return false;
	for (size_t i = 0; taken[i]; i++)
		if (!strcmp(taken[i], s))
			return false;
	return true;
}

static bool provider_supports_auth(const struct provider_conf *p,
				   enum auth_method m)
{
	size_t i;

	if (!p->auth_methods)
		return true;
	for (i = 0; i < p->n_auth_methods; i++)
		if (!strcmp(p->auth_methods[i], auth_method_name(m)))
			return true;
	return false;
}

/*
 * The profile keys: how this provider differs from RFC 6749 (scope
 * separator, error field and codes, extra response fields), what it
 * supports, and what its refresh tokens do.
 */
static int parse_profile(struct ctx *c, const json_t *obj, const char *path,
			 struct provider_conf *p)
{
	static const char *const none[] = {NULL};
	char sub[MAX_PATH_TEXT], *sep = NULL;
	double rate = 0;
	size_t i;
	int r;

	r = conf_get_string(c, obj, path, "preset", false, &p->preset);
	if (r == 0)
		r = get_url(c, obj, path, "issuer", false, &p->issuer);
	if (r == 0)
		r = get_url(c, obj, path, "resource", false, &p->resource);
	if (r == 0)
		r = conf_get_bool(c, obj, path, "discover_from_resource",
				  &p->discover_resource);
	if (r == 0 && p->discover_resource && !p->resource) {
		conf_join(sub, path, "resource");
		r = conf_fail(c, sub,
			      "missing: discover_from_resource needs the "
			      "server's URL");
	}
	if (r == 0 && p->discover_resource && p->issuer) {
		conf_join(sub, path, "issuer");
		r = conf_fail(c, sub,
			      "not with discover_from_resource: the "
			      "resource's metadata names its authorization "
			      "server; remove it");
	}
	p->discovery_max_age_ms = DISCOVERY_MAX_AGE_MS;
	if (r == 0)
		r = conf_get_seconds(c, obj, path, "discovery_max_age_s", 1,
				     30 * 86400, &p->discovery_max_age_ms);
	if (r == 0)
		r = conf_get_strings(
			c, obj, path, "auth_methods_supported",
			auth_method_valid,
			"one of client_secret_basic, client_secret_post, "
			"private_key_jwt, none",
			&p->auth_methods, &p->n_auth_methods);
	if (r == 0)
		r = conf_get_string(c, obj, path, "scope_separator", false,
				    &sep);
	p->scope_sep = ' ';
	if (r == 0 && sep) {
		conf_join(sub, path, "scope_separator");
		if (strcmp(sep, " ") && strcmp(sep, ","))
			r = conf_fail(c, sub, "\"%s\" is not \" \" or \",\"",
				      sep);
		else
			p->scope_sep = sep[0];
	}
	free(sep);
	if (r == 0)
		r = conf_get_bool(c, obj, path, "rotates_refresh_tokens",
				  &p->rotates);
	p->rotates_set = json_object_get(obj, "rotates_refresh_tokens");
	if (r == 0)
		r = conf_get_seconds(c, obj, path, "refresh_token_lifetime_s",
				     60, 10 * 31536000.0, &p->rt_lifetime_ms);
	if (r == 0)
		r = conf_get_seconds(c, obj, path, "refresh_token_idle_s", 60,
				     10 * 31536000.0, &p->rt_idle_ms);
	if (r == 0)
		r = conf_get_string(c, obj, path, "error_field", false,
				    &p->error_field);
	if (r == 0)
		r = parse_params(c, obj, path, "error_codes", none,
				 &p->error_codes, &p->n_error_codes);
	for (i = 0; r == 0 && i < p->n_error_codes; i++) {
		enum oauth_outcome o;

		if (!oauth_outcome_from_name(p->error_codes[i].value, &o)) {
			snprintf(sub, sizeof(sub), "%s.error_codes.%s", path,
				 p->error_codes[i].name);
			r = conf_fail(c, sub,
				      "\"%s\" is not one of invalid_grant, "
				      "invalid_client, rejected, transient, "
				      "rate_limited",
				      p->error_codes[i].value);
		}
	}
	if (r == 0)
		r = conf_get_strings(
			c, obj, path, "response_fields", field_valid,
			"a file name ([a-z0-9_.-], not one of the "
			"credential's own files or a secret's name)",
			&p->response_fields, &p->n_response_fields);
	if (r == 0 && p->n_response_fields > MAX_RESPONSE_FIELDS) {
		conf_join(sub, path, "response_fields");
		r = conf_fail(c, sub, "at most %d fields", MAX_RESPONSE_FIELDS);
	}
	if (r == 0)
		r = conf_get_number(c, obj, path, "max_requests_per_s", 0.01,
				    10000, &rate);
	p->max_rate = rate;
	return r;
}

int provider_parse(struct ctx *c, const char *name, const json_t *given,
		   struct provider_conf *p)
{
	static const char *const keys[] = {
		"token_url",
		"client_id",
		"client_secret_file",
		"private_key_file",
		"key_id",
		"jwt_audience",
		"ca_file",
		"auth_method",
		"grant",
		"timeout_s",
		"default_lifetime_s",
		"min_lifetime_s",
		"device_min_interval_s",
		"backoff_initial_s",
		"backoff_max_s",
		"max_concurrency",
		"max_response_bytes",
		"token_params",
		"high_risk_scopes",
		"strict_scopes",
		"authorization_url",
		"redirect_uri",
		"device_authorization_url",
		"revocation_url",
		"introspection_url",
		"introspection_interval_s",
		"authorization_params",
		"authorization_scopes",
		"preset",
		"issuer",
		"resource",
		"discover_from_resource",
		"discovery_max_age_s",
		"entra_tenant",
		"login_host",
		"auth_methods_supported",
		"scope_separator",
		"rotates_refresh_tokens",
		"refresh_token_lifetime_s",
		"refresh_token_idle_s",
		"error_field",
		"error_codes",
		"response_fields",
		"max_requests_per_s",
		TIMING_KEYS,
		NULL,
	};
	static const char *const reserved[] = {
		"grant_type",
		"scope",
		"client_id",
		"client_secret",
		"refresh_token",
		"code",
		"code_verifier",
		"device_code",
		"client_assertion",
		"client_assertion_type",
		"resource",
		NULL,
	};
	char path[MAX_PATH_TEXT], sub[MAX_PATH_TEXT];
	double conc = 4, maxresp = 256 * 1024;
	json_t *obj = NULL;
	int r;

	snprintf(path, sizeof(path), "providers.%s", name);
	r = conf_named_object(c, path, "provider", name, given, &p->name);
	if (r == 0)
		r = conf_check_keys(c, given, path, keys);
	if (r == 0)
		r = preset_apply(c, path, given, &obj);
	if (r < 0)
		return r;
	p->auth = AUTH_CLIENT_SECRET_BASIC;
	p->grant = GRANT_CLIENT_CREDENTIALS;
	p->timing = (struct timing){
		.refresh_lead_ms = 300000,
		.refresh_fraction = 0.5,
		.min_ttl_ms = 60000,
		.open_wait_ms = 5000,
		.clock_skew_ms = 5000,
	};
	p->timeout_ms = 10000;
	p->default_lifetime_ms = 3600000;
	p->min_lifetime_ms = 10000;
	p->device_min_interval_ms = 5000;
	p->backoff_initial_ms = 1000;
	p->backoff_max_ms = 60000;

	r = parse_profile(c, obj, path, p);
	if (r == 0)
		r = get_url(c, obj, path, "token_url",
			    !p->issuer && !p->discover_resource, &p->token_url);
	/* Without a client_id, an MCP server's credential gets a client of
	 * its own by dynamic registration (credfsctl register). */
	if (r == 0)
		r = conf_get_string(c, obj, path, "client_id",
				    !p->discover_resource, &p->client_id);
	if (r == 0)
		r = conf_get_path(c, obj, path, "ca_file", false, &p->ca_file);
	if (r == 0)
		r = parse_grant(c, obj, path, p);
	if (r == 0)
		r = parse_auth(c, obj, path, p);
	if (r == 0)
		r = parse_onboarding(c, obj, path, p);
	if (r == 0)
		r = conf_parse_timing(c, obj, path, &p->timing);
	if (r == 0)
		r = conf_get_seconds(c, obj, path, "timeout_s", 0.1, 300,
				     &p->timeout_ms);
	if (r == 0)
		r = conf_get_seconds(c, obj, path, "default_lifetime_s", 1,
				     31536000, &p->default_lifetime_ms);
	if (r == 0)
		r = conf_get_seconds(c, obj, path, "min_lifetime_s", 0.1, 3600,
				     &p->min_lifetime_ms);
	if (r == 0)
		r = conf_get_seconds(c, obj, path, "device_min_interval_s", 0.1,
				     60, &p->device_min_interval_ms);
	if (r == 0)
		r = conf_get_seconds(c, obj, path, "backoff_initial_s", 0.01,
				     3600, &p->backoff_initial_ms);
	if (r == 0)
		r = conf_get_seconds(c, obj, path, "backoff_max_s", 0.01, 86400,
				     &p->backoff_max_ms);
	if (r == 0)
		r = conf_get_number(c, obj, path, "max_concurrency", 1, 256,
				    &conc);
	if (r == 0)
		r = conf_get_number(c, obj, path, "max_response_bytes", 1024,
				    16 * 1024 * 1024, &maxresp);
	if (r == 0)
		r = parse_params(c, obj, path, "token_params", reserved,
				 &p->params, &p->n_params);
	if (r == 0)
		r = conf_get_strings(c, obj, path, "high_risk_scopes",
				     conf_scope_valid,
				     "a scope (or a prefix ending in *)",
				     &p->high_risk, &p->n_high_risk);
	if (r == 0)
		r = conf_get_bool(c, obj, path, "strict_scopes",
				  &p->strict_scopes);
	if (r == 0 && p->backoff_initial_ms > p->backoff_max_ms) {
		conf_join(sub, path, "backoff_initial_s");
		r = conf_fail(
			c, sub,
			"%.3g s is more than backoff_max_s (%.3g s): lower it "
			"or raise backoff_max_s",
			p->backoff_initial_ms / 1000.0,
			p->backoff_max_ms / 1000.0);
	}
	p->max_concurrency = (unsigned)conc;
	p->max_response_bytes = (size_t)maxresp;
	p->auth_explicit = json_object_get(given, "auth_method") != NULL;
	if (r == 0 && !provider_supports_auth(p, p->auth)) {
		conf_join(sub, path, "auth_method");
		r = conf_fail(c, sub,
			      "%s is not among the provider's "
			      "auth_methods_supported",
			      auth_method_name(p->auth));
	}
	json_decref(obj);
	return r;
}

/* A PEM private key, RSA (for RS256) or EC P-256 (for ES256). */
static int load_private_key(struct provider_conf *p, const char *cfg_path,
			    char *err, size_t errlen)
{
	EVP_PKEY *k = NULL;
	struct buf b;
	BIO *bio;
	int r;

	r = file_read_capped(p->private_key_file, 64 * 1024, true, &b);
	if (r < 0) {
		snprintf(err, errlen,
			 "%s: providers.%s.private_key_file: %s: %s", cfg_path,
			 p->name, p->private_key_file,
			 file_read_error(r, "larger than 64 KiB"));
		return r;
	}
	bio = BIO_new_mem_buf(b.data, (int)b.len);
	if (bio)
		k = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	BIO_free(bio);
	buf_free(&b);
	if (!k || (!EVP_PKEY_is_a(k, "RSA") &&
		   !(EVP_PKEY_is_a(k, "EC") && EVP_PKEY_get_bits(k) == 256))) {
		EVP_PKEY_free(k);
		snprintf(err, errlen,
			 "%s: providers.%s.private_key_file: %s is not a PEM "
			 "RSA or EC P-256 private key",
			 cfg_path, p->name, p->private_key_file);
		return -EINVAL;
	}
	if (EVP_PKEY_is_a(k, "RSA") && EVP_PKEY_get_bits(k) < 2048) {
		snprintf(err, errlen,
			 "%s: providers.%s.private_key_file: %s is a %d-bit "
			 "RSA key; RS256 needs at least 2048 bits (RFC 7518 "
			 "section 3.3): make a new one",
			 cfg_path, p->name, p->private_key_file,
			 EVP_PKEY_get_bits(k));
		EVP_PKEY_free(k);
		return -EINVAL;
	}
	EVP_PKEY_free(p->private_key);
	p->private_key = k;
	return 0;
}

/*
 * A CA bundle is public, so any mode will do, but it must hold at least one
 * PEM certificate: a typo'd path or an empty file would otherwise surface
 * only as a TLS failure at the first refresh.
 */
static int check_ca_file(const struct provider_conf *p, const char *cfg_path,
			 char *err, size_t errlen)
{
	STACK_OF(X509_INFO) *certs = NULL;
	struct buf b;
	int r, n = 0;
	BIO *bio;

	r = file_read_capped(p->ca_file, 4 * 1024 * 1024, false, &b);
	if (r < 0) {
		snprintf(err, errlen,
			 "%s: providers.%s.ca_file: cannot read %s: %s",
			 cfg_path, p->name, p->ca_file,
			 file_read_error(r, "larger than 4 MiB"));
		return r;
	}
	bio = BIO_new_mem_buf(b.data, (int)b.len);
	if (bio)
		certs = PEM_X509_INFO_read_bio(bio, NULL, NULL, NULL);
	for (int i = 0; certs && i < sk_X509_INFO_num(certs); i++)
		n += sk_X509_INFO_value(certs, i)->x509 != NULL;
	sk_X509_INFO_pop_free(certs, X509_INFO_free);
	BIO_free(bio);
	buf_free(&b);
	if (n == 0) {
		snprintf(
			err, errlen,
			"%s: providers.%s.ca_file: %s holds no PEM certificate",
			cfg_path, p->name, p->ca_file);
		return -EINVAL;
	}
	return 0;
}

/* An endpoint of the metadata, checked like a configured one, filling
 * @out only where the config left it unset. */
static int take_endpoint(struct ctx *c, const json_t *doc, const char *path,
			 const char *key, bool required, char **out)
{
	char sub[MAX_PATH_TEXT];
	json_t *v = json_object_get(doc, key);

	snprintf(sub, sizeof(sub), "%s (discovered %s)", path, key);
	if (!v && required && !*out)
		return conf_fail(c, sub, "missing from the discovery document");
	if (!v || *out)
		return 0;
	if (!json_is_string(v) || !json_string_length(v))
		return conf_fail(c, sub, "not a URL string");
	*out = strdup(json_string_value(v));
	if (!*out)
		return -ENOMEM;
	return check_url(c, sub, *out, NULL);
}

static int apply_discovery(struct ctx *c, struct provider_conf *p,
			   const json_t *doc)
{
	char path[MAX_PATH_TEXT];
	json_t *iss = json_object_get(doc, "issuer");
	json_t *listed, *v;
	size_t i;
	int r;

	snprintf(path, sizeof(path), "providers.%s.%s", p->name,
		 p->discover_resource ? "resource" : "issuer");
	/* The resource's metadata named the issuer (and discovery checked
	 * the document names it exactly). */
	if (p->discover_resource && !p->issuer && json_is_string(iss)) {
		p->issuer = strdup(json_string_value(iss));
		if (!p->issuer)
			return -ENOMEM;
	}
	/* Section 4.3: the metadata must name exactly the issuer asked. */
	if (!json_is_string(iss) || strcmp(json_string_value(iss), p->issuer))
		return conf_fail(c, path,
				 "the discovery document names another issuer");
	r = take_endpoint(c, doc, path, "token_endpoint", true, &p->token_url);
	if (r == 0)
		r = take_endpoint(c, doc, path, "authorization_endpoint", false,
				  &p->authorization_url);
	if (r == 0)
		r = take_endpoint(c, doc, path, "device_authorization_endpoint",
				  false, &p->device_authorization_url);
	if (r == 0)
		r = take_endpoint(c, doc, path, "revocation_endpoint", false,
				  &p->revocation_url);
	if (r == 0)
		r = take_endpoint(c, doc, path, "introspection_endpoint", false,
				  &p->introspection_url);
	if (r == 0 && p->discover_resource)
		r = take_endpoint(c, doc, path, "registration_endpoint", false,
				  &p->registration_url);
	p->cimd_supported = json_is_true(
		json_object_get(doc, "client_id_metadata_document_supported"));
	p->iss_param = json_is_true(json_object_get(
		doc, "authorization_response_iss_parameter_supported"));
	listed = json_object_get(doc, "token_endpoint_auth_methods_supported");
	if (r == 0 && json_is_array(listed) && !p->auth_methods) {
		p->auth_methods =
			calloc(json_array_size(listed) + 1, sizeof(char *));
		if (!p->auth_methods)
			return -ENOMEM;
		json_array_foreach (listed, i, v) {
			if (!json_is_string(v) ||
			    !auth_method_valid(json_string_value(v)))
				continue;
			p->auth_methods[p->n_auth_methods] =
				strdup(json_string_value(v));
			if (!p->auth_methods[p->n_auth_methods++])
				return -ENOMEM;
		}
	}
	if (r < 0)
		return r;
	/* Without an auth_method of its own, the client uses the secret the
	 * way the issuer takes it. */
	if (!p->auth_explicit && p->auth == AUTH_CLIENT_SECRET_BASIC &&
	    !provider_supports_auth(p, AUTH_CLIENT_SECRET_BASIC) &&
	    provider_supports_auth(p, AUTH_CLIENT_SECRET_POST))
		p->auth = AUTH_CLIENT_SECRET_POST;
	/* A client registered later says for itself how it authenticates. */
	if (p->client_id && !provider_supports_auth(p, p->auth))
		return conf_fail(c, path,
				 "the issuer does not list auth_method %s in "
				 "token_endpoint_auth_methods_supported",
				 auth_method_name(p->auth));
	return 0;
}

static int discover(struct provider_conf *p, const char *cfg_path, char *err,
		    size_t errlen)
{
	struct ctx c = {.err = err, .errlen = errlen, .file = cfg_path};
	char why[OAUTH_ERROR_TEXT];
	json_t *doc = NULL;
	int r;

	r = discovery_get(p, &doc, why, sizeof(why));
	if (r < 0 && p->discover_resource) {
		snprintf(err, errlen,
			 "%s: providers.%s.resource: MCP authorization "
			 "discovery failed: %s",
			 cfg_path, p->name, why);
		return r;
	}
	if (r < 0) {
		snprintf(err, errlen,
			 "%s: providers.%s.issuer: OpenID Connect discovery "
			 "failed: %s",
			 cfg_path, p->name, why);
		return r;
	}
	r = apply_discovery(&c, p, doc);
	json_decref(doc);
	return r;
}

int provider_load_secrets(struct provider_conf *p, const char *cfg_path,
			  char *err, size_t errlen)
{
	struct buf b;
	int r;

	if (p->ca_file) {
		r = check_ca_file(p, cfg_path, err, errlen);
		if (r < 0)
			return r;
	}
	if (p->issuer || p->discover_resource) {
		r = discover(p, cfg_path, err, errlen);
		if (r < 0)
			return r;
	}
	if (p->private_key_file)
		return load_private_key(p, cfg_path, err, errlen);
	if (!p->client_secret_file)
		return 0;
	r = file_read_capped(p->client_secret_file, MAX_SECRET_BYTES, true, &b);
	if (r == -EPERM) {
		snprintf(err, errlen,
			 "%s: providers.%s.client_secret_"
			 "file: %s is readable or writable by group or "
			 "others; chmod 600 it",
			 cfg_path, p->name, p->client_secret_file);
		return r;
	}
	if (r < 0) {
		snprintf(err, errlen,
			 "%s: providers.%s.client_secret_"
			 "file: cannot read %s: %s",
			 cfg_path, p->name, p->client_secret_file,
			 file_read_error(r, "larger than 4096 bytes"));
		return r;
	}
	while (b.len &&
	       (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
		b.data[--b.len] = '\0';
	if (b.len == 0 || strlen(b.data) != b.len) {
		buf_free(&b);
		snprintf(err, errlen,
			 "%s: providers.%s.client_secret_"
			 "file: %s is empty or holds a NUL byte",
			 cfg_path, p->name, p->client_secret_file);
		return -EINVAL;
	}
	strfreezero(p->client_secret);
	p->client_secret = b.data; /* keeps the buffer, wiped later */
	return 0;
}

static void params_free(struct param *ps, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(ps[i].name);
		free(ps[i].value);
	}
	free(ps);
}

void provider_free(struct provider_conf *p)
{
	size_t j;

	free(p->name);
	free(p->token_url);
	free(p->ca_file);
	free(p->client_id);
	free(p->client_secret_file);
	strfreezero(p->client_secret);
	free(p->private_key_file);
	EVP_PKEY_free(p->private_key);
	free(p->key_id);
	free(p->jwt_audience);
	free(p->authorization_url);
	free(p->redirect_uri);
	free(p->device_authorization_url);
	free(p->revocation_url);
	free(p->introspection_url);
	params_free(p->params, p->n_params);
	params_free(p->auth_params, p->n_auth_params);
	for (j = 0; j < p->n_high_risk; j++)
		free(p->high_risk[j]);
	free(p->high_risk);
	for (j = 0; j < p->n_auth_scopes; j++)
		free(p->auth_scopes[j]);
	free(p->auth_scopes);
	free(p->preset);
	free(p->issuer);
	free(p->resource);
	free(p->registration_url);
	for (j = 0; j < p->n_auth_methods; j++)
		free(p->auth_methods[j]);
	free(p->auth_methods);
	free(p->error_field);
	params_free(p->error_codes, p->n_error_codes);
	for (j = 0; j < p->n_response_fields; j++)
		free(p->response_fields[j]);
	free(p->response_fields);
}
