// SPDX-License-Identifier: GPL-2.0
/*
 * forkload - the "fork loop" background load of scripts/bench (workload 2).
 *
 * One process with MIB MiB of touched private anonymous memory (4 KiB pages,
 * MADV_NOHUGEPAGE, or THP with -H), READERS
 * checking reader threads and a fork loop in the main thread:
 *
 *   readers: zero a 512-byte slot of one shared 4 KiB private anonymous
 *            page, pread() 512 bytes with O_DIRECT into it from DEV, check
 *            the slot holds the pattern written to DEV at start.  A slot
 *            that is still zero (or anything else) is a corrupt read.
 *   main:    fork() (the child sleeps 0-500 us and exits), write the last
 *            byte of the same page (the COW fault), waitpid(), then sleep to
 *            keep RATE forks per second.
 *
 * This is the dio_fork_race scenario inside a big process.  The buffer page
 * is mapped before the big region so it sits above it: fork copies it last,
 * just before returning, which keeps the window between the copy and the
 * parent's write as short as in dio_fork_race.
 *
 *   forkload [-d DEV] [-m MIB] [-r RATE] [-n READERS] [-D] [-H] SECONDS
 *     -D   madvise(MADV_DONTFORK) the DIO buffer page (userspace workaround)
 *
 * Prints one line:
 *   forkload forks=N reads=N corrupt=N seconds=X fork_rate=X fork_p50_us=X
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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
#define SECT		512UL
#define NR_SECTORS	64
#define BASE		(1ULL << 20)	/* byte offset of the pattern on DEV */
#define MAX_READERS	7
#define MAGIC		0x6469666f726b6c64ULL	/* "difork ld" */
#define MAX_FORKS	100000

static volatile int stop;
static int fd;
static unsigned char *page;
static unsigned long reads_total, corrupt_total;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t word(uint64_t sector, size_t i)
{
	return MAGIC ^ (sector << 16) ^ i;
}

