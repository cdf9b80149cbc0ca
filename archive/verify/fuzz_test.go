package verify

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/capfile"
)

// Fuzz targets. Seeds are segments, checkpoints and leaves made by the package itself; crashers the fuzzer
// finds are kept in testdata/fuzz/FuzzX/ and run by every `go test`.

const fuzzOrigin = "auditarch/fuzz.example"

// fuzzEvents returns the first n events of ../../testdata/workload.cap and a LOST leaf's event.
func fuzzEvents(tb testing.TB, n int) []*audit.RawEvent {
	tb.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", "workload.cap"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	c, err := capfile.Read(f)
	if err != nil {
		tb.Fatal(err)
	}
	evs := capfile.Replay(c, 1_700_000_000e9)
	if len(evs) < n {
		tb.Fatalf("workload.cap has %d events, want %d", len(evs), n)
	}
	return append(evs[:n:n], &audit.RawEvent{Kind: audit.KindLost, EOE: true, Sec: 1_700_000_001, Msec: 5,
		Received: 1_700_000_001_005_000_000, Lost: audit.Lost{Reason: audit.LostGap, Count: 3, First: 1<<32 - 1, Last: 1}})
}

// fuzzArchiveEnv hands the seed archive of a fuzzing coordinator to its workers, which inherit its
// environment: FuzzSegment's oracle needs the very segments the coordinator seeded the corpus with, and no
// two writers write the same bytes (times, epoch keys).
const fuzzArchiveEnv = "AUDITARCH_FUZZ_ARCHIVE"

// fuzzArchive returns the segment files of a real archive and the verifier of its identity key: written by
// a writer — a short run, then one that rotates segments and epoch keys — or the coordinator's.
func fuzzArchive(tb testing.TB) (segs []string, id note.Verifier) {
	root := os.Getenv(fuzzArchiveEnv)
	if root == "" {
		root = tb.TempDir()
		writeFuzzArchive(tb, root)
		tb.Setenv(fuzzArchiveEnv, root)
	}
	id, _, err := archive.LoadVerifierKey(filepath.Join(root, "keys", archive.IdentityPubFile))
	if err != nil {
		tb.Fatal(err)
	}
	segs, err = archive.ListSegments(filepath.Join(root, "arch"))
	if err != nil || len(segs) < 2 {
		tb.Fatalf("%d segments in %s (%v)", len(segs), root, err)
	}
	return segs, id
}

func writeFuzzArchive(tb testing.TB, root string) {
	keys := filepath.Join(root, "keys")
	if _, err := archive.Keygen(keys, fuzzOrigin); err != nil {
		tb.Fatal(err)
	}
	ident, err := archive.LoadIdentity(filepath.Join(keys, archive.IdentityKeyFile))
	if err != nil {
		tb.Fatal(err)
	}
	// Small events keep the seeds small, which the fuzzer mutates and minimizes faster.
	var evs []*audit.RawEvent
	for i, ev := range fuzzEvents(tb, 6) {
		if len(ev.Records) > 0 {
			ev.Records = ev.Records[:1]
			ev.Records[0].Text = ev.Records[0].Text[:min(len(ev.Records[0].Text), 40+i)]
		}
		evs = append(evs, ev)
	}
	fast := writer.Options{Identity: ident, SegmentDuration: 150 * time.Millisecond, EpochDuration: 100 * time.Millisecond,
		HeartbeatInterval: 100 * time.Millisecond, FlushInterval: 10 * time.Millisecond}
	// The first run is one whole segment: alone, it verifies.
	for run, opts := range []writer.Options{{Identity: ident}, fast} {
		w, err := writer.Create(filepath.Join(root, "arch"), opts)
		if err != nil {
			tb.Fatal(err)
		}
		for _, ev := range evs[(1-run)*3:] {
			w.Append(ev)
			if run == 1 {
				time.Sleep(40 * time.Millisecond)
			}
		}
		if err := w.Close(); err != nil {
			tb.Fatal(err)
		}
	}
}

