// Package store is the write-once receiving side of shipping (docs/format.md, "Shipping protocol v1").
//
// Its invariant: a byte of a host's archive is acknowledged only once it has been verified (package
// archive's Stream: every signature, the epoch key chain, every root, the segment linkage) and fsynced in
// that host's area, and nothing in an area is ever overwritten, truncated or deleted. Bytes that
// contradict what an area holds — a rewritten history, a replay with other content — are kept under the
// area's evidence/ directory and raise an alarm, as does a host that falls silent for longer than its
// heartbeat interval and a grace, and a host whose archive ends with a clean stop (a verified STOP) that
// has not started again within StoppedAlarm (a stopped host is not silent). Sealed segments are made immutable (FS_IMMUTABLE_FL) where the
// filesystem supports it. Every acknowledgement of a new checkpoint carries a receipt: the store's
// timestamped cosignature of it, also kept in the area's receipts file.
//
// It is exposed to every enrolled host and to the network, so what a client can make it spend is bounded
// (Config's limits, docs/format.md "Shipping protocol v1", Limits): connections not yet authenticated, and
// the time they get; memory per connection and per host; segment files and evidence per host; alarms and
// log lines per source and period. Serve survives Accept's errors.
//
// Layout of the store directory (0700):
//
//	store.key, store.pub          the store's receipt key (also its TLS key, which hosts pin)
//	alarms.log                    one JSON object per alarm
//	hosts/<origin>/host.pub       (origin path-escaped: auditarch%2Fweb1) an enrolled host's identity key (its TLS certificate's key)
//	hosts/<origin>/seg-*.aseg     its segment files, byte for byte as the host wrote them
//	hosts/<origin>/receipts       the receipts the store gave it
//	hosts/<origin>/evidence/      refused bytes and why
package store

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/internal/durable"
	"github.com/auditarch/auditarch/internal/wire"
)

// Files of the store directory.
const (
	KeyFile      = "store.key"
	PubFile      = "store.pub"
	AlarmsFile   = "alarms.log"
	HostsDir     = "hosts"
	HostKeyFile  = "host.pub"
	ReceiptsFile = "receipts"
	StateFile    = "state.json" // the verified state at the area's last seal (verify.Stream.Snapshot)
	EvidenceDir  = "evidence"
)

// Alarm kinds (docs/format.md, "Store directory").
const (
	AlarmTampered   = "tampered"   // bytes that do not verify (refused, kept as evidence)
	AlarmFork       = "fork"       // bytes that contradict what the area holds (refused, kept as evidence)
	AlarmReplay     = "replay"     // bytes identical to what the area holds, sent again (refused)
	AlarmRefused    = "refused"    // a certificate, HELLO or frame that does not match
	AlarmIncomplete = "incomplete" // the host's archive misses something (accepted)
	AlarmSilence    = "silence"    // nothing from an enrolled host for its heartbeat interval and the grace, and no clean stop
	AlarmStopped    = "stopped"    // a host that stopped cleanly has not started again within Config.StoppedAlarm
	AlarmStorage    = "storage"    // the store cannot read, write or fsync a host's area
	AlarmUpload     = "upload"     // a sealed segment cannot be uploaded
	AlarmWriteOnce  = "write-once" // the object store does not hold objects write-once
	AlarmQuota      = "quota"      // a host's area is at a limit (Config.MaxSegments, MaxEvidence, MaxEvidenceBytes)
)

// Defaults of Config's limits.
const (
	DefaultHandshakeTimeout   = 10 * time.Second
	DefaultMaxUnauthenticated = 64
	DefaultAlarmRepeat        = time.Minute
	DefaultMaxEvidence        = 1000
	DefaultMaxEvidenceBytes   = 256 << 20
	DefaultMaxSegments        = 100000
	// DefaultStoppedAlarm is longer than a reboot or a package upgrade takes, and short enough that a
	// daemon stopped on purpose does not go unnoticed for long.
	DefaultStoppedAlarm = 10 * time.Minute
)

// Uploader copies a sealed segment elsewhere (object storage under a retention lock). Put must be
// idempotent for the same content and must never replace different content.
type Uploader interface {
	Put(ctx context.Context, host, name, path string) error
}

