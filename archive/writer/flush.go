package writer

import (
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/internal/testhook"
	"github.com/auditarch/auditarch/audit/raw"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// cycle turns the events appended since the last cycle into blocks for the open segment, adding the
// control leaves that are due, and queues them for writing. Only the flusher calls it.
//
// Every block that holds leaves ends with a checkpoint that covers them, signed by the epoch key in
// charge: no leaf is ever durable unsigned, so nobody without that key (erased once the next one is
// introduced) can append leaves that verify, even after killing the daemon. A block holds about
// FlushBytes of leaves; a larger batch (the disk stalled) is cut into several, each signed.
func (w *Writer) cycle(now time.Time, final bool) {
	w.mu.Lock()
	batch := w.buf
	w.buf = w.spare[:0]
	w.mu.Unlock()
	// Events appended after the flusher read the clock are in the batch: the block's time is read after
	// taking it, so that no leaf it signs is later than the time its epoch is judged by.
	if t := w.opts.Now(); t.After(now) {
		now = t
	}
	var ent []byte
	// The wall clock against the monotonic one (time.Now's reading, whatever the clock option says). The
	// CLOCK leaf comes first in the block, so that a verifier corrects the gap before anything after it.
	mono := time.Now()
	if drift := now.Round(0).Sub(w.lastWall.Round(0)) - mono.Sub(w.lastMono); drift > clockStep || drift < -clockStep {
		w.opts.Log.Warn().Dur("step", drift).Msg("wall clock stepped")
		ent = w.addControl(ent, archive.LeafClock, now, archive.Clock{StepNanos: int64(drift)})
	}
	w.lastWall, w.lastMono = now, mono
	// An epoch that should have ended long ago (the writer was frozen, the disk stalled, or the clock was
	// stepped forward) is not used for what comes now: the next key is introduced before the batch, so
	// that an epoch key never signs a leaf later than its epoch allows (MaxEpoch).
	if now.Sub(w.epochStart) > w.opts.EpochDuration+archive.EpochSlack/2 {
		var err error
		if ent, err = w.rekey(ent, now); err != nil {
			w.opts.Log.Error().Err(err).Msg("sign checkpoint")
		}
	}
	// The batch already holds leaf entries: hash them in place, and build the (last) block on it.
	n, start, leaves := len(batch), 0, len(ent)/archive.EntryHeadSize // (ent holds at most a few control leaves)
	var tl tally
	for off := 0; off < len(batch); {
		l := archive.EntryHeadSize + int(binary.LittleEndian.Uint32(batch[off+1:]))
		leaf := batch[off+archive.EntryHeadSize : off+l]
		w.leafAdded(leaf, now)
		tl.add(leaf)
		off += l
		leaves++
		if (off-start >= w.opts.FlushBytes || leaves >= archive.MaxBlockLeaves-8) && off < len(batch) {
			blk, err := w.checkpoint(append(ent, batch[start:off]...), w.key, now)
			if err != nil {
				w.opts.Log.Error().Err(err).Msg("sign checkpoint")
			}
			w.queue(w.seg.f, blk, off-start, false, tl)
			ent, start, leaves, tl = nil, off, 0, tally{}
		}
	}
	if ent == nil {
		ent = batch[start:]
	} else {
		ent = append(ent, batch[start:]...)
	}
	held := n - start
	if now.Sub(w.lastLeafAt) >= w.opts.HeartbeatInterval {
		ent = w.addControl(ent, archive.LeafHeartbeat, now, archive.Heartbeat{Events: w.runLeaves})
	}
	rotating := !final && !now.Before(w.seg.end)
	var err error
	switch {
	case now.Sub(w.epochStart) >= w.opts.EpochDuration && !final:
		ent, err = w.rekey(ent, now)
	case w.tree.Size > w.ckSize && !final && !rotating:
		ent, err = w.checkpoint(ent, w.key, now)
	}
	if err != nil {
		w.opts.Log.Error().Err(err).Msg("sign checkpoint")
	}
	switch {
	case final:
		ent = w.addControl(ent, archive.LeafStop, now, archive.Stop{Reason: "stopped", Events: w.runLeaves})
		ent = w.seal(ent, now, false)
		w.queue(w.seg.f, ent, held, true, tl)
	case rotating:
		w.rotate(ent, held, tl, now)
	default:
		w.queue(w.seg.f, ent, held, false, tl)
	}
	// queue compressed copies: the batch's storage takes the next events (ent may have outgrown it).
	if start == 0 && cap(ent) > cap(batch) {
		batch = ent
	}
	w.spare = batch[:0]
}

// leafAdded hashes a leaf into the tree and updates the segment's summary.
func (w *Writer) leafAdded(leaf []byte, now time.Time) {
	w.tree.Append(leaf)
	var t int64
	switch k := archive.LeafKind(leaf[0]); {
	case k.Control() && len(leaf) >= 9:
		t = int64(binary.LittleEndian.Uint64(leaf[1:]))
	case len(leaf) >= 26:
		t = int64(binary.LittleEndian.Uint64(leaf[18:])) // received
		w.seg.kernel.Add(archive.EventKernelTime(leaf))
	}
	s := w.seg
	if s.leaves == 0 {
		s.firstTime = t
	}
	s.lastTime = t
	s.leaves++
	w.runLeaves++
	w.lastLeafAt = now
}

// addControl appends a control leaf entry to ent and hashes it into the tree.
func (w *Writer) addControl(ent []byte, kind archive.LeafKind, now time.Time, body any) []byte {
	n0 := len(ent)
	ent = archive.AppendControlLeaf(append(ent, archive.EntryLeaf, 0, 0, 0, 0), kind, now.UnixNano(), body)
	return w.added(ent, n0, now)
}

// addLost appends a LOST leaf entry to ent and hashes it into the tree.
func (w *Writer) addLost(ent []byte, reason raw.LostReason, count uint64, now time.Time) []byte {
	n0 := len(ent)
	ev := lostEvent(reason, count, now.UnixNano())
	ent = archive.AppendEventLeaf(append(ent, archive.EntryLeaf, 0, 0, 0, 0), &ev)
	return w.added(ent, n0, now)
}

// added completes the leaf entry that starts at ent[n0] with its length, and hashes the leaf into the tree.
func (w *Writer) added(ent []byte, n0 int, now time.Time) []byte {
	binary.LittleEndian.PutUint32(ent[n0+1:], uint32(len(ent)-n0-archive.EntryHeadSize))
	w.leafAdded(ent[n0+archive.EntryHeadSize:], now)
	return ent
}

// checkpoint appends a checkpoint of the whole tree signed by s.
func (w *Writer) checkpoint(ent []byte, s note.Signer, now time.Time) ([]byte, error) {
	c := archive.Checkpoint{Origin: w.origin, Size: w.tree.Size, Root: w.tree.Root()}
	msg, err := archive.SignCheckpoint(c, s)
	if err != nil {
		return ent, err
	}
	w.lastCk, w.ckSize, w.ckAt = msg, c.Size, now
	w.seg.checkpoints++
	w.ckQueued++
	return archive.AppendEntry(ent, archive.EntryCheckpoint, msg), nil
}

// rekey introduces the next epoch key with a KEY leaf, signs a checkpoint covering it with the identity
// key, and erases the current key: from then on nothing before this point can be signed again. The
// identity key signs every re-key, so that a stolen epoch key cannot introduce keys of its thief's own.
func (w *Writer) rekey(ent []byte, now time.Time) ([]byte, error) {
	next, err := newEpochKey(w.origin, w.key.epoch+1)
	if err != nil {
		return ent, err
	}
	ent = w.addControl(ent, archive.LeafKey, now, archive.Key{EpochKey: next.vkey, Epoch: next.epoch})
	ent, err = w.checkpoint(ent, w.opts.Identity.Signer, now)
	if err != nil {
		return ent, err
	}
	w.key.Erase()
	w.key, w.epochStart = next, now
	if testhook.EpochKey != nil {
		testhook.EpochKey(next.priv, next.vkey)
	}
	return ent, nil
}

// seal appends the SEAL leaf and the segment's final checkpoint.
func (w *Writer) seal(ent []byte, now time.Time, next bool) []byte {
	s := w.seg
	sl := archive.Seal{Segment: s.number, FirstIndex: s.first, Leaves: s.leaves + 1, FirstTime: s.firstTime,
		Checkpoints: s.checkpoints, Next: next}
	sl.LastTime = now.UnixNano()
	if s.leaves == 0 {
		sl.FirstTime = sl.LastTime
	}
	ent = w.addControl(ent, archive.LeafSeal, now, sl)
	ent, err := w.checkpoint(ent, w.key, now)
	if err != nil {
		w.opts.Log.Error().Err(err).Msg("sign final checkpoint")
	}
	return ent
}

// rotate seals the open segment with ent as its last block and opens the next one. The seal is made
// durable before the successor is created: a successor's header names the seal's checkpoint and the
// frontier after it, so it must never exist without them. After a crash in between, the sealed segment
// announces a successor that is missing, and the next START records that it ended there.
func (w *Writer) rotate(ent []byte, held int, tl tally, now time.Time) {
	old := w.seg
	w.queue(old.f, w.seal(ent, now, true), held, true, tl)
	w.seg, w.next, w.nextKernel = nil, old.number+1, old.kernel.Header()
	w.reopen(now)
}

// reopen creates the segment a rotation is waiting for, once every block before it is durable. Until
// then cycle leaves appended events in memory (Append drops and counts beyond MaxPending).
func (w *Writer) reopen(now time.Time) bool {
	err := w.writeQueued()
	if err == nil {
		err = w.openSegment(w.next, now, w.key.vkey, w.nextKernel)
	}
	if err != nil && w.pruned(err) {
		if err = w.writeQueued(); err == nil {
			err = w.openSegment(w.next, now, w.key.vkey, w.nextKernel)
		}
	}
	w.noteWrite(err)
	return err == nil
}

// queue hands a block for f, holding the leaves tl counts, to the writer.
func (w *Writer) queue(f *os.File, ent []byte, held int, closeAfter bool, tl tally) {
	if len(ent) == 0 && !closeAfter {
		w.mu.Lock()
		w.held -= held
		w.mu.Unlock()
		return
	}
	var data []byte
	if len(ent) > 0 {
		data = archive.AppendBlock(nil, ent)
	}
	var publish *segment
	if s := w.seg; s != nil && s.f == f && s.tmp != "" {
		publish = s
	}
	name := filepath.Base(strings.TrimSuffix(f.Name(), tmpSuffix))
	p := pendingWrite{f: f, data: data, size: w.tree.Size, name: name, close: closeAfter, publish: publish, tally: tl, after: w.state(closeAfter),
		cks: w.ckQueued, ckAt: w.ckAt}
	// Until it is written, the block holds in memory its bytes and the writer's state at its end, not the
	// leaves' (their buffer takes the next events): held counts that, so that MaxPending bounds the memory
	// of a disk that refuses writes for hours, when a quiet host makes many small blocks.
	p.held = len(data) + int(unsafe.Sizeof(p)) + len(p.after.tree.Hashes)*tlog.HashSize
	w.mu.Lock()
	w.held += p.held - held
	w.mu.Unlock()
	w.writeWait = append(w.writeWait, p)
}

// writeQueued writes the queued blocks in order and syncs them. A partial write is resumed from where it
// stopped, so a file only ever holds whole blocks and, after a crash, at most one torn block at its end.
func (w *Writer) writeQueued() error {
	for len(w.writeWait) > 0 {
		p := &w.writeWait[0]
		for len(p.data) > 0 {
			n, err := p.f.Write(p.data)
			p.data = p.data[n:]
			p.written += n
			if err != nil {
				return err // an *os.PathError: "write <segment>: <errno>"
			}
		}
		if w.opts.Sync == SyncBatch || p.close || p.publish != nil {
			if err := p.f.Sync(); err != nil {
				return err // "sync <segment>: <errno>"
			}
		}
		if p.publish != nil {
			if err := w.publish(p.publish); err != nil {
				return err
			}
		}
		off, err := p.f.Seek(0, io.SeekCurrent)
		if err != nil {
			return err
		}
		if p.close {
			p.f.Close()
		}
		w.mu.Lock()
		w.held -= p.held
		w.written += p.tally.leaves()
		w.countDurable(p)
		w.durable = p.size
		w.durPos = archive.Position{Segment: p.name, Offset: off, Size: p.size}
		w.mu.Unlock()
		select {
		case w.durNote <- struct{}{}:
		default:
		}
		w.at = p.after
		w.writeWait = w.writeWait[1:]
	}
	return nil
}

// countDurable adds the block p, now durable, to the counters. w.mu is held.
func (w *Writer) countDurable(p *pendingWrite) {
	c := &w.counters
	c.Events += p.tally.events
	c.Records += p.tally.records
	for r := range c.LostLeaves {
		c.LostLeaves[r] += p.tally.losts[r]
		c.LostEvents[r] += p.tally.counts[r]
	}
	if p.cks > c.Checkpoints {
		c.Checkpoints, c.LastCheckpointAt = p.cks, p.ckAt
	}
	if p.close {
		c.Sealed++
	}
	if p.size != w.durable || c.DurableAt.IsZero() {
		c.DurableAt = w.opts.Now()
	}
}

// Close writes what was appended, a STOP leaf and the segment's seal with its final checkpoint, syncs, and
// releases the directory. Events appended after Close are counted as dropped. When the disk still refuses
// the last blocks after a while (50 flush intervals), the run ends in the reserve instead (see rescue):
// the events not written are counted in a LOST leaf before the STOP, Stats counts them as dropped, and
// Close returns an error that says how many, wrapping the write error. If even that cannot be written,
// it returns an error wrapping the write error, and the archive ends as after a crash.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	// Drops that no later Append reported must be in the archive itself.
	w.appendLost()
	w.closed = true
	w.mu.Unlock()
	close(w.done)
	<-w.stopped
	if w.key != nil {
		w.key.Erase()
	}
	w.reserve.Close()
	w.lock.Close()
	return w.closeErr
}
