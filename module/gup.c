// SPDX-License-Identifier: GPL-2.0
/*
 * The DIO's page lookup, taken over: drain runs its own code where a DIO's
 * get_user_pages_fast() would run.
 *
 * On a kernel whose DIO takes plain references (Debian 6.1), the block
 * layer's bio_iov_iter_get_pages() calls get_user_pages_fast() to take the
 * user pages.  A policy that must act there (drain: wait while the mm
 * forks) does so in three steps:
 *
 *  - the stand-in for bio_iov_iter_get_pages() (getpages.c) opens a
 *    per-task context, a slot naming the policy's lookup;
 *  - inside that context, an ftrace IPMODIFY handler sends
 *    get_user_pages_fast() to diofork_gup_standin(), which calls the
 *    slot's lookup; the lookup takes the pages itself (it may sleep,
 *    as get_user_pages_fast() may);
 *  - the policy closes the slot when bio_iov_iter_get_pages() returns to
 *    the stand-in, which always happens: unload waits for stand-ins.
 *
 * Any other caller of get_user_pages_fast() finds no slot and runs the
 * original, untouched.  Nothing is wrapped: a lookup that wants the
 * original calls the exported get_user_pages_fast() again, which the
 * handler lets through: its slot is marked as in the lookup.
 *
 * The redirect is registered on first use and stays until unload
 * (attaching and detaching hooks over and over under load crashed 6.1;
 * see mode.c), doing nothing without an open slot.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/ftrace.h>
#include <linux/hash.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include "diofork.h"
#include "compat.h"

#define DIOFORK_GUP_SLOT_BITS	10
#define DIOFORK_GUP_PROBES	16

/*
 * One open context per task, found by the task itself.  Only the owner
 * uses its slot, so a slot needs no lock: it is claimed with cmpxchg() and
 * freed with a release store.
 */
static struct diofork_gup_slot diofork_gup_slots[1 << DIOFORK_GUP_SLOT_BITS];
static DEFINE_MUTEX(diofork_gup_mutex);
static unsigned long diofork_gup_fast_addr;
static bool diofork_gup_ftrace_on;

static struct diofork_gup_slot *diofork_gup_slot_at(unsigned int h,
						    unsigned int i)
{
	return &diofork_gup_slots[(h + i) & ((1 << DIOFORK_GUP_SLOT_BITS) - 1)];
}

static struct diofork_gup_slot *diofork_gup_slot_find(void)
{
	unsigned int h = hash_ptr(current, DIOFORK_GUP_SLOT_BITS), i;
	struct diofork_gup_slot *s;

	for (i = 0; i < DIOFORK_GUP_PROBES; i++) {
		s = diofork_gup_slot_at(h, i);
		if (READ_ONCE(s->task) == current)
			return s;
	}
	return NULL;
}

/* From the DIO's task, atomic.  NULL if every slot near ours is taken. */
struct diofork_gup_slot *diofork_gup_slot_open(const struct diofork_gup_ops *ops)
{
	unsigned int h = hash_ptr(current, DIOFORK_GUP_SLOT_BITS), i;
	struct diofork_gup_slot *s;

	for (i = 0; i < DIOFORK_GUP_PROBES; i++) {
		s = diofork_gup_slot_at(h, i);
		if (!READ_ONCE(s->task) && !cmpxchg(&s->task, NULL, current)) {
			s->ops = ops;
			s->in_lookup = false;
			s->gated = NULL;
			return s;
		}
	}
	return NULL;
}

/* Its owner is done with it: open() sets every field for the next one. */
void diofork_gup_slot_close(struct diofork_gup_slot *s)
{
	/* our last use of the slot happens before another task can claim it */
	smp_store_release(&s->task, NULL);
}

/*
 * Runs in place of get_user_pages_fast(), in a task with an open slot.  A
 * task with an open slot is inside getpages.c's stand-in, between the
 * policy's gup_enter() and gup_exit(); removing the tracking hooks waits
 * for those stand-ins, so this one needs no count of its own.
 */
