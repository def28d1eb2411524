/*
 * credfsctl token: a token from the mount (never the store), in the shapes
 * credential helpers expect. It reads as the calling user, so the mount's
 * readers rule and its audit apply, and it checks that access_token and
 * status.json describe the same token (their fingerprints) so a rotation
 * between the two reads cannot pair a token with another's expiry.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "ctl.h"
#include "util.h"

#define FUSE_SUPER_MAGIC 0x65735546

struct tok {
	struct buf value;
	json_t *status; /* status.json */
};

static const char *why(int err)
{
	switch (err) {
	case ENOENT: return "no such credential here";
	case EACCES: return "not a reader of this credential";
	case EKEYEXPIRED:
		return "the provider is failing and the token expired";
	case EKEYREVOKED: return "revoked at the provider; connect it again";
	case EKEYREJECTED: return "the provider refuses credfs's client";
	case EAGAIN: return "no token yet";
	case ENOTCONN: return "the mount is not served (is credfs running?)";
	default: return strerror(err);
	}
}

/* Whether the root status of @mount lists @tenant/@provider as absent
 * (declared, no record in the store). */
static bool listed_absent(const char *mount, const char *tenant,
			  const char *provider)
{
	char path[4096], want[512];
	struct buf b;
	bool absent;

	snprintf(path, sizeof(path), "%s/status", mount);
	snprintf(want, sizeof(want), "\n%s/%s state=absent ", tenant, provider);
	if (file_read_capped(path, 64 * 1024 * 1024, false, &b) < 0)
		return false;
	absent = b.data && (strstr(b.data, want) ||
			    !strncmp(b.data, want + 1, strlen(want + 1)));
	buf_free(&b);
	return absent;
}

/*
 * Why reading @tenant/@provider's token (NULL: a root file) under @mount
 * failed with @err, for credfsctl @cmd,
 * found by walking the path: a directory the caller cannot enter, a
 * mount that is gone or not there, a tenant hidden from the caller, a
 * credential declared and not added. Printed with its next step.
 */
void mount_problem(const char *cmd, const char *mount, const char *tenant,
		   const char *provider, int err)
{
	char path[4096], pre[512], *real = NULL;
	size_t i;
	struct statfs sfs;
	struct stat st;

	if (tenant)
		snprintf(pre, sizeof(pre), "credfsctl %s: %s/%s: ", cmd, tenant,
			 provider);
	else
		snprintf(pre, sizeof(pre), "credfsctl %s: ", cmd);
	snprintf(path, sizeof(path), "%s", mount);
	/* Each directory on the way to the mount, outermost first. */
	for (i = 1; path[i - 1]; i++) {
		char c = path[i];

		if (c != '/' && c != '\0')
			continue;
		path[i] = '\0';
		if (access(path, X_OK) < 0 && errno == EACCES) {
			fprintf(stderr,
				"%syou cannot enter %s "
				"(permission denied): run as a user who may, "
				"or ask its owner\n",
				pre, path);
			return;
		}
		path[i] = c;
		if (!c)
			break;
	}
	if (statfs(mount, &sfs) < 0 && errno == ENOTCONN) {
		fprintf(stderr,
			"%sthe mount on %s is not served "
			"(is credfs running? systemctl status credfs)\n",
			pre, mount);
		return;
	}
	real = realpath(mount, NULL);
	if (!real || stat(real, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr,
			"%s%s: no such directory: "
			"is credfs running, mounted there? (--mount DIR "
			"names another mount)\n",
			pre, mount);
		free(real);
		return;
	}
	if (sfs.f_type != FUSE_SUPER_MAGIC || !util_credfs_mounted_on(real)) {
		fprintf(stderr,
			"%s%s is not a credfs mount: "
			"the daemon is stopped (systemctl start credfs), or "
			"it mounts elsewhere (--mount DIR)\n",
			pre, mount);
		free(real);
		return;
	}
	free(real);
	if (!tenant) {
		fprintf(stderr, "%s%s: %s\n", pre, mount, strerror(err));
		return;
	}
	snprintf(path, sizeof(path), "%s/tenants/%s", mount, tenant);
	if (err == ENOENT && stat(path, &st) < 0) {
		fprintf(stderr,
			"%sno tenant %s here, or you are "
			"not one of its readers (a tenant is hidden from "
			"those who may not read it; see its readers)\n",
			pre, tenant);
		return;
	}
	snprintf(path, sizeof(path), "%s/tenants/%s/%s", mount, tenant,
		 provider);
	if (err == ENOENT && stat(path, &st) < 0) {
		if (listed_absent(mount, tenant, provider))
			fprintf(stderr,
				"%sdeclared, but no "
				"account is connected yet: credfsctl "
				"connect, device or add %s %s\n",
				pre, tenant, provider);
		else
			fprintf(stderr,
				"%stenant %s has no "
				"credential %s in the daemon's configuration "
				"(its directory lists what it has)\n",
				pre, tenant, provider);
		return;
	}
	fprintf(stderr, "%s%s\n", pre, why(err));
}

