// SPDX-License-Identifier: GPL-2.0
/*
 * observe: track every DIO in flight and count the hazard, change nothing.
 *
 * The counting itself lives in the hooks (every mode counts), so this
 * policy is only the set of hooks it needs: DIO tracking, fork and COW.
 */
#include "diofork.h"

static const struct diofork_policy diofork_observe = {
	.mode	= DIOFORK_MODE_OBSERVE,
	.hooks	= DIOFORK_HOOKS_TRACK | BIT(DIOFORK_HOOK_FORK) |
		  BIT(DIOFORK_HOOK_COW),
};

int diofork_policy_observe_init(void)
{
	return diofork_policy_register(&diofork_observe);
}
