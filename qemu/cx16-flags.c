// SPDX-License-Identifier: GPL-2.0
/*
 * Does the CPU keep the flags right across CMPXCHG16B?  QEMU 7.2's TCG does
 * not: it computes them from a stale cc_op, and returns the previous
 * instruction's operand as RFLAGS (README, Known limits).  Why qemu/run
 * gives TCG guests -cpu max,-cx16.
 *
 *   gcc -O1 -static -o /tmp/cx16-flags <this file>
 *   DIOFORK_QEMU_CPU=max qemu/run --share /tmp -- /tmp/cx16-flags
 *
 * Exit 0: flags right; 1: flags wrong; SIGILL: no CX16 (the default).
 */
#include <stdio.h>

static unsigned __int128 mem;	/* 16-byte aligned, as cmpxchg16b needs */

int main(void)
{
	unsigned long fl, bad = 0, src;
	int i;

	for (i = 0; i < 1000; i++) {
		src = 0x7f5ac7a0UL + ((unsigned long)i << 32);
		mem = 0;
		asm volatile("pushq $0x202\n\t"
			     "popfq\n\t"		/* flags state: stored */
			     "mov %[src], %%r8\n\t"
			     "xor %%r9d, %%r9d\n\t"
			     "mov $0, %%eax\n\t"	/* mov: flags untouched */
			     "mov $0, %%edx\n\t"
			     "mov $1, %%ebx\n\t"
			     "mov $0, %%ecx\n\t"
			     "add %%r8, %%r9\n\t"	/* flags state: lazy */
			     "lock cmpxchg16b %[m]\n\t"
			     "pushfq\n\t"
			     "popq %[fl]\n\t"
			     : [fl] "=r" (fl), [m] "+m" (mem)
			     : [src] "r" (src)
			     : "rax", "rbx", "rcx", "rdx", "r8", "r9", "cc");
		/* CF, bit 1, PF, AF, ZF, SF, IF and OF: nothing else */
		if (fl & ~0xad7UL) {
			if (bad < 3)
				printf("try %d: RFLAGS %#lx after cmpxchg16b\n",
				       i, fl);
			bad++;
		}
	}
	printf("cx16-flags: %lu of 1000 tries had flags no instruction sets\n",
	       bad);
	return bad ? 1 : 0;
}
