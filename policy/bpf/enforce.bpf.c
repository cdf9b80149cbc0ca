// SPDX-License-Identifier: GPL-2.0
// Enforce mode of package policy: BPF LSM programs refuse, with -EPERM, what is done to the protected
// processes, and record it. Built by bpf2go (make generate); the object and its Go bindings are committed.
// The maps have the layout of bpf/detect.bpf.c's, and the records its struct event, so both modes share a
// pin directory's maps and one decoder. See ../doc.go ("Enforce mode").
//
// vmlinux.h comes from a newer kernel than some this must run on (6.1): only hooks and fields present there
// are used, through CO-RE reads; hook arguments a later kernel appended (bpf's "kernel") are not read.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define EPERM 1
#define SIGIO 29
#define PF_KTHREAD 0x00200000
#define PTRACE_MODE_NOAUDIT 0x04

// struct event's stop field in this object: the hook refused the operation; nobody was stopped.
#define VERDICT_DENIED 2

#define BPF_PROG_GET_FD_BY_ID 13
#define BPF_MAP_GET_FD_BY_ID 14
#define BPF_LINK_GET_FD_BY_ID 30

// exempt reports whether the current task may do anything to a protected process: it is protected itself
// (the daemon, its threads, its peers) or a kernel thread.
static __always_inline bool exempt(struct task_struct *cur)
{
	return (BPF_CORE_READ(cur, flags) & PF_KTHREAD) || is_protected(cur);
}

// syscall_nr returns the number of the current task's system call.
static __always_inline int syscall_nr(struct task_struct *cur)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(cur);
	return (int)BPF_CORE_READ(regs, orig_ax);
}

static __always_inline void record(struct task_struct *target, __u32 kind, int sig, int code, __u32 id)
{
	struct task_struct *cur = bpf_get_current_task_btf();
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&counters, &zero);
		if (lost)
			__sync_fetch_and_add(lost, 1);
		return;
	}
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	e->time_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->kind = kind;
	e->pid = (__u32)pid_tgid;
	e->tgid = pid_tgid >> 32;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->euid = BPF_CORE_READ(cur, cred, euid.val);
	e->auid = BPF_CORE_READ(cur, loginuid.val);
	e->sessionid = BPF_CORE_READ(cur, sessionid);
	e->target_pid = target ? BPF_CORE_READ(target, pid) : 0;
	e->target_tgid = target ? BPF_CORE_READ(target, tgid) : 0;
	e->sig = sig;
	e->code = code;
	e->result = 0;
	e->stop = VERDICT_DENIED;
	e->id = id;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
}

// A process signals a protected one: kill, tkill, tgkill, rt_(tg)sigqueueinfo, pidfd_send_signal, a process
// group or kill(-1). The kernel calls this hook only for signals a system call asks for (si_code <= 0 or
// SEND_SIG_NOINFO: check_kill_permission returns early for the others), so the signals the kernel generates
// itself (SIGCHLD, SIGPIPE, faults, timers, the OOM killer's and cgroup.kill's SIGKILL, the tty's SIGINT
// and SIGHUP) never reach it; they are let through here too should another caller pass them. Also let
// through: signal 0 (an existence probe: nothing is delivered), a signal the USB core sends for an
// asynchronous I/O completion on behalf of cred (always to the process that asked for it), and signals
// from protected processes (the daemon's own threads: the Go runtime preempts with tgkill(SIGURG)).
SEC("lsm/task_kill")
int BPF_PROG(task_kill, struct task_struct *p, struct kernel_siginfo *info, int sig, const struct cred *cred)
{
	if (sig == 0 || cred || !is_protected(p))
		return 0;
	int code = 0; // SI_USER
	if ((unsigned long)info == 1) // SEND_SIG_PRIV
		return 0;
	if ((unsigned long)info != 0) { // SEND_SIG_NOINFO is SI_USER
		code = BPF_CORE_READ(info, si_code);
		if (code > 0) // SI_KERNEL and the fault codes
			return 0;
	}
	struct task_struct *cur = bpf_get_current_task_btf();
	if (exempt(cur))
		return 0;
	record(p, KIND_SIGNAL, sig, code, 0);
	return -EPERM;
}

// Any access check against a protected process: ptrace attach and seize, /proc/PID/mem, process_vm_readv
// and _writev, pidfd_getfd, process_madvise, kcmp, /proc/PID/{environ,maps,fd,exe,...}. The doers get
// EPERM, or EACCES where the kernel turns a refusal into that (/proc/PID/mem). Checks the kernel marks
// PTRACE_MODE_NOAUDIT (a probe that only hides fields of /proc/PID/stat) are refused without a record.
SEC("lsm/ptrace_access_check")
int BPF_PROG(ptrace_access_check, struct task_struct *child, unsigned int mode)
{
	if (!is_protected(child))
		return 0;
	struct task_struct *cur = bpf_get_current_task_btf();
	if (exempt(cur))
		return 0;
	if (!(mode & PTRACE_MODE_NOAUDIT))
		record(child, KIND_PTRACE_ACCESS, syscall_nr(cur), (int)mode, 0);
	return -EPERM;
}

// A SIGIO or F_SETSIG signal from a file whose owner (F_SETOWN) is a protected process, raised by whatever
// task did the I/O. The daemon does not ask for such signals, so all are refused: nothing is delivered (the
// doer's own system call is not failed).
SEC("lsm/file_send_sigiotask")
int BPF_PROG(file_send_sigiotask, struct task_struct *tsk, struct fown_struct *fown, int sig)
{
	if (!is_protected(tsk))
		return 0;
	struct task_struct *cur = bpf_get_current_task_btf();
	if (is_protected(cur))
		return 0;
	record(tsk, KIND_SIGIO, sig ? sig : SIGIO, 0, 0); // 0: the default, SIGIO
	return -EPERM;
}

// bpf(*_GET_FD_BY_ID) for one of this package's programs, maps or links (the objects map): an fd would let
// the doer detach a link or rewrite the protected set.
SEC("lsm/bpf")
int BPF_PROG(bpf, int cmd, union bpf_attr *attr, unsigned int size)
{
	if (cmd != BPF_PROG_GET_FD_BY_ID && cmd != BPF_MAP_GET_FD_BY_ID && cmd != BPF_LINK_GET_FD_BY_ID)
		return 0;
	struct object_key k = {.cmd = (__u32)cmd};
	if (bpf_probe_read_kernel(&k.id, sizeof(k.id), attr)) // prog_id, map_id and link_id come first
		return 0;
	if (!bpf_map_lookup_elem(&objects, &k))
		return 0;
	struct task_struct *cur = bpf_get_current_task_btf();
	if (exempt(cur))
		return 0;
	record(NULL, KIND_BPF_GET_FD, NR_BPF, cmd, k.id);
	return -EPERM;
}
