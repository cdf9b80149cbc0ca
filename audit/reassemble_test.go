package audit

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// collector records what a Reassembler emits, deep-copied (the event is reused after Emit returns).
type collector struct {
	events []*RawEvent
}

func (c *collector) emit(ev *RawEvent) { c.events = append(c.events, copyEvent(ev)) }

// take returns the events emitted since the last take.
func (c *collector) take() []*RawEvent {
	ev := c.events
	c.events = nil
	return ev
}

func newTestReassembler() (*Reassembler, *collector) {
	c := &collector{}
	return NewReassembler(c.emit), c
}

const sec = int64(time.Second)

// t0 is the receive clock at the start of each test (unix nanoseconds).
const t0 = int64(1732250000) * sec

func push(t *testing.T, r *Reassembler, typ uint16, serial uint32, body string, now int64) {
	t.Helper()
	if err := r.Push(typ, []byte(stamp(serial, body)), now); err != nil {
		t.Fatalf("Push(%d, %d): %v", typ, serial, err)
	}
}

// pushEvent pushes a SYSCALL, PATH and EOE for serial at now.
func pushEvent(t *testing.T, r *Reassembler, serial uint32, now int64) {
	t.Helper()
	push(t, r, TypeSyscall, serial, sysBody(257, "success=yes exit=3 ", [4]string{"ffffff9c", "1", "0", "0"}, `"cat"`, "(null)"), now)
	push(t, r, TypePath, serial, `item=0 name="/etc/hosts" inode=12 dev=08:01 mode=0100644 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL`, now)
	push(t, r, TypeEOE, serial, "", now)
}

// describe renders emitted events compactly for comparison: "E10/2" is an event of serial 10 with two
// records closed by EOE, "T" marks a timeout (no EOE), "L" Late, and "LOST21-22x2" a serial gap.
func describe(evs []*RawEvent) []string {
	var out []string
	for _, ev := range evs {
		if ev.Kind == KindLost {
			out = append(out, fmt.Sprintf("LOST%d-%dx%d", ev.Lost.First, ev.Lost.Last, ev.Lost.Count))
			if ev.Lost.Reason != LostGap {
				out[len(out)-1] += "?" + ev.Lost.Reason.String()
			}
			continue
		}
		s := "E"
		if !ev.EOE {
			s = "T"
		}
		if ev.Late {
			s += "L"
		}
		out = append(out, fmt.Sprintf("%s%d/%d", s, ev.Serial, len(ev.Records)))
	}
	return out
}

func expect(t *testing.T, c *collector, want ...string) []*RawEvent {
	t.Helper()
	evs := c.take()
	got := describe(evs)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("emitted %v, want %v", got, want)
	}
	return evs
}

func TestReassembleInterleaved(t *testing.T) {
	r, c := newTestReassembler()
	now := t0
	push(t, r, TypeSyscall, 10, sysBody(59, "success=yes exit=0 ", [4]string{"1", "2", "3", "0"}, `"ls"`, `"exec"`), now)
	push(t, r, TypeSyscall, 11, sysBody(257, "success=yes exit=3 ", [4]string{"1", "2", "3", "0"}, `"cat"`, "(null)"), now)
	push(t, r, TypeExecve, 10, `argc=1 a0="ls"`, now)
	push(t, r, TypePath, 11, `item=0 name="/etc/hosts" nametype=NORMAL`, now)
	push(t, r, TypeCwd, 10, `cwd="/"`, now)
	push(t, r, TypeProctitle, 11, `proctitle="cat"`, now)
	expect(t, c)
	push(t, r, TypeEOE, 11, "", now)
	evs := expect(t, c, "E11/3")
	push(t, r, TypeEOE, 10, "", now)
	evs = append(evs, expect(t, c, "E10/3")...)
	wantTypes := map[uint32][]uint16{10: {TypeSyscall, TypeExecve, TypeCwd}, 11: {TypeSyscall, TypePath, TypeProctitle}}
	for _, ev := range evs {
		for i, rec := range ev.Records {
			if rec.Type != wantTypes[ev.Serial][i] {
				t.Errorf("event %d record %d has type %d", ev.Serial, i, rec.Type)
			}
			if h, _, err := ParseHeader(rec.Text); err != nil || h.Serial != ev.Serial {
				t.Errorf("event %d holds %q", ev.Serial, rec.Text)
			}
		}
		if ev.Sec != testSec || ev.Msec != testMsec || ev.Received != now || ev.Kind != KindEvent || ev.Late {
			t.Errorf("event %+v", ev)
		}
	}
	r.Tick(now + 10*sec)
	r.Flush(now + 10*sec)
	expect(t, c)
}

