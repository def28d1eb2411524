/*
 * sealed: a JSON document in a file of its own beside the store, sealed
 * under a key derived from the store's master key: what a cold start
 * takes from the last daemon (the discovery documents, the
 * client-credentials tokens of a clean stop). Layout:
 *
 *   "CFSJ" | version (1 byte, 1) | nonce (12) | ciphertext | tag (16)
 *
 * AES-256-GCM under HKDF-SHA256 of the master key with info
 * "tenant:-<purpose>-" (a name no tenant can have, so a key no record
 * uses) and associated data "credfs-<purpose>-v1": a file edited, or
 * copied over another purpose's, does not open.
 */
#ifndef CREDFS_SEALED_H
#define CREDFS_SEALED_H

#include <stddef.h>
#include <stdint.h>

#include "crypto.h"

struct json_t;

/* The files, each with its purpose. */
#define SEALED_DISCOVERY "discovery.sealed" /* discovery.c */
#define SEALED_STATE "state.sealed"	    /* handoff.c */

/* The key and associated data of one purpose ("discovery", "state"). */
struct sealed_key {
	uint8_t key[CRYPTO_KEY_BYTES];
	char aad[64];
};

/* @out's key for @purpose under @master. 0 or -EIO. */
int sealed_key_derive(const uint8_t *master, const char *purpose,
		      struct sealed_key *out);
/* Wipe @k. */
void sealed_key_clear(struct sealed_key *k);

/* Seal @doc under @k into @dir/@name, durably (a temp file, fsync,
 * rename, fsync of the directory), mode 0600. 0 or -errno. */
int sealed_write(const char *dir, const char *name, const struct sealed_key *k,
		 const struct json_t *doc);

/*
 * The JSON object sealed in @dir/@name under @k, into *@out (a new
 * reference). 0; -ENOENT when there is none; -EBADMSG when it does not
 * open (altered, another key or purpose); -EPROTO when it is not such a
 * file; -errno, as file_read_capped() says, when it cannot be read.
 */
int sealed_read(const char *dir, const char *name, const struct sealed_key *k,
		struct json_t **out);

/* What sealed_read()'s -errno @r means, for a log line. */
const char *sealed_read_error(int r);

/* Seal each file of @dir again under @new_master (credfsctl rekey), what
 * @old_master opens: 0 when all that were there are; else -errno of the
 * first that is not, named in *@failed. */
int sealed_rekey(const char *dir, const uint8_t *old_master,
		 const uint8_t *new_master, const char **failed);

#endif
