// SPDX-License-Identifier: GPL-2.0
/*
 * debugfs_test - the diofork debugfs contract.
 *
 *   mode    "[off] observe pin lock drain": one line, the active mode in
 *           brackets.  One write() of a name (trailing newline allowed) at
 *           offset 0 switches; anything else is -EINVAL, a known mode that is
 *           not implemented is -EOPNOTSUPP, and the mode is unchanged.
 *   stats   "name value" lines, /proc/vmstat style.
 *   reset   "reset" zeroes the monotonic counters, anything else -EINVAL.
 *   lock_timeout_ms, drain_timeout_ms: a decimal number of ms (0 to one
 *           hour) and at most one newline; anything else (a sign, spaces,
 *           hex, a NUL, two newlines, too big) -EINVAL, value unchanged.
 *   kernel  "name: value" lines, including "dio_pins: yes|no|unknown".
 *
 * Skips (exit 4) when the module is not loaded.  Every fixture restores the
 * mode it found, and main() restores the mode of the whole run at exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "dftest.h"

static char orig_mode[DF_MODE_NAME_MAX];

static void restore_orig_mode(void)
{
	char now[DF_MODE_NAME_MAX];

	if (!df_mode_get(now, sizeof(now)) && !strcmp(now, orig_mode))
		return;
	if (df_mode_set(orig_mode))
		ksft_print_msg("could not restore mode '%s'\n", orig_mode);
}

/* Write "name" or "name\n"; 0 or -errno. */
static int mode_write(const char *name, bool newline)
{
	char buf[DF_MODE_NAME_MAX + 2];

	snprintf(buf, sizeof(buf), "%s%s", name, newline ? "\n" : "");
	return df_write_once(DF_MODE_FILE, buf, strlen(buf));
}

/* ------------------------------------------------------------------ */
/* mode: reading and switching                                         */
/* ------------------------------------------------------------------ */

FIXTURE(mode) {
	struct df_modes modes;
	char saved[DF_MODE_NAME_MAX];
};

FIXTURE_SETUP(mode)
{
	ASSERT_EQ(0, df_modes_read(&self->modes))
		TH_LOG("%s is unreadable or malformed", DF_MODE_FILE);
	ASSERT_EQ(1, self->modes.nr_active);
	snprintf(self->saved, sizeof(self->saved), "%s",
		 self->modes.name[self->modes.active]);
}

FIXTURE_TEARDOWN(mode)
{
	if (df_mode_set(self->saved))
		TH_LOG("could not restore mode '%s'", self->saved);
}

TEST_F(mode, read_format)
{
	char text[1024], active[DF_MODE_NAME_MAX];
	struct df_modes m;
	bool has_off = false;
	ssize_t len;
	int i, j;

	len = df_read_file(DF_MODE_FILE, text, sizeof(text));
	ASSERT_GT(len, 0);
	ksft_print_msg("mode: %s", text);
	/* Exactly one line, newline terminated. */
	EXPECT_EQ('\n', text[len - 1]);
	EXPECT_EQ(text + len - 1, strchr(text, '\n'));
	ASSERT_EQ(0, df_modes_parse(text, &m)) TH_LOG("malformed: '%s'", text);
	EXPECT_EQ(1, m.nr_active) TH_LOG("want exactly one [active] entry");
	for (i = 0; i < m.nr; i++) {
		has_off |= !strcmp(m.name[i], "off");
		for (j = 0; j < i; j++)
			EXPECT_STRNE(m.name[i], m.name[j]);
	}
	EXPECT_TRUE(has_off) TH_LOG("'off' is not listed");
	/* No blank tokens: single spaces between entries. */
	EXPECT_EQ(NULL, strstr(text, "  "));
	EXPECT_NE(' ', text[0]);
	/* The bracketed entry is the one df_mode_get() reports. */
	ASSERT_EQ(0, df_mode_get(active, sizeof(active)));
	EXPECT_STREQ(m.name[m.active], active);
}

