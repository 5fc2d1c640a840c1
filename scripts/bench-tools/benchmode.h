/* SPDX-License-Identifier: GPL-2.0 */
/*
 * benchmode.h - switching diofork's mode from the bench tools.
 */
#ifndef BENCHMODE_H
#define BENCHMODE_H

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define MODE_FILE	"/sys/kernel/debug/diofork/mode"

/*
 * Write @mode to diofork's mode file: 0 or -errno.  Without the module,
 * "off" is what the kernel already does, so that succeeds.
 */
static inline int set_mode(const char *mode)
{
	int f = open(MODE_FILE, O_WRONLY);
	int ret;

	if (f < 0)
		return errno == ENOENT && !strcmp(mode, "off") ? 0 : -errno;
	ret = write(f, mode, strlen(mode)) == (ssize_t)strlen(mode) ? 0 : -errno;
	close(f);
	return ret;
}

#endif
