package netconn

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: every
// reader, writer, timer callback and echo goroutine of a connection must
// have returned once the connection is closed.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
