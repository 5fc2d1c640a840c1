// SPDX-License-Identifier: GPL-2.0
/*
 * drain_wait - acceptance tests for diofork's "drain" mode.
 *
 * In drain mode fork() (not vfork, posix_spawn or any CLONE_VM clone) of a
 * process whose mm has tracked DIO in flight waits, before it copies
 * anything and with new DIO of that mm held off, until that DIO is done;
 * then it forks.  Knob: drain_timeout_ms.
 *
 * Every test makes reads slow with dm-delay over $DIOFORK_DEV1 (read delay
 * $DIOFORK_DRAIN_DELAY_MS, 3000 ms), from a process C the test forks:
 *
 *  fork_waits           C has one slow 4 KiB read in flight (a thread) and
 *                       forks.  The control that proves the test has power:
 *                       fork returns no earlier than 80% of the delay after
 *                       the read was submitted, with no tracked DIO left in
 *                       flight (dio_inflight 0 at return), drain_forks_waited
 *                       and drain_waits +1 or more (drain_wait_hist agrees),
 *                       no timeout or abort; C's write to the buffer after
 *                       fork leaves the read's data intact.
 *  vfork_no_wait        C has 64 slow libaio reads in flight and calls
 *  posix_spawn_no_wait  vfork()+_exit(), or posix_spawn(/bin/true)+waitpid:
 *                       each returns within 1 s with the reads still in
 *                       flight, drain_forks_waited and forks unchanged; the
 *                       reads then complete with the device's data.
 *  sigkill_forker       C forks while its CLONE_VM sibling's read is in
 *                       flight; the fork still waits after 300 ms; SIGKILL
 *                       C: reaped within 1 s and while the read is still in
 *                       flight; drain_aborted +1; the read completes with
 *                       the device's data, gauges back to 0, no task in D
 *                       state.  The read runs in a sibling task (same mm,
 *                       own thread group) because a thread of C in an
 *                       uninterruptible DIO wait (or C's exit_aio()) would
 *                       hold C's reaping until the IO completes.
 *  drain_timeout        drain_timeout_ms=200: fork returns after about
 *                       200 ms (0.15 to 1.0 s) with the read still in
 *                       flight, drain_timeouts +1 or more.  Restored to 0.
 *  rmmod_during_wait    rmmod diofork while C's fork waits (runs last):
 *                       rmmod returns within 30 s, the fork then returns,
 *                       C exits 0; insmod $DIOFORK_KO, mode drain accepted,
 *                       gauges 0, a new read is tracked and retired, no
 *                       task in D state.
 *
 * On a kernel that pins DIO pages itself (dio_pins: yes, 6.12) drain is
 * passive: fork copies such pages, and no fork waits.  There fork_waits
 * checks the opposite (the fork returns with the read in flight, nothing
 * waited, the module's kernel file says "drain: passive", the read's data
 * intact), and the tests of a waiting fork (sigkill_forker, drain_timeout,
 * rmmod_during_wait) SKIP.
 *
 * Every test sets mode drain in its setup and puts "off" back.  SKIP (4)
 * when the module is not loaded, dmsetup or the dm-delay target is missing,
 * /bin/true is missing (posix_spawn), or $DIOFORK_KO does not exist (rmmod).
 *
 * Tunables (environment): DIOFORK_DRAIN_DELAY_MS, DIOFORK_DEV0/
 * DIOFORK_DEV1, DIOFORK_KO (/opt/diofork/diofork.ko).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "dftest.h"

#define PAGE_SZ		4096UL
#define IDLE_TIMEOUT_S	2.0		/* gauges must reach 0 within this */
#define NR_AIO		64		/* slow reads in flight, no-wait tests */
#define DM_NAME		"diofork_drain_delay"
#define DM_BASE_SECTOR	((1ULL << 21) + (64ULL << 11))	/* 1 GiB + 64 MiB into DEV1 */
#define DM_SECTORS	(1ULL << 11)	/* 1 MiB, all of it pattern-filled */
#define DRAIN_TIMEOUT_MS 200
#define CHECK_LEN	3584		/* the read's bytes C's own write leaves alone */

/* A marker in the kernel log, to line the console log up with the test. */
#define kmsg(fmt, ...)	df_kmsg("drain_wait: " fmt, ##__VA_ARGS__)

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

static const char *const drain_names[] = {
	"drain_forks_waited", "drain_waits", "drain_timeouts", "drain_aborted",
	"drain_alloc_failures", "drain_dio_held_off", "forks",
	"forks_with_dio_inflight", "dio_submitted_read", "dio_completed_read",
	NULL,
};

