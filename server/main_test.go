package server_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// server, client, raw peer and handler started by a test must be stopped by
// the time the tests end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
