/* Unit tests for oauth: token request bodies and response classification. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "config.h"
#include "http.h"
#include "jwt.h"
#include "oauth.h"
#include "onboard.h"
#include "record.h"

static void classify(long status, const char *body, const char *retry_after,
		     struct oauth_result *res)
{
	oauth_classify(NULL, status, NULL, body, body ? strlen(body) : 0,
		       retry_after, 1000000, res);
}

static void success_full(void **state)
{
	struct oauth_result res;

	classify(200,
		 "{\"access_token\":\"abc.def\",\"token_type\":\"bearer\","
		 "\"expires_in\":3600,\"scope\":\"b a b\"}",
		 NULL, &res);
	assert_int_equal(res.outcome, OAUTH_OK);
	assert_string_equal(res.tok.access_token, "abc.def");
	assert_int_equal(res.tok.len, 7);
	assert_string_equal(res.tok.token_type, "bearer");
	assert_int_equal(res.tok.expires_in_ms, 3600000);
	assert_int_equal(res.tok.n_scopes, 2); /* sorted, deduplicated */
	assert_string_equal(res.tok.scopes[0], "a");
	assert_string_equal(res.tok.scopes[1], "b");
	oauth_result_clear(&res);
	assert_null(res.tok.access_token);
}

static void success_minimal(void **state)
{
	struct oauth_result res;

	classify(200, "{\"access_token\":\"t\"}", NULL, &res);
	assert_int_equal(res.outcome, OAUTH_OK);
	assert_string_equal(res.tok.token_type, "Bearer");
	assert_int_equal(res.tok.expires_in_ms, -1);
	assert_null(res.tok.scopes);
	oauth_result_clear(&res);
}

static void malformed_bodies(void **state)
{
	static const char *const bodies[] = {
		"<html><body>Oops</body></html>",
		"{\"access_token\": \"abc\", \"expi",
		"{\"token_type\":\"Bearer\",\"expires_in\":3600}",
		"{\"access_token\":\"\"}",
		"{\"access_token\":42}",
		"{\"access_token\":\"a b\"}",
		"{\"access_token\":\"a\\nb\"}",
		"{\"access_token\":\"t\",\"expires_in\":\"3600\"}",
		"{\"access_token\":\"t\",\"expires_in\":-5}",
		"{\"access_token\":\"t\",\"expires_in\":0}",
		"{\"access_token\":\"t\",\"expires_in\":1e12}",
		"{\"access_token\":\"t\",\"scope\":[\"a\"]}",
		"{\"access_token\":\"t\",\"token_type\":\"\"}",
		"[\"access_token\"]",
		"{\"access_token\":\"t\",\"access_token\":\"u\"}",
		"",
	};
	struct oauth_result res;
	size_t i;

	for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		classify(200, bodies[i], NULL, &res);
		if (res.outcome != OAUTH_MALFORMED)
			fail_msg("body %zu classified as %s", i,
				 oauth_outcome_name(res.outcome));
		assert_null(res.tok.access_token);
		assert_non_null(strstr(res.error, "malformed"));
	}
}

/* Each body shape a hostile or broken provider answered with in the
 * integration tests (test_hostile.py, which keeps the transport faults),
 * and the words status's last_error must carry for it. */
