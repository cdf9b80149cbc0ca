package verify

// Attacker tests. Each case plays someone with root on the host — or with the host's identity key, or an
// epoch key read from the daemon's memory — who changes the archive the way a real attacker would: blocks
// re-encoded with valid CRCs and zstd frames, checkpoints signed with keys of their own or stolen ones,
// frontiers and previous checkpoints kept consistent so that only the key chain can tell. Every case
// requires of Dir and of a Stream fed the files in random pieces the exact status and set of problem
// codes, and that no forged leaf is counted in Report.Verified or offered as a Stream's Latest checkpoint
// (which a store would cosign).

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/internal/testhook"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/archivetest"
)

// ---- verdicts ----

// codeSet returns the distinct problem codes of r, sorted.
func codeSet(r *Report) []string {
	c := []string{}
	for _, p := range r.Problems {
		if !slices.Contains(c, p.Code) {
			c = append(c, p.Code)
		}
	}
	sort.Strings(c)
	return c
}

func problemText(r *Report) string {
	var b strings.Builder
	for _, p := range r.Problems {
		at := ""
		if p.Index != nil {
			at = fmt.Sprintf(" at leaf %d", *p.Index)
		}
		fmt.Fprintf(&b, "\n  %s [%s] %s%s: %s", strings.ToLower(p.Class), p.Code, p.Segment, at, p.Message)
	}
	return b.String()
}

// verifyAttack verifies dir with Dir and with Streams fed its files in random pieces (two seeds), and
// requires of each exactly status and the set of problem codes (repeats aside), and the same leaf counts and
// latest checkpoint. It returns Dir's report.
func verifyAttack(t *testing.T, dir string, opts Options, status string, codes ...string) *Report {
	t.Helper()
	want := slices.Clone(codes)
	sort.Strings(want)
	want = slices.Compact(want)
	r, err := Dir(dir, opts)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	t.Logf("Verify: %s, %d leaves from %d, %d verified%s", r.Status, r.Leaves, r.FirstIndex, r.Verified, problemText(r))
	if got := codeSet(r); r.Status != status || !slices.Equal(got, want) {
		t.Errorf("Verify: %s %v, want %s %v", r.Status, got, status, want)
	}
	for seed := uint64(1); seed <= 2; seed++ {
		sr := streamVerify(t, dir, opts, rand.New(rand.NewPCG(seed, 0xa77ac4)))
		if got := codeSet(sr); sr.Status != status || !slices.Equal(got, want) {
			t.Errorf("Stream (seed %d): %s %v, want %s %v%s", seed, sr.Status, got, status, want, problemText(sr))
		}
		if sr.Leaves != r.Leaves || sr.Verified != r.Verified || sr.Latest != r.Latest {
			t.Errorf("Stream (seed %d): %d leaves, %d verified, latest %q; Verify: %d, %d, %q", seed, sr.Leaves, sr.Verified, sr.Latest,
				r.Leaves, r.Verified, r.Latest)
		}
	}
	return r
}

// streamLatests feeds dir's segments to a Stream block by block, as a store receives them, and returns
// every checkpoint the stream offered as Latest after a block (what the store would cosign) and at the end.
func streamLatests(t *testing.T, dir string, opts Options) []string {
	t.Helper()
	s := NewStream(opts)
	var out []string
	add := func(l string) {
		if l != "" && !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	for _, f := range archivetest.SegFiles(t, dir) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		ends := append(archivetest.BlockOffsets(data)[1:], len(data))
		off := 0
		for _, end := range ends {
			u, err := s.Write(name, int64(off), data[off:end])
			if err != nil {
				t.Fatalf("Write %s at %d: %v", name, off, err)
			}
			add(string(u.Latest))
			off = end
		}
	}
	s.v.r.Live = false
	add(s.Finish().Latest)
	return out
}

// noForgedLatest fails when a Stream over dir ever offers one of the forged checkpoints as Latest.
func noForgedLatest(t *testing.T, dir string, opts Options, forged [][]byte) {
	t.Helper()
	var sizes []uint64
	for _, l := range streamLatests(t, dir, opts) {
		for _, f := range forged {
			if l == string(f) {
				c, _ := archive.PeekCheckpoint(f)
				sizes = append(sizes, c.Size)
			}
		}
	}
	if len(sizes) > 0 {
		t.Errorf("HOLE: the Stream offered %d forged checkpoints as Latest (sizes %v): a store would cosign them", len(sizes), sizes)
	}
}

// ---- the forger ----

// forger writes segments the way a writer does — a header block, then blocks of leaves each ended by a
// checkpoint, a SEAL with the segment's counts — with whatever keys it is given. It is the attacker's tool:
// with a key of its own it forges, with the identity key it is a modified daemon.
type forger struct {
	t      testing.TB
	dir    string
	origin string
	tree   archive.Frontier
	lastCk []byte
	now    int64  // time of the last leaf (unix ns)
	serial uint32 // kernel serial of the last event

	key   note.Signer // the epoch key that signs plain checkpoints
	vkey  string
	epoch uint64

	// The open segment ("" path: none).
	segNo    uint64
	path     string
	file     []byte
	blk      []byte // entries of the block being built
	first    uint64
	leaves   uint64
	cks      uint64
	firstT   int64
	kern     archive.KernelRange
	prevKern []int64

	signed [][]byte // every checkpoint it signed
	files  []string // every segment file it wrote
}

func newForger(t testing.TB, dir, origin string) *forger {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return &forger{t: t, dir: dir, origin: origin}
}

// forgerAt returns a forger holding the state after segs (decoded): the tree, the last checkpoint, the
// time and serial of the last leaf, and the last segment open for appending to its file in dir as it is.
func forgerAt(t testing.TB, dir string, segs []*tSeg) *forger {
	t.Helper()
	h0 := segs[0].header(t)
	f := newForger(t, dir, h0.Origin)
	tree, err := archive.DecodeFrontier(h0.FirstIndex, h0.Frontier)
	if err != nil {
		t.Fatal(err)
	}
	f.lastCk = []byte(h0.PrevCheckpoint)
	for n, s := range segs {
		last := n == len(segs)-1
		if last {
			h := s.header(t)
			f.segNo, f.first, f.path = h.Segment, h.FirstIndex, filepath.Join(dir, filepath.Base(s.path))
		}
		for _, e := range s.ents {
			switch e.typ {
			case archive.EntryLeaf:
				tree.Append(e.p)
				var l archive.Leaf
				if err := archive.DecodeLeaf(e.p, &l); err != nil {
					t.Fatal(err)
				}
				f.now = l.Time
				if l.Kind == archive.LeafEvent {
					f.serial = l.Event.Serial
				}
				if last {
					if f.leaves == 0 {
						f.firstT = l.Time
					}
					f.leaves++
					if !l.Kind.Control() {
						f.kern.Add(archive.EventKernelTime(e.p))
					}
				}
			case archive.EntryCheckpoint:
				f.lastCk = e.p
				if last {
					f.cks++
				}
			}
		}
	}
	f.tree = tree
	if data, err := os.ReadFile(f.path); err == nil {
		f.file = data
	}
	return f
}

// closeSeg leaves the open segment as it is (cut, or kept): the next openSeg numbers the one after it.
func (f *forger) closeSeg() {
	f.prevKern = f.kern.Header()
	f.segNo++
	f.path, f.file = "", nil
}

// openSeg starts a segment at start (unix ns); rotation: its header names the epoch key in charge.
func (f *forger) openSeg(start int64, rotation bool) {
	h := archive.SegmentHeader{Format: archive.FormatV1, Origin: f.origin, Segment: f.segNo, FirstIndex: f.tree.Size, Start: start,
		Frontier: f.tree.Encode(), PrevCheckpoint: string(f.lastCk), Epoch: f.epoch, PrevKernelTimes: f.prevKern}
	if rotation {
		h.EpochKey = f.vkey
	}
	hj, err := json.Marshal(h)
	if err != nil {
		f.t.Fatal(err)
	}
	f.path = filepath.Join(f.dir, archive.SegmentName(f.tree.Size, time.Unix(0, start)))
	f.file = archive.AppendBlock([]byte(archive.SegmentMagic), archive.AppendEntry(nil, archive.EntryHeader, hj))
	f.first, f.leaves, f.cks, f.firstT, f.kern = f.tree.Size, 0, 0, 0, archive.KernelRange{}
}

func (f *forger) leaf(p []byte) {
	var l archive.Leaf
	if err := archive.DecodeLeaf(p, &l); err != nil {
		f.t.Fatal(err)
	}
	f.blk = archive.AppendEntry(f.blk, archive.EntryLeaf, p)
	f.tree.Append(p)
	if f.leaves == 0 {
		f.firstT = l.Time
	}
	f.leaves++
	f.now = l.Time
	if !l.Kind.Control() {
		f.kern.Add(archive.EventKernelTime(p))
	}
}

func (f *forger) control(kind archive.LeafKind, at int64, body any) {
	f.leaf(archive.AppendControlLeaf(nil, kind, at, body))
}

