package mail

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"os"
	"regexp"
	"strings"
	"time"
)

// TLSMode says how the connection to the mail hub is protected.
type TLSMode string

// TLS modes (docs/mail.md). The default is TLSStartTLS; TLSNone must be chosen explicitly.
const (
	TLSStartTLS TLSMode = "starttls" // plain connect, then STARTTLS; a hub that does not offer it is refused
	TLSImplicit TLSMode = "implicit" // TLS from the first byte (SMTPS, port 465)
	TLSNone     TLSMode = "none"     // INSECURE: mail and any credentials cross the network in clear
)

// Default ports per TLS mode.
const (
	PortImplicit = 465
	PortStartTLS = 587
	PortNone     = 25
)

// DefaultTimeout bounds one connection to the hub: dial, TLS, AUTH and each command.
const DefaultTimeout = 30 * time.Second

// Config is the relay client's configuration, modelled on sSMTP's ssmtp.conf (mailhub, UseTLS /
// UseSTARTTLS, AuthUser / AuthPass, RewriteDomain, root=, hostname). docs/mail.md lists the keys.
type Config struct {
	Mailhub string  `yaml:"mailhub"` // host name or address of the site's mail hub; required
	Port    int     `yaml:"port"`    // 0: 465 with implicit TLS, 587 with starttls, 25 with none
	TLS     TLSMode `yaml:"tls"`     // "" or starttls (default), implicit, none (insecure)

	CAFile     string `yaml:"ca_file"`     // PEM CA bundle the hub's certificate must chain to; "": system roots
	ServerName string `yaml:"server_name"` // name the certificate must carry; "": Mailhub
	// PinSHA256 is the hex SHA-256 of the hub certificate's SubjectPublicKeyInfo. When set, a certificate
	// with that key is accepted whoever signed it (like an ssh known_hosts entry), and no other.
	PinSHA256 string `yaml:"pin_sha256"`

	AuthUser     string `yaml:"auth_user"`      // SMTP AUTH user; "": no AUTH
	AuthPassFile string `yaml:"auth_pass_file"` // file holding the password (one line); not readable by others
	AuthMethod   string `yaml:"auth_method"`    // "" or plain (default), login

	// From is the sender: a full address, or a local part completed with RewriteDomain (default
	// "auditarch"). Like sSMTP with FromLineOverride=NO, the message cannot choose its own sender.
	From string `yaml:"from"`
	// RewriteDomain completes From and bare recipients (sSMTP's RewriteDomain); "": Hostname.
	RewriteDomain string `yaml:"rewrite_domain"`
	// Root is the administrator's address that the recipient "root" stands for (sSMTP's root=).
	Root string `yaml:"root"`
	// To lists the recipients; "root" maps to Root, a bare name gets RewriteDomain. Default: ["root"].
	To []string `yaml:"to"`
	// Hostname names this host in HELO, subjects and Message-IDs; "": os.Hostname().
	Hostname string `yaml:"hostname"`

	Timeout time.Duration `yaml:"timeout"` // one connection's bound; 0: DefaultTimeout
}

// ConfigError is a configuration value that cannot be used.
type ConfigError struct {
	Key    string // the yaml key, e.g. "tls"
	Reason string
}

func (e *ConfigError) Error() string { return "mail config: " + e.Key + ": " + e.Reason }

// relay is a validated Config with its defaults filled in, the password read and TLS set up.
type relay struct {
	host     string
	port     int
	mode     TLSMode
	tls      *tls.Config
	user     string
	pass     string
	method   string
	from     string
	to       []string
	hostname string
	timeout  time.Duration
}

