// SPDX-License-Identifier: GPL-2.0
/*
 * The hook table: every place diofork attaches to the kernel, in one list.
 *
 * Fork and the COW fault are kprobes on function entry, which the kernel
 * runs through ftrace, so that a policy can send the caller to a stand-in.
 * The page acquisition is an IPMODIFY ftrace handler that sends a DIO read
 * to a stand-in which records it (getpages.c).  The release and the legacy
 * submit are plain ftrace handlers that only read their argument: no
 * kprobe dispatch, no register save, and the release is not skipped when
 * it nests (kprobes do not nest).  The ftrace handlers take no recursion
 * guard: each is filtered to one function, and nothing a handler calls
 * can call that function again.  (Ftrace's guard cost about 30
 * instructions per call, idle hooks included, and would drop a release that
 * nests in another ftrace callback of the same context.)  The handlers
 * that read the policy disable preemption themselves, which makes them
 * RCU readers (the release reads none, and does not); the legacy
 * submit hook, which sees every bio, filters on bi_end_io first.  No
 * handler sleeps, and no indirect call goes into unexported code (Debian
 * 6.12 has IBT): the stand-ins call exported functions only.  Unregistering
 * a kprobe or an ftrace_ops waits for running handlers, so once a hook is
 * removed no CPU is inside its handler; getpages.c waits for its stand-ins.
 *
 * Hooks are installed when a mode first needs them, all or nothing for the
 * required ones, and removed at unload (see mode.c for why not sooner).
 * Removing the DIO tracking hooks is ordered so no record is lost: first
 * stop adding records, then let in-flight DIO release its pages (bounded),
 * then stop watching releases and retire what is left.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/kprobes.h>
#include <linux/bio.h>
#include <linux/uio.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/seq_file.h>
#include <linux/ptrace.h>
#include <linux/errno.h>
#include <linux/ftrace.h>
#include "diofork.h"
#include "compat.h"

/* How long removing the tracking hooks waits for in-flight DIO. */
#define DIOFORK_DRAIN_ON_REMOVE	(5 * HZ)

struct diofork_hook {
	const char *symbol;
	bool required;
	bool is_ftrace;		/* plain ftrace ops: may nest from IRQ */
	bool attached;
	int err;
	unsigned long ftrace_ip;
	void (*attached_at)(unsigned long ip);	/* told where, once attached */
	struct ftrace_ops ops;
	struct kprobe kp;
};

/* Legacy fs/direct-io.c completion callbacks: how we recognise its bios. */
static unsigned long diofork_legacy_end_io[2];

/* ---- DIO page release: __bio_release_pages(bio, mark_dirty) ---------- */

/*
 * Not a kprobe: completions run in IRQ context, and an IRQ that arrives
 * while this CPU is in any kprobe handler would have its kprobe skipped
 * (kprobes do not nest), leaving the record behind.  A plain ftrace
 * handler runs on every call, nested or not.
 */
static void notrace diofork_release_ftrace(unsigned long ip,
					   unsigned long parent_ip,
					   struct ftrace_ops *op,
					   struct ftrace_regs *fregs)
{
	/*
	 * Nothing it calls releases a bio (no recursion).  Preemptible: it
	 * reads no policy, takes its locks with interrupts off, and unload
	 * waits for a preempted handler (an RCU-tasks grace period, in
	 * unregister_ftrace_function()).  The preemption section cost 4
	 * instructions per read (QEMU TCG plugin count, 2026-12-03).
	 */
	diofork_track_release((struct bio *)diofork_fregs_arg(fregs, 0));
}

/* ---- legacy fs/direct-io.c (vfat): submit_bio(bio) --------------------- */

/*
 * Every bio in the system passes here, hence plain ftrace too: a kprobe
 * would add its own dispatch and a full register save to each.
 */
static void notrace diofork_legacy_submit_ftrace(unsigned long ip,
						 unsigned long parent_ip,
						 struct ftrace_ops *op,
						 struct ftrace_regs *fregs)
{
	struct bio *bio = (struct bio *)diofork_fregs_arg(fregs, 0);
	unsigned long end_io = (unsigned long)bio->bi_end_io;

