// SPDX-License-Identifier: GPL-2.0
/*
 * pin: DIO takes real pins (FOLL_PIN), so fork() copies the pages early.
 *
 * Mainline (v6.5) makes the block layer pin DIO pages.  fork() then sees a
 * possibly-pinned exclusive anonymous page (MMF_HAS_PINNED and
 * folio_maybe_dma_pinned()) and gives the child a copy at once, so the
 * parent keeps the page the device writes into.  On a kernel whose DIO takes
 * plain references (Debian 6.1) this mode makes the DIO's own page lookup
 * pin:
 *
 *  - bio_iov_iter_get_pages() entry (the tracking kretprobe) opens a
 *    per-task context;
 *  - inside that context, an ftrace IPMODIFY handler sends
 *    get_user_pages_fast() to diofork_pin_gup(), which calls the exported
 *    pin_user_pages_fast() instead and adds the plain reference the DIO
 *    path expects (it will put_page() each page once, as before);
 *  - the pins are handed to the DIO's record and dropped exactly once when
 *    its pages are released, on every path: completion, error, process
 *    exit (the DIO still completes), mode switch and unload.
 *
 * Pinning inside the kernel's own GUP keeps the kernel's protocol against a
 * concurrent fork (write_protect_seq, then the mmap lock), and the pin is
 * accounted in /proc/vmstat nr_foll_pin_*.  Nothing is wrapped: the
 * original get_user_pages_fast() is never called from here.
 *
 * Not pinned: pages that are not anonymous (MAP_SHARED, shmem: fork does not
 * copy them), MADV_DONTFORK ranges when the VMA can be checked without
 * waiting for the mmap lock, io_uring registered buffers (not user-backed
 * iterators: never reach here).  On a kernel that pins DIO itself the mode
 * is passive: it tracks and counts, and pins nothing twice.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/ftrace.h>
#include <linux/hash.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/wait.h>
#include "diofork.h"
#include "compat.h"

#define DIOFORK_PIN_SLOT_BITS	10
#define DIOFORK_PIN_PROBES	16

/*
 * One open DIO page-lookup context per task, found by the task itself.
 * Only the owner reads its slot, so a slot needs no lock: it is claimed
 * with cmpxchg() and freed with a release store.
 */
struct diofork_pin_slot {
	struct task_struct *task;
	struct page **pages;
	unsigned int nr;
	unsigned int cap;
};

/* a slot taken from its owner by diofork_pin_sweep(), not yet freed */
#define DIOFORK_PIN_SLOT_SWEPT	((struct task_struct *)1UL)

static struct diofork_pin_slot diofork_pin_slots[1 << DIOFORK_PIN_SLOT_BITS];
static atomic_t diofork_pin_wrappers = ATOMIC_INIT(0);
static DECLARE_WAIT_QUEUE_HEAD(diofork_pin_wrappers_wq);
static unsigned long diofork_gup_fast_addr;
static bool diofork_pin_passive;
static bool diofork_pin_ftrace_on;

static struct diofork_pin_slot *diofork_pin_slot_find(void)
{
	unsigned int h = hash_ptr(current, DIOFORK_PIN_SLOT_BITS), i;
	struct diofork_pin_slot *s;

	for (i = 0; i < DIOFORK_PIN_PROBES; i++) {
		s = &diofork_pin_slots[(h + i) & ((1 << DIOFORK_PIN_SLOT_BITS) - 1)];
		if (READ_ONCE(s->task) == current)
			return s;
	}
	return NULL;
}

static struct diofork_pin_slot *diofork_pin_slot_claim(void)
{
	unsigned int h = hash_ptr(current, DIOFORK_PIN_SLOT_BITS), i;
	struct diofork_pin_slot *s;

	for (i = 0; i < DIOFORK_PIN_PROBES; i++) {
		s = &diofork_pin_slots[(h + i) & ((1 << DIOFORK_PIN_SLOT_BITS) - 1)];
		if (!READ_ONCE(s->task) && !cmpxchg(&s->task, NULL, current)) {
			s->pages = NULL;
			s->nr = 0;
			s->cap = 0;
			return s;
		}
	}
	return NULL;
}

static void diofork_pin_slot_free(struct diofork_pin_slot *s)
{
	s->pages = NULL;
	s->nr = 0;
	s->cap = 0;
	/* the fields above are cleared before another task can claim it */
	smp_store_release(&s->task, NULL);
}

static void diofork_pin_drop(struct page **pages, unsigned int nr)
{
	if (!nr)
		return;
	unpin_user_pages(pages, nr);
	diofork_stat_add(DIOFORK_STAT_PIN_PAGES_UNPINNED, nr);
}