static void die(const char *what)
{
	fprintf(stderr, "forkload: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void *reader(void *arg)
{
	long idx = (long)arg;
	uint64_t *slot = (uint64_t *)(page + idx * SECT);
	unsigned long k = 0, reads = 0, corrupt = 0;
	size_t i;

	while (!stop) {
		uint64_t s = (idx + k++ * 7) % NR_SECTORS;
		ssize_t n;

		memset(slot, 0, SECT);
		n = pread(fd, slot, SECT, BASE + s * SECT);
		if (n != (ssize_t)SECT) {
			if (n < 0 && errno == EINTR)
				continue;
			die("pread");
		}
		reads++;
		for (i = 0; i < SECT / 8; i++) {
			if (slot[i] != word(s, i)) {
				corrupt++;
				break;
			}
		}
	}
	__atomic_add_fetch(&reads_total, reads, __ATOMIC_RELAXED);
	__atomic_add_fetch(&corrupt_total, corrupt, __ATOMIC_RELAXED);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	const char *dev = "/dev/nullb1";
	unsigned long mib = 256, nreaders = 3, forks = 0, i;
	double rate = 100, seconds, t0, next, end, *lat;
	pthread_t th[MAX_READERS];
	uint64_t rng = 0x2545f4914f6cdd1dULL ^ (uint64_t)getpid();
	int dontfork = 0, huge = 0, opt, status;
	unsigned char *big, *pat;
	size_t bigsz;

	while ((opt = getopt(argc, argv, "d:m:r:n:DH")) != -1) {
		switch (opt) {
		case 'd': dev = optarg; break;
		case 'm': mib = strtoul(optarg, NULL, 0); break;
		case 'r': rate = strtod(optarg, NULL); break;
		case 'n': nreaders = strtoul(optarg, NULL, 0); break;
		case 'D': dontfork = 1; break;
		case 'H': huge = 1; break;
		default: goto usage;
		}
	}
	if (optind != argc - 1) {
usage:
		fprintf(stderr, "usage: forkload [-d DEV] [-m MIB] [-r RATE] [-n READERS] [-D] [-H] SECONDS\n");
		return 2;
	}
	seconds = strtod(argv[optind], NULL);
	if (nreaders < 1)
		nreaders = 1;
	if (nreaders > MAX_READERS)
		nreaders = MAX_READERS;
	if (rate <= 0)
		rate = 1e9;

	fd = open(dev, O_RDWR | O_DIRECT);
	if (fd < 0)
		die(dev);

	/* The pattern, written once and read back. */
	if (posix_memalign((void **)&pat, PAGE_SZ, NR_SECTORS * SECT))
		die("posix_memalign");
	for (i = 0; i < NR_SECTORS * SECT / 8; i++)
		((uint64_t *)pat)[i] = word(i / (SECT / 8), i % (SECT / 8));
	if (pwrite(fd, pat, NR_SECTORS * SECT, BASE) != (ssize_t)(NR_SECTORS * SECT))
		die("pwrite pattern");
	memset(pat, 0, NR_SECTORS * SECT);
	if (pread(fd, pat, NR_SECTORS * SECT, BASE) != (ssize_t)(NR_SECTORS * SECT))
		die("pread pattern");
	for (i = 0; i < NR_SECTORS * SECT / 8; i++) {
		if (((uint64_t *)pat)[i] != word(i / (SECT / 8), i % (SECT / 8))) {
			fprintf(stderr, "forkload: %s does not keep data\n", dev);
			return 1;
		}
	}

	/* The DIO buffer page first (highest address), then the big region. */
	page = mmap(NULL, PAGE_SZ, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		die("mmap page");
	memset(page, 0, PAGE_SZ);
	if (dontfork && madvise(page, PAGE_SZ, MADV_DONTFORK))
		die("madvise MADV_DONTFORK");
	bigsz = mib << 20;
	if (bigsz) {
		big = mmap(NULL, bigsz, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (big == MAP_FAILED)
			die("mmap big");
		madvise(big, bigsz, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
		for (i = 0; i < bigsz; i += PAGE_SZ)
			big[i] = 1;
	}

	lat = calloc(MAX_FORKS, sizeof(*lat));
	if (!lat)
		die("calloc");
	for (i = 0; i < nreaders; i++)
		if (pthread_create(&th[i], NULL, reader, (void *)i))
			die("pthread_create");

	t0 = now();
	next = t0;
	end = t0 + seconds;
	while (forks < MAX_FORKS) {
		double t = now(), f0;
		unsigned int us;
		pid_t pid;

		if (t >= end)
			break;
		if (t < next) {
			double d = next - t;
			struct timespec ts = { (time_t)d, (long)((d - (time_t)d) * 1e9) };

			nanosleep(&ts, NULL);
			continue;
		}
		next += 1.0 / rate;
		if (next < t)
			next = t;
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		us = rng % 501;
		f0 = now();
		pid = fork();
		if (pid == 0) {
			struct timespec ts = { 0, us * 1000L };

			if (us)
				nanosleep(&ts, NULL);
			_exit(0);
		}
		if (pid < 0) {
			if (errno == EAGAIN || errno == ENOMEM) {
				usleep(1000);
				continue;
			}
			die("fork");
		}
		lat[forks] = (now() - f0) * 1e6;
		page[PAGE_SZ - 1]++;		/* the COW fault */
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		forks++;
	}
	stop = 1;
	for (i = 0; i < nreaders; i++)
		pthread_join(th[i], NULL);
	t0 = now() - t0;
	qsort(lat, forks, sizeof(*lat), cmp_double);
	printf("forkload forks=%lu reads=%lu corrupt=%lu seconds=%.2f fork_rate=%.1f fork_p50_us=%.0f dontfork=%d\n",
	       forks, reads_total, corrupt_total, t0, forks / t0,
	       forks ? lat[forks / 2] : 0.0, dontfork);
	return 0;
}
