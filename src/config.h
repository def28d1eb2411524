/*
 * config: the JSON configuration, parsed strictly. Every error names the
 * JSON path and the problem in one line. Client secrets are read from their
 * own files (never from the config) and wiped when the config is freed.
 */
#ifndef CREDFS_CONFIG_H
#define CREDFS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CONFIG_MAX_BYTES (64 * 1024 * 1024)
#define PER_CREDENTIAL_MAX_DEFAULT 1000

enum auth_method {
	AUTH_CLIENT_SECRET_BASIC,
	AUTH_CLIENT_SECRET_POST,
	AUTH_PRIVATE_KEY_JWT, /* RFC 7523: a JWT signed with our key */
	AUTH_NONE,	      /* a public client: client_id only, PKCE */
};
enum grant_type { GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN };

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

/* Who may read: a uid or gid match, and, with cgroups, a cgroup match. */
struct readers {
	bool set; /* given in the config */
	uid_t *uids;
	size_t n_uids;
	gid_t *gids;
	size_t n_gids;
	char **cgroups; /* cgroup v2 paths, "/a/b", no trailing slash */
	size_t n_cgroups;
};

struct provider_conf {
	char *name;
	size_t index;  /* in config.providers */
	uint32_t slot; /* stable for the daemon's life: see tree.h */
	char *token_url;
	char *client_id;
	char *client_secret_file; /* absolute, resolved against the config */
	char *client_secret;	  /* loaded by config_load(), wiped on free */
	char *private_key_file;	  /* private_key_jwt: PEM, RSA or EC P-256 */
	void *private_key;	  /* its EVP_PKEY, loaded by config_load() */
	char *key_id;		  /* the JWT header's "kid", or NULL */
	char *ca_file;	    /* PEM CA bundle to trust instead of the system's */
	char *jwt_audience; /* the assertion's "aud"; NULL: token_url */
	enum auth_method auth;
	/* Onboarding and revocation (credfsctl connect, device, remove). */
	char *authorization_url;
	char *redirect_uri; /* NULL: http://127.0.0.1:<any port>/callback */
	char *device_authorization_url;
	char *revocation_url;
	char *introspection_url;
	int64_t introspection_interval_ms; /* 0: never */
	int64_t discovery_max_age_ms; /* refetch the issuer's document after */
	struct param *auth_params; /* extra authorization request params */
	size_t n_auth_params;
	char **auth_scopes; /* extra scopes asked for at authorization only,
			     * e.g. offline_access */
	size_t n_auth_scopes;
	enum grant_type grant;
	struct timing timing;
	int64_t timeout_ms;
	int64_t default_lifetime_ms; /* when a response has no expires_in */
	int64_t min_lifetime_ms;     /* a shorter expires_in counts as this */
	int64_t device_min_interval_ms; /* device flow polls no faster */
	int64_t backoff_initial_ms;
	int64_t backoff_max_ms;
	unsigned max_concurrency;
	size_t max_response_bytes;
	struct param *params; /* extra token request parameters */
	size_t n_params;
	char **high_risk; /* scopes that need allow_high_risk; "x*" = prefix */
	size_t n_high_risk;
	bool strict_scopes;
	/* The provider's profile (docs/providers.md): set by its preset,
	 * overridable key by key. */
	char *preset;	     /* the preset it started from, or NULL */
	char *issuer;	     /* OIDC discovery fills the endpoints; or NULL */
	/* RFC 8707: the resource every authorization and token request
	 * names (the audience of the token), or NULL. */
	char *resource;
	/* The endpoints come from @resource's protected resource metadata
	 * (RFC 9728) and its authorization server's (RFC 8414): an MCP
	 * server. Its issuer is then the one that metadata names. */
	bool discover_resource;
	char *registration_url; /* RFC 7591, from the metadata; or NULL */
	bool cimd_supported;	/* ... which takes client_id metadata
				 * documents (an https client_id) */
	bool iss_param;	     /* its metadata: authorization responses carry
			      * iss (RFC 9207) */
	bool auth_explicit;  /* auth_method was given, not defaulted */
	char **auth_methods; /* the methods the provider supports; NULL:
			      * any */
	size_t n_auth_methods;
	char scope_sep;		/* ' ', or ',' (Slack, GitHub) */
	bool rotates;		/* each refresh returns a new refresh token */
	bool rotates_set;	/* ... and the profile says so either way */
	int64_t rt_lifetime_ms; /* a refresh token's life from issue; 0 */
	int64_t rt_idle_ms;	/* ... and unused; 0: unknown */
	char *error_field;	/* the error code's key; NULL: "error" */
	struct param *error_codes; /* provider code -> outcome name */
	size_t n_error_codes;
	char **response_fields; /* extra response fields shown as files */
	size_t n_response_fields;
	double max_rate; /* token requests per second; 0: unbounded */
};

#define MAX_RESPONSE_FIELDS 4

