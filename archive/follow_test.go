package archive_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/internal/archivetest"
)

// A follower reads every leaf of a live archive in order, across rotations, without reading past what is
// durable; a follower resumed from a saved cursor continues with exactly the next leaf; after the writer
// stops, a follower without a writer ends with io.EOF; nothing is returned twice or skipped.
func TestFollower(t *testing.T) {
	id, _ := archivetest.Keys(t, "follow.example")
	dir := filepath.Join(t.TempDir(), "arch")
	w, err := writer.Create(dir, archivetest.FastOptions(id))
	if err != nil {
		t.Fatal(err)
	}
	const n = 400
	go func() {
		for i := range n {
			w.Append(archivetest.Event(uint32(i + 1)))
			time.Sleep(3 * time.Millisecond) // about 1.2 s: a few segments, epochs and heartbeats
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cursorFile := filepath.Join(t.TempDir(), "cursor")

	// The first follower reads half the events live, commits its cursor, and stops.
	f := archive.NewFollower(dir, w, archive.Cursor{})
	var want uint64
	events := 0
	for events < n/2 {
		l, i, err := f.Next(ctx)
		if err != nil {
			t.Fatalf("Next after %d events: %v", events, err)
		}
		if i != want {
			t.Fatalf("leaf %d returned, want %d", i, want)
		}
		if dur := w.Durable(); i >= dur.Size {
			t.Fatalf("leaf %d returned while only %d are durable", i, dur.Size)
		}
		want++
		if l.Kind == archive.LeafEvent {
			events++
			if l.Event.Serial != uint32(events) {
				t.Fatalf("event %d has serial %d", events, l.Event.Serial)
			}
		}
	}
	if err := archive.SaveCursor(cursorFile, f.Cursor()); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// A second follower resumes from the saved cursor while the writer goes on.
	c, err := archive.LoadCursor(cursorFile)
	if err != nil {
		t.Fatal(err)
	}
	if c != f.Cursor() || c.Index != want {
		t.Fatalf("loaded cursor %+v, saved %+v (next leaf %d)", c, f.Cursor(), want)
	}
	f = archive.NewFollower(dir, w, c)
	for events < n {
		l, i, err := f.Next(ctx)
		if err != nil {
			t.Fatalf("resumed Next after %d events: %v", events, err)
		}
		if i != want {
			t.Fatalf("resumed: leaf %d returned, want %d", i, want)
		}
		want++
		if l.Kind == archive.LeafEvent {
			events++
			if l.Event.Serial != uint32(events) {
				t.Fatalf("resumed: event %d has serial %d", events, l.Event.Serial)
			}
		}
	}
	f.Close()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	// Without a writer: the rest (STOP, SEAL) and then io.EOF.
	f = archive.NewFollower(dir, nil, c)
	defer f.Close()
	total := c.Index
	for {
		_, i, err := f.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i != total {
			t.Fatalf("after stop: leaf %d, want %d", i, total)
		}
		total++
	}
	_, _, durable := w.Stats()
	if r, _ := verify.Dir(dir, verify.Options{}); total != r.Leaves || durable > total {
		t.Fatalf("the follower read %d leaves, the archive holds %d (durable %d)", total, r.Leaves, durable)
	}
	if segs, _ := f.Segments(); len(segs) < 2 {
		t.Fatalf("the archive has %d segments: the test did not cross a rotation", len(segs))
	}
}

// A cursor file that is not a cursor is an error, not a fresh start; a missing one is the beginning.
func TestCursorFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cursor")
	if c, err := archive.LoadCursor(path); err != nil || c != (archive.Cursor{}) {
		t.Fatalf("missing cursor: %+v, %v", c, err)
	}
	for _, bad := range []string{"{", `{"segment":"../../etc/passwd"}`, string(make([]byte, 5000))} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := archive.LoadCursor(path); err == nil {
			t.Errorf("cursor %.20q accepted", bad)
		}
	}
	c := archive.Cursor{Segment: archive.SegmentName(7, time.Unix(1e9, 0)), Offset: 100, First: 7, Index: 9}
	if err := archive.SaveCursor(path, c); err != nil {
		t.Fatal(err)
	}
	if got, err := archive.LoadCursor(path); err != nil || got != c {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, c)
	}
}
