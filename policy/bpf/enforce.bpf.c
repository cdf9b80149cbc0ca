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

#define FMODE_WRITE 0x2
#define BPF_FS_MAGIC 0xcafe4a11
#define CGROUP2_SUPER_MAGIC 0x63677270
#define NETLINK_AUDIT 9
#define NLMSG_HDRLEN 16
#define MAX_AUDIT_MSGS 32 // messages of one sendmsg checked; a longer batch is refused whole

// Audit netlink control messages refused to all but the exempt (include/uapi/linux/audit.h).
#define AUDIT_SET 1001
#define AUDIT_ADD_RULE 1011
#define AUDIT_DEL_RULE 1012
#define AUDIT_TRIM 1014
#define AUDIT_MAKE_EQUIV 1015
#define AUDIT_SET_FEATURE 1018

// setattr_idmap: inode_setattr's arguments are (idmap, dentry, attr) on this kernel (6.9 and later), not
// (dentry, attr). Set by policy from the kernel's BTF before loading.
const volatile bool setattr_idmap = false;

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

// record_obj records a refusal; ino, dev and name (a kernel string, or NULL) name the object acted on.
static __always_inline void record_obj(struct task_struct *target, __u32 kind, int sig, int code, __u32 id,
				       int result, __u64 ino, __u64 dev, const char *name)
{
	emit(target, kind, sig, code, result, VERDICT_DENIED, id, ino, dev, name);
}

static __always_inline void record(struct task_struct *target, __u32 kind, int sig, int code, __u32 id)
{
	record_obj(target, kind, sig, code, id, 0, 0, 0, NULL);
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

// inode_flags returns the FLAG_* bits the inodes map holds for inode (0 when it is not protected or NULL).
static __always_inline __u32 inode_flags(struct inode *inode)
{
	if (!inode)
		return 0;
	struct inode_key k = {
		.dev = BPF_CORE_READ(inode, i_sb, s_dev),
		.ino = BPF_CORE_READ(inode, i_ino),
	};
	__u32 *f = bpf_map_lookup_elem(&inodes, &k);
	return f ? *f : 0;
}

// entry_protection returns what protects the directory entry dentry: the inode's own bits when they
// include one of self (FLAG_FILE, and FLAG_DIR for removing or renaming a protected directory itself),
// else the bits of its directory dir when that has FLAG_DIR; 0 when nothing does.
static __always_inline __u32 entry_protection(struct inode *dir, struct dentry *dentry, __u32 self)
{
	__u32 f = inode_flags(BPF_CORE_READ(dentry, d_inode));
	if (f & self)
		return f;
	f = inode_flags(dir);
	if (f & FLAG_DIR)
		return f & (FLAG_DIR | FLAG_NOREAD);
	return 0;
}

// deny_file records the refusal of op on dentry (matched: the bits that protect it) unless the current
// task is exempt, and returns the hook's verdict.
static __always_inline int deny_file(int op, struct dentry *dentry, __u32 matched, __u32 id)
{
	struct task_struct *cur = bpf_get_current_task_btf();
	if (exempt(cur))
		return 0;
	struct inode *inode = BPF_CORE_READ(dentry, d_inode);
	__u64 ino = 0, dev = 0;
	if (inode) {
		ino = BPF_CORE_READ(inode, i_ino);
		dev = BPF_CORE_READ(inode, i_sb, s_dev);
	}
	record_obj(NULL, KIND_FILE, syscall_nr(cur), op, id, (int)matched, ino, dev,
		   (const char *)BPF_CORE_READ(dentry, d_name.name));
	return -EPERM;
}

// is_name reports whether the dentry's name is the NUL-terminated want (at most NAME_LEN bytes).
static __always_inline bool is_name(struct dentry *d, const char *want, int n)
{
	char name[NAME_LEN];
	if (bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(d, d_name.name)) != n)
		return false;
	for (int i = 0; i < n && i < NAME_LEN; i++)
		if (name[i] != want[i])
			return false;
	return true;
}