static void hostile_bodies_are_named(void **state)
{
	static const struct {
		long status;
		const char *body;
		const char *words;
	} cases[] = {
		{200, "<html>oops</html>", "body is not a JSON object"},
		{200, "{\"access_token\": \"abc\", \"expi",
		 "body is not a JSON object"},
		{200, "[]", "body is not a JSON object"},
		{200, "{\"access_token\":12345,\"expires_in\":3600}",
		 "no access_token string"},
		{200, "{\"access_token\":[\"a\"]}", "no access_token string"},
		{200, "{\"access_token\":\"x1\",\"token_type\":7}",
		 "token_type"},
		{200, "{\"access_token\":\"x2\",\"expires_in\":-5}",
		 "expires_in is not positive"},
		{200, "{\"access_token\":\"x3\",\"expires_in\":0}",
		 "expires_in is not positive"},
		{200, "{\"access_token\":\"x4\",\"expires_in\":1e12}",
		 "expires_in is over one year"},
		{200, "{\"access_token\":\"x5\",\"expires_in\":\"3600\"}",
		 "expires_in is not a number"},
		{502, "<html>Bad gateway</html>", "HTTP 502"},
		{400, "{\"error\": 42}", "HTTP 400"},
	};
	struct oauth_result res;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		classify(cases[i].status, cases[i].body, NULL, &res);
		if (res.outcome == OAUTH_OK ||
		    !strstr(res.error, cases[i].words))
			fail_msg("case %zu: %s: \"%s\"", i,
				 oauth_outcome_name(res.outcome), res.error);
		assert_null(res.tok.access_token);
		oauth_result_clear(&res);
	}
}

static void oversized_token_refused(void **state)
{
	size_t n = OAUTH_MAX_TOKEN_BYTES + 1;
	char *body = malloc(n + 32);
	struct oauth_result res;

	strcpy(body, "{\"access_token\":\"");
	memset(body + 17, 'a', n);
	strcpy(body + 17 + n, "\"}");
	classify(200, body, NULL, &res);
	assert_int_equal(res.outcome, OAUTH_MALFORMED);
	assert_non_null(strstr(res.error, "over the"));
	free(body);
}

static void error_codes(void **state)
{
	static const struct {
		long status;
		const char *body;
		enum oauth_outcome want;
	} cases[] = {
		{400, "{\"error\":\"invalid_grant\"}", OAUTH_INVALID_GRANT},
		{401, "{\"error\":\"invalid_client\"}", OAUTH_INVALID_CLIENT},
		{400, "{\"error\":\"unauthorized_client\"}",
		 OAUTH_INVALID_CLIENT},
		{400, "{\"error\":\"invalid_scope\"}", OAUTH_REJECTED},
		{400, "{\"error\":\"something_new\"}", OAUTH_REJECTED},
		{503, "{\"error\":\"temporarily_unavailable\"}",
		 OAUTH_TRANSIENT},
		{500, "<html>", OAUTH_TRANSIENT},
		{502, NULL, OAUTH_TRANSIENT},
		{408, NULL, OAUTH_TRANSIENT},
		{429, "{\"error\":\"rate_limited\"}", OAUTH_RATE_LIMITED},
		{401, "Unauthorized", OAUTH_INVALID_CLIENT},
		{404, "not found", OAUTH_REJECTED},
		{302, NULL, OAUTH_REJECTED},
		/* Slack-style: 200 with an error object. */
		{200, "{\"ok\":false,\"error\":\"invalid_grant\"}",
		 OAUTH_INVALID_GRANT},
	};
	struct oauth_result res;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		classify(cases[i].status, cases[i].body, NULL, &res);
		if (res.outcome != cases[i].want)
			fail_msg("case %zu: got %s", i,
				 oauth_outcome_name(res.outcome));
	}
}

static void error_text_is_sanitized(void **state)
{
	struct oauth_result res;

	classify(401,
		 "{\"error\":\"invalid_client\",\"error_description\":"
		 "\"bad\\u0007 client\\nsecret\"}",
		 NULL, &res);
	assert_string_equal(res.error,
			    "invalid_client: bad? client?secret (HTTP 401)");
}

static void retry_after_parsed(void **state)
{
	struct oauth_result res;

	classify(429, "{}", "7", &res);
	assert_int_equal(res.outcome, OAUTH_RATE_LIMITED);
	assert_int_equal(res.retry_after_ms, 7000);
	classify(503, NULL, "2", &res);
	assert_int_equal(res.outcome, OAUTH_RATE_LIMITED);
	assert_int_equal(res.retry_after_ms, 2000);
	classify(503, NULL, NULL, &res);
	assert_int_equal(res.outcome, OAUTH_TRANSIENT);
	assert_int_equal(res.retry_after_ms, -1);
}