// fEvent is a small execve event with the given serial, received at at.
func fEvent(serial uint32, at int64) *audit.RawEvent {
	sec, msec := at/1e9, int32(at%1e9/1e6)
	stamp := fmt.Sprintf("audit(%d.%03d:%d): ", sec, msec, serial)
	return &audit.RawEvent{Kind: audit.KindEvent, Serial: serial, Sec: sec, Msec: msec, Received: at, EOE: true,
		Records: []audit.Record{{Type: 1300, Text: []byte(stamp + fmt.Sprintf("arch=c000003e syscall=59 success=yes exit=0 pid=%d uid=0 comm=\"forged\"", 4000+serial))}}}
}

// event appends an EVENT leaf with the next serial.
func (f *forger) event(at int64) {
	f.serial++
	f.leaf(archive.AppendEventLeaf(nil, fEvent(f.serial, at)))
}

func (f *forger) lost(at int64, l audit.Lost) {
	sec, msec := at/1e9, int32(at%1e9/1e6)
	f.leaf(archive.AppendEventLeaf(nil, &audit.RawEvent{Kind: audit.KindLost, EOE: true, Sec: sec, Msec: msec, Received: at, Lost: l}))
}

// sign appends a checkpoint of the whole tree signed by s.
func (f *forger) sign(s note.Signer) {
	msg, err := archive.SignCheckpoint(archive.Checkpoint{Origin: f.origin, Size: f.tree.Size, Root: f.tree.Root()}, s)
	if err != nil {
		f.t.Fatal(err)
	}
	f.blk = archive.AppendEntry(f.blk, archive.EntryCheckpoint, msg)
	f.lastCk = msg
	f.cks++
	f.signed = append(f.signed, msg)
}

// flush ends the block being built (valid CRC, zstd with the format's dictionary).
func (f *forger) flush() {
	if len(f.blk) > 0 {
		f.file = archive.AppendBlock(f.file, f.blk)
		f.blk = nil
	}
}

// block signs the block being built with s and ends it.
func (f *forger) block(s note.Signer) {
	f.sign(s)
	f.flush()
}

// save writes the open segment's file.
func (f *forger) save() {
	f.t.Helper()
	if err := os.WriteFile(f.path, f.file, 0o600); err != nil {
		f.t.Fatal(err)
	}
	if !slices.Contains(f.files, f.path) {
		f.files = append(f.files, f.path)
	}
}

// start appends a START leaf naming a new epoch key and its checkpoint signed by id (a daemon's, or the
// attacker holding host.key). st's intervals default to tFastOptions'.
func (f *forger) start(id *archive.Identity, at int64, st archive.Start) {
	k, err := newEpochKey(f.origin, f.epoch+1)
	if err != nil {
		f.t.Fatal(err)
	}
	st.Origin, st.Identity, st.EpochKey, st.Epoch = f.origin, id.VKey, k.vkey, k.epoch
	if st.HeartbeatMillis == 0 {
		st.CheckpointMillis, st.HeartbeatMillis, st.EpochMillis, st.SegmentMillis = 20, 200, 300, 700
	}
	f.control(archive.LeafStart, at, st)
	f.sign(id.Signer)
	f.key, f.vkey, f.epoch = k, k.vkey, k.epoch
	f.serial = 0
}

// rekey appends a KEY leaf naming a new epoch key and its checkpoint signed by by.
func (f *forger) rekey(at int64, by note.Signer) {
	k, err := newEpochKey(f.origin, f.epoch+1)
	if err != nil {
		f.t.Fatal(err)
	}
	f.control(archive.LeafKey, at, archive.Key{EpochKey: k.vkey, Epoch: k.epoch})
	f.sign(by)
	f.key, f.vkey, f.epoch = k, k.vkey, k.epoch
}

// seal appends the segment's SEAL and its checkpoint to the block being built, ends it, writes the file
// and closes the segment.
func (f *forger) seal(at int64, next bool) {
	sl := archive.Seal{Segment: f.segNo, FirstIndex: f.first, Leaves: f.leaves + 1, FirstTime: f.firstT, LastTime: at,
		Checkpoints: f.cks, Next: next}
	if f.leaves == 0 {
		sl.FirstTime = at
	}
	f.control(archive.LeafSeal, at, sl)
	f.block(f.key)
	f.save()
	f.closeSeg()
}

// forgeSegments writes n segments of forged events after the forger's state, signed by key, as a writer
// writes the middle of a run: each header names the epoch key signing (unsigned, as every header), blocks
// of four events each ended by a checkpoint, a KEY of the attacker's own every other segment, seals; the
// last segment ends the run with STOP. It returns the files written.
func (f *forger) forgeSegments(n int, key *forgedKey) []string {
	f.key, f.vkey, f.epoch = key, key.vkey, key.epoch
	at := f.now
	for i := 0; i < n; i++ {
		at += 50 * ms
		f.openSeg(at, true)
		for b := 0; b < 3; b++ {
			for e := 0; e < 4; e++ {
				at += 20 * ms
				f.event(at)
			}
			if b == 1 && i%2 == 1 {
				at += ms
				f.rekey(at, f.key)
			} else {
				f.sign(f.key)
			}
			f.flush()
		}
		at += ms
		if i == n-1 {
			f.control(archive.LeafStop, at, archive.Stop{Reason: "stopped"})
		}
		f.seal(at, i < n-1)
	}
	return f.files
}

// ---- fixture and small tools ----

type attackFixture struct {
	id   *archive.Identity
	pub  note.Verifier
	dir  string      // one clean run with attackOptions: several sealed segments, many epochs
	keys *stolenKeys // with steal: every epoch key a KEY leaf of dir introduced, read from the daemon's memory
	segs []*tSeg     // dir's segments, decoded
}

// attackEpoch is the fixture's epoch length.
const attackEpoch = 200 * time.Millisecond

// attackOptions are tFastOptions with shorter segments and epochs: the fixture takes 1.6 s to write.
func attackOptions(id *archive.Identity) writer.Options {
	o := archivetest.FastOptions(id)
	o.SegmentDuration, o.EpochDuration = 400*time.Millisecond, attackEpoch
	return o
}

// newAttackFixture writes the fixture. steal sets testhook.EpochKey while it is written: the test must not
// run in parallel with others that write.
func newAttackFixture(t *testing.T, steal bool) *attackFixture {
	fx := &attackFixture{}
	fx.id, fx.pub = archivetest.Keys(t, "host-a.example")
	if steal {
		fx.keys = stealEpochKeys(t)
	}
	fx.dir = filepath.Join(t.TempDir(), "fast")
	archivetest.Write(t, fx.dir, attackOptions(fx.id), 160, 1600*time.Millisecond)
	if steal {
		testhook.EpochKey = nil
	}
	r, err := Dir(fx.dir, Options{Key: fx.pub})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != Pass || r.Verified != r.Leaves {
		t.Fatalf("the untouched archive: %s, %d of %d leaves verified%s", r.Status, r.Verified, r.Leaves, problemText(r))
	}
	fx.segs = loadArchive(t, fx.dir).segs
	if len(fx.segs) < 4 {
		t.Fatalf("the fixture has %d segments, the cases need at least 4", len(fx.segs))
	}
	return fx
}

func (fx *attackFixture) pinned() Options { return Options{Key: fx.pub} }

// checkpoints returns the checkpoint entries of s.
func (s *tSeg) checkpoints() [][]byte {
	var cks [][]byte
	for _, e := range s.ents {
		if e.typ == archive.EntryCheckpoint {
			cks = append(cks, e.p)
		}
	}
	return cks
}

// tRestart runs a writer on dir whose clock reads at (unix ns) when it starts — the daemon restarted
// then — and closes it at once.
func tRestart(t *testing.T, dir string, opts writer.Options, at int64) {
	t.Helper()
	shift := time.Until(time.Unix(0, at))
	opts.Now = func() time.Time { return time.Now().Add(shift) }
	w, err := writer.Create(dir, opts)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("restart: Close: %v", err)
	}
}

// cutAfterBlock truncates the segment file at path right after its block number blk (tSeg numbering: 1
// is the header block).
func cutAfterBlock(t *testing.T, path string, blk int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	offs := archivetest.BlockOffsets(data)
	if blk >= len(offs) {
		t.Fatalf("%s has %d blocks, cannot cut after block %d", path, len(offs), blk)
	}
	if err := os.Truncate(path, int64(offs[blk])); err != nil {
		t.Fatal(err)
	}
}

func removeFiles(t *testing.T, dir string, segs []*tSeg) {
	t.Helper()
	for _, s := range segs {
		if err := os.Remove(filepath.Join(dir, filepath.Base(s.path))); err != nil {
			t.Fatal(err)
		}
	}
}

const ms = int64(time.Millisecond)

// ---- 1. forgery after a gap ----

