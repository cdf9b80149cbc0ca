package writer_test

import (
	"os"
	"testing"
)

// TestMain lets the test binary serve as the child writer of the crash test: with crashChildEnv set it
// runs crashChild (crash_test.go) instead of the tests.
func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild())
	}
	os.Exit(m.Run())
}
