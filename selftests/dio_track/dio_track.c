// SPDX-License-Identifier: GPL-2.0
/*
 * dio_track - acceptance tests for diofork's DIO tracking and "observe" mode.
 *
 * The module counts every direct-IO bio whose pages it tracks: a record is
 * made when bio_iov_iter_get_pages() returns (or at submit_bio() for the
 * legacy fs/direct-io.c path) and retired when __bio_release_pages() runs.
 * One record per bio_iov_iter_get_pages() call, i.e. per bio.
 *
 *  track.*     per I/O path, in observe mode, N I/Os per direction and no
 *              fork.  Reads are tracked, writes only counted (COW can not
 *              lose a write); the relations asserted are
 *                  reads:  delta(dio_submitted_read)
 *                              == delta(dio_completed_read)
 *                              == N   (0 for io_uring registered buffers)
 *                          delta(dio_pages_submitted) == N * pages_per_io
 *                          delta(dio_skipped_write) == 0
 *                  writes: delta(dio_skipped_write) == N   (0 likewise)
 *                          no record: submitted/completed_read and
 *                          dio_pages_submitted 0
 *                  both:   delta(dio_skipped_bvec) == N * bvec_per_io
 *              with the gauges back to 0 and every hazard/anomaly counter
 *              unchanged.  Every I/O is 4 KiB (8 KiB
 *              for preadv/pwritev: 2 x 4 KiB iovecs), 4 KiB aligned in memory,
 *              on the device and in the file, inside one extent/cluster: one
 *              bio per I/O.  Data written is read back and checked.
 *  modeswitch  8 threads of O_DIRECT 4 KiB I/O on the raw device and one
 *              forking thread while the mode goes off->observe->off (and
 *              observe->pin->observe->off when pin is accepted); then no
 *              stuck I/O, gauges 0, pins balanced (nr_foll_pin_* and
 *              pin_pages_*), and no missed page release: track_stale and
 *              track_forced_release unchanged (every I/O here takes far less
 *              than the module's 5 s drain, and every path is hooked).
 *  kill.*      a child with 64 libaio reads in flight is SIGKILLed, 100
 *              times (or 60 s), in observe and in pin mode; then gauges 0,
 *              records made == records retired, track_stale unchanged,
 *              pins balanced.  The child forks with its reads in flight
 *              (pin pins them then): in pin mode, where the kernel does
 *              not pin DIO, pins must have been taken.
 *  rmmod.*     rmmod diofork while 64 libaio reads stay in flight (and
 *              the child forks, as in kill), then insmod $DIOFORK_KO again:
 *              no hang, debugfs back, mode off, pins taken (pin mode, as in
 *              kill) and balanced.  Runs last: it reloads the module.
 *
 * The suite boots with mode off; every test sets the mode it needs and puts
 * "off" back.  SKIP (4) when the module is not loaded.
 *
 * Tunables (environment): DIOFORK_TRACK_IOS (256 per direction and path),
 * DIOFORK_TRACK_SWITCHES (100 off/observe cycles), DIOFORK_TRACK_PIN_SWITCHES
 * (25 observe/pin/observe/off cycles), DIOFORK_TRACK_KILLS (100),
 * DIOFORK_DEV0/DIOFORK_DEV1, DIOFORK_KO (/opt/diofork/diofork.ko).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <liburing.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "dftest.h"

#define PAGE_SZ		4096UL
#define IO_SZ		4096UL
#define QD		32		/* libaio / io_uring depth, test 1 */
#define NR_BLOCKS	256		/* 1 MiB region per path */
#define RAW_TRACK_BASE	(64ULL << 20)	/* byte offsets on /dev/nullb0 */
#define RAW_LOAD_BASE	(128ULL << 20)
#define RAW_KILL_BASE	(256ULL << 20)
#define LOAD_QD		64		/* reads in flight, tests 3 and 4 */
#define IO_TIMEOUT_S	10		/* one I/O longer than this is a hang */
#define IDLE_TIMEOUT_S	2.0		/* gauges must reach 0 within this */
#define PIN_TIMEOUT_S	5.0		/* nr_foll_pin_* must balance within */
#define MNT_DIR		"/tmp/dio_track.mnt"
#define FILE_NAME	"track.dat"

/* A marker in the kernel log, to line the console log up with the test. */
#define kmsg(fmt, ...)	df_kmsg("dio_track: " fmt, ##__VA_ARGS__)

/* Shared by every test process of the run (MAP_SHARED, made in main). */
struct dt_shared {
	int fs;				/* enum dt_target on DEV1, 0 = none */
	int mounted;
};

static struct dt_shared *shared;

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

/* One line with every counter that moved between a and b. */
static void print_deltas(const char *tag, const struct df_stats *a,
			 const struct df_stats *b)
{
	char line[2048];
	size_t n = 0;
	int i;

	n += snprintf(line, sizeof(line), "%s deltas:", tag);
	for (i = 0; i < b->nr && n < sizeof(line); i++) {
		long long d = df_stats_delta(a, b, b->s[i].name);

		if (d)
			n += snprintf(line + n, sizeof(line) - n, " %s=%+lld",
				      b->s[i].name, d);
	}
	ksft_print_msg("%s\n", line);
}

static void print_raw_stats(void)
{
	char buf[8192];

	if (df_read_file(DF_STATS_FILE, buf, sizeof(buf)) >= 0)
		ksft_print_msg("raw stats:\n%s", buf);
}

/*
 * FOLL_PIN balance (nr_foll_pin_acquired - nr_foll_pin_released) before a
 * test, and the check after it.  Compared as a delta: on 6.12 the balance
 * is already off before our first rmmod/kill test (released exceeded
 * acquired by 1024, with diofork pinning nothing there; io_uring
 * registered buffers ran earlier), and that is not ours to judge.
 */
static long long pin_base = LLONG_MIN;

static void pins_baseline(void)
{
	long long acq, rel;

	pin_base = df_foll_pin_balance(&acq, &rel);
	if (pin_base != LLONG_MIN && pin_base) {
		ksft_print_msg("FOLL_PIN balance before the test: %lld ",
			       pin_base);
		printf("(acquired %lld, released %lld)\n", acq, rel);
	}
}

/*
 * The balance is back where pins_baseline() found it, polled for at most
 * timeout s (a release may lag the completion).  True when the kernel has
 * no such counters.
 */
static bool pins_balanced(long long *acq, long long *rel, double timeout)
{
	double end = df_now() + timeout;
	long long bal;

	for (;;) {
		bal = df_foll_pin_balance(acq, rel);
		if (bal == LLONG_MIN || pin_base == LLONG_MIN || bal == pin_base)
			return true;
		if (df_now() > end) {
			ksft_print_msg("FOLL_PIN balance moved from %lld to %lld\n",
				       pin_base, bal);
			return false;
		}
		usleep(20000);
	}
}

/* df_map_anon() with every page present and writable. */
static void *map_prefaulted(size_t len, bool shared_map)
{
	void *p = df_map_anon(len, shared_map);

	if (p)
		memset(p, 0, len);
	return p;
}

/*
 * Bounded waits as dio_track has always done them: its children are plain
 * fork()s (no __WALL), polled every 2 ms, and every 5 ms in run_bounded().
 */
static int wait_bounded(pid_t pid, int *status, double timeout)
{
	return df_wait_poll(pid, status, 0, timeout, 2000);
}

static int run_bounded(int (*fn)(void *), void *arg, double timeout,
		       double *secs)
{
	return df_run_poll(fn, arg, 0, timeout, 5000, secs);
}

/* Switch mode: 0, -EOPNOTSUPP (mode not available) or -errno. */
static int mode_set(const char *mode)
{
	return df_mode_set(mode);
}

static void mode_off_quiet(void)
{
	if (df_module_present())
		df_mode_set("off");
}

/* ------------------------------------------------------------------ */
/* 1. per-path balance in observe mode                                 */
/* ------------------------------------------------------------------ */

enum dt_target { T_RAW = 1, T_EXT4, T_XFS, T_VFAT };
enum dt_engine { E_SYNC, E_VEC, E_AIO, E_URING, E_URING_FIXED };

static const char *const target_names[] = {
	[T_RAW] = "raw", [T_EXT4] = "ext4", [T_XFS] = "xfs", [T_VFAT] = "vfat",
};

