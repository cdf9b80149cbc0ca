package search

import (
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/capfile"
)

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time // zero: an error
	}{
		{"2026-11-22T05:09:23Z", time.Date(2026, 11, 22, 5, 9, 23, 0, time.UTC)},
		{"2026-11-22T05:09:23.209Z", time.Date(2026, 11, 22, 5, 9, 23, 209e6, time.UTC)},
		{"2026-11-22T06:09:23+01:00", time.Date(2026, 11, 22, 5, 9, 23, 0, time.UTC)},
		{"2026-11-22", time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)},
		{"30m", now.Add(-30 * time.Minute)},
		{"2h", now.Add(-2 * time.Hour)},
		{"1h30m", now.Add(-90 * time.Minute)},
		{"7d", now.Add(-7 * 24 * time.Hour)},
		{"0d", now},
		{"0", now},
		{"", time.Time{}},
		{"yesterday", time.Time{}},
		{"-2h", time.Time{}},
		{"-1d", time.Time{}},
		{"d", time.Time{}},
		{"1.5d", time.Time{}},
		{"99999d", time.Time{}},
		{"2h7d", time.Time{}},
		{"2026-11-22T05:09:23", time.Time{}}, // no zone: ambiguous
		{"2026-13-01", time.Time{}},
	} {
		got, err := parseWhen(tc.in, now)
		if tc.want.IsZero() {
			if err == nil {
				t.Errorf("parseWhen(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// TestInWindow checks the time window on the raw timestamp: since inclusive, until exclusive, to the
// millisecond.
func TestInWindow(t *testing.T) {
	ev := &audit.RawEvent{Sec: time.Date(2026, 11, 22, 5, 9, 23, 0, time.UTC).Unix(), Msec: 209}
	for _, tc := range []struct {
		since, until string
		want         bool
	}{
		{"", "", true},
		{"2026-11-22T05:09:23.209Z", "", true},
		{"2026-11-22T05:09:23.2090001Z", "", false},
		{"2026-11-22T05:09:23.208999Z", "", true},
		{"", "2026-11-22T05:09:23.209Z", false},
		{"", "2026-11-22T05:09:23.2090001Z", true},
		{"2026-11-22T05:09:23.209Z", "2026-11-22T05:09:23.210Z", true},
		{"2026-11-22", "2026-11-23", true},
		{"2026-11-23", "", false},
		{"", "2026-11-22", false},
		{"2026-11-22T06:09:23.209+01:00", "2026-11-22T06:09:23.2091+01:00", true},
	} {
		set := map[string]string{}
		if tc.since != "" {
			set["since"] = tc.since
		}
		if tc.until != "" {
			set["until"] = tc.until
		}
		q, err := Parse(set, time.Now())
		if err != nil {
			t.Fatalf("%v: %v", set, err)
		}
		if got := q.inWindow(ev); got != tc.want {
			t.Errorf("since %q until %q: inWindow = %v, want %v", tc.since, tc.until, got, tc.want)
		}
		if q.fields {
			t.Errorf("%v: a time window counted as a field filter", set)
		}
	}
}

func TestParseAddr(t *testing.T) {
	for _, tc := range []struct {
		in   string
		addr string // "": an error
		port int    // -1: no port
	}{
		{"127.0.0.1", "127.0.0.1", -1},
		{"127.0.0.1:22", "127.0.0.1", 22},
		{"::1", "::1", -1},
		{"0:0::1", "::1", -1},
		{"[::1]", "::1", -1},
		{"[::1]:443", "::1", 443},
		{"[0:0:0:0:0:0:0:1]:0", "::1", 0},
		{"::ffff:10.0.0.1", "10.0.0.1", -1},
		{"[::ffff:10.0.0.1]:80", "10.0.0.1", 80},
		{"fe80::1%eth0", "fe80::1%eth0", -1},
		{"::1:80", "::1:80", -1}, // an address: a port after IPv6 needs brackets
		{"1.2.3", "", 0},
		{"127.0.0.1:65536", "", 0},
		{"127.0.0.1:", "", 0},
		{"[::1]:http", "", 0},
		{"localhost", "", 0},
		{"fe80::1%eth0:22", "", 0},
		{"[fe80::1%eth0]:22", "fe80::1%eth0", 22},
		{"[::1", "", 0},
		{"", "", 0},
	} {
		a, port, err := parseAddr(tc.in)
		if tc.addr == "" {
			if err == nil {
				t.Errorf("parseAddr(%q) = %v, want an error", tc.in, a)
			}
			continue
		}
		gotPort := -1
		if port != nil {
			gotPort = int(*port)
		}
		if err != nil || a != netip.MustParseAddr(tc.addr) || gotPort != tc.port {
			t.Errorf("parseAddr(%q) = %v, %d, %v; want %s, %d", tc.in, a, gotPort, err, tc.addr, tc.port)
		}
	}
}

func TestHasNum(t *testing.T) {
	for _, tc := range []struct {
		text string
		key  string
		n    uint64
		want bool
	}{
		{"audit(1.2:3): ppid=1 pid=8945 uid=0", "pid=", 8945, true},
		{"audit(1.2:3): ppid=8945 pid=1", "pid=", 8945, false},
		{"audit(1.2:3): pid=89450", "pid=", 8945, false},
		{"audit(1.2:3): pid=894", "pid=", 8945, false},
		{"audit(1.2:3): pid=8945", "pid=", 8945, true},        // at the end
		{"audit(1.2:3): pid=8945\n", "pid=", 8945, true},      // before a newline
		{"audit(1.2:3): pid=8945\x00", "pid=", 8945, true},    // before a NUL
		{"audit(1.2:3): pid=08945 ", "pid=", 8945, true},      // ParseUint reads leading zeros
		{"audit(1.2:3):pid=8945", "pid=", 8945, true},         // no space after the stamp
		{"audit(1.2:3): a=\"x\"pid=8945", "pid=", 8945, true}, // right after a quoted value
		{"audit(1.2:3): a=1\npid=8945", "pid=", 8945, true},
		{"audit(1.2:3): pid=8945x", "pid=", 8945, false},
		{"audit(1.2:3): pid=\"8945\"", "pid=", 8945, false},
		{"audit(1.2:3): auid=0 euid=0 ouid=0", "uid=", 0, false},
		{"audit(1.2:3): auid=0 uid=0", "uid=", 0, true},
		{"audit(1.2:3): uid=4294967295", "uid=", 4294967295, true},
		{"audit(1.2:3): uid=99999999999999999999999", "uid=", 4294967295, false},
		{"audit(1.2:3): syscall=+59", "syscall=", 59, true}, // strconv.Atoi reads the sign
		{"audit(1.2:3): syscall=", "syscall=", 0, false},
		{"audit(1.2:3): syscall=+", "syscall=", 0, false},
	} {
		if got := hasNum([]byte(tc.text), []byte(tc.key), tc.n); got != tc.want {
			t.Errorf("hasNum(%q, %q, %d) = %v, want %v", tc.text, tc.key, tc.n, got, tc.want)
		}
	}
}

func TestMayHold(t *testing.T) {
	for _, tc := range []struct {
		text, s string
		want    bool
	}{
		{`audit(1.2:3): comm="true" exe="/usr/bin/true" key=(null)`, "true", true},
		{`audit(1.2:3): comm="true" exe="/usr/bin/true" key=(null)`, "sleep", false},
		{`audit(1.2:3): comm="a b" exe=2F746D702F612062`, "a b", true},  // "a b" verbatim in comm
		{`audit(1.2:3): comm=612062 exe=2F746D702F612062`, "a b", true}, // hex: for the decoder
		{`audit(1.2:3): comm=(null) exe=(null) key=(null)`, "zz", false},
		{`audit(1.2:3): oexe=2F7A7A`, "zz", false}, // not the field
	} {
		if got := mayHold([]byte(tc.text), []byte(tc.s), fieldExe, fieldComm, fieldKey); got != tc.want {
			t.Errorf("mayHold(%q, %q) = %v, want %v", tc.text, tc.s, got, tc.want)
		}
	}
}

// TestQueryMatch checks match on the decoded fields directly.
func TestQueryMatch(t *testing.T) {
	u := func(n uint32) *uint32 { return &n }
	port := uint16(22)
	ev := &audit.Event{
		Sys: "connect", SysNr: new(int), PID: u(100), UID: u(1000), AUID: u(4294967295),
		Comm: "curl", Exe: "/usr/bin/curl", Key: "net", Keys: []string{"net", "egress"},
		Cwd: "/home/u", Paths: []audit.Path{{Name: "/etc/hosts"}},
		Sockaddr: &audit.Sockaddr{Family: "inet6", Addr: "fe80::1%2", Port: &port},
	}
	*ev.SysNr = 42
	for _, tc := range []struct {
		set  map[string]string
		want bool
	}{
		{map[string]string{}, true},
		{map[string]string{"syscall": "connect"}, true},
		{map[string]string{"syscall": "42"}, true},
		{map[string]string{"syscall": "43"}, false},
		{map[string]string{"syscall": "execve"}, false},
		{map[string]string{"pid": "100"}, true},
		{map[string]string{"pid": "1000"}, false},
		{map[string]string{"uid": "1000", "auid": "-1"}, true},
		{map[string]string{"uid": "1000", "auid": "1000"}, false},
		{map[string]string{"exe": "curl"}, true},
		{map[string]string{"exe": "/usr/bin/curl"}, true},
		{map[string]string{"exe": "/bin/curl"}, false},
		{map[string]string{"exe": "cur"}, false},
		{map[string]string{"path": "hosts"}, true},
		{map[string]string{"path": "/home"}, true},
		{map[string]string{"path": "passwd"}, false},
		{map[string]string{"key": "egress"}, true},
		{map[string]string{"key": "net"}, true},
		{map[string]string{"key": "ne"}, false},
		{map[string]string{"addr": "fe80::1"}, true},         // no zone given: any zone
		{map[string]string{"addr": "[fe80::1%2]:22"}, true},  // zone and port given: both compared
		{map[string]string{"addr": "[fe80::1%3]:22"}, false}, // another interface
		{map[string]string{"addr": "[fe80::1]:23"}, false},
		{map[string]string{"addr": "fe80::2"}, false},
		{map[string]string{"pid": "100", "key": "net", "exe": "curl"}, true},
		{map[string]string{"pid": "100", "key": "net", "exe": "wget"}, false},
	} {
		q, err := Parse(tc.set, time.Now())
		if err != nil {
			t.Fatalf("%v: %v", tc.set, err)
		}
		if got := q.match(ev); got != tc.want {
			t.Errorf("%v: match = %v, want %v", tc.set, got, tc.want)
		}
		if got := q.match(&audit.Event{}); got != (len(tc.set) == 0) {
			t.Errorf("%v: match of an empty event = %v", tc.set, got)
		}
	}
}

// selfFilters returns filters, one option each, built from the decoded event's own fields: each should
// select the event.
func selfFilters(ev *audit.Event) []map[string]string {
	var out []map[string]string
	add := func(k, v string) {
		if v != "" {
			out = append(out, map[string]string{k: v})
		}
	}
	num := func(k string, p *uint32) {
		if p != nil {
			add(k, strconv.FormatUint(uint64(*p), 10))
		}
	}
	add("syscall", ev.Sys)
	if ev.SysNr != nil {
		add("syscall", strconv.Itoa(*ev.SysNr))
	}
	num("pid", ev.PID)
	num("uid", ev.UID)
	num("auid", ev.AUID)
	add("exe", ev.Exe)
	add("exe", ev.Exe[strings.LastIndexByte(ev.Exe, '/')+1:])
	add("exe", ev.Comm)
	add("key", ev.Key)
	for _, k := range ev.Keys {
		add("key", k)
	}
	add("path", ev.Cwd)
	for _, p := range ev.Paths {
		add("path", p.Name)
		add("path", p.Name[len(p.Name)/3:len(p.Name)*2/3])
	}
	if sa := ev.Sockaddr; sa != nil {
		add("addr", sa.Addr)
		if a, err := netip.ParseAddr(sa.Addr); err == nil && sa.Port != nil {
			add("addr", netip.AddrPortFrom(a, *sa.Port).String())
		}
	}
	return out
}

// checkPrefilter fails if mayMatch rejects raw for a filter that matches its decoded event. It returns how
// many of the event's own filters matched it.
func checkPrefilter(t *testing.T, raw *audit.RawEvent) int {
	t.Helper()
	ev := audit.Decode(raw)
	n := 0
	for _, set := range selfFilters(ev) {
		q, err := Parse(set, time.Now())
		if err != nil || !q.match(ev) {
			continue // a value search cannot take (an unknown syscall name, say), or exe holding a '/'
		}
		n++
		if !q.mayMatch(raw) {
			t.Errorf("%v matches event %d but mayMatch rejects its records %q", set, raw.Serial, texts(raw.Records))
		}
	}
	return n
}

// TestPrefilterWorkload checks, for every event the real kernel recorded, that each filter built from the
// event's own fields selects it, and that the raw pre-check lets it through.
func TestPrefilterWorkload(t *testing.T) {
	evs := workloadEvents(t)
	for _, raw := range evs {
		if raw.Kind == audit.KindLost {
			continue
		}
		if got, want := checkPrefilter(t, raw), len(selfFilters(audit.Decode(raw))); got != want {
			t.Errorf("event %d: %d of its %d own filters match it", raw.Serial, got, want)
		}
	}
}

// TestPrefilterOddRecords checks the pre-check on encodings the kernel does not write but the decoder reads.
func TestPrefilterOddRecords(t *testing.T) {
	for _, recs := range [][]audit.Record{
		{{Type: audit.TypeSyscall, Text: []byte(`audit(1.2:3):arch=c000003e syscall=059 pid=007 uid=00 auid=1 comm=74727565 exe=2F7573722F62696E2F74727565 key=6578656301657874726173`)}},
		{{Type: audit.TypeSyscall, Text: []byte("audit(1.2:3): arch=c000003e\nsyscall=+59\x00pid=7\nuid=0 comm=\"true\"exe=\"/usr/bin/true\"key=\"a\"")}},
		{{Type: audit.TypeSyscall, Text: []byte(`audit(1.2:3): arch=40000003 syscall=102 a0=3 pid=1 key=(null)`)}},
		{
			{Type: audit.TypeCwd, Text: []byte(`audit(1.2:3): cwd=2F686F6D652F61206220`)},
			{Type: audit.TypePath, Text: []byte(`audit(1.2:3): item=0 name=2f746d702f782079 nametype=NORMAL`)},
			{Type: audit.TypeSockaddr, Text: []byte(`audit(1.2:3): saddr=0A000016000000000000000000000000000000000000000100000000`)},
		},
		{{Type: 1100, Text: []byte(`audit(1.2:3): pid=5 uid=0 auid=1000 ses=1 msg='op=PAM:session_open acct="root" exe="/usr/bin/sudo" res=success' key=(null) exe=2F62696E2F7375`)}},
	} {
		raw := &audit.RawEvent{Kind: audit.KindEvent, Serial: 3, Records: recs}
		if checkPrefilter(t, raw) == 0 {
			t.Errorf("no filter built from %q matched it", texts(recs))
		}
	}
}

// FuzzPrefilter checks that the raw pre-check never rejects an event that one of the filters built from its
// decoded fields selects.
func FuzzPrefilter(f *testing.F) {
	for _, raw := range workloadEvents(f) {
		for _, r := range raw.Records {
			f.Add(r.Type, string(r.Text))
		}
	}
	f.Add(uint16(audit.TypeSyscall), "audit(1.2:3):syscall=+01 pid=\"1\"pid=01\nuid=2\x00key=41")
	f.Fuzz(func(t *testing.T, typ uint16, text string) {
		raw := &audit.RawEvent{Kind: audit.KindEvent, Records: []audit.Record{{Type: typ, Text: []byte(text)}}}
		checkPrefilter(t, raw)
	})
}

func texts(recs []audit.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Text)
	}
	return out
}

func workloadEvents(tb testing.TB) []*audit.RawEvent {
	tb.Helper()
	data, err := os.Open(filepath.Join("..", "testdata", "workload.cap"))
	if err != nil {
		tb.Fatal(err)
	}
	defer data.Close()
	c, err := capfile.Read(data)
	if err != nil {
		tb.Fatal(err)
	}
	return capfile.Replay(c, 1_700_000_000e9)
}

// BenchmarkPrefilter compares selecting one event of the workload with the raw pre-check against
// decoding every event first.
func BenchmarkPrefilter(b *testing.B) {
	evs := workloadEvents(b)
	q, err := Parse(map[string]string{"pid": "8945", "syscall": "kill"}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name      string
		prefilter bool
	}{{"prefilter", true}, {"decode-all", false}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				n := 0
				for _, raw := range evs {
					if bc.prefilter && !q.mayMatch(raw) {
						continue
					}
					if q.match(audit.Decode(raw)) {
						n++
					}
				}
				if n != 1 {
					b.Fatalf("%d matches, want 1", n)
				}
			}
		})
	}
}
