package alert

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"regexp/syntax"
	"slices"
	"sort"
	"strings"
)

// Limits on what Load reads, checked before anything is allocated for it (docs/alert.md, "Limits").
const (
	MaxRuleFileSize = 1 << 20 // bytes of one pattern file
	MaxLineLength   = 4096    // bytes of one pattern
	MaxPatterns     = 20000   // patterns in all the files of one directory tree
	MaxRuleFiles    = 1000    // files in one rule directory
)

// The rule directories (logcheck's layout).
const (
	DirCracking         = "cracking.d"
	DirCrackingIgnore   = "cracking.ignore.d"
	DirViolations       = "violations.d"
	DirViolationsIgnore = "violations.ignore.d"
	DirIgnorePrefix     = "ignore.d." // + the level's name
)

// Level is logcheck's report level: which ignore.d.* directories apply. Paranoid uses
// ignore.d.paranoid; Server adds ignore.d.server; Workstation adds ignore.d.workstation (it ignores most).
type Level int

const (
	Paranoid Level = iota
	Server
	Workstation
)

var levelNames = []string{"paranoid", "server", "workstation"}

func (l Level) String() string {
	if l >= 0 && int(l) < len(levelNames) {
		return levelNames[l]
	}
	return fmt.Sprintf("level(%d)", int(l))
}

// ParseLevel reads "paranoid", "server" or "workstation".
func ParseLevel(s string) (Level, error) {
	for i, n := range levelNames {
		if s == n {
			return Level(i), nil
		}
	}
	return 0, fmt.Errorf("unknown level %q (paranoid, server or workstation)", s)
}

// dirs returns the ignore directories of the level, cumulative as logcheck's REPORTLEVELS.
func (l Level) dirs() []string {
	var d []string
	for i := l; i >= Paranoid; i-- {
		d = append(d, DirIgnorePrefix+levelNames[i])
	}
	return d
}

// runPartsName is run-parts' default name rule (Debian run-parts, without --lsbsysinit): upper- and
// lower-case letters, digits, underscores and hyphens. "foo.conf", "foo~" and "foo.dpkg-old" are skipped.
var runPartsName = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// pattern is one compiled line.
type pattern struct {
	re *regexp.Regexp
	// lits: every match contains one of them (nil when none is known): checked first, it is cheap
	// (a regular expression with ".*" costs microseconds on a line; strings.Contains tens of ns).
	lits []string
	// keys are the line heads (lineKey) a match can have: nil when the pattern is not anchored on
	// them (it is tried on every line).
	keys []string
}

