/*
 * plan: the arithmetic of time. When to refresh a token, how long to back
 * off after a failure, what Retry-After asks for, and the freshness margins
 * an open() applies. Pure functions: no clocks, no state, no I/O.
 */
#ifndef CREDFS_PLAN_H
#define CREDFS_PLAN_H

#include <stdint.h>

struct timing;

/* min(refresh_lead, lifetime * refresh_fraction), never negative. */
int64_t plan_lead_ms(const struct timing *t, int64_t lifetime_ms);

/* The largest jitter subtracted for @lifetime_ms: a tenth of the lead,
 * at most 60 s. */
int64_t plan_jitter_span_ms(const struct timing *t, int64_t lifetime_ms);

/*
 * When to refresh a token issued at @issued_ms that expires at @expires_ms:
 * expires - lead - jitter, with jitter = @u * jitter span and @u in [0, 1).
 * Never before @issued_ms.
 */
int64_t plan_refresh_at(const struct timing *t, int64_t issued_ms,
			int64_t expires_ms, double u);

/*
 * The refresh after one that started late (a burst: after downtime, or
 * the first tokens of many credentials): anywhere in the last three
 * quarters of the refresh period (@u in [0, 1) of it), so that the
 * burst's credentials come due spread over one period instead of
 * together again. Never later than plan_refresh_at() would say, and
 * never within the first quarter: two rotations in quick succession
 * would leave a file opened on the first generation without its
 * attributes (a getattr names the generation, and only two are held).
 */
int64_t plan_spread_at(const struct timing *t, int64_t issued_ms,
		       int64_t expires_ms, double u);

/* Delay before retry @n (1 = first retry): full jitter, that is
 * @u * min(@max_ms, @initial_ms * 2^(n-1)), at least 10 ms. */
int64_t plan_backoff_ms(int64_t initial_ms, int64_t max_ms, unsigned n,
			double u);

/* A token with less than this left is refreshed before it is served:
 * min(min_ttl, lifetime / 4), so short-lived tokens do not refresh per open. */
int64_t plan_min_ttl_ms(const struct timing *t, int64_t lifetime_ms);

/* A token within this of expiry counts as expired: min(skew, lifetime/10). */
int64_t plan_skew_ms(const struct timing *t, int64_t lifetime_ms);

/*
 * Parse a Retry-After value (delay-seconds or an HTTP-date, RFC 9110
 * 10.2.3) into a delay in ms from @now_ms, capped at one hour. Returns -1
 * when @value is NULL or unparseable.
 */
int64_t plan_retry_after_ms(const char *value, int64_t now_ms);

/* A uniform double in [0, 1) from a xorshift64* state (jitter only, not
 * for secrets). @state must be nonzero. */
double plan_rand(uint64_t *state);

#endif
