/*
 * credfsctl's commands that write the store: init, add, remove (with
 * --revoke), rekey and migrate; and reading a refresh token from a file
 * or a terminal without echo.
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
#include "sealed.h"
#include "store.h"
#include "util.h"

/* Read the secret input: --from-file, or stdin without echo on a tty. */
static int read_input(const char *from_file, struct buf *in)
{
	struct termios old, quiet;
	bool tty = !from_file && isatty(STDIN_FILENO);
	char chunk[4096];
	ssize_t n;
	int r = 0;

	if (from_file) {
		r = file_read_capped(from_file, RECORD_MAX_BYTES / 2, false,
				     in);
		if (r < 0)
			fprintf(stderr, "credfsctl: %s: %s\n", from_file,
				file_read_error(r, "too large for a record"));
		return r;
	}
	buf_init(in, RECORD_MAX_BYTES / 2);
	if (tty && tcgetattr(STDIN_FILENO, &old) == 0) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
		fprintf(stderr, "Refresh token (or token response JSON), "
				"then Enter: ");
	}
	while (r == 0 && (n = read(STDIN_FILENO, chunk, sizeof(chunk))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		r = n < 0 ? -errno : buf_append(in, chunk, (size_t)n);
		if (tty && memchr(chunk, '\n', n > 0 ? (size_t)n : 0))
			break;
	}
	explicit_bzero(chunk, sizeof(chunk));
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	if (r < 0)
		fprintf(stderr, "credfsctl: reading stdin: %s\n",
			r == -E2BIG ? "too long" : strerror(-r));
	return r;
}

static bool token_chars_ok(const char *s)
{
	for (; *s; s++)
		if (*s <= ' ' || *s > '~')
			return false;
	return true;
}

/*
 * Parse what add was given into @r: a bare refresh token, or a token
 * response (RFC 6749 5.1) with refresh_token and optionally access_token,
 * token_type, expires_in and scope. The message never quotes the input.
 */
static int parse_input(char *text, struct record *r, char *err, size_t n)
{
	json_t *o, *v;
	json_error_t je;
	size_t len;

	while (*text == ' ' || *text == '\t' || *text == '\n' || *text == '\r')
		text++;
	len = strlen(text);
	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' ||
		       text[len - 1] == ' ' || text[len - 1] == '\t'))
		text[--len] = '\0';
	if (!len) {
		snprintf(err, n, "no refresh token given (empty input)");
		return -EINVAL;
	}
	if (text[0] != '{') {
		if (len > OAUTH_MAX_TOKEN_BYTES || !token_chars_ok(text)) {
			snprintf(err, n,
				 "the input is not a refresh token (%zu bytes; "
				 "printable ASCII without spaces expected) "
				 "nor a JSON token response",
				 len);
			return -EINVAL;
		}
		r->refresh_token = strdup(text);
		return r->refresh_token ? 0 : -ENOMEM;
	}
	o = json_loads(text, JSON_REJECT_DUPLICATES, &je);
	if (!o) {
		snprintf(err, n,
			 "the token response is not valid JSON (line %d)",
			 je.line);
		return -EINVAL;
	}
	v = json_object_get(o, "refresh_token");
	if (!json_is_string(v) || !json_string_length(v) ||
	    !token_chars_ok(json_string_value(v))) {
		snprintf(err, n,
			 "the token response has no usable "
			 "\"refresh_token\" string");
		json_decref(o);
		return -EINVAL;
	}
	r->refresh_token = strdup(json_string_value(v));
	v = json_object_get(o, "refresh_token_expires_in");
	if (json_is_number(v) && json_number_value(v) > 0 &&
	    json_number_value(v) < 1e9)
		r->rt_expires_ms =
			time_real_ms() + (int64_t)(json_number_value(v) * 1000);
	v = json_object_get(o, "access_token");
	if (json_is_string(v) && token_chars_ok(json_string_value(v))) {
		json_t *exp = json_object_get(o, "expires_in");
		json_t *type = json_object_get(o, "token_type");
		json_t *scope = json_object_get(o, "scope");

		r->issued_ms = time_real_ms();
		if (json_is_number(exp) && json_number_value(exp) > 0 &&
		    json_number_value(exp) < 1e9) {
			r->access_token = strdup(json_string_value(v));
			r->expires_ms =
				r->issued_ms +
				(int64_t)(json_number_value(exp) * 1000);
		}
		r->token_type =
			strdup(json_is_string(type) ? json_string_value(type)
						    : "Bearer");
		if (json_is_string(scope))
			r->scope = strdup(json_string_value(scope));
	}
	json_decref(o);
	return r->refresh_token ? 0 : -ENOMEM;
}

