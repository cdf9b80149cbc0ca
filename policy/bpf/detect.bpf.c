// SPDX-License-Identifier: GPL-2.0
// Detect mode of package policy: record what is done to the protected processes and stop the doer at once.
// Built by bpf2go (make generate); the object and its Go bindings are committed. See ../doc.go.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.bpf.h"

char LICENSE[] SEC("license") = "GPL"; // bpf_send_signal and the task kfuncs are GPL-only

#define SIGSTOP 19
#define SI_USER 0
#define SI_KERNEL 0x80
#define SI_QUEUE -1
#define SI_TKILL -6

// Syscall numbers and arguments (x86_64).
#define NR_PTRACE 101
#define NR_PROCESS_VM_READV 310
#define NR_PROCESS_VM_WRITEV 311
#define NR_UMOUNT2 166
#define PF_KTHREAD 0x00200000
#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206

struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
void bpf_task_release(struct task_struct *p) __ksym;

// stop_and_record stops the current task's process, then records the event. The stop comes first: it must
// not wait on the ring buffer, and it happens even when the record is lost.
// ino, dev and name (a kernel or BPF stack string, or NULL) name the object acted on.
static __always_inline void stop_and_record_obj(struct task_struct *target, __u32 kind, int sig, int code,
						int result, bool stop, __u32 id, __u64 ino, __u64 dev,
						const char *name)
{
	int stopped = 1;
	if (stop)
		stopped = bpf_send_signal(SIGSTOP);
	emit(target, kind, sig, code, result, stopped, id, ino, dev, name);
}

static __always_inline void stop_and_record(struct task_struct *target, __u32 kind, int sig, int code, int result,
					    bool stop, __u32 id)
{
	stop_and_record_obj(target, kind, sig, code, result, stop, id, 0, 0, NULL);
}

// A signal is generated for a task (kill, tgkill, sigqueue, pidfd_send_signal, a process group, a write to
// cgroup.kill, or the kernel). When the target's process is protected and the sender is not, record it; stop
// the sender when the signal came from the sender's own system call (si_code SI_USER, SI_TKILL or SI_QUEUE):
// a kernel-generated signal (SIGCHLD, a timer, SIGSEGV) runs in whatever task happens to be current.
SEC("tp_btf/signal_generate")
int BPF_PROG(signal_generate, int sig, struct kernel_siginfo *info, struct task_struct *task, int group, int result)
{
	if (!is_protected(task))
		return 0;
	struct task_struct *cur = bpf_get_current_task_btf();
	if (is_protected(cur))
		return 0; // the daemon signalling itself or another protected process

	int code;
	if ((unsigned long)info == 0) // SEND_SIG_NOINFO: from user space
		code = SI_USER;
	else if ((unsigned long)info == 1) // SEND_SIG_PRIV: from the kernel
		code = SI_KERNEL;
	else
		code = BPF_CORE_READ(info, si_code);
	bool stop = code == SI_USER || code == SI_TKILL || code == SI_QUEUE;
	stop_and_record(task, KIND_SIGNAL, sig, code, result, stop, 0);
	return 0;
}

// protected_pid reports whether the thread pid (in the initial pid namespace) belongs to a protected
// process, and returns that thread's task in *found (to be released) when it does.
static __always_inline bool protected_pid(s32 pid, struct task_struct **found)
{
	struct task_struct *t = bpf_task_from_pid(pid);
	if (!t)
		return false;
	if (!is_protected(t)) {
		bpf_task_release(t);
		return false;
	}
	*found = t;
	return true;
}

