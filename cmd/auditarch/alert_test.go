package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/internal/privtest"
	"github.com/auditarch/auditarch/internal/smtptest"
	"github.com/auditarch/auditarch/policy/freeze"
	"github.com/auditarch/auditarch/store"
)

// alertConfig writes a config whose alert section mails through hub (STARTTLS, AUTH) with the given
// report interval and alert window, and returns its path and the spool directory.
func alertConfig(t *testing.T, hub *smtptest.Hub, interval, window string) (cfgFile, spool string) {
	t.Helper()
	dir := t.TempDir()
	spool = filepath.Join(dir, "spool")
	cfg := fmt.Sprintf(`alert:
  rules: %s
  level: server
  spool: %s
  report_interval: %s
  alert_window: %s
  retry_max: 2s
  mail:
    mailhub: 127.0.0.1
    port: %d
    tls: %s
    ca_file: %s
    auth_user: %s
    auth_pass_file: %s
    root: admin@example.org
    hostname: bastion1
    timeout: 3s
`, filepath.Join(dir, "rules"), spool, interval, window, hub.Port, hub.TLS, hub.Cert, smtptest.User, hub.PassFile(t))
	cfgFile = filepath.Join(dir, "auditarch.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgFile, spool
}

// waitMail waits up to d for a message the hub accepted whose Message-ID starts with prefix and whose
// body holds every string of want, and returns it and when it was seen.
func waitMail(t *testing.T, hub *smtptest.Hub, d time.Duration, prefix string, want ...string) (smtptest.Received, time.Time) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, m := range hub.Messages() {
			if !strings.HasPrefix(m.Header("Message-Id"), "<"+prefix) {
				continue
			}
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(m.Text, w)
			}
			if ok {
				return m, time.Now()
			}
		}
		if time.Now().After(deadline) {
			var got []string
			for _, m := range hub.Messages() {
				got = append(got, m.Header("Message-Id")+" "+m.Header("Subject")+"\n"+m.Text)
			}
			t.Fatalf("no mail %s… holding %q within %s; the hub holds:\n%s", prefix, want, d, strings.Join(got, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// uniqueIDs fails the test if the hub accepted one Message-ID twice, and returns the ids.
func uniqueIDs(t *testing.T, hub *smtptest.Hub) map[string]smtptest.Received {
	t.Helper()
	seen := map[string]smtptest.Received{}
	for _, m := range hub.Messages() {
		id := m.Header("Message-Id")
		if _, dup := seen[id]; dup {
			t.Errorf("Message-ID %s accepted twice", id)
		}
		seen[id] = m
	}
	return seen
}

// shmExec runs a copy of /bin/true from /dev/shm with a marker argument: an attack for the built-in
// rules (an exec from a memory-only place). It returns the marker.
func shmExec(t *testing.T, what string) string {
	t.Helper()
	exe := filepath.Join("/dev/shm", fmt.Sprintf("auditarch-test-%d", os.Getpid()))
	if _, err := os.Stat(exe); err != nil {
		b, err := os.ReadFile("/bin/true")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(exe, b, 0o700); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(exe) })
	}
	marker := fmt.Sprintf("%s-%d", what, time.Now().UnixNano())
	if err := exec.Command(exe, marker).Run(); err != nil {
		t.Fatal(err)
	}
	return marker
}

// acceptOne accepts a connection on loopback (accept4: an inbound connection).
func acceptOne(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
}

// waitLogged waits until the daemon's log holds s.
func waitLogged(t *testing.T, stderr *bytes.Buffer, s string, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); !strings.Contains(stderr.String(), s); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon never logged %q:\n%s", s, stderr)
		}
	}
}

