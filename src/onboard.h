/*
 * onboard: the OAuth flows credfsctl runs to connect an account, and
 * revocation. Authorization code with PKCE (RFC 6749 4.1, RFC 7636 S256
 * only) through a loopback redirect listener (RFC 8252 7.3); the device
 * authorization grant (RFC 8628); token revocation (RFC 7009). Blocking
 * calls, for a command line tool; nothing here runs in the daemon.
 */
#ifndef CREDFS_ONBOARD_H
#define CREDFS_ONBOARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct buf;
struct cred_conf;
struct loopback;
struct oauth_result;
struct provider_conf;
struct record_client;

/* A PKCE pair: a verifier of 32 random bytes, base64url (43 characters),
 * and its S256 challenge. Wipe both with strfreezero. 0 or -errno. */
int pkce_new(char **verifier, char **challenge);

/* The S256 challenge of @verifier (RFC 7636 4.2). 0 or -errno. */
int pkce_challenge(const char *verifier, char **challenge);

/* @n random bytes, base64url: a state or nonce. 0 or -errno. */
int onboard_random_b64url(size_t n, char **out);

/*
 * Listen for the redirect: on the port and path of @redirect_uri (a
 * loopback http:// URI), or with NULL on an ephemeral port of 127.0.0.1
 * and @default_path. 0 or -errno with @err.
 */
int loopback_open(const char *redirect_uri, const char *default_path,
		  struct loopback **out, char *err, size_t errlen);

/* What a callback must carry to be believed. */
struct callback_check {
	const char *state;  /* this request's */
	const char *issuer; /* the provider's issuer, or NULL if unknown */
	bool iss_required;  /* its metadata says it sends iss (RFC 9207) */
};

/* The redirect_uri to send: the configured one, or the ephemeral one. */
const char *loopback_uri(const struct loopback *lb);

/*
 * Wait up to @timeout_ms for the callback on the listener's path that
 * passes @want, serving every connection at once (each has 5 s for its
 * request; a slow one holds no other). A callback with another state is
 * answered, said on stderr and ignored. Then its iss must be the issuer
 * (when known, and present when required), and it must carry a code (not
 * an error). Answers the browser with a short page either way. 0 with the
 * code in *@code, or -errno with what went wrong in @err: -ETIMEDOUT,
 * -EACCES (error=...), -EPERM (another issuer, or none), -EPROTO (no code).
 */
int loopback_wait(struct loopback *lb, const struct callback_check *want,
		  int64_t timeout_ms, char **code, char *err, size_t errlen);

/*
 * Check one request head @head (NUL-terminated, changed in place) that
 * reached the listener on @path. 1: not a callback for this request (keep
 * waiting; @err says why when it was a callback with another state);
 * otherwise as loopback_wait(). The page to answer with: title and text
 * in @page.
 */
int loopback_parse(char *head, const char *path,
		   const struct callback_check *want, char **code,
		   const char *page[2], char *err, size_t errlen);

/* Refuse callbacks that arrived after the first, then close. NULL-safe. */
void loopback_close(struct loopback *lb);

/* The authorization request URL (RFC 6749 4.1.1 with PKCE), for the
 * client registered for @cc (@reg with an id) or else the provider's. The
 * same @reg goes with every call below. */
int onboard_authorization_url(const struct cred_conf *cc,
			      const struct record_client *reg,
			      const char *redirect_uri, const char *state,
			      const char *challenge, char **out);

/* POST the form @pairs (client authentication added) to the token
 * endpoint and classify the answer into @res. */
void token_request(const struct cred_conf *cc, const struct record_client *reg,
		   const char *const *pairs, struct oauth_result *res);

/* A device authorization answer (RFC 8628 3.2). */
struct device_auth {
	char *device_code, *user_code, *uri, *uri_complete;
	int64_t expires_in_s, interval_s;
};

/*
 * Parse the device authorization endpoint's answer: 0, or -EPROTO with
 * why in @err. The user code and URIs, printed to a terminal, must be
 * printable ASCII. Free with device_auth_clear().
 */
int device_auth_parse(long status, const char *body, size_t len,
		      struct device_auth *d, char *err, size_t errlen);
void device_auth_clear(struct device_auth *d);

/*
 * The device flow for @cc: ask for a device code, print the verification
 * URI and user code to @out, poll the token endpoint (honouring interval,
 * authorization_pending, slow_down, expires_in) until an answer or
 * @timeout_ms. 0 with the token response in @res (its request sent at
 * *@sent_ms), or -errno with @err.
 */
int device_flow(const struct cred_conf *cc, const struct record_client *reg,
		int64_t timeout_ms, FILE *out, struct oauth_result *res,
		int64_t *sent_ms, char *err, size_t errlen);

/*
 * Revoke @token (of @hint type) at @p's revocation_url. 0 when the
 * provider confirmed (HTTP 200), else -errno; @msg says what happened.
 */
int revoke_token(const struct provider_conf *p, const struct record_client *reg,
		 const char *token, const char *hint, char *msg, size_t msglen);

/*
 * RFC 7591: register a public client for @cc at its provider's
 * registration_url (from the metadata), with @redirect_uri, into @out
 * (record_client_clear() it). 0, or -errno with @err: -EOPNOTSUPP when
 * the provider offers no registration.
 */
int register_client(const struct cred_conf *cc, const char *redirect_uri,
		    struct record_client *out, char *err, size_t errlen);

/* The client ID metadata document to host at @p's client_id (an https
 * URL), with @redirect_uri: JSON text to free, or NULL. */
char *client_metadata_document(const struct provider_conf *p,
			       const char *redirect_uri);

#endif
