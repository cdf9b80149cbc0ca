package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"

	"github.com/auditarch/auditarch/internal/privtest"
)

// The confined process is this test binary re-executed with envChild set to a directory holding rw/,
// ro/ro.txt and outside/; envPorts holds the allowed and a refused TCP port, both listening. It starts
// threads, applies the sandbox, runs every check and prints one line per check: "check NAME ok" or
// "check NAME FAIL: why".
const (
	envChild = "AUDITARCH_SANDBOX_CHILD"
	envPorts = "AUDITARCH_SANDBOX_PORTS"
)

// keep are the capabilities the child keeps: all others must be gone.
var keep = []cap.Value{cap.KILL, cap.AUDIT_CONTROL}

func TestMain(m *testing.M) {
	if dir := os.Getenv(envChild); dir != "" {
		os.Exit(child(dir))
	}
	os.Exit(m.Run())
}

func child(dir string) int {
	ports := strings.Fields(os.Getenv(envPorts))
	allowed, _ := strconv.Atoi(ports[0])
	// Threads that exist before Apply, each locked to its goroutine: TSYNC and psx must reach them.
	var before sync.WaitGroup
	release := make(chan struct{})
	tids := make(chan int, 4)
	for range 4 {
		before.Add(1)
		go func() {
			defer before.Done()
			runtime.LockOSThread()
			tids <- unix.Gettid()
			<-release
		}()
	}
	for range 4 {
		<-tids
	}
	rep, err := Apply(Options{
		ReadWrite:  []string{filepath.Join(dir, "rw")},
		ReadOnly:   []string{filepath.Join(dir, "ro", "ro.txt"), "/proc"},
		ConnectTCP: []uint16{uint16(allowed)},
		Keep:       keep,
	})
	if err != nil {
		fmt.Println("check apply FAIL:", err)
		return 1
	}
	fmt.Println("report", rep)
	check := func(name string, err error) {
		if err != nil {
			fmt.Printf("check %s FAIL: %v\n", name, err)
			return
		}
		fmt.Printf("check %s ok\n", name)
	}
	runChecks(dir, ports, check)
	// The same file checks from the threads that existed before Apply.
	for i := range 2 {
		done := make(chan error)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			done <- wantErrno(os.WriteFile(filepath.Join(dir, "outside", "t"+strconv.Itoa(i)), nil, 0o600), unix.EACCES)
		}()
		check("thread-"+strconv.Itoa(i)+"-write-outside", <-done)
	}
	close(release)
	before.Wait()
	check("threads", allThreads(rep))
	return 0
}

// wantErrno is nil if err is errno, else an error saying what happened.
func wantErrno(err error, errno unix.Errno) error {
	if errors.Is(err, errno) {
		return nil
	}
	return fmt.Errorf("got %v, want %v", err, errno)
}

// raw makes a system call and returns its errno (nil on success).
func raw(nr uintptr, a ...uintptr) error {
	var args [6]uintptr
	copy(args[:], a)
	_, _, e := unix.Syscall6(nr, args[0], args[1], args[2], args[3], args[4], args[5])
	if e != 0 {
		return e
	}
	return nil
}

