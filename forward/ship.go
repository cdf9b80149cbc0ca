// Package forward sends what the archive holds to where it must also be: the write-once store (Shipper;
// later, SIEM sinks).
//
// The local archive is the queue: the Shipper reads the segment files themselves, up to what the writer
// has made durable, and sends them byte for byte (docs/format.md, "Shipping protocol v1"). It keeps a
// window of unacknowledged bytes in flight, reconnects with backoff, and resumes from the position the
// store reports as durable, so an outage of the network, the store or the daemon itself is backfilled from
// the archive with nothing lost and nothing sent twice into the store's copy. When what is not yet shipped
// exceeds MaxBacklog, the writer sheds events (counted into a LOST leaf, reason ship_backlog) and an
// alarm is logged until the store catches up.
package forward

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/internal/wire"
)

// Config configures a Shipper.
type Config struct {
	Addr     string                  // the store, host:port
	StoreKey *receipt.CosignVerifier // the pinned store key: its TLS certificate and receipts must match
	Identity *archive.Identity       // the host identity: its key is the TLS client certificate's
	Dir      string                  // the archive directory
	// Writer is the archive's writer: it gives the durable position, and sheds events over MaxBacklog.
	Writer *writer.Writer
	// Window is how many bytes may be sent and not yet acknowledged; default 16 MiB.
	Window int64
	// MaxBacklog bounds the bytes durable locally and not yet acknowledged by the store; 0: no bound.
	MaxBacklog int64
	Log        zerolog.Logger
	// OnAck, when set, is called (from the shipper's goroutine) with each acknowledgement.
	OnAck func(Ack)
	// ReceiptsFile is where receipts are kept; default Dir/receipts.
	ReceiptsFile string
	// Backoff bounds the wait between connection attempts; default 100 ms doubling to 5 s.
	MinBackoff, MaxBackoff time.Duration
	// AckTimeout ends a connection on which bytes have waited this long for an acknowledgement (a network
	// that drops packets silently leaves TCP retransmitting for many minutes); default 10 s.
	AckTimeout time.Duration
}

// Ack is one acknowledgement from the store.
type Ack struct {
	Time    time.Time
	Segment string
	Offset  int64
	Size    uint64 // leaves the store holds, verified and durable
	Receipt []byte // a receipt covering ReceiptSize leaves, or nil
	// ReceiptSize is the tree size the receipt's checkpoint covers.
	ReceiptSize uint64
}

// Status is the shipper's state.
type Status struct {
	Connected bool
	Segment   string // the store's durable position, as last acknowledged
	Offset    int64
	Size      uint64
	Backlog   int64  // bytes durable locally and not acknowledged (as of the last check)
	Shedding  bool   // the backlog is over its bound
	LastError string // why the last connection ended
	Receipt   []byte // the latest receipt
	// Refused: the store holds another history for this host key (it refused the archive as a replay or
	// a fork, or holds more than it); the shipper has stopped retrying (ErrOtherHistory).
	Refused bool
	// ReceiptSize is the tree size the latest receipt covers, ReceiptTime the time the store put in it.
	ReceiptSize uint64
	ReceiptTime time.Time
}

// ErrOtherHistory: the store holds another history for this host's key than the local archive. The
// store is right to refuse; retrying cannot help. Either the archive was reset while its key was kept (a
// reset archive needs a new key and a new enrolment), or the archive was cut short, which is what
// truncation looks like: verify it against the store's receipts.
var ErrOtherHistory = errors.New("the store holds another history for this host key than the local archive")

// Shipper ships one archive to one store.
type Shipper struct {
	cfg Config
	tls *tls.Config

	mu      sync.Mutex
	st      Status
	known   bool          // st holds the store's position (a STATE was received)
	lastErr error         // why the last connection ended (st.LastError), for errors.Is
	changed chan struct{} // closed and replaced whenever st changes
	rf      *os.File
	follow  *archive.Follower // the durable extent of each segment (the shipper's position is the store's STATE)
	// receiptSize is the tree size the receipt in st.Receipt covers.
	receiptSize uint64
	// base is where the archive was durable when the shipper was made: what the store holds is counted
	// from there until it is reached.
	base archive.Position
}

