package writer

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit/raw"
	"github.com/auditarch/auditarch/internal/durable"
	"github.com/auditarch/auditarch/internal/keyfile"
)

// DiskFullAction says what the writer does when the disk refuses a write (auditd's disk_full_action).
type DiskFullAction string

const (
	// DiskFullKeep holds events in memory and retries; beyond MaxPending it drops them, counts them and
	// writes a LOST leaf with the count as soon as it can. Capture never stops. The default.
	DiskFullKeep DiskFullAction = "keep"
	// DiskFullExit reports the failure on Failed, so that the daemon stops (and the kernel applies its
	// own failure mode to what follows).
	DiskFullExit DiskFullAction = "exit"
)

// SyncPolicy says when written blocks are made durable.
type SyncPolicy string

const (
	// SyncBatch fsyncs every batch: an event counts as archived (Durable) only once it is on stable
	// storage. Batching (FlushInterval, FlushBytes) keeps the throughput. The default.
	SyncBatch SyncPolicy = "batch"
	// SyncNone leaves writeback to the kernel: a power loss may cost the last seconds.
	SyncNone SyncPolicy = "none"
)

// Options configure a Writer. Zero values take the defaults.
type Options struct {
	Identity          *archive.Identity // required: signs the checkpoint of each START leaf
	SegmentDuration   time.Duration     // segments are cut at multiples of this (UTC); default 1 h
	EpochDuration     time.Duration     // lifetime of an epoch key; default 60 s, at most MaxEpoch
	HeartbeatInterval time.Duration     // a HEARTBEAT leaf after this long without leaves; default DefaultHeartbeat, at most MaxHeartbeat
	FlushInterval     time.Duration     // how often a batch is written and signed; default 100 ms
	FlushBytes        int               // write early when this much is buffered (and cut blocks at it); default 1 MiB, at most MaxFlushBytes
	MaxPending        int               // bytes held in memory while the disk lags (events, and blocks not yet written); beyond it events are dropped and counted; default 256 MiB
	Sync              SyncPolicy
	DiskFull          DiskFullAction
	// Start fills the START leaf: Version, ConfigDigest, Kernel, Hostname, BootID. The writer sets the
	// key, epoch, interval and recovery fields.
	Start archive.Start
	Log   zerolog.Logger
	// Now is the writer's clock; default time.Now (benchmarks generate months of archive in seconds).
	Now func() time.Time
	// Prune, when set, is asked for room when the disk refuses a write for want of space (ENOSPC,
	// EDQUOT), before the writer holds events and, past MaxPending, drops them: it removes what retention
	// allows (archive/retain) and returns the bytes it freed. need is what the writer holds unwritten.
	// It runs on the flusher, so capture's events wait in memory meanwhile; after a call that freed
	// nothing it is asked again at most every PruneRetry. SetPrune sets it on a running writer.
	Prune func(need int64) (freed int64)
}

