/*
 * render: status, status.json, expires_at, token_type, scopes, the root
 * status table and metrics. Pure formatting of cred_view snapshots.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"
#include "audit.h"
#include "cred.h"
#include "render.h"
#include "util.h"

static const char *const file_names[CF_COUNT] = {
	[CF_ACCESS_TOKEN] = "access_token",
	[CF_TOKEN_TYPE] = "token_type",
	[CF_EXPIRES_AT] = "expires_at",
	[CF_SCOPES] = "scopes",
	[CF_STATUS] = "status",
	[CF_STATUS_JSON] = "status.json",
};

const char *render_file_name(const struct cred *c, enum cred_file f)
{
	const struct provider_conf *p = c ? cred_conf(c)->provider : NULL;

	if (f >= CF_FIELD0 && f <= CF_FIELD_LAST)
		return p && (size_t)(f - CF_FIELD0) < p->n_response_fields
			       ? p->response_fields[f - CF_FIELD0]
			       : NULL;
	return f < CF_COUNT ? file_names[f] : NULL;
}

static const char *health(const struct cred_view *v)
{
	if (v->persist_error[0])
		return "store_failing";
	return v->consecutive_failures ? "failing" : "ok";
}

static const char *grant_name(const struct cred *c)
{
	return cred_uses_store(c) ? "refresh_token" : "client_credentials";
}

static int64_t secs_until(int64_t at_ms, int64_t now_ms)
{
	int64_t d = at_ms - now_ms;

	/* Round toward the safe side: a token with 0.9 s left has 0. */
	return d > 0 ? d / 1000 : -((-d + 999) / 1000);
}

/* Why a valid token is not served, or "-". */
static const char *refused(const struct cred *c, const struct cred_view *v)
{
	if (cred_conf(c)->strict_scopes && v->over)
		return "granted scopes wider than requested (strict_scopes)";
	return "-";
}

/* "ok", or "failing: N failed writes, last: ..." */
static void audit_health(struct cred_table *t, char *out, size_t n)
{
	char last[128] = "";
	uint64_t f =
		t->audit ? audit_failures(t->audit, last, sizeof(last)) : 0;

	if (!f)
		snprintf(out, n, "ok");
	else
		snprintf(out, n, "failing: %" PRIu64 " failed writes, last: %s",
			 f, last);
}

/* Whether the refresh token stops working within RT_WARN_MS: time to
 * connect the account again. */
#define RT_WARN_MS (7LL * 86400 * 1000)

static bool rt_expiring(const struct cred_view *v, int64_t now)
{
	return v->rt_expires_ms && v->rt_expires_ms - now < RT_WARN_MS;
}

/* What status says of a lifetime the provider gave under min_lifetime_s:
 * "-" when none was raised. */
static void floored_text(const struct cred *c, const struct cred_view *v,
			 char *out, size_t n)
{
	if (!v->has_token || !v->floored_from_ms)
		snprintf(out, n, "-");
	else
		snprintf(out, n,
			 "the provider said %.3g s, under min_lifetime_s: "
			 "served and refreshed as %.3g s",
			 v->floored_from_ms / 1000.0,
			 cred_conf(c)->provider->min_lifetime_ms / 1000.0);
}

/* What a status field is computed from. */
struct status_ctx {
	struct cred_table *t;
	struct cred *c;
	const struct cred_view *v;
	int64_t now;
};

static json_t *json_time(int64_t ms)
{
	char t[32];

	if (ms <= 0)
		return json_null();
	time_rfc3339(ms, t);
	return json_string(t);
}

static json_t *json_lines(const char *s, bool split_space)
{
	json_t *arr = json_array();
	const char sep = split_space ? ' ' : '\n';

	while (arr && s && *s) {
		const char *e = strchr(s, sep);
		size_t n = e ? (size_t)(e - s) : strlen(s);

		if (n)
			json_array_append_new(arr, json_stringn(s, n));
		s += n + (e ? 1 : 0);
	}
	return arr;
}

static json_t *json_text(const char *s)
{
	return s && s[0] ? json_string(s) : json_null();
}

