/*
 * credfsctl: the admin CLI. Subcommands come from a table, as in
 * wireguard-tools' wg.c; each one parses its own arguments.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "config.h"
#include "control.h"
#include "ctl.h"
#include "key.h"
#include "onboard.h"
#include "oauth.h"
#include "record.h"
#include "store.h"
#include "util.h"

struct command {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *summary;
};

static int help_main(int argc, char **argv);

static int version_main(int argc, char **argv)
{
	printf("credfsctl %s\n", CREDFS_VERSION);
	return 0;
}

/*
 * Parse @argv for subcommand @name: --config FILE, --help, the options in
 * @opts and @min..@max positional arguments. @usage follows "credfsctl
 * NAME" in messages. Returns 0 to go on, 1 after printing help, 2 for a
 * usage error (printed).
 */
int parse_args(int argc, char **argv, const char *name, const char *usage,
	       const char *help, unsigned opts, size_t min, size_t max,
	       struct args *a)
{
	enum {
		O_FROM_FILE = 256,
		O_FROM_CONFIG,
		O_NEW_KEY,
		O_JSON,
		O_REVOKE,
		O_FORCE,
		O_MOUNT,
		O_FORMAT,
		O_TIMEOUT,
		O_SYNTAX,
		O_ALL,
		O_ENV,
		O_SIGNAL,
		O_RESTART,
	};
	/* Each option with the subcommands' flag that allows it (0: all). */
	static const struct {
		struct option o;
		unsigned allowed;
	} table[] = {
		{{"config", required_argument, NULL, 'c'}, 0},
		{{"help", no_argument, NULL, 'h'}, 0},
		{{"from-file", required_argument, NULL, O_FROM_FILE},
		 OPT_FROM_FILE},
		{{"from-config", required_argument, NULL, O_FROM_CONFIG},
		 OPT_FROM_CONFIG},
		{{"new-key-file", required_argument, NULL, O_NEW_KEY},
		 OPT_NEW_KEY},
		{{"json", no_argument, NULL, O_JSON}, OPT_JSON},
		{{"revoke", no_argument, NULL, O_REVOKE}, OPT_REVOKE},
		{{"force", no_argument, NULL, O_FORCE}, OPT_REVOKE},
		{{"mount", required_argument, NULL, O_MOUNT}, OPT_MOUNT},
		{{"format", required_argument, NULL, O_FORMAT}, OPT_TOKEN},
		{{"timeout", required_argument, NULL, O_TIMEOUT}, OPT_TIMEOUT},
		{{"syntax", no_argument, NULL, O_SYNTAX}, OPT_SYNTAX},
		{{"all", no_argument, NULL, O_ALL}, OPT_ALL},
		{{"env", required_argument, NULL, O_ENV}, OPT_EXEC},
		{{"signal", required_argument, NULL, O_SIGNAL}, OPT_EXEC},
		{{"restart", no_argument, NULL, O_RESTART}, OPT_EXEC},
	};
	struct option longopts[ARRAY_SIZE(table) + 1];
	size_t i, n = 0;
	char *end;
	int ch;

