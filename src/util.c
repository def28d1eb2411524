/*
 * util: small helpers shared by every module. Nothing here logs; errors are
 * returned as -errno for the caller to report once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "util.h"

void buf_init(struct buf *b, size_t cap)
{
	b->data = NULL;
	b->len = 0;
	b->alloc = 0;
	b->cap = cap;
}

/* Grow to hold @need bytes plus a NUL; old contents are wiped, not left. */
static int buf_reserve(struct buf *b, size_t need)
{
	size_t alloc;
	char *p;

	if (need > b->cap)
		return -E2BIG;
	if (need + 1 <= b->alloc)
		return 0;
	alloc = b->alloc ? b->alloc : 64;
	while (alloc < need + 1)
		alloc *= 2;
	if (alloc > b->cap + 1)
		alloc = b->cap + 1;
	p = malloc(alloc);
	if (!p)
		return -ENOMEM;
	if (b->data) {
		memcpy(p, b->data, b->len);
		freezero(b->data, b->alloc);
	}
	b->data = p;
	b->alloc = alloc;
	return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	int r;

	if (n > b->cap - b->len)
		return -E2BIG;
	r = buf_reserve(b, b->len + n);
	if (r < 0)
		return r;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n, r;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	r = buf_reserve(b, b->len + (size_t)n);
	if (r < 0)
		return r;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

void buf_free(struct buf *b)
{
	freezero(b->data, b->alloc);
	b->data = NULL;
	b->len = 0;
	b->alloc = 0;
}

void freezero(void *p, size_t n)
{
	if (!p)
		return;
	OPENSSL_cleanse(p, n);
	free(p);
}

void strfreezero(char *s)
{
	if (s)
		freezero(s, strlen(s));
}

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t time_real_ms(void)
{
	return clock_ms(CLOCK_REALTIME);
}

int64_t time_mono_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

void time_rfc3339(int64_t ms, char out[32])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, 32, "1970-01-01T00:00:00Z");
}

/* Wipe jansson's copies of token responses when it frees them. */
static void json_wipe_free(void *p)
{
	if (p)
		freezero(p, malloc_usable_size(p));
}

void secrets_hygiene(void)
{
	struct rlimit no_core = {0, 0};

	prctl(PR_SET_DUMPABLE, 0);
	setrlimit(RLIMIT_CORE, &no_core);
	umask(077);
	json_set_alloc_funcs(malloc, json_wipe_free);
}

size_t text_escape_controls(const char *in, char *out, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;

	if (!size)
		return 0;
	for (; *in; in++) {
		unsigned char ch = (unsigned char)*in;
		bool ctl = ch < 0x20 || ch == 0x7f;

		if (n + (ctl ? 4 : 1) >= size)
			break;
		if (!ctl) {
			out[n++] = (char)ch;
			continue;
		}
		out[n++] = '\\';
		out[n++] = 'x';
		out[n++] = hex[ch >> 4];
		out[n++] = hex[ch & 15];
	}
	out[n] = '\0';
	return n;
}

const char *file_read_error(int r, const char *cap_text)
{
	switch (r) {
	case -EINVAL:
		return "not a regular file (a directory, FIFO or device is "
		       "not read): name the file itself";
	case -EFBIG: return cap_text;
	case -EPERM:
		return "readable or writable by group or others; chmod 600 it";
	case -EOWNERDEAD:
		return "owned by another user, who could replace it; chown it "
		       "to the daemon's user";
	default: return strerror(-r);
	}
}

int file_read_capped(const char *path, size_t cap, bool private_only,
		     struct buf *out)
{
	char chunk[4096];
	struct stat st;
	ssize_t n;
	int fd, r;

	buf_init(out, cap);
	/* O_NONBLOCK: a FIFO would wait for a writer; it is refused below. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		goto out_close;
	}
	if (private_only && (st.st_mode & 077)) {
		r = -EPERM;
		goto out_close;
	}
	if (private_only && st.st_uid != geteuid()) {
		r = -EOWNERDEAD; /* its owner could put another secret there */
		goto out_close;
	}
	for (;;) {
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto out_close;
		}
		if (n == 0)
			break;
		r = buf_append(out, chunk, (size_t)n);
		if (r < 0) {
			r = r == -E2BIG ? -EFBIG : r;
			goto out_close;
		}
	}
	r = buf_append(out, "", 0); /* a NUL even for an empty file */
out_close:
	OPENSSL_cleanse(chunk, sizeof(chunk));
	close(fd);
	if (r < 0)
		buf_free(out);
	return r;
}

bool util_name_valid(const char *s)
{
	size_t i;

	if (!s ||
	    !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
		return false;
	for (i = 1; s[i]; i++) {
		char c = s[i];

		if (i > 63)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

void util_fingerprint(const void *p, size_t n, char out[9])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int i;

	if (!EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL) || mdlen < 4) {
		snprintf(out, 9, "????????");
		return;
	}
	for (i = 0; i < 4; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

void text_set(char **dst, const char *fmt, ...)
{
	va_list ap;
	char *t = NULL;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&t, fmt, ap);
	va_end(ap);
	text_clear(dst);
	if (n > 0)
		*dst = t;
	else if (n == 0)
		free(t);
}

void text_clear(char **dst)
{
	free(*dst);
	*dst = NULL;
}

bool util_credfs_mounted_on(const char *dir)
{
	char line[4096], *save = NULL, *src, *mp, *type;
	bool found = false;
	FILE *f = fopen("/proc/self/mounts", "re");

	/* "source mountpoint type options 0 0" (octal escapes in names). */
	while (f && !found && fgets(line, sizeof(line), f)) {
		src = strtok_r(line, " ", &save);
		mp = strtok_r(NULL, " ", &save);
		type = strtok_r(NULL, " ", &save);
		found = src && mp && type && !strcmp(mp, dir) &&
			!strcmp(type, "fuse.credfs");
	}
	if (f)
		fclose(f);
	return found;
}

int file_write_tmp(int dirfd, const char *name, const void *data, size_t len,
		   bool sync, char tmp[256])
{
	static atomic_uint seq;
	const char *p = data;
	size_t done = 0;
	int fd, r = 0;

	snprintf(tmp, 256, ".%s.%d.%u.tmp", name, (int)getpid(),
		 atomic_fetch_add(&seq, 1));
	fd = openat(dirfd, tmp,
		    O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	while (r == 0 && done < len) {
		ssize_t n = write(fd, p + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			r = -errno;
		else
			done += (size_t)n;
	}
	if (r == 0 && sync && fsync(fd) < 0)
		r = -errno;
	if (r < 0) {
		close(fd);
		unlinkat(dirfd, tmp, 0);
		return r;
	}
	return fd;
}

int file_replace_at(int dirfd, const char *name, const void *data, size_t len)
{
	char tmp[256];
	int fd = file_write_tmp(dirfd, name, data, len, true, tmp), r = 0;

	if (fd < 0)
		return fd;
	if (close(fd) < 0)
		r = -errno;
	if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dirfd, tmp, 0);
		return r;
	}
	return fsync(dirfd) < 0 ? -errno : 0;
}
