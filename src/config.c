/*
 * config: strict parsing of the JSON configuration with jansson.
 *
 * Unknown keys, wrong types, out-of-range numbers, bad names and dangling
 * references are all refused, each with the JSON path that is wrong
 * ("tenants.acme.credentials.google.scopes[2]: expected a string"), so an
 * operator can fix the file without reading code.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "config.h"
#include "confparse.h"
#include "log.h"
#include "metrics_http.h"
#include "util.h"

/*
 * With no audit_log, audit lines go to stderr, beside the daemon's log;
 * under a unit with LogsDirectory= ($LOGS_DIRECTORY, its first entry)
 * they go to audit.log there instead, so they never mix into the journal.
 */
static int default_audit_log(char **out)
{
	const char *dirs = getenv("LOGS_DIRECTORY");
	size_t n = dirs ? strcspn(dirs, ":") : 0;

	if (!n || dirs[0] != '/')
		return 0;
	if (asprintf(out, "%.*s/audit.log", (int)n, dirs) < 0) {
		*out = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* An optional array of ids (uids or gids). */
static int get_ids(struct ctx *c, const json_t *obj, const char *path,
		   const char *key, unsigned **out, size_t *n)
{
	char sub[MAX_PATH_TEXT];
	json_t *arr, *v;
	size_t i;
	int r;

	r = conf_get_array(c, obj, path, key, sizeof(**out), &arr,
			   (void **)out);
	if (r < 0 || !arr)
		return r;
	json_array_foreach (arr, i, v) {
		json_int_t id = json_integer_value(v);

		snprintf(sub, sizeof(sub), "%s.%s[%zu]", path, key, i);
		if (conf_check_type(c, v, sub, T_INTEGER, "an integer") < 0)
			return -EINVAL;
		if (id < 0 || id >= (json_int_t)UINT_MAX)
			return conf_fail(c, sub, "must be between 0 and %u",
					 UINT_MAX - 1);
		(*out)[i] = (unsigned)id;
		*n = i + 1;
	}
	return 0;
}

/* "/", or "/a/b" without "//", "." or ".." parts or a trailing slash. */
static bool cgroup_path_valid(const char *p)
{
	const char *part;

	if (p[0] != '/' || strlen(p) > 512)
		return false;
	if (!p[1])
		return true;
	for (part = p + 1;;) {
		const char *e = strchr(part, '/');
		size_t n = e ? (size_t)(e - part) : strlen(part);

		if (n == 0 || (n == 1 && part[0] == '.') ||
		    (n == 2 && part[0] == '.' && part[1] == '.'))
			return false;
		if (!e)
			return true;
		part = e + 1;
	}
}

static int parse_readers(struct ctx *c, const json_t *obj, const char *path,
			 struct readers *r)
{
	static const char *const keys[] = {"uids", "gids", "cgroups", NULL};
	char sub[MAX_PATH_TEXT];
	json_t *v;
	int ret;

	ret = conf_get_object(c, obj, path, "readers", false, &v);
	if (ret < 0 || !v)
		return ret;
	conf_join(sub, path, "readers");
	r->set = true;
	ret = conf_check_keys(c, v, sub, keys);
	if (ret == 0)
		ret = get_ids(c, v, sub, "uids", &r->uids, &r->n_uids);
	if (ret == 0)
		ret = get_ids(c, v, sub, "gids", &r->gids, &r->n_gids);
	if (ret == 0)
		ret = conf_get_strings(
			c, v, sub, "cgroups", cgroup_path_valid,
			"a cgroup v2 path such as \"/system.slice/"
			"agent.service\"",
			&r->cgroups, &r->n_cgroups);
	if (ret == 0 && !r->n_uids && !r->n_gids)
		ret = conf_fail(c, sub,
				"lists no uids and no gids, so nobody "
				"could read");
	return ret;
}

static void readers_free(struct readers *r)
{
	size_t i;

	free(r->uids);
	free(r->gids);
	for (i = 0; i < r->n_cgroups; i++)
		free(r->cgroups[i]);
	free(r->cgroups);
}

/*
 * RFC 9700 section 4.4.2: a provider without an issuer (so without the
 * iss of RFC 9207 to tell authorization responses apart) needs a redirect
 * URI no other provider shares, or a mix-up attack can send its code to
 * another provider's token endpoint.
 */
static int distinct_redirects(struct ctx *c, const struct config *cfg)
{
	char sub[MAX_PATH_TEXT];
	size_t i, j;

	for (i = 0; i < cfg->n_providers; i++) {
		const struct provider_conf *a = &cfg->providers[i];

		for (j = 0; a->redirect_uri && j < cfg->n_providers; j++) {
			const struct provider_conf *b = &cfg->providers[j];

			if (j == i || !b->redirect_uri ||
			    strcmp(a->redirect_uri, b->redirect_uri) ||
			    ((a->issuer || a->discover_resource) &&
			     (b->issuer || b->discover_resource)))
				continue;
			snprintf(sub, sizeof(sub), "providers.%s.redirect_uri",
				 a->issuer ? b->name : a->name);
			return conf_fail(
				c, sub,
				"the same as providers.%s's: a provider "
				"without an issuer needs a redirect URI of "
				"its own, or a mix-up attack can send its "
				"code to the other's token endpoint (RFC "
				"9700 section 4.4.2)",
				a->issuer ? a->name : b->name);
		}
	}
	return 0;
}

static int cmp_tenant(const void *a, const void *b)
{
	return strcmp(((const struct tenant_conf *)a)->name,
		      ((const struct tenant_conf *)b)->name);
}

static int cmp_cred(const void *a, const void *b)
{
	const struct cred_conf *x = a, *y = b;
	int r = strcmp(x->tenant, y->tenant);

	return r ? r : strcmp(x->provider->name, y->provider->name);
}

struct scope_at {
	const char *s;
	size_t i;
};

static int cmp_scope_at(const void *a, const void *b)
{
	const struct scope_at *x = a, *y = b;
	int r = strcmp(x->s, y->s);

	return r ? r : (x->i > y->i) - (x->i < y->i);
}

static int parse_scopes(struct ctx *c, const json_t *obj, const char *path,
			struct cred_conf *cc)
{
	struct scope_at *order;
	char sub[MAX_PATH_TEXT];
	size_t i, dup = SIZE_MAX;
	int r;

	conf_join(sub, path, "scopes");
	if (!json_object_get(obj, "scopes"))
		return conf_fail(c, sub,
				 "missing (list the scopes to request, "
				 "or [] for the provider's default)");
	r = conf_get_strings(c, obj, path, "scopes", conf_scope_valid,
			     "a valid scope (RFC 6749 section 3.3)",
			     &cc->scopes, &cc->n_scopes);
	if (r < 0 || cc->n_scopes < 2)
		return r;
	/* Sorted, not pairwise: a config may list many thousands. */
	order = calloc(cc->n_scopes, sizeof(*order));
	if (!order)
		return -ENOMEM;
	for (i = 0; i < cc->n_scopes; i++)
		order[i] = (struct scope_at){cc->scopes[i], i};
	qsort(order, cc->n_scopes, sizeof(*order), cmp_scope_at);
	/* The first repeat in the list is the smallest index that comes
	 * second in its run of equal names. */
	for (i = 1; i < cc->n_scopes; i++)
		if (!strcmp(order[i].s, order[i - 1].s) && order[i].i < dup)
			dup = order[i].i;
	free(order);
	if (dup == SIZE_MAX)
		return 0;
	snprintf(sub, sizeof(sub), "%s.scopes[%zu]", path, dup);
	return conf_fail(c, sub, "\"%s\" is listed twice", cc->scopes[dup]);
}

const struct provider_conf *config_provider(const struct config *cfg,
					    const char *name)
{
	size_t i;

	for (i = 0; i < cfg->n_providers; i++)
		if (!strcmp(cfg->providers[i].name, name))
			return &cfg->providers[i];
	return NULL;
}

static bool high_risk(const struct provider_conf *p, const char *scope)
{
	size_t i;

	for (i = 0; i < p->n_high_risk; i++) {
		const char *h = p->high_risk[i];
		size_t n = strlen(h);

		if (n && h[n - 1] == '*' ? !strncmp(h, scope, n - 1)
					 : !strcmp(h, scope))
			return true;
	}
	return false;
}

/* Every high-risk scope requested is allowed, and every allowance names a
 * requested scope. */
static int check_high_risk(struct ctx *c, const json_t *obj, const char *path,
			   const struct cred_conf *cc)
{
	char sub[MAX_PATH_TEXT];
	char **allow = NULL;
	size_t n_allow = 0, i, j;
	int r;

	r = conf_get_strings(c, obj, path, "allow_high_risk", conf_scope_valid,
			     "a scope", &allow, &n_allow);
	for (i = 0; r == 0 && i < n_allow; i++) {
		for (j = 0; j < cc->n_scopes; j++)
			if (!strcmp(allow[i], cc->scopes[j]))
				break;
		snprintf(sub, sizeof(sub), "%s.allow_high_risk[%zu]", path, i);
		if (j == cc->n_scopes)
			r = conf_fail(c, sub,
				      "\"%s\" is not among the requested "
				      "scopes",
				      allow[i]);
	}
	for (i = 0; r == 0 && i < cc->n_scopes; i++) {
		if (!high_risk(cc->provider, cc->scopes[i]))
			continue;
		for (j = 0; j < n_allow; j++)
			if (!strcmp(allow[j], cc->scopes[i]))
				break;
		snprintf(sub, sizeof(sub), "%s.scopes[%zu]", path, i);
		if (j == n_allow)
			r = conf_fail(
				c, sub,
				"\"%s\" is high-risk for provider "
				"%s; list it in allow_high_risk to request it",
				cc->scopes[i], cc->provider->name);
	}
	for (i = 0; i < n_allow; i++)
		free(allow[i]);
	free(allow);
	return r;
}

static int parse_tenant(struct ctx *c, struct config *cfg, const char *name,
			const json_t *obj, struct tenant_conf *t)
{
	static const char *const tkeys[] = {"credentials", "readers",
					    "visible_to_all", NULL};
	static const char *const ckeys[] = {
		"scopes",	   "readers",	"strict_scopes",
		"allow_high_risk", TIMING_KEYS, NULL,
	};
	char path[MAX_PATH_TEXT], sub[MAX_PATH_TEXT];
	json_t *creds, *v;
	const char *pname;
	int r;

	snprintf(path, sizeof(path), "tenants.%s", name);
	r = conf_named_object(c, path, "tenant", name, obj, &t->name);
	if (r == 0)
		r = conf_check_keys(c, obj, path, tkeys);
	if (r == 0)
		r = parse_readers(c, obj, path, &t->readers);
	if (r == 0)
		r = conf_get_bool(c, obj, path, "visible_to_all",
				  &t->visible_to_all);
	if (r == 0)
		r = conf_get_object(c, obj, path, "credentials", true, &creds);
	if (r < 0)
		return r;
	json_object_foreach (creds, pname, v) {
		struct cred_conf *cc = &cfg->creds[cfg->n_creds];

		snprintf(sub, sizeof(sub), "%s.credentials.%s", path, pname);
		if (!util_name_valid(pname))
			return conf_fail(c, sub,
					 "provider names must match "
					 "[a-z0-9][a-z0-9._-]{0,63}");
		if (!json_is_object(v))
			return conf_fail(c, sub, "expected an object, got %s",
					 conf_json_kind(v));
		cc->provider = config_provider(cfg, pname);
		if (!cc->provider)
			return conf_fail(c, sub,
					 "no provider \"%s\" is defined "
					 "under providers",
					 pname);
		cfg->n_creds++;
		cc->timing = cc->provider->timing;
		cc->strict_scopes = cc->provider->strict_scopes;
		r = conf_check_keys(c, v, sub, ckeys);
		if (r == 0)
			r = parse_scopes(c, v, sub, cc);
		if (r == 0)
			r = conf_parse_timing(c, v, sub, &cc->timing);
		if (r == 0)
			r = parse_readers(c, v, sub, &cc->readers);
		if (r == 0)
			r = conf_get_bool(c, v, sub, "strict_scopes",
					  &cc->strict_scopes);
		if (r == 0)
			r = check_high_risk(c, v, sub, cc);
		if (r < 0)
			return r;
		t->n_creds++;
	}
	return 0;
}

/* A libpq connection string that parses and holds no password: that
 * lives in a passfile (passfile=, ~/.pgpass, PGPASSFILE). */
static int check_dsn(struct ctx *c, const char *dsn)
{
	PQconninfoOption *opts, *o;
	char *why = NULL;
	int r = 0;

	opts = PQconninfoParse(dsn, &why);
	if (!opts) {
		r = conf_fail(c, "store.dsn",
			      "not a libpq connection string: %s",
			      why ? why : "out of memory");
		PQfreemem(why);
		return r;
	}
	for (o = opts; o->keyword && r == 0; o++)
		if (!strcmp(o->keyword, "password") && o->val)
			r = conf_fail(c, "store.dsn",
				      "holds a password; put it in a passfile "
				      "(passfile=FILE in the dsn, ~/.pgpass or "
				      "PGPASSFILE) instead");
	PQconninfoFree(opts);
	return r;
}

static int parse_store(struct ctx *c, const json_t *root, struct config *cfg)
{
	static const char *const keys[] = {"dir", "key_file", "backend", "dsn",
					   NULL};
	char *backend = NULL;
	json_t *st;
	int r;

	r = conf_get_object(c, root, "", "store", false, &st);
	if (r < 0 || !st)
		return r;
	r = conf_check_keys(c, st, "store", keys);
	if (r == 0)
		r = conf_get_path(c, st, "store", "dir", true, &cfg->store_dir);
	if (r == 0)
		r = conf_get_path(c, st, "store", "key_file", false,
				  &cfg->store_key_file);
	if (r == 0)
		r = conf_get_string(c, st, "store", "backend", false, &backend);
	if (r == 0)
		r = conf_get_string(c, st, "store", "dsn", false,
				    &cfg->store_dsn);
	if (r == 0 && backend && strcmp(backend, "file") &&
	    strcmp(backend, "postgres"))
		r = conf_fail(c, "store.backend",
			      "\"%s\" is not file or postgres", backend);
	if (r == 0 && backend && !strcmp(backend, "postgres") &&
	    !cfg->store_dsn)
		r = conf_fail(c, "store.dsn",
			      "missing (the postgres backend "
			      "connects with it)");
	if (r == 0 && cfg->store_dsn &&
	    !(backend && !strcmp(backend, "postgres")))
		r = conf_fail(c, "store.dsn",
			      "only for \"backend\": \"postgres\"");
	if (r == 0 && cfg->store_dsn)
		r = check_dsn(c, cfg->store_dsn);
	free(backend);
	return r;
}

/* Slots as positions, until a daemon numbers them (tree.h). */
static int number_by_position(struct config *cfg)
{
	size_t i;

	cfg->tenant_of_slot = calloc(cfg->n_tenants + 1, sizeof(int32_t));
	if (!cfg->tenant_of_slot)
		return -ENOMEM;
	for (i = 0; i < cfg->n_providers; i++)
		cfg->providers[i].slot = (uint32_t)i;
	for (i = 0; i < cfg->n_tenants; i++) {
		cfg->tenants[i].slot = (uint32_t)i;
		cfg->tenant_of_slot[i] = (int32_t)i;
	}
	for (i = 0; i < cfg->n_creds; i++) {
		cfg->creds[i].slot = (uint32_t)i;
		cfg->creds[i].tc = &cfg->tenants[cfg->creds[i].tenant_idx];
	}
	cfg->n_provider_slots = (uint32_t)cfg->n_providers;
	cfg->n_tenant_slots = (uint32_t)cfg->n_tenants;
	cfg->n_cred_slots = (uint32_t)cfg->n_creds;
	return 0;
}

/* A tenant file is this big at most (the whole config: CONFIG_MAX_BYTES). */
#define TENANT_FILE_MAX_BYTES (1024 * 1024)

/* tenants_dir's files, read: name -> the tenant's object, and the file
 * each came from (for messages). */
struct tenant_files {
	json_t *tenants;
	json_t *files; /* name -> path */
};

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read every "<tenant>.json" in @dir (other names are not tenants:
 * editors' backups, READMEs), in name order, into @tf. Each is a tenant
 * object, as under "tenants"; one also under "tenants" is an error. */
static int read_tenants_dir(struct ctx *c, const char *dir,
			    const json_t *tenants, struct tenant_files *tf)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL, path[4096];
	size_t n = 0, cap = 0, i;
	int r = 0;

	if (!d)
		return conf_fail(c, "tenants_dir", "%s: %s", dir,
				 strerror(errno));
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		char **more;

		if (e->d_name[0] == '.' || len <= 5 ||
		    strcmp(e->d_name + len - 5, ".json"))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			more = realloc(names, cap * sizeof(*names));
			if (!more) {
				r = -ENOMEM;
				break;
			}
			names = more;
		}
		names[n] = strndup(e->d_name, len - 5);
		if (!names[n]) {
			r = -ENOMEM;
			break;
		}
		n++;
	}
	closedir(d);
	if (r == 0)
		qsort(names, n, sizeof(*names), cmp_names);
	for (i = 0; i < n && r == 0; i++) {
		json_error_t jerr;
		struct buf b;
		json_t *t;

		snprintf(path, sizeof(path), "%s/%s.json", dir, names[i]);
		if (!util_name_valid(names[i])) {
			r = conf_fail(c, "tenants_dir",
				      "%s: a tenant's file is named "
				      "TENANT.json, and tenant names must "
				      "match [a-z0-9][a-z0-9._-]{0,63}",
				      path);
			break;
		}
		if (tenants && json_object_get(tenants, names[i])) {
			r = conf_fail(c, "tenants_dir",
				      "%s: tenant \"%s\" is also under "
				      "\"tenants\"; keep it in one place",
				      path, names[i]);
			break;
		}
		r = file_read_capped(path, TENANT_FILE_MAX_BYTES, false, &b);
		if (r < 0) {
			r = conf_fail(c, "tenants_dir", "%s: cannot read: %s",
				      path,
				      file_read_error(r, "larger than 1 MiB"));
			break;
		}
		t = json_loadb(b.data, b.len, JSON_REJECT_DUPLICATES, &jerr);
		buf_free(&b);
		if (!t) {
			snprintf(c->err, c->errlen,
				 "%s:%d:%d: invalid JSON: %s", path, jerr.line,
				 jerr.column, jerr.text);
			r = -EINVAL;
			break;
		}
		if (json_object_set_new(tf->tenants, names[i], t) < 0 ||
		    json_object_set_new(tf->files, names[i],
					json_string(path)) < 0)
			r = -ENOMEM;
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return r;
}

static int parse_root(struct ctx *c, const json_t *root, struct config *cfg)
{
	static const char *const keys[] = {
		"providers",	  "tenants",	"tenants_dir",
		"log_level",	  "allow_root", "ops_gids",
		"audit_log",	  "store",	"per_credential_max",
		"metrics_listen", NULL,
	};
	struct tenant_files tf = {NULL, NULL};
	json_t *max;
	char *tdir = NULL;
	static const char *const levels[] = {"error", "warning", "info",
					     "debug"};
	json_t *providers, *tenants, *v, *t;
	char *level = NULL;
	const char *key, *tkey;
	size_t n_creds = 0, i;
	int r;

	if (!json_is_object(root))
		return conf_fail(c, "(top level)", "expected an object, got %s",
				 conf_json_kind(root));
	tf.tenants = json_object();
	tf.files = json_object();
	if (!tf.tenants || !tf.files) {
		r = -ENOMEM;
		goto out;
	}
	r = conf_check_keys(c, root, "", keys);
	if (r == 0)
		r = conf_get_object(c, root, "", "providers", true, &providers);
	if (r == 0)
		r = conf_get_path(c, root, "", "tenants_dir", false, &tdir);
	if (r == 0)
		r = conf_get_object(c, root, "", "tenants", !tdir, &tenants);
	if (r == 0 && tdir)
		r = read_tenants_dir(c, tdir, tenants, &tf);
	max = json_object_get(root, "per_credential_max");
	cfg->per_credential_max = PER_CREDENTIAL_MAX_DEFAULT;
	if (r == 0 && max) {
		if (!json_is_integer(max) || json_integer_value(max) < 0)
			r = conf_fail(c, "per_credential_max",
				      "expected a whole number of "
				      "credentials, 0 or more");
		else
			cfg->per_credential_max =
				(size_t)json_integer_value(max);
	}
	if (r == 0)
		r = conf_get_string(c, root, "", "log_level", false, &level);
	cfg->allow_root = true;
	if (r == 0)
		r = conf_get_bool(c, root, "", "allow_root", &cfg->allow_root);
	if (r == 0)
		r = get_ids(c, root, "", "ops_gids", &cfg->ops_gids,
			    &cfg->n_ops_gids);
	if (r == 0)
		r = conf_get_path(c, root, "", "audit_log", false,
				  &cfg->audit_log);
	if (r == 0 && !cfg->audit_log)
		r = default_audit_log(&cfg->audit_log);
	if (r == 0)
		r = conf_get_string(c, root, "", "metrics_listen", false,
				    &cfg->metrics_listen);
	if (r == 0 && cfg->metrics_listen) {
		struct sockaddr_storage sa;
		socklen_t len;
		char why[256];

		if (metrics_listen_parse(cfg->metrics_listen, &sa, &len, why,
					 sizeof(why)) < 0)
			r = conf_fail(c, "metrics_listen", "%s", why);
	}
	if (r == 0)
		r = parse_store(c, root, cfg);
	if (r < 0)
		goto out;
	cfg->log_level = LOG_INFO;
	if (level) {
		for (i = 0; i < ARRAY_SIZE(levels); i++)
			if (!strcmp(levels[i], level))
				break;
		if (i == ARRAY_SIZE(levels)) {
			r = conf_fail(c, "log_level",
				      "\"%s\" is not one of error, "
				      "warning, info, debug",
				      level);
			goto out;
		}
		cfg->log_level = (int)i;
	}

	cfg->providers = calloc(json_object_size(providers) + 1,
				sizeof(*cfg->providers));
	cfg->tenants = calloc(json_object_size(tenants) +
				      json_object_size(tf.tenants) + 1,
			      sizeof(*cfg->tenants));
	if (!cfg->providers || !cfg->tenants) {
		r = -ENOMEM;
		goto out;
	}
	json_object_foreach (providers, key, v) {
		cfg->providers[cfg->n_providers].index = cfg->n_providers;
		r = provider_parse(c, key, v,
				   &cfg->providers[cfg->n_providers]);
		cfg->n_providers++; /* freed by config_free even on error */
		if (r == 0 &&
		    cfg->providers[cfg->n_providers - 1].grant ==
			    GRANT_REFRESH_TOKEN &&
		    !cfg->store_dir) {
			char sub[MAX_PATH_TEXT];

			snprintf(sub, sizeof(sub), "providers.%s.grant", key);
			r = conf_fail(c, sub,
				      "refresh_token needs a store (set "
				      "store.dir) to keep the refresh tokens");
		}
		if (r < 0)
			goto out;
	}
	r = distinct_redirects(c, cfg);
	if (r < 0)
		goto out;

	for (i = 0; i < 2; i++) {
		json_object_foreach (i ? tf.tenants : tenants, tkey, t) {
			json_t *cr = json_is_object(t)
					     ? json_object_get(t, "credentials")
					     : NULL;

			n_creds +=
				json_is_object(cr) ? json_object_size(cr) : 0;
		}
	}
	cfg->creds = calloc(n_creds + 1, sizeof(*cfg->creds));
	if (!cfg->creds) {
		r = -ENOMEM;
		goto out;
	}
	for (i = 0; i < 2; i++) {
		json_object_foreach (i ? tf.tenants : tenants, tkey, t) {
			struct tenant_conf *tc = &cfg->tenants[cfg->n_tenants];
			struct ctx fc = *c;

			/* A tenant's file is named in its messages. */
			if (i)
				fc.file = json_string_value(
					json_object_get(tf.files, tkey));
			tc->first_cred = cfg->n_creds;
			r = parse_tenant(&fc, cfg, tkey, t, tc);
			cfg->n_tenants++;
			if (r < 0)
				goto out;
		}
	}

	/* Sort tenants, then credentials; re-point credentials at tenants. */
	qsort(cfg->tenants, cfg->n_tenants, sizeof(*cfg->tenants), cmp_tenant);
	for (i = 0; i < cfg->n_tenants; i++) {
		struct tenant_conf *tc = &cfg->tenants[i];
		size_t j;

		for (j = 0; j < tc->n_creds; j++) {
			cfg->creds[tc->first_cred + j].tenant = tc->name;
			cfg->creds[tc->first_cred + j].tenant_idx = i;
		}
	}
	qsort(cfg->creds, cfg->n_creds, sizeof(*cfg->creds), cmp_cred);
	for (i = 0, n_creds = 0; i < cfg->n_tenants; i++) {
		cfg->tenants[i].first_cred = n_creds;
		n_creds += cfg->tenants[i].n_creds;
	}
	r = number_by_position(cfg);
	if (r == 0)
		r = config_set_read_path(cfg, false, c->err, c->errlen);
out:
	free(level);
	free(tdir);
	json_decref(tf.tenants);
	json_decref(tf.files);
	return r;
}

/* One owner, one group and a mode that let exactly @r's uids and gids
 * read, where that can be said; otherwise readable by all, for the daemon
 * to decide. Without readers: root only. */
static void ownership(const struct readers *r, uid_t *uid, gid_t *gid,
		      mode_t *mode)
{
	*uid = r->n_uids == 1 ? r->uids[0] : 0;
	*gid = r->n_gids == 1 ? r->gids[0] : 0;
	*mode = 0400 | (r->n_gids == 1 ? 0040 : 0);
	if (r->n_uids > 1 || r->n_gids > 1)
		*mode = 0444;
}

static bool expressible(const struct readers *r)
{
	return r->n_uids <= 1 && r->n_gids <= 1 && r->n_cgroups == 0;
}

int config_set_read_path(struct config *cfg, bool cache_kernel, char *err,
			 size_t errlen)
{
	struct ctx c = {.err = err, .errlen = errlen, .file = cfg->path};
	char path[MAX_PATH_TEXT];
	size_t i, j;

	for (i = 0; cache_kernel && i < cfg->n_tenants; i++) {
		const struct tenant_conf *t = &cfg->tenants[i];

		snprintf(path, sizeof(path), "tenants.%s.readers", t->name);
		if (!expressible(&t->readers))
			return conf_fail(
				&c, path,
				"with -o cache=kernel only file "
				"modes are checked: list at most one uid "
				"and one gid, and no cgroups");
		for (j = 0; j < t->n_creds; j++) {
			const struct cred_conf *cc =
				&cfg->creds[t->first_cred + j];

			snprintf(path, sizeof(path),
				 "tenants.%s.credentials.%s.readers", t->name,
				 cc->provider->name);
			if (!expressible(&cc->readers))
				return conf_fail(
					&c, path,
					"with -o cache=kernel "
					"only file modes are checked: list "
					"at most one uid and one gid, and "
					"no cgroups");
		}
	}
	if (cache_kernel && !cfg->allow_root)
		return conf_fail(
			&c, "allow_root",
			"false cannot be enforced with "
			"-o cache=kernel (root passes file mode checks)");
	cfg->cache_kernel = cache_kernel;
	for (i = 0; i < cfg->n_tenants; i++) {
		struct tenant_conf *t = &cfg->tenants[i];

		ownership(&t->readers, &t->uid, &t->gid, &t->mode);
		for (j = 0; j < t->n_creds; j++) {
			struct cred_conf *cc = &cfg->creds[t->first_cred + j];
			const struct readers *r = &t->readers;

			/* Audited: the daemon checks the narrowing (and audits
			 * the denial); cache=kernel: the modes must. */
			if (cache_kernel && cc->readers.set)
				r = &cc->readers;
			ownership(r, &cc->uid, &cc->gid, &cc->mode);
		}
	}
	return 0;
}

int config_parse(const char *json, size_t len, const char *path,
		 struct config **out, char *err, size_t errlen)
{
	struct ctx c = {.err = err, .errlen = errlen, .file = path};
	struct config *cfg;
	json_error_t jerr;
	json_t *root;
	int r;

	*out = NULL;
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		snprintf(err, errlen, "%s:%d:%d: invalid JSON: %s", path,
			 jerr.line, jerr.column, jerr.text);
		return -EINVAL;
	}
	cfg = calloc(1, sizeof(*cfg));
	if (!cfg) {
		r = -ENOMEM;
		goto out_root;
	}
	cfg->path = strdup(path);
	r = cfg->path ? parse_root(&c, root, cfg) : -ENOMEM;
	if (r == -ENOMEM)
		snprintf(err, errlen, "%s: out of memory", path);
	if (r < 0) {
		config_free(cfg);
		goto out_root;
	}
	*out = cfg;
out_root:
	json_decref(root);
	return r;
}

