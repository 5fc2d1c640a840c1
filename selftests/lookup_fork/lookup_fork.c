// SPDX-License-Identifier: GPL-2.0
/*
 * lookup_fork - a fork() inside a DIO read's page lookup, made to happen.
 *
 * pin and lock protect a read from its record on, made when its page
 * lookup returns.  A fork inside the lookup can share a page before the
 * record is there; both modes then see write_protect_seq move, find the
 * page shared and do the lookup again (lookups_redone).  dio_fork_race hits
 * that window by chance; this test puts the fork in it every time:
 *
 *  - a private anonymous buffer of two pages: page 0 present (written),
 *    page 1 missing and registered with userfaultfd;
 *  - a thread reads 8 KiB O_DIRECT into it from a dm-delay device (read
 *    delay $DIOFORK_LOOKUP_DELAY_MS, 1000 ms).  Its lookup takes page 0 and
 *    blocks in the userfault on page 1;
 *  - the main thread sees the fault and forks (the child keeps page 0 COW-
 *    shared and sleeps);
 *  - it writes one byte of page 0, a COW fault: variant in_lookup before it
 *    fills page 1 (UFFDIO_COPY), with the lookup still blocked, so no
 *    record exists yet; variant in_flight after, 200 ms later, with the bio
 *    in dm-delay;
 *  - it waits for the read and checks both pages against the device's
 *    pattern; the child checks that its page 0 still holds zeros.
 *
 * On a kernel whose DIO takes plain references (6.1), with nothing to stop
 * it (mode off or observe), the parent's write breaks COW and gets a copy,
 * and the read lands in the page the child holds: the parent loses page 0
 * and the child sees the device's data, by construction every time.  The
 * test requires it at least once (it has the power to see the loss).  In
 * pin and lock, or on a kernel that pins DIO itself (6.12), neither may
 * happen; on 6.1 pin and lock must also have redone at least one lookup
 * per iteration and given up on none.  (lock leaves the child's copy alone
 * here only because the redo moves the read off the shared page: with a
 * fork after the record, lock lets the read land in the shared page, which
 * the child sees, and makes the parent's COW wait for it.)  Before the redo,
 * lock lost 5 of 5 reads in_lookup, and pin without it 5 of 5 in_flight.
 *
 * $DIOFORK_LOOKUP_ITERS (5) iterations.  An in_flight one counts only if the
 * read was still in flight when the parent wrote (checked after the
 * write); at least 3 must.  Mode drain: SKIP (drain holds the fork off the
 * lookup, which here waits for the forking thread: a deadlock until its
 * timeout).  Prints every iteration's outcome and the counts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "dftest.h"

#define PAGE_SZ		4096
#define IO_SZ		(2 * PAGE_SZ)
#define DM_NAME		"diofork_lookup_delay"
#define DM_BASE_SECTOR	(3ULL << 20)	/* 1.5 GiB into DEV1 */
#define DM_SECTORS	(1ULL << 11)	/* 1 MiB */
#define WRITE_AFTER_MS	200
#define MIN_COUNTED	3
#define STORE_AT	100	/* the byte of page 0 the parent writes */

/* What the child found in its page 0 (its exit status). */
enum { CHILD_ZEROS = 0, CHILD_DEVICE_DATA = 1, CHILD_OTHER = 2 };

enum write_at { WRITE_IN_LOOKUP, WRITE_IN_FLIGHT };

struct reader {
	pthread_t thread;
	int fd;
	unsigned char *buf;
	uint64_t off;
	ssize_t res;
	int err;
	volatile int done;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;

	r->res = pread(r->fd, r->buf, IO_SZ, r->off);
	r->err = errno;
	__atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static bool all_zero(const unsigned char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/* One iteration's outcome. */
struct it {
	bool counted;		/* the read was in flight at the parent's write */
	bool parent_lost;	/* page 0 or 1 misses the device's data */
	int child;		/* CHILD_* */
	char err[160];		/* setup or IO failure: the test fails */
};

/*
 * Does the parent's buffer miss the read's data?  Not counting the byte it
 * stored: a store that lock held until the read was done lands after it.
 */
static bool parent_lost(const unsigned char *buf, uint64_t key)
{
	static unsigned char want[IO_SZ];
	size_t i;

	df_pattern_fill_sectors(want, IO_SZ, key, DF_MAGIC);
	for (i = 0; i < IO_SZ; i++)
		if (i != STORE_AT && buf[i] != want[i])
			return true;
	return false;
}

static int uffd_open(void *page, char *err, size_t len)
{
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)page, .len = PAGE_SZ },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	struct uffdio_api api = { .api = UFFD_API };
	int uffd;

	uffd = syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0) {
		snprintf(err, len, "userfaultfd: %s", strerror(errno));
		return -1;
	}
	if (ioctl(uffd, UFFDIO_API, &api) || ioctl(uffd, UFFDIO_REGISTER, &reg)) {
		snprintf(err, len, "userfaultfd setup: %s", strerror(errno));
		close(uffd);
		return -1;
	}
	return uffd;
}