	if (end_io != diofork_legacy_end_io[0] &&
	    end_io != diofork_legacy_end_io[1])
		return;
	if (!current->mm || (current->flags & PF_KTHREAD) ||
	    diofork_bio_no_page_ref(bio))
		return;
	/* an RCU reader from here; nothing it calls submits a bio */
	preempt_disable_notrace();
	if (!diofork_policy_get())
		goto out;
	if (op_is_write(bio_op(bio))) {
		diofork_stat_inc(DIOFORK_STAT_DIO_SKIPPED_WRITE);
		goto out;
	}
	/* pages were taken before this point: no fork-race check here */
	diofork_track_bio(bio, 0, diofork_bio_kernel_pinned(bio),
			  DIOFORK_WP_SEQ_NONE);
out:
	preempt_enable_notrace();
}

/*
 * A policy may send fork or the COW fault to a stand-in (policy_wait.h):
 * the pre-handler sets the IP and returns 1, as error injection does.
 */

/* ---- fork: kernel_clone(args) ------------------------------------------ */

static int diofork_fork_pre(struct kprobe *p, struct pt_regs *regs)
{
	const struct kernel_clone_args *args;
	const struct diofork_policy *pol;
	struct mm_struct *mm = current->mm;
	unsigned long standin;
	bool busy;

	pol = diofork_policy_get();
	if (!pol)
		return 0;
	args = (const struct kernel_clone_args *)regs_get_kernel_argument(regs, 0);
	/* threads, vfork and posix_spawn share the mm: nothing is copied */
	if ((args->flags & CLONE_VM) || !mm || (current->flags & PF_KTHREAD))
		return 0;

	busy = diofork_track_mm_busy(mm);
	diofork_stat_inc(DIOFORK_STAT_FORKS);
	if (busy)
		diofork_stat_inc(DIOFORK_STAT_FORKS_WITH_DIO_INFLIGHT);
	standin = pol->fork ? pol->fork(mm, busy) : 0;
	if (standin) {
		instruction_pointer_set(regs, standin);
		return 1;
	}
	return 0;
}

/* ---- fork copies: uprobe_dup_mmap(oldmm, mm) -------------------------- */

/*
 * dup_mmap() calls it once it holds the parent's mmap lock for writing and
 * before it copies the first page table: the last point before the fork
 * shares a page.  Records wait for it to be indexed by pfn, and pin's to
 * take their pins (track.c).  Not a kprobe: fork is hot too, and this only
 * reads its argument.  It asks no policy: a record keeps what its mode
 * gave it until its read completes, whatever the mode is by then (a read
 * recorded in pin mode, its protection).
 */
static void notrace diofork_fork_copy_ftrace(unsigned long ip,
					     unsigned long parent_ip,
					     struct ftrace_ops *op,
					     struct ftrace_regs *fregs)
{
	/* an RCU reader; nothing it calls forks (no recursion) */
	preempt_disable_notrace();
	diofork_track_fork_mm((struct mm_struct *)diofork_fregs_arg(fregs, 0));
	preempt_enable_notrace();
}

/* ---- COW: do_wp_page(vmf), called with the PTE lock held --------------- */

static int diofork_cow_pre(struct kprobe *p, struct pt_regs *regs)
{
	struct vm_fault *vmf = (struct vm_fault *)regs_get_kernel_argument(regs, 0);
	const struct diofork_policy *pol;
	const struct mm_struct *owner;
	unsigned long standin;
	pte_t pte = vmf->orig_pte;

	pol = diofork_policy_get();
	if (!pol || !pte_present(pte))
		return 0;
	owner = diofork_track_pfn_owner(pte_pfn(pte), vmf->vma->vm_mm);
	if (!owner)
		return 0;
	if (owner == vmf->vma->vm_mm)
		diofork_stat_inc(DIOFORK_STAT_COW_ON_DIO_PAGE);
	else
		diofork_stat_inc(DIOFORK_STAT_COW_ON_DIO_PAGE_CHILD);
	standin = pol->cow_fault ? pol->cow_fault(vmf, owner) : 0;
	if (standin) {
		instruction_pointer_set(regs, standin);
		return 1;
	}
	return 0;
}

