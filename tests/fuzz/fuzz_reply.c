/* fuzz_reply.c - the reply parser and the EHLO filter: a filtered reply is
 * never longer than its input and still parses as one reply. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	size_t used;
	int code;
	char *out;

	if (smtp_parse_reply(p, size, &code, &used) != SMTP_OK)
		return 0;
	if (used > size || code < 200 || code > 599)
		abort();
	out = malloc(used ? used : 1);
	if (!out)
		return 0;
	for (unsigned drop = 0; drop < 0x40; drop += 7) {
		size_t n = smtp_ehlo_filter(p, used, out, drop), n2;
		int code2;

		if (n > used || (n && (smtp_parse_reply(out, n, &code2, &n2) != SMTP_OK ||
				       n2 != n || code2 != code)))
			abort();
		if (smtp_ehlo_extensions(out, n) & drop)
			abort();
	}
	free(out);
	return 0;
}
