/*
 * libFuzzer target: everything a provider sends. The first two bytes pick
 * the HTTP status, the third whether a Retry-After header came (the next
 * bytes up to a NUL), whether the body is form-encoded and whether a
 * provider profile applies (its own error field and codes, a comma scope
 * separator, extra response fields); the rest is the body: token responses
 * (RFC 6749 5.1 and 5.2) and introspection answers (RFC 7662), and as
 * an access token, the audience read from it (RFC 9068).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config.h"
#include "jwt.h"
#include "oauth.h"

static struct param codes[] = {
	{"BAD_REFRESH_TOKEN", "invalid_grant"},
	{"ratelimited", "rate_limited"},
	{"internal_error", "transient"},
};
static char *fields[] = {"instance_url", "id"};
static const struct provider_conf profile = {
	.scope_sep = ',',
	.error_field = "status",
	.error_codes = codes,
	.n_error_codes = 3,
	.response_fields = fields,
	.n_response_fields = 2,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct oauth_result res;
	const char *retry = NULL, *body;
	char hdr[64] = "", err[256];
	size_t n, left;
	bool active;
	long status;

	if (size < 3)
		return 0;
	status = 100 + (long)((data[0] << 8 | data[1]) % 500);
	body = (const char *)data + 3;
	left = size - 3;
	if (data[2] & 1) {
		n = strnlen(body, left);
		memcpy(hdr, body, n < sizeof(hdr) ? n : sizeof(hdr) - 1);
		retry = hdr;
		n = n < left ? n + 1 : left; /* and its NUL */
		body += n;
		left -= n;
	}
	oauth_classify(data[2] & 4 ? &profile : NULL, status,
		       data[2] & 2 ? "application/x-www-form-urlencoded"
				   : "application/json",
		       body, left, retry, 1795870000000, &res);
	oauth_result_clear(&res);
	oauth_parse_introspection(status, body, left, &active, err,
				  sizeof(err));
	jwt_audience_has(body, left, "https://mcp.example/mcp", err,
			 sizeof(err));
	return 0;
}
