/*
 * render: status, status.json, expires_at, token_type, scopes, the root
 * status table and metrics. Pure formatting of cred_view snapshots.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	const struct provider_conf *p = c ? c->conf->provider : NULL;

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

static void time_or_never(int64_t ms, char out[32])
{
	if (ms > 0)
		time_rfc3339(ms, out);
	else
		snprintf(out, 32, "never");
}

static int requested_scopes(const struct cred *c, struct buf *b)
{
	size_t i;
	int r = 0;

	for (i = 0; i < c->conf->n_scopes && r == 0; i++)
		r = buf_printf(b, "%s%s", i ? " " : "", c->conf->scopes[i]);
	return r;
}

/* "a\nb\n" -> "a b" into @b. */
static int granted_scopes(const struct cred_view *v, struct buf *b)
{
	const char *p = v->scopes ? v->scopes : "";
	int r = 0;

	while (*p && r == 0) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);

		r = buf_printf(b, "%s%.*s", b->len ? " " : "", (int)n, p);
		p += n + (nl ? 1 : 0);
	}
	return r;
}

/* Why a valid token is not served, or "-". */
static const char *refused(const struct cred *c, const struct cred_view *v)
{
	if (c->conf->strict_scopes && v->over)
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
			 c->conf->provider->min_lifetime_ms / 1000.0);
}

static int render_status(struct cred_table *t, struct cred *c,
			 const struct cred_view *v, int64_t now,
			 struct buf *out)
{
	char exp[32] = "-", last[32], next[32], lerr[32], perr[32];
	char audit_text[192], rtexp[32] = "unknown", floored[128];
	struct buf req, gr;
	int r;

	floored_text(c, v, floored, sizeof(floored));
	if (v->rt_expires_ms)
		time_rfc3339(v->rt_expires_ms, rtexp);
	audit_health(t, audit_text, sizeof(audit_text));
	buf_init(&req, 64 * 1024);
	buf_init(&gr, 64 * 1024);
	r = requested_scopes(c, &req);
	if (r == 0)
		r = granted_scopes(v, &gr);
	if (r < 0)
		goto out;
	if (v->has_token)
		time_rfc3339(v->expires_ms, exp);
	time_or_never(v->last_refresh_ms, last);
	time_or_never(v->next_refresh_ms, next);
	time_or_never(v->last_error_ms, lerr);
	time_or_never(v->persist_error_ms, perr);
	r = buf_printf(
		out,
		"tenant: %s\n"
		"provider: %s\n"
		"grant: %s\n"
		"state: %s\n"
		"health: %s\n"
		"token_type: %s\n"
		"fingerprint: %s\n"
		"expires_at: %s\n"
		"expires_in: %" PRId64 "\n"
		"lifetime_floored: %s\n"
		"last_refresh: %s\n"
		"next_refresh: %s\n"
		"next_refresh_in: %" PRId64 "\n"
		"refresh_count: %" PRIu64 "\n"
		"consecutive_failures: %u\n"
		"failure_count: %" PRIu64 "\n"
		"last_error: %s\n"
		"last_error_at: %s\n"
		"reads: %" PRIu64 "\n"
		"scopes_requested: %s\n"
		"scopes_granted: %s\n"
		"over_privileged: %s\n"
		"strict_scopes: %s\n"
		"refused: %s\n"
		"generation: %" PRIu64 "\n"
		"persist_error: %s\n"
		"persist_error_at: %s\n"
		"persist_failures: %" PRIu64 "\n"
		"audit: %s\n"
		"refresh_token_expires_at: %s\n"
		"refresh_token_expiring: %s\n"
		"refresh_token_rotates: %s\n",
		c->conf->tenant, c->conf->provider->name, grant_name(c),
		cred_state_name(v->state), health(v),
		v->has_token ? v->token_type : "-", v->has_token ? v->fp : "-",
		exp, v->has_token ? secs_until(v->expires_ms, now) : 0,
		floored, last,
		next,
		v->next_refresh_ms ? secs_until(v->next_refresh_ms, now) : 0,
		v->refresh_count, v->consecutive_failures, v->failure_count,
		v->last_error[0] ? v->last_error : "-", lerr, v->reads,
		req.len ? req.data : "-", gr.len ? gr.data : "-",
		v->over ? v->over : "-",
		c->conf->strict_scopes ? "true" : "false", refused(c, v),
		v->record_gen, v->persist_error[0] ? v->persist_error : "-",
		perr, v->persist_failures, audit_text, rtexp,
		rt_expiring(v, now) ? "yes: reconnect (credfsctl connect) "
				      "before then"
				    : "no",
		!c->conf->provider->rotates_set ? "unknown"
		: c->conf->provider->rotates	? "yes"
						: "no");
out:
	buf_free(&req);
	buf_free(&gr);
	return r;
}

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

