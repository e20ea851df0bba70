/* slab.h - fixed-size objects for one thread, kept on a free list: no
 * allocator header per object and no interleaving with short-lived
 * buffers, so an idle session costs exactly its structs. Chunks are never
 * given back (the high-water mark stays, as in most proxies' pools).
 */
#ifndef MXLB_SLAB_H
#define MXLB_SLAB_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define SLAB_CHUNK 64 /* objects per malloc */

struct slab {
	size_t size;  /* object size, a multiple of 16 */
	void *free;   /* free objects, linked through their first word */
	void *chunks; /* linked through their first word; objects follow */
};

static inline void slab_init(struct slab *s, size_t size)
{
	s->size = (size + 15) & ~(size_t)15;
	s->free = NULL;
	s->chunks = NULL;
}

/* Free every chunk: the objects must all be dead. */
static inline void slab_destroy(struct slab *s)
{
	while (s->chunks) {
		void *next = *(void **)s->chunks;

		free(s->chunks);
		s->chunks = next;
	}
	s->free = NULL;
}

#ifdef __SANITIZE_ADDRESS__
/* Under ASan every object is its own allocation, so that a use after
 * free is caught rather than hidden by reuse. */
static inline void *slab_alloc(struct slab *s)
{
	return calloc(1, s->size);
}

static inline void slab_free(struct slab *s, void *p)
{
	(void)s;
	free(p);
}
#else
/* A zeroed object, or NULL. */
static inline void *slab_alloc(struct slab *s)
{
	void *p;

	if (!s->free) {
		char *chunk = malloc(16 + s->size * SLAB_CHUNK);

		if (!chunk)
			return NULL;
		*(void **)chunk = s->chunks;
		s->chunks = chunk;
		for (size_t i = 0; i < SLAB_CHUNK; i++) {
			*(void **)(chunk + 16 + i * s->size) = s->free;
			s->free = chunk + 16 + i * s->size;
		}
	}
	p = s->free;
	s->free = *(void **)p;
	memset(p, 0, s->size);
	return p;
}

static inline void slab_free(struct slab *s, void *p)
{
	*(void **)p = s->free;
	s->free = p;
}
#endif

#endif