// Config configures a store.
type Config struct {
	Dir   string
	Name  string        // the store key's name when it is created; default "auditarch-store"
	Grace time.Duration // silence allowed beyond a host's heartbeat interval before an alarm; default 5 s
	Log   zerolog.Logger
	// StoppedAlarm: a host whose archive ends with a clean stop (a verified STOP leaf) raises no silence
	// alarm, but a stopped alarm once it has not started again this long after its STOP's time (the
	// host's clock); default DefaultStoppedAlarm.
	StoppedAlarm time.Duration
	// Upload, when set, receives every sealed segment (retried until it succeeds).
	Upload Uploader
	// IdleTimeout closes a connection that sends nothing for this long; default 2 min.
	IdleTimeout time.Duration
	// Trace, when set, gets a line per acknowledgement: "<unix ns> <origin> <leaves durable> <leaves the
	// new receipt covers, or 0>" (the latency benchmark reads it).
	Trace io.Writer

	// Limits on what clients, enrolled or not, can make the store hold. Zero means the default.

	// HandshakeTimeout closes a connection that has not completed the TLS handshake and a valid HELLO
	// this long after it was accepted; default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxUnauthenticated bounds the connections between accept and a valid HELLO: one accepted beyond it
	// is closed at once (and counted, Stats.OverLimit); default DefaultMaxUnauthenticated.
	MaxUnauthenticated int
	// AlarmRepeat: an alarm of one kind about one host (about one remote address, for a client not
	// enrolled) is raised at most once per AlarmRepeat. Those held back meanwhile are counted: the next
	// one raised, or the last one held back when the period ends, tells how many (Alarm.Held); default
	// DefaultAlarmRepeat.
	AlarmRepeat time.Duration
	// MaxEvidence and MaxEvidenceBytes bound what a host's evidence/ holds: refusals kept (each a .bin
	// and a .json) and their bytes. Past either, refused bytes are counted, not kept, and a quota alarm
	// is raised; defaults DefaultMaxEvidence and DefaultMaxEvidenceBytes.
	MaxEvidence      int
	MaxEvidenceBytes int64
	// MaxSegments bounds a host's segment files: a new segment past it is refused (ERROR quota) and a
	// quota alarm raised; default DefaultMaxSegments.
	MaxSegments int
}

// Alarm is something an administrator must look at.
type Alarm struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"` // one of the Alarm constants
	Host    string    `json:"host,omitempty"`
	Remote  string    `json:"remote,omitempty"`
	Message string    `json:"message"`
	// Held counts the alarms like this one (kind, and host or remote) held back before it since the last
	// one raised (Config.AlarmRepeat): this one stands for 1+Held.
	Held int `json:"held,omitempty"`
}

// Stats counts what the store turned away or held back without an alarm of its own.
type Stats struct {
	Unauthenticated int    // connections now between accept and a valid HELLO
	OverLimit       uint64 // connections closed at accept: MaxUnauthenticated were already pending
	AcceptErrors    uint64 // Accept errors the store waited out
	AlarmsHeld      uint64 // alarms held back by AlarmRepeat (each counted in a later alarm)
	EvidenceDropped uint64 // refusals whose bytes were not kept: the host's evidence quota was reached
}

// uploadGrace is how long a stopping store waits for uploads in progress.
const uploadGrace = 10 * time.Second

// errRefusedCert is wrapped by the handshake error of a client whose certificate is missing or is not an
// enrolled host's.
var errRefusedCert = errors.New("certificate refused")

// Server is a running store.
type Server struct {
	cfg    Config
	key    *receipt.Cosigner
	cert   tls.Certificate
	ctx    context.Context
	cancel context.CancelFunc
	// upCtx bounds uploads, which outlive ctx by up to uploadGrace.
	upCtx    context.Context
	upCancel context.CancelFunc
	uploads  sync.WaitGroup

	mu      sync.Mutex
	hosts   map[string]*host // by origin
	conns   map[net.Conn]struct{}
	pending int // connections between accept and a valid HELLO
	stats   Stats
	alarms  []Alarm
	limited limiter              // alarms and log lines a client can cause at will
	raised  map[[2]string]uint64 // alarms raised since Open by host and kind (HostFigures.Alarms)
	afile   *os.File
	wg      sync.WaitGroup
}

