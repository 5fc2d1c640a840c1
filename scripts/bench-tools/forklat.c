// SPDX-License-Identifier: GPL-2.0
/*
 * forklat - fork() latency with DIOs in flight (scripts/bench workload 3).
 *
 * One process with MIB MiB of touched private anonymous memory (THP unless
 * -4: 4 KiB pages), an I/O thread that keeps N libaio O_DIRECT 4 KiB reads
 * from DEV in flight (random offsets in the first 64 MiB), each into its
 * own page of a private anonymous buffer, and the main thread timing
 * fork() (the parent's time from just before fork() to its return; the
 * child exits at once, waitpid is not timed).
 *
 * Rows are interleaved in blocks: each round visits every row of ROWS
 * (rotated by one each round, so none always goes first): drain the queue,
 * switch the module to the row's mode ("dontfork": mode off and
 * MADV_DONTFORK on the DIO buffers; "kpin": mode off, and N other pages of
 * the buffer pinned by the kernel itself, below), then for each level N of
 * LEVELS time BLOCK forks, each with the queue refilled to N reads.
 * Draining first means every read in flight at a fork was issued under the
 * row's mode.
 * Rounds go on until every row and level has COUNT forks.  (A mode switch
 * costs far more than a fork under TCG, hence blocks.)
 *
 * "kpin" is the kernel's own copy without the module: at level N, N pages
 * of the buffer that no read uses are registered as io_uring fixed buffers,
 * which the kernel pins (FOLL_PIN | FOLL_LONGTERM), so fork() copies them
 * for the child in copy_present_page(), the copy that 6.12 makes for DIO
 * and that diofork's pin mode makes 6.1 make.  The N reads still run, into
 * the other pages, so the row differs from "off" by the copy alone.
 *
 *   forklat [-d DEV] [-m MIB] [-c COUNT] [-b BLOCK] [-l 0,8,64]
 *           [-M off,pin,...] [-4] [-F]
 *     -M   rows: modes, "dontfork", "kpin" (default: "current" = leave the
 *          mode alone)
 *     -F   call sync(2) right before and right after each timed fork()
 *          (the plugin's window: the fork alone, with what interrupts
 *          it), then twice more with nothing between (an empty window:
 *          what the window's own edges cost, for scripts/profile to
 *          subtract)
 *
 * Prints "forklat setup mib=N thp_kb=N", then one line per row and level:
 *   forklat row=R inflight=N forks=K p50_us=X p90_us=X mean_us=X min_us=X max_us=X avg_inflight=X
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "benchmode.h"

#define PAGE_SZ		4096UL
#define MAX_DEPTH	128
#define NR_BUFS		(2 * MAX_DEPTH)	/* reads use the first half, kpin the rest */
#define SPAN		(64ULL << 20)	/* device bytes the reads cover */
#define MAX_ROWS	8
#define MAX_LEVELS	8

static int fd;
static unsigned char *bufs;
static int target, running = 1;
static int inflight;		/* written by the I/O thread only */
static io_context_t ctx;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "forklat: %s: %s\n", what, strerror(err));
	exit(1);
}

/*
 * fork() a child that exits at once; *us gets the parent's time in fork().
 * With @marked (-F), sync(2) right before and right after the fork() opens
 * and closes scripts/profile's window, and two more make an empty one; the
 * child waits on a pipe so that it exits outside the window.
 */
static pid_t timed_fork(int marked, double *us)
{
	int gate[2] = { -1, -1 };
	double t0;
	pid_t pid;
	char c;

	if (marked) {
		if (pipe(gate))
			die("pipe", errno);
		sync();
	}
	t0 = now();
	pid = fork();
	if (pid == 0) {
		if (marked) {
			close(gate[1]);
			while (read(gate[0], &c, 1) < 0 && errno == EINTR)
				;
		}
		_exit(0);
	}
	if (pid < 0)
		die("fork", errno);
	*us = (now() - t0) * 1e6;
	if (marked) {
		sync();
		sync();
		sync();
		close(gate[0]);
		close(gate[1]);
	}
	return pid;
}

