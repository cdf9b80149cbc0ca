package policy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/internal/kernlock"
	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/internal/vmtest"
)

// The attacker is this test binary re-executed with envAttack set: it starts its own session, then for each
// round writes 'B' to stdout, reads CLOCK_BOOTTIME, makes the system call, and writes 'A' and that time (8
// bytes). A stop that comes before the system call returns to user space is seen as a missing 'A'.
const (
	envAttack = "AUDITARCH_POLICY_ATTACK" // method
	envTarget = "AUDITARCH_POLICY_TARGET" // pid, or object id for bpf methods
	envSignal = "AUDITARCH_POLICY_SIGNAL"
	envRounds = "AUDITARCH_POLICY_ROUNDS"
	envPath   = "AUDITARCH_POLICY_PATH"  // the file the file methods act on
	envPath2  = "AUDITARCH_POLICY_PATH2" // rename's and link's new name
	envData   = "AUDITARCH_POLICY_DATA"  // what write writes
	envWait   = "AUDITARCH_POLICY_WAIT"  // 1: read a byte from stdin before the first round (time to Protect it)
)

func TestMain(m *testing.M) {
	if method := os.Getenv(envAttack); method != "" {
		if err := attack(method); err != nil {
			fmt.Fprintln(os.Stderr, "attacker:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	// The programs these tests attach act machine-wide, as do the protected daemons of cmd/auditarch's
	// tests, which go test runs at the same time: a sender one of them stops, or a serial the other's
	// activity takes, fails the other. The package holds the machine-wide kernel lock throughout.
	release := func() {}
	if os.Geteuid() == 0 && !vmtest.InVM() {
		r, err := kernlock.Acquire(context.Background(), func() { fmt.Fprintln(os.Stderr, "policy: waiting for the kernel lock") })
		if err != nil {
			fmt.Fprintln(os.Stderr, "policy:", err)
			os.Exit(1)
		}
		release = r
	}
	code := m.Run()
	release()
	os.Exit(code)
}

func attack(method string) error {
	runtime.LockOSThread() // the system calls come from the main thread: the record's pid is the process id
	if _, err := unix.Setsid(); err != nil {
		return fmt.Errorf("setsid: %w", err)
	}
	target, _ := strconv.Atoi(os.Getenv(envTarget))
	sig, _ := strconv.Atoi(os.Getenv(envSignal))
	rounds, _ := strconv.Atoi(os.Getenv(envRounds))
	if rounds == 0 {
		rounds = 1
	}
	if os.Getenv(envWait) == "1" {
		var b [1]byte
		if _, err := os.Stdin.Read(b[:]); err != nil {
			return fmt.Errorf("wait: %w", err)
		}
	}
	var after [9]byte
	after[0] = 'A'
	for range rounds {
		if _, err := os.Stdout.Write([]byte{'B'}); err != nil {
			return err
		}
		var ts unix.Timespec
		unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
		err := send(method, target, unix.Signal(sig))
		if err != nil {
			fmt.Fprintf(os.Stderr, "attacker: %s: %v\n", method, err)
		}
		binary.NativeEndian.PutUint64(after[1:], uint64(ts.Nano()))
		if _, err := os.Stdout.Write(after[:]); err != nil {
			return err
		}
	}
	return nil
}

// send is one attack on pid by method.
func send(method string, pid int, sig unix.Signal) error {
	switch method {
	case "kill":
		return unix.Kill(pid, sig)
	case "tgkill":
		return unix.Tgkill(pid, pid, sig)
	case "kill64": // pid | 1<<32: the kernel truncates to pid_t, a filter comparing 64 bits does not
		_, _, e := unix.Syscall(unix.SYS_KILL, uintptr(pid)|1<<32, uintptr(sig), 0)
		if e != 0 {
			return e
		}
		return nil
	case "sigqueue":
		var info unix.Siginfo
		info.Signo = int32(sig)
		info.Code = -1 // SI_QUEUE
		_, _, e := unix.Syscall(unix.SYS_RT_SIGQUEUEINFO, uintptr(pid), uintptr(sig), uintptr(unsafe.Pointer(&info)))
		if e != 0 {
			return e
		}
		return nil
	case "pidfd":
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.PidfdSendSignal(fd, sig, nil, 0)
	case "procfd": // a /proc/PID directory fd is accepted as a pidfd
		fd, err := unix.Open("/proc/"+strconv.Itoa(pid), unix.O_DIRECTORY|unix.O_RDONLY, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.PidfdSendSignal(fd, sig, nil, 0)
	case "self": // a signal to itself, then to pid
		if err := unix.Kill(os.Getpid(), unix.SIGWINCH); err != nil {
			return err
		}
		return unix.Kill(pid, sig)
	case "killpg": // the target's process group (it leads its own session)
		return unix.Kill(-pid, sig)
	case "tgkill-thread": // a thread of the target other than its main one
		ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
		if err != nil {
			return err
		}
		for _, e := range ents {
			if tid, _ := strconv.Atoi(e.Name()); tid != pid && tid > 0 {
				return unix.Tgkill(pid, tid, sig)
			}
		}
		return fmt.Errorf("no thread of %d but the main one", pid)
	case "procmem-write":
		fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/mem", unix.O_RDWR, 0)
		if err != nil {
			return err
		}
		return unix.Close(fd)
	case "sigio": // the target made owner of a pipe with O_ASYNC, then data written to it
		var p [2]int
		if err := unix.Pipe(p[:]); err != nil {
			return err
		}
		defer unix.Close(p[0])
		defer unix.Close(p[1])
		if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_SETOWN, pid); err != nil {
			return err
		}
		if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_SETFL, unix.O_ASYNC|unix.O_NONBLOCK); err != nil {
			return err
		}
		_, err := unix.Write(p[1], []byte{'x'})
		return err
	case "victim": // a target: reports each SIGIO or SIGWINCH it receives as 'S' and the signal number
		ch := make(chan os.Signal, 16)
		signal.Notify(ch, unix.SIGIO, unix.SIGWINCH)
		for s := range ch {
			if _, err := os.Stdout.Write([]byte{'S', byte(s.(unix.Signal))}); err != nil {
				return err
			}
		}
		return nil
	case "ptrace-seize":
		return unix.PtraceSeize(pid)
	case "ptrace-attach":
		return unix.PtraceAttach(pid)
	case "vmread":
		var b [8]byte
		local := []unix.Iovec{{Base: &b[0], Len: 8}}
		remote := []unix.RemoteIovec{{Base: 0x10000, Len: 8}} // the address need not be mapped
		_, err := unix.ProcessVMReadv(pid, local, remote, 0)
		return err
	case "unlink":
		return unix.Unlink(os.Getenv(envPath))
	case "rmdir":
		return unix.Rmdir(os.Getenv(envPath))
	case "rename":
		return unix.Rename(os.Getenv(envPath), os.Getenv(envPath2))
	case "link":
		return unix.Link(os.Getenv(envPath), os.Getenv(envPath2))
	case "truncate":
		return unix.Truncate(os.Getenv(envPath), 0)
	case "open-write", "open-read", "write":
		mode := unix.O_RDONLY
		if method != "open-read" {
			mode = unix.O_WRONLY
		}
		fd, err := unix.Open(os.Getenv(envPath), mode|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if method == "write" {
			_, err = unix.Write(fd, []byte(os.Getenv(envData)))
		}
		return err
	case "umount":
		return unix.Unmount(os.Getenv(envPath), 0)
	case "audit-del-rule": // AUDIT_DEL_RULE of an empty audit_rule_data
		return auditSend(auditMsg(auditDelRule, make([]byte, 1040)))
	case "audit-set-enabled0": // AUDIT_SET enabled=0
		return auditSend(auditMsg(auditSet, auditStatus(auditStatusEnabled, 0)))
	case "audit-set-pid": // AUDIT_SET pid=self: register as the audit daemon
		return auditSend(auditMsg(auditSet, auditStatus(auditStatusPID, uint32(os.Getpid()))))
	case "audit-set-none": // AUDIT_SET changing nothing (mask 0)
		return auditSend(auditMsg(auditSet, auditStatus(0, 0)))
	case "audit-get-then-del": // AUDIT_GET, then AUDIT_DEL_RULE, in one sendmsg
		return auditSend(append(auditMsg(auditGet, nil), auditMsg(auditDelRule, make([]byte, 1040))...))
	case "audit-get":
		return auditSend(auditMsg(auditGet, nil))
	case "bpf-prog":
		attr := [3]uint32{uint32(pid)} // prog_id, next_id, open_flags
		fd, _, e := unix.Syscall(unix.SYS_BPF, bpfProgGetFDByID, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		if e != 0 {
			return e
		}
		unix.Close(int(fd))
		return nil
	}
	return fmt.Errorf("unknown method %q", method)
}

// attacker is a running attacker process and its stdout.
type attacker struct {
	cmd *exec.Cmd
	out *os.File
	pid int
}

// startAttacker starts the attacker and registers a cleanup that kills it by pid; env adds KEY=value pairs
// (envPath, envData, ...).
func startAttacker(t testing.TB, method string, target int, sig unix.Signal, rounds int, env ...string) *attacker {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envAttack+"="+method, envTarget+"="+strconv.Itoa(target),
		envSignal+"="+strconv.Itoa(int(sig)), envRounds+"="+strconv.Itoa(rounds))
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout = w
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	a := &attacker{cmd: cmd, out: r, pid: cmd.Process.Pid}
	t.Cleanup(func() {
		unix.Kill(a.pid, unix.SIGKILL) // not protected: killing it is safe
		cmd.Wait()
		r.Close()
	})
	return a
}

// before waits for the attacker's 'B': it is about to make its system call.
func (a *attacker) before(t testing.TB) {
	t.Helper()
	var b [1]byte
	a.out.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(a.out, b[:]); err != nil || b[0] != 'B' {
		t.Fatalf("attacker %d: read 'B': %q %v", a.pid, b, err)
	}
}

// ranOn reports whether the attacker has written its 'A' (run on after its system call) within d, and
// the boot-clock time it read just before the system call.
func (a *attacker) ranOn(t testing.TB, d time.Duration) (bool, time.Duration) {
	t.Helper()
	var b [9]byte
	a.out.SetReadDeadline(time.Now().Add(d))
	n, err := a.out.Read(b[:1])
	if n == 1 {
		a.out.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(a.out, b[1:]); err != nil || b[0] != 'A' {
			t.Fatalf("attacker %d: read 'A' record: %q %v", a.pid, b, err)
		}
		return true, time.Duration(binary.NativeEndian.Uint64(b[1:]))
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("attacker %d: %v", a.pid, err)
	}
	return false, 0
}

// procState returns the state letter of /proc/PID/stat ('T' for stopped), or 0 if the process is gone.
func procState(pid int) byte {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// waitState waits up to d for the process to reach state; it returns the last state seen.
func waitState(pid int, state byte, d time.Duration) byte {
	deadline := time.Now().Add(d)
	for {
		s := procState(pid)
		if s == state || time.Now().After(deadline) {
			return s
		}
		time.Sleep(time.Millisecond)
	}
}

// startDummy starts `sleep 600` as a process to protect and registers a cleanup that unprotects it (a signal
// from this unprotected test would stop the test) and kills it.
func startDummy(t testing.TB, g *Guard) int {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		if g != nil {
			g.Unprotect(pid)
		}
		unix.Kill(pid, unix.SIGKILL)
		cmd.Wait()
	})
	return pid
}

// pinDir mounts a private bpf filesystem for the test and returns a pin directory in it. The cleanup closes
// nothing itself; unmounting the filesystem releases whatever is still pinned there.
func pinDir(t testing.TB) string {
	t.Helper()
	privtest.Root(t)
	mnt := filepath.Join(t.TempDir(), "bpffs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		privtest.Unavailable(t, "mount a bpf filesystem: %v", err)
	}
	t.Cleanup(func() {
		// A link whose last reference went with its pin detaches asynchronously: in enforce mode its
		// sb_umount program may still refuse for a moment.
		var err error
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if err = unix.Unmount(mnt, unix.MNT_DETACH); err != unix.EPERM || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return filepath.Join(mnt, "auditarch")
}

// detect runs Detect on a private pin directory, with cleanups that close the guard and remove the pins.
func detect(t testing.TB, dir string) *Guard {
	t.Helper()
	g, err := Detect(Options{PinDir: dir, Buffer: 4096})
	if err != nil {
		privtest.Unavailable(t, "detect mode on this kernel: %v", err)
	}
	t.Cleanup(func() {
		g.Close()
		if err := Unpin(dir); err != nil {
			t.Errorf("unpin: %v", err)
		}
	})
	return g
}

// eventFrom waits up to d for an event whose doer is the process tgid, skipping others.
func eventFrom(t testing.TB, g *Guard, tgid int, d time.Duration) Event {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case e, ok := <-g.Events():
			if !ok {
				t.Fatal("events channel closed")
			}
			if e.TGID == tgid {
				return e
			}
			t.Logf("other event: %+v", e)
		case <-timeout:
			t.Fatalf("no event from pid %d within %v", tgid, d)
		}
	}
}

// noEventFrom checks that no event from tgid arrives within d.
func noEventFrom(t testing.TB, g *Guard, tgid int, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case e := <-g.Events():
			if e.TGID == tgid {
				t.Fatalf("unexpected event: %+v", e)
			}
		case <-timeout:
			return
		}
	}
}

