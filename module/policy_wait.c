// SPDX-License-Identifier: GPL-2.0
/*
 * Deferred waits for lock and drain: see policy_wait.h.
 *
 * Stopping (mode switch, unload) sets ->stopping, wakes every waiter, and
 * waits until none is left in this file's code.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/hash.h>
#include <linux/jiffies.h>
#include <linux/ktime.h>
#include <linux/atomic.h>
#include <linux/sched.h>
#include <linux/wait.h>
#include "policy_wait.h"

static DECLARE_WAIT_QUEUE_HEAD(diofork_waiters_gone);

/* From a hook: count a waiter in, unless the policy is stopping. */
bool diofork_wait_begin(struct diofork_wait_policy *wp)
{
	atomic_inc(&wp->waiters);
	/* pairs with diofork_wait_policy_stop(): it sees us, or we see it */
	smp_mb__after_atomic();
	if (!READ_ONCE(wp->stopping))
		return true;
	diofork_wait_end(wp);
	return false;
}

void diofork_wait_end(struct diofork_wait_policy *wp)
{
	if (atomic_dec_and_test(&wp->waiters))
		wake_up_all(&diofork_waiters_gone);
}

/*
 * Sleep until @mm has no DIO on @pfn (ULONG_MAX: none at all), bounded by
 * the policy's timeout, a fatal signal, or the policy stopping.
 */
int diofork_wait_sleep(struct diofork_wait_policy *wp, struct mm_struct *mm,
		       unsigned long pfn)
{
	unsigned int ms = READ_ONCE(wp->timeout_ms);
	u64 start = ktime_get_ns();
	int ret;

	ret = diofork_track_wait_event(mm, pfn, ms ? msecs_to_jiffies(ms) :
						     MAX_SCHEDULE_TIMEOUT,
				       &wp->stopping);
	return diofork_wait_done(wp, start, ret);
}

/*
 * Account a wait that began at @start_ns (ktime_get_ns()) and ended with
 * @ret (0, -ETIMEDOUT, or another error for a wait cut short); returns @ret.
 */
int diofork_wait_done(struct diofork_wait_policy *wp, u64 start_ns, int ret)
{
	diofork_wait_record(&wp->stats, ktime_get_ns() - start_ns);
	if (ret == -ETIMEDOUT)
		diofork_stat_inc(wp->stat_timeouts);
	else if (ret)
		diofork_stat_inc(wp->stat_aborted);
	return ret;
}

/*
 * Passes: a task whose wait timed out retries the operation (the fault,
 * the fork) and must not wait again for the same thing, or the timeout
 * would bound nothing.  One pass per hashed task slot: only its task takes
 * it; a collision overwrites another task's pass, which then waits one
 * more timeout.
 */
#define DIOFORK_PASS_BITS	8

struct diofork_pass {
	struct task_struct *task;
	unsigned long key;
};

static struct diofork_pass diofork_passes[1 << DIOFORK_PASS_BITS];

static struct diofork_pass *diofork_pass_slot(void)
{
	return &diofork_passes[hash_ptr(current, DIOFORK_PASS_BITS)];
}

void diofork_wait_pass_grant(unsigned long key)
{
	struct diofork_pass *p = diofork_pass_slot();

	WRITE_ONCE(p->key, key);
	/* the key is written before a task can see the slot as its own */
	smp_store_release(&p->task, current);
}

/* From a hook: does current hold a pass for @key?  It is used up. */
bool diofork_wait_pass_take(unsigned long key)
{
	struct diofork_pass *p = diofork_pass_slot();

	/* pairs with the release in diofork_wait_pass_grant(): the key is ours */
	if (smp_load_acquire(&p->task) != current)
		return false;
	if (READ_ONCE(p->key) != key)
		return false;
	return cmpxchg(&p->task, current, NULL) == current;
}

void diofork_wait_policy_start(struct diofork_wait_policy *wp)
{
	WRITE_ONCE(wp->stopping, false);
}

/*
 * Release every waiter and wait until each has left diofork_wait_fn().
 * Queued work that has not run yet runs promptly: its task is on its way
 * back to user space.
 */
void diofork_wait_policy_stop(struct diofork_wait_policy *wp)
{
	WRITE_ONCE(wp->stopping, true);
	smp_mb();	/* pairs with diofork_wait_begin() */
	diofork_track_wake_all();
	wait_event(diofork_waiters_gone, !atomic_read(&wp->waiters));
	/* the last one may still be on its way out of our text */
	synchronize_rcu_tasks();
}
