/*
 * record: sealing and opening credential records (see record.h for the
 * layout). Everything read back is checked: the header's magic, version and
 * size, the AEAD tag, and the plaintext's JSON types.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "crypto.h"
#include "key.h"
#include "record.h"
#include "util.h"

#define MAGIC "CFSR"
#define VERSION 1
#define HEADER_BYTES (4 + 1 + 8)

static void put_be64(uint8_t *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

/* "credfs-record" || version || len || tenant || len || provider || gen */
static int make_aad(const char *tenant, const char *provider, uint64_t gen,
		    struct buf *aad)
{
	uint8_t v = VERSION, tl = (uint8_t)strlen(tenant),
		pl = (uint8_t)strlen(provider), g[8];
	int r;

	put_be64(g, gen);
	buf_init(aad, 512);
	r = buf_append(aad, "credfs-record", 13);
	if (r == 0)
		r = buf_append(aad, &v, 1);
	if (r == 0)
		r = buf_append(aad, &tl, 1);
	if (r == 0)
		r = buf_append(aad, tenant, tl);
	if (r == 0)
		r = buf_append(aad, &pl, 1);
	if (r == 0)
		r = buf_append(aad, provider, pl);
	if (r == 0)
		r = buf_append(aad, g, sizeof(g));
	return r;
}

static void set_opt(json_t *o, const char *key, const char *v)
{
	json_object_set_new(o, key, v ? json_string(v) : json_null());
}

int record_seal(const uint8_t *master, const char *tenant, const char *provider,
		const struct record *r, struct buf *out)
{
	uint8_t key[CRYPTO_KEY_BYTES], header[HEADER_BYTES];
	json_t *o = json_object();
	struct buf aad;
	char *text = NULL;
	int ret = -ENOMEM;

	buf_init(out, RECORD_MAX_BYTES);
	buf_init(&aad, 0);
	if (!o)
		goto out;
	set_opt(o, "refresh_token", r->refresh_token);
	set_opt(o, "access_token", r->access_token);
	set_opt(o, "token_type", r->token_type);
	set_opt(o, "scope", r->scope);
	json_object_set_new(o, "issued_ms", json_integer(r->issued_ms));
	json_object_set_new(o, "expires_ms", json_integer(r->expires_ms));
	if (r->rt_expires_ms)
		json_object_set_new(o, "rt_expires_ms",
				    json_integer(r->rt_expires_ms));
	if (r->revoked)
		json_object_set_new(o, "revoked", json_string(r->revoked));
	if (r->n_fields) {
		json_t *f = json_object();

		for (size_t i = 0; f && i < r->n_fields; i++)
			json_object_set_new(f, r->fields[i].name,
					    json_string(r->fields[i].value));
		json_object_set_new(o, "fields", f);
	}
	if (r->client.id) {
		json_t *c = json_object();

		set_opt(c, "id", r->client.id);
		set_opt(c, "secret", r->client.secret);
		set_opt(c, "auth_method", r->client.auth_method);
		set_opt(c, "redirect_uri", r->client.redirect_uri);
		json_object_set_new(o, "client", c);
	}
	text = json_dumps(o, JSON_COMPACT);
	if (!text)
		goto out;
	ret = crypto_tenant_key(master, tenant, key);
	if (ret == 0)
		ret = make_aad(tenant, provider, r->generation, &aad);
	memcpy(header, MAGIC, 4);
	header[4] = VERSION;
	put_be64(header + 5, r->generation);
	if (ret == 0)
		ret = buf_append(out, header, sizeof(header));
	if (ret == 0)
		ret = crypto_seal(key, aad.data, aad.len, text, strlen(text),
				  out);
out:
	OPENSSL_cleanse(key, sizeof(key));
	if (text)
		strfreezero(text);
	json_decref(o);
	buf_free(&aad);
	if (ret < 0)
		buf_free(out);
	return ret;
}

int record_generation(const void *data, size_t len, uint64_t *gen)
{
	const uint8_t *p = data;

	if (len < HEADER_BYTES + CRYPTO_NONCE_BYTES + CRYPTO_TAG_BYTES ||
	    len > RECORD_MAX_BYTES || memcmp(p, MAGIC, 4) || p[4] != VERSION)
		return -EPROTO;
	*gen = get_be64(p + 5);
	return 0;
}

/* A string member, or NULL for null/absent; -EPROTO for another type. */
static int take_str(json_t *o, const char *key, char **out)
{
	json_t *v = json_object_get(o, key);

	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return -EPROTO;
	*out = strdup(json_string_value(v));
	return *out ? 0 : -ENOMEM;
}

