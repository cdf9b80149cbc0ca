package harness

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStartEnvAndOutput(t *testing.T) {
	dir := t.TempDir()
	p, err := Start(dir, "echo", ProcOptions{Env: []string{"HARNESS_TEST=42"}},
		"sh", "-c", `echo "out $HARNESS_TEST"; echo err >&2`)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Await(context.Background(), 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.Result(); err != nil {
		t.Fatal(err)
	}
	if out, err := p.Stdout(); err != nil || string(out) != "out 42\n" {
		t.Errorf("stdout %q, %v", out, err)
	}
	if tail := p.StderrTail(); tail != "err" {
		t.Errorf("stderr tail %q", tail)
	}
	if _, err := os.Stat(filepath.Join(dir, "echo.err")); err != nil {
		t.Error(err)
	}
}

func TestResultCarriesStderr(t *testing.T) {
	p, err := Start(t.TempDir(), "fail", ProcOptions{}, "sh", "-c", "echo broken >&2; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	p.Await(context.Background(), 10*time.Second, nil)
	if err := p.Result(); err == nil || !strings.Contains(err.Error(), "fail: exit status 3: broken") {
		t.Errorf("result %v", err)
	}
	// Stop after exit reports the same failure and does not hang.
	if err := p.Stop(time.Second); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("stop %v", err)
	}
}

func TestAwaitOverran(t *testing.T) {
	p, err := Start(t.TempDir(), "sleep", ProcOptions{}, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	unstuck := false
	err = p.Await(context.Background(), 100*time.Millisecond, func() { unstuck = true })
	if !errors.Is(err, ErrOverran) || !unstuck || !p.Exited() {
		t.Errorf("err %v, unstick called %v, exited %v", err, unstuck, p.Exited())
	}
}

// TestStopStopsGroup checks that Stop ends what the child left behind in its process group.
func TestStopStopsGroup(t *testing.T) {
	dir := t.TempDir()
	p, err := Start(dir, "parent", ProcOptions{}, "sh", "-c", "sleep 60 & echo $! ; wait")
	if err != nil {
		t.Fatal(err)
	}
	var child int
	for deadline := time.Now().Add(10 * time.Second); child == 0 && time.Now().Before(deadline); {
		out, _ := p.Stdout()
		child, _ = strconv.Atoi(strings.TrimSpace(string(out)))
		time.Sleep(10 * time.Millisecond)
	}
	if child == 0 {
		t.Fatal("no child pid")
	}
	p.Stop(5 * time.Second) // sh dies of SIGTERM: an error is expected
	if alive(child) {
		syscall.Kill(child, syscall.SIGKILL)
		t.Errorf("child %d of the group survived Stop", child)
	}
}

// alive reports whether pid is a process that has not exited (a zombie waiting for its reaper has).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || !strings.HasPrefix(string(b[i:]), ") Z")
}