func (o *Options) defaults() error {
	if o.Identity == nil {
		return errors.New("archive: no identity key")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.SegmentDuration, time.Hour)
	def(&o.EpochDuration, time.Minute)
	def(&o.HeartbeatInterval, archive.DefaultHeartbeat)
	def(&o.FlushInterval, 100*time.Millisecond)
	if o.HeartbeatInterval > archive.MaxHeartbeat || o.EpochDuration > archive.MaxEpoch {
		return fmt.Errorf("archive: heartbeat %s and epoch %s: the format allows at most %s and %s", o.HeartbeatInterval, o.EpochDuration, archive.MaxHeartbeat, archive.MaxEpoch)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.FlushBytes <= 0 {
		o.FlushBytes = 1 << 20
	}
	if o.FlushBytes > archive.MaxFlushBytes {
		return fmt.Errorf("archive: flush bytes %d: the format allows at most %d", o.FlushBytes, archive.MaxFlushBytes)
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 256 << 20
	}
	switch o.Sync {
	case "":
		o.Sync = SyncBatch
	case SyncBatch, SyncNone:
	default:
		return fmt.Errorf("archive: unknown sync policy %q (batch, none)", o.Sync)
	}
	switch o.DiskFull {
	case "":
		o.DiskFull = DiskFullKeep
	case DiskFullKeep, DiskFullExit:
	default:
		return fmt.Errorf("archive: unknown disk-full action %q (keep, exit)", o.DiskFull)
	}
	return nil
}

// clockStep is how far the wall clock may move against the monotonic clock before a CLOCK leaf.
const clockStep = time.Second

// ErrInUse is wrapped when another Writer holds the archive directory.
var ErrInUse = errors.New("in use by another writer")

// Writer appends events to the archive in a directory. See the package documentation for its guarantees.
type Writer struct {
	opts    Options
	dir     string
	origin  string
	lock    *os.File
	reserve *os.File // ReserveFile

	mu        sync.Mutex
	buf       []byte // leaf entries not yet taken by the flusher
	held      int    // bytes of buf plus batches not yet written
	dropped   uint64 // events dropped since the last LOST leaf
	recorded  uint64 // events dropped before it: counted in LOST leaves (local_drop)
	shed      uint64 // events refused while the shipping backlog is over its bound, since the last LOST leaf
	shedding  bool
	appended  uint64           // event and LOST leaves appended
	written   uint64           // of those, the leaves written (held: appended - written)
	durable   uint64           // tree size on stable storage
	durPos    archive.Position // where that tree size ends in the segment files
	durNote   chan struct{}
	werr      error // the last write's outcome: nil once the disk takes the blocks again
	closed    bool
	kick      chan struct{}
	done      chan struct{}
	stopped   chan struct{}
	failed    chan error
	closeErr  error
	spare     []byte
	writeWait []pendingWrite // owned by the flusher
	counters  Counters       // what Counters returns, but for the fields it fills from the above

	ckQueued uint64 // owned by the flusher: checkpoints signed by this run

	// Owned by the flusher goroutine (and Create before it starts).
	tree       archive.Frontier
	seg        *segment
	key        *epochKey
	epochStart time.Time
	ckSize     uint64
	ckAt       time.Time
	lastCk     []byte
	lastLeafAt time.Time
	lastWall   time.Time // the clock's last reading
	lastMono   time.Time // time.Now at that moment, for its monotonic reading
	runLeaves  uint64
	next       uint64  // when seg is nil: the number of the segment a rotation waits to create
	nextKernel []int64 // and its header's PrevKernelTimes
	at         state   // at the end of the last block written
	outage     outage
	prune      atomic.Pointer[func(int64) int64]
	pruneNext  time.Time // no Prune call before this (one freed nothing)
}

// segment is the open segment.
type segment struct {
	f           *os.File
	name        string
	tmp         string // the path it is written under until its first block is durable (see publish)
	number      uint64
	first       uint64
	end         time.Time
	checkpoints uint64
	firstTime   int64
	lastTime    int64
	leaves      uint64
	kernel      archive.KernelRange // kernel timestamps of its event and LOST leaves
}

type pendingWrite struct {
	f       *os.File
	data    []byte
	held    int
	size    uint64   // tree size once this block is durable
	name    string   // the segment's file name
	close   bool     // close f once written and synced (a sealed segment)
	publish *segment // the block is in a segment not yet published: publish it once the block is durable
	tally   tally    // its event and LOST leaves
	cks     uint64   // checkpoints signed by the run up to its end (ckQueued)
	ckAt    time.Time
	after   state // the writer's state at its end
	written int   // bytes of it the file took (all of them, if only its sync failed)
}

// Create opens the archive in dir for appending (dir is created 0700 if missing and must not be
// accessible to others), allocates the reserve (ReserveFile) unless it is there, recovers the state its
// last run left, starts a new segment with a START leaf signed by the identity key, and starts the
// flusher. Only one Writer may hold a directory. On a disk without room for the reserve and the START it
// fails (wrapping ENOSPC) and leaves the archive as it was: a run that could not record its own stop does
// not start.
func Create(dir string, opts Options) (*Writer, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create archive directory: %w", err)
	}
	if err := keyfile.CheckPrivate(dir); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, archive.LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("archive lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("archive %s: %w (%v)", dir, ErrInUse, err)
	}
	w := &Writer{opts: opts, dir: dir, origin: opts.Identity.Signer.Name(), lock: lock,
		kick: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{}), failed: make(chan error, 1), durNote: make(chan struct{}, 1)}
	w.SetPrune(opts.Prune)
	if w.reserve, err = reserve(dir); err != nil {
		lock.Close()
		return nil, err
	}
	if err := w.start(); err != nil {
		if w.seg != nil && w.seg.tmp != "" { // the START never became durable
			w.seg.f.Close()
			os.Remove(w.seg.tmp)
		}
		w.reserve.Close()
		lock.Close()
		if errors.Is(err, unix.ENOSPC) {
			err = fmt.Errorf("archive %s: no room for the run's START beside the %d KiB reserve (%s): %w", dir, ReserveBytes>>10, ReserveFile, err)
		}
		return nil, err
	}
	go w.flusher()
	return w, nil
}