static void diofork_pin_wrapper_done(void)
{
	if (atomic_dec_and_test(&diofork_pin_wrappers))
		wake_up_all(&diofork_pin_wrappers_wq);
}

/* ---- the GUP replacement: runs where get_user_pages_fast() would -------- */

/* Could fork copy this range?  Only when the VMA can be read without waiting. */
static bool diofork_pin_range_forkable(unsigned long start, unsigned long end)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma;
	bool forkable = false;

	if (!mmap_read_trylock(mm))
		return true;
	for (vma = find_vma(mm, start); vma && vma->vm_start < end;
	     vma = find_vma(mm, vma->vm_end)) {
		if (!(vma->vm_flags & (VM_SHARED | VM_DONTCOPY))) {
			forkable = true;
			break;
		}
	}
	mmap_read_unlock(mm);
	if (!forkable)
		diofork_stat_inc(DIOFORK_STAT_PIN_SKIPPED_DONTFORK);
	return forkable;
}

static bool diofork_pin_slot_grow(struct diofork_pin_slot *s, unsigned int more)
{
	struct page **pages;
	unsigned int cap;

	if (s->nr + more <= s->cap)
		return true;
	cap = max(s->nr + more, 2 * s->cap);
	pages = krealloc_array(s->pages, cap, sizeof(*pages), GFP_KERNEL);
	if (!pages)
		return false;
	s->pages = pages;
	s->cap = cap;
	return true;
}

static int diofork_pin_gup(unsigned long start, int nr_pages,
			   unsigned int gup_flags, struct page **pages)
{
	struct diofork_pin_slot *s = diofork_pin_slot_find();
	int i, ret, kept = 0;

	if (!s || nr_pages <= 0 ||
	    !diofork_pin_range_forkable(start, start + nr_pages * PAGE_SIZE))
		goto plain;
	if (!diofork_pin_slot_grow(s, nr_pages)) {
		diofork_stat_inc(DIOFORK_STAT_PIN_FAILURES);
		goto plain;
	}

	ret = pin_user_pages_fast(start, nr_pages, gup_flags, pages);
	if (ret <= 0)
		diofork_stat_inc(DIOFORK_STAT_PIN_FAILURES);
	for (i = 0; i < ret; i++) {
		/* the reference the DIO path will put_page() */
		get_page(pages[i]);
		if (!PageAnon(pages[i])) {
			/* shared memory: fork does not copy it, keep no pin */
			unpin_user_page(pages[i]);
			diofork_stat_inc(DIOFORK_STAT_PIN_SKIPPED_SHARED);
			continue;
		}
		s->pages[s->nr++] = pages[i];
		kept++;
	}
	diofork_stat_add(DIOFORK_STAT_PIN_PAGES_PINNED, kept);
	goto out;

plain:
	/* not redirected again: the caller is this module */
	ret = get_user_pages_fast(start, nr_pages, gup_flags, pages);
out:
	diofork_pin_wrapper_done();
	return ret;
}

static void notrace diofork_pin_ftrace(unsigned long ip, unsigned long parent_ip,
				       struct ftrace_ops *op,
				       struct ftrace_regs *fregs)
{
	if (within_module(parent_ip, THIS_MODULE))
		return;
	/*
	 * Counted before the slot is looked up and before the jump: the sweep
	 * invalidates slots, then waits for this count to drain, so it either
	 * sees us or we miss the slot.
	 */
	atomic_inc(&diofork_pin_wrappers);
	smp_mb__after_atomic();	/* pairs with xchg() in diofork_pin_sweep() */
	if (!diofork_pin_slot_find()) {
		diofork_pin_wrapper_done();
		return;
	}
	diofork_ftrace_set_ip(fregs, (unsigned long)diofork_pin_gup);
}

static struct ftrace_ops diofork_pin_ops = {
	.func	= diofork_pin_ftrace,
	.flags	= FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_IPMODIFY |
		  FTRACE_OPS_FL_RECURSION,
};

/* ---- policy callbacks ----------------------------------------------------- */

static void diofork_pin_gup_enter(struct diofork_gup *g)
{
	if (diofork_pin_passive)
		return;
	g->pin_slot = diofork_pin_slot_claim();
	if (!g->pin_slot)
		diofork_stat_inc(DIOFORK_STAT_PIN_FAILURES);
}

/* bio_iov_iter_get_pages() returned: hand the pins to the record, if any. */
static void diofork_pin_gup_exit(struct diofork_gup *g, struct diofork_io *io)
{
	struct diofork_pin_slot *s = g->pin_slot;

	if (!s)
		return;
	if (io && s->nr) {
		io->pinned = s->pages;
		io->nr_pinned = s->nr;
	} else {
		/* no record (error, or out of memory): the IO is unprotected */
		if (s->nr && !io)
			diofork_stat_inc(DIOFORK_STAT_PIN_FAILURES);
		diofork_pin_drop(s->pages, s->nr);
		kfree(s->pages);
	}
	diofork_pin_slot_free(s);
	g->pin_slot = NULL;
}

