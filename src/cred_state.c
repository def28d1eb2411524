/*
 * cred_state: a credential's state as a handoff carries it (see
 * handoff.h): its token generations with their bytes, its counters and
 * its schedule, as JSON. The refresh token is not in it: it lives in the
 * store, which the next process reads as at any start.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cred.h"
#include "cred_int.h"
#include "util.h"

/* A later process numbers new generations this far above the last one
 * an image names, so that no generation (and so no inode the kernel may
 * still cache the pages of) is used twice: more than any credential
 * rotates between two images, which are at most seconds apart. */
#define GEN_SKIP (1u << 16)

static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

json_t *token_export(const struct token *tok)
{
	json_t *j, *fields = json_array();
	size_t i;

	for (i = 0; fields && i < tok->n_fields; i++)
		json_array_append_new(fields, str_or_null(tok->fields[i]));
	j = json_pack("{s:I,s:I,s:I,s:s,s:s,s:o,s:I,s:o,s:s%}", "gen",
		      (json_int_t)tok->gen, "issued_ms",
		      (json_int_t)tok->issued_ms, "expires_ms",
		      (json_int_t)tok->expires_ms, "type", tok->type, "scopes",
		      tok->scopes, "over", str_or_null(tok->over),
		      "floored_from_ms", (json_int_t)tok->floored_from_ms,
		      "fields", fields, "value", tok->value, tok->len);
	return j;
}

static char *dup_opt(const json_t *j)
{
	return json_is_string(j) ? strdup(json_string_value(j)) : NULL;
}

struct token *token_import(const json_t *j)
{
	const json_t *value = json_object_get(j, "value"),
		     *fields = json_object_get(j, "fields");
	struct token *tok;
	size_t len, i;

	if (!json_is_string(value) ||
	    !json_is_integer(json_object_get(j, "gen")))
		return NULL;
	len = json_string_length(value);
	tok = calloc(1, sizeof(*tok) + len + 1);
	if (!tok)
		return NULL;
	atomic_init(&tok->refs, 1);
	tok->len = len;
	memcpy(tok->value, json_string_value(value), len);
	tok->gen = (uint64_t)json_integer_value(json_object_get(j, "gen"));
	tok->issued_ms = json_integer_value(json_object_get(j, "issued_ms"));
	tok->expires_ms = json_integer_value(json_object_get(j, "expires_ms"));
	tok->floored_from_ms =
		json_integer_value(json_object_get(j, "floored_from_ms"));
	tok->type = dup_opt(json_object_get(j, "type"));
	tok->scopes = dup_opt(json_object_get(j, "scopes"));
	tok->over = dup_opt(json_object_get(j, "over"));
	tok->n_fields = json_array_size(fields);
	tok->fields =
		tok->n_fields ? calloc(tok->n_fields, sizeof(char *)) : NULL;
	for (i = 0; tok->fields && i < tok->n_fields; i++)
		tok->fields[i] = dup_opt(json_array_get(fields, i));
	if (!tok->type || !tok->scopes || (tok->n_fields && !tok->fields) ||
	    !tok->gen || tok->expires_ms <= tok->issued_ms) {
		token_unref(tok);
		return NULL;
	}
	util_fingerprint(tok->value, tok->len, tok->fp);
	return tok;
}

json_t *cred_export(struct cred *c)
{
	json_t *j, *toks = json_array();

	pthread_mutex_lock(&c->lock);
	if (toks && c->cur)
		json_array_append_new(toks, token_export(c->cur));
	if (toks && c->prev)
		json_array_append_new(toks, token_export(c->prev));
	j = json_pack(
		"{s:I,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:I,s:s,s:I,s:b,"
		"s:b,s:o}",
		"slot", (json_int_t)c->index, "tenant", cred_conf(c)->tenant,
		"provider", cred_conf(c)->provider->name, "last_gen",
		(json_int_t)c->last_gen, "record_gen",
		(json_int_t)c->record_gen, "refresh_count",
		(json_int_t)c->refresh_count, "failure_count",
		(json_int_t)c->failure_count, "last_refresh_ms",
		(json_int_t)c->last_refresh_ms, "next_refresh_ms",
		(json_int_t)c->next_refresh_ms, "consecutive_failures",
		(int)c->consecutive_failures, "last_error_ms",
		(json_int_t)c->last_error_ms, "last_error",
		text_of(c->last_error), "attempts", (json_int_t)c->attempts,
		"revoked", c->revoked, "client_error", c->client_error,
		"tokens", toks);
	pthread_mutex_unlock(&c->lock);
	return j;
}

