/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What lock and drain share: a task that must wait is never put to sleep in
 * a hook (kprobe context; the COW path even holds the PTE lock).  The hook
 * sends the task to a stand-in for the probed function, which backs the
 * operation off and sleeps where sleeping is allowed (lock: in the fault
 * path once the PTE lock is dropped), or queues task work that sleeps on
 * the way back to user space (drain); then the operation is retried.
 *
 * A waiter is counted (diofork_wait_begin) before the hook lets go, so
 * stopping the policy can wake and wait for every one of them.
 */
#ifndef _DIOFORK_POLICY_WAIT_H
#define _DIOFORK_POLICY_WAIT_H

#include <linux/task_work.h>
#include "diofork.h"

struct diofork_wait_policy {
	struct diofork_wait stats;
	unsigned int timeout_ms;	/* 0: unbounded */
	bool stopping;
	atomic_t waiters;
	enum diofork_stat stat_timeouts;
	enum diofork_stat stat_aborted;
};

bool diofork_wait_begin(struct diofork_wait_policy *wp);
int diofork_wait_sleep(struct diofork_wait_policy *wp, struct mm_struct *mm,
		       unsigned long pfn);
int diofork_wait_done(struct diofork_wait_policy *wp, u64 start_ns, int ret);
void diofork_wait_pass_grant(unsigned long key);
bool diofork_wait_pass_take(unsigned long key);
void diofork_wait_end(struct diofork_wait_policy *wp);
void diofork_wait_policy_start(struct diofork_wait_policy *wp);
void diofork_wait_policy_stop(struct diofork_wait_policy *wp);

#endif /* _DIOFORK_POLICY_WAIT_H */
