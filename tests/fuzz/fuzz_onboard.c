/*
 * libFuzzer target: what onboarding reads from outside. The first byte
 * picks the parser: even, the request head that reached the loopback
 * redirect listener (any local process can connect to it); odd, the device
 * authorization endpoint's answer, with the next two bytes as its status.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "onboard.h"
#include "util.h"

static void check_printable(const char *s)
{
	for (; s && *s; s++)
		if (*s < 0x20 || *s > 0x7e)
			abort(); /* would reach the operator's terminal */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512] = "", *head, *code = NULL;
	struct device_auth d;
	const char *page[2];
	long status;

	if (size < 3)
		return 0;
	if (data[0] & 1) {
		status = 100 + (long)((data[1] << 8 | data[2]) % 500);
		if (device_auth_parse(status, (const char *)data + 3, size - 3,
				      &d, err, sizeof(err)) == 0) {
			check_printable(d.user_code);
			check_printable(d.uri);
			check_printable(d.uri_complete);
			device_auth_clear(&d);
		}
		check_printable(err);
		return 0;
	}
	head = strndup((const char *)data + 1, size - 1);
	if (!head)
		return 0;
	if (loopback_parse(
		    head, "/callback",
		    &(struct callback_check){
			    .state = "st4te",
			    .issuer = data[0] & 2 ? "https://as.example" : NULL,
			    .iss_required = data[0] & 4,
		    },
		    &code, page, err, sizeof(err)) == 0 &&
	    (!code || !*code))
		abort(); /* accepted without a code */
	check_printable(err);
	strfreezero(code);
	free(head);
	return 0;
}
