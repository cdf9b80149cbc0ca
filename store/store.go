// Package store is the write-once receiving side of shipping (docs/format.md, "Shipping protocol v1").
//
// Its invariant: a byte of a host's archive is acknowledged only once it has been verified (package
// archive's Stream: every signature, the epoch key chain, every root, the segment linkage) and fsynced in
// that host's area, and nothing in an area is ever overwritten, truncated or deleted. Bytes that
// contradict what an area holds — a rewritten history, a replay with other content — are kept under the
// area's evidence/ directory and raise an alarm, as does a host that falls silent for longer than its
// heartbeat interval and a grace. Sealed segments are made immutable (FS_IMMUTABLE_FL) where the
// filesystem supports it. Every acknowledgement of a new checkpoint carries a receipt: the store's
// timestamped cosignature of it, also kept in the area's receipts file.
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
	EvidenceDir  = "evidence"
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
	// Upload, when set, receives every sealed segment (retried until it succeeds).
	Upload Uploader
	// IdleTimeout closes a connection that sends nothing for this long; default 2 min.
	IdleTimeout time.Duration
	// Trace, when set, gets a line per acknowledgement: "<unix ns> <origin> <leaves durable> <leaves the
	// new receipt covers, or 0>" (the latency benchmark reads it).
	Trace io.Writer
}

// Alarm is something an administrator must look at.
type Alarm struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"` // tampered, fork, replay, silence, incomplete, storage, refused, upload
	Host    string    `json:"host,omitempty"`
	Remote  string    `json:"remote,omitempty"`
	Message string    `json:"message"`
}

// uploadGrace is how long a stopping store waits for uploads in progress.
const uploadGrace = 10 * time.Second

// errRefusedCert is wrapped by the handshake error of a client whose certificate is missing or is not an
// enrolled host's.
var errRefusedCert = errors.New("certificate refused")

// Server is a running store.
type Server struct {
	cfg    Config
	key    *archive.Cosigner
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
	alarms  []Alarm
	alarmAt map[string]time.Time // last raised, by kind and host
	held    map[string]int       // held back since
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
		cfg.Grace = 5 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, HostsDir), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := os.Chmod(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	keyPath := filepath.Join(cfg.Dir, KeyFile)
	if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
		vkey, err := archive.CosignerKeygen(cfg.Dir, cfg.Name)
		if err != nil {
			return nil, fmt.Errorf("store: create key: %w", err)
		}
		cfg.Log.Info().Str("store_key", vkey).Msg("created the store key: hosts pin " + filepath.Join(cfg.Dir, PubFile))
	}
	key, err := archive.LoadCosigner(keyPath)
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
		alarmAt: map[string]time.Time{}, held: map[string]int{}}
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

// alarm records an alarm in alarms.log and the log.
func (s *Server) alarm(kind, host, remote, format string, args ...any) {
	a := Alarm{Time: time.Now().UTC(), Kind: kind, Host: host, Remote: remote, Message: fmt.Sprintf(format, args...)}
	s.mu.Lock()
	defer s.mu.Unlock()
	// An operational alarm (storage, upload) for the same host is raised once a minute at most: a full
	// disk refuses every reconnection. The next one says how many were held back. Every refusal of what a
	// client sent (tampered, fork, replay, refused) is raised each time.
	key := kind + "\x00" + host
	repeats := kind == "storage" || kind == "upload"
	if last, ok := s.alarmAt[key]; ok && repeats && a.Time.Sub(last) < alarmRepeat {
		s.held[key]++
		s.cfg.Log.Debug().Str("alarm", kind).Str("host", host).Msg(a.Message)
		return
	}
	if n := s.held[key]; n > 0 {
		a.Message += fmt.Sprintf(" (%d more like it in the last %s)", n, a.Time.Sub(s.alarmAt[key]).Round(time.Second))
	}
	s.alarmAt[key], s.held[key] = a.Time, 0
	s.cfg.Log.Error().Str("alarm", kind).Str("host", host).Str("remote", remote).Msg(a.Message)
	if len(s.alarms) >= maxAlarms {
		s.alarms = s.alarms[1:]
	}
	s.alarms = append(s.alarms, a)
	b, _ := json.Marshal(a)
	if _, err := s.afile.Write(append(b, '\n')); err == nil {
		s.afile.Sync()
	}
}

// alarmRepeat is how often the same kind of alarm for one host is raised; maxAlarms how many Alarms keeps.
const (
	alarmRepeat = time.Minute
	maxAlarms   = 1000
)

