package archive

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// PruneFile, in an archive directory, records the oldest segments that retention removed from the host
// (archive/retain) and the store receipt that attested them (docs/format.md, "Retention"). It is not
// evidence: root on the host can write it. The receipt in it is, once it opens under the pinned store key
// and the archive that remains reaches the receipt's size with the receipt's root.
//
// The file holds two slots of PruneSlotSize bytes, allocated once (PruneFile is created full size), and
// each update overwrites the slot that does not hold the newest record: a crash leaves the old record or
// the new one, and an update needs no free blocks, so that a full disk can still be pruned.
const (
	PruneFile     = "PRUNED"
	PruneSlotSize = 32 << 10
	pruneSlotHead = 8 // u32 length, u32 CRC-32C of the JSON
)

// PruneRecord says that leaves 0..FirstIndex-1 (Segments segment files) were removed from the host after
// the store acknowledged them in Receipt.
type PruneRecord struct {
	Format     int    `json:"format"` // FormatV1
	Seq        uint64 `json:"seq"`    // counts updates: the slot with the larger one is the record
	Origin     string `json:"origin"`
	Identity   string `json:"identity,omitempty"` // the host's identity verifier key, as its START leaves name it
	FirstIndex uint64 `json:"first_index"`        // the first leaf kept: the first index of Segment
	Segment    string `json:"segment"`            // the first segment kept
	// Frontier is the tree frontier at FirstIndex (as Segment's header holds it, Frontier.Encode).
	Frontier []string `json:"frontier"`
	// Receipt is the store receipt (its text: the host's signed checkpoint with the store's cosignature)
	// for a tree of at least FirstIndex leaves, whose root the leaves kept reach.
	Receipt  string `json:"receipt"`
	Segments uint64 `json:"segments"` // segment files removed, over every prune
	Time     int64  `json:"time"`     // unix ns of the last prune
}

// OpenPruneFile opens dir's PruneFile for updating, creating it with both slots allocated.
func OpenPruneFile(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, PruneFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("prune record: %w", err)
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, 2*PruneSlotSize)
	if errors.Is(err, unix.EOPNOTSUPP) {
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil && fi.Size() < 2*PruneSlotSize {
			_, err = f.WriteAt(make([]byte, 2*PruneSlotSize-fi.Size()), fi.Size())
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("prune record: allocate %s: %w", PruneFile, err)
	}
	return f, nil
}

// WritePruneRecord writes rec into the slot of f that does not hold prev (the newest record, nil when
// none) and syncs it. rec.Seq is set to prev's plus one.
func WritePruneRecord(f *os.File, prev, rec *PruneRecord) error {
	rec.Format, rec.Seq = FormatV1, 1
	if prev != nil {
		rec.Seq = prev.Seq + 1
	}
	js, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if len(js) > PruneSlotSize-pruneSlotHead {
		return fmt.Errorf("prune record of %d bytes does not fit its slot of %d", len(js), PruneSlotSize-pruneSlotHead)
	}
	b := make([]byte, pruneSlotHead, pruneSlotHead+len(js))
	binary.LittleEndian.PutUint32(b, uint32(len(js)))
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(js, castagnoli))
	b = append(b, js...)
	if _, err := f.WriteAt(b, int64(rec.Seq%2)*PruneSlotSize); err != nil {
		return fmt.Errorf("write prune record: %w", err)
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("write prune record: %w", err)
	}
	return nil
}

// ReadPruneRecord returns the newest intact record of dir's PruneFile: nil without one (no file, or no
// slot that decodes).
func ReadPruneRecord(dir string) (*PruneRecord, error) {
	f, err := os.Open(filepath.Join(dir, PruneFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("prune record: %w", err)
	}
	defer f.Close()
	var best *PruneRecord
	buf := make([]byte, PruneSlotSize)
	for slot := range int64(2) {
		n, err := f.ReadAt(buf, slot*PruneSlotSize)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("prune record: %w", err)
		}
		b := buf[:n]
		if len(b) < pruneSlotHead {
			continue
		}
		l := binary.LittleEndian.Uint32(b)
		if l == 0 || int64(l) > int64(len(b)-pruneSlotHead) {
			continue
		}
		js := b[pruneSlotHead : pruneSlotHead+int(l)]
		if crc32.Checksum(js, castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
			continue
		}
		var r PruneRecord
		if json.Unmarshal(js, &r) != nil || r.Format != FormatV1 || r.Seq%2 != uint64(slot) {
			continue
		}
		if best == nil || r.Seq > best.Seq {
			best = &r
		}
	}
	return best, nil
}
