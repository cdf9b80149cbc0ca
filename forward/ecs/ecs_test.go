package ecs_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit/raw"
	"github.com/auditarch/auditarch/forward/ecs"
	"github.com/auditarch/auditarch/internal/capfile"
)

var update = flag.Bool("update", false, "rewrite testdata/*.ecs.jsonl from the captures")

// capDir holds the streams recorded from the real kernel (audit's TestReplayGolden reads them too).
const capDir = "../../testdata"

// t0 is the replay clock's start, as in audit's replay test.
const t0 = int64(1_700_000_000) * 1e9

func renderer() *ecs.Renderer {
	return ecs.NewRenderer(ecs.Options{Origin: "golden.example/host", Host: ecs.Host{Name: "golden"}, Original: true})
}

// render replays a capture and renders each event at its position, as a follower would give it.
func render(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := capfile.Read(f)
	if err != nil {
		t.Fatal(err)
	}
	r := renderer()
	var buf bytes.Buffer
	for i, ev := range capfile.Replay(c, t0) {
		d := r.Event(ev, uint64(i))
		if ev.Kind == raw.KindLost {
			d = r.Lost(ev, uint64(i))
		}
		b, err := ecs.AppendJSON(nil, d)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// TestGolden renders every recorded stream (testdata/*.cap: exec, fork/clone, exit, kill/tgkill/
// pidfd_send_signal, openat, connect inet/inet6/unix, rename, unlink, utimensat, LOST) and compares it
// with testdata/NAME.ecs.jsonl. -update rewrites them.
func TestGolden(t *testing.T) {
	caps, _ := filepath.Glob(filepath.Join(capDir, "*.cap"))
	if len(caps) == 0 {
		t.Fatal("no captures")
	}
	for _, path := range caps {
		name := strings.TrimSuffix(filepath.Base(path), ".cap")
		t.Run(name, func(t *testing.T) {
			got := render(t, path)
			golden := filepath.Join("testdata", name+".ecs.jsonl")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
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
					t.Fatalf("%s line %d differs:\n got %.800s\nwant %.800s", golden, i+1, g, w)
				}
			}
		})
	}
}

// field is one row of testdata/fields.tsv.
type field struct {
	name, ecsType, definedBy, source string
}

func readFields(t *testing.T) map[string]field {
	t.Helper()
	f, err := os.Open("testdata/fields.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]field{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cols := strings.Split(line, "\t")
		if len(cols) != 4 {
			t.Fatalf("fields.tsv: %q: want 4 tab-separated columns", line)
		}
		out[cols[0]] = field{cols[0], cols[1], cols[2], cols[3]}
	}
	return out
}

// leaves lists the dotted names of the leaf fields of a JSON document. Objects under a name that
// fields.tsv lists as a group ("auditd.data.*") are not descended into.
func leaves(prefix string, v any, groups map[string]bool, out map[string]bool) {
	if groups[prefix+".*"] {
		out[prefix+".*"] = true
		return
	}
	m, ok := v.(map[string]any)
	if !ok {
		out[prefix] = true
		return
	}
	for k, x := range m {
		name := k
		if prefix != "" {
			name = prefix + "." + k
		}
		leaves(name, x, groups, out)
	}
}

// TestFieldsInECS checks that every field the goldens hold is listed in testdata/fields.tsv, where
// each row says whether ECS defines it (its type in ECS's generated/csv/fields.csv), or Auditbeat's
// auditd module (auditbeat/module/auditd/_meta/fields.yml), or auditarch; and that each field Auditbeat
// would emit for these records (the "ecs" and "auditbeat" rows) is emitted under that name.
func TestFieldsInECS(t *testing.T) {
	table := readFields(t)
	groups := map[string]bool{}
	for name := range table {
		if strings.HasSuffix(name, ".*") {
			groups[name] = true
		}
	}
	seen := map[string]bool{}
	goldens, _ := filepath.Glob("testdata/*.ecs.jsonl")
	for _, g := range goldens {
		data, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
			var doc map[string]any
			if err := json.Unmarshal(line, &doc); err != nil {
				t.Fatal(err)
			}
			leaves("", doc, groups, seen)
		}
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f, ok := table[n]
		if !ok {
			t.Errorf("field %s is emitted but not in testdata/fields.tsv", n)
			continue
		}
		switch f.definedBy {
		case "ecs":
			if f.ecsType == "-" {
				t.Errorf("%s: defined by ecs but no ECS type given", n)
			}
		case "auditbeat", "auditarch":
			if f.ecsType != "-" {
				t.Errorf("%s: %s field with an ECS type", n, f.definedBy)
			}
		default:
			t.Errorf("%s: defined by %q: want ecs, auditbeat or auditarch", n, f.definedBy)
		}
		if f.definedBy == "auditarch" && !strings.HasPrefix(n, "auditarch.") && n != "event.id" && n != "event.sequence" {
			t.Errorf("%s: auditarch's own fields live under auditarch.", n)
		}
	}
	for n, f := range table {
		if f.source != "-" && !seen[n] && !strings.Contains(f.source, "not in captures") {
			t.Errorf("fields.tsv lists %s (from %s) but no golden holds it", n, f.source)
		}
	}
}

