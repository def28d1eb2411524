/*
 * config: the JSON configuration, parsed strictly. Every error names the
 * JSON path and the problem in one line. Client secrets are read from their
 * own files (never from the config) and wiped when the config is freed.
 */
#ifndef CREDFS_CONFIG_H
#define CREDFS_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CONFIG_MAX_BYTES (1024 * 1024)

enum auth_method { AUTH_CLIENT_SECRET_BASIC, AUTH_CLIENT_SECRET_POST };
enum grant_type { GRANT_CLIENT_CREDENTIALS };

/* Freshness knobs, set per provider and overridable per credential. */
struct timing {
	int64_t refresh_lead_ms;
	double refresh_fraction;
	int64_t min_ttl_ms;
	int64_t open_wait_ms;
	int64_t clock_skew_ms;
};

struct param {
	char *name;
	char *value;
};

struct provider_conf {
	char *name;
	char *token_url;
	char *client_id;
	char *client_secret_file; /* absolute, resolved against the config */
	char *client_secret;	  /* loaded by config_load(), wiped on free */
	enum auth_method auth;
	enum grant_type grant;
	struct timing timing;
	int64_t timeout_ms;
	int64_t default_lifetime_ms; /* when a response has no expires_in */
	int64_t backoff_initial_ms;
	int64_t backoff_max_ms;
	unsigned max_concurrency;
	size_t max_response_bytes;
	struct param *params; /* extra token request parameters */
	size_t n_params;
};

struct cred_conf {
	const char *tenant; /* points into the tenant */
	const struct provider_conf *provider;
	char **scopes;
	size_t n_scopes;
	struct timing timing;
	uid_t uid;
	gid_t gid;
	mode_t mode; /* of its files; directories get x where r is set */
};

struct tenant_conf {
	char *name;
	uid_t uid;
	gid_t gid;
	mode_t mode;
	size_t first_cred; /* its credentials are creds[first_cred..+n_creds] */
	size_t n_creds;
};

struct config {
	char *path;
	int log_level; /* enum log_level */
	struct provider_conf *providers;
	size_t n_providers;
	struct tenant_conf *tenants; /* sorted by name */
	size_t n_tenants;
	struct cred_conf *creds; /* sorted by tenant, then provider */
	size_t n_creds;
};

/*
 * Parse and validate @json (@len bytes). @path names the file in messages
 * and anchors relative paths. Returns 0 and sets *out, or -EINVAL with a
 * one-line "path: problem" message in @err.
 */
int config_parse(const char *json, size_t len, const char *path,
		 struct config **out, char *err, size_t errlen);

/* Read @path, parse it and load the client secrets. 0 or -errno + @err. */
int config_load(const char *path, struct config **out, char *err,
		size_t errlen);

/* Read every provider's client secret file. 0 or -errno + @err. */
int config_load_secrets(struct config *cfg, char *err, size_t errlen);

/* Free everything, wiping secrets. NULL is a no-op. */
void config_free(struct config *cfg);

#endif
