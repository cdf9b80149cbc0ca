package verify

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/internal/archivetest"
	"golang.org/x/mod/sumdb/note"
)

// streamVerify feeds dir's segment files to a Stream in random pieces, in name order, as a store receives
// them, and finishes the report as Dir does.
func streamVerify(t testing.TB, dir string, opts Options, rng *rand.Rand) *Report {
	t.Helper()
	files := archivetest.SegFiles(t, dir)
	s := NewStream(opts)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		for off := 0; off < len(data); {
			n := 1 + rng.IntN(min(len(data)-off, 3000))
			if _, err := s.Write(name, int64(off), data[off:off+n]); err != nil {
				t.Fatalf("Write %s at %d: %v", name, off, err)
			}
			off += n
		}
	}
	// The last segment is the newest: Dir reads a torn end of it as its torn tail, not a crash's.
	s.v.r.Live = false
	return s.Finish()
}

func problemCodes(r *Report) []string {
	var codes []string
	for _, p := range r.Problems {
		codes = append(codes, p.Class+"/"+p.Code)
	}
	sort.Strings(codes)
	return codes
}

// TestStreamMatchesVerify: an archive fed in random pieces gives Dir's verdict, leaf count and latest
// checkpoint.
func TestStreamMatchesVerify(t *testing.T) {
	id, pub := archivetest.Keys(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "a")
	archivetest.Write(t, dir, archivetest.FastOptions(id), 200, 1500*time.Millisecond)
	archivetest.Write(t, dir, archivetest.FastOptions(id), 50, 300*time.Millisecond)
	want, err := Dir(dir, Options{Key: pub})
	if err != nil {
		t.Fatal(err)
	}
	for seed := uint64(0); seed < 5; seed++ {
		got := streamVerify(t, dir, Options{Key: pub}, rand.New(rand.NewPCG(seed, 1)))
		if got.Status != want.Status || got.Leaves != want.Leaves || got.Verified != want.Verified || got.Latest != want.Latest ||
			fmt.Sprint(problemCodes(got)) != fmt.Sprint(problemCodes(want)) || len(got.Segments) != len(want.Segments) {
			t.Fatalf("seed %d: stream %s %d/%d leaves %v, verify %s %d/%d leaves %v", seed, got.Status, got.Verified, got.Leaves,
				problemCodes(got), want.Status, want.Verified, want.Leaves, problemCodes(want))
		}
	}
	if want.Status != Pass {
		t.Fatalf("fixture: %s %v", want.Status, problemCodes(want))
	}
}

