package forward

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/forward/ecs"
)

// SIEM sinks (docs/forward.md). Each sink reads the archive through its own archive.Follower from its own
// cursor file, renders the leaves its filter selects, sends them in batches and commits its cursor only
// once the receiver has acknowledged the batch (a RELP "rsp 200", an fsync for a file; for syslog over
// TCP, which has no acknowledgement, once the batch has stood on an unbroken connection for Settle): at
// least once, never twice within one connection, and after any failure it resends from the committed
// cursor. A sink runs on its own goroutine: capture never waits for it, nor does any other sink.

// Sink types (SinkConfig.Type).
const (
	SinkFile      = "file"       // JSON lines (ECS) to a file, rotated by size, fsynced before each commit
	SinkStdout    = "stdout"     // JSON lines (ECS) to standard output
	SinkSyslogTLS = "syslog-tls" // RFC 5424 over TLS, RFC 5425 octet counting
	SinkSyslogTCP = "syslog-tcp" // RFC 5424 over plain TCP, octet counting (RFC 6587): lossy, see docs/forward.md
	SinkSyslogUDP = "syslog-udp" // RFC 5424 over UDP (RFC 5426), one datagram per event: lossy
	SinkRELP      = "relp"       // RFC 5424 over RELP (rsyslog's acknowledged protocol), optionally TLS
)

// Formats (SinkConfig.Format).
const (
	FormatECS     = "ecs"     // one ECS JSON document per line
	FormatRFC5424 = "rfc5424" // an RFC 5424 syslog message whose MSG is the ECS JSON document
)

// SinkConfig is one entry of the daemon's forward.sinks.
type SinkConfig struct {
	Name    string       `yaml:"name"`    // unique; names the cursor file
	Type    string       `yaml:"type"`    // one of the Sink* types
	Address string       `yaml:"address"` // host:port; for a file sink the file's path
	Format  string       `yaml:"format"`  // ecs (file, stdout) or rfc5424 (syslog, relp); the type's default when empty
	TLS     TLSConfig    `yaml:"tls"`
	Filter  FilterConfig `yaml:"filter"`
	Batch   int          `yaml:"batch"` // events per batch (and RELP window); default 512
	// Original puts the raw kernel records in event.original.
	Original bool `yaml:"original"`
	// MaxSize rotates a file sink's file when it is this large (bytes; default 100 MiB); Keep rotated
	// files are kept (default 5): file.1 is the newest.
	MaxSize int64 `yaml:"max_size"`
	Keep    int   `yaml:"keep"`
	// Settle is how long a batch written to a syslog TCP connection must stand on the unbroken connection
	// before its cursor is committed (default 2s): syslog has no acknowledgement.
	Settle time.Duration `yaml:"settle"`
	// Facility is the syslog facility (default 10, authpriv).
	Facility int `yaml:"facility"`
}

// TLSConfig says how a sink's TLS connection is authenticated. The server is verified by CA, or by Pin
// when set (then CA is not needed); a client certificate is sent when Cert and Key are set.
type TLSConfig struct {
	Enable     bool   `yaml:"enable"`      // for relp: TLS (syslog-tls always uses TLS)
	CA         string `yaml:"ca"`          // PEM file of the CA certificates the server's chain must end at
	Cert       string `yaml:"cert"`        // client certificate (PEM)
	Key        string `yaml:"key"`         // its private key (PEM)
	ServerName string `yaml:"server_name"` // name expected in the server's certificate; default the address's host
	// Pin is the SHA-256 of the server certificate's SubjectPublicKeyInfo, hex: the server must present
	// exactly that key (no CA needed).
	Pin string `yaml:"pin"`
}

// FilterConfig selects what a sink forwards. Empty lists select everything; LOST, POLICY, START, STOP
// and CLOCK leaves always pass (a loss or an attempt on the daemon is always forwarded).
type FilterConfig struct {
	Syscalls []string `yaml:"syscalls"` // syscall names (execve, connect…)
	Keys     []string `yaml:"keys"`     // audit rule keys
	// Class is the least alert class forwarded (unusual, violation, attack; docs/alert.md), with the
	// pattern files in Rules at Level (default server).
	Class string `yaml:"class"`
	Rules string `yaml:"rules"`
	Level string `yaml:"level"`
}