// Audit netlink message types and AUDIT_SET mask bits (include/uapi/linux/audit.h).
const (
	auditGet           = 1000
	auditSet           = 1001
	auditDelRule       = 1012
	auditStatusEnabled = 1
	auditStatusPID     = 4
)

// auditMsg returns a netlink message of type typ (NLM_F_REQUEST|NLM_F_ACK) with payload, padded to 4 bytes.
func auditMsg(typ uint16, payload []byte) []byte {
	n := unix.NLMSG_HDRLEN + len(payload)
	b := make([]byte, (n+3)&^3)
	binary.NativeEndian.PutUint32(b[0:], uint32(n))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(b[8:], 1)
	copy(b[unix.NLMSG_HDRLEN:], payload)
	return b
}

// auditStatus returns a struct audit_status (its first ten fields) setting mask's field to v: enabled for
// auditStatusEnabled, pid for auditStatusPID.
func auditStatus(mask, v uint32) []byte {
	b := make([]byte, 40)
	binary.NativeEndian.PutUint32(b[0:], mask)
	switch mask {
	case auditStatusEnabled:
		binary.NativeEndian.PutUint32(b[4:], v)
	case auditStatusPID:
		binary.NativeEndian.PutUint32(b[12:], v)
	}
	return b
}

// auditSend sends msgs to the kernel on a NETLINK_AUDIT socket and returns sendto's error; the kernel's
// replies are not read.
func auditSend(msgs []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_AUDIT)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, msgs, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}
