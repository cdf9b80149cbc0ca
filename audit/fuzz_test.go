package audit

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Fuzz targets. Seeds come from the table tests; crashers the fuzzer finds are kept in
// testdata/fuzz/FuzzX/ and run by every `go test`.

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte(stamp(4567, "arch=c000003e syscall=59")))
	f.Add([]byte("audit(1732250000.123:4294967295): "))
	f.Add([]byte("audit(1732250000.123:4294967296): "))
	f.Add([]byte("audit(9223372036854775808.123:1): "))
	f.Add([]byte("audit(1732250000.1234:1): "))
	f.Add([]byte("audit(1.1:1)"))
	f.Fuzz(func(t *testing.T, text []byte) {
		h, off, err := ParseHeader(text)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if off != 0 || h != (Header{}) {
				t.Fatalf("error with header %+v off %d", h, off)
			}
			return
		}
		if off < len("audit(0.0:0)") || off > len(text) {
			t.Fatalf("offset %d of %d", off, len(text))
		}
		if h.Sec < 0 || h.Msec < 0 || h.Msec > 999 {
			t.Fatalf("header %+v", h)
		}
		// The stamp names the same numbers once leading zeros are dropped.
		stamp := string(text[:off])
		var sec int64
		var ms int32
		var ser uint32
		if _, err := fmt.Sscanf(stamp, "audit(%d.%d:%d)", &sec, &ms, &ser); err != nil ||
			(Header{sec, ms, ser}) != h {
			t.Fatalf("stamp %q parsed as %+v; Sscanf gives %d %d %d %v", stamp, h, sec, ms, ser, err)
		}
	})
}

func FuzzFields(f *testing.F) {
	for _, tc := range decodeTests {
		for _, r := range tc.recs {
			_, off, err := ParseHeader(r.Text)
			if err == nil {
				f.Add(r.Text[off:])
			}
		}
	}
	f.Add([]byte("msg='op=x res=success'\x00"))
	f.Add([]byte("a=1 b=\"x c\" d='e f' g h= =i\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		n := 0
		var first = map[string][]byte{}
		for fl := NewFields(body); fl.Next(); {
			n++
			if n > len(body) {
				t.Fatalf("%d pairs from %d bytes", n, len(body))
			}
			if bytes.IndexByte(fl.Key, '=') >= 0 || bytes.ContainsAny(fl.Key, " \n\x00") {
				t.Fatalf("key %q", fl.Key)
			}
			if !within(body, fl.Key) || !within(body, fl.Value) {
				t.Fatalf("key %q or value %q is not part of the body", fl.Key, fl.Value)
			}
			if len(fl.Value) > 0 && fl.Value[0] != '"' && fl.Value[0] != '\'' && bytes.ContainsAny(fl.Value, " \n\x00") {
				t.Fatalf("unquoted value %q holds a separator", fl.Value)
			}
			if _, ok := first[string(fl.Key)]; !ok {
				first[string(fl.Key)] = fl.Value
			}
		}
		for k, v := range first {
			got, ok := Lookup(body, k)
			if !ok || !bytes.Equal(got, v) {
				t.Fatalf("Lookup(%q) = %q, %v; iteration gave %q", k, got, ok, v)
			}
		}
	})
}

// within reports whether sub is a subslice of b (or empty).
func within(b, sub []byte) bool {
	if len(sub) == 0 {
		return true
	}
	for i := range b {
		if &b[i] == &sub[0] {
			return i+len(sub) <= len(b)
		}
	}
	return false
}

// fuzzTypes are the record types a fuzzed record can take: a byte of the fuzz input picks one.
var fuzzTypes = []uint16{TypeSyscall, TypeExecve, TypePath, TypeCwd, TypeSockaddr, TypeProctitle, TypeObjPID,
	TypeEOE, 1112, 1305, 1999, 2100}

// fuzzRecords turns a fuzz input into records: text is split at '\n'; kinds[i] picks record i's type
// from fuzzTypes and, with its high bit clear, prefixes a valid stamp.
func fuzzRecords(kinds []byte, text string) []Record {
	var out []Record
	for i, body := range strings.Split(text, "\n") {
		k := byte(0)
		if len(kinds) > 0 {
			k = kinds[i%len(kinds)]
		}
		t := fuzzTypes[int(k&0x7f)%len(fuzzTypes)]
		if k&0x80 == 0 {
			body = stamp(77, body)
		}
		out = append(out, Record{Type: t, Text: []byte(body)})
	}
	return out
}

