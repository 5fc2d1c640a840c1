// SPDX-License-Identifier: GPL-2.0
/*
 * dftest.c - helpers shared by the diofork selftests.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "dftest.h"

ssize_t df_read_file(const char *path, char *buf, size_t size)
{
	size_t len = 0;
	ssize_t ret;
	int fd;

	if (!size)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while (len < size - 1) {
		ret = read(fd, buf + len, size - 1 - len);
		if (ret < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			close(fd);
			return ret;
		}
		if (ret == 0)
			break;
		len += ret;
	}
	buf[len] = '\0';
	close(fd);
	return len;
}

int df_write_once(const char *path, const void *buf, size_t len)
{
	ssize_t ret;
	int fd, err = 0;

	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = write(fd, buf, len);
	if (ret < 0)
		err = -errno;
	else if ((size_t)ret != len)
		err = -EIO;	/* short write: the module took part of it */
	close(fd);
	return err;
}

void df_kmsg(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	ssize_t ret;
	int fd;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ret = write(fd, buf, strlen(buf));	/* best effort */
	(void)ret;
	close(fd);
}

void *df_map_anon(size_t len, bool shared)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS,
		       -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

bool df_is_mountpoint(const char *dir)
{
	char parent[128];
	struct stat a, b;

	snprintf(parent, sizeof(parent), "%s/..", dir);
	if (stat(dir, &a) || stat(parent, &b))
		return false;
	return a.st_dev != b.st_dev;
}

void df_umount_retry(const char *dir, int tries)
{
	int i;

	for (i = 0; i < tries && df_is_mountpoint(dir); i++) {
		if (!umount2(dir, 0))
			break;
		usleep(100000);
	}
}

