/*
 * discovery: OpenID Connect Discovery 1.0 documents, fetched by issuer,
 * cached for the process with an age, and saved sealed beside the store
 * for a cold start (discovery.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "config.h"
#include "discovery.h"
#include "http.h"
#include "log.h"
#include "oauth.h"
#include "sealed.h"
#include "util.h"

struct discovered {
	char *issuer;
	json_t *doc;
	int64_t fetched_ms; /* monotonic */
	struct discovered *next;
};

static pthread_mutex_t discovery_lock = PTHREAD_MUTEX_INITIALIZER;
static struct discovered *discovery_cache;

/* The documents read back from the saved file (discovery_read_saved()),
 * each with fetched_ms in real time: used only when fetching fails. */
static struct discovered *saved_docs;
/* Where the cache is saved (discovery_save_to()), and under which key;
 * NULL: nowhere. Under save_lock. */
static char *save_dir;
static struct sealed_key save_key;
static bool save_due; /* fetched since it was last saved; discovery_lock */
static pthread_mutex_t save_lock = PTHREAD_MUTEX_INITIALIZER;

#define SAVED_NAME SEALED_DISCOVERY

/*
 * GET @url, one of @p's metadata documents, as a JSON object: 0 with it in
 * *@out; 1 when the answer was not a 200 (*@status says what it was, and
 * @www gets its WWW-Authenticate, if @www); -errno with the reason in @why
 * (naming @url) when no answer came or the 200 is not a JSON object.
 */
static int get_json(const struct provider_conf *p, const char *url,
		    json_t **out, long *status, char *www, size_t wwwlen,
		    char *why, size_t whylen)
{
	char tmp[OAUTH_ERROR_TEXT];
	struct curl_header *h = NULL;
	struct http_req *req = NULL;
	const char *body;
	size_t len;
	int r;

	*out = NULL;
	r = http_req_new(p, url, NULL, NULL, NULL, &req);
	if (r < 0) {
		snprintf(why, whylen, "%s: %s", url, strerror(-r));
		return r;
	}
	r = http_req_result(req, http_req_perform(req), status, &body, &len,
			    tmp, sizeof(tmp));
	if (r < 0) {
		snprintf(why, whylen, "%s: %s", url, tmp);
	} else if (*status != 200) {
		snprintf(why, whylen, "%s: HTTP %ld", url, *status);
		if (www &&
		    curl_easy_header(http_req_easy(req), "WWW-Authenticate", 0,
				     CURLH_HEADER, -1, &h) == CURLHE_OK)
			snprintf(www, wwwlen, "%s", h->value);
		r = 1;
	} else {
		*out = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
		if (!json_is_object(*out)) {
			json_decref(*out);
			*out = NULL;
			snprintf(why, whylen, "%s: not a JSON object", url);
			r = -EPROTO;
		}
	}
	http_req_free(req);
	return r;
}

/* The first of the well-known @urls (NULL-ended) that answers with a JSON
 * object; -EPROTO naming the last failure when none does. */
static int get_first(const struct provider_conf *p, char *const *urls,
		     json_t **out, char *why, size_t whylen)
{
	long status;
	int r = -EPROTO;

	for (; *urls; urls++) {
		r = get_json(p, *urls, out, &status, NULL, 0, why, whylen);
		if (r == 0 || (r < 0 && r != -EPROTO))
			return r; /* found, or the server is not there */
	}
	return r < 0 ? r : -EPROTO;
}

static int fetch_discovery(const struct provider_conf *p, json_t **out,
			   char *why, size_t whylen)
{
	char url[2048], *urls[] = {url, NULL};
	size_t n = strlen(p->issuer);

	/* Section 4: the issuer, less a trailing slash, and the path. */
	if (n && p->issuer[n - 1] == '/')
		n--;
	snprintf(url, sizeof(url), "%.*s/.well-known/openid-configuration",
		 (int)n, p->issuer);
	return get_first(p, urls, out, why, whylen);
}

enum {
	WK_APPENDED = 1, /* also "https://h/path/.well-known/SUFFIX" */
	WK_ROOT = 2,	 /* also "https://h/.well-known/SUFFIX" */
};

/*
 * The well-known URLs of @id (an https URL) for @suffix, into @buf (up to
 * three URLs of 2 KiB) and listed in @urls (NULL-ended, four entries):
 * RFC 8414 section 3.1 and RFC 9728 section 3.1 put the well-known part
 * between the host and the path ("https://h/.well-known/SUFFIX/path");
 * @flags add the OpenID Connect form and the root for an @id with a path.
 * 0 or -EINVAL.
 */