static void request_basic_and_post(void **state)
{
	char *scopes[] = {"read:all", "write x", NULL};
	struct param params[] = {{"audience", "https://api.example/"}};
	struct provider_conf p = {
		.client_id = "my id",
		.client_secret = "p@ss:word",
		.auth = AUTH_CLIENT_SECRET_BASIC,
		.params = params,
		.n_params = 1,
	};
	struct cred_conf cc = {.provider = &p, .scopes = scopes, .n_scopes = 1};
	struct buf body;
	char *auth;

	assert_int_equal(oauth_build_request(&cc, NULL, NULL, &body, &auth), 0);
	assert_string_equal(body.data,
			    "grant_type=client_credentials"
			    "&scope=read%3Aall"
			    "&audience=https%3A%2F%2Fapi.example%2F");
	/* base64("my%20id:p%40ss%3Aword") */
	assert_string_equal(auth, "Authorization: Basic "
				  "bXklMjBpZDpwJTQwc3MlM0F3b3Jk");
	buf_free(&body);
	free(auth);

	p.auth = AUTH_CLIENT_SECRET_POST;
	p.n_params = 0;
	cc.n_scopes = 2;
	assert_int_equal(oauth_build_request(&cc, NULL, NULL, &body, &auth), 0);
	assert_null(auth);
	assert_string_equal(body.data,
			    "grant_type=client_credentials"
			    "&scope=read%3Aall%20write%20x"
			    "&client_id=my%20id&client_secret=p%40ss%3Aword");
	buf_free(&body);
}

static void refresh_token_grant(void **state)
{
	char *scopes[] = {"offline", NULL};
	struct provider_conf p = {
		.client_id = "id",
		.client_secret = "sec",
		.auth = AUTH_CLIENT_SECRET_POST,
	};
	struct cred_conf cc = {.provider = &p, .scopes = scopes, .n_scopes = 1};
	struct oauth_result res;
	struct buf body;
	char *auth;

	assert_int_equal(oauth_build_request(&cc, NULL, "rt/1+2", &body, &auth),
			 0);
	assert_string_equal(body.data, "grant_type=refresh_token"
				       "&refresh_token=rt%2F1%2B2&scope=offline"
				       "&client_id=id&client_secret=sec");
	buf_free(&body);

	/* A rotated refresh token comes back with the access token. */
	classify(200, "{\"access_token\":\"a\",\"refresh_token\":\"r2\"}", NULL,
		 &res);
	assert_int_equal(res.outcome, OAUTH_OK);
	assert_string_equal(res.tok.refresh_token, "r2");
	oauth_result_clear(&res);
	assert_null(res.tok.refresh_token);
	classify(200, "{\"access_token\":\"a\"}", NULL, &res);
	assert_null(res.tok.refresh_token); /* none: keep the old one */
	oauth_result_clear(&res);
	classify(200, "{\"access_token\":\"a\",\"refresh_token\":7}", NULL,
		 &res);
	assert_int_equal(res.outcome, OAUTH_MALFORMED);
	classify(200, "{\"access_token\":\"a\",\"refresh_token\":\"r 2\"}",
		 NULL, &res);
	assert_int_equal(res.outcome, OAUTH_MALFORMED);
}

/* RFC 7636 appendix B's example, and fresh pairs. */
static void pkce_s256(void **state)
{
	char *c = NULL, *v = NULL, *c2 = NULL;

	assert_int_equal(
		pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
			       &c),
		0);
	assert_string_equal(c, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
	free(c);
	assert_int_equal(pkce_new(&v, &c), 0);
	assert_int_equal(strlen(v), 43); /* 32 random bytes */
	assert_null(strpbrk(v, "+/="));
	assert_int_equal(pkce_challenge(v, &c2), 0);
	assert_string_equal(c, c2);
	free(v);
	free(c);
	free(c2);
	{
		char *v2 = NULL, *cc2 = NULL;

		assert_int_equal(pkce_new(&v, &c), 0);
		assert_int_equal(pkce_new(&v2, &cc2), 0);
		assert_string_not_equal(v, v2); /* random each time */
		free(v);
		free(c);
		free(v2);
		free(cc2);
	}
}

