// Package retain removes the oldest segments of an archive from the host once they are safe elsewhere
// (docs/format.md, "Retention"; docs/operate.md). A segment is removed only when all of these hold:
//   - a store receipt that opens under the pinned store key covers every leaf of it (the receipt's tree
//     size is past its last leaf), and the leaves the host keeps reach that receipt's root: the store
//     holds this very history;
//   - every consumer (each cursor file named, and every DIR/cursors/*.json) has passed it;
//   - it is older than Keep, or the archive is over its budget (MaxBytes, or the bytes a full disk needs);
//   - every older segment goes with it (only a prefix of the archive is removed, oldest first), and the
//     newest segment stays;
//   - the first segment kept holds a START or KEY leaf whose identity-signed checkpoint the receipt
//     covers, so that verify re-establishes the key chain inside what the receipt attests.
//
// Before a file is removed, the prune record (archive.PruneFile) names the first leaf kept, the tree
// frontier there and the receipt; verify takes the missing leaves as pruned only on the receipt's word.
package retain

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/internal/durable"
)

// Options configure a Pruner.
type Options struct {
	Dir      string                  // the archive directory
	StoreKey *receipt.CosignVerifier // the pinned store key: only receipts it cosigned count
	Origin   string                  // the archive's origin: receipts for another are ignored
	Identity string                  // the host's identity verifier key, recorded for verify (optional)
	// Receipts is the receipts file the shipper keeps; default Dir/receipts.
	Receipts string
	// Cursors are the cursor files of the archive's consumers (archive.SaveCursor). A file that does not
	// exist is a consumer that has passed nothing. Every Dir/cursors/*.json counts too.
	Cursors []string
	// Positions are consumers that keep their place otherwise (the alert consumer's state): each returns
	// the index of the first leaf it still needs, and ok false when it needs none of what is archived.
	Positions []func() (index uint64, ok bool, err error)
	// Keep is how long segments stay on the host once safe; 0 keeps them forever (only the budget
	// and a full disk remove them).
	Keep time.Duration
	// MaxBytes is the budget for the segment files; 0 is none.
	MaxBytes int64
	Now      func() time.Time // default time.Now
	Log      zerolog.Logger
}

// Pruner removes segments as Options say. Its methods may be called from several goroutines.
type Pruner struct {
	opts Options
	mu   sync.Mutex
	f    *os.File // PruneFile
}

// New opens the archive's prune record (allocating it: a full disk can then still be pruned).
func New(opts Options) (*Pruner, error) {
	if opts.StoreKey == nil || opts.Dir == "" || opts.Origin == "" {
		return nil, errors.New("retain: the archive directory, its origin and the store key are required")
	}
	if opts.Receipts == "" {
		opts.Receipts = filepath.Join(opts.Dir, receipt.ReceiptsFile)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	f, err := archive.OpenPruneFile(opts.Dir)
	if err != nil {
		return nil, err
	}
	return &Pruner{opts: opts, f: f}, nil
}

// Close releases the prune record, once a pass under way has ended.
func (p *Pruner) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.f.Close()
}

// Result is what one pass did.
type Result struct {
	Segments int    // files removed
	Freed    int64  // their bytes
	Kept     uint64 // the first leaf kept (0: nothing pruned yet)
	Limit    uint64 // leaves that may go: the receipt's size, or less where a consumer is behind
	Receipt  uint64 // the receipt's tree size
}

// segInfo is a segment file and its header.
type segInfo struct {
	path string
	name string
	size int64
	h    archive.SegmentHeader
}

