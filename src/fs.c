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
 * Every other file is rendered text, and follows the same rule: each
 * distinct rendering (a snapshot, re-rendered at most once per second or on
 * a credential change) is served under its own inode number, and names of
 * rendered files are looked up afresh on every path walk (entry timeout 0).
 * So stat() of a path, and fstat() of an open file, report the exact size of
 * the bytes that file serves, whatever changes in between.
 */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <fuse_lowlevel.h>
#include <jansson.h>

#include "config.h"
#include "cred.h"
#include "fs.h"
#include "fs_int.h"
#include "audit.h"
#include "log.h"
#include "policy.h"
#include "render.h"
#include "snap.h"
#include "util.h"

/* The credential of rendered-file slot @slot (not a root file's). */
static struct cred *cred_of_slot(struct fs *fs, size_t slot)
{
	return cred_at(fs->t, (uint32_t)((slot - 2) / SLOTS_PER_CRED));
}

static uint64_t version_of(struct fs *fs, size_t slot)
{
	if (slot < 2)
		return atomic_load(&fs->t->version);
	return cred_version(cred_of_slot(fs, slot));
}

static int render_slot(struct fs *fs, size_t slot,
		       const struct visible *visible, int64_t now,
		       struct buf *text)
{
	if (slot == SLOT_STATUS)
		return render_root_status(fs->t, visible, now, text);
	if (slot == SLOT_METRICS)
		return render_metrics(fs->t, visible, now, text);
	return render_cred_file(
		fs->t,
		(enum cred_file)(CF_TOKEN_TYPE + (slot - 2) % SLOTS_PER_CRED),
		cred_of_slot(fs, slot), now, text);
}

static int render_cb(void *arg, size_t slot, const struct visible *visible,
		     int64_t now, struct buf *text)
{
	return render_slot(arg, slot, visible, now, text);
}

/* The current rendering of @slot for view @key (@visible: the tenants it
 * shows, NULL for all), referenced; NULL with *@err on failure. */
static struct snap *rendered(struct fs *fs, size_t slot, uint64_t key,
			     const struct visible *visible, int *err)
{
	return snaps_current(fs->snaps, slot, key, version_of(fs, slot),
			     render_cb, fs, visible, err);
}