	memset(a, 0, sizeof(*a));
	if (opts & OPT_COMMAND) {
		/* The command is not ours to parse: cut it off first. */
		for (ch = 1; ch < argc && strcmp(argv[ch], "--"); ch++)
			;
		if (ch + 1 < argc)
			a->command = argv + ch + 1;
		argc = ch;
	}
	for (i = 0; i < ARRAY_SIZE(table); i++)
		if (!table[i].allowed || (opts & table[i].allowed))
			longopts[n++] = table[i].o;
	memset(&longopts[n], 0, sizeof(longopts[n]));
	/* getopt_long: --opt value, --opt=value, and -- before positional
	 * arguments that start with a dash; our own messages. */
	opterr = 0;
	optind = 0;
	while ((ch = getopt_long(argc, argv, ":c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': a->config = optarg; break;
		case 'h':
			printf("Usage: credfsctl %s %s\n\n%s", name, usage,
			       help);
			return 1;
		case O_FROM_FILE: a->from_file = optarg; break;
		case O_FROM_CONFIG: a->from_config = optarg; break;
		case O_NEW_KEY: a->new_key_file = optarg; break;
		case O_JSON: a->json = true; break;
		case O_REVOKE: a->revoke = true; break;
		case O_FORCE: a->force = true; break;
		case O_MOUNT: a->mount = optarg; break;
		case O_FORMAT: a->format = optarg; break;
		case O_SYNTAX: a->syntax = true; break;
		case O_ALL: a->all = true; break;
		case O_ENV: a->env = optarg; break;
		case O_SIGNAL: a->signal = optarg; break;
		case O_RESTART: a->restart = true; break;
		case O_TIMEOUT:
			errno = 0;
			a->timeout_s = strtol(optarg, &end, 10);
			if (errno || *end || a->timeout_s <= 0 ||
			    a->timeout_s > 86400) {
				fprintf(stderr,
					"credfsctl %s: --timeout takes seconds "
					"(1 to 86400)\n",
					name);
				return 2;
			}
			break;
		case ':':
			fprintf(stderr,
				"credfsctl %s: %s needs a value\n"
				"Usage: credfsctl %s %s\n",
				name, argv[optind - 1], name, usage);
			return 2;
		default:
			/* The option's name only: a value after '=' may be
			 * a secret. */
			fprintf(stderr,
				"credfsctl %s: unknown option '%.*s'\n"
				"Usage: credfsctl %s %s\n",
				name, (int)strcspn(argv[optind - 1], "="),
				argv[optind - 1], name, usage);
			return 2;
		}
	}
	for (; optind < argc; optind++) {
		if (a->n_pos >= max) {
			/* Never printed: a token pasted as an argument is
			 * the usual case. */
			fprintf(stderr,
				"credfsctl %s: too many arguments (argument "
				"%zu is one too many; it is not shown, as it "
				"may be a secret: secrets come on stdin or "
				"from a file)\n"
				"Usage: credfsctl %s %s\n",
				name, max + 1, name, usage);
			return 2;
		}
		a->pos[a->n_pos++] = argv[optind];
	}
	if (!a->config && !(opts & OPT_NO_CONFIG)) {
		fprintf(stderr, "credfsctl %s: missing --config FILE\n", name);
		return 2;
	}
	if (a->n_pos < min) {
		fprintf(stderr, "Usage: credfsctl %s %s\n", name, usage);
		return 2;
	}
	if ((opts & OPT_COMMAND) && !a->command) {
		fprintf(stderr,
			"credfsctl %s: missing -- COMMAND [ARGS...]\n"
			"Usage: credfsctl %s %s\n",
			name, name, usage);
		return 2;
	}
	if ((opts & OPT_FROM_CONFIG) && !a->from_config) {
		fprintf(stderr, "credfsctl %s: missing --from-config FILE\n",
			name);
		return 2;
	}
	if ((opts & OPT_NEW_KEY) && !a->new_key_file) {
		fprintf(stderr, "credfsctl %s: missing --new-key-file FILE\n",
			name);
		return 2;
	}
	return 0;
}

int open_store(const char *path, enum store_mode mode, bool secrets,
	       struct ctx *x)
{
	char err[1024];
	int r;

	memset(x, 0, sizeof(*x));
	r = (secrets ? config_load : config_read)(path, &x->cfg, err,
						  sizeof(err));
	if (r == 0 && !x->cfg->store_dir) {
		snprintf(err, sizeof(err), "%s: store.dir: missing", path);
		r = -EINVAL;
	}
	if (r == 0)
		r = key_load(x->cfg->store_key_file, &x->key, err, sizeof(err));
	if (r == 0)
		r = store_open(x->cfg->store_dir, x->cfg->store_dsn, x->key,
			       mode, &x->st, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "credfsctl: %s\n", err);
		close_store(x);
		memset(x, 0, sizeof(*x));
	}
	return r;
}

void close_store(struct ctx *x)
{
	store_close(x->st);
	key_free(x->key);
	config_free(x->cfg);
}

/* Say why credfsctl @cmd could not talk to the daemon on store @dir
 * (control_call's @r), and what that means. */
