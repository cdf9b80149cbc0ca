package alert

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	ahocorasick "github.com/BobuSumisu/aho-corasick"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/audit/raw"
	sigma "github.com/bradleyjkemp/sigma-go"
	"github.com/bradleyjkemp/sigma-go/evaluator"
)

// Limits on Sigma rules, checked before a file is read.
const (
	MaxSigmaRules    = 5000
	MaxSigmaFileSize = 256 << 10
)

// SigmaRule names a Sigma rule as its file does; Author is kept for attribution (SigmaHQ's rules are
// under the Detection Rule License, which requires it).
type SigmaRule struct {
	Title  string
	ID     string
	Author string
	Level  string // critical, high, medium, low, informational
	Path   string // the file it was read from
}

type sigmaEntry struct {
	info  SigmaRule
	class Class
	eval  *evaluator.RuleEvaluator
	types map[string]bool // record types the rule can match (nil: any)
	// needles: one of them is in the record's or event's values whenever the rule matches (nil: unknown)
	needles []string
	fields  []string // the fields of the matchers that give needles (nil: no needles)
}

type sigmaSet struct {
	rules []*sigmaEntry
	// byType: the rules that may match a record or event of this type (those naming it, then those
	// naming no type), with their needle automaton; anyType for the other types.
	byType  map[string]*sigmaIndex
	anyType *sigmaIndex
}

// sigmaIndex is the rules one type of record or event is evaluated against, and an Aho-Corasick
// automaton over their needles: one pass over the lower-cased values finds which rules may match.
// sigma-go evaluates one rule at a time (each a map lookup, a lower-casing and comparisons per field
// matcher), so evaluating every rule on every record costs tens of microseconds with 150 rules: here a
// rule is evaluated only when one of its needles is in the values, and the field map is built only
// then. sigma-go still decides every match.
type sigmaIndex struct {
	rules  []*sigmaEntry
	trie   *ahocorasick.Trie // nil: no rule has needles, or too many needle bytes (anyIn per rule)
	needle [][]int           // needle number → positions in rules
	// fields: the record fields the rules with needles name; a record's hay holds only their values
	// (a SYSCALL record's exe and comm, not its 400 bytes). nil: the whole text.
	fields map[string]bool
}

// maxTrieBytes bounds the needle bytes of one automaton (about 2 KiB of memory per byte).
const maxTrieBytes = 16 << 10

func newSigmaIndex(rules []*sigmaEntry) *sigmaIndex {
	x := &sigmaIndex{rules: rules, fields: map[string]bool{}}
	pos := map[string][]int{}
	var order []string
	total := 0
	for i, r := range rules {
		for _, f := range r.fields {
			if x.fields != nil && plainField(f) {
				x.fields[f] = true
			} else {
				x.fields = nil
			}
		}
		for _, n := range r.needles {
			if _, ok := pos[n]; !ok {
				order = append(order, n)
				total += len(n)
			}
			pos[n] = append(pos[n], i)
		}
	}
	if len(order) == 0 || total > maxTrieBytes {
		return x
	}
	x.trie = ahocorasick.NewTrieBuilder().AddStrings(order).Build()
	for _, n := range order {
		x.needle = append(x.needle, pos[n])
	}
	return x
}

// scratch is one Classify call's reusable memory.
type scratch struct {
	line []byte // the line being rendered
	m    map[string]string
	hay  []byte
	hit  []bool
}

func anyIn(hay string, needles []string) bool {
	for _, n := range needles {
		if strings.Contains(hay, n) {
			return true
		}
	}
	return false
}

// sigmaClass maps a Sigma level to a class: critical/high attack, medium violation, low and
// informational unusual.
func sigmaClass(level string) (Class, bool) {
	switch strings.ToLower(level) {
	case "critical", "high":
		return Attack, true
	case "medium":
		return Violation, true
	case "low", "informational":
		return Unusual, true
	}
	return 0, false
}

