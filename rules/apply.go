package rules

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	libaudit "github.com/elastic/go-libaudit/v2"
	"github.com/elastic/go-libaudit/v2/rule"
	"github.com/elastic/go-libaudit/v2/rule/flags"
)

// Kernel is the part of *libaudit.AuditClient that Apply uses. Status changes are made with
// libaudit.WaitForReply. Note that *libaudit.AuditClient's DeleteRule does not report the kernel's
// refusal (it ignores the ack's error), so deleting a rule that is absent succeeds.
type Kernel interface {
	GetStatus() (*libaudit.AuditStatus, error)
	GetRules() ([][]byte, error)
	AddRule([]byte) error
	DeleteRule([]byte) error
	DeleteRules() (int, error)
	SetBacklogLimit(uint32, libaudit.WaitMode) error
	SetBacklogWaitTime(int32, libaudit.WaitMode) error
	SetFailure(libaudit.FailureMode, libaudit.WaitMode) error
	SetRateLimit(uint32, libaudit.WaitMode) error
	SetEnabled(bool, libaudit.WaitMode) error
	SetImmutable(libaudit.WaitMode) error
}

var _ Kernel = (*libaudit.AuditClient)(nil)

// ErrLocked is returned by Apply when the kernel's audit configuration is already locked (-e 2).
var ErrLocked = errors.New("kernel audit configuration is locked (-e 2) until reboot")

// OpError is an operation the kernel refused.
type OpError struct {
	File string
	Line int
	Text string // Op.Text
	Err  error
}

