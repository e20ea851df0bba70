/* fuzz_config.c - the configuration loader over arbitrary bytes: an error
 * or a tree, never a crash or a leak. The same bytes, as one C string, go
 * through the value parsers too. No DNS: names other than localhost are
 * refused (config_set_resolver_offline). */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void value_parsers(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr = { htonl(0xc0000201) } };
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
	struct cfg_cidr cidr;
	struct cfg_addr addr;
	uint32_t ms;
	uint64_t bytes;

	if (!s)
		return;
	memcpy(s, data, size);
	s[size] = '\0';
	config_parse_duration(s, &ms);
	config_parse_size(s, &bytes);
	config_parse_addr(s, &addr);
	if (config_parse_cidr(s, &cidr) == 0) {
		config_cidr_match(&cidr, (struct sockaddr *)&sin);
		sin6.sin6_addr.s6_addr[10] = sin6.sin6_addr.s6_addr[11] = 0xff;
		memcpy(&sin6.sin6_addr.s6_addr[12], &sin.sin_addr, 4);
		config_cidr_match(&cidr, (struct sockaddr *)&sin6);
	}
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[CFG_ERR_MAX];
	struct config *c;

	config_set_resolver_offline(true);
	c = config_load_buffer("fuzz.yaml", (const char *)data, size, err, sizeof(err));
	config_free(c);
	if (size <= 512)
		value_parsers(data, size);
	return 0;
}
