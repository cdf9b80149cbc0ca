package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/auditarch/auditarch/internal/privtest"
)

// TestWrapper builds the wrapper and runs a root shell through it: the shell cannot signal a process
// started outside (kill -0 fails with EPERM), while the same shell unconfined can.
func TestWrapper(t *testing.T) {
	privtest.Root(t)
	sh := privtest.Command(t, "sh")
	bin := filepath.Join(t.TempDir(), "auditarch-confine")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	target := exec.Command("/bin/sleep", "60")
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Process.Kill(); target.Wait() })
	script := "kill -0 " + strconv.Itoa(target.Process.Pid)
	if out, err := exec.Command(sh, "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("unconfined %s: %v %s", script, err, out)
	}
	out, err := exec.Command(bin, sh, "-c", script).CombinedOutput()
	if err == nil || !strings.Contains(strings.ToLower(string(out)), "not permitted") {
		t.Fatalf("confined %s: %v %q, want a failure: operation not permitted", script, err, out)
	}
	// Without a command: $SHELL with SSH_ORIGINAL_COMMAND, as ssh's ForceCommand runs it.
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "SHELL="+sh, "SSH_ORIGINAL_COMMAND="+script)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(strings.ToLower(string(out)), "not permitted") {
		t.Fatalf("confined SSH_ORIGINAL_COMMAND: %v %q", err, out)
	}
}