// umount2 of the bpf filesystem that holds the pins, named by the path the bpffs map holds (exactly, or with
// one trailing slash; a relative or otherwise spelled path is not recognised). The record's name is the
// path's last component.
static __always_inline void watch_umount(struct pt_regs *regs, long id)
{
	__u32 zero = 0;
	struct bpffs_path *w = bpf_map_lookup_elem(&bpffs, &zero);
	if (!w || w->path[0] == 0)
		return;
	char buf[BPFFS_PATH_LEN];
	if (bpf_probe_read_user_str(buf, sizeof(buf), (void *)PT_REGS_PARM1_CORE_SYSCALL(regs)) <= 0)
		return;
	for (__u32 i = 0; i < BPFFS_PATH_LEN - 1; i++) {
		char c = buf[i];
		if (w->path[i] == 0) {
			if (c == 0 || (c == '/' && buf[i + 1] == 0))
				break;
			return;
		}
		if (c != w->path[i])
			return;
	}
	stop_and_record_obj(NULL, KIND_UMOUNT, (int)id, (int)PT_REGS_PARM2_CORE_SYSCALL(regs), 0, true, 0, 0, 0,
			    w->path + (w->base & (BPFFS_PATH_LEN - 1)));
}

// System calls that reach into a protected process without a signal: ptrace attach or seize,
// process_vm_readv/writev, and bpf() asking for an fd to one of this package's objects by id; and umount2
// of the pins' bpf filesystem.
SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long id)
{
	if (id != NR_PTRACE && id != NR_PROCESS_VM_READV && id != NR_PROCESS_VM_WRITEV && id != NR_BPF &&
	    id != NR_UMOUNT2)
		return 0;
	struct task_struct *cur = bpf_get_current_task_btf();
	if (is_protected(cur))
		return 0;
	if (id == NR_UMOUNT2) {
		watch_umount(regs, id);
		return 0;
	}

	struct task_struct *t = NULL;
	if (id == NR_PTRACE) {
		long req = PT_REGS_PARM1_CORE_SYSCALL(regs);
		if (req != PTRACE_ATTACH && req != PTRACE_SEIZE)
			return 0;
		if (!protected_pid((s32)PT_REGS_PARM2_CORE_SYSCALL(regs), &t))
			return 0;
		stop_and_record(t, KIND_PTRACE, (int)id, (int)req, 0, true, 0);
		bpf_task_release(t);
		return 0;
	}
	if (id == NR_PROCESS_VM_READV || id == NR_PROCESS_VM_WRITEV) {
		if (!protected_pid((s32)PT_REGS_PARM1_CORE_SYSCALL(regs), &t))
			return 0;
		stop_and_record(t, KIND_PROCESS_VM, (int)id, 0, 0, true, 0);
		bpf_task_release(t);
		return 0;
	}
	// bpf(cmd, attr, size): the *_GET_FD_BY_ID commands take the id as attr's first __u32.
	struct object_key k = {.cmd = (__u32)PT_REGS_PARM1_CORE_SYSCALL(regs)};
	void *attr = (void *)PT_REGS_PARM2_CORE_SYSCALL(regs);
	if (bpf_probe_read_user(&k.id, sizeof(k.id), attr))
		return 0;
	if (!bpf_map_lookup_elem(&objects, &k))
		return 0;
	stop_and_record(NULL, KIND_BPF_GET_FD, (int)id, (int)k.cmd, 0, true, k.id);
	return 0;
}

// A cgroup is frozen (a write of 1 to its cgroup.freeze, or to an ancestor's: the tracepoint fires for each
// cgroup whose state changes) and it is in the cgroups map: a protected process's cgroup or an ancestor.
// The writer is stopped and recorded (ino: the cgroup id, name: its directory's name); the freeze itself
// goes through. Protected processes and kernel threads are let through.
SEC("tp_btf/cgroup_freeze")
int BPF_PROG(cgroup_freeze, struct cgroup *cgrp, const char *path)
{
	struct kernfs_node *kn = BPF_CORE_READ(cgrp, kn);
	__u64 id = BPF_CORE_READ(kn, id);
	if (!bpf_map_lookup_elem(&cgroups, &id))
		return 0;
	struct task_struct *cur = bpf_get_current_task_btf();
	if ((BPF_CORE_READ(cur, flags) & PF_KTHREAD) || is_protected(cur))
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(cur);
	stop_and_record_obj(NULL, KIND_CGROUP_FREEZE, (int)BPF_CORE_READ(regs, orig_ax), 0, 0, true, 0, id, 0,
			    BPF_CORE_READ(kn, name));
	return 0;
}