bool df_module_present(void)
{
	struct stat st;

	return stat(DF_DEBUGFS_DIR, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool df_is_name_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

int df_modes_parse(const char *line, struct df_modes *m)
{
	const char *p = line;

	memset(m, 0, sizeof(*m));
	m->active = -1;
	while (*p && *p != '\n') {
		bool bracket = false;
		size_t n = 0;

		if (*p == ' ') {
			p++;
			continue;
		}
		if (*p == '[') {
			bracket = true;
			p++;
		}
		if (m->nr >= DF_MAX_MODES)
			return -EBADMSG;
		while (df_is_name_char(*p)) {
			if (n >= DF_MODE_NAME_MAX - 1)
				return -EBADMSG;
			m->name[m->nr][n++] = *p++;
		}
		if (!n)
			return -EBADMSG;
		if (bracket) {
			if (*p != ']')
				return -EBADMSG;
			p++;
			m->nr_active++;
			m->active = m->nr;
		}
		if (*p && *p != ' ' && *p != '\n')
			return -EBADMSG;
		m->nr++;
	}
	/* Nothing may follow the newline. */
	if (*p == '\n' && p[1])
		return -EBADMSG;
	return m->nr ? 0 : -EBADMSG;
}

int df_modes_read(struct df_modes *m)
{
	char buf[1024];
	ssize_t ret;

	ret = df_read_file(DF_MODE_FILE, buf, sizeof(buf));
	if (ret < 0)
		return ret;
	return df_modes_parse(buf, m);
}

int df_mode_get(char *buf, size_t size)
{
	struct df_modes m;
	int ret;

	ret = df_modes_read(&m);
	if (ret)
		return ret;
	if (m.nr_active != 1)
		return -EBADMSG;
	snprintf(buf, size, "%s", m.name[m.active]);
	return 0;
}

int df_mode_set(const char *mode)
{
	return df_write_once(DF_MODE_FILE, mode, strlen(mode));
}

int df_stats_parse(const char *text, struct df_stats *st)
{
	const char *p = text;

	memset(st, 0, sizeof(*st));
	while (*p) {
		struct df_stat *s;
		size_t n = 0;
		int digits = 0;
		unsigned long long v = 0;

		if (st->nr >= DF_MAX_STATS)
			return -E2BIG;
		s = &st->s[st->nr];
		while (df_is_name_char(*p)) {
			if (n >= DF_STAT_NAME_MAX - 1)
				return -EBADMSG;
			s->name[n++] = *p++;
		}
		if (!n || *p++ != ' ')
			return -EBADMSG;
		while (*p >= '0' && *p <= '9') {
			unsigned long long d = *p++ - '0';

			if (v > (~0ULL - d) / 10)
				return -ERANGE;
			v = v * 10 + d;
			digits++;
		}
		if (!digits || *p++ != '\n')
			return -EBADMSG;
		s->value = v;
		st->nr++;
	}
	return 0;
}

int df_stats_read(struct df_stats *st)
{
	static char buf[16384];
	ssize_t ret;

	ret = df_read_file(DF_STATS_FILE, buf, sizeof(buf));
	if (ret < 0)
		return ret;
	return df_stats_parse(buf, st);
}

bool df_stats_get(const struct df_stats *st, const char *name,
		  unsigned long long *val)
{
	int i;

	for (i = 0; i < st->nr; i++) {
		if (!strcmp(st->s[i].name, name)) {
			if (val)
				*val = st->s[i].value;
			return true;
		}
	}
	return false;
}

int df_stats_reset(void)
{
	return df_write_once(DF_RESET_FILE, "reset", 5);
}

unsigned long long df_stats_val(const struct df_stats *st, const char *name)
{
	unsigned long long v = 0;

	df_stats_get(st, name, &v);
	return v;
}

long long df_stats_delta(const struct df_stats *a, const struct df_stats *b,
			 const char *name)
{
	return (long long)(df_stats_val(b, name) - df_stats_val(a, name));
}

char *df_stats_deltas(char *buf, size_t size, const char *tag,
		      const struct df_stats *a, const struct df_stats *b,
		      const char *const *names)
{
	size_t n;

	n = snprintf(buf, size, "%s:", tag);
	for (; *names && n < size; names++)
		n += snprintf(buf + n, size - n, " %s=%+lld", *names,
			      df_stats_delta(a, b, *names));
	return buf;
}

static bool df_gauges_zero(const struct df_stats *st)
{
	return !df_stats_val(st, "dio_inflight") &&
	       !df_stats_val(st, "dio_pages_inflight");
}

int df_wait_idle(struct df_stats *st, double timeout)
{
	double end = df_now() + timeout;
	int ret;

	for (;;) {
		ret = df_stats_read(st);
		if (ret)
			return ret;
		if (df_gauges_zero(st))
			return 0;
		if (df_now() > end)
			return -ETIMEDOUT;
		usleep(10000);
	}
}

int df_wait_inflight(unsigned long long n, double timeout,
		     const volatile int *done, unsigned long long *seen)
{
	double end = df_now() + timeout;
	struct df_stats st;

	for (;; usleep(2000)) {
		if (df_stats_read(&st))
			return -EIO;
		if (df_stats_val(&st, "dio_inflight") >= n) {
			if (seen)
				*seen = df_stats_val(&st, "dio_inflight");
			return 0;
		}
		if (done && *done)
			return -EALREADY;
		if (df_now() > end)
			return -ETIMEDOUT;
	}
}

int df_kernel_get(const char *key, char *val, size_t size)
{
	char buf[4096], *line, *save = NULL;
	size_t klen = strlen(key);
	ssize_t ret;

	ret = df_read_file(DF_KERNEL_FILE, buf, sizeof(buf));
	if (ret < 0)
		return ret;
	for (line = strtok_r(buf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, key, klen) || line[klen] != ':')
			continue;
		line += klen + 1;
		while (*line == ' ')
			line++;
		snprintf(val, size, "%s", line);
		return 0;
	}
	return -ENOENT;
}

bool df_kernel_pins_dio(void)
{
	char v[64] = "";

	return !df_kernel_get("dio_pins", v, sizeof(v)) && !strncmp(v, "yes", 3);
}

/* "name value" or "name: value kB" files: /proc/vmstat, /proc/meminfo. */
static long long df_keyed_value(const char *path, const char *name, bool colon)
{
	char buf[16384], *line, *save = NULL;
	size_t nlen = strlen(name);

	if (df_read_file(path, buf, sizeof(buf)) < 0)
		return -1;
	for (line = strtok_r(buf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		const char *v = line + nlen;

		if (strncmp(line, name, nlen))
			continue;
		if (colon && *v++ != ':')
			continue;
		if (*v != ' ')
			continue;
		return strtoll(v, NULL, 10);
	}
	return -1;
}

void df_vmstat_refresh(void)
{
	/* Folds the per-cpu deltas; without it small changes stay invisible. */
	df_write_once("/proc/sys/vm/stat_refresh", "1", 1);
}

long long df_vmstat(const char *name)
{
	return df_keyed_value("/proc/vmstat", name, false);
}

long long df_foll_pin_balance(long long *acq, long long *rel)
{
	long long a, r;

	df_vmstat_refresh();
	a = df_vmstat("nr_foll_pin_acquired");
	r = df_vmstat("nr_foll_pin_released");
	if (acq)
		*acq = a;
	if (rel)
		*rel = r;
	return a < 0 || r < 0 ? LLONG_MIN : a - r;
}

long long df_meminfo_kb(const char *name)
{
	return df_keyed_value("/proc/meminfo", name, true);
}

long long df_smaps_kb(const void *addr, size_t len, const char *key)
{
	unsigned long lo = (unsigned long)addr, hi = lo + len;
	unsigned long start, end;
	size_t klen = strlen(key);
	bool in = false, found = false;
	long long sum = 0;
	char line[512];
	FILE *f;

	f = fopen("/proc/self/smaps", "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = start < hi && end > lo;
			continue;
		}
		if (in && !strncmp(line, key, klen) && line[klen] == ':') {
			sum += strtoll(line + klen + 1, NULL, 10);
			found = true;
		}
	}
	fclose(f);
	return found ? sum : -1;
}

int df_sysfs_choice(const char *path, char *buf, size_t size)
{
	char text[512], *l, *r;
	ssize_t ret;

	ret = df_read_file(path, text, sizeof(text));
	if (ret < 0)
		return ret;
	l = strchr(text, '[');
	r = l ? strchr(l, ']') : NULL;
	if (!r)
		return -EBADMSG;
	*r = '\0';
	snprintf(buf, size, "%s", l + 1);
	return 0;
}

const char *df_kernel_release(void)
{
	static struct utsname u;

	if (!u.release[0] && uname(&u))
		snprintf(u.release, sizeof(u.release), "unknown");
	return u.release;
}

const char *df_dev_path(int idx)
{
	static const char *const def[] = { "/dev/nullb0", "/dev/nullb1" };
	static const char *const env[] = { "DIOFORK_DEV0", "DIOFORK_DEV1" };
	const char *p;

	if (idx < 0 || idx > 1)
		return NULL;
	p = getenv(env[idx]);
	return p && *p ? p : def[idx];
}

int df_blkdev_open(const char *path, uint64_t *size_bytes, int *lbs)
{
	struct stat st;
	int fd, err;

	if (stat(path, &st))
		return -errno;
	if (!S_ISBLK(st.st_mode))
		return -ENOTBLK;
	fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (size_bytes && ioctl(fd, BLKGETSIZE64, size_bytes))
		goto err;
	if (lbs && ioctl(fd, BLKSSZGET, lbs))
		goto err;
	return fd;
err:
	err = -errno;
	close(fd);
	return err;
}

int df_blkdev_fill(const char *dev, uint64_t off, size_t len,
		   uint64_t key_sector)
{
	size_t chunk = 1 << 20, done;
	unsigned char *buf;
	int fd, ret = 0;

	fd = df_blkdev_open(dev, NULL, NULL);
	if (fd < 0)
		return fd;
	buf = df_map_anon(chunk, false);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	for (done = 0; done < len && !ret; done += chunk) {
		size_t n = len - done < chunk ? len - done : chunk;

		df_pattern_fill_sectors(buf, n, key_sector + done / 512, DF_MAGIC);
		if (pwrite(fd, buf, n, off + done) != (ssize_t)n)
			ret = -EIO;
	}
	munmap(buf, chunk);
	close(fd);
	return ret;
}

int df_nullb_param(const char *name, char *buf, size_t size)
{
	char path[256];
	ssize_t ret;

	snprintf(path, sizeof(path), "/sys/module/null_blk/parameters/%s", name);
	ret = df_read_file(path, buf, size);
	if (ret < 0)
		return ret;
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

static inline uint64_t df_pattern_word(uint64_t sector, uint64_t magic, size_t i)
{
	return magic ^ (sector * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)i << 48) ^ i;
}

void df_pattern_fill(void *buf, size_t len, uint64_t sector, uint64_t magic)
{
	uint64_t *w = buf;
	size_t i;

	for (i = 0; i < len / 8; i++)
		w[i] = df_pattern_word(sector, magic, i);
}

ssize_t df_pattern_check(const void *buf, size_t len, uint64_t sector,
			 uint64_t magic)
{
	const volatile uint64_t *w = buf;
	size_t i;

	for (i = 0; i < len / 8; i++)
		if (w[i] != df_pattern_word(sector, magic, i))
			return i * 8;
	return -1;
}

double df_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

uint64_t df_rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

unsigned long df_env_ulong(const char *name, unsigned long def)
{
	const char *s = getenv(name);
	unsigned long v;
	char *end;

	if (!s || !*s)
		return def;
	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || *end || *s == '-')
		return def;
	return v;
}

