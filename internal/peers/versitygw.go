// Package peers starts peer servers for tests: private instances on loopback, in the test's temporary
// directory, stopped when the test ends. A missing peer program goes through privtest.Unavailable, so it
// skips on a developer laptop and fails in CI.
package peers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/internal/privtest"
)

// versitygwStartTimeout bounds how long Versitygw waits for the gateway to answer HTTP.
const versitygwStartTimeout = 15 * time.Second

// Versitygw starts a private versitygw S3 gateway (posix backend, versioning enabled, so buckets can be
// created with Object Lock) on a free loopback port, with fresh root credentials and its data in
// tb.TempDir(). It returns the endpoint URL ("http://127.0.0.1:P") and the root credentials. The gateway
// is killed when the test ends.
//
// The binary is looked up on PATH, then in $GOBIN and $(go env GOPATH)/bin, then /root/go/bin;
// scripts/deps.sh installs it.
func Versitygw(tb testing.TB) (endpoint, accessKey, secretKey string) {
	tb.Helper()
	bin, err := findVersitygw()
	if err != nil {
		privtest.Unavailable(tb, "needs versitygw (make deps installs it): %v", err)
	}

	dir := tb.TempDir()
	data := filepath.Join(dir, "data")
	versions := filepath.Join(dir, "versions")
	for _, d := range []string{data, versions} {
		if err := os.Mkdir(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	accessKey = "auditarch-test"
	secretKey = fmt.Sprintf("secret-%d-%d", os.Getpid(), time.Now().UnixNano())

	// The port is free when chosen; another process could take it before versitygw binds it, in which
	// case versitygw exits and the start is retried on another port.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr, err := freeLoopbackAddr()
		if err != nil {
			tb.Fatalf("versitygw: pick a port: %v", err)
		}
		endpoint = "http://" + addr
		if lastErr = startVersitygw(tb, bin, addr, endpoint, data, versions, accessKey, secretKey); lastErr == nil {
			return endpoint, accessKey, secretKey
		}
	}
	tb.Fatalf("versitygw: %v", lastErr)
	return "", "", ""
}

// startVersitygw starts one gateway and waits until it answers. On success it has registered the cleanup
// that kills it; on failure the process is already gone.
func startVersitygw(tb testing.TB, bin, addr, endpoint, data, versions, accessKey, secretKey string) error {
	tb.Helper()
	cmd := exec.Command(bin, "--port", addr, "--quiet", "posix", "--versioning-dir", versions, data)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+accessKey, "ROOT_SECRET_KEY="+secretKey)
	var out lockedBuffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// If the test binary dies without running cleanups, the kernel kills the gateway too.
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = unix.Kill(pid, unix.SIGKILL)
		<-exited
	}

	ctx, cancel := context.WithTimeout(context.Background(), versitygwStartTimeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			// Any HTTP answer (an unsigned request is refused with 403) means the gateway serves S3.
			resp.Body.Close()
			break
		}
		select {
		case werr := <-exited:
			return fmt.Errorf("exited before answering on %s (%v): %s", addr, werr, strings.TrimSpace(out.String()))
		case <-ctx.Done():
			stop()
			return fmt.Errorf("no answer on %s after %v: %s", addr, versitygwStartTimeout, strings.TrimSpace(out.String()))
		case <-time.After(20 * time.Millisecond):
		}
	}
	tb.Cleanup(func() {
		stop()
		if tb.Failed() {
			tb.Logf("versitygw output:\n%s", out.String())
		}
	})
	return nil
}

func findVersitygw() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	// go/build's default GOPATH is what `go env GOPATH` reports unless go.env or GOENV changes it.
	for _, d := range filepath.SplitList(build.Default.GOPATH) {
		dirs = append(dirs, filepath.Join(d, "bin"))
	}
	dirs = append(dirs, "/root/go/bin")
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("not on PATH nor in " + strings.Join(dirs, ", "))
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// lockedBuffer collects a child's output, written by os/exec goroutines and read by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