// Open opens (creating, the first time) the store in cfg.Dir: its key, and the areas of enrolled hosts,
// each verified in full.
func Open(cfg Config) (*Server, error) {
	if cfg.Name == "" {
		cfg.Name = "auditarch-store"
	}
	if cfg.Grace <= 0 {
		cfg.Grace = archive.DefaultGrace
	}
	if cfg.StoppedAlarm <= 0 {
		cfg.StoppedAlarm = DefaultStoppedAlarm
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxUnauthenticated <= 0 {
		cfg.MaxUnauthenticated = DefaultMaxUnauthenticated
	}
	if cfg.AlarmRepeat <= 0 {
		cfg.AlarmRepeat = DefaultAlarmRepeat
	}
	if cfg.MaxEvidence <= 0 {
		cfg.MaxEvidence = DefaultMaxEvidence
	}
	if cfg.MaxEvidenceBytes <= 0 {
		cfg.MaxEvidenceBytes = DefaultMaxEvidenceBytes
	}
	if cfg.MaxSegments <= 0 {
		cfg.MaxSegments = DefaultMaxSegments
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, HostsDir), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := os.Chmod(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	keyPath := filepath.Join(cfg.Dir, KeyFile)
	if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
		vkey, err := receipt.CosignerKeygen(cfg.Dir, cfg.Name)
		if err != nil {
			return nil, fmt.Errorf("store: create key: %w", err)
		}
		cfg.Log.Info().Str("store_key", vkey).Msg("created the store key: hosts pin " + filepath.Join(cfg.Dir, PubFile))
	}
	key, err := receipt.LoadCosigner(keyPath)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	cert, err := wire.Certificate(key.TLSKey(), "auditarch-store")
	if err != nil {
		return nil, err
	}
	af, err := os.OpenFile(filepath.Join(cfg.Dir, AlarmsFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	s := &Server{cfg: cfg, key: key, cert: cert, hosts: map[string]*host{}, conns: map[net.Conn]struct{}{}, afile: af,
		limited: limiter{every: cfg.AlarmRepeat, entries: map[string]*limitEntry{}}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.upCtx, s.upCancel = context.WithCancel(context.Background())
	ents, err := os.ReadDir(filepath.Join(cfg.Dir, HostsDir))
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		origin, err := url.PathUnescape(e.Name())
		if err != nil {
			continue
		}
		h, err := s.loadHost(origin)
		if err != nil {
			af.Close()
			return nil, err
		}
		s.hosts[h.origin] = h
	}
	return s, nil
}

// AreaDir returns the directory of origin's area under the store directory dir. Origins may hold "/"
// (C2SP origins look like "auditarch/web1"): the directory name is the origin path-escaped.
func AreaDir(dir, origin string) string {
	return filepath.Join(dir, HostsDir, url.PathEscape(origin))
}

// Held returns what the store holds of origin's archive, verified and durable: the segment its area ends
// in, that segment's length, and the number of leaves.
func (s *Server) Held(origin string) (segment string, offset int64, leaves uint64, ok bool) {
	s.mu.Lock()
	h := s.hosts[origin]
	s.mu.Unlock()
	if h == nil {
		return "", 0, 0, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.load(); err != nil {
		return "", 0, 0, false
	}
	return h.name, h.off, h.stream.Size(), true
}

// VerifierKey returns the store key's verifier key (what hosts pin and verify receipts with).
func (s *Server) VerifierKey() string { return s.key.VerifierKey() }

// Enroll admits a host: its identity verifier key (host.pub) becomes the only key whose certificate may
// send the archive of its origin. Enrolling the same key again is a no-op; another key for an enrolled
// origin is refused.
func Enroll(dir, vkey string) (origin string, err error) {
	vkey = strings.TrimSpace(vkey)
	v, err := archive.VerifierPublicKey(vkey)
	if err != nil || len(v) == 0 {
		return "", fmt.Errorf("enroll: %w", err)
	}
	origin, _, _ = strings.Cut(vkey, "+")
	if origin == "" || origin == "." || origin == ".." {
		return "", fmt.Errorf("enroll: origin %q cannot name a directory", origin)
	}
	hdir := AreaDir(dir, origin)
	path := filepath.Join(hdir, HostKeyFile)
	if old, err := os.ReadFile(path); err == nil {
		if strings.TrimSpace(string(old)) != vkey {
			return "", fmt.Errorf("enroll: host %q is enrolled with another key (%s)", origin, path)
		}
		return origin, nil
	}
	if err := os.MkdirAll(hdir, 0o700); err != nil {
		return "", fmt.Errorf("enroll: %w", err)
	}
	if err := durable.Create(path, []byte(vkey+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("enroll: %w", err)
	}
	return origin, nil
}

// Enroll admits a host to the running store (see the function Enroll).
func (s *Server) Enroll(vkey string) error {
	origin, err := Enroll(s.cfg.Dir, vkey)
	if err != nil {
		return err
	}
	s.mu.Lock()
	_, ok := s.hosts[origin]
	s.mu.Unlock()
	if ok {
		return nil
	}
	h, err := s.loadHost(origin)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.hosts[origin] = h
	s.mu.Unlock()
	return nil
}

// Alarms returns the alarms raised since Open (the last 1000; alarms.log keeps all).
func (s *Server) Alarms() []Alarm {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Alarm(nil), s.alarms...)
}

// HostFigures is what the store holds of one enrolled host and what it raised about it, for metrics.
type HostFigures struct {
	Origin   string
	Leaves   uint64 // leaves of its archive the store holds, verified and durable
	Bytes    int64  // bytes of its segment files
	Segments int    // its segment files
	// LastData is when the store last took bytes from it (since Open: Open's time until then).
	LastData time.Time
	// LastReceipt is when the store last gave it a receipt, covering ReceiptLeaves (zero: none since Open).
	LastReceipt   time.Time
	ReceiptLeaves uint64
	Silent        bool // a silence alarm stands (nothing for its heartbeat and the grace, no clean stop)
	Stopped       bool // its archive ends with a clean stop
	// Alarms counts the alarms raised about it since Open by kind (those held back by AlarmRepeat
	// included); the alarms about clients not known to be a host are under Origin "".
	Alarms map[string]uint64
}

// Hosts returns the figures of every enrolled host, and an entry with Origin "" for the alarms about
// clients that are none, in no particular order. It never waits for a host's connection.
func (s *Server) Hosts() []HostFigures {
	s.mu.Lock()
	hosts := make([]*host, 0, len(s.hosts))
	for _, h := range s.hosts {
		hosts = append(hosts, h)
	}
	alarms := map[string]map[string]uint64{}
	for k, n := range s.raised {
		if alarms[k[0]] == nil {
			alarms[k[0]] = map[string]uint64{}
		}
		alarms[k[0]][k[1]] = n
	}
	s.mu.Unlock()
	out := make([]HostFigures, 0, len(hosts)+1)
	for _, h := range hosts {
		h.smu.Lock()
		out = append(out, HostFigures{Origin: h.origin, Leaves: h.fig.leaves, Bytes: h.fig.bytes, Segments: h.fig.segments,
			LastData: h.lastData, LastReceipt: h.fig.receiptAt, ReceiptLeaves: h.fig.receiptLeaves, Silent: h.silent,
			Stopped: !h.stopped.IsZero(), Alarms: alarms[h.origin]})
		h.smu.Unlock()
	}
	if a := alarms[""]; a != nil {
		out = append(out, HostFigures{Alarms: a})
	}
	return out
}

// Stats returns the store's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Unauthenticated = s.pending
	return st
}

// alarm records an alarm in alarms.log and the log, at most once per AlarmRepeat for one kind and one
// source: the host, or for a client not known to be one, its address (docs/format.md, "Store
// directory"). Whatever a client can make the store do again and again (be refused, send a replay, a
// fork, tampered bytes, fill its quota, reconnect after a full disk) must not fill the disk with alarms:
// those held back are counted, and the count is raised when the period ends (flushLimited).
func (s *Server) alarm(kind, host, remote, format string, args ...any) {
	a := Alarm{Time: time.Now().UTC(), Kind: kind, Host: host, Remote: remote, Message: fmt.Sprintf(format, args...)}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok, held, since := s.limited.take("alarm\x00"+kind, host, remote, a.Time)
	if !ok {
		s.stats.AlarmsHeld++
		// Raised when the period ends, unless another comes first: it stands for held-1 before it.
		e.flush = func(held int, since time.Duration) {
			b := a
			b.Held = held - 1
			b.Message += heldNote(b.Held, since)
			s.raise(b)
		}
		return
	}
	a.Held = held
	a.Message += heldNote(held, since)
	s.raise(a)
}

// heldNote is what a message says of the n like it held back in the period before it.
func heldNote(n int, since time.Duration) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (and %d more like it in the %s before, held back)", n, since.Round(time.Millisecond))
}

// raise writes an alarm to the log, Alarms and alarms.log. s.mu is held.
func (s *Server) raise(a Alarm) {
	ev := s.cfg.Log.Error().Str("alarm", a.Kind).Str("host", a.Host).Str("remote", a.Remote)
	if a.Held > 0 {
		ev = ev.Int("held", a.Held)
	}
	ev.Msg(a.Message)
	if s.raised == nil {
		s.raised = map[[2]string]uint64{}
	}
	s.raised[[2]string{a.Host, a.Kind}] += 1 + uint64(a.Held)
	if len(s.alarms) >= maxAlarms {
		s.alarms = s.alarms[1:]
	}
	s.alarms = append(s.alarms, a)
	b, _ := json.Marshal(a)
	if _, err := s.afile.Write(append(b, '\n')); err == nil {
		s.afile.Sync()
	}
}

// logLimited logs msg about a connection at level, at most once per AlarmRepeat for one message and
// source (the host, or the remote address): a client that connects again and again must not fill the
// log. The lines held back are counted into one when the period ends.
func (s *Server) logLimited(level zerolog.Level, msg, host, remote string, err error, fields map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	line := func(held int, since time.Duration) {
		ev := s.cfg.Log.WithLevel(level).Str("remote", remote)
		if err != nil {
			ev = ev.Err(err)
		}
		if host != "" {
			ev = ev.Str("host", host)
		}
		if held > 0 {
			ev = ev.Int("held", held)
		}
		ev.Fields(fields).Msg(msg + heldNote(held, since))
	}
	e, ok, held, since := s.limited.take("log\x00"+msg, host, remote, time.Now())
	if !ok {
		e.flush = func(held int, since time.Duration) { line(held-1, since) }
		return
	}
	line(held, since)
}

// warn is logLimited at warning level.
func (s *Server) warn(msg, host, remote string, err error) {
	s.logLimited(zerolog.WarnLevel, msg, host, remote, err, nil)
}

// flushLimited raises the last alarm and log line held back of each period that has ended (of every
// period when the store stops), with the count of those before it.
func (s *Server) flushLimited(now time.Time, all bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limited.flush(now, all)
}

// maxAlarms is how many alarms Alarms keeps.
const maxAlarms = 1000

// limiter lets one event a period through for each key and source, and counts those it holds back.
type limiter struct {
	every   time.Duration
	entries map[string]*limitEntry
	remotes int // entries whose source is a remote address
}

type limitEntry struct {
	at     time.Time // when one was last let through
	held   int       // held back since
	remote bool
	// flush reports the last one held back, which stands for held (it sets flush).
	flush func(held int, since time.Duration)
}

// maxRemoteSources bounds the remote addresses the limiter tells apart; past it they share one source,
// so that a client with many addresses grows neither the limiter nor the alarms without bound.
const maxRemoteSources = 1024

// take returns key's entry for the source (host, or remote when host is empty) and whether an event may
// go through now; if so, how many were held back before it, over how long (it tells of them).
func (l *limiter) take(key, host, remote string, now time.Time) (e *limitEntry, ok bool, held int, since time.Duration) {
	k, isRemote := key+"\x00host:"+host, host == ""
	if isRemote {
		k = key + "\x00remote:" + remoteSource(remote)
	}
	e = l.entries[k]
	if e == nil && isRemote && l.remotes >= maxRemoteSources {
		k = key + "\x00remote:*"
		e = l.entries[k]
	}
	if e != nil && now.Sub(e.at) < l.every {
		e.held++
		return e, false, 0, 0
	}
	if e == nil {
		e = &limitEntry{remote: isRemote}
		l.entries[k] = e
		if isRemote {
			l.remotes++
		}
	}
	held, since = e.held, now.Sub(e.at)
	e.at, e.held, e.flush = now, 0, nil
	return e, true, held, since
}

// flush reports what was held back in periods that have ended (all of it when all is set): the last
// event held back goes through, telling of those before it. A period starts then: a flood gets one line
// per period. Sources quiet for a whole period are forgotten.
func (l *limiter) flush(now time.Time, all bool) {
	for k, e := range l.entries {
		if !all && now.Sub(e.at) < l.every {
			continue
		}
		if e.held > 0 {
			if e.flush != nil {
				e.flush(e.held, now.Sub(e.at))
			}
			e.at, e.held, e.flush = now, 0, nil
			continue
		}
		if !all {
			delete(l.entries, k)
			if e.remote {
				l.remotes--
			}
		}
	}
}

// remoteSource is the source a remote address ("ip:port") counts as: its IP address, or for IPv6 its
// /64 (one host commonly holds a whole /64).
func remoteSource(remote string) string {
	h, _, err := net.SplitHostPort(remote)
	if err != nil {
		h = remote
	}
	ip := net.ParseIP(h)
	switch {
	case ip == nil:
		return h
	case ip.To4() != nil:
		return ip.To4().String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// Serve accepts hosts on ln until ctx ends, Close, or ln is closed, then closes every connection and
// returns. An error of Accept (EMFILE when connections fill the file descriptor limit, for one) does not
// end it: it waits as net/http does, 5 ms doubling to 1 s, and accepts again. It returns an error only
// when ln was closed by someone else.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	tcfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.cert},
		// Requested, not required, so that a client without one reaches VerifyPeerCertificate and is
		// refused with errRefusedCert like any other wrong certificate.
		ClientAuth: tls.RequestClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return fmt.Errorf("%w: the client presented no certificate", errRefusedCert)
			}
			k, err := wire.PeerKey(raw)
			if err != nil {
				return fmt.Errorf("%w: %v", errRefusedCert, err)
			}
			if s.hostByKey(k) == nil {
				return fmt.Errorf("%w: client certificate key %x is not an enrolled host's identity key", errRefusedCert, []byte(k)[:8])
			}
			return nil
		},
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.ctx.Done():
		}
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	}()
	go func() {
		defer s.wg.Done()
		s.watch()
	}()
	s.cfg.Log.Info().Str("listen", ln.Addr().String()).Str("store_key", s.VerifierKey()).Msg("store listening")
	err := s.acceptLoop(ctx, ln, tcfg)
	s.cancel()
	s.wg.Wait()
	s.closeHosts()
	// Uploads of sealed segments get a while to finish (the last one is often sealed by a host's STOP
	// just before the store stops); what is left is uploaded when the store starts again.
	done := make(chan struct{})
	go func() { s.uploads.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(uploadGrace):
		s.cfg.Log.Warn().Msg("stopping with uploads of sealed segments unfinished: they resume at the next start")
	}
	s.upCancel()
	s.uploads.Wait()
	return err
}

