package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/internal/vmtest"
)

// vmLSM boots the guest with the BPF LSM active (this host refuses LSM programs).
var vmLSM = vmtest.Options{Cmdline: "lsm=landlock,lockdown,yama,bpf", Timeout: 3 * time.Minute}

// PTRACE_MODE_* (include/linux/ptrace.h): what the kernel passes to ptrace_access_check.
const (
	ptraceModeAttach    = 0x02
	ptraceModeFSCreds   = 0x08
	ptraceModeRealCreds = 0x10
)

// TestEnforceUnavailableHere: where BPF LSM programs cannot run (this development host refuses their
// load with EPERM), ChooseMode says detect with the reason, and Enforce fails with ErrEnforceUnavailable
// before creating the pin directory.
func TestEnforceUnavailableHere(t *testing.T) {
	mode, why := ChooseMode()
	if mode == ModeEnforce {
		t.Skip("BPF LSM programs run on this kernel; TestEnforceInVM covers enforce mode")
	}
	if mode != ModeDetect || !errors.Is(why, ErrEnforceUnavailable) {
		t.Fatalf("ChooseMode() = %q, %v; want detect and ErrEnforceUnavailable", mode, why)
	}
	t.Logf("mode %s: %v", mode, why)
	dir := pinDir(t)
	g, err := Enforce(Options{PinDir: dir})
	if err == nil {
		g.Close()
		Unpin(dir)
		t.Fatal("Enforce succeeded where EnforceAvailable refuses")
	}
	if !errors.Is(err, ErrEnforceUnavailable) {
		t.Errorf("Enforce: %v, want ErrEnforceUnavailable", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Enforce left %s behind: %v", dir, err)
	}
}

// enforce runs Enforce on a private pin directory, with cleanups that close the guard and remove the pins.
func enforce(t testing.TB, dir string) *Guard {
	t.Helper()
	g, err := Enforce(Options{PinDir: dir, Buffer: 4096})
	if err != nil {
		t.Fatalf("Enforce: %v", err)
	}
	t.Cleanup(func() {
		g.Close()
		if err := Unpin(dir); err != nil {
			t.Errorf("unpin: %v", err)
		}
	})
	return g
}

// startVictim starts a protected target: this test binary re-executed in its own session (alone in its
// process group), a Go program with several threads, reporting SIGIO and SIGWINCH on its stdout.
func startVictim(t *testing.T, g *Guard) *attacker {
	t.Helper()
	v := startAttacker(t, "victim", 0, 0, 1)
	v.before(t)
	if err := g.Protect(v.pid); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Unprotect(v.pid) }) // before startAttacker's cleanup kills it
	return v
}

// runAttack runs one attack to completion and returns the attacker's pid and its error (nil when the
// system call succeeded). env adds KEY=value pairs (envPath, envData, ...).
func runAttack(t *testing.T, method string, target int, sig unix.Signal, env ...string) (int, error) {
	t.Helper()
	return runAttackAs(t, nil, method, target, sig, env...)
}

// runAttackAs is runAttack, with the attacker protected by g (unprotected again when it has exited) when g
// is not nil: it makes its system call only once it is in g's protected set.
func runAttackAs(t *testing.T, g *Guard, method string, target int, sig unix.Signal, env ...string) (int, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envAttack+"="+method, envTarget+"="+strconv.Itoa(target),
		envSignal+"="+strconv.Itoa(int(sig)), envRounds+"=1")
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stdout = io.Discard
	cmd.Stderr = &stderr
	if g == nil {
		if err := cmd.Run(); err != nil {
			t.Fatalf("attacker %s: %v\n%s", method, err, stderr.Bytes())
		}
	} else {
		cmd.Env = append(cmd.Env, envWait+"=1")
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if err := g.Protect(cmd.Process.Pid); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal(err)
		}
		in.Write([]byte{1})
		in.Close()
		err = cmd.Wait()
		if uerr := g.Unprotect(cmd.Process.Pid); uerr != nil {
			t.Error(uerr)
		}
		if err != nil {
			t.Fatalf("attacker %s: %v\n%s", method, err, stderr.Bytes())
		}
	}
	pid := cmd.Process.Pid
	switch out := stderr.String(); {
	case out == "":
		return pid, nil
	default:
		for _, e := range []unix.Errno{unix.EPERM, unix.EACCES, unix.ESRCH, unix.EBUSY, unix.EINVAL, unix.ENOENT} {
			if out == fmt.Sprintf("attacker: %s: %v\n", method, e) {
				return pid, e
			}
		}
		t.Fatalf("attacker %s: %q", method, out)
	}
	return pid, nil
}

