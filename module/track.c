// SPDX-License-Identifier: GPL-2.0
/*
 * The in-flight table: every tracked direct-IO bio and the pages it targets,
 * from the moment the DIO path takes its page references until it releases
 * them.
 *
 * Only reads are tracked (device to memory).  A DIO write reads its pages;
 * a COW fault never changes the bytes of the page it leaves behind (6.1
 * copies any anonymous page with an extra reference, in parent and child
 * alike), so the device reads what was there at submit.  The hooks count
 * write bios (dio_skipped_write) and make no record for them: a write
 * costs the hooks' entry and nothing else, in every mode.
 *
 * Two hash tables, both with one lock per bucket (never a global lock):
 *   - by bio pointer, so the release hook finds the record, and a fork
 *     the records of its mm;
 *   - by pfn, so the COW-fault path asks "is a DIO targeting this page?"
 *     with one bucket walk.
 * Every walk holds its bucket's lock, so a retired record goes straight
 * back to its CPU's cache, with no grace period to wait out (io_cache.c).
 * A look that only asks "anything here?" reads the list head without the
 * lock, and no record: an empty bucket, the common case, costs two loads.
 * A third, lock-free array counts records per hashed mm, so that a fork of a
 * process without DIO in flight costs one atomic read.
 *
 * A record goes into the pfn table only once a fork may share its pages
 * (diofork_io_forked()): a COW fault on a page a DIO targets needs a fork
 * between the DIO's page lookup and the fault, since the lookup (FOLL_WRITE)
 * left the page exclusive to the process.  A fork indexes every record of
 * its mm before it copies a page table (diofork_track_fork_mm()), and a
 * record that a fork overlapped indexes itself, as pin's pins are taken
 * (__diofork_track_bio()).  Most reads never see a fork: they are hashed
 * once, by bio: about 32 instructions a read fewer than with both tables,
 * net of the look at the mmap lock (QEMU TCG plugin count, 2026-11-25).
 *
 * Small records come from a per-CPU cache (io_cache.c) and rarely reach
 * the allocator; when they do, with GFP_ATOMIC (the record is made with
 * interrupts off).  A record too big for the cache (more than
 * DIOFORK_CACHE_PAGES pages: 32 to 40 bytes a page, 10 KiB for a 1 MiB
 * bio, more for a bio of huge pages) is allocated by the page-acquisition
 * stand-in with GFP_KERNEL before it records, where the DIO's task may
 * sleep: an atomic allocation of that order fails once memory is
 * fragmented, and those are the DIOs of programs with big buffers.  Only
 * legacy fs/direct-io.c bios (submit_bio, atomic) are recorded with
 * GFP_ATOMIC whatever their size.  If an allocation fails the DIO is
 * simply not tracked: it proceeds as if diofork were off, and
 * track_alloc_failures says so.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bio.h>
#include <linux/bitops.h>
#include <linux/hash.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/sched.h>
#include <linux/spinlock.h>
#include <linux/vmalloc.h>
#include <linux/wait.h>
#include <linux/overflow.h>
#include "diofork.h"
#include "compat.h"
#include "io_cache.h"
#include "pin.h"

#define DIOFORK_BIO_HASH_BITS	10
#define DIOFORK_PFN_HASH_BITS	14
#define DIOFORK_MM_HASH_BITS	10

/*
 * A bucket's lock is a bit in its own word, as hlist_bl's is: taking and
 * dropping it is inline, where spin_lock() is a call, and a tracked read
 * takes four bucket locks (under TCG every call and return is a lookup of
 * translated code).  Writers hold it with interrupts off, for one list
 * update.  Not hlist_bl itself: its lock, bit_spin_lock(), counts
 * preemption too, for nothing with interrupts off.
 */
struct diofork_bucket {
	unsigned long lock;		/* bit 0: writers of this bucket's list */
	struct hlist_head head;
};

static __always_inline void diofork_bucket_lock(struct diofork_bucket *b)
	__acquires(&b->lock)
{
	/*
	 * bit_spin_lock() without its preempt_disable(): with interrupts off
	 * nothing preempts the holder, and a read's four locks skip twelve
	 * instructions of preempt count.
	 */
	lockdep_assert_irqs_disabled();
	while (unlikely(test_and_set_bit_lock(0, &b->lock))) {
		do {
			cpu_relax();
		} while (test_bit(0, &b->lock));
	}
	__acquire(&b->lock);
}

