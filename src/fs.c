/*
 * fs: FUSE low-level operations for the credfs tree.
 *
 *   /status  /metrics  /tenants/<tenant>/<provider>/{access_token,...}
 *
 * Inode numbers are computed, not allocated: they encode what a node is, so
 * forget() has nothing to free and numbers are stable for the life of a
 * credential. access_token is the exception on purpose: every token
 * generation gets its own inode number. A rotation publishes a new inode and
 * invalidates the old name, so an open file always reads the one generation
 * it opened (no torn reads, even for readers that read 16 bytes at a time),
 * and the kernel may cache its pages because they never change.
 *
 * Every other file is rendered text. Its content is cached per wall-clock
 * second and credential version, so the size that stat() reports and the
 * bytes that the following open() serves are the same snapshot.
 */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <fuse_lowlevel.h>

#include "config.h"
#include "cred.h"
#include "fs.h"
#include "log.h"
#include "render.h"
#include "util.h"

#define INO_STATUS 2
#define INO_METRICS 3
#define INO_TENANTS 4
#define INO_TENANT_BASE (1ULL << 48)
#define INO_CRED_BASE (2ULL << 48)
#define INO_TOKEN_BIT (1ULL << 63)

#define DIR_TIMEOUT 60.0
#define TOKEN_ENTRY_TIMEOUT 60.0 /* invalidated on rotation anyway */
#define TOKEN_ATTR_TIMEOUT 86400.0 /* a generation never changes */

enum kind { K_ROOT, K_STATUS, K_METRICS, K_TENANTS, K_TENANT, K_CRED,
	    K_TOKEN };

struct node {
	enum kind kind;
	size_t tenant;      /* K_TENANT */
	struct cred *cred;  /* K_CRED, K_TOKEN */
	enum cred_file file; /* K_CRED */
	uint32_t gen;       /* K_TOKEN: low 32 bits of the generation */
};

/* Rendered text, shared by the cache and the open handles that read it. */
struct blob {
	atomic_uint refs;
	size_t len;
	char data[];
};

struct rcache {
	pthread_mutex_t lock;
	struct blob *blob;
	uint64_t version;
	int64_t second;
};

/* An open file: exactly one of @tok and @blob. */
struct handle {
	struct token *tok;
	struct blob *blob;
};

struct fs {
	struct cred_table *t;
	struct fuse_session *se;
	int64_t start_ms;
	struct rcache *cache; /* [0] status, [1] metrics, then per cred */
	size_t n_cache;
};

static struct blob *blob_ref(struct blob *b)
{
	atomic_fetch_add(&b->refs, 1);
	return b;
}

static void blob_unref(struct blob *b)
{
	if (b && atomic_fetch_sub(&b->refs, 1) == 1)
		free(b);
}

static uint64_t token_ino(const struct cred *c, uint64_t gen)
{
	return INO_TOKEN_BIT | ((uint64_t)c->index << 32) |
	       (gen & 0xffffffffULL);
}

static uint64_t cred_ino(const struct cred *c, enum cred_file f)
{
	return INO_CRED_BASE | ((uint64_t)c->index << 4) | (uint64_t)f;
}

/* Decode @ino; false if it names nothing. */
static bool node_of(struct fs *fs, fuse_ino_t ino, struct node *n)
{
	const struct config *cfg = fs->t->cfg;
	uint64_t i = ino, idx;

	memset(n, 0, sizeof(*n));
	if (i & INO_TOKEN_BIT) {
		idx = (i & ~INO_TOKEN_BIT) >> 32;
		if (idx >= fs->t->n)
			return false;
		n->kind = K_TOKEN;
		n->cred = &fs->t->creds[idx];
		n->gen = (uint32_t)i;
		return true;
	}
	switch (i) {
	case FUSE_ROOT_ID: n->kind = K_ROOT; return true;
	case INO_STATUS: n->kind = K_STATUS; return true;
	case INO_METRICS: n->kind = K_METRICS; return true;
	case INO_TENANTS: n->kind = K_TENANTS; return true;
	}
	if ((i >> 48) == 1) {
		n->kind = K_TENANT;
		n->tenant = (size_t)(i - INO_TENANT_BASE);
		return n->tenant < cfg->n_tenants;
	}
	if ((i >> 48) == 2) {
		idx = (i - INO_CRED_BASE) >> 4;
		n->kind = K_CRED;
		n->file = (enum cred_file)(i & 0xf);
		if (idx >= fs->t->n || n->file == CF_ACCESS_TOKEN ||
		    n->file >= CF_COUNT)
			return false;
		n->cred = &fs->t->creds[idx];
		return true;
	}
	return false;
}

