/*
 * credfsctl exec and watch: for programs that read a token once, from the
 * environment, and for hooks that must run after each rotation. Both read
 * the mount as the calling user (readers and audit apply, as for token)
 * and learn of a rotation from the credential's status.json fingerprint,
 * looked at every second: the daemon rotates well ahead of expiry, so a
 * second is nothing against a token's life.
 *
 * exec is a small process supervisor in the manner of Vault Agent's: the
 * child gets the token in its environment; when the token rotates it is
 * restarted (the default, --restart) or sent a signal (--signal SIG).
 * Signals sent to credfsctl go to the child; its exit is credfsctl's.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "util.h"

#define POLL_MS 1000
#define STOP_GRACE_MS 10000
#define DEFAULT_ENV "ACCESS_TOKEN"

/* The signals credfsctl waits for, all blocked and taken synchronously. */
static const int waited[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP,
			     SIGQUIT, SIGUSR1, SIGUSR2};

struct super {
	const char *cmd; /* "exec" or "watch" */
	const char *mount, *tenant, *provider;
	char fp[9];   /* the fingerprint last seen */
	sigset_t set; /* waited[] */
	sigset_t old; /* the mask to give children */
};

static void block_signals(struct super *s)
{
	size_t i;

	sigemptyset(&s->set);
	for (i = 0; i < ARRAY_SIZE(waited); i++)
		sigaddset(&s->set, waited[i]);
	sigprocmask(SIG_BLOCK, &s->set, &s->old);
}

/* "HUP", "SIGHUP" or a number; 0 when it names no signal. */
static int signal_number(const char *name)
{
	static const struct {
		const char *name;
		int sig;
	} names[] = {
		{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT},
		{"TERM", SIGTERM}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2},
		{"KILL", SIGKILL}, {"ALRM", SIGALRM}, {"WINCH", SIGWINCH},
	};
	char *end;
	long n;
	size_t i;

	if (!strncmp(name, "SIG", 3))
		name += 3;
	for (i = 0; i < ARRAY_SIZE(names); i++)
		if (!strcmp(name, names[i].name))
			return names[i].sig;
	n = strtol(name, &end, 10);
	return *name && !*end && n > 0 && n < NSIG ? (int)n : 0;
}

/* The current token (in @value, if not NULL) and its fingerprint. */
static int current(struct super *s, struct buf *value, char fp[9])
{
	struct buf v;
	json_t *st, *f;
	int r;

	r = token_load(s->cmd, s->mount, s->tenant, s->provider, &v, &st);
	if (r < 0)
		return r;
	f = json_object_get(st, "fingerprint");
	snprintf(fp, 9, "%s", json_is_string(f) ? json_string_value(f) : "");
	json_decref(st);
	if (value)
		*value = v;
	else
		buf_free(&v);
	return 0;
}

/* Wait up to @ms for one of the signals; 0 on timeout. */
static int wait_signal(struct super *s, int64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000,
			      .tv_nsec = (ms % 1000) * 1000000};
	int sig = sigtimedwait(&s->set, NULL, &ts);

	return sig < 0 ? 0 : sig;
}

/* Start @argv with the signal mask credfsctl had, and @env=@token in its
 * environment (when @env is not NULL). The child's pid, or -1. */
static pid_t start(struct super *s, char **argv, const char *env,
		   const struct buf *token)
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	sigprocmask(SIG_SETMASK, &s->old, NULL);
	if (env && setenv(env, token->data ? token->data : "", 1) < 0)
		_exit(127);
	execvp(argv[0], argv);
	fprintf(stderr, "credfsctl %s: cannot run %s: %s\n", s->cmd, argv[0],
		strerror(errno));
	_exit(127);
}