static __always_inline void diofork_bucket_unlock(struct diofork_bucket *b)
	__releases(&b->lock)
{
	__clear_bit_unlock(0, &b->lock);	/* only the lock bit in the word */
	__release(&b->lock);
}

static struct diofork_bucket *diofork_bio_hash;
static struct diofork_bucket *diofork_pfn_hash;
static atomic_t diofork_mm_ios[1 << DIOFORK_MM_HASH_BITS];

/*
 * Tasks waiting for a page or an mm to have no DIO in flight (lock, drain)
 * sleep on a hashed queue, like the kernel's page wait table.  Release only
 * looks at the queues when someone waits.
 */
#define DIOFORK_WAITQ_BITS	8
static wait_queue_head_t diofork_waitq[1 << DIOFORK_WAITQ_BITS];
static atomic_t diofork_nr_waiters;

static wait_queue_head_t *diofork_waitq_for(unsigned long key)
{
	return &diofork_waitq[hash_long(key, DIOFORK_WAITQ_BITS)];
}

static struct diofork_bucket *diofork_bio_bucket(const struct bio *bio)
{
	return &diofork_bio_hash[hash_ptr(bio, DIOFORK_BIO_HASH_BITS)];
}

static struct diofork_bucket *diofork_pfn_bucket(unsigned long pfn)
{
	return &diofork_pfn_hash[hash_long(pfn, DIOFORK_PFN_HASH_BITS)];
}

static atomic_t *diofork_mm_count(const struct mm_struct *mm)
{
	return &diofork_mm_ios[hash_ptr(mm, DIOFORK_MM_HASH_BITS)];
}

static struct diofork_bucket *diofork_buckets_alloc(unsigned int bits)
{
	struct diofork_bucket *b;
	unsigned int i;

	b = vmalloc(array_size(1U << bits, sizeof(*b)));
	if (!b)
		return NULL;
	for (i = 0; i < (1U << bits); i++) {
		b[i].lock = 0;
		INIT_HLIST_HEAD(&b[i].head);
	}
	return b;
}

/* Pages covered by @bv; below, the first of them. */
static unsigned int diofork_bvec_nr_pages(const struct bio_vec *bv)
{
	return (offset_in_page(bv->bv_offset) + bv->bv_len + PAGE_SIZE - 1) >>
	       PAGE_SHIFT;
}

static unsigned long diofork_bvec_pfn(const struct bio_vec *bv)
{
	return page_to_pfn(bv->bv_page) + (bv->bv_offset >> PAGE_SHIFT);
}

/* Pages covered by the bvecs [first, bi_vcnt) of @bio. */
static unsigned int diofork_bio_nr_pages(const struct bio *bio,
					 unsigned int first)
{
	const struct bio_vec *bv = &bio->bi_io_vec[first];
	const struct bio_vec *end = &bio->bi_io_vec[bio->bi_vcnt];
	unsigned int nr = 0;

	for (; bv < end; bv++)
		nr += diofork_bvec_nr_pages(bv);
	return nr;
}

/* The pfn of every page of bvecs [first, bi_vcnt) of @bio, into @io. */
static void diofork_io_fill_pages(struct diofork_io *io, const struct bio *bio,
				  unsigned int first)
{
	const struct bio_vec *bv = &bio->bi_io_vec[first];
	const struct bio_vec *end = &bio->bi_io_vec[bio->bi_vcnt];
	struct diofork_page_ref *ref = io->pages;
	unsigned long pfn;
	unsigned int n;

	for (; bv < end; bv++) {
		pfn = diofork_bvec_pfn(bv);
		for (n = diofork_bvec_nr_pages(bv); n; n--, pfn++, ref++)
			ref->pfn = pfn;
	}
}

/* The same for @io's @nr pages, all of them in @bv: most often one. */
static __always_inline void diofork_io_fill_bvec(struct diofork_io *io,
						 const struct bio_vec *bv,
						 unsigned int nr)
{
	unsigned long pfn = diofork_bvec_pfn(bv);
	unsigned int i;

	io->pages[0].pfn = pfn;
	for (i = 1; i < nr; i++)
		io->pages[i].pfn = pfn + i;
}

