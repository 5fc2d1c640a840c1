// SPDX-License-Identifier: GPL-2.0
/*
 * Wait-time figures for the policies that make a task wait (lock, drain):
 * a log2 latency histogram, total and maximum, per CPU on the write side.
 * "reset" works as for the counters: a base is recorded and subtracted.
 * Readers and resets sum under the base's mutex, so a reader never
 * subtracts a base newer than its sums, and two resets never mix.
 */
#include <linux/kernel.h>
#include <linux/log2.h>
#include <linux/percpu.h>
#include <linux/seq_file.h>
#include <linux/atomic.h>
#include <linux/mutex.h>
#include "diofork.h"

int diofork_wait_init(struct diofork_wait *w)
{
	mutex_init(&w->base_lock);
	w->pcpu = alloc_percpu(struct diofork_wait_pcpu);
	return w->pcpu ? 0 : -ENOMEM;
}

void diofork_wait_exit(struct diofork_wait *w)
{
	free_percpu(w->pcpu);
	w->pcpu = NULL;
}

void diofork_wait_record(struct diofork_wait *w, u64 ns)
{
	unsigned int b = ns ? min_t(unsigned int, ilog2(ns) + 1,
				    DIOFORK_HIST_BUCKETS - 1) : 0;
	struct diofork_wait_pcpu *p;
	s64 old;

	preempt_disable();
	p = this_cpu_ptr(w->pcpu);
	p->bucket[b]++;
	p->count++;
	p->ns_total += ns;
	preempt_enable();

	/* a wait is a slow path: one shared maximum is fine here */
	old = atomic64_read(&w->ns_max);
	while ((u64)old < ns &&
	       !atomic64_try_cmpxchg(&w->ns_max, &old, ns))
		;
}

static void diofork_wait_sum(struct diofork_wait *w, struct diofork_wait_pcpu *s)
{
	int cpu, b;

	memset(s, 0, sizeof(*s));
	for_each_possible_cpu(cpu) {
		const struct diofork_wait_pcpu *p = per_cpu_ptr(w->pcpu, cpu);

		for (b = 0; b < DIOFORK_HIST_BUCKETS; b++)
			s->bucket[b] += READ_ONCE(p->bucket[b]);
		s->count += READ_ONCE(p->count);
		s->ns_total += READ_ONCE(p->ns_total);
	}
}

/* Totals since the last reset; *max_ns too. */
void diofork_wait_read(struct diofork_wait *w, struct diofork_wait_pcpu *out,
		       u64 *max_ns)
{
	int b;

	mutex_lock(&w->base_lock);
	diofork_wait_sum(w, out);
	for (b = 0; b < DIOFORK_HIST_BUCKETS; b++)
		out->bucket[b] -= w->base.bucket[b];
	out->count -= w->base.count;
	out->ns_total -= w->base.ns_total;
	*max_ns = atomic64_read(&w->ns_max);
	mutex_unlock(&w->base_lock);
}

void diofork_wait_reset(struct diofork_wait *w)
{
	mutex_lock(&w->base_lock);
	diofork_wait_sum(w, &w->base);
	atomic64_set(&w->ns_max, 0);
	mutex_unlock(&w->base_lock);
}

/* "<prefix>_waits", "<prefix>_wait_ns_total", "<prefix>_wait_ns_max" */
void diofork_wait_show_stats(struct seq_file *m, const char *prefix,
			     struct diofork_wait *w)
{
	struct diofork_wait_pcpu s;
	u64 max_ns;

	diofork_wait_read(w, &s, &max_ns);
	seq_printf(m, "%s_waits %llu\n", prefix, s.count);
	seq_printf(m, "%s_wait_ns_total %llu\n", prefix, s.ns_total);
	seq_printf(m, "%s_wait_ns_max %llu\n", prefix, max_ns);
}

/* One line per non-empty bucket: "<lower_ns> <upper_ns> <count>". */
void diofork_wait_show_hist(struct seq_file *m, struct diofork_wait *w)
{
	struct diofork_wait_pcpu s;
	u64 max_ns;
	int b;

	diofork_wait_read(w, &s, &max_ns);
	seq_puts(m, "# lower_ns upper_ns count (log2 buckets)\n");
	for (b = 0; b < DIOFORK_HIST_BUCKETS; b++) {
		if (!s.bucket[b])
			continue;
		seq_printf(m, "%llu %llu %llu\n", b ? 1ULL << (b - 1) : 0,
			   (1ULL << b) - 1, s.bucket[b]);
	}
}
