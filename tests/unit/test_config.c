/* Unit tests for config: strict validation and the messages it gives. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "util.h"

#define PROVIDER                                                             \
	"\"providers\":{\"google\":{\"token_url\":\"https://oauth2.example/" \
	"token\",\"client_id\":\"id\",\"client_secret_file\":\"/s\"}}"

static int parse(const char *json, struct config **cfg, char *err)
{
	return config_parse(json, strlen(json), "c.json", cfg, err, 512);
}

static void valid_config_and_defaults(void **state)
{
	const char *json =
		"{" PROVIDER ",\"tenants\":{"
		"\"zeta\":{\"credentials\":{\"google\":{\"scopes\":[\"a\"]}}},"
		"\"acme\":{\"readers\":{\"uids\":[1000]},\"credentials\":"
		"{\"google\":{\"scopes\":[],\"min_ttl_s\":1.5}}}}}";
	struct config *cfg;
	char err[512];

	assert_int_equal(parse(json, &cfg, err), 0);
	assert_int_equal(cfg->n_tenants, 2);
	assert_string_equal(cfg->tenants[0].name, "acme"); /* sorted */
	assert_int_equal(cfg->n_creds, 2);
	assert_string_equal(cfg->creds[0].tenant, "acme");
	assert_string_equal(cfg->creds[1].tenant, "zeta");
	assert_int_equal(cfg->creds[1].tenant_idx, 1);
	/* Ownership follows the readers: one uid owns, 0400. */
	assert_int_equal(cfg->creds[0].uid, 1000);
	assert_int_equal(cfg->creds[0].mode, 0400);
	/* No readers: root only. */
	assert_int_equal(cfg->creds[1].uid, 0);
	assert_int_equal(cfg->creds[1].mode, 0400);
	assert_true(cfg->allow_root);
	assert_null(cfg->audit_log);
	assert_int_equal(cfg->creds[0].timing.min_ttl_ms, 1500);
	assert_int_equal(cfg->creds[1].timing.min_ttl_ms, 60000);
	assert_int_equal(cfg->providers[0].timing.refresh_lead_ms, 300000);
	assert_true(cfg->providers[0].timing.refresh_fraction == 0.5);
	assert_int_equal(cfg->providers[0].timing.open_wait_ms, 5000);
	assert_int_equal(cfg->providers[0].timeout_ms, 10000);
	assert_int_equal(cfg->providers[0].backoff_max_ms, 60000);
	assert_int_equal(cfg->providers[0].auth, AUTH_CLIENT_SECRET_BASIC);
	assert_string_equal(cfg->providers[0].client_secret_file, "/s");
	config_free(cfg);
}

#define TENANT(readers, cred)                           \
	"{" PROVIDER ",\"tenants\":{\"acme\":{" readers \
	"\"credentials\":{\"google\":{\"scopes\":[\"r\"]" cred "}}}}}"

static void ownership_follows_readers(void **state)
{
	static const struct {
		const char *json;
		unsigned uid, gid, mode;
	} cases[] = {
		{TENANT("\"readers\":{\"gids\":[2001]},", ""), 0, 2001, 0440},
		{TENANT("\"readers\":{\"uids\":[7],\"gids\":[8]},", ""), 7, 8,
		 0440},
		/* More than one uid: the kernel cannot say it, the daemon does.
		 */
		{TENANT("\"readers\":{\"uids\":[7,9]},", ""), 0, 0, 0444},
		/* Audited path: a credential's narrowing is the daemon's job.
		 */
		{TENANT("\"readers\":{\"gids\":[5]},",
			",\"readers\":{\"uids\":[6]}"),
		 0, 5, 0440},
	};
	struct config *cfg;
	char err[512];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (parse(cases[i].json, &cfg, err) != 0)
			fail_msg("case %zu: %s", i, err);
		assert_int_equal(cfg->creds[0].uid, cases[i].uid);
		assert_int_equal(cfg->creds[0].gid, cases[i].gid);
		assert_int_equal(cfg->creds[0].mode, cases[i].mode);
		config_free(cfg);
	}
}