func (p *pattern) match(line string) bool {
	if p.lits != nil && !containsAny(line, p.lits) {
		return false
	}
	return p.re.MatchString(line)
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// ruleFile is one file's patterns.
type ruleFile struct {
	name     string // the file name
	path     string // dir/name relative to the rule directory, as a Match names it
	patterns []pattern
	always   []int            // patterns tried on every line
	byKey    map[string][]int // patterns by the line head (lineKey) their matches have
	holders  []*ruleFile      // in cracking.d and violations.d: the ignore files that hold back its matches
}

// match reports whether a pattern of f matches line. Only the patterns that can match a line with
// its head (lineKey) are tried: a line is tested against a few regular expressions, not all of them
// (most patterns are anchored on the kind word and the syscall name).
func (f *ruleFile) match(line string) bool {
	kind, sys := lineKey(line)
	for _, i := range f.always {
		if f.patterns[i].match(line) {
			return true
		}
	}
	for _, list := range [2][]int{f.byKey[kind], f.byKey[sys]} {
		for _, i := range list {
			if f.patterns[i].match(line) {
				return true
			}
		}
	}
	return false
}

// lineKey returns the head of a line: its kind word ("SYSCALL", "USER_AUTH"...), and for a syscall's
// line also "SYSCALL syscall=NAME" ("" otherwise).
func lineKey(line string) (kind, sys string) {
	sp := strings.IndexByte(line, ' ')
	if sp < 0 {
		return line, ""
	}
	kind = line[:sp]
	const sc = "SYSCALL syscall="
	if kind == "SYSCALL" && strings.HasPrefix(line, sc) {
		if e := strings.IndexByte(line[len(sc):], ' '); e >= 0 {
			return kind, line[:len(sc)+e]
		}
		return kind, line
	}
	return kind, ""
}

// index files the patterns under the line heads they can match (pattern.keys).
func (f *ruleFile) index() {
	f.byKey = map[string][]int{}
	for i, p := range f.patterns {
		if p.keys == nil {
			f.always = append(f.always, i)
			continue
		}
		for _, k := range p.keys {
			f.byKey[k] = append(f.byKey[k], i)
		}
	}
	for k, l := range f.byKey { // a pattern under both a kind and a name of it is tried once per list
		f.byKey[k] = slices.Compact(l)
	}
}

// maxPrefixes bounds the literal prefixes of one pattern that headKeys expands.
const maxPrefixes = 256

// headKeys returns the line heads (lineKey) that every match of an anchored pattern has, or nil when
// they are not known: "^SYSCALL syscall=(kill|tkill) " gives "SYSCALL syscall=kill" and "SYSCALL
// syscall=tkill"; "^SYSCALL .*" gives "SYSCALL"; "^(USER_AUTH|LOGIN) " gives both kinds.
func headKeys(re *syntax.Regexp) []string {
	if re.Op != syntax.OpConcat || len(re.Sub) < 2 || (re.Sub[0].Op != syntax.OpBeginText && re.Sub[0].Op != syntax.OpBeginLine) {
		return nil
	}
	pre, _ := prefixes(&syntax.Regexp{Op: syntax.OpConcat, Sub: re.Sub[1:]})
	if len(pre) == 0 {
		return nil
	}
	var keys []string
	for _, p := range pre {
		sp := strings.IndexByte(p, ' ')
		if sp <= 0 {
			return nil // the kind word is not complete: any line may match
		}
		kind := p[:sp]
		const sc = "SYSCALL syscall="
		if kind == "SYSCALL" && strings.HasPrefix(p, sc) {
			if e := strings.IndexByte(p[len(sc):], ' '); e > 0 {
				keys = append(keys, p[:len(sc)+e])
				continue
			}
		}
		keys = append(keys, kind)
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// prefixes returns the literal strings one of which starts every match of re, and whether they are
// whole matches (complete: what follows re can be appended). nil: nothing is known.
func prefixes(re *syntax.Regexp) (out []string, complete bool) {
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 {
			return nil, false
		}
		return []string{string(re.Rune)}, true
	case syntax.OpEmptyMatch:
		return []string{""}, true
	case syntax.OpCharClass:
		var rs []string
		for i := 0; i+1 < len(re.Rune); i += 2 {
			for r := re.Rune[i]; r <= re.Rune[i+1]; r++ {
				if len(rs) >= 16 {
					return nil, false
				}
				rs = append(rs, string(r))
			}
		}
		return rs, true
	case syntax.OpCapture:
		return prefixes(re.Sub[0])
	case syntax.OpQuest:
		sub, ok := prefixes(re.Sub[0])
		if !ok {
			return nil, false
		}
		return append([]string{""}, sub...), true
	case syntax.OpAlternate:
		complete = true
		for _, s := range re.Sub {
			p, ok := prefixes(s)
			if p == nil {
				return nil, false
			}
			out = append(out, p...)
			complete = complete && ok
			if len(out) > maxPrefixes {
				return nil, false
			}
		}
		return out, complete
	case syntax.OpConcat:
		out = []string{""}
		for _, s := range re.Sub {
			p, ok := prefixes(s)
			if p == nil {
				return out, false
			}
			if len(out)*len(p) > maxPrefixes {
				return out, false
			}
			next := make([]string, 0, len(out)*len(p))
			for _, a := range out {
				for _, b := range p {
					next = append(next, a+b)
				}
			}
			out = next
			if !ok {
				return out, false
			}
		}
		return out, true
	}
	return nil, false
}

// ruleDir is the files of one directory, in run-parts order.
type ruleDir struct {
	files  []*ruleFile
	byName map[string]*ruleFile
}

// match returns the first file of d that matches line, or nil.
func (d *ruleDir) match(line string) *ruleFile {
	for _, f := range d.files {
		if f.match(line) {
			return f
		}
	}
	return nil
}

// readDir loads the pattern files of dir/sub. A missing directory is empty. budget counts the patterns
// left under MaxPatterns.
func readDir(dir, sub string, budget *int) (*ruleDir, error) {
	d := &ruleDir{byName: map[string]*ruleFile{}}
	full := filepath.Join(dir, sub)
	ents, err := os.ReadDir(full)
	if errors.Is(err, fs.ErrNotExist) {
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	if len(ents) > MaxRuleFiles {
		return nil, fmt.Errorf("%s holds %d entries, more than %d", full, len(ents), MaxRuleFiles)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		if runPartsName.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names) // run-parts sorts in the C locale: byte order
	for _, name := range names {
		path := filepath.Join(full, name)
		fi, err := os.Stat(path) // run-parts follows symbolic links
		if err != nil {
			return nil, err
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		if fi.Size() > MaxRuleFileSize {
			return nil, fmt.Errorf("%s: %d bytes, more than %d", path, fi.Size(), MaxRuleFileSize)
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(io.LimitReader(f, MaxRuleFileSize+1))
		f.Close()
		if err != nil {
			return nil, err
		}
		if len(b) > MaxRuleFileSize {
			return nil, fmt.Errorf("%s: more than %d bytes", path, MaxRuleFileSize)
		}
		rf, err := parseRules(path, b, budget)
		if err != nil {
			return nil, err
		}
		rf.name, rf.path = name, sub+"/"+name
		d.files = append(d.files, rf)
		d.byName[name] = rf
	}
	return d, nil
}

// parseRules compiles one file: one extended regular expression per line; lines that are blank or
// start with '#' are skipped (logcheck: grep -v '^[[:space:]]*$|^#').
func parseRules(path string, b []byte, budget *int) (*ruleFile, error) {
	rf := &ruleFile{}
	for n, line := range strings.Split(string(b), "\n") {
		if len(line) > MaxLineLength {
			return nil, &PatternError{Path: path, Line: n + 1, Err: fmt.Errorf("longer than %d bytes", MaxLineLength)}
		}
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" || line[0] == '#' {
			continue
		}
		if *budget <= 0 {
			return nil, &PatternError{Path: path, Line: n + 1, Err: fmt.Errorf("more than %d patterns in all", MaxPatterns)}
		}
		*budget--
		p, err := compile(line)
		if err != nil {
			return nil, &PatternError{Path: path, Line: n + 1, Err: err}
		}
		rf.patterns = append(rf.patterns, p)
	}
	rf.index()
	return rf, nil
}

// PatternError is a pattern file that cannot be used: the file, the line (1-based) and why.
type PatternError struct {
	Path string
	Line int
	Err  error
}

func (e *PatternError) Error() string { return fmt.Sprintf("%s:%d: %v", e.Path, e.Line, e.Err) }
func (e *PatternError) Unwrap() error { return e.Err }

func compile(expr string) (pattern, error) {
	re, err := regexp.Compile(expr)
	if err != nil {
		return pattern{}, err
	}
	p := pattern{re: re}
	if st, err := syntax.Parse(expr, syntax.Perl); err == nil {
		p.lits = requiredAny(st.Simplify())
		p.keys = headKeys(st)
	}
	return p, nil
}

// requiredAny returns strings one of which every match of re contains, or nil: the longest literal
// every match contains, or, where a concatenation holds an alternation, the literal prefixes of what
// follows a position (`path="/(etc/crontab|var/spool/cron/)` gives `path="/etc/crontab` and
// `path="/var/spool/cron/`), whichever has the longest shortest string.
//
// The literal head of an anchored pattern ("^SYSCALL syscall=(execve|execveat) ") is left out when
// something after it qualifies: the dispatch by line head (headKeys) already guarantees it, and a
// prefilter that every line of the kind passes would send each to the regular expression, which costs
// milliseconds on a line of many kilobytes of arguments.
func requiredAny(re *syntax.Regexp) []string {
	if re.Op == syntax.OpConcat && len(re.Sub) > 2 && (re.Sub[0].Op == syntax.OpBeginText || re.Sub[0].Op == syntax.OpBeginLine) {
		h := 1
		for h < len(re.Sub) {
			if _, complete := prefixes(re.Sub[h]); !complete {
				break
			}
			h++
		}
		if h < len(re.Sub) {
			if lits := requiredAnyIn(&syntax.Regexp{Op: syntax.OpConcat, Sub: re.Sub[h:]}); lits != nil {
				return lits
			}
		}
	}
	return requiredAnyIn(re)
}

func requiredAnyIn(re *syntax.Regexp) []string {
	var best []string
	score := 0
	if l := requiredLiteral(re); l != "" {
		best, score = []string{l}, len(l)
	}
	if re.Op != syntax.OpConcat {
		return best
	}
	for i := range re.Sub {
		pre, _ := prefixes(&syntax.Regexp{Op: syntax.OpConcat, Sub: re.Sub[i:]})
		if len(pre) == 0 || len(pre) > 32 {
			continue
		}
		short := len(pre[0])
		for _, p := range pre {
			short = min(short, len(p))
		}
		if short > score {
			best, score = pre, short
		}
	}
	if score < 3 {
		return nil
	}
	return best
}

// requiredLiteral returns the longest literal string that every match of re contains, or "".
func requiredLiteral(re *syntax.Regexp) string {
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 {
			return ""
		}
		return string(re.Rune)
	case syntax.OpCapture:
		return requiredLiteral(re.Sub[0])
	case syntax.OpPlus:
		return requiredLiteral(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return requiredLiteral(re.Sub[0])
		}
	case syntax.OpConcat:
		best := ""
		run := ""
		for _, s := range re.Sub {
			if s.Op == syntax.OpLiteral && s.Flags&syntax.FoldCase == 0 {
				run += string(s.Rune) // adjacent literals make one
				if len(run) > len(best) {
					best = run
				}
				continue
			}
			run = ""
			if l := requiredLiteral(s); len(l) > len(best) {
				best = l
			}
		}
		return best
	}
	return ""
}
