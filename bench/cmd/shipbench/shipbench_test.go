package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseRecord(t *testing.T) {
	// As the receiving auditd logged it (ENRICHED: the resolved fields follow a 0x1d byte).
	sys := `type=SYSCALL msg=audit(1795835605.721:9416890): arch=c000003e syscall=257 success=yes exit=3 ` +
		`a0=ffffff9c a1=c000012345 a2=80000 a3=5b00049d items=1 ppid=1 pid=2 auid=4294967295 comm="shipbench-gen" ` +
		`exe="/x/shipbench-gen" key="shipbench"` + "\x1d" + `ARCH=x86_64 SYSCALL=openat`
	r, ok := parseRecord([]byte(sys))
	if !ok || r.Serial != 9416890 || r.Index != 0x49d || !r.Stamp.Equal(time.Unix(1795835605, 721e6)) {
		t.Fatalf("SYSCALL: got %+v, %v", r, ok)
	}
	for _, line := range []string{
		`type=PROCTITLE msg=audit(1795835605.721:9416890): proctitle=2F78`,
		strings.Replace(sys, "a3=5b00049d", "a3=0", 1),                    // the Go runtime's own openat
		strings.Replace(sys, `key="shipbench"`, `key="other"`, 1),         // another rule's
		strings.Replace(sys, "type=SYSCALL", "type=CONFIG_CHANGE", 1),     // not a syscall record
		strings.Replace(sys, "a3=5b00049d", "a3=5c00049d", 1),             // wrong magic
		strings.Replace(sys, "a3=5b00049d", "a3=5b00049d1", 1) + " a3=zz", // out of range
	} {
		if r, ok := parseRecord([]byte(line)); !ok || r.Index != -1 || r.Serial != 9416890 {
			t.Errorf("%.60s…: got %+v, %v; want serial 9416890, no index", line, r, ok)
		}
	}
	for _, bad := range []string{"", "type=DAEMON_START", "msg=audit(17.1)", "msg=audit(x.1:2)"} {
		if _, ok := parseRecord([]byte(bad)); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestPercentilesCountLost(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 98; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	// 98 arrived of 100: p99 falls on a lost event.
	l := percentiles(ds, 100)
	if l.P50Ms != 50 || l.P99Ms != -1 || l.MaxMs != 98 || l.ArrivedP99Ms != 98 {
		t.Errorf("98 of 100: %+v", l)
	}
	l = percentiles(append(ds, 99*time.Millisecond), 100)
	if l.P99Ms != 99 {
		t.Errorf("99 of 100: p99 %v, want 99", l.P99Ms)
	}
	if l := percentiles(nil, 10); l.P50Ms != -1 || l.MaxMs != -1 {
		t.Errorf("none arrived: %+v", l)
	}
}

func TestWriteConf(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "in.conf")
	os.WriteFile(src, []byte("# c\nflush = INCREMENTAL_ASYNC\n##tcp_listen_port = 60\nq_depth = 2000\n"), 0o600)
	dst := filepath.Join(dir, "out", "auditd.conf")
	if err := writeConf(src, dst, map[string]string{"flush": "DATA", "tcp_listen_port": "1234"}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dst)
	want := "# c\nflush = DATA\n##tcp_listen_port = 60\nq_depth = 2000\ntcp_listen_port = 1234\n"
	if string(b) != want {
		t.Errorf("got\n%s\nwant\n%s", b, want)
	}
	if v := confValue(dst, "q_depth"); v != "2000" {
		t.Errorf("q_depth %q", v)
	}
}