static const char *true_path(void)
{
	static const char *const cand[] = { "/bin/true", "/usr/bin/true" };
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(cand); i++)
		if (!access(cand[i], X_OK))
			return cand[i];
	return NULL;
}

/* ------------------------------------------------------------------ */
/* the process with slow DIO in flight                                 */
/* ------------------------------------------------------------------ */

enum dv_kind {
	DK_FORK_THREAD,		/* a thread reads, C forks */
	DK_FORK_SIBLING,	/* a CLONE_VM sibling reads, C forks */
	DK_VFORK,		/* NR_AIO libaio reads, C vforks */
	DK_SPAWN,		/* NR_AIO libaio reads, C posix_spawns */
};

enum { DV_START, DV_INFLIGHT, DV_FORKING, DV_FORKED, DV_DONE, DV_FAILED };

static const char *const dv_phases[] = {
	"start", "in flight", "forking", "forked", "done", "failed",
};

/* Shared (MAP_SHARED) by the test, C and C's reader sibling. */
struct dv {
	volatile int phase;
	volatile int err;		/* positive errno, C side */
	volatile int err_at;		/* phase at the error */
	volatile pid_t s_pid, child_pid;
	volatile double t_submit, t_fork0, t_fork1, t_wait1, t_io_done;
	volatile int io_done;
	volatile long io_res;		/* bytes, or -errno (aio: first bad) */
	volatile long io_bad;		/* offset of the first bad byte, or -1 */
	volatile int nr_bad_aio;	/* aio reads with wrong data */
	volatile int op_status;		/* wait status of vfork/spawn child */
	volatile unsigned long long inflight_at_return;
	volatile unsigned long long waited0, waited1, forks0, forks1;
	volatile unsigned long long inflight0;
};

struct dv_read {
	struct dv *v;
	int fd;
	unsigned char *page;
	uint64_t key;
};

/* The reader: raw syscalls only (a CLONE_VM sibling shares C's TLS). */
static int dv_reader(void *arg)
{
	struct dv_read *r = arg;
	long ret;

	r->v->t_submit = df_now();
	ret = syscall(SYS_pread64, r->fd, r->page, PAGE_SZ, 0);
	r->v->t_io_done = df_now();
	r->v->io_res = ret < 0 ? -errno : ret;
	r->v->io_bad = ret == (long)PAGE_SZ ?
		df_pattern_check_sectors(r->page, CHECK_LEN, r->key, DF_MAGIC) : 0;
	r->v->io_done = 1;
	return 0;
}

static void *dv_reader_thread(void *arg)
{
	dv_reader(arg);
	return NULL;
}

static int dv_fail(struct dv *v, int err)
{
	v->err = err;
	v->err_at = v->phase;
	v->phase = DV_FAILED;
	return 1;
}

/* Until the module tracks at least n reads in flight. 0 or errno. */
static int dv_wait_tracked(struct dv *v, unsigned long long n)
{
	unsigned long long seen;
	int ret;

	ret = df_wait_inflight(n, 5, &v->io_done, &seen);
	if (!ret)
		v->inflight0 = seen;
	return -ret;
}

static unsigned long long dv_stat(const char *name)
{
	struct df_stats st;

	if (df_stats_read(&st))
		return ~0ULL;
	return df_stats_val(&st, name);
}

/* C, fork kinds: a slow read in flight, then fork(). */
static int dv_forker(struct dv *v, const char *dev, bool sibling)
{
	static struct dv_read r;
	size_t stack_len = 256 << 10;
	unsigned char *stack = NULL;
	pthread_t th;
	int ret, status;
	pid_t pid;

	r.v = v;
	r.key = DM_BASE_SECTOR;
	r.page = df_map_anon(PAGE_SZ, false);
	if (!r.page)
		return dv_fail(v, ENOMEM);
	memset(r.page, 0x5a, PAGE_SZ);
	r.fd = open(dev, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (r.fd < 0)
		return dv_fail(v, errno);
	if (sibling) {
		stack = df_map_anon(stack_len, false);
		if (!stack)
			return dv_fail(v, ENOMEM);
		pid = clone(dv_reader, stack + stack_len,
			    CLONE_VM | CLONE_PARENT | SIGCHLD, &r);
		if (pid < 0)
			return dv_fail(v, errno);
		v->s_pid = pid;
	} else {
		ret = pthread_create(&th, NULL, dv_reader_thread, &r);
		if (ret)
			return dv_fail(v, ret);
	}
	ret = dv_wait_tracked(v, 1);
	if (ret)
		return dv_fail(v, ret);
	v->phase = DV_INFLIGHT;

	v->t_fork0 = df_now();
	v->phase = DV_FORKING;
	pid = fork();
	if (pid == 0)
		_exit(0);
	v->t_fork1 = df_now();
	if (pid < 0)
		return dv_fail(v, errno);
	v->inflight_at_return = dv_stat("dio_inflight");
	v->child_pid = pid;
	v->phase = DV_FORKED;
	/* a COW fault on the read's page, after the fork */
	r.page[PAGE_SZ - 1] = 0xee;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!sibling) {
		pthread_join(th, NULL);
		v->io_bad = v->io_res == (long)PAGE_SZ ?
			df_pattern_check_sectors(r.page, CHECK_LEN, r.key, DF_MAGIC) : 0;
	}
	v->phase = DV_DONE;
	return 0;
}

