/* buf.c - see buf.h. */
#include "core/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static int ring_init(struct io_uring *ring, struct buf_ring *r, unsigned count, uint16_t base,
		     uint16_t group)
{
	size_t ring_size = count * sizeof(struct io_uring_buf);
	struct io_uring_buf_reg reg;
	int ret;

	r->count = count;
	r->base = base;
	r->group = group;
	/* liburing 2.3 has no io_uring_setup_buf_ring(): register by hand */
	r->br = mmap(NULL, ring_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (r->br == MAP_FAILED) {
		r->br = NULL;
		return -errno;
	}
	r->bufs = mmap(NULL, (size_t)count * BUF_SIZE, PROT_READ | PROT_WRITE,
		       MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (r->bufs == MAP_FAILED) {
		r->bufs = NULL;
		return -errno;
	}
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)r->br;
	reg.ring_entries = count;
	reg.bgid = group;
	ret = io_uring_register_buf_ring(ring, &reg, 0);
	if (ret < 0)
		return ret;
	io_uring_buf_ring_init(r->br);
	for (unsigned i = 0; i < count; i++)
		io_uring_buf_ring_add(r->br, r->bufs + (size_t)i * BUF_SIZE, BUF_SIZE,
				      (uint16_t)(base + i), io_uring_buf_ring_mask(count), (int)i);
	io_uring_buf_ring_advance(r->br, (int)count);
	return 0;
}

static void ring_fini(struct buf_ring *r)
{
	if (r->bufs)
		munmap(r->bufs, (size_t)r->count * BUF_SIZE);
	r->bufs = NULL;
	if (r->br)
		munmap(r->br, r->count * sizeof(struct io_uring_buf));
	r->br = NULL;
}

int bufs_init(struct bufs *b, struct io_uring *ring)
{
	int ret = ring_init(ring, &b->rings[0], BUF_COUNT, 0, BUF_GROUP);

	if (ret < 0)
		return ret;
	ret = ring_init(ring, &b->rings[1], BUF_HOT_COUNT, BUF_COUNT, BUF_HOT_GROUP);
	if (ret < 0)
		return ret;
	b->plain = calloc(PLAIN_MAX, sizeof(*b->plain));
	b->plain_free = calloc(PLAIN_MAX, sizeof(*b->plain_free));
	if (!b->plain || !b->plain_free)
		return -ENOMEM;
	return 0;
}

void bufs_fini(struct bufs *b)
{
	ring_fini(&b->rings[0]);
	ring_fini(&b->rings[1]);
	if (b->plain)
		for (unsigned i = 0; i < b->nplain; i++)
			free(b->plain[i]);
	free(b->plain);
	free(b->plain_free);
	b->plain = NULL;
	b->plain_free = NULL;
}

uint16_t buf_plain_get(struct bufs *b)
{
	uint16_t i;

	if (b->nplain_free) {
		i = b->plain_free[--b->nplain_free];
	} else if (b->nplain < PLAIN_MAX) {
		i = (uint16_t)b->nplain++;
	} else {
		return BID_NONE;
	}
	if (b->plain[i]) {
		b->nplain_kept--;
	} else if (!(b->plain[i] = malloc(BUF_SIZE))) {
		b->plain_free[b->nplain_free++] = i;
		return BID_NONE;
	}
	return (uint16_t)(PLAIN_BASE + i);
}

static void plain_release(struct bufs *b, uint16_t i)
{
	if (b->nplain_kept < PLAIN_KEEP) {
		b->nplain_kept++;
	} else {
		free(b->plain[i]);
		b->plain[i] = NULL;
	}
	b->plain_free[b->nplain_free++] = i;
}

void buf_release(struct bufs *b, uint16_t bid)
{
	struct buf_ring *r;

	if (bid >= PLAIN_BASE) {
		plain_release(b, (uint16_t)(bid - PLAIN_BASE));
		return;
	}
	r = &b->rings[bid >= BUF_COUNT];
	io_uring_buf_ring_add(r->br, buf_ptr(b, bid), BUF_SIZE, bid,
			      io_uring_buf_ring_mask(r->count), 0);
	io_uring_buf_ring_advance(r->br, 1);
}
