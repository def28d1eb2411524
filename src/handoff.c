/*
 * handoff: see handoff.h. The FUSE facts this rests on (libfuse 3.14,
 * Linux 6.9 and later): fuse_session_mount() of "/dev/fd/N" serves fd N
 * without mounting; libfuse answers every request before INIT with EIO,
 * so a resumed session replays the saved INIT (its reply fails with
 * ENOENT, which libfuse ignores, and the kernel keeps the first
 * negotiation); FUSE_NOTIFY_RESEND puts every request a dead process had
 * read and not answered back in the queue, with bit 63 set in unique,
 * which libfuse echoes back as it is.
 */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fuse_lowlevel.h>
#include <jansson.h>

#include "config.h"
#include "cred.h"
#include "fs.h"
#include "discovery.h"
#include "handoff.h"
#include "log.h"
#include "notify.h"
#include "sealed.h"
#include "tree.h"
#include "util.h"

#define IMAGE_VERSION 1
#define IMAGE_MAX_BYTES (512u * 1024 * 1024)
#define FUSE_INIT_OPCODE 26
#define FUSE_NOTIFY_RESEND_CODE 7
#define MAX_FDS 6

extern char **environ;

static int memfd_sealed(const char *name, const void *data, size_t len)
{
	const char *p = data;
	size_t done = 0;
	ssize_t n;
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING), r;

	if (fd < 0)
		return -errno;
	while (done < len) {
		n = write(fd, p + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			close(fd);
			return r;
		}
		done += (size_t)n;
	}
	if (fcntl(fd, F_ADD_SEALS,
		  F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) <
	    0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

/* The whole of memfd @fd (from offset 0: its offset is shared with
 * every holder), into @b. */
static int read_all(int fd, struct buf *b)
{
	char chunk[65536];
	off_t off = 0;
	ssize_t n;

	buf_init(b, IMAGE_MAX_BYTES);
	while ((n = pread(fd, chunk, sizeof(chunk), off)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (buf_append(b, chunk, (size_t)n) < 0)
			return -EFBIG;
		off += n;
	}
	return 0;
}

static json_t *load_image(int fd, char *why, size_t whylen)
{
	json_error_t jerr;
	struct buf b;
	json_t *j = NULL;
	int r = read_all(fd, &b);

	if (r == 0) {
		j = json_loadb(b.data ? b.data : "", b.len, 0, &jerr);
		if (!j)
			snprintf(why, whylen, "state image: %s (line %d)",
				 jerr.text, jerr.line);
		else if (json_integer_value(json_object_get(
				 j, "credfs_state")) != IMAGE_VERSION) {
			snprintf(why, whylen,
				 "state image: not version %d; starting "
				 "without it",
				 IMAGE_VERSION);
			json_decref(j);
			j = NULL;
		}
	} else {
		snprintf(why, whylen, "state image: %s", strerror(-r));
	}
	buf_free(&b);
	return j;
}

void handoff_take(struct handoff *h, char *why, size_t whylen)
{
	struct listen_fd fds[16];
	size_t n = notify_listen_fds(fds, 16), i;
	uint64_t seq;
	json_t *j;

	*h = (struct handoff){-1, -1, -1, -1, NULL, 0};
	why[0] = '\0';
	for (i = 0; i < n; i++) {
		const char *name = fds[i].name;

		if (!strcmp(name, "fuse")) {
			h->fuse_fd = fds[i].fd;
		} else if (!strcmp(name, "init")) {
			h->init_fd = fds[i].fd;
		} else if (!strcmp(name, "store-lock")) {
			h->lock_fd = fds[i].fd;
		} else if (!strcmp(name, "ready")) {
			h->ready_fd = fds[i].fd;
		} else if (!strncmp(name, "state", 5)) {
			j = load_image(fds[i].fd, why, whylen);
			seq = j ? (uint64_t)json_integer_value(
					  json_object_get(j, "seq"))
				: 0;
			if (j && (!h->image || seq > h->image_seq)) {
				json_decref(h->image);
				h->image = j;
				h->image_seq = seq;
			} else {
				json_decref(j);
			}
			close(fds[i].fd);
		} else {
			close(fds[i].fd); /* not ours */
		}
	}
	if (h->fuse_fd >= 0 && h->init_fd < 0) {
		snprintf(why, whylen,
			 "a FUSE connection came without its INIT request; "
			 "mounting afresh");
		close(h->fuse_fd);
		h->fuse_fd = -1;
	}
}

void handoff_clear(struct handoff *h)
{
	if (h->init_fd >= 0)
		close(h->init_fd);
	if (h->ready_fd >= 0)
		close(h->ready_fd);
	json_decref(h->image);
	h->init_fd = h->ready_fd = -1;
	h->image = NULL;
}

/* The image's entry of each slot (NULL: none), for @t's slots. */
static const json_t **by_slot(const struct cred_table *t, const json_t *image)
{
	const json_t *creds = json_object_get(image, "creds");
	uint32_t n = atomic_load(&((struct cred_table *)t)->n_slots);
	const json_t **v = calloc(n + 1, sizeof(*v));
	size_t i;

	for (i = 0; v && i < json_array_size(creds); i++) {
		const json_t *j = json_array_get(creds, i);
		json_int_t slot =
			json_integer_value(json_object_get(j, "slot"));

		if (slot >= 0 && slot < n)
			v[slot] = j;
	}
	return v;
}

/* @c's entry in @v, if it is @c's (the same names). */
static const json_t *entry_of(const struct cred *c, const json_t **v)
{
	const json_t *j = v ? v[cred_index(c)] : NULL;

	return j && cred_export_matches(c, j) ? j : NULL;
}

void handoff_floors(struct cred_table *t, const json_t *image)
{
	const struct config *cfg;
	const json_t **v = image ? by_slot(t, image) : NULL;
	/* Without an image, above anything a process that ran until now
	 * can have numbered (no credential rotates 64 times a second). */
	uint64_t floor = image ? 0 : (uint64_t)(time_real_ms() / 1000) * 64;
	size_t i;

	cred_table_enter(t);
	cfg = cred_table_config(t);
	for (i = 0; i < cfg->n_creds; i++) {
		struct cred *c = cred_of(t, &cfg->creds[i]);

		cred_import_floor(c, entry_of(c, v), floor);
	}
	cred_table_exit(t);
	free(v);
}

size_t handoff_restore(struct cred_table *t, const json_t *image)
{
	const struct config *cfg;
	const json_t **v = by_slot(t, image), *j;
	size_t i, n = 0;

	cred_table_enter(t);
	cfg = cred_table_config(t);
	for (i = 0; v && i < cfg->n_creds; i++) {
		struct cred *c = cred_of(t, &cfg->creds[i]);

		j = entry_of(c, v);
		n += j && cred_import(t, c, j);
	}
	cred_table_exit(t);
	free(v);
	return n;
}

#define STOPPED_NAME SEALED_STATE

int handoff_save_stopped(struct cred_table *t, const char *dir,
			 const uint8_t *master)
{
	json_t *j = NULL, *creds = json_array();
	const struct config *cfg;
	struct sealed_key k;
	size_t i;
	int r;

	cred_table_enter(t);
	cfg = cred_table_config(t);
	for (i = 0; creds && i < cfg->n_creds; i++) {
		struct cred *c = cred_of(t, &cfg->creds[i]);
		json_t *e = cred_uses_store(c) ? NULL : cred_export(c);

		/* Only those with a token: a start that failed early leaves
		 * the file it did not take. */
		if (e && !json_array_size(json_object_get(e, "tokens")))
			json_decref(e);
		else if (e && json_array_append_new(creds, e) < 0)
			break;
	}
	cred_table_exit(t);
	if (creds && !json_array_size(creds)) {
		json_decref(creds);
		return 0;
	}
	if (creds && i == cfg->n_creds)
		j = json_pack("{s:i, s:I, s:O}", "credfs_state", IMAGE_VERSION,
			      "written_ms", (json_int_t)time_real_ms(), "creds",
			      creds);
	r = j ? sealed_key_derive(master, "state", &k) : -ENOMEM;
	if (r == 0)
		r = sealed_write(dir, STOPPED_NAME, &k, j);
	sealed_key_clear(&k);
	json_decref(creds);
	json_decref(j);
	return r;
}

size_t handoff_restore_stopped(struct cred_table *t, const char *dir,
			       const uint8_t *master)
{
	const struct config *cfg;
	const struct cred_conf *cc;
	struct sealed_key k;
	json_t *image = NULL, *e;
	char path[4096];
	size_t i, n = 0;
	int r;

	snprintf(path, sizeof(path), "%s/%s", dir, STOPPED_NAME);
	r = sealed_key_derive(master, "state", &k);
	if (r == 0)
		r = sealed_read(dir, STOPPED_NAME, &k, &image);
	sealed_key_clear(&k);
	if (r != -ENOENT && unlink(path) < 0 && errno != ENOENT)
		log_warn("%s: cannot remove it: %s", path, strerror(errno));
	if (r == 0 && json_integer_value(json_object_get(
			      image, "credfs_state")) != IMAGE_VERSION)
		r = -EPROTO;
	if (r < 0) {
		if (r != -ENOENT)
			log_warn("%s: %s: the tokens of the last stop are not "
				 "used",
				 path, sealed_read_error(r));
		json_decref(image);
		return 0;
	}
	cred_table_enter(t);
	cfg = cred_table_config(t);
	json_array_foreach (json_object_get(image, "creds"), i, e) {
		const char *tenant = json_string_value(
				   json_object_get(e, "tenant")),
			   *provider = json_string_value(
				   json_object_get(e, "provider"));

		cc = tenant && provider
			     ? config_find_cred(cfg, tenant, provider)
			     : NULL;
		if (cc && !cred_uses_store(cred_of(t, cc))) {
			/* No generation of the last process used again. */
			cred_import_floor(cred_of(t, cc), e, 0);
			n += cred_import(t, cred_of(t, cc), e);
		}
	}
	cred_table_exit(t);
	json_decref(image);
	return n;
}

int handoff_image_fd(struct cred_table *t, struct fs *fs,
		     const char *mountpoint, bool handles, uint64_t seq)
{
	json_t *j = json_object(), *creds = json_array(), *names;
	const struct config *cfg;
	cred_table_enter(t);
	char *text = NULL;
	size_t i;
	int r;

	cfg = cred_table_config(t);
	for (i = 0; creds && i < cfg->n_creds; i++)
		if (json_array_append_new(
			    creds, cred_export(cred_of(t, &cfg->creds[i]))) < 0)
			break;
	names = tree_names_export(t->names);
	if (!j || !names || !creds || i < cfg->n_creds ||
	    json_object_set_new(j, "credfs_state",
				json_integer(IMAGE_VERSION)) ||
	    json_object_set_new(j, "seq", json_integer((json_int_t)seq)) ||
	    json_object_set_new(j, "written_ms",
				json_integer(time_real_ms())) ||
	    json_object_set_new(j, "mountpoint", json_string(mountpoint)) ||
	    json_object_set(j, "names", names) ||
	    json_object_set(j, "creds", creds) ||
	    json_object_set_new(j, "fs", fs_export(fs, handles)) ||
	    json_object_set_new(j, "discovery", discovery_export())) {
		cred_table_exit(t);
		r = -ENOMEM;
		goto out;
	}
	cred_table_exit(t);
	text = json_dumps(j, JSON_COMPACT);
	r = text ? memfd_sealed("credfs-state", text, strlen(text)) : -ENOMEM;
out:
	if (text)
		freezero(text, strlen(text));
	json_decref(names);
	json_decref(creds);
	json_decref(j);
	return r;
}

int handoff_first_request(struct fuse_session *se, int *init_fd)
{
	struct fuse_buf buf = {0};
	const uint32_t *hdr;
	int n;

	do
		n = fuse_session_receive_buf(se, &buf);
	while (n == -EINTR);
	if (n <= 0) {
		free(buf.mem);
		return n < 0 ? n : -ENOTCONN;
	}
	hdr = buf.mem;
	if ((buf.flags & FUSE_BUF_IS_FD) || (size_t)n < 16 ||
	    hdr[1] != FUSE_INIT_OPCODE) {
		free(buf.mem);
		return -EPROTO;
	}
	*init_fd = memfd_sealed("credfs-init", buf.mem, (size_t)n);
	fuse_session_process_buf(se, &buf);
	free(buf.mem);
	return *init_fd < 0 ? *init_fd : 0;
}

bool handoff_alive(int fuse_fd)
{
	struct pollfd p = {.fd = fuse_fd, .events = 0};

	/* POLLERR: unmounted, or the connection aborted (libfuse's own
	 * test before it unmounts). */
	return !(poll(&p, 1, 0) == 1 && (p.revents & POLLERR));
}

int handoff_resend(struct fuse_session *se)
{
	/* struct fuse_out_header: len, error (the notify code), unique 0. */
	struct {
		uint32_t len;
		int32_t error;
		uint64_t unique;
	} oh = {16, FUSE_NOTIFY_RESEND_CODE, 0};

	if (write(fuse_session_fd(se), &oh, sizeof(oh)) != sizeof(oh))
		return -errno;
	return 0;
}

int handoff_resume(struct fuse_session *se, struct handoff *h, bool *resent)
{
	struct fuse_buf buf = {0};
	char path[32];
	struct buf init;
	int r;

	*resent = false;
	snprintf(path, sizeof(path), "/dev/fd/%d", h->fuse_fd);
	if (fuse_session_mount(se, path) != 0)
		return -EBADF;
	h->fuse_fd = -1; /* the session's now */
	r = read_all(h->init_fd, &init);
	if (r == 0 && init.len < 16)
		r = -EPROTO;
	if (r < 0) {
		buf_free(&init);
		return r;
	}
	buf.mem = init.data;
	buf.size = init.len;
	fuse_session_process_buf(se, &buf);
	buf_free(&init);
	r = handoff_resend(se);
	*resent = r == 0;
	return 0;
}

/* FDSTORE=1 of @fd as @name, replacing what had that name. */
static void store_fd(int fd, const char *name)
{
	notify("FDSTOREREMOVE=1\nFDNAME=%s", name);
	if (notify_with_fds(&fd, 1, "FDSTORE=1\nFDNAME=%s", name) < 0)
		log_warn("cannot put %s in the service manager's fd store",
			 name);
}

void handoff_store_fds(int fuse_fd, int init_fd)
{
	if (!notify_available())
		return;
	store_fd(fuse_fd, "fuse");
	store_fd(init_fd, "init");
}

void handoff_store_image(int state_fd, uint64_t seq)
{
	char name[16], other[16];
	int fd = state_fd;

	if (!notify_available())
		return;
	/* Two names, so that there is always one image in the store: the
	 * new one goes in before the older one goes. */
	snprintf(name, sizeof(name), "state-%u", (unsigned)(seq & 1));
	snprintf(other, sizeof(other), "state-%u", (unsigned)((seq + 1) & 1));
	notify("FDSTOREREMOVE=1\nFDNAME=%s", name);
	if (notify_with_fds(&fd, 1, "FDSTORE=1\nFDNAME=%s", name) == 0)
		notify("FDSTOREREMOVE=1\nFDNAME=%s", other);
}

void handoff_store_clear(void)
{
	static const char *const names[] = {"fuse", "init", "state-0",
					    "state-1"};
	size_t i;

	for (i = 0; notify_available() && i < ARRAY_SIZE(names); i++)
		notify("FDSTOREREMOVE=1\nFDNAME=%s", names[i]);
}

/* "KEY=" and the decimal @v into @dst, async-signal-safe. */
static void put_num(char *dst, const char *key, long v)
{
	char digits[24];
	int n = 0;

	while (*key)
		*dst++ = *key++;
	do
		digits[n++] = (char)('0' + v % 10);
	while ((v /= 10) > 0);
	while (n)
		*dst++ = digits[--n];
	*dst = '\0';
}

int handoff_spawn(const char *exe, char *const argv[], const char *cwd,
		  const int *fds, const char *const *names, size_t n,
		  pid_t *pid, int *ready)
{
	static char listen_pid[40], watchdog_pid[40], listen_fds[32],
		listen_names[256];
	char **envp;
	size_t i, ne = 0, nenv = 0;
	int p[2], all[MAX_FDS + 1], tmp[MAX_FDS + 1];
	bool watchdog = getenv("WATCHDOG_USEC") != NULL;
	pid_t child;

	if (n > MAX_FDS)
		return -EINVAL;
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	for (i = 0; i < n; i++)
		all[i] = fds[i];
	all[n] = p[1];
	snprintf(listen_fds, sizeof(listen_fds), "LISTEN_FDS=%zu", n + 1);
	snprintf(listen_names, sizeof(listen_names), "LISTEN_FDNAMES=");
	for (i = 0; i < n; i++) {
		strncat(listen_names, names[i],
			sizeof(listen_names) - strlen(listen_names) - 1);
		strncat(listen_names, ":",
			sizeof(listen_names) - strlen(listen_names) - 1);
	}
	strncat(listen_names, "ready",
		sizeof(listen_names) - strlen(listen_names) - 1);
	while (environ[nenv])
		nenv++;
	envp = calloc(nenv + 5, sizeof(char *));
	if (!envp) {
		close(p[0]);
		close(p[1]);
		return -ENOMEM;
	}
	for (i = 0; i < nenv; i++)
		if (strncmp(environ[i], "LISTEN_", 7) &&
		    strncmp(environ[i], "WATCHDOG_PID=", 13))
			envp[ne++] = environ[i];
	envp[ne++] = listen_fds;
	envp[ne++] = listen_names;
	envp[ne++] = listen_pid;
	if (watchdog)
		envp[ne++] = watchdog_pid;
	child = fork();
	if (child < 0) {
		int e = errno;

		free(envp);
		close(p[0]);
		close(p[1]);
		return -e;
	}
	if (child == 0) {
		/* Only async-signal-safe calls from here. The signals the
		 * daemon takes stay blocked: the new one takes them too. */
		put_num(listen_pid, "LISTEN_PID=", (long)getpid());
		put_num(watchdog_pid, "WATCHDOG_PID=", (long)getpid());
		for (i = 0; i <= n; i++)
			tmp[i] = fcntl(all[i], F_DUPFD_CLOEXEC,
				       NOTIFY_LISTEN_FDS_START + MAX_FDS + 1);
		for (i = 0; i <= n; i++)
			if (tmp[i] < 0 ||
			    dup2(tmp[i], NOTIFY_LISTEN_FDS_START + (int)i) < 0)
				_exit(127);
		if (cwd && chdir(cwd) < 0)
			_exit(127);
		execve(exe, argv, envp);
		_exit(127);
	}
	free(envp);
	close(p[1]);
	*pid = child;
	*ready = p[0];
	return 0;
}

void handoff_ready(struct handoff *h)
{
	char one = 1;

	if (h->ready_fd < 0)
		return;
	(void)!write(h->ready_fd, &one, 1);
	close(h->ready_fd);
	h->ready_fd = -1;
}

int handoff_unmount(const char *mountpoint)
{
	char *const argv[] = {"fusermount3",	  "-u", "-q", "-z",
			      (char *)mountpoint, NULL};
	int status;
	pid_t pid;

	if (geteuid() == 0)
		return umount2(mountpoint, MNT_DETACH) < 0 ? -errno : 0;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execvp(argv[0], argv);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

/* How soon after a change the fd store's image is rewritten: at most
 * this often, and at most a tenth of the time spent writing (a large
 * table's image is not written back to back). */
#define KEEP_EVERY_MS 100

struct keeper {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	struct cred_table *t;
	struct fs *fs;
	const char *mountpoint;
	uint64_t seq;
	uint64_t written;  /* t->version of the last image */
	int64_t next_mono; /* not before this */
};

/* One image into the fd store, if anything changed since the last. */
static void keep_once(struct keeper *k)
{
	uint64_t v = atomic_load(&k->t->version);
	int64_t t0 = time_mono_ms();
	int fd;

	if (v == k->written)
		return;
	fd = handoff_image_fd(k->t, k->fs, k->mountpoint, false, ++k->seq);
	if (fd < 0) {
		log_warn("cannot write the state image for the fd store: %s",
			 strerror(-fd));
		return;
	}
	handoff_store_image(fd, k->seq);
	close(fd);
	k->written = v;
	k->next_mono = time_mono_ms() + 10 * (time_mono_ms() - t0);
}

static void *keeper_main(void *arg)
{
	struct keeper *k = arg;
	struct timespec ts;

	pthread_mutex_lock(&k->lock);
	while (!k->stop) {
		int64_t at = time_mono_ms() + KEEP_EVERY_MS;

		if (k->next_mono > at)
			at = k->next_mono;
		ts.tv_sec = at / 1000;
		ts.tv_nsec = (at % 1000) * 1000000;
		pthread_cond_timedwait(&k->cond, &k->lock, &ts);
		if (!k->stop)
			keep_once(k);
	}
	pthread_mutex_unlock(&k->lock);
	return NULL;
}

int handoff_keeper_start(struct cred_table *t, struct fs *fs,
			 const char *mountpoint, uint64_t seq,
			 struct keeper **out)
{
	pthread_condattr_t ca;
	struct keeper *k;

	*out = NULL;
	if (!notify_available())
		return 0; /* nobody keeps fds for us */
	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->t = t;
	k->fs = fs;
	k->mountpoint = mountpoint;
	k->seq = seq;
	k->written = UINT64_MAX;
	pthread_mutex_init(&k->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&k->cond, &ca);
	pthread_condattr_destroy(&ca);
	keep_once(k); /* before serving: the image the next start needs */
	if (pthread_create(&k->thread, NULL, keeper_main, k) != 0) {
		pthread_cond_destroy(&k->cond);
		pthread_mutex_destroy(&k->lock);
		free(k);
		return -EAGAIN;
	}
	*out = k;
	return 0;
}

void handoff_keeper_sync(struct keeper *k)
{
	if (!k)
		return;
	pthread_mutex_lock(&k->lock);
	keep_once(k);
	pthread_mutex_unlock(&k->lock);
}

uint64_t handoff_keeper_stop(struct keeper *k, uint64_t seq)
{
	if (!k)
		return seq;
	pthread_mutex_lock(&k->lock);
	k->stop = true;
	pthread_cond_signal(&k->cond);
	pthread_mutex_unlock(&k->lock);
	pthread_join(k->thread, NULL);
	seq = k->seq > seq ? k->seq : seq;
	pthread_cond_destroy(&k->cond);
	pthread_mutex_destroy(&k->lock);
	free(k);
	return seq;
}