static mode_t dir_mode(mode_t file_mode)
{
	return S_IFDIR | file_mode | ((file_mode & 0444) >> 2);
}

static void set_times(struct stat *st, int64_t ms)
{
	st->st_mtim.tv_sec = st->st_ctim.tv_sec = st->st_atim.tv_sec =
		(time_t)(ms / 1000);
	st->st_mtim.tv_nsec = st->st_ctim.tv_nsec = st->st_atim.tv_nsec =
		(long)(ms % 1000) * 1000000;
}

/* The cache slot of a rendered file; NULL for anything else. */
static struct rcache *cache_of(struct fs *fs, const struct node *n)
{
	if (n->kind == K_STATUS)
		return &fs->cache[0];
	if (n->kind == K_METRICS)
		return &fs->cache[1];
	if (n->kind == K_CRED && n->file != CF_DIR)
		return &fs->cache[2 + n->cred->index * (CF_COUNT - 2) +
				  (n->file - CF_TOKEN_TYPE)];
	return NULL;
}

static uint64_t version_of(struct fs *fs, const struct node *n)
{
	uint64_t v;

	if (n->kind != K_CRED)
		return atomic_load(&fs->t->version);
	pthread_mutex_lock(&n->cred->lock);
	v = n->cred->version;
	pthread_mutex_unlock(&n->cred->lock);
	return v;
}

/* The current rendering of @n, referenced; NULL with *@err on failure. */
static struct blob *rendered(struct fs *fs, const struct node *n, int *err)
{
	struct rcache *rc = cache_of(fs, n);
	int64_t now = time_real_ms();
	uint64_t version = version_of(fs, n);
	struct blob *b = NULL;
	struct buf text;
	int r;

	pthread_mutex_lock(&rc->lock);
	if (rc->blob && rc->version == version && rc->second == now / 1000) {
		b = blob_ref(rc->blob);
		goto out;
	}
	buf_init(&text, 4 * 1024 * 1024);
	if (n->kind == K_STATUS)
		r = render_root_status(fs->t, now, &text);
	else if (n->kind == K_METRICS)
		r = render_metrics(fs->t, now, &text);
	else
		r = render_cred_file(n->file, n->cred, now, &text);
	if (r == 0) {
		b = malloc(sizeof(*b) + text.len);
		r = b ? 0 : -ENOMEM;
	}
	if (r < 0) {
		*err = -r;
		buf_free(&text);
		goto out;
	}
	atomic_init(&b->refs, 2); /* the cache's and the caller's */
	b->len = text.len;
	memcpy(b->data, text.data, text.len);
	buf_free(&text);
	blob_unref(rc->blob);
	rc->blob = b;
	rc->version = version;
	rc->second = now / 1000;
out:
	pthread_mutex_unlock(&rc->lock);
	return b;
}

/* Fill @st for @n. For a token inode of a generation no longer held,
 * returns ESTALE. */