// SinkOptions are what a sink needs beside its configuration.
type SinkOptions struct {
	Dir    string         // the archive directory
	Source archive.Source // the archive's writer (nil: follow what is there and stop at its end)
	// CursorFile is where the sink's cursor is kept; default Dir/cursors/sink-<name>.json.
	CursorFile string
	Origin     string // the archive's origin (auditarch.origin)
	Host       ecs.Host
	Log        zerolog.Logger
	// Classify gives a leaf's alert class (alert.Class as an int: 1 unusual, 2 violation, 3 attack); required
	// when the filter names a class.
	Classify func(l *archive.Leaf, index uint64) int
	// MinBackoff and MaxBackoff bound the wait between connection attempts; default 100 ms doubling to 30 s.
	MinBackoff, MaxBackoff time.Duration
	// Dial replaces how a network sink connects (tests); nil: the configured transport.
	Dial func(ctx context.Context) (Transport, error)
}

// Transport delivers rendered messages to one receiver over one connection.
type Transport interface {
	// Send delivers msgs in order. When it returns nil the receiver has acknowledged them all, or,
	// for a transport with a Settle time, written them to the connection.
	Send(ctx context.Context, msgs [][]byte) error
	// Settle is how long written messages must stand on an unbroken connection before they count as
	// delivered: 0 for acknowledged transports.
	Settle() time.Duration
	// Healthy reports whether the connection is still up (nil), or why it is not.
	Healthy() error
	Close() error
}

// SinkStatus is a sink's progress.
type SinkStatus struct {
	Name      string
	Committed archive.Cursor // the cursor saved: every leaf before Committed.Index was delivered
	Sent      uint64         // messages sent (resends included)
	Resent    uint64         // messages sent again after a failure
	Connected bool
	LastError string
}

// Sink forwards an archive to one receiver.
type Sink struct {
	cfg  SinkConfig
	opts SinkOptions
	filt filter

	mu sync.Mutex
	st SinkStatus
}

// sinkClassNames are the class names a filter takes, by alert.Class value.
var sinkClassNames = map[string]int{"unusual": 1, "violation": 2, "attack": 3}

