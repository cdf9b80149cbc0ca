package forward_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/verify"
	"github.com/auditarch/auditarch/forward"
	"github.com/auditarch/auditarch/internal/shiptest"
	"github.com/auditarch/auditarch/store"
)

// The stores of the stop tests raise a silence alarm about heartbeat (fastOptions: 200 ms) + stopGrace
// after a host's last data, and a stopped alarm stoppedAlarm after a clean STOP. Their watch looks every
// second.
const (
	stopGrace    = 300 * time.Millisecond
	stoppedAlarm = 3 * time.Second
	watchTick    = time.Second
)

// TestCleanStop: a daemon that stops cleanly ships its STOP and seal and has the store's receipt for them
// before its shipper returns; the store then raises no silence alarm for it, but a stopped alarm once
// it has not started again within StoppedAlarm — also across a store restart, which resumes from the
// state saved at the STOP's seal — and none when it starts again in time. A daemon whose STOP does not
// reach the store (a crash, as the store sees it) still raises the silence alarm.
func TestCleanStop(t *testing.T) {
	t.Run("stopped", func(t *testing.T) {
		t.Parallel()
		h, st, stopAt := stopRun(t, "stopped.example")
		waitUntil(stopAt.Add(200*time.Millisecond + stopGrace + 2*watchTick))
		noAlarm(t, st, store.AlarmSilence, h, "a clean stop")
		a := waitAlarm(t, st, store.AlarmStopped, "stopped.example", stopAt.Add(stoppedAlarm+3*watchTick))
		if a.Time.Before(stopAt.Add(stoppedAlarm)) || !strings.Contains(a.Message, "stopped cleanly") {
			t.Errorf("stopped alarm at %s (STOP at %s, StoppedAlarm %s): %s", a.Time, stopAt, stoppedAlarm, a.Message)
		}
		t.Logf("%s after the STOP: %s", a.Time.Sub(stopAt).Round(time.Millisecond), a.Message)
		noAlarm(t, st, store.AlarmSilence, h, "a clean stop")
	})
	t.Run("started again", func(t *testing.T) {
		t.Parallel()
		h, st, stopAt := stopRun(t, "restarted.example")
		time.Sleep(stoppedAlarm / 3)
		h.start(st, fastOptions(h.id), forward.Config{})
		stopOnCleanup(t, h)
		for i := uint32(1000); time.Now().Before(stopAt.Add(stoppedAlarm + 2*watchTick)); i++ {
			h.w.Append(event(i))
			time.Sleep(5 * time.Millisecond)
		}
		noAlarm(t, st, store.AlarmStopped, h, "a host that started again in time")
		noAlarm(t, st, store.AlarmSilence, h, "a host that stopped cleanly and started again")
		h.stop(10 * time.Second)
	})
	t.Run("store restart", func(t *testing.T) {
		t.Parallel()
		h, st, stopAt := stopRun(t, "store-restart.example")
		st.Stop()
		// The STOP's block holds the seal: the state saved at that seal holds the stop.
		data, err := os.ReadFile(filepath.Join(st.HostDir("store-restart.example"), store.StateFile))
		if err != nil {
			t.Fatal(err)
		}
		var state struct {
			Stop *struct {
				Index    uint64 `json:"index"`
				Time     int64  `json:"time"`
				Verified bool   `json:"verified"`
			} `json:"stop"`
		}
		if err := json.Unmarshal(data, &state); err != nil || state.Stop == nil || !state.Stop.Verified || state.Stop.Time != stopAt.UnixNano() {
			t.Fatalf("the saved state does not hold the verified STOP of %s: %v %s", stopAt, err, data)
		}
		st.Start()
		waitUntil(time.Now().Add(200*time.Millisecond + stopGrace + 2*watchTick))
		noAlarm(t, st, store.AlarmSilence, h, "a clean stop, after a store restart")
		a := waitAlarm(t, st, store.AlarmStopped, "store-restart.example", stopAt.Add(stoppedAlarm+3*watchTick))
		if a.Time.Before(stopAt.Add(stoppedAlarm)) {
			t.Errorf("stopped alarm at %s, STOP at %s, StoppedAlarm %s", a.Time, stopAt, stoppedAlarm)
		}
	})
	t.Run("crash", func(t *testing.T) {
		t.Parallel()
		const origin = "crash.example"
		h := newHost(t, origin)
		st := shiptest.StartStore(t, "", store.Config{Grace: stopGrace, StoppedAlarm: stoppedAlarm}, h.pub)
		h.start(st, fastOptions(h.id), forward.Config{})
		for i := uint32(1); i <= 200; i++ {
			h.w.Append(event(i))
			time.Sleep(2 * time.Millisecond)
		}
		waitCaughtUp(t, h, 10*time.Second)
		// The shipper ends before the writer's STOP: the store's copy ends inside the run, as a crash
		// leaves it.
		h.cancel()
		<-h.done
		cut := time.Now()
		if err := h.w.Close(); err != nil {
			t.Fatal(err)
		}
		a := waitAlarm(t, st, store.AlarmSilence, origin, cut.Add(200*time.Millisecond+stopGrace+3*watchTick))
		t.Logf("%s after the cut: %s", a.Time.Sub(cut).Round(time.Millisecond), a.Message)
		waitUntil(cut.Add(stoppedAlarm + 2*watchTick))
		noAlarm(t, st, store.AlarmStopped, h, "a copy that ends without STOP")
		r, err := verify.Dir(st.HostDir(origin), verify.Options{})
		if err != nil || len(r.Runs) != 1 || r.Runs[0].Ended != "crashed" {
			t.Fatalf("the store's copy: %v %+v", err, r.Runs)
		}
	})
}

