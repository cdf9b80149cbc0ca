package forward_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/auditarch/auditarch/forward"
	"github.com/auditarch/auditarch/forward/ecs"
	"github.com/auditarch/auditarch/internal/archivetest"
	"github.com/auditarch/auditarch/internal/peers"
)

// benchSink measures events/s through one sink on loopback: an archive of b.N events (archivetest.Event:
// SYSCALL + EXECVE, rendered as ECS by aucoalesce) forwarded from its start until the cursor commits
// its end. Targets (issue 13): 200k/s file, 80k/s RFC 5424 over TLS, 50k/s RELP.
func benchSink(b *testing.B, cfg func(b *testing.B) forward.SinkConfig) {
	id, _ := archivetest.Keys(b, "bench.example/host")
	dir := filepath.Join(b.TempDir(), "arch")
	archivetest.Write(b, dir, archivetest.FastOptions(id), b.N, 0)
	s, err := forward.NewSink(cfg(b), forward.SinkOptions{Dir: dir, Origin: "bench.example/host", Host: ecs.Host{Name: "bench"}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ResetTimer()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	for s.Status().Committed.Index < uint64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	cancel()
	<-done
}

func BenchmarkSinkFile(b *testing.B) {
	benchSink(b, func(b *testing.B) forward.SinkConfig {
		return forward.SinkConfig{Name: "file", Type: forward.SinkFile, Address: filepath.Join(b.TempDir(), "out.jsonl"), Batch: 2048}
	})
}

func BenchmarkSinkSyslogTLS(b *testing.B) {
	benchSink(b, func(b *testing.B) forward.SinkConfig {
		rs := peers.StartRsyslog(b)
		return forward.SinkConfig{Name: "tls", Type: forward.SinkSyslogTLS, Address: rs.TLSAddr, TLS: forward.TLSConfig{CA: rs.CA},
			Batch: 2048, Settle: 10 * time.Millisecond}
	})
}

func BenchmarkSinkRELP(b *testing.B) {
	benchSink(b, func(b *testing.B) forward.SinkConfig {
		rs := peers.StartRsyslog(b)
		return forward.SinkConfig{Name: "relp", Type: forward.SinkRELP, Address: rs.RELPAddr, Batch: 1024}
	})
}

// BenchmarkRenderECS is the rendering alone, per event.
func BenchmarkRenderECS(b *testing.B) {
	r := ecs.NewRenderer(ecs.Options{Origin: "bench.example/host", Host: ecs.Host{Name: "bench"}})
	ev := archivetest.Event(1)
	var buf []byte
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf, _ = ecs.AppendJSON(buf[:0], r.Event(ev, uint64(i)))
	}
}
