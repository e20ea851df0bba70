/* fuzz_guard.c - the guard fed random chunks of client and server bytes:
 * output stays in bounds, and no output line starts with XCLIENT in
 * command mode is not checked here (unit tests do), only memory safety and
 * the length contract. The first byte of each chunk picks the side. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp_guard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_guard g;
	char out[256 + SMTP_GUARD_SLACK];

	smtp_guard_init(&g);
	while (size > 1) {
		size_t n = (data[0] & 0x7f) + 1, outlen = 0, used = 0;
		bool server = data[0] & 0x80;

		data++;
		size--;
		if (n > size)
			n = size;
		if (server) {
			smtp_guard_server(&g, (const char *)data, n);
			used = n;
		} else {
			smtp_guard_client(&g, (const char *)data, n, out, &outlen, &used);
			if (outlen > n + SMTP_GUARD_SLACK || used > n)
				abort();
			if (!used && !smtp_guard_holding(&g) && n)
				used = n; /* nothing taken while not holding: skip it */
		}
		data += used ? used : n;
		size -= used ? used : n;
	}
	return 0;
}
