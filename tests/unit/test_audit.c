/* Unit tests for audit: the lines audit.c writes by hand are the JSON
 * jansson would write for the same fields (jansson is the oracle here),
 * for every kind of text a field can hold; nothing queued is lost at a
 * clean stop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "audit.h"
#include "policy.h"

/* The field as the jansson-built line had it: the string when it is
 * UTF-8, else its ASCII with every other byte as \xNN. */
static json_t *oracle_str(const char *v)
{
	char out[4 * 512 + 1];
	size_t i, n = 0;
	json_t *s;

	if (!v)
		return json_null();
	s = json_string(v);
	if (s)
		return s;
	for (i = 0; v[i] && n + 5 < sizeof(out); i++) {
		unsigned char ch = (unsigned char)v[i];

		if (ch < 0x80)
			out[n++] = (char)ch;
		else
			n += (size_t)snprintf(out + n, sizeof(out) - n,
					      "\\x%02x", ch);
	}
	out[n] = '\0';
	return json_string(out);
}

static char *oracle_line(const char *when, const struct audit_rec *r)
{
	json_t *o = json_object();
	char *text;

	json_object_set_new(o, "time", json_string(when));
	json_object_set_new(o, "event", oracle_str(r->event));
	json_object_set_new(o, "tenant", oracle_str(r->tenant));
	json_object_set_new(o, "provider", oracle_str(r->provider));
	if (r->who) {
		json_object_set_new(o, "uid", json_integer(r->who->uid));
		json_object_set_new(o, "gid", json_integer(r->who->gid));
		json_object_set_new(o, "pid", json_integer(r->who->pid));
		json_object_set_new(o, "comm", oracle_str(caller_comm(r->who)));
		json_object_set_new(o, "cgroup",
				    oracle_str(caller_audit_cgroup(r->who)));
	} else {
		json_object_set_new(o, "uid", json_null());
		json_object_set_new(o, "gid", json_null());
		json_object_set_new(o, "pid", json_null());
		json_object_set_new(o, "comm", json_null());
		json_object_set_new(o, "cgroup", json_null());
	}
	json_object_set_new(o, "outcome", oracle_str(r->outcome));
	json_object_set_new(o, "fingerprint", oracle_str(r->fp));
	if (r->detail)
		json_object_set_new(o, "detail", oracle_str(r->detail));
	text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	return text;
}

/* Each record logged to a fresh file, the file read back line by line
 * and compared with the oracle (the time taken from the line itself). */
static void check_records(const struct audit_rec *recs, size_t n)
{
	char path[] = "/tmp/credfs-test-audit.XXXXXX";
	struct audit *a;
	char *line = NULL, *want;
	const char *when;
	size_t cap = 0, i;
	ssize_t len;
	json_error_t err;
	json_t *got;
	FILE *f;
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(audit_open(path, &a), 0);
	for (i = 0; i < n; i++)
		audit_log(a, &recs[i]);
	audit_free(a); /* writes every line queued */
	f = fopen(path, "r");
	assert_non_null(f);
	for (i = 0; i < n; i++) {
		len = getline(&line, &cap, f);
		assert_true(len > 1);
		assert_int_equal(line[len - 1], '\n');
		line[len - 1] = '\0';
		got = json_loads(line, 0, &err);
		if (!got)
			fail_msg("line %zu is not JSON (%s): %s", i, err.text,
				 line);
		when = json_string_value(json_object_get(got, "time"));
		/* 2026-12-02T03:15:17.042Z */
		assert_non_null(when);
		assert_int_equal(strlen(when), 24);
		assert_true(when[4] == '-' && when[10] == 'T' &&
			    when[19] == '.' && when[23] == 'Z');
		assert_true(when[20] >= '0' && when[20] <= '9' &&
			    when[22] >= '0' && when[22] <= '9');
		want = oracle_line(when, &recs[i]);
		json_decref(got);
		if (strcmp(line, want) != 0)
			fail_msg("line %zu:\n got  %s\n want %s", i, line,
				 want);
		free(want);
	}
	assert_int_equal(getline(&line, &cap, f), -1); /* no more, no less */
	free(line);
	fclose(f);
	unlink(path);
}

static void lines_are_the_json_jansson_writes(void **state)
{
	struct caller who;
	struct audit_rec recs[] = {
		{"read", "acme", "google", NULL, "ok", "0123abcd", NULL},
		{"denied", "acme", NULL, NULL, "EACCES", NULL,
		 "not a reader of this tenant"},
		{"refresh_failed", "t", "p", NULL, "invalid_grant", NULL,
		 "quote \" backslash \\ slash / tab \t nl \n cr \r bs \b "
		 "ff \f bell \a esc \x1b unit \x1f del \x7f"},
		{"read", "utf8", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x94\x91", NULL,
		 "ok", NULL, "\xe2\x80\xa8 line separator stays as it is"},
		/* Not UTF-8 in each way jansson refuses: a lone
		 * continuation, an overlong, a surrogate, past U+10FFFF, a
		 * cut sequence, and bytes never in UTF-8. */
		{"read", "\x80x", "\xc0\xaf", NULL, "\xed\xa0\x80", NULL,
		 "\xf4\x90\x80\x80"},
		{"read", "\xe2\x82", "\xc1\xbf", NULL, "\xf5\x80\x80\x80",
		 "\xfe\xff", "ok \xe0\x80\xaf \xf0\x80\x80\xaf"},
		{"read", "mixed \xc3\xa9 and \xff", "", NULL, "", "", ""},
	};

	caller_init(&who, 1234, 5678, getpid(), NULL, NULL, NULL);
	recs[0].who = &who;
	recs[1].who = &who;
	check_records(recs, sizeof(recs) / sizeof(recs[0]));
}

/* Random text, weighted towards bytes that make or break UTF-8. */
static void random_text_matches_too(void **state)
{
	static const unsigned char pick[] = {
		'a',  '"',  '\\', '\n', 0x01, 0x1f, 0x7f, 0x80, 0xbf,
		0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff,
	};
	enum { N = 400, LEN = 12 };
	static char text[N][LEN + 1];
	static struct audit_rec recs[N];
	unsigned seed = 12345;
	size_t i, j, len;

	for (i = 0; i < N; i++) {
		len = (size_t)(rand_r(&seed) % (LEN + 1));
		for (j = 0; j < len; j++)
			text[i][j] = (char)(rand_r(&seed) % 3
						    ? pick[rand_r(&seed) %
							   sizeof(pick)]
						    : 1 + rand_r(&seed) % 255);
		text[i][len] = '\0';
		recs[i] = (struct audit_rec){"read", "t",  "p",	   NULL,
					     "ok",   NULL, text[i]};
	}
	check_records(recs, N);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(lines_are_the_json_jansson_writes),
		cmocka_unit_test(random_text_matches_too),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