static const char *const engine_names[] = {
	[E_SYNC] = "pread/pwrite", [E_VEC] = "preadv/pwritev",
	[E_AIO] = "libaio", [E_URING] = "io_uring",
	[E_URING_FIXED] = "io_uring fixed buffers",
};

FIXTURE_VARIANT(track) {
	enum dt_target target;
	enum dt_engine engine;
	/* records per I/O (1: one bio; 0: registered buffers, not tracked) */
	unsigned int records_per_io;
	unsigned int pages_per_io;	/* pages of one record */
	unsigned int bvec_per_io;	/* dio_skipped_bvec per I/O */
	const char *why;		/* the expectation, in words */
};

FIXTURE(track) {
	int fd;
	uint64_t base;			/* byte offset of block 0 */
	unsigned char *bufs;		/* QD slots of 4 pages */
	size_t bufs_len;
	io_context_t aio;
	bool aio_ok;
	struct io_uring ring;
	bool ring_ok;
	unsigned int n;			/* I/Os per direction */
	char file[128];
};

/* Per-I/O geometry. */
static size_t io_len(const FIXTURE_VARIANT(track) *v)
{
	return v->engine == E_VEC ? 2 * IO_SZ : IO_SZ;
}

static uint64_t io_off(FIXTURE_DATA(track) *self,
		       const FIXTURE_VARIANT(track) *v, unsigned int k)
{
	size_t len = io_len(v);

	return self->base + (uint64_t)(k % (NR_BLOCKS * IO_SZ / len)) * len;
}

/* Slot s: pages 0 and 2 of a 4-page cell (so preadv's iovecs are apart). */
static unsigned char *slot_page(FIXTURE_DATA(track) *self, unsigned int s,
				unsigned int part)
{
	return self->bufs + (size_t)s * 4 * PAGE_SZ + part * 2 * PAGE_SZ;
}

static uint64_t magic_for(bool second_pass)
{
	return DF_MAGIC ^ (second_pass ? 0x5a5a000000000000ULL : 0);
}

static void fill_slot(FIXTURE_DATA(track) *self, const FIXTURE_VARIANT(track) *v,
		      unsigned int s, uint64_t off, uint64_t magic)
{
	unsigned int parts = io_len(v) / IO_SZ, p;

	for (p = 0; p < parts; p++)
		df_pattern_fill(slot_page(self, s, p), IO_SZ,
				(off + p * IO_SZ) / 512, magic);
}

static bool check_slot(FIXTURE_DATA(track) *self, const FIXTURE_VARIANT(track) *v,
		       unsigned int s, uint64_t off, uint64_t magic)
{
	unsigned int parts = io_len(v) / IO_SZ, p;

	for (p = 0; p < parts; p++)
		if (df_pattern_check(slot_page(self, s, p), IO_SZ,
				     (off + p * IO_SZ) / 512, magic) >= 0)
			return false;
	return true;
}

struct phase {
	unsigned long ios, bad;
	int err;			/* first I/O error, positive errno */
	double secs;
};

/* One synchronous I/O from slot 0. Bytes or -errno. */
static ssize_t sync_io(FIXTURE_DATA(track) *self, const FIXTURE_VARIANT(track) *v,
		       bool wr, uint64_t off)
{
	ssize_t ret;

	if (v->engine == E_VEC) {
		struct iovec iov[2] = {
			{ slot_page(self, 0, 0), IO_SZ },
			{ slot_page(self, 0, 1), IO_SZ },
		};

		ret = wr ? pwritev(self->fd, iov, 2, off) :
			   preadv(self->fd, iov, 2, off);
	} else {
		ret = wr ? pwrite(self->fd, slot_page(self, 0, 0), IO_SZ, off) :
			   pread(self->fd, slot_page(self, 0, 0), IO_SZ, off);
	}
	return ret < 0 ? -errno : ret;
}

/* Submit up to QD I/Os [k, k+nr) and reap them all. 0 or -errno. */
static int batch_aio(FIXTURE_DATA(track) *self, bool wr, unsigned int nr,
		     const uint64_t *offs, long *res)
{
	struct timespec ts = { .tv_sec = IO_TIMEOUT_S };
	struct iocb cbs[QD], *cbp[QD];
	struct io_event ev[QD];
	unsigned int i, done = 0;
	int ret;

	for (i = 0; i < nr; i++) {
		if (wr)
			io_prep_pwrite(&cbs[i], self->fd, slot_page(self, i, 0),
				       IO_SZ, offs[i]);
		else
			io_prep_pread(&cbs[i], self->fd, slot_page(self, i, 0),
				      IO_SZ, offs[i]);
		cbs[i].data = (void *)(unsigned long)i;
		cbp[i] = &cbs[i];
	}
	ret = io_submit(self->aio, nr, cbp);
	if (ret != (int)nr)
		return ret < 0 ? ret : -EIO;	/* partial: fail, no leak check */
	while (done < nr) {
		ret = io_getevents(self->aio, 1, nr - done, ev, &ts);
		if (ret <= 0)
			return ret < 0 ? ret : -ETIMEDOUT;
		for (i = 0; i < (unsigned int)ret; i++)
			res[(unsigned long)ev[i].data] = (long)ev[i].res;
		done += ret;
	}
	return 0;
}

static int batch_uring(FIXTURE_DATA(track) *self, bool wr, bool fixed,
		       unsigned int nr, const uint64_t *offs, long *res)
{
	struct __kernel_timespec ts = { .tv_sec = IO_TIMEOUT_S };
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe;
	unsigned int i, done = 0;
	int ret;

	for (i = 0; i < nr; i++) {
		void *buf = slot_page(self, i, 0);

		sqe = io_uring_get_sqe(&self->ring);
		if (!sqe)
			return -EBUSY;
		if (fixed && wr)
			io_uring_prep_write_fixed(sqe, self->fd, buf, IO_SZ, offs[i], i);
		else if (fixed)
			io_uring_prep_read_fixed(sqe, self->fd, buf, IO_SZ, offs[i], i);
		else if (wr)
			io_uring_prep_write(sqe, self->fd, buf, IO_SZ, offs[i]);
		else
			io_uring_prep_read(sqe, self->fd, buf, IO_SZ, offs[i]);
		io_uring_sqe_set_data64(sqe, i);
	}
	ret = io_uring_submit(&self->ring);
	if (ret != (int)nr)
		return ret < 0 ? ret : -EIO;
	while (done < nr) {
		ret = io_uring_wait_cqe_timeout(&self->ring, &cqe, &ts);
		if (ret)
			return ret == -ETIME ? -ETIMEDOUT : ret;
		res[io_uring_cqe_get_data64(cqe)] = cqe->res;
		io_uring_cqe_seen(&self->ring, cqe);
		done++;
	}
	return 0;
}

/* N I/Os of one direction; data written with magic, or checked against it. */
static void run_phase(FIXTURE_DATA(track) *self, const FIXTURE_VARIANT(track) *v,
		      bool wr, uint64_t magic, struct phase *ph)
{
	double t0 = df_now();
	unsigned int k = 0, i;

	memset(ph, 0, sizeof(*ph));
	while (k < self->n && !ph->err) {
		unsigned int nr = 1;
		uint64_t offs[QD];
		long res[QD];
		int ret = 0;

		if (v->engine == E_AIO || v->engine == E_URING ||
		    v->engine == E_URING_FIXED)
			nr = self->n - k < QD ? self->n - k : QD;
		for (i = 0; i < nr; i++) {
			offs[i] = io_off(self, v, k + i);
			res[i] = -EINPROGRESS;
			if (wr)
				fill_slot(self, v, i, offs[i], magic);
			else
				memset(slot_page(self, i, 0), 0, IO_SZ);
		}
		if (!wr && v->engine == E_VEC)
			memset(slot_page(self, 0, 1), 0, IO_SZ);

		switch (v->engine) {
		case E_SYNC:
		case E_VEC:
			res[0] = sync_io(self, v, wr, offs[0]);
			break;
		case E_AIO:
			ret = batch_aio(self, wr, nr, offs, res);
			break;
		case E_URING:
		case E_URING_FIXED:
			ret = batch_uring(self, wr, v->engine == E_URING_FIXED,
					  nr, offs, res);
			break;
		}
		if (ret) {
			ph->err = -ret;
			break;
		}
		for (i = 0; i < nr; i++) {
			if (res[i] != (long)io_len(v)) {
				ph->err = res[i] < 0 ? -res[i] : EIO;
				break;
			}
			ph->ios++;
			if (!wr && !check_slot(self, v, i, offs[i], magic))
				ph->bad++;
		}
		k += nr;
	}
	ph->secs = df_now() - t0;
}

