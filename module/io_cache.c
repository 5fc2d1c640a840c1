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
 * A retired record may still be seen by lock-free lookups until a grace
 * period has passed, so it does not go straight back to the cache: retired
 * records gather in a per-CPU batch, and one call_rcu() per batch returns
 * the batch to the cache of the CPU that runs the callback.  The batch is
 * large because RCU's cost is mostly the grace periods a pending callback
 * keeps running, not call_rcu() itself: 256 records per callback instead of
 * 32 took 0.4% off a 4 KiB libaio read's instructions in observe (7,007 to
 * 7,033 IOPS against 7,229 in off, QEMU -icount, 2026-11-24); returning
 * records without RCU at all (unsafe) would take 0.6%.  Both lists are
 * only touched by their own CPU with interrupts off.  Records bigger than
 * the cached size, and any beyond DIOFORK_CACHE_MAX per CPU, go back to the
 * allocator.
 *
 * The cache must hold what a CPU retires in a batch and a grace period:
 * with room for 256 records, 4 KiB reads at 50,000 per second (TCG) found it
 * empty for 35% of their records, a kmalloc() and a kfree() each, about
 * 1 us per read in all; with 2048, under 10% (both with batches of 32).
 * A cached record is 256 bytes, so a CPU keeps at most 512 KiB free, and
 * gives it back when the mode goes to off; a batch not yet full (64 KiB at
 * most) waits for more retirements, or for unload.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cpu.h>
#include <linux/percpu.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/stddef.h>
#include "diofork.h"
#include "compat.h"
#include "io_cache.h"

#define DIOFORK_CACHE_MAX	2048	/* free records kept per CPU */

DEFINE_PER_CPU(struct diofork_io_cache, diofork_io_cache);

static void diofork_io_kfree_chain(struct diofork_io *io)
{
	struct diofork_io *next;

	for (; io; io = next) {
		next = io->next_free;
		kfree(io);
	}
}

/* A batch has passed its grace period: into this CPU's cache. */
static void diofork_io_cache_refill(struct rcu_head *rcu)
{
	struct diofork_io *io = container_of(rcu, struct diofork_io, rcu);
	struct diofork_io *next, *excess = NULL;
	struct diofork_io_cache *c;
	unsigned long flags;

	local_irq_save(flags);
	c = this_cpu_ptr(&diofork_io_cache);
	for (; io; io = next) {
		next = io->next_free;
		if (c->nr_free < DIOFORK_CACHE_MAX) {
			io->next_free = c->free;
			c->free = io;
			c->nr_free++;
		} else {
			io->next_free = excess;
			excess = io;
		}
	}
	local_irq_restore(flags);
	diofork_io_kfree_chain(excess);
}

/* diofork_io_alloc(), when the cache is empty or the record is bigger. */
struct diofork_io *diofork_io_alloc_slow(size_t size)
{
	struct diofork_io *io;

	lockdep_assert_irqs_disabled();
	/* the size class the comment above counts on */
	BUILD_BUG_ON(DIOFORK_CACHE_SIZE > 256);
	if (size > DIOFORK_CACHE_SIZE) {
		io = kmalloc(size, GFP_ATOMIC | __GFP_NOWARN);
		if (io)
			io->flags = 0;
		return io;
	}
	io = kmalloc(DIOFORK_CACHE_SIZE, GFP_ATOMIC | __GFP_NOWARN);
	if (io)
		io->flags = DIOFORK_IO_CACHED;
	return io;
}

/*
 * diofork_io_free(), for a record from the allocator, or the one that fills
 * the batch.
 */
void diofork_io_free_slow(struct diofork_io *io)
{
	struct diofork_io_cache *c;

	lockdep_assert_irqs_disabled();
	if (!(io->flags & DIOFORK_IO_CACHED)) {
		/* kmalloc()'d here, or kvmalloc()'d by the stand-in */
		kvfree_rcu(io, rcu);
		return;
	}

	/* the batch is full with this one */
	c = this_cpu_ptr(&diofork_io_cache);
	io->next_free = c->retired;
	c->retired = NULL;
	c->nr_retired = 0;
	/* the grace period starts after every record in it was unhashed */
	diofork_call_rcu(&io->rcu, diofork_io_cache_refill);
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

/*
 * Mode off: give the free records back to the allocator.  Batches still
 * waiting for their grace period refill the caches a little afterwards;
 * unload frees those, and the caches of CPUs offline now.
 */
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
 * Wait out the batches on their way, then free every cached record.
 */
void diofork_io_cache_exit(void)
{
	struct diofork_io_cache *c;
	int cpu;

	/* retired records not in a batch yet: make them old enough */
	synchronize_rcu();
	/* the batches' callbacks, which run our code */
	rcu_barrier();
	for_each_possible_cpu(cpu) {
		c = per_cpu_ptr(&diofork_io_cache, cpu);
		diofork_io_kfree_chain(c->retired);
		diofork_io_kfree_chain(c->free);
		c->retired = NULL;
		c->free = NULL;
		c->nr_retired = 0;
		c->nr_free = 0;
	}
}
