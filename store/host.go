package store

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/internal/durable"
	"github.com/auditarch/auditarch/internal/wire"
)

// host is one enrolled host's area. mu is held by the connection that serves it.
type host struct {
	origin string
	dir    string
	pub    ed25519.PublicKey
	id     note.Verifier

	cmu  sync.Mutex // guards conn
	conn net.Conn

	mu          sync.Mutex
	stream      *verify.Stream // nil: rebuilt from the area on the next connection
	name        string         // the segment the area ends in
	off         int64          // and its length
	f           *os.File       // that segment, open for appending
	dirty       bool           // bytes written since the last fsync
	newFile     bool           // a segment was created since the last fsync of the directory
	latest      []byte         // the latest verified checkpoint
	receipted   string         // the checkpoint the latest receipt covers
	receipt     []byte
	receiptSize uint64 // leaves the latest receipt covers
	newReceipt  bool
	receipts    *os.File
	// pend holds the bytes of the stream's current segment, from pendOff, that the stream has taken and
	// the area does not hold (an incomplete block): take writes them once they are decoded. The stream
	// no longer has them then, and copying its Pending for every frame would cost the whole incomplete
	// block (up to archive.MaxBlock) per frame. Bounded by archive.MaxBlock and a frame.
	pend    []byte
	pendOff int64
	// Quotas (Config.MaxSegments, MaxEvidence, MaxEvidenceBytes): what the area holds.
	segs      int   // segment files
	evidences int   // refusals kept under evidence/
	evBytes   int64 // their bytes (.bin and .json)

	smu       sync.Mutex // guards the silence state
	lastData  time.Time
	heartbeat time.Duration
	silent    bool
	// stopped is the time of the clean stop the area ends with (verify.Stream.Stopped; zero: none):
	// no silence then, but a stopped alarm (stopAlarmed) after Config.StoppedAlarm.
	stopped     time.Time
	stopAlarmed bool

	// What Figures reports, also guarded by smu: set with h.mu held, read without it (a connection holds
	// h.mu for as long as it lasts).
	fig hostFigures
}

// hostFigures is what the area holds, for HostFigures.
type hostFigures struct {
	leaves        uint64 // verified and durable
	bytes         int64  // of its segment files
	segments      int
	receiptAt     time.Time
	receiptLeaves uint64
}

// loadHost reads an enrolled host's key and verifies its area.
func (s *Server) loadHost(origin string) (*host, error) {
	dir := AreaDir(s.cfg.Dir, origin)
	id, vkey, err := archive.LoadVerifierKey(filepath.Join(dir, HostKeyFile))
	if err != nil {
		return nil, fmt.Errorf("store: host %s: %w", origin, err)
	}
	if id.Name() != origin {
		return nil, fmt.Errorf("store: host directory %s holds the key of %q", dir, id.Name())
	}
	pub, err := archive.VerifierPublicKey(vkey)
	if err != nil {
		return nil, fmt.Errorf("store: host %s: %w", origin, err)
	}
	h := &host{origin: origin, dir: dir, pub: pub, id: id, lastData: time.Now(), heartbeat: archive.DefaultHeartbeat}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.countEvidence(); err != nil {
		return nil, fmt.Errorf("store: host %s: %w", origin, err)
	}
	if err := h.load(); err != nil {
		return nil, fmt.Errorf("store: host %s: %w", origin, err)
	}
	// Sealed segments are immutable and uploaded (both idempotent): a store stopped in between does it now.
	for _, seg := range h.stream.Report().Segments {
		if seg.Sealed {
			s.sealed(h, seg.File)
		}
	}
	if h.stream.CurrentSealed() {
		s.sealed(h, h.name)
	}
	return h, nil
}

// resume returns a stream resumed from the area's saved state (StateFile) and the segment files after the
// one it ends with, or nil and all the files when there is no usable state (it is then rebuilt).
func (h *host) resume(files []string) (*verify.Stream, []string) {
	data, err := os.ReadFile(filepath.Join(h.dir, StateFile))
	if err != nil || len(data) > maxStateFile {
		return nil, files
	}
	var at struct {
		Segment string `json:"segment"`
		Offset  int64  `json:"offset"`
	}
	if json.Unmarshal(data, &at) != nil {
		return nil, files
	}
	for i, f := range files {
		if filepath.Base(f) != at.Segment {
			continue
		}
		fi, err := os.Stat(f)
		if err != nil || fi.Size() != at.Offset {
			return nil, files // the segment is not the one the state was taken of
		}
		st, err := verify.ResumeStream(verify.Options{Key: h.id}, data)
		if err != nil {
			return nil, files
		}
		h.name, h.off = at.Segment, at.Offset
		return st, files[i+1:]
	}
	return nil, files
}

