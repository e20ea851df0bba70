/* dbuf.h - a growable byte buffer for what a connection's owner keeps
 * (partial lines, replies not yet sent, overflow): data is p[off..len).
 * It holds no memory once emptied, so idle sessions cost nothing. */
#ifndef MXLB_DBUF_H
#define MXLB_DBUF_H

#include <stddef.h>
#include <stdint.h>

/* 16 octets: the allocation's size is not kept but derived from len
 * (dbuf.c's alloc_size()), as idle sessions hold five of these. */
struct dbuf {
	char *p;
	uint32_t off, len;
};

/* Append len octets; -1 (nothing appended) past max used octets or when
 * out of memory. */
int dbuf_append(struct dbuf *b, const char *p, size_t len, size_t max);
/* Drop n octets from the front; freed when nothing is left. */
void dbuf_consume(struct dbuf *b, size_t n);
void dbuf_free(struct dbuf *b);

static inline size_t dbuf_used(const struct dbuf *b)
{
	return b->len - b->off;
}

static inline char *dbuf_data(const struct dbuf *b)
{
	return b->p + b->off;
}

#endif
