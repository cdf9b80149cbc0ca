package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	libaudit "github.com/elastic/go-libaudit/v2"
	"github.com/elastic/go-libaudit/v2/rule"
	"github.com/elastic/go-libaudit/v2/rule/flags"

	"github.com/auditarch/auditarch/internal/kernlock"
)

// LockKernel takes the machine-wide kernel audit lock (internal/kernlock), waiting for up to 10 minutes or
// until ctx ends. If the lock is busy it says so once on log. The returned function releases the lock.
func LockKernel(ctx context.Context, log io.Writer) (unlock func(), err error) {
	return kernlock.Acquire(ctx, func() {
		fmt.Fprintf(log, "waiting for %s (someone else is using kernel audit)\n", kernlock.Path)
	})
}

// Kernel is a benchmark's control connection to kernel audit, holding the machine-wide lock, and the audit
// state it found, which Close puts back.
type Kernel struct {
	c      *libaudit.AuditClient
	found  libaudit.AuditStatus
	rules  [][]byte // the rules found, in the kernel's wire format
	unlock func()
	log    io.Writer
}

// OpenKernel takes the machine-wide lock (LockKernel), connects to kernel audit and records its status and
// rules. It refuses to run while an audit daemon is registered or the configuration is locked (-e 2). On
// error nothing is held; on success the caller must call Close on every path, typically deferred at once.
// log receives the lock's waiting notice and Close's report.
func OpenKernel(ctx context.Context, log io.Writer) (*Kernel, error) {
	unlock, err := LockKernel(ctx, log)
	if err != nil {
		return nil, err
	}
	c, err := libaudit.NewAuditClient(nil)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("audit control socket: %w", err)
	}
	fail := func(err error) (*Kernel, error) {
		c.Close()
		unlock()
		return nil, err
	}
	st, err := c.GetStatus()
	if err != nil {
		return fail(fmt.Errorf("get audit status: %w", err))
	}
	rules, err := c.GetRules()
	if err != nil {
		return fail(fmt.Errorf("get audit rules: %w", err))
	}
	switch {
	case st.PID != 0:
		return fail(fmt.Errorf("an audit daemon (pid %d) is registered; stop it first", st.PID))
	case st.Enabled == 2:
		return fail(errors.New("kernel audit configuration is locked (-e 2) until reboot"))
	}
	return &Kernel{c: c, found: *st, rules: rules, unlock: unlock, log: log}, nil
}

// Found is the status OpenKernel found, which Close puts back.
func (k *Kernel) Found() libaudit.AuditStatus { return k.found }

// Status asks the kernel for its current audit status.
func (k *Kernel) Status() (*libaudit.AuditStatus, error) {
	st, err := k.c.GetStatus()
	if err != nil {
		return nil, fmt.Errorf("get audit status: %w", err)
	}
	return st, nil
}

// RuleCount returns how many audit rules are loaded.
func (k *Kernel) RuleCount() (int, error) {
	r, err := k.c.GetRules()
	if err != nil {
		return 0, fmt.Errorf("get audit rules: %w", err)
	}
	return len(r), nil
}

// AddRule loads one rule given in auditctl syntax (-a/-A/-w).
func (k *Kernel) AddRule(text string) error {
	r, err := flags.Parse(text)
	if err != nil {
		return fmt.Errorf("parse rule %q: %w", text, err)
	}
	w, err := rule.Build(r)
	if err != nil {
		return fmt.Errorf("build rule %q: %w", text, err)
	}
	if err := k.c.AddRule(w); err != nil {
		return fmt.Errorf("add rule %q: %w", text, err)
	}
	return nil
}

// DeleteRules removes every loaded rule.
func (k *Kernel) DeleteRules() error {
	if _, err := k.c.DeleteRules(); err != nil {
		return fmt.Errorf("delete rules: %w", err)
	}
	return nil
}

// Quiet deletes every rule and puts the enabled flag back to what was found: the "no auditing" baseline.
func (k *Kernel) Quiet() error {
	if err := k.DeleteRules(); err != nil {
		return err
	}
	if err := k.c.SetEnabled(k.found.Enabled == 1, libaudit.WaitForReply); err != nil {
		return fmt.Errorf("set enabled: %w", err)
	}
	return nil
}

