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
#include "store.h"
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

/* Store a successful token response, made as client @reg, or say why it
 * cannot be. */
static int store_response(struct ctx *x, const struct cred_conf *cc,
			  const struct record_client *reg,
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
		r = record_client_copy(&rec.client, reg);
	if (r == 0)
		r = store_credential(x, cc, &rec, cmd, stdout);
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

/* The client registered for @cc's credential, from its record (none if
 * there is no record or it names none). 0 or -errno, said. */
static int stored_client(struct ctx *x, const struct cred_conf *cc,
			 const char *cmd, struct record_client *reg)
{
	struct record rec;
	int r;

	memset(reg, 0, sizeof(*reg));
	r = store_load(x->st, cc->tenant, cc->provider->name, 0, &rec);
	if (r == -ENOENT)
		return 0;
	if (r < 0) {
		fprintf(stderr,
			"credfsctl %s: the record of %s/%s does not open (%s); "
			"credfsctl remove it first\n",
			cmd, cc->tenant, cc->provider->name, strerror(-r));
		return r;
	}
	*reg = rec.client;
	memset(&rec.client, 0, sizeof(rec.client));
	record_clear(&rec);
	return 0;
}

/* The callback path of @p's redirect URI: with an issuer, the iss of the
 * response tells authorization servers apart (RFC 9207); without one the
 * redirect URI must (RFC 9700 section 4.4.2), so each provider listens on
 * a path of its own. */
static void callback_path(const struct provider_conf *p, char *out, size_t n)
{
	snprintf(out, n, p->issuer ? "/callback" : "/callback/%s", p->name);
}

/* A redirect URI to register before any flow listens: the configured
 * one, or a free ephemeral port on 127.0.0.1, which connect listens on
 * later. 0 or -errno, said. */
static int redirect_for_registration(const struct provider_conf *p,
				     const char *cmd, char **out)
{
	struct loopback *lb = NULL;
	char err[512], path[96];
	int r;

	*out = NULL;
	callback_path(p, path, sizeof(path));
	r = loopback_open(p->redirect_uri, path, &lb, err, sizeof(err));
	if (r == 0) {
		*out = strdup(loopback_uri(lb));
		r = *out ? 0 : -ENOMEM;
	}
	if (r == -ENOMEM || r == -EIO)
		snprintf(err, sizeof(err), "%s", strerror(-r));
	loopback_close(lb);
	if (r < 0)
		fprintf(stderr, "credfsctl %s: %s\n", cmd, err);
	return r;
}

/*
 * The client @cc's requests are made as, given what its record holds
 * (@reg, from stored_client(); empty when the configuration names a
 * client): the configured one (an https client_id only where the
 * authorization server takes client ID metadata documents), the one
 * registered before, or else one registered now (RFC 7591) with
 * @redirect_uri (NULL: a free one, which connect listens on later) and
 * kept in the record at once, so that a flow that fails later reuses it.
 * 0 or -errno, said.
 */
static int ensure_client(struct ctx *x, const struct cred_conf *cc,
			 const char *cmd, const char *redirect_uri,
			 struct record_client *reg)
{
	const struct provider_conf *p = cc->provider;
	struct record rec = {0};
	char err[512] = "", *own = NULL;
	int r;

	if (p->client_id) {
		if (strncmp(p->client_id, "https://", 8) || !p->resource ||
		    p->cimd_supported)
			return 0;
		fprintf(stderr,
			"credfsctl %s: providers.%s.client_id is a URL (a "
			"client ID metadata document), but the authorization "
			"server %s does not say it takes them "
			"(client_id_metadata_document_supported); remove "
			"client_id to register a client instead\n",
			cmd, p->name, p->issuer ? p->issuer : "");
		return -EOPNOTSUPP;
	}
	if (reg->id)
		return 0;
	r = redirect_uri ? 0 : redirect_for_registration(p, cmd, &own);
	if (r == 0)
		r = register_client(cc, redirect_uri ? redirect_uri : own, reg,
				    err, sizeof(err));
	free(own);
	if (r < 0) {
		if (err[0]) /* else redirect_for_registration() said */
			fprintf(stderr, "credfsctl %s: %s\n", cmd, err);
		return r;
	}
	/* On stderr: connect's stdout starts with the URL to open. */
	r = record_client_copy(&rec.client, reg);
	if (r == 0)
		r = store_credential(x, cc, &rec, cmd, stderr);
	record_clear(&rec);
	if (r == 0)
		fprintf(stderr, "registered client %s for %s/%s at %s\n",
			reg->id, cc->tenant, p->name, p->registration_url);
	return r;
}

int connect_main(int argc, char **argv)
{
	char *verifier = NULL, *challenge = NULL, *state = NULL, *url = NULL;
	char *code = NULL, err[512], path[96];
	struct record_client reg = {0};
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
		       "(default 300) for the redirect. A provider without a "
		       "client_id\n(an MCP server) first registers a client as "
		       "credfsctl register does.\n",
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
	callback_path(cc->provider, path, sizeof(path));
	/* A registered client comes back to the redirect URI it was
	 * registered with. */
	if (r == 0 && !cc->provider->client_id)
		r = stored_client(&x, cc, "connect", &reg);
	if (r < 0)
		goto out;
	r = loopback_open(reg.redirect_uri ? reg.redirect_uri
					   : cc->provider->redirect_uri,
			  path, &lb, err, sizeof(err));
	if (r == -ENOMEM || r == -EIO)
		snprintf(err, sizeof(err), "%s", strerror(-r));
	if (r < 0) {
		fprintf(stderr, "credfsctl connect: %s\n", err);
		goto out;
	}
	r = ensure_client(&x, cc, "connect", loopback_uri(lb), &reg);
	if (r == 0)
		r = onboard_authorization_url(cc, &reg, loopback_uri(lb), state,
					      challenge, &url);
	if (r < 0)
		goto out;
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
		token_request(cc, &reg, pairs, &res);
	}
	loopback_close(lb); /* later callbacks are refused */
	lb = NULL;
	r = store_response(&x, cc, &reg, &res, sent, "connect");
out:
	loopback_close(lb);
	oauth_result_clear(&res);
	record_client_clear(&reg);
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
	struct record_client reg = {0};
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
	r = cc->provider->client_id ? 0 : stored_client(&x, cc, "device", &reg);
	if (r == 0)
		r = ensure_client(&x, cc, "device", NULL, &reg);
	if (r < 0)
		goto out;
	r = device_flow(cc, &reg,
			(a.timeout_s ? a.timeout_s : DEVICE_TIMEOUT_S) * 1000,
			stdout, &res, &sent, err, sizeof(err));
	if (r < 0)
		fprintf(stderr, "credfsctl device: %s\n", err);
	else
		r = store_response(&x, cc, &reg, &res, sent, "device");
out:
	record_client_clear(&reg);
	oauth_result_clear(&res);
	close_store(&x);
	return r < 0 ? 1 : 0;
}

