package audit

import (
	"time"

	"github.com/auditarch/auditarch/audit/raw"
)

// The event types live in package raw (no dependencies), so that the archive and the store do not link
// the capture; these aliases keep the capture's names.
type (
	Kind       = raw.Kind
	LostReason = raw.LostReason
	Lost       = raw.Lost
	RawEvent   = raw.Event
)

const (
	KindEvent   = raw.KindEvent
	KindLost    = raw.KindLost
	LostKernel  = raw.LostKernel
	LostGap     = raw.LostGap
	LostLocal   = raw.LostLocal
	LostSocket  = raw.LostSocket
	LostBacklog = raw.LostBacklog

	LostUnregistered = raw.LostUnregistered
)

// Record types the reassembler treats specially (linux/audit.h).
const (
	TypeEOE          = 1320
	TypeConfigChange = 1305 // AUDIT_CONFIG_CHANGE: the audit configuration changed
	// Userspace and daemon messages (1100–1299) and the second userspace range (2100–2999) are single-record
	// events sent without an EOE; everything else from the kernel waits for EOE or the timeout.
	firstUserMsg  = 1100
	lastDaemonMsg = 1299
	firstUserMsg2 = 2100
	lastUserMsg2  = 2999
)

func standalone(typ uint16) bool {
	return (typ >= firstUserMsg && typ <= lastDaemonMsg) || (typ >= firstUserMsg2 && typ <= lastUserMsg2)
}

// Reassembler joins records into events by serial number and accounts for serials that never arrive.
//
// An event is emitted as soon as it is complete (its EOE arrives, or it is a single-record type) or when
// it has waited Timeout for more records; it is never held behind another incomplete event. Records that
// arrive for a serial already emitted, or already reported missing, form a new event marked Late, so
// nothing is dropped and nothing is counted twice.
//
// A Reassembler is not safe for concurrent use: one goroutine (the netlink reader) owns it. The *RawEvent
// passed to Emit is valid only during the call; Emit must copy what it keeps.
type Reassembler struct {
	Timeout time.Duration // how long an event without EOE waits for more records
	Grace   time.Duration // how long a missing serial may arrive late before it is reported as lost
	Emit    func(*RawEvent)

	// Perf fix: pending values, not pointers (a *pending was one allocation per event on the reader's path).
	inflight []pending
	free     []*RawEvent
	gaps     gapTracker
}

type pending struct {
	ev       *RawEvent
	deadline int64
}

// NewReassembler returns a reassembler with the usual timeouts: 1 s per event, 5 s for missing serials.
func NewReassembler(emit func(*RawEvent)) *Reassembler {
	return &Reassembler{Timeout: time.Second, Grace: 5 * time.Second, Emit: emit}
}

// Push adds one record received at now (unix nanoseconds). Malformed records (no stamp) are emitted at
// once as their own event with serial 0 so that nothing received is lost; the error says why.
func (r *Reassembler) Push(typ uint16, text []byte, now int64) error {
	h, _, err := ParseHeader(text)
	if err != nil {
		ev := r.get()
		ev.Kind, ev.Received = KindEvent, now
		ev.Add(typ, text)
		r.emit(ev)
		return err
	}
	// Records of the newest event are the likeliest match: search from the end.
	for i := len(r.inflight) - 1; i >= 0; i-- {
		p := &r.inflight[i]
		if p.ev.Serial != h.Serial {
			continue
		}
		if typ == TypeEOE {
			ev := p.ev // remove overwrites *p
			ev.EOE = true
			r.remove(i)
			r.emit(ev)
			return nil
		}
		p.ev.Add(typ, text)
		return nil
	}
	late := h.Serial != 0 && !r.gaps.observe(h.Serial, now, now+int64(r.Grace))
	// An EOE with no records before it is kept like any record: late, it completes an event emitted by
	// timeout (which then reads as partial on its own); otherwise its records were lost.
	ev := r.get()
	ev.Kind, ev.Serial, ev.Sec, ev.Msec, ev.Received, ev.Late = KindEvent, h.Serial, h.Sec, h.Msec, now, late
	ev.Add(typ, text)
	if standalone(typ) || typ == TypeEOE || h.Serial == 0 {
		ev.EOE = typ == TypeEOE
		r.emit(ev)
		return nil
	}
	r.inflight = append(r.inflight, pending{ev: ev, deadline: now + int64(r.Timeout)})
	return nil
}

