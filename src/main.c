/*
 * credfs: the daemon. Loads the config, mounts the tree, runs the refresher
 * and the FUSE session loop, and unmounts cleanly on SIGINT or SIGTERM.
 * Without -f it forks and returns only once the mount is ready.
 */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>
#include <fuse_lowlevel.h>
#include <jansson.h>

#include "admin.h"
#include "audit.h"
#include "config.h"
#include "control.h"
#include "cred.h"
#include "credstore.h"
#include "fs.h"
#include "discovery.h"
#include "handoff.h"
#include "key.h"
#include "log.h"
#include "metrics_http.h"
#include "notify.h"
#include "oauth.h"
#include "refresher.h"
#include "store.h"
#include "util.h"
#include "watchdog.h"

#define MAX_FUSE_THREADS 64

/* What an upgrade starts again: this binary's path, arguments and
 * directory as they were at the start. */
static char self_exe[4096];
static int mountpoint_lock = -1; /* see fresh_mountpoint() */

/* The mount is there (or never will be from this process): from now on
 * a second daemon finds the mount, not the lock. */
static void release_mountpoint_lock(void)
{
	if (mountpoint_lock >= 0)
		close(mountpoint_lock);
	mountpoint_lock = -1;
}
static char **self_argv;
static char *self_cwd;

struct opts {
	bool foreground;
	bool debug;
	bool cache_kernel; /* -o cache=kernel */
	const char *config;
	const char *pid_file;
	bool shared_parent; /* --shared-parent */
	const char *mountpoint;
	const char *source; /* credfs SOURCE MOUNTPOINT (mount.fuse3) */
	char *fuse_opts; /* user's -o options, comma-joined */
	char *fsname;	 /* -o fsname=, else SOURCE, else "credfs" */
	char *owned[2];	 /* -o config= and pid_file= values */
};

static const char usage_text[] =
	"Usage: credfs [-f] [-d] [-o OPT[,OPT...]] [--pid-file FILE]\n"
	"              [--shared-parent] --config FILE [SOURCE] MOUNTPOINT\n"
	"       credfs SOURCE MOUNTPOINT -o config=FILE[,OPT...]   "
	"(mount -t fuse.credfs)\n"
	"\n"
	"Serve always-fresh OAuth access tokens as files under MOUNTPOINT.\n"
	"\n"
	"  -c, --config FILE    configuration (JSON), see docs/config.md\n"
	"  -f, --foreground     stay in the foreground (for systemd)\n"
	"  -d, --debug          debug logging and FUSE request tracing\n"
	"  -o OPT[,OPT...]      mount options: cache=audited (default) or\n"
	"                       cache=kernel (see docs/security.md),\n"
	"                       config=FILE, pid_file=FILE, shared_parent,\n"
	"                       fsname=NAME (the source in /proc/mounts;\n"
	"                       default SOURCE, or credfs), and extra FUSE\n"
	"                       options\n"
	"      --pid-file FILE  write the daemon's PID to FILE\n"
	"      --shared-parent  make MOUNTPOINT's parent a shared mount, so\n"
	"                       containers that bind it (rslave) see the\n"
	"                       mount again after a restart "
	"(docs/containers.md)\n"
	"  -h, --help           show this help\n"
	"  -V, --version        show the version\n"
	"\n"
	"Without -f, credfs returns once the mount is ready and keeps running\n"
	"in the background. SIGINT or SIGTERM unmount and stop it; SIGHUP\n"
	"reloads the configuration in place; SIGUSR2 upgrades in place.\n";

static int append_opt(char **dst, const char *o)
{
	char *n;

	if (asprintf(&n, "%s%s%s", *dst ? *dst : "", *dst ? "," : "", o) < 0)
		return -ENOMEM;
	free(*dst);
	*dst = n;
	return 0;
}

/* Keep a copy of the value of -o NAME=VALUE in *@slot (the last wins). */
static int take_value(char **slot, const char *opt)
{
	const char *v = strchr(opt, '=') + 1;

	if (!*v) {
		fprintf(stderr, "credfs: -o %.*s: needs a value\n",
			(int)(v - opt), opt);
		return -1;
	}
	free(*slot);
	*slot = strdup(v);
	return *slot ? 0 : -1;
}

/*
 * Take credfs's own options out of a -o list; pass the rest to FUSE. The
 * mount.fuse3 convention (fstab, mount -t fuse.credfs) passes everything
 * as -o, so the long options have -o names too.
 */
static int take_opts(struct opts *o, const char *list)
{
	char *copy = strdup(list), *opt, *save = NULL;
	int r = 0;

	if (!copy)
		return -1;
	for (opt = strtok_r(copy, ",", &save); opt && r == 0;
	     opt = strtok_r(NULL, ",", &save)) {
		if (!strcmp(opt, "cache=kernel"))
			o->cache_kernel = true;
		else if (!strcmp(opt, "cache=audited"))
			o->cache_kernel = false;
		else if (!strncmp(opt, "cache=", 6)) {
			fprintf(stderr,
				"credfs: -o %s: use cache=audited or "
				"cache=kernel\n",
				opt);
			r = -1;
		} else if (!strncmp(opt, "config=", 7)) {
			r = take_value(&o->owned[0], opt);
			o->config = o->owned[0];
		} else if (!strncmp(opt, "pid_file=", 9)) {
			r = take_value(&o->owned[1], opt);
			o->pid_file = o->owned[1];
		} else if (!strncmp(opt, "fsname=", 7)) {
			r = take_value(&o->fsname, opt);
		} else if (!strcmp(opt, "shared_parent")) {
			o->shared_parent = true;
		} else if (!strcmp(opt, "defaults") || !strncmp(opt, "x-", 2)) {
			/* fstab's placeholders and userspace-only options
			 * (x-systemd.*): not for the kernel. */
		} else if (append_opt(&o->fuse_opts, opt) < 0)
			r = -1;
	}
	free(copy);
	return r;
}

