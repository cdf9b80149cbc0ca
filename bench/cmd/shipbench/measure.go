package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/auditarch/auditarch/bench/internal/harness"
)

// peer is one system under test: it takes the kernel's audit events and ships them to a store on
// loopback, where the harness can see each record become durable.
type peer interface {
	// name labels the peer in the report and selects its target.
	name() string
	// start brings the peer up with its files under dir: registered as the audit daemon, with b.rule
	// (auditctl syntax; b.rulesFile holds it) loaded, and connected to its store. It returns only once
	// an event has made the whole way to the store. From then until stop returns, it calls seen, from one
	// goroutine at a time, for every record that becomes durable in the store, with the time the harness
	// saw it there.
	start(ctx context.Context, b *bench, dir string, seen func(record, time.Time)) error
	// stop stops everything start started, by pid, and removes the rule; afterwards no audit pid is
	// registered. It may be called after a failed start, and more than once. notes are facts worth
	// reporting (e.g. how many events the peer itself logged before shipping).
	stop() (notes []string, err error)
}

// collector gathers what a peer reports as durable.
type collector struct {
	mu      sync.Mutex
	bySer   map[uint64]*arrival // every record's serial
	indexed int64               // records with a workload index
	dups    int64               // workload SYSCALL records seen more than once
	last    time.Time           // the latest arrival of any record
}

// arrival is one event in the store: it is durable when the last of its records is.
type arrival struct {
	index   int64 // -1 until its SYSCALL record is seen
	stamp   time.Time
	seen    time.Time
	records int
}

func newCollector() *collector { return &collector{bySer: map[uint64]*arrival{}} }

func (c *collector) add(r record, seen time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.bySer[r.Serial]
	if a == nil {
		a = &arrival{index: -1, stamp: r.Stamp}
		c.bySer[r.Serial] = a
	}
	if r.Index >= 0 {
		if a.index >= 0 {
			c.dups++
		} else {
			c.indexed++
		}
		a.index = r.Index
	}
	a.seen, a.records = seen, a.records+1
	c.last = seen
}

func (c *collector) progress() (indexed int64, last time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.indexed, c.last
}

// byIndex returns the arrival of each workload event, by index.
func (c *collector) byIndex() map[int64]arrival {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[int64]arrival, c.indexed)
	for _, a := range c.bySer {
		if a.index >= 0 {
			m[a.index] = *a
		}
	}
	return m
}

// measure runs the workload at rate events/s under peer p and returns the latencies from each syscall to
// its event being durable in p's store. Whatever happens, p is stopped and the rules are deleted when it
// returns.
func (b *bench) measure(ctx context.Context, p peer, rate int) (res result, err error) {
	res = result{Peer: p.name(), Rate: rate, Duration: b.dur.String()}
	dir := filepath.Join(b.out, "run", fmt.Sprintf("%s-%d", strings.ReplaceAll(p.name(), "/", "_"), rate))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return res, fmt.Errorf("run dir: %w", err)
	}
	if err := b.k.DeleteRules(); err != nil {
		return res, harness.Unclean(err)
	}
	if err := b.k.SetFair(b.backlog, b.wait); err != nil {
		return res, harness.Unclean(err)
	}
	col := newCollector()
	stopped := false
	stopPeer := func() error {
		stopped = true
		notes, err := p.stop()
		res.Notes = append(res.Notes, notes...)
		if n, rerr := b.k.RuleCount(); rerr != nil || n > 0 {
			err = errors.Join(err, harness.Unclean(errors.Join(rerr, fmt.Errorf("%s left %d rule(s) loaded", p.name(), n), b.k.DeleteRules())))
		}
		if _, perr := b.k.WaitPID(context.Background(), 5*time.Second, func(pid uint32) (bool, error) {
			return pid == 0, nil
		}); perr != nil {
			err = errors.Join(err, harness.Unclean(fmt.Errorf("after stopping %s: %w", p.name(), perr)))
		}
		return err
	}
	defer func() {
		if !stopped {
			err = errors.Join(err, stopPeer())
		}
	}()
	if err := p.start(ctx, b, dir, col.add); err != nil {
		return res, err
	}
	if err := b.k.SetFair(b.backlog, b.wait); err != nil {
		return res, harness.Unclean(err)
	}
	st0, err := b.k.Status()
	if err != nil {
		return res, err
	}

	sent, err := b.runGenerator(ctx, dir, rate, b.dur, func() { p.stop() })
	if err != nil {
		return res, err
	}
	res.Sent, res.Errors, res.MaxLateMs = sent.Sent, sent.Errors, float64(sent.MaxLateUs)/1000
	res.SentPerSec = float64(sent.Sent) / sent.Seconds
	if sent.Errors > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d of %d openat calls failed", sent.Errors, sent.Sent))
	}

	drained, err := b.drain(ctx, col, sent.Sent)
	if err != nil {
		return res, err
	}
	if drained != "" {
		res.Notes = append(res.Notes, drained)
	}
	st1, err := b.k.Status()
	if err != nil {
		return res, err
	}
	res.KernelLost = st1.Lost - st0.Lost
	res.KernelWaitJiffies = st1.BacklogWaitTimeActual - st0.BacklogWaitTimeActual
	if err := stopPeer(); err != nil {
		return res, err
	}
	res.fill(sent, col)
	// Per event, for looking at the tail: index, audit timestamp and durable time (unix ns).
	var csv strings.Builder
	for i, a := range col.byIndex() {
		fmt.Fprintf(&csv, "%d,%d,%d\n", i, a.stamp.UnixNano(), a.seen.UnixNano())
	}
	os.WriteFile(filepath.Join(dir, "latencies.csv"), []byte(csv.String()), 0o640)
	return res, nil
}

