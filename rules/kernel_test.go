package rules

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	libaudit "github.com/elastic/go-libaudit/v2"

	"github.com/auditarch/auditarch/internal/privtest"
)

// These tests program the real kernel. privtest.Kernel serialises them machine-wide and restores the
// kernel's audit state afterwards. Locking (-e 2) is never tested here: it holds until reboot.

func kernelRules(t *testing.T, c *libaudit.AuditClient) []string {
	t.Helper()
	rs, err := c.GetRules()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		s, err := commandLine(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func kernelStatus(t *testing.T, c *libaudit.AuditClient) libaudit.AuditStatus {
	t.Helper()
	st, err := c.GetStatus()
	if err != nil {
		t.Fatal(err)
	}
	return *st
}

// settable is the part of the status Apply and Restore change.
func settable(s libaudit.AuditStatus) string {
	return fmt.Sprintf("enabled %d failure %d pid %d rate_limit %d backlog_limit %d backlog_wait_time %d",
		s.Enabled, s.Failure, s.PID, s.RateLimit, s.BacklogLimit, s.BacklogWaitTime)
}

func TestApplyKernel(t *testing.T) {
	c := privtest.Kernel(t)
	auditctl := privtest.Command(t, "auditctl")
	// Rules found before Apply, for Restore to bring back.
	for _, op := range mustParse(t, "-a always,exit -F arch=b64 -S acct -k auditarch_found\n-w /etc/passwd -p wa -k auditarch_found\n").Ops {
		if err := c.AddRule(op.Wire); err != nil {
			t.Fatal(err)
		}
	}
	before, beforeRules := kernelStatus(t, c), kernelRules(t, c)

	s := Default()
	a, err := Apply(c, s, ApplyOptions{SelfPID: os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	want, err := s.Rules()
	if err != nil {
		t.Fatal(err)
	}
	self := fmt.Sprintf("-a never,exit -S all -F pid=%d", os.Getpid())
	want = append([]string{self}, want...)
	if got := kernelRules(t, c); !slices.Equal(got, want) {
		t.Errorf("kernel rules after Apply:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	st := kernelStatus(t, c)
	if st.Enabled != 1 || st.BacklogLimit != 8192 || st.Failure != 1 || st.BacklogWaitTime != 60000 {
		t.Errorf("kernel status after Apply: %s", settable(st))
	}
	// Cross-check with auditctl, which prints a few numbers differently (hex arguments) but agrees on the
	// count and on the first rule.
	out, err := exec.Command(auditctl, "-l").Output()
	if err != nil {
		t.Fatalf("auditctl -l: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(want) || lines[0] != self {
		t.Errorf("auditctl -l lists %d rules starting %q, want %d starting %q", len(lines), lines[0], len(want), self)
	}
	if got := settable(a.Status()); got != settable(before) {
		t.Errorf("Status() = %s, want %s", got, settable(before))
	}

	if err := a.Restore(); err != nil {
		t.Fatal(err)
	}
	if got := kernelRules(t, c); !slices.Equal(got, beforeRules) {
		t.Errorf("kernel rules after Restore:\n got %q\nwant %q", got, beforeRules)
	}
	if got := settable(kernelStatus(t, c)); got != settable(before) {
		t.Errorf("kernel status after Restore: %s, want %s", got, settable(before))
	}
}

// TestApplyKernelRefused checks that a rule the kernel refuses midway undoes everything before it.
func TestApplyKernelRefused(t *testing.T) {
	c := privtest.Kernel(t)
	before, beforeRules := kernelStatus(t, c), kernelRules(t, c)
	s := mustParse(t, "-b 100\n-a always,exit -F arch=b64 -S acct -k auditarch_test\n-w /nonexistent-auditarch/x -p r\n")
	a, err := Apply(c, s, ApplyOptions{SelfPID: os.Getpid()})
	var oe *OpError
	if a != nil || !errors.As(err, &oe) || oe.Line != 3 {
		t.Fatalf("got %v, %v; want an *OpError for line 3", a, err)
	}
	t.Logf("refused as expected: %v", err)
	if got := kernelRules(t, c); !slices.Equal(got, beforeRules) {
		t.Errorf("kernel rules after a refused Apply: %q, want %q", got, beforeRules)
	}
	if got := settable(kernelStatus(t, c)); got != settable(before) {
		t.Errorf("kernel status after a refused Apply: %s, want %s", got, settable(before))
	}
}

var (
	recordPID = regexp.MustCompile(` pid=(\d+) `)
	recordKey = regexp.MustCompile(` key="([^"]*)"`)
)

// TestSelfExclusionKernel checks, with events read from the kernel, that the self-exclusion rule keeps
// the excluded process out of both syscall rules (exec) and watches (sensitive_read) while another
// process doing the same is recorded.
func TestSelfExclusionKernel(t *testing.T) {
	c := privtest.Kernel(t)
	sh := privtest.Command(t, "sh")
	start := func() (*exec.Cmd, io.WriteCloser) {
		cmd := exec.Command(sh, "-c", "read x; exec cat /etc/shadow")
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, in
	}
	excluded, goExcluded := start()
	other, goOther := start()

	a, err := Apply(c, Default(), ApplyOptions{SelfPID: excluded.Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := a.Restore(); err != nil {
			t.Error(err)
		}
	}()
	r, err := libaudit.NewAuditClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close() // unregisters before Restore runs
	if err := r.SetPID(libaudit.WaitForReply); err != nil {
		t.Fatal(err)
	}

	for _, in := range []io.WriteCloser{goExcluded, goOther} {
		io.WriteString(in, "\n")
		in.Close()
	}
	for _, cmd := range []*exec.Cmd{excluded, other} {
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
	}

	// The other process is recorded for every execve sh tries along PATH, for its read of /etc/shadow and
	// for its exit; read until both keys of interest have come, and a little longer.
	keys := map[int][]string{} // pid -> keys of its SYSCALL records
	seen := func() bool {
		k := keys[other.Process.Pid]
		return slices.Contains(k, "exec") && slices.Contains(k, "sensitive_read")
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if soon := time.Now().Add(300 * time.Millisecond); seen() && soon.Before(deadline) {
			deadline = soon
		}
		m, err := r.Receive(true)
		if err != nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if m.Type != 1300 { // AUDIT_SYSCALL
			continue
		}
		p, k := recordPID.FindSubmatch(m.Data), recordKey.FindSubmatch(m.Data)
		if p == nil || k == nil {
			continue
		}
		pid, _ := strconv.Atoi(string(p[1]))
		if pid == excluded.Process.Pid || pid == other.Process.Pid {
			keys[pid] = append(keys[pid], string(k[1]))
		}
	}
	if !seen() {
		t.Errorf("the other process was recorded with keys %q, want exec and sensitive_read among them", keys[other.Process.Pid])
	}
	if got := keys[excluded.Process.Pid]; len(got) != 0 {
		t.Errorf("the excluded process was recorded with keys %q", got)
	}
}
