/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kernel version differences, and only those.  Features are probed in the
 * headers by Kbuild (DIOFORK_HAVE_*), not guessed from LINUX_VERSION_CODE.
 *
 * Supported: Debian 6.1 (DIO takes plain page references through
 * iov_iter_get_pages2()) and Debian 6.12 (DIO pins pages with FOLL_PIN
 * through iov_iter_extract_pages() and marks the bio BIO_PAGE_PINNED, v6.5+).
 */
#ifndef _DIOFORK_COMPAT_H
#define _DIOFORK_COMPAT_H

#include <linux/blk_types.h>
#include <linux/bio.h>
#include <linux/mm_types.h>
#include <linux/seqlock.h>
#include <linux/uaccess.h>
#include <linux/ftrace.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>

/* Did the kernel itself pin this bio's pages (FOLL_PIN)? */
static inline bool diofork_bio_kernel_pinned(struct bio *bio)
{
#ifdef DIOFORK_HAVE_BIO_PAGE_PINNED
	return bio_flagged(bio, BIO_PAGE_PINNED);
#else
	return false;
#endif
}

/* Are this bio's pages borrowed (io_uring registered buffer, kernel bvec)? */
static inline bool diofork_bio_no_page_ref(struct bio *bio)
{
#ifdef DIOFORK_HAVE_BIO_PAGE_PINNED
	return !bio_flagged(bio, BIO_PAGE_PINNED);
#else
	return bio_flagged(bio, BIO_NO_PAGE_REF);
#endif
}

/* mm->write_protect_seq: odd while fork() write-protects the parent's PTEs. */
static inline unsigned int diofork_mm_wp_seq(struct mm_struct *mm)
{
	return raw_read_seqcount(&mm->write_protect_seq);
}

static inline bool diofork_mm_wp_seq_changed(struct mm_struct *mm,
					     unsigned int seq)
{
	return (seq & 1) || read_seqcount_retry(&mm->write_protect_seq, seq);
}

/*
 * Does a writer hold @mm's mmap lock: a fork() copying it (dup_mmap() holds
 * it from before the first page table to the last), or mmap(), munmap(),
 * mprotect()?  Bit 0 of the rwsem's count, RWSEM_WRITER_LOCKED: public in
 * 6.12's <linux/rwsem.h>, the same bit private to 6.1's kernel/locking/rwsem.c.
 * Not a lock: a look, which the caller orders itself.  PREEMPT_RT's rwsem
 * has no such count: there the answer is yes, and every record of pin
 * pins at once.
 */
#ifdef CONFIG_PREEMPT_RT
static inline bool diofork_mm_write_locked(struct mm_struct *mm)
{
	return true;
}
#else
#ifndef RWSEM_WRITER_LOCKED
#define RWSEM_WRITER_LOCKED	BIT(0)
#endif
static inline bool diofork_mm_write_locked(struct mm_struct *mm)
{
	return atomic_long_read(&mm->mmap_lock.count) & RWSEM_WRITER_LOCKED;
}
#endif

/* Send an ftrace IPMODIFY handler's caller to @ip instead. */
static inline void diofork_ftrace_set_ip(struct ftrace_regs *fregs,
					 unsigned long ip)
{
#ifdef DIOFORK_HAVE_FTRACE_REGS_SET_IP
	ftrace_regs_set_instruction_pointer(fregs, ip);
#else
	ftrace_instruction_pointer_set(fregs, ip);
#endif
}

/*
 * Plain ftrace hooks that only read their function's arguments ask for no
 * saved registers: the full pt_regs save (ftrace_regs_caller) costs a
 * flags save and restore on every call.  x86-64 has had
 * DYNAMIC_FTRACE_WITH_ARGS since v5.11 (both supported kernels set it): the
 * arguments are there anyway.
 */
#ifndef CONFIG_DYNAMIC_FTRACE_WITH_ARGS
#error "diofork needs CONFIG_DYNAMIC_FTRACE_WITH_ARGS"
#endif

static inline unsigned long diofork_fregs_arg(struct ftrace_regs *fregs,
					      unsigned int n)
{
#ifdef ftrace_regs_get_argument
	return ftrace_regs_get_argument(fregs, n);
#else
	return regs_get_kernel_argument(&fregs->regs, n);
#endif
}

