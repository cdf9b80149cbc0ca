package audit

import (
	"fmt"
	"strconv"
	"strings"
)

// Shared test helpers: records built in exactly the kernel's text format.

// testSec and testMsec are the kernel timestamp used by the table tests (2024-11-22T04:33:20.123Z).
const (
	testSec  = 1732250000
	testMsec = 123
)

// stamp returns the kernel's record text "audit(SEC.MSEC:SERIAL): BODY".
func stamp(serial uint32, body string) string {
	return fmt.Sprintf("audit(%d.%03d:%d): %s", testSec, testMsec, serial, body)
}

// recs builds Records for one event from (type, body) pairs sharing a serial.
func recs(serial uint32, pairs ...any) []Record {
	var out []Record
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, Record{Type: uint16(pairs[i].(int)), Text: []byte(stamp(serial, pairs[i+1].(string)))})
	}
	return out
}

// rawEvent wraps records in a RawEvent as the reassembler would emit it (closed by EOE).
func rawEvent(serial uint32, rs []Record) *RawEvent {
	return &RawEvent{Kind: KindEvent, Serial: serial, Sec: testSec, Msec: testMsec, EOE: true, Records: rs}
}

// copyEvent deep-copies an emitted event: the reassembler reuses it after Emit returns.
func copyEvent(ev *RawEvent) *RawEvent { return ev.Clone() }

// hexUpper encodes b as the kernel does (audit_log_n_hex writes upper case).
func hexUpper(b []byte) string { return strings.ToUpper(fmt.Sprintf("%x", b)) }

// kernelContainsControl is audit_string_contains_control: a byte that forces hex encoding.
func kernelContainsControl(b []byte) bool {
	for _, c := range b {
		if c == '"' || c < 0x21 || c > 0x7e {
			return true
		}
	}
	return false
}

// kernelExecve is a port of audit_log_execve_info (kernel/auditsc.c) with MAX_EXECVE_AUDIT_LEN = 7500:
// it returns the bodies of the EXECVE records the kernel writes for argv, including the aN_len/aN[i]
// chunking of long arguments and the spill into further records.
func kernelExecve(argv [][]byte) []string {
	const lenMax = 7500
	const abufSize = 96
	var bodies []string
	var ab strings.Builder
	ab.WriteString("argc=" + strconv.Itoa(len(argv)))
	if len(argv) == 0 {
		return []string{ab.String()}
	}
	lenRem := lenMax
	var buf []byte // bytes of the current argument read but not yet logged
	lenFull, lenAbuf := 0, 0
	requireData, encode := true, false
	iter, arg, off := 0, 0, 0
	for arg < len(argv) {
		if lenFull == 0 {
			lenFull = len(argv[arg])
		}
		if requireData {
			room := lenMax - len(buf)
			src := argv[arg][off:]
			n := len(src)
			if n >= room { // strncpy_from_user filled the buffer
				n = room
				requireData, encode = true, true
				lenFull *= 2
				off += n
			} else {
				requireData = false
				if !encode {
					encode = kernelContainsControl(append(append([]byte(nil), buf...), src...))
				}
				if lenFull < lenMax {
					if encode {
						lenFull = (len(buf) + n) * 2
					} else {
						lenFull = len(buf) + n
					}
				}
			}
			buf = append(buf, src[:n]...)
			if encode {
				lenAbuf = len(buf) * 2
			} else {
				lenAbuf = len(buf) + 2
			}
		}
		if abufSize+8 > lenRem {
			lenRem = lenMax
			bodies = append(bodies, ab.String())
			ab.Reset()
		}
		var head string
		if requireData || iter > 0 || lenAbuf+abufSize > lenRem {
			if iter == 0 {
				head += fmt.Sprintf(" a%d_len=%d", arg, lenFull)
			}
			head += fmt.Sprintf(" a%d[%d]=", arg, iter)
			iter++
		} else {
			head = fmt.Sprintf(" a%d=", arg)
		}
		ab.WriteString(head)
		lenRem -= len(head)
		n := len(buf)
		if encode {
			if lenAbuf > lenRem {
				n = lenRem / 2
			}
			ab.WriteString(hexUpper(buf[:n]))
			lenRem -= n * 2
			lenAbuf -= n * 2
		} else {
			if lenAbuf > lenRem {
				n = lenRem - 2
			}
			ab.WriteString(`"` + string(buf[:n]) + `"`)
			lenRem -= n + 2
			lenAbuf -= n
		}
		buf = buf[n:]
		if len(buf) == 0 && !requireData {
			arg++
			iter, lenFull, off = 0, 0, 0
			requireData, encode = true, false
			buf = nil
		}
	}
	return append(bodies, ab.String())
}
