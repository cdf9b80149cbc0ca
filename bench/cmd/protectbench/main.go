// Command protectbench measures what detect-mode protection (package policy) costs the host and how fast it
// stops an attacker, in one run, with targets (issue 11):
//
//   - overhead: three workloads, each a loop of one operation timed in this process: open+close of a
//     file, kill(own pid, 0) (the signal-permission path the hooks watch), and fork+exec of /bin/true.
//     Each runs with the detect programs detached and attached (pinned in a private bpf filesystem, one
//     dummy process protected), interleaved over -reps repetitions; the median time per operation of
//     each side and the slowdown are printed. Target: under 5 % for each.
//   - stop latency: -rounds times, an attacker in its own session reads CLOCK_BOOTTIME, then kill()s the
//     protected dummy. Measured from that clock read to (1) the attacker seen stopped by its parent
//     (waitid WSTOPPED: it cannot run again until someone sends SIGCONT) and (2) its whole session frozen
//     in the cgroup v2 freezer the way the daemon does it (the record read from the ring buffer, then
//     freeze.Session), which no signal undoes. Target: p99 of (1) under 10 ms; (2) is printed beside it.
//
// Usage, from the module root, as root: go run ./bench/cmd/protectbench
//
// The attacker is this program re-executed with PROTECTBENCH_ATTACK=PID.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/policy"
	"github.com/auditarch/auditarch/policy/freeze"
)

const attackEnv = "PROTECTBENCH_ATTACK"

func main() {
	if pid := os.Getenv(attackEnv); pid != "" {
		attack(pid)
		return
	}
	reps := flag.Int("reps", 5, "interleaved repetitions of each overhead cell")
	n := flag.Int("n", 200000, "operations per cell for open and kill (exec: n/200)")
	rounds := flag.Int("rounds", 100, "attacks for the stop latency")
	flag.Parse()
	if err := run(*reps, *n, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "protectbench:", err)
		os.Exit(1)
	}
}

// attack is the attacker: tell the parent the time, then kill the protected pid; sleep until killed.
func attack(target string) {
	pid, _ := strconv.Atoi(target)
	unix.Setsid()
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], uint64(ts.Nano()))
	os.Stdout.Write(b[:])
	unix.Kill(pid, unix.SIGWINCH)
	for {
		time.Sleep(time.Second)
	}
}

func run(reps, n, rounds int) error {
	mnt, err := os.MkdirTemp("", "protectbench-bpffs")
	if err != nil {
		return err
	}
	defer os.Remove(mnt)
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount a bpf filesystem (root needed): %w", err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	pins := filepath.Join(mnt, "auditarch")

	dummy := exec.Command("/bin/sleep", "3600")
	if err := dummy.Start(); err != nil {
		return err
	}
	defer func() { dummy.Process.Kill(); dummy.Wait() }()

	file := filepath.Join(mnt, "..", filepath.Base(mnt)+".f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		return err
	}
	defer os.Remove(file)
	self := os.Getpid()
	work := []struct {
		name string
		ops  int
		op   func() error
	}{
		{"open+close", n, func() error {
			fd, err := unix.Open(file, unix.O_RDONLY, 0)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"kill(self, 0)", n, func() error { return unix.Kill(self, 0) }},
		{"fork+exec /bin/true", max(n/200, 20), func() error { return exec.Command("/bin/true").Run() }},
	}
	per := make(map[string]map[bool][]time.Duration)
	for _, w := range work {
		per[w.name] = map[bool][]time.Duration{}
	}
	var g *policy.Guard
	attach := func(on bool) error {
		if on && g == nil {
			if g, err = policy.Detect(policy.Options{PinDir: pins}); err != nil {
				return err
			}
			return g.Protect(dummy.Process.Pid)
		}
		if !on && g != nil {
			// Unprotected first: the links detach asynchronously after Unpin, and the dummy is killed at
			// the end, which a program still attached would answer by stopping this process.
			g.Unprotect(dummy.Process.Pid)
			g.Close()
			err := g.Unpin()
			g = nil
			return err
		}
		return nil
	}
	for r := range reps {
		for _, on := range []bool{r%2 == 1, r%2 == 0} {
			if err := attach(on); err != nil {
				return err
			}
			for _, w := range work {
				start := time.Now()
				for range w.ops {
					if err := w.op(); err != nil {
						return fmt.Errorf("%s: %w", w.name, err)
					}
				}
				per[w.name][on] = append(per[w.name][on], time.Since(start)/time.Duration(w.ops))
			}
		}
	}
	fmt.Printf("protection overhead (detect mode; median of %d interleaved repetitions, time per operation)\n", reps)
	fmt.Printf("  %-22s %12s %12s %9s %s\n", "workload", "detached", "attached", "slowdown", "target <5%")
	for _, w := range work {
		off, on := median(per[w.name][false]), median(per[w.name][true])
		slow := 100 * (float64(on) - float64(off)) / float64(off)
		fmt.Printf("  %-22s %12v %12v %8.1f%% %s\n", w.name, off, on, slow, verdict(slow < 5))
	}

	if err := attach(true); err != nil {
		return err
	}
	defer attach(false)
	var boot0 unix.Timespec
	var toStop, toFrozen []time.Duration
	for i := range rounds {
		a := exec.Command(os.Args[0])
		a.Env = append(os.Environ(), attackEnv+"="+strconv.Itoa(dummy.Process.Pid))
		out, err := a.StdoutPipe()
		if err != nil {
			return err
		}
		if err := a.Start(); err != nil {
			return err
		}
		var b [8]byte
		if _, err := io.ReadFull(out, b[:]); err != nil {
			return fmt.Errorf("round %d: attacker: %w", i, err)
		}
		t0 := time.Duration(binary.NativeEndian.Uint64(b[:]))
		var info unix.Siginfo
		if err := unix.Waitid(unix.P_PID, a.Process.Pid, &info, unix.WSTOPPED|unix.WEXITED, nil); err != nil {
			return err
		}
		unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot0)
		if info.Code != 5 { // CLD_STOPPED
			return fmt.Errorf("round %d: the attacker was not stopped (si_code %d)", i, info.Code)
		}
		toStop = append(toStop, time.Duration(boot0.Nano())-t0)
		// The daemon's path: the record, then the session freeze.
		deadline := time.After(5 * time.Second)
	wait:
		for {
			select {
			case ev := <-g.Events():
				if ev.TGID == a.Process.Pid {
					break wait
				}
			case <-deadline:
				return fmt.Errorf("round %d: no record for the attacker", i)
			}
		}
		f, err := freeze.Session(a.Process.Pid, freeze.Options{})
		unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot0)
		if err != nil {
			return fmt.Errorf("round %d: freeze: %w", i, err)
		}
		toFrozen = append(toFrozen, time.Duration(boot0.Nano())-t0)
		a.Process.Kill()
		freeze.Thaw(f.Cgroup)
		a.Wait()
	}
	fmt.Printf("attack to stop (detect mode, %d attacks by a process in its own session, kill() of the protected pid)\n", rounds)
	fmt.Printf("  %-34s p50 %9v p99 %9v max %9v %s\n", "stopped in the kernel (SIGSTOP)", pct(toStop, 50), pct(toStop, 99), pct(toStop, 100), verdict(pct(toStop, 99) < 10*time.Millisecond)+" (target p99 <10ms)")
	fmt.Printf("  %-34s p50 %9v p99 %9v max %9v\n", "session frozen (cgroup freezer)", pct(toFrozen, 50), pct(toFrozen, 99), pct(toFrozen, 100))
	return nil
}

func median(d []time.Duration) time.Duration { return pct(d, 50) }

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}
