package archive

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// streamVerify feeds dir's segment files to a Stream in random pieces, in name order, as a store receives
// them, and finishes the report as Verify does.
func streamVerify(t testing.TB, dir string, opts VerifyOptions, rng *rand.Rand) *Report {
	t.Helper()
	files := tSegFiles(t, dir)
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
	// The last segment is the newest: Verify reads a torn end of it as its torn tail, not a crash's.
	s.v.r.Live = false
	if len(s.buf) > 0 && s.state == streamEntries {
		s.v.problem(Incomplete, "torn-tail", nil, "torn tail (%d bytes)", len(s.buf))
		s.v.r.Unsigned = &Tail{Segment: s.name, First: s.v.ckSize, Leaves: s.v.tree.Size - s.v.ckSize, Torn: int64(len(s.buf))}
		s.buf = s.buf[:0]
	}
	if s.state == streamEntries {
		s.v.endSegment(s.name, 0, true)
		s.v.closeSegment()
		s.state = streamNone
	} else {
		s.endSegment()
	}
	s.v.finish()
	return s.v.r
}

func problemCodes(r *Report) []string {
	var codes []string
	for _, p := range r.Problems {
		codes = append(codes, p.Class+"/"+p.Code)
	}
	sort.Strings(codes)
	return codes
}

// TestStreamMatchesVerify: an archive fed in random pieces gives Verify's verdict, leaf count and latest
// checkpoint.
func TestStreamMatchesVerify(t *testing.T) {
	id, pub := tIdentity(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "a")
	tWrite(t, dir, tFastOptions(id), 200, 1500*time.Millisecond)
	tWrite(t, dir, tFastOptions(id), 50, 300*time.Millisecond)
	want, err := Verify(dir, VerifyOptions{Key: pub})
	if err != nil {
		t.Fatal(err)
	}
	for seed := uint64(0); seed < 5; seed++ {
		got := streamVerify(t, dir, VerifyOptions{Key: pub}, rand.New(rand.NewPCG(seed, 1)))
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
	id, pub := tIdentity(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "a")
	tWrite(t, dir, tFastOptions(id), 20, 0)
	files := tSegFiles(t, dir)
	data, _ := os.ReadFile(files[0])
	s := NewStream(VerifyOptions{Key: pub})
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
