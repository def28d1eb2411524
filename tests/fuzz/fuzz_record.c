/*
 * libFuzzer target: store records. Even inputs go to record_open() as
 * they are (header checks, and the AEAD refusing them). Odd ones are
 * sealed as a record's plaintext first, with the right key and associated
 * data, so the JSON parsing after decryption is reached too.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "crypto.h"
#include "record.h"
#include "util.h"

static const uint8_t master[32] = "fuzz-master-key-0123456789abcdef";

/* As record.c builds it: "credfs-record" | version | tenant | provider |
 * generation. */
static void aad_of(uint64_t gen, struct buf *aad)
{
	uint8_t v = 1, tl = 4, pl = 6, g[8];
	int i;

	for (i = 7; i >= 0; i--, gen >>= 8)
		g[i] = (uint8_t)gen;
	buf_init(aad, 512);
	buf_append(aad, "credfs-record", 13);
	buf_append(aad, &v, 1);
	buf_append(aad, &tl, 1);
	buf_append(aad, "acme", 4);
	buf_append(aad, &pl, 1);
	buf_append(aad, "google", 6);
	buf_append(aad, g, 8);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t key[CRYPTO_KEY_BYTES];
	struct buf aad, sealed;
	struct record r;
	uint64_t gen;

	if (size == 0)
		return 0;
	if (!(data[0] & 1)) {
		record_generation(data, size, &gen);
		if (record_open(master, "acme", "google", data, size, &r) == 0)
			record_clear(&r);
		return 0;
	}
	crypto_tenant_key(master, "acme", key);
	aad_of(7, &aad);
	buf_init(&sealed, RECORD_MAX_BYTES);
	buf_append(&sealed, "CFSR\x01\0\0\0\0\0\0\0\x07", 13);
	if (crypto_seal(key, aad.data, aad.len, data + 1, size - 1, &sealed) ==
		    0 &&
	    record_open(master, "acme", "google", sealed.data, sealed.len,
			&r) == 0)
		record_clear(&r);
	buf_free(&aad);
	buf_free(&sealed);
	return 0;
}