static int track_open_raw(FIXTURE_DATA(track) *self, char *why, size_t len)
{
	const char *dev = df_dev_path(0);
	uint64_t size;
	int lbs;

	self->fd = df_blkdev_open(dev, &size, &lbs);
	if (self->fd < 0) {
		snprintf(why, len, "%s: %s", dev, strerror(-self->fd));
		return self->fd == -ENOENT ? KSFT_SKIP : KSFT_FAIL;
	}
	if (size < RAW_TRACK_BASE + NR_BLOCKS * IO_SZ || lbs > (int)IO_SZ) {
		snprintf(why, len, "%s: %llu bytes, %d B blocks: unusable", dev,
			 (unsigned long long)size, lbs);
		return KSFT_SKIP;
	}
	self->base = RAW_TRACK_BASE;
	snprintf(self->file, sizeof(self->file), "%s", dev);
	return 0;
}

/* Make (once) and mount the filesystem on DEV1, at MNT_DIR. */
static int fs_prepare(enum dt_target t, char *why, size_t len)
{
	const char *dev = df_dev_path(1);
	const char *fstype = target_names[t];
	char *const ext4[] = {
		"mkfs.ext4", "-q", "-F", "-b", "4096", "-N", "4096", "-E",
		"lazy_itable_init=0,lazy_journal_init=1,nodiscard",
		(char *)dev, NULL
	};
	char *const xfs[] = {
		"mkfs.xfs", "-q", "-f", "-K", "-b", "size=4096",
		(char *)dev, NULL
	};
	/* busybox mkdosfs: FAT32, 8 sectors (4 KiB) per cluster on 2 GiB */
	char *const vfat1[] = { "mkfs.vfat", (char *)dev, NULL };
	char *const vfat2[] = { "mkdosfs", (char *)dev, NULL };
	struct stat st;
	double t0;
	int ret;

	if (stat(dev, &st) || !S_ISBLK(st.st_mode)) {
		snprintf(why, len, "%s: no such block device", dev);
		return KSFT_SKIP;
	}
	mkdir(MNT_DIR, 0755);
	if (shared->fs == (int)t && df_is_mountpoint(MNT_DIR))
		return 0;
	t0 = df_now();
	df_umount_retry(MNT_DIR, 50);
	if (shared->fs)
		kmsg("track: umount %s: %.1f s\n", target_names[shared->fs], df_now() - t0);
	if (df_is_mountpoint(MNT_DIR)) {
		snprintf(why, len, "cannot unmount %s: %s", MNT_DIR, strerror(errno));
		return KSFT_FAIL;
	}
	shared->fs = 0;
	t0 = df_now();
	switch (t) {
	case T_EXT4:
		ret = df_run(ext4);
		break;
	case T_XFS:
		ret = df_run(xfs);
		break;
	case T_VFAT:
		ret = df_run(vfat1);
		if (ret == -ENOENT)
			ret = df_run(vfat2);
		break;
	default:
		ret = -EINVAL;
	}
	if (ret == -ENOENT) {
		snprintf(why, len, "no mkfs for %s in the guest (tried %s)", fstype,
			 t == T_VFAT ? "mkfs.vfat, mkdosfs" :
			 t == T_EXT4 ? "mkfs.ext4" : "mkfs.xfs");
		return KSFT_SKIP;
	}
	if (ret) {
		snprintf(why, len, "mkfs %s on %s: %s %d", fstype, dev,
			 ret < 0 ? strerror(-ret) : "exit", ret);
		return KSFT_FAIL;
	}
	ksft_print_msg("mkfs %s on %s: %.1f s\n", fstype, dev, df_now() - t0);
	if (mount(dev, MNT_DIR, fstype, 0, NULL)) {
		ret = errno;
		snprintf(why, len, "mount -t %s %s %s: %s", fstype, dev, MNT_DIR,
			 strerror(ret));
		return ret == ENODEV ? KSFT_SKIP : KSFT_FAIL;
	}
	shared->fs = t;
	if (t == T_VFAT) {
		unsigned char bs[512];
		int fd = open(dev, O_RDONLY | O_CLOEXEC);

		if (fd >= 0 && pread(fd, bs, sizeof(bs), 0) == sizeof(bs))
			ksft_print_msg("vfat: %u-byte sectors, %u sectors per cluster\n",
				       bs[11] | bs[12] << 8, bs[13]);
		if (fd >= 0)
			close(fd);
	}
	return 0;
}

/* A written (allocated, not unwritten/hole) 1 MiB file, opened O_DIRECT. */
static int track_open_file(FIXTURE_DATA(track) *self, enum dt_target t,
			   char *why, size_t len)
{
	size_t bytes = NR_BLOCKS * IO_SZ, i;
	unsigned char *buf;
	int ret, fd;

	ret = fs_prepare(t, why, len);
	if (ret)
		return ret;
	snprintf(self->file, sizeof(self->file), "%s/" FILE_NAME, MNT_DIR);
	unlink(self->file);
	fd = open(self->file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(why, len, "create %s: %s", self->file, strerror(errno));
		return KSFT_FAIL;
	}
	buf = malloc(bytes);
	if (!buf) {
		close(fd);
		snprintf(why, len, "out of memory");
		return KSFT_FAIL;
	}
	for (i = 0; i < NR_BLOCKS; i++)
		df_pattern_fill(buf + i * IO_SZ, IO_SZ, i * IO_SZ / 512, 0);
	ret = pwrite(fd, buf, bytes, 0) == (ssize_t)bytes && !fsync(fd) ? 0 : -errno;
	free(buf);
	if (!ret && posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED))
		ret = 0;	/* only a page-cache hint */
	close(fd);
	if (ret) {
		snprintf(why, len, "fill %s: %s", self->file, strerror(-ret));
		return KSFT_FAIL;
	}
	self->fd = open(self->file, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (self->fd < 0) {
		ret = errno;
		snprintf(why, len, "open %s O_DIRECT: %s", self->file, strerror(ret));
		return ret == EINVAL ? KSFT_SKIP : KSFT_FAIL;
	}
	self->base = 0;
	return 0;
}

static int dt_track_setup(FIXTURE_DATA(track) *self,
			  const FIXTURE_VARIANT(track) *v, char *why, size_t len)
{
	unsigned int i;
	int ret;

	self->fd = -1;
	self->n = df_env_ulong("DIOFORK_TRACK_IOS", 256);
	if (!self->n)
		self->n = 1;
	if (!df_module_present()) {
		snprintf(why, len, "diofork module not loaded");
		return KSFT_SKIP;
	}
	ret = v->target == T_RAW ? track_open_raw(self, why, len) :
				   track_open_file(self, v->target, why, len);
	if (ret)
		return ret;
	self->bufs_len = QD * 4 * PAGE_SZ;
	self->bufs = map_prefaulted(self->bufs_len, false);
	if (!self->bufs) {
		snprintf(why, len, "mmap: %s", strerror(errno));
		return KSFT_FAIL;
	}
	switch (v->engine) {
	case E_AIO:
		ret = io_setup(QD, &self->aio);
		if (ret) {
			snprintf(why, len, "io_setup: %s", strerror(-ret));
			return ret == -ENOSYS ? KSFT_SKIP : KSFT_FAIL;
		}
		self->aio_ok = true;
		break;
	case E_URING:
	case E_URING_FIXED:
		ret = io_uring_queue_init(QD, &self->ring, 0);
		if (ret) {
			snprintf(why, len, "io_uring_queue_init: %s", strerror(-ret));
			return ret == -ENOSYS ? KSFT_SKIP : KSFT_FAIL;
		}
		self->ring_ok = true;
		if (v->engine == E_URING_FIXED) {
			struct iovec iov[QD];

			for (i = 0; i < QD; i++) {
				iov[i].iov_base = slot_page(self, i, 0);
				iov[i].iov_len = IO_SZ;
			}
			ret = io_uring_register_buffers(&self->ring, iov, QD);
			if (ret) {
				snprintf(why, len, "io_uring_register_buffers: %s",
					 strerror(-ret));
				return KSFT_FAIL;
			}
		}
		break;
	default:
		break;
	}
	ret = mode_set("observe");
	if (ret) {
		snprintf(why, len, "mode observe: %s", strerror(-ret));
		return ret == -EOPNOTSUPP ? KSFT_SKIP : KSFT_FAIL;
	}
	return 0;
}