// TestAttackForgeryAfterGap: the attacker deletes evidence — a middle segment, only the last block of one
// (its SEAL), or the oldest — and rewrites every later segment with leaves of their choice, signed by an
// epoch key they generated and named in the (unsigned) headers, with frontiers and previous checkpoints
// consistent, and even KEY leaves of their own. Only the chain from the identity key can tell: the gap is
// reported, everything after it is unverified, none of it counts as verified, and a Stream never offers a
// forged checkpoint as Latest. A store receipt at a size inside the gap makes it TAMPERED (truncated); one
// at a size the forged leaves replaced, a fork.
func TestAttackForgeryAfterGap(t *testing.T) {
	t.Parallel()
	fx := newAttackFixture(t, false)
	store, sv := archivetest.Store(t, "store.example/a")
	cases := []struct {
		name   string
		keep   int    // segments 0..keep-1 are kept whole; segment keep is deleted, all after it forged
		cutEnd bool   // segment keep is kept instead, cut before its last block (the one with its SEAL)
		gap    string // the code the gap is reported with
	}{
		{"delete-middle-segment", 1, false, CodeMissingSegment},
		{"cut-seal-block", 1, true, CodeMissingSegment},
		{"delete-segment-0", 0, false, CodeMissingStart},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := archivetest.CopyDir(t, fx.dir)
			// The attacker read the whole archive first: their forgery continues the real tree after
			// segment keep, numbered as the real segments were.
			f := forgerAt(t, dir, fx.segs[:c.keep+1])
			f.closeSeg()
			removeFiles(t, dir, fx.segs[c.keep:])
			if c.cutEnd {
				archivetest.CopyFile(t, fx.segs[c.keep].path, filepath.Join(dir, filepath.Base(fx.segs[c.keep].path)))
				cutLastBlock(t, filepath.Join(dir, filepath.Base(fx.segs[c.keep].path)))
			}
			key, err := newEpochKey(f.origin, 1000)
			if err != nil {
				t.Fatal(err)
			}
			forgedFiles := f.forgeSegments(len(fx.segs)-c.keep-1, key)
			forgedLeaves := f.tree.Size - fx.segs[c.keep+1].header(t).FirstIndex
			t.Logf("forged %d segments, %d leaves after leaf %d", len(forgedFiles), forgedLeaves, fx.segs[c.keep+1].header(t).FirstIndex)

			// The forger's KEY leaves are not signed by the identity key, as every KEY must be: TAMPERED.
			codes := []string{c.gap, CodeSignature, CodeUnverified}
			r := verifyAttack(t, dir, fx.pinned(), Tampered, codes...)
			var genuine uint64
			for _, s := range r.Segments {
				if slices.Contains(forgedFiles, filepath.Join(dir, s.File)) {
					if s.Verified != 0 {
						t.Errorf("HOLE: forged segment %s: %d of its leaves counted as verified", s.File, s.Verified)
					}
					continue
				}
				genuine += s.Leaves
			}
			if r.Verified != genuine {
				t.Errorf("%d leaves verified; the genuine segments left hold %d", r.Verified, genuine)
			}
			noForgedLatest(t, dir, fx.pinned(), f.signed)

			// The store acknowledged a checkpoint inside the gap: evidence it holds was deleted.
			gapSeg := fx.segs[c.keep]
			cks := gapSeg.checkpoints()
			inGap := cks[len(cks)/2]
			if c.cutEnd {
				inGap = cks[len(cks)-1] // the seal's checkpoint: the cut removed the leaves up to it
			}
			opts := Options{Key: fx.pub, Receipts: []receipt.Receipt{archivetest.Receipt(t, store, sv, inGap, time.Unix(1_700_000_000, 0))}}
			r = verifyAttack(t, dir, opts, Tampered, append(codes, CodeTruncated)...)
			if r.Receipt == nil || r.Receipt.Status != CodeTruncated {
				t.Errorf("receipt inside the gap: %+v", r.Receipt)
			}
			// The store acknowledged leaves the forgery replaced: the recomputed tree differs there.
			replaced := fx.segs[c.keep+1].checkpoints()[0]
			if ck, _ := archive.PeekCheckpoint(replaced); ck.Size > f.tree.Size {
				t.Fatalf("the forgery is shorter (%d leaves) than the replaced checkpoint (%d)", f.tree.Size, ck.Size)
			}
			opts.Receipts = []receipt.Receipt{archivetest.Receipt(t, store, sv, replaced, time.Unix(1_700_000_000, 0))}
			r = verifyAttack(t, dir, opts, Tampered, append(codes, CodeFork)...)
			if r.Receipt == nil || r.Receipt.Status != CodeFork {
				t.Errorf("receipt over replaced leaves: %+v", r.Receipt)
			}
		})
	}
}

// ---- 2. unsigned durable leaves ----

// TestAttackUnsignedLeaves: the daemon was killed (its last block, with STOP and SEAL, never written) and the
// attacker appends a block of forged EVENT and LOST leaves, valid CRC and zstd, with no checkpoint or with
// one signed by a key of their own, or slips leaves into the last genuine block after its checkpoint. Then
// the real daemon restarts on the directory and writes its START, which records the unsigned leaves it
// found. Every variant stays TAMPERED and the forged leaves are never counted as verified.
func TestAttackUnsignedLeaves(t *testing.T) {
	t.Parallel()
	fx := newAttackFixture(t, false)
	// crashed returns a copy of the fixture as a SIGKILL before the last block leaves it, and a forger
	// continuing its last segment.
	crashed := func(t *testing.T) (string, *forger) {
		dir := archivetest.CopyDir(t, fx.dir)
		files := archivetest.SegFiles(t, dir)
		cutLastBlock(t, files[len(files)-1])
		return dir, forgerAt(t, dir, loadArchive(t, dir).segs)
	}
	// forge appends five EVENT leaves and a LOST leaf to the block being built, at step intervals.
	forge := func(f *forger, step time.Duration) {
		at := f.now
		for i := 0; i < 5; i++ {
			at += int64(step)
			f.event(at)
		}
		at += int64(step)
		f.lost(at, audit.Lost{Reason: audit.LostKernel, Count: 3})
	}
	cases := []struct {
		name    string
		tamper  func(t *testing.T, f *forger) // appends the forged leaves; f.save() follows
		restart bool
		status  string
		codes   []string
	}{
		{"no-checkpoint", func(t *testing.T, f *forger) { forge(f, 40*time.Millisecond); f.flush() },
			false, Tampered, []string{CodeUnsigned, CodeUnverified, CodeNoStop}},
		{"no-checkpoint-restart", func(t *testing.T, f *forger) { forge(f, 40*time.Millisecond); f.flush() },
			true, Tampered, []string{CodeUnsigned, CodeUnverified}},
		{"own-key-checkpoint-restart", func(t *testing.T, f *forger) {
			k, err := newEpochKey(f.origin, f.epoch+1)
			if err != nil {
				t.Fatal(err)
			}
			forge(f, 40*time.Millisecond)
			f.block(k)
		}, true, Tampered, []string{CodeSignature, CodeUnverified}},
		{"identity-key-checkpoint-restart", func(t *testing.T, f *forger) {
			// Even the identity key vouches only for a START's block.
			forge(f, 40*time.Millisecond)
			f.block(fx.id.Signer)
		}, true, Tampered, []string{CodeSignature, CodeUnverified}},
		{"slipped-into-last-block-restart", func(t *testing.T, f *forger) {
			// Re-encode the last genuine block with the leaves after its checkpoint.
			offs := archivetest.BlockOffsets(f.file)
			last := offs[len(offs)-1]
			ents, err := archive.OpenBlock(f.file[last:], nil)
			if err != nil {
				t.Fatal(err)
			}
			f.blk = ents
			forge(f, 40*time.Millisecond)
			f.file = f.file[:last]
			f.flush()
		}, true, Tampered, []string{CodeUnsigned, CodeUnverified}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir, f := crashed(t)
			genuine := f.tree.Size
			c.tamper(t, f)
			f.save()
			forged := f.tree.Size - genuine
			codes := c.codes
			if c.restart {
				tRestart(t, dir, archivetest.FastOptions(fx.id), f.now+int64(time.Second))
				codes = append(codes, CodeNoStop) // the killed run is reported as such
			}
			r := verifyAttack(t, dir, fx.pinned(), c.status, codes...)
			if r.Leaves-r.Verified != forged {
				t.Errorf("HOLE: %d of %d leaves verified, but %d are forged", r.Verified, r.Leaves, forged)
			}
			if c.restart {
				if len(r.Runs) != 2 || r.Runs[0].Ended != "crashed" || r.Runs[1].Recovered == nil {
					t.Fatalf("runs %+v", r.Runs)
				}
				if rec := r.Runs[1].Recovered; c.codes[0] == CodeUnsigned && rec.Unsigned != forged {
					t.Errorf("the restart recorded %d unsigned leaves, %d were appended", rec.Unsigned, forged)
				}
			}
			noForgedLatest(t, dir, fx.pinned(), f.signed)
		})
	}

	// The forged leaves span the daemon's downtime: killed at T, restarted ten minutes later, with unsigned
	// events every 4 s in between. The verdict is TAMPERED; the downtime must still be reported, since the
	// only evidence of coverage meanwhile is leaves no key vouches for.
	t.Run("unsigned-leaves-hide-downtime", func(t *testing.T) {
		t.Parallel()
		dir, f := crashed(t)
		genuine := f.tree.Size
		killed := f.now
		for at := killed + int64(4*time.Second); at < killed+int64(10*time.Minute); at += int64(4 * time.Second) {
			f.event(at)
		}
		f.flush()
		f.save()
		tRestart(t, dir, archivetest.FastOptions(fx.id), killed+int64(10*time.Minute))
		r := verifyAttack(t, dir, fx.pinned(), Tampered, CodeUnsigned, CodeUnverified, CodeSilence, CodeNoStop)
		if r.Leaves-r.Verified != f.tree.Size-genuine {
			t.Errorf("HOLE: %d of %d leaves verified, %d forged", r.Verified, r.Leaves, f.tree.Size-genuine)
		}
		if !slices.Contains(codeSet(r), CodeSilence) {
			t.Errorf("HOLE: the 10 minutes between the last signed leaf and the restart are not reported as a silence: " +
				"the times of unsigned (unverified) leaves count as coverage (verify.go silence() takes every leaf's time)")
		}
	})
}

