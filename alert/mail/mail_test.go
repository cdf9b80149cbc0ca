package mail

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "rewrite golden files")

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSendTestStartTLSAuth(t *testing.T) {
	h := startHub(t, "starttls", true)
	if err := SendTest(ctxT(t), h.config(t)); err != nil {
		t.Fatal(err)
	}
	got := h.messages()
	if len(got) != 1 {
		t.Fatalf("hub holds %d messages, want 1", len(got))
	}
	m := got[0]
	for k, want := range map[string]string{
		"X-TLS":           "True",
		"X-Auth-User":     hubUser,
		"X-Envelope-From": "auditarch@bastion1",
		"X-Envelope-To":   "admin@example.org",
		"Auto-Submitted":  "auto-generated",
	} {
		if v := m.Header(k); v != want {
			t.Errorf("%s: %q, want %q", k, v, want)
		}
	}
	if id := m.Header("Message-Id"); !strings.HasPrefix(id, "<test.") || !strings.HasSuffix(id, ".auditarch@bastion1>") {
		t.Errorf("Message-ID %q", id)
	}
	if !strings.Contains(m.Header("Subject"), "bastion1") || !strings.Contains(m.Body, "test mail from auditarch") {
		t.Errorf("subject %q body %q", m.Header("Subject"), m.Body)
	}
}

func TestAuthRefusedWithWrongPassword(t *testing.T) {
	h := startHub(t, "starttls", true)
	cfg := h.config(t)
	if err := os.WriteFile(cfg.AuthPassFile, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SendTest(ctxT(t), cfg); err == nil {
		t.Fatal("sent with a wrong password")
	}
	if n := len(h.messages()); n != 0 {
		t.Fatalf("hub holds %d messages", n)
	}
}

// A hub that offers no STARTTLS gets nothing unless the configuration says tls: none.
func TestPlaintextRefusedByDefault(t *testing.T) {
	h := startHub(t, "none", false)
	cfg := h.config(t)
	cfg.TLS = "" // the default
	err := SendTest(ctxT(t), cfg)
	if err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("SendTest to a hub without STARTTLS: %v, want a STARTTLS error", err)
	}
	if n := len(h.messages()); n != 0 {
		t.Fatalf("hub holds %d messages", n)
	}
	cfg.TLS = TLSNone
	if err := SendTest(ctxT(t), cfg); err != nil {
		t.Fatalf("tls: none: %v", err)
	}
	if got := h.messages(); len(got) != 1 || got[0].Header("X-TLS") != "False" {
		t.Fatalf("tls: none: hub holds %d messages", len(got))
	}
}

func TestImplicitTLS(t *testing.T) {
	h := startHub(t, "implicit", true)
	if err := SendTest(ctxT(t), h.config(t)); err != nil {
		t.Fatal(err)
	}
	got := h.messages()
	if len(got) != 1 || got[0].Header("X-TLS") != "True" || got[0].Header("X-Auth-User") != hubUser {
		t.Fatalf("hub holds %d messages (%v)", len(got), got[0].Msg.Header)
	}
}

