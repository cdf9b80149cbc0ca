package main

import (
	"context"
	"path/filepath"
	"sync"
	"time"

	"github.com/auditarch/auditarch/alert"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/retain"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/store"
)

// RetentionConfig is the retention: section (docs/operate.md, "Retention"). A segment leaves the host
// only once the store's receipt covers it and every consumer has passed it (archive/retain); then when it
// is older than Keep, while the segments take more than MaxBytes, or when the disk is full.
type RetentionConfig struct {
	Keep     time.Duration `yaml:"keep"`      // 0: forever (only the budget and a full disk remove)
	MaxBytes int64         `yaml:"max_bytes"` // budget for the segment files; 0: none
}

// DefaultRetentionKeep is how long segments stay on the host by default once the store holds them.
const DefaultRetentionKeep = 90 * 24 * time.Hour

// How often retention looks whether a segment was sealed (a pass runs then), and the longest time
// between two passes (segments age).
const (
	retentionPoll  = 10 * time.Second
	retentionEvery = 10 * time.Minute
)

// storePubFile is the store key the run pins: store.key, or the embedded store's (as startShipping).
func storePubFile(cfg Config) (string, error) {
	if cfg.Store.Address != "" {
		return cfg.Store.Key, nil
	}
	dir := cfg.Store.Dir
	if dir == "" {
		abs, err := filepath.Abs(cfg.Archive)
		if err != nil {
			return "", err
		}
		dir = filepath.Join(filepath.Dir(abs), "store")
	}
	return filepath.Join(dir, store.PubFile), nil
}

// startRetention prunes w's archive at start, after each seal, every retentionEvery, and when the disk
// refuses the writer's blocks (writer.SetPrune), until the function it returns is called. Retention that
// cannot start is logged; the run goes on keeping everything.
func startRetention(ctx context.Context, cfg Config, w *writer.Writer, id *archive.Identity, log zerolog.Logger) (stop func()) {
	log = log.With().Str("component", "retention").Logger()
	keyFile, err := storePubFile(cfg)
	var sk *receipt.CosignVerifier
	if err == nil {
		sk, err = receipt.LoadCosignVerifier(keyFile)
	}
	var cursors []string
	for _, s := range cfg.Forward.Sinks { // as forward.NewSink names them: a sink not yet started has passed nothing
		cursors = append(cursors, filepath.Join(w.Dir(), "cursors", "sink-"+s.Name+".json"))
	}
	var positions []func() (uint64, bool, error)
	if cfg.Alert.Mail.Mailhub != "" { // the alert consumer keeps its place in its spool
		spool, serr := cfg.alertSpool()
		if serr != nil {
			err = serr
		}
		state := filepath.Join(spool, alertStateFile)
		positions = append(positions, func() (uint64, bool, error) { return alert.Position(state) })
	}
	var p *retain.Pruner
	if err == nil {
		p, err = retain.New(retain.Options{Dir: w.Dir(), StoreKey: sk, Origin: id.Signer.Name(), Identity: id.VKey, Cursors: cursors,
			Positions: positions, Keep: cfg.Retention.Keep, MaxBytes: cfg.Retention.MaxBytes, Log: log})
	}
	if err != nil {
		log.Error().Str("alarm", "retention").Err(err).Msg("retention not started: segments stay on the host")
		return func() {}
	}
	pass := func(need int64) int64 {
		res, err := p.Prune(need)
		if err != nil {
			log.Warn().Err(err).Msg("retention pass failed: nothing more removed")
		}
		return res.Freed
	}
	w.SetPrune(pass)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(retentionPoll)
		defer t.Stop()
		seg, last := "", time.Time{}
		for {
			if cur := w.Durable().Segment; cur != seg || time.Since(last) >= retentionEvery {
				pass(0)
				seg, last = cur, time.Now()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
		w.SetPrune(nil)
		p.Close()
	}
}