// drain waits until every sent event has arrived, or nothing has arrived for b.quiet, or b.drainMax has
// passed; events that arrive later count as lost. It returns a note when it gave up.
func (b *bench) drain(ctx context.Context, col *collector, sent int64) (string, error) {
	begin := time.Now()
	for {
		got, last := col.progress()
		switch {
		case got >= sent:
			return "", nil
		case time.Since(begin) > b.drainMax:
			return fmt.Sprintf("%d events still missing %v after the workload ended: counted as lost",
				sent-got, b.drainMax), nil
		case time.Since(last) > b.quiet && time.Since(begin) > b.quiet:
			return fmt.Sprintf("nothing arrived for %v: %d events counted as lost", b.quiet, sent-got), nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// fill computes the latencies. An event's latency is the time the harness saw the last of its records in
// the store minus (a) its audit timestamp (the measure the targets use) or (b) the generator's own clock
// just before the syscall (ns resolution, a check on (a)).
func (r *result) fill(sent sentEvents, col *collector) {
	got := col.byIndex()
	var fromStamp, fromSend, stampLag []time.Duration
	for i, t := range sent.Times {
		a, ok := got[int64(i)]
		if !ok {
			continue
		}
		fromStamp = append(fromStamp, a.seen.Sub(a.stamp))
		fromSend = append(fromSend, a.seen.Sub(t))
		stampLag = append(stampLag, t.Sub(a.stamp))
		r.recordsPerEvent += a.records
	}
	r.Received = int64(len(fromStamp))
	r.Lost = r.Sent - r.Received
	r.Duplicates = col.dups
	if r.Received > 0 {
		r.RecordsPerEvent = float64(r.recordsPerEvent) / float64(r.Received)
	}
	r.Latency = percentiles(fromStamp, int(r.Sent))
	r.LatencyFromSend = percentiles(fromSend, int(r.Sent))
	slices.Sort(stampLag)
	if len(stampLag) > 0 {
		r.StampLagMs = [2]float64{ms(stampLag[0]), ms(stampLag[len(stampLag)-1])}
	}
}

// latency summarises how long events took to become durable.
type latency struct {
	// P50 and P99 are over all sent events, a lost event counting as never durable: -1 (printed "lost")
	// when the rank falls among the lost ones. Max is over the events that arrived.
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
	// Of the events that arrived only.
	ArrivedP50Ms float64 `json:"arrived_p50_ms"`
	ArrivedP99Ms float64 `json:"arrived_p99_ms"`
}

// percentiles summarises the latencies of the events that arrived, out of n sent (n ≥ len(ds)).
func percentiles(ds []time.Duration, n int) latency {
	slices.Sort(ds)
	var l latency
	if len(ds) == 0 {
		return latency{-1, -1, -1, -1, -1}
	}
	l.P50Ms, l.P99Ms = ms(rank(ds, n, 0.50)), ms(rank(ds, n, 0.99))
	l.MaxMs = ms(ds[len(ds)-1])
	l.ArrivedP50Ms, l.ArrivedP99Ms = ms(rank(ds, len(ds), 0.50)), ms(rank(ds, len(ds), 0.99))
	return l
}

// rank is the nearest-rank q-quantile of n values of which sorted holds the smallest; -1 when the rank is
// beyond sorted (a lost event).
func rank(sorted []time.Duration, n int, q float64) time.Duration {
	k := max(int(math.Ceil(q*float64(n)))-1, 0) // zero-based
	if k >= len(sorted) {
		return -1
	}
	return sorted[k]
}

// ms converts to milliseconds, keeping -1 (never) as -1.
func ms(d time.Duration) float64 {
	if d < 0 {
		return -1
	}
	return float64(d) / float64(time.Millisecond)
}
