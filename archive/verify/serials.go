package verify

import (
	"fmt"
	"strings"
)

// maxSerialRanges bounds the missing serial ranges a verifier tracks per run; more are counted.
const maxSerialRanges = 1024

// serialTracker finds the kernel serials the archive's events skipped. The kernel gives every event it logs
// the next serial, for the whole boot, so a serial that never appears was lost: within a run the writer
// records a LOST leaf (serial_gap, with the range), and for the serials issued while no daemon was
// registered (between two runs of one boot) the next run does (no_daemon, with the range). Events may
// arrive late (out of order), filling a gap. A LOST leaf that counts without naming serials (kernel lost
// records, local drops) accounts for at most that many missing serials: an event lost whole lost at least
// one record.
type serialTracker struct {
	have    bool
	hi      uint32
	missing []serialRange
	extra   uint64 // serials in ranges beyond maxSerialRanges
	extraN  int
	counted uint64 // events LOST leaves count without naming their serials (local drops, kernel lost)
}

type serialRange struct {
	lo, hi uint32
	index  uint64 // leaf index of the event after the gap
	at     int64  // time of the event after the gap
}

// event records the serial of the event at leaf index i, received at time at.
func (t *serialTracker) event(s uint32, i uint64, at int64) {
	if s == 0 {
		return
	}
	if !t.have {
		t.have, t.hi = true, s
		return
	}
	switch d := s - t.hi; {
	case d == 0:
	case d < 1<<31: // forward (wrapping past 2^32-1 to 1: the kernel skips 0)
		lo, hi := t.hi+1, s-1
		if d > 1 && t.hi < s { // a gap across the wrap is not tracked (once in 2^32 events)
			if len(t.missing) < maxSerialRanges {
				t.missing = append(t.missing, serialRange{lo: lo, hi: hi, index: i, at: at})
			} else {
				t.extra += uint64(d - 1)
				t.extraN++
			}
		}
		t.hi = s
	default: // late: fills part of a gap
		t.remove(s, s)
	}
}

// lost takes a LOST leaf into account: the range it names, or else its count.
func (t *serialTracker) lost(first, last uint32, count uint64) {
	if first == 0 || last < first {
		t.counted += count
		return
	}
	t.remove(first, last)
}

func (t *serialTracker) remove(lo, hi uint32) {
	out := t.missing[:0]
	for _, m := range t.missing {
		if hi < m.lo || lo > m.hi {
			out = append(out, m)
			continue
		}
		if m.lo < lo {
			out = append(out, serialRange{lo: m.lo, hi: lo - 1, index: m.index, at: m.at})
		}
		if m.hi > hi {
			out = append(out, serialRange{lo: hi + 1, hi: m.hi, index: m.index, at: m.at})
		}
	}
	t.missing = out
}

// clear forgets the gaps reported, keeping the last serial: the next run of the boot continues from it.
func (t *serialTracker) clear() {
	*t = serialTracker{have: t.have, hi: t.hi}
}

// report returns the serials still missing from gaps found before cut (0: all) beyond what LOST leaves
// counted without naming serials, the number of ranges, the leaf index after the first, and the first
// ranges as text.
func (t *serialTracker) report(cut int64) (n uint64, ranges int, first uint64, text string) {
	var b strings.Builder
	for _, m := range t.missing {
		if cut != 0 && m.at > cut {
			continue
		}
		if ranges == 0 {
			first = m.index
		}
		n += uint64(m.hi-m.lo) + 1
		if ranges < 10 {
			if ranges > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%d..%d", m.lo, m.hi)
		}
		ranges++
	}
	n += t.extra
	ranges += t.extraN
	if t.counted >= n {
		return 0, 0, 0, ""
	}
	n -= t.counted
	if ranges > 10 {
		fmt.Fprintf(&b, " and %d more ranges", ranges-10)
	}
	return n, ranges, first, b.String()
}
