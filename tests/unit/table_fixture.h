/*
 * What the unit tests of the credential table share: a table made from a
 * config text, read in a section as any reader does (cred.h), and a
 * successful answer published as the refresher publishes one. Include
 * after cmocka.h.
 */
#ifndef CREDFS_TEST_TABLE_FIXTURE_H
#define CREDFS_TEST_TABLE_FIXTURE_H

#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "cred.h"
#include "oauth.h"
#include "record.h"
#include "util.h"

/* @json's config in *@cfg and its table in *@t, in a section. */
static inline void table_open(const char *json, struct config **cfg,
			      struct cred_table **t)
{
	char err[512];

	assert_int_equal(config_parse(json, strlen(json), "c.json", cfg, err,
				      sizeof(err)),
			 0);
	assert_int_equal(cred_table_new(*cfg, NULL, t), 0);
	cred_table_enter(*t);
}

static inline void table_close(struct config *cfg, struct cred_table *t)
{
	cred_table_exit(t);
	cred_table_free(t);
	config_free(cfg);
}

/* A successful answer with @value (an hour long) to a request @c starts
 * now, published as the refresher publishes one, with jitter @u, sent
 * @late or not. The next refresh's planned time. */
static inline int64_t table_answer_planned(struct cred_table *t, struct cred *c,
					   const char *value, double u,
					   bool late)
{
	struct oauth_result res = {.outcome = OAUTH_OK, .retry_after_ms = -1};
	char *rt = NULL;
	struct token *tok;
	int64_t next;

	res.tok.access_token = strdup(value);
	res.tok.len = strlen(value);
	res.tok.refresh_expires_in_ms = -1;
	res.tok.token_type = strdup("Bearer");
	res.tok.expires_in_ms = 3600 * 1000;
	assert_int_equal(cred_begin_attempt(c, &rt, &(struct record_client){0}),
			 CRED_BEGIN_OK);
	tok = cred_token_new(c, &res.tok, time_real_ms());
	assert_non_null(tok);
	next = cred_finish_attempt(t, c, &res, tok, NULL, u, late);
	oauth_result_clear(&res);
	return next;
}

static inline void table_answer(struct cred_table *t, struct cred *c,
				const char *value)
{
	table_answer_planned(t, c, value, 0.5, false);
}

#endif
