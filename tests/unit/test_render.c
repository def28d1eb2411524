/* Unit tests for render (status and status.json from one table of
 * fields, metrics, no token text) and the refresher's schedule (its heap
 * keyed by the earliest of four due times). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "config.h"
#include "cred.h"
#include "oauth.h"
#include "refresher_int.h"
#include "render.h"
#include "table_fixture.h"
#include "util.h"

#define CONFIG                                                             \
	"{\"providers\":{\"idp\":{\"token_url\":\"https://oauth2.example/" \
	"token\",\"client_id\":\"id\",\"client_secret_file\":\"/s\"}},"    \
	"\"tenants\":{\"acme\":{\"credentials\":{\"idp\":{\"scopes\":"     \
	"[\"read\"]}}},\"beta\":{\"credentials\":{\"idp\":{\"scopes\":"    \
	"[\"read\"]}}},\"gamma\":{\"credentials\":{\"idp\":{\"scopes\":"   \
	"[\"read\"]}}},\"delta\":{\"credentials\":{\"idp\":{\"scopes\":"   \
	"[\"read\"]}}}}}"

struct fixture {
	struct config *cfg;
	struct cred_table *t;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	table_open(CONFIG, &f->cfg, &f->t);
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

static struct cred *first(struct fixture *f)
{
	return cred_of(f->t, &f->cfg->creds[0]);
}

static char *rendered(struct fixture *f, enum cred_file file)
{
	struct buf b;
	char *s;

	buf_init(&b, 64 * 1024);
	assert_int_equal(render_cred_file(f->t, file, first(f), time_real_ms(),
					  &b),
			 0);
	s = strndup(b.data ? b.data : "", b.len);
	buf_free(&b);
	return s;
}

/* The text status's "key: value" lines, and status.json's keys, are the
 * same fields (one table drives both); a field JSON has as null the
 * text shows without a number. Returns the JSON. */
static json_t *same_fields(struct fixture *f)
{
	char *text = rendered(f, CF_STATUS), *json = rendered(f, CF_STATUS_JSON);
	json_t *j = json_loads(json, 0, NULL), *v;
	char *line, *save = NULL, *colon;
	const char *key;
	size_t n = 0;

	assert_non_null(j);
	assert_true(json_is_object(j));
	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		colon = strstr(line, ": ");
		assert_non_null(colon);
		*colon = '\0';
		v = json_object_get(j, line);
		if (!v)
			fail_msg("text field %s is not in status.json", line);
		/* Null in JSON: "-" in text, or a word for it ("never"),
		 * never a number. */
		if (json_is_null(v) && strpbrk(colon + 2, "0123456789"))
			fail_msg("%s: null in JSON, \"%s\" in text", line,
				 colon + 2);
		n++;
	}
	json_object_foreach (j, key, v)
		(void)key, n--;
	assert_int_equal(n, 0); /* as many, each in both */
	free(text);
	free(json);
	return j;
}

static void status_text_and_json_agree(void **state)
{
	struct fixture *f = *state;
	json_t *j = same_fields(f);
	char *text;

	assert_string_equal(json_string_value(json_object_get(j, "state")),
			    "pending");
	assert_true(json_is_null(json_object_get(j, "fingerprint")));
	json_decref(j);

	table_answer(f->t, first(f), "tok-secret-value");
	j = same_fields(f);
	assert_string_equal(json_string_value(json_object_get(j, "state")),
			    "valid");
	/* The store's generation: none for client credentials. */
	assert_true(json_is_null(json_object_get(j, "generation")));
	assert_int_equal(strlen(json_string_value(
				 json_object_get(j, "fingerprint"))),
			 8);
	assert_true(json_integer_value(json_object_get(j, "expires_in")) >
		    3500);
	json_decref(j);
	/* Never the token itself. */
	for (enum cred_file cf = CF_TOKEN_TYPE; cf <= CF_STATUS_JSON; cf++) {
		text = rendered(f, cf);
		assert_null(strstr(text, "tok-secret-value"));
		free(text);
	}
}

static void metrics_name_every_credential(void **state)
{
	struct fixture *f = *state;
	struct visible *only = visible_new(f->cfg->n_cred_slots);
	struct buf b;

	table_answer(f->t, first(f), "tok-secret-value");
	buf_init(&b, 1 << 20);
	assert_int_equal(render_metrics(f->t, NULL, time_real_ms(), &b), 0);
	assert_non_null(strstr(b.data, "credfs_refresh_success_total{tenant="
					"\"acme\",provider=\"idp\"} 1"));
	assert_non_null(strstr(b.data, "tenant=\"delta\""));
	assert_null(strstr(b.data, "tok-secret-value"));
	buf_free(&b);
	/* A caller who may see acme only sees acme's lines. */
	assert_non_null(only);
	only->on[f->cfg->creds[0].slot] = true;
	buf_init(&b, 1 << 20);
	assert_int_equal(render_metrics(f->t, only, time_real_ms(), &b), 0);
	assert_non_null(strstr(b.data, "tenant=\"acme\""));
	assert_null(strstr(b.data, "tenant=\"beta\""));
	buf_free(&b);
	free(only);
}