// The hub's certificate must chain to ca_file, or match pin_sha256.
func TestServerAuthentication(t *testing.T) {
	h := startHub(t, "starttls", true)
	cfg := h.config(t)
	cfg.CAFile = ""
	if err := SendTest(ctxT(t), cfg); err == nil {
		t.Fatal("sent to a hub whose certificate chains to no trusted CA")
	}
	pemBytes, _ := os.ReadFile(h.Cert)
	blk, _ := pem.Decode(pemBytes)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	cfg.PinSHA256 = hex.EncodeToString(sum[:])
	if err := SendTest(ctxT(t), cfg); err != nil {
		t.Fatalf("pinned: %v", err)
	}
	sum[0] ^= 1
	cfg.PinSHA256 = hex.EncodeToString(sum[:])
	if err := SendTest(ctxT(t), cfg); err == nil || !strings.Contains(err.Error(), "pin_sha256") {
		t.Fatalf("wrong pin: %v", err)
	}
	if n := len(h.messages()); n != 1 {
		t.Fatalf("hub holds %d messages, want 1", n)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	os.WriteFile(open, []byte("pw\n"), 0o644)
	base := Config{Mailhub: "mail.example.org", Root: "admin@example.org", Hostname: "h1"}
	for _, tc := range []struct {
		name, key string
		mod       func(*Config)
	}{
		{"no mailhub", "mailhub", func(c *Config) { c.Mailhub = "" }},
		{"port in mailhub", "mailhub", func(c *Config) { c.Mailhub = "mail:25" }},
		{"unknown tls", "tls", func(c *Config) { c.TLS = "ssl" }},
		{"auth in clear", "auth_user", func(c *Config) { c.TLS = TLSNone; c.AuthUser = "u"; c.AuthPassFile = open }},
		{"user without password", "auth_pass_file", func(c *Config) { c.AuthUser = "u" }},
		{"password readable by others", "auth_pass_file", func(c *Config) { c.AuthUser = "u"; c.AuthPassFile = open }},
		{"no root", "root", func(c *Config) { c.Root = "" }},
		{"bad pin", "pin_sha256", func(c *Config) { c.PinSHA256 = "abc" }},
		{"bad hostname", "hostname", func(c *Config) { c.Hostname = "a b" }},
		{"bad recipient", "to", func(c *Config) { c.To = []string{"a@@b"} }},
		{"display name in from", "from", func(c *Config) { c.From = "Alerts <a@b.c>" }},
	} {
		c := base
		tc.mod(&c)
		_, err := c.resolve(true)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != tc.key {
			t.Errorf("%s: %v, want a ConfigError on %s", tc.name, err, tc.key)
		}
	}
	r, err := base.resolve(true)
	if err != nil {
		t.Fatal(err)
	}
	if r.port != PortStartTLS || r.mode != TLSStartTLS || r.from != "auditarch@h1" || r.to[0] != "admin@example.org" {
		t.Errorf("defaults: %+v", r)
	}
	c := base
	c.TLS, c.RewriteDomain, c.To = TLSImplicit, "example.org", []string{"root", "secops"}
	if r, err = c.resolve(true); err != nil || r.port != PortImplicit || r.from != "auditarch@example.org" ||
		strings.Join(r.to, ",") != "admin@example.org,secops@example.org" {
		t.Errorf("rewrite_domain: %+v %v", r, err)
	}
}

// fast are spool options for tests: short retries, the spool's log in the test's.
func fast(t *testing.T) SpoolOptions {
	return SpoolOptions{RetryMin: 50 * time.Millisecond, RetryMax: 400 * time.Millisecond,
		Log: zerolog.New(zerolog.NewTestWriter(t))}
}

// runSpool runs s in the background until the test ends.
func runSpool(t *testing.T, s *Spool) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func msg(i int) Message {
	return Message{ID: fmt.Sprintf("alert.%d-%d", 10*i, 10*i+9), Subject: fmt.Sprintf("alert %d", i), Body: fmt.Sprintf("event %d\n", i)}
}

func ids(ms []received) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Header("Message-Id"))
	}
	return out
}

