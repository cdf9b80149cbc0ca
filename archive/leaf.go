package archive

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/auditarch/auditarch/audit/raw"
)

// LeafKind is the first byte of every leaf (docs/format.md, "Leaves").
type LeafKind byte

// Leaf kinds. Event and LOST leaves carry the kernel records; the others are control leaves with a time
// and a JSON body.
const (
	LeafEvent     LeafKind = 1  // one reassembled kernel event, records verbatim
	LeafLost      LeafKind = 2  // events that could not be kept, with reason and count
	LeafStart     LeafKind = 16 // a daemon run begins; names the first epoch key; signed by the identity key
	LeafStop      LeafKind = 17 // a daemon run ends cleanly
	LeafKey       LeafKind = 18 // introduces the next epoch key
	LeafHeartbeat LeafKind = 19 // nothing else happened for a heartbeat interval
	LeafClock     LeafKind = 20 // the wall clock was stepped
	LeafSeal      LeafKind = 21 // the last leaf of a sealed segment: its summary
	LeafPolicy    LeafKind = 22 // a protection event: an attempt on the daemon, denied, frozen, restored or recorded
)

var leafNames = map[LeafKind]string{
	LeafEvent: "EVENT", LeafLost: "LOST", LeafStart: "START", LeafStop: "STOP", LeafKey: "KEY",
	LeafHeartbeat: "HEARTBEAT", LeafClock: "CLOCK", LeafSeal: "SEAL", LeafPolicy: "POLICY",
}

// Known reports whether k is a leaf kind of this format version.
func (k LeafKind) Known() bool {
	_, ok := leafNames[k]
	return ok
}

func (k LeafKind) String() string {
	if n, ok := leafNames[k]; ok {
		return n
	}
	return fmt.Sprintf("leaf(%d)", byte(k))
}

// Control reports whether k is a control leaf (time + JSON body).
func (k LeafKind) Control() bool { return k >= LeafStart }

// Start is the body of a START leaf.
type Start struct {
	Version  string `json:"version"`
	Origin   string `json:"origin"`
	Identity string `json:"identity"` // the host identity verifier key (note format)
	EpochKey string `json:"epoch_key"`
	Epoch    uint64 `json:"epoch"` // epoch number of EpochKey; epochs count across runs
	PID      int    `json:"pid"`
	Hostname string `json:"hostname,omitempty"`
	BootID   string `json:"boot_id,omitempty"`
	// ConfigDigest is the SHA-256 of the daemon's effective configuration and rules.
	ConfigDigest string `json:"config_digest,omitempty"`
	// Kernel is the kernel's audit status at start (enabled, failure, pid, lost, backlog...).
	Kernel map[string]uint32 `json:"kernel,omitempty"`
	// Intervals the writer promises, so that verify can tell a silence from a quiet period.
	CheckpointMillis int64 `json:"checkpoint_ms"`
	HeartbeatMillis  int64 `json:"heartbeat_ms"`
	EpochMillis      int64 `json:"epoch_ms"`
	SegmentMillis    int64 `json:"segment_ms"`
	// Recovered describes the previous run's tail when it did not end with STOP (a crash).
	Recovered *Recovery `json:"recovered,omitempty"`
}

// Recovery is what a starting writer found at the end of an archive whose last run did not stop cleanly.
type Recovery struct {
	Segment string `json:"segment"` // file name of the segment it ended in
	// Unsigned is the number of leaves after that segment's last checkpoint. A writer signs every block
	// it makes durable, so it is 0 unless someone appended leaves; the verifier reports them as unsigned
	// and never counts them as verified (this START's checkpoint does not vouch for them).
	Unsigned uint64 `json:"unsigned"`
	// TornOffset and TornBytes locate a block that was being written when the writer stopped (0: none).
	TornOffset int64 `json:"torn_offset,omitempty"`
	TornBytes  int64 `json:"torn_bytes,omitempty"`
	Sealed     bool  `json:"sealed,omitempty"` // the segment was sealed, the run ended between segments
}

// Stop is the body of a STOP leaf.
type Stop struct {
	Reason string `json:"reason"`
	Events uint64 `json:"events"` // leaves appended by this run
}

// Key is the body of a KEY leaf.
type Key struct {
	EpochKey string `json:"epoch_key"`
	Epoch    uint64 `json:"epoch"`
}

// Heartbeat is the body of a HEARTBEAT leaf.
type Heartbeat struct {
	Events uint64 `json:"events"` // leaves appended by this run so far
}

// Clock is the body of a CLOCK leaf: the wall clock moved by StepNanos more than the monotonic clock.
type Clock struct {
	StepNanos int64 `json:"step_ns"`
}

// Seal is the body of a SEAL leaf, the last leaf of a sealed segment. Because it is a leaf, the final
// checkpoint signs it: the segment's summary cannot be altered without breaking that signature.
type Seal struct {
	Segment     uint64 `json:"segment"`
	FirstIndex  uint64 `json:"first_index"`
	Leaves      uint64 `json:"leaves"` // leaves in the segment, this one included
	FirstTime   int64  `json:"first_time"`
	LastTime    int64  `json:"last_time"`
	Checkpoints uint64 `json:"checkpoints"` // how many checkpoints the segment holds before this leaf
	// Next is true when a following segment was started (rotation); false at a clean stop.
	Next bool `json:"next"`
}

// Policy is the body of a POLICY leaf (raw.Policy: the decoded view shows it too).
type (
	Policy  = raw.Policy
	Process = raw.Process
)

// Leaf is a decoded leaf. For event and LOST leaves Event is set (its record texts alias the leaf
// bytes); for control leaves Time and Body.
type Leaf struct {
	Kind  LeafKind
	Time  int64 // unix nanoseconds: when the event was received, or when the control leaf was written
	Event raw.Event
	Body  []byte // JSON body of a control leaf
}