void daemon_problem(const char *cmd, const char *dir, int r)
{
	const char *sp = cmd ? " " : "";

	cmd = cmd ? cmd : "";
	if (r == -ENOENT || r == -ECONNREFUSED)
		fprintf(stderr,
			"credfsctl%s%s: no credfs daemon runs on store %s\n",
			sp, cmd, dir);
	else if (r == -ETIMEDOUT)
		fprintf(stderr,
			"credfsctl%s%s: the credfs daemon on store %s does not "
			"answer: it is stopped or hung (see its log, or "
			"systemctl status credfs); what it serves is as it "
			"was\n",
			sp, cmd, dir);
	else
		fprintf(stderr,
			"credfsctl%s%s: cannot reach the daemon on store "
			"%s: %s\n",
			sp, cmd, dir, strerror(-r));
}

/*
 * Ask the daemon on the store to act on @request, printing its answer.
 * Returns the daemon's status, or 0 with a note when none runs.
 */
int tell_daemon(const struct config *cfg, const char *request,
		int64_t timeout_ms, FILE *out)
{
	struct buf reply;
	int status, r;

	buf_init(&reply, 16 * 1024 * 1024);
	r = control_call(cfg->store_dir, request, timeout_ms, &reply, &status);
	if (r == -ENOENT || r == -ECONNREFUSED) {
		fprintf(out, "no credfs daemon runs on this store; it reads "
			     "the store when it starts\n");
		status = 0;
	} else if (r < 0) {
		daemon_problem(NULL, cfg->store_dir, r);
		if (r == -ETIMEDOUT)
			fprintf(stderr, "credfsctl: the store has the change; "
					"the daemon reads it when it answers "
					"again (SIGHUP) or starts\n");
		status = 1;
	} else {
		fputs(reply.data ? reply.data : "", out);
	}
	buf_free(&reply);
	return status;
}

/* How long the daemon may take to load a record and fetch a token. */
int64_t reload_timeout(const struct cred_conf *cc)
{
	return cc->timing.open_wait_ms + cc->provider->timeout_ms + 5000;
}

/* Print @o as one line of JSON; 0, or 1 when it could not be made. */
static int print_json_line(json_t *o)
{
	char *text =
		o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

	json_decref(o);
	if (!text)
		return 1;
	printf("%s\n", text);
	free(text);
	return 0;
}

/* credfsctl check: validate as the daemon would, mount nothing. */
static int check_main(int argc, char **argv)
{
	struct config *cfg = NULL;
	char err[1024] = "";
	struct args a;
	int r;

	r = parse_args(argc, argv, "check", "--config FILE [--syntax] [--json]",
		       "Validate FILE (and read its client secret files, and "
		       "an oidc provider's\ndiscovery document) exactly as "
		       "credfs would. --syntax checks the file alone:\nno "
		       "secret file, audit log directory or network is "
		       "touched. --json prints\none object: ok, error, what "
		       "was checked and the counts.\n",
		       OPT_SYNTAX | OPT_JSON, 0, 0, &a);
	if (r)
		return r == 1 ? 0 : r;
	r = (a.syntax ? config_read : config_load)(a.config, &cfg, err,
						   sizeof(err));
	if (a.json) {
		json_t *o = json_pack("{s:s, s:b, s:s, s:s?}", "config",
				      a.config, "ok", r == 0, "checked",
				      a.syntax ? "syntax" : "everything",
				      "error", r < 0 ? err : NULL);

		if (o && r == 0)
			json_object_update_new(
				o,
				json_pack("{s:I, s:I, s:I}", "providers",
					  (json_int_t)cfg->n_providers,
					  "tenants", (json_int_t)cfg->n_tenants,
					  "credentials",
					  (json_int_t)cfg->n_creds));
		config_free(cfg);
		return print_json_line(o) || r < 0;
	}
	if (r < 0) {
		fprintf(stderr, "credfsctl: %s\n", err);
		return 1;
	}
	printf("%s: ok%s: %zu providers, %zu tenants, %zu credentials\n",
	       a.config,
	       a.syntax ? " (syntax only: secret files, the audit log and "
			  "discovery not checked)"
			: "",
	       cfg->n_providers, cfg->n_tenants, cfg->n_creds);
	config_free(cfg);
	return 0;
}

