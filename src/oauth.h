/*
 * oauth: token requests and responses (RFC 6749 sections 4.4, 5.1, 5.2).
 * Builds the request body and client authentication, and turns whatever a
 * provider answers into one classified outcome. No I/O, no logging.
 */
#ifndef CREDFS_OAUTH_H
#define CREDFS_OAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct provider_conf;
struct cred_conf;
struct record_client;

#define OAUTH_MAX_TOKEN_BYTES (64 * 1024)
#define OAUTH_ERROR_TEXT 256
#define OAUTH_MAX_FIELD_BYTES 1024 /* a response_fields value */

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
	int64_t refresh_expires_in_ms; /* refresh_token_expires_in, or -1 */
	char **fields; /* the provider's response_fields, in its order; an
			* entry is NULL when the response had none */
	size_t n_fields;
};

struct oauth_result {
	enum oauth_outcome outcome;
	struct oauth_token tok;	      /* filled only for OAUTH_OK */
	int64_t retry_after_ms;	      /* -1 unless the provider asked */
	char error[OAUTH_ERROR_TEXT]; /* printable, never holds a token */
	char error_code[64];	      /* the provider's "error" value, or "" */
};

/* Short lower-case name of @o, e.g. "invalid_client". */
const char *oauth_outcome_name(enum oauth_outcome o);

/* The failure outcome named @name (as oauth_outcome_name() gives it), for
 * a provider's error_codes; false for "ok" or an unknown name. */
bool oauth_outcome_from_name(const char *name, enum oauth_outcome *o);

/*
 * Build a token request for @cc: client_credentials, or with
 * @refresh_token the refresh_token grant (RFC 6749 section 6), made as
 * the client registered for it (@reg, with an id) or else as the
 * provider's. The form body goes into @body and, for client_secret_basic,
 * the "Authorization: Basic ..." header line into *@auth_header (wipe
 * with strfreezero). Returns 0 or -errno.
 */
int oauth_build_request(const struct cred_conf *cc,
			const struct record_client *reg,
			const char *refresh_token, struct buf *body,
			char **auth_header);

/* The client_id requests are made with: @reg's, else @p's. */
const char *oauth_client_id(const struct provider_conf *p,
			    const struct record_client *reg);

/*
 * A form for @p's endpoint @url: the name/value @pairs (a NULL-ended
 * list; pairs with a NULL value are left out), with @token_params the
 * provider's extra token_params, then client authentication as @reg (a
 * registered client, or NULL: @p's own): a header in *@auth_header for
 * client_secret_basic, else form fields; a private_key_jwt assertion is
 * made afresh for @url alone. Wipe both. 0 or -errno (-EXDEV: an
 * assertion would go to a host it does not name).
 */
int oauth_build_form(const struct provider_conf *p,
		     const struct record_client *reg, const char *url,
		     const char *const *pairs, bool token_params,
		     struct buf *body, char **auth_header);

/* @cc's scopes, space-separated; with @authorization also the provider's
 * authorization_scopes (e.g. offline_access). 0 or -errno. */
int oauth_scope_text(const struct cred_conf *cc, bool authorization,
		     struct buf *out);

/* RFC 7662 2.2: "active" of an introspection answer. 0, or -EPROTO with
 * what is wrong in @err (an error of the endpoint, not of the token). */
int oauth_parse_introspection(long status, const char *body, size_t len,
			      bool *active, char *err, size_t errlen);

/*
 * Classify a response from provider @p (NULL: RFC 6749 exactly): HTTP
 * @status (0 if none arrived), its Content-Type @ctype or NULL, @body of
 * @len bytes (a JSON object, or form-encoded when @ctype says so), the
 * Retry-After header or NULL, at @now_ms. @p's profile decides the error
 * field and codes, the scope separator and the extra fields kept. Fills
 * @res.
 */
void oauth_classify(const struct provider_conf *p, long status,
		    const char *ctype, const char *body, size_t len,
		    const char *retry_after, int64_t now_ms,
		    struct oauth_result *res);

/* Split @s at @sep (and, for ',', at spaces too) into @t's sorted, unique
 * scope list. 0/-errno. */
int oauth_split_scopes(const char *s, char sep, struct oauth_token *t);

/* Release what a result holds, wiping the token. Safe to call twice. */
void oauth_result_clear(struct oauth_result *res);

/* Copy @in into @out (size @n) keeping only printable ASCII. */
void oauth_sanitize(const char *in, size_t inlen, char *out, size_t n);

#endif