// checkAlive checks for d that the victim neither dies nor stops.
func checkAlive(t *testing.T, pid int, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if s := procState(pid); s == 0 || s == 'Z' || s == 'X' || s == 'T' || s == 't' {
			t.Fatalf("protected process %d in state %q", pid, s)
		}
	}
}

// checkDeniedDoer compares the event's doer with the attacker, a child of this test (same cgroup, audit
// session and login uid) that has exited, and checks the verdict. The thread is not checked: the Go
// runtime may make the system call from any of the attacker's threads.
func checkDeniedDoer(t *testing.T, e Event, pid int) {
	t.Helper()
	comm := filepath.Base(os.Args[0])
	if len(comm) > 15 {
		comm = comm[:15]
	}
	if e.PID <= 0 || e.TGID != pid || e.UID != 0 || e.EUID != 0 || e.Comm != comm ||
		e.AUID != procUint(t, "self", "loginuid") || e.SessionID != procUint(t, "self", "sessionid") ||
		e.CgroupID != cgroupID(t, os.Getpid()) {
		t.Errorf("doer %+v, want tgid %d, uid 0, comm %q, this test's cgroup, login uid and session", e, pid, comm)
	}
	if !e.Denied || e.Stopped || e.StopErr != nil {
		t.Errorf("verdict denied %v stopped %v (%v), want denied", e.Denied, e.Stopped, e.StopErr)
	}
	if d := time.Since(e.Time); d < 0 || d > time.Minute {
		t.Errorf("event time %v is %v from now", e.Time, d)
	}
}

// TestEnforceInVM boots a guest whose kernel runs BPF LSM programs and there: measures the signal cost
// with enforce mode attached and not, runs the attack matrix against a protected process, and checks that
// the pinned links keep refusing with no instance running and are adopted by the next Enforce.
func TestEnforceInVM(t *testing.T) {
	if !vmtest.InVM() {
		vmtest.RunTest(t, "TestEnforceInVM", vmLSM)
		return
	}
	if mode, why := ChooseMode(); mode != ModeEnforce {
		t.Fatalf("ChooseMode() = %s in the guest: %v", mode, why)
	}
	t.Run("overhead", signalOverhead)
	dir := pinDir(t)
	g := enforce(t, dir)
	if g.Mode() != ModeEnforce {
		t.Errorf("Mode() = %s", g.Mode())
	}
	for _, h := range enforceHooks {
		if adopted, ok := g.Hooks()[h]; !ok || adopted {
			t.Errorf("hook %s: attached %v adopted %v, want attached by this Enforce", h, ok, adopted)
		}
	}
	t.Run("matrix", func(t *testing.T) { attackMatrix(t, g) })
	t.Run("files", func(t *testing.T) { fileMatrix(t, g, dir) })
	t.Run("audit", func(t *testing.T) { auditMatrix(t, g) })
	t.Run("adopt", func(t *testing.T) { adoptEnforce(t, g, dir) })
}

