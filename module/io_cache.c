// SPDX-License-Identifier: GPL-2.0
/*
 * A per-CPU cache of in-flight records, like the block layer's per-CPU bio
 * cache: most DIOs are a few pages, and their records are allocated and
 * freed once per IO, from the submit path and from completion (IRQ).
 *
 * Measured on Debian 6.1 under TCG (4 KiB O_DIRECT reads, null_blk with
 * inline completion): a kmalloc()/kfree_rcu() pair per IO was half of what
 * tracking cost per IO.  A cached record also cannot fail to allocate.
 *
 * A retired record goes straight back to the cache of the CPU that retires
 * it: every walk of the tables holds the bucket lock (track.c), so a record
 * off its lists is seen by nobody.  Until 2026-12-03 lookups walked the
 * buckets under RCU instead, and retired records went back in batches of
 * 256, one call_rcu() per batch: the callbacks cost 10 instructions per
 * 4 KiB read, while the release's walk under the lock costs what its
 * lock-free look did (63 instructions against 64, QEMU TCG plugin count,
 * 2026-12-03).  The list is only touched by its own CPU with interrupts
 * off.  Records bigger than the cached size, and any beyond
 * DIOFORK_CACHE_MAX per CPU, go back to the allocator.
 *
 * A CPU that completes more reads than it submits fills its cache up to
 * DIOFORK_CACHE_MAX, and one that submits more takes the rest from
 * kmalloc().  The size comes from the RCU batches' days (2026-11-24): with
 * room for 256 records, 4 KiB reads at 50,000 per second (TCG) found the
 * cache empty for 35% of their records, with 2048 under 10%.  A cached
 * record is 256 bytes, so a CPU keeps at most 512 KiB free, and gives it
 * back when the mode goes to off.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cpu.h>
#include <linux/percpu.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/stddef.h>
#include "diofork.h"
#include "compat.h"
#include "io_cache.h"

DEFINE_PER_CPU(struct diofork_io_cache, diofork_io_cache);

static void diofork_io_kfree_chain(struct diofork_io *io)
{
	struct diofork_io *next;

	for (; io; io = next) {
		next = io->next_free;
		kfree(io);
	}
}

/* diofork_io_alloc(), when the cache is empty or the record is bigger. */
struct diofork_io *diofork_io_alloc_slow(size_t size, unsigned short flags)
{
	struct diofork_io *io;

	lockdep_assert_irqs_disabled();
	/* the size class the comment above counts on */
	BUILD_BUG_ON(DIOFORK_CACHE_SIZE > 256);
	if (size > DIOFORK_CACHE_SIZE) {
		io = kmalloc(size, GFP_ATOMIC | __GFP_NOWARN);
		if (io)
			io->flags = flags;
		return io;
	}
	io = kmalloc(DIOFORK_CACHE_SIZE, GFP_ATOMIC | __GFP_NOWARN);
	if (io)
		io->flags = DIOFORK_IO_CACHED | flags;
	return io;
}

/* diofork_io_free(), for a record from the allocator, or one too many. */
void diofork_io_free_slow(struct diofork_io *io)
{
	lockdep_assert_irqs_disabled();
	if (io->flags & DIOFORK_IO_CACHED) {
		kfree(io);
		return;
	}
	/*
	 * kmalloc()'d here, or kvmalloc()'d by the stand-in: a vmalloc()'d
	 * one may not be freed with interrupts off, so after a grace period.
	 */
	kvfree_rcu(io, rcu);
}

/* On the cache's own CPU: take its free records away, into *@arg. */
static void diofork_io_cache_take(void *arg)
{
	struct diofork_io_cache *c = this_cpu_ptr(&diofork_io_cache);

	/* an IPI: interrupts are off, as for every other user of the list */
	*(struct diofork_io **)arg = c->free;
	c->free = NULL;
	c->nr_free = 0;
}

/* Mode off: give the free records back to the allocator. */
void diofork_io_cache_trim(void)
{
	struct diofork_io *io;
	int cpu;

	cpus_read_lock();
	for_each_online_cpu(cpu) {
		io = NULL;
		smp_call_function_single(cpu, diofork_io_cache_take, &io, 1);
		diofork_io_kfree_chain(io);
	}
	cpus_read_unlock();
}

/*
 * Unload, or a failed load: nothing allocates or frees records any more.
 * Free every cached record, of online and offline CPUs alike.
 */
void diofork_io_cache_exit(void)
{
	struct diofork_io_cache *c;
	int cpu;

	for_each_possible_cpu(cpu) {
		c = per_cpu_ptr(&diofork_io_cache, cpu);
		diofork_io_kfree_chain(c->free);
		c->free = NULL;
		c->nr_free = 0;
	}
}
