package sandbox

import (
	"fmt"
	"slices"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Allowed are the system calls the confined daemon may make besides kill and tgkill (which the filter
// checks by argument): those `strace -f` saw the daemon make over its life after setup (capture,
// rotation, epoch keys, shipping over TLS, the embedded store, disk full, the configuration guard,
// freezing sessions, stop) and what the Go runtime and glibc's thread start need.
var Allowed = []string{
	// Go runtime and glibc threads (runtime/sys_linux_amd64.s, runtime/cgo, nptl).
	"futex", "clone3", "exit", "exit_group", "mmap", "munmap", "mprotect", "madvise", "mremap",
	"brk", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "sched_yield",
	"sched_getaffinity", "nanosleep", "clock_nanosleep", "clock_gettime", "gettimeofday", "getpid",
	"gettid", "getppid", "set_robust_list", "rseq", "restart_syscall", "membarrier", "getrlimit",
	"prlimit64", "uname", "getrandom", "set_tid_address",
	// Polling and descriptors.
	"epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd2", "pipe2",
	"close", "dup", "dup3", "fcntl", "read", "write", "readv", "writev", "pread64", "pwrite64", "lseek",
	// Files: the archive, keys, store, cgroupfs, /proc.
	"openat", "newfstatat", "fstat", "statx", "readlinkat", "getdents64", "mkdirat", "unlinkat",
	"renameat", "renameat2", "linkat", "fsync", "fdatasync", "fallocate", "ftruncate", "flock",
	"fstatfs", "statfs", "fchmod", "fchmodat", "faccessat", "faccessat2", "getcwd", "utimensat",
	// Sockets: audit netlink, TLS to the store, the embedded store's listener.
	"connect", "accept4", "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown",
	"getsockname", "getpeername", "setsockopt", "getsockopt",
	// BPF maps and ring buffer of the protection programs.
	"bpf",
	// Identity and session lookups (freeze), signals to itself.
	"getuid", "geteuid", "getgid", "getegid", "getsid", "getpgid",
	// Reaping the exe helper (cmd/auditarch), started before the sandbox.
	"waitid", "wait4",
	// Checked by argument in the filter: kill, tgkill (package doc) and the calls in conditional.
	"kill", "tgkill", "clone", "ioctl", "prctl", "socket",
}

// conditional are the allowed calls the filter allows only with some arguments. Each compares the whole
// 64-bit argument for equality (or the bits for clone), so nothing the kernel would read differently
// (it truncates these arguments to 32 bits) passes.
var conditional = []seccomp.NameWithConditions{
	// A thread (Go's runtime without cgo); a new process is refused (glibc's fork uses clone).
	{Name: "clone", Conditions: seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.BitsSet, Value: unix.CLONE_THREAD}}},
	// The embedded store's immutable sealed segments; terminal checks of the log output.
	{Name: "ioctl", Conditions: seccomp.ArgumentConditions{{Argument: 1, Operation: seccomp.Equal, Value: unix.FS_IOC_GETFLAGS}}},
	{Name: "ioctl", Conditions: seccomp.ArgumentConditions{{Argument: 1, Operation: seccomp.Equal, Value: unix.FS_IOC_SETFLAGS}}},
	{Name: "ioctl", Conditions: seccomp.ArgumentConditions{{Argument: 1, Operation: seccomp.Equal, Value: unix.TCGETS}}},
	// The Go runtime names its anonymous mappings (PR_SET_VMA); any other prctl is refused.
	{Name: "prctl", Conditions: seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.Equal, Value: unix.PR_SET_VMA}}},
	// TCP (and the resolver's UDP) to the store; netlink and listening sockets are opened before.
	{Name: "socket", Conditions: seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.Equal, Value: unix.AF_INET}}},
	{Name: "socket", Conditions: seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.Equal, Value: unix.AF_INET6}}},
}