func (e *OpError) Error() string {
	return fmt.Sprintf("%s:%d: %s: %v", e.File, e.Line, e.Text, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// ApplyOptions tune Apply.
type ApplyOptions struct {
	// SelfPID, when not 0, is the daemon's pid, excluded by "-A never,exit -F pid=SelfPID" kept first in
	// the exit list. Measured on Linux 6.18: a never rule ahead of a watch (-w) also suppresses that
	// watch's events for the pid, one behind it does not; the kernel itself ignores the registered audit
	// pid, but not before it registers nor its other processes.
	SelfPID int
	// Lock sets -e 2 after everything else. A set ending with -e 2 locks too.
	Lock bool
	// Found, when set, is what Restore puts back instead of the kernel's current state: the state an
	// earlier run found and could not restore because it was killed (its own rules are still loaded).
	Found *Found
}

// Found is the kernel state an Apply found: the status fields it may change and the rule list. It is
// persisted by the daemon so that a run after a crash restores the kernel as the crashed run found it.
type Found struct {
	Enabled         uint32   `json:"enabled"`
	Failure         uint32   `json:"failure"`
	RateLimit       uint32   `json:"rate_limit"`
	BacklogLimit    uint32   `json:"backlog_limit"`
	BacklogWaitTime uint32   `json:"backlog_wait_time"`
	Rules           [][]byte `json:"rules"` // wire format
}

// Found returns the state Restore puts back.
func (a *Applied) Found() Found {
	b := a.before
	return Found{Enabled: b.Enabled, Failure: b.Failure, RateLimit: b.RateLimit, BacklogLimit: b.BacklogLimit,
		BacklogWaitTime: b.BacklogWaitTime, Rules: a.rules}
}

// Applied is what Apply changed, so that Restore can undo it.
type Applied struct {
	k            Kernel
	before       libaudit.AuditStatus
	rules        [][]byte                 // the rule list found
	rulesChanged bool                     // Apply touched the rule list
	changed      libaudit.AuditStatusMask // the status fields Apply set
	locked       bool
	want         Found // the state Apply left: what Drift compares with

	// Skipped holds an *OpError for each operation the kernel refused and Apply skipped under -c or -i.
	Skipped []error
}

// Apply snapshots the kernel's status and rules, then runs the operations of s in file order. When
// SelfPID is set, the self-exclusion rule is added before the first rule change (right after it when
// that is a -D) and again after every -D and every rule prepended to the exit list, so it stays first.
// Then it enables auditing (1), whatever -e 0 the set had, and locks last if o.Lock or s.Locks().
//
// If anything fails, Apply restores what it had changed and returns the error, except that under -c or
// -i an operation the kernel refuses is skipped and recorded in Applied.Skipped: with -c Apply returns
// the Applied and an error joining the skipped operations (the rules that loaded stay loaded, as with
// auditctl -c), with -i it returns the Applied and nil. Failures of the self-exclusion rule, of enabling
// and of locking are never skipped. A kernel that is already locked gives ErrLocked, changing nothing.
func Apply(k Kernel, s *Set, o ApplyOptions) (*Applied, error) {
	st, err := k.GetStatus()
	if err != nil {
		return nil, fmt.Errorf("get audit status: %w", err)
	}
	if st.Enabled == 2 {
		return nil, ErrLocked
	}
	found, err := k.GetRules()
	if err != nil {
		return nil, fmt.Errorf("get audit rules: %w", err)
	}
	a := &Applied{k: k, before: *st, rules: found}
	if f := o.Found; f != nil {
		// Everything the crashed run may have changed goes back, whatever this run changes.
		a.before.Enabled, a.before.Failure, a.before.RateLimit = f.Enabled, f.Failure, f.RateLimit
		a.before.BacklogLimit, a.before.BacklogWaitTime, a.rules = f.BacklogLimit, f.BacklogWaitTime, f.Rules
		a.rulesChanged = true
		a.changed = libaudit.AuditStatusEnabled | libaudit.AuditStatusFailure | libaudit.AuditStatusRateLimit |
			libaudit.AuditStatusBacklogLimit | libaudit.AuditStatusBacklogWaitTime
	}
	if err := a.run(s, o); err != nil {
		if rerr := a.Restore(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restore after failure: %w", rerr))
		}
		return nil, err
	}
	if err := a.snapshot(); err != nil {
		return a, err
	}
	if s.Continue && !s.IgnoreErrors && len(a.Skipped) > 0 {
		return a, errors.Join(a.Skipped...)
	}
	return a, nil
}

// snapshot records the state Apply left, for Drift.
func (a *Applied) snapshot() error {
	st, err := a.k.GetStatus()
	if err != nil {
		return fmt.Errorf("get audit status: %w", err)
	}
	rules, err := a.k.GetRules()
	if err != nil {
		return fmt.Errorf("get audit rules: %w", err)
	}
	a.want = Found{Enabled: st.Enabled, Failure: st.Failure, RateLimit: st.RateLimit, BacklogLimit: st.BacklogLimit,
		BacklogWaitTime: st.BacklogWaitTime, Rules: rules}
	return nil
}

// SelfRule returns the rule that excludes pid from syscall auditing: -A never,exit -F pid=pid.
func SelfRule(pid int) (rule.WireFormat, error) {
	r, err := flags.Parse("-A never,exit -F pid=" + strconv.Itoa(pid))
	if err != nil {
		return nil, err
	}
	w, err := rule.Build(r)
	if err != nil {
		return nil, err
	}
	return withPrepend(w), nil
}

func (a *Applied) run(s *Set, o ApplyOptions) error {
	var self rule.WireFormat
	if o.SelfPID != 0 {
		var err error
		if self, err = SelfRule(o.SelfPID); err != nil {
			return fmt.Errorf("build self-exclusion rule: %w", err)
		}
	}
	placed := false
	placeSelf := func() error {
		placed = true
		a.rulesChanged = true
		_ = a.k.DeleteRule(withoutPrepend(self)) // absent is fine: it is re-added just below
		if err := a.k.AddRule(self); err != nil {
			return fmt.Errorf("add self-exclusion rule for pid %d: %w", o.SelfPID, err)
		}
		return nil
	}
	for _, op := range s.Ops {
		if op.Kind == Enabled && op.Value == 2 {
			continue // locking comes last, below
		}
		isRule := op.Kind == DeleteAll || op.Kind == AddRule || op.Kind == DeleteRule
		if self != nil && !placed && isRule && op.Kind != DeleteAll {
			if err := placeSelf(); err != nil {
				return err
			}
		}
		if err := a.do(op); err != nil {
			err = &OpError{File: s.File, Line: op.Line, Text: op.Text, Err: err}
			if !s.Continue && !s.IgnoreErrors {
				return err
			}
			a.Skipped = append(a.Skipped, err)
			continue
		}
		if self != nil && (op.Kind == DeleteAll || op.Kind == AddRule && isPrepend(op.Wire) && listOf(op.Wire) == filterExit) {
			if err := placeSelf(); err != nil {
				return err
			}
		}
	}
	if self != nil && !placed {
		if err := placeSelf(); err != nil {
			return err
		}
	}
	a.changed |= libaudit.AuditStatusEnabled
	if err := a.k.SetEnabled(true, libaudit.WaitForReply); err != nil {
		return fmt.Errorf("enable auditing: %w", err)
	}
	if o.Lock || s.Locks() {
		if err := a.k.SetImmutable(libaudit.WaitForReply); err != nil {
			return fmt.Errorf("lock audit configuration: %w", err)
		}
		a.locked = true
	}
	return nil
}

func (a *Applied) do(op Op) error {
	const wait = libaudit.WaitForReply
	switch op.Kind {
	case DeleteAll:
		a.rulesChanged = true
		_, err := a.k.DeleteRules()
		return err
	case AddRule:
		a.rulesChanged = true
		return a.k.AddRule(op.Wire)
	case DeleteRule:
		a.rulesChanged = true
		return a.k.DeleteRule(withoutPrepend(op.Wire))
	case BacklogLimit:
		a.changed |= libaudit.AuditStatusBacklogLimit
		return a.k.SetBacklogLimit(op.Value, wait)
	case BacklogWaitTime:
		a.changed |= libaudit.AuditStatusBacklogWaitTime
		return a.k.SetBacklogWaitTime(int32(op.Value), wait)
	case FailureMode:
		// Numerically: libaudit.LogOnFailure and PanicOnFailure are both 0 (a mistake in its const block).
		a.changed |= libaudit.AuditStatusFailure
		return a.k.SetFailure(libaudit.FailureMode(op.Value), wait)
	case RateLimit:
		a.changed |= libaudit.AuditStatusRateLimit
		return a.k.SetRateLimit(op.Value, wait)
	case Enabled:
		a.changed |= libaudit.AuditStatusEnabled
		return a.k.SetEnabled(op.Value == 1, wait)
	}
	return fmt.Errorf("unknown operation %v", op.Kind)
}

// Status returns the kernel's audit status as Apply found it, before any change.
func (a *Applied) Status() libaudit.AuditStatus { return a.before }

// Locked reports whether Apply locked the configuration (-e 2).
func (a *Applied) Locked() bool { return a.locked }

// Restore undoes what Apply changed: it deletes all rules and re-adds the rules found before, then sets
// back the backlog limit, backlog wait time, failure mode, rate limit and enabled flag that Apply set.
// It carries on past errors and returns them joined. When Apply locked the configuration, the kernel
// refuses every change until reboot, so Restore does nothing and returns nil.
func (a *Applied) Restore() error {
	if a.locked {
		return nil
	}
	return a.put(a.Found(), a.rulesChanged, a.changed)
}

// put sets the kernel's rule list (when rules) and the status fields in mask to f's, carrying on past
// errors.
func (a *Applied) put(f Found, rules bool, mask libaudit.AuditStatusMask) error {
	const wait = libaudit.WaitForReply
	var errs []error
	if rules {
		if _, err := a.k.DeleteRules(); err != nil {
			errs = append(errs, fmt.Errorf("delete rules: %w", err))
		}
		for _, r := range f.Rules {
			if err := a.k.AddRule(r); err != nil {
				text, _ := commandLine(r)
				errs = append(errs, fmt.Errorf("re-add rule %q: %w", text, err))
			}
		}
	}
	set := func(m libaudit.AuditStatusMask, what string, fn func() error) {
		if mask&m == 0 {
			return
		}
		if err := fn(); err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", what, err))
		}
	}
	set(libaudit.AuditStatusBacklogLimit, "backlog limit", func() error { return a.k.SetBacklogLimit(f.BacklogLimit, wait) })
	set(libaudit.AuditStatusBacklogWaitTime, "backlog wait time", func() error { return a.k.SetBacklogWaitTime(int32(f.BacklogWaitTime), wait) })
	set(libaudit.AuditStatusFailure, "failure mode", func() error { return a.k.SetFailure(libaudit.FailureMode(f.Failure), wait) })
	set(libaudit.AuditStatusRateLimit, "rate limit", func() error { return a.k.SetRateLimit(f.RateLimit, wait) })
	set(libaudit.AuditStatusEnabled, "enabled", func() error { return a.k.SetEnabled(f.Enabled == 1, wait) })
	return errors.Join(errs...)
}

// Drift compares the kernel with the state Apply left (its rules and the status fields it may set) and
// says what differs, "" when nothing does. While a daemon runs nobody else may change either: a
// difference is tampering (or an administrator's auditctl), which Reassert undoes.
func (a *Applied) Drift() (string, error) {
	now, mask, err := a.drift()
	if err != nil || mask == 0 && now == nil {
		return "", err
	}
	var what []string
	if now != nil {
		what = append(what, fmt.Sprintf("%d rules loaded, %d applied", len(now), len(a.want.Rules)))
	}
	st := a.want
	names := []struct {
		m    libaudit.AuditStatusMask
		name string
		want uint32
	}{{libaudit.AuditStatusEnabled, "enabled", st.Enabled}, {libaudit.AuditStatusFailure, "failure", st.Failure},
		{libaudit.AuditStatusRateLimit, "rate_limit", st.RateLimit}, {libaudit.AuditStatusBacklogLimit, "backlog_limit", st.BacklogLimit},
		{libaudit.AuditStatusBacklogWaitTime, "backlog_wait_time", st.BacklogWaitTime}}
	for _, n := range names {
		if mask&n.m != 0 {
			what = append(what, fmt.Sprintf("%s changed (applied %d)", n.name, n.want))
		}
	}
	return strings.Join(what, ", "), nil
}

// drift returns the kernel's rules when they differ from those Apply left (nil otherwise) and the mask
// of the status fields that differ.
func (a *Applied) drift() ([][]byte, libaudit.AuditStatusMask, error) {
	st, err := a.k.GetStatus()
	if err != nil {
		return nil, 0, fmt.Errorf("get audit status: %w", err)
	}
	var mask libaudit.AuditStatusMask
	w := a.want
	for _, f := range []struct {
		m          libaudit.AuditStatusMask
		have, want uint32
	}{{libaudit.AuditStatusEnabled, st.Enabled, w.Enabled}, {libaudit.AuditStatusFailure, st.Failure, w.Failure},
		{libaudit.AuditStatusRateLimit, st.RateLimit, w.RateLimit}, {libaudit.AuditStatusBacklogLimit, st.BacklogLimit, w.BacklogLimit},
		{libaudit.AuditStatusBacklogWaitTime, st.BacklogWaitTime, w.BacklogWaitTime}} {
		if f.have != f.want {
			mask |= f.m
		}
	}
	rules, err := a.k.GetRules()
	if err != nil {
		return nil, 0, fmt.Errorf("get audit rules: %w", err)
	}
	same := len(rules) == len(a.want.Rules)
	for i := 0; same && i < len(rules); i++ {
		same = bytes.Equal(rules[i], a.want.Rules[i])
	}
	if same {
		rules = nil
	}
	return rules, mask, nil
}

// Reassert puts back the rules and status fields that differ from the state Apply left, and says what
// it put back ("" when nothing differed). A locked configuration cannot drift.
func (a *Applied) Reassert() (string, error) {
	if a.locked {
		return "", nil
	}
	what, err := a.Drift()
	if err != nil || what == "" {
		return "", err
	}
	rules, mask, err := a.drift()
	if err != nil {
		return "", err
	}
	return what, a.put(a.want, rules != nil, mask)
}