// NewSink checks cfg and returns a sink; Run starts it.
func NewSink(cfg SinkConfig, opts SinkOptions) (*Sink, error) {
	if cfg.Name == "" {
		return nil, errors.New("forward: a sink needs a name")
	}
	switch cfg.Type {
	case SinkFile, SinkStdout:
		if cfg.Format == "" {
			cfg.Format = FormatECS
		}
		if cfg.Type == SinkFile && cfg.Address == "" {
			return nil, fmt.Errorf("forward: sink %s: a file sink needs address: the file's path", cfg.Name)
		}
	case SinkSyslogTLS, SinkSyslogTCP, SinkSyslogUDP, SinkRELP:
		if cfg.Format == "" {
			cfg.Format = FormatRFC5424
		}
		if cfg.Address == "" && opts.Dial == nil {
			return nil, fmt.Errorf("forward: sink %s: address host:port is required", cfg.Name)
		}
	default:
		return nil, fmt.Errorf("forward: sink %s: unknown type %q (file, stdout, syslog-tls, syslog-tcp, syslog-udp, relp)", cfg.Name, cfg.Type)
	}
	if cfg.Format != FormatECS && cfg.Format != FormatRFC5424 {
		return nil, fmt.Errorf("forward: sink %s: unknown format %q (ecs, rfc5424)", cfg.Name, cfg.Format)
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 512
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = 100 << 20
	}
	if cfg.Keep <= 0 {
		cfg.Keep = 5
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 2 * time.Second
	}
	if cfg.Facility == 0 {
		cfg.Facility = 10
	}
	if opts.CursorFile == "" {
		opts.CursorFile = filepath.Join(opts.Dir, "cursors", "sink-"+cfg.Name+".json")
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	f := filter{syscalls: cfg.Filter.Syscalls, keys: cfg.Filter.Keys}
	if cfg.Filter.Class != "" {
		c, ok := sinkClassNames[cfg.Filter.Class]
		if !ok {
			return nil, fmt.Errorf("forward: sink %s: filter class %q: want unusual, violation or attack", cfg.Name, cfg.Filter.Class)
		}
		if opts.Classify == nil {
			return nil, fmt.Errorf("forward: sink %s: filter class needs the alert classifier", cfg.Name)
		}
		f.minClass, f.classify = c, opts.Classify
	}
	if opts.Dial == nil {
		var err error
		if opts.Dial, err = dialer(cfg); err != nil {
			return nil, fmt.Errorf("forward: sink %s: %w", cfg.Name, err)
		}
	}
	return &Sink{cfg: cfg, opts: opts, filt: f, st: SinkStatus{Name: cfg.Name}}, nil
}

// Status returns the sink's progress.
func (s *Sink) Status() SinkStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// filter selects leaves.
type filter struct {
	syscalls, keys []string
	minClass       int
	classify       func(*archive.Leaf, uint64) int
}

func (f *filter) pass(l *archive.Leaf, i uint64) bool {
	if !ecs.Exported(l.Kind) {
		return false
	}
	if l.Kind != archive.LeafEvent {
		return true
	}
	if len(f.syscalls) > 0 || len(f.keys) > 0 {
		ev := audit.Decode(&l.Event)
		if len(f.syscalls) > 0 && !slices.Contains(f.syscalls, ev.Sys) {
			return false
		}
		if len(f.keys) > 0 && !slices.Contains(f.keys, ev.Key) && !slices.ContainsFunc(ev.Keys, func(k string) bool { return slices.Contains(f.keys, k) }) {
			return false
		}
	}
	if f.minClass > 0 && f.classify(l, i) < f.minClass {
		return false
	}
	return true
}

// pending is a batch sent and not yet committed.
type pending struct {
	cur  archive.Cursor
	sent time.Time
}

// Run forwards until ctx ends. It returns nil then, or an error that stops the sink for good (its
// cursor cannot be read or saved).
func (s *Sink) Run(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(s.opts.CursorFile), 0o700); err != nil {
		return fmt.Errorf("forward: sink %s: %w", s.cfg.Name, err)
	}
	committed, err := archive.LoadCursor(s.opts.CursorFile)
	if err != nil {
		return fmt.Errorf("forward: sink %s: %w", s.cfg.Name, err)
	}
	s.mu.Lock()
	s.st.Committed = committed
	s.mu.Unlock()
	log := s.opts.Log.With().Str("sink", s.cfg.Name).Logger()
	render := newRenderer(s.cfg, s.opts)
	backoff := s.opts.MinBackoff
	var resendUntil uint64 // leaves before this index were sent before the last failure
	lastLag := time.Now()
	for ctx.Err() == nil {
		t, err := s.opts.Dial(ctx)
		if err == nil {
			s.setConnected(true, nil)
			var progressed bool
			progressed, resendUntil, err = s.session(ctx, t, committed, render, resendUntil, &lastLag, log)
			t.Close()
			committed = s.Status().Committed
			if progressed {
				backoff = s.opts.MinBackoff
			}
		}
		if ctx.Err() != nil {
			break
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			return err
		}
		s.setConnected(false, err)
		log.Warn().Err(err).Dur("retry_in", backoff).Uint64("committed", committed.Index).Msg("sink interrupted; resending from its cursor")
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.opts.MaxBackoff)
	}
	return nil
}

// fatalError stops a sink: its cursor cannot be saved.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

func (s *Sink) setConnected(up bool, err error) {
	s.mu.Lock()
	s.st.Connected = up
	if err != nil {
		s.st.LastError = err.Error()
	}
	s.mu.Unlock()
}

