package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/alert"
	"github.com/auditarch/auditarch/alert/mail"
	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/forward"
)

// AlertConfig is the alert section of the configuration (docs/alert.md, "The daemon"). The daemon mails
// only when mail.mailhub is set.
type AlertConfig struct {
	Rules string `yaml:"rules"` // pattern directory (logcheck's layout); the built-in set is installed there when it is missing
	Level string `yaml:"level"` // workstation, server or paranoid
	Sigma string `yaml:"sigma"` // SigmaHQ auditd rules; "": none
	// Spool is the mail spool's directory, which also holds the consumer's state (alert-state.json);
	// default "alert-spool" beside the archive.
	Spool          string        `yaml:"spool"`
	ReportInterval time.Duration `yaml:"report_interval"` // between reports; default 1h
	AlertWindow    time.Duration `yaml:"alert_window"`    // at most one immediate alert mail per window; default 1m
	RetryMax       time.Duration `yaml:"retry_max"`       // longest wait between delivery attempts; default 5m
	Mail           mail.Config   `yaml:"mail"`            // the relay (docs/mail.md)
}

func defaultAlertConfig() AlertConfig {
	return AlertConfig{Rules: alert.DefaultDir, Level: alert.Server.String(),
		ReportInterval: alert.DefaultReportInterval, AlertWindow: mail.DefaultWindow}
}

// alertStateFile, in the spool directory, is the consumer's cursors.
const alertStateFile = "alert-state.json"

// alertSpool is the alert mail spool's directory: alert.spool, or alert-spool beside the archive.
func (c Config) alertSpool() (string, error) {
	if c.Alert.Spool != "" {
		return c.Alert.Spool, nil
	}
	abs, err := filepath.Abs(c.Archive)
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(abs), "alert-spool"), nil
}

// classifier loads the pattern files (installing the built-in set where the directory is missing when
// install is set, else reading the built-in set from a temporary copy) and the Sigma rules.
func (a AlertConfig) classifier(level string, install bool, log zerolog.Logger) (*alert.Classifier, error) {
	if level == "" {
		level = a.Level
	}
	lv, err := alert.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("%w: alert level: %v", errUsage, err)
	}
	dir := a.Rules
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if !install {
			tmp, err := os.MkdirTemp("", "auditarch-rules-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(tmp)
			dir = tmp
		}
		if _, err := alert.InstallDefaults(dir); err != nil {
			return nil, fmt.Errorf("install the built-in alert rules: %w", err)
		}
		if install {
			log.Warn().Str("rules", dir).Msg("alert: installed the built-in rule set")
		}
	}
	c, err := alert.Load(dir, lv, a.Sigma)
	if err != nil {
		return nil, fmt.Errorf("alert rules: %w", err)
	}
	return c, nil
}

// hostname is this host as mails name it.
func (a AlertConfig) hostname() string {
	if a.Mail.Hostname != "" {
		return a.Mail.Hostname
	}
	h, _ := os.Hostname()
	return h
}

// alerting is the run's alert consumer and mail spool; the zero value is alerting off.
type alerting struct {
	cons      *alert.Consumer
	spool     *mail.Spool
	cancel    context.CancelFunc
	spoolDone chan struct{}
	log       zerolog.Logger
}

// startAlerts starts the alert consumer over w's archive when alert.mail.mailhub is set: it classifies
// every durable leaf and the daemon's own alarms (from ship), and mails through the spool.
func startAlerts(cfg Config, w *writer.Writer, ship *shipping, log zerolog.Logger) (*alerting, error) {
	ac := cfg.Alert
	if ac.Mail.Mailhub == "" {
		return &alerting{}, nil
	}
	log = log.With().Str("component", "alert").Logger()
	cl, err := ac.classifier("", true, log)
	if err != nil {
		return nil, err
	}
	dir, err := cfg.alertSpool()
	if err != nil {
		return nil, err
	}
	sp, err := mail.OpenSpool(dir, ac.Mail, mail.SpoolOptions{RetryMax: ac.RetryMax, Log: log})
	if err != nil {
		return nil, &hinted{fmt.Errorf("alert mail spool: %w", err), "check alert.mail in the config (docs/mail.md); auditarch alert test --config FILE tries it"}
	}
	alarms := make(chan alert.Alarm, 16)
	cons, err := alert.NewConsumer(alert.ConsumerConfig{Dir: w.Dir(), Source: w, Classifier: cl, Spool: sp,
		Host: ac.hostname(), StateFile: filepath.Join(dir, alertStateFile), Interval: ac.ReportInterval,
		Window: ac.AlertWindow, Alarms: alarms, ArchiveState: archiveState(w.Dir(), "not verified by the daemon (auditarch verify)"), Log: log})
	if err != nil {
		sp.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &alerting{cons: cons, spool: sp, cancel: cancel, spoolDone: make(chan struct{}), log: log}
	go func() {
		defer close(a.spoolDone)
		sp.Run(ctx)
	}()
	go func() {
		if err := cons.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error().Err(err).Msg("alert consumer stopped")
		}
	}()
	if ship != nil {
		go watchShipping(ctx, ship.sh, alarms)
	}
	log.Info().Str("level", cl.Level().String()).Int("sigma_rules", len(cl.SigmaRules())).Str("spool", dir).
		Str("mailhub", ac.Mail.Mailhub).Msg("alerting")
	return a, nil
}

// stop lets the consumer read to the end of the closed writer's archive and queue its pending alerts,
// gives the spool a few seconds to deliver, then stops both. What is not delivered stays in the spool
// for the next run.
func (a *alerting) stop(w *writer.Writer) {
	if a.cons == nil {
		return
	}
	a.cons.Stop(w.Durable().Size)
	select {
	case <-a.cons.Done():
	case <-time.After(10 * time.Second):
	}
	for deadline := time.Now().Add(3 * time.Second); a.spool.Stats().Queued > 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if n := a.spool.Stats().Queued; n > 0 {
		a.log.Warn().Int("queued", n).Msg("alert: mail not delivered at the stop stays in the spool for the next run")
	}
	a.cancel()
	<-a.spoolDone
	a.spool.Close()
}