/* ---- helpers added for lock_wait and drain_wait ---- */

void df_dm_path(const char *name, char *buf, size_t size)
{
	snprintf(buf, size, "/dev/mapper/%s", name);
}

static bool df_dm_has_delay(void)
{
	static char *const argv[] = { "dmsetup", "targets", NULL };
	char out[2048], *line, *save = NULL;

	if (df_run_capture(argv, out, sizeof(out)))
		return false;
	for (line = strtok_r(out, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save))
		if (!strncmp(line, "delay", 5) && (line[5] == ' ' || line[5] == '\t'))
			return true;
	return false;
}

int df_dm_delay_usable(char *why, size_t size)
{
	static char *const modprobe[] = { "modprobe", "dm-delay", NULL };
	struct stat st;

	if (!df_have_prog("dmsetup")) {
		snprintf(why, size, "dmsetup not found in PATH");
		return -ENOENT;
	}
	if (stat("/dev/mapper/control", &st)) {
		snprintf(why, size, "/dev/mapper/control: %s (no device-mapper)",
			 strerror(errno));
		return -ENOENT;
	}
	if (df_dm_has_delay())
		return 0;
	df_run(modprobe);
	if (df_dm_has_delay())
		return 0;
	snprintf(why, size, "no dm-delay target (dmsetup targets; modprobe dm-delay failed)");
	return -ENOENT;
}

