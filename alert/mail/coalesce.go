package mail

import (
	"fmt"
	"strings"
	"time"
)

// DefaultWindow is the shortest time between two immediate alert mails from one host.
const DefaultWindow = time.Minute

// Coalescer turns immediate alerts into at most one mail per window: the first event after a quiet
// window is mailed at once; events that follow within the window wait for its end and go together in
// the next mail, every one listed. It holds lines in memory only: the caller must not commit its cursor
// past the last leaf of a mail it has not enqueued (Flush returns it). Not safe for concurrent use.
type Coalescer struct {
	// Unit names what the numbers of Add are, in the mail's first line: "leaves" (the default), or
	// "alarms.log lines" for the store's alarms.
	Unit string
	// What says what the events are, after their count: "classified as attacks" by default.
	What   string
	host   string
	window time.Duration
	now    func() time.Time

	lines       []string
	first, last uint64    // leaf range of lines
	lastMail    time.Time // when the previous mail was flushed; zero: never
}

// NewCoalescer returns a Coalescer for host. window ≤ 0 means DefaultWindow; now nil means time.Now.
func NewCoalescer(host string, window time.Duration, now func() time.Time) *Coalescer {
	if window <= 0 {
		window = DefaultWindow
	}
	if now == nil {
		now = time.Now
	}
	return &Coalescer{host: host, window: window, now: now}
}

// Add records the event at leaf with its one-line rendering. Leaves must increase.
func (c *Coalescer) Add(leaf uint64, line string) {
	if len(c.lines) == 0 {
		c.first = leaf
	}
	c.last = leaf
	c.lines = append(c.lines, line)
}

// Due returns when the pending lines may be mailed: zero time when nothing is pending.
func (c *Coalescer) Due() time.Time {
	if len(c.lines) == 0 {
		return time.Time{}
	}
	if c.lastMail.IsZero() {
		return c.now()
	}
	return c.lastMail.Add(c.window)
}

// Flush returns the mail of the pending lines if the window allows one now; last is the last leaf it
// lists. Its ID, "alert.FIRST-LAST", names the leaf range.
func (c *Coalescer) Flush() (m Message, last uint64, ok bool) {
	now := c.now()
	if len(c.lines) == 0 || (!c.lastMail.IsZero() && now.Before(c.lastMail.Add(c.window))) {
		return Message{}, 0, false
	}
	var b strings.Builder
	unit := c.Unit
	if unit == "" {
		unit = "leaves"
	}
	what := c.What
	if what == "" {
		what = "classified as attacks"
	}
	fmt.Fprintf(&b, "%d event(s) on %s %s (%s %d to %d):\n\n", len(c.lines), c.host, what, unit, c.first, c.last)
	section(&b, ClassAttack.Heading(), c.lines)
	m = Message{
		ID:      fmt.Sprintf("alert.%d-%d", c.first, c.last),
		Subject: fmt.Sprintf("%s %s %s", c.host, now.Format(subjectTime), ClassAttack.Heading()),
		Body:    b.String(),
		Date:    now,
	}
	last = c.last
	c.lines = nil
	c.lastMail = now
	return m, last, true
}

// FlushNow is Flush without waiting for the window: what a stopping consumer mails of its pending lines.
func (c *Coalescer) FlushNow() (m Message, last uint64, ok bool) {
	c.lastMail = time.Time{}
	return c.Flush()
}
