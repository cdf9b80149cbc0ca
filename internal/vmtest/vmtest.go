// Package vmtest runs a Go test inside a qemu virtual machine booted with a kernel command line of the
// test's choosing, for what the host kernel cannot be made to do: boot options such as
// audit=1 audit_backlog_limit=8192 (the kernel's hold queue before a daemon registers) or
// lsm=landlock,lockdown,yama,bpf (BPF LSM programs, which this host refuses).
//
// A test is written once and runs on both sides:
//
//	func TestHoldQueue(t *testing.T) {
//		if !vmtest.InVM() {
//			vmtest.RunTest(t, "TestHoldQueue", vmtest.Options{Cmdline: "audit=1 audit_backlog_limit=8192"})
//			return
//		}
//		// the guest body: root, a fresh kernel, nothing else running
//	}
//
// On the host, RunTest builds the test binary of the package under test statically (CGO_ENABLED=0
// go test -c) and a tiny init (package guestinit) into the test's temporary directory, packs both with
// Options.Files into an uncompressed newc cpio initramfs written here (no cpio library: the format is a
// 110-byte text header per file), and boots
//
//	qemu-system-x86_64 -accel tcg -m 1024 -smp 2 -nodefaults -display none -serial stdio -no-reboot
//	    -kernel vmlinuz -initrd initramfs.cpio -append "console=ttyS0 panic=-1 quiet <Options.Cmdline>"
//
// In the guest, init mounts proc, sysfs, devtmpfs, devpts, securityfs, cgroup2 (/sys/fs/cgroup), bpffs
// (/sys/fs/bpf), debugfs and tracefs (if the kernel has them), tmpfs on /tmp and /run, brings up lo, runs
// the test binary as root in / with -test.run '^NAME$' -test.v and AUDITARCH_IN_VM=1 (plus
// AUDITARCH_REQUIRE_PRIVILEGED as the host has it), prints an exit marker (package guest) and powers off.
// The serial console is streamed into the host test's log; the host test passes only if the guest printed
// "--- PASS: NAME" and exited 0, and skips if the guest test skipped. The guest loads no kernel modules: the console (8250 serial) is the only
// channel out, and everything a guest test needs must be built into the kernel.
//
// Invariant: qemu never outlives the call that started it. It is killed by pid on Options.Timeout and
// again, unconditionally, when the test ends.
//
// What it needs on the host, installed by scripts/deps.sh: qemu-system-x86_64, a go tool on PATH, and
// Debian's linux-image-6.1.0-*-cloud-amd64 unpacked (not installed) with DefaultKernel pointing at its
// vmlinuz (AUDITARCH_VM_KERNEL overrides it). That kernel has audit, BPF LSM, BTF, cgroup2 and bpffs built
// in. A missing piece goes through privtest.Unavailable: a skip on a laptop, a failure in CI. Root is not
// needed on the host. KVM is never used: on these machines -enable-kvm hangs, so the guest is emulated.
//
// Cost, measured on the 2-core development machine (go test -v -run '^TestGuestKernel$' ./internal/vmtest/,
// five runs): the kernel reaches init 2.1-3.2 s after qemu starts, init mounts and configures in about
// 0.1 s, and the guest test has passed and printed its exit marker 3.4-4.8 s after qemu started; the host
// test takes 4.5-6.7 s in all, builds (cached) and initramfs (about 6 MB, written uncompressed) included.
// This package's own tests (four boots) take about 15 s alone and 24 s within the whole suite.
// The first build on a machine compiles the standard library for CGO_ENABLED=0 once: about 35 s more.
// Each guest costs up to 1 GiB of memory and two busy host threads while it runs.
package vmtest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/internal/vmtest/guest"
)