/* Reply to a lookup of @ino; @held, for files, is the content it serves. */
static void reply_entry(fuse_req_t req, struct fs *fs, fuse_ino_t ino,
			const struct handle *held)
{
	struct fuse_entry_param e;
	struct node n;
	int err;

	memset(&e, 0, sizeof(e));
	if (!fs_node_of(fs, ino, &n)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	err = fs_stat_of(fs, &n, ino, held, &e.attr);
	if (err) {
		fuse_reply_err(req, err == -ESTALE ? ENOENT : -err);
		return;
	}
	e.ino = ino;
	switch (n.kind) {
	case K_TENANT:
		/* Audited: whether a tenant is visible depends on the caller,
		 * so every path walk asks; unless it is visible to all. */
		e.entry_timeout = fs->cache_kernel || n.tc->visible_to_all
					  ? DIR_TIMEOUT
					  : 0;
		e.attr_timeout = DIR_TIMEOUT;
		break;
	case K_TOKEN:
		e.entry_timeout = fs_token_entry_timeout(fs, n.cred, held->tok);
		e.attr_timeout = FILE_ATTR_TIMEOUT;
		break;
	case K_SNAP:
		e.entry_timeout = 0; /* every walk finds the newest snapshot */
		e.attr_timeout = FILE_ATTR_TIMEOUT;
		break;
	default: e.entry_timeout = DIR_TIMEOUT; e.attr_timeout = DIR_TIMEOUT;
	}
	if (fs_daemon_decides(fs, &n))
		e.attr_timeout = 0;
	fuse_reply_entry(req, &e);
}

/* An audited open of a token, or a kernel-cache lookup of one, waiting
 * for a refresh: no thread waits with it; the waits thread answers it
 * (see waits_main). */
struct pending {
	struct pending *next;
	fuse_req_t req;
	struct node n;
	struct cred_wait w;
	bool lookup;	/* a lookup of access_token, else an open */
	unsigned tries; /* lookup: generations tried */
	struct fuse_file_info fi; /* open */
	struct handle *h;	  /* open */
	struct caller who;	  /* open: decided already, for the audit */
};

/* Wait for @p's answer off the FUSE worker threads. */
static void waits_add(struct fs *fs, struct pending *p)
{
	pthread_mutex_lock(&fs->wlock);
	p->next = fs->waiting;
	fs->waiting = p;
	fs->wkicked = true; /* it may have been answered already */
	pthread_cond_signal(&fs->wcond);
	pthread_mutex_unlock(&fs->wlock);
}

/* cred_table.wake: a credential changed; look at the waiting opens. */
static void waits_wake(void *arg)
{
	struct fs *fs = arg;

	pthread_mutex_lock(&fs->wlock);
	fs->wkicked = true;
	pthread_cond_signal(&fs->wcond);
	pthread_mutex_unlock(&fs->wlock);
}

/* The answer of a lookup of @c's token whose open rule gave @r (*@out
 * on success): 0 or -errno. Audited, the open decides (and logs), so the
 * lookup always names the current generation, once any refresh the open
 * rule waits for is in: a name looked up again after an open's ESTALE (the
 * kernel's one retry) then names a generation the open can serve at once,
 * instead of one about to be replaced, whose open would wait for the
 * replacement and end in ESTALE again, this time for the reader. */
static int lookup_answer(struct fs *fs, struct cred *c, int r,
			 struct token **out)
{
	if (!fs->cache_kernel) {
		token_unref(*out);
		*out = cred_current_token(c);
		return 0;
	}
	if (r == 0 && cred_conf(c)->strict_scopes && (*out)->over) {
		token_unref(*out);
		*out = NULL;
		r = -EACCES;
	}
	return r == -ESTALE ? -EAGAIN : r;
}

/*
 * The lookup of access_token. Kernel-cache path: no open() reaches the
 * daemon, so the lookup applies the open rule (wait for a first or fresher
 * token, refuse an expired one) and names only a generation fit to serve;
 * audited, it waits as an open would and names the current one (see
 * lookup_answer). 0 with
 * *@out referenced, or -errno; -EINPROGRESS when it waits, with
 * *@wait (reused if given) to hand to waits_add(). Generations are tried
 * from @from (a rotation meanwhile tries the next, three in all).
 */
static int lookup_token(struct fs *fs, struct cred *c, unsigned from,
			struct token **out, struct pending **wait)
{
	struct cred_wait w;
	unsigned tries;
	int r = -EAGAIN;

	for (tries = from; tries < 3; tries++) {
		struct token *cur = cred_current_token(c);
		uint32_t gen = cur ? (uint32_t)cur->gen : 0;

		token_unref(cur);
		if (!cur && !fs->cache_kernel) {
			/* Audited, with no token yet: the name of none, at
			 * once (an open waits for the first and says why if
			 * none comes); only a token about to be replaced is
			 * waited for here. */
			*out = NULL;
			return 0;
		}
		r = cred_open_begin(fs->t, c, gen, out, &w);
		if (r == -EINPROGRESS) {
			struct pending *p =
				*wait ? *wait : calloc(1, sizeof(*p));

			if (!p) {
				cred_wait_cancel(c, &w);
				return -ENOMEM;
			}
			p->lookup = true;
			p->tries = tries;
			p->n = (struct node){.kind = K_CRED_DIR, .cred = c};
			p->w = w;
			*wait = p;
			return -EINPROGRESS;
		}
		if (r != -ESTALE)
			break;
	}
	return lookup_answer(fs, c, r, out);
}

/*
 * The inode of @name in directory @parent, looked up by @who, or 0 with
 * *@err. For a file, @held gets a reference to the content that inode
 * serves (the current token or rendering), so that the reply's attributes
 * describe exactly it.
 */
static fuse_ino_t child_ino(struct fs *fs, struct caller *who,
			    const struct node *parent, const char *name,
			    struct handle *held, struct pending **wait,
			    int *err)
{
	const struct config *cfg = parent->cfg;
	const struct tenant_conf *tc;
	size_t i, slot = SIZE_MAX;
	uint64_t key = 0;
	struct visible *visible = NULL;
	fuse_ino_t ino = 0;
	int ti;

	*err = -ENOENT;
	switch (parent->kind) {
	case K_ROOT:
		if (!strcmp(name, "tenants"))
			return INO_TENANTS;
		if (!strcmp(name, "status"))
			slot = SLOT_STATUS;
		else if (!strcmp(name, "metrics"))
			slot = SLOT_METRICS;
		break;
	case K_TENANTS:
		ti = fs_tenant_find(cfg, name);
		if (ti < 0)
			return 0;
		/* Invisible: the same answer as for no such tenant. */
		if (fs_node_allowed(fs,
				    &(struct node){.kind = K_TENANT,
						   .cfg = cfg,
						   .tc = &cfg->tenants[ti]},
				    false, who) < 0)
			return 0;
		return fs_tenant_ino(&cfg->tenants[ti]);
	case K_TENANT:
		tc = parent->tc;
		for (i = 0; i < tc->n_creds; i++) {
			const struct cred_conf *cc =
				&cfg->creds[tc->first_cred + i];
			struct cred *c = cred_of(fs->t, cc);

			if (!strcmp(cc->provider->name, name))
				return cred_present(c) ? fs_cred_dir_ino(c) : 0;
		}
		return 0;
	case K_CRED_DIR:
		if (!cred_present(parent->cred))
			return 0;
		if (!strcmp(name, render_file_name(NULL, CF_ACCESS_TOKEN))) {
			*err = lookup_token(fs, parent->cred, 0, &held->tok,
					    wait);
			if (*err)
				return 0;
			return fs_token_ino(parent->cred,
					    held->tok ? held->tok->gen : 0);
		}
		for (i = CF_TOKEN_TYPE; i < CF_COUNT; i++) {
			const char *f = render_file_name(parent->cred,
							 (enum cred_file)i);

			if (f && !strcmp(name, f))
				slot = fs_cred_slot(parent->cred,
						    (enum cred_file)i);
		}
		break;
	default: return 0;
	}
	if (slot == SIZE_MAX)
		return 0;
	if (slot < 2) { /* root files show what the caller may see */
		key = fs_view_key(fs, cfg, who, &visible, err);
		if (*err == -ENOMEM)
			return 0;
	}
	held->snap = rendered(fs, slot, key, visible, err);
	if (held->snap)
		ino = fs_snap_ino(slot, held->snap->seq);
	free(visible);
	return ino;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fuse_req_userdata(req);
	struct pending *wait = NULL;
	struct handle held = {0};
	struct caller who;
	struct node p;
	fuse_ino_t ino;
	int err;

	if (!fs_node_of(fs, parent, &p)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fs_caller_of(req, &who);
	err = fs_node_allowed(fs, &p, true, &who);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	ino = child_ino(fs, &who, &p, name, &held, &wait, &err);
	if (!ino && err == -EINPROGRESS) {
		wait->req = req;
		waits_add(fs, wait);
	} else if (ino)
		reply_entry(req, fs, ino,
			    ino & (INO_TOKEN_BIT | INO_SNAP_BIT) ? &held
								 : NULL);
	else
		fuse_reply_err(req, -err);
	token_unref(held.tok);
	snap_unref(held.snap);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct handle *h = fi ? fs_handle_of(fs, fi->fh) : NULL;
	struct caller who;
	struct stat st;
	struct node n;
	bool known;
	int err;

	known = fs_node_of(fs, ino, &n);
	if (!known && h) {
		/* Open on a credential a reload removed: the file still has
		 * its bytes, and says how many. */
		memset(&st, 0, sizeof(st));
		st.st_ino = ino;
		st.st_mode = S_IFREG | 0440;
		st.st_nlink = 1;
		st.st_size = (off_t)(h->tok ? h->tok->len : h->snap->len);
		fuse_reply_attr(req, &st, 0);
		return;
	}
	if (!known) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fs_caller_of(req, &who);
	err = fs_node_allowed(fs, &n, false, &who);
	if (err == 0)
		err = fs_stat_of(fs, &n, ino, h, &st);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	fuse_reply_attr(req, &st,
			fs_daemon_decides(fs, &n) ? 0
			: S_ISDIR(st.st_mode)	  ? DIR_TIMEOUT
						  : FILE_ATTR_TIMEOUT);
}

static const char *errno_name(int e)
{
	switch (e) {
	case 0: return "ok";
	case EACCES: return "EACCES";
	case EAGAIN: return "EAGAIN";
	case EKEYEXPIRED: return "EKEYEXPIRED";
	case EKEYREVOKED: return "EKEYREVOKED";
	case EKEYREJECTED: return "EKEYREJECTED";
	case ENOENT: return "ENOENT";
	case ESTALE: return "ESTALE";
	case ENOMEM: return "ENOMEM";
	default: return "error";
	}
}

/* The end of the audited open of a token that the open rule answered @r
 * (*@tok on success): scopes, counters and the audit line. */
static int token_opened(struct fs *fs, struct caller *who, const struct node *n,
			int r, struct token **tok)
{
	struct cred *c = n->cred;
	struct audit_rec rec = {
		.event = "read",
		.tenant = cred_conf(c)->tenant,
		.provider = cred_conf(c)->provider->name,
		.who = who,
	};

	if (r == -ESTALE)
		return r; /* the kernel looks the name up again: no line */
	if (r == 0 && cred_conf(c)->strict_scopes && (*tok)->over) {
		token_unref(*tok);
		*tok = NULL;
		fs_audit_denied(fs, who, rec.tenant, rec.provider, "EACCES",
				"granted scopes wider than requested "
				"(strict_scopes)");
		return -EACCES;
	}
	cred_count_open(c, r >= 0);
	rec.outcome = errno_name(-r);
	rec.fp = *tok ? (*tok)->fp : NULL;
	audit_log(fs->audit, &rec);
	return r;
}

/*
 * The audited open of a token generation: policy, freshness, scopes.
 * -EINPROGRESS when it waits for a refresh: then *@wait is the open to
 * hand to waits_add().
 */
static int open_token(struct fs *fs, fuse_req_t req, const struct node *n,
		      struct token **out, struct pending **wait)
{
	struct pending *p;
	struct cred_wait w;
	struct caller who;
	int r;

	fs_caller_of(req, &who);
	r = fs_node_allowed(fs, n, false, &who);
	if (r < 0)
		return r;
	r = cred_open_begin(fs->t, n->cred, n->gen, out, &w);
	if (r == -EINPROGRESS) {
		p = calloc(1, sizeof(*p));
		if (p) {
			p->who = who;
			p->n = *n;
			p->w = w;
			*wait = p;
			return r;
		}
		cred_wait_cancel(n->cred, &w);
		r = -ENOMEM;
	}
	return token_opened(fs, &who, n, r, out);
}

/* Answer an open with @h (taken over), or with -errno @err. */
static void reply_open(struct fs *fs, fuse_req_t req, struct fuse_file_info *fi,
		       struct handle *h, int err)
{
	if (err) {
		fs_handle_free(fs, h);
		fuse_reply_err(req, -err);
		return;
	}
	/* The inode's bytes never change: the page cache may keep them. */
	fi->keep_cache = 1;
	fi->fh = fs_fh_of(fs, h);
	if (fuse_reply_open(req, fi) != 0)
		fs_handle_free(fs, h);
}

/* Answer the kernel-cache lookup @p whose open rule gave @r (@tok): a
 * negative errno from the open rule, or a positive one already final. */
static void lookup_done(struct fs *fs, struct pending *p, int r,
			struct token *tok)
{
	struct handle held = {0};
	int err = lookup_answer(fs, p->n.cred, r, &tok);

	held.tok = tok;
	if (err)
		fuse_reply_err(p->req, -err);
	else
		reply_entry(p->req, fs,
			    fs_token_ino(p->n.cred, tok ? tok->gen : 0), &held);
	token_unref(held.tok);
	free(p);
}

/* Answer the waiting opens whose wait is over (all of them with @all),
 * and keep the others. With wlock held; drops it meanwhile. */
static void waits_run(struct fs *fs, bool all)
{
	struct pending *list = fs->waiting, *keep = NULL, *p;
	struct token *tok;
	int r;

	fs->waiting = NULL;
	fs->wkicked = false;
	pthread_mutex_unlock(&fs->wlock);
	cred_table_enter(fs->t);
	while (list) {
		p = list;
		list = p->next;
		if (all)
			p->w.deadline = 0; /* the answer it has now */
		if (!cred_live(p->n.cred)) {
			/* A reload removed it while this open waited: its
			 * configuration may be gone, so nothing of it is
			 * read; the name is gone too. */
			cred_wait_cancel(p->n.cred, &p->w);
			if (p->h)
				fs_handle_free(fs, p->h);
			fuse_reply_err(p->req, ENOENT);
			free(p);
			continue;
		}
		r = cred_open_resume(p->n.cred, &p->w, &tok);
		if (r == -ESTALE && p->lookup && !all)
			r = lookup_token(fs, p->n.cred, p->tries + 1, &tok,
					  &p);
		if (r == -EINPROGRESS) {
			p->next = keep;
			keep = p;
			continue;
		}
		if (p->lookup) {
			lookup_done(fs, p, r, tok);
			continue;
		}
		r = token_opened(fs, &p->who, &p->n, r, &tok);
		p->h->tok = tok;
		reply_open(fs, p->req, &p->fi, p->h, r);
		free(p);
	}
	cred_table_exit(fs->t);
	pthread_mutex_lock(&fs->wlock);
	while (keep) {
		p = keep;
		keep = p->next;
		p->next = fs->waiting;
		fs->waiting = p;
	}
}

/*
 * The waits thread: opens that wait for a refresh hold no FUSE worker
 * (one tenant's slow provider must not stall the others' reads); they
 * are answered here when their credential changes or open_wait ends.
 */
static void *waits_main(void *arg)
{
	struct fs *fs = arg;
	struct pending *p;
	int64_t next;

	pthread_mutex_lock(&fs->wlock);
	while (!fs->wstop) {
		waits_run(fs, false);
		if (fs->wkicked || fs->wstop)
			continue;
		next = INT64_MAX;
		for (p = fs->waiting; p; p = p->next)
			if (p->w.deadline < next)
				next = p->w.deadline;
		if (next == INT64_MAX) {
			pthread_cond_wait(&fs->wcond, &fs->wlock);
		} else {
			struct timespec ts = {
				.tv_sec = next / 1000,
				.tv_nsec = (next % 1000) * 1000000,
			};

			pthread_cond_timedwait(&fs->wcond, &fs->wlock, &ts);
		}
	}
	if (!fs->wpause)
		waits_run(fs, true);
	pthread_mutex_unlock(&fs->wlock);
	return NULL;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct pending *wait = NULL;
	struct handle *h;
	struct node n;
	int err = 0;

	if ((fi->flags & O_ACCMODE) != O_RDONLY ||
	    (fi->flags & (O_TRUNC | O_CREAT))) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (fs->cache_kernel) {
		/* The kernel stops sending opens and serves reads from the
		 * page cache; the mode bits are the only check. */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (!fs_node_of(fs, ino, &n)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	h = fs_handle_new(fs);
	if (!h) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (n.kind == K_TOKEN) {
		err = open_token(fs, req, &n, &h->tok, &wait);
		if (err == -EINPROGRESS) {
			wait->req = req;
			wait->fi = *fi;
			wait->h = h;
			waits_add(fs, wait);
			return;
		}
	} else if (n.kind == K_SNAP) {
		struct caller who;

		fs_caller_of(req, &who);
		err = fs_node_allowed(fs, &n, false, &who);
		h->snap = err ? NULL : snaps_find(fs->snaps, n.slot, n.gen);
		if (!err && !h->snap)
			err = -ESTALE; /* the kernel looks up again */
		if (h->snap && n.slot < 2) {
			/* A root file's view must be the caller's own. */
			struct visible *vis;
			int verr = 0;

			if (fs_view_key(fs, n.cfg, &who, &vis, &verr) !=
			    h->snap->view)
				err = verr ? verr : -ESTALE;
			free(vis);
		}
	} else {
		err = -EISDIR;
	}
	reply_open(fs, req, fi, h, err);
}

/* Kernel-cache path: no open, so a read names only the inode. */
static int content_of_ino(struct fs *fs, fuse_ino_t ino, struct handle *h)
{
	struct node n;

	if (!fs_node_of(fs, ino, &n))
		return -ENOENT;
	if (n.kind == K_SNAP) {
		h->snap = snaps_find(fs->snaps, n.slot, n.gen);
		return h->snap ? 0 : -ESTALE;
	}
	if (n.kind != K_TOKEN)
		return -EISDIR;
	if (cred_token_of_gen(n.cred, n.gen, &h->tok) < 0 || !h->tok)
		return n.gen ? -ESTALE : -EAGAIN;
	if (time_real_ms() >= cred_token_deadline(n.cred, h->tok))
		return -EKEYEXPIRED;
	return 0;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct handle *h = fs_handle_of(fs, fi->fh);
	struct handle held = {0}; /* the bytes, referenced for the reply */
	const char *data;
	size_t len;
	int err;

	if (h) {
		/* The reply holds its bytes, not the handle: the kernel may
		 * send RELEASE the moment it has them, before
		 * fuse_reply_buf() returns, and a handed-over handle's bytes
		 * have no other owner. */
		held.tok = token_ref(h->tok);
		held.snap = h->snap ? snap_ref(h->snap) : NULL;
	} else {
		err = content_of_ino(fs, ino, &held);
		if (err) {
			token_unref(held.tok);
			snap_unref(held.snap);
			fuse_reply_err(req, -err);
			return;
		}
	}
	data = held.tok ? held.tok->value : held.snap->data;
	len = held.tok ? held.tok->len : held.snap->len;
	if (off < 0 || (size_t)off >= len)
		size = 0;
	else if (size > len - (size_t)off)
		size = len - (size_t)off;
	fuse_reply_buf(req, size ? data + off : NULL, size);
	token_unref(held.tok);
	snap_unref(held.snap);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct handle *h = fs_handle_of(fs, fi->fh);

	if (h)
		fs_handle_free(fs, h);
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
	struct stat st = {.st_ino = ino, .st_mode = mode};
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
	const struct config *cfg;
	struct dirbuf d = {.size = size, .from = off};
	struct node n;
	size_t i;

	struct caller who;
	int err;

	if (!fs_node_of(fs, ino, &n) ||
	    (n.kind != K_ROOT && n.kind != K_TENANTS && n.kind != K_TENANT &&
	     n.kind != K_CRED_DIR)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	cfg = n.cfg;
	fs_caller_of(req, &who);
	err = fs_node_allowed(fs, &n, true, &who);
	if (err) {
		fuse_reply_err(req, -err);
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
		dir_add(req, &d, "status", fs_snap_ino(SLOT_STATUS, 0),
			S_IFREG);
		dir_add(req, &d, "metrics", fs_snap_ino(SLOT_METRICS, 0),
			S_IFREG);
		dir_add(req, &d, "tenants", INO_TENANTS, S_IFDIR);
	} else if (n.kind == K_TENANTS) {
		for (i = 0; i < cfg->n_tenants && !d.full; i++)
			if (fs->cache_kernel ||
			    cfg->tenants[i].visible_to_all ||
			    policy_tenant(cfg, &cfg->tenants[i], &who))
				dir_add(req, &d, cfg->tenants[i].name,
					fs_tenant_ino(&cfg->tenants[i]),
					S_IFDIR);
	} else if (n.kind == K_TENANT) {
		const struct tenant_conf *tc = n.tc;

		for (i = 0; i < tc->n_creds && !d.full; i++) {
			const struct cred_conf *cc =
				&cfg->creds[tc->first_cred + i];
			struct cred *c = cred_of(fs->t, cc);

			if (!cred_present(c))
				continue; /* no record in the store */
			dir_add(req, &d, cc->provider->name, fs_cred_dir_ino(c),
				S_IFDIR);
		}
	} else {
		struct token *tok = cred_current_token(n.cred);

		dir_add(req, &d, render_file_name(NULL, CF_ACCESS_TOKEN),
			fs_token_ino(n.cred, tok ? tok->gen : 0), S_IFREG);
		token_unref(tok);
		/* Snapshot 0: readdir's d_ino is a hint; lookup decides. */
		for (i = CF_TOKEN_TYPE; i < CF_COUNT; i++) {
			const char *f =
				render_file_name(n.cred, (enum cred_file)i);

			if (f)
				dir_add(req, &d, f,
					fs_snap_ino(
						fs_cred_slot(n.cred,
							     (enum cred_file)i),
						0),
					S_IFREG);
		}
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
		.f_files = 4 + cred_table_config(fs->t)->n_tenants +
			   cred_table_config(fs->t)->n_creds * CF_COUNT,
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

/*
 * The operations that read the configuration (policy, modes, timing), each
 * in a section of the cred table, so that a reload can free what it
 * replaced once they are done (see cred_table_enter()).
 */
#define IN_SECTION(op, params, ...)                               \
	static void op##_in_section params                        \
	{                                                         \
		struct cred_table *t =                            \
			((struct fs *)fuse_req_userdata(req))->t; \
		cred_table_enter(t);                              \
                                                                  \
		op(req, __VA_ARGS__);                             \
		cred_table_exit(t);                               \
	}

IN_SECTION(op_lookup, (fuse_req_t req, fuse_ino_t parent, const char *name),
	   parent, name)
IN_SECTION(op_getattr,
	   (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), ino, fi)
IN_SECTION(op_open, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi),
	   ino, fi)
IN_SECTION(op_read,
	   (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
	    struct fuse_file_info *fi),
	   ino, size, off, fi)
IN_SECTION(op_release,
	   (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), ino, fi)
IN_SECTION(op_readdir,
	   (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
	    struct fuse_file_info *fi),
	   ino, size, off, fi)
IN_SECTION(op_statfs, (fuse_req_t req, fuse_ino_t ino), ino)

static const struct fuse_lowlevel_ops ops = {
	.lookup = op_lookup_in_section,
	.getattr = op_getattr_in_section,
	.open = op_open_in_section,
	.read = op_read_in_section,
	.release = op_release_in_section,
	.readdir = op_readdir_in_section,
	.statfs = op_statfs_in_section,
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

int fs_new(struct cred_table *t, struct audit *audit, bool cache_kernel,
	   struct fs **out)
{
	pthread_condattr_t ca;
	struct fs *fs;
	size_t i;

	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->t = t;
	pthread_mutex_init(&fs->wlock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&fs->wcond, &ca);
	pthread_condattr_destroy(&ca);
	fs->audit = audit;
	pthread_mutex_init(&fs->denial_lock, NULL);
	for (i = 0; i < HANDLE_SHARDS; i++)
		pthread_mutex_init(&fs->handles[i].lock, NULL);
	pthread_mutex_init(&fs->flock, NULL);
	fs->cache_kernel = cache_kernel;
	fs->start_ms = time_real_ms();
	fs->callers = caller_cache_new();
	if (!fs->callers)
		goto out_free;
	if (snaps_new(2, &fs->snaps) < 0)
		goto out_free;
	if (fs_resume_waits(fs) < 0)
		goto out_free;
	*out = fs;
	return 0;
out_free:
	fs_free(fs);
	return -ENOMEM;
}

int fs_resume_waits(struct fs *fs)
{
	fs->wstop = fs->wpause = false;
	if (pthread_create(&fs->wthread, NULL, waits_main, fs) != 0)
		return -EAGAIN;
	fs->wstarted = true;
	fs->t->wake = waits_wake;
	fs->t->wake_arg = fs;
	pthread_mutex_lock(&fs->wlock);
	fs->wkicked = true; /* what changed meanwhile */
	pthread_cond_signal(&fs->wcond);
	pthread_mutex_unlock(&fs->wlock);
	return 0;
}

/* End the waits thread; with @pause, the waiting opens stay unanswered. */
static void end_waits(struct fs *fs, bool pause)
{
	if (!fs || !fs->wstarted)
		return;
	fs->t->wake = NULL;
	pthread_mutex_lock(&fs->wlock);
	fs->wstop = true;
	fs->wpause = pause;
	pthread_cond_signal(&fs->wcond);
	pthread_mutex_unlock(&fs->wlock);
	pthread_join(fs->wthread, NULL);
	fs->wstarted = false;
}

void fs_stop_waits(struct fs *fs)
{
	end_waits(fs, false);
}

void fs_pause_waits(struct fs *fs)
{
	end_waits(fs, true);
}

void fs_free(struct fs *fs)
{
	size_t i;

	if (!fs)
		return;
	fs_stop_waits(fs);
	pthread_cond_destroy(&fs->wcond);
	pthread_mutex_destroy(&fs->wlock);
	snaps_free(fs->snaps);
	for (i = 0; i < HANDLE_SHARDS; i++) {
		while (fs->handles[i].head)
			fs_handle_free(fs, fs->handles[i].head);
		pthread_mutex_destroy(&fs->handles[i].lock);
	}
	while (fs->foreign)
		fs_handle_free(fs, fs->foreign);
	pthread_mutex_destroy(&fs->flock);
	while (fs->waiting) {
		/* Paused for a handoff that took over: its opens are the
		 * next process's, resent by the kernel. */
		struct pending *p = fs->waiting;

		fs->waiting = p->next;
		cred_wait_cancel(p->n.cred, &p->w);
		if (p->h)
			fs_handle_free(fs, p->h);
		free(p);
	}
	pthread_mutex_destroy(&fs->denial_lock);
	caller_cache_free(fs->callers);
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
	r = fuse_lowlevel_notify_inval_entry(fs->se, fs_cred_dir_ino(c), name,
					     sizeof(name) - 1);
	if (r < 0 && r != -ENOENT && r != -ENOTCONN && r != -EBADF)
		log_debug("%s/%s: cannot invalidate access_token: %s",
			  cred_conf(c)->tenant, cred_conf(c)->provider->name,
			  strerror(-r));
}

void fs_token_expired(void *arg, struct cred *c, uint64_t gen)
{
	struct fs *fs = arg;
	int r;

	if (!fs->se)
		return;
	/* Drop the cached pages and name: the next read or lookup reaches
	 * the daemon, which refuses an expired token. */
	fuse_lowlevel_notify_inval_entry(fs->se, fs_cred_dir_ino(c),
					 "access_token",
					 strlen("access_token"));
	r = fuse_lowlevel_notify_inval_inode(fs->se, fs_token_ino(c, gen), 0,
					     0);
	if (r < 0 && r != -ENOENT && r != -ENOTCONN && r != -EBADF)
		log_debug("%s/%s: cannot invalidate the expired token: %s",
			  cred_conf(c)->tenant, cred_conf(c)->provider->name,
			  strerror(-r));
}

void fs_cred_changed(void *arg, struct cred *c)
{
	struct fs *fs = arg;
	fuse_ino_t tenant = fs_tenant_ino(cred_conf(c)->tc);
	const char *name = cred_conf(c)->provider->name;

	if (!fs->se)
		return;
	/* The name, the listing and the token's name: the next walk asks. */
	fuse_lowlevel_notify_inval_entry(fs->se, tenant, name, strlen(name));
	fuse_lowlevel_notify_inval_inode(fs->se, tenant, 0, 0);
	fuse_lowlevel_notify_inval_entry(fs->se, fs_cred_dir_ino(c),
					 "access_token",
					 strlen("access_token"));
}

/* Whether @a's tenant @tc is one of @b's (by slot). */
static bool tenant_in(const struct tenant_conf *tc, const struct config *b)
{
	return tc->slot < b->n_tenant_slots && b->tenant_of_slot[tc->slot] >= 0;
}

void fs_tree_changed(void *arg, const struct config *old,
		     const struct config *cfg)
{
	struct fs *fs = arg;
	size_t i;

	if (!fs->se)
		return;
	/* Tenants that came (a negative name may be cached) or went, and
	 * the ones visible to all before, whose names (and what the kernel
	 * holds below them: modes, owners) may be cached for everyone. */
	for (i = 0; i < old->n_tenants; i++)
		if (!tenant_in(&old->tenants[i], cfg) ||
		    old->tenants[i].visible_to_all)
			fuse_lowlevel_notify_inval_entry(
				fs->se, INO_TENANTS, old->tenants[i].name,
				strlen(old->tenants[i].name));
	for (i = 0; i < cfg->n_tenants; i++)
		if (!tenant_in(&cfg->tenants[i], old))
			fuse_lowlevel_notify_inval_entry(
				fs->se, INO_TENANTS, cfg->tenants[i].name,
				strlen(cfg->tenants[i].name));
	fuse_lowlevel_notify_inval_inode(fs->se, INO_TENANTS, 0, 0);
}
