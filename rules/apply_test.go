package rules

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"

	libaudit "github.com/elastic/go-libaudit/v2"
)

// fakeKernel keeps an audit status and rule list like the kernel does, records every call as a line of
// text, and checks how Apply uses it: WaitForReply always, failure mode 0-2, wait time not negative,
// nothing changed once locked.
type fakeKernel struct {
	t      *testing.T
	status libaudit.AuditStatus
	rules  [][]byte // as the kernel lists them: no prepend flag
	calls  []string
	failOn string // a call starting with this fails
}

func newFake(t *testing.T) *fakeKernel {
	return &fakeKernel{t: t, status: libaudit.AuditStatus{
		Enabled: 0, Failure: 1, RateLimit: 0, BacklogLimit: 64, BacklogWaitTime: 15000,
	}}
}

func (f *fakeKernel) call(format string, args ...any) error {
	c := fmt.Sprintf(format, args...)
	f.calls = append(f.calls, c)
	if f.failOn != "" && strings.HasPrefix(c, f.failOn) {
		return errors.New("injected failure")
	}
	if f.status.Enabled == 2 && !strings.HasPrefix(c, "Get") {
		return syscall.EPERM
	}
	return nil
}

func (f *fakeKernel) set(wm libaudit.WaitMode, format string, args ...any) error {
	if wm != libaudit.WaitForReply {
		f.t.Errorf("%s with wait mode %d, want WaitForReply", fmt.Sprintf(format, args...), wm)
	}
	return f.call(format, args...)
}

func (f *fakeKernel) text(w []byte) string {
	s, err := commandLine(w)
	if err != nil {
		f.t.Fatalf("fake kernel: %v", err)
	}
	if isPrepend(w) {
		s = "-A" + strings.TrimPrefix(s, "-a")
	}
	return s
}

func (f *fakeKernel) index(w []byte) int {
	return slices.IndexFunc(f.rules, func(r []byte) bool { return sameRule(r, w) })
}

func (f *fakeKernel) GetStatus() (*libaudit.AuditStatus, error) {
	st := f.status
	return &st, f.call("GetStatus")
}

func (f *fakeKernel) GetRules() ([][]byte, error) {
	return slices.Clone(f.rules), f.call("GetRules")
}

func (f *fakeKernel) AddRule(w []byte) error {
	if err := f.call("AddRule %s", f.text(w)); err != nil {
		return err
	}
	if f.index(w) >= 0 {
		return errors.New("rule exists") // as *libaudit.AuditClient reports EEXIST
	}
	if isPrepend(w) {
		f.rules = slices.Insert(f.rules, 0, []byte(withoutPrepend(w)))
	} else {
		f.rules = append(f.rules, slices.Clone(w))
	}
	return nil
}

func (f *fakeKernel) DeleteRule(w []byte) error {
	if err := f.call("DeleteRule %s", f.text(w)); err != nil {
		return err
	}
	if i := f.index(w); i >= 0 {
		f.rules = slices.Delete(f.rules, i, i+1)
	}
	return nil // *libaudit.AuditClient ignores the kernel's ENOENT
}

func (f *fakeKernel) DeleteRules() (int, error) {
	if err := f.call("DeleteRules"); err != nil {
		return 0, err
	}
	n := len(f.rules)
	f.rules = nil
	return n, nil
}

func (f *fakeKernel) SetBacklogLimit(v uint32, wm libaudit.WaitMode) error {
	err := f.set(wm, "SetBacklogLimit %d", v)
	if err == nil {
		f.status.BacklogLimit = v
	}
	return err
}

func (f *fakeKernel) SetBacklogWaitTime(v int32, wm libaudit.WaitMode) error {
	if v < 0 {
		f.t.Errorf("SetBacklogWaitTime %d", v)
	}
	err := f.set(wm, "SetBacklogWaitTime %d", v)
	if err == nil {
		f.status.BacklogWaitTime = uint32(v)
	}
	return err
}