static void dt_track_teardown(FIXTURE_DATA(track) *self)
{
	double t0 = df_now();

	mode_off_quiet();
	kmsg("track: mode off: %.1f s\n", df_now() - t0);
	if (self->ring_ok) {
		io_uring_unregister_buffers(&self->ring);
		io_uring_queue_exit(&self->ring);
	}
	if (self->aio_ok)
		io_destroy(self->aio);
	self->ring_ok = false;
	self->aio_ok = false;
	if (self->bufs)
		munmap(self->bufs, self->bufs_len);
	self->bufs = NULL;
	if (self->fd >= 0)
		close(self->fd);
	self->fd = -1;
	kmsg("track: teardown: %.1f s\n", df_now() - t0);
}

/*
 * Assert the counters of one phase; a, b: stats before and after (idle).
 * A read makes rec records; a write makes none and counts rec bios in
 * dio_skipped_write (COW can not lose a write: the module leaves it alone).
 */
static void check_phase(struct __test_metadata *_metadata,
			FIXTURE_DATA(track) *self, const FIXTURE_VARIANT(track) *v,
			bool wr, const struct phase *ph, int idle,
			const struct df_stats *a, const struct df_stats *b)
{
	const char *dir = wr ? "write" : "read";
	long long n = ph->ios, rec = n * v->records_per_io;
	long long want_rec = wr ? 0 : rec, want_skip = wr ? rec : 0;
	long long sub, comp, skip_wr, pages, skipped;
	static const char *const zero[] = {
		"forks", "forks_with_dio_inflight", "cow_on_dio_page",
		"cow_on_dio_page_child", "track_alloc_failures", "track_stale",
		"track_forced_release", "track_fork_raced", "track_fork_shared",
		"track_missed",
	};
	unsigned int i;

	sub = df_stats_delta(a, b, "dio_submitted_read");
	comp = df_stats_delta(a, b, "dio_completed_read");
	skip_wr = df_stats_delta(a, b, "dio_skipped_write");
	pages = df_stats_delta(a, b, "dio_pages_submitted");
	skipped = df_stats_delta(a, b, "dio_skipped_bvec");

	ksft_print_msg("%s %s via %s: %lu I/Os of %zu B in %.2f s: ",
		       target_names[v->target], dir, engine_names[v->engine],
		       ph->ios, io_len(v), ph->secs);
	printf("submitted_read %+lld completed_read %+lld (expect %lld) ",
	       sub, comp, want_rec);
	printf("skipped_write %+lld (expect %lld) ", skip_wr, want_skip);
	printf("pages_submitted %+lld (expect %lld) ",
	       pages, want_rec * v->pages_per_io);
	printf("skipped_bvec %+lld (expect %lld) kernel_pinned %+lld; ",
	       skipped, n * v->bvec_per_io,
	       df_stats_delta(a, b, "dio_kernel_pinned"));
	printf("gauges inflight=%llu pages_inflight=%llu\n",
	       df_stats_val(b, "dio_inflight"),
	       df_stats_val(b, "dio_pages_inflight"));
	print_deltas(dir, a, b);

	EXPECT_EQ(0, ph->err) TH_LOG("%s I/O error on %s: %s", dir, self->file,
				     strerror(ph->err));
	EXPECT_EQ((long long)self->n, n);
	EXPECT_EQ(0, ph->bad) TH_LOG("%lu reads returned the wrong data", ph->bad);
	EXPECT_EQ(0, idle) TH_LOG("gauges not back to 0 within %.0f s: dio_inflight=%llu dio_pages_inflight=%llu (%s)",
				  IDLE_TIMEOUT_S, df_stats_val(b, "dio_inflight"),
				  df_stats_val(b, "dio_pages_inflight"), strerror(-idle));
	EXPECT_EQ(want_rec, sub) TH_LOG("dio_submitted_read during %s I/O: %s",
					dir, v->why);
	EXPECT_EQ(want_rec, comp) TH_LOG("dio_completed_read during %s I/O: %s",
					 dir, v->why);
	EXPECT_EQ(want_skip, skip_wr) TH_LOG("dio_skipped_write during %s I/O: %s",
					     dir, v->why);
	EXPECT_EQ(want_rec * v->pages_per_io, pages) TH_LOG("dio_pages_submitted");
	EXPECT_EQ(n * v->bvec_per_io, skipped) TH_LOG("dio_skipped_bvec: %s", v->why);
	EXPECT_EQ(0, df_stats_val(b, "dio_inflight"));
	EXPECT_EQ(0, df_stats_val(b, "dio_pages_inflight"));
	for (i = 0; i < ARRAY_SIZE(zero); i++)
		EXPECT_EQ(0, df_stats_delta(a, b, zero[i]))
			TH_LOG("%s moved: %+lld", zero[i],
			       df_stats_delta(a, b, zero[i]));
}

#define TRACK(vname, tgt, eng, rec, pages, bvec, text)		\
	FIXTURE_VARIANT_ADD(track, vname) {				\
		.target = tgt, .engine = eng, .records_per_io = rec,	\
		.pages_per_io = pages, .bvec_per_io = bvec, .why = text	\
	}
#define ONE_BIO	"one bio (one record) per 4 KiB I/O"
#define FIXED	"registered buffer: untracked, one dio_skipped_bvec per iomap bio"
#define VEC_BIO	"one bio (one record, 2 pages) per 2 x 4 KiB preadv/pwritev"
#define RAW_FIXED "registered buffer: untracked; the blkdev async path bypasses bio_iov_iter_get_pages for bvecs"
#define LEGACY_BIO "legacy fs/direct-io.c: one bio per 4 KiB I/O inside a 4 KiB cluster"

TRACK(raw_sync, T_RAW, E_SYNC, 1, 1, 0, ONE_BIO);
TRACK(raw_vec, T_RAW, E_VEC, 1, 2, 0, VEC_BIO);
TRACK(raw_libaio, T_RAW, E_AIO, 1, 1, 0, ONE_BIO);
TRACK(raw_io_uring, T_RAW, E_URING, 1, 1, 0, ONE_BIO);
/*
 * Registered buffers are long-term pinned already: never tracked.  The raw
 * block device's async path sets a bvec iterator on the bio directly,
 * without bio_iov_iter_get_pages() (block/fops.c __blkdev_direct_IO_async),
 * so dio_skipped_bvec does not move there; iomap calls it, so it does.
 */
TRACK(raw_io_uring_fixed, T_RAW, E_URING_FIXED, 0, 1, 0, RAW_FIXED);
TRACK(ext4_sync, T_EXT4, E_SYNC, 1, 1, 0, ONE_BIO);
TRACK(ext4_libaio, T_EXT4, E_AIO, 1, 1, 0, ONE_BIO);
TRACK(ext4_io_uring, T_EXT4, E_URING, 1, 1, 0, ONE_BIO);
TRACK(ext4_io_uring_fixed, T_EXT4, E_URING_FIXED, 0, 1, 1, FIXED);
TRACK(xfs_sync, T_XFS, E_SYNC, 1, 1, 0, ONE_BIO);
TRACK(xfs_io_uring_fixed, T_XFS, E_URING_FIXED, 0, 1, 1, FIXED);
TRACK(vfat_sync, T_VFAT, E_SYNC, 1, 1, 0, LEGACY_BIO);

FIXTURE_SETUP(track)
{
	char why[256] = "";
	int ret;

	ret = dt_track_setup(self, variant, why, sizeof(why));
	if (ret == KSFT_SKIP)
		SKIP(return, "%s", why);
	ASSERT_EQ(0, ret) TH_LOG("%s", why);
}

FIXTURE_TEARDOWN(track)
{
	dt_track_teardown(self);
}

