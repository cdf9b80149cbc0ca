package audit

import (
	"strconv"
	"testing"
	"time"
)

// Benchmarks for the reader's hot path (ParseHeader, Push) and for replay (Decode). The target for
// Decode is 300k records/s on one core: run with -cpu=1 to compare.

func BenchmarkParseHeader(b *testing.B) {
	text := []byte(stamp(4567, `arch=c000003e syscall=257 success=yes exit=3 a0=ffffff9c a1=7f5e1c2b3e10 a2=80000 a3=0`))
	b.ReportAllocs()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if _, _, err := ParseHeader(text); err != nil {
			b.Fatal(err)
		}
	}
}

// serialTemplate is a typical 5-record openat event whose stamps hold a 7-digit serial at known offsets,
// so the benchmark can renumber it in place without allocating.
type serialTemplate struct {
	types []uint16
	texts [][]byte
	at    []int // offset of the serial in each text
}

const templateSerial = 1000000 // 7 digits; the benchmark counts up from here

func newSerialTemplate() *serialTemplate {
	st := &serialTemplate{}
	for _, rec := range typicalEvent(templateSerial) {
		text := []byte(rec[1].(string))
		st.types = append(st.types, rec[0].(uint16))
		st.texts = append(st.texts, text)
		st.at = append(st.at, len("audit(1732250000.123:"))
	}
	return st
}

// renumber writes serial (7 digits) into every record's stamp.
func (st *serialTemplate) renumber(serial uint32) {
	var d [7]byte
	for k := 6; k >= 0; k-- {
		d[k] = byte('0' + serial%10)
		serial /= 10
	}
	for i, text := range st.texts {
		copy(text[st.at[i]:], d[:])
	}
}

func BenchmarkReassemble(b *testing.B) {
	st := newSerialTemplate()
	if h, _, err := ParseHeader(st.texts[0]); err != nil || h.Serial != templateSerial {
		b.Fatalf("template stamp: %+v %v", h, err)
	}
	emitted := 0
	r := NewReassembler(func(ev *RawEvent) { emitted += len(ev.Records) })
	serial := uint32(templateSerial)
	now := t0
	b.ReportAllocs()
	start := time.Now()
	n := 0
	for b.Loop() {
		st.renumber(serial)
		for i, text := range st.texts {
			if err := r.Push(st.types[i], text, now); err != nil {
				b.Fatal(err)
			}
		}
		n++
		serial++
		if serial > 9999999 {
			serial = templateSerial
			r = NewReassembler(r.Emit) // renumbered serials would be late in the old one
		}
		now += 10000
	}
	b.ReportMetric(float64(5*n)/time.Since(start).Seconds(), "records/s")
	if emitted != 4*n {
		b.Fatalf("%d records emitted for %d events", emitted, n)
	}
	r.Tick(now)
}

// decodeMix is a realistic mix for replay: an execve with 3 args, an openat, and a connect with SOCKADDR.
func decodeMix() []*RawEvent {
	return []*RawEvent{
		rawEvent(4567, recs(4567,
			TypeSyscall, `arch=c000003e syscall=59 success=yes exit=0 a0=55d5 a1=55d6 a2=55d7 a3=0 items=2 ppid=100 pid=101 auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm="ls" exe="/usr/bin/ls" subj=unconfined key="exec"`,
			TypeExecve, `argc=3 a0="ls" a1="-la" a2="/tmp"`,
			TypeCwd, `cwd="/root"`,
			TypePath, `item=0 name="/usr/bin/ls" inode=1835050 dev=08:01 mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0`,
			TypePath, `item=1 name="/lib64/ld-linux-x86-64.so.2" inode=1835263 dev=08:01 mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0`,
			TypeProctitle, `proctitle=6C73002D6C61002F746D70`)),
		rawEvent(4568, recs(4568,
			TypeSyscall, `arch=c000003e syscall=257 success=yes exit=3 a0=ffffff9c a1=7f5e1c2b3e10 a2=80000 a3=0 items=1 ppid=812 pid=813 auid=1000 uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 comm="cat" exe="/usr/bin/cat" subj=unconfined key="files"`,
			TypeCwd, `cwd="/home/user"`,
			TypePath, `item=0 name="/etc/passwd" inode=1835066 dev=08:01 mode=0100644 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0`,
			TypeProctitle, `proctitle=636174002F6574632F706173737764`)),
		rawEvent(4569, recs(4569,
			TypeSyscall, `arch=c000003e syscall=42 success=no exit=-111 a0=3 a1=7ffc8e5f3a10 a2=10 a3=0 items=0 ppid=812 pid=900 auid=1000 uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 comm="curl" exe="/usr/bin/curl" subj=unconfined key="net"`,
			TypeSockaddr, `saddr=020000507F0000010000000000000000`,
			TypeProctitle, `proctitle=6375726C00687474703A2F2F3132372E302E302E31`)),
	}
}

func BenchmarkDecode(b *testing.B) {
	evs := decodeMix()
	records := 0
	for _, ev := range evs {
		records += len(ev.Records)
	}
	b.ReportAllocs()
	start := time.Now()
	n := 0
	for b.Loop() {
		for _, ev := range evs {
			if Decode(ev) == nil {
				b.Fatal("nil")
			}
		}
		n++
	}
	b.ReportMetric(float64(n*records)/time.Since(start).Seconds(), "records/s")
	b.ReportMetric(float64(records), "records/op")
}

// BenchmarkDecodeExecveLong decodes a 401-argument exec spread over several EXECVE records.
func BenchmarkDecodeExecveLong(b *testing.B) {
	argv := make([][]byte, 401)
	for i := range argv {
		argv[i] = []byte("--flag-" + strconv.Itoa(i) + "=some value")
	}
	pairs := []any{TypeSyscall, sysBody(59, "success=yes exit=0 ", [4]string{"1", "2", "3", "0"}, `"x"`, `"exec"`)}
	for _, body := range kernelExecve(argv) {
		pairs = append(pairs, TypeExecve, body)
	}
	ev := rawEvent(1, recs(1, pairs...))
	b.ReportAllocs()
	for b.Loop() {
		Decode(ev)
	}
}