static int well_known(const char *id, const char *suffix, int flags,
		      char (*buf)[2048], char **urls)
{
	const char *rest = strstr(id, "://"), *path;
	size_t n = 0, plen, host;

	if (!rest)
		return -EINVAL;
	path = strchr(rest + 3, '/');
	if (!path)
		path = id + strlen(id);
	host = (size_t)(path - id);
	plen = strlen(path);
	while (plen && path[plen - 1] == '/')
		plen--; /* "https://h/" and "https://h/a/" as without */
	snprintf(buf[n], sizeof(buf[n]), "%.*s/.well-known/%s%.*s", (int)host,
		 id, suffix, (int)plen, path);
	urls[n] = buf[n];
	n++;
	if ((flags & WK_APPENDED) && plen) {
		snprintf(buf[n], sizeof(buf[n]), "%.*s/.well-known/%s",
			 (int)(host + plen), id, suffix);
		urls[n] = buf[n];
		n++;
	}
	if ((flags & WK_ROOT) && plen) {
		snprintf(buf[n], sizeof(buf[n]), "%.*s/.well-known/%s",
			 (int)host, id, suffix);
		urls[n] = buf[n];
		n++;
	}
	urls[n] = NULL;
	return 0;
}

/*
 * The MCP authorization discovery of @p->resource: its protected resource
 * metadata, from the resource_metadata of an unauthenticated request's
 * 401, else at its well-known URLs (RFC 9728); which must name exactly
 * that resource; then the first authorization server it lists, whose
 * metadata (RFC 8414, else OpenID Connect discovery) must name exactly
 * that issuer and offer PKCE with S256. The authorization server's
 * metadata is the answer.
 */
static int fetch_mcp(const struct provider_conf *p, json_t **out, char *why,
		     size_t whylen)
{
	char buf[3][2048], *urls[4], www[2048] = "";
	json_t *prm = NULL, *v;
	const char *as, *m;
	bool s256 = false;
	long status;
	size_t i;
	int r;

	*out = NULL;
	r = get_json(p, p->resource, &prm, &status, www, sizeof(www), why,
		     whylen);
	json_decref(prm); /* a server that answers without a token */
	prm = NULL;
	if (r < 0 && r != -EPROTO)
		return r; /* not there at all */
	/* RFC 9728 5.1 */
	if (http_auth_param(www, "resource_metadata", buf[0], sizeof(buf[0]))) {
		if (!http_url_safe(buf[0])) {
			snprintf(why, whylen,
				 "the server's 401 names resource metadata "
				 "at %.200s, not an https:// URL; refused",
				 buf[0]);
			return -EPROTO;
		}
		urls[0] = buf[0];
		urls[1] = NULL;
	} else if (well_known(p->resource, "oauth-protected-resource", WK_ROOT,
			      buf, urls) < 0) {
		snprintf(why, whylen, "%s is not a URL", p->resource);
		return -EINVAL;
	}
	r = get_first(p, urls, &prm, why, whylen);
	if (r < 0)
		return r;
	/* RFC 9728 3.3: the resource must be the one asked about. */
	v = json_object_get(prm, "resource");
	if (!json_is_string(v) || strcmp(json_string_value(v), p->resource)) {
		snprintf(why, whylen,
			 "the protected resource metadata names another "
			 "resource (%.200s, not %s); refused",
			 json_is_string(v) ? json_string_value(v) : "none",
			 p->resource);
		r = -EPROTO;
		goto out;
	}
	v = json_array_get(json_object_get(prm, "authorization_servers"), 0);
	as = json_string_value(v);
	if (!as || !http_url_safe(as)) {
		snprintf(why, whylen,
			 "the protected resource metadata names %.200s as "
			 "its authorization server: it needs an https:// "
			 "URL",
			 as ? as : "none");
		r = -EPROTO;
		goto out;
	}
	/* RFC 8414 3.1 with path insertion, then OpenID Connect discovery
	 * both ways: the MCP spec's order. */
	if (well_known(as, "oauth-authorization-server", 0, buf, urls) < 0 ||
	    well_known(as, "openid-configuration", WK_APPENDED, buf + 1,
		       urls + 1) < 0) {
		snprintf(why, whylen, "%.200s is not a URL", as);
		r = -EPROTO;
		goto out;
	}
	r = get_first(p, urls, out, why, whylen);
	if (r < 0)
		goto out;
	v = json_object_get(*out, "issuer");
	if (!json_is_string(v) || strcmp(json_string_value(v), as)) {
		snprintf(why, whylen,
			 "the authorization server's metadata names another "
			 "issuer (%.200s, not %.200s); refused",
			 json_is_string(v) ? json_string_value(v) : "none", as);
		r = -EPROTO;
		goto out;
	}
	json_array_foreach (
		json_object_get(*out, "code_challenge_methods_supported"), i, v)
		if ((m = json_string_value(v)) && !strcmp(m, "S256"))
			s256 = true;
	if (!s256) {
		snprintf(why, whylen,
			 "the authorization server %.200s does not list S256 "
			 "in code_challenge_methods_supported, so it may not "
			 "support PKCE; an MCP client must refuse it",
			 as);
		r = -EPROTO;
	}
out:
	json_decref(prm);
	if (r < 0) {
		json_decref(*out);
		*out = NULL;
	}
	return r;
}

