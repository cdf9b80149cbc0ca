package archive

// Helpers for the internal tests (package archive): archive_test.go is an external test package, so its
// helpers are not visible here. These play an attacker with root: they decode a segment into its entries,
// let a test edit them, and encode them again with valid checksums and compression.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/auditarch/auditarch/audit"
)

// tIdentity makes a host identity key for origin and returns it with its pinned verifier.
func tIdentity(t testing.TB, origin string) (*Identity, note.Verifier) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	if _, err := Keygen(dir, origin); err != nil {
		t.Fatal(err)
	}
	id, err := LoadIdentity(filepath.Join(dir, IdentityKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := LoadVerifierKey(filepath.Join(dir, IdentityPubFile))
	if err != nil {
		t.Fatal(err)
	}
	return id, v
}

// tFastOptions cut segments, epochs, checkpoints and heartbeats in fractions of a second (as fastOptions
// in archive_test.go).
func tFastOptions(id *Identity) Options {
	return Options{Identity: id, SegmentDuration: 700 * time.Millisecond, EpochDuration: 300 * time.Millisecond,
		HeartbeatInterval: 200 * time.Millisecond, FlushInterval: 20 * time.Millisecond}
}

// tEvent returns a small, distinct kernel event received now.
func tEvent(serial uint32) *audit.RawEvent {
	now := time.Now().UnixNano()
	sec, msec := now/1e9, int32(now%1e9/1e6)
	stamp := fmt.Sprintf("audit(%d.%03d:%d): ", sec, msec, serial)
	return &audit.RawEvent{Kind: audit.KindEvent, Serial: serial, Sec: sec, Msec: msec, Received: now, EOE: true,
		Records: []audit.Record{
			{Type: 1300, Text: []byte(stamp + fmt.Sprintf("arch=c000003e syscall=59 success=yes exit=0 pid=%d uid=0 comm=\"sh\"", 1000+serial))},
			{Type: 1309, Text: []byte(stamp + fmt.Sprintf("argc=2 a0=\"echo\" a1=\"%d\"", serial))},
		}}
}

// tWrite runs one writer over dir, appending n events over about d (all at once when d is 0), and closes it.
func tWrite(t testing.TB, dir string, opts Options, n int, d time.Duration) {
	t.Helper()
	w, err := Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		w.Append(tEvent(uint32(i + 1)))
		if d > 0 {
			time.Sleep(d / time.Duration(n))
		}
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// stolenKeys records the private epoch keys testEpochKeyHook shows, by verifier key, as an attacker who
// read the daemon's memory would have them. The writer erases its copy, so the hook's bytes are copied.
type stolenKeys struct {
	mu   sync.Mutex
	keys map[string][]byte
}

// stealEpochKeys sets testEpochKeyHook for the rest of the test.
func stealEpochKeys(t testing.TB) *stolenKeys {
	s := &stolenKeys{keys: map[string][]byte{}}
	testEpochKeyHook = func(priv []byte, vkey string) {
		s.mu.Lock()
		s.keys[vkey] = bytes.Clone(priv)
		s.mu.Unlock()
	}
	t.Cleanup(func() { testEpochKeyHook = nil })
	return s
}

// signer returns a note signer over the stolen private key of the epoch key vkey.
func (s *stolenKeys) signer(t testing.TB, vkey string) note.Signer {
	t.Helper()
	s.mu.Lock()
	priv := s.keys[vkey]
	s.mu.Unlock()
	if priv == nil {
		t.Fatalf("epoch key %s was not captured", vkey)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return &epochKey{name: v.Name(), priv: priv, vkey: vkey, hash: v.KeyHash()}
}

// tCopyDir copies an archive directory (segments and lock file) into a new private directory.
func tCopyDir(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "arch")
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		tCopyFile(t, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
	}
	return dst
}

func tCopyFile(t testing.TB, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// tEntry is one entry of a decoded segment, with the number of the block it came from (1: the header block).
type tEntry struct {
	typ   byte
	block int
	p     []byte
}

// tSeg is a segment decoded into its entries, for an attacker to edit and save again.
type tSeg struct {
	path string
	ents []tEntry
}

// loadSeg decodes every block of the segment at path. It fails on a torn or damaged segment.
func loadSeg(t testing.TB, path string) *tSeg {
	t.Helper()
	s, err := openSegment(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sg := &tSeg{path: path}
	for {
		typ, p, err := s.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("load %s: %v", path, err)
		}
		sg.ents = append(sg.ents, tEntry{typ: typ, block: s.blocks, p: bytes.Clone(p)})
	}
	if len(sg.ents) == 0 || sg.ents[0].typ != entryHeader {
		t.Fatalf("%s does not start with a header", path)
	}
	return sg
}

// encode re-encodes the entries, keeping their grouping into blocks, with valid checksums and compression.
func (s *tSeg) encode() []byte {
	out := []byte(segMagic)
	var cur []byte
	blk := -1
	for _, e := range s.ents {
		if e.block != blk && len(cur) > 0 {
			out = appendBlock(out, cur)
			cur = cur[:0:0]
		}
		blk = e.block
		cur = appendEntry(cur, e.typ, e.p)
	}
	if len(cur) > 0 {
		out = appendBlock(out, cur)
	}
	return out
}

// save writes the segment back in place.
func (s *tSeg) save(t testing.TB) {
	t.Helper()
	if err := os.WriteFile(s.path, s.encode(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (s *tSeg) header(t testing.TB) SegmentHeader {
	t.Helper()
	var h SegmentHeader
	if err := json.Unmarshal(s.ents[0].p, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func (s *tSeg) setHeader(t testing.TB, h SegmentHeader) {
	t.Helper()
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	s.ents[0].p = b
}

// leaves returns the positions in s.ents of the leaf entries, with their tree indices.
func (s *tSeg) leaves(t testing.TB) (pos []int, index []uint64) {
	t.Helper()
	i := s.header(t).FirstIndex
	for k, e := range s.ents {
		if e.typ == entryLeaf {
			pos = append(pos, k)
			index = append(index, i)
			i++
		}
	}
	return pos, index
}

// kind returns the kind of the leaf entry at position k.
func (s *tSeg) kind(k int) LeafKind { return LeafKind(s.ents[k].p[0]) }

// remove deletes the entry at position k.
func (s *tSeg) remove(k int) { s.ents = append(s.ents[:k:k], s.ents[k+1:]...) }

// tArchive is an archive directory decoded segment by segment, in name order.
type tArchive struct {
	dir  string
	segs []*tSeg
}

func loadArchive(t testing.TB, dir string) *tArchive {
	t.Helper()
	files, err := listSegments(dir)
	if err != nil || len(files) == 0 {
		t.Fatalf("segments of %s: %v (%d)", dir, err, len(files))
	}
	a := &tArchive{dir: dir}
	for _, f := range files {
		a.segs = append(a.segs, loadSeg(t, f))
	}
	return a
}

func (a *tArchive) save(t testing.TB) {
	t.Helper()
	for _, s := range a.segs {
		s.save(t)
	}
}

// rechain recomputes the tree over the edited leaves as an attacker would: every checkpoint that covers
// leaf index from or later is signed again by sign (which may return nil to keep the original), and every
// segment header after the first gets the recomputed frontier and previous checkpoint.
func (a *tArchive) rechain(t testing.TB, from uint64, sign func(c Checkpoint) note.Signer) {
	t.Helper()
	h0 := a.segs[0].header(t)
	tree, err := DecodeFrontier(h0.FirstIndex, h0.Frontier)
	if err != nil {
		t.Fatal(err)
	}
	lastCk := []byte(h0.PrevCheckpoint)
	for n, s := range a.segs {
		if n > 0 {
			h := s.header(t)
			h.Frontier, h.PrevCheckpoint = tree.Encode(), string(lastCk)
			s.setHeader(t, h)
		}
		for k := range s.ents {
			e := &s.ents[k]
			switch e.typ {
			case entryLeaf:
				tree.Append(e.p)
			case entryCheckpoint:
				old, err := peekCheckpoint(e.p)
				if err != nil {
					t.Fatal(err)
				}
				c := Checkpoint{Origin: old.Origin, Size: tree.Size, Root: tree.Root()}
				if c.Size > from {
					if sg := sign(c); sg != nil {
						if e.p, err = signCheckpoint(c, sg); err != nil {
							t.Fatal(err)
						}
					}
				}
				lastCk = e.p
			}
		}
	}
}

// tBlockOffsets returns the file offsets of the blocks of a segment file's bytes.
func tBlockOffsets(data []byte) []int {
	var offs []int
	for off := len(segMagic); off+blockHeader <= len(data); {
		offs = append(offs, off)
		off += blockHeader + int(binary.LittleEndian.Uint32(data[off:]))
	}
	return offs
}

// tSegFiles lists the segment files of dir in name order.
func tSegFiles(t testing.TB, dir string) []string {
	t.Helper()
	files, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	return files
}
