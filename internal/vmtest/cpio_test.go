package vmtest

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// cpioEntry is one parsed newc entry.
type cpioEntry struct {
	name             string
	mode, nlink      uint32
	rdevMaj, rdevMin uint32
	data             string
}

// readNewc parses a newc archive strictly (magic, zero check field, 4-byte alignment, trailer last).
func readNewc(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("offset %d field %d: %v", off, i, err)
		}
		return uint32(v)
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off%4 != 0 || off+newcHdrLen > len(b) || string(b[off:off+6]) != newcMagic {
			t.Fatalf("bad header at offset %d", off)
		}
		size, namesize := int(field(6)), int(field(11))
		if field(12) != 0 {
			t.Fatalf("offset %d: check field %d, want 0", off, field(12))
		}
		name := string(b[off+newcHdrLen : off+newcHdrLen+namesize-1])
		if b[off+newcHdrLen+namesize-1] != 0 {
			t.Fatalf("offset %d: name not NUL-terminated", off)
		}
		dataOff := align(off + newcHdrLen + namesize)
		e := cpioEntry{name: name, mode: field(1), nlink: field(4), rdevMaj: field(9), rdevMin: field(10),
			data: string(b[dataOff : dataOff+size])}
		off = align(dataOff + size)
		if name == newcTrailer {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, e)
	}
}

func TestCPIOWriter(t *testing.T) {
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "tree", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, perm := range map[string]os.FileMode{"tree/a": 0o600, "tree/sub/b": 0o755} {
		if err := os.WriteFile(filepath.Join(src, name), []byte("content of "+name), perm); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	w.charDev("/dev/console", 0o600, 5, 1)
	w.file("/etc/x/../odd", 0o644, 5, strings.NewReader("12345"))
	w.hostFile("/data", filepath.Join(src, "tree"))
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	got := map[string]cpioEntry{}
	var order []string
	for _, e := range readNewc(t, buf.Bytes()) {
		got[e.name] = e
		order = append(order, e.name)
	}
	want := []string{"dev", "dev/console", "etc", "etc/odd", "data", "data/a", "data/sub", "data/sub/b"}
	if strings.Join(order, " ") != strings.Join(want, " ") {
		t.Fatalf("entries %q, want %q (parents first)", order, want)
	}
	checks := []struct {
		name  string
		mode  uint32
		data  string
		major uint32
		minor uint32
	}{
		{"dev", modeDir | 0o755, "", 0, 0},
		{"dev/console", modeChar | 0o600, "", 5, 1},
		{"etc/odd", modeReg | 0o644, "12345", 0, 0},
		{"data/a", modeReg | 0o600, "content of tree/a", 0, 0},
		{"data/sub/b", modeReg | 0o755, "content of tree/sub/b", 0, 0},
	}
	for _, c := range checks {
		e := got[c.name]
		if e.mode != c.mode || e.data != c.data || e.rdevMaj != c.major || e.rdevMin != c.minor {
			t.Errorf("%s: mode %o data %q rdev %d:%d, want %o %q %d:%d",
				c.name, e.mode, e.data, e.rdevMaj, e.rdevMin, c.mode, c.data, c.major, c.minor)
		}
	}
}

// TestCPIOHeaderBytes pins the exact bytes of one entry against the format description.
func TestCPIOHeaderBytes(t *testing.T) {
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	w.file("x", 0o644, 3, strings.NewReader("abc"))
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	want := "070701" + "00000001" + "000081a4" + "00000000" + "00000000" + "00000001" + "00000000" +
		"00000003" + "00000000" + "00000000" + "00000000" + "00000000" + "00000002" + "00000000" +
		"x\x00" + "abc\x00"
	if got := buf.String(); !strings.HasPrefix(got, want) {
		t.Errorf("entry bytes\n%q\nwant\n%q", got[:min(len(got), len(want))], want)
	}
}

func TestCPIOSizeMismatch(t *testing.T) {
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	w.file("short", 0o644, 10, strings.NewReader("abc"))
	if err := w.close(); err == nil {
		t.Fatal("a file shorter than its declared size was accepted")
	}
}
