/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kernel version differences, and only those.  No other file tests
 * LINUX_VERSION_CODE.
 *
 * Supported: Debian 6.1 (DIO takes plain page references through
 * iov_iter_get_pages2()) and Debian 6.12 (DIO pins pages with FOLL_PIN
 * through iov_iter_extract_pages() and marks the bio BIO_PAGE_PINNED, v6.5+).
 */
#ifndef _DIOFORK_COMPAT_H
#define _DIOFORK_COMPAT_H

#include <linux/version.h>
#include <linux/blk_types.h>
#include <linux/bio.h>
#include <linux/mm_types.h>
#include <linux/seqlock.h>
#include <linux/uaccess.h>
#include <linux/ftrace.h>

/* Did the kernel itself pin this bio's pages (FOLL_PIN)? */
static inline bool diofork_bio_kernel_pinned(struct bio *bio)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
	return bio_flagged(bio, BIO_PAGE_PINNED);
#else
	return false;
#endif
}

/* Are this bio's pages borrowed (io_uring registered buffer, kernel bvec)? */
static inline bool diofork_bio_no_page_ref(struct bio *bio)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
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

/* Send an ftrace IPMODIFY handler's caller to @ip instead. */
static inline void diofork_ftrace_set_ip(struct ftrace_regs *fregs,
					 unsigned long ip)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
	ftrace_regs_set_instruction_pointer(fregs, ip);
#else
	ftrace_instruction_pointer_set(fregs, ip);
#endif
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