/*
 * A fork of @io's mm may share its pages: make the record findable by pfn,
 * and take its pins if it waits for a fork to pin (pin.h), once each.
 * Under the record's bio bucket lock, interrupts off: the record itself and
 * a fork's walk may both get here, and the release unhashes the record
 * under that lock before it looks at what we did.  Each page reference is
 * complete before it is published.
 */
static void diofork_io_forked(struct diofork_io *io)
{
	struct diofork_page_ref *ref;
	struct diofork_bucket *b;
	unsigned int i;

	lockdep_assert_irqs_disabled();
	if (!io->indexed) {
		for (i = 0; i < io->nr_pages; i++) {
			ref = &io->pages[i];
			ref->io = io;
			b = diofork_pfn_bucket(ref->pfn);
			diofork_bucket_lock(b);
			hlist_add_head(&ref->node, &b->head);
			diofork_bucket_unlock(b);
		}
		io->indexed = true;
	}
	if (io->room_pinned)
		diofork_pin_take(io);
}

/*
 * Unhash one record that is already off its bio bucket, and free it.
 * Interrupts are off: the caller makes one such region for every record of
 * a bio (each enable is an exit from translated code under TCG).
 */
static void diofork_io_retire(struct diofork_io *io, enum diofork_retire why)
{
	struct diofork_bucket *b;
	unsigned int i;

	lockdep_assert_irqs_disabled();
	/* off its bio bucket: nobody indexes it any more */
	if (io->indexed) {
		for (i = 0; i < io->nr_pages; i++) {
			b = diofork_pfn_bucket(io->pages[i].pfn);
			diofork_bucket_lock(b);
			hlist_del(&io->pages[i].node);
			diofork_bucket_unlock(b);
		}
	}

	if (io->pinned)
		diofork_pin_release(io);

	/* the gauges are these counts' differences (stats.c) */
	if (likely(why == DIOFORK_RETIRE_RELEASED)) {
		diofork_stat_inc(DIOFORK_STAT_DIO_COMPLETED_READ);
		diofork_stat_add(DIOFORK_STAT_DIO_PAGES_COMPLETED, io->nr_pages);
	} else if (why == DIOFORK_RETIRE_FORCED) {
		diofork_stat_inc(DIOFORK_STAT_TRACK_FORCED_RELEASE);
		diofork_stat_add(DIOFORK_STAT_DIO_PAGES_COMPLETED, io->nr_pages);
	} else {
		/* a lookup done again: the read is counted once, at its record */
		diofork_stat_add(DIOFORK_STAT_DIO_SUBMITTED_READ, -1);
		diofork_stat_add(DIOFORK_STAT_DIO_PAGES_SUBMITTED,
				 -(long)io->nr_pages);
	}
	atomic_dec(diofork_mm_count(io->mm));

	/*
	 * Unhashed, then a full barrier (the decrement's, on x86), then the
	 * look: pairs with the barrier in diofork_track_wait_event().
	 */
	smp_mb__after_atomic();
	if (atomic_read(&diofork_nr_waiters)) {
		for (i = 0; i < io->nr_pages; i++)
			wake_up_all(diofork_waitq_for(io->pages[i].pfn));
		wake_up_all(diofork_waitq_for((unsigned long)io->mm));
	}

	diofork_io_free(io);
}

/*
 * Remove every record of @bio from its bucket and retire it.  Called at
 * release, and at submit when a bio address comes back with records still
 * attached (its previous owner freed it through a path we do not hook: the
 * records are stale).
 */
static __always_inline unsigned int
diofork_unhash_bio(const struct bio *bio, struct diofork_bucket *b,
		   enum diofork_retire why)
{
	struct diofork_io *io, *victims = NULL;
	struct hlist_node *tmp;
	unsigned long flags;
	unsigned int n = 0;

	local_irq_save(flags);
	diofork_bucket_lock(b);
	hlist_for_each_entry_safe(io, tmp, &b->head, bio_node) {
		if (io->bio != bio)
			continue;
		hlist_del(&io->bio_node);
		io->next_victim = victims;
		victims = io;
		n++;
	}
	diofork_bucket_unlock(b);