static void opts_free(struct opts *o)
{
	free(o->fuse_opts);
	free(o->fsname);
	free(o->owned[0]);
	free(o->owned[1]);
}

/* 0 to go on, 1 for a clean exit (help, version), -1 for a usage error. */
static int parse_args(int argc, char **argv, struct opts *o)
{
	enum { OPT_PID_FILE = 256, OPT_SHARED_PARENT };
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"foreground", no_argument, NULL, 'f'},
		{"debug", no_argument, NULL, 'd'},
		{"pid-file", required_argument, NULL, OPT_PID_FILE},
		{"shared-parent", no_argument, NULL, OPT_SHARED_PARENT},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int ch;

	while ((ch = getopt_long(argc, argv, "c:fdo:hV", longopts, NULL)) !=
	       -1) {
		switch (ch) {
		case 'c': o->config = optarg; break;
		case 'f': o->foreground = true; break;
		case 'd': o->debug = true; break;
		case OPT_PID_FILE: o->pid_file = optarg; break;
		case OPT_SHARED_PARENT: o->shared_parent = true; break;
		case 'o':
			if (take_opts(o, optarg) < 0)
				return -1;
			break;
		case 'h': fputs(usage_text, stdout); return 1;
		case 'V': printf("credfs %s\n", CREDFS_VERSION); return 1;
		default: fputs(usage_text, stderr); return -1;
		}
	}
	if (optind >= argc || argc - optind > 2) {
		fprintf(stderr, "credfs: %s\n",
			optind < argc ? "too many arguments"
				      : "missing MOUNTPOINT");
		fputs(usage_text, stderr);
		return -1;
	}
	if (argc - optind == 2)
		o->source = argv[optind++];
	o->mountpoint = argv[optind];
	if (!o->config) {
		fprintf(stderr, "credfs: missing --config FILE (or -o "
				"config=FILE)\n");
		return -1;
	}
	if (!o->fsname && o->source && !(o->fsname = strdup(o->source)))
		return -1;
	if (o->fsname && (!o->fsname[0] || strpbrk(o->fsname, ", \t\n\\"))) {
		fprintf(stderr,
			"credfs: fsname '%s': use a name without commas, "
			"spaces or backslashes\n",
			o->fsname);
		return -1;
	}
	return 0;
}

/*
 * Make @dir a shared mount point (a bind mount of itself if it is not a
 * mount point yet), so mounts below it propagate to the slave copies that
 * containers hold. 0 or -errno.
 */
static int make_shared(const char *dir)
{
	char line[4096], *mp, *rest;
	bool mounted = false, shared = false;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	/* "id parent maj:min root mountpoint options optional... - ..." */
	while (f && fgets(line, sizeof(line), f)) {
		strtok_r(line, " ", &rest);
		strtok_r(NULL, " ", &rest);
		strtok_r(NULL, " ", &rest);
		strtok_r(NULL, " ", &rest);
		mp = strtok_r(NULL, " ", &rest);
		if (!mp || strcmp(mp, dir))
			continue;
		mounted = true; /* the last one listed is on top */
		shared = strstr(rest, " shared:") != NULL &&
			 strstr(rest, " shared:") < strstr(rest, " - ");
	}
	if (f)
		fclose(f);
	if (shared)
		return 0;
	if (!mounted && mount(dir, dir, NULL, MS_BIND | MS_REC, NULL) < 0)
		return -errno;
	if (mount(NULL, dir, NULL, MS_SHARED, NULL) < 0)
		return -errno;
	log_info("%s is now a shared mount point", dir);
	return 0;
}

/* The pid of the daemon serving the credfs mount on @dir, as its metrics
 * say (credfs_info), or 0 when it cannot be read. */
static pid_t serving_pid(const char *dir)
{
	char path[4096];
	struct buf b;
	const char *p;
	long pid = 0;

	snprintf(path, sizeof(path), "%s/metrics", dir);
	if (file_read_capped(path, 1 << 20, false, &b) < 0)
		return 0;
	p = b.data ? strstr(b.data, "credfs_info{") : NULL;
	p = p ? strstr(p, "pid=\"") : NULL;
	if (p)
		pid = strtol(p + 5, NULL, 10);
	buf_free(&b);
	return pid > 0 ? (pid_t)pid : 0;
}

/* Fork; the parent waits for the child's readiness byte and exits with it. */
static int daemonize(int *ready_fd)
{
	int p[2];
	char status = 1;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		close(p[1]);
		if (read(p[0], &status, 1) != 1)
			status = 1;
		_exit(status ? EXIT_FAILURE : EXIT_SUCCESS);
	}
	close(p[0]);
	setsid();
	*ready_fd = p[1];
	return 0;
}

static void signal_ready(int *ready_fd, char status)
{
	int fd;

	if (*ready_fd < 0)
		return;
	if (status == 0) {
		fd = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (fd >= 0) {
			dup2(fd, STDIN_FILENO);
			dup2(fd, STDOUT_FILENO);
			if (fd > STDERR_FILENO)
				close(fd);
		}
		(void)!chdir("/");
	}
	(void)!write(*ready_fd, &status, 1);
	close(*ready_fd);
	*ready_fd = -1;
}

static int write_pid_file(const char *path)
{
	char text[32];
	int fd, n, r = 0;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		  0644);
	if (fd < 0)
		return -errno;
	n = snprintf(text, sizeof(text), "%d\n", (int)getpid());
	if (write(fd, text, (size_t)n) != n)
		r = -EIO;
	close(fd);
	return r;
}

