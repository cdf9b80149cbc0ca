// Package policy protects the daemon from the host's root, in one of two modes (ChooseMode picks: enforce
// where EnforceAvailable says BPF LSM programs run, else detect). Both give a *Guard with the same pins,
// Protect/Unprotect, Events and Event type; Event.Denied (enforce) or Event.Stopped (detect) is the verdict.
//
// Detect mode (Detect), for hosts where BPF LSM programs cannot load (DESIGN.md, "Protection"): BPF programs on the signal_generate and sys_enter
// tracepoints record every signal sent to a protected process, and every ptrace attach, process_vm_readv or
// process_vm_writev aimed at one, and stop the doer with bpf_send_signal(SIGSTOP) inside the kernel, before
// its system call has returned. Nothing is refused: SIGKILL still kills; the record survives.
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
//	events                     ring buffer (256 KiB) of struct event (bpf/detect.bpf.c), read by Events
//	counters                   array: [0] = records lost because the ring buffer was full
//	prog_signal_generate       the tp_btf/signal_generate program
//	link_signal_generate       its link: while pinned, the program stays attached
//	prog_sys_enter             the tp_btf/sys_enter program (absent where it does not load)
//	link_sys_enter             its link
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
// 674 -> 752 ns), and every signal the signal_generate one (kill(self, SIGURG) 2.8 -> 3.7 µs).
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
//
// The pins are those of detect mode, with prog_HOOK and link_HOOK for task_kill, ptrace_access_check,
// file_send_sigiotask and bpf; the maps (same layout) are shared, so one Unpin removes both modes. A closed
// or crashed Guard's links keep refusing; the next Enforce adopts them. Enforce needs the bpf LSM active
// (lsm=...,bpf): a kernel without it loads and attaches the programs but never runs them, so
// EnforceAvailable reads /sys/kernel/security/lsm as well as trying a load.
//
// Not covered yet: the pins themselves (root can unlink them, or BPF_OBJ_GET them: the next Enforce's
// adoption goes through that path), the archive and key files, audit netlink control messages, and the
// daemon's cgroup (cgroup.kill and cgroup.freeze bypass task_kill). A service manager cannot stop a
// protected daemon with a signal: it must unprotect itself or be stopped over its control channel.
//
// Cost, measured in the vmtest guest (Debian 6.1, emulated with TCG, so relative only; go test -v -run
// TestEnforceInVM ./policy/, the overhead subtest: fastest of 5 alternations attached/detached, 3 runs):
// kill(self, 0) 1.13-1.18 -> 1.47-1.66 µs (x1.24-1.45, the hook's map lookup); kill(self, SIGURG) within
// the noise (x0.86-1.33, delivery dominates); getppid, no hook, x0.91-1.02.
package policy
