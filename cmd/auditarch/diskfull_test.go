package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/internal/privtest"
)

// TestDaemonDiskFullUntilStop runs the real daemon with its archive on a small tmpfs that another file
// fills, makes audit events, and stops it with SIGTERM while the disk is still full. The events it held
// are not written but counted: its last log line ("stopped") counts them as dropped, it exits with an
// error that says so, and the archive ends with a LOST leaf of exactly that count and a STOP (verify: no
// torn tail, no missing STOP). The log says that the disk refuses writes when it starts, not at every
// flush.
func TestDaemonDiskFullUntilStop(t *testing.T) {
	ctl := privtest.Kernel(t)
	// The archive directory is the tmpfs (its embedded store, beside it, is not).
	dir := filepath.Join(t.TempDir(), "archive")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=4m,mode=0700"); err != nil {
		privtest.Unavailable(t, "mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { // after the daemon's cleanup (cleanups run last first)
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v (detaching it)", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	keys := filepath.Join(t.TempDir(), "keys")
	cmd, stderr := daemonProcess(t, ctl, dir, keys)
	before := execMarker(t, "before-full")
	time.Sleep(300 * time.Millisecond) // flushed (every 20 ms) and shipped

	// Another program fills the disk, as far as it takes writes.
	f, err := os.OpenFile(filepath.Join(dir, "filler"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	fill := func() error {
		for _, n := range []int{64 << 10, 4096, 1} {
			for zeros := make([]byte, n); ; {
				if _, err := f.Write(zeros); err != nil {
					if !errors.Is(err, unix.ENOSPC) {
						return err
					}
					break
				}
			}
		}
		return nil
	}
	if err := fill(); err != nil {
		t.Fatalf("filler: %v", err)
	}
	// It keeps the disk full until the stop: in about one run in four something handed a page back (not
	// pinned down; likely a receipt append the shipper gave up half-way), the daemon's next block took it
	// and the stop found nothing held.
	stopFill, filled := make(chan struct{}), make(chan error, 1)
	go func() {
		for {
			select {
			case <-stopFill:
				filled <- nil
				return
			case <-time.After(time.Millisecond):
			}
			if err := fill(); err != nil {
				filled <- err
				return
			}
		}
	}()
	for i := range 20 {
		execMarker(t, fmt.Sprintf("full-%d", i))
	}
	time.Sleep(500 * time.Millisecond) // 25 flushes the disk refuses
	close(stopFill)
	if err := <-filled; err != nil {
		t.Fatalf("filler: %v", err)
	}
	f.Close()
	if err := cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("daemon exit: %v, want 1\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "auditarch: error: archive disk refused the last blocks at stop") {
		t.Errorf("the daemon's error does not say that the events held were not written:\n%s", stderr.String())
	}

	var stopped map[string]any
	refused, takes := 0, 0
	for _, line := range bytes.Split(stderr.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) != nil {
			continue
		}
		switch msg, _ := m["message"].(string); {
		case msg == "stopped":
			stopped = m
		case strings.HasPrefix(msg, "archive write failed"):
			refused++
		case msg == "archive disk takes writes again":
			takes++
		}
	}
	// Another program may free a little room meanwhile: the shipper does, when it cuts back a receipt the
	// full disk took in part. Each time the disk takes writes again, the next refusal is a line again.
	dropped, _ := stopped["dropped"].(float64)
	if stopped == nil || dropped < 20 || refused != takes+1 || refused > 3 {
		t.Fatalf("log: stopped %v, %d lines that the archive write failed, %d that the disk takes writes again; want at least the 20 execs dropped, one more refusal than recovery, not 25 (a line per flush):\n%s",
			stopped, refused, takes, stderr.String())
	}
	r := verifyKeys(t, dir, keys)
	lost := uint64(0)
	for _, l := range r.Lost {
		if l.Reason == "local_drop" {
			lost += l.Count
		}
	}
	if r.Status != verify.Pass || len(r.Problems) != 0 || len(r.Runs) != 1 || r.Runs[0].Ended != "stopped" || lost != uint64(dropped) {
		t.Fatalf("verify: %s, problems %+v, runs %+v, LOST %+v; want a stopped run, local_drop %v", r.Status, r.Problems, r.Runs, r.Lost, dropped)
	}
	if !hasMarker(t, dir, before) {
		t.Errorf("the exec before the disk filled is not in the archive")
	}
	t.Logf("stopped: %v; verify: %s, LOST %+v", stopped, r.Status, r.Lost)
}
