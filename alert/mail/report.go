package mail

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Class is a logcheck class, in logcheck's order: a report lists attacks first.
type Class int

// The classes. Their headings are Debian logcheck's (ATTACKSUBJECT, SECURITYSUBJECT, EVENTSSUBJECT).
const (
	ClassAttack    Class = 1 // cracking.d: "Security Alerts"
	ClassViolation Class = 2 // violations.d minus attacks: "Security Events"
	ClassUnusual   Class = 3 // neither, and not ignored at the chosen level: "System Events"
)

// Heading is the class's section heading and subject suffix, as logcheck prints them.
func (c Class) Heading() string {
	switch c {
	case ClassAttack:
		return "Security Alerts"
	case ClassViolation:
		return "Security Events"
	case ClassUnusual:
		return "System Events"
	}
	return fmt.Sprintf("Class %d", int(c))
}

// subjectTime is logcheck's DATE: date +'%Y-%m-%d %H:%M %z'.
const subjectTime = "2006-01-02 15:04 -0700"

// Report is the hourly report: what the classifier found in [Start, End), and the archive's state.
type Report struct {
	Host       string
	Start, End time.Time
	// Sections: class → rule file → the matching events' lines, in archive order. An unusual event
	// matches no rule file: use "" (logcheck prints its section without "for FILE").
	Sections map[Class]map[string][]string
	Archive  ArchiveState
}

// ArchiveState is the archive's health over the report's window.
type ArchiveState struct {
	Verify     string        // the verify verdict, e.g. "PASS" or "FAIL: ..."; "" if not checked
	Lost       []string      // one line per LOST leaf archived in the window
	ReceiptAge time.Duration // how old the store's newest receipt is; < 0 when there is none
	Notes      []string      // anything else to say about the window (lines left out, alarms lost...)
}

// Highest returns the most severe class with at least one line; ok is false when there is none.
func (r Report) Highest() (c Class, ok bool) {
	for _, c := range []Class{ClassAttack, ClassViolation, ClassUnusual} {
		for _, lines := range r.Sections[c] {
			if len(lines) > 0 {
				return c, true
			}
		}
	}
	return 0, false
}

// Subject is logcheck's: "<host> <YYYY-MM-DD HH:MM +zzzz> <heading of the highest class>", the time
// being the end of the window; "... Archive Report" when no event is reported.
func (r Report) Subject() string {
	what := "Archive Report"
	if c, ok := r.Highest(); ok {
		what = c.Heading()
	}
	return fmt.Sprintf("%s %s %s", r.Host, r.End.Format(subjectTime), what)
}

// Body renders the report as logcheck lays it out: one section per class and rule file ("Security
// Alerts for FILE", underlined "=-=-…"), attacks first, files in name order, then the archive state.
func (r Report) Body() string {
	var b strings.Builder
	fmt.Fprintf(&b, "auditarch report for %s, %s to %s\n\n", r.Host,
		r.Start.Format(subjectTime), r.End.Format(subjectTime))
	for _, c := range []Class{ClassAttack, ClassViolation, ClassUnusual} {
		files := make([]string, 0, len(r.Sections[c]))
		for f, lines := range r.Sections[c] {
			if len(lines) > 0 {
				files = append(files, f)
			}
		}
		sort.Strings(files)
		for _, f := range files {
			h := c.Heading()
			if f != "" {
				h += " for " + f
			}
			section(&b, h, r.Sections[c][f])
		}
	}
	a := r.Archive
	state := []string{"verify: " + orNone(a.Verify, "not checked")}
	if a.ReceiptAge < 0 {
		state = append(state, "store receipt: none")
	} else {
		state = append(state, "store receipt age: "+a.ReceiptAge.Round(time.Second).String())
	}
	if len(a.Lost) == 0 {
		state = append(state, "LOST leaves: none")
	} else {
		state = append(state, fmt.Sprintf("LOST leaves: %d", len(a.Lost)))
		for _, l := range a.Lost {
			state = append(state, "  "+l)
		}
	}
	state = append(state, a.Notes...)
	section(&b, "Archive State", state)
	return b.String()
}

// ID is the report's stable message id: host-independent, from the window's start (UTC).
func (r Report) ID() string { return "report." + r.Start.UTC().Format("20060102T150405Z") }

// Message is the report as a mail.
func (r Report) Message() Message {
	return Message{ID: r.ID(), Subject: r.Subject(), Body: r.Body(), Date: r.End}
}

// section writes a heading underlined as logcheck's printheader does ("=-=-", as long as the
// heading), the lines, and a blank line.
func section(b *strings.Builder, heading string, lines []string) {
	b.WriteString(heading)
	b.WriteByte('\n')
	for i := range len(heading) {
		b.WriteByte("=-"[i%2])
	}
	b.WriteByte('\n')
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
}

func orNone(s, none string) string {
	if s == "" {
		return none
	}
	return s
}
