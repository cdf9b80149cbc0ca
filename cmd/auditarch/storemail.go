package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/alert"
	"github.com/auditarch/auditarch/alert/mail"
	"github.com/auditarch/auditarch/internal/durable"
	"github.com/auditarch/auditarch/store"
)

// The store mails its own alarms (docs/alert.md, "The store's alarms"): DIR/alarms.log is the queue. A
// follower reads it from a durable cursor, classifies each alarm (ALARM source=store kind=...) with the
// alert rules, and mails attacks and violations through a spool, coalesced as the daemon's alerts are
// (the mail's id names the alarms.log line range). The cursor is committed only once the spool holds
// the mail, with the intent recorded first, so a restart mails nothing twice and loses nothing.

// storeMailState is the follower's cursor (SPOOL/store-alarms.json).
type storeMailState struct {
	Offset      int64  `json:"offset"`       // byte offset in alarms.log of the first line not handled
	Line        uint64 `json:"line"`         // its line number (1-based)
	Pending     string `json:"pending"`      // a mail being enqueued
	PendingOff  int64  `json:"pending_off"`  // the cursor that mail's Enqueue commits
	PendingLine uint64 `json:"pending_line"` //
}

const storeMailStateFile = "store-alarms.json"

// storeMailer follows a store's alarms.log and mails its alarms.
type storeMailer struct {
	dir   string // the store directory
	cl    *alert.Classifier
	spool *mail.Spool
	co    *mail.Coalescer
	state string
	st    storeMailState
	log   zerolog.Logger

	read     int64         // offset after the last line handled
	readLine uint64        // next line number
	unsent   *mail.Message // a mail whose Enqueue has not succeeded yet
}

// startStoreMail reads the mail configuration file (the alert section of auditarch's config) and
// starts mailing the store's alarms; it returns a stop function.
func startStoreMail(ctx context.Context, dir, configFile string, log zerolog.Logger) (func(), error) {
	cfg, err := loadConfig(configFile)
	if err != nil {
		return nil, err
	}
	ac := cfg.Alert
	if ac.Mail.Mailhub == "" {
		return nil, &hinted{fmt.Errorf("%s: alert.mail.mailhub is not set", configFile), "the file takes auditarch's config format: alert: {mail: {mailhub: HOST, root: ADDRESS}} (docs/mail.md)"}
	}
	log = log.With().Str("component", "store-mail").Logger()
	cl, err := ac.classifier("", true, log)
	if err != nil {
		return nil, err
	}
	spoolDir := ac.Spool
	if spoolDir == "" {
		spoolDir = filepath.Join(dir, "mail-spool")
	}
	sp, err := mail.OpenSpool(spoolDir, ac.Mail, mail.SpoolOptions{RetryMax: ac.RetryMax, Log: log})
	if err != nil {
		return nil, &hinted{fmt.Errorf("store mail spool: %w", err), "check alert.mail in " + configFile + " (docs/mail.md)"}
	}
	m := &storeMailer{dir: dir, cl: cl, spool: sp, co: mail.NewCoalescer(ac.hostname(), ac.AlertWindow, nil),
		state: filepath.Join(spoolDir, storeMailStateFile), log: log}
	m.co.Unit, m.co.What = "alarms.log lines", "raised by the store, classified as attacks or violations"
	if err := m.load(); err != nil {
		sp.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	spoolDone, done := make(chan struct{}), make(chan struct{})
	go func() { defer close(spoolDone); sp.Run(ctx) }()
	go func() { defer close(done); m.run(ctx) }()
	log.Info().Str("spool", spoolDir).Str("mailhub", ac.Mail.Mailhub).Msg("mailing the store's alarms")
	return func() {
		cancel()
		<-done
		<-spoolDone
		sp.Close()
	}, nil
}

func (m *storeMailer) load() error {
	b, err := os.ReadFile(m.state)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err == nil {
		if err := json.Unmarshal(b, &m.st); err != nil {
			return fmt.Errorf("%s: %w", m.state, err)
		}
	}
	if m.st.Pending != "" && m.spool.Holds(m.st.Pending) {
		m.st.Offset, m.st.Line = m.st.PendingOff, m.st.PendingLine
	}
	m.st.Pending = ""
	if m.st.Line == 0 {
		m.st.Line = 1
	}
	m.read, m.readLine = m.st.Offset, m.st.Line
	return m.save()
}

func (m *storeMailer) save() error {
	b, err := json.Marshal(m.st)
	if err != nil {
		return err
	}
	return durable.Replace(m.state, b, 0o600)
}

// run polls alarms.log for new lines (an alarm is rare; half a second is soon enough) until ctx ends.
func (m *storeMailer) run(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		if err := m.poll(); err != nil {
			m.log.Error().Err(err).Msg("store mail: reading alarms.log")
		}
		m.flush()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// poll reads the complete lines of alarms.log after what was read.
func (m *storeMailer) poll() error {
	f, err := os.Open(filepath.Join(m.dir, store.AlarmsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() <= m.read {
		return err
	}
	if _, err := f.Seek(m.read, io.SeekStart); err != nil {
		return err
	}
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil { // a line not yet complete waits for its end
			return nil
		}
		n := m.readLine
		m.read += int64(len(line))
		m.readLine++
		var a store.Alarm
		if json.Unmarshal(line, &a) != nil {
			m.log.Warn().Uint64("line", n).Msg("store mail: an alarms.log line is not an alarm")
			continue
		}
		match := m.cl.Classify(alert.Item{Alarm: &alert.Alarm{Source: "store", Kind: a.Kind, Host: a.Host, Remote: a.Remote,
			Time: a.Time.UnixNano(), Message: a.Message, Held: a.Held}})
		if match.Class < alert.Violation {
			continue
		}
		m.co.Add(n, alert.ReportLine(match))
	}
}

// flush enqueues the coalesced mail when the window allows, then commits the cursor.
func (m *storeMailer) flush() {
	if m.st.Pending == "" {
		msg, _, ok := m.co.Flush()
		if !ok {
			if m.co.Due().IsZero() && m.read != m.st.Offset { // nothing pending: what was read is handled
				m.st.Offset, m.st.Line = m.read, m.readLine
				if err := m.save(); err != nil {
					m.log.Error().Err(err).Msg("store mail: save the cursor")
				}
			}
			return
		}
		// Flush took every pending line; the lines read after the last of them were not mailable:
		// the mail's Enqueue commits everything read.
		m.unsent = &msg
		m.st.Pending, m.st.PendingOff, m.st.PendingLine = msg.ID, m.read, m.readLine
		if err := m.save(); err != nil {
			m.log.Error().Err(err).Msg("store mail: save the cursor")
		}
	}
	if err := m.spool.Enqueue(*m.unsent); err != nil && !errors.Is(err, mail.ErrOverflow) {
		m.log.Error().Err(err).Msg("store mail: the spool cannot take an alarm mail; retrying")
		return
	}
	m.st.Offset, m.st.Line, m.st.Pending = m.st.PendingOff, m.st.PendingLine, ""
	m.unsent = nil
	if err := m.save(); err != nil {
		m.log.Error().Err(err).Msg("store mail: save the cursor")
	}
}