const (
	// EnvInVM is set to 1 in the guest test's environment.
	EnvInVM = "AUDITARCH_IN_VM"
	// EnvKernel, if set, names the kernel image to boot instead of DefaultKernel.
	EnvKernel = "AUDITARCH_VM_KERNEL"
	// DefaultKernel is where scripts/deps.sh links the unpacked cloud kernel's vmlinuz.
	DefaultKernel = "/var/cache/auditarch/vm/vmlinuz"
	// DefaultTimeout bounds a guest run (boot, test, power off) when Options.Timeout is zero.
	DefaultTimeout = 3 * time.Minute

	qemuBinary   = "qemu-system-x86_64"
	baseCmdline  = "console=ttyS0 panic=-1 quiet"
	guestInitPkg = "github.com/auditarch/auditarch/internal/vmtest/guestinit"
	guestTestBin = "/vmtest/test.bin"
	// guestTimeoutMargin is how much earlier than the host's timeout the guest's -test.timeout fires, so
	// that a hung guest test prints its goroutines before qemu is killed.
	guestTimeoutMargin = 15 * time.Second
)

// Errors Run returns for what happened in the guest; each is wrapped with details.
var (
	ErrFailed   = errors.New("guest test failed")
	ErrSkipped  = errors.New("guest test skipped")
	ErrTimeout  = errors.New("guest timed out")
	ErrNoStatus = errors.New("guest ended without reporting an exit status") // a kernel panic, a crashed init
)

// Options configure one guest run. The zero value boots with the base command line, 1024 MiB and 2 CPUs.
type Options struct {
	// Cmdline is appended to the kernel command line "console=ttyS0 panic=-1 quiet",
	// e.g. "audit=1 audit_backlog_limit=8192" or "lsm=landlock,lockdown,yama,bpf".
	Cmdline string
	// Files maps a guest path (absolute, or relative to /, the guest test's working directory) to a host
	// file or directory to copy there, e.g. {"/usr/sbin/auditarch": vmtest.BuildStatic(t, "./cmd/auditarch")}
	// or {"testdata": "testdata"}. Permission bits are kept.
	Files map[string]string
	// Env holds KEY=value pairs added to the guest test's environment.
	Env []string
	// Args are appended to the guest test binary's arguments (after -test.run, -test.v, -test.count=1,
	// -test.timeout and, if the host test runs with -short, -test.short).
	Args []string
	// Timeout bounds the guest run from qemu's start to its exit; 0 means DefaultTimeout. It is shortened
	// to end before the host test binary's own -timeout.
	Timeout time.Duration
	// MemoryMB is the guest's memory; 0 means 1024. The initramfs lives in it.
	MemoryMB int
	// CPUs is the guest's number of CPUs; 0 means 2.
	CPUs int
	// Package is the directory of the package whose test binary runs in the guest; "" means the package
	// under test (the test binary's starting directory).
	Package string
}

// InVM reports whether this process runs inside a vmtest guest.
func InVM() bool { return os.Getenv(EnvInVM) == "1" }

// Kernel returns the path of the kernel image to boot, or marks the test unavailable (privtest) when it or
// qemu is missing.
func Kernel(tb testing.TB) string {
	tb.Helper()
	k := os.Getenv(EnvKernel)
	if k == "" {
		k = DefaultKernel
	}
	if _, err := os.Stat(k); err != nil {
		privtest.Unavailable(tb, "needs a VM kernel at %s (make deps unpacks one): %v", k, err)
	}
	qemu(tb)
	return k
}

// qemu returns the path of qemu-system-x86_64, or marks the test unavailable.
func qemu(tb testing.TB) string {
	tb.Helper()
	p, err := exec.LookPath(qemuBinary)
	if err != nil {
		privtest.Unavailable(tb, "needs %s on PATH (make deps installs qemu-system-x86)", qemuBinary)
	}
	return p
}

// goTool returns the go command that builds the guest's binaries.
func goTool(tb testing.TB) string {
	tb.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(build.Default.GOROOT, "bin", "go")
	if _, err := os.Stat(p); err != nil {
		privtest.Unavailable(tb, "needs the go command to build the guest's binaries")
	}
	return p
}

