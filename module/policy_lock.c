// SPDX-License-Identifier: GPL-2.0
/*
 * lock: a COW fault on a page with DIO in flight waits for the IO.
 *
 * This is the lock_page()-in-the-DIO-path idea that Linux dropped as too
 * slow, done with our own table instead of the page lock: a write fault in
 * the DIO's own mm that would break COW on a page a DIO still targets backs
 * off (PTE lock dropped, nothing changed), sleeps until that page has no
 * DIO of this mm in flight, then faults again and COWs complete data.
 *
 * Only user-mode write faults wait.  A kernel-mode fault (GUP, uaccess)
 * would retry inside the kernel without ever sleeping, and a DIO's own GUP
 * must never wait for itself: those proceed and are counted
 * (lock_skipped_kernel).  A COW in another mm (the child) leaves the DIO's
 * page with its owner and needs no wait.
 */
#include <linux/mm.h>
#include "policy_wait.h"

struct diofork_wait_policy diofork_lock = {
	.name			= "lock",
	.stat_timeouts		= DIOFORK_STAT_LOCK_TIMEOUTS,
	.stat_aborted		= DIOFORK_STAT_LOCK_ABORTED,
	.stat_alloc_failures	= DIOFORK_STAT_LOCK_ALLOC_FAILURES,
};

static bool diofork_lock_cow_fault(struct vm_fault *vmf, struct diofork_io *io)
{
	struct mm_struct *mm = vmf->vma->vm_mm;

	if (io->mm != mm || !(vmf->flags & FAULT_FLAG_WRITE))
		return false;
	if (!(vmf->flags & FAULT_FLAG_USER) || current == io->task) {
		diofork_stat_inc(DIOFORK_STAT_LOCK_SKIPPED_KERNEL);
		return false;
	}
	return diofork_wait_queue(&diofork_lock, mm, pte_pfn(vmf->orig_pte),
				  TWA_RESUME);
}

static int diofork_lock_enable(void)
{
	diofork_wait_policy_start(&diofork_lock);
	return 0;
}

static void diofork_lock_disable(void)
{
	diofork_wait_policy_stop(&diofork_lock);
}

static const struct diofork_policy diofork_lock_policy = {
	.mode		= DIOFORK_MODE_LOCK,
	.hooks		= DIOFORK_HOOKS_TRACK | BIT(DIOFORK_HOOK_FORK) |
			  BIT(DIOFORK_HOOK_COW),
	.enable		= diofork_lock_enable,
	.disable	= diofork_lock_disable,
	.cow_fault	= diofork_lock_cow_fault,
};

int diofork_policy_lock_init(void)
{
	return diofork_wait_init(&diofork_lock.stats) ?:
	       diofork_policy_register(&diofork_lock_policy);
}

void diofork_policy_lock_exit(void)
{
	diofork_wait_exit(&diofork_lock.stats);
}
