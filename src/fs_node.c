/*
 * fs_node: what each node of the tree is. Inode numbers (computed, so
 * forget() has nothing to free), attributes, owners and modes, and the
 * reader policy as every operation applies it (see fs.c for the tree and
 * why rendered files and tokens get an inode per generation).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "audit.h"
#include "config.h"
#include "cred.h"
#include "fs_int.h"
#include "policy.h"
#include "snap.h"
#include "util.h"

uint64_t fs_token_ino(const struct cred *c, uint64_t gen)
{
	return INO_TOKEN_BIT | ((uint64_t)cred_index(c) << 32) |
	       (gen & 0xffffffffULL);
}

uint64_t fs_cred_dir_ino(const struct cred *c)
{
	return INO_CRED_BASE | (uint64_t)cred_index(c);
}

uint64_t fs_snap_ino(size_t slot, uint32_t seq)
{
	return INO_SNAP_BIT | ((uint64_t)slot << 32) | seq;
}

size_t fs_cred_slot(const struct cred *c, enum cred_file f)
{
	return 2 + (size_t)cred_index(c) * SLOTS_PER_CRED + (f - CF_TOKEN_TYPE);
}

uint64_t fs_tenant_ino(const struct tenant_conf *tc)
{
	return INO_TENANT_BASE + tc->slot;
}

/* The live credential in slot @idx of @cfg, or NULL. */
static struct cred *live_cred(struct fs *fs, const struct config *cfg,
			      uint64_t idx)
{
	struct cred *c;

	if (idx >= cfg->n_cred_slots)
		return NULL;
	c = cred_at(fs->t, (uint32_t)idx);
	return c && cred_live(c) ? c : NULL;
}

/* Decode @ino; false if it names nothing (now). */
bool fs_node_of(struct fs *fs, fuse_ino_t ino, struct node *n)
{
	const struct config *cfg = cred_table_config(fs->t);
	uint64_t i = ino, idx;
	int32_t ti;

	memset(n, 0, sizeof(*n));
	n->cfg = cfg;
	if (i & INO_TOKEN_BIT) {
		n->kind = K_TOKEN;
		n->cred = live_cred(fs, cfg, (i & ~INO_TOKEN_BIT) >> 32);
		n->gen = (uint32_t)i;
	} else if (i & INO_SNAP_BIT) {
		n->kind = K_SNAP;
		n->slot = (size_t)((i & ~INO_SNAP_BIT) >> 32);
		n->gen = (uint32_t)i;
		if (n->slot < 2)
			return true;
		idx = (n->slot - 2) / SLOTS_PER_CRED;
		n->cred = live_cred(fs, cfg, idx);
		n->file = (enum cred_file)(CF_TOKEN_TYPE +
					   (n->slot - 2) % SLOTS_PER_CRED);
	} else if (i == FUSE_ROOT_ID) {
		n->kind = K_ROOT;
		return true;
	} else if (i == INO_TENANTS) {
		n->kind = K_TENANTS;
		return true;
	} else if ((i >> 48) == 1) {
		n->kind = K_TENANT;
		idx = i - INO_TENANT_BASE;
		ti = idx < cfg->n_tenant_slots ? cfg->tenant_of_slot[idx] : -1;
		n->tc = ti >= 0 ? &cfg->tenants[ti] : NULL;
		return n->tc != NULL;
	} else if ((i >> 48) == 2) {
		n->kind = K_CRED_DIR;
		n->cred = live_cred(fs, cfg, i - INO_CRED_BASE);
	} else {
		return false;
	}
	if (!n->cred)
		return false;
	/* The credential's conf may be newer than @cfg (a reload between
	 * the two loads): its tenant is the conf's own. */
	n->tc = cred_conf(n->cred)->tc;
	return true;
}

static void set_times(struct stat *st, int64_t ms)
{
	st->st_mtim.tv_sec = st->st_ctim.tv_sec = st->st_atim.tv_sec =
		(time_t)(ms / 1000);
	st->st_mtim.tv_nsec = st->st_ctim.tv_nsec = st->st_atim.tv_nsec =
		(long)(ms % 1000) * 1000000;
}

static int req_getgroups(void *arg, int size, gid_t list[])
{
	return fuse_req_getgroups(arg, size, list);
}

void fs_caller_of(fuse_req_t req, struct caller *who)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	caller_init(who, ctx->uid, ctx->gid, ctx->pid, req_getgroups, req,
		    ((struct fs *)fuse_req_userdata(req))->callers);
}

