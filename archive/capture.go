// Package archive keeps captured events on disk.
//
// This is the first, unsigned form (capture log v0, docs/format.md): framed, checksummed records, one file
// per daemon run, never rewritten. The raw kernel records of each event are stored verbatim; the decoded
// view is derived when read. Invariant: Append never blocks on the disk, an event counts as archived only
// once the batch holding it is fsynced, and anything that could not be kept becomes a LOST frame with its
// count, never a silent drop.
package archive

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/auditarch/auditarch/audit"
	"github.com/rs/zerolog"
)

// File layout constants of capture log v0.
const (
	fileMagic   = "AUDITARCH-CAPTURE-0\n"
	filePattern = "capture-*.log"
	frameHeader = 8 // u32 payload length, u32 CRC-32C of the payload
	maxFrame    = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options tune a Writer. Zero values take the defaults.
type Options struct {
	FlushInterval time.Duration // how often buffered events are written and fsynced; default 100 ms
	FlushBytes    int           // write early when this much is buffered; default 1 MiB
	MaxPending    int           // bytes held in memory while the disk lags; beyond it events are dropped and counted; default 256 MiB
	Log           zerolog.Logger
}

// Writer appends events to a new capture file in a directory.
type Writer struct {
	opts Options
	f    *os.File
	path string

	mu      sync.Mutex
	buf     []byte // events not yet handed to the flusher
	held    int    // bytes of buf plus the batch the flusher is writing
	dropped uint64 // events dropped since the last LOST frame
	events  uint64
	werr    error
	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{}
	closed  bool
}

// Create opens a new capture file in dir (created 0700 if missing) and starts the flusher.
func Create(dir string, opts Options) (*Writer, error) {
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 100 * time.Millisecond
	}
	if opts.FlushBytes <= 0 {
		opts.FlushBytes = 1 << 20
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 256 << 20
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create archive directory: %w", err)
	}
	name := fmt.Sprintf("capture-%s-%d.log", time.Now().UTC().Format("20060102T150405.000000000Z"), os.Getpid())
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create capture file: %w", err)
	}
	if _, err := f.WriteString(fileMagic); err != nil {
		f.Close()
		return nil, fmt.Errorf("write capture file header: %w", err)
	}
	if err := syncDir(f, dir); err != nil {
		f.Close()
		return nil, err
	}
	w := &Writer{opts: opts, f: f, path: path, kick: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
	go w.flusher()
	return w, nil
}

func syncDir(f *os.File, dir string) error {
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync capture file: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open archive directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync archive directory: %w", err)
	}
	return nil
}

// Path is the capture file being written.
func (w *Writer) Path() string { return w.path }

// Append encodes ev into the in-memory batch. It never waits for the disk: when MaxPending bytes are
// already held the event is dropped and counted, and a LOST frame with the count precedes the next event
// that fits.
func (w *Writer) Append(ev *audit.RawEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		w.dropped++
		return
	}
	if w.held >= w.opts.MaxPending {
		w.dropped++
		return
	}
	w.appendLost()
	w.append(ev)
	if len(w.buf) >= w.opts.FlushBytes {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// appendLost appends a LOST frame for the events dropped since the last one, if any. w.mu is held.
func (w *Writer) appendLost() {
	if w.dropped == 0 {
		return
	}
	now := time.Now().UnixNano()
	lost := audit.RawEvent{Kind: audit.KindLost, EOE: true, Received: now, Sec: now / 1e9, Msec: int32(now % 1e9 / 1e6),
		Lost: audit.Lost{Reason: audit.LostLocal, Count: w.dropped}}
	w.opts.Log.Error().Uint64("dropped", w.dropped).Msg("archive fell behind: events dropped")
	w.append(&lost)
	w.dropped = 0
}

func (w *Writer) append(ev *audit.RawEvent) {
	n0 := len(w.buf)
	w.buf = AppendFrame(w.buf, ev)
	w.held += len(w.buf) - n0
	w.events++
}

// flusher writes and fsyncs batches until Close.
func (w *Writer) flusher() {
	defer close(w.stopped)
	t := time.NewTicker(w.opts.FlushInterval)
	defer t.Stop()
	var batch []byte
	for {
		final := false
		select {
		case <-t.C:
		case <-w.kick:
		case <-w.done:
			final = true
		}
		w.mu.Lock()
		if len(batch) == 0 {
			batch, w.buf = w.buf, batch[:0]
		}
		w.mu.Unlock()
		if len(batch) > 0 {
			n, err := w.write(batch)
			w.mu.Lock()
			w.werr = err
			// Fix: keep only what did not reach the file. The whole batch used to be kept after a failed
			// write, so the retry wrote its start again behind the torn frame, and the reader lost the rest
			// of the file at that frame.
			w.held -= n
			if n == len(batch) {
				batch = batch[:0] // reuse the array
			} else {
				batch = batch[n:]
			}
			w.mu.Unlock()
			if err != nil {
				w.opts.Log.Error().Err(err).Msg("archive write failed; retrying, events are held in memory")
			}
		}
		if final {
			// Stop when everything is written, or when the disk refuses it (Close reports the error).
			w.mu.Lock()
			finished := (len(w.buf) == 0 && len(batch) == 0) || w.werr != nil
			w.mu.Unlock()
			if finished {
				return
			}
		}
	}
}

// write appends batch and makes it durable. A partial write is completed on retry from where it stopped:
// the file only ever holds whole frames followed, at worst, by one torn frame after a crash.
// It returns how many bytes of batch reached the file, also on error.
func (w *Writer) write(batch []byte) (int, error) {
	written := 0
	for written < len(batch) {
		n, err := w.f.Write(batch[written:])
		written += n
		if err != nil {
			return written, fmt.Errorf("write %s: %w", w.path, err)
		}
	}
	if err := w.f.Sync(); err != nil {
		return written, fmt.Errorf("sync %s: %w", w.path, err)
	}
	return written, nil
}

// Stats returns the number of events appended (including LOST frames) and dropped so far.
func (w *Writer) Stats() (appended, dropped uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.events, w.dropped
}

// Close writes and fsyncs everything appended, then closes the file. Events appended after Close are
// counted as dropped. If events could not be written it returns the error and how many frames were lost.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	// Fix: drops that no later Append reported went nowhere but Close's error; the archive must say so
	// itself. One small frame beyond MaxPending is fine at this point.
	w.appendLost()
	w.closed = true
	w.mu.Unlock()
	close(w.done)
	<-w.stopped
	w.mu.Lock()
	werr, dropped := w.werr, w.dropped
	w.mu.Unlock()
	err := w.f.Close()
	if werr != nil {
		return fmt.Errorf("archive not fully written: %w", werr)
	}
	if dropped > 0 {
		return fmt.Errorf("%d events dropped at close", dropped)
	}
	return err
}

