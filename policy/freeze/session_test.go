package freeze

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The disposable sessions are re-execs of this test binary (the vmtest guest has no shell): TestMain runs
// the child mode named by envChild instead of the tests.
const (
	envChild   = "AUDITARCH_FREEZE_CHILD"   // leader, worker or sigcont
	envDir     = "AUDITARCH_FREEZE_DIR"     // where counters and the pid list are written
	envName    = "AUDITARCH_FREEZE_NAME"    // a worker's counter file name
	envWorkers = "AUDITARCH_FREEZE_WORKERS" // how many workers a leader starts
	envSetsid  = "AUDITARCH_FREEZE_SETSID"  // a worker that calls setsid(2) itself (escapes the session)
	envPids    = "AUDITARCH_FREEZE_PIDS"    // the pids sigcont signals
	envFork    = "AUDITARCH_FREEZE_FORK"    // a worker that keeps starting short-lived children

	tick          = 10 * time.Millisecond // how often a child advances its counter
	childLifetime = 3 * time.Minute       // a child that is never killed exits after this
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envChild); mode != "" {
		os.Exit(child(mode))
	}
	// Remove auditarch.frozen afterwards if the tests made it (rmdir fails if it is in use).
	var made string
	if m, err := Cgroup2Mount(); err == nil {
		if _, err := os.Stat(filepath.Join(m, RootName)); errors.Is(err, os.ErrNotExist) {
			made = filepath.Join(m, RootName)
		}
	}
	code := m.Run()
	if made != "" {
		unix.Rmdir(made)
	}
	os.Exit(code)
}

// child runs one mode of a disposable session's process.
func child(mode string) int {
	dir := os.Getenv(envDir)
	switch mode {
	case "leader":
		if _, err := unix.Setsid(); err != nil {
			fmt.Fprintln(os.Stderr, "setsid:", err)
			return 1
		}
		// The leader reaps its workers and every orphan below it, so a test that kills the session leaves
		// no zombie to pid 1 (which need not reap: it does not on the development machine).
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return 1
		}
		go func() {
			for {
				var ws unix.WaitStatus
				if _, err := unix.Wait4(-1, &ws, 0, nil); err == unix.ECHILD {
					time.Sleep(tick)
				}
			}
		}()
		n, _ := strconv.Atoi(os.Getenv(envWorkers))
		pids := []string{strconv.Itoa(os.Getpid())}
		for i := range n {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), envChild+"=worker", fmt.Sprintf("%s=worker%d", envName, i))
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				fmt.Fprintln(os.Stderr, "start worker:", err)
				return 1
			}
			pids = append(pids, strconv.Itoa(cmd.Process.Pid))
		}
		tmp := filepath.Join(dir, "pids.tmp")
		if err := os.WriteFile(tmp, []byte(strings.Join(pids, " ")), 0o644); err != nil {
			return 1
		}
		if err := os.Rename(tmp, filepath.Join(dir, "pids")); err != nil {
			return 1
		}
		return count(filepath.Join(dir, "leader"))
	case "worker":
		if os.Getenv(envSetsid) == "1" {
			if _, err := unix.Setsid(); err != nil {
				return 1
			}
		}
		if os.Getenv(envFork) == "1" {
			go churn()
		}
		return count(filepath.Join(dir, os.Getenv(envName)))
	case "brief":
		time.Sleep(20 * time.Millisecond)
		return 0
	case "sigcont":
		for _, f := range strings.Fields(os.Getenv(envPids)) {
			p, _ := strconv.Atoi(f)
			if err := unix.Kill(p, unix.SIGCONT); err != nil {
				fmt.Fprintf(os.Stderr, "kill %d: %v\n", p, err)
				return 1
			}
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown child mode", mode)
	return 2
}

