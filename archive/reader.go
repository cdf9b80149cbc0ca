package archive

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/auditarch/auditarch/audit/raw"
)

// Reader reads the leaves of an archive's segments in order. It checks framing and checksums but not
// signatures: `verify` (Verify) proves the chain; Reader is for showing and searching.
type Reader struct {
	files []string
	skip  []bool // segments SkipOutside found outside the window
	cur   int
	s     *SegmentReader
	index uint64
	leaf  Leaf
}

// Open lists the segments in dir. It fails if dir holds none.
func Open(dir string) (*Reader, error) {
	files, err := ListSegments(dir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("open archive: %w", err)
		}
		return nil, fmt.Errorf("open archive: no segments in %s", dir)
	}
	return &Reader{files: files, cur: -1}, nil
}

// SkipOutside makes the reader skip whole segments whose events all lie outside [since, until); a zero
// time leaves that side open. It reads only the segment headers (each file's first block): a segment's
// successor records the span of its kernel timestamps (PrevKernelTimes). The newest segment, and any
// whose successor is missing or damaged, is always read. Events of the segments read are not filtered:
// the caller still checks each event's time.
func (r *Reader) SkipOutside(since, until time.Time) {
	r.skip = nil
	if since.IsZero() && until.IsZero() {
		return
	}
	hs := make([]*SegmentHeader, len(r.files))
	for i, f := range r.files {
		if h, err := ReadSegmentHeader(f); err == nil {
			hs[i] = &h
		}
	}
	r.skip = make([]bool, len(r.files))
	for i := 0; i+1 < len(r.files); i++ {
		h, next := hs[i], hs[i+1]
		if h == nil || next == nil || next.Segment != h.Segment+1 || next.FirstIndex <= h.FirstIndex {
			continue
		}
		k := next.PrevKernelTimes
		switch {
		case len(k) == 0:
			r.skip[i] = true // no events at all
		case len(k) == 2:
			r.skip[i] = (!since.IsZero() && k[1] < since.UnixNano()) || (!until.IsZero() && k[0] >= until.UnixNano())
		}
	}
}

// NextLeaf returns the next leaf and its index in the tree. The leaf is valid until the next call. At the
// end it returns io.EOF. Damage yields a *CorruptError, after which the reader moves on to the next
// segment, so the caller may continue past it.
func (r *Reader) NextLeaf() (*Leaf, uint64, error) {
	for {
		if r.s == nil {
			if err := r.nextFile(); err != nil {
				return nil, 0, err
			}
			continue
		}
		typ, p, err := r.s.Next()
		if errors.Is(err, io.EOF) {
			r.closeFile()
			continue
		}
		if err != nil {
			r.closeFile()
			return nil, 0, err
		}
		if typ != EntryLeaf {
			continue
		}
		if err := DecodeLeaf(p, &r.leaf); err != nil {
			off := r.s.blockOff
			r.closeFile()
			return nil, 0, &CorruptError{Path: r.files[r.cur], Offset: off, Reason: fmt.Sprintf("leaf %d: %v", r.index, err)}
		}
		i := r.index
		r.index++
		return &r.leaf, i, nil
	}
}

// Next returns the next event or LOST leaf, skipping control leaves; see NextLeaf.
func (r *Reader) Next() (*raw.Event, uint64, error) {
	for {
		l, i, err := r.NextLeaf()
		if err != nil {
			return nil, 0, err
		}
		if !l.Kind.Control() {
			return &l.Event, i, nil
		}
	}
}

func (r *Reader) closeFile() {
	if r.s != nil {
		r.s.Close()
		r.s = nil
	}
}

func (r *Reader) nextFile() error {
	for {
		r.cur++
		if r.cur >= len(r.files) {
			return io.EOF
		}
		if r.skip == nil || !r.skip[r.cur] {
			break
		}
	}
	s, err := OpenSegment(r.files[r.cur])
	if err != nil {
		return err
	}
	h, err := s.ReadHeader()
	if err != nil {
		s.Close()
		return err
	}
	r.s, r.index = s, h.FirstIndex
	return nil
}