// archiveState returns the archive state a report gives: the store receipt's age (when the host last
// kept a receipt, DIR/receipts), and verify as said.
func archiveState(dir, verify string) func() mail.ArchiveState {
	return func() mail.ArchiveState {
		st := mail.ArchiveState{Verify: verify, ReceiptAge: -1}
		if fi, err := os.Stat(filepath.Join(dir, receipt.ReceiptsFile)); err == nil && fi.Size() > 0 {
			st.ReceiptAge = time.Since(fi.ModTime())
		}
		return st
	}
}

// Daemon alarm kinds (ALARM source=daemon kind=...), docs/alert.md.
const (
	alarmStoreKey    = "store_key"    // the store presented another key than the pinned one
	alarmShipBacklog = "ship_backlog" // the unshipped backlog is over store.max_backlog: events are shed
	alarmShipFailing = "ship_failing" // the store has not been reached for shipFailingAfter
)

// shipFailingAfter is how long shipping may fail before it is an alarm.
const shipFailingAfter = time.Minute

// watchShipping turns the shipper's state into the daemon's alarms, once per episode.
func watchShipping(ctx context.Context, sh *forward.Shipper, out chan<- alert.Alarm) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	raise := func(kind, msg string) {
		select {
		case out <- alert.Alarm{Source: "daemon", Kind: kind, Time: time.Now().UnixNano(), Message: msg}:
		default:
		}
	}
	var keyRaised, shedRaised, failRaised bool
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := sh.Status(), sh.LastErr()
		if st.Connected {
			lastOK, keyRaised, failRaised = time.Now(), false, false
		}
		if errors.Is(err, forward.ErrStoreKey) && !keyRaised {
			keyRaised = true
			raise(alarmStoreKey, err.Error())
		}
		if !st.Connected && err != nil && time.Since(lastOK) > shipFailingAfter && !failRaised {
			failRaised = true
			raise(alarmShipFailing, fmt.Sprintf("the store has not been reached for %s: %v", time.Since(lastOK).Round(time.Second), err))
		}
		if st.Shedding && !shedRaised {
			raise(alarmShipBacklog, fmt.Sprintf("%d bytes not shipped: events are shed (LOST ship_backlog) until the store catches up", st.Backlog))
		}
		shedRaised = st.Shedding
	}
}

// reportCmd prints the report of an archive since a time.
func reportCmd(args []string, stdout io.Writer) error {
	fs := newFlags("report")
	since := fs.String("since", "1h", "")
	level := fs.String("level", "", "")
	configFile := fs.String("config", "", "")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: report needs one archive directory", errUsage)
	}
	now := time.Now()
	from, err := parseWhen(*since, now)
	if err != nil {
		return fmt.Errorf("%w: --since %q: %v", errUsage, *since, err)
	}
	cfg, err := loadConfig(*configFile)
	if err != nil {
		return err
	}
	cl, err := cfg.Alert.classifier(*level, false, zerolog.Nop())
	if err != nil {
		return err
	}
	dir := pos[0]
	if _, err := os.Stat(dir); err != nil {
		return err
	}
	col := alert.NewCollector()
	f := archive.NewFollower(dir, nil, archive.Cursor{})
	defer f.Close()
	var damage []string
	for {
		leaf, idx, err := f.Next(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		var ce *archive.CorruptError
		if errors.As(err, &ce) {
			damage = append(damage, "unreadable: "+ce.Error())
			continue
		}
		if err != nil {
			return err
		}
		m := cl.Classify(alert.Item{Index: idx, Leaf: leaf})
		if m.Time < from.UnixNano() {
			continue
		}
		col.Add(m)
	}
	st := archiveState(dir, "not checked (auditarch verify "+dir+")")()
	st.Notes = append(st.Notes, damage...)
	r := col.Report(cfg.Alert.hostname(), from, now, st)
	fmt.Fprintf(stdout, "Subject: %s\n\n%s", r.Subject(), r.Body())
	return nil
}

// parseWhen reads an RFC 3339 time, a date (midnight UTC) or a duration back from now (d is 24h).
func parseWhen(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return t, nil
	}
	if d, ok := strings.CutSuffix(v, "d"); ok {
		if n, err := strconv.Atoi(d); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, errors.New("want an RFC 3339 time, a date (2026-11-22) or a duration (30m, 2h, 7d)")
}

// alertCmd: "alert test" sends a test mail through the configured hub, now, not through the spool.
func alertCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "test" {
		return fmt.Errorf("%w: alert needs a subcommand: test", errUsage)
	}
	fs := newFlags("alert test")
	configFile := fs.String("config", "", "")
	pos, err := parseFlags(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	cfg, err := loadConfig(*configFile)
	if err != nil {
		return err
	}
	if cfg.Alert.Mail.Mailhub == "" {
		return &hinted{errors.New("alert.mail.mailhub is not set"), "name the config file with --config, with alert: {mail: {mailhub: HOST, root: ADDRESS}} (docs/mail.md)"}
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	if err := mail.SendTest(ctx, cfg.Alert.Mail); err != nil {
		return &hinted{fmt.Errorf("test mail: %w", err), "check alert.mail (mailhub, port, tls, ca_file, auth_user) against the hub (docs/mail.md)"}
	}
	fmt.Fprintf(stdout, "test mail accepted by %s\n", cfg.Alert.Mail.Mailhub)
	return nil
}
