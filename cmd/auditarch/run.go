package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/rules"
)

func runCmd(args []string, stderr io.Writer) error {
	fs := newFlags("run")
	archiveDir := fs.String("archive", "", "")
	rulesFile := fs.String("rules", "", "")
	configFile := fs.String("config", "", "")
	lock := fs.Bool("lock", false, "")
	pos, err := parseFlags(fs, args)
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
	if *archiveDir != "" {
		cfg.Archive = *archiveDir
	}
	if *rulesFile != "" {
		cfg.Rules = *rulesFile
	}
	cfg.Lock = cfg.Lock || *lock
	if cfg.Archive == "" {
		return fmt.Errorf("%w: run needs --archive DIR (or archive: in the config)", errUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	log := zerolog.New(stderr).With().Timestamp().Logger()
	return run(ctx, cfg, log)
}

// run is the daemon: register, program the rules, capture into the archive until ctx ends, then restore
// the kernel's rules and settings, unregister, drain and flush.
func run(ctx context.Context, cfg Config, log zerolog.Logger) error {
	set, err := cfg.ruleSet()
	if err != nil {
		return err
	}
	conn, err := audit.Dial(cfg.ReceiveBuffer)
	if err != nil {
		return &hinted{err, "auditarch run needs root (CAP_AUDIT_CONTROL, CAP_AUDIT_READ) and a kernel with CONFIG_AUDIT"}
	}
	defer conn.Close()
	if err := conn.Register(); err != nil {
		var de *audit.DaemonError
		if errors.As(err, &de) {
			return &hinted{err, "stop the other audit daemon first (for auditd: service auditd stop, or kill its pid)"}
		}
		return err
	}
	w, err := archive.Create(cfg.Archive, archive.Options{FlushInterval: cfg.FlushInterval, Log: log})
	if err != nil {
		conn.Unregister()
		return err
	}
	st, err := conn.Control().GetStatus()
	if err != nil {
		conn.Unregister()
		w.Close()
		return fmt.Errorf("read kernel audit status: %w", err)
	}
	var applied *rules.Applied
	if st.Enabled == 2 {
		log.Warn().Msg("kernel audit configuration is locked (-e 2) until reboot: capturing with the rules already loaded")
	} else {
		applied, err = rules.Apply(conn.Control(), set, rules.ApplyOptions{SelfPID: os.Getpid(), Lock: cfg.Lock})
		if err != nil {
			conn.Unregister()
			w.Close()
			return fmt.Errorf("program audit rules: %w", err)
		}
	}
	log.Info().Str("archive", w.Path()).Int("pid", os.Getpid()).Uint32("kernel_lost", st.Lost).
		Uint32("backlog_limit", st.BacklogLimit).Msg("capturing")

	re := audit.NewReassembler(nil)
	re.Timeout, re.Grace = cfg.EventTimeout, cfg.GapGrace
	c := &audit.Capture{Conn: conn, Reassembler: re, PollInterval: cfg.LostPoll, Log: log,
		BeforeUnregister: func() {
			if applied == nil {
				return
			}
			if err := applied.Restore(); err != nil {
				log.Error().Err(err).Msg("restore kernel audit rules and settings")
			}
		}}
	capErr := c.Run(ctx, w)
	closeErr := w.Close()
	appended, _ := w.Stats()
	log.Info().Uint64("events", appended).Msg("stopped")
	if capErr != nil {
		return fmt.Errorf("capture: %w", capErr)
	}
	return closeErr
}
