// SPDX-License-Identifier: GPL-2.0
/*
 * lock_wait - acceptance tests for diofork's "lock" mode.
 *
 * In lock mode a write fault that would break COW on an anonymous page with
 * a tracked DIO of the same mm in flight waits, in the fault path, until
 * that IO completes, even when the faulting task submitted that DIO
 * (lock_waits_self): it only ever waits for bios already submitted, so it
 * never waits for itself.  Knob: lock_timeout_ms.
 *
 *  selfcow.*.self_cow_at_start
 *      The test's own O_DIRECT read buffer is COW-shared with a child (forked
 *      just before, blocked on a pipe) when the read starts.  Variants:
 *        pread_pages       pread of 8 pages;
 *        preadv_multibio   preadv of 1.125 MiB in 576 half-page iovecs, all
 *                          first halves then all second halves: 3 bios, each
 *                          page in two of them;
 *        aio_contig        one 1.25 MiB libaio read into a buffer 512 bytes
 *                          into its page (1 or 2 bios: physically contiguous
 *                          pages merge into one bvec);
 *        aio_multibio      libaio preadv of 1.25 MiB in 640 iovecs, bytes
 *                          512-4095 of each page then bytes 0-511: 3 bios,
 *                          each page in two of them;
 *        two_threads_same_page  two threads preadv into the two halves of
 *                          the same 8 pages at once;
 *        preadv_multibio_fork_during  preadv_multibio while another thread
 *                          loops fork()+_exit()+waitpid().
 *      Without a fork during the read, its page lookup breaks COW on each
 *      page before the bio holding it is tracked, so a later bio's lookup
 *      finds the page already writable: no lock wait, no lock_waits_self
 *      (these variants check that lock mode leaves such reads alone).  A
 *      fork between two bios of one read write-protects pages the earlier
 *      bio has in flight, and the next bio's lookup faults on them: the
 *      lock_waits_self path (the lookup waits for its own earlier bio, which
 *      is already submitted, so it completes), which fork_during exercises.
 *      $DIOFORK_LOCK_ITERS (1000) iterations for pread_pages and
 *      two_threads_same_page, 300 for the multi-bio variants, each at most
 *      $DIOFORK_LOCK_SECS (80) s.  Asserts: no read takes 10 s (a hang),
 *      at least 100 iterations, every read returns its length and the
 *      device pattern, the child's copy is untouched, at least the expected
 *      number of tracked bios per read, no lock wait aborted or timed out,
 *      gauges back to 0, no task in D state.  Prints iterations, time,
 *      tracked bios per read and the lock counters' deltas.
 *
 *  waiter.*: a slow read (dm-delay over $DIOFORK_DEV1, read delay
 *      $DIOFORK_LOCK_DELAY_MS, 3000 ms) into a private anonymous page P, a
 *      fork (P COW-shared), then a write to P that must wait for the read.
 *      The read is issued by a CLONE_VM sibling task of the writer process
 *      (same mm, its own thread group): a thread of the writer's own group
 *      in an uninterruptible DIO wait would keep the killed process from
 *      being reaped until the IO completes, and the test would time the IO,
 *      not the module.  On kernels whose DIO pins its pages (6.12) fork
 *      copies P for the child and the write never faults: SKIP, with the
 *      evidence.
 *    sigkill_waiter   the write still blocked after 300 ms (cow_on_dio_page
 *                     counted it); SIGKILL the writer: reaped within 1 s and
 *                     while the read is still in flight; lock_waits and
 *                     lock_aborted +1 (lock_wait_hist agrees); the read then
 *                     completes with the device's data in P; gauges back to
 *                     0; no task left in D state.
 *    own_aio_write    the writer itself submitted the read (libaio), then
 *                     forks and writes P from user space: the write waits
 *                     like any other (returns no earlier than 80% of the
 *                     delay after submission, lock_waits +1) and P holds
 *                     the read's data (lock_waits_self +1: the submitter
 *                     waits too).
 *    unshare_waits    not a store but an unshare fault: W reads 64 bytes
 *                     of P through process_vm_readv() of itself, a FOLL_PIN
 *                     lookup without FOLL_WRITE, which on 6.1 gives W a
 *                     copy of the shared P.  First in observe, the control:
 *                     the read is lost from P (skipped where the kernel pins
 *                     DIO); then in lock: the lookup returns no earlier than
 *                     80% of the delay after submission, lock_waits +1, and
 *                     P holds the read's data.
 *    lock_timeout     lock_timeout_ms=200: the write returns after about
 *                     200 ms (0.15 to 1.0 s), with the read still in
 *                     flight, and lock_timeouts increments.  Restored to 0.
 *    dio_write_no_wait  a slow libaio O_DIRECT write from P (dm-delay delays
 *                     writes too), fork, W stores into P, then G overwrites
 *                     its view of P: writes are not tracked (COW can not
 *                     lose them), so the store returns with the write still
 *                     in flight, lock_waits and cow_on_dio_page* stay put,
 *                     dio_skipped_write +1, and the device gets the bytes
 *                     submitted (W's stored byte may reach it on a kernel
 *                     whose fork copies pinned pages for the child).
 *    rmmod_waiter     rmmod diofork while the write waits (runs last): rmmod
 *                     returns within 30 s, the write completes, the writer
 *                     exits 0, the read completes; insmod $DIOFORK_KO, mode
 *                     lock is accepted, gauges 0, a new read is tracked and
 *                     retired, no task in D state.
 *
 * Every test sets mode lock in its setup and puts "off" back.  SKIP (4)
 * when the module is not loaded, or (waiter) when dmsetup or dm-delay is
 * missing, or (rmmod) when $DIOFORK_KO does not exist.
 *
 * Tunables (environment): DIOFORK_LOCK_ITERS, DIOFORK_LOCK_SECS,
 * DIOFORK_LOCK_DELAY_MS, DIOFORK_DEV0/DIOFORK_DEV1, DIOFORK_KO
 * (/opt/diofork/diofork.ko).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "dftest.h"

#define PAGE_SZ		4096UL
#define IO_TIMEOUT_S	10		/* one read longer than this: a hang */
#define IDLE_TIMEOUT_S	2.0		/* gauges must reach 0 within this */
#define SC_BASE		(512ULL << 20)	/* byte offset on DEV0 */
#define SC_REGION	(4ULL << 20)	/* pattern-filled from SC_BASE */
#define SC_FILL		0xa5
#define DM_NAME		"diofork_lock_delay"
#define DM_BASE_SECTOR	(1ULL << 21)	/* 1 GiB into DEV1 */
#define DM_SECTORS	(1ULL << 11)	/* 1 MiB, all of it pattern-filled */
#define LOCK_TIMEOUT_MS	200
#define WD_OFF		(512UL << 10)	/* dio_write_no_wait: byte offset on the dm device */
#define WD_FILL		0xc3		/* P as submitted */
#define WD_STORE	0xee		/* W's store after fork */
#define WD_CHILD_FILL	0x77		/* G's writes to its view of P */

/* A marker in the kernel log, to line the console log up with the test. */
#define kmsg(fmt, ...)	df_kmsg("lock_wait: " fmt, ##__VA_ARGS__)

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

/* One line with the deltas of the named counters (NULL-terminated list). */
static void print_some(const char *tag, const struct df_stats *a,
		       const struct df_stats *b, const char *const *names)
{
	char line[1024];

	ksft_print_msg("%s\n", df_stats_deltas(line, sizeof(line), tag, a, b, names));
}

static const char *const lock_names[] = {
	"lock_waits", "lock_waits_self", "lock_timeouts", "lock_aborted",
	"cow_on_dio_page", "cow_on_dio_page_child", "dio_submitted_read",
	"dio_completed_read", "dio_skipped_write", "forks",
	"forks_with_dio_inflight", NULL,
};

static bool all_bytes(const unsigned char *p, size_t len, unsigned char c)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] != c)
			return false;
	return true;
}

/* ------------------------------------------------------------------ */
/* 1. the DIO's own buffer COW-shared when the read starts              */
/* ------------------------------------------------------------------ */

enum sc_kind {
	SC_PREAD,		/* pread of SC_PREAD_PAGES pages */
	SC_AIO_CONTIG,		/* libaio pread, 1.25 MiB at SC_AIO_SKEW */
	SC_VEC,			/* preadv of iov[0] */
	SC_AIO_VEC,		/* libaio preadv of iov[0] */
	SC_TWO_THREADS,		/* thread t: preadv of iov[t] */
};

