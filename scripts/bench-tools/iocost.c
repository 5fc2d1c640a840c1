// SPDX-License-Identifier: GPL-2.0
/*
 * iocost - what diofork adds to one direct-IO read, per mode.
 *
 *   iocost -d DEV [-n IOS] [-b BLOCKS] [-q QD] -M MODE[,MODE...]
 *
 * Synchronous 4 KiB O_DIRECT preads from DEV, one at a time, so every
 * nanosecond of the submit and completion path is on the clock.  Meant for
 * a null_blk device that completes in the submitting context (irqmode=0):
 * then the read is nearly all CPU path, and the modes' extra cost per IO
 * shows at its largest, with little noise.
 *
 * With -q QD (QD > 1) the reads go through libaio instead, QD of them in
 * flight, on whatever device DEV is: the same per-IO figure for the
 * asynchronous path fio's QD32 jobs take (submit in io_submit(), release
 * at completion, in interrupt context).  The in-flight reads are reaped
 * before every mode switch.
 *
 * BLOCKS blocks of IOS reads per mode, the modes interleaved block by block
 * (the first mode rotating), so a change in the host's load hits every
 * mode alike.  After each mode switch IOS/4 reads run untimed: under TCG
 * the first reads after a switch ran about 20% slower, whatever the mode.
 *
 * Prints, per mode, the mean time per read of the fastest block and the
 * median and quartiles over blocks.  Interference (the other vCPU, the
 * host) only ever adds time, so the fastest block is the figure least
 * disturbed by it; on multi-threaded TCG the blocks of one mode spread
 * about 30%:
 *
 *   iocost row=MODE ns_min=N ns_per_io=N p25=N p75=N blocks=N
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <libaio.h>

#include "benchmode.h"

#define IO_SIZE		4096
#define SPAN		1024	/* reads cycle over this many blocks */
#define MAX_MODES	8
#define MAX_QD		256

static double now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

static int read_n(int fd, void *buf, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		if (pread(fd, buf, IO_SIZE, (off_t)(i % SPAN) * IO_SIZE) != IO_SIZE) {
			perror("iocost: pread");
			return -1;
		}
	}
	return 0;
}

/* @n reads, @qd of them in flight through libaio on @ctx; bufs: @qd pages. */
static int aio_read_n(io_context_t ctx, int fd, char *bufs, int qd, int n)
{
	static struct iocb cbs[MAX_QD], *ptrs[MAX_QD];
	static struct io_event ev[MAX_QD];
	int next = 0, done = 0, i, k, got;

	for (i = 0; i < qd && next < n; i++, next++) {
		io_prep_pread(&cbs[i], fd, bufs + (size_t)i * IO_SIZE, IO_SIZE,
			      (off_t)(next % SPAN) * IO_SIZE);
		ptrs[i] = &cbs[i];
	}
	if (i && io_submit(ctx, i, ptrs) != i)
		goto fail;
	while (done < n) {
		got = io_getevents(ctx, 1, qd, ev, NULL);
		if (got < 1)
			goto fail;
		for (k = 0, i = 0; i < got; i++) {
			struct iocb *cb = ev[i].obj;

			if (ev[i].res != IO_SIZE)
				goto fail;
			done++;
			if (next >= n)
				continue;
			io_prep_pread(cb, fd, cb->u.c.buf, IO_SIZE,
				      (off_t)(next++ % SPAN) * IO_SIZE);
			ptrs[k++] = cb;
		}
		if (k && io_submit(ctx, k, ptrs) != k)
			goto fail;
	}
	return 0;
fail:
	fprintf(stderr, "iocost: libaio read failed\n");
	return -1;
}

static int reads(io_context_t ctx, int fd, void *buf, int qd, int n)
{
	return qd > 1 ? aio_read_n(ctx, fd, buf, qd, n) : read_n(fd, buf, n);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void print_usage(void)
{
	fprintf(stderr, "usage: iocost -d DEV [-n IOS] [-b BLOCKS] [-q QD] -M MODE[,MODE...]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *dev = NULL;
	char *modes[MAX_MODES], *list = NULL, *tok;
	int nmodes = 0, nios = 2000, nblocks = 20, qd = 1, fd, opt, b, k, m;
	io_context_t ctx = 0;
	double *res, t0;
	void *buf;

	while ((opt = getopt(argc, argv, "d:n:b:q:M:")) != -1) {
		switch (opt) {
		case 'd':
			dev = optarg;
			break;
		case 'n':
			nios = atoi(optarg);
			break;
		case 'b':
			nblocks = atoi(optarg);
			break;
		case 'q':
			qd = atoi(optarg);
			break;
		case 'M':
			list = strdup(optarg);
			break;
		default:
			print_usage();
		}
	}
	if (!dev || !list || nios < 1 || nblocks < 1 || qd < 1 || qd > MAX_QD)
		print_usage();
	for (tok = strtok(list, ","); tok && nmodes < MAX_MODES; tok = strtok(NULL, ","))
		modes[nmodes++] = tok;
	if (!nmodes)
		print_usage();

	fd = open(dev, O_RDONLY | O_DIRECT);
	if (fd < 0 || posix_memalign(&buf, IO_SIZE, (size_t)qd * IO_SIZE)) {
		perror(dev);
		return 1;
	}
	if (qd > 1 && io_setup(qd, &ctx)) {
		fprintf(stderr, "iocost: io_setup failed\n");
		return 1;
	}
	res = calloc((size_t)nmodes * nblocks, sizeof(*res));
	if (!res)
		return 1;

	for (b = 0; b < nblocks; b++) {
		for (k = 0; k < nmodes; k++) {
			m = (k + b) % nmodes;
			if (set_mode(modes[m])) {
				fprintf(stderr, "iocost: cannot set mode %s\n", modes[m]);
				return 1;
			}
			if (reads(ctx, fd, buf, qd, nios / 4))
				return 1;
			t0 = now_ns();
			if (reads(ctx, fd, buf, qd, nios))
				return 1;
			res[m * nblocks + b] = (now_ns() - t0) / nios;
		}
	}
	set_mode("off");

	for (m = 0; m < nmodes; m++) {
		double *r = res + m * nblocks;

		qsort(r, nblocks, sizeof(*r), cmp_double);
		printf("iocost%s row=%s ns_min=%.0f ns_per_io=%.0f p25=%.0f p75=%.0f blocks=%d\n",
		       qd > 1 ? "_aio" : "", modes[m], r[0], r[nblocks / 2], r[nblocks / 4],
		       r[(3 * nblocks) / 4], nblocks);
	}
	return 0;
}
