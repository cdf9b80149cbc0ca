package alert

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/audit/raw"
)

// Class is what an event is to the administrator, in logcheck's order of severity.
type Class int

// Classes, least severe first. Their names are how docs/alert.md and reports name them.
const (
	Ignored   Class = iota // routine: matched by the level's ignore lists, or held back by a cracking/violations ignore list
	Unusual                // logcheck's "System Events": nothing ignores it
	Violation              // logcheck's "Security Events": violations.d
	Attack                 // logcheck's "Security Alerts": cracking.d
)

var classNames = []string{"ignored", "unusual", "violation", "attack"}

func (c Class) String() string {
	if c >= 0 && int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// Item is one thing to classify: a leaf as archive.Follower yields it, with its index, or an alarm
// that is not a leaf (the store's, the daemon's).
type Item struct {
	Index uint64
	Leaf  *archive.Leaf // nil for an alarm
	Alarm *Alarm
}

// Match is the verdict on one Item.
type Match struct {
	Class Class
	// Rule is the pattern file that decided, relative to the rule directory ("cracking.d/auditarch",
	// "ignore.d.server/auditarch"); "" when no file matched (unusual) or a Sigma rule alone decided.
	Rule string
	// Sigma is the most severe Sigma rule that matched, nil if none. Class is the more severe of the
	// pattern files' verdict and the Sigma rule's level.
	Sigma *SigmaRule
	Line  string // the rendering the patterns matched (docs/alert.md)
	Time  int64  // unix nanoseconds: the event's kernel time, the leaf's or the alarm's time
	Index uint64 // the leaf index (0 for an alarm)
}

// Classifier classifies items with the pattern files of one rule directory at one level, and Sigma
// rules. It is safe for concurrent use.
type Classifier struct {
	level                        Level
	cracking, crackingIgnore     *ruleDir
	violations, violationsIgnore *ruleDir
	ignore                       []*ruleDir // the level's ignore.d.* directories
	sigma                        *sigmaSet  // nil without Sigma rules
	pool                         sync.Pool  // *scratch
}

// Load reads the pattern files under dir (logcheck's layout, docs/alert.md) for level, and the Sigma
// rules in sigmaDir ("" for none). A pattern that does not compile is a *PatternError naming file:line.
func Load(dir string, level Level, sigmaDir string) (*Classifier, error) {
	if level < Paranoid || level > Workstation {
		return nil, fmt.Errorf("unknown level %d", int(level))
	}
	c := &Classifier{level: level}
	budget := MaxPatterns
	var err error
	for _, d := range []struct {
		dst **ruleDir
		sub string
	}{{&c.cracking, DirCracking}, {&c.crackingIgnore, DirCrackingIgnore}, {&c.violations, DirViolations}, {&c.violationsIgnore, DirViolationsIgnore}} {
		if *d.dst, err = readDir(dir, d.sub, &budget); err != nil {
			return nil, err
		}
	}
	c.cracking.holdBy(c.crackingIgnore)
	c.violations.holdBy(c.violationsIgnore)
	for _, sub := range level.dirs() {
		d, err := readDir(dir, sub, &budget)
		if err != nil {
			return nil, err
		}
		c.ignore = append(c.ignore, d)
	}
	if sigmaDir != "" {
		if c.sigma, err = loadSigma(sigmaDir); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Level returns the level the classifier was loaded for.
func (c *Classifier) Level() Level { return c.level }

// SigmaRules returns the Sigma rules loaded, in load order.
func (c *Classifier) SigmaRules() []*SigmaRule {
	if c.sigma == nil {
		return nil
	}
	out := make([]*SigmaRule, len(c.sigma.rules))
	for i, r := range c.sigma.rules {
		out[i] = &r.info
	}
	return out
}

// Classify renders it and classifies it: the pattern files in logcheck's order (ClassifyLine), then
// the Sigma rules on each raw record and on the decoded event.
func (c *Classifier) Classify(it Item) Match {
	m := Match{Index: it.Index}
	var ev *audit.Event
	var rawEv *raw.Event
	sc := c.getScratch()
	defer c.pool.Put(sc)
	switch {
	case it.Alarm != nil:
		m.Time = it.Alarm.Time
		sc.line = AppendAlarm(sc.line[:0], it.Alarm)
		m.Line = string(sc.line)
	case it.Leaf == nil:
		m.Line = "EMPTY"
	case it.Leaf.Kind == archive.LeafEvent || it.Leaf.Kind == archive.LeafLost:
		rawEv = &it.Leaf.Event
		ev = audit.Decode(rawEv)
		m.Time = rawEv.Sec*1e9 + int64(rawEv.Msec)*1e6
		sc.line = AppendEvent(sc.line[:0], ev)
		m.Line = string(sc.line)
	case it.Leaf.Kind == archive.LeafPolicy:
		var p raw.Policy
		m.Time = it.Leaf.Time
		if err := json.Unmarshal(it.Leaf.Body, &p); err != nil {
			m.Line = "POLICY unreadable=true"
			break
		}
		ev = audit.DecodePolicy(&p, it.Leaf.Time)
		m.Line = string(AppendEvent(nil, ev))
	default:
		m.Time = it.Leaf.Time
		m.Line = string(AppendControl(nil, it.Leaf))
	}
	m.Class, m.Rule = c.ClassifyLine(m.Line)
	if c.sigma != nil {
		if r := c.sigma.match(sc, rawEv, ev, it.Alarm, m.Line); r != nil {
			m.Sigma = &r.info
			if r.class > m.Class {
				m.Class = r.class
			}
		}
	}
	return m
}

func (c *Classifier) getScratch() *scratch {
	if s, ok := c.pool.Get().(*scratch); ok {
		return s
	}
	return &scratch{}
}

// ClassifyLine classifies one rendered line with the pattern files, in logcheck's order
// (docs/alert.md, "Classification"), and names the file that decided.
//
//  1. Attack: a file F of cracking.d matches, and neither cracking.ignore.d/F, cracking.ignore.d/logcheck-F,
//     cracking.ignore.d/local nor any cracking.ignore.d/local-* does. A file named "logcheck" reports
//     only what every file of cracking.ignore.d and every other file of cracking.d leave.
//  2. A line that any cracking.d pattern matches is not reported further (logcheck removes it from the
//     later sections): Ignored, naming the ignore file that held it back.
//  3. Violation and 4.: the same with violations.d and violations.ignore.d.
//  5. Ignored when a file of the level's ignore.d.* directories matches; otherwise Unusual.
func (c *Classifier) ClassifyLine(line string) (Class, string) {
	if f, held := raise(c.cracking, c.crackingIgnore, line); f != nil {
		if held == nil {
			return Attack, f.path
		}
		return Ignored, held.path
	}
	if f, held := raise(c.violations, c.violationsIgnore, line); f != nil {
		if held == nil {
			return Violation, f.path
		}
		return Ignored, held.path
	}
	for _, d := range c.ignore {
		if f := d.match(line); f != nil {
			return Ignored, f.path
		}
	}
	return Unusual, ""
}

// raise is logcheck's greplogoutput for one line: the first file of dir that matches and reports it
// (held nil), or, when every matching file is held back by ign, the first matching file and the ignore
// file that held it. f is nil when no file of dir matches.
func raise(dir, ign *ruleDir, line string) (f, held *ruleFile) {
	for _, rf := range dir.files {
		if rf.name == "logcheck" || !rf.match(line) {
			continue
		}
		h := rf.heldBy(line)
		if h == nil {
			return rf, nil
		}
		if f == nil {
			f, held = rf, h
		}
	}
	if lc := dir.byName["logcheck"]; lc != nil && lc.match(line) {
		if f != nil {
			return f, held // another file of dir matched: logcheck's own file never reports it
		}
		if h := ign.match(line); h != nil {
			return lc, h
		}
		return lc, nil
	}
	return f, held
}

// holdBy records, for each file F of d, the files of ign that hold back what F matches: ign/F,
// ign/logcheck-F, ign/local, ign/local-*, in that order.
func (d *ruleDir) holdBy(ign *ruleDir) {
	for _, f := range d.files {
		f.holders = nil
		for _, n := range []string{f.name, "logcheck-" + f.name, "local"} {
			if h := ign.byName[n]; h != nil {
				f.holders = append(f.holders, h)
			}
		}
		for _, h := range ign.files {
			if len(h.name) > len("local-") && h.name[:len("local-")] == "local-" {
				f.holders = append(f.holders, h)
			}
		}
	}
}

// heldBy returns the ignore file that holds back what f matched in line (holdBy), or nil.
func (f *ruleFile) heldBy(line string) *ruleFile {
	for _, h := range f.holders {
		if h.match(line) {
			return h
		}
	}
	return nil
}