/* What the cache knows @p's document by. */
static const char *key_of(const struct provider_conf *p)
{
	return p->discover_resource ? p->resource : p->issuer;
}

static int fetch(const struct provider_conf *p, json_t **out, char *why,
		 size_t whylen)
{
	return p->discover_resource ? fetch_mcp(p, out, why, whylen)
				    : fetch_discovery(p, out, why, whylen);
}

/* @list's entry for @issuer, under discovery_lock. */
static struct discovered *find_in(struct discovered *list, const char *issuer)
{
	struct discovered *d;

	for (d = list; d; d = d->next)
		if (!strcmp(d->issuer, issuer))
			break;
	return d;
}

static struct discovered *find(const char *issuer)
{
	return find_in(discovery_cache, issuer);
}

/* Add @doc (a reference of its own) as @key's to @list, under
 * discovery_lock. 0 or -ENOMEM. */
static int add_to(struct discovered **list, const char *key, json_t *doc,
		  int64_t fetched_ms)
{
	struct discovered *d = calloc(1, sizeof(*d));

	if (d)
		d->issuer = strdup(key);
	if (!d || !d->issuer) {
		free(d);
		return -ENOMEM;
	}
	d->doc = json_incref(doc);
	d->fetched_ms = fetched_ms;
	d->next = *list;
	*list = d;
	return 0;
}

/* @p's saved document, when fetching it failed with @why: into *@out,
 * with when it was fetched in *@fetched_ms (monotonic), said in the log.
 * false when none was saved. */
static bool take_saved(const struct provider_conf *p, const char *why,
		       json_t **out, int64_t *fetched_ms)
{
	struct discovered *d;
	char when[32];
	int64_t age = 0;

	pthread_mutex_lock(&discovery_lock);
	d = find_in(saved_docs, key_of(p));
	if (d) {
		*out = json_incref(d->doc);
		age = time_real_ms() - d->fetched_ms;
		time_rfc3339(d->fetched_ms, when);
	}
	pthread_mutex_unlock(&discovery_lock);
	if (!d)
		return false;
	if (age < 0)
		age = 0;
	*fetched_ms = time_mono_ms() - age;
	log_warn("providers.%s.%s: %s could not be discovered (%s); using the "
		 "document saved when it was fetched at %s (%lld s ago)",
		 p->name, p->discover_resource ? "resource" : "issuer",
		 key_of(p), why, when, (long long)(age / 1000));
	return true;
}

/* The cache, sealed, to save_dir when something was fetched since it was
 * last saved. A failure is said and tried again at the next fetch. */
static void save_cache(void)
{
	int64_t now_real = time_real_ms(), now_mono = time_mono_ms();
	struct discovered *d;
	json_t *o;
	int r;

	pthread_mutex_lock(&save_lock);
	pthread_mutex_lock(&discovery_lock);
	if (!save_dir || !save_due) {
		pthread_mutex_unlock(&discovery_lock);
		pthread_mutex_unlock(&save_lock);
		return;
	}
	save_due = false;
	o = discovery_cache ? json_object() : NULL; /* nothing to save */
	if (!o) {
		pthread_mutex_unlock(&discovery_lock);
		pthread_mutex_unlock(&save_lock);
		return;
	}
	for (d = discovery_cache; o && d; d = d->next)
		if (json_object_set_new(
			    o, d->issuer,
			    json_pack("{s:O, s:I}", "doc", d->doc, "fetched_ms",
				      (json_int_t)(now_real -
						   (now_mono -
						    d->fetched_ms)))) < 0) {
			json_decref(o);
			o = NULL;
		}
	pthread_mutex_unlock(&discovery_lock);
	r = o ? sealed_write(save_dir, SAVED_NAME, &save_key, o) : -ENOMEM;
	json_decref(o);
	if (r < 0) {
		log_warn("%s/%s: the discovery documents could not be saved "
			 "(%s): a cold start while an issuer or MCP server is "
			 "down would not start",
			 save_dir, SAVED_NAME, strerror(-r));
		pthread_mutex_lock(&discovery_lock);
		save_due = true;
		pthread_mutex_unlock(&discovery_lock);
	}
	pthread_mutex_unlock(&save_lock);
}

