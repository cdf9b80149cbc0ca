package policy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSignalStopsSender sends a signal to a protected process in each way the kernel offers, from an
// attacker in its own session, and checks the record and that the attacker was stopped before its system
// call returned to user space.
func TestSignalStopsSender(t *testing.T) {
	g := detect(t, pinDir(t))
	for _, c := range []struct {
		method string
		sig    unix.Signal
		code   int32 // si_code
	}{
		{"kill", unix.SIGTERM, 0},
		{"kill", unix.SIGSTOP, 0},
		{"kill", unix.SIGKILL, 0},
		{"tgkill", unix.SIGTERM, -6},
		{"kill64", unix.SIGTERM, 0},
		{"sigqueue", unix.SIGTERM, -1},
		{"pidfd", unix.SIGTERM, 0},
		{"procfd", unix.SIGTERM, 0},
	} {
		t.Run(c.method+"-"+unix.SignalName(c.sig), func(t *testing.T) {
			target := startDummy(t, g)
			if err := g.Protect(target); err != nil {
				t.Fatal(err)
			}
			a := startAttacker(t, c.method, target, c.sig, 1)
			a.before(t)
			e := eventFrom(t, g, a.pid, 5*time.Second)
			if s := waitState(a.pid, 'T', 5*time.Second); s != 'T' {
				t.Fatalf("attacker %d in state %q, want stopped (T)", a.pid, s)
			}
			if ran, _ := a.ranOn(t, 100*time.Millisecond); ran {
				t.Fatal("the attacker ran on after its system call")
			}
			checkDoer(t, e, a.pid)
			if e.Kind != KindSignal || e.Signal != c.sig || e.Code != c.code || e.TargetTGID != target ||
				e.TargetPID != target || !e.Stopped || e.StopErr != nil {
				t.Errorf("event %+v, want kind signal, signal %v, code %d, target %d, stopped", e, c.sig, c.code, target)
			}
			if c.sig == unix.SIGKILL && waitState(target, 'Z', 5*time.Second) != 'Z' { // a zombie until reaped
				t.Errorf("target %d still alive after SIGKILL", target)
			}
		})
	}
}

// checkDoer compares the event's doer with what /proc says of the attacker.
func checkDoer(t *testing.T, e Event, pid int) {
	t.Helper()
	comm := filepath.Base(os.Args[0])
	if len(comm) > 15 {
		comm = comm[:15]
	}
	want := Event{PID: pid, TGID: pid, UID: 0, EUID: 0, AUID: procUint(t, "self", "loginuid"),
		SessionID: procUint(t, strconv.Itoa(pid), "sessionid"), Comm: comm, CgroupID: cgroupID(t, pid)}
	if e.PID != want.PID || e.TGID != want.TGID || e.UID != want.UID || e.EUID != want.EUID ||
		e.AUID != want.AUID || e.SessionID != want.SessionID || e.Comm != want.Comm || e.CgroupID != want.CgroupID {
		t.Errorf("doer pid %d tgid %d uid %d euid %d auid %d ses %d comm %q cgroup %d, want pid %d tgid %d uid %d euid %d auid %d ses %d comm %q cgroup %d",
			e.PID, e.TGID, e.UID, e.EUID, e.AUID, e.SessionID, e.Comm, e.CgroupID,
			want.PID, want.TGID, want.UID, want.EUID, want.AUID, want.SessionID, want.Comm, want.CgroupID)
	}
	if d := time.Since(e.Time); d < 0 || d > time.Minute {
		t.Errorf("event time %v is %v from now", e.Time, d)
	}
}

func procUint(t *testing.T, pid, name string) uint32 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(v)
}

// cgroupID returns the cgroup v2 id of the process: the inode of its directory in the cgroup2 mount.
func cgroupID(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var rel string
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			rel = p
		}
	}
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 2 && fs[2] == "cgroup2" {
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(fs[1], rel), &st); err != nil {
				t.Fatal(err)
			}
			return st.Ino
		}
	}
	t.Fatal("no cgroup2 mount")
	return 0
}

