package verify

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/auditarch/auditarch/archive"
)

// Stream verifies an archive while a replica receives it: the segment files in order, each from its first
// byte, in pieces of any size. It runs the same checks as Dir (the two share the verifier), block by
// block, so a store can check what a host sends before it acknowledges it.
//
// Bytes that do not yet complete a block are held until they do. When a newer segment begins, an
// incomplete block left at the end of the one before is its torn tail (a crash), exactly as Dir reads
// it from a file.
type Stream struct {
	v        *verifier
	name     string // the current segment's file name
	off      int64  // bytes of it taken
	buf      []byte // bytes of it not yet decoded: an incomplete block
	bufOff   int64  // file offset of buf[0]
	state    int
	first    bool
	dec      []byte
	reported int // problems already returned

	// OnLeaf, when set, is called with each leaf as it is read (a follower of a replica, for one).
	OnLeaf func(index uint64, l *archive.Leaf)
}

// Stream states for the current segment.
const (
	streamNone    = iota // no segment yet
	streamMagic          // expecting the magic and the header block
	streamEntries        // header accepted: blocks of entries
	streamSkip           // the segment cannot be checked (reported): its bytes are taken unread
)

// StreamUpdate is what one Write found.
type StreamUpdate struct {
	Problems []Problem // new problems, in order
	Size     uint64    // leaves read so far
	// Latest is the last signed checkpoint that verified, over the whole stream (empty before the first).
	Latest []byte
}

// NewStream returns a Stream that has seen nothing. opts.Key should be the host's pinned identity key.
// The archive it reads is taken as live (its writer still appends): a torn end is not reported until a
// newer segment shows it torn.
func NewStream(opts Options) *Stream {
	v, err := newVerifier(opts)
	if err != nil {
		opts.Witness = nil
		v, _ = newVerifier(opts)
	}
	v.r.Live = true
	return &Stream{v: v}
}

// WriteFile writes a whole segment file into the stream, reading it through buf, and returns its
// length. Only an error reading the file (or ErrStreamOrder) is returned; what the bytes hold is in the
// report, as for Write.
func (s *Stream) WriteFile(path string, buf []byte) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	name := filepath.Base(path)
	var off int64
	for {
		n, err := f.Read(buf)
		if n > 0 || off == 0 {
			if _, werr := s.Write(name, off, buf[:n]); werr != nil {
				return 0, werr
			}
			off += int64(n)
		}
		if err == io.EOF {
			return off, nil
		}
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", path, err)
		}
	}
}

// Finish ends the stream: the current segment is the archive's newest (its torn end, unless the archive
// is live, is reported), and what can only be judged at the end is. It returns the final report.
func (s *Stream) Finish() *Report {
	v := s.v
	switch s.state {
	case streamMagic:
		v.beginSegment(s.name, archive.SegmentHeader{}, &archive.CorruptError{Path: s.name, Offset: s.bufOff, Reason: "segment has no complete header block", Torn: true}, true)
		v.closeSegment()
	case streamEntries:
		v.endSegment(s.name, int64(len(s.buf)), true)
		v.closeSegment()
	}
	s.state = streamNone
	v.finish()
	return v.r
}

// ErrStreamOrder is wrapped when bytes do not continue the stream: an offset other than the current
// segment's length, or a segment that does not sort after the current one.
var ErrStreamOrder = errors.New("bytes out of order")

// Position returns the current segment and how many of its bytes were taken.
func (s *Stream) Position() (segment string, offset int64) { return s.name, s.off }

// Size returns the number of leaves read.
func (s *Stream) Size() uint64 { return s.v.tree.Size }