/*
 * Which credentials of @cfg @who may read, as a view of their slots
 * (its tenant's readers and its own), and a key naming that set: 0 and
 * no view for "all" (ops callers and the kernel-cache path).
 */
uint64_t fs_view_key(struct fs *fs, const struct config *cfg,
		     struct caller *who, struct visible **visible, int *err)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	struct visible *v;
	size_t i, t;

	*visible = NULL;
	if (fs->cache_kernel || policy_ops(cfg, who))
		return 0;
	v = visible_new(cfg->n_cred_slots);
	if (!v) {
		*err = -ENOMEM;
		return 0;
	}
	/* The tenant's decision once for all its credentials; a credential's
	 * own readers only where it narrows them. */
	for (t = 0; t < cfg->n_tenants; t++) {
		const struct tenant_conf *tc = &cfg->tenants[t];
		bool tenant_ok = policy_tenant(cfg, tc, who);

		for (i = tc->first_cred; i < tc->first_cred + tc->n_creds; i++) {
			const struct cred_conf *cc = &cfg->creds[i];
			bool on = tenant_ok && (!cc->readers.set ||
						policy_cred(cfg, tc, cc, who));

			v->on[cc->slot] = on;
			h = (h ^ (on ? 2 * (uint64_t)cc->slot + 1
				     : 2 * (uint64_t)cc->slot)) *
			    0x100000001b3ULL;
		}
	}
	*visible = v;
	return h | 1;
}

/* False if @pid was denied @node moments ago (the same path walk). */
static bool first_denial(struct fs *fs, pid_t pid, uint64_t node)
{
	int64_t now = time_mono_ms();
	bool first = true;
	unsigned i;

	pthread_mutex_lock(&fs->denial_lock);
	for (i = 0; i < RECENT_DENIALS; i++) {
		struct denial *d = &fs->recent[i];

		if (d->pid == pid && d->node == node &&
		    now - d->ms < DENIAL_DEDUP_MS) {
			first = false;
			break;
		}
	}
	if (first)
		fs->recent[fs->next_denial++ % RECENT_DENIALS] =
			(struct denial){pid, node, now};
	pthread_mutex_unlock(&fs->denial_lock);
	return first;
}

void fs_audit_denied(struct fs *fs, struct caller *who, const char *tenant,
		     const char *provider, const char *outcome,
		     const char *detail)
{
	struct audit_rec rec = {
		.event = "denied",
		.tenant = tenant,
		.provider = provider,
		.who = who,
		.outcome = outcome,
		.detail = detail,
	};

	audit_log(fs->audit, &rec);
}

/*
 * The reader policy at every operation on node @n, the same decision as
 * for access_token: a tenant @who may not read is not there (-ENOENT, its
 * name not confirmed, also through a bind mount of a directory below
 * it); a credential it may not read shows in its tenant's listing, and
 * nothing of it (@inside: its listing and names; its files) can be
 * looked up, stat'ed, listed or opened (-EACCES). A denial is audited
 * once per path walk. 0 when allowed, and always on the kernel-cache
 * path, where the mode bits decide.
 */
int fs_node_allowed(struct fs *fs, const struct node *n, bool inside,
		    struct caller *who)
{
	const struct config *cfg = n->cfg;
	const struct cred_conf *cc = n->cred ? cred_conf(n->cred) : NULL;
	const struct tenant_conf *tc = cc ? cc->tc : n->tc;

	if (fs->cache_kernel || n->kind == K_ROOT || n->kind == K_TENANTS ||
	    (n->kind == K_SNAP && !cc))
		return 0;
	if (!policy_tenant(cfg, tc, who)) {
		/* A tenant visible to all: its name is no secret (looked up,
		 * stat'ed, listed in tenants/); nothing inside it is. */
		if (tc->visible_to_all && n->kind == K_TENANT && !inside)
			return 0;
		if (first_denial(fs, who->pid, fs_tenant_ino(tc)))
			fs_audit_denied(fs, who, tc->name,
					cc ? cc->provider->name : NULL,
					tc->visible_to_all ? "EACCES"
							   : "ENOENT",
					"not a reader of this tenant");
		return tc->visible_to_all ? -EACCES : -ENOENT;
	}
	if (!cc || (n->kind == K_CRED_DIR && !inside) ||
	    policy_cred(cfg, tc, cc, who))
		return 0;
	if (first_denial(fs, who->pid, fs_cred_dir_ino(n->cred)))
		fs_audit_denied(fs, who, tc->name, cc->provider->name, "EACCES",
				"not a reader of this credential");
	return -EACCES;
}

