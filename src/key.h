/*
 * key: the store's 32-byte master key. Read from a systemd credential
 * ($CREDENTIALS_DIRECTORY/credfs.key) when present, else from the key file
 * named in the config, which must be a regular file owned by the daemon's
 * user and not accessible to group or others. Held in locked memory and
 * wiped when freed.
 */
#ifndef CREDFS_KEY_H
#define CREDFS_KEY_H

#include <stddef.h>
#include <stdint.h>

#define KEY_BYTES 32

/* Load the master key into *@out (free with key_free). @key_file may be
 * NULL when only the credential is used. 0 or -errno with @err. */
int key_load(const char *key_file, uint8_t **out, char *err, size_t errlen);

/* Load the key in @path only, with the same checks. 0 or -errno. */
int key_load_file(const char *path, uint8_t **out, char *err, size_t errlen);

/* Create @path with 32 random bytes (0600, O_EXCL). 0, -EEXIST, -errno. */
int key_create(const char *path, char *err, size_t errlen);

/* Wipe, unlock and free. NULL is a no-op. */
void key_free(uint8_t *key);

#endif
