/* SPDX-License-Identifier: GPL-2.0 */
/*
 * diofork: measure and mitigate the direct-IO vs fork() COW race.
 *
 * Shared declarations.  Each concern has its own file:
 *   main.c      module load/unload, the "mode" parameter
 *   mode.c      the policy registry and mode switching
 *   stats.c     per-CPU counters
 *   debugfs.c   /sys/kernel/debug/diofork/
 *   hooks.c     the hook table: kprobes on the kernel's DIO, fork, fault paths
 *   track.c     the in-flight table: which pages each DIO targets
 *   gup.c       the DIO's page lookup, taken over by drain
 *   policy_*.c  one file per mode
 *   compat.h    the only place that knows about kernel versions
 */
#ifndef _DIOFORK_H
#define _DIOFORK_H

#include <linux/types.h>
#include <linux/list.h>
#include <linux/rcupdate.h>
#include <linux/atomic.h>
#include <linux/percpu.h>
#include <linux/mutex.h>

struct bio;
struct mm_struct;
struct task_struct;
struct vm_fault;
struct dentry;
struct seq_file;

/* ---- modes and policies (mode.c) ---------------------------------------- */

enum diofork_mode {
	DIOFORK_MODE_OFF,
	DIOFORK_MODE_OBSERVE,
	DIOFORK_MODE_PIN,
	DIOFORK_MODE_LOCK,
	DIOFORK_MODE_DRAIN,
	DIOFORK_NR_MODES,
};

extern const char * const diofork_mode_names[DIOFORK_NR_MODES];

struct diofork_io;
struct diofork_gup_slot;

/* One bio_iov_iter_get_pages() call, from entry to return (getpages.c). */
struct diofork_gup {
	struct bio *bio;
	const struct diofork_policy *pol;	/* active at entry */
	struct diofork_gup_slot *slot;		/* gup.c context, or NULL */
	unsigned int seq;
	unsigned short vcnt;
};

/*
 * A mitigation policy.  The hooks call these with preemption disabled:
 * none of them may sleep.  Every callback is optional.
 */
struct diofork_policy {
	enum diofork_mode mode;
	/* hooks (enum diofork_hook_id bits) this policy needs */
	unsigned long hooks;
	/*
	 * A tracked read whose lookup a fork overlapped and shared a page of
	 * is looked up again (getpages.c): pin and lock, whose protection
	 * starts at the record.  With @pins the record pins its pages once a
	 * fork of its mm may share them (policy_pin.c).
	 */
	bool redo_shared;
	bool pins;
	int (*enable)(void);
	void (*disable)(void);
	/*
	 * the DIO's own task enters / leaves its page lookup; io may be NULL.
	 * gup_exit() is only called where gup_enter() is set.
	 */
	void (*gup_enter)(struct diofork_gup *g);
	void (*gup_exit)(struct diofork_gup *g, struct diofork_io *io);
	/*
	 * fork of a process with a private mm (not vfork, not a thread),
	 * at kernel_clone() entry.  May return a stand-in: a function with
	 * kernel_clone()'s signature that runs in its place.
	 */
	unsigned long (*fork)(struct mm_struct *mm, bool dio_inflight);
	/*
	 * Write fault on a write-protected PTE whose page has DIO in flight,
	 * of @owner (the faulting mm's own, if it has one there), at
	 * do_wp_page() entry, under the PTE lock.  May return a stand-in
	 * with do_wp_page()'s signature and duties (it drops the PTE lock).
	 */
	unsigned long (*cow_fault)(struct vm_fault *vmf,
				   const struct mm_struct *owner);
};

int diofork_policy_register(const struct diofork_policy *pol);

/* The active policy, NULL when off; only mode.c assigns it. */
extern const struct diofork_policy __rcu *diofork_active;

/*
 * Caller holds rcu_read_lock() or runs with preemption disabled.  Inline:
 * every hook asks, once per DIO.
 */
static inline const struct diofork_policy *diofork_policy_get(void)
{
	return rcu_dereference_check(diofork_active, rcu_read_lock_any_held());
}