int df_dm_create(const char *name, const char *table, char *msg, size_t size)
{
	char *const argv[] = { "dmsetup", "create", (char *)name, "--table",
			       (char *)table, NULL };
	char path[256];
	struct stat st;
	double end;
	int ret;

	setenv("DM_DISABLE_UDEV", "1", 0);
	ret = df_run_capture(argv, msg, size);
	if (ret)
		return ret;
	df_dm_path(name, path, sizeof(path));
	for (end = df_now() + 5; stat(path, &st); usleep(10000))
		if (df_now() > end)
			return -errno;
	return 0;
}

int df_dm_delay_make(const char *name, uint64_t base, uint64_t sectors,
		     unsigned long delay_ms, char *msg, size_t size)
{
	char path[256], table[256], out[256];
	struct stat st;
	int ret;

	df_dm_path(name, path, sizeof(path));
	if (!stat(path, &st))
		df_dm_remove(name, 5, out, sizeof(out));
	ret = df_blkdev_fill(df_dev_path(1), base * 512, sectors * 512, base);
	if (ret) {
		snprintf(msg, size, "pattern fill of %s: %s", df_dev_path(1),
			 strerror(-ret));
		return ret;
	}
	snprintf(table, sizeof(table), "0 %llu delay %s %llu %lu",
		 (unsigned long long)sectors, df_dev_path(1),
		 (unsigned long long)base, delay_ms);
	ret = df_dm_create(name, table, out, sizeof(out));
	if (ret)
		snprintf(msg, size, "dmsetup create %s --table '%s': %d: %s",
			 name, table, ret, out);
	return ret;
}

int df_dm_remove(const char *name, double timeout, char *msg, size_t size)
{
	char *const argv[] = { "dmsetup", "remove", (char *)name, NULL };
	double end = df_now() + timeout;
	int ret;

	setenv("DM_DISABLE_UDEV", "1", 0);
	for (;;) {
		ret = df_run_capture(argv, msg, size);
		if (!ret || df_now() > end)
			return ret;
		usleep(100000);
	}
}