// maxStateFile bounds the state file read at start (its serial ranges are bounded by the verifier).
const maxStateFile = 1 << 20

// saveState replaces the area's state file with snap, durably.
func (h *host) saveState(snap []byte) error {
	if err := durable.Replace(filepath.Join(h.dir, StateFile), snap, 0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// segments lists the area's segment files in name order.
func (h *host) segments() ([]string, error) {
	files, err := filepath.Glob(filepath.Join(h.dir, archive.SegmentPattern))
	sort.Strings(files)
	return files, err
}

// load rebuilds the stream from the area, unless it is current. h.mu is held.
func (h *host) load() error {
	if h.stream != nil {
		return nil
	}
	h.closeFile()
	files, err := h.segments()
	if err != nil {
		return err
	}
	h.name, h.off, h.segs = "", 0, len(files)
	var size int64
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			size += fi.Size()
		}
	}
	// Resume from the state saved at the last seal: only the segments after it are read again.
	st, files := h.resume(files)
	if st == nil {
		st = verify.NewStream(verify.Options{Key: h.id})
	}
	buf := make([]byte, 1<<20)
	var snap []byte
	for _, f := range files {
		n, err := st.WriteFile(f, buf)
		if err != nil {
			return err
		}
		h.name, h.off = filepath.Base(f), n
		if st.CurrentSealed() {
			snap, _ = st.Snapshot()
		}
	}
	if snap != nil {
		if err := h.saveState(snap); err != nil {
			return err
		}
	}
	// A store killed before its fsync left bytes that are read back here but may not be durable: the
	// STATE that reports them as held must not come before they are.
	if h.name != "" {
		if err := durable.SyncFile(filepath.Join(h.dir, h.name)); err != nil {
			return err
		}
		if err := durable.SyncDir(h.dir); err != nil {
			return err
		}
	}
	h.dirty, h.newFile = false, false
	h.stream = st
	// A torn end the area holds is pending in the stream, and held: pend starts after it.
	h.pend, h.pendOff = h.pend[:0], h.off
	h.latest = append([]byte(nil), st.Report().Latest...)
	h.smu.Lock()
	h.fig.leaves, h.fig.bytes, h.fig.segments = st.Size(), size, h.segs
	h.smu.Unlock()
	if h.receipts == nil {
		rf, err := os.OpenFile(filepath.Join(h.dir, ReceiptsFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		h.receipts = rf
	}
	h.watched()
	return nil
}

// watched takes from the stream what watch judges the host by: the heartbeat interval its run declared,
// and the clean stop it ends with. It reports whether the host started again after a stopped alarm.
// h.mu is held.
func (h *host) watched() (restarted bool) {
	at, _ := h.stream.Stopped() // zero when the stream does not end with a clean stop
	h.smu.Lock()
	defer h.smu.Unlock()
	h.heartbeat = h.stream.Heartbeat()
	if at.Equal(h.stopped) {
		return false
	}
	restarted = at.IsZero() && h.stopAlarmed
	h.stopped, h.stopAlarmed = at, false
	return restarted
}

// countEvidence counts the refusals evidence/ holds and their bytes.
func (h *host) countEvidence() error {
	ents, err := os.ReadDir(filepath.Join(h.dir, EvidenceDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	h.evidences, h.evBytes = 0, 0
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".bin") {
			h.evidences++
		}
		if fi, err := e.Info(); err == nil {
			h.evBytes += fi.Size()
		}
	}
	return nil
}

// takeOver closes the connection that serves h now, if any, and makes c the one.
func (h *host) takeOver(c net.Conn) {
	h.cmu.Lock()
	defer h.cmu.Unlock()
	if h.conn != nil {
		h.conn.Close()
	}
	h.conn = c
}

func (h *host) release(c net.Conn) {
	h.cmu.Lock()
	defer h.cmu.Unlock()
	if h.conn == c {
		h.conn = nil
	}
}

// take checks bytes of segment name at off and writes them to the area. On refusal it returns the
// ERROR code and why, and the bytes are not in the area (contradicting bytes are kept as evidence).
func (h *host) take(s *Server, remote, name string, off int64, data []byte) (string, error) {
	h.smu.Lock()
	h.lastData = time.Now()
	if h.silent {
		h.silent = false
		s.cfg.Log.Info().Str("host", h.origin).Msg("host is sending again after a silence")
	}
	h.smu.Unlock()
	sname, soff := h.stream.Position()
	if !(name == sname && off == soff) && !(name > sname && off == 0) {
		return h.outOfOrder(s, remote, name, off, data)
	}
	// Segment files the bytes may add to the area: the new segment's and, before it, the torn end of
	// the one the stream holds only pending bytes of.
	files := 0
	if name != h.name {
		files++
	}
	if name != sname && sname != h.name && len(h.pend) > 0 {
		files++
	}
	if files > 0 && h.segs+files > s.cfg.MaxSegments {
		s.alarm(AlarmQuota, h.origin, remote, "refused segment %s: the host's area holds %d segment files, its quota (MaxSegments)", name, h.segs)
		return wire.CodeQuota, fmt.Errorf("segment %s refused: this host's area holds %d segment files, its quota", name, h.segs)
	}
	// The state before these bytes: refused, they are undone without reading the area again.
	undo, _ := h.stream.Snapshot()
	u, err := h.stream.Write(name, off, data)
	if err != nil {
		return wire.CodeProtocol, err
	}
	var bad []string
	for _, p := range u.Problems {
		if p.Class == verify.Tampered {
			bad = append(bad, fmt.Sprintf("[%s] %s", p.Code, p.Message))
		} else {
			s.alarm(AlarmIncomplete, h.origin, remote, "the host's archive is incomplete: [%s] %s", p.Code, p.Message)
		}
	}
	if len(bad) > 0 {
		// The stream has taken the bytes: back to the state before them (or, when the stream held an
		// incomplete block then, rebuilt from the area for the next connection).
		h.stream = nil
		if undo != nil {
			h.stream, _ = verify.ResumeStream(verify.Options{Key: h.id}, undo)
		}
		where := h.evidence(s, remote, wire.CodeTampered, name, off, data, bad)
		s.alarm(AlarmTampered, h.origin, remote, "refused bytes %d..%d of %s that do not verify (%s): %s",
			off, off+int64(len(data)), name, where, strings.Join(bad, "; "))
		return wire.CodeTampered, fmt.Errorf("the data does not verify: %s", strings.Join(bad, "; "))
	}
	// Only decoded bytes enter the area; what does not yet complete a block waits in the stream and in
	// h.pend. (After the stream was rebuilt from the area, the area may already hold some of the pending
	// bytes.)
	if name != sname {
		// The segment before ends inside a block: a crash on the host, judged with the segment that
		// follows (its START records it). The copy keeps it, byte for byte.
		if held := h.held(sname); held < soff && len(h.pend) > 0 {
			if held < h.pendOff {
				h.stream = nil
				return wire.CodeStorage, fmt.Errorf("store: bytes %d..%d of %s to keep are not pending", held, h.pendOff, sname)
			}
			if err := h.write(s, remote, sname, h.pend[held-h.pendOff:]); err != nil {
				return writeCode(err), err
			}
		}
		h.pend, h.pendOff = h.pend[:0], 0
	}
	// chunk: the bytes of segment name from start that the area may not hold: h.pend and data.
	chunk, start := data, off
	if len(h.pend) > 0 {
		if need := len(h.pend) + len(data); need > cap(h.pend) {
			// Doubling (append grows large slices by a quarter: 5 times the bytes allocated in all).
			p := make([]byte, len(h.pend), max(need, 2*cap(h.pend)))
			copy(p, h.pend)
			h.pend = p
		}
		h.pend = append(h.pend, data...)
		chunk, start = h.pend, h.pendOff
	}
	held, n := h.held(name), h.stream.Decoded()
	if n > held {
		if held < start {
			h.stream = nil
			return wire.CodeStorage, fmt.Errorf("store: bytes %d..%d of %s to keep are not pending", held, start, name)
		}
		if err := h.write(s, remote, name, chunk[held-start:n-start]); err != nil {
			return writeCode(err), err
		}
		held = n
	}
	// Keep what may still be written: the stream's pending bytes (all of the segment while its header is
	// not decoded: the magic is taken before it), and never what the area holds.
	end := start + int64(len(chunk))
	from := end - int64(len(h.stream.Pending()))
	if n == 0 {
		from = 0
	}
	from = max(from, held, start)
	h.keepPending(chunk[from-start:], from)
	if len(u.Latest) > 0 && !bytes.Equal(u.Latest, h.latest) {
		h.latest = append(h.latest[:0], u.Latest...)
	}
	if h.watched() {
		s.cfg.Log.Info().Str("host", h.origin).Msg("host started again after a clean stop")
	}
	return "", nil
}

// keepPending makes h.pend the bytes b (which may alias it) at offset off, in a buffer reused from frame
// to frame: it grows to the largest incomplete block and is let go of when it is far larger than needed.
func (h *host) keepPending(b []byte, off int64) {
	if cap(h.pend) > 8<<20 && len(b) < cap(h.pend)/8 {
		h.pend = append([]byte(nil), b...)
	} else {
		h.pend = append(h.pend[:0], b...) // copy handles the overlap when b is in h.pend
	}
	h.pendOff = off
}

// writeCode is the ERROR code for a write's error.
func writeCode(err error) string {
	if errors.Is(err, errQuota) {
		return wire.CodeQuota
	}
	return wire.CodeStorage
}

// errQuota is wrapped when the area is at one of its quotas.
var errQuota = errors.New("quota reached")

// write appends checked bytes of segment name to the area (creating its file after the previous
// segment's, which is then closed). On failure the stream is rebuilt from the area on the next connection.
func (h *host) write(s *Server, remote, name string, b []byte) error {
	if name != h.fileName() {
		prev := h.fileName()
		if err := h.closeFile(); err != nil {
			h.stream = nil
			s.alarm(AlarmStorage, h.origin, remote, "cannot make the host's segment %s durable: %v", prev, err)
			return fmt.Errorf("store sync: %w", err)
		}
		if prev != "" && h.stream != nil && h.stream.Sealed(prev) {
			s.sealed(h, prev)
		}
		if h.name != name && h.segs >= s.cfg.MaxSegments { // take checks first: this does not happen
			h.stream = nil
			return fmt.Errorf("segment %s: %w (%d segment files)", name, errQuota, h.segs)
		}
		// Writable by its owner until sealed (Server.sealed): a store that restarts reopens it to append.
		f, err := os.OpenFile(filepath.Join(h.dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			h.stream = nil
			s.alarm(AlarmStorage, h.origin, remote, "cannot open the host's segment %s: %v", name, err)
			return err
		}
		h.f, h.newFile = f, true
		if h.name != name {
			h.name, h.off = name, 0
			h.segs++
		}
	}
	if err := durable.WriteAll(h.f, b); err != nil {
		// What was written of them stays in the area as a torn end; the stream is rebuilt from it.
		h.stream = nil
		h.closeFile()
		s.alarm(AlarmStorage, h.origin, remote, "cannot write the host's segment %s: %v", name, err)
		return fmt.Errorf("store write: %w", err)
	}
	h.off += int64(len(b))
	h.dirty = true
	h.smu.Lock()
	h.fig.bytes += int64(len(b))
	h.fig.segments = h.segs
	h.smu.Unlock()
	return nil
}

// held returns how many bytes of segment name the area holds, as far as take knows (the area ends in
// h.name; segments after it are not held).
func (h *host) held(name string) int64 {
	if name == h.name {
		return h.off
	}
	return 0
}

// settle ends a connection: a stream that took bytes the area does not hold (an incomplete block) is
// rebuilt from the area, so that the next STATE and the stream agree.
func (h *host) settle() {
	if h.stream == nil {
		return
	}
	if n, o := h.stream.Position(); n != h.name || o != h.off {
		h.stream = nil
	}
}

func (h *host) fileName() string {
	if h.f == nil {
		return ""
	}
	return filepath.Base(h.f.Name())
}

// outOfOrder judges bytes that do not continue the area: a replay of bytes it holds, a rewrite of them
// (a fork, kept as evidence), or a gap.
func (h *host) outOfOrder(s *Server, remote, name string, off int64, data []byte) (string, error) {
	held, err := readHeld(filepath.Join(h.dir, name), off, len(data))
	switch {
	case err == nil && len(held) > 0:
		n := int64(len(held))
		if bytes.Equal(held, data[:n]) && n == int64(len(data)) {
			s.alarm(AlarmReplay, h.origin, remote, "refused a replay of bytes %d..%d of %s, which the store already holds", off, off+n, name)
			return wire.CodeReplay, fmt.Errorf("bytes %d..%d of %s are already held: a replay (the store holds %s up to %d)", off, off+n, name, h.name, h.off)
		}
		where := h.evidence(s, remote, wire.CodeFork, name, off, data, []string{"bytes differ from those held at the same offset"})
		s.alarm(AlarmFork, h.origin, remote, "refused bytes %d..%d of %s that differ from what the store holds: a forked history (%s)", off, off+int64(len(data)), name, where)
		return wire.CodeFork, fmt.Errorf("bytes at %d of %s differ from those the store holds: history was rewritten", off, name)
	case name < h.name:
		where := h.evidence(s, remote, wire.CodeFork, name, off, data, []string{"a segment before the end of the area that the area does not hold"})
		s.alarm(AlarmFork, h.origin, remote, "refused segment %s, which sorts before %s where the area ends: a forked history (%s)", name, h.name, where)
		return wire.CodeFork, fmt.Errorf("segment %s sorts before %s, where the store's copy ends: history was rewritten", name, h.name)
	default:
		return wire.CodeGap, fmt.Errorf("bytes at %d of %s do not continue the store's copy, which ends at %d of %s", off, name, h.off, h.name)
	}
}

// readHeld returns the bytes of the area's file path from off, at most n of them (none when the file ends
// before off).
func readHeld(path string, off int64, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || off >= st.Size() {
		return nil, err
	}
	b := make([]byte, min(int64(n), st.Size()-off))
	_, err = f.ReadAt(b, off)
	return b, err
}

// evidence keeps refused bytes and why, evidence/<time>-<segment>-<offset>.{bin,json}, and says where
// ("kept in …"). Past the host's evidence quota the bytes are counted, not kept, and a quota alarm is
// raised.
func (h *host) evidence(s *Server, remote, code, name string, off int64, data []byte, why []string) string {
	meta, _ := json.MarshalIndent(map[string]any{"time": time.Now().UTC(), "remote": remote, "code": code, "segment": name,
		"offset": off, "length": len(data), "why": why, "area_ends": map[string]any{"segment": h.name, "offset": h.off}}, "", "  ")
	size := int64(len(data) + len(meta))
	if h.evidences >= s.cfg.MaxEvidence || h.evBytes+size > s.cfg.MaxEvidenceBytes {
		s.mu.Lock()
		s.stats.EvidenceDropped++
		s.mu.Unlock()
		s.alarm(AlarmQuota, h.origin, remote, "the host's evidence quota is reached (%d refusals, %d bytes kept; at most %d, %d bytes): "+
			"%d refused bytes at %d of %s are not kept", h.evidences, h.evBytes, s.cfg.MaxEvidence, s.cfg.MaxEvidenceBytes, len(data), off, name)
		return "not kept: the host's evidence quota is reached"
	}
	dir := filepath.Join(h.dir, EvidenceDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		s.cfg.Log.Error().Err(err).Msg("cannot keep evidence")
		return "not kept: " + err.Error()
	}
	base := filepath.Join(dir, fmt.Sprintf("%s-%s-%d", time.Now().UTC().Format("20060102T150405.000000000Z"), strings.TrimSuffix(name, ".aseg"), off))
	h.evidences++
	h.evBytes += size
	if err := durable.Create(base+".bin", data, 0o400); err != nil {
		s.cfg.Log.Error().Err(err).Msg("cannot keep evidence")
	}
	if err := durable.Create(base+".json", meta, 0o400); err != nil {
		s.cfg.Log.Error().Err(err).Msg("cannot keep evidence")
	}
	return "kept in " + base + ".bin"
}

// sync makes what take wrote durable, then issues a receipt for the latest checkpoint if it is new.
// A receipt never covers bytes that are not durable.
func (h *host) sync(s *Server) error {
	if h.dirty && h.f == nil {
		// closeFile could not fsync them: acknowledge nothing, and read the area again.
		h.stream = nil
		return errors.New("bytes written to the area could not be made durable")
	}
	if h.dirty && h.f != nil {
		if err := h.f.Sync(); err != nil {
			h.stream = nil
			h.closeFile()
			return err
		}
		h.dirty = false
	}
	if h.newFile {
		if err := durable.SyncDir(h.dir); err != nil {
			return err
		}
		h.newFile = false
	}
	if h.f != nil && h.stream != nil && h.stream.CurrentSealed() {
		name := h.fileName()
		h.closeFile()
		s.sealed(h, name)
		// The verified state at the seal: a store (re)start continues from it instead of reading the
		// area from the beginning.
		if snap, err := h.stream.Snapshot(); err == nil {
			if err := h.saveState(snap); err != nil {
				return err
			}
		}
	}
	if len(h.latest) > 0 && string(h.latest) != h.receipted {
		r, err := s.key.Cosign(h.latest, time.Now())
		if err != nil {
			return err
		}
		if err := receipt.Append(h.receipts, r); err != nil {
			return err
		}
		if err := h.receipts.Sync(); err != nil {
			return err
		}
		h.receipt, h.receipted, h.newReceipt = r, string(h.latest), true
		if text, _, ok := bytes.Cut(h.latest, []byte("\n\n")); ok {
			if c, err := archive.ParseCheckpoint(string(text) + "\n"); err == nil {
				h.receiptSize = c.Size
			}
		}
		h.smu.Lock()
		h.fig.receiptAt, h.fig.receiptLeaves = time.Now(), h.receiptSize
		h.smu.Unlock()
	}
	if h.stream != nil {
		h.smu.Lock()
		h.fig.leaves = h.stream.Size()
		h.smu.Unlock()
	}
	return nil
}

// closeFile syncs and closes the open segment. What was written to it is durable (h.dirty false) only
// when it returns nil.
func (h *host) closeFile() error {
	if h.f == nil {
		return nil
	}
	err := h.f.Sync()
	if err == nil {
		h.dirty = false
	}
	h.f.Close()
	h.f = nil
	return err
}

// sealed handles a segment the host sealed: immutable in the filesystem, and uploaded.
func (s *Server) sealed(h *host, name string) {
	path := filepath.Join(h.dir, name)
	if err := os.Chmod(path, 0o440); err != nil {
		s.cfg.Log.Debug().Err(err).Str("segment", path).Msg("sealed segment not made read-only (it is immutable already)")
	}
	if err := setImmutable(path); err != nil {
		s.cfg.Log.Debug().Err(err).Str("segment", path).Msg("sealed segment not made immutable (the filesystem does not support it)")
	}
	if s.cfg.Upload == nil {
		return
	}
	s.uploads.Add(1)
	go func() {
		defer s.uploads.Done()
		for wait := time.Second; ; wait = min(2*wait, time.Minute) {
			err := s.cfg.Upload.Put(s.upCtx, filepath.Base(h.dir), name, path) // the area's name: the origin path-escaped
			if err == nil {
				s.cfg.Log.Info().Str("host", h.origin).Str("segment", name).Msg("sealed segment uploaded")
				return
			}
			s.alarm(AlarmUpload, h.origin, "", "cannot upload sealed segment %s: %v", name, err)
			select {
			case <-s.upCtx.Done():
				return
			case <-time.After(wait):
			}
		}
	}()
}

// setImmutable sets FS_IMMUTABLE_FL on path: not even root can then write, rename or delete it without
// first clearing the flag (which needs CAP_LINUX_IMMUTABLE and shows in the audit trail).
func setImmutable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags, err := unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	if flags&fsImmutableFL != 0 {
		return nil
	}
	return unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, flags|fsImmutableFL)
}

// IsImmutable reports whether path has FS_IMMUTABLE_FL.
func IsImmutable(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	flags, err := unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return false, err
	}
	return flags&fsImmutableFL != 0, nil
}

// ClearImmutable removes FS_IMMUTABLE_FL from every file under dir, so that tests can delete their
// stores. Nothing in the store calls it.
func ClearImmutable(dir string) error {
	return filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return nil
		}
		defer f.Close()
		flags, err := unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS)
		if err != nil || flags&fsImmutableFL == 0 {
			return nil
		}
		return unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, flags&^fsImmutableFL)
	})
}

// fsImmutableFL is FS_IMMUTABLE_FL from linux/fs.h (x/sys/unix does not name it).
const fsImmutableFL = 0x00000010