TEST_F(mode, roundtrip)
{
	char before[DF_MODE_NAME_MAX], after[DF_MODE_NAME_MAX];
	bool off_ok = false;
	int accepted = 0, unsupported = 0;
	int i, ret;

	for (i = 0; i < self->modes.nr; i++) {
		const char *name = self->modes.name[i];

		ASSERT_EQ(0, df_mode_get(before, sizeof(before)));
		ret = mode_write(name, true);
		ASSERT_EQ(0, df_mode_get(after, sizeof(after)));
		if (!ret) {
			ksft_print_msg("mode %s: accepted\n", name);
			EXPECT_STREQ(name, after);
			off_ok |= !strcmp(name, "off");
			accepted++;
		} else if (ret == -EOPNOTSUPP) {
			ksft_print_msg("mode %s: not implemented (EOPNOTSUPP)\n",
				       name);
			EXPECT_STREQ(before, after)
				TH_LOG("EOPNOTSUPP for %s changed the mode", name);
			unsupported++;
		} else {
			EXPECT_EQ(0, ret) TH_LOG("writing %s: %s", name,
						 strerror(-ret));
		}
	}
	EXPECT_TRUE(off_ok) TH_LOG("'off' must be accepted");
	ksft_print_msg("%d mode(s) accepted, %d not implemented\n",
		       accepted, unsupported);
	/* Back to off, then to where we started. */
	EXPECT_EQ(0, mode_write("off", true));
}

TEST_F(mode, newline_optional)
{
	char now[DF_MODE_NAME_MAX];
	int i, nl, ret, tried = 0;

	/* For every accepted mode both "name" and "name\n" switch to it. */
	for (i = 0; i < self->modes.nr; i++) {
		const char *name = self->modes.name[i];

		for (nl = 0; nl <= 1; nl++) {
			/* Leave the mode first so the switch is observable. */
			if (strcmp(name, "off")) {
				ASSERT_EQ(0, mode_write("off", !nl));
			} else if (self->modes.nr > 1) {
				/* May be EOPNOTSUPP: then we stay on off. */
				mode_write(self->modes.name[i ? 0 : 1], nl);
			}
			ret = mode_write(name, nl);
			if (ret == -EOPNOTSUPP)
				break;
			EXPECT_EQ(0, ret) TH_LOG("'%s'%s: %s", name,
						 nl ? " + newline" : "",
						 strerror(-ret));
			ASSERT_EQ(0, df_mode_get(now, sizeof(now)));
			EXPECT_STREQ(name, now);
			tried++;
		}
	}
	EXPECT_LE(2, tried);
}

/* ------------------------------------------------------------------ */
/* mode: writes that must be rejected with -EINVAL, mode unchanged     */
/* ------------------------------------------------------------------ */

enum bad_kind {
	BAD_ONE_WRITE,		/* one write() of buf/len */
	BAD_HUGE,		/* "off\n" followed by junk, 4096 bytes */
	BAD_PARTIAL,		/* write("ob") then pwrite("serve", offset 2) */
};

FIXTURE(bad_write) {
	char saved[DF_MODE_NAME_MAX];
	char baseline[DF_MODE_NAME_MAX];
};

FIXTURE_VARIANT(bad_write) {
	enum bad_kind kind;
	const char *buf;
	size_t len;
};

FIXTURE_VARIANT_ADD(bad_write, unknown_name) {
	.kind = BAD_ONE_WRITE, .buf = "bogus\n", .len = 6,
};

FIXTURE_VARIANT_ADD(bad_write, empty) {
	.kind = BAD_ONE_WRITE, .buf = "", .len = 0,
};

FIXTURE_VARIANT_ADD(bad_write, newline_only) {
	.kind = BAD_ONE_WRITE, .buf = "\n", .len = 1,
};

FIXTURE_VARIANT_ADD(bad_write, huge_4096) {
	.kind = BAD_HUGE,
};

