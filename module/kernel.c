// SPDX-License-Identifier: GPL-2.0
/*
 * Does this kernel already pin direct-IO pages (FOLL_PIN), so that fork()
 * copies them early and the race cannot happen?  Mainline does since v6.5;
 * Debian 6.1 does not.  Decide from evidence, not from a version table:
 *
 *   - the symbol: iov_iter_extract_pages() is how the block layer pins;
 *   - the bios: every tracked DIO bio says whether the kernel pinned it
 *     (BIO_PAGE_PINNED).  Once DIO has been seen, this evidence wins.
 */
#include <linux/seq_file.h>
#include <linux/utsname.h>
#include "diofork.h"

bool diofork_kernel_has_extract_pages;

void diofork_kernel_report(struct seq_file *m)
{
	long pinned = diofork_stat_read_raw(DIOFORK_STAT_DIO_KERNEL_PINNED);
	long total = diofork_stat_read_raw(DIOFORK_STAT_DIO_SUBMITTED_READ);
	const char *verdict;

	if (!total)
		verdict = diofork_kernel_has_extract_pages ? "yes" : "no";
	else if (pinned == total)
		verdict = "yes";
	else if (!pinned)
		verdict = "no";
	else
		verdict = "partial";

	seq_printf(m, "release: %s\n", init_utsname()->release);
	seq_printf(m, "dio_pins: %s\n", verdict);
	seq_printf(m, "evidence_symbol: iov_iter_extract_pages %s\n",
		   diofork_kernel_has_extract_pages ? "present" : "absent");
	seq_printf(m, "evidence_bios: %ld of %ld tracked DIO bios pinned by the kernel%s\n",
		   pinned, total, total ? "" : " (no DIO seen yet)");
	seq_printf(m, "pin: %s\n", !diofork_kernel_has_extract_pages ?
		   "pins DIO pages (this kernel takes plain references)" :
		   "passive (this kernel pins DIO pages itself)");
	seq_printf(m, "drain: %s\n", !diofork_kernel_has_extract_pages ?
		   "fork waits for the DIO of its process" :
		   "passive (fork copies pinned DIO pages itself)");
	seq_printf(m, "drain_holds_off_dio: %s\n", diofork_drain_holds_off_dio() ?
		   "yes" : "no (not needed: fork copies pinned DIO pages itself)");
	seq_printf(m, "mode: %s\n", diofork_mode_names[diofork_mode_get()]);
}
