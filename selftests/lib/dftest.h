/* SPDX-License-Identifier: GPL-2.0 */
/*
 * dftest.h - helpers shared by the diofork selftests (dftest.c, and
 * dfproc.c for child processes).
 *
 * Everything here is plain libc: no kselftest macros, so the helpers can be
 * used from fixtures, from main() and from the --demo path alike.  Functions
 * that can fail return 0 or a negative errno.
 */
#ifndef DFTEST_H
#define DFTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define DF_DEBUGFS_DIR	"/sys/kernel/debug/diofork"
#define DF_MODE_FILE	DF_DEBUGFS_DIR "/mode"
#define DF_STATS_FILE	DF_DEBUGFS_DIR "/stats"
#define DF_RESET_FILE	DF_DEBUGFS_DIR "/reset"
#define DF_KERNEL_FILE	DF_DEBUGFS_DIR "/kernel"

#define DF_MODE_NAME_MAX	32	/* the module takes at most 31 bytes */
#define DF_MAX_MODES		16
#define DF_STAT_NAME_MAX	64
#define DF_MAX_STATS		128

/* -------- generic file I/O -------- */

/* Read a whole (small) file into buf, NUL terminated. Returns length or -errno. */
ssize_t df_read_file(const char *path, char *buf, size_t size);
/* open(O_WRONLY), exactly one write() at offset 0, close. 0 or -errno. */
int df_write_once(const char *path, const void *buf, size_t len);

/*
 * A line in the kernel log (/dev/kmsg, best effort, at most 255 bytes), to
 * line the console log up with a test.  A test's prefix goes into fmt:
 *	#define kmsg(fmt, ...) df_kmsg("lock_wait: " fmt, ##__VA_ARGS__)
 */
void df_kmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* -------- memory, mounts -------- */

/* mmap of len bytes, anonymous, MAP_SHARED or MAP_PRIVATE; NULL if it failed. */
void *df_map_anon(size_t len, bool shared);
/* Is dir a mount point (another device than its parent)? */
bool df_is_mountpoint(const char *dir);
/* umount dir, up to tries times 100 ms apart, while it is a mount point. */
void df_umount_retry(const char *dir, int tries);

/* -------- diofork debugfs -------- */

/* Is the module's debugfs directory there (module loaded, debugfs mounted)? */
bool df_module_present(void);

struct df_modes {
	int nr;
	int active;			/* index into name[], -1 if none */
	int nr_active;			/* how many bracketed entries were seen */
	char name[DF_MAX_MODES][DF_MODE_NAME_MAX];
};

/*
 * Parse a mode line such as "[off] observe pin lock drain\n".
 * Returns 0, or -EBADMSG when the line is malformed (bad characters, a name
 * too long, too many names, stray brackets).  nr_active is filled in even
 * when it is not 1 so a test can report it.
 */
int df_modes_parse(const char *line, struct df_modes *m);
int df_modes_read(struct df_modes *m);
/* Active mode name into buf. 0, -ENOENT (module absent) or -errno. */
int df_mode_get(char *buf, size_t size);
/* One write of the name (no newline added) at offset 0. 0 or -errno. */
int df_mode_set(const char *mode);

struct df_stat {
	char name[DF_STAT_NAME_MAX];
	unsigned long long value;
};

struct df_stats {
	int nr;
	struct df_stat s[DF_MAX_STATS];
};

/* Strict /proc/vmstat style parse: "name value\n" lines. -EBADMSG if not. */
int df_stats_parse(const char *text, struct df_stats *st);
int df_stats_read(struct df_stats *st);
/* Lookup by name; false if absent. */
bool df_stats_get(const struct df_stats *st, const char *name,
		  unsigned long long *val);
int df_stats_reset(void);
/* Value of a counter, 0 if absent. */
unsigned long long df_stats_val(const struct df_stats *st, const char *name);
/* b - a of a counter (absent: 0). */
long long df_stats_delta(const struct df_stats *a, const struct df_stats *b,
			 const char *name);
/*
 * "tag: name=+delta ..." into buf for the counters in names (a NULL
 * terminated list), truncated to fit; returns buf.
 */
char *df_stats_deltas(char *buf, size_t size, const char *tag,
		      const struct df_stats *a, const struct df_stats *b,
		      const char *const *names);
/*
 * Poll the stats (every 10 ms) until the in-flight gauges (dio_inflight,
 * dio_pages_inflight) are 0: a
 * completion may release its pages a moment after the syscall returned.
 * 0, -ETIMEDOUT after timeout s (st holds the last reading) or -errno from
 * the read.
 */
