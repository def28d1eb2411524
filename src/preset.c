/*
 * preset: the built-in provider profiles. A preset is a set of provider
 * keys, exactly as an operator would write them, that fills in whatever
 * the provider object does not set itself: "preset": "google" with a
 * client_id and a secret file is a whole provider, and any key given next
 * to it wins. So a preset adds no behaviour of its own; the profile keys
 * it sets (scope_separator, error_codes, response_fields, ...) are the
 * mechanism, and docs/providers.md is where each value is sourced.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "confparse.h"
#include "util.h"

struct preset {
	const char *name;
	/* The one provider key the preset's URLs are built from ({key} in
	 * the text), its default (NULL: required) and what it is. */
	const char *var;
	const char *var_default;
	const char *var_what;
	const char *json;
	/* A key the provider must set with this preset, and why. */
	const char *required;
	const char *required_why;
};

#define GOOGLE_AUTH "https://www.googleapis.com/auth/"
#define GRAPH "https://graph.microsoft.com/"
#define ENTRA "https://login.microsoftonline.com/{entra_tenant}/oauth2/v2.0/"
#define SF "https://{login_host}/services/oauth2/"

static const struct preset presets[] = {
	{"google", NULL, NULL, NULL,
	 "{\"grant\": \"refresh_token\","
	 " \"authorization_url\": "
	 "\"https://accounts.google.com/o/oauth2/v2/auth\","
	 " \"token_url\": \"https://oauth2.googleapis.com/token\","
	 " \"device_authorization_url\": "
	 "\"https://oauth2.googleapis.com/device/code\","
	 " \"revocation_url\": \"https://oauth2.googleapis.com/revoke\","
	 " \"authorization_params\": {\"access_type\": \"offline\","
	 " \"prompt\": \"consent\"},"
	 " \"auth_method\": \"client_secret_post\","
	 " \"auth_methods_supported\": [\"client_secret_post\","
	 " \"client_secret_basic\"],"
	 " \"default_lifetime_s\": 3600,"
	 " \"rotates_refresh_tokens\": false,"
	 " \"refresh_token_idle_s\": 15552000,"
	 " \"high_risk_scopes\": [\"https://mail.google.com/\","
	 " \"" GOOGLE_AUTH "gmail.*\", \"" GOOGLE_AUTH "drive\","
	 " \"" GOOGLE_AUTH "cloud-platform\", \"" GOOGLE_AUTH "admin.*\","
	 " \"" GOOGLE_AUTH "calendar\"]}",
	 NULL, NULL},
	{"entra", "entra_tenant", NULL,
	 "the directory (tenant) id or domain, or organizations, common",
	 "{\"authorization_url\": \"" ENTRA "authorize\","
	 " \"token_url\": \"" ENTRA "token\","
	 " \"device_authorization_url\": \"" ENTRA "devicecode\","
	 " \"authorization_scopes\": [\"offline_access\"],"
	 " \"auth_method\": \"client_secret_post\","
	 " \"auth_methods_supported\": [\"client_secret_post\","
	 " \"client_secret_basic\", \"private_key_jwt\"],"
	 " \"default_lifetime_s\": 3600,"
	 " \"rotates_refresh_tokens\": true,"
	 " \"refresh_token_idle_s\": 7776000,"
	 " \"high_risk_scopes\": [\"Mail.ReadWrite\", \"Mail.Send\","
	 " \"Files.ReadWrite.All\", \"Sites.FullControl.All\","
	 " \"Directory.ReadWrite.All\", \"User.ReadWrite.All\","
	 " \"Application.ReadWrite.All\","
	 " \"RoleManagement.ReadWrite.Directory\","
	 " \"" GRAPH "Mail.ReadWrite\", \"" GRAPH "Mail.Send\","
	 " \"" GRAPH "Files.ReadWrite.All\", \"" GRAPH
	 "Sites.FullControl.All\","
	 " \"" GRAPH "Directory.ReadWrite.All\","
	 " \"" GRAPH "User.ReadWrite.All\","
	 " \"" GRAPH "Application.ReadWrite.All\","
	 " \"" GRAPH "RoleManagement.ReadWrite.Directory\"]}",
	 NULL, NULL},
	{"slack", NULL, NULL, NULL,
	 "{\"grant\": \"refresh_token\","
	 " \"authorization_url\": \"https://slack.com/oauth/v2/authorize\","
	 " \"token_url\": \"https://slack.com/api/oauth.v2.access\","
	 " \"auth_method\": \"client_secret_post\","
	 " \"auth_methods_supported\": [\"client_secret_post\","
	 " \"client_secret_basic\"],"
	 " \"scope_separator\": \",\","
	 " \"default_lifetime_s\": 43200,"
	 " \"rotates_refresh_tokens\": true,"
	 " \"error_codes\": {\"invalid_refresh_token\": \"invalid_grant\","
	 " \"invalid_grant_type\": \"rejected\","
	 " \"invalid_client_id\": \"invalid_client\","
	 " \"bad_client_secret\": \"invalid_client\","
	 " \"ratelimited\": \"rate_limited\","
	 " \"internal_error\": \"transient\", \"fatal_error\": \"transient\","
	 " \"service_unavailable\": \"transient\","
	 " \"request_timeout\": \"transient\"},"
	 " \"high_risk_scopes\": [\"admin\", \"admin.*\","
	 " \"channels:history\", \"groups:history\", \"im:history\","
	 " \"mpim:history\", \"chat:write.customize\", \"files:write\","
	 " \"users:read.email\"]}",
	 NULL, NULL},
	{"hubspot", NULL, NULL, NULL,
	 "{\"grant\": \"refresh_token\","
	 " \"authorization_url\": \"https://app.hubspot.com/oauth/authorize\","
	 " \"token_url\": \"https://api.hubapi.com/oauth/v1/token\","
	 " \"auth_method\": \"client_secret_post\","
	 " \"auth_methods_supported\": [\"client_secret_post\"],"
	 " \"default_lifetime_s\": 1800,"
	 " \"rotates_refresh_tokens\": false,"
	 " \"error_field\": \"status\","
	 " \"error_codes\": {\"BAD_REFRESH_TOKEN\": \"invalid_grant\","
	 " \"BAD_CLIENT_ID\": \"invalid_client\","
	 " \"BAD_GRANT_TYPE\": \"rejected\","
	 " \"BAD_REDIRECT_URI\": \"rejected\","
	 " \"BAD_AUTH_CODE\": \"rejected\"},"
	 " \"high_risk_scopes\": [\"crm.export\", \"settings.users.write\","
	 " \"crm.objects.contacts.write\", \"files\", \"automation\"]}",
	 NULL, NULL},
	{"salesforce", "login_host", "login.salesforce.com",
	 "the login host: login.salesforce.com, test.salesforce.com or "
	 "MYDOMAIN.my.salesforce.com",
	 "{\"authorization_url\": \"" SF "authorize\","
	 " \"token_url\": \"" SF "token\","
	 " \"revocation_url\": \"" SF "revoke\","
	 " \"introspection_url\": \"" SF "introspect\","
	 " \"auth_method\": \"client_secret_post\","
	 " \"auth_methods_supported\": [\"client_secret_post\","
	 " \"client_secret_basic\"],"
	 " \"default_lifetime_s\": 900,"
	 " \"rotates_refresh_tokens\": false,"
	 " \"response_fields\": [\"instance_url\", \"id\"],"
	 " \"high_risk_scopes\": [\"full\", \"web\", \"refresh_token\","
	 " \"offline_access\"]}",
	 NULL, NULL},
	{"github", NULL, NULL, NULL,
	 "{\"grant\": \"refresh_token\","
	 " \"authorization_url\": \"https://github.com/login/oauth/authorize\","
	 " \"token_url\": \"https://github.com/login/oauth/access_token\","
	 " \"device_authorization_url\": "
	 "\"https://github.com/login/device/code\","
	 " \"auth_method\": \"client_secret_post\","
	 " \"auth_methods_supported\": [\"client_secret_post\", \"none\"],"
	 " \"scope_separator\": \",\","
	 " \"default_lifetime_s\": 28800,"
	 " \"rotates_refresh_tokens\": true,"
	 " \"refresh_token_lifetime_s\": 15897600,"
	 " \"error_codes\": {\"bad_refresh_token\": \"invalid_grant\","
	 " \"bad_verification_code\": \"invalid_grant\","
	 " \"incorrect_client_credentials\": \"invalid_client\","
	 " \"unsupported_grant_type\": \"rejected\"},"
	 " \"high_risk_scopes\": [\"repo\", \"delete_repo\", \"workflow\","
	 " \"admin:*\", \"write:packages\", \"delete:packages\"]}",
	 NULL, NULL},
	{"atlassian", NULL, NULL, NULL,
	 "{\"grant\": \"refresh_token\","
	 " \"authorization_url\": \"https://auth.atlassian.com/authorize\","
	 " \"token_url\": \"https://auth.atlassian.com/oauth/token\","
	 " \"authorization_params\": {\"audience\": \"api.atlassian.com\","
	 " \"prompt\": \"consent\"},"
	 " \"authorization_scopes\": [\"offline_access\"],"
	 " \"auth_method\": \"client_secret_post\","
	 " \"auth_methods_supported\": [\"client_secret_post\"],"
	 " \"default_lifetime_s\": 3600,"
	 " \"rotates_refresh_tokens\": true,"
	 " \"refresh_token_idle_s\": 7776000,"
	 " \"high_risk_scopes\": [\"manage:*\", \"delete:*\","
	 " \"write:jira-work\", \"write:confluence-content\"]}",
	 NULL, NULL},
	{"oidc", NULL, NULL, NULL,
	 /* Everything but the client comes from the issuer's discovery
	  * document. */
	 "{}", "issuer", "discovers the endpoints from the issuer"},
	{"mcp", NULL, NULL, NULL,
	 /* A remote MCP server (docs/mcp.md): everything comes from its
	  * protected resource metadata and its authorization server's; the
	  * client is registered per credential unless client_id is given.
	  * OAuth 2.1 has authorization servers rotate a public client's
	  * refresh tokens. */
	 "{\"grant\": \"refresh_token\","
	 " \"discover_from_resource\": true,"
	 " \"auth_method\": \"none\","
	 " \"rotates_refresh_tokens\": true}",
	 "resource", "names the MCP server's URL"},
};

