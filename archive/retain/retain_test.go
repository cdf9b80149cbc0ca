package retain_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/note"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/retain"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/internal/archivetest"
)

const origin = "auditarch/retain-test"

// fixture is an archive of several segments, its keys and a store key.
type fixture struct {
	dir   string
	id    *archive.Identity
	key   note.Verifier
	store *receipt.Cosigner
	sv    *receipt.CosignVerifier
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	id, key := archivetest.Keys(t, origin)
	store, sv := archivetest.Store(t, "auditarch-store/test")
	dir := filepath.Join(t.TempDir(), "arch")
	archivetest.Write(t, dir, archivetest.FastOptions(id), 300, 3*time.Second)
	if n := len(archivetest.SegFiles(t, dir)); n < 4 {
		t.Fatalf("%d segments, want at least 4", n)
	}
	return &fixture{dir: dir, id: id, key: key, store: store, sv: sv}
}

// checkpoint is a signed checkpoint of the archive and the segment it stands in.
type checkpoint struct {
	size    uint64
	note    []byte
	segment int
}

// checkpoints returns the archive's signed checkpoints in order.
func checkpoints(t *testing.T, dir string) []checkpoint {
	t.Helper()
	var out []checkpoint
	for i, path := range archivetest.SegFiles(t, dir) {
		r, err := archive.OpenSegment(path)
		if err != nil {
			t.Fatal(err)
		}
		for {
			typ, p, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				break // a block being written
			}
			if typ == archive.EntryCheckpoint {
				c, err := archive.PeekCheckpoint(p)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, checkpoint{size: c.Size, note: append([]byte(nil), p...), segment: i})
			}
		}
		r.Close()
	}
	return out
}

// firstIndexes returns the first leaf index of each segment.
func firstIndexes(t *testing.T, dir string) []uint64 {
	t.Helper()
	var out []uint64
	for _, path := range archivetest.SegFiles(t, dir) {
		h, err := archive.ReadSegmentHeader(path)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.FirstIndex)
	}
	return out
}

