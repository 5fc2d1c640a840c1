// SPDX-License-Identifier: GPL-2.0
/*
 * The DIO's page acquisition, bio_iov_iter_get_pages(bio, iter), taken over.
 *
 * A read into user memory is recorded once its pages are in the bio, so the
 * hook must run code after the function returns.  A kretprobe did that by
 * rewriting the return address: on every tracked read a return trampoline
 * that saves every register, a walk of the task's return hooks and an
 * instance taken from and given back to a shared pool.  Instead, an
 * IPMODIFY ftrace handler sends a DIO that needs recording to
 * diofork_gp_standin(), which calls the exported function itself (the
 * handler lets calls from this module through) and records on return: a
 * plain call and a plain return.
 *
 * A stand-in may sleep in the page lookup, so it is counted, per CPU (no
 * shared cache line on the DIO path): removing the hook waits for the
 * count to drain, then for an RCU-tasks grace period, after which no task
 * is left in the stand-in's text.  The count is incremented where the
 * handler redirects (this CPU, preemption disabled) and decremented where
 * the stand-in leaves, maybe on another CPU: only the sum means anything.
 * Once the handler is unregistered no CPU adds to it, each CPU's share only
 * falls, and a sum read as zero is zero.
 *
 * On a kernel without IBT (Debian 6.1) the stand-in calls the function just
 * past its fentry site, as BPF trampolines call the function they wrap, so
 * its own call does not pass through ftrace a second time.  That pass, a
 * full register save for nothing, was 0.4% of a 4 KiB libaio read's
 * instructions (about 75 of 17,500, QEMU -icount, 2026-11-24).
 * With IBT (Debian 6.12) an indirect call must land on the function's ENDBR:
 * the stand-in calls the entry, and the handler lets it through.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/bio.h>
#include <linux/uio.h>
#include <linux/sched.h>
#include <linux/percpu.h>
#include <linux/delay.h>
#include <linux/slab.h>
#include <linux/ftrace.h>
#include <linux/rcupdate_wait.h>
#include "diofork.h"
#include "compat.h"
#include "io_cache.h"

static DEFINE_PER_CPU(long, diofork_gp_standins);

/*
 * May @bio's record be too big for the records' cache?  Such a record is
 * allocated by the stand-in, where the task may sleep (track.c says why).
 * A 4 KiB read pays this comparison and nothing else.
 */
static __always_inline bool diofork_gp_big(const struct bio *bio)
{
	return unlikely(bio->bi_iter.bi_size >
			(DIOFORK_CACHE_PAGES - 1) * PAGE_SIZE);
}

/*
 * The record of bvecs [vcnt, bi_vcnt) if the cache can not hold it; NULL
 * otherwise, or if memory is short (the record then tries GFP_ATOMIC).
 */
static struct diofork_io *diofork_gp_prealloc(struct bio *bio,
					      unsigned short vcnt,
					      enum diofork_pin_at pin_at)
{
	size_t size = diofork_track_size(bio, vcnt,
					 diofork_bio_kernel_pinned(bio), pin_at);

	if (size <= DIOFORK_CACHE_SIZE)
		return NULL;
	return kvmalloc(size, GFP_KERNEL | __GFP_NOWARN);
}

/* After the record: the preallocated one, if the record did not take it. */
static void diofork_gp_prealloc_put(struct diofork_io *pre,
				    const struct diofork_io *io)
{
	if (pre && pre != io)
		kvfree(pre);
}

/* Record a big bio (diofork_gp_big()), to pin its pages as @pin_at says. */
static noinline struct diofork_io *
diofork_gp_track_big(struct bio *bio, unsigned short vcnt, unsigned long seq,
		     enum diofork_pin_at pin_at)
{
	struct diofork_io *pre = diofork_gp_prealloc(bio, vcnt, pin_at);
	bool kernel_pinned = diofork_bio_kernel_pinned(bio);
	struct diofork_io *io;

	io = diofork_track_bio_as(bio, vcnt, kernel_pinned, seq, pin_at, pre);
	diofork_gp_prealloc_put(pre, io);
	return io;
}