const struct cred_conf *refresh_cred(struct ctx *x, const char *cmd,
				     const char *tenant, const char *provider)
{
	const struct cred_conf *cc = config_find_cred(x->cfg, tenant, provider);

	if (!cc) {
		fprintf(stderr,
			"credfsctl %s: %s/%s is not declared in %s; add it "
			"under tenants.%s.credentials first\n",
			cmd, tenant, provider, x->cfg->path, tenant);
		return NULL;
	}
	if (cc->provider->grant != GRANT_REFRESH_TOKEN) {
		fprintf(stderr,
			"credfsctl %s: provider %s uses the "
			"client_credentials grant; it needs no refresh "
			"token\n",
			cmd, cc->provider->name);
		return NULL;
	}
	return cc;
}

/* The live view of @tenant/@provider in @live (status --json objects). */
static json_t *live_of(json_t *live, const char *tenant, const char *provider)
{
	json_t *o;
	size_t i;

	json_array_foreach (live, i, o) {
		json_t *t = json_object_get(o, "tenant");
		json_t *p = json_object_get(o, "provider");

		if (json_is_string(t) && json_is_string(p) &&
		    !strcmp(json_string_value(t), tenant) &&
		    !strcmp(json_string_value(p), provider))
			return o;
	}
	return NULL;
}

/* One row of list: what the store holds (if there is one) and what the
 * daemon says, appended to @rows. */
static void list_row(struct ctx *x, const char *tenant, const char *provider,
		     const char *grant, json_t *live, json_t *rows)
{
	json_t *expires = json_null(), *gen = json_null(), *o;
	const char *state = NULL;
	char stored_exp[32];
	struct record r;
	int ret = -ENOENT;

	if (x->st) {
		ret = store_load(x->st, tenant, provider, 0, &r);
		if (ret == 0) {
			gen = json_integer((json_int_t)r.generation);
			if (r.access_token && r.expires_ms) {
				time_rfc3339(r.expires_ms, stored_exp);
				expires = json_string(stored_exp);
			}
			state = r.revoked	  ? "revoked"
				: r.refresh_token ? "stored"
						  : "registered";
		} else if (ret == -ENOENT) {
			state = strcmp(grant, "refresh_token") ? NULL
							       : "absent";
		} else {
			state = "unreadable";
		}
		record_clear(&r);
	}
	o = live_of(live, tenant, provider);
	if (o) {
		const char *now =
			json_string_value(json_object_get(o, "state"));

		/* The daemon has nothing of a client alone to serve. */
		if (!state || strcmp(state, "registered") ||
		    (now && strcmp(now, "absent")))
			state = now;
		json_decref(expires);
		expires =
			json_is_string(json_object_get(o, "expires_at"))
				? json_incref(json_object_get(o, "expires_at"))
				: json_null();
		if (!x->st &&
		    json_is_integer(json_object_get(o, "generation"))) {
			json_decref(gen);
			gen = json_incref(json_object_get(o, "generation"));
		}
	}
	json_array_append_new(rows, json_pack("{s:s, s:s, s:s, s:s?, s:o, s:o}",
					      "tenant", tenant, "provider",
					      provider, "grant", grant, "state",
					      state, "expires_at", expires,
					      "generation", gen));
}

static void print_rows(json_t *rows)
{
	json_t *o;
	size_t i;

	printf("%-20s %-16s %-18s %-12s %-21s %s\n", "TENANT", "PROVIDER",
	       "GRANT", "STATE", "EXPIRES", "GENERATION");
	json_array_foreach (rows, i, o) {
		json_t *st = json_object_get(o, "state");
		json_t *ex = json_object_get(o, "expires_at");
		json_t *gen = json_object_get(o, "generation");
		char g[32] = "-";

		if (json_is_integer(gen))
			snprintf(g, sizeof(g), "%" JSON_INTEGER_FORMAT,
				 json_integer_value(gen));
		printf("%-20s %-16s %-18s %-12s %-21s %s\n",
		       json_string_value(json_object_get(o, "tenant")),
		       json_string_value(json_object_get(o, "provider")),
		       json_string_value(json_object_get(o, "grant")),
		       json_is_string(st) ? json_string_value(st) : "-",
		       json_is_string(ex) ? json_string_value(ex) : "-", g);
	}
}

