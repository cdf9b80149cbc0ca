package audit

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	libaudit "github.com/elastic/go-libaudit/v2"
	"github.com/rs/zerolog"
)

// Sink receives every event the capture emits, in emission order, including LOST events. Append must copy
// what it keeps (the event is reused after the call) and must not block on I/O: the netlink reader calls
// it, and a blocked reader makes audited tasks wait in the kernel.
type Sink interface {
	Append(ev *RawEvent)
}

// Capture reads records from a registered Conn, reassembles them and hands events to a Sink, with loss
// accounting: kernel lost-counter increases (polled), serial gaps and socket overruns each become a LOST
// event in the stream.
type Capture struct {
	Conn         *Conn
	Reassembler  *Reassembler
	PollInterval time.Duration // how often the kernel's lost counter is read; default 1 s
	Log          zerolog.Logger
	// BeforeUnregister runs once the context is cancelled, while the data socket is still registered, so
	// that records caused by it (rule removal) are still captured. May be nil.
	BeforeUnregister func()
	// Tap, when set, sees every record as received, before reassembly (for recording test streams).
	Tap func(typ uint16, text []byte)
	// ConfigChange, when set, is signalled (without blocking) for every CONFIG_CHANGE record: someone
	// changed the kernel's audit rules or settings.
	ConfigChange chan<- struct{}
	// Alive, when set, is called by the capture loop at every turn (a record, or the 100 ms receive timeout
	// when idle) with the time: a liveness signal that only a turning loop gives, for a watchdog. It must
	// not block.
	Alive func(now int64)
	// Reregistered counts how often the kernel had dropped the daemon and it registered again.
	Reregistered int
	// Baseline is the kernel's lost counter from which every increase is reported as LOST: the value
	// given to Since, or else Run's first reading.
	Baseline uint32

	lost      uint32
	lostKnown bool
	recheck   bool // verify, once the socket is drained, that the kernel still sends to us

	// kernel is the latest reading of the kernel's audit status (KernelStatus).
	kernel atomic.Pointer[KernelReading]

	// ctl serialises the control socket between the status poller and the capture loop. The poller
	// exists because go-libaudit's GetStatus sleeps 50 ms whenever the reply is not already queued (about
	// one call in three here): on the capture loop that stalled every event for 50 ms each second.
	ctl sync.Mutex
}

// Since sets the kernel's lost counter as read at registration (st.Lost right after Register): records
// the kernel loses while the daemon starts up (the archive opening, the rules loading, before Run reads)
// are then reported too.
func (c *Capture) Since(lost uint32) {
	c.lost, c.lostKnown, c.Baseline = lost, true, lost
}

// Control runs f with the control socket, which the capture's status poller also uses: go-libaudit's
// client is not safe for concurrent use.
func (c *Capture) Control(f func(*libaudit.AuditClient) error) error {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	return f(c.Conn.Control())
}

// statusReply is one reading of the kernel's audit status by the poller.
type statusReply struct {
	st  *libaudit.AuditStatus
	err error
}

// Run captures until ctx is cancelled, then runs BeforeUnregister, unregisters, drains the records already
// queued, emits every incomplete event and reports missing serials, and returns nil. It returns an error
// only if the socket fails; the caller still owns and closes Conn.
func (c *Capture) Run(ctx context.Context, sink Sink) error {
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	r := c.Reassembler
	r.Emit = sink.Append
	c.pollLost(time.Now().UnixNano())
	lastTick := time.Now().UnixNano()
	stopping := false
	status := make(chan statusReply, 1)
	pollCtx, stopPoll := context.WithCancel(context.Background())
	var polling sync.WaitGroup
	polling.Add(1)
	go func() {
		defer polling.Done()
		c.poll(pollCtx, status)
	}()
	defer func() { stopPoll(); polling.Wait() }()
	for {
		typ, text, err := c.Conn.Receive()
		now := time.Now().UnixNano()
		switch {
		case err == nil:
			if typ >= 1000 {
				if c.Tap != nil {
					c.Tap(typ, text)
				}
				if typ == TypeConfigChange && c.ConfigChange != nil {
					select {
					case c.ConfigChange <- struct{}{}:
					default:
					}
				}
				if perr := r.Push(typ, text, now); perr != nil {
					c.Log.Warn().Err(perr).Uint16("type", typ).Msg("kept a record without a valid stamp as its own event")
				}
			}
		case errors.Is(err, ErrIdle):
			if stopping {
				r.Flush(now)
				c.pollLost(now)
				return nil
			}
			if c.recheck {
				// The socket is drained: nothing already sent to us can be lost by registering again.
				c.reregister(now)
			}
		case errors.Is(err, ErrOverrun):
			c.Log.Error().Msg("netlink receive buffer overrun: records were dropped by the socket")
			r.Lost(Lost{Reason: LostSocket}, now)
			// After failed sends the kernel unregisters the daemon (kauditd's auditd_reset): check.
			c.recheck = true
		default:
			r.Flush(now)
			return err
		}
		if c.Alive != nil {
			c.Alive(now)
		}
		if now-lastTick >= int64(100*time.Millisecond) {
			lastTick = now
			r.Tick(now)
		}
		select {
		case rep := <-status:
			c.lostStatus(rep.st, rep.err, now)
		default:
		}
		if !stopping && ctx.Err() != nil {
			stopping = true
			stopPoll()
			polling.Wait()
			if c.BeforeUnregister != nil {
				c.BeforeUnregister()
			}
			if err := c.Conn.Unregister(); err != nil {
				c.Log.Error().Err(err).Msg("unregister")
			}
		}
	}
}

