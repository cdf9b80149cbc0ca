package peers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/internal/privtest"
)

// Rsyslog is a private rsyslogd (Debian's rsyslog, rsyslog-gnutls, rsyslog-relp) in the foreground on
// loopback: imtcp over TLS (gnutls, anonymous clients) on TLSAddr and imrelp on RELPAddr, writing every
// message it takes, structured data and message, one per line, to Out. Its main queue is Direct, so a
// message is in Out (the page cache) before imrelp acknowledges it: killing it loses nothing it acknowledged.
type Rsyslog struct {
	Dir      string
	Out      string // the file rsyslog writes messages to
	TLSAddr  string // imtcp with TLS, octet counting or LF framing
	RELPAddr string // imrelp, plain
	CA       string // the CA certificate (PEM) that signed rsyslog's server certificate
	Cert     string // rsyslog's server certificate (PEM)

	tb   testing.TB
	bin  string
	conf string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartRsyslog starts rsyslogd; it is killed when the test ends.
func StartRsyslog(tb testing.TB) *Rsyslog {
	tb.Helper()
	bin := "/usr/sbin/rsyslogd"
	if _, err := os.Stat(bin); err != nil {
		privtest.Unavailable(tb, "needs rsyslogd (Debian rsyslog; make deps installs it): %v", err)
	}
	for _, mod := range []string{"lmnsd_gtls.so", "imrelp.so"} {
		if m, _ := filepath.Glob("/usr/lib/*/rsyslog/" + mod); len(m) == 0 {
			privtest.Unavailable(tb, "needs rsyslog's %s (Debian rsyslog-gnutls, rsyslog-relp; make deps installs them)", mod)
		}
	}
	dir := tb.TempDir()
	r := &Rsyslog{Dir: dir, Out: filepath.Join(dir, "out.log"), tb: tb, bin: bin, conf: filepath.Join(dir, "rsyslog.conf")}
	r.CA, r.Cert = writeCerts(tb, dir)
	tlsAddr, err := freeLoopbackAddr()
	if err != nil {
		tb.Fatal(err)
	}
	relpAddr, err := freeLoopbackAddr()
	if err != nil {
		tb.Fatal(err)
	}
	r.TLSAddr, r.RELPAddr = tlsAddr, relpAddr
	_, tlsPort, _ := net.SplitHostPort(tlsAddr)
	_, relpPort, _ := net.SplitHostPort(relpAddr)
	conf := fmt.Sprintf(`global(workDirectory="%[1]s" maxMessageSize="256k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="%[1]s/ca.pem" defaultNetstreamDriverCertFile="%[1]s/server.pem"
  defaultNetstreamDriverKeyFile="%[1]s/server.key"
  parser.escapeControlCharactersOnReceive="off")
main_queue(queue.type="Direct")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="%[2]s")
module(load="imrelp")
input(type="imrelp" address="127.0.0.1" port="%[3]s" maxDataSize="256k")
template(name="line" type="string" string="%%structured-data%% %%msg%%\n")
action(type="omfile" file="%[1]s/out.log" template="line" flushOnTXEnd="on" asyncWriting="off")
`, dir, tlsPort, relpPort)
	if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	r.Start()
	tb.Cleanup(r.Kill)
	return r
}

// Start starts rsyslogd (again) and waits until both inputs accept connections.
func (r *Rsyslog) Start() {
	r.tb.Helper()
	cmd := exec.Command(r.bin, "-n", "-f", r.conf, "-i", filepath.Join(r.Dir, "rsyslogd.pid"))
	log, err := os.OpenFile(filepath.Join(r.Dir, "rsyslogd.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		r.tb.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.tb.Fatal(err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(r.done)
	deadline := time.Now().Add(10 * time.Second)
	for _, a := range []string{r.TLSAddr, r.RELPAddr} {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-r.done:
				out, _ := os.ReadFile(filepath.Join(r.Dir, "rsyslogd.log"))
				r.tb.Fatalf("rsyslogd exited: %s", out)
			default:
			}
			if time.Now().After(deadline) {
				out, _ := os.ReadFile(filepath.Join(r.Dir, "rsyslogd.log"))
				r.tb.Fatalf("rsyslogd does not listen on %s: %s", a, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// Kill kills rsyslogd (SIGKILL) and waits for it to exit.
func (r *Rsyslog) Kill() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
}

// writeCerts makes a CA and a server certificate for 127.0.0.1 in dir: ca.pem, server.pem, server.key.
func writeCerts(tb testing.TB, dir string) (ca, cert string) {
	tb.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "auditarch test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames: []string{"localhost"}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			tb.Fatal(err)
		}
		return p
	}
	write("server.key", "EC PRIVATE KEY", keyDER)
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", der)
}
