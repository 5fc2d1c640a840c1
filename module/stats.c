// SPDX-License-Identifier: GPL-2.0
/*
 * Per-CPU counters.  The hot paths (DIO submit/complete, fork, fault) only
 * ever touch their own CPU's slot.  Readers sum across CPUs.
 *
 * "reset" does not write other CPUs' slots (that would race with their
 * increments): it records the current sums as a base and later reads
 * subtract it.  Gauges have no base, so they stay truthful across resets.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/percpu.h>
#include <linux/spinlock.h>
#include <linux/cpumask.h>
#include <linux/bug.h>
#include "diofork.h"

static const char * const diofork_stat_names[DIOFORK_NR_STATS] = {
	[DIOFORK_STAT_DIO_SUBMITTED_READ]	= "dio_submitted_read",
	[DIOFORK_STAT_DIO_COMPLETED_READ]	= "dio_completed_read",
	[DIOFORK_STAT_DIO_PAGES_SUBMITTED]	= "dio_pages_submitted",
	[DIOFORK_STAT_DIO_PAGES_COMPLETED]	= "dio_pages_completed",
	[DIOFORK_STAT_DIO_SKIPPED_BVEC]		= "dio_skipped_bvec",
	[DIOFORK_STAT_DIO_SKIPPED_WRITE]	= "dio_skipped_write",
	[DIOFORK_STAT_DIO_KERNEL_PINNED]	= "dio_kernel_pinned",
	[DIOFORK_STAT_FORKS]			= "forks",
	[DIOFORK_STAT_FORKS_WITH_DIO_INFLIGHT]	= "forks_with_dio_inflight",
	[DIOFORK_STAT_COW_ON_DIO_PAGE]		= "cow_on_dio_page",
	[DIOFORK_STAT_COW_ON_DIO_PAGE_CHILD]	= "cow_on_dio_page_child",
	[DIOFORK_STAT_TRACK_ALLOC_FAILURES]	= "track_alloc_failures",
	[DIOFORK_STAT_TRACK_STALE]		= "track_stale",
	[DIOFORK_STAT_TRACK_FORCED_RELEASE]	= "track_forced_release",
	[DIOFORK_STAT_TRACK_FORK_RACED]		= "track_fork_raced",
	[DIOFORK_STAT_TRACK_FORK_SHARED]	= "track_fork_shared",
	[DIOFORK_STAT_LOOKUPS_REDONE]		= "lookups_redone",
	[DIOFORK_STAT_LOOKUPS_NOT_REDONE]	= "lookups_not_redone",
	[DIOFORK_STAT_PIN_PAGES_PINNED]		= "pin_pages_pinned",
	[DIOFORK_STAT_PIN_PAGES_UNPINNED]	= "pin_pages_unpinned",
	[DIOFORK_STAT_PIN_FAILURES]		= "pin_failures",
	[DIOFORK_STAT_PIN_SKIPPED_SHARED]	= "pin_skipped_shared",
	[DIOFORK_STAT_LOCK_WAITS_SELF]		= "lock_waits_self",
	[DIOFORK_STAT_LOCK_TIMEOUTS]		= "lock_timeouts",
	[DIOFORK_STAT_LOCK_ABORTED]		= "lock_aborted",
	[DIOFORK_STAT_DRAIN_FORKS_WAITED]	= "drain_forks_waited",
	[DIOFORK_STAT_DRAIN_TIMEOUTS]		= "drain_timeouts",
	[DIOFORK_STAT_DRAIN_ABORTED]		= "drain_aborted",
	[DIOFORK_STAT_DRAIN_ALLOC_FAILURES]	= "drain_alloc_failures",
	[DIOFORK_STAT_DRAIN_DIO_HELD_OFF]	= "drain_dio_held_off",
	[DIOFORK_STAT_DIO_INFLIGHT]		= "dio_inflight",
	[DIOFORK_STAT_DIO_PAGES_INFLIGHT]	= "dio_pages_inflight",
};

DEFINE_PER_CPU(struct diofork_stats, diofork_pcpu_stats);
static long diofork_stat_base[DIOFORK_NR_MONOTONIC];
static DEFINE_SPINLOCK(diofork_stat_base_lock);

static long diofork_stat_sum(enum diofork_stat item)
{
	long sum = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		sum += per_cpu(diofork_pcpu_stats.val[item], cpu);
	return sum;
}

/*
 * The gauges are what was recorded less what was retired, since load: a
 * record and its release each count once, and the hot paths update no
 * counter of their own for them.  What went is read first, so that a
 * gauge read while DIO runs is not below what was in flight when its sum
 * began (a sum across CPUs is never a snapshot).
 */
static long diofork_gauge(enum diofork_stat item)
{
	long gone;

	if (item == DIOFORK_STAT_DIO_INFLIGHT) {
		gone = diofork_stat_sum(DIOFORK_STAT_DIO_COMPLETED_READ) +
		       diofork_stat_sum(DIOFORK_STAT_TRACK_FORCED_RELEASE);
		return diofork_stat_sum(DIOFORK_STAT_DIO_SUBMITTED_READ) - gone;
	}
	gone = diofork_stat_sum(DIOFORK_STAT_DIO_PAGES_COMPLETED);
	return diofork_stat_sum(DIOFORK_STAT_DIO_PAGES_SUBMITTED) - gone;
}

/* The value since load, ignoring "reset": for evidence that must not fade. */
long diofork_stat_read_raw(enum diofork_stat item)
{
	if (item >= DIOFORK_NR_MONOTONIC)
		return diofork_gauge(item);
	return diofork_stat_sum(item);
}

long diofork_stat_read(enum diofork_stat item)
{
	long val;

	if (item >= DIOFORK_NR_MONOTONIC)
		return diofork_gauge(item);
	/* summed under the lock: never less than a base a reset just took */
	spin_lock(&diofork_stat_base_lock);
	val = diofork_stat_sum(item) - diofork_stat_base[item];
	spin_unlock(&diofork_stat_base_lock);
	return val;
}

const char *diofork_stat_name(enum diofork_stat item)
{
	return diofork_stat_names[item];
}

void diofork_stats_reset(void)
{
	int i;

	spin_lock(&diofork_stat_base_lock);
	for (i = 0; i < DIOFORK_NR_MONOTONIC; i++)
		diofork_stat_base[i] = diofork_stat_sum(i);
	spin_unlock(&diofork_stat_base_lock);
}

int diofork_stats_init(void)
{
	int i;

	for (i = 0; i < DIOFORK_NR_STATS; i++)
		if (WARN_ON_ONCE(!diofork_stat_names[i]))
			return -EINVAL;
	return 0;
}