// count advances a counter in file every tick until its parent changes (it was orphaned) or
// childLifetime passes.
func count(file string) int {
	f, err := os.Create(file)
	if err != nil {
		return 1
	}
	parent := os.Getppid()
	end := time.Now().Add(childLifetime)
	for n := 1; time.Now().Before(end) && os.Getppid() == parent; n++ {
		if _, err := f.WriteAt(fmt.Appendf(nil, "%019d\n", n), 0); err != nil {
			return 1
		}
		time.Sleep(tick)
	}
	return 0
}

// churn keeps starting children that live 20 ms, without pause, so that a session's membership changes
// while it is being frozen.
func churn() {
	for {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), envChild+"=brief")
		if err := cmd.Start(); err != nil {
			return
		}
		go cmd.Wait()
		time.Sleep(time.Millisecond)
	}
}

// session is a disposable session started by startSession.
type session struct {
	dir    string
	leader int
	pids   []int         // leader first, then the workers
	names  []string      // counter file of each pid
	done   chan struct{} // closed when the leader has been reaped
	killed bool          // kill ran: the pids may since have been reused
}

// kill kills the session's processes: the members but the leader first, which the leader reaps, then the
// leader. Call it on a thawed session (a frozen leader reaps nothing).
func (s *session) kill(tb testing.TB) {
	tb.Helper()
	if s.killed {
		return
	}
	s.killed = true
	members := append([]int(nil), s.pids...)
	if ex, err := refusedSessions(); err == nil {
		if m, err := scan(s.leader, ex); err == nil {
			members = append(members, m...)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for _, p := range members {
		if p == s.leader {
			continue
		}
		unix.Kill(p, unix.SIGKILL)
		for unix.Kill(p, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	unix.Kill(s.leader, unix.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		tb.Errorf("leader %d not reaped 5 s after SIGKILL", s.leader)
	}
}

// startSession starts a leader in a new session with n workers and waits until every counter runs. Its
// processes are killed when the test ends, whatever happened.
func startSession(tb testing.TB, workers int, env ...string) *session {
	tb.Helper()
	s := &session{dir: tb.TempDir()}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), envChild+"=leader", envDir+"="+s.dir,
		envWorkers+"="+strconv.Itoa(workers)), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	s.leader = cmd.Process.Pid
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.done = done
	tb.Cleanup(func() { s.kill(tb) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(s.dir, "pids"))
		if err == nil {
			for _, f := range strings.Fields(string(b)) {
				p, _ := strconv.Atoi(f)
				s.pids = append(s.pids, p)
			}
			break
		}
		if time.Now().After(deadline) {
			tb.Fatal("disposable session did not start in 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	s.names = []string{"leader"}
	for i := range workers {
		s.names = append(s.names, fmt.Sprintf("worker%d", i))
	}
	for i := range s.pids {
		s.waitAdvancing(tb, i)
	}
	return s
}

// counter reads the counter of the i-th process.
func (s *session) counter(tb testing.TB, i int) int {
	tb.Helper()
	for range 100 {
		b, err := os.ReadFile(filepath.Join(s.dir, s.names[i]))
		if err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return n
			}
		}
		time.Sleep(time.Millisecond)
	}
	tb.Fatalf("counter %s unreadable", s.names[i])
	return 0
}

// waitAdvancing waits until the counter of the i-th process moves, for at most 5 s.
func (s *session) waitAdvancing(tb testing.TB, i int) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	first := -1
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(s.dir, s.names[i])); err == nil {
			n := s.counter(tb, i)
			if first < 0 {
				first = n
			} else if n != first {
				return
			}
		}
		time.Sleep(tick)
	}
	tb.Fatalf("counter of %s (pid %d) does not advance", s.names[i], s.pids[i])
}

// assertStopped checks that no counter of the session moves over 15 ticks.
func (s *session) assertStopped(tb testing.TB, what string) {
	tb.Helper()
	before := make([]int, len(s.pids))
	for i := range s.pids {
		before[i] = s.counter(tb, i)
	}
	time.Sleep(15 * tick)
	for i := range s.pids {
		if n := s.counter(tb, i); n != before[i] {
			tb.Errorf("%s: counter of %s (pid %d) moved from %d to %d", what, s.names[i], s.pids[i], before[i], n)
		}
	}
}