const struct cred_conf *config_find_cred(const struct config *cfg,
					 const char *tenant,
					 const char *provider)
{
	size_t lo = 0, hi = cfg->n_creds;

	/* creds are sorted as cmp_cred() says. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct cred_conf *cc = &cfg->creds[mid];
		int r = strcmp(tenant, cc->tenant);

		if (!r)
			r = strcmp(provider, cc->provider->name);
		if (!r)
			return cc;
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

bool config_can_apply(const struct config *a, const struct config *b, char *why,
		      size_t whylen)
{
	size_t i, j, k;

	for (i = 0; i < a->n_providers; i++) {
		const struct provider_conf *pa = &a->providers[i], *pb = NULL;
		bool same;

		for (k = 0; k < b->n_providers && !pb; k++)
			if (!strcmp(b->providers[k].name, pa->name))
				pb = &b->providers[k];
		if (!pb)
			continue; /* removed, with its credentials */
		same = pa->grant == pb->grant &&
		       pa->n_response_fields == pb->n_response_fields;
		for (j = 0; same && j < pa->n_response_fields; j++)
			same = !strcmp(pa->response_fields[j],
				       pb->response_fields[j]);
		if (!same) {
			snprintf(why, whylen,
				 "providers.%s: its grant or response_fields "
				 "changed (give it another name to make it a "
				 "new provider)",
				 pa->name);
			return false;
		}
	}
	if (!same_str(a->store_dir, b->store_dir) ||
	    !same_str(a->store_dsn, b->store_dsn) ||
	    !same_str(a->store_key_file, b->store_key_file)) {
		snprintf(why, whylen, "store changed");
		return false;
	}
	if (!same_str(a->audit_log, b->audit_log)) {
		snprintf(why, whylen, "audit_log changed");
		return false;
	}
	if (!same_str(a->metrics_listen, b->metrics_listen)) {
		snprintf(why, whylen, "metrics_listen changed");
		return false;
	}
	if (a->cache_kernel != b->cache_kernel) {
		snprintf(why, whylen, "the read path (-o cache=) changed");
		return false;
	}
	return true;
}