func TestReassembleIncompleteDoesNotBlock(t *testing.T) {
	r, c := newTestReassembler()
	now := t0
	push(t, r, TypeSyscall, 10, sysBody(62, "success=yes exit=0 ", [4]string{"64", "9", "0", "0"}, `"kill"`, "(null)"), now)
	push(t, r, TypeObjPID, 10, `opid=100 ocomm="sleep"`, now)
	pushEvent(t, r, 11, now+int64(time.Millisecond))
	expect(t, c, "E11/2")
	pushEvent(t, r, 12, now+2*int64(time.Millisecond))
	expect(t, c, "E12/2")
	r.Tick(now + sec - 1)
	expect(t, c)
	r.Tick(now + sec) // Timeout is 1 s from the first record
	evs := expect(t, c, "T10/2")
	if evs[0].Received != now {
		t.Errorf("Received %d, want %d", evs[0].Received, now)
	}
	// Its EOE arriving later is kept as a Late event: with it the event reads whole, nothing was lost.
	push(t, r, TypeEOE, 10, "", now+2*sec)
	expect(t, c, "EL10/1")
	r.Tick(now + 20*sec)
	r.Flush(now + 20*sec)
	expect(t, c)
}

func TestReassembleStandalone(t *testing.T) {
	r, c := newTestReassembler()
	now := t0
	push(t, r, 1100, 30, `pid=1 uid=0 auid=1000 ses=3 msg='op=PAM:authentication grantors=pam_unix acct="root" exe="/usr/bin/su" hostname=? addr=? terminal=pts/0 res=success'`, now)
	push(t, r, 1112, 31, `pid=1 uid=0 msg='op=login res=success'`, now)
	push(t, r, 1299, 32, `msg='daemon'`, now)
	push(t, r, 2100, 33, `pid=1 msg='anom'`, now)
	push(t, r, 2999, 34, `msg='last'`, now)
	expect(t, c, "T30/1", "T31/1", "T32/1", "T33/1", "T34/1")
	// Kernel types around the ranges wait for EOE.
	push(t, r, 1099, 35, `x=1`, now)
	push(t, r, 1300, 36, `x=1`, now)
	push(t, r, 2000, 37, `x=1`, now) // AUDIT_KERNEL
	push(t, r, 3000, 38, `x=1`, now)
	expect(t, c)
	r.Flush(now)
	expect(t, c, "T35/1", "T36/1", "T37/1", "T38/1")
}

func TestReassembleOutOfOrder(t *testing.T) {
	r, c := newTestReassembler()
	now := t0
	pushEvent(t, r, 10, now)
	pushEvent(t, r, 12, now)
	pushEvent(t, r, 11, now)
	expect(t, c, "E10/2", "E12/2", "E11/2")
	r.Tick(now + 60*sec)
	r.Flush(now + 60*sec)
	expect(t, c)
}

