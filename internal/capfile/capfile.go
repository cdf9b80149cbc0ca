// Package capfile reads and writes recorded kernel audit streams for replay tests (testdata/*.cap).
//
// Format: lines starting with '#' are comments; the first, "# uname: ...", names the kernel the stream
// came from. Every other line is one record as received from netlink: its decimal type, a space, and
// its text as a Go-quoted string, so that any byte survives and diffs stay readable.
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
	Records []audit.Record
}

// Write writes c in the capfile format.
func Write(w io.Writer, c *Capture) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "# uname: %s\n", c.Uname)
	for _, l := range c.Comment {
		fmt.Fprintf(bw, "# %s\n", l)
	}
	for _, r := range c.Records {
		fmt.Fprintf(bw, "%d %s\n", r.Type, strconv.Quote(string(r.Text)))
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
			return nil, fmt.Errorf("line %d: want TYPE \"TEXT\"", n)
		}
		t, err := strconv.ParseUint(typ, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("line %d: record type: %w", n, err)
		}
		text, err := strconv.Unquote(quoted)
		if err != nil {
			return nil, fmt.Errorf("line %d: record text: %w", n, err)
		}
		c.Records = append(c.Records, audit.Record{Type: uint16(t), Text: []byte(text)})
	}
	return c, sc.Err()
}

// Replay pushes every record through a reassembler as if received 1 ms apart from t0 (unix ns), then
// flushes it, and returns copies of the emitted events.
func Replay(c *Capture, t0 int64) []*audit.RawEvent {
	var out []*audit.RawEvent
	re := audit.NewReassembler(func(ev *audit.RawEvent) { out = append(out, ev.Clone()) })
	now := t0
	for _, r := range c.Records {
		re.Push(r.Type, r.Text, now)
		now += int64(1e6)
		re.Tick(now)
	}
	re.Flush(now)
	return out
}
