// SPDX-License-Identifier: GPL-2.0
/*
 * The DIO's page lookup, taken over: pin and drain run their own code where
 * a DIO's get_user_pages_fast() would run.
 *
 * On a kernel whose DIO takes plain references (Debian 6.1), the block
 * layer's bio_iov_iter_get_pages() calls get_user_pages_fast() to take the
 * user pages.  A policy that must act there (pin: pin instead; drain: wait
 * while the mm forks) does so in three steps:
 *
 *  - bio_iov_iter_get_pages() entry (the tracking kretprobe) opens a
 *    per-task context, a slot naming the policy's lookup;
 *  - inside that context, an ftrace IPMODIFY handler sends
 *    get_user_pages_fast() to diofork_gup_standin(), which calls the
 *    slot's lookup; the lookup takes the pages itself (it may sleep,
 *    as get_user_pages_fast() may);
 *  - the policy closes the slot when bio_iov_iter_get_pages() returns.
 *
 * Any other caller of get_user_pages_fast() finds no slot and runs the
 * original, untouched.  Nothing is wrapped: a lookup that wants the
 * original calls the exported get_user_pages_fast() again, from this module,
 * which the handler lets through.
 *
 * The redirect is registered on first use and stays until unload
 * (registering IP-modifying ops over and over under load crashed 6.1; see
 * hooks.c), doing nothing without an open slot.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/ftrace.h>
#include <linux/trace_recursion.h>
#include <linux/hash.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/wait.h>
#include "diofork.h"
#include "compat.h"

#define DIOFORK_GUP_SLOT_BITS	10
#define DIOFORK_GUP_PROBES	16

/* a slot taken from its owner by diofork_gup_sweep(), not yet freed */
#define DIOFORK_GUP_SLOT_SWEPT	((struct task_struct *)1UL)

/*
 * One open context per task, found by the task itself.  Only the owner
 * uses its slot, so a slot needs no lock: it is claimed with cmpxchg() and
 * freed with a release store.
 */
static struct diofork_gup_slot diofork_gup_slots[1 << DIOFORK_GUP_SLOT_BITS];
static atomic_t diofork_gup_standins = ATOMIC_INIT(0);
static DECLARE_WAIT_QUEUE_HEAD(diofork_gup_standins_wq);
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
			s->pages = NULL;
			s->nr = 0;
			s->cap = 0;
			s->gated = NULL;
			return s;
		}
	}
	return NULL;
}

void diofork_gup_slot_close(struct diofork_gup_slot *s)
{
	s->ops = NULL;
	s->pages = NULL;
	s->nr = 0;
	s->cap = 0;
	s->gated = NULL;
	/* the fields above are cleared before another task can claim it */
	smp_store_release(&s->task, NULL);
}

static void diofork_gup_standin_done(void)
{
	if (atomic_dec_and_test(&diofork_gup_standins))
		wake_up_all(&diofork_gup_standins_wq);
}

/* Runs in place of get_user_pages_fast(), in a task with an open slot. */
static int diofork_gup_standin(unsigned long start, int nr_pages,
			       unsigned int gup_flags, struct page **pages)
{
	struct diofork_gup_slot *s = diofork_gup_slot_find();
	int ret;

	if (s && nr_pages > 0)
		ret = s->ops->lookup(s, start, nr_pages, gup_flags, pages);
	else	/* swept meanwhile: not redirected again, the caller is us */
		ret = get_user_pages_fast(start, nr_pages, gup_flags, pages);
	diofork_gup_standin_done();
	return ret;
}

static void notrace diofork_gup_ftrace(unsigned long ip, unsigned long parent_ip,
				       struct ftrace_ops *op,
				       struct ftrace_regs *fregs)
{
	const struct diofork_policy *pol;
	int bit;

	/*
	 * Most callers have no slot: a first, uncounted look spares them the
	 * shared count.  It decides nothing; the look that counts comes later.
	 */
	if (within_module(parent_ip, THIS_MODULE) || !diofork_gup_slot_find())
		return;
	/* our own guard, as in hooks.c; preemption disabled from here */
	bit = ftrace_test_recursion_trylock(ip, parent_ip);
	if (bit < 0)
		return;
	/*
	 * Only a policy with gup_enter() opens slots.  Under any other (off,
	 * observe, lock) a slot still open from before a switch is skipped:
	 * its DIO gets the plain lookup the new mode would give it.
	 */
	pol = diofork_policy_get();
	if (!pol || !pol->gup_enter)
		goto out;
	/*
	 * Counted before the deciding look and before the jump: the sweep
	 * invalidates slots, then waits for this count to drain, so it either
	 * sees us or we miss the slot.
	 */
	atomic_inc(&diofork_gup_standins);
	smp_mb__after_atomic();	/* pairs with xchg() in diofork_gup_sweep() */
	if (!diofork_gup_slot_find()) {
		diofork_gup_standin_done();
		goto out;
	}
	diofork_ftrace_set_ip(fregs, (unsigned long)diofork_gup_standin);
out:
	ftrace_test_recursion_unlock(bit);
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

/* Module unload: the redirect goes, and every stand-in has left. */
void diofork_gup_unload(void)
{
	mutex_lock(&diofork_gup_mutex);
	if (diofork_gup_ftrace_on) {
		unregister_ftrace_function(&diofork_gup_ops);
		ftrace_set_filter_ip(&diofork_gup_ops, diofork_gup_fast_addr, 1, 0);
		diofork_gup_ftrace_on = false;
	}
	mutex_unlock(&diofork_gup_mutex);
	/* no new stand-in can start; wait for those asleep in a lookup */
	wait_event(diofork_gup_standins_wq, !atomic_read(&diofork_gup_standins));
	/* and for the last one to leave our text after its wake-up */
	synchronize_rcu_tasks();
}

/*
 * The tracking kretprobe is gone: a task that was between its lookup and
 * the return of bio_iov_iter_get_pages() will never close its slot.  Take
 * every open slot away from its owner, let stand-ins already running finish
 * (they still use it), then let each policy undo what its slot holds.
 */
void diofork_gup_sweep(void)
{
	struct diofork_gup_slot *s;
	unsigned int i, n = 0;

	for (i = 0; i < ARRAY_SIZE(diofork_gup_slots); i++) {
		s = &diofork_gup_slots[i];
		if (READ_ONCE(s->task) &&
		    xchg(&s->task, DIOFORK_GUP_SLOT_SWEPT))
			n++;
	}
	if (!n)
		return;
	/* xchg() was a full barrier: a stand-in not counted yet misses its slot */
	wait_event(diofork_gup_standins_wq, !atomic_read(&diofork_gup_standins));
	for (i = 0; i < ARRAY_SIZE(diofork_gup_slots); i++) {
		s = &diofork_gup_slots[i];
		if (READ_ONCE(s->task) != DIOFORK_GUP_SLOT_SWEPT)
			continue;
		if (s->ops && s->ops->abandon)
			s->ops->abandon(s);
		diofork_stat_inc(DIOFORK_STAT_TRACK_FORCED_RELEASE);
		diofork_gup_slot_close(s);
	}
}

void diofork_gup_init(void)
{
	diofork_gup_fast_addr = diofork_symbol_addr("get_user_pages_fast");
}