#define SC_PREAD_PAGES	8
#define SC_VEC_PAGES	288		/* 576 half-page iovecs, 1.125 MiB */
#define SC_AIO_PAGES	320		/* 1.25 MiB */
#define SC_AIO_LEN	(SC_AIO_PAGES * PAGE_SZ)
#define SC_AIO_SKEW	512		/* buffer offset into its first page */
#define SC_TWO_PAGES	8
#define SC_TWO_OFF1	(1ULL << 20)	/* thread 1's device region */
#define SC_MAX_IOV	(2 * SC_AIO_PAGES)

FIXTURE_VARIANT(selfcow) {
	enum sc_kind kind;
	int threads;
	unsigned int min_bios;		/* tracked bios per read, at least */
	bool fork_during;		/* a thread forks while the reads run */
	unsigned long iters;		/* 0: $DIOFORK_LOCK_ITERS (1000) */
	const char *what;
};

struct sc_worker {
	pthread_t th;
	bool started;
	int idx;			/* -1: the fork thread */
	sem_t go, done;
	volatile int quit;
	long res;			/* bytes, or -errno; forks for the forker */

	FIXTURE_DATA(selfcow) *self;
	const FIXTURE_VARIANT(selfcow) *v;
};

FIXTURE(selfcow) {
	int fd;
	unsigned char *buf;		/* private anonymous */
	size_t buf_len;
	struct iovec *iov[2];
	int iovcnt;
	io_context_t aio;
	bool aio_ok;
	struct sc_worker w[2];
	struct sc_worker forker;
	volatile int forking;		/* the fork thread runs while set */
	pid_t child;
};

FIXTURE_VARIANT_ADD(selfcow, pread_pages) {
	.kind = SC_PREAD, .threads = 1, .min_bios = 1,
	.what = "pread of 8 pages",
};

/* The multi-bio reads cost 50-60 ms each under TCG: 300 of each. */
FIXTURE_VARIANT_ADD(selfcow, preadv_multibio) {
	.kind = SC_VEC, .threads = 1, .min_bios = 3, .iters = 300,
	.what =
		"preadv of 1.125 MiB in 576 half-page iovecs (first halves, then second halves): each page in two bios",
};

FIXTURE_VARIANT_ADD(selfcow, aio_contig) {
	.kind = SC_AIO_CONTIG, .threads = 1, .min_bios = 1, .iters = 300,
	.what = "libaio read of 1.25 MiB into a buffer 512 bytes into its page",
};

FIXTURE_VARIANT_ADD(selfcow, aio_multibio) {
	.kind = SC_AIO_VEC, .threads = 1, .min_bios = 3, .iters = 300,
	.what =
		"libaio preadv of 1.25 MiB in 640 iovecs (bytes 512-4095 of each page, then bytes 0-511): each page in two bios",
};

FIXTURE_VARIANT_ADD(selfcow, two_threads_same_page) {
	.kind = SC_TWO_THREADS, .threads = 2, .min_bios = 1,
	.what = "two threads, preadv into the two halves of the same 8 pages",
};

/*
 * The same read as preadv_multibio while another thread forks: a fork
 * between two bios of the read write-protects pages the first bio has in
 * flight, and the next bio's page lookup faults on them.  That is the
 * lock_waits_self path: the lookup waits for the earlier, submitted bio
 * (never for itself), and the read must come back whole.
 */
FIXTURE_VARIANT_ADD(selfcow, preadv_multibio_fork_during) {
	.kind = SC_VEC, .threads = 1, .min_bios = 3, .fork_during = true,
	.iters = 300,
	.what = "preadv_multibio while a thread forks",
};

static uint64_t sc_key(uint64_t off)
{
	return off / 512;
}

static long sc_expected(const FIXTURE_VARIANT(selfcow) *v)
{
	switch (v->kind) {
	case SC_PREAD:
		return SC_PREAD_PAGES * PAGE_SZ;
	case SC_VEC:
		return SC_VEC_PAGES * PAGE_SZ;
	case SC_AIO_CONTIG:
	case SC_AIO_VEC:
		return SC_AIO_LEN;
	case SC_TWO_THREADS:
		return SC_TWO_PAGES * PAGE_SZ / 2;
	}
	return 0;
}

static long sc_do_io(struct sc_worker *w)
{
	FIXTURE_DATA(selfcow) *self = w->self;
	struct timespec ts = { .tv_sec = IO_TIMEOUT_S };
	struct iocb cb, *cbp = &cb;
	struct io_event ev;
	ssize_t ret;
	int n;

	switch (w->v->kind) {
	case SC_PREAD:
		ret = pread(self->fd, self->buf, SC_PREAD_PAGES * PAGE_SZ, SC_BASE);
		break;
	case SC_VEC:
		ret = preadv(self->fd, self->iov[0], self->iovcnt, SC_BASE);
		break;
	case SC_TWO_THREADS:
		ret = preadv(self->fd, self->iov[w->idx], self->iovcnt,
			     SC_BASE + (w->idx ? SC_TWO_OFF1 : 0));
		break;
	case SC_AIO_CONTIG:
	case SC_AIO_VEC:
		if (w->v->kind == SC_AIO_CONTIG)
			io_prep_pread(&cb, self->fd, self->buf + SC_AIO_SKEW,
				      SC_AIO_LEN, SC_BASE);
		else
			io_prep_preadv(&cb, self->fd, self->iov[0], self->iovcnt,
				       SC_BASE);
		n = io_submit(self->aio, 1, &cbp);
		if (n != 1)
			return n < 0 ? n : -EIO;
		n = io_getevents(self->aio, 1, 1, &ev, &ts);
		if (n != 1)
			return n < 0 ? n : -ETIMEDOUT;
		return (long)ev.res;
	default:
		return -EINVAL;
	}
	return ret < 0 ? -errno : ret;
}

/* The fork thread: fork()+_exit()+waitpid() while ->forking is set. */
static long sc_fork_loop(struct sc_worker *w)
{
	long forks = 0;
	int status;
	pid_t pid;

	while (w->self->forking) {
		pid = fork();
		if (pid < 0)
			return -errno;
		if (pid == 0)
			_exit(0);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		forks++;
	}
	return forks;
}

static void *sc_worker_fn(void *arg)
{
	struct sc_worker *w = arg;

	for (;;) {
		while (sem_wait(&w->go) && errno == EINTR)
			;
		if (w->quit)
			return NULL;
		w->res = w->idx < 0 ? sc_fork_loop(w) : sc_do_io(w);
		sem_post(&w->done);
	}
}

/* Wait (bounded) for a worker's done: 0, or -1 on timeout. */
static int sc_wait_done(struct sc_worker *w)
{
	struct timespec dl;
	int ret;

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += IO_TIMEOUT_S;
	do {
		ret = sem_timedwait(&w->done, &dl);
	} while (ret && errno == EINTR);
	return ret ? -1 : 0;
}

/* Offset of the first bad byte in the parent's buffer, or -1. */
static ssize_t sc_check(FIXTURE_DATA(selfcow) *self,
			const FIXTURE_VARIANT(selfcow) *v)
{
	ssize_t bad;
	int i, t;

	switch (v->kind) {
	case SC_PREAD:
		return df_pattern_check_sectors(self->buf, SC_PREAD_PAGES * PAGE_SZ,
						sc_key(SC_BASE), DF_MAGIC);
	case SC_AIO_CONTIG:
		if (!all_bytes(self->buf, SC_AIO_SKEW, SC_FILL))
			return 0;
		if (!all_bytes(self->buf + SC_AIO_SKEW + SC_AIO_LEN,
			       self->buf_len - SC_AIO_SKEW - SC_AIO_LEN, SC_FILL))
			return SC_AIO_SKEW + SC_AIO_LEN;
		bad = df_pattern_check_sectors(self->buf + SC_AIO_SKEW, SC_AIO_LEN,
					       sc_key(SC_BASE), DF_MAGIC);
		return bad < 0 ? -1 : bad + SC_AIO_SKEW;
	case SC_VEC:
	case SC_AIO_VEC:
	case SC_TWO_THREADS:
		for (t = 0; t < v->threads; t++) {
			uint64_t dev = SC_BASE + (t ? SC_TWO_OFF1 : 0);

			for (i = 0; i < self->iovcnt; i++) {
				struct iovec *io = &self->iov[t][i];

				bad = df_pattern_check_sectors(io->iov_base, io->iov_len,
							       sc_key(dev), DF_MAGIC);
				if (bad >= 0)
					return (unsigned char *)io->iov_base -
					       self->buf + bad;
				dev += io->iov_len;
			}
		}
		return -1;
	}
	return 0;
}

