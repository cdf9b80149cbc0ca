package main

// Child processes, adapted from bench/cmd/sidebyside/proc.go.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// proc is a child process the harness started and must stop. It runs in its own process group, so a
// Ctrl-C on the terminal reaches only the harness, which then stops it in order; the group also holds
// whatever the child starts (auditd's plugins), which stop stops too.
type proc struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	outPath string
	errPath string
}

// start runs argv with stdout and stderr in dir/name.out and dir/name.err. unshare is extra clone flags
// for the child (0 for none).
func start(dir, name string, unshare uintptr, argv ...string) (*proc, error) {
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
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Unshareflags: unshare}
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

// stop sends SIGTERM to the process (by pid) and waits up to timeout, then kills it; then it does the same
// to anything left in its process group. It returns an error if something had to be killed or the process
// exited unsuccessfully.
func (p *proc) stop(timeout time.Duration) error {
	var errs []error
	if !p.exited() {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, fmt.Errorf("signal %s: %w", p.name, err))
		}
		select {
		case <-p.done:
		case <-time.After(timeout):
			p.cmd.Process.Kill()
			<-p.done
			errs = append(errs, fmt.Errorf("%s (pid %d) ignored SIGTERM for %v and was killed", p.name, p.pid(), timeout))
		}
	}
	if err := p.result(); err != nil && len(errs) == 0 {
		errs = append(errs, err)
	}
	if err := p.stopGroup(5 * time.Second); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopGroup ends what is left of the process's group (its children, which now belong to init).
func (p *proc) stopGroup(timeout time.Duration) error {
	pgid := p.pid()
	if syscall.Kill(-pgid, 0) != nil {
		return nil // the group is empty
	}
	syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if syscall.Kill(-pgid, 0) != nil {
			return nil
		}
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
	return fmt.Errorf("%s: processes of its group %d ignored SIGTERM for %v and were killed", p.name, pgid, timeout)
}