// AppendFrame appends the v0 frame of ev to b. Layout (little endian): u32 payload length, u32 CRC-32C,
// payload = u8 kind, u8 flags (1 EOE, 2 late), u32 serial, i64 sec, i32 msec, i64 received ns,
// [LOST: u8 reason, u64 count, u32 first, u32 last], uvarint record count, records (u16 type,
// uvarint length, text).
func AppendFrame(b []byte, ev *audit.RawEvent) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
	var flags byte
	if ev.EOE {
		flags |= 1
	}
	if ev.Late {
		flags |= 2
	}
	le := binary.LittleEndian
	b = append(b, byte(ev.Kind), flags)
	b = le.AppendUint32(b, ev.Serial)
	b = le.AppendUint64(b, uint64(ev.Sec))
	b = le.AppendUint32(b, uint32(ev.Msec))
	b = le.AppendUint64(b, uint64(ev.Received))
	if ev.Kind == audit.KindLost {
		b = append(b, byte(ev.Lost.Reason))
		b = le.AppendUint64(b, ev.Lost.Count)
		b = le.AppendUint32(b, ev.Lost.First)
		b = le.AppendUint32(b, ev.Lost.Last)
	}
	b = binary.AppendUvarint(b, uint64(len(ev.Records)))
	for _, r := range ev.Records {
		b = le.AppendUint16(b, r.Type)
		b = binary.AppendUvarint(b, uint64(len(r.Text)))
		b = append(b, r.Text...)
	}
	payload := b[start+frameHeader:]
	le.PutUint32(b[start:], uint32(len(payload)))
	le.PutUint32(b[start+4:], crc32.Checksum(payload, castagnoli))
	return b
}

// ErrCorrupt is wrapped by every *CorruptError.
var ErrCorrupt = errors.New("corrupt capture file")

// CorruptError locates a frame that does not verify: a torn tail after a crash, or damage.
type CorruptError struct {
	Path   string
	Offset int64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("%s: offset %d: %s", e.Path, e.Offset, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// DecodeFrame decodes a frame payload (after the length and checksum) into ev, whose record texts alias
// payload.
func DecodeFrame(p []byte, ev *audit.RawEvent) error {
	le := binary.LittleEndian
	const fixed = 1 + 1 + 4 + 8 + 4 + 8
	if len(p) < fixed {
		return errors.New("frame too short")
	}
	*ev = audit.RawEvent{Records: ev.Records[:0]}
	ev.Kind = audit.Kind(p[0])
	ev.EOE, ev.Late = p[1]&1 != 0, p[1]&2 != 0
	ev.Serial = le.Uint32(p[2:])
	ev.Sec = int64(le.Uint64(p[6:]))
	ev.Msec = int32(le.Uint32(p[14:]))
	ev.Received = int64(le.Uint64(p[18:]))
	p = p[fixed:]
	switch ev.Kind {
	case audit.KindEvent:
	case audit.KindLost:
		if len(p) < 17 {
			return errors.New("LOST frame too short")
		}
		ev.Lost = audit.Lost{Reason: audit.LostReason(p[0]), Count: le.Uint64(p[1:]), First: le.Uint32(p[9:]), Last: le.Uint32(p[13:])}
		p = p[17:]
	default:
		// Fix: this printed p[0] after p was advanced past the header, which named the wrong byte and
		// panicked (index out of range) when nothing followed the header.
		return fmt.Errorf("unknown frame kind %d", ev.Kind)
	}
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)) {
		return errors.New("bad record count")
	}
	p = p[k:]
	for i := uint64(0); i < n; i++ {
		if len(p) < 2 {
			return errors.New("truncated record")
		}
		typ := le.Uint16(p)
		l, k := binary.Uvarint(p[2:])
		if k <= 0 || l > uint64(len(p)-2-k) {
			return errors.New("bad record length")
		}
		p = p[2+k:]
		ev.Records = append(ev.Records, audit.Record{Type: typ, Text: p[:l:l]})
		p = p[l:]
	}
	if len(p) != 0 {
		return errors.New("trailing bytes in frame")
	}
	return nil
}