int discovery_get(const struct provider_conf *p, json_t **out, char *why,
		  size_t whylen)
{
	int64_t fetched_ms = time_mono_ms();
	struct discovered *d;
	bool fetched;
	int r;

	pthread_mutex_lock(&discovery_lock);
	d = find(key_of(p));
	*out = d ? json_incref(d->doc) : NULL;
	pthread_mutex_unlock(&discovery_lock);
	if (*out)
		return 0;
	r = fetch(p, out, why, whylen);
	fetched = r == 0;
	if (!fetched && !take_saved(p, why, out, &fetched_ms))
		return r;
	pthread_mutex_lock(&discovery_lock);
	/* Not cached when out of memory: used once. */
	if (!find(key_of(p)) &&
	    add_to(&discovery_cache, key_of(p), *out, fetched_ms) == 0 &&
	    fetched)
		save_due = true;
	pthread_mutex_unlock(&discovery_lock);
	save_cache();
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

		if (!key_of(p))
			continue;
		pthread_mutex_lock(&discovery_lock);
		d = find(key_of(p));
		due = d &&
		      time_mono_ms() - d->fetched_ms >= p->discovery_max_age_ms;
		pthread_mutex_unlock(&discovery_lock);
		if (!due)
			continue;
		if (fetch(p, &doc, why, sizeof(why)) < 0) {
			log_warn("providers.%s.%s: the discovery document "
				 "could not be fetched again (%s); the one "
				 "fetched before stays in force",
				 p->name,
				 p->discover_resource ? "resource" : "issuer",
				 why);
			continue;
		}
		pthread_mutex_lock(&discovery_lock);
		old = d->doc; /* entries are never removed: still @d */
		d->doc = doc;
		d->fetched_ms = time_mono_ms();
		save_due = true;
		pthread_mutex_unlock(&discovery_lock);
		json_decref(old);
		log_info("providers.%s.%s: discovery document fetched "
			 "again",
			 p->name, p->discover_resource ? "resource" : "issuer");
		n++;
	}
	save_cache();
	return n;
}

json_t *discovery_export(void)
{
	json_t *o = json_object(), *e;
	struct discovered *d;
	int64_t now = time_mono_ms();

	pthread_mutex_lock(&discovery_lock);
	for (d = discovery_cache; o && d; d = d->next) {
		e = json_pack("{s:O, s:I}", "doc", d->doc, "age_ms",
			      (json_int_t)(now - d->fetched_ms));
		if (!e || json_object_set_new(o, d->issuer, e) < 0) {
			json_decref(o);
			o = NULL;
		}
	}
	pthread_mutex_unlock(&discovery_lock);
	return o;
}

void discovery_import(const json_t *o)
{
	const char *key;
	json_t *e, *doc;
	json_int_t age;

	json_object_foreach ((json_t *)o, key, e) {
		doc = json_object_get(e, "doc");
		age = json_integer_value(json_object_get(e, "age_ms"));
		if (!json_is_object(doc) || age < 0)
			continue;
		pthread_mutex_lock(&discovery_lock);
		if (!find(key))
			(void)add_to(&discovery_cache, key, doc,
				     time_mono_ms() - age);
		pthread_mutex_unlock(&discovery_lock);
	}
}

int discovery_read_saved(const char *dir, const uint8_t *master)
{
	json_t *o = NULL, *e, *doc;
	struct sealed_key k;
	const char *name;
	json_int_t at;
	int r;

	r = sealed_key_derive(master, "discovery", &k);
	if (r == 0)
		r = sealed_read(dir, SAVED_NAME, &k, &o);
	sealed_key_clear(&k);
	if (r == -ENOENT)
		return 0; /* nothing saved yet */
	if (r < 0) {
		log_warn("%s/%s: %s: the saved discovery documents are not "
			 "used (a start with every issuer and MCP server "
			 "reachable saves them again)",
			 dir, SAVED_NAME, sealed_read_error(r));
		return r;
	}
	pthread_mutex_lock(&discovery_lock);
	json_object_foreach (o, name, e) {
		doc = json_object_get(e, "doc");
		at = json_integer_value(json_object_get(e, "fetched_ms"));
		if (json_is_object(doc) && at > 0 && !find_in(saved_docs, name))
			(void)add_to(&saved_docs, name, doc, at);
	}
	pthread_mutex_unlock(&discovery_lock);
	json_decref(o);
	return 0;
}

int discovery_save_to(const char *dir, const uint8_t *master)
{
	char *copy = dir ? strdup(dir) : NULL;
	bool saving;
	int r = 0;

	if (dir && !copy)
		return -ENOMEM;
	pthread_mutex_lock(&save_lock);
	free(save_dir);
	save_dir = copy;
	if (master)
		r = sealed_key_derive(master, "discovery", &save_key);
	else
		sealed_key_clear(&save_key);
	if (r < 0) {
		free(save_dir);
		save_dir = NULL;
	}
	saving = save_dir != NULL;
	pthread_mutex_unlock(&save_lock);
	pthread_mutex_lock(&discovery_lock);
	save_due = saving; /* what this process starts on */
	pthread_mutex_unlock(&discovery_lock);
	save_cache();
	return r;
}