int config_load_secrets(struct config *cfg, char *err, size_t errlen)
{
	size_t i;
	int r;

	for (i = 0; i < cfg->n_providers; i++) {
		r = provider_load_secrets(&cfg->providers[i], cfg->path, err,
					  errlen);
		if (r < 0)
			return r;
	}
	return 0;
}

int config_read(const char *path, struct config **out, char *err, size_t errlen)
{
	struct buf b;
	int r;

	*out = NULL;
	r = file_read_capped(path, CONFIG_MAX_BYTES, false, &b);
	if (r < 0) {
		snprintf(err, errlen, "%s: cannot read: %s", path,
			 file_read_error(r, "larger than 64 MiB"));
		return r;
	}
	r = config_parse(b.data, b.len, path, out, err, errlen);
	buf_free(&b);
	return r;
}

/*
 * The audit log the daemon will open (O_APPEND, O_NOFOLLOW, created if
 * missing): a regular file, or a name in an existing directory. The
 * daemon and credfsctl check decide alike.
 */
static int check_audit_log(const struct config *cfg, char *err, size_t errlen)
{
	const char *p = cfg->audit_log;
	char *dir, *slash;
	struct stat st;
	int r = 0;

	if (!p)
		return 0;
	if (lstat(p, &st) == 0) {
		if (S_ISREG(st.st_mode) || S_ISCHR(st.st_mode))
			return 0; /* a file, or a device such as /dev/null */
		snprintf(err, errlen,
			 "%s: audit_log: %s is %s: name a regular file (it is "
			 "created, mode 0600, if missing) or a character "
			 "device",
			 cfg->path, p,
			 S_ISDIR(st.st_mode) ? "a directory"
			 : S_ISLNK(st.st_mode)
				 ? "a symbolic link (not followed)"
			 : S_ISFIFO(st.st_mode) ? "a FIFO (its open would wait)"
						: "not a regular file");
		return -EINVAL;
	}
	if (errno != ENOENT) {
		r = -errno;
		snprintf(err, errlen, "%s: audit_log: %s: %s", cfg->path, p,
			 strerror(-r));
		return r;
	}
	dir = strdup(p);
	if (!dir)
		return -ENOMEM;
	slash = strrchr(dir, '/');
	if (slash)
		*(slash == dir ? slash + 1 : slash) = '\0';
	if (slash && (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))) {
		snprintf(err, errlen,
			 "%s: audit_log: %s: the directory %s does not exist",
			 cfg->path, p, dir);
		r = -ENOENT;
	}
	free(dir);
	return r;
}

