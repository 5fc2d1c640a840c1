// SPDX-License-Identifier: GPL-2.0
/*
 * pin: DIO takes real pins (FOLL_PIN), so fork() copies the pages early.
 *
 * Mainline (v6.5) makes the block layer pin DIO pages.  fork() then sees a
 * possibly-pinned exclusive anonymous page (MMF_HAS_PINNED and
 * folio_maybe_dma_pinned()) and gives the child a copy at once, so the
 * parent keeps the page the device writes into.  On a kernel whose DIO takes
 * plain references (Debian 6.1) this mode makes the DIO's own page lookup
 * pin (gup.c takes the lookup over):
 *
 *  - the lookup calls the exported pin_user_pages_fast() instead of
 *    get_user_pages_fast() and adds the plain reference the DIO path
 *    expects (it will put_page() each page once, as before);
 *  - the pins are handed to the DIO's record and dropped exactly once when
 *    its pages are released, on every path: completion, error, process
 *    exit (the DIO still completes), mode switch and unload.
 *
 * Pinning inside the kernel's own GUP keeps the kernel's protocol against a
 * concurrent fork (write_protect_seq, then the mmap lock), and the pin is
 * accounted in /proc/vmstat nr_foll_pin_*.  Nothing is wrapped: the
 * original get_user_pages_fast() is never called from here.
 *
 * Not pinned: DIO writes (the device reads the page, and COW never changes
 * the bytes of the page it leaves behind: nothing to protect, see track.c),
 * pages that are not anonymous (MAP_SHARED, shmem: fork does not copy
 * them), io_uring registered buffers (not user-backed iterators: never
 * reach here).  MADV_DONTFORK ranges are pinned like any other: fork skips
 * their VMA, so the pin costs only itself.  Looking the VMA up to skip them
 * took the mmap lock and walked the maple tree on every DIO, about 1.3 us
 * of a 4 KiB read's 60 in fio under TCG, for a range that is safe anyway.
 *
 * On a kernel that pins DIO itself the mode is passive: it tracks and
 * counts, and pins nothing twice.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include "diofork.h"

static bool diofork_pin_passive;

static void diofork_pin_drop(struct page **pages, unsigned int nr)
{
	if (!nr)
		return;
	/* most DIOs are one page: skip the batch walk */
	if (nr == 1)
		unpin_user_page(pages[0]);
	else
		unpin_user_pages(pages, nr);
	diofork_stat_add(DIOFORK_STAT_PIN_PAGES_UNPINNED, nr);
}

/* ---- the GUP replacement: runs where get_user_pages_fast() would -------- */

static void diofork_pin_slot_free(struct diofork_gup_slot *s)
{
	if (s->pages != s->inline_pages)
		kfree(s->pages);
}

/* Pins so far go to the slot's own array until they outgrow it. */
static bool diofork_pin_slot_grow(struct diofork_gup_slot *s, unsigned int more)
{
	struct page **pages;
	unsigned int cap;

	if (!s->cap) {
		s->pages = s->inline_pages;
		s->cap = ARRAY_SIZE(s->inline_pages);
	}
	if (s->nr + more <= s->cap)
		return true;
	cap = max(s->nr + more, 2 * s->cap);
	pages = kmalloc_array(cap, sizeof(*pages), GFP_KERNEL);
	if (!pages)
		return false;
	memcpy(pages, s->pages, s->nr * sizeof(*pages));
	diofork_pin_slot_free(s);
	s->pages = pages;
	s->cap = cap;
	return true;
}

static int diofork_pin_lookup(struct diofork_gup_slot *s, unsigned long start,
			      int nr_pages, unsigned int gup_flags,
			      struct page **pages)
{
	int i, ret, kept = 0;

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
	return ret;

plain:
	/* not redirected again: the slot is in its lookup (gup.c) */
	return get_user_pages_fast(start, nr_pages, gup_flags, pages);
}

static const struct diofork_gup_ops diofork_pin_gup_ops = {
	.lookup		= diofork_pin_lookup,
};

/* ---- policy callbacks ----------------------------------------------------- */

static void diofork_pin_gup_enter(struct diofork_gup *g)
{
	if (diofork_pin_passive)
		return;
	g->slot = diofork_gup_slot_open(&diofork_pin_gup_ops);
	if (!g->slot)
		diofork_stat_inc(DIOFORK_STAT_PIN_FAILURES);
}

/*
 * bio_iov_iter_get_pages() returned: hand the pins to the record, which was
 * made with room for them, if there is one.
 */
static void diofork_pin_gup_exit(struct diofork_gup *g, struct diofork_io *io)
{
	struct diofork_gup_slot *s = g->slot;
	unsigned int i;

	if (!s)
		return;
	if (io && s->nr && io->room_pinned >= s->nr) {
		io->pinned = diofork_io_pin_room(io);
		/* a loop, not memcpy(): most DIOs hand over one pointer */
		for (i = 0; i < s->nr; i++)
			io->pinned[i] = s->pages[i];
		io->nr_pinned = s->nr;
	} else {
		/* no record (error, or out of memory): the IO is unprotected */
		if (s->nr)
			diofork_stat_inc(DIOFORK_STAT_PIN_FAILURES);
		diofork_pin_drop(s->pages, s->nr);
	}
	diofork_pin_slot_free(s);
	diofork_gup_slot_close(s);
	g->slot = NULL;
}

/* From the record's release, whatever the mode is by then. */
void diofork_pin_release(struct diofork_io *io)
{
	diofork_pin_drop(io->pinned, io->nr_pinned);
	/* the array is part of the record */
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
	diofork_pin_passive = diofork_kernel_has_extract_pages;
	if (diofork_pin_passive) {
		pr_info("pin: this kernel pins DIO pages itself: passive\n");
		return 0;
	}
	return diofork_gup_redirect_start();
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
	return diofork_policy_register(&diofork_pin);
}
