package alert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/alert/mail"
	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/internal/durable"
)

// DefaultReportInterval is how often the report is mailed (logcheck runs hourly).
const DefaultReportInterval = time.Hour

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	Dir        string         // the archive directory
	Source     archive.Source // the archive's writer; the consumer reads only what it made durable
	Classifier *Classifier
	Spool      *mail.Spool
	Host       string // names the host in subjects and bodies
	// StateFile holds the consumer's cursors (JSON, written durably); it is created when missing.
	StateFile string
	Interval  time.Duration // between reports; default DefaultReportInterval
	Window    time.Duration // between immediate alert mails; default mail.DefaultWindow
	// Alarms are the daemon's own alarms (not leaves): classified, listed in the report, and mailed at
	// once when they are attacks. Nil: none.
	Alarms <-chan Alarm
	// ArchiveState returns the archive's state for a report ending now (its Lost lines are filled in
	// from the LOST leaves read); nil: not known.
	ArchiveState func() mail.ArchiveState
	Log          zerolog.Logger
}

// consumerState is the consumer's durable bookkeeping (ConsumerConfig.StateFile).
type consumerState struct {
	// Report is where the current report window's leaves start: a restart reads the archive from
	// there again, so a report lists its whole window even across restarts.
	Report      archive.Cursor `json:"report"`
	WindowStart time.Time      `json:"window_start"`
	// Alerted: every attack at a leaf below it is in an immediate alert mail the spool holds.
	Alerted uint64 `json:"alerted"`
	// Pending names an alert mail being enqueued and the Alerted it makes: after a crash, the spool
	// says whether the Enqueue completed (mail.Spool.Holds).
	Pending     string `json:"pending,omitempty"`
	PendingNext uint64 `json:"pending_next,omitempty"`
}

// Position returns the first leaf the consumer whose state is in stateFile still needs (the start of the
// current report window, or the first leaf not yet alerted on, whichever is lower): local retention keeps
// it. ok is false when there is no state yet: a first start begins at the archive's end.
func Position(stateFile string) (index uint64, ok bool, err error) {
	b, err := os.ReadFile(stateFile)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("alert state: %w", err)
	}
	if len(b) > 4096 {
		return 0, false, fmt.Errorf("alert state %s: %d bytes is not a state", stateFile, len(b))
	}
	var st consumerState
	if err := json.Unmarshal(b, &st); err != nil {
		return 0, false, fmt.Errorf("alert state %s: %w", stateFile, err)
	}
	return min(st.Report.Index, st.Alerted), true, nil
}

// Consumer is the alert consumer (docs/alert.md, "The daemon"): it follows the archive from its durable
// cursor, classifies every leaf, mails attacks at once (coalesced: at most one mail per window, each
// naming its leaf range) and everything not ignored in the report at the end of each interval, through
// the spool. It commits its cursor only after the spool holds the mail (nothing lost), and mail ids
// derive from leaf ranges and window starts (a restart mails nothing twice). It only reads the archive:
// capture never waits for it.
type Consumer struct {
	cfg  ConsumerConfig
	st   consumerState
	co   *mail.Coalescer
	col  *Collector
	stop chan uint64
	done chan struct{}

	// the attack lines in the coalescer start at this cursor (valid while it holds lines)
	pendingFrom archive.Cursor
	unsent      *mail.Message // an alert mail whose Enqueue failed, and the Alerted it makes
	unsentNext  uint64
	read        archive.Cursor // after the last leaf handled
}