FIXTURE_VARIANT_ADD(bad_write, too_long_32) {
	.kind = BAD_ONE_WRITE,
	.buf = "offoffoffoffoffoffoffoffoffoffof", .len = 32,
};

FIXTURE_VARIANT_ADD(bad_write, nul_inside) {
	.kind = BAD_ONE_WRITE, .buf = "o\0ff", .len = 4,
};

FIXTURE_VARIANT_ADD(bad_write, nul_after) {
	.kind = BAD_ONE_WRITE, .buf = "off\0", .len = 4,
};

FIXTURE_VARIANT_ADD(bad_write, byte_0xff) {
	.kind = BAD_ONE_WRITE, .buf = "off\xff", .len = 4,
};

FIXTURE_VARIANT_ADD(bad_write, binary) {
	.kind = BAD_ONE_WRITE, .buf = "\xff\xfe\x01\x00", .len = 4,
};

FIXTURE_VARIANT_ADD(bad_write, control_char) {
	.kind = BAD_ONE_WRITE, .buf = "off\x01", .len = 4,
};

FIXTURE_VARIANT_ADD(bad_write, trailing_garbage) {
	.kind = BAD_ONE_WRITE, .buf = "off x", .len = 5,
};

FIXTURE_VARIANT_ADD(bad_write, trailing_garbage_nl) {
	.kind = BAD_ONE_WRITE, .buf = "off x\n", .len = 6,
};

FIXTURE_VARIANT_ADD(bad_write, two_newlines) {
	.kind = BAD_ONE_WRITE, .buf = "off\n\n", .len = 5,
};

FIXTURE_VARIANT_ADD(bad_write, leading_space) {
	.kind = BAD_ONE_WRITE, .buf = " off", .len = 4,
};

FIXTURE_VARIANT_ADD(bad_write, prefix_of_name) {
	.kind = BAD_ONE_WRITE, .buf = "of", .len = 2,
};

FIXTURE_VARIANT_ADD(bad_write, upper_case) {
	.kind = BAD_ONE_WRITE, .buf = "OFF", .len = 3,
};

FIXTURE_VARIANT_ADD(bad_write, partial_write) {
	.kind = BAD_PARTIAL,
};

FIXTURE_SETUP(bad_write)
{
	struct df_modes m;
	int i;

	ASSERT_EQ(0, df_modes_read(&m));
	ASSERT_EQ(1, m.nr_active);
	snprintf(self->saved, sizeof(self->saved), "%s", m.name[m.active]);
	/*
	 * Start from an accepted mode other than "off" when there is one, so a
	 * bad write mistakenly taken as "off" also shows as a mode change.
	 */
	snprintf(self->baseline, sizeof(self->baseline), "off");
	for (i = 0; i < m.nr; i++) {
		if (!strcmp(m.name[i], "off"))
			continue;
		if (!df_mode_set(m.name[i])) {
			snprintf(self->baseline, sizeof(self->baseline), "%s",
				 m.name[i]);
			break;
		}
	}
	if (!strcmp(self->baseline, "off"))
		ASSERT_EQ(0, df_mode_set("off"));
}

FIXTURE_TEARDOWN(bad_write)
{
	if (df_mode_set(self->saved))
		TH_LOG("could not restore mode '%s'", self->saved);
}

