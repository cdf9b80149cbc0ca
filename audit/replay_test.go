package audit_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/capfile"
)

const testdataDir = "../testdata"

// t0 is the replay clock's start; it does not appear in the decoded output.
const t0 = int64(1_700_000_000) * 1e9

// TestReplayGolden decodes every recorded stream in testdata and compares it with its golden file
// (NAME.golden.jsonl, one decoded event per line). -update rewrites the goldens.
func TestReplayGolden(t *testing.T) {
	caps, _ := filepath.Glob(filepath.Join(testdataDir, "*.cap"))
	if len(caps) == 0 {
		t.Fatal("no captures in testdata")
	}
	for _, path := range caps {
		name := strings.TrimSuffix(filepath.Base(path), ".cap")
		t.Run(name, func(t *testing.T) {
			c := readCap(t, path)
			if c.Uname == "" {
				t.Errorf("%s does not name the kernel it came from (# uname: ...)", path)
			}
			got := decodeAll(t, capfile.Replay(c, t0))
			golden := filepath.Join(testdataDir, name+".golden.jsonl")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
				for i := 0; i < len(gl) || i < len(wl); i++ {
					var g, w string
					if i < len(gl) {
						g = gl[i]
					}
					if i < len(wl) {
						w = wl[i]
					}
					if g != w {
						t.Fatalf("%s line %d differs:\n got %.600s\nwant %.600s", golden, i+1, g, w)
					}
				}
			}
		})
	}
}

// TestReplayReordered derives two edge cases from the real workload capture — records of consecutive
// events interleaved, and whole events delivered out of serial order — and checks both decode to exactly
// the original's events and serial gaps (the capture keeps only the workload's events, so it has gaps),
// with nothing marked late.
func TestReplayReordered(t *testing.T) {
	c := readCap(t, filepath.Join(testdataDir, "workload.cap"))
	want := bySerial(t, capfile.Replay(c, t0))
	groups := groupBySerial(c)
	if len(groups) < 4 {
		t.Fatalf("workload.cap has only %d events", len(groups))
	}

	interleaved := &capfile.Capture{Uname: c.Uname}
	for i := 0; i+1 < len(groups); i += 2 {
		a, b := groups[i], groups[i+1]
		for j := 0; j < len(a) || j < len(b); j++ {
			if j < len(a) {
				interleaved.Items = append(interleaved.Items, a[j])
			}
			if j < len(b) {
				interleaved.Items = append(interleaved.Items, b[j])
			}
		}
	}
	if len(groups)%2 == 1 {
		interleaved.Items = append(interleaved.Items, groups[len(groups)-1]...)
	}

	swapped := &capfile.Capture{Uname: c.Uname}
	for i := 0; i < len(groups); i += 2 {
		if i+1 < len(groups) {
			swapped.Items = append(swapped.Items, groups[i+1]...)
		}
		swapped.Items = append(swapped.Items, groups[i]...)
	}

	for name, derived := range map[string]*capfile.Capture{"interleaved": interleaved, "out_of_order": swapped} {
		got := bySerial(t, capfile.Replay(derived, t0))
		if len(got) != len(want) {
			t.Errorf("%s: %d events, want %d", name, len(got), len(want))
		}
		for serial, w := range want {
			g, ok := got[serial]
			if !ok {
				t.Errorf("%s: serial %d missing", name, serial)
				continue
			}
			if g != w {
				t.Errorf("%s: serial %d decodes differently:\n got %.300s\nwant %.300s", name, serial, g, w)
			}
		}
	}
}

func readCap(t *testing.T, path string) *capfile.Capture {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := capfile.Read(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

func decodeAll(t *testing.T, evs []*audit.RawEvent) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for i, raw := range evs {
		ev := audit.Decode(raw)
		ev.Index = uint64(i)
		if err := enc.Encode(ev); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// bySerial decodes events to JSON keyed by serial (serial gaps keyed by their first missing serial with
// the top bit of a uint64 set), failing on late events.
func bySerial(t *testing.T, evs []*audit.RawEvent) map[uint64]string {
	t.Helper()
	out := map[uint64]string{}
	for _, raw := range evs {
		if raw.Kind == audit.KindLost {
			out[1<<63|uint64(raw.Lost.First)] = fmt.Sprintf("%s %d..%d: %d", raw.Lost.Reason, raw.Lost.First, raw.Lost.Last, raw.Lost.Count)
			continue
		}
		if raw.Late {
			t.Errorf("unexpected late event: %+v", audit.Decode(raw))
			continue
		}
		b, err := json.Marshal(audit.Decode(raw))
		if err != nil {
			t.Fatal(err)
		}
		out[uint64(raw.Serial)] = string(b)
	}
	return out
}

// groupBySerial splits a capture's records into events, in first-seen order.
func groupBySerial(c *capfile.Capture) [][]capfile.Item {
	idx := map[uint32]int{}
	var groups [][]capfile.Item
	for _, it := range c.Items {
		h, _, err := audit.ParseHeader(it.Text)
		if it.Lost > 0 || err != nil {
			continue
		}
		i, ok := idx[h.Serial]
		if !ok {
			i = len(groups)
			idx[h.Serial] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], it)
	}
	return groups
}