// TestAlertMailOnAttack: with protection in detect mode, a root process in another session sends the
// daemon a signal (a real kill(2), SIGCONT, which the daemon survives): it is stopped and frozen, and
// the POLICY leaf that names it reaches the administrator by mail through a real hub (STARTTLS, AUTH)
// within 5 s. Then auditctl -D from another session: the CONFIG_CHANGE and the guard's POLICY leaf are
// mailed at the end of the alert window, in one mail.
func TestAlertMailOnAttack(t *testing.T) {
	ctl := privtest.Kernel(t)
	auditctl := privtest.Command(t, "auditctl")
	hub := smtptest.Start(t, "starttls", true)
	cfgFile, _ := alertConfig(t, hub, "1h", "3s")
	cmd, stderr, _, _, _ := protectedDaemon(t, ctl, ProtectDetect, "--config", cfgFile)
	waitLogged(t, stderr, `"message":"alerting"`, 5*time.Second)
	daemon := cmd.Process.Pid

	start := time.Now()
	atk := startAttacker(t, fmt.Sprintf("%d kill 18", daemon))
	m, at := waitMail(t, hub, 5*time.Second, "alert.", "POLICY action=signal", fmt.Sprintf("target_pid=%d", daemon),
		fmt.Sprintf("sender_pid=%d", atk.Process.Pid))
	t.Logf("attack mail %s %.2f s after the kill:\n%s", m.Header("Message-Id"), at.Sub(start).Seconds(), m.Text)
	if m.Header("X-TLS") != "True" || m.Header("X-Auth-User") != smtptest.User {
		t.Errorf("the mail did not come over TLS with AUTH: X-TLS %q, X-Auth-User %q", m.Header("X-TLS"), m.Header("X-Auth-User"))
	}
	if !strings.HasSuffix(m.Header("Message-Id"), ".auditarch@bastion1>") || !strings.Contains(m.Header("Subject"), "bastion1") ||
		!strings.Contains(m.Header("Subject"), "Security Alerts") || m.Header("To") != "<admin@example.org>" {
		t.Errorf("headers: Message-ID %q, Subject %q, To %q", m.Header("Message-Id"), m.Header("Subject"), m.Header("To"))
	}

	sh := exec.Command("/bin/sh", "-c", auditctl+" -D >/dev/null 2>&1; exec sleep 600")
	sh.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	start = time.Now()
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, f := range mustList(t) {
			if f.Session == sh.Process.Pid {
				freeze.Thaw(f.Cgroup)
			}
		}
		sh.Process.Kill()
		sh.Wait()
	})
	m2, at := waitMail(t, hub, 10*time.Second, "alert.", "CONFIG_CHANGE", "op=remove_rule", "POLICY action=audit-config")
	t.Logf("auditctl -D mail %s %.2f s after the command (window 3 s):\n%s", m2.Header("Message-Id"), at.Sub(start).Seconds(), m2.Text)
	if err := cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon: %v\n%s", err, stderr)
	}
	uniqueIDs(t, hub)
}

// TestAlertReport: the report arrives at the end of each interval (3 s here; 1 h by default) with one
// section per class and rule file (an exec from /dev/shm: attack; chattr: violation; a listening
// socket: unusual) and the archive state; auditarch report prints the same sections from the archive.
// "alert test" sends a test mail.
func TestAlertReport(t *testing.T) {
	ctl := privtest.Kernel(t)
	hub := smtptest.Start(t, "starttls", true)
	cfgFile, _ := alertConfig(t, hub, "3s", "1s")
	var out bytes.Buffer
	if code := Main([]string{"alert", "test", "--config", cfgFile}, &out, &out); code != 0 {
		t.Fatalf("alert test: exit %d: %s", code, out.String())
	}
	waitMail(t, hub, 5*time.Second, "", "auditarch")

	dir := filepath.Join(t.TempDir(), "archive")
	cmd, stderr := daemonProcess(t, ctl, dir, filepath.Join(t.TempDir(), "keys"), "--config", cfgFile)
	waitLogged(t, stderr, `"message":"alerting"`, 5*time.Second)
	// The workload just after a window starts (windows end at multiples of 3 s), so that one report
	// lists all of it.
	time.Sleep(time.Until(time.Now().Truncate(3 * time.Second).Add(3*time.Second + 100*time.Millisecond)))
	attack := shmExec(t, "report-attack")
	chattr := privtest.Command(t, "chattr")
	exec.Command(chattr, "-V", "--", filepath.Join(t.TempDir(), "absent")).Run() // violation: chattr ran
	acceptOne(t)                                                                 // unusual: an inbound connection
	m, at := waitMail(t, hub, 10*time.Second, "report.", attack, "Security Alerts for cracking.d/auditarch",
		"Security Events for violations.d/auditarch", "/usr/bin/chattr", "System Events\n", "syscall=accept4", "Archive State", "store receipt age: ")
	t.Logf("report %s (%s) at %s:\n%s", m.Header("Message-Id"), m.Header("Subject"), at.Format(time.RFC3339Nano), m.Text)
	if !strings.HasSuffix(m.Header("Subject"), "Security Alerts") {
		t.Errorf("subject %q does not end in the highest class", m.Header("Subject"))
	}
	if end := at.Truncate(3 * time.Second); at.Sub(end) > 2*time.Second {
		t.Errorf("the report arrived %s after its window's end", at.Sub(end))
	}
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon: %v\n%s", err, stderr)
	}
	uniqueIDs(t, hub)
	out.Reset()
	if code := Main([]string{"report", "--since", "10m", "--config", cfgFile, dir}, &out, io.Discard); code != 0 {
		t.Fatalf("report: exit %d", code)
	}
	for _, w := range []string{"Subject: bastion1 ", attack, "Security Alerts for cracking.d/auditarch", "Security Events for violations.d/auditarch", "System Events\n", "Archive State", "verify: not checked"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("auditarch report does not hold %q:\n%s", w, out.String())
		}
	}
}

