/*
 * credfsctl: the admin CLI. Subcommands come from a table, as in
 * wireguard-tools' wg.c; each one parses its own arguments.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "config.h"
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

/* credfsctl check --config FILE: validate as the daemon would, mount nothing.
 */
static int check_main(int argc, char **argv)
{
	const char *path = NULL;
	struct config *cfg;
	char err[1024];
	int i;

	for (i = 1; i < argc; i++) {
		if ((!strcmp(argv[i], "--config") || !strcmp(argv[i], "-c")) &&
		    i + 1 < argc) {
			path = argv[++i];
		} else if (!strcmp(argv[i], "--help") ||
			   !strcmp(argv[i], "-h")) {
			printf("Usage: credfsctl check --config FILE\n\n"
			       "Validate FILE (and read its client secret "
			       "files) exactly as credfs would.\n");
			return 0;
		} else {
			fprintf(stderr,
				"credfsctl check: unexpected argument "
				"'%s'\n",
				argv[i]);
			return 2;
		}
	}
	if (!path) {
		fprintf(stderr, "credfsctl check: missing --config FILE\n");
		return 2;
	}
	if (config_load(path, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "credfsctl: %s\n", err);
		return 1;
	}
	printf("%s: ok: %zu providers, %zu tenants, %zu credentials\n", path,
	       cfg->n_providers, cfg->n_tenants, cfg->n_creds);
	config_free(cfg);
	return 0;
}

static const struct command commands[] = {
	{"check", check_main, "validate a configuration file"},
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
