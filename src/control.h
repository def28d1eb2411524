/*
 * control: the daemon's control socket, "control.sock" in the store
 * directory (0700, so only the store's owner gets near it; the peer's uid
 * is checked too), or for a daemon without a store an abstract socket
 * named after its mount point (control_name(); the peer's uid decides). One
 * request line in, one reply out, then the connection closes. credfsctl uses it
 * to tell a running daemon about add and remove, and to ask for status without
 * the mount.
 */
#ifndef CREDFS_CONTROL_H
#define CREDFS_CONTROL_H

#include <stddef.h>
#include <stdint.h>

struct buf;
struct control;

#define CONTROL_SOCKET "control.sock"
#define CONTROL_MAX_REQUEST 4096

/* The abstract socket ("@credfs-control:MOUNTPOINT", or a digest of a
 * long mount point) of the daemon without a store on absolute, resolved
 * @mountpoint, into @out. */
void control_name(const char *mountpoint, char *out, size_t size);

/* Answer @request (one line, no newline) into @reply; 0 for success or a
 * positive exit status for credfsctl. */
typedef int (*control_fn)(void *arg, const char *request, struct buf *reply);

/* Listen in @dir (or on the abstract socket "@NAME") and serve requests
 * on a thread of its own. 0 or -errno with a message in @err. */
int control_start(const char *dir, control_fn fn, void *arg,
		  struct control **out, char *err, size_t errlen);

/* Stop serving and remove the socket. NULL is a no-op. */
void control_stop(struct control *c);

/*
 * Send @request to the daemon serving @dir and wait up to @timeout_ms for
 * the whole reply (into @reply, its exit status in *@status). 0, -ENOENT
 * or -ECONNREFUSED when no daemon listens, -ETIMEDOUT when one listens
 * and does not answer in time (stopped, hung), or another -errno.
 */
int control_call(const char *dir, const char *request, int64_t timeout_ms,
		 struct buf *reply, int *status);

#endif
