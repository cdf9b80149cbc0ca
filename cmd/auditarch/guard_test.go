package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	libaudit "github.com/elastic/go-libaudit/v2"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/audit/raw"
	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/internal/vmtest"
)

// TestConfigTamperRestored: while the daemon runs, someone else deletes every audit rule (auditctl -D),
// disables auditing (auditctl -e 0) and changes the backlog limit (auditctl -b): the daemon puts each
// back within a second and records it in a POLICY leaf; verify passes.
func TestConfigTamperRestored(t *testing.T) {
	ctl := privtest.Kernel(t)
	dir, keys := filepath.Join(t.TempDir(), "archive"), filepath.Join(t.TempDir(), "keys")
	cmd, stderr := daemonProcess(t, ctl, dir, keys)
	applied, err := ctl.GetRules()
	if err != nil || len(applied) == 0 {
		t.Fatalf("rules: %d, %v", len(applied), err)
	}
	st, err := ctl.GetStatus()
	if err != nil {
		t.Fatal(err)
	}
	// restored waits until the kernel is as the daemon applied it again and returns how long it took.
	restored := func(what string) time.Duration {
		t.Helper()
		start := time.Now()
		for time.Since(start) < 3*time.Second {
			s, err1 := ctl.GetStatus()
			r, err2 := ctl.GetRules()
			if err1 == nil && err2 == nil && s.Enabled == st.Enabled && s.BacklogLimit == st.BacklogLimit && len(r) == len(applied) {
				return time.Since(start)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("%s: not restored within 3 s\n%s", what, stderr)
		return 0
	}
	if _, err := ctl.DeleteRules(); err != nil {
		t.Fatal(err)
	}
	d1 := restored("auditctl -D")
	if err := ctl.SetEnabled(false, libaudit.WaitForReply); err != nil {
		t.Fatal(err)
	}
	d2 := restored("auditctl -e 0")
	if err := ctl.SetBacklogLimit(st.BacklogLimit/2, libaudit.WaitForReply); err != nil {
		t.Fatal(err)
	}
	d3 := restored("auditctl -b")
	t.Logf("restored after -D in %v, -e 0 in %v, -b in %v", d1.Round(time.Millisecond), d2.Round(time.Millisecond), d3.Round(time.Millisecond))
	for _, d := range []time.Duration{d1, d2, d3} {
		if d > time.Second {
			t.Errorf("a restoration took %v, more than a second", d)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if err := cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon: %v\n%s", err, stderr)
	}

	policies := policyLeaves(t, dir)
	if len(policies) < 3 {
		t.Fatalf("%d POLICY leaves, want one per change at least: %+v", len(policies), policies)
	}
	for _, p := range policies {
		if p.Action != raw.PolicyActionAuditConfig || p.Verdict != raw.PolicyVerdictRestored || p.Detail == "" {
			t.Errorf("POLICY leaf %+v", p)
		}
	}
	t.Logf("POLICY leaves: %+v", policies)
	var out bytes.Buffer
	if code := Main([]string{"show", dir}, &out, io.Discard); code != 0 || !strings.Contains(out.String(), " POLICY action=audit-config verdict=restored detail=") {
		t.Errorf("show (exit %d) prints no POLICY line", code)
	}
	rep := verifyKeys(t, dir, keys)
	if rep.Status != verify.Pass {
		t.Errorf("verify: %s %+v", rep.Status, rep.Problems)
	}
}

// TestLockedKernel runs in a VM (a locked kernel stays locked until reboot): the daemon with --lock
// leaves the configuration locked (-e 2), so that root cannot delete its rules or disable auditing; at
// its stop it cannot and does not restore the kernel; the next run on the locked kernel adopts the
// rules loaded, captures, and stops cleanly: no error, no crash loop.
func TestLockedKernel(t *testing.T) {
	if !vmtest.InVM() {
		vmtest.RunTest(t, "TestLockedKernel", vmtest.Options{Timeout: 4 * time.Minute})
		return
	}
	ctl := privtest.Kernel(t)
	rules := execRules(t)
	dir, keys := filepath.Join(t.TempDir(), "archive"), filepath.Join(t.TempDir(), "keys")
	cmd, stderr := daemonProcess(t, ctl, dir, keys, "--rules", rules, "--lock")
	st, err := ctl.GetStatus()
	if err != nil || st.Enabled != 2 {
		t.Fatalf("enabled %d (%v) under --lock, want 2", st.Enabled, err)
	}
	if _, err := ctl.DeleteRules(); err == nil {
		if r, _ := ctl.GetRules(); len(r) == 0 {
			t.Fatal("the rules of a locked configuration could be deleted")
		}
	}
	if err := ctl.SetEnabled(false, libaudit.WaitForReply); err == nil {
		if s, _ := ctl.GetStatus(); s.Enabled != 2 {
			t.Fatalf("a locked configuration could be disabled: enabled %d", s.Enabled)
		}
	}
	marker := func(what string) string {
		m := fmt.Sprintf("locked-%s-%d", what, os.Getpid())
		c := exec.Command(os.Args[0], m)
		c.Env = append(os.Environ(), trueEnv+"=1")
		if err := c.Run(); err != nil {
			t.Fatal(err)
		}
		return m
	}
	first := marker("first")
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("first run: %v\n%s", err, stderr)
	}
	cmd, stderr = daemonProcess(t, ctl, dir, keys, "--rules", rules)
	if !strings.Contains(stderr.String(), "locked (-e 2) until reboot") {
		t.Errorf("the second run did not say it adopts the locked rules:\n%s", stderr)
	}
	second := marker("second")
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("second run on the locked kernel: %v\n%s", err, stderr)
	}
	for _, m := range []string{first, second} {
		if !hasMarker(t, dir, m) {
			t.Errorf("the exec %s is not archived", m)
		}
	}
	rep := verifyKeys(t, dir, keys)
	if rep.Status != verify.Pass || len(rep.Runs) != 2 {
		t.Errorf("verify: %s, %d runs, %+v", rep.Status, len(rep.Runs), rep.Problems)
	}
}

// policyLeaves returns the bodies of the POLICY leaves of the archive in dir.
func policyLeaves(t *testing.T, dir string) []archive.Policy {
	t.Helper()
	r, err := archive.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var policies []archive.Policy
	for {
		l, _, err := r.NextLeaf()
		if errors.Is(err, io.EOF) {
			return policies
		}
		if err != nil {
			t.Fatal(err)
		}
		if l.Kind == archive.LeafPolicy {
			var p archive.Policy
			if err := json.Unmarshal(l.Body, &p); err != nil {
				t.Fatal(err)
			}
			policies = append(policies, p)
		}
	}
}
