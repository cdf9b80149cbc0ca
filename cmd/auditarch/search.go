package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/elastic/go-libaudit/v2/auparse"

	"github.com/auditarch/auditarch/audit"
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

// searchCmd prints the events of an archive that match every filter given (searchUsage). Option values
// are checked before the archive is opened; cheap checks on the raw records run before decoding.
func searchCmd(args []string, stdout io.Writer) error {
	fs := newFlags("search")
	asJSON := fs.Bool("json", false, "")
	for _, name := range searchFlags {
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
	fs.Visit(func(f *flag.Flag) { set[f.Name] = f.Value.String() })
	flt, err := newSearchFilter(set, time.Now())
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}

	return printEvents(pos[0], stdout, *asJSON, flt, "searched")
}

// selects returns the decoded event when flt selects raw, or nil. The time window and the raw-record
// pre-checks run before decoding, which is the expensive part.
func (f *searchFilter) selects(raw *audit.RawEvent) *audit.Event {
	if !f.inWindow(raw) {
		return nil
	}
	if raw.Kind == audit.KindLost {
		if f.fields {
			return nil
		}
		return audit.Decode(raw)
	}
	if !f.mayMatch(raw) {
		return nil
	}
	if ev := audit.Decode(raw); f.match(ev) {
		return ev
	}
	return nil
}

// searchFlags are search's options that take a value.
var searchFlags = []string{"since", "until", "syscall", "pid", "auid", "uid", "exe", "path", "addr", "key"}

// searchFilter selects events; newSearchFilter with no options selects every one. Checks run in three
// steps, cheapest first: inWindow on the raw timestamp, mayMatch on the raw record texts, then match on
// the decoded event. mayMatch never rejects an event that match accepts; it only spares decoding most of
// the others.
type searchFilter struct {
	since, until time.Time // since ≤ t < until; a zero time leaves that side open
	fields       bool      // a filter other than the time window is given

	sysName string   // --syscall by name, or ""
	sysNr   int      // --syscall by number, or -1
	sysNrs  []uint64 // the numbers the SYSCALL record may give for --syscall, on any architecture
	pid     *uint32
	auid    *uint32
	uid     *uint32
	exe     string // an exact path, or a file name or comm when exeBase
	exeBase bool
	path    string
	hasAddr bool
	addr    netip.Addr // IPv4-mapped addresses unmapped
	port    *uint16    // nil: any port
	key     string

	// The text values as bytes, for mayMatch; nil when not given.
	rawExe, rawPath, rawKey []byte
}

// newSearchFilter builds a filter from the options given (name without dashes → value); now anchors
// relative times. Errors are about one option's value.
func newSearchFilter(set map[string]string, now time.Time) (*searchFilter, error) {
	f := &searchFilter{sysNr: -1}
	for _, name := range searchFlags {
		v, ok := set[name]
		if !ok {
			continue
		}
		if v == "" {
			return nil, fmt.Errorf("--%s needs a value", name)
		}
		var err error
		switch name {
		case "since":
			f.since, err = parseWhen(v, now)
		case "until":
			f.until, err = parseWhen(v, now)
		case "syscall":
			err = f.setSyscall(v)
		case "pid":
			f.pid, err = parseID(v, false)
		case "auid":
			f.auid, err = parseID(v, true)
		case "uid":
			f.uid, err = parseID(v, false)
		case "exe":
			f.exe, f.exeBase = v, !strings.Contains(v, "/")
			f.rawExe = []byte(v)
		case "path":
			f.path, f.rawPath = v, []byte(v)
		case "addr":
			f.addr, f.port, err = parseAddr(v)
			f.hasAddr = true
		case "key":
			f.key, f.rawKey = v, []byte(v)
		}
		if err != nil {
			return nil, fmt.Errorf("--%s %q: %v", name, v, err)
		}
		if name != "since" && name != "until" {
			f.fields = true
		}
	}
	if !f.since.IsZero() && !f.until.IsZero() && !f.until.After(f.since) {
		return nil, fmt.Errorf("--until %s is not after --since %s",
			f.until.UTC().Format(time.RFC3339Nano), f.since.UTC().Format(time.RFC3339Nano))
	}
	return f, nil
}