static int stat_of(struct fs *fs, const struct node *n, fuse_ino_t ino,
		   struct stat *st)
{
	const struct config *cfg = fs->t->cfg;
	const struct cred_conf *cc = n->cred ? n->cred->conf : NULL;
	struct blob *b;
	int err = 0;

	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_nlink = 1;
	set_times(st, fs->start_ms);
	switch (n->kind) {
	case K_ROOT:
	case K_TENANTS:
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		return 0;
	case K_TENANT:
		st->st_mode = dir_mode(cfg->tenants[n->tenant].mode);
		st->st_uid = cfg->tenants[n->tenant].uid;
		st->st_gid = cfg->tenants[n->tenant].gid;
		st->st_nlink = 2;
		return 0;
	case K_TOKEN: {
		struct cred *c = n->cred;
		struct token *tok = NULL;

		pthread_mutex_lock(&c->lock);
		if (c->cur && (uint32_t)c->cur->gen == n->gen)
			tok = c->cur;
		else if (c->prev && (uint32_t)c->prev->gen == n->gen)
			tok = c->prev;
		if (tok) {
			st->st_size = (off_t)tok->len;
			set_times(st, tok->issued_ms);
		}
		pthread_mutex_unlock(&c->lock);
		st->st_mode = S_IFREG | cc->mode;
		st->st_uid = cc->uid;
		st->st_gid = cc->gid;
		return !tok && n->gen != 0 ? ESTALE : 0;
	}
	case K_CRED:
		st->st_uid = cc->uid;
		st->st_gid = cc->gid;
		if (n->file == CF_DIR) {
			st->st_mode = dir_mode(cc->mode);
			st->st_nlink = 2;
			return 0;
		}
		st->st_mode = S_IFREG | cc->mode;
		break;
	case K_STATUS:
	case K_METRICS:
		st->st_mode = S_IFREG | 0440;
		break;
	}
	b = rendered(fs, n, &err);
	if (!b)
		return err;
	st->st_size = (off_t)b->len;
	set_times(st, time_real_ms());
	blob_unref(b);
	return 0;
}