/* credfsctl init: the store directory and, if missing, a new master key. */
int init_main(int argc, char **argv)
{
	struct store *st = NULL;
	struct config *cfg = NULL;
	uint8_t *key = NULL;
	const char *path;
	char err[1024];
	struct args a;
	int r;

	r = parse_args(argc, argv, "init", "--config FILE",
		       "Create the store directory named by store.dir (0700) "
		       "and, if store.key_file\nis set and missing, a new "
		       "random 32-byte master key there (0600). Running it\n"
		       "again changes nothing. The key is never printed.\n",
		       0, 0, 0, &a);
	if (r)
		return r == 1 ? 0 : r;
	path = a.config;
	umask(077);
	r = config_read(path, &cfg, err, sizeof(err));
	if (r == 0 && !cfg->store_dir) {
		snprintf(err, sizeof(err),
			 "%s: store.dir: missing (no store "
			 "to initialise)",
			 path);
		r = -EINVAL;
	}
	if (r == 0 && cfg->store_key_file) {
		r = key_create(cfg->store_key_file, err, sizeof(err));
		if (r == 0)
			printf("created master key %s\n", cfg->store_key_file);
		if (r == -EEXIST)
			r = 0;
	}
	if (r == 0)
		r = key_load(cfg->store_key_file, &key, err, sizeof(err));
	if (r == 0)
		r = store_open(cfg->store_dir, cfg->store_dsn, key,
			       STORE_CREATE, &st, err, sizeof(err));
	if (r == 0)
		printf("store %s is ready\n",
		       cfg->store_dsn ? "(PostgreSQL)" : cfg->store_dir);
	else
		fprintf(stderr, "credfsctl: %s\n", err);
	store_close(st);
	key_free(key);
	config_free(cfg);
	return r < 0 ? 1 : 0;
}

int store_credential(struct ctx *x, const struct cred_conf *cc,
		     struct record *rec, const char *cmd, FILE *out)
{
	char req[CONTROL_MAX_REQUEST];
	uint64_t have = 0, expect;
	int r = 0, tries;

	/* A new grant keeps the client registered for the credential. */
	if (!rec->client.id && cc->provider->discover_resource) {
		struct record old;

		if (store_load(x->st, cc->tenant, cc->provider->name, 0,
			       &old) == 0) {
			rec->client = old.client;
			memset(&old.client, 0, sizeof(old.client));
			record_clear(&old);
		}
	}
	for (tries = 0; tries < 5; tries++) {
		/* A generation above anything before, even across a remove:
		 * the record's old one plus one, or the time in ms. */
		r = store_generation(x->st, cc->tenant, cc->provider->name,
				     &have);
		expect = r == 0 ? have : r == -ENOENT ? 0 : STORE_ANY_GEN;
		if (r != 0)
			have = 0;
		rec->generation = have + 1 > (uint64_t)time_real_ms()
					  ? have + 1
					  : (uint64_t)time_real_ms();
		r = store_save(x->st, cc->tenant, cc->provider->name, rec,
			       expect);
		if (r != -ESTALE)
			break; /* else the daemon wrote meanwhile: again */
	}
	if (r < 0) {
		fprintf(stderr, "credfsctl %s: cannot write the record: %s\n",
			cmd, strerror(-r));
		return r;
	}
	fprintf(out, "stored %s/%s (generation %llu)\n", cc->tenant,
		cc->provider->name, (unsigned long long)rec->generation);
	snprintf(req, sizeof(req), "reload %s %s", cc->tenant,
		 cc->provider->name);
	return tell_daemon(x->cfg, req, reload_timeout(cc), out) ? -EIO : 0;
}

