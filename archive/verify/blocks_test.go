package verify

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/internal/archivetest"
)

// A batch larger than FlushBytes (events arriving faster than the flush interval) is cut into several
// blocks, each ending with its own checkpoint; the batch buffers are reused without mixing events, the
// archive verifies, and every event reads back once, in order.
func TestBlocksCutAtFlushBytes(t *testing.T) {
	id, pub := archivetest.Keys(t, "blocks.example")
	dir := filepath.Join(t.TempDir(), "arch")
	w, err := writer.Create(dir, writer.Options{Identity: id, FlushInterval: 50 * time.Millisecond, FlushBytes: 2048})
	if err != nil {
		t.Fatal(err)
	}
	const n = 6000
	for i := range n {
		w.Append(archivetest.Event(uint32(i + 1)))
		if i%1000 == 999 {
			time.Sleep(60 * time.Millisecond)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Dir(dir, Options{Key: pub})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != Pass || r.Verified != r.Leaves {
		t.Fatalf("verify: %s, %d of %d verified, %+v", r.Status, r.Verified, r.Leaves, r.Problems)
	}
	cks := 0
	for _, s := range r.Segments {
		cks += s.Checkpoints
	}
	f := archive.NewFollower(dir, nil, archive.Cursor{})
	defer f.Close()
	var serial uint32
	for {
		l, _, err := f.Next(t.Context())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if l.Kind == archive.LeafEvent {
			serial++
			if l.Event.Serial != serial {
				t.Fatalf("event %d has serial %d", serial, l.Event.Serial)
			}
		}
	}
	fi, _ := os.Stat(archivetest.SegFiles(t, dir)[0])
	if serial != n || cks < n*150/2048/2 {
		t.Fatalf("%d events read back, %d checkpoints (%d bytes on disk): batches were not cut into signed blocks", serial, cks, fi.Size())
	}
	t.Logf("%d events in %d signed blocks", n, cks)
}

// A report lists at most maxProblems problems and counts the rest, and its status still counts the worst
// of them: an omitted tampering problem makes it TAMPERED.
func TestReportOmits(t *testing.T) {
	v, err := newVerifier(Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range maxProblems + 500 {
		v.problem(Incomplete, CodeSilence, nil, "silence")
	}
	v.problem(Tampered, CodeRoot, nil, "root")
	v.finish()
	r := v.r
	if len(r.Problems) != maxProblems || r.Omitted.Problems != 501 || r.Omitted.Class != Tampered || r.Status != Tampered {
		t.Fatalf("%d problems listed, omitted %+v, status %s", len(r.Problems), r.Omitted, r.Status)
	}
}