/* Owner and mode of a file of @n; directories add x where r is set. */
static void owner_of(struct fs *fs, const struct node *n, struct stat *st,
		     mode_t type)
{
	mode_t mode = 0440;

	st->st_uid = 0;
	st->st_gid = 0;
	if (n->kind == K_TENANT) {
		mode = n->tc->mode;
		st->st_uid = n->tc->uid;
		st->st_gid = n->tc->gid;
	} else if (n->cred) {
		mode = cred_conf(n->cred)->mode;
		st->st_uid = cred_conf(n->cred)->uid;
		st->st_gid = cred_conf(n->cred)->gid;
	} else if (n->kind == K_SNAP) {
		mode = 0444; /* root status, metrics: each sees its own view */
	}
	if (type == S_IFDIR)
		mode |= (mode & 0444) >> 2;
	st->st_mode = type | mode;
}

/*
 * Whether the mode bits of @n say less than the readers do (several uids
 * or gids, cgroups, a credential narrowing its tenant's), so that only the
 * daemon decides: then no attributes are cached, and every stat reaches
 * fs_node_allowed() instead of the kernel's copy of another reader's lookup.
 */
bool fs_daemon_decides(struct fs *fs, const struct node *n)
{
	const struct tenant_conf *tc;

	if (fs->cache_kernel || (!n->cred && n->kind != K_TENANT))
		return false;
	tc = n->cred ? cred_conf(n->cred)->tc : n->tc;
	if ((tc->mode & 0004) || tc->readers.n_cgroups)
		return true;
	return n->cred && (cred_conf(n->cred)->readers.set ||
			   cred_conf(n->cred)->readers.n_cgroups);
}

/*
 * Fill @st for @n, taking content from handle @h when given. Token and
 * snapshot inodes that are no longer held give -ESTALE. 0 or -errno.
 */
int fs_stat_of(struct fs *fs, const struct node *n, fuse_ino_t ino,
	       const struct handle *h, struct stat *st)
{
	struct token *tok = NULL;
	struct snap *b = NULL;

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
	case K_CRED_DIR:
		if (!cred_present(n->cred))
			return -ENOENT; /* its record was removed */
		__attribute__((fallthrough));
	case K_TENANT:
		owner_of(fs, n, st, S_IFDIR);
		st->st_nlink = 2;
		return 0;
	case K_TOKEN:
		owner_of(fs, n, st, S_IFREG);
		if (h)
			tok = token_ref(h->tok);
		else if (cred_token_of_gen(n->cred, n->gen, &tok) < 0)
			return -ESTALE;
		if (tok) {
			st->st_size = (off_t)tok->len;
			set_times(st, tok->issued_ms);
			token_unref(tok);
		}
		return 0;
	case K_SNAP:
		owner_of(fs, n, st, S_IFREG);
		b = h ? snap_ref(h->snap)
		      : snaps_find(fs->snaps, n->slot, n->gen);
		if (!b)
			return -ESTALE;
		st->st_size = (off_t)b->len;
		set_times(st, b->rendered_ms);
		snap_unref(b);
		return 0;
	}
	return -ENOENT;
}

/*
 * How long the kernel may keep the name access_token pointing at @tok:
 * on the kernel-cache path until the token counts as expired, so that
 * even a starved refresher cannot leave an expired token reachable
 * through the cache (there is no open() to check it); audited, until it
 * no longer opens at once, so that a walk after that looks the name up
 * (and the lookup waits for the refresh, as the open would). Rotations
 * invalidate the name earlier. No token yet: ask again every time.
 */
double fs_token_entry_timeout(const struct fs *fs, const struct cred *c,
			      const struct token *tok)
{
	int64_t left;

	if (!tok)
		return 0;
	left = (fs->cache_kernel ? cred_token_deadline(c, tok)
				 : cred_token_fresh_until(c, tok)) -
	       time_real_ms();
	if (left <= 0)
		return 0;
	return left / 1000.0 < TOKEN_ENTRY_TIMEOUT ? left / 1000.0
						   : TOKEN_ENTRY_TIMEOUT;
}

int fs_tenant_find(const struct config *cfg, const char *name)
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