// alertMailsWith returns the Message-IDs of the alert mails whose text holds s.
func alertMailsWith(hub *smtptest.Hub, s string) []string {
	var ids []string
	for _, m := range hub.Messages() {
		if id := m.Header("Message-Id"); strings.HasPrefix(id, "<alert.") && strings.Contains(m.Text, s) {
			ids = append(ids, id)
		}
	}
	return ids
}

// TestAlertRelayOutage: the hub is down for 30 s while attacks happen (one every 10 s) and reports
// fall due (every 5 s); once it is back, every attack is in exactly one alert mail, every report
// window is mailed once and in order, and no Message-ID is accepted twice. The spool's retry ceiling
// is 2 s here (alert.retry_max; 5 min by default), so delivery resumes within 2 s of the hub.
func TestAlertRelayOutage(t *testing.T) {
	ctl := privtest.Kernel(t)
	hub := smtptest.Start(t, "starttls", true)
	cfgFile, _ := alertConfig(t, hub, "5s", "2s")
	dir := filepath.Join(t.TempDir(), "archive")
	cmd, stderr := daemonProcess(t, ctl, dir, filepath.Join(t.TempDir(), "keys"), "--config", cfgFile)
	waitLogged(t, stderr, `"message":"alerting"`, 5*time.Second)
	hub.Stop()
	down := time.Now()
	var markers []string
	for i := range 3 {
		markers = append(markers, shmExec(t, fmt.Sprintf("outage%d", i)))
		time.Sleep(10 * time.Second)
	}
	// (Only this test's mails count: other tests running at once exec test binaries from /tmp, which the
	// built-in rules call attacks, and those may have been mailed just before the hub went down.)
	n := 0
	for _, m := range hub.Messages() {
		for _, mk := range markers {
			if strings.Contains(m.Text, mk) {
				n++
			}
		}
	}
	if time.Since(down) < 30*time.Second || n != 0 {
		t.Fatalf("the hub was down %s and holds %d messages about this test's events", time.Since(down), n)
	}
	hub.Restart()
	up := time.Now()
	for _, mk := range markers {
		waitMail(t, hub, 10*time.Second, "alert.", mk)
	}
	t.Logf("the hub down %s; every attack mailed %.1f s after it came back", up.Sub(down).Round(time.Second), time.Since(up).Seconds())
	time.Sleep(6 * time.Second) // a report window after the outage
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon: %v\n%s", err, stderr)
	}
	uniqueIDs(t, hub)
	for _, mk := range markers {
		if ids := alertMailsWith(hub, mk); len(ids) != 1 {
			t.Errorf("%s is in %d alert mails %v, want 1", mk, len(ids), ids)
		}
	}
	// Every report window from the first to the last, each once, in order: the windows are contiguous.
	var starts []time.Time
	for _, m := range hub.Messages() {
		id := m.Header("Message-Id")
		if s, ok := strings.CutPrefix(id, "<report."); ok {
			ts, err := time.Parse("20060102T150405Z", strings.TrimSuffix(s, ".auditarch@bastion1>"))
			if err != nil {
				t.Fatalf("report id %s: %v", id, err)
			}
			starts = append(starts, ts)
		}
	}
	if len(starts) < 7 {
		t.Fatalf("%d reports in %s, want at least 7 (every 5 s)", len(starts), time.Since(down))
	}
	for i := 2; i < len(starts); i++ { // the first window starts at the daemon's start, not on a multiple
		if d := starts[i].Sub(starts[i-1]); d != 5*time.Second {
			t.Errorf("report %d starts %s after the one before, want 5s (%v)", i, d, starts)
		}
	}
	found := 0
	for _, m := range hub.Messages() {
		if strings.HasPrefix(m.Header("Message-Id"), "<report.") {
			for _, mk := range markers {
				if strings.Contains(m.Text, mk) {
					found++
				}
			}
		}
	}
	if found != len(markers) {
		t.Errorf("the reports list the attacks %d times, want %d (once each)", found, len(markers))
	}
}