// cgroup_control reports whether d is cgroup.kill or cgroup.freeze of a cgroup in the cgroups map (a
// protected process's cgroup or an ancestor): writing 1 kills or freezes the protected process.
static __always_inline bool cgroup_control(struct inode *inode, struct dentry *d)
{
	if (BPF_CORE_READ(inode, i_sb, s_magic) != CGROUP2_SUPER_MAGIC)
		return false;
	__u64 id = BPF_CORE_READ(d, d_parent, d_inode, i_ino); // a cgroup's id is its directory's inode number
	if (!bpf_map_lookup_elem(&cgroups, &id))
		return false;
	return is_name(d, "cgroup.kill", sizeof("cgroup.kill")) || is_name(d, "cgroup.freeze", sizeof("cgroup.freeze"));
}

// An open of a protected file: for write (FLAG_FILE, or an entry of a FLAG_DIR directory), or at all
// (FLAG_NOREAD); and for write, cgroup.kill or cgroup.freeze of a protected process's cgroup or of an
// ancestor (the cgroups map; the record's Result is FLAG_CGROUP). Opening a file its caller creates in a
// protected directory is an open for write too.
SEC("lsm/file_open")
int BPF_PROG(file_open, struct file *file)
{
	struct dentry *d = BPF_CORE_READ(file, f_path.dentry);
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	bool write = BPF_CORE_READ(file, f_mode) & FMODE_WRITE;
	__u32 f = inode_flags(inode);
	__u32 pf = inode_flags(BPF_CORE_READ(d, d_parent, d_inode));
	if (!f && !pf) {
		if (write && cgroup_control(inode, d))
			return deny_file(FILE_OPEN_WRITE, d, FLAG_CGROUP, BPF_CORE_READ(file, f_flags));
		return 0;
	}
	__u32 matched = 0;
	if ((f & FLAG_FILE) && (write || (f & FLAG_NOREAD)))
		matched = f & (FLAG_FILE | FLAG_NOREAD);
	else if ((pf & FLAG_DIR) && (write || (pf & FLAG_NOREAD)))
		matched = pf & (FLAG_DIR | FLAG_NOREAD);
	if (!matched)
		return 0;
	return deny_file(write ? FILE_OPEN_WRITE : FILE_OPEN_READ, d, matched, BPF_CORE_READ(file, f_flags));
}

// unlink of a protected file or of an entry of a protected directory (a pin in the pin directory).
SEC("lsm/inode_unlink")
int BPF_PROG(inode_unlink, struct inode *dir, struct dentry *dentry)
{
	__u32 m = entry_protection(dir, dentry, FLAG_FILE);
	return m ? deny_file(FILE_UNLINK, dentry, m, 0) : 0;
}

// rmdir of a protected directory or of a subdirectory of one (a cgroup under the daemon's).
SEC("lsm/inode_rmdir")
int BPF_PROG(inode_rmdir, struct inode *dir, struct dentry *dentry)
{
	__u32 m = entry_protection(dir, dentry, FLAG_FILE | FLAG_DIR);
	return m ? deny_file(FILE_RMDIR, dentry, m, 0) : 0;
}

// rename (also RENAME_EXCHANGE, and over an existing name) of a protected file or directory, out of a
// protected directory, or into one.
SEC("lsm/inode_rename")
int BPF_PROG(inode_rename, struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
	     struct dentry *new_dentry)
{
	__u32 m = entry_protection(old_dir, old_dentry, FLAG_FILE | FLAG_DIR);
	if (!m)
		m = entry_protection(new_dir, new_dentry, FLAG_FILE | FLAG_DIR);
	return m ? deny_file(FILE_RENAME, old_dentry, m, 0) : 0;
}

// A new hard link to a protected file or to an entry of a protected directory: through it the file could
// be opened for write in a directory that is not protected.
SEC("lsm/inode_link")
int BPF_PROG(inode_link, struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry)
{
	__u32 m = entry_protection(BPF_CORE_READ(old_dentry, d_parent, d_inode), old_dentry, FLAG_FILE);
	return m ? deny_file(FILE_LINK, old_dentry, m, 0) : 0;
}

