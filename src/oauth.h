/*
 * oauth: token requests and responses (RFC 6749 sections 4.4, 5.1, 5.2).
 * Builds the request body and client authentication, and turns whatever a
 * provider answers into one classified outcome. No I/O, no logging.
 */
#ifndef CREDFS_OAUTH_H
#define CREDFS_OAUTH_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct provider_conf;
struct cred_conf;

#define OAUTH_MAX_TOKEN_BYTES (64 * 1024)
#define OAUTH_ERROR_TEXT 256

enum oauth_outcome {
	OAUTH_OK,
	OAUTH_TRANSIENT,      /* network, 5xx, timeouts: back off, retry */
	OAUTH_RATE_LIMITED,   /* 429: retry no sooner than Retry-After */
	OAUTH_MALFORMED,      /* 2xx we cannot use: back off, retry */
	OAUTH_INVALID_GRANT,  /* the grant is dead (revoked, expired) */
	OAUTH_INVALID_CLIENT, /* our client credentials are refused */
	OAUTH_REJECTED,	      /* any other refusal (invalid_scope, 4xx) */
};

/* A parsed successful response. access_token is wiped on clear. */
struct oauth_token {
	char *access_token;
	size_t len;
	char *token_type;
	int64_t expires_in_ms; /* -1 when the response had none */
	char **scopes;	       /* sorted, deduplicated; NULL when absent */
	size_t n_scopes;
	char *refresh_token; /* a rotated refresh token, or NULL; wiped */
};

struct oauth_result {
	enum oauth_outcome outcome;
	struct oauth_token tok;	      /* filled only for OAUTH_OK */
	int64_t retry_after_ms;	      /* -1 unless the provider asked */
	char error[OAUTH_ERROR_TEXT]; /* printable, never holds a token */
};

/* Short lower-case name of @o, e.g. "invalid_client". */
const char *oauth_outcome_name(enum oauth_outcome o);

/*
 * Build a token request for @cc: client_credentials, or with
 * @refresh_token the refresh_token grant (RFC 6749 section 6). The form
 * body goes into @body and, for client_secret_basic, the "Authorization:
 * Basic ..." header line into *@auth_header (wipe with strfreezero).
 * Returns 0 or -errno.
 */
int oauth_build_request(const struct cred_conf *cc, const char *refresh_token,
			struct buf *body, char **auth_header);

/*
 * Classify a response: HTTP @status (0 if none arrived), @body of @len
 * bytes, the Retry-After header or NULL, at @now_ms. Fills @res.
 */
void oauth_classify(long status, const char *body, size_t len,
		    const char *retry_after, int64_t now_ms,
		    struct oauth_result *res);

/* Split space-separated @s into @t's sorted, unique scope list. 0/-errno. */
int oauth_split_scopes(const char *s, struct oauth_token *t);

/* Release what a result holds, wiping the token. Safe to call twice. */
void oauth_result_clear(struct oauth_result *res);

/* Copy @in into @out (size @n) keeping only printable ASCII. */
void oauth_sanitize(const char *in, size_t inlen, char *out, size_t n);

#endif