struct orphans {
	struct ctx *x;
	json_t *rows;
};

static int list_orphan(void *arg, const char *tenant, const char *provider)
{
	struct orphans *o = arg;

	if (!config_find_cred(o->x->cfg, tenant, provider))
		list_row(o->x, tenant, provider, "not-configured", NULL,
			 o->rows);
	return 0;
}

/*
 * Without a store there is no control socket: what each credential's
 * status.json in the mount says, as an array like status --json's. NULL
 * with the reason printed when the mount cannot be read.
 */
static json_t *live_from_mount(const struct config *cfg, const char *mount,
			       const char *cmd, const char *tenant,
			       const char *provider)
{
	json_t *live = json_array();
	char path[4096];
	struct stat st;
	struct buf b;
	size_t i;

	/* Served at all? (A credential's status.json that cannot be read
	 * below is one the caller may not read, or one not connected.) */
	snprintf(path, sizeof(path), "%s/tenants", mount);
	if (stat(path, &st) < 0) {
		mount_problem(cmd, mount, NULL, NULL, errno);
		json_decref(live);
		return NULL;
	}
	for (i = 0; live && i < cfg->n_creds; i++) {
		const struct cred_conf *cc = &cfg->creds[i];
		json_t *o;

		if ((tenant && strcmp(tenant, cc->tenant)) ||
		    (provider && strcmp(provider, cc->provider->name)))
			continue;
		snprintf(path, sizeof(path), "%s/tenants/%s/%s/status.json",
			 mount, cc->tenant, cc->provider->name);
		if (file_read_capped(path, 1024 * 1024, false, &b) < 0)
			continue; /* absent, or not one the caller may read */
		o = json_loadb(b.data, b.len, 0, NULL);
		buf_free(&b);
		if (json_is_object(o))
			json_array_append_new(live, o);
		else
			json_decref(o);
	}
	return live;
}

/* credfsctl list */
static int list_main(int argc, char **argv)
{
	json_t *live = NULL, *rows = json_array();
	char err[1024];
	struct orphans orph;
	struct buf reply;
	struct args a;
	struct ctx x;
	int status, r;
	size_t i;

	r = parse_args(argc, argv, "list",
		       "--config FILE [--json] [--mount DIR]",
		       "List every credential: tenant, provider, grant, "
		       "state and expiry (from the\nrunning daemon when there "
		       "is one, else from the store) and the record's\n"
		       "generation. Records in the store that the "
		       "configuration does not name are\nlisted as "
		       "not-configured. A configuration without a store is "
		       "listed from\nthe mount (default " DEFAULT_MOUNT
		       "). --json prints an array of objects.\nNever prints "
		       "a secret.\n",
		       OPT_JSON | OPT_MOUNT, 0, 0, &a);
	if (r || !rows) {
		json_decref(rows);
		return r == 1 ? 0 : r ? r : 1;
	}
	memset(&x, 0, sizeof(x));
	if (config_read(a.config, &x.cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "credfsctl: %s\n", err);
		json_decref(rows);
		return 1;
	}
	if (!x.cfg->store_dir) {
		live = live_from_mount(x.cfg, a.mount ? a.mount : DEFAULT_MOUNT,
				       "list", NULL, NULL);
		if (!live) {
			config_free(x.cfg);
			json_decref(rows);
			return 1;
		}
	} else {
		config_free(x.cfg);
		if (open_store(a.config, STORE_ADMIN, false, &x) < 0) {
			json_decref(rows);
			return 1;
		}
		buf_init(&reply, 64 * 1024 * 1024);
		r = control_call(x.cfg->store_dir, "status --json",
				 CTL_STATUS_MS, &reply, &status);
		if (r == 0 && status == 0)
			live = json_loads(reply.data, 0, NULL);
		else if (a.json)
			; /* states are the store's: no note in JSON */
		else if (r == -ETIMEDOUT)
			printf("(the daemon on this store does not answer: "
			       "stopped or hung; states are the store's)\n");
		else
			printf("(no daemon runs on this store: states are the "
			       "store's)\n");
		buf_free(&reply);
	}
	for (i = 0; i < x.cfg->n_creds; i++) {
		const struct cred_conf *cc = &x.cfg->creds[i];

		list_row(&x, cc->tenant, cc->provider->name,
			 cc->provider->grant == GRANT_REFRESH_TOKEN
				 ? "refresh_token"
				 : "client_credentials",
			 live, rows);
	}
	orph.x = &x;
	orph.rows = rows;
	if (x.st)
		store_foreach(x.st, list_orphan, &orph);
	r = 0;
	if (a.json)
		r = print_json_line(json_incref(rows));
	else
		print_rows(rows);
	json_decref(rows);
	json_decref(live);
	close_store(&x);
	return r;
}