func attackMatrix(t *testing.T, g *Guard) {
	info, err := g.progs[HookTaskKill].Info()
	if err != nil {
		t.Fatal(err)
	}
	progID, _ := info.ID()
	for _, c := range []struct {
		name, method string
		sig          unix.Signal
		errno        error // what the attacker's system call returns
		kind         Kind
		code         int32 // si_code, PTRACE_MODE_* or bpf command
		syscall      int   // for the kinds that record it
	}{
		{"kill-9", "kill", unix.SIGKILL, unix.EPERM, KindSignal, 0, 0},
		{"kill-STOP", "kill", unix.SIGSTOP, unix.EPERM, KindSignal, 0, 0},
		{"kill-TERM", "kill", unix.SIGTERM, unix.EPERM, KindSignal, 0, 0},
		{"killpg-9", "killpg", unix.SIGKILL, unix.EPERM, KindSignal, 0, 0},
		{"pidfd-9", "pidfd", unix.SIGKILL, unix.EPERM, KindSignal, 0, 0},
		{"procfd-9", "procfd", unix.SIGKILL, unix.EPERM, KindSignal, 0, 0},
		{"kill64-9", "kill64", unix.SIGKILL, unix.EPERM, KindSignal, 0, 0},
		{"tgkill-thread-9", "tgkill-thread", unix.SIGKILL, unix.EPERM, KindSignal, -6, 0},
		{"sigqueue-TERM", "sigqueue", unix.SIGTERM, unix.EPERM, KindSignal, -1, 0},
		{"ptrace-attach", "ptrace-attach", 0, unix.EPERM, KindPtraceAccess, ptraceModeAttach | ptraceModeRealCreds, unix.SYS_PTRACE},
		{"ptrace-seize", "ptrace-seize", 0, unix.EPERM, KindPtraceAccess, ptraceModeAttach | ptraceModeRealCreds, unix.SYS_PTRACE},
		{"proc-mem-write", "procmem-write", 0, unix.EACCES, KindPtraceAccess, ptraceModeAttach | ptraceModeFSCreds, unix.SYS_OPENAT},
		{"process_vm_readv", "vmread", 0, unix.EPERM, KindPtraceAccess, ptraceModeAttach | ptraceModeRealCreds, unix.SYS_PROCESS_VM_READV},
		{"bpf-prog-by-id", "bpf-prog", 0, unix.EPERM, KindBPFGetFD, bpfProgGetFDByID, unix.SYS_BPF},
		{"sigio", "sigio", unix.SIGIO, nil, KindSigIO, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := startVictim(t, g)
			arg := v.pid
			if c.kind == KindBPFGetFD {
				arg = int(progID)
			}
			pid, err := runAttack(t, c.method, arg, c.sig)
			if !errors.Is(err, c.errno) && err != c.errno {
				t.Errorf("attack returned %v, want %v", err, c.errno)
			}
			e := eventFrom(t, g, pid, 5*time.Second)
			checkDeniedDoer(t, e, pid)
			if e.Kind != c.kind || e.Code != c.code {
				t.Errorf("event %+v, want kind %v code %d", e, c.kind, c.code)
			}
			switch c.kind {
			case KindSignal, KindSigIO:
				if e.Signal != c.sig {
					t.Errorf("signal %v, want %v", e.Signal, c.sig)
				}
			default:
				if e.Syscall != c.syscall {
					t.Errorf("syscall %d, want %d", e.Syscall, c.syscall)
				}
			}
			switch {
			case c.kind == KindBPFGetFD:
				if e.ID != uint32(progID) || e.TargetTGID != 0 {
					t.Errorf("object id %d target %d, want %d and none", e.ID, e.TargetTGID, progID)
				}
			case c.method == "tgkill-thread":
				if e.TargetTGID != v.pid || e.TargetPID == v.pid {
					t.Errorf("target thread %d of %d, want a thread of %d other than the main one", e.TargetPID, e.TargetTGID, v.pid)
				}
			default:
				if e.TargetTGID != v.pid || e.TargetPID != v.pid {
					t.Errorf("target %d/%d, want %d", e.TargetPID, e.TargetTGID, v.pid)
				}
			}
			checkAlive(t, v.pid, 100*time.Millisecond)
			if c.kind == KindSigIO {
				var b [2]byte
				v.out.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if n, _ := v.out.Read(b[:]); n > 0 {
					t.Errorf("the victim received a signal: %q", b[:n])
				}
			}
		})
	}
	// Controls: the victim is alive and reports a signal it may receive (from a protected sender: none
	// here), and an unprotected process is not protected.
	t.Run("unprotected-target", func(t *testing.T) {
		v := startAttacker(t, "victim", 0, 0, 1)
		v.before(t)
		pid, err := runAttack(t, "kill", v.pid, unix.SIGWINCH)
		if err != nil {
			t.Fatalf("kill of an unprotected process: %v", err)
		}
		noEventFrom(t, g, pid, 100*time.Millisecond)
	})
	t.Run("kill-0", func(t *testing.T) { // an existence probe is let through, unrecorded
		v := startVictim(t, g)
		pid, err := runAttack(t, "kill", v.pid, 0)
		if err != nil {
			t.Fatalf("kill(pid, 0): %v", err)
		}
		noEventFrom(t, g, pid, 100*time.Millisecond)
	})
}