// AppendEventLeaf appends the leaf of ev: u8 kind (1 event, 2 LOST), u8 flags (1 EOE, 2 late),
// u32 serial, i64 sec, i32 msec, i64 received ns, [LOST: u8 reason, u64 count, u32 first, u32 last],
// uvarint record count, records (u16 type, uvarint length, text). Little endian.
func AppendEventLeaf(b []byte, ev *raw.Event) []byte {
	var flags byte
	if ev.EOE {
		flags |= 1
	}
	if ev.Late {
		flags |= 2
	}
	le := binary.LittleEndian
	kind := LeafEvent
	if ev.Kind == raw.KindLost {
		kind = LeafLost
	}
	b = append(b, byte(kind), flags)
	b = le.AppendUint32(b, ev.Serial)
	b = le.AppendUint64(b, uint64(ev.Sec))
	b = le.AppendUint32(b, uint32(ev.Msec))
	b = le.AppendUint64(b, uint64(ev.Received))
	if kind == LeafLost {
		b = append(b, byte(ev.Lost.Reason))
		b = le.AppendUint64(b, ev.Lost.Count)
		b = le.AppendUint32(b, ev.Lost.First)
		b = le.AppendUint32(b, ev.Lost.Last)
	}
	b = binary.AppendUvarint(b, uint64(len(ev.Records)))
	for _, r := range ev.Records {
		b = le.AppendUint16(b, r.Type)
		b = binary.AppendUvarint(b, uint64(len(r.Text)))
		b = append(b, r.Text...)
	}
	return b
}

// AppendControlLeaf appends a control leaf: u8 kind, i64 unix ns, JSON body.
func AppendControlLeaf(b []byte, kind LeafKind, t int64, body any) []byte {
	b = append(b, byte(kind))
	b = binary.LittleEndian.AppendUint64(b, uint64(t))
	js, err := json.Marshal(body)
	if err != nil {
		panic(err) // bodies are plain structs
	}
	return append(b, js...)
}

// DecodeLeaf decodes leaf bytes into l. Record texts and Body alias p.
func DecodeLeaf(p []byte, l *Leaf) error {
	if len(p) == 0 {
		return errors.New("empty leaf")
	}
	if len(p) > MaxLeaf {
		return fmt.Errorf("leaf of %d bytes is beyond the format's limit of %d", len(p), MaxLeaf)
	}
	l.Kind = LeafKind(p[0])
	l.Body = nil
	if l.Kind.Control() {
		if !l.Kind.Known() {
			return fmt.Errorf("unknown leaf kind %d", p[0])
		}
		if len(p) < 9 {
			return fmt.Errorf("%s leaf too short", l.Kind)
		}
		l.Time = int64(binary.LittleEndian.Uint64(p[1:]))
		l.Body = p[9:]
		if !json.Valid(l.Body) {
			return fmt.Errorf("%s leaf body is not JSON", l.Kind)
		}
		return nil
	}
	if err := decodeEventLeaf(p, &l.Event); err != nil {
		return err
	}
	l.Time = l.Event.Received
	return nil
}

func decodeEventLeaf(p []byte, ev *raw.Event) error {
	le := binary.LittleEndian
	const fixed = 1 + 1 + 4 + 8 + 4 + 8
	if len(p) < fixed {
		return errors.New("event leaf too short")
	}
	*ev = raw.Event{Records: ev.Records[:0]}
	switch LeafKind(p[0]) {
	case LeafEvent:
		ev.Kind = raw.KindEvent
	case LeafLost:
		ev.Kind = raw.KindLost
	default:
		return fmt.Errorf("unknown leaf kind %d", p[0])
	}
	if p[1]&^3 != 0 {
		return fmt.Errorf("unknown event flags %#x", p[1])
	}
	ev.EOE, ev.Late = p[1]&1 != 0, p[1]&2 != 0
	ev.Serial = le.Uint32(p[2:])
	ev.Sec = int64(le.Uint64(p[6:]))
	ev.Msec = int32(le.Uint32(p[14:]))
	ev.Received = int64(le.Uint64(p[18:]))
	p = p[fixed:]
	if ev.Kind == raw.KindLost {
		if len(p) < 17 {
			return errors.New("LOST leaf too short")
		}
		ev.Lost = raw.Lost{Reason: raw.LostReason(p[0]), Count: le.Uint64(p[1:]), First: le.Uint32(p[9:]), Last: le.Uint32(p[13:])}
		p = p[17:]
	}
	// Each record takes at least 3 bytes: the count is bounded by the bytes left, and by MaxRecords,
	// before anything is allocated for it.
	n, k := uvarint(p)
	if k <= 0 || n > uint64(len(p))/3 || n > MaxRecords {
		return errors.New("bad record count")
	}
	p = p[k:]
	for i := uint64(0); i < n; i++ {
		if len(p) < 2 {
			return errors.New("truncated record")
		}
		typ := le.Uint16(p)
		l, k := uvarint(p[2:])
		if k <= 0 || l > uint64(len(p)-2-k) {
			return errors.New("bad record length")
		}
		p = p[2+k:]
		ev.Records = append(ev.Records, raw.Record{Type: typ, Text: p[:l:l]})
		p = p[l:]
	}
	if len(p) != 0 {
		return errors.New("trailing bytes in leaf")
	}
	return nil
}

// uvarint is binary.Uvarint that also rejects overlong encodings (k <= 0), so that a leaf has one encoding.
func uvarint(p []byte) (n uint64, k int) {
	n, k = binary.Uvarint(p)
	if k > 1 && p[k-1] == 0 {
		return 0, -k
	}
	return n, k
}