int register_main(int argc, char **argv)
{
	struct record_client reg = {0};
	const struct cred_conf *cc = NULL;
	struct args a;
	struct ctx x;
	int r;

	r = parse_args(argc, argv, "register", "TENANT PROVIDER --config FILE",
		       "Register a client for TENANT's credential at PROVIDER "
		       "by dynamic client\nregistration (RFC 7591), for a "
		       "provider without a client_id (an MCP server\nwhose "
		       "authorization server offers it). The client id and "
		       "any secret are kept\nin the credential's record in "
		       "the store, never in the configuration;\ncredfsctl "
		       "connect and device use it. Registering again keeps "
		       "the client\nthere is.\n",
		       0, 2, 2, &a);
	if (r)
		return r == 1 ? 0 : r;
	r = open_store(a.config, STORE_ADMIN, true, &x);
	if (r == 0) {
		cc = refresh_cred(&x, "register", a.pos[0], a.pos[1]);
		r = cc ? 0 : -EINVAL;
	}
	if (r == 0 && cc->provider->client_id) {
		fprintf(stderr,
			"credfsctl register: providers.%s has a client_id; "
			"nothing to register\n",
			cc->provider->name);
		r = -EINVAL;
	}
	if (r == 0)
		r = stored_client(&x, cc, "register", &reg);
	if (r == 0 && reg.id) {
		printf("%s/%s: already registered as client %s\n", cc->tenant,
		       cc->provider->name, reg.id);
	} else if (r == 0) {
		r = ensure_client(&x, cc, "register", NULL, &reg);
	}
	record_client_clear(&reg);
	close_store(&x);
	return r < 0 ? 1 : 0;
}

int client_metadata_main(int argc, char **argv)
{
	const struct provider_conf *p;
	struct config *cfg = NULL;
	char err[1024], *doc;
	struct args a;
	int r;

	r = parse_args(argc, argv, "client-metadata", "PROVIDER --config FILE",
		       "Print the client ID metadata document to host at "
		       "PROVIDER's client_id, an\nhttps:// URL, for "
		       "authorization servers that take such documents "
		       "instead\nof registration (docs/mcp.md).\n",
		       0, 1, 1, &a);
	if (r)
		return r == 1 ? 0 : r;
	r = config_read(a.config, &cfg, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "credfsctl client-metadata: %s\n", err);
		return 1;
	}
	p = config_provider(cfg, a.pos[0]);
	if (!p || !p->client_id || strncmp(p->client_id, "https://", 8)) {
		fprintf(stderr,
			"credfsctl client-metadata: %s in %s: the document is "
			"for a client_id that is an https:// URL\n",
			!p ? "no such provider"
			: !p->client_id
				? "that provider has no client_id"
				: "its client_id is not an https:// URL",
			a.config);
		config_free(cfg);
		return 1;
	}
	/* A loopback redirect may take any port (RFC 8252 7.3): the
	 * port-less form, unless one is configured. */
	doc = client_metadata_document(
		p, p->redirect_uri ? p->redirect_uri
				   : "http://127.0.0.1/callback");
	if (doc)
		printf("%s\n", doc);
	free(doc);
	config_free(cfg);
	return doc ? 0 : 1;
}
