/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pin's page work (policy_pin.c says what the mode does): taking the pins
 * of a record, inline where track.c makes records, with interrupts off.
 * Out of line that cost 20 more instructions per pinned 4 KiB read, in the
 * call and saved registers (QEMU TCG plugin count, 2026-11-24).  Dropping
 * them stays out of line (policy_pin.c): inline, it cost observe's release
 * 4 instructions for pin's 8.
 */
#ifndef _DIOFORK_PIN_H
#define _DIOFORK_PIN_H

#include <linux/compiler.h>
#include <linux/lockdep.h>
#include <linux/mm.h>
#include "diofork.h"
#include "compat.h"

/*
 * Pin the anonymous pages of @io, once: from the record itself before it
 * re-reads write_protect_seq, or from a fork of its mm (track.c,
 * diofork_track_fork_mm()), with interrupts off, and once the record is
 * hashed under its bio bucket's lock.  The bio holds its references until
 * the record is released: the pages stay.
 */
static __always_inline void diofork_pin_take(struct diofork_io *io)
{
	struct page **pinned = diofork_io_pin_room(io);
	struct page *page;
	unsigned int i, n = 0;

	lockdep_assert_irqs_disabled();
	WRITE_ONCE(io->room_pinned, 0);	/* nothing left to pin later */
	for (i = 0; i < io->nr_pages; i++) {
		page = pfn_to_page(io->pages[i].pfn);
		if (!PageAnon(page)) {
			/* shared memory: fork does not copy it, keep no pin */
			diofork_stat_inc(DIOFORK_STAT_PIN_SKIPPED_SHARED);
			continue;
		}
		diofork_page_pin(page);
		pinned[n++] = page;
	}
	if (!n)
		return;
	diofork_mm_set_has_pinned(io->mm);
	io->pinned = pinned;
	io->nr_pinned = n;
	diofork_stat_add(DIOFORK_STAT_PIN_PAGES_PINNED, n);
}

#endif /* _DIOFORK_PIN_H */