static int (*diofork_gp_call)(struct bio *bio, struct iov_iter *iter) =
	bio_iov_iter_get_pages;

/*
 * The hook is attached at @fentry.  If the function's first instruction is
 * that site, now the call into ftrace (opcode 0xe8), the stand-in can step
 * over it.  Not with IBT: the function starts with ENDBR, which an indirect
 * call must land on.
 */
void diofork_gp_attached(unsigned long fentry)
{
	unsigned long entry = (unsigned long)bio_iov_iter_get_pages;

	if (IS_ENABLED(CONFIG_X86_KERNEL_IBT) || fentry != entry ||
	    *(const u8 *)entry != 0xe8)
		return;
	WRITE_ONCE(diofork_gp_call, (void *)(entry + MCOUNT_INSN_SIZE));
}

/*
 * The stand-in of a policy that acts in the page lookup (drain), which
 * sees it from entry to return.  Called with preemption disabled, in the
 * section that read @pol (a mode switch waits for gup_enter() to return);
 * returns with it enabled.
 */
static noinline int diofork_gp_standin_policy(struct bio *bio,
					      struct iov_iter *iter,
					      const struct diofork_policy *pol)
{
	struct diofork_gup d = { .bio = bio, .pol = pol };
	struct diofork_io *io = NULL, *pre = NULL;
	int ret;

	d.vcnt = bio->bi_vcnt;
	d.seq = diofork_mm_wp_seq(current->mm);
	pol->gup_enter(&d);
	preempt_enable();

	ret = READ_ONCE(diofork_gp_call)(bio, iter);

	if (!ret && bio->bi_vcnt > d.vcnt && diofork_gp_big(bio))
		pre = diofork_gp_prealloc(bio, d.vcnt, DIOFORK_PIN_NEVER);
	preempt_disable();
	if (!ret && bio->bi_vcnt > d.vcnt)
		io = pre ? diofork_track_bio_as(bio, d.vcnt,
						diofork_bio_kernel_pinned(bio),
						d.seq, DIOFORK_PIN_NEVER, pre) :
			   diofork_track_bio(bio, d.vcnt,
					     diofork_bio_kernel_pinned(bio),
					     d.seq);
	/* the policy of the entry, even if the mode changed since */
	if (pol->gup_exit)
		pol->gup_exit(&d, io);
	preempt_enable();
	diofork_gp_prealloc_put(pre, io);
	return ret;
}

/* Lookups of one DIO before we give up on forks that keep sharing its pages. */
#define DIOFORK_REDO_LOOKUPS	8
/* From this lookup on, lock's record pins its pages at once. */
#define DIOFORK_REDO_PIN_FROM	4

/* Record the pages of bvecs [vcnt, bi_vcnt), to pin as @pin_at says. */
static __always_inline struct diofork_io *
diofork_gp_track(struct bio *bio, unsigned short vcnt,
		 unsigned long seq, enum diofork_pin_at pin_at)
{
	bool kernel_pinned = diofork_bio_kernel_pinned(bio);
	struct diofork_io *io;

	if (diofork_gp_big(bio))
		return diofork_gp_track_big(bio, vcnt, seq, pin_at);
	if (pin_at == DIOFORK_PIN_AT_FORK)
		io = diofork_track_bio_pin(bio, vcnt, kernel_pinned, seq);
	else if (pin_at == DIOFORK_PIN_NEVER)
		io = diofork_track_bio(bio, vcnt, kernel_pinned, seq);
	else
		io = diofork_track_bio_as(bio, vcnt, kernel_pinned, seq,
					  pin_at, NULL);
	return io;
}

/* Did a fork overlap @io's lookup, which took plain references? */
static bool diofork_gp_raced(const struct diofork_io *io)
{
	return io && (io->flags & (DIOFORK_IO_FORK_RACED | DIOFORK_IO_KPINNED)) ==
		     DIOFORK_IO_FORK_RACED;
}

