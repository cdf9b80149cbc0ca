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
	"github.com/auditarch/auditarch/internal/durable"
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
	stream      *archive.Stream // nil: rebuilt from the area on the next connection
	name        string          // the segment the area ends in
	off         int64           // and its length
	f           *os.File        // that segment, open for appending
	dirty       bool            // bytes written since the last fsync
	newFile     bool            // a segment was created since the last fsync of the directory
	latest      []byte          // the latest verified checkpoint
	receipted   string          // the checkpoint the latest receipt covers
	receipt     []byte
	receiptSize uint64 // leaves the latest receipt covers
	newReceipt  bool
	receipts    *os.File

	smu       sync.Mutex // guards the silence state
	lastData  time.Time
	heartbeat time.Duration
	silent    bool
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
	h := &host{origin: origin, dir: dir, pub: pub, id: id, lastData: time.Now(), heartbeat: 10 * time.Second}
	h.mu.Lock()
	defer h.mu.Unlock()
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

// segments lists the area's segment files in name order.
func (h *host) segments() ([]string, error) {
	files, err := filepath.Glob(filepath.Join(h.dir, "seg-*.aseg"))
	sort.Strings(files)
	return files, err
}

// load rebuilds the stream from the area, unless it is current. h.mu is held.
func (h *host) load() error {
	if h.stream != nil {
		return nil
	}
	h.closeFile()
	st := archive.NewStream(archive.VerifyOptions{Key: h.id})
	files, err := h.segments()
	if err != nil {
		return err
	}
	h.name, h.off = "", 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		name := filepath.Base(f)
		for off := 0; off < len(data); off += 1 << 20 {
			end := min(off+1<<20, len(data))
			if _, err := st.Write(name, int64(off), data[off:end]); err != nil {
				return err
			}
		}
		if len(data) == 0 {
			if _, err := st.Write(name, 0, nil); err != nil {
				return err
			}
		}
		h.name, h.off = name, int64(len(data))
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
	h.latest = append([]byte(nil), st.Report().Latest...)
	if h.receipts == nil {
		rf, err := os.OpenFile(filepath.Join(h.dir, ReceiptsFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		h.receipts = rf
	}
	h.smu.Lock()
	h.heartbeat = st.Heartbeat()
	h.smu.Unlock()
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
	// The bytes of the current segment taken before and not yet decoded: with data they may complete a
	// block now or, when a new segment begins, they are the old one's torn end.
	pend := append([]byte(nil), h.stream.Pending()...)
	u, err := h.stream.Write(name, off, data)
	if err != nil {
		return "protocol", err
	}
	var bad []string
	for _, p := range u.Problems {
		if p.Class == archive.Tampered {
			bad = append(bad, fmt.Sprintf("[%s] %s", p.Code, p.Message))
		} else {
			s.alarm("incomplete", h.origin, remote, "the host's archive is incomplete: [%s] %s", p.Code, p.Message)
		}
	}
	if len(bad) > 0 {
		// The stream has taken the bytes: rebuild it from the area for the next connection.
		h.stream = nil
		path := h.evidence(s, remote, "tampered", name, off, data, bad)
		s.alarm("tampered", h.origin, remote, "refused bytes %d..%d of %s that do not verify (kept in %s): %s",
			off, off+int64(len(data)), name, path, strings.Join(bad, "; "))
		return "tampered", fmt.Errorf("the data does not verify: %s", strings.Join(bad, "; "))
	}
	// Only decoded bytes enter the area; what does not yet complete a block waits in the stream. (After
	// the stream was rebuilt from the area, the area may already hold some of the pending bytes.)
	pstart := soff - int64(len(pend)) // offset of pend in segment sname
	if name != sname && len(pend) > 0 {
		// The segment before ends inside a block: a crash on the host, judged with the segment that
		// follows (its START records it). The copy keeps it, byte for byte.
		if held := h.held(sname); held < soff {
			if err := h.write(s, remote, sname, pend[held-pstart:]); err != nil {
				return "storage", err
			}
		}
	}
	chunk, start := data, int64(0)
	if name == sname {
		chunk, start = append(pend, data...), pstart
	}
	if held, n := h.held(name), h.stream.Decoded(); n > held {
		if err := h.write(s, remote, name, chunk[held-start:n-start]); err != nil {
			return "storage", err
		}
	}
	if len(u.Latest) > 0 && !bytes.Equal(u.Latest, h.latest) {
		h.latest = append(h.latest[:0], u.Latest...)
	}
	h.smu.Lock()
	h.heartbeat = h.stream.Heartbeat()
	h.smu.Unlock()
	return "", nil
}

// write appends checked bytes of segment name to the area (creating its file after the previous
// segment's, which is then closed). On failure the stream is rebuilt from the area on the next connection.
func (h *host) write(s *Server, remote, name string, b []byte) error {
	if name != h.fileName() {
		prev := h.fileName()
		if err := h.closeFile(); err != nil {
			h.stream = nil
			s.alarm("storage", h.origin, remote, "cannot make the host's segment %s durable: %v", prev, err)
			return fmt.Errorf("store sync: %w", err)
		}
		if prev != "" && h.stream != nil && h.stream.Sealed(prev) {
			s.sealed(h, prev)
		}
		// Writable by its owner until sealed (Server.sealed): a store that restarts reopens it to append.
		f, err := os.OpenFile(filepath.Join(h.dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			h.stream = nil
			s.alarm("storage", h.origin, remote, "cannot open the host's segment %s: %v", name, err)
			return err
		}
		h.f, h.newFile = f, true
		if h.name != name {
			h.name, h.off = name, 0
		}
	}
	if err := durable.WriteAll(h.f, b); err != nil {
		// What was written of them stays in the area as a torn end; the stream is rebuilt from it.
		h.stream = nil
		h.closeFile()
		s.alarm("storage", h.origin, remote, "cannot write the host's segment %s: %v", name, err)
		return fmt.Errorf("store write: %w", err)
	}
	h.off += int64(len(b))
	h.dirty = true
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
			s.alarm("replay", h.origin, remote, "refused a replay of bytes %d..%d of %s, which the store already holds", off, off+n, name)
			return "replay", fmt.Errorf("bytes %d..%d of %s are already held: a replay (the store holds %s up to %d)", off, off+n, name, h.name, h.off)
		}
		ev := h.evidence(s, remote, "fork", name, off, data, []string{"bytes differ from those held at the same offset"})
		s.alarm("fork", h.origin, remote, "refused bytes %d..%d of %s that differ from what the store holds: a forked history (kept in %s)", off, off+int64(len(data)), name, ev)
		return "fork", fmt.Errorf("bytes at %d of %s differ from those the store holds: history was rewritten", off, name)
	case name < h.name:
		ev := h.evidence(s, remote, "fork", name, off, data, []string{"a segment before the end of the area that the area does not hold"})
		s.alarm("fork", h.origin, remote, "refused segment %s, which sorts before %s where the area ends: a forked history (kept in %s)", name, h.name, ev)
		return "fork", fmt.Errorf("segment %s sorts before %s, where the store's copy ends: history was rewritten", name, h.name)
	default:
		return "gap", fmt.Errorf("bytes at %d of %s do not continue the store's copy, which ends at %d of %s", off, name, h.off, h.name)
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

// evidence keeps refused bytes and why: evidence/<time>-<segment>-<offset>.{bin,json}.
func (h *host) evidence(s *Server, remote, code, name string, off int64, data []byte, why []string) string {
	dir := filepath.Join(h.dir, EvidenceDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		s.cfg.Log.Error().Err(err).Msg("cannot keep evidence")
		return ""
	}
	base := filepath.Join(dir, fmt.Sprintf("%s-%s-%d", time.Now().UTC().Format("20060102T150405.000000000Z"), strings.TrimSuffix(name, ".aseg"), off))
	meta, _ := json.MarshalIndent(map[string]any{"time": time.Now().UTC(), "remote": remote, "code": code, "segment": name,
		"offset": off, "length": len(data), "why": why, "area_ends": map[string]any{"segment": h.name, "offset": h.off}}, "", "  ")
	if err := durable.Create(base+".bin", data, 0o400); err != nil {
		s.cfg.Log.Error().Err(err).Msg("cannot keep evidence")
	}
	if err := durable.Create(base+".json", meta, 0o400); err != nil {
		s.cfg.Log.Error().Err(err).Msg("cannot keep evidence")
	}
	return base + ".bin"
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
	}
	if len(h.latest) > 0 && string(h.latest) != h.receipted {
		r, err := s.key.Cosign(h.latest, time.Now())
		if err != nil {
			return err
		}
		if err := archive.AppendReceipt(h.receipts, r); err != nil {
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
			s.alarm("upload", h.origin, "", "cannot upload sealed segment %s: %v", name, err)
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