// NewConsumer loads (or creates) the consumer's state.
func NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultReportInterval
	}
	if cfg.Window <= 0 {
		cfg.Window = mail.DefaultWindow
	}
	c := &Consumer{cfg: cfg, co: mail.NewCoalescer(cfg.Host, cfg.Window, nil), col: NewCollector(),
		stop: make(chan uint64, 1), done: make(chan struct{})}
	b, err := os.ReadFile(cfg.StateFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		// The first start: from the archive's durable end. The history before it is not mailed
		// (auditarch report --since prints it).
		c.st.WindowStart = time.Now()
		if cfg.Source != nil {
			if d := cfg.Source.Durable(); d.Segment != "" {
				c.st.Report = archive.Cursor{Segment: d.Segment, Offset: d.Offset, First: d.Size, Index: d.Size}
				c.st.Alerted = d.Size
			}
		}
	case err != nil:
		return nil, fmt.Errorf("alert state: %w", err)
	default:
		if len(b) > 4096 {
			return nil, fmt.Errorf("alert state %s: %d bytes is not a state", cfg.StateFile, len(b))
		}
		if err := json.Unmarshal(b, &c.st); err != nil {
			return nil, fmt.Errorf("alert state %s: %w", cfg.StateFile, err)
		}
	}
	if c.st.Pending != "" {
		if cfg.Spool.Holds(c.st.Pending) {
			c.st.Alerted = c.st.PendingNext
		}
		c.st.Pending, c.st.PendingNext = "", 0
	}
	if c.st.WindowStart.IsZero() {
		c.st.WindowStart = time.Now()
	}
	c.read = c.st.Report
	if err := c.save(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Consumer) save() error {
	b, err := json.Marshal(c.st)
	if err != nil {
		return err
	}
	if err := durable.Replace(c.cfg.StateFile, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("alert state: %w", err)
	}
	return nil
}

// Stop asks Run to read up to leaf end (the size of the stopped writer's archive), mail the pending
// attacks without waiting for the window, save its state and return. The report window goes on at
// the next start.
func (c *Consumer) Stop(end uint64) {
	select {
	case c.stop <- end:
	default:
	}
}

// Done is closed when Run has returned.
func (c *Consumer) Done() <-chan struct{} { return c.done }

// reportEnd is the end of the window that starts at s: the next multiple of the interval.
func (c *Consumer) reportEnd() time.Time {
	return c.st.WindowStart.Truncate(c.cfg.Interval).Add(c.cfg.Interval)
}

type readLeaf struct {
	m             Match
	before, after archive.Cursor
}

// drainWait bounds how long a stopping consumer reads to the archive's end.
const drainWait = 5 * time.Second

// Run consumes until ctx ends (returning its error) or a Stop has been served (returning nil).
func (c *Consumer) Run(ctx context.Context) error {
	defer close(c.done)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in := make(chan readLeaf, 1024)
	f := archive.NewFollower(c.cfg.Dir, c.cfg.Source, c.st.Report)
	go func() {
		defer f.Close()
		for {
			before := f.Cursor()
			leaf, idx, err := f.Next(rctx)
			if err != nil {
				if rctx.Err() != nil {
					return
				}
				c.cfg.Log.Error().Err(err).Msg("alert: reading the archive")
				var ce *archive.CorruptError
				if !errors.As(err, &ce) {
					select {
					case <-rctx.Done():
						return
					case <-time.After(time.Second):
					}
				}
				continue
			}
			m := c.cfg.Classifier.Classify(Item{Index: idx, Leaf: leaf})
			select {
			case in <- readLeaf{m, before, f.Cursor()}:
			case <-rctx.Done():
				return
			}
		}
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var draining bool
	var end uint64
	var deadline time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case r := <-in:
			c.handle(r)
		case a := <-c.cfg.Alarms:
			c.alarm(a)
		case e := <-c.stop:
			draining, end, deadline = true, e, time.Now().Add(drainWait)
		case <-tick.C:
			c.flush(false)
			if !time.Now().Before(c.reportEnd()) {
				c.report()
			}
		}
		if draining && (c.read.Index >= end || time.Now().After(deadline)) {
			if c.read.Index < end {
				c.cfg.Log.Warn().Uint64("read", c.read.Index).Uint64("end", end).Msg("alert: stopped before reading the archive's end; the next start reads it")
			}
			c.flush(true)
			return nil
		}
	}
}

// handle takes one classified leaf.
func (c *Consumer) handle(r readLeaf) {
	c.read = r.after
	if r.m.Class == Ignored {
		return
	}
	c.col.Add(r.m)
	if r.m.Class == Attack && r.m.Index >= c.st.Alerted {
		if c.co.Due().IsZero() && c.unsent == nil {
			c.pendingFrom = r.before
		}
		c.co.Add(r.m.Index, ReportLine(r.m))
		c.flush(false)
	}
}