	while (victims) {
		io = victims;
		victims = io->next_victim;
		diofork_io_retire(io, why);
	}
	local_irq_restore(flags);
	return n;
}

/*
 * @bio's bucket if it holds any record, else NULL: a look at the list
 * head, so that the release of an untracked bio (a write, say) and a
 * record with no stale one to drop take no lock.  Whoever calls this owns
 * the bio: a record of it was hashed before the bio was handed on, and
 * nothing adds or releases its records meanwhile.
 */
static struct diofork_bucket *diofork_bio_hashed(const struct bio *bio)
{
	struct diofork_bucket *b = diofork_bio_bucket(bio);

	return hlist_empty(&b->head) ? NULL : b;
}

/*
 * The record was hashed before the bio was submitted: no lock to miss it.
 * A write bio has no record of its own: one found under it belongs to a read
 * that reached the allocator through a path we do not hook (stale).
 */
void notrace diofork_track_release(const struct bio *bio)
{
	struct diofork_bucket *b = diofork_bio_hashed(bio);

	if (!b)
		return;
	/* counted as submit counts a stale record: retired, and stale */
	if (diofork_unhash_bio(bio, b, DIOFORK_RETIRE_RELEASED) &&
	    op_is_write(bio_op(bio)))
		diofork_stat_inc(DIOFORK_STAT_TRACK_STALE);
}

/*
 * The records of @bio, whose pages the stand-in gives back to look them up
 * again (getpages.c): retired, and not counted as reads of their own.
 */
void diofork_track_release_redo(const struct bio *bio)
{
	struct diofork_bucket *b = diofork_bio_hashed(bio);

	if (b)
		diofork_unhash_bio(bio, b, DIOFORK_RETIRE_REDONE);
}

/*
 * The mm of a DIO in flight on @pfn: @mm if @mm has one there, else that
 * of another's, else NULL; with @task, only a DIO of @mm that @task
 * submitted counts.  An identity only: the record may be gone once the
 * bucket lock is.  An empty bucket, the common case, is not locked.
 */
static const struct mm_struct *
diofork_pfn_find(unsigned long pfn, const struct mm_struct *mm,
		 const struct task_struct *task)
{
	struct diofork_bucket *b = diofork_pfn_bucket(pfn);
	const struct mm_struct *owner = NULL;
	struct diofork_page_ref *ref;
	unsigned long flags;

	if (hlist_empty(&b->head))
		return NULL;
	/* the release unindexes records from IRQ context */
	local_irq_save(flags);
	diofork_bucket_lock(b);
	hlist_for_each_entry(ref, &b->head, node) {
		if (ref->pfn != pfn)
			continue;
		if (task && (ref->io->mm != mm || ref->io->task != task))
			continue;
		owner = ref->io->mm;
		if (owner == mm)
			break;
	}
	diofork_bucket_unlock(b);
	local_irq_restore(flags);
	return owner;
}

const struct mm_struct *diofork_track_pfn_owner(unsigned long pfn,
						const struct mm_struct *mm)
{
	return diofork_pfn_find(pfn, mm, NULL);
}

/* Does @task have a DIO of @mm in flight on @pfn? */
bool diofork_track_page_task(unsigned long pfn, const struct mm_struct *mm,
			     const struct task_struct *task)
{
	return diofork_pfn_find(pfn, mm, task) == mm;
}

static bool diofork_track_busy(const struct mm_struct *mm, unsigned long pfn)
{
	if (pfn == ULONG_MAX)
		return diofork_track_mm_busy(mm);
	return diofork_track_pfn_owner(pfn, mm) == mm;
}

/*
 * Sleep until @mm has no DIO in flight on @pfn (or, with pfn == ULONG_MAX,
 * none at all), *@stop is set, @timeout jiffies pass or a fatal signal
 * arrives.  Returns 0, -ETIMEDOUT, -EINTR or -ECANCELED (*stop).
 */
