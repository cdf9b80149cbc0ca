package writer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit/raw"
)

// A disk that refuses the writer's blocks (full, or failing): what the log says about it (outage), what
// the writer counts of the leaves it holds meanwhile (tally), and how a run ends when the disk still
// refuses them at Close (the reserve, rescue). docs/format.md, "Full disk".

// ReserveFile, in the archive directory, holds ReserveBytes of disk space that the writer gives back only
// to end its run on a disk that refuses its last blocks (rescue): the LOST leaf for what it could not
// keep, the STOP, the seal and the final checkpoint can then always be written, even when something
// else filled the disk.
//
// A file of its own, allocated with fallocate (zeros written where the filesystem has no fallocate), not
// space kept inside the segment: the segments stay exactly the bytes they hold, and a rotation has no
// reserve to hand over. Its cost is that between truncating it and writing the rescue (microseconds,
// nothing in between) a program writing to the same filesystem at that very moment could take the room;
// the rescue then fails and the archive ends as after a crash, which the next START records. On
// copy-on-write filesystems with snapshots (btrfs, ZFS) freeing blocks may give no room back.
//
// Create allocates the file, or finds it allocated (fallocate over allocated blocks needs no room), and
// fails when it cannot: a run that could not record its own stop does not start. The rescue truncates it
// to zero; the next Create allocates it again once the disk has room. Deleting it while a writer runs gives
// nothing back (the writer holds it open).
const ReserveFile = "RESERVE"

// ReserveBytes is the size of the reserve: twice what a rescue writes at most, from the format's limits:
//   - the stop's block: a KEY leaf and its checkpoint, at most one LOST leaf per reason, STOP,
//     SEAL and the final checkpoint: two checkpoints of at most archive.MaxNote (4 KiB) and control
//     leaves of a few hundred bytes, under 10 KiB;
//   - when the disk refused a rotation's next segment: that segment's header, magic and JSON with a
//     frontier of at most 64 hashes and the previous checkpoint (at most MaxNote), under 8 KiB;
//   - the filesystem's rounding (the last block of each of the two files) and metadata (a directory
//     block, an extent block): four blocks of 4 KiB.
//
// That is under 32 KiB: 64 KiB, sixteen 4 KiB blocks.
const ReserveBytes = 64 << 10

// reserve opens dir's ReserveFile, allocating ReserveBytes unless they are allocated already.
func reserve(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, ReserveFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("archive reserve: %w", err)
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, ReserveBytes)
	if errors.Is(err, unix.EOPNOTSUPP) {
		_, err = f.WriteAt(make([]byte, ReserveBytes), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("archive %s: no room for the %d KiB that a run keeps to record its stop on a full disk (%s): %w",
			dir, ReserveBytes>>10, ReserveFile, err)
	}
	return f, nil
}

// state is what the flusher knows at the end of a block. Once the block is written, a rescue continues
// the archive from there.
type state struct {
	tree      archive.Frontier
	lastCk    []byte
	ckSize    uint64
	key       *epochKey // the key in charge
	seg       *segment
	sum       segment // seg then
	sealed    bool    // the block sealed seg
	runLeaves uint64
}

// state returns the flusher's state now, at the end of a block that seals the segment if sealed.
func (w *Writer) state(sealed bool) state {
	return state{tree: archive.Frontier{Size: w.tree.Size, Hashes: slices.Clone(w.tree.Hashes)}, lastCk: w.lastCk, ckSize: w.ckSize,
		key: w.key, seg: w.seg, sum: *w.seg, sealed: sealed, runLeaves: w.runLeaves}
}

