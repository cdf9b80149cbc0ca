package verify

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/audit/raw"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/sys/unix"
)

// Verdicts, worst last.
const (
	Pass       = "PASS"
	Incomplete = "INCOMPLETE" // authentic as far as it goes, but evidence is missing or the tail is unsigned
	Tampered   = "TAMPERED"   // something was altered, reordered, re-signed, spliced or replayed
)

// Problem codes (docs/format.md, "auditarch verify"): stable identifiers in Problem.Code. Each is
// always reported with the same class.
const (
	// Tampered.
	CodeRoot              = "root"
	CodeSignature         = "signature"
	CodeCheckpoint        = "checkpoint"
	CodeKeyChain          = "key-chain"
	CodeUnsignedKey       = "unsigned-key"
	CodeIdentity          = "identity"
	CodeLeaf              = "leaf"
	CodeDamaged           = "damaged"
	CodeSeal              = "seal"
	CodeMissingCheckpoint = "missing-checkpoint"
	CodeSegmentHeader     = "segment-header"
	CodeSegmentLink       = "segment-link"
	CodeReplay            = "replay"
	CodeOrigin            = "origin"
	CodePairing           = "pairing"
	CodeMissingRecovery   = "missing-recovery"
	CodeFork              = "fork"
	CodeRollback          = "rollback"
	CodeTruncated         = "truncated"
	CodeUnsigned          = "unsigned" // leaves of a block that no checkpoint of the block signs
	CodeEpoch             = "epoch"    // an epoch key signed past its epoch
	CodeLimits            = "limits"   // the archive declares intervals beyond the format's limits
	// Incomplete.
	CodeMissingStart   = "missing-start"
	CodeMissingSegment = "missing-segment"
	CodeUnverified     = "unverified" // leaves after a gap that no key derived from the identity key signs
	CodeNoStop         = "no-stop"
	CodeTornTail       = "torn-tail"
	CodeTornSegment    = "torn-segment"
	CodeSilence        = "silence"
	CodeSerialGap      = "serial-gap"
)

// Segment statuses (SegmentReport.Status).
const (
	SegmentPass = "PASS"
	SegmentFail = "FAIL"
)

// Options configure Dir.
type Options struct {
	// Key is the pinned host identity key. When nil, Dir trusts the identity key named by the archive's
	// first START leaf and says so (Report.Pinned false).
	Key note.Verifier
	// Grace is how much longer than the heartbeat interval a silence may last; default DefaultGrace.
	Grace time.Duration
	// Witness is a signed checkpoint seen earlier (from a previous verify). The archive must still contain
	// it: a smaller archive is a rollback, a different root at that size a fork.
	Witness []byte
	// Receipts are store receipts that opened under the pinned store key (Read, Open). The
	// newest (Newest) is a checkpoint the store holds: an archive with fewer leaves was truncated,
	// a different root at that size is a fork. Report.Receipt says what was found.
	Receipts []receipt.Receipt
	// StoreKey is the pinned store key. With it, Dir takes the leaves missing before the archive's first
	// segment as pruned when the archive's prune record (archive.PruneFile) holds a receipt that opens
	// under it and that the leaves kept reach (Report.Pruned); without it they are missing, as any.
	StoreKey *receipt.CosignVerifier
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
	Start     uint64            `json:"start_index"`
	StartTime string            `json:"start_time"`
	Stop      *uint64           `json:"stop_index,omitempty"`
	StopTime  string            `json:"stop_time,omitempty"`
	Ended     string            `json:"ended"` // stopped, crashed, running, unknown
	Recovered *archive.Recovery `json:"recovered,omitempty"`
}

// LostReport is a LOST leaf: records or events the kernel, the socket or the archive could not keep.
type LostReport struct {
	Index  uint64 `json:"index"`
	Time   string `json:"time"`
	Reason string `json:"reason"`
	Count  uint64 `json:"count"`
	Unit   string `json:"unit"` // raw.UnitRecords (the kernel's lost counter) or raw.UnitEvents
	First  uint32 `json:"first_seq,omitempty"`
	Last   uint32 `json:"last_seq,omitempty"`
	// Since is when an interval with no daemon registered began (reason no_daemon); Time is when it ended.
	Since string `json:"since,omitempty"`
}

// Tail describes leaves after the last checkpoint of the last segment.
type Tail struct {
	Segment string `json:"segment"`
	First   uint64 `json:"first_index"`
	Leaves  uint64 `json:"leaves"`
	Torn    int64  `json:"torn_bytes,omitempty"`
}

// Report is Dir's verdict on one archive directory.
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
	Partial    uint64          `json:"partial_events"` // events archived with some of their records missing (raw.Event.Partial)
	Unsigned   *Tail           `json:"unsigned_tail,omitempty"`
	Latest     string          `json:"latest_checkpoint,omitempty"` // the last valid signed checkpoint
	Receipt    *ReceiptReport  `json:"receipt,omitempty"`           // the newest store receipt, when given
	Pruned     *PrunedReport   `json:"pruned,omitempty"`            // the leaves retention removed, when the archive has a prune record
	// Omitted counts what the report does not list: problems beyond the first 1000, LOST leaves and runs
	// beyond the first 10000 (hostile archives can hold millions). The status counts them.
	Omitted Omitted `json:"omitted,omitzero"`
}

// Omitted counts what a Report leaves out of its lists.
type Omitted struct {
	Problems int    `json:"problems,omitempty"`
	Class    string `json:"class,omitempty"` // the worst class among the omitted problems
	Lost     int    `json:"lost,omitempty"`
	Runs     int    `json:"runs,omitempty"`
}

// ReceiptReport is what Dir found about the newest store receipt (Options.Receipts).
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

