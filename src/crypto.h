/*
 * crypto: the two primitives the store needs, on OpenSSL 3 EVP. HKDF-SHA256
 * for per-tenant keys, and AES-256-GCM with a fresh random nonce per seal.
 */
#ifndef CREDFS_CRYPTO_H
#define CREDFS_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

struct buf;

#define CRYPTO_KEY_BYTES 32
#define CRYPTO_NONCE_BYTES 12
#define CRYPTO_TAG_BYTES 16

/* HKDF-SHA256(ikm = @master, salt = "credfs-store-v1",
 * info = "tenant:" @tenant) into @out. 0 or -EIO. */
int crypto_tenant_key(const uint8_t master[CRYPTO_KEY_BYTES],
		      const char *tenant, uint8_t out[CRYPTO_KEY_BYTES]);

/* Append nonce || ciphertext || tag of @pt under @key and @aad to @out.
 * 0, -EIO, or -E2BIG/-ENOMEM from the buffer. */
int crypto_seal(const uint8_t key[CRYPTO_KEY_BYTES], const void *aad,
		size_t aadlen, const void *pt, size_t ptlen, struct buf *out);

/* Open what crypto_seal made into @pt (a fresh buffer, wiped on free).
 * 0, -EBADMSG when it is not authentic (tampered, wrong key or AAD). */
int crypto_open(const uint8_t key[CRYPTO_KEY_BYTES], const void *aad,
		size_t aadlen, const void *in, size_t inlen, struct buf *pt);

#endif