static int sc_start(struct sc_worker *w, FIXTURE_DATA(selfcow) *self,
		    const FIXTURE_VARIANT(selfcow) *v, int idx)
{
	w->idx = idx;
	w->self = self;
	w->v = v;
	sem_init(&w->go, 0, 0);
	sem_init(&w->done, 0, 0);
	if (pthread_create(&w->th, NULL, sc_worker_fn, w))
		return -1;
	w->started = true;
	return 0;
}

static void sc_stop(struct sc_worker *w)
{
	struct timespec dl;

	if (!w->started)
		return;
	w->quit = 1;
	sem_post(&w->go);
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 5;
	pthread_timedjoin_np(w->th, NULL, &dl);
}

FIXTURE_SETUP(selfcow)
{
	size_t half = PAGE_SZ / 2;
	int i, ret;

	self->fd = -1;
	self->child = -1;
	if (!df_module_present())
		SKIP(return, "diofork module not loaded");
	self->fd = df_blkdev_open(df_dev_path(0), NULL, NULL);
	if (self->fd == -ENOENT)
		SKIP(return, "%s: no such device", df_dev_path(0));
	ASSERT_LE(0, self->fd) TH_LOG("%s: %s", df_dev_path(0), strerror(-self->fd));
	ret = df_blkdev_fill(df_dev_path(0), SC_BASE, SC_REGION, sc_key(SC_BASE));
	ASSERT_EQ(0, ret) TH_LOG("pattern fill of %s: %s", df_dev_path(0),
				 strerror(-ret));

	switch (variant->kind) {
	case SC_PREAD:
		self->buf_len = SC_PREAD_PAGES * PAGE_SZ;
		break;
	case SC_VEC:
		self->buf_len = SC_VEC_PAGES * PAGE_SZ;
		break;
	case SC_AIO_CONTIG:
		self->buf_len = SC_AIO_LEN + PAGE_SZ;
		break;
	case SC_AIO_VEC:
		self->buf_len = SC_AIO_LEN;
		break;
	case SC_TWO_THREADS:
		self->buf_len = SC_TWO_PAGES * PAGE_SZ;
		break;
	}
	self->buf = df_map_anon(self->buf_len, false);
	ASSERT_NE(NULL, self->buf);
	/* no THP: COW happens per 4 KiB page, as on a fragmented heap */
	madvise(self->buf, self->buf_len, MADV_NOHUGEPAGE);
	for (i = 0; i < 2; i++) {
		self->iov[i] = calloc(SC_MAX_IOV, sizeof(struct iovec));
		ASSERT_NE(NULL, self->iov[i]);
	}
	if (variant->kind == SC_VEC) {
		/* first halves of every page, then the second halves */
		self->iovcnt = 2 * SC_VEC_PAGES;
		for (i = 0; i < self->iovcnt; i++) {
			self->iov[0][i].iov_base = self->buf +
				(i % SC_VEC_PAGES) * PAGE_SZ +
				(i / SC_VEC_PAGES) * half;
			self->iov[0][i].iov_len = half;
		}
	} else if (variant->kind == SC_AIO_VEC) {
		/* bytes 512-4095 of every page, then bytes 0-511 */
		self->iovcnt = 2 * SC_AIO_PAGES;
		for (i = 0; i < SC_AIO_PAGES; i++) {
			self->iov[0][i].iov_base = self->buf + i * PAGE_SZ + SC_AIO_SKEW;
			self->iov[0][i].iov_len = PAGE_SZ - SC_AIO_SKEW;
			self->iov[0][SC_AIO_PAGES + i].iov_base = self->buf + i * PAGE_SZ;
			self->iov[0][SC_AIO_PAGES + i].iov_len = SC_AIO_SKEW;
		}
	} else if (variant->kind == SC_TWO_THREADS) {
		self->iovcnt = SC_TWO_PAGES;
		for (i = 0; i < self->iovcnt; i++) {
			self->iov[0][i].iov_base = self->buf + i * PAGE_SZ;
			self->iov[0][i].iov_len = half;
			self->iov[1][i].iov_base = self->buf + i * PAGE_SZ + half;
			self->iov[1][i].iov_len = half;
		}
	}
	if (variant->kind == SC_AIO_CONTIG || variant->kind == SC_AIO_VEC) {
		ret = io_setup(4, &self->aio);
		ASSERT_EQ(0, ret) TH_LOG("io_setup: %s", strerror(-ret));
		self->aio_ok = true;
	}
	for (i = 0; i < variant->threads; i++)
		ASSERT_EQ(0, sc_start(&self->w[i], self, variant, i));
	if (variant->fork_during)
		ASSERT_EQ(0, sc_start(&self->forker, self, variant, -1));
	ret = df_mode_set("lock");
	if (ret == -EOPNOTSUPP)
		SKIP(return, "mode lock not accepted (EOPNOTSUPP)");
	ASSERT_EQ(0, ret) TH_LOG("mode lock: %s", strerror(-ret));
}

FIXTURE_TEARDOWN(selfcow)
{
	int i;

	df_kill_reap(self->child, 5);
	self->forking = 0;
	for (i = 0; i < 2; i++)
		sc_stop(&self->w[i]);
	sc_stop(&self->forker);
	if (self->aio_ok)
		io_destroy(self->aio);
	if (df_module_present())
		df_mode_set("off");
	if (self->fd >= 0)
		close(self->fd);
}

TEST_F_TIMEOUT(selfcow, self_cow_at_start, 240)
{
	unsigned long iters = variant->iters ?:
			      df_env_ulong("DIOFORK_LOCK_ITERS", 1000);
	double budget = df_env_ulong("DIOFORK_LOCK_SECS", 80);
	unsigned long it, bad = 0, short_io = 0, child_bad = 0, forks = 0;
	long expected = sc_expected(variant), first_res = 0;
	ssize_t first_bad = -1;
	struct df_stats s0, s1;
	double t0, slowest = 0;
	char dlist[512];
	int i, idle;

	ASSERT_EQ(0, df_wait_idle(&s0, IDLE_TIMEOUT_S));
	ksft_print_msg("%s, %lu iterations (at most %.0f s), kernel %s\n",
		       variant->what, iters, budget, df_kernel_release());
	kmsg("self_cow_at_start: %s\n", variant->what);
	t0 = df_now();
	for (it = 0; it < iters && df_now() - t0 < budget; it++) {
		double ti = df_now();
		int p[2], status, ret;
		ssize_t off;
		char c;

		memset(self->buf, SC_FILL, self->buf_len);
		ASSERT_EQ(0, pipe2(p, O_CLOEXEC));
		fflush(stdout);
		fflush(stderr);
		self->child = fork();
		ASSERT_LE(0, self->child) TH_LOG("fork: %s", strerror(errno));
		if (self->child == 0) {
			/* keep the buffer mapped, shared, until the pipe closes */
			close(p[1]);
			while (read(p[0], &c, 1) < 0 && errno == EINTR)
				;
			_exit(all_bytes(self->buf, self->buf_len, SC_FILL) ? 0 : 1);
		}
		close(p[0]);
		if (variant->fork_during) {
			self->forking = 1;
			sem_post(&self->forker.go);
		}
		for (i = 0; i < variant->threads; i++)
			sem_post(&self->w[i].go);
		for (i = 0; i < variant->threads; i++) {
			ret = sc_wait_done(&self->w[i]);
			if (ret) {
				int n = df_dstate_tasks(dlist, sizeof(dlist));

				ksft_print_msg("iteration %lu: thread %d's read not done ",
					       it, i);
				printf("after %d s: HANG; D-state tasks (%d): %s\n",
				       IO_TIMEOUT_S, n, dlist);
				kmsg("self_cow_at_start: HANG at iteration %lu\n", it);
			}
			ASSERT_EQ(0, ret) TH_LOG("read hung (iteration %lu)", it);
		}
		if (variant->fork_during) {
			self->forking = 0;
			ret = sc_wait_done(&self->forker);
			ASSERT_EQ(0, ret) TH_LOG("fork thread stuck (iteration %lu)", it);
			ASSERT_LE(0, self->forker.res) TH_LOG("fork: %s",
							      strerror(-self->forker.res));
			forks += self->forker.res;
		}
		for (i = 0; i < variant->threads; i++) {
			if (self->w[i].res != expected) {
				if (!short_io++)
					first_res = self->w[i].res;
			}
		}
		off = sc_check(self, variant);
		if (off >= 0 && !bad++) {
			first_bad = off;
			ksft_print_msg("iteration %lu: wrong data at buffer offset %zd\n",
				       it, off);
		}
		close(p[1]);
		ret = df_wait_bounded(self->child, &status, 5);
		ASSERT_EQ(0, ret) TH_LOG("child not gone within 5 s of its pipe closing");
		self->child = -1;
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			child_bad++;
		if (df_now() - ti > slowest)
			slowest = df_now() - ti;
	}
	idle = df_wait_idle(&s1, IDLE_TIMEOUT_S);
	ksft_print_msg("%lu iterations in %.1f s (slowest %.3f s)%s; "
		       "%lu short/failed reads (first %ld, expected %ld), %lu with wrong data, %lu children whose copy changed; "
		       "tracked bios per read %.2f\n",
		       it, df_now() - t0, slowest,
		       it < iters ? ", time budget reached" : "", short_io,
		       first_res, expected, bad, child_bad,
		       it ? (double)df_stats_delta(&s0, &s1, "dio_submitted_read") /
			    (it * variant->threads) : 0.0);
	if (variant->fork_during)
		ksft_print_msg("%lu forks during the reads\n", forks);
	print_some("counters", &s0, &s1, lock_names);

	EXPECT_LE(iters > 100UL ? 100UL : iters, it)
		TH_LOG("only %lu iterations in %.0f s", it, budget);
	EXPECT_EQ(0, short_io) TH_LOG("read returned %ld, expected %ld",
				      first_res, expected);
	EXPECT_EQ(0, bad) TH_LOG("%lu of %lu reads lost data, first at buffer offset %zd",
				 bad, it, first_bad);
	EXPECT_EQ(0, child_bad)
		TH_LOG("the child's copy of the buffer changed: the read landed in it");
	EXPECT_LE((long long)(it * variant->threads * variant->min_bios),
		  df_stats_delta(&s0, &s1, "dio_submitted_read"))
		TH_LOG("fewer tracked bios than %u per read: tracking off, or not multi-bio",
		       variant->min_bios);
	EXPECT_EQ(0, df_stats_delta(&s0, &s1, "lock_aborted"));
	EXPECT_EQ(0, df_stats_delta(&s0, &s1, "lock_timeouts"));
	EXPECT_EQ(0, idle) TH_LOG("gauges not 0: dio_inflight=%llu",
				  df_stats_val(&s1, "dio_inflight"));
	EXPECT_TRUE(df_no_dstate(2, dlist, sizeof(dlist))) TH_LOG("D-state tasks: %s", dlist);
}