TEST_F(bad_write, rejected)
{
	char now[DF_MODE_NAME_MAX];
	ssize_t ret;
	int fd;

	if (variant->kind == BAD_ONE_WRITE) {
		ret = df_write_once(DF_MODE_FILE, variant->buf, variant->len);
		EXPECT_EQ(-EINVAL, ret) TH_LOG("got %zd (%s)", ret,
					       ret < 0 ? strerror(-ret) : "");
	} else if (variant->kind == BAD_HUGE) {
		static char huge[4096];

		memset(huge, 'x', sizeof(huge));
		memcpy(huge, "off\n", 4);
		ret = df_write_once(DF_MODE_FILE, huge, sizeof(huge));
		EXPECT_EQ(-EINVAL, ret) TH_LOG("got %zd", ret);
	} else {
		fd = open(DF_MODE_FILE, O_WRONLY);
		ASSERT_LE(0, fd);
		ret = write(fd, "ob", 2);
		EXPECT_EQ(-1, ret);
		EXPECT_EQ(EINVAL, errno);
		ret = pwrite(fd, "serve", 5, 2);
		EXPECT_EQ(-1, ret);
		/* ESPIPE: the file refuses positioned writes outright. */
		if (ret == -1 && errno == ESPIPE)
			TH_LOG("pwrite: ESPIPE (non-seekable file), accepted");
		else
			EXPECT_EQ(EINVAL, errno);
		/* And a plain second write() on the same fd. */
		ret = write(fd, "serve", 5);
		EXPECT_EQ(-1, ret);
		EXPECT_EQ(EINVAL, errno);
		close(fd);
	}
	ASSERT_EQ(0, df_mode_get(now, sizeof(now)));
	EXPECT_STREQ(self->baseline, now) TH_LOG("mode changed by a bad write");
}

/* ------------------------------------------------------------------ */
/* stats, reset, kernel                                                */
/* ------------------------------------------------------------------ */

static bool stat_line_ok(const char *line, size_t len)
{
	size_t i = 0, digits = 0;

	while (i < len && ((line[i] >= 'a' && line[i] <= 'z') ||
			   (line[i] >= '0' && line[i] <= '9') || line[i] == '_'))
		i++;
	if (!i || i >= len || line[i++] != ' ')
		return false;
	while (i < len && line[i] >= '0' && line[i] <= '9')
		i++, digits++;
	return digits && digits <= 20 && i == len;
}

TEST(stats_parseable)
{
	static char text[65536];
	struct df_stats st;
	const char *line, *nl;
	ssize_t len;
	int nr = 0, i, j;

	len = df_read_file(DF_STATS_FILE, text, sizeof(text));
	ASSERT_LE(0, len) TH_LOG("%s: %s", DF_STATS_FILE, strerror(-len));
	ASSERT_LT(len, (ssize_t)sizeof(text) - 1);
	for (line = text; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		ASSERT_NE(NULL, nl) TH_LOG("last line has no newline: '%s'", line);
		EXPECT_TRUE(stat_line_ok(line, nl - line))
			TH_LOG("bad line: '%.*s'", (int)(nl - line), line);
		nr++;
	}
	EXPECT_LE(1, nr);
	ASSERT_EQ(0, df_stats_parse(text, &st));
	ASSERT_EQ(nr, st.nr);
	for (i = 0; i < st.nr; i++)
		for (j = 0; j < i; j++)
			EXPECT_STRNE(st.s[i].name, st.s[j].name);
	ksft_print_msg("%d counters\n", st.nr);
}

TEST(reset)
{
	unsigned long long forks_before = 0, forks_after = 0;
	struct df_stats st;
	bool have_forks;
	pid_t pid;

	/* Make sure a monotonic counter is non-zero first. */
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid)
		_exit(0);
	waitpid(pid, NULL, 0);
	ASSERT_EQ(0, df_stats_read(&st));
	have_forks = df_stats_get(&st, "forks", &forks_before);

	ASSERT_EQ(0, df_write_once(DF_RESET_FILE, "reset", 5));
	EXPECT_EQ(-EINVAL, df_write_once(DF_RESET_FILE, "bogus", 5));
	EXPECT_EQ(-EINVAL, df_write_once(DF_RESET_FILE, "", 0));
	EXPECT_EQ(-EINVAL, df_write_once(DF_RESET_FILE, "resetx", 6));

	ASSERT_EQ(0, df_stats_read(&st));
	if (have_forks) {
		EXPECT_TRUE(df_stats_get(&st, "forks", &forks_after));
		/* Other tasks may fork meanwhile, but far fewer than before. */
		ksft_print_msg("forks: %llu before reset, %llu after\n",
			       forks_before, forks_after);
		if (forks_before > 0)
			EXPECT_LT(forks_after, forks_before);
	}
}