/* credfsctl add TENANT PROVIDER */
int add_main(int argc, char **argv)
{
	const struct cred_conf *cc;
	struct record rec = {0};
	struct args a;
	struct ctx x;
	struct buf in = {0};
	char err[512];
	int r;

	r = parse_args(argc, argv, "add",
		       "TENANT PROVIDER --config FILE "
		       "[--from-file FILE]",
		       "Store the refresh token of TENANT's credential for "
		       "PROVIDER, encrypted. It is\nread from stdin (without "
		       "echo on a terminal) or from --from-file, never from\n"
		       "the command line: either the bare refresh token or a "
		       "whole token response\n(JSON with refresh_token and, "
		       "optionally, access_token, expires_in, scope).\n"
		       "The credential must be declared in the configuration "
		       "with a provider whose\ngrant is refresh_token. A "
		       "running daemon serves it at once.\n",
		       OPT_FROM_FILE, 2, 2, &a);
	if (r)
		return r == 1 ? 0 : r;
	if (open_store(a.config, STORE_ADMIN, false, &x) < 0)
		return 1;
	r = -EINVAL;
	cc = refresh_cred(&x, "add", a.pos[0], a.pos[1]);
	if (!cc)
		goto out;
	r = read_input(a.from_file, &in);
	if (r < 0)
		goto out; /* read_input said why */
	if (in.data && memchr(in.data, '\0', in.len)) {
		/* A C string would end there, and store half a token. */
		fprintf(stderr, "credfsctl add: the input holds a NUL byte: "
				"give the refresh token (or token response) "
				"as text\n");
		r = -EINVAL;
		goto out;
	}
	r = parse_input(in.data ? in.data : (char *)"", &rec, err, sizeof(err));
	if (r == -EINVAL)
		fprintf(stderr, "credfsctl add: %s\n", err);
	/* A refresh token the profile knows the life of, from now. */
	if (r == 0 && !rec.rt_expires_ms && cc->provider->rt_lifetime_ms)
		rec.rt_expires_ms =
			time_real_ms() + cc->provider->rt_lifetime_ms;
	if (r == 0)
		r = store_credential(&x, cc, &rec, "add", stdout);
out:
	record_clear(&rec);
	buf_free(&in);
	close_store(&x);
	return r < 0 ? 1 : 0;
}

/*
 * remove --revoke: revoke the stored refresh token, then the access token,
 * at the provider (RFC 7009). 0 to go on deleting; -errno (printed) when
 * the provider did not confirm and @force is not set.
 */