// Denied are system calls the daemon never makes and must not be able to make: running programs,
// inspecting or writing other processes, loading kernel code, changing mounts, privileges or this
// sandbox, and the signal calls a kill filter would not see. They are refused like every call not
// allowed; the list documents the intent, and Apply refuses an allowlist that contains one.
var Denied = []string{
	"execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev",
	"process_madvise", "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "rt_sigqueueinfo",
	"rt_tgsigqueueinfo", "tkill", "kexec_load", "kexec_file_load", "init_module", "finit_module",
	"delete_module", "mount", "umount2", "mount_setattr", "move_mount", "open_tree", "fsopen",
	"fsmount", "fsconfig", "pivot_root", "chroot", "unshare", "setns", "swapon", "swapoff", "reboot",
	"setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "setfsuid",
	"setfsgid", "capset", "seccomp", "landlock_create_ruleset", "landlock_add_rule",
	"landlock_restrict_self", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
	"io_uring_register", "keyctl", "add_key", "request_key", "personality", "iopl", "ioperm",
	"mknodat", "symlinkat", "chown", "fchown", "fchownat", "lchown", "name_to_handle_at",
	"open_by_handle_at", "settimeofday", "clock_settime", "adjtimex", "sethostname", "setdomainname",
	"acct", "quotactl", "syslog", "bind", "listen",
}

// seccomp_data offsets (include/uapi/linux/seccomp.h): nr, arch, instruction pointer, args[6].
const (
	offNr    = 0
	offArch  = 4
	offArg0  = 16 // low 32 bits of args[0] on a little-endian machine
	retAllow = uint32(seccomp.ActionAllow)
	retEPERM = uint32(seccomp.ActionErrno) | uint32(unix.EPERM)
)

// filter assembles the seccomp program: kill and tgkill checked by argument (package doc), then
// go-seccomp-bpf's allowlist of syscalls (its arch check refuses other ABIs, x32 included), default
// EPERM.
func filter(syscalls []string, pid int) ([]unix.SockFilter, error) {
	for _, n := range syscalls {
		if slices.Contains(Denied, n) {
			return nil, fmt.Errorf("sandbox: %s is both allowed and denied", n)
		}
	}
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	var plain []string
	var cond []seccomp.NameWithConditions
	for _, n := range syscalls {
		switch {
		case n == "kill" || n == "tgkill":
		case slices.ContainsFunc(conditional, func(c seccomp.NameWithConditions) bool { return c.Name == n }):
			for _, c := range conditional {
				if c.Name == n {
					cond = append(cond, c)
				}
			}
		default:
			plain = append(plain, n)
		}
	}
	policy := seccomp.Policy{
		DefaultAction: seccomp.ActionErrno,
		Syscalls: []seccomp.SyscallGroup{
			{Names: plain, NamesWithCondtions: cond, Action: seccomp.ActionAllow},
			{Names: Denied, Action: seccomp.ActionErrno},
		},
	}
	lib, err := policy.Assemble()
	if err != nil {
		return nil, fmt.Errorf("sandbox: seccomp policy: %w", err)
	}
	// The pid checks read only the low 32 bits of args[0], as the kernel does (pid_t).
	// kill: 0 < int32(pid); tgkill: tgid == this process.
	pre := []bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(info.ID), SkipTrue: 12}, // → lib
		bpf.LoadAbsolute{Off: offNr, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(unix.SYS_KILL), SkipTrue: 2},   // → kill
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(unix.SYS_TGKILL), SkipTrue: 5}, // → tgkill
		bpf.Jump{Skip: 8}, // → lib
		// kill:
		bpf.LoadAbsolute{Off: offArg0, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x80000000, SkipTrue: 5}, // negative: a group, or -1 → EPERM
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipTrue: 4},            // 0: its own group → EPERM
		bpf.RetConstant{Val: retAllow},
		// tgkill:
		bpf.LoadAbsolute{Off: offArg0, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(pid), SkipFalse: 1},
		bpf.RetConstant{Val: retAllow},
		bpf.RetConstant{Val: retEPERM},
		// lib: go-seccomp-bpf's program
	}
	raw, err := bpf.Assemble(append(pre, lib...))
	if err != nil {
		return nil, fmt.Errorf("sandbox: assemble seccomp filter: %w", err)
	}
	prog := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		prog[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return prog, nil
}

// load installs prog on every thread (TSYNC) with denials logged (FLAG_LOG). no_new_privs must be set.
func load(prog []unix.SockFilter) error {
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC|unix.SECCOMP_FILTER_FLAG_LOG, uintptr(unsafe.Pointer(&fprog)))
	switch {
	case e != 0:
		return fmt.Errorf("sandbox: seccomp: %w", e)
	case r != 0:
		return fmt.Errorf("sandbox: seccomp: thread %d cannot take the filter", r)
	}
	return nil
}