#define X const struct status_ctx *x
#define TOKEN(e) (x->v->has_token ? (e) : json_null())
static json_t *f_tenant(X)
{
	return json_string(cred_conf(x->c)->tenant);
}
static json_t *f_provider(X)
{
	return json_string(cred_conf(x->c)->provider->name);
}
static json_t *f_grant(X)
{
	return json_string(grant_name(x->c));
}
static json_t *f_state(X)
{
	return json_string(cred_state_name(x->v->state));
}
static json_t *f_health(X)
{
	return json_string(health(x->v));
}
static json_t *f_token_type(X)
{
	return TOKEN(json_string(x->v->token_type));
}
static json_t *f_fingerprint(X)
{
	return TOKEN(json_string(x->v->fp));
}
static json_t *f_expires_at(X)
{
	return TOKEN(json_time(x->v->expires_ms));
}
static json_t *f_expires_in(X)
{
	return TOKEN(json_integer(secs_until(x->v->expires_ms, x->now)));
}
static json_t *f_lifetime_floored(X)
{
	char text[128];

	floored_text(x->c, x->v, text, sizeof(text));
	return strcmp(text, "-") ? json_string(text) : json_null();
}
static json_t *f_last_refresh(X)
{
	return json_time(x->v->last_refresh_ms);
}
static json_t *f_next_refresh(X)
{
	return json_time(x->v->next_refresh_ms);
}
static json_t *f_next_refresh_in(X)
{
	return x->v->next_refresh_ms
		       ? json_integer(secs_until(x->v->next_refresh_ms, x->now))
		       : json_null();
}
static json_t *f_refresh_count(X)
{
	return json_integer((json_int_t)x->v->refresh_count);
}
static json_t *f_consecutive_failures(X)
{
	return json_integer(x->v->consecutive_failures);
}
static json_t *f_failure_count(X)
{
	return json_integer((json_int_t)x->v->failure_count);
}
static json_t *f_last_error(X)
{
	return json_text(x->v->last_error);
}
static json_t *f_last_error_at(X)
{
	return json_time(x->v->last_error_ms);
}
static json_t *f_reads(X)
{
	return json_integer((json_int_t)x->v->reads);
}
static json_t *f_scopes_requested(X)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < cred_conf(x->c)->n_scopes; i++)
		json_array_append_new(a,
				      json_string(cred_conf(x->c)->scopes[i]));
	return a;
}
static json_t *f_scopes_granted(X)
{
	return json_lines(x->v->scopes, false);
}
static json_t *f_over_privileged(X)
{
	return x->v->over ? json_lines(x->v->over, true) : json_null();
}
static json_t *f_strict_scopes(X)
{
	return json_boolean(cred_conf(x->c)->strict_scopes);
}
static json_t *f_refused(X)
{
	const char *why = refused(x->c, x->v);

	return strcmp(why, "-") ? json_string(why) : json_null();
}
static json_t *f_generation(X)
{
	return cred_uses_store(x->c)
		       ? json_integer((json_int_t)x->v->record_gen)
		       : json_null();
}
static json_t *f_persist_error(X)
{
	return json_text(x->v->persist_error);
}
static json_t *f_persist_error_at(X)
{
	return json_time(x->v->persist_error_ms);
}
static json_t *f_persist_failures(X)
{
	return json_integer((json_int_t)x->v->persist_failures);
}
static json_t *f_audit(X)
{
	char text[192];

	audit_health(x->t, text, sizeof(text));
	return json_string(text);
}
static json_t *f_rt_expires_at(X)
{
	return json_time(x->v->rt_expires_ms);
}
static json_t *f_rt_expiring(X)
{
	return json_boolean(rt_expiring(x->v, x->now));
}
static json_t *f_rt_rotates(X)
{
	const struct provider_conf *p = cred_conf(x->c)->provider;

	return p->rotates_set ? json_boolean(p->rotates) : json_null();
}
static json_t *f_resource(X)
{
	const char *r = cred_conf(x->c)->provider->resource;

	return r ? json_string(r) : json_null();
}
static json_t *f_audience(X)
{
	char text[160];

	if (!cred_conf(x->c)->provider->resource || !x->v->has_token)
		return json_null();
	if (x->v->aud_ok < 0)
		return json_string("unknown (the token is not a JWT that "
				   "names its audience)");
	if (x->v->aud_ok)
		return json_string("resource");
	snprintf(text, sizeof(text),
		 "%s: the authorization server ignored resource",
		 x->v->aud_other);
	return json_string(text);
}
#undef TOKEN
#undef X

