// Package privtest gates tests that need root, the kernel's audit subsystem or a peer program.
//
// On a developer laptop such a test skips with the reason. When AUDITARCH_REQUIRE_PRIVILEGED=1 (set by
// .ci/run) the same condition fails the test instead: a skip must never hide a regression in CI.
//
// Kernel audit state is global to the machine. Kernel takes a machine-wide lock, so tests of different
// packages never program the kernel at the same time, and restores the audit status and rule list it found
// when the test ends, pass or fail.
package privtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"

	libaudit "github.com/elastic/go-libaudit/v2"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/kernlock"
)

// envInVM is set to 1 in a vmtest guest (vmtest.EnvInVM; vmtest imports this package).
const envInVM = "AUDITARCH_IN_VM"

// EnvRequire names the environment variable that turns skips into failures.
const EnvRequire = "AUDITARCH_REQUIRE_PRIVILEGED"

// Required reports whether this machine must have every privilege and peer (CI).
func Required() bool { return os.Getenv(EnvRequire) == "1" }

// Unavailable skips the test with reason, or fails it when privileges are required.
func Unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	reason := fmt.Sprintf(format, args...)
	if Required() {
		tb.Fatalf("required by %s=1 but unavailable: %s", EnvRequire, reason)
	}
	tb.Skip("skipped: " + reason)
}

// Root requires the test to run as root.
func Root(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Unavailable(tb, "needs root")
	}
}

// Command requires a program on PATH (a peer such as ausearch or auditd) and returns its path.
func Command(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(tb, "needs %s on PATH (make deps installs it)", name)
	}
	return p
}

// debianPython is Debian's interpreter: the python3 first on PATH may be another build (pyenv) that
// does not see Debian's python3-* packages.
const debianPython = "/usr/bin/python3"

// PythonModule requires Debian's python3 able to import module, which Debian package pkg provides
// (scripts/deps.sh installs it), and returns the interpreter's path.
func PythonModule(tb testing.TB, module, pkg string) string {
	tb.Helper()
	out, err := exec.Command(debianPython, "-c", "import "+module).CombinedOutput()
	if err != nil {
		Unavailable(tb, "needs python module %s for %s (Debian package %s; make deps installs it): %v: %s",
			module, debianPython, pkg, err, out)
	}
	return debianPython
}

// Snapshot is the part of the kernel's audit state that tests may change.
type Snapshot struct {
	Status libaudit.AuditStatus
	Rules  [][]byte
}

// TakeSnapshot reads the kernel audit status and rule list.
func TakeSnapshot(c *libaudit.AuditClient) (Snapshot, error) {
	st, err := c.GetStatus()
	if err != nil {
		return Snapshot{}, fmt.Errorf("get audit status: %w", err)
	}
	rules, err := c.GetRules()
	if err != nil {
		return Snapshot{}, fmt.Errorf("get audit rules: %w", err)
	}
	return Snapshot{Status: *st, Rules: rules}, nil
}

// Restore puts the kernel back to the snapshot: rules, checks no audit pid was left registered, enabled,
// failure mode, backlog limit, backlog wait time and rate limit.
func (s Snapshot) Restore(c *libaudit.AuditClient) error {
	var errs []error
	if _, err := c.DeleteRules(); err != nil {
		errs = append(errs, fmt.Errorf("delete rules: %w", err))
	}
	for _, r := range s.Rules {
		if err := c.AddRule(r); err != nil {
			errs = append(errs, fmt.Errorf("re-add rule: %w", err))
		}
	}
	// Only the registered process can unregister itself. A pid still registered by a live process here
	// is a daemon the test leaked.
	if pid := settledPID(c); pid != s.Status.PID {
		errs = append(errs, fmt.Errorf("audit pid %d is still registered after the test", pid))
	}
	errs = append(errs,
		c.SetBacklogLimit(s.Status.BacklogLimit, libaudit.WaitForReply),
		c.SetBacklogWaitTime(int32(s.Status.BacklogWaitTime), libaudit.WaitForReply),
		c.SetFailure(libaudit.FailureMode(s.Status.Failure), libaudit.WaitForReply),
		c.SetRateLimit(s.Status.RateLimit, libaudit.WaitForReply),
		c.SetEnabled(s.Status.Enabled == 1, libaudit.WaitForReply),
	)
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// Kernel requires root and a working kernel audit subsystem, takes the machine-wide kernel lock, and
// registers a cleanup that restores the audit state found. It returns a control client for the test.
func Kernel(tb testing.TB) *libaudit.AuditClient {
	tb.Helper()
	Root(tb)
	release, err := kernlock.Acquire(context.Background(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := libaudit.NewAuditClient(nil)
	if err != nil {
		release()
		Unavailable(tb, "kernel audit netlink: %v", err)
	}
	snap, err := TakeSnapshot(c)
	if err != nil {
		c.Close()
		release()
		Unavailable(tb, "kernel audit status: %v", err)
	}
	if snap.Status.PID != 0 {
		snap.Status.PID = settledPID(c)
	}
	if snap.Status.PID != 0 {
		c.Close()
		release()
		tb.Fatalf("another audit daemon (pid %d) is registered with the kernel; stop it before testing", snap.Status.PID)
	}
	if snap.Status.Enabled == 2 {
		c.Close()
		release()
		Unavailable(tb, "kernel audit configuration is locked (-e 2) until reboot")
	}
	tb.Cleanup(func() {
		if st, err := c.GetStatus(); err == nil && st.Enabled == 2 {
			// Locked until reboot: nothing can be restored. Only a throwaway VM's tests may do that.
			if os.Getenv(envInVM) != "1" {
				tb.Errorf("the test locked the kernel's audit configuration (-e 2): it stays so until reboot")
			}
			c.Close()
			release()
			return
		}
		if err := snap.Restore(c); err != nil {
			tb.Errorf("restore kernel audit state: %v", err)
		}
		c.Close()
		release()
	})
	return c
}

// settledPID returns the registered audit pid, after making the kernel notice a registered process that
// has exited: the kernel keeps reporting a dead daemon's pid until it next tries to reach it. A
// registration attempt makes it test the current daemon's socket (audit_replace) and reset a dead one;
// if the attempt succeeds, this process unregisters again at once.
func settledPID(c *libaudit.AuditClient) uint32 {
	st, err := c.GetStatus()
	if err != nil || st.PID == 0 {
		return 0
	}
	if err := unix.Kill(int(st.PID), 0); err != unix.ESRCH {
		return st.PID // alive
	}
	if conn, err := audit.Dial(0); err == nil {
		if conn.Register() == nil {
			conn.Unregister()
		}
		conn.Close()
	}
	if st, err = c.GetStatus(); err != nil {
		return 0
	}
	return st.PID
}
