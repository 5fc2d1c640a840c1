// SPDX-License-Identifier: GPL-2.0
/*
 * forklat - fork() latency with DIOs in flight (scripts/bench workload 3).
 *
 * One process with MIB MiB of touched private anonymous memory (4 KiB pages,
 * MADV_NOHUGEPAGE; -H: MADV_HUGEPAGE).  For each level N in LEVELS, a thread keeps N libaio
 * O_DIRECT 4 KiB reads from DEV in flight (random offsets in the first
 * 256 MiB), each into its own page of a private anonymous buffer; the main
 * thread times COUNT fork() calls, each once the queue is full again (the child exits at once; waitpid is not
 * timed).  The time is the parent's, from just before fork() to its return.
 *
 *   forklat [-d DEV] [-m MIB] [-c COUNT] [-l 0,8,64] [-D] [-H]
 *     -D   madvise(MADV_DONTFORK) the DIO buffers (userspace workaround)
 *
 * Prints one line per level:
 *   forklat inflight=N forks=K p50_us=X p90_us=X mean_us=X min_us=X max_us=X avg_inflight=X
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
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE_SZ		4096UL
#define MAX_DEPTH	256
#define SPAN		(256ULL << 20)	/* device bytes the reads cover */

static int fd;
static unsigned char *bufs;
static volatile int target, running;
static int inflight;		/* owned by the I/O thread, read by main */
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
	while (running || __atomic_load_n(&inflight, __ATOMIC_RELAXED)) {
		int want = running ? target : 0;
		int cur = __atomic_load_n(&inflight, __ATOMIC_RELAXED);

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
			__atomic_add_fetch(&inflight, r, __ATOMIC_RELAXED);
		}
		if (!__atomic_load_n(&inflight, __ATOMIC_RELAXED)) {
			usleep(1000);
			continue;
		}
		{
			struct timespec to = { 0, 10 * 1000 * 1000 };

			r = io_getevents(ctx, 1, MAX_DEPTH, ev, &to);
		}
		if (r < 0) {
			if (r == -EINTR)
				continue;
			die("io_getevents", -r);
		}
		for (i = 0; i < r; i++) {
			if (ev[i].res != PAGE_SZ)
				die("read", (long)ev[i].res < 0 ? (int)-(long)ev[i].res : EIO);
			free_cb[nfree++] = ev[i].obj;
		}
		__atomic_sub_fetch(&inflight, r, __ATOMIC_RELAXED);
	}
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	const char *dev = "/dev/nullb0";
	char levels_buf[256] = "0,8,64", *lv, *save = NULL;
	unsigned long mib = 256, count = 20, i;
	int dontfork = 0, huge = 0, opt, r, status;
	unsigned char *big;
	size_t bigsz;
	double *lat;

	while ((opt = getopt(argc, argv, "d:m:c:l:DH")) != -1) {
		switch (opt) {
		case 'd': dev = optarg; break;
		case 'm': mib = strtoul(optarg, NULL, 0); break;
		case 'c': count = strtoul(optarg, NULL, 0); break;
		case 'l': snprintf(levels_buf, sizeof(levels_buf), "%s", optarg); break;
		case 'D': dontfork = 1; break;
		case 'H': huge = 1; break;
		default:
			fprintf(stderr, "usage: forklat [-d DEV] [-m MIB] [-c COUNT] [-l 0,8,64] [-D] [-H]\n");
			return 2;
		}
	}
	if (!count)
		count = 1;
	fd = open(dev, O_RDONLY | O_DIRECT);
	if (fd < 0)
		die(dev, errno);
	r = io_setup(MAX_DEPTH, &ctx);
	if (r < 0)
		die("io_setup", -r);

	bufs = mmap(NULL, MAX_DEPTH * PAGE_SZ, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (bufs == MAP_FAILED)
		die("mmap bufs", errno);
	madvise(bufs, MAX_DEPTH * PAGE_SZ, MADV_NOHUGEPAGE);
	memset(bufs, 1, MAX_DEPTH * PAGE_SZ);
	if (dontfork && madvise(bufs, MAX_DEPTH * PAGE_SZ, MADV_DONTFORK))
		die("madvise MADV_DONTFORK", errno);
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
	lat = calloc(count, sizeof(*lat));
	if (!lat)
		die("calloc", errno);

	for (lv = strtok_r(levels_buf, ",", &save); lv; lv = strtok_r(NULL, ",", &save)) {
		int level = atoi(lv);
		double sum = 0, inflight_sum = 0, t_wait;
		unsigned long n = 0;
		pthread_t th;

		if (level < 0)
			level = 0;
		if (level > MAX_DEPTH)
			level = MAX_DEPTH;
		target = level;
		running = 1;
		r = pthread_create(&th, NULL, io_thread, NULL);
		if (r)
			die("pthread_create", r);
		/* Let the queue fill: up to 1 s. */
		t_wait = now() + 1.0;
		while (__atomic_load_n(&inflight, __ATOMIC_RELAXED) < level && now() < t_wait)
			usleep(200);
		for (i = 0; i < count; i++) {
			double t0;
			pid_t pid;

			inflight_sum += __atomic_load_n(&inflight, __ATOMIC_RELAXED);
			t0 = now();
			pid = fork();
			if (pid == 0)
				_exit(0);
			if (pid < 0) {
				if (errno == EAGAIN || errno == ENOMEM) {
					usleep(1000);
					continue;
				}
				die("fork", errno);
			}
			lat[n] = (now() - t0) * 1e6;
			sum += lat[n++];
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			/* Let the I/O thread refill the queue (up to 200 ms). */
			t_wait = now() + 0.2;
			do
				usleep(500);
			while (__atomic_load_n(&inflight, __ATOMIC_RELAXED) < level &&
			       now() < t_wait);
		}
		running = 0;
		pthread_join(th, NULL);
		qsort(lat, n, sizeof(*lat), cmp_double);
		printf("forklat inflight=%d forks=%lu p50_us=%.0f p90_us=%.0f mean_us=%.0f min_us=%.0f max_us=%.0f avg_inflight=%.1f dontfork=%d\n",
		       level, n, n ? lat[n / 2] : 0.0, n ? lat[n * 9 / 10] : 0.0,
		       n ? sum / n : 0.0, n ? lat[0] : 0.0, n ? lat[n - 1] : 0.0,
		       n ? inflight_sum / n : 0.0, dontfork);
		fflush(stdout);
	}
	return 0;
}