// The hub down, then refusing (451), then dropping the connection at DATA, then up: every message
// arrives once, in order.
func TestSpoolOutageLosesNothing(t *testing.T) {
	h := startHub(t, "starttls", true)
	s, err := OpenSpool(t.TempDir(), h.config(t), fast(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h.stop()
	runSpool(t, s)
	for i := range 3 {
		if err := s.Enqueue(msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	h.setMode("refuse")
	h.restart()
	for i := 3; i < 5; i++ {
		if err := s.Enqueue(msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	h.waitLog("DATA refuse")
	h.setMode("drop")
	h.waitLog("DATA drop")
	if n := len(h.messages()); n != 0 || s.Stats().Queued != 5 {
		t.Fatalf("while refusing: hub holds %d, spool %d", n, s.Stats().Queued)
	}
	h.setMode("ok")
	waitFor(t, "the spool to drain", 5*time.Second, func() bool { return s.Stats().Queued == 0 })
	got := ids(h.messages())
	var want []string
	for i := range 5 {
		want = append(want, "<"+MessageID("bastion1", msg(i).ID)+">")
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("hub got\n%v\nwant\n%v", got, want)
	}
}

// The child side of TestKilledMidSend: sends the spool in AUDITARCH_MAIL_SPOOL and SIGKILLs itself at
// the point AUDITARCH_MAIL_KILL names, after the hub accepted the first message.
func TestKilledMidSendChild(t *testing.T) {
	dir := os.Getenv("AUDITARCH_MAIL_SPOOL")
	if dir == "" {
		t.Skip("run by TestKilledMidSend")
	}
	var cfg Config
	if err := json.Unmarshal([]byte(os.Getenv("AUDITARCH_MAIL_CONFIG")), &cfg); err != nil {
		t.Fatal(err)
	}
	s, err := OpenSpool(dir, cfg, fast(t))
	if err != nil {
		t.Fatal(err)
	}
	kill := func(string) { unix.Kill(os.Getpid(), unix.SIGKILL) }
	switch os.Getenv("AUDITARCH_MAIL_KILL") {
	case "accepted":
		s.afterAccept = kill
	case "recorded":
		s.afterRecord = kill
	}
	s.Run(context.Background())
}

// A sender killed after the hub accepted a message and before the spool removed it: the restart sends
// it again with the same Message-ID if the acceptance was not yet recorded, never if it was, and never
// sends a removed message again.
func TestKilledMidSend(t *testing.T) {
	for _, point := range []string{"accepted", "recorded"} {
		t.Run(point, func(t *testing.T) {
			h := startHub(t, "starttls", true)
			cfg := h.config(t)
			dir := t.TempDir()
			s, err := OpenSpool(dir, cfg, fast(t))
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				if err := s.Enqueue(msg(i)); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()

			cj, _ := json.Marshal(cfg)
			cmd := exec.Command(os.Args[0], "-test.run=^TestKilledMidSendChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), "AUDITARCH_MAIL_SPOOL="+dir, "AUDITARCH_MAIL_CONFIG="+string(cj),
				"AUDITARCH_MAIL_KILL="+point)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ProcessState.String() != "signal: killed" {
				t.Fatalf("child was not killed: %v\n%s", err, out)
			}
			first := "<" + MessageID("bastion1", msg(0).ID) + ">"
			second := "<" + MessageID("bastion1", msg(1).ID) + ">"
			if got := ids(h.messages()); len(got) != 1 || got[0] != first {
				t.Fatalf("after the kill the hub holds %v", got)
			}

			s, err = OpenSpool(dir, cfg, fast(t))
			if err != nil {
				t.Fatal(err)
			}
			stop := runSpool(t, s)
			waitFor(t, "the spool to drain", 5*time.Second, func() bool { return s.Stats().Queued == 0 })
			stop()
			want := []string{first, second}
			if point == "accepted" {
				want = []string{first, first, second} // at least once: the same Message-ID twice
			}
			if got := ids(h.messages()); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Fatalf("hub holds %v, want %v", got, want)
			}
			if ms := h.messages(); point == "accepted" && (ms[0].Header("Date") != ms[1].Header("Date") || ms[0].Body != ms[1].Body) {
				t.Fatalf("the resent copy differs: Date %q vs %q", ms[0].Header("Date"), ms[1].Header("Date"))
			}
			// Delivered ids are never sent again, even when enqueued again.
			if err := s.Enqueue(msg(1)); err != nil {
				t.Fatal(err)
			}
			stop = runSpool(t, s)
			time.Sleep(200 * time.Millisecond)
			stop()
			s.Close()
			if n := len(h.messages()); n != len(want) {
				t.Fatalf("a delivered message was sent again: hub holds %d", n)
			}
		})
	}
}

// A full spool drops, counts the drops durably, and reports them in a notice mail before the backlog.
func TestSpoolOverflowReported(t *testing.T) {
	h := startHub(t, "starttls", true)
	cfg := h.config(t)
	h.stop()
	dir := t.TempDir()
	opt := fast(t)
	opt.MaxMessages = 3
	s, err := OpenSpool(dir, cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		err := s.Enqueue(msg(i))
		if (i < 3) != (err == nil) || (i >= 3 && !errors.Is(err, ErrOverflow)) {
			t.Fatalf("enqueue %d: %v", i, err)
		}
	}
	s.Close()
	if s, err = OpenSpool(dir, cfg, opt); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.Stats(); st.Queued != 3 || st.Dropped != 2 {
		t.Fatalf("after reopening: %+v", st)
	}
	h.restart()
	runSpool(t, s)
	waitFor(t, "the spool to drain", 5*time.Second, func() bool { st := s.Stats(); return st.Queued == 0 && st.Dropped == 0 })
	got := h.messages()
	if len(got) != 4 {
		t.Fatalf("hub holds %d messages, want the notice and 3", len(got))
	}
	n := got[0]
	if n.Header("Message-Id") != "<"+MessageID("bastion1", "overflow.0")+">" ||
		!strings.Contains(n.Header("Subject"), "2 alert mail(s) lost") ||
		!strings.Contains(n.Body, "2 message(s) dropped") || !strings.Contains(n.Body, "first dropped: alert.30-39, last dropped: alert.40-49") {
		t.Fatalf("notice: %q\n%s", n.Header("Subject"), n.Body)
	}
}

// Files left by a crash: a half-written one in tmp/ is removed; one that cannot be read is moved to
// bad/ and reported.
func TestSpoolCrashLeftovers(t *testing.T) {
	cfg := Config{Mailhub: "127.0.0.1", Port: 1, Root: "admin@example.org", Hostname: "bastion1"}
	dir := t.TempDir()
	s, err := OpenSpool(dir, cfg, fast(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(msg(0)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	os.WriteFile(filepath.Join(dir, tmpDir, "0000000000000001.alert.1-2.msg"), []byte(`{"v":1,"id":"al`), 0o600)
	os.WriteFile(filepath.Join(dir, queueDir, "0000000000000002.alert.3-4.msg"), []byte(`{"v":1,"id":"al`), 0o600)
	os.WriteFile(filepath.Join(dir, queueDir, "junk"), nil, 0o600)
	if s, err = OpenSpool(dir, cfg, fast(t)); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ents, _ := os.ReadDir(filepath.Join(dir, tmpDir)); len(ents) != 0 {
		t.Errorf("tmp/ holds %d files", len(ents))
	}
	if st := s.Stats(); st.Queued != 2 || st.Unreadable != 1 {
		t.Errorf("stats %+v, want 2 queued (one torn) and 1 unreadable", st)
	}
	// The notice of the junk file goes first.
	j, ok := s.next()
	if !ok || j.notice == nil || j.notice.Unreadable != 1 {
		t.Fatalf("next: %+v %v, want the notice of the unreadable file", j, ok)
	}
	if err := s.done(j); err != nil {
		t.Fatal(err)
	}
	// Then the readable message; after it the torn one, found unreadable when its turn comes.
	if j, ok = s.next(); !ok || j.msg.ID != msg(0).ID {
		t.Fatalf("next: %+v %v, want %s", j, ok, msg(0).ID)
	}
	if err := s.done(j); err != nil {
		t.Fatal(err)
	}
	j, ok = s.next()
	if !ok || j.notice == nil || j.notice.Unreadable != 1 || j.msg.ID != "overflow.1" {
		t.Fatalf("next: %+v %v, want the second notice, of the torn file", j, ok)
	}
	if st := s.Stats(); st.Queued != 0 {
		t.Errorf("stats %+v", st)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, badDir)); len(ents) != 2 {
		t.Errorf("bad/ holds %d files, want 2", len(ents))
	}
}

func TestCoalescer(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	now := t0
	c := NewCoalescer("bastion1", 0, func() time.Time { return now })
	if _, _, ok := c.Flush(); ok || !c.Due().IsZero() {
		t.Fatal("a mail with nothing pending")
	}
	c.Add(7, "kill target_comm=auditarch")
	m, last, ok := c.Flush()
	if !ok || last != 7 || m.ID != "alert.7-7" {
		t.Fatalf("first event not mailed at once: %v %d %+v", ok, last, m)
	}
	now = t0.Add(10 * time.Second)
	c.Add(8, "ptrace target_comm=auditarch")
	now = t0.Add(40 * time.Second)
	c.Add(12, "init_module name=rootkit")
	if _, _, ok := c.Flush(); ok {
		t.Fatal("a second mail within the window")
	}
	if d := c.Due(); !d.Equal(t0.Add(time.Minute)) {
		t.Fatalf("due %v", d)
	}
	now = t0.Add(time.Minute)
	m, last, ok = c.Flush()
	if !ok || last != 12 || m.ID != "alert.8-12" || !m.Date.Equal(now) {
		t.Fatalf("window mail: %v %d %+v", ok, last, m)
	}
	want := "bastion1 2026-03-01 10:01 +0000 Security Alerts"
	if m.Subject != want || !strings.Contains(m.Body, "ptrace target_comm=auditarch\ninit_module name=rootkit\n") ||
		!strings.Contains(m.Body, "2 event(s)") {
		t.Fatalf("subject %q body:\n%s", m.Subject, m.Body)
	}
}

func TestReportGolden(t *testing.T) {
	start := time.Date(2026, 3, 1, 10, 0, 0, 0, time.FixedZone("", 3600))
	r := Report{
		Host:  "bastion1",
		Start: start,
		End:   start.Add(time.Hour),
		Sections: map[Class]map[string][]string{
			ClassUnusual: {"": {"10:12:01 connect uid=1000 exe=/usr/bin/curl addr=203.0.113.5:443"}},
			ClassViolation: {
				"sudo":   {"10:20:00 USER_AUTH res=failed acct=alice exe=/usr/bin/sudo"},
				"passwd": {"10:21:00 openat uid=0 path=/etc/shadow flags=O_WRONLY exe=/usr/sbin/usermod"},
			},
			ClassAttack: {"auditarch": {
				"10:30:00 kill uid=0 target_comm=auditarch sig=9 exe=/usr/bin/kill",
				"10:30:01 POLICY denied ptrace target_comm=auditarch exe=/usr/bin/gdb",
			}},
		},
		Archive: ArchiveState{Verify: "PASS", Lost: []string{"leaf 4711 LOST kernel_lost count=3"}, ReceiptAge: 2*time.Second + 300*time.Millisecond},
	}
	if c, ok := r.Highest(); !ok || c != ClassAttack {
		t.Fatalf("highest %v %v", c, ok)
	}
	m := r.Message()
	got := "Subject: " + m.Subject + "\nID: " + m.ID + "\n\n" + m.Body
	golden := "testdata/report.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("report differs from %s (go test -update rewrites it):\n%s", golden, got)
	}
	quiet := Report{Host: "bastion1", Start: start, End: start.Add(time.Hour), Archive: ArchiveState{ReceiptAge: -1}}
	if s := quiet.Subject(); s != "bastion1 2026-03-01 11:00 +0100 Archive Report" {
		t.Fatalf("quiet subject %q", s)
	}
	if !strings.Contains(quiet.Body(), "store receipt: none") || !strings.Contains(quiet.Body(), "verify: not checked") {
		t.Fatalf("quiet body:\n%s", quiet.Body())
	}
}
