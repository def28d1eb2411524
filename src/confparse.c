/*
 * confparse: the config parser's helpers (see confparse.h): typed getters
 * that name the JSON path of what is wrong, key and type checks, URL and
 * name rules shared by config.c and provider.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "config.h"
#include "confparse.h"
#include "util.h"

int conf_fail(struct ctx *c, const char *path, const char *fmt, ...)
{
	char what[256], safe[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	/* Values quoted in messages may come from a discovery document. */
	text_escape_controls(what, safe, sizeof(safe));
	snprintf(c->err, c->errlen, "%s: %s: %s", c->file, path, safe);
	return -EINVAL;
}

void conf_join(char out[MAX_PATH_TEXT], const char *path, const char *key)
{
	if (path[0])
		snprintf(out, MAX_PATH_TEXT, "%s.%s", path, key);
	else
		snprintf(out, MAX_PATH_TEXT, "%s", key);
}

const char *conf_json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	default: return "null";
	}
}

/* Refuse any key of @obj not in the NULL-terminated @allowed list. */
int conf_check_keys(struct ctx *c, const json_t *obj, const char *path,
		    const char *const *allowed)
{
	char sub[MAX_PATH_TEXT];
	const char *key;
	json_t *v;

	json_object_foreach ((json_t *)obj, key, v) {
		const char *const *a;

		for (a = allowed; *a; a++)
			if (!strcmp(*a, key))
				break;
		if (*a)
			continue;
		conf_join(sub, path, key);
		if (!strcmp(key, "client_secret"))
			return conf_fail(c, sub,
					 "secrets do not belong in the "
					 "config; put it in a file named by "
					 "client_secret_file");
		return conf_fail(c, sub, "unknown key");
	}
	return 0;
}

/* @v is of one of the types in @want, or a message names @path. */
int conf_check_type(struct ctx *c, const json_t *v, const char *path,
		    unsigned want, const char *what)
{
	if ((1u << json_typeof(v)) & want)
		return 0;
	return conf_fail(c, path, "expected %s, got %s", what,
			 conf_json_kind(v));
}

/*
 * @obj's member @key into *@out (NULL when absent and not @required),
 * checked to be of a type in @want (@what names it in the message).
 */
int conf_get_value(struct ctx *c, const json_t *obj, const char *path,
		   const char *key, bool required, unsigned want,
		   const char *what, json_t **out)
{
	char sub[MAX_PATH_TEXT];
	json_t *v = json_object_get(obj, key);

	conf_join(sub, path, key);
	*out = NULL;
	if (!v)
		return required ? conf_fail(c, sub, "missing") : 0;
	if (conf_check_type(c, v, sub, want, what) < 0)
		return -EINVAL;
	*out = v;
	return 0;
}

int conf_get_object(struct ctx *c, const json_t *obj, const char *path,
		    const char *key, bool required, json_t **out)
{
	return conf_get_value(c, obj, path, key, required, T_OBJECT,
			      "an object", out);
}

int conf_get_string(struct ctx *c, const json_t *obj, const char *path,
		    const char *key, bool required, char **out)
{
	char sub[MAX_PATH_TEXT];
	json_t *v;
	int r;

	r = conf_get_value(c, obj, path, key, required, T_STRING, "a string",
			   &v);
	if (r < 0 || !v)
		return r;
	conf_join(sub, path, key);
	if (json_string_length(v) == 0)
		return conf_fail(c, sub, "must not be empty");
	if (strlen(json_string_value(v)) != json_string_length(v))
		return conf_fail(c, sub, "contains a NUL byte");
	free(*out);
	*out = strdup(json_string_value(v));
	return *out ? 0 : -ENOMEM;
}

int conf_get_number(struct ctx *c, const json_t *obj, const char *path,
		    const char *key, double min, double max, double *out)
{
	char sub[MAX_PATH_TEXT];
	json_t *v;
	double d;
	int r;

	r = conf_get_value(c, obj, path, key, false, T_NUMBER, "a number", &v);
	if (r < 0 || !v)
		return r;
	d = json_number_value(v);
	conf_join(sub, path, key);
	if (!isfinite(d) || d < min || d > max)
		return conf_fail(c, sub, "must be between %g and %g", min, max);
	*out = d;
	return 0;
}

/* A duration in seconds (integer or fraction), stored in milliseconds. */
int conf_get_seconds(struct ctx *c, const json_t *obj, const char *path,
		     const char *key, double min, double max, int64_t *ms)
{
	double d = (double)*ms / 1000.0;
	int r = conf_get_number(c, obj, path, key, min, max, &d);

	if (r == 0)
		*ms = (int64_t)llround(d * 1000.0);
	return r;
}

