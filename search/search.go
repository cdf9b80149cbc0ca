// Package search selects the events of an archive (package archive) that match a query: a time window
// on the kernel's timestamps and filters on decoded fields (syscall, pid, auid, uid, exe, path, socket
// address, rule key), every one of which must hold.
//
// Its contract: Run emits exactly the events that the query selects from their decoded form
// (audit.Decode), in the archive's leaf order, whatever shortcuts it takes. Segments whose events all lie
// outside the time window are not read (archive.Reader.SkipOutside), and cheap checks on the raw record
// text reject most other events before they are decoded, which is the expensive part; those checks never
// reject an event that the decoded fields match (TestPrefilterWorkload, FuzzPrefilter). A LOST event
// carries no fields: the time window alone selects it, and only in a query without field filters.
//
// The query language is `auditarch search`'s (its usage text shows it to users); Parse documents it.
package search

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/elastic/go-libaudit/v2/auparse"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit"
)

// options are the names of a query's options, in the order Parse checks them. Each takes a value.
var options = []string{"since", "until", "syscall", "pid", "auid", "uid", "exe", "path", "addr", "key"}

// OptionNames returns the names (without dashes) of the options Parse reads, in the order it checks
// them: since, until, syscall, pid, auid, uid, exe, path, addr, key. Each takes a value.
func OptionNames() []string { return slices.Clone(options) }

