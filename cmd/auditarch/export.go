package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/forward"
	"github.com/auditarch/auditarch/forward/ecs"
	"github.com/auditarch/auditarch/search"
)

const exportUsage = `Usage:
    auditarch export [--format ecs|rfc5424] [--original] [--host NAME] DIR [search options]

Write the events archived in DIR that the search options select (as auditarch search takes them), one
per line, rendered as the SIEM sinks send them (docs/forward.md): an ECS JSON document with
Auditbeat's field names (--format ecs, the default), or an RFC 5424 syslog message whose MSG is that
document (--format rfc5424). Each carries auditarch.origin and auditarch.leaf, the id a receiver
deduplicates with, so a backfill may overlap what a sink already sent.

Options:
    --format F     ecs or rfc5424.
    --original     Put the raw kernel records in event.original.
    --host NAME    host.name (default this machine's name).

Examples:
    auditarch export /var/lib/auditarch --since 2026-11-22 --until 2026-11-23 > day.ndjson
    auditarch export --format rfc5424 /var/lib/auditarch --since 2h --syscall execve`

// exportCmd writes the selected events of an archive in a sink format (exportUsage).
func exportCmd(args []string, stdout io.Writer) error {
	fs := newFlags("export")
	format := fs.String("format", forward.FormatECS, "")
	original := fs.Bool("original", false, "")
	hostName := fs.String("host", "", "")
	for _, name := range search.OptionNames() {
		fs.String(name, "", "")
	}
	pos, err := parseFlags(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, exportUsage)
		return nil
	}
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: export needs exactly one archive directory", errUsage)
	}
	set := map[string]string{}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "format", "original", "host":
		default:
			set[f.Name] = f.Value.String()
		}
	})
	q, err := search.Parse(set, time.Now())
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *hostName == "" {
		*hostName, _ = os.Hostname()
	}
	dir := pos[0]
	origin, err := archiveOrigin(dir)
	if err != nil {
		return err
	}
	rd, err := forward.NewRender(*format, 0, ecs.Options{Origin: origin, Host: ecs.Host{Name: *hostName}, Original: *original})
	if err != nil {
		return fmt.Errorf("%w: --format: %v", errUsage, err)
	}
	// search selects the events (and their leaf indexes); a second reader in step gives their leaves.
	leaves, err := archive.Open(dir)
	if err != nil {
		return err
	}
	out := bufio.NewWriterSize(stdout, 256<<10)
	defer out.Flush()
	var line []byte
	err = search.Run(context.Background(), dir, q, func(ev *audit.Event) error {
		for {
			l, i, err := leaves.NextLeaf()
			if archive.IsCorrupt(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("leaf %d: %w", ev.Index, err)
			}
			if i < ev.Index {
				continue
			}
			if i > ev.Index {
				return fmt.Errorf("leaf %d not found", ev.Index)
			}
			if line, err = rd.Append(line[:0], l, i); err != nil {
				return nil // a kind no sink exports
			}
			out.Write(append(line, '\n'))
			return nil
		}
	})
	if archive.IsCorrupt(err) {
		out.Flush()
		return &exitError{code: 1, err: &hinted{err, "events before each damaged block were exported"}}
	}
	return err
}

// archiveOrigin reads the origin from the archive's first segment header.
func archiveOrigin(dir string) (string, error) {
	files, err := archive.ListSegments(dir)
	if err != nil {
		return "", err
	}
	if len(files) == 0 {
		return "", fmt.Errorf("%s holds no segments", dir)
	}
	s, err := archive.OpenSegment(files[0])
	if err != nil {
		return "", err
	}
	defer s.Close()
	h, err := s.ReadHeader()
	if err != nil {
		return "", err
	}
	return h.Origin, nil
}