/* The exit status a shell would report for wait status @ws. */
static int exit_code(int ws)
{
	return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

/* Reap @pid if it ended: true with its wait status in *@ws. */
static bool ended(pid_t pid, int *ws)
{
	return waitpid(pid, ws, WNOHANG) == pid;
}

/* Stop @pid (SIGTERM, then SIGKILL after STOP_GRACE_MS) and reap it. */
static void stop_child(struct super *s, pid_t pid)
{
	int64_t deadline = time_mono_ms() + STOP_GRACE_MS;
	int ws;

	kill(pid, SIGTERM);
	while (!ended(pid, &ws)) {
		int64_t left = deadline - time_mono_ms();

		if (left <= 0) {
			kill(pid, SIGKILL);
			waitpid(pid, &ws, 0);
			return;
		}
		wait_signal(s, left < 100 ? left : 100);
	}
}

/* Whether the token rotated since the fingerprint in @s, as the
 * credential's status.json says (read quietly: one that cannot be read
 * now is looked at again a second later). */
static bool rotated(struct super *s)
{
	char path[4096];
	const char *fp;
	struct buf b;
	json_t *st;
	bool news;

	snprintf(path, sizeof(path), "%s/tenants/%s/%s/status.json", s->mount,
		 s->tenant, s->provider);
	if (file_read_capped(path, 1024 * 1024, false, &b) < 0)
		return false;
	st = json_loadb(b.data, b.len, 0, NULL);
	buf_free(&b);
	fp = json_string_value(json_object_get(st, "fingerprint"));
	news = fp && fp[0] && strlen(fp) < sizeof(s->fp) && strcmp(fp, s->fp);
	if (news)
		snprintf(s->fp, sizeof(s->fp), "%s", fp);
	json_decref(st);
	return news;
}

static int usage_signal(const char *cmd, const char *name)
{
	fprintf(stderr,
		"credfsctl %s: --signal %s: name a signal (HUP, TERM, USR1, "
		"USR2, INT, QUIT, ... or its number)\n",
		cmd, name);
	return 2;
}

int exec_main(int argc, char **argv)
{
	struct super s = {.cmd = "exec"};
	const char *env;
	struct buf token;
	struct args a;
	int sig = 0, ws, r;
	pid_t pid;

	r = parse_args(
		argc, argv, "exec",
		"TENANT PROVIDER [--mount DIR] [--env NAME] [--signal SIG | "
		"--restart] -- COMMAND [ARGS...]",
		"Run COMMAND with TENANT's token for PROVIDER, read from the "
		"mount (default\n" DEFAULT_MOUNT
		") as the calling user, in its environment as NAME "
		"(default " DEFAULT_ENV
		").\nWhen the token rotates, restart COMMAND "
		"(SIGTERM, SIGKILL after 10 s; the\ndefault, --restart) or "
		"send it SIG (--signal HUP). Signals sent to credfsctl\ngo to "
		"COMMAND; credfsctl exits with COMMAND's status.\n",
		OPT_MOUNT | OPT_EXEC | OPT_COMMAND | OPT_NO_CONFIG, 2, 2, &a);
	if (r)
		return r == 1 ? 0 : r;
	if (a.signal && a.restart) {
		fprintf(stderr, "credfsctl exec: --signal or --restart, not "
				"both\n");
		return 2;
	}
	if (a.signal && !(sig = signal_number(a.signal)))
		return usage_signal("exec", a.signal);
	env = a.env ? a.env : DEFAULT_ENV;
	if (!*env || strchr(env, '=')) {
		fprintf(stderr,
			"credfsctl exec: --env %s: not a variable "
			"name\n",
			env);
		return 2;
	}
	s.mount = a.mount ? a.mount : DEFAULT_MOUNT;
	s.tenant = a.pos[0];
	s.provider = a.pos[1];
	block_signals(&s);
	if (current(&s, &token, s.fp) < 0)
		return 1;
	pid = start(&s, a.command, env, &token);
	buf_free(&token);
	if (pid < 0) {
		fprintf(stderr, "credfsctl exec: cannot fork: %s\n",
			strerror(errno));
		return 1;
	}
	for (;;) {
		int got = wait_signal(&s, POLL_MS);

		if (ended(pid, &ws))
			return exit_code(ws);
		if (got && got != SIGCHLD)
			kill(pid, got); /* passed on: the child decides */
		if (got || !rotated(&s))
			continue;
		if (sig) {
			kill(pid, sig);
			continue;
		}
		if (current(&s, &token, s.fp) < 0)
			continue;
		stop_child(&s, pid);
		pid = start(&s, a.command, env, &token);
		buf_free(&token);
		if (pid < 0)
			return 1;
	}
}

int watch_main(int argc, char **argv)
{
	struct super s = {.cmd = "watch"};
	struct args a;
	int got, ws, r;
	pid_t pid;

	r = parse_args(argc, argv, "watch",
		       "TENANT PROVIDER [--mount DIR] -- COMMAND [ARGS...]",
		       "Run COMMAND after each rotation of TENANT's token for "
		       "PROVIDER (read from\nthe mount, default " DEFAULT_MOUNT
		       ", as the calling user), one run at a time,\nwith "
		       "CREDFS_TENANT, CREDFS_PROVIDER and CREDFS_FINGERPRINT "
		       "in its environment\n(not the token: COMMAND reads it "
		       "from the mount). Runs until SIGTERM or\nSIGINT; a "
		       "failing COMMAND is reported and the watch goes on.\n",
		       OPT_MOUNT | OPT_COMMAND | OPT_NO_CONFIG, 2, 2, &a);
	if (r)
		return r == 1 ? 0 : r;
	s.mount = a.mount ? a.mount : DEFAULT_MOUNT;
	s.tenant = a.pos[0];
	s.provider = a.pos[1];
	block_signals(&s);
	if (current(&s, NULL, s.fp) < 0)
		return 1;
	setenv("CREDFS_TENANT", s.tenant, 1);
	setenv("CREDFS_PROVIDER", s.provider, 1);
	for (;;) {
		got = wait_signal(&s, POLL_MS);
		if (got == SIGTERM || got == SIGINT || got == SIGQUIT)
			return 0;
		if (got || !rotated(&s))
			continue;
		setenv("CREDFS_FINGERPRINT", s.fp, 1);
		pid = start(&s, a.command, NULL, NULL);
		if (pid < 0)
			return 1;
		/* One at a time; a stop request ends the run too. */
		while (!ended(pid, &ws)) {
			got = wait_signal(&s, POLL_MS);
			if (got == SIGTERM || got == SIGINT || got == SIGQUIT) {
				stop_child(&s, pid);
				return 0;
			}
		}
		if (!WIFEXITED(ws) || WEXITSTATUS(ws))
			fprintf(stderr,
				"credfsctl watch: %s/%s: %s exited with "
				"status %d after rotation %s\n",
				s.tenant, s.provider, a.command[0],
				exit_code(ws), s.fp);
	}
}
