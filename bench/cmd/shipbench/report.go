package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/auditarch/auditarch/bench/internal/harness"
)

// targets is the p99 syscall-to-durable latency each peer is held to, at every rate; a peer not listed
// has no target and is only measured.
var targets = map[string]time.Duration{
	"auditarch": 50 * time.Millisecond,
}

// result is one measurement: one peer at one rate.
type result struct {
	Peer     string `json:"peer"`
	Rate     int    `json:"rate"`
	Duration string `json:"duration"`

	Sent       int64   `json:"sent"`
	Errors     int64   `json:"errors"`
	SentPerSec float64 `json:"sent_per_sec"`
	MaxLateMs  float64 `json:"generator_max_late_ms"` // worst lag behind the schedule
	Received   int64   `json:"received"`
	Lost       int64   `json:"lost"` // sent but not in the store by the end of the drain
	Duplicates int64   `json:"duplicates,omitempty"`
	KernelLost uint32  `json:"kernel_lost"`
	// KernelWaitJiffies is how long audited tasks slept on the full kernel backlog (backlog_wait_time_actual).
	KernelWaitJiffies uint32 `json:"kernel_backlog_wait_jiffies"`

	RecordsPerEvent float64 `json:"records_per_event"`
	recordsPerEvent int

	// Latency is from the event's audit timestamp (ms resolution, kernel coarse clock) to the harness
	// seeing the last of its records durable in the store; LatencyFromSend is from the generator's clock
	// just before the syscall (ns resolution).
	Latency         latency `json:"latency"`
	LatencyFromSend latency `json:"latency_from_send"`
	// StampLagMs is the least and greatest (send clock − audit timestamp): how far the audit timestamp
	// trails the syscall.
	StampLagMs [2]float64 `json:"stamp_lag_ms"`

	Target  string   `json:"target,omitempty"`
	Verdict string   `json:"verdict,omitempty"`
	Notes   []string `json:"notes,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// judge sets the verdict against the peer's target: p99 over all sent events (lost ones count as never
// durable) below it.
func (r *result) judge() {
	t, ok := targets[r.Peer]
	if !ok {
		return
	}
	r.Target = fmt.Sprintf("p99 < %v", t)
	switch {
	case r.Error != "":
		r.Verdict = "FAIL"
	case r.Latency.P99Ms >= 0 && r.Latency.P99Ms < ms(t):
		r.Verdict = "PASS"
	default:
		r.Verdict = "FAIL"
	}
}

// report is everything a run measured; it is also the JSON written to the output directory.
type report struct {
	Started  time.Time `json:"started"`
	Kernel   string    `json:"kernel"`
	CPUs     int       `json:"cpus"`
	Duration string    `json:"duration_per_rate"`
	Rule     string    `json:"rule"`
	Settings string    `json:"settings"`
	Found    string    `json:"found_and_restored"`
	Load     []string  `json:"loadavg"`
	Results  []result  `json:"results"`
}

func newReport(b *bench) *report {
	return &report{
		Started: time.Now().UTC(), Kernel: harness.KernelRelease(), CPUs: runtime.NumCPU(),
		Duration: b.dur.String(), Rule: b.rule,
		Settings: fmt.Sprintf("enabled 1, backlog_limit %d, backlog_wait_time %d jiffies, set before each peer "+
			"starts and again after its rule is loaded", b.backlog, b.wait),
	}
}

func (r *report) print(out io.Writer) {
	fmt.Fprintf(out, "\nauditarch ship benchmark — syscall to durable in the remote store, loopback — kernel %s, %d CPUs, %s per rate\n",
		r.Kernel, r.CPUs, r.Duration)
	fmt.Fprintf(out, "rule: %s\n", r.Rule)
	fmt.Fprintf(out, "kernel settings: %s\n", r.Settings)
	fmt.Fprintf(out, "found and restored: %s\n", r.Found)
	fmt.Fprintf(out, "load average (1/5/15 min) at start and end: %s\n\n", strings.Join(r.Load, " → "))

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "peer\trate/s\tsent\tsent/s\treceived\tlost\tp50 ms\tp99 ms\tmax ms\t"+
		"p50 send ms\tp99 send ms\ttarget\t")
	for _, x := range r.Results {
		if x.Error != "" && x.Sent == 0 {
			fmt.Fprintf(tw, "%s\t%d\t-\t-\t-\t-\t-\t-\t-\t-\t-\t%s\t\n", x.Peer, x.Rate, verdictCell(x))
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", x.Peer, x.Rate, x.Sent, x.SentPerSec,
			x.Received, x.Lost, msCell(x.Latency.P50Ms), msCell(x.Latency.P99Ms), msCell(x.Latency.MaxMs),
			msCell(x.LatencyFromSend.P50Ms), msCell(x.LatencyFromSend.P99Ms), verdictCell(x))
	}
	tw.Flush()
	fmt.Fprintln(out, "\nlatency: from the event's audit timestamp msg=audit(SEC.MSEC:…) — millisecond resolution, taken by the")
	fmt.Fprintln(out, "kernel from its coarse clock, so it trails the syscall by up to a tick — to the harness seeing the last")
	fmt.Fprintln(out, "of the event's records in the store; \"send\": from the generator's own clock just before the syscall.")
	fmt.Fprintln(out, "p50/p99 are over all sent events, a lost one counting as never durable (\"lost\" when the rank falls")
	fmt.Fprintln(out, "there); max is over the events that arrived.")
	for _, x := range r.Results {
		if x.Received > 0 {
			fmt.Fprintf(out, "%s @%d/s: %.1f records/event; audit timestamp trails the send clock by %.1f–%.1f ms; "+
				"of arrived events p50 %s p99 %s ms; generator at worst %.1f ms behind schedule; kernel lost %d, "+
				"audited syscalls waited %d jiffies on the full backlog\n",
				x.Peer, x.Rate, x.RecordsPerEvent, x.StampLagMs[0], x.StampLagMs[1], msCell(x.Latency.ArrivedP50Ms),
				msCell(x.Latency.ArrivedP99Ms), x.MaxLateMs, x.KernelLost, x.KernelWaitJiffies)
		}
		for _, n := range x.Notes {
			fmt.Fprintf(out, "note %s @%d/s: %s\n", x.Peer, x.Rate, n)
		}
		if x.Error != "" {
			fmt.Fprintf(out, "FAILED %s @%d/s: %s\n", x.Peer, x.Rate, x.Error)
		}
	}
}

func msCell(v float64) string {
	if v < 0 {
		return "lost"
	}
	return fmt.Sprintf("%.1f", v)
}

func verdictCell(x result) string {
	switch {
	case x.Target == "" && x.Error != "":
		return "FAILED"
	case x.Target == "":
		return "-"
	}
	return x.Target + " " + x.Verdict
}

func (r *report) write(path string) error {
	if err := harness.WriteJSON(path, r); err != nil {
		return err
	}
	fmt.Printf("\nJSON: %s\n", path)
	return nil
}
