/* fuzz_command.c - the command parser over arbitrary input, consumed the
 * way smtp_front.c consumes it. */
#include <stdint.h>
#include <stdlib.h>

#include "proxy/smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	bool discarding = false;

	while (size) {
		struct smtp_cmd c;
		size_t used = 0;
		bool eol = false;

		if (discarding) {
			discarding = !smtp_skip_line(p, size, &used);
		} else {
			enum smtp_parse r = smtp_parse_command(p, size, &c, &used, &eol);

			if (r == SMTP_AGAIN)
				break;
			if (r == SMTP_OK && (c.line_len != used || c.arg + c.arg_len > p + used))
				abort();
			if (r == SMTP_INVALID && c.error == SMTP_CMD_ERR_TOO_LONG)
				discarding = !eol;
		}
		if (used == 0 || used > size)
			abort();
		p += used;
		size -= used;
	}
	return 0;
}
