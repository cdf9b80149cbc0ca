package main

// Kernel audit control, adapted from bench/cmd/sidebyside/kernel.go (a main package cannot be imported;
// move both into a shared bench package when a third tool needs them).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	libaudit "github.com/elastic/go-libaudit/v2"
	"github.com/elastic/go-libaudit/v2/rule"
	"github.com/elastic/go-libaudit/v2/rule/flags"

	"github.com/auditarch/auditarch/internal/kernlock"
)

// lockKernel takes the machine-wide kernel audit lock (internal/kernlock), waiting for up to 10 minutes.
func lockKernel(ctx context.Context) (unlock func(), err error) {
	return kernlock.Acquire(ctx, func() {
		fmt.Fprintf(os.Stderr, "waiting for %s (someone else is using kernel audit)\n", kernlock.Path)
	})
}

// kernel is the harness's control connection and the audit state it found, to put back at the end.
type kernel struct {
	c     *libaudit.AuditClient
	saved libaudit.AuditStatus
	rules [][]byte
}

// openKernel connects to kernel audit and records its state. It refuses to run while another audit daemon
// is registered or the configuration is locked.
func openKernel() (*kernel, error) {
	c, err := libaudit.NewAuditClient(nil)
	if err != nil {
		return nil, fmt.Errorf("audit control socket: %w", err)
	}
	st, err := c.GetStatus()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("get audit status: %w", err)
	}
	rules, err := c.GetRules()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("get audit rules: %w", err)
	}
	switch {
	case st.PID != 0:
		c.Close()
		return nil, fmt.Errorf("an audit daemon (pid %d) is registered; stop it first", st.PID)
	case st.Enabled == 2:
		c.Close()
		return nil, errors.New("kernel audit configuration is locked (-e 2) until reboot")
	}
	return &kernel{c: c, saved: *st, rules: rules}, nil
}

func (k *kernel) status() (*libaudit.AuditStatus, error) {
	st, err := k.c.GetStatus()
	if err != nil {
		return nil, fmt.Errorf("get audit status: %w", err)
	}
	return st, nil
}

func (k *kernel) ruleCount() (int, error) {
	r, err := k.c.GetRules()
	if err != nil {
		return 0, fmt.Errorf("get audit rules: %w", err)
	}
	return len(r), nil
}

// addRule loads one rule given in auditctl syntax (-a/-A/-w).
func (k *kernel) addRule(text string) error {
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

// deleteRules removes every rule.
func (k *kernel) deleteRules() error {
	if _, err := k.c.DeleteRules(); err != nil {
		return fmt.Errorf("delete rules: %w", err)
	}
	return nil
}

// setFair applies the settings every peer runs under.
func (k *kernel) setFair(backlog, wait uint32) error {
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

// waitPID polls the registered audit pid until ok accepts it or timeout passes.
func (k *kernel) waitPID(ctx context.Context, timeout time.Duration,
	ok func(pid uint32) (bool, error)) (uint32, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := k.status()
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

// restore puts back the rules and status found at the start. Only the registered process can unregister
// itself, so a pid still registered here is a peer the harness failed to stop.
func (k *kernel) restore() error {
	var errs []error
	if err := k.deleteRules(); err != nil {
		errs = append(errs, err)
	}
	for _, r := range k.rules {
		if err := k.c.AddRule(r); err != nil {
			errs = append(errs, fmt.Errorf("re-add rule: %w", err))
		}
	}
	if st, err := k.c.GetStatus(); err != nil {
		errs = append(errs, fmt.Errorf("get audit status: %w", err))
	} else if st.PID != k.saved.PID {
		errs = append(errs, fmt.Errorf("audit pid %d is still registered", st.PID))
	}
	s := k.saved
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

func statusLine(s libaudit.AuditStatus) string {
	return fmt.Sprintf("enabled %d, failure %d, pid %d, rate_limit %d, backlog_limit %d, backlog_wait_time %d",
		s.Enabled, s.Failure, s.PID, s.RateLimit, s.BacklogLimit, s.BacklogWaitTime)
}
