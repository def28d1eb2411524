/*
 * fs_int: what the FUSE layer's two files share (fs.c answers requests,
 * fs_node.c says what each node is): inode numbers, the node and handle
 * types, struct fs. Nothing outside fs*.c includes it.
 */
#ifndef CREDFS_FS_INT_H
#define CREDFS_FS_INT_H

#define FUSE_USE_VERSION 312

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include <fuse_lowlevel.h>

#include "render.h"

struct caller;
struct config;
struct cred;
struct pending;
struct token;

#define INO_TENANTS 4
#define INO_TENANT_BASE (1ULL << 48)
#define INO_CRED_BASE (2ULL << 48)
#define INO_TOKEN_BIT (1ULL << 63)
#define INO_SNAP_BIT (1ULL << 62)

#define DIR_TIMEOUT 60.0
#define TOKEN_ENTRY_TIMEOUT 60.0  /* invalidated on rotation anyway */
#define FILE_ATTR_TIMEOUT 86400.0 /* an inode's content never changes */

enum kind { K_ROOT, K_TENANTS, K_TENANT, K_CRED_DIR, K_TOKEN, K_SNAP };

/* Slots of rendered files: the root's two, then four per credential. */
#define SLOT_STATUS 0
#define SLOT_METRICS 1
#define SLOTS_PER_CRED (CF_COUNT - CF_TOKEN_TYPE)

/* What an inode number names, in the configuration @cfg that was current
 * when it was decoded (a reload may publish another meanwhile: whatever
 * the operation reads of the tree, it reads of @cfg). */
struct node {
	enum kind kind;
	const struct config *cfg;
	const struct tenant_conf *tc; /* K_TENANT; and of a credential's */
	struct cred *cred;   /* K_CRED_DIR, K_TOKEN, K_SNAP of a credential */
	enum cred_file file; /* K_SNAP of a credential */
	size_t slot;	     /* K_SNAP */
	uint32_t gen;	     /* K_TOKEN: generation, K_SNAP: snapshot number */
};

/* An open file: exactly one of @tok and @snap. */
struct handle {
	struct token *tok;
	struct snap *snap;
	/* In its shard's list, so that handles whose release never came
	 * (the session ended first) are freed with the filesystem. */
	struct handle *prev, *next;
	unsigned shard;
	uint64_t fh; /* a handed-over handle's number (fs->foreign) */
};

#define HANDLE_SHARDS 16

struct hshard {
	pthread_mutex_t lock;
	struct handle *head;
};

/* Recent tenant-level denials: the kernel may ask twice for one path walk
 * (revalidate a cached name, then look it up), which is logged once. */
#define RECENT_DENIALS 16
#define DENIAL_DEDUP_MS 200

struct denial {
	pid_t pid;
	uint64_t node; /* the tenant's or the credential's directory inode */
	int64_t ms;
};

struct fs {
	struct cred_table *t;
	struct fuse_session *se;
	struct audit *audit;
	pthread_mutex_t denial_lock;
	struct denial recent[RECENT_DENIALS];
	unsigned next_denial;
	struct hshard handles[HANDLE_SHARDS];
	atomic_uint next_shard;
	struct caller_cache *callers; /* audit fields by pid */
	bool cache_kernel;
	int64_t start_ms;
	struct snaps *snaps; /* rendered files, by slot */
	/* Opens waiting for a refresh, and the thread that answers them. */
	pthread_mutex_t wlock;
	pthread_cond_t wcond;
	struct pending *waiting;
	bool wkicked, wstop, wpause, wstarted;
	pthread_t wthread;
	/* File handles carry the process's epoch in their top 16 bits, so
	 * that handles a previous process gave out (handed over, in
	 * @foreign, or lost in a crash) are never taken for pointers. */
	uint16_t epoch;
	pthread_mutex_t flock;
	struct handle *foreign;
};

/* Inode numbers: computed, not allocated (see fs.c). */
/* fs_handle.c: @h's file handle; the handle @fh names (ours, a
 * handed-over one, or NULL); a new one (NULL without memory); unlinking
 * and freeing one with what it holds. */
uint64_t fs_fh_of(const struct fs *fs, const struct handle *h);
struct handle *fs_handle_of(struct fs *fs, uint64_t fh);
struct handle *fs_handle_new(struct fs *fs);
void fs_handle_free(struct fs *fs, struct handle *h);

uint64_t fs_token_ino(const struct cred *c, uint64_t gen);
uint64_t fs_cred_dir_ino(const struct cred *c);
uint64_t fs_snap_ino(size_t slot, uint32_t seq);
/* The rendered-file slot of file @f of @c. */
size_t fs_cred_slot(const struct cred *c, enum cred_file f);
/* Decode @ino into @n; false if it names nothing. */
bool fs_node_of(struct fs *fs, fuse_ino_t ino, struct node *n);

/* The process behind @req, its groups and cgroup read when needed. */
void fs_caller_of(fuse_req_t req, struct caller *who);
/* Which credentials of @cfg @who may read (a view made for @cfg, into
 * *@visible; NULL for all, or without memory: then -ENOMEM in *@err), and
 * a key naming that view (0: all). */
uint64_t fs_view_key(struct fs *fs, const struct config *cfg,
		     struct caller *who, struct visible **visible, int *err);
/* One "denied" audit line. */
void fs_audit_denied(struct fs *fs, struct caller *who, const char *tenant,
		     const char *provider, const char *outcome,
		     const char *detail);
/* The reader policy at node @n: 0, -ENOENT (tenant) or -EACCES
 * (credential; @inside: its listing and names). */
int fs_node_allowed(struct fs *fs, const struct node *n, bool inside,
		    struct caller *who);
/* Whether only the daemon decides who may see @n (no attribute cache). */
bool fs_daemon_decides(struct fs *fs, const struct node *n);
/* Attributes of @n (content from @h if given): 0 or -errno (-ESTALE: a
 * generation or rendering no longer held). */
int fs_stat_of(struct fs *fs, const struct node *n, fuse_ino_t ino,
	       const struct handle *h, struct stat *st);
/* How long the kernel may keep the name access_token on @tok (fs_node.c). */
double fs_token_entry_timeout(const struct fs *fs, const struct cred *c,
			      const struct token *tok);
/* Tenant index of @name in @cfg, or -1. */
int fs_tenant_find(const struct config *cfg, const char *name);
/* The inode number of tenant @tc's directory. */
uint64_t fs_tenant_ino(const struct tenant_conf *tc);

#endif
