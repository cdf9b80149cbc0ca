// Package policy protects the daemon from the host's root, in one of two modes (ChooseMode picks: enforce
// where EnforceAvailable says BPF LSM programs run, else detect). Both give a *Guard with the same pins,
// Protect/Unprotect, Events and Event type; Event.Denied (enforce) or Event.Stopped (detect) is the verdict.
//
// Detect mode (Detect), for hosts where BPF LSM programs cannot load (DESIGN.md, "Protection"): BPF programs on the signal_generate and sys_enter
// tracepoints record every signal sent to a protected process, and every ptrace attach, process_vm_readv or
// process_vm_writev aimed at one, and stop the doer with bpf_send_signal(SIGSTOP) inside the kernel, before
// its system call has returned. Nothing is refused: SIGKILL still kills; the record survives. Also
// recorded and stopped: umount2 of the pins' bpf file system, by the path its mount point has (the bpffs
// map; exactly that string or with one trailing slash: a relative path, a symbolic link or another mount
// namespace's path is not recognised), KindUmount; a write to cgroup.freeze of a protected process's
// cgroup or an ancestor (tp_btf/cgroup_freeze, which fires in the writer for each cgroup whose state
// changes; the cgroups map holds the ids, Protect fills it), KindCgroupFreeze, one record per frozen
// cgroup on the protected process's path; and cgroup.kill, which signal_generate sees as the writer's
// SIGKILL (SI_USER). Protected files are not watched in detect mode: the daemon's audit rules do that.
//
// Invariant: once Detect has returned, protection does not depend on this process. The programs' links and
// the maps are pinned on a BPF filesystem, so they stay attached, stopping and recording, after the daemon
// exits or crashes; the next Detect adopts them and reads what was recorded meanwhile. Only Unpin (an
// explicit uninstall) removes them.
//
// # Pin layout
//
// Under Options.PinDir (DefaultPinDir, /sys/fs/bpf/auditarch; a directory on a bpf filesystem, mode 0700):
//
//	protected                  hash map: tgid (u32) -> start time in clock ticks (u64, /proc/PID/stat field 22; 0 = any)
//	objects                    hash map: {bpf command, id} -> 1: this package's programs, maps and links by id
//	inodes                     hash map (256): {s_dev (u64, the kernel's major<<20|minor), ino (u64)} -> PathFlag (u32)
//	cgroups                    hash map (256): cgroup id (u64) -> 1: the protected processes' cgroups and ancestors
//	bpffs                      array [1]: {path (256 bytes, NUL-terminated), offset of its last component (u32)}
//	events                     ring buffer (256 KiB) of struct event (bpf/detect.bpf.c), read by Events
//	counters                   array: [0] = records lost because the ring buffer was full
//	prog_signal_generate       the tp_btf/signal_generate program
//	link_signal_generate       its link: while pinned, the program stays attached
//	prog_sys_enter             the tp_btf/sys_enter program (absent where it does not load)
//	link_sys_enter             its link
//	prog_cgroup_freeze         the tp_btf/cgroup_freeze program (absent where it does not load)
//	link_cgroup_freeze         its link
//
// A Detect that finds these pins reuses the maps (the layout must match, see ErrIncompatible) and keeps
// each pinned link whose program is the one this binary carries (same tag); a link running another program
// is replaced: the new one is attached and pinned before the old one is released, so there is no gap.
//
// # What stops the doer
//
// A signal to a protected process stops its sender when the signal came from the sender's own system call
// (si_code SI_USER, SI_TKILL or SI_QUEUE: kill, tkill, tgkill, rt_sigqueueinfo, pidfd_send_signal, a write
// to cgroup.kill). A signal the kernel generates (SIGCHLD, timers, faults, SIGKILL from the OOM killer) is
// recorded, not acted on: it runs in whatever task happens to be current. Signals between protected
// processes are neither recorded nor acted on, so the daemon can signal itself. PID 1 cannot be stopped
// (bpf_send_signal refuses it); its signals are recorded with Event.StopErr set.
//
// # Cost
//
// Measured on the 2-core development VM (kernel 6.18, go test -v -run StopLatency and -bench
// SignalOverhead -count 3 ./policy/): from the attacker's clock read just before kill() to the record,
// p50 12-14 µs, p99 33-38 µs; to its parent being woken by waitid with the attacker stopped, p50 100-145 µs,
// p99 260-600 µs (200 rounds; the attacker never ran user code after the system call). With the programs
// attached, every system call on the host pays the sys_enter program (getppid 308 -> 404 ns, kill(self, 0)
// 674 -> 752 ns), and every signal the signal_generate one (kill(self, SIGURG) 2.8 -> 3.7 µs). Those
// figures predate the umount2 watch (one more comparison of the system call number in sys_enter, and a
// path compare in umount2 only) and the cgroup_freeze program (runs only when a cgroup is frozen); run
// again with them, on a machine busy with other tests, syscall to record was p50 13.7-14.3 µs, p99
// 27-64 µs, and the overhead benchmark was inconclusive (detached slower than attached: noise).
//
// SIGSTOP from bpf_send_signal can be undone by anyone's SIGCONT; the daemon is expected to freeze the
// doer's cgroup (package policy/freeze) on the event.
//
// # Enforce mode
//
// Enforce attaches BPF LSM programs (bpf/enforce.bpf.c) that refuse with EPERM, and record (Event.Denied,
// nobody stopped), what a process that is not protected does to a protected one:
//
//   - lsm/task_kill: every signal a system call asks for: kill (also of a process group, and with the pid
//     in the low 32 bits of a larger number), tkill, tgkill of any thread, rt_(tg)sigqueueinfo,
//     pidfd_send_signal (also on a /proc/PID fd). SIGKILL and SIGSTOP included. Let through: signal 0 (an
//     existence probe), signals from protected processes (the daemon's own threads), and signals the kernel
//     generates. The kernel calls this hook only for signals from user space (check_kill_permission returns
//     first when si_code > 0 or for SEND_SIG_PRIV), so SIGCHLD, SIGPIPE, faults, timers, the tty's SIGINT
//     and SIGHUP, and the SIGKILL of the OOM killer and cgroup.kill never reach it; the program lets them
//     through as well should another caller pass them (SEND_SIG_PRIV, si_code > 0), and the USB core's
//     asynchronous-I/O signal (sent with a cred, always to the process that asked for it).
//   - lsm/ptrace_access_check: every access check against a protected process: ptrace attach and seize,
//     /proc/PID/mem (the kernel turns the refusal into EACCES there), process_vm_readv/writev, pidfd_getfd,
//     process_madvise, kcmp, /proc/PID/{environ,maps,fd,exe,...}. Kernel threads are let through. A check
//     marked PTRACE_MODE_NOAUDIT (it only hides fields of /proc/PID/stat from ps) is refused unrecorded.
//   - lsm/file_send_sigiotask: a SIGIO or F_SETSIG signal to a protected process that owns a file
//     (F_SETOWN): not delivered (the doer's I/O itself succeeds). The daemon asks for no such signal.
//   - lsm/bpf: bpf(BPF_{PROG,MAP,LINK}_GET_FD_BY_ID) for one of this package's objects (the objects map).
//   - Files (Guard.ProtectPath; the inodes map names inodes by device and inode number, so renames, bind
//     mounts and other names of the same inode are covered; KindFile, Code the FileOp, Result the PathFlag
//     that matched). lsm/file_open: an open for write (O_WRONLY, O_RDWR) of a FlagFile inode or an entry
//     of a FlagDir directory (the dentry's parent), or any open of a FlagNoRead one (the identity key; also
//     a reopen through /proc/PID/fd). lsm/inode_unlink, lsm/inode_rmdir, lsm/inode_rename (out of, into
//     or within a protected directory, over a protected name, RENAME_EXCHANGE), lsm/inode_link (a new name
//     for a protected file or entry, through which it could be opened for write elsewhere) and
//     lsm/inode_setattr (truncate, ftruncate, O_TRUNC, chmod, chown, utimes). A FlagDir directory itself
//     cannot be removed or renamed. Creating entries in a protected directory is let through, but an
//     open(O_CREAT) for write of the new file is refused after the kernel created it (it stays, empty). This
//     covers cgroup2 and bpffs too: the daemon's cgroup directory (CgroupPath) with FlagDir refuses writes
//     to its cgroup.kill, cgroup.freeze, cgroup.procs and the rest, and rmdir; the pin directory with
//     FlagDir refuses unpinning (unlink) and renaming a pin. Without any ProtectPath, file_open also
//     refuses opening for write cgroup.kill and cgroup.freeze of a protected process's cgroup and of each
//     of its ancestors (the cgroups map, which Protect fills; Result FlagCgroup): killing or freezing a
//     parent slice reaches the daemon too. inode_setattr's arguments gained an idmap in Linux 6.9:
//     Enforce reads the kernel's BTF and tells the program (a constant) which layout it has.
//   - lsm/sb_umount: umount, lazy or not, of any bpf file system (KindUmount; Name the mount point's last
//     component, Ino its root inode, Code the flags).
//   - lsm/netlink_send: on NETLINK_AUDIT sockets, the messages that change the kernel's audit state:
//     AUDIT_SET (enabled, failure, pid, limits), AUDIT_ADD_RULE, AUDIT_DEL_RULE, AUDIT_TRIM,
//     AUDIT_MAKE_EQUIV, AUDIT_SET_FEATURE (KindAuditControl, Code the type, ID AUDIT_SET's mask). Every
//     message of a sendmsg is checked as the kernel's audit_receive walks them; a batch of more than 32 is
//     refused whole (Code 0). Reads (AUDIT_GET, AUDIT_LIST_RULES, AUDIT_GET_FEATURE, AUDIT_SIGNAL_INFO,
//     AUDIT_TTY_GET), AUDIT_TTY_SET (a process's own tty auditing, which pam_tty_audit sets at login) and
//     user messages pass.
//
// The file, umount and netlink hooks let protected processes and kernel threads through, as the others.
//
// The pins are those of detect mode, with prog_HOOK and link_HOOK for each enforce hook (task_kill,
// ptrace_access_check, file_send_sigiotask, bpf, file_open, inode_unlink, inode_rmdir, inode_rename,
// inode_link, inode_setattr, sb_umount, netlink_send); the maps (same layout) are shared, so one Unpin
// removes both modes. Unpin clears the bpffs map first (the links it releases detach asynchronously, and
// an uninstall unmounts next); in enforce mode a umount right after Unpin may still be refused a moment. A closed
// or crashed Guard's links keep refusing; the next Enforce adopts them. Enforce needs the bpf LSM active
// (lsm=...,bpf): a kernel without it loads and attaches the programs but never runs them, so
// EnforceAvailable reads /sys/kernel/security/lsm as well as trying a load.
//
// Not covered yet: BPF_OBJ_GET of a pin (the next Enforce's adoption goes through that path); moving the
// daemon to another cgroup (a write to the destination's cgroup.procs; the cgroups map then names the old
// ones until the next Protect) and the cgroup v1 freezer; names elsewhere that a FlagDir entry had before ProtectPath
// (hard links), and fds opened for write before it; extended attributes, chattr (FS_IOC_SETFLAGS after an
// open for read: +i would stop the daemon's writes), mounting over a protected directory, the block
// device under the file system; AUDIT_TTY_SET. A service manager cannot stop a protected daemon with a
// signal (it must unprotect itself or be stopped over its control channel), and its shutdown cannot
// unmount /sys/fs/bpf.
//
// Cost, measured in the vmtest guest (Debian 6.1, emulated with TCG, so relative only; go test -v -run
// TestEnforceInVM ./policy/, the overhead subtest: fastest of 5 alternations attached/detached, 4 runs
// with all twelve hooks attached): kill(self, 0) 1.12-1.21 -> 1.44-2.49 µs (x1.19-2.05, the task_kill
// hook's map lookup; three of the four runs x1.19-1.50); kill(self, SIGURG) within the noise (x0.96-1.86,
// delivery dominates); open and close of /proc/self/stat (file_open: two inodes map lookups; 3 runs)
// 19-26 -> 19-28 µs, within the noise (x0.81-1.46); getppid, no hook, x0.85-1.10. The control's spread
// says how little these ratios can be trusted; no bare-metal kernel here runs BPF LSM programs.
package policy