func TestReassembleGap(t *testing.T) {
	r, c := newTestReassembler()
	now := t0
	pushEvent(t, r, 20, now)
	pushEvent(t, r, 23, now)
	expect(t, c, "E20/2", "E23/2")
	r.Tick(now + int64(r.Grace) - 1)
	expect(t, c) // not before Grace
	r.Tick(now + int64(r.Grace))
	evs := expect(t, c, "LOST21-22x2")
	if l := evs[0].Lost; l != (Lost{Reason: LostGap, Count: 2, First: 21, Last: 22}) || !evs[0].EOE ||
		evs[0].Received != now+int64(r.Grace) {
		t.Errorf("lost event %+v", evs[0])
	}
	r.Tick(now + 100*sec)
	expect(t, c) // reported once

	// A serial of the reported gap arriving later is Late and not counted again.
	push(t, r, TypeSyscall, 21, sysBody(257, "success=yes exit=3 ", [4]string{"1", "1", "0", "0"}, `"cat"`, "(null)"), now+101*sec)
	push(t, r, TypeEOE, 21, "", now+101*sec)
	evs = expect(t, c, "EL21/1")
	if evs[0].Received != now+101*sec {
		t.Errorf("late event received %d", evs[0].Received)
	}
	// A late record for an already-emitted serial: a Late event (after its timeout), no LOST.
	push(t, r, TypeProctitle, 20, `proctitle="cat"`, now+102*sec)
	expect(t, c)
	r.Tick(now + 103*sec)
	expect(t, c, "TL20/1")
	r.Flush(now + 200*sec)
	expect(t, c)
}

func TestReassembleGapFilledInTime(t *testing.T) {
	r, c := newTestReassembler()
	now := t0
	pushEvent(t, r, 20, now)
	pushEvent(t, r, 25, now)         // 21..24 missing
	pushEvent(t, r, 23, now+sec)     // splits the range
	pushEvent(t, r, 21, now+2*sec)   // trims the low end
	r.Tick(now + int64(r.Grace) + 1) // 22 and 24 expire
	expect(t, c, "E20/2", "E25/2", "E23/2", "E21/2", "LOST22-22x1", "LOST24-24x1")
	pushEvent(t, r, 26, now+10*sec)
	pushEvent(t, r, 24, now+10*sec) // late
	expect(t, c, "E26/2", "EL24/2")
	r.Flush(now + 20*sec)
	expect(t, c)
}

func TestReassembleWrap(t *testing.T) {
	t.Run("no gap across the wrap", func(t *testing.T) {
		r, c := newTestReassembler()
		now := t0
		for _, s := range []uint32{4294967293, 4294967294, 4294967295, 1, 2} {
			pushEvent(t, r, s, now)
		}
		expect(t, c, "E4294967293/2", "E4294967294/2", "E4294967295/2", "E1/2", "E2/2")
		r.Tick(now + 60*sec)
		r.Flush(now + 60*sec)
		expect(t, c)
	})
	t.Run("gap across the wrap", func(t *testing.T) {
		r, c := newTestReassembler()
		now := t0
		pushEvent(t, r, 4294967294, now)
		pushEvent(t, r, 2, now)
		expect(t, c, "E4294967294/2", "E2/2")
		r.Tick(now + 60*sec)
		evs := expect(t, c, "LOST4294967295-1x2")
		if evs[0].Lost != (Lost{Reason: LostGap, Count: 2, First: 4294967295, Last: 1}) {
			t.Errorf("lost %+v", evs[0].Lost)
		}
	})
	t.Run("gap ending at the wrap", func(t *testing.T) {
		r, c := newTestReassembler()
		now := t0
		pushEvent(t, r, 4294967290, now)
		pushEvent(t, r, 1, now)
		pushEvent(t, r, 4294967293, now) // fills one inside the gap
		r.Flush(now)
		expect(t, c, "E4294967290/2", "E1/2", "E4294967293/2", "LOST4294967291-4294967292x2", "LOST4294967294-4294967295x2")
	})
	t.Run("out of order across the wrap", func(t *testing.T) {
		r, c := newTestReassembler()
		now := t0
		pushEvent(t, r, 4294967295, now)
		pushEvent(t, r, 2, now)
		pushEvent(t, r, 1, now)
		r.Flush(now + 60*sec)
		expect(t, c, "E4294967295/2", "E2/2", "E1/2")
	})
}

func TestReassembleFlush(t *testing.T) {
	r, c := newTestReassembler()
	now := t0
	pushEvent(t, r, 100, now)
	push(t, r, TypeSyscall, 103, `arch=c000003e syscall=1`, now)
	push(t, r, TypeSyscall, 102, `arch=c000003e syscall=1`, now)
	push(t, r, TypeCwd, 103, `cwd="/"`, now)
	expect(t, c, "E100/2")
	r.Flush(now) // before any timeout
	expect(t, c, "T103/2", "T102/1", "LOST101-101x1")
	r.Flush(now)
	expect(t, c)
}