// tail is what a starting writer learns from the archive's last segment.
type tail struct {
	tree    archive.Frontier
	lastCk  []byte
	ckSize  uint64
	segment uint64 // number of the next segment
	epoch   uint64 // next epoch number
	rec     *archive.Recovery
	kernel  archive.KernelRange // of the last segment's events
}

// recoverTail reads the last segment of dir. It never modifies a file: a torn block stays where it is,
// and the START leaf of the new run records it.
func recoverTail(dir, origin string) (tail, error) {
	var t tail
	files, err := archive.ListSegments(dir)
	if err != nil || len(files) == 0 {
		return t, err
	}
	// A segment appears under its name only with a durable first block (publish): its header is
	// always readable unless the file was damaged, and then this writer must not continue it.
	i := len(files) - 1
	s, err := archive.OpenSegment(files[i])
	if err != nil {
		return t, err
	}
	defer s.Close()
	h, err := s.ReadHeader()
	if err != nil {
		return t, err
	}
	if h.Origin != origin {
		return t, fmt.Errorf("archive %s belongs to origin %q, this identity key is %q", dir, h.Origin, origin)
	}
	if t.tree, err = archive.DecodeFrontier(h.FirstIndex, h.Frontier); err != nil {
		return t, &archive.CorruptError{Path: files[i], Reason: "segment header: " + err.Error()}
	}
	t.lastCk = []byte(h.PrevCheckpoint)
	if h.PrevCheckpoint != "" {
		c, err := archive.PeekCheckpoint(t.lastCk)
		if err != nil {
			return t, &archive.CorruptError{Path: files[i], Reason: "segment header: previous checkpoint: " + err.Error()}
		}
		t.ckSize = c.Size
	}
	t.segment = h.Segment + 1
	t.epoch = h.Epoch + 1
	rec := &archive.Recovery{Segment: filepath.Base(files[i])}
	var ce *archive.CorruptError
	var lastKind archive.LeafKind
	var lastSeal archive.Seal
	var leaf archive.Leaf
	for {
		typ, p, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.As(err, &ce) && ce.Torn {
			rec.TornOffset, rec.TornBytes = ce.Offset, s.Size()-ce.Offset
			break
		}
		if err != nil {
			return t, err
		}
		switch typ {
		case archive.EntryLeaf:
			t.tree.Append(p)
			if err := archive.DecodeLeaf(p, &leaf); err != nil {
				return t, &archive.CorruptError{Path: files[i], Offset: s.BlockOffset(), Reason: fmt.Sprintf("leaf %d: %v", t.tree.Size-1, err)}
			}
			lastKind = leaf.Kind
			if !leaf.Kind.Control() {
				t.kernel.Add(archive.EventKernelTime(p))
			}
			switch leaf.Kind {
			case archive.LeafStart, archive.LeafKey:
				var k archive.Key
				if json.Unmarshal(leaf.Body, &k) == nil {
					t.epoch = k.Epoch + 1
				}
			case archive.LeafSeal:
				lastSeal = archive.Seal{}
				json.Unmarshal(leaf.Body, &lastSeal)
			}
		case archive.EntryCheckpoint:
			c, err := archive.PeekCheckpoint(p)
			if err != nil {
				return t, &archive.CorruptError{Path: files[i], Offset: s.BlockOffset(), Reason: err.Error()}
			}
			t.lastCk, t.ckSize = append([]byte(nil), p...), c.Size
		default:
			return t, &archive.CorruptError{Path: files[i], Offset: s.BlockOffset(), Reason: "header entry inside a segment"}
		}
	}
	rec.Sealed = lastKind == archive.LeafSeal
	rec.Unsigned = t.tree.Size - t.ckSize
	if rec.Sealed && !lastSeal.Next && rec.TornBytes == 0 {
		rec = nil // the last run stopped cleanly
	}
	t.rec = rec
	return t, nil
}

