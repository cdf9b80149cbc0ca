package verify

import (
	"fmt"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"golang.org/x/mod/sumdb/note"
)

// PrunedReport says what the archive's prune record (archive.PruneFile) claims retention removed, and
// whether the store's receipt in it attests it (docs/format.md, "Retention").
type PrunedReport struct {
	Leaves   uint64 `json:"leaves"`   // leaves 0..Leaves-1 are not in the archive
	Segments uint64 `json:"segments"` // segment files the record says were removed
	// Receipt is the store receipt the record holds: its tree size and time.
	Receipt *ReceiptReport `json:"receipt,omitempty"`
	// Status is PruneAttested: the receipt opens under the pinned store key, covers the leaves removed,
	// and the leaves kept reach its root; those leaves are not reported missing. Otherwise it is why not
	// (PruneNoStoreKey, PruneReceipt, CodeOrigin, PruneUncovered, PruneRecord, CodeFork,
	// ReceiptUnchecked), and the leaves are reported missing as without a record.
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

// Prune statuses beyond the problem codes.
const (
	PruneAttested   = "attested"
	PruneNoStoreKey = "no-store-key" // no store key was given: the receipt is not checked
	PruneReceipt    = "receipt"      // the record's receipt does not open under the pinned store key
	PruneUncovered  = "uncovered"    // the receipt does not cover the leaves missing, or the record does not name them
	PruneRecord     = "record"       // the record's frontier is not the archive's at its first leaf kept
	prunePending    = "pending"
)

// pruneState is a prune record being judged.
type pruneState struct {
	rec      *archive.PruneRecord
	ck       archive.Checkpoint // the receipt's checkpoint
	applied  bool               // the archive's first segment starts where the record says leaves were removed
	done     bool               // attested or refused
	first    uint64             // the archive's first leaf
	deferred []deferredRange    // leaves no chained key signs, below the receipt's size: the receipt decides
}

// deferredRange is leaves [from, to) of the segment report seg.
type deferredRange struct {
	seg      int
	from, to uint64
}

// setPrune takes the archive's prune record: its receipt must open under the pinned store key.
func (v *verifier) setPrune(rec *archive.PruneRecord) {
	pr := &PrunedReport{Leaves: rec.FirstIndex, Segments: rec.Segments, Status: prunePending}
	v.r.Pruned = pr
	if v.opts.StoreKey == nil {
		pr.Status, pr.Message = PruneNoStoreKey, "no store key given (--store-key): the removed leaves count as missing"
		return
	}
	c, t, err := receipt.Open([]byte(rec.Receipt), v.opts.StoreKey)
	if err != nil {
		pr.Status, pr.Message = PruneReceipt, err.Error()
		return
	}
	pr.Receipt = &ReceiptReport{Size: c.Size, Time: t.UTC().Format(time.RFC3339), Status: prunePending}
	v.prune = &pruneState{rec: rec, ck: c}
}

// applyPrune decides, at the archive's first segment (header h, first leaf > 0), whether the prune record
// may explain the leaves before it. When it returns false they are missing, as without a record.
func (v *verifier) applyPrune(h archive.SegmentHeader) bool {
	p, pr := v.prune, v.r.Pruned
	if pr != nil {
		pr.Leaves = h.FirstIndex // what is missing, whatever the record says
	}
	if p == nil {
		return false
	}
	v.prune = nil
	switch {
	case p.ck.Origin != v.origin || p.rec.Origin != v.origin:
		pr.Status, pr.Message = CodeOrigin, fmt.Sprintf("the receipt is for origin %q, the record for %q, the archive is %q", p.ck.Origin, p.rec.Origin, v.origin)
		return false
	case h.FirstIndex > p.rec.FirstIndex:
		pr.Status, pr.Message = PruneUncovered, fmt.Sprintf("the archive starts at leaf %d, the record says leaves 0..%d were removed", h.FirstIndex, p.rec.FirstIndex-1)
		return false
	case h.FirstIndex >= p.ck.Size:
		pr.Status, pr.Message = PruneUncovered, fmt.Sprintf("the receipt covers %d leaves: it does not reach past the leaves removed (0..%d)", p.ck.Size, h.FirstIndex-1)
		return false
	case h.FirstIndex == p.rec.FirstIndex && fmt.Sprint(h.Frontier) != fmt.Sprint(p.rec.Frontier):
		pr.Status, pr.Message = PruneRecord, "the record's tree frontier is not the first segment's"
		return false
	}
	if v.identity == nil && p.rec.Identity != "" {
		// Not pinned: as the first START would, the record names the identity key (reported not pinned).
		if id, err := note.NewVerifier(p.rec.Identity); err == nil && id.Name() == v.origin {
			v.identity, v.r.Identity = id, p.rec.Identity
		}
	}
	p.applied, p.first = true, h.FirstIndex
	v.prune = p
	return true
}

// pruneCheck judges the prune record when the tree reaches the receipt's size (and the record's first
// leaf, when a crash left segments the record counts as removed).
func (v *verifier) pruneCheck() {
	p := v.prune
	if p == nil || !p.applied || p.done {
		return
	}
	if v.tree.Size == p.rec.FirstIndex && p.first < p.rec.FirstIndex && fmt.Sprint(v.tree.Encode()) != fmt.Sprint(p.rec.Frontier) {
		v.refusePrune(PruneRecord, "the record's tree frontier is not the archive's at its first leaf kept")
		return
	}
	if v.tree.Size != p.ck.Size {
		return
	}
	if v.tree.Root() != p.ck.Root {
		v.problem(Tampered, CodeFork, idx(v.tree.Size-1), "the archive's first %d leaves differ from those the store acknowledged at %s (the prune record's receipt): the host's history was rewritten (a fork)",
			p.ck.Size, v.r.Pruned.Receipt.Time)
		v.refusePrune(CodeFork, "the leaves kept do not reach the receipt's root")
		return
	}
	p.done = true
	v.r.Pruned.Status, v.r.Pruned.Receipt.Status = PruneAttested, ReceiptConsistent
	for _, d := range p.deferred {
		v.r.Segments[d.seg].Verified += d.to - d.from
	}
	p.deferred = nil
}

// refusePrune reports the leaves the record claims pruned as missing after all, and the leaves whose
// judgement waited for the receipt as unverified.
func (v *verifier) refusePrune(status, msg string) {
	p, pr := v.prune, v.r.Pruned
	p.done = true
	pr.Status, pr.Message = status, msg
	pr.Receipt.Status = status
	seg := v.seg
	v.seg = &v.r.Segments[0]
	v.problem(Incomplete, CodeMissingStart, nil, "the archive starts at leaf %d: leaves 0..%d are missing (the prune record does not account for them: %s)", p.first, p.first-1, msg)
	v.missing = append(v.missing, [2]uint64{0, p.first})
	open, openFirst := v.unverified, v.unvFirst // a stretch being reported now is another one
	v.unverified = -1
	for _, d := range p.deferred {
		v.seg = &v.r.Segments[d.seg]
		v.unverifiedFrom(d.from, d.to)
	}
	v.seg, v.unverified, v.unvFirst = seg, open, openFirst
	p.deferred = nil
}

// unverifiedOrAttested records that leaves [from, to) are not covered by a checkpoint the chain vouches
// for. Below the prune record's receipt, the receipt decides (pruneCheck): attested, they count as
// verified; otherwise they are reported unverified then.
func (v *verifier) unverifiedOrAttested(from, to uint64) {
	p := v.prune
	if p == nil || !p.applied || p.done || from >= p.ck.Size || v.seg == nil {
		v.unverifiedFrom(from, to)
		return
	}
	from = max(from, v.seg.FirstIndex)
	end := min(to, p.ck.Size)
	if end > from {
		p.deferred = append(p.deferred, deferredRange{seg: len(v.r.Segments) - 1, from: from, to: end})
	}
	v.unverifiedFrom(end, to)
}