/* vfork()+_exit(): nothing may be live across the vfork here. */
static pid_t __attribute__((noinline)) dv_vfork(void)
{
	pid_t pid = vfork();

	if (pid == 0)
		_exit(0);
	return pid;
}

/* C, no-wait kinds: NR_AIO slow reads in flight, then vfork or posix_spawn. */
static int dv_nowait(struct dv *v, const char *dev, bool spawn)
{
	struct timespec ts = { .tv_sec = 30 };
	struct iocb cbs[NR_AIO], *cbp[NR_AIO];
	struct io_event ev[NR_AIO];
	char *const argv[] = { (char *)true_path(), NULL };
	unsigned char *buf;
	io_context_t ctx = 0;
	int fd, ret, i, done = 0, status;
	pid_t pid;

	buf = df_map_anon(NR_AIO * PAGE_SZ, false);
	if (!buf)
		return dv_fail(v, ENOMEM);
	memset(buf, 0x5a, NR_AIO * PAGE_SZ);
	fd = open(dev, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0)
		return dv_fail(v, errno);
	ret = io_setup(NR_AIO, &ctx);
	if (ret)
		return dv_fail(v, -ret);
	for (i = 0; i < NR_AIO; i++) {
		io_prep_pread(&cbs[i], fd, buf + i * PAGE_SZ, PAGE_SZ,
			      (uint64_t)i * PAGE_SZ);
		cbs[i].data = (void *)(unsigned long)i;
		cbp[i] = &cbs[i];
	}
	v->t_submit = df_now();
	ret = io_submit(ctx, NR_AIO, cbp);
	if (ret != NR_AIO)
		return dv_fail(v, ret < 0 ? -ret : EIO);
	ret = dv_wait_tracked(v, NR_AIO);
	if (ret)
		return dv_fail(v, ret);
	v->phase = DV_INFLIGHT;
	v->waited0 = dv_stat("drain_forks_waited");
	v->forks0 = dv_stat("forks");

	v->t_fork0 = df_now();
	v->phase = DV_FORKING;
	if (spawn) {
		ret = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
		if (ret)
			return dv_fail(v, ret);
	} else {
		pid = dv_vfork();
		if (pid < 0)
			return dv_fail(v, errno);
	}
	v->t_fork1 = df_now();
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	v->t_wait1 = df_now();
	v->op_status = status;
	v->inflight_at_return = dv_stat("dio_inflight");
	v->waited1 = dv_stat("drain_forks_waited");
	v->forks1 = dv_stat("forks");
	v->phase = DV_FORKED;

	v->io_res = PAGE_SZ;
	v->io_bad = -1;
	while (done < NR_AIO) {
		ret = io_getevents(ctx, 1, NR_AIO - done, ev, &ts);
		if (ret <= 0)
			return dv_fail(v, ret < 0 ? -ret : ETIMEDOUT);
		for (i = 0; i < ret; i++) {
			long k = (long)ev[i].data;

			if ((long)ev[i].res != (long)PAGE_SZ) {
				v->io_res = (long)ev[i].res;
				continue;
			}
			if (df_pattern_check_sectors(buf + k * PAGE_SZ, PAGE_SZ,
						     DM_BASE_SECTOR + k * 8,
						     DF_MAGIC) >= 0) {
				if (!v->nr_bad_aio++)
					v->io_bad = k * PAGE_SZ;
			}
		}
		done += ret;
	}
	v->t_io_done = df_now();
	v->io_done = 1;
	io_destroy(ctx);
	v->phase = DV_DONE;
	return 0;
}