int conf_get_bool(struct ctx *c, const json_t *obj, const char *path,
		  const char *key, bool *out)
{
	json_t *v;
	int r;

	r = conf_get_value(c, obj, path, key, false, T_BOOL, "true or false",
			   &v);
	if (r == 0 && v)
		*out = json_is_true(v);
	return r;
}

/*
 * An optional array: *@arr (NULL when absent), and *@out allocated for
 * its elements of @size bytes each, plus one.
 */
int conf_get_array(struct ctx *c, const json_t *obj, const char *path,
		   const char *key, size_t size, json_t **arr, void **out)
{
	int r = conf_get_value(c, obj, path, key, false, T_ARRAY, "an array",
			       arr);

	if (r < 0 || !*arr)
		return r;
	*out = calloc(json_array_size(*arr) + 1, size);
	return *out ? 0 : -ENOMEM;
}

/* An optional array of strings, each accepted by @valid (@what names a
 * valid one in the message). */
int conf_get_strings(struct ctx *c, const json_t *obj, const char *path,
		     const char *key, bool (*valid)(const char *),
		     const char *what, char ***out, size_t *n)
{
	char sub[MAX_PATH_TEXT];
	json_t *arr, *v;
	size_t i;
	int r;

	r = conf_get_array(c, obj, path, key, sizeof(char *), &arr,
			   (void **)out);
	if (r < 0 || !arr)
		return r;
	json_array_foreach (arr, i, v) {
		snprintf(sub, sizeof(sub), "%s.%s[%zu]", path, key, i);
		if (conf_check_type(c, v, sub, T_STRING, "a string") < 0)
			return -EINVAL;
		if (!valid(json_string_value(v)))
			return conf_fail(c, sub, "\"%s\" is not %s",
					 json_string_value(v), what);
		(*out)[i] = strdup(json_string_value(v));
		if (!(*out)[i])
			return -ENOMEM;
		*n = i + 1;
	}
	return 0;
}

int conf_named_object(struct ctx *c, const char *path, const char *what,
		      const char *name, const json_t *obj, char **copy)
{
	if (!util_name_valid(name))
		return conf_fail(
			c, path,
			"%s names must match [a-z0-9][a-z0-9._-]{0,63}", what);
	if (!json_is_object(obj))
		return conf_fail(c, path, "expected an object, got %s",
				 conf_json_kind(obj));
	*copy = strdup(name);
	return *copy ? 0 : -ENOMEM;
}

/* RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ) */
bool conf_scope_valid(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch < 0x21 || ch > 0x7e || ch == '"' || ch == '\\')
			return false;
	}
	return true;
}

bool conf_host_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;
	char buf[64];
	size_t n = strlen(host);

	if (!strcasecmp(host, "localhost"))
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (n > 2 && n < sizeof(buf) && host[0] == '[' && host[n - 1] == ']') {
		memcpy(buf, host + 1, n - 2);
		buf[n - 2] = '\0';
		return inet_pton(AF_INET6, buf, &a6) == 1 &&
		       IN6_IS_ADDR_LOOPBACK(&a6);
	}
	return false;
}

int conf_parse_timing(struct ctx *c, const json_t *obj, const char *path,
		      struct timing *t)
{
	int r;

	r = conf_get_seconds(c, obj, path, "refresh_lead_s", 0, 86400,
			     &t->refresh_lead_ms);
	if (r == 0)
		r = conf_get_number(c, obj, path, "refresh_fraction", 0.0, 0.95,
				    &t->refresh_fraction);
	if (r == 0)
		r = conf_get_seconds(c, obj, path, "min_ttl_s", 0, 86400,
				     &t->min_ttl_ms);
	if (r == 0)
		r = conf_get_seconds(c, obj, path, "open_wait_s", 0, 300,
				     &t->open_wait_ms);
	if (r == 0)
		r = conf_get_seconds(c, obj, path, "clock_skew_s", 0, 600,
				     &t->clock_skew_ms);
	return r;
}

/* A file name: a string member, made absolute against the config file's
 * directory (so it means the same after the daemon's chdir("/")). */
int conf_get_path(struct ctx *c, const json_t *obj, const char *path,
		  const char *key, bool required, char **out)
{
	const char *slash = strrchr(c->file, '/');
	char *p = NULL;
	int r;

	r = conf_get_string(c, obj, path, key, required, &p);
	if (r < 0 || !p)
		return r;
	free(*out);
	if (p[0] == '/' || !slash)
		*out = strdup(p);
	else if (asprintf(out, "%.*s/%s", (int)(slash - c->file), c->file, p) <
		 0)
		*out = NULL;
	free(p);
	return *out ? 0 : -ENOMEM;
}
