/*
 * jwt: compact JWS with OpenSSL's EVP signing. RS256 is RSASSA-PKCS1-v1_5
 * over SHA-256; ES256 is ECDSA P-256 over SHA-256, whose DER signature is
 * turned into the fixed 64-byte r || s that JWS wants (RFC 7518 3.4).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "config.h"
#include "http.h"
#include "jwt.h"
#include "oauth.h"
#include "util.h"

int jwt_b64url(const void *p, size_t n, char **out)
{
	size_t cap = 4 * ((n + 2) / 3) + 1, i, j;
	unsigned char *b = malloc(cap);
	int len;

	*out = NULL;
	if (!b)
		return -ENOMEM;
	len = EVP_EncodeBlock(b, p, (int)n);
	for (i = j = 0; i < (size_t)len; i++) {
		if (b[i] == '=')
			continue;
		b[j++] = b[i] == '+' ? '-' : b[i] == '/' ? '_' : b[i];
	}
	b[j] = '\0';
	*out = (char *)b;
	return 0;
}

/* The JSON object @o, compact, as base64url. */
static int b64url_json(json_t *o, char **out)
{
	char *text =
		o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	int r;

	if (!text)
		return -ENOMEM;
	r = jwt_b64url(text, strlen(text), out);
	free(text);
	return r;
}

/* DER ECDSA-Sig-Value -> r || s, 32 bytes each. */
static int ecdsa_raw(const unsigned char *der, size_t len,
		     unsigned char out[64])
{
	const unsigned char *p = der;
	ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
	const BIGNUM *r, *s;
	int ok;

	if (!sig)
		return -EINVAL;
	ECDSA_SIG_get0(sig, &r, &s);
	ok = BN_bn2binpad(r, out, 32) == 32 &&
	     BN_bn2binpad(s, out + 32, 32) == 32;
	ECDSA_SIG_free(sig);
	return ok ? 0 : -EINVAL;
}

static int sign(EVP_PKEY *key, bool ec, const char *input, char **out)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char *sig = NULL, raw[64];
	size_t len = 0;
	int r = -EIO;

	if (!md)
		return -ENOMEM;
	if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(md, NULL, &len, (const unsigned char *)input,
			   strlen(input)) != 1)
		goto out;
	sig = malloc(len);
	if (!sig || EVP_DigestSign(md, sig, &len, (const unsigned char *)input,
				   strlen(input)) != 1)
		goto out;
	if (ec) {
		r = ecdsa_raw(sig, len, raw);
		if (r == 0)
			r = jwt_b64url(raw, sizeof(raw), out);
	} else {
		r = jwt_b64url(sig, len, out);
	}
out:
	free(sig);
	EVP_MD_CTX_free(md);
	return r;
}