/*
 * Signals are blocked in every thread and taken here. SIGHUP reloads (and
 * reopens the audit log, rereads the store). SIGTERM and SIGINT stop:
 * the mount keeps serving while the refresher waits for the answers in
 * flight and stores them (a rotated refresh token that reached us and was
 * not stored costs a new consent), and only then the session ends.
 * SIGUSR2 upgrades: the same drain, then the session loop ends and the
 * main thread hands the mount to the binary at our path (upgrade()).
 * SIGUSR2 with @quit set ends the thread.
 */
struct sigs {
	pthread_t thread;
	pthread_t main_thread; /* runs the session loop */
	struct admin *admin;
	pthread_mutex_t lock; /* @rf: an upgrade that fails replaces it */
	struct refresher *rf;
	struct fuse_session *_Atomic se; /* set once the mount is up */
	atomic_bool stopping;		 /* SIGTERM or SIGINT came */
	atomic_bool upgrading;		 /* SIGUSR2 came, not yet done */
	atomic_bool ready;		 /* READY=1 was said */
	atomic_bool loop_done;		 /* the session loop returned */
	atomic_bool quit;
};

/* Wakes the main thread from the session loop's sem_wait(). */
static void wake_handler(int sig)
{
}

static const int taken_signals[] = {SIGHUP, SIGTERM, SIGINT, SIGUSR2};

/* Drain the refresher, then end the session loop (which keeps serving
 * until then). */
static void end_loop(struct sigs *g)
{
	struct fuse_session *se;

	pthread_mutex_lock(&g->lock);
	refresher_stop(g->rf, refresher_drain_ms(g->admin->t));
	pthread_mutex_unlock(&g->lock);
	se = atomic_load(&g->se);
	if (!se)
		return; /* not mounted yet: run() sees stopping */
	fuse_session_exit(se);
	/* The loop waits in sem_wait(), which a signal ends; until it has
	 * returned (a signal may come just before it waits). An upgrade's
	 * main thread says so by clearing upgrading. */
	while (!atomic_load(&g->loop_done) &&
	       (atomic_load(&g->stopping) || atomic_load(&g->upgrading)) &&
	       fuse_session_exited(se)) {
		pthread_kill(g->main_thread, SIGUSR1);
		usleep(20 * 1000);
	}
}

/* End the signal thread, once what it is doing is done. */
static void sigs_end(struct sigs *g)
{
	atomic_store(&g->loop_done, true);
	atomic_store(&g->quit, true);
	pthread_kill(g->thread, SIGUSR2);
	pthread_join(g->thread, NULL);
}

static void *sigs_main(void *arg)
{
	struct sigs *g = arg;
	sigset_t set;
	size_t i;
	int sig;

	sigemptyset(&set);
	for (i = 0; i < ARRAY_SIZE(taken_signals); i++)
		sigaddset(&set, taken_signals[i]);
	while (!atomic_load(&g->quit)) {
		if (sigwait(&set, &sig) != 0 || atomic_load(&g->quit))
			continue;
		if ((sig == SIGTERM || sig == SIGINT) &&
		    !atomic_load(&g->stopping)) {
			log_info("%s: stopping", strsignal(sig));
			notify("STOPPING=1");
			atomic_store(&g->stopping, true);
			end_loop(g);
			continue;
		}
		if (atomic_load(&g->stopping))
			continue;
		if (sig == SIGUSR2) {
			if (!atomic_load(&g->ready)) {
				log_warn("SIGUSR2: not ready yet; send it "
					 "again once the daemon is");
				continue;
			}
			if (atomic_exchange(&g->upgrading, true))
				continue; /* one at a time */
			log_info("SIGUSR2: upgrading: the answers in flight "
				 "first, then the mount goes to %s",
				 self_exe);
			end_loop(g);
			continue;
		}
		if (sig != SIGHUP)
			continue;
		notify("RELOADING=1\nMONOTONIC_USEC=%lld",
		       (long long)time_mono_ms() * 1000);
		if (admin_reload(g->admin, NULL) == 0)
			log_info("SIGHUP: audit log reopened, store reread");
		else
			log_info("SIGHUP: store reread; the audit log was not "
				 "reopened");
		notify("READY=1\nSTATUS=serving %zu credentials",
		       cred_table_count(g->admin->t));
	}
	return NULL;
}

/* Block the signals sigs_main() takes (before any thread starts, so that
 * every thread inherits it), and let SIGUSR1 end a wait in this one. */
