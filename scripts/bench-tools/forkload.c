// SPDX-License-Identifier: GPL-2.0
/*
 * forkload - the "fork loop" background load of scripts/bench (workload 2).
 *
 * One process with MIB MiB of touched private anonymous memory (THP unless
 * -4: MADV_NOHUGEPAGE), READERS checking reader threads, and a fork loop in
 * the main thread:
 *
 *   readers: zero a 512-byte slot of one shared 4 KiB private anonymous
 *            page, pread() 512 bytes with O_DIRECT into it from DEV, check
 *            the slot holds the pattern written to DEV at start.  A slot
 *            that is still zero (or anything else) is a corrupt read.
 *   main:    fork() (the child sleeps 0-500 us and exits), write the last
 *            byte of the same page (the COW fault), waitpid(), then wait to
 *            keep RATE forks per second.
 *
 * This is the dio_fork_race scenario inside a big process.  The buffer page
 * is mapped before the big region, so it sits above it and fork copies it
 * last, just before returning: the window between its copy and the parent's
 * write stays as short as in dio_fork_race.
 *
 * Rows.  The benchmark changes the module's mode under a running forkload
 * (one process, one setup, for every mode).  Each line "row NAME" written
 * to the control FIFO CTL makes forkload:
 *   1. stop forking and wait until no reader has a read in flight;
 *   2. print the counters of the segment that ends (if any):
 *        forkload row=PREV forks=N reads=N corrupt=N seconds=X fork_us_sum=X
 *   3. enter row NAME: write the mode to the module's debugfs "mode" file
 *      ("dontfork" = mode off + madvise(MADV_DONTFORK) on the buffer page);
 *   4. zero the counters, resume, and answer "ok NAME" (or "err NAME ...")
 *      on the FIFO ACK.
 * "stop" ends the last segment (printed as above) and exits.  No DIO of a
 * reader spans two segments, so no corrupt read is counted under a mode it
 * did not run in.
 *
 *   forkload [-d DEV] [-m MIB] [-r RATE] [-n READERS] [-4] CTL ACK
 *   forkload [-d DEV] [-m MIB] [-r RATE] [-n READERS] [-4] -t SECONDS [-D]
 *     (second form: one segment in the current mode; -D: MADV_DONTFORK)
 *
 * Prints "forkload setup mib=N thp_kb=N" when ready (before any fork).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
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
#define BASE		(1024ULL * 1024)	/* byte offset of the pattern on DEV */
#define MAX_READERS	7
#define MAGIC		0x6469666f726b6c64ULL
#define MODE_FILE	"/sys/kernel/debug/diofork/mode"

static int fd;
static unsigned char *page;
static int stop, paused, busy;
static unsigned long reads, corrupt;

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
	unsigned long k = 0;
	size_t i;

	while (!__atomic_load_n(&stop, __ATOMIC_SEQ_CST)) {
		uint64_t s = (idx + k++ * 7) % NR_SECTORS;
		ssize_t n;

		/* Dekker with the pause in main(): busy first, then paused. */
		__atomic_add_fetch(&busy, 1, __ATOMIC_SEQ_CST);
		if (__atomic_load_n(&paused, __ATOMIC_SEQ_CST)) {
			__atomic_sub_fetch(&busy, 1, __ATOMIC_SEQ_CST);
			usleep(500);
			continue;
		}
		memset(slot, 0, SECT);
		n = pread(fd, slot, SECT, BASE + s * SECT);
		if (n != (ssize_t)SECT) {
			__atomic_sub_fetch(&busy, 1, __ATOMIC_SEQ_CST);
			if (n < 0 && errno == EINTR)
				continue;
			die("pread");
		}
		for (i = 0; i < SECT / 8; i++) {
			if (slot[i] != word(s, i)) {
				__atomic_add_fetch(&corrupt, 1, __ATOMIC_SEQ_CST);
				break;
			}
		}
		__atomic_add_fetch(&reads, 1, __ATOMIC_SEQ_CST);
		__atomic_sub_fetch(&busy, 1, __ATOMIC_SEQ_CST);
	}
	return NULL;
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

static int set_mode(const char *mode, char *err, size_t len)
{
	int f = open(MODE_FILE, O_WRONLY);

	if (f < 0) {
		if (errno == ENOENT && !strcmp(mode, "off"))
			return 0;	/* no module: off is all there is */
		snprintf(err, len, "open %s: %s", MODE_FILE, strerror(errno));
		return -1;
	}
	if (write(f, mode, strlen(mode)) != (ssize_t)strlen(mode)) {
		snprintf(err, len, "mode %s: %s", mode, strerror(errno));
		close(f);
		return -1;
	}
	close(f);
	return 0;
}

/* Segment state. */
static char row[64];
static unsigned long seg_forks;
static double seg_t0, seg_fork_us;

static void seg_start(void)
{
	__atomic_store_n(&reads, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&corrupt, 0, __ATOMIC_SEQ_CST);
	seg_forks = 0;
	seg_fork_us = 0;
	seg_t0 = now();
}

static void seg_end(void)
{
	if (!row[0])
		return;
	printf("forkload row=%s forks=%lu reads=%lu corrupt=%lu seconds=%.2f fork_us_sum=%.0f\n",
	       row, seg_forks, __atomic_load_n(&reads, __ATOMIC_SEQ_CST),
	       __atomic_load_n(&corrupt, __ATOMIC_SEQ_CST), now() - seg_t0,
	       seg_fork_us);
	fflush(stdout);
}

static void pause_readers(void)
{
	__atomic_store_n(&paused, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&busy, __ATOMIC_SEQ_CST))
		usleep(200);
}

