/*
 * confparse: the config parser's helpers, shared by config.c (the file,
 * tenants, readers, the store) and provider.c (providers). Every helper
 * reports a problem as "FILE: json.path: what is wrong" and returns
 * -EINVAL. Not for use outside the config parser.
 */
#ifndef CREDFS_CONFPARSE_H
#define CREDFS_CONFPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct provider_conf;
struct timing;

#define MAX_SECRET_BYTES 4096
#define MAX_PATH_TEXT 512

#define T_OBJECT (1u << JSON_OBJECT)
#define T_ARRAY (1u << JSON_ARRAY)
#define T_STRING (1u << JSON_STRING)
#define T_INTEGER (1u << JSON_INTEGER)
#define T_NUMBER ((1u << JSON_INTEGER) | (1u << JSON_REAL))
#define T_BOOL ((1u << JSON_TRUE) | (1u << JSON_FALSE))

#define TIMING_KEYS                                                       \
	"refresh_lead_s", "refresh_fraction", "min_ttl_s", "open_wait_s", \
		"clock_skew_s"

struct ctx {
	char *err;
	size_t errlen;
	const char *file;
};

int conf_fail(struct ctx *c, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void conf_join(char out[MAX_PATH_TEXT], const char *path, const char *key);
const char *conf_json_kind(const json_t *v);
int conf_check_keys(struct ctx *c, const json_t *obj, const char *path,
		    const char *const *allowed);
int conf_check_type(struct ctx *c, const json_t *v, const char *path,
		    unsigned want, const char *what);
int conf_get_value(struct ctx *c, const json_t *obj, const char *path,
		   const char *key, bool required, unsigned want,
		   const char *what, json_t **out);
int conf_get_object(struct ctx *c, const json_t *obj, const char *path,
		    const char *key, bool required, json_t **out);
int conf_get_string(struct ctx *c, const json_t *obj, const char *path,
		    const char *key, bool required, char **out);
int conf_get_number(struct ctx *c, const json_t *obj, const char *path,
		    const char *key, double min, double max, double *out);
int conf_get_seconds(struct ctx *c, const json_t *obj, const char *path,
		     const char *key, double min, double max, int64_t *out_ms);
int conf_get_bool(struct ctx *c, const json_t *obj, const char *path,
		  const char *key, bool *out);
/* An optional array into *@arr, with *@out a zeroed array of as many
 * @size-byte elements. */
int conf_get_array(struct ctx *c, const json_t *obj, const char *path,
		   const char *key, size_t size, json_t **arr, void **out);
int conf_get_strings(struct ctx *c, const json_t *obj, const char *path,
		     const char *key, bool (*valid)(const char *),
		     const char *what, char ***out, size_t *n);
/* A file name, made absolute against the config file's directory. */
int conf_get_path(struct ctx *c, const json_t *obj, const char *path,
		  const char *key, bool required, char **out);
int conf_parse_timing(struct ctx *c, const json_t *obj, const char *path,
		      struct timing *t);
/* A tenant or provider: @name fit for a directory (@what names the kind
 * in the message), @obj an object; a copy of @name in *@copy. */
int conf_named_object(struct ctx *c, const char *path, const char *what,
		      const char *name, const json_t *obj, char **copy);
/* RFC 6749 section 3.3 scope-token. */
bool conf_scope_valid(const char *s);
/* 127.0.0.0/8, [::1] or localhost. */
bool conf_host_is_loopback(const char *host);

/* provider.c: one provider object. 0 or -EINVAL/-ENOMEM. */
int provider_parse(struct ctx *c, const char *name, const json_t *obj,
		   struct provider_conf *p);
/* Read @p's client secret or private key, and with an issuer or an MCP
 * resource, discover its endpoints (discovery_get(): the process's
 * cache, else the network). 0 or -errno with @err. */
int provider_load_secrets(struct provider_conf *p, const char *cfg_path,
			  char *err, size_t errlen);
/* Free what @p holds, wiping secrets. */
void provider_free(struct provider_conf *p);

/* preset.c: @obj (provider @path) with its "preset"'s keys filled in where
 * @obj sets none, a new reference in *@out (@obj itself without a
 * preset). Checks the preset's name, URL variable and required keys. 0 or
 * -EINVAL. */
int preset_apply(struct ctx *c, const char *path, const json_t *obj,
		 json_t **out);

#endif
