// SPDX-License-Identifier: GPL-2.0
/*
 * lock: a COW fault on a page with a DIO read in flight waits for the IO
 * (writes are not tracked: COW can not lose them, see track.c).
 *
 * This is the lock_page()-in-the-DIO-path idea that Linux dropped as too
 * slow, done with our own table instead of the page lock: a write (or
 * unshare) fault in the DIO's own mm that would break COW on a page a DIO
 * still targets backs off (PTE lock dropped, nothing changed), sleeps until
 * that page has no DIO of this mm in flight, then faults again and COWs
 * complete data.
 *
 * User-mode and kernel-mode faults (a DIO page lookup, a copy_to_user())
 * wait alike, and so does the task that submitted the DIO (lock_waits_self):
 * a process that writes its own AIO buffer after fork, or a DIO whose next
 * bio's page lookup breaks COW on a page its earlier bio still reads into,
 * would otherwise lose that read.  This never waits for itself: a bio is
 * in the table only once its page lookup has returned, so a lookup waits
 * only for bios already handed to the block layer, and sleeping flushes
 * the task's plug, so they complete without it.  (A polled io_uring ring is
 * the exception: its bios complete only when polled; lock_timeout_ms
 * bounds that.)  A COW in another mm (the child) leaves the DIO's page
 * with its owner and needs no wait.
 *
 * A wait that times out lets that task's retried fault on that page through
 * once (a pass, see policy_wait.c), so lock_timeout_ms bounds the fault.
 *
 * The wait starts at the record, made when the page lookup returns.  A fork
 * that shares a page between the lookup and the record, then a write fault
 * in the parent in that same gap, would replace the parent's page before
 * any record could make the fault wait.  Such a record finds, when it is
 * hashed, that the fork has shared a page already (track.c), and the
 * lookup is done again (getpages.c), as in pin: it breaks COW and takes the
 * parent's page of now.  A page shared after that is covered: the
 * parent's COW fault finds the record.
 */
#include <linux/mm.h>
#include "compat.h"
#include "policy_wait.h"

struct diofork_wait_policy diofork_lock = {
	.stat_timeouts		= DIOFORK_STAT_LOCK_TIMEOUTS,
	.stat_aborted		= DIOFORK_STAT_LOCK_ABORTED,
};

/*
 * Runs in place of do_wp_page(), PTE lock held.  Like a fault that waits
 * for a page lock (folio_lock_or_retry()): if the fault may be retried,
 * drop the mmap (or VMA) lock too, wait, and return VM_FAULT_RETRY;
 * otherwise wait holding it and return 0, and the fault is simply retried.
 * Sleeping here is allowed: the caller may sleep, the PTE lock is gone.
 * Completing DIO needs neither lock.
 */
static vm_fault_t diofork_lock_cow_standin(struct vm_fault *vmf)
{
	struct mm_struct *mm = vmf->vma->vm_mm;
	unsigned long pfn = pte_pfn(vmf->orig_pte);
	unsigned int flags = vmf->flags;
	vm_fault_t ret = 0;

	diofork_pte_unmap_unlock(vmf);
	if (flags & FAULT_FLAG_RETRY_NOWAIT) {
		/* the caller cannot wait (io_uring's nonblocking try) */
		diofork_wait_end(&diofork_lock);
		return VM_FAULT_RETRY;
	}
	if (flags & FAULT_FLAG_ALLOW_RETRY) {
		diofork_release_fault_lock(vmf);
		ret = VM_FAULT_RETRY;
	}
	if (diofork_wait_sleep(&diofork_lock, mm, pfn) == -ETIMEDOUT)
		diofork_wait_pass_grant(pfn);
	diofork_wait_end(&diofork_lock);
	return ret;
}

static unsigned long diofork_lock_cow_fault(struct vm_fault *vmf,
					    const struct mm_struct *owner)
{
	struct mm_struct *mm = vmf->vma->vm_mm;
	unsigned long pfn = pte_pfn(vmf->orig_pte);

	/*
	 * A write fault, or an unshare fault: a FOLL_PIN lookup without
	 * FOLL_WRITE (process_vm_readv() of this process, say) also gives
	 * the parent a copy of a page fork shared, and the read is lost alike.
	 */
	if (owner != mm ||
	    !(vmf->flags & (FAULT_FLAG_WRITE | FAULT_FLAG_UNSHARE)))
		return 0;
	/* this fault already waited its lock_timeout_ms out */
	if (diofork_wait_pass_take(pfn))
		return 0;
	if (!diofork_wait_begin(&diofork_lock))
		return 0;
	if (diofork_track_page_task(pfn, mm, current))
		diofork_stat_inc(DIOFORK_STAT_LOCK_WAITS_SELF);
	return (unsigned long)diofork_lock_cow_standin;
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
	.redo_shared	= true,
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
