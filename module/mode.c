// SPDX-License-Identifier: GPL-2.0
/*
 * Modes and the policy registry.
 *
 * The core never knows what a mode does: each policy_*.c file registers a
 * struct diofork_policy, and the hooks call through the active one.  "off"
 * has no policy: loaded in off, no hook is installed and nothing is paid.
 *
 * Switching is serialised by diofork_mode_mutex (a slow path).  The hooks
 * read the active policy under RCU (they run with preemption disabled), so
 * a switch publishes the new pointer, then waits for a grace period before
 * the old policy's disable() runs.
 *
 * Hooks go in when a mode first needs them and come out at unload, not at
 * every switch: in off they return at once (release still retires records
 * of DIO submitted earlier).  Attaching and detaching them over and over
 * under DIO and fork load crashes Debian 6.1: first a call to address 0
 * from the callers of __bio_release_pages(), in IRQ context, while that
 * hook was a kprobe; with it on plain ftrace, RIP 0 on entry to
 * bio_iov_iter_get_pages() (then a kretprobe's function) within seconds of
 * switching.  With no kretprobe left, single-threaded TCG survived 144
 * switches, multi-threaded TCG not 12 s: a call to address 0 where
 * __handle_mm_fault() calls do_wp_page(), a kprobe.  We have not found the
 * cause (the README's Known limits has the details).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/mutex.h>
#include <linux/string.h>
#include <linux/ctype.h>
#include <linux/rcupdate.h>
#include <linux/bitops.h>
#include <linux/rcupdate_wait.h>
#include "diofork.h"

const char * const diofork_mode_names[DIOFORK_NR_MODES] = {
	[DIOFORK_MODE_OFF]	= "off",
	[DIOFORK_MODE_OBSERVE]	= "observe",
	[DIOFORK_MODE_PIN]	= "pin",
	[DIOFORK_MODE_LOCK]	= "lock",
	[DIOFORK_MODE_DRAIN]	= "drain",
};

static const struct diofork_policy *diofork_policies[DIOFORK_NR_MODES];
const struct diofork_policy __rcu *diofork_active;
static enum diofork_mode diofork_cur_mode = DIOFORK_MODE_OFF;
static DEFINE_MUTEX(diofork_mode_mutex);

int diofork_policy_register(const struct diofork_policy *pol)
{
	if (WARN_ON_ONCE(pol->mode <= DIOFORK_MODE_OFF ||
			 pol->mode >= DIOFORK_NR_MODES ||
			 diofork_policies[pol->mode]))
		return -EINVAL;
	diofork_policies[pol->mode] = pol;
	return 0;
}

enum diofork_mode diofork_mode_get(void)
{
	return READ_ONCE(diofork_cur_mode);
}

static bool diofork_mode_available(enum diofork_mode mode)
{
	return mode == DIOFORK_MODE_OFF || diofork_policies[mode];
}

/*
 * Parse one write to the "mode" file: a known name, optionally followed by
 * a single newline.  Anything else is -EINVAL.
 */
int diofork_mode_parse(const char *buf, size_t len, enum diofork_mode *mode)
{
	size_t i;
	int m;

	if (len && buf[len - 1] == '\n')
		len--;
	if (!len)
		return -EINVAL;
	for (i = 0; i < len; i++)
		if (!islower(buf[i]))
			return -EINVAL;
	for (m = 0; m < DIOFORK_NR_MODES; m++) {
		if (strlen(diofork_mode_names[m]) == len &&
		    !memcmp(diofork_mode_names[m], buf, len)) {
			*mode = m;
			return 0;
		}
	}
	return -EINVAL;
}

static unsigned long diofork_mode_hooks(enum diofork_mode mode)
{
	const struct diofork_policy *pol = diofork_policies[mode];

	return pol ? pol->hooks : 0;
}

int diofork_mode_set(enum diofork_mode mode)
{
	const struct diofork_policy *old, *new;
	unsigned long new_hooks;
	int ret = 0;

	if (mode < 0 || mode >= DIOFORK_NR_MODES)
		return -EINVAL;
	if (!diofork_mode_available(mode))
		return -EOPNOTSUPP;

	mutex_lock(&diofork_mode_mutex);
	if (mode == diofork_cur_mode)
		goto unlock;

	old = rcu_dereference_protected(diofork_active,
					lockdep_is_held(&diofork_mode_mutex));
	new = diofork_policies[mode];
	new_hooks = diofork_mode_hooks(mode);

	/*
	 * Hooks the new mode needs go in first: all or nothing.  If the mode
	 * then fails to start, they stay, idle, as every hook stays until
	 * unload (hooks.c): taking them out again is the churn that crashes
	 * 6.1, and some may have been attached for an earlier mode.
	 */
	ret = diofork_hooks_install(new_hooks & ~diofork_hooks_attached());
	if (ret)
		goto unlock;
	if (new && new->enable) {
		ret = new->enable();
		if (ret)
			goto unlock;
	}

	rcu_assign_pointer(diofork_active, new);
	WRITE_ONCE(diofork_cur_mode, mode);
	synchronize_rcu();

	if (old && old->disable)
		old->disable();
	if (mode == DIOFORK_MODE_OFF)
		diofork_io_cache_trim();
	pr_info("mode %s\n", diofork_mode_names[mode]);
unlock:
	mutex_unlock(&diofork_mode_mutex);
	return ret;
}

int diofork_mode_init(void)
{
	int ret;

	ret = diofork_policy_observe_init() ?: diofork_policy_pin_init();
	if (ret)
		return ret;
	ret = diofork_policy_lock_init();
	if (ret)
		return ret;
	ret = diofork_policy_drain_init();
	if (ret)
		diofork_policy_lock_exit();
	return ret;
}

/* Back to off (hooks out, waiters released), then free policy state. */
void diofork_mode_exit(void)
{
	diofork_mode_set(DIOFORK_MODE_OFF);
	diofork_hooks_remove_all();
	diofork_gup_unload();
	/* tasks still inside a stand-in a hook sent them to */
	synchronize_rcu_tasks();
	diofork_policy_drain_exit();
	diofork_policy_lock_exit();
}