// Write takes the bytes of segment file name at offset off. A new segment must sort after the current
// one and start at offset 0; the current one must continue at its length. Anything else is an error
// wrapping ErrStreamOrder and nothing is taken. Everything about the content is in the update.
func (s *Stream) Write(name string, off int64, b []byte) (StreamUpdate, error) {
	if name != s.name {
		if s.name != "" && name <= s.name {
			return StreamUpdate{}, fmt.Errorf("%w: segment %s after %s", ErrStreamOrder, name, s.name)
		}
		if off != 0 {
			return StreamUpdate{}, fmt.Errorf("%w: new segment %s starts at offset %d, not 0", ErrStreamOrder, name, off)
		}
		s.endSegment()
		s.name, s.off, s.buf, s.bufOff, s.state, s.first = name, 0, s.buf[:0], 0, streamMagic, true
	} else if off != s.off {
		return StreamUpdate{}, fmt.Errorf("%w: segment %s continues at offset %d, not %d", ErrStreamOrder, name, s.off, off)
	}
	s.off += int64(len(b))
	if s.state != streamSkip {
		s.buf = append(s.buf, b...)
		s.decode()
	}
	return s.update(), nil
}

// Report returns the report so far. It is the stream's own: do not modify it.
func (s *Stream) Report() *Report { return s.v.r }

func (s *Stream) update() StreamUpdate {
	u := StreamUpdate{Size: s.v.tree.Size, Latest: []byte(s.v.r.Latest)}
	if n := len(s.v.r.Problems); n > s.reported {
		u.Problems = append([]Problem(nil), s.v.r.Problems[s.reported:]...)
		s.reported = n
	}
	return u
}

// decode reads the complete blocks in buf.
func (s *Stream) decode() {
	v := s.v
	p := 0
	defer func() {
		n := copy(s.buf, s.buf[p:])
		s.buf = s.buf[:n]
		s.bufOff += int64(p)
	}()
	if s.state == streamMagic && s.bufOff == 0 {
		if len(s.buf) < len(archive.SegmentMagic) {
			return
		}
		if string(s.buf[:len(archive.SegmentMagic)]) != archive.SegmentMagic {
			v.beginSegment(s.name, archive.SegmentHeader{}, &archive.CorruptError{Path: s.name, Reason: "not an auditarch segment (bad magic)"}, false)
			v.closeSegment()
			s.state = streamSkip
			p = len(s.buf)
			return
		}
		p = len(archive.SegmentMagic)
	}
	for s.state == streamMagic || s.state == streamEntries {
		rest := s.buf[p:]
		if len(rest) < archive.BlockHeaderSize {
			return
		}
		off := s.bufOff + int64(p)
		l, err := archive.BlockLength(rest)
		if err != nil {
			s.damaged(off, err.Error())
			p = len(s.buf)
			return
		}
		if len(rest) < l {
			return
		}
		p += l
		if s.dec, err = archive.OpenBlock(rest[:l], s.dec); err != nil {
			s.damaged(off, err.Error())
			p = len(s.buf)
			return
		}
		before, leaves, cks := v.tampered, 0, 0
		for e := s.dec; len(e) > 0 && s.state != streamSkip; {
			typ, payload, next, err := archive.NextEntry(e)
			if err != nil {
				s.damaged(off, err.Error())
				break
			}
			e = next
			switch typ {
			case archive.EntryLeaf:
				if leaves++; leaves > archive.MaxBlockLeaves {
					s.damaged(off, fmt.Sprintf("block holds more than %d leaves", archive.MaxBlockLeaves))
				}
			case archive.EntryCheckpoint:
				if cks++; cks > archive.MaxBlockCheckpoints {
					s.damaged(off, fmt.Sprintf("block holds more than %d checkpoints", archive.MaxBlockCheckpoints))
				}
			}
			if s.state == streamSkip {
				break
			}
			s.entry(off, typ, payload)
			if v.tampered-before > archive.MaxBlockProblems && s.state != streamSkip {
				s.damaged(off, fmt.Sprintf("block raised more than %d problems; the rest of it is not read", archive.MaxBlockProblems))
				break
			}
		}
		if s.state == streamSkip {
			p = len(s.buf)
			return
		}
		v.endBlock(off)
	}
}

