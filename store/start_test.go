package store_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit/raw"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/store"
)

// startArea writes an archive of about n events in ten sealed segments (a clock that runs the n events
// over ten seconds of archive time, one-second segments) and makes it an enrolled host's area in a new store
// directory. It returns the store directory and the host's origin.
func startArea(tb testing.TB, n int) (string, string) {
	tb.Helper()
	id, pub := archivetest.Identity(tb, "start.example")
	arch := filepath.Join(tb.TempDir(), "arch")
	var clock atomic.Int64
	clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	w, err := writer.Create(arch, writer.Options{Identity: id, SegmentDuration: time.Second, EpochDuration: archive.MaxEpoch,
		HeartbeatInterval: archive.MaxHeartbeat, FlushInterval: 10 * time.Millisecond, Now: now})
	if err != nil {
		tb.Fatal(err)
	}
	step := int64(10 * time.Second / time.Duration(n))
	for i := range n {
		t := clock.Add(step)
		stamp := fmt.Sprintf("audit(%d.%03d:%d): ", t/1e9, t%1e9/1e6, i+1)
		w.Append(&raw.Event{Kind: raw.KindEvent, Serial: uint32(i + 1), Sec: t / 1e9, Msec: int32(t % 1e9 / 1e6), Received: t, EOE: true,
			Records: []raw.Record{{Type: 1300, Text: []byte(stamp + fmt.Sprintf("arch=c000003e syscall=257 success=yes exit=3 pid=%d comm=\"cat\"", 1000+i%5000))}}})
		if i%(n/50) == n/50-1 {
			time.Sleep(15 * time.Millisecond) // let the flusher cut blocks and rotate
		}
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(tb.TempDir(), "store")
	vkey, err := os.ReadFile(pub)
	if err != nil {
		tb.Fatal(err)
	}
	origin, err := store.Enroll(dir, string(vkey))
	if err != nil {
		tb.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(arch, archive.SegmentPattern))
	for _, f := range files {
		archivetest.CopyFile(tb, f, filepath.Join(store.AreaDir(dir, origin), filepath.Base(f)))
	}
	tb.Cleanup(func() { store.ClearImmutable(store.AreaDir(dir, origin)) })
	return dir, origin
}

// A store saves the verified state at the last seal it reads; the next start continues from it and
// reads none of the segments before (a byte changed in one of them afterwards goes unread, and the
// store holds what it held), and a state that does not match the area is ignored (everything is read).
func TestStartFromState(t *testing.T) {
	dir, origin := startArea(t, 50_000)
	open := func() (*store.Server, uint64) {
		t.Helper()
		s, err := store.Open(store.Config{Dir: dir, Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		_, _, n, ok := s.Held(origin)
		if !ok {
			t.Fatal("the host's area is not loaded")
		}
		s.Close()
		return s, n
	}
	_, want := open()
	area := store.AreaDir(dir, origin)
	if _, err := os.Stat(filepath.Join(area, store.StateFile)); err != nil {
		t.Fatalf("no state saved: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(area, archive.SegmentPattern))
	if len(files) < 3 {
		t.Fatalf("%d segments", len(files))
	}
	// Make the first segment unreadable (a directory in its place): a start from the state does not
	// read it, and holds what it held.
	store.ClearImmutable(area)
	if err := os.Rename(files[0], files[0]+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(files[0], 0o700); err != nil {
		t.Fatal(err)
	}
	if _, n := open(); n != want {
		t.Fatalf("from the state: %d leaves, want %d", n, want)
	}
	// A state that does not describe the area (here: another length of its segment) is not used: the
	// area is read from the start, which now fails on the unreadable segment.
	stPath := filepath.Join(area, store.StateFile)
	st, _ := os.ReadFile(stPath)
	if err := os.WriteFile(stPath, append(st[:len(st)-1], []byte(`,"offset":1}`)...), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := store.Open(store.Config{Dir: dir, Log: zerolog.Nop()}); err == nil {
		s.Close()
		t.Fatal("a state that does not match the area was used")
	}
	// With the segment back, the full read succeeds and saves a state that matches again.
	os.Remove(files[0])
	if err := os.Rename(files[0]+".moved", files[0]); err != nil {
		t.Fatal(err)
	}
	if _, n := open(); n != want {
		t.Fatalf("read from the start: %d leaves, want %d", n, want)
	}
	if st2, _ := os.ReadFile(stPath); string(st2) != string(st) {
		t.Fatalf("the full read saved another state:\n%s\nwant\n%s", st2, st)
	}
}

// BenchmarkStoreStart: a store opening an area of a million leaves (ten sealed segments) with the state
// its previous start saved. Target: under 1 s (the full read is reported beside it).
func BenchmarkStoreStart(b *testing.B) {
	dir, origin := startArea(b, 1_000_000)
	t0 := time.Now()
	s, err := store.Open(store.Config{Dir: dir, Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	_, _, leaves, _ := s.Held(origin)
	s.Close()
	full := time.Since(t0)
	b.ResetTimer()
	var d time.Duration
	for range b.N {
		t1 := time.Now()
		s, err := store.Open(store.Config{Dir: dir, Log: zerolog.Nop()})
		if err != nil {
			b.Fatal(err)
		}
		if _, _, n, _ := s.Held(origin); n != leaves {
			b.Fatalf("%d leaves from the state, %d from the area", n, leaves)
		}
		d = time.Since(t1)
		s.Close()
	}
	verdict := "PASS"
	if d >= time.Second {
		verdict = "FAIL"
	}
	b.ReportMetric(d.Seconds(), "s/start")
	b.Logf("store start on an area of %d leaves: %s from the saved state (target < 1 s: %s); %s reading the whole area", leaves, d.Round(time.Millisecond), verdict, full.Round(time.Millisecond))
}
