/*
 * credfs: the daemon. Loads the config, mounts the tree, runs the refresher
 * and the FUSE session loop, and unmounts cleanly on SIGINT or SIGTERM.
 * Without -f it forks and returns only once the mount is ready.
 */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
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
#include "key.h"
#include "log.h"
#include "notify.h"
#include "oauth.h"
#include "refresher.h"
#include "store.h"
#include "util.h"
#include "watchdog.h"

#define MAX_FUSE_THREADS 64

struct opts {
	bool foreground;
	bool debug;
	bool cache_kernel; /* -o cache=kernel */
	const char *config;
	const char *pid_file;
	bool shared_parent; /* --shared-parent */
	const char *mountpoint;
	char *fuse_opts; /* user's -o options, comma-joined */
};

static const char usage_text[] =
	"Usage: credfs [-f] [-d] [-o OPT[,OPT...]] [--pid-file FILE]\n"
	"              [--shared-parent] --config FILE MOUNTPOINT\n"
	"\n"
	"Serve always-fresh OAuth access tokens as files under MOUNTPOINT.\n"
	"\n"
	"  -c, --config FILE    configuration (JSON), see docs/config.md\n"
	"  -f, --foreground     stay in the foreground (for systemd)\n"
	"  -d, --debug          debug logging and FUSE request tracing\n"
	"  -o OPT[,OPT...]      mount options: cache=audited (default) or\n"
	"                       cache=kernel (see docs/security.md), and\n"
	"                       extra FUSE options\n"
	"      --pid-file FILE  write the daemon's PID to FILE\n"
	"      --shared-parent  make MOUNTPOINT's parent a shared mount, so\n"
	"                       containers that bind it (rslave) see the\n"
	"                       mount again after a restart "
	"(docs/containers.md)\n"
	"  -h, --help           show this help\n"
	"  -V, --version        show the version\n"
	"\n"
	"Without -f, credfs returns once the mount is ready and keeps running\n"
	"in the background. SIGINT or SIGTERM unmount and stop it.\n";

static int append_opt(char **dst, const char *o)
{
	char *n;

	if (asprintf(&n, "%s%s%s", *dst ? *dst : "", *dst ? "," : "", o) < 0)
		return -ENOMEM;
	free(*dst);
	*dst = n;
	return 0;
}

