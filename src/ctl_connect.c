/*
 * credfsctl connect and device: connect a tenant's account to a provider
 * with the authorization code flow (PKCE, loopback redirect) or the device
 * flow, and store the refresh token as add does.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ctl.h"
#include "oauth.h"
#include "onboard.h"
#include "cred.h"
#include "credstore.h"
#include "record.h"
#include "util.h"

#define CONNECT_TIMEOUT_S 300
#define DEVICE_TIMEOUT_S 1800

/* The record of @p's token response sent at @sent_ms; 0 or -errno. */
static int record_of(const struct provider_conf *p,
		     const struct oauth_result *res, int64_t sent_ms,
		     struct record *rec)
{
	const struct oauth_token *t = &res->tok;
	struct buf scope;
	size_t i;

	memset(rec, 0, sizeof(*rec));
	buf_init(&scope, 64 * 1024);
	for (i = 0; i < t->n_scopes; i++)
		buf_printf(&scope, "%s%s", i ? " " : "", t->scopes[i]);
	rec->refresh_token = strdup(t->refresh_token);
	rec->access_token = strdup(t->access_token);
	rec->token_type = strdup(t->token_type);
	rec->scope = scope.data; /* NULL when none was listed */
	rec->issued_ms = sent_ms;
	rec->expires_ms =
		sent_ms + (t->expires_in_ms >= 0 ? t->expires_in_ms
						 : p->default_lifetime_ms);
	rec->rt_expires_ms = cred_rt_expiry(p, t, sent_ms, 0);
	if (!rec->refresh_token || !rec->access_token || !rec->token_type)
		return -ENOMEM;
	return credstore_fields(p, t->fields, t->n_fields, rec);
}

/* Store a successful token response, or say why it cannot be. */
static int store_response(struct ctx *x, const struct cred_conf *cc,
			  struct oauth_result *res, int64_t sent_ms,
			  const char *cmd)
{
	struct record rec;
	int r;

	if (res->outcome != OAUTH_OK) {
		fprintf(stderr,
			"credfsctl %s: the token endpoint refused: %s; "
			"nothing was stored\n",
			cmd, res->error);
		return -EACCES;
	}
	if (!res->tok.refresh_token) {
		fprintf(stderr,
			"credfsctl %s: the provider sent no refresh token, so "
			"credfs could not keep the credential fresh; it may "
			"need authorization_params (e.g. access_type=offline) "
			"or authorization_scopes (e.g. offline_access)\n",
			cmd);
		return -EPROTO;
	}
	r = record_of(cc->provider, res, sent_ms, &rec);
	if (r == 0)
		r = store_credential(x, cc, &rec, cmd);
	record_clear(&rec);
	return r;
}

/* Open the store and find the credential @a names, if its provider has
 * the endpoint the flow needs; else NULL, with the reason printed (*@x is
 * safe to close either way). */
static const struct cred_conf *flow_cred(struct ctx *x, const char *cmd,
					 const struct args *a, bool device)
{
	const struct cred_conf *cc =
		open_store(a->config, STORE_ADMIN, true, x) < 0
			? NULL
			: refresh_cred(x, cmd, a->pos[0], a->pos[1]);
	const char *url = !cc	   ? NULL
			  : device ? cc->provider->device_authorization_url
				   : cc->provider->authorization_url;

	if (cc && !url) {
		fprintf(stderr, "credfsctl %s: providers.%s has no %s%s\n", cmd,
			cc->provider->name,
			device ? "device_authorization_url"
			       : "authorization_url",
			device ? "" : " (use credfsctl device or add)");
		return NULL;
	}
	return cc;
}

