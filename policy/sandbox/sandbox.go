// Package sandbox confines the audit daemon once it is set up: a Landlock domain limits its file access
// to the directories it works in and its TCP connections to the store's port, a seccomp filter limits it
// to the system calls it makes, and its capabilities are reduced to those the running daemon uses.
//
// Invariant: Apply either returns nil with every thread of the process confined — Landlock domain (as
// far as the running kernel's ABI goes), seccomp filter (mode 2, synchronised to all threads with TSYNC),
// no_new_privs, the capability sets reduced — or returns an error. None of it can be undone: a
// compromised daemon stays inside, and threads created later inherit all of it.
//
// # What is refused, and how it shows
//
// A system call outside Allowed fails with EPERM; it does not kill the daemon (a missed call must fail
// loudly in a log, not end the audit trail in silence). The filter is loaded with
// SECCOMP_FILTER_FLAG_LOG, so the kernel reports every refusal as a SECCOMP audit record (type 1326,
// with syscall=NR), which the daemon archives like any other event; Landlock (ABI 7) reports its
// refusals as LANDLOCK_ACCESS records (type 1423). Denied lists the calls that are refused on
// purpose; Apply refuses an allowlist that contains one of them.
//
// kill(2) is allowed only towards one positive pid (no process group, no -1 broadcast), and tgkill(2)
// only within the daemon's own process; both tests read the low 32 bits of the pid argument alone, as
// the kernel does (pid_t): a filter that compared 64 bits would let kill(pid | 1<<32) through to pid
// -1. pidfd_send_signal, rt_sigqueueinfo and tkill are refused (a pidfd signal would pass a kill filter).
//
// Landlock does not scope signals here (LANDLOCK_SCOPE_SIGNAL would stop the daemon from killing a
// tracer that attached to it). Every Landlock domain, scoped or not, forbids ptrace access to processes
// outside it, and that includes reading /proc/PID/exe, /proc/PID/environ and /proc/PID/fd of others.
//
// docs/protect.md ("Self-sandbox") says what the daemon is allowed and how to diagnose a refusal.
package sandbox

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"
	"kernel.org/pub/linux/libs/security/libcap/psx"
)

// Options say what the confined process may still do. Paths must exist: a missing one is an error, as
// the access it stands for would fail later.
type Options struct {
	// ReadWrite are directories (with everything under them) or files the process may read, write,
	// create, remove, rename and truncate in. Never execute.
	ReadWrite []string
	// ReadOnly are directories or files the process may read (and list). Never execute.
	ReadOnly []string
	// ConnectTCP, when not nil, are the only TCP ports the process may connect to (Landlock ABI 4); an
	// empty non-nil slice allows none. Nil leaves connect(2) unrestricted. Binding a TCP port is always
	// refused where the kernel can (ABI 4): sockets the process needs are bound before Apply.
	ConnectTCP []uint16
	// Keep are the capabilities kept in the permitted and effective sets; every other one is dropped
	// from those and from the bounding set. One the process does not have is not gained. Inheritable and
	// ambient sets are emptied.
	Keep []cap.Value
	// Syscalls are allowed in addition to Allowed (names as in the kernel's syscall table). None may be
	// in Denied.
	Syscalls []string
}

// Report says what Apply put in place, for the daemon's startup log.
type Report struct {
	LandlockABI  int      // the kernel's Landlock ABI; 0: no Landlock (file and network rules not enforced)
	ReadWrite    []string // paths with read-write rules
	ReadOnly     []string // paths with read-only rules
	ConnectTCP   []uint16 // TCP ports that may be connected to; nil: not restricted
	NetEnforced  bool     // whether the kernel enforces the TCP rules (ABI 4)
	Syscalls     int      // system calls the seccomp filter allows (kill and tgkill with argument checks)
	Instructions int      // length of the seccomp BPF program
	Caps         []string // capabilities kept (held before Apply and asked for), e.g. cap_audit_control
	Threads      int      // threads found confined after Apply (seccomp mode 2, no_new_privs, capabilities)
}

// Apply confines every thread of the calling process (package doc). It needs CAP_SETPCAP to drop
// capabilities from the bounding set; it sets no_new_privs itself.
func Apply(opts Options) (Report, error) {
	var rep Report
	for _, n := range opts.Syscalls {
		if slices.Contains(Denied, n) {
			return rep, fmt.Errorf("sandbox: %s is in the denied list", n)
		}
	}
	syscalls := slices.Concat(Allowed, opts.Syscalls)
	prog, err := filter(syscalls, os.Getpid())
	if err != nil {
		return rep, err
	}
	fsRules, err := pathRules(opts, &rep)
	if err != nil {
		return rep, err
	}

	// no_new_privs on every thread: seccomp needs it once CAP_SYS_ADMIN is gone, and nothing this
	// process could execute (it executes nothing) may gain privileges.
	if _, _, e := psx.Syscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		return rep, fmt.Errorf("sandbox: no_new_privs: %w", e)
	}

	if rep.LandlockABI, err = ll.LandlockGetABIVersion(); err != nil {
		rep.LandlockABI = 0
	}
	cfg := landlock.Config{
		HandledAccessFS:  landlock.V11.HandledAccessFS,
		HandledAccessNet: landlock.AccessNetSet(ll.AccessNetBindTCP),
		Scoped:           landlock.ScopedSet(ll.ScopeAbstractUnixSocket),
	}
	rules := fsRules
	rep.ConnectTCP = opts.ConnectTCP
	if opts.ConnectTCP != nil {
		cfg.HandledAccessNet |= landlock.AccessNetSet(ll.AccessNetConnectTCP)
		for _, p := range opts.ConnectTCP {
			rules = append(rules, landlock.ConnectTCP(p))
		}
	}
	rep.NetEnforced = rep.LandlockABI >= 4
	if err := cfg.BestEffort().Restrict(rules...); err != nil {
		return rep, fmt.Errorf("sandbox: landlock: %w", err)
	}

	if rep.Caps, err = reduceCaps(opts.Keep); err != nil {
		return rep, err
	}

	if err := load(prog); err != nil {
		return rep, err
	}
	rep.Syscalls = len(syscalls)
	rep.Instructions = len(prog)
	rep.Threads, err = checkThreads()
	return rep, err
}

