package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/auditarch/auditarch/internal/durable"
)

// Source says how far an archive being written is durable. *Writer implements it. A Follower never reads
// past Durable, and waits on DurableNotify (which a writer signals without ever blocking on a reader).
type Source interface {
	Durable() Position
	DurableNotify() <-chan struct{}
}

// Cursor is a follower's position: the block that holds the next leaf, and that leaf's index. It is what
// a consumer commits once its receiver has acknowledged everything before Index (SaveCursor), and what it
// resumes from after a restart. The zero Cursor is the archive's beginning.
type Cursor struct {
	Segment string `json:"segment"` // segment file name; "" before the first segment
	Offset  int64  `json:"offset"`  // file offset of the block holding leaf Index (0: the segment's start)
	First   uint64 `json:"first"`   // index of that block's first leaf
	Index   uint64 `json:"index"`   // the next leaf to return
}

// Follower reads an archive's leaves, decoded, in order, from a cursor: the archive is the consumers'
// durable queue (docs/format.md, "Consumers"). It reads the segment files only, never past what the
// writer made durable, and follows rotation into the next segment. It does not verify signatures (Verify
// and the store do); damage is returned as a *CorruptError and the follower continues with the next
// segment. Capture never waits for a follower: a slow consumer only falls behind.
type Follower struct {
	dir string
	src Source // nil: the archive is not being written (Next ends with io.EOF)
	cur Cursor

	f     *os.File
	raw   []byte
	dec   []byte
	p     []byte // entries of the current block not yet returned
	pIdx  uint64 // index of the next leaf in p
	after int64  // file offset of the block after the current one
	leaf  Leaf
	// derived: the cursor's First was counted from its segment, not taken from the cursor (a cursor file
	// is the consumer's bookkeeping: whoever can edit it must not make the follower mislabel leaves).
	derived bool
}

// NewFollower returns a follower of the archive in dir, written by src (nil when no writer runs), that
// resumes at from.
func NewFollower(dir string, src Source, from Cursor) *Follower {
	return &Follower{dir: dir, src: src, cur: from}
}

// Cursor returns the position after the last leaf Next returned.
func (f *Follower) Cursor() Cursor { return f.cur }

// Close releases the open segment file.
func (f *Follower) Close() error {
	if f.f != nil {
		err := f.f.Close()
		f.f = nil
		return err
	}
	return nil
}

// Segments lists the archive's segment file names in order.
func (f *Follower) Segments() ([]string, error) {
	files, err := ListSegments(f.dir)
	for i := range files {
		files[i] = filepath.Base(files[i])
	}
	return files, err
}

// Extent returns how many bytes of segment name may be read: all of a segment before the writer's durable
// one (it is complete, a crash's torn end included), the durable bytes of that one, nothing of a later
// one; complete says whether the segment has all its bytes; next is the segment after it, if any.
func (f *Follower) Extent(name string) (limit int64, complete bool, next string, err error) {
	files, err := f.Segments()
	if err != nil {
		return 0, false, "", err
	}
	for _, s := range files {
		if s > name {
			next = s
			break
		}
	}
	if name == "" {
		return 0, true, next, nil
	}
	var dur Position
	if f.src != nil {
		dur = f.src.Durable()
	}
	limit, complete, err = f.Available(name, dur)
	return limit, complete, next, err
}

// Available is Extent for one segment given the writer's durable position dur (the zero Position: no
// writer), without listing the directory.
func (f *Follower) Available(name string, dur Position) (limit int64, complete bool, err error) {
	switch {
	case dur.Segment == "" || name < dur.Segment:
		fi, err := os.Stat(filepath.Join(f.dir, name))
		if err != nil {
			return 0, false, err
		}
		return fi.Size(), true, nil
	case name == dur.Segment:
		return dur.Offset, false, nil
	}
	return 0, false, nil
}