// TestStreamOrder: bytes that do not continue the stream are refused and not taken.
func TestStreamOrder(t *testing.T) {
	id, pub := archivetest.Keys(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "a")
	archivetest.Write(t, dir, archivetest.FastOptions(id), 20, 0)
	files := archivetest.SegFiles(t, dir)
	data, _ := os.ReadFile(files[0])
	s := NewStream(Options{Key: pub})
	name := filepath.Base(files[0])
	if _, err := s.Write(name, 5, data[:10]); err == nil {
		t.Fatal("a new segment at offset 5 was taken")
	}
	if _, err := s.Write(name, 0, data[:10]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(name, 5, data[5:20]); err == nil {
		t.Fatal("overlapping bytes were taken")
	}
	if _, err := s.Write("seg-0.aseg", 0, data); err == nil {
		t.Fatal("a segment sorting before the current one was taken")
	}
	u, err := s.Write(name, 10, data[10:])
	if err != nil || len(u.Problems) != 0 || u.Size == 0 || len(u.Latest) == 0 {
		t.Fatalf("rest of the segment: %v, %+v", err, u)
	}
}

// A stream resumed from the snapshot at a sealed segment gives what the whole stream gives: the same
// size, latest checkpoint, status and problems for what follows, tampering after it included.
func TestSnapshotResume(t *testing.T) {
	id, pub := archivetest.Keys(t, "snap.example")
	dir := filepath.Join(t.TempDir(), "arch")
	archivetest.Write(t, dir, archivetest.FastOptions(id), 120, 1500*time.Millisecond)
	archivetest.Write(t, dir, archivetest.FastOptions(id), 60, 800*time.Millisecond) // a second run: START after STOP
	files := archivetest.SegFiles(t, dir)
	if len(files) < 4 {
		t.Fatalf("%d segments", len(files))
	}
	opts := Options{Key: pub}
	feed := func(s *Stream, fs []string) {
		for _, f := range fs {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Write(filepath.Base(f), 0, data); err != nil {
				t.Fatal(err)
			}
		}
	}
	full := NewStream(opts)
	feed(full, files)
	for k := 1; k < len(files); k++ {
		s := NewStream(opts)
		feed(s, files[:k])
		snap, err := s.Snapshot()
		if err != nil {
			t.Fatalf("snapshot after %d segments: %v", k, err)
		}
		r, err := ResumeStream(opts, snap)
		if err != nil {
			t.Fatalf("resume after %d segments: %v", k, err)
		}
		if name, off := r.Position(); name != filepath.Base(files[k-1]) || off == 0 {
			t.Fatalf("resumed at %s %d", name, off)
		}
		feed(r, files[k:])
		if r.Size() != full.Size() || r.Report().Latest != full.Report().Latest || len(r.Report().Problems) != 0 {
			t.Fatalf("resumed after %d segments: size %d latest %q problems %v; whole: %d %q", k, r.Size(), r.Report().Latest, r.Report().Problems, full.Size(), full.Report().Latest)
		}
	}
	// At any block boundary inside a segment too (what a store keeps in memory to undo refused bytes).
	data, err := os.ReadFile(files[1])
	if err != nil {
		t.Fatal(err)
	}
	offs := append(archivetest.BlockOffsets(data), len(data))
	for k := 2; k < len(offs); k++ {
		s := NewStream(opts)
		feed(s, files[:1])
		if _, err := s.Write(filepath.Base(files[1]), 0, data[:offs[k]]); err != nil {
			t.Fatal(err)
		}
		snap, err := s.Snapshot()
		if err != nil {
			t.Fatalf("snapshot at block %d of %s: %v", k, files[1], err)
		}
		r, err := ResumeStream(opts, snap)
		if err != nil {
			t.Fatalf("resume at block %d: %v", k, err)
		}
		if _, err := r.Write(filepath.Base(files[1]), int64(offs[k]), data[offs[k]:]); err != nil {
			t.Fatal(err)
		}
		feed(r, files[2:])
		fr := r.Finish()
		if r.Size() != full.Size() || fr.Latest != full.Report().Latest || len(fr.Problems) != 0 {
			t.Fatalf("resumed at block %d: size %d, problems %v", k, r.Size(), fr.Problems)
		}
	}
	// Tampering after the snapshot is caught: the last segment re-signed by another key.
	s := NewStream(opts)
	feed(s, files[:2])
	snap, _ := s.Snapshot()
	other, _ := archivetest.Keys(t, "snap.example")
	if _, err := ResumeStream(Options{Key: otherVerifier(t, other)}, snap); err == nil {
		t.Error("a snapshot resumed under another identity key")
	}
	r, _ := ResumeStream(opts, snap)
	d := archivetest.CopyDir(t, dir)
	a := loadArchive(t, d)
	a.rechain(t, 0, func(archive.Checkpoint) note.Signer { return other.Signer })
	a.save(t)
	feed(r, archivetest.SegFiles(t, d)[2:])
	if codes := problemCodes(r.Finish()); !slices.Contains(codes, Tampered+"/"+CodeSignature) {
		t.Errorf("re-signed segments after the snapshot: problems %v", codes)
	}
	// Bytes after the seal of the resumed segment are refused like any others.
	r, _ = ResumeStream(opts, snap)
	name, off := r.Position()
	extra := archive.AppendBlock(nil, archive.AppendEntry(nil, archive.EntryLeaf, archive.AppendControlLeaf(nil, archive.LeafHeartbeat, 1, archive.Heartbeat{})))
	u, err := r.Write(name, off, extra)
	if err != nil || len(u.Problems) == 0 || u.Problems[0].Code != CodeSeal {
		t.Errorf("a leaf after the resumed seal: %v, %+v", err, u.Problems)
	}
	if _, err := ResumeStream(opts, []byte(`{"version":1}`)); err == nil {
		t.Error("an empty state resumed")
	}
}

func otherVerifier(t *testing.T, id *archive.Identity) note.Verifier {
	v, err := note.NewVerifier(id.VKey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestStreamStopped: a stream that ends with a run's STOP, under a checkpoint that verified, reports it
// (with the STOP's time), and keeps it through a snapshot; a START after it, an end cut before it (a
// crash), or a STOP that no key of the chain signs (after a gap) is no clean stop.
func TestStreamStopped(t *testing.T) {
	id, pub := archivetest.Keys(t, "stopped.example")
	dir := filepath.Join(t.TempDir(), "arch")
	opts := archivetest.FastOptions(id)
	opts.EpochDuration = archive.MaxEpoch // no KEY: after a gap only the next START re-chains
	archivetest.Write(t, dir, opts, 60, 1500*time.Millisecond)
	first := archivetest.SegFiles(t, dir)
	if len(first) < 2 {
		t.Fatalf("%d segments", len(first))
	}
	read := func(t *testing.T, f string) []byte {
		t.Helper()
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	feed := func(t *testing.T, s *Stream, fs []string) {
		t.Helper()
		for _, f := range fs {
			if _, err := s.Write(filepath.Base(f), 0, read(t, f)); err != nil {
				t.Fatal(err)
			}
		}
	}
	want, err := Dir(dir, Options{Key: pub})
	if err != nil || want.Status != Pass || len(want.Runs) != 1 || want.Runs[0].Ended != "stopped" {
		t.Fatalf("fixture: %v %+v", err, want)
	}
	s := NewStream(Options{Key: pub})
	feed(t, s, first)
	at, ok := s.Stopped()
	if !ok || at.UTC().Format(time.RFC3339Nano) != want.Runs[0].StopTime {
		t.Fatalf("Stopped after the whole run: %s %v, the STOP is at %s", at, ok, want.Runs[0].StopTime)
	}
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ResumeStream(Options{Key: pub}, snap)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := r.Stopped(); !ok || !got.Equal(at) {
		t.Fatalf("Stopped after resuming from the seal's snapshot: %s %v, want %s", got, ok, at)
	}

	t.Run("crash", func(t *testing.T) {
		// The STOP's block cut off: the run is still open when the stream ends.
		s := NewStream(Options{Key: pub})
		feed(t, s, first[:len(first)-1])
		last := first[len(first)-1]
		data := read(t, last)
		offs := archivetest.BlockOffsets(data)
		if _, err := s.Write(filepath.Base(last), 0, data[:offs[len(offs)-1]]); err != nil {
			t.Fatal(err)
		}
		if at, ok := s.Stopped(); ok {
			t.Errorf("Stopped without the STOP's block: %s", at)
		}
	})
	t.Run("unverified", func(t *testing.T) {
		// Only the last segment: its header's chain is not trusted, so its STOP cannot be told from a forgery.
		s := NewStream(Options{Key: pub})
		feed(t, s, first[len(first)-1:])
		if at, ok := s.Stopped(); ok {
			t.Errorf("Stopped on a STOP no trusted key signs: %s", at)
		}
	})
	t.Run("started again", func(t *testing.T) {
		d := archivetest.CopyDir(t, dir)
		archivetest.Write(t, d, opts, 10, 0)
		all := archivetest.SegFiles(t, d)
		next := all[len(first)]
		data := read(t, next)
		offs := archivetest.BlockOffsets(data)
		if len(offs) < 2 {
			t.Fatalf("the second run's segment has %d blocks", len(offs))
		}
		r, err := ResumeStream(Options{Key: pub}, snap)
		if err != nil {
			t.Fatal(err)
		}
		// The header and the START's block.
		if _, err := r.Write(filepath.Base(next), 0, data[:offs[1]+int(binary.LittleEndian.Uint32(data[offs[1]:]))+archive.BlockHeaderSize]); err != nil {
			t.Fatal(err)
		}
		if at, ok := r.Stopped(); ok {
			t.Errorf("Stopped after the next START: %s", at)
		}
	})
}