static int revoke_record(struct ctx *x, const char *tenant,
			 const char *provider, bool force)
{
	const struct cred_conf *cc = config_find_cred(x->cfg, tenant, provider);
	struct record rec = {0};
	const char *why = NULL;
	char msg[512];
	int r = -EINVAL;

	if (!cc)
		why = "it is not in the configuration, so its provider is "
		      "unknown";
	else if (!cc->provider->revocation_url)
		why = "its provider has no revocation_url";
	if (!why) {
		r = store_load(x->st, tenant, provider, 0, &rec);
		if (r == -ENOENT)
			why = "no record in the store";
		else if (r < 0)
			why = "the record does not open";
		else if (rec.revoked || !rec.refresh_token) {
			/* The provider refused it already, or it was
			 * registered and never connected. */
			record_clear(&rec);
			return 0;
		}
	}
	if (!why) {
		/* Every answer is printed; nothing is deleted unless every
		 * revocation was confirmed. */
		r = revoke_token(cc->provider, &rec.client, rec.refresh_token,
				 "refresh_token", msg, sizeof(msg));
		printf("%s/%s: %s\n", tenant, provider, msg);
		if (r == 0 && rec.access_token && rec.access_token[0]) {
			r = revoke_token(cc->provider, &rec.client,
					 rec.access_token, "access_token", msg,
					 sizeof(msg));
			printf("%s/%s: %s\n", tenant, provider, msg);
		}
		if (r < 0)
			why = "the provider did not confirm every revocation";
	}
	record_clear(&rec);
	if (!why)
		return 0;
	if (force) {
		fprintf(stderr,
			"credfsctl remove: %s/%s: not revoked (%s); deleting "
			"it anyway (--force)\n",
			tenant, provider, why);
		return 0;
	}
	fprintf(stderr,
		"credfsctl remove: %s/%s: not revoked (%s); nothing deleted "
		"(--force deletes it anyway)\n",
		tenant, provider, why);
	return r < 0 ? r : -EINVAL;
}

/* credfsctl remove TENANT PROVIDER [--revoke [--force]] */
int remove_main(int argc, char **argv)
{
	char req[CONTROL_MAX_REQUEST];
	const struct cred_conf *cc;
	struct args a;
	struct ctx x;
	int r;

	r = parse_args(argc, argv, "remove",
		       "TENANT PROVIDER --config FILE [--revoke [--force]]",
		       "Delete the stored record of TENANT's credential for "
		       "PROVIDER. A running\ndaemon stops serving it: its "
		       "directory disappears; files already open keep\n"
		       "their bytes until closed. With --revoke, first revoke "
		       "the refresh token and\nthe access token at the "
		       "provider's revocation_url (RFC 7009) and report its\n"
		       "answer; if it does not confirm, nothing is deleted "
		       "unless --force.\n",
		       OPT_REVOKE, 2, 2, &a);
	if (r)
		return r == 1 ? 0 : r;
	if (open_store(a.config, STORE_ADMIN, a.revoke, &x) < 0)
		return 1;
	r = a.revoke ? revoke_record(&x, a.pos[0], a.pos[1], a.force) : 0;
	if (r == 0) {
		r = store_remove(x.st, a.pos[0], a.pos[1]);
		if (r == -ENOENT || r == -EINVAL)
			fprintf(stderr,
				"credfsctl remove: %s/%s: no record in the "
				"store\n",
				a.pos[0], a.pos[1]);
		else if (r < 0)
			fprintf(stderr, "credfsctl remove: %s/%s: %s\n",
				a.pos[0], a.pos[1], strerror(-r));
	}
	if (r == 0) {
		printf("removed %s/%s\n", a.pos[0], a.pos[1]);
		cc = config_find_cred(x.cfg, a.pos[0], a.pos[1]);
		snprintf(req, sizeof(req), "reload %s %s", a.pos[0], a.pos[1]);
		if (cc && tell_daemon(x.cfg, req, reload_timeout(cc), stdout))
			r = -EIO;
	}
	close_store(&x);
	return r < 0 ? 1 : 0;
}

