/*
 * key: master key files. The checks are the ones an operator expects from
 * ssh: a key readable by others is refused with a message that says so.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "key.h"
#include "util.h"

static uint8_t *key_alloc(void)
{
	uint8_t *k = OPENSSL_secure_malloc(KEY_BYTES);

	if (!k)
		k = malloc(KEY_BYTES);
	if (k)
		(void)mlock(k, KEY_BYTES); /* best effort: RLIMIT_MEMLOCK */
	return k;
}

void key_free(uint8_t *key)
{
	if (!key)
		return;
	OPENSSL_cleanse(key, KEY_BYTES);
	(void)munlock(key, KEY_BYTES);
	if (CRYPTO_secure_allocated(key))
		OPENSSL_secure_free(key);
	else
		free(key);
}

int key_load_file(const char *path, uint8_t **out, char *err, size_t errlen)
{
	uint8_t raw[KEY_BYTES + 1];
	struct stat st;
	ssize_t n;
	int fd, r;

	/* O_NONBLOCK: a FIFO would wait for a writer; refused below. */
	fd = open(path,
		  O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "key file %s: %s", path, strerror(-r));
		return r;
	}
	r = fstat(fd, &st) < 0 ? -errno : 0;
	if (r == 0 && !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "key file %s: not a regular file", path);
		r = -EINVAL;
	} else if (r == 0 && st.st_uid != geteuid()) {
		snprintf(err, errlen,
			 "key file %s: owned by uid %u, not by "
			 "this user (uid %u)",
			 path, (unsigned)st.st_uid, (unsigned)geteuid());
		r = -EPERM;
	} else if (r == 0 && (st.st_mode & 077)) {
		snprintf(err, errlen,
			 "key file %s: mode %04o lets group or "
			 "others in; chmod 600 it",
			 path, (unsigned)(st.st_mode & 07777));
		r = -EPERM;
	}
	if (r == 0) {
		n = read(fd, raw, sizeof(raw));
		if (n != KEY_BYTES) {
			snprintf(err, errlen,
				 "key file %s: must hold exactly "
				 "%d bytes (credfsctl init makes one)",
				 path, KEY_BYTES);
			r = -EINVAL;
		}
	}
	close(fd);
	if (r == 0) {
		*out = key_alloc();
		if (*out)
			memcpy(*out, raw, KEY_BYTES);
		else
			r = -ENOMEM;
	}
	OPENSSL_cleanse(raw, sizeof(raw));
	return r;
}

int key_load(const char *key_file, uint8_t **out, char *err, size_t errlen)
{
	const char *creds = getenv("CREDENTIALS_DIRECTORY");
	char path[4096];
	size_t n;
	int r;

	*out = NULL;
	if (creds && *creds) {
		snprintf(path, sizeof(path), "%s/credfs.key", creds);
		if (access(path, F_OK) == 0)
			return key_load_file(path, out, err, errlen);
	}
	if (!key_file) {
		snprintf(err, errlen,
			 "no master key: set store.key_file or "
			 "pass the systemd credential credfs.key");
		return -ENOENT;
	}
	r = key_load_file(key_file, out, err, errlen);
	n = strlen(err);
	if (r == -ENOENT && n < errlen)
		snprintf(err + n, errlen - n,
			 ": was the store ever made? 'credfsctl init --config "
			 "FILE' creates it and its master key");
	return r;
}

int key_create(const char *path, char *err, size_t errlen)
{
	uint8_t raw[KEY_BYTES];
	int fd, r = 0;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	if (fd < 0) {
		r = -errno;
		if (r != -EEXIST)
			snprintf(err, errlen, "key file %s: %s", path,
				 strerror(-r));
		return r;
	}
	if (RAND_priv_bytes(raw, sizeof(raw)) != 1 ||
	    write(fd, raw, sizeof(raw)) != (ssize_t)sizeof(raw) ||
	    fsync(fd) < 0) {
		r = -EIO;
		snprintf(err, errlen, "key file %s: cannot write", path);
	}
	OPENSSL_cleanse(raw, sizeof(raw));
	close(fd);
	if (r < 0)
		unlink(path);
	return r;
}
