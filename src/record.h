/*
 * record: the sealed form of one credential, the same bytes in every store
 * backend. Layout (integers big-endian):
 *
 *   "CFSR" | version (1 byte, 1) | generation (8) | nonce (12) |
 *   ciphertext | tag (16)
 *
 * sealed with AES-256-GCM under the tenant's key (HKDF of the master key),
 * with associated data binding the version, tenant, provider and
 * generation. The plaintext is a JSON object. A record moved to another
 * tenant or provider, or with its generation edited, does not open.
 */
#ifndef CREDFS_RECORD_H
#define CREDFS_RECORD_H

#include <stddef.h>
#include <stdint.h>

struct buf;
struct record_field;

/* A client registered for this credential alone (RFC 7591 dynamic client
 * registration, credfsctl register): it stands in for the provider's
 * client_id and secret in every request made for the credential. */
struct record_client {
	char *id;	    /* NULL: none registered, the provider's is used */
	char *secret;	    /* NULL: a public client (PKCE, no secret) */
	char *auth_method;  /* how it authenticates: an auth_method name */
	char *redirect_uri; /* the redirect URI it was registered with */
};

#define RECORD_MAX_BYTES (1024 * 1024)

struct record {
	uint64_t generation;   /* +1 on every write of a credential */
	char *refresh_token;   /* NULL only in a revoked record */
	char *access_token;    /* or NULL */
	char *token_type;      /* or NULL */
	char *scope;	       /* granted, space-separated, or NULL */
	int64_t issued_ms;     /* 0 if unknown */
	int64_t expires_ms;    /* 0 if unknown */
	int64_t rt_expires_ms; /* the refresh token's expiry, 0 if unknown */
	char *revoked;	       /* the provider refused the refresh token (it
				* is not kept): why; NULL for a live grant */
	struct record_field *fields; /* the provider's response_fields */
	size_t n_fields;
	struct record_client client; /* or all NULL */
};

struct record_field {
	char *name;
	char *value;
};

#define RECORD_MAX_FIELDS 16

/* Seal @r as tenant/provider under @master into @out. 0 or -errno. */
int record_seal(const uint8_t *master, const char *tenant, const char *provider,
		const struct record *r, struct buf *out);

/*
 * Open @len bytes at @data as tenant/provider into @r (free with
 * record_clear). 0; -EPROTO for a damaged header or plaintext; -EBADMSG when
 * it is not authentic (tampered, another tenant's or provider's, or another
 * master key).
 */
int record_open(const uint8_t *master, const char *tenant, const char *provider,
		const void *data, size_t len, struct record *r);

/* The generation in a record's header, without opening it; -EPROTO. */
int record_generation(const void *data, size_t len, uint64_t *gen);

/* Wipe and free what @r holds. Safe on a zeroed record. */
void record_clear(struct record *r);

/* Copy @from into @to (cleared first); 0 or -ENOMEM (@to left empty). */
int record_client_copy(struct record_client *to,
		       const struct record_client *from);

/* Wipe and free what @c holds. Safe on a zeroed one. */
void record_client_clear(struct record_client *c);

#endif
