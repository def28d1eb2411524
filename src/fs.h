/*
 * fs: the FUSE low-level operations. Answers each request exactly once,
 * asking cred for snapshots and render for text; the only module that calls
 * fuse_reply_* or fuse_lowlevel_notify_*.
 */
#ifndef CREDFS_FS_H
#define CREDFS_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct audit;
struct cred;
struct config;
struct cred_table;
struct fs;
struct fuse_lowlevel_ops;
struct fuse_session;
struct json_t;

/*
 * Create the filesystem state for @t, auditing to @audit. With
 * @cache_kernel, opens are not sent to the daemon (see docs/security.md).
 * 0 or -ENOMEM.
 */
int fs_new(struct cred_table *t, struct audit *audit, bool cache_kernel,
	   struct fs **out);
/* Answer the opens still waiting for a refresh (with what the open rule
 * gives now) and stop waiting: before the session goes. NULL-safe. */
void fs_stop_waits(struct fs *fs);
/* A handoff: stop answering the opens waiting for a refresh, and keep
 * them (the next process gets them again from the kernel, or this one
 * goes on with fs_resume_waits()). */
void fs_pause_waits(struct fs *fs);
int fs_resume_waits(struct fs *fs);
/* Free it (fs_stop_waits() first). NULL is a no-op. */
void fs_free(struct fs *fs);

/* What a handoff carries of the filesystem (handoff.h): its file-handle
 * epoch, its snapshot numbering and, with @handles, its open files with
 * their bytes. fs_import() takes a previous process's, before serving. */
struct json_t *fs_export(struct fs *fs, bool handles);
void fs_import(struct fs *fs, const struct json_t *image);

/* The operations table to pass to fuse_session_new() with @fs as userdata. */
const struct fuse_lowlevel_ops *fs_ops(void);

/* The session, for cache invalidation. Set once it exists. */
void fs_set_session(struct fs *fs, struct fuse_session *se);

/*
 * A new token generation of @c was published: drop the kernel's cached
 * name so the next lookup finds the new inode. Refresher thread, no locks.
 */
void fs_token_rotated(void *fs, struct cred *c);

/*
 * Generation @gen of @c has expired with no successor: drop its cached
 * pages so no read is served from them. Refresher thread, no locks.
 */
void fs_token_expired(void *fs, struct cred *c, uint64_t gen);

/*
 * @c's directory appeared or went (a record added or removed), or its
 * tokens changed outside a refresh: drop the kernel's cached names.
 * Any thread but a FUSE worker; no locks held.
 */
void fs_cred_changed(void *fs, struct cred *c);

/* A reload changed the tree from @old to @cfg: drop the kernel's names of
 * the tenants that came or went, and the tenants listing. */
void fs_tree_changed(void *fs, const struct config *old,
		     const struct config *cfg);

#endif