/* Wait for the reader's lookup to fault on @page. */
static int uffd_wait_fault(int uffd, void *page, char *err, size_t len)
{
	struct pollfd pfd = { .fd = uffd, .events = POLLIN };
	struct uffd_msg msg;

	if (poll(&pfd, 1, 10000) != 1) {
		snprintf(err, len, "no userfault within 10 s (lookup did not block)");
		return -1;
	}
	if (read(uffd, &msg, sizeof(msg)) != sizeof(msg) ||
	    msg.event != UFFD_EVENT_PAGEFAULT ||
	    (msg.arg.pagefault.address & ~(uint64_t)(PAGE_SZ - 1)) !=
	    (uintptr_t)page) {
		snprintf(err, len, "unexpected userfaultfd message");
		return -1;
	}
	return 0;
}

static void child_main(int rfd, const unsigned char *page0, uint64_t key)
{
	char c;

	/* the parent says when the read is done */
	if (read(rfd, &c, 1) != 1)
		_exit(CHILD_OTHER);
	if (all_zero(page0, PAGE_SZ))
		_exit(CHILD_ZEROS);
	if (df_pattern_check_sectors(page0, PAGE_SZ, key, DF_MAGIC) < 0)
		_exit(CHILD_DEVICE_DATA);
	_exit(CHILD_OTHER);
}

static void run_iteration(int fd, unsigned int i, unsigned long delay_ms,
			  enum write_at at, struct it *it)
{
	static unsigned char zeros[PAGE_SZ];
	uint64_t off = (uint64_t)i * IO_SZ;
	uint64_t key = DM_BASE_SECTOR + off / 512;
	struct uffdio_copy copy = { .len = PAGE_SZ };
	struct reader r = { .fd = fd, .off = off };
	int uffd = -1, p[2] = { -1, -1 }, status;
	bool started = false;
	unsigned char *buf;
	pid_t pid = -1;

	memset(it, 0, sizeof(*it));
	buf = mmap(NULL, IO_SZ, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		snprintf(it->err, sizeof(it->err), "mmap: %s", strerror(errno));
		return;
	}
	memset(buf, 0, PAGE_SZ);	/* page 0: present, exclusive */
	uffd = uffd_open(buf + PAGE_SZ, it->err, sizeof(it->err));
	if (uffd < 0 || pipe(p))
		goto out;
	r.buf = buf;
	if (pthread_create(&r.thread, NULL, reader_main, &r)) {
		snprintf(it->err, sizeof(it->err), "pthread_create failed");
		goto out;
	}
	started = true;
	if (uffd_wait_fault(uffd, buf + PAGE_SZ, it->err, sizeof(it->err)))
		goto out;

	/* the lookup holds page 0 and waits for page 1: fork now */
	pid = fork();
	if (pid < 0) {
		snprintf(it->err, sizeof(it->err), "fork: %s", strerror(errno));
		goto out;
	}
	if (!pid) {
		close(p[1]);
		child_main(p[0], buf, key);
	}
	close(p[0]);
	p[0] = -1;

	if (at == WRITE_IN_LOOKUP) {
		buf[STORE_AT] = 0xaa;	/* COW: no record yet */
		it->counted = true;
	}
	copy.dst = (uintptr_t)(buf + PAGE_SZ);
	copy.src = (uintptr_t)zeros;
	if (ioctl(uffd, UFFDIO_COPY, &copy)) {
		snprintf(it->err, sizeof(it->err), "UFFDIO_COPY: %s",
			 strerror(errno));
		goto out;
	}
	if (at == WRITE_IN_FLIGHT) {
		usleep(WRITE_AFTER_MS * 1000);
		/* lock may hold the store until the read is done: ask first */
		it->counted = !__atomic_load_n(&r.done, __ATOMIC_ACQUIRE);
		buf[STORE_AT] = 0xaa;	/* a COW fault if page 0 is shared */
	}

out:
	if (started) {
		if (it->err[0] && uffd >= 0) {
			/* let a reader stuck in the fault go */
			copy.dst = (uintptr_t)(buf + PAGE_SZ);
			copy.src = (uintptr_t)zeros;
			ioctl(uffd, UFFDIO_COPY, &copy);
		}
		pthread_join(r.thread, NULL);
		if (!it->err[0] && r.res != IO_SZ)
			snprintf(it->err, sizeof(it->err),
				 "read returned %zd (%s), expected %d", r.res,
				 r.res < 0 ? strerror(r.err) : "short", IO_SZ);
	}
	if (!it->err[0])
		it->parent_lost = parent_lost(buf, key);
	if (pid > 0) {
		if (write(p[1], "x", 1) != 1 ||
		    df_wait_bounded(pid, &status, delay_ms / 1000.0 + 10)) {
			df_kill_reap(pid, 5);
			if (!it->err[0])
				snprintf(it->err, sizeof(it->err),
					 "child did not report");
		} else {
			it->child = WIFEXITED(status) ? WEXITSTATUS(status) :
							CHILD_OTHER;
		}
	}
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	if (uffd >= 0)
		close(uffd);
	munmap(buf, IO_SZ);
}

