/*
 * discovery: OpenID Connect Discovery 1.0 documents, fetched by issuer,
 * cached for the process with an age (discovery.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config.h"
#include "discovery.h"
#include "http.h"
#include "log.h"
#include "oauth.h"
#include "util.h"

struct discovered {
	char *issuer;
	json_t *doc;
	int64_t fetched_ms; /* monotonic */
	struct discovered *next;
};

static pthread_mutex_t discovery_lock = PTHREAD_MUTEX_INITIALIZER;
static struct discovered *discovery_cache;

static int fetch_discovery(const struct provider_conf *p, json_t **out,
			   char *why, size_t whylen)
{
	struct http_req *req = NULL;
	const char *body;
	char url[2048];
	size_t len, n = strlen(p->issuer);
	long status;
	int r;

	/* Section 4: the issuer, less a trailing slash, and the path. */
	if (n && p->issuer[n - 1] == '/')
		n--;
	snprintf(url, sizeof(url), "%.*s/.well-known/openid-configuration",
		 (int)n, p->issuer);
	r = http_req_new(p, url, NULL, NULL, NULL, &req);
	if (r < 0) {
		snprintf(why, whylen, "%s", strerror(-r));
		return r;
	}
	r = http_req_result(req, http_req_perform(req), &status, &body, &len,
			    why, whylen);
	if (r == 0 && status != 200) {
		snprintf(why, whylen, "%s: HTTP %ld", url, status);
		r = -EPROTO;
	}
	if (r == 0) {
		*out = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
		if (!json_is_object(*out)) {
			json_decref(*out);
			*out = NULL;
			snprintf(why, whylen, "%s: not a JSON object", url);
			r = -EPROTO;
		}
	} else if (r != -EPROTO) {
		char tmp[OAUTH_ERROR_TEXT];

		snprintf(tmp, sizeof(tmp), "%s", why);
		snprintf(why, whylen, "%s: %s", url, tmp);
	}
	http_req_free(req);
	return r;
}

/* The cache's entry for @issuer, under discovery_lock. */
static struct discovered *find(const char *issuer)
{
	struct discovered *d;

	for (d = discovery_cache; d; d = d->next)
		if (!strcmp(d->issuer, issuer))
			break;
	return d;
}

int discovery_get(const struct provider_conf *p, bool offline, json_t **out,
		  char *why, size_t whylen)
{
	struct discovered *d;
	int r;

	pthread_mutex_lock(&discovery_lock);
	d = find(p->issuer);
	*out = d ? json_incref(d->doc) : NULL;
	pthread_mutex_unlock(&discovery_lock);
	if (*out)
		return 0;
	if (offline) {
		snprintf(why, whylen,
			 "%s was not discovered when the daemon started, and "
			 "a reload does no network I/O: restart credfs to use "
			 "a new issuer",
			 p->issuer);
		return -ENOENT;
	}
	r = fetch_discovery(p, out, why, whylen);
	if (r < 0)
		return r;
	d = calloc(1, sizeof(*d));
	if (d)
		d->issuer = strdup(p->issuer);
	if (!d || !d->issuer) {
		free(d);
		return 0; /* used once, not cached */
	}
	d->doc = json_incref(*out);
	d->fetched_ms = time_mono_ms();
	pthread_mutex_lock(&discovery_lock);
	d->next = discovery_cache;
	discovery_cache = d;
	pthread_mutex_unlock(&discovery_lock);
	return 0;
}

size_t discovery_refresh(const struct config *cfg)
{
	char why[OAUTH_ERROR_TEXT];
	struct discovered *d;
	json_t *doc, *old;
	size_t i, n = 0;
	bool due;

	for (i = 0; i < cfg->n_providers; i++) {
		const struct provider_conf *p = &cfg->providers[i];

		if (!p->issuer)
			continue;
		pthread_mutex_lock(&discovery_lock);
		d = find(p->issuer);
		due = d &&
		      time_mono_ms() - d->fetched_ms >= p->discovery_max_age_ms;
		pthread_mutex_unlock(&discovery_lock);
		if (!due)
			continue;
		if (fetch_discovery(p, &doc, why, sizeof(why)) < 0) {
			log_warn("providers.%s.issuer: the discovery document "
				 "could not be fetched again (%s); the one "
				 "fetched before stays in force",
				 p->name, why);
			continue;
		}
		pthread_mutex_lock(&discovery_lock);
		old = d->doc; /* entries are never removed: still @d */
		d->doc = doc;
		d->fetched_ms = time_mono_ms();
		pthread_mutex_unlock(&discovery_lock);
		json_decref(old);
		log_info("providers.%s.issuer: discovery document fetched "
			 "again",
			 p->name);
		n++;
	}
	return n;
}
