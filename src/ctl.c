/*
 * credfsctl: the admin CLI. Subcommands come from a table, as in
 * wireguard-tools' wg.c; each one parses its own arguments.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <curl/curl.h>

#include "config.h"
#include "key.h"
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
 * The arguments every subcommand takes: --config FILE and --help. Returns
 * 0 to go on, 1 after printing help, 2 for a usage error.
 */
static int common_args(int argc, char **argv, const char *name,
		       const char *help, const char **config)
{
	int i;

	*config = NULL;
	for (i = 1; i < argc; i++) {
		if ((!strcmp(argv[i], "--config") || !strcmp(argv[i], "-c")) &&
		    i + 1 < argc) {
			*config = argv[++i];
		} else if (!strcmp(argv[i], "--help") ||
			   !strcmp(argv[i], "-h")) {
			printf("Usage: credfsctl %s --config FILE\n\n%s", name,
			       help);
			return 1;
		} else {
			fprintf(stderr,
				"credfsctl %s: unexpected argument "
				"'%s'\n",
				name, argv[i]);
			return 2;
		}
	}
	if (!*config) {
		fprintf(stderr, "credfsctl %s: missing --config FILE\n", name);
		return 2;
	}
	return 0;
}

/* credfsctl check: validate as the daemon would, mount nothing. */
static int check_main(int argc, char **argv)
{
	const char *path;
	struct config *cfg;
	char err[1024];
	int r;

	r = common_args(argc, argv, "check",
			"Validate FILE (and read its client secret files) "
			"exactly as credfs would.\n",
			&path);
	if (r)
		return r == 1 ? 0 : r;
	if (config_load(path, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "credfsctl: %s\n", err);
		return 1;
	}
	printf("%s: ok: %zu providers, %zu tenants, %zu credentials\n", path,
	       cfg->n_providers, cfg->n_tenants, cfg->n_creds);
	config_free(cfg);
	return 0;
}

/* credfsctl init: the store directory and, if missing, a new master key. */
static int init_main(int argc, char **argv)
{
	struct store *st = NULL;
	struct config *cfg = NULL;
	uint8_t *key = NULL;
	const char *path;
	char err[1024];
	int r;

	r = common_args(argc, argv, "init",
			"Create the store directory named by store.dir (0700) "
			"and, if store.key_file\nis set and missing, a new "
			"random 32-byte master key there (0600). Running it\n"
			"again changes nothing. The key is never printed.\n",
			&path);
	if (r)
		return r == 1 ? 0 : r;
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
		r = store_open_dir(cfg->store_dir, key, STORE_CREATE, &st, err,
				   sizeof(err));
	if (r == 0)
		printf("store %s is ready\n", cfg->store_dir);
	else
		fprintf(stderr, "credfsctl: %s\n", err);
	store_close(st);
	key_free(key);
	config_free(cfg);
	return r < 0 ? 1 : 0;
}

static const struct command commands[] = {
	{"check", check_main, "validate a configuration file"},
	{"init", init_main, "create the store directory and its master key"},
	{"help", help_main, "show this help"},
	{"version", version_main, "show the version"},
};

static int help_main(int argc, char **argv)
{
	size_t i;

	printf("Usage: credfsctl COMMAND [ARGS...]\n\nCommands:\n");
	for (i = 0; i < ARRAY_SIZE(commands); i++)
		printf("  %-10s %s\n", commands[i].name, commands[i].summary);
	printf("\nOptions: -h/--help, -V/--version. "
	       "'credfsctl COMMAND --help' shows a command's arguments.\n");
	return 0;
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "help";
	size_t i;
	int r;

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