/* From the record's release, whatever the mode is by then. */
void diofork_pin_release(struct diofork_io *io)
{
	diofork_pin_drop(io->pinned, io->nr_pinned);
	kfree(io->pinned);
	io->pinned = NULL;
	io->nr_pinned = 0;
}

static unsigned long diofork_pin_fork(struct mm_struct *mm, bool dio_inflight)
{
	if (dio_inflight)
		diofork_stat_add(DIOFORK_STAT_PIN_FORK_PINNED_PAGES,
				 diofork_track_mm_pinned(mm));
	return 0;
}

static int diofork_pin_enable(void)
{
	int ret;

	diofork_pin_passive = diofork_kernel_has_extract_pages;
	if (diofork_pin_passive) {
		pr_info("pin: this kernel pins DIO pages itself: passive\n");
		return 0;
	}
	if (diofork_pin_ftrace_on)
		return 0;
	if (!diofork_gup_fast_addr)
		return -EOPNOTSUPP;
	ret = ftrace_set_filter_ip(&diofork_pin_ops, diofork_gup_fast_addr, 0, 0);
	if (ret)
		return ret;
	ret = register_ftrace_function(&diofork_pin_ops);
	if (ret) {
		ftrace_set_filter_ip(&diofork_pin_ops, diofork_gup_fast_addr, 1, 0);
		pr_err("pin: cannot redirect get_user_pages_fast (%d)\n", ret);
		return ret;
	}
	diofork_pin_ftrace_on = true;
	return 0;
}

/*
 * Module unload: the redirect goes, and every wrapper has left.  Until
 * then it stays registered once pin was used (see hooks.c: registering
 * IP-modifying ops over and over under load crashed 6.1), doing nothing
 * without an open context, and only pin opens them.
 */
void diofork_pin_unload(void)
{
	if (!diofork_pin_ftrace_on)
		return;
	unregister_ftrace_function(&diofork_pin_ops);
	ftrace_set_filter_ip(&diofork_pin_ops, diofork_gup_fast_addr, 1, 0);
	diofork_pin_ftrace_on = false;
	/* no new wrapper can start; wait for those asleep in GUP */
	wait_event(diofork_pin_wrappers_wq, !atomic_read(&diofork_pin_wrappers));
	/* and for the last one to leave our text after its wake-up */
	synchronize_rcu_tasks();
}

/*
 * The tracking kretprobe is gone: a task that was between our GUP and the
 * return of bio_iov_iter_get_pages() will never close its context.  Take
 * every open slot away from its owner, let wrappers already running finish
 * (they still append to it), then drop the pins (the DIO keeps its own page
 * references).
 */
void diofork_pin_sweep(void)
{
	struct diofork_pin_slot *s;
	unsigned int i, n = 0;

	for (i = 0; i < ARRAY_SIZE(diofork_pin_slots); i++) {
		s = &diofork_pin_slots[i];
		if (READ_ONCE(s->task) &&
		    xchg(&s->task, DIOFORK_PIN_SLOT_SWEPT))
			n++;
	}
	if (!n)
		return;
	/* xchg() was a full barrier: a wrapper not counted yet misses its slot */
	wait_event(diofork_pin_wrappers_wq, !atomic_read(&diofork_pin_wrappers));
	for (i = 0; i < ARRAY_SIZE(diofork_pin_slots); i++) {
		s = &diofork_pin_slots[i];
		if (READ_ONCE(s->task) != DIOFORK_PIN_SLOT_SWEPT)
			continue;
		diofork_pin_drop(s->pages, s->nr);
		kfree(s->pages);
		diofork_stat_inc(DIOFORK_STAT_TRACK_FORCED_RELEASE);
		diofork_pin_slot_free(s);
	}
}

static const struct diofork_policy diofork_pin = {
	.mode		= DIOFORK_MODE_PIN,
	.hooks		= DIOFORK_HOOKS_TRACK | BIT(DIOFORK_HOOK_FORK) |
			  BIT(DIOFORK_HOOK_COW),
	.enable		= diofork_pin_enable,
	.gup_enter	= diofork_pin_gup_enter,
	.gup_exit	= diofork_pin_gup_exit,
	.fork		= diofork_pin_fork,
};

int diofork_policy_pin_init(void)
{
	diofork_gup_fast_addr = diofork_symbol_addr("get_user_pages_fast");
	return diofork_policy_register(&diofork_pin);
}