func (f *fakeKernel) SetFailure(m libaudit.FailureMode, wm libaudit.WaitMode) error {
	if m > 2 {
		f.t.Errorf("SetFailure %d", m)
	}
	err := f.set(wm, "SetFailure %d", m)
	if err == nil {
		f.status.Failure = uint32(m)
	}
	return err
}

func (f *fakeKernel) SetRateLimit(v uint32, wm libaudit.WaitMode) error {
	err := f.set(wm, "SetRateLimit %d", v)
	if err == nil {
		f.status.RateLimit = v
	}
	return err
}

func (f *fakeKernel) SetEnabled(on bool, wm libaudit.WaitMode) error {
	err := f.set(wm, "SetEnabled %v", on)
	if err == nil {
		f.status.Enabled = 0
		if on {
			f.status.Enabled = 1
		}
	}
	return err
}

func (f *fakeKernel) SetImmutable(wm libaudit.WaitMode) error {
	err := f.set(wm, "SetImmutable")
	if err == nil {
		f.status.Enabled = 2
	}
	return err
}

// ruleTexts returns the fake's rules as auditctl -l prints them.
func (f *fakeKernel) ruleTexts() []string {
	var out []string
	for _, r := range f.rules {
		out = append(out, f.text(r))
	}
	return out
}

// seed gives the fake a rule found before Apply.
func (f *fakeKernel) seed(t *testing.T, line string) {
	t.Helper()
	w := mustParse(t, line).Ops[0].Wire
	f.rules = append(f.rules, []byte(w))
}