int diofork_track_wait_event(const struct mm_struct *mm, unsigned long pfn,
			     long timeout, const bool *stop)
{
	wait_queue_head_t *wq = diofork_waitq_for(pfn == ULONG_MAX ?
						  (unsigned long)mm : pfn);
	long ret;

	atomic_inc(&diofork_nr_waiters);
	/* count us before testing, pairs with the barrier in retire */
	smp_mb__after_atomic();
	ret = wait_event_killable_timeout(*wq, READ_ONCE(*stop) ||
					  !diofork_track_busy(mm, pfn),
					  timeout);
	atomic_dec(&diofork_nr_waiters);
	if (ret < 0)
		return -EINTR;
	if (READ_ONCE(*stop))
		return -ECANCELED;
	return ret ? 0 : -ETIMEDOUT;
}

/* Wake every waiter, to look at its stop flag. */
void diofork_track_wake_all(void)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(diofork_waitq); i++)
		wake_up_all(&diofork_waitq[i]);
}

/* Does @mm have a tracked DIO in flight?  Exact, and cheap when it has not. */
bool diofork_track_mm_busy(const struct mm_struct *mm)
{
	struct diofork_bucket *b;
	struct diofork_io *io;
	unsigned long flags;
	unsigned int i;
	bool busy = false;

	if (!atomic_read(diofork_mm_count(mm)))
		return false;
	for (i = 0; i < (1U << DIOFORK_BIO_HASH_BITS) && !busy; i++) {
		b = &diofork_bio_hash[i];
		if (hlist_empty(&b->head))
			continue;
		local_irq_save(flags);
		diofork_bucket_lock(b);
		hlist_for_each_entry(io, &b->head, bio_node) {
			if (io->mm == mm) {
				busy = true;
				break;
			}
		}
		diofork_bucket_unlock(b);
		local_irq_restore(flags);
	}
	return busy;
}

/*
 * Wait until every tracked DIO has released its pages, for at most @timeout
 * jiffies.  Returns the number still in flight.  Only once nothing adds
 * records any more (unload): then the per-CPU gauge can only fall, and a
 * sum read while it falls is never below the truth.  Polled, so that the
 * DIO path shares no counter between CPUs.
 */
long diofork_track_wait_idle(long timeout)
{
	unsigned long end = jiffies + timeout;
	long left;

	/*
	 * Not cut short by a signal: what is left is forgotten, and pins
	 * dropped, while the device may still write into the pages.
	 */
	while ((left = diofork_stat_read_raw(DIOFORK_STAT_DIO_INFLIGHT)) > 0 &&
	       time_before(jiffies, end))
		schedule_timeout_uninterruptible(msecs_to_jiffies(10));
	return max(left, 0L);
}

/*
 * Retire every record.  Only called once the hooks that add and release
 * records are gone: nothing else can touch the table.
 */
void diofork_track_forget_all(void)
{
	struct diofork_bucket *b;
	const struct bio *bio;
	struct diofork_io *io;
	unsigned long flags;
	unsigned int i;

	for (i = 0; i < (1U << DIOFORK_BIO_HASH_BITS); i++) {
		b = &diofork_bio_hash[i];
		do {
			local_irq_save(flags);
			diofork_bucket_lock(b);
			io = hlist_entry_safe(b->head.first, struct diofork_io,
					      bio_node);
			bio = io ? io->bio : NULL;
			diofork_bucket_unlock(b);
			local_irq_restore(flags);
			if (bio)
				diofork_unhash_bio(bio, b, DIOFORK_RETIRE_FORCED);
		} while (bio);
	}
}

/*
 * Did a fork share one of @io's pages with its child before the record was
 * hashed?  Fork clears PageAnonExclusive on each anonymous page it shares
 * (it copies a page that may be pinned instead); the DIO's lookup, with
 * FOLL_WRITE, left every page exclusive.  A flag still set once the record is
 * hashed means any later sharing is followed by a COW fault that finds the
 * record.  A cleared one means that fault may already have happened, the
 * parent's page replaced before the record was there to see it: the window
 * the record was not there to make wait (pin and lock do the lookup
 * again, below; drain holds fork off the lookup; observe only counts).
 * Only on the rare raced path.
 */
static bool diofork_io_shared(const struct diofork_io *io)
{
	struct page *page;
	unsigned int i;

	for (i = 0; i < io->nr_pages; i++) {
		page = pfn_to_page(io->pages[i].pfn);
		/* hugetlb keeps the flag in the head page (6.1 does not look) */
		if (PageHuge(page))
			page = compound_head(page);
		if (PageAnon(page) && !PageAnonExclusive(page))
			return true;
	}
	return false;
}

