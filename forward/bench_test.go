package forward_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/forward"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/shiptest"
	"github.com/auditarch/auditarch/store"
)

// openEvent is an openat event as the kernel sends it (SYSCALL, CWD, two PATH, PROCTITLE: about 850 bytes).
func openEvent(serial uint32, now time.Time) *audit.RawEvent {
	sec, msec := now.Unix(), int32(now.Nanosecond()/1e6)
	stamp := fmt.Sprintf("audit(%d.%03d:%d): ", sec, msec, serial)
	rec := func(typ uint16, s string) audit.Record { return audit.Record{Type: typ, Text: []byte(stamp + s)} }
	return &audit.RawEvent{Kind: audit.KindEvent, Serial: serial, Sec: sec, Msec: msec, Received: now.UnixNano(), EOE: true,
		Records: []audit.Record{
			rec(1300, fmt.Sprintf("arch=c000003e syscall=257 success=yes exit=3 a0=ffffff9c a1=7ffd2a4c1%03x a2=0 a3=0 items=1 ppid=1203 pid=%d auid=1000 uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 comm=\"cat\" exe=\"/usr/bin/cat\" subj=unconfined key=\"files\"", serial%4096, 4000+serial%30000)),
			rec(1307, "cwd=\"/home/alice/src/project\""),
			rec(1302, fmt.Sprintf("item=0 name=\"/etc/passwd\" inode=%d dev=fe:01 mode=0100644 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0", 131000+serial%512)),
			rec(1327, "proctitle=636174002F6574632F706173737764"),
		}}
}

// BenchmarkCatchUp measures shipping after an outage: a backlog of 5 minutes of capture at 10,000
// events/s is in the archive when the store becomes reachable, and capture goes on at that rate. It
// reports how fast the shipper catches up, as a multiple of the capture rate (target ≥ 10x).
func BenchmarkCatchUp(b *testing.B) {
	const rate, outage = 10000, 5 * time.Minute
	backlog := int(rate * outage / time.Second)
	id, pub := archivetest.Identity(b, "bench-host")
	dir := filepath.Join(b.TempDir(), "archive")
	w, err := writer.Create(dir, writer.Options{Identity: id, FlushInterval: 20 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	// The backlog, written as fast as the writer takes it (its timestamps are compressed; shipping does
	// not look at them).
	t0 := time.Now()
	for i := 1; i <= backlog; i++ {
		w.Append(openEvent(uint32(i), time.Now()))
		if i%50000 == 0 {
			for _, _, d := w.Stats(); d+200000 < uint64(i); _, _, d = w.Stats() {
				time.Sleep(time.Millisecond) // keep within MaxPending
			}
		}
	}
	for _, _, d := w.Stats(); d < uint64(backlog); _, _, d = w.Stats() {
		time.Sleep(time.Millisecond)
	}
	pos := w.Durable()
	b.Logf("backlog: %d events in %s, archive durable at %s+%d", backlog, time.Since(t0).Round(time.Millisecond), pos.Segment, pos.Offset)

	st := shiptest.StartStore(b, "", store.Config{}, pub)
	b.ResetTimer()
	sh, err := forward.New(forward.Config{Addr: st.Addr, StoreKey: st.Key, Identity: id, Dir: dir, Writer: w, Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() { sh.Run(ctx); close(done) }()
	// Capture goes on at the same rate until the store holds everything durable.
	live := uint32(backlog)
	tick := time.NewTicker(10 * time.Millisecond)
	for {
		<-tick.C
		due := backlog + int(time.Since(start).Seconds()*rate)
		for int(live) < due {
			live++
			w.Append(openEvent(live, time.Now()))
		}
		s := sh.Status()
		if _, _, d := w.Stats(); s.Size >= d && d > uint64(backlog) && s.Size > 0 {
			break
		}
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("no catch-up after 5 minutes: store holds %d leaves", s.Size)
		}
	}
	tick.Stop()
	took := time.Since(start)
	shipped := sh.Status().Size
	cancel()
	<-done
	b.StopTimer()
	evs := float64(shipped) / took.Seconds()
	b.ReportMetric(evs, "shipped-leaves/s")
	b.ReportMetric(evs/rate, "x-capture")
	verdict := "PASS"
	if evs/rate < 10 {
		verdict = "FAIL"
	}
	fmt.Printf("BenchmarkCatchUp: 5-minute backlog at %d events/s (%d leaves) plus live capture, caught up in %s: %.0f leaves/s = %.1fx the capture rate (target ≥10x %s)\n",
		rate, shipped, took.Round(time.Millisecond), evs, evs/rate, verdict)
}
