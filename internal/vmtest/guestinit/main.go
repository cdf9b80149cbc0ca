// Command guestinit is the /init of a vmtest guest: it mounts the kernel's file systems, brings up the
// loopback interface, runs the program named in the run's configuration (guest.ConfigPath) with its
// output on the console, prints the exit marker (guest.ExitLine) and powers the machine off.
//
// It is built statically by the vmtest harness; it is not meant to be run on a host.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/internal/vmtest/guest"
)

// mount is one file system init mounts. Optional ones may be missing from the kernel.
type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	optional               bool
}

const sysFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// mounts are in order: a target's parent is mounted before it.
var mounts = []mount{
	{"proc", "/proc", "proc", sysFlags, "", false},
	{"sysfs", "/sys", "sysfs", sysFlags, "", false},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", false},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "ptmxmode=0666", true},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "", true},
	{"securityfs", "/sys/kernel/security", "securityfs", sysFlags, "", false},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", sysFlags, "nsdelegate", false},
	{"bpffs", "/sys/fs/bpf", "bpf", sysFlags, "mode=0700", false},
	{"debugfs", "/sys/kernel/debug", "debugfs", sysFlags, "", true},
	{"tracefs", "/sys/kernel/tracing", "tracefs", sysFlags, "", true},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", false},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", false},
}

// baseEnv is the environment of the program before the configuration's additions.
var baseEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/root", "TMPDIR=/tmp"}

func main() {
	start := time.Now()
	status := -1
	if err := setup(); err != nil {
		fmt.Fprintf(os.Stderr, "guestinit: error: %v\n", err)
	} else {
		status = run(start)
	}
	fmt.Fprintf(os.Stdout, "\n%s\n", guest.ExitLine(status))
	// Wait until the console has sent everything (tcdrain) before the machine goes away.
	_ = unix.IoctlSetInt(1, unix.TCSBRK, 1)
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Still here: exiting panics the kernel, which with panic=-1 and qemu's -no-reboot also ends the VM.
	fmt.Fprintf(os.Stderr, "guestinit: error: power off: %v\n", err)
	os.Exit(1)
}

// setup mounts the file systems, creates the directories programs expect and brings up loopback.
func setup() error {
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			if m.optional {
				fmt.Fprintf(os.Stderr, "guestinit: %s not mounted on %s: %v\n", m.fstype, m.target, err)
				continue
			}
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	for _, d := range []string{"/run/lock", "/root", "/var/tmp"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Sethostname([]byte("vmtest")); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	return loopbackUp()
}

// loopbackUp sets IFF_UP on lo, as tests that listen on 127.0.0.1 need.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// run starts the configured program and returns its exit status (-1 if it could not run or was killed by
// a signal).
func run(start time.Time) int {
	b, err := os.ReadFile(guest.ConfigPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "guestinit: error: %v\n", err)
		return -1
	}
	var cfg guest.Config
	if err := json.Unmarshal(b, &cfg); err != nil || len(cfg.Argv) == 0 {
		fmt.Fprintf(os.Stderr, "guestinit: error: bad %s: %v\n", guest.ConfigPath, err)
		return -1
	}
	cmd := exec.Command(cfg.Argv[0], cfg.Argv[1:]...)
	cmd.Env = append(append([]string(nil), baseEnv...), cfg.Env...)
	cmd.Dir = cfg.Dir
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	uptime, _ := os.ReadFile("/proc/uptime") // seconds since the kernel started, then idle seconds
	up, _, _ := strings.Cut(string(uptime), " ")
	fmt.Fprintf(os.Stdout, "guestinit: kernel up %ss, init set up in %v, running %q\n",
		up, time.Since(start).Round(time.Millisecond), cfg.Argv)
	err = cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exitErr):
		fmt.Fprintf(os.Stdout, "guestinit: %v\n", exitErr)
		return exitErr.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "guestinit: error: %v\n", err)
		return -1
	}
}
