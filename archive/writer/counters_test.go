package writer_test

import (
	"path/filepath"
	"testing"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit/raw"
	"github.com/auditarch/auditarch/internal/archivetest"
)

// TestCounters: what Counters reports after a closed run matches what the run wrote: event leaves and
// their records, LOST leaves and the events they count by reason, POLICY leaves by action and verdict,
// signed checkpoints, the segment opened and sealed.
func TestCounters(t *testing.T) {
	id, _ := archivetest.Identity(t, "host-a.example")
	dir := filepath.Join(t.TempDir(), "archive")
	evs := append(testEvents(t), &raw.Event{Kind: raw.KindLost, EOE: true, Received: t0,
		Lost: raw.Lost{Reason: raw.LostUnregistered, Count: 5, First: 10, Last: 14}}) // counted as no_daemon, not unknown
	w, err := writer.Create(dir, archivetest.FastOptions(id))
	if err != nil {
		t.Fatal(err)
	}
	var events, records uint64
	var lostLeaves, lostEvents [writer.LostReasons]uint64
	for _, ev := range evs {
		w.Append(ev)
		if ev.Kind == raw.KindLost {
			lostLeaves[ev.Lost.Reason]++
			lostEvents[ev.Lost.Reason] += ev.Lost.Count
			continue
		}
		events++
		records += uint64(len(ev.Records))
	}
	w.Policy(archive.Policy{Action: raw.PolicyActionFile, Verdict: raw.PolicyVerdictDenied})
	w.Policy(archive.Policy{Action: raw.PolicyActionFile, Verdict: raw.PolicyVerdictDenied})
	w.Policy(archive.Policy{Action: raw.PolicyActionThaw, Verdict: raw.PolicyVerdictRecorded})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c := w.Counters()
	if c.Events != events || c.Records != records {
		t.Errorf("Counters: %d events, %d records; want %d, %d", c.Events, c.Records, events, records)
	}
	if c.LostLeaves != lostLeaves || c.LostEvents != lostEvents {
		t.Errorf("Counters: LOST leaves %v counting %v; want %v counting %v", c.LostLeaves, c.LostEvents, lostLeaves, lostEvents)
	}
	want := map[writer.PolicyKey]uint64{{Action: raw.PolicyActionFile, Verdict: raw.PolicyVerdictDenied}: 2,
		{Action: raw.PolicyActionThaw, Verdict: raw.PolicyVerdictRecorded}: 1}
	if len(c.Policy) != len(want) || c.Policy[writer.PolicyKey{Action: raw.PolicyActionFile, Verdict: raw.PolicyVerdictDenied}] != 2 ||
		c.Policy[writer.PolicyKey{Action: raw.PolicyActionThaw, Verdict: raw.PolicyVerdictRecorded}] != 1 {
		t.Errorf("Counters.Policy = %v, want %v", c.Policy, want)
	}
	if c.Appended != uint64(len(evs)) || c.Written != c.Appended || c.Dropped != 0 {
		t.Errorf("Counters: %d appended, %d written, %d dropped; want %d, %d, 0", c.Appended, c.Written, c.Dropped, len(evs), len(evs))
	}
	if c.Checkpoints < 2 || c.LastCheckpointAt.IsZero() || c.DurableAt.IsZero() {
		t.Errorf("Counters: %d checkpoints, last at %v, durable at %v; want at least the START's and the seal's", c.Checkpoints, c.LastCheckpointAt, c.DurableAt)
	}
	if c.Segments != 1 || c.Sealed != 1 {
		t.Errorf("Counters: %d segments opened, %d sealed; want 1, 1", c.Segments, c.Sealed)
	}
	// Every leaf but the events and LOST (START, POLICY, STOP, SEAL, KEY, HEARTBEAT...) is in Durable.
	if c.Durable < c.Appended+3 {
		t.Errorf("Counters.Durable = %d, want at least %d", c.Durable, c.Appended+3)
	}
}
