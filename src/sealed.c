/*
 * sealed: JSON documents sealed beside the store (sealed.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "sealed.h"
#include "util.h"

#define MAGIC "CFSJ\001"
#define MAGIC_LEN 5
/* The state of a clean stop of 100,000 client-credentials tokens fits. */
#define SEALED_MAX_BYTES (256u << 20)

int sealed_key_derive(const uint8_t *master, const char *purpose,
		      struct sealed_key *out)
{
	char info[64];

	snprintf(info, sizeof(info), "-%s-", purpose);
	snprintf(out->aad, sizeof(out->aad), "credfs-%s-v1", purpose);
	return crypto_tenant_key(master, info, out->key);
}

void sealed_key_clear(struct sealed_key *k)
{
	explicit_bzero(k, sizeof(*k));
}

int sealed_write(const char *dir, const char *name, const struct sealed_key *k,
		 const json_t *doc)
{
	char *text = json_dumps(doc, JSON_COMPACT);
	struct buf b;
	int dirfd, r;

	if (!text)
		return -ENOMEM;
	buf_init(&b, SEALED_MAX_BYTES);
	r = buf_append(&b, MAGIC, MAGIC_LEN);
	if (r == 0)
		r = crypto_seal(k->key, k->aad, strlen(k->aad), text,
				strlen(text), &b);
	freezero(text, strlen(text));
	if (r == 0) {
		dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = dirfd < 0 ? -errno
			      : file_replace_at(dirfd, name, b.data, b.len);
		if (dirfd >= 0)
			close(dirfd);
	}
	buf_free(&b);
	return r;
}

int sealed_read(const char *dir, const char *name, const struct sealed_key *k,
		json_t **out)
{
	struct buf b, pt = {0};
	char path[4096];
	int r;

	*out = NULL;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >=
	    sizeof(path))
		return -ENAMETOOLONG;
	r = file_read_capped(path, SEALED_MAX_BYTES, true, &b);
	if (r < 0)
		return r;
	if (b.len < MAGIC_LEN || memcmp(b.data, MAGIC, MAGIC_LEN))
		r = -EPROTO;
	if (r == 0)
		r = crypto_open(k->key, k->aad, strlen(k->aad),
				b.data + MAGIC_LEN, b.len - MAGIC_LEN, &pt);
	buf_free(&b);
	if (r == 0) {
		*out = json_loadb(pt.data, pt.len, JSON_REJECT_DUPLICATES,
				  NULL);
		if (!json_is_object(*out)) {
			json_decref(*out);
			*out = NULL;
			r = -EPROTO;
		}
	}
	buf_free(&pt);
	return r;
}

int sealed_rekey(const char *dir, const uint8_t *old_master,
		 const uint8_t *new_master, const char **failed)
{
	static const char *const files[][2] = {
		{SEALED_DISCOVERY, "discovery"},
		{SEALED_STATE, "state"},
	};
	struct sealed_key old, new;
	json_t *doc;
	size_t i;
	int r = 0;

	for (i = 0; r == 0 && i < ARRAY_SIZE(files); i++) {
		doc = NULL;
		r = sealed_key_derive(old_master, files[i][1], &old);
		if (r == 0)
			r = sealed_key_derive(new_master, files[i][1], &new);
		if (r == 0)
			r = sealed_read(dir, files[i][0], &old, &doc);
		if (r == 0)
			r = sealed_write(dir, files[i][0], &new, doc);
		if (r == -ENOENT)
			r = 0;
		if (r < 0)
			*failed = files[i][0];
		sealed_key_clear(&old);
		sealed_key_clear(&new);
		json_decref(doc);
	}
	return r;
}

const char *sealed_read_error(int r)
{
	switch (r) {
	case -EBADMSG:
		return "not authentic (altered, or sealed under another master "
		       "key)";
	case -EPROTO: return "not a sealed credfs file";
	default: return file_read_error(r, "256 MiB");
	}
}