// Tick emits events that have waited longer than Timeout and reports missing serials older than Grace.
// Call it periodically (the reader calls it whenever the socket is idle and at least every 100 ms).
func (r *Reassembler) Tick(now int64) {
	for i := 0; i < len(r.inflight); {
		if p := r.inflight[i]; p.deadline <= now {
			r.remove(i)
			r.emit(p.ev)
			continue
		}
		i++
	}
	r.gaps.expire(now, false, r.lost)
}

// Flush emits every event still waiting and reports every missing serial: the end of a capture.
func (r *Reassembler) Flush(now int64) {
	for len(r.inflight) > 0 {
		p := r.inflight[0]
		r.remove(0)
		r.emit(p.ev)
	}
	r.gaps.expire(now, true, r.lost)
}

// Lost emits a KindLost event now.
func (r *Reassembler) Lost(l Lost, now int64) {
	ev := r.get()
	ev.Kind, ev.Received, ev.Lost, ev.EOE = KindLost, now, l, true
	ev.Sec, ev.Msec = now/1e9, int32(now%1e9/1e6)
	r.emit(ev)
}

// Resume continues the serial accounting of the archive's previous runs in this boot (archive.ScanSerials):
// last is the last serial they archived, since the time of their last leaf (unix ns), and missing the
// ranges below last they archived no event or LOST leaf for (a killed run's unreported gaps). The serials
// after last up to the first one this run receives were issued while no daemon was registered; those
// that do not arrive within Grace (the kernel's hold queue delivers them first, when it has them) are
// reported as LOST events with reason LostUnregistered whose kernel time is since, and the missing ranges
// that stay missing as serial gaps. now is the time of the call. Call it before the first Push.
func (r *Reassembler) Resume(last uint32, since int64, missing [][2]uint32, now int64) {
	r.gaps.started, r.gaps.next, r.gaps.since = true, nextSerial(last), since
	for _, m := range missing {
		r.gaps.missing = append(r.gaps.missing, gap{lo: m[0], hi: m[1], deadline: now + int64(r.Grace), found: now})
	}
}

func (r *Reassembler) lost(m gap, now int64) {
	l := Lost{Reason: LostGap, Count: span(m.lo, m.hi), First: m.lo, Last: m.hi}
	if m.since == 0 {
		r.Lost(l, now)
		return
	}
	// The interval with no daemon: from the previous run's last leaf to this run's first record.
	l.Reason = LostUnregistered
	ev := r.get()
	ev.Kind, ev.Received, ev.Lost, ev.EOE = KindLost, m.found, l, true
	ev.Sec, ev.Msec = m.since/1e9, int32(m.since%1e9/1e6)
	r.emit(ev)
}

func (r *Reassembler) remove(i int) {
	copy(r.inflight[i:], r.inflight[i+1:])
	r.inflight[len(r.inflight)-1] = pending{}
	r.inflight = r.inflight[:len(r.inflight)-1]
}

func (r *Reassembler) get() *RawEvent {
	if n := len(r.free); n > 0 {
		ev := r.free[n-1]
		r.free = r.free[:n-1]
		return ev
	}
	return &RawEvent{}
}

func (r *Reassembler) emit(ev *RawEvent) {
	r.Emit(ev)
	ev.Reset()
	r.free = append(r.free, ev)
}