// segWalk reads the segment at path as far as it decodes. It returns the blocks decompressed, the content
// (every leaf and checkpoint entry, type byte and payload, after the header) and the number of leaf entries.
func segWalk(path string) (blocks [][]byte, content []byte, leaves int) {
	data, err := os.ReadFile(path)
	if err != nil || !bytes.HasPrefix(data, []byte(archive.SegmentMagic)) {
		return nil, nil, 0
	}
	for rest := data[len(archive.SegmentMagic):]; len(rest) >= archive.BlockHeaderSize; {
		l, err := archive.BlockLength(rest[:archive.BlockHeaderSize])
		if err != nil || l > len(rest) {
			break
		}
		blk, err := archive.OpenBlock(rest[:l], nil)
		if err != nil {
			break
		}
		rest = rest[l:]
		blocks = append(blocks, blk)
		for p := blk; len(p) > 0; {
			typ, payload, next, err := archive.NextEntry(p)
			if err != nil {
				return blocks, content, leaves
			}
			p = next
			if typ == archive.EntryLeaf {
				leaves++
			}
			if typ != archive.EntryHeader {
				content = archive.AppendEntry(content, typ, payload)
			}
		}
	}
	return blocks, content, leaves
}

// plainSegment is a segment file with its blocks decompressed: the blocks after the magic, each as
// `u32 length, u32 (ignored), entries`. frameSegment turns it back into a segment file.
func plainSegment(blocks [][]byte) []byte {
	var b []byte
	for _, blk := range blocks {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(blk)))
		b = append(b, 0, 0, 0, 0)
		b = append(b, blk...)
	}
	return b
}

// frameSegment makes a segment file of plain (see plainSegment): the magic, then each block compressed
// and checksummed as the writer does, so that the fuzzer reaches the entries behind the CRC. A last block
// that is cut short is copied as it is: a torn write.
func frameSegment(plain []byte) []byte {
	b := []byte(archive.SegmentMagic)
	for len(plain) > 0 {
		if len(plain) < archive.BlockHeaderSize {
			return append(b, plain...)
		}
		n := binary.LittleEndian.Uint32(plain)
		if uint64(n) > uint64(len(plain)-archive.BlockHeaderSize) {
			return append(b, plain...)
		}
		b = archive.AppendBlock(b, plain[archive.BlockHeaderSize:archive.BlockHeaderSize+int(n)])
		plain = plain[archive.BlockHeaderSize+int(n):]
	}
	return b
}

// Whatever a segment file holds, the Reader returns leaves, *CorruptError or io.EOF and never panics or
// loops, and Dir returns a report that is PASS only for what a writer signed: every leaf covered by a
// checkpoint and, with the identity key pinned, exactly the leaves and checkpoints of a real segment (its
// header and block framing may differ). With plain set, data is the segment with its blocks decompressed
// (plainSegment). Two seeds were forgeries Dir passed: the first run without its SEAL and checkpoint
// (leaves up to STOP unsigned), and forgedSegment.
func FuzzSegment(f *testing.F) {
	segs, id := fuzzArchive(f)
	genuine := map[string]bool{} // content of the real segments
	for _, path := range segs {
		file, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		blocks, content, _ := segWalk(path)
		genuine[string(content)] = true
		f.Add(file, false)
		f.Add(file[:len(file)-1], false)                                         // torn last block
		f.Add(file[:len(archive.SegmentMagic)+archive.BlockHeaderSize+3], false) // torn header block
		flip := bytes.Clone(file)
		flip[len(flip)-2] ^= 0x40 // checksum mismatch
		f.Add(flip, false)
		plain := plainSegment(blocks)
		f.Add(plain, true)
		if n := len(blocks); n > 1 {
			f.Add(plainSegment(blocks[:n-1]), true) // the last block lost
			last := blocks[n-1]
			// The last block without its final entries in turn: a checkpoint, a SEAL, a STOP...
			for cut := len(last); cut > 0; {
				cut = lastEntry(last[:cut])
				f.Add(plainSegment(append(blocks[:n-1:n-1], last[:cut])), true)
			}
		}
	}
	f.Add(forgedSegment(f), false)
	f.Add([]byte(archive.SegmentMagic), false)
	f.Add([]byte(archive.SegmentMagic[:7]), false)
	f.Add([]byte{}, false)
	f.Add([]byte{}, true)
	dir := f.TempDir()
	path := filepath.Join(dir, archive.SegmentName(0, time.Unix(1_700_000_000, 0)))
	now := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, data []byte, plain bool) {
		file := data
		if plain {
			file = frameSegment(data)
		}
		// A new file each time: truncating one in place makes ext4 flush it on close, ten times slower.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		_, content, leaves := segWalk(path)
		fuzzRead(t, dir, path, int64(len(file)), leaves)
		for _, key := range []note.Verifier{nil, id} {
			r, err := Dir(dir, Options{Key: key, Now: now})
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			switch r.Status {
			case Pass, Incomplete, Tampered:
			default:
				t.Fatalf("status %q", r.Status)
			}
			if (r.Status == Pass) != (len(r.Problems) == 0) {
				t.Fatalf("status %s with problems %+v", r.Status, r.Problems)
			}
			if r.Status != Pass {
				continue
			}
			if r.Verified != r.FirstIndex+r.Leaves {
				t.Fatalf("PASS (pinned %v) with leaves %d..%d of which only %d are signed", key != nil, r.FirstIndex, r.FirstIndex+r.Leaves, r.Verified)
			}
			if key != nil && r.Leaves > 0 && !genuine[string(content)] {
				t.Fatalf("PASS with the identity key pinned for %d leaves no writer signed", r.Leaves)
			}
		}
	})
}