/* A public client sends its id; every form adds the pairs in order. */
static void forms_and_public_clients(void **state)
{
	struct provider_conf p = {.client_id = "pub", .auth = AUTH_NONE};
	const char *pairs[] = {
		"grant_type", "authorization_code", "code", "c/1", "skipped",
		NULL,	      "code_verifier",	    "v",    NULL};
	struct buf body;
	char *auth;

	assert_int_equal(oauth_build_form(&p, NULL, "https://idp.example/token",
					  pairs, true, &body, &auth),
			 0);
	assert_string_equal(body.data, "grant_type=authorization_code"
				       "&code=c%2F1&code_verifier=v"
				       "&client_id=pub");
	assert_null(auth);
	buf_free(&body);
}

/* The claims of assertion @jwt, decoded. */
static json_t *jwt_claims(const char *jwt)
{
	const char *a = strchr(jwt, '.'), *b = a ? strchr(a + 1, '.') : NULL;
	char b64[1024];
	unsigned char raw[1024];
	size_t n, i;
	int len;

	assert_non_null(b);
	n = (size_t)(b - a - 1);
	assert_true(n + 4 < sizeof(b64));
	for (i = 0; i < n; i++)
		b64[i] = a[1 + i] == '-'   ? '+'
			 : a[1 + i] == '_' ? '/'
					   : a[1 + i];
	while (i % 4)
		b64[i++] = '=';
	b64[i] = '\0';
	len = EVP_DecodeBlock(raw, (unsigned char *)b64, (int)i);
	assert_true(len > 0);
	while (len > 0 && raw[len - 1] == '\0')
		len--; /* the padding's bytes */
	return json_loadb((char *)raw, (size_t)len, 0, NULL);
}

/* Each private_key_jwt assertion names the one endpoint it goes to, so a
 * revocation or introspection endpoint cannot replay it at the token
 * endpoint; a fixed jwt_audience is only sent to its own host. */
static void assertions_are_bound_to_their_endpoint(void **state)
{
	struct provider_conf p = {.client_id = "cid",
				  .auth = AUTH_PRIVATE_KEY_JWT,
				  .token_url = "https://idp.example/token"};
	const char *pairs[] = {"token", "x", NULL};
	const char *urls[] = {"https://idp.example/token",
			      "https://revoke.example/revoke"};
	json_t *claims[2];
	struct buf body;
	char *auth, *jwt, *jti[2];
	size_t i;

	p.private_key = EVP_EC_gen("P-256");
	assert_non_null(p.private_key);
	for (i = 0; i < 2; i++) {
		assert_int_equal(oauth_build_form(&p, NULL, urls[i], pairs,
						  false, &body, &auth),
				 0);
		jwt = strstr(body.data, "client_assertion=");
		assert_non_null(jwt);
		claims[i] = jwt_claims(jwt + strlen("client_assertion="));
		assert_non_null(claims[i]);
		assert_string_equal(
			json_string_value(json_object_get(claims[i], "aud")),
			urls[i]);
		jti[i] = (char *)json_string_value(
			json_object_get(claims[i], "jti"));
		assert_true(
			json_integer_value(json_object_get(claims[i], "exp")) -
				json_integer_value(
					json_object_get(claims[i], "iat")) <=
			60);
		buf_free(&body);
	}
	assert_string_not_equal(jti[0], jti[1]);
	json_decref(claims[0]);
	json_decref(claims[1]);
	p.jwt_audience = "https://idp.example";
	assert_int_equal(jwt_client_assertion(&p, urls[0], 1000, &jwt), 0);
	strfreezero(jwt);
	assert_int_equal(jwt_client_assertion(&p, urls[1], 1000, &jwt), -EXDEV);
	assert_null(jwt);
	EVP_PKEY_free(p.private_key);
}