// gapTracker finds serials that never arrive. Serials are 32-bit and wrap from 2^32-1 to 1 (the kernel
// never issues 0); all comparisons use wrap-safe signed differences, never plain subtraction of counters.
type gapTracker struct {
	started bool
	next    uint32 // the serial after the highest seen
	since   int64  // Resume: the previous run's last leaf time, until the first serial is seen
	missing []gap
}

type gap struct {
	lo, hi   uint32 // inclusive
	deadline int64
	silent   bool  // before the capture started: never reported
	since    int64 // the serials no daemon received (Resume): when that began; 0 for a gap in the run
	found    int64 // when the gap was found (its first serial after it arrived)
}

// preStart is how many serials below the first one seen may still arrive as new events.
const preStart = 256

// maxMissing bounds the ranges kept; beyond it the oldest is reported at once.
const maxMissing = 4096

func nextSerial(s uint32) uint32 {
	s++
	if s == 0 {
		s = 1
	}
	return s
}

func prevSerial(s uint32) uint32 {
	s--
	if s == 0 {
		s = 1<<32 - 1
	}
	return s
}

// span counts the serials in lo..hi (inclusive, wrap-aware, 0 excluded).
func span(lo, hi uint32) uint64 {
	n := uint64(hi-lo) + 1
	if hi < lo { // wrapped past 2^32-1: the range contains 0, which the kernel never issues
		n--
	}
	return n
}

// observe records serial s and reports whether it is new: the first record of its event. A serial that
// fills a known gap is new; one below the highest seen and not missing has been seen already (late).
func (g *gapTracker) observe(s uint32, now, deadline int64) bool {
	if !g.started {
		// Events in flight when the capture starts may arrive just after a higher serial. The serials
		// right below the first one are a silent range: they count as new if they arrive, and are not
		// reported lost if they do not (anything before the start is not ours to account).
		g.started, g.next = true, nextSerial(s)
		g.missing = append(g.missing, gap{lo: s - preStart, hi: prevSerial(s), deadline: deadline, silent: true})
		return true
	}
	if d := int32(s - g.next); d >= 0 {
		if s != g.next {
			g.missing = append(g.missing, gap{lo: g.next, hi: prevSerial(s), deadline: deadline, since: g.since, found: now})
		}
		g.next, g.since = nextSerial(s), 0
		return true
	}
	if g.since != 0 {
		// The first serial of a resumed run is not after the last one archived: the counter restarted
		// (a reboot the caller did not see). Account from here as a fresh capture does.
		g.started, g.since, g.missing = false, 0, g.missing[:0]
		return g.observe(s, now, deadline)
	}
	for i := range g.missing {
		m := &g.missing[i]
		if int32(s-m.lo) < 0 || int32(m.hi-s) < 0 {
			continue
		}
		switch {
		case m.lo == m.hi:
			g.missing = append(g.missing[:i], g.missing[i+1:]...)
		case s == m.lo:
			m.lo = nextSerial(s)
		case s == m.hi:
			m.hi = prevSerial(s)
		default:
			hi := m.hi
			m.hi = prevSerial(s)
			rest := *m
			rest.lo, rest.hi = nextSerial(s), hi
			g.missing = append(g.missing, gap{})
			copy(g.missing[i+2:], g.missing[i+1:])
			g.missing[i+1] = rest
		}
		return true
	}
	return false
}

// expire reports ranges whose deadline has passed, oldest first, and trims the list to maxMissing.
func (g *gapTracker) expire(now int64, all bool, report func(m gap, now int64)) {
	kept := g.missing[:0]
	for i, m := range g.missing {
		if all || m.deadline <= now || len(g.missing)-i > maxMissing {
			if !m.silent {
				report(m, now)
			}
			continue
		}
		kept = append(kept, m)
	}
	for i := len(kept); i < len(g.missing); i++ {
		g.missing[i] = gap{}
	}
	g.missing = kept
}