func FuzzDecode(f *testing.F) {
	addEvent := func(rs []Record) {
		var kinds []byte
		var bodies []string
		for _, r := range rs {
			k := byte(0x80)
			for i, t := range fuzzTypes {
				if t == r.Type {
					k = byte(i)
				}
			}
			body := string(r.Text)
			if k < 0x80 {
				if _, off, err := ParseHeader(r.Text); err == nil {
					body = body[off:]
				} else {
					k |= 0x80
				}
			}
			kinds = append(kinds, k)
			bodies = append(bodies, body)
		}
		f.Add(kinds, strings.Join(bodies, "\n"))
	}
	for _, tc := range decodeTests {
		addEvent(tc.recs)
	}
	for _, tc := range sockaddrTests {
		addEvent(recs(1, TypeSockaddr, "saddr="+tc.saddr))
	}
	long := bytes.Repeat([]byte("a b"), 3000)
	for _, bodies := range [][]string{kernelExecve([][]byte{[]byte("x"), long, {0xff}}), kernelExecve(nil)} {
		var pairs []any
		for _, b := range bodies {
			pairs = append(pairs, TypeExecve, b)
		}
		addEvent(recs(1, pairs...))
	}
	f.Fuzz(func(t *testing.T, kinds []byte, text string) {
		rs := fuzzRecords(kinds, text)
		ev := &RawEvent{Kind: KindEvent, Serial: 77, Sec: testSec, Msec: testMsec, EOE: len(kinds)%2 == 0, Records: rs}
		got := Decode(ev)
		checkRecords(t, got, ev)
		if got.Type != "event" || got.Seq != 77 {
			t.Fatalf("type %q seq %d", got.Type, got.Seq)
		}
		if got.Argc != nil && len(got.Args) < *got.Argc {
			t.Fatalf("argc %d but %d args", *got.Argc, len(got.Args))
		}
		if got.ArgsHex != nil && len(got.ArgsHex) != len(got.Args) {
			t.Fatalf("%d args, %d hex", len(got.Args), len(got.ArgsHex))
		}
		if _, err := json.Marshal(got); err != nil {
			t.Fatalf("json: %v", err)
		}
	})
}

