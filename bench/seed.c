/*
 * seed: fill a store for the refresh-at-scale benchmark, fast: TENANTS x
 * PROVIDERS records ("t0000".., "p0"..), each with a refresh token and a
 * valid bench access token of LIFETIME seconds whose planned refresh (at
 * FRACTION of its lifetime before expiry) falls evenly over
 * lifetime * (1 - FRACTION) seconds from when the daemon will have
 * started, so the benchmark starts in the steady state, not with a burst.
 *
 *   seed STORE-DIR|DSN KEY-FILE TENANTS PROVIDERS LIFETIME-S FRACTION
 *        [START-IN-S]
 *
 * (DSN: a libpq connection string, for a PostgreSQL store.)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "key.h"
#include "record.h"
#include "store.h"
#include "util.h"

#include "bench.h"
/* Records are written in groups of this many (store_save_many(): one
 * sync a group), as the daemon writes its refreshes. */
#define GROUP 64

struct slot {
	char tenant[16], provider[16], rt[64], at[160];
	struct record r;
	struct store_write w;
};

/* Write the @n slots filled so far: 0, or 1 with a message. */
static int flush(struct store *st, struct slot *g, size_t n)
{
	struct store_write *w[GROUP];
	size_t i;

	for (i = 0; i < n; i++)
		w[i] = &g[i].w;
	store_save_many(st, w, n);
	for (i = 0; i < n; i++)
		if (g[i].w.ret < 0) {
			fprintf(stderr, "seed: %s/%s: cannot write: %s\n",
				g[i].tenant, g[i].provider,
				strerror(-g[i].w.ret));
			return 1;
		}
	return 0;
}

int main(int argc, char **argv)
{
	static struct slot g[GROUP];
	struct store *st = NULL;
	uint8_t *key = NULL;
	char err[512];
	long tenants, providers, i, j, n = 0;
	double lifetime, fraction, period;
	int64_t now = time_real_ms();
	size_t k = 0;

	if (argc != 7 && argc != 8) {
		fprintf(stderr, "usage: seed STORE-DIR|DSN KEY-FILE TENANTS "
				"PROVIDERS LIFETIME-S FRACTION [START-IN-S]\n");
		return 2;
	}
	tenants = atol(argv[3]);
	providers = atol(argv[4]);
	lifetime = atof(argv[5]);
	fraction = atof(argv[6]);
	period = lifetime * (1 - fraction);
	/* The plan starts once seeding and the daemon's start are done
	 * (START-IN-S from now; by default 2 s + 0.1 ms a record), so that
	 * nothing is overdue at the start. */
	now += argc == 8 ? (int64_t)(atof(argv[7]) * 1000)
			 : 2000 + (int64_t)(tenants * providers) / 10;
	/* A libpq connection string ("host=... dbname=...") names a
	 * PostgreSQL store; anything else a directory. */
	if (key_load_file(argv[2], &key, err, sizeof(err)) < 0 ||
	    (strchr(argv[1], '=')
		     ? store_open_pg(argv[1], key, STORE_ADMIN, &st, err,
				     sizeof(err))
		     : store_open_dir(argv[1], key, STORE_ADMIN, &st, err,
				      sizeof(err))) < 0) {
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
			struct slot *x = &g[k++];
			int len;

			snprintf(x->tenant, sizeof(x->tenant), "t%04ld", i);
			snprintf(x->provider, sizeof(x->provider), "p%ld", j);
			snprintf(x->rt, sizeof(x->rt), "rt-t%04ld-p%ld", i, j);
			len = snprintf(x->at, sizeof(x->at), "bench.%lld.%ld",
				       (long long)exp, n + 1);
			snprintf(x->at + len, sizeof(x->at) - (size_t)len,
				 ".%016llx",
				 (unsigned long long)fnv64(x->at, (size_t)len));
			x->r = (struct record){
				.generation = 1,
				.refresh_token = x->rt,
				.access_token = x->at,
				.token_type = "Bearer",
				.issued_ms = exp - (int64_t)(lifetime * 1000),
				.expires_ms = exp,
			};
			x->w = (struct store_write){
				.tenant = x->tenant,
				.provider = x->provider,
				.r = &x->r,
				.expect = 0,
			};
			if (k == GROUP) {
				if (flush(st, g, k))
					return 1;
				k = 0;
			}
		}
	}
	if (k && flush(st, g, k))
		return 1;
	store_close(st);
	key_free(key);
	printf("seeded %ld records\n", n);
	return 0;
}