enum diofork_mode diofork_mode_get(void);
int diofork_mode_set(enum diofork_mode mode);
int diofork_mode_parse(const char *buf, size_t len, enum diofork_mode *mode);
int diofork_mode_init(void);
int diofork_policy_observe_init(void);
int diofork_policy_pin_init(void);
int diofork_policy_lock_init(void);
void diofork_policy_lock_exit(void);
int diofork_policy_drain_init(void);
void diofork_policy_drain_exit(void);
bool diofork_drain_holds_off_dio(void);
struct diofork_wait_policy;
extern struct diofork_wait_policy diofork_lock, diofork_drain;
void diofork_pin_release(struct diofork_io *io);
void diofork_mode_exit(void);

/* ---- counters (stats.c) -------------------------------------------------- */

/* Keep this enum and diofork_stat_names[] in stats.c in the same order. */
enum diofork_stat {
	/* monotonic: "reset" zeroes these */
	DIOFORK_STAT_DIO_SUBMITTED_READ,
	DIOFORK_STAT_DIO_COMPLETED_READ,
	DIOFORK_STAT_DIO_PAGES_SUBMITTED,
	DIOFORK_STAT_DIO_PAGES_COMPLETED,
	DIOFORK_STAT_DIO_SKIPPED_BVEC,
	DIOFORK_STAT_DIO_SKIPPED_WRITE,
	DIOFORK_STAT_DIO_KERNEL_PINNED,
	DIOFORK_STAT_FORKS,
	DIOFORK_STAT_FORKS_WITH_DIO_INFLIGHT,
	DIOFORK_STAT_COW_ON_DIO_PAGE,
	DIOFORK_STAT_COW_ON_DIO_PAGE_CHILD,
	DIOFORK_STAT_TRACK_ALLOC_FAILURES,
	DIOFORK_STAT_TRACK_STALE,
	DIOFORK_STAT_TRACK_FORCED_RELEASE,
	DIOFORK_STAT_TRACK_FORK_RACED,
	DIOFORK_STAT_TRACK_FORK_SHARED,
	DIOFORK_STAT_LOOKUPS_REDONE,
	DIOFORK_STAT_LOOKUPS_NOT_REDONE,
	DIOFORK_STAT_PIN_PAGES_PINNED,
	DIOFORK_STAT_PIN_PAGES_UNPINNED,
	DIOFORK_STAT_PIN_FAILURES,
	DIOFORK_STAT_PIN_SKIPPED_SHARED,
	DIOFORK_STAT_LOCK_WAITS_SELF,
	DIOFORK_STAT_LOCK_TIMEOUTS,
	DIOFORK_STAT_LOCK_ABORTED,
	DIOFORK_STAT_DRAIN_FORKS_WAITED,
	DIOFORK_STAT_DRAIN_TIMEOUTS,
	DIOFORK_STAT_DRAIN_ABORTED,
	DIOFORK_STAT_DRAIN_ALLOC_FAILURES,
	DIOFORK_STAT_DRAIN_DIO_HELD_OFF,
	DIOFORK_NR_MONOTONIC,
	/* gauges: never reset, differences of the counters above (stats.c) */
	DIOFORK_STAT_DIO_INFLIGHT = DIOFORK_NR_MONOTONIC,
	DIOFORK_STAT_DIO_PAGES_INFLIGHT,
	DIOFORK_NR_STATS,
};

struct diofork_stats {
	long val[DIOFORK_NR_STATS];
};

DECLARE_PER_CPU(struct diofork_stats, diofork_pcpu_stats);

/* Inline: the DIO path counts several times per IO. */
static inline void diofork_stat_add(enum diofork_stat item, long delta)
{
	this_cpu_add(diofork_pcpu_stats.val[item], delta);
}

static inline void diofork_stat_inc(enum diofork_stat item)
{
	diofork_stat_add(item, 1);
}

long diofork_stat_read(enum diofork_stat item);
long diofork_stat_read_raw(enum diofork_stat item);
const char *diofork_stat_name(enum diofork_stat item);
void diofork_stats_reset(void);
int diofork_stats_init(void);

/* ---- wait figures for lock and drain (hist.c) --------------------------- */

#define DIOFORK_HIST_BUCKETS	40	/* log2(ns): up to ~550 s */

struct diofork_wait_pcpu {
	u64 bucket[DIOFORK_HIST_BUCKETS];
	u64 count;
	u64 ns_total;
};

