package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/forward"
	"github.com/auditarch/auditarch/store"
)

// shipping is the shipper of a run and, without a configured store, the embedded store it ships to.
type shipping struct {
	sh        *forward.Shipper
	log       zerolog.Logger
	cancel    context.CancelFunc
	done      chan struct{} // closed when the shipper's Run has returned
	err       error         // what Run returned (set before done is closed)
	failed    chan error    // gets Run's error if it returns one before stop
	stopStore func()
}

// startShipping starts shipping w's archive to the configured store, or to an embedded store on loopback.
func startShipping(cfg Config, id *archive.Identity, w *writer.Writer, log zerolog.Logger) (*shipping, error) {
	s := &shipping{log: log, stopStore: func() {}}
	addr, keyFile := cfg.Store.Address, cfg.Store.Key
	if addr == "" {
		dir := cfg.Store.Dir
		if dir == "" {
			abs, err := filepath.Abs(cfg.Archive)
			if err != nil {
				return nil, err
			}
			dir = filepath.Join(filepath.Dir(abs), "store")
		}
		slog := log.With().Str("component", "store").Logger()
		// A demo reset with rm -rf leaves the store's sealed segments (immutable) and removes its keys.
		reset := &hinted{hint: "the embedded store in " + dir + " is incomplete or belongs to another host key; to reset a demo: make reset (chattr -R -i the directories, then remove them)"}
		srv, err := store.Open(store.Config{Dir: dir, Log: slog})
		if err != nil {
			reset.err = fmt.Errorf("embedded store: %w", err)
			return nil, reset
		}
		if err := srv.Enroll(id.VKey); err != nil {
			reset.err = fmt.Errorf("embedded store: %w", err)
			return nil, reset
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("embedded store: %w", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			if err := srv.Serve(ctx, ln); err != nil {
				slog.Error().Err(err).Msg("embedded store stopped")
			}
			close(done)
		}()
		s.stopStore = func() { cancel(); <-done }
		addr, keyFile = ln.Addr().String(), filepath.Join(dir, store.PubFile)
		log.Info().Str("store", addr).Str("store_dir", dir).Msg("no store configured: shipping to an embedded store on loopback")
	} else if keyFile == "" {
		return nil, &hinted{fmt.Errorf("store.address %s needs store.key, the store's public key to pin", addr),
			"copy the store's store.pub to this host and name it in the config (store: {key: FILE})"}
	}
	sk, err := receipt.LoadCosignVerifier(keyFile)
	if err != nil {
		s.stopStore()
		return nil, fmt.Errorf("store key: %w", err)
	}
	sh, err := forward.New(forward.Config{Addr: addr, StoreKey: sk, Identity: id, Dir: w.Dir(), Writer: w,
		MaxBacklog: cfg.Store.MaxBacklog, Log: log.With().Str("component", "ship").Logger()})
	if err != nil {
		s.stopStore()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.sh, s.cancel, s.done, s.failed = sh, cancel, make(chan struct{}), make(chan error, 1)
	go func() {
		// Run returns an error only when it cannot ship at all (its receipts file cannot be opened, for
		// one): nothing would reach the store, and the daemon stops (Failed).
		err := sh.Run(ctx)
		if err != nil {
			log.Error().Err(err).Msg("shipping to the store failed: nothing is shipped")
			s.failed <- err
		}
		s.err = err
		close(s.done)
	}()
	return s, nil
}

// Failed gets the shipper's error if it stops shipping on its own.
func (s *shipping) Failed() <-chan error { return s.failed }

// stop waits (up to wait, and only while the shipper runs) until the store holds everything the closed
// writer made durable — its STOP and seal last — under a receipt, then stops. Otherwise it logs once how
// many bytes the store does not hold: they stay in the archive, and the next run ships them first. It
// returns the shipper's error, if it failed.
func (s *shipping) stop(w *writer.Writer, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	end := w.Durable()
	var err error
	if s.sh.Status().Refused { // said when it happened; waiting cannot help
		cancel()
	} else {
		err = s.sh.WaitShipped(ctx, end)
		cancel()
	}
	switch {
	case s.sh.Status().Refused: // logged by the shipper when it happened
	case err != nil:
		// Said once, here: how much of the archive the store does not hold.
		ev := s.log.Warn().Err(err)
		msg := "the archive's end was not shipped: it stays in the archive, and the next run ships it"
		switch n, reached, uerr := s.sh.Unshipped(end); {
		case uerr != nil:
			ev = ev.AnErr("count_error", uerr)
		case reached && n == 0:
			msg = "the store holds the archive's bytes but has given no receipt covering its end (see the store's alarms)"
		case reached:
			ev = ev.Int64("unshipped_bytes", n)
			msg = fmt.Sprintf("%d bytes of the archive were not shipped: they stay in the archive, and the next run ships them", n)
		default:
			ev = ev.Int64("unshipped_bytes", n)
			msg = fmt.Sprintf("the store was not reached: at least %d bytes of the archive were not shipped; they stay in the archive, and the next run ships them", n)
		}
		ev.Msg(msg)
	default:
		st := s.sh.Status()
		s.log.Info().Uint64("leaves", st.Size).Msg("the store holds the whole archive, its stop included, under a receipt")
	}
	s.cancel()
	<-s.done
	s.stopStore()
	return s.err
}
