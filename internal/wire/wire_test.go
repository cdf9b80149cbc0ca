package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// frame returns the bytes of one frame whose header claims n payload bytes, followed by payload.
func frame(typ byte, n uint32, payload []byte) []byte {
	b := []byte{typ}
	b = binary.LittleEndian.AppendUint32(b, n)
	return append(b, payload...)
}

// readAll reads frames from in until ReadFrame fails, reusing one buffer as the store does, and returns
// the error that ended it and the bytes allocated meanwhile (by ReadFrame alone: nothing else allocates
// between the two measurements).
func readAll(in []byte) (alloc uint64, err error) {
	br := bufio.NewReader(bytes.NewReader(in))
	var buf []byte
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for {
		var p []byte
		if _, p, err = ReadFrame(br, buf); err != nil {
			break
		}
		buf = p[:0]
	}
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, err
}

// allocSlack covers what ReadFrame allocates besides payload buffers (the error it returns) and the
// runtime's own noise between two ReadMemStats.
const allocSlack = 16 << 10

// FuzzReadFrame: any input is either read as frames that encode back to its prefix, or refused; and
// reading it allocates at most readChunk plus 4 times its length (plus slack), never what a header claims.
func FuzzReadFrame(f *testing.F) {
	f.Add(frame(Hello, 2, []byte("{}")))
	f.Add(append(frame(Data, 3, []byte("abc")), frame(Ack, 0, nil)...))
	f.Add(frame(Data, MaxFrame, []byte("abc")))   // claims 8 MiB, sends 3 bytes
	f.Add(frame(Data, MaxFrame+1, []byte("abc"))) // over the limit
	// Payloads past readChunk (buffer growth) are left to TestReadFrameLarge: the fuzzer takes minutes
	// to minimize an interesting input of that size, and fuzzes nothing meanwhile.
	f.Add(frame(Data, 1<<20, bytes.Repeat([]byte{7}, 1000)))
	f.Add([]byte{Error, 1, 0})
	f.Add(append(frame(State, 5, []byte("12345")), frame(Data, 1<<30, nil)...))
	f.Fuzz(func(t *testing.T, in []byte) {
		// Read once for the allocation bound (no copies made while measuring).
		alloc, err := readAll(in)
		if limit := uint64(readChunk + 4*len(in) + allocSlack); alloc > limit {
			t.Fatalf("reading %d bytes allocated %d, more than %d", len(in), alloc, limit)
		}
		// Read again, one frame at a time, checking content.
		br := bufio.NewReader(bytes.NewReader(in))
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		var buf []byte
		for {
			typ, p, rerr := ReadFrame(br, buf)
			if rerr != nil {
				if err == nil || rerr.Error() != err.Error() {
					t.Fatalf("two reads of the same input ended differently: %v, %v", err, rerr)
				}
				break
			}
			if len(p) > MaxFrame {
				t.Fatalf("a %d-byte payload was returned", len(p))
			}
			buf = p[:0]
			if err := WriteFrame(bw, typ, p); err != nil {
				t.Fatal(err)
			}
		}
		bw.Flush()
		if !bytes.HasPrefix(in, out.Bytes()) {
			t.Fatalf("frames read do not encode back to the input's prefix")
		}
		rest := in[out.Len():]
		switch {
		case errors.Is(err, io.EOF) && err == io.EOF:
			if len(rest) != 0 {
				t.Fatalf("clean end with %d bytes left", len(rest))
			}
		case errors.Is(err, io.ErrUnexpectedEOF):
			// A header or payload cut short.
			if len(rest) >= 5 && int(binary.LittleEndian.Uint32(rest[1:])) <= len(rest)-5 {
				t.Fatalf("cut short with a whole frame left: %v", err)
			}
		case err != nil && strings.Contains(err.Error(), "exceeds"):
			if len(rest) < 5 || binary.LittleEndian.Uint32(rest[1:]) <= MaxFrame {
				t.Fatalf("refused a frame within the limit: %v", err)
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
	})
}

// TestReadFrameClaimedLength: a header that claims the largest frame followed by 3 bytes costs a
// readChunk, not 8 MiB, and is cut short.
func TestReadFrameClaimedLength(t *testing.T) {
	for _, n := range []uint32{MaxFrame, 1 << 20, readChunk + 1} {
		in := frame(Data, n, []byte("abc"))
		alloc, err := readAll(in)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("claims %d: %v, want cut short", n, err)
		}
		t.Logf("claims %d bytes, sends 3: allocated %d bytes", n, alloc)
		if alloc > readChunk+allocSlack {
			t.Errorf("claims %d bytes, sends 3: allocated %d bytes, more than a readChunk (%d)", n, alloc, readChunk)
		}
	}
}

// TestReadFrameLarge: a whole 8 MiB frame is read intact, growing the buffer, and a second one reuses it.
func TestReadFrameLarge(t *testing.T) {
	p := make([]byte, MaxFrame)
	for i := range p {
		p[i] = byte(i * 7)
	}
	in := append(frame(Data, MaxFrame, p), frame(Data, MaxFrame, p)...)
	br := bufio.NewReader(bytes.NewReader(in))
	typ, got, err := ReadFrame(br, nil)
	if err != nil || typ != Data || !bytes.Equal(got, p) {
		t.Fatalf("type %d, %d bytes, %v", typ, len(got), err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, got2, err := ReadFrame(br, got[:0])
	runtime.ReadMemStats(&after)
	if err != nil || !bytes.Equal(got2, p) || &got2[0] != &got[0] {
		t.Fatalf("second frame: %d bytes, %v, buffer reused %v", len(got2), err, err == nil && &got2[0] == &got[0])
	}
	if a := after.TotalAlloc - before.TotalAlloc; a > allocSlack {
		t.Errorf("reading into a buffer large enough allocated %d bytes", a)
	}
	if _, _, err := ReadFrame(br, nil); err != io.EOF {
		t.Errorf("at the end: %v, want io.EOF", err)
	}
}

// TestReadFrameTooLarge: a header over the limit is refused before anything is read or allocated.
func TestReadFrameTooLarge(t *testing.T) {
	_, _, err := ReadFrame(bufio.NewReader(bytes.NewReader(frame(Data, MaxFrame+1, nil))), nil)
	if err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("%v", err)
	}
}

// FuzzParseData: a DATA payload that parses names a segment file (no path) and encodes back to itself.
func FuzzParseData(f *testing.F) {
	f.Add(AppendData(nil, 1, "seg-00000000000000000001-20240101T000000Z.aseg", 0, []byte("x")))
	f.Add(AppendData(nil, 2, "../../store.key", 0, []byte("x")))
	f.Add(AppendData(nil, 3, "seg-00000000000000000001-20240101T000000Z.aseg", -1, nil))
	f.Fuzz(func(t *testing.T, p []byte) {
		seq, name, off, data, err := ParseData(p)
		if err != nil {
			return
		}
		if !isSegmentName(name) || strings.ContainsAny(name, "/\\") || off < 0 || len(data) > MaxData {
			t.Fatalf("accepted name %q offset %d, %d bytes", name, off, len(data))
		}
		if !bytes.Equal(AppendData(nil, seq, name, off, data), p) {
			t.Fatalf("does not encode back")
		}
	})
}

// TestErrorCodes: the codes are distinct, and docs/format.md lists each in the ERROR frame's row.
func TestErrorCodes(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "format.md"))
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "  | 5 ERROR |") {
			row = line
		}
	}
	if row == "" {
		t.Fatal("docs/format.md has no ERROR row in its frame table")
	}
	seen := map[string]bool{}
	for _, c := range []string{CodeProtocol, CodeUnknownHost, CodeReplay, CodeFork, CodeTampered, CodeGap, CodeStorage, CodeQuota} {
		if seen[c] || c == "" {
			t.Errorf("code %q twice or empty", c)
		}
		seen[c] = true
		if !strings.Contains(row, "`"+c+"`") {
			t.Errorf("docs/format.md's ERROR row does not list %q: %s", c, row)
		}
	}
}