static int diofork_gup_standin(unsigned long start, int nr_pages,
			       unsigned int gup_flags, struct page **pages)
{
	/* only its owner, us, closes the slot, after we return */
	struct diofork_gup_slot *s = diofork_gup_slot_find();
	int ret;

	if (unlikely(!s) || nr_pages <= 0)
		return get_user_pages_fast(start, nr_pages, gup_flags, pages);
	/*
	 * The lookup calls get_user_pages_fast() for the original, maybe as
	 * a tail call, whose return address is not ours: the slot says it
	 * is not to be redirected.
	 */
	s->in_lookup = true;
	ret = s->ops->lookup(s, start, nr_pages, gup_flags, pages);
	s->in_lookup = false;
	return ret;
}

static void notrace diofork_gup_ftrace(unsigned long ip, unsigned long parent_ip,
				       struct ftrace_ops *op,
				       struct ftrace_regs *fregs)
{
	const struct diofork_policy *pol;
	struct diofork_gup_slot *s;

	/* an RCU reader, like every hook; it calls nothing (no recursion) */
	preempt_disable_notrace();
	/*
	 * Only a policy with gup_enter() opens slots.  Under any other (off,
	 * observe, pin, lock) a slot still open from before a switch is skipped:
	 * its DIO gets the plain lookup the new mode would give it.  Asked
	 * first: looking for a slot that is not there probes every place it
	 * could be, and in those modes none is (0.9% of a 4 KiB libaio read's
	 * instructions in off and observe, QEMU -icount, 2026-11-24).
	 */
	pol = diofork_policy_get();
	if (!pol || !pol->gup_enter)
		goto out;
	/* most callers have no slot; a lookup's own call is let through */
	s = diofork_gup_slot_find();
	if (s && !s->in_lookup)
		diofork_ftrace_set_ip(fregs, (unsigned long)diofork_gup_standin);
out:
	preempt_enable_notrace();
}

static struct ftrace_ops diofork_gup_ops = {
	.func	= diofork_gup_ftrace,
	.flags	= FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_IPMODIFY,
};

/* Can this kernel's DIO lookup be taken over?  Not where DIO pins (6.12). */
bool diofork_gup_redirect_possible(void)
{
	return diofork_gup_fast_addr && !diofork_kernel_has_extract_pages;
}

/* From a policy's enable(), in process context.  Idempotent. */
int diofork_gup_redirect_start(void)
{
	int ret = 0;

	if (!diofork_gup_redirect_possible())
		return -EOPNOTSUPP;
	mutex_lock(&diofork_gup_mutex);
	if (diofork_gup_ftrace_on)
		goto unlock;
	ret = ftrace_set_filter_ip(&diofork_gup_ops, diofork_gup_fast_addr, 0, 0);
	if (ret)
		goto unlock;
	ret = register_ftrace_function(&diofork_gup_ops);
	if (ret) {
		ftrace_set_filter_ip(&diofork_gup_ops, diofork_gup_fast_addr, 1, 0);
		pr_err("cannot redirect get_user_pages_fast (%d)\n", ret);
		goto unlock;
	}
	diofork_gup_ftrace_on = true;
unlock:
	mutex_unlock(&diofork_gup_mutex);
	return ret;
}

/*
 * Module unload, after the tracking hooks are removed: no slot is open, so
 * no task is in the stand-in or can be sent there.
 */
void diofork_gup_unload(void)
{
	mutex_lock(&diofork_gup_mutex);
	if (diofork_gup_ftrace_on) {
		unregister_ftrace_function(&diofork_gup_ops);
		ftrace_set_filter_ip(&diofork_gup_ops, diofork_gup_fast_addr, 1, 0);
		diofork_gup_ftrace_on = false;
	}
	mutex_unlock(&diofork_gup_mutex);
}

void diofork_gup_init(void)
{
	diofork_gup_fast_addr = diofork_symbol_addr("get_user_pages_fast");
}
