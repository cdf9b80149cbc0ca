package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/audit/raw"
	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/internal/shiptest"
	"github.com/auditarch/auditarch/policy"
	"github.com/auditarch/auditarch/policy/freeze"
	"golang.org/x/sys/unix"
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

// attackerEnv makes the test binary an attacker: it sends the signal (a number) to the pid in its value
// "PID SIG", then counts in a loop until killed.
const attackerEnv = "AUDITARCH_TEST_ATTACKER"

func attacker(spec string) int {
	var pid, sig int
	fmt.Sscan(spec, &pid, &sig)
	if err := syscall.Kill(pid, syscall.Signal(sig)); err != nil {
		fmt.Fprintln(os.Stderr, "attacker:", err)
	}
	for {
		time.Sleep(time.Millisecond)
	}
}

// TestDetectFreezesAttacker: with --protect detect, a root process in another session that signals the
// daemon is stopped in the kernel before its kill() returns, its session is frozen (SIGCONT from a third
// process does not resume it), a POLICY leaf names it, and the daemon runs on and verifies PASS; the
// process that started the daemon may still stop it.
func TestDetectFreezesAttacker(t *testing.T) {
	ctl := privtest.Kernel(t)
	mnt := t.TempDir()
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		privtest.Unavailable(t, "mount a bpf filesystem: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	pins := filepath.Join(mnt, "auditarch")
	t.Cleanup(func() { policy.Unpin(pins) })
	dir, keys := filepath.Join(t.TempDir(), "archive"), filepath.Join(t.TempDir(), "keys")
	cmd, stderr := daemonProcess(t, ctl, dir, keys, "--protect", "detect", "--protect-pins", pins)

	atk := exec.Command(os.Args[0])
	atk.Env = append(os.Environ(), fmt.Sprintf("%s=%d %d", attackerEnv, cmd.Process.Pid, int(unix.SIGCONT)))
	atk.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := atk.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, f := range mustList(t) {
			freeze.Thaw(f.Cgroup)
		}
		atk.Process.Kill()
		atk.Wait()
	})
	var frozen *freeze.Frozen
	for deadline := time.Now().Add(5 * time.Second); frozen == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, f := range mustList(t) {
			if slices.Contains(f.Pids, atk.Process.Pid) {
				frozen = &f
			}
		}
	}
	if frozen == nil {
		t.Fatalf("the attacker's session was not frozen within 5 s\n%s", stderr)
	}
	unix.Kill(atk.Process.Pid, unix.SIGCONT) // a third party tries to resume it
	time.Sleep(50 * time.Millisecond)
	events, _ := os.ReadFile(filepath.Join(frozen.Cgroup, "cgroup.events"))
	if !strings.Contains(string(events), "frozen 1") {
		t.Errorf("after SIGCONT the attacker's cgroup reads %q, want frozen 1", events)
	}
	if cmd.ProcessState != nil {
		t.Fatalf("the daemon exited: %s", stderr)
	}
	if err := cmd.Process.Signal(unix.SIGTERM); err != nil { // the supervisor (this test) may stop it
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon: %v\n%s", err, stderr)
	}
	found := false
	for _, pl := range policyLeaves(t, dir) {
		if p := &pl; p.Action == "signal" && p.Verdict == raw.PolicyVerdictFrozen && p.Sender != nil &&
			p.Sender.TGID == atk.Process.Pid && p.Target != nil && p.Target.TGID == cmd.Process.Pid {
			found = true
			t.Logf("POLICY: %+v sender %+v", *p, *p.Sender)
		}
	}
	if !found {
		t.Errorf("no POLICY leaf names the attacker %d as frozen\n%s", atk.Process.Pid, stderr)
	}
	pub, _, err := archive.LoadVerifierKey(filepath.Join(keys, archive.IdentityPubFile))
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := verify.Dir(dir, verify.Options{Key: pub}); err != nil || rep.Status != verify.Pass {
		t.Errorf("verify: %v %+v", err, rep)
	}
}

func mustList(t *testing.T) []freeze.Frozen {
	t.Helper()
	l, err := freeze.List()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestDetectSigkillRecordedByNextRun: a SIGKILL cannot be refused in detect mode, but the programs stay
// pinned: the killer is stopped all the same, the record waits in the pinned ring buffer, and the next
// run (started here as a supervisor would) adopts the pins, freezes the killer's session and archives
// the POLICY leaf; verify reports the killed run and nothing else.
func TestDetectSigkillRecordedByNextRun(t *testing.T) {
	ctl := privtest.Kernel(t)
	mnt := t.TempDir()
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		privtest.Unavailable(t, "mount a bpf filesystem: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	pins := filepath.Join(mnt, "auditarch")
	t.Cleanup(func() { policy.Unpin(pins) })
	dir, keys := filepath.Join(t.TempDir(), "archive"), filepath.Join(t.TempDir(), "keys")
	args := []string{"--protect", "detect", "--protect-pins", pins}
	cmd, _ := daemonProcess(t, ctl, dir, keys, args...)

	atk := exec.Command(os.Args[0])
	atk.Env = append(os.Environ(), fmt.Sprintf("%s=%d %d", attackerEnv, cmd.Process.Pid, int(unix.SIGKILL)))
	atk.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := atk.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, f := range mustList(t) {
			freeze.Thaw(f.Cgroup)
		}
		atk.Process.Kill()
		atk.Wait()
	})
	cmd.Wait() // killed
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", atk.Process.Pid))
	if !strings.Contains(string(stat), ") T ") {
		t.Errorf("the killer is not stopped: %s", stat)
	}
	cmd, stderr := daemonProcess(t, ctl, dir, keys, args...)
	var frozen bool
	for deadline := time.Now().Add(5 * time.Second); !frozen && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, f := range mustList(t) {
			frozen = frozen || slices.Contains(f.Pids, atk.Process.Pid)
		}
	}
	if !frozen {
		t.Errorf("the next run did not freeze the killer's session\n%s", stderr)
	}
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("next run: %v\n%s", err, stderr)
	}
	found := false
	for _, p := range policyLeaves(t, dir) {
		found = found || (p.Action == "signal" && p.Sender != nil && p.Sender.TGID == atk.Process.Pid && strings.Contains(p.Detail, "SIGKILL"))
	}
	if !found {
		t.Errorf("no POLICY leaf for the SIGKILL by %d\n%s", atk.Process.Pid, stderr)
	}
	pub, _, err := archive.LoadVerifierKey(filepath.Join(keys, archive.IdentityPubFile))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := verify.Dir(dir, verify.Options{Key: pub})
	if err != nil {
		t.Fatal(err)
	}
	shiptest.OnlyCrashes(t, dir, rep)
}
