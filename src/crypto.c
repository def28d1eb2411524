/*
 * crypto: HKDF-SHA256 and AES-256-GCM through OpenSSL 3's EVP interfaces.
 * Errors from OpenSSL are translated here (-EIO, -EBADMSG) and its error
 * queue is cleared, so callers see errnos only.
 */
#include <errno.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "crypto.h"
#include "util.h"

static const char hkdf_salt[] = "credfs-store-v1";

int crypto_tenant_key(const uint8_t master[CRYPTO_KEY_BYTES],
		      const char *tenant, uint8_t out[CRYPTO_KEY_BYTES])
{
	char info[128];
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM params[5], *p = params;
	int n, r = -EIO;

	n = snprintf(info, sizeof(info), "tenant:%s", tenant);
	if (!ctx || n < 0 || (size_t)n >= sizeof(info))
		goto out;
	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
						(char *)"SHA256", 0);
	*p++ = OSSL_PARAM_construct_octet_string(
		OSSL_KDF_PARAM_KEY, (void *)master, CRYPTO_KEY_BYTES);
	*p++ = OSSL_PARAM_construct_octet_string(
		OSSL_KDF_PARAM_SALT, (void *)hkdf_salt, sizeof(hkdf_salt) - 1);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info,
						 (size_t)n);
	*p = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(ctx, out, CRYPTO_KEY_BYTES, params) == 1)
		r = 0;
out:
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	ERR_clear_error();
	return r;
}

int crypto_seal(const uint8_t key[CRYPTO_KEY_BYTES], const void *aad,
		size_t aadlen, const void *pt, size_t ptlen, struct buf *out)
{
	uint8_t nonce[CRYPTO_NONCE_BYTES], tag[CRYPTO_TAG_BYTES];
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	size_t start = out->len;
	uint8_t *ct = NULL;
	int n = 0, fin = 0, r = -EIO;

	if (!ctx || ptlen > (size_t)INT32_MAX || aadlen > (size_t)INT32_MAX ||
	    RAND_bytes(nonce, sizeof(nonce)) != 1)
		goto out;
	ct = malloc(ptlen + 16);
	if (!ct) {
		r = -ENOMEM;
		goto out;
	}
	if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) != 1 ||
	    EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aadlen) != 1 ||
	    EVP_EncryptUpdate(ctx, ct, &n, pt, (int)ptlen) != 1 ||
	    EVP_EncryptFinal_ex(ctx, ct + n, &fin) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, sizeof(tag), tag) !=
		    1)
		goto out;
	r = buf_append(out, nonce, sizeof(nonce));
	if (r == 0)
		r = buf_append(out, ct, (size_t)(n + fin));
	if (r == 0)
		r = buf_append(out, tag, sizeof(tag));
	if (r < 0)
		out->len = start;
out:
	if (ct)
		freezero(ct, ptlen + 16);
	EVP_CIPHER_CTX_free(ctx);
	ERR_clear_error();
	return r;
}

int crypto_open(const uint8_t key[CRYPTO_KEY_BYTES], const void *aad,
		size_t aadlen, const void *in, size_t inlen, struct buf *pt)
{
	const uint8_t *p = in;
	EVP_CIPHER_CTX *ctx = NULL;
	size_t ctlen;
	int n = 0, fin = 0, r = -EBADMSG;

	buf_init(pt, inlen + 1);
	if (inlen < CRYPTO_NONCE_BYTES + CRYPTO_TAG_BYTES ||
	    inlen > (size_t)INT32_MAX)
		return -EBADMSG;
	ctlen = inlen - CRYPTO_NONCE_BYTES - CRYPTO_TAG_BYTES;
	r = buf_append(pt, "", 0); /* allocate, so data is never NULL */
	if (r == 0 && ctlen)
		r = buf_append(pt, p + CRYPTO_NONCE_BYTES, ctlen); /* sized */
	if (r < 0)
		return r;
	ctx = EVP_CIPHER_CTX_new();
	r = -EBADMSG;
	if (!ctx ||
	    EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, p) != 1 ||
	    EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aadlen) != 1 ||
	    EVP_DecryptUpdate(ctx, (uint8_t *)pt->data, &n,
			      p + CRYPTO_NONCE_BYTES, (int)ctlen) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, CRYPTO_TAG_BYTES,
				(void *)(p + inlen - CRYPTO_TAG_BYTES)) != 1 ||
	    EVP_DecryptFinal_ex(ctx, (uint8_t *)pt->data + n, &fin) != 1)
		goto out;
	pt->len = (size_t)(n + fin);
	pt->data[pt->len] = '\0';
	r = 0;
out:
	EVP_CIPHER_CTX_free(ctx);
	ERR_clear_error();
	if (r < 0)
		buf_free(pt);
	return r;
}