// session sends from the committed cursor over t until an error. progressed says whether a batch was
// committed; resendUntil is the highest leaf index sent, for counting resends.
func (s *Sink) session(ctx context.Context, t Transport, from archive.Cursor, render *renderer, resendUntil uint64,
	lastLag *time.Time, log zerolog.Logger) (bool, uint64, error) {
	f := archive.NewFollower(s.opts.Dir, s.opts.Source, from)
	defer f.Close()
	settle := t.Settle()
	var queue []pending
	progressed := false
	commit := func(force bool) error {
		if len(queue) == 0 {
			return nil
		}
		if err := t.Healthy(); err != nil {
			return err
		}
		n := 0
		for n < len(queue) && (settle == 0 || force || time.Since(queue[n].sent) >= settle) {
			n++
		}
		if n == 0 {
			return nil
		}
		c := queue[n-1].cur
		if err := archive.SaveCursor(s.opts.CursorFile, c); err != nil {
			return &fatalError{fmt.Errorf("forward: sink %s: %w", s.cfg.Name, err)}
		}
		queue = queue[n:]
		progressed = true
		s.mu.Lock()
		s.st.Committed = c
		s.mu.Unlock()
		return nil
	}
	batch := make([][]byte, 0, s.cfg.Batch)
	var buf []byte
	done, cancel := context.WithCancel(ctx)
	cancel() // a done context: Next returns at once when nothing more is durable
	for {
		batch, buf = batch[:0], buf[:0]
		var offsets []int
		var last uint64
		// Wait for the first leaf (at most until a settled batch may be committed), then take what is there.
		wait := 500 * time.Millisecond
		if settle > 0 && settle < wait {
			wait = settle
		}
		for len(offsets) < s.cfg.Batch {
			var l *archive.Leaf
			var i uint64
			var err error
			if len(offsets) == 0 && s.opts.Source != nil {
				c, cancelWait := context.WithTimeout(ctx, wait)
				l, i, err = f.Next(c)
				cancelWait()
			} else {
				l, i, err = f.Next(done)
			}
			if archive.IsCorrupt(err) {
				log.Error().Err(err).Msg("damaged archive block skipped")
				continue
			}
			if err != nil {
				if ctx.Err() != nil {
					return progressed, resendUntil, nil
				}
				break // nothing more durable now (or the end of an archive without a writer)
			}
			last = i
			if !s.filt.pass(l, i) {
				continue
			}
			start := len(buf)
			if buf, err = render.append(buf, l, i); err != nil {
				log.Error().Err(err).Uint64("leaf", i).Msg("leaf cannot be rendered; skipped")
				buf = buf[:start]
				continue
			}
			offsets = append(offsets, start, len(buf))
		}
		cur := f.Cursor()
		if len(offsets) > 0 {
			for k := 0; k < len(offsets); k += 2 {
				batch = append(batch, buf[offsets[k]:offsets[k+1]])
			}
			if err := t.Send(ctx, batch); err != nil {
				return progressed, max(resendUntil, last+1), err
			}
			s.mu.Lock()
			s.st.Sent += uint64(len(batch))
			if last < resendUntil {
				s.st.Resent += uint64(len(batch))
			}
			s.mu.Unlock()
		}
		if cur != s.Status().Committed && (len(queue) == 0 || queue[len(queue)-1].cur != cur) {
			queue = append(queue, pending{cur: cur, sent: time.Now()})
		}
		if err := commit(false); err != nil {
			return progressed, max(resendUntil, last+1), err
		}
		if ctx.Err() != nil {
			return progressed, resendUntil, nil
		}
		if s.opts.Source == nil && len(offsets) == 0 {
			// No writer: look again now and then (a test's archive, or one written by another process).
			select {
			case <-ctx.Done():
			case <-time.After(min(wait, 50*time.Millisecond)):
			}
		}
		if time.Since(*lastLag) >= 10*time.Second {
			*lastLag = time.Now()
			if s.opts.Source != nil {
				if lag := s.opts.Source.Durable().Size - s.Status().Committed.Index; lag > 0 {
					log.Info().Uint64("lag_leaves", lag).Uint64("committed", s.Status().Committed.Index).Msg("sink behind the archive")
				}
			}
		}
	}
}