// New checks cfg and returns a Shipper; Run starts it.
func New(cfg Config) (*Shipper, error) {
	if cfg.Window <= 0 {
		cfg.Window = 16 << 20
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 10 * time.Second
	}
	if cfg.ReceiptsFile == "" {
		cfg.ReceiptsFile = filepath.Join(cfg.Dir, receipt.ReceiptsFile)
	}
	if cfg.StoreKey == nil || cfg.Identity == nil || cfg.Identity.Key == nil || cfg.Writer == nil {
		return nil, errors.New("forward: a store key, the host identity and the archive's writer are required")
	}
	cert, err := wire.Certificate(cfg.Identity.Key, cfg.Identity.Signer.Name())
	if err != nil {
		return nil, err
	}
	want := cfg.StoreKey.PublicKey()
	// The archive is the queue: what may be sent, and when, is what a follower of it may read.
	s := &Shipper{cfg: cfg, changed: make(chan struct{}), follow: archive.NewFollower(cfg.Dir, cfg.Writer, archive.Cursor{}),
		base: cfg.Writer.Durable()}
	s.tls = &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		ServerName:         "auditarch-store",
		InsecureSkipVerify: true, // the store is pinned by its key below, not by a CA
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			k, err := wire.PeerKey(raw)
			if err != nil {
				return fmt.Errorf("store certificate: %w", err)
			}
			if !k.Equal(want) {
				return fmt.Errorf("%w: the store presented key %x…, the pinned store key is %s", ErrStoreKey, []byte(k)[:8], cfg.StoreKey.String())
			}
			return nil
		},
	}
	return s, nil
}

// ErrStoreKey is wrapped when the store's certificate does not carry the pinned store key.
var ErrStoreKey = errors.New("not the pinned store key")

// Status returns the shipper's state.
func (s *Shipper) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// LastErr is why the last connection ended (nil while connected or before any attempt), for errors.Is
// (ErrStoreKey).
func (s *Shipper) LastErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

func (s *Shipper) update(f func(st *Status)) {
	s.mu.Lock()
	f(&s.st)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// WaitShipped waits until the store has acknowledged everything up to pos (a Writer.Durable position) and
// given a receipt covering its leaves (pos.Size; every block ends with the checkpoint that signs its
// leaves, so the acknowledgement of the last one carries it), or ctx ends; its error then wraps ctx's and
// why the last connection ended (errors.Is(err, ErrStoreKey)). After the writer's Close, pos ends with the
// STOP and the seal: the store holds the clean stop once it returns nil.
func (s *Shipper) WaitShipped(ctx context.Context, pos archive.Position) error {
	for {
		s.mu.Lock()
		done := s.known && (s.st.Segment > pos.Segment || s.st.Segment == pos.Segment && s.st.Offset >= pos.Offset) &&
			s.receiptSize >= pos.Size
		ch := s.changed
		last := s.lastErr
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last error: %w)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-ch:
		}
	}
}

// Run ships until ctx ends: connect, resume, send, and after any failure reconnect with backoff.
func (s *Shipper) Run(ctx context.Context) error {
	rf, err := os.OpenFile(s.cfg.ReceiptsFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("forward: receipts: %w", err)
	}
	s.rf = rf
	defer rf.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.watchBacklog(ctx)
	}()
	defer wg.Wait()
	backoff := s.cfg.MinBackoff
	for ctx.Err() == nil {
		progressed, err := s.session(ctx)
		if ctx.Err() != nil {
			break
		}
		s.update(func(st *Status) { st.Connected, st.LastError, s.lastErr = false, err.Error(), err })
		ev := s.cfg.Log.Warn()
		var re *wire.RemoteError
		if errors.As(err, &re) && (re.Code == wire.CodeReplay || re.Code == wire.CodeFork) || errors.Is(err, errAhead) {
			s.update(func(st *Status) { st.Refused = true })
			s.cfg.Log.Error().Str("alarm", "ship").Err(err).
				Str("hint", "if this archive was reset on purpose, give it a new key (auditarch keygen) and enrol that; otherwise the local archive was cut short: auditarch verify --store-key STORE.pub --receipts RECEIPTS-FROM-THE-STORE ARCHIVE").
				Msg(ErrOtherHistory.Error() + ": shipping stopped (capture goes on locally)")
			<-ctx.Done()
			break
		}
		if errors.As(err, &re) || errors.Is(err, ErrStoreKey) || errors.Is(err, errAhead) {
			ev = s.cfg.Log.Error().Str("alarm", "ship")
		}
		if progressed {
			backoff = s.cfg.MinBackoff
		}
		ev.Err(err).Dur("retry_in", backoff).Msg("shipping to the store interrupted")
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
	return nil
}