// ship appends the store's receipt for ck to the archive's receipts file, as the shipper does.
func (f *fixture) ship(t *testing.T, store *receipt.Cosigner, ck []byte) {
	t.Helper()
	rc, err := store.Cosign(ck, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rf, err := os.OpenFile(filepath.Join(f.dir, receipt.ReceiptsFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	if err := receipt.Append(rf, rc); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) pruner(t *testing.T, opts retain.Options) *retain.Pruner {
	t.Helper()
	opts.Dir, opts.StoreKey, opts.Origin, opts.Identity, opts.Log = f.dir, f.sv, origin, f.id.VKey, zerolog.Nop()
	p, err := retain.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func (f *fixture) verify(t *testing.T, storeKey *receipt.CosignVerifier) *verify.Report {
	t.Helper()
	r, err := verify.Dir(f.dir, verify.Options{Key: f.key, StoreKey: storeKey})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func codes(r *verify.Report) []string {
	var out []string
	for _, p := range r.Problems {
		out = append(out, p.Code)
	}
	return out
}

// TestPruneAttested: with the store's receipt for the whole archive and every segment old, every
// segment but the newest goes that can, and the archive verifies PASS from the receipt's word, saying so.
// Without the store key the same archive is INCOMPLETE (missing-start), as if the segments were deleted.
func TestPruneAttested(t *testing.T) {
	f := newFixture(t)
	cks := checkpoints(t, f.dir)
	f.ship(t, f.store, cks[len(cks)-1].note)
	before := firstIndexes(t, f.dir)
	res, err := f.pruner(t, retain.Options{Keep: time.Nanosecond}).Prune(0)
	if err != nil {
		t.Fatal(err)
	}
	after := firstIndexes(t, f.dir)
	if res.Segments == 0 || len(after) != len(before)-res.Segments || after[0] != res.Kept || len(after) < 1 {
		t.Fatalf("pruned %+v: segments %v, then %v", res, before, after)
	}
	r := f.verify(t, f.sv)
	if r.Status != verify.Pass || r.Pruned == nil || r.Pruned.Status != verify.PruneAttested || r.Pruned.Leaves != res.Kept ||
		r.Verified != r.Leaves || r.FirstIndex != res.Kept {
		t.Fatalf("verify: %s %v, pruned %+v, %d of %d leaves verified", r.Status, r.Problems, r.Pruned, r.Verified, r.Leaves)
	}
	t.Logf("pruned %+v; verify: %s, pruned %+v receipt %+v, leaves %d from %d, %d verified", res, r.Status, r.Pruned, r.Pruned.Receipt, r.Leaves, r.FirstIndex, r.Verified)
	if r := f.verify(t, nil); r.Status != verify.Incomplete || r.Pruned.Status != verify.PruneNoStoreKey || !contains(codes(r), verify.CodeMissingStart) {
		t.Fatalf("verify without the store key: %s %v, pruned %+v", r.Status, codes(r), r.Pruned)
	}
	// A second pass with nothing new removes nothing.
	if res, err := f.pruner(t, retain.Options{Keep: time.Nanosecond}).Prune(0); err != nil || res.Segments != 0 {
		t.Fatalf("second pass: %+v, %v", res, err)
	}
}

func contains(s []string, x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

// TestPruneNeverUncovered: no receipt, a receipt short of a segment, a consumer behind, a receipt not by
// the store, a young archive: nothing uncovered is removed.
func TestPruneNeverUncovered(t *testing.T) {
	t.Run("no receipt", func(t *testing.T) {
		f := newFixture(t)
		n := len(archivetest.SegFiles(t, f.dir))
		if res, err := f.pruner(t, retain.Options{Keep: time.Nanosecond, MaxBytes: 1}).Prune(1 << 30); err != nil || res.Segments != 0 || len(archivetest.SegFiles(t, f.dir)) != n {
			t.Fatalf("pruned %+v, %v", res, err)
		}
	})
	t.Run("receipt short", func(t *testing.T) {
		f := newFixture(t)
		cks := checkpoints(t, f.dir)
		mid := cks[len(cks)/2]
		f.ship(t, f.store, mid.note)
		res, err := f.pruner(t, retain.Options{MaxBytes: 1}).Prune(0)
		if err != nil {
			t.Fatal(err)
		}
		firsts := firstIndexes(t, f.dir)
		if res.Segments == 0 || firsts[0] > mid.size {
			t.Fatalf("pruned %+v up to leaf %d with a receipt for %d leaves", res, firsts[0], mid.size)
		}
		if r := f.verify(t, f.sv); r.Status != verify.Pass || r.Pruned.Status != verify.PruneAttested {
			t.Fatalf("verify: %s %v, pruned %+v", r.Status, r.Problems, r.Pruned)
		}
	})
	t.Run("consumer behind", func(t *testing.T) {
		f := newFixture(t)
		cks := checkpoints(t, f.dir)
		f.ship(t, f.store, cks[len(cks)-1].note)
		firsts := firstIndexes(t, f.dir)
		behind := firsts[1] + 1 // inside the second segment
		if err := os.MkdirAll(filepath.Join(f.dir, "cursors"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := archive.SaveCursor(filepath.Join(f.dir, "cursors", "sink-x.json"), archive.Cursor{Index: behind}); err != nil {
			t.Fatal(err)
		}
		// A configured consumer without a cursor yet has passed nothing.
		missing := filepath.Join(f.dir, "cursors", "alert.json")
		if res, err := f.pruner(t, retain.Options{Keep: time.Nanosecond, Cursors: []string{missing}}).Prune(0); err != nil || res.Segments != 0 {
			t.Fatalf("with a consumer at leaf 0: pruned %+v, %v", res, err)
		}
		// A consumer that keeps its place elsewhere (the alert consumer): at leaf 0, nothing goes; one
		// with nothing to read yet holds nothing back; one that cannot say stops the pass.
		at := func(i uint64, ok bool, err error) func() (uint64, bool, error) {
			return func() (uint64, bool, error) { return i, ok, err }
		}
		if res, err := f.pruner(t, retain.Options{Keep: time.Nanosecond, Positions: []func() (uint64, bool, error){at(0, true, nil)}}).Prune(0); err != nil || res.Segments != 0 {
			t.Fatalf("with a position at leaf 0: pruned %+v, %v", res, err)
		}
		if res, err := f.pruner(t, retain.Options{Keep: time.Nanosecond, Positions: []func() (uint64, bool, error){at(0, false, os.ErrInvalid)}}).Prune(0); err == nil || res.Segments != 0 {
			t.Fatalf("with a position that fails: pruned %+v, %v", res, err)
		}
		res, err := f.pruner(t, retain.Options{Keep: time.Nanosecond}).Prune(0)
		if err != nil {
			t.Fatal(err)
		}
		if after := firstIndexes(t, f.dir); res.Segments > 1 || after[0] > behind {
			t.Fatalf("with a consumer at leaf %d: pruned %+v, first kept %d", behind, res, after[0])
		}
	})
	t.Run("receipt not by the store", func(t *testing.T) {
		f := newFixture(t)
		cks := checkpoints(t, f.dir)
		forger, _ := archivetest.Store(t, "auditarch-store/test") // same name, another key
		f.ship(t, forger, cks[len(cks)-1].note)
		n := len(archivetest.SegFiles(t, f.dir))
		res, err := f.pruner(t, retain.Options{Keep: time.Nanosecond}).Prune(1 << 30)
		if !errors.Is(err, receipt.ErrReceipt) || res.Segments != 0 || len(archivetest.SegFiles(t, f.dir)) != n {
			t.Fatalf("pruned %+v, %v; want nothing and ErrReceipt", res, err)
		}
	})
	t.Run("young and within budget", func(t *testing.T) {
		f := newFixture(t)
		cks := checkpoints(t, f.dir)
		f.ship(t, f.store, cks[len(cks)-1].note)
		if res, err := f.pruner(t, retain.Options{Keep: time.Hour, MaxBytes: 1 << 30}).Prune(0); err != nil || res.Segments != 0 {
			t.Fatalf("pruned %+v, %v", res, err)
		}
		// Over budget, the oldest go first, as far as the receipt allows.
		res, err := f.pruner(t, retain.Options{Keep: time.Hour, MaxBytes: 1}).Prune(0)
		if err != nil || res.Segments == 0 {
			t.Fatalf("over budget: pruned %+v, %v", res, err)
		}
	})
}
