// SPDX-License-Identifier: GPL-2.0
/*
 * insn-profile - a QEMU TCG plugin for scripts/profile: how many guest
 * instructions ran at each translation block's address, in windows the
 * guest opens and closes itself.
 *
 * Each window starts and ends where the guest executes the block at
 * trigger=ADDR (scripts/profile uses the entry of the sync(2) system call,
 * found in /proc/kallsyms of a nokaslr boot).  The first execution zeroes
 * every count, the second writes OUT.1, the third zeroes, the fourth
 * writes OUT.3, and so on.  Each file has one line per block that ran:
 * "ADDRESS INSTRUCTIONS" (16 hex digits, decimal), so that sort(1) orders
 * it with /proc/kallsyms.
 *
 * A count is an inline add at the start of each block (no callback), so
 * QEMU slows down by a fraction; one vCPU only (the adds are not atomic).
 * Written against the plugin API of QEMU 7.2 (Debian 12: API version 1,
 * -plugin support built in, no qemu-plugin.h packaged), hence the
 * declarations below instead of that header.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* QEMU's plugin API, as it is in QEMU 7.2 (its own types, uint64_t). */
typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_info_t;

enum qemu_plugin_cb_flags {
	QEMU_PLUGIN_CB_NO_REGS,
	QEMU_PLUGIN_CB_R_REGS,
	QEMU_PLUGIN_CB_RW_REGS,
};

enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };

typedef void (*qemu_plugin_tb_trans_cb_t)(qemu_plugin_id_t id,
					  struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index,
					    void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
					   qemu_plugin_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb,
					      enum qemu_plugin_op op,
					      void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb,
					  qemu_plugin_vcpu_udata_cb_t cb,
					  enum qemu_plugin_cb_flags flags,
					  void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* Open addressing, keyed by (address, length): blocks are retranslated. */
#define SLOTS	(1u << 22)

struct slot {
	uint64_t key;		/* 0: free */
	uint64_t vaddr;
	uint64_t insns;		/* executed in this window */
};

static struct slot *slots;
static uint64_t trigger;
static unsigned int window;	/* even: closed */
static const char *out = "insn-profile";

static void dump(void)
{
	char name[4096];
	unsigned int i;
	FILE *f;

	snprintf(name, sizeof(name), "%s.%u", out, window);
	f = fopen(name, "w");
	if (!f) {
		perror(name);
		return;
	}
	for (i = 0; i < SLOTS; i++)
		if (slots[i].insns)
			fprintf(f, "%016llx %llu\n",
				(unsigned long long)slots[i].vaddr,
				(unsigned long long)slots[i].insns);
	fclose(f);
}

static void on_trigger(unsigned int vcpu, void *userdata)
{
	unsigned int i;

	if (window % 2 == 0) {
		for (i = 0; i < SLOTS; i++)
			slots[i].insns = 0;
	} else {
		dump();
	}
	window++;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	uint64_t vaddr = qemu_plugin_tb_vaddr(tb);
	uint64_t n = qemu_plugin_tb_n_insns(tb);
	uint64_t key = (vaddr ^ (n << 52)) | 1;
	unsigned int h = (unsigned int)((key * 0x9e3779b97f4a7c15ull) >> 40) &
			 (SLOTS - 1);

	while (slots[h].key && slots[h].key != key)
		h = (h + 1) & (SLOTS - 1);
	if (!slots[h].key) {
		slots[h].key = key;
		slots[h].vaddr = vaddr;
	}
	qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
						 &slots[h].insns, n);
	if (vaddr == trigger)
		qemu_plugin_register_vcpu_tb_exec_cb(tb, on_trigger,
						     QEMU_PLUGIN_CB_NO_REGS,
						     NULL);
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const struct qemu_info_t *info,
			int argc, char **argv)
{
	int i;

	for (i = 0; i < argc; i++) {
		if (!strncmp(argv[i], "trigger=", 8))
			trigger = strtoull(argv[i] + 8, NULL, 16);
		else if (!strncmp(argv[i], "out=", 4))
			out = argv[i] + 4;
	}
	if (!trigger) {
		fprintf(stderr, "insn-profile: trigger=ADDR missing\n");
		return -1;
	}
	slots = calloc(SLOTS, sizeof(*slots));
	if (!slots)
		return -1;
	qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
	return 0;
}