// hostnameRE is what Hostname may be: it goes into HELO and Message-IDs (a dot-atom).
var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$`)

// Validate checks the configuration without reading any file: every problem found, joined.
func (c Config) Validate() error {
	_, err := c.resolve(false)
	return err
}

// resolve validates c and fills in its defaults; with files it also reads the password and CA files.
func (c Config) resolve(files bool) (*relay, error) {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &ConfigError{Key: key, Reason: fmt.Sprintf(format, args...)})
	}
	r := &relay{host: c.Mailhub, port: c.Port, mode: c.TLS, user: c.AuthUser, timeout: c.Timeout}

	if c.Mailhub == "" {
		bad("mailhub", "required (the site's mail hub, e.g. mail.example.org)")
	} else if strings.ContainsAny(c.Mailhub, ":/ ") && !strings.HasPrefix(c.Mailhub, "[") {
		bad("mailhub", "%q: give the host only; the port goes in port", c.Mailhub)
	}
	switch r.mode {
	case "":
		r.mode = TLSStartTLS
	case TLSStartTLS, TLSImplicit, TLSNone:
	default:
		bad("tls", "unknown mode %q (starttls, implicit or none)", c.TLS)
	}
	if r.port == 0 {
		r.port = map[TLSMode]int{TLSStartTLS: PortStartTLS, TLSImplicit: PortImplicit, TLSNone: PortNone}[r.mode]
	} else if r.port < 0 || r.port > 65535 {
		bad("port", "%d is not a TCP port", c.Port)
	}
	if r.timeout == 0 {
		r.timeout = DefaultTimeout
	} else if r.timeout < 0 {
		bad("timeout", "negative")
	}

	if r.mode == TLSNone && (c.CAFile != "" || c.PinSHA256 != "" || c.ServerName != "") {
		bad("tls", "none, but ca_file, pin_sha256 or server_name is set: choose starttls or implicit")
	}
	var pin []byte
	if c.PinSHA256 != "" {
		p, err := hex.DecodeString(strings.ReplaceAll(c.PinSHA256, ":", ""))
		if err != nil || len(p) != sha256.Size {
			bad("pin_sha256", "want the 64 hex digits of a SHA-256")
		}
		pin = p
	}

	switch strings.ToLower(c.AuthMethod) {
	case "", "plain":
		r.method = "plain"
	case "login":
		r.method = "login"
	default:
		bad("auth_method", "unknown %q (plain or login)", c.AuthMethod)
	}
	switch {
	case c.AuthUser != "" && c.AuthPassFile == "":
		bad("auth_pass_file", "required with auth_user")
	case c.AuthUser == "" && c.AuthPassFile != "":
		bad("auth_user", "required with auth_pass_file")
	case c.AuthUser != "" && r.mode == TLSNone:
		bad("auth_user", "set with tls: none: the password would cross the network in clear")
	}

	r.hostname = c.Hostname
	if r.hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			bad("hostname", "not set and os.Hostname failed: %v", err)
		}
		r.hostname = h
	}
	if r.hostname != "" && !hostnameRE.MatchString(r.hostname) {
		bad("hostname", "%q is not a host name (letters, digits, '-' and '.')", r.hostname)
	}
	domain := c.RewriteDomain
	if domain == "" {
		domain = r.hostname
	} else if !hostnameRE.MatchString(domain) {
		bad("rewrite_domain", "%q is not a domain", domain)
	}

	from := c.From
	if from == "" {
		from = "auditarch"
	}
	if a, err := address(from, domain); err != nil {
		bad("from", "%v", err)
	} else {
		r.from = a
	}
	to := c.To
	if len(to) == 0 {
		to = []string{"root"}
	}
	for _, t := range to {
		if t == "root" {
			if c.Root == "" {
				bad("root", "required: the administrator's address that mail to root goes to")
				continue
			}
			t = c.Root
		}
		a, err := address(t, domain)
		if err != nil {
			bad("to", "%v", err)
			continue
		}
		r.to = append(r.to, a)
	}
	if c.Root != "" && !strings.Contains(c.Root, "@") {
		bad("root", "%q: give a full address (user@domain)", c.Root)
	}

	if r.mode != TLSNone {
		r.tls = &tls.Config{ServerName: c.ServerName, MinVersion: tls.VersionTLS12}
		if r.tls.ServerName == "" {
			r.tls.ServerName = strings.Trim(c.Mailhub, "[]")
		}
		if files && c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				bad("ca_file", "%v", err)
			} else {
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					bad("ca_file", "%s holds no PEM certificate", c.CAFile)
				}
				r.tls.RootCAs = pool
			}
		}
		if pin != nil {
			// The pin authenticates the hub on its own: chain and name are not checked.
			r.tls.InsecureSkipVerify = true
			r.tls.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("mail hub sent no certificate")
				}
				got := sha256.Sum256(cs.PeerCertificates[0].RawSubjectPublicKeyInfo)
				if subtle.ConstantTimeCompare(got[:], pin) != 1 {
					return fmt.Errorf("mail hub key sha256 %x does not match pin_sha256", got)
				}
				return nil
			}
		}
	}
	if files && c.AuthPassFile != "" {
		pass, err := readPassword(c.AuthPassFile)
		if err != nil {
			bad("auth_pass_file", "%v", err)
		}
		r.pass = pass
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

// address turns a configured sender or recipient into an address, completing a bare local part with
// domain.
func address(s, domain string) (string, error) {
	if !strings.Contains(s, "@") {
		s += "@" + domain
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return "", fmt.Errorf("%q is not an address: %v", s, err)
	}
	if a.Name != "" {
		return "", fmt.Errorf("%q: give the bare address, without a display name", s)
	}
	return a.Address, nil
}

// readPassword reads the AUTH password: the file's first line. A file others may read is refused, as
// ssh refuses a private key others may read.
func readPassword(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return "", fmt.Errorf("%s is accessible by others (mode %#o): chmod o-rwx it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 {
		return "", fmt.Errorf("%s is empty", path)
	}
	return string(line), nil
}