/* credfsctl rekey --new-key-file FILE */
int rekey_main(int argc, char **argv)
{
	const char *failed = NULL;
	uint8_t *new_key = NULL;
	char err[1024];
	struct args a;
	struct ctx x;
	size_t n;
	int r;

	r = parse_args(argc, argv, "rekey", "--config FILE --new-key-file FILE",
		       "Re-encrypt every record under the master key in "
		       "--new-key-file (created,\n0600, if missing). The "
		       "daemon must be stopped. Crash-safe: until the new\n"
		       "key check is in place the old key opens the whole "
		       "store, after it the new\none does. Then point "
		       "store.key_file (or the systemd credential) at the\n"
		       "new key.\n",
		       OPT_NEW_KEY, 0, 0, &a);
	if (r)
		return r == 1 ? 0 : r;
	umask(077);
	if (open_store(a.config, STORE_DAEMON, false, &x) < 0)
		return 1;
	r = key_create(a.new_key_file, err, sizeof(err));
	if (r == 0)
		printf("created master key %s\n", a.new_key_file);
	if (r == -EEXIST)
		r = 0;
	if (r == 0)
		r = key_load_file(a.new_key_file, &new_key, err, sizeof(err));
	if (r == 0)
		r = store_rekey(x.st, new_key, &n, err, sizeof(err));
	if (r == 0)
		printf("re-encrypted %zu records under %s; set store.key_file "
		       "to it: the old key no longer opens the store\n",
		       n, a.new_key_file);
	else
		fprintf(stderr, "credfsctl rekey: %s\n", err);
	/* What a cold start takes from the last daemon, after the records:
	 * a file left under the old key is only not used. */
	if (r == 0 && x.cfg->store_dir &&
	    sealed_rekey(x.cfg->store_dir, x.key, new_key, &failed) < 0)
		fprintf(stderr,
			"credfsctl rekey: %s/%s was not sealed again (it "
			"does not open): the next start does without it\n",
			x.cfg->store_dir, failed);
	close_store(&x);
	key_free(new_key);
	return r < 0 ? 1 : 0;
}

struct migration {
	struct ctx *from, *to;
	size_t copied, kept;
	int err;
	char what[160];
};

/* Copy one record: opened with the source's key, sealed with the
 * destination's; a destination record as new or newer is kept. */
static int migrate_one(void *arg, const char *tenant, const char *provider)
{
	struct migration *m = arg;
	struct record r;
	int ret;

	ret = store_load(m->from->st, tenant, provider, 0, &r);
	if (ret == 0) {
		ret = store_save(m->to->st, tenant, provider, &r,
				 STORE_ANY_GEN);
		record_clear(&r);
	}
	if (ret == -ESTALE) {
		m->kept++;
		return 0;
	}
	if (ret < 0) {
		m->err = ret;
		snprintf(m->what, sizeof(m->what), "%s/%s: %s", tenant,
			 provider, strerror(-ret));
		return 1;
	}
	m->copied++;
	return 0;
}

/* credfsctl migrate --from-config OLD --config NEW */
int migrate_main(int argc, char **argv)
{
	struct ctx from, to;
	struct migration m = {&from, &to, 0, 0, 0, ""};
	struct args a;
	int r;

	r = parse_args(argc, argv, "migrate", "--from-config OLD --config NEW",
		       "Copy every record of OLD's store into NEW's store, "
		       "for example a file store\n"
		       "into PostgreSQL. Each record is opened with OLD's "
		       "master key and sealed with\n"
		       "NEW's (they may differ), keeping its generation; a "
		       "record NEW already holds\n"
		       "at the same or a newer generation is kept. No daemon "
		       "may use either store\n"
		       "meanwhile. Run credfsctl init on NEW first; OLD is "
		       "left as it was.\n",
		       OPT_FROM_CONFIG, 0, 0, &a);
	if (r)
		return r == 1 ? 0 : r;
	if (open_store(a.from_config, STORE_DAEMON, false, &from) < 0)
		return 1;
	if (open_store(a.config, STORE_DAEMON, false, &to) < 0) {
		close_store(&from);
		return 1;
	}
	r = store_foreach(from.st, migrate_one, &m);
	if (r < 0 && !m.err)
		snprintf(m.what, sizeof(m.what), "cannot list %s: %s",
			 a.from_config, strerror(-r));
	if (r < 0 || m.err)
		fprintf(stderr, "credfsctl migrate: %s (%zu copied so far)\n",
			m.what, m.copied);
	else
		printf("copied %zu records, kept %zu newer ones already "
		       "there\n",
		       m.copied, m.kept);
	close_store(&to);
	close_store(&from);
	return r < 0 || m.err ? 1 : 0;
}
