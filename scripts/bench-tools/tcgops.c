// SPDX-License-Identifier: GPL-2.0
/*
 * tcgops - what an instruction costs in real time, by kind, where the CPU
 * is QEMU's TCG: the yardstick scripts/tcgperf puts beside its profile.
 *
 *   tcgops [-n ITERATIONS]
 *
 * Each kind runs as a loop of ITERATIONS iterations of 16 instructions
 * of that kind (8 pairs where the kind is a pair), timed with
 * CLOCK_MONOTONIC; the same loop with 16 one-byte nops is taken off, and
 * the rest is divided by 16.  Prints one line per kind:
 *
 *   tcgops op=NAME ns=N		(ns per instruction, one decimal)
 *
 * The kinds are those a kernel function hooked by ftrace adds under TCG:
 * plain register arithmetic, direct calls with their returns (a return is
 * an indirect jump: TCG looks its target up) to the same page and to
 * another, indirect calls, pushf/popf (popf ends a translation block: TCG
 * leaves the translated code), and locked read-modify-writes.  User-space
 * stand-ins: the kernel's cli and sti cannot run here.  On hardware the
 * kinds differ by a few cycles; what this prints is TCG's cost model, not
 * a CPU's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

static double now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

/*
 * The call targets: a return and nothing else.  TCG chains a direct jump
 * to its target only within one guest page: loop_call's target is a label
 * in the 64 bytes its calls are in (with one jump over it per 16
 * instructions); tcgops_ret_far has a page of its own, so a call to it is
 * looked up as a return is, as a kernel function's call into an ftrace
 * trampoline or a module is.
 */
void tcgops_ret_far(void);
asm(".pushsection .text.tcgops_far, \"ax\", @progbits\n.balign 4096\n"
	".globl tcgops_ret_far\n.type tcgops_ret_far, @function\n"
	"tcgops_ret_far:\n\tret\n.size tcgops_ret_far, .-tcgops_ret_far\n"
	".balign 4096\n.popsection\n");

static void loop_nop(long n)
{
	for (long i = 0; i < n; i++)
		asm volatile(".rept 16\n\tnop\n\t.endr\n\t" ::: "memory");
}

static void loop_alu(long n)
{
	unsigned long x = 0;

	for (long i = 0; i < n; i++)
		asm volatile(".rept 16\n\taddq $1, %0\n\t.endr\n\t" : "+r" (x) :: "memory");
}

/* The calls step over the red zone, where the compiler may keep locals. */
#define OVER_RED_ZONE(x)	"lea -128(%%rsp), %%rsp\n\t" x "lea 128(%%rsp), %%rsp\n\t"

static void loop_call(long n)
{
	for (long i = 0; i < n; i++)
		asm volatile(OVER_RED_ZONE("jmp 9f\n\t.balign 64\n8:\tret\n9:\n\t"
					   ".rept 8\n\tcall 8b\n\t.endr\n\t")
			     ::: "memory");
}

static void loop_call_far(long n)
{
	for (long i = 0; i < n; i++)
		asm volatile(OVER_RED_ZONE(".rept 8\n\tcall tcgops_ret_far\n\t.endr\n\t")
			     ::: "memory");
}

static void loop_icall(long n)
{
	void (*fn)(void) = tcgops_ret_far;

	for (long i = 0; i < n; i++)
		asm volatile(OVER_RED_ZONE(".rept 8\n\tcall *%0\n\t.endr\n\t")
			     :: "r" (fn) : "memory");
}

static void loop_pushf_popf(long n)
{
	for (long i = 0; i < n; i++)
		asm volatile(OVER_RED_ZONE(".rept 8\n\tpushfq\n\tpopfq\n\t.endr\n\t")
			     ::: "memory", "cc");
}

static void loop_lock_inc(long n)
{
	unsigned long x = 0;

	for (long i = 0; i < n; i++)
		asm volatile(".rept 16\n\tlock incq %0\n\t.endr\n\t" : "+m" (x) :: "cc");
}

static const struct {
	const char *name;
	void (*loop)(long n);
} kinds[] = {
	{ "alu", loop_alu },
	{ "call_ret", loop_call },		/* per instruction of the pair */
	{ "call_far_ret", loop_call_far },
	{ "icall_ret", loop_icall },
	{ "pushf_popf", loop_pushf_popf },
	{ "lock_inc", loop_lock_inc },
};

/* The fastest of 5 runs: interference only ever adds time. */
static double best_ns(void (*loop)(long n), long n)
{
	double best = 0;

	for (int r = 0; r < 5; r++) {
		double t = now_ns();

		loop(n);
		t = now_ns() - t;
		if (!r || t < best)
			best = t;
	}
	return best;
}

int main(int argc, char **argv)
{
	long n = 200000;
	double nop;
	int opt;

	while ((opt = getopt(argc, argv, "n:")) != -1) {
		if (opt != 'n')
			goto usage;
		n = strtol(optarg, NULL, 10);
		if (n <= 0)
			goto usage;
	}
	nop = best_ns(loop_nop, n);
	printf("tcgops op=nop ns=%.1f\n", nop / n / 16);
	for (unsigned int k = 0; k < ARRAY_SIZE(kinds); k++) {
		double t = best_ns(kinds[k].loop, n);

		printf("tcgops op=%s ns=%.1f\n", kinds[k].name,
		       (t - nop) / n / 16);
	}
	return 0;
usage:
	fprintf(stderr, "usage: tcgops [-n ITERATIONS]\n");
	return 2;
}
