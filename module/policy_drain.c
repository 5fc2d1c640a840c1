// SPDX-License-Identifier: GPL-2.0
/*
 * drain: fork() of a process with DIO reads in flight waits for them, and
 * no new DIO read of that process takes its pages while fork copies.
 * (Writes are not tracked, so fork never waits for them: see track.c.)
 *
 * The man page's advice ("such I/Os should be completed before fork is
 * called"), enforced for applications that don't follow it.  Two halves,
 * joined by two counters per mm, hashed:
 *
 *   forking  forks holding new DIO off, from kernel_clone() entry until
 *            the fork returns to user space, each listed by mm;
 *   lookups  DIO page lookups that passed the gate and are not yet in the
 *            in-flight table.
 *
 * Two mms may share a bucket.  A DIO is only held off by a fork of its own
 * mm (the list says), never by another process: a vfork-style clone
 * without CLONE_VM holds its mm until the child execs, and the child's DIO
 * must not wait for that.  A fork may wait for another mm's lookup in its
 * bucket to be recorded, which takes no longer than a lookup.
 *
 * Fork (kernel_clone() entry, atomic): forking++, then look at lookups and
 * the table.  Nothing there: fork proceeds, holding new DIO off until it
 * returns to user space (task work).  Something there: a stand-in runs in
 * place of kernel_clone(), before anything is copied.  It sleeps, holding
 * new DIO off, until the lookups are recorded and every DIO has completed,
 * then forks by calling kernel_clone() itself, still holding, and the task
 * work lets go on the way back to user space.  Holding during the wait is
 * what lets a busy mm drain at all, and holding on until the copy is done
 * is what makes one wait enough.  (Until 2026-11-25 the stand-in returned
 * -ERESTARTNOINTR, task work waited, let go, and the syscall restarted: new
 * DIO got in between, and the restarted fork often found some and waited
 * again.  make demo's raw_sync: 20,988 waits for 2,354 forks.)  The
 * fork's own pass through the hook finds a pass (policy_wait.c) and does
 * not wait twice.  On a kernel with IBT, whose kernel_clone() may have no
 * ENDBR for an indirect call, the restart is kept.
 *
 * DIO (its page lookup, taken over by gup.c, process context): lookups++,
 * then look at forking.  Held: lookups--, sleep until no fork holds, try
 * again.  Otherwise take the pages; lookups-- once the record is in.  The
 * two sides increment, issue a full barrier and read the other's counter,
 * so at least one of them sees the other.
 *
 * Where the sleeping happens, no lock is held: the fork's wait runs on the
 * way back to user space, the DIO's in its page lookup (which may sleep
 * anyway; sleeping flushes its plug, so its earlier bios complete).  A DIO
 * thread blocked on a fault, or an io_uring worker, can finish.  vfork,
 * posix_spawn and threads share the mm (CLONE_VM): they copy nothing and
 * never wait.  A SIGKILL ends either wait at once.
 *
 * The hold-off needs the lookup taken over, which only works where DIO
 * takes plain references (Debian 6.1).  Where the kernel pins DIO (6.12),
 * fork copies such pages itself, and drain is passive, as pin is: it
 * tracks and counts, and no fork waits.  A wait there would protect
 * nothing, and with nothing holding new DIO off, a process whose other
 * threads keep reads in flight (io_uring at QD > 1) might never be seen
 * idle: its fork would wait as long as the stream lasts.  A wait that
 * times out (drain_timeout_ms) forks all the same (on an IBT kernel the
 * restarted fork goes ahead with a pass, see policy_wait.c).  The legacy
 * fs/direct-io.c path (vfat) takes its pages elsewhere and is not held
 * off.
 */
#include <linux/errno.h>
#include <linux/hash.h>
#include <linux/jiffies.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include "policy_wait.h"

#define DIOFORK_DRAIN_MM_BITS	8

struct diofork_wait_policy diofork_drain = {
	.stat_timeouts		= DIOFORK_STAT_DRAIN_TIMEOUTS,
	.stat_aborted		= DIOFORK_STAT_DRAIN_ABORTED,
};