/*
 * The fields of status and status.json: one list, in order, for both
 * renderings. Text shows null as @null (default "-"), booleans as @yes and
 * @no (default "yes"/"no"), and arrays space-separated.
 */
static const struct status_field {
	const char *name;
	json_t *(*value)(const struct status_ctx *x);
	const char *null, *yes, *no;
} status_fields[] = {
	{.name = "tenant", .value = f_tenant},
	{.name = "provider", .value = f_provider},
	{.name = "grant", .value = f_grant},
	{.name = "state", .value = f_state},
	{.name = "health", .value = f_health},
	{.name = "token_type", .value = f_token_type},
	{.name = "fingerprint", .value = f_fingerprint},
	{.name = "expires_at", .value = f_expires_at},
	{.name = "expires_in", .value = f_expires_in},
	{.name = "lifetime_floored", .value = f_lifetime_floored},
	{.name = "last_refresh", .value = f_last_refresh, .null = "never"},
	{.name = "next_refresh", .value = f_next_refresh, .null = "never"},
	{.name = "next_refresh_in", .value = f_next_refresh_in},
	{.name = "refresh_count", .value = f_refresh_count},
	{.name = "consecutive_failures", .value = f_consecutive_failures},
	{.name = "failure_count", .value = f_failure_count},
	{.name = "last_error", .value = f_last_error},
	{.name = "last_error_at", .value = f_last_error_at, .null = "never"},
	{.name = "reads", .value = f_reads},
	{.name = "scopes_requested", .value = f_scopes_requested},
	{.name = "scopes_granted", .value = f_scopes_granted},
	{.name = "over_privileged", .value = f_over_privileged},
	{.name = "strict_scopes",
	 .value = f_strict_scopes,
	 .yes = "true",
	 .no = "false"},
	{.name = "refused", .value = f_refused},
	{.name = "generation", .value = f_generation},
	{.name = "persist_error", .value = f_persist_error},
	{.name = "persist_error_at",
	 .value = f_persist_error_at,
	 .null = "never"},
	{.name = "persist_failures", .value = f_persist_failures},
	{.name = "audit", .value = f_audit},
	{.name = "refresh_token_expires_at",
	 .value = f_rt_expires_at,
	 .null = "unknown"},
	{.name = "refresh_token_expiring",
	 .value = f_rt_expiring,
	 .yes = "yes: reconnect (credfsctl connect) before then"},
	{.name = "refresh_token_rotates",
	 .value = f_rt_rotates,
	 .null = "unknown"},
	{.name = "resource", .value = f_resource},
	{.name = "audience", .value = f_audience},
};

/* One field's value as status text: "key: value\n". */
static int field_text(const struct status_field *f, json_t *v, struct buf *out)
{
	size_t i, n;
	int r;

	switch (json_typeof(v)) {
	case JSON_STRING:
		return buf_printf(out, "%s: %s\n", f->name,
				  json_string_value(v));
	case JSON_INTEGER:
		return buf_printf(out, "%s: %" JSON_INTEGER_FORMAT "\n",
				  f->name, json_integer_value(v));
	case JSON_TRUE:
	case JSON_FALSE:
		return buf_printf(out, "%s: %s\n", f->name,
				  json_is_true(v) ? (f->yes ? f->yes : "yes")
						  : (f->no ? f->no : "no"));
	case JSON_ARRAY:
		n = json_array_size(v);
		if (!n)
			break;
		r = buf_printf(out, "%s:", f->name);
		for (i = 0; r == 0 && i < n; i++)
			r = buf_printf(out, " %s",
				       json_string_value(json_array_get(v, i)));
		return r ? r : buf_printf(out, "\n");
	default: break;
	}
	return buf_printf(out, "%s: %s\n", f->name, f->null ? f->null : "-");
}

/* status (text, @json false) or status.json of @c. */
static int render_status(struct cred_table *t, struct cred *c,
			 const struct cred_view *v, int64_t now, bool json,
			 struct buf *out)
{
	const struct status_ctx x = {t, c, v, now};
	json_t *o = json ? json_object() : NULL;
	char *text;
	size_t i;
	int r = json && !o ? -ENOMEM : 0;

