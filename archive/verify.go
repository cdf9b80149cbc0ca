package archive

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/sys/unix"
)

// Verdicts, worst last.
const (
	Pass       = "PASS"
	Incomplete = "INCOMPLETE" // authentic as far as it goes, but evidence is missing or the tail is unsigned
	Tampered   = "TAMPERED"   // something was altered, reordered, re-signed, spliced or replayed
)

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Key is the pinned host identity key. When nil, Verify trusts the identity key named by the archive's
	// first START leaf and says so (Report.Pinned false).
	Key note.Verifier
	// Grace is how much longer than the heartbeat interval a silence may last; default 5 s.
	Grace time.Duration
	// Witness is a signed checkpoint seen earlier (from a previous verify). The archive must still contain
	// it: a smaller archive is a rollback, a different root at that size a fork.
	Witness []byte
	// Receipts are store receipts that opened under the pinned store key (ReadReceipts, OpenReceipt). The
	// newest (NewestReceipt) is a checkpoint the store holds: an archive with fewer leaves was truncated,
	// a different root at that size is a fork. Report.Receipt says what was found.
	Receipts []Receipt
	// Now is the time the verdict is made (for a live writer's silence); default time.Now().
	Now time.Time
}

// Problem is one finding. Class is Tampered or Incomplete; Code is a stable identifier (docs/format.md).
type Problem struct {
	Class   string  `json:"class"`
	Code    string  `json:"code"`
	Segment string  `json:"segment,omitempty"`
	Index   *uint64 `json:"index,omitempty"` // leaf index, when the problem is at a leaf
	Message string  `json:"message"`
}

// SegmentReport is the verdict on one segment file.
type SegmentReport struct {
	File        string `json:"file"`
	Segment     uint64 `json:"segment"`
	Status      string `json:"status"` // PASS or FAIL
	FirstIndex  uint64 `json:"first_index"`
	Leaves      uint64 `json:"leaves"`   // leaves read
	Verified    uint64 `json:"verified"` // leaves covered by a valid checkpoint
	FirstTime   string `json:"first_time,omitempty"`
	LastTime    string `json:"last_time,omitempty"`
	Checkpoints int    `json:"checkpoints"`
	Sealed      bool   `json:"sealed"`
	Problems    int    `json:"problems"`
}

// Run is one daemon run: a START leaf and, unless it crashed or is still running, its STOP.
type Run struct {
	Start     uint64    `json:"start_index"`
	StartTime string    `json:"start_time"`
	Stop      *uint64   `json:"stop_index,omitempty"`
	StopTime  string    `json:"stop_time,omitempty"`
	Ended     string    `json:"ended"` // stopped, crashed, running, unknown
	Recovered *Recovery `json:"recovered,omitempty"`
}

// LostReport is a LOST leaf: events the kernel, the socket or the archive could not keep.
type LostReport struct {
	Index  uint64 `json:"index"`
	Time   string `json:"time"`
	Reason string `json:"reason"`
	Count  uint64 `json:"count"`
	First  uint32 `json:"first_seq,omitempty"`
	Last   uint32 `json:"last_seq,omitempty"`
}

// Tail describes leaves after the last checkpoint of the last segment.
type Tail struct {
	Segment string `json:"segment"`
	First   uint64 `json:"first_index"`
	Leaves  uint64 `json:"leaves"`
	Torn    int64  `json:"torn_bytes,omitempty"`
}

// Report is Verify's verdict on one archive directory.
type Report struct {
	Dir        string          `json:"dir"`
	Status     string          `json:"status"`
	Origin     string          `json:"origin"`
	Identity   string          `json:"identity,omitempty"`
	Pinned     bool            `json:"pinned"`
	Live       bool            `json:"live"`     // a writer holds the archive
	Leaves     uint64          `json:"leaves"`   // leaves read, over all segments
	Verified   uint64          `json:"verified"` // of those, the leaves covered by a valid checkpoint
	FirstIndex uint64          `json:"first_index"`
	FirstTime  string          `json:"first_time,omitempty"`
	LastTime   string          `json:"last_time,omitempty"`
	Segments   []SegmentReport `json:"segments"`
	Problems   []Problem       `json:"problems"`
	Runs       []Run           `json:"runs"`
	Lost       []LostReport    `json:"lost"`
	Unsigned   *Tail           `json:"unsigned_tail,omitempty"`
	Latest     string          `json:"latest_checkpoint,omitempty"` // the last valid signed checkpoint
	Receipt    *ReceiptReport  `json:"receipt,omitempty"`           // the newest store receipt, when given
}