// Query selects events. The zero Query selects every event; Parse builds others.
//
// Checks run in three steps, cheapest first: inWindow on the raw timestamp, mayMatch on the raw record
// texts, then match on the decoded event. mayMatch never rejects an event that match accepts; it only
// spares decoding most of the others.
type Query struct {
	since, until time.Time // since ≤ t < until; a zero time leaves that side open
	fields       bool      // a filter other than the time window is given

	sysName string   // --syscall by name, or ""
	sysNr   *int     // --syscall by number, or nil
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

// Parse returns the query for the options in opts: option name (one of OptionNames) → value, for the
// options given; an option that is absent does not filter. The values:
//
//	since, until  the window since ≤ t < until on the kernel's timestamp: an RFC 3339 time, a date
//	              (midnight UTC), or a duration back from now (30m, 2h, 7d; d is 24h)
//	syscall       a name (execve, on any architecture) or a number (59)
//	pid, uid      a decimal id; auid too, with -1 for 4294967295 (no login uid)
//	exe           the executable's path; without '/', its file name or comm
//	path          a substring of a PATH record's name or of the cwd
//	addr          the socket address: IP, IP:PORT or [IPv6]:PORT, compared by value (IPv4-mapped
//	              addresses as IPv4; without a zone, any zone)
//	key           the audit rule key, or one of a rule's keys
//
// Every error is about the options: an unknown name, an empty value, a value Parse cannot read (named as
// on the command line: --since "yesterday": …), or an until that is not after since. Options are
// checked in the order of OptionNames and the first error is returned.
func Parse(opts map[string]string, now time.Time) (Query, error) {
	var unknown []string
	for name := range opts {
		if !slices.Contains(options, name) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return Query{}, fmt.Errorf("unknown option %q", unknown[0])
	}
	var q Query
	for _, name := range options {
		v, ok := opts[name]
		if !ok {
			continue
		}
		if v == "" {
			return Query{}, fmt.Errorf("--%s needs a value", name)
		}
		var err error
		switch name {
		case "since":
			q.since, err = parseWhen(v, now)
		case "until":
			q.until, err = parseWhen(v, now)
		case "syscall":
			err = q.setSyscall(v)
		case "pid":
			q.pid, err = parseID(v, false)
		case "auid":
			q.auid, err = parseID(v, true)
		case "uid":
			q.uid, err = parseID(v, false)
		case "exe":
			q.exe, q.exeBase = v, !strings.Contains(v, "/")
			q.rawExe = []byte(v)
		case "path":
			q.path, q.rawPath = v, []byte(v)
		case "addr":
			q.addr, q.port, err = parseAddr(v)
			q.hasAddr = true
		case "key":
			q.key, q.rawKey = v, []byte(v)
		}
		if err != nil {
			return Query{}, fmt.Errorf("--%s %q: %v", name, v, err)
		}
		if name != "since" && name != "until" {
			q.fields = true
		}
	}
	if !q.since.IsZero() && !q.until.IsZero() && !q.until.After(q.since) {
		return Query{}, fmt.Errorf("--until %s is not after --since %s",
			q.until.UTC().Format(time.RFC3339Nano), q.since.UTC().Format(time.RFC3339Nano))
	}
	return q, nil
}

// Run reads the archive in dir in leaf order and calls emit with every event q selects, decoded, with
// its Index set to its leaf index. An error from emit stops Run and is returned.
//
// A damaged block (a torn tail after a crash, or damage) is skipped: Run reads on, and after the last
// readable event returns errors.Join of every such block's *archive.CorruptError (archive.IsCorrupt
// reports it), so that the events before and after it are still emitted. Any other error — the archive
// cannot be opened or read, ctx is done — stops Run at once.
func Run(ctx context.Context, dir string, q Query, emit func(*audit.Event) error) error {
	_, err := RunCounted(ctx, dir, q, emit)
	return err
}

// RunCounted is Run, and also returns how many event, LOST and POLICY leaves it read (whether q selected
// them or not).
func RunCounted(ctx context.Context, dir string, q Query, emit func(*audit.Event) error) (scanned int, err error) {
	r, err := archive.Open(dir)
	if err != nil {
		return 0, err
	}
	if !q.since.IsZero() || !q.until.IsZero() {
		r.SkipOutside(q.since, q.until)
	}
	done := ctx.Done()
	var corrupt []error
	for {
		select {
		case <-done:
			return scanned, ctx.Err()
		default:
		}
		l, idx, err := r.NextLeaf()
		if errors.Is(err, io.EOF) {
			break
		}
		if archive.IsCorrupt(err) {
			corrupt = append(corrupt, err)
			continue
		}
		if err != nil {
			return scanned, err
		}
		var ev *audit.Event
		switch l.Kind {
		case archive.LeafEvent, archive.LeafLost:
			scanned++
			ev = q.selects(&l.Event)
		case archive.LeafPolicy:
			scanned++
			ev = q.selectsPolicy(l)
		}
		if ev == nil {
			continue
		}
		ev.Index = idx
		if err := emit(ev); err != nil {
			return scanned, err
		}
	}
	return scanned, errors.Join(corrupt...)
}

// selectsPolicy returns the decoded POLICY leaf when q selects it: inside the time window and with no
// field filter (like LOST events: they say what happened to the evidence, not what the host did).
func (q *Query) selectsPolicy(l *archive.Leaf) *audit.Event {
	if q.fields || (!q.since.IsZero() && l.Time < q.since.UnixNano()) || (!q.until.IsZero() && l.Time >= q.until.UnixNano()) {
		return nil
	}
	var p archive.Policy
	if json.Unmarshal(l.Body, &p) != nil {
		return nil
	}
	return audit.DecodePolicy(&p, l.Time)
}

// selects returns the decoded event when q selects raw, or nil. The time window and the raw-record
// pre-checks run before decoding, which is the expensive part.
func (q *Query) selects(raw *audit.RawEvent) *audit.Event {
	if !q.inWindow(raw) {
		return nil
	}
	if raw.Kind == audit.KindLost {
		if q.fields {
			return nil
		}
		return audit.Decode(raw)
	}
	if !q.mayMatch(raw) {
		return nil
	}
	if ev := audit.Decode(raw); q.match(ev) {
		return ev
	}
	return nil
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

func (q *Query) setSyscall(s string) error {
	if n, err := strconv.ParseUint(s, 10, 31); err == nil {
		nr := int(n)
		q.sysNr = &nr
		q.sysNrs = []uint64{n}
		return nil
	}
	for _, table := range auparse.AuditSyscalls {
		for nr, name := range table {
			if name == s && nr >= 0 {
				q.sysNrs = append(q.sysNrs, uint64(nr))
			}
		}
	}
	if len(q.sysNrs) == 0 {
		return errors.New("unknown syscall: want a name (execve) or a number (59)")
	}
	q.sysName = s
	return nil
}

func (q *Query) inWindow(ev *audit.RawEvent) bool {
	if q.since.IsZero() && q.until.IsZero() {
		return true
	}
	t := ev.Time()
	return (q.since.IsZero() || !t.Before(q.since)) && (q.until.IsZero() || t.Before(q.until))
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
func (q *Query) mayMatch(ev *audit.RawEvent) bool {
	if q.sysNrs != nil && !anyRecord(ev, func(t []byte) bool {
		for _, n := range q.sysNrs {
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
	}{{q.pid, fieldPID}, {q.auid, fieldAUID}, {q.uid, fieldUID}} {
		if c.id != nil && !anyRecord(ev, func(t []byte) bool { return hasNum(t, c.key, uint64(*c.id)) }) {
			return false
		}
	}
	if q.rawExe != nil && !anyRecord(ev, func(t []byte) bool { return mayHold(t, q.rawExe, fieldExe, fieldComm) }) {
		return false
	}
	if q.rawPath != nil && !anyRecord(ev, func(t []byte) bool { return mayHold(t, q.rawPath, fieldName, fieldCwd) }) {
		return false
	}
	if q.rawKey != nil && !anyRecord(ev, func(t []byte) bool { return mayHold(t, q.rawKey, fieldKey) }) {
		return false
	}
	if q.hasAddr {
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
func (q *Query) match(ev *audit.Event) bool {
	switch {
	case q.sysNr != nil && (ev.SysNr == nil || *ev.SysNr != *q.sysNr),
		q.sysName != "" && ev.Sys != q.sysName,
		!sameID(q.pid, ev.PID), !sameID(q.auid, ev.AUID), !sameID(q.uid, ev.UID),
		q.exe != "" && !q.matchExe(ev),
		q.path != "" && !q.matchPath(ev),
		q.hasAddr && !q.matchAddr(ev.Sockaddr),
		q.key != "" && !q.matchKey(ev):
		return false
	}
	return true
}

// sameID reports whether the event's id matches the wanted one; no filter (nil want) matches anything.
func sameID(want, got *uint32) bool { return want == nil || got != nil && *got == *want }

func (q *Query) matchExe(ev *audit.Event) bool {
	if !q.exeBase {
		return ev.Exe == q.exe
	}
	base := ev.Exe[strings.LastIndexByte(ev.Exe, '/')+1:]
	return base == q.exe || ev.Comm == q.exe
}

func (q *Query) matchPath(ev *audit.Event) bool {
	if strings.Contains(ev.Cwd, q.path) {
		return true
	}
	for _, p := range ev.Paths {
		if strings.Contains(p.Name, q.path) {
			return true
		}
	}
	return false
}

func (q *Query) matchAddr(sa *audit.Sockaddr) bool {
	if sa == nil || sa.Addr == "" {
		return false
	}
	a, err := netip.ParseAddr(sa.Addr)
	if err != nil {
		return false
	}
	a = a.Unmap()
	if q.addr.Zone() == "" {
		a = a.WithZone("")
	}
	return a == q.addr && (q.port == nil || sa.Port != nil && *sa.Port == *q.port)
}

func (q *Query) matchKey(ev *audit.Event) bool {
	if ev.Key == q.key {
		return true
	}
	for _, k := range ev.Keys {
		if k == q.key {
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