func checkCalls(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("calls:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

const selfText = "-A never,exit -S all -F pid=42"

func TestApplyOrder(t *testing.T) {
	k := newFake(t)
	s := mustParse(t, `-D
-b 100
-f 2
-a always,exit -F arch=b64 -S kill -k signal
-w /etc/shadow -p r -k secret
--backlog_wait_time 10
-r 5
-e 0
`)
	a, err := Apply(k, s, ApplyOptions{SelfPID: 42})
	if err != nil {
		t.Fatal(err)
	}
	checkCalls(t, k.calls, []string{
		"GetStatus",
		"GetRules",
		"DeleteRules",
		"DeleteRule -a never,exit -S all -F pid=42",
		"AddRule " + selfText,
		"SetBacklogLimit 100",
		"SetFailure 2",
		"AddRule -a always,exit -F arch=b64 -S kill -F key=signal",
		"AddRule -w /etc/shadow -p r -k secret",
		"SetBacklogWaitTime 10",
		"SetRateLimit 5",
		"SetEnabled false",
		"SetEnabled true",
		"GetStatus", // the state Apply left, for Drift
		"GetRules",
	})
	if a.Locked() || len(a.Skipped) != 0 {
		t.Errorf("Locked %v, Skipped %v", a.Locked(), a.Skipped)
	}
	want := libaudit.AuditStatus{Enabled: 1, Failure: 2, RateLimit: 5, BacklogLimit: 100, BacklogWaitTime: 10}
	if k.status != want {
		t.Errorf("status %+v, want %+v", k.status, want)
	}
}

// TestApplySelfFirst checks the self-exclusion rule is first in the exit list, also when the set has no
// -D, prepends rules, or deletes everything midway.
func TestApplySelfFirst(t *testing.T) {
	for _, tc := range []struct {
		name, rules string
		want        []string
	}{
		{"no -D", "-b 10\n-a always,exit -F arch=b64 -S kill\n-A always,exit -F arch=b64 -S bpf\n", []string{
			"-a never,exit -S all -F pid=42",
			"-a always,exit -F arch=b64 -S bpf",
			"-a always,exit -F arch=b64 -S acct -F key=found",
			"-a always,exit -F arch=b64 -S kill",
		}},
		{"-D midway", "-a always,exit -F arch=b64 -S kill\n-D\n-A always,exit -F arch=b64 -S bpf\n-w /etc/shadow -p r\n", []string{
			"-a never,exit -S all -F pid=42",
			"-a always,exit -F arch=b64 -S bpf",
			"-w /etc/shadow -p r",
		}},
		{"status only", "-b 10\n", []string{
			"-a never,exit -S all -F pid=42",
			"-a always,exit -F arch=b64 -S acct -F key=found",
		}},
		{"self rule already there", "-a always,exit -F arch=b64 -S kill\n", []string{
			"-a never,exit -S all -F pid=42",
			"-a always,exit -F arch=b64 -S acct -F key=found",
			"-a always,exit -F arch=b64 -S kill",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFake(t)
			k.seed(t, "-a always,exit -F arch=b64 -S acct -k found")
			if tc.name == "self rule already there" {
				k.seed(t, "-a never,exit -F pid=42")
			}
			if _, err := Apply(k, mustParse(t, tc.rules), ApplyOptions{SelfPID: 42}); err != nil {
				t.Fatal(err)
			}
			if got := k.ruleTexts(); !slices.Equal(got, tc.want) {
				t.Errorf("rules:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestApplyNoSelf(t *testing.T) {
	k := newFake(t)
	if _, err := Apply(k, mustParse(t, "-a always,exit -F arch=b64 -S kill\n"), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	checkCalls(t, k.calls, []string{"GetStatus", "GetRules", "AddRule -a always,exit -F arch=b64 -S kill", "SetEnabled true", "GetStatus", "GetRules"})
}

func TestApplyLock(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules string
		opt   ApplyOptions
	}{
		{"option", "-b 10\n-a always,exit -F arch=b64 -S kill\n", ApplyOptions{SelfPID: 42, Lock: true}},
		{"set", "-b 10\n-a always,exit -F arch=b64 -S kill\n-e 2\n", ApplyOptions{SelfPID: 42}},
		{"both", "-b 10\n-a always,exit -F arch=b64 -S kill\n-e 2\n", ApplyOptions{SelfPID: 42, Lock: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFake(t)
			a, err := Apply(k, mustParse(t, tc.rules), tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			checkCalls(t, k.calls, []string{
				"GetStatus",
				"GetRules",
				"SetBacklogLimit 10",
				"DeleteRule -a never,exit -S all -F pid=42",
				"AddRule " + selfText,
				"AddRule -a always,exit -F arch=b64 -S kill",
				"SetEnabled true",
				"SetImmutable",
				"GetStatus",
				"GetRules",
			})
			if !a.Locked() || k.status.Enabled != 2 {
				t.Errorf("Locked %v, kernel enabled %d", a.Locked(), k.status.Enabled)
			}
			n := len(k.calls)
			if err := a.Restore(); err != nil {
				t.Errorf("Restore after lock: %v", err)
			}
			if len(k.calls) != n {
				t.Errorf("Restore after lock called the kernel: %q", k.calls[n:])
			}
		})
	}
}

func TestApplyAlreadyLocked(t *testing.T) {
	k := newFake(t)
	k.status.Enabled = 2
	a, err := Apply(k, Default(), ApplyOptions{SelfPID: 42})
	if !errors.Is(err, ErrLocked) || a != nil {
		t.Fatalf("got %v, %v; want ErrLocked", a, err)
	}
	checkCalls(t, k.calls, []string{"GetStatus"})
}

// TestApplyFailureMode checks failure modes are passed as numbers: libaudit.LogOnFailure and
// PanicOnFailure are both 0.
func TestApplyFailureMode(t *testing.T) {
	if libaudit.LogOnFailure != 0 || libaudit.PanicOnFailure != 0 {
		t.Log("go-libaudit's failure mode constants were fixed; numeric values still work")
	}
	for _, v := range []uint32{0, 1, 2} {
		k := newFake(t)
		k.status.Failure = 9
		if _, err := Apply(k, mustParse(t, fmt.Sprintf("-f %d\n", v)), ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		if k.status.Failure != v {
			t.Errorf("-f %d: kernel failure mode %d", v, k.status.Failure)
		}
	}
}

func TestApplyRestore(t *testing.T) {
	k := newFake(t)
	k.status = libaudit.AuditStatus{Enabled: 0, Failure: 2, RateLimit: 7, BacklogLimit: 320, BacklogWaitTime: 1234, Lost: 3}
	k.seed(t, "-a always,exit -F arch=b64 -S acct -k found1")
	k.seed(t, "-w /etc/passwd -p wa -k found2")
	before, beforeRules := k.status, k.ruleTexts()

	s := mustParse(t, defaultRules+"\n-r 50\n-e 0\n")
	a, err := Apply(k, s, ApplyOptions{SelfPID: 42})
	if err != nil {
		t.Fatal(err)
	}
	if a.Status() != before {
		t.Errorf("Status() %+v, want %+v", a.Status(), before)
	}
	want, _ := s.Rules()
	want = append([]string{"-a never,exit -S all -F pid=42"}, want...)
	if got := k.ruleTexts(); !slices.Equal(got, want) {
		t.Errorf("rules after Apply:\n got %q\nwant %q", got, want)
	}
	if st := k.status; st.Enabled != 1 || st.BacklogLimit != 8192 || st.Failure != 1 || st.BacklogWaitTime != 60000 || st.RateLimit != 50 {
		t.Errorf("status after Apply %+v", st)
	}
	if err := a.Restore(); err != nil {
		t.Fatal(err)
	}
	if k.status != before {
		t.Errorf("status after Restore %+v, want %+v", k.status, before)
	}
	if got := k.ruleTexts(); !slices.Equal(got, beforeRules) {
		t.Errorf("rules after Restore %q, want %q", got, beforeRules)
	}
}

// TestRestoreOnlyChanged checks Restore sets back only what Apply set.
func TestRestoreOnlyChanged(t *testing.T) {
	k := newFake(t)
	a, err := Apply(k, mustParse(t, "-b 100\n"), ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	k.calls = nil
	if err := a.Restore(); err != nil {
		t.Fatal(err)
	}
	checkCalls(t, k.calls, []string{"SetBacklogLimit 64", "SetEnabled false"})
}

func TestApplyMidwayFailure(t *testing.T) {
	for _, failOn := range []string{
		"AddRule -a always,exit -F arch=b64 -S bpf",
		"SetBacklogWaitTime",
		"AddRule " + selfText,
		"SetEnabled true",
		"SetImmutable",
	} {
		t.Run(failOn, func(t *testing.T) {
			k := newFake(t)
			k.seed(t, "-a always,exit -F arch=b64 -S acct -k found")
			before, beforeRules := k.status, k.ruleTexts()
			k.failOn = failOn
			a, err := Apply(k, Default(), ApplyOptions{SelfPID: 42, Lock: true})
			if a != nil || err == nil || !strings.Contains(err.Error(), "injected failure") {
				t.Fatalf("got %v, %v", a, err)
			}
			if strings.HasPrefix(failOn, "AddRule -a") {
				var oe *OpError
				if !errors.As(err, &oe) || oe.File != "default.rules" || oe.Line == 0 ||
					!strings.HasPrefix(err.Error(), fmt.Sprintf("default.rules:%d: -a always,exit -F arch=b64 -S bpf -F key=bpf: ", oe.Line)) {
					t.Errorf("error %q is not an *OpError naming the line", err)
				}
			}
			if k.status != before {
				t.Errorf("status after failure %+v, want %+v", k.status, before)
			}
			if got := k.ruleTexts(); !slices.Equal(got, beforeRules) {
				t.Errorf("rules after failure %q, want %q", got, beforeRules)
			}
		})
	}
}

func TestApplyContinue(t *testing.T) {
	const rules = "-a always,exit -F arch=b64 -S kill\n-a always,exit -F arch=b64 -S bpf\n-a always,exit -F arch=b64 -S ptrace\n-b 5\n"
	for _, sw := range []string{"-c", "-i"} {
		t.Run(sw, func(t *testing.T) {
			k := newFake(t)
			k.failOn = "AddRule -a always,exit -F arch=b64 -S bpf"
			a, err := Apply(k, mustParse(t, sw+"\n"+rules), ApplyOptions{})
			if a == nil {
				t.Fatalf("Apply: %v", err)
			}
			var oe *OpError
			if len(a.Skipped) != 1 || !errors.As(a.Skipped[0], &oe) || oe.Line != 3 {
				t.Fatalf("Skipped %v", a.Skipped)
			}
			if sw == "-c" && !errors.As(err, &oe) {
				t.Errorf("-c: error %v, want the skipped *OpError", err)
			}
			if sw == "-i" && err != nil {
				t.Errorf("-i: error %v, want nil", err)
			}
			want := []string{"-a always,exit -F arch=b64 -S kill", "-a always,exit -F arch=b64 -S ptrace"}
			if got := k.ruleTexts(); !slices.Equal(got, want) || k.status.BacklogLimit != 5 || k.status.Enabled != 1 {
				t.Errorf("kernel after %s: rules %q, status %+v", sw, got, k.status)
			}
		})
	}
}

// TestApplyFoundAfterCrash: a run after a killed one is given the state the killed run found; Restore puts
// that back, not the killed run's rules and settings that were still in the kernel.
func TestApplyFoundAfterCrash(t *testing.T) {
	k := newFake(t)
	k.seed(t, "-a always,exit -F arch=b64 -S acct -k original")
	original, err := Apply(k, mustParse(t, defaultRules), ApplyOptions{SelfPID: 41})
	if err != nil {
		t.Fatal(err)
	}
	found := original.Found()
	beforeRules := []string{"-a always,exit -F arch=b64 -S acct -F key=original"}
	// The run that applied `original` is killed: its rules and settings stay. The next run:
	a, err := Apply(k, mustParse(t, defaultRules), ApplyOptions{SelfPID: 42, Found: &found})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Restore(); err != nil {
		t.Fatal(err)
	}
	if st := k.status; st.Enabled != 0 || st.BacklogLimit != 64 || st.BacklogWaitTime != 15000 || st.Failure != 1 || st.RateLimit != 0 {
		t.Errorf("status after Restore %+v, want the state the killed run found", st)
	}
	if got := k.ruleTexts(); !slices.Equal(got, beforeRules) {
		t.Errorf("rules after Restore %q, want %q", got, beforeRules)
	}
}

// TestDriftReassert: after Apply, whatever someone else changes (rules deleted, auditing disabled, the
// backlog limit) is seen by Drift and put back by Reassert, and then nothing differs; a locked
// configuration is never touched.
func TestDriftReassert(t *testing.T) {
	k := newFake(t)
	a, err := Apply(k, mustParse(t, "-D\n-b 8192\n-a always,exit -F arch=b64 -S kill\n-a always,exit -F arch=b64 -S ptrace\n"), ApplyOptions{SelfPID: 42})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := a.Drift(); err != nil || d != "" {
		t.Fatalf("Drift right after Apply = %q, %v", d, err)
	}
	k.rules = k.rules[:1] // auditctl -D would leave none; any change counts
	k.status.Enabled, k.status.BacklogLimit = 0, 64
	d, err := a.Drift()
	if err != nil || d != "1 rules loaded, 3 applied, enabled changed (applied 1), backlog_limit changed (applied 8192)" {
		t.Fatalf("Drift = %q, %v", d, err)
	}
	k.calls = nil
	if what, err := a.Reassert(); err != nil || what != d {
		t.Fatalf("Reassert = %q, %v; want %q", what, err, d)
	}
	if d, err := a.Drift(); err != nil || d != "" || len(k.rules) != 3 || k.status.Enabled != 1 || k.status.BacklogLimit != 8192 {
		t.Fatalf("after Reassert: drift %q (%v), %d rules, enabled %d, backlog %d", d, err, len(k.rules), k.status.Enabled, k.status.BacklogLimit)
	}
	for _, c := range k.calls {
		if c == "SetFailure 1" || c == "SetRateLimit 0" {
			t.Errorf("Reassert set %s, which had not changed", c)
		}
	}
}
