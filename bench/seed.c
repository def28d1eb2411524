/*
 * seed: fill a store for the refresh-at-scale benchmark, fast: TENANTS x
 * PROVIDERS records ("t0000".., "p0"..), each with a refresh token and a
 * valid bench access token of LIFETIME seconds whose planned refresh (at
 * FRACTION of its lifetime before expiry) falls evenly over
 * lifetime * (1 - FRACTION) seconds from when the daemon will have
 * started, so the benchmark starts in the steady state, not with a burst.
 *
 *   seed STORE-DIR KEY-FILE TENANTS PROVIDERS LIFETIME-S FRACTION
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "key.h"
#include "record.h"
#include "store.h"
#include "util.h"

#include "bench.h"
int main(int argc, char **argv)
{
	struct store *st = NULL;
	uint8_t *key = NULL;
	char err[512], tenant[16], provider[16], rt[64], at[160];
	long tenants, providers, i, j, n = 0;
	double lifetime, fraction, period;
	int64_t now = time_real_ms();

	if (argc != 7) {
		fprintf(stderr, "usage: seed STORE-DIR KEY-FILE TENANTS "
				"PROVIDERS LIFETIME-S FRACTION\n");
		return 2;
	}
	tenants = atol(argv[3]);
	providers = atol(argv[4]);
	lifetime = atof(argv[5]);
	fraction = atof(argv[6]);
	period = lifetime * (1 - fraction);
	/* The plan starts once seeding (about 0.35 ms a record here) and the
	 * daemon's start are done, so nothing is overdue at the start. */
	now += 2000 + (int64_t)(tenants * providers) / 2;
	if (key_load_file(argv[2], &key, err, sizeof(err)) < 0 ||
	    store_open_dir(argv[1], key, STORE_ADMIN, &st, err, sizeof(err)) <
		    0) {
		fprintf(stderr, "seed: %s\n", err);
		return 1;
	}
	for (i = 0; i < tenants; i++) {
		for (j = 0; j < providers; j++, n++) {
			/* Refresh due at now + period * k / N. */
			int64_t exp = now +
				      (int64_t)(lifetime * fraction * 1000) +
				      (int64_t)(period * 1000 * (double)n /
						(double)(tenants * providers));
			struct record r = {
				.generation = 1,
				.refresh_token = rt,
				.access_token = at,
				.token_type = "Bearer",
				.issued_ms = exp - (int64_t)(lifetime * 1000),
				.expires_ms = exp,
			};
			int k;

			snprintf(tenant, sizeof(tenant), "t%04ld", i);
			snprintf(provider, sizeof(provider), "p%ld", j);
			snprintf(rt, sizeof(rt), "rt-%s-%s", tenant, provider);
			k = snprintf(at, sizeof(at), "bench.%lld.%ld",
				     (long long)exp, n + 1);
			snprintf(at + k, sizeof(at) - (size_t)k, ".%016llx",
				 (unsigned long long)fnv64(at, (size_t)k));
			if (store_save(st, tenant, provider, &r, 0) < 0) {
				fprintf(stderr, "seed: %s/%s: cannot write\n",
					tenant, provider);
				return 1;
			}
		}
	}
	store_close(st);
	key_free(key);
	printf("seeded %ld records\n", n);
	return 0;
}