// TestSplitArgs: auparse cannot read an argument split over a2[0], a2[1] (a2_len); process.args comes
// from auditarch's decoder then, exactly.
func TestSplitArgs(t *testing.T) {
	stamp := "audit(1700000000.000:7): "
	ev := &raw.Event{Kind: raw.KindEvent, Serial: 7, Sec: 1700000000, EOE: true, Records: []raw.Record{
		{Type: 1300, Text: []byte(stamp + `arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 a3=0 items=1 ppid=1 pid=2 auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm="echo" exe="/usr/bin/echo" key="exec"`)},
		{Type: 1309, Text: []byte(stamp + `argc=3 a0="echo" a1="x" a2_len=6`)},
		{Type: 1309, Text: []byte(stamp + `a2[0]=616263`)},
		{Type: 1309, Text: []byte(stamp + `a2[1]=646566`)},
	}}
	d := renderer().Event(ev, 42)
	b, _ := ecs.AppendJSON(nil, d)
	var got struct {
		Process struct{ Args []string } `json:"process"`
		User    struct {
			Audit struct{ ID string } `json:"audit"`
		} `json:"user"`
		Auditd struct{ Session string }    `json:"auditd"`
		Event  struct{ ID, Action string } `json:"event"`
		Tags   []string                    `json:"tags"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Process.Args, "|") != "echo|x|abcdef" {
		t.Errorf("process.args = %q, want [echo x abcdef]", got.Process.Args)
	}
	if got.User.Audit.ID != "1000" || got.Auditd.Session != "3" || got.Event.ID != "golden.example/host:42" ||
		got.Event.Action != "executed" || strings.Join(got.Tags, ",") != "exec" {
		t.Errorf("got %s", b)
	}
}

// TestControlLeaves: the chain's bookkeeping (KEY, HEARTBEAT, SEAL) is not exported; START, STOP,
// CLOCK and POLICY are, with their bodies under auditarch.<kind>.
func TestControlLeaves(t *testing.T) {
	r := renderer()
	for _, k := range []archive.LeafKind{archive.LeafKey, archive.LeafHeartbeat, archive.LeafSeal} {
		if d := r.Leaf(&archive.Leaf{Kind: k, Body: []byte("{}")}, 1); d != nil {
			t.Errorf("%s exported: %v", k, d)
		}
	}
	pol := `{"action":"signal","verdict":"denied","sender":{"pid":77,"uid":0,"euid":0,"auid":1000,"ses":4,"comm":"kill"}}`
	d := r.Leaf(&archive.Leaf{Kind: archive.LeafPolicy, Time: 1e18, Body: []byte(pol)}, 9)
	b, _ := ecs.AppendJSON(nil, d)
	for _, want := range []string{`"action":"policy-signal"`, `"type":["denied"]`, `"pid":77`, `"audit":{"id":"1000"}`, `"leaf":9`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("POLICY: %s lacks %s", b, want)
		}
	}
	d = r.Leaf(&archive.Leaf{Kind: archive.LeafStop, Time: 1e18, Body: []byte(`{"reason":"signal"}`)}, 10)
	if b, _ = ecs.AppendJSON(nil, d); !strings.Contains(string(b), `"stop":{"reason":"signal"}`) {
		t.Errorf("STOP: %s", b)
	}
}