var errAhead = errors.New("the store holds more than the local archive")

// session runs one connection. progressed says whether the store acknowledged anything.
func (s *Shipper) session(ctx context.Context) (bool, error) {
	var progress atomic.Bool
	err := s.connect(ctx, &progress)
	return progress.Load(), err
}

func (s *Shipper) connect(ctx context.Context, progressed *atomic.Bool) error {
	d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 5 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return err
	}
	c := tls.Client(raw, s.tls)
	// Every session ends on an error (or ctx): close the TCP connection, not the TLS one, whose
	// close_notify would wait up to 5 s on a link that takes nothing.
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	br := bufio.NewReaderSize(c, 64<<10)
	bw := bufio.NewWriterSize(c, 256<<10)
	if err := wire.WriteJSON(bw, wire.Hello, wire.HelloMsg{Version: wire.Version, Origin: s.cfg.Identity.Signer.Name()}); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	typ, p, err := wire.ReadFrame(br, nil)
	if err != nil {
		return fmt.Errorf("waiting for the store's STATE: %w", err)
	}
	if err := remoteError(typ, p); err != nil {
		return err
	}
	if typ != wire.State {
		return fmt.Errorf("store sent frame type %d, not STATE", typ)
	}
	var st wire.StateMsg
	if err := json.Unmarshal(p, &st); err != nil {
		return fmt.Errorf("STATE: %w", err)
	}
	c.SetDeadline(time.Time{})
	if st.Receipt != "" {
		if _, err := s.keepReceipt([]byte(st.Receipt)); err != nil {
			return err
		}
	}
	name, off, err := s.resume(st)
	if err != nil {
		return err
	}
	s.update(func(x *Status) {
		x.Connected, x.Segment, x.Offset, x.Size, x.LastError, s.lastErr = true, st.Segment, st.Offset, st.Size, "", nil
	})
	s.mu.Lock()
	s.known = true
	s.mu.Unlock()
	s.cfg.Log.Info().Str("store", s.cfg.Addr).Str("segment", st.Segment).Int64("offset", st.Offset).Uint64("size", st.Size).
		Str("from", name).Int64("at", off).Msg("shipping to the store")

	// Acknowledgements arrive on their own goroutine; the sender waits for window space on acked.
	var inflight struct {
		sync.Mutex
		bytes int64
		ends  []int64   // bytes sent per sequence number not yet acknowledged, in order
		first uint64    // sequence number of ends[0]
		since time.Time // when the oldest unacknowledged frame was sent, or the last ack came
	}
	acked := make(chan struct{}, 1)
	readErr := make(chan error, 1)
	go func() {
		var buf []byte
		for {
			typ, p, err := wire.ReadFrame(br, buf)
			if err != nil {
				readErr <- err
				return
			}
			buf = p[:0]
			if err := remoteError(typ, p); err != nil {
				readErr <- err
				return
			}
			if typ != wire.Ack {
				readErr <- fmt.Errorf("store sent frame type %d, not ACK", typ)
				return
			}
			var a wire.AckMsg
			if err := json.Unmarshal(p, &a); err != nil {
				readErr <- fmt.Errorf("ACK: %w", err)
				return
			}
			now := time.Now()
			inflight.Lock()
			inflight.since = now
			for inflight.first <= a.Seq && len(inflight.ends) > 0 {
				inflight.bytes -= inflight.ends[0]
				inflight.ends = inflight.ends[1:]
				inflight.first++
			}
			inflight.Unlock()
			ack := Ack{Time: now, Segment: a.Segment, Offset: a.Offset, Size: a.Size}
			if a.Receipt != "" {
				c, err := s.keepReceipt([]byte(a.Receipt))
				if err != nil {
					readErr <- err
					return
				}
				ack.Receipt, ack.ReceiptSize = []byte(a.Receipt), c.Size
			}
			s.update(func(x *Status) { x.Segment, x.Offset, x.Size = a.Segment, a.Offset, a.Size })
			if s.cfg.OnAck != nil {
				s.cfg.OnAck(ack)
			}
			progressed.Store(true)
			select {
			case acked <- struct{}{}:
			default:
			}
		}
	}()

	notify := s.cfg.Writer.DurableNotify()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var seq uint64
	var frame, chunk []byte
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	for {
		limit, complete, next, err := s.follow.Extent(name)
		if err != nil {
			return err
		}
		sent := false
		for off < limit {
			inflight.Lock()
			room := s.cfg.Window - inflight.bytes
			inflight.Unlock()
			if room <= 0 {
				break
			}
			if f == nil || filepath.Base(f.Name()) != name {
				if f != nil {
					f.Close()
				}
				if f, err = os.Open(filepath.Join(s.cfg.Dir, name)); err != nil {
					return err
				}
			}
			n := min(limit-off, int64(wire.MaxData), room)
			if int64(cap(chunk)) < n {
				chunk = make([]byte, n)
			}
			chunk = chunk[:n]
			if _, err := f.ReadAt(chunk, off); err != nil {
				return fmt.Errorf("read %s: %w", name, err)
			}
			// Whole blocks only: the store checks and keeps them as they arrive. The exceptions: a crash's
			// torn end of a finished segment, and a block larger than a frame or the window.
			if k := int64(archive.WholeBlocks(chunk, off)); k > 0 {
				n, chunk = k, chunk[:k]
			} else if !(complete && off+n == limit) && n == room && room < s.cfg.Window {
				break // wait for acknowledgements to make room for the whole block
			}
			seq++
			frame = wire.AppendData(frame[:0], seq, name, off, chunk)
			inflight.Lock()
			if len(inflight.ends) == 0 {
				inflight.first, inflight.since = seq, time.Now()
			}
			inflight.ends = append(inflight.ends, n)
			inflight.bytes += n
			deadline := inflight.since.Add(s.cfg.AckTimeout)
			inflight.Unlock()
			// A write blocks while the store takes nothing (a full send buffer): for no longer than the
			// oldest unacknowledged bytes may wait for their acknowledgement.
			c.SetWriteDeadline(deadline)
			if err := wire.WriteFrame(bw, wire.Data, frame); err != nil {
				return err
			}
			off += n
			sent = true
		}
		if sent {
			inflight.Lock()
			deadline := inflight.since.Add(s.cfg.AckTimeout)
			inflight.Unlock()
			c.SetWriteDeadline(deadline)
			if err := bw.Flush(); err != nil {
				return err
			}
			continue
		}
		inflight.Lock()
		stalled := len(inflight.ends) > 0 && time.Since(inflight.since) > s.cfg.AckTimeout
		inflight.Unlock()
		if stalled {
			return fmt.Errorf("the store acknowledged nothing for %s", s.cfg.AckTimeout)
		}
		if off >= limit && complete && next != "" {
			name, off = next, 0
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-readErr:
			return err
		case <-notify:
		case <-acked:
		case <-tick.C:
		}
	}
}