func FuzzSockaddr(f *testing.F) {
	for _, tc := range sockaddrTests {
		b, _ := hex.DecodeString(tc.saddr)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sa := DecodeSockaddr(b)
		if sa == nil || sa.Family == "" {
			t.Fatalf("DecodeSockaddr(%x) = %+v", b, sa)
		}
		if sa.Raw != "" && sa.Raw != hex.EncodeToString(b) {
			t.Fatalf("raw %q for %x", sa.Raw, b)
		}
		decoded := sa.Addr != "" || sa.Port != nil || sa.Path != "" || sa.Abstract || sa.NLPid != nil
		if sa.Raw == "" && !decoded && !(len(b) >= 2 && b[0] == afUnix && b[1] == 0) && len(b) != 0 {
			t.Fatalf("%x decoded to nothing: %+v", b, sa)
		}
		if _, err := json.Marshal(sa); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzReassembler drives a Reassembler with a fuzzed sequence of pushes and ticks and checks that nothing
// is dropped or counted twice.
//
// ops is read as a program: a base serial (4 bytes), then instructions. An instruction byte op:
//   - op&7 == 7: Tick after (next byte)·50 ms;
//   - otherwise push a record of type fuzzTypes[op>>3 % n], serial base+int8(next byte) (relative, so
//     runs stay near the base and can cross the wrap), malformed when op&7 == 6.
//
// The receive clock moves 1 ns per push so that every push and report has its own time.
func FuzzReassembler(f *testing.F) {
	seed := func(base uint32, prog ...byte) {
		b := binary.BigEndian.AppendUint32(nil, base)
		f.Add(append(b, prog...))
	}
	sys, eoe, path, user := byte(0<<3), byte(7<<3), byte(2<<3), byte(8<<3)
	seed(10, sys, 0, sys, 1, path, 0, path, 1, eoe, 1, eoe, 0)                      // interleaved
	seed(10, sys, 0, eoe, 0, sys, 2, eoe, 2, sys, 1, eoe, 1, 7, 200)                // out of order
	seed(20, sys, 0, eoe, 0, sys, 3, eoe, 3, 7, 120, sys, 1, eoe, 1, sys, 0, 7, 30) // gap, late
	seed(4294967294, sys, 0, eoe, 0, sys, 1, eoe, 1, sys, 3, eoe, 3, 7, 200)        // wrap: ..., 2^32-1, 1
	seed(4294967294, sys, 0, eoe, 0, sys, 4, eoe, 4, 7, 200)                        // wrap gap
	seed(5, user, 0, user, 1, 6, 0, sys, 2, 7, 30, eoe, 2)                          // standalone, malformed, timeout
	seed(1, sys, 0, sys, 1, sys, 2, sys, 3, 7, 10, 7, 10, 7, 100)
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) < 4 {
			return
		}
		base := binary.BigEndian.Uint32(prog)
		prog = prog[4:]

		type emitted struct {
			ev *RawEvent
			at int64 // the op clock when it was emitted
		}
		var out []emitted
		now := t0
		r := NewReassembler(func(ev *RawEvent) { out = append(out, emitted{copyEvent(ev), now}) })

		pushed := map[string]uint16{} // text -> type; texts are unique
		pushedAt := map[uint32][]int64{}
		var order []string
		for i := 0; i+1 < len(prog); i += 2 {
			op, arg := prog[i], prog[i+1]
			if op&7 == 7 {
				now += int64(arg) * 50e6
				r.Tick(now)
				continue
			}
			now++
			typ := fuzzTypes[int(op>>3)%len(fuzzTypes)]
			serial := base + uint32(int32(int8(arg)))
			text := stamp(serial, fmt.Sprintf("op=%d x=1", i))
			if op&7 == 6 {
				text = fmt.Sprintf("bad(%d): op=%d", serial, i)
			}
			err := r.Push(typ, []byte(text), now)
			if op&7 == 6 {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("malformed push returned %v", err)
				}
			} else {
				if err != nil {
					t.Fatalf("push: %v", err)
				}
				pushedAt[serial] = append(pushedAt[serial], now)
			}
			pushed[text] = typ
			order = append(order, text)
		}
		now += 1
		r.Flush(now)

		// Conservation: every record pushed appears in exactly one event, except an EOE, which closes its
		// event and appears only when it arrived alone (at most once).
		seen := map[string]int{}
		nonLate := map[uint32]int{}
		var lost []emitted
		for _, e := range out {
			ev := e.ev
			if ev.Kind == KindLost {
				lost = append(lost, e)
				continue
			}
			if ev.Late == false && ev.Serial != 0 {
				nonLate[ev.Serial]++
			}
			for _, rec := range ev.Records {
				text := string(rec.Text)
				typ, ok := pushed[text]
				if !ok || typ != rec.Type {
					t.Fatalf("emitted record %d %q was never pushed", rec.Type, text)
				}
				seen[text]++
				h, _, err := ParseHeader(rec.Text)
				if err == nil && h.Serial != ev.Serial || err != nil && (ev.Serial != 0 || len(ev.Records) != 1) {
					t.Fatalf("record %q in event of serial %d", text, ev.Serial)
				}
			}
		}
		for _, text := range order {
			n := seen[text]
			if pushed[text] == TypeEOE {
				if _, _, err := ParseHeader([]byte(text)); err == nil && n > 1 {
					t.Fatalf("EOE %q emitted %d times", text, n)
				} else if err != nil && n != 1 {
					t.Fatalf("malformed EOE %q emitted %d times", text, n)
				}
				continue
			}
			if n != 1 {
				t.Fatalf("record %q emitted %d times, want once", text, n)
			}
		}
		for s, n := range nonLate {
			if n > 1 {
				t.Fatalf("serial %d emitted %d times without Late", s, n)
			}
		}

		// Losses: counted right, never overlapping, never a serial received before the report; and a
		// serial received after its report is Late.
		for i, l := range lost {
			ll := l.ev.Lost
			if ll.Reason != LostGap || ll.Count != span(ll.First, ll.Last) || ll.Count == 0 {
				t.Fatalf("lost %+v", ll)
			}
			for j := 0; j < i; j++ {
				o := lost[j].ev.Lost
				if inRange(o.First, ll.First, ll.Last) || inRange(ll.First, o.First, o.Last) {
					t.Fatalf("lost ranges overlap: %+v and %+v", o, ll)
				}
			}
			for s, ats := range pushedAt {
				if s == 0 || !inRange(s, ll.First, ll.Last) {
					continue
				}
				if ats[0] < l.at {
					t.Fatalf("serial %d pushed at %d reported lost at %d (%+v)", s, ats[0], l.at, ll)
				}
			}
			for _, e := range out {
				if e.ev.Kind == KindEvent && e.ev.Serial != 0 && inRange(e.ev.Serial, ll.First, ll.Last) &&
					e.ev.Received > l.at && !e.ev.Late {
					t.Fatalf("serial %d received after its loss report is not Late", e.ev.Serial)
				}
			}
		}
	})
}

// inRange reports whether s lies in the wrap-aware inclusive range lo..hi.
func inRange(s, lo, hi uint32) bool {
	if lo <= hi {
		return s >= lo && s <= hi
	}
	return s >= lo || s <= hi
}
