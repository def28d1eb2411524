/*
 * render: the text of every file except access_token. Renders from a
 * cred_view (which never holds the token), so nothing here can leak one.
 */
#ifndef CREDFS_RENDER_H
#define CREDFS_RENDER_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

struct buf;
struct cred;
struct cred_table;

/* The files of a credential directory, in listing order. */
enum cred_file {
	CF_DIR = 0,
	CF_ACCESS_TOKEN,
	CF_TOKEN_TYPE,
	CF_EXPIRES_AT,
	CF_SCOPES,
	CF_STATUS,
	CF_STATUS_JSON,
	CF_FIELD0, /* the provider's response_fields, as many as it names */
	CF_FIELD_LAST = CF_FIELD0 + MAX_RESPONSE_FIELDS - 1,
	CF_COUNT,
};

/* Name of @f in @c's directory ("access_token", ..., a response field's
 * name); NULL for CF_DIR and for a field @c's provider does not name.
 * @c may be NULL for the fixed files. */
const char *render_file_name(const struct cred *c, enum cred_file f);

/* The content of file @f (not CF_ACCESS_TOKEN) of @c at @now_ms. 0/-errno. */
int render_cred_file(struct cred_table *t, enum cred_file f, struct cred *c,
		     int64_t now_ms, struct buf *out);

/* Which credentials, by slot, a caller may see (fs_view_key()); a NULL
 * one shows all. */
struct visible {
	uint32_t n; /* slots it says anything of; beyond: not shown */
	bool on[];
};

/* A view of @n slots, none shown yet; NULL without memory. */
struct visible *visible_new(uint32_t n);
bool visible_shows(const struct visible *v, uint32_t slot);

/* The root status table: one line per credential flagged in @visible
 * (by credential index; NULL: all). 0 or -errno. */
int render_root_status(struct cred_table *t, const struct visible *visible,
		       int64_t now_ms, struct buf *out);

/* Prometheus text exposition format (version 0.0.4), for the
 * credentials flagged in @visible (NULL: all). 0 or -errno. */
int render_metrics(struct cred_table *t, const struct visible *visible,
		   int64_t now_ms, struct buf *out);

#endif
