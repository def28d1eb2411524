/*
 * handoff: the mount outlives the process. A FUSE connection is a file
 * descriptor on /dev/fuse: whoever holds it may serve the mount, so a
 * daemon that gives it away (to the binary it upgrades to, on SIGUSR2,
 * or to the service manager's fd store, for a crash) leaves the mount in
 * place, and readers wait in the kernel instead of failing. With the fd
 * go the bytes of the FUSE INIT request (libfuse answers nothing before
 * it has seen one, and the kernel sends it once per mount) and a state
 * image: every credential's tokens and schedule, the inode numbering
 * and, on an upgrade, the open files. docs/operations.md tells the story.
 *
 * The fds travel under sd_listen_fds(3) names: "fuse", "init", "state"
 * (or "state-0"/"state-1" in the fd store, the newer one counts),
 * "store-lock" (the file store's daemon.lock, still held) and "ready"
 * (an upgrade's pipe back to the process it replaces).
 */
#ifndef CREDFS_HANDOFF_H
#define CREDFS_HANDOFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct cred_table;
struct fs;
struct fuse_session;
struct json_t;

struct handoff {
	int fuse_fd;	      /* -1: nothing to resume, mount afresh */
	int init_fd;	      /* the INIT request's bytes (memfd), or -1 */
	int lock_fd;	      /* the store's daemon.lock, held, or -1 */
	int ready_fd;	      /* an upgrade's pipe back, or -1 */
	struct json_t *image; /* the newest state image, or NULL */
	uint64_t image_seq;   /* of the image taken */
};

/* Take what was passed in (LISTEN_FDS): @h is set either way. A state
 * image that cannot be read is said in @why (and left out), the rest
 * still resumes. */
void handoff_take(struct handoff *h, char *why, size_t whylen);
/* Close what @h holds (not lock_fd, the store's from then on). */
void handoff_clear(struct handoff *h);

/* Before the store is read: no generation the image (NULL: none, but a
 * mount resumed) may have used is used again. */
void handoff_floors(struct cred_table *t, const struct json_t *image);
/* After: serve the image's tokens where they are still the state.
 * Returns how many credentials were taken. */
size_t handoff_restore(struct cred_table *t, const struct json_t *image);

/*
 * A clean stop to a cold start (a restart, a boot): the client-credentials
 * credentials' state (their tokens, as an image has them) in the file
 * state.sealed of the store's directory @dir, sealed under a key of
 * @master's (sealed.h); the refresh-token credentials' tokens are in
 * their records already. handoff_save_stopped(): after the refresher
 * stopped; a stop with no such token writes nothing. 0 or -errno.
 * handoff_restore_stopped(): at a fresh start, after the store was read:
 * serve the file's tokens that are still valid (the file is removed
 * first: one start takes it). Returns how many credentials were taken;
 * a file that does not open is said in the log.
 */
int handoff_save_stopped(struct cred_table *t, const char *dir,
			 const uint8_t *master);
size_t handoff_restore_stopped(struct cred_table *t, const char *dir,
			       const uint8_t *master);

/* The state image of @t and @fs (with open files when @handles), as a
 * sealed memfd, or -errno. @seq orders images. */
int handoff_image_fd(struct cred_table *t, struct fs *fs,
		     const char *mountpoint, bool handles, uint64_t seq);

/* A fresh mount: read the first request (INIT), keep its bytes in a
 * sealed memfd (*@init_fd) and process it. 0 or -errno. */
int handoff_first_request(struct fuse_session *se, int *init_fd);
/* Serve the connection in @h with @se instead of mounting: replay INIT
 * (the kernel keeps the first negotiation), then ask the kernel to send
 * again what the previous process had read and not answered. 0 or
 * -errno; *@resent says whether the kernel could. */
int handoff_resume(struct fuse_session *se, struct handoff *h, bool *resent);
/* Whether the connection @fuse_fd still has its mount. */
bool handoff_alive(int fuse_fd);
/* FUSE_NOTIFY_RESEND on @se's connection (Linux 6.9): 0 or -errno. */
int handoff_resend(struct fuse_session *se);

/*
 * Under a service manager (NOTIFY_SOCKET), keep a state image of @t and
 * @fs in its fd store: one now, before serving, then again within a
 * tenth of a second of any change. *@out stays NULL without one. 0 or -errno.
 * Images are numbered from @seq on; _stop() returns the last number.
 */
struct keeper;
int handoff_keeper_start(struct cred_table *t, struct fs *fs,
			 const char *mountpoint, uint64_t seq,
			 struct keeper **out);
uint64_t handoff_keeper_stop(struct keeper *k, uint64_t seq);
/* Write the image now if anything changed (before READY=1). NULL-safe. */
void handoff_keeper_sync(struct keeper *k);

/* Put the connection, INIT and @state_fd in the service manager's fd
 * store (FDSTORE=1), replacing the previous image. No-op without
 * NOTIFY_SOCKET. */
void handoff_store_fds(int fuse_fd, int init_fd);
void handoff_store_image(int state_fd, uint64_t seq);
/* A deliberate stop: the fd store lets go of everything. */
void handoff_store_clear(void);

/*
 * Start @exe with @argv (in @cwd) and the fds @fds named @names (at most
 * six), under sd_listen_fds(3) conventions (LISTEN_PID and, if a watchdog
 * is set, WATCHDOG_PID are the child's), plus a "ready" pipe whose read
 * end is *@ready. 0 or -errno.
 */
int handoff_spawn(const char *exe, char *const argv[], const char *cwd,
		  const int *fds, const char *const *names, size_t n,
		  pid_t *pid, int *ready);

/* Tell the process that handed over (the "ready" fd) that this one serves. */
void handoff_ready(struct handoff *h);

/* Unmount @mountpoint by path: a resumed session has none recorded. */
int handoff_unmount(const char *mountpoint);

#endif
