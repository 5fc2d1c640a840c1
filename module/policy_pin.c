// SPDX-License-Identifier: GPL-2.0
/*
 * pin: DIO holds real pins (FOLL_PIN), so fork() copies the pages early.
 *
 * Mainline (v6.5) makes the block layer pin DIO pages.  fork() then sees a
 * possibly-pinned exclusive anonymous page (MMF_HAS_PINNED and
 * folio_maybe_dma_pinned()) and gives the child a copy at once, so the
 * parent keeps the page the device writes into.  On a kernel whose DIO takes
 * plain references (Debian 6.1) this mode adds the pin to the references
 * the DIO already holds, and drops it exactly once when the record is
 * released, on every path: completion, error, process exit (the DIO still
 * completes), mode switch and unload.  The pin is GUP's own (compat.h),
 * accounted in /proc/vmstat nr_foll_pin_*, taken and dropped inline with
 * interrupts off (pin.h).
 *
 * A pin only matters to a fork, so a record takes it when a fork of its mm
 * may share the page, not before: a process that does not fork while its
 * DIO is in flight pays for the record and room for the pins, and no pin.
 * The last point before fork shares a page is dup_mmap() holding the
 * parent's mmap lock for writing, before the first page table is copied;
 * there (hooks.c, uprobe_dup_mmap()) the fork pins every record of the mm.
 * A record made while a writer holds the lock pins itself.  The record is
 * hashed before it looks at the lock and the fork locks before it looks at
 * the table, with a full barrier on each side: one sees the other
 * (track.c, __diofork_track_bio()).  Until 2026-11-25 every record pinned
 * at once: about 130 instructions per 4 KiB read in the pin, the unpin and
 * the node's nr_foll_pin_* accounting, for reads no fork ever saw.
 *
 * A fork can also overlap the lookup and share a page before the record
 * is there.  GUP-fast has the same window and closes it with the mm's
 * write_protect_seq: it pins, then re-reads the count, and gives the pages
 * back if a fork ran.  The record does the same: write_protect_seq is read
 * before the lookup; a record that sees it moved pins its pages, a full
 * barrier, the count is read again (track.c).  A fork section that starts
 * after that re-read sees the pin; one that ran before it has either copied
 * the page (it saw the pin) or cleared its PageAnonExclusive (it shared
 * it).  So a raced record waits for a fork section still running, then
 * looks at the flags (track.c, diofork_io_settled()): if a page was shared,
 * the lookup is done again (getpages.c), and it finds the parent's page
 * write-protected and breaks COW first, as GUP would after backing off.
 *
 * Not pinned: DIO writes (the device reads the page, and COW never changes
 * the bytes of the page it leaves behind: nothing to protect, see track.c),
 * pages that are not anonymous (MAP_SHARED, shmem: fork does not copy
 * them), io_uring registered buffers (not user-backed iterators: never
 * tracked).  MADV_DONTFORK ranges are pinned like any other: fork skips
 * their VMA, so the pin costs only itself.
 *
 * On a kernel that pins DIO itself the mode is passive: it tracks and
 * counts, and pins nothing twice.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/mm.h>
#include "diofork.h"
#include "compat.h"

/*
 * From the record's release, whatever the mode is by then; interrupts are
 * off.  The bio still holds its references: the pages stay.
 */
void diofork_pin_release(struct diofork_io *io)
{
	unsigned int i;

	for (i = 0; i < io->nr_pinned; i++)
		diofork_page_unpin(io->pinned[i]);
	diofork_stat_add(DIOFORK_STAT_PIN_PAGES_UNPINNED, io->nr_pinned);
	/* the array is part of the record */
	io->pinned = NULL;
	io->nr_pinned = 0;
}

static int diofork_pin_enable(void)
{
	if (diofork_kernel_has_extract_pages)
		pr_info("pin: this kernel pins DIO pages itself: passive\n");
	return 0;
}

static const struct diofork_policy diofork_pin = {
	.mode		= DIOFORK_MODE_PIN,
	.hooks		= DIOFORK_HOOKS_TRACK | BIT(DIOFORK_HOOK_FORK) |
			  BIT(DIOFORK_HOOK_COW),
	.redo_shared	= true,
	.pins		= true,
	.enable		= diofork_pin_enable,
};

int diofork_policy_pin_init(void)
{
	return diofork_policy_register(&diofork_pin);
}