	for (i = 0; r == 0 && i < ARRAY_SIZE(status_fields); i++) {
		json_t *val = status_fields[i].value(&x);

		if (!val)
			r = -ENOMEM;
		else if (json)
			r = json_object_set_new(o, status_fields[i].name, val)
				    ? -ENOMEM
				    : 0;
		else
			r = field_text(&status_fields[i], val, out);
		if (!json)
			json_decref(val);
	}
	if (r == 0 && json) {
		text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		r = text ? buf_printf(out, "%s\n", text) : -ENOMEM;
		free(text);
	}
	json_decref(o);
	return r;
}

int render_cred_file(struct cred_table *t, enum cred_file f, struct cred *c,
		     int64_t now_ms, struct buf *out)
{
	struct cred_view v;
	char when[32];
	int r = 0;

	cred_view(c, now_ms, &v);
	switch (f) {
	case CF_TOKEN_TYPE:
		if (v.has_token)
			r = buf_printf(out, "%s\n", v.token_type);
		break;
	case CF_EXPIRES_AT:
		if (v.has_token) {
			time_rfc3339(v.expires_ms, when);
			r = buf_printf(out, "%s\n", when);
		}
		break;
	case CF_SCOPES:
		if (v.scopes)
			r = buf_append(out, v.scopes, strlen(v.scopes));
		break;
	case CF_STATUS: r = render_status(t, c, &v, now_ms, false, out); break;
	case CF_STATUS_JSON:
		r = render_status(t, c, &v, now_ms, true, out);
		break;
	default:
		if (f < CF_FIELD0 || f > CF_FIELD_LAST) {
			r = -EINVAL;
		} else if (v.fields[f - CF_FIELD0]) {
			r = buf_printf(out, "%s\n", v.fields[f - CF_FIELD0]);
		}
	}
	cred_view_clear(&v);
	return r;
}

/* last_error as one token of the line: "-" or the text in double quotes
 * (inner double quotes become single ones). A credential that is valid
 * and healthy again shows "-": the past error stays in its status file,
 * with last_error_at. */
static void quoted_error(const struct cred_view *v, char *out, size_t n)
{
	size_t i;

	if (!v->last_error[0] ||
	    ((v->state == CRED_VALID || v->state == CRED_REFRESHING) &&
	     !strcmp(health(v), "ok"))) {
		snprintf(out, n, "-");
		return;
	}
	snprintf(out, n, "\"%s\"", v->last_error);
	for (i = 1; out[i] && out[i + 1]; i++)
		if (out[i] == '"')
			out[i] = '\'';
}

struct visible *visible_new(uint32_t n)
{
	struct visible *v = calloc(1, sizeof(*v) + n + 1);

	if (v)
		v->n = n;
	return v;
}

bool visible_shows(const struct visible *v, uint32_t slot)
{
	return !v || (slot < v->n && v->on[slot]);
}

/* Served, and nothing failing: what a listing past per_credential_max
 * leaves out. */
static bool in_good_health(const struct cred_view *v)
{
	return (v->state == CRED_VALID || v->state == CRED_REFRESHING) &&
	       !strcmp(health(v), "ok");
}

/* @listed[i]: whether @visible shows cfg->creds[i]. How many it shows. */
static size_t mark_shown(struct cred_table *t, const struct config *cfg,
			 const struct visible *visible, bool *listed)
{
	size_t i, shown = 0;

	for (i = 0; i < cfg->n_creds; i++) {
		listed[i] = visible_shows(
			visible, cred_index(cred_of(t, &cfg->creds[i])));
		shown += listed[i];
	}
	return shown;
}

/* Past the cap: of those @listed, keep only the ones not in good health
 * (@bad[i], or a view of each when @bad is NULL), up to the cap. How
 * many are kept. */
static size_t keep_unhealthy(struct cred_table *t, const struct config *cfg,
			     int64_t now_ms, bool *listed, const bool *bad)
{
	size_t i, k = 0;
	struct cred_view v;

	for (i = 0; i < cfg->n_creds; i++) {
		if (!listed[i])
			continue;
		listed[i] = false;
		if (k == cfg->per_credential_max)
			continue;
		if (bad) {
			listed[i] = bad[i];
		} else {
			cred_view(cred_of(t, &cfg->creds[i]), now_ms, &v);
			listed[i] = !in_good_health(&v);
			cred_view_clear(&v);
		}
		k += listed[i];
	}
	return k;
}