/*
 * A fork overlapped the lookup of @io, a record of the DIO's own task (the
 * record says DIOFORK_IO_FORK_RACED): are its pages still the parent's own,
 * for the protection @pinned says the record has?  The task may sleep: the
 * bio is not submitted.
 *
 * Without pins (lock) the record protects by being found: a COW fault in
 * the parent that comes after a page was shared finds it and waits.  A
 * page still exclusive when the record was hashed can only be shared after
 * that, so only a page shared before (DIOFORK_IO_FORK_SHARED) is a page the
 * parent may already have replaced.
 *
 * With pins the fork must see them.  It copies the parent's PTEs in sections
 * during which write_protect_seq is odd, and one may have looked for pins
 * before ours and not yet shared the page.  Odd now: a section is running,
 * perhaps on our pages, and it holds the mmap lock for writing, so taking
 * it for reading waits for the whole fork.  Even: every section that ran is
 * done, and the read orders its flags before ours; a section that starts
 * later sees the pins and copies the page.
 */
bool diofork_io_settled(const struct diofork_io *io, bool pinned)
{
	if (!pinned)
		return !(READ_ONCE(io->flags) & DIOFORK_IO_FORK_SHARED);
	if (diofork_mm_wp_seq(io->mm) & 1) {
		mmap_read_lock(io->mm);
		mmap_read_unlock(io->mm);
	}
	return !diofork_io_shared(io);
}

/* A record of @nr pages, with room for @room_pinned pins. */
static __always_inline size_t
diofork_io_size(unsigned int nr, unsigned int room_pinned)
{
	struct diofork_io *io;

	return size_add(struct_size(io, pages, nr),
			array_size(room_pinned, sizeof(struct page *)));
}

/*
 * The size of the record diofork_track_bio_as() would make of bvecs
 * [first_vec, bi_vcnt) of @bio, for a caller that allocates it; 0 if it
 * makes none.
 */
size_t diofork_track_size(const struct bio *bio, unsigned int first_vec,
			  bool kernel_pinned, enum diofork_pin_at pin_at)
{
	unsigned int nr = diofork_bio_nr_pages(bio, first_vec);

	if (!nr)
		return 0;
	return diofork_io_size(nr, pin_at != DIOFORK_PIN_NEVER &&
				       !kernel_pinned ? nr : 0);
}

/* diofork_io_forked() from the record itself, which is on its bio bucket. */
static void diofork_io_forked_now(struct diofork_io *io)
{
	struct diofork_bucket *b = diofork_bio_bucket(io->bio);
	unsigned long flags;

	local_irq_save(flags);
	diofork_bucket_lock(b);
	diofork_io_forked(io);
	diofork_bucket_unlock(b);
	local_irq_restore(flags);
}

/*
 * Track the pages of bvecs [first_vec, bi_vcnt) of @bio, a read, which the
 * DIO path has just taken.  Unless it is DIOFORK_WP_SEQ_NONE, @wp_seq is
 * mm->write_protect_seq sampled before the pages were taken: a fork() that
 * overlapped the window may have shared a page before we could see it, and
 * the record says so.
 *
 * What a fork needs of the record, it gets once a fork of the mm may share
 * the pages (diofork_io_forked()): the pfn index, and the pins of a record
 * that waits for a fork to pin.  @pin_at says when the record pins its
 * anonymous pages (policy_pin.c), in room of its own
 * (diofork_io_pin_room()).  DIOFORK_PIN_AT_ONCE: now.  DIOFORK_PIN_AT_FORK:
 * with the index.  A fork indexes the records it finds once it holds the
 * mm's mmap lock for writing and before it copies a page table
 * (diofork_track_fork_mm()); a record that finds the lock held for
 * writing, or write_protect_seq moved, indexes itself.  The record is
 * hashed by bio before that look, a full barrier between, and the fork
 * takes the lock before it looks at the table, a full barrier between: one
 * of them sees the other.  Indexed (and pinned), the record re-reads
 * write_protect_seq, as GUP-fast re-reads it after taking its pins: a
 * fork that shared a page before the index was there is a raced fork.
 *
 * Inline in the callers below, so that a read that pins nothing costs
 * nothing of the pins.
 */
