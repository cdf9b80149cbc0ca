package audit_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/internal/capfile"
	"github.com/auditarch/auditarch/internal/privtest"
)

// TestAgreesWithAusearch feeds the raw records of every real capture to auditd's own `ausearch -i` and
// checks that auditarch's decoding agrees with ausearch's interpretation, field by field: syscall name,
// success, exit, pid, ppid, comm, exe, key, every argument (split and multi-record ones joined), cwd,
// paths, socket addresses, kill targets and signals, proctitle.
func TestAgreesWithAusearch(t *testing.T) {
	ausearch := privtest.Command(t, "ausearch")
	caps, _ := filepath.Glob(filepath.Join(testdataDir, "*.cap"))
	for _, path := range caps {
		t.Run(filepath.Base(path), func(t *testing.T) {
			c := readCap(t, path)
			// auditd's log format: type=NAME msg=TEXT, one record per line.
			var log bytes.Buffer
			for _, it := range c.Items {
				if it.Lost == 0 {
					fmt.Fprintf(&log, "type=%s msg=%s\n", audit.TypeName(it.Type), it.Text)
				}
			}
			logPath := filepath.Join(t.TempDir(), "audit.log")
			if err := os.WriteFile(logPath, log.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(ausearch, "-if", logPath, "-i").Output()
			if err != nil {
				t.Fatalf("ausearch: %v", err)
			}
			interp := parseAusearch(out)
			checked := 0
			for _, raw := range capfile.Replay(c, t0) {
				if raw.Kind != audit.KindEvent {
					continue
				}
				checked += compareEvent(t, audit.Decode(raw), raw, interp)
			}
			if checked == 0 {
				t.Fatal("no field compared")
			}
			t.Logf("%d fields agree with ausearch -i", checked)
		})
	}
}

// ausRecord is one interpreted record: its type and the text after "msg=audit(...) : ".
type ausRecord struct {
	typ  string
	body string
}

// parseAusearch indexes ausearch -i output by serial.
func parseAusearch(out []byte) map[uint32][]ausRecord {
	m := map[uint32][]ausRecord{}
	for _, line := range strings.Split(string(out), "\n") {
		typ, rest, ok := strings.Cut(line, " msg=audit(")
		if !ok || !strings.HasPrefix(typ, "type=") {
			continue
		}
		stamp, body, ok := strings.Cut(rest, ") : ")
		if !ok {
			continue
		}
		i := strings.LastIndexByte(stamp, ':')
		serial, err := strconv.ParseUint(stamp[i+1:], 10, 32)
		if err != nil {
			continue
		}
		m[uint32(serial)] = append(m[uint32(serial)], ausRecord{typ: typ[5:], body: body})
	}
	return m
}

// fieldsByKeys splits an interpreted body using the keys of the raw record, in order: values may
// contain spaces and '=' once interpreted, so they cannot be tokenized on their own.
func fieldsByKeys(rawBody []byte, interp string) map[string]string {
	var keys []string
	for f := audit.NewFields(rawBody); f.Next(); {
		keys = append(keys, string(f.Key))
	}
	out := map[string]string{}
	pos := 0
	s := " " + interp
	for i, k := range keys {
		j := strings.Index(s[pos:], " "+k+"=")
		if j < 0 {
			continue
		}
		start := pos + j + len(k) + 2
		end := len(s)
		for _, next := range keys[i+1:] {
			if e := strings.Index(s[start:], " "+next+"="); e >= 0 {
				end = start + e
				break
			}
		}
		out[k] = strings.TrimRight(s[start:end], " ")
		pos = start
	}
	return out
}

// ausEscape renders bytes as ausearch -i prints them: control characters as \ooo.
func ausEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			fmt.Fprintf(&b, "\\%03o", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func compareEvent(t *testing.T, ev *audit.Event, raw *audit.RawEvent, interp map[uint32][]ausRecord) int {
	t.Helper()
	recs := interp[ev.Seq]
	if len(recs) == 0 {
		t.Errorf("seq %d: ausearch did not show the event", ev.Seq)
		return 0
	}
	n := 0
	eq := func(what, got, want string) {
		t.Helper()
		n++
		if got != want {
			t.Errorf("seq %d %s: auditarch %.200q, ausearch %.200q", ev.Seq, what, got, want)
		}
	}
	// ausearch lists an event's records in its own order (same-type records reversed): match each raw
	// record to an unused interpreted record of its type that starts with the same first key=value pair
	// (values compared raw only for item=, which ausearch does not interpret).
	byType := map[string][]map[string]string{}
	used := make([]bool, len(recs))
	for _, r := range raw.Records {
		_, off, err := audit.ParseHeader(r.Text)
		if err != nil {
			continue
		}
		name := audit.TypeName(r.Type)
		body := r.Text[off:]
		f := audit.NewFields(body)
		if !f.Next() {
			continue
		}
		prefix := string(f.Key) + "="
		if string(f.Key) == "item" {
			prefix += string(f.Value) + " "
		}
		for i, ar := range recs {
			if !used[i] && ar.typ == name && strings.HasPrefix(strings.TrimLeft(ar.body, " "), prefix) {
				used[i] = true
				byType[name] = append(byType[name], fieldsByKeys(body, ar.body))
				break
			}
		}
	}
	if s := byType["SYSCALL"]; len(s) == 1 {
		f := s[0]
		eq("syscall", ev.Sys, f["syscall"])
		eq("arch", ev.Arch, f["arch"])
		if ev.Success != nil {
			eq("success", map[bool]string{true: "yes", false: "no"}[*ev.Success], f["success"])
		}
		if ev.Exit != nil {
			want := f["exit"]
			if *ev.Exit < 0 {
				// ausearch: exit=ENOENT(No such file or directory)
				want, _, _ = strings.Cut(want, "(")
				eq("exit", unix.ErrnoName(unix.Errno(-*ev.Exit)), want)
			} else {
				eq("exit", strconv.FormatInt(*ev.Exit, 10), want)
			}
		}
		eq("pid", strconv.FormatUint(uint64(*ev.PID), 10), f["pid"])
		eq("ppid", strconv.FormatUint(uint64(*ev.PPID), 10), f["ppid"])
		eq("comm", ausEscape(ev.Comm), f["comm"])
		eq("exe", ausEscape(ev.Exe), f["exe"])
		key := ev.Key
		if key == "" {
			key = "(null)"
		}
		if len(ev.Keys) > 0 {
			key = strings.Join(ev.Keys, ",")
		}
		eq("key", key, f["key"])
		if ev.Signal != nil && ev.Sys == "kill" {
			eq("signal", unix.SignalName(unix.Signal(*ev.Signal)), f["a1"])
		}
	}
	if ex := byType["EXECVE"]; len(ex) > 0 {
		args := map[int]string{}
		for _, f := range ex {
			for i := 0; i < len(ev.Args); i++ {
				a := "a" + strconv.Itoa(i)
				if v, ok := f[a]; ok {
					args[i] += v
				}
				// Chunks aN[k] of a split argument may continue in the next EXECVE record; an argument
				// is at most 128 KiB, under 64 chunks.
				for k := 0; k < 64; k++ {
					if v, ok := f[a+"["+strconv.Itoa(k)+"]"]; ok {
						args[i] += v
					}
				}
			}
		}
		for i, a := range ev.Args {
			eq("arg "+strconv.Itoa(i), ausEscape(a), args[i])
		}
	}
	if c := byType["CWD"]; len(c) == 1 {
		eq("cwd", ausEscape(ev.Cwd), c[0]["cwd"])
	}
	for i, f := range byType["PATH"] {
		if i >= len(ev.Paths) {
			break
		}
		p := ev.Paths[i]
		if p.Name != "" {
			eq("path name", ausEscape(p.Name), f["name"])
		}
		eq("nametype", p.NameType, f["nametype"])
		if p.Inode != 0 {
			eq("inode", strconv.FormatUint(p.Inode, 10), f["inode"])
		}
	}
	if s := byType["SOCKADDR"]; len(s) == 1 && ev.Sockaddr != nil {
		v := s[0]["saddr"]
		sa := ev.Sockaddr
		switch sa.Family {
		case "inet", "inet6":
			eq("saddr", fmt.Sprintf("{ saddr_fam=%s laddr=%s lport=%d }", sa.Family, sa.Addr, *sa.Port), v)
		case "unix":
			// ausearch shows an abstract name without its leading NUL.
			eq("saddr", fmt.Sprintf("{ saddr_fam=local path=%s }", sa.Path), v)
		}
	}
	if o := byType["OBJ_PID"]; len(o) > 0 && ev.TargetPID != nil {
		eq("opid", strconv.Itoa(int(*ev.TargetPID)), o[0]["opid"])
		eq("ocomm", ausEscape(ev.TargetComm), o[0]["ocomm"])
	}
	if p := byType["PROCTITLE"]; len(p) == 1 {
		eq("proctitle", ausEscape(ev.Proctitle), p[0]["proctitle"])
	}
	return n
}
