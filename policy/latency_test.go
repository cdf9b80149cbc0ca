package policy

import (
	"os"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestStopLatency measures, over 200 rounds, the time from the attacker's clock_gettime just before
// kill(protected, SIGWINCH) (a vDSO call: no system call between them) to (1) the program's record and (2) this test, the attacker's parent,
// being told by waitid that it has stopped. Each round checks that the attacker ran no further user code,
// then continues it with SIGCONT. The figures are logged (go test -v -run StopLatency ./policy/).
func TestStopLatency(t *testing.T) {
	rounds := 200
	if testing.Short() {
		rounds = 20
	}
	g := detect(t, pinDir(t))
	target := startDummy(t, g)
	if err := g.Protect(target); err != nil {
		t.Fatal(err)
	}
	a := startAttacker(t, "kill", target, unix.SIGWINCH, rounds)
	watchdog := time.AfterFunc(time.Minute, func() { unix.Kill(a.pid, unix.SIGKILL) })
	defer watchdog.Stop()
	var toRecord, toStopped []time.Duration
	for i := range rounds {
		a.before(t)
		var info unix.Siginfo
		if err := unix.Waitid(unix.P_PID, a.pid, &info, unix.WSTOPPED|unix.WEXITED, nil); err != nil {
			t.Fatalf("round %d: waitid: %v", i, err)
		}
		var now unix.Timespec
		unix.ClockGettime(unix.CLOCK_BOOTTIME, &now)
		if info.Code != 5 { // CLD_STOPPED
			t.Fatalf("round %d: attacker changed state with si_code %d, want CLD_STOPPED", i, info.Code)
		}
		e := eventFrom(t, g, a.pid, 5*time.Second)
		if !e.Stopped || e.Signal != unix.SIGWINCH {
			t.Fatalf("round %d: event %+v", i, e)
		}
		if ran, _ := a.ranOn(t, time.Millisecond); ran {
			t.Fatalf("round %d: the attacker ran on after its system call", i)
		}
		if err := unix.Kill(a.pid, unix.SIGCONT); err != nil {
			t.Fatal(err)
		}
		ran, t0 := a.ranOn(t, 5*time.Second)
		if !ran {
			t.Fatalf("round %d: attacker did not continue", i)
		}
		toRecord = append(toRecord, e.Time.Sub(g.bootWall)-t0)
		toStopped = append(toStopped, time.Duration(now.Nano())-t0)
	}
	t.Logf("%d rounds on %s: syscall to record p50 %v p99 %v max %v; syscall to stopped (parent woken) p50 %v p99 %v max %v",
		rounds, kernelRelease(), pct(toRecord, 50), pct(toRecord, 99), pct(toRecord, 100),
		pct(toStopped, 50), pct(toStopped, 99), pct(toStopped, 100))
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}

func kernelRelease() string {
	var u unix.Utsname
	unix.Uname(&u)
	return unix.ByteSliceToString(u.Release[:])
}

// BenchmarkSignalOverhead measures what the attached programs cost everyone else: kill(own pid, 0) (a
// permission check; no signal is generated, so signal_generate does not run, but sys_enter does),
// kill(own pid, SIGURG) (a signal generated for an unprotected process: one map lookup), and getppid (any
// system call: sys_enter's number check). Run with -bench SignalOverhead ./policy/.
func BenchmarkSignalOverhead(b *testing.B) {
	pid := os.Getpid()
	cases := []struct {
		name string
		call func()
	}{
		{"kill0", func() { unix.Kill(pid, 0) }},
		{"kill-SIGURG", func() { unix.Kill(pid, unix.SIGURG) }},
		{"getppid", func() { unix.Getppid() }},
	}
	run := func(b *testing.B) {
		for _, c := range cases {
			b.Run(c.name, func(b *testing.B) {
				for b.Loop() {
					c.call()
				}
			})
		}
	}
	b.Run("detached", run)
	b.Run("attached", func(b *testing.B) {
		detect(b, pinDir(b))
		run(b)
	})
}