/* Take credfs's own options out of a -o list; pass the rest to FUSE. */
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
		} else if (append_opt(&o->fuse_opts, opt) < 0)
			r = -1;
	}
	free(copy);
	return r;
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
	if (optind + 1 != argc) {
		fprintf(stderr, "credfs: %s\n",
			optind < argc ? "too many arguments"
				      : "missing MOUNTPOINT");
		fputs(usage_text, stderr);
		return -1;
	}
	o->mountpoint = argv[optind];
	if (!o->config) {
		fprintf(stderr, "credfs: missing --config FILE\n");
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

/* Whether a credfs mount is on @dir (absolute, resolved) now. */
static bool credfs_mounted_on(const char *dir)
{
	char line[4096], *save = NULL, *src, *mp, *type;
	bool found = false;
	FILE *f = fopen("/proc/self/mounts", "re");

	/* "source mountpoint type options 0 0" (octal escapes in names). */
	while (f && !found && fgets(line, sizeof(line), f)) {
		src = strtok_r(line, " ", &save);
		mp = strtok_r(NULL, " ", &save);
		type = strtok_r(NULL, " ", &save);
		found = src && mp && type && !strcmp(mp, dir) &&
			!strcmp(type, "fuse.credfs");
	}
	if (f)
		fclose(f);
	return found;
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
 * not stored costs a new consent), and only then the session ends. SIGUSR2
 * with @quit set ends the thread.
 */
struct sigs {
	pthread_t thread;
	pthread_t main_thread; /* runs the session loop */
	struct admin *admin;
	struct refresher *rf;
	struct fuse_session *_Atomic se; /* set once the mount is up */
	atomic_bool stopping;		 /* SIGTERM or SIGINT came */
	atomic_bool loop_done;		 /* the session loop returned */
	atomic_bool quit;
};

/* Wakes the main thread from the session loop's sem_wait(). */
static void wake_handler(int sig)
{
}

static const int taken_signals[] = {SIGHUP, SIGTERM, SIGINT, SIGUSR2};

static void stop_serving(struct sigs *g, int sig)
{
	struct fuse_session *se;

	log_info("%s: stopping", strsignal(sig));
	notify("STOPPING=1");
	atomic_store(&g->stopping, true);
	refresher_stop(g->rf, refresher_drain_ms(g->admin->t));
	se = atomic_load(&g->se);
	if (!se)
		return; /* not mounted yet: run() sees stopping */
	fuse_session_exit(se);
	/* The loop waits in sem_wait(), which a signal ends; until it has
	 * returned (a signal may come just before it waits). */
	while (!atomic_load(&g->loop_done)) {
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
		if (sigwait(&set, &sig) != 0)
			continue;
		if ((sig == SIGTERM || sig == SIGINT) &&
		    !atomic_load(&g->stopping)) {
			stop_serving(g, sig);
			continue;
		}
		if (sig != SIGHUP || atomic_load(&g->stopping))
			continue;
		notify("RELOADING=1\nMONOTONIC_USEC=%lld",
		       (long long)time_mono_ms() * 1000);
		if (admin_reload(g->admin, NULL) == 0)
			log_info("SIGHUP: audit log reopened, store reread");
		else
			log_info("SIGHUP: store reread; the audit log was not "
				 "reopened");
		notify("READY=1\nSTATUS=serving %zu credentials",
		       g->admin->t->n);
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
};

static void *ready_main(void *arg)
{
	struct ready *rd = arg;
	int64_t wait_ms = 0;
	size_t i, pending;
	unsigned slot = cred_table_enter(rd->t);

	for (i = 0; i < rd->t->n; i++)
		if (rd->t->creds[i].conf->timing.open_wait_ms > wait_ms)
			wait_ms = rd->t->creds[i].conf->timing.open_wait_ms;
	cred_table_exit(rd->t, slot);
	pending = cred_table_wait_answered(rd->t, time_mono_ms() + wait_ms);
	if (pending)
		log_warn("ready with %zu credentials still waiting for their "
			 "first token",
			 pending);
	signal_ready(rd->ready_fd, 0);
	notify("READY=1\nMAINPID=%d\nSTATUS=serving %zu credentials",
	       (int)getpid(), rd->t->n);
	return NULL;
}

/* Say so, loudly, when a rotated refresh token never reached the store. */
static void warn_unpersisted(struct cred_table *t)
{
	size_t i;

	for (i = 0; t && i < t->n; i++) {
		struct cred *c = &t->creds[i];

		pthread_mutex_lock(&c->lock);
		if (c->record_gen > c->durable_gen)
			log_error("%s/%s: exiting with generation %llu not in "
				  "the store (%s): its refresh token is lost",
				  c->conf->tenant, c->conf->provider->name,
				  (unsigned long long)c->record_gen,
				  c->persist_error[0] ? c->persist_error
						      : "never written");
		pthread_mutex_unlock(&c->lock);
	}
}

static int run(struct opts *o, struct config *cfg, int *ready_fd)
{
	char *argv_fuse[] = {"credfs", "-o", NULL, NULL, NULL, NULL};
	struct fuse_args args = FUSE_ARGS_INIT(0, argv_fuse);
	struct fuse_loop_config *loop = NULL;
	struct refresher *rf = NULL;
	struct fuse_session *se = NULL;
	struct cred_table *t = NULL;
	char *mount_opts = NULL;
	struct fs *fs = NULL;
	struct audit *audit = NULL;
	struct store *store = NULL;
	struct control *control = NULL;
	struct watchdog *wd = NULL;
	struct admin admin = {0};
	uint8_t *key = NULL;
	char err[1024];
	struct sigs sigs = {.main_thread = pthread_self()};
	struct ready rd = {0};
	bool wrote_pid = false, sigs_started = false;
	int r;

	take_signals();
	r = audit_open(cfg->audit_log, &audit);
	if (r < 0) {
		log_error_errno(r, "cannot open the audit log %s",
				cfg->audit_log);
		goto out;
	}
	if (cfg->store_dir) {
		/* One daemon per store, and the right key, before mounting. */
		r = key_load(cfg->store_key_file, &key, err, sizeof(err));
		if (r == 0)
			r = store_open(cfg->store_dir, cfg->store_dsn, key,
				       STORE_DAEMON, &store, err, sizeof(err));
		if (r < 0) {
			log_error("%s", err);
			goto out;
		}
	}
	r = cred_table_new(cfg, &t);
	if (r == 0) {
		t->audit = audit;
		t->store = store;
		r = fs_new(t, audit, cfg->cache_kernel, &fs);
	}
	if (r == 0) {
		t->notify = fs_cred_changed;
		t->notify_arg = fs;
		if (store)
			log_info("store %s: %zu records loaded", cfg->store_dir,
				 credstore_load_all(t));
		r = refresher_new(t, fs_token_rotated, fs_token_expired, fs,
				  &rf);
	}
	admin.t = t;
	admin.audit = audit;
	admin.config_path = cfg->path;
	admin.original = cfg;
	admin.cache_kernel = cfg->cache_kernel;
	admin.debug = o->debug;
	pthread_mutex_init(&admin.lock, NULL);
	sigs.admin = &admin;
	sigs.rf = rf;
	if (r == 0) {
		r = -pthread_create(&sigs.thread, NULL, sigs_main, &sigs);
		sigs_started = r == 0;
	}
	if (r < 0) {
		log_error_errno(r, "cannot set up");
		goto out;
	}

	/* Ours go last so that they win over anything passed with -o. */
	if ((o->fuse_opts && append_opt(&mount_opts, o->fuse_opts) < 0) ||
	    append_opt(&mount_opts,
		       "ro,default_permissions,nosuid,nodev,"
		       "noexec,fsname=credfs,subtype=credfs") < 0 ||
	    (geteuid() == 0 && append_opt(&mount_opts, "allow_other") < 0)) {
		r = -ENOMEM;
		goto out;
	}
	args.argc = 3;
	argv_fuse[2] = mount_opts;
	if (o->debug)
		argv_fuse[args.argc++] = "-d";
	se = fuse_session_new(&args, fs_ops(), sizeof(*fs_ops()), fs);
	if (!se) {
		r = -EINVAL;
		log_error("cannot create the FUSE session (bad -o option?)");
		goto out;
	}
	if (o->shared_parent) {
		char *parent = strdup(o->mountpoint), *slash;

		slash = parent ? strrchr(parent, '/') : NULL;
		if (slash)
			*(slash == parent ? slash + 1 : slash) = '\0';
		r = parent ? make_shared(parent) : -ENOMEM;
		if (r < 0)
			log_error_errno(r, "cannot make %s a shared mount",
					parent ? parent : "the parent");
		free(parent);
		if (r < 0)
			goto out_destroy;
	}
	if (fuse_session_mount(se, o->mountpoint) != 0) {
		r = -EIO;
		log_error("cannot mount on %s", o->mountpoint);
		goto out_destroy;
	}
	fs_set_session(fs, se);
	atomic_store(&sigs.se, se);
	if (notify_watchdog_ms() > 0) {
		r = watchdog_start(o->mountpoint, notify_watchdog_ms(), &wd);
		if (r < 0) {
			log_error_errno(r, "cannot start the watchdog");
			goto out_unmount;
		}
		refresher_set_beat(rf, watchdog_beat, wd,
				   watchdog_every_ms(wd));
		log_info("watchdog: WATCHDOG=1 every %lld ms while the mount "
			 "and the refresher answer",
			 (long long)watchdog_every_ms(wd));
	}
	r = refresher_start(rf);
	if (r < 0) {
		log_error_errno(r, "cannot start the refresher");
		goto out_unmount;
	}
	if (store) {
		r = control_start(cfg->store_dir, admin_request, &admin,
				  &control, err, sizeof(err));
		if (r < 0) {
			log_error("%s", err);
			goto out_unmount;
		}
	}
	if (o->pid_file) {
		r = write_pid_file(o->pid_file);
		if (r < 0) {
			log_error_errno(r, "cannot write %s", o->pid_file);
			goto out_unmount;
		}
		wrote_pid = true;
	}
	log_info("mounted on %s: %zu tenants, %zu credentials, cache=%s",
		 o->mountpoint, cfg->n_tenants, cfg->n_creds,
		 cfg->cache_kernel ? "kernel" : "audited");
	/* Ready once every credential had its first answer (bounded), with
	 * the session already serving: see ready_main(). */
	rd.t = t;
	rd.ready_fd = ready_fd;
	r = -pthread_create(&rd.thread, NULL, ready_main, &rd);
	if (r < 0) {
		log_error_errno(r, "cannot start");
		goto out_unmount;
	}

	loop = fuse_loop_cfg_create();
	if (atomic_load(&sigs.stopping)) {
		r = 0; /* asked to stop while starting */
	} else if (loop) {
		fuse_loop_cfg_set_max_threads(loop, MAX_FUSE_THREADS);
		r = fuse_session_loop_mt(se, loop);
		fuse_loop_cfg_destroy(loop);
		r = r < 0 ? r : 0;
	} else {
		r = -ENOMEM;
	}
	sigs_end(&sigs); /* after a stop it began, if one did */
	sigs_started = false;
	notify("STOPPING=1");
	/* Unmounted from outside, or the signal thread stopped it: either
	 * way what is in flight is answered and stored first. */
	refresher_stop(rf, refresher_drain_ms(t));
	/* Nobody waits any more for answers that will not come. */
	cred_table_stop_waits(t);
	pthread_join(rd.thread, NULL);
	log_info("unmounting %s", o->mountpoint);
out_unmount:
	/* Stop what notifies the session before it goes away. */
	control_stop(control);
	control = NULL;
	refresher_free(rf);
	rf = NULL;
	warn_unpersisted(t);
	fs_stop_waits(fs);
	fs_set_session(fs, NULL);
	fuse_session_unmount(se);
	watchdog_stop(wd); /* its probe returns once the mount is gone */
	wd = NULL;
out_destroy:
	fuse_session_destroy(se);
out:
	control_stop(control);
	if (sigs_started)
		sigs_end(&sigs);
	refresher_free(rf);
	fs_free(fs);
	admin_free(&admin);
	cred_table_free(t);
	audit_free(audit);
	store_close(store);
	key_free(key);
	free(mount_opts);
	fuse_opt_free_args(&args);
	if (wrote_pid)
		unlink(o->pid_file);
	return r;
}

int main(int argc, char **argv)
{
	struct opts o = {0};
	struct config *cfg = NULL;
	int ready_fd = -1, r;
	char *mountpoint = NULL, *config_path = NULL;
	struct statfs sfs;
	char err[1024];
	struct stat st;

	r = parse_args(argc, argv, &o);
	if (r != 0) {
		free(o.fuse_opts);
		return r > 0 ? EXIT_SUCCESS : 2;
	}
	/* Tokens and keys live in this process. */
	secrets_hygiene();
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "credfs: cannot initialise libcurl\n");
		return EXIT_FAILURE;
	}

	/* Absolute, so that a reload after chdir("/") finds it. */
	config_path = realpath(o.config, NULL);
	if (config_path)
		o.config = config_path;
	r = config_load(o.config, &cfg, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "credfs: %s\n", err);
		goto out;
	}
	log_set_level(o.debug ? LOG_DEBUG : (enum log_level)cfg->log_level);
	if (config_set_read_path(cfg, o.cache_kernel, err, sizeof(err)) < 0) {
		fprintf(stderr, "credfs: %s\n", err);
		r = -EINVAL;
		goto out;
	}
	if (statfs(o.mountpoint, &sfs) < 0 && errno == ENOTCONN) {
		/* A mount left by a daemon that died (statfs is never
		 * answered from a cache): take it away first. */
		if (umount2(o.mountpoint, MNT_DETACH) == 0)
			log_warn("%s: removed the mount of a daemon that is "
				 "gone",
				 o.mountpoint);
		else
			log_error_errno(-errno,
					"%s: a dead mount is in the "
					"way (fusermount3 -uz it)",
					o.mountpoint);
	}
	if (stat(o.mountpoint, &st) < 0 || !S_ISDIR(st.st_mode) ||
	    !(mountpoint = realpath(o.mountpoint, NULL))) {
		fprintf(stderr, "credfs: %s: not a directory\n", o.mountpoint);
		r = -ENOTDIR;
		goto out;
	}
	/* Absolute: the daemon leaves for / and must still unmount it. */
	o.mountpoint = mountpoint;
	if (credfs_mounted_on(mountpoint)) {
		/* A live one (a dead one was taken away above): mounting over
		 * it would hide it, and its readers would not know. */
		fprintf(stderr,
			"credfs: %s: a running credfs daemon serves this mount "
			"point; stop it first (systemctl stop credfs, or "
			"fusermount3 -u %s), or choose another\n",
			mountpoint, mountpoint);
		r = -EBUSY;
		goto out;
	}
	if (!o.foreground) {
		r = daemonize(&ready_fd);
		if (r < 0) {
			log_error_errno(r, "cannot start in the background");
			goto out;
		}
	}
	r = run(&o, cfg, &ready_fd);
	signal_ready(&ready_fd, 1); /* only if it never became ready */
out:
	config_free(cfg);
	curl_global_cleanup();
	free(o.fuse_opts);
	free(mountpoint);
	free(config_path);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
