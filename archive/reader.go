package archive

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/auditarch/auditarch/audit"
)

// Reader reads the leaves of an archive's segments in order. It checks framing and checksums but not
// signatures: `verify` (Verify) proves the chain; Reader is for showing and searching.
type Reader struct {
	files  []string
	starts []int64 // segment start times, when SkipOutside needs them
	cur    int
	s      *segReader
	index  uint64
	leaf   Leaf

	since, until int64
}

// Open lists the segments in dir. It fails if dir holds none.
func Open(dir string) (*Reader, error) {
	files, err := listSegments(dir)
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

// skewSlack covers events whose kernel time precedes the segment they were archived in (an event is
// emitted at most a timeout after its first record) and small clock differences.
const skewSlack = int64(time.Minute)

// SkipOutside makes the reader skip whole segments whose events all lie outside [since, until); a zero
// time leaves that side open. It reads only each segment's header (its first block): segment i holds
// what was received from its start to the start of segment i+1. Events of the segments it does read are
// not filtered: the caller still checks each event's time.
func (r *Reader) SkipOutside(since, until time.Time) {
	r.since, r.until = 0, 0
	if !since.IsZero() {
		r.since = since.UnixNano()
	}
	if !until.IsZero() {
		r.until = until.UnixNano()
	}
	if r.starts != nil || (r.since == 0 && r.until == 0) {
		return
	}
	r.starts = make([]int64, len(r.files))
	for i, f := range r.files {
		h, err := readSegmentHeader(f)
		if err != nil {
			r.starts[i] = -1 // unknown: read it, Next reports the damage
			continue
		}
		r.starts[i] = h.Start
	}
}

// outside reports whether segment i can be skipped.
func (r *Reader) outside(i int) bool {
	if r.starts == nil || r.starts[i] < 0 {
		return false
	}
	if r.until != 0 && r.starts[i]-skewSlack >= r.until {
		return true
	}
	if r.since != 0 && i+1 < len(r.files) && r.starts[i+1] >= 0 && r.starts[i+1]+skewSlack < r.since {
		return true
	}
	return false
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
		typ, p, err := r.s.next()
		if errors.Is(err, io.EOF) {
			r.closeFile()
			continue
		}
		if err != nil {
			r.closeFile()
			return nil, 0, err
		}
		if typ != entryLeaf {
			continue
		}
		if err := DecodeLeaf(p, &r.leaf); err != nil {
			r.closeFile()
			return nil, 0, &CorruptError{Path: r.files[r.cur], Offset: r.s.blockOff, Reason: fmt.Sprintf("leaf %d: %v", r.index, err)}
		}
		i := r.index
		r.index++
		return &r.leaf, i, nil
	}
}

// Next returns the next event or LOST leaf, skipping control leaves; see NextLeaf.
func (r *Reader) Next() (*audit.RawEvent, uint64, error) {
	for {
		l, i, err := r.NextLeaf()
		if err != nil {
			return nil, 0, err
		}
		if !l.Kind.control() {
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
		if !r.outside(r.cur) {
			break
		}
	}
	s, err := openSegment(r.files[r.cur])
	if err != nil {
		return err
	}
	h, err := s.readHeader()
	if err != nil {
		s.Close()
		return err
	}
	r.s, r.index = s, h.FirstIndex
	return nil
}