/*
 * pin, lock: a fork overlapped the lookup of @bio, recorded as @io.  If the
 * fork shared one of its pages before the record was there (track.c,
 * diofork_io_settled()), give the pages back and look them up again, as
 * GUP-fast gives its pins back when write_protect_seq moves: the parent's
 * PTE is write-protected by now, so the lookup breaks COW and takes the
 * parent's own page.  lock's record is only found by a COW fault: under
 * forks back to back, each lookup can be shared before its record is made.
 * From DIOFORK_REDO_PIN_FROM on lock's record pins its pages at once, so
 * that a fork copies them instead; the pins go with the record.  Only a
 * bio that was empty at entry (every 6.1 caller's) can be rewound;
 * otherwise, or after DIOFORK_REDO_LOOKUPS lookups, the DIO goes on exposed
 * and lookups_not_redone counts it.
 */
static noinline int diofork_gp_redo(struct bio *bio, struct iov_iter *iter,
				    struct diofork_io *io, unsigned short vcnt,
				    enum diofork_pin_at pin_at)
{
	unsigned int lookups = 1;
	unsigned long seq;
	size_t taken;
	int ret;

	while (!diofork_io_settled(io, pin_at != DIOFORK_PIN_NEVER)) {
		if (vcnt || lookups == DIOFORK_REDO_LOOKUPS) {
			diofork_stat_inc(DIOFORK_STAT_LOOKUPS_NOT_REDONE);
			break;
		}
		diofork_stat_inc(DIOFORK_STAT_LOOKUPS_REDONE);
		taken = bio->bi_iter.bi_size;
		diofork_track_release_redo(bio);	/* and unpin */
		seq = diofork_mm_wp_seq(current->mm);
		bio_release_pages(bio, false);
		bio->bi_vcnt = 0;
		bio->bi_iter.bi_size = 0;
		iov_iter_revert(iter, taken);

		ret = READ_ONCE(diofork_gp_call)(bio, iter);
		if (++lookups == DIOFORK_REDO_PIN_FROM &&
		    pin_at == DIOFORK_PIN_NEVER)
			pin_at = DIOFORK_PIN_AT_ONCE;
		if (ret || !bio->bi_vcnt)
			return ret;
		io = diofork_gp_track(bio, 0, seq, pin_at);
		if (unlikely(!io && pin_at != DIOFORK_PIN_NEVER))
			diofork_stat_inc(DIOFORK_STAT_PIN_FAILURES);
		if (!diofork_gp_raced(io))
			break;
	}
	return 0;
}

/*
 * The stand-in of pin and lock, whose records must hold the parent's own
 * pages.  Called with preemption disabled, in the section that read the
 * policy; returns with it enabled.  The record is made as the policy of
 * the entry says, even if the mode changed since.
 */
static __always_inline int
diofork_gp_standin_redo(struct bio *bio, struct iov_iter *iter, bool pins)
{
	enum diofork_pin_at pin_at = pins ? DIOFORK_PIN_AT_FORK :
					    DIOFORK_PIN_NEVER;
	unsigned short vcnt = bio->bi_vcnt;
	unsigned long seq = diofork_mm_wp_seq(current->mm);
	struct diofork_io *io;
	int ret;

	preempt_enable();

	ret = READ_ONCE(diofork_gp_call)(bio, iter);

	if (ret || bio->bi_vcnt <= vcnt)
		return ret;
	io = diofork_gp_track(bio, vcnt, seq, pin_at);
	if (unlikely(!io)) {
		if (pin_at != DIOFORK_PIN_NEVER)
			diofork_stat_inc(DIOFORK_STAT_PIN_FAILURES);
	} else if (unlikely(diofork_gp_raced(io))) {
		ret = diofork_gp_redo(bio, iter, io, vcnt, pin_at);
	}
	return ret;
}

/*
 * In place of bio_iov_iter_get_pages(), for a read into user memory.
 * observe takes the lean path: no context for callbacks, whose address,
 * taken, would cost a stack canary (about 20 instructions per read with
 * the context, QEMU -icount), and nothing of pin's (about 25 more).  pin's
 * and lock's stand-in is inline here: out of line, its second frame cost
 * them 18 instructions per read; inline, the shared frame costs observe 3
 * (QEMU TCG plugin counts, scripts/profile).
 */