// entry handles one decoded entry of the block at off.
func (s *Stream) entry(off int64, typ byte, p []byte) {
	v := s.v
	if s.state == streamMagic {
		var h archive.SegmentHeader
		var herr error
		if typ != archive.EntryHeader {
			herr = &archive.CorruptError{Path: s.name, Offset: off, Reason: "segment does not start with a header"}
		} else if h, herr = archive.DecodeHeader(p); herr != nil {
			herr = &archive.CorruptError{Path: s.name, Offset: off, Reason: herr.Error()}
		}
		if !v.beginSegment(s.name, h, herr, false) {
			v.closeSegment()
			s.state = streamSkip
			return
		}
		s.state = streamEntries
		return
	}
	i := v.tree.Size
	v.entry(typ, p, &s.first)
	if typ == archive.EntryLeaf && s.OnLeaf != nil {
		var l archive.Leaf
		if archive.DecodeLeaf(p, &l) == nil {
			s.OnLeaf(i, &l)
		}
	}
}

// damaged reports a block that does not decode; the rest of the segment is not read.
func (s *Stream) damaged(off int64, reason string) {
	v := s.v
	err := &archive.CorruptError{Path: s.name, Offset: off, Reason: reason}
	v.problem(Tampered, "damaged", nil, "%v: the leaves after index %d in this segment cannot be read", err, v.tree.Size)
	v.broken, v.gap = true, true
	if s.state == streamEntries {
		v.endSegment(s.name, 0, false)
		v.closeSegment()
	}
	s.state = streamSkip
}

// endSegment ends the current segment: bytes left over are its torn tail.
func (s *Stream) endSegment() {
	v := s.v
	switch s.state {
	case streamMagic:
		v.beginSegment(s.name, archive.SegmentHeader{}, &archive.CorruptError{Path: s.name, Offset: s.bufOff, Reason: "segment has no complete header block", Torn: true}, false)
		v.closeSegment()
	case streamEntries:
		torn := int64(len(s.buf))
		if torn > 0 {
			v.pendingRec = &archive.Recovery{Segment: s.name, TornOffset: s.bufOff, TornBytes: torn}
		}
		v.endSegment(s.name, torn, false)
		v.closeSegment()
	}
	s.state = streamNone
}

// Heartbeat returns the heartbeat interval the host's last START announced (10 s before any).
func (s *Stream) Heartbeat() time.Duration { return s.v.interval }

// Stopped reports whether the stream ends with a clean stop: the newest run's STOP, covered by a
// checkpoint that verified under the key chain (a STOP among unverified leaves does not count), and no
// START after it. at is the STOP's time (the host's clock). A resumed stream knows it from its snapshot.
func (s *Stream) Stopped() (at time.Time, ok bool) {
	v := s.v
	if v.stop == nil || !v.stop.Verified || v.runOpen {
		return time.Time{}, false
	}
	return time.Unix(0, v.stop.Time), true
}

// Sealed reports whether segment name was read to a valid seal.
func (s *Stream) Sealed(name string) bool {
	for i := len(s.v.r.Segments) - 1; i >= 0; i-- {
		if seg := &s.v.r.Segments[i]; seg.File == name {
			return seg.Sealed
		}
	}
	return false
}

// CurrentSealed reports whether the current segment ends with its seal and the checkpoint that signs it:
// no byte may follow.
func (s *Stream) CurrentSealed() bool {
	v := s.v
	return s.state == streamEntries && len(s.buf) == 0 && v.sealIdx >= 0 && v.ckSize == v.tree.Size && uint64(v.sealIdx) == v.tree.Size-1
}

// Pending returns the bytes of the current segment taken but not yet decoded: an incomplete block (or
// header). They are not verified; a replica must not hold them as verified.
func (s *Stream) Pending() []byte { return s.buf }

// Decoded returns how many bytes of the current segment are decoded and checked: whole blocks after a
// header that was accepted (0 while the header is incomplete).
func (s *Stream) Decoded() int64 {
	if s.state == streamMagic || s.state == streamNone {
		return 0
	}
	return s.bufOff
}