// adoptEnforce closes the Guard without unpinning (a daemon that dies): the pinned links keep refusing,
// and the next Enforce adopts them and receives the record made meanwhile.
func adoptEnforce(t *testing.T, g *Guard, dir string) {
	v := startVictim(t, g)
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	pid, err := runAttack(t, "kill", v.pid, unix.SIGKILL)
	if err != unix.EPERM {
		t.Fatalf("kill -9 with no instance running: %v, want EPERM", err)
	}
	checkAlive(t, v.pid, 50*time.Millisecond)
	g2, err := Enforce(Options{PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	for _, h := range enforceHooks {
		if adopted, ok := g2.Hooks()[h]; !ok || !adopted {
			t.Errorf("hook %s: attached %v adopted %v, want adopted", h, ok, adopted)
		}
	}
	e := eventFrom(t, g2, pid, 5*time.Second)
	checkDeniedDoer(t, e, pid)
	if e.Kind != KindSignal || e.Signal != unix.SIGKILL || e.TargetTGID != v.pid {
		t.Errorf("event %+v, want SIGKILL to %d", e, v.pid)
	}
	if err := g2.Unprotect(v.pid); err != nil { // the victim's cleanup holds the closed Guard
		t.Error(err)
	}
}

// signalOverhead measures the cost of kill(self, SIGURG) (the task_kill hook runs; this process is not
// protected), kill(self, 0) (the hook returns at once), an open and close (file_open) and getppid (no
// hook: the control), alternately
// with enforce mode attached and detached, 5 times each, and logs the fastest of each (the emulated
// guest's noise only adds time). The guest is emulated (TCG): only the ratios mean something, and the
// control's ratio says how far they can be trusted.
func signalOverhead(t *testing.T) {
	names := []string{"kill-SIGURG", "kill-0", "open-close", "getppid"}
	costs := map[string]map[bool][]float64{}
	for _, n := range names {
		costs[n] = map[bool][]float64{}
	}
	measure := func(attached bool) {
		for name, cost := range signalCost() {
			costs[name][attached] = append(costs[name][attached], cost)
		}
	}
	dir := pinDir(t)
	for range 5 {
		measure(false)
		g, err := Enforce(Options{PinDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		measure(true)
		g.Close()
		if err := Unpin(dir); err != nil { // the links detach with the last reference
			t.Fatal(err)
		}
	}
	for _, n := range names {
		d, a := slices.Min(costs[n][false]), slices.Min(costs[n][true])
		t.Logf("overhead %-12s detached %6.0f ns  attached %6.0f ns  ratio %.2f", n, d, a, a/d)
	}
}

// signalCost returns the fastest cost in ns of each call over 5 rounds of 5000 calls. open-close opens
// /proc/self/stat for read (the file_open hook runs: two inodes map lookups) and closes it.
func signalCost() map[string]float64 {
	self := os.Getpid()
	out := map[string]float64{}
	for name, call := range map[string]func(){
		"kill-SIGURG": func() { unix.Kill(self, unix.SIGURG) },
		"kill-0":      func() { unix.Kill(self, 0) },
		"open-close": func() {
			if fd, err := unix.Open("/proc/self/stat", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
				unix.Close(fd)
			}
		},
		"getppid": func() { unix.Getppid() },
	} {
		var rounds []float64
		for range 5 {
			start := time.Now()
			for range 5000 {
				call()
			}
			rounds = append(rounds, float64(time.Since(start).Nanoseconds())/5000)
		}
		out[name] = slices.Min(rounds)
	}
	return out
}