static __always_inline struct diofork_io *
__diofork_track_bio(const struct bio *bio, unsigned int first_vec,
		    bool kernel_pinned, unsigned long wp_seq,
		    const enum diofork_pin_at pin_at,
		    struct diofork_io *prealloc)
{
	const struct bio_vec *bv = &bio->bi_io_vec[first_vec];
	struct diofork_bucket *b;
	struct diofork_io *io;
	unsigned long flags;
	unsigned short io_flags = kernel_pinned ? DIOFORK_IO_KPINNED : 0;
	unsigned int nr, room_pinned = 0;
	bool one_bvec, raced;

	b = diofork_bio_bucket(bio);
	if (!first_vec && unlikely(!hlist_empty(&b->head)) &&
	    diofork_unhash_bio(bio, b, DIOFORK_RETIRE_RELEASED))
		diofork_stat_inc(DIOFORK_STAT_TRACK_STALE);

	/*
	 * A DIO of a few pages has one bvec (contiguous pages merge): apart
	 * from the general loops, it costs about 40 instructions fewer per
	 * 4 KiB read (QEMU TCG plugin count, 2026-11-25).
	 */
	one_bvec = bio->bi_vcnt == first_vec + 1;
	nr = likely(one_bvec) ? diofork_bvec_nr_pages(bv) :
				diofork_bio_nr_pages(bio, first_vec);
	if (!nr)
		return NULL;
	/* a kernel that pins DIO itself has pinned these (pin is passive) */
	if (pin_at != DIOFORK_PIN_NEVER && !kernel_pinned)
		room_pinned = nr;
	/* one region with interrupts off: allocation, hashing, pinning */
	local_irq_save(flags);
	if (unlikely(prealloc)) {
		/* diofork_track_size() of the same bio: big enough */
		io = prealloc;
		io->flags = io_flags;
	} else {
		io = diofork_io_alloc(diofork_io_size(nr, room_pinned),
				      io_flags);
	}
	if (!io) {
		local_irq_restore(flags);
		diofork_stat_inc(DIOFORK_STAT_TRACK_ALLOC_FAILURES);
		return NULL;
	}
	io->bio = bio;
	io->mm = current->mm;
	io->task = current;
	io->pinned = NULL;
	io->nr_pinned = 0;
	io->room_pinned = room_pinned;
	io->indexed = false;
	io->nr_pages = nr;

	atomic_inc(diofork_mm_count(io->mm));
	diofork_stat_inc(DIOFORK_STAT_DIO_SUBMITTED_READ);
	diofork_stat_add(DIOFORK_STAT_DIO_PAGES_SUBMITTED, nr);
	if (kernel_pinned)
		diofork_stat_inc(DIOFORK_STAT_DIO_KERNEL_PINNED);

	if (likely(one_bvec))
		diofork_io_fill_bvec(io, bv, nr);
	else
		diofork_io_fill_pages(io, bio, first_vec);
	diofork_bucket_lock(b);
	hlist_add_head(&io->bio_node, &b->head);
	/* under the lock a fork's diofork_track_fork_mm() takes: pinned once */
	if (pin_at == DIOFORK_PIN_AT_ONCE && room_pinned)
		diofork_pin_take(io);
	diofork_bucket_unlock(b);
	local_irq_restore(flags);
	/*
	 * Hashed (and pinned) before we look at the mm.  The bio is not
	 * submitted yet: nobody can release it under us.
	 */
	smp_mb();
	raced = wp_seq != DIOFORK_WP_SEQ_NONE &&
		diofork_mm_wp_seq_changed(io->mm, (unsigned int)wp_seq);
	if (unlikely(raced || diofork_mm_write_locked(io->mm))) {
		diofork_io_forked_now(io);
		smp_mb();	/* indexed before we re-read write_protect_seq */
		raced = wp_seq != DIOFORK_WP_SEQ_NONE &&
			diofork_mm_wp_seq_changed(io->mm, (unsigned int)wp_seq);
	}
	if (raced) {
		WRITE_ONCE(io->flags, io->flags | DIOFORK_IO_FORK_RACED);
		diofork_stat_inc(DIOFORK_STAT_TRACK_FORK_RACED);
		if (!kernel_pinned && diofork_io_shared(io)) {
			WRITE_ONCE(io->flags,
				   io->flags | DIOFORK_IO_FORK_SHARED);
			diofork_stat_inc(DIOFORK_STAT_TRACK_FORK_SHARED);
		}
	}
	return io;
}