// ReceiptReport is what Verify found about the newest store receipt (VerifyOptions.Receipts).
type ReceiptReport struct {
	Size uint64 `json:"size"` // leaves the store acknowledged
	Time string `json:"time"` // when (RFC 3339, UTC)
	// Status is consistent (the archive holds those leaves, with that root), or the code of the problem
	// reported: truncated, fork or origin (the receipt is another archive's); or unchecked: the archive
	// reaches past Size, but the leaves there are missing or unreadable (reported as such).
	Status string `json:"status"`
}

// Receipt statuses beyond the problem codes.
const (
	ReceiptConsistent = "consistent"
	ReceiptUnchecked  = "unchecked"
)

type segEntry struct {
	path string
	h    SegmentHeader
	err  error
}

// verifier holds the state of one pass over an archive.
type verifier struct {
	opts VerifyOptions
	r    *Report

	origin   string
	identity note.Verifier

	tree    Frontier
	started bool // tree holds a trusted state
	broken  bool // the chain was interrupted: the next segment's header is adopted
	// diverged: a checkpoint showed the recomputed tree differs from the signed one (reported), so the
	// next segment is checked from its header's frontier, which its own checkpoints vouch for.
	diverged bool
	// rootProblem is the index in Report.Problems of this segment's first root mismatch (-1: none);
	// rootRepeats counts the later checkpoints of the segment that then cannot match either.
	rootProblem int
	rootRepeats int
	ckGood      uint64 // size of the last checkpoint whose root matched
	misplaced   bool   // a checkpoint of this segment stood at the wrong size (reported)
	gap         bool   // leaves are missing or unreadable since the last START: run pairing is unknown
	segNo       uint64 // number of the last segment whose header was accepted
	kernel      kernelRange
	// lastCk and ckSize are the last checkpoint entry standing where one must (the structure the seal,
	// the next header and a recovery refer to); its signature and root are checked on their own.
	lastCk []byte
	ckSize uint64

	key      note.Verifier // the epoch key that signs now
	keyVKey  string
	epoch    uint64
	intro    *intro // a START or KEY leaf waiting for the checkpoint that must follow it
	interval time.Duration

	maxTime    int64
	runOpen    bool
	lastSeal   *Seal
	lastSealed string
	pendingRec *Recovery // what the next START must record about the previous segment's end
	recovered  string    // the segment whose unsigned tail the pending START's checkpoint signs

	witness     *Checkpoint
	witnessSeen bool
	receipt     *Receipt // the newest store receipt
	receiptSeen bool

	seg     *SegmentReport
	segLast int64 // time of the segment's last leaf, formatted into seg.LastTime once the segment is read
	segCks  []uint64
	sealIdx int64
	leaf    Leaf
}

type intro struct {
	index  uint64
	signer note.Verifier
	vkey   string
	epoch  uint64
	kind   LeafKind
}

// Verify checks the archive in dir: every leaf and root recomputed, every checkpoint's signature by the
// epoch key that must sign it, the epoch key chain back to the identity key, index contiguity and
// segment linkage, seals, START/STOP pairing, silences and origin. It returns an error only when dir
// cannot be read at all; everything about the archive's content is in the Report.
func Verify(dir string, opts VerifyOptions) (*Report, error) {
	if opts.Grace <= 0 {
		opts.Grace = 5 * time.Second
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	files, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		return nil, fmt.Errorf("verify: no segments in %s", dir)
	}
	r := &Report{Dir: dir, Segments: []SegmentReport{}, Problems: []Problem{}, Runs: []Run{}, Lost: []LostReport{}}
	v := &verifier{opts: opts, r: r, interval: 10 * time.Second}
	r.Live = isLive(dir)
	if opts.Key != nil {
		v.identity, v.origin, r.Pinned = opts.Key, opts.Key.Name(), true
	}
	if opts.Witness != nil {
		c, err := peekCheckpoint(opts.Witness)
		if err != nil {
			return nil, fmt.Errorf("verify: witness checkpoint: %w", err)
		}
		v.witness = &c
	}
	if rc, ok := NewestReceipt(opts.Receipts); ok {
		v.receipt = &rc
		r.Receipt = &ReceiptReport{Size: rc.Checkpoint.Size, Time: rc.Time.UTC().Format(time.RFC3339), Status: ReceiptConsistent}
	}
	segs := make([]segEntry, len(files))
	for i, f := range files {
		segs[i] = segEntry{path: f}
		segs[i].h, segs[i].err = readSegmentHeader(f)
	}
	sort.SliceStable(segs, func(i, j int) bool {
		if (segs[i].err == nil) != (segs[j].err == nil) {
			return segs[i].err == nil
		}
		return segs[i].h.FirstIndex < segs[j].h.FirstIndex
	})
	for i := range segs {
		v.segment(&segs[i], i == len(segs)-1 || segs[i+1].err != nil)
	}
	v.finish()
	return r, nil
}