// pollLost reads the kernel's lost counter and emits a LOST event for any increase. The counter is a
// 32-bit value that an administrator can reset (auditctl --reset-lost): a decrease is a reset, and the new
// value is what was lost since, never a wrapped difference.
func (c *Capture) pollLost(now int64) {
	c.ctl.Lock()
	st, err := c.Conn.Control().GetStatus()
	c.ctl.Unlock()
	c.lostStatus(st, err, now)
}

// poll reads the kernel's audit status every PollInterval, off the capture loop, until ctx ends.
func (c *Capture) poll(ctx context.Context, out chan<- statusReply) {
	t := time.NewTicker(c.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.ctl.Lock()
		st, err := c.Conn.Control().GetStatus()
		c.ctl.Unlock()
		select {
		case out <- statusReply{st, err}:
		case <-ctx.Done():
			return
		}
	}
}

// KernelReading is one reading of the kernel's audit status.
type KernelReading struct {
	Status libaudit.AuditStatus
	At     time.Time
}

// KernelStatus returns the kernel's audit status as the capture last read it (every PollInterval, off
// the capture loop), or nil before the first reading. Safe for concurrent use; it costs the capture
// nothing per event.
func (c *Capture) KernelStatus() *KernelReading { return c.kernel.Load() }

// lostStatus handles a reading of the kernel's status: a changed pid, and lost-counter increases.
func (c *Capture) lostStatus(st *libaudit.AuditStatus, err error, now int64) {
	if err != nil {
		c.Log.Warn().Err(err).Msg("read kernel audit status")
		return
	}
	c.kernel.Store(&KernelReading{Status: *st, At: time.Unix(0, now)})
	if int(st.PID) != os.Getpid() {
		c.recheck = true
	}
	if !c.lostKnown {
		c.lost, c.lostKnown, c.Baseline = st.Lost, true, st.Lost
		if st.Lost > 0 {
			c.Log.Info().Uint32("lost", st.Lost).Msg("kernel lost counter before capture started")
		}
		return
	}
	var delta uint32
	if st.Lost >= c.lost {
		delta = st.Lost - c.lost
	} else {
		delta = st.Lost
	}
	c.lost = st.Lost
	if delta > 0 {
		c.Log.Warn().Uint32("lost", delta).Msg("kernel lost audit records")
		c.Reassembler.Lost(Lost{Reason: LostKernel, Count: uint64(delta)}, now)
	}
}

// reregister registers again if the kernel has dropped this daemon. The kernel unregisters a daemon whose
// socket stays full (it then holds records for the next daemon, up to the backlog limit, and counts the
// rest as lost), and the capture must not silently stop: the records it held flow to us once we are back,
// and what it could not hold shows as LOST through its lost counter.
func (c *Capture) reregister(now int64) {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	c.recheck = false
	st, err := c.Conn.Control().GetStatus()
	if err != nil {
		c.Log.Warn().Err(err).Msg("read kernel audit status")
		c.recheck = true
		return
	}
	if int(st.PID) == os.Getpid() {
		return
	}
	c.Log.Error().Uint32("registered_pid", st.PID).Msg("the kernel unregistered this daemon; registering again")
	if err := c.Conn.Register(); err != nil {
		c.Log.Error().Err(err).Msg("register again")
		c.recheck = true
		return
	}
	c.Reregistered++
}