/* Introspection answers: only a boolean "active" counts. */
static void introspection_answers(void **state)
{
	char err[128];
	bool active = true;

	assert_int_equal(oauth_parse_introspection(200, "{\"active\":false}",
						   16, &active, err,
						   sizeof(err)),
			 0);
	assert_false(active);
	assert_int_equal(oauth_parse_introspection(200, "{\"active\":\"no\"}",
						   15, &active, err,
						   sizeof(err)),
			 -EPROTO);
	assert_int_equal(oauth_parse_introspection(503, "", 0, &active, err,
						   sizeof(err)),
			 -EPROTO);
	assert_string_equal(err, "introspection: HTTP 503");
}

/* The shapes of the presets' providers, through their profiles. */
static void provider_shapes(void **state)
{
	static struct param slack_codes[] = {
		{"invalid_refresh_token", "invalid_grant"},
		{"ratelimited", "rate_limited"},
	};
	static struct param hub_codes[] = {
		{"BAD_REFRESH_TOKEN", "invalid_grant"},
	};
	static struct param gh_codes[] = {
		{"bad_refresh_token", "invalid_grant"},
		{"incorrect_client_credentials", "invalid_client"},
	};
	static char *sf_fields[] = {"instance_url", "id"};
	struct provider_conf slack = {.scope_sep = ',',
				      .error_codes = slack_codes,
				      .n_error_codes = 2};
	struct provider_conf hub = {.scope_sep = ' ',
				    .error_field = "status",
				    .error_codes = hub_codes,
				    .n_error_codes = 1};
	struct provider_conf gh = {
		.scope_sep = ',', .error_codes = gh_codes, .n_error_codes = 2};
	struct provider_conf sf = {.scope_sep = ' ',
				   .response_fields = sf_fields,
				   .n_response_fields = 2};
	const char *form = "application/x-www-form-urlencoded; charset=utf-8";
	struct oauth_result res;
	const char *b;

	/* Slack: HTTP 200 with "ok": false is a failure, mapped. */
	b = "{\"ok\":false,\"error\":\"invalid_refresh_token\"}";
	oauth_classify(&slack, 200, "application/json", b, strlen(b), NULL, 0,
		       &res);
	assert_int_equal(res.outcome, OAUTH_INVALID_GRANT);
	assert_string_equal(res.error_code, "invalid_refresh_token");
	b = "{\"ok\":false,\"error\":\"ratelimited\"}";
	oauth_classify(&slack, 200, NULL, b, strlen(b), NULL, 0, &res);
	assert_int_equal(res.outcome, OAUTH_RATE_LIMITED);
	/* Without the profile, an unknown code in a 200 is a refusal. */
	oauth_classify(NULL, 200, NULL, b, strlen(b), NULL, 0, &res);
	assert_int_equal(res.outcome, OAUTH_REJECTED);
	b = "{\"ok\":true,\"access_token\":\"xoxe.xoxb-1\",\"token_type\":"
	    "\"bot\",\"expires_in\":43200,\"refresh_token\":\"xoxe-1-r\","
	    "\"scope\":\"chat:write,channels:read\",\"team\":{\"id\":\"T\"}}";
	oauth_classify(&slack, 200, NULL, b, strlen(b), NULL, 0, &res);
	assert_int_equal(res.outcome, OAUTH_OK);
	assert_int_equal(res.tok.n_scopes, 2);
	assert_string_equal(res.tok.scopes[0], "channels:read");
	assert_string_equal(res.tok.refresh_token, "xoxe-1-r");
	oauth_result_clear(&res);

	/* GitHub: a form, numbers as digits, errors in a 200. */
	b = "access_token=ghu_abc&expires_in=28800&refresh_token=ghr_def&"
	    "refresh_token_expires_in=15811200&scope=&token_type=bearer";
	oauth_classify(&gh, 200, form, b, strlen(b), NULL, 0, &res);
	assert_int_equal(res.outcome, OAUTH_OK);
	assert_string_equal(res.tok.access_token, "ghu_abc");
	assert_int_equal(res.tok.expires_in_ms, 28800000);
	assert_int_equal(res.tok.refresh_expires_in_ms, 15811200000LL);
	assert_string_equal(res.tok.refresh_token, "ghr_def");
	oauth_result_clear(&res);
	b = "error=bad_refresh_token&error_description=The+refresh+token+"
	    "passed+is+incorrect+or+expired.&error_uri=https%3A%2F%2Fdocs";
	oauth_classify(&gh, 200, form, b, strlen(b), NULL, 0, &res);
	assert_int_equal(res.outcome, OAUTH_INVALID_GRANT);
	assert_non_null(strstr(res.error, "The refresh token passed"));
	b = "error=incorrect_client_credentials";
	oauth_classify(&gh, 200, form, b, strlen(b), NULL, 0, &res);
	assert_int_equal(res.outcome, OAUTH_INVALID_CLIENT);
	/* '+' is a space, %2B a plus; an empty value is a value. */
	b = "access_token=a%2Bb&token_type=bearer+x&scope=";
	oauth_classify(&gh, 200, form, b, strlen(b), NULL, 0, &res);
	assert_int_equal(res.outcome, OAUTH_MALFORMED); /* "bearer x" */
	b = "access_token=a%2Bb&token_type=bearer&scope=";
	oauth_classify(&gh, 200, form, b, strlen(b), NULL, 0, &res);
	assert_int_equal(res.outcome, OAUTH_OK);
	assert_string_equal(res.tok.access_token, "a+b");
	oauth_result_clear(&res);
	/* A form that names a key twice, or is not a form, is malformed. */
	b = "access_token=a&access_token=b";
	oauth_classify(&gh, 200, form, b, strlen(b), NULL, 0, &res);
	assert_int_equal(res.outcome, OAUTH_MALFORMED);
	b = "<html>";
	oauth_classify(&gh, 200, form, b, strlen(b), NULL, 0, &res);
	assert_int_equal(res.outcome, OAUTH_MALFORMED);

	/* HubSpot: the code is in "status", the text in "message". */
	b = "{\"status\":\"BAD_REFRESH_TOKEN\",\"message\":\"missing or "
	    "invalid refresh token\",\"correlationId\":\"c\"}";
	oauth_classify(&hub, 400, "application/json", b, strlen(b), NULL, 0,
		       &res);
	assert_int_equal(res.outcome, OAUTH_INVALID_GRANT);
	assert_non_null(strstr(res.error, "missing or invalid"));

	/* Salesforce: no expires_in, and instance_url kept. */
	b = "{\"access_token\":\"00D!AR8\",\"instance_url\":\"https://na1."
	    "salesforce.com\",\"id\":\"https://login.salesforce.com/id/00D/"
	    "005\",\"token_type\":\"Bearer\",\"issued_at\":\"1699999999999\","
	    "\"signature\":\"abc=\"}";
	oauth_classify(&sf, 200, "application/json", b, strlen(b), NULL, 0,
		       &res);
	assert_int_equal(res.outcome, OAUTH_OK);
	assert_int_equal(res.tok.expires_in_ms, -1);
	assert_int_equal(res.tok.n_fields, 2);
	assert_string_equal(res.tok.fields[0], "https://na1.salesforce.com");
	assert_string_equal(res.tok.fields[1],
			    "https://login.salesforce.com/id/00D/005");
	oauth_result_clear(&res);
	/* A field that is not a plain value is left out, not copied. */
	b = "{\"access_token\":\"t\",\"instance_url\":{\"x\":1}}";
	oauth_classify(&sf, 200, NULL, b, strlen(b), NULL, 0, &res);
	assert_int_equal(res.outcome, OAUTH_OK);
	assert_null(res.tok.fields[0]);
	oauth_result_clear(&res);
}