static int notrace diofork_gp_standin(struct bio *bio, struct iov_iter *iter)
{
	const struct diofork_policy *pol;
	unsigned short vcnt;
	unsigned long seq = 0;
	int ret;

	/*
	 * The policy callbacks run as in any hook, atomic.  The record needs
	 * no such section: interrupts are off where it takes locks, and its
	 * counters are per-CPU operations (2 instructions per read, QEMU
	 * TCG plugin count, 2026-12-03).
	 */
	preempt_disable();
	pol = diofork_policy_get();	/* may be off since the redirect */
	if (pol && (pol->gup_enter || pol->redo_shared)) {
		/* pin's and lock's, each with its pin_at a constant */
		if (pol->pins)
			ret = diofork_gp_standin_redo(bio, iter, true);
		else if (pol->redo_shared)
			ret = diofork_gp_standin_redo(bio, iter, false);
		else
			ret = diofork_gp_standin_policy(bio, iter, pol);
		goto out;
	}
	vcnt = bio->bi_vcnt;
	if (pol)
		seq = diofork_mm_wp_seq(current->mm);
	preempt_enable();

	ret = READ_ONCE(diofork_gp_call)(bio, iter);

	if (pol && !ret && bio->bi_vcnt > vcnt) {
		if (diofork_gp_big(bio)) {
			diofork_gp_track_big(bio, vcnt, seq,
					     DIOFORK_PIN_NEVER);
		} else {
			diofork_track_bio(bio, vcnt,
					  diofork_bio_kernel_pinned(bio), seq);
		}
	}
out:
	this_cpu_dec(diofork_gp_standins);
	return ret;
}

void notrace diofork_gp_ftrace(unsigned long ip, unsigned long parent_ip,
			       struct ftrace_ops *op, struct ftrace_regs *fregs)
{
	const struct iov_iter *iter;
	struct bio *bio;

	/*
	 * The stand-in's own call (not a tail call: it has work after), when
	 * it calls the entry (IBT); past the fentry site it never comes here.
	 */
	if (within_module(parent_ip, THIS_MODULE))
		return;
	/* an RCU reader, like every hook; it calls nothing (no recursion) */
	preempt_disable_notrace();
	if (!diofork_policy_get() || !current->mm ||
	    (current->flags & PF_KTHREAD))
		goto out;
	iter = (const struct iov_iter *)diofork_fregs_arg(fregs, 1);
	if (!user_backed_iter(iter)) {
		/* io_uring registered buffers, kernel bvecs: already held */
		diofork_stat_inc(DIOFORK_STAT_DIO_SKIPPED_BVEC);
		goto out;
	}
	bio = (struct bio *)diofork_fregs_arg(fregs, 0);
	if (op_is_write(bio_op(bio))) {
		/* the device reads the page: COW can not lose it (track.c) */
		diofork_stat_inc(DIOFORK_STAT_DIO_SKIPPED_WRITE);
		goto out;
	}
	this_cpu_inc(diofork_gp_standins);
	diofork_ftrace_set_ip(fregs, (unsigned long)diofork_gp_standin);
out:
	preempt_enable_notrace();
}

static long diofork_gp_standins_sum(void)
{
	long sum = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		sum += READ_ONCE(per_cpu(diofork_gp_standins, cpu));
	return sum;
}

/*
 * After the handler is unregistered: wait for every stand-in to leave.  A
 * stand-in asleep in the page lookup (a userfaultfd fault, say) keeps us
 * here until it wakes, as it would keep its caller.
 */
void diofork_gp_standins_wait(void)
{
	unsigned int waited = 0;

	while (diofork_gp_standins_sum()) {
		if (++waited == 1000)
			pr_warn("waiting for DIO page lookups to return\n");
		msleep(20);
	}
	/* and for the last one to execute its return */
	synchronize_rcu_tasks();
}