// flush enqueues the coalesced alert mail when its window allows (or now, when force), and commits
// Alerted once the spool holds it.
func (c *Consumer) flush(force bool) {
	if c.unsent == nil {
		var m mail.Message
		var last uint64
		var ok bool
		if force {
			m, last, ok = c.co.FlushNow()
		} else {
			m, last, ok = c.co.Flush()
		}
		if !ok {
			return
		}
		c.unsent, c.unsentNext = &m, last+1
		c.st.Pending, c.st.PendingNext = m.ID, last+1
		if err := c.save(); err != nil {
			c.cfg.Log.Error().Err(err).Msg("alert: save state")
		}
	}
	err := c.cfg.Spool.Enqueue(*c.unsent)
	if err != nil && !errors.Is(err, mail.ErrOverflow) {
		c.cfg.Log.Error().Err(err).Str("id", c.unsent.ID).Msg("alert: the mail spool cannot take an alert; retrying")
		return
	}
	if err != nil {
		c.cfg.Log.Error().Err(err).Str("id", c.unsent.ID).Msg("alert: mail spool full: the alert is counted and reported as lost")
	} else {
		c.cfg.Log.Info().Str("id", c.unsent.ID).Msg("alert: attack mail queued")
	}
	c.st.Alerted, c.st.Pending, c.st.PendingNext = c.unsentNext, "", 0
	c.unsent = nil
	if err := c.save(); err != nil {
		c.cfg.Log.Error().Err(err).Msg("alert: save state")
	}
}

// report enqueues the report of the window that has ended and starts the next one.
func (c *Consumer) report() {
	start, end := c.st.WindowStart, c.reportEnd()
	var st mail.ArchiveState
	if c.cfg.ArchiveState != nil {
		st = c.cfg.ArchiveState()
	} else {
		st.ReceiptAge = -1
	}
	r := c.col.Report(c.cfg.Host, start, end, st)
	err := c.cfg.Spool.Enqueue(r.Message())
	if err != nil && !errors.Is(err, mail.ErrOverflow) {
		c.cfg.Log.Error().Err(err).Str("id", r.ID()).Msg("alert: the mail spool cannot take the report; retrying")
		return
	}
	c.cfg.Log.Info().Str("id", r.ID()).Err(err).Msg("alert: report queued")
	// The next window starts where this one's reading ended, or at the first attack not yet mailed:
	// a restart must still find it.
	next := c.read
	if !c.co.Due().IsZero() || c.unsent != nil {
		next = c.pendingFrom
	}
	c.st.Report, c.st.WindowStart = next, end
	c.col = NewCollector()
	if err := c.save(); err != nil {
		c.cfg.Log.Error().Err(err).Msg("alert: save state")
	}
}

// alarm classifies one of the daemon's alarms: listed in the report, mailed at once when an attack.
func (c *Consumer) alarm(a Alarm) {
	if a.Time == 0 {
		a.Time = time.Now().UnixNano()
	}
	m := c.cfg.Classifier.Classify(Item{Alarm: &a})
	c.col.Add(m)
	if m.Class != Attack {
		return
	}
	t := time.Unix(0, a.Time)
	msg := mail.Message{
		ID:      fmt.Sprintf("alarm.%s.%d", a.Kind, a.Time),
		Subject: fmt.Sprintf("%s %s %s", c.cfg.Host, t.Format("2006-01-02 15:04 -0700"), mail.ClassAttack.Heading()),
		Body:    fmt.Sprintf("An alarm on %s classified as an attack (%s):\n\n%s\n", c.cfg.Host, section(m), ReportLine(m)),
		Date:    t,
	}
	if err := c.cfg.Spool.Enqueue(msg); err != nil {
		c.cfg.Log.Error().Err(err).Str("id", msg.ID).Msg("alert: the mail spool cannot take an alarm")
	}
}
