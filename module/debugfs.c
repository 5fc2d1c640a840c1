// SPDX-License-Identifier: GPL-2.0
/*
 * /sys/kernel/debug/diofork/
 *
 *   mode    rw  the modes, the active one in brackets; write a name to switch
 *   stats   r   one "name value" line per counter (/proc/vmstat style)
 *   reset   w   write "reset" to zero the monotonic counters (gauges stay)
 *   kernel  r   does this kernel pin DIO pages itself, and which hooks are on
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
	*ppos += count;
	return count;
}

static const struct file_operations diofork_reset_fops = {
	.owner		= THIS_MODULE,
	.write		= diofork_reset_write,
	.llseek		= noop_llseek,
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
	return 0;
}

void diofork_debugfs_exit(void)
{
	debugfs_remove(diofork_dir);
}