/* The "fields" object: string values only, at most RECORD_MAX_FIELDS. */
static int take_fields(json_t *f, struct record *r)
{
	const char *name;
	json_t *v;

	if (!f)
		return 0;
	if (!json_is_object(f) || json_object_size(f) > RECORD_MAX_FIELDS)
		return -EPROTO;
	r->fields = calloc(json_object_size(f) + 1, sizeof(*r->fields));
	if (!r->fields)
		return -ENOMEM;
	json_object_foreach (f, name, v) {
		struct record_field *rf = &r->fields[r->n_fields];

		if (!json_is_string(v))
			return -EPROTO;
		rf->name = strdup(name);
		rf->value = strdup(json_string_value(v));
		r->n_fields++;
		if (!rf->name || !rf->value)
			return -ENOMEM;
	}
	return 0;
}

static int take_client(json_t *o, struct record_client *c)
{
	int r = json_is_object(o) ? 0 : -EPROTO;

	if (r == 0)
		r = take_str(o, "id", &c->id);
	if (r == 0)
		r = take_str(o, "secret", &c->secret);
	if (r == 0)
		r = take_str(o, "auth_method", &c->auth_method);
	if (r == 0)
		r = take_str(o, "redirect_uri", &c->redirect_uri);
	return r == 0 && !c->id ? -EPROTO : r;
}

int record_open(const uint8_t *master, const char *tenant, const char *provider,
		const void *data, size_t len, struct record *r)
{
	uint8_t key[CRYPTO_KEY_BYTES];
	struct buf aad, pt;
	json_t *o = NULL, *v;
	int ret;

	memset(r, 0, sizeof(*r));
	buf_init(&aad, 0);
	buf_init(&pt, 0);
	ret = record_generation(data, len, &r->generation);
	if (ret == 0)
		ret = crypto_tenant_key(master, tenant, key);
	if (ret == 0)
		ret = make_aad(tenant, provider, r->generation, &aad);
	if (ret == 0)
		ret = crypto_open(key, aad.data, aad.len,
				  (const uint8_t *)data + HEADER_BYTES,
				  len - HEADER_BYTES, &pt);
	if (ret < 0)
		goto out;
	o = json_loadb(pt.data, pt.len, JSON_REJECT_DUPLICATES, NULL);
	ret = json_is_object(o) ? 0 : -EPROTO;
	if (ret == 0)
		ret = take_str(o, "refresh_token", &r->refresh_token);
	if (ret == 0)
		ret = take_str(o, "access_token", &r->access_token);
	if (ret == 0)
		ret = take_str(o, "token_type", &r->token_type);
	if (ret == 0)
		ret = take_str(o, "scope", &r->scope);
	v = json_object_get(o, "issued_ms");
	if (ret == 0 && v && !json_is_integer(v))
		ret = -EPROTO;
	r->issued_ms = json_integer_value(v);
	v = json_object_get(o, "expires_ms");
	if (ret == 0 && v && !json_is_integer(v))
		ret = -EPROTO;
	r->expires_ms = json_integer_value(v);
	v = json_object_get(o, "rt_expires_ms");
	if (ret == 0 && v && !json_is_integer(v))
		ret = -EPROTO;
	r->rt_expires_ms = json_integer_value(v);
	if (ret == 0)
		ret = take_str(o, "revoked", &r->revoked);
	if (ret == 0)
		ret = take_fields(json_object_get(o, "fields"), r);
	v = json_object_get(o, "client");
	if (ret == 0 && v)
		ret = take_client(v, &r->client);
out:
	OPENSSL_cleanse(key, sizeof(key));
	json_decref(o);
	buf_free(&aad);
	buf_free(&pt);
	if (ret < 0)
		record_clear(r);
	return ret;
}

void record_clear(struct record *r)
{
	strfreezero(r->refresh_token);
	strfreezero(r->access_token);
	free(r->token_type);
	free(r->scope);
	free(r->revoked);
	for (size_t i = 0; i < r->n_fields; i++) {
		free(r->fields[i].name);
		free(r->fields[i].value);
	}
	free(r->fields);
	record_client_clear(&r->client);
	memset(r, 0, sizeof(*r));
}

void record_client_clear(struct record_client *c)
{
	free(c->id);
	strfreezero(c->secret);
	free(c->auth_method);
	free(c->redirect_uri);
	memset(c, 0, sizeof(*c));
}

static int dup_opt(const char *from, char **to)
{
	*to = from ? strdup(from) : NULL;
	return from && !*to ? -ENOMEM : 0;
}

int record_client_copy(struct record_client *to,
		       const struct record_client *from)
{
	int r;

	record_client_clear(to);
	r = dup_opt(from->id, &to->id);
	if (r == 0)
		r = dup_opt(from->secret, &to->secret);
	if (r == 0)
		r = dup_opt(from->auth_method, &to->auth_method);
	if (r == 0)
		r = dup_opt(from->redirect_uri, &to->redirect_uri);
	if (r < 0)
		record_client_clear(to);
	return r;
}
