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

// Targets auditarch is held to.
const (
	targetVsAuditd  = 3.0     // ops/s at least 3x auditd's
	targetVsBare    = 0.8     // ops/s at least 0.8x the bare reader's
	targetOpenCPUus = 15.0    // consumer CPU per open event below 15 µs
	targetBytes     = 1.0 / 8 // archive bytes per event at most 1/8 of auditd's log bytes per event
)

// report is everything a run measured; it is also the JSON written to the output directory.
type report struct {
	Started  time.Time         `json:"started"`
	Kernel   string            `json:"kernel"`
	CPUs     int               `json:"cpus"`
	HZ       int               `json:"kernel_hz,omitempty"`
	Duration string            `json:"duration_per_cell"`
	Reps     int               `json:"reps"`
	Pick     string            `json:"pick"`
	Settings string            `json:"settings"`
	Found    string            `json:"found_and_restored"`
	Load     []string          `json:"loadavg"` // /proc/loadavg at start and end: other work skews results
	Rules    map[string]string `json:"rules"`
	Skipped  map[string]string `json:"skipped,omitempty"`
	Cells    []cell            `json:"cells"`
	Best     []cell            `json:"best"`
	Ratios   []ratio           `json:"ratios,omitempty"`
}

// ratio compares auditarch with auditd and the bare reader on one workload.
type ratio struct {
	Workload    string  `json:"workload"`
	BareAuditd  float64 `json:"bare_vs_auditd"` // the most any consumer can gain on auditd here
	VsAuditd    float64 `json:"auditarch_vs_auditd"`
	VsBare      float64 `json:"auditarch_vs_bare"`
	CPUPerEvent float64 `json:"auditarch_cpu_us_per_event"`
	// Bytes on disk per event: auditd's log (rotated files included) and auditarch's archive.
	AuditdBytes    float64 `json:"auditd_bytes_per_event,omitempty"`
	AuditarchBytes float64 `json:"auditarch_bytes_per_event,omitempty"`
	BytesVsAuditd  float64 `json:"auditarch_vs_auditd_bytes,omitempty"`
}

func newReport(b *bench) *report {
	r := &report{
		Started: time.Now().UTC(), Kernel: harness.KernelRelease(), CPUs: runtime.NumCPU(),
		HZ: harness.KernelHZ(), Duration: b.dur.String(), Reps: b.reps,
		Pick:  "per workload and consumer, the repetition with the best ops/s",
		Rules: map[string]string{}, Skipped: map[string]string{},
	}
	wait := fmt.Sprintf("%d jiffies", b.wait)
	if r.HZ > 0 {
		wait += fmt.Sprintf(" = %gs at HZ=%d", float64(b.wait)/float64(r.HZ), r.HZ)
	}
	r.Settings = fmt.Sprintf("consumer cells: enabled 1, backlog_limit %d, backlog_wait_time %s, "+
		"set before the consumer starts and again after its rules are loaded; "+
		"none cells: no rules, no consumer, enabled as found", b.backlog, wait)
	return r
}

// summarise picks the best repetition of each cell and computes auditarch's ratios.
func (r *report) summarise(ws []workload, consumers []string) {
	best := map[[2]string]cell{}
	for _, c := range r.Cells {
		k := [2]string{c.Workload, c.Consumer}
		if b, ok := best[k]; c.Error == "" && (!ok || c.OpsPerSec > b.OpsPerSec) {
			best[k] = c
		}
	}
	for _, w := range ws {
		for _, c := range consumers {
			if b, ok := best[[2]string{w.name, c}]; ok {
				r.Best = append(r.Best, b)
			}
		}
		a, okA := best[[2]string{w.name, "auditarch"}]
		if !okA {
			continue
		}
		q := ratio{Workload: w.name, CPUPerEvent: a.CPUPerEvent}
		q.AuditarchBytes = a.BytesPerEvent
		if d, ok := best[[2]string{w.name, "auditd"}]; ok && d.BytesPerEvent > 0 {
			q.AuditdBytes = d.BytesPerEvent
			q.BytesVsAuditd = a.BytesPerEvent / d.BytesPerEvent
		}
		if d, ok := best[[2]string{w.name, "auditd"}]; ok && d.OpsPerSec > 0 {
			q.VsAuditd = a.OpsPerSec / d.OpsPerSec
			if b, ok := best[[2]string{w.name, "bare"}]; ok {
				q.BareAuditd = b.OpsPerSec / d.OpsPerSec
			}
		}
		if b, ok := best[[2]string{w.name, "bare"}]; ok && b.OpsPerSec > 0 {
			q.VsBare = a.OpsPerSec / b.OpsPerSec
		}
		r.Ratios = append(r.Ratios, q)
	}
}