// TestAlertKilledMidSend: the daemon is SIGKILLed in the middle of sending an alert (the hub holds the
// DATA without answering), then started again: the alert is delivered once, the one delivered before
// the kill is not mailed again (the consumer resumed from its cursor), and no Message-ID is accepted
// twice. (A kill between the hub's 250 and the spool's record of it resends the same Message-ID: the
// at-least-once window docs/mail.md describes, tested in alert/mail TestKilledMidSend.)
func TestAlertKilledMidSend(t *testing.T) {
	ctl := privtest.Kernel(t)
	hub := smtptest.Start(t, "starttls", true)
	cfgFile, spool := alertConfig(t, hub, "1h", "1s")
	dir, keys := filepath.Join(t.TempDir(), "archive"), filepath.Join(t.TempDir(), "keys")
	cmd, stderr := daemonProcess(t, ctl, dir, keys, "--config", cfgFile)
	first := stderr
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the killed daemon's alert log:\n%s", alertLog(first))
		}
	})
	waitLogged(t, stderr, `"message":"alerting"`, 5*time.Second)
	before := shmExec(t, "before-kill")
	waitMail(t, hub, 5*time.Second, "alert.", before)
	hub.SetMode("hang")
	time.Sleep(1100 * time.Millisecond) // past the alert window
	during := shmExec(t, "mid-send")
	// Killed once the mail that lists it is in the spool and the hub holds a DATA without answering.
	for deadline := time.Now().Add(5 * time.Second); !spoolHolds(t, spool, during); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no mail listing %s was queued within 5 s", during)
		}
	}
	hub.WaitLog("DATA hang")
	cmd.Process.Kill()
	cmd.Wait()
	hub.SetMode("ok")
	cmd, stderr = daemonProcess(t, ctl, dir, keys, "--config", cfgFile)
	second := stderr
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the restarted daemon's alert log:\n%s", alertLog(second))
		}
	})
	waitMail(t, hub, 10*time.Second, "alert.", during)
	time.Sleep(2 * time.Second) // anything the restart would send again
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon: %v\n%s", err, stderr)
	}
	uniqueIDs(t, hub)
	for _, mk := range []string{before, during} {
		if ids := alertMailsWith(hub, mk); len(ids) != 1 {
			t.Errorf("%s is in %d alert mails %v, want 1", mk, len(ids), ids)
		}
	}
	if len(alertMailsWith(hub, "START ")) == 0 || len(alertMailsWith(hub, "recovered=true")) == 0 {
		t.Errorf("the restart after the kill (START recovered=true) was not mailed as an attack")
	}
}

// alertLog is the alert and mail lines of a daemon's log.
func alertLog(stderr *bytes.Buffer) string {
	var out []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(l, `"component":"alert"`) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// spoolHolds reports whether a message queued in the spool holds s.
func spoolHolds(t *testing.T, spool, s string) bool {
	queued, _ := filepath.Glob(filepath.Join(spool, "queue", "*.msg"))
	for _, q := range queued {
		if b, err := os.ReadFile(q); err == nil && strings.Contains(string(b), s) {
			return true
		}
	}
	return false
}

// TestAlertDaemonAlarm: the daemon's own alarms are classified and mailed. Shipping to a store that
// presents another key than the pinned one raises ALARM source=daemon kind=store_key, an attack for
// the built-in rules, mailed within seconds.
func TestAlertDaemonAlarm(t *testing.T) {
	ctl := privtest.Kernel(t)
	hub := smtptest.Start(t, "starttls", true)
	cfgFile, _ := alertConfig(t, hub, "1h", "1s")
	port := smtptest.FreePort(t)
	storeProcess(t, filepath.Join(t.TempDir(), "store"), port)
	otherDir := filepath.Join(t.TempDir(), "other")
	other, err := store.Open(store.Config{Dir: otherDir}) // a key the running store does not hold
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	dir := filepath.Join(t.TempDir(), "archive")
	cmd, stderr := daemonProcess(t, ctl, dir, filepath.Join(t.TempDir(), "keys"), "--config", cfgFile,
		"--store", fmt.Sprintf("127.0.0.1:%d", port), "--store-key", filepath.Join(otherDir, store.PubFile))
	m, _ := waitMail(t, hub, 10*time.Second, "alarm.store_key.", "ALARM source=daemon kind=store_key", "not the pinned store key")
	t.Logf("%s:\n%s", m.Header("Message-Id"), m.Text)
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Logf("daemon: %v\n%s", err, stderr) // it could not ship its end: that is the point
	}
}