int df_knob_get(const char *file, unsigned long *val)
{
	char path[256], buf[64], *end;
	ssize_t ret;

	snprintf(path, sizeof(path), DF_DEBUGFS_DIR "/%s", file);
	ret = df_read_file(path, buf, sizeof(buf));
	if (ret < 0)
		return ret;
	errno = 0;
	*val = strtoul(buf, &end, 10);
	if (errno || end == buf || (*end && *end != '\n'))
		return -EBADMSG;
	return 0;
}

int df_knob_set(const char *file, unsigned long val)
{
	char path[256], buf[32];

	snprintf(path, sizeof(path), DF_DEBUGFS_DIR "/%s", file);
	snprintf(buf, sizeof(buf), "%lu", val);
	return df_write_once(path, buf, strlen(buf));
}

long long df_hist_count(const char *file)
{
	char path[256], buf[8192], *line, *save = NULL;
	unsigned long long lo, hi, n;
	long long sum = 0;
	ssize_t ret;

	snprintf(path, sizeof(path), DF_DEBUGFS_DIR "/%s", file);
	ret = df_read_file(path, buf, sizeof(buf));
	if (ret < 0)
		return ret;
	for (line = strtok_r(buf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#')
			continue;
		if (sscanf(line, "%llu %llu %llu", &lo, &hi, &n) != 3)
			return -EBADMSG;
		sum += n;
	}
	return sum;
}

void df_pattern_fill_sectors(void *buf, size_t len, uint64_t sector,
			     uint64_t magic)
{
	size_t s;

	for (s = 0; s < len / 512; s++)
		df_pattern_fill((char *)buf + s * 512, 512, sector + s, magic);
}

ssize_t df_pattern_check_sectors(const void *buf, size_t len, uint64_t sector,
				 uint64_t magic)
{
	ssize_t off;
	size_t s;

	for (s = 0; s < len / 512; s++) {
		off = df_pattern_check((const char *)buf + s * 512, 512,
				       sector + s, magic);
		if (off >= 0)
			return s * 512 + off;
	}
	return -1;
}

int df_dstate_tasks(char *buf, size_t size)
{
	char path[600], line[512], cmd[8];
	struct dirent *p, *t;
	size_t len = 0;
	DIR *pd, *td;
	int count = 0;

	if (size)
		buf[0] = '\0';
	pd = opendir("/proc");
	if (!pd)
		return -errno;
	while ((p = readdir(pd))) {
		if (p->d_name[0] < '1' || p->d_name[0] > '9')
			continue;
		/* kernel threads have an empty cmdline */
		snprintf(path, sizeof(path), "/proc/%s/cmdline", p->d_name);
		if (df_read_file(path, cmd, sizeof(cmd)) <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%s/task", p->d_name);
		td = opendir(path);
		if (!td)
			continue;
		while ((t = readdir(td))) {
			const char *lp, *rp;

			if (t->d_name[0] < '1' || t->d_name[0] > '9')
				continue;
			snprintf(path, sizeof(path), "/proc/%s/task/%s/stat",
				 p->d_name, t->d_name);
			if (df_read_file(path, line, sizeof(line)) <= 0)
				continue;
			/* "tid (comm) S ...": the comm may hold ") " */
			lp = strchr(line, '(');
			rp = strrchr(line, ')');
			if (!lp || !rp || rp < lp || rp[1] != ' ' || rp[2] != 'D')
				continue;
			count++;
			if (len < size)
				len += snprintf(buf + len, size - len, "%s%s/%s%.*s",
						len ? " " : "", p->d_name, t->d_name,
						(int)(rp + 1 - lp), lp);
		}
		closedir(td);
	}
	closedir(pd);
	return count;
}

bool df_no_dstate(double timeout, char *list, size_t size)
{
	double end = df_now() + timeout;
	int n;

	for (;;) {
		n = df_dstate_tasks(list, size);
		if (n <= 0)
			return n == 0;
		if (df_now() > end)
			return false;
		usleep(20000);
	}
}
