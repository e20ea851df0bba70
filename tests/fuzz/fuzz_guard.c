/* fuzz_guard.c - the guard fed random chunks of client and server bytes:
 * output stays in bounds, and no output line starts with XCLIENT in
 * command mode is not checked here (unit tests do), only memory safety and
 * the length contract. The first byte of each chunk picks the side.
 * A second guard takes each client chunk through smtp_guard_pass() first
 * (as the relay does): its output and consumption must be the same. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp_guard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_guard g, g2;
	char out[256 + SMTP_GUARD_SLACK], out2[256 + SMTP_GUARD_SLACK];

	smtp_guard_init(&g);
	smtp_guard_init(&g2);
	while (size > 1) {
		size_t n = (data[0] & 0x7f) + 1, outlen = 0, used = 0;
		bool server = data[0] & 0x80;

		data++;
		size--;
		if (n > size)
			n = size;
		if (server) {
			smtp_guard_server(&g, (const char *)data, n);
			smtp_guard_server(&g2, (const char *)data, n);
			used = n;
		} else {
			size_t pass = smtp_guard_pass(&g2, (const char *)data, n), outlen2 = 0, used2 = 0;

			smtp_guard_client(&g, (const char *)data, n, out, &outlen, &used);
			if (outlen > n + SMTP_GUARD_SLACK || used > n || pass > n)
				abort();
			if (pass < n)
				smtp_guard_client(&g2, (const char *)data + pass, n - pass, out2, &outlen2,
						  &used2);
			/* the pass-through prefix is the input itself */
			if (used != pass + used2 || outlen != pass + outlen2 ||
			    memcmp(out, data, pass) || memcmp(out + pass, out2, outlen2))
				abort();
			if (!used && !smtp_guard_holding(&g) && n)
				used = n; /* nothing taken while not holding: skip it */
		}
		data += used ? used : n;
		size -= used ? used : n;
	}
	return 0;
}