/*
 * Which of @cfg's credentials a root file lists (@listed, by position):
 * every one @visible shows while they are at most per_credential_max;
 * past it, those not in good health, up to that many. *@n_shown is how
 * many are shown; returns how many of those are not listed.
 */
static size_t choose_listed(struct cred_table *t, const struct config *cfg,
			    const struct visible *visible, int64_t now_ms,
			    bool *listed, size_t *n_shown)
{
	size_t shown = mark_shown(t, cfg, visible, listed);

	*n_shown = shown;
	if (shown <= cfg->per_credential_max)
		return 0;
	return shown - keep_unhealthy(t, cfg, now_ms, listed, NULL);
}

int render_root_status(struct cred_table *t, const struct visible *visible,
		       int64_t now_ms, struct buf *out)
{
	const struct config *cfg = cred_table_config(t);
	char err[OAUTH_ERROR_TEXT + 2], exp[24];
	bool *listed = calloc(cfg->n_creds + 1, sizeof(*listed));
	size_t i, shown, unlisted;
	int r = 0;

	if (!listed)
		return -ENOMEM;
	unlisted = choose_listed(t, cfg, visible, now_ms, listed, &shown);
	for (i = 0; i < cfg->n_creds && r == 0; i++) {
		struct cred *c = cred_of(t, &cfg->creds[i]);
		struct cred_view v;

		if (!listed[i])
			continue;
		cred_view(c, now_ms, &v);
		quoted_error(&v, err, sizeof(err));
		if (v.has_token)
			snprintf(exp, sizeof(exp), "%" PRId64,
				 secs_until(v.expires_ms, now_ms));
		else
			snprintf(exp, sizeof(exp), "-");
		r = buf_printf(out,
			       "%s/%s state=%s health=%s expires_in=%s"
			       " next_refresh_in=%" PRId64 " refreshes=%" PRIu64
			       " failures=%u last_error=%s\n",
			       cred_conf(c)->tenant,
			       cred_conf(c)->provider->name,
			       cred_state_name(v.state), health(&v), exp,
			       v.next_refresh_ms
				       ? secs_until(v.next_refresh_ms, now_ms)
				       : 0,
			       v.refresh_count, v.consecutive_failures, err);
		cred_view_clear(&v);
	}
	if (r == 0 && unlisted)
		r = buf_printf(out,
			       "# %zu of %zu credentials not listed: valid or "
			       "refreshing, nothing failing (past "
			       "per_credential_max %zu only the others are); "
			       "each has tenants/TENANT/PROVIDER/status\n",
			       unlisted, shown, cfg->per_credential_max);
	free(listed);
	return r;
}

typedef int64_t (*series_fn)(const struct cred_view *v, int64_t now_ms);

static int64_t m_expires_in(const struct cred_view *v, int64_t now)
{
	return v->has_token ? secs_until(v->expires_ms, now) : 0;
}

static int64_t m_success(const struct cred_view *v, int64_t now)
{
	return (int64_t)v->refresh_count;
}

static int64_t m_failure(const struct cred_view *v, int64_t now)
{
	return (int64_t)v->failure_count;
}

static int64_t m_consecutive(const struct cred_view *v, int64_t now)
{
	return v->consecutive_failures;
}

static int64_t m_reads(const struct cred_view *v, int64_t now)
{
	return (int64_t)v->reads;
}

static int64_t m_open_errors(const struct cred_view *v, int64_t now)
{
	return (int64_t)v->open_errors;
}

static int64_t m_persist_failures(const struct cred_view *v, int64_t now)
{
	return (int64_t)v->persist_failures;
}

static int64_t m_unpersisted(const struct cred_view *v, int64_t now)
{
	return v->record_gen > v->durable_gen;
}

static int64_t m_rt_expires_in(const struct cred_view *v, int64_t now)
{
	return v->rt_expires_ms ? secs_until(v->rt_expires_ms, now) : -1;
}

