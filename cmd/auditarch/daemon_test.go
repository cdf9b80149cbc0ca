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

	libaudit "github.com/elastic/go-libaudit/v2"
	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/internal/shiptest"
	"github.com/auditarch/auditarch/store"
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

// daemonProcess runs the real command as a process on dir with the key in keys (and the extra run
// arguments), and returns once it is registered with the kernel and capturing.
func daemonProcess(t *testing.T, ctl *libaudit.AuditClient, dir, keys string, extra ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"run", "--archive", dir, "--key", filepath.Join(keys, "host.key")}, extra...)...)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	stderr := new(bytes.Buffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		store.ClearImmutable(filepath.Join(filepath.Dir(dir), "store")) // the embedded store's sealed segments
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := ctl.GetStatus()
		// Every daemon test runs the daemon confined (the self-sandbox follows "capturing").
		if err == nil && int(st.PID) == cmd.Process.Pid && st.Enabled != 0 && strings.Contains(stderr.String(), "capturing") &&
			strings.Contains(stderr.String(), "self-sandbox") {
			if strings.Contains(stderr.String(), "self-sandbox not") {
				t.Fatalf("the daemon is not confined: %s", stderr.String())
			}
			return cmd, stderr
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not start: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// execMarker runs /bin/true with a marker argument the test can find in the archive.
func execMarker(t *testing.T, what string) string {
	t.Helper()
	marker := fmt.Sprintf("%s-marker-%d", what, os.Getpid())
	if err := exec.Command("/bin/true", marker).Run(); err != nil {
		t.Fatal(err)
	}
	return marker
}

// hasMarker reports whether the archive in dir holds the exec of /bin/true with marker.
func hasMarker(t *testing.T, dir, marker string) bool {
	t.Helper()
	evs, _ := readArchive(t, dir)
	for _, ev := range evs {
		if ev.Sys == "execve" && len(ev.Args) == 2 && ev.Args[1] == marker {
			return true
		}
	}
	return false
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
	cmd, stderr := daemonProcess(t, ctl, dir, filepath.Join(t.TempDir(), "keys"))
	marker := execMarker(t, "sigterm")
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
	if !hasMarker(t, dir, marker) {
		t.Errorf("the exec just before SIGTERM is not in the archive")
	}
}

// TestSigkillAndRestart kills the daemon with SIGKILL while it captures, then starts it again on the same
// archive: verify first reports the crash as incomplete evidence, and after the restart and a clean stop
// it passes with the crashed run listed and recovered; what was durable before the kill is there.
func TestSigkillAndRestart(t *testing.T) {
	ctl := privtest.Kernel(t)
	found, err := ctl.GetStatus()
	if err != nil {
		t.Fatal(err)
	}
	foundRules, err := ctl.GetRules()
	if err != nil {
		t.Fatal(err)
	}
	dir, keys := filepath.Join(t.TempDir(), "archive"), filepath.Join(t.TempDir(), "keys")
	cmd, _ := daemonProcess(t, ctl, dir, keys)
	before := execMarker(t, "before-kill")
	time.Sleep(500 * time.Millisecond) // flushed and fsynced (every 100 ms)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	r := verifyKeys(t, dir, keys)
	if _, err := os.Stat(filepath.Join(dir, kernelStateFile)); err != nil {
		t.Errorf("the killed daemon left no %s: %v", kernelStateFile, err)
	}
	if r.Status != verify.Incomplete || len(r.Problems) != 1 || r.Problems[0].Code != "no-stop" || r.Runs[0].Ended != "crashed" {
		t.Errorf("verify after SIGKILL: %s %+v %+v", r.Status, r.Problems, r.Runs)
	}
	if !hasMarker(t, dir, before) {
		t.Errorf("the exec 500 ms before SIGKILL is not in the archive")
	}

	cmd, stderr := daemonProcess(t, ctl, dir, keys)
	after := execMarker(t, "after-restart")
	time.Sleep(200 * time.Millisecond)
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("restarted daemon: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "the previous run did not stop cleanly") {
		t.Errorf("the restarted daemon did not log the recovery:\n%s", stderr.String())
	}
	r = verifyKeys(t, dir, keys)
	shiptest.OnlyCrashes(t, "after the restart", r)
	if len(r.Runs) != 2 || r.Runs[0].Ended != "crashed" || r.Runs[1].Ended != "stopped" ||
		r.Runs[1].Recovered == nil || r.Verified != r.Leaves {
		t.Errorf("verify after the restart: %s %+v runs %+v, %d of %d verified", r.Status, r.Problems, r.Runs, r.Verified, r.Leaves)
	}
	if !hasMarker(t, dir, before) || !hasMarker(t, dir, after) {
		t.Errorf("markers before the kill / after the restart: %v / %v", hasMarker(t, dir, before), hasMarker(t, dir, after))
	}
	// The killed run could not restore the kernel; the restarted one restores what the killed one found,
	// not the killed run's own rules (among them a never rule for its dead pid).
	st, err := ctl.GetStatus()
	if err != nil {
		t.Fatal(err)
	}
	rules, err := ctl.GetRules()
	if err != nil {
		t.Fatal(err)
	}
	if st.Enabled != found.Enabled || st.BacklogLimit != found.BacklogLimit || st.BacklogWaitTime != found.BacklogWaitTime || len(rules) != len(foundRules) {
		t.Errorf("kernel after the restarted daemon stopped: enabled %d backlog %d wait %d, %d rules; found: enabled %d backlog %d wait %d, %d rules",
			st.Enabled, st.BacklogLimit, st.BacklogWaitTime, len(rules), found.Enabled, found.BacklogLimit, found.BacklogWaitTime, len(foundRules))
	}
	if _, err := os.Stat(filepath.Join(dir, kernelStateFile)); !os.IsNotExist(err) {
		t.Errorf("%s left after a clean stop: %v", kernelStateFile, err)
	}
	// The embedded store holds both runs, the killed one's tail included, byte for byte, and verifies the same.
	pub, _, err := archive.LoadVerifierKey(filepath.Join(keys, archive.IdentityPubFile))
	if err != nil {
		t.Fatal(err)
	}
	checkStoreCopy(t, dir, pub)
}

// checkStoreCopy checks that the embedded store beside dir holds dir's archive byte for byte, that its
// copy verifies like the archive, and that the archive verifies against the store's receipts.
func checkStoreCopy(t *testing.T, dir string, pub note.Verifier) {
	t.Helper()
	area := store.AreaDir(filepath.Join(filepath.Dir(dir), "store"), pub.Name())
	shiptest.SameFiles(t, dir, area)
	sk, err := receipt.LoadCosignVerifier(filepath.Join(filepath.Dir(dir), "store", store.PubFile))
	if err != nil {
		t.Fatal(err)
	}
	rs, bad, err := receipt.Read(filepath.Join(dir, "receipts"), sk)
	if err != nil || bad != 0 || len(rs) == 0 {
		t.Fatalf("host receipts: %d, %d bad, %v", len(rs), bad, err)
	}
	for _, d := range []string{dir, area} {
		r, err := verify.Dir(d, verify.Options{Key: pub, Receipts: rs})
		if err != nil {
			t.Fatal(err)
		}
		shiptest.OnlyCrashes(t, d+" with the store's receipts", r)
	}
}

// verifyKeys verifies the archive in dir against the identity key in the key directory keys.
func verifyKeys(t *testing.T, dir, keys string) *verify.Report {
	t.Helper()
	pub, _, err := archive.LoadVerifierKey(filepath.Join(keys, archive.IdentityPubFile))
	if err != nil {
		t.Fatal(err)
	}
	r, err := verify.Dir(dir, verify.Options{Key: pub})
	if err != nil {
		t.Fatal(err)
	}
	return r
}
