// SPDX-License-Identifier: GPL-2.0
/*
 * faultlat - write-fault latency on a COW-shared page right after fork()
 * (scripts/bench workload 4), with and without a DIO in flight on the page.
 *
 * A small process with a pool of private anonymous pages.  Each iteration
 * takes the next page, makes it exclusive (writes it), then:
 *
 *   nodio: fork(); the parent times one write to the page's last byte
 *          (normally a COW fault: the child still maps the page).
 *   dio:   io_submit() one libaio O_DIRECT 512-byte read from DEV into the
 *          page's first 512 bytes, fork(), time the same write, then poll
 *          the read once without waiting: if it has not completed, the DIO
 *          was in flight during the whole write ("inflight" sample).
 *
 * The child blocks on a pipe until the parent has measured, so the page is
 * still shared at the write.  The two cases alternate.
 *
 *   faultlat [-d DEV] [-c COUNT] [-D]
 *     -D   madvise(MADV_DONTFORK) the pool (userspace workaround)
 *
 * Prints:
 *   faultlat case=nodio n=N p50_us=X p90_us=X mean_us=X max_us=X
 *   faultlat case=dio n=N p50_us=X p90_us=X mean_us=X max_us=X inflight_pct=X
 *   faultlat case=dio_inflight n=N p50_us=X ...   (samples with the DIO in flight)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE_SZ		4096UL
#define NPAGES		64
#define SECT		512UL

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "faultlat: %s: %s\n", what, strerror(err));
	exit(1);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void report(const char *name, double *v, unsigned long n, const char *extra)
{
	double sum = 0;
	unsigned long i;

	qsort(v, n, sizeof(*v), cmp_double);
	for (i = 0; i < n; i++)
		sum += v[i];
	printf("faultlat case=%s n=%lu p50_us=%.1f p90_us=%.1f mean_us=%.1f max_us=%.1f%s\n",
	       name, n, n ? v[n / 2] : 0.0, n ? v[n * 9 / 10] : 0.0,
	       n ? sum / n : 0.0, n ? v[n - 1] : 0.0, extra);
}

int main(int argc, char **argv)
{
	const char *dev = "/dev/nullb0";
	unsigned long count = 100, i, n_nodio = 0, n_dio = 0, n_in = 0;
	double *l_nodio, *l_dio, *l_in;
	int dontfork = 0, opt, r, status, pfd[2];
	struct io_event ev;
	io_context_t ctx = 0;
	unsigned char *pool;
	char extra[64];

	while ((opt = getopt(argc, argv, "d:c:D")) != -1) {
		switch (opt) {
		case 'd': dev = optarg; break;
		case 'c': count = strtoul(optarg, NULL, 0); break;
		case 'D': dontfork = 1; break;
		default:
			fprintf(stderr, "usage: faultlat [-d DEV] [-c COUNT] [-D]\n");
			return 2;
		}
	}
	if (!count)
		count = 1;
	int fd = open(dev, O_RDONLY | O_DIRECT);

	if (fd < 0)
		die(dev, errno);
	r = io_setup(4, &ctx);
	if (r < 0)
		die("io_setup", -r);
	pool = mmap(NULL, NPAGES * PAGE_SZ, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pool == MAP_FAILED)
		die("mmap", errno);
	madvise(pool, NPAGES * PAGE_SZ, MADV_NOHUGEPAGE);
	memset(pool, 1, NPAGES * PAGE_SZ);
	if (dontfork && madvise(pool, NPAGES * PAGE_SZ, MADV_DONTFORK))
		die("madvise MADV_DONTFORK", errno);
	l_nodio = calloc(count, sizeof(double));
	l_dio = calloc(count, sizeof(double));
	l_in = calloc(count, sizeof(double));
	if (!l_nodio || !l_dio || !l_in)
		die("calloc", errno);
	if (pipe(pfd))
		die("pipe", errno);

	for (i = 0; i < 2 * count; i++) {
		volatile unsigned char *p = pool + (i % NPAGES) * PAGE_SZ;
		int dio = i & 1, done = 0;
		struct iocb cb, *cbp = &cb;
		double t0, t1;
		pid_t pid;
		char c = 0;

		p[SECT] = (unsigned char)i;	/* exclusive and writable again */
		if (dio) {
			io_prep_pread(&cb, fd, (void *)p, SECT,
				      (uint64_t)(i % 4096) * SECT);
			r = io_submit(ctx, 1, &cbp);
			if (r != 1)
				die("io_submit", r < 0 ? -r : EIO);
		}
		pid = fork();
		if (pid == 0) {
			close(pfd[1]);
			while (read(pfd[0], &c, 1) < 0 && errno == EINTR)
				;
			_exit(0);
		}
		if (pid < 0)
			die("fork", errno);
		t0 = now();
		p[PAGE_SZ - 1]++;
		t1 = now();
		if (dio) {
			struct timespec zero = { 0, 0 };

			done = io_getevents(ctx, 0, 1, &ev, &zero);
			l_dio[n_dio++] = (t1 - t0) * 1e6;
			if (done == 0)
				l_in[n_in++] = (t1 - t0) * 1e6;
			while (done < 1) {
				r = io_getevents(ctx, 1, 1, &ev, NULL);
				if (r < 0 && r != -EINTR)
					die("io_getevents", -r);
				if (r > 0)
					done = 1;
			}
		} else {
			l_nodio[n_nodio++] = (t1 - t0) * 1e6;
		}
		if (write(pfd[1], &c, 1) != 1)
			die("write pipe", errno);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	report("nodio", l_nodio, n_nodio, "");
	snprintf(extra, sizeof(extra), " inflight_pct=%.0f",
		 n_dio ? 100.0 * n_in / n_dio : 0.0);
	report("dio", l_dio, n_dio, extra);
	report("dio_inflight", l_in, n_in, "");
	return 0;
}