/* ------------------------------------------------------------------ */
/* 2. a COW fault that waits for a slow read                           */
/* ------------------------------------------------------------------ */

/* Shared (MAP_SHARED) by the test, the writer W and its reader sibling S. */
struct wv {
	volatile int phase;
	volatile int err;		/* positive errno, writer side */
	volatile int err_at;		/* phase at the error */
	volatile pid_t s_pid, g_pid;
	volatile double t_submit, t_inflight, t_write0, t_write1, t_io_done;
	volatile int io_done;
	volatile int done_at_write;	/* dio_write: complete when W's store returned */
	volatile long io_res;		/* bytes, or -errno */
	volatile long io_bad;		/* offset of the first bad byte, or -1 */
};

enum { WV_START, WV_FORKED, WV_WRITING, WV_WROTE, WV_FAILED };

/* The reader sibling's arguments, in the writer's (shared) memory. */
struct wv_read {
	struct wv *v;
	int fd;
	unsigned char *page;
	uint64_t off, key;
};

/*
 * S: a CLONE_VM sibling of the writer (same mm, its own thread group), so
 * the writer can be killed and reaped while this read is in flight.  Raw
 * syscalls only: S shares the writer's TLS.
 */
static int wv_reader(void *arg)
{
	struct wv_read *r = arg;
	long ret;

	r->v->t_submit = df_now();
	ret = syscall(SYS_pread64, r->fd, r->page, PAGE_SZ, r->off);
	r->v->t_io_done = df_now();
	r->v->io_res = ret < 0 ? -errno : ret;
	r->v->io_bad = ret == (long)PAGE_SZ ?
		df_pattern_check_sectors(r->page, PAGE_SZ, r->key, DF_MAGIC) : 0;
	r->v->io_done = 1;
	return 0;
}

static int wv_fail(struct wv *v, int err)
{
	v->err = err;
	v->err_at = v->phase;
	v->phase = WV_FAILED;
	return 1;
}

/*
 * Fork G, with which P is now COW-shared: G closes fd and waits until W
 * writes to or closes *wfd, W's end of a pipe; then, if @fill is not NULL,
 * G overwrites its view of P there (G's own COW) and exits.  0, or 1 as
 * wv_fail().
 */
static int wv_fork_g(struct wv *v, int fd, unsigned char *fill, int *wfd)
{
	int p[2];
	pid_t pid;
	char c;

	if (pipe2(p, O_CLOEXEC))
		return wv_fail(v, errno);
	pid = fork();
	if (pid < 0)
		return wv_fail(v, errno);
	if (pid == 0) {
		close(p[1]);
		close(fd);
		while (read(p[0], &c, 1) < 0 && errno == EINTR)
			;
		if (fill)
			memset(fill, WD_CHILD_FILL, PAGE_SZ);
		_exit(0);
	}
	v->g_pid = pid;
	close(p[0]);
	*wfd = p[1];
	v->phase = WV_FORKED;
	return 0;
}

/* W stores into P after the fork: the COW fault, timed. */
static void wv_store(struct wv *v, volatile unsigned char *byte,
		     unsigned char val)
{
	v->t_write0 = df_now();
	v->phase = WV_WRITING;
	*byte = val;
	v->t_write1 = df_now();
}

/*
 * W reads 64 bytes of P after the fork through process_vm_readv() of
 * itself, timed: a FOLL_PIN lookup without FOLL_WRITE, which finds P shared
 * and unshares it (6.1 gives W a copy, as a store's COW would).  0, or the
 * errno.
 */
static int wv_unshare(struct wv *v, volatile unsigned char *p)
{
	unsigned char buf[64];
	struct iovec local = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct iovec remote = { .iov_base = (void *)p, .iov_len = sizeof(buf) };
	ssize_t ret;

	v->t_write0 = df_now();
	v->phase = WV_WRITING;
	ret = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
	v->t_write1 = df_now();
	return ret == (ssize_t)sizeof(buf) ? 0 : ret < 0 ? errno : EIO;
}

/*
 * The rest of W once the read into P is submitted (by S or by W itself):
 * until the module tracks it (or *done, if not NULL, says it completed),
 * then fork G (which waits for W's pipe to close), then write *byte of P:
 * the COW fault (or, with @unshare, read P through process_vm_readv(): the
 * unshare fault).  0, or 1 as wv_fail().
 */
static int wv_fork_write(struct wv *v, const volatile int *done, int fd,
			 volatile unsigned char *byte, bool unshare)
{
	int ret, wfd;

	ret = df_wait_inflight(1, 5, done, NULL);
	if (ret)
		return wv_fail(v, -ret);
	v->t_inflight = df_now();

	if (wv_fork_g(v, fd, NULL, &wfd))
		return 1;
	if (unshare) {
		ret = wv_unshare(v, byte);
		if (ret)
			return wv_fail(v, ret);
	} else {
		wv_store(v, byte, 0xee);
	}
	v->phase = WV_WROTE;
	return 0;
}

/*
 * W: page P, a slow read into it by sibling S, a fork (P now COW-shared
 * with grandchild G, which waits for W's pipe to close), then a write to P.
 */
