package search

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/capfile"
)

// TestParse checks what Parse refuses, and that the first error in OptionNames order is reported.
func TestParse(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		opts map[string]string
		err  string // "": no error
	}{
		{nil, ""},
		{map[string]string{"since": "2h", "until": "1h"}, ""},
		{map[string]string{"json": ""}, `unknown option "json"`},
		{map[string]string{"pid": "1", "uid ": "0", "b": "x"}, `unknown option "b"`},
		{map[string]string{"key": ""}, "--key needs a value"},
		{map[string]string{"key": "", "pid": "x"}, `--pid "x": want a decimal number from 0 to 4294967295`},
		{map[string]string{"uid": "x", "since": "x"}, `--since "x": want an RFC 3339 time`},
		{map[string]string{"syscall": "exceve"}, `--syscall "exceve": unknown syscall`},
		{map[string]string{"since": "1h", "until": "2h"}, "--until 2026-11-22T10:00:00Z is not after --since 2026-11-22T11:00:00Z"},
	} {
		_, err := Parse(tc.opts, now)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("Parse(%v): %v", tc.opts, err)
		case tc.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.err)):
			t.Errorf("Parse(%v) = %v, want an error starting %q", tc.opts, err, tc.err)
		}
	}
	if got := OptionNames(); !slices.Equal(got, options) {
		t.Errorf("OptionNames() = %v", got)
	}
}

// TestRun checks Run against its contract: for each query, exactly the events that the decoded fields
// and the time window select, LOST events only without field filters, in leaf order, with their leaf
// index — over an archive of two runs of the real kernel's workload and losses.
func TestRun(t *testing.T) {
	dir := testArchive(t, "lost.cap", "workload.cap")
	var all []*audit.Event // every event of the archive, decoded, with its index
	r, err := archive.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for {
		raw, idx, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ev := audit.Decode(raw)
		ev.Index = idx
		all = append(all, ev)
	}
	for _, tc := range []struct {
		opts map[string]string
		want int
	}{
		{nil, 45},
		{map[string]string{"syscall": "connect"}, 3},
		{map[string]string{"syscall": "reboot"}, 0},
		{map[string]string{"pid": "8945", "syscall": "kill"}, 1},
		{map[string]string{"since": "2023-11-14"}, 45},
		{map[string]string{"since": "2023-11-14", "uid": "0"}, 43},
		{map[string]string{"since": "2026-11-22T05:09:23.210Z"}, 20},
		{map[string]string{"until": "2026-11-22"}, 2},
		{map[string]string{"until": "2026-11-22T05:09:23.210Z"}, 25},
		{map[string]string{"since": "2026-11-23"}, 0},
	} {
		q, err := Parse(tc.opts, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		var want []uint64
		for _, ev := range all {
			t, _ := time.Parse(time.RFC3339Nano, ev.Time)
			inWindow := (q.since.IsZero() || !t.Before(q.since)) && (q.until.IsZero() || t.Before(q.until))
			if inWindow && (ev.Type == "LOST" && !q.fields || ev.Type != "LOST" && q.match(ev)) {
				want = append(want, ev.Index)
			}
		}
		var got []uint64
		err = Run(context.Background(), dir, q, func(ev *audit.Event) error {
			got = append(got, ev.Index)
			return nil
		})
		if err != nil {
			t.Fatalf("%v: %v", tc.opts, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%v: Run emitted the events at %v, want %v", tc.opts, got, want)
		}
		if len(got) != tc.want {
			t.Errorf("%v: %d events, want %d", tc.opts, len(got), tc.want)
		}
	}
}

// TestRunStops checks that an error from emit, or a done context, stops Run with that error.
func TestRunStops(t *testing.T) {
	dir := testArchive(t, "workload.cap")
	errStop := errors.New("stop")
	n := 0
	err := Run(context.Background(), dir, Query{}, func(*audit.Event) error { n++; return errStop })
	if !errors.Is(err, errStop) || n != 1 {
		t.Errorf("emit failing: Run = %v after %d events, want %v after 1", err, n, errStop)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n = 0
	err = Run(ctx, dir, Query{}, func(*audit.Event) error {
		if n++; n == 2 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || n != 2 {
		t.Errorf("context canceled: Run = %v after %d events, want %v after 2", err, n, context.Canceled)
	}
	if err := Run(context.Background(), filepath.Join(t.TempDir(), "none"), Query{}, func(*audit.Event) error { return nil }); err == nil || archive.IsCorrupt(err) {
		t.Errorf("missing archive: Run = %v, want an error that is not about damage", err)
	}
}

// TestRunDamaged checks that Run skips a damaged block, emits the events around it, and returns the
// damage at the end.
func TestRunDamaged(t *testing.T) {
	dir := testArchive(t, "workload.cap", "workload.cap")
	segs, err := filepath.Glob(filepath.Join(dir, archive.SegmentPattern))
	if err != nil || len(segs) < 2 {
		t.Fatalf("segments %v: %v", segs, err)
	}
	slices.Sort(segs)
	last := segs[len(segs)-1]
	data, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(last, data[:len(data)-1], 0o600); err != nil { // a torn last block
		t.Fatal(err)
	}
	q, err := Parse(map[string]string{"syscall": "connect"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = Run(context.Background(), dir, q, func(*audit.Event) error { n++; return nil })
	var ce *archive.CorruptError
	if !archive.IsCorrupt(err) || !errors.As(err, &ce) || ce.Path != last || !ce.Torn {
		t.Errorf("Run = %v, want the torn block of %s", err, last)
	}
	if n != 3 {
		t.Errorf("%d events before the torn block, want the first run's 3", n)
	}
}

// testArchive replays the captures in ../testdata, one writer run each, into a new archive and returns
// its directory.
func testArchive(t *testing.T, caps ...string) string {
	t.Helper()
	id, _ := archivetest.Identity(t, "auditarch/test")
	dir := filepath.Join(t.TempDir(), "archive")
	for _, name := range caps {
		f, err := os.Open(filepath.Join("..", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		c, err := capfile.Read(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		w, err := writer.Create(dir, writer.Options{Identity: id, Sync: writer.SyncNone})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range capfile.Replay(c, 1_700_000_000e9) {
			w.Append(ev)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
