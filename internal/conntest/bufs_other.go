//go:build !unix

package conntest

import (
	"syscall"
	"testing"
)

// sockBufs skips a test that asks for socket buffers of n bytes: they are
// set on unix systems only.
func sockBufs(t testing.TB, n int) func(string, string, syscall.RawConn) error {
	if n != 0 {
		t.Skipf("socket buffers of %d bytes: set on unix systems only", n)
	}
	return nil
}
