package policy

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSyscallsStopDoer: ptrace attach and seize, process_vm_readv on a protected process and bpf() asking
// for an fd to this package's program by id are recorded by the sys_enter program and stop the doer before
// the system call returns.
func TestSyscallsStopDoer(t *testing.T) {
	g := detect(t, pinDir(t))
	if _, ok := g.Hooks()[HookSysEnter]; !ok {
		t.Fatalf("sys_enter hook not attached: %v", g.Hooks())
	}
	info, err := g.progs[HookSignalGenerate].Info()
	if err != nil {
		t.Fatal(err)
	}
	progID, _ := info.ID()
	for _, c := range []struct {
		method  string
		kind    Kind
		syscall int
		code    int32
	}{
		{"ptrace-seize", KindPtrace, unix.SYS_PTRACE, unix.PTRACE_SEIZE},
		{"ptrace-attach", KindPtrace, unix.SYS_PTRACE, unix.PTRACE_ATTACH},
		{"vmread", KindProcessVM, unix.SYS_PROCESS_VM_READV, 0},
		{"bpf-prog", KindBPFGetFD, unix.SYS_BPF, bpfProgGetFDByID},
	} {
		t.Run(c.method, func(t *testing.T) {
			target := startDummy(t, g)
			if err := g.Protect(target); err != nil {
				t.Fatal(err)
			}
			arg := target
			if c.kind == KindBPFGetFD {
				arg = int(progID)
			}
			a := startAttacker(t, c.method, arg, 0, 1)
			a.before(t)
			e := eventFrom(t, g, a.pid, 5*time.Second)
			if s := waitState(a.pid, 'T', 5*time.Second); s != 'T' {
				t.Fatalf("doer %d in state %q, want stopped (T)", a.pid, s)
			}
			if ran, _ := a.ranOn(t, 100*time.Millisecond); ran {
				t.Fatal("the doer ran on after its system call")
			}
			checkDoer(t, e, a.pid)
			if e.Kind != c.kind || e.Syscall != c.syscall || e.Code != c.code || !e.Stopped {
				t.Errorf("event %+v, want kind %v syscall %d code %d, stopped", e, c.kind, c.syscall, c.code)
			}
			if c.kind == KindBPFGetFD {
				if e.ID != uint32(progID) {
					t.Errorf("object id %d, want %d", e.ID, progID)
				}
			} else if e.TargetTGID != target {
				t.Errorf("target %d, want %d", e.TargetTGID, target)
			}
		})
	}
}
