package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of utime and stime in /proc/PID/stat (USER_HZ, fixed at 100 in the Linux ABI).
const userHZ = 100

// proc is a child process the harness started and must stop. It runs in its own process group, so a
// Ctrl-C on the terminal reaches only the harness, which then stops it in order.
type proc struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	outPath string
	errPath string
}

// start runs argv with stdout and stderr in dir/name.out and dir/name.err, and env added to the harness's
// environment.
func start(dir, name string, env []string, argv ...string) (*proc, error) {
	p := &proc{name: name, done: make(chan struct{}),
		outPath: filepath.Join(dir, name+".out"), errPath: filepath.Join(dir, name+".err")}
	stdout, err := os.Create(p.outPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer stdout.Close()
	stderr, err := os.Create(p.errPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer stderr.Close()
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = stdout, stderr
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// result is the exit error of a finished process, with the end of its stderr.
func (p *proc) result() error {
	if p.waitErr == nil {
		return nil
	}
	return fmt.Errorf("%s: %w: %s", p.name, p.waitErr, p.stderrTail())
}

func (p *proc) stderrTail() string {
	b, _ := os.ReadFile(p.errPath)
	b = bytes.TrimSpace(b)
	if len(b) > 600 {
		b = append([]byte("…"), b[len(b)-600:]...)
	}
	return string(b)
}

func (p *proc) stdout() ([]byte, error) {
	b, err := os.ReadFile(p.outPath)
	if err != nil {
		return nil, fmt.Errorf("read %s output: %w", p.name, err)
	}
	return b, nil
}

// stop sends SIGTERM to the process (by pid) and waits up to timeout, then kills it. It returns an error
// if the process had to be killed or exited unsuccessfully.
func (p *proc) stop(timeout time.Duration) error {
	if p.exited() {
		return p.result()
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return p.result()
	case <-time.After(timeout):
	}
	p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s (pid %d) ignored SIGTERM for %v and was killed", p.name, p.pid(), timeout)
}

// cpuTicks returns utime+stime of all threads of pid, in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time: %w", err)
	}
	// The command name may contain spaces; the fields after it are fixed.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return ut + st, nil
}

// busyTicks returns the machine's non-idle CPU time (user, nice, system, steal) from /proc/stat, in clock
// ticks summed over all CPUs. Interrupt time is left out: the workloads cause much of it themselves.
func busyTicks() (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("parse /proc/stat: %q", line)
	}
	var sum int64
	for _, i := range []int{1, 2, 3, 8} { // user nice system steal
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/stat: %w", err)
		}
		sum += v
	}
	return sum, nil
}

// kauditdPID finds the kernel's audit thread, or returns 0.
func kauditdPID() int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "kauditd" {
			return pid
		}
	}
	return 0
}