struct diofork_drain_mm {
	atomic_t forking;
	atomic_t lookups;
	spinlock_t lock;		/* holds */
	struct hlist_head holds;
} ____cacheline_aligned_in_smp;

/* A fork's hold on its mm, released by task work. */
struct diofork_drain_hold {
	struct callback_head cb;
	struct hlist_node node;
	struct mm_struct *mm;		/* identity only */
	bool wait;			/* fork restarts: drain first */
};

static struct diofork_drain_mm diofork_drain_mms[1 << DIOFORK_DRAIN_MM_BITS];
/* kernel_clone(), for the stand-in of a fork that waited; NULL: restart */
static pid_t (*diofork_drain_clone)(struct kernel_clone_args *args);
/* forks waiting for lookups, DIO waiting for forks: both rare */
static DECLARE_WAIT_QUEUE_HEAD(diofork_drain_wq);
static bool diofork_drain_gates;

static struct diofork_drain_mm *diofork_drain_mm(const struct mm_struct *mm)
{
	return &diofork_drain_mms[hash_ptr(mm, DIOFORK_DRAIN_MM_BITS)];
}

static void diofork_drain_wake(void)
{
	/* full barrier: our counter change is seen by a waiter's recheck */
	if (wq_has_sleeper(&diofork_drain_wq))
		wake_up_all(&diofork_drain_wq);
}

/* ---- the DIO side ----------------------------------------------------------- */

static void diofork_drain_lookup_done(atomic_t *lookups)
{
	/* fully ordered: the record went in before we leave the count */
	if (atomic_dec_and_test(lookups))
		diofork_drain_wake();
}

/* Does a fork of @mm hold DIO off?  Exact, and cheap when nothing forks. */
static bool diofork_drain_held(struct diofork_drain_mm *dm,
			       const struct mm_struct *mm)
{
	struct diofork_drain_hold *h;
	bool held = false;

	if (!atomic_read(&dm->forking) || READ_ONCE(diofork_drain.stopping))
		return false;
	spin_lock(&dm->lock);
	hlist_for_each_entry(h, &dm->holds, node) {
		if (h->mm == mm) {
			held = true;
			break;
		}
	}
	spin_unlock(&dm->lock);
	return held;
}

/* In place of the DIO's get_user_pages_fast(): wait while the mm forks. */
static int diofork_drain_lookup(struct diofork_gup_slot *s, unsigned long start,
				int nr_pages, unsigned int gup_flags,
				struct page **pages)
{
	struct mm_struct *mm = current->mm;
	struct diofork_drain_mm *dm = diofork_drain_mm(mm);
	bool counted = false;

	while (!s->gated) {
		atomic_inc(&dm->lookups);
		/*
		 * Pairs with diofork_drain_fork(): it sees our count, or we see
		 * its: the fork listed its hold and counted it under the lock,
		 * so a count seen here means its entry is seen too.
		 */
		smp_mb__after_atomic();
		if (!diofork_drain_held(dm, mm)) {
			s->gated = &dm->lookups;
			break;
		}
		diofork_drain_lookup_done(&dm->lookups);
		if (!counted) {
			counted = true;
			diofork_stat_inc(DIOFORK_STAT_DRAIN_DIO_HELD_OFF);
		}
		if (wait_event_killable(diofork_drain_wq,
					!diofork_drain_held(dm, mm)))
			return -EINTR;
	}
	/* not redirected again: the slot is in its lookup (gup.c) */
	return get_user_pages_fast(start, nr_pages, gup_flags, pages);
}

static const struct diofork_gup_ops diofork_drain_gup_ops = {
	.lookup		= diofork_drain_lookup,
};

static void diofork_drain_gup_enter(struct diofork_gup *g)
{
	if (!diofork_drain_gates)
		return;
	g->slot = diofork_gup_slot_open(&diofork_drain_gup_ops);
	if (!g->slot)
		diofork_stat_inc(DIOFORK_STAT_DRAIN_ALLOC_FAILURES);
}

