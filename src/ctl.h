/*
 * ctl: what credfsctl's subcommands share (ctl.c, ctl_connect.c):
 * argument parsing, opening the config, key and store, and storing a
 * credential and telling the daemon.
 */
#ifndef CREDFS_CTL_H
#define CREDFS_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "store.h"
#include "util.h"

struct config;
struct cred_conf;
struct record;

/* Options a subcommand may take besides --config and --help. */
enum {
	OPT_FROM_FILE = 1 << 0,
	OPT_NEW_KEY = 1 << 1,
	OPT_JSON = 1 << 2,
	OPT_REVOKE = 1 << 3,	  /* --revoke, --force */
	OPT_TIMEOUT = 1 << 4,	  /* --timeout SECONDS */
	OPT_TOKEN = 1 << 5,	  /* --format F; no --config */
	OPT_FROM_CONFIG = 1 << 6, /* --from-config FILE */
	OPT_MOUNT = 1 << 7,	  /* --mount DIR */
	OPT_SYNTAX = 1 << 8,	  /* --syntax */
	OPT_ALL = 1 << 9,	  /* --all */
	OPT_EXEC = 1 << 10,	  /* --env NAME, --signal SIG, --restart */
	OPT_NO_CONFIG = 1 << 11,  /* --config is optional */
	OPT_COMMAND = 1 << 12,	  /* -- COMMAND [ARGS...] ends the line */
};

/* The most a token (or status) file of the mount is read as. */
#define MAX_TOKEN_FILE (64 * 1024)

/* Where credfs.service mounts (docs/systemd.md): --mount's default. */
#define DEFAULT_MOUNT "/run/credfs/mnt"

struct args {
	const char *config;
	const char *pos[3];
	size_t n_pos;
	const char *from_file;
	const char *from_config;
	const char *new_key_file;
	bool json, syntax, all;
	bool revoke, force;
	long timeout_s; /* 0: the command's default */
	const char *mount, *format;
	const char *env, *signal; /* exec */
	bool restart;
	char **command; /* OPT_COMMAND: what follows "--", NULL-ended */
};

/*
 * Parse @argv for subcommand @name: --config FILE, --help, the options in
 * @opts and @min..@max positional arguments. @usage follows "credfsctl
 * NAME" in messages. Returns 0 to go on, 1 after printing help, 2 for a
 * usage error (printed).
 */
int parse_args(int argc, char **argv, const char *name, const char *usage,
	       const char *help, unsigned opts, size_t min, size_t max,
	       struct args *a);

/* The config (with client secrets and keys if @secrets), the master key
 * and the store, or an error printed and *x left empty (safe to close). */
struct ctx {
	struct config *cfg;
	uint8_t *key;
	struct store *st;
};

int open_store(const char *path, enum store_mode mode, bool secrets,
	       struct ctx *x);
void close_store(struct ctx *x);

/* tenant/provider, declared with a refresh_token provider; else NULL with
 * the reason printed for command @cmd. */
const struct cred_conf *refresh_cred(struct ctx *x, const char *cmd,
				     const char *tenant, const char *provider);

/* How long status and list wait for a running daemon's answer. */
#define CTL_STATUS_MS 5000

/* Say why credfsctl @cmd (NULL: none named) could not talk to the daemon
 * on store @dir (control_call()'s -errno @r). */
void daemon_problem(const char *cmd, const char *dir, int r);

/* Ask the daemon on the store to act on @request, printing its answer
 * to @out. Its exit status, or 0 with a note when no daemon runs. */
int tell_daemon(const struct config *cfg, const char *request,
		int64_t timeout_ms, FILE *out);

/* How long the daemon may take to load a record and fetch a token. */
int64_t reload_timeout(const struct cred_conf *cc);

/* Write @rec as @cc's new record (a generation above any before) and tell
 * a running daemon, saying so on @out. 0 or -errno, the reason printed. */
int store_credential(struct ctx *x, const struct cred_conf *cc,
		     struct record *rec, const char *cmd, FILE *out);

/* ctl_store.c */
int init_main(int argc, char **argv);
int add_main(int argc, char **argv);
int remove_main(int argc, char **argv);
int rekey_main(int argc, char **argv);
int migrate_main(int argc, char **argv);

/* ctl_token.c */
int token_main(int argc, char **argv);

/* ctl_connect.c */
int connect_main(int argc, char **argv);
int device_main(int argc, char **argv);
int register_main(int argc, char **argv);
int client_metadata_main(int argc, char **argv);

/* ctl_mcp.c */
int mcp_bridge_main(int argc, char **argv);

/* Where the daemon of @cfg listens for credfsctl @cmd: its store
 * directory, or without a store the abstract socket of mount @mount (NULL:
 * the default) in @name. NULL, said, if @mount cannot be resolved. */
const char *control_where(const struct config *cfg, const char *cmd,
			  const char *mount, char *name, size_t size);

/* The token of @tenant/@provider under @mount (its bytes in @value) and
 * its status.json (in *@status), read as one consistent pair, for
 * credfsctl @cmd; or -errno with the reason printed. */
int token_load(const char *cmd, const char *mount, const char *tenant,
	       const char *provider, struct buf *value, json_t **status);

int exec_main(int argc, char **argv);
int watch_main(int argc, char **argv);

/* Say why credfsctl @cmd could not read @tenant/@provider's files (NULL:
 * the root's) under @mount, failed with the errno @err: a directory the
 * caller cannot enter, no or a dead mount, a hidden tenant, a credential
 * not declared or not connected. */
void mount_problem(const char *cmd, const char *mount, const char *tenant,
		   const char *provider, int err);

#endif