struct diofork_wait {
	struct diofork_wait_pcpu __percpu *pcpu;
	struct mutex base_lock;		/* readers and resets of base */
	struct diofork_wait_pcpu base;	/* sums at the last reset */
	atomic64_t ns_max;
};

int diofork_wait_init(struct diofork_wait *w);
void diofork_wait_exit(struct diofork_wait *w);
void diofork_wait_record(struct diofork_wait *w, u64 ns);
void diofork_wait_read(struct diofork_wait *w, struct diofork_wait_pcpu *out,
		       u64 *max_ns);
void diofork_wait_reset(struct diofork_wait *w);
void diofork_wait_show_stats(struct seq_file *m, const char *prefix,
			     struct diofork_wait *w);
void diofork_wait_show_hist(struct seq_file *m, struct diofork_wait *w);

/* ---- the in-flight table (track.c) -------------------------------------- */

enum diofork_io_flags {
	DIOFORK_IO_KPINNED	= 1U << 0,	/* the kernel pinned the pages */
	DIOFORK_IO_FORK_RACED	= 1U << 1,	/* a fork overlapped our GUP */
	DIOFORK_IO_CACHED	= 1U << 2,	/* from io_cache.c's size class */
	DIOFORK_IO_FORK_SHARED	= 1U << 3,	/* ... and shared a page of ours */
};

/* One page a tracked DIO targets; hashed by pfn once a fork may share it. */
struct diofork_page_ref {
	struct hlist_node node;
	unsigned long pfn;
	struct diofork_io *io;
};

/*
 * One tracked bio (a read: device to memory), from page acquisition until
 * its pages are released.
 */
struct diofork_io {
	struct hlist_node bio_node;
	struct rcu_head rcu;		/* kvfree_rcu() of a big record */
	const struct bio *bio;		/* identity only */
	union {
		struct diofork_io *next_victim;	/* in diofork_unhash_bio() */
		struct diofork_io *next_free;	/* retired: io_cache.c's lists */
	};
	struct mm_struct *mm;		/* identity only: no reference held */
	struct task_struct *task;	/* submitter, identity only */
	struct page **pinned;		/* our pins (pin mode), or NULL */
	unsigned int nr_pinned;
	/* pointers after pages[] for pins not taken yet; 0 once taken */
	unsigned int room_pinned;
	unsigned short flags;		/* enum diofork_io_flags */
	/* pages[] hashed by pfn: once a fork of the mm may share them */
	bool indexed;
	unsigned int nr_pages;
	struct diofork_page_ref pages[];
};

int diofork_track_init(void);
void diofork_track_exit(void);
/* No mm->write_protect_seq sample: diofork_track_bio() checks no fork race. */
#define DIOFORK_WP_SEQ_NONE	ULONG_MAX

struct diofork_io *diofork_track_bio(const struct bio *bio,
				     unsigned int first_vec, bool kernel_pinned,
				     unsigned long wp_seq);
struct diofork_io *diofork_track_bio_pin(const struct bio *bio,
					 unsigned int first_vec,
					 bool kernel_pinned,
					 unsigned long wp_seq);
/* When a record pins its pages (policy_pin.c says why). */
enum diofork_pin_at {
	DIOFORK_PIN_NEVER,	/* observe, lock, drain */
	DIOFORK_PIN_AT_FORK,	/* pin: once a fork of its mm may share them */
	DIOFORK_PIN_AT_ONCE,	/* lock's lookups done again, from the fourth */
};

struct diofork_io *diofork_track_bio_as(const struct bio *bio,
					unsigned int first_vec,
					bool kernel_pinned, unsigned long wp_seq,
					enum diofork_pin_at pin_at,
					struct diofork_io *prealloc);
size_t diofork_track_size(const struct bio *bio, unsigned int first_vec,
			  bool kernel_pinned, enum diofork_pin_at pin_at);
void diofork_track_fork_mm(struct mm_struct *mm);

/* Why a record leaves the table (diofork_io_retire()). */
enum diofork_retire {
	DIOFORK_RETIRE_RELEASED,	/* the DIO released its pages */
	DIOFORK_RETIRE_FORCED,		/* mode switch, unload */
	DIOFORK_RETIRE_REDONE,		/* its lookup is done again */
};