func remoteError(typ byte, p []byte) error {
	if typ != wire.Error {
		return nil
	}
	var m wire.ErrorMsg
	json.Unmarshal(p, &m)
	return &wire.RemoteError{ErrorMsg: m}
}

// resume finds where to continue from the store's STATE.
func (s *Shipper) resume(st wire.StateMsg) (string, int64, error) {
	files, err := s.follow.Segments()
	if err != nil {
		return "", 0, err
	}
	if st.Segment == "" {
		if len(files) == 0 {
			return "", 0, nil
		}
		return files[0], 0, nil
	}
	for _, f := range files {
		switch {
		case f == st.Segment:
			fi, err := os.Stat(filepath.Join(s.cfg.Dir, f))
			if err != nil {
				return "", 0, err
			}
			if fi.Size() < st.Offset {
				return "", 0, fmt.Errorf("%w: it holds %d bytes of %s, this host %d: the local archive was truncated (verify it against the store's receipt)",
					errAhead, st.Offset, f, fi.Size())
			}
			return f, st.Offset, nil
		case f > st.Segment:
			s.cfg.Log.Error().Str("alarm", "ship").Str("store_segment", st.Segment).Str("next", f).
				Msg("the segment the store holds last is not in the local archive: continuing with the next one")
			return f, 0, nil
		}
	}
	return "", 0, fmt.Errorf("%w: it holds segment %s, which sorts after every local segment", errAhead, st.Segment)
}