static void cache_kernel_needs_expressible_readers(void **state)
{
	static const struct {
		const char *json;
		const char *message; /* NULL: accepted */
	} cases[] = {
		{TENANT("\"readers\":{\"uids\":[7],\"gids\":[8]},", ""), NULL},
		{TENANT("\"readers\":{\"uids\":[7,9]},", ""),
		 "tenants.acme.readers: with -o cache=kernel only file modes"},
		{TENANT("\"readers\":{\"gids\":[8],\"cgroups\":[\"/a\"]},", ""),
		 "tenants.acme.readers: with -o cache=kernel"},
		{TENANT("\"readers\":{\"gids\":[8]},",
			",\"readers\":{\"gids\":[1,2]}"),
		 "tenants.acme.credentials.google.readers: with -o "
		 "cache=kernel"},
		{"{" PROVIDER ",\"allow_root\":false,\"tenants\":{}}",
		 "allow_root: false cannot be enforced with -o cache=kernel"},
	};
	struct config *cfg;
	char err[512];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(parse(cases[i].json, &cfg, err), 0);
		if (!cases[i].message) {
			assert_int_equal(config_set_read_path(cfg, true, err,
							      sizeof(err)),
					 0);
			assert_true(cfg->cache_kernel);
			assert_int_equal(cfg->creds[0].mode, 0440);
		} else {
			assert_int_not_equal(config_set_read_path(cfg, true,
								  err,
								  sizeof(err)),
					     0);
			if (!strstr(err, cases[i].message))
				fail_msg("case %zu: %s", i, err);
		}
		config_free(cfg);
	}
	/* With cache=kernel, a credential's own readers set its modes. */
	assert_int_equal(parse(TENANT("\"readers\":{\"gids\":[5]},",
				      ",\"readers\":{\"uids\":[6]}"),
			       &cfg, err),
			 0);
	assert_int_equal(config_set_read_path(cfg, true, err, sizeof(err)), 0);
	assert_int_equal(cfg->creds[0].uid, 6);
	assert_int_equal(cfg->creds[0].mode, 0400);
	assert_int_equal(cfg->tenants[0].gid, 5);
	config_free(cfg);
}

static void high_risk_allowed_explicitly(void **state)
{
	const char *json =
		"{\"providers\":{\"g\":{\"token_url\":"
		"\"https://a.example/t\",\"client_id\":\"i\","
		"\"client_secret_file\":\"/s\",\"strict_scopes\":true,"
		"\"high_risk_scopes\":[\"admin\",\"mail.*\"]}},\"tenants\":"
		"{\"acme\":{\"credentials\":{\"g\":{\"scopes\":[\"read\","
		"\"mail.send\"],\"allow_high_risk\":[\"mail.send\"]}}}}}";
	struct config *cfg;
	char err[512];

	if (parse(json, &cfg, err) != 0)
		fail_msg("%s", err);
	assert_true(cfg->creds[0].strict_scopes); /* from the provider */
	config_free(cfg);
}

static void relative_secret_path_follows_config(void **state)
{
	const char *json = "{\"providers\":{\"p\":{\"token_url\":"
			   "\"http://127.0.0.1:9/t\",\"client_id\":\"i\","
			   "\"client_secret_file\":\"sec/p\"}},\"tenants\":{},"
			   "\"audit_log\":\"log/audit\",\"store\":{\"dir\":"
			   "\"store\",\"key_file\":\"/k\"}}";
	struct config *cfg;
	char err[512];

	assert_int_equal(config_parse(json, strlen(json), "/etc/credfs/c.json",
				      &cfg, err, sizeof(err)),
			 0);
	assert_string_equal(cfg->providers[0].client_secret_file,
			    "/etc/credfs/sec/p");
	assert_string_equal(cfg->audit_log, "/etc/credfs/log/audit");
	assert_string_equal(cfg->store_dir, "/etc/credfs/store");
	assert_string_equal(cfg->store_key_file, "/k");
	config_free(cfg);
}

