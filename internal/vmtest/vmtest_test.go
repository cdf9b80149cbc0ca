package vmtest_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/internal/vmtest"
)

// bootCmdline is what TestGuestKernel boots with: the kernel's audit hold queue and the BPF LSM.
const bootCmdline = "audit=1 audit_backlog_limit=8192 lsm=landlock,lockdown,yama,bpf"

// shippedPath is where TestGuestKernel's extra file lands in the guest; shippedText is its content.
const (
	shippedPath = "/opt/vmtest/hello.txt"
	shippedText = "shipped from the host\n"
)

// TestGuestKernel boots a guest with bootCmdline and checks in it that the options took effect (the kernel's
// audit status, read over netlink with go-libaudit, and the LSM list), that the file systems init promises
// are mounted, and that extra files (one built by BuildStatic) and a variable arrived.
func TestGuestKernel(t *testing.T) {
	if !vmtest.InVM() {
		src := filepath.Join(t.TempDir(), "hello.txt")
		if err := os.WriteFile(src, []byte(shippedText), 0o640); err != nil {
			t.Fatal(err)
		}
		vmtest.RunTest(t, "TestGuestKernel", vmtest.Options{
			Cmdline: bootCmdline,
			Files: map[string]string{
				shippedPath:            src,
				"/usr/local/bin/hello": vmtest.BuildStatic(t, "./internal/vmtest/testdata/hello"),
			},
			Env:     []string{"VMTEST_GREETING=hello"},
			Timeout: time.Minute,
		})
		return
	}

	cmdline := readFile(t, "/proc/cmdline")
	for _, opt := range strings.Fields(bootCmdline) {
		if !strings.Contains(" "+cmdline+" ", " "+opt+" ") {
			t.Errorf("/proc/cmdline %q lacks %q", cmdline, opt)
		}
	}
	if lsm := readFile(t, "/sys/kernel/security/lsm"); !contains(strings.Split(lsm, ","), "bpf") {
		t.Errorf("/sys/kernel/security/lsm is %q, without bpf", lsm)
	}

	// privtest.Kernel also proves the guest suits the privileged helpers: root, /run/lock, audit netlink.
	c := privtest.Kernel(t)
	st, err := c.GetStatus()
	if err != nil {
		t.Fatalf("audit status: %v", err)
	}
	t.Logf("audit status: %+v", *st)
	if st.Enabled != 1 || st.BacklogLimit != 8192 {
		t.Errorf("audit enabled=%d backlog_limit=%d, want 1 and 8192", st.Enabled, st.BacklogLimit)
	}

	mounts := map[string]string{} // mount point → type
	for _, line := range strings.Split(readFile(t, "/proc/mounts"), "\n") {
		if f := strings.Fields(line); len(f) >= 3 {
			mounts[f[1]] = f[2]
		}
	}
	for dir, fstype := range map[string]string{
		"/proc": "proc", "/sys": "sysfs", "/dev": "devtmpfs", "/sys/kernel/security": "securityfs",
		"/sys/fs/cgroup": "cgroup2", "/sys/fs/bpf": "bpf", "/tmp": "tmpfs", "/run": "tmpfs",
		"/sys/kernel/debug": "debugfs", "/sys/kernel/tracing": "tracefs",
	} {
		if mounts[dir] != fstype {
			t.Errorf("%s is mounted as %q, want %s", dir, mounts[dir], fstype)
		}
	}

	if got := readFile(t, shippedPath); got+"\n" != shippedText {
		t.Errorf("%s holds %q, want %q", shippedPath, got, shippedText)
	}
	if info, err := os.Stat(shippedPath); err != nil || info.Mode().Perm() != 0o640 {
		t.Errorf("%s: mode %v (%v), want 0640 as on the host", shippedPath, info.Mode(), err)
	}
	if out, err := exec.Command("hello").CombinedOutput(); err != nil || string(out) != "hello from a static binary\n" {
		t.Errorf("hello (BuildStatic) on PATH: %q, %v", out, err)
	}
	if os.Getenv("VMTEST_GREETING") != "hello" || os.Geteuid() != 0 {
		t.Errorf("guest test runs with VMTEST_GREETING=%q as uid %d, want hello as root",
			os.Getenv("VMTEST_GREETING"), os.Geteuid())
	}
}

// TestRunReportsFailure checks that a guest test's failure reaches the host as ErrFailed.
func TestRunReportsFailure(t *testing.T) {
	if vmtest.InVM() {
		t.Fatal("host-only test ran in the guest")
	}
	out, err := vmtest.Run(t, "TestGuestFails", vmtest.Options{Env: []string{"VMTEST_FAIL=1"}, Timeout: time.Minute})
	if !errors.Is(err, vmtest.ErrFailed) {
		t.Fatalf("Run = %v, want ErrFailed", err)
	}
	if !strings.Contains(out, "--- FAIL: TestGuestFails") || !strings.Contains(out, "failing on purpose") {
		t.Errorf("the guest's output lacks its failure:\n%s", out)
	}
}

// TestGuestFails fails on purpose in the guest that TestRunReportsFailure starts.
func TestGuestFails(t *testing.T) {
	if !vmtest.InVM() || os.Getenv("VMTEST_FAIL") != "1" {
		t.Skip("fails on purpose only in the guest started by TestRunReportsFailure")
	}
	t.Error("failing on purpose")
}

// TestRunTimeout checks that a guest that does not finish in time is killed and reported as ErrTimeout.
func TestRunTimeout(t *testing.T) {
	if vmtest.InVM() {
		t.Fatal("host-only test ran in the guest")
	}
	start := time.Now()
	_, err := vmtest.Run(t, "TestGuestHangs", vmtest.Options{
		Env:     []string{"VMTEST_HANG=1"},
		Args:    []string{"-test.timeout=0"}, // no goroutine dump in the guest: only the host's kill ends it
		Timeout: 3 * time.Second,
	})
	if !errors.Is(err, vmtest.ErrTimeout) {
		t.Fatalf("Run = %v, want ErrTimeout", err)
	}
	// Run returns only once qemu has been reaped; a kill that missed would leave it waiting forever.
	t.Logf("timed out and reaped after %v (builds included)", time.Since(start).Round(time.Millisecond))
}

// TestGuestHangs never ends in the guest that TestRunTimeout starts.
func TestGuestHangs(t *testing.T) {
	if !vmtest.InVM() || os.Getenv("VMTEST_HANG") != "1" {
		t.Skip("hangs on purpose only in the guest started by TestRunTimeout")
	}
	time.Sleep(time.Hour) // a timer, unlike select {}, keeps the runtime from declaring a deadlock
}

// TestRunNoStatus checks that a guest that never reaches the test (no init: the kernel panics, and
// panic=-1 with -no-reboot ends qemu) is reported as ErrNoStatus, not as a pass or a timeout.
func TestRunNoStatus(t *testing.T) {
	if vmtest.InVM() {
		t.Fatal("host-only test ran in the guest")
	}
	out, err := vmtest.Run(t, "TestGuestFails", vmtest.Options{Cmdline: "rdinit=/nonexistent", Timeout: time.Minute})
	if !errors.Is(err, vmtest.ErrNoStatus) {
		t.Fatalf("Run = %v, want ErrNoStatus", err)
	}
	if !strings.Contains(out, "Kernel panic") {
		t.Errorf("the console shows no kernel panic:\n%s", out)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
