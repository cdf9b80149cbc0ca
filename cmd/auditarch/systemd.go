package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive/writer"
)

// notifier speaks sd_notify(3) with the service manager that started the daemon (systemd, Type=notify;
// packaging/auditarch.service): READY=1 once the daemon is set up, WATCHDOG=1 from the capture loop,
// STATUS= lines, STOPPING=1 at the stop. Without NOTIFY_SOCKET every method is a no-op.
//
// The socket is opened and connected once, before the self-sandbox: the sandbox's seccomp filter refuses
// AF_UNIX sockets and Landlock scopes abstract ones, so go-systemd's daemon.SdNotify, which dials at every
// call, would fail once confined. Messages are sent without blocking: a service manager that does not
// read loses them rather than stall the capture loop.
type notifier struct {
	fd       int           // connected unixgram socket, or -1
	watchdog time.Duration // WATCHDOG_USEC for this process; 0: no watchdog
	log      zerolog.Logger

	lastPing atomic.Int64 // unix ns of the last WATCHDOG=1
	started  sync.Once    // the capture loop has turned once
	turning  chan struct{}
	served   chan struct{} // closed when serve has returned (nil: not started)
}

// statusEvery is how often the STATUS= line is refreshed.
var statusEvery = 2 * time.Second

// newNotifier opens the notification socket named by NOTIFY_SOCKET, if any, and reads the watchdog
// interval (WATCHDOG_USEC, when WATCHDOG_PID is unset or this process). Errors are logged: a daemon that
// cannot tell systemd it is ready is still capturing (and systemd will say it timed out).
func newNotifier(log zerolog.Logger) *notifier {
	n := &notifier{fd: -1, log: log, turning: make(chan struct{})}
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return n
	}
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn().Err(err).Msg("systemd: watchdog setting ignored")
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err == nil {
		// A leading '@' names an abstract socket; unix.SockaddrUnix turns it into the NUL byte.
		if err = unix.Connect(fd, &unix.SockaddrUnix{Name: addr}); err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		log.Error().Err(err).Str("notify_socket", addr).Msg("systemd: cannot reach the notification socket")
		return n
	}
	n.fd, n.watchdog = fd, wd
	log.Info().Str("notify_socket", addr).Dur("watchdog", wd).Msg("systemd: notifying the service manager")
	return n
}

// send writes one notification, never waiting.
func (n *notifier) send(state string) {
	if n.fd < 0 {
		return
	}
	if _, err := unix.Write(n.fd, []byte(state)); err != nil {
		n.log.Warn().Err(err).Str("state", strings.SplitN(state, "\n", 2)[0]).Msg("systemd: notification not sent")
	}
}

// alive is audit.Capture's Alive hook: the capture loop calls it at every turn (at least every 100 ms),
// and it pings the watchdog at half its interval. So the pings come from the loop itself: a capture
// that is wedged (blocked in the sink, spinning elsewhere, deadlocked) stops them, and systemd kills and
// restarts the daemon after WatchdogSec.
func (n *notifier) alive(now int64) {
	if n.fd < 0 {
		return
	}
	n.started.Do(func() { close(n.turning) })
	if n.watchdog <= 0 || now-n.lastPing.Load() < int64(n.watchdog/2) {
		return
	}
	n.lastPing.Store(now)
	n.send(daemon.SdNotifyWatchdog)
}

// start runs serve in the background; close waits for it.
func (n *notifier) start(ctx context.Context, w *writer.Writer, lag func() (uint64, int64, bool)) {
	if n.fd < 0 {
		return
	}
	n.served = make(chan struct{})
	go func() {
		defer close(n.served)
		n.serve(ctx, w, lag)
	}()
}

// serve sends READY=1 once the capture loop turns and the archive holds a durable checkpoint (the writer
// makes its START block durable before Create returns; waiting for it here keeps that a checked
// condition rather than an assumption), then a STATUS= line every statusEvery, and STOPPING=1 when ctx
// ends. The caller starts it after the rules are programmed and the archive is open. lag reports the
// leaves and bytes durable locally and not yet acknowledged by the store.
func (n *notifier) serve(ctx context.Context, w *writer.Writer, lag func() (leaves uint64, bytes int64, connected bool)) {
	defer n.send(daemon.SdNotifyStopping)
	select {
	case <-n.turning:
	case <-ctx.Done():
		return
	}
	for w.Durable().Size == 0 {
		select {
		case <-w.DurableNotify():
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	prev, _, _ := w.Stats()
	at := time.Now()
	n.send(daemon.SdNotifyReady + "\n" + n.statusLine(w, 0, lag))
	n.log.Info().Msg("systemd: ready")
	t := time.NewTicker(statusEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cur, _, _ := w.Stats()
			rate := float64(cur-prev) / now.Sub(at).Seconds()
			prev, at = cur, now
			n.send(n.statusLine(w, rate, lag))
		}
	}
}

// statusLine is the STATUS= notification: capture rate, what the store does not hold yet, losses.
func (n *notifier) statusLine(w *writer.Writer, rate float64, lag func() (uint64, int64, bool)) string {
	appended, dropped, durable := w.Stats()
	leaves, bytes, connected := lag()
	store := "store connected"
	if !connected {
		store = "store not connected"
	}
	return fmt.Sprintf("STATUS=capturing: %.0f events/s, %d archived, %d dropped, %d leaves durable; store lag %d leaves (%d bytes), %s",
		rate, appended, dropped, durable, leaves, bytes, store)
}

// close waits until serve has sent STOPPING=1 (its context ended) and releases the socket.
func (n *notifier) close() {
	if n.fd < 0 {
		return
	}
	if n.served != nil {
		<-n.served
	}
	unix.Close(n.fd)
}

// shipLag is the store lag of s for the STATUS= line: the leaves durable in the archive and not yet
// acknowledged, the bytes (as of the shipper's last check), and whether it is connected.
func shipLag(s *shipping, w *writer.Writer) func() (uint64, int64, bool) {
	return func() (uint64, int64, bool) {
		st := s.sh.Status()
		var leaves uint64
		if d := w.Durable().Size; d > st.Size {
			leaves = d - st.Size
		}
		return leaves, st.Backlog, st.Connected
	}
}