int df_wait_idle(struct df_stats *st, double timeout);
/*
 * Poll the stats (every 2 ms) until dio_inflight is at least n: 0 (and
 * *seen, if not NULL, that reading), -EALREADY once *done (if not NULL) is
 * set, -ETIMEDOUT after timeout s, or -EIO if the stats cannot be read.
 */
int df_wait_inflight(unsigned long long n, double timeout,
		     const volatile int *done, unsigned long long *seen);

/*
 * A numeric debugfs file of the module (lock_timeout_ms, drain_timeout_ms):
 * read it, or write the value in decimal, once, at offset 0.  0 or -errno.
 */
int df_knob_get(const char *file, unsigned long *val);
int df_knob_set(const char *file, unsigned long val);
/*
 * Sum of the counts of a histogram file (lock_wait_hist, drain_wait_hist:
 * "<lower_ns> <upper_ns> <count>" lines, "#" comments).  The sum, -errno,
 * or -EBADMSG if a line is malformed.
 */
long long df_hist_count(const char *file);

/* Value of "key: value" in the module's kernel file. 0, -ENOENT or -errno. */
int df_kernel_get(const char *key, char *val, size_t size);

/* Does the kernel pin DIO pages itself (the module's dio_pins: yes)? */
bool df_kernel_pins_dio(void);

/* -------- /proc and /sys -------- */

/*
 * User tasks (threads included, kernel threads not) in state D: their
 * count, or -errno; buf lists them as "pid/tid(comm)" (truncated).
 */
int df_dstate_tasks(char *buf, size_t size);
/*
 * No user task in D state, polled every 20 ms for at most timeout s: true,
 * or false with the tasks left in list (or /proc unreadable).
 */
bool df_no_dstate(double timeout, char *list, size_t size);

/*
 * Fold per-cpu vmstat deltas into the global counters (root only): small
 * changes of node counters such as nr_foll_pin_acquired are otherwise not
 * visible in /proc/vmstat until the next vmstat_update (vm.stat_interval).
 */
void df_vmstat_refresh(void);
/* Value of a /proc/vmstat counter, -1 if missing (call refresh first). */
long long df_vmstat(const char *name);
/*
 * FOLL_PIN balance, nr_foll_pin_acquired - nr_foll_pin_released, after a
 * refresh; LLONG_MIN when a counter is missing.  acq and rel (if not NULL)
 * get the two counters (-1 if missing).
 */
long long df_foll_pin_balance(long long *acq, long long *rel);
/* Value in kB of a /proc/meminfo line ("AnonHugePages"), -1 if missing. */
long long df_meminfo_kb(const char *name);
/* Sum of "key:" kB over the smaps entries that overlap [addr, addr+len). */
long long df_smaps_kb(const void *addr, size_t len, const char *key);
/* Active value of a "[x] y z" sysfs choice file into buf. 0 or -errno. */
int df_sysfs_choice(const char *path, char *buf, size_t size);
/* Kernel release (uname -r) as a static string. */
const char *df_kernel_release(void);

/* -------- block devices (null_blk) -------- */

/*
 * Path of the test device number idx (0 or 1).  Defaults to /dev/nullbN;
 * $DIOFORK_DEV0 / $DIOFORK_DEV1 override it (host testing on a loop device).
 */
const char *df_dev_path(int idx);
/* Open a block device O_RDWR|O_DIRECT; -ENOENT if it does not exist. */
int df_blkdev_open(const char *path, uint64_t *size_bytes, int *lbs);
/*
 * Fill [off, off + len) of a block device with the per-sector pattern
 * (DF_MAGIC), keyed by key_sector + (byte offset - off) / 512.  0 or -errno.
 */
int df_blkdev_fill(const char *dev, uint64_t off, size_t len,
		   uint64_t key_sector);
/* One null_blk module parameter ("irqmode") into buf; -ENOENT if none. */
int df_nullb_param(const char *name, char *buf, size_t size);

/* -------- processes (dfproc.c) -------- */

/*
 * Exit codes below are the child's exit status, or 128 + the signal that
 * killed it.
 */

/* Run argv (PATH search) with stdout/stderr to /dev/null. Exit code, or -errno. */
int df_run(char *const argv[]);
/*
 * Like df_run, with stdout and stderr captured into out (NUL terminated,
 * truncated to size - 1, trailing newlines dropped).
 */
int df_run_capture(char *const argv[], char *out, size_t size);
/* Is name an executable file: a path with a '/', else searched in $PATH? */
bool df_have_prog(const char *name);