/* ---- the table ------------------------------------------------------------ */

#define DIOFORK_KPROBE(_id, _sym, _req, _pre)				\
	[_id] = { .symbol = _sym, .required = _req,			\
		  .kp = { .pre_handler = _pre } }

static struct diofork_hook diofork_hooks[DIOFORK_NR_HOOKS] = {
	[DIOFORK_HOOK_DIO_GET_PAGES] = {
		.symbol = "bio_iov_iter_get_pages",
		.required = true,
		.is_ftrace = true,
		.attached_at = diofork_gp_attached,	/* getpages.c */
		.ops = {
			.func = diofork_gp_ftrace,
			.flags = FTRACE_OPS_FL_SAVE_REGS |
				 FTRACE_OPS_FL_IPMODIFY,
		},
	},
	[DIOFORK_HOOK_DIO_RELEASE] = {
		.symbol = "__bio_release_pages",
		.required = true,
		.is_ftrace = true,
		.ops = {
			.func = diofork_release_ftrace,
		},
	},
	[DIOFORK_HOOK_DIO_LEGACY] = {
		.symbol = "submit_bio",
		.is_ftrace = true,
		.ops = {
			.func = diofork_legacy_submit_ftrace,
		},
	},
	DIOFORK_KPROBE(DIOFORK_HOOK_FORK, "kernel_clone", true,
		       diofork_fork_pre),
	DIOFORK_KPROBE(DIOFORK_HOOK_COW, "do_wp_page", true,
		       diofork_cow_pre),
	[DIOFORK_HOOK_FORK_COPY] = {
		.symbol = "uprobe_dup_mmap",
		.required = true,
		.is_ftrace = true,
		.ops = {
			.func = diofork_fork_copy_ftrace,
		},
	},
};

static int diofork_hook_attach(struct diofork_hook *h)
{
	int ret;

	if (h->is_ftrace) {
		ret = -ENOENT;
		h->ftrace_ip = diofork_symbol_addr(h->symbol);
		if (h->ftrace_ip)
			ret = ftrace_set_filter_ip(&h->ops, h->ftrace_ip, 0, 0);
		if (!ret) {
			ret = register_ftrace_function(&h->ops);
			if (ret)
				ftrace_set_filter_ip(&h->ops, h->ftrace_ip, 1, 0);
		}
	} else {
		h->kp.addr = NULL;
		h->kp.flags = 0;
		h->kp.symbol_name = h->symbol;
		ret = register_kprobe(&h->kp);
	}
	h->err = ret;
	h->attached = !ret;
	if (h->attached && h->attached_at)
		h->attached_at(h->ftrace_ip);
	return ret;
}

static void diofork_hook_detach(struct diofork_hook *h)
{
	if (!h->attached)
		return;
	if (h->is_ftrace) {
		unregister_ftrace_function(&h->ops);
		ftrace_set_filter_ip(&h->ops, h->ftrace_ip, 1, 0);
	} else {
		unregister_kprobe(&h->kp);
	}
	h->attached = false;
}

static void diofork_hooks_detach_mask(unsigned long mask)
{
	int id;

	for (id = DIOFORK_NR_HOOKS - 1; id >= 0; id--)
		if (mask & BIT(id))
			diofork_hook_detach(&diofork_hooks[id]);
}