struct cred_conf {
	const char *tenant; /* points into the tenant */
	size_t tenant_idx;  /* into config.tenants */
	const struct tenant_conf *tc; /* the same, of this configuration */
	uint32_t slot; /* stable for the daemon's life: see tree.h */
	const struct provider_conf *provider;
	char **scopes;
	size_t n_scopes;
	struct timing timing;
	struct readers readers; /* narrows the tenant's; unset = no narrowing */
	bool strict_scopes;	/* do not serve a wider grant than requested */
	/* Owner and mode of its files, from config_set_read_path(). */
	uid_t uid;
	gid_t gid;
	mode_t mode;
};

struct tenant_conf {
	char *name;
	struct readers readers; /* unset: root only (if allow_root) */
	/* Owner and mode of its directory (x added where r is set). */
	uid_t uid;
	gid_t gid;
	mode_t mode;
	/* visible_to_all: its name is listed and looked up for every caller
	 * (so the kernel may cache it); what is inside stays its readers'. */
	bool visible_to_all;
	size_t first_cred; /* its credentials are creds[first_cred..+n_creds] */
	size_t n_creds;
	uint32_t slot; /* stable for the daemon's life: see tree.h */
};

struct config {
	char *path;
	int log_level;	 /* enum log_level */
	bool allow_root; /* uid 0 passes the uid/gid test of every tenant */
	gid_t *ops_gids; /* may see every credential in status and metrics */
	size_t n_ops_gids;
	char *audit_log;      /* NULL: audit lines go to stderr */
	char *metrics_listen; /* NULL: metrics only as the file */
	char *store_dir;      /* NULL: no store configured; with postgres,
			       * local state only (the control socket) */
	char *store_dsn;      /* the PostgreSQL backend's libpq connection
			       * string (no password in it); NULL: files */
	char *store_key_file; /* NULL: only $CREDENTIALS_DIRECTORY/credfs.key */
	bool cache_kernel;    /* -o cache=kernel: see config_set_read_path() */
	/* The status and metrics files list each credential while they show
	 * at most this many; past it, only those not in good health. */
	size_t per_credential_max;
	struct provider_conf *providers;
	size_t n_providers;
	struct tenant_conf *tenants; /* sorted by name */
	size_t n_tenants;
	struct cred_conf *creds; /* sorted by tenant, then provider */
	size_t n_creds;
	/* The numbering of tree.h: slots below these are the daemon's,
	 * and the tenant that has each tenant slot (-1: none here). As
	 * parsed, slots are positions. */
	uint32_t n_cred_slots, n_tenant_slots, n_provider_slots;
	int32_t *tenant_of_slot;
};

/*
 * Parse and validate @json (@len bytes). @path names the file in messages
 * and anchors relative paths. Returns 0 and sets *out, or -EINVAL with a
 * one-line "path: problem" message in @err.
 */
int config_parse(const char *json, size_t len, const char *path,
		 struct config **out, char *err, size_t errlen);

/* The provider named @name, or NULL. */
const struct provider_conf *config_provider(const struct config *cfg,
					    const char *name);

/* Read and parse @path without reading client secrets. 0 or -errno. */
int config_read(const char *path, struct config **out, char *err,
		size_t errlen);

/* Read @path, parse it and load the client secrets (and with an issuer
 * or an MCP resource, its discovery documents: from the process's cache,
 * else fetched, network I/O bounded by the provider's timeout_s per
 * request). At a start and at every reload. 0 or -errno + @err. */
int config_load(const char *path, struct config **out, char *err,
		size_t errlen);

/* What config_load() does after config_read(): the audit log's directory
 * checked, the secrets and discovery documents loaded. For a caller that
 * reads the parsed config first (the daemon, for its saved discovery
 * documents). 0 or -errno + @err. */
int config_finish_load(struct config *cfg, char *err, size_t errlen);

/* Read every provider's client secret file. 0 or -errno + @err. */
int config_load_secrets(struct config *cfg, char *err, size_t errlen);

/*
 * Choose the read path and derive every file's owner and mode from the
 * readers. On the audited path (@cache_kernel false) modes express the
 * tenant's readers and the daemon checks the rest on each access. With
 * @cache_kernel the kernel's mode check is the only one, so readers must fit
 * in one owner and one group, with no cgroups and allow_root on; otherwise
 * -EINVAL and a message naming the offending path. config_parse() applies
 * the audited path.
 */
int config_set_read_path(struct config *cfg, bool cache_kernel, char *err,
			 size_t errlen);

/*
 * Whether @b can replace @a in a running daemon: the same store, audit
 * log and read path, and a provider that keeps its name keeps its grant
 * and response_fields. Tenants, providers and credentials may come and
 * go; everything else (secrets, keys, scopes, readers, timing,
 * endpoints, log level) may differ. If not, why (naming the key) in @why.
 */
bool config_can_apply(const struct config *a, const struct config *b, char *why,
		      size_t whylen);

/* The credential tenant/provider of @cfg, or NULL. */
const struct cred_conf *config_find_cred(const struct config *cfg,
					 const char *tenant,
					 const char *provider);

/* Free everything, wiping secrets. NULL is a no-op. */
void config_free(struct config *cfg);

#endif