/* Keep `target` reads in flight until `running` drops, then reap them all. */
static void *io_thread(void *arg)
{
	static struct iocb cbs[MAX_DEPTH];
	struct iocb *free_cb[MAX_DEPTH], *sub[MAX_DEPTH];
	struct io_event ev[MAX_DEPTH];
	uint64_t rng = 0x9e3779b97f4a7c15ULL;
	int nfree = MAX_DEPTH, i, n, r;

	(void)arg;
	for (i = 0; i < MAX_DEPTH; i++)
		free_cb[i] = &cbs[i];
	for (;;) {
		int run = __atomic_load_n(&running, __ATOMIC_SEQ_CST);
		int want = run ? __atomic_load_n(&target, __ATOMIC_SEQ_CST) : 0;
		int cur = __atomic_load_n(&inflight, __ATOMIC_SEQ_CST);

		if (!run && !cur)
			break;
		n = 0;
		while (cur + n < want && nfree) {
			struct iocb *cb = free_cb[--nfree];
			long slot = cb - cbs;

			rng ^= rng << 13;
			rng ^= rng >> 7;
			rng ^= rng << 17;
			io_prep_pread(cb, fd, bufs + slot * PAGE_SZ, PAGE_SZ,
				      (rng % (SPAN / PAGE_SZ)) * PAGE_SZ);
			sub[n++] = cb;
		}
		if (n) {
			r = io_submit(ctx, n, sub);
			if (r < 0)
				die("io_submit", -r);
			for (i = r; i < n; i++)
				free_cb[nfree++] = sub[i];
			__atomic_add_fetch(&inflight, r, __ATOMIC_SEQ_CST);
		}
		if (!__atomic_load_n(&inflight, __ATOMIC_SEQ_CST)) {
			usleep(200);
			continue;
		}
		{
			struct timespec to = { 0, 2 * 1000 * 1000 };

			r = io_getevents(ctx, 1, MAX_DEPTH, ev, &to);
		}
		if (r < 0) {
			if (r == -EINTR)
				continue;
			die("io_getevents", -r);
		}
		for (i = 0; i < r; i++) {
			if ((long)ev[i].res != (long)PAGE_SZ)
				die("read", (long)ev[i].res < 0 ? (int)-(long)ev[i].res : EIO);
			free_cb[nfree++] = ev[i].obj;
		}
		__atomic_sub_fetch(&inflight, r, __ATOMIC_SEQ_CST);
	}
	return NULL;
}

/* Wait until `inflight` == want (or 1 s passes). */
static void wait_inflight(int want)
{
	double end = now() + 1.0;

	while (__atomic_load_n(&inflight, __ATOMIC_SEQ_CST) != want && now() < end)
		usleep(200);
}

/*
 * kpin: have the kernel pin @n pages of the buffer's second half, or (with
 * @n == 0) drop the pins: io_uring fixed buffers, one page each.  The ring
 * is set up on first use and never used for I/O.
 */
static void kernel_pin(int n)
{
	static struct iovec iov[MAX_DEPTH];
	static int ring = -1, pinned;
	struct io_uring_params p;
	int i;

	if (ring < 0 && n) {
		memset(&p, 0, sizeof(p));
		ring = syscall(__NR_io_uring_setup, 1, &p);
		if (ring < 0)
			die("io_uring_setup", errno);
	}
	if (pinned && syscall(__NR_io_uring_register, ring,
			      IORING_UNREGISTER_BUFFERS, NULL, 0))
		die("IORING_UNREGISTER_BUFFERS", errno);
	pinned = 0;
	if (!n)
		return;
	for (i = 0; i < n; i++) {
		iov[i].iov_base = bufs + (MAX_DEPTH + i) * PAGE_SZ;
		iov[i].iov_len = PAGE_SZ;
	}
	if (syscall(__NR_io_uring_register, ring, IORING_REGISTER_BUFFERS,
		    iov, n))
		die("IORING_REGISTER_BUFFERS", errno);
	pinned = n;
}

