// Package smtptest runs a real SMTP hub for tests: Debian's python3-aiosmtpd (smtpd.py, embedded) on
// 127.0.0.1 with a self-signed certificate made by the test, STARTTLS or implicit TLS, AUTH, and a mode
// file that makes it refuse (451), reject (554) or drop the connection at DATA. Each accepted message
// is written to a Maildir-like directory before the 250. Without python3-aiosmtpd the test skips, or
// fails under AUDITARCH_REQUIRE_PRIVILEGED=1 (privtest).
package smtptest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	_ "embed"

	"github.com/auditarch/auditarch/internal/privtest"
)

//go:embed smtpd.py
var script []byte

// Hub is a real SMTP server (aiosmtpd, smtpd.py) on 127.0.0.1 that writes each message it accepts to
// a Maildir-like directory before answering 250.
type Hub struct {
	t        testing.TB
	python   string
	dir      string
	script   string
	Port     int
	TLS      string // starttls, implicit, none
	auth     string // user:pass or ""
	Cert     string // PEM file, self-signed for 127.0.0.1: the CA a client must trust
	key      string
	maildir  string
	modeFile string
	cmd      *exec.Cmd
}

// The AUTH credentials a hub started with auth requires.
const (
	User = "alerts"
	Pass = "s3cret pass"
)

// Start starts a hub with tls mode (starttls, implicit, none) and, when auth, AUTH required for User;
// the test's cleanup stops it.
func Start(t testing.TB, tlsMode string, auth bool) *Hub {
	t.Helper()
	h := &Hub{t: t, python: privtest.PythonModule(t, "aiosmtpd", "python3-aiosmtpd"), dir: t.TempDir(), TLS: tlsMode}
	h.maildir = filepath.Join(h.dir, "maildir")
	h.modeFile = filepath.Join(h.dir, "mode")
	h.script = filepath.Join(h.dir, "smtpd.py")
	if err := os.WriteFile(h.script, script, 0o600); err != nil {
		t.Fatal(err)
	}
	if auth {
		h.auth = User + ":" + Pass
	}
	h.Cert, h.key = selfSigned(t, h.dir)
	var err error
	for range 3 {
		h.Port = FreePort(t)
		if err = h.start(); err == nil {
			t.Cleanup(h.Stop)
			return h
		}
	}
	t.Fatalf("smtpd: %v", err)
	return nil
}

// PassFile writes the password to a file only its owner reads and returns its path (auth_pass_file).
func (h *Hub) PassFile(t testing.TB) string {
	pf := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(pf, []byte(Pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return pf
}

// Auth reports whether the hub requires AUTH.
func (h *Hub) Auth() bool { return h.auth != "" }

// start runs the server on h.port and waits until it accepts connections.
func (h *Hub) start() error {
	args := []string{h.script, "--port", fmt.Sprint(h.Port), "--maildir", h.maildir, "--mode-file", h.modeFile,
		"--cert", h.Cert, "--key", h.key, "--tls", h.TLS}
	if h.auth != "" {
		args = append(args, "--auth", h.auth)
	}
	cmd := exec.Command(h.python, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(h.dir, "smtpd.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return err
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "READY" {
				ready <- true
				break
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if ok {
			h.cmd = cmd
			return nil
		}
	case <-time.After(15 * time.Second):
	}
	cmd.Process.Kill()
	cmd.Wait()
	log, _ := os.ReadFile(filepath.Join(h.dir, "smtpd.log"))
	return fmt.Errorf("did not start on port %d: %s", h.Port, log)
}

// Stop kills the server (the hub goes down).
func (h *Hub) Stop() {
	if h.cmd != nil {
		h.cmd.Process.Kill()
		h.cmd.Wait()
		h.cmd = nil
	}
}

// Restart starts the server again on the same port.
func (h *Hub) Restart() {
	h.t.Helper()
	var err error
	for range 20 { // the port may linger briefly
		if err = h.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.t.Fatalf("smtpd restart: %v", err)
}

// SetMode makes the server accept (ok), refuse (451), reject (554), drop the connection or hang (30 s,
// then 451) at DATA.
func (h *Hub) SetMode(mode string) {
	h.t.Helper()
	if err := os.WriteFile(h.modeFile, []byte(mode), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// WaitLog waits until the server's log holds line (smtpd.py logs "DATA <mode>" at each DATA).
func (h *Hub) WaitLog(line string) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(h.dir, "smtpd.log"))
		if strings.Contains(string(b), line+"\n") {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("smtpd never logged %q:\n%s", line, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Received is one message the hub accepted.
type Received struct {
	Msg  *mail.Message
	Body string // as sent (transfer-encoded), with "\n" line ends
	Text string // Body decoded (quoted-printable), with "\n" line ends
}

// Header returns the message's header k.
func (r Received) Header(k string) string { return r.Msg.Header.Get(k) }

// Messages returns what the hub accepted, in order of acceptance.
func (h *Hub) Messages() []Received {
	h.t.Helper()
	dir := filepath.Join(h.maildir, "new")
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		h.t.Fatal(err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	var out []Received
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			h.t.Fatal(err)
		}
		m, err := mail.ReadMessage(f)
		if err != nil {
			h.t.Fatalf("%s: %v", n, err)
		}
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			k, err := m.Body.Read(buf)
			b.Write(buf[:k])
			if err != nil {
				break
			}
		}
		f.Close()
		r := Received{Msg: m, Body: strings.ReplaceAll(b.String(), "\r\n", "\n")}
		r.Text = r.Body
		if strings.EqualFold(m.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			if t, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(b.String()))); err == nil {
				r.Text = strings.ReplaceAll(string(t), "\r\n", "\n")
			}
		}
		out = append(out, r)
	}
	return out
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key.
func selfSigned(t testing.TB, dir string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hub.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"hub.test"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}
