package main

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/alert"
	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/forward"
	"github.com/auditarch/auditarch/forward/ecs"
)

// ForwardConfig is the forward: section: SIEM sinks (docs/forward.md).
type ForwardConfig struct {
	Sinks []forward.SinkConfig `yaml:"sinks"`
}

// newSinks checks the configured sinks and builds them over the archive in dir written by src.
func newSinks(cfg Config, dir string, src archive.Source, origin string, log zerolog.Logger) ([]*forward.Sink, error) {
	host, _ := os.Hostname()
	names := map[string]bool{}
	var sinks []*forward.Sink
	for _, sc := range cfg.Forward.Sinks {
		if names[sc.Name] {
			return nil, fmt.Errorf("forward.sinks: two sinks named %q", sc.Name)
		}
		names[sc.Name] = true
		opts := forward.SinkOptions{Dir: dir, Source: src, Origin: origin, Host: ecs.Host{Name: host},
			Log: log.With().Str("component", "forward").Logger()}
		if sc.Filter.Class != "" {
			if sc.Filter.Rules == "" {
				return nil, fmt.Errorf("forward.sinks %s: filter.class needs filter.rules, the alert rule directory", sc.Name)
			}
			level := alert.Server
			if sc.Filter.Level != "" {
				var err error
				if level, err = alert.ParseLevel(sc.Filter.Level); err != nil {
					return nil, fmt.Errorf("forward.sinks %s: filter.level: %w", sc.Name, err)
				}
			}
			c, err := alert.Load(sc.Filter.Rules, level, "")
			if err != nil {
				return nil, fmt.Errorf("forward.sinks %s: %w", sc.Name, err)
			}
			opts.Classify = func(l *archive.Leaf, i uint64) int {
				return int(c.Classify(alert.Item{Index: i, Leaf: l}).Class)
			}
		}
		s, err := forward.NewSink(sc, opts)
		if err != nil {
			return nil, err
		}
		sinks = append(sinks, s)
	}
	return sinks, nil
}

// startSinks starts the configured SIEM sinks over w's archive, each on its own goroutine and cursor, until
// ctx ends or the function it returns is called, which stops them and waits. A sink that cannot start is logged as an alarm
// and the others run: forwarding never stops capture. It returns the sinks started (for metrics).
func startSinks(ctx context.Context, cfg Config, w *writer.Writer, id *archive.Identity, log zerolog.Logger) (started []*forward.Sink, wait func()) {
	sinks, err := newSinks(cfg, w.Dir(), w, id.Signer.Name(), log)
	if err != nil {
		log.Error().Str("alarm", "forward").Err(err).Msg("SIEM sinks not started")
		return nil, func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, s := range sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(ctx); err != nil {
				log.Error().Str("alarm", "forward").Err(err).Msg("SIEM sink stopped")
			}
		}()
	}
	if len(sinks) > 0 {
		log.Info().Int("sinks", len(sinks)).Msg("forwarding to SIEM sinks")
	}
	return sinks, func() { cancel(); wg.Wait() }
}
