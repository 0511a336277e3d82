package etcd_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: a
// resolver's Run, a Registration's keeper, or an etcd client's.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