// Next returns the next leaf and its index; the leaf is valid until the next call. It waits for the
// writer to make more durable until ctx is done. Without a writer it returns io.EOF at the end. Damage
// gives a *CorruptError, after which the follower moves on to the next segment.
func (f *Follower) Next(ctx context.Context) (*Leaf, uint64, error) {
	var wait <-chan struct{}
	if f.src != nil {
		wait = f.src.DurableNotify()
	}
	var tick *time.Ticker
	for {
		for len(f.p) > 0 {
			typ, payload, rest, err := NextEntry(f.p)
			if err != nil {
				return nil, 0, f.skip(err)
			}
			f.p = rest
			if typ != EntryLeaf {
				continue
			}
			i := f.pIdx
			f.pIdx++
			if err := DecodeLeaf(payload, &f.leaf); err != nil {
				return nil, 0, f.skip(fmt.Errorf("leaf %d: %v", i, err))
			}
			f.cur.Index = i + 1
			if !hasLeaf(f.p) {
				f.p = nil
				f.cur.Offset, f.cur.First = f.after, f.cur.Index
			}
			return &f.leaf, i, nil
		}
		more, err := f.block()
		if err != nil {
			return nil, 0, err
		}
		if more {
			continue
		}
		if f.src == nil {
			return nil, 0, io.EOF
		}
		if tick == nil {
			tick = time.NewTicker(time.Second) // notifications coalesce: look again now and then
			defer tick.Stop()
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-wait:
		case <-tick.C:
		}
	}
}

// block reads the next block holding a leaf at or after the cursor into p. It returns false when nothing
// more is durable yet.
func (f *Follower) block() (bool, error) {
	for {
		limit, complete, next, err := f.Extent(f.cur.Segment)
		if err != nil {
			return false, err
		}
		if f.cur.Segment == "" || (complete && f.cur.Offset >= limit) {
			if next == "" {
				return false, nil
			}
			f.enter(next)
			continue
		}
		if f.f == nil || filepath.Base(f.f.Name()) != f.cur.Segment {
			f.Close()
			if f.f, err = os.Open(filepath.Join(f.dir, f.cur.Segment)); err != nil {
				return false, err
			}
		}
		off := f.cur.Offset
		if off == 0 {
			if limit < int64(len(SegmentMagic)) {
				if f.tornEnd(complete, next) {
					continue
				}
				return false, nil
			}
			magic := make([]byte, len(SegmentMagic))
			if _, err := f.f.ReadAt(magic, 0); err != nil || string(magic) != SegmentMagic {
				return false, f.skip(errors.New("not an auditarch segment (bad magic)"))
			}
			off = int64(len(SegmentMagic))
		}
		if limit-off < BlockHeaderSize {
			if f.tornEnd(complete, next) {
				continue
			}
			return false, nil
		}
		if cap(f.raw) < BlockHeaderSize {
			f.raw = make([]byte, BlockHeaderSize, 64<<10)
		}
		if _, err := f.f.ReadAt(f.raw[:BlockHeaderSize], off); err != nil {
			return false, err
		}
		l, err := BlockLength(f.raw[:BlockHeaderSize])
		if err != nil {
			return false, f.skip(err)
		}
		if limit-off < int64(l) {
			if f.tornEnd(complete, next) {
				continue
			}
			return false, nil
		}
		if cap(f.raw) < l {
			f.raw = make([]byte, l)
		}
		f.raw = f.raw[:l]
		if _, err := f.f.ReadAt(f.raw, off); err != nil {
			return false, err
		}
		if f.dec, err = OpenBlock(f.raw, f.dec); err != nil {
			return false, f.skip(err)
		}
		f.p, f.after = f.dec, off+int64(l)
		if f.cur.Offset == 0 {
			// The header block: where the segment's leaves start.
			typ, payload, _, err := NextEntry(f.p)
			if err != nil || typ != EntryHeader {
				return false, f.skip(errors.New("segment does not start with a header"))
			}
			h, err := DecodeHeader(payload)
			if err != nil {
				return false, f.skip(err)
			}
			f.p = nil
			f.cur.Offset, f.cur.First, f.derived = f.after, h.FirstIndex, true
			f.cur.Index = max(f.cur.Index, h.FirstIndex)
			continue
		}
		if !f.derived {
			first, err := f.firstAt(f.cur.Segment, off)
			if err != nil {
				return false, f.skip(err)
			}
			if f.cur.Index < first {
				f.cur.Index = first
			}
			f.cur.First, f.derived = first, true
		}
		// Leaves of this block before the cursor's Index were returned before (a restart): skip them.
		f.pIdx = f.cur.First
		for f.pIdx < f.cur.Index && len(f.p) > 0 {
			typ, _, rest, err := NextEntry(f.p)
			if err != nil {
				return false, f.skip(err)
			}
			f.p = rest
			if typ == EntryLeaf {
				f.pIdx++
			}
		}
		if f.pIdx < f.cur.Index {
			return false, f.skip(fmt.Errorf("the cursor's next leaf %d is past the block at offset %d, which ends before leaf %d", f.cur.Index, off, f.pIdx))
		}
		if !hasLeaf(f.p) {
			f.p = nil
			f.cur.Offset, f.cur.First, f.cur.Index = f.after, f.pIdx, f.pIdx
			continue
		}
		return true, nil
	}
}

