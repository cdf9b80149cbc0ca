package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// ErrOverran is what Proc.Await returns when the process was still running at its time limit.
var ErrOverran = errors.New("process still running at its time limit")

// Proc is a child process the harness started and must stop. It runs in a process group of its own (its
// pid is the group id), so a Ctrl-C on the terminal reaches only the harness, which then stops it in
// order; the group also holds whatever the child starts (auditd's plugins), which Stop stops too.
type Proc struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited and been reaped
	waitErr error         // set before done is closed
	outPath string
	errPath string
}

// ProcOptions are how Start runs a child beyond its argv.
type ProcOptions struct {
	// Env is added to the harness's environment (later entries win); nil inherits it unchanged.
	Env []string
	// Unshare is extra clone flags for the child (syscall.CLONE_NEWNS, …); 0 for none.
	Unshare uintptr
}

// Start runs argv in a new process group with stdout and stderr in the files dir/name.out and
// dir/name.err, which it creates. name labels the process in errors.
func Start(dir, name string, opts ProcOptions, argv ...string) (*Proc, error) {
	p := &Proc{name: name, done: make(chan struct{}),
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
	if opts.Env != nil {
		p.cmd.Env = append(os.Environ(), opts.Env...)
	}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Unshareflags: opts.Unshare}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Name is the label given to Start.
func (p *Proc) Name() string { return p.name }

// PID is the process's id, and its process group's.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited (and been reaped).
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Result is nil while the process runs or when it exited with status 0; otherwise its exit error with the
// end of its stderr.
func (p *Proc) Result() error {
	if !p.Exited() || p.waitErr == nil {
		return nil
	}
	return fmt.Errorf("%s: %w: %s", p.name, p.waitErr, p.StderrTail())
}

// StderrTail returns the last 600 bytes of what the process wrote to stderr so far, trimmed.
func (p *Proc) StderrTail() string {
	b, _ := os.ReadFile(p.errPath)
	b = bytes.TrimSpace(b)
	if len(b) > 600 {
		b = append([]byte("…"), b[len(b)-600:]...)
	}
	return string(b)
}

// Stdout returns what the process wrote to stdout so far.
func (p *Proc) Stdout() ([]byte, error) {
	b, err := os.ReadFile(p.outPath)
	if err != nil {
		return nil, fmt.Errorf("read %s output: %w", p.name, err)
	}
	return b, nil
}

// Stderr returns what the process wrote to stderr so far.
func (p *Proc) Stderr() ([]byte, error) {
	b, err := os.ReadFile(p.errPath)
	if err != nil {
		return nil, fmt.Errorf("read %s errors: %w", p.name, err)
	}
	return b, nil
}

// CPUTime is the user and system CPU time the process used, once it has exited (0 before).
func (p *Proc) CPUTime() time.Duration {
	if !p.Exited() {
		return 0
	}
	return p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
}

// Await waits until the process exits, ctx ends or limit passes. In the last two cases it calls unstick
// (if not nil: e.g. to stop what the process is blocked on), kills the process (SIGKILL, by pid) and
// waits for it, and returns ctx.Err() or ErrOverran. A nil error says only that the process exited;
// Result says how.
func (p *Proc) Await(ctx context.Context, limit time.Duration, unstick func()) error {
	guard := time.NewTimer(limit)
	defer guard.Stop()
	var abort error
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		abort = ctx.Err()
	case <-guard.C:
		abort = ErrOverran
	}
	if unstick != nil {
		unstick()
	}
	p.cmd.Process.Kill()
	<-p.done
	return abort
}

// Stop sends SIGTERM to the process (by pid) and waits up to timeout, then kills it; then it does the same
// to anything left in its process group, waiting up to 5 s. It returns an error if something had to be
// killed or the process exited unsuccessfully. It may be called again after the process has exited.
func (p *Proc) Stop(timeout time.Duration) error {
	var errs []error
	if !p.Exited() {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, fmt.Errorf("signal %s: %w", p.name, err))
		}
		select {
		case <-p.done:
		case <-time.After(timeout):
			p.cmd.Process.Kill()
			<-p.done
			errs = append(errs, fmt.Errorf("%s (pid %d) ignored SIGTERM for %v and was killed", p.name, p.PID(), timeout))
		}
	}
	if err := p.Result(); err != nil && len(errs) == 0 {
		errs = append(errs, err)
	}
	if err := p.stopGroup(5 * time.Second); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopGroup ends what is left of the process's group (its children, which now belong to init).
func (p *Proc) stopGroup(timeout time.Duration) error {
	pgid := p.PID()
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