/* ------------------------------------------------------------------ */
/* the fixture                                                         */
/* ------------------------------------------------------------------ */

FIXTURE(drain) {
	struct dv *v;
	pid_t c_pid;
	char dev[128];
	bool dm_made;
	bool unloaded;			/* rmmod succeeded, not loaded back yet */
	unsigned long delay_ms;
	double delay;
};

FIXTURE_SETUP(drain)
{
	char why[256], msg[512];
	struct stat st;
	int ret;

	self->c_pid = -1;
	self->delay_ms = df_env_ulong("DIOFORK_DRAIN_DELAY_MS", 3000);
	self->delay = self->delay_ms / 1000.0;
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

	ret = df_mode_set("drain");
	if (ret == -EOPNOTSUPP)
		SKIP(return, "mode drain not accepted (EOPNOTSUPP)");
	ASSERT_EQ(0, ret) TH_LOG("mode drain: %s", strerror(-ret));
	df_dm_path(DM_NAME, self->dev, sizeof(self->dev));
	/* last: a setup that fails or skips gets no teardown */
	ret = df_dm_delay_make(DM_NAME, DM_BASE_SECTOR, DM_SECTORS,
			       self->delay_ms, msg, sizeof(msg));
	ASSERT_EQ(0, ret) TH_LOG("%s", msg);
	self->dm_made = true;
}

