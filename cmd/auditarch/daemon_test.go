package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/privtest"
)

// hold registers as the kernel's audit daemon, says so, and waits for stdin to close.
func hold() int {
	c, err := audit.Dial(0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	if err := c.Register(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("registered")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// TestRefusesWhenAnotherDaemonHoldsTheKernel: with another process registered as the audit daemon, run
// fails with an error naming its pid and a hint, and leaves the kernel's rules untouched.
func TestRefusesWhenAnotherDaemonHoldsTheKernel(t *testing.T) {
	ctl := privtest.Kernel(t)
	other := exec.Command(os.Args[0], "-test.run=^$")
	other.Env = append(os.Environ(), holdEnv+"=1")
	stdin, err := other.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := other.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	other.Stderr = os.Stderr
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); other.Wait() }()
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "registered\n" {
		t.Fatalf("the other daemon did not register: %q", line)
	}
	rulesBefore, err := ctl.GetRules()
	if err != nil {
		t.Fatal(err)
	}

	cfg := defaultConfig()
	cfg.Archive = t.TempDir()
	err = run(context.Background(), cfg, zerolog.Nop())
	var de *audit.DaemonError
	if !errors.As(err, &de) || int(de.PID) != other.Process.Pid {
		t.Fatalf("run = %v, want a DaemonError naming pid %d", err, other.Process.Pid)
	}
	var stderr bytes.Buffer
	code := Main([]string{"run", "--archive", t.TempDir()}, io.Discard, &stderr)
	want := fmt.Sprintf("auditarch: error: another audit daemon (pid %d) is registered with the kernel\nauditarch: hint: stop the other audit daemon first", other.Process.Pid)
	if code != 1 || !strings.HasPrefix(stderr.String(), want) {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, stderr.String(), want)
	}
	rulesAfter, err := ctl.GetRules()
	if err != nil {
		t.Fatal(err)
	}
	if len(rulesAfter) != len(rulesBefore) {
		t.Errorf("refused run changed the kernel's rules: %d before, %d after", len(rulesBefore), len(rulesAfter))
	}
}

// TestSigtermFlushesAndRestores runs the real command as a process, stops it with SIGTERM, and checks it
// exits 0 with its events archived and the kernel as it was found (rules, audit pid, enabled).
func TestSigtermFlushesAndRestores(t *testing.T) {
	ctl := privtest.Kernel(t)
	before, err := ctl.GetStatus()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "archive")
	cmd := exec.Command(os.Args[0], "run", "--archive", dir, "--key", filepath.Join(t.TempDir(), "keys", "host.key"))
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := ctl.GetStatus()
		if err == nil && int(st.PID) == cmd.Process.Pid && st.Enabled == 1 && strings.Contains(stderr.String(), "capturing") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not start: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// An event the test can recognise: exec of /bin/true with a marker argument.
	marker := fmt.Sprintf("sigterm-marker-%d", os.Getpid())
	if err := exec.Command("/bin/true", marker).Run(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, stderr.String())
	}
	after, err := ctl.GetStatus()
	if err != nil {
		t.Fatal(err)
	}
	if after.PID != 0 || after.Enabled != before.Enabled || after.BacklogLimit != before.BacklogLimit {
		t.Errorf("kernel after SIGTERM: pid %d enabled %d backlog %d; before: enabled %d backlog %d",
			after.PID, after.Enabled, after.BacklogLimit, before.Enabled, before.BacklogLimit)
	}
	if rules, err := ctl.GetRules(); err != nil || len(rules) != 0 {
		t.Errorf("rules left in the kernel after SIGTERM: %d (%v)", len(rules), err)
	}
	evs, _ := readArchive(t, dir)
	found := false
	for _, ev := range evs {
		if ev.Sys == "execve" && len(ev.Args) == 2 && ev.Args[1] == marker {
			found = true
		}
	}
	if !found {
		t.Errorf("the exec just before SIGTERM is not in the archive (%d events)", len(evs))
	}
}