/* status without a store (so without a control socket): the files of
 * the mount. */
static int status_from_mount(const struct config *cfg, const struct args *a)
{
	const char *mount = a->mount ? a->mount : DEFAULT_MOUNT;
	const char *tenant = a->n_pos ? a->pos[0] : NULL;
	const char *provider = a->n_pos > 1 ? a->pos[1] : NULL;
	char path[4096];
	struct buf b;
	json_t *live;
	size_t i, n = 0;
	int r;

	if (!tenant && !a->json) {
		snprintf(path, sizeof(path), "%s/status", mount);
		r = file_read_capped(path, 64 * 1024 * 1024, false, &b);
		if (r < 0)
			mount_problem("status", mount, NULL, NULL, -r);
		else
			fwrite(b.data, 1, b.len, stdout);
		buf_free(&b);
		return r < 0;
	}
	if (a->json) {
		live = live_from_mount(cfg, mount, "status", tenant, provider);
		if (!live)
			return 1;
		n = json_array_size(live);
		r = n || !tenant ? print_json_line(json_incref(live)) : 0;
		json_decref(live);
	} else {
		for (i = 0; i < cfg->n_creds; i++) {
			const struct cred_conf *cc = &cfg->creds[i];

			if (strcmp(tenant, cc->tenant) ||
			    (provider && strcmp(provider, cc->provider->name)))
				continue;
			snprintf(path, sizeof(path), "%s/tenants/%s/%s/status",
				 mount, cc->tenant, cc->provider->name);
			r = file_read_capped(path, 1024 * 1024, false, &b);
			if (r < 0) {
				mount_problem("status", mount, cc->tenant,
					      cc->provider->name, -r);
				buf_free(&b);
				return 1;
			}
			if (n)
				putchar('\n');
			fwrite(b.data, 1, b.len, stdout);
			buf_free(&b);
			n++;
		}
		r = 0;
	}
	if (tenant && !n) {
		fprintf(stderr,
			"credfsctl status: %s%s%s: not in the configuration "
			"%s, or not one you may read\n",
			tenant, provider ? "/" : "", provider ? provider : "",
			cfg->path);
		return 1;
	}
	return r;
}

/* credfsctl status [TENANT [PROVIDER]] */
static int status_main(int argc, char **argv)
{
	char req[CONTROL_MAX_REQUEST], err[1024];
	struct config *cfg = NULL;
	struct buf reply;
	struct args a;
	int status, r;

	r = parse_args(argc, argv, "status",
		       "[TENANT [PROVIDER]] --config FILE [--json] [--mount "
		       "DIR]",
		       "Print what the running daemon's status files say, "
		       "without the mount:\nthe root status table, or the "
		       "status file of each credential of TENANT\n(and "
		       "PROVIDER); --json prints status.json objects in an "
		       "array. A\nconfiguration without a store (so without "
		       "a control socket) is read from\nthe mount "
		       "(default " DEFAULT_MOUNT ").\n",
		       OPT_JSON | OPT_MOUNT, 0, 2, &a);
	if (r)
		return r == 1 ? 0 : r;
	if (config_read(a.config, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "credfsctl: %s\n", err);
		return 1;
	}
	if (!cfg->store_dir) {
		r = status_from_mount(cfg, &a);
		config_free(cfg);
		return r;
	}
	snprintf(req, sizeof(req), "status%s%s%s%s%s", a.json ? " --json" : "",
		 a.n_pos ? " " : "", a.n_pos ? a.pos[0] : "",
		 a.n_pos > 1 ? " " : "", a.n_pos > 1 ? a.pos[1] : "");
	buf_init(&reply, 64 * 1024 * 1024);
	r = control_call(cfg->store_dir, req, CTL_STATUS_MS, &reply, &status);
	if (r < 0)
		daemon_problem("status", cfg->store_dir, r);
	else
		fputs(reply.data ? reply.data : "", status ? stderr : stdout);
	buf_free(&reply);
	config_free(cfg);
	return r < 0 ? 1 : status;
}