static int wv_writer(struct wv *v, const char *dev, bool unshare)
{
	static struct wv_read r;
	size_t stack_len = 256 << 10;
	unsigned char *page, *stack;
	pid_t pid;

	page = df_map_anon(PAGE_SZ, false);
	stack = df_map_anon(stack_len, false);
	if (!page || !stack)
		return wv_fail(v, ENOMEM);
	memset(page, 0x5a, PAGE_SZ);
	r.v = v;
	r.page = page;
	r.off = 0;
	r.key = DM_BASE_SECTOR;
	r.fd = open(dev, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (r.fd < 0)
		return wv_fail(v, errno);
	pid = clone(wv_reader, stack + stack_len,
		    CLONE_VM | CLONE_PARENT | SIGCHLD, &r);
	if (pid < 0)
		return wv_fail(v, errno);
	v->s_pid = pid;

	return wv_fork_write(v, &v->io_done, r.fd, page, unshare);
}

/*
 * W, own_aio_write: W itself submits a libaio read into P (so W is the
 * DIO's submitting task), forks G (P COW-shared), writes the last byte of
 * P, then reaps the read and checks the rest of P.
 */
static int wv_writer_aio(struct wv *v, const char *dev, double delay)
{
	struct timespec ts = { .tv_sec = (time_t)delay + 10 };
	struct iocb cb, *cbp = &cb;
	io_context_t ctx = 0;
	struct io_event ev;
	unsigned char *page;
	int fd, ret;

	page = df_map_anon(PAGE_SZ, false);
	if (!page)
		return wv_fail(v, ENOMEM);
	memset(page, 0x5a, PAGE_SZ);
	fd = open(dev, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0)
		return wv_fail(v, errno);
	ret = io_setup(1, &ctx);
	if (ret)
		return wv_fail(v, -ret);
	io_prep_pread(&cb, fd, page, PAGE_SZ, 0);
	v->t_submit = df_now();
	ret = io_submit(ctx, 1, &cbp);
	if (ret != 1)
		return wv_fail(v, ret < 0 ? -ret : EIO);
	/* W reaps the read itself, later: no io_done to watch */
	ret = wv_fork_write(v, NULL, fd, page + PAGE_SZ - 1, false);
	if (ret)
		return ret;

	ret = io_getevents(ctx, 1, 1, &ev, &ts);
	v->t_io_done = df_now();
	v->io_res = ret == 1 ? (long)ev.res : ret < 0 ? ret : -ETIMEDOUT;
	v->io_bad = v->io_res == (long)PAGE_SZ ?
		df_pattern_check_sectors(page, PAGE_SZ - 512, DM_BASE_SECTOR,
					 DF_MAGIC) : 0;
	v->io_done = 1;
	io_destroy(ctx);
	return 0;
}

/*
 * W, dio_write_no_wait: W submits a slow libaio O_DIRECT write from P
 * (dm-delay delays writes as it delays reads), forks G, stores the last
 * byte of P (a COW fault on 6.1), then lets G overwrite its whole view of
 * P (G's own COW) and exit, all while the write is in flight; then reaps
 * the write.
 */
static int wv_writer_dio_write(struct wv *v, const char *dev, double delay)
{
	struct timespec ts = { .tv_sec = (time_t)delay + 10 }, now = { 0 };
	struct iocb cb, *cbp = &cb;
	io_context_t ctx = 0;
	struct io_event ev;
	unsigned char *page;
	int fd, ret, wfd;
	char c = 0;

	page = df_map_anon(PAGE_SZ, false);
	if (!page)
		return wv_fail(v, ENOMEM);
	memset(page, WD_FILL, PAGE_SZ);
	fd = open(dev, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (fd < 0)
		return wv_fail(v, errno);
	ret = io_setup(1, &ctx);
	if (ret)
		return wv_fail(v, -ret);
	io_prep_pwrite(&cb, fd, page, PAGE_SZ, WD_OFF);
	v->t_submit = df_now();
	/* the bio is queued in dm-delay when io_submit() returns */
	ret = io_submit(ctx, 1, &cbp);
	if (ret != 1)
		return wv_fail(v, ret < 0 ? -ret : EIO);
	if (wv_fork_g(v, fd, page, &wfd))
		return 1;
	wv_store(v, page + PAGE_SZ - 1, WD_STORE);
	v->done_at_write = io_getevents(ctx, 0, 1, &ev, &now) == 1;
	v->phase = WV_WROTE;
	/* G's turn, while the write is still in flight */
	if (write(wfd, &c, 1) != 1)
		return wv_fail(v, errno);
	close(wfd);
	if (waitpid(v->g_pid, NULL, 0) != v->g_pid)
		return wv_fail(v, errno);
	v->g_pid = 0;

	ret = v->done_at_write ? 1 : io_getevents(ctx, 1, 1, &ev, &ts);
	v->t_io_done = df_now();
	v->io_res = ret == 1 ? (long)ev.res : ret < 0 ? ret : -ETIMEDOUT;
	v->io_done = 1;
	io_destroy(ctx);
	return 0;
}

FIXTURE(waiter) {
	struct wv *v;
	pid_t w_pid;
	char dev[128];
	bool dm_made;
	bool unloaded;			/* rmmod succeeded, not loaded back yet */
	unsigned long delay_ms;
};

FIXTURE_SETUP(waiter)
{
	char why[256], msg[512];
	struct stat st;
	int ret;

	self->w_pid = -1;
	self->delay_ms = df_env_ulong("DIOFORK_LOCK_DELAY_MS", 3000);
	if (!df_module_present())
		SKIP(return, "diofork module not loaded");
	if (stat(df_dev_path(1), &st))
		SKIP(return, "%s: no such device", df_dev_path(1));
	if (df_dm_delay_usable(why, sizeof(why)))
		SKIP(return, "%s", why);
	self->v = df_map_anon(sizeof(*self->v), true);
	ASSERT_NE(NULL, self->v);
	memset((void *)self->v, 0, sizeof(*self->v));
	ASSERT_EQ(0, prctl(PR_SET_CHILD_SUBREAPER, 1));

	ret = df_mode_set("lock");
	if (ret == -EOPNOTSUPP)
		SKIP(return, "mode lock not accepted (EOPNOTSUPP)");
	ASSERT_EQ(0, ret) TH_LOG("mode lock: %s", strerror(-ret));
	df_dm_path(DM_NAME, self->dev, sizeof(self->dev));
	/* last: a setup that fails or skips gets no teardown */
	ret = df_dm_delay_make(DM_NAME, DM_BASE_SECTOR, DM_SECTORS,
			       self->delay_ms, msg, sizeof(msg));
	ASSERT_EQ(0, ret) TH_LOG("%s", msg);
	self->dm_made = true;
}

FIXTURE_TEARDOWN(waiter)
{
	char msg[512];
	double t;
	int ret;

	if (self->v) {
		df_kill_reap(self->w_pid, 5);
		/* the reader may sit in its uninterruptible read: let it finish */
		df_kill_reap(self->v->s_pid, self->delay_ms / 1000.0 + 10);
		df_kill_reap(self->v->g_pid, 5);
		while (waitpid(-1, NULL, WNOHANG | __WALL) > 0)
			;
	}
	if (self->unloaded && !df_module_present()) {
		ret = df_run_bounded(df_do_insmod, (void *)df_ko_path(), 60, &t);
		if (ret)
			ksft_print_msg("teardown: insmod %s: %d\n", df_ko_path(), ret);
	}
	if (df_module_present()) {
		df_knob_set("lock_timeout_ms", 0);
		df_mode_set("off");
	}
	if (self->dm_made) {
		ret = df_dm_remove(DM_NAME, 15, msg, sizeof(msg));
		if (ret)
			ksft_print_msg("teardown: dmsetup remove %s: %d: %s\n",
				       DM_NAME, ret, msg);
	}
	if (self->v)
		munmap((void *)self->v, sizeof(*self->v));
}

/*
 * Start W; return once its write has begun (0), or W failed (-1).  Then
 * give the fault 300 ms: true if the write is still blocked.
 */
enum wv_kind { WV_READER, WV_OWN_AIO, WV_DIO_WRITE, WV_UNSHARE };

static int wv_start(FIXTURE_DATA(waiter) *self, enum wv_kind kind)
{
	struct wv *v = self->v;
	double end;

	memset((void *)v, 0, sizeof(*v));
	fflush(stdout);
	fflush(stderr);
	self->w_pid = fork();
	if (self->w_pid < 0)
		return -1;
	if (self->w_pid == 0) {
		double delay = self->delay_ms / 1000.0;

		_exit(kind == WV_OWN_AIO ? wv_writer_aio(v, self->dev, delay) :
		      kind == WV_DIO_WRITE ? wv_writer_dio_write(v, self->dev, delay) :
		      wv_writer(v, self->dev, kind == WV_UNSHARE));
	}
	for (end = df_now() + 10; v->phase < WV_WRITING; usleep(1000)) {
		siginfo_t si = { 0 };

		if (df_now() > end)
			return -1;
		/*
		 * W exited?  Not reaped (WNOWAIT): the tests wait for its
		 * status.  Where the write does not fault (the kernel pins DIO,
		 * or observe), W may write and exit between our two looks, so
		 * the phase decides, not the exit.
		 */
		if (!waitid(P_PID, self->w_pid, &si, WEXITED | WNOHANG | WNOWAIT) &&
		    si.si_pid == self->w_pid)
			break;
	}
	return v->phase < WV_WRITING || v->phase == WV_FAILED ? -1 : 0;
}

static const char *const wv_phases[] = {
	"start", "forked", "writing", "wrote", "failed",
};

/*
 * Is the write blocked 300 ms after it began?  When it is not and the
 * kernel pins DIO pages, the fault never happened (fork copied P for the
 * child): *skip says so.
 */
static bool wv_blocked(FIXTURE_DATA(waiter) *self, bool *skip)
{
	struct wv *v = self->v;

	usleep(300000);
	*skip = false;
	if (v->phase == WV_WRITING)
		return true;
	*skip = v->phase == WV_WROTE && df_kernel_pins_dio();
	ksft_print_msg("the write returned after %.3f s, read in flight: %s, dio_pins: %s\n",
		       v->t_write1 - v->t_write0, v->io_done ? "no" : "yes",
		       df_kernel_pins_dio() ? "yes" : "no");
	return false;
}

#define WV_SKIP_WHY "this kernel pins DIO pages (dio_pins: yes): fork copied the page for the child and the write did not fault, so there is no COW fault to wait on"

TEST_F_TIMEOUT(waiter, sigkill_waiter, 60)
{
	struct wv *v = self->v;
	struct df_stats s0, s1, s2;
	long long h0, h1;
	double tk, reap, t_reaped, io_end;
	bool blocked, skip, io_done_at_reap;
	char dlist[512];
	int ret, status, idle;

	ASSERT_EQ(0, df_wait_idle(&s0, IDLE_TIMEOUT_S));
	h0 = df_hist_count("lock_wait_hist");
	kmsg("sigkill_waiter: read delay %lu ms\n", self->delay_ms);
	ret = wv_start(self, WV_READER);
	ASSERT_EQ(0, ret) TH_LOG("writer failed in phase %s: %s", wv_phases[v->err_at],
				 strerror(v->err));
	blocked = wv_blocked(self, &skip);
	ASSERT_EQ(0, df_stats_read(&s1));
	print_some("300 ms into the write", &s0, &s1, lock_names);
	if (skip)
		SKIP(return, WV_SKIP_WHY);
	ASSERT_TRUE(blocked)
		TH_LOG("the write to the COW-shared page did not wait for the read in flight");
	EXPECT_LE(1, df_stats_delta(&s0, &s1, "cow_on_dio_page"));
	ASSERT_FALSE(v->io_done) TH_LOG("read completed within 300 ms: no delay?");

	kill(self->w_pid, SIGKILL);
	tk = df_now();
	ret = df_wait_bounded(self->w_pid, &status, 10);
	t_reaped = df_now();
	reap = t_reaped - tk;
	io_done_at_reap = v->io_done;
	ASSERT_EQ(0, ret) TH_LOG("killed writer not reaped within 10 s");
	self->w_pid = -1;
	io_end = v->t_submit + self->delay_ms / 1000.0;
	ksft_print_msg("writer SIGKILLed %.3f s after its write began; "
		       "reaped %.3f s after the kill, %.3f s before the read's delay ends; "
		       "read in flight at reap: %s\n",
		       tk - v->t_write0, reap, io_end - t_reaped,
		       io_done_at_reap ? "no" : "yes");
	EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	EXPECT_TRUE(reap < 1.0) TH_LOG("SIGKILL took %.3f s to end the wait", reap);
	EXPECT_FALSE(io_done_at_reap) TH_LOG("the kill ended only when the read completed");

	/* the read, then the grandchild (reparented to us) */
	ret = df_wait_bounded(v->s_pid, &status, self->delay_ms / 1000.0 + 10);
	ASSERT_EQ(0, ret) TH_LOG("reader not done within the delay + 10 s: stuck IO");
	v->s_pid = 0;
	ret = df_wait_bounded(v->g_pid, &status, 5);
	EXPECT_EQ(0, ret) TH_LOG("grandchild not gone after its parent died");
	if (!ret)
		v->g_pid = 0;
	ksft_print_msg("read done %.3f s after submission: %ld bytes, data %s\n",
		       v->t_io_done - v->t_submit, v->io_res,
		       v->io_bad < 0 ? "ok" : "wrong");
	EXPECT_EQ((long)PAGE_SZ, v->io_res);
	EXPECT_EQ(-1, v->io_bad) TH_LOG("wrong data in the read page at offset %ld",
					v->io_bad);

	idle = df_wait_idle(&s2, IDLE_TIMEOUT_S);
	h1 = df_hist_count("lock_wait_hist");
	print_some("after the read", &s0, &s2, lock_names);
	ksft_print_msg("lock_wait_hist count %+lld, lock_wait_ns_max %llu\n",
		       h1 - h0, df_stats_val(&s2, "lock_wait_ns_max"));
	EXPECT_LE(1, df_stats_delta(&s0, &s2, "lock_waits"));
	EXPECT_LE(1, df_stats_delta(&s0, &s2, "lock_aborted"));
	EXPECT_EQ(0, df_stats_delta(&s0, &s2, "lock_timeouts"));
	EXPECT_EQ(df_stats_delta(&s0, &s2, "lock_waits"), h1 - h0)
		TH_LOG("lock_wait_hist does not agree with lock_waits");
	EXPECT_EQ(0, idle) TH_LOG("gauges not 0: dio_inflight=%llu dio_pages_inflight=%llu",
				  df_stats_val(&s2, "dio_inflight"),
				  df_stats_val(&s2, "dio_pages_inflight"));
	EXPECT_TRUE(df_no_dstate(2, dlist, sizeof(dlist))) TH_LOG("D-state tasks: %s", dlist);
}

#define WV_NOWAIT_WHY \
	"the write did not wait for the read (lock_waits %+lld, lock_waits_self %+lld)"

/*
 * W's access to P waited for the read (between the stats s0 and s1): it
 * returned no earlier than 80% of the delay after the read's submission,
 * and P holds the read's data.
 */
static void wv_expect_waited(struct __test_metadata *_metadata,
			     FIXTURE_DATA(waiter) *self,
			     const struct df_stats *s0,
			     const struct df_stats *s1, double since_submit)
{
	struct wv *v = self->v;

	EXPECT_LE(1, df_stats_delta(s0, s1, "cow_on_dio_page"));
	EXPECT_TRUE(since_submit >= 0.8 * self->delay_ms / 1000.0)
		TH_LOG(WV_NOWAIT_WHY,
		       df_stats_delta(s0, s1, "lock_waits"),
		       df_stats_delta(s0, s1, "lock_waits_self"));
	EXPECT_LE(1, df_stats_delta(s0, s1, "lock_waits"));
	EXPECT_EQ((long)PAGE_SZ, v->io_res);
	EXPECT_EQ(-1, v->io_bad)
		TH_LOG("the read's data is not in W's page (first bad byte %ld)",
		       v->io_bad);
}

/*
 * The DIO's own task writes the page: W submitted the libaio read itself,
 * forked, then writes P from user space.  The user-space write must wait
 * like any other (lock_waits_self).
 */
TEST_F_TIMEOUT(waiter, own_aio_write, 60)
{
	struct wv *v = self->v;
	struct df_stats s0, s1;
	double end, since_submit;
	bool skip;
	int ret, status;

	ASSERT_EQ(0, df_wait_idle(&s0, IDLE_TIMEOUT_S));
	kmsg("own_aio_write: read delay %lu ms\n", self->delay_ms);
	ret = wv_start(self, WV_OWN_AIO);
	ASSERT_EQ(0, ret) TH_LOG("writer failed in phase %s: %s", wv_phases[v->err_at],
				 strerror(v->err));
	for (end = df_now() + self->delay_ms / 1000.0 + 5;
	     v->phase == WV_WRITING && df_now() < end; usleep(1000))
		;
	ASSERT_EQ(WV_WROTE, v->phase) TH_LOG("the write did not return within the delay + 5 s");
	ret = df_wait_bounded(self->w_pid, &status, self->delay_ms / 1000.0 + 15);
	ASSERT_EQ(0, ret) TH_LOG("writer not done within the delay + 15 s: stuck IO");
	self->w_pid = -1;
	ret = df_wait_bounded(v->g_pid, &status, 5);
	EXPECT_EQ(0, ret) TH_LOG("grandchild not gone after its parent exited");
	if (!ret)
		v->g_pid = 0;
	ASSERT_EQ(0, df_wait_idle(&s1, IDLE_TIMEOUT_S));
	since_submit = v->t_write1 - v->t_submit;
	ksft_print_msg("the submitter's own write returned after %.3f s, ",
		       v->t_write1 - v->t_write0);
	printf("%.3f s after the read was submitted (delay %lu ms); "
	       "read: %ld bytes, data in its page %s\n",
	       since_submit, self->delay_ms,
	       v->io_res, v->io_bad < 0 ? "ok" : "lost");
	print_some("counters", &s0, &s1, lock_names);
	skip = !df_stats_delta(&s0, &s1, "cow_on_dio_page") && df_kernel_pins_dio() &&
	       v->io_bad < 0;
	if (skip)
		SKIP(return, WV_SKIP_WHY);
	wv_expect_waited(_metadata, self, &s0, &s1, since_submit);
}

/*
 * Run W (unshare) in @mode to the end: its process_vm_readv() returned, S's
 * read completed and was checked, W and G reaped.  0, or -1 with a message.
 */
static int wv_unshare_run(FIXTURE_DATA(waiter) *self, const char *mode,
			  struct df_stats *s0, struct df_stats *s1)
{
	struct wv *v = self->v;
	double delay = self->delay_ms / 1000.0;
	int ret, status;

	ret = df_mode_set(mode);
	if (ret || df_wait_idle(s0, IDLE_TIMEOUT_S)) {
		ksft_print_msg("%s: mode or idle: %d\n", mode, ret);
		return -1;
	}
	kmsg("unshare_waits (%s): read delay %lu ms\n", mode, self->delay_ms);
	if (wv_start(self, WV_UNSHARE) ||
	    df_wait_bounded(self->w_pid, &status, delay + 10)) {
		ksft_print_msg("%s: W failed in phase %s: %s\n", mode,
			       wv_phases[v->err_at], strerror(v->err));
		return -1;
	}
	self->w_pid = -1;
	if (v->phase != WV_WROTE || df_wait_bounded(v->s_pid, &status, delay + 10)) {
		ksft_print_msg("%s: W ended in phase %s (%s), or S's read hung\n",
			       mode, wv_phases[v->phase], strerror(v->err));
		return -1;
	}
	v->s_pid = 0;
	if (!df_wait_bounded(v->g_pid, &status, 5))
		v->g_pid = 0;
	if (df_wait_idle(s1, IDLE_TIMEOUT_S))
		return -1;
	ksft_print_msg("%s: process_vm_readv of P took %.3f s, returned %.3f s after the read was submitted (delay %lu ms); read %ld bytes, data in P %s\n",
		       mode, v->t_write1 - v->t_write0, v->t_write1 - v->t_submit,
		       self->delay_ms, v->io_res, v->io_bad < 0 ? "ok" : "lost");
	print_some(mode, s0, s1, lock_names);
	return 0;
}

/*
 * Not a store but an unshare fault: W reads P through process_vm_readv()
 * of itself after the fork, a FOLL_PIN lookup without FOLL_WRITE, and on 6.1
 * that gives W a copy of P as a COW fault would.  In observe (the control,
 * which tracks the read, so that W knows when to fork, and changes nothing;
 * on a kernel that takes plain references) the read is lost from P; in
 * lock the lookup waits for the read, and P keeps its data.
 */
TEST_F_TIMEOUT(waiter, unshare_waits, 90)
{
	struct wv *v = self->v;
	struct df_stats s0, s1;
	bool pins = df_kernel_pins_dio();
	double since_submit;

	if (!pins) {
		ASSERT_EQ(0, wv_unshare_run(self, "observe", &s0, &s1));
		EXPECT_EQ((long)PAGE_SZ, v->io_res);
		EXPECT_LE(0, v->io_bad)
			TH_LOG("observe: the unshare did not lose the read: the test has no power here");
		EXPECT_LE(1, df_stats_delta(&s0, &s1, "cow_on_dio_page"));
	}
	ASSERT_EQ(0, wv_unshare_run(self, "lock", &s0, &s1));
	since_submit = v->t_write1 - v->t_submit;
	if (pins && !df_stats_delta(&s0, &s1, "cow_on_dio_page") && v->io_bad < 0)
		SKIP(return, WV_SKIP_WHY);
	wv_expect_waited(_metadata, self, &s0, &s1, since_submit);
	EXPECT_EQ(0, df_stats_delta(&s0, &s1, "lock_timeouts"));
}

TEST_F_TIMEOUT(waiter, lock_timeout, 60)
{
	struct wv *v = self->v;
	struct df_stats s0, s1;
	unsigned long knob = 0;
	double end, wrote;
	bool skip, in_flight;
	int ret, status;

	ASSERT_EQ(0, df_knob_set("lock_timeout_ms", LOCK_TIMEOUT_MS));
	ASSERT_EQ(0, df_knob_get("lock_timeout_ms", &knob));
	ASSERT_EQ(LOCK_TIMEOUT_MS, knob);
	ASSERT_EQ(0, df_wait_idle(&s0, IDLE_TIMEOUT_S));
	kmsg("lock_timeout: %d ms, read delay %lu ms\n", LOCK_TIMEOUT_MS,
	     self->delay_ms);
	ret = wv_start(self, WV_READER);
	ASSERT_EQ(0, ret) TH_LOG("writer failed in phase %s: %s", wv_phases[v->err_at],
				 strerror(v->err));
	for (end = df_now() + self->delay_ms / 1000.0 + 5;
	     v->phase == WV_WRITING && df_now() < end; usleep(1000))
		;
	in_flight = !v->io_done;
	ASSERT_EQ(0, df_stats_read(&s1));
	ASSERT_EQ(WV_WROTE, v->phase) TH_LOG("the write did not return within the delay + 5 s");
	wrote = v->t_write1 - v->t_write0;
	ksft_print_msg("lock_timeout_ms=%d: the write returned after %.3f s ",
		       LOCK_TIMEOUT_MS, wrote);
	printf("(read delay %lu ms), read still in flight: %s\n",
	       self->delay_ms, in_flight ? "yes" : "no");
	print_some("counters", &s0, &s1, lock_names);
	skip = !df_stats_delta(&s0, &s1, "cow_on_dio_page") && wrote < 0.1 &&
	       df_kernel_pins_dio();
	if (skip)
		SKIP(return, WV_SKIP_WHY);
	EXPECT_TRUE(wrote >= LOCK_TIMEOUT_MS * 0.75 / 1000 && wrote < 1.0)
		TH_LOG("the fault waited %.3f s, not about %d ms (%lld timed-out waits)",
		       wrote, LOCK_TIMEOUT_MS, df_stats_delta(&s0, &s1, "lock_timeouts"));
	EXPECT_TRUE(in_flight) TH_LOG("the write returned only once the read was done");
	EXPECT_LE(1, df_stats_delta(&s0, &s1, "lock_timeouts"));

	ret = df_wait_bounded(self->w_pid, &status, 5);
	EXPECT_EQ(0, ret);
	if (!ret) {
		self->w_pid = -1;
		EXPECT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	}
	ret = df_wait_bounded(v->s_pid, &status, self->delay_ms / 1000.0 + 10);
	ASSERT_EQ(0, ret) TH_LOG("reader not done within the delay + 10 s: stuck IO");
	v->s_pid = 0;
	EXPECT_EQ((long)PAGE_SZ, v->io_res);
	EXPECT_EQ(0, df_knob_set("lock_timeout_ms", 0));
	EXPECT_EQ(0, df_knob_get("lock_timeout_ms", &knob));
	EXPECT_EQ(0, knob);
}

/*
 * A DIO write is not tracked (COW can not lose it): a store into its page
 * after fork does not wait, and the device gets the bytes submitted.
 */
TEST_F_TIMEOUT(waiter, dio_write_no_wait, 60)
{
	struct wv *v = self->v;
	struct df_stats s0, s1;
	unsigned char *buf;
	long bad = -1;
	size_t i;
	int ret, status, fd;

	ASSERT_EQ(0, df_wait_idle(&s0, IDLE_TIMEOUT_S));
	kmsg("dio_write_no_wait: write delay %lu ms\n", self->delay_ms);
	ret = wv_start(self, WV_DIO_WRITE);
	ASSERT_EQ(0, ret) TH_LOG("writer failed in phase %s: %s", wv_phases[v->err_at],
				 strerror(v->err));
	ret = df_wait_bounded(self->w_pid, &status, self->delay_ms / 1000.0 + 15);
	ASSERT_EQ(0, ret) TH_LOG("writer not done within the delay + 15 s: stuck IO");
	self->w_pid = -1;
	ASSERT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status))
		TH_LOG("writer failed in phase %s: %s", wv_phases[v->err_at],
		       strerror(v->err));
	ASSERT_EQ(0, df_wait_idle(&s1, IDLE_TIMEOUT_S));

	/* what reached the device, read past dm-delay */
	fd = df_blkdev_open(df_dev_path(1), NULL, NULL);
	buf = df_map_anon(PAGE_SZ, false);
	ASSERT_LE(0, fd);
	ASSERT_NE(NULL, buf);
	ASSERT_EQ((ssize_t)PAGE_SZ,
		  pread(fd, buf, PAGE_SZ, DM_BASE_SECTOR * 512 + WD_OFF));
	close(fd);
	/* W's own store may reach it (6.12: fork copied P for G), nothing else */
	for (i = 0; i < PAGE_SZ - 1 && bad < 0; i++)
		if (buf[i] != WD_FILL)
			bad = (long)i;
	ksft_print_msg("the store into the write's page returned after %.3f s, ",
		       v->t_write1 - v->t_write0);
	printf("the write in flight then: %s; ", v->done_at_write ? "no" : "yes");
	printf("write done %.3f s after submission: %ld bytes; ",
	       v->t_io_done - v->t_submit, v->io_res);
	printf("on the device: %s, last byte 0x%02x\n",
	       bad < 0 ? "the bytes submitted" : "other bytes", buf[PAGE_SZ - 1]);
	print_some("counters", &s0, &s1, lock_names);
	EXPECT_FALSE(v->done_at_write)
		TH_LOG("the store waited for the DIO write (or the write was not delayed)");
	EXPECT_EQ((long)PAGE_SZ, v->io_res);
	EXPECT_EQ(-1, bad) TH_LOG("byte %ld on the device is 0x%02x, not 0x%02x",
				  bad, bad < 0 ? 0 : buf[bad], WD_FILL);
	EXPECT_TRUE(buf[PAGE_SZ - 1] == WD_FILL || buf[PAGE_SZ - 1] == WD_STORE);
	EXPECT_EQ(0, df_stats_delta(&s0, &s1, "lock_waits"));
	EXPECT_EQ(0, df_stats_delta(&s0, &s1, "cow_on_dio_page"));
	EXPECT_EQ(0, df_stats_delta(&s0, &s1, "cow_on_dio_page_child"));
	EXPECT_EQ(1, df_stats_delta(&s0, &s1, "dio_skipped_write"));
	EXPECT_EQ(0, df_stats_delta(&s0, &s1, "dio_submitted_read"));
	munmap(buf, PAGE_SZ);
}