// stopRun runs a daemon (writer and shipper) on a new host shipping to a new store, appends events and
// stops it cleanly. When its shipper has returned, the store must hold the whole archive, ending with the
// run's STOP, under a receipt. It returns the STOP's time.
func stopRun(t *testing.T, origin string) (*host, *shiptest.Store, time.Time) {
	t.Helper()
	h := newHost(t, origin)
	st := shiptest.StartStore(t, "", store.Config{Grace: stopGrace, StoppedAlarm: stoppedAlarm}, h.pub)
	h.start(st, fastOptions(h.id), forward.Config{})
	for i := uint32(1); i <= 300; i++ {
		h.w.Append(event(i))
		time.Sleep(2 * time.Millisecond)
	}
	h.stop(10 * time.Second)
	end := h.w.Durable()
	if _, _, leaves, ok := st.Server.Held(origin); !ok || leaves != end.Size {
		t.Fatalf("the store holds %d leaves when the shipper returns, the archive %d", leaves, end.Size)
	}
	rs, bad, err := receipt.Read(filepath.Join(st.HostDir(origin), store.ReceiptsFile), st.Key)
	newest, ok := receipt.Newest(rs)
	if err != nil || bad != 0 || !ok || newest.Checkpoint.Size != end.Size {
		t.Fatalf("the store's newest receipt covers %d leaves (%v, %d bad), the archive holds %d", newest.Checkpoint.Size, err, bad, end.Size)
	}
	if c, err := archive.PeekCheckpoint(h.sh.Status().Receipt); err != nil || c.Size != end.Size {
		t.Fatalf("the shipper's receipt covers %d leaves (%v), the archive %d", c.Size, err, end.Size)
	}
	vk, _, _ := archive.LoadVerifierKey(h.pub)
	r, err := verify.Dir(st.HostDir(origin), verify.Options{Key: vk})
	if err != nil || r.Status != verify.Pass || len(r.Runs) != 1 || r.Runs[0].Ended != "stopped" || r.Runs[0].Stop == nil || *r.Runs[0].Stop+2 != end.Size {
		t.Fatalf("the store's copy does not end with the run's STOP and seal: %v %+v", err, r)
	}
	stopAt, err := time.Parse(time.RFC3339Nano, r.Runs[0].StopTime)
	if err != nil {
		t.Fatal(err)
	}
	return h, st, stopAt
}

// waitUntil sleeps until t.
func waitUntil(t time.Time) { time.Sleep(time.Until(t)) }

// storeAlarms returns the alarms of kind about origin that st raised since it (re)started.
func storeAlarms(st *shiptest.Store, kind, origin string) []store.Alarm {
	var out []store.Alarm
	for _, a := range st.Server.Alarms() {
		if a.Kind == kind && a.Host == origin {
			out = append(out, a)
		}
	}
	return out
}

// waitAlarm waits until st raised an alarm of kind about origin, and fails the test at deadline.
func waitAlarm(t *testing.T, st *shiptest.Store, kind, origin string, deadline time.Time) store.Alarm {
	t.Helper()
	for {
		if as := storeAlarms(st, kind, origin); len(as) > 0 {
			return as[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s alarm about %s by %s: %+v", kind, origin, deadline, st.Server.Alarms())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// noAlarm fails the test if st raised an alarm of kind about h's host.
func noAlarm(t *testing.T, st *shiptest.Store, kind string, h *host, what string) {
	t.Helper()
	if as := storeAlarms(st, kind, h.id.Signer.Name()); len(as) > 0 {
		t.Errorf("%s raised a %s alarm: %+v", what, kind, as)
	}
}