static void take_signals(void)
{
	/* No SA_RESTART: the kernel would restart the futex wait. */
	struct sigaction sa = {.sa_handler = wake_handler};
	sigset_t set;
	size_t i;

	sigemptyset(&set);
	for (i = 0; i < ARRAY_SIZE(taken_signals); i++)
		sigaddset(&set, taken_signals[i]);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* Tells the waiting parent (without -f) that the mount is ready, once
 * every credential's first request has been answered or the longest
 * open_wait_s has passed, so that a reader right after start-up finds
 * tokens, not the empty "no token yet" files. */
struct ready {
	pthread_t thread;
	struct cred_table *t;
	int *ready_fd;
	struct keeper *keeper; /* the fd store's image, before READY=1 */
	atomic_bool *done;     /* set when it has said so */
};

static void *ready_main(void *arg)
{
	struct ready *rd = arg;
	int64_t wait_ms = 0;
	size_t i, pending;
	cred_table_enter(rd->t);
	const struct config *cfg = cred_table_config(rd->t);

	for (i = 0; i < cfg->n_creds; i++)
		if (cfg->creds[i].timing.open_wait_ms > wait_ms)
			wait_ms = cfg->creds[i].timing.open_wait_ms;
	cred_table_exit(rd->t);
	pending = cred_table_wait_answered(rd->t, time_mono_ms() + wait_ms);
	if (pending)
		log_warn("ready with %zu credentials still waiting for their "
			 "first token",
			 pending);
	signal_ready(rd->ready_fd, 0);
	handoff_keeper_sync(rd->keeper);
	notify("READY=1\nMAINPID=%d\nSTATUS=serving %zu credentials",
	       (int)getpid(), cred_table_count(rd->t));
	atomic_store(rd->done, true);
	return NULL;
}

/* Say so, loudly, when a rotated refresh token never reached the store. */
static void warn_unpersisted(struct cred_table *t)
{
	uint32_t i, n = t ? atomic_load(&t->n_slots) : 0;
	struct cred_view v;

	if (t)
		cred_table_enter(t);
	for (i = 0; i < n; i++) {
		struct cred *c = cred_at(t, i);

		if (!c || !cred_live(c))
			continue;
		cred_view(c, time_real_ms(), &v);
		if (v.record_gen > v.durable_gen)
			log_error("%s/%s: exiting with generation %llu not in "
				  "the store (%s): its refresh token is lost",
				  cred_conf(c)->tenant,
				  cred_conf(c)->provider->name,
				  (unsigned long long)v.record_gen,
				  v.persist_error[0] ? v.persist_error
						     : "never written");
		cred_view_clear(&v);
	}
	if (t)
		cred_table_exit(t);
}

/* Everything the daemon runs, for its steps to share. */
struct daemon {
	struct opts *o;
	struct config *cfg;
	struct handoff *h;
	int *ready_fd;
	struct audit *audit;
	struct store *store;
	uint8_t *key;
	struct cred_table *t;
	struct fs *fs;
	struct fuse_session *se;
	struct control *control;
	struct metrics_http *metrics; /* metrics_listen */
	struct watchdog *wd;
	struct keeper *keeper;
	struct admin admin;
	struct sigs sigs;
	struct ready rd;
	char *mount_opts;
	char *argv_fuse[6];
	struct fuse_args args;
	int init_fd;	    /* the INIT request's bytes, for the next process */
	uint64_t image_seq; /* the last state image's number */
	bool resumed;	    /* serving a connection an earlier process made */
	bool handed_over;   /* an upgrade took the mount: leave it be */
	bool wrote_pid, sigs_started, rd_started;
};

/* The store, the credential table (with what an earlier process handed
 * over), the filesystem, the refresher and the signal thread. */
static int open_state(struct daemon *d)
{
	struct config *cfg = d->cfg;
	struct handoff *h = d->h;
	char err[1024];
	size_t kept;
	int r;

	r = audit_open(cfg->audit_log, &d->audit);
	if (r < 0) {
		log_error_errno(r, "cannot open the audit log %s",
				cfg->audit_log);
		return r;
	}
	if (cfg->store_dir) {
		/* One daemon per store, and the right key, before mounting. */
		store_inherit_lock(h->lock_fd);
		r = key_load(cfg->store_key_file, &d->key, err, sizeof(err));
		if (r == 0)
			r = store_open(cfg->store_dir, cfg->store_dsn, d->key,
				       STORE_DAEMON, &d->store, err,
				       sizeof(err));
		if (r < 0) {
			log_error("%s", err);
			return r;
		}
		(void)discovery_save_to(cfg->store_dir, d->key);
	}
	/* A resumed mount's numbering is the image's: the kernel's node ids
	 * name what they named, whatever the configuration added or took
	 * away meanwhile (tree.h). */
	r = cred_table_new(cfg, d->resumed ? h->image : NULL, &d->t);
	if (r < 0)
		goto fail;
	d->t->audit = d->audit;
	d->t->store = d->store;
	if (d->resumed)
		handoff_floors(d->t, h->image);
	r = fs_new(d->t, d->audit, cfg->cache_kernel, &d->fs);
	if (r < 0)
		goto fail;
	d->t->notify = fs_cred_changed;
	d->t->tree_changed = fs_tree_changed;
	d->t->notify_arg = d->fs;
	if (d->store)
		log_info("store %s: %zu records loaded", cfg->store_dir,
			 credstore_load_all(d->t));
	/* A cold start after a clean stop: the client-credentials tokens
	 * that stop left, while still valid. */
	if (d->store && !d->resumed) {
		kept = handoff_restore_stopped(d->t, cfg->store_dir, d->key);
		if (kept)
			log_info("%zu client-credentials tokens kept from the "
				 "last stop",
				 kept);
	}
	if (d->resumed) {
		kept = h->image ? handoff_restore(d->t, h->image) : 0;
		fs_import(d->fs, h->image);
		log_info("resuming the mount %s: %zu of %zu credentials keep "
			 "the tokens they had",
			 h->ready_fd < 0 ? "from the service manager's fd store"
				       : "that an upgrade handed over",
			 kept, cfg->n_creds);
	}
	/* Taken: its copies of the tokens go now, not at exit. */
	json_decref(h->image);
	h->image = NULL;
	r = refresher_new(d->t, fs_token_rotated, fs_token_expired, d->fs,
			  &d->sigs.rf);
	if (r < 0)
		goto fail;
	d->admin.t = d->t;
	d->admin.audit = d->audit;
	d->admin.config_path = cfg->path;
	d->admin.original = cfg;
	d->admin.cache_kernel = cfg->cache_kernel;
	d->admin.debug = d->o->debug;
	d->sigs.admin = &d->admin;
	r = -pthread_create(&d->sigs.thread, NULL, sigs_main, &d->sigs);
	d->sigs_started = r == 0;
	if (r == 0)
		return 0;
fail:
	log_error_errno(r, "cannot set up");
	return r;
}

/* The FUSE session: a fresh mount, or the connection handed over. */
static int open_session(struct daemon *d)
{
	struct opts *o = d->o;
	char *ours = NULL;
	bool resent;
	int r;

	/* Ours go last so that they win over anything passed with -o. */
	if (asprintf(&ours,
		     "ro,default_permissions,nosuid,nodev,noexec,"
		     "subtype=credfs,fsname=%s%s",
		     o->fsname ? o->fsname : "credfs",
		     geteuid() == 0 ? ",allow_other" : "") < 0)
		return -ENOMEM;
	r = o->fuse_opts ? append_opt(&d->mount_opts, o->fuse_opts) : 0;
	if (r == 0)
		r = append_opt(&d->mount_opts, ours);
	free(ours);
	if (r < 0)
		return -ENOMEM;
	d->argv_fuse[0] = "credfs";
	d->argv_fuse[1] = "-o";
	d->argv_fuse[2] = d->mount_opts;
	d->args = (struct fuse_args)FUSE_ARGS_INIT(3, d->argv_fuse);
	if (o->debug)
		d->argv_fuse[d->args.argc++] = "-d";
	d->se = fuse_session_new(&d->args, fs_ops(), sizeof(*fs_ops()), d->fs);
	if (!d->se) {
		log_error("cannot create the FUSE session (bad -o option?)");
		return -EINVAL;
	}
	if (d->resumed && !handoff_alive(d->h->fuse_fd)) {
		/* Unmounted (or aborted) while no process served it: mount
		 * afresh, with the tokens the image kept. */
		log_warn("the mount on %s was taken away while no daemon "
			 "served it: mounting afresh",
			 o->mountpoint);
		close(d->h->fuse_fd);
		d->h->fuse_fd = -1;
		handoff_store_clear();
		handoff_unmount(o->mountpoint);
		d->resumed = false;
	}
	if (d->resumed) {
		r = handoff_resume(d->se, d->h, &resent);
		if (r < 0) {
			log_error_errno(r, "cannot resume the mount on %s",
					o->mountpoint);
			return r;
		}
		d->init_fd = d->h->init_fd;
		d->h->init_fd = -1;
		if (!resent)
			log_warn("the kernel cannot send again what the "
				 "previous process had read and not answered "
				 "(FUSE_NOTIFY_RESEND needs Linux 6.9): those "
				 "readers wait until their request is "
				 "interrupted");
	} else {
		if (o->shared_parent) {
			char *parent = strdup(o->mountpoint), *slash;

			slash = parent ? strrchr(parent, '/') : NULL;
			if (slash)
				*(slash == parent ? slash + 1 : slash) = '\0';
			r = parent ? make_shared(parent) : -ENOMEM;
			if (r < 0)
				log_error_errno(r,
						"cannot make %s a shared mount",
						parent ? parent : "the parent");
			free(parent);
			if (r < 0)
				return r;
		}
		if (fuse_session_mount(d->se, o->mountpoint) != 0) {
			log_error("cannot mount on %s", o->mountpoint);
			return -EIO;
		}
		r = handoff_first_request(d->se, &d->init_fd);
		if (r < 0) {
			log_error_errno(r,
					"the kernel's first FUSE request on "
					"%s did not come",
					o->mountpoint);
			fuse_session_unmount(d->se);
			return r;
		}
		/* From here on the mount outlives this process. */
		handoff_store_fds(fuse_session_fd(d->se), d->init_fd);
		release_mountpoint_lock();
	}
	fs_set_session(d->fs, d->se);
	atomic_store(&d->sigs.se, d->se);
	return 0;
}

/* The daemon's sockets: what tells it of changes made elsewhere (the
 * control socket for credfsctl on this host, the shared store's watch
 * for other hosts) and metrics_listen. An upgrade stops them before the
 * new process starts its own. */
static int start_control(struct daemon *d)
{
	char err[1024], name[128];
	int r;

	/* Without a store: an abstract socket named after the mount, for
	 * credfsctl refresh and the like. */
	if (!d->store)
		control_name(d->o->mountpoint, name, sizeof(name));
	r = control_start(d->store ? d->cfg->store_dir : name, admin_request,
			  &d->admin, &d->control, err, sizeof(err));
	if (r < 0 && !d->store) {
		/* Anyone may take an abstract name first: serve without. */
		log_warn("%s: credfsctl refresh cannot reach this daemon", err);
		return 0;
	}
	if (r < 0)
		log_error("%s", err);
	if (r == 0 && d->store)
		r = credstore_watch(d->t);
	if (r == 0 && d->cfg->metrics_listen) {
		r = metrics_http_start(d->cfg->metrics_listen, d->t,
				       &d->metrics, err, sizeof(err));
		if (r < 0)
			log_error("%s", err);
		else
			log_info("metrics served on %s",
				 d->cfg->metrics_listen);
	}
	return r;
}

static void stop_control(struct daemon *d)
{
	metrics_http_stop(d->metrics);
	d->metrics = NULL;
	credstore_unwatch(d->t);
	control_stop(d->control);
	d->control = NULL;
}

/* What runs beside the session: watchdog, refresher, control socket, the
 * fd store's image, the pid file, readiness. */
static int start_services(struct daemon *d)
{
	struct opts *o = d->o;
	int r;

	if (notify_watchdog_ms() > 0) {
		r = watchdog_start(o->mountpoint, notify_watchdog_ms(), &d->wd);
		if (r < 0) {
			log_error_errno(r, "cannot start the watchdog");
			return r;
		}
		refresher_set_beat(d->sigs.rf, watchdog_beat, d->wd,
				   watchdog_every_ms(d->wd));
		log_info("watchdog: WATCHDOG=1 every %lld ms while the mount "
			 "and the refresher answer",
			 (long long)watchdog_every_ms(d->wd));
	}
	r = refresher_start(d->sigs.rf);
	if (r < 0) {
		log_error_errno(r, "cannot start the refresher");
		return r;
	}
	r = start_control(d);
	if (r < 0)
		return r;
	r = handoff_keeper_start(d->t, d->fs, o->mountpoint, d->image_seq,
				 &d->keeper);
	if (r < 0)
		log_warn("no state image in the fd store (%s): a crash loses "
			 "the tokens held",
			 strerror(-r));
	if (o->pid_file) {
		r = write_pid_file(o->pid_file);
		if (r < 0) {
			log_error_errno(r, "cannot write %s", o->pid_file);
			return r;
		}
		d->wrote_pid = true;
	}
	log_info("%s %s: %zu tenants, %zu credentials, cache=%s",
		 d->resumed ? "serving again" : "mounted on", o->mountpoint,
		 d->cfg->n_tenants, d->cfg->n_creds,
		 d->cfg->cache_kernel ? "kernel" : "audited");
	/* Ready once every credential had its first answer (bounded), with
	 * the session already serving: see ready_main(). */
	d->rd.t = d->t;
	d->rd.ready_fd = d->ready_fd;
	d->rd.keeper = d->keeper;
	d->rd.done = &d->sigs.ready;
	r = -pthread_create(&d->rd.thread, NULL, ready_main, &d->rd);
	if (r < 0) {
		log_error_errno(r, "cannot start");
		return r;
	}
	d->rd_started = true;
	return 0;
}

/* How long an upgrade waits for the new process to serve. */
#define UPGRADE_WAIT_MS (60 * 1000)

/* Wait for the new process @pid to say it serves (a byte on @ready); 0,
 * or -errno with the reason in @why (and the child reaped). */
static int wait_taken_over(int ready, pid_t pid, char *why, size_t whylen)
{
	struct pollfd pfd = {.fd = ready, .events = POLLIN};
	int status = 0, i, r;
	char byte;

	do
		r = poll(&pfd, 1, UPGRADE_WAIT_MS);
	while (r < 0 && errno == EINTR);
	if (r > 0 && read(ready, &byte, 1) == 1)
		return 0;
	if (r == 0) {
		snprintf(why, whylen,
			 "the new process (pid %d) did not serve within %d s; "
			 "it was killed",
			 (int)pid, UPGRADE_WAIT_MS / 1000);
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		return -ETIMEDOUT;
	}
	for (i = 0; i < 50 && waitpid(pid, &status, WNOHANG) == 0; i++)
		usleep(20 * 1000);
	if (i == 50) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		snprintf(why, whylen,
			 "the new process (pid %d) could not start %s",
			 (int)pid, self_exe);
	else if (WIFEXITED(status))
		snprintf(why, whylen,
			 "the new process (pid %d) exited with status %d "
			 "before serving (its log says why)",
			 (int)pid, WEXITSTATUS(status));
	else
		snprintf(why, whylen,
			 "the new process (pid %d) ended by signal %d before "
			 "serving",
			 (int)pid, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	return -ECHILD;
}

/*
 * SIGUSR2, after the refresher drained and the session loop ended: hand
 * the connection, INIT, the store's lock and a state image with the open
 * files to the binary at our path. 0 once it serves; otherwise this
 * process serves on, and says why.
 */
static int hand_over(struct daemon *d)
{
	const char *names[4] = {"fuse", "init", "state", "store-lock"};
	int fds[4], state_fd, ready = -1, r;
	size_t n = 3;
	char why[512] = "";
	pid_t pid = 0;

	stop_control(d);
	fs_pause_waits(d->fs);
	d->image_seq = handoff_keeper_stop(d->keeper, d->image_seq);
	d->keeper = NULL;
	state_fd = handoff_image_fd(d->t, d->fs, d->o->mountpoint, true,
				    ++d->image_seq);
	r = state_fd;
	if (r >= 0) {
		fds[0] = fuse_session_fd(d->se);
		fds[1] = d->init_fd;
		fds[2] = state_fd;
		fds[3] = store_daemon_lock(d->store);
		if (fds[3] >= 0)
			n = 4;
		r = handoff_spawn(self_exe, self_argv, self_cwd, fds, names, n,
				  &pid, &ready);
		close(state_fd);
	}
	if (r == 0) {
		r = wait_taken_over(ready, pid, why, sizeof(why));
		close(ready);
	} else {
		snprintf(why, sizeof(why), "cannot start %s: %s", self_exe,
			 strerror(-r));
	}
	if (r == 0) {
		log_info("upgrade: pid %d serves the mount now; this one exits",
			 (int)pid);
		notify("MAINPID=%d", (int)pid);
		return 0;
	}
	log_error("upgrade: %s; this process goes on serving", why);
	/* As it was: a refresher (the schedule is the credentials'),
	 * the control socket, the waiting opens, the fd store's image;
	 * and the kernel sends again whatever was read and not answered. */
	pthread_mutex_lock(&d->sigs.lock);
	refresher_free(d->sigs.rf);
	d->sigs.rf = NULL;
	r = refresher_new(d->t, fs_token_rotated, fs_token_expired, d->fs,
			  &d->sigs.rf);
	if (r == 0 && d->wd)
		refresher_set_beat(d->sigs.rf, watchdog_beat, d->wd,
				   watchdog_every_ms(d->wd));
	if (r == 0)
		r = refresher_start(d->sigs.rf);
	pthread_mutex_unlock(&d->sigs.lock);
	if (r == 0)
		r = fs_resume_waits(d->fs);
	if (r == 0)
		r = start_control(d);
	if (r == 0)
		handoff_keeper_start(d->t, d->fs, d->o->mountpoint,
				     d->image_seq, &d->keeper);
	handoff_resend(d->se);
	return r < 0 ? r : -ECHILD;
}

static int upgrade(struct daemon *d)
{
	int r;

	/* No reload meanwhile (SIGHUP waits): the image is of one tree, and
	 * a failed upgrade replaces the refresher a reload would use. */
	pthread_mutex_lock(&d->admin.lock);
	r = hand_over(d);
	pthread_mutex_unlock(&d->admin.lock);
	return r;
}

/* Serve until stopped, unmounted, or handed over. */
static int serve(struct daemon *d)
{
	struct fuse_loop_config *loop = fuse_loop_cfg_create();
	int r = 0;

	if (!loop)
		return -ENOMEM;
	fuse_loop_cfg_set_max_threads(loop, MAX_FUSE_THREADS);
	/* The process that handed over stops reading once this one is
	 * ready to. */
	handoff_ready(d->h);
	while (!atomic_load(&d->sigs.stopping)) {
		r = fuse_session_loop_mt(d->se, loop);
		r = r < 0 ? r : 0;
		if (!atomic_load(&d->sigs.upgrading) ||
		    atomic_load(&d->sigs.stopping))
			break;
		if (upgrade(d) == 0) {
			d->handed_over = true;
			break;
		}
		atomic_store(&d->sigs.upgrading, false);
	}
	fuse_loop_cfg_destroy(loop);
	return r;
}

/* Everything stops and goes, in the order that loses nothing: a stop
 * drains first, and the mount goes last (unless handed over). */
static void stop(struct daemon *d)
{
	if (d->sigs_started)
		sigs_end(&d->sigs); /* after a stop it began, if one did */
	d->sigs_started = false;
	if (!d->handed_over && d->se)
		notify("STOPPING=1");
	/* Unmounted from outside, or the signal thread stopped it: either
	 * way what is in flight is answered and stored first. */
	if (d->sigs.rf)
		refresher_stop(d->sigs.rf, refresher_drain_ms(d->t));
	/* Nobody waits any more for answers that will not come. */
	if (d->t)
		cred_table_stop_waits(d->t);
	if (d->rd_started)
		pthread_join(d->rd.thread, NULL);
	/* Stop what notifies the session before it goes away. */
	stop_control(d);
	handoff_keeper_stop(d->keeper, d->image_seq);
	d->keeper = NULL;
	refresher_free(d->sigs.rf);
	d->sigs.rf = NULL;
	warn_unpersisted(d->t);
	/* What a cold start serves with the provider down. */
	if (!d->handed_over && d->store && d->t) {
		int r = handoff_save_stopped(d->t, d->cfg->store_dir, d->key);

		if (r < 0)
			log_warn(
				"%s: cannot keep the client-credentials tokens "
				"for the next start (%s): it will request new "
				"ones",
				d->cfg->store_dir, strerror(-r));
	}
	if (!d->handed_over)
		fs_stop_waits(d->fs); /* else they are the new process's */
	if (d->fs)
		fs_set_session(d->fs, NULL);
	if (d->se && !d->handed_over) {
		log_info("unmounting %s", d->o->mountpoint);
		/* Nothing is to resume this mount: the fd store lets go. */
		handoff_store_clear();
		fuse_session_unmount(d->se);
		if (d->resumed)
			handoff_unmount(d->o->mountpoint);
	}
	watchdog_stop(d->wd); /* its probe returns once the mount is gone */
	d->wd = NULL;
	if (d->se)
		fuse_session_destroy(d->se);
	fs_free(d->fs);
	admin_free(&d->admin);
	cred_table_free(d->t);
	audit_free(d->audit);
	store_close(d->store);
	(void)discovery_save_to(NULL, NULL);
	key_free(d->key);
	free(d->mount_opts);
	fuse_opt_free_args(&d->args);
	if (d->init_fd >= 0)
		close(d->init_fd);
	if (d->wrote_pid && !d->handed_over)
		unlink(d->o->pid_file);
}

/* The discovery documents the last daemon on @cfg's store saved
 * (discovery_read_saved()), if its key can be read: what is wrong with the
 * key is said when the store is opened. */
static void read_saved_discovery(const struct config *cfg)
{
	uint8_t *key = NULL;
	char err[1024];

	if (cfg->store_dir &&
	    key_load(cfg->store_key_file, &key, err, sizeof(err)) == 0)
		(void)discovery_read_saved(cfg->store_dir, key);
	key_free(key);
}

static int run(struct opts *o, struct config *cfg, int *ready_fd,
	       struct handoff *h)
{
	struct daemon d = {
		.o = o,
		.cfg = cfg,
		.h = h,
		.ready_fd = ready_fd,
		.init_fd = -1,
		.resumed = h->fuse_fd >= 0,
		.image_seq = h->image_seq,
		.sigs = {.main_thread = pthread_self()},
	};
	int r;

	take_signals();
	pthread_mutex_init(&d.admin.lock, NULL);
	pthread_mutex_init(&d.sigs.lock, NULL);
	r = open_state(&d);
	if (r == 0)
		r = open_session(&d);
	if (r == 0)
		r = start_services(&d);
	if (r == 0 && !atomic_load(&d.sigs.stopping))
		r = serve(&d);
	stop(&d);
	return r;
}

/* @path, absolute, without looking inside it: a mount that another
 * process made and nobody serves yet would hold stat() or realpath()
 * until someone does. NULL if its directory cannot be resolved. */
static char *path_outside(const char *path)
{
	char *copy = strdup(path), *slash, *dir, *out = NULL;
	const char *base;

	if (!copy)
		return NULL;
	slash = strrchr(copy, '/');
	base = slash ? slash + 1 : copy;
	if (slash)
		*slash = '\0';
	dir = realpath(slash ? (copy[0] ? copy : "/") : ".", NULL);
	if (dir &&
	    asprintf(&out, "%s/%s", strcmp(dir, "/") ? dir : "", base) < 0)
		out = NULL;
	free(dir);
	free(copy);
	return out;
}

/* Where the mount is: for a resumed one, where the image says it is. */
static char *resumed_mountpoint(const struct handoff *h, const char *arg)
{
	const char *img =
		json_string_value(json_object_get(h->image, "mountpoint"));

	return img && img[0] == '/' ? strdup(img) : path_outside(arg);
}

/* A fresh mount's checks: a dead mount in the way goes, a live one
 * refuses. Returns the absolute mount point, or NULL (said). */
static char *fresh_mountpoint(const char *arg)
{
	char *mountpoint = NULL;
	struct statfs sfs;
	struct stat st;

	if (statfs(arg, &sfs) < 0 && errno == ENOTCONN) {
		/* A mount left by a daemon that died (statfs is never
		 * answered from a cache): take it away first. */
		if (umount2(arg, MNT_DETACH) == 0)
			log_warn("%s: removed the mount of a daemon that is "
				 "gone",
				 arg);
		else
			log_error_errno(-errno,
					"%s: a dead mount is in the "
					"way (fusermount3 -uz it)",
					arg);
	}
	if (stat(arg, &st) < 0) {
		fprintf(stderr, "credfs: %s: %s\n", arg,
			errno == ENOENT ? "no such directory (create it "
					  "first, or choose another)"
					: strerror(errno));
		return NULL;
	}
	if (!S_ISDIR(st.st_mode) || !(mountpoint = realpath(arg, NULL))) {
		fprintf(stderr, "credfs: %s: not a directory\n", arg);
		return NULL;
	}
	/* Two daemons started at once would both find no mount here: each
	 * holds a lock on the directory under the mount until it mounts
	 * (then the mount is what a second one finds) or gives up. */
	if (!util_credfs_mounted_on(mountpoint)) {
		mountpoint_lock =
			open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (mountpoint_lock >= 0 &&
		    flock(mountpoint_lock, LOCK_EX | LOCK_NB) < 0 &&
		    errno == EWOULDBLOCK) {
			fprintf(stderr,
				"credfs: %s: another credfs daemon is "
				"starting on this mount point; stop it first, "
				"or choose another\n",
				mountpoint);
			free(mountpoint);
			return NULL;
		}
	}
	if (util_credfs_mounted_on(mountpoint)) {
		/* A live one (a dead one was taken away above): mounting over
		 * it would hide it, and its readers would not know. */
		pid_t pid = serving_pid(mountpoint);
		char by[48] = "";

		if (pid > 0)
			snprintf(by, sizeof(by), " (pid %d)", (int)pid);
		fprintf(stderr,
			"credfs: %s: a running credfs daemon%s serves this "
			"mount point; stop it first (systemctl stop credfs, "
			"or fusermount3 -u %s), or choose another\n",
			mountpoint, by, mountpoint);
		free(mountpoint);
		return NULL;
	}
	return mountpoint;
}

/* The arguments an upgrade starts the new binary with: ours, in the
 * foreground (this process is in the background already, and the new one
 * must be the one the service manager and the pid file name). */
static char **respawn_argv(int argc, char **argv)
{
	char **v = calloc((size_t)argc + 2, sizeof(char *));
	int i;

	if (!v)
		return argv;
	v[0] = argv[0];
	v[1] = "-f";
	for (i = 1; i < argc; i++)
		v[i + 1] = argv[i];
	return v;
}

int main(int argc, char **argv)
{
	struct opts o = {0};
	struct config *cfg = NULL;
	int ready_fd = -1, r;
	char *mountpoint = NULL, *config_path = NULL;
	struct handoff h;
	char err[1024], why[512];
	ssize_t n;

	r = parse_args(argc, argv, &o);
	if (r != 0) {
		opts_free(&o);
		return r > 0 ? EXIT_SUCCESS : 2;
	}
	/* What an upgrade starts again, and what an earlier process or
	 * the service manager passed in (before any fd is opened). */
	n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
	self_exe[n > 0 ? n : 0] = '\0';
	self_argv = o.foreground ? argv : respawn_argv(argc, argv);
	self_cwd = getcwd(NULL, 0);
	/* Tokens and keys live in this process. */
	secrets_hygiene();
	handoff_take(&h, why, sizeof(why));
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "credfs: cannot initialise libcurl\n");
		r = -EIO;
		goto out;
	}

	/* Absolute, so that a reload after chdir("/") finds it. */
	config_path = realpath(o.config, NULL);
	if (config_path)
		o.config = config_path;
	/* An upgrade or a crash restart starts on the discovery documents
	 * the mount had: no issuer or MCP server need be reachable. A cold
	 * start fetches them, falling back on those saved by the last
	 * daemon on this store. */
	if (h.image)
		discovery_import(json_object_get(h.image, "discovery"));
	r = config_read(o.config, &cfg, err, sizeof(err));
	if (r == 0) {
		read_saved_discovery(cfg);
		r = config_finish_load(cfg, err, sizeof(err));
	}
	if (r < 0) {
		fprintf(stderr, "credfs: %s\n", err);
		goto out;
	}
	log_set_level(o.debug ? LOG_DEBUG : (enum log_level)cfg->log_level);
	if (why[0])
		log_warn("%s", why);
	if (config_set_read_path(cfg, o.cache_kernel, err, sizeof(err)) < 0) {
		fprintf(stderr, "credfs: %s\n", err);
		r = -EINVAL;
		goto out;
	}
	/* Absolute: the daemon leaves for / and must still unmount it. */
	mountpoint = h.fuse_fd >= 0 ? resumed_mountpoint(&h, o.mountpoint)
				    : fresh_mountpoint(o.mountpoint);
	if (!mountpoint) {
		r = -ENOTDIR;
		goto out;
	}
	o.mountpoint = mountpoint;
	if (!o.foreground) {
		r = daemonize(&ready_fd);
		if (r < 0) {
			log_error_errno(r, "cannot start in the background");
			goto out;
		}
	}
	r = run(&o, cfg, &ready_fd, &h);
	/* Free before the parent hears of a failure and returns. */
	release_mountpoint_lock();
	signal_ready(&ready_fd, 1); /* only if it never became ready */
out:
	handoff_clear(&h);
	config_free(cfg);
	curl_global_cleanup();
	opts_free(&o);
	free(mountpoint);
	free(config_path);
	free(self_cwd);
	if (self_argv != argv)
		free(self_argv);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