// rescue ends the run when Close finds that the disk still refuses the last blocks (cause), so that
// every event handed to Append is durable or counted in a LOST leaf, and the run ends with its STOP, not
// as a crash. It gives up the blocks not written, and the events a rotation kept waiting for its segment;
// cuts back the bytes of a block the disk took only in part (they were never durable: no reader went
// past Durable); goes back to the state at the end of the last block written; releases the reserve; and
// writes one block: a KEY leaf whose checkpoint the identity key signs (the key in charge then may be
// erased, or its epoch over), a LOST leaf per reason for the leaves given up (their events, and the
// counts of their LOST leaves: local_drop counts the events), STOP, SEAL and the final checkpoint. When
// the disk had refused a rotation's next segment, that segment is created first, for the block. Only the
// flusher calls it, as its last act; it returns Close's error.
func (w *Writer) rescue(cause error) error {
	now := w.opts.Now()
	var t tally
	for _, p := range w.writeWait {
		t.merge(&p.tally)
	}
	w.mu.Lock()
	for off := 0; off < len(w.buf); {
		l := archive.EntryHeadSize + int(binary.LittleEndian.Uint32(w.buf[off+1:]))
		t.add(w.buf[off+archive.EntryHeadSize : off+l])
		off += l
	}
	given := t.events // events held in memory, not written
	t.counts[raw.LostLocal] += given + w.dropped
	t.counts[raw.LostBacklog] += w.shed
	w.recorded += given + w.dropped
	w.buf, w.dropped, w.shed, w.held = w.buf[:0], 0, 0, 0
	w.mu.Unlock()
	l := w.opts.Log.Error().Err(cause).Uint64("held", given).Uint64("dropped", t.counts[raw.LostLocal])
	if !w.outage.since.IsZero() {
		l = l.Dur("refused_for", now.Sub(w.outage.since))
	}
	l.Msg("archive disk refused the last blocks at stop: the events held are counted in a LOST leaf, written with the STOP into the reserve")

	err := w.rollBack()
	if err == nil {
		err = w.reserve.Truncate(0)
	}
	if err == nil && w.seg == nil {
		err = w.openSegment(w.at.sum.number+1, now, w.key.vkey, w.at.sum.kernel.Header())
	}
	if err == nil {
		ent, kerr := w.rekey(nil, now)
		var lost tally
		for r := range t.losts {
			if t.losts[r] > 0 || t.counts[r] > 0 {
				ent = w.addLost(ent, raw.LostReason(r), t.counts[r], now)
				lost.losts[r]++
			}
		}
		ent = w.addControl(ent, archive.LeafStop, now, archive.Stop{Reason: "stopped", Events: w.runLeaves})
		ent = w.seal(ent, now, false)
		w.mu.Lock()
		w.appended = w.written + lost.leaves()
		w.mu.Unlock()
		w.queue(w.seg.f, ent, 0, true, lost)
		if err = w.writeQueued(); err == nil {
			err = kerr
		}
	}
	switch {
	case err != nil:
		// Give the segments' descriptors back: what they lack stays as a crash would leave it.
		for _, p := range w.writeWait {
			p.f.Close()
		}
		if w.seg != nil {
			w.seg.f.Close()
		}
		w.opts.Log.Error().Err(err).Msg("archive: the stop could not be written even into the reserve; the run ends as a crash")
		return fmt.Errorf("archive not fully written: %w", errors.Join(cause, err))
	case t.counts[raw.LostLocal] > 0:
		return fmt.Errorf("archive disk refused the last blocks at stop: %d events held in memory not written, counted in a LOST leaf (local_drop %d) before the STOP: %w",
			given, t.counts[raw.LostLocal], cause)
	}
	return nil
}