// cleanupCgroup removes a session cgroup when the test ends, by force if Thaw fails: cgroup.kill, then
// rmdir. Registered before the processes' cleanup, it runs after it.
func cleanupCgroup(tb testing.TB, dir *string) {
	tb.Cleanup(func() {
		if *dir == "" {
			return
		}
		if _, err := os.Stat(*dir); err != nil {
			return
		}
		if err := Thaw(*dir); err == nil {
			return
		} else {
			tb.Logf("cleanup: thaw %s: %v; killing its processes", *dir, err)
		}
		writeFile(filepath.Join(*dir, "cgroup.kill"), "1")
		writeFile(filepath.Join(*dir, "cgroup.freeze"), "0")
		if err := removeTree(*dir); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
}

// cgroupFile reads a cgroupfs file, trimmed.
func cgroupFile(tb testing.TB, dir, name string) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		tb.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// freezeScenario is the core test, run on the host and in the vmtest guest: freeze a session through a
// worker's pid; SIGCONT from a third process does not resume it; Thaw does, back in the original cgroups.
func freezeScenario(t *testing.T) {
	s := startSession(t, 2)
	var cg string
	cleanupCgroup(t, &cg)
	origins := map[int]string{}
	for _, p := range s.pids {
		o, err := procCgroup(p)
		if err != nil {
			t.Fatal(err)
		}
		origins[p] = o
	}

	start := time.Now()
	f, err := Session(s.pids[2], Options{})
	cg = f.Cgroup
	if err != nil {
		t.Fatalf("Session(%d): %v", s.pids[2], err)
	}
	t.Logf("Session(%d) froze %v in %v: %s", s.pids[2], f.Pids, time.Since(start), f.Cgroup)
	if f.Session != s.leader {
		t.Errorf("Session = %d, want the leader's pid %d", f.Session, s.leader)
	}
	for _, p := range s.pids {
		if !containsInt(f.Pids, p) {
			t.Errorf("pid %d is not in Frozen.Pids %v", p, f.Pids)
		}
		if f.Origins[p] != origins[p] {
			t.Errorf("origin of %d = %q, want %q", p, f.Origins[p], origins[p])
		}
	}
	if got := cgroupFile(t, f.Cgroup, "cgroup.freeze"); got != "1" {
		t.Errorf("cgroup.freeze = %q, want 1", got)
	}
	if !strings.Contains(cgroupFile(t, f.Cgroup, "cgroup.events"), "frozen 1") {
		t.Errorf("cgroup.events does not report frozen 1")
	}
	s.assertStopped(t, "frozen")

	list, err := List()
	if err != nil {
		t.Fatal(err)
	}
	if !slicesContainsCgroup(list, f.Cgroup) {
		t.Errorf("List() = %+v, missing %s", list, f.Cgroup)
	}

	// A third process, neither the daemon nor the session, sends SIGCONT to every process.
	sigcont(t, s.pids)
	s.assertStopped(t, "frozen, after SIGCONT")
	if !strings.Contains(cgroupFile(t, f.Cgroup, "cgroup.events"), "frozen 1") {
		t.Errorf("cgroup.events does not report frozen 1 after SIGCONT")
	}

	if err := Thaw(f.Cgroup); err != nil {
		t.Fatalf("Thaw: %v", err)
	}
	for i, p := range s.pids {
		s.waitAdvancing(t, i)
		if o, err := procCgroup(p); err != nil || o != origins[p] {
			t.Errorf("pid %d is in cgroup %q after Thaw, want %q (%v)", p, o, origins[p], err)
		}
	}
	if _, err := os.Stat(f.Cgroup); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup %s still there after Thaw: %v", f.Cgroup, err)
	}
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func slicesContainsCgroup(list []Frozen, dir string) bool {
	for _, f := range list {
		if f.Cgroup == dir {
			return true
		}
	}
	return false
}
