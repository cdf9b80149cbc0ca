package raw

import "testing"

// TestPartial: an event is partial when records of a syscall's exit came without the EOE that always
// ends them, or an EOE came without the SYSCALL record; standalone records and late fragments are not.
func TestPartial(t *testing.T) {
	rec := func(types ...uint16) []Record {
		var rs []Record
		for _, typ := range types {
			rs = append(rs, Record{Type: typ, Text: []byte("audit(1.000:1): x")})
		}
		return rs
	}
	for _, tc := range []struct {
		name string
		ev   Event
		want bool
	}{
		{"syscall with EOE", Event{Kind: KindEvent, EOE: true, Records: rec(1300, 1307, 1302, 1327)}, false},
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