/* A value for a preset's URL variable: a host name, a domain or a
 * directory id, nothing that could change the URL's shape. */
static bool var_valid(const char *v)
{
	size_t n = strlen(v);

	if (n == 0 || n > 253 || v[0] == '.' || v[0] == '-')
		return false;
	for (; *v; v++)
		if (!((*v >= 'a' && *v <= 'z') || (*v >= 'A' && *v <= 'Z') ||
		      (*v >= '0' && *v <= '9') || *v == '.' || *v == '-'))
			return false;
	return true;
}

/* @text with every "{@var}" replaced by @value (which var_valid() took,
 * so it needs no JSON escaping). */
static char *substitute(const char *text, const char *var, const char *value)
{
	char pat[64];
	struct buf b;
	const char *p, *q;

	buf_init(&b, 64 * 1024);
	snprintf(pat, sizeof(pat), "{%s}", var);
	for (p = text; (q = strstr(p, pat)); p = q + strlen(pat))
		if (buf_append(&b, p, (size_t)(q - p)) < 0 ||
		    buf_append(&b, value, strlen(value)) < 0)
			goto fail;
	if (buf_append(&b, p, strlen(p) + 1) < 0)
		goto fail;
	return b.data;
fail:
	buf_free(&b);
	return NULL;
}

