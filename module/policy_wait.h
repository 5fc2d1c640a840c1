/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What lock and drain share: a task that must wait is not put to sleep in
 * the probed function (the COW path holds the PTE lock, fork is deep in
 * copy_process()).  The hook backs the operation off and queues task work;
 * the task sleeps there, on its way back to user space, where sleeping is
 * allowed and nothing is held, and then retries the fault or the fork.
 */
#ifndef _DIOFORK_POLICY_WAIT_H
#define _DIOFORK_POLICY_WAIT_H

#include <linux/task_work.h>
#include "diofork.h"

struct diofork_waiter {
	struct callback_head cb;
	struct diofork_wait_policy *wp;
	struct mm_struct *mm;		/* identity only */
	unsigned long pfn;		/* ULONG_MAX: the whole mm */
	u64 start_ns;
};

struct diofork_wait_policy {
	const char *name;
	struct diofork_wait stats;
	unsigned int timeout_ms;	/* 0: unbounded */
	bool stopping;
	atomic_t waiters;
	enum diofork_stat stat_timeouts;
	enum diofork_stat stat_aborted;
	enum diofork_stat stat_alloc_failures;
};

bool diofork_wait_queue(struct diofork_wait_policy *wp, struct mm_struct *mm,
			unsigned long pfn, enum task_work_notify_mode notify);
void diofork_wait_policy_start(struct diofork_wait_policy *wp);
void diofork_wait_policy_stop(struct diofork_wait_policy *wp);

#endif /* _DIOFORK_POLICY_WAIT_H */
