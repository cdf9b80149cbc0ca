package vmtest

import (
	"strings"
	"testing"
	"time"
)

func TestGuestConfig(t *testing.T) {
	t.Setenv("AUDITARCH_REQUIRE_PRIVILEGED", "1")
	cfg := guestConfig("TestA/sub", Options{Env: []string{"K=v"}, Args: []string{"-test.short"}}, time.Minute)
	want := []string{guestTestBin, "-test.run", "^TestA$/^sub$", "-test.v", "-test.count=1",
		"-test.timeout", "45s", "-test.short"}
	if strings.Join(cfg.Argv, " ") != strings.Join(want, " ") {
		t.Errorf("argv %q, want %q", cfg.Argv, want)
	}
	wantEnv := []string{EnvInVM + "=1", "AUDITARCH_REQUIRE_PRIVILEGED=1", "K=v"}
	if strings.Join(cfg.Env, " ") != strings.Join(wantEnv, " ") {
		t.Errorf("env %q, want %q", cfg.Env, wantEnv)
	}
}
