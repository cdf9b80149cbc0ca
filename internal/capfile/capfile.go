// Package capfile reads and writes recorded kernel audit streams for replay tests (testdata/*.cap).
//
// Format: lines starting with '#' are comments; the first, "# uname: ...", names the kernel the stream
// came from. Every other line is one record as received from netlink: its decimal type, a space, and
// its text as a Go-quoted string, so that any byte survives and diffs stay readable; or "lost N": the
// kernel's lost counter rose by N at that point of the stream.
package capfile

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/auditarch/auditarch/audit"
)

// Capture is a recorded stream.
type Capture struct {
	Uname   string
	Comment []string
	Items   []Item
}

// Item is a record, or (Lost > 0) an increase of the kernel's lost counter.
type Item struct {
	audit.Record
	Lost uint64
}

// Write writes c in the capfile format.
func Write(w io.Writer, c *Capture) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "# uname: %s\n", c.Uname)
	for _, l := range c.Comment {
		fmt.Fprintf(bw, "# %s\n", l)
	}
	for _, it := range c.Items {
		if it.Lost > 0 {
			fmt.Fprintf(bw, "lost %d\n", it.Lost)
			continue
		}
		fmt.Fprintf(bw, "%d %s\n", it.Type, strconv.Quote(string(it.Text)))
	}
	return bw.Flush()
}

// Read parses a capfile stream.
func Read(r io.Reader) (*Capture, error) {
	c := &Capture{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			text := strings.TrimSpace(line[1:])
			if u, ok := strings.CutPrefix(text, "uname: "); ok && c.Uname == "" {
				c.Uname = u
			} else {
				c.Comment = append(c.Comment, text)
			}
			continue
		}
		typ, quoted, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("line %d: want TYPE \"TEXT\" or lost N", n)
		}
		if typ == "lost" {
			l, err := strconv.ParseUint(quoted, 10, 64)
			if err != nil || l == 0 {
				return nil, fmt.Errorf("line %d: lost count: %q", n, quoted)
			}
			c.Items = append(c.Items, Item{Lost: l})
			continue
		}
		t, err := strconv.ParseUint(typ, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("line %d: record type: %w", n, err)
		}
		text, err := strconv.Unquote(quoted)
		if err != nil {
			return nil, fmt.Errorf("line %d: record text: %w", n, err)
		}
		c.Items = append(c.Items, Item{Record: audit.Record{Type: uint16(t), Text: []byte(text)}})
	}
	return c, sc.Err()
}

// Replay pushes every item through a reassembler as if received 1 ms apart from t0 (unix ns), then
// flushes it, and returns copies of the emitted events. Malformed records are kept as their own events.
func Replay(c *Capture, t0 int64) []*audit.RawEvent {
	var out []*audit.RawEvent
	re := audit.NewReassembler(func(ev *audit.RawEvent) { out = append(out, ev.Clone()) })
	now := t0
	for _, it := range c.Items {
		if it.Lost > 0 {
			re.Lost(audit.Lost{Reason: audit.LostKernel, Count: it.Lost}, now)
			continue
		}
		re.Push(it.Type, it.Text, now)
		now += int64(1e6)
		re.Tick(now)
	}
	re.Flush(now)
	return out
}

// Recorder records a live capture: set Capture.Tap to Tap and wrap the sink with Sink, so that records
// (as received) and kernel lost-counter increases land in Items in the order the reader saw them.
type Recorder struct {
	Items []Item
}

// Tap copies a received record.
func (r *Recorder) Tap(typ uint16, text []byte) {
	r.Items = append(r.Items, Item{Record: audit.Record{Type: typ, Text: append([]byte(nil), text...)}})
}

// Sink returns a sink that notes LostKernel events and passes every event on to next.
func (r *Recorder) Sink(next func(*audit.RawEvent)) func(*audit.RawEvent) {
	return func(ev *audit.RawEvent) {
		if ev.Kind == audit.KindLost && ev.Lost.Reason == audit.LostKernel {
			r.Items = append(r.Items, Item{Lost: ev.Lost.Count})
		}
		next(ev)
	}
}

// SinkFunc adapts a function to audit.Sink.
type SinkFunc func(*audit.RawEvent)

// Append calls f.
func (f SinkFunc) Append(ev *audit.RawEvent) { f(ev) }