/* An MCP server's credential: the resource indicator goes with every token
 * request (RFC 8707 2.2), made as the client registered for it. */
static void registered_client_and_resource(void **state)
{
	struct provider_conf p = {
		.client_id = NULL,
		.auth = AUTH_NONE,
		.resource = "https://mcp.example/mcp",
	};
	struct record_client reg = {.id = "dyn-1", .auth_method = "none"};
	struct cred_conf cc = {.provider = &p};
	struct buf body;
	char *auth;

	(void)state;
	assert_int_equal(oauth_build_request(&cc, &reg, "rt", &body, &auth), 0);
	assert_null(auth);
	assert_string_equal(body.data,
			    "grant_type=refresh_token&refresh_token=rt"
			    "&resource=https%3A%2F%2Fmcp.example%2Fmcp"
			    "&client_id=dyn-1");
	buf_free(&body);
	/* A registered confidential client uses the method it was given. */
	reg.secret = "s";
	reg.auth_method = "client_secret_post";
	assert_int_equal(oauth_build_request(&cc, &reg, "rt", &body, &auth), 0);
	assert_non_null(strstr(body.data, "&client_id=dyn-1&client_secret=s"));
	buf_free(&body);
	assert_string_equal(oauth_client_id(&p, &reg), "dyn-1");
}