TEST_F_TIMEOUT(track, balance, 120)
{
	struct df_stats s0, s1, s2;
	struct phase wr, rd;
	int idle0, idle1, idle2;
	uint64_t magic = magic_for(variant->target == T_RAW);

	kmsg("track: %s via %s\n", self->file, engine_names[variant->engine]);
	ksft_print_msg("%s: %s via %s, %u I/Os per direction, mode observe\n",
		       df_kernel_release(), self->file, engine_names[variant->engine],
		       self->n);
	idle0 = df_wait_idle(&s0, IDLE_TIMEOUT_S);
	ASSERT_EQ(0, idle0) TH_LOG("not idle before the test: %s", strerror(-idle0));

	run_phase(self, variant, true, magic, &wr);
	idle1 = df_wait_idle(&s1, IDLE_TIMEOUT_S);
	if (idle1 == -EBADMSG)
		print_raw_stats();
	ASSERT_NE(-EBADMSG, idle1);
	check_phase(_metadata, self, variant, true, &wr, idle1, &s0, &s1);

	run_phase(self, variant, false, magic, &rd);
	idle2 = df_wait_idle(&s2, IDLE_TIMEOUT_S);
	if (idle2 == -EBADMSG)
		print_raw_stats();
	ASSERT_NE(-EBADMSG, idle2);
	check_phase(_metadata, self, variant, false, &rd, idle2, &s1, &s2);
}

/* ------------------------------------------------------------------ */
/* common: a fixture that only switches modes                          */
/* ------------------------------------------------------------------ */

struct loader {			/* MAP_SHARED between test and I/O child */
	volatile int started;	/* LOAD_QD reads submitted */
	volatile int stop;
	volatile unsigned long ios;
	volatile unsigned long forks;
	volatile int err;	/* positive errno */
	volatile int forker_stop;
};

/*
 * A thread of the loader forks children that exit at once, every
 * LOAD_FORK_US, while the main thread keeps its reads in flight: pin mode
 * takes its pins when a fork may share the pages (at the fork, or in the
 * records made while one runs), so without forks the tests below would see
 * no pin to balance.  A fork from the I/O thread itself found no read in
 * flight by the time it copied the mm in some runs: they complete in
 * 100 us.
 */
#define LOAD_FORK_US	2000

static void *loader_forker(void *arg)
{
	struct loader *ld = arg;
	pid_t pid;

	while (!ld->forker_stop) {
		pid = fork();
		if (pid == 0)
			_exit(0);
		if (pid < 0) {
			if (!ld->err)
				ld->err = errno;
			break;
		}
		waitpid(pid, NULL, 0);
		ld->forks++;
		usleep(LOAD_FORK_US);
	}
	return NULL;
}

/*
 * Child body: LOAD_QD O_DIRECT 4 KiB reads from DEV0 at base into private
 * anonymous pages, resubmitted as they complete, for `seconds` (bounded by
 * iterations too), then drained, with loader_forker() forking meanwhile.
 * Exit status 0 or 1.
 */
static int loader_main(struct loader *ld, uint64_t base, double seconds)
{
	struct timespec ts = { .tv_sec = IO_TIMEOUT_S };
	struct iocb cbs[LOAD_QD], *cbp[LOAD_QD];
	struct io_event ev[LOAD_QD];
	unsigned long iter;
	unsigned char *buf;
	io_context_t ctx = 0;
	int fd, ret, i, inflight;
	double end = df_now() + seconds;
	pthread_t forker;

	fd = df_blkdev_open(df_dev_path(0), NULL, NULL);
	if (fd < 0) {
		ld->err = -fd;
		return 1;
	}
	buf = map_prefaulted(LOAD_QD * PAGE_SZ, false);
	ret = buf ? io_setup(LOAD_QD, &ctx) : -ENOMEM;
	if (ret) {
		ld->err = -ret;
		return 1;
	}
	for (i = 0; i < LOAD_QD; i++) {
		io_prep_pread(&cbs[i], fd, buf + i * PAGE_SZ, IO_SZ,
			      base + (uint64_t)i * IO_SZ);
		cbs[i].data = &cbs[i];
		cbp[i] = &cbs[i];
	}
	ret = io_submit(ctx, LOAD_QD, cbp);
	if (ret != LOAD_QD) {
		ld->err = ret < 0 ? -ret : EIO;
		return 1;
	}
	inflight = LOAD_QD;
	ret = pthread_create(&forker, NULL, loader_forker, ld);
	if (ret) {
		ld->err = ret;
		return 1;
	}
	ld->started = 1;
	for (iter = 0; inflight && iter < 10000000UL; iter++) {
		bool more = !ld->stop && df_now() < end;
		int n = io_getevents(ctx, 1, LOAD_QD, ev, &ts);

		if (n <= 0) {
			ld->err = n < 0 ? -n : ETIMEDOUT;
			return 1;
		}
		inflight -= n;
		for (i = 0; i < n; i++) {
			struct iocb *cb = ev[i].data;

			if ((long)ev[i].res != (long)IO_SZ && !ld->err)
				ld->err = (long)ev[i].res < 0 ? -(long)ev[i].res : EIO;
			ld->ios++;
			if (!more)
				continue;
			ret = io_submit(ctx, 1, &cb);
			if (ret != 1) {
				ld->err = ret < 0 ? -ret : EIO;
				more = false;
				continue;
			}
			inflight++;
		}
	}
	ld->forker_stop = 1;
	pthread_join(forker, NULL);
	io_destroy(ctx);
	return ld->err ? 1 : 0;
}

static pid_t loader_start(struct loader *ld, uint64_t base, double seconds)
{
	pid_t pid;

	memset((void *)ld, 0, sizeof(*ld));
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid == 0)
		_exit(loader_main(ld, base, seconds));
	return pid;
}

/* Wait until the loader has its reads in flight: true, or false on timeout/exit. */
static bool loader_wait_started(struct loader *ld, pid_t pid, double timeout)
{
	double end = df_now() + timeout;
	int status;

	while (!ld->started) {
		if (df_now() > end || waitpid(pid, &status, WNOHANG) == pid)
			return false;
		usleep(1000);
	}
	return true;
}

/* ------------------------------------------------------------------ */
/* 2. mode switches under load                                         */
/* ------------------------------------------------------------------ */

#define MS_WORKERS	8
#define MS_AIO_QD	4

struct ms_ctx;

struct ms_worker {
	pthread_t thread;
	bool started;
	struct ms_ctx *c;
	int idx;
	bool aio, wr;
	unsigned char *buf;		/* MS_AIO_QD private pages */
	unsigned long ios;
	int err;
};

struct ms_ctx {
	int fd;
	volatile int stop;
	double hard_end;		/* workers stop by themselves then */
	struct ms_worker w[MS_WORKERS];
	pthread_t forker;
	bool forker_started;
	unsigned long forks;
	int fork_err;
	volatile unsigned char *touch;	/* a byte of worker 0's read buffer */
};

static uint64_t ms_off(struct ms_worker *w, unsigned long k)
{
	return RAW_LOAD_BASE + (uint64_t)w->idx * (1 << 20) + (k % 64) * IO_SZ;
}

static void *ms_worker_fn(void *arg)
{
	struct ms_worker *w = arg;
	struct ms_ctx *c = w->c;
	struct timespec ts = { .tv_sec = IO_TIMEOUT_S };
	struct iocb cbs[MS_AIO_QD], *cbp[MS_AIO_QD];
	struct io_event ev[MS_AIO_QD];
	io_context_t ctx = 0;
	unsigned long k = 0;
	int i, n, inflight = 0, ret;

	if (!w->aio) {
		for (k = 0; k < 10000000UL && !c->stop; k++) {
			ssize_t r;

			if (!(k & 63) && df_now() > c->hard_end)
				break;
			r = w->wr ? pwrite(c->fd, w->buf, IO_SZ, ms_off(w, k)) :
				    pread(c->fd, w->buf, IO_SZ, ms_off(w, k));
			if (r != (ssize_t)IO_SZ) {
				w->err = r < 0 ? errno : EIO;
				break;
			}
			w->ios++;
		}
		return NULL;
	}

	ret = io_setup(MS_AIO_QD, &ctx);
	if (ret) {
		w->err = -ret;
		return NULL;
	}
	for (i = 0; i < MS_AIO_QD; i++) {
		if (w->wr)
			io_prep_pwrite(&cbs[i], c->fd, w->buf + i * PAGE_SZ, IO_SZ,
				       ms_off(w, k++));
		else
			io_prep_pread(&cbs[i], c->fd, w->buf + i * PAGE_SZ, IO_SZ,
				      ms_off(w, k++));
		cbs[i].data = &cbs[i];
		cbp[i] = &cbs[i];
	}
	ret = io_submit(ctx, MS_AIO_QD, cbp);
	if (ret != MS_AIO_QD) {
		w->err = ret < 0 ? -ret : EIO;
		if (ret > 0)
			inflight = ret;
		goto drain;
	}
	inflight = MS_AIO_QD;
	while (inflight && k < 10000000UL) {
		bool more = !c->stop && df_now() < c->hard_end;

		n = io_getevents(ctx, 1, MS_AIO_QD, ev, &ts);
		if (n <= 0) {
			w->err = n < 0 ? -n : ETIMEDOUT;
			break;
		}
		inflight -= n;
		for (i = 0; i < n; i++) {
			struct iocb *cb = ev[i].data;

			if ((long)ev[i].res != (long)IO_SZ && !w->err)
				w->err = (long)ev[i].res < 0 ? -(long)ev[i].res : EIO;
			w->ios++;
			if (!more || w->err)
				continue;
			cb->u.c.offset = ms_off(w, k++);
			if (io_submit(ctx, 1, &cb) == 1)
				inflight++;
			else
				w->err = EIO;
		}
	}
drain:
	while (inflight > 0) {
		n = io_getevents(ctx, 1, MS_AIO_QD, ev, &ts);
		if (n <= 0) {
			if (!w->err)
				w->err = ETIMEDOUT;
			break;
		}
		inflight -= n;
		w->ios += n;
	}
	io_destroy(ctx);
	return NULL;
}

