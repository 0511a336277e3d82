//go:build linux

package evloop

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: every
// loop, onDone and echo goroutine must have returned once the connections
// and their Loops are closed. The footprint test's helper process holds
// connections instead of running tests.
func TestMain(m *testing.M) {
	if os.Getenv(holderEnv) != "" {
		os.Exit(holdMain())
	}
	goleak.VerifyTestMain(m)
}