/*
 * Where the daemon of @cfg listens: its store directory, or without a
 * store the abstract socket named after the mount @mount (resolved) into
 * @name. NULL, said, when the mount cannot be resolved.
 */
const char *control_where(const struct config *cfg, const char *cmd,
			  const char *mount, char *name, size_t size)
{
	char *real;

	if (cfg->store_dir)
		return cfg->store_dir;
	mount = mount ? mount : DEFAULT_MOUNT;
	real = realpath(mount, NULL);
	if (!real) {
		mount_problem(cmd, mount, NULL, NULL, errno);
		return NULL;
	}
	control_name(real, name, size);
	free(real);
	return name;
}

/* credfsctl refresh TENANT PROVIDER | --all */
static int refresh_main(int argc, char **argv)
{
	char err[1024], name[128], req[CONTROL_MAX_REQUEST];
	const struct cred_conf *cc = NULL;
	struct config *cfg = NULL;
	int64_t timeout_ms = 0;
	const char *where;
	struct buf reply;
	struct args a;
	int status, r;
	size_t i;

	r = parse_args(argc, argv, "refresh",
		       "TENANT PROVIDER | --all  --config FILE [--mount DIR]",
		       "Ask the running daemon for a token now, whatever the "
		       "backoff of a failing\ncredential says (for when the "
		       "provider or its client was just fixed), and\nprint "
		       "each outcome. --all: every credential, all at once. "
		       "A daemon without a\nstore is reached through its "
		       "mount (default " DEFAULT_MOUNT "). Exit status 0\n"
		       "when every one is valid and healthy afterwards.\n",
		       OPT_ALL | OPT_MOUNT, 0, 2, &a);
	if (r)
		return r == 1 ? 0 : r;
	if (a.all == (a.n_pos == 2) || a.n_pos == 1) {
		fprintf(stderr, "Usage: credfsctl refresh TENANT PROVIDER | "
				"--all  --config FILE [--mount DIR]\n");
		return 2;
	}
	if (config_read(a.config, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "credfsctl: %s\n", err);
		return 1;
	}
	if (!a.all && !(cc = config_find_cred(cfg, a.pos[0], a.pos[1]))) {
		fprintf(stderr,
			"credfsctl refresh: %s/%s is not declared in %s\n",
			a.pos[0], a.pos[1], cfg->path);
		config_free(cfg);
		return 1;
	}
	/* The daemon waits for the provider's timeout and 5 s more. */
	for (i = 0; i < cfg->n_creds; i++)
		if (!cc || cc == &cfg->creds[i])
			if (timeout_ms < cfg->creds[i].provider->timeout_ms)
				timeout_ms = cfg->creds[i].provider->timeout_ms;
	where = control_where(cfg, "refresh", a.mount, name, sizeof(name));
	if (!where) {
		config_free(cfg);
		return 1;
	}
	snprintf(req, sizeof(req), "refresh %s%s%s", a.all ? "--all" : a.pos[0],
		 a.all ? "" : " ", a.all ? "" : a.pos[1]);
	buf_init(&reply, 16 * 1024 * 1024);
	r = control_call(where, req, timeout_ms + 10000, &reply, &status);
	if (r < 0 && where == name)
		fprintf(stderr,
			"credfsctl refresh: no credfs daemon answers for the "
			"mount %s (%s): is it running, and is this its "
			"mount? (--mount DIR)\n",
			a.mount ? a.mount : DEFAULT_MOUNT,
			r == -ECONNREFUSED ? "not listening" : strerror(-r));
	else if (r < 0)
		daemon_problem("refresh", where, r);
	else
		fputs(reply.data ? reply.data : "", stdout);
	buf_free(&reply);
	config_free(cfg);
	return r < 0 ? 1 : status;
}