int connect_main(int argc, char **argv)
{
	char *verifier = NULL, *challenge = NULL, *state = NULL, *url = NULL;
	char *code = NULL, err[512], path[96];
	struct oauth_result res = {0};
	struct loopback *lb = NULL;
	const struct cred_conf *cc;
	struct args a;
	struct ctx x;
	int64_t sent;
	int r;

	r = parse_args(argc, argv, "connect",
		       "TENANT PROVIDER --config FILE [--timeout SECONDS]",
		       "Connect TENANT's account at PROVIDER with the "
		       "authorization code flow and PKCE\n(S256). Prints the "
		       "authorization URL on a line of its own on stdout; "
		       "open it\nin a browser. The provider redirects to a "
		       "listener on 127.0.0.1 (the port of\nredirect_uri, or "
		       "an ephemeral one), and credfsctl exchanges the code, "
		       "stores\nthe refresh token as add does and tells a "
		       "running daemon. Waits up to\n--timeout seconds "
		       "(default 300) for the redirect.\n",
		       OPT_TIMEOUT, 2, 2, &a);
	if (r)
		return r == 1 ? 0 : r;
	r = -EINVAL;
	cc = flow_cred(&x, "connect", &a, false);
	if (!cc)
		goto out;
	r = pkce_new(&verifier, &challenge);
	if (r == 0)
		r = onboard_random_b64url(16, &state);
	/* With an issuer, the iss of the response tells authorization
	 * servers apart (RFC 9207); without one the redirect URI must (RFC
	 * 9700 section 4.4.2), so each provider listens on a path of its
	 * own. */
	snprintf(path, sizeof(path),
		 cc->provider->issuer ? "/callback" : "/callback/%s",
		 cc->provider->name);
	if (r == 0)
		r = loopback_open(cc->provider->redirect_uri, path, &lb, err,
				  sizeof(err));
	if (r == -ENOMEM || r == -EIO)
		snprintf(err, sizeof(err), "%s", strerror(-r));
	if (r == 0)
		r = onboard_authorization_url(cc, loopback_uri(lb), state,
					      challenge, &url);
	if (r < 0) {
		fprintf(stderr, "credfsctl connect: %s\n", err);
		goto out;
	}
	fprintf(stderr,
		"Open this URL in a browser to connect %s/%s; waiting up to "
		"%ld s for the redirect to %s\n",
		cc->tenant, cc->provider->name,
		a.timeout_s ? a.timeout_s : CONNECT_TIMEOUT_S,
		loopback_uri(lb));
	printf("%s\n", url);
	fflush(stdout);
	r = loopback_wait(lb,
			  &(struct callback_check){
				  .state = state,
				  .issuer = cc->provider->issuer,
				  .iss_required = cc->provider->iss_param,
			  },
			  (a.timeout_s ? a.timeout_s : CONNECT_TIMEOUT_S) *
				  1000,
			  &code, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "credfsctl connect: %s\n", err);
		goto out;
	}
	{
		const char *pairs[] = {
			"grant_type",
			"authorization_code",
			"code",
			code,
			"redirect_uri",
			loopback_uri(lb),
			"code_verifier",
			verifier,
			NULL,
		};

		sent = time_real_ms();
		token_request(cc, pairs, &res);
	}
	loopback_close(lb); /* later callbacks are refused */
	lb = NULL;
	r = store_response(&x, cc, &res, sent, "connect");
out:
	loopback_close(lb);
	oauth_result_clear(&res);
	strfreezero(verifier);
	strfreezero(challenge);
	strfreezero(state);
	strfreezero(code);
	free(url);
	close_store(&x);
	return r < 0 ? 1 : 0;
}

int device_main(int argc, char **argv)
{
	struct oauth_result res = {0};
	const struct cred_conf *cc;
	struct args a;
	struct ctx x;
	char err[512];
	int64_t sent;
	int r;

	r = parse_args(argc, argv, "device",
		       "TENANT PROVIDER --config FILE [--timeout SECONDS]",
		       "Connect TENANT's account at PROVIDER with the device "
		       "authorization grant\n(RFC 8628), for machines without "
		       "a browser: prints a URL and a code to\nenter on any "
		       "other device, polls the provider until the user "
		       "approves,\ndenies, or the code expires (or --timeout "
		       "seconds pass), then stores the\nrefresh token as add "
		       "does and tells a running daemon.\n",
		       OPT_TIMEOUT, 2, 2, &a);
	if (r)
		return r == 1 ? 0 : r;
	r = -EINVAL;
	cc = flow_cred(&x, "device", &a, true);
	if (!cc)
		goto out;
	r = device_flow(cc,
			(a.timeout_s ? a.timeout_s : DEVICE_TIMEOUT_S) * 1000,
			stdout, &res, &sent, err, sizeof(err));
	if (r < 0)
		fprintf(stderr, "credfsctl device: %s\n", err);
	else
		r = store_response(&x, cc, &res, sent, "device");
out:
	oauth_result_clear(&res);
	close_store(&x);
	return r < 0 ? 1 : 0;
}