// forgedSegment is a forger's first segment: its header names an epoch key of the forger's, which signs
// the leaves after it; no START introduces the key.
func forgedSegment(tb testing.TB) []byte {
	skey, vkey, err := archivetest.KeyFromSeed(fuzzOrigin, bytes.Repeat([]byte{9}, 32))
	if err != nil {
		tb.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		tb.Fatal(err)
	}
	h, err := json.Marshal(archive.SegmentHeader{Format: archive.FormatV1, Origin: fuzzOrigin, Start: 1_700_000_000e9, Frontier: []string{},
		EpochKey: vkey, Epoch: 1})
	if err != nil {
		tb.Fatal(err)
	}
	var tree archive.Frontier
	var ent []byte
	for _, ev := range fuzzEvents(tb, 2) {
		leaf := archive.AppendEventLeaf(nil, ev)
		tree.Append(leaf)
		ent = archive.AppendEntry(ent, archive.EntryLeaf, leaf)
	}
	msg, err := archive.SignCheckpoint(archive.Checkpoint{Origin: fuzzOrigin, Size: tree.Size, Root: tree.Root()}, signer)
	if err != nil {
		tb.Fatal(err)
	}
	file := archive.AppendBlock([]byte(archive.SegmentMagic), archive.AppendEntry(nil, archive.EntryHeader, h))
	return archive.AppendBlock(file, archive.AppendEntry(ent, archive.EntryCheckpoint, msg))
}

// lastEntry returns the offset of the last whole entry of a decompressed block.
func lastEntry(blk []byte) int {
	last := 0
	for off := 0; off+archive.EntryHeadSize <= len(blk); {
		last = off
		off += archive.EntryHeadSize + int(binary.LittleEndian.Uint32(blk[off+1:]))
	}
	return last
}

// fuzzRead reads the one segment in dir with a Reader to the end. leaves is the number of leaf entries in
// the file: every call returns one of them or ends the segment.
func fuzzRead(t *testing.T, dir, path string, size int64, leaves int) {
	r, err := archive.Open(dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	var next uint64
	for calls, n := 0, 0; ; calls++ {
		if calls > leaves+1 {
			t.Fatalf("no io.EOF after %d calls for %d leaf entries", calls, leaves)
		}
		l, i, err := r.NextLeaf()
		if err == io.EOF {
			break
		}
		if err != nil {
			var ce *archive.CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, archive.ErrCorrupt) {
				t.Fatalf("NextLeaf: %v (%T), want a *CorruptError or io.EOF", err, err)
			}
			if ce.Path != path || ce.Offset < 0 || ce.Offset > size {
				t.Fatalf("CorruptError %+v outside the %d-byte file", ce, size)
			}
			continue
		}
		if n > 0 && i != next {
			t.Fatalf("leaf %d has index %d, want %d", n, i, next)
		}
		n, next = n+1, i+1
		if !l.Kind.Known() {
			t.Fatalf("leaf of kind %d", l.Kind)
		}
	}
	if _, _, err := r.NextLeaf(); err != io.EOF {
		t.Fatalf("NextLeaf after io.EOF: %v", err)
	}
}

// fuzzKey is a fixed key of fuzzOrigin made from a seed of 32 bytes b.
func fuzzKey(tb testing.TB, b byte) (note.Signer, note.Verifier) {
	tb.Helper()
	skey, vkey, err := archivetest.KeyFromSeed(fuzzOrigin, bytes.Repeat([]byte{b}, 32))
	if err != nil {
		tb.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		tb.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		tb.Fatal(err)
	}
	return s, v
}

