//go:build unix

package conntest

import (
	"syscall"
	"testing"
)

// sockBufs sets SO_SNDBUF and SO_RCVBUF to n, unless n is 0.
func sockBufs(_ testing.TB, n int) func(string, string, syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		if n == 0 {
			return nil
		}
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, n); serr == nil {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}
