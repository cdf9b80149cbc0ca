package mail

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/auditarch/auditarch/internal/privtest"
)

// hub is a real SMTP server (aiosmtpd, testdata/smtpd.py) on 127.0.0.1 that writes each message it
// accepts to a Maildir-like directory before answering 250.
type hub struct {
	t        *testing.T
	python   string
	dir      string
	port     int
	tls      string // starttls, implicit, none
	auth     string // user:pass or ""
	cert     string // PEM, self-signed for 127.0.0.1
	key      string
	maildir  string
	modeFile string
	cmd      *exec.Cmd
}

const (
	hubUser = "alerts"
	hubPass = "s3cret pass"
)

// startHub starts a hub with tls mode and, when auth, AUTH required for hubUser.
func startHub(t *testing.T, tlsMode string, auth bool) *hub {
	t.Helper()
	h := &hub{t: t, python: privtest.PythonModule(t, "aiosmtpd", "python3-aiosmtpd"), dir: t.TempDir(), tls: tlsMode}
	h.maildir = filepath.Join(h.dir, "maildir")
	h.modeFile = filepath.Join(h.dir, "mode")
	if auth {
		h.auth = hubUser + ":" + hubPass
	}
	h.cert, h.key = selfSigned(t, h.dir)
	var err error
	for range 3 {
		h.port = freePort(t)
		if err = h.start(); err == nil {
			t.Cleanup(h.stop)
			return h
		}
	}
	t.Fatalf("smtpd: %v", err)
	return nil
}

// start runs the server on h.port and waits until it accepts connections.
func (h *hub) start() error {
	script, err := filepath.Abs("testdata/smtpd.py")
	if err != nil {
		return err
	}
	args := []string{script, "--port", fmt.Sprint(h.port), "--maildir", h.maildir, "--mode-file", h.modeFile,
		"--cert", h.cert, "--key", h.key, "--tls", h.tls}
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
	return fmt.Errorf("did not start on port %d: %s", h.port, log)
}

// stop kills the server (the hub goes down).
func (h *hub) stop() {
	if h.cmd != nil {
		h.cmd.Process.Kill()
		h.cmd.Wait()
		h.cmd = nil
	}
}

// restart starts the server again on the same port.
func (h *hub) restart() {
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

// setMode makes the server accept (ok), refuse (451), reject (554) or drop the connection at DATA.
func (h *hub) setMode(mode string) {
	h.t.Helper()
	if err := os.WriteFile(h.modeFile, []byte(mode), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// waitLog waits until the server's log holds line (testdata/smtpd.py logs "DATA <mode>" at each DATA).
func (h *hub) waitLog(line string) {
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

// received is one message the hub accepted.
type received struct {
	msg  *mail.Message
	body string
}

func (r received) header(k string) string { return r.msg.Header.Get(k) }

// messages returns what the hub accepted, in order of acceptance.
func (h *hub) messages() []received {
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
	var out []received
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
		out = append(out, received{msg: m, body: strings.ReplaceAll(b.String(), "\r\n", "\n")})
	}
	return out
}

// config is a Config for this hub.
func (h *hub) config(t *testing.T) Config {
	c := Config{
		Mailhub:  "127.0.0.1",
		Port:     h.port,
		TLS:      TLSMode(h.tls),
		Root:     "admin@example.org",
		Hostname: "bastion1",
		Timeout:  3 * time.Second,
	}
	if h.tls != "none" {
		c.CAFile = h.cert
	}
	if h.auth != "" {
		pf := filepath.Join(t.TempDir(), "pass")
		if err := os.WriteFile(pf, []byte(hubPass+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c.AuthUser, c.AuthPassFile = hubUser, pf
	}
	return c
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T, dir string) (certPath, keyPath string) {
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