int jwt_client_assertion(const struct provider_conf *p, const char *endpoint,
			 int64_t now_s, char **out)
{
	char *want = NULL, *got = NULL;
	EVP_PKEY *key = p->private_key;
	bool ec = key && EVP_PKEY_is_a(key, "EC");
	json_t *h = json_object(), *c = json_object();
	char *hb = NULL, *cb = NULL, *jti = NULL, *sig = NULL;
	unsigned char rnd[16];
	struct buf input;
	int r = -ENOMEM;

	*out = NULL;
	buf_init(&input, 64 * 1024);
	if (!key)
		r = -ENOKEY;
	if (!key || !h || !c)
		goto out;
	if (p->jwt_audience) {
		want = http_url_host(p->jwt_audience, NULL);
		got = http_url_host(endpoint, NULL);
		if (!want || !got || strcmp(want, got)) {
			r = -EXDEV; /* an assertion for one host, to another */
			goto out;
		}
	}
	if (RAND_bytes(rnd, sizeof(rnd)) != 1 ||
	    jwt_b64url(rnd, sizeof(rnd), &jti) < 0)
		goto out;
	json_object_set_new(h, "alg", json_string(ec ? "ES256" : "RS256"));
	json_object_set_new(h, "typ", json_string("JWT"));
	if (p->key_id)
		json_object_set_new(h, "kid", json_string(p->key_id));
	json_object_set_new(c, "iss", json_string(p->client_id));
	json_object_set_new(c, "sub", json_string(p->client_id));
	json_object_set_new(
		c, "aud",
		json_string(p->jwt_audience ? p->jwt_audience : endpoint));
	json_object_set_new(c, "jti", json_string(jti));
	json_object_set_new(c, "iat", json_integer(now_s));
	json_object_set_new(c, "exp", json_integer(now_s + 60));
	r = b64url_json(h, &hb);
	if (r == 0)
		r = b64url_json(c, &cb);
	if (r == 0)
		r = buf_printf(&input, "%s.%s", hb, cb);
	if (r == 0)
		r = sign(key, ec, input.data, &sig);
	if (r == 0 && asprintf(out, "%s.%s", input.data, sig) < 0) {
		*out = NULL;
		r = -ENOMEM;
	}
out:
	json_decref(h);
	json_decref(c);
	free(hb);
	free(cb);
	free(jti);
	free(sig);
	free(want);
	free(got);
	buf_free(&input);
	return r;
}

/* The bytes of base64url (no padding) @in, @n of them, as a new
 * NUL-ended string in *@out with its length in *@outlen. 0 or -1. */
static int b64url_decode(const char *in, size_t n, char **out, size_t *outlen)
{
	char *std = malloc(n + 4);
	size_t i, m = n;
	int len;

	*out = NULL;
	if (!std)
		return -1;
	for (i = 0; i < n; i++)
		std[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	while (m % 4)
		std[m++] = '=';
	*out = malloc(m / 4 * 3 + 1);
	len = *out ? EVP_DecodeBlock((unsigned char *)*out,
				     (unsigned char *)std, (int)m)
		   : -1;
	free(std);
	if (len < 0) {
		free(*out);
		*out = NULL;
		return -1;
	}
	/* EVP_DecodeBlock counts the padding's zero bytes too. */
	*outlen = (size_t)len - (m - n < 3 ? m - n : 0);
	(*out)[*outlen] = '\0';
	return 0;
}

/* @a equals @b, a trailing slash either side aside. */
static bool same_resource(const char *a, const char *b)
{
	size_t na = strlen(a), nb = strlen(b);

	if (na && a[na - 1] == '/')
		na--;
	if (nb && b[nb - 1] == '/')
		nb--;
	return na == nb && !memcmp(a, b, na);
}

int jwt_audience_has(const char *token, size_t len, const char *aud,
		     char *other, size_t otherlen)
{
	const char *dot1 = memchr(token, '.', len), *dot2;
	json_t *claims = NULL, *a, *v;
	const char *first = NULL;
	char *payload = NULL;
	size_t plen;
	int r = -1;
	size_t i;

	if (!dot1)
		return -1;
	dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
	if (!dot2 || (size_t)(dot2 - dot1) > 16 * 1024)
		return -1;
	if (b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &payload,
			  &plen) == 0)
		claims = json_loadb(payload, plen, 0, NULL);
	free(payload);
	a = json_object_get(claims, "aud");
	if (json_is_string(a)) {
		first = json_string_value(a);
		r = same_resource(first, aud);
	} else if (json_is_array(a) && json_array_size(a)) {
		r = 0;
		json_array_foreach (a, i, v) {
			if (!json_is_string(v))
				continue;
			if (!first)
				first = json_string_value(v);
			if (same_resource(json_string_value(v), aud))
				r = 1;
		}
	}
	if (r == 0 && first)
		oauth_sanitize(first, strlen(first), other, otherlen);
	else if (r == 0)
		snprintf(other, otherlen, "?");
	json_decref(claims);
	return r;
}