func (r *report) print(out io.Writer) {
	fmt.Fprintf(out, "\nauditarch side-by-side benchmark — kernel %s, %d CPUs, %s per cell, %d rep(s); %s\n",
		r.Kernel, r.CPUs, r.Duration, r.Reps, r.Pick)
	fmt.Fprintf(out, "kernel settings: %s\n", r.Settings)
	fmt.Fprintf(out, "found and restored: %s\n", r.Found)
	fmt.Fprintf(out, "load average (1/5/15 min) at start and end: %s (other work on the machine skews results)\n",
		strings.Join(r.Load, " → "))
	for _, w := range sortedKeys(r.Rules) {
		fmt.Fprintf(out, "rule %-8s %s\n", w+":", r.Rules[w])
	}
	fmt.Fprintln(out)

	none := map[string]float64{}
	for _, c := range r.Best {
		if c.Consumer == "none" {
			none[c.Workload] = c.OpsPerSec
		}
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tconsumer\tops/s\tvs none\tµs CPU/event\tkauditd µs/ev\t"+
		"events seen\tops\tlost\tothers %CPU\tdisk B/event\t")
	for _, c := range r.Best {
		vsNone, cpu, kcpu, seen, lost, disk := "-", "-", "-", "-", "-", "-"
		if c.BytesPerEvent > 0 {
			disk = fmt.Sprintf("%.1f", c.BytesPerEvent)
		}
		if n := none[c.Workload]; n > 0 {
			vsNone = fmt.Sprintf("%.3fx", c.OpsPerSec/n)
		}
		if c.Consumer != "none" {
			cpu, kcpu, lost = fmt.Sprintf("%.2f", c.CPUPerEvent), fmt.Sprintf("%.2f", c.KauditdPerEvent), fmt.Sprint(c.Lost)
		}
		switch {
		case c.Rotated:
			seen = "rotated"
		case c.Events >= 0:
			seen = fmt.Sprint(c.Events)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%d\t%s\t%.0f\t%s\t\n",
			c.Workload, c.Consumer, c.OpsPerSec, vsNone, cpu, kcpu, seen, c.Ops, lost, c.OthersCPU, disk)
	}
	tw.Flush()

	fmt.Fprintln(out)
	if reason, skipped := r.Skipped["auditarch"]; skipped {
		fmt.Fprintf(out, "auditarch: SKIPPED (%s)\n", reason)
		fmt.Fprintf(out, "targets not checked: ops/s ≥ %.1fx auditd, ≥ %.1fx bare, < %.0f µs CPU per open event\n",
			targetVsAuditd, targetVsBare, targetOpenCPUus)
	}
	if len(r.Ratios) > 0 {
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "workload\tauditarch/auditd ops/s\ttarget\t"+
			"auditarch/bare ops/s\ttarget\tauditarch µs CPU/event\ttarget")
		for _, q := range r.Ratios {
			cpuTarget := "-"
			if q.Workload == "open" {
				cpuTarget = fmt.Sprintf("< %.0f %s", targetOpenCPUus, verdict(q.CPUPerEvent > 0 && q.CPUPerEvent < targetOpenCPUus))
			}
			vsAuditd := verdict(q.VsAuditd >= targetVsAuditd)
			if q.BareAuditd > 0 && q.BareAuditd < targetVsAuditd {
				// The workload's own cost dominates: even the bare reader is not 3x auditd here.
				vsAuditd = fmt.Sprintf("n/a (bare/auditd is %.2fx)", q.BareAuditd)
			}
			fmt.Fprintf(tw, "%s\t%.2fx\t≥ %.1fx %s\t%.2fx\t≥ %.1fx %s\t%.2f\t%s\n", q.Workload,
				q.VsAuditd, targetVsAuditd, vsAuditd,
				q.VsBare, targetVsBare, verdict(q.VsBare >= targetVsBare), q.CPUPerEvent, cpuTarget)
		}
		tw.Flush()

		fmt.Fprintln(out)
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "workload\tauditd log B/event\tauditarch archive B/event\tauditarch/auditd bytes\ttarget")
		for _, q := range r.Ratios {
			if q.AuditdBytes == 0 || q.AuditarchBytes == 0 {
				fmt.Fprintf(tw, "%s\t%s\t%s\t-\t≤ 1/%.0f not measured\n", q.Workload, bytesOrDash(q.AuditdBytes), bytesOrDash(q.AuditarchBytes), 1/targetBytes)
				continue
			}
			fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.3f (1/%.1f)\t≤ 1/%.0f %s\n", q.Workload, q.AuditdBytes, q.AuditarchBytes,
				q.BytesVsAuditd, 1/q.BytesVsAuditd, 1/targetBytes, verdict(q.BytesVsAuditd <= targetBytes))
		}
		tw.Flush()
	}
	fmt.Fprintln(out, "disk B/event: bytes the consumer left on disk (auditd: its log directory, rotated files included;",
		"auditarch: the archive directory, signatures and segment headers included) divided by events seen;")
	fmt.Fprintln(out, "events seen: events with key \"bench\" the consumer received (bare), logged (auditd) or archived",
		"(auditarch show --json); \"rotated\": auditd's default rotation (8 MB × 5 files) deleted part of its log;")
	fmt.Fprintln(out, "others %CPU: CPU used by unrelated processes during the cell (100 = one core of", r.CPUs, "busy):",
		"high values mean the cell was disturbed")
	for c, reason := range r.Skipped {
		if c != "auditarch" {
			fmt.Fprintf(out, "%s: %s\n", c, reason)
		}
	}
	for _, c := range r.Cells {
		if c.Error != "" {
			fmt.Fprintf(out, "FAILED rep %d %s/%s: %s\n", c.Rep, c.Workload, c.Consumer, c.Error)
		}
	}
	for _, c := range r.Cells {
		for _, n := range c.Notes {
			fmt.Fprintf(out, "note rep %d %s/%s: %s\n", c.Rep, c.Workload, c.Consumer, n)
		}
	}
}

func bytesOrDash(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func (r *report) write(path string) error {
	if err := harness.WriteJSON(path, r); err != nil {
		return err
	}
	fmt.Printf("\nJSON: %s\n", path)
	return nil
}

func sortedKeys(m map[string]string) []string {
	// Workload order is open, connect, exec; keep it stable and readable.
	var ks []string
	for _, k := range []string{"open", "connect", "exec"} {
		if _, ok := m[k]; ok {
			ks = append(ks, k)
		}
	}
	for k := range m {
		if !strings.Contains(" open connect exec ", " "+k+" ") {
			ks = append(ks, k)
		}
	}
	return ks
}
