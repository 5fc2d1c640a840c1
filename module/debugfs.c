// SPDX-License-Identifier: GPL-2.0
/*
 * /sys/kernel/debug/diofork/
 *
 *   mode              rw  the modes, the active one in brackets; write a name
 *   stats             r   one "name value" line per counter (vmstat style)
 *   reset             w   "reset" zeroes the monotonic counters (gauges stay)
 *   kernel            r   does this kernel pin DIO itself; hooks attached
 *   lock_timeout_ms   rw  bound on a lock-mode fault wait, 0 = unbounded
 *   drain_timeout_ms  rw  bound on a drain-mode fork wait, 0 = unbounded
 *   lock_wait_hist    r   log2 histogram of lock-mode waits (ns)
 *   drain_wait_hist   r   log2 histogram of drain-mode waits (ns)
 *
 * Every write is one complete value at offset 0.  Anything else (unknown
 * name, empty, too long, binary bytes, a second partial write) is -EINVAL
 * and changes nothing.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>
#include <linux/string.h>
#include "diofork.h"
#include "policy_wait.h"

#define DIOFORK_WRITE_MAX	32

static struct dentry *diofork_dir;

/* Copy one whole write of at most DIOFORK_WRITE_MAX - 1 bytes. */
static int diofork_copy_write(char *kbuf, const char __user *ubuf,
			      size_t count, loff_t *ppos)
{
	if (*ppos || !count || count >= DIOFORK_WRITE_MAX)
		return -EINVAL;
	if (copy_from_user(kbuf, ubuf, count))
		return -EFAULT;
	kbuf[count] = '\0';
	/* a NUL inside would hide what follows it from the parsers */
	if (strlen(kbuf) != count)
		return -EINVAL;
	return 0;
}

/* ---- mode ---------------------------------------------------------------- */

static int diofork_mode_show(struct seq_file *m, void *v)
{
	enum diofork_mode cur = diofork_mode_get();
	int i;

	for (i = 0; i < DIOFORK_NR_MODES; i++)
		seq_printf(m, i == cur ? "%s[%s]" : "%s%s", i ? " " : "",
			   diofork_mode_names[i]);
	seq_putc(m, '\n');
	return 0;
}

static int diofork_mode_open(struct inode *inode, struct file *file)
{
	return single_open(file, diofork_mode_show, NULL);
}

static ssize_t diofork_mode_write(struct file *file, const char __user *ubuf,
				  size_t count, loff_t *ppos)
{
	char kbuf[DIOFORK_WRITE_MAX];
	enum diofork_mode mode;
	int ret;

	ret = diofork_copy_write(kbuf, ubuf, count, ppos);
	if (!ret)
		ret = diofork_mode_parse(kbuf, count, &mode);
	if (!ret)
		ret = diofork_mode_set(mode);
	if (ret)
		return ret;
	*ppos += count;
	return count;
}

static const struct file_operations diofork_mode_fops = {
	.owner		= THIS_MODULE,
	.open		= diofork_mode_open,
	.read		= seq_read,
	.write		= diofork_mode_write,
	.llseek		= seq_lseek,
	.release	= single_release,
};

/* ---- stats ---------------------------------------------------------------- */

