package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// Message is one mail to the administrator. Its recipients and sender come from the Config.
type Message struct {
	// ID is the caller's stable name for what the mail reports, e.g. "alert.1200-1250" for leaves 1200
	// to 1250: the Message-ID is derived from it and the host, so a resend carries the same Message-ID.
	// Letters, digits, '-', '_' and single inner dots; at most MaxIDLen bytes.
	ID      string
	Subject string
	Body    string    // plain text, lines separated by "\n"
	Date    time.Time // the Date header; Enqueue sets it when zero, so every resend is identical
}

// MaxIDLen bounds Message.ID.
const MaxIDLen = 128

var idRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

// checkID reports whether id can name a message (and a spool file, and a Message-ID's left part).
func checkID(id string) error {
	if id == "" || len(id) > MaxIDLen || !idRE.MatchString(id) {
		return fmt.Errorf("message id %q: want 1 to %d letters, digits, '-', '_' or inner single dots", id, MaxIDLen)
	}
	return nil
}

// MessageID returns the Message-ID (without angle brackets) of the message with id sent from host:
// "<id>.auditarch@<host>". The same host and id always give the same Message-ID, so a mail sent twice
// is recognisable as one.
func MessageID(host, id string) string { return id + ".auditarch@" + host }

// build renders m for r as a go-mail message.
func (r *relay) build(m Message) (*gomail.Msg, error) {
	g := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	if err := g.From(r.from); err != nil {
		return nil, fmt.Errorf("from %q: %w", r.from, err)
	}
	if err := g.To(r.to...); err != nil {
		return nil, fmt.Errorf("to %v: %w", r.to, err)
	}
	g.Subject(m.Subject)
	g.SetMessageIDWithValue(MessageID(r.hostname, m.ID))
	g.SetDateWithValue(m.Date)
	// RFC 3834: a machine's report; vacation responders must not answer it.
	g.SetGenHeader(gomail.Header("Auto-Submitted"), "auto-generated")
	g.SetGenHeader(gomail.HeaderXMailer, "auditarch")
	g.SetBodyString(gomail.TypeTextPlain, m.Body)
	return g, nil
}

// client returns a go-mail client for r whose connections go through dial.
func (r *relay) client(dial gomail.DialContextFunc) (*gomail.Client, error) {
	opts := []gomail.Option{
		gomail.WithPort(r.port),
		gomail.WithTimeout(r.timeout),
		gomail.WithHELO(r.hostname),
		gomail.WithDialContextFunc(dial),
	}
	switch r.mode {
	case TLSImplicit:
		// dial does the TLS handshake; WithSSL keeps go-mail from trying STARTTLS inside it.
		opts = append(opts, gomail.WithSSL(), gomail.WithTLSConfig(r.tls))
	case TLSStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory), gomail.WithTLSConfig(r.tls))
	case TLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if r.user != "" {
		method := gomail.SMTPAuthPlain
		if r.method == "login" {
			method = gomail.SMTPAuthLogin
		}
		opts = append(opts, gomail.WithSMTPAuth(method), gomail.WithUsername(r.user), gomail.WithPassword(r.pass))
	}
	return gomail.NewClient(r.host, opts...)
}

// session is one connection to the hub, over which messages go one at a time.
type session struct {
	c    *gomail.Client
	conn net.Conn // the socket, closed by close whatever go-mail did
	open bool
}

// dial connects, secures the connection and authenticates. go-mail leaves the socket open when the
// handshake fails (no STARTTLS, AUTH refused) or QUIT fails, so the session dials it and closes it.
func (r *relay) dial(ctx context.Context) (*session, error) {
	s := &session{}
	nd := &net.Dialer{Timeout: r.timeout}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		var err error
		if r.mode == TLSImplicit {
			conn, err = (&tls.Dialer{NetDialer: nd, Config: r.tls}).DialContext(ctx, network, addr)
		} else {
			conn, err = nd.DialContext(ctx, network, addr)
		}
		s.conn = conn
		return conn, err
	}
	c, err := r.client(dial)
	if err != nil {
		return nil, err
	}
	s.c = c
	if err := c.DialWithContext(ctx); err != nil {
		if s.conn != nil {
			s.conn.Close()
		}
		return nil, fmt.Errorf("connect to mail hub %s:%d: %w", r.host, r.port, err)
	}
	s.open = true
	return s, nil
}

// send delivers one message. accepted is true once the hub answered 250 to the end of DATA — then the
// message is the hub's, even if err reports a later failure (RSET) on the connection.
func (s *session) send(r *relay, m Message) (accepted bool, err error) {
	g, err := r.build(m)
	if err != nil {
		return false, err
	}
	err = s.c.Send(g)
	if err != nil {
		s.close()
	}
	return g.IsDelivered(), err
}

func (s *session) close() {
	if s.open {
		s.open = false
		s.c.Close()
		s.conn.Close()
	}
}

// SendTest sends one test mail through the hub now, not through a spool (`auditarch alert test`, the
// sSMTP guide's `mail root` check): nil means the hub accepted it for the configured recipients.
func SendTest(ctx context.Context, cfg Config) error {
	r, err := cfg.resolve(true)
	if err != nil {
		return err
	}
	now := time.Now()
	m := Message{
		ID:      fmt.Sprintf("test.%d", now.UnixNano()),
		Subject: fmt.Sprintf("%s %s auditarch test mail", r.hostname, now.Format(subjectTime)),
		Body: fmt.Sprintf("This is a test mail from auditarch on %s, sent through %s:%d (tls: %s) to %s.\n"+
			"Alerts and hourly reports reach you the same way.\n",
			r.hostname, r.host, r.port, r.mode, strings.Join(r.to, ", ")),
		Date: now,
	}
	s, err := r.dial(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	accepted, err := s.send(r, m)
	if accepted {
		return nil
	}
	if err == nil {
		err = errors.New("not accepted")
	}
	return fmt.Errorf("send test mail: %w", err)
}