FIXTURE_TEARDOWN(drain)
{
	char msg[512];
	double t;
	int ret;

	if (self->v) {
		/* a reader in its uninterruptible read: let it finish */
		df_kill_reap(self->c_pid, self->delay + 10);
		df_kill_reap(self->v->s_pid, self->delay + 10);
		while (waitpid(-1, NULL, WNOHANG | __WALL) > 0)
			;
	}
	if (self->unloaded && !df_module_present()) {
		ret = df_run_bounded(df_do_insmod, (void *)df_ko_path(), 60, &t);
		if (ret)
			ksft_print_msg("teardown: insmod %s: %d\n", df_ko_path(), ret);
	}
	if (df_module_present()) {
		df_knob_set("drain_timeout_ms", 0);
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

/* Fork C; return once it reached phase `until` (0) or failed (-1). */
static int dv_start(FIXTURE_DATA(drain) *self, enum dv_kind kind, int until)
{
	struct dv *v = self->v;
	double end;
	int status;

	memset((void *)v, 0, sizeof(*v));
	fflush(stdout);
	fflush(stderr);
	self->c_pid = fork();
	if (self->c_pid < 0)
		return -1;
	if (self->c_pid == 0) {
		switch (kind) {
		case DK_FORK_THREAD:
			_exit(dv_forker(v, self->dev, false));
		case DK_FORK_SIBLING:
			_exit(dv_forker(v, self->dev, true));
		case DK_VFORK:
			_exit(dv_nowait(v, self->dev, false));
		case DK_SPAWN:
			_exit(dv_nowait(v, self->dev, true));
		}
		_exit(1);
	}
	for (end = df_now() + 10; v->phase < until; usleep(1000)) {
		if (df_now() > end)
			return -1;
		if (waitpid(self->c_pid, &status, WNOHANG) == self->c_pid) {
			self->c_pid = -1;
			return v->phase >= until && v->phase != DV_FAILED ? 0 : -1;
		}
	}
	return v->phase == DV_FAILED ? -1 : 0;
}

/* Wait for C to exit: 0 with *status, or as df_wait_bounded. */
static int dv_reap(FIXTURE_DATA(drain) *self, int *status, double timeout)
{
	int ret;

	if (self->c_pid <= 0)
		return -ECHILD;
	ret = df_wait_bounded(self->c_pid, status, timeout);
	if (!ret)
		self->c_pid = -1;
	return ret;
}

/* ------------------------------------------------------------------ */
/* tests                                                               */
/* ------------------------------------------------------------------ */

#define FORK_EARLY_WHY \
	"fork returned %.3f s after the read began, before it could complete (delay %.1f s)"
#define PASSIVE_WHY \
	"this kernel pins DIO pages (dio_pins: yes): drain is passive, no fork waits"

/* On a kernel that pins DIO: the fork went ahead with the read in flight. */
static void fork_passive_checks(struct __test_metadata *_metadata,
				FIXTURE_DATA(drain) *self,
				const struct df_stats *s0,
				const struct df_stats *s1, double since_submit)
{
	char drain[128] = "";

	EXPECT_EQ(0, df_kernel_get("drain", drain, sizeof(drain)));
	EXPECT_EQ(0, strncmp(drain, "passive", 7)) TH_LOG("kernel file: drain: %s", drain);
	EXPECT_TRUE(since_submit < 0.5 * self->delay)
		TH_LOG("fork returned %.3f s after the read began (delay %.1f s): it waited",
		       since_submit, self->delay);
	EXPECT_LE(1, self->v->inflight_at_return)
		TH_LOG("fork returned only once the read was done");
	EXPECT_EQ(0, df_stats_delta(s0, s1, "drain_forks_waited"));
	EXPECT_EQ(0, df_stats_delta(s0, s1, "drain_waits"));
	EXPECT_LE(1, df_stats_delta(s0, s1, "forks_with_dio_inflight"));
}

TEST_F_TIMEOUT(drain, fork_waits, 60)
{
	struct dv *v = self->v;
	struct df_stats s0, s1;
	long long h0, h1;
	double since_submit;
	char dlist[512];
	int ret, status, idle;

	ASSERT_EQ(0, df_wait_idle(&s0, IDLE_TIMEOUT_S));
	h0 = df_hist_count("drain_wait_hist");
	kmsg("fork_waits: read delay %lu ms\n", self->delay_ms);
	ret = dv_start(self, DK_FORK_THREAD, DV_FORKING);
	ASSERT_EQ(0, ret) TH_LOG("C failed in phase %s: %s", dv_phases[v->err_at],
				 strerror(v->err));
	ret = dv_reap(self, &status, self->delay + 15);
	ASSERT_EQ(0, ret) TH_LOG("C not done within the delay + 15 s (phase %s)",
				 dv_phases[v->phase]);
	idle = df_wait_idle(&s1, IDLE_TIMEOUT_S);
	h1 = df_hist_count("drain_wait_hist");
	ASSERT_EQ(DV_DONE, v->phase) TH_LOG("C failed in phase %s: %s",
					    dv_phases[v->err_at], strerror(v->err));
	since_submit = v->t_fork1 - v->t_submit;
	ksft_print_msg("fork took %.3f s, returned %.3f s after the read was submitted ",
		       v->t_fork1 - v->t_fork0, since_submit);
	printf("(delay %lu ms), read done %.3f s after submission; "
	       "dio_inflight at fork return %llu; data %s\n",
	       self->delay_ms,
	       v->t_io_done - v->t_submit, v->inflight_at_return,
	       v->io_bad < 0 ? "ok" : "wrong");
	print_some("counters", &s0, &s1, drain_names);
	ksft_print_msg("drain_wait_hist count %+lld, drain_wait_ns_max %llu\n",
		       h1 - h0, df_stats_val(&s1, "drain_wait_ns_max"));

	EXPECT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	if (df_kernel_pins_dio()) {
		ksft_print_msg("%s\n", PASSIVE_WHY);
		fork_passive_checks(_metadata, self, &s0, &s1, since_submit);
		goto data;
	}
	EXPECT_TRUE(since_submit >= 0.8 * self->delay)
		TH_LOG(FORK_EARLY_WHY,
		       since_submit, self->delay);
	EXPECT_EQ(0, v->inflight_at_return) TH_LOG("fork returned with tracked DIO in flight");
	EXPECT_LE(1, df_stats_delta(&s0, &s1, "drain_forks_waited"));
	EXPECT_LE(1, df_stats_delta(&s0, &s1, "drain_waits"));
	EXPECT_EQ(df_stats_delta(&s0, &s1, "drain_waits"), h1 - h0)
		TH_LOG("drain_wait_hist does not agree with drain_waits");
	EXPECT_EQ(0, df_stats_delta(&s0, &s1, "drain_timeouts"));
	EXPECT_EQ(0, df_stats_delta(&s0, &s1, "drain_aborted"));
data:
	EXPECT_EQ((long)PAGE_SZ, v->io_res);
	EXPECT_EQ(-1, v->io_bad) TH_LOG("read data lost at offset %ld after the fork",
					v->io_bad);
	EXPECT_EQ(0, idle);
	EXPECT_TRUE(df_no_dstate(2, dlist, sizeof(dlist))) TH_LOG("D-state tasks: %s", dlist);
}

static void nowait_test(struct __test_metadata *_metadata,
			FIXTURE_DATA(drain) *self, enum dv_kind kind,
			const char *what)
{
	struct dv *v = self->v;
	struct df_stats s0, s1;
	double op, opw;
	int ret, status, idle;

	ASSERT_EQ(0, df_wait_idle(&s0, IDLE_TIMEOUT_S));
	kmsg("%s with %d slow reads in flight\n", what, NR_AIO);
	ret = dv_start(self, kind, DV_FORKED);
	ASSERT_EQ(0, ret) TH_LOG("C failed in phase %s: %s", dv_phases[v->err_at],
				 strerror(v->err));
	op = v->t_fork1 - v->t_fork0;
	opw = v->t_wait1 - v->t_fork0;
	ksft_print_msg("%s returned after %.3f s (%.3f s with waitpid), ",
		       what, op, opw);
	printf("%.3f s after the reads were submitted (delay %lu ms); "
	       "dio_inflight before %llu, after %llu; "
	       "drain_forks_waited %+lld, forks %+lld\n",
	       v->t_wait1 - v->t_submit, self->delay_ms,
	       v->inflight0, v->inflight_at_return,
	       (long long)(v->waited1 - v->waited0),
	       (long long)(v->forks1 - v->forks0));
	ret = dv_reap(self, &status, self->delay + 35);
	ASSERT_EQ(0, ret) TH_LOG("C not done within the delay + 35 s (phase %s)",
				 dv_phases[v->phase]);
	idle = df_wait_idle(&s1, IDLE_TIMEOUT_S);
	print_some("counters", &s0, &s1, drain_names);
	ASSERT_EQ(DV_DONE, v->phase) TH_LOG("C failed in phase %s: %s",
					    dv_phases[v->err_at], strerror(v->err));
	ksft_print_msg("%d reads done %.3f s after submission, %d with wrong data\n",
		       NR_AIO, v->t_io_done - v->t_submit, v->nr_bad_aio);

	EXPECT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	EXPECT_TRUE(WIFEXITED(v->op_status) && !WEXITSTATUS(v->op_status))
		TH_LOG("%s child: wait status %#x", what, v->op_status);
	EXPECT_TRUE(op < 1.0 && opw < 1.0)
		TH_LOG("%s took %.3f s (%.3f s with waitpid) with DIO in flight",
		       what, op, opw);
	EXPECT_LE(1, v->inflight_at_return)
		TH_LOG("no DIO in flight any more when %s returned: it waited", what);
	EXPECT_EQ(0, (long long)(v->waited1 - v->waited0))
		TH_LOG("drain_forks_waited moved: %s was made to wait", what);
	EXPECT_EQ(0, (long long)(v->forks1 - v->forks0))
		TH_LOG("forks moved: %s was taken for a fork that copies the mm",
		       what);
	EXPECT_EQ((long)PAGE_SZ, v->io_res);
	EXPECT_EQ(0, v->nr_bad_aio) TH_LOG("first wrong read at buffer offset %ld",
					   v->io_bad);
	EXPECT_EQ(0, idle);
}

TEST_F_TIMEOUT(drain, vfork_no_wait, 60)
{
	nowait_test(_metadata, self, DK_VFORK, "vfork()+_exit()");
}

TEST_F_TIMEOUT(drain, posix_spawn_no_wait, 60)
{
	if (!true_path())
		SKIP(return, "no /bin/true or /usr/bin/true to posix_spawn");
	nowait_test(_metadata, self, DK_SPAWN, "posix_spawn(true)");
}

/*
 * Start C (a fork kind) and check that 300 ms later its fork still waits,
 * with the read in flight; s0: the stats from before.
 */
static void dv_fork_blocked(struct __test_metadata *_metadata,
			    FIXTURE_DATA(drain) *self, enum dv_kind kind,
			    const struct df_stats *s0)
{
	struct dv *v = self->v;
	struct df_stats s1;
	int ret;

	ret = dv_start(self, kind, DV_FORKING);
	ASSERT_EQ(0, ret) TH_LOG("C failed in phase %s: %s", dv_phases[v->err_at],
				 strerror(v->err));
	usleep(300000);
	ASSERT_EQ(0, df_stats_read(&s1));
	print_some("300 ms into the fork", s0, &s1, drain_names);
	ASSERT_EQ(DV_FORKING, v->phase)
		TH_LOG("fork returned after %.3f s with DIO in flight (phase %s)",
		       v->t_fork1 - v->t_fork0, dv_phases[v->phase]);
	ASSERT_FALSE(v->io_done) TH_LOG("read completed within 300 ms: no delay?");
	EXPECT_LE(1, df_stats_delta(s0, &s1, "drain_forks_waited"));
}

TEST_F_TIMEOUT(drain, sigkill_forker, 60)
{
	struct dv *v = self->v;
	struct df_stats s0, s2;
	double tk, reap, t_reaped, io_end;
	bool io_done_at_reap;
	char dlist[512];
	int ret, status, idle;

	if (df_kernel_pins_dio())
		SKIP(return, PASSIVE_WHY);

	ASSERT_EQ(0, df_wait_idle(&s0, IDLE_TIMEOUT_S));
	kmsg("sigkill_forker: read delay %lu ms\n", self->delay_ms);
	dv_fork_blocked(_metadata, self, DK_FORK_SIBLING, &s0);

	kill(self->c_pid, SIGKILL);
	tk = df_now();
	ret = dv_reap(self, &status, 10);
	t_reaped = df_now();
	reap = t_reaped - tk;
	io_done_at_reap = v->io_done;
	ASSERT_EQ(0, ret) TH_LOG("killed forker not reaped within 10 s");
	io_end = v->t_submit + self->delay;
	ksft_print_msg("forker SIGKILLed %.3f s into its fork; "
		       "reaped %.3f s after the kill, %.3f s before the read's delay ends; "
		       "read in flight at reap: %s\n",
		       tk - v->t_fork0, reap, io_end - t_reaped,
		       io_done_at_reap ? "no" : "yes");
	EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	EXPECT_TRUE(reap < 1.0) TH_LOG("SIGKILL took %.3f s to end the fork's wait", reap);
	EXPECT_FALSE(io_done_at_reap) TH_LOG("the kill ended only when the read completed");

	ret = df_wait_bounded(v->s_pid, &status, self->delay + 10);
	ASSERT_EQ(0, ret) TH_LOG("reader not done within the delay + 10 s: stuck IO");
	v->s_pid = 0;
	ksft_print_msg("read done %.3f s after submission: %ld bytes, data %s\n",
		       v->t_io_done - v->t_submit, v->io_res,
		       v->io_bad < 0 ? "ok" : "wrong");
	EXPECT_EQ((long)PAGE_SZ, v->io_res);
	EXPECT_EQ(-1, v->io_bad) TH_LOG("wrong data in the read page at offset %ld",
					v->io_bad);
	idle = df_wait_idle(&s2, IDLE_TIMEOUT_S);
	print_some("after the read", &s0, &s2, drain_names);
	EXPECT_LE(1, df_stats_delta(&s0, &s2, "drain_aborted"));
	EXPECT_EQ(0, df_stats_delta(&s0, &s2, "drain_timeouts"));
	EXPECT_EQ(0, idle) TH_LOG("gauges not 0: dio_inflight=%llu dio_pages_inflight=%llu",
				  df_stats_val(&s2, "dio_inflight"),
				  df_stats_val(&s2, "dio_pages_inflight"));
	EXPECT_TRUE(df_no_dstate(2, dlist, sizeof(dlist))) TH_LOG("D-state tasks: %s", dlist);
}

TEST_F_TIMEOUT(drain, drain_timeout, 60)
{
	struct dv *v = self->v;
	struct df_stats s0, s1;
	unsigned long knob = 0;
	double took;
	int ret, status;

	if (df_kernel_pins_dio())
		SKIP(return, PASSIVE_WHY);

	ASSERT_EQ(0, df_knob_set("drain_timeout_ms", DRAIN_TIMEOUT_MS));
	ASSERT_EQ(0, df_knob_get("drain_timeout_ms", &knob));
	ASSERT_EQ(DRAIN_TIMEOUT_MS, knob);
	ASSERT_EQ(0, df_wait_idle(&s0, IDLE_TIMEOUT_S));
	kmsg("drain_timeout: %d ms, read delay %lu ms\n", DRAIN_TIMEOUT_MS,
	     self->delay_ms);
	ret = dv_start(self, DK_FORK_THREAD, DV_FORKED);
	ASSERT_EQ(0, ret) TH_LOG("C failed in phase %s: %s", dv_phases[v->err_at],
				 strerror(v->err));
	ASSERT_EQ(0, df_stats_read(&s1));
	took = v->t_fork1 - v->t_fork0;
	ksft_print_msg("drain_timeout_ms=%d: fork returned after %.3f s (read delay %lu ms); "
		       "dio_inflight at return %llu\n",
		       DRAIN_TIMEOUT_MS, took, self->delay_ms,
		       v->inflight_at_return);
	print_some("counters", &s0, &s1, drain_names);
	EXPECT_TRUE(took >= DRAIN_TIMEOUT_MS * 0.75 / 1000 && took < 1.0)
		TH_LOG("fork waited %.3f s, not about %d ms (%lld timed-out waits)",
		       took, DRAIN_TIMEOUT_MS, df_stats_delta(&s0, &s1, "drain_timeouts"));
	EXPECT_LE(1, v->inflight_at_return)
		TH_LOG("fork returned only once the read was done");
	EXPECT_LE(1, df_stats_delta(&s0, &s1, "drain_timeouts"));

	ret = dv_reap(self, &status, self->delay + 10);
	ASSERT_EQ(0, ret) TH_LOG("C not done within the delay + 10 s: stuck IO");
	EXPECT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	EXPECT_EQ((long)PAGE_SZ, v->io_res);
	EXPECT_EQ(0, df_knob_set("drain_timeout_ms", 0));
	EXPECT_EQ(0, df_knob_get("drain_timeout_ms", &knob));
	EXPECT_EQ(0, knob);
}

/* Last: it unloads and reloads the module. */
TEST_F_TIMEOUT(drain, rmmod_during_wait, 120)
{
	struct dv *v = self->v;
	struct df_stats s0, s1, s2;
	double t_rm0, t_rm, t_ins, end, io_end;
	char mode[DF_MODE_NAME_MAX] = "", dlist[512];
	unsigned char *buf;
	int rm, ins, ret, status, fd, idle;
	struct stat st;

	if (df_kernel_pins_dio())
		SKIP(return, PASSIVE_WHY);

	if (stat(df_ko_path(), &st))
		SKIP(return, "%s: %s (set DIOFORK_KO): not unloading what cannot be loaded back",
		     df_ko_path(), strerror(errno));
	ASSERT_EQ(0, df_wait_idle(&s0, IDLE_TIMEOUT_S));
	kmsg("rmmod_during_wait: read delay %lu ms\n", self->delay_ms);
	dv_fork_blocked(_metadata, self, DK_FORK_THREAD, &s0);

	kmsg("rmmod_during_wait: rmmod diofork with a fork waiting\n");
	t_rm0 = df_now();
	rm = df_run_bounded(df_do_rmmod, NULL, 30, &t_rm);
	ASSERT_NE(-ETIMEDOUT, rm) TH_LOG("rmmod diofork hung for %.0f s with a fork waiting",
					 t_rm);
	self->unloaded = rm == 0;
	for (end = df_now() + 5; v->phase == DV_FORKING && df_now() < end;
	     usleep(1000))
		;
	io_end = v->t_submit + self->delay;
	ksft_print_msg("rmmod: %s after %.3f s ",
		       rm == 0 ? "unloaded" : strerror(rm), t_rm);
	printf("(returned %+.3f s from the end of the read's delay); "
	       "the fork %s %.3f s after rmmod began (read done: %s)\n",
	       t_rm0 + t_rm - io_end,
	       v->phase >= DV_FORKED ? "returned" : "had not returned",
	       (v->phase >= DV_FORKED ? v->t_fork1 : df_now()) - t_rm0,
	       v->io_done ? "yes" : "no");
	EXPECT_EQ(0, rm) TH_LOG("rmmod diofork: %s", strerror(rm));
	EXPECT_LE(DV_FORKED, v->phase) TH_LOG("the waiting fork did not return after rmmod");
	ret = dv_reap(self, &status, self->delay + 10);
	ASSERT_EQ(0, ret) TH_LOG("C not done within the delay + 10 s: stuck IO");
	EXPECT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	EXPECT_EQ(DV_DONE, v->phase);
	EXPECT_EQ((long)PAGE_SZ, v->io_res);
	ksft_print_msg("read done %.3f s after submission: %ld bytes\n",
		       v->t_io_done - v->t_submit, v->io_res);

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
	ASSERT_EQ(0, df_mode_set("drain"));

	/* a fresh module: nothing in flight, and it tracks a new read */
	ASSERT_EQ(0, df_wait_idle(&s1, IDLE_TIMEOUT_S)) TH_LOG("reloaded module has DIO in flight");
	fd = df_blkdev_open(df_dev_path(0), NULL, NULL);
	buf = df_map_anon(PAGE_SZ, false);
	ASSERT_LE(0, fd);
	ASSERT_NE(NULL, buf);
	EXPECT_EQ((ssize_t)PAGE_SZ, pread(fd, buf, PAGE_SZ, 0));
	close(fd);
	munmap(buf, PAGE_SZ);
	idle = df_wait_idle(&s2, IDLE_TIMEOUT_S);
	print_some("reloaded module, one read", &s1, &s2, drain_names);
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
