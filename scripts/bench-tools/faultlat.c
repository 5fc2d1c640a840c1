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
 * still shared at the write.  Rows are interleaved in blocks: each round
 * visits every row of ROWS (rotated by one each round), switches the
 * module to the row's mode ("dontfork": mode off and MADV_DONTFORK on the
 * pool) and runs BLOCK pairs of samples (nodio, dio), until every row has
 * COUNT of each.  No DIO is in flight at a switch.
 *
 *   faultlat [-d DEV] [-c COUNT] [-b BLOCK] [-M off,pin,...]
 *     -M   rows (default: "current" = leave the mode alone)
 *
 * Prints, per row:
 *   faultlat row=R case=nodio n=N p50_us=X p90_us=X mean_us=X max_us=X
 *   faultlat row=R case=dio n=N p50_us=X p90_us=X mean_us=X max_us=X inflight_pct=X
 *   faultlat row=R case=dio_inflight n=N ...  (dio samples whose read was
 *                                              still in flight after the write)
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

#include "benchmode.h"

#define PAGE_SZ		4096UL
#define NPAGES		64
#define SECT		512UL
#define MAX_ROWS	8

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

static void report(const char *row, const char *name, double *v,
		   unsigned long n, const char *extra)
{
	double sum = 0;
	unsigned long i;

	if (!n) {		/* no sample: no figures (not zeros) */
		printf("faultlat row=%s case=%s n=0%s\n", row, name, extra);
		return;
	}
	qsort(v, n, sizeof(*v), cmp_double);
	for (i = 0; i < n; i++)
		sum += v[i];
	printf("faultlat row=%s case=%s n=%lu p50_us=%.1f p90_us=%.1f mean_us=%.1f max_us=%.1f%s\n",
	       row, name, n, v[n / 2], v[n * 9 / 10], sum / n, v[n - 1], extra);
}

struct row_stats {
	const char *name;
	double *nodio, *dio, *in;
	unsigned long n_nodio, n_dio, n_in;
};

/* One sample: returns the write's latency in us; *inflight for dio. */
static double sample(int fd, io_context_t ctx, int pfd[2],
		     unsigned char *p, unsigned long i, int dio,
		     int *inflight)
{
	struct iocb cb, *cbp = &cb;
	struct io_event ev;
	int r, status, done = 0;
	double t0, t1;
	pid_t pid;
	char c = 0;

	/* exclusive and writable again; atomic stores are never elided */
	__atomic_store_n(&p[SECT], (unsigned char)i, __ATOMIC_RELAXED);
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
	__atomic_fetch_add(&p[PAGE_SZ - 1], 1, __ATOMIC_RELAXED);
	t1 = now();
	if (dio) {
		struct timespec zero = { 0, 0 };

		done = io_getevents(ctx, 0, 1, &ev, &zero);
		*inflight = done == 0;
		while (done < 1) {
			r = io_getevents(ctx, 1, 1, &ev, NULL);
			if (r < 0 && r != -EINTR)
				die("io_getevents", -r);
			if (r > 0)
				done = 1;
		}
	}
	if (write(pfd[1], &c, 1) != 1)
		die("write pipe", errno);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return (t1 - t0) * 1e6;
}

int main(int argc, char **argv)
{
	const char *dev = "/dev/nullb0";
	char rows_buf[256] = "current", *tok, *save, extra[64];
	struct row_stats rs[MAX_ROWS];
	unsigned long count = 100, block = 5, round, i = 0;
	int opt, r, pfd[2], nrows = 0, k;
	io_context_t ctx = 0;
	unsigned char *pool;

	while ((opt = getopt(argc, argv, "d:c:b:M:")) != -1) {
		switch (opt) {
		case 'd':
			dev = optarg;
			break;
		case 'c':
			count = strtoul(optarg, NULL, 0);
			break;
		case 'b':
			block = strtoul(optarg, NULL, 0);
			break;
		case 'M':
			snprintf(rows_buf, sizeof(rows_buf), "%s", optarg);
			break;
		default:
			fprintf(stderr, "usage: %s [-d DEV] [-c COUNT] [-b BLOCK] [-M ROWS]\n",
				"faultlat");
			return 2;
		}
	}
	if (!count)
		count = 1;
	if (!block)
		block = 1;
	for (tok = strtok_r(rows_buf, ",", &save); tok && nrows < MAX_ROWS;
	     tok = strtok_r(NULL, ",", &save)) {
		rs[nrows].name = tok;
		rs[nrows].nodio = calloc(count, sizeof(double));
		rs[nrows].dio = calloc(count, sizeof(double));
		rs[nrows].in = calloc(count, sizeof(double));
		if (!rs[nrows].nodio || !rs[nrows].dio || !rs[nrows].in)
			die("calloc", errno);
		rs[nrows].n_nodio = 0;
		rs[nrows].n_dio = 0;
		rs[nrows].n_in = 0;
		nrows++;
	}
	if (!nrows)
		return 2;

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
	if (pipe(pfd))
		die("pipe", errno);

	for (round = 0; round * block < count; round++) {
		for (k = 0; k < nrows; k++) {
			struct row_stats *s = &rs[(k + round) % nrows];
			int dontfork = !strcmp(s->name, "dontfork"), in = 0;
			const char *mode = dontfork ? "off" : s->name;
			unsigned long b;
			double l;

			if (strcmp(mode, "current")) {
				r = set_mode(mode);
				if (r)
					die(mode, -r);
			}
			if (madvise(pool, NPAGES * PAGE_SZ,
				    dontfork ? MADV_DONTFORK : MADV_DOFORK))
				die("madvise", errno);
			for (b = 0; b < block && s->n_nodio < count; b++) {
				l = sample(fd, ctx, pfd, pool + (i % NPAGES) * PAGE_SZ,
					   i, 0, &in);
				i++;
				s->nodio[s->n_nodio++] = l;
				l = sample(fd, ctx, pfd, pool + (i % NPAGES) * PAGE_SZ,
					   i, 1, &in);
				i++;
				s->dio[s->n_dio++] = l;
				if (in)
					s->in[s->n_in++] = l;
			}
		}
	}
	for (k = 0; k < nrows; k++) {
		struct row_stats *s = &rs[k];

		report(s->name, "nodio", s->nodio, s->n_nodio, "");
		snprintf(extra, sizeof(extra), " inflight_pct=%.0f",
			 s->n_dio ? 100.0 * s->n_in / s->n_dio : 0.0);
		report(s->name, "dio", s->dio, s->n_dio, extra);
		report(s->name, "dio_inflight", s->in, s->n_in, "");
	}
	return 0;
}
