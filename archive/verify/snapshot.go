package verify

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"time"

	"github.com/auditarch/auditarch/archive"
	"golang.org/x/mod/sumdb/note"
)

// streamState is a Stream's verifier state at a block boundary: all a replica needs to continue checking
// what follows without reading what came before again (docs/format.md, "Store directory", state.json).
// Reports are not carried, but for the current segment's: a resumed stream reports what it reads after.
type streamState struct {
	Version    int          `json:"version"`
	Origin     string       `json:"origin"`
	Identity   string       `json:"identity"` // the identity key's name+hash the state was verified under
	Segment    string       `json:"segment"`  // the sealed segment the state ends with
	Offset     int64        `json:"offset"`   // its length
	SegNo      uint64       `json:"seg_no"`
	SegFirst   uint64       `json:"seg_first"`
	SegCks     uint64       `json:"seg_cks"`
	Size       uint64       `json:"size"`
	Frontier   []string     `json:"frontier"`
	Diverged   bool         `json:"diverged,omitempty"`
	CkGood     uint64       `json:"ck_good"`
	Gap        bool         `json:"gap,omitempty"`
	Kernel     [2]int64     `json:"kernel"`
	LastCk     string       `json:"last_ck"`
	CkSize     uint64       `json:"ck_size"`
	Key        string       `json:"key,omitempty"` // the epoch key in charge (verifier key); "" when unchained
	Epoch      uint64       `json:"epoch"`
	EpochStart int64        `json:"epoch_start"`
	EpochLen   int64        `json:"epoch_len"`
	Interval   int64        `json:"interval"`
	LastTime   int64        `json:"last_time"`
	MaxTime    int64        `json:"max_time"`
	RunOpen    bool         `json:"run_open"`
	RunStart   uint64       `json:"run_start"`
	BootID     string       `json:"boot_id,omitempty"`
	Stop       *stopMark    `json:"stop,omitempty"` // the STOP that ended the newest run (Stream.Stopped)
	LastSeal   archive.Seal `json:"last_seal"`
	Serials    struct {
		Have    bool       `json:"have"`
		Hi      uint32     `json:"hi"`
		Missing [][4]int64 `json:"missing,omitempty"` // lo, hi, at, index
		Extra   uint64     `json:"extra,omitempty"`
		ExtraN  int        `json:"extra_n,omitempty"`
		Counted uint64     `json:"counted,omitempty"`
	} `json:"serials"`
	Missing    [][2]uint64       `json:"missing,omitempty"`
	Latest     string            `json:"latest,omitempty"`
	Current    SegmentReport     `json:"current"` // the report of the segment the state is in
	SealIdx    int64             `json:"seal_idx"`
	First      bool              `json:"first,omitempty"` // no leaf of the current segment read yet
	PendingRec *archive.Recovery `json:"pending_rec,omitempty"`
	SegLast    int64             `json:"seg_last,omitempty"`
	LeafMax    int64             `json:"leaf_max,omitempty"`
	CkTime     int64             `json:"ck_time,omitempty"`
	Misplaced  bool              `json:"misplaced,omitempty"`
	LastSealed string            `json:"last_sealed,omitempty"`
	HaveSeal   bool              `json:"have_seal,omitempty"`
}

const stateVersion = 2

// ErrNoSnapshot is returned by Snapshot when the stream is not at a point it can be resumed from.
var ErrNoSnapshot = errors.New("the stream is not between two blocks of a segment whose header it accepted")

// Snapshot returns the stream's state, to be resumed with ResumeStream instead of reading everything
// again: a replica saves it at each seal (so that it starts in constant time), and keeps one in memory
// at the last block it accepted (so that refused bytes cost no re-reading). It is defined between two
// blocks of a segment whose header was accepted, outside a START or KEY's block.
func (s *Stream) Snapshot() ([]byte, error) {
	v := s.v
	if s.state != streamEntries || len(s.buf) != 0 || v.intro != nil || v.seg == nil || !v.started {
		return nil, ErrNoSnapshot
	}
	st := streamState{Version: stateVersion, Origin: v.origin, Segment: s.name, Offset: s.off,
		SegNo: v.segNo, SegFirst: v.seg.FirstIndex, SegCks: v.segCks, Size: v.tree.Size, Frontier: v.tree.Encode(),
		Diverged: v.diverged, CkGood: v.ckGood, Gap: v.gap, Kernel: [2]int64{v.kernel.Min, v.kernel.Max},
		LastCk: base64.StdEncoding.EncodeToString(v.lastCk), CkSize: v.ckSize, Key: v.keyVKey, Epoch: v.epoch,
		EpochStart: v.epochStart, EpochLen: int64(v.epochLen), Interval: int64(v.interval), LastTime: v.lastTime,
		MaxTime: v.maxTime, RunOpen: v.runOpen, RunStart: v.runStart, BootID: v.bootID, Stop: v.stop, Missing: v.missing, Latest: v.r.Latest}
	if v.identity != nil {
		st.Identity = fmt.Sprintf("%s+%08x", v.identity.Name(), v.identity.KeyHash())
	}
	if v.lastSeal != nil {
		st.LastSeal, st.HaveSeal = *v.lastSeal, true
	}
	st.Current, st.SealIdx, st.First, st.PendingRec, st.SegLast = *v.seg, v.sealIdx, s.first, v.pendingRec, v.segLast
	st.LeafMax, st.CkTime, st.Misplaced, st.LastSealed = v.leafMax, v.ckTime, v.misplaced, v.lastSealed
	t := &v.serials
	st.Serials.Have, st.Serials.Hi, st.Serials.Extra, st.Serials.ExtraN, st.Serials.Counted = t.have, t.hi, t.extra, t.extraN, t.counted
	for _, m := range t.missing {
		st.Serials.Missing = append(st.Serials.Missing, [4]int64{int64(m.lo), int64(m.hi), m.at, int64(m.index)})
	}
	return json.Marshal(st)
}