/* Last: it unloads and reloads the module. */
TEST_F_TIMEOUT(waiter, rmmod_waiter, 120)
{
	struct wv *v = self->v;
	struct df_stats s0, s1, s2;
	double t_rm0, t_rm, t_ins, end, io_end;
	char mode[DF_MODE_NAME_MAX] = "", dlist[512];
	unsigned char *buf;
	bool blocked, skip;
	int rm, ins, ret, status, fd, idle;
	struct stat st;

	if (stat(df_ko_path(), &st))
		SKIP(return, "%s: %s (set DIOFORK_KO): not unloading what cannot be loaded back",
		     df_ko_path(), strerror(errno));
	ASSERT_EQ(0, df_wait_idle(&s0, IDLE_TIMEOUT_S));
	kmsg("rmmod_waiter: read delay %lu ms\n", self->delay_ms);
	ret = wv_start(self, WV_READER);
	ASSERT_EQ(0, ret) TH_LOG("writer failed in phase %s: %s", wv_phases[v->err_at],
				 strerror(v->err));
	blocked = wv_blocked(self, &skip);
	ASSERT_EQ(0, df_stats_read(&s1));
	print_some("300 ms into the write", &s0, &s1, lock_names);
	if (skip)
		SKIP(return, WV_SKIP_WHY);
	ASSERT_TRUE(blocked)
		TH_LOG("the write to the COW-shared page did not wait for the read in flight");
	ASSERT_FALSE(v->io_done) TH_LOG("read completed within 300 ms: no delay?");

	kmsg("rmmod_waiter: rmmod diofork with a fault waiting\n");
	t_rm0 = df_now();
	rm = df_run_bounded(df_do_rmmod, NULL, 30, &t_rm);
	ASSERT_NE(-ETIMEDOUT, rm) TH_LOG("rmmod diofork hung for %.0f s with a fault waiting",
					 t_rm);
	self->unloaded = rm == 0;
	for (end = df_now() + 5; v->phase == WV_WRITING && df_now() < end;
	     usleep(1000))
		;
	io_end = v->t_submit + self->delay_ms / 1000.0;
	ksft_print_msg("rmmod: %s after %.3f s ",
		       rm == 0 ? "unloaded" : strerror(rm), t_rm);
	printf("(returned %+.3f s from the end of the read's delay); "
	       "the write %s %.3f s after rmmod began\n",
	       t_rm0 + t_rm - io_end,
	       v->phase == WV_WROTE ? "returned" : "had not returned",
	       (v->phase == WV_WROTE ? v->t_write1 : df_now()) - t_rm0);
	EXPECT_EQ(0, rm) TH_LOG("rmmod diofork: %s", strerror(rm));
	EXPECT_EQ(WV_WROTE, v->phase) TH_LOG("the waiting write did not complete after rmmod");
	ret = df_wait_bounded(self->w_pid, &status, 5);
	EXPECT_EQ(0, ret) TH_LOG("writer not done 5 s after its write");
	if (!ret) {
		self->w_pid = -1;
		EXPECT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	}
	ret = df_wait_bounded(v->s_pid, &status, self->delay_ms / 1000.0 + 10);
	ASSERT_EQ(0, ret) TH_LOG("reader not done within the delay + 10 s: stuck IO");
	v->s_pid = 0;
	ret = df_wait_bounded(v->g_pid, &status, 5);
	EXPECT_EQ(0, ret) TH_LOG("grandchild not gone after its parent exited");
	if (!ret)
		v->g_pid = 0;
	/* unprotected once the wait was cancelled: the data may be in G's page */
	ksft_print_msg("read done %.3f s after submission: %ld bytes; "
		       "data in the writer's page: %s\n",
		       v->t_io_done - v->t_submit, v->io_res,
		       v->io_bad < 0 ? "ok" :
		       "not there (the COW went ahead once the wait was cancelled)");
	EXPECT_EQ((long)PAGE_SZ, v->io_res);

	if (!self->unloaded)
		return;
	ins = df_run_bounded(df_do_insmod, (void *)df_ko_path(), 60, &t_ins);
	ksft_print_msg("insmod %s: %s after %.3f s\n", df_ko_path(),
		       ins == 0 ? "ok" : ins == -ETIMEDOUT ? "hung" : strerror(ins),
		       t_ins);
	ASSERT_EQ(0, ins) TH_LOG("insmod %s failed", df_ko_path());
	self->unloaded = false;
	ASSERT_TRUE(df_module_present());
	EXPECT_EQ(0, df_mode_get(mode, sizeof(mode)));
	EXPECT_STREQ("off", mode);
	ASSERT_EQ(0, df_mode_set("lock"));

	/* a fresh module: nothing in flight, and it tracks a new read */
	ASSERT_EQ(0, df_wait_idle(&s1, IDLE_TIMEOUT_S)) TH_LOG("reloaded module has DIO in flight");
	fd = df_blkdev_open(df_dev_path(0), NULL, NULL);
	buf = df_map_anon(PAGE_SZ, false);
	ASSERT_LE(0, fd);
	ASSERT_NE(NULL, buf);
	EXPECT_EQ((ssize_t)PAGE_SZ, pread(fd, buf, PAGE_SZ, SC_BASE));
	close(fd);
	munmap(buf, PAGE_SZ);
	idle = df_wait_idle(&s2, IDLE_TIMEOUT_S);
	print_some("reloaded module, one read", &s1, &s2, lock_names);
	EXPECT_EQ(1, df_stats_delta(&s1, &s2, "dio_submitted_read"));
	EXPECT_EQ(1, df_stats_delta(&s1, &s2, "dio_completed_read"));
	EXPECT_EQ(0, idle);
	EXPECT_TRUE(df_no_dstate(2, dlist, sizeof(dlist))) TH_LOG("D-state tasks: %s", dlist);
}

int main(int argc, char **argv)
{
	int ret;

	if (!df_module_present())
		ksft_exit_skip("diofork module not loaded (no %s)\n", DF_DEBUGFS_DIR);
	ret = test_harness_run(argc, argv);
	if (df_module_present())
		df_mode_set("off");
	return ret;
}
