package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/internal/privtest"
)

// TestFileSinkConfined: the daemon, confined by its self-sandbox, forwards to a file sink in a directory
// of its own, rotated at every few events (a rename and a new file there, after confinement): an exec
// reaches the sink's files as ECS JSON.
func TestFileSinkConfined(t *testing.T) {
	ctl := privtest.Kernel(t)
	base := t.TempDir()
	sinkDir := filepath.Join(base, "siem")
	if err := os.Mkdir(sinkDir, 0o700); err != nil {
		t.Fatal(err)
	}
	sinkFile := filepath.Join(sinkDir, "events.json")
	conf := filepath.Join(base, "auditarch.yaml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "forward:\n  sinks:\n    - name: siem\n      type: file\n      address: %s\n      max_size: 4096\n      keep: 50\n", sinkFile), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "archive")
	cmd, stderr := daemonProcess(t, ctl, dir, filepath.Join(base, "keys"), "--config", conf)
	marker := execMarker(t, "sink")
	var got []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got = nil
		files, _ := filepath.Glob(sinkFile + "*")
		for _, f := range files {
			b, _ := os.ReadFile(f)
			got = append(got, b...)
		}
		if bytes.Contains(got, []byte(marker)) && len(files) > 1 {
			break
		}
	}
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon: %v\n%s", err, stderr)
	}
	if !bytes.Contains(got, []byte(marker)) || !bytes.Contains(got, []byte(`"event":`)) {
		t.Fatalf("the sink's file holds no ECS event for the exec of %s (%d bytes)\n%s", marker, len(got), stderr)
	}
}
