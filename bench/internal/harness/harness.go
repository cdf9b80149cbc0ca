// Package harness is what the benchmark tools under bench/cmd share: control of the kernel's audit
// subsystem, child processes, and the machine facts and files a run reports.
//
// Its invariants are the ones every run depends on:
//   - kernel audit state is global to the machine, so a Kernel holds the machine-wide lock
//     (internal/kernlock) from OpenKernel until Close, and Close puts back the status and rules that
//     OpenKernel found, whatever happened in between;
//   - every child a Proc runs is in a process group of its own, so a Ctrl-C on the terminal reaches only
//     the harness, and Proc.Stop ends the child and then whatever is left in its group.
//
// It may use the syscall package (scripts/boundaries.sh exempts bench/): os/exec takes process groups and
// clone flags only as a syscall.SysProcAttr.
package harness

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/store"
)

// PrepareOut makes out absolute, creates out/bin (for the programs a run builds or copies) and removes
// out/run (the previous run's files, after clearing the immutable flag auditarch's store sets on sealed
// segments). It returns the absolute path.
func PrepareOut(out string) (string, error) {
	abs, err := filepath.Abs(out)
	if err != nil {
		return "", fmt.Errorf("output dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(abs, "bin"), 0o750); err != nil {
		return "", fmt.Errorf("output dir: %w", err)
	}
	store.ClearImmutable(filepath.Join(abs, "run"))
	if err := os.RemoveAll(filepath.Join(abs, "run")); err != nil {
		return "", fmt.Errorf("clean previous run: %w", err)
	}
	return abs, nil
}

// CopyFile copies the program src to dst (mode 0755), on a new inode, so an exe= rule on the copy matches
// only the copy. An existing dst is removed first.
func CopyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	os.Remove(dst)
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}

// WriteJSON writes v to path as indented JSON with a final newline (mode 0644).
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// LoadAvg returns the 1, 5 and 15 minute load averages from /proc/loadavg, space-separated, or "?".
func LoadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// KernelRelease returns the running kernel's release (uname -r), or "" if uname fails.
func KernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// KernelHZ reads CONFIG_HZ (the unit of backlog_wait_time) from /proc/config.gz or
// /boot/config-RELEASE, or returns 0 when neither says.
func KernelHZ() int {
	var r io.Reader
	if f, err := os.Open("/proc/config.gz"); err == nil {
		defer f.Close()
		if zr, err := gzip.NewReader(f); err == nil {
			r = zr
		}
	}
	if r == nil {
		release := KernelRelease()
		if release == "" {
			return 0
		}
		f, err := os.Open("/boot/config-" + release)
		if err != nil {
			return 0
		}
		defer f.Close()
		r = f
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CONFIG_HZ="); ok {
			var hz int
			fmt.Sscan(v, &hz)
			return hz
		}
	}
	return 0
}