// isLive reports whether a writer holds dir's lock.
func isLive(dir string) bool {
	f, err := os.Open(filepath.Join(dir, lockFile))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

func (v *verifier) problem(class, code string, index *uint64, format string, args ...any) {
	p := Problem{Class: class, Code: code, Index: index, Message: fmt.Sprintf(format, args...)}
	if v.seg != nil {
		p.Segment = v.seg.File
		v.seg.Problems++
		if class == Tampered {
			v.seg.Status = "FAIL"
		}
	}
	v.r.Problems = append(v.r.Problems, p)
}

func idx(i uint64) *uint64 { return &i }

func fmtTime(ns int64) string {
	if ns == 0 {
		return ""
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}

// segment verifies one segment file. last is true for the newest readable segment.
func (v *verifier) segment(se *segEntry, last bool) {
	name := filepath.Base(se.path)
	defer v.closeSegment()
	if !v.beginSegment(name, se.h, se.err, last) {
		return
	}
	first := true
	s, err := openSegment(se.path)
	if err != nil {
		v.problem(Tampered, "segment-header", nil, "%v", err)
		return
	}
	defer s.Close()
	if _, err := s.readHeader(); err != nil {
		v.problem(Tampered, "segment-header", nil, "%v", err)
		return
	}
	var torn int64
	for {
		typ, p, err := s.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var ce *CorruptError
			if errors.As(err, &ce) && ce.Torn {
				torn = s.size - ce.Offset
				if last && v.r.Live {
					break // the writer is mid-write
				}
				if last {
					v.problem(Incomplete, "torn-tail", nil, "%s (%d bytes); the leaves before it are intact", ce.Reason, torn)
				} else {
					v.pendingRec = &Recovery{Segment: name, TornOffset: ce.Offset, TornBytes: torn}
				}
				break
			}
			v.problem(Tampered, "damaged", nil, "%v: the leaves after index %d in this segment cannot be read", err, v.tree.Size)
			v.broken, v.gap = true, true
			break
		}
		v.entry(typ, p, &first)
	}
	v.endSegment(name, torn, last)
}

// beginSegment checks a segment's header against what came before and starts its report. It returns
// false when the segment's entries cannot be checked (the reason is reported); closeSegment ends it.
func (v *verifier) beginSegment(name string, h SegmentHeader, herr error, last bool) bool {
	v.r.Segments = append(v.r.Segments, SegmentReport{File: name, Status: "PASS"})
	v.seg, v.segLast = &v.r.Segments[len(v.r.Segments)-1], 0
	if herr != nil {
		var ce *CorruptError
		if errors.As(herr, &ce) && ce.Torn && last {
			v.seg.Status = "FAIL"
			v.problem(Incomplete, "torn-segment", nil, "segment is cut short inside its header (the writer publishes a segment only with a durable first block, so the file was truncated): %v", herr)
			return false
		}
		v.problem(Tampered, "segment-header", nil, "segment header unreadable: %v", herr)
		return false
	}
	v.seg.Segment, v.seg.FirstIndex = h.Segment, h.FirstIndex
	if v.origin == "" {
		v.origin = h.Origin
	}
	if h.Origin != v.origin {
		v.problem(Tampered, "origin", nil, "segment belongs to origin %q, not %q: another host's data was spliced in", h.Origin, v.origin)
		return false
	}
	// Segment numbers count up by one (a run continues its predecessor's numbering), so a gap in them
	// tells a deleted segment from a header that lies about where its leaves start.
	switch {
	case v.started && h.FirstIndex < v.tree.Size && (!v.diverged || h.Segment <= v.segNo):
		v.problem(Tampered, "replay", nil, "segment %d repeats leaves %d..%d already seen: an older segment was replayed",
			h.Segment, h.FirstIndex, v.tree.Size-1)
		return false
	case !v.started || v.broken:
		if !v.started && h.FirstIndex > 0 {
			v.problem(Incomplete, "missing-start", nil, "the archive starts at leaf %d: leaves 0..%d are missing", h.FirstIndex, h.FirstIndex-1)
			v.gap = true
		}
		// After damage, the gap up to the next segment is the unreadable rest (reported).
		if v.started && h.FirstIndex > v.tree.Size && h.Segment > v.segNo+1 {
			v.problem(Incomplete, "missing-segment", nil, "leaves %d..%d are missing before this segment: a segment was deleted", v.tree.Size, h.FirstIndex-1)
		}
		if !v.adoptHeader(h) {
			return false
		}
	case h.FirstIndex > v.tree.Size && (h.Segment > v.segNo+1 || v.pendingRec != nil):
		how := fmt.Sprintf("segments %d..%d were deleted", v.segNo+1, h.Segment-1)
		if h.Segment == v.segNo+1 {
			how = "the end of the segment before, with its seal, was cut"
		}
		v.problem(Incomplete, "missing-segment", nil, "leaves %d..%d are missing before this segment: %s", v.tree.Size, h.FirstIndex-1, how)
		if !v.adoptHeader(h) {
			return false
		}
		v.gap = true
	default:
		if h.Segment != v.segNo+1 {
			v.problem(Tampered, "segment-header", nil, "segment header numbers it %d, after segment %d", h.Segment, v.segNo)
			h.Segment = v.segNo + 1
		}
		switch f, err := DecodeFrontier(h.FirstIndex, h.Frontier); {
		case v.diverged && err == nil:
			v.tree, v.diverged, v.ckGood = f, false, h.FirstIndex
		case h.FirstIndex != v.tree.Size:
			v.problem(Tampered, "segment-header", nil, "segment header puts its first leaf at %d, but the segment before ends before leaf %d and no segment is missing in between",
				h.FirstIndex, v.tree.Size)
			v.seg.FirstIndex = v.tree.Size
		case fmt.Sprint(h.Frontier) != fmt.Sprint(v.tree.Encode()):
			v.problem(Tampered, "segment-header", nil, "segment header's tree frontier does not match the leaves before it")
		case fmt.Sprint(h.PrevKernelTimes) != fmt.Sprint(v.kernel.header()):
			v.problem(Tampered, "segment-header", nil, "segment header gives the kernel time span of the segment before as %v, its events span %v: search would skip the wrong segments",
				h.PrevKernelTimes, v.kernel.header())
		}
		if h.PrevCheckpoint != string(v.lastCk) {
			v.problem(Tampered, "segment-link", nil, "segment header's previous checkpoint is not the last checkpoint before it")
		}
		if h.EpochKey != "" && h.EpochKey != v.keyVKey {
			v.problem(Tampered, "segment-header", nil, "segment header names an epoch key that the key chain does not")
		}
	}
	v.segNo, v.kernel, v.misplaced = h.Segment, kernelRange{}, false
	v.rootProblem, v.rootRepeats = -1, 0
	v.lastSeal = nil
	v.segCks = v.segCks[:0]
	v.sealIdx = -1
	return true
}

// closeSegment finishes the report of the segment begun last.
func (v *verifier) closeSegment() {
	if v.seg != nil {
		v.seg.LastTime, v.seg = fmtTime(v.segLast), nil
	}
}

// entry verifies one entry after a segment's header. first is true until the segment's first leaf.
func (v *verifier) entry(typ byte, p []byte, first *bool) {
	switch typ {
	case entryLeaf:
		v.leafEntry(p, *first)
		*first = false
	case entryCheckpoint:
		v.checkpointEntry(p)
	default:
		v.problem(Tampered, "damaged", nil, "a second header inside the segment")
	}
}

// endSegment judges a segment once its entries are read: the seal, and what the next START must record
// about an unsealed end. torn is the length of the incomplete block at its end.
func (v *verifier) endSegment(name string, torn int64, last bool) {
	if v.rootRepeats > 0 {
		v.r.Problems[v.rootProblem].Message += fmt.Sprintf("; the segment's %d later checkpoints disagree too, as they must once a leaf before them differs", v.rootRepeats)
	}
	v.seg.Leaves = v.tree.Size - v.seg.FirstIndex
	v.seg.Sealed = v.sealIdx >= 0 && v.ckSize == v.tree.Size && uint64(v.sealIdx) == v.tree.Size-1
	if v.sealIdx >= 0 && !v.seg.Sealed && !v.broken {
		v.problem(Tampered, "seal", idx(uint64(v.sealIdx)), "leaves follow the seal, or the seal is not signed by a checkpoint")
	}
	if !v.seg.Sealed {
		if v.broken {
			v.pendingRec = nil // its end is unreadable (reported): the next START cannot be held to it
		} else {
			if v.pendingRec == nil {
				v.pendingRec = &Recovery{Segment: name}
			}
			v.pendingRec.Unsigned = v.tree.Size - v.ckSize
		}
		if last {
			if v.tree.Size > v.ckSize || torn > 0 {
				v.r.Unsigned = &Tail{Segment: name, First: v.ckSize, Leaves: v.tree.Size - v.ckSize, Torn: torn}
			}
		}
	} else {
		v.pendingRec = nil
		v.lastSealed = name
	}
}

// adoptHeader takes the tree, the last checkpoint and the signing key from h: the segments before it are
// missing or unreadable, so its header is all there is to continue from.
func (v *verifier) adoptHeader(h SegmentHeader) bool {
	f, err := DecodeFrontier(h.FirstIndex, h.Frontier)
	if err != nil {
		v.problem(Tampered, "segment-header", nil, "segment header: %v", err)
		return false
	}
	v.tree, v.started, v.broken, v.diverged = f, true, false, false
	v.lastCk, v.ckSize = []byte(h.PrevCheckpoint), 0
	if c, err := peekCheckpoint(v.lastCk); err == nil {
		v.ckSize = c.Size
	}
	v.ckGood = h.FirstIndex
	if h.EpochKey != "" && h.FirstIndex > 0 {
		// Without the segments before, this key is the header's word only (and their absence is reported).
		// A segment at leaf 0 begins the tree: its START names the key, whatever its header says.
		if kv, err := note.NewVerifier(h.EpochKey); err == nil {
			v.key, v.keyVKey, v.epoch = kv, h.EpochKey, h.Epoch
		}
	}
	v.intro, v.lastSeal, v.pendingRec = nil, nil, nil
	v.maxTime = 0 // the time up to this segment is in the missing leaves, not a silence
	return true
}

// leafEntry verifies one leaf.
func (v *verifier) leafEntry(p []byte, firstInSegment bool) {
	i := v.tree.Size
	v.tree.Append(p)
	v.rootCheck()
	if v.intro != nil && v.intro.index+1 < v.tree.Size {
		v.problem(Tampered, "unsigned-key", idx(v.intro.index), "the %s leaf is not followed by the checkpoint that must sign it: checkpoints were removed", v.intro.kind)
		v.adoptIntro()
	}
	if v.sealIdx >= 0 {
		v.problem(Tampered, "seal", idx(i), "leaf after the segment's seal")
	}
	l := &v.leaf
	if err := DecodeLeaf(p, l); err != nil {
		v.problem(Tampered, "leaf", idx(i), "leaf does not decode: %v", err)
		return
	}
	if v.seg.FirstTime == "" {
		v.seg.FirstTime = fmtTime(l.Time)
		if v.r.FirstTime == "" {
			v.r.FirstTime = v.seg.FirstTime
		}
	}
	v.segLast = l.Time
	if firstInSegment && v.pendingRec != nil && l.Kind != LeafStart {
		v.problem(Tampered, "missing-recovery", idx(i), "the previous segment %s ends without a seal, and this segment does not begin with the START that records it", v.pendingRec.Segment)
		v.pendingRec = nil
	}
	if v.runOpen && v.maxTime != 0 && l.Kind != LeafStart {
		if gap := time.Duration(l.Time - v.maxTime); gap > v.interval+v.opts.Grace {
			v.problem(Incomplete, "silence", idx(i), "nothing was recorded for %s before this leaf (%s..%s): the daemon was stopped, frozen or its records removed",
				gap.Round(time.Millisecond), fmtTime(v.maxTime), fmtTime(l.Time))
		}
	}
	if l.Time > v.maxTime {
		v.maxTime = l.Time
	}
	if !l.Kind.control() {
		v.kernel.add(eventKernelTime(p))
	}
	switch l.Kind {
	case LeafEvent:
	case LeafLost:
		ev := &l.Event
		v.r.Lost = append(v.r.Lost, LostReport{Index: i, Time: fmtTime(l.Time), Reason: ev.Lost.Reason.String(), Count: ev.Lost.Count, First: ev.Lost.First, Last: ev.Lost.Last})
	case LeafStart:
		v.start(i, l)
	case LeafStop:
		if !v.runOpen && !v.gap {
			v.problem(Tampered, "pairing", idx(i), "STOP without a START")
		}
		v.runOpen = false
		if n := len(v.r.Runs); n > 0 {
			v.r.Runs[n-1].Stop, v.r.Runs[n-1].StopTime, v.r.Runs[n-1].Ended = idx(i), fmtTime(l.Time), "stopped"
		}
	case LeafKey:
		var k Key
		if err := json.Unmarshal(l.Body, &k); err != nil {
			v.problem(Tampered, "leaf", idx(i), "KEY leaf: %v", err)
			return
		}
		kv, err := note.NewVerifier(k.EpochKey)
		if err != nil || kv.Name() != v.origin {
			v.problem(Tampered, "key-chain", idx(i), "KEY leaf names an unusable key %q", k.EpochKey)
			return
		}
		if k.Epoch != v.epoch+1 {
			v.problem(Tampered, "key-chain", idx(i), "KEY leaf introduces epoch %d after epoch %d", k.Epoch, v.epoch)
		}
		v.intro = &intro{index: i, signer: v.key, vkey: k.EpochKey, epoch: k.Epoch, kind: LeafKey}
	case LeafSeal:
		var sl Seal
		if err := json.Unmarshal(l.Body, &sl); err != nil {
			v.problem(Tampered, "leaf", idx(i), "SEAL leaf: %v", err)
			return
		}
		v.sealIdx = int64(i)
		if sl.FirstIndex != v.seg.FirstIndex || sl.Leaves != i+1-v.seg.FirstIndex || sl.Segment != v.seg.Segment {
			v.problem(Tampered, "seal", idx(i), "the seal describes segment %d with leaves %d..%d, the file holds segment %d with leaves %d..%d",
				sl.Segment, sl.FirstIndex, sl.FirstIndex+sl.Leaves-1, v.seg.Segment, v.seg.FirstIndex, i)
		}
		if fmt.Sprint(sl.Checkpoints) != fmt.Sprint(v.segCks) && !v.misplaced {
			v.problem(Tampered, "missing-checkpoint", idx(i), "the seal lists checkpoints at sizes %v, the segment holds %v: checkpoints were removed or added",
				sl.Checkpoints, v.segCks)
		}
		v.lastSeal = &sl
	case LeafHeartbeat, LeafClock, LeafPolicy:
	default:
		v.problem(Tampered, "leaf", idx(i), "unknown leaf kind %d", l.Kind)
	}
}

// start handles a START leaf: a new run, signed by the identity key, naming its first epoch key.
func (v *verifier) start(i uint64, l *Leaf) {
	var st Start
	if err := json.Unmarshal(l.Body, &st); err != nil {
		v.problem(Tampered, "leaf", idx(i), "START leaf: %v", err)
		return
	}
	if st.Origin != v.origin {
		v.problem(Tampered, "origin", idx(i), "START names origin %q, not %q", st.Origin, v.origin)
	}
	id, err := note.NewVerifier(st.Identity)
	switch {
	case err != nil:
		v.problem(Tampered, "identity", idx(i), "START names an unusable identity key: %v", err)
		return
	case v.identity == nil:
		v.identity = id
		v.r.Identity = st.Identity
	case id.Name() != v.identity.Name() || id.KeyHash() != v.identity.KeyHash():
		v.problem(Tampered, "identity", idx(i), "START names identity key %q, which is not the pinned key %s+%08x", st.Identity, v.identity.Name(), v.identity.KeyHash())
	}
	if st.HeartbeatMillis > 0 {
		v.interval = time.Duration(st.HeartbeatMillis) * time.Millisecond
	}
	switch {
	case v.runOpen && v.gap:
		v.r.Runs[len(v.r.Runs)-1].Ended = "unknown" // its end is in the missing or unreadable leaves
	case v.runOpen:
		n := len(v.r.Runs)
		v.r.Runs[n-1].Ended = "crashed"
		if st.Recovered == nil {
			v.problem(Tampered, "pairing", idx(i), "the previous run has no STOP, and this START does not record a recovery: its end was removed")
		}
	}
	v.gap, v.recovered = false, ""
	if pr := v.pendingRec; pr != nil {
		rec := st.Recovered
		switch {
		case rec == nil:
			v.problem(Tampered, "missing-recovery", idx(i), "segment %s ends without a seal but this START records no recovery", pr.Segment)
		case rec.Segment != pr.Segment || rec.Unsigned != pr.Unsigned || rec.TornOffset != pr.TornOffset || rec.TornBytes != pr.TornBytes:
			v.problem(Tampered, "missing-recovery", idx(i), "START records the end of %s as %d unsigned leaves and %d torn bytes at offset %d; the file shows %s with %d unsigned leaves and %d torn bytes at offset %d",
				rec.Segment, rec.Unsigned, rec.TornBytes, rec.TornOffset, pr.Segment, pr.Unsigned, pr.TornBytes, pr.TornOffset)
		default:
			v.recovered = pr.Segment
		}
		v.pendingRec = nil
	}
	v.runOpen = true
	v.r.Runs = append(v.r.Runs, Run{Start: i, StartTime: fmtTime(l.Time), Ended: "unknown", Recovered: st.Recovered})
	v.intro = &intro{index: i, signer: v.identity, vkey: st.EpochKey, epoch: st.Epoch, kind: LeafStart}
}

// adoptIntro switches to the epoch key a START or KEY leaf introduced.
func (v *verifier) adoptIntro() {
	kv, err := note.NewVerifier(v.intro.vkey)
	if err != nil || kv.Name() != v.origin {
		v.problem(Tampered, "key-chain", idx(v.intro.index), "%s leaf names an unusable epoch key %q", v.intro.kind, v.intro.vkey)
		kv = nil
	}
	v.key, v.keyVKey, v.epoch = kv, v.intro.vkey, v.intro.epoch
	v.intro = nil
}

// checkpointEntry verifies a signed checkpoint against the tree recomputed so far.
func (v *verifier) checkpointEntry(msg []byte) {
	c, err := peekCheckpoint(msg)
	if err != nil {
		v.problem(Tampered, "checkpoint", nil, "checkpoint does not parse: %v", err)
		return
	}
	if c.Origin != v.origin {
		v.problem(Tampered, "origin", idx(c.Size), "checkpoint names origin %q, not %q", c.Origin, v.origin)
		return
	}
	if c.Size != v.tree.Size {
		v.problem(Tampered, "checkpoint", idx(c.Size), "checkpoint for %d leaves stands after leaf %d: leaves were removed, added or moved", c.Size, v.tree.Size)
		// It stands where a checkpoint stood: the structure (a seal after it, the next header's link, a
		// START or KEY before it) still counts it, so that only the moved leaves are reported.
		v.lastCk, v.ckSize = append([]byte(nil), msg...), v.tree.Size
		v.diverged, v.misplaced = true, true
		if v.intro != nil && v.intro.index+1 == v.tree.Size {
			v.adoptIntro()
		}
		return
	}
	if c.Size <= v.ckSize {
		v.problem(Tampered, "rollback", idx(c.Size), "checkpoint for %d leaves follows one for %d", c.Size, v.ckSize)
	}
	v.lastCk, v.ckSize = append([]byte(nil), msg...), c.Size
	v.segCks = append(v.segCks, c.Size)
	signer := v.key
	introducing := v.intro != nil && v.intro.index+1 == c.Size
	if introducing {
		signer = v.intro.signer
	}
	if signer == nil {
		v.problem(Tampered, "key-chain", idx(c.Size), "no epoch key is established for the checkpoint of %d leaves", c.Size)
		return
	}
	if _, err := OpenCheckpoint(msg, signer); err != nil {
		v.problem(Tampered, "signature", idx(c.Size-1), "checkpoint for %d leaves: %v (epoch %d): it was re-signed with another key, or the key chain was altered", c.Size, err, v.epoch)
		if introducing {
			v.adoptIntro()
		}
		return
	}
	if c.Root != v.tree.Root() {
		if v.rootProblem >= 0 {
			v.rootRepeats++ // a consequence of the first mismatch: reported with it
		} else {
			v.rootProblem = len(v.r.Problems)
			v.problem(Tampered, "root", idx(c.Size-1), "checkpoint for %d leaves is validly signed but its root does not match the leaves: one of leaves %d..%d (after the last matching checkpoint) was altered, removed, inserted or reordered",
				c.Size, v.ckGood, c.Size-1)
		}
		v.diverged = true
		if introducing {
			v.adoptIntro()
		}
		return
	}
	if introducing && v.intro.kind == LeafStart && v.recovered != "" {
		// The START's checkpoint signs the tail a crash left unsigned in the segment its recovery names.
		for k := range v.r.Segments {
			if s := &v.r.Segments[k]; s.File == v.recovered {
				s.Verified = s.Leaves
			}
		}
		v.recovered = ""
	}
	if introducing {
		v.adoptIntro()
	}
	v.diverged, v.ckGood = false, c.Size
	v.seg.Checkpoints++
	v.seg.Verified = c.Size - v.seg.FirstIndex
	v.r.Latest = string(v.lastCk)
	v.r.LastTime = fmtTime(v.maxTime)
}

// rootCheck compares the tree with the witnessed checkpoints (the witness, the newest store receipt) when it
// reaches their size.
func (v *verifier) rootCheck() {
	if v.witness != nil && v.tree.Size == v.witness.Size {
		v.witnessSeen = true
		if v.tree.Root() != v.witness.Root {
			v.problem(Tampered, "fork", idx(v.tree.Size-1), "the archive's first %d leaves differ from the witnessed checkpoint: history was rewritten (a fork)", v.witness.Size)
		}
	}
	if rc := v.receipt; rc != nil && v.tree.Size == rc.Checkpoint.Size && rc.Checkpoint.Origin == v.origin {
		v.receiptSeen = true
		if v.tree.Root() != rc.Checkpoint.Root {
			v.problem(Tampered, "fork", idx(v.tree.Size-1), "the archive's first %d leaves differ from those the store acknowledged at %s (receipt): the host's history was rewritten (a fork)",
				rc.Checkpoint.Size, v.r.Receipt.Time)
			v.r.Receipt.Status = "fork"
		}
	}
}

// finish checks what can only be judged at the end.
func (v *verifier) finish() {
	r := v.r
	r.Origin = v.origin
	if v.identity != nil && r.Identity == "" {
		r.Identity = fmt.Sprintf("%s+%08x", v.identity.Name(), v.identity.KeyHash())
	}
	if len(r.Segments) > 0 {
		r.FirstIndex = r.Segments[0].FirstIndex
	}
	for _, s := range r.Segments {
		r.Leaves += s.Leaves
		r.Verified += s.Verified
	}
	if v.intro != nil {
		v.problem(Incomplete, "unsigned-key", idx(v.intro.index), "the last %s leaf is not yet signed", v.intro.kind)
	}
	// A live writer's successor appears with its first block, up to a heartbeat after the seal: only
	// once it is missing for longer does the silence check below report it.
	if v.lastSeal != nil && v.lastSeal.Next && !r.Live {
		v.problem(Incomplete, "missing-segment", nil, "segment %s was sealed with a successor, which is missing: the newest segment was deleted (or the writer crashed right after sealing)", v.lastSealed)
	}
	if v.runOpen {
		n := len(r.Runs)
		if r.Live {
			r.Runs[n-1].Ended = "running"
			if gap := v.opts.Now.Sub(time.Unix(0, v.maxTime)); v.maxTime != 0 && gap > v.interval+v.opts.Grace {
				v.problem(Incomplete, "silence", nil, "the writer holds the archive but has recorded nothing for %s (since %s): it is stopped or frozen",
					gap.Round(time.Second), fmtTime(v.maxTime))
			}
		} else if v.broken {
			r.Runs[n-1].Ended = "unknown" // its end is in the unreadable leaves (reported as damaged)
		} else {
			r.Runs[n-1].Ended = "crashed"
			v.problem(Incomplete, "no-stop", nil, "the archive ends without STOP after leaf %d (%s), the last checkpoint covers %d leaves: the writer crashed or was killed, or its tail was removed",
				v.tree.Size-1, fmtTime(v.maxTime), v.ckSize)
		}
	} else if t := r.Unsigned; t != nil && t.Leaves > 0 {
		// A run ends with STOP, SEAL and their checkpoint in one block: unsigned leaves outside a run are
		// not the tail of a writer that crashed or still writes.
		v.problem(Incomplete, "no-stop", idx(t.First), "leaves %d..%d after the last checkpoint are not signed and no open run explains them: the archive's end was cut or rewritten",
			t.First, t.First+t.Leaves-1)
	}
	if v.witness != nil && !v.witnessSeen {
		v.problem(Tampered, "rollback", nil, "the archive holds %d leaves, but a checkpoint for %d leaves was witnessed before: it was rolled back or truncated", v.tree.Size, v.witness.Size)
	}
	if rc := v.receipt; rc != nil && !v.receiptSeen {
		switch c := rc.Checkpoint; {
		case c.Origin != v.origin:
			v.problem(Tampered, "origin", nil, "the store receipt is for origin %q, not %q: it acknowledges another host's archive", c.Origin, v.origin)
			r.Receipt.Status = "origin"
		case v.tree.Size < c.Size:
			v.problem(Tampered, "truncated", nil, "the archive holds %d leaves, but the store acknowledged %d leaves at %s (receipt): the host's archive was truncated",
				v.tree.Size, c.Size, r.Receipt.Time)
			r.Receipt.Status = "truncated"
		default:
			// The tree passed the receipt's size without reaching it leaf by leaf: the leaves there are
			// missing or unreadable, which is reported as such.
			r.Receipt.Status = ReceiptUnchecked
		}
	}
	r.Status = Pass
	for _, p := range r.Problems {
		if p.Class == Tampered {
			r.Status = Tampered
			break
		}
		r.Status = Incomplete
	}
}