// ResumeStream returns a Stream that continues from a Snapshot, as if it had read everything up to that
// point. opts.Key must be the key the snapshot was verified under.
func ResumeStream(opts Options, snapshot []byte) (*Stream, error) {
	var st streamState
	if err := json.Unmarshal(snapshot, &st); err != nil {
		return nil, fmt.Errorf("stream state: %w", err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("stream state version %d is not supported", st.Version)
	}
	s := NewStream(opts)
	v := s.v
	if v.identity == nil || st.Identity != fmt.Sprintf("%s+%08x", v.identity.Name(), v.identity.KeyHash()) || st.Origin != v.origin {
		return nil, errors.New("stream state was verified under another identity key")
	}
	if !archive.NameMatches(st.Segment, st.SegFirst) || st.Size < st.SegFirst || st.Current.File != st.Segment {
		return nil, fmt.Errorf("stream state names segment %q starting at leaf %d", st.Segment, st.SegFirst)
	}
	f, err := archive.DecodeFrontier(st.Size, st.Frontier)
	if err != nil {
		return nil, fmt.Errorf("stream state: %w", err)
	}
	lastCk, err := base64.StdEncoding.DecodeString(st.LastCk)
	if err != nil {
		return nil, fmt.Errorf("stream state: %w", err)
	}
	if st.Key != "" {
		kv, err := note.NewVerifier(st.Key)
		if err != nil || kv.Name() != v.origin {
			return nil, fmt.Errorf("stream state: epoch key %q", st.Key)
		}
		v.key, v.keyVKey = kv, st.Key
	}
	v.tree, v.started, v.diverged, v.ckGood, v.gap, v.segNo = f, true, st.Diverged, st.CkGood, st.Gap, st.SegNo
	v.kernel = archive.KernelRange{Min: st.Kernel[0], Max: st.Kernel[1]}
	v.lastCk, v.ckSize, v.segCks = lastCk, st.CkSize, st.SegCks
	v.epoch, v.epochStart, v.epochLen, v.interval = st.Epoch, st.EpochStart, durationOr(st.EpochLen, archive.MaxEpoch), durationOr(st.Interval, archive.DefaultHeartbeat)
	v.lastTime, v.maxTime, v.runOpen, v.runStart, v.bootID, v.stop = st.LastTime, st.MaxTime, st.RunOpen, st.RunStart, st.BootID, st.Stop
	if st.HaveSeal {
		seal := st.LastSeal
		v.lastSeal = &seal
	}
	v.sealIdx, v.rootProblem, v.pendingRec, v.segLast = st.SealIdx, -1, st.PendingRec, st.SegLast
	v.leafMax, v.ckTime, v.misplaced, v.lastSealed = st.LeafMax, st.CkTime, st.Misplaced, st.LastSealed
	v.missing, v.r.Latest = st.Missing, st.Latest
	t := &v.serials
	t.have, t.hi, t.extra, t.extraN, t.counted = st.Serials.Have, st.Serials.Hi, st.Serials.Extra, st.Serials.ExtraN, st.Serials.Counted
	if len(st.Serials.Missing) > maxSerialRanges {
		return nil, errors.New("stream state: too many serial ranges")
	}
	for _, m := range st.Serials.Missing {
		t.missing = append(t.missing, serialRange{lo: uint32(m[0]), hi: uint32(m[1]), at: m[2], index: uint64(m[3])})
	}
	cur := st.Current
	cur.Problems = 0
	v.r.Segments = append(v.r.Segments, cur)
	v.seg = &v.r.Segments[0]
	s.name, s.off, s.bufOff, s.state, s.first = st.Segment, st.Offset, st.Offset, streamEntries, st.First
	return s, nil
}

func durationOr(ns int64, d time.Duration) time.Duration {
	if ns <= 0 {
		return d
	}
	return time.Duration(ns)
}