// Accept's backoff after an error, as net/http's Server.Serve.
const (
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
)

// acceptLoop accepts connections until ctx or the store ends or ln is closed, each served on its own
// goroutine. At most MaxUnauthenticated of them may be between accept and a valid HELLO: one more is
// closed at once.
func (s *Server) acceptLoop(ctx context.Context, ln net.Listener, tcfg *tls.Config) error {
	var delay time.Duration
	var failed int          // Accept errors in a row
	var failedLog time.Time // when one was last logged
	for {
		raw, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || s.ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("store: accept: %w", err)
			}
			delay = min(max(2*delay, minAcceptDelay), maxAcceptDelay)
			failed++
			s.mu.Lock()
			s.stats.AcceptErrors++
			s.mu.Unlock()
			// Logged when it starts, then once per AlarmRepeat while it lasts.
			if now := time.Now(); failed == 1 || now.Sub(failedLog) >= s.cfg.AlarmRepeat {
				s.cfg.Log.Error().Err(err).Dur("retry_in", delay).Int("errors", failed).Msg("cannot accept connections: waiting")
				failedLog = now
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
			case <-s.ctx.Done():
			}
			t.Stop()
			continue
		}
		if failed > 0 {
			s.cfg.Log.Warn().Int("errors", failed).Msg("accepting connections again")
			failed, delay = 0, 0
		}
		s.mu.Lock()
		if s.pending >= s.cfg.MaxUnauthenticated {
			s.stats.OverLimit++
			s.mu.Unlock()
			raw.Close()
			s.warn(fmt.Sprintf("closed a connection at once: %d clients are between accept and HELLO, the limit", s.cfg.MaxUnauthenticated), "", "", nil)
			continue
		}
		s.pending++
		s.conns[raw] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			authenticated := false
			admitted := func() {
				if !authenticated {
					authenticated = true
					s.mu.Lock()
					s.pending--
					s.mu.Unlock()
				}
			}
			c := tls.Server(raw, tcfg)
			s.serveConn(c, admitted)
			admitted()
			c.Close()
			s.mu.Lock()
			delete(s.conns, raw)
			s.mu.Unlock()
		}()
	}
}

