/* buf.c - see buf.h. */
#include "core/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static int ring_init(struct io_uring *ring, struct buf_ring *r, unsigned count, uint16_t base,
		     uint16_t group, bool inc)
{
	size_t ring_size = count * sizeof(struct io_uring_buf);
	struct io_uring_buf_reg reg;
	int ret;

	r->count = count;
	r->base = base;
	r->group = group;
	r->off = calloc(count, sizeof(*r->off));
	r->refs = calloc(count, sizeof(*r->refs));
	if (!r->off || !r->refs)
		return -ENOMEM;
	/* liburing 2.3 has no io_uring_setup_buf_ring(): register by hand */
	r->br = mmap(NULL, ring_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (r->br == MAP_FAILED) {
		r->br = NULL;
		return -errno;
	}
	r->bufs = mmap(NULL, (size_t)count * BUF_RING_SIZE, PROT_READ | PROT_WRITE,
		       MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (r->bufs == MAP_FAILED) {
		r->bufs = NULL;
		return -errno;
	}
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)r->br;
	reg.ring_entries = count;
	reg.bgid = group;
	/* liburing 2.3 ignores the flags argument: they are reg's "pad" */
	reg.pad = inc ? IOU_PBUF_RING_INC : 0;
	r->inc = inc;
	ret = io_uring_register_buf_ring(ring, &reg, 0);
	if (ret == -EINVAL && inc) {
		/* before 6.12: whole buffers, as ever */
		reg.pad = 0;
		r->inc = false;
		ret = io_uring_register_buf_ring(ring, &reg, 0);
	}
	if (ret < 0)
		return ret;
	io_uring_buf_ring_init(r->br);
	for (unsigned i = 0; i < count; i++) {
		r->refs[i] = 1; /* the kernel's */
		io_uring_buf_ring_add(r->br, r->bufs + (size_t)i * BUF_RING_SIZE, BUF_RING_SIZE,
				      (uint16_t)(base + i), io_uring_buf_ring_mask(count), (int)i);
	}
	io_uring_buf_ring_advance(r->br, (int)count);
	return 0;
}

static void ring_fini(struct buf_ring *r)
{
	free(r->off);
	free(r->refs);
	r->off = NULL;
	r->refs = NULL;
	if (r->bufs)
		munmap(r->bufs, (size_t)r->count * BUF_RING_SIZE);
	r->bufs = NULL;
	if (r->br)
		munmap(r->br, r->count * sizeof(struct io_uring_buf));
	r->br = NULL;
}

int bufs_init(struct bufs *b, struct io_uring *ring)
{
	int ret = ring_init(ring, &b->rings[0], BUF_COUNT, 0, BUF_GROUP, true);

	if (ret < 0)
		return ret;
	/* The relay's receives come from here, held sessions' too. */
	ret = ring_init(ring, &b->rings[1], BUF_HOT_COUNT, BUF_COUNT, BUF_HOT_GROUP, true);
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

static struct buf_ring *ring_of(struct bufs *b, uint16_t bid)
{
	return &b->rings[bid >= BUF_COUNT];
}

/* The last reference went: the whole buffer back to the kernel. */
static void ring_give(struct bufs *b, struct buf_ring *r, uint16_t bid)
{
	unsigned i = bid - r->base;

	r->off[i] = 0;
	r->refs[i] = 1;
	io_uring_buf_ring_add(r->br, buf_ptr(b, bid), BUF_RING_SIZE, bid,
			      io_uring_buf_ring_mask(r->count), 0);
	io_uring_buf_ring_advance(r->br, 1);
}

char *buf_recv(struct bufs *b, uint16_t bid, int res, unsigned cqe_flags)
{
	struct buf_ring *r = ring_of(b, bid);
	unsigned i = bid - r->base;
	char *p = NULL;
	bool kernel_done;

	if (r->inc)
		/* A completion without data commits nothing (the kernel keeps
		 * the buffer at the ring's head, BUF_MORE or not); one with
		 * data used the buffer up unless BUF_MORE says otherwise. */
		kernel_done = res > 0 && !(cqe_flags & IORING_CQE_F_BUF_MORE);
	else
		kernel_done = true;
	if (res > 0) {
		p = buf_ptr(b, bid) + r->off[i];
		r->off[i] += (uint32_t)res;
		r->refs[i]++;
	}
	if (kernel_done && --r->refs[i] == 0)
		ring_give(b, r, bid);
	else if (kernel_done)
		r->held++;
	return p;
}

bool buf_release(struct bufs *b, uint16_t bid)
{
	struct buf_ring *r;

	if (bid >= PLAIN_BASE) {
		plain_release(b, (uint16_t)(bid - PLAIN_BASE));
		return false;
	}
	r = ring_of(b, bid);
	if (--r->refs[bid - r->base])
		return false;
	r->held--; /* the kernel's +1 went in buf_recv() */
	ring_give(b, r, bid);
	return true;
}
