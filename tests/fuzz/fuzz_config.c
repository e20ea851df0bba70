/* fuzz_config.c - the configuration loader over arbitrary bytes: an error
 * or a tree, never a crash or a leak. No DNS: names other than localhost
 * are refused. */
#include <stdint.h>
#include <stdlib.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[CFG_ERR_MAX];
	struct config *c;

	config_set_resolver_offline(true);
	c = config_load_buffer("fuzz.yaml", (const char *)data, size, err, sizeof(err));
	config_free(c);
	return 0;
}
