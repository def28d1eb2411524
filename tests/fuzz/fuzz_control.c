/*
 * libFuzzer target: the control socket's request line (credfsctl to the
 * daemon). Only root and the daemon's user may connect, but the parser
 * must still hold for any bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct admin_req req;
	char line[CONTROL_MAX_REQUEST + 1];

	if (size > CONTROL_MAX_REQUEST)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';
	if (admin_parse(line, &req) == 0) {
		if (req.provider && !req.tenant)
			abort();
		if (req.verb == ADMIN_RELOAD_ONE && !req.provider)
			abort();
		if (req.verb == ADMIN_REFRESH && !req.tenant != !req.provider)
			abort();
	}
	return 0;
}
