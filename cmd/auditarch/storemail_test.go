package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/internal/smtptest"
	"github.com/auditarch/auditarch/internal/wire"
)

// storeProcess runs "auditarch store" on a free port of loopback with the extra arguments and waits
// until it accepts connections.
func storeProcess(t *testing.T, dir string, port int, extra ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(os.Args[0], append([]string{"store", "--listen", addr, "--dir", dir}, extra...)...)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	stderr := new(bytes.Buffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return cmd, stderr
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store did not start: %s", stderr)
		}
	}
}

// refusedClient connects to the store at port with a host identity it has not enrolled: the store
// refuses it with a "refused" alarm.
func refusedClient(t *testing.T, port int) {
	t.Helper()
	kd := t.TempDir()
	os.Chmod(kd, 0o700)
	id, _, err := loadOrCreateIdentity(filepath.Join(kd, archive.IdentityKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := wire.Certificate(id.Key, id.Signer.Name())
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{Certificates: []tls.Certificate{cert},
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err == nil {
		c.Read(make([]byte, 1)) // TLS 1.3: the server's refusal arrives after the client's handshake
		c.Close()
	}
}

// TestStoreMailsAlarms: "auditarch store --mail-config" mails its alarms through a real hub (STARTTLS,
// AUTH): a host it has not enrolled is refused, and the refused alarm (an attack for the built-in
// rules) is mailed within 5 s. Restarted, the store does not mail it again (its cursor over
// alarms.log); a later alarm is mailed.
func TestStoreMailsAlarms(t *testing.T) {
	hub := smtptest.Start(t, "starttls", true)
	cfgFile, _ := alertConfig(t, hub, "1h", "1s")
	dir, port := filepath.Join(t.TempDir(), "store"), smtptest.FreePort(t)
	cmd, stderr := storeProcess(t, dir, port, "--mail-config", cfgFile)
	start := time.Now()
	refusedClient(t, port)
	m, at := waitMail(t, hub, 5*time.Second, "alert.1-", "ALARM source=store kind=refused", "alarms.log lines")
	t.Logf("store alarm mail %s %.2f s after the refused client:\n%s", m.Header("Message-Id"), at.Sub(start).Seconds(), m.Text)
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("store: %v\n%s", err, stderr)
	}
	storeProcess(t, dir, port, "--mail-config", cfgFile)
	time.Sleep(1500 * time.Millisecond)
	if n := len(hub.Messages()); n != 1 {
		t.Fatalf("after the restart the hub holds %d mails, want 1", n)
	}
	refusedClient(t, port)
	waitMail(t, hub, 5*time.Second, "alert.2-", "ALARM source=store kind=refused")
	uniqueIDs(t, hub)
}
