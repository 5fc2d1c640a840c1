// SPDX-License-Identifier: GPL-2.0
/*
 * dfproc.c - child processes for the diofork selftests: run a command, wait
 * for a child with a bound, run a function in a bounded child, unload and
 * load the module.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dftest.h"

extern char **environ;

/* A wait status as an exit code: the exit status, or 128 + the signal. */
static int df_exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}

/* waitpid() without a bound: the exit code as df_exit_code(), or -errno. */
static int df_wait_exit(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return df_exit_code(status);
}

int df_run(char *const argv[])
{
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int ret;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	ret = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (ret)
		return -ret;
	return df_wait_exit(pid);
}

int df_run_capture(char *const argv[], char *out, size_t size)
{
	posix_spawn_file_actions_t fa;
	size_t len = 0;
	int ret, p[2];
	pid_t pid;

	if (!size)
		return -EINVAL;
	out[0] = '\0';
	if (pipe2(p, O_CLOEXEC))
		return -errno;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_adddup2(&fa, p[1], 2);
	ret = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (ret) {
		close(p[0]);
		return -ret;
	}
	for (;;) {
		char tmp[512];
		ssize_t n = read(p[0], tmp, sizeof(tmp));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (len < size - 1) {
			size_t c = (size_t)n < size - 1 - len ? (size_t)n : size - 1 - len;

			memcpy(out + len, tmp, c);
			len += c;
		}
	}
	close(p[0]);
	while (len && out[len - 1] == '\n')
		len--;
	out[len] = '\0';
	return df_wait_exit(pid);
}

bool df_have_prog(const char *name)
{
	char path[512];
	const char *p, *end;

	if (strchr(name, '/'))
		return !access(name, X_OK);
	p = getenv("PATH");
	if (!p || !*p)
		p = "/bin:/usr/bin:/sbin:/usr/sbin";
	for (; *p; p = *end ? end + 1 : end) {
		size_t n;

		end = strchrnul(p, ':');
		n = end - p;
		if (!n || n >= sizeof(path) - strlen(name) - 2)
			continue;
		snprintf(path, sizeof(path), "%.*s/%s", (int)n, p, name);
		if (!access(path, X_OK))
			return true;
	}
	return false;
}

int df_wait_poll(pid_t pid, int *status, int flags, double timeout,
		 unsigned int poll_us)
{
	double end = df_now() + timeout;
	pid_t r;

	for (;;) {
		r = waitpid(pid, status, WNOHANG | flags);
		if (r == pid)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
		if (df_now() > end)
			return -ETIMEDOUT;
		usleep(poll_us);
	}
}

int df_wait_bounded(pid_t pid, int *status, double timeout)
{
	return df_wait_poll(pid, status, __WALL, timeout, 1000);
}

void df_kill_reap(pid_t pid, double timeout)
{
	int status;

	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	df_wait_bounded(pid, &status, timeout);
}

int df_run_poll(int (*fn)(void *), void *arg, int flags, double timeout,
		unsigned int poll_us, double *secs)
{
	double t0 = df_now();
	int status, ret;
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0)
		_exit(fn(arg));
	ret = df_wait_poll(pid, &status, flags, timeout, poll_us);
	*secs = df_now() - t0;
	if (ret)
		return ret;
	return df_exit_code(status);
}

int df_run_bounded(int (*fn)(void *), void *arg, double timeout, double *secs)
{
	return df_run_poll(fn, arg, __WALL, timeout, 1000, secs);
}

const char *df_ko_path(void)
{
	const char *p = getenv("DIOFORK_KO");

	return p && *p ? p : DF_DEFAULT_KO;
}

int df_do_rmmod(void *unused)
{
	(void)unused;
	if (syscall(SYS_delete_module, "diofork", O_NONBLOCK))
		return errno;
	return 0;
}

int df_do_insmod(void *ko)
{
	int fd = open((const char *)ko, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return errno;
	if (syscall(SYS_finit_module, fd, "", 0))
		return errno;
	return 0;
}