// ParseCheckpoint and OpenCheckpoint never panic; what ParseCheckpoint accepts is exactly Text's output,
// and what OpenCheckpoint accepts is a note signed by the key, whose text is the checkpoint's and whose
// body peekCheckpoint (the verifier's first look) reads the same.
func FuzzCheckpoint(f *testing.F) {
	s, v := fuzzKey(f, 7)
	other, _ := fuzzKey(f, 8)
	for _, c := range []archive.Checkpoint{
		{Origin: fuzzOrigin, Size: 13, Root: tlog.RecordHash([]byte("x"))},
		{Origin: fuzzOrigin},
		{Origin: "o", Size: 1<<64 - 1},
	} {
		f.Add(c.Text())
		msg, err := archive.SignCheckpoint(c, s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(msg))
		f.Add(string(msg) + string(msg[len(c.Text())+1:])) // the signature twice
		f.Add(strings.Replace(string(msg), "\n\n", "\nextension\n\n", 1))
		msg, _ = note.Sign(&note.Note{Text: c.Text()}, s, other)
		f.Add(string(msg))
	}
	f.Add("o\n013\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
	f.Add("o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n")
	// A carriage return after the root: base64 decoding skips it, so it parsed to another text.
	f.Add("o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n")
	f.Add("\n\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, text string) {
		if c, err := archive.ParseCheckpoint(text); err == nil {
			if got := c.Text(); got != text {
				t.Fatalf("ParseCheckpoint(%q) = %+v, whose text is %q", text, c, got)
			}
		}
		c, err := archive.OpenCheckpoint([]byte(text), v)
		if err != nil {
			return
		}
		n, err := note.Open([]byte(text), note.VerifierList(v))
		if err != nil {
			t.Fatalf("OpenCheckpoint accepted %q, which note.Open rejects: %v", text, err)
		}
		if n.Text != c.Text() {
			t.Fatalf("OpenCheckpoint(%q) = %+v, whose text is not the signed text", text, c)
		}
		if p, err := archive.PeekCheckpoint([]byte(text)); err != nil || p != c {
			t.Fatalf("peekCheckpoint(%q) = %+v, %v; OpenCheckpoint gives %+v", text, p, err, c)
		}
	})
}

// DecodeLeaf never panics; what it accepts is canonical: an EVENT or LOST leaf re-encodes to the same
// bytes, a control leaf is a known kind, its time and its JSON body.
func FuzzDecodeLeaf(f *testing.F) {
	for _, ev := range fuzzEvents(f, 8) {
		f.Add(archive.AppendEventLeaf(nil, ev))
	}
	f.Add(archive.AppendEventLeaf(nil, &audit.RawEvent{Kind: audit.KindEvent, Late: true, Serial: 1<<32 - 1, Sec: -1, Msec: -1,
		Records: []audit.Record{{Type: 1300, Text: []byte("audit(1.002:3): \x00\xff")}, {Type: 0xffff}}}))
	f.Add(archive.AppendControlLeaf(nil, archive.LeafStart, 1_700_000_000e9, archive.Start{Origin: fuzzOrigin, Recovered: &archive.Recovery{Segment: "s"}}))
	f.Add(archive.AppendControlLeaf(nil, archive.LeafSeal, -1, archive.Seal{Checkpoints: 2}))
	f.Add(archive.AppendControlLeaf(nil, archive.LeafPolicy, 0, nil))
	// A record count of 0 in two bytes (an overlong uvarint): the same event as the canonical leaf.
	f.Add(append(archive.AppendEventLeaf(nil, &audit.RawEvent{Kind: audit.KindEvent})[:26], 0x80, 0))
	f.Add([]byte{byte(archive.LeafEvent)})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		var l archive.Leaf
		if err := archive.DecodeLeaf(p, &l); err != nil {
			return
		}
		switch l.Kind {
		case archive.LeafEvent, archive.LeafLost:
			if (l.Kind == archive.LeafLost) != (l.Event.Kind == audit.KindLost) {
				t.Fatalf("%s leaf decodes to an event of kind %d", l.Kind, l.Event.Kind)
			}
			if l.Kind == archive.LeafEvent && l.Event.Lost != (audit.Lost{}) {
				t.Fatalf("EVENT leaf with %+v", l.Event.Lost)
			}
			if l.Time != l.Event.Received {
				t.Fatalf("time %d, received %d", l.Time, l.Event.Received)
			}
			if got := archive.AppendEventLeaf(nil, &l.Event); !bytes.Equal(got, p) {
				t.Fatalf("leaf %x decodes to %+v, which encodes as %x", p, l.Event, got)
			}
		default:
			if !l.Kind.Known() || !l.Kind.Control() {
				t.Fatalf("leaf of kind %d accepted", l.Kind)
			}
			got := binary.LittleEndian.AppendUint64([]byte{byte(l.Kind)}, uint64(l.Time))
			if got = append(got, l.Body...); !bytes.Equal(got, p) {
				t.Fatalf("control leaf %x decodes to %s %d %q", p, l.Kind, l.Time, l.Body)
			}
		}
	})
}