static int render_status_json(struct cred_table *t, struct cred *c,
			      const struct cred_view *v, int64_t now,
			      struct buf *out)
{
	json_t *o = json_object(), *req = json_array();
	char audit_text[192], floored[128];
	char *text;
	size_t i;
	int r = -ENOMEM;

	if (!o || !req)
		goto out;
	for (i = 0; i < c->conf->n_scopes; i++)
		json_array_append_new(req, json_string(c->conf->scopes[i]));
	json_object_set_new(o, "tenant", json_string(c->conf->tenant));
	json_object_set_new(o, "provider",
			    json_string(c->conf->provider->name));
	json_object_set_new(o, "grant", json_string(grant_name(c)));
	json_object_set_new(o, "state", json_string(cred_state_name(v->state)));
	json_object_set_new(o, "health", json_string(health(v)));
	json_object_set_new(o, "token_type",
			    v->has_token ? json_string(v->token_type)
					 : json_null());
	json_object_set_new(o, "fingerprint",
			    v->has_token ? json_string(v->fp) : json_null());
	json_object_set_new(o, "expires_at",
			    v->has_token ? json_time(v->expires_ms)
					 : json_null());
	json_object_set_new(
		o, "expires_in",
		v->has_token ? json_integer(secs_until(v->expires_ms, now))
			     : json_null());
	floored_text(c, v, floored, sizeof(floored));
	json_object_set_new(o, "lifetime_floored",
			    strcmp(floored, "-") ? json_string(floored)
						 : json_null());
	json_object_set_new(o, "last_refresh", json_time(v->last_refresh_ms));
	json_object_set_new(o, "next_refresh", json_time(v->next_refresh_ms));
	json_object_set_new(
		o, "next_refresh_in",
		v->next_refresh_ms
			? json_integer(secs_until(v->next_refresh_ms, now))
			: json_null());
	json_object_set_new(o, "refresh_count",
			    json_integer((json_int_t)v->refresh_count));
	json_object_set_new(o, "consecutive_failures",
			    json_integer(v->consecutive_failures));
	json_object_set_new(o, "failure_count",
			    json_integer((json_int_t)v->failure_count));
	json_object_set_new(o, "last_error",
			    v->last_error[0] ? json_string(v->last_error)
					     : json_null());
	json_object_set_new(o, "last_error_at", json_time(v->last_error_ms));
	json_object_set_new(o, "reads", json_integer((json_int_t)v->reads));
	json_object_set_new(o, "scopes_requested", req);
	req = NULL;
	json_object_set_new(o, "scopes_granted", json_lines(v->scopes, false));
	json_object_set_new(o, "over_privileged",
			    v->over ? json_lines(v->over, true) : json_null());
	json_object_set_new(o, "strict_scopes",
			    json_boolean(c->conf->strict_scopes));
	json_object_set_new(o, "refused",
			    strcmp(refused(c, v), "-")
				    ? json_string(refused(c, v))
				    : json_null());
	json_object_set_new(o, "generation",
			    cred_uses_store(c)
				    ? json_integer((json_int_t)v->record_gen)
				    : json_null());
	json_object_set_new(o, "persist_error",
			    v->persist_error[0] ? json_string(v->persist_error)
						: json_null());
	json_object_set_new(o, "persist_error_at",
			    json_time(v->persist_error_ms));
	json_object_set_new(o, "persist_failures",
			    json_integer((json_int_t)v->persist_failures));
	audit_health(t, audit_text, sizeof(audit_text));
	json_object_set_new(o, "audit", json_string(audit_text));
	json_object_set_new(o, "refresh_token_expires_at",
			    json_time(v->rt_expires_ms));
	json_object_set_new(o, "refresh_token_expiring",
			    json_boolean(rt_expiring(v, now)));
	json_object_set_new(o, "refresh_token_rotates",
			    c->conf->provider->rotates_set
				    ? json_boolean(c->conf->provider->rotates)
				    : json_null());
	text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (!text)
		goto out;
	r = buf_printf(out, "%s\n", text);
	free(text);
out:
	json_decref(req);
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
	case CF_STATUS: r = render_status(t, c, &v, now_ms, out); break;
	case CF_STATUS_JSON:
		r = render_status_json(t, c, &v, now_ms, out);
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
 * (inner double quotes become single ones). */
static void quoted_error(const struct cred_view *v, char *out, size_t n)
{
	size_t i;

	if (!v->last_error[0]) {
		snprintf(out, n, "-");
		return;
	}
	snprintf(out, n, "\"%s\"", v->last_error);
	for (i = 1; out[i] && out[i + 1]; i++)
		if (out[i] == '"')
			out[i] = '\'';
}

int render_root_status(struct cred_table *t, const bool *visible,
		       int64_t now_ms, struct buf *out)
{
	char err[OAUTH_ERROR_TEXT + 2], exp[24];
	size_t i;
	int r = 0;

	for (i = 0; i < t->n && r == 0; i++) {
		struct cred *c = &t->creds[i];
		struct cred_view v;

		if (visible && !visible[c->index])
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
			       c->conf->tenant, c->conf->provider->name,
			       cred_state_name(v.state), health(&v), exp,
			       v.next_refresh_ms
				       ? secs_until(v.next_refresh_ms, now_ms)
				       : 0,
			       v.refresh_count, v.consecutive_failures, err);
		cred_view_clear(&v);
	}
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

int render_metrics(struct cred_table *t, const bool *visible, int64_t now_ms,
		   struct buf *out)
{
	uint64_t by_state[CRED_STATE_COUNT] = {0};
	struct cred_view *views;
	size_t i, k;
	int s, r;