// goBuild runs the go command in dir with the environment of a static linux/amd64 build. The symbol table
// and DWARF are left out (-s -w) to keep the initramfs small; panics still name functions.
func goBuild(tb testing.TB, dir string, args ...string) {
	tb.Helper()
	args = append(args[:1:1], append([]string{"-ldflags=-s -w"}, args[1:]...)...)
	cmd := exec.Command(goTool(tb), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("vmtest: go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
}

// BuildStatic builds the main package pkg statically for the guest and returns the binary's path in a
// temporary directory of tb. pkg is an import path or a path relative to the module root
// ("./cmd/auditarch"). Ship it with Options.Files.
func BuildStatic(tb testing.TB, pkg string) string {
	tb.Helper()
	root := moduleRoot(tb)
	out := filepath.Join(tb.TempDir(), filepath.Base(pkg))
	goBuild(tb, root, "build", "-o", out, pkg)
	return out
}

// moduleRoot is the directory of the go.mod that encloses the working directory.
func moduleRoot(tb testing.TB) string {
	tb.Helper()
	cmd := exec.Command(goTool(tb), "env", "GOMOD")
	out, err := cmd.Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		tb.Fatalf("vmtest: no go.mod encloses the working directory (go env GOMOD: %q, %v)", gomod, err)
	}
	return filepath.Dir(gomod)
}

// packageDir is the directory of the package under test: go test starts a test binary in it. It is read
// before any test runs, so a test that changes directory does not move it, and unlike the caller's source
// file it stays right when Run is called through a helper in another package.
var packageDir, packageDirErr = os.Getwd()

// RunTest runs the test name of the calling package in a guest (see Run) and fails t unless it passed
// there; a test the guest skipped is skipped on the host too.
func RunTest(t *testing.T, name string, opts Options) {
	t.Helper()
	_, err := Run(t, name, opts)
	switch {
	case errors.Is(err, ErrSkipped):
		t.Skip(err)
	case err != nil:
		t.Fatal(err)
	}
}

// Run runs the test name (a top-level test, or TEST/SUBTEST) of the calling package in a fresh guest and
// returns the guest's console output. The error is nil if the guest printed "--- PASS: name" and its test
// binary exited 0, and otherwise wraps ErrFailed, ErrSkipped, ErrTimeout or ErrNoStatus. Problems on the
// host side (no kernel or qemu: privtest.Unavailable; a build error) end t instead. Each console line is
// also written to t's log as it arrives.
func Run(t *testing.T, name string, opts Options) (output string, err error) {
	t.Helper()
	if InVM() {
		t.Fatal("vmtest: Run called inside the guest (guard the host side with vmtest.InVM)")
	}
	kernel := Kernel(t)
	qemuPath := qemu(t)
	dir := opts.Package
	if dir == "" {
		if packageDirErr != nil {
			t.Fatalf("vmtest: package directory: %v", packageDirErr)
		}
		dir = packageDir
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if dl, ok := t.Deadline(); ok && time.Until(dl)-5*time.Second < timeout {
		timeout = time.Until(dl) - 5*time.Second
	}
	if timeout <= 0 {
		t.Fatal("vmtest: no time left before the test binary's -timeout")
	}

	tmp := t.TempDir()
	testBin := filepath.Join(tmp, "test.bin")
	initBin := filepath.Join(tmp, "init")
	goBuild(t, dir, "test", "-c", "-o", testBin, ".")
	goBuild(t, dir, "build", "-o", initBin, guestInitPkg)

	initrd := filepath.Join(tmp, "initramfs.cpio")
	if err := writeInitramfs(initrd, initBin, testBin, guestConfig(name, opts, timeout), opts.Files); err != nil {
		t.Fatalf("vmtest: initramfs: %v", err)
	}

	args := []string{
		"-accel", "tcg", // never kvm: it hangs on these machines
		"-m", fmt.Sprint(orDefault(opts.MemoryMB, 1024)),
		"-smp", fmt.Sprint(orDefault(opts.CPUs, 2)),
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
		"-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", strings.TrimSpace(baseCmdline + " " + opts.Cmdline),
	}
	return boot(t, qemuPath, args, name, timeout)
}

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// guestConfig is the run configuration init reads in the guest.
func guestConfig(name string, opts Options, timeout time.Duration) guest.Config {
	var anchored []string
	for _, part := range strings.Split(name, "/") {
		anchored = append(anchored, "^"+part+"$")
	}
	guestTimeout := timeout - guestTimeoutMargin
	if guestTimeout < timeout/2 {
		guestTimeout = timeout / 2
	}
	argv := []string{guestTestBin,
		"-test.run", strings.Join(anchored, "/"), "-test.v", "-test.count=1",
		"-test.timeout", guestTimeout.String(),
	}
	if testing.Short() {
		argv = append(argv, "-test.short")
	}
	env := []string{EnvInVM + "=1"}
	if v, ok := os.LookupEnv(privtest.EnvRequire); ok {
		env = append(env, privtest.EnvRequire+"="+v)
	}
	return guest.Config{Argv: append(argv, opts.Args...), Env: append(env, opts.Env...), Dir: "/"}
}

// writeInitramfs writes the guest's root file system: /init, /dev/console (the kernel opens it for init
// before devtmpfs is mounted), the run configuration, the test binary and the extra files.
func writeInitramfs(path, initBin, testBin string, cfg guest.Config, files map[string]string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	w := newCPIOWriter(f)
	w.charDev("/dev/console", 0o600, 5, 1)
	w.hostFile("/init", initBin)
	w.file(guest.ConfigPath, 0o644, int64(len(cfgJSON)), strings.NewReader(string(cfgJSON)))
	w.hostFile(guestTestBin, testBin)
	for g, h := range files {
		w.hostFile(g, h)
	}
	if err := w.close(); err != nil {
		return err
	}
	return f.Close()
}

// boot runs qemu, streams its console into t's log and judges the guest test's result.
func boot(t *testing.T, qemuPath string, args []string, name string, timeout time.Duration) (string, error) {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	defer pr.Close()
	cmd := exec.Command(qemuPath, args...)
	cmd.Stdout, cmd.Stderr = pw, pw
	start := time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		t.Fatalf("vmtest: start qemu: %v", err)
	}
	pw.Close()

	var (
		mu       sync.Mutex
		timedOut bool
		exited   bool
	)
	kill := func(onTimeout bool) {
		mu.Lock()
		defer mu.Unlock()
		if !exited {
			timedOut = timedOut || onTimeout
			_ = cmd.Process.Kill()
		}
	}
	timer := time.AfterFunc(timeout, func() { kill(true) })
	defer timer.Stop()
	t.Cleanup(func() { kill(false) })

	var (
		out      strings.Builder
		status   = 0
		reported = false
		ended    time.Duration
	)
	rd := bufio.NewReaderSize(pr, 64<<10)
	for {
		line, err := rd.ReadString('\n')
		if line == "" && err != nil {
			break // EOF once qemu has exited
		}
		line = strings.TrimRight(line, "\r\n")
		out.WriteString(line)
		out.WriteByte('\n')
		t.Log(line)
		if s, ok := guest.ParseExit(line); ok {
			status, reported, ended = s, true, time.Since(start)
		}
	}
	waitErr := cmd.Wait()
	mu.Lock()
	exited = true
	mu.Unlock()
	output := out.String()

	switch {
	case !reported && timedOut: // a guest that reported just before the kill is judged on its report
		return output, fmt.Errorf("%w: %s after %v", ErrTimeout, name, timeout)
	case !reported:
		return output, fmt.Errorf("%w: %s (qemu: %v)", ErrNoStatus, name, waitErr)
	case status != 0:
		return output, fmt.Errorf("%w: %s exited with status %d", ErrFailed, name, status)
	case strings.Contains(output, "--- PASS: "+name+" ("):
		t.Logf("vmtest: %s passed in the guest %v after qemu started", name, ended.Round(time.Millisecond))
		return output, nil
	case strings.Contains(output, "--- SKIP: "+name+" ("):
		return output, fmt.Errorf("%w: %s", ErrSkipped, name)
	default:
		return output, fmt.Errorf("%w: %s did not run in the guest (no such test?)", ErrFailed, name)
	}
}