static const struct {
	const char *json;
	const char *message;
} bad[] = {
	{"{", "c.json:1:1: invalid JSON"},
	{"[]", "(top level): expected an object, got an array"},
	{"{\"tenants\":{}}", "providers: missing"},
	{"{" PROVIDER "}", "tenants: missing"},
	{"{" PROVIDER ",\"tenants\":{},\"colour\":1}", "colour: unknown key"},
	{"{" PROVIDER ",\"tenants\":{\"acme\":{\"credentials\":{\"google\":"
	 "{\"scopes\":[\"a\",\"b\",3]}}}}}",
	 "tenants.acme.credentials.google.scopes[2]: expected a string, got "
	 "an integer"},
	{"{" PROVIDER ",\"tenants\":{\"acme\":{\"credentials\":{\"google\":"
	 "{\"scopes\":[\"a b\"]}}}}}",
	 "tenants.acme.credentials.google.scopes[0]: \"a b\" is not a valid "
	 "scope"},
	{"{" PROVIDER ",\"tenants\":{\"acme\":{\"credentials\":{\"google\":"
	 "{\"scopes\":[\"a\",\"a\"]}}}}}",
	 "scopes[1]: \"a\" is listed twice"},
	{"{" PROVIDER ",\"tenants\":{\"acme\":{\"credentials\":{\"google\":"
	 "{}}}}}",
	 "tenants.acme.credentials.google.scopes: missing"},
	{"{\"providers\":{\"google\":{\"token_url\":\"https://oauth2.example/"
	 "token\",\"client_id\":\"id\",\"client_secret_file\":\"/s\","
	 "\"redirect_uri\":\"http://localhost:8080/cb\"}},\"tenants\":{}}",
	 "providers.google.redirect_uri: \"http://localhost:8080/cb\": use "
	 "127.0.0.1 (or [::1]) instead of localhost (RFC 8252 section 8.3)"},
	{"{\"providers\":{\"google\":{\"token_url\":\"https://oauth2.example/"
	 "token\",\"client_id\":\"id\",\"client_secret_file\":\"/s\","
	 "\"backoff_initial_s\":10,\"backoff_max_s\":5}},\"tenants\":{}}",
	 "providers.google.backoff_initial_s: 10 s is more than backoff_max_s "
	 "(5 s): lower it or raise backoff_max_s"},
	{"{" PROVIDER ",\"tenants\":{\"Acme\":{\"credentials\":{}}}}",
	 "tenants.Acme: tenant names must match"},
	{"{" PROVIDER ",\"tenants\":{\"acme/x\":{\"credentials\":{}}}}",
	 "tenants.acme/x: tenant names must match"},
	{"{" PROVIDER ",\"tenants\":{\".acme\":{\"credentials\":{}}}}",
	 "tenants..acme: tenant names must match"},
	{"{" PROVIDER ",\"tenants\":{\"acme\":{\"credentials\":{\"github\":"
	 "{\"scopes\":[]}}}}}",
	 "tenants.acme.credentials.github: no provider \"github\" is defined"},
	{"{" PROVIDER ",\"tenants\":{\"acme\":{}}}",
	 "tenants.acme.credentials: missing"},
	{"{" PROVIDER ",\"tenants\":{\"acme\":{\"credentials\":{},"
	 "\"uid\":0}}}",
	 "tenants.acme.uid: unknown key"},
	{"{" PROVIDER ",\"tenants\":{\"acme\":{\"credentials\":{},"
	 "\"readers\":{\"uids\":[-1]}}}}",
	 "tenants.acme.readers.uids[0]: must be between 0 and"},
	{"{" PROVIDER ",\"tenants\":{\"acme\":{\"credentials\":{},"
	 "\"readers\":{\"gids\":\"x\"}}}}",
	 "tenants.acme.readers.gids: expected an array, got a string"},
	{"{" PROVIDER ",\"tenants\":{\"acme\":{\"credentials\":{},"
	 "\"readers\":{\"cgroups\":[\"/a\"]}}}}",
	 "tenants.acme.readers: lists no uids and no gids"},
	{"{" PROVIDER ",\"tenants\":{\"acme\":{\"credentials\":{},"
	 "\"readers\":{\"uids\":[1],\"cgroups\":[\"system.slice\"]}}}}",
	 "tenants.acme.readers.cgroups[0]: \"system.slice\" is not a cgroup v2 "
	 "path"},
	{"{" PROVIDER ",\"tenants\":{\"acme\":{\"credentials\":{},"
	 "\"readers\":{\"uids\":[1],\"cgroups\":[\"/a/../b\"]}}}}",
	 "tenants.acme.readers.cgroups[0]: \"/a/../b\" is not"},
	{"{" PROVIDER ",\"tenants\":{\"acme\":{\"credentials\":{},"
	 "\"readers\":{\"users\":[1]}}}}",
	 "tenants.acme.readers.users: unknown key"},
	{"{" PROVIDER ",\"allow_root\":\"yes\",\"tenants\":{}}",
	 "allow_root: expected true or false, got a string"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\","
	 "\"high_risk_scopes\":[\"admin\",\"mail.*\"]}},\"tenants\":{\"acme\":"
	 "{\"credentials\":{\"g\":{\"scopes\":[\"read\",\"mail.send\"]}}}}}",
	 "tenants.acme.credentials.g.scopes[1]: \"mail.send\" is high-risk for "
	 "provider g; list it in allow_high_risk"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\"}},"
	 "\"tenants\":{\"acme\":{\"credentials\":{\"g\":{\"scopes\":"
	 "[\"read\"],\"allow_high_risk\":[\"admin\"]}}}}}",
	 "tenants.acme.credentials.g.allow_high_risk[0]: \"admin\" is not "
	 "among "
	 "the requested scopes"},
	{"{\"providers\":{\"g\":{\"token_url\":\"http://oauth2.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\"}},\"tenants\":{}}",
	 "providers.g.token_url: http:// is allowed only for loopback hosts"},
	{"{\"providers\":{\"g\":{\"token_url\":\"ftp://127.0.0.1/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\"}},\"tenants\":{}}",
	 "providers.g.token_url: scheme \"ftp\" is not allowed"},
	{"{\"providers\":{\"g\":{\"token_url\":\"not a url\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\"}},\"tenants\":{}}",
	 "providers.g.token_url: \"not a url\" is not a valid absolute URL"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret\":\"hunter2\"}},\"tenants\":{}}",
	 "providers.g.client_secret: secrets do not belong in the config"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_secret_file\":\"/s\"}},\"tenants\":{}}",
	 "providers.g.client_id: missing"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\","
	 "\"auth_method\":\"tls_client_auth\"}},\"tenants\":{}}",
	 "providers.g.auth_method: \"tls_client_auth\" is not one of"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\","
	 "\"auth_method\":\"private_key_jwt\"}},\"tenants\":{}}",
	 "providers.g.private_key_file: missing (private_key_jwt signs with "
	 "it)"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"auth_method\":\"none\"}},\"tenants\":{}}",
	 "providers.g.auth_method: \"none\" is a public client, and the "
	 "client_credentials grant needs a confidential one"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"auth_method\":\"none\",\"grant\":"
	 "\"refresh_token\",\"client_secret_file\":\"/s\"}},\"tenants\":{},"
	 "\"store\":{\"dir\":\"/st\"}}",
	 "providers.g.client_secret_file: not used with auth_method none"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\"}},\"tenants\":{}}",
	 "providers.g.client_secret_file: missing"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\","
	 "\"grant\":\"implicit\"}},\"tenants\":{}}",
	 "providers.g.grant: \"implicit\" is forbidden by RFC 9700 (section "
	 "2.1.2: tokens in the front channel leak); use \"refresh_token\" "
	 "with credfsctl connect (authorization code with PKCE)"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\","
	 "\"grant\":\"password\"}},\"tenants\":{}}",
	 "providers.g.grant: \"password\" is forbidden by RFC 9700 (section "
	 "2.4"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\","
	 "\"redirect_uri\":\"http://127.0.0.1:*/cb\"}},\"tenants\":{}}",
	 "providers.g.redirect_uri: \"http://127.0.0.1:*/cb\": redirect URIs "
	 "must be exact, no wildcards (RFC 9700 section 2.1)"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\","
	 "\"redirect_uri\":\"http://app.example/cb\"}},\"tenants\":{}}",
	 "providers.g.redirect_uri: \"http://app.example/cb\": http:// "
	 "redirect URIs are allowed only for loopback hosts (RFC 9700 "
	 "section 2.1)"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\","
	 "\"redirect_uri\":\"https://app.example/cb\"}},\"tenants\":{}}",
	 "use http://127.0.0.1:PORT/PATH"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\","
	 "\"revocation_url\":\"http://idp.example/revoke\"}},\"tenants\":{}}",
	 "providers.g.revocation_url: http:// is allowed only for loopback"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\","
	 "\"introspection_interval_s\":60}},\"tenants\":{}}",
	 "providers.g.introspection_interval_s: needs introspection_url"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\","
	 "\"authorization_params\":{\"state\":\"x\"}}},\"tenants\":{}}",
	 "providers.g.authorization_params.state: is set by credfs itself"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\","
	 "\"grant\":\"password\"}},\"tenants\":{}}",
	 "providers.g.grant: \"password\" is forbidden by RFC 9700"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\","
	 "\"grant\":\"refresh_token\"}},\"tenants\":{}}",
	 "providers.g.grant: refresh_token needs a store (set store.dir)"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\","
	 "\"refresh_fraction\":1.5}},\"tenants\":{}}",
	 "providers.g.refresh_fraction: must be between 0 and 0.95"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\","
	 "\"timeout_s\":\"10\"}},\"tenants\":{}}",
	 "providers.g.timeout_s: expected a number, got a string"},
	{"{\"providers\":{\"g\":{\"token_url\":\"https://a.example/t\","
	 "\"client_id\":\"i\",\"client_secret_file\":\"/s\","
	 "\"token_params\":{\"scope\":\"x\"}}},\"tenants\":{}}",
	 "providers.g.token_params.scope: is set by credfs itself"},
	{"{\"providers\":{\"G\":{}},\"tenants\":{}}",
	 "providers.G: provider names must match"},
	{"{\"providers\":{},\"providers\":{},\"tenants\":{}}",
	 "invalid JSON: duplicate object key"},
	{"{" PROVIDER ",\"tenants\":{},\"log_level\":\"loud\"}",
	 "log_level: \"loud\" is not one of"},
};