	views = calloc(t->n + 1, sizeof(*views));
	if (!views)
		return -ENOMEM;
	for (i = 0; i < t->n; i++) {
		if (visible && !visible[i])
			continue;
		cred_view(&t->creds[i], now_ms, &views[i]);
		by_state[views[i].state]++;
	}
	r = buf_printf(out,
		       "# HELP credfs_info Build information.\n"
		       "# TYPE credfs_info gauge\n"
		       "credfs_info{version=\"%s\"} 1\n"
		       "# HELP credfs_credentials Credentials by state.\n"
		       "# TYPE credfs_credentials gauge\n",
		       CREDFS_VERSION);
	for (s = 0; s < CRED_STATE_COUNT && r == 0; s++)
		r = buf_printf(
			out, "credfs_credentials{state=\"%s\"} %" PRIu64 "\n",
			cred_state_name((enum cred_state)s), by_state[s]);

	for (k = 0; k < ARRAY_SIZE(series) && r == 0; k++) {
		r = buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n",
			       series[k].name, series[k].help, series[k].name,
			       series[k].type);
		for (i = 0; i < t->n && r == 0; i++) {
			if (visible && !visible[i])
				continue;
			r = buf_printf(
				out,
				"%s{tenant=\"%s\",provider=\"%s\"} %" PRId64
				"\n",
				series[k].name, t->creds[i].conf->tenant,
				t->creds[i].conf->provider->name,
				series[k].fn(&views[i], now_ms));
		}
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
			"credfs_store_reachable %d\n",
			!atomic_load(&t->reload_refused),
			(uint64_t)atomic_load(&t->reload_failures),
			atomic_load(&t->cfg_retained),
			!atomic_load(&t->store_down));
	for (i = 0; i < t->n; i++)
		cred_view_clear(&views[i]);
	free(views);
	return r;
}