// start recovers the archive's state and opens the run's first segment with its START leaf, durably.
func (w *Writer) start() error {
	t, err := recoverTail(w.dir, w.origin)
	if err != nil {
		return fmt.Errorf("recover archive: %w", err)
	}
	w.tree, w.lastCk, w.ckSize = t.tree, t.lastCk, t.ckSize
	// Segments a crash left unpublished hold no block that was ever durable.
	stale, _ := filepath.Glob(filepath.Join(w.dir, archive.SegmentPattern+tmpSuffix))
	for _, f := range stale {
		os.Remove(f)
	}
	now := w.opts.Now()
	if err := w.openSegment(t.segment, now, "", t.kernel.Header()); err != nil {
		return err
	}
	if t.rec != nil {
		w.opts.Log.Warn().Str("segment", t.rec.Segment).Uint64("unsigned", t.rec.Unsigned).
			Int64("torn_bytes", t.rec.TornBytes).Bool("sealed", t.rec.Sealed).
			Msg("the previous run did not stop cleanly; its tail is recorded in the START leaf")
	}
	if w.key, err = newEpochKey(w.origin, t.epoch); err != nil {
		return err
	}
	st := w.opts.Start
	st.Origin, st.Identity, st.EpochKey, st.Epoch, st.PID = w.origin, w.opts.Identity.VKey, w.key.vkey, w.key.epoch, os.Getpid()
	st.CheckpointMillis = w.opts.FlushInterval.Milliseconds()
	st.HeartbeatMillis = w.opts.HeartbeatInterval.Milliseconds()
	st.EpochMillis = w.opts.EpochDuration.Milliseconds()
	st.SegmentMillis = w.opts.SegmentDuration.Milliseconds()
	st.Recovered = t.rec
	ent := w.addControl(nil, archive.LeafStart, now, st)
	if ent, err = w.checkpoint(ent, w.opts.Identity.Signer, now); err != nil {
		return err
	}
	w.epochStart, w.lastWall, w.lastMono = now, now, time.Now()
	w.queue(w.seg.f, ent, 0, false, tally{})
	if err := w.writeQueued(); err != nil {
		return err
	}
	return nil
}

// openSegment creates segment number n under its temporary name (publish gives it its name with its
// first block), writes its header durably and makes it current.
func (w *Writer) openSegment(n uint64, now time.Time, epochKey string, prevKernel []int64) error {
	name := archive.SegmentName(w.tree.Size, now)
	path := filepath.Join(w.dir, name) + tmpSuffix
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	h := archive.SegmentHeader{Format: archive.FormatV1, Origin: w.origin, Segment: n, FirstIndex: w.tree.Size, Start: now.UnixNano(),
		Frontier: w.tree.Encode(), PrevCheckpoint: string(w.lastCk), EpochKey: epochKey, PrevKernelTimes: prevKernel}
	if w.key != nil {
		h.Epoch = w.key.epoch
	}
	hj, _ := json.Marshal(h)
	data := archive.AppendBlock([]byte(archive.SegmentMagic), archive.AppendEntry(nil, archive.EntryHeader, hj))
	if err = durable.WriteAll(f, data); err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("create segment %s: %w", name, err)
	}
	w.mu.Lock()
	w.counters.Segments++
	w.mu.Unlock()
	d := w.opts.SegmentDuration
	w.seg = &segment{f: f, name: name, tmp: path, number: n, first: w.tree.Size, end: now.Truncate(d).Add(d)}
	return nil
}

// tmpSuffix marks a segment that is not yet published: no reader or verifier sees it.
const tmpSuffix = ".tmp"

// publish renames segment s from its temporary path to its name once its first block is durable, and
// syncs the directory. A segment thus never appears with its header alone: such a segment would have the
// first leaf index, and so the name, of the next run's first segment, and a run's first segment without
// its START would hide where the run before it ended. What a crash leaves under a temporary name was never
// durable: the next writer deletes it.
func (w *Writer) publish(s *segment) error {
	if s.tmp != "" {
		path := filepath.Join(w.dir, s.name)
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("publish segment %s: it exists already", s.name)
		}
		if err := os.Rename(s.tmp, path); err != nil {
			return fmt.Errorf("publish segment: %w", err)
		}
		s.tmp = ""
	}
	return durable.SyncDir(w.dir)
}