static int load(const char *cmd, const char *mount, const char *tenant,
		const char *provider, struct tok *t);

int token_load(const char *cmd, const char *mount, const char *tenant,
	       const char *provider, struct buf *value, json_t **status)
{
	struct tok t;
	int r = load(cmd, mount, tenant, provider, &t);

	*value = t.value;
	*status = t.status;
	return r;
}

/* The token and its status, consistent with each other. */
static int load(const char *cmd, const char *mount, const char *tenant,
		const char *provider, struct tok *t)
{
	char path[4096], fp[9];
	json_t *f;
	struct buf st;
	int r, tries;

	memset(t, 0, sizeof(*t));
	for (tries = 0; tries < 5; tries++) {
		snprintf(path, sizeof(path), "%s/tenants/%s/%s/access_token",
			 mount, tenant, provider);
		r = file_read_capped(path, MAX_TOKEN_FILE, false, &t->value);
		if (r == -ENOENT || r == -EACCES || r == -ENOTCONN) {
			mount_problem(cmd, mount, tenant, provider, -r);
			return r;
		}
		if (r < 0) {
			fprintf(stderr, "credfsctl %s: %s/%s: %s\n", cmd,
				tenant, provider, why(-r));
			return r;
		}
		snprintf(path, sizeof(path), "%s/tenants/%s/%s/status.json",
			 mount, tenant, provider);
		r = file_read_capped(path, MAX_TOKEN_FILE, false, &st);
		t->status =
			r == 0 ? json_loadb(st.data, st.len, 0, NULL) : NULL;
		buf_free(&st);
		util_fingerprint(t->value.data ? t->value.data : "",
				 t->value.len, fp);
		f = json_object_get(t->status, "fingerprint");
		if (t->value.len && json_is_string(f) &&
		    !strcmp(json_string_value(f), fp))
			return 0;
		/* Rotated between the two reads: again. */
		json_decref(t->status);
		t->status = NULL;
		buf_free(&t->value);
	}
	fprintf(stderr,
		"credfsctl %s: %s/%s: the token kept changing "
		"while being read\n",
		cmd, tenant, provider);
	return -EAGAIN;
}

