package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/auditarch/auditarch/internal/shiptest"
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
	cfg.Sandbox = SandboxOff // in-process: the sandbox would confine the test binary
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

// TestStopShipsTheEnd: stop returns once the store holds the archive's end — the STOP and the seal —
// under a receipt. With the store gone (since the run started, or only since it last acknowledged) it
// says once how many bytes the store does not hold, and the next run that reaches the store ships them.
func TestStopShipsTheEnd(t *testing.T) {
	const origin = "ship-stop.example"
	id, pub := archivetest.Identity(t, origin)
	st := shiptest.StartStore(t, "", store.Config{}, pub)
	dir := filepath.Join(t.TempDir(), "archive")
	cfg := defaultConfig()
	cfg.Archive, cfg.Store.Address, cfg.Store.Key = dir, st.Addr, filepath.Join(st.Dir, store.PubFile)
	var serial uint32
	appendEvents := func(w *writer.Writer, n int) {
		for range n {
			serial++
			w.Append(archivetest.Event(serial))
			time.Sleep(time.Millisecond)
		}
	}
	// run starts a writer and its shipping, appends n events, calls during (if set), appends n more,
	// closes the writer and stops shipping within wait; it returns the writer and the log.
	run := func(n int, during func(s *shipping, w *writer.Writer), wait time.Duration) (*writer.Writer, string) {
		t.Helper()
		w, err := writer.Create(dir, writer.Options{Identity: id, FlushInterval: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		var logBuf bytes.Buffer
		s, err := startShipping(cfg, id, w, zerolog.New(zerolog.SyncWriter(&logBuf)))
		if err != nil {
			t.Fatal(err)
		}
		appendEvents(w, n)
		if during != nil {
			during(s, w)
		}
		appendEvents(w, n)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.stop(w, wait); err != nil {
			t.Fatal(err)
		}
		return w, logBuf.String()
	}
	held := func() uint64 {
		t.Helper()
		_, _, leaves, ok := st.Server.Held(origin)
		if !ok {
			t.Fatal("the store has no area for the host")
		}
		return leaves
	}
	heldReceipt := func() uint64 {
		t.Helper()
		rs, _, err := receipt.Read(filepath.Join(st.HostDir(origin), store.ReceiptsFile), st.Key)
		newest, ok := receipt.Newest(rs)
		if err != nil || !ok {
			t.Fatalf("the store's receipts: %v", err)
		}
		return newest.Checkpoint.Size
	}

	w, log := run(100, nil, 10*time.Second)
	if end := w.Durable().Size; held() != end || heldReceipt() != end || !strings.Contains(log, "the store holds the whole archive") {
		t.Fatalf("stop returned with the store holding %d leaves under a receipt for %d, the archive %d\n%s", held(), heldReceipt(), end, log)
	}

	// The store stops while the daemon runs: what follows is not shipped.
	_, log = run(100, func(s *shipping, w *writer.Writer) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.sh.WaitShipped(ctx, w.Durable()); err != nil {
			t.Fatal(err)
		}
		st.Stop()
	}, 2*time.Second)
	hostBytes, storeBytes := dirBytes(t, dir), dirBytes(t, st.HostDir(origin))
	n, msg := unshipped(t, log)
	t.Logf("%s (the archive holds %d bytes, the store %d)", msg, hostBytes, storeBytes)
	if n <= 0 || n < hostBytes-storeBytes || n > hostBytes || !strings.Contains(msg, fmt.Sprintf("%d bytes", n)) {
		t.Errorf("the log says %d bytes were not shipped; the archive holds %d, the store %d", n, hostBytes, storeBytes)
	}
	// A run that never reaches the store counts from where the archive was when it started.
	_, log = run(100, nil, 2*time.Second)
	before := hostBytes
	hostBytes = dirBytes(t, dir)
	n, msg = unshipped(t, log)
	t.Logf("%s (this run added %d bytes)", msg, hostBytes-before)
	if n <= 0 || n > hostBytes-before || !strings.Contains(msg, fmt.Sprintf("at least %d bytes", n)) {
		t.Errorf("the log says %d bytes were not shipped; this run added %d", n, hostBytes-before)
	}

	// The next run that reaches the store ships them, and its own end.
	st.Start()
	w, log = run(10, nil, 10*time.Second)
	if end := w.Durable().Size; held() != end || heldReceipt() != end {
		t.Fatalf("the next run: the store holds %d leaves under a receipt for %d, the archive %d\n%s", held(), heldReceipt(), end, log)
	}
	shiptest.SameFiles(t, dir, st.HostDir(origin))
}

// unshipped returns what the log of a stop says was not shipped (it must say it once): the count and the
// message.
func unshipped(t *testing.T, log string) (int64, string) {
	t.Helper()
	var said []map[string]any
	for _, line := range strings.Split(log, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["unshipped_bytes"] != nil {
			said = append(said, m)
		}
	}
	if len(said) != 1 {
		t.Fatalf("the log says %d times what was not shipped, want once:\n%s", len(said), log)
	}
	n, _ := said[0]["unshipped_bytes"].(float64)
	msg, _ := said[0]["message"].(string)
	return int64(n), msg
}

// dirBytes is the size of the segment files in dir.
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, f := range archivetest.SegFiles(t, dir) {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}