static const struct {
	const char *name, *type, *help;
	series_fn fn;
} series[] = {
	{"credfs_token_expires_in_seconds", "gauge",
	 "Seconds until the current token expires (0 without one).",
	 m_expires_in},
	{"credfs_refresh_success_total", "counter",
	 "Token requests that returned a token.", m_success},
	{"credfs_refresh_failure_total", "counter",
	 "Token requests that failed.", m_failure},
	{"credfs_refresh_consecutive_failures", "gauge",
	 "Failures since the last successful refresh.", m_consecutive},
	{"credfs_token_reads_total", "counter",
	 "Successful opens of access_token.", m_reads},
	{"credfs_token_open_errors_total", "counter",
	 "Opens of access_token that failed (expired, no token).",
	 m_open_errors},
	{"credfs_store_write_failures_total", "counter",
	 "Writes of the credential's record to the store that failed.",
	 m_persist_failures},
	{"credfs_store_unpersisted", "gauge",
	 "1 while the newest state (a rotated refresh token) is only in "
	 "memory.",
	 m_unpersisted},
	{"credfs_refresh_token_expires_in_seconds", "gauge",
	 "Seconds until the refresh token stops working, as far as the "
	 "provider's profile tells (-1: unknown).",
	 m_rt_expires_in},
};

/* A provider's totals over the credentials a metrics file shows. */
struct provider_sum {
	size_t shown; /* none: the provider is not named */
	uint64_t success, failure, reads;
	int64_t min_expires_in;
	bool any_token;
};

static int provider_series(const struct config *cfg,
			   const struct provider_sum *sum, struct buf *out)
{
	static const char *const help[] = {
		"credfs_provider_refresh_success_total",
		"Successful refreshes of the provider's credentials shown.",
		"credfs_provider_refresh_failure_total",
		"Failed refreshes of the provider's credentials shown.",
		"credfs_provider_token_reads_total",
		"Opens of the provider's access_token files shown.",
		"credfs_provider_token_expires_in_seconds_min",
		"The soonest expiry among the provider's tokens shown.",
	};
	size_t k, p;
	int r = 0;

	for (k = 0; k < ARRAY_SIZE(help) && r == 0; k += 2) {
		r = buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", help[k],
			       help[k + 1], help[k],
			       k < 6 ? "counter" : "gauge");
		for (p = 0; p < cfg->n_providers && r == 0; p++) {
			const struct provider_sum *x = &sum[p];
			int64_t v = k == 0   ? (int64_t)x->success
				    : k == 2 ? (int64_t)x->failure
				    : k == 4 ? (int64_t)x->reads
					     : x->min_expires_in;

			if (!x->shown || (k == 6 && !x->any_token))
				continue;
			r = buf_printf(out, "%s{provider=\"%s\"} %" PRId64 "\n",
				       help[k], cfg->providers[p].name, v);
		}
	}
	return r;
}