// TestProtectedSenderNotStopped: a protected process signalling itself or another protected process is
// neither recorded nor stopped.
func TestProtectedSenderNotStopped(t *testing.T) {
	g := detect(t, pinDir(t))
	target := startDummy(t, g)
	if err := g.Protect(target); err != nil {
		t.Fatal(err)
	}
	a := startAttacker(t, "self", target, unix.SIGWINCH, 1)
	t.Cleanup(func() { g.Unprotect(a.pid) })
	if err := g.Protect(a.pid); err != nil {
		t.Fatal(err)
	}
	a.before(t)
	if ran, _ := a.ranOn(t, 5*time.Second); !ran {
		t.Fatalf("protected sender %d did not run on (state %q)", a.pid, procState(a.pid))
	}
	noEventFrom(t, g, a.pid, 200*time.Millisecond)
}

// TestUnprotectedTarget: a signal to a process not in the protected set is neither recorded nor acted on.
func TestUnprotectedTarget(t *testing.T) {
	g := detect(t, pinDir(t))
	target := startDummy(t, g)
	a := startAttacker(t, "kill", target, unix.SIGWINCH, 1)
	a.before(t)
	if ran, _ := a.ranOn(t, 5*time.Second); !ran {
		t.Fatalf("sender %d did not run on (state %q)", a.pid, procState(a.pid))
	}
	noEventFrom(t, g, a.pid, 200*time.Millisecond)
}

// TestAdoptPins simulates a daemon that dies: the first instance closes without unpinning, a signal is sent
// while no instance runs (the sender must still be stopped), and a second Detect on the same pins adopts the
// links and maps, drops a protected process that exited meanwhile, and receives the record.
func TestAdoptPins(t *testing.T) {
	dir := pinDir(t)
	g1, err := Detect(Options{PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	target := startDummy(t, nil)
	if err := g1.Protect(target); err != nil {
		t.Fatal(err)
	}
	// A protected process that exits by itself: this unprotected test must not signal it.
	shortCmd := exec.Command("sleep", "0.1")
	if err := shortCmd.Start(); err != nil {
		t.Fatal(err)
	}
	short := shortCmd.Process.Pid
	if err := g1.Protect(short); err != nil {
		t.Fatal(err)
	}
	shortCmd.Wait()
	if h := g1.Hooks(); h[HookSignalGenerate] {
		t.Fatalf("first Detect adopted pins: %v", h)
	}
	linkID := func(g *Guard) uint32 {
		info, err := g.links[HookSignalGenerate].Info()
		if err != nil {
			t.Fatal(err)
		}
		return uint32(info.ID)
	}
	id1 := linkID(g1)
	if err := g1.Close(); err != nil {
		t.Fatal(err)
	}

	// No instance runs; the short-lived process has exited, its entry is stale. The attacker is stopped by
	// the pinned program alone.
	a := startAttacker(t, "kill", target, unix.SIGTERM, 1)
	a.before(t)
	if s := waitState(a.pid, 'T', 5*time.Second); s != 'T' {
		t.Fatalf("attacker %d in state %q with no instance running, want stopped", a.pid, s)
	}

	g2 := detect(t, dir)
	if h := g2.Hooks(); !h[HookSignalGenerate] {
		t.Errorf("second Detect did not adopt the pinned link: %v", h)
	}
	if id2 := linkID(g2); id2 != id1 {
		t.Errorf("link id %d after restart, want the pinned %d", id2, id1)
	}
	e := eventFrom(t, g2, a.pid, 5*time.Second)
	if e.Kind != KindSignal || e.Signal != unix.SIGTERM || e.TargetTGID != target || !e.Stopped {
		t.Errorf("event %+v, want SIGTERM to %d, stopped", e, target)
	}
	var pids []uint32
	var pid uint32
	var start uint64
	for it := g2.maps.Protected.Iterate(); it.Next(&pid, &start); {
		pids = append(pids, pid)
	}
	if slices.Contains(pids, uint32(short)) {
		t.Errorf("protected set %v still holds exited pid %d", pids, short)
	}
}
