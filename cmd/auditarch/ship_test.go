package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/store"
)

// blockReceipts makes the archive directory's receipts file a directory: the shipper cannot open it.
func blockReceipts(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, receipt.ReceiptsFile, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
}

// TestShippingFailureSurfaces: a shipper whose Run fails (its receipts file cannot be opened: nothing
// would ever be shipped) is logged as an error and reported on Failed, and stop returns its error at
// once instead of waiting for a store that will never get anything.
func TestShippingFailureSurfaces(t *testing.T) {
	id, _ := archivetest.Identity(t, "ship-fail.example")
	root := t.TempDir()
	dir := filepath.Join(root, "archive")
	w, err := writer.Create(dir, writer.Options{Identity: id, FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	blockReceipts(t, dir)
	cfg := defaultConfig()
	cfg.Archive = dir
	cfg.Store.Dir = filepath.Join(root, "store")
	t.Cleanup(func() { store.ClearImmutable(cfg.Store.Dir) })
	var logBuf bytes.Buffer
	log := zerolog.New(zerolog.SyncWriter(&logBuf))
	s, err := startShipping(cfg, id, w, log)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.Failed():
		t.Logf("Failed: %v", err)
		if !errors.Is(err, unix.EISDIR) {
			t.Errorf("Failed: %v, want the receipts file's EISDIR", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the shipper's failure was not reported")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = s.stop(w, 10*time.Second)
	if !errors.Is(err, unix.EISDIR) {
		t.Errorf("stop: %v, want the shipper's error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("stop waited %s for a shipper that had failed", d)
	}
	if !strings.Contains(logBuf.String(), `"level":"error"`) || !strings.Contains(logBuf.String(), "shipping to the store failed") {
		t.Errorf("the failure is not logged as an error:\n%s", logBuf.String())
	}
}

// TestRunStopsWhenShippingFails: the daemon stops, with the shipper's error, when shipping fails.
func TestRunStopsWhenShippingFails(t *testing.T) {
	privtest.Kernel(t)
	root := t.TempDir()
	cfg := defaultConfig()
	cfg.Archive = filepath.Join(root, "archive")
	cfg.Key = filepath.Join(root, "keys", archive.IdentityKeyFile)
	cfg.Store.Dir = filepath.Join(root, "store")
	t.Cleanup(func() { store.ClearImmutable(cfg.Store.Dir) })
	if err := os.MkdirAll(cfg.Archive, 0o700); err != nil {
		t.Fatal(err)
	}
	blockReceipts(t, cfg.Archive)
	var logBuf bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	err := run(ctx, cfg, zerolog.New(zerolog.SyncWriter(&logBuf)))
	t.Logf("run returned after %s: %v", time.Since(start).Round(time.Millisecond), err)
	if ctx.Err() != nil {
		t.Fatalf("the daemon ran on with shipping failed:\n%s", logBuf.String())
	}
	if !errors.Is(err, unix.EISDIR) || !strings.Contains(err.Error(), "ship") {
		t.Fatalf("run: %v, want the shipper's error\n%s", err, logBuf.String())
	}
}