// verifier holds the state of one pass over an archive. Stream drives it block by block; Dir feeds
// an archive directory's files into a Stream, so the CLI and the store run the same checks.
//
// Trust is derived, never declared: the only key the verifier starts from is the identity key (pinned,
// or named by the first START when nothing is pinned). An epoch key is trusted only once a START or KEY
// leaf that names it is covered by a checkpoint that verified under a trusted key. After a gap (missing
// segments, unreadable blocks, a missing start) nothing is trusted until the next START: the keys and
// checkpoints that segment headers name are not evidence, and the leaves in between are reported as
// unverified, never counted as verified.
type verifier struct {
	opts Options
	r    *Report

	origin   string
	identity note.Verifier

	tree    archive.Frontier
	started bool // tree holds a state to continue from
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
	kernel      archive.KernelRange
	// lastCk and ckSize are the last checkpoint entry standing where one must (the structure the seal,
	// the next header and a recovery refer to); its signature and root are checked on their own.
	lastCk []byte
	ckSize uint64

	// key is the epoch key in charge, derived through the chain from the identity key; nil while
	// nothing after a gap has been chained again.
	key        note.Verifier
	keyVKey    string
	epoch      uint64
	epochStart int64         // time of the leaf that introduced key
	epochLen   time.Duration // the epoch length the run declared, at most MaxEpoch
	intro      *intro        // a START or KEY leaf waiting for the checkpoint that must follow it
	interval   time.Duration // the heartbeat interval the run declared, at most MaxHeartbeat
	leafMax    int64         // the latest leaf time since the last checkpoint (the epoch bound)
	ckTime     int64         // lastTime at the last checkpoint that verified (coverage is judged by signed leaves)
	blockLeafs int           // leaves in the block being read
	unverified int           // index in Report.Problems of the open unverified stretch (-1: none)
	unvFirst   uint64
	sigProblem int    // index in Report.Problems of the first signature failure under the current key (-1: none)
	sigRepeats int    // later failures under the same key
	sigFirst   string // that problem's own message
	tampered   int    // tampering problems raised, listed or not

	lastTime   int64 // time of the latest leaf, in the wall clock's current frame (silences)
	maxTime    int64
	runOpen    bool
	runStart   uint64
	stop       *stopMark // the STOP that ended the newest run, until the next START (nil: none)
	lastSeal   *archive.Seal
	lastSealed string
	pendingRec *archive.Recovery // what the next START must record about the previous segment's end
	serials    serialTracker
	bootID     string      // of the open (or last) run's START: runs of one boot share the kernel's serials
	missing    [][2]uint64 // leaf ranges [from, to) known to be missing

	witness     *archive.Checkpoint
	witnessSeen bool
	receipt     *receipt.Receipt // the newest store receipt
	receiptSeen bool
	prune       *pruneState // the prune record, while its receipt is to be judged

	seg     *SegmentReport
	segLast int64 // time of the segment's last leaf, formatted into seg.LastTime once the segment is read
	segCks  uint64
	sealIdx int64
	leaf    archive.Leaf
}

// stopMark is a STOP leaf: its index and time, and whether the checkpoint that first covers it verified.
type stopMark struct {
	Index    uint64 `json:"index"`
	Time     int64  `json:"time"`
	Verified bool   `json:"verified,omitempty"`
}

type intro struct {
	index  uint64
	time   int64
	signer note.Verifier
	vkey   string
	epoch  uint64
	kind   archive.LeafKind
}

func newVerifier(opts Options) (*verifier, error) {
	if opts.Grace <= 0 {
		opts.Grace = archive.DefaultGrace
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	r := &Report{Segments: []SegmentReport{}, Problems: []Problem{}, Runs: []Run{}, Lost: []LostReport{}}
	v := &verifier{opts: opts, r: r, interval: archive.DefaultHeartbeat, epochLen: archive.MaxEpoch, unverified: -1, sigProblem: -1,
		lastTime: noTime, ckTime: noTime}
	if opts.Key != nil {
		v.identity, v.origin, r.Pinned = opts.Key, opts.Key.Name(), true
	}
	if opts.Witness != nil {
		c, err := archive.PeekCheckpoint(opts.Witness)
		if err != nil {
			return nil, fmt.Errorf("witness checkpoint: %w", err)
		}
		v.witness = &c
	}
	if rc, ok := receipt.Newest(opts.Receipts); ok {
		v.receipt = &rc
		r.Receipt = &ReceiptReport{Size: rc.Checkpoint.Size, Time: rc.Time.UTC().Format(time.RFC3339), Status: ReceiptConsistent}
	}
	return v, nil
}

// Dir checks the archive in dir: every leaf and root recomputed, every checkpoint's signature by the
// epoch key that must sign it, the epoch key chain back to the identity key, index contiguity and
// segment linkage, seals, START/STOP pairing, silences, kernel serial gaps and origin. It feeds the
// segment files, in name order, into a Stream: the store runs exactly these checks. It returns an
// error only when dir cannot be read; everything about the archive's content is in the Report.
func Dir(dir string, opts Options) (*Report, error) {
	files, err := archive.ListSegments(dir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		return nil, fmt.Errorf("verify: no segments in %s", dir)
	}
	v, err := newVerifier(opts)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	v.r.Dir, v.r.Live = dir, isLive(dir)
	if rec, err := archive.ReadPruneRecord(dir); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	} else if rec != nil {
		v.setPrune(rec)
	}
	s := &Stream{v: v}
	buf := make([]byte, 1<<20)
	for _, path := range files {
		if _, err := s.WriteFile(path, buf); err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
	}
	s.Finish()
	return v.r, nil
}

