// Package rules holds the default rule set, reads auditctl-syntax rule files and programs the kernel's
// audit configuration with them.
//
// Invariant: Apply programs the kernel over netlink only (it never shells out to auditctl), the daemon's
// own process is excluded by a rule kept first in the exit list, and Restore undoes exactly what Apply
// changed unless the configuration was locked (-e 2), which only a reboot undoes.
//
// The syntax is auditctl(8)'s, one command per line as in /etc/audit/rules.d; the wire format of -a, -A,
// -d, -w and -W lines comes from go-libaudit's rule/flags.Parse and rule.Build, the rest are audit status
// changes.
package rules

import (
	"bufio"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/elastic/go-libaudit/v2/rule"
	"github.com/elastic/go-libaudit/v2/rule/flags"
)

// OpKind says what an Op changes in the kernel.
type OpKind int

// The kinds of Op, one per auditctl command.
const (
	DeleteAll       OpKind = iota + 1 // -D
	AddRule                           // -a, -A, -w
	DeleteRule                        // -d, -W
	BacklogLimit                      // -b N
	BacklogWaitTime                   // --backlog_wait_time N (jiffies)
	FailureMode                       // -f 0|1|2
	RateLimit                         // -r N (messages per second, 0 = unlimited)
	Enabled                           // -e 0|1|2
)

var kindNames = map[OpKind]string{
	DeleteAll: "DeleteAll", AddRule: "AddRule", DeleteRule: "DeleteRule", BacklogLimit: "BacklogLimit",
	BacklogWaitTime: "BacklogWaitTime", FailureMode: "FailureMode", RateLimit: "RateLimit", Enabled: "Enabled",
}

func (k OpKind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return "OpKind(" + strconv.Itoa(int(k)) + ")"
}

// Op is one change to the kernel's audit configuration, from one line of a rule file.
type Op struct {
	Kind OpKind
	Line int    // 1-based line number in the file
	Text string // the command as auditctl would print it, e.g. "-a always,exit -F arch=b64 -S kill -F key=signal"
	// Wire is the kernel's audit_rule_data for AddRule and DeleteRule; a prepended (-A) rule carries
	// AUDIT_FILTER_PREPEND in its flags.
	Wire rule.WireFormat
	// Value is the number for the status kinds. FailureMode: 0 silent, 1 printk, 2 panic.
	// Enabled: 0 off, 1 on, 2 on and locked until reboot.
	Value uint32
}

// Set is a parsed rule file: its operations in file order.
type Set struct {
	File string // the name given to Parse, used in error messages
	Ops  []Op
	// Continue (-c) and IgnoreErrors (-i) apply to the whole file, wherever the switch appears: Apply skips
	// an operation the kernel refuses instead of undoing everything. See Apply for how each is reported.
	Continue     bool
	IgnoreErrors bool
}

