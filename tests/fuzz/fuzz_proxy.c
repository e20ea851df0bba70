/* fuzz_proxy.c - the PROXY parser; whatever parses as addresses encodes
 * and parses back to the same addresses, v1 and v2. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_info pi, back;
	uint8_t v2[PROXY_V2_MAX];
	char v1[PROXY_V1_MAX + 1];
	size_t used, n;

	if (proxy_parse(data, size, &pi, &used) != PROXY_OK)
		return 0;
	if (used > size)
		abort();
	if (pi.local)
		return 0;
	n = proxy_v2_encode(v2, sizeof(v2), (struct sockaddr *)&pi.src, (struct sockaddr *)&pi.dst,
			    NULL);
	if (!n || proxy_parse(v2, n, &back, &used) != PROXY_OK || used != n ||
	    memcmp(&back.src, &pi.src, pi.src_len) || memcmp(&back.dst, &pi.dst, pi.dst_len))
		abort();
	n = proxy_v1_encode(v1, sizeof(v1), (struct sockaddr *)&pi.src, (struct sockaddr *)&pi.dst);
	if (!n || proxy_parse((uint8_t *)v1, n, &back, &used) != PROXY_OK || used != n ||
	    back.src_len != pi.src_len)
		abort();
	return 0;
}
