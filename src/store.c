/*
 * store: the file backend. Layout under the store directory (0700):
 *
 *   daemon.lock        flock()ed by the one credfs daemon; holds its pid
 *   write.lock         flock()ed around every record write or removal
 *   keycheck           a record sealed with the master key, to tell a
 *                      wrong key from a damaged record
 *   <tenant>/<provider>.rec   one sealed record per credential (0600)
 *   <tenant>/<provider>.rek   the same under a new key, during a rekey
 *   control.sock       the daemon's control socket
 *
 * A write goes to a temporary file in the same directory, is fsync()ed,
 * renamed over the record and the directory fsync()ed: a crash at any
 * instant leaves the old record or the new one. Nothing is followed
 * through a symlink.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "record.h"
#include "store.h"
#include "util.h"

#define KEYCHECK_TENANT "-keycheck-"

struct fstore {
	struct store base; /* first: the backend-neutral part */
	int dirfd;
	int daemon_lock; /* -1 unless STORE_DAEMON */
	int write_lock;
	const uint8_t *master;
};

/* Take (@op LOCK_EX) or release (LOCK_UN) the write lock: 0 or -errno
 * (a lock that cannot be taken is an error, never a write without it). */
static int write_lock(struct fstore *s, int op)
{
	while (flock(s->write_lock, op) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

static int lock_file(int dirfd, const char *name, int *out)
{
	int fd = openat(dirfd, name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
			0600);

	if (fd < 0)
		return -errno;
	*out = fd;
	return 0;
}

/* daemon.lock as the process this one took over from held it: -1. */
static int inherited_lock = -1;

void store_inherit_lock(int fd)
{
	inherited_lock = fd;
}

/* Whether @fd is @dirfd's daemon.lock (not another store's). */
static bool is_daemon_lock(int dirfd, int fd)
{
	struct stat a, b;

	return fstatat(dirfd, "daemon.lock", &a, AT_SYMLINK_NOFOLLOW) == 0 &&
	       fstat(fd, &b) == 0 && a.st_dev == b.st_dev &&
	       a.st_ino == b.st_ino;
}

/* Take the daemon lock, or say who holds it. An inherited one is held
 * already: the same open file, so flock() grants it again. */
static int take_daemon_lock(struct fstore *s, const char *dir, char *err,
			    size_t errlen)
{
	char pid[32] = "";
	ssize_t n;
	int r = 0;

	if (inherited_lock >= 0 && is_daemon_lock(s->dirfd, inherited_lock)) {
		s->daemon_lock = inherited_lock;
		inherited_lock = -1;
	} else {
		r = lock_file(s->dirfd, "daemon.lock", &s->daemon_lock);
	}
	if (r < 0) {
		snprintf(err, errlen, "store %s: daemon.lock: %s", dir,
			 strerror(-r));
		return r;
	}
	if (flock(s->daemon_lock, LOCK_EX | LOCK_NB) < 0) {
		n = pread(s->daemon_lock, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		snprintf(err, errlen,
			 "store %s is in use by another credfs "
			 "(pid %s)",
			 dir, pid[0] ? pid : "unknown");
		return -EBUSY;
	}
	n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(s->daemon_lock, 0) < 0 ||
	    pwrite(s->daemon_lock, pid, (size_t)n, 0) != n)
		return -errno;
	return 0;
}

/* Read a whole file under @dirfd (at most RECORD_MAX_BYTES). */
static int read_at(int dirfd, const char *name, struct buf *out)
{
	char chunk[4096];
	struct stat st;
	ssize_t n;
	int fd, r = 0;

	buf_init(out, RECORD_MAX_BYTES);
	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		r = -EINVAL;
	while (r == 0 && (n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		r = n < 0 ? -errno : buf_append(out, chunk, (size_t)n);
	}
	close(fd);
	if (r < 0)
		buf_free(out);
	return r;
}

/* The tenant's directory, created (and made durable) if @create. */
static int tenant_dir(struct fstore *s, const char *tenant, bool create)
{
	int fd;

	if (!util_name_valid(tenant))
		return -EINVAL;
	if (create) {
		if (mkdirat(s->dirfd, tenant, 0700) == 0) {
			if (fsync(s->dirfd) < 0)
				return -errno;
		} else if (errno != EEXIST) {
			return -errno;
		}
	}
	fd = openat(s->dirfd, tenant,
		    O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	return fd < 0 ? -errno : fd;
}

static void record_name(const char *provider, char out[80])
{
	snprintf(out, 80, "%s.rec", provider);
}

static int check_key(struct fstore *s, const char *dir, bool create, char *err,
		     size_t errlen)
{
	struct record r = {0};
	struct buf b;
	int ret;

	ret = read_at(s->dirfd, "keycheck", &b);
	if (ret == -ENOENT && create) {
		ret = record_seal(s->master, KEYCHECK_TENANT, "-", &r, &b);
		if (ret == 0)
			ret = file_replace_at(s->dirfd, "keycheck", b.data,
					      b.len);
		buf_free(&b);
		if (ret < 0)
			snprintf(err, errlen,
				 "store %s: cannot write "
				 "keycheck: %s",
				 dir, strerror(-ret));
		return ret;
	}
	if (ret == -ENOENT) {
		snprintf(err, errlen,
			 "store %s is not initialised (no "
			 "keycheck); run credfsctl init",
			 dir);
		return ret;
	}
	if (ret < 0) {
		snprintf(err, errlen, "store %s: keycheck: %s", dir,
			 strerror(-ret));
		return ret;
	}
	ret = record_open(s->master, KEYCHECK_TENANT, "-", b.data, b.len, &r);
	buf_free(&b);
	record_clear(&r);
	if (ret < 0) {
		snprintf(err, errlen,
			 "store %s: the master key does not open "
			 "this store (wrong key file?)",
			 dir);
		return -EKEYREJECTED;
	}
	return 0;
}

static int foreach_file(struct fstore *s, const char *suffix,
			int (*fn)(void *arg, const char *tenant,
				  const char *provider),
			void *arg);
static int rekey_settle(void *arg, const char *tenant, const char *provider);
static const struct store_ops file_ops;
static void file_close(struct store *bs);

int store_open_dir(const char *dir, const uint8_t *master, enum store_mode mode,
		   struct store **out, char *err, size_t errlen)
{
	struct fstore *s = calloc(1, sizeof(*s));
	struct stat st;
	int r;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->base.ops = &file_ops;
	s->daemon_lock = s->write_lock = s->dirfd = -1;
	s->master = master;
	if (mode == STORE_CREATE && mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(err, errlen, "store %s: %s", dir, strerror(-r));
		goto out_free;
	}
	s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (s->dirfd < 0) {
		r = -errno;
		snprintf(err, errlen, "store %s: %s", dir, strerror(-r));
		goto out_free;
	}
	if (fstat(s->dirfd, &st) == 0 && (st.st_mode & 077)) {
		r = -EPERM;
		snprintf(err, errlen,
			 "store %s: mode %04o lets group or others "
			 "in; chmod 700 it",
			 dir, (unsigned)(st.st_mode & 07777));
		goto out_free;
	}
	if (mode == STORE_DAEMON) {
		r = take_daemon_lock(s, dir, err, errlen);
		if (r < 0)
			goto out_free;
	}
	r = lock_file(s->dirfd, "write.lock", &s->write_lock);
	if (r == 0)
		r = check_key(s, dir, mode == STORE_CREATE, err, errlen);
	if (r < 0)
		goto out_free;
	/* Finish, or undo, a rekey that was interrupted. */
	r = write_lock(s, LOCK_EX);
	if (r == 0) {
		r = foreach_file(s, ".rek", rekey_settle, s);
		write_lock(s, LOCK_UN);
	}
	if (r < 0) {
		snprintf(err, errlen, "store %s: cannot finish a rekey: %s",
			 dir, strerror(-r));
		goto out_free;
	}
	*out = &s->base;
	return 0;
out_free:
	file_close(&s->base);
	return r;
}

/* The sealed bytes of tenant/provider's record. */
static int read_record(struct fstore *s, const char *tenant,
		       const char *provider, struct buf *b)
{
	char name[80];
	int fd, ret;

	if (!util_name_valid(provider))
		return -EINVAL;
	fd = tenant_dir(s, tenant, false);
	if (fd < 0)
		return fd;
	record_name(provider, name);
	ret = read_at(fd, name, b);
	close(fd);
	return ret;
}

static int file_load(struct store *bs, const char *tenant, const char *provider,
		     uint64_t min_generation, struct record *r)
{
	struct fstore *s = (struct fstore *)bs;
	struct buf b;
	int ret;

	memset(r, 0, sizeof(*r));
	ret = read_record(s, tenant, provider, &b);
	if (ret < 0)
		return ret;
	ret = record_open(s->master, tenant, provider, b.data, b.len, r);
	buf_free(&b);
	if (ret == 0 && r->generation < min_generation) {
		record_clear(r);
		ret = -ESTALE;
	}
	return ret;
}

/* file_load_many()'s share of the work for one thread. */
struct load_share {
	struct store *s;
	struct store_load *l;
	size_t n;
	pthread_t thread;
};

static void *load_share(void *arg)
{
	struct load_share *sh = arg;
	size_t i;

	for (i = 0; i < sh->n; i++)
		sh->l[i].ret = file_load(sh->s, sh->l[i].tenant,
					 sh->l[i].provider, 0, sh->l[i].r);
	return NULL;
}

/* Reading and decrypting, a share for each CPU (at most LOAD_THREADS). */
#define LOAD_THREADS 8

static void file_load_many(struct store *bs, struct store_load *l, size_t n)
{
	struct load_share sh[LOAD_THREADS];
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	size_t k, i, at = 0, started = 0;

	k = cpus < 1 ? 1 : cpus > LOAD_THREADS ? LOAD_THREADS : (size_t)cpus;
	if (n < 64 * k)
		k = 1; /* not worth a thread */
	for (i = 0; i < k; i++) {
		sh[i] = (struct load_share){
			.s = bs,
			.l = l + at,
			.n = n / k + (i < n % k),
		};
		at += sh[i].n;
	}
	/* The first share is this thread's; a thread that cannot start
	 * leaves its share to it as well. */
	for (i = 1; i < k; i++)
		if (pthread_create(&sh[i].thread, NULL, load_share, &sh[i]) ==
		    0)
			started |= (size_t)1 << i;
	load_share(&sh[0]);
	for (i = 1; i < k; i++) {
		if (started & ((size_t)1 << i))
			pthread_join(sh[i].thread, NULL);
		else
			load_share(&sh[i]);
	}
}

/* Whether @name under @dirfd may be replaced by generation @gen. */
static int check_expect(int dirfd, const char *name, uint64_t gen,
			uint64_t expect)
{
	uint64_t have = 0;
	struct buf b;
	int r;

	r = read_at(dirfd, name, &b);
	if (r == -ENOENT)
		return expect == 0 || expect == STORE_ANY_GEN ? 0 : -ESTALE;
	if (r < 0)
		return r;
	r = record_generation(b.data, b.len, &have);
	buf_free(&b);
	if (expect == STORE_ANY_GEN)
		return r < 0 || have < gen ? 0 : -ESTALE;
	return r == 0 && have == expect ? 0 : -ESTALE;
}

static int file_save(struct store *bs, const char *tenant, const char *provider,
		     const struct record *r, uint64_t expect)
{
	struct fstore *s = (struct fstore *)bs;
	char name[80];
	struct buf b;
	int fd, ret;

	if (!util_name_valid(provider))
		return -EINVAL;
	ret = record_seal(s->master, tenant, provider, r, &b);
	if (ret < 0)
		return ret;
	ret = write_lock(s, LOCK_EX);
	if (ret < 0) {
		buf_free(&b);
		return ret;
	}
	fd = tenant_dir(s, tenant, true);
	if (fd >= 0) {
		record_name(provider, name);
		ret = check_expect(fd, name, r->generation, expect);
		if (ret == 0)
			ret = file_replace_at(fd, name, b.data, b.len);
		close(fd);
	} else {
		ret = fd;
	}
	write_lock(s, LOCK_UN);
	buf_free(&b);
	return ret;
}

/* Records a group writes at most, open at once. */
#define GROUP_MAX 64

/* One record of a group: sealed, then in its temp file, then renamed. */
struct group_item {
	struct store_write *w;
	struct buf sealed;
	int dirfd, fd;
	char name[80], tmp[256];
};

/* Write group @g (@n records, each sealed) under the held write lock:
 * every temp file, one sync for them all, the renames, and one fsync per
 * tenant directory. */
static void write_group(struct fstore *s, struct group_item *g, size_t n)
{
	size_t i, k, synced = 0;
	int r = 0;

	for (i = 0; i < n; i++) {
		struct store_write *w = g[i].w;

		g[i].fd = -1;
		g[i].dirfd = tenant_dir(s, w->tenant, true);
		if (g[i].dirfd < 0) {
			w->ret = g[i].dirfd;
			continue;
		}
		record_name(w->provider, g[i].name);
		w->ret = check_expect(g[i].dirfd, g[i].name, w->r->generation,
				      w->expect);
		if (w->ret == 0) {
			g[i].fd = file_write_tmp(
				g[i].dirfd, g[i].name, g[i].sealed.data,
				g[i].sealed.len, false, g[i].tmp);
			if (g[i].fd < 0)
				w->ret = g[i].fd;
			else
				synced = i + 1;
		}
	}
	/* One record: its own fsync; more: one syncfs for all of them. */
	for (i = 0, k = 0; i < n; i++)
		k += g[i].fd >= 0;
	if (k == 1 && fsync(g[synced - 1].fd) < 0)
		r = -errno;
	else if (k > 1 && syncfs(g[synced - 1].fd) < 0)
		r = -errno;
	for (i = 0; i < n; i++) {
		if (g[i].fd < 0)
			continue;
		if (close(g[i].fd) < 0 && r == 0)
			g[i].w->ret = -errno;
		else
			g[i].w->ret = r;
		if (g[i].w->ret == 0 &&
		    renameat(g[i].dirfd, g[i].tmp, g[i].dirfd, g[i].name) < 0)
			g[i].w->ret = -errno;
		if (g[i].w->ret < 0)
			unlinkat(g[i].dirfd, g[i].tmp, 0);
	}
	/* The renames, durable: one fsync per directory. */
	for (i = 0; i < n; i++) {
		if (g[i].dirfd < 0)
			continue;
		r = fsync(g[i].dirfd) < 0 ? -errno : 0;
		for (k = i; k < n; k++) {
			if (g[k].dirfd < 0 ||
			    strcmp(g[k].w->tenant, g[i].w->tenant))
				continue;
			if (g[k].fd >= 0 && g[k].w->ret == 0)
				g[k].w->ret = r;
			if (k != i) {
				close(g[k].dirfd);
				g[k].dirfd = -1;
			}
		}
		close(g[i].dirfd);
		g[i].dirfd = -1;
	}
}

static void file_save_many(struct store *bs, struct store_write **w, size_t n)
{
	struct fstore *s = (struct fstore *)bs;
	struct group_item g[GROUP_MAX];
	size_t i, k;
	int r;

	while (n) {
		k = 0;
		for (i = 0; i < n && k < GROUP_MAX; i++) {
			w[i]->ret =
				util_name_valid(w[i]->provider)
					? record_seal(s->master, w[i]->tenant,
						      w[i]->provider, w[i]->r,
						      &g[k].sealed)
					: -EINVAL;
			if (w[i]->ret == 0)
				g[k++].w = w[i];
		}
		r = write_lock(s, LOCK_EX);
		if (r == 0) {
			write_group(s, g, k);
			write_lock(s, LOCK_UN);
		}
		while (k--) {
			if (r < 0)
				g[k].w->ret = r;
			buf_free(&g[k].sealed);
		}
		w += i;
		n -= i;
	}
}

static int file_generation(struct store *bs, const char *tenant,
			   const char *provider, uint64_t *gen)
{
	struct fstore *s = (struct fstore *)bs;
	struct buf b;
	int ret;

	ret = read_record(s, tenant, provider, &b);
	if (ret < 0)
		return ret;
	ret = record_generation(b.data, b.len, gen);
	buf_free(&b);
	return ret;
}

static int file_remove(struct store *bs, const char *tenant,
		       const char *provider)
{
	struct fstore *s = (struct fstore *)bs;
	char name[80];
	int fd, ret = 0;

	if (!util_name_valid(provider))
		return -EINVAL;
	ret = write_lock(s, LOCK_EX);
	if (ret < 0)
		return ret;
	fd = tenant_dir(s, tenant, false);
	if (fd >= 0) {
		record_name(provider, name);
		if (unlinkat(fd, name, 0) < 0 || fsync(fd) < 0)
			ret = -errno;
		close(fd);
	} else {
		ret = fd;
	}
	write_lock(s, LOCK_UN);
	return ret;
}

/* "<provider><suffix>" -> provider, if it is one. */
static bool strip_suffix(const char *name, const char *suffix, char out[80])
{
	size_t n = strlen(name), k = strlen(suffix);

	if (n <= k || n - k >= 80 || strcmp(name + n - k, suffix))
		return false;
	memcpy(out, name, n - k);
	out[n - k] = '\0';
	return util_name_valid(out);
}

/* Call @fn for each "<provider><suffix>" under tenant directories. */
static int foreach_file(struct fstore *s, const char *suffix,
			int (*fn)(void *arg, const char *tenant,
				  const char *provider),
			void *arg)
{
	struct dirent *te, *pe;
	char provider[80];
	DIR *top, *sub;
	int fd, r = 0;

	/* A descriptor of its own: readdir() offsets are per open file. */
	fd = openat(s->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	top = fdopendir(fd);
	if (!top) {
		close(fd);
		return -errno;
	}
	while (r == 0 && (te = readdir(top))) {
		if (!util_name_valid(te->d_name))
			continue;
		fd = openat(s->dirfd, te->d_name,
			    O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue; /* keycheck, locks, the socket */
		sub = fdopendir(fd);
		if (!sub) {
			close(fd);
			continue;
		}
		while (r == 0 && (pe = readdir(sub)))
			if (strip_suffix(pe->d_name, suffix, provider))
				r = fn(arg, te->d_name, provider);
		closedir(sub);
	}
	closedir(top);
	return r;
}

static int file_foreach(struct store *bs,
			int (*fn)(void *arg, const char *tenant,
				  const char *provider),
			void *arg)
{
	struct fstore *s = (struct fstore *)bs;

	return foreach_file(s, ".rec", fn, arg);
}

struct rekey {
	struct fstore *s;
	const uint8_t *new_master;
	size_t n;
	char *err;
	size_t errlen;
};

/* Rekey phase 1: seal one record under the new key as "<provider>.rek". */
static int rekey_one(void *arg, const char *tenant, const char *provider)
{
	struct rekey *k = arg;
	struct record r;
	char name[80];
	struct buf b;
	int fd, ret;

	ret = file_load(&k->s->base, tenant, provider, 0, &r);
	if (ret < 0) {
		snprintf(k->err, k->errlen,
			 "%s/%s: the record does not open (%s); remove it or "
			 "add it again first",
			 tenant, provider, strerror(-ret));
		return ret;
	}
	ret = record_seal(k->new_master, tenant, provider, &r, &b);
	record_clear(&r);
	if (ret < 0)
		return ret;
	fd = tenant_dir(k->s, tenant, false);
	if (fd >= 0) {
		snprintf(name, sizeof(name), "%s.rek", provider);
		ret = file_replace_at(fd, name, b.data, b.len);
		close(fd);
	} else {
		ret = fd;
	}
	buf_free(&b);
	if (ret < 0)
		snprintf(k->err, k->errlen, "%s/%s: cannot write: %s", tenant,
			 provider, strerror(-ret));
	k->n += ret == 0;
	return ret;
}

/*
 * A "<provider>.rek" left by a rekey: if it opens with the key now in force
 * the rekey was committed, so it replaces the record; otherwise the rekey
 * never committed and it goes.
 */
static int rekey_settle(void *arg, const char *tenant, const char *provider)
{
	struct fstore *s = arg;
	char name[80], rec[80];
	struct record r;
	struct buf b;
	int fd, ret;

	fd = tenant_dir(s, tenant, false);
	if (fd < 0)
		return fd;
	snprintf(name, sizeof(name), "%s.rek", provider);
	record_name(provider, rec);
	ret = read_at(fd, name, &b);
	if (ret == 0) {
		ret = record_open(s->master, tenant, provider, b.data, b.len,
				  &r);
		record_clear(&r);
		buf_free(&b);
		if (ret == 0)
			ret = renameat(fd, name, fd, rec) < 0 ? -errno : 0;
		else
			ret = unlinkat(fd, name, 0) < 0 ? -errno : 0;
	}
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

static int rekey_discard(void *arg, const char *tenant, const char *provider)
{
	struct fstore *s = arg;
	char name[80];
	int fd = tenant_dir(s, tenant, false);

	if (fd < 0)
		return 0;
	snprintf(name, sizeof(name), "%s.rek", provider);
	unlinkat(fd, name, 0);
	close(fd);
	return 0;
}

static int file_rekey(struct store *bs, const uint8_t *new_master, size_t *n,
		      char *err, size_t errlen)
{
	struct fstore *s = (struct fstore *)bs;
	struct rekey k = {s, new_master, 0, err, errlen};
	struct record empty = {0};
	struct buf b;
	int r;

	*n = 0;
	if (s->daemon_lock < 0) {
		snprintf(err, errlen, "rekey needs the store to itself");
		return -EBUSY;
	}
	r = write_lock(s, LOCK_EX);
	if (r < 0) {
		snprintf(err, errlen, "cannot lock the store: %s",
			 strerror(-r));
		return r;
	}
	r = foreach_file(s, ".rec", rekey_one, &k);
	if (r == 0)
		r = record_seal(new_master, KEYCHECK_TENANT, "-", &empty, &b);
	if (r == 0) {
		/* The commit point: from here the new key opens the store. */
		r = file_replace_at(s->dirfd, "keycheck", b.data, b.len);
		buf_free(&b);
		if (r < 0)
			snprintf(err, errlen, "cannot write keycheck: %s",
				 strerror(-r));
	}
	if (r < 0) {
		foreach_file(s, ".rek", rekey_discard, s);
		write_lock(s, LOCK_UN);
		return r;
	}
	s->master = new_master;
	r = foreach_file(s, ".rek", rekey_settle, s);
	write_lock(s, LOCK_UN);
	if (r < 0)
		snprintf(err, errlen,
			 "rekey committed, but finishing failed (%s); the "
			 "next start with the new key finishes it",
			 strerror(-r));
	*n = k.n;
	return r;
}

static void file_close(struct store *bs)
{
	struct fstore *s = (struct fstore *)bs;

	if (s->daemon_lock >= 0)
		close(s->daemon_lock);
	if (s->write_lock >= 0)
		close(s->write_lock);
	if (s->dirfd >= 0)
		close(s->dirfd);
	free(s);
}

static const struct store_ops file_ops;

int store_daemon_lock(const struct store *s)
{
	return s && s->ops == &file_ops
		       ? ((const struct fstore *)s)->daemon_lock
		       : -1;
}

static const struct store_ops file_ops = {
	.load = file_load,
	.save = file_save,
	.save_many = file_save_many,
	.load_many = file_load_many,
	.generation = file_generation,
	.remove = file_remove,
	.foreach = file_foreach,
	.rekey = file_rekey,
	.close = file_close,
};

int store_open(const char *dir, const char *dsn, const uint8_t *master,
	       enum store_mode mode, struct store **out, char *err,
	       size_t errlen)
{
	if (!dsn)
		return store_open_dir(dir, master, mode, out, err, errlen);
	/* Local state only (the control socket): each daemon makes its own. */
	if (mode != STORE_ADMIN && mkdir(dir, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "store %s: %s", dir, strerror(errno));
		return -errno;
	}
	return store_open_pg(dsn, master, mode, out, err, errlen);
}

int store_load(struct store *s, const char *tenant, const char *provider,
	       uint64_t min_generation, struct record *r)
{
	return s->ops->load(s, tenant, provider, min_generation, r);
}

void store_load_many(struct store *s, struct store_load *l, size_t n)
{
	size_t i;

	if (s->ops->load_many) {
		s->ops->load_many(s, l, n);
		return;
	}
	for (i = 0; i < n; i++)
		l[i].ret =
			s->ops->load(s, l[i].tenant, l[i].provider, 0, l[i].r);
}

int store_save(struct store *s, const char *tenant, const char *provider,
	       const struct record *r, uint64_t expect)
{
	return s->ops->save(s, tenant, provider, r, expect);
}

void store_save_many(struct store *s, struct store_write **w, size_t n)
{
	size_t i;

	if (s->ops->save_many) {
		s->ops->save_many(s, w, n);
		return;
	}
	for (i = 0; i < n; i++)
		w[i]->ret = s->ops->save(s, w[i]->tenant, w[i]->provider,
					 w[i]->r, w[i]->expect);
}

int store_generation(struct store *s, const char *tenant, const char *provider,
		     uint64_t *gen)
{
	return s->ops->generation(s, tenant, provider, gen);
}

int store_remove(struct store *s, const char *tenant, const char *provider)
{
	return s->ops->remove(s, tenant, provider);
}

int store_foreach(struct store *s,
		  int (*fn)(void *arg, const char *tenant,
			    const char *provider),
		  void *arg)
{
	return s->ops->foreach(s, fn, arg);
}

int store_rekey(struct store *s, const uint8_t *new_master, size_t *n,
		char *err, size_t errlen)
{
	return s->ops->rekey(s, new_master, n, err, errlen);
}

void store_close(struct store *s)
{
	if (s)
		s->ops->close(s);
}

int store_watch(struct store *s, store_change_fn fn, void *arg)
{
	return s->ops->watch ? s->ops->watch(s, fn, arg) : -EOPNOTSUPP;
}

void store_unwatch(struct store *s)
{
	if (s && s->ops->unwatch)
		s->ops->unwatch(s);
}

int store_generations(struct store *s,
		      int (*fn)(void *arg, const char *tenant,
				const char *provider, uint64_t gen),
		      void *arg)
{
	return s->ops->generations ? s->ops->generations(s, fn, arg)
				   : -EOPNOTSUPP;
}

bool store_shared(const struct store *s)
{
	return s && s->ops->lease;
}

int store_lease(struct store *s, const char *tenant, const char *provider,
		int64_t ms, uint64_t *gen)
{
	if (!s->ops->lease)
		return -EOPNOTSUPP;
	return s->ops->lease(s, tenant, provider, ms, gen);
}

void store_unlease(struct store *s, const char *tenant, const char *provider)
{
	if (s->ops->unlease)
		s->ops->unlease(s, tenant, provider);
}

void store_error_text(struct store *s, char *out, size_t n)
{
	if (n)
		out[0] = '\0';
	if (s && s->ops->error_text)
		s->ops->error_text(s, out, n);
}