bool cred_export_matches(const struct cred *c, const json_t *j)
{
	const char *tenant = json_string_value(json_object_get(j, "tenant")),
		   *provider =
			   json_string_value(json_object_get(j, "provider"));

	return tenant && provider && !strcmp(tenant, cred_conf(c)->tenant) &&
	       !strcmp(provider, cred_conf(c)->provider->name);
}

void cred_import_floor(struct cred *c, const json_t *j, uint64_t floor)
{
	uint64_t last =
		j ? (uint64_t)json_integer_value(json_object_get(j, "last_gen"))
		  : 0;

	pthread_mutex_lock(&c->lock);
	if (last + GEN_SKIP > floor)
		floor = last + GEN_SKIP;
	if (floor > c->last_gen)
		c->last_gen = floor;
	pthread_mutex_unlock(&c->lock);
}

static int64_t int_of(const json_t *j, const char *key)
{
	return json_integer_value(json_object_get(j, key));
}

bool cred_import(struct cred_table *t, struct cred *c, const json_t *j)
{
	const json_t *toks = json_object_get(j, "tokens");
	struct token *tok[2] = {NULL, NULL}, *old[2];
	int64_t now = time_real_ms();
	const char *err;
	size_t i, n = 0;

	for (i = 0; i < json_array_size(toks) && n < 2; i++) {
		struct token *k = token_import(json_array_get(toks, i));

		if (k &&
		    k->n_fields != cred_conf(c)->provider->n_response_fields) {
			token_unref(k); /* another profile since */
			k = NULL;
		}
		if (k)
			tok[n++] = k;
	}
	pthread_mutex_lock(&c->lock);
	/* A store-backed credential's image counts only while it describes
	 * the record the store holds now: credfsctl add, or another daemon,
	 * may have replaced it meanwhile. */
	if ((cred_uses_store(c) &&
	     (!cred_present(c) ||
	      (uint64_t)int_of(j, "record_gen") != c->record_gen)) ||
	    !tok[0] || now >= cred_token_deadline(c, tok[0])) {
		pthread_mutex_unlock(&c->lock);
		token_unref(tok[0]);
		token_unref(tok[1]);
		return false;
	}
	old[0] = c->cur;
	old[1] = c->prev;
	c->cur = tok[0];
	c->prev = tok[1];
	c->refresh_count = (uint64_t)int_of(j, "refresh_count");
	c->failure_count = (uint64_t)int_of(j, "failure_count");
	c->attempts = (uint64_t)int_of(j, "attempts");
	c->last_refresh_ms = int_of(j, "last_refresh_ms");
	c->next_refresh_ms = int_of(j, "next_refresh_ms");
	c->consecutive_failures = (unsigned)int_of(j, "consecutive_failures");
	c->last_error_ms = int_of(j, "last_error_ms");
	err = json_string_value(json_object_get(j, "last_error"));
	text_set(&c->last_error, "%s", err ? err : "");
	c->client_error = json_is_true(json_object_get(j, "client_error"));
	c->revoked = cred_uses_store(c) &&
		     json_is_true(json_object_get(j, "revoked"));
	c->version++;
	atomic_fetch_add(&t->version, 1);
	pthread_mutex_unlock(&c->lock);
	token_unref(old[0]);
	token_unref(old[1]);
	return true;
}
