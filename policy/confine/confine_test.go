package confine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/internal/privtest"
)

// Child modes of the test binary: confineEnv makes it confine itself and exec itself again with
// attackEnv, which tries every way to reach the target process and prints what each gave.
const (
	confineEnv = "AUDITARCH_TEST_CONFINE"
	attackEnv  = "AUDITARCH_TEST_ATTACK" // "PID ABSTRACT-SOCKET-NAME"
)

func TestMain(m *testing.M) {
	if os.Getenv(confineEnv) != "" {
		self, _ := os.Executable()
		var env []string
		for _, e := range os.Environ() {
			if !strings.HasPrefix(e, confineEnv+"=") {
				env = append(env, e)
			}
		}
		fmt.Fprintln(os.Stderr, Exec([]string{self}, env))
		os.Exit(3)
	}
	if spec := os.Getenv(attackEnv); spec != "" {
		os.Exit(attack(spec))
	}
	os.Exit(m.Run())
}

// attack tries each way to signal, stop, trace or talk to pid and prints {way: errno or "ok"} as JSON.
func attack(spec string) int {
	f := strings.Fields(spec)
	pid, _ := strconv.Atoi(f[0])
	res := map[string]string{}
	put := func(name string, err error) {
		if err == nil {
			res[name] = "ok"
		} else {
			res[name] = err.Error()
		}
	}
	put("kill-0", unix.Kill(pid, 0))
	put("kill-STOP", unix.Kill(pid, unix.SIGSTOP))
	put("kill-pid|1<<32", func() error {
		_, _, e := unix.RawSyscall(unix.SYS_KILL, uintptr(pid)|1<<32, 0, 0)
		if e != 0 {
			return e
		}
		return nil
	}())
	put("tgkill", unix.Tgkill(pid, pid, 0))
	put("pidfd_send_signal", func() error {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.PidfdSendSignal(fd, 0, nil, 0)
	}())
	put("ptrace-attach", func() error {
		err := unix.PtraceAttach(pid)
		if err == nil {
			unix.PtraceDetach(pid)
		}
		return err
	}())
	put("proc-mem-write", func() error {
		f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_WRONLY, 0)
		if err == nil {
			f.Close()
		}
		return err
	}())
	put("abstract-unix-connect", func() error {
		c, err := net.Dial("unix", "@"+f[1])
		if err == nil {
			c.Close()
		}
		return err
	}())
	nnp := "?"
	if data, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "NoNewPrivs:"); ok {
				nnp = strings.TrimSpace(v)
			}
		}
	}
	res["no_new_privs"] = nnp
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// run runs the attack on target, confined or not, and returns its results.
func run(t *testing.T, confined bool, target int, sock string) map[string]string {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d %s", attackEnv, target, sock))
	if confined {
		cmd.Env = append(cmd.Env, confineEnv+"=1")
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("attacker (confined %v): %v\n%s", confined, err, errb.String())
	}
	res := map[string]string{}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("attacker output %q: %v", out.String(), err)
	}
	return res
}

// TestConfinedRootCannotReachOutside: root, confined, cannot signal (any way: kill, the 32-bit pid
// truncation, tgkill, pidfd), stop, ptrace, write the memory of, or connect to the abstract socket of a
// process outside its domain (standing in for the daemon); the same attacker unconfined can. With
// CAP_SYS_ADMIN, no_new_privs stays unset (sudo works inside a confined session).
func TestConfinedRootCannotReachOutside(t *testing.T) {
	privtest.Root(t)
	if abi, err := llABI(); err != nil || abi < 6 {
		privtest.Unavailable(t, "Landlock ABI 6 (signal scoping) is not available: ABI %d, %v", abi, err)
	}
	target := exec.Command("/bin/sleep", "60")
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Process.Kill(); target.Wait() })
	sock := fmt.Sprintf("auditarch-confine-test-%d", os.Getpid())
	l, err := net.Listen("unix", "@"+sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	pid := target.Process.Pid

	free := run(t, false, pid, sock)
	unix.Kill(pid, unix.SIGCONT) // the unconfined attacker stopped it
	for way, got := range free {
		if way != "no_new_privs" && got != "ok" {
			t.Errorf("unconfined %s: %s, want ok (the control)", way, got)
		}
	}
	confined := run(t, true, pid, sock)
	for way, got := range confined {
		switch {
		case way == "no_new_privs":
			if got != "0" {
				t.Errorf("confined with CAP_SYS_ADMIN: no_new_privs %s, want 0", got)
			}
		case got == "ok":
			t.Errorf("confined %s succeeded", way)
		case !strings.Contains(got, "not permitted") && !strings.Contains(got, "permission denied"):
			t.Errorf("confined %s: %s, want EPERM or EACCES", way, got)
		}
	}
	t.Logf("unconfined: %v", free)
	t.Logf("confined:   %v", confined)
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d", pid), &st); err != nil {
		t.Errorf("the target died: %v", err)
	}
	time.Sleep(10 * time.Millisecond)
	if s, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); bytes.Contains(s, []byte(") T ")) {
		t.Error("the target is stopped")
	}
}

func TestSession(t *testing.T) {
	if got := Session("/bin/bash", ""); strings.Join(got, " ") != "/bin/bash -l" {
		t.Errorf("login: %v", got)
	}
	if got := Session("", "uptime"); strings.Join(got, " ") != "/bin/sh -c uptime" {
		t.Errorf("command: %v", got)
	}
	if err := Exec(nil, nil); err == nil || errors.Is(err, ErrUnsupported) {
		t.Errorf("Exec(nil) = %v", err)
	}
}
