/*
 * provider: parsing one provider of the configuration, the RFC 9700
 * guardrails that refuse what the OAuth Security BCP forbids, and loading
 * its client secret or private key.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "config.h"
#include "confparse.h"
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
		r = fail(c, path, "\"%s\" is not a valid absolute URL", url);
		goto out;
	}
	if (!strcmp(scheme, "https"))
		goto out;
	if (!strcmp(scheme, "http")) {
		if (!host_is_loopback(host))
			r = fail(c, path,
				 "http:// is allowed only for loopback "
				 "hosts; use https:// for %s",
				 host);
		goto out;
	}
	r = fail(c, path, "scheme \"%s\" is not allowed; use https://", scheme);
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
	int r = get_string(c, obj, path, key, required, out);

	if (r < 0 || !*out)
		return r;
	join(sub, path, key);
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
		return fail(c, path,
			    "\"%s\": redirect URIs must be exact, no "
			    "wildcards (RFC 9700 section 2.1)",
			    v);
	u = curl_url();
	if (!u)
		return -ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, v, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		r = fail(c, path, "\"%s\" is not a valid absolute URL", v);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0) == CURLUE_OK) {
		r = fail(c, path, "\"%s\": a redirect URI has no fragment", v);
		goto out;
	}
	if (!strcmp(scheme, "http") && !host_is_loopback(host)) {
		r = fail(c, path,
			 "\"%s\": http:// redirect URIs are allowed only for "
			 "loopback hosts (RFC 9700 section 2.1)",
			 v);
		goto out;
	}
	if (strcmp(scheme, "http") ||
	    curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
		r = fail(c, path,
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

	r = get_object(c, obj, path, key, false, &params);
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
				return fail(c, sub, "is set by credfs itself");
		if (!json_is_string(v))
			return fail(c, sub, "expected a string, got %s",
				    json_kind(v));
		(*out)[i].name = strdup(name);
		(*out)[i].value = strdup(json_string_value(v));
		if (!(*out)[i].name || !(*out)[i].value)
			return -ENOMEM;
		*n = ++i;
	}
	return 0;
}

static int parse_auth(struct ctx *c, const json_t *obj, const char *path,
		      struct provider_conf *p)
{
	static const struct {
		const char *name;
		enum auth_method m;
	} methods[] = {
		{"client_secret_basic", AUTH_CLIENT_SECRET_BASIC},
		{"client_secret_post", AUTH_CLIENT_SECRET_POST},
		{"private_key_jwt", AUTH_PRIVATE_KEY_JWT},
		{"none", AUTH_NONE},
	};
	char sub[MAX_PATH_TEXT];
	char *auth = NULL;
	size_t i;
	int r;

	r = get_string(c, obj, path, "auth_method", false, &auth);
	join(sub, path, "auth_method");
	for (i = 0; r == 0 && auth && i < ARRAY_SIZE(methods); i++)
		if (!strcmp(auth, methods[i].name))
			break;
	if (r == 0 && auth && i == ARRAY_SIZE(methods))
		r = fail(c, sub,
			 "\"%s\" is not one of client_secret_basic, "
			 "client_secret_post, private_key_jwt, none",
			 auth);
	if (r == 0 && auth)
		p->auth = methods[i].m;
	free(auth);
	if (r == 0)
		r = get_path(c, obj, path, "client_secret_file", false,
			     &p->client_secret_file);
	if (r == 0)
		r = get_path(c, obj, path, "private_key_file", false,
			     &p->private_key_file);
	if (r == 0)
		r = get_string(c, obj, path, "key_id", false, &p->key_id);
	if (r == 0)
		r = get_string(c, obj, path, "jwt_audience", false,
			       &p->jwt_audience);
	if (r < 0)
		return r;
	switch (p->auth) {
	case AUTH_CLIENT_SECRET_BASIC:
	case AUTH_CLIENT_SECRET_POST:
		join(sub, path, "client_secret_file");
		if (!p->client_secret_file)
			return fail(c, sub, "missing");
		break;
	case AUTH_PRIVATE_KEY_JWT:
		join(sub, path, "private_key_file");
		if (!p->private_key_file)
			return fail(c, sub,
				    "missing (private_key_jwt signs with it)");
		break;
	case AUTH_NONE:
		join(sub, path, "auth_method");
		if (p->grant == GRANT_CLIENT_CREDENTIALS)
			return fail(c, sub,
				    "\"none\" is a public client, and the "
				    "client_credentials grant needs a "
				    "confidential one");
		break;
	}
	if (p->auth != AUTH_PRIVATE_KEY_JWT && p->private_key_file) {
		join(sub, path, "private_key_file");
		return fail(c, sub, "only for auth_method private_key_jwt");
	}
	if ((p->auth == AUTH_PRIVATE_KEY_JWT || p->auth == AUTH_NONE) &&
	    p->client_secret_file) {
		join(sub, path, "client_secret_file");
		return fail(c, sub, "not used with auth_method %s; remove it",
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

	r = get_string(c, obj, path, "grant", false, &grant);
	join(sub, path, "grant");
	if (r < 0 || !grant)
		return r;
	if (!strcmp(grant, "refresh_token"))
		p->grant = GRANT_REFRESH_TOKEN;
	else if (!strcmp(grant, "implicit"))
		r = fail(c, sub,
			 "\"implicit\" is forbidden by RFC 9700 (section "
			 "2.1.2: tokens in the front channel leak); use "
			 "\"refresh_token\" with credfsctl connect "
			 "(authorization code with PKCE)");
	else if (!strcmp(grant, "password"))
		r = fail(c, sub,
			 "\"password\" is forbidden by RFC 9700 (section 2.4: "
			 "the client must not see the user's password); use "
			 "\"refresh_token\" with credfsctl connect or "
			 "credfsctl device");
	else if (strcmp(grant, "client_credentials"))
		r = fail(c, sub,
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
		NULL,
	};
	char sub[MAX_PATH_TEXT];
	int r;

	r = get_url(c, obj, path, "authorization_url", false,
		    &p->authorization_url);
	if (r == 0)
		r = get_string(c, obj, path, "redirect_uri", false,
			       &p->redirect_uri);
	if (r == 0 && p->redirect_uri) {
		join(sub, path, "redirect_uri");
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
		r = get_seconds(c, obj, path, "introspection_interval_s", 1,
				86400, &p->introspection_interval_ms);
	if (r == 0 && p->introspection_interval_ms && !p->introspection_url) {
		join(sub, path, "introspection_interval_s");
		r = fail(c, sub, "needs introspection_url");
	}
	if (r == 0)
		r = parse_params(c, obj, path, "authorization_params", reserved,
				 &p->auth_params, &p->n_auth_params);
	if (r == 0)
		r = get_strings(c, obj, path, "authorization_scopes",
				scope_valid, "a scope", &p->auth_scopes,
				&p->n_auth_scopes);
	return r;
}

int provider_parse(struct ctx *c, const char *name, const json_t *obj,
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
		NULL,
	};
	char path[MAX_PATH_TEXT];
	double conc = 4, maxresp = 256 * 1024;
	int r;

	snprintf(path, sizeof(path), "providers.%s", name);
	r = named_object(c, path, "provider", name, obj, &p->name);
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
	p->backoff_initial_ms = 1000;
	p->backoff_max_ms = 60000;

	r = check_keys(c, obj, path, keys);
	if (r == 0)
		r = get_url(c, obj, path, "token_url", true, &p->token_url);
	if (r == 0)
		r = get_string(c, obj, path, "client_id", true, &p->client_id);
	if (r == 0)
		r = get_path(c, obj, path, "ca_file", false, &p->ca_file);
	if (r == 0)
		r = parse_grant(c, obj, path, p);
	if (r == 0)
		r = parse_auth(c, obj, path, p);
	if (r == 0)
		r = parse_onboarding(c, obj, path, p);
	if (r == 0)
		r = parse_timing(c, obj, path, &p->timing);
	if (r == 0)
		r = get_seconds(c, obj, path, "timeout_s", 0.1, 300,
				&p->timeout_ms);
	if (r == 0)
		r = get_seconds(c, obj, path, "default_lifetime_s", 1, 31536000,
				&p->default_lifetime_ms);
	if (r == 0)
		r = get_seconds(c, obj, path, "backoff_initial_s", 0.01, 3600,
				&p->backoff_initial_ms);
	if (r == 0)
		r = get_seconds(c, obj, path, "backoff_max_s", 0.01, 86400,
				&p->backoff_max_ms);
	if (r == 0)
		r = get_number(c, obj, path, "max_concurrency", 1, 256, &conc);
	if (r == 0)
		r = get_number(c, obj, path, "max_response_bytes", 1024,
			       16 * 1024 * 1024, &maxresp);
	if (r == 0)
		r = parse_params(c, obj, path, "token_params", reserved,
				 &p->params, &p->n_params);
	if (r == 0)
		r = get_strings(c, obj, path, "high_risk_scopes", scope_valid,
				"a scope (or a prefix ending in *)",
				&p->high_risk, &p->n_high_risk);
	if (r == 0)
		r = get_bool(c, obj, path, "strict_scopes", &p->strict_scopes);
	p->max_concurrency = (unsigned)conc;
	p->max_response_bytes = (size_t)maxresp;
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
			 r == -EPERM ? "readable or writable by group or "
				       "others; chmod 600 it"
				     : strerror(-r));
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
			 r == -EFBIG ? "larger than 4 MiB" : strerror(-r));
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
			 r == -EFBIG ? "larger than 4096 bytes" : strerror(-r));
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
}