/* fork(); the parent writes a byte of a DIO target page (COW); waitpid. */
static void *ms_fork_fn(void *arg)
{
	struct ms_ctx *c = arg;
	unsigned long i;
	int status;
	pid_t pid;

	for (i = 0; i < 1000000UL && !c->stop && df_now() < c->hard_end; i++) {
		pid = fork();
		if (pid == 0)
			_exit(0);
		if (pid < 0) {
			if (errno == EAGAIN || errno == ENOMEM) {
				usleep(1000);
				continue;
			}
			c->fork_err = errno;
			break;
		}
		(*c->touch)++;
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		c->forks++;
	}
	return NULL;
}

FIXTURE(modeswitch) {
	struct ms_ctx c;
	unsigned char *bufs;
};

FIXTURE_SETUP(modeswitch)
{
	self->c.fd = -1;
	if (!df_module_present())
		SKIP(return, "diofork module not loaded");
	self->c.fd = df_blkdev_open(df_dev_path(0), NULL, NULL);
	if (self->c.fd == -ENOENT)
		SKIP(return, "%s: no such device", df_dev_path(0));
	ASSERT_LE(0, self->c.fd) TH_LOG("%s: %s", df_dev_path(0),
					strerror(-self->c.fd));
	self->bufs = map_prefaulted(MS_WORKERS * MS_AIO_QD * PAGE_SZ, false);
	ASSERT_NE(NULL, self->bufs);
	pins_baseline();
}

FIXTURE_TEARDOWN(modeswitch)
{
	mode_off_quiet();
	if (self->c.fd >= 0)
		close(self->c.fd);
	if (self->bufs)
		munmap(self->bufs, MS_WORKERS * MS_AIO_QD * PAGE_SZ);
}

struct sw_stats {
	unsigned long n, errs;
	int first_err;
	const char *first_mode;
	double total, max;
};

static void sw_one(struct sw_stats *s, const char *mode)
{
	double t;
	int ret;

	kmsg("switch %lu: -> %s\n", s->n + 1, mode);
	t = df_now();
	ret = mode_set(mode);

	t = df_now() - t;
	s->n++;
	s->total += t;
	if (t > s->max)
		s->max = t;
	if (ret && !s->errs++) {
		s->first_err = ret;
		s->first_mode = mode;
	}
}

TEST_F_TIMEOUT(modeswitch, under_load, 240)
{
	struct ms_ctx *c = &self->c;
	unsigned long cycles = df_env_ulong("DIOFORK_TRACK_SWITCHES", 100);
	unsigned long pcycles = df_env_ulong("DIOFORK_TRACK_PIN_SWITCHES", 25);
	unsigned long obs_cycles = 0, pin_cycles = 0, total_ios = 0;
	struct sw_stats sw = { 0 };
	struct df_stats s0, s1;
	long long acq, rel;
	double t0, budget_end;
	bool pin_ok = false;
	int i, ret, idle, stuck = 0, werr;

	ASSERT_EQ(0, df_wait_idle(&s0, IDLE_TIMEOUT_S));
	t0 = df_now();
	/* observe cycles get up to 45 s, pin cycles up to 30 s more */
	budget_end = t0 + 45;
	c->hard_end = t0 + 110;
	c->touch = self->bufs + PAGE_SZ - 1;
	for (i = 0; i < MS_WORKERS; i++) {
		struct ms_worker *w = &c->w[i];

		w->c = c;
		w->idx = i;
		w->aio = i >= MS_WORKERS / 2;
		w->wr = i & 1;
		w->buf = self->bufs + (size_t)i * MS_AIO_QD * PAGE_SZ;
		ret = pthread_create(&w->thread, NULL, ms_worker_fn, w);
		ASSERT_EQ(0, ret);
		w->started = true;
	}
	ASSERT_EQ(0, pthread_create(&c->forker, NULL, ms_fork_fn, c));
	c->forker_started = true;
	usleep(200000);

	kmsg("modeswitch: %lu off/observe cycles under load\n", cycles);
	for (; obs_cycles < cycles && df_now() < budget_end; obs_cycles++) {
		if (obs_cycles && !(obs_cycles % 25))
			ksft_print_msg("%lu off/observe cycles, %.1f s\n",
				       obs_cycles, df_now() - t0);
		sw_one(&sw, "observe");
		sw_one(&sw, "off");
	}
	kmsg("modeswitch: %lu off/observe cycles done\n", obs_cycles);
	ret = mode_set("pin");
	if (ret == -EOPNOTSUPP) {
		ksft_print_msg("pin mode not accepted (EOPNOTSUPP): pin cycles skipped\n");
	} else {
		pin_ok = !ret;
		if (ret && !sw.errs++) {
			sw.first_err = ret;
			sw.first_mode = "pin";
		}
		mode_set("off");
		budget_end = df_now() + 30;
		kmsg("modeswitch: %lu observe/pin cycles under load\n", pcycles);
		for (; pin_ok && pin_cycles < pcycles && df_now() < budget_end;
		     pin_cycles++) {
			if (pin_cycles && !(pin_cycles % 25))
				ksft_print_msg("%lu observe/pin cycles, %.1f s\n",
					       pin_cycles, df_now() - t0);
			sw_one(&sw, "observe");
			sw_one(&sw, "pin");
			sw_one(&sw, "observe");
			sw_one(&sw, "off");
		}
		kmsg("modeswitch: %lu observe/pin cycles done\n", pin_cycles);
	}

	c->stop = 1;
	{
		struct timespec dl;

		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += 30;
		for (i = 0; i < MS_WORKERS; i++)
			if (c->w[i].started &&
			    pthread_timedjoin_np(c->w[i].thread, NULL, &dl)) {
				stuck++;
				ksft_print_msg("worker %d (%s %s) ", i,
					       c->w[i].aio ? "libaio" : "sync",
					       c->w[i].wr ? "write" : "read");
				printf("did not finish within 30 s: stuck I/O\n");
			}
		if (c->forker_started &&
		    pthread_timedjoin_np(c->forker, NULL, &dl)) {
			stuck++;
			ksft_print_msg("fork thread did not finish within 30 s\n");
		}
	}
	mode_set("off");
	idle = df_wait_idle(&s1, IDLE_TIMEOUT_S);
	for (i = 0; i < MS_WORKERS; i++) {
		total_ios += c->w[i].ios;
		ksft_print_msg("worker %d %s %s: %lu I/Os, err %d\n", i,
			       c->w[i].aio ? "libaio QD4" : "sync",
			       c->w[i].wr ? "write" : "read", c->w[i].ios,
			       c->w[i].err);
	}
	ksft_print_msg("%.1f s: %lu off/observe cycles, %lu observe/pin cycles, ",
		       df_now() - t0, obs_cycles, pin_cycles);
	printf("%lu switches (avg %.1f ms, max %.1f ms, %lu errors), ",
	       sw.n, sw.n ? 1000 * sw.total / sw.n : 0, 1000 * sw.max,
	       sw.errs);
	printf("%lu I/Os, %lu forks\n", total_ios, c->forks);
	if (idle != -EBADMSG)
		print_deltas("modeswitch", &s0, &s1);
	else
		print_raw_stats();

	ASSERT_EQ(0, stuck) TH_LOG("threads stuck after the switches");
	EXPECT_EQ(0, sw.errs) TH_LOG("%lu mode switches failed, first: %s -> %s",
				     sw.errs, sw.first_mode, strerror(-sw.first_err));
	EXPECT_EQ(cycles, obs_cycles)
		TH_LOG("only %lu of %lu off/observe cycles in 45 s (slowest switch %.1f s)",
		       obs_cycles, cycles, sw.max);
	if (pin_ok)
		EXPECT_EQ(pcycles, pin_cycles) TH_LOG("only %lu of %lu observe/pin cycles in 30 s",
						      pin_cycles, pcycles);
	for (i = 0, werr = -1; i < MS_WORKERS; i++)
		if (c->w[i].err && werr < 0)
			werr = i;
	EXPECT_EQ(-1, werr) TH_LOG("worker %d: %s", werr,
				   strerror(c->w[werr < 0 ? 0 : werr].err));
	EXPECT_EQ(0, c->fork_err) TH_LOG("fork: %s", strerror(c->fork_err));
	EXPECT_LT(0, c->forks);
	EXPECT_LT(0, total_ios);
	EXPECT_EQ(0, idle) TH_LOG("gauges not 0 within %.0f s: dio_inflight=%llu dio_pages_inflight=%llu",
				  IDLE_TIMEOUT_S, df_stats_val(&s1, "dio_inflight"),
				  df_stats_val(&s1, "dio_pages_inflight"));
	/*
	 * Every DIO path here is hooked and each I/O takes well under a
	 * second: a record found still attached when its bio is reused
	 * (track_stale) or still there 5 s after its hooks went
	 * (track_forced_release) is a page release the module missed.
	 */
	EXPECT_EQ(0, df_stats_delta(&s0, &s1, "track_stale"))
		TH_LOG("track_stale %+lld: __bio_release_pages() of tracked bios missed",
		       df_stats_delta(&s0, &s1, "track_stale"));
	EXPECT_EQ(0, df_stats_delta(&s0, &s1, "track_forced_release"))
		TH_LOG("track_forced_release %+lld: records outlived the 5 s drain of a mode switch",
		       df_stats_delta(&s0, &s1, "track_forced_release"));
	EXPECT_EQ(df_stats_delta(&s0, &s1, "pin_pages_pinned"),
		  df_stats_delta(&s0, &s1, "pin_pages_unpinned"))
		TH_LOG("pin_pages_pinned %+lld != pin_pages_unpinned %+lld",
		       df_stats_delta(&s0, &s1, "pin_pages_pinned"),
		       df_stats_delta(&s0, &s1, "pin_pages_unpinned"));
	EXPECT_TRUE(pins_balanced(&acq, &rel, PIN_TIMEOUT_S))
		TH_LOG("nr_foll_pin_acquired %lld != nr_foll_pin_released %lld",
		       acq, rel);
	ksft_print_msg("nr_foll_pin_acquired %lld nr_foll_pin_released %lld\n",
		       acq, rel);
}