// keepReceipt checks a receipt's cosignature by the pinned store key and, when it covers more than the
// receipts kept so far, appends it to the receipts file. It returns the checkpoint the receipt covers.
func (s *Shipper) keepReceipt(r []byte) (archive.Checkpoint, error) {
	c, at, err := receipt.Open(r, s.cfg.StoreKey)
	if err != nil {
		return c, fmt.Errorf("%w: receipt: %v", ErrStoreKey, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.Receipt != nil && s.receiptSize >= c.Size {
		return c, nil
	}
	if err := receipt.Append(s.rf, r); err != nil {
		return c, fmt.Errorf("keep receipt: %w", err)
	}
	if err := s.rf.Sync(); err != nil {
		return c, fmt.Errorf("keep receipt: %w", err)
	}
	s.st.Receipt, s.receiptSize = append([]byte(nil), r...), c.Size
	s.st.ReceiptSize, s.st.ReceiptTime = c.Size, at
	return c, nil
}

// Unshipped returns how many bytes of the archive up to pos (a Writer.Durable position) the store has not
// acknowledged. reached is false when the store was not reached since the shipper was made: the bytes
// are then counted from where the archive was at that time, and the store may hold less.
func (s *Shipper) Unshipped(pos archive.Position) (n int64, reached bool, err error) {
	s.mu.Lock()
	reached, seg, off := s.known, s.st.Segment, s.st.Offset
	s.mu.Unlock()
	if !reached {
		seg, off = s.base.Segment, s.base.Offset
	}
	files, err := s.follow.Segments()
	if err != nil {
		return 0, reached, err
	}
	for _, f := range files {
		if f < seg {
			continue
		}
		size, _, _ := s.follow.Available(f, pos)
		if f == seg {
			size -= off
		}
		n += max(size, 0)
	}
	return n, reached, nil
}

// watchBacklog measures the bytes durable locally and not acknowledged every second, and makes the
// writer shed events while they exceed MaxBacklog.
func (s *Shipper) watchBacklog(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		shedding := s.st.Shedding
		s.mu.Unlock()
		backlog, _, err := s.Unshipped(s.cfg.Writer.Durable())
		if err != nil {
			continue
		}
		over := s.cfg.MaxBacklog > 0 && backlog > s.cfg.MaxBacklog
		under := s.cfg.MaxBacklog > 0 && backlog < s.cfg.MaxBacklog*9/10
		switch {
		case over && !shedding:
			s.cfg.Log.Error().Str("alarm", "backlog").Int64("backlog", backlog).Int64("max_backlog", s.cfg.MaxBacklog).
				Msg("the store has not taken this host's archive for too long: new events are dropped and counted (LOST ship_backlog) until it catches up")
			shedding = true
			s.cfg.Writer.Shed(true)
		case under && shedding:
			s.cfg.Log.Warn().Int64("backlog", backlog).Msg("the store caught up: recording events again")
			shedding = false
			s.cfg.Writer.Shed(false)
		}
		s.update(func(st *Status) { st.Backlog, st.Shedding = backlog, shedding })
	}
}