/* bio_iov_iter_get_pages() returned; its record, if any, is in the table. */
static void diofork_drain_gup_exit(struct diofork_gup *g, struct diofork_io *io)
{
	struct diofork_gup_slot *s = g->slot;

	if (!s)
		return;
	if (s->gated)
		diofork_drain_lookup_done(s->gated);
	diofork_gup_slot_close(s);
	g->slot = NULL;
}

/* ---- the fork side --------------------------------------------------------- */

/*
 * Sleep until the lookups that passed the gate are recorded and @mm has no
 * DIO in flight, bounded by drain_timeout_ms, a fatal signal or the policy
 * stopping.  New lookups are held off meanwhile.
 */
static int diofork_drain_sleep(struct mm_struct *mm)
{
	struct diofork_drain_mm *dm = diofork_drain_mm(mm);
	unsigned int ms = READ_ONCE(diofork_drain.timeout_ms);
	u64 start = ktime_get_ns();
	long left;
	int ret;

	left = wait_event_killable_timeout(diofork_drain_wq,
					   !atomic_read(&dm->lookups) ||
					   READ_ONCE(diofork_drain.stopping),
					   ms ? msecs_to_jiffies(ms) :
						MAX_SCHEDULE_TIMEOUT);
	if (left < 0)
		ret = -EINTR;
	else if (READ_ONCE(diofork_drain.stopping))
		ret = -ECANCELED;
	else if (!left)
		ret = -ETIMEDOUT;
	else
		ret = diofork_track_wait_event(mm, ULONG_MAX, left,
					       &diofork_drain.stopping);
	return diofork_wait_done(&diofork_drain, start, ret);
}

static void diofork_drain_hold(struct diofork_drain_hold *h)
{
	struct diofork_drain_mm *dm = diofork_drain_mm(h->mm);

	spin_lock(&dm->lock);
	hlist_add_head(&h->node, &dm->holds);
	atomic_inc(&dm->forking);
	spin_unlock(&dm->lock);
}

static void diofork_drain_unhold(struct diofork_drain_hold *h)
{
	struct diofork_drain_mm *dm = diofork_drain_mm(h->mm);

	spin_lock(&dm->lock);
	hlist_del(&h->node);
	atomic_dec(&dm->forking);
	spin_unlock(&dm->lock);
	diofork_drain_wake();
}

/* Task work: on the way back to user space, or at exit.  Always runs. */
static void diofork_drain_hold_fn(struct callback_head *cb)
{
	struct diofork_drain_hold *h =
		container_of(cb, struct diofork_drain_hold, cb);

	/* timed out: the restarted fork goes ahead, still holding DIO off */
	if (h->wait && diofork_drain_sleep(h->mm) == -ETIMEDOUT)
		diofork_wait_pass_grant((unsigned long)h->mm);
	diofork_drain_unhold(h);
	kfree(h);
	diofork_wait_end(&diofork_drain);
}

/*
 * Runs in place of kernel_clone() where it can not be called (IBT): the
 * queued task work waits, then the syscall restarts.
 */
static pid_t diofork_drain_fork_standin(struct kernel_clone_args *args)
{
	return -ERESTARTNOINTR;
}

/*
 * Runs in place of kernel_clone(), holding new DIO of current->mm off (the
 * hold's task work lets go on the way back to user space): wait for the
 * DIO in flight, then fork.  A wait that timed out or was cut short by a
 * mode switch forks all the same; a fatal signal ends the task.
 */
static pid_t diofork_drain_fork_wait(struct kernel_clone_args *args)
{
	unsigned long key = (unsigned long)current->mm;
	pid_t pid;

	if (diofork_drain_sleep(current->mm) == -EINTR)
		return -ERESTARTNOINTR;	/* dying: nothing restarts */
	/* the fork's own pass through the hook: no second wait */
	diofork_wait_pass_grant(key);
	pid = READ_ONCE(diofork_drain_clone)(args);
	/* not taken if the mode changed meanwhile: not left for later */
	diofork_wait_pass_take(key);
	return pid;
}