/*
 * Drop what do_wp_page() is entered with: the PTE lock, and since v6.5 the
 * RCU read lock of pte_offset_map().  (The __acquire()s only tell sparse
 * that the caller holds them.)
 */
static inline void diofork_pte_unmap_unlock(struct vm_fault *vmf)
{
	__acquire(vmf->ptl);
#ifdef DIOFORK_HAVE_PTE_MAP_RCU
	__acquire(RCU);
#endif
	pte_unmap_unlock(vmf->pte, vmf->ptl);
}

/* Drop the mmap lock (or, since v6.4, the VMA lock) a fault holds. */
static inline void diofork_release_fault_lock(struct vm_fault *vmf)
{
#ifdef DIOFORK_HAVE_RELEASE_FAULT_LOCK
	release_fault_lock(vmf);
#else
	mmap_read_unlock(vmf->vma->vm_mm);
#endif
}

/*
 * Pin @page, a page the caller holds a reference to, as GUP's FOLL_PIN
 * does (mm/gup.c, try_grab_page(), which modules cannot call): the folio's
 * count moves by the pin bias, or a large folio's pin count by one, and
 * the node counts the pin in nr_foll_pin_acquired.  From then on
 * folio_maybe_dma_pinned() says yes, and fork() copies the page for the
 * child.  v6.1 keeps a large folio's pin count behind folio_pincount_ptr(),
 * v6.2+ in the folio.  Interrupts are off: the node's count is updated
 * with the non-atomic per-CPU operation (a call of about 22 instructions
 * where the interrupt-safe one takes about 35: QEMU TCG plugin counts).
 */
static inline void diofork_page_pin(struct page *page)
{
	struct folio *folio = page_folio(page);

	lockdep_assert_irqs_disabled();
	if (folio_test_large(folio)) {
		folio_ref_inc(folio);
#ifdef DIOFORK_HAVE_FOLIO_PINCOUNT_PTR
		atomic_inc(folio_pincount_ptr(folio));
#else
		atomic_inc(&folio->_pincount);
#endif
	} else {
		folio_ref_add(folio, GUP_PIN_COUNTING_BIAS);
	}
	__node_stat_mod_folio(folio, NR_FOLL_PIN_ACQUIRED, 1);
}

/*
 * Drop a pin diofork_page_pin() took, as unpin_user_page() does
 * (mm/gup.c, gup_put_folio()), inline and with interrupts off.  The caller
 * still holds its reference, so the folio is not freed here (and if it
 * were, that is allowed with interrupts off, as in a bio's completion).
 */
static inline void diofork_page_unpin(struct page *page)
{
	struct folio *folio = page_folio(page);
	int refs = GUP_PIN_COUNTING_BIAS;

	lockdep_assert_irqs_disabled();
	__node_stat_mod_folio(folio, NR_FOLL_PIN_RELEASED, 1);
	if (folio_test_large(folio)) {
#ifdef DIOFORK_HAVE_FOLIO_PINCOUNT_PTR
		atomic_dec(folio_pincount_ptr(folio));
#else
		atomic_dec(&folio->_pincount);
#endif
		refs = 1;
	}
	folio_put_refs(folio, refs);
}

/* What fork() asks before it looks at pins (MMF_HAS_PINNED, v5.18+). */
static inline void diofork_mm_set_has_pinned(struct mm_struct *mm)
{
	if (!test_bit(MMF_HAS_PINNED, &mm->flags))
		set_bit(MMF_HAS_PINNED, &mm->flags);
}

/*
 * A kprobe on a symbol lands after its ENDBR64 on IBT kernels
 * (arch_adjust_kprobe_addr()).  Step back to the address that function
 * pointers hold.
 */
static inline unsigned long diofork_func_entry(unsigned long kprobe_addr)
{
#ifdef CONFIG_X86_KERNEL_IBT
	const u32 endbr64 = 0xfa1e0ff3;	/* f3 0f 1e fa */
	u32 insn;

	if (!get_kernel_nofault(insn, (u32 *)(kprobe_addr - sizeof(insn))) &&
	    insn == endbr64)
		return kprobe_addr - sizeof(insn);
#endif
	return kprobe_addr;
}

#endif /* _DIOFORK_COMPAT_H */