// loadSigma reads the *.yml and *.yaml files of dir (and its subdirectories) whose logsource is
// product linux, service auditd; other rules are skipped.
func loadSigma(dir string) (*sigmaSet, error) {
	var files []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".yml") || strings.HasSuffix(path, ".yaml")) {
			if len(files) >= MaxSigmaRules {
				return fmt.Errorf("%s: more than %d rule files", dir, MaxSigmaRules)
			}
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	s := &sigmaSet{byType: map[string]*sigmaIndex{}}
	typed := map[string][]*sigmaEntry{}
	var anyType []*sigmaEntry
	for _, path := range files {
		r, err := readSigma(path)
		if err != nil {
			return nil, err
		}
		if r == nil {
			continue
		}
		s.rules = append(s.rules, r)
		if r.types == nil {
			anyType = append(anyType, r)
			continue
		}
		for t := range r.types {
			typed[t] = append(typed[t], r)
		}
	}
	for t, rules := range typed {
		s.byType[t] = newSigmaIndex(append(rules[:len(rules):len(rules)], anyType...))
	}
	s.anyType = newSigmaIndex(anyType)
	return s, nil
}

func readSigma(path string) (*sigmaEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > MaxSigmaFileSize {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", path, fi.Size(), MaxSigmaFileSize)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSigmaFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxSigmaFileSize {
		return nil, fmt.Errorf("%s: more than %d bytes", path, MaxSigmaFileSize)
	}
	rule, err := sigma.ParseRule(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !strings.EqualFold(rule.Logsource.Product, "linux") || !strings.EqualFold(rule.Logsource.Service, "auditd") {
		return nil, nil
	}
	class, ok := sigmaClass(rule.Level)
	if !ok {
		return nil, fmt.Errorf("%s: level %q is not critical, high, medium, low or informational", path, rule.Level)
	}
	if len(rule.Detection.Conditions) == 0 {
		return nil, fmt.Errorf("%s: no condition", path)
	}
	for _, c := range rule.Detection.Conditions {
		if c.Aggregation != nil {
			return nil, fmt.Errorf("%s: aggregations (count, near) are not supported", path)
		}
	}
	for name, s := range rule.Detection.Searches {
		if len(s.Keywords) > 0 {
			return nil, fmt.Errorf("%s: search %s: keyword searches are not supported (auditd rules name fields)", path, name)
		}
	}
	globs(&rule)
	e := &sigmaEntry{
		info:  SigmaRule{Title: rule.Title, ID: rule.ID, Author: rule.Author, Level: strings.ToLower(rule.Level), Path: path},
		class: class,
		eval:  evaluator.ForRule(rule),
	}
	e.types = requiredTypes(&rule)
	for n := range required(&rule, needleValues) {
		e.needles = append(e.needles, n)
	}
	sort.Strings(e.needles)
	if e.needles != nil {
		for _, s := range rule.Detection.Searches {
			for _, em := range s.EventMatchers {
				for _, fm := range em {
					if needleValues(fm) != nil {
						e.fields = append(e.fields, fm.Field)
					}
				}
			}
		}
	}
	return e, nil
}

// globs turns plain values holding Sigma wildcards (* and ?) into the re modifier: sigma-go compares
// plain values as equal strings, where Sigma means a glob (SigmaHQ's "name: /etc/audit/*").
func globs(rule *sigma.Rule) {
	for name, s := range rule.Detection.Searches {
		for i, em := range s.EventMatchers {
			for j, fm := range em {
				if len(fm.Modifiers) > 0 && fm.Modifiers[0] != "all" && !isTextModifier(fm.Modifiers[0]) {
					continue
				}
				wild := false
				for _, v := range fm.Values {
					if s, ok := v.(string); ok && strings.ContainsAny(s, "*?") {
						wild = true
					}
				}
				if !wild {
					continue
				}
				mode := ""
				if len(fm.Modifiers) > 0 && fm.Modifiers[0] != "all" {
					mode = fm.Modifiers[0]
				}
				vals := make([]interface{}, len(fm.Values))
				for k, v := range fm.Values {
					vals[k] = globRegexp(fmt.Sprint(v), mode)
				}
				rest := fm.Modifiers
				if mode != "" {
					rest = rest[1:]
				}
				fm.Modifiers = append([]string{"re"}, rest...)
				fm.Values = vals
				em[j] = fm
			}
			s.EventMatchers[i] = em
		}
		rule.Detection.Searches[name] = s
	}
}

func isTextModifier(m string) bool { return m == "contains" || m == "startswith" || m == "endswith" }

func globRegexp(v, mode string) string {
	var b strings.Builder
	b.WriteString("(?is)")
	if mode != "contains" && mode != "endswith" {
		b.WriteByte('^')
	}
	for _, r := range v {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteByte('.')
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	if mode != "contains" && mode != "startswith" {
		b.WriteByte('$')
	}
	return b.String()
}

// requiredTypes returns the values of the type field that every match of the rule has (nil when the
// rule may match any type): a prefilter, so that a record is evaluated only against the rules that
// name its type. It walks the condition: a search requires the types its every matcher names; "and"
// the types of any child that requires some, "or" and "1 of" the union when every child does.
func requiredTypes(rule *sigma.Rule) map[string]bool {
	return required(rule, typeValues)
}

// typeValues returns the values a plain "type" matcher requires (nil: the matcher is on another field).
func typeValues(fm sigma.FieldMatcher) map[string]bool {
	if fm.Field != "type" || len(fm.Modifiers) > 0 {
		return nil
	}
	out := map[string]bool{}
	for _, v := range fm.Values {
		out[strings.ToUpper(fmt.Sprint(v))] = true
	}
	return out
}

// needleValues returns lower-cased strings one of which a value of the event holds whenever the
// matcher matches (nil: none known): its values, for equality, contains, startswith and endswith.
func needleValues(fm sigma.FieldMatcher) map[string]bool {
	if fm.Field == "type" || fm.Field == "argc" { // argc is not in the line (the event's values)
		return nil
	}
	for _, m := range fm.Modifiers {
		if m != "all" && !isTextModifier(m) {
			return nil
		}
	}
	out := map[string]bool{}
	for _, v := range fm.Values {
		s, ok := v.(string)
		if !ok || s == "" || strings.ContainsAny(s, "*?") || !plainNeedle(s) {
			return nil
		}
		out[strings.ToLower(s)] = true
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// required walks the rule's conditions and returns values of which every match requires one, by
// extract on its field matchers (nil: no requirement known).
func required(rule *sigma.Rule, extract func(sigma.FieldMatcher) map[string]bool) map[string]bool {
	var out map[string]bool
	for _, c := range rule.Detection.Conditions {
		t := exprTypes(rule, c.Search, extract)
		if t == nil {
			return nil
		}
		if out == nil {
			out = map[string]bool{}
		}
		for k := range t {
			out[k] = true
		}
	}
	return out
}

func exprTypes(rule *sigma.Rule, e sigma.SearchExpr, extract func(sigma.FieldMatcher) map[string]bool) map[string]bool {
	searches := rule.Detection.Searches
	named := func(match func(string) bool) []sigma.SearchExpr {
		var out []sigma.SearchExpr
		for name := range searches {
			if match(name) {
				out = append(out, sigma.SearchIdentifier{Name: name})
			}
		}
		return out
	}
	anyOf := func(subs []sigma.SearchExpr) map[string]bool {
		for _, s := range subs {
			if t := exprTypes(rule, s, extract); t != nil {
				return t
			}
		}
		return nil
	}
	union := func(subs []sigma.SearchExpr) map[string]bool {
		out := map[string]bool{}
		for _, s := range subs {
			t := exprTypes(rule, s, extract)
			if t == nil {
				return nil
			}
			for k := range t {
				out[k] = true
			}
		}
		if len(subs) == 0 {
			return nil
		}
		return out
	}
	switch x := e.(type) {
	case sigma.And:
		return anyOf(x)
	case sigma.Or:
		return union(x)
	case sigma.SearchIdentifier:
		s, ok := searches[x.Name]
		if !ok || len(s.EventMatchers) == 0 {
			return nil
		}
		out := map[string]bool{}
		for _, em := range s.EventMatchers {
			found := false
			for _, fm := range em {
				if v := extract(fm); v != nil {
					for k := range v {
						out[k] = true
					}
					found = true
					break
				}
			}
			if !found {
				return nil
			}
		}
		return out
	case sigma.AllOfThem:
		return anyOf(named(func(string) bool { return true }))
	case sigma.OneOfThem:
		return union(named(func(string) bool { return true }))
	case sigma.AllOfPattern:
		return anyOf(named(func(n string) bool { ok, _ := filepath.Match(x.Pattern, n); return ok }))
	case sigma.OneOfPattern:
		return union(named(func(n string) bool { ok, _ := filepath.Match(x.Pattern, n); return ok }))
	}
	return nil // not, and anything else: no requirement
}

// plainNeedle reports whether s reads the same in a record's text and in a line (where values are
// Go-quoted): printable ASCII without '"' and '\\'.
func plainNeedle(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// match evaluates the rules on each raw record of ev and on the decoded event whose line is line (or
// on the alarm, whose line it is), and returns the most severe rule that matched (the first loaded
// among equals), or nil.
func (s *sigmaSet) match(sc *scratch, ev *raw.Event, dec *audit.Event, alarm *Alarm, line string) *sigmaEntry {
	var best *sigmaEntry
	// try evaluates the rules of typ whose needles are in the hay that hay writes (lower-case values;
	// nil: evaluate every rule), filling the field map only if one is evaluated.
	try := func(typ string, hay func([]byte, *sigmaIndex) ([]byte, bool), fill func(m map[string]string)) {
		x := s.byType[typ]
		if x == nil {
			x = s.anyType
		}
		if len(x.rules) == 0 {
			return
		}
		var filter bool
		filled := false
		sc.hay, filter = hay(sc.hay[:0], x)
		if !filter { // the values are not all in the text: take them from the field map
			if sc.m == nil {
				sc.m = make(map[string]string, 32)
			}
			clear(sc.m)
			fill(sc.m)
			filled, filter = true, true
			sc.hay = sc.hay[:0]
			for _, v := range sc.m {
				sc.hay = appendLower(append(sc.hay, 0), v)
			}
		}
		if cap(sc.hit) < len(x.rules) {
			sc.hit = make([]bool, len(x.rules))
		}
		hit := sc.hit[:len(x.rules)]
		clear(hit)
		if filter && x.trie != nil {
			x.trie.Walk(sc.hay, func(_, _, n int64) bool {
				for _, i := range x.needle[n] {
					hit[i] = true
				}
				return true
			})
		}
		for i, r := range x.rules {
			if best != nil && r.class <= best.class {
				continue
			}
			if filter && r.needles != nil && !hit[i] && (x.trie != nil || !anyIn(string(sc.hay), r.needles)) {
				continue
			}
			if !filled {
				if sc.m == nil {
					sc.m = make(map[string]string, 32)
				}
				clear(sc.m)
				fill(sc.m)
				filled = true
			}
			res, err := r.eval.Matches(context.Background(), sc.m)
			if err == nil && res.Match {
				best = r
			}
		}
	}
	lineHay := func(b []byte, _ *sigmaIndex) ([]byte, bool) { return appendLower(b, line), true }
	if ev != nil {
		for _, rec := range ev.Records {
			typ := audit.TypeName(rec.Type)
			try(typ, func(b []byte, x *sigmaIndex) ([]byte, bool) { return recordHay(b, rec.Text, x.fields) },
				func(m map[string]string) { recordMap(m, typ, rec.Text) })
		}
	}
	if dec != nil {
		try(kindWord(dec), lineHay, func(m map[string]string) { eventMap(m, dec) })
	}
	if alarm != nil {
		try("ALARM", lineHay, func(m map[string]string) {
			m["type"] = "ALARM"
			alarmFields(alarm, func(k, v string, _ bool) { m[k] = v })
		})
	}
	return best
}

// plainField reports whether a Sigma field name is one the record hay can look up as it is: lower-case
// letters, digits and '_' (the kernel's keys).
func plainField(f string) bool {
	for i := 0; i < len(f); i++ {
		if c := f[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return f != ""
}

// appendLower appends s lower-cased (ASCII: needles are printable ASCII) to b.
func appendLower[S string | []byte](b []byte, s S) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
}

var execveSplit = []byte("_len=")

// recordHay appends the lower-cased values of a record that recordMap gives the fields named (nil:
// the whole text, and after it each hex-encoded value decoded; the kernel hex-encodes untrusted
// strings that hold spaces, quotes or control bytes). With fields, an EXECVE argument split over
// aN[0], aN[1]... is joined as recordMap joins it. ok is false when the whole text was asked for and
// the record has split arguments: the hay is then made of recordMap's values.
func recordHay(b []byte, text []byte, fields map[string]bool) ([]byte, bool) {
	_, off, err := audit.ParseHeader(text)
	if err != nil {
		return appendLower(b, text), false
	}
	if fields != nil {
		return appendFieldValues(b, text[off:], fields), true
	}
	b = appendLower(b, text)
	if bytes.Contains(text, execveSplit) {
		return b, false
	}
	return appendHexValues(b, text[off:]), true
}

// appendFieldValues appends, each after a 0 byte, the lower-cased values of the fields named:
// quotes removed, hex decoded, msg='...' opened, aN[k] pieces joined.
func appendFieldValues(b, body []byte, fields map[string]bool) []byte {
	for fs := audit.NewFields(body); fs.Next(); {
		k, v := fs.Key, fs.Value
		if string(k) == "msg" && len(v) >= 2 && v[0] == '\'' {
			inner := v[1:]
			if inner[len(inner)-1] == '\'' {
				inner = inner[:len(inner)-1]
			}
			b = appendFieldValues(b, inner, fields)
			continue
		}
		piece := false
		if i := bytes.IndexByte(k, '['); i > 0 {
			piece, k = !bytes.HasPrefix(k[i:], []byte("[0]")), k[:i]
		}
		if !fields[string(k)] {
			continue
		}
		if !piece {
			b = append(b, 0)
		}
		switch {
		case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
			b = appendLower(b, v[1:len(v)-1])
		case len(v) >= 2 && len(v)%2 == 0:
			start := len(b)
			for i := 0; i < len(v); i += 2 {
				h, ok1 := hexVal(v[i])
				l, ok2 := hexVal(v[i+1])
				if !ok1 || !ok2 {
					b = appendLower(b[:start], v)
					break
				}
				c := h<<4 | l
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				b = append(b, c)
			}
		default:
			b = appendLower(b, v)
		}
	}
	return b
}

func appendHexValues(b, body []byte) []byte {
	for fs := audit.NewFields(body); fs.Next(); {
		v := fs.Value
		if string(fs.Key) == "msg" && len(v) >= 2 && v[0] == '\'' {
			inner := v[1:]
			if inner[len(inner)-1] == '\'' {
				inner = inner[:len(inner)-1]
			}
			b = appendHexValues(b, inner)
			continue
		}
		if len(v) < 2 || len(v)%2 != 0 {
			continue
		}
		start := len(b)
		b = append(b, 0)
		for i := 0; i < len(v); i += 2 {
			h, ok1 := hexVal(v[i])
			l, ok2 := hexVal(v[i+1])
			if !ok1 || !ok2 {
				b = b[:start]
				break
			}
			c := h<<4 | l
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b = append(b, c)
		}
	}
	return b
}

// recordMap fills m with a raw record's fields as SigmaHQ's auditd rules name them: type, and each
// key=value of the record (msg='...' opened), strings decoded (quotes removed, hex decoded).
func recordMap(m map[string]string, typ string, text []byte) {
	m["type"] = typ
	recordFields(string(text), func(k, v string, _ bool) {
		if _, dup := m[k]; !dup {
			m[k] = v
		}
	})
	if typ == "EXECVE" {
		// split and hex arguments, rebuilt (a0_len, a0[0], a0[1]...) as audit.Decode does
		var one raw.Event
		one.Kind = raw.KindEvent
		one.Add(audit.TypeExecve, text)
		d := audit.Decode(&one)
		for i, a := range d.Args {
			m["a"+strconv.Itoa(i)] = a
		}
	}
}

// eventMap fills m with the decoded event's fields, named as in its line (docs/alert.md), with type
// the line's kind word and the arguments also as a0, a1... as in an EXECVE record.
func eventMap(m map[string]string, ev *audit.Event) {
	m["type"] = kindWord(ev)
	eventFields(ev, func(k, v string, _ bool) {
		if _, dup := m[k]; !dup {
			m[k] = v
		}
	})
	for _, k := range []string{"a0", "a1", "a2", "a3"} {
		delete(m, k) // the syscall's registers; in the event, aN are the arguments
	}
	for i, a := range ev.Args {
		m["a"+strconv.Itoa(i)] = a
	}
	for _, p := range ev.Paths {
		if p.NameType != "PARENT" {
			if _, ok := m["name"]; !ok {
				m["name"] = p.Name
			}
		}
	}
	if ev.Args != nil {
		m["argc"] = strconv.Itoa(len(ev.Args))
	}
}
