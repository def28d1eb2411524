/*
 * jwt: the client assertion of private_key_jwt (RFC 7523 section 2.2,
 * OpenID Connect Core section 9), signed RS256 or ES256 with OpenSSL, and
 * base64url (RFC 4648 section 5) for it and for PKCE.
 */
#ifndef CREDFS_JWT_H
#define CREDFS_JWT_H

#include <stddef.h>
#include <stdint.h>

struct provider_conf;

/* base64url of @n bytes at @p, no padding, into a new string *@out. */
int jwt_b64url(const void *p, size_t n, char **out);

/*
 * A fresh assertion for one request of @p to @endpoint at @now_s (Unix
 * seconds): iss and sub the client_id, aud the endpoint itself (or the
 * configured jwt_audience, only when @endpoint is on the host it names:
 * else -EXDEV, nothing made), a random jti, iat, and exp one minute later,
 * so that whoever runs one endpoint cannot replay it at another. 0 with a
 * new string in *@out (wipe it), or -errno.
 */
int jwt_client_assertion(const struct provider_conf *p, const char *endpoint,
			 int64_t now_s, char **out);

/* The audience of an access token per RFC 9068 (a JWT's "aud", a string
 * or an array), read without checking the signature: for telling whether
 * an authorization server honoured a resource indicator, never for
 * trusting the token. 1 when @aud is among them, 0 when the token names
 * others (the first into @other, sanitized), -1 when it is no JWT or names
 * no audience. */
int jwt_audience_has(const char *token, size_t len, const char *aud,
		     char *other, size_t otherlen);

#endif
