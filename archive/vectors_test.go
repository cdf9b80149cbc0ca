package archive_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/archivetest"
)

// update is the package's -update flag (the only one: test files of package archive_test that need it
// share it through flag.Lookup("update")).
var update = flag.Bool("update", false, "rewrite the expectations in testdata/vectors.txt")

const vectorsFile = "testdata/vectors.txt"

// TestVectors walks testdata/vectors.txt (its header documents the format): it recomputes every
// expectation with the package's code, cross-checks the tree hashes against tlog and a plain recursive
// RFC 6962 implementation, and fails on any directive it does not know. With -update it rewrites the
// expectations and leaves the inputs and comments as they are.
func TestVectors(t *testing.T) {
	data, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	w := &vecWalker{t: t}
	seen := map[string]int{}
	for i, line := range lines {
		w.line = i + 1
		word, _, _ := strings.Cut(line, " ")
		got := w.do(line)
		seen[word]++
		if got == line {
			continue
		}
		if *update {
			lines[i] = got
			continue
		}
		t.Errorf("%s:%d: %s\n\tcomputed: %s", vectorsFile, i+1, line, got)
	}
	// The file must keep covering every directive.
	for _, d := range []string{"key", "vkey", "skey", "event", "lost", "record", "control", "leaf", "leafhash",
		"entry", "block", "append", "root", "frontier", "checkpoint", "signed"} {
		if seen[d] == 0 {
			t.Errorf("%s has no %s directive", vectorsFile, d)
		}
	}
	if *update {
		if err := os.WriteFile(vectorsFile, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// vecWalker is the state of a walk over the vectors file.
type vecWalker struct {
	t    *testing.T
	line int

	name   string // the key's origin
	skey   string
	vkey   string
	signer note.Signer
	verif  note.Verifier

	ev      *audit.RawEvent // the EVENT or LOST leaf being built
	control *archive.Leaf   // the control leaf
	curType byte            // entry type and payload of the current leaf or signed checkpoint
	cur     []byte
	entries []byte // entries since the last block

	tree [][]byte
	ck   *archive.Checkpoint
}

func (w *vecWalker) fatalf(format string, args ...any) {
	w.t.Helper()
	w.t.Fatalf("%s:%d: %s", vectorsFile, w.line, fmt.Sprintf(format, args...))
}

// do handles one line and returns it as it should be: the line itself for comments and inputs, the
// recomputed line for an expectation.
func (w *vecWalker) do(line string) string {
	w.t.Helper()
	if line == "" || strings.HasPrefix(line, "#") {
		return line
	}
	word, rest, _ := strings.Cut(line, " ")
	args := strings.Split(rest, " ")
	switch word {
	case "key":
		w.nargs(args, 2)
		seed, err := hex.DecodeString(args[1])
		if err != nil {
			w.fatalf("seed: %v", err)
		}
		if w.skey, w.vkey, err = archivetest.KeyFromSeed(args[0], seed); err != nil {
			w.fatalf("%v", err)
		}
		w.name = args[0]
		w.signer, _ = note.NewSigner(w.skey)
		w.verif, _ = note.NewVerifier(w.vkey)
		// What LoadIdentity derives from the signer key is the same key.
		keyDir := filepath.Join(w.t.TempDir(), "keys")
		if err := os.Mkdir(keyDir, 0o700); err != nil {
			w.fatalf("%v", err)
		}
		keyFile := filepath.Join(keyDir, archive.IdentityKeyFile)
		if err := os.WriteFile(keyFile, []byte(w.skey+"\n"), 0o600); err != nil {
			w.fatalf("%v", err)
		}
		if id, err := archive.LoadIdentity(keyFile); err != nil || !bytes.Equal(id.Key.Seed(), seed) || id.VKey != w.vkey {
			w.fatalf("LoadIdentity(%s) = %+v, %v", w.skey, id, err)
		}
		return line
	case "vkey":
		w.needKey()
		return "vkey " + w.vkey
	case "skey":
		w.needKey()
		return "skey " + w.skey
	case "event", "lost":
		w.event(word, args)
		return line
	case "record":
		if w.ev == nil || len(args) < 2 {
			w.fatalf("record outside an event, or without a type and a text")
		}
		typ, err := strconv.ParseUint(args[0], 10, 16)
		if err != nil {
			w.fatalf("record type: %v", err)
		}
		text, err := strconv.Unquote(strings.TrimPrefix(rest, args[0]+" "))
		if err != nil {
			w.fatalf("record text: %v", err)
		}
		w.ev.Records = append(w.ev.Records, audit.Record{Type: uint16(typ), Text: []byte(text)})
		return line
	case "control":
		w.controlLeaf(rest)
		return line
	case "leaf":
		return "leaf " + hex.EncodeToString(w.leaf())
	case "leafhash":
		if w.curType != archive.EntryLeaf {
			w.fatalf("leafhash without a leaf")
		}
		h := tlog.RecordHash(w.cur)
		if sum := sha256.Sum256(append([]byte{0}, w.cur...)); sum != h {
			w.fatalf("tlog.RecordHash %x, SHA-256(0x00 || leaf) %x", h, sum)
		}
		return "leafhash " + hex.EncodeToString(h[:])
	case "entry":
		if w.cur == nil {
			w.fatalf("entry without a leaf or signed checkpoint")
		}
		e := archive.AppendEntry(nil, w.curType, w.cur)
		w.entries = append(w.entries, e...)
		return "entry " + hex.EncodeToString(e)
	case "block":
		w.nargs(args, 1)
		return w.block(args[0])
	case "append":
		leaf, err := hex.DecodeString(rest)
		if err != nil {
			w.fatalf("append: %v", err)
		}
		w.tree = append(w.tree, leaf)
		return line
	case "root":
		n := w.size(args[0])
		root := w.frontier(n).Root()
		return fmt.Sprintf("root %d %s", n, base64.StdEncoding.EncodeToString(root[:]))
	case "frontier":
		n := w.size(args[0])
		f := w.frontier(n)
		enc := f.Encode()
		if back, err := archive.DecodeFrontier(n, enc); err != nil || back.Root() != f.Root() {
			w.fatalf("DecodeFrontier(%d, %v): %v", n, enc, err)
		}
		return strings.TrimSpace(fmt.Sprintf("frontier %d %s", n, strings.Join(enc, " ")))
	case "checkpoint":
		w.needKey()
		n := w.size(args[0])
		c := archive.Checkpoint{Origin: w.name, Size: n, Root: w.frontier(n).Root()}
		if back, err := archive.ParseCheckpoint(c.Text()); err != nil || back != c {
			w.fatalf("ParseCheckpoint(%q) = %+v, %v", c.Text(), back, err)
		}
		w.ck = &c
		return fmt.Sprintf("checkpoint %d %s", n, strconv.Quote(c.Text()))
	case "signed":
		if w.ck == nil {
			w.fatalf("signed without a checkpoint")
		}
		msg, err := archive.SignCheckpoint(*w.ck, w.signer)
		if err != nil {
			w.fatalf("sign: %v", err)
		}
		if c, err := archive.OpenCheckpoint(msg, w.verif); err != nil || c != *w.ck {
			w.fatalf("OpenCheckpoint = %+v, %v", c, err)
		}
		w.curType, w.cur = archive.EntryCheckpoint, msg
		return "signed " + strconv.Quote(string(msg))
	}
	w.fatalf("unknown directive %q", word)
	return ""
}

func (w *vecWalker) nargs(args []string, n int) {
	w.t.Helper()
	if len(args) != n {
		w.fatalf("%d arguments, want %d", len(args), n)
	}
}

func (w *vecWalker) needKey() {
	w.t.Helper()
	if w.signer == nil {
		w.fatalf("no key yet")
	}
}

// event starts an EVENT or LOST leaf from its key=value fields.
func (w *vecWalker) event(word string, args []string) {
	w.t.Helper()
	f := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || f[k] != "" {
			w.fatalf("field %q", a)
		}
		f[k] = v
	}
	num := func(k string, bitSize int, signed bool) uint64 {
		w.t.Helper()
		s, ok := f[k]
		if !ok {
			w.fatalf("%s has no %s", word, k)
		}
		delete(f, k)
		if signed {
			n, err := strconv.ParseInt(s, 10, bitSize)
			if err != nil {
				w.fatalf("%s: %v", k, err)
			}
			return uint64(n)
		}
		n, err := strconv.ParseUint(s, 10, bitSize)
		if err != nil {
			w.fatalf("%s: %v", k, err)
		}
		return n
	}
	ev := &audit.RawEvent{Kind: audit.KindEvent, Serial: uint32(num("serial", 32, false)), Sec: int64(num("sec", 64, true)),
		Msec: int32(num("msec", 32, true)), Received: int64(num("received", 64, true)),
		EOE: num("eoe", 1, false) == 1, Late: num("late", 1, false) == 1}
	if word == "lost" {
		ev.Kind = audit.KindLost
		ev.Lost = audit.Lost{Reason: audit.LostReason(num("reason", 8, false)), Count: num("count", 64, false),
			First: uint32(num("first", 32, false)), Last: uint32(num("last", 32, false))}
	}
	for k := range f {
		w.fatalf("unknown field %s", k)
	}
	w.ev, w.control, w.cur = ev, nil, nil
}

// controlBodies are the body types of the control leaves: a vector's JSON must be what the writer
// marshals from them.
var controlBodies = map[archive.LeafKind]func() any{
	archive.LeafStart: func() any { return new(archive.Start) }, archive.LeafStop: func() any { return new(archive.Stop) },
	archive.LeafKey: func() any { return new(archive.Key) }, archive.LeafHeartbeat: func() any { return new(archive.Heartbeat) },
	archive.LeafClock: func() any { return new(archive.Clock) }, archive.LeafSeal: func() any { return new(archive.Seal) },
	archive.LeafPolicy: func() any { return new(json.RawMessage) },
}

// controlLeaf handles `control KIND NS JSON`.
func (w *vecWalker) controlLeaf(rest string) {
	w.t.Helper()
	parts := strings.SplitN(rest, " ", 3)
	if len(parts) != 3 {
		w.fatalf("control needs a kind, a time and a JSON body")
	}
	kind := archive.LeafKind(0)
	for k := archive.LeafKind(1); k != 0; k++ {
		if k.Known() && k.String() == parts[0] && k.Control() {
			kind = k
		}
	}
	if kind == 0 {
		w.fatalf("unknown control leaf kind %q", parts[0])
	}
	ns, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		w.fatalf("time: %v", err)
	}
	body := controlBodies[kind]()
	dec := json.NewDecoder(strings.NewReader(parts[2]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(body); err != nil {
		w.fatalf("%s body: %v", kind, err)
	}
	leaf := archive.AppendControlLeaf(nil, kind, ns, body)
	if string(leaf[9:]) != parts[2] {
		w.fatalf("%s body is not as the writer marshals it:\n\t%s\n\twriter: %s", kind, parts[2], leaf[9:])
	}
	w.ev, w.control, w.cur = nil, &archive.Leaf{Kind: kind, Time: ns, Body: []byte(parts[2])}, nil
}

// leaf encodes the current EVENT, LOST or control leaf and checks that DecodeLeaf gives the inputs back.
func (w *vecWalker) leaf() []byte {
	w.t.Helper()
	var b []byte
	switch {
	case w.ev != nil:
		b = archive.AppendEventLeaf(nil, w.ev)
	case w.control != nil:
		b = archive.AppendControlLeaf(nil, w.control.Kind, w.control.Time, json.RawMessage(w.control.Body))
	default:
		w.fatalf("leaf without an event, lost or control input")
	}
	var l archive.Leaf
	if err := archive.DecodeLeaf(b, &l); err != nil {
		w.fatalf("DecodeLeaf: %v", err)
	}
	if w.ev != nil {
		if err := vecSameEvent(&l.Event, w.ev); err != nil || l.Time != w.ev.Received {
			w.fatalf("DecodeLeaf: %v (time %d)", err, l.Time)
		}
	} else if l.Kind != w.control.Kind || l.Time != w.control.Time || !bytes.Equal(l.Body, w.control.Body) {
		w.fatalf("DecodeLeaf = %s %d %s", l.Kind, l.Time, l.Body)
	}
	w.curType, w.cur = archive.EntryLeaf, b
	return b
}

func vecSameEvent(got, want *audit.RawEvent) error {
	if got.Kind != want.Kind || got.Serial != want.Serial || got.Sec != want.Sec || got.Msec != want.Msec ||
		got.Received != want.Received || got.EOE != want.EOE || got.Late != want.Late || got.Lost != want.Lost ||
		len(got.Records) != len(want.Records) {
		return fmt.Errorf("got %+v, want %+v", got, want)
	}
	for i := range got.Records {
		if got.Records[i].Type != want.Records[i].Type || !bytes.Equal(got.Records[i].Text, want.Records[i].Text) {
			return fmt.Errorf("record %d differs", i)
		}
	}
	return nil
}

// block checks that the block given in hex holds exactly the entries since the last block, and returns
// the block line: as given when it does, else with the package's own encoding. zstd output is not pinned
// (encoder versions differ), so a block is checked by decoding it.
func (w *vecWalker) block(given string) string {
	w.t.Helper()
	entries := w.entries
	w.entries = nil
	if len(entries) == 0 {
		w.fatalf("block without entries")
	}
	own := archive.AppendBlock(nil, entries)
	if got, err := decodeVecBlock(own); err != nil || !bytes.Equal(got, entries) {
		w.fatalf("appendBlock does not decode to its entries: %v", err)
	}
	b, err := hex.DecodeString(given)
	if err == nil {
		var got []byte
		if got, err = decodeVecBlock(b); err == nil && bytes.Equal(got, entries) {
			return "block " + given
		}
	}
	return "block " + hex.EncodeToString(own)
}

// decodeVecBlock decodes one whole block as the segment reader does.
func decodeVecBlock(b []byte) ([]byte, error) {
	if len(b) < archive.BlockHeaderSize {
		return nil, errors.New("short block")
	}
	if n, err := archive.BlockLength(b[:archive.BlockHeaderSize]); err != nil || n != len(b) {
		return nil, fmt.Errorf("block length %d (%v), %d bytes given", n, err, len(b))
	}
	return archive.OpenBlock(b, nil)
}

func (w *vecWalker) size(s string) uint64 {
	w.t.Helper()
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 || n > uint64(len(w.tree)) {
		w.fatalf("size %q: the tree has %d leaves", s, len(w.tree))
	}
	return n
}

// frontier returns the package's Frontier of the first n leaves of the vector tree, after checking its
// root against tlog.TreeHash and mth, and its hashes against the perfect subtrees computed by mth.
func (w *vecWalker) frontier(n uint64) archive.Frontier {
	w.t.Helper()
	leaves := w.tree[:n]
	var f archive.Frontier
	for _, l := range leaves {
		f.Append(l)
	}
	var stored []tlog.Hash
	hr := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	for i, l := range leaves {
		hs, err := tlog.StoredHashes(int64(i), l, hr)
		if err != nil {
			w.fatalf("tlog.StoredHashes: %v", err)
		}
		stored = append(stored, hs...)
	}
	th, err := tlog.TreeHash(int64(n), hr)
	if err != nil {
		w.fatalf("tlog.TreeHash: %v", err)
	}
	if root := f.Root(); root != th || root != mth(leaves) {
		w.fatalf("root of %d leaves: Frontier %x, tlog %x, RFC 6962 %x", n, root, th, mth(leaves))
	}
	if len(f.Hashes) != bits.OnesCount64(n) {
		w.fatalf("frontier of %d leaves has %d hashes", n, len(f.Hashes))
	}
	start := uint64(0)
	for i := range f.Hashes {
		sub := uint64(1) << (63 - bits.LeadingZeros64(n-start))
		if f.Hashes[i] != mth(leaves[start:start+sub]) {
			w.fatalf("frontier hash %d of %d leaves is not the root of leaves %d..%d", i, n, start, start+sub-1)
		}
		start += sub
	}
	return f
}

// mth is RFC 6962's Merkle Tree Hash, section 2.1, written out plainly.
func mth(leaves [][]byte) tlog.Hash {
	switch len(leaves) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return sha256.Sum256(append([]byte{0}, leaves[0]...))
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	l, r := mth(leaves[:k]), mth(leaves[k:])
	return sha256.Sum256(append(append([]byte{1}, l[:]...), r[:]...))
}
