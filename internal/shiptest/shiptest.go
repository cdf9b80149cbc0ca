// Package shiptest runs a store and a shipper for tests: a real store.Server on loopback in a test
// directory, which can be stopped and restarted on the same address, and helpers that compare a host's
// archive with the store's copy.
package shiptest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/forward"
	"github.com/auditarch/auditarch/store"
)

// Store is a store under test.
type Store struct {
	tb     testing.TB
	Dir    string
	Addr   string
	Key    *receipt.CosignVerifier
	Server *store.Server
	Log    *bytes.Buffer // the store's log (JSON lines), over restarts
	cfg    store.Config
	cancel context.CancelFunc
	done   chan error
}

// StartStore opens a store in dir (a new temporary directory when empty), enrolls the host identity keys
// hostPubs (host.pub files), and serves on 127.0.0.1 (a free port). It is stopped at the end of the test,
// and its immutable files are made deletable again.
func StartStore(tb testing.TB, dir string, cfg store.Config, hostPubs ...string) *Store {
	tb.Helper()
	if dir == "" {
		dir = filepath.Join(tb.TempDir(), "store")
	}
	s := &Store{tb: tb, Dir: dir, Log: &bytes.Buffer{}, cfg: cfg}
	tb.Cleanup(func() {
		s.Stop()
		store.ClearImmutable(dir)
	})
	s.cfg.Dir = dir
	s.cfg.Log = zerolog.New(zerolog.SyncWriter(s.Log)).With().Timestamp().Logger()
	for _, p := range hostPubs {
		vkey, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		os.MkdirAll(filepath.Join(dir, store.HostsDir), 0o700)
		if _, err := store.Enroll(dir, string(vkey)); err != nil {
			tb.Fatal(err)
		}
	}
	s.Start()
	k, err := receipt.LoadCosignVerifier(filepath.Join(dir, store.PubFile))
	if err != nil {
		tb.Fatal(err)
	}
	s.Key = k
	return s
}

// Start (re)starts the store on its address.
func (s *Store) Start() {
	s.tb.Helper()
	srv, err := store.Open(s.cfg)
	if err != nil {
		s.tb.Fatal(err)
	}
	addr := s.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	for i := 0; ; i++ {
		ln, err = net.Listen("tcp", addr)
		if err == nil || i > 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.tb.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	s.Server, s.cancel, s.done = srv, cancel, make(chan error, 1)
	go func() { s.done <- srv.Serve(ctx, ln) }()
}

// Stop stops the store (no-op when stopped).
func (s *Store) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
	s.cancel = nil
}

// HostDir is the store's area for origin.
func (s *Store) HostDir(origin string) string { return store.AreaDir(s.Dir, origin) }

// SameFiles fails the test unless the store's area for origin holds exactly the host archive's segment
// files, byte for byte.
func SameFiles(tb testing.TB, hostDir, storeDir string) {
	tb.Helper()
	a, b := segFiles(tb, hostDir), segFiles(tb, storeDir)
	if len(a) != len(b) {
		tb.Fatalf("host has %d segments %v, store %d %v", len(a), a, len(b), b)
	}
	for i := range a {
		if a[i] != b[i] {
			tb.Fatalf("segment %d: host %s, store %s", i, a[i], b[i])
		}
		x, _ := os.ReadFile(filepath.Join(hostDir, a[i]))
		y, _ := os.ReadFile(filepath.Join(storeDir, b[i]))
		if !bytes.Equal(x, y) {
			tb.Fatalf("segment %s: host %d bytes, store %d bytes, not the same", a[i], len(x), len(y))
		}
	}
}

func segFiles(tb testing.TB, dir string) []string {
	tb.Helper()
	m, err := filepath.Glob(filepath.Join(dir, archive.SegmentPattern))
	if err != nil {
		tb.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	sort.Strings(m)
	return m
}

// Leaves returns one string per leaf of the archive in dir, in order: its index, kind, time and, for
// events, the kernel serial. Comparing two archives' Leaves compares their leaf sets.
func Leaves(tb testing.TB, dir string) []string {
	tb.Helper()
	r, err := archive.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for {
		l, i, err := r.NextLeaf()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			tb.Fatalf("%s: %v", dir, err)
		}
		out = append(out, fmt.Sprintf("%d %d %d %d", i, l.Kind, l.Time, l.Event.Serial))
	}
	return out
}

// ShipArchive writes n small events into a new archive with opts (opts.Identity must be set), one every
// `every`, while a shipper sends it to st; it then closes the writer, waits until the store holds all of
// it, stops the shipper and returns the archive's directory.
func ShipArchive(tb testing.TB, st *Store, opts writer.Options, n int, every time.Duration) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "archive")
	w, err := writer.Create(dir, opts)
	if err != nil {
		tb.Fatal(err)
	}
	sh, err := forward.New(forward.Config{Addr: st.Addr, StoreKey: st.Key, Identity: opts.Identity, Dir: dir, Writer: w, Log: zerolog.Nop()})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sh.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for i := 1; i <= n; i++ {
		now := time.Now()
		w.Append(&audit.RawEvent{Kind: audit.KindEvent, Serial: uint32(i), Sec: now.Unix(), Received: now.UnixNano(), EOE: true,
			Records: []audit.Record{{Type: 1300, Text: []byte(fmt.Sprintf("audit(%d.000:%d): syscall=59 success=yes", now.Unix(), i))}}})
		time.Sleep(every)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := sh.WaitShipped(wctx, w.Durable()); err != nil {
		tb.Fatalf("not shipped: %v", err)
	}
	return dir
}

// OnlyCrashes fails unless the only problems r reports are the runs that crashed (killed daemons): one
// no-stop per crashed run, INCOMPLETE when there is one, PASS otherwise.
func OnlyCrashes(tb testing.TB, what string, r *verify.Report) {
	tb.Helper()
	crashed := 0
	for _, run := range r.Runs {
		if run.Ended == "crashed" {
			crashed++
		}
	}
	want := verify.Pass
	if crashed > 0 {
		want = verify.Incomplete
	}
	ok := r.Status == want && len(r.Problems) == crashed
	for _, p := range r.Problems {
		ok = ok && p.Code == verify.CodeNoStop
	}
	if !ok {
		tb.Fatalf("verify %s: %s with problems %+v; want %s with one no-stop for each of %d crashed runs", what, r.Status, r.Problems, want, crashed)
	}
}