// Serve accepts hosts on ln until ctx ends or Close, then closes every connection and returns.
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
	tl := tls.NewListener(ln, tcfg)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.ctx.Done():
		}
		tl.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	}()
	go func() {
		defer s.wg.Done()
		s.watchSilence()
	}()
	s.cfg.Log.Info().Str("listen", ln.Addr().String()).Str("store_key", s.VerifierKey()).Msg("store listening")
	var err error
	for {
		c, aerr := tl.Accept()
		if aerr != nil {
			if ctx.Err() == nil && s.ctx.Err() == nil {
				err = aerr
			}
			break
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c.(*tls.Conn))
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
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
	s.afile.Close()
}

// serveConn runs one host connection.
func (s *Server) serveConn(c *tls.Conn) {
	remote := c.RemoteAddr().String()
	log := s.cfg.Log.With().Str("remote", remote).Logger()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		log.Warn().Err(err).Msg("refused a connection: TLS handshake failed")
		if errors.Is(err, errRefusedCert) {
			s.alarm("refused", "", remote, "refused a client: %v", err)
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
		log.Warn().Err(err).Msg("refused a connection: no HELLO")
		refuse("protocol", "expected HELLO")
		return
	}
	var hello wire.HelloMsg
	if err := json.Unmarshal(p, &hello); err != nil || hello.Version != wire.Version {
		log.Warn().Err(err).Int("version", hello.Version).Msg("refused a connection: HELLO malformed or of another version")
		refuse("protocol", "HELLO: unsupported version or malformed")
		return
	}
	if hello.Origin != h.origin {
		s.alarm("refused", h.origin, remote, "a client with host %q's certificate said it sends the archive of %q: refused", h.origin, hello.Origin)
		refuse("unknown-host", "this certificate belongs to host %q, not %q", h.origin, hello.Origin)
		return
	}
	log = log.With().Str("host", h.origin).Logger()
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
		s.alarm("storage", h.origin, remote, "cannot read the host's area: %v", err)
		refuse("storage", "the store cannot read this host's area")
		return
	}
	st := wire.StateMsg{Segment: h.name, Offset: h.off, Size: h.stream.Size(), Receipt: string(h.receipt)}
	c.SetDeadline(time.Time{})
	if err := wire.WriteJSON(bw, wire.State, st); err != nil || bw.Flush() != nil {
		return
	}
	log.Info().Str("segment", st.Segment).Int64("offset", st.Offset).Uint64("size", st.Size).Msg("host connected")
	var buf []byte
	for {
		c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		var last uint64
		batch := 0
		for {
			typ, p, err := wire.ReadFrame(br, buf)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					log.Info().Err(err).Msg("host connection ended")
				}
				h.sync(s) // what was taken is acknowledged on the next connection's STATE
				return
			}
			buf = p[:0]
			if typ != wire.Data {
				h.sync(s)
				log.Warn().Msgf("refused the connection: frame type %d, not DATA", typ)
				refuse("protocol", "expected DATA, got frame type %d", typ)
				return
			}
			seq, name, off, data, err := wire.ParseData(p)
			if err != nil {
				h.sync(s)
				// The host's own key sent it: a broken or hostile client (a path for a name, one).
				s.alarm("refused", h.origin, remote, "refused a malformed DATA frame: %v", err)
				refuse("protocol", "%v", err)
				return
			}
			if code, err := h.take(s, remote, name, off, data); err != nil {
				h.sync(s)
				log.Warn().Str("code", code).Err(err).Str("segment", name).Int64("offset", off).Int("bytes", len(data)).Msg("refused the host's DATA")
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
			s.alarm("storage", h.origin, remote, "cannot make the host's data durable: %v", err)
			refuse("storage", "the store cannot write: %v", err)
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

// watchSilence raises an alarm for a host that has sent nothing for longer than its heartbeat interval
// and the grace, once per silence.
func (s *Server) watchSilence() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
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
			alarm := !h.silent && quiet > limit
			if alarm {
				h.silent = true
			}
			h.smu.Unlock()
			if alarm {
				s.alarm("silence", h.origin, "", "host %q has sent nothing for %s (heartbeat %s + grace %s): it is down, cut off, or its daemon was stopped",
					h.origin, quiet.Round(time.Second), h.heartbeat, s.cfg.Grace)
			}
		}
	}
}

// Raise records an alarm found outside the store's own checks (the object store's canary, for one).
func (s *Server) Raise(kind, host, format string, args ...any) {
	s.alarm(kind, host, "", format, args...)
}