/* lock_timeout_ms, drain_timeout_ms: digits and one optional newline only */
TEST(timeout_knobs)
{
	static const char *const files[] = { "lock_timeout_ms", "drain_timeout_ms" };
	static const struct { const char *buf; size_t len; } bad[] = {
		{ "", 0 }, { "\n", 1 }, { "5\0x", 3 }, { "5\0", 2 },
		{ "5\n\n", 3 }, { "+5", 2 }, { "-1", 2 }, { " 5", 2 },
		{ "5 ", 2 }, { "0x10", 4 }, { "3600001", 7 },
		{ "99999999999", 11 }, { "abc", 3 }, { "5\xff", 2 },
	};
	unsigned long saved, now;
	char path[256];
	unsigned int f, i;
	ssize_t ret;

	for (f = 0; f < ARRAY_SIZE(files); f++) {
		snprintf(path, sizeof(path), "%s/%s", DF_DEBUGFS_DIR, files[f]);
		if (access(path, F_OK)) {
			ksft_print_msg("%s: no such file, not checked\n", path);
			continue;
		}
		ASSERT_EQ(0, df_knob_get(files[f], &saved));
		ASSERT_EQ(0, df_knob_set(files[f], 1234));
		for (i = 0; i < ARRAY_SIZE(bad); i++) {
			ret = df_write_once(path, bad[i].buf, bad[i].len);
			EXPECT_EQ(-EINVAL, ret)
				TH_LOG("%s: write %zu bytes (#%u): got %zd", files[f],
				       bad[i].len, i, ret);
			ASSERT_EQ(0, df_knob_get(files[f], &now));
			EXPECT_EQ(1234, now)
				TH_LOG("%s: bad write #%u changed it to %lu", files[f], i, now);
		}
		EXPECT_EQ(0, df_write_once(path, "250\n", 4));
		ASSERT_EQ(0, df_knob_get(files[f], &now));
		EXPECT_EQ(250, now);
		EXPECT_EQ(0, df_write_once(path, "3600000", 7));
		ASSERT_EQ(0, df_knob_get(files[f], &now));
		EXPECT_EQ(3600000, now);
		EXPECT_EQ(0, df_knob_set(files[f], saved));
	}
}

TEST(kernel_file)
{
	char text[4096], pins[64];
	const char *line, *nl;
	ssize_t len;

	if (access(DF_KERNEL_FILE, F_OK))
		SKIP(return, "%s does not exist (yet)", DF_KERNEL_FILE);
	len = df_read_file(DF_KERNEL_FILE, text, sizeof(text));
	ASSERT_LE(0, len) TH_LOG("%s", strerror(-len));
	for (line = text; *line; line = nl + 1) {
		const char *colon;

		nl = strchr(line, '\n');
		ASSERT_NE(NULL, nl);
		colon = memchr(line, ':', nl - line);
		EXPECT_TRUE(colon && colon > line && colon[1] == ' ')
			TH_LOG("not 'name: value': '%.*s'", (int)(nl - line), line);
		ksft_print_msg("kernel: %.*s\n", (int)(nl - line), line);
	}
	ASSERT_EQ(0, df_kernel_get("dio_pins", pins, sizeof(pins)))
		TH_LOG("no dio_pins line");
	EXPECT_TRUE(!strcmp(pins, "yes") || !strcmp(pins, "no") ||
		    !strcmp(pins, "unknown")) TH_LOG("dio_pins: '%s'", pins);
}

int main(int argc, char **argv)
{
	if (!df_module_present()) {
		ksft_print_header();
		ksft_exit_skip("%s not found: diofork not loaded or debugfs not mounted\n",
			       DF_DEBUGFS_DIR);
	}
	if (!df_mode_get(orig_mode, sizeof(orig_mode)))
		atexit(restore_orig_mode);
	return test_harness_run(argc, argv);
}