static void reply_entry(fuse_req_t req, struct fs *fs, fuse_ino_t ino)
{
	struct fuse_entry_param e;
	struct node n;
	int err;

	memset(&e, 0, sizeof(e));
	if (!node_of(fs, ino, &n)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	err = stat_of(fs, &n, ino, &e.attr);
	if (err) {
		fuse_reply_err(req, err == ESTALE ? ENOENT : err);
		return;
	}
	e.ino = ino;
	e.entry_timeout = n.kind == K_TOKEN ? TOKEN_ENTRY_TIMEOUT : DIR_TIMEOUT;
	if (n.kind == K_TOKEN)
		e.attr_timeout = TOKEN_ATTR_TIMEOUT;
	else if (S_ISDIR(e.attr.st_mode))
		e.attr_timeout = DIR_TIMEOUT;
	else
		e.attr_timeout = 0; /* rendered: size changes with content */
	fuse_reply_entry(req, &e);
}

static int tenant_find(const struct config *cfg, const char *name)
{
	size_t lo = 0, hi = cfg->n_tenants;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int r = strcmp(name, cfg->tenants[mid].name);

		if (r == 0)
			return (int)mid;
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -1;
}

static uint64_t current_token_ino(struct cred *c)
{
	int64_t mtime;
	size_t len;

	return token_ino(c, cred_current_gen(c, &len, &mtime));
}

/* The inode of @name in directory @parent, or 0. */
static fuse_ino_t child_ino(struct fs *fs, const struct node *parent,
			    const char *name)
{
	const struct config *cfg = fs->t->cfg;
	const struct tenant_conf *tc;
	size_t i;
	int ti;

	switch (parent->kind) {
	case K_ROOT:
		if (!strcmp(name, "status"))
			return INO_STATUS;
		if (!strcmp(name, "metrics"))
			return INO_METRICS;
		if (!strcmp(name, "tenants"))
			return INO_TENANTS;
		return 0;
	case K_TENANTS:
		ti = tenant_find(cfg, name);
		return ti < 0 ? 0 : INO_TENANT_BASE + (fuse_ino_t)ti;
	case K_TENANT:
		tc = &cfg->tenants[parent->tenant];
		for (i = 0; i < tc->n_creds; i++) {
			struct cred *c = &fs->t->creds[tc->first_cred + i];

			if (!strcmp(c->conf->provider->name, name))
				return cred_ino(c, CF_DIR);
		}
		return 0;
	case K_CRED:
		if (parent->file != CF_DIR)
			return 0;
		if (!strcmp(name, render_file_name(CF_ACCESS_TOKEN)))
			return current_token_ino(parent->cred);
		for (i = CF_TOKEN_TYPE; i < CF_COUNT; i++)
			if (!strcmp(name, render_file_name((enum cred_file)i)))
				return cred_ino(parent->cred,
						(enum cred_file)i);
		return 0;
	default:
		return 0;
	}
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fuse_req_userdata(req);
	struct node p;
	fuse_ino_t ino;

	if (!node_of(fs, parent, &p)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	ino = child_ino(fs, &p, name);
	if (!ino) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	reply_entry(req, fs, ino);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct handle *h = fi ? (struct handle *)(uintptr_t)fi->fh : NULL;
	struct stat st;
	struct node n;
	int err;

	if (!node_of(fs, ino, &n)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	err = stat_of(fs, &n, ino, &st);
	if (h && h->tok) { /* an open generation knows its own size */
		st.st_size = (off_t)h->tok->len;
		set_times(&st, h->tok->issued_ms);
		err = 0;
	} else if (h && h->blob) {
		st.st_size = (off_t)h->blob->len;
	}
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	fuse_reply_attr(req, &st, n.kind == K_TOKEN ? TOKEN_ATTR_TIMEOUT :
				  S_ISDIR(st.st_mode) ? DIR_TIMEOUT : 0);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct handle *h;
	struct node n;
	int err = 0, r;

	if ((fi->flags & O_ACCMODE) != O_RDONLY ||
	    (fi->flags & (O_TRUNC | O_CREAT))) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (!node_of(fs, ino, &n)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (n.kind == K_TOKEN) {
		r = cred_open_token(fs->t, n.cred, n.gen, &h->tok);
		if (r < 0 && r != -ESTALE)
			atomic_fetch_add(&n.cred->open_errors, 1);
		if (r == 0)
			atomic_fetch_add(&n.cred->reads, 1);
		err = -r;
		/* Immutable per inode: the page cache may keep it. */
		fi->keep_cache = 1;
	} else if (cache_of(fs, &n)) {
		h->blob = rendered(fs, &n, &err);
		fi->direct_io = 1; /* always read this open's snapshot */
	} else {
		err = EISDIR;
	}
	if (err) {
		free(h);
		fuse_reply_err(req, err);
		return;
	}
	fi->fh = (uintptr_t)h;
	if (fuse_reply_open(req, fi) != 0) {
		token_unref(h->tok);
		blob_unref(h->blob);
		free(h);
	}
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	const char *data = h->tok ? h->tok->value : h->blob->data;
	size_t len = h->tok ? h->tok->len : h->blob->len;

	if (off < 0 || (size_t)off >= len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > len - (size_t)off)
		size = len - (size_t)off;
	fuse_reply_buf(req, data + off, size);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;

	if (h) {
		token_unref(h->tok);
		blob_unref(h->blob);
		free(h);
	}
	fuse_reply_err(req, 0);
}

struct dirbuf {
	char *p;
	size_t len, size;
	off_t next, from;
	bool full;
};

/* Add one entry if it lies at or after the requested offset. */
static void dir_add(fuse_req_t req, struct dirbuf *d, const char *name,
		    fuse_ino_t ino, mode_t mode)
{
	struct stat st = { .st_ino = ino, .st_mode = mode };
	size_t need;

	d->next++;
	if (d->full || d->next <= d->from)
		return;
	need = fuse_add_direntry(req, NULL, 0, name, NULL, 0);
	if (d->len + need > d->size) {
		d->full = true;
		return;
	}
	fuse_add_direntry(req, d->p + d->len, d->size - d->len, name, &st,
			  d->next);
	d->len += need;
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	const struct config *cfg = fs->t->cfg;
	struct dirbuf d = { .size = size, .from = off };
	struct node n;
	size_t i;

	if (!node_of(fs, ino, &n) ||
	    (n.kind != K_ROOT && n.kind != K_TENANTS && n.kind != K_TENANT &&
	     !(n.kind == K_CRED && n.file == CF_DIR))) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	d.p = malloc(size);
	if (!d.p) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	dir_add(req, &d, ".", ino, S_IFDIR);
	dir_add(req, &d, "..", FUSE_ROOT_ID, S_IFDIR);
	if (n.kind == K_ROOT) {
		dir_add(req, &d, "status", INO_STATUS, S_IFREG);
		dir_add(req, &d, "metrics", INO_METRICS, S_IFREG);
		dir_add(req, &d, "tenants", INO_TENANTS, S_IFDIR);
	} else if (n.kind == K_TENANTS) {
		for (i = 0; i < cfg->n_tenants && !d.full; i++)
			dir_add(req, &d, cfg->tenants[i].name,
				INO_TENANT_BASE + i, S_IFDIR);
	} else if (n.kind == K_TENANT) {
		const struct tenant_conf *tc = &cfg->tenants[n.tenant];

		for (i = 0; i < tc->n_creds && !d.full; i++) {
			struct cred *c = &fs->t->creds[tc->first_cred + i];

			dir_add(req, &d, c->conf->provider->name,
				cred_ino(c, CF_DIR), S_IFDIR);
		}
	} else {
		dir_add(req, &d, render_file_name(CF_ACCESS_TOKEN),
			current_token_ino(n.cred), S_IFREG);
		for (i = CF_TOKEN_TYPE; i < CF_COUNT; i++)
			dir_add(req, &d, render_file_name((enum cred_file)i),
				cred_ino(n.cred, (enum cred_file)i), S_IFREG);
	}
	fuse_reply_buf(req, d.p, d.len);
	free(d.p);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fuse_req_userdata(req);
	struct statvfs sv = {
		.f_bsize = 4096,
		.f_frsize = 4096,
		.f_files = 4 + fs->t->cfg->n_tenants + fs->t->n * CF_COUNT,
		.f_namemax = 255,
		.f_flag = ST_RDONLY | ST_NOSUID | ST_NODEV,
	};

	fuse_reply_statfs(req, &sv);
}

/* Everything that would change the tree. */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	fuse_reply_err(req, EROFS);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	fuse_reply_err(req, EROFS);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	fuse_reply_err(req, EROFS);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	fuse_reply_err(req, EROFS);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	fuse_reply_err(req, EROFS);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static const struct fuse_lowlevel_ops ops = {
	.lookup = op_lookup,
	.getattr = op_getattr,
	.open = op_open,
	.read = op_read,
	.release = op_release,
	.readdir = op_readdir,
	.statfs = op_statfs,
	.setattr = op_setattr,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_unlink,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.write = op_write,
	.setxattr = op_setxattr,
	.removexattr = op_removexattr,
	.create = op_create,
};

const struct fuse_lowlevel_ops *fs_ops(void)
{
	return &ops;
}

int fs_new(struct cred_table *t, struct fs **out)
{
	struct fs *fs;
	size_t i;

	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->t = t;
	fs->start_ms = time_real_ms();
	fs->n_cache = 2 + t->n * (CF_COUNT - 2);
	fs->cache = calloc(fs->n_cache, sizeof(*fs->cache));
	if (!fs->cache) {
		free(fs);
		return -ENOMEM;
	}
	for (i = 0; i < fs->n_cache; i++)
		pthread_mutex_init(&fs->cache[i].lock, NULL);
	*out = fs;
	return 0;
}

void fs_free(struct fs *fs)
{
	size_t i;

	if (!fs)
		return;
	for (i = 0; i < fs->n_cache; i++) {
		blob_unref(fs->cache[i].blob);
		pthread_mutex_destroy(&fs->cache[i].lock);
	}
	free(fs->cache);
	free(fs);
}

void fs_set_session(struct fs *fs, struct fuse_session *se)
{
	fs->se = se;
}

void fs_token_rotated(void *arg, struct cred *c)
{
	struct fs *fs = arg;
	static const char name[] = "access_token";
	int r;

	if (!fs->se)
		return;
	r = fuse_lowlevel_notify_inval_entry(fs->se, cred_ino(c, CF_DIR), name,
					     sizeof(name) - 1);
	if (r < 0 && r != -ENOENT && r != -ENOTCONN && r != -EBADF)
		log_debug("%s/%s: cannot invalidate access_token: %s",
			  c->conf->tenant, c->conf->provider->name,
			  strerror(-r));
}