func TestReassembleMalformed(t *testing.T) {
	r, c := newTestReassembler()
	now := t0
	pushEvent(t, r, 10, now)
	bad := []byte("type=SYSCALL garbage pid=1")
	err := r.Push(TypeSyscall, bad, now)
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("Push(malformed) = %v, want ErrMalformed", err)
	}
	err = r.Push(TypeEOE, []byte("audit(1732250000.123:): "), now)
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("Push(malformed EOE) = %v, want ErrMalformed", err)
	}
	evs := expect(t, c, "E10/2", "T0/1", "T0/1")
	if string(evs[1].Records[0].Text) != string(bad) || evs[1].Received != now || evs[1].Kind != KindEvent {
		t.Errorf("malformed event %+v", evs[1])
	}
	pushEvent(t, r, 11, now)
	expect(t, c, "E11/2")
}

func TestReassembleSerialZero(t *testing.T) {
	r, c := newTestReassembler()
	now := t0
	pushEvent(t, r, 10, now)
	push(t, r, 1305, 0, `op=set audit_pid=42 old=0 auid=0 ses=1 res=1`, now)
	push(t, r, 1305, 0, `op=set audit_pid=43 old=42 auid=0 ses=1 res=1`, now)
	pushEvent(t, r, 11, now)
	expect(t, c, "E10/2", "T0/1", "T0/1", "E11/2")
	r.Flush(now + 60*sec)
	expect(t, c)
}

func TestReassembleEOEOnly(t *testing.T) {
	r, c := newTestReassembler()
	now := t0
	push(t, r, TypeEOE, 50, "", now)
	evs := expect(t, c, "E50/1")
	if evs[0].Records[0].Type != TypeEOE {
		t.Errorf("records %+v", evs[0].Records)
	}
}

func TestReassembleLost(t *testing.T) {
	r, c := newTestReassembler()
	r.Lost(Lost{Reason: LostKernel, Count: 7}, t0+int64(1500*time.Millisecond))
	evs := expect(t, c, "LOST0-0x7?kernel")
	if evs[0].Sec != 1732250001 || evs[0].Msec != 500 || !evs[0].EOE {
		t.Errorf("lost event %+v", evs[0])
	}
}

// TestReassembleManyGaps checks the bound on remembered ranges: beyond maxMissing the oldest are reported
// at the next Tick, and every missing serial is reported exactly once.
func TestReassembleManyGaps(t *testing.T) {
	r, c := newTestReassembler()
	now := t0
	s := uint32(1)
	for i := 0; i < maxMissing+10; i++ {
		push(t, r, 1112, s, `msg='x'`, now)
		s += 2
	}
	c.take()
	r.Tick(now + 1)
	evs := c.take()
	if len(evs) != 9 {
		t.Errorf("%d ranges reported early, want 9", len(evs))
	}
	r.Flush(now + 2)
	evs = append(evs, c.take()...)
	var total uint64
	for _, ev := range evs {
		total += ev.Lost.Count
	}
	if total != maxMissing+9 {
		t.Errorf("%d serials reported lost, want %d", total, maxMissing+9)
	}
}

// typicalEvent is a 5-record openat event as the kernel sends it.
func typicalEvent(serial uint32) [][2]any {
	return [][2]any{
		{uint16(TypeSyscall), stamp(serial, `arch=c000003e syscall=257 success=yes exit=3 a0=ffffff9c a1=7f5e1c2b3e10 a2=80000 a3=0 items=1 ppid=812 pid=813 auid=1000 uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 comm="cat" exe="/usr/bin/cat" subj=unconfined key="files"`)},
		{uint16(TypeCwd), stamp(serial, `cwd="/home/user"`)},
		{uint16(TypePath), stamp(serial, `item=0 name="/etc/passwd" inode=1835066 dev=08:01 mode=0100644 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0`)},
		{uint16(TypeProctitle), stamp(serial, `proctitle=636174002F6574632F706173737764`)},
		{uint16(TypeEOE), stamp(serial, ``)},
	}
}

