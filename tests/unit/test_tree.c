/* Unit tests for tree: the numbering that keeps node ids meaning the same
 * thing across reloads and handoffs. */
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
#include "tree.h"

/* A configuration of tenants @tenants (space-separated), each with one
 * credential of each provider in @providers. */
static struct config *cfg_of(const char *tenants, const char *providers)
{
	char json[4096], *p = json, *list, *save = NULL, *t;
	struct config *cfg = NULL;
	char err[512];
	int first = 1;

	p += sprintf(p, "{\"providers\":{");
	list = strdup(providers);
	for (t = strtok_r(list, " ", &save); t;
	     t = strtok_r(NULL, " ", &save)) {
		p += sprintf(p,
			     "%s\"%s\":{\"token_url\":\"https://o.example/t\","
			     "\"client_id\":\"id\",\"client_secret_file\":"
			     "\"/s\"}",
			     first ? "" : ",", t);
		first = 0;
	}
	p += sprintf(p, "},\"tenants\":{");
	first = 1;
	free(list);
	list = strdup(tenants);
	for (t = strtok_r(list, " ", &save); t;
	     t = strtok_r(NULL, " ", &save)) {
		char *plist = strdup(providers), *s2 = NULL, *q;
		int f2 = 1;

		p += sprintf(p, "%s\"%s\":{\"credentials\":{", first ? "" : ",",
			     t);
		for (q = strtok_r(plist, " ", &s2); q;
		     q = strtok_r(NULL, " ", &s2)) {
			p += sprintf(p, "%s\"%s\":{\"scopes\":[\"r\"]}",
				     f2 ? "" : ",", q);
			f2 = 0;
		}
		p += sprintf(p, "}}");
		free(plist);
		first = 0;
	}
	free(list);
	sprintf(p, "}}");
	assert_int_equal(config_parse(json, strlen(json), "c.json", &cfg, err,
				      sizeof(err)),
			 0);
	return cfg;
}

static uint32_t slot_of(const struct config *cfg, const char *tenant,
			const char *provider)
{
	const struct cred_conf *cc = config_find_cred(cfg, tenant, provider);

	assert_non_null(cc);
	return cc->slot;
}

static void names_keep_their_slots(void **state)
{
	struct tree_names *n;
	struct config *a = cfg_of("acme beta", "idp"),
		      *b = cfg_of("aaa beta", "idp xyz"),
		      *c = cfg_of("acme beta", "idp");
	uint32_t beta;

	assert_int_equal(tree_names_new(NULL, &n), 0);
	assert_int_equal(tree_number(n, a), 0);
	beta = slot_of(a, "beta", "idp");
	/* "aaa" sorts first, and beta keeps its slot; new names get new
	 * ones, never a removed one's. */
	assert_int_equal(tree_number(n, b), 0);
	assert_int_equal(slot_of(b, "beta", "idp"), beta);
	assert_true(slot_of(b, "aaa", "idp") >= 2);
	assert_true(slot_of(b, "beta", "xyz") >= 2);
	assert_int_not_equal(slot_of(b, "aaa", "idp"),
			     slot_of(b, "beta", "xyz"));
	assert_int_equal(b->n_cred_slots, 5);
	/* Tenant slots: the table says which tenant has each. */
	assert_int_equal(b->n_tenant_slots, 3);
	assert_int_equal(b->tenant_of_slot[a->tenants[0].slot], -1); /* acme */
	assert_int_equal(b->tenant_of_slot[b->tenants[0].slot], 0);
	/* Back as before: the same slots as the first time. */
	assert_int_equal(tree_number(n, c), 0);
	assert_int_equal(slot_of(c, "acme", "idp"), slot_of(a, "acme", "idp"));
	assert_int_equal(slot_of(c, "beta", "idp"), beta);
	assert_int_equal(c->n_cred_slots, 5);
	tree_names_free(n);
	config_free(a);
	config_free(b);
	config_free(c);
}

static void an_image_carries_the_numbering(void **state)
{
	struct tree_names *n, *m;
	struct config *a = cfg_of("acme beta", "idp"),
		      *b = cfg_of("beta gamma", "idp");
	json_t *names, *image;

	assert_int_equal(tree_names_new(NULL, &n), 0);
	assert_int_equal(tree_number(n, a), 0);
	names = tree_names_export(n);
	assert_non_null(names);
	image = json_pack("{s:o}", "names", names);
	/* The next process numbers another configuration alike. */
	assert_int_equal(tree_names_new(image, &m), 0);
	assert_int_equal(tree_number(m, b), 0);
	assert_int_equal(slot_of(b, "beta", "idp"), slot_of(a, "beta", "idp"));
	assert_int_equal(slot_of(b, "gamma", "idp"), 2);
	assert_int_equal(b->tenants[0].slot, a->tenants[1].slot);
	json_decref(image);
	tree_names_free(n);
	tree_names_free(m);
	config_free(a);
	config_free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(names_keep_their_slots),
		cmocka_unit_test(an_image_carries_the_numbering),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
