package main

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/store"
)

// notification is one datagram the fake service manager received.
type notification struct {
	at    time.Time
	lines []string
}

// fakeSystemd listens on a unixgram socket in dir as systemd's NOTIFY_SOCKET does, and collects what
// arrives.
type fakeSystemd struct {
	path string
	mu   sync.Mutex
	got  []notification
}

func newFakeSystemd(t *testing.T, dir string) *fakeSystemd {
	t.Helper()
	f := &fakeSystemd{path: filepath.Join(dir, "notify")}
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: f.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := ln.ReadFrom(buf)
			if err != nil {
				return
			}
			f.mu.Lock()
			f.got = append(f.got, notification{time.Now(), strings.Split(string(buf[:n]), "\n")})
			f.mu.Unlock()
		}
	}()
	return f
}

// all returns what arrived so far.
func (f *fakeSystemd) all() []notification {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]notification(nil), f.got...)
}

// wait waits until a notification with a line starting with prefix arrives, and returns its index.
func (f *fakeSystemd) wait(t *testing.T, prefix string, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for i, n := range f.all() {
			for _, l := range n.lines {
				if strings.HasPrefix(l, prefix) {
					return i
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %s within %s; got %v", prefix, timeout, f.all())
	return -1
}

// TestNotifierWithoutSocket: without NOTIFY_SOCKET nothing is opened and every call is a no-op.
func TestNotifierWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := newNotifier(zerolog.Nop())
	if n.fd != -1 {
		t.Fatalf("fd %d without NOTIFY_SOCKET", n.fd)
	}
	n.alive(time.Now().UnixNano())
	n.send("READY=1")
	n.start(t.Context(), nil, nil)
	n.close()
}

// TestNotifierWatchdogFollowsLoop: the watchdog is pinged from the capture loop's turns at half
// WATCHDOG_USEC, and not at all when the loop stops turning (a wedged capture); WATCHDOG_PID of another
// process disables it.
func TestNotifierWatchdogFollowsLoop(t *testing.T) {
	f := newFakeSystemd(t, t.TempDir())
	t.Setenv("NOTIFY_SOCKET", f.path)
	t.Setenv("WATCHDOG_USEC", "100000")
	n := newNotifier(zerolog.Nop())
	defer n.close()
	if n.watchdog != 100*time.Millisecond {
		t.Fatalf("watchdog %s, want 100ms", n.watchdog)
	}
	start := time.Now()
	for time.Since(start) < 500*time.Millisecond { // a loop turning every 10 ms
		n.alive(time.Now().UnixNano())
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // wedged: no turns
	pings := 0
	for _, m := range f.all() {
		if m.lines[0] == "WATCHDOG=1" {
			pings++
			if m.at.Sub(start) > 560*time.Millisecond {
				t.Errorf("a ping %s after the loop stopped turning", m.at.Sub(start))
			}
		}
	}
	if pings < 8 || pings > 11 {
		t.Errorf("%d pings in 500 ms at a 100 ms watchdog, want about 10 (every 50 ms)", pings)
	}

	t.Setenv("WATCHDOG_PID", "1")
	if n := newNotifier(zerolog.Nop()); n.watchdog != 0 {
		t.Errorf("watchdog %s for WATCHDOG_PID=1", n.watchdog)
	}
}

// TestSystemdNotify runs the daemon as systemd would start it (Type=notify, WatchdogSec): READY=1
// arrives only once the daemon is registered, its rules are in the kernel and its archive holds a
// published segment with a durable checkpoint; WATCHDOG=1 comes at half WATCHDOG_USEC; STATUS= lines
// report the rate and the store lag; SIGTERM gives STOPPING=1 before a clean exit. The daemon runs
// confined (self-sandbox), as under systemd.
func TestSystemdNotify(t *testing.T) {
	ctl := privtest.Kernel(t)
	tmp := t.TempDir()
	sd := newFakeSystemd(t, tmp)
	dir := filepath.Join(tmp, "archive")
	cmd := exec.Command(os.Args[0], "run", "--archive", dir, "--key", filepath.Join(tmp, "keys", "host.key"))
	cmd.Env = append(os.Environ(), mainEnv+"=1", "NOTIFY_SOCKET="+sd.path, "WATCHDOG_USEC=400000")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		store.ClearImmutable(filepath.Join(tmp, "store"))
	})

	began := time.Now()
	ready := sd.wait(t, "READY=1", 20*time.Second)
	t.Logf("READY %s after the start", time.Since(began).Round(time.Millisecond))
	// What READY promises must hold now (each only grows while the daemon runs).
	st, err := ctl.GetStatus()
	if err != nil {
		t.Fatal(err)
	}
	if int(st.PID) != cmd.Process.Pid {
		t.Errorf("at READY the kernel's audit pid is %d, not the daemon's %d", st.PID, cmd.Process.Pid)
	}
	if rs, err := ctl.GetRules(); err != nil || len(rs) < 10 {
		t.Errorf("at READY %d rules are loaded (%v)", len(rs), err)
	}
	if size := durableCheckpoint(t, dir); size == 0 {
		t.Errorf("at READY the archive holds no durable checkpoint")
	}
	if !strings.Contains(stderr.String(), "self-sandbox applied") {
		t.Errorf("READY before the daemon was confined:\n%s", stderr.String())
	}

	time.Sleep(2500 * time.Millisecond)
	if err := cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stopping := sd.wait(t, "STOPPING=1", 10*time.Second)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, stderr.String())
	}
	if stopping < ready {
		t.Errorf("STOPPING=1 before READY=1")
	}

	var pings []time.Time
	var status []string
	for _, n := range sd.all()[ready:stopping] {
		for _, l := range n.lines {
			switch {
			case l == "WATCHDOG=1":
				pings = append(pings, n.at)
			case strings.HasPrefix(l, "STATUS="):
				status = append(status, l)
			}
		}
	}
	// 2.5 s at one ping per 200 ms (the loop turns at least every 100 ms: 200-300 ms apart).
	if len(pings) < 8 || len(pings) > 15 {
		t.Errorf("%d watchdog pings in about 2.5 s at WATCHDOG_USEC=400000, want about 12", len(pings))
	}
	for i := 1; i < len(pings); i++ {
		if gap := pings[i].Sub(pings[i-1]); gap > 350*time.Millisecond {
			t.Errorf("watchdog gap %s (the watchdog fires after 400 ms)", gap)
		}
	}
	if len(status) < 2 {
		t.Fatalf("STATUS lines: %q, want one with READY and one every %s", status, statusEvery)
	}
	for _, s := range status {
		if !strings.Contains(s, "events/s") || !strings.Contains(s, "store lag") {
			t.Errorf("STATUS line without rate or lag: %q", s)
		}
	}
	t.Logf("%d pings; last status %q", len(pings), status[len(status)-1])
}

// durableCheckpoint returns the tree size of the last checkpoint in the archive's published segments.
func durableCheckpoint(t *testing.T, dir string) uint64 {
	t.Helper()
	files, err := archive.ListSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var size uint64
	for _, f := range files {
		s, err := archive.OpenSegment(f)
		if err != nil {
			t.Fatal(err)
		}
		for {
			typ, p, err := s.Next()
			var ce *archive.CorruptError
			if errors.As(err, &ce) && ce.Torn {
				break // the block the writer is writing now
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if typ == archive.EntryCheckpoint {
				c, err := archive.PeekCheckpoint(p)
				if err != nil {
					t.Fatal(err)
				}
				size = c.Size
			}
		}
		s.Close()
	}
	return size
}