static int diofork_stats_show(struct seq_file *m, void *v)
{
	int i;

	for (i = 0; i < DIOFORK_NR_STATS; i++)
		seq_printf(m, "%s %ld\n", diofork_stat_name(i),
			   diofork_stat_read(i));
	seq_printf(m, "track_missed %lu\n", diofork_hooks_missed());
	diofork_wait_show_stats(m, "lock", &diofork_lock.stats);
	diofork_wait_show_stats(m, "drain", &diofork_drain.stats);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(diofork_stats);

/* ---- reset ---------------------------------------------------------------- */

static ssize_t diofork_reset_write(struct file *file, const char __user *ubuf,
				   size_t count, loff_t *ppos)
{
	char kbuf[DIOFORK_WRITE_MAX];
	int ret;

	ret = diofork_copy_write(kbuf, ubuf, count, ppos);
	if (ret)
		return ret;
	if (memcmp(kbuf, "reset", 5) ||
	    !(count == 5 || (count == 6 && kbuf[5] == '\n')))
		return -EINVAL;
	diofork_stats_reset();
	diofork_wait_reset(&diofork_lock.stats);
	diofork_wait_reset(&diofork_drain.stats);
	*ppos += count;
	return count;
}

static const struct file_operations diofork_reset_fops = {
	.owner		= THIS_MODULE,
	.write		= diofork_reset_write,
	.llseek		= noop_llseek,
};

/* ---- lock_wait_hist, drain_wait_hist ----------------------------------- */

static int diofork_hist_show(struct seq_file *m, void *v)
{
	diofork_wait_show_hist(m, m->private);
	return 0;
}

static int diofork_hist_open(struct inode *inode, struct file *file)
{
	return single_open(file, diofork_hist_show, inode->i_private);
}

static const struct file_operations diofork_hist_fops = {
	.owner		= THIS_MODULE,
	.open		= diofork_hist_open,
	.read		= seq_read,
	.llseek		= seq_lseek,
	.release	= single_release,
};

/* ---- lock_timeout_ms, drain_timeout_ms ----------------------------------- */

static int diofork_timeout_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%u\n", READ_ONCE(*(unsigned int *)m->private));
	return 0;
}

static int diofork_timeout_open(struct inode *inode, struct file *file)
{
	return single_open(file, diofork_timeout_show, inode->i_private);
}

/* A decimal number of milliseconds, 0 (unbounded) to one hour. */
static ssize_t diofork_timeout_write(struct file *file, const char __user *ubuf,
				     size_t count, loff_t *ppos)
{
	unsigned int *timeout = file_inode(file)->i_private;
	char kbuf[DIOFORK_WRITE_MAX];
	size_t len = count;
	unsigned int val;
	int ret;

	ret = diofork_copy_write(kbuf, ubuf, count, ppos);
	if (ret)
		return ret;
	/* digits, then at most one newline: nothing kstrtouint() also takes */
	if (kbuf[len - 1] == '\n')
		kbuf[--len] = '\0';
	if (!len || strspn(kbuf, "0123456789") != len ||
	    kstrtouint(kbuf, 10, &val) || val > 3600 * 1000)
		return -EINVAL;
	WRITE_ONCE(*timeout, val);
	*ppos += count;
	return count;
}

static const struct file_operations diofork_timeout_fops = {
	.owner		= THIS_MODULE,
	.open		= diofork_timeout_open,
	.read		= seq_read,
	.write		= diofork_timeout_write,
	.llseek		= seq_lseek,
	.release	= single_release,
};

/* ---- kernel --------------------------------------------------------------- */

static int diofork_kernel_show(struct seq_file *m, void *v)
{
	diofork_kernel_report(m);
	diofork_hooks_show(m);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(diofork_kernel);

int diofork_debugfs_init(void)
{
	diofork_dir = debugfs_create_dir(KBUILD_MODNAME, NULL);
	if (IS_ERR(diofork_dir))
		return PTR_ERR(diofork_dir);
	debugfs_create_file("mode", 0644, diofork_dir, NULL, &diofork_mode_fops);
	debugfs_create_file("stats", 0444, diofork_dir, NULL,
			    &diofork_stats_fops);
	debugfs_create_file("reset", 0200, diofork_dir, NULL,
			    &diofork_reset_fops);
	debugfs_create_file("kernel", 0444, diofork_dir, NULL,
			    &diofork_kernel_fops);
	debugfs_create_file("lock_timeout_ms", 0644, diofork_dir,
			    &diofork_lock.timeout_ms, &diofork_timeout_fops);
	debugfs_create_file("drain_timeout_ms", 0644, diofork_dir,
			    &diofork_drain.timeout_ms, &diofork_timeout_fops);
	debugfs_create_file("lock_wait_hist", 0444, diofork_dir,
			    &diofork_lock.stats, &diofork_hist_fops);
	debugfs_create_file("drain_wait_hist", 0444, diofork_dir,
			    &diofork_drain.stats, &diofork_hist_fops);
	return 0;
}

void diofork_debugfs_exit(void)
{
	debugfs_remove(diofork_dir);
}