// Close stops Serve (which closes every connection) and releases the store.
func (s *Server) Close() error {
	s.cancel()
	return nil
}

func (s *Server) hostByKey(k []byte) *host {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.hosts {
		if string(h.pub) == string(k) {
			return h
		}
	}
	return nil
}

func (s *Server) closeHosts() {
	s.mu.Lock()
	hosts := make([]*host, 0, len(s.hosts))
	for _, h := range s.hosts {
		hosts = append(hosts, h)
	}
	s.mu.Unlock()
	for _, h := range hosts {
		h.mu.Lock()
		h.closeFile()
		if h.receipts != nil {
			h.receipts.Close()
			h.receipts = nil
		}
		h.mu.Unlock()
	}
	s.flushLimited(time.Now(), true)
	s.afile.Close()
}

// serveConn runs one host connection. The TLS handshake and a valid HELLO must come within
// HandshakeTimeout; admitted is called once they have.
func (s *Server) serveConn(c *tls.Conn, admitted func()) {
	remote := c.RemoteAddr().String()
	c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	if err := c.Handshake(); err != nil {
		s.warn("refused a connection: TLS handshake failed", "", remote, err)
		if errors.Is(err, errRefusedCert) {
			s.alarm(AlarmRefused, "", remote, "refused a client: %v", err)
		}
		return
	}
	cs := c.ConnectionState()
	k, err := wire.PeerKey([][]byte{cs.PeerCertificates[0].Raw})
	if err != nil {
		return
	}
	h := s.hostByKey(k)
	br := bufio.NewReaderSize(c, 256<<10)
	bw := bufio.NewWriterSize(c, 64<<10)
	refuse := func(code, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		wire.WriteJSON(bw, wire.Error, wire.ErrorMsg{Code: code, Message: msg})
		bw.Flush()
	}
	typ, p, err := wire.ReadFrame(br, nil)
	if err != nil || typ != wire.Hello {
		s.warn("refused a connection: no HELLO", h.origin, remote, err)
		refuse(wire.CodeProtocol, "expected HELLO")
		return
	}
	var hello wire.HelloMsg
	if err := json.Unmarshal(p, &hello); err != nil || hello.Version != wire.Version {
		s.warn("refused a connection: HELLO malformed or of another version", h.origin, remote, err)
		refuse(wire.CodeProtocol, "HELLO: unsupported version or malformed")
		return
	}
	if hello.Origin != h.origin {
		s.alarm(AlarmRefused, h.origin, remote, "a client with host %q's certificate said it sends the archive of %q: refused", h.origin, hello.Origin)
		refuse(wire.CodeUnknownHost, "this certificate belongs to host %q, not %q", h.origin, hello.Origin)
		return
	}
	admitted()
	// From here the client is the enrolled host: it gets IdleTimeout for each exchange.
	c.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
	// A new connection takes over from an old one (a host that reconnects after a network cut may leave
	// a half-open connection behind).
	h.takeOver(c)
	h.mu.Lock()
	defer func() {
		h.settle()
		h.release(c)
		h.mu.Unlock()
	}()
	if err := h.load(); err != nil {
		s.alarm(AlarmStorage, h.origin, remote, "cannot read the host's area: %v", err)
		refuse(wire.CodeStorage, "the store cannot read this host's area")
		return
	}
	st := wire.StateMsg{Segment: h.name, Offset: h.off, Size: h.stream.Size(), Receipt: string(h.receipt)}
	c.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
	if err := wire.WriteJSON(bw, wire.State, st); err != nil || bw.Flush() != nil {
		return
	}
	s.logLimited(zerolog.InfoLevel, "host connected", h.origin, remote, nil,
		map[string]any{"segment": st.Segment, "offset": st.Offset, "size": st.Size})
	// One frame buffer for the connection, at most wire.MaxFrame: nothing else it holds grows with the
	// frames it reads (the host's pending bytes are bounded by archive.MaxBlock, see host.take).
	var buf []byte
	for {
		// Reading the next frames and writing their ACK: a host that neither sends nor reads is dropped.
		c.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
		var last uint64
		batch := 0
		for {
			typ, p, err := wire.ReadFrame(br, buf)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					s.logLimited(zerolog.InfoLevel, "host connection ended", h.origin, remote, err, nil)
				}
				h.sync(s) // what was taken is acknowledged on the next connection's STATE
				return
			}
			buf = p[:0]
			if typ != wire.Data {
				h.sync(s)
				s.warn(fmt.Sprintf("refused the connection: frame type %d, not DATA", typ), h.origin, remote, nil)
				refuse(wire.CodeProtocol, "expected DATA, got frame type %d", typ)
				return
			}
			seq, name, off, data, err := wire.ParseData(p)
			if err != nil {
				h.sync(s)
				// The host's own key sent it: a broken or hostile client (a path for a name, one).
				s.alarm(AlarmRefused, h.origin, remote, "refused a malformed DATA frame: %v", err)
				refuse(wire.CodeProtocol, "%v", err)
				return
			}
			if code, err := h.take(s, remote, name, off, data); err != nil {
				h.sync(s)
				s.logLimited(zerolog.WarnLevel, "refused the host's DATA", h.origin, remote, err,
					map[string]any{"code": code, "segment": name, "offset": off, "bytes": len(data)})
				refuse(code, "%v", err)
				return
			}
			last = seq
			batch += len(data)
			// Take every frame already here before one fsync for all of them.
			if br.Buffered() < 5 || batch >= 4<<20 {
				break
			}
		}
		if err := h.sync(s); err != nil {
			s.alarm(AlarmStorage, h.origin, remote, "cannot make the host's data durable: %v", err)
			refuse(wire.CodeStorage, "the store cannot write: %v", err)
			return
		}
		ack := wire.AckMsg{Seq: last, Segment: h.name, Offset: h.off, Size: h.stream.Size()}
		var covered uint64
		if h.newReceipt {
			ack.Receipt, h.newReceipt, covered = string(h.receipt), false, h.receiptSize
		}
		if s.cfg.Trace != nil {
			s.mu.Lock()
			fmt.Fprintf(s.cfg.Trace, "%d %s %d %d\n", time.Now().UnixNano(), h.origin, ack.Size, covered)
			s.mu.Unlock()
		}
		if err := wire.WriteJSON(bw, wire.Ack, ack); err != nil || bw.Flush() != nil {
			return
		}
	}
}