int render_metrics(struct cred_table *t, const struct visible *visible,
		   int64_t now_ms, struct buf *out)
{
	const struct config *cfg = cred_table_config(t);
	uint64_t by_state[CRED_STATE_COUNT] = {0};
	struct provider_sum *sum;
	struct cred_view *views = NULL, v;
	size_t i, k, shown, unlisted, n_listed, nv = 0, *at = NULL;
	bool *listed, *bad = NULL, capped;
	int s, r = -ENOMEM;

	listed = calloc(cfg->n_creds + 1, sizeof(*listed));
	bad = calloc(cfg->n_creds + 1, sizeof(*bad));
	sum = calloc(cfg->n_providers + 1, sizeof(*sum));
	if (!listed || !bad || !sum)
		goto out_free;
	/* One view of each credential shown, for the totals; within the
	 * cap its view is kept for its own series, past it the ones not in
	 * good health are viewed again (at most the cap). */
	shown = mark_shown(t, cfg, visible, listed);
	capped = shown > cfg->per_credential_max;
	n_listed = capped ? cfg->per_credential_max : shown;
	views = calloc(n_listed + 1, sizeof(*views));
	at = calloc(n_listed + 1, sizeof(*at));
	if (!views || !at)
		goto out_views;
	for (i = 0; i < cfg->n_creds; i++) {
		struct provider_sum *x = &sum[cfg->creds[i].provider->index];

		if (!listed[i])
			continue;
		cred_view(cred_of(t, &cfg->creds[i]), now_ms, &v);
		by_state[v.state]++;
		x->shown++;
		x->success += v.refresh_count;
		x->failure += v.failure_count;
		x->reads += v.reads;
		if (v.has_token &&
		    (!x->any_token ||
		     secs_until(v.expires_ms, now_ms) < x->min_expires_in)) {
			x->min_expires_in = secs_until(v.expires_ms, now_ms);
			x->any_token = true;
		}
		bad[i] = !in_good_health(&v);
		if (!capped && nv < n_listed) {
			at[nv] = i;
			views[nv++] = v;
		} else {
			cred_view_clear(&v);
		}
	}
	unlisted = 0;
	if (capped) {
		unlisted = shown - keep_unhealthy(t, cfg, now_ms, listed, bad);
		for (i = 0; i < cfg->n_creds && nv < n_listed; i++)
			if (listed[i]) {
				at[nv] = i;
				cred_view(cred_of(t, &cfg->creds[i]), now_ms,
					  &views[nv++]);
			}
	}
	r = buf_printf(out,
		       "# HELP credfs_info Build information.\n"
		       "# TYPE credfs_info gauge\n"
		       "credfs_info{version=\"%s\",pid=\"%d\"} 1\n"
		       "# HELP credfs_credentials Credentials by state.\n"
		       "# TYPE credfs_credentials gauge\n",
		       CREDFS_VERSION, (int)getpid());
	for (s = 0; s < CRED_STATE_COUNT && r == 0; s++)
		r = buf_printf(
			out, "credfs_credentials{state=\"%s\"} %" PRIu64 "\n",
			cred_state_name((enum cred_state)s), by_state[s]);
	if (r == 0)
		r = buf_printf(out,
			       "# HELP credfs_credentials_unlisted Credentials "
			       "in good health without series of their own "
			       "(past per_credential_max).\n"
			       "# TYPE credfs_credentials_unlisted gauge\n"
			       "credfs_credentials_unlisted %zu\n",
			       unlisted);
	if (r == 0)
		r = provider_series(cfg, sum, out);

	for (k = 0; k < ARRAY_SIZE(series) && r == 0; k++) {
		r = buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n",
			       series[k].name, series[k].help, series[k].name,
			       series[k].type);
		for (i = 0; i < nv && r == 0; i++)
			r = buf_printf(
				out,
				"%s{tenant=\"%s\",provider=\"%s\"} %" PRId64
				"\n",
				series[k].name, cfg->creds[at[i]].tenant,
				cfg->creds[at[i]].provider->name,
				series[k].fn(&views[i], now_ms));
	}
	if (r == 0)
		r = buf_printf(
			out,
			"# HELP credfs_audit_write_failures_total "
			"Audit lines that could not be written.\n"
			"# TYPE credfs_audit_write_failures_total "
			"counter\ncredfs_audit_write_failures_total %" PRIu64
			"\n",
			t->audit ? audit_failures(t->audit, NULL, 0) : 0);
	if (r == 0)
		r = buf_printf(
			out,
			"# HELP credfs_config_last_reload_successful 0 while "
			"the last reload was refused (the running "
			"configuration stays in force).\n"
			"# TYPE credfs_config_last_reload_successful gauge\n"
			"credfs_config_last_reload_successful %d\n"
			"# HELP credfs_config_reload_failures_total Reloads "
			"refused.\n"
			"# TYPE credfs_config_reload_failures_total counter\n"
			"credfs_config_reload_failures_total %" PRIu64 "\n"
			"# HELP credfs_config_retained Configurations "
			"replaced by reloads and still in memory, waiting "
			"for requests that may use them to end.\n"
			"# TYPE credfs_config_retained gauge\n"
			"credfs_config_retained %u\n"
			"# HELP credfs_store_reachable 0 while a shared store "
			"(PostgreSQL) cannot be reached: credentials whose "
			"refresh token rotates are not refreshed meanwhile.\n"
			"# TYPE credfs_store_reachable gauge\n"
			"credfs_store_reachable %d\n"
			"# HELP credfs_store_lease_queries_total Refresh "
			"leases asked of a shared store (PostgreSQL).\n"
			"# TYPE credfs_store_lease_queries_total counter\n"
			"credfs_store_lease_queries_total %" PRIu64 "\n",
			!atomic_load(&t->reload_refused),
			(uint64_t)atomic_load(&t->reload_failures),
			atomic_load(&t->cfg_retained),
			!atomic_load(&t->store_down),
			(uint64_t)atomic_load(&t->lease_queries));
out_views:
	for (i = 0; i < nv; i++)
		cred_view_clear(&views[i]);
	free(views);
	free(at);
out_free:
	free(listed);
	free(bad);
	free(sum);
	return r;
}
