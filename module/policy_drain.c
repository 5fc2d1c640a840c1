// SPDX-License-Identifier: GPL-2.0
/*
 * drain: fork() of a process with DIO in flight waits for that DIO.
 *
 * The man page's advice ("such I/Os should be completed before fork is
 * called"), enforced for applications that don't follow it.  kernel_clone()
 * of a process whose mm has tracked DIO in flight returns -ERESTARTNOINTR
 * before anything is copied; queued task work (TWA_SIGNAL, so the restart
 * logic runs) sleeps until the mm's DIO has completed, then the fork
 * syscall restarts and is checked again.  Sleeping there holds no lock:
 * a DIO thread blocked on a fault, or an io_uring worker, can finish.
 *
 * vfork, posix_spawn and threads share the mm (CLONE_VM): they copy
 * nothing and never wait.  A SIGKILL ends the wait at once.
 *
 * Not held off yet: a DIO that another thread submits while the restarted
 * fork copies the page tables (track_fork_raced counts such overlaps).
 */
#include <linux/errno.h>
#include <linux/sched/task.h>
#include "policy_wait.h"

struct diofork_wait_policy diofork_drain = {
	.stat_timeouts		= DIOFORK_STAT_DRAIN_TIMEOUTS,
	.stat_aborted		= DIOFORK_STAT_DRAIN_ABORTED,
	.stat_alloc_failures	= DIOFORK_STAT_DRAIN_ALLOC_FAILURES,
};

/*
 * Runs in place of kernel_clone(): the queued task work waits, then the
 * syscall restarts.
 */
static pid_t diofork_drain_fork_standin(struct kernel_clone_args *args)
{
	return -ERESTARTNOINTR;
}

static unsigned long diofork_drain_fork(struct mm_struct *mm, bool dio_inflight)
{
	if (!dio_inflight)
		return 0;
	if (!diofork_wait_queue(&diofork_drain, mm, ULONG_MAX, TWA_SIGNAL))
		return 0;
	diofork_stat_inc(DIOFORK_STAT_DRAIN_FORKS_WAITED);
	return (unsigned long)diofork_drain_fork_standin;
}

static int diofork_drain_enable(void)
{
	diofork_wait_policy_start(&diofork_drain);
	return 0;
}

static void diofork_drain_disable(void)
{
	diofork_wait_policy_stop(&diofork_drain);
}

static const struct diofork_policy diofork_drain_policy = {
	.mode		= DIOFORK_MODE_DRAIN,
	.hooks		= DIOFORK_HOOKS_TRACK | BIT(DIOFORK_HOOK_FORK) |
			  BIT(DIOFORK_HOOK_COW),
	.enable		= diofork_drain_enable,
	.disable	= diofork_drain_disable,
	.fork		= diofork_drain_fork,
};

int diofork_policy_drain_init(void)
{
	return diofork_wait_init(&diofork_drain.stats) ?:
	       diofork_policy_register(&diofork_drain_policy);
}

void diofork_policy_drain_exit(void)
{
	diofork_wait_exit(&diofork_drain.stats);
}