int config_finish_load(struct config *cfg, char *err, size_t errlen)
{
	int r = check_audit_log(cfg, err, errlen);

	return r < 0 ? r : config_load_secrets(cfg, err, errlen);
}

int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
	int r = config_read(path, out, err, errlen);

	if (r < 0)
		return r;
	r = config_finish_load(*out, err, errlen);
	if (r < 0) {
		config_free(*out);
		*out = NULL;
	}
	return r;
}

void config_free(struct config *cfg)
{
	size_t i, j;

	if (!cfg)
		return;
	for (i = 0; i < cfg->n_providers; i++) {
		provider_free(&cfg->providers[i]);
	}
	for (i = 0; i < cfg->n_creds; i++) {
		for (j = 0; j < cfg->creds[i].n_scopes; j++)
			free(cfg->creds[i].scopes[j]);
		free(cfg->creds[i].scopes);
		readers_free(&cfg->creds[i].readers);
	}
	for (i = 0; i < cfg->n_tenants; i++) {
		free(cfg->tenants[i].name);
		readers_free(&cfg->tenants[i].readers);
	}
	free(cfg->ops_gids);
	free(cfg->audit_log);
	free(cfg->metrics_listen);
	free(cfg->store_dir);
	free(cfg->store_dsn);
	free(cfg->store_key_file);
	free(cfg->providers);
	free(cfg->tenants);
	free(cfg->creds);
	free(cfg->tenant_of_slot);
	free(cfg->path);
	free(cfg);
}
