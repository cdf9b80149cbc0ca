package archive_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit"
)

// seedFrames adds real frames to the corpus: each test event alone, and the first few together.
func seedFrames(f *testing.F, whole bool) {
	evs := testEvents(f)
	var all []byte
	for i, ev := range evs {
		frame := archive.AppendFrame(nil, ev)
		if len(frame) > 4096 {
			continue
		}
		if whole {
			if i < 8 {
				all = append(all, frame...)
			}
			f.Add(frame)
		} else {
			f.Add(frame[8:])
		}
	}
	if whole {
		f.Add(all)
		f.Add(all[:len(all)-3])
	}
}

// Whatever follows the magic in a capture file, Next returns events, *CorruptError or io.EOF, and never
// panics or loops.
func FuzzReader(f *testing.F) {
	seedFrames(f, true)
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	// One file, rewritten for each input (inputs run one at a time in a process): fewer syscalls per run.
	dir := f.TempDir()
	path := filepath.Join(dir, "capture-20240101T000000.000000000Z-1.log")
	f.Fuzz(func(t *testing.T, body []byte) {
		if err := os.WriteFile(path, append([]byte(fileMagic), body...), 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := archive.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		var next uint64
		for calls := 0; ; calls++ {
			if calls > len(body)/8+2 { // every frame takes at least its 8-byte header
				t.Fatalf("no io.EOF after %d calls", calls)
			}
			ev, idx, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				var ce *archive.CorruptError
				if !errors.As(err, &ce) || !errors.Is(err, archive.ErrCorrupt) {
					t.Fatalf("Next: %v (%T), want a *CorruptError or io.EOF", err, err)
				}
				if ce.Path != path || ce.Offset < int64(len(fileMagic)) || ce.Offset > int64(len(fileMagic)+len(body)) {
					t.Fatalf("CorruptError %+v outside the file", ce)
				}
				continue
			}
			if ev.Kind != audit.KindEvent && ev.Kind != audit.KindLost {
				t.Fatalf("event of kind %d", ev.Kind)
			}
			if idx != next {
				t.Fatalf("index %d, want %d", idx, next)
			}
			next++
			audit.Decode(ev) // never fails either
		}
		if _, _, err := r.Next(); err != io.EOF {
			t.Fatalf("Next after io.EOF: %v", err)
		}
	})
}

// DecodeFrame never panics, and what it accepts survives a round trip through AppendFrame.
func FuzzDecodeFrame(f *testing.F) {
	seedFrames(f, false)
	f.Add([]byte{})
	f.Add(make([]byte, 26))
	f.Fuzz(func(t *testing.T, payload []byte) {
		var ev audit.RawEvent
		if err := archive.DecodeFrame(payload, &ev); err != nil {
			return
		}
		frame := archive.AppendFrame(nil, &ev)
		var back audit.RawEvent
		if err := archive.DecodeFrame(frame[8:], &back); err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
		if err := sameEvent(&back, &ev); err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if ev.Kind != audit.KindLost && ev.Lost != (audit.Lost{}) {
			t.Fatalf("event of kind %d has Lost %+v", ev.Kind, ev.Lost)
		}
	})
}