// SetFair applies the settings every system under test runs under: backlog_limit backlog,
// backlog_wait_time wait (in jiffies) and enabled 1.
func (k *Kernel) SetFair(backlog, wait uint32) error {
	if err := k.c.SetBacklogLimit(backlog, libaudit.WaitForReply); err != nil {
		return fmt.Errorf("set backlog limit: %w", err)
	}
	if err := k.c.SetBacklogWaitTime(int32(wait), libaudit.WaitForReply); err != nil {
		return fmt.Errorf("set backlog wait time: %w", err)
	}
	if err := k.c.SetEnabled(true, libaudit.WaitForReply); err != nil {
		return fmt.Errorf("set enabled: %w", err)
	}
	return nil
}

// WaitPID polls the registered audit pid every 50 ms until ok accepts it or returns an error, timeout
// passes or ctx ends. It returns the last pid seen, and nil only when ok accepted it.
func (k *Kernel) WaitPID(ctx context.Context, timeout time.Duration,
	ok func(pid uint32) (bool, error)) (uint32, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := k.Status()
		if err != nil {
			return 0, err
		}
		done, err := ok(st.PID)
		if done || err != nil {
			return st.PID, err
		}
		if time.Now().After(deadline) {
			return st.PID, fmt.Errorf("audit pid is %d after %v", st.PID, timeout)
		}
		select {
		case <-ctx.Done():
			return st.PID, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Close puts back the rules and status found (restore), closes the connection and releases the lock, in
// that order. It returns restore's error; when there is none it reports the restored status on log. Call
// it once.
func (k *Kernel) Close() error {
	err := k.restore()
	if err != nil {
		err = fmt.Errorf("restore kernel audit state: %w", err)
	} else {
		fmt.Fprintf(k.log, "kernel audit state restored: %s\n", StatusLine(k.found))
	}
	k.c.Close()
	k.unlock()
	return err
}

// restore puts back the rules and status found. Only the registered process can unregister itself, so a
// pid still registered here is a process the harness failed to stop.
func (k *Kernel) restore() error {
	var errs []error
	if err := k.DeleteRules(); err != nil {
		errs = append(errs, err)
	}
	for _, r := range k.rules {
		if err := k.c.AddRule(r); err != nil {
			errs = append(errs, fmt.Errorf("re-add rule: %w", err))
		}
	}
	if st, err := k.c.GetStatus(); err != nil {
		errs = append(errs, fmt.Errorf("get audit status: %w", err))
	} else if st.PID != k.found.PID {
		errs = append(errs, fmt.Errorf("audit pid %d is still registered", st.PID))
	}
	s := k.found
	for _, err := range []error{
		k.c.SetBacklogLimit(s.BacklogLimit, libaudit.WaitForReply),
		k.c.SetBacklogWaitTime(int32(s.BacklogWaitTime), libaudit.WaitForReply),
		k.c.SetFailure(libaudit.FailureMode(s.Failure), libaudit.WaitForReply),
		k.c.SetRateLimit(s.RateLimit, libaudit.WaitForReply),
		k.c.SetEnabled(s.Enabled == 1, libaudit.WaitForReply),
	} {
		if err != nil {
			errs = append(errs, fmt.Errorf("restore status: %w", err))
		}
	}
	return errors.Join(errs...)
}

// StatusLine formats the settings of s that a run changes and restores, plus the registered pid.
func StatusLine(s libaudit.AuditStatus) string {
	return fmt.Sprintf("enabled %d, failure %d, pid %d, rate_limit %d, backlog_limit %d, backlog_wait_time %d",
		s.Enabled, s.Failure, s.PID, s.RateLimit, s.BacklogLimit, s.BacklogWaitTime)
}

// UncleanError means the kernel audit state could not be put in order (a rule left loaded, an audit pid
// still registered): the run must stop, and Close will say what it could not restore.
type UncleanError struct{ Err error }

func (e *UncleanError) Error() string { return "kernel audit state: " + e.Err.Error() }
func (e *UncleanError) Unwrap() error { return e.Err }

// Unclean wraps err in an *UncleanError.
func Unclean(err error) error { return &UncleanError{err} }
