/* Unit tests for cred: the open rule without a thread per waiting open. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"
#include "cred.h"
#include "oauth.h"
#include "policy.h"
#include "table_fixture.h"
#include "util.h"

#define CONFIG                                                             \
	"{\"providers\":{\"idp\":{\"token_url\":\"https://oauth2.example/" \
	"token\",\"client_id\":\"id\",\"client_secret_file\":\"/s\","      \
	"\"open_wait_s\":30}},\"tenants\":{\"acme\":{\"credentials\":"     \
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

	assert_non_null(f);
	table_open(CONFIG, &f->cfg, &f->t);
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

	table_close(f->cfg, f->t);
	free(f);
	return 0;
}

/* A failed answer (@outcome) to the request in flight. */
static int64_t fail_answer(struct fixture *f, struct cred *c,
			   enum oauth_outcome outcome)
{
	struct oauth_result res = {.outcome = outcome, .retry_after_ms = -1};
	char *rt = NULL;
	int64_t next;

	snprintf(res.error, sizeof(res.error), "HTTP 503");
	assert_int_equal(cred_begin_attempt(c, &rt, &(struct record_client){0}),
			 CRED_BEGIN_OK);
	next = cred_finish_attempt(f->t, c, &res, NULL, NULL, 0.5, false);
	oauth_result_clear(&res);
	return next;
}

static enum cred_state state_of(struct cred *c)
{
	struct cred_view v;

	cred_view(c, time_real_ms(), &v);
	cred_view_clear(&v);
	return v.state;
}

/* A successful answer to the request in flight, as the refresher gives. */
static void answer(struct fixture *f, struct cred *c)
{
	table_answer(f->t, c, "tok-value");
}

/* A successful answer, @late or not, with jitter 0.25: the next plan. */
static int64_t answer_planned(struct fixture *f, struct cred *c, bool late)
{
	return table_answer_planned(f->t, c, "tok-value", 0.25, late);
}

/* A late answer (a burst) plans the next refresh with its jitter (0.25)
 * over the last three quarters of the period, not near its end; a second
 * late one soon after keeps the usual plan, so a backlog does not feed
 * itself. */
static void a_late_refresh_spreads_the_next_once(void **state)
{
	struct fixture *f = *state;
	struct cred *c = cred_at(f->t, 0);
	int64_t now = time_real_ms(), next;

	next = answer_planned(f, c, false);
	assert_true(next > now + 3600000 - 300000 - 30000 - 1000);
	/* A quarter in, then a quarter of the remaining three quarters. */
	next = answer_planned(f, c, true);
	assert_true(next < now + (3600000 - 300000) * 7 / 16 + 2000);
	assert_true(next >= now + (3600000 - 300000) * 7 / 16 - 2000);
	next = answer_planned(f, c, true);
	assert_true(next > now + 3600000 - 300000 - 30000 - 1000);
}

static void waiting_opens_are_answered_by_the_refresh(void **state)
{
	struct fixture *f = *state;
	struct cred *c = cred_at(f->t, 0);
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
	struct cred *c = cred_at(f->t, 0);
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

/* pending -> error -> valid -> refreshing -> valid, with backoff on
 * failures and the next refresh planned before expiry. */
static void state_machine(void **state)
{
	struct fixture *f = *state;
	struct cred *c = cred_at(f->t, 0);
	int64_t now = time_real_ms(), next;
	char *rt = NULL;

	assert_int_equal(state_of(c), CRED_PENDING);
	next = fail_answer(f, c, OAUTH_TRANSIENT);
	assert_int_equal(state_of(c), CRED_ERROR);
	/* Full jitter up to backoff_initial_s (1 s) for the first failure. */
	assert_true(next >= now && next <= time_real_ms() + 1000);
	answer(f, c);
	assert_int_equal(state_of(c), CRED_VALID);
	assert_int_equal(cred_begin_attempt(c, &rt, &(struct record_client){0}),
			 CRED_BEGIN_OK);
	assert_int_equal(state_of(c), CRED_REFRESHING);
	/* One request at a time. */
	assert_int_equal(cred_begin_attempt(c, &rt, &(struct record_client){0}),
			 CRED_BEGIN_BUSY);
	cred_abandon_attempt(f->t, c);
	assert_int_equal(state_of(c), CRED_VALID);
	/* A failure with a token left keeps serving it. */
	fail_answer(f, c, OAUTH_TRANSIENT);
	assert_int_equal(state_of(c), CRED_VALID);
	answer(f, c);
	/* Generations: the current and the one before are held. */
	{
		struct token *t1 = NULL, *t2 = NULL, *t3 = NULL;

		assert_int_equal(cred_token_of_gen(c, 2, &t2), 0);
		assert_int_equal(cred_token_of_gen(c, 1, &t1), 0);
		assert_non_null(t1);
		assert_non_null(t2);
		assert_int_equal(cred_token_of_gen(c, 7, &t3), -ESTALE);
		token_unref(t1);
		token_unref(t2);
	}
}

/* Readers: uids, supplementary groups (read through the request), root
 * by allow_root, a credential narrowing its tenant's. */
static int groups_beta(void *arg, int size, gid_t list[])
{
	if (size >= 1)
		list[0] = 2000;
	return 1;
}

static int no_groups(void *arg, int size, gid_t list[])
{
	return 0;
}

static void policy_decisions(void **state)
{
	static const char json[] =
		"{\"providers\":{\"idp\":{\"token_url\":\"https://x.example/"
		"t\",\"client_id\":\"id\",\"client_secret_file\":\"/s\"}},"
		"\"tenants\":{\"acme\":{\"readers\":{\"uids\":[1000],"
		"\"gids\":[2000]},\"credentials\":{\"idp\":{\"scopes\":[],"
		"\"readers\":{\"uids\":[1000]}}}},\"closed\":{"
		"\"credentials\":{}}}}";
	struct config *cfg;
	struct caller who;
	char err[512];
	const struct tenant_conf *acme, *closed;

	assert_int_equal(config_parse(json, strlen(json), "c.json", &cfg, err,
				      sizeof(err)),
			 0);
	acme = &cfg->tenants[0];
	closed = &cfg->tenants[1];
	caller_init(&who, 1000, 1000, 1, no_groups, NULL, NULL);
	assert_true(policy_tenant(cfg, acme, &who));
	assert_true(policy_cred(cfg, acme, &cfg->creds[0], &who));
	assert_false(policy_tenant(cfg, closed, &who));
	/* In the tenant's group: the tenant, not the narrowed credential. */
	caller_init(&who, 1001, 1001, 1, groups_beta, NULL, NULL);
	assert_true(policy_tenant(cfg, acme, &who));
	assert_false(policy_cred(cfg, acme, &cfg->creds[0], &who));
	caller_init(&who, 1002, 1002, 1, no_groups, NULL, NULL);
	assert_false(policy_tenant(cfg, acme, &who));
	/* Root passes by allow_root, also where nobody is listed. */
	caller_init(&who, 0, 0, 1, no_groups, NULL, NULL);
	assert_true(policy_tenant(cfg, closed, &who));
	assert_true(policy_ops(cfg, &who));
	cfg->allow_root = false;
	assert_false(policy_tenant(cfg, closed, &who));
	config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
			waiting_opens_are_answered_by_the_refresh, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			a_late_refresh_spreads_the_next_once, setup, teardown),
		cmocka_unit_test_setup_teardown(waiting_opens_are_capped, setup,
						teardown),
		cmocka_unit_test_setup_teardown(state_machine, setup, teardown),
		cmocka_unit_test(policy_decisions),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