/* The audience of a JWT access token (RFC 9068), read to tell whether the
 * authorization server honoured the resource. */
static void token_audience(void **state)
{
	/* {"aud":"https://mcp.example/mcp"} and {"aud":["a","b"]} */
	const char *one = "e30.eyJhdWQiOiJodHRwczovL21jcC5leGFtcGxlL21jcCJ9.x";
	const char *two = "e30.eyJhdWQiOlsiYSIsImIiXX0.x";
	char other[80] = "";

	(void)state;
	assert_int_equal(jwt_audience_has(one, strlen(one),
					  "https://mcp.example/mcp/", other,
					  sizeof(other)),
			 1);
	assert_int_equal(
		jwt_audience_has(two, strlen(two), "c", other, sizeof(other)),
		0);
	assert_string_equal(other, "a");
	assert_int_equal(
		jwt_audience_has(two, strlen(two), "b", other, sizeof(other)),
		1);
	assert_int_equal(
		jwt_audience_has("opaque", 6, "b", other, sizeof(other)), -1);
}

/* Auth-params of a WWW-Authenticate challenge: whole names only, quoted
 * or not. */
static void challenge_params(void **state)
{
	const char *c = "Bearer error_description=\"a, b\", error=\"invalid_"
			"token\",resource_metadata=https://r.example/m";
	char v[64];

	(void)state;
	assert_true(http_auth_param(c, "error", v, sizeof(v)));
	assert_string_equal(v, "invalid_token");
	assert_true(http_auth_param(c, "error_description", v, sizeof(v)));
	assert_string_equal(v, "a, b");
	assert_true(http_auth_param(c, "resource_metadata", v, sizeof(v)));
	assert_string_equal(v, "https://r.example/m");
	assert_false(http_auth_param(c, "scope", v, sizeof(v)));
	assert_false(http_auth_param(c, "error_description", v, 3));
	assert_true(http_url_safe("https://a.example/x"));
	assert_true(http_url_safe("http://127.0.0.1:8/x"));
	assert_false(http_url_safe("http://a.example/x"));
	assert_false(http_url_safe("ftp://127.0.0.1/x"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(success_full),
		cmocka_unit_test(success_minimal),
		cmocka_unit_test(malformed_bodies),
		cmocka_unit_test(hostile_bodies_are_named),
		cmocka_unit_test(oversized_token_refused),
		cmocka_unit_test(error_codes),
		cmocka_unit_test(error_text_is_sanitized),
		cmocka_unit_test(retry_after_parsed),
		cmocka_unit_test(request_basic_and_post),
		cmocka_unit_test(refresh_token_grant),
		cmocka_unit_test(pkce_s256),
		cmocka_unit_test(forms_and_public_clients),
		cmocka_unit_test(assertions_are_bound_to_their_endpoint),
		cmocka_unit_test(introspection_answers),
		cmocka_unit_test(provider_shapes),
		cmocka_unit_test(registered_client_and_resource),
		cmocka_unit_test(token_audience),
		cmocka_unit_test(challenge_params),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
