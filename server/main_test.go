package server_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// server, client, raw peer and handler started by a test must be stopped by
// the time the tests end. With emfileChildEnv set, the test binary is
// instead the server process of TestBusyAtOpenFileLimit.
func TestMain(m *testing.M) {
	if os.Getenv(emfileChildEnv) != "" {
		os.Exit(emfileChild())
	}
	if os.Getenv(holderEnv) != "" {
		os.Exit(holderChild())
	}
	goleak.VerifyTestMain(m)
}
