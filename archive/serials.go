package archive

import (
	"errors"
	"io"
	"slices"
	"time"

	"github.com/auditarch/auditarch/audit/raw"
)

// Bounds of ScanSerials: how far back a restarting daemon looks for serials its killed predecessors
// left unaccounted. A run that stopped cleanly reported all of its gaps (its STOP ends the scan).
const (
	maxScanSegments = 64
	maxScanEvents   = 8 << 20 // 32 MiB of serials
)

// Serials is where an archive's events leave the kernel's serial numbers in the current boot.
type Serials struct {
	Last     uint32 // the highest serial archived since the boot (0: none)
	LastLeaf int64  // the time of the archive's last leaf (unix ns)
	// Missing are the ranges below Last that are neither archived nor inside a LOST leaf, in the segments
	// since the last clean STOP: gaps a run was killed before it could report.
	Missing [][2]uint32
}

// ScanSerials reads the newest segments of dir back to the one holding the last STOP (at most
// maxScanSegments segments, maxScanEvents events) and returns where their events of the boot at boot
// leave the kernel's serials. A daemon continues from it (audit.Reassembler.Resume): kernel serials run
// on over the daemon's runs, so everything since the last one archived was issued while no daemon was
// registered, and the gaps a killed run left are still to be reported.
func ScanSerials(dir string, boot time.Time) (Serials, error) {
	var s Serials
	files, err := ListSegments(dir)
	if err != nil {
		return s, err
	}
	bootNs := boot.UnixNano()
	var serials []uint32
	var lost [][2]uint32
	var leaf Leaf
	for i := len(files) - 1; i >= 0 && i >= len(files)-maxScanSegments && len(serials) < maxScanEvents; i-- {
		// Damage (a killed run's torn end) ends that segment's part, not the scan.
		if stopped, _ := scanSegment(files[i], bootNs, &leaf, &serials, &lost, &s.LastLeaf); stopped {
			break
		}
	}
	if len(serials) == 0 {
		return s, nil
	}
	slices.Sort(serials)
	s.Last = serials[len(serials)-1]
	slices.SortFunc(lost, func(a, b [2]uint32) int { return int(int64(a[0]) - int64(b[0])) })
	for k := 1; k < len(serials); k++ {
		lo, hi := serials[k-1]+1, serials[k]-1
		if serials[k] <= serials[k-1]+1 {
			continue
		}
		for _, l := range lost { // cut the LOST ranges out of lo..hi
			if l[1] < lo || l[0] > hi {
				continue
			}
			if l[0] > lo {
				s.Missing = append(s.Missing, [2]uint32{lo, l[0] - 1})
			}
			lo = max(lo, l[1]+1)
			if l[1] >= hi {
				lo = hi + 1
				break
			}
		}
		if lo <= hi {
			s.Missing = append(s.Missing, [2]uint32{lo, hi})
		}
	}
	return s, nil
}

// scanSegment adds the serials of the segment's events of the boot and its LOST ranges, and reports
// whether the segment holds a STOP. The newest leaf time of all is kept in lastLeaf.
func scanSegment(path string, bootNs int64, leaf *Leaf, serials *[]uint32, lost *[][2]uint32, lastLeaf *int64) (stopped bool, err error) {
	s, err := OpenSegment(path)
	if err != nil {
		return false, err
	}
	defer s.Close()
	if _, err := s.ReadHeader(); err != nil {
		return false, err
	}
	for len(*serials) < maxScanEvents {
		typ, p, err := s.Next()
		if errors.Is(err, io.EOF) {
			return stopped, nil
		}
		if err != nil {
			return stopped, err // a torn end: what came before it counts
		}
		if typ != EntryLeaf || DecodeLeaf(p, leaf) != nil {
			continue
		}
		*lastLeaf = max(*lastLeaf, leaf.Time)
		switch leaf.Kind {
		case LeafStop:
			stopped = true
		case LeafEvent:
			if leaf.Event.Serial != 0 && EventKernelTime(p) >= bootNs {
				*serials = append(*serials, leaf.Event.Serial)
			}
		case LeafLost:
			if l := leaf.Event.Lost; l.First != 0 && l.Reason != raw.LostKernel {
				*lost = append(*lost, [2]uint32{l.First, l.Last})
			}
		}
	}
	return stopped, nil
}