// truncate, ftruncate, open with O_TRUNC, chmod, chown, utimes of a protected file or an entry of a
// protected directory (notify_change). The record's id is the ATTR_* bits asked for.
SEC("lsm/inode_setattr")
int BPF_PROG(inode_setattr)
{
	// Each argument is loaded at a constant offset (the verifier refuses a computed one); on 6.1, ctx[2]
	// is the return value's slot.
	__u64 a0 = ctx[0], a1 = ctx[1], a2 = ctx[2];
	barrier_var(a0);
	barrier_var(a1);
	barrier_var(a2);
	struct dentry *dentry = (struct dentry *)(setattr_idmap ? a1 : a0);
	struct iattr *attr = (struct iattr *)(setattr_idmap ? a2 : a1);
	__u32 m = entry_protection(BPF_CORE_READ(dentry, d_parent, d_inode), dentry, FLAG_FILE);
	return m ? deny_file(FILE_SETATTR, dentry, m, BPF_CORE_READ(attr, ia_valid)) : 0;
}

// umount (any flags, lazy included) of a bpf filesystem: it would drop the pins. The record names the
// mount point's last component; ino is the file system's root inode.
SEC("lsm/sb_umount")
int BPF_PROG(sb_umount, struct vfsmount *mnt, int flags)
{
	struct super_block *sb = BPF_CORE_READ(mnt, mnt_sb);
	if (BPF_CORE_READ(sb, s_magic) != BPF_FS_MAGIC)
		return 0;
	struct task_struct *cur = bpf_get_current_task_btf();
	if (exempt(cur))
		return 0;
	struct mount *m = (void *)mnt - bpf_core_field_offset(struct mount, mnt);
	record_obj(NULL, KIND_UMOUNT, syscall_nr(cur), flags, 0, 0, BPF_CORE_READ(mnt, mnt_root, d_inode, i_ino),
		   BPF_CORE_READ(sb, s_dev), (const char *)BPF_CORE_READ(m, mnt_mountpoint, d_name.name));
	return -EPERM;
}

static __always_inline bool audit_control(__u16 type)
{
	return type == AUDIT_SET || type == AUDIT_ADD_RULE || type == AUDIT_DEL_RULE || type == AUDIT_TRIM ||
	       type == AUDIT_MAKE_EQUIV || type == AUDIT_SET_FEATURE;
}

// A message to the kernel's audit netlink socket that changes its state: AUDIT_SET (enable, failure mode,
// the audit pid, rate and backlog limits), AUDIT_ADD_RULE, AUDIT_DEL_RULE, AUDIT_TRIM, AUDIT_MAKE_EQUIV,
// AUDIT_SET_FEATURE. Every message of the sendmsg is checked, as the kernel processes them all (a batch
// of more than MAX_AUDIT_MSGS is refused whole, code 0). Reads (AUDIT_GET, AUDIT_LIST_RULES, ...) and user
// messages pass. The record's code is the message type; for AUDIT_SET its id is audit_status.mask.
SEC("lsm/netlink_send")
int BPF_PROG(netlink_send, struct sock *sk, struct sk_buff *skb)
{
	if (BPF_CORE_READ(sk, sk_protocol) != NETLINK_AUDIT)
		return 0;
	unsigned char *data = BPF_CORE_READ(skb, data);
	__u32 len = BPF_CORE_READ(skb, len);
	__u32 off = 0, mask = 0;
	struct nlmsghdr h = {};
	bool refuse = true; // unless every message was seen
	for (int i = 0; i < MAX_AUDIT_MSGS; i++) {
		// audit_receive stops at the first message nlmsg_ok refuses.
		if (len - off < NLMSG_HDRLEN || bpf_probe_read_kernel(&h, sizeof(h), data + off) ||
		    h.nlmsg_len < NLMSG_HDRLEN || h.nlmsg_len > len - off) {
			refuse = false;
			break;
		}
		if (audit_control(h.nlmsg_type)) {
			if (h.nlmsg_type == AUDIT_SET && h.nlmsg_len >= NLMSG_HDRLEN + 4)
				bpf_probe_read_kernel(&mask, sizeof(mask), data + off + NLMSG_HDRLEN);
			break;
		}
		off += (h.nlmsg_len + 3) & ~3U;
		if (off >= len) {
			refuse = false;
			break;
		}
		h.nlmsg_type = 0; // a refusal after the loop: too many messages to check
	}
	if (!refuse)
		return 0;
	struct task_struct *cur = bpf_get_current_task_btf();
	if (exempt(cur))
		return 0;
	record_obj(NULL, KIND_AUDIT_CONTROL, syscall_nr(cur), h.nlmsg_type, mask, 0, 0, 0, NULL);
	return -EPERM;
}
