package alert

import (
	"fmt"
	"strings"
	"time"

	"github.com/auditarch/auditarch/alert/mail"
)

// MaxReportLines bounds the event lines one report lists (they are held in memory for the window):
// beyond it they are counted, and the report says how many were left out and how to print them.
const MaxReportLines = 5000

// MailClass is the report class of c (mail.ClassAttack...); ok is false for Ignored.
func MailClass(c Class) (mail.Class, bool) {
	switch c {
	case Attack:
		return mail.ClassAttack, true
	case Violation:
		return mail.ClassViolation, true
	case Unusual:
		return mail.ClassUnusual, true
	}
	return 0, false
}

// ReportLine is how a report and an alert mail list a match: "#INDEX TIME LINE", the time in UTC to
// the second (an alarm, which is no leaf, has no index), and the Sigma rule that matched with its
// attribution.
func ReportLine(m Match) string {
	var b strings.Builder
	if m.Index != 0 || !strings.HasPrefix(m.Line, "ALARM ") {
		fmt.Fprintf(&b, "#%d ", m.Index)
	}
	b.WriteString(time.Unix(0, m.Time).UTC().Format(time.RFC3339))
	b.WriteByte(' ')
	b.WriteString(m.Line)
	if s := m.Sigma; s != nil {
		fmt.Fprintf(&b, " [sigma %s: %q id=%s author=%q]", s.Level, s.Title, s.ID, s.Author)
	}
	return b.String()
}

// section names the rule that put m in its class: the pattern file when its verdict is m's class,
// else the Sigma rule ("sigma/FILE"); "" for an unusual event that nothing matched.
func section(m Match) string {
	ruleClass := Unusual
	switch {
	case strings.HasPrefix(m.Rule, DirCracking+"/"):
		ruleClass = Attack
	case strings.HasPrefix(m.Rule, DirViolations+"/"):
		ruleClass = Violation
	}
	if m.Rule != "" && ruleClass == m.Class {
		return m.Rule
	}
	if s := m.Sigma; s != nil {
		if c, _ := sigmaClass(s.Level); c == m.Class {
			return "sigma/" + baseName(s.Path)
		}
	}
	return m.Rule
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// Collector gathers what one report window lists: every match that is not ignored, by class and by
// the rule file that decided, in archive order, and the LOST leaves. It is the same code for the
// daemon's hourly report and `auditarch report`. Not safe for concurrent use.
type Collector struct {
	sections map[mail.Class]map[string][]string
	lost     []string
	lines    int
	omitted  int
}

// NewCollector returns an empty Collector.
func NewCollector() *Collector {
	return &Collector{sections: map[mail.Class]map[string][]string{}}
}

// Add records m; an ignored match is left out.
func (c *Collector) Add(m Match) {
	mc, ok := MailClass(m.Class)
	if !ok {
		return
	}
	if c.lines >= MaxReportLines {
		c.omitted++
		return
	}
	c.lines++
	line := ReportLine(m)
	if strings.HasPrefix(m.Line, "LOST ") {
		c.lost = append(c.lost, line)
	}
	s := c.sections[mc]
	if s == nil {
		s = map[string][]string{}
		c.sections[mc] = s
	}
	k := section(m)
	s[k] = append(s[k], line)
}

// Empty reports whether nothing was added.
func (c *Collector) Empty() bool { return c.lines == 0 && c.omitted == 0 }

// Report is the report of what was added, for host over [start, end), with the archive state st (its
// Lost lines are the LOST leaves added).
func (c *Collector) Report(host string, start, end time.Time, st mail.ArchiveState) mail.Report {
	st.Lost = append(st.Lost, c.lost...)
	if c.omitted > 0 {
		st.Notes = append(st.Notes, fmt.Sprintf("(and %d more event lines left out of this report, beyond %d: auditarch report --since %s prints them)",
			c.omitted, MaxReportLines, start.UTC().Format(time.RFC3339)))
	}
	return mail.Report{Host: host, Start: start, End: end, Sections: c.sections, Archive: st}
}