static void diofork_hooks_remove(unsigned long mask)
{
	struct diofork_hook *release = &diofork_hooks[DIOFORK_HOOK_DIO_RELEASE];
	bool get_pages = diofork_hooks[DIOFORK_HOOK_DIO_GET_PAGES].attached;
	long left;

	/* Stop adding records: no new stand-in, and the running ones leave. */
	diofork_hooks_detach_mask(mask & ~BIT(DIOFORK_HOOK_DIO_RELEASE));
	if (get_pages && (mask & BIT(DIOFORK_HOOK_DIO_GET_PAGES)))
		diofork_gp_standins_wait();
	if (!(mask & BIT(DIOFORK_HOOK_DIO_RELEASE)))
		return;

	/* Let in-flight DIO release its pages, then stop watching. */
	if (release->attached) {
		left = diofork_track_wait_idle(DIOFORK_DRAIN_ON_REMOVE);
		if (left)
			pr_warn("%ld DIO still in flight: forgetting them\n",
				left);
		diofork_hook_detach(release);
	}
	diofork_track_forget_all();
}

int diofork_hooks_install(unsigned long mask)
{
	unsigned long done = 0;
	int id, ret;

	for (id = 0; id < DIOFORK_NR_HOOKS; id++) {
		struct diofork_hook *h = &diofork_hooks[id];

		if (!(mask & BIT(id)) || h->attached)
			continue;
		if (id == DIOFORK_HOOK_DIO_LEGACY && !diofork_legacy_end_io[0])
			continue;
		ret = diofork_hook_attach(h);
		if (!ret) {
			done |= BIT(id);
			continue;
		}
		if (!h->required) {
			pr_warn("optional hook %s unavailable (%d)\n",
				h->symbol, ret);
			continue;
		}
		pr_err("cannot hook %s (%d)\n", h->symbol, ret);
		diofork_hooks_remove(done);
		return ret;
	}
	return 0;
}

void diofork_hooks_remove_all(void)
{
	diofork_hooks_remove(GENMASK(DIOFORK_NR_HOOKS - 1, 0));
}

unsigned long diofork_hooks_attached(void)
{
	unsigned long mask = 0;
	int id;

	for (id = 0; id < DIOFORK_NR_HOOKS; id++)
		if (diofork_hooks[id].attached)
			mask |= BIT(id);
	return mask;
}

/* Hits the kernel skipped (kprobes do not nest). */
unsigned long diofork_hooks_missed(void)
{
	unsigned long missed = 0;
	int id;

	for (id = 0; id < DIOFORK_NR_HOOKS; id++) {
		const struct diofork_hook *h = &diofork_hooks[id];

		if (!h->attached || h->is_ftrace)
			continue;
		missed += h->kp.nmissed;
	}
	return missed;
}

void diofork_hooks_show(struct seq_file *m)
{
	int id;

	for (id = 0; id < DIOFORK_NR_HOOKS; id++) {
		const struct diofork_hook *h = &diofork_hooks[id];

		seq_printf(m, "hook: %s %s%s", h->symbol,
			   h->attached ? "attached" : "detached",
			   h->required ? "" : " (optional)");
		if (h->err)
			seq_printf(m, " error %d", h->err);
		seq_putc(m, '\n');
	}
}

/*
 * The address of a kernel symbol, through a kprobe registration:
 * kallsyms_lookup_name() is not exported since v5.7.
 */
unsigned long diofork_symbol_addr(const char *name)
{
	struct kprobe kp = { .symbol_name = name };
	unsigned long addr;

	if (register_kprobe(&kp))
		return 0;
	addr = (unsigned long)kp.addr;
	unregister_kprobe(&kp);
	return addr;
}

int diofork_hooks_init(void)
{
	unsigned long end_io = diofork_symbol_addr("dio_bio_end_io");
	unsigned long end_aio = diofork_symbol_addr("dio_bio_end_aio");

	if (end_io && end_aio) {
		diofork_legacy_end_io[0] = diofork_func_entry(end_io);
		diofork_legacy_end_io[1] = diofork_func_entry(end_aio);
	} else {
		pr_info("legacy direct-io not found: its DIO is not tracked\n");
	}
	diofork_kernel_has_extract_pages =
		!!diofork_symbol_addr("iov_iter_extract_pages");
	diofork_gup_init();
	return 0;
}
