/*
 * plan: refresh-time, backoff and freshness arithmetic (see plan.h).
 * Kept free of clocks so that the unit tests can pin every edge.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "config.h"
#include "plan.h"

#define RETRY_AFTER_CAP_MS (3600 * 1000LL)
#define JITTER_CAP_MS (60 * 1000LL)

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

int64_t plan_lead_ms(const struct timing *t, int64_t lifetime_ms)
{
	int64_t frac;

	if (lifetime_ms < 0)
		lifetime_ms = 0;
	frac = (int64_t)((double)lifetime_ms * t->refresh_fraction);
	return min64(t->refresh_lead_ms, frac);
}

int64_t plan_jitter_span_ms(const struct timing *t, int64_t lifetime_ms)
{
	return min64(plan_lead_ms(t, lifetime_ms) / 10, JITTER_CAP_MS);
}

int64_t plan_refresh_at(const struct timing *t, int64_t issued_ms,
			int64_t expires_ms, double u)
{
	int64_t lifetime = expires_ms - issued_ms;
	int64_t lead = plan_lead_ms(t, lifetime);
	int64_t jitter =
		(int64_t)(u * (double)plan_jitter_span_ms(t, lifetime));
	int64_t at = expires_ms - lead - jitter;

	return at < issued_ms ? issued_ms : at;
}

int64_t plan_spread_at(const struct timing *t, int64_t issued_ms,
		       int64_t expires_ms, double u)
{
	int64_t latest = plan_refresh_at(t, issued_ms, expires_ms, 0);
	int64_t first = issued_ms + (latest - issued_ms) / 4;

	return first + (int64_t)(u * (double)(latest - first));
}

int64_t plan_backoff_ms(int64_t initial_ms, int64_t max_ms, unsigned n,
			double u)
{
	int64_t ceiling = initial_ms;
	int64_t d;
	unsigned i;

	for (i = 1; i < n && ceiling < max_ms; i++)
		ceiling *= 2;
	ceiling = min64(ceiling, max_ms);
	d = (int64_t)(u * (double)ceiling);
	return d < 10 ? 10 : d;
}

int64_t plan_min_ttl_ms(const struct timing *t, int64_t lifetime_ms)
{
	return min64(t->min_ttl_ms, lifetime_ms / 4);
}

int64_t plan_skew_ms(const struct timing *t, int64_t lifetime_ms)
{
	return min64(t->clock_skew_ms, lifetime_ms / 10);
}

int64_t plan_retry_after_ms(const char *value, int64_t now_ms)
{
	time_t when;
	char *end;
	int64_t ms;

	if (!value)
		return -1;
	while (isspace((unsigned char)*value))
		value++;
	if (isdigit((unsigned char)*value)) {
		unsigned long long s;

		errno = 0;
		s = strtoull(value, &end, 10);
		while (isspace((unsigned char)*end))
			end++;
		if (errno || *end)
			return -1;
		if (s > RETRY_AFTER_CAP_MS / 1000)
			return RETRY_AFTER_CAP_MS;
		return (int64_t)s * 1000;
	}
	/* An HTTP-date (RFC 9110 5.6.7: IMF-fixdate, and the obsolete RFC
	 * 850 and asctime forms a recipient must take too). */
	when = curl_getdate(value, NULL);
	if (when < 0)
		return -1;
	ms = (int64_t)when * 1000 - now_ms;
	if (ms < 0)
		return 0;
	return min64(ms, RETRY_AFTER_CAP_MS);
}

double plan_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}
