package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/auditarch/auditarch/alert"
	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/search"
)

func showCmd(args []string, stdout io.Writer) error {
	fs := newFlags("show")
	asJSON := fs.Bool("json", false, "")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: show needs exactly one archive directory", errUsage)
	}
	return printEvents(pos[0], stdout, nil, *asJSON, search.Query{}, "shown") // the zero Query selects every event
}

// printEvents prints the events of the archive in dir that q selects, one line (or JSON object) each.
// Damaged blocks are skipped and reported at the end with exit status 1; verb says what happened to the
// events before them. With counts, it writes there how many events were scanned and matched (search).
func printEvents(dir string, stdout, counts io.Writer, asJSON bool, q search.Query, verb string) error {
	out := bufio.NewWriterSize(stdout, 64<<10)
	defer out.Flush()
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	matched := 0
	scanned, err := search.RunCounted(context.Background(), dir, q, func(ev *audit.Event) error {
		matched++
		if asJSON {
			return enc.Encode(ev)
		}
		fmt.Fprintln(out, summary(ev))
		return nil
	})
	if counts != nil && (err == nil || archive.IsCorrupt(err)) {
		fmt.Fprintf(counts, "%d events scanned, %d matched\n", scanned, matched)
	}
	if archive.IsCorrupt(err) {
		out.Flush()
		return &exitError{code: 1, err: &hinted{err,
			"events before each damaged block were " + verb + "; a torn last block means the writer stopped mid-write"}}
	}
	return err
}

// summary renders one event on one line: its leaf index, time and kernel serial, then the line alert
// patterns match (docs/alert.md).
func summary(ev *audit.Event) string {
	b := fmt.Appendf(nil, "#%d %s seq=%d ", ev.Index, ev.Time, ev.Seq)
	return string(alert.AppendEvent(b, ev))
}