/* Room for io->room_pinned page pointers, after the page references. */
static inline struct page **diofork_io_pin_room(struct diofork_io *io)
{
	return io->room_pinned ? (struct page **)&io->pages[io->nr_pages] :
				 NULL;
}

bool diofork_io_settled(const struct diofork_io *io, bool pinned);

/* ---- records' per-CPU cache (io_cache.c; fast paths: io_cache.h) ------- */

void diofork_io_cache_trim(void);
void diofork_io_cache_exit(void);
void diofork_track_release(const struct bio *bio);
void diofork_track_release_redo(const struct bio *bio);
void diofork_track_forget_all(void);
const struct mm_struct *diofork_track_pfn_owner(unsigned long pfn,
						const struct mm_struct *mm);
int diofork_track_wait_event(const struct mm_struct *mm, unsigned long pfn,
			     long timeout, const bool *stop);
void diofork_track_wake_all(void);
bool diofork_track_mm_busy(const struct mm_struct *mm);
bool diofork_track_page_task(unsigned long pfn, const struct mm_struct *mm,
			     const struct task_struct *task);
long diofork_track_wait_idle(long timeout);

/* ---- hooks (hooks.c) ----------------------------------------------------- */

enum diofork_hook_id {
	DIOFORK_HOOK_DIO_GET_PAGES,	/* bio_iov_iter_get_pages */
	DIOFORK_HOOK_DIO_RELEASE,	/* __bio_release_pages */
	DIOFORK_HOOK_DIO_LEGACY,	/* submit_bio, legacy fs/direct-io.c */
	DIOFORK_HOOK_FORK,		/* kernel_clone */
	DIOFORK_HOOK_COW,		/* do_wp_page */
	DIOFORK_HOOK_FORK_COPY,		/* uprobe_dup_mmap, in dup_mmap() */
	DIOFORK_NR_HOOKS,
};

/* what records need: made, released, indexed at fork (track.c) */
#define DIOFORK_HOOKS_TRACK	(BIT(DIOFORK_HOOK_DIO_GET_PAGES) |	\
				 BIT(DIOFORK_HOOK_DIO_RELEASE) |	\
				 BIT(DIOFORK_HOOK_DIO_LEGACY) |		\
				 BIT(DIOFORK_HOOK_FORK_COPY))

int diofork_hooks_init(void);
unsigned long diofork_symbol_addr(const char *name);
int diofork_hooks_install(unsigned long mask);
void diofork_hooks_remove_all(void);
unsigned long diofork_hooks_attached(void);
unsigned long diofork_hooks_missed(void);
void diofork_hooks_show(struct seq_file *m);

/* ---- the DIO's page acquisition, taken over (getpages.c) ---------------- */

struct ftrace_ops;
struct ftrace_regs;

void diofork_gp_ftrace(unsigned long ip, unsigned long parent_ip,
		       struct ftrace_ops *op, struct ftrace_regs *fregs);
void diofork_gp_standins_wait(void);
void diofork_gp_attached(unsigned long fentry);

/* ---- the DIO's page lookup, taken over (gup.c) --------------------------- */

struct page;

struct diofork_gup_ops {
	/* in place of get_user_pages_fast(), same contract; may sleep */
	int (*lookup)(struct diofork_gup_slot *s, unsigned long start,
		      int nr_pages, unsigned int gup_flags, struct page **pages);
};

/* An open lookup context; only its task uses it (see gup.c). */
struct diofork_gup_slot {
	struct task_struct *task;
	const struct diofork_gup_ops *ops;
	bool in_lookup;			/* in ops->lookup(): not redirected */
	atomic_t *gated;		/* drain: the lookup count we are in */
};

void diofork_gup_init(void);
bool diofork_gup_redirect_possible(void);
int diofork_gup_redirect_start(void);
struct diofork_gup_slot *diofork_gup_slot_open(const struct diofork_gup_ops *ops);
void diofork_gup_slot_close(struct diofork_gup_slot *s);
void diofork_gup_unload(void);

/* ---- what this kernel does itself (kernel.c) ----------------------------- */

extern bool diofork_kernel_has_extract_pages;
void diofork_kernel_report(struct seq_file *m);

/* ---- debugfs (debugfs.c) ------------------------------------------------- */

int diofork_debugfs_init(void);
void diofork_debugfs_exit(void);

#endif /* _DIOFORK_H */