static void bad_configs_name_the_path(void **state)
{
	struct config *cfg;
	char err[512];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (parse(bad[i].json, &cfg, err) == 0)
			fail_msg("case %zu accepted", i);
		assert_null(cfg);
		if (!strstr(err, bad[i].message))
			fail_msg("case %zu: want \"%s\" in \"%s\"", i,
				 bad[i].message, err);
		assert_null(strchr(err, '\n')); /* one line */
	}
}

/* Many thousands of scopes are checked for repeats in one sort, and the
 * first repeat in the list is the one named. */
static void many_scopes_and_the_first_repeat(void **state)
{
	const size_t n = 50000;
	struct buf json;
	struct config *cfg;
	char err[512];
	size_t i;

	buf_init(&json, 4 * 1024 * 1024);
	assert_int_equal(buf_printf(&json, "{" PROVIDER ",\"tenants\":{\"acme"
					   "\":{\"credentials\":{\"google\":{"
					   "\"scopes\":["),
			 0);
	for (i = 0; i < n; i++)
		assert_int_equal(
			buf_printf(&json, "%s\"s%zu\"", i ? "," : "", i), 0);
	assert_int_equal(buf_printf(&json, "]}}}}}"), 0);
	assert_int_equal(parse(json.data, &cfg, err), 0);
	assert_int_equal(cfg->creds[0].n_scopes, n);
	config_free(cfg);
	/* Two repeats: s7 at n + 1 and s3 at n; the earlier one is named. */
	json.len -= strlen("]}}}}}");
	assert_int_equal(buf_printf(&json, ",\"s3\",\"s7\",\"s3\"]}}}}}"), 0);
	assert_int_equal(parse(json.data, &cfg, err), -EINVAL);
	assert_non_null(strstr(err, "scopes[50000]: \"s3\" is listed twice"));
	buf_free(&json);
}

