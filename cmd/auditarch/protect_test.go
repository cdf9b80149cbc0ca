package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/policy/freeze"
)

// TestProtectStatusThaw: a session frozen by the protection shows in "protect status" and "protect thaw"
// releases it.
func TestProtectStatusThaw(t *testing.T) {
	privtest.Root(t)
	if _, err := freeze.Cgroup2Mount(); err != nil {
		privtest.Unavailable(t, "cgroup v2: %v", err)
	}
	victim := exec.Command("/bin/sleep", "60")
	victim.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { victim.Process.Kill(); victim.Wait() })
	f, err := freeze.Session(victim.Process.Pid, freeze.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { freeze.Thaw(f.Cgroup) }) // (gone after a successful thaw)
	var out bytes.Buffer
	if code := Main([]string{"protect", "status"}, &out, io.Discard); code != 0 || !strings.Contains(out.String(), fmt.Sprintf("session %d since", f.Session)) {
		t.Fatalf("protect status (exit %d):\n%s", code, out.String())
	}
	out.Reset()
	if code := Main([]string{"protect", "thaw", fmt.Sprint(f.Session)}, &out, io.Discard); code != 0 || !strings.Contains(out.String(), "thawed session") {
		t.Fatalf("protect thaw (exit %d):\n%s", code, out.String())
	}
	if _, err := os.Stat(f.Cgroup); !os.IsNotExist(err) {
		t.Errorf("the frozen session's cgroup is still there: %v", err)
	}
	if code := Main([]string{"protect", "thaw", fmt.Sprint(f.Session)}, io.Discard, io.Discard); code != 1 {
		t.Errorf("thaw of a session no longer frozen: exit %d, want 1", code)
	}
}