// pathRules turns opts' paths into Landlock rules: directory or file rights by what each path is.
func pathRules(opts Options, rep *Report) ([]landlock.Rule, error) {
	// Everything but execute (and the rights Landlock grants only on directories, for files).
	all := landlock.V11.HandledAccessFS &^ landlock.AccessFSSet(ll.AccessFSExecute)
	read := landlock.AccessFSSet(ll.AccessFSReadFile | ll.AccessFSReadDir)
	fileOnly := landlock.AccessFSSet(ll.AccessFSReadFile | ll.AccessFSWriteFile | ll.AccessFSTruncate | ll.AccessFSIoctlDev)
	var rules []landlock.Rule
	add := func(paths []string, access landlock.AccessFSSet, into *[]string) error {
		for _, p := range paths {
			fi, err := os.Stat(p)
			if err != nil {
				return fmt.Errorf("sandbox: %w", err)
			}
			a := access
			if !fi.IsDir() {
				a &= fileOnly
			}
			rules = append(rules, landlock.PathAccess(a, p))
			*into = append(*into, p)
		}
		return nil
	}
	if err := add(opts.ReadWrite, all, &rep.ReadWrite); err != nil {
		return nil, err
	}
	if err := add(opts.ReadOnly, read, &rep.ReadOnly); err != nil {
		return nil, err
	}
	return rules, nil
}

// reduceCaps drops every capability not in keep from the bounding set, empties the ambient set and
// sets permitted = effective = keep ∩ permitted, inheritable = ∅, on every thread. It returns the names
// of the capabilities kept.
func reduceCaps(keep []cap.Value) ([]string, error) {
	cur := cap.GetProc()
	next := cap.NewSet()
	var kept []string
	for v := cap.Value(0); v < cap.MaxBits(); v++ {
		if slices.Contains(keep, v) {
			if on, _ := cur.GetFlag(cap.Permitted, v); on {
				if err := next.SetFlag(cap.Permitted, true, v); err != nil {
					return nil, fmt.Errorf("sandbox: %w", err)
				}
				if err := next.SetFlag(cap.Effective, true, v); err != nil {
					return nil, fmt.Errorf("sandbox: %w", err)
				}
				kept = append(kept, v.String())
			}
			continue
		}
		if in, err := cap.GetBound(v); err == nil && in {
			if err := cap.DropBound(v); err != nil {
				return nil, fmt.Errorf("sandbox: drop %s from the bounding set: %w", v, err)
			}
		}
	}
	if err := cap.ResetAmbient(); err != nil && !errors.Is(err, unix.EINVAL) {
		return nil, fmt.Errorf("sandbox: clear the ambient set: %w", err)
	}
	if err := next.SetProc(); err != nil {
		return nil, fmt.Errorf("sandbox: set capabilities: %w", err)
	}
	return kept, nil
}

// checkThreads reads every thread's status and returns how many there are, or an error naming a
// thread without the seccomp filter or no_new_privs, or with capabilities beyond the calling thread's.
// A /proc the process may not read (no rule for it) is no error: there is nothing to count then.
func checkThreads() (int, error) {
	self, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		return 0, nil
	}
	want := statusField(string(self), "CapEff")
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, nil
	}
	n := 0
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/status")
		if err != nil {
			continue // exited
		}
		s := string(b)
		if statusField(s, "Seccomp") != "2" || statusField(s, "NoNewPrivs") != "1" || statusField(s, "CapEff") != want {
			return n, fmt.Errorf("sandbox: thread %s is not confined (Seccomp %s, NoNewPrivs %s, CapEff %s; want 2, 1, %s)",
				t.Name(), statusField(s, "Seccomp"), statusField(s, "NoNewPrivs"), statusField(s, "CapEff"), want)
		}
		n++
	}
	return n, nil
}

// statusField is the value of field name in a /proc/PID/status text.
func statusField(status, name string) string {
	for line := range strings.SplitSeq(status, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// String is the report in one line.
func (r Report) String() string {
	ports := "unrestricted"
	if r.ConnectTCP != nil {
		ps := make([]string, len(r.ConnectTCP))
		for i, p := range r.ConnectTCP {
			ps[i] = strconv.Itoa(int(p))
		}
		ports = "[" + strings.Join(ps, " ") + "]"
	}
	return fmt.Sprintf("landlock ABI %d (rw %v, ro %v, tcp connect %s, enforced %v), seccomp %d syscalls, caps %v, %d threads",
		r.LandlockABI, r.ReadWrite, r.ReadOnly, ports, r.NetEnforced, r.Syscalls, r.Caps, r.Threads)
}