// rollBack gives up the blocks not written and goes back to the state at the end of the last block
// written (w.at), with the bytes of a block the disk took in part cut back. Then w.seg is the segment to
// continue, or nil when the last block written sealed its segment and the next one does not exist.
func (w *Writer) rollBack() error {
	if len(w.writeWait) > 0 {
		if p := &w.writeWait[0]; p.written > 0 {
			fi, err := p.f.Stat()
			if err == nil {
				err = p.f.Truncate(fi.Size() - int64(p.written))
			}
			if err != nil {
				return fmt.Errorf("cut back a block written in part: %w", err)
			}
		}
		w.writeWait = w.writeWait[:0]
	}
	d := w.at
	if w.key != d.key {
		w.key.Erase()
	}
	w.key, w.tree, w.lastCk, w.ckSize, w.runLeaves = d.key, d.tree, d.lastCk, d.ckSize, d.runLeaves
	switch s := w.seg; {
	case !d.sealed: // its last block written is d's: published
		f := d.seg.f
		*d.seg = d.sum
		d.seg.f, d.seg.tmp = f, ""
		w.seg = d.seg
	case s != nil: // the next segment: its header, nothing after it durable
		*s = segment{f: s.f, name: s.name, tmp: s.tmp, number: s.number, first: s.first, end: s.end}
	}
	return nil
}

// outageSummary is how often the log repeats that the disk still refuses writes; outageSettle how long it
// must take writes before the outage is over (a disk at its limit takes a small block, then refuses the
// next: one outage, not a line per flap).
const (
	outageSummary = time.Minute
	outageSettle  = time.Second
)

// outage is a period in which the disk refuses the writer's blocks, as the log tells it: one line when it
// starts (with the error), a summary at most every outageSummary (events held, dropped so far), one line
// when the disk takes writes again (how long it refused them, how many events were dropped) — not a line
// per flush. Owned by the flusher.
type outage struct {
	since, logged time.Time // since is zero while the disk takes writes
	recovered     time.Time // the first write it took since it last refused one (zero: none yet)
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
		if o.recovered.IsZero() {
			o.recovered = now
		}
		if now.Sub(o.recovered) >= outageSettle {
			w.endOutage(dropped)
		}
	case o.since.IsZero():
		*o = outage{since: now, logged: now, dropped: dropped}
		w.opts.Log.Error().Err(err).Str("disk_full", string(w.opts.DiskFull)).Int("max_pending_bytes", w.opts.MaxPending).
			Msg("archive write failed: events are held in memory and retried, beyond max_pending dropped and counted; logged again at most once a minute while it lasts")
	case !o.recovered.IsZero():
		o.recovered = time.Time{} // it took a write and refused the next: the same outage
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

// endOutage logs that the disk takes writes again, if an outage was going on. dropped is Stats' dropped.
func (w *Writer) endOutage(dropped uint64) {
	o := &w.outage
	if o.since.IsZero() || o.recovered.IsZero() {
		return
	}
	w.opts.Log.Warn().Dur("refused_for", o.recovered.Sub(o.since)).Uint64("dropped", dropped-o.dropped).
		Msg("archive disk takes writes again")
	*o = outage{}
}

// LostReasons bounds the LOST reasons the writer counts by (raw.LostReason values below it; a leaf of
// another is counted as 0, unknown).
const LostReasons = raw.LostUnregistered + 1

// tally counts the event and LOST leaves of some blocks or entries: how many were written (Stats), and
// what a stop that cannot write them must count in its LOST leaves.
type tally struct {
	events  uint64              // event leaves
	records uint64              // the kernel records they hold
	losts   [LostReasons]uint64 // LOST leaves by reason
	counts  [LostReasons]uint64 // the events they count, by reason
}

// add counts one leaf (an event or LOST leaf as AppendEventLeaf encodes it).
func (t *tally) add(leaf []byte) {
	switch archive.LeafKind(leaf[0]) {
	case archive.LeafEvent:
		t.events++
		// After the fixed part (kind, flags, serial, sec, msec, received): uvarint record count.
		if len(leaf) > 26 {
			n, _ := binary.Uvarint(leaf[26:])
			t.records += n
		}
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

// merge adds o's counts to t.
func (t *tally) merge(o *tally) {
	t.events += o.events
	t.records += o.records
	for r := range t.losts {
		t.losts[r] += o.losts[r]
		t.counts[r] += o.counts[r]
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