FIXTURE(lookup) {
	char dev[128];
	bool dm_made;
	unsigned long delay_ms;
};

FIXTURE_VARIANT(lookup) {
	enum write_at at;
};

FIXTURE_VARIANT_ADD(lookup, in_lookup) { .at = WRITE_IN_LOOKUP };
FIXTURE_VARIANT_ADD(lookup, in_flight) { .at = WRITE_IN_FLIGHT };

FIXTURE_SETUP(lookup)
{
	char why[256], msg[512];
	struct stat st;
	int ret;

	self->delay_ms = df_env_ulong("DIOFORK_LOOKUP_DELAY_MS", 1000);
	if (!df_module_present())
		SKIP(return, "diofork module not loaded");
	if (stat(df_dev_path(1), &st))
		SKIP(return, "%s: no such device", df_dev_path(1));
	if (df_dm_delay_usable(why, sizeof(why)))
		SKIP(return, "%s", why);
	df_dm_path(DM_NAME, self->dev, sizeof(self->dev));
	/* last: a setup that fails or skips gets no teardown */
	ret = df_dm_delay_make(DM_NAME, DM_BASE_SECTOR, DM_SECTORS,
			       self->delay_ms, msg, sizeof(msg));
	ASSERT_EQ(0, ret) TH_LOG("%s", msg);
	self->dm_made = true;
}

FIXTURE_TEARDOWN(lookup)
{
	char msg[512];
	int ret;

	if (self->dm_made) {
		ret = df_dm_remove(DM_NAME, 15, msg, sizeof(msg));
		if (ret)
			ksft_print_msg("teardown: dmsetup remove %s: %d: %s\n",
				       DM_NAME, ret, msg);
	}
}

TEST_F_TIMEOUT(lookup, fork_in_lookup, 120)
{
	unsigned int iters = df_env_ulong("DIOFORK_LOOKUP_ITERS", 5);
	unsigned int i, counted = 0, lost = 0, leaked = 0;
	struct df_stats s0, s1;
	char mode[DF_MODE_NAME_MAX], val[128];
	bool kernel_pins, redoes, expect_loss;
	long long redone, failed;
	struct it it;
	int fd;

	ASSERT_EQ(0, df_mode_get(mode, sizeof(mode)));
	if (!strcmp(mode, "drain"))
		SKIP(return, "mode drain would hold the fork off a lookup that waits for the forking thread");
	ASSERT_EQ(0, df_kernel_get("pin", val, sizeof(val)));
	kernel_pins = !!strncmp(val, "pins", 4);
	redoes = !strcmp(mode, "pin") || !strcmp(mode, "lock");
	expect_loss = !kernel_pins && !redoes;
	ksft_print_msg("kernel %s mode %s: %s => expect_loss=%s\n",
		       df_kernel_release(), mode, val,
		       expect_loss ? "yes" : "no");

	fd = df_blkdev_open(self->dev, NULL, NULL);
	ASSERT_LE(0, fd) TH_LOG("%s: %s", self->dev, strerror(-fd));
	ASSERT_EQ(0, df_stats_read(&s0));
	for (i = 0; i < iters; i++) {
		run_iteration(fd, i, self->delay_ms, variant->at, &it);
		ksft_print_msg("iteration %u: %s%s parent %s, child page %s\n",
			       i, it.err[0] ? it.err : "",
			       it.counted ? "" : " (read done before the write: not counted)",
			       it.parent_lost ? "LOST its data" : "has its data",
			       it.child == CHILD_ZEROS ? "untouched" :
			       it.child == CHILD_DEVICE_DATA ?
			       "got the parent's data" : "changed");
		ASSERT_EQ(0, it.err[0]) TH_LOG("iteration %u: %s", i, it.err);
		if (!it.counted)
			continue;
		counted++;
		lost += it.parent_lost;
		leaked += it.child != CHILD_ZEROS;
	}
	ASSERT_EQ(0, df_stats_read(&s1));
	close(fd);
	redone = df_stats_delta(&s0, &s1, "lookups_redone");
	failed = df_stats_delta(&s0, &s1, "lookups_not_redone");
	ksft_print_msg("RESULT mode=%s write=%s iterations=%u counted=%u parent_lost=%u child_changed=%u lookups_redone=%+lld lookups_not_redone=%+lld\n",
		       mode, variant->at == WRITE_IN_LOOKUP ? "in_lookup" :
		       "in_flight", iters, counted, lost, leaked, redone, failed);

	ASSERT_LE(MIN_COUNTED, counted)
		TH_LOG("only %u of %u iterations had the read in flight at the write; raise DIOFORK_LOOKUP_DELAY_MS",
		       counted, iters);
	if (expect_loss) {
		EXPECT_LE(1, lost) TH_LOG("the fork never cost the parent its read: the test lacks power");
		return;
	}
	EXPECT_EQ(0, lost);
	EXPECT_EQ(0, leaked);
	if (!kernel_pins) {
		EXPECT_LE(counted, redone);
		EXPECT_EQ(0, failed);
	}
}

TEST_HARNESS_MAIN
