package writer

import (
	"encoding/binary"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit/raw"
)

// A disk that refuses the writer's blocks (full, or failing): what the log says about it (outage), and
// what the writer counts of the leaves it holds meanwhile (tally). docs/format.md, "Full disk".

// outageSummary is how often the log repeats that the disk still refuses writes.
const outageSummary = time.Minute

// outage is a period in which the disk refuses the writer's blocks, as the log tells it: one line when it
// starts (with the error), a summary at most every outageSummary (events held, dropped so far), one line
// when the disk takes writes again (how long it refused them, how many events were dropped) — not a line
// per flush. Owned by the flusher.
type outage struct {
	since, logged time.Time // since is zero while the disk takes writes
	dropped       uint64    // Stats' dropped when it started
}

// noteWrite records the outcome of a flush: writing the queued blocks, or creating a segment. Only the
// flusher calls it.
func (w *Writer) noteWrite(err error) {
	w.mu.Lock()
	w.werr = err
	held, heldLeaves, dropped := w.held, w.appended-w.written, w.recorded+w.dropped
	w.mu.Unlock()
	o, now := &w.outage, w.opts.Now()
	switch {
	case err == nil && o.since.IsZero():
	case err == nil:
		w.opts.Log.Warn().Dur("refused_for", now.Sub(o.since)).Uint64("dropped", dropped-o.dropped).
			Msg("archive disk takes writes again")
		*o = outage{}
	case o.since.IsZero():
		*o = outage{since: now, logged: now, dropped: dropped}
		w.opts.Log.Error().Err(err).Str("disk_full", string(w.opts.DiskFull)).Int("max_pending_bytes", w.opts.MaxPending).
			Msg("archive write failed: events are held in memory and retried, beyond max_pending dropped and counted; logged again at most once a minute while it lasts")
	case now.Sub(o.logged) >= outageSummary:
		o.logged = now
		w.opts.Log.Warn().Err(err).Dur("refused_for", now.Sub(o.since)).Uint64("held", heldLeaves).Int("held_bytes", held).
			Uint64("dropped", dropped-o.dropped).Msg("archive disk still refuses writes")
	}
	if err != nil && w.opts.DiskFull == DiskFullExit {
		select {
		case w.failed <- err:
		default:
		}
	}
}

// tally counts the event and LOST leaves of some blocks or entries: how many were written (Stats), and
// what a stop that cannot write them must count in its LOST leaves.
type tally struct {
	events uint64                      // event leaves
	losts  [raw.LostBacklog + 1]uint64 // LOST leaves by reason
	counts [raw.LostBacklog + 1]uint64 // the events they count, by reason
}

// add counts one leaf (an event or LOST leaf as AppendEventLeaf encodes it).
func (t *tally) add(leaf []byte) {
	switch archive.LeafKind(leaf[0]) {
	case archive.LeafEvent:
		t.events++
	case archive.LeafLost:
		// After the fixed part (kind, flags, serial, sec, msec, received): u8 reason, u64 count.
		r := leaf[26]
		if int(r) >= len(t.losts) {
			r = 0 // no such reason: kept as "unknown"
		}
		t.losts[r]++
		t.counts[r] += binary.LittleEndian.Uint64(leaf[27:])
	}
}

// leaves is the number of leaves counted.
func (t *tally) leaves() uint64 {
	n := t.events
	for _, l := range t.losts {
		n += l
	}
	return n
}
