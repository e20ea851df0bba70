/* buf.h - the receive buffers of one worker, named by an id (bid): two
 * rings of provided buffers the kernel fills, of BUF_RING_SIZE, and
 * buffers the worker hands out itself (decrypted TLS records), of
 * BUF_SIZE. Whoever holds a buffer releases it with buf_release()
 * whatever filled it.
 *
 * The kernel takes buffers from a ring in order and they come back at its
 * end, so every buffer of a ring is touched in turn: the large ring
 * cycles through 16 MB, which no cache holds. Every receive takes the
 * small ring (4 buffers, 256 KB), which stays in the CPU's cache, and
 * turns to the large one when it is empty, staying there while its
 * receives are bulk (core/conn.c's CONN_F_COLD): so commands and replies
 * of any number of sessions touch at most the small ring
 * (bench/README.md, idle memory).
 *
 * Both rings are consumed incrementally where the kernel can
 * (IOU_PBUF_RING_INC, 6.12+): a receive takes only the octets it needs
 * from the buffer at the ring's head, and the next receive, of any
 * socket, goes on from there. Without it every receive took a whole
 * buffer and touched a new page, so a fresh process's RSS grew with the
 * ring (16 MB) instead of with what was received. A buffer thus holds
 * slices of several receives: each slice handed out is a reference, the
 * kernel's use one more, and the buffer goes back to its ring when the
 * last is dropped. A bid names the buffer, not the slice, so every
 * holder still releases once with buf_release(). A bulk receive may
 * thus be short of BUF_RING_SIZE: it got the rest of a buffer.
 *
 * A slice keeps its whole buffer until it is released, so sessions stuck
 * behind a peer that does not read could hold the whole ring (or all of
 * our own buffers, which hold TLS sessions' plaintext); once half of
 * them are held, core/conn.c copies what it queues for sending to the
 * heap instead (buf_low()).
 *
 * The provided buffers are 64 KB, not the 16 KB of a TLS record, so that
 * bulk text moves in a quarter of the receives and sends: 100 KB
 * messages took a third less CPU (bench/README.md, "64 KB receive
 * buffers").
 *
 * The bottom of core/: it calls nothing else of mxlb. Releasing a buffer
 * does not wake the conns that starved for one: core/conn.c does that in
 * conn_buf_release().
 */
#ifndef MXLB_BUF_H
#define MXLB_BUF_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#define BUF_SIZE 16384	    /* ours; also a one-shot receive's limit */
#define BUF_RING_SIZE 65536 /* each provided buffer */
#define BUF_COUNT 256	    /* the large ring: ids 0 .. BUF_COUNT-1; a power of two */
#define BUF_GROUP 0
#define BUF_HOT_COUNT 4 /* the small ring: ids BUF_COUNT ..; a power of two */
#define BUF_HOT_GROUP 1
/* Buffers of the same size handed out by buf_plain_get(): ids PLAIN_BASE
 * and up. */
#define PLAIN_BASE (BUF_COUNT + BUF_HOT_COUNT)
#define PLAIN_MAX 8192
#define PLAIN_KEEP 64 /* free ones kept allocated */
#define BID_NONE 0xffffu

/* Not in liburing 2.3's headers: the register flag (struct
 * io_uring_buf_reg's flags are its "pad" there) and the completion's. */
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif

struct buf_ring {
	struct io_uring_buf_ring *br;
	char *bufs;
	uint32_t *off;	/* per buffer: where the kernel's next receive lands */
	uint16_t *refs; /* per buffer: slices out, +1 while the kernel has it */
	unsigned count;
	unsigned held; /* buffers the kernel is done with and slices still hold */
	uint16_t base; /* the id of its first buffer */
	uint16_t group;
	bool inc; /* registered with IOU_PBUF_RING_INC */
};

struct bufs {
	struct buf_ring rings[2]; /* BUF_GROUP, BUF_HOT_GROUP */
	char **plain;		  /* PLAIN_MAX slots, NULL until allocated */
	uint16_t *plain_free;	  /* free slot indices */
	unsigned nplain, nplain_free, nplain_kept;
};

/* Register both rings with ring. 0 or -errno; bufs_fini() either way. */
int bufs_init(struct bufs *b, struct io_uring *ring);
void bufs_fini(struct bufs *b);

static inline char *buf_ptr(const struct bufs *b, uint16_t bid)
{
	if (bid >= PLAIN_BASE)
		return b->plain[bid - PLAIN_BASE];
	if (bid >= BUF_COUNT)
		return b->rings[1].bufs + (size_t)(bid - BUF_COUNT) * BUF_RING_SIZE;
	return b->rings[0].bufs + (size_t)bid * BUF_RING_SIZE;
}

/* A receive completed into provided buffer bid (the CQE's res and
 * flags): the start of its res octets, which the caller now holds as one
 * slice of bid (res > 0), or NULL (nothing received: no slice, but the
 * buffer may have been used up all the same). */
char *buf_recv(struct bufs *b, uint16_t bid, int res, unsigned cqe_flags);
/* Drop one slice of a provided buffer (it goes back to its ring with the
 * last), or one of ours to the free list. True when a buffer went back
 * to a ring, so that receives starved for one may go on. */
bool buf_release(struct bufs *b, uint16_t bid);
/* Whether bid is a provided buffer (the kernel's rings), not one of ours. */
static inline bool buf_is_ring(uint16_t bid)
{
	return bid < PLAIN_BASE;
}
/* Whether bid's kind runs short: half of the large ring held by slices
 * (for either ring's buffers), or half of PLAIN_MAX of ours out. Then a
 * slice of it queued for sending is better copied out (core/conn.c), so
 * that sessions stuck behind a peer that does not read cannot take every
 * buffer from the other sessions of the worker: the rings' receives, or
 * the TLS sessions' plaintext. */
static inline bool buf_low(const struct bufs *b, uint16_t bid)
{
	if (buf_is_ring(bid))
		return b->rings[0].held >= BUF_COUNT / 2;
	return b->nplain - b->nplain_free >= PLAIN_MAX / 2;
}
/* One of ours (id >= PLAIN_BASE), BID_NONE when PLAIN_MAX are out. */
uint16_t buf_plain_get(struct bufs *b);

#endif
