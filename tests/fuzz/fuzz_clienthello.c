/* fuzz_clienthello.c - the ClientHello SNI reader over arbitrary bytes:
 * the name it returns always lies inside the input. */
#include <stdint.h>
#include <stdlib.h>

#include "tls/clienthello.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tls_hello_info info;

	if (tls_parse_client_hello(data, size, &info) != TLS_HELLO_OK)
		return 0;
	if (info.record_len > size)
		abort();
	if (info.has_sni && ((const uint8_t *)info.sni < data ||
			     (const uint8_t *)info.sni + info.sni_len > data + info.record_len ||
			     info.sni_len == 0 || info.sni_len > TLS_SNI_MAX))
		abort();
	return 0;
}