/* observe, lock, drain, and the legacy submit: no pins. */
struct diofork_io *notrace diofork_track_bio(const struct bio *bio,
					     unsigned int first_vec,
					     bool kernel_pinned,
					     unsigned long wp_seq)
{
	return __diofork_track_bio(bio, first_vec, kernel_pinned, wp_seq,
				   DIOFORK_PIN_NEVER, NULL);
}

/* pin: the record pins its pages once a fork may share them. */
struct diofork_io *notrace diofork_track_bio_pin(const struct bio *bio,
						 unsigned int first_vec,
						 bool kernel_pinned,
						 unsigned long wp_seq)
{
	return __diofork_track_bio(bio, first_vec, kernel_pinned, wp_seq,
				   DIOFORK_PIN_AT_FORK, NULL);
}

/*
 * Any of them, off the 4 KiB path: a big bio, or a lookup done again.
 * @prealloc is NULL, or a record of diofork_track_size() bytes from the
 * caller's kvmalloc(), which becomes the record (returned) unless the bio
 * has no page to record (NULL: the caller frees it).  Apart, so that the
 * others test no @prealloc.
 */
struct diofork_io *notrace diofork_track_bio_as(const struct bio *bio,
						unsigned int first_vec,
						bool kernel_pinned,
						unsigned long wp_seq,
						enum diofork_pin_at pin_at,
						struct diofork_io *prealloc)
{
	switch (pin_at) {
	case DIOFORK_PIN_AT_FORK:
		return __diofork_track_bio(bio, first_vec, kernel_pinned,
					   wp_seq, DIOFORK_PIN_AT_FORK,
					   prealloc);
	case DIOFORK_PIN_AT_ONCE:
		return __diofork_track_bio(bio, first_vec, kernel_pinned,
					   wp_seq, DIOFORK_PIN_AT_ONCE,
					   prealloc);
	default:
		return __diofork_track_bio(bio, first_vec, kernel_pinned,
					   wp_seq, DIOFORK_PIN_NEVER, prealloc);
	}
}

/*
 * A fork of @mm holds its mmap lock for writing and has copied no page
 * table yet (hooks.c): index every record of @mm by pfn, and pin those
 * that wait for a fork to pin them (DIOFORK_PIN_AT_FORK,
 * __diofork_track_bio()).  Preemption is disabled.  A walk of the table,
 * for a fork of a process with DIO in flight; the others read one counter.
 */
void diofork_track_fork_mm(struct mm_struct *mm)
{
	struct diofork_bucket *b;
	struct diofork_io *io;
	unsigned long flags;
	unsigned int i;

	/* the fork's lock before our look: pairs with the record's barrier */
	smp_mb();
	if (!atomic_read(diofork_mm_count(mm)))
		return;
	for (i = 0; i < (1U << DIOFORK_BIO_HASH_BITS); i++) {
		b = &diofork_bio_hash[i];
		if (hlist_empty(&b->head))
			continue;
		local_irq_save(flags);
		diofork_bucket_lock(b);
		hlist_for_each_entry(io, &b->head, bio_node)
			if (io->mm == mm)
				diofork_io_forked(io);
		diofork_bucket_unlock(b);
		local_irq_restore(flags);
	}
}

int diofork_track_init(void)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(diofork_waitq); i++)
		init_waitqueue_head(&diofork_waitq[i]);
	diofork_bio_hash = diofork_buckets_alloc(DIOFORK_BIO_HASH_BITS);
	diofork_pfn_hash = diofork_buckets_alloc(DIOFORK_PFN_HASH_BITS);
	if (!diofork_bio_hash || !diofork_pfn_hash) {
		diofork_track_exit();
		return -ENOMEM;
	}
	return 0;
}

void diofork_track_exit(void)
{
	diofork_io_cache_exit();
	vfree(diofork_pfn_hash);
	vfree(diofork_bio_hash);
	diofork_pfn_hash = NULL;
	diofork_bio_hash = NULL;
}