// isLive reports whether a writer holds dir's lock.
func isLive(dir string) bool {
	f, err := os.Open(filepath.Join(dir, archive.LockFile))
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

// noTime is a time no leaf has yet: any int64, 0 included, is a leaf time an archive may hold.
const noTime = math.MinInt64

// Bounds on a report's lists: hostile bytes can make a problem or a LOST leaf of every few bytes a block
// decompresses to, so beyond these the report counts instead of listing (memory stays bounded).
const (
	maxProblems = 1000
	maxListed   = 10000 // LOST leaves and runs
)

func (v *verifier) problem(class, code string, index *uint64, format string, args ...any) {
	if class == Tampered {
		v.tampered++
	}
	if v.seg != nil {
		v.seg.Problems++
		if class == Tampered {
			v.seg.Status = SegmentFail
		}
	}
	if len(v.r.Problems) >= maxProblems {
		v.r.Omitted.Problems++
		if class == Tampered || v.r.Omitted.Class == "" {
			v.r.Omitted.Class = class
		}
		return
	}
	p := Problem{Class: class, Code: code, Index: index, Message: fmt.Sprintf(format, args...)}
	if v.seg != nil {
		p.Segment = v.seg.File
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

// breakChain forgets every key: what follows a gap is trusted again only from the next START.
func (v *verifier) breakChain() {
	v.key, v.keyVKey, v.intro, v.sigProblem = nil, "", nil, -1
}

// beginSegment checks a segment's header against what came before and starts its report. It returns
// false when the segment's entries cannot be checked (the reason is reported); closeSegment ends it.
func (v *verifier) beginSegment(name string, h archive.SegmentHeader, herr error, last bool) bool {
	v.r.Segments = append(v.r.Segments, SegmentReport{File: name, Status: SegmentPass})
	v.seg, v.segLast = &v.r.Segments[len(v.r.Segments)-1], 0
	if herr != nil {
		var ce *archive.CorruptError
		if errors.As(herr, &ce) && ce.Torn && last {
			v.seg.Status = SegmentFail
			v.problem(Incomplete, CodeTornSegment, nil, "segment is cut short inside its header (the writer publishes a segment only with a durable first block, so the file was truncated): %v", herr)
			return false
		}
		v.problem(Tampered, CodeSegmentHeader, nil, "segment header unreadable: %v", herr)
		return false
	}
	v.seg.Segment, v.seg.FirstIndex = h.Segment, h.FirstIndex
	if v.origin == "" {
		v.origin = h.Origin
	}
	if h.Origin != v.origin {
		v.problem(Tampered, CodeOrigin, nil, "segment belongs to origin %q, not %q: another host's data was spliced in", h.Origin, v.origin)
		return false
	}
	// Segment numbers count up by one (a run continues its predecessor's numbering), so a gap in them
	// tells a deleted segment from a header that lies about where its leaves start.
	switch {
	case v.started && h.FirstIndex < v.tree.Size && (!v.diverged || h.Segment <= v.segNo):
		v.problem(Tampered, CodeReplay, nil, "segment %d repeats leaves %d..%d already seen: an older segment was replayed",
			h.Segment, h.FirstIndex, v.tree.Size-1)
		return false
	case !archive.NameMatches(name, h.FirstIndex):
		v.problem(Tampered, CodeSegmentHeader, nil, "the file name does not name the segment's first leaf %d (seg-<first leaf, 20 digits>-<UTC start>.aseg): the file was renamed", h.FirstIndex)
		return false
	case !v.started || v.broken:
		if !v.started && h.FirstIndex == 0 {
			v.prune, v.r.Pruned = nil, nil // nothing was removed: a prune record written before a crash
		}
		if !v.started && h.FirstIndex > 0 && v.applyPrune(h) {
			v.gap = true // the run open at the prune point started in the pruned leaves: its pairing is unknown
		} else if !v.started && h.FirstIndex > 0 {
			v.problem(Incomplete, CodeMissingStart, nil, "the archive starts at leaf %d: leaves 0..%d are missing", h.FirstIndex, h.FirstIndex-1)
			v.gap = true
			v.missing = append(v.missing, [2]uint64{0, h.FirstIndex})
		}
		// After damage, the gap up to the next segment is the unreadable rest (reported).
		if v.started && h.FirstIndex > v.tree.Size {
			if h.Segment > v.segNo+1 {
				v.problem(Incomplete, CodeMissingSegment, nil, "leaves %d..%d are missing before this segment: a segment was deleted", v.tree.Size, h.FirstIndex-1)
			}
			v.missing = append(v.missing, [2]uint64{v.tree.Size, h.FirstIndex})
		}
		if !v.adoptHeader(h) {
			return false
		}
	case h.FirstIndex > v.tree.Size && (h.Segment > v.segNo+1 || v.pendingRec != nil):
		how := fmt.Sprintf("segments %d..%d were deleted", v.segNo+1, h.Segment-1)
		if h.Segment == v.segNo+1 {
			how = "the end of the segment before, with its seal, was cut"
		}
		v.problem(Incomplete, CodeMissingSegment, nil, "leaves %d..%d are missing before this segment: %s", v.tree.Size, h.FirstIndex-1, how)
		v.missing = append(v.missing, [2]uint64{v.tree.Size, h.FirstIndex})
		if !v.adoptHeader(h) {
			return false
		}
		v.gap = true
	default:
		if h.Segment != v.segNo+1 {
			v.problem(Tampered, CodeSegmentHeader, nil, "segment header numbers it %d, after segment %d", h.Segment, v.segNo)
			h.Segment = v.segNo + 1
		}
		switch f, err := archive.DecodeFrontier(h.FirstIndex, h.Frontier); {
		case v.diverged && err == nil:
			v.tree, v.diverged, v.ckGood = f, false, h.FirstIndex
		case h.FirstIndex != v.tree.Size:
			v.problem(Tampered, CodeSegmentHeader, nil, "segment header puts its first leaf at %d, but the segment before ends before leaf %d and no segment is missing in between",
				h.FirstIndex, v.tree.Size)
			v.seg.FirstIndex = v.tree.Size
		case fmt.Sprint(h.Frontier) != fmt.Sprint(v.tree.Encode()):
			v.problem(Tampered, CodeSegmentHeader, nil, "segment header's tree frontier does not match the leaves before it")
		case fmt.Sprint(h.PrevKernelTimes) != fmt.Sprint(v.kernel.Header()):
			v.problem(Tampered, CodeSegmentHeader, nil, "segment header gives the kernel time span of the segment before as %v, its events span %v: search would skip the wrong segments",
				h.PrevKernelTimes, v.kernel.Header())
		}
		if h.PrevCheckpoint != string(v.lastCk) {
			v.problem(Tampered, CodeSegmentLink, nil, "segment header's previous checkpoint is not the last checkpoint before it")
		}
		if h.EpochKey != "" && v.key != nil && h.EpochKey != v.keyVKey {
			v.problem(Tampered, CodeSegmentHeader, nil, "segment header names an epoch key that the key chain does not")
		}
	}
	v.segNo, v.kernel, v.misplaced = h.Segment, archive.KernelRange{}, false
	v.rootProblem, v.rootRepeats = -1, 0
	v.lastSeal = nil
	v.segCks = 0
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
	case archive.EntryLeaf:
		v.leafEntry(p, *first)
		*first = false
		v.blockLeafs++
	case archive.EntryCheckpoint:
		v.checkpointEntry(p)
	default:
		v.problem(Tampered, CodeDamaged, nil, "a second header inside the segment")
	}
}

// endBlock is called after the entries of each block of a segment. A writer ends every block that holds
// leaves with a checkpoint covering them (docs/format.md, "Segments"), so no durable leaf is ever
// unsigned: leaves that no checkpoint of their block covers were written by someone else.
func (v *verifier) endBlock(off int64) {
	if v.blockLeafs > 0 && v.tree.Size > v.ckSize && v.seg != nil {
		v.problem(Tampered, CodeUnsigned, idx(v.ckSize), "leaves %d..%d in the block at offset %d are not covered by a checkpoint of their block (a writer signs every block it makes durable): they were appended without the epoch key, or their checkpoint was removed",
			v.ckSize, v.tree.Size-1, off)
		v.unverifiedFrom(v.ckSize, v.tree.Size)
		v.lastTime = v.ckTime // their times say nothing: a silence is judged from the last signed leaf
	}
	v.blockLeafs = 0
}

// endSegment judges a segment once its entries are read: the seal, and what the next START must record
// about an unsealed end. torn is the length of the incomplete block at its end; last is true for the
// archive's newest segment.
func (v *verifier) endSegment(name string, torn int64, last bool) {
	if v.rootRepeats > 0 && v.rootProblem < len(v.r.Problems) {
		v.r.Problems[v.rootProblem].Message += fmt.Sprintf("; the segment's %d later checkpoints disagree too, as they must once a leaf before them differs", v.rootRepeats)
	}
	v.seg.Leaves = v.tree.Size - v.seg.FirstIndex
	v.seg.Sealed = v.sealIdx >= 0 && v.ckSize == v.tree.Size && uint64(v.sealIdx) == v.tree.Size-1
	if v.sealIdx >= 0 && !v.seg.Sealed && !v.broken {
		v.problem(Tampered, CodeSeal, idx(uint64(v.sealIdx)), "leaves follow the seal, or the seal is not signed by a checkpoint")
	}
	if last && torn > 0 && !v.r.Live {
		v.problem(Incomplete, CodeTornTail, nil, "the segment ends inside a block (%d bytes): the writer stopped mid-write, or the tail was cut; the leaves before it are intact", torn)
	}
	if !v.seg.Sealed {
		if v.broken {
			v.pendingRec = nil // its end is unreadable (reported): the next START cannot be held to it
		} else {
			if v.pendingRec == nil {
				v.pendingRec = &archive.Recovery{Segment: name}
			}
			v.pendingRec.Unsigned = v.tree.Size - v.ckSize
		}
		if last && (v.tree.Size > v.ckSize || torn > 0) {
			v.r.Unsigned = &Tail{Segment: name, First: v.ckSize, Leaves: v.tree.Size - v.ckSize, Torn: torn}
		}
	} else {
		v.pendingRec = nil
		v.lastSealed = name
	}
}

// adoptHeader takes the tree and the last checkpoint from h: the segments before it are missing or
// unreadable, so its header is all there is to continue from. Its epoch key is not: a header is not
// signed, so until a START re-establishes the chain nothing signed after the gap is trusted.
func (v *verifier) adoptHeader(h archive.SegmentHeader) bool {
	f, err := archive.DecodeFrontier(h.FirstIndex, h.Frontier)
	if err != nil {
		v.problem(Tampered, CodeSegmentHeader, nil, "segment header: %v", err)
		return false
	}
	v.tree, v.started, v.broken, v.diverged = f, true, false, false
	v.lastCk, v.ckSize = []byte(h.PrevCheckpoint), h.FirstIndex
	v.ckGood = h.FirstIndex
	v.breakChain()
	v.lastSeal, v.pendingRec, v.stop = nil, nil, nil    // what followed a STOP before the gap is not known
	v.lastTime, v.maxTime, v.ckTime = noTime, 0, noTime // the time up to this segment is in the missing leaves, not a silence
	v.serials = serialTracker{}
	return true
}

// unverifiedFrom records that leaves [from, to) are not covered by any checkpoint the chain vouches for.
// Consecutive stretches make one problem.
func (v *verifier) unverifiedFrom(from, to uint64) {
	if to <= from {
		return
	}
	if v.unverified >= 0 && v.unverified < len(v.r.Problems) {
		p := &v.r.Problems[v.unverified]
		p.Message = fmt.Sprintf("leaves %d..%d are not covered by any checkpoint signed by a key derived from the identity key (they follow a gap, or their signatures failed): they cannot be told from forgeries and are not counted as verified", v.unvFirst, to-1)
		return
	}
	v.unvFirst = from
	v.unverified = len(v.r.Problems)
	v.problem(Incomplete, CodeUnverified, idx(from), "leaves %d..%d are not covered by any checkpoint signed by a key derived from the identity key (they follow a gap, or their signatures failed): they cannot be told from forgeries and are not counted as verified", from, to-1)
}

// leafEntry verifies one leaf.
func (v *verifier) leafEntry(p []byte, firstInSegment bool) {
	i := v.tree.Size
	v.tree.Append(p)
	v.rootCheck()
	if v.intro != nil && v.intro.index+1 < v.tree.Size {
		v.problem(Tampered, CodeUnsignedKey, idx(v.intro.index), "the %s leaf is not followed by the checkpoint that must sign it: checkpoints were removed", v.intro.kind)
		v.intro = nil
		v.breakChain()
	}
	if v.sealIdx >= 0 {
		v.problem(Tampered, CodeSeal, idx(i), "leaf after the segment's seal")
	}
	l := &v.leaf
	if err := archive.DecodeLeaf(p, l); err != nil {
		v.problem(Tampered, CodeLeaf, idx(i), "leaf does not decode: %v", err)
		return
	}
	if v.seg.FirstTime == "" {
		v.seg.FirstTime = fmtTime(l.Time)
		if v.r.FirstTime == "" {
			v.r.FirstTime = v.seg.FirstTime
		}
	}
	v.segLast = l.Time
	if firstInSegment && v.pendingRec != nil && l.Kind != archive.LeafStart {
		v.problem(Tampered, CodeMissingRecovery, idx(i), "the previous segment %s ends without a seal, and this segment does not begin with the START that records it", v.pendingRec.Segment)
		v.pendingRec = nil
	}
	v.silence(i, l)
	if l.Time > v.leafMax {
		v.leafMax = l.Time
	}
	if !l.Kind.Control() {
		v.kernel.Add(archive.EventKernelTime(p))
	}
	switch l.Kind {
	case archive.LeafEvent:
		if v.runOpen && !v.gap {
			v.serials.event(l.Event.Serial, i, l.Time)
		}
		if l.Event.Partial() {
			v.r.Partial++
		}
	case archive.LeafLost:
		ev := &l.Event
		if len(v.r.Lost) < maxListed {
			lr := LostReport{Index: i, Time: fmtTime(l.Time), Reason: ev.Lost.Reason.String(), Count: ev.Lost.Count, Unit: ev.Lost.Reason.Unit(), First: ev.Lost.First, Last: ev.Lost.Last}
			if ev.Lost.Reason == raw.LostUnregistered {
				lr.Since = fmtTime(ev.Time().UnixNano())
			}
			v.r.Lost = append(v.r.Lost, lr)
		} else {
			v.r.Omitted.Lost++
		}
		v.serials.lost(ev.Lost.First, ev.Lost.Last, ev.Lost.Count)
	case archive.LeafStart:
		v.start(i, l)
	case archive.LeafStop:
		if !v.runOpen && !v.gap {
			v.problem(Tampered, CodePairing, idx(i), "STOP without a START")
		}
		v.endRun(false)
		v.runOpen, v.stop = false, &stopMark{Index: i, Time: l.Time}
		if n := len(v.r.Runs); n > 0 {
			v.r.Runs[n-1].Stop, v.r.Runs[n-1].StopTime = idx(i), fmtTime(l.Time)
		}
		v.endedRun("stopped")
	case archive.LeafKey:
		var k archive.Key
		if err := json.Unmarshal(l.Body, &k); err != nil {
			v.problem(Tampered, CodeLeaf, idx(i), "KEY leaf: %v", err)
			return
		}
		kv, err := note.NewVerifier(k.EpochKey)
		if err != nil || kv.Name() != v.origin {
			v.problem(Tampered, CodeKeyChain, idx(i), "KEY leaf names an unusable key %q", k.EpochKey)
			return
		}
		if v.key != nil && k.Epoch != v.epoch+1 {
			v.problem(Tampered, CodeKeyChain, idx(i), "KEY leaf introduces epoch %d after epoch %d", k.Epoch, v.epoch)
		}
		// The identity key signs every re-key (the checkpoint after a KEY leaf), as it signs every START:
		// whoever steals an epoch key cannot introduce keys of their own and so cannot sign past its epoch.
		v.intro = &intro{index: i, time: l.Time, signer: v.identity, vkey: k.EpochKey, epoch: k.Epoch, kind: archive.LeafKey}
	case archive.LeafSeal:
		var sl archive.Seal
		if err := json.Unmarshal(l.Body, &sl); err != nil {
			v.problem(Tampered, CodeLeaf, idx(i), "SEAL leaf: %v", err)
			return
		}
		v.sealIdx = int64(i)
		if sl.FirstIndex != v.seg.FirstIndex || sl.Leaves != i+1-v.seg.FirstIndex || sl.Segment != v.seg.Segment {
			v.problem(Tampered, CodeSeal, idx(i), "the seal describes segment %d with leaves %d..%d, the file holds segment %d with leaves %d..%d",
				sl.Segment, sl.FirstIndex, sl.FirstIndex+sl.Leaves-1, v.seg.Segment, v.seg.FirstIndex, i)
		}
		if sl.Checkpoints != v.segCks && !v.misplaced {
			v.problem(Tampered, CodeMissingCheckpoint, idx(i), "the seal counts %d checkpoints before it, the segment holds %d: checkpoints were removed or added",
				sl.Checkpoints, v.segCks)
		}
		v.lastSeal = &sl
	case archive.LeafHeartbeat, archive.LeafClock, archive.LeafPolicy:
	default:
		v.problem(Tampered, CodeLeaf, idx(i), "unknown leaf kind %d", l.Kind)
	}
}

// silence reports a coverage gap before leaf i: while a run is open, a writer records a leaf at least
// every heartbeat interval, so a longer gap means it was stopped, frozen or its leaves removed. A CLOCK
// leaf gives the step of the wall clock against the monotonic one, which the gap is corrected by: a
// freeze hidden by stepping the clock back shows. A START after a run that did not stop is the crash's
// downtime.
func (v *verifier) silence(i uint64, l *archive.Leaf) {
	t := l.Time
	if v.runOpen && v.lastTime != noTime && !v.gap {
		gap := time.Duration(t - v.lastTime)
		how := "the daemon was stopped, frozen or its records removed"
		if l.Kind == archive.LeafClock {
			var c archive.Clock
			if json.Unmarshal(l.Body, &c) == nil {
				gap -= time.Duration(c.StepNanos)
				how = fmt.Sprintf("the wall clock was stepped by %s meanwhile, so the leaves' times hide the gap", time.Duration(c.StepNanos).Round(time.Millisecond))
			}
		}
		if l.Kind == archive.LeafStart {
			how = "the previous run ended without STOP (crashed or killed) and this run started only then"
		}
		if gap > v.interval+v.opts.Grace {
			v.problem(Incomplete, CodeSilence, idx(i), "nothing was recorded for %s before this leaf (%s..%s): %s",
				gap.Round(time.Millisecond), fmtTime(v.lastTime), fmtTime(t), how)
		}
	}
	if l.Kind == archive.LeafClock || v.lastTime == noTime || t > v.lastTime {
		v.lastTime = t
	}
	if t > v.maxTime {
		v.maxTime = t
	}
}

// endRun reports the kernel serials skipped with no LOST leaf to account for them: at a STOP (a run that
// stops cleanly has reported every gap of its boot so far), at the START of another boot, and at the end.
// The next run of the same boot continues from the last serial (start). live: the run is still being
// written, and the newest gaps may still be reported by the writer.
func (v *verifier) endRun(live bool) {
	if v.gap {
		v.serials = serialTracker{} // serials after a gap cannot be related to those before it
		return
	}
	if !v.runOpen {
		return
	}
	cut := int64(0)
	if live {
		cut = v.maxTime - int64(archive.DefaultHeartbeat)
	}
	if n, ranges, at, text := v.serials.report(cut); n > 0 {
		v.problem(Incomplete, CodeSerialGap, idx(at), "%d kernel serials in %d ranges are neither archived nor counted by a LOST leaf: %s",
			n, ranges, text)
	}
	v.serials.clear()
}

// start handles a START leaf: a new run, signed by the identity key, naming its first epoch key.
func (v *verifier) start(i uint64, l *archive.Leaf) {
	var st archive.Start
	if err := json.Unmarshal(l.Body, &st); err != nil {
		v.problem(Tampered, CodeLeaf, idx(i), "START leaf: %v", err)
		return
	}
	if st.Origin != v.origin {
		v.problem(Tampered, CodeOrigin, idx(i), "START names origin %q, not %q", st.Origin, v.origin)
	}
	id, err := note.NewVerifier(st.Identity)
	switch {
	case err != nil:
		v.problem(Tampered, CodeIdentity, idx(i), "START names an unusable identity key: %v", err)
		return
	case v.identity == nil:
		v.identity = id
		v.r.Identity = st.Identity
	case id.Name() != v.identity.Name() || id.KeyHash() != v.identity.KeyHash():
		v.problem(Tampered, CodeIdentity, idx(i), "START names identity key %q, which is not the pinned key %s+%08x", st.Identity, v.identity.Name(), v.identity.KeyHash())
	}
	v.interval, v.epochLen = archive.DefaultHeartbeat, archive.MaxEpoch
	if hb := time.Duration(st.HeartbeatMillis) * time.Millisecond; hb > 0 {
		v.interval = min(hb, archive.MaxHeartbeat)
	}
	if ep := time.Duration(st.EpochMillis) * time.Millisecond; ep > 0 {
		v.epochLen = min(ep, archive.MaxEpoch)
	}
	if time.Duration(st.HeartbeatMillis)*time.Millisecond > archive.MaxHeartbeat || time.Duration(st.EpochMillis)*time.Millisecond > archive.MaxEpoch {
		v.problem(Tampered, CodeLimits, idx(i), "START declares a heartbeat of %d ms and epochs of %d ms; the format allows at most %s and %s (a writer refuses more): silences and key lifetimes are judged by those limits",
			st.HeartbeatMillis, st.EpochMillis, archive.MaxHeartbeat, archive.MaxEpoch)
	}
	// (A stream resumed from a snapshot has no report of the run it resumed in.)
	switch {
	case v.runOpen && v.gap:
		v.endedRun("unknown") // its end is in the missing or unreadable leaves
	case v.runOpen:
		v.endedRun("crashed")
		if st.Recovered == nil {
			v.problem(Tampered, CodePairing, idx(i), "the previous run has no STOP, and this START does not record a recovery: its end was removed")
		} else {
			v.problem(Incomplete, CodeNoStop, idx(v.runStart), "the run started at leaf %d ended without STOP (crashed or killed) before leaf %d; the next run started at %s",
				v.runStart, i, fmtTime(l.Time))
		}
	}
	if st.BootID == "" || st.BootID != v.bootID || v.gap {
		// Kernel serials restart at boot: only a run of the same boot continues the previous one's, and
		// may still account for the serials a killed run left (its LOST leaves, written on recovery).
		v.endRun(false)
		v.serials = serialTracker{}
	}
	v.bootID = st.BootID
	v.gap = false
	if pr := v.pendingRec; pr != nil {
		rec := st.Recovered
		switch {
		case rec == nil:
			v.problem(Tampered, CodeMissingRecovery, idx(i), "segment %s ends without a seal but this START records no recovery", pr.Segment)
		case rec.Segment != pr.Segment || rec.Unsigned != pr.Unsigned || rec.TornOffset != pr.TornOffset || rec.TornBytes != pr.TornBytes:
			v.problem(Tampered, CodeMissingRecovery, idx(i), "START records the end of %s as %d unsigned leaves and %d torn bytes at offset %d; the file shows %s with %d unsigned leaves and %d torn bytes at offset %d",
				rec.Segment, rec.Unsigned, rec.TornBytes, rec.TornOffset, pr.Segment, pr.Unsigned, pr.TornBytes, pr.TornOffset)
		}
		v.pendingRec = nil
	}
	v.runOpen, v.runStart, v.stop = true, i, nil
	if len(v.r.Runs) < maxListed {
		v.r.Runs = append(v.r.Runs, Run{Start: i, StartTime: fmtTime(l.Time), Ended: "unknown", Recovered: st.Recovered})
	} else {
		v.r.Omitted.Runs++
		v.r.Runs = v.r.Runs[:len(v.r.Runs)-1] // keep the newest run last, so that its end is recorded
		v.r.Runs = append(v.r.Runs, Run{Start: i, StartTime: fmtTime(l.Time), Ended: "unknown", Recovered: st.Recovered})
	}
	v.intro = &intro{index: i, time: l.Time, signer: v.identity, vkey: st.EpochKey, epoch: st.Epoch, kind: archive.LeafStart}
}

// endedRun records how the open run ended, when its report is there.
func (v *verifier) endedRun(how string) {
	if n := len(v.r.Runs); n > 0 {
		v.r.Runs[n-1].Ended = how
	}
}

// adoptIntro switches to the epoch key a START or KEY leaf introduced; trusted says whether the
// checkpoint that covers the leaf verified under a trusted key. An untrusted introduction leaves no key.
func (v *verifier) adoptIntro(trusted bool) {
	in := v.intro
	v.intro = nil
	if !trusted {
		v.breakChain()
		return
	}
	kv, err := note.NewVerifier(in.vkey)
	if err != nil || kv.Name() != v.origin {
		v.problem(Tampered, CodeKeyChain, idx(in.index), "%s leaf names an unusable epoch key %q", in.kind, in.vkey)
		v.breakChain()
		return
	}
	v.key, v.keyVKey, v.epoch, v.epochStart = kv, in.vkey, in.epoch, in.time
	v.unverified, v.sigProblem = -1, -1
}

// checkpointEntry verifies a signed checkpoint against the tree recomputed so far. It verifies the leaves
// since the checkpoint before it when it is signed by the key the chain says must sign it: the identity
// key for the checkpoint of a START or a KEY, and otherwise the epoch key in charge (within its epoch).
func (v *verifier) checkpointEntry(msg []byte) {
	from := v.ckSize
	leafMax := v.leafMax
	v.leafMax = 0
	if len(msg) > archive.MaxNote {
		v.problem(Tampered, CodeCheckpoint, nil, "checkpoint of %d bytes is beyond the format's limit of %d", len(msg), archive.MaxNote)
		return
	}
	c, err := archive.PeekCheckpoint(msg)
	if err != nil {
		v.problem(Tampered, CodeCheckpoint, nil, "checkpoint does not parse: %v", err)
		return
	}
	if c.Origin != v.origin {
		v.problem(Tampered, CodeOrigin, idx(c.Size), "checkpoint names origin %q, not %q", c.Origin, v.origin)
		return
	}
	introducing := v.intro != nil && v.intro.index+1 == v.tree.Size
	if c.Size != v.tree.Size {
		v.problem(Tampered, CodeCheckpoint, idx(c.Size), "checkpoint for %d leaves stands after leaf %d: leaves were removed, added or moved", c.Size, v.tree.Size)
		// It stands where a checkpoint stood: the structure (a seal after it, the next header's link, a
		// START or KEY before it) still counts it, so that only the moved leaves are reported.
		v.lastCk, v.ckSize = append([]byte(nil), msg...), v.tree.Size
		v.diverged, v.misplaced = true, true
		if introducing {
			v.adoptIntro(false)
		}
		v.unverifiedFrom(from, v.tree.Size)
		return
	}
	if c.Size <= v.ckSize {
		v.problem(Tampered, CodeRollback, idx(c.Size), "checkpoint for %d leaves follows one for %d", c.Size, v.ckSize)
	}
	v.lastCk, v.ckSize = append([]byte(nil), msg...), c.Size
	v.segCks++
	signer, byIdentity := v.key, false
	if introducing {
		signer, byIdentity = v.intro.signer, true
	}
	if signer == nil {
		// After a gap: no key derived from the identity key is in charge until the next START.
		if introducing {
			v.adoptIntro(false)
		}
		v.unverifiedOrAttested(from, c.Size)
		return
	}
	_, serr := archive.OpenCheckpoint(msg, signer)
	if serr != nil {
		if v.sigProblem >= 0 {
			// The same key fails again: a consequence of the first failure, reported with it.
			v.sigRepeats++
			v.lastTime = v.ckTime
			if v.sigProblem < len(v.r.Problems) {
				v.r.Problems[v.sigProblem].Message = fmt.Sprintf("%s; %d later checkpoints signed for this key fail too", v.sigFirst, v.sigRepeats)
			}
			if introducing {
				v.adoptIntro(false)
			}
			v.unverifiedFrom(from, c.Size)
			return
		}
		v.lastTime = v.ckTime
		v.sigProblem, v.sigRepeats = len(v.r.Problems), 0
		v.problem(Tampered, CodeSignature, idx(c.Size-1), "checkpoint for %d leaves: %v (epoch %d): it was re-signed with another key, or the key chain was altered", c.Size, serr, v.epoch)
		if v.sigProblem < len(v.r.Problems) {
			v.sigFirst = v.r.Problems[v.sigProblem].Message
		}
		if introducing {
			v.adoptIntro(false)
		}
		v.unverifiedFrom(from, c.Size)
		return
	}
	if !byIdentity && leafMax > v.epochStart+int64(v.epochLen+archive.EpochSlack) {
		v.problem(Tampered, CodeEpoch, idx(c.Size-1), "checkpoint for %d leaves is signed by the key of epoch %d, introduced at %s, but covers a leaf of %s, after that epoch ended (%s later at most): the key was used after it should have been erased (stolen)",
			c.Size, v.epoch, fmtTime(v.epochStart), fmtTime(leafMax), v.epochLen+archive.EpochSlack)
		if introducing {
			v.adoptIntro(false)
		}
		v.breakChain()
		v.unverifiedFrom(from, c.Size)
		return
	}
	if c.Root != v.tree.Root() {
		if v.rootProblem >= 0 {
			v.rootRepeats++ // a consequence of the first mismatch: reported with it
		} else {
			v.rootProblem = len(v.r.Problems)
			v.problem(Tampered, CodeRoot, idx(c.Size-1), "checkpoint for %d leaves is validly signed but its root does not match the leaves: one of leaves %d..%d (after the last matching checkpoint) was altered, removed, inserted or reordered",
				c.Size, v.ckGood, c.Size-1)
		}
		v.diverged = true
		if introducing {
			v.adoptIntro(false)
		}
		return
	}
	if introducing {
		v.adoptIntro(true)
	}
	if st := v.stop; st != nil && from <= st.Index && st.Index < c.Size {
		st.Verified = true
	}
	v.diverged, v.ckGood, v.ckTime = false, c.Size, v.lastTime
	v.seg.Checkpoints++
	if from < v.seg.FirstIndex {
		from = v.seg.FirstIndex
	}
	if c.Size > from {
		v.seg.Verified += c.Size - from
	}
	v.r.Latest = string(v.lastCk)
	v.r.LastTime = fmtTime(v.maxTime)
}

// rootCheck compares the tree with the witnessed checkpoints (the witness, the newest store receipt) when it
// reaches their size.
func (v *verifier) rootCheck() {
	if v.witness != nil && v.tree.Size == v.witness.Size {
		v.witnessSeen = true
		if v.tree.Root() != v.witness.Root {
			v.problem(Tampered, CodeFork, idx(v.tree.Size-1), "the archive's first %d leaves differ from the witnessed checkpoint: history was rewritten (a fork)", v.witness.Size)
		}
	}
	if rc := v.receipt; rc != nil && v.tree.Size == rc.Checkpoint.Size && rc.Checkpoint.Origin == v.origin {
		v.receiptSeen = true
		if v.tree.Root() != rc.Checkpoint.Root {
			v.problem(Tampered, CodeFork, idx(v.tree.Size-1), "the archive's first %d leaves differ from those the store acknowledged at %s (receipt): the host's history was rewritten (a fork)",
				rc.Checkpoint.Size, v.r.Receipt.Time)
			v.r.Receipt.Status = CodeFork
		}
	}
	v.pruneCheck()
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
		v.problem(Incomplete, CodeUnsignedKey, idx(v.intro.index), "the last %s leaf is not yet signed", v.intro.kind)
	}
	// A live writer's successor appears with its first block, up to a heartbeat after the seal: only
	// once it is missing for longer does the silence check below report it.
	if v.lastSeal != nil && v.lastSeal.Next && !r.Live {
		v.problem(Incomplete, CodeMissingSegment, nil, "segment %s was sealed with a successor, which is missing: the newest segment was deleted (or the writer crashed right after sealing)", v.lastSealed)
	}
	if v.runOpen {
		if r.Live {
			v.endedRun("running")
			if gap := v.opts.Now.Sub(time.Unix(0, v.lastTime)); v.lastTime != noTime && gap > v.interval+v.opts.Grace {
				v.problem(Incomplete, CodeSilence, nil, "the writer holds the archive but has recorded nothing for %s (since %s): it is stopped or frozen",
					gap.Round(time.Second), fmtTime(v.lastTime))
			}
		} else if v.broken {
			v.endedRun("unknown") // its end is in the unreadable leaves (reported as damaged)
		} else {
			v.endedRun("crashed")
			v.problem(Incomplete, CodeNoStop, nil, "the archive ends without STOP after leaf %d (%s), the last checkpoint covers %d leaves: the writer crashed or was killed, or its tail was removed",
				v.tree.Size-1, fmtTime(v.maxTime), v.ckSize)
		}
		v.endRun(r.Live)
	} else if t := r.Unsigned; t != nil && t.Leaves > 0 {
		// A run ends with STOP, SEAL and their checkpoint in one block: unsigned leaves outside a run are
		// not the tail of a writer that crashed or still writes.
		v.problem(Incomplete, CodeNoStop, idx(t.First), "leaves %d..%d after the last checkpoint are not signed and no open run explains them: the archive's end was cut or rewritten",
			t.First, t.First+t.Leaves-1)
	}
	if v.witness != nil && !v.witnessSeen {
		v.problem(Tampered, CodeRollback, nil, "the archive holds %d leaves, but a checkpoint for %d leaves was witnessed before: it was rolled back or truncated", v.tree.Size, v.witness.Size)
	}
	if p := v.prune; p != nil && p.applied && !p.done {
		v.refusePrune(ReceiptUnchecked, fmt.Sprintf("the archive does not reach the receipt's %d leaves leaf by leaf", p.ck.Size))
	}
	if rc := v.receipt; rc != nil && !v.receiptSeen {
		v.receiptUnseen(rc.Checkpoint)
	}
	r.Status = Pass
	for _, p := range append(r.Problems, Problem{Class: r.Omitted.Class}) {
		if p.Class == Tampered {
			r.Status = Tampered
			break
		}
		if p.Class == Incomplete {
			r.Status = Incomplete
		}
	}
}

// receiptUnseen judges a store receipt whose size the tree never reached leaf by leaf.
func (v *verifier) receiptUnseen(c archive.Checkpoint) {
	r := v.r
	switch {
	case c.Origin != v.origin:
		v.problem(Tampered, CodeOrigin, nil, "the store receipt is for origin %q, not %q: it acknowledges another host's archive", c.Origin, v.origin)
		r.Receipt.Status = CodeOrigin
		return
	case v.tree.Size < c.Size:
		v.problem(Tampered, CodeTruncated, nil, "the archive holds %d leaves, but the store acknowledged %d leaves at %s (receipt): the host's archive was truncated",
			v.tree.Size, c.Size, r.Receipt.Time)
		r.Receipt.Status = CodeTruncated
		return
	}
	for _, m := range v.missing {
		if c.Size > m[0] && c.Size <= m[1] {
			v.problem(Tampered, CodeTruncated, nil, "the store acknowledged %d leaves at %s (receipt), and leaves %d..%d among them are missing from the archive: evidence the store holds was deleted from the host",
				c.Size, r.Receipt.Time, m[0], m[1]-1)
			r.Receipt.Status = CodeTruncated
			return
		}
	}
	// The tree passed the receipt's size without reaching it leaf by leaf after a checkpoint that did
	// not match (reported as such).
	r.Receipt.Status = ReceiptUnchecked
}