// parseWhen reads an RFC 3339 time, a date (midnight UTC), or a duration back from now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return time.Time{}, errors.New("want an RFC 3339 time, a date (2006-01-02) or a duration (30m, 2h, 7d)")
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return time.Time{}, errors.New("want an RFC 3339 time, a date (2006-01-02) or a duration (30m, 2h, 7d)")
		}
		if d < 0 {
			return time.Time{}, errors.New("a duration counts back from now and cannot be negative")
		}
	}
	return now.Add(-d), nil
}

// parseID reads a decimal uid or pid. With unset, -1 stands for 4294967295, the kernel's "no login uid".
func parseID(s string, unset bool) (*uint32, error) {
	if unset && s == "-1" {
		s = "4294967295"
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return nil, errors.New("want a decimal number from 0 to 4294967295")
	}
	id := uint32(n)
	return &id, nil
}

// parseAddr reads IP, [IP], IP:PORT or [IP]:PORT. An IPv4-mapped IPv6 address is returned as IPv4.
func parseAddr(s string) (netip.Addr, *uint16, error) {
	bad := errors.New("want IP, IP:PORT or [IPv6]:PORT")
	var a netip.Addr
	var port *uint16
	if inner, ok := strings.CutPrefix(s, "["); ok && strings.HasSuffix(inner, "]") {
		s = strings.TrimSuffix(inner, "]")
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		a = ip
	} else if ap, err := netip.ParseAddrPort(s); err == nil {
		a = ap.Addr()
		p := ap.Port()
		port = &p
	} else {
		return netip.Addr{}, nil, bad
	}
	if strings.ContainsAny(a.Zone(), ":[]") { // fe80::1%eth0:22 parses with the zone "eth0:22"
		return netip.Addr{}, nil, bad
	}
	return a.Unmap(), port, nil
}

func (f *searchFilter) setSyscall(s string) error {
	if n, err := strconv.ParseUint(s, 10, 31); err == nil {
		f.sysNr = int(n)
		f.sysNrs = []uint64{n}
		return nil
	}
	for _, table := range auparse.AuditSyscalls {
		for nr, name := range table {
			if name == s && nr >= 0 {
				f.sysNrs = append(f.sysNrs, uint64(nr))
			}
		}
	}
	if len(f.sysNrs) == 0 {
		return errors.New("unknown syscall: want a name (execve) or a number (59)")
	}
	f.sysName = s
	return nil
}

func (f *searchFilter) inWindow(ev *audit.RawEvent) bool {
	if f.since.IsZero() && f.until.IsZero() {
		return true
	}
	t := ev.Time()
	return (f.since.IsZero() || !t.Before(f.since)) && (f.until.IsZero() || t.Before(f.until))
}

// Field names mayMatch looks for, with their '='.
var (
	fieldSyscall = []byte("syscall=")
	fieldPID     = []byte("pid=")
	fieldAUID    = []byte("auid=")
	fieldUID     = []byte("uid=")
	fieldExe     = []byte("exe=")
	fieldComm    = []byte("comm=")
	fieldName    = []byte("name=")
	fieldCwd     = []byte("cwd=")
	fieldKey     = []byte("key=")
)

// mayMatch reports whether the raw records of ev could match: each field filter finds its value in some
// record's text. It errs only towards true, so events it rejects need not be decoded.
func (f *searchFilter) mayMatch(ev *audit.RawEvent) bool {
	if f.sysNrs != nil && !anyRecord(ev, func(t []byte) bool {
		for _, n := range f.sysNrs {
			if hasNum(t, fieldSyscall, n) {
				return true
			}
		}
		return false
	}) {
		return false
	}
	for _, c := range [...]struct {
		id  *uint32
		key []byte
	}{{f.pid, fieldPID}, {f.auid, fieldAUID}, {f.uid, fieldUID}} {
		if c.id != nil && !anyRecord(ev, func(t []byte) bool { return hasNum(t, c.key, uint64(*c.id)) }) {
			return false
		}
	}
	if f.rawExe != nil && !anyRecord(ev, func(t []byte) bool { return mayHold(t, f.rawExe, fieldExe, fieldComm) }) {
		return false
	}
	if f.rawPath != nil && !anyRecord(ev, func(t []byte) bool { return mayHold(t, f.rawPath, fieldName, fieldCwd) }) {
		return false
	}
	if f.rawKey != nil && !anyRecord(ev, func(t []byte) bool { return mayHold(t, f.rawKey, fieldKey) }) {
		return false
	}
	if f.hasAddr {
		for _, r := range ev.Records {
			if r.Type == audit.TypeSockaddr {
				return true
			}
		}
		return false
	}
	return true
}

