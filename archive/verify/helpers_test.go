package verify

// Helpers that play an attacker with root: they decode a segment into its entries, let a test edit them,
// and encode them again with valid checksums and compression; and they steal the writer's epoch keys.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/internal/testhook"
	"golang.org/x/mod/sumdb/note"
)

// stolenKeys records the private epoch keys testhook.EpochKey shows, by verifier key, as an attacker who
// read the daemon's memory would have them. The writer erases its copy, so the hook's bytes are copied.
type stolenKeys struct {
	mu   sync.Mutex
	keys map[string][]byte
}

// stealEpochKeys sets testhook.EpochKey for the rest of the test.
func stealEpochKeys(t testing.TB) *stolenKeys {
	s := &stolenKeys{keys: map[string][]byte{}}
	testhook.EpochKey = func(priv []byte, vkey string) {
		s.mu.Lock()
		s.keys[vkey] = bytes.Clone(priv)
		s.mu.Unlock()
	}
	t.Cleanup(func() { testhook.EpochKey = nil })
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
	return &stolenSigner{name: v.Name(), hash: v.KeyHash(), priv: priv}
}

// stolenSigner signs with a stolen epoch key.
type stolenSigner struct {
	name string
	hash uint32
	priv ed25519.PrivateKey
}

func (s *stolenSigner) Name() string                    { return s.name }
func (s *stolenSigner) KeyHash() uint32                 { return s.hash }
func (s *stolenSigner) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.priv, msg), nil }

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
	s, err := archive.OpenSegment(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sg := &tSeg{path: path}
	for {
		typ, p, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("load %s: %v", path, err)
		}
		sg.ents = append(sg.ents, tEntry{typ: typ, block: s.Blocks(), p: bytes.Clone(p)})
	}
	if len(sg.ents) == 0 || sg.ents[0].typ != archive.EntryHeader {
		t.Fatalf("%s does not start with a header", path)
	}
	return sg
}

// encode re-encodes the entries, keeping their grouping into blocks, with valid checksums and compression.
func (s *tSeg) encode() []byte {
	out := []byte(archive.SegmentMagic)
	var cur []byte
	blk := -1
	for _, e := range s.ents {
		if e.block != blk && len(cur) > 0 {
			out = archive.AppendBlock(out, cur)
			cur = cur[:0:0]
		}
		blk = e.block
		cur = archive.AppendEntry(cur, e.typ, e.p)
	}
	if len(cur) > 0 {
		out = archive.AppendBlock(out, cur)
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

func (s *tSeg) header(t testing.TB) archive.SegmentHeader {
	t.Helper()
	var h archive.SegmentHeader
	if err := json.Unmarshal(s.ents[0].p, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func (s *tSeg) setHeader(t testing.TB, h archive.SegmentHeader) {
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
		if e.typ == archive.EntryLeaf {
			pos = append(pos, k)
			index = append(index, i)
			i++
		}
	}
	return pos, index
}

// kind returns the kind of the leaf entry at position k.
func (s *tSeg) kind(k int) archive.LeafKind { return archive.LeafKind(s.ents[k].p[0]) }

// remove deletes the entry at position k.
func (s *tSeg) remove(k int) { s.ents = append(s.ents[:k:k], s.ents[k+1:]...) }

// tArchive is an archive directory decoded segment by segment, in name order.
type tArchive struct {
	dir  string
	segs []*tSeg
}

func loadArchive(t testing.TB, dir string) *tArchive {
	t.Helper()
	files, err := archive.ListSegments(dir)
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
func (a *tArchive) rechain(t testing.TB, from uint64, sign func(c archive.Checkpoint) note.Signer) {
	t.Helper()
	h0 := a.segs[0].header(t)
	tree, err := archive.DecodeFrontier(h0.FirstIndex, h0.Frontier)
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
			case archive.EntryLeaf:
				tree.Append(e.p)
			case archive.EntryCheckpoint:
				old, err := archive.PeekCheckpoint(e.p)
				if err != nil {
					t.Fatal(err)
				}
				c := archive.Checkpoint{Origin: old.Origin, Size: tree.Size, Root: tree.Root()}
				if c.Size > from {
					if sg := sign(c); sg != nil {
						if e.p, err = archive.SignCheckpoint(c, sg); err != nil {
							t.Fatal(err)
						}
					}
				}
				lastCk = e.p
			}
		}
	}
}

// forgedKey is an epoch key an attacker generated: theirs, never introduced by the identity key.
type forgedKey struct {
	note.Signer
	vkey  string
	epoch uint64
}

func newEpochKey(name string, epoch uint64) (*forgedKey, error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return nil, err
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, err
	}
	return &forgedKey{Signer: s, vkey: vkey, epoch: epoch}, nil
}