static bool preset_is_var(const char *key)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(presets); i++)
		if (presets[i].var && !strcmp(presets[i].var, key))
			return true;
	return false;
}

int preset_apply(struct ctx *c, const char *path, const json_t *obj,
		 json_t **out)
{
	char sub[MAX_PATH_TEXT], names[256] = "";
	const struct preset *ps = NULL;
	const char *name, *value = NULL, *key;
	json_t *v, *merged;
	char *text;
	size_t i;

	*out = NULL;
	v = json_object_get(obj, "preset");
	conf_join(sub, path, "preset");
	if (v && !json_is_string(v))
		return conf_fail(c, sub, "expected a string, got %s",
				 conf_json_kind(v));
	name = v ? json_string_value(v) : NULL;
	for (i = 0; i < ARRAY_SIZE(presets); i++) {
		if (name && !strcmp(presets[i].name, name))
			ps = &presets[i];
		snprintf(names + strlen(names), sizeof(names) - strlen(names),
			 "%s%s", i ? ", " : "", presets[i].name);
	}
	if (name && !ps)
		return conf_fail(c, sub, "\"%s\" is not one of %s", name,
				 names);
	/* A preset's variable belongs to that preset only. */
	json_object_foreach ((json_t *)obj, key, v) {
		if (!preset_is_var(key) ||
		    (ps && ps->var && !strcmp(ps->var, key)))
			continue;
		conf_join(sub, path, key);
		return conf_fail(c, sub, "only for the preset that uses it");
	}
	if (!ps) {
		*out = json_incref((json_t *)obj);
		return 0;
	}
	if (ps->var) {
		v = json_object_get(obj, ps->var);
		conf_join(sub, path, ps->var);
		if (v && !json_is_string(v))
			return conf_fail(c, sub, "expected a string, got %s",
					 conf_json_kind(v));
		value = v ? json_string_value(v) : ps->var_default;
		if (!value)
			return conf_fail(c, sub, "missing: preset %s needs %s",
					 ps->name, ps->var_what);
		if (!var_valid(value))
			return conf_fail(
				c, sub,
				"\"%s\" is not %s (letters, digits, dots "
				"and dashes)",
				value, ps->var_what);
	}
	if (ps->required && !json_object_get(obj, ps->required)) {
		conf_join(sub, path, ps->required);
		return conf_fail(c, sub, "missing: preset %s %s", ps->name,
				 ps->required_why);
	}
	text = ps->var ? substitute(ps->json, ps->var, value)
		       : strdup(ps->json);
	merged = text ? json_loads(text, 0, NULL) : NULL;
	free(text);
	if (!merged)
		return -ENOMEM; /* the table's own JSON is checked by tests */
	/* The provider's own keys win over the preset's. */
	if (json_object_update(merged, (json_t *)obj) < 0) {
		json_decref(merged);
		return -ENOMEM;
	}
	*out = merged;
	return 0;
}