static void secret_file_checks(void **state)
{
	char dir[] = "/tmp/credfs-test-XXXXXX", path[128], json[512];
	struct config *cfg;
	char err[512];
	FILE *f;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/secret", dir);
	f = fopen(path, "w");
	fputs("s3cret\n", f);
	fclose(f);
	snprintf(json, sizeof(json),
		 "{\"providers\":{\"g\":{\"token_url\":"
		 "\"https://a.example/t\",\"client_id\":\"i\","
		 "\"client_secret_file\":\"%s\"}},\"tenants\":{}}",
		 path);

	chmod(path, 0644);
	assert_int_equal(parse(json, &cfg, err), 0);
	assert_int_not_equal(config_load_secrets(cfg, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "readable or writable by group or others"));
	config_free(cfg);

	chmod(path, 0600);
	assert_int_equal(parse(json, &cfg, err), 0);
	assert_int_equal(config_load_secrets(cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->providers[0].client_secret, "s3cret");
	config_free(cfg);

	unlink(path);
	assert_int_equal(parse(json, &cfg, err), 0);
	assert_int_not_equal(config_load_secrets(cfg, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "cannot read"));
	config_free(cfg);
	rmdir(dir);
}

static void put(const char *dir, const char *name, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* tenants_dir: a tenant per TENANT.json, beside "tenants" or alone;
 * errors name the file. */
static void tenants_come_from_a_directory(void **state)
{
	char dir[] = "/tmp/credfs-test-XXXXXX", json[512], err[512], path[256];
	struct config *cfg;

	assert_non_null(mkdtemp(dir));
	put(dir, "beta.json",
	    "{\"credentials\":{\"google\":{\"scopes\":[\"a\"]}}}");
	put(dir, "gamma.json",
	    "{\"readers\":{\"uids\":[7]},\"credentials\":{\"google\":{"
	    "\"scopes\":[]}}}");
	put(dir, "README", "not a tenant");
	put(dir, "beta.json~", "an editor's backup");
	snprintf(json, sizeof(json),
		 "{" PROVIDER ",\"tenants_dir\":\"%s\",\"tenants\":{"
		 "\"acme\":{\"credentials\":{\"google\":{\"scopes\":[]}}}}}",
		 dir);
	assert_int_equal(parse(json, &cfg, err), 0);
	assert_int_equal(cfg->n_tenants, 3);
	assert_string_equal(cfg->tenants[1].name, "beta");
	assert_string_equal(cfg->tenants[2].name, "gamma");
	assert_int_equal(cfg->creds[2].uid, 7);
	assert_ptr_equal(config_find_cred(cfg, "gamma", "google"),
			 &cfg->creds[2]);
	assert_null(config_find_cred(cfg, "gamma", "slack"));
	config_free(cfg);
	/* Alone, without "tenants". */
	snprintf(json, sizeof(json), "{" PROVIDER ",\"tenants_dir\":\"%s\"}",
		 dir);
	assert_int_equal(parse(json, &cfg, err), 0);
	assert_int_equal(cfg->n_tenants, 2);
	config_free(cfg);
	/* In both places. */
	snprintf(json, sizeof(json),
		 "{" PROVIDER ",\"tenants_dir\":\"%s\",\"tenants\":{"
		 "\"beta\":{\"credentials\":{}}}}",
		 dir);
	assert_int_equal(parse(json, &cfg, err), -EINVAL);
	assert_non_null(strstr(err, "beta.json: tenant \"beta\" is also "
				    "under \"tenants\""));
	/* A file's error names the file. */
	put(dir, "delta.json", "{\"credentials\":{\"nosuch\":{}}}");
	snprintf(json, sizeof(json), "{" PROVIDER ",\"tenants_dir\":\"%s\"}",
		 dir);
	assert_int_equal(parse(json, &cfg, err), -EINVAL);
	snprintf(path, sizeof(path),
		 "%s/delta.json: tenants.delta."
		 "credentials.nosuch: no provider",
		 dir);
	assert_non_null(strstr(err, path));
	put(dir, "delta.json", "{\"credentials\":");
	assert_int_equal(parse(json, &cfg, err), -EINVAL);
	assert_non_null(strstr(err, "delta.json:1:"));
	assert_non_null(strstr(err, "invalid JSON"));
	snprintf(path, sizeof(path), "%s/delta.json", dir);
	unlink(path);
	put(dir, "Bad Name.json", "{}");
	assert_int_equal(parse(json, &cfg, err), -EINVAL);
	assert_non_null(strstr(err, "tenant names must match"));
	snprintf(path, sizeof(path), "%s/Bad Name.json", dir);
	unlink(path);
	/* Neither. */
	assert_int_equal(parse("{" PROVIDER "}", &cfg, err), -EINVAL);
	assert_non_null(strstr(err, "tenants"));
	for (const char *const *n =
		     (const char *const[]){"beta.json", "gamma.json", "README",
					   "beta.json~", NULL};
	     *n; n++) {
		snprintf(path, sizeof(path), "%s/%s", dir, *n);
		unlink(path);
	}
	rmdir(dir);
}

#define PRESET(keys)                                                      \
	"{\"providers\":{\"p\":{\"client_id\":\"id\",\"client_secret_"    \
	"file\":\"/s\"" keys "}},\"tenants\":{\"acme\":{\"credentials\":" \
	"{\"p\":{\"scopes\":[\"a\"]}}}},\"store\":{\"dir\":\"/st\"}}"

/* Every preset loads, and fills its endpoints and profile. */
static void presets_fill_the_provider(void **state)
{
	static const struct {
		const char *json, *token_url;
		enum auth_method auth;
		char sep;
		bool rotates;
		int64_t lifetime_ms;
	} cases[] = {
		{PRESET(",\"preset\":\"google\""),
		 "https://oauth2.googleapis.com/token", AUTH_CLIENT_SECRET_POST,
		 ' ', false, 3600000},
		{PRESET(",\"preset\":\"entra\",\"entra_tenant\":\"contoso."
			"com\""),
		 "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/"
		 "token",
		 AUTH_CLIENT_SECRET_POST, ' ', true, 3600000},
		{PRESET(",\"preset\":\"slack\""),
		 "https://slack.com/api/oauth.v2.access",
		 AUTH_CLIENT_SECRET_POST, ',', true, 43200000},
		{PRESET(",\"preset\":\"hubspot\""),
		 "https://api.hubapi.com/oauth/v1/token",
		 AUTH_CLIENT_SECRET_POST, ' ', false, 1800000},
		{PRESET(",\"preset\":\"salesforce\""),
		 "https://login.salesforce.com/services/oauth2/token",
		 AUTH_CLIENT_SECRET_POST, ' ', false, 900000},
		{PRESET(",\"preset\":\"salesforce\",\"login_host\":"
			"\"acme.my.salesforce.com\""),
		 "https://acme.my.salesforce.com/services/oauth2/token",
		 AUTH_CLIENT_SECRET_POST, ' ', false, 900000},
		{PRESET(",\"preset\":\"github\""),
		 "https://github.com/login/oauth/access_token",
		 AUTH_CLIENT_SECRET_POST, ',', true, 28800000},
		{PRESET(",\"preset\":\"atlassian\""),
		 "https://auth.atlassian.com/oauth/token",
		 AUTH_CLIENT_SECRET_POST, ' ', true, 3600000},
	};
	struct config *cfg;
	char err[512];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct provider_conf *p;

		if (parse(cases[i].json, &cfg, err) != 0)
			fail_msg("case %zu: %s", i, err);
		p = &cfg->providers[0];
		assert_string_equal(p->token_url, cases[i].token_url);
		assert_int_equal(p->auth, cases[i].auth);
		assert_int_equal(p->scope_sep, cases[i].sep);
		assert_int_equal(p->rotates, cases[i].rotates);
		assert_int_equal(p->default_lifetime_ms, cases[i].lifetime_ms);
		assert_non_null(p->preset);
		config_free(cfg);
	}
	/* The profile's quirks come along. */
	assert_int_equal(parse(PRESET(",\"preset\":\"salesforce\""), &cfg, err),
			 0);
	assert_int_equal(cfg->providers[0].n_response_fields, 2);
	assert_string_equal(cfg->providers[0].response_fields[0],
			    "instance_url");
	assert_non_null(cfg->providers[0].introspection_url);
	config_free(cfg);
	assert_int_equal(parse(PRESET(",\"preset\":\"hubspot\""), &cfg, err),
			 0);
	assert_string_equal(cfg->providers[0].error_field, "status");
	assert_true(cfg->providers[0].n_error_codes > 0);
	assert_int_equal(cfg->providers[0].grant, GRANT_REFRESH_TOKEN);
	config_free(cfg);
	assert_int_equal(parse(PRESET(",\"preset\":\"google\""), &cfg, err), 0);
	assert_int_equal(cfg->providers[0].rt_idle_ms, 15552000000LL);
	assert_int_equal(cfg->providers[0].n_auth_params, 2);
	config_free(cfg);
}

/* A key next to the preset wins over the preset's, one by one. */
static void preset_fields_are_overridable(void **state)
{
	struct config *cfg;
	char err[512];

	assert_int_equal(
		parse(PRESET(",\"preset\":\"google\",\"token_url\":"
			     "\"http://127.0.0.1:9/"
			     "token\",\"default_lifetime_s\""
			     ":60,\"refresh_token_lifetime_s\":604800"),
		      &cfg, err),
		0);
	assert_string_equal(cfg->providers[0].token_url,
			    "http://127.0.0.1:9/token");
	assert_int_equal(cfg->providers[0].default_lifetime_ms, 60000);
	assert_int_equal(cfg->providers[0].rt_lifetime_ms, 604800000);
	/* ... and the rest stays the preset's. */
	assert_string_equal(cfg->providers[0].revocation_url,
			    "https://oauth2.googleapis.com/revoke");
	config_free(cfg);
}

static void bad_presets_name_the_problem(void **state)
{
	static const struct {
		const char *json, *msg;
	} cases[] = {
		{PRESET(",\"preset\":\"myspace\""),
		 "providers.p.preset: \"myspace\" is not one of google, entra"},
		{PRESET(",\"preset\":\"entra\""),
		 "providers.p.entra_tenant: missing: preset entra needs"},
		{PRESET(",\"preset\":\"entra\",\"entra_tenant\":\"a/b?x=\""),
		 "providers.p.entra_tenant: \"a/b?x=\" is not the directory"},
		{PRESET(",\"preset\":\"google\",\"login_host\":\"x.com\""),
		 "providers.p.login_host: only for the preset that uses it"},
		{PRESET(",\"preset\":\"oidc\""),
		 "providers.p.issuer: missing: preset oidc discovers"},
		{PRESET(",\"preset\":\"hubspot\",\"auth_method\":"
			"\"client_secret_basic\""),
		 "providers.p.auth_method: client_secret_basic is not among"},
		{PRESET(",\"preset\":7"),
		 "providers.p.preset: expected a string, got an integer"},
		{PRESET(",\"token_url\":\"https://x/t\",\"error_codes\":"
			"{\"nope\":\"fatal\"}"),
		 "providers.p.error_codes.nope: \"fatal\" is not one of"},
		{PRESET(",\"token_url\":\"https://x/t\",\"response_fields\":"
			"[\"access_token\"]"),
		 "providers.p.response_fields[0]: \"access_token\" is not a "
		 "file name"},
		{PRESET(",\"token_url\":\"https://x/t\",\"scope_separator\":"
			"\";\""),
		 "providers.p.scope_separator: \";\" is not"},
	};
	struct config *cfg;
	char err[512];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(parse(cases[i].json, &cfg, err), -EINVAL);
		if (!strstr(err, cases[i].msg))
			fail_msg("case %zu: got \"%s\", want \"%s\"", i, err,
				 cases[i].msg);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(valid_config_and_defaults),
		cmocka_unit_test(relative_secret_path_follows_config),
		cmocka_unit_test(ownership_follows_readers),
		cmocka_unit_test(cache_kernel_needs_expressible_readers),
		cmocka_unit_test(high_risk_allowed_explicitly),
		cmocka_unit_test(bad_configs_name_the_path),
		cmocka_unit_test(many_scopes_and_the_first_repeat),
		cmocka_unit_test(secret_file_checks),
		cmocka_unit_test(tenants_come_from_a_directory),
		cmocka_unit_test(presets_fill_the_provider),
		cmocka_unit_test(preset_fields_are_overridable),
		cmocka_unit_test(bad_presets_name_the_problem),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
