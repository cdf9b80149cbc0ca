// Package policy protects the daemon from the host's root. This part is detect mode, for hosts where BPF
// LSM programs cannot load (DESIGN.md, "Protection"): BPF programs on the signal_generate and sys_enter
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
package policy
