/* dbuf.c - see dbuf.h. */
#include "core/dbuf.h"

#include <stdlib.h>
#include <string.h>

int dbuf_append(struct dbuf *b, const char *p, size_t len, size_t max)
{
	if (b->off && b->off == b->len)
		b->off = b->len = 0;
	if (dbuf_used(b) + len > max)
		return -1;
	if (b->len + len > b->cap) {
		size_t used = dbuf_used(b), cap = b->cap ? b->cap : 1024;
		char *np;

		while (cap < used + len)
			cap *= 2;
		if (b->off) { /* compact before growing */
			memmove(b->p, b->p + b->off, used);
			b->off = 0;
			b->len = (uint32_t)used;
		}
		if (cap > b->cap) {
			np = realloc(b->p, cap);
			if (!np)
				return -1;
			b->p = np;
			b->cap = (uint32_t)cap;
		}
	}
	memcpy(b->p + b->len, p, len);
	b->len += (uint32_t)len;
	return 0;
}

void dbuf_consume(struct dbuf *b, size_t n)
{
	b->off += (uint32_t)n;
	if (b->off >= b->len)
		dbuf_free(b); /* idle sessions hold no buffer */
}

void dbuf_free(struct dbuf *b)
{
	free(b->p);
	b->p = NULL;
	b->off = b->len = b->cap = 0;
}
