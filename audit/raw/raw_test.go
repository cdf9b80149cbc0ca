package raw

import "testing"

// TestPartial: an event is partial when records of a syscall's exit came without the EOE that always
// ends them, or an EOE came without the SYSCALL record; standalone records and late fragments are not.
func TestPartial(t *testing.T) {
	rec := func(types ...uint16) []Record {
		var rs []Record
		for _, typ := range types {
			text := "audit(1.000:1): x"
			switch typ {
			case 1300:
				text = "audit(1.000:1): arch=c000003e syscall=257 success=yes exit=3 items=1 ppid=1 pid=2"
			case 1302:
				text = `audit(1.000:1): item=0 name="/etc/hosts" inode=12 dev=08:01 nametype=NORMAL`
			case 1303: // (a PATH of an fd, no name looked up: written as type 1302 below)
				return append(rs, Record{Type: 1302, Text: []byte("audit(1.000:1): item=0 name=(null) inode=12 dev=08:01 nametype=NORMAL")})
			}
			rs = append(rs, Record{Type: typ, Text: []byte(text)})
		}
		return rs
	}
	for _, tc := range []struct {
		name string
		ev   Event
		want bool
	}{
		{"syscall with EOE", Event{Kind: KindEvent, EOE: true, Records: rec(1300, 1307, 1302, 1327)}, false},
		{"syscall with EOE, PATH lost", Event{Kind: KindEvent, EOE: true, Records: rec(1300, 1307, 1327)}, true},
		{"syscall with EOE, PROCTITLE lost", Event{Kind: KindEvent, EOE: true, Records: rec(1300, 1307, 1302)}, true},
		{"syscall with EOE, CWD lost", Event{Kind: KindEvent, EOE: true, Records: rec(1300, 1302, 1327)}, true},
		{"fd syscall: no name, no CWD", Event{Kind: KindEvent, EOE: true, Records: append(rec(1300), append(rec(1303), rec(1327)...)...)}, false},
		{"syscall without EOE", Event{Kind: KindEvent, Records: rec(1300, 1307)}, true},
		{"path and proctitle only, no EOE", Event{Kind: KindEvent, Records: rec(1302, 1327)}, true},
		{"EOE without SYSCALL", Event{Kind: KindEvent, EOE: true, Records: rec(1309, 1302)}, true},
		{"EOE alone", Event{Kind: KindEvent, EOE: true, Records: rec(1320)}, true},
		{"user message", Event{Kind: KindEvent, Records: rec(1112)}, false},
		{"config change alone", Event{Kind: KindEvent, Records: rec(1305)}, false},
		{"seccomp alone", Event{Kind: KindEvent, Records: rec(1326)}, false},
		{"late fragment", Event{Kind: KindEvent, Late: true, Records: rec(1302)}, false},
		{"LOST", Event{Kind: KindLost, Lost: Lost{Reason: LostKernel, Count: 3}}, false},
	} {
		if got := tc.ev.Partial(); got != tc.want {
			t.Errorf("%s: Partial = %v, want %v", tc.name, got, tc.want)
		}
	}
	if LostKernel.Unit() != UnitRecords || LostGap.Unit() != UnitEvents || LostUnregistered.Unit() != UnitEvents || LostUnregistered.String() != "no_daemon" {
		t.Errorf("units: kernel %s, serial_gap %s, %s %s", LostKernel.Unit(), LostGap.Unit(), LostUnregistered, LostUnregistered.Unit())
	}
}
