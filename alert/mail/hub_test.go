package mail

import (
	"testing"
	"time"

	"github.com/auditarch/auditarch/internal/smtptest"
)

// hub is smtptest's hub with the names these tests use.
type hub struct{ *smtptest.Hub }

const hubUser = smtptest.User

func startHub(t *testing.T, tlsMode string, auth bool) hub {
	return hub{smtptest.Start(t, tlsMode, auth)}
}

func (h hub) stop()                { h.Stop() }
func (h hub) restart()             { h.Restart() }
func (h hub) setMode(mode string)  { h.SetMode(mode) }
func (h hub) waitLog(line string)  { h.WaitLog(line) }
func (h hub) messages() []received { return h.Messages() }

type received = smtptest.Received

// config is a Config for this hub.
func (h hub) config(t *testing.T) Config {
	c := Config{
		Mailhub:  "127.0.0.1",
		Port:     h.Port,
		TLS:      TLSMode(h.TLS),
		Root:     "admin@example.org",
		Hostname: "bastion1",
		Timeout:  3 * time.Second,
	}
	if h.TLS != "none" {
		c.CAFile = h.Cert
	}
	if h.Auth() {
		c.AuthPassFile, c.AuthUser = h.PassFile(t), hubUser
	}
	return c
}