static const char *status_str(const struct tok *t, const char *key)
{
	json_t *v = json_object_get(t->status, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* RFC 3339 "2026-11-28T09:00:00Z" -> Unix seconds, or -1. */
static long long unix_time(const char *rfc3339)
{
	struct tm tm = {0};

	if (!rfc3339 || !strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ", &tm))
		return -1;
	return (long long)timegm(&tm);
}

static int print_json(json_t *o)
{
	char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

	if (!text)
		return -ENOMEM;
	printf("%s\n", text);
	explicit_bzero(text, strlen(text));
	free(text);
	return 0;
}

/* The git credential helper protocol: "get" answers; "store" and
 * "erase" have nothing to do (the mount owns the token). */
static int git_helper(const struct tok *t, const char *op)
{
	char line[4096];
	long long exp = unix_time(status_str(t, "expires_at"));

	/* Git writes its request; read it all so it never gets SIGPIPE. */
	while (fgets(line, sizeof(line), stdin) && strcmp(line, "\n"))
		;
	if (strcmp(op, "get"))
		return 0;
	printf("username=x-access-token\npassword=%s\n", t->value.data);
	if (exp > 0)
		printf("password_expiry_utc=%lld\n", exp);
	return 0;
}

int token_main(int argc, char **argv)
{
	const char *fmt, *type;
	json_t *o = NULL;
	struct tok t;
	struct args a;
	int r;

	r = parse_args(
		argc, argv, "token",
		"TENANT PROVIDER [--mount DIR] [--format FORMAT] [get|store|"
		"erase]",
		"Print TENANT's token for PROVIDER, read from the mount "
		"(default " DEFAULT_MOUNT
		") as the\ncalling user. FORMAT: raw (default), "
		"json (token, type, expiry, scopes),\nheader (an Authorization "
		"line), exec-credential (a Kubernetes\nclient.authentication."
		"k8s.io/v1 ExecCredential for kubeconfig exec plugins),\ngit "
		"(the git credential helper protocol: 'get' prints username "
		"and\npassword; store and erase do nothing). There is no aws "
		"format: see\ndocs/helpers.md.\n",
		OPT_TOKEN | OPT_MOUNT | OPT_NO_CONFIG, 2, 3, &a);
	if (r)
		return r == 1 ? 0 : r;
	fmt = a.format ? a.format : "raw";
	if (strcmp(fmt, "raw") && strcmp(fmt, "json") &&
	    strcmp(fmt, "header") && strcmp(fmt, "exec-credential") &&
	    strcmp(fmt, "git")) {
		fprintf(stderr,
			"credfsctl token: --format %s: use raw, json, header, "
			"exec-credential or git%s\n",
			fmt,
			strcmp(fmt, "aws") ? ""
					   : " (an OAuth token is not an AWS "
					     "key; see docs/helpers.md)");
		return 2;
	}
	if (a.n_pos == 3 && strcmp(fmt, "git")) {
		fprintf(stderr, "credfsctl token: '%s' is for --format git\n",
			a.pos[2]);
		return 2;
	}
	if (!strcmp(fmt, "git") && a.n_pos == 3 && strcmp(a.pos[2], "get") &&
	    strcmp(a.pos[2], "store") && strcmp(a.pos[2], "erase")) {
		fprintf(stderr,
			"credfsctl token: git operation '%s': use get, "
			"store or erase\n",
			a.pos[2]);
		return 2;
	}
	if (load("token", a.mount ? a.mount : DEFAULT_MOUNT, a.pos[0], a.pos[1],
		 &t) < 0)
		return 1;
	type = status_str(&t, "token_type");
	if (!type)
		type = "Bearer";
	if (!strcmp(fmt, "raw")) {
		printf("%s\n", t.value.data);
	} else if (!strcmp(fmt, "header")) {
		printf("Authorization: %s %s\n", type, t.value.data);
	} else if (!strcmp(fmt, "git")) {
		r = git_helper(&t, a.n_pos == 3 ? a.pos[2] : "get");
	} else if (!strcmp(fmt, "json")) {
		json_t *sc = json_object_get(t.status, "scopes_granted");

		o = json_pack(
			"{s:s, s:s, s:O?, s:O?, s:O?}", "access_token",
			t.value.data, "token_type", type, "expires_at",
			json_object_get(t.status, "expires_at"), "expires_in",
			json_object_get(t.status, "expires_in"), "scopes", sc);
		r = o ? print_json(o) : -ENOMEM;
	} else {
		o = json_pack("{s:s, s:s, s:{s:s, s:O?}}", "apiVersion",
			      "client.authentication.k8s.io/v1", "kind",
			      "ExecCredential", "status", "token", t.value.data,
			      "expirationTimestamp",
			      json_object_get(t.status, "expires_at"));
		r = o ? print_json(o) : -ENOMEM;
	}
	fflush(stdout);
	json_decref(o);
	json_decref(t.status);
	buf_free(&t.value);
	return r < 0 ? 1 : 0;
}
