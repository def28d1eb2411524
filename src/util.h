/*
 * util: capped byte buffers, wiping, clocks, RFC 3339 time, capped file
 * reads, durable file replacement and the name rule for tenants and
 * providers.
 */
#ifndef CREDFS_UTIL_H
#define CREDFS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* A growable buffer with a hard cap; its bytes are wiped when freed. */
struct buf {
	char *data;
	size_t len;
	size_t alloc;
	size_t cap;
};

/* Start an empty buffer that refuses to grow past @cap bytes. */
void buf_init(struct buf *b, size_t cap);
/* Append @n bytes: 0, -E2BIG past the cap, -ENOMEM. Keeps a NUL after. */
int buf_append(struct buf *b, const void *p, size_t n);
/* Append formatted text: 0, -E2BIG, -ENOMEM. */
int buf_printf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Wipe and free the contents; the buffer can be reused after buf_init. */
void buf_free(struct buf *b);

/* Wipe @n bytes at @p, then free it. NULL is a no-op. */
void freezero(void *p, size_t n);
/* Wipe and free a NUL-terminated string. NULL is a no-op. */
void strfreezero(char *s);

/* A short message kept on the heap only while there is one (NULL means
 * ""): *@dst becomes @fmt's text ("" frees it). Without memory it is "". */
void text_set(char **dst, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* No message: free it, NULL. */
void text_clear(char **dst);
/* Such a message, "" for NULL. */
static inline const char *text_of(const char *s)
{
	return s ? s : "";
}

/* Milliseconds since the epoch (CLOCK_REALTIME). */
int64_t time_real_ms(void);
/* Milliseconds on CLOCK_MONOTONIC. */
int64_t time_mono_ms(void);
/* Format @ms since the epoch as "2026-11-28T09:00:00Z" (UTC, seconds). */
void time_rfc3339(int64_t ms, char out[32]);

/*
 * Read a whole regular file of at most @cap bytes into @out (NUL-terminated).
 * With @private_only, the file must be this user's and not readable or
 * writable by group or others. Never blocks on a FIFO or device. Returns
 * 0, or -errno (-EFBIG past the cap, -EPERM for loose mode, -EOWNERDEAD
 * for another owner, -EINVAL for anything but a regular file).
 */
int file_read_capped(const char *path, size_t cap, bool private_only,
		     struct buf *out);

/* Write @len bytes to a new temp file (mode 0600) beside @name under
 * @dirfd, named in @tmp, fsynced if @sync: the open fd, or -errno. */
int file_write_tmp(int dirfd, const char *name, const void *data, size_t len,
		   bool sync, char tmp[256]);

/* Replace @name under @dirfd with @len bytes durably: a temp file, fsync,
 * rename over @name, fsync of the directory. A crash at any instant
 * leaves the old file or the new one. 0 or -errno. */
int file_replace_at(int dirfd, const char *name, const void *data, size_t len);

/* Whether a credfs mount is on @dir (absolute, resolved) now, as
 * /proc/self/mounts says. */
bool util_credfs_mounted_on(const char *dir);

/* What file_read_capped()'s -errno @r means, for a message ("not a
 * regular file", "larger than @cap_text", ...). */
const char *file_read_error(int r, const char *cap_text);

/* A process that holds tokens and keys: not dumpable (no core, no ptrace
 * by other users), nothing it creates readable by others, and jansson's
 * copies of what it parsed wiped when freed. The daemon and credfsctl
 * call it first. */
void secrets_hygiene(void);

/* Copy @in to @out (NUL-terminated, cut to @size) with every control
 * byte (under 0x20, and 0x7f) written as \xNN, so that text from outside
 * cannot move a terminal's cursor or forge a line. Returns the length. */
size_t text_escape_controls(const char *in, char *out, size_t size);

/* True for names matching [a-z0-9][a-z0-9._-]{0,63}. */
bool util_name_valid(const char *s);

/* "ab12cd34": the first 8 hex digits of SHA-256(@p); safe to log. */
void util_fingerprint(const void *p, size_t n, char out[9]);

#endif
