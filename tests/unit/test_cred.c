/* Unit tests for cred: the open rule without a thread per waiting open. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"
#include "cred.h"
#include "oauth.h"
#include "util.h"

#define CONFIG                                                              \
	"{\"providers\":{\"idp\":{\"token_url\":\"https://oauth2.example/"  \
	"token\",\"client_id\":\"id\",\"client_secret_file\":\"/s\","       \
	"\"open_wait_s\":30}},\"tenants\":{\"acme\":{\"credentials\":"      \
	"{\"idp\":{\"scopes\":[\"read\"]}}}}}"

struct fixture {
	struct config *cfg;
	struct cred_table *t;
	unsigned kicks, wakes;
};

static void count_kick(void *arg, struct cred *c)
{
	((struct fixture *)arg)->kicks++;
}

static void count_wake(void *arg)
{
	((struct fixture *)arg)->wakes++;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[512];

	assert_non_null(f);
	assert_int_equal(config_parse(CONFIG, strlen(CONFIG), "c.json",
				      &f->cfg, err, sizeof(err)),
			 0);
	assert_int_equal(cred_table_new(f->cfg, &f->t), 0);
	f->t->kick = count_kick;
	f->t->kick_arg = f;
	f->t->wake = count_wake;
	f->t->wake_arg = f;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	cred_table_free(f->t);
	config_free(f->cfg);
	free(f);
	return 0;
}

/* A successful answer to the request in flight, as the refresher gives. */
static void answer(struct fixture *f, struct cred *c)
{
	struct oauth_result res = {.outcome = OAUTH_OK, .retry_after_ms = -1};
	char *rt = NULL;
	struct token *tok;

	res.tok.access_token = strdup("tok-value");
	res.tok.len = strlen("tok-value");
	res.tok.refresh_expires_in_ms = -1;
	res.tok.token_type = strdup("Bearer");
	res.tok.expires_in_ms = 3600 * 1000;
	assert_int_equal(cred_begin_attempt(c, &rt), CRED_BEGIN_OK);
	tok = cred_token_new(c, &res.tok, time_real_ms());
	assert_non_null(tok);
	cred_finish_attempt(f->t, c, &res, tok, NULL, 0.5);
	oauth_result_clear(&res);
}

static void waiting_opens_are_answered_by_the_refresh(void **state)
{
	struct fixture *f = *state;
	struct cred *c = &f->t->creds[0];
	struct cred_wait w[3];
	struct token *tok;
	int i;

	/* No token yet: each open waits, one refresh is asked for. */
	for (i = 0; i < 3; i++)
		assert_int_equal(cred_open_begin(f->t, c, 0, &tok, &w[i]),
				 -EINPROGRESS);
	assert_true(f->kicks >= 1);
	assert_int_equal(cred_open_resume(c, &w[0], &tok), -EINPROGRESS);
	answer(f, c);
	assert_true(f->wakes >= 1);
	/* The generation they named (none) was replaced: look up again. */
	for (i = 0; i < 3; i++) {
		assert_int_equal(cred_open_resume(c, &w[i], &tok), -ESTALE);
		assert_null(tok);
	}
	/* The new generation opens at once. */
	assert_int_equal(cred_open_begin(f->t, c, 1, &tok, &w[0]), 0);
	assert_string_equal(tok->value, "tok-value");
	token_unref(tok);
}

static void waiting_opens_are_capped(void **state)
{
	struct fixture *f = *state;
	struct cred *c = &f->t->creds[0];
	struct cred_wait *w = calloc(CRED_MAX_WAITING + 1, sizeof(*w));
	struct token *tok;
	int i;

	assert_non_null(w);
	for (i = 0; i < CRED_MAX_WAITING; i++)
		assert_int_equal(cred_open_begin(f->t, c, 0, &tok, &w[i]),
				 -EINPROGRESS);
	/* One more: EAGAIN now, not a wait. */
	assert_int_equal(cred_open_begin(f->t, c, 0, &tok, &w[i]), -EAGAIN);
	/* A cancelled wait frees its place. */
	cred_wait_cancel(c, &w[0]);
	cred_wait_cancel(c, &w[0]); /* twice is harmless */
	assert_int_equal(cred_open_begin(f->t, c, 0, &tok, &w[0]),
			 -EINPROGRESS);
	/* Past the deadline: the answer the rule has, no token yet. */
	for (i = 0; i < CRED_MAX_WAITING; i++) {
		w[i].deadline = 0;
		assert_int_equal(cred_open_resume(c, &w[i], &tok), -EAGAIN);
	}
	assert_int_equal(cred_open_begin(f->t, c, 0, &tok, &w[0]),
			 -EINPROGRESS);
	cred_wait_cancel(c, &w[0]);
	free(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
			waiting_opens_are_answered_by_the_refresh, setup,
			teardown),
		cmocka_unit_test_setup_teardown(waiting_opens_are_capped, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
