package freeze

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/internal/vmtest"
)

func TestParseMountinfo(t *testing.T) {
	hybrid := `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	unified := `25 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
`
	for _, c := range []struct{ name, in, want string }{
		{"hybrid", hybrid, "/sys/fs/cgroup/unified"},
		{"unified", unified, "/sys/fs/cgroup"},
		{"escaped", `50 1 0:40 / /mnt/my\040cg rw - cgroup2 none rw` + "\n", "/mnt/my cg"},
		{"subtree mount skipped", "60 1 0:40 /user.slice /mnt/u rw - cgroup2 none rw\n" + unified, "/sys/fs/cgroup"},
	} {
		got, err := parseMountinfo([]byte(c.in))
		if err != nil || got != c.want {
			t.Errorf("%s: parseMountinfo = %q, %v; want %q", c.name, got, err, c.want)
		}
	}
	if _, err := parseMountinfo([]byte("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n")); !errors.Is(err, ErrNoCgroup2) {
		t.Errorf("no cgroup2: err = %v, want ErrNoCgroup2", err)
	}
}

func TestParseStat(t *testing.T) {
	s, err := parseStat([]byte("4242 (a (b) c) S 17 4242 4240 34816 4242 4194560 115 0 0 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.pid != 4242 || s.state != 'S' || s.ppid != 17 || s.session != 4240 || s.flags != 4194560 {
		t.Errorf("parseStat = %+v", s)
	}
	if _, err := parseStat([]byte("12 (x) S 1")); err == nil {
		t.Error("short stat parsed")
	}
}

func TestParseName(t *testing.T) {
	sid, at, ok := parseName("ses-4240-1796309232780635719")
	if !ok || sid != 4240 || at.UnixNano() != 1796309232780635719 {
		t.Errorf("parseName = %d, %v, %v", sid, at, ok)
	}
	for _, bad := range []string{"ses-0-1", "ses-12", "ses-x-1", "foo-1-2", "ses-1-2-3"} {
		if _, _, ok := parseName(bad); ok {
			t.Errorf("parseName(%q) accepted", bad)
		}
	}
}

func TestThawRejectsOtherPaths(t *testing.T) {
	fake := filepath.Join(t.TempDir(), RootName, "ses-1-2") // named right, but not on cgroup2
	if err := os.MkdirAll(fake, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{t.TempDir(), fake} {
		if err := Thaw(p); !errors.Is(err, ErrNotSession) {
			t.Errorf("Thaw(%s) = %v, want ErrNotSession", p, err)
		}
	}
}

// TestSession freezes a disposable session of three processes through a worker's pid, checks that a
// third process's SIGCONT resumes nothing, and thaws it.
func TestSession(t *testing.T) {
	privtest.Root(t)
	freezeScenario(t)
}

// TestFreezeInVM runs the same scenario in a vmtest guest, whose cgroup2 mount is /sys/fs/cgroup (the
// unified layout) rather than this host's /sys/fs/cgroup/unified.
func TestFreezeInVM(t *testing.T) {
	if !vmtest.InVM() {
		vmtest.RunTest(t, "TestFreezeInVM", vmtest.Options{})
		return
	}
	m, err := Cgroup2Mount()
	t.Logf("guest cgroup2 mount: %q (%v)", m, err)
	if m != "/sys/fs/cgroup" {
		t.Errorf("guest cgroup2 mount = %q, want /sys/fs/cgroup", m)
	}
	freezeScenario(t)
	t.Run("Refused", TestRefused)
	t.Run("SIGKILL", TestSIGKILLKillsFrozen)
	t.Run("StoppedSender", TestStoppedSenderStaysStopped)
	t.Run("Churn", TestSessionChurn)
}

// TestRefused: the daemon's own session and pid 1's are never frozen, and nothing is created for them.
func TestRefused(t *testing.T) {
	privtest.Root(t)
	own, _ := unix.Getsid(0)
	for _, pid := range []int{os.Getpid(), 1} {
		f, err := Session(pid, Options{})
		if !errors.Is(err, ErrRefused) {
			t.Errorf("Session(%d) (own session %d) = %+v, %v; want ErrRefused", pid, own, f, err)
		}
		t.Logf("Session(%d): %v", pid, err)
	}
	if _, err := Session(1<<22+12345, Options{}); !errors.Is(err, unix.ESRCH) {
		t.Errorf("Session(no such pid) = %v, want ESRCH", err)
	}
	list, err := List()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range list {
		if f.Session == own || f.Session == 0 {
			t.Errorf("a cgroup was made for a refused session: %+v", f)
		}
	}
}

// TestSIGKILLKillsFrozen records what the kernel does: a fatal signal kills a frozen task at once (the
// freezer lets it out to die); its frozen parent cannot reap it, so it stays a zombie until the thaw.
// The rest of the session stays frozen.
func TestSIGKILLKillsFrozen(t *testing.T) {
	privtest.Root(t)
	s := startSession(t, 2)
	var cg string
	cleanupCgroup(t, &cg)
	f, err := Session(s.leader, Options{})
	cg = f.Cgroup
	if err != nil {
		t.Fatal(err)
	}
	victim := s.pids[1]
	if err := unix.Kill(victim, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	state := byte(0)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(victim) + "/stat")
		if err != nil {
			t.Fatalf("pid %d was reaped while its parent is frozen: %v", victim, err)
		}
		st, _ := parseStat(b)
		if state = st.state; state == 'Z' {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if state != 'Z' {
		t.Fatalf("frozen pid %d after SIGKILL: state %q, want a zombie (killed, parent frozen)", victim, state)
	}
	// The dying task leaves the frozen state to exit, so cgroup.events can read "frozen 0" for a moment
	// after it became a zombie; the others stay frozen throughout (assertStopped below).
	if err := waitFrozen(f.Cgroup, time.Second); err != nil {
		t.Errorf("cgroup not frozen again after SIGKILL of one member: %v", err)
	}
	rest := &session{dir: s.dir, leader: s.leader, pids: []int{s.pids[0], s.pids[2]}, names: []string{s.names[0], s.names[2]}}
	rest.assertStopped(t, "after SIGKILL of a sibling")
	g, err := load(filepath.Dir(filepath.Dir(f.Cgroup)), f.Cgroup)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(g.Pids, victim) {
		t.Errorf("killed pid %d still listed in cgroup.procs: %v", victim, g.Pids)
	}
	if err := Thaw(f.Cgroup); err != nil {
		t.Fatalf("Thaw: %v", err)
	}
	if _, err := os.Stat(f.Cgroup); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup %s still there after Thaw: %v", f.Cgroup, err)
	}
}

// TestStoppedSenderStaysStopped: the sender is SIGSTOPped first (as the BPF program does), then its
// session is frozen; a SIGCONT from anyone then resumes none of it, the sender included. The kernel
// counts a stopped task as frozen, so the cgroup reports frozen 1.
func TestStoppedSenderStaysStopped(t *testing.T) {
	privtest.Root(t)
	s := startSession(t, 2)
	var cg string
	cleanupCgroup(t, &cg)
	sender := s.pids[1]
	if err := unix.Kill(sender, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	f, err := Session(sender, Options{})
	cg = f.Cgroup
	if err != nil {
		t.Fatal(err)
	}
	sigcont(t, s.pids)
	s.assertStopped(t, "stopped sender, frozen session, after SIGCONT")
	if err := Thaw(f.Cgroup); err != nil {
		t.Fatal(err)
	}
	// The SIGCONT arrived while frozen and ended the job-control stop: after the thaw, all run.
	for i := range s.pids {
		s.waitAdvancing(t, i)
	}
}

// TestSetsidDescendant: a member that called setsid(2) (a worker in a session of its own) is frozen with
// the session of its parent.
func TestSetsidDescendant(t *testing.T) {
	privtest.Root(t)
	s := startSession(t, 1, envSetsid+"=1")
	var cg string
	cleanupCgroup(t, &cg)
	if sid, _ := unix.Getsid(s.pids[1]); sid != s.pids[1] {
		t.Fatalf("worker %d is in session %d, want its own", s.pids[1], sid)
	}
	f, err := Session(s.leader, Options{})
	cg = f.Cgroup
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(f.Pids, s.pids[1]) {
		t.Errorf("escaped worker %d not frozen: %v", s.pids[1], f.Pids)
	}
	s.assertStopped(t, "frozen with a setsid descendant")
}

// TestSessionChurn: a worker starts a short-lived child every millisecond or so; Session still settles,
// and everything stops, the children of the moment included.
func TestSessionChurn(t *testing.T) {
	privtest.Root(t)
	s := startSession(t, 1, envFork+"=1")
	var cg string
	cleanupCgroup(t, &cg)
	time.Sleep(100 * time.Millisecond) // let the churn get going
	start := time.Now()
	f, err := Session(s.leader, Options{})
	cg = f.Cgroup
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Session froze %d processes of a churning session in %v", len(f.Pids), time.Since(start))
	s.assertStopped(t, "churning session")
	before, err := load(filepath.Dir(filepath.Dir(f.Cgroup)), f.Cgroup)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	after, err := load(filepath.Dir(filepath.Dir(f.Cgroup)), f.Cgroup)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before.Pids, after.Pids) {
		t.Errorf("frozen cgroup's processes changed from %v to %v", before.Pids, after.Pids)
	}
	ex, _ := refusedSessions()
	members, err := scan(f.Session, ex)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range members {
		if !slices.Contains(after.Pids, p) {
			t.Errorf("session member %d is outside the frozen cgroup", p)
		}
	}
	if err := Thaw(f.Cgroup); err != nil {
		t.Fatal(err)
	}
}

// TestSessionAgain: a second Session for a session already frozen reuses its cgroup.
func TestSessionAgain(t *testing.T) {
	privtest.Root(t)
	s := startSession(t, 1)
	var cg string
	cleanupCgroup(t, &cg)
	f, err := Session(s.leader, Options{})
	cg = f.Cgroup
	if err != nil {
		t.Fatal(err)
	}
	g, err := Session(s.pids[1], Options{})
	if err != nil {
		t.Fatal(err)
	}
	if g.Cgroup != f.Cgroup || !g.At.Equal(f.At) || !slices.Equal(g.Pids, f.Pids) {
		t.Errorf("second Session = %+v, want the first %+v", g, f)
	}
}

// TestSessionLatency freezes 50 disposable sessions of 3 processes (Go programs, each with several
// threads) one after another and reports the p50 and p99 of Session and of Thaw.
func TestSessionLatency(t *testing.T) {
	privtest.Root(t)
	if testing.Short() {
		t.Skip("50 sessions take some seconds")
	}
	const n = 50
	var freeze, thaw []time.Duration
	for range n {
		s := startSession(t, 2)
		var cg string
		cleanupCgroup(t, &cg)
		start := time.Now()
		f, err := Session(s.pids[2], Options{})
		freeze = append(freeze, time.Since(start))
		cg = f.Cgroup
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Pids) != 3 {
			t.Fatalf("froze %v, want 3 processes", f.Pids)
		}
		start = time.Now()
		if err := Thaw(f.Cgroup); err != nil {
			t.Fatal(err)
		}
		thaw = append(thaw, time.Since(start))
		s.kill(t)
	}
	slices.Sort(freeze)
	slices.Sort(thaw)
	pct := func(d []time.Duration, p int) time.Duration { return d[(len(d)-1)*p/100] }
	t.Logf("Session, %d sessions of 3 processes: p50 %v p99 %v max %v", n, pct(freeze, 50), pct(freeze, 99), freeze[n-1])
	t.Logf("Thaw: p50 %v p99 %v max %v", pct(thaw, 50), pct(thaw, 99), thaw[n-1])
}

// sigcont sends SIGCONT to pids from a third process, neither the test (the daemon) nor the session.
func sigcont(tb testing.TB, pids []int) {
	tb.Helper()
	sc := exec.Command(os.Args[0])
	sc.Env = append(os.Environ(), envChild+"=sigcont", envPids+"="+strings.Trim(fmt.Sprint(pids), "[]"))
	if out, err := sc.CombinedOutput(); err != nil {
		tb.Fatalf("sigcont: %v\n%s", err, out)
	}
}