// ParseError is a line of a rule file that cannot be parsed.
type ParseError struct {
	File string
	Line int
	Text string // the line as written
	Err  error
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("%s:%d: %s: %v", e.File, e.Line, e.Text, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

// Parse reads auditctl-syntax rules from r; name is used in error messages. It builds the wire format
// without talking to the kernel, so a rule the kernel refuses (say, a watch under a missing directory)
// parses and fails only in Apply. A -w watch is built as a directory watch when the path is a directory
// on this machine, as auditctl does.
//
// --loginuid-immutable and --reset-lost are refused: the first is a one-way switch outside this package's
// undo contract, the second would erase the kernel's count of lost events, which is evidence.
// -e 2 must be the last command: the kernel refuses every change after it.
func Parse(r io.Reader, name string) (*Set, error) {
	s := &Set{File: name}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		if s.Locks() {
			return nil, &ParseError{name, n, text, errors.New("nothing may follow -e 2: the kernel refuses every change once locked")}
		}
		ops, err := s.parseLine(text)
		if err != nil {
			return nil, &ParseError{name, n, text, err}
		}
		for _, op := range ops {
			op.Line = n
			s.Ops = append(s.Ops, op)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return s, nil
}

// ParseFile parses the rule file at path.
func ParseFile(path string) (*Set, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f, path)
}

//go:embed default.rules
var defaultRules string

// Default returns the embedded default rule set for a bastion host (default.rules). It has no -e 2.
func Default() *Set {
	s, err := Parse(strings.NewReader(defaultRules), "default.rules")
	if err != nil {
		// TestDefault guards this; a broken embedded file is a build defect, not a runtime condition.
		panic("rules: embedded default.rules: " + err.Error())
	}
	return s
}

// Locks reports whether the set ends with -e 2, locking the configuration until reboot.
func (s *Set) Locks() bool {
	return len(s.Ops) > 0 && s.Ops[len(s.Ops)-1].Kind == Enabled && s.Ops[len(s.Ops)-1].Value == 2
}

// statusOptions maps each status option to its kind and its largest value.
var statusOptions = map[string]struct {
	kind OpKind
	max  uint64
}{
	"-b":                  {BacklogLimit, math.MaxUint32},
	"-f":                  {FailureMode, 2},
	"-r":                  {RateLimit, math.MaxUint32},
	"--backlog_wait_time": {BacklogWaitTime, math.MaxInt32},
	"-e":                  {Enabled, 2},
}

var statusNames = map[OpKind]string{
	BacklogLimit: "-b", FailureMode: "-f", RateLimit: "-r", BacklogWaitTime: "--backlog_wait_time", Enabled: "-e",
}

func (s *Set) parseLine(text string) ([]Op, error) {
	args := strings.Fields(text)
	if args[0] == "-D" {
		if len(args) > 1 {
			return nil, errors.New("-D takes no other options here (deleting by key is not supported)")
		}
		return []Op{{Kind: DeleteAll, Text: "-D"}}, nil
	}
	for _, a := range args {
		switch a {
		case "-a", "-A", "-d", "-w", "-W":
			op, err := parseRule(args)
			return []Op{op}, err
		}
	}
	var ops []Op
	for i := 0; i < len(args); i++ {
		opt, val, hasVal := strings.Cut(args[i], "=")
		switch opt {
		case "-c":
			s.Continue = true
			continue
		case "-i":
			s.IgnoreErrors = true
			continue
		case "--loginuid-immutable":
			return nil, errors.New("--loginuid-immutable is not supported: it cannot be undone until reboot")
		case "--reset-lost":
			return nil, errors.New("--reset-lost is not supported: the lost count is evidence")
		}
		o, ok := statusOptions[opt]
		if !ok || (hasVal && !strings.HasPrefix(opt, "--")) {
			return nil, fmt.Errorf("unknown or unsupported option %q", args[i])
		}
		if !hasVal {
			if i+1 == len(args) {
				return nil, fmt.Errorf("%s needs a value", opt)
			}
			i++
			val = args[i]
		}
		v, err := strconv.ParseUint(val, 10, 64)
		if err != nil || v > o.max {
			return nil, fmt.Errorf("%s: invalid value %q (0 to %d)", opt, val, o.max)
		}
		ops = append(ops, Op{Kind: o.kind, Text: opt + " " + strconv.FormatUint(v, 10), Value: uint32(v)})
	}
	return ops, nil
}

// parseRule builds an -a/-A/-w line, or a -d/-W line as the matching -a/-w.
func parseRule(args []string) (Op, error) {
	// auditctl splits on blanks and takes quotes literally; flags.Parse would unquote them.
	if i := slices.IndexFunc(args, func(a string) bool { return strings.ContainsAny(a, `"'\`) }); i >= 0 {
		return Op{}, fmt.Errorf("quotes and backslashes are not supported in rules (auditctl takes them literally): %s", args[i])
	}
	args = slices.Clone(args)
	op := Op{Kind: AddRule}
	prepend := false
	for i, a := range args {
		switch a {
		case "-d":
			args[i], op.Kind = "-a", DeleteRule
		case "-W":
			args[i], op.Kind = "-w", DeleteRule
		case "-A":
			prepend = true
		}
	}
	r, err := flags.Parse(strings.Join(args, " "))
	if err != nil {
		return Op{}, err
	}
	w, err := rule.Build(r)
	if err != nil {
		return Op{}, err
	}
	text, err := commandLine(w)
	if err != nil {
		return Op{}, err
	}
	// go-libaudit builds -A exactly like -a: the kernel prepends only when asked in the flags.
	if prepend && op.Kind == AddRule {
		w = withPrepend(w)
		text = "-A" + strings.TrimPrefix(text, "-a")
	}
	if op.Kind == DeleteRule {
		if r.TypeOf() == rule.FileWatchRuleType {
			text = "-W" + strings.TrimPrefix(text, "-w")
		} else {
			text = "-d" + strings.TrimPrefix(text, "-a")
		}
	}
	op.Wire, op.Text = w, text
	return op, nil
}

// Format writes the effective configuration of s in auditctl syntax, one command per line: -D if the set
// starts from an empty list, the last -b, -f, -r and --backlog_wait_time values, the rules in the order
// the kernel lists them (as `auditctl -l` does, by filter list, prepends first, deletions applied), and
// the last -e.
func (s *Set) Format(w io.Writer) error {
	var b strings.Builder
	last := map[OpKind]uint32{}
	deleteAll := false
	for _, op := range s.Ops {
		switch op.Kind {
		case DeleteAll:
			deleteAll = true
		case AddRule, DeleteRule:
		default:
			last[op.Kind] = op.Value
		}
	}
	if deleteAll {
		b.WriteString("-D\n")
	}
	for _, k := range []OpKind{BacklogLimit, FailureMode, RateLimit, BacklogWaitTime} {
		if v, ok := last[k]; ok {
			fmt.Fprintf(&b, "%s %d\n", statusNames[k], v)
		}
	}
	rs, err := s.Rules()
	if err != nil {
		return err
	}
	for _, r := range rs {
		b.WriteString(r + "\n")
	}
	if v, ok := last[Enabled]; ok {
		fmt.Fprintf(&b, "-e %d\n", v)
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// Rules returns the rules the kernel would list after applying s to an empty rule list, as
// rule.ToCommandLine prints them.
func (s *Set) Rules() ([]string, error) {
	var list []rule.WireFormat
	for _, op := range s.Ops {
		switch op.Kind {
		case DeleteAll:
			list = nil
		case AddRule:
			w := withoutPrepend(op.Wire)
			if isPrepend(op.Wire) {
				list = slices.Insert(list, 0, w)
			} else {
				list = append(list, w)
			}
		case DeleteRule:
			if i := slices.IndexFunc(list, func(w rule.WireFormat) bool { return sameRule(w, op.Wire) }); i >= 0 {
				list = slices.Delete(list, i, i+1)
			}
		}
	}
	slices.SortStableFunc(list, func(a, b rule.WireFormat) int { return int(listOf(a)) - int(listOf(b)) })
	out := make([]string, len(list))
	for i, w := range list {
		var err error
		if out[i], err = commandLine(w); err != nil {
			return nil, err
		}
	}
	return out, nil
}