/* ------------------------------------------------------------------ */
/* 4. SIGKILL with I/O in flight                                       */
/* ------------------------------------------------------------------ */

FIXTURE_VARIANT(kill) {
	const char *mode;
};

FIXTURE(kill) {
	struct loader *ld;
};

FIXTURE_VARIANT_ADD(kill, observe) { .mode = "observe" };
FIXTURE_VARIANT_ADD(kill, pin) { .mode = "pin" };

FIXTURE_SETUP(kill)
{
	struct stat st;
	int ret;

	if (!df_module_present())
		SKIP(return, "diofork module not loaded");
	if (stat(df_dev_path(0), &st))
		SKIP(return, "%s: no such device", df_dev_path(0));
	self->ld = map_prefaulted(sizeof(*self->ld), true);
	ASSERT_NE(NULL, self->ld);
	pins_baseline();
	ret = mode_set(variant->mode);
	if (ret == -EOPNOTSUPP)
		SKIP(return, "mode %s not accepted (EOPNOTSUPP)", variant->mode);
	ASSERT_EQ(0, ret) TH_LOG("mode %s: %s", variant->mode, strerror(-ret));
}

FIXTURE_TEARDOWN(kill)
{
	mode_off_quiet();
	if (self->ld)
		munmap(self->ld, sizeof(*self->ld));
}

TEST_F_TIMEOUT(kill, sigkill_inflight, 150)
{
	unsigned long max_iter = df_env_ulong("DIOFORK_TRACK_KILLS", 100), it;
	unsigned long not_started = 0, early_exit = 0, ios = 0, forks = 0;
	uint64_t rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
	struct df_stats s0, s1;
	long long acq, rel, pinned, unpinned;
	double t0 = df_now(), peak_wait = 0;
	int idle, status, ret;
	char kmode[DF_MODE_NAME_MAX] = "?";

	ASSERT_EQ(0, df_wait_idle(&s0, IDLE_TIMEOUT_S));
	df_mode_get(kmode, sizeof(kmode));
	kmsg("kill: mode %s, up to %lu SIGKILLs\n", kmode, max_iter);
	for (it = 0; it < max_iter && df_now() - t0 < 60; it++) {
		pid_t pid = loader_start(self->ld, RAW_KILL_BASE, 30);
		double tk;

		ASSERT_LT(0, pid) TH_LOG("fork: %s", strerror(errno));
		if (!loader_wait_started(self->ld, pid, 5))
			not_started++;
		usleep(df_rng_next(&rng) % 3000);
		kill(pid, SIGKILL);
		tk = df_now();
		ret = wait_bounded(pid, &status, 20);
		ASSERT_EQ(0, ret) TH_LOG("iteration %lu: SIGKILLed child not reaped within 20 s: I/O stuck",
					 it);
		if (df_now() - tk > peak_wait)
			peak_wait = df_now() - tk;
		if (!WIFSIGNALED(status)) {
			early_exit++;
			ksft_print_msg("iteration %lu: child exited %d before the kill (err %d)\n",
				       it, WIFEXITED(status) ? WEXITSTATUS(status) : -1,
				       self->ld->err);
		}
		ios += self->ld->ios;
		forks += self->ld->forks;
	}
	idle = df_wait_idle(&s1, IDLE_TIMEOUT_S);
	pinned = df_stats_delta(&s0, &s1, "pin_pages_pinned");
	unpinned = df_stats_delta(&s0, &s1, "pin_pages_unpinned");
	ksft_print_msg("mode %s: %lu SIGKILLs in %.1f s ",
		       kmode, it, df_now() - t0);
	printf("(%lu I/Os reaped and %lu forks before the kill, slowest reap %.3f s); ",
	       ios, forks, peak_wait);
	printf("reads submitted %+lld completed %+lld; ",
	       df_stats_delta(&s0, &s1, "dio_submitted_read"),
	       df_stats_delta(&s0, &s1, "dio_completed_read"));
	printf("pin_pages pinned %+lld unpinned %+lld; ", pinned, unpinned);
	printf("gauges inflight=%llu pages=%llu\n",
	       df_stats_val(&s1, "dio_inflight"),
	       df_stats_val(&s1, "dio_pages_inflight"));
	if (idle != -EBADMSG)
		print_deltas("kill", &s0, &s1);
	else
		print_raw_stats();

	EXPECT_EQ(0, not_started) TH_LOG("%lu children never had their reads in flight",
					 not_started);
	EXPECT_EQ(0, early_exit);
	EXPECT_LE(10, it);
	EXPECT_EQ(0, idle) TH_LOG("gauges not 0 within %.0f s after the kills: dio_inflight=%llu dio_pages_inflight=%llu",
				  IDLE_TIMEOUT_S, df_stats_val(&s1, "dio_inflight"),
				  df_stats_val(&s1, "dio_pages_inflight"));
	EXPECT_EQ(df_stats_delta(&s0, &s1, "dio_submitted_read"),
		  df_stats_delta(&s0, &s1, "dio_completed_read") +
		  df_stats_delta(&s0, &s1, "track_forced_release"))
		TH_LOG("records made != records retired");
	EXPECT_EQ(0, df_stats_delta(&s0, &s1, "track_stale"))
		TH_LOG("track_stale %+lld: __bio_release_pages() of tracked bios missed",
		       df_stats_delta(&s0, &s1, "track_stale"));
	EXPECT_EQ(pinned, unpinned) TH_LOG("pin_pages_pinned != pin_pages_unpinned");
	/* the loader forks with its reads in flight: pin must have pinned */
	if (!strcmp(kmode, "pin") && !df_kernel_pins_dio())
		EXPECT_LT(0, pinned) TH_LOG("pin took no pin in %lu forks with reads in flight",
					    forks);
	EXPECT_TRUE(pins_balanced(&acq, &rel, PIN_TIMEOUT_S))
		TH_LOG("nr_foll_pin_acquired %lld != nr_foll_pin_released %lld",
		       acq, rel);
	ksft_print_msg("nr_foll_pin_acquired %lld nr_foll_pin_released %lld\n",
		       acq, rel);
}

