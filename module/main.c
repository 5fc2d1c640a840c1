// SPDX-License-Identifier: GPL-2.0
/*
 * diofork: compare mitigations for the direct-IO vs fork() COW race.
 *
 * A thread with O_DIRECT IO outstanding to a private anonymous buffer,
 * another thread calling fork(), then a COW fault in the parent: the parent
 * gets a new page and the DMA lands in the page the child now holds.  See
 * README.md.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/string.h>
#include "diofork.h"

static char *mode = "off";
module_param(mode, charp, 0444);
MODULE_PARM_DESC(mode,
		 "Mode at load: off, observe, pin, lock, drain (default: off). Change it later through debugfs.");

static int __init diofork_init(void)
{
	enum diofork_mode initial;
	int ret;

	ret = diofork_mode_parse(mode, strlen(mode), &initial);
	if (ret) {
		pr_err("unknown mode '%s'\n", mode);
		return ret;
	}

	ret = diofork_stats_init();
	if (ret)
		return ret;
	ret = diofork_track_init();
	if (ret)
		return ret;
	ret = diofork_hooks_init();
	if (ret)
		goto exit_track;
	ret = diofork_mode_init();
	if (ret)
		goto exit_track;
	ret = diofork_mode_set(initial);
	if (ret) {
		/* its hooks may be in: out with them, and the policies' state */
		pr_err("cannot enter mode %s (%d)\n", mode, ret);
		goto exit_mode;
	}
	ret = diofork_debugfs_init();
	if (ret)
		goto exit_mode;
	return 0;

exit_mode:
	diofork_mode_exit();
exit_track:
	diofork_track_exit();
	return ret;
}

static void __exit diofork_exit(void)
{
	/* No new writes to "mode" first, then back to off: hooks out. */
	diofork_debugfs_exit();
	diofork_mode_exit();
	diofork_track_exit();
}

module_init(diofork_init);
module_exit(diofork_exit);
MODULE_DESCRIPTION("Measure and mitigate the direct-IO vs fork() COW race");
MODULE_AUTHOR("diofork developers");
MODULE_LICENSE("GPL");