func runChecks(dir string, ports []string, check func(string, error)) {
	check("write-outside", wantErrno(os.WriteFile(filepath.Join(dir, "outside", "x"), nil, 0o600), unix.EACCES))
	check("write-allowed", os.WriteFile(filepath.Join(dir, "rw", "x"), []byte("x"), 0o600))
	check("rename-allowed", os.Rename(filepath.Join(dir, "rw", "x"), filepath.Join(dir, "rw", "y")))
	check("write-readonly", wantErrno(os.WriteFile(filepath.Join(dir, "ro", "ro.txt"), nil, 0o600), unix.EACCES))
	_, err := os.ReadFile(filepath.Join(dir, "ro", "ro.txt"))
	check("read-readonly", err)
	_, err = os.ReadFile("/etc/hostname")
	check("read-outside", wantErrno(err, unix.EACCES))
	check("execve", wantErrno(unix.Exec("/bin/true", []string{"true"}, nil), unix.EPERM))
	check("ptrace", wantErrno(raw(unix.SYS_PTRACE, unix.PTRACE_ATTACH, uintptr(os.Getppid())), unix.EPERM))
	check("disallowed-syscall", wantErrno(raw(unix.SYS_GETPRIORITY, unix.PRIO_PROCESS, 0), unix.EPERM))
	check("mount", wantErrno(unix.Mount("none", filepath.Join(dir, "rw"), "tmpfs", 0, ""), unix.EPERM))
	check("socket-packet", wantErrno(raw(unix.SYS_SOCKET, unix.AF_PACKET, unix.SOCK_RAW, 0), unix.EPERM))
	check("prctl", wantErrno(raw(unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, 1), unix.EPERM))
	check("ioctl-tiocsti", wantErrno(raw(unix.SYS_IOCTL, 0, unix.TIOCSTI, 0), unix.EPERM))
	check("fork", wantErrno(fork(), unix.EPERM))

	// kill: one positive pid, read from the low 32 bits only.
	ppid := uintptr(os.Getppid())
	check("kill-pid", raw(unix.SYS_KILL, ppid, 0))
	check("kill-all", wantErrno(raw(unix.SYS_KILL, 0xffffffff, 0), unix.EPERM))              // -1 as pid_t
	check("kill-all-bypass", wantErrno(raw(unix.SYS_KILL, 1<<32|0xffffffff, 0), unix.EPERM)) // still -1 to the kernel
	check("kill-group-bypass", wantErrno(raw(unix.SYS_KILL, 1<<32|uintptr(uint32(-int32(ppid))), 0), unix.EPERM))
	check("kill-own-group", wantErrno(raw(unix.SYS_KILL, 0, 0), unix.EPERM))
	check("kill-high-bits", raw(unix.SYS_KILL, 1<<32|ppid, 0)) // the kernel signals ppid: the filter saw ppid too
	pid, tid := uintptr(os.Getpid()), uintptr(unix.Gettid())
	check("tgkill-self", raw(unix.SYS_TGKILL, pid, tid, 0))
	check("tgkill-other", wantErrno(raw(unix.SYS_TGKILL, ppid, ppid, 0), unix.EPERM))
	check("tgkill-bypass", wantErrno(raw(unix.SYS_TGKILL, uintptr(pid)<<32|ppid, ppid, 0), unix.EPERM))
	check("pidfd-send-signal", wantErrno(raw(unix.SYS_PIDFD_SEND_SIGNAL, 0, 0, 0, 0), unix.EPERM))

	// TCP: connect only to the allowed port, bind nothing.
	c, err := net.Dial("tcp", "127.0.0.1:"+ports[0])
	if err == nil {
		c.Close()
	}
	check("connect-allowed", err)
	_, err = net.Dial("tcp", "127.0.0.1:"+ports[1])
	check("connect-refused", wantErrno(err, unix.EACCES))
	_, err = net.Listen("tcp", "127.0.0.1:0")
	check("bind", wantErrno(err, unix.EPERM))

	// Capabilities: only those kept, in the effective and bounding sets; none inheritable or ambient.
	want := uint64(0)
	for _, v := range keep {
		want |= 1 << v
	}
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		check("caps", err)
		return
	}
	var capErr error
	for field, w := range map[string]uint64{"CapEff": want, "CapPrm": want, "CapBnd": want, "CapInh": 0, "CapAmb": 0} {
		got, err := strconv.ParseUint(statusField(string(st), field), 16, 64)
		if err != nil || got != w {
			capErr = errors.Join(capErr, fmt.Errorf("%s %x, want %x", field, got, w))
		}
	}
	check("caps", capErr)
}

// fork tries clone(SIGCHLD) — a new process, not a thread. If the filter let it through, the child
// exits at once.
func fork() error {
	r, _, e := unix.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if e != 0 {
		return e
	}
	if r == 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
	}
	return fmt.Errorf("clone made process %d", r)
}

// allThreads checks that every thread, those from before Apply and one started after, carries the
// filter, no_new_privs and the reduced capabilities, and that the report counted them.
func allThreads(rep Report) error {
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // a thread of its own, likely new
		defer runtime.UnlockOSThread()
		_, err := checkThreads()
		done <- err
	}()
	if err := <-done; err != nil {
		return err
	}
	if rep.Threads < 5 {
		return fmt.Errorf("report counted %d threads, want at least the 4 started before Apply and this one", rep.Threads)
	}
	return nil
}

func TestApply(t *testing.T) {
	privtest.Root(t)
	if abi, err := ll.LandlockGetABIVersion(); err != nil || abi < 4 {
		privtest.Unavailable(t, "needs Landlock ABI 4 (file and TCP rules); have %d (%v)", abi, err)
	}
	dir := t.TempDir()
	for _, d := range []string{"rw", "ro", "outside"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "ro", "ro.txt"), []byte("ro"), 0o600); err != nil {
		t.Fatal(err)
	}
	var ports []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		ports = append(ports, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+dir, envPorts+"="+strings.Join(ports, " "))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s\n%s", err, out, stderr.String())
	}
	checks := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if r, ok := strings.CutPrefix(line, "report "); ok {
			t.Log(r)
			continue
		}
		name, result, _ := strings.Cut(strings.TrimPrefix(line, "check "), " ")
		checks++
		if result != "ok" {
			t.Errorf("%s: %s", name, result)
		}
	}
	if checks < 30 {
		t.Errorf("only %d checks ran:\n%s\n%s", checks, out, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "outside", "x")); err == nil {
		t.Errorf("the confined child wrote outside its directories")
	}
}

// TestFilterRejectsDenied: an allowlist that names a denied call is refused before anything is applied.
func TestFilterRejectsDenied(t *testing.T) {
	if _, err := Apply(Options{Syscalls: []string{"execve"}}); err == nil {
		t.Fatal("Apply took execve in its allowlist")
	}
	for _, n := range Allowed {
		for _, d := range Denied {
			if n == d {
				t.Errorf("%s is both allowed and denied", n)
			}
		}
	}
	if _, err := filter(Allowed, 1); err != nil {
		t.Fatal(err)
	}
}