// watch raises, every second, the counts of alarms and log lines held back whose period has ended, an
// alarm for a host that has sent nothing for longer than its heartbeat interval and the grace, once per
// silence, and for a host that stopped cleanly, instead, an alarm once it has not started again within
// StoppedAlarm, once per stop (and store start: the flag is not saved).
func (s *Server) watch() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.flushLimited(time.Now(), false)
		s.mu.Lock()
		hosts := make([]*host, 0, len(s.hosts))
		for _, h := range s.hosts {
			hosts = append(hosts, h)
		}
		s.mu.Unlock()
		now := time.Now()
		for _, h := range hosts {
			h.smu.Lock()
			limit := h.heartbeat + s.cfg.Grace
			quiet := now.Sub(h.lastData)
			stopped, down := h.stopped, now.Sub(h.stopped)
			silence := stopped.IsZero() && !h.silent && quiet > limit
			stayed := !stopped.IsZero() && !h.stopAlarmed && down > s.cfg.StoppedAlarm
			h.silent = h.silent || silence
			h.stopAlarmed = h.stopAlarmed || stayed
			h.smu.Unlock()
			if silence {
				s.alarm(AlarmSilence, h.origin, "", "host %q has sent nothing for %s (heartbeat %s + grace %s), and its archive does not end with a clean stop: it is down, cut off, crashed or frozen",
					h.origin, quiet.Round(time.Second), h.heartbeat, s.cfg.Grace)
			}
			if stayed {
				s.alarm(AlarmStopped, h.origin, "", "host %q stopped cleanly at %s and has not started again for %s (stopped alarm after %s)",
					h.origin, stopped.UTC().Format(time.RFC3339), down.Round(time.Second), s.cfg.StoppedAlarm)
			}
		}
	}
}

// Raise records an alarm found outside the store's own checks (the object store's canary, for one).
func (s *Server) Raise(kind, host, format string, args ...any) {
	s.alarm(kind, host, "", format, args...)
}
