/* Unit tests for plan: refresh time, backoff, margins, Retry-After. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "plan.h"

static const struct timing defaults = {
	.refresh_lead_ms = 300000,
	.refresh_fraction = 0.5,
	.min_ttl_ms = 60000,
	.open_wait_ms = 5000,
	.clock_skew_ms = 5000,
};

static void hour_token_refreshes_lead_before_expiry(void **state)
{
	/* 3600 s token: min(300, 1800) = 300 s lead, jitter up to 30 s. */
	int64_t issued = 1000000, expires = issued + 3600000;

	assert_int_equal(plan_lead_ms(&defaults, 3600000), 300000);
	assert_int_equal(plan_jitter_span_ms(&defaults, 3600000), 30000);
	assert_int_equal(plan_refresh_at(&defaults, issued, expires, 0.0),
			 expires - 300000);
	assert_int_equal(plan_refresh_at(&defaults, issued, expires, 0.5),
			 expires - 300000 - 15000);
}

/* After a late refresh: anywhere from a quarter into the period to the
 * usual time. */
static void spread_stays_within_the_period(void **state)
{
	int64_t issued = 1000000, expires = issued + 3600000;
	int64_t latest = plan_refresh_at(&defaults, issued, expires, 0.0);

	int64_t first = issued + (latest - issued) / 4;

	assert_int_equal(plan_spread_at(&defaults, issued, expires, 0.0),
			 first);
	assert_int_equal(plan_spread_at(&defaults, issued, expires, 0.5),
			 first + (latest - first) / 2);
	assert_true(plan_spread_at(&defaults, issued, expires, 0.999) <=
		    latest);
	assert_true(plan_spread_at(&defaults, issued, expires, 0.999) >
		    latest - 10000);
}

static void short_token_uses_fraction(void **state)
{
	/* 4 s token: min(300, 2) = 2 s lead, jitter up to 0.2 s. */
	int64_t issued = 0, expires = 4000;

	assert_int_equal(plan_lead_ms(&defaults, 4000), 2000);
	assert_int_equal(plan_refresh_at(&defaults, issued, expires, 0.0),
			 2000);
	assert_int_equal(plan_refresh_at(&defaults, issued, expires, 0.999),
			 2000 - 199);
}

static void jitter_is_capped_at_a_minute(void **state)
{
	struct timing t = defaults;

	t.refresh_lead_ms = 3600000;
	assert_int_equal(plan_jitter_span_ms(&t, 86400000), 60000);
}

static void refresh_never_before_issue(void **state)
{
	struct timing t = defaults;

	t.refresh_fraction = 0.95;
	t.refresh_lead_ms = 10000000;
	assert_true(plan_refresh_at(&t, 5000, 5100, 0.99) >= 5000);
}

static void backoff_grows_and_caps(void **state)
{
	/* u close to 1 shows the ceiling: 1, 2, 4, 8 s, then the 10 s cap. */
	double u = 0.999999;

	assert_int_equal(plan_backoff_ms(1000, 10000, 1, u) / 100, 9);
	assert_int_equal(plan_backoff_ms(1000, 10000, 2, u) / 100, 19);
	assert_int_equal(plan_backoff_ms(1000, 10000, 4, u) / 100, 79);
	assert_int_equal(plan_backoff_ms(1000, 10000, 5, u) / 100, 99);
	assert_int_equal(plan_backoff_ms(1000, 10000, 60, u) / 100, 99);
	/* Full jitter: u = 0 is allowed but never a hot loop. */
	assert_int_equal(plan_backoff_ms(1000, 10000, 3, 0.0), 10);
	assert_int_equal(plan_backoff_ms(1000, 10000, 3, 0.5), 2000);
}

static void margins_shrink_for_short_tokens(void **state)
{
	assert_int_equal(plan_min_ttl_ms(&defaults, 3600000), 60000);
	assert_int_equal(plan_min_ttl_ms(&defaults, 4000), 1000);
	assert_int_equal(plan_skew_ms(&defaults, 3600000), 5000);
	assert_int_equal(plan_skew_ms(&defaults, 4000), 400);
}

static void retry_after_forms(void **state)
{
	/* Sun, 06 Nov 1994 08:49:37 GMT = 784111777 */
	int64_t now = 784111777LL * 1000;

	assert_int_equal(plan_retry_after_ms("3", now), 3000);
	assert_int_equal(plan_retry_after_ms(" 120 ", now), 120000);
	assert_int_equal(
		plan_retry_after_ms("Sun, 06 Nov 1994 08:49:47 GMT", now),
		10000);
	assert_int_equal(
		plan_retry_after_ms("Sun, 06 Nov 1994 08:49:00 GMT", now), 0);
	/* The obsolete forms RFC 9110 5.6.7 says a recipient must take. */
	assert_int_equal(
		plan_retry_after_ms("Sunday, 06-Nov-94 08:49:47 GMT", now),
		10000);
	assert_int_equal(plan_retry_after_ms("Sun Nov  6 08:49:47 1994", now),
			 10000);
	assert_int_equal(plan_retry_after_ms("99999999", now), 3600000);
	assert_int_equal(plan_retry_after_ms("soon", now), -1);
	assert_int_equal(plan_retry_after_ms("3x", now), -1);
	assert_int_equal(plan_retry_after_ms(NULL, now), -1);
}

static void rand_is_in_unit_interval(void **state)
{
	uint64_t s = 42;
	int i;

	for (i = 0; i < 10000; i++) {
		double u = plan_rand(&s);

		assert_true(u >= 0.0 && u < 1.0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(hour_token_refreshes_lead_before_expiry),
		cmocka_unit_test(spread_stays_within_the_period),
		cmocka_unit_test(short_token_uses_fraction),
		cmocka_unit_test(jitter_is_capped_at_a_minute),
		cmocka_unit_test(refresh_never_before_issue),
		cmocka_unit_test(backoff_grows_and_caps),
		cmocka_unit_test(margins_shrink_for_short_tokens),
		cmocka_unit_test(retry_after_forms),
		cmocka_unit_test(rand_is_in_unit_interval),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
