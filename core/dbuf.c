/* dbuf.c - see dbuf.h. */
#include "core/dbuf.h"

#include <stdlib.h>
#include <string.h>

#define DBUF_MIN 1024

/* What b->p holds at least: allocations are powers of two from DBUF_MIN
 * and len never passes the allocation, so the power of two that holds
 * len is never more than was allocated (after a compaction it may be
 * less: the buffer then grows by a realloc it did not need, no harm). */
static size_t alloc_size(const struct dbuf *b)
{
	if (!b->p)
		return 0;
	if (b->len <= DBUF_MIN)
		return DBUF_MIN;
	return (size_t)1 << (32 - __builtin_clz(b->len - 1));
}

int dbuf_append(struct dbuf *b, const char *p, size_t len, size_t max)
{
	if (b->off && b->off == b->len)
		b->off = b->len = 0;
	if (dbuf_used(b) + len > max)
		return -1;
	if (b->len + len > alloc_size(b)) {
		size_t used = dbuf_used(b), cap = DBUF_MIN;
		char *np;

		while (cap < used + len)
			cap *= 2;
		if (b->off) { /* compact before growing */
			memmove(b->p, b->p + b->off, used);
			b->off = 0;
			b->len = (uint32_t)used;
		}
		if (b->len + len > alloc_size(b)) {
			np = realloc(b->p, cap);
			if (!np)
				return -1;
			b->p = np;
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
	b->off = b->len = 0;
}
