package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/auditarch/auditarch/search"
)

const searchUsage = `Usage:
    auditarch search DIR [--since T] [--until T] [--syscall S] [--pid N] [--auid N] [--uid N]
                         [--exe P] [--path SUBSTR] [--addr IP[:PORT]] [--key K] [--json]

Print the events archived in DIR that match every filter given, one per line as show prints them.
No match prints nothing and exits 0.

Options:
    --since T          At or after T: an RFC 3339 time (2026-11-22T05:09:23Z), a date (2026-11-22,
                       midnight UTC), or a duration back from now (30m, 2h, 7d; d is 24h).
    --until T          Before T, in the same forms.
    --syscall S        The syscall, by name (execve) or number (59).
    --pid N            The process id (not the parent's).
    --auid N           The login uid; -1 means unset (4294967295).
    --uid N            The real uid.
    --exe P            The executable's path; a P without '/' matches the executable's file name or comm.
    --path SUBSTR      A substring of a PATH record's name or of the cwd (case-sensitive).
    --addr A           The socket address: IP, IP:PORT or [IPv6]:PORT (::1:80 is an address, not
                       ::1 port 80). Addresses compare by value (::1 is 0:0::1), an IPv4-mapped IPv6
                       address equals its IPv4 form, and an address without a %zone matches any zone.
    --key K            The audit rule key (one of them, when a rule has several).
    --json             One JSON object per event and line, as show --json prints them.

Times are the kernel's timestamps of the events. LOST events (losses the kernel or auditarch counted)
are printed when they fall in the time window and no other option selects events: a loss cannot
match a field.

Examples:
    auditarch search /var/lib/auditarch --since 2h --syscall execve --exe curl
    auditarch search /var/lib/auditarch --since 2026-11-22 --until 2026-11-23 --addr 10.0.0.5:22 --json`

// searchCmd prints the events of an archive that match every filter given (searchUsage). The options
// are package search's query; their values are checked before the archive is opened.
func searchCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("search")
	asJSON := fs.Bool("json", false, "")
	for _, name := range search.OptionNames() {
		fs.String(name, "", "")
	}
	pos, err := parseFlags(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, searchUsage)
		return nil
	}
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: search needs exactly one archive directory", errUsage)
	}
	set := map[string]string{}
	fs.Visit(func(f *flag.Flag) {
		if f.Name != "json" {
			set[f.Name] = f.Value.String()
		}
	})
	q, err := search.Parse(set, time.Now())
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return printEvents(pos[0], stdout, stderr, *asJSON, q, "searched")
}