/* credfsctl complete tenants | providers TENANT: names for the shell
 * completion (src/completion/), from the config alone. */
static int complete_main(int argc, char **argv)
{
	struct config *cfg;
	char err[1024];
	struct args a;
	size_t i;
	int r;

	r = parse_args(argc, argv, "complete",
		       "tenants | providers TENANT --config FILE",
		       "Print the tenants of FILE, or the providers of "
		       "TENANT's credentials, one a\nline: for shell "
		       "completion. Reads no secret and no store.\n",
		       0, 1, 2, &a);
	if (r)
		return r == 1 ? 0 : r;
	if (strcmp(a.pos[0], "tenants") && strcmp(a.pos[0], "providers")) {
		fprintf(stderr, "credfsctl complete: tenants or providers\n");
		return 2;
	}
	if (config_read(a.config, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "credfsctl: %s\n", err);
		return 1;
	}
	if (!strcmp(a.pos[0], "tenants"))
		for (i = 0; i < cfg->n_tenants; i++)
			printf("%s\n", cfg->tenants[i].name);
	else
		for (i = 0; i < cfg->n_creds; i++)
			if (a.n_pos > 1 &&
			    !strcmp(cfg->creds[i].tenant, a.pos[1]))
				printf("%s\n", cfg->creds[i].provider->name);
	config_free(cfg);
	return 0;
}

static const struct command commands[] = {
	{"check", check_main, "validate a configuration file"},
	{"init", init_main, "create the store directory and its master key"},
	{"add", add_main, "store a credential's refresh token"},
	{"connect", connect_main, "connect an account: browser, PKCE"},
	{"token", token_main, "print a token for a credential helper"},
	{"device", device_main, "connect an account: device code"},
	{"register", register_main, "register a client (MCP servers)"},
	{"client-metadata", client_metadata_main,
	 "print a client ID metadata document"},
	{"mcp-bridge", mcp_bridge_main, "a stdio MCP server for a remote one"},
	{"list", list_main, "list credentials, their state and expiry"},
	{"remove", remove_main, "delete a credential's record"},
	{"rekey", rekey_main, "re-encrypt the store under a new master key"},
	{"migrate", migrate_main, "copy a store's records into another"},
	{"status", status_main, "what the daemon's status files say"},
	{"refresh", refresh_main, "ask the daemon for a token now"},
	{"exec", exec_main, "run a command with the token in its environment"},
	{"watch", watch_main, "run a command after each rotation"},
	{"complete", complete_main, "names for shell completion"},
	{"help", help_main, "show this help"},
	{"version", version_main, "show the version"},
};

static int help_main(int argc, char **argv)
{
	size_t i;

	printf("Usage: credfsctl COMMAND [ARGS...]\n\nCommands:\n");
	for (i = 0; i < ARRAY_SIZE(commands); i++)
		printf("  %-15s %s\n", commands[i].name, commands[i].summary);
	printf("\nOptions: -h/--help, -V/--version. "
	       "'credfsctl COMMAND --help' shows a command's arguments.\n");
	return 0;
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "help";
	size_t i;
	int r;

	/* Refresh tokens, codes and keys pass through credfsctl too. */
	secrets_hygiene();
	if (argc < 2) {
		/* A usage error, as for any missing argument. */
		if (dup2(STDERR_FILENO, STDOUT_FILENO) >= 0)
			help_main(0, NULL);
		return 2;
	}
	if (!strcmp(name, "--help") || !strcmp(name, "-h"))
		name = "help";
	else if (!strcmp(name, "--version") || !strcmp(name, "-V"))
		name = "version";
	for (i = 0; i < ARRAY_SIZE(commands); i++) {
		if (strcmp(commands[i].name, name))
			continue;
		curl_global_init(CURL_GLOBAL_DEFAULT);
		r = commands[i].main(argc > 1 ? argc - 1 : 1,
				     argv + (argc > 1));
		curl_global_cleanup();
		return r;
	}
	fprintf(stderr,
		"credfsctl: unknown command '%s' (try 'credfsctl "
		"help')\n",
		name);
	return 2;
}