// ---- 3. a stolen epoch key kept in use ----

// stolenAt cuts a copy of the fixture right after the block of a KEY leaf in the middle of a segment (the
// daemon killed there, or its later blocks removed) and deletes the segments after it. It returns the
// directory, a forger continuing the cut segment that signs with the epoch key that KEY introduced (read
// from the daemon's memory), and the KEY leaf's time: when that epoch began.
func (fx *attackFixture) stolenAt(t *testing.T) (dir string, f *forger, epochStart int64) {
	t.Helper()
	dir = archivetest.CopyDir(t, fx.dir)
	files := archivetest.SegFiles(t, dir)
	segIdx, blk := -1, 0
	var key archive.Key
	for n, path := range files {
		s := loadSeg(t, path)
		lastBlk := s.ents[len(s.ents)-1].block
		for _, e := range s.ents {
			if e.typ == archive.EntryLeaf && archive.LeafKind(e.p[0]) == archive.LeafKey && e.block < lastBlk {
				if err := json.Unmarshal(e.p[9:], &key); err != nil {
					t.Fatal(err)
				}
				epochStart = int64(binary.LittleEndian.Uint64(e.p[1:]))
				segIdx, blk = n, e.block
			}
		}
	}
	if segIdx < 0 {
		t.Fatal("no KEY leaf in the middle of a segment")
	}
	cutAfterBlock(t, files[segIdx], blk)
	for _, p := range files[segIdx+1:] {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	f = forgerAt(t, dir, loadArchive(t, dir).segs)
	f.key, f.vkey, f.epoch = fx.keys.signer(t, key.EpochKey), key.EpochKey, key.Epoch
	return dir, f, epochStart
}

// TestAttackStolenEpochKey: the attacker read the current epoch key from the daemon's memory, killed the
// daemon, and keeps signing with it — correct roots, valid blocks. The key may sign only up to its epoch's
// end (epoch_ms + EpochSlack after the KEY that introduced it): control leaves later than that are TAMPERED
// (epoch), and nothing it signs after counts as verified. Kept inside the epoch, the forgery is
// indistinguishable from the daemon (the price of a stolen key), but the daemon's restart minutes later
// shows the crash's downtime (silence).
func TestAttackStolenEpochKey(t *testing.T) {
	fx := newAttackFixture(t, true) // not parallel: it sets testhook.EpochKey
	epochEnd := func(start int64) int64 { return start + int64(attackEpoch+archive.EpochSlack) }

	t.Run("heartbeats-hours-later", func(t *testing.T) {
		t.Parallel()
		dir, f, _ := fx.stolenAt(t)
		genuine := f.tree.Size
		at := f.now + int64(3*time.Hour)
		for i := 0; i < 4; i++ {
			f.control(archive.LeafHeartbeat, at, archive.Heartbeat{Events: uint64(i)})
			f.block(f.key)
			at += 150 * ms
		}
		f.save()
		r := verifyAttack(t, dir, fx.pinned(), Tampered, CodeSilence, CodeEpoch, CodeUnverified, CodeNoStop)
		if r.Verified != genuine {
			t.Errorf("HOLE: %d leaves verified, only %d are genuine", r.Verified, genuine)
		}
		noForgedLatest(t, dir, fx.pinned(), f.signed)
	})

	t.Run("heartbeats-past-the-epoch", func(t *testing.T) {
		// No silence to give it away: a heartbeat every 150 ms, block after block, for 6 s.
		t.Parallel()
		dir, f, start := fx.stolenAt(t)
		genuine := f.tree.Size
		var inside uint64
		var late [][]byte
		for i, at := 0, f.now; i < 40; i++ {
			at += 150 * ms
			f.control(archive.LeafHeartbeat, at, archive.Heartbeat{Events: uint64(i)})
			f.block(f.key)
			if at <= epochEnd(start) {
				inside++
			} else {
				late = append(late, f.signed[len(f.signed)-1])
			}
		}
		f.save()
		r := verifyAttack(t, dir, fx.pinned(), Tampered, CodeEpoch, CodeUnverified, CodeNoStop)
		if r.Verified != genuine+inside {
			t.Errorf("HOLE: %d leaves verified; %d genuine and %d signed inside the stolen key's epoch", r.Verified, genuine, inside)
		}
		noForgedLatest(t, dir, fx.pinned(), late)
	})

	t.Run("inside-the-epoch-restart-minutes-later", func(t *testing.T) {
		t.Parallel()
		dir, f, start := fx.stolenAt(t)
		at := f.now
		for i := 0; i < 3; i++ {
			at += 100 * ms
			f.control(archive.LeafHeartbeat, at, archive.Heartbeat{Events: uint64(i)})
			f.block(f.key)
		}
		if at > epochEnd(start) {
			t.Fatalf("the forged heartbeats end %s after the epoch", time.Duration(at-epochEnd(start)))
		}
		f.save()
		tRestart(t, dir, archivetest.FastOptions(fx.id), at+int64(3*time.Minute))
		r := verifyAttack(t, dir, fx.pinned(), Incomplete, CodeSilence, CodeNoStop)
		if len(r.Runs) != 2 || r.Runs[0].Ended != "crashed" {
			t.Errorf("runs %+v", r.Runs)
		}
	})

	t.Run("events-past-the-epoch-restart", func(t *testing.T) {
		// The attacker avoids control leaves: a minute of EVENT leaves, one a second, signed block by block
		// with the stolen key; then the daemon restarts a second after the last. An epoch key signs nothing
		// later than its epoch: these are forgeries as much as late heartbeats are.
		t.Parallel()
		dir, f, start := fx.stolenAt(t)
		genuine := f.tree.Size
		var late [][]byte
		at := f.now
		for b := 0; b < 12; b++ {
			for e := 0; e < 5; e++ {
				at += int64(time.Second)
				f.event(at)
			}
			f.block(f.key)
			if at > epochEnd(start) {
				late = append(late, f.signed[len(f.signed)-1])
			}
		}
		f.save()
		forged := f.tree.Size - genuine
		tRestart(t, dir, archivetest.FastOptions(fx.id), at+int64(time.Second))
		r := verifyAttack(t, dir, fx.pinned(), Tampered, CodeEpoch, CodeUnverified, CodeNoStop)
		if r.Status == Pass {
			t.Errorf("HOLE: PASS for an archive with %d EVENT leaves signed by a stolen epoch key up to %s after its epoch ended "+
				"(verify.go checkpointEntry checks only control leaves against the epoch: ctlMax)", forged, time.Duration(at-epochEnd(start)).Round(time.Second))
		}
		if r.Verified > r.Leaves-forged {
			t.Errorf("HOLE: %d of %d leaves verified, of which %d are events the stolen key signed after its epoch", r.Verified, r.Leaves, forged)
		}
		noForgedLatest(t, dir, fx.pinned(), late)
	})
}

// ---- 4. clock steps ----

// tClockLeaves returns the step_ns of every CLOCK leaf in dir.
func tClockLeaves(t *testing.T, dir string) []time.Duration {
	t.Helper()
	rd, err := archive.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var steps []time.Duration
	for {
		l, _, err := rd.NextLeaf()
		if err == io.EOF {
			return steps
		}
		if err != nil {
			t.Fatal(err)
		}
		if l.Kind == archive.LeafClock {
			var c archive.Clock
			if err := json.Unmarshal(l.Body, &c); err != nil {
				t.Fatal(err)
			}
			steps = append(steps, time.Duration(c.StepNanos))
		}
	}
}

// freshForger starts a run of a forger holding the identity key (a daemon, or an attacker with host.key)
// in a new directory, an hour ago: the segment's header and the START block.
func freshForger(t *testing.T, id *archive.Identity, st archive.Start) (*forger, int64) {
	f := newForger(t, filepath.Join(t.TempDir(), "arch"), id.Signer.Name())
	at := time.Now().Add(-time.Hour).UnixNano()
	f.openSeg(at, false)
	f.start(id, at, st)
	f.flush()
	return f, at
}

// TestAttackClockSteps: a freeze (SIGSTOP) hidden by setting the wall clock back by as much shows as a
// silence, the CLOCK leaf's step correcting the gap; an honest step forward passes.
func TestAttackClockSteps(t *testing.T) {
	t.Parallel()
	id, pub := archivetest.Keys(t, "host-a.example")
	pinned := Options{Key: pub}
	// clocked returns writer options whose clock is the real one shifted by shift, and an event source
	// stamping events with that clock (as the audit reader does with the host's wall clock).
	clocked := func(shift *atomic.Int64) (writer.Options, func(w *writer.Writer, d time.Duration)) {
		clock := func() time.Time { return time.Now().Add(time.Duration(shift.Load())) }
		opts := archivetest.FastOptions(id)
		opts.Now = clock
		var serial uint32
		appendFor := func(w *writer.Writer, d time.Duration) {
			for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(30 * time.Millisecond) {
				serial++
				w.Append(fEvent(serial, clock().UnixNano()))
			}
		}
		return opts, appendFor
	}

	t.Run("writer-frozen-clock-set-back", func(t *testing.T) {
		t.Parallel()
		const freezeFor = 2500 * time.Millisecond
		var shift atomic.Int64
		opts, appendFor := clocked(&shift)
		clock := opts.Now
		freeze, thawed := make(chan struct{}, 1), make(chan struct{})
		opts.Now = func() time.Time {
			select {
			case <-freeze:
				// The flusher is stopped for 2.5 s (its monotonic clock runs on); meanwhile root sets the
				// wall clock back by as much, so that the leaves after look contiguous with those before.
				time.Sleep(freezeFor)
				shift.Add(-int64(freezeFor))
				close(thawed)
			default:
			}
			return clock()
		}
		dir := filepath.Join(t.TempDir(), "arch")
		w, err := writer.Create(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		appendFor(w, 300*time.Millisecond)
		freeze <- struct{}{}
		<-thawed
		appendFor(w, 300*time.Millisecond)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		steps := tClockLeaves(t, dir)
		if len(steps) != 1 || (steps[0]+freezeFor).Abs() > 300*time.Millisecond {
			t.Errorf("CLOCK leaves %v, want one step of about -%s", steps, freezeFor)
		}
		// Grace 1 s: the writer's 200 ms heartbeat leaves no gap near 1.2 s, the freeze is 2.5 s.
		verifyAttack(t, dir, Options{Key: pub, Grace: time.Second}, Incomplete, CodeSilence)
	})

	t.Run("writer-clock-stepped-forward-an-hour", func(t *testing.T) {
		// NTP (or root) sets the clock an hour ahead: the epoch is then an hour overdue by the wall clock,
		// the writer re-keys under the identity key and records the step. Nothing was missed.
		t.Parallel()
		var shift atomic.Int64
		opts, appendFor := clocked(&shift)
		dir := filepath.Join(t.TempDir(), "arch")
		w, err := writer.Create(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		appendFor(w, 300*time.Millisecond)
		shift.Store(int64(time.Hour))
		appendFor(w, 300*time.Millisecond)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if steps := tClockLeaves(t, dir); len(steps) != 1 || (steps[0]-time.Hour).Abs() > 300*time.Millisecond {
			t.Errorf("CLOCK leaves %v, want one step of about +1h", steps)
		}
		r := verifyAttack(t, dir, pinned, Pass)
		if slices.Contains(codeSet(r), CodeSilence) {
			t.Errorf("HOLE (false alarm): an honest clock step forward is reported as a silence: flush.go cycle() writes the KEY leaf of " +
				"the overdue re-key (identity-signed) before the CLOCK leaf, so the verifier judges the KEY leaf's gap uncorrected")
		}
	})

	t.Run("constructed-freeze-clock-set-back", func(t *testing.T) {
		// Leaves at T, then a CLOCK leaf at T+1s with step -5 min: properly signed, the wall clock says
		// one second passed, the monotonic clock five minutes.
		t.Parallel()
		f, at := freshForger(t, id, archive.Start{})
		for i := 0; i < 5; i++ {
			at += 100 * ms
			f.event(at)
		}
		f.block(f.key)
		at += int64(time.Second)
		f.control(archive.LeafClock, at, archive.Clock{StepNanos: -int64(5 * time.Minute)})
		for i := 0; i < 2; i++ {
			at += 50 * ms
			f.event(at)
		}
		f.block(f.key)
		at += 50 * ms
		f.control(archive.LeafStop, at, archive.Stop{Reason: "stopped"})
		f.seal(at, false)
		r := verifyAttack(t, f.dir, pinned, Incomplete, CodeSilence)
		if r.Verified != r.Leaves {
			t.Errorf("%d of %d leaves verified", r.Verified, r.Leaves)
		}
	})

	t.Run("constructed-step-forward-clock-first", func(t *testing.T) {
		// The order a writer should use when the step makes its epoch overdue: the CLOCK leaf first, then the
		// KEY the identity key signs. Five minutes forward, nothing missed: PASS.
		t.Parallel()
		f, at := freshForger(t, id, archive.Start{})
		for i := 0; i < 5; i++ {
			at += 100 * ms
			f.event(at)
		}
		f.block(f.key)
		at += int64(5*time.Minute + 200*time.Millisecond)
		f.control(archive.LeafClock, at, archive.Clock{StepNanos: int64(5 * time.Minute)})
		f.rekey(at, id.Signer)
		for i := 0; i < 2; i++ {
			at += 50 * ms
			f.event(at)
		}
		f.block(f.key)
		at += 50 * ms
		f.control(archive.LeafStop, at, archive.Stop{Reason: "stopped"})
		f.seal(at, false)
		verifyAttack(t, f.dir, pinned, Pass)
	})
}

// ---- 5. a START declaring intervals beyond the limits ----

// TestAttackStartLimits: the attacker holds host.key. They rewrite a run's START to declare a heartbeat of
// 24 h (and epochs of the most the format allows, so that no epoch check fires), move the leaves after the
// second event two minutes later, and sign everything again: the START's checkpoint with the identity key,
// the others with an epoch key of their own that the rewritten START names. The declaration is TAMPERED
// (limits), and the two minutes are still a silence: the verifier judges by MaxHeartbeat, not by what the
// archive declares. Then a modified daemon that declares epochs of 24 h and signs heartbeats with its first
// epoch key for twelve minutes: limits, and epoch once MaxEpoch is over.
func TestAttackStartLimits(t *testing.T) {
	t.Parallel()
	id, pub := archivetest.Keys(t, "host-a.example")
	pinned := Options{Key: pub}

	t.Run("rewritten-start-24h-heartbeat", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "arch")
		archivetest.Write(t, dir, writer.Options{Identity: id}, 5, 0)
		a := loadArchive(t, dir)
		if len(a.segs) != 1 {
			t.Fatalf("%d segments", len(a.segs))
		}
		s := a.segs[0]
		k, err := newEpochKey(id.Signer.Name(), 0)
		if err != nil {
			t.Fatal(err)
		}
		const later = 2 * time.Minute
		pos, index := s.leaves(t)
		var startIndex uint64
		events := 0
		for n, p := range pos {
			e := &s.ents[p]
			switch kind := s.kind(p); {
			case kind == archive.LeafStart:
				var st archive.Start
				if err := json.Unmarshal(e.p[9:], &st); err != nil {
					t.Fatal(err)
				}
				st.HeartbeatMillis, st.EpochMillis, st.EpochKey = int64(24*time.Hour/time.Millisecond), int64(archive.MaxEpoch/time.Millisecond), k.vkey
				e.p = archive.AppendControlLeaf(nil, archive.LeafStart, int64(binary.LittleEndian.Uint64(e.p[1:])), st)
				startIndex = index[n]
			case kind == archive.LeafEvent:
				events++
				if events > 2 {
					binary.LittleEndian.PutUint64(e.p[6:], binary.LittleEndian.Uint64(e.p[6:])+uint64(later/time.Second))
					binary.LittleEndian.PutUint64(e.p[18:], binary.LittleEndian.Uint64(e.p[18:])+uint64(later))
				}
			case kind.Control() && events > 2:
				binary.LittleEndian.PutUint64(e.p[1:], binary.LittleEndian.Uint64(e.p[1:])+uint64(later))
			}
		}
		if events != 5 {
			t.Fatalf("%d events", events)
		}
		a.rechain(t, 0, func(c archive.Checkpoint) note.Signer {
			if c.Size == startIndex+1 {
				return id.Signer
			}
			return k
		})
		a.save(t)
		r := verifyAttack(t, dir, pinned, Tampered, CodeLimits, CodeSilence)
		for _, p := range r.Problems {
			if p.Code == CodeSilence && !strings.Contains(p.Message, "2m0") {
				t.Errorf("silence: %s", p.Message)
			}
		}
	})

	t.Run("modified-daemon-24h-epochs", func(t *testing.T) {
		t.Parallel()
		f, at := freshForger(t, id, archive.Start{CheckpointMillis: 1000, HeartbeatMillis: int64(archive.MaxHeartbeat / time.Millisecond),
			EpochMillis: int64(24 * time.Hour / time.Millisecond), SegmentMillis: int64(time.Hour / time.Millisecond)})
		start := at
		var inside uint64 = 1 // the START
		for i := 0; i < 15; i++ {
			at += int64(50 * time.Second)
			f.control(archive.LeafHeartbeat, at, archive.Heartbeat{Events: uint64(i)})
			f.block(f.key)
			if at <= start+int64(archive.MaxEpoch+archive.EpochSlack) {
				inside++
			}
		}
		at += int64(time.Second)
		f.control(archive.LeafStop, at, archive.Stop{Reason: "stopped"})
		f.seal(at, false)
		r := verifyAttack(t, f.dir, pinned, Tampered, CodeLimits, CodeEpoch, CodeUnverified)
		if r.Verified != inside {
			t.Errorf("%d leaves verified; %d were signed inside MaxEpoch", r.Verified, inside)
		}
	})
}

// ---- 6. kernel serial gaps ----

// TestAttackSerialGaps: within one run the kernel's serials must be contiguous except where LOST leaves
// account for the missing ones, by range or (local drops) by count.
func TestAttackSerialGaps(t *testing.T) {
	t.Parallel()
	id, pub := archivetest.Keys(t, "host-a.example")
	pinned := Options{Key: pub}
	run := func(t *testing.T, serials []uint32, lost map[uint32]audit.Lost) string {
		dir := filepath.Join(t.TempDir(), "arch")
		w, err := writer.Create(dir, archivetest.FastOptions(id))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range serials {
			w.Append(archivetest.Event(s))
			if l, ok := lost[s]; ok {
				now := time.Now().UnixNano()
				w.Append(&audit.RawEvent{Kind: audit.KindLost, EOE: true, Sec: now / 1e9, Msec: int32(now % 1e9 / 1e6), Received: now, Lost: l})
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	var serials []uint32
	for s := uint32(1); s <= 30; s++ {
		if s <= 10 || s >= 20 {
			serials = append(serials, s)
		}
	}
	t.Run("gap", func(t *testing.T) {
		t.Parallel()
		r := verifyAttack(t, run(t, serials, nil), pinned, Incomplete, CodeSerialGap)
		if len(r.Problems) != 1 || !strings.Contains(r.Problems[0].Message, "9 kernel serials in 1 ranges") ||
			!strings.Contains(r.Problems[0].Message, "11..19") {
			t.Errorf("problems %+v, want one naming 11..19", r.Problems)
		}
	})
	t.Run("lost-serial-gap", func(t *testing.T) {
		t.Parallel()
		verifyAttack(t, run(t, serials, map[uint32]audit.Lost{20: {Reason: audit.LostGap, Count: 9, First: 11, Last: 19}}), pinned, Pass)
	})
	t.Run("lost-local-drop", func(t *testing.T) {
		t.Parallel()
		verifyAttack(t, run(t, serials, map[uint32]audit.Lost{20: {Reason: audit.LostLocal, Count: 9}}), pinned, Pass)
	})
	t.Run("lost-part-of-the-gap", func(t *testing.T) {
		t.Parallel()
		r := verifyAttack(t, run(t, serials, map[uint32]audit.Lost{20: {Reason: audit.LostGap, Count: 5, First: 11, Last: 15}}), pinned, Incomplete, CodeSerialGap)
		if len(r.Problems) != 1 || !strings.Contains(r.Problems[0].Message, "16..19") {
			t.Errorf("problems %+v, want one naming 16..19", r.Problems)
		}
	})
	t.Run("local-drop-too-small", func(t *testing.T) {
		t.Parallel()
		verifyAttack(t, run(t, serials, map[uint32]audit.Lost{20: {Reason: audit.LostLocal, Count: 8}}), pinned, Incomplete, CodeSerialGap)
	})
}

// TestAttackSerialGapsAcrossRuns: the kernel's serials run on over the runs of one boot, so the serials
// issued between two runs (no daemon registered: a crash, a stop, a kill) must be archived or counted by
// the next run's no_daemon LOST leaf; a new boot restarts them.
func TestAttackSerialGapsAcrossRuns(t *testing.T) {
	t.Parallel()
	id, pub := archivetest.Keys(t, "host-a.example")
	pinned := Options{Key: pub}
	// runs writes one run per boot ID with the serials given, and the LOST leaf given after the first
	// event of the second run.
	runs := func(t *testing.T, boots []string, serials [][]uint32, lost *audit.Lost) string {
		dir := filepath.Join(t.TempDir(), "arch")
		for i, boot := range boots {
			opts := archivetest.FastOptions(id)
			opts.Start.BootID = boot
			w, err := writer.Create(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			for k, s := range serials[i] {
				w.Append(archivetest.Event(s))
				if i == 1 && k == 0 && lost != nil {
					now := time.Now().UnixNano()
					w.Append(&audit.RawEvent{Kind: audit.KindLost, EOE: true, Sec: now / 1e9, Msec: int32(now % 1e9 / 1e6), Received: now, Lost: *lost})
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	seq := func(lo, hi uint32) (s []uint32) {
		for ; lo <= hi; lo++ {
			s = append(s, lo)
		}
		return s
	}
	t.Run("gap-between-runs", func(t *testing.T) {
		t.Parallel()
		r := verifyAttack(t, runs(t, []string{"boot-1", "boot-1"}, [][]uint32{seq(1, 10), seq(20, 30)}, nil), pinned, Incomplete, CodeSerialGap)
		if len(r.Problems) != 1 || !strings.Contains(r.Problems[0].Message, "11..19") {
			t.Errorf("problems %+v, want one naming 11..19", r.Problems)
		}
	})
	t.Run("no-daemon-lost", func(t *testing.T) {
		t.Parallel()
		l := audit.Lost{Reason: audit.LostUnregistered, Count: 9, First: 11, Last: 19}
		r := verifyAttack(t, runs(t, []string{"boot-1", "boot-1"}, [][]uint32{seq(1, 10), seq(20, 30)}, &l), pinned, Pass)
		if len(r.Lost) != 1 || r.Lost[0].Reason != "no_daemon" || r.Lost[0].Unit != "events" || r.Lost[0].Since == "" {
			t.Errorf("lost %+v, want the no_daemon leaf with its interval", r.Lost)
		}
	})
	t.Run("no-daemon-lost-too-short", func(t *testing.T) {
		t.Parallel()
		l := audit.Lost{Reason: audit.LostUnregistered, Count: 4, First: 11, Last: 14}
		verifyAttack(t, runs(t, []string{"boot-1", "boot-1"}, [][]uint32{seq(1, 10), seq(20, 30)}, &l), pinned, Incomplete, CodeSerialGap)
	})
	t.Run("new-boot", func(t *testing.T) {
		t.Parallel()
		verifyAttack(t, runs(t, []string{"boot-1", "boot-2"}, [][]uint32{seq(1000, 1010), seq(1, 10)}, nil), pinned, Pass)
	})
}

// ---- 7. memory bounds ----

const hostileOrigin = "host-a.example"

// hostileHeader is a segment's magic and a valid header block: segment 0, first leaf 0.
func hostileHeader(t testing.TB) []byte {
	hj, err := json.Marshal(archive.SegmentHeader{Format: archive.FormatV1, Origin: hostileOrigin, Start: 1_700_000_000e9, Frontier: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	return archive.AppendBlock([]byte(archive.SegmentMagic), archive.AppendEntry(nil, archive.EntryHeader, hj))
}

// rawBlock appends z as a block's frame, whatever it holds, with a valid length and CRC.
func rawBlock(b, z []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(z)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(z, crc32.MakeTable(crc32.Castagnoli)))
	return append(b, z...)
}

// zstdZeros is a zstd frame of n RLE blocks of 128 KiB of zeros: 4 bytes each, n×128 KiB decompressed. fcs,
// when not 0, is declared as the frame's content size.
func zstdZeros(n int, fcs uint64) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd}
	if fcs == 0 {
		b = append(b, 0x00, 7<<3) // no content size, window 128 KiB
	} else {
		b = append(b, 0xc0, 7<<3) // 8-byte content size
		b = binary.LittleEndian.AppendUint64(b, fcs)
	}
	for i := 0; i < n; i++ {
		h := uint32(128<<10)<<3 | 1<<1 // RLE block of 128 KiB
		if i == n-1 {
			h |= 1 // last block
		}
		b = append(b, byte(h), byte(h>>8), byte(h>>16), 0)
	}
	return b
}

// heapPeak runs f and returns the peak of the heap's objects above what they were before (sampled every
// 100 µs: live objects and those not yet swept) and the bytes f allocated in all (which bounds the peak).
func heapPeak(f func()) (peak, allocated uint64) {
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	base, alloc0 := s[0].Value.Uint64(), s[1].Value.Uint64()
	stop, done := make(chan struct{}), make(chan uint64)
	go func() {
		m := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var hi uint64
		for {
			metrics.Read(m)
			hi = max(hi, m[0].Value.Uint64())
			select {
			case <-stop:
				done <- hi
				return
			default:
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	f()
	close(stop)
	hi := <-done
	metrics.Read(s)
	hi = max(hi, s[0].Value.Uint64())
	if hi > base {
		peak = hi - base
	}
	return peak, s[1].Value.Uint64() - alloc0
}

// memLimit bounds what hostile bytes may cost one reader: a few times MaxBlock (docs/format.md, "Limits").
const memLimit = 256 << 20

// TestAttackMemoryBounds: small hostile segments whose lengths, frames, record counts or header claim far
// more than the format allows. Dir, the Reader (Open and NextLeaf, as show and search read) and a
// Stream each stay under 256 MiB of heap, do not panic, and report the damage. Not parallel: the heap is
// measured while nothing else runs.
func TestAttackMemoryBounds(t *testing.T) {
	_, pub := archivetest.Keys(t, hostileOrigin)
	pinned := Options{Key: pub, Now: time.Unix(1_700_000_000, 0)}
	foreign, err := newEpochKey(hostileOrigin, 1)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	junk := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	hdr := hostileHeader(t)
	signedBlock := func(entries []byte, leaves ...[]byte) []byte {
		var tree archive.Frontier
		for _, l := range leaves {
			tree.Append(l)
			entries = archive.AppendEntry(entries, archive.EntryLeaf, l)
		}
		msg, err := archive.SignCheckpoint(archive.Checkpoint{Origin: hostileOrigin, Size: tree.Size, Root: tree.Root()}, foreign)
		if err != nil {
			t.Fatal(err)
		}
		return archive.AppendBlock(nil, archive.AppendEntry(entries, archive.EntryCheckpoint, msg))
	}
	// A leaf claiming a million records of 3 bytes (type, zero length): 3 MB, under MaxLeaf.
	million := archive.AppendEventLeaf(nil, fEvent(1, 1_700_000_000e9))
	million = million[:26]
	million = binary.AppendUvarint(million, 1_000_000)
	million = append(million, bytes.Repeat([]byte{0x05, 0x13, 0x00}, 1_000_000)...)
	// A record count of millions with nothing behind it.
	claims := binary.AppendUvarint(archive.AppendEventLeaf(nil, fEvent(2, 1_700_000_000e9))[:26], 5_000_000)
	bigHeader, err := json.Marshal(archive.SegmentHeader{Format: archive.FormatV1, Origin: hostileOrigin, Frontier: []string{},
		PrevCheckpoint: strings.Repeat("x", 100<<10)})
	if err != nil {
		t.Fatal(err)
	}
	// Blocks of 16 MiB of minimal LOST leaves (about 2 KB each compressed): every LOST leaf is a LostReport.
	var lost []byte
	lostLeaf := archive.AppendEventLeaf(nil, &audit.RawEvent{Kind: audit.KindLost, Lost: audit.Lost{Reason: audit.LostLocal, Count: 1}})
	for len(lost)+archive.EntryHeadSize+len(lostLeaf) < archive.MaxBlock-1024 {
		lost = archive.AppendEntry(lost, archive.EntryLeaf, lostLeaf)
	}
	lostBlock := archive.AppendBlock(nil, lost)
	lostFile := slices.Clone(hdr)
	for i := 0; i < 8; i++ {
		lostFile = append(lostFile, lostBlock...)
	}
	var frames []byte
	for i := 0; i < 8; i++ {
		frames = append(frames, zstdZeros(120, 0)...) // 15 MiB each: every frame alone is under MaxBlock
	}
	cases := []struct {
		name    string
		file    []byte
		status  string
		codes   []string
		omitted bool // the report lists the first 1000 problems and counts the rest
	}{
		{"block-length-4GiB", append(append(slices.Clone(hdr), 0xf0, 0xff, 0xff, 0xff, 0, 0, 0, 0), junk(26<<10)...),
			Tampered, []string{CodeDamaged}, false},
		{"block-length-MaxBlock-26KB-present", append(binary.LittleEndian.AppendUint32(slices.Clone(hdr), archive.MaxBlock), junk(26<<10)...),
			Incomplete, []string{CodeTornTail}, false},
		{"zstd-zeros-1GiB", rawBlock(slices.Clone(hdr), zstdZeros(8192, 0)), Tampered, []string{CodeDamaged}, false},
		{"zstd-zeros-declared-1GiB", rawBlock(slices.Clone(hdr), zstdZeros(8192, 1<<30)), Tampered, []string{CodeDamaged}, false},
		{"zstd-8-frames-of-15MiB", rawBlock(slices.Clone(hdr), frames), Tampered, []string{CodeDamaged}, false},
		{"header-zstd-zeros-1GiB", rawBlock([]byte(archive.SegmentMagic), zstdZeros(8192, 0)), Tampered, []string{CodeDamaged}, false},
		{"entry-length-4GiB", append(slices.Clone(hdr), archive.AppendBlock(nil, []byte{archive.EntryLeaf, 0xff, 0xff, 0xff, 0xff, 1, 2, 3})...),
			Tampered, []string{CodeDamaged}, false},
		{"million-records", append(slices.Clone(hdr), signedBlock(nil, million)...), Tampered, []string{CodeLeaf, CodeUnverified}, false},
		{"record-count-claims-millions", append(slices.Clone(hdr), signedBlock(nil, claims)...), Tampered, []string{CodeLeaf, CodeUnverified}, false},
		{"header-100KiB", archive.AppendBlock([]byte(archive.SegmentMagic), archive.AppendEntry(nil, archive.EntryHeader, bigHeader)), Tampered, []string{CodeSegmentHeader}, false},
		// A block of 1.3 million empty leaf entries (6 MiB decoded, under MaxBlock), each of which fails to
		// decode: after a few problems the rest of the block is not read (damaged).
		{"6MiB-of-empty-leaves", append(slices.Clone(hdr), archive.AppendBlock(nil, bytes.Repeat([]byte{archive.EntryLeaf, 0, 0, 0, 0}, 6<<20/archive.EntryHeadSize))...),
			Tampered, []string{CodeDamaged, CodeLeaf}, false},
		// Eight blocks of 340 000 LOST leaves each, 16 KB in all: a block holds at most MaxBlockLeaves.
		{"8-blocks-of-LOST-leaves", lostFile, Tampered, []string{CodeDamaged}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "arch")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, archive.SegmentName(0, time.Unix(1_700_000_000, 0))), c.file, 0o600); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d bytes", len(c.file))
			bounded := func(what string, f func()) {
				t.Helper()
				peak, total := heapPeak(f)
				t.Logf("%s: peak heap %.1f MiB, %.1f MiB allocated", what, float64(peak)/(1<<20), float64(total)/(1<<20))
				if peak > memLimit {
					t.Errorf("HOLE: %s of a %d-byte segment: peak heap %d MiB, over %d MiB", what, len(c.file), peak>>20, memLimit>>20)
				}
			}
			var r, sr *Report
			bounded("Verify", func() {
				var err error
				if r, err = Dir(dir, pinned); err != nil {
					t.Errorf("Verify: %v", err)
				}
			})
			bounded("Reader", func() {
				rd, err := archive.Open(dir)
				if err != nil {
					t.Fatal(err)
				}
				for calls := 0; ; calls++ {
					if calls > 4<<20 {
						t.Fatalf("NextLeaf: no io.EOF after %d calls", calls)
					}
					_, _, err := rd.NextLeaf()
					if err == io.EOF {
						break
					}
					if err != nil && !archive.IsCorrupt(err) {
						t.Fatalf("NextLeaf: %v", err)
					}
				}
			})
			bounded("Stream", func() { sr = streamVerify(t, dir, pinned, rand.New(rand.NewPCG(1, 1))) })
			for _, rr := range []struct {
				how string
				r   *Report
			}{{"Verify", r}, {"Stream", sr}} {
				if rr.r == nil {
					continue
				}
				if got := codeSet(rr.r); rr.r.Status != c.status || !slices.Equal(got, slices.Sorted(slices.Values(c.codes))) {
					t.Errorf("%s: %s %v, want %s %v (%d problems)", rr.how, rr.r.Status, got, c.status, c.codes, len(rr.r.Problems))
				}
				if rr.r.Verified != 0 {
					t.Errorf("%s: %d leaves verified", rr.how, rr.r.Verified)
				}
				if om := rr.r.Omitted; c.omitted != (om.Problems > 0) || (c.omitted && om.Class != Tampered) {
					t.Errorf("%s: omitted %+v", rr.how, om)
				}
			}
			if r != nil && len(r.Problems) > 1000 {
				t.Errorf("HOLE: %d problems from a %d-byte segment (each empty leaf entry of a block is one): the report grows with what "+
					"the blocks decompress to, not with the input", len(r.Problems), len(c.file))
			}
		})
	}

	// A block header that declares MaxBlock bytes, then its bytes arriving in pieces: the Stream holds at
	// most the one block (and its header) it waits for.
	t.Run("stream-pending-MaxBlock", func(t *testing.T) {
		name := archive.SegmentName(0, time.Unix(1_700_000_000, 0))
		s := NewStream(pinned)
		off := int64(0)
		write := func(b []byte) {
			t.Helper()
			if _, err := s.Write(name, off, b); err != nil {
				t.Fatal(err)
			}
			off += int64(len(b))
			if n := len(s.Pending()); n > archive.MaxBlock+archive.BlockHeaderSize {
				t.Fatalf("HOLE: %d bytes pending, over MaxBlock+%d", n, archive.BlockHeaderSize)
			}
		}
		peak, total := heapPeak(func() {
			write(hdr)
			write(append(binary.LittleEndian.AppendUint32(nil, archive.MaxBlock), 1, 2, 3, 4, 5, 6, 7))
			if n := len(s.Pending()); n != archive.BlockHeaderSize+3 {
				t.Errorf("%d bytes pending after a block header and 3 bytes", n)
			}
			chunk := make([]byte, 1<<20)
			for rest := archive.MaxBlock - 3; rest > 0; rest -= min(rest, len(chunk)) {
				write(chunk[:min(rest, len(chunk))])
			}
		})
		t.Logf("peak heap %.1f MiB, %.1f MiB allocated", float64(peak)/(1<<20), float64(total)/(1<<20))
		if peak > memLimit {
			t.Errorf("HOLE: peak heap %d MiB", peak>>20)
		}
		if n := len(s.Pending()); n != 0 {
			t.Errorf("%d bytes pending once the block is complete", n)
		}
		s.v.r.Live = false
		if r := s.Finish(); r.Status != Tampered || !slices.Equal(codeSet(r), []string{CodeDamaged}) {
			t.Errorf("%s %v, want the block's checksum damaged%s", r.Status, codeSet(r), problemText(r))
		}
	})
}

// ---- 8. fuzzing the Stream ----

// fuzzSegName names segment bytes as a directory would: by the first leaf index of the header they open
// with (fallback when there is none), after prev.
func fuzzSegName(b []byte, fallback uint64, at time.Time, prev string) string {
	first := fallback
	if len(b) >= len(archive.SegmentMagic)+archive.BlockHeaderSize && string(b[:len(archive.SegmentMagic)]) == archive.SegmentMagic {
		rest := b[len(archive.SegmentMagic):]
		if l, err := archive.BlockLength(rest); err == nil && len(rest) >= l {
			if dec, err := archive.OpenBlock(rest[:l], nil); err == nil {
				if typ, p, _, err := archive.NextEntry(dec); err == nil && typ == archive.EntryHeader {
					if h, err := archive.DecodeHeader(p); err == nil {
						first = h.FirstIndex
					}
				}
			}
		}
	}
	name := archive.SegmentName(first, at)
	if name <= prev {
		name = archive.SegmentName(fallback, at)
	}
	return name
}

// FuzzStream feeds arbitrary bytes to a Stream as one or two segment files (split at split, when inside
// data), in random pieces (seed), as a store receives them. The Stream never panics and never refuses bytes
// that continue it; what it holds stays bounded (the pending bytes of one block, a decoded block of at most
// MaxBlock); it reports exactly what a Stream fed each file whole reports; PASS means no problem and, with
// the identity key pinned, every leaf verified. With plain set, data has its blocks decompressed
// (plainSegment) and is framed with valid checksums and zstd first, to reach the entries.
func FuzzStream(f *testing.F) {
	segs, id := fuzzArchive(f)
	var files [][]byte
	for _, path := range segs {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		files = append(files, b)
		f.Add(b, uint32(0), false, uint64(1))
		f.Add(b[:len(b)-3], uint32(0), false, uint64(2)) // torn
		blocks, _, _ := segWalk(path)
		f.Add(plainSegment(blocks), uint32(0), true, uint64(3))
	}
	for i := 0; i+1 < len(files); i++ {
		f.Add(append(slices.Clone(files[i]), files[i+1]...), uint32(len(files[i])), false, uint64(4+i))
		f.Add(append(slices.Clone(files[i]), files[i+1]...), uint32(len(files[i])-5), false, uint64(4+i)) // torn, then the next
	}
	hdr := hostileHeader(f)
	f.Add(append(slices.Clone(hdr), 0xf0, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 2, 3), uint32(0), false, uint64(9))
	f.Add(append(binary.LittleEndian.AppendUint32(slices.Clone(hdr), archive.MaxBlock), 1, 2, 3, 4, 5), uint32(0), false, uint64(10))
	f.Add(rawBlock(slices.Clone(hdr), zstdZeros(200, 0)), uint32(0), false, uint64(11))
	f.Add(rawBlock(slices.Clone(hdr), zstdZeros(2, 256<<10)), uint32(0), false, uint64(12))
	f.Add(append(slices.Clone(hdr), archive.AppendBlock(nil, bytes.Repeat([]byte{archive.EntryLeaf, 0, 0, 0, 0}, 50))...), uint32(0), false, uint64(13))
	f.Add(forgedSegment(f), uint32(0), false, uint64(14))
	f.Add([]byte(archive.SegmentMagic), uint32(0), false, uint64(15))
	f.Add([]byte{}, uint32(0), false, uint64(16))
	t0 := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, data []byte, split uint32, plain bool, seed uint64) {
		parts := [][]byte{data}
		if s := int(split); s > 0 && s < len(data) {
			parts = [][]byte{data[:s], data[s:]}
		}
		if plain {
			for i := range parts {
				parts[i] = frameSegment(parts[i])
			}
		}
		names := make([]string, len(parts))
		for i, p := range parts {
			prev := ""
			if i > 0 {
				prev = names[i-1]
			}
			names[i] = fuzzSegName(p, uint64(i)<<32, t0.Add(time.Duration(i)*time.Hour), prev)
		}
		opts := Options{Now: t0}
		if seed&1 == 0 {
			opts.Key = id
		}
		rng := rand.New(rand.NewPCG(seed, seed>>32))
		pieces, whole := NewStream(opts), NewStream(opts)
		for i, p := range parts {
			if _, err := whole.Write(names[i], 0, p); err != nil {
				t.Fatalf("whole %s: %v", names[i], err)
			}
			if len(p) == 0 {
				if _, err := pieces.Write(names[i], 0, nil); err != nil {
					t.Fatalf("%s: %v", names[i], err)
				}
			}
			for off := 0; off < len(p); {
				n := 1 + rng.IntN(min(len(p)-off, 4096))
				u, err := pieces.Write(names[i], int64(off), p[off:off+n])
				if err != nil {
					t.Fatalf("%s at %d: %v", names[i], off, err)
				}
				off += n
				if k := len(pieces.Pending()); k > archive.MaxBlock+archive.BlockHeaderSize || k > off {
					t.Fatalf("%d bytes pending after %d bytes", k, off)
				}
				if len(pieces.dec) > archive.MaxBlock || cap(pieces.dec) > 4*archive.MaxBlock {
					t.Fatalf("decoded block of %d bytes (capacity %d)", len(pieces.dec), cap(pieces.dec))
				}
				if d := pieces.Decoded(); d < 0 || d > int64(off) {
					t.Fatalf("%d bytes decoded of %d", d, off)
				}
				if u.Size != pieces.Size() {
					t.Fatalf("update size %d, stream size %d", u.Size, pieces.Size())
				}
			}
		}
		pieces.v.r.Live, whole.v.r.Live = false, false
		r, w := pieces.Finish(), whole.Finish()
		switch r.Status {
		case Pass, Incomplete, Tampered:
		default:
			t.Fatalf("status %q", r.Status)
		}
		if (r.Status == Pass) != (len(r.Problems) == 0) {
			t.Fatalf("status %s with problems%s", r.Status, problemText(r))
		}
		if r.Status == Pass && opts.Key != nil && r.Verified != r.Leaves {
			t.Fatalf("PASS with %d of %d leaves verified", r.Verified, r.Leaves)
		}
		if r.Status != w.Status || r.Leaves != w.Leaves || r.Verified != w.Verified || r.Latest != w.Latest ||
			problemText(r) != problemText(w) {
			t.Fatalf("in pieces: %s %d/%d leaves%s\nwhole: %s %d/%d leaves%s", r.Status, r.Verified, r.Leaves, problemText(r),
				w.Status, w.Verified, w.Leaves, problemText(w))
		}
	})
}