/* Handle one control line; returns 1 on "stop". */
static int control(const char *line, FILE *ack)
{
	char name[64], err[256] = "";
	int dontfork;

	if (!strncmp(line, "stop", 4)) {
		pause_readers();
		seg_end();
		return 1;
	}
	if (sscanf(line, "row %63s", name) != 1) {
		fprintf(ack, "err ? bad command\n");
		fflush(ack);
		return 0;
	}
	pause_readers();
	seg_end();
	dontfork = !strcmp(name, "dontfork");
	if (set_mode(dontfork ? "off" : name, err, sizeof(err)) ||
	    madvise(page, PAGE_SZ, dontfork ? MADV_DONTFORK : MADV_DOFORK)) {
		if (!err[0])
			snprintf(err, sizeof(err), "madvise: %s", strerror(errno));
		row[0] = '\0';
		fprintf(ack, "err %s %s\n", name, err);
		fflush(ack);
		return 0;	/* stay paused: no row */
	}
	snprintf(row, sizeof(row), "%s", name);
	seg_start();
	__atomic_store_n(&paused, 0, __ATOMIC_SEQ_CST);
	fprintf(ack, "ok %s\n", name);
	fflush(ack);
	return 0;
}

int main(int argc, char **argv)
{
	const char *dev = "/dev/nullb1";
	unsigned long mib = 256, nreaders = 3, i;
	double rate = 100, seconds = 0, next;
	pthread_t th[MAX_READERS];
	uint64_t rng = 0x2545f4914f6cdd1dULL ^ (uint64_t)getpid();
	int huge = 1, dontfork = 0, opt, status, ctl = -1;
	unsigned char *big, *pat;
	char cbuf[512];
	size_t clen = 0, bigsz;
	FILE *ack = NULL;

	while ((opt = getopt(argc, argv, "d:m:r:n:4t:D")) != -1) {
		switch (opt) {
		case 'd':
			dev = optarg;
			break;
		case 'm':
			mib = strtoul(optarg, NULL, 0);
			break;
		case 'r':
			rate = strtod(optarg, NULL);
			break;
		case 'n':
			nreaders = strtoul(optarg, NULL, 0);
			break;
		case '4':
			huge = 0;
			break;
		case 't':
			seconds = strtod(optarg, NULL);
			break;
		case 'D':
			dontfork = 1;
			break;
		default:
			goto usage;
		}
	}
	if (seconds > 0 ? optind != argc : optind != argc - 2) {
usage:
		fprintf(stderr, "usage: forkload %s CTL ACK\n",
			"[-d DEV] [-m MIB] [-r RATE] [-n READERS] [-4]");
		fprintf(stderr, "       forkload %s -t SECONDS [-D]\n",
			"[-d DEV] [-m MIB] [-r RATE] [-n READERS] [-4]");
		return 2;
	}
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

	if (seconds > 0) {
		if (dontfork && madvise(page, PAGE_SZ, MADV_DONTFORK))
			die("madvise MADV_DONTFORK");
		snprintf(row, sizeof(row), "%s", dontfork ? "dontfork" : "current");
	} else {
		/* O_RDWR: never EOF, and writers' open() never blocks. */
		ctl = open(argv[optind], O_RDWR | O_NONBLOCK);
		if (ctl < 0)
			die(argv[optind]);
		i = open(argv[optind + 1], O_RDWR);
		if ((long)i >= 0)
			ack = fdopen((int)i, "w");
		if (!ack)
			die(argv[optind + 1]);
		__atomic_store_n(&paused, 1, __ATOMIC_SEQ_CST);
	}
	printf("forkload setup mib=%lu thp_kb=%ld\n", mib, thp_kb());
	fflush(stdout);

	for (i = 0; i < nreaders; i++)
		if (pthread_create(&th[i], NULL, reader, (void *)i))
			die("pthread_create");

	seg_start();
	next = now();
	for (;;) {
		double t = now();
		unsigned int us;
		pid_t pid;
		double f0;

		if (seconds > 0 && t - seg_t0 >= seconds) {
			pause_readers();
			seg_end();
			break;
		}
		if (ctl >= 0) {
			struct pollfd p = { .fd = ctl, .events = POLLIN };
			int wait_ms = paused || t < next ?
				(paused ? 100 : (int)((next - t) * 1000) + 1) : 0;
			ssize_t n;
			char *nl;

			if (poll(&p, 1, wait_ms) > 0) {
				n = read(ctl, cbuf + clen, sizeof(cbuf) - 1 - clen);
				if (n > 0)
					clen += n;
				cbuf[clen] = '\0';
				while ((nl = strchr(cbuf, '\n'))) {
					*nl = '\0';
					if (control(cbuf, ack))
						goto out;
					memmove(cbuf, nl + 1, clen - (nl + 1 - cbuf) + 1);
					clen = strlen(cbuf);
					next = now();
				}
				if (clen >= sizeof(cbuf) - 1)
					clen = 0;	/* garbage: drop it */
				continue;
			}
			if (paused)
				continue;
			t = now();
		}
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
		seg_fork_us += (now() - f0) * 1e6;
		page[PAGE_SZ - 1]++;		/* the COW fault */
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		seg_forks++;
	}
out:
	__atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
	__atomic_store_n(&paused, 0, __ATOMIC_SEQ_CST);
	for (i = 0; i < nreaders; i++)
		pthread_join(th[i], NULL);
	if (ack) {
		fprintf(ack, "ok stop\n");
		fflush(ack);
	}
	return 0;
}