static unsigned long diofork_drain_fork(struct mm_struct *mm, bool dio_inflight)
{
	struct diofork_drain_mm *dm = diofork_drain_mm(mm);
	struct diofork_drain_hold *h;
	bool wait;

	/* the kernel pins DIO pages: fork copies them itself (passive) */
	if (diofork_kernel_has_extract_pages)
		return 0;
	h = kmalloc(sizeof(*h), GFP_ATOMIC | __GFP_NOWARN);
	if (!h) {
		diofork_stat_inc(DIOFORK_STAT_DRAIN_ALLOC_FAILURES);
		return 0;
	}
	if (!diofork_wait_begin(&diofork_drain)) {
		kfree(h);
		return 0;
	}

	h->mm = mm;
	diofork_drain_hold(h);
	smp_mb();		/* pairs with diofork_drain_lookup() */
	wait = atomic_read(&dm->lookups);
	smp_rmb();		/* a lookup leaves the count after its record is in */
	wait = wait || dio_inflight || diofork_track_mm_busy(mm);
	if (wait && diofork_wait_pass_take((unsigned long)mm))
		wait = false;

	init_task_work(&h->cb, diofork_drain_hold_fn);
	h->wait = wait && !READ_ONCE(diofork_drain_clone);
	if (task_work_add(current, &h->cb, h->wait ? TWA_SIGNAL : TWA_RESUME)) {
		/* exiting: nothing to protect any more */
		diofork_drain_unhold(h);
		kfree(h);
		diofork_wait_end(&diofork_drain);
		return 0;
	}
	if (!wait)
		return 0;
	diofork_stat_inc(DIOFORK_STAT_DRAIN_FORKS_WAITED);
	return h->wait ? (unsigned long)diofork_drain_fork_standin :
			 (unsigned long)diofork_drain_fork_wait;
}

/* ---- the policy ------------------------------------------------------------ */

static int diofork_drain_enable(void)
{
	int ret;

	diofork_drain_gates = diofork_gup_redirect_possible();
	if (!IS_ENABLED(CONFIG_X86_KERNEL_IBT))
		WRITE_ONCE(diofork_drain_clone,
			   (void *)diofork_symbol_addr("kernel_clone"));
	if (diofork_drain_gates) {
		ret = diofork_gup_redirect_start();
		if (ret)
			return ret;
	}
	diofork_wait_policy_start(&diofork_drain);
	return 0;
}

/*
 * Waiting forks and held DIO look at ->stopping once woken; the wait
 * policy then waits for every hold to be released.
 */
static void diofork_drain_disable(void)
{
	WRITE_ONCE(diofork_drain.stopping, true);
	smp_mb();	/* pairs with the waiters' recheck after prepare */
	wake_up_all(&diofork_drain_wq);
	diofork_wait_policy_stop(&diofork_drain);
}

/* Does drain hold new DIO off at fork on this kernel?  (kernel.c) */
bool diofork_drain_holds_off_dio(void)
{
	return diofork_gup_redirect_possible();
}

static const struct diofork_policy diofork_drain_policy = {
	.mode		= DIOFORK_MODE_DRAIN,
	.hooks		= DIOFORK_HOOKS_TRACK | BIT(DIOFORK_HOOK_FORK) |
			  BIT(DIOFORK_HOOK_COW),
	.enable		= diofork_drain_enable,
	.disable	= diofork_drain_disable,
	.gup_enter	= diofork_drain_gup_enter,
	.gup_exit	= diofork_drain_gup_exit,
	.fork		= diofork_drain_fork,
};

int diofork_policy_drain_init(void)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(diofork_drain_mms); i++) {
		spin_lock_init(&diofork_drain_mms[i].lock);
		INIT_HLIST_HEAD(&diofork_drain_mms[i].holds);
	}
	return diofork_wait_init(&diofork_drain.stats) ?:
	       diofork_policy_register(&diofork_drain_policy);
}

void diofork_policy_drain_exit(void)
{
	diofork_wait_exit(&diofork_drain.stats);
}