// Prune runs one pass: it removes the segments Options allow, and at least need bytes' worth of them
// (a full disk), oldest first, as far as they are safe. It never removes a segment that is not safe,
// whatever need says.
func (p *Pruner) Prune(need int64) (Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var res Result
	o := p.opts
	rc, text, ok, err := receipt.Last(o.Receipts, o.StoreKey)
	if err != nil {
		return res, fmt.Errorf("retain: %w", err)
	}
	if !ok || rc.Checkpoint.Origin != o.Origin {
		return res, nil // nothing the store attested
	}
	res.Receipt = rc.Checkpoint.Size
	limit, err := p.consumers()
	if err != nil {
		return res, err
	}
	res.Limit = min(limit, rc.Checkpoint.Size)
	files, err := archive.ListSegments(o.Dir)
	if err != nil {
		return res, err
	}
	segs := make([]segInfo, 0, len(files))
	var total int64
	for _, path := range files {
		fi, err := os.Stat(path)
		if err != nil {
			return res, err
		}
		h, err := archive.ReadSegmentHeader(path)
		if err != nil {
			break // damage: nothing at or after it is pruned
		}
		segs = append(segs, segInfo{path: path, name: filepath.Base(path), size: fi.Size(), h: h})
		total += fi.Size()
	}
	if len(segs) > 0 {
		res.Kept = segs[0].h.FirstIndex
	}
	// cut: segments [0, cut) go. Segment i may go when every leaf of it is below the limit (the next
	// header's first index), it is old enough or the budget needs it, and it is not the last.
	now := o.Now()
	cut, freed := 0, int64(0)
	for i := 0; i+1 < len(segs) && i+1 < len(files); i++ {
		next := segs[i+1].h
		if next.FirstIndex > res.Limit || next.Origin != o.Origin || next.FirstIndex < segs[i].h.FirstIndex {
			break
		}
		old := o.Keep > 0 && now.Sub(time.Unix(0, next.Start)) >= o.Keep
		over := o.MaxBytes > 0 && total-freed > o.MaxBytes
		if !old && !over && freed >= need {
			break
		}
		cut, freed = i+1, freed+segs[i].size
	}
	// The first segment kept must let verify continue: back off until it does.
	for ; cut > 0; cut-- {
		if err := p.continues(segs[cut:], rc.Checkpoint); err == nil {
			break
		} else {
			o.Log.Debug().Err(err).Str("segment", segs[cut].name).Msg("retention: the archive cannot be pruned up to this segment")
		}
	}
	if cut == 0 {
		return res, nil
	}
	prev, err := archive.ReadPruneRecord(o.Dir)
	if err != nil {
		return res, err
	}
	first := segs[cut]
	rec := &archive.PruneRecord{Origin: o.Origin, Identity: o.Identity, FirstIndex: first.h.FirstIndex, Segment: first.name,
		Frontier: first.h.Frontier, Receipt: string(text), Segments: uint64(cut), Time: now.UnixNano()}
	if prev != nil {
		rec.Segments += prev.Segments
	}
	if err := archive.WritePruneRecord(p.f, prev, rec); err != nil {
		return res, fmt.Errorf("retain: %w", err)
	}
	for _, s := range segs[:cut] {
		if err := os.Remove(s.path); err != nil {
			return res, fmt.Errorf("retain: %w", err)
		}
		res.Segments++
		res.Freed += s.size
	}
	res.Kept = first.h.FirstIndex
	if err := durable.SyncDir(o.Dir); err != nil {
		return res, fmt.Errorf("retain: %w", err)
	}
	o.Log.Info().Int("segments", res.Segments).Int64("freed", res.Freed).Uint64("first_kept", res.Kept).
		Uint64("receipt_size", rc.Checkpoint.Size).Time("receipt_time", rc.Time).
		Msg("retention: removed segments the store holds under its receipt")
	return res, nil
}

// consumers returns the smallest cursor index of the archive's consumers: the leaves before it were
// delivered by all of them. Without consumers it is the largest index.
func (p *Pruner) consumers() (uint64, error) {
	files := append([]string(nil), p.opts.Cursors...)
	more, err := filepath.Glob(filepath.Join(p.opts.Dir, "cursors", "*.json"))
	if err != nil {
		return 0, err
	}
	limit := ^uint64(0)
	for _, f := range append(files, more...) {
		c, err := archive.LoadCursor(f) // a missing file is the zero cursor: nothing passed
		if err != nil {
			return 0, fmt.Errorf("retain: consumer %w", err)
		}
		limit = min(limit, c.Index)
	}
	for _, pos := range p.opts.Positions {
		i, ok, err := pos()
		if err != nil {
			return 0, fmt.Errorf("retain: consumer: %w", err)
		}
		if ok {
			limit = min(limit, i)
		}
	}
	return limit, nil
}

// continues checks that verify can continue the archive from segs[0] on the receipt's word: the tree
// from its header's frontier and the leaves kept reaches the receipt's size with its root, and a START
// or KEY leaf below that size re-establishes the key chain (the identity key signs the checkpoint that
// follows it, which the format puts right after it).
func (p *Pruner) continues(segs []segInfo, ck archive.Checkpoint) error {
	tree, err := archive.DecodeFrontier(segs[0].h.FirstIndex, segs[0].h.Frontier)
	if err != nil {
		return err
	}
	if tree.Size >= ck.Size {
		return fmt.Errorf("the receipt's %d leaves end before the segment", ck.Size)
	}
	chained := false
	var leaf archive.Leaf
	for _, s := range segs {
		if tree.Size >= ck.Size {
			break
		}
		if s.h.FirstIndex != tree.Size {
			return fmt.Errorf("segment %s starts at leaf %d, the one before ends at %d", s.name, s.h.FirstIndex, tree.Size)
		}
		r, err := archive.OpenSegment(s.path)
		if err != nil {
			return err
		}
		if _, err := r.ReadHeader(); err != nil {
			r.Close()
			return err
		}
		for tree.Size < ck.Size {
			typ, payload, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				r.Close()
				return err
			}
			if typ != archive.EntryLeaf {
				continue
			}
			// (Its index is below the receipt's size, so the checkpoint right after it is at most that size.)
			if !chained && archive.DecodeLeaf(payload, &leaf) == nil && (leaf.Kind == archive.LeafStart || leaf.Kind == archive.LeafKey) {
				chained = true
			}
			tree.Append(payload)
		}
		r.Close()
	}
	switch {
	case tree.Size != ck.Size:
		return fmt.Errorf("the archive kept ends at leaf %d, before the receipt's %d", tree.Size, ck.Size)
	case tree.Root() != ck.Root:
		return fmt.Errorf("the archive kept does not reach the receipt's root at %d leaves: it is not the history the store holds", ck.Size)
	case !chained:
		return errors.New("no START or KEY leaf, with its checkpoint, between the segment's first leaf and the receipt's size")
	}
	return nil
}