// match reports whether the decoded event matches every field filter.
func (f *searchFilter) match(ev *audit.Event) bool {
	switch {
	case f.sysNr >= 0 && (ev.SysNr == nil || *ev.SysNr != f.sysNr),
		f.sysName != "" && ev.Sys != f.sysName,
		!sameID(f.pid, ev.PID), !sameID(f.auid, ev.AUID), !sameID(f.uid, ev.UID),
		f.exe != "" && !f.matchExe(ev),
		f.path != "" && !f.matchPath(ev),
		f.hasAddr && !f.matchAddr(ev.Sockaddr),
		f.key != "" && !f.matchKey(ev):
		return false
	}
	return true
}

// sameID reports whether the event's id matches the wanted one; no filter (nil want) matches anything.
func sameID(want, got *uint32) bool { return want == nil || got != nil && *got == *want }

func (f *searchFilter) matchExe(ev *audit.Event) bool {
	if !f.exeBase {
		return ev.Exe == f.exe
	}
	base := ev.Exe[strings.LastIndexByte(ev.Exe, '/')+1:]
	return base == f.exe || ev.Comm == f.exe
}

func (f *searchFilter) matchPath(ev *audit.Event) bool {
	if strings.Contains(ev.Cwd, f.path) {
		return true
	}
	for _, p := range ev.Paths {
		if strings.Contains(p.Name, f.path) {
			return true
		}
	}
	return false
}

func (f *searchFilter) matchAddr(sa *audit.Sockaddr) bool {
	if sa == nil || sa.Addr == "" {
		return false
	}
	a, err := netip.ParseAddr(sa.Addr)
	if err != nil {
		return false
	}
	a = a.Unmap()
	if f.addr.Zone() == "" {
		a = a.WithZone("")
	}
	return a == f.addr && (f.port == nil || sa.Port != nil && *sa.Port == *f.port)
}

func (f *searchFilter) matchKey(ev *audit.Event) bool {
	if ev.Key == f.key {
		return true
	}
	for _, k := range ev.Keys {
		if k == f.key {
			return true
		}
	}
	return false
}

func anyRecord(ev *audit.RawEvent, pred func(text []byte) bool) bool {
	for _, r := range ev.Records {
		if pred(r.Text) {
			return true
		}
	}
	return false
}

// hasNum reports whether text may hold the pair key=n (key ends in '='): key not preceded by a byte that
// could end a longer key (so pid= is not found in ppid=), then the decimal digits of n, leading zeros
// allowed, up to a field separator or the end. It finds every pair audit.Fields and strconv.ParseUint
// would read as key=n, and perhaps a few more.
func hasNum(text, key []byte, n uint64) bool {
	for {
		i := bytes.Index(text, key)
		if i < 0 {
			return false
		}
		atKey := i == 0 || !isKeyByte(text[i-1])
		text = text[i+len(key):]
		if !atKey {
			continue
		}
		k := 0
		if k < len(text) && text[k] == '+' {
			k++ // strconv.Atoi reads syscall=+59 as 59
		}
		digits := k
		var v uint64
		for k < len(text) && text[k] >= '0' && text[k] <= '9' && v <= n {
			v = v*10 + uint64(text[k]-'0')
			k++
		}
		if k > digits && v == n && (k == len(text) || isSep(text[k])) {
			return true
		}
	}
}

// mayHold reports whether text may hold one of the fields keys (each ending in '=') with a decoded value
// that contains s: s occurs verbatim (a quoted value), or such a field's value is hex (the kernel's
// encoding of a value with a space, quote, control or non-ASCII byte), which is left to the decoder.
func mayHold(text, s []byte, keys ...[]byte) bool {
	if bytes.Contains(text, s) {
		return true
	}
	for _, key := range keys {
		for t := text; ; {
			i := bytes.Index(t, key)
			if i < 0 {
				break
			}
			atKey := i == 0 || !isKeyByte(t[i-1])
			t = t[i+len(key):]
			if atKey && len(t) > 0 && isHexDigit(t[0]) {
				return true
			}
		}
	}
	return false
}

// isKeyByte reports whether c may be part of a field name. A key that audit.Fields reads starts after a
// separator, a closing quote or the record's stamp, never after such a byte.
func isKeyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_'
}

// isSep reports whether c ends an unquoted value (as in audit.Fields).
func isSep(c byte) bool { return c == ' ' || c == '\n' || c == 0 }

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
