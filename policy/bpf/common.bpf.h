// SPDX-License-Identifier: GPL-2.0
// What detect.bpf.c and enforce.bpf.c share: the record both write and the maps both use, so that the two
// modes share a pin directory's maps and policy decodes both with one type. Include after vmlinux.h and
// the libbpf headers.
#ifndef AUDITARCH_COMMON_BPF_H
#define AUDITARCH_COMMON_BPF_H

// Event kinds; policy.Kind mirrors them.
#define KIND_SIGNAL 1
#define KIND_PTRACE 2
#define KIND_PROCESS_VM 3
#define KIND_BPF_GET_FD 4
#define KIND_SIGIO 5
#define KIND_PTRACE_ACCESS 6
#define KIND_FILE 7            // enforce: a protected file or directory entry; code: FILE_*
#define KIND_UMOUNT 8          // a bpf filesystem unmounted; code: the umount flags
#define KIND_AUDIT_CONTROL 9   // enforce: an audit netlink control message; code: its type
#define KIND_CGROUP_FREEZE 10  // detect: a protected process's cgroup (or an ancestor) frozen

// KIND_FILE codes: what was attempted on the file.
#define FILE_OPEN_WRITE 1
#define FILE_OPEN_READ 2
#define FILE_UNLINK 3
#define FILE_RENAME 4
#define FILE_SETATTR 5
#define FILE_LINK 6
#define FILE_RMDIR 7

// inodes map values: what of the inode is protected (policy.PathFlag mirrors them).
#define FLAG_DIR 1    // the directory's entries: unlink, rmdir, rename out of or into it, open for write, setattr
#define FLAG_FILE 2   // the inode itself: open for write, unlink, rmdir, rename, setattr, link
#define FLAG_NOREAD 4 // with FLAG_FILE the inode, with FLAG_DIR the entries: any open at all
#define FLAG_CGROUP 8 // not in the map: a record's result for cgroup.kill/freeze of a cgroup in the cgroups map

#define NAME_LEN 32
#define BPFFS_PATH_LEN 256

#define NR_BPF 321 // x86_64

// /proc/PID/stat counts a process's start time in clock ticks (USER_HZ = 100 on x86).
#define NSEC_PER_TICK 10000000ULL

// One record in the events ring buffer; policy.Event is its decoded form. Every field is naturally aligned.
struct event {
	__u64 time_ns;   // bpf_ktime_get_boot_ns
	__u64 cgroup_id; // the doer's cgroup v2 id
	__u32 kind;      // KIND_*
	__u32 pid;       // the doer: thread id
	__u32 tgid;      // the doer: process id
	__u32 uid;
	__u32 euid;
	__u32 auid;      // loginuid; 4294967295 when unset
	__u32 sessionid; // audit session id
	__u32 target_pid;
	__u32 target_tgid;
	__s32 sig;    // signal number (KIND_SIGNAL), else the syscall number
	__s32 code;   // si_code (KIND_SIGNAL), ptrace request, bpf command
	__s32 result; // signal_generate's result (TRACE_SIGNAL_*), 0 otherwise
	__s32 stop;   // detect: bpf_send_signal(SIGSTOP)'s return (0 queued, 1 not attempted, <0 -errno); enforce: 2, denied
	__u32 id;     // KIND_BPF_GET_FD: the object id asked for
	char comm[16];
	__u64 ino;           // KIND_FILE: the inode acted on; KIND_UMOUNT: the root's; KIND_CGROUP_FREEZE: the cgroup id
	__u64 dev;           // its file system's device, the kernel's encoding (sb->s_dev: major << 20 | minor)
	char name[NAME_LEN]; // the dentry's name (KIND_FILE, KIND_CGROUP_FREEZE) or the mount point's (KIND_UMOUNT)
};
const struct event *unused_event __attribute__((unused)); // keeps struct event in the BTF for bpf2go -type

// protected: the process ids (tgids) whose signals and memory are watched. The value is the process's start
// time in clock ticks (field 22 of /proc/PID/stat), so that a reused pid is not protected; 0 matches any.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} protected SEC(".maps");

// objects: the (bpf command, id) pairs naming this package's own programs, maps and links; a process other
// than a protected one asking for an fd to one of them is recorded and stopped.
struct object_key {
	__u32 cmd;
	__u32 id;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct object_key);
	__type(value, __u8);
} objects SEC(".maps");

// inodes: the protected files and directories, by {s_dev, i_ino}; the value is FLAG_* bits. Read by the
// enforce programs only.
struct inode_key {
	__u64 dev; // sb->s_dev, the kernel's encoding
	__u64 ino;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct inode_key);
	__type(value, __u32);
} inodes SEC(".maps");

// cgroups: the cgroup v2 ids (kernfs node ids) of the protected processes' cgroups and all their ancestors;
// freezing or killing one freezes or kills a protected process. Detect watches freezes; enforce refuses
// opening their cgroup.kill and cgroup.freeze for write.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);
	__type(value, __u8);
} cgroups SEC(".maps");

// bpffs: [0] is the mount point of the bpf filesystem holding the pins, NUL-terminated ("" for none), and
// where its last component starts; the detect program watches umount2 of that path. Read by the detect
// programs only.
struct bpffs_path {
	char path[BPFFS_PATH_LEN];
	__u32 base;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpffs_path);
} bpffs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

// counters[0]: events lost because the ring buffer was full (the doer is stopped all the same).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline bool is_protected(struct task_struct *task)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	__u64 *start = bpf_map_lookup_elem(&protected, &tgid);
	if (!start)
		return false;
	if (*start == 0)
		return true;
	return *start == BPF_CORE_READ(task, group_leader, start_boottime) / NSEC_PER_TICK;
}

// emit records an event done by the current task to target (NULL: none) in the events ring buffer, or
// counts it in counters[0] when the buffer is full. stop is the verdict field (struct event's stop); ino,
// dev and name (a kernel or BPF stack string, or NULL) name the object acted on.
static __always_inline void emit(struct task_struct *target, __u32 kind, int sig, int code, int result, int stop,
				 __u32 id, __u64 ino, __u64 dev, const char *name)
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
	e->result = result;
	e->stop = stop;
	e->id = id;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->ino = ino;
	e->dev = dev;
	e->name[0] = 0;
	if (name)
		bpf_probe_read_kernel_str(e->name, sizeof(e->name), name);
	bpf_ringbuf_submit(e, 0);
}

#endif