func TestReassembleAllocs(t *testing.T) {
	var n int
	r := NewReassembler(func(ev *RawEvent) { n += len(ev.Records) })
	const events = 500 // more than warm-up plus AllocsPerRun's runs, so serials only move forward
	var types []uint16
	var texts [][]byte
	for i := 0; i < events; i++ {
		for _, rec := range typicalEvent(uint32(i + 1)) {
			types = append(types, rec[0].(uint16))
			texts = append(texts, []byte(rec[1].(string)))
		}
	}
	i := 0
	pushOne := func() {
		for k := 0; k < 5; k++ {
			if err := r.Push(types[i], texts[i], t0); err != nil {
				t.Fatal(err)
			}
			i++
		}
	}
	for k := 0; k < 50; k++ {
		pushOne()
	}
	allocs := testing.AllocsPerRun(200, pushOne)
	if n != 4*(50+201) {
		t.Fatalf("%d records emitted, want %d", n, 4*(50+201))
	}
	// Was 1 (a *pending per event); now 0. Any allocation per event on the netlink reader's path is a
	// regression.
	if allocs > 0.5 {
		t.Errorf("%.2f allocations per 5-record event; want 0", allocs)
	}
}

// TestReassembleResume: a run that continues the archive's previous run of the same boot reports the
// serials issued while no daemon was registered as one no_daemon LOST, from the previous run's last leaf
// to its first record; held records (the kernel's hold queue) arriving first fill it; no silent range.
func TestReassembleResume(t *testing.T) {
	since := t0 - 30*sec
	t.Run("gap", func(t *testing.T) {
		r, c := newTestReassembler()
		r.Resume(100, since, nil, t0)
		pushEvent(t, r, 150, t0)
		pushEvent(t, r, 151, t0)
		r.Tick(t0 + int64(r.Grace))
		evs := expect(t, c, "E150/2", "E151/2", "LOST101-149x49?no_daemon")
		if l := evs[2]; l.Received != t0 || l.Time().UnixNano() != since || l.Lost.Reason.Unit() != "events" {
			t.Errorf("no_daemon LOST received %d (want %d), kernel time %d (want %d)", l.Received, t0, l.Time().UnixNano(), since)
		}
		// A later gap inside the run is a serial gap again.
		pushEvent(t, r, 155, t0+10*sec)
		r.Flush(t0 + 20*sec)
		expect(t, c, "E155/2", "LOST152-154x3")
	})
	t.Run("held records fill it", func(t *testing.T) {
		r, c := newTestReassembler()
		r.Resume(100, since, nil, t0)
		for s := uint32(101); s <= 110; s++ { // the hold queue is delivered first, in order
			pushEvent(t, r, s, t0)
		}
		r.Flush(t0 + 10*sec)
		if got := describe(c.take()); len(got) != 10 || got[0] != "E101/2" || got[9] != "E110/2" {
			t.Errorf("emitted %v, want the ten held events and no LOST", got)
		}
	})
	t.Run("partly filled, late arrivals", func(t *testing.T) {
		r, c := newTestReassembler()
		r.Resume(100, since, nil, t0)
		pushEvent(t, r, 110, t0)
		pushEvent(t, r, 103, t0+sec) // an event in flight at the restart
		r.Tick(t0 + int64(r.Grace))
		expect(t, c, "E110/2", "E103/2", "LOST101-102x2?no_daemon", "LOST104-109x6?no_daemon")
	})
	t.Run("counter restarted", func(t *testing.T) {
		r, c := newTestReassembler()
		r.Resume(5000, since, nil, t0) // the first serial is not after the last archived one: not this boot
		pushEvent(t, r, 7, t0)
		pushEvent(t, r, 9, t0)
		r.Flush(t0 + 10*sec)
		expect(t, c, "E7/2", "E9/2", "LOST8-8x1")
	})
}