// hasLeaf reports whether the entries p hold a leaf.
func hasLeaf(p []byte) bool {
	for len(p) > 0 {
		typ, _, rest, err := NextEntry(p)
		if err != nil {
			return true // Next reports the damage
		}
		if typ == EntryLeaf {
			return true
		}
		p = rest
	}
	return false
}

// firstAt counts the leaves of segment name before the block at off: the index of that block's first
// leaf. It reads the segment from its start once, when a follower resumes inside it.
func (f *Follower) firstAt(name string, off int64) (uint64, error) {
	s, err := OpenSegment(filepath.Join(f.dir, name))
	if err != nil {
		return 0, err
	}
	defer s.Close()
	h, err := s.ReadHeader()
	if err != nil {
		return 0, err
	}
	n := h.FirstIndex
	for s.off < off {
		if err := s.nextBlock(); err != nil {
			return 0, fmt.Errorf("resuming at offset %d: %w", off, err)
		}
		for p := s.p; len(p) > 0; {
			typ, _, rest, err := NextEntry(p)
			if err != nil {
				return 0, err
			}
			if typ == EntryLeaf {
				n++
			}
			p = rest
		}
		s.p = nil
	}
	if s.off != off {
		return 0, fmt.Errorf("the cursor's offset %d is not where a block of %s starts", off, name)
	}
	return n, nil
}

// enter moves the cursor to the start of segment name.
func (f *Follower) enter(name string) {
	f.Close()
	f.p, f.derived = nil, false
	f.cur.Segment, f.cur.Offset, f.cur.First = name, 0, f.cur.Index
}

// tornEnd handles bytes that do not complete a block. In a complete segment they are a crash's torn end
// and the follower moves on (true); in the segment being written they are not durable yet.
func (f *Follower) tornEnd(complete bool, next string) bool {
	if complete && next != "" {
		f.enter(next)
		return true
	}
	return false
}

// skip reports damage in the current segment and moves to the next one.
func (f *Follower) skip(err error) error {
	name, off := f.cur.Segment, f.cur.Offset
	limit, _, next, lerr := f.Extent(name)
	switch {
	case lerr == nil && next != "":
		f.enter(next)
	default:
		// Nothing after it yet: give up on what the segment holds so far.
		f.p = nil
		f.cur.Offset = max(limit, f.cur.Offset+1)
	}
	return &CorruptError{Path: filepath.Join(f.dir, name), Offset: off, Reason: err.Error()}
}

// LoadCursor reads a cursor saved by SaveCursor; a missing file is the zero Cursor.
func LoadCursor(path string) (Cursor, error) {
	var c Cursor
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("cursor: %w", err)
	}
	if len(data) > 4096 {
		return c, fmt.Errorf("cursor %s: %d bytes is not a cursor", path, len(data))
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("cursor %s: %w", path, err)
	}
	if _, ok := ParseSegmentName(c.Segment); c.Segment != "" && !ok {
		return c, fmt.Errorf("cursor %s: %q is not a segment name", path, c.Segment)
	}
	if c.Offset < 0 || c.Index < c.First || (c.Segment == "" && c.Offset != 0) {
		return c, fmt.Errorf("cursor %s: offset %d, first %d, index %d do not name a leaf", path, c.Offset, c.First, c.Index)
	}
	return c, nil
}

// SaveCursor writes c to path durably (durable.Replace): a crash leaves the old cursor or the new one,
// never a torn one.
func SaveCursor(path string, c Cursor) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := durable.Replace(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("save cursor: %w", err)
	}
	return nil
}

// Position is a place in the archive's segment files: the end of the durable bytes.
type Position struct {
	Segment string // file name of the segment (seg-….aseg)
	Offset  int64  // bytes of it that are durable, whole blocks only
	Size    uint64 // tree size those bytes complete
}