/* AnonHugePages of this process, in kB (-1 if unknown). */
static long thp_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/smaps_rollup", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	const char *dev = "/dev/nullb0";
	char lv_buf[256] = "0,8,64", rows_buf[256] = "current", *tok, *save;
	char *rows[MAX_ROWS];
	int levels[MAX_LEVELS], nrows = 0, nlevels = 0, huge = 1, each = 0;
	int opt, r, status;
	unsigned long mib = 256, count = 20, block = 4, i, round;
	double *lat[MAX_ROWS][MAX_LEVELS], inflight_sum[MAX_ROWS][MAX_LEVELS];
	unsigned long n[MAX_ROWS][MAX_LEVELS];
	unsigned char *big;
	pthread_t th;
	size_t bigsz;

	while ((opt = getopt(argc, argv, "d:m:c:b:l:M:4F")) != -1) {
		switch (opt) {
		case 'd':
			dev = optarg;
			break;
		case 'm':
			mib = strtoul(optarg, NULL, 0);
			break;
		case 'c':
			count = strtoul(optarg, NULL, 0);
			break;
		case 'b':
			block = strtoul(optarg, NULL, 0);
			break;
		case 'l':
			snprintf(lv_buf, sizeof(lv_buf), "%s", optarg);
			break;
		case 'M':
			snprintf(rows_buf, sizeof(rows_buf), "%s", optarg);
			break;
		case '4':
			huge = 0;
			break;
		case 'F':
			each = 1;
			break;
		default:
			fprintf(stderr, "usage: %s %s\n", "forklat",
				"[-d DEV] [-m MIB] [-c COUNT] [-b BLOCK] [-l 0,8,64] [-M ROWS] [-4] [-F]");
			return 2;
		}
	}
	if (!count)
		count = 1;
	if (!block)
		block = 1;
	for (tok = strtok_r(lv_buf, ",", &save); tok && nlevels < MAX_LEVELS;
	     tok = strtok_r(NULL, ",", &save)) {
		int l = atoi(tok);

		levels[nlevels++] = l < 0 ? 0 : l > MAX_DEPTH ? MAX_DEPTH : l;
	}
	for (tok = strtok_r(rows_buf, ",", &save); tok && nrows < MAX_ROWS;
	     tok = strtok_r(NULL, ",", &save))
		rows[nrows++] = tok;
	if (!nlevels || !nrows)
		return 2;

	fd = open(dev, O_RDONLY | O_DIRECT);
	if (fd < 0)
		die(dev, errno);
	r = io_setup(MAX_DEPTH, &ctx);
	if (r < 0)
		die("io_setup", -r);

	bufs = mmap(NULL, NR_BUFS * PAGE_SZ, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (bufs == MAP_FAILED)
		die("mmap bufs", errno);
	madvise(bufs, NR_BUFS * PAGE_SZ, MADV_NOHUGEPAGE);
	memset(bufs, 1, NR_BUFS * PAGE_SZ);
	bigsz = mib << 20;
	if (bigsz) {
		big = mmap(NULL, bigsz, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (big == MAP_FAILED)
			die("mmap big", errno);
		madvise(big, bigsz, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
		for (i = 0; i < bigsz; i += PAGE_SZ)
			big[i] = 1;
	}
	for (r = 0; r < nrows; r++) {
		for (i = 0; i < (unsigned long)nlevels; i++) {
			lat[r][i] = calloc(count, sizeof(double));
			if (!lat[r][i])
				die("calloc", errno);
			n[r][i] = 0;
			inflight_sum[r][i] = 0;
		}
	}
	printf("forklat setup mib=%lu thp_kb=%ld\n", mib, thp_kb());
	fflush(stdout);

	r = pthread_create(&th, NULL, io_thread, NULL);
	if (r)
		die("pthread_create", r);

	for (round = 0; round * block < count; round++) {
		int li, k;

		for (k = 0; k < nrows; k++) {
			int ri = (k + round) % nrows, dontfork, kpin;
			const char *mode = rows[ri];

			dontfork = !strcmp(mode, "dontfork");
			kpin = !strcmp(mode, "kpin");
			if (dontfork || kpin)
				mode = "off";
			/* Drain, switch, then every level, filling up. */
			__atomic_store_n(&target, 0, __ATOMIC_SEQ_CST);
			wait_inflight(0);
			if (strcmp(mode, "current")) {
				r = set_mode(mode);
				if (r)
					die(mode, -r);
			}
			if (madvise(bufs, NR_BUFS * PAGE_SZ,
				    dontfork ? MADV_DONTFORK : MADV_DOFORK))
				die("madvise", errno);
			for (li = 0; li < nlevels; li++) {
				unsigned long b;

				if (kpin)
					kernel_pin(levels[li]);
				__atomic_store_n(&target, levels[li], __ATOMIC_SEQ_CST);
				for (b = 0; b < block && n[ri][li] < count; b++) {
					double dt;
					pid_t pid;

					wait_inflight(levels[li]);
					usleep(1000);
					inflight_sum[ri][li] +=
						__atomic_load_n(&inflight, __ATOMIC_SEQ_CST);
					pid = timed_fork(each, &dt);
					lat[ri][li][n[ri][li]++] = dt;
					while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
						;
				}
			}
			if (kpin)
				kernel_pin(0);
		}
	}
	__atomic_store_n(&running, 0, __ATOMIC_SEQ_CST);
	pthread_join(th, NULL);

	for (r = 0; r < nrows; r++) {
		int li;

		for (li = 0; li < nlevels; li++) {
			double *v = lat[r][li], sum = 0;
			unsigned long m = n[r][li];

			qsort(v, m, sizeof(*v), cmp_double);
			for (i = 0; i < m; i++)
				sum += v[i];
			printf("forklat row=%s inflight=%d forks=%lu ",
			       rows[r], levels[li], m);
			printf("p50_us=%.0f p90_us=%.0f mean_us=%.0f ",
			       m ? v[m / 2] : 0.0, m ? v[m * 9 / 10] : 0.0,
			       m ? sum / m : 0.0);
			printf("min_us=%.0f max_us=%.0f avg_inflight=%.1f\n",
			       m ? v[0] : 0.0, m ? v[m - 1] : 0.0,
			       m ? inflight_sum[r][li] / m : 0.0);
		}
	}
	return 0;
}