/* Past per_credential_max, status and metrics list only what is not in
 * good health, say how many they left out, and sum by provider. */
static void past_the_cap_only_the_unhealthy_are_listed(void **state)
{
	struct fixture *f = *state;
	struct buf b;
	size_t i;

	/* beta, gamma and delta valid; acme pending (no token yet). */
	for (i = 1; i < 4; i++)
		table_answer(f->t, cred_of(f->t, &f->cfg->creds[i]), "tok");
	f->cfg->per_credential_max = 2;
	buf_init(&b, 1 << 20);
	assert_int_equal(render_root_status(f->t, NULL, time_real_ms(), &b), 0);
	assert_non_null(strstr(b.data, "acme/idp state=pending"));
	assert_null(strstr(b.data, "beta/idp"));
	assert_non_null(strstr(b.data, "# 3 of 4 credentials not listed"));
	buf_free(&b);
	buf_init(&b, 1 << 20);
	assert_int_equal(render_metrics(f->t, NULL, time_real_ms(), &b), 0);
	assert_non_null(strstr(b.data, "credfs_credentials_unlisted 3\n"));
	assert_non_null(
		strstr(b.data, "credfs_credentials{state=\"valid\"} 3"));
	assert_non_null(strstr(b.data,
			       "credfs_provider_refresh_success_total{provider="
			       "\"idp\"} 3\n"));
	assert_non_null(strstr(b.data, "tenant=\"acme\""));
	assert_null(strstr(b.data, "tenant=\"gamma\""));
	buf_free(&b);
	/* Within the cap, every one. */
	f->cfg->per_credential_max = 4;
	buf_init(&b, 1 << 20);
	assert_int_equal(render_root_status(f->t, NULL, time_real_ms(), &b), 0);
	assert_non_null(strstr(b.data, "gamma/idp state=valid"));
	assert_null(strstr(b.data, "not listed"));
	buf_free(&b);
}

/* The schedule: an entry is due at the earliest of its next request, its
 * token's expiry, its next write retry and its next introspection; the
 * heap gives them back in that order, after changes and removals. */
static void the_heap_orders_by_the_earliest_due_time(void **state)
{
	struct fixture *f = *state;
	struct refresher rf = {0};
	struct rf_entry e[4];
	struct cred *c[4];
	size_t i;

	rf.heap = calloc(8, sizeof(*rf.heap));
	rf.heap_cap = 8;
	assert_non_null(rf.heap);
	for (i = 0; i < 4; i++) {
		c[i] = cred_of(f->t, &f->cfg->creds[i]);
		memset(&e[i], 0, sizeof(e[i]));
		e[i].attempt_mono = e[i].expiry_mono = INT64_MAX;
		e[i].persist_mono = e[i].introspect_mono = INT64_MAX;
		e[i].heap_idx = SIZE_MAX;
		cred_set_entry(c[i], &e[i]);
	}
	e[0].attempt_mono = 400;    /* a request */
	e[1].expiry_mono = 100;	    /* an expiry event, before its request */
	e[1].attempt_mono = 900;
	e[2].persist_mono = 300;    /* a write retry */
	e[3].introspect_mono = 200; /* an introspection */
	for (i = 0; i < 4; i++)
		rf_heap_push(&rf, c[i]);
	assert_int_equal(rf.n, 4);
	/* c3 comes first once its introspection moves before c1's expiry. */
	e[3].introspect_mono = 50;
	rf_heap_fix(&rf, c[3]);
	assert_ptr_equal(rf_heap_pop(&rf), c[3]);
	assert_int_equal(e[3].heap_idx, SIZE_MAX);
	/* c2 taken out from the middle: c1, then c0. */
	rf_heap_remove(&rf, c[2]);
	assert_ptr_equal(rf_heap_pop(&rf), c[1]);
	assert_ptr_equal(rf_heap_pop(&rf), c[0]);
	assert_int_equal(rf.n, 0);
	assert_int_equal(rf_heap_room(&rf), 0);
	for (i = 0; i < 4; i++)
		cred_set_entry(c[i], NULL);
	free(rf.heap);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(status_text_and_json_agree,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			past_the_cap_only_the_unhealthy_are_listed, setup,
			teardown),
		cmocka_unit_test_setup_teardown(metrics_name_every_credential,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			the_heap_orders_by_the_earliest_due_time, setup,
			teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