/* ------------------------------------------------------------------ */
/* 3. rmmod with I/O in flight (last: it reloads the module)           */
/* ------------------------------------------------------------------ */

FIXTURE_VARIANT(rmmod) {
	const char *mode;
};

FIXTURE(rmmod) {
	struct loader *ld;
	pid_t pid;
};

FIXTURE_VARIANT_ADD(rmmod, observe) { .mode = "observe" };
FIXTURE_VARIANT_ADD(rmmod, pin) { .mode = "pin" };

FIXTURE_SETUP(rmmod)
{
	struct stat st;
	int ret;

	self->pid = -1;
	if (!df_module_present())
		SKIP(return, "diofork module not loaded");
	if (stat(df_dev_path(0), &st))
		SKIP(return, "%s: no such device", df_dev_path(0));
	/* Never unload what cannot be loaded back. */
	if (stat(df_ko_path(), &st))
		SKIP(return, "%s: %s (set DIOFORK_KO)", df_ko_path(), strerror(errno));
	self->ld = map_prefaulted(sizeof(*self->ld), true);
	ASSERT_NE(NULL, self->ld);
	pins_baseline();
	ret = mode_set(variant->mode);
	if (ret == -EOPNOTSUPP)
		SKIP(return, "mode %s not accepted (EOPNOTSUPP)", variant->mode);
	ASSERT_EQ(0, ret) TH_LOG("mode %s: %s", variant->mode, strerror(-ret));
}

FIXTURE_TEARDOWN(rmmod)
{
	int status;

	if (self->pid > 0) {
		kill(self->pid, SIGKILL);
		wait_bounded(self->pid, &status, 20);
	}
	mode_off_quiet();
	if (self->ld)
		munmap(self->ld, sizeof(*self->ld));
}

TEST_F_TIMEOUT(rmmod, inflight, 150)
{
	static const char *const files[] = { "mode", "stats", "reset", "kernel" };
	struct df_stats s0, s1;
	unsigned long ios_at_rmmod, ios_at_insmod = 0;
	double t_rm = 0, t_ins = 0;
	long long acq, rel;
	char mode[DF_MODE_NAME_MAX] = "", path[128], kmode[64] = "";
	int rm, ins = -1, status, ret, idle;
	unsigned int i;
	bool unloaded, want_pins;

	ASSERT_EQ(0, df_stats_read(&s0));
	self->pid = loader_start(self->ld, RAW_KILL_BASE, 2.5);
	ASSERT_LT(0, self->pid);
	ASSERT_TRUE(loader_wait_started(self->ld, self->pid, 5))
		TH_LOG("reads never in flight (err %d)", self->ld->err);
	/*
	 * until the module has records in flight (bounded), and in pin mode
	 * has pinned some at the loader's forks
	 */
	want_pins = !strcmp(variant->mode, "pin") && !df_kernel_pins_dio();
	for (i = 0; i < 200; i++) {
		ASSERT_EQ(0, df_stats_read(&s1));
		if (df_stats_val(&s1, "dio_inflight") && self->ld->ios >= LOAD_QD &&
		    (!want_pins || df_stats_delta(&s0, &s1, "pin_pages_pinned") > 0))
			break;
		usleep(10000);
	}
	if (want_pins)
		EXPECT_LT(0, df_stats_delta(&s0, &s1, "pin_pages_pinned"))
			TH_LOG("pin took no pin in %lu forks with reads in flight",
			       self->ld->forks);
	ksft_print_msg("mode %s, %u reads in flight (dio_inflight=%llu), %lu done: rmmod diofork\n",
		       variant->mode, LOAD_QD, df_stats_val(&s1, "dio_inflight"),
		       self->ld->ios);
	print_deltas("before rmmod", &s0, &s1);

	ios_at_rmmod = self->ld->ios;
	kmsg("rmmod: mode %s, rmmod diofork with reads in flight\n", variant->mode);
	rm = run_bounded(df_do_rmmod, NULL, 60, &t_rm);
	ASSERT_NE(-ETIMEDOUT, rm) TH_LOG("rmmod diofork hung for %.0f s with I/O in flight",
					 t_rm);
	unloaded = rm == 0;
	ksft_print_msg("rmmod: %s after %.3f s\n",
		       rm == 0 ? "unloaded" : strerror(rm), t_rm);
	if (unloaded) {
		ios_at_insmod = self->ld->ios;
		ins = run_bounded(df_do_insmod, (void *)df_ko_path(), 60, &t_ins);
		ksft_print_msg("insmod %s: %s after %.3f s\n", df_ko_path(),
			       ins == 0 ? "ok" : ins == -ETIMEDOUT ? "hung" : strerror(ins),
			       t_ins);
	}
	ret = wait_bounded(self->pid, &status, 20);
	ASSERT_EQ(0, ret) TH_LOG("I/O child not done within 20 s: stuck I/O");
	self->pid = -1;
	ksft_print_msg("I/O child: %lu reads (%lu before rmmod, %lu before insmod), ",
		       self->ld->ios, ios_at_rmmod, ios_at_insmod);
	printf("exit %d, err %d\n",
	       WIFEXITED(status) ? WEXITSTATUS(status) : -1, self->ld->err);

	EXPECT_TRUE(rm == 0 || rm == EBUSY || rm == EWOULDBLOCK)
		TH_LOG("rmmod: unexpected error %d (%s)", rm,
		       rm > 0 && rm < 128 ? strerror(rm) : "?");
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
		TH_LOG("I/O child failed: err %d (%s)", self->ld->err,
		       strerror(self->ld->err));
	EXPECT_LT(ios_at_rmmod, self->ld->ios) TH_LOG("no I/O after the rmmod");
	if (unloaded) {
		ASSERT_EQ(0, ins) TH_LOG("insmod %s failed: %s", df_ko_path(),
					 ins > 0 ? strerror(ins) : "hung");
		for (i = 0; i < ARRAY_SIZE(files); i++) {
			struct stat st;

			snprintf(path, sizeof(path), DF_DEBUGFS_DIR "/%s", files[i]);
			EXPECT_EQ(0, stat(path, &st)) TH_LOG("%s missing after insmod", path);
		}
		EXPECT_EQ(0, df_mode_get(mode, sizeof(mode)));
		EXPECT_STREQ("off", mode);
		if (!df_kernel_get("mode", kmode, sizeof(kmode)))
			EXPECT_STREQ("off", kmode);
		ksft_print_msg("after insmod: mode %s, kernel file mode: %s\n", mode, kmode);
	} else {
		ksft_print_msg("module stayed loaded (%s): mode back to off\n",
			       strerror(rm));
		EXPECT_EQ(0, mode_set("off"));
	}
	idle = df_wait_idle(&s1, IDLE_TIMEOUT_S);
	EXPECT_EQ(0, idle) TH_LOG("gauges not 0: dio_inflight=%llu",
				  df_stats_val(&s1, "dio_inflight"));
	EXPECT_TRUE(pins_balanced(&acq, &rel, PIN_TIMEOUT_S))
		TH_LOG("nr_foll_pin_acquired %lld != nr_foll_pin_released %lld: leaked pin",
		       acq, rel);
	ksft_print_msg("nr_foll_pin_acquired %lld nr_foll_pin_released %lld\n",
		       acq, rel);
}

/* ------------------------------------------------------------------ */

static void cleanup_at_exit(void)
{
	if (shared && shared->fs)
		df_umount_retry(MNT_DIR, 50);
	rmdir(MNT_DIR);
	mode_off_quiet();
}

int main(int argc, char **argv)
{
	int ret;

	if (!df_module_present())
		ksft_exit_skip("diofork module not loaded (no %s)\n", DF_DEBUGFS_DIR);
	shared = map_prefaulted(sizeof(*shared), true);
	if (!shared)
		ksft_exit_fail_msg("mmap: %s\n", strerror(errno));
	atexit(cleanup_at_exit);
	ret = test_harness_run(argc, argv);
	cleanup_at_exit();
	return ret;
}
