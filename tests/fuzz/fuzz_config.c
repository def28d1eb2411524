/* libFuzzer target: the JSON configuration parser and its validation. */
#include <stddef.h>
#include <stdint.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg = NULL;
	char err[512];

	if (config_parse((const char *)data, size, "/fuzz/c.json", &cfg, err,
			 sizeof(err)) == 0) {
		config_set_read_path(cfg, true, err, sizeof(err));
		config_free(cfg);
	}
	return 0;
}