/*
 * waitpid(pid, WNOHANG | flags) every poll_us microseconds, for at most
 * timeout s: 0 and *status, -ETIMEDOUT (child left running) or -errno.
 */
int df_wait_poll(pid_t pid, int *status, int flags, double timeout,
		 unsigned int poll_us);
/* df_wait_poll of any kind of child (__WALL), every 1 ms. */
int df_wait_bounded(pid_t pid, int *status, double timeout);
/* SIGKILL pid (if > 0) and reap it, waiting at most timeout s. */
void df_kill_reap(pid_t pid, double timeout);
/*
 * Run fn(arg) in a fork()ed child, waited for as df_wait_poll(flags,
 * poll_us) for at most timeout s.  The child's exit code (fn's return
 * value), -ETIMEDOUT (the child left behind: hung in the kernel, nothing
 * more can be done) or -errno.  *secs: the time the child took, or was
 * given.
 */
int df_run_poll(int (*fn)(void *), void *arg, int flags, double timeout,
		unsigned int poll_us, double *secs);
/* df_run_poll as df_wait_bounded waits: any child, every 1 ms. */
int df_run_bounded(int (*fn)(void *), void *arg, double timeout, double *secs);

/* -------- loading the module (dfproc.c) -------- */

#define DF_DEFAULT_KO	"/opt/diofork/diofork.ko"

/* The module's .ko: $DIOFORK_KO, else DF_DEFAULT_KO. */
const char *df_ko_path(void);
/*
 * Child bodies for df_run_bounded: rmmod diofork (O_NONBLOCK; unused is
 * ignored), insmod of the .ko at path ko.  0 or a positive errno.
 */
int df_do_rmmod(void *unused);
int df_do_insmod(void *ko);

/* -------- device mapper (dmsetup) -------- */

/*
 * Can this system make a dm-delay device: dmsetup in PATH, the dm control
 * node, the delay target (modprobe dm-delay is tried).  0, or -ENOENT with
 * the reason in why.
 */
int df_dm_delay_usable(char *why, size_t size);
/*
 * dmsetup create name with a one-line table; waits (bounded) for
 * /dev/mapper/<name>.  Sets DM_DISABLE_UDEV=1 unless already set.  0, the
 * dmsetup exit status (> 0) or -errno; msg gets dmsetup's output.
 */
int df_dm_create(const char *name, const char *table, char *msg, size_t size);
/* dmsetup remove name, retried while busy for up to timeout s. 0 or as above. */
int df_dm_remove(const char *name, double timeout, char *msg, size_t size);
/* "/dev/mapper/<name>" into buf. */
void df_dm_path(const char *name, char *buf, size_t size);
/*
 * dm-delay device name over sectors [base, base + sectors) of test device
 * 1, reads delayed by delay_ms, the region filled with the pattern keyed
 * by base first; a leftover device of that name is removed.  0, or as
 * df_dm_create() (or -errno), msg saying what failed.
 */
int df_dm_delay_make(const char *name, uint64_t base, uint64_t sectors,
		     unsigned long delay_ms, char *msg, size_t size);

/* -------- data patterns -------- */

/*
 * Every 8-byte word of a pattern encodes magic, sector and word index, so a
 * zeroed buffer, a stale buffer and data from the wrong sector all differ.
 */
#define DF_MAGIC	0xd10f0f4bd10f0f4bULL

void df_pattern_fill(void *buf, size_t len, uint64_t sector, uint64_t magic);
/* Byte offset of the first mismatch, or -1 if buf holds the pattern. */
ssize_t df_pattern_check(const void *buf, size_t len, uint64_t sector,
			 uint64_t magic);
/*
 * The same per 512-byte sector: sector s of buf gets the pattern of device
 * sector (sector + s), so any 512-aligned slice of a device region filled
 * this way can be checked on its own.  len is a multiple of 512.
 */
void df_pattern_fill_sectors(void *buf, size_t len, uint64_t sector,
			     uint64_t magic);
ssize_t df_pattern_check_sectors(const void *buf, size_t len, uint64_t sector,
				 uint64_t magic);

/* -------- time, random numbers -------- */

double df_now(void);		/* CLOCK_MONOTONIC seconds */
/* xorshift64: the next value of the sequence in *s (not 0), stored back. */
uint64_t df_rng_next(uint64_t *s);
/* Unsigned integer from the environment, def if unset or malformed. */
unsigned long df_env_ulong(const char *name, unsigned long def);

#endif /* DFTEST_H */