// Dir is the archive directory.
func (w *Writer) Dir() string { return w.dir }

// Append adds ev to the batch being built. It never waits for the disk: when MaxPending bytes are already
// held the event is dropped and counted, and a LOST leaf with the count precedes the next event that fits.
func (w *Writer) Append(ev *raw.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.shedding && !w.closed {
		w.shed++
		return
	}
	if w.closed || w.held >= w.opts.MaxPending {
		w.dropped++
		return
	}
	w.appendLost()
	w.appendEvent(ev)
	if len(w.buf) >= w.opts.FlushBytes {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// Policy appends a POLICY leaf and has it written at once, ahead of the next flush interval: a protection
// event is what an attacker would most like to keep from the store.
func (w *Writer) Policy(p archive.Policy) {
	w.mu.Lock()
	if w.closed || w.held >= w.opts.MaxPending {
		// Bounded like events (a flood of attempts cannot fill memory) and counted like them: a LOST leaf.
		w.dropped++
		w.mu.Unlock()
		return
	}
	if w.counters.Policy == nil {
		w.counters.Policy = map[PolicyKey]uint64{}
	}
	w.counters.Policy[PolicyKey{p.Action, p.Verdict}]++
	n0 := len(w.buf)
	w.buf = append(w.buf, archive.EntryLeaf, 0, 0, 0, 0)
	w.buf = archive.AppendControlLeaf(w.buf, archive.LeafPolicy, w.opts.Now().UnixNano(), p)
	binary.LittleEndian.PutUint32(w.buf[n0+1:], uint32(len(w.buf)-n0-archive.EntryHeadSize))
	w.held += len(w.buf) - n0
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// appendEvent encodes ev as a leaf entry into buf. w.mu is held.
func (w *Writer) appendEvent(ev *raw.Event) {
	n0 := len(w.buf)
	w.buf = append(w.buf, archive.EntryLeaf, 0, 0, 0, 0)
	w.buf = archive.AppendEventLeaf(w.buf, ev)
	if l := len(w.buf) - n0 - archive.EntryHeadSize; l > archive.MaxLeaf || len(ev.Records) > archive.MaxRecords {
		w.buf = w.buf[:n0]
		w.dropped++
		w.opts.Log.Error().Int("bytes", l).Int("records", len(ev.Records)).Uint32("serial", ev.Serial).
			Msg("event beyond the format's leaf limits: not kept, counted in a LOST leaf")
		return
	}
	binary.LittleEndian.PutUint32(w.buf[n0+1:], uint32(len(w.buf)-n0-archive.EntryHeadSize))
	w.held += len(w.buf) - n0
	w.appended++
}

// lostEvent is a LOST event of reason and count at now (unix ns).
func lostEvent(reason raw.LostReason, count uint64, now int64) raw.Event {
	return raw.Event{Kind: raw.KindLost, EOE: true, Received: now, Sec: now / 1e9, Msec: int32(now % 1e9 / 1e6),
		Lost: raw.Lost{Reason: reason, Count: count}}
}

// appendLost appends a LOST leaf for the events dropped since the last one, if any. w.mu is held.
func (w *Writer) appendLost() {
	if w.shed > 0 {
		lost := lostEvent(raw.LostBacklog, w.shed, w.opts.Now().UnixNano())
		w.opts.Log.Error().Uint64("dropped", w.shed).Msg("shipping backlog over its bound: events dropped")
		w.appendEvent(&lost)
		w.shed = 0
	}
	if w.dropped == 0 {
		return
	}
	lost := lostEvent(raw.LostLocal, w.dropped, w.opts.Now().UnixNano())
	w.opts.Log.Error().Uint64("dropped", w.dropped).Msg("archive fell behind: events dropped")
	w.appendEvent(&lost)
	w.recorded += w.dropped
	w.dropped = 0
}

// Stats returns the number of leaves appended (events and LOST; after a stop on a full disk, those
// written), the events dropped since Create (each is counted in a LOST leaf, local_drop: written before
// the next event that fits, or at Close), and the tree size that is durable.
func (w *Writer) Stats() (appended, dropped, durable uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.appended, w.recorded + w.dropped, w.durable
}

// Counters is what a Writer has done since Create, for metrics: read by Counters under the writer's
// lock, kept up to date by the flusher once per block (never per event).
type Counters struct {
	Appended uint64 // event and LOST leaves appended (Stats)
	Written  uint64 // of those, written and synced
	Dropped  uint64 // events dropped (Stats): each is counted in a LOST leaf, local_drop
	Durable  uint64 // the tree size on stable storage

	Events  uint64 // event leaves made durable by this run
	Records uint64 // the kernel records they hold
	// LostLeaves and LostEvents are the durable LOST leaves of this run by reason (raw.LostReason: the
	// index), and the events they count.
	LostLeaves, LostEvents [LostReasons]uint64

	Checkpoints      uint64    // signed checkpoints made durable by this run
	LastCheckpointAt time.Time // when the latest durable checkpoint was signed (zero: none yet)
	Segments         uint64    // segments opened by this run, its first included
	Sealed           uint64    // segments sealed and closed by this run
	DurableAt        time.Time // when Durable last moved (zero: not since Create)

	// Policy counts the POLICY leaves appended by action and verdict (raw.PolicyAction*, raw.PolicyVerdict*);
	// those dropped (a full memory bound) are in Dropped instead.
	Policy map[PolicyKey]uint64
}

// PolicyKey is a POLICY leaf's action and verdict.
type PolicyKey struct{ Action, Verdict string }

// Counters returns a copy of the writer's counters.
func (w *Writer) Counters() Counters {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.counters
	c.Appended, c.Written, c.Dropped, c.Durable = w.appended, w.written, w.recorded+w.dropped, w.durable
	c.Policy = make(map[PolicyKey]uint64, len(w.counters.Policy))
	for k, v := range w.counters.Policy {
		c.Policy[k] = v
	}
	return c
}

// Failed delivers the write error that made the writer give up (DiskFullExit only).
func (w *Writer) Failed() <-chan error { return w.failed }

// Shed makes Append drop and count events while on (the shipper sets it while its unshipped backlog is
// over the configured bound). Those events become one LOST leaf, reason ship_backlog, when it is turned
// off (or at Close).
func (w *Writer) Shed(on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.shedding = on
	if !on && !w.closed {
		w.appendLost()
	}
}

// Durable returns the end of what is durable: every segment file before Segment is complete, and Segment
// holds Offset durable bytes. Readers (the shipper) must not read past it.
func (w *Writer) Durable() archive.Position {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.durPos
}

// DurableNotify returns a channel that receives (without blocking the writer, so signals coalesce) each
// time Durable moves.
func (w *Writer) DurableNotify() <-chan struct{} { return w.durNote }

// flusher builds, writes and syncs a block every FlushInterval until Close.
func (w *Writer) flusher() {
	defer close(w.stopped)
	t := time.NewTicker(w.opts.FlushInterval)
	defer t.Stop()
	for {
		final := false
		select {
		case <-t.C:
		case <-w.kick:
		case <-w.done:
			final = true
		}
		now := w.opts.Now()
		// A rotation waits for the disk before the next segment exists; at close, wait a while.
		for tries := 0; w.seg == nil && !w.reopen(now) && final && tries < 50; tries++ {
			time.Sleep(w.opts.FlushInterval)
			now = w.opts.Now()
		}
		if w.seg == nil && !final {
			continue
		}
		var err error
		if w.seg == nil {
			err = fmt.Errorf("no segment could be created: %w", w.werr) // (the flusher's own field)
		} else {
			w.cycle(now, final)
			err = w.flushQueue()
		}
		if !final {
			continue
		}
		// At close, keep retrying for a while: the disk may come back.
		for tries := 0; err != nil && w.seg != nil && tries < 50; tries++ {
			time.Sleep(w.opts.FlushInterval)
			err = w.flushQueue()
		}
		if err != nil {
			w.closeErr = w.rescue(err)
		} else {
			w.mu.Lock()
			dropped := w.recorded + w.dropped
			w.mu.Unlock()
			w.endOutage(dropped) // an outage that ended less than outageSettle before the close
		}
		return
	}
}

// flushQueue writes the queued blocks and records the outcome. A disk without room is pruned first.
func (w *Writer) flushQueue() error {
	err := w.writeQueued()
	if err != nil && w.pruned(err) {
		err = w.writeQueued()
	}
	w.noteWrite(err)
	return err
}
