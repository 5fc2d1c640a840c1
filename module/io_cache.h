/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The records' per-CPU cache (io_cache.c says how it works): its fast
 * paths, inline where the DIO path allocates and frees a record once per
 * IO.  Out of line, with the registers the callers saved around the calls,
 * they cost about 25 more instructions per tracked 4 KiB read (QEMU
 * -icount, 2026-11-24).
 */
#ifndef _DIOFORK_IO_CACHE_H
#define _DIOFORK_IO_CACHE_H

#include <linux/compiler.h>
#include <linux/lockdep.h>
#include <linux/percpu.h>
#include <linux/stddef.h>
#include "diofork.h"

/* A cached record covers this many pages, with room for as many pins. */
#define DIOFORK_CACHE_PAGES	4
#define DIOFORK_CACHE_MAX	2048	/* free records kept per CPU */

#define DIOFORK_CACHE_SIZE						\
	(offsetof(struct diofork_io, pages) +				\
	 DIOFORK_CACHE_PAGES * (sizeof(struct diofork_page_ref) +	\
				sizeof(struct page *)))

/* Only its own CPU touches a cache, with interrupts off. */
struct diofork_io_cache {
	struct diofork_io *free;
	unsigned int nr_free;
};

DECLARE_PER_CPU(struct diofork_io_cache, diofork_io_cache);

struct diofork_io *diofork_io_alloc_slow(size_t size, unsigned short flags);
void diofork_io_free_slow(struct diofork_io *io);

/*
 * A record of @size bytes, its flags @flags and whether it came from the
 * cache's size class (DIOFORK_IO_CACHED).  Interrupts are off: the caller
 * hashes the record in the same region (one enable per IO, not one per
 * list and lock).  NULL if memory is short.
 */
static __always_inline struct diofork_io *diofork_io_alloc(size_t size,
							   unsigned short flags)
{
	struct diofork_io_cache *c = this_cpu_ptr(&diofork_io_cache);
	struct diofork_io *io = c->free;

	lockdep_assert_irqs_disabled();
	if (unlikely(!io || size > DIOFORK_CACHE_SIZE))
		return diofork_io_alloc_slow(size, flags);
	c->free = io->next_free;
	c->nr_free--;
	io->flags = DIOFORK_IO_CACHED | flags;
	return io;
}

/*
 * Free a retired record: it is off every list, and every walk of a list
 * holds its bucket's lock (track.c), so nobody can see it any more.
 * Interrupts are off, as for diofork_io_alloc().
 */
static __always_inline void diofork_io_free(struct diofork_io *io)
{
	struct diofork_io_cache *c = this_cpu_ptr(&diofork_io_cache);

	lockdep_assert_irqs_disabled();
	if (unlikely(!(io->flags & DIOFORK_IO_CACHED) ||
		     c->nr_free >= DIOFORK_CACHE_MAX)) {
		diofork_io_free_slow(io);
		return;
	}
	io->next_free = c->free;
	c->free = io;
	c->nr_free++;
}

#endif /* _DIOFORK_IO_CACHE_H */
